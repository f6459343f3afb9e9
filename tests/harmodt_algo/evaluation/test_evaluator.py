"""Tests of the multi-task evaluator on real Meta-World envs (the tiny recipe).

The tiny recipe dataset (2 tasks × 4 expert episodes × 60 steps) fixes the
evaluation envs: held-out goals, 60-step time limit. A HarmoDT trained for 4
steps is enough to check plumbing and equality with d3rlpy's own wrapper; a
scripted-expert policy and a fake stepper check the bookkeeping.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import d3rlpy
import minari
import numpy as np
import pytest
import torch
from d3rlpy.logging import D3RLPyLogger, FileAdapterFactory, NoopAdapterFactory
from metaworld.policies import ENV_POLICY_MAP

import harmodt_algo  # noqa: F401  (before d3rlpy use: registers HarmoDT)
from dataset_recipes import make_env
from harmodt_algo import HarmoDT, HarmoDTConfig, as_multitask_dataset, evaluation
from harmodt_algo.evaluation import (
    D3rlpyOneHotPolicy,
    EvaluationResult,
    HarmoDTPolicy,
    MultiTaskEvaluator,
    MultiTaskPolicy,
    ScriptedExperts,
    _goal_selector,
    goal_indices,
    merge_results,
    one_hot_episodes,
    one_hot_replay_buffer,
    resolve_target_returns,
)

from ...conftest import TINY_STEPS, TINY_TASKS

SMALL = dict(
    batch_size=8,
    embed_size=32,
    num_layers=2,
    num_heads=2,
    context_size=5,
    mask_interval=4,
    mask_batch_size=4,
    max_timestep=100,
)
N_EPISODES = 3

pytestmark = pytest.mark.filterwarnings("ignore:Constant.*too high:UserWarning")


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Small forward passes on a shared 2-core machine: two OpenMP threads
    competing with other jobs made single calls up to 10x slower at random."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset(_tiny_recipe_store: tuple[Path, str]) -> Any:
    root, dataset_id = _tiny_recipe_store
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        return minari.load_dataset(dataset_id)


@pytest.fixture(scope="module")
def algo(dataset: Any) -> HarmoDT:
    return HarmoDT(HarmoDTConfig(**SMALL)).fit(  # type: ignore[arg-type]
        dataset,
        n_steps=4,
        logger_adapter=NoopAdapterFactory(),
        show_progress=False,
    )


@pytest.fixture(scope="module")
def evaluator(dataset: Any) -> Iterator[MultiTaskEvaluator]:
    with MultiTaskEvaluator(dataset, n_episodes=N_EPISODES) as ev:
        yield ev


class ExpertPolicy(ScriptedExperts):
    """The scripted experts, recording the first observations the evaluator
    hands them."""

    def __init__(self) -> None:
        self.first_obs: list[np.ndarray] = []
        self.names: list[str] = []

    def reset(
        self, task_ids: np.ndarray, task_names: Sequence[str] | None = None
    ) -> None:
        super().reset(task_ids, task_names)
        self.started = False

    def act(
        self,
        observations: np.ndarray,
        rewards: np.ndarray,
        task_ids: np.ndarray,
        active: np.ndarray,
    ) -> np.ndarray:
        if not self.started:
            self.first_obs.extend(observations.copy())
            self.started = True
        return super().act(observations, rewards, task_ids, active)


# ------------------------------------------------------------ determinism


def test_two_evaluations_give_identical_numbers(
    evaluator: MultiTaskEvaluator, algo: HarmoDT, dataset: Any
) -> None:
    first = evaluator.evaluate(algo)
    second = evaluator.evaluate(algo)
    assert first == second  # every episode's goal, success, return and length
    # a fresh evaluator (fresh envs) reproduces them too
    with MultiTaskEvaluator(dataset, n_episodes=N_EPISODES) as other:
        assert other.evaluate(algo) == first
    assert first.env_steps == len(TINY_TASKS) * N_EPISODES * TINY_STEPS
    returns = [e.episode_return for r in first.tasks for e in r.episodes]
    assert len(set(returns)) == len(returns)  # different goals, different episodes


def test_bookkeeping_per_task_and_goals(
    evaluator: MultiTaskEvaluator, dataset: Any
) -> None:
    policy = ExpertPolicy()
    assert isinstance(policy, MultiTaskPolicy)
    result = evaluator.evaluate(policy)
    assert result.task_names == list(TINY_TASKS)
    goals = goal_indices(N_EPISODES, 0)
    assert len(set(goals)) == N_EPISODES
    for task_result in result.tasks:
        assert [e.index for e in task_result.episodes] == list(range(N_EPISODES))
        assert [e.goal for e in task_result.episodes] == goals
        assert all(e.length == TINY_STEPS for e in task_result.episodes)
        # each episode = an independent plain rollout on that held-out goal
        env = make_env(dataset, task_result.task)
        selector = _goal_selector(env)
        selector.toggle_sample_tasks_on_reset(False)
        expert = ENV_POLICY_MAP[task_result.task]()  # type: ignore[abstract]
        for e in task_result.episodes:
            env.unwrapped.set_task(selector.tasks[e.goal])  # type: ignore[attr-defined]
            obs, _ = env.reset()
            ret, ever = 0.0, False
            for _ in range(TINY_STEPS):
                obs, r, _, _, info = env.step(np.clip(expert.get_action(obs), -1, 1))
                ret += float(r)
                ever = ever or info["success"] > 0
            assert (e.success, e.episode_return) == (ever, pytest.approx(ret, abs=1e-9))
        env.close()
    # 60 steps are short even for the expert: some goals solved, some not
    assert 0.0 < result.success_mean < 1.0
    # episode-major order: [t0 e0, t1 e0, t0 e1, ...]; the goal (last 3 obs
    # entries) differs between a task's episodes
    first = np.array(policy.first_obs)  # (tasks * episodes, 39)
    for t, task in enumerate(TINY_TASKS):
        goals_xyz = first[t :: len(TINY_TASKS), -3:]
        assert len({tuple(g) for g in goals_xyz}) == N_EPISODES, task
    assert policy.names == [t for _ in range(N_EPISODES) for t in TINY_TASKS]
    # another seed, other goals
    assert goal_indices(N_EPISODES, 1) != goals


class FakeStepper:
    """Scripted env outcomes: episode i ends after ends[i] steps, succeeds
    only at step success_at[i] (1-based), reward 1 per step."""

    def __init__(self, ends: list[int], success_at: list[int]) -> None:
        self.ends, self.success_at = ends, success_at
        self.stepped: list[np.ndarray] = []

    def start(self, episodes: Sequence[tuple[str, int]]) -> np.ndarray:
        self.t = 0
        return np.zeros((len(episodes), 39))

    def step(self, actions: Any, active: np.ndarray) -> Any:
        self.t += 1
        self.stepped.append(active.copy())
        n = len(self.ends)
        done = np.array([self.t >= e for e in self.ends])
        success = np.array([self.t == s for s in self.success_at])
        return np.full((n, 39), float(self.t)), np.ones(n), done, success

    def close(self) -> None:
        pass


class RecordingPolicy:
    def __init__(self) -> None:
        self.rewards: list[np.ndarray] = []

    def reset(
        self, task_ids: np.ndarray, task_names: Sequence[str] | None = None
    ) -> None:
        self.n = len(task_ids)

    def act(self, observations: Any, rewards: Any, task_ids: Any, active: Any) -> Any:
        self.rewards.append(np.asarray(rewards).copy())
        return np.zeros((self.n, 4))


def test_success_is_ever_true_and_episodes_end_on_their_own(dataset: Any) -> None:
    ev = MultiTaskEvaluator(dataset, tasks=["reach-v3"], n_episodes=3, max_steps=8)
    # episode 0 succeeds at step 2 only; 1 never; 2 ends at step 4 before its
    # success at 6; the time limit (max_steps=8) ends 0 and 1
    fake = FakeStepper(ends=[100, 100, 4], success_at=[2, 0, 6])
    ev._stepper = fake
    policy = RecordingPolicy()
    result = ev.evaluate(policy)
    episodes = result["reach-v3"].episodes
    assert [e.success for e in episodes] == [True, False, False]
    assert [e.length for e in episodes] == [8, 8, 4]
    assert [e.episode_return for e in episodes] == [8.0, 8.0, 4.0]
    assert result["reach-v3"].success_rate == pytest.approx(1 / 3)
    assert result.env_steps == 20
    # the finished episode is not stepped again
    assert fake.stepped[4].tolist() == [True, True, False]
    # the policy sees the previous step's reward, 0 at the start
    assert policy.rewards[0].tolist() == [0.0, 0.0, 0.0]
    assert policy.rewards[1].tolist() == [1.0, 1.0, 1.0]


def test_stop_on_success_ends_an_episode_at_its_first_success(dataset: Any) -> None:
    """The same success rates as the full-length run above, in fewer steps;
    the result says its episodes were shortened."""
    ev = MultiTaskEvaluator(
        dataset, tasks=["reach-v3"], n_episodes=3, max_steps=8, stop_on_success=True
    )
    fake = FakeStepper(ends=[100, 100, 4], success_at=[2, 0, 6])
    ev._stepper = fake
    result = ev.evaluate(RecordingPolicy())
    episodes = result["reach-v3"].episodes
    assert [e.success for e in episodes] == [True, False, False]
    assert [e.length for e in episodes] == [2, 8, 4]  # episode 0 stops at step 2
    assert [e.episode_return for e in episodes] == [2.0, 8.0, 4.0]
    assert result.env_steps == 14 and result.stop_on_success
    assert fake.stepped[2].tolist() == [False, True, True]
    assert result.to_dict()["stop_on_success"] is True
    assert (
        "stop_on_success"
        not in dataclasses.replace(result, stop_on_success=False).to_dict()
    )
    with pytest.raises(ValueError, match="stop_on_success"):
        merge_results([result, dataclasses.replace(result, stop_on_success=False)])


def test_waves_and_workers_do_not_change_results(
    evaluator: MultiTaskEvaluator, dataset: Any
) -> None:
    reference = evaluator.evaluate(ExpertPolicy())
    with MultiTaskEvaluator(dataset, n_episodes=N_EPISODES, max_parallel=4) as ev:
        assert ev.evaluate(ExpertPolicy()) == reference
    with MultiTaskEvaluator(dataset, n_episodes=N_EPISODES, workers=2) as ev:
        assert ev.evaluate(ExpertPolicy()) == reference


def test_a_subset_of_tasks_plays_the_same_episodes(
    evaluator: MultiTaskEvaluator,
) -> None:
    reference = evaluator.evaluate(ExpertPolicy())
    task = evaluator.tasks[-1]
    subset = evaluator.evaluate(ExpertPolicy(), [task])
    assert subset.task_names == [task] and subset[task] == reference[task]
    with pytest.raises(ValueError, match="non-empty subset"):
        evaluator.evaluate(ExpertPolicy(), ["push-v3"])
    with pytest.raises(ValueError, match="non-empty subset"):
        evaluator.evaluate(ExpertPolicy(), [])


def test_extra_envs_of_a_task_replay_make_env_exactly(
    evaluator: MultiTaskEvaluator, dataset: Any
) -> None:
    env = make_env(dataset, "reach-v3")  # what the evaluator's first env is
    goals = evaluator.goals
    shard = evaluator._get_stepper()
    obs = shard.start([("reach-v3", goals[1])] * 2)  # env 0 (make_env), env 1 (clone)
    np.testing.assert_array_equal(obs[0], obs[1])
    expert = ENV_POLICY_MAP["reach-v3"]()  # type: ignore[abstract]
    for _ in range(10):
        a = np.clip(expert.get_action(obs[0]), -1, 1)
        obs, _, _, _ = shard.step(np.stack([a, a]), np.ones(2, bool))
        np.testing.assert_array_equal(obs[0], obs[1])
    env.close()


# ------------------------------------------------------- HarmoDT adapter


def test_harmodt_policy_matches_d3rlpy_stateful_wrapper(
    algo: HarmoDT, dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same model inputs (scaled windows) and same actions as d3rlpy's
    ``StatefulTransformerWrapper``, one episode at a time and batched."""
    assert algo.impl is not None
    # record the model inputs on both sides
    theirs: list[tuple[torch.Tensor, ...]] = []
    ours: list[tuple[torch.Tensor, ...]] = []
    predict_task = algo.impl.predict_task
    batch_actions = evaluation.policies.harmodt_batch_actions

    def record_theirs(inpt: Any, task_id: int) -> torch.Tensor:
        fields = (inpt.observations, inpt.actions, inpt.returns_to_go)
        theirs.append(
            (*(f[0].clone() for f in fields), inpt.timesteps[0], inpt.masks[0])
        )
        return predict_task(inpt, task_id)

    def record_ours(*args: Any) -> Any:
        ours.extend(zip(*(t.clone() for t in args[1:6]), strict=True))  # per row
        return batch_actions(*args)

    monkeypatch.setattr(algo.impl, "predict_task", record_theirs)
    # patched where HarmoDTPolicy looks it up
    monkeypatch.setattr(evaluation.policies, "harmodt_batch_actions", record_ours)

    targets = {"reach-v3": 400.0, "button-press-topdown-v3": 150.0}
    envs = [make_env(dataset, t) for t in TINY_TASKS]
    wrappers = [algo.for_task(t).as_stateful_wrapper(targets[t]) for t in TINY_TASKS]
    single = [HarmoDTPolicy(algo, targets) for _ in TINY_TASKS]
    batched = HarmoDTPolicy(algo, targets)  # both tasks in one forward pass
    grouped = HarmoDTPolicy(algo, targets, per_task_forward=True)  # one per task
    ids = np.arange(len(TINY_TASKS))
    batched.reset(ids, list(TINY_TASKS))
    grouped.reset(ids, list(TINY_TASKS))
    for t, pol in enumerate(single):
        pol.reset(np.array([t]), list(TINY_TASKS))
    obs = [env.reset()[0] for env in envs]
    rewards = [0.0, 0.0]
    worst_single, worst_batched, worst_grouped = 0.0, 0.0, 0.0
    for _ in range(TINY_STEPS):  # > context_size: the window slides
        theirs.clear()
        ours.clear()
        ref = [w.predict(o, r) for w, o, r in zip(wrappers, obs, rewards, strict=True)]
        for t, pol in enumerate(single):
            one = np.ones(1, bool)
            a = pol.act(obs[t][None], np.array([rewards[t]]), ids[t : t + 1], one)
            worst_single = max(worst_single, float(np.abs(a[0] - ref[t]).max()))
        b = batched.act(np.stack(obs), np.array(rewards), ids, np.ones(2, bool))
        worst_batched = max(worst_batched, float(np.abs(b - np.stack(ref)).max()))
        g = grouped.act(np.stack(obs), np.array(rewards), ids, np.ones(2, bool))
        worst_grouped = max(worst_grouped, float(np.abs(g - np.stack(ref)).max()))
        # rows: single 0, single 1, batched 0 and 1, grouped 0, grouped 1
        assert len(theirs) == 2 and len(ours) == 6
        for row, ref_row in zip(ours, theirs * 3, strict=True):
            # observations, actions, returns-to-go, timesteps, masks: equal
            # (past actions are the model's own: batched ones may differ by ~1e-8)
            for i, (mine, d3) in enumerate(zip(row, ref_row, strict=True)):
                tol = 1e-5 if i == 1 else 0.0
                torch.testing.assert_close(mine, d3.to(mine.dtype), rtol=0, atol=tol)
        steps = [env.step(a) for env, a in zip(envs, ref, strict=True)]
        obs = [s[0] for s in steps]
        rewards = [float(s[1]) for s in steps]
    assert worst_single < 1e-5
    assert worst_batched < 1e-5
    assert worst_grouped < 1e-5
    assert not np.allclose(ref[0], ref[1])  # the two tasks act differently
    # past max_timestep (100) the timestep stays at its cap, as in d3rlpy
    for _ in range(algo.config.max_timestep - TINY_STEPS + 3):
        theirs.clear()
        ours.clear()
        ref0 = wrappers[0].predict(obs[0], rewards[0])
        a = single[0].act(
            obs[0][None], np.array([rewards[0]]), ids[:1], np.ones(1, bool)
        )
        np.testing.assert_allclose(a[0], ref0, atol=1e-5)
        torch.testing.assert_close(ours[0][3], theirs[0][3], rtol=0, atol=0)
    assert int(ours[0][3][-1]) == algo.config.max_timestep
    for env in envs:
        env.close()


