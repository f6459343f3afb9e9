"""Data-parallel training on torch.distributed, 2 real gloo processes.

Launched the d3rlpy way (``torchrun``, ``d3rlpy.distributed.
init_process_group``, ``enable_ddp=True``): the ranks end bit-identical in
weights and masks after a run with mask updates, they trained on different
sequences, and the result equals one process training on the global batch
(batch 2 x 4) within float tolerance.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import d3rlpy
import pytest
import torch
from d3rlpy.logging import NoopAdapterFactory

from harmodt_algo import HarmoDT, HarmoDTConfig

from .ddp_setup import CONFIG, STEPS, dataset

ROOT = Path(__file__).resolve().parents[2]


def _torchrun(out: Path, estimator: str) -> list[dict[str, object]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        *("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"),
        str(ROOT / "tests" / "harmodt_algo" / "ddp_worker.py"),
        str(out),
        estimator,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt") for r in (0, 1)]


@pytest.mark.parametrize("estimator", ["batch", "accumulated"])
def test_two_gloo_ranks_match_each_other_and_one_process(
    tmp_path: Path, estimator: str
) -> None:
    r0, r1 = _torchrun(tmp_path, estimator)
    assert r0["world"] == r1["world"] == 2
    # bit-identical ranks, masks included (identical all-reduced statistics)
    assert torch.equal(r0["masks"], r1["masks"])
    for name, value in r0["weights"].items():  # type: ignore[union-attr]
        assert torch.equal(value, r1["weights"][name]), name  # type: ignore[index]
    assert int(r0["changed"].sum()) > 0  # type: ignore[union-attr]
    # different data on each rank, every step
    assert all(a != b for a, b in zip(r0["seen"], r1["seen"], strict=True))  # type: ignore[call-overload]

    # one process on the global batch (and global mask batch) ends the same
    single_cfg = {**CONFIG, "batch_size": 8, "mask_batch_size": 8}
    single = HarmoDT(HarmoDTConfig(**single_cfg, harmony_estimator=estimator))
    single.fit(
        dataset(),
        n_steps=STEPS,
        logger_adapter=NoopAdapterFactory(),
        show_progress=False,
    )
    assert single.impl is not None
    assert torch.equal(single.impl.flat_masks(), r0["masks"])
    for name, value in single.impl._net.state_dict().items():
        torch.testing.assert_close(
            value,
            r0["weights"][name],
            rtol=1e-4,
            atol=1e-6,  # type: ignore[index]
        )
    # the 2-process checkpoint resumes in one process (no rank state in it)
    resumed = d3rlpy.load_learnable(str(tmp_path / "model.d3"))
    assert resumed.grad_step == STEPS
    resumed.fit(
        dataset(), n_steps=2, logger_adapter=NoopAdapterFactory(), show_progress=False
    )
    assert resumed.grad_step == STEPS + 2


@pytest.mark.parametrize("preset", ["pcgrad"])
def test_gradient_surgery_under_two_gloo_ranks(tmp_path: Path, preset: str) -> None:
    """The per-task gradients are all-reduced before the surgery, so both
    ranks apply the same update and end bit-identical."""
    r0, r1 = _torchrun(tmp_path, preset)
    for name, value in r0["weights"].items():  # type: ignore[union-attr]
        assert torch.equal(value, r1["weights"][name]), name  # type: ignore[index]
    assert all(a != b for a, b in zip(r0["seen"], r1["seen"], strict=True))  # type: ignore[call-overload]
    loaded = d3rlpy.load_learnable(str(tmp_path / "model.d3"))
    assert loaded.config.gradient_surgery == preset


def test_enable_ddp_without_a_process_group_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="torchrun.*init_process_group"):
        HarmoDT(HarmoDTConfig(), enable_ddp=True)


def test_harmodt_train_under_torchrun(
    _tiny_recipe_store: tuple[Path, str], tmp_path: Path
) -> None:
    store, dataset_id = _tiny_recipe_store
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MINARI_DATASETS_PATH": str(store),
    }
    cmd = [
        sys.executable,
        *("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"),
        *("-m", "harmodt_algo.cli", "train", "--dataset", dataset_id),
        *("--steps", "4", "--eval-every", "2", "--batch-size", "4"),
        *("--embed-size", "16", "--layers", "1", "--heads", "2", "--context", "5"),
        *("--eval-episodes", "1", "--set", "mask_interval=2"),
        *("--set", "max_timestep=100", "--no-progress", "--no-plots"),
        *("--logdir", str(tmp_path / "runs"), "--name", "ddp"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()  # one run directory: rank 0's
    assert (run / "model.d3").is_file()
    assert proc.stdout.count("run directory:") == 1  # only rank 0 reports


def _train_cmd(nproc: int, *args: str) -> list[str]:
    launch = [sys.executable]
    if nproc > 1:
        launch += ["-m", "torch.distributed.run", "--standalone"]
        launch += ["--nproc-per-node", str(nproc)]
    return [*launch, "-m", "harmodt_algo.cli", "train", *args]


_RUN_ARGS = [
    *("--steps", "8", "--eval-every", "4", "--batch-size", "4", "--embed-size"),
    *("16", "--layers", "1", "--heads", "2", "--context", "5", "--eval-episodes"),
    *("0", "--set", "mask_interval=2", "--set", "max_timestep=100"),
    *("--checkpoint-every", "4", "--no-progress", "--no-plots"),
]


def _stopped_at_4(run: Path) -> None:
    """Make a finished run look stopped after its step-4 checkpoint."""
    import json

    (run / "model.d3").unlink()
    (run / "checkpoints" / "step-8.pt").unlink()
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(info | {"status": "interrupted"}))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    algo = d3rlpy.load_learnable(str(run / "model.d3"))
    state = dict(algo.impl._modules.transformer.state_dict())
    state["masks"] = algo.impl.flat_masks()
    return state


def test_resume_under_any_world_size(
    _tiny_recipe_store: tuple[Path, str], tmp_path: Path
) -> None:
    """A checkpoint of a 2-process run resumes in 2 processes (bit-identical
    to the uninterrupted run) and in 1; a 1-process checkpoint resumes in 2."""
    import shutil

    store, dataset_id = _tiny_recipe_store
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINARI_DATASETS_PATH": str(store)}

    def run(nproc: int, *args: str) -> None:
        cmd = _train_cmd(nproc, *args)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]

    for nproc in (2, 1):
        logdir = tmp_path / f"w{nproc}"
        run(nproc, "--dataset", dataset_id, *_RUN_ARGS, "--logdir", str(logdir))
        (done,) = logdir.iterdir()
        reference = _weights(done)
        _stopped_at_4(done)
        for resume_nproc in (2, 1) if nproc == 2 else (2,):
            copy = tmp_path / f"w{nproc}-r{resume_nproc}" / done.name
            shutil.copytree(done, copy)
            run(resume_nproc, "--resume", str(copy))
            resumed = _weights(copy)
            if resume_nproc == nproc:
                for key, value in reference.items():
                    assert torch.equal(resumed[key], value), key


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = (Path("/proc") / str(pid) / "stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the parent's pid
    return False


def _rank_pid(rank: int, launcher: int) -> int | None:
    """The pid of the torchrun worker with LOCAL_RANK=rank under ``launcher``
    (read from /proc: another test's workers are never picked)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"harmodt_algo.cli" in cmdline and f"LOCAL_RANK={rank}".encode() in environ:
            if _descends_from(int(proc.name), launcher):
                return int(proc.name)
    return None


def test_a_killed_rank_leaves_a_resumable_run(
    _tiny_recipe_store: tuple[Path, str], tmp_path: Path
) -> None:
    """SIGKILL of one torchrun rank after a checkpoint: run.json is not left
    "running" and carries the resume command."""
    import json
    import signal
    import time

    store, dataset_id = _tiny_recipe_store
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINARI_DATASETS_PATH": str(store)}
    longer = [a if a != "8" else "4000" for a in _RUN_ARGS]
    cmd = _train_cmd(2, "--dataset", dataset_id, *longer, "--logdir", str(tmp_path))
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(
            tmp_path.glob("*/checkpoints/step-*.pt")
        ):
            time.sleep(0.05)
        victim = _rank_pid(1, proc.pid)
        assert victim is not None and proc.poll() is None
        os.kill(victim, signal.SIGKILL)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    (run,) = tmp_path.iterdir()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] in ("interrupted", "failed"), info["status"]
    assert info["resume"] == f"harmodt train --resume {run}"
