"""Model files are read without running code from them (issue 22, item 1)."""

from __future__ import annotations

import pickle
from pathlib import Path

import d3rlpy
import pytest
import torch

from harmodt_algo import HarmoDT
from harmodt_algo.checkpoints import CheckpointDir
from harmodt_algo.cli import main
from harmodt_algo.model_files import UnsafeModelFile, load_learnable_file

from .test_harmodt import fit, small, synthetic


class _Payload:
    """What a crafted file would run: here, touching a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def _trained(tmp_path: Path) -> tuple[HarmoDT, Path]:
    data = synthetic(num_tasks=2)
    algo = HarmoDT(small(mask_interval=2))
    fit(algo, data, n_steps=4)
    path = tmp_path / "model.d3"
    algo.save(str(path))
    return algo, path


def test_a_real_model_file_reads_as_with_d3rlpy(tmp_path: Path) -> None:
    algo, path = _trained(tmp_path)
    safe = load_learnable_file(path)
    plain = d3rlpy.load_learnable(str(path))  # d3rlpy users keep their API
    assert safe.impl is not None and plain.impl is not None
    assert torch.equal(safe.impl.flat_masks(), plain.impl.flat_masks())
    for a, b in zip(
        safe.impl._net.parameters(), plain.impl._net.parameters(), strict=True
    ):
        assert torch.equal(a, b)


def test_a_crafted_model_file_runs_nothing_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.d3"
    evil.write_bytes(pickle.dumps({"torch": b"", "config": _Payload(marker)}))
    with pytest.raises(UnsafeModelFile, match="pathlib.Path.touch"):
        load_learnable_file(evil)
    for command in (["info"], ["evaluate"]):
        code = main([*command, str(evil)])
        err = capsys.readouterr().err
        assert code == 2, (command, err)
        assert len(err.strip().splitlines()) == 1
        assert "not a plain model file" in err and "Traceback" not in err
    assert not marker.exists()


def test_a_crafted_checkpoint_is_not_loaded(tmp_path: Path) -> None:
    algo, _ = _trained(tmp_path)
    marker = tmp_path / "ran"
    folder = CheckpointDir(tmp_path / "checkpoints")
    good = folder.save(algo)
    evil = folder.root / f"step-{algo.grad_step + 1}.pt"
    torch.save({"optim": _Payload(marker)}, evil)  # newest: tried first
    loaded = HarmoDT(small(mask_interval=2, task_names=list(algo.task_names)))
    loaded.create_impl(algo.impl.observation_shape, algo.impl.action_size)  # type: ignore[union-attr]
    assert folder.load_latest(loaded) == good  # falls back to the real one
    assert not marker.exists()


def test_the_safetensors_model_file_round_trips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harmodt_algo.model_files import save_safe_model

    algo, _ = _trained(tmp_path)
    path = save_safe_model(algo, tmp_path / "model.safetensors")
    loaded = load_learnable_file(path)
    assert loaded.impl is not None and algo.impl is not None
    assert loaded.task_names == algo.task_names
    assert torch.equal(loaded.impl.flat_masks(), algo.impl.flat_masks())
    for a, b in zip(
        loaded.impl._net.state_dict().values(),
        algo.impl._net.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    prompts = zip(
        loaded.impl._modules.prompts.state_dict().values(),
        algo.impl._modules.prompts.state_dict().values(),
        strict=True,
    )
    assert all(torch.equal(a, b) for a, b in prompts)
    assert main(["info", str(path)]) == 0
    assert "task-0" in capsys.readouterr().out
    # a file of another format under the suffix is one line, exit 2
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    assert main(["info", str(fake)]) == 2
    assert "not a readable d3rlpy model file" in capsys.readouterr().err


def test_trust_pickle_is_the_only_way_to_unpickle_more_than_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A .d3 that holds objects is refused, pointing at the safe file and at
    --trust-pickle; with the flag, d3rlpy's own unpickler reads it."""
    algo, path = _trained(tmp_path)
    with open(path, "rb") as fh:
        obj = pickle.load(fh)  # our own file: trusted here
    obj["note"] = Path("an object, not data")  # a harmless object
    odd = tmp_path / "odd.d3"
    odd.write_bytes(pickle.dumps(obj))
    assert main(["info", str(odd)]) == 2
    err = capsys.readouterr().err
    assert "pickle that can run code" in err and "--trust-pickle" in err
    assert main(["info", str(odd), "--trust-pickle", "--json"]) == 0
    assert "task-0" in capsys.readouterr().out
