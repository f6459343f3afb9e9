"""The command line: one real subprocess build, bad input, show and list."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import minari
import pytest

from dataset_recipes.cli import main

from .conftest import Shared


def _run(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dataset_recipes", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MINARI_DATASETS_PATH": str(root), "COLUMNS": "120"},
    )


def test_cli_build_prints_id_and_card(tmp_path: Path) -> None:
    done = _run(
        "metaworld",
        "--suite",
        "MT1",
        "--tasks",
        "reach-v3",
        "--quality",
        "expert",
        "--episodes-per-task",
        "2",
        "--max-episode-steps",
        "15",
        "--workers",
        "2",
        root=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "dataset id: metaworld-v3/reach-v3/expert-v0" in done.stdout
    assert f"path: {tmp_path / 'metaworld-v3/reach-v3/expert-v0'}" in done.stdout
    assert "reach-v3" in done.stdout and "ref hi" in done.stdout  # the stats table
    assert (tmp_path / "metaworld-v3/reach-v3/expert-v0/data/metadata.json").is_file()


def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    done = _run("metaworld", "--suite", "MT10", "--quality", "perfect", root=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "unknown quality 'perfect'" in lines[0] and "sub-optimal" in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "metaworld-v3").exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["metaworld", "--tasks", "reach-v3,nope-v3"], "unknown task 'nope-v3'"),
        (["metaworld", "--suite", "MT7"], "unknown suite 'MT7'"),
        (["metaworld", "--suite", "MT5", "--episodes-per-task", "0"], "episodes"),
        (["metaworld", "--suite", "MT5", "--episodes-per-task", "x"], "invalid int"),
        (["metaworld"], "give a suite"),
        (["bogus"], "invalid choice"),
    ],
)
def test_cli_bad_input_in_process(
    argv: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
    minari_root: Path,
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse-level errors exit from parse_args
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_cli_unwritable_path(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(blocker))
    assert main(["metaworld", "--suite", "MT5"]) == 2
    err = capsys.readouterr().err
    assert "not writable" in err and "MINARI_DATASETS_PATH" in err


def test_cli_show_and_list(shared: Shared, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", shared.multi.dataset_id]) == 0
    out = capsys.readouterr().out
    assert shared.multi.dataset_id in out and "push-v3" in out
    assert main(["show", "metaworld-v3/none/expert-v0"]) == 2
    err = capsys.readouterr().err
    assert "no local dataset" in err and shared.multi.dataset_id in err
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "MT50" in out and "near-optimal" in out
    assert "replay" in out and "sub-optimal-replay" in out
    assert set(minari.list_local_datasets()) == {
        shared.multi.dataset_id,
        shared.single.dataset_id,
    }
