"""The README's quickstart is the code of examples/quickstart.py, and it runs;
the examples run from the repository root, each on its own."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
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


def _imported_modules(path: Path) -> set[str]:
    """Top-level names of the absolute imports in ``path``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_benchmark_examples_import_no_other_example() -> None:
    # an example is copied alone; shared settings live in harmodt_algo.benchmark
    examples = sorted((ROOT / "examples").glob("*.py"))
    names = {path.stem for path in examples}
    for path in examples:
        assert not _imported_modules(path) & names, path.name


def test_benchmark_levers_runs_from_the_repo_root() -> None:
    # `python examples/benchmark_levers.py` prints the study's run commands
    done = subprocess.run(
        [sys.executable, "examples/benchmark_levers.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines and all(
        line.startswith("python -m harmodt_algo.benchmark run") for line in lines
    )
