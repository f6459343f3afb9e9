"""Files that are either absent or complete: one atomic JSON writer.

Run records (``run.json``), benchmark cells and checkpoints are read back by
later commands (``--resume``, a resumed matrix); a crash or a signal during a
write must never leave half a file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["folder_problem", "write_json_atomic"]


def _umask() -> int:
    """The process umask (reading it means setting it; set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, data: Mapping[str, Any], indent: int = 2) -> None:
    """Write ``data`` as JSON to ``path`` via a synced temporary file and a
    rename (non-JSON values such as paths are written with ``str``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=indent, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 is not the umask's
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def folder_problem(path: str | Path) -> str | None:
    """Why results cannot be written under ``path`` (None when they can):
    checked before any work, so a long run never ends on an unwritable
    output. Creates nothing: a missing folder is judged by its nearest
    existing parent."""
    folder = Path(path)
    if folder.exists():
        if not folder.is_dir():
            return "is a file, not a folder"
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
                pass
        except OSError as exc:
            return f"is not writable ({exc.strerror or type(exc).__name__})"
        return None
    parent = folder.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {str(parent)!r} is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {str(parent)!r} is not writable"
    return None