def test_target_return_rule(
    evaluator: MultiTaskEvaluator, algo: HarmoDT, dataset: Any
) -> None:
    data = as_multitask_dataset(dataset)
    expected = {t: data.max_return(t) for t in TINY_TASKS}
    assert evaluator.target_returns() == expected
    assert expected["reach-v3"] != expected["button-press-topdown-v3"]
    policy = evaluator.policy_for(algo)
    assert isinstance(policy, HarmoDTPolicy)
    assert {t: policy.target_return(t) for t in TINY_TASKS} == expected
    # overrides: one float, a mapping, or a dataset
    assert resolve_target_returns(TINY_TASKS, 7.0) == dict.fromkeys(TINY_TASKS, 7.0)
    assert resolve_target_returns(["reach-v3"], {"reach-v3": 3}) == {"reach-v3": 3.0}
    assert resolve_target_returns(TINY_TASKS, data) == expected
    with pytest.raises(ValueError, match="button-press-topdown-v3"):
        resolve_target_returns(TINY_TASKS, {"reach-v3": 1.0})
    # the target changes what the model does
    low = HarmoDTPolicy(algo, 0.0)
    high = HarmoDTPolicy(algo, 5000.0)
    obs = np.tile(data.episodes[0][0].observations[:1], (1, 1))
    outs = []
    for pol in (low, high):
        pol.reset(np.array([0]), list(TINY_TASKS))
        outs.append(pol.act(obs, np.zeros(1), np.array([0]), np.ones(1, bool)))
    assert not np.allclose(outs[0], outs[1])
    # metadata only: the rule has no data to read
    meta = dict(dataset.storage.metadata)
    with MultiTaskEvaluator(meta, n_episodes=1, max_steps=2) as ev:
        with pytest.raises(ValueError, match="target_returns"):
            ev.evaluate(algo)
    with MultiTaskEvaluator(meta, n_episodes=1, max_steps=2, target_returns=50.0) as ev:
        assert ev.evaluate(algo).env_steps == 2 * len(TINY_TASKS)


