"""Tests of the data bridge (harmodt_algo.data) on real, tiny Minari datasets.

Every Minari dataset here is written with ``minari.create_dataset_from_buffers``
into a temporary store (the ``minari_path`` fixture). Observations follow a
known pattern, ``obs[t] = [task, episode, t, 0.5]``, so any misalignment or
wrong slice shows up as a wrong number.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import gymnasium
import minari
import numpy as np
import pytest
from d3rlpy.algos import DecisionTransformerConfig, DiscreteDecisionTransformerConfig
from d3rlpy.algos.utility import (
    assert_action_space_with_dataset,
    build_scalers_with_trajectory_slicer,
)
from d3rlpy.dataset import (
    BasicTrajectorySlicer,
    Episode,
    MDPDataset,
    TrajectoryMiniBatch,
    create_infinite_replay_buffer,
)
from d3rlpy.preprocessing import StandardObservationScaler
from minari.data_collector import EpisodeBuffer

from dataset_recipes.schema import INFO_SUCCESS, INFO_TASK_ID, INFO_TASK_NAME
from harmodt_algo.data import (
    DatasetError,
    MultiTaskDataset,
    as_multitask_dataset,
)

OBS_DIM = 4
ACT_DIM = 2


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def pattern_obs(task: int, episode: int, steps: int, dim: int = OBS_DIM) -> np.ndarray:
    """(steps + 1, dim): row t is [task, episode, t, 0.5, ...]."""
    obs = np.full((steps + 1, dim), 0.5)
    obs[:, 0] = task
    obs[:, 1] = episode
    obs[:, 2] = np.arange(steps + 1)
    return obs


def pattern_actions(episode: int, steps: int, dim: int = ACT_DIM) -> np.ndarray:
    """(steps, dim): row t is [episode / 100, t / 1000, 0, ...]."""
    act = np.zeros((steps, dim), np.float32)
    act[:, 0] = episode / 100
    act[:, 1] = np.arange(steps) / 1000
    return act


def pattern_rewards(episode: int, steps: int) -> np.ndarray:
    """(steps,): distinct per episode and step."""
    return np.arange(steps, dtype=np.float64) + 1 + 0.25 * episode


def buffer(
    ep_id: int,
    steps: int,
    *,
    task: int = 0,
    task_id: int | Sequence[int] | None = None,
    task_name: str | None = None,
    terminated: bool = False,
    obs: np.ndarray | None = None,
    actions: np.ndarray | None = None,
    rewards: np.ndarray | None = None,
) -> EpisodeBuffer:
    infos: dict[str, np.ndarray] = {}
    if task_id is not None:
        infos[INFO_TASK_ID] = np.broadcast_to(
            np.asarray(task_id, np.int64), (steps + 1,)
        ).copy()
    if task_name is not None:
        infos[INFO_TASK_NAME] = np.array([task_name.encode()] * (steps + 1), "S")
    if infos:
        infos[INFO_SUCCESS] = np.zeros(steps + 1, np.float32)
    terminations = np.zeros(steps, bool)
    terminations[-1] = terminated
    truncations = np.zeros(steps, bool)
    truncations[-1] = not terminated
    return EpisodeBuffer(
        id=ep_id,
        observations=pattern_obs(task, ep_id, steps) if obs is None else obs,
        actions=pattern_actions(ep_id, steps) if actions is None else actions,
        rewards=pattern_rewards(ep_id, steps) if rewards is None else rewards,
        terminations=terminations,
        truncations=truncations,
        infos=infos or None,
    )


def create(
    dataset_id: str,
    buffers: list[EpisodeBuffer],
    *,
    task_names: list[str] | None = None,
    obs_dim: int = OBS_DIM,
    act_dim: int = ACT_DIM,
    observation_space: gymnasium.Space | None = None,  # type: ignore[type-arg]
) -> minari.MinariDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari's "no author/permalink" notes
        ds = minari.create_dataset_from_buffers(
            dataset_id,
            buffers,
            observation_space=observation_space
            or gymnasium.spaces.Box(-np.inf, np.inf, (obs_dim,)),
            action_space=gymnasium.spaces.Box(-1.0, 1.0, (act_dim,)),
            ref_min_score=0.0,
            ref_max_score=1.0,
        )
    if task_names is not None:
        ds.storage.update_metadata({"task_names": task_names})
    return ds


LENGTHS = [3, 5, 4, 7]


@pytest.fixture
def multitask(minari_path: Path) -> minari.MinariDataset:
    """Interleaved episodes of tasks b, a, c, b; metadata order [a, b, c]."""
    names = ["a", "b", "c"]
    task_of = [1, 0, 2, 1]
    bufs = [
        buffer(i, n, task=task_of[i], task_id=task_of[i], task_name=names[task_of[i]])
        for i, n in enumerate(LENGTHS)
    ]
    return create("test/multi-v0", bufs, task_names=names)


def episode_set(length: int, n: int, task: int, seed: int) -> list[Episode]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        steps = length + 3 * i
        out.append(
            Episode(
                observations=pattern_obs(task, i, steps)[:-1],
                actions=rng.uniform(-1, 1, (steps, ACT_DIM)),
                rewards=rng.uniform(0, 1, (steps, 1)),
                terminated=i == 0,
            )
        )
    return out


@pytest.fixture
def episodes_dataset() -> MultiTaskDataset:
    """3 tasks in memory: 2, 3 and 4 episodes of lengths 4, 7, 10, 13."""
    return MultiTaskDataset.from_episodes(
        {
            "x": episode_set(4, 2, 0, seed=1),
            "y": episode_set(4, 3, 1, seed=2),
            "z": episode_set(4, 4, 2, seed=3),
        }
    )


# --------------------------------------------------------------------------- #
# Minari conversion
# --------------------------------------------------------------------------- #


def test_observations_aligned_and_naive_concatenation_is_shifted(
    minari_path: Path,
) -> None:
    ds = create("test/align-v0", [buffer(i, n) for i, n in enumerate([3, 5, 4])])
    with pytest.warns(UserWarning):
        data = MultiTaskDataset.from_minari(ds)
    raw = list(ds.iterate_episodes())
    converted = data.episodes[0]
    assert len(converted) == 3
    for minari_ep, ep in zip(raw, converted, strict=True):
        steps = len(minari_ep.rewards)
        assert minari_ep.observations.shape[0] == steps + 1
        assert ep.observations.shape == (steps, OBS_DIM)
        assert ep.observations.dtype == np.float32
        np.testing.assert_array_equal(ep.observations, minari_ep.observations[:-1])
        np.testing.assert_array_equal(ep.actions, minari_ep.actions)
        np.testing.assert_array_equal(ep.rewards[:, 0], minari_ep.rewards)
        # the T+1-th observation (after the final action) is dropped
        assert ep.observations[-1, 2] == steps - 1

    # What d3rlpy's get_minari does: concatenate the T+1 observations unsliced.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        naive = MDPDataset(
            observations=np.concatenate([e.observations for e in raw]),
            actions=np.concatenate([e.actions for e in raw]),
            rewards=np.concatenate([e.rewards for e in raw]),
            terminals=np.concatenate([e.terminations for e in raw]),
            timeouts=np.concatenate([e.truncations for e in raw]),
        )
    naive_second = naive.episodes[1].observations[0]
    # episode 1 starts with episode 0's final observation [0, 0, 3, .5] ...
    np.testing.assert_array_equal(naive_second[:3], [0, 0, 3])
    assert not np.array_equal(naive_second, raw[1].observations[0])
    # ... while ours starts where Minari's episode 1 starts
    np.testing.assert_array_equal(converted[1].observations[0], raw[1].observations[0])


def test_terminated_flag_from_last_termination(minari_path: Path) -> None:
    ds = create(
        "test/term-v0",
        [
            buffer(0, 3, task_id=0, task_name="a", terminated=True),
            buffer(1, 4, task_id=0, task_name="a"),
        ],
    )
    data = MultiTaskDataset.from_minari(ds)
    assert [ep.terminated for ep in data.episodes[0]] == [True, False]


def test_groups_by_task_in_metadata_order(multitask: minari.MinariDataset) -> None:
    data = MultiTaskDataset.from_minari(multitask)
    assert data.task_names == ("a", "b", "c")
    assert data.num_tasks == 3
    assert [len(e) for e in data.episodes] == [1, 2, 1]
    for t, eps in enumerate(data.episodes):
        for ep in eps:
            assert np.all(ep.observations[:, 0] == t)  # obs carry their task
    # episode order inside a task is dataset order: ids 0 then 3 for task b
    assert [int(ep.observations[0, 1]) for ep in data.episodes[1]] == [0, 3]
    assert data.num_transitions("b") == LENGTHS[0] + LENGTHS[3]
    assert data.num_transitions(0) == LENGTHS[1]
    assert data.max_episode_length == max(LENGTHS)
    assert data.observation_shape == (OBS_DIM,)
    assert data.action_size == ACT_DIM


def test_task_names_argument_reorders(multitask: minari.MinariDataset) -> None:
    data = MultiTaskDataset.from_minari(multitask, task_names=["c", "a", "b"])
    assert data.task_names == ("c", "a", "b")
    assert np.all(data.episodes[0][0].observations[:, 0] == 2)  # task c


def test_first_seen_order_without_metadata(minari_path: Path) -> None:
    ds = create(
        "test/noorder-v0",
        [
            buffer(0, 3, task=1, task_name="b"),
            buffer(1, 4, task=0, task_name="a"),
            buffer(2, 2, task=1, task_name="b"),
        ],
    )
    data = MultiTaskDataset.from_minari(ds)
    assert data.task_names == ("b", "a")
    assert [len(e) for e in data.episodes] == [2, 1]


def test_per_task_datasets_as_list_and_dict(minari_path: Path) -> None:
    labeled = create("test/reach-v0", [buffer(0, 3, task=0, task_name="reach")])
    listed = create("test/push-v0", [buffer(0, 4, task=1)], task_names=["push"])
    unlabeled = create("test/pick-v0", [buffer(0, 5, task=2), buffer(1, 2, task=2)])

    data = MultiTaskDataset.from_minari([labeled, listed, unlabeled])
    assert data.task_names == ("reach", "push", "test/pick-v0")
    assert [len(e) for e in data.episodes] == [1, 1, 2]
    assert [int(data.episodes[t][0].observations[0, 0]) for t in range(3)] == [0, 1, 2]

    by_key = MultiTaskDataset.from_minari({"p": unlabeled, "r": labeled})
    assert by_key.task_names == ("p", "r")
    assert np.all(by_key.episodes[0][0].observations[:, 0] == 2)

    again = as_multitask_dataset(["test/reach-v0", "test/push-v0"])
    assert again.task_names == ("reach", "push")


def test_unlabeled_dataset_is_one_task_with_warning(minari_path: Path) -> None:
    ds = create("test/plain-v0", [buffer(0, 3), buffer(1, 4)])
    with pytest.warns(UserWarning, match="no task labels") as record:
        data = MultiTaskDataset.from_minari(ds)
    assert "ONE task" in str(record[0].message)
    assert data.task_names == ("test/plain-v0",)
    assert data.num_transitions(0) == 7


def test_task_ids_without_names_or_metadata(minari_path: Path) -> None:
    ds = create(
        "test/ids-v0",
        [buffer(0, 3, task=1, task_id=1), buffer(1, 4, task=0, task_id=0)],
    )
    data = MultiTaskDataset.from_minari(ds)
    assert data.task_names == ("task-0", "task-1")  # ordered by id
    assert np.all(data.episodes[1][0].observations[:, 0] == 1)


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #


def test_empty_inputs_raise(minari_path: Path) -> None:
    with pytest.raises(DatasetError, match="no tasks"):
        MultiTaskDataset.from_episodes({})
    with pytest.raises(DatasetError, match="no tasks"):
        MultiTaskDataset.from_minari([])
    ds = create("test/e-v0", [buffer(0, 3)])
    with pytest.raises(DatasetError, match="no episodes"):
        MultiTaskDataset.from_minari(ds.filter_episodes(lambda ep: False))
    with pytest.raises(DatasetError, match="'b' has no episodes"):
        MultiTaskDataset.from_episodes({"a": episode_set(3, 1, 0, 0), "b": []})


def test_sizes_differ_between_tasks(minari_path: Path) -> None:
    a = create("test/a-v0", [buffer(0, 3)])
    b = create("test/b-v0", [buffer(0, 3, obs=pattern_obs(1, 0, 3, dim=6))], obs_dim=6)
    with pytest.raises(DatasetError, match=r"'a' has \(4,\) but 'b' has \(6,\)"):
        MultiTaskDataset.from_minari({"a": a, "b": b})
    c = create(
        "test/c-v0", [buffer(0, 3, actions=pattern_actions(0, 3, dim=3))], act_dim=3
    )
    with pytest.raises(DatasetError, match="action size differs.*'a' has 2.*'c' has 3"):
        MultiTaskDataset.from_minari({"a": a, "c": c})


@pytest.mark.parametrize("field", ["observations", "actions", "rewards"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values(minari_path: Path, field: str, bad: float) -> None:
    obs = pattern_obs(0, 1, 4)
    act = pattern_actions(1, 4)
    rew = pattern_rewards(1, 4)
    {"observations": obs, "actions": act, "rewards": rew}[field][2] = bad
    ds = create(
        "test/nan-v0",
        [
            buffer(0, 3, task_id=0, task_name="push"),
            buffer(
                1, 4, task_id=0, task_name="push", obs=obs, actions=act, rewards=rew
            ),
        ],
        task_names=["push"],
    )
    kind = "NaN" if np.isnan(bad) else "inf"
    with pytest.raises(DatasetError) as info:
        MultiTaskDataset.from_minari(ds)
    message = str(info.value)
    for word in ("'push'", "episode id 1", field, kind, "step 2"):
        assert word in message, (word, message)


def test_label_changing_mid_episode(minari_path: Path) -> None:
    ds = create(
        "test/mid-v0",
        [buffer(0, 3, task_id=[0, 0, 1, 1])],
        task_names=["a", "b"],
    )
    with pytest.raises(DatasetError, match="episode id 0.*mid-episode"):
        MultiTaskDataset.from_minari(ds)


def test_task_names_argument_errors(multitask: minari.MinariDataset) -> None:
    with pytest.raises(DatasetError, match=r"tasks \['c'\] that are not in"):
        MultiTaskDataset.from_minari(multitask, task_names=["a", "b"])
    with pytest.raises(DatasetError, match=r"duplicate task names \['a'\]"):
        MultiTaskDataset.from_minari(multitask, task_names=["a", "b", "c", "a"])
    with pytest.raises(DatasetError, match=r"\['d'\] that have no episodes"):
        MultiTaskDataset.from_minari(multitask, task_names=["a", "b", "c", "d"])


def test_metadata_task_without_episodes(minari_path: Path) -> None:
    ds = create(
        "test/gap-v0",
        [buffer(0, 3, task_id=0, task_name="a")],
        task_names=["a", "b"],
    )
    with pytest.raises(DatasetError, match=r"\['b'\].*no episodes"):
        MultiTaskDataset.from_minari(ds)
    assert MultiTaskDataset.from_minari(ds, task_names=["a"]).task_names == ("a",)


def test_inconsistent_labels_and_multi_task_in_per_task_list(
    minari_path: Path, multitask: minari.MinariDataset
) -> None:
    ds = create(
        "test/incons-v0",
        [buffer(0, 3, task_id=0, task_name="b")],
        task_names=["a", "b"],
    )
    with pytest.raises(DatasetError, match="inconsistent task labels"):
        MultiTaskDataset.from_minari(ds)
    with pytest.raises(DatasetError, match="belong to 3 tasks"):
        MultiTaskDataset.from_minari([multitask])


def test_dict_observation_space_rejected(minari_path: Path) -> None:
    space = gymnasium.spaces.Dict(
        {"x": gymnasium.spaces.Box(-np.inf, np.inf, (OBS_DIM,))}
    )
    ds = create(
        "test/dict-v0",
        [buffer(0, 3, obs={"x": pattern_obs(0, 0, 3)})],  # type: ignore[arg-type]
        observation_space=space,
    )
    with pytest.raises(DatasetError, match="only flat"):
        MultiTaskDataset.from_minari(ds)


def test_episode_length_mismatch_rejected() -> None:
    bad = Episode(
        observations=np.zeros((5, OBS_DIM)),  # Minari-style T+1 observations
        actions=np.zeros((4, ACT_DIM)),
        rewards=np.zeros((4, 1)),
        terminated=False,
    )
    with pytest.raises(DatasetError, match="5 observations, 4 actions"):
        MultiTaskDataset.from_episodes({"a": [bad]})


def test_as_multitask_dataset_dispatch(
    multitask: minari.MinariDataset, episodes_dataset: MultiTaskDataset
) -> None:
    assert as_multitask_dataset(episodes_dataset) is episodes_dataset
    assert as_multitask_dataset(multitask).task_names == ("a", "b", "c")
    assert as_multitask_dataset("test/multi-v0").task_names == ("a", "b", "c")
    eps = {"q": episode_set(3, 1, 0, 0), "p": episode_set(3, 2, 1, 0)}
    assert as_multitask_dataset(eps, task_names=["p", "q"]).task_names == ("p", "q")
    with pytest.raises(TypeError, match="cannot build"):
        as_multitask_dataset(42)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# statistics and storage
# --------------------------------------------------------------------------- #


def test_returns_and_read_only_views(episodes_dataset: MultiTaskDataset) -> None:
    data = episodes_dataset
    returns = [ep.compute_return() for ep in data.episodes[2]]
    np.testing.assert_allclose(data.episode_returns("z"), returns, rtol=1e-6)
    assert data.max_return(2) == pytest.approx(max(returns), rel=1e-6)
    assert data.mean_return("z") == pytest.approx(np.mean(returns), rel=1e-6)
    assert data.best_episode_index(2) == int(np.argmax(returns))
    assert data.max_episode_length == 4 + 3 * 3
    ep = data.episodes[0][0]
    assert ep.observations.dtype == np.float32 and ep.rewards.shape == (4, 1)
    with pytest.raises(ValueError, match="read-only"):
        ep.observations[0, 0] = 1.0


# --------------------------------------------------------------------------- #
# sampling
# --------------------------------------------------------------------------- #


def test_sampling_is_deterministic(episodes_dataset: MultiTaskDataset) -> None:
    ids = np.array([0, 1, 2, 2, 1, 0, 0, 2])
    a = episodes_dataset.sample_batch(ids, 6, np.random.default_rng(7))
    b = episodes_dataset.sample_batch(ids, 6, np.random.default_rng(7))
    c = episodes_dataset.sample_batch(ids, 6, np.random.default_rng(8))
    for name in ("observations", "actions", "rewards", "returns_to_go", "timesteps"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.observations, c.observations)


def test_sampled_windows_are_contiguous_slices(
    episodes_dataset: MultiTaskDataset,
) -> None:
    data = episodes_dataset
    length = 6
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 3, size=400)
    batch = data.sample_batch(ids, length, rng)
    assert isinstance(batch, TrajectoryMiniBatch)
    assert batch.observations.shape == (400, length, OBS_DIM)  # type: ignore[union-attr]
    assert batch.actions.shape == (400, length, ACT_DIM)
    assert batch.returns_to_go.shape == (400, length, 1)
    assert batch.masks.shape == batch.timesteps.shape == (400, length)
    saw_padding = saw_terminal = False
    slicer = BasicTrajectorySlicer()
    references = []
    for b in range(400):
        obs = np.asarray(batch.observations[b])  # (L, obs)
        mask = batch.masks[b]
        pad = int((mask == 0).sum())
        assert np.all(mask[:pad] == 0) and np.all(mask[pad:] == 1)  # left padding
        for arr in (obs, batch.actions[b], batch.returns_to_go[b], batch.timesteps[b]):
            assert np.all(np.asarray(arr)[:pad] == 0)
        real = obs[pad:]
        assert np.all(real[:, 0] == ids[b])  # the requested task
        episode_index = int(real[0, 1])
        assert np.all(real[:, 1] == episode_index)  # one episode
        steps = real[:, 2].astype(int)
        np.testing.assert_array_equal(steps, np.arange(steps[0], steps[-1] + 1))
        end = int(steps[-1])
        assert pad == max(0, length - (end + 1))  # padding only at episode start
        np.testing.assert_array_equal(batch.timesteps[b, pad:], steps + 1)
        episode = data.episodes[ids[b]][episode_index]
        np.testing.assert_array_equal(batch.actions[b, pad:], episode.actions[steps])
        rtg = np.array([episode.rewards[t:, 0].sum() for t in steps])
        np.testing.assert_allclose(batch.returns_to_go[b, pad:, 0], rtg, rtol=1e-5)
        saw_padding |= pad > 0
        saw_terminal |= bool(batch.terminals[b, -1, 0])
        assert bool(batch.terminals[b, -1, 0]) == (
            episode.terminated and end == episode.size() - 1
        )
        references.append(slicer(episode, end, length))
    assert saw_padding and saw_terminal
    # identical to d3rlpy's own slicer + batch builder
    ref = TrajectoryMiniBatch.from_partial_trajectories(references)
    for name in (
        "observations",
        "actions",
        "rewards",
        "terminals",
        "timesteps",
        "masks",
    ):
        np.testing.assert_array_equal(getattr(batch, name), getattr(ref, name))
    np.testing.assert_allclose(batch.returns_to_go, ref.returns_to_go, rtol=1e-5)


def test_sampling_is_uniform_over_transitions() -> None:
    short = episode_set(3, 1, 0, 0)[0]
    long = Episode(
        observations=pattern_obs(0, 1, 30)[:-1],
        actions=np.zeros((30, ACT_DIM)),
        rewards=np.zeros((30, 1)),
        terminated=False,
    )
    data = MultiTaskDataset.from_episodes({"a": [short, long]})
    batch = data.sample_batch(np.zeros(6000, int), 1, np.random.default_rng(0))
    obs = np.asarray(batch.observations)[:, 0]  # (B, obs)
    from_long = np.mean(obs[:, 1] == 1)
    assert from_long == pytest.approx(30 / 33, abs=0.02)  # not 1/2
    ends = obs[obs[:, 1] == 1, 2]
    counts = np.bincount(ends.astype(int), minlength=30)
    assert counts.min() > 0.6 * counts.mean()  # every step can end a window


def test_sample_batch_rejects_bad_task_ids(episodes_dataset: MultiTaskDataset) -> None:
    with pytest.raises(IndexError):
        episodes_dataset.sample_batch(np.array([0, 3]), 4, np.random.default_rng(0))


# --------------------------------------------------------------------------- #
# prompts
# --------------------------------------------------------------------------- #


def test_prompt_is_last_steps_of_best_episode(
    episodes_dataset: MultiTaskDataset,
) -> None:
    data = episodes_dataset
    best = data.best_episode_index(1)
    episode = data.episodes[1][best]
    p = data.prompt(1, 3)
    q = data.prompt("y", 3)
    np.testing.assert_array_equal(p.observations, q.observations)
    obs = np.asarray(p.observations)
    assert obs.shape == (3, OBS_DIM) and p.actions.shape == (3, ACT_DIM)
    np.testing.assert_array_equal(obs[:, 1], best)  # best-return episode
    size = episode.size()
    np.testing.assert_array_equal(obs[:, 2], [size - 3, size - 2, size - 1])
    np.testing.assert_array_equal(p.timesteps, [size - 2, size - 1, size])
    np.testing.assert_allclose(p.returns_to_go[-1], episode.rewards[-1], rtol=1e-6)
    assert np.all(p.masks == 1)
    # a prompt longer than the episode is left-padded
    long = data.prompt(1, size + 2)
    np.testing.assert_array_equal(long.masks[:2], [0, 0])
    assert np.all(long.masks[2:] == 1)
    # prompts are copies: editing one does not touch the dataset
    p.actions[0, 0] = 123.0
    assert data.prompt(1, 3).actions[0, 0] != 123.0


def test_prompt_arrays_shapes(episodes_dataset: MultiTaskDataset) -> None:
    arrays = episodes_dataset.prompt_arrays(5)
    assert arrays["observations"].shape == (3, 5, OBS_DIM)
    assert arrays["actions"].shape == (3, 5, ACT_DIM)
    assert arrays["returns_to_go"].shape == (3, 5, 1)
    assert arrays["timesteps"].shape == (3, 5) and arrays["timesteps"].dtype == np.int64
    assert arrays["masks"].shape == (3, 5)
    for t in range(3):
        np.testing.assert_array_equal(
            arrays["observations"][t], episodes_dataset.prompt(t, 5).observations
        )
        assert np.all(arrays["observations"][t, :, 0] == t)
    again = episodes_dataset.prompt_arrays(5)
    for key, value in arrays.items():
        np.testing.assert_array_equal(value, again[key])


# --------------------------------------------------------------------------- #
# d3rlpy interop
# --------------------------------------------------------------------------- #


def test_replay_buffer_adapter_fits_scaler(episodes_dataset: MultiTaskDataset) -> None:
    data = episodes_dataset
    replay = data.as_replay_buffer()
    assert len(replay.episodes) == sum(len(e) for e in data.episodes)

    algo = DecisionTransformerConfig(
        observation_scaler=StandardObservationScaler()
    ).create()
    assert_action_space_with_dataset(algo, replay.dataset_info)
    with pytest.raises(AssertionError):
        discrete = DiscreteDecisionTransformerConfig().create()
        assert_action_space_with_dataset(discrete, replay.dataset_info)
    build_scalers_with_trajectory_slicer(algo, replay)
    scaler = algo.observation_scaler
    assert isinstance(scaler, StandardObservationScaler) and scaler.built
    all_obs = np.concatenate([ep.observations for ep in data.all_episodes()])
    np.testing.assert_allclose(scaler.mean, all_obs.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(scaler.std, all_obs.std(axis=0), rtol=1e-4, atol=1e-6)

    # transitions are indexed exactly like d3rlpy's InfiniteBuffer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = create_infinite_replay_buffer(episodes=data.all_episodes())
    assert replay.transition_count == reference.transition_count
    for i in range(reference.transition_count):
        ours, theirs = replay.buffer[i], reference.buffer[i]
        assert ours[0] is theirs[0] and ours[1] == theirs[1]
    with pytest.raises(TypeError, match="read-only"):
        replay.append_episode(data.episodes[0][0])
