"""``benchmarks/slow_machine.sh``: bad arguments are one line and exit 2,
before any cgroup is touched; with a writable cgroup (root), the command runs
inside a CPU quota of cores / FACTOR and the group is removed afterwards,
once the command's stray children have left it too."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "slow_machine.sh"
CGROUP_V1 = Path("/sys/fs/cgroup/cpu")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [(("3",), "usage"), (("x", "true"), "usage"), (("1", "true"), "must be > 1")],
)
def test_bad_arguments_are_one_line_and_exit_2(
    args: tuple[str, ...], needle: str
) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert needle in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout == ""


@pytest.mark.skipif(
    not (CGROUP_V1.is_dir() and os.access(CGROUP_V1, os.W_OK)),
    reason="needs a writable cgroup v1 cpu controller (root)",
)
def test_the_command_runs_inside_the_quota_and_the_group_is_removed() -> None:
    before = {p.name for p in CGROUP_V1.iterdir()}
    # a child that outlives the command keeps the group busy for a moment
    command = "grep :cpu: /proc/self/cgroup; (sleep 0.5 >/dev/null &); exit 7"
    result = run("4", "sh", "-c", command)
    assert result.returncode == 7  # the command's own exit status
    (line,) = result.stdout.splitlines()
    group = line.split(":")[-1].strip("/")
    assert group.startswith("harmodt-slow-")
    assert f"{len(os.sched_getaffinity(0))} cores / 4 = " in result.stderr
    assert {p.name for p in CGROUP_V1.iterdir()} == before  # removed
