"""Free-text task names become safe metric keys and file names (one place),
end to end: an unlabeled Minari dataset through ``harmodt train`` with the
default file logger, and task names with ``/``, spaces and unicode."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
from d3rlpy.dataset import Episode
from d3rlpy.logging import FileAdapterFactory
from minari.data_collector import EpisodeBuffer

from harmodt_algo import HarmoDT, MultiTaskDataset
from harmodt_algo.cli import MODEL_FILE, main
from harmodt_algo.naming import metric_key, safe_name

from .test_harmodt import fit, small


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("reach-v3", "reach-v3"),
        ("probe/pendulum-nolabel-v0", "probe_pendulum-nolabel-v0"),
        ("open the door", "open_the_door"),
        ("tür öffnen/ä", "tür_öffnen_ä"),
        ("../up", "___up"),
        ("", "_"),
    ],
)
def test_safe_name(name: str, expected: str) -> None:
    assert safe_name(name) == expected
    assert "/" not in safe_name(name) and not safe_name(name).startswith(".")
    assert metric_key("loss", name) == f"loss_{expected}"


def test_unsafe_task_names_train_with_the_default_file_logger(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = ["pick/place", "open the door", "tür öffnen"]
    data = MultiTaskDataset.from_episodes(
        {
            name: [
                Episode(
                    observations=rng.normal(size=(20, 39)).astype(np.float32),
                    actions=np.tanh(rng.normal(size=(20, 4))).astype(np.float32),
                    rewards=rng.random((20, 1)).astype(np.float32),
                    terminated=False,
                )
            ]
            for name in names
        }
    )
    algo = HarmoDT(small(mask_interval=2))
    fit(
        algo,
        data,
        n_steps=3,
        logger_adapter=FileAdapterFactory(root_dir=str(tmp_path)),
        experiment_name="names",
    )
    (logdir,) = tmp_path.iterdir()
    written = {p.name for p in logdir.glob("loss_*.csv")}
    assert written == {f"loss_{safe_name(n)}.csv" for n in names}
    assert algo.task_names == tuple(names)  # the model keeps the real names


def test_unlabeled_minari_dataset_trains_through_the_cli(
    minari_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = gym.make("Pendulum-v1")
    rng = np.random.default_rng(0)
    buffers = [
        EpisodeBuffer(
            observations=rng.normal(size=(31, 3)).astype(np.float32),
            actions=rng.uniform(-2, 2, (30, 1)).astype(np.float32),
            rewards=rng.random(30),
            terminations=np.zeros(30, bool),
            truncations=np.r_[np.zeros(29, bool), True],
        )
        for _ in range(3)
    ]
    minari.create_dataset_from_buffers(
        dataset_id="probe/pendulum-nolabel-v0",
        buffer=buffers,
        env=env,
        algorithm_name="random",
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            [
                "train",
                "--dataset",
                "probe/pendulum-nolabel-v0",
                *("--steps", "4", "--eval-every", "2", "--batch-size", "4"),
                *("--embed-size", "16", "--layers", "1", "--heads", "2"),
                *("--context", "5", "--eval-episodes", "0", "--no-progress"),
                *("--logdir", str(tmp_path / "runs"), "--name", "nolabel"),
            ]
        )
    err = capsys.readouterr().err
    assert code == 0, err
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / MODEL_FILE).is_file()
    assert list(run.rglob("loss_probe_pendulum-nolabel-v0.csv"))
