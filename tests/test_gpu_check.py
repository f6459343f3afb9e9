"""``benchmarks/gpu_check.sh --dry-run``: the GPU check stays runnable.

The script is meant for a lent GPU machine; its dry run does every step at
tiny sizes on the CPU (device tests, throughput, recipe data, evaluator, a
short run), so a broken import or API drift is caught here, not on the GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MINARI_DATASETS_PATH": str(tmp_path),
        "OMP_NUM_THREADS": "1",
        "PYTHON": sys.executable,
        "COLUMNS": "200",
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    for row in ("device tests", "training throughput", "evaluator", "short MT10 run"):
        assert row in out
    assert "HarmoDT bf16" in out and "ok: 1 passed" in out
    assert any(p.is_dir() for p in tmp_path.rglob("*"))  # data went to the tmp store
