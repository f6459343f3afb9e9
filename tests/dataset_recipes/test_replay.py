"""The replay quality: a real d3rlpy SAC learner per task, recorded in order.

Tiny budgets (50-step episodes, 6 episodes per task, a 32x32 SAC with 100
warm-up steps) so the learner takes real gradient steps within seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import minari
import numpy as np
import pytest

from dataset_recipes import (
    RecipeError,
    ReplayBuildResult,
    SACSettings,
    build_replay_datasets,
    dataset_id,
    parse_dataset_id,
    replay_dataset_ids,
    schema,
)
from dataset_recipes.cli import main
from dataset_recipes.replay import ReplayJob, run_replay_job

TASKS = ("reach-v3", "push-v3")
STEPS = 50
BUDGET = 300  # 6 episodes per task
CHUNK = 2
SAC = SACSettings(hidden_units=(32, 32), batch_size=32, random_steps=100)
SAC_JSON = json.dumps({"hidden_units": [32, 32], "batch_size": 32, "random_steps": 100})
NEAR, SUB = replay_dataset_ids(tasks=TASKS)


def _build(root: Path, workers: int) -> ReplayBuildResult:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        return build_replay_datasets(
            tasks=TASKS,
            env_steps_per_task=BUDGET,
            max_episode_steps=STEPS,
            chunk_episodes=CHUNK,
            sac=SAC,
            workers=workers,
            progress=False,
        )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("replay-minari")
    _build(root, workers=1)
    yield root


def _episodes(root: Path, ident: str) -> list[minari.EpisodeData]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        return list(minari.load_dataset(ident).iterate_episodes())


def _same(a: minari.EpisodeData, b: minari.EpisodeData) -> bool:
    return (
        np.array_equal(a.observations, b.observations)
        and np.array_equal(a.actions, b.actions)
        and np.array_equal(a.rewards, b.rewards)
        and all(np.array_equal(a.infos[k], b.infos[k]) for k in a.infos)
    )


def test_ids() -> None:
    assert NEAR == dataset_id(list(TASKS), "near-optimal-replay")
    assert dataset_id("MT5", "sub-optimal-replay") == (
        "metaworld-v3/mt5/sub-optimal-replay-v0"
    )
    parsed = parse_dataset_id("metaworld-v3/mt5/sub-optimal-replay-v0")
    assert parsed is not None and parsed.suite == "MT5"
    assert parsed.quality == "sub-optimal-replay"


def test_both_datasets_and_the_first_half(built: Path) -> None:
    near, sub = _episodes(built, NEAR), _episodes(built, SUB)
    per_task = BUDGET // STEPS
    assert len(near) == 2 * per_task and len(sub) == 2 * (per_task // 2)
    for task_id, task in enumerate(TASKS):
        mine = [e for e in near if int(e.infos[schema.INFO_TASK_ID][0]) == task_id]
        half = [e for e in sub if int(e.infos[schema.INFO_TASK_ID][0]) == task_id]
        assert [int(e.infos[schema.INFO_EPISODE_INDEX][0]) for e in mine] == list(
            range(per_task)
        )
        assert len(half) == per_task // 2
        assert all(_same(a, b) for a, b in zip(half, mine, strict=False))
        assert {bytes(e.infos[schema.INFO_TASK_NAME][0]) for e in mine} == {
            task.encode()
        }


def test_learner_step_counts_the_learners_env_steps(built: Path) -> None:
    for task_id in range(len(TASKS)):
        steps = np.concatenate(
            [
                e.infos[schema.INFO_LEARNER_STEP][:-1]
                for e in _episodes(built, NEAR)
                if int(e.infos[schema.INFO_TASK_ID][0]) == task_id
            ]
        )
        assert np.array_equal(steps, np.arange(BUDGET))


def test_the_learner_learned(built: Path) -> None:
    """After the warm-up the actions come from SAC's policy, not the uniform
    warm-up draw: a learner that never updated would act the same way."""
    episodes = _episodes(built, NEAR)
    warm = SAC.random_steps // STEPS
    first = episodes[0].actions
    later = episodes[warm + 1].actions
    assert np.abs(first).max() <= 1.0 and np.abs(later).max() <= 1.0
    assert not np.allclose(first, later)


def test_card_and_metadata(built: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(built))
        meta = minari.load_dataset(SUB).storage.metadata
    learner = meta[schema.METADATA_LEARNER]
    assert learner["sac"]["hidden_units"] == [32, 32]
    curve = learner["tasks"]["push-v3"]
    assert curve["env_steps"] == BUDGET and curve["episodes"] == BUDGET // STEPS
    assert len(curve["data_success_by_tenth"]) == 10
    assert curve["greedy_after_episodes"] == sorted(curve["greedy_after_episodes"])
    assert curve["cpu_seconds"] > 0
    card = meta["description"]
    assert "first half" in card and "d3rlpy" in card and "SAC" in card
    assert "--quality replay --env-steps-per-task 300" in card
    stats = meta[schema.METADATA_STATS]["reach-v3"]
    assert stats["episodes"] == BUDGET // STEPS // 2


def test_learner_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    """Interrupted after two chunks (and a stale chunk past the checkpoint
    left behind), the resumed learner writes the uninterrupted run's chunks."""
    refs = str(tmp_path / "refs.npz")
    whole = ReplayJob("reach-v3", 0, 6, STEPS, CHUNK, SAC, str(tmp_path / "a"), refs)
    cut = ReplayJob("reach-v3", 0, 6, STEPS, CHUNK, SAC, str(tmp_path / "b"), refs)
    run_replay_job(whole)
    import dataset_recipes.replay as replay

    real = replay._run_chunk
    calls = []

    def stop_third(*args: object, **kwargs: object) -> None:
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        real(*args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(replay, "_run_chunk", stop_third)
        with pytest.raises(KeyboardInterrupt):
            run_replay_job(cut)
    stale = cut.chunk_path(4)
    stale.write_bytes(whole.chunk_path(0).read_bytes())  # not the right data
    np.random.seed(1234)  # the caller's RNG state must not matter
    run_replay_job(cut)
    for first in whole.chunk_starts():
        with np.load(whole.chunk_path(first)) as a, np.load(cut.chunk_path(first)) as b:
            for key in ("observations", "actions", "rewards", "eval_success"):
                assert np.array_equal(a[key], b[key]), (first, key)


def _cli(*extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dataset_recipes",
        "metaworld",
        "--tasks",
        ",".join(TASKS),
        "--quality",
        "replay",
        "--env-steps-per-task",
        str(BUDGET),
        "--max-episode-steps",
        str(STEPS),
        "--chunk-episodes",
        str(CHUNK),
        "--sac",
        SAC_JSON,
        "--no-progress",
        *extra,
    ]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_after_first_checkpoint(
    env: dict[str, str], staging: Path
) -> tuple[subprocess.Popen[str], str]:
    """Start the 2-worker CLI build, SIGINT it once a learner checkpoint
    exists; returns the ended process and its stderr."""
    proc = subprocess.Popen(
        _cli("--workers", "2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # SIGINT as a terminal delivers it: an earlier test in this worker can
        # leave it ignored, and an ignored SIGINT is inherited
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(staging.glob("*/learners/*.npz")):
            break
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.fail(f"build ended before it could be interrupted: {proc.communicate()}")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    return proc, stderr


def test_sigint_build_resumes_to_the_same_arrays(built: Path, tmp_path: Path) -> None:
    """A SIGINT'd build with 2 workers, resumed, equals the 1-worker build:
    reproducible, resumable and independent of the worker count at once."""
    root = tmp_path
    env = {**os.environ, "MINARI_DATASETS_PATH": str(root), "COLUMNS": "120"}
    proc, stderr = _interrupt_after_first_checkpoint(env, root / ".staging")
    assert proc.returncode == 130, stderr
    assert "re-run the same command" in stderr and "Traceback" not in stderr
    assert not (root / "metaworld-v3").exists()  # nothing visible under an id
    done = subprocess.run(_cli(), capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert NEAR in done.stdout and SUB in done.stdout
    for ident in (NEAR, SUB):
        a, b = _episodes(built, ident), _episodes(root, ident)
        assert len(a) == len(b) and all(map(_same, a, b))
    # staging removed once published
    assert not list((root / ".staging").glob("*replay-*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env-steps-per-task", "0"], "positive multiple of the episode length"),
        (["--env-steps-per-task", "-500"], "positive multiple"),
        (["--env-steps-per-task", "750"], "positive multiple"),
        (["--env-steps-per-task", "lots"], "invalid int value: 'lots'"),
        (["--episodes-per-task", "10"], "--episodes-per-task does not apply"),
        (["--dataset-id", "a/b-v0"], "--dataset-id does not apply"),
        (["--suite", "MT7"], "MT7"),
        (["--tasks", "reach-v3,fly-v3"], "fly-v3"),
        (["--sac", '{"batch": 3}'], "unknown SAC setting"),
    ],
)
def test_bad_input_one_line_exit_2(
    args: list[str], message: str, minari_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["metaworld", "--quality", "replay", *args]
    if "--suite" not in args and "--tasks" not in args:
        argv += ["--suite", "MT5"]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert message in err and "Traceback" not in err
    assert not minari_root.exists() or not any(minari_root.rglob("*.npz"))


def test_env_steps_only_with_replay(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["metaworld", "--suite", "MT5", "--quality", "expert"]
    assert main([*argv, "--env-steps-per-task", "1000"]) == 2
    assert "applies to --quality replay only" in capsys.readouterr().err
    assert main([*argv, "--sac", "{}"]) == 2
    assert "--sac applies to --quality replay only" in capsys.readouterr().err
    assert main(["calibrate", "--suite", "MT5", "--quality", "replay"]) == 2
    assert "'harmodt-recipes metaworld' only" in capsys.readouterr().err


def test_sac_settings_json_round_trip() -> None:
    assert SACSettings.from_json(json.dumps(SAC.to_json())) == SAC
    with pytest.raises(RecipeError, match="batch_size"):
        SACSettings.from_json('{"batch_size": 0}')
    with pytest.raises(RecipeError, match="not JSON"):
        SACSettings.from_json("{")


def test_replay_curves_example_reads_the_learner_metadata(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runpy

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(built))
    root = Path(__file__).resolve().parents[2]
    example = runpy.run_path(str(root / "examples" / "replay_curves.py"))
    curves = example["curves_of"](NEAR)
    assert [c.task for c in curves] == list(TASKS)
    assert all(c.env_steps == BUDGET and c.cpu_seconds > 0 for c in curves)
    png = tmp_path / "curves.png"
    example["plot"](curves, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
