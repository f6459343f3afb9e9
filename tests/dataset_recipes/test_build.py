"""Real tiny builds: layout, metadata, determinism, resume, atomicity, overwrite."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import minari
import numpy as np
import pytest

from dataset_recipes import (
    BuildInterrupted,
    RecipeError,
    build_metaworld_dataset,
    make_env,
    minari_store,
    schema,
)
from dataset_recipes import builder as builder_mod
from dataset_recipes.envs import eval_make_seed

from ._helpers import episode_arrays
from .conftest import EPISODES, QUALITY, SHORT, TASKS, Shared


def test_ids_and_paths(shared: Shared) -> None:
    assert shared.multi.dataset_id.startswith("metaworld-v3/custom-")
    assert shared.single.dataset_id == "metaworld-v3/reach-v3/expert-v0"
    for result in (shared.multi, shared.single):
        assert result.path == shared.root / result.dataset_id
        assert (result.path / "data" / "main_data.hdf5").is_file()
    local = minari.list_local_datasets()
    assert set(local) == {shared.multi.dataset_id, shared.single.dataset_id}
    # Staging keeps only the shared reference-rollout cache.
    assert [p.name for p in (shared.root / ".staging").iterdir()] == ["refs-v1"]


def test_shapes_dtypes_and_infos(shared: Shared) -> None:
    ds = minari.load_dataset(shared.multi.dataset_id)
    assert ds.total_episodes == len(TASKS) * EPISODES
    assert ds.total_steps == len(TASKS) * EPISODES * SHORT
    assert ds.observation_space.shape == (39,)
    assert ds.observation_space.dtype == np.float32
    for k, ep in enumerate(ds.iterate_episodes()):
        task_id = k // EPISODES
        assert ep.observations.shape == (SHORT + 1, 39)
        assert ep.observations.dtype == np.float32
        assert ep.actions.shape == (SHORT, 4) and ep.actions.dtype == np.float32
        assert ep.rewards.shape == (SHORT,)
        assert not ep.terminations.any() and ep.truncations[-1]
        assert not ep.truncations[:-1].any()
        infos = ep.infos
        assert infos[schema.INFO_TASK_ID].shape == (SHORT + 1,)
        assert infos[schema.INFO_TASK_ID].dtype == np.int64
        assert (infos[schema.INFO_TASK_ID] == task_id).all()
        assert infos[schema.INFO_TASK_NAME].dtype.kind == "S"
        assert set(infos[schema.INFO_TASK_NAME]) == {TASKS[task_id].encode()}
        assert infos[schema.INFO_SUCCESS].dtype == np.float32
        assert infos[schema.INFO_SUCCESS].shape == (SHORT + 1,)
        assert infos[schema.INFO_SUCCESS][0] == 0.0
        assert set(np.unique(infos[schema.INFO_SUCCESS])) <= {0.0, 1.0}


def test_metadata(shared: Shared) -> None:
    meta = minari.load_dataset(shared.multi.dataset_id).storage.metadata
    assert meta[schema.METADATA_TASKS] == list(TASKS)
    env_meta = meta[schema.METADATA_ENV]
    assert set(env_meta["tasks"]) == set(TASKS)
    assert env_meta["eval_make_seed"] == eval_make_seed(0)
    assert env_meta["eval_make_seed"] not in env_meta["train_make_seeds"]
    spec = env_meta["tasks"]["push-v3"]
    assert spec["entry_point"] == "metaworld:make_mt_envs"
    assert spec["kwargs"] == {"name": "push-v3", "seed": eval_make_seed(0)}
    assert spec["max_episode_steps"] == SHORT
    refs = meta[schema.METADATA_REF_SCORES]
    for task in TASKS:
        assert refs[task]["ref_min_score"] < refs[task]["ref_max_score"]
    assert meta["ref_min_score"] == pytest.approx(
        np.mean([refs[t]["ref_min_score"] for t in TASKS])
    )
    assert meta["ref_max_score"] == pytest.approx(
        np.mean([refs[t]["ref_max_score"] for t in TASKS])
    )
    mw = importlib.metadata.version("metaworld")
    mj = importlib.metadata.version("mujoco")
    assert f"metaworld=={mw}" in meta["requirements"]
    assert f"mujoco=={mj}" in meta["requirements"]
    assert meta["algorithm_name"] and meta["author"] and meta["code_permalink"]
    stats = meta[schema.METADATA_STATS]
    assert list(stats) == list(TASKS)
    # Stats are recomputed from the stored data, not copied from somewhere else.
    ds = minari.load_dataset(shared.multi.dataset_id)
    for task_id, task in enumerate(TASKS):
        eps = [
            e
            for e in ds.iterate_episodes()
            if e.infos[schema.INFO_TASK_ID][0] == task_id
        ]
        assert stats[task]["episodes"] == EPISODES
        assert stats[task]["mean_return"] == pytest.approx(
            np.mean([e.rewards.sum() for e in eps])
        )
        assert stats[task]["success_rate"] == pytest.approx(
            np.mean([e.infos[schema.INFO_SUCCESS].max() > 0 for e in eps])
        )
    recipe = meta[schema.METADATA_RECIPE]
    assert recipe["quality"] == QUALITY and recipe["seed"] == 0
    card = meta["description"]
    assert "| 0 | reach-v3 | 2 |" in card and "harmodt-recipes metaworld" in card


def test_minari_cli_show(shared: Shared) -> None:
    exe = Path(sys.executable).with_name("minari")
    out = subprocess.run(
        [str(exe), "show", shared.multi.dataset_id],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Total Episodes" in out.stdout and "reach-v3" in out.stdout


def test_single_task_recover_environment(shared: Shared) -> None:
    ds = minari.load_dataset(shared.single.dataset_id)
    meta = ds.storage.metadata
    assert meta[schema.METADATA_TASKS] == ["reach-v3"]
    eval_env = ds.recover_environment(eval_env=True)
    assert eval_env.spec is not None
    assert eval_env.spec.kwargs == {"name": "reach-v3", "seed": eval_make_seed(0)}
    obs, _ = eval_env.reset()
    assert obs.shape == (39,)
    train_goals = {e.observations[0, -3:].tobytes() for e in ds.iterate_episodes()}
    assert obs[-3:].astype(np.float32).tobytes() not in train_goals  # held out
    eval_env.close()
    env = ds.recover_environment()
    assert env.spec is not None and env.spec.kwargs["seed"] == 0  # training goals
    env.close()


def test_make_env_from_suite_dataset(shared: Shared) -> None:
    ds = minari.load_dataset(shared.multi.dataset_id)
    for task in TASKS:
        env = make_env(ds, task)
        obs, _ = env.reset()
        assert obs.shape == (39,)
        obs, reward, _, _, info = env.step(np.zeros(4, dtype=np.float32))
        assert "success" in info and np.isfinite(reward)
        env.close()
    # The dataset id works too, and goals of training episode 0 are replayable.
    first = next(ds.iterate_episodes([EPISODES])).observations[0]  # push-v3 ep 0
    env = make_env(shared.multi.dataset_id, "push-v3", seed=0)
    assert any(
        np.array_equal(first, env.reset()[0].astype(np.float32)) for _ in range(150)
    )
    env.close()


def test_same_recipe_same_arrays_any_worker_count(
    shared: Shared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Different root, different id, 1 worker instead of 2, other chunking.
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    again = build_metaworld_dataset(
        tasks=TASKS,
        quality=QUALITY,
        episodes_per_task=EPISODES,
        max_episode_steps=SHORT,
        workers=1,
        chunk_episodes=1,
        dataset_id="metaworld-v3/again/sub-optimal-v0",
        progress=False,
    )
    other = episode_arrays(again.dataset_id)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(shared.root))
    reference = episode_arrays(shared.multi.dataset_id)
    assert len(other) == len(reference)
    for x, y in zip(other, reference, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)
    assert again.stats == shared.multi.stats


def _build(**kw: object) -> builder_mod.BuildResult:
    args: dict[str, object] = dict(
        tasks=TASKS,
        quality=QUALITY,
        episodes_per_task=EPISODES,
        max_episode_steps=SHORT,
        workers=1,
        chunk_episodes=1,
        progress=False,
    )
    args.update(kw)
    return build_metaworld_dataset(**args)  # type: ignore[arg-type]


def test_interrupted_build_resumes_without_redoing_work(
    shared: Shared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    ran: list[str] = []
    real = builder_mod.run_work_item

    def counting(item):  # type: ignore[no-untyped-def]
        ran.append(item.path)
        return real(item)

    monkeypatch.setattr(builder_mod, "run_work_item", counting)
    # 2 tasks x (1 reference item + 2 one-episode chunks) = 6 items; stop after 3.
    with pytest.raises(BuildInterrupted) as err:
        _build(stop_after_chunks=3)
    assert (err.value.staged_chunks, err.value.total_chunks) == (3, 6)
    first_run = list(ran)
    assert len(first_run) == 3
    # Nothing visible under the id; loading fails cleanly.
    assert minari.list_local_datasets() == {}
    with pytest.raises(FileNotFoundError):
        minari.load_dataset(shared.multi.dataset_id)
    staged = {p: os.stat(p).st_mtime_ns for p in first_run}
    assert all(Path(p).is_file() for p in staged)

    ran.clear()
    result = _build()
    assert (result.generated_chunks, result.reused_chunks) == (3, 3)
    assert not set(ran) & set(staged)  # completed chunks were not regenerated
    # and equals the uninterrupted build (made with 2 workers and other chunking)
    other = episode_arrays(result.dataset_id)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(shared.root))
    reference = episode_arrays(shared.multi.dataset_id)
    for x, y in zip(other, reference, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_failure_while_writing_leaves_nothing_visible(
    minari_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = minari_store.episode_buffers

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:  # after one chunk is already in the HDF5 file
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(minari_store, "episode_buffers", flaky)
    with pytest.raises(OSError, match="simulated"):
        _build(tasks=("reach-v3",), episodes_per_task=2, max_episode_steps=10)
    target = minari_root / "metaworld-v3" / "reach-v3" / "sub-optimal-v0"
    assert not target.exists()
    assert minari.list_local_datasets() == {}
    monkeypatch.setattr(minari_store, "episode_buffers", real)
    result = _build(tasks=("reach-v3",), episodes_per_task=2, max_episode_steps=10)
    assert result.generated_chunks == 0 and result.reused_chunks == 3
    assert minari.load_dataset(result.dataset_id).total_episodes == 2


def test_overwrite(minari_root: Path) -> None:
    kw = dict(tasks="reach-v3", episodes_per_task=1, max_episode_steps=10)
    first = _build(quality="expert", dataset_id="metaworld-v3/ow/test-v0", **kw)
    assert (first.generated_chunks, first.reused_chunks) == (2, 0)
    with pytest.raises(RecipeError) as err:
        _build(quality="random", dataset_id="metaworld-v3/ow/test-v0", **kw)
    assert "metaworld-v3/ow/test-v0" in str(err.value)
    assert "--overwrite" in str(err.value)
    meta = minari.load_dataset(first.dataset_id).storage.metadata
    assert meta[schema.METADATA_RECIPE]["quality"] == "expert"  # untouched
    second = _build(
        quality="random", dataset_id="metaworld-v3/ow/test-v0", overwrite=True, **kw
    )
    # Reference rollouts do not depend on the quality: reused, not recomputed.
    assert (second.generated_chunks, second.reused_chunks) == (1, 1)
    assert second.stats[0].ref_max_score == first.stats[0].ref_max_score
    meta = minari.load_dataset(first.dataset_id).storage.metadata
    assert meta[schema.METADATA_RECIPE]["quality"] == "random"
    assert list(minari.list_local_datasets()) == ["metaworld-v3/ow/test-v0"]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(tasks="reach-v3,fly-v3"), "unknown task 'fly-v3'"),
        (dict(suite="MT11", tasks=None), "unknown suite 'MT11'"),
        (dict(episodes_per_task=0), "episodes per task must be in"),
        (dict(episodes_per_task=-3), "episodes per task must be in"),
        (dict(quality="great"), "unknown quality 'great'"),
        (dict(seed=-1), "seed must be in"),
        (dict(workers=0), "workers must be in"),
        (dict(dataset_id="no-version"), "malformed dataset id"),
    ],
)
def test_bad_input_fails_before_stepping(
    minari_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    kwargs: dict[str, object],
    needle: str,
) -> None:
    def boom(item):  # type: ignore[no-untyped-def]
        raise AssertionError("an environment was stepped")

    monkeypatch.setattr(builder_mod, "run_work_item", boom)
    with pytest.raises(RecipeError) as err:
        _build(**kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_unwritable_dataset_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    path = blocker if where == "file" else blocker / "sub"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    monkeypatch.setattr(builder_mod, "run_work_item", None)  # never reached
    with pytest.raises(RecipeError, match="not writable.*MINARI_DATASETS_PATH"):
        _build()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_dataset_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(ro / "store"))
    try:
        with pytest.raises(RecipeError, match="not writable"):
            _build()
    finally:
        ro.chmod(0o700)


def test_killed_cli_build_leaves_no_dataset_and_resumes(minari_root: Path) -> None:
    """SIGTERM a real CLI build mid-way, then finish it with the same command."""
    cmd = [
        sys.executable,
        "-m",
        "dataset_recipes",
        "metaworld",
        "--tasks",
        "reach-v3,push-v3",
        "--quality",
        "near-optimal",
        "--episodes-per-task",
        "6",
        "--max-episode-steps",
        "120",
        "--chunk-episodes",
        "1",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    chunks = minari_root / ".staging"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(chunks.glob("*/chunks/*.npz")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "build finished before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr  # 128 + SIGTERM
    assert "re-run" in stderr and "Traceback" not in stderr
    assert minari.list_local_datasets() == {}
    staged = list(chunks.rglob("*.npz"))
    assert 0 < len(staged) < 14  # 12 one-episode chunks + 2 reference items
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"({14 - len(staged)} chunks generated, {len(staged)} reused" in done.stdout
    ds = minari.load_dataset("metaworld-v3/custom-25c10ab5/near-optimal-v0")
    assert ds.total_episodes == 12


def test_a_second_build_of_one_dataset_is_refused_at_once(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with minari_store.build_lock(lock, "metaworld-v3/x-v0"):
        with pytest.raises(RecipeError, match="another build of metaworld-v3/x-v0"):
            with minari_store.build_lock(lock, "metaworld-v3/x-v0"):
                pass  # pragma: no cover
    with minari_store.build_lock(lock, "metaworld-v3/x-v0"):  # released: free again
        pass
