"""The README's quickstart is the code of examples/quickstart.py, and it runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _snippet(text: str) -> str:
    match = re.search(
        r"# --8<-- \[start:quickstart\]\n(.*?)# --8<-- \[end:quickstart\]", text, re.S
    )
    assert match, "quickstart markers missing"
    return match.group(1)


def test_readme_quickstart_matches_example() -> None:
    example = _snippet((ROOT / "examples" / "quickstart.py").read_text())
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(# --8<-- \[start:quickstart\].*?)```", readme, re.S)
    assert block, "README has no quickstart block"
    assert _snippet(block.group(1)) == example


def test_quickstart_runs_at_tiny_size(
    minari_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = _snippet((ROOT / "examples" / "quickstart.py").read_text())
    tiny = (
        code.replace(
            "episodes_per_task=10", "episodes_per_task=1, max_episode_steps=30"
        )
        .replace("n_steps=1000", "n_steps=3, show_progress=False")
        .replace("env, 2))", "env, 1))")
    )
    assert tiny != code
    monkeypatch.chdir(tmp_path)
    exec(compile(tiny, "quickstart", "exec"), {"__name__": "quickstart"})
    assert (tmp_path / "harmodt.d3").exists()
