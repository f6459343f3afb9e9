"""One parser per syntax that several commands share: devices and option values.

``harmodt train``, ``harmodt evaluate`` and the benchmark harness all take a
``--device`` and ``--set KEY=VALUE`` options; they parse them here, so the same
string means the same thing everywhere, and bad input is one line that names
the problem and the valid choices before anything is built or written.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "DEVICE_CHOICES",
    "OptionError",
    "parse_device",
    "parse_list",
    "parse_value",
]

#: What ``--device`` accepts, for messages.
DEVICE_CHOICES = "cpu, cuda or cuda:N"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class OptionError(ValueError):
    """A bad device or option value; the message is one line."""


def parse_device(text: str | None) -> str | bool:
    """``--device`` → d3rlpy's device argument: ``False`` for the CPU,
    ``"cuda:N"`` for a GPU (``cuda`` means ``cuda:0``)."""
    value = (text or "cpu").strip().lower()
    if value in ("cpu", "cpu:0"):
        return False
    match = re.fullmatch(r"cuda(?::(\d+))?", value)
    if match is None:
        raise OptionError(f"unknown device {text!r}; use {DEVICE_CHOICES}")
    import torch

    if not torch.cuda.is_available():
        raise OptionError(
            f"device {text!r}: CUDA is not available on this machine; use cpu"
        )
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise OptionError(
            f"device {text!r}: this machine has {torch.cuda.device_count()} "
            "CUDA device(s)"
        )
    return f"cuda:{index}"


def parse_value(key: str, text: str, default: Any) -> Any:
    """``text`` as a value of the type of ``default`` (the option's default).

    bool: true/false, yes/no, on/off, 1/0; int: an integer literal (``32.0``
    is refused); float: any float; str: as is (or a quoted JSON string);
    anything else (lists, None): JSON. The message names the option and the
    expected type.
    """
    raw = text.strip()
    if isinstance(default, bool):  # before int: bool is an int
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise OptionError(f"{key}: expected true or false, got {text!r}")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise OptionError(f"{key}: expected int, got {text!r}") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise OptionError(f"{key}: expected float, got {text!r}") from None
    if isinstance(default, str):
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':  # a JSON string literal
            return str(json.loads(raw))
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        raise OptionError(
            f"{key}: expected a JSON value (e.g. [64, 64]), got {text!r}"
        ) from None


def parse_list(flag: str, text: str) -> list[str]:
    """A comma-separated ``flag`` value → its items, stripped. An empty item
    (``reach-v3,`` or ``a,,b``) is an error, not silently dropped: it is
    usually a typo for a missing name. A blank value is an empty list."""
    if not text.strip():
        return []  # the caller says what an empty list means
    items = [part.strip() for part in text.split(",")]
    if not all(items):
        raise OptionError(
            f"{flag}: empty item in {text!r} (a stray comma?); give "
            "comma-separated names without blanks"
        )
    return items
