"""The MuJoCo recipes: a real d3rlpy SAC learner per task of Prompt-DT's
benchmarks, its replay and its final policy's rollouts as four Minari datasets.

Tiny budgets (two 200-step episodes per task, a 32x32 SAC with 100 warm-up
steps) so the learner takes real gradient steps within seconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import minari
import numpy as np
import pytest

from dataset_recipes import RecipeError, benchmark_tasks, make_env, schema
from dataset_recipes import mujoco_build as mb
from dataset_recipes import mujoco_learner as ml
from dataset_recipes.cli import main
from dataset_recipes.replay import SACSettings

SAC = SACSettings(hidden_units=(32, 32), batch_size=32, random_steps=100)
TINY: dict[str, Any] = {"expert_episodes": 2, "chunk_episodes": 1, "sac": SAC}


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("main_data.hdf5"))
    }


@pytest.fixture(scope="module")
def ant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[mb.MujocoBuildResult]:
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        result = mb.build_mujoco_datasets(
            "ant-dir", 400, train_tasks=1, progress=False, **TINY
        )
        yield result


def test_an_ant_build_writes_four_labelled_datasets(
    ant: mb.MujocoBuildResult,
) -> None:
    ids = mb.mujoco_dataset_ids("ant-dir")
    assert set(ant.datasets) == set(ids)
    test_tasks = [
        ml.task_name("ant-dir", t) for t in benchmark_tasks("ant-dir")["test"]
    ]
    for (kind, split), path in ant.datasets.items():
        ds = minari.load_dataset(ids[kind, split])
        meta = ds.storage.metadata
        tasks = ["ant-dir-0"] if split == "train" else test_tasks
        assert meta[schema.METADATA_TASKS] == tasks
        assert meta[schema.METADATA_ENV]["family"] == "mujoco"
        assert meta[schema.METADATA_RECIPE]["train_tasks"] == 1
        episodes = list(ds.iterate_episodes())
        per_task = 2  # two learner episodes, or two expert rollouts
        assert len(episodes) == per_task * len(tasks)
        for k, episode in enumerate(episodes):
            names = {bytes(n).decode() for n in episode.infos[schema.INFO_TASK_NAME]}
            assert names == {tasks[k // per_task]}
            assert episode.observations.shape[1] == 27  # the ant's observation
            last = bool(episode.terminations[-1]) or bool(episode.truncations[-1])
            assert last and not episode.terminations[:-1].any()
        # the card names every task and how to rebuild the data
        card = ds.storage.metadata["description"]
        assert all(f"| {t} |" in card for t in tasks)
        assert "harmodt-recipes mujoco --benchmark ant-dir" in card
        assert path.exists()
    replay = minari.load_dataset(ids["replay", "test"])
    lengths = [len(e.rewards) for e in replay.iterate_episodes()]
    # the ant falls under random warm-up actions: terminations, not time-outs
    assert min(lengths) < ml.EPISODE_STEPS
    assert set(ant.expert_returns) == {"ant-dir-0", *test_tasks}


def test_each_task_env_is_rebuilt_from_the_metadata(
    ant: mb.MujocoBuildResult,
) -> None:
    ids = mb.mujoco_dataset_ids("ant-dir")
    ds = minari.load_dataset(ids["expert", "test"])
    values = benchmark_tasks("ant-dir")["values"]
    for task in benchmark_tasks("ant-dir")["test"]:
        env = make_env(ds, ml.task_name("ant-dir", int(task)))
        assert env.unwrapped.goal == pytest.approx(values[task])  # type: ignore[attr-defined]
        assert env.spec is not None and env.spec.max_episode_steps == 200
        env.close()
    with pytest.raises(RecipeError, match="reset"):
        make_env(ds, "ant-dir-6", seed=3)


def test_workers_do_not_change_a_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashes = []
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
        mb.build_mujoco_datasets(
            "cheetah-dir", 400, workers=workers, progress=False, **TINY
        )
        hashes.append(_hashes(root))
    assert len(hashes[0]) == 4 and hashes[0] == hashes[1]


def test_a_stopped_learner_resumes_to_the_same_arrays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def job(folder: Path) -> ml.MujocoJob:  # cheetah-vel task 2: 3 episodes
        return ml.MujocoJob("cheetah-vel", 2, 0, 3, 1, 1, SAC, str(folder), 20, 6)

    straight = job(tmp_path / "straight")
    ml.run_mujoco_job(straight)
    stopped = job(tmp_path / "stopped")
    real_chunk = ml._run_chunk
    calls = []

    def stop_after_one(*args: Any) -> None:
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        real_chunk(*args)

    monkeypatch.setattr(ml, "_run_chunk", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        ml.run_mujoco_job(stopped)
    assert stopped.chunk_path(0).exists() and not stopped.chunk_path(1).exists()
    monkeypatch.setattr(ml, "_run_chunk", real_chunk)
    ml.run_mujoco_job(stopped)  # resumes from the checkpoint after chunk 0
    for path in (*[straight.chunk_path(f) for f in (0, 1, 2)], straight.expert_path):
        other = Path(stopped.folder) / path.relative_to(straight.folder)
        with np.load(path) as a, np.load(other) as b:
            for key in ("observations", "actions", "rewards", "terminations"):
                np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--benchmark", "hopper-vel"], "unknown benchmark 'hopper-vel'"),
        (["--benchmark", "cheetah-dir", "--env-steps-per-task", "250"], "multiple"),
        (["--benchmark", "cheetah-dir", "--expert-episodes", "0"], "expert episodes"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str],
    needle: str,
    minari_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["mujoco", *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not any(minari_path.rglob("*.hdf5"))