# ------------------------------------------------------ one-hot d3rlpy BC


def test_one_hot_bc_adapter(dataset: Any, evaluator: MultiTaskEvaluator) -> None:
    data = as_multitask_dataset(dataset)
    episodes = one_hot_episodes(data)
    assert len(episodes) == sum(len(e) for e in data.episodes)
    for ep, (t, source) in zip(
        episodes,
        [(t, e) for t, eps in enumerate(data.episodes) for e in eps],
        strict=True,
    ):
        assert ep.observations.shape == (TINY_STEPS, 39 + len(TINY_TASKS))
        np.testing.assert_array_equal(ep.observations[:, :39], source.observations)
        np.testing.assert_array_equal(
            ep.observations[:, 39:], np.eye(len(TINY_TASKS))[[t] * TINY_STEPS]
        )
    bc = d3rlpy.algos.BCConfig(batch_size=16).create()
    bc.fit(
        one_hot_replay_buffer(data),
        n_steps=5,
        n_steps_per_epoch=5,
        logger_adapter=NoopAdapterFactory(),
        show_progress=False,
    )
    # the adapter is one batched algo.predict on concat(obs, one-hot)
    policy = D3rlpyOneHotPolicy(bc, len(TINY_TASKS))
    ids = np.array([1, 0, 1])
    policy.reset(ids, list(TINY_TASKS))
    obs = np.random.default_rng(0).normal(size=(3, 39))
    active = np.array([True, False, True])
    got = policy.act(obs, np.zeros(3), ids, active)
    x = np.concatenate([obs, np.eye(2)[ids]], axis=1).astype(np.float32)
    np.testing.assert_allclose(got[active], bc.predict(x)[active], atol=1e-6)
    assert np.all(got[~active] == 0)
    # by names: the one-hot order may differ from the suite order
    by_name = D3rlpyOneHotPolicy(bc, list(reversed(TINY_TASKS)))
    by_name.reset(ids, list(TINY_TASKS))
    flipped = by_name.act(obs, np.zeros(3), ids, np.ones(3, bool))
    np.testing.assert_allclose(
        flipped, bc.predict(np.concatenate([obs, np.eye(2)[1 - ids]], 1)), atol=1e-6
    )
    # through the evaluator (auto-wrapped), twice the same numbers
    metrics = evaluator(bc)
    assert metrics == evaluator(bc)
    assert set(metrics) == {
        "success_reach-v3",
        "return_reach-v3",
        "success_button-press-topdown-v3",
        "return_button-press-topdown-v3",
        "success_mean",
        "return_mean",
    }


