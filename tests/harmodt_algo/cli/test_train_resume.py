"""Stop and resume ``harmodt train``: SIGINT/SIGTERM at a random step, SIGKILL,
then ``--resume``; the final model equals an uninterrupted run's bit for bit
(mask updates fall on both sides of the interruption)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import d3rlpy
import pytest
import torch

from harmodt_algo.cli import MODEL_FILE, RUN_FILE

ARGS = [
    *("--steps", "60", "--eval-every", "30", "--eval-episodes", "0"),
    *("--batch-size", "4", "--embed-size", "16", "--layers", "1", "--heads", "2"),
    *("--context", "5", "--set", "mask_interval=10", "--set", "max_timestep=100"),
    *("--checkpoint-every", "20", "--no-progress", "--no-plots"),
]


def _env(store: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MINARI_DATASETS_PATH": str(store)}


def _train(
    store: Path, dataset_id: str, logdir: Path, *extra: str
) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "harmodt_algo.cli", "train", *extra]
    if not extra or extra[0] != "--resume":
        cmd += ["--dataset", dataset_id, *ARGS, "--logdir", str(logdir), "--name", "r"]
    return subprocess.Popen(
        cmd, env=_env(store), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _state(model: Path) -> dict[str, torch.Tensor]:
    algo = d3rlpy.load_learnable(str(model))
    state = {
        f"net.{k}": v for k, v in algo.impl._modules.transformer.state_dict().items()
    }
    state["masks"] = algo.impl.flat_masks()
    state["step"] = torch.tensor(algo.grad_step)
    return state


@pytest.fixture(scope="module")
def reference(
    _tiny_recipe_store: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, torch.Tensor]:
    store, dataset_id = _tiny_recipe_store
    logdir = tmp_path_factory.mktemp("straight")
    proc = _train(store, dataset_id, logdir)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    (run,) = logdir.iterdir()
    return _state(run / MODEL_FILE)


def _wait_for_checkpoint(logdir: Path, timeout: float = 120.0) -> Path:
    start = time.time()
    while time.time() - start < timeout:
        found = list(logdir.glob("*/checkpoints/step-*.pt"))
        if found:
            return found[0].parent.parent
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_stop_then_resume_equals_an_uninterrupted_run(
    sig: signal.Signals,
    reference: dict[str, torch.Tensor],
    _tiny_recipe_store: tuple[Path, str],
    tmp_path: Path,
) -> None:
    store, dataset_id = _tiny_recipe_store
    proc = _train(store, dataset_id, tmp_path)
    run = _wait_for_checkpoint(tmp_path)
    time.sleep(random.Random(int(sig)).uniform(0.0, 0.2))  # a random step
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    info = json.loads((run / RUN_FILE).read_text())
    if proc.returncode == 0 or info.get("grad_steps") == 60:
        # on a loaded machine the signal can land after the last step
        pytest.skip("the run finished training before the signal arrived")
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        assert info["status"] == "running"  # nobody could write it
    else:
        assert proc.returncode == 128 + int(sig)
        assert info["status"] == "interrupted"
        assert info["resume"] == f"harmodt train --resume {run}"
        assert "continue with: harmodt train --resume" in err
        # after the first checkpoint (step 20): mask updates on both sides
        assert 20 <= info["grad_steps"] < 60
    assert not (run / MODEL_FILE).exists()

    resumed = _train(store, dataset_id, tmp_path, "--resume", str(run))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resuming" in out
    state = _state(run / MODEL_FILE)
    assert state.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(state[key], value), key
    info = json.loads((run / RUN_FILE).read_text())
    assert info["status"] == "finished" and len(info["resumed"]) == 1
    assert len(list((run / "checkpoints").glob("step-*.pt"))) <= 2


def test_resume_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harmodt_algo.cli import main

    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a harmodt train run directory" in capsys.readouterr().err
    assert main(["train", "--steps", "5"]) == 2
    assert "--dataset is required" in capsys.readouterr().err


def test_a_run_has_one_writer(
    _tiny_recipe_store: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A resume while the run still trains is refused (one line naming the
    holder, exit 2) and writes nothing; once the holder is gone the lock is
    free again."""
    from harmodt_algo.cli import main

    store, dataset_id = _tiny_recipe_store
    longer = [a if a != "60" else "5000" for a in ARGS]
    cmd = [sys.executable, "-m", "harmodt_algo.cli", "train", "--dataset", dataset_id]
    cmd += [*longer, "--logdir", str(tmp_path), "--name", "r"]
    proc = subprocess.Popen(
        cmd, env=_env(store), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        run = _wait_for_checkpoint(tmp_path)
        info = (run / RUN_FILE).read_text()
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
        code = main(["train", "--resume", str(run)])
        err = capsys.readouterr().err
        assert proc.poll() is None, "the run ended before the second writer came"
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"in use by process {proc.pid}" in err
        assert (run / RUN_FILE).read_text() == info  # the refused writer wrote nothing
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    from harmodt_algo.locks import exclusive, folder_lock

    with exclusive(folder_lock(run), "run"):  # the holder is gone: the lock is free
        pass


def test_resume_takes_only_machine_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harmodt_algo.cli import main

    run = tmp_path / "r"
    run.mkdir()
    record = {"command": ["harmodt", "train", "--dataset", "x/y-v0"]}
    (run / RUN_FILE).write_text(json.dumps({**record, "status": "interrupted"}))
    code = main(["train", "--resume", str(run), "--steps", "9", "--set", "a=1"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "takes no --steps, --set" in err and "start a new run" in err


def test_resume_refuses_changed_data_and_notes_skipped_checkpoints(
    _tiny_recipe_store: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, dataset_id = _tiny_recipe_store
    proc = _train(store, dataset_id, tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    (run,) = tmp_path.iterdir()
    info = json.loads((run / RUN_FILE).read_text())
    fingerprint = info["dataset_fingerprint"]
    assert len(fingerprint) == 16
    # as if stopped, with data that has changed since
    (run / MODEL_FILE).unlink()
    info |= {"status": "interrupted", "dataset_fingerprint": "0" * 16}
    (run / RUN_FILE).write_text(json.dumps(info))
    resumed = _train(store, dataset_id, tmp_path, "--resume", str(run))
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 2 and "changed since the run started" in err
    # the same data, and an unreadable newer checkpoint: noted, then skipped
    (run / RUN_FILE).write_text(json.dumps(info | {"dataset_fingerprint": fingerprint}))
    (run / "checkpoints" / "step-999.pt").write_bytes(b"not a checkpoint")
    resumed = _train(store, dataset_id, tmp_path, "--resume", str(run))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "skipped unreadable newer checkpoint(s): step-999.pt" in out


def test_outputs_are_checked_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harmodt_algo.cli import main

    taken = tmp_path / "file"
    taken.write_text("mine")
    code = main(["train", "--dataset", "x/y-v0", "--logdir", str(taken)])
    err = capsys.readouterr().err
    assert code == 2 and "--logdir" in err and "is a file, not a folder" in err
    assert taken.read_text() == "mine"


class _SlowModel:
    """Stands for a model whose checkpoint write takes a while: half-way, a
    second signal arrives (sent by the test itself, not by luck)."""

    grad_step = 7

    def save_model(self, path: str) -> None:
        with open(path, "wb") as fh:
            fh.write(b"first half ")
            os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C
            time.sleep(0.05)
            fh.write(b"second half")


def test_a_second_signal_waits_for_the_checkpoint_write(tmp_path: Path) -> None:
    from harmodt_algo.checkpoints import CheckpointDir, StopRequest

    folder = CheckpointDir(tmp_path)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # the first: a polite stop
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            with stop.shielded():
                folder.save(_SlowModel())
    assert (tmp_path / "step-7.pt").read_bytes() == b"first half second half"
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_full_disk_names_the_file_and_keeps_the_run_resumable(
    _tiny_recipe_store: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno

    from harmodt_algo.checkpoints import CheckpointDir
    from harmodt_algo.cli import main

    store, dataset_id = _tiny_recipe_store
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))

    def full(self: CheckpointDir, algo: object, state: object = None) -> Path:
        tmp = self.root / ".step-20.pt.tmp"
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    monkeypatch.setattr(CheckpointDir, "save", full)
    argv = ["train", "--dataset", dataset_id, *ARGS, "--logdir", str(tmp_path)]
    code = main([*argv, "--name", "r"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert ".step-20.pt.tmp" in err and "No space left on device" in err
    (run,) = tmp_path.iterdir()
    assert f"continue with: harmodt train --resume {run}" in err
    info = json.loads((run / RUN_FILE).read_text())
    assert info["status"] == "interrupted" and "resume" in info


def test_a_failed_run_with_checkpoints_says_how_to_resume(
    _tiny_recipe_store: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As when a torchrun peer is killed: the fit fails after a checkpoint;
    run.json says "failed" and carries the resume command."""
    from harmodt_algo import HarmoDT
    from harmodt_algo.cli import main

    store, dataset_id = _tiny_recipe_store
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))

    def failing_fit(self: HarmoDT, data: object, **kwargs: object) -> None:
        self.build_with_dataset(data)
        kwargs["callback"](self, 0, 0)  # type: ignore[operator]  # step-0 checkpoint
        raise RuntimeError("Connection closed by peer")

    monkeypatch.setattr(HarmoDT, "fit", failing_fit)
    argv = ["train", "--dataset", dataset_id, *ARGS, "--logdir", str(tmp_path)]
    with pytest.raises(RuntimeError, match="closed by peer"):
        main([*argv, "--name", "r"])
    (run,) = tmp_path.iterdir()
    info = json.loads((run / RUN_FILE).read_text())
    assert info["status"] == "failed"
    assert info["resume"] == f"harmodt train --resume {run}"
    assert f"continue with: harmodt train --resume {run}" in capsys.readouterr().err
