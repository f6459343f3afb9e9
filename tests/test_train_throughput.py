"""benchmarks/train_throughput.py: one table row per method with the ratios
to d3rlpy's DT and to the dense mtdt preset; with --json, the rows and
nothing else on stdout (timings themselves are not tested)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--tasks", "2", "--steps", "1", "--rounds", "1", "--warmup", "1"]
TINY += ["--mask-repeats", "1", "--embed", "16", "--layers", "1", "--heads", "2"]
TINY += ["--batch-size", "4", "--context", "5"]


def _run(*extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "train_throughput.py", *TINY, *extra],
        cwd=ROOT / "benchmarks",
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )


def test_json_rows_and_nothing_else_on_stdout() -> None:
    rows = json.loads(_run("--json").stdout)  # fails on any stray line
    by = {r["method"]: r for r in rows}
    assert by["MTDT preset (dense)"]["vs_mtdt"] == 1.0
    assert by["d3rlpy DT (one-hot)"]["vs_d3rlpy_dt"] == 1.0
    for row in rows:
        assert set(row) >= {"method", "seq_per_s", "vs_d3rlpy_dt", "vs_mtdt"}
        assert row["seq_per_s"] > 0 and row["tasks"] == 2
        assert (
            row["vs_mtdt"] == row["seq_per_s"] / by["MTDT preset (dense)"]["seq_per_s"]
        )
    # masked methods carry the mask update's share, dense ones do not
    assert 0 < by["HarmoDT mixed"]["mask_update_share"] < 1
    assert by["MTDT preset (dense)"]["mask_update_share"] is None
    assert "HarmoDT mixed, no prompt" in by and "pcgrad preset (dense, mixed)" in by


def test_no_surgery_leaves_out_the_gradient_surgery_rows() -> None:
    methods = {r["method"] for r in json.loads(_run("--json", "--no-surgery").stdout)}
    assert "HarmoDT mixed" in methods
    assert not any("pcgrad" in m or "cagrad" in m for m in methods)


def test_the_table_has_both_ratio_columns() -> None:
    out = _run().stdout
    assert "vs d3rlpy DT" in out and "vs mtdt" in out
    assert "Fitting" not in out and "debug" not in out  # no d3rlpy log lines