# ------------------------------------------------------------- fit hook


def test_evaluator_as_fit_hook_logs_metric_names(
    evaluator: MultiTaskEvaluator, algo: HarmoDT, tmp_path: Path
) -> None:
    metrics = evaluator(algo)
    result = evaluator.last_result
    assert isinstance(result, EvaluationResult)
    assert metrics == result.metrics()
    expected = [f"{kind}_{t}" for t in TINY_TASKS for kind in ("success", "return")]
    assert list(metrics) == [*expected, "success_mean", "return_mean"]
    assert metrics["success_mean"] == pytest.approx(
        np.mean([metrics[f"success_{t}"] for t in TINY_TASKS])
    )
    assert all(0.0 <= metrics[f"success_{t}"] <= 1.0 for t in TINY_TASKS)
    # d3rlpy's file logger writes one CSV per metric name
    logger = D3RLPyLogger(
        algo=algo,
        adapter_factory=FileAdapterFactory(root_dir=str(tmp_path)),
        experiment_name="eval",
        n_steps_per_epoch=1,
        with_timestamp=False,
    )
    for name, value in metrics.items():
        logger.add_metric(name, value)
    logger.commit(1, 1)
    logger.close()
    written = {p.stem for p in (tmp_path / "eval").glob("*.csv")}
    assert set(metrics) <= written
    # JSON summary and rich table carry the same numbers
    summary = result.to_dict()
    assert summary["success_mean"] == metrics["success_mean"]
    assert len(summary["tasks"]["reach-v3"]["episodes"]) == N_EPISODES
    assert result.table().row_count == len(TINY_TASKS) + 1


# ------------------------------------------------------------ bad input


def test_bad_input(dataset: Any, algo: HarmoDT) -> None:
    with pytest.raises(ValueError, match="known tasks.*reach-v3") as info:
        MultiTaskEvaluator(dataset, tasks=["reach-v3", "push-v3"])
    assert "push-v3" in str(info.value)
    for bad in (0, -2, 51):
        with pytest.raises(ValueError, match="n_episodes"):
            MultiTaskEvaluator(dataset, n_episodes=bad)
    with pytest.raises(ValueError, match="max_steps"):
        MultiTaskEvaluator(dataset, max_steps=0)
    with pytest.raises(ValueError, match="workers"):
        MultiTaskEvaluator(dataset, workers=-1)
    with pytest.raises(ValueError, match="button-press-topdown-v3"):
        MultiTaskEvaluator(dataset, target_returns={"reach-v3": 1.0})
    with pytest.raises(TypeError, match="MinariDataset"):
        MultiTaskEvaluator(42)
    with pytest.raises(TypeError, match="cannot evaluate"):
        MultiTaskEvaluator(dataset).evaluate(object())
    # a suite task the model never saw
    policy = HarmoDTPolicy(algo, 1.0)
    with pytest.raises(ValueError, match="unknown task 'push-v3'"):
        policy.reset(np.array([1]), ["reach-v3", "push-v3"])
