"""Conformance: HarmoDT through the surface d3rlpy's own algorithm tests use.

fit, from_json, load_learnable, predict, save/load (with optimizer state),
update on an all-padding batch, the stateful wrapper and d3rlpy's evaluator,
plus HarmoDT's own guarantees (masks, freezing, resume, bad input).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import d3rlpy
import gymnasium as gym
import minari
import numpy as np
import pytest
import torch
from d3rlpy.algos.transformer.inputs import TransformerInput
from d3rlpy.dataset import Episode
from d3rlpy.logging import FileAdapterFactory, NoopAdapterFactory
from d3rlpy.optimizers.lr_schedulers import WarmupSchedulerFactory
from minari.data_collector import EpisodeBuffer

import harmodt_algo
from dataset_recipes import make_env
from harmodt_algo import (
    PRESETS,
    DatasetError,
    HarmoDT,
    HarmoDTConfig,
    MaskedAdamWFactory,
    MultiTaskDataset,
)

from ..conftest import TINY_STEPS, TINY_TASKS

SMALL = dict(
    batch_size=8,
    embed_size=32,
    num_layers=2,
    num_heads=2,
    context_size=5,
    mask_interval=4,
    change_fraction=0.2,
    mask_batch_size=4,
    max_timestep=100,
)


def small(**overrides: Any) -> HarmoDTConfig:
    return HarmoDTConfig(**{**SMALL, **overrides})


def fit(algo: HarmoDT, data: Any, n_steps: int = 8, **kwargs: Any) -> HarmoDT:
    kwargs.setdefault("logger_adapter", NoopAdapterFactory())
    kwargs.setdefault("show_progress", False)
    return algo.fit(data, n_steps=n_steps, **kwargs)


def synthetic(
    num_tasks: int = 3, episodes: int = 2, length: int = 30, seed: int = 0
) -> MultiTaskDataset:
    rng = np.random.default_rng(seed)
    return MultiTaskDataset.from_episodes(
        {
            f"task-{t}": [
                Episode(
                    observations=rng.normal(size=(length, 39)).astype(np.float32),
                    actions=np.tanh(rng.normal(size=(length, 4))).astype(np.float32),
                    rewards=rng.random((length, 1)).astype(np.float32),
                    terminated=False,
                )
                for _ in range(episodes)
            ]
            for t in range(num_tasks)
        }
    )


def window(algo: HarmoDT, length: int = 3, seed: int = 0) -> TransformerInput:
    rng = np.random.default_rng(seed)
    return TransformerInput(
        observations=rng.normal(size=(length, 39)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(length, 4)).astype(np.float32),
        rewards=rng.random((length, 1)).astype(np.float32),
        returns_to_go=np.full((length, 1), 100.0, dtype=np.float32),
        timesteps=np.arange(1, length + 1),
    )


# ----------------------------------------------------------------- fitting


def test_fit_minari_returns_algo_and_learns(tiny_recipe_dataset: Any) -> None:
    quick = MaskedAdamWFactory(lr_scheduler_factory=WarmupSchedulerFactory(10))
    algo = HarmoDT(small(prompt_length=0, learning_rate=1e-3, optim_factory=quick))
    losses: list[float] = []
    data = harmodt_algo.as_multitask_dataset(tiny_recipe_dataset)
    fitted = fit(algo, data, n_steps=1)
    assert fitted is algo
    assert algo.task_names == TINY_TASKS
    # loss over fixed batches before and after training goes down
    rng = np.random.default_rng(123)
    probe = [data.sample_batch(np.full(16, t), 5, rng) for t in range(2)]

    def probe_loss() -> float:
        assert algo.impl is not None
        total = 0.0
        for t, batch in enumerate(probe):
            tb = algo._to_torch(batch)
            ids = torch.full((16,), t)
            with torch.no_grad():
                algo.impl._modules.transformer.eval()
                total += float(
                    algo.impl.sequence_losses(tb, algo.impl.task_weights(ids)).mean()
                )
        return total

    before = probe_loss()
    fit(algo, data, n_steps=150, callback=lambda a, e, s: None)
    losses.append(probe_loss())
    assert losses[-1] < 0.5 * before


def test_fit_list_and_dict_of_per_task_datasets(minari_path: Path) -> None:
    space = gym.spaces.Box(-np.inf, np.inf, (39,), np.float32)
    act = gym.spaces.Box(-1, 1, (4,), np.float32)
    rng = np.random.default_rng(0)
    ids = []
    for name in ("alpha", "beta"):
        buffers = [
            EpisodeBuffer(
                observations=rng.normal(size=(21, 39)).astype(np.float32),
                actions=rng.uniform(-1, 1, (20, 4)).astype(np.float32),
                rewards=rng.random(20),
                terminations=np.zeros(20, bool),
                truncations=np.r_[np.zeros(19, bool), True],
            )
            for _ in range(2)
        ]
        ds_id = f"test-ns/{name}/data-v0"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            minari.create_dataset_from_buffers(
                ds_id,
                buffers,
                observation_space=space,
                action_space=act,
                ref_min_score=0.0,
                ref_max_score=1.0,
            )
        ids.append(ds_id)
    datasets = [minari.load_dataset(i) for i in ids]
    algo = fit(HarmoDT(small()), {"alpha": datasets[0], "beta": datasets[1]}, 2)
    assert algo.task_names == ("alpha", "beta")
    with pytest.warns(UserWarning, match="task"):
        single = fit(HarmoDT(small()), datasets[0], 2)
    assert len(single.task_names) == 1
    listed = fit(HarmoDT(small()), datasets, 2)
    assert len(listed.task_names) == 2


def test_fit_logs_metrics_and_from_json(tmp_path: Path) -> None:
    data = synthetic()
    algo = HarmoDT(small())
    fit(
        algo,
        data,
        n_steps=8,
        n_steps_per_epoch=4,
        experiment_name="exp",
        with_timestamp=False,
        logger_adapter=FileAdapterFactory(root_dir=str(tmp_path)),
    )
    logdir = tmp_path / "exp"
    names = {p.stem for p in logdir.glob("*.csv")}
    assert {"loss", "mask_changed", "harmony_mean", "grad_cosine"} <= names
    assert {f"loss_task-{t}" for t in range(3)} <= names
    assert (logdir / "model_8.d3").exists()
    rebuilt = HarmoDT.from_json(str(logdir / "params.json"))
    assert isinstance(rebuilt, HarmoDT)
    assert rebuilt.task_names == algo.task_names
    assert rebuilt.config.mask_interval == 4


# ------------------------------------------------------- acting and saving


def test_save_load_learnable_identical(tmp_path: Path) -> None:
    data = synthetic()
    algo = fit(HarmoDT(small()), data, 8)
    path = tmp_path / "model.d3"
    algo.save(str(path))
    loaded = d3rlpy.load_learnable(str(path))
    assert isinstance(loaded, HarmoDT)
    assert loaded.task_names == algo.task_names
    assert algo.impl is not None and loaded.impl is not None
    assert torch.equal(algo.impl.flat_masks(), loaded.impl.flat_masks())
    for key in ("observations", "returns_to_go", "masks"):
        assert torch.equal(
            getattr(algo.impl._modules.prompts, key),
            getattr(loaded.impl._modules.prompts, key),
        )
    assert loaded.config.observation_scaler is not None
    assert loaded.config.observation_scaler.built
    for task in algo.task_names:
        a = algo.for_task(task).predict(window(algo))
        b = loaded.for_task(task).predict(window(algo))
        assert a.shape == (4,)
        np.testing.assert_array_equal(a, b)
    assert loaded.grad_step == algo.grad_step == 8


def test_tasks_act_differently_and_view_errors() -> None:
    algo = fit(HarmoDT(small()), synthetic(), 4)
    acts = [algo.for_task(t).predict(window(algo)) for t in algo.task_names]
    assert not np.allclose(acts[0], acts[1])
    with pytest.raises(ValueError, match="known tasks.*task-0"):
        algo.for_task("no-such-task")
    with pytest.raises(ValueError, match="task="):
        algo.predict(window(algo))
    bad = window(algo)
    object.__setattr__(bad, "observations", np.full((3, 39), np.nan, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        algo.for_task(0).predict(bad)


def test_stateful_wrapper_and_d3rlpy_evaluator(tiny_recipe_dataset: Any) -> None:
    algo = fit(HarmoDT(small()), tiny_recipe_dataset, 4)
    view = algo.for_task("reach-v3")
    wrapper = view.as_stateful_wrapper(target_return=100.0)
    obs = np.zeros(39, dtype=np.float32)
    first = wrapper.predict(obs, 0.0)
    wrapper.predict(obs, 1.0)
    wrapper.reset()
    np.testing.assert_array_equal(wrapper.predict(obs, 0.0), first)
    env = gym.wrappers.TimeLimit(
        make_env(tiny_recipe_dataset, "reach-v3"), max_episode_steps=15
    )
    score = d3rlpy.metrics.evaluate_transformer_with_environment(
        view.as_stateful_wrapper(target_return=100.0), env, n_trials=1
    )
    assert np.isfinite(score) and score > 0.0


def test_save_model_load_model_resumes_exactly(tmp_path: Path) -> None:
    data = synthetic()
    ckpt = tmp_path / "mid.pt"

    def save_mid(a: HarmoDT, epoch: int, step: int) -> None:
        if step == 6:
            a.save_model(str(ckpt))

    straight = fit(HarmoDT(small()), data, 12, callback=save_mid)
    resumed = HarmoDT(small(task_names=list(straight.task_names)))
    resumed.create_impl((39,), 4)
    # scalers come from the config in real use; copy them as load_learnable would
    resumed._config.observation_scaler = straight.config.observation_scaler
    resumed.load_model(str(ckpt))
    assert resumed.grad_step == 6
    fit(resumed, data, 6)
    assert resumed.impl is not None and straight.impl is not None
    assert torch.equal(resumed.impl.flat_masks(), straight.impl.flat_masks())
    for p, q in zip(
        straight.impl._modules.transformer.parameters(),
        resumed.impl._modules.transformer.parameters(),
        strict=True,
    ):
        assert torch.equal(p, q)


def test_build_with_dataset_then_fit_equals_fit() -> None:
    data = synthetic()
    built = HarmoDT(small())
    built.build_with_dataset(data)
    assert built.impl is not None and built.grad_step == 0
    assert built.task_names == data.task_names
    initial = built.impl.flat_masks().clone()  # (T, N) as drawn, before training
    fit(built, data, 12)
    straight = fit(HarmoDT(small()), data, 12)
    assert straight.impl is not None
    assert torch.equal(built.impl.flat_masks(), straight.impl.flat_masks())
    assert not torch.equal(initial, straight.impl.flat_masks())  # updates at 4, 8
    for p, q in zip(
        straight.impl._modules.transformer.parameters(),
        built.impl._modules.transformer.parameters(),
        strict=True,
    ):
        assert torch.equal(p, q)


def test_update_with_all_padding_batch_is_finite() -> None:
    data = synthetic()
    algo = fit(HarmoDT(small()), data, 1)
    batch = data.sample_batch(np.zeros(8, dtype=np.int64), 5, np.random.default_rng(0))
    object.__setattr__(batch, "masks", np.zeros_like(batch.masks))
    metrics = algo.update(batch)
    assert np.isfinite(metrics["loss"])
    assert metrics["loss"] == 0.0
    assert algo.impl is not None
    for p in algo.impl._modules.transformer.parameters():
        assert torch.isfinite(p).all()


# ------------------------------------------------------------------- masks


def test_masks_differ_and_keep_density_after_updates() -> None:
    data = synthetic()
    algo = HarmoDT(small(change_fraction=0.5))
    fit(algo, data, 1)
    assert algo.impl is not None
    before = algo.impl.flat_masks().clone()
    counts_before = before.sum(dim=1)
    assert not torch.equal(before[0], before[1])
    assert 0.75 < before.float().mean() < 0.85  # density 1 - sparsity 0.2
    fit(algo, data, 12)
    after = algo.impl.flat_masks()
    assert not torch.equal(before, after)  # masks moved
    assert torch.equal(after.sum(dim=1), counts_before)  # density kept per task


def test_growth_scores_are_defined_at_inactive_entries() -> None:
    data = synthetic()
    algo = fit(HarmoDT(small()), data, 1)
    assert algo.impl is not None
    rng = np.random.default_rng(0)
    batches = [
        algo._to_torch(data.sample_batch(np.full(4, t), 5, rng)) for t in range(3)
    ]
    grads = algo.impl.task_gradients(batches)  # (T, N)
    inactive = ~algo.impl.flat_masks()
    assert (grads[inactive] != 0).float().mean() > 0.5


@pytest.mark.parametrize("schedule", ["round_robin", "mixed"])
def test_inactive_entries_are_frozen(schedule: str) -> None:
    data = synthetic()
    algo = HarmoDT(small(mask_interval=0, task_schedule=schedule))
    fit(algo, data, 2)
    assert algo.impl is not None
    params = algo.impl._masked
    before = {n: p.detach().clone() for n, p in params.items()}
    rng = np.random.default_rng(5)
    ids = np.array([0, 0, 0, 0, 1, 1, 1, 1]) if schedule == "mixed" else np.zeros(8)
    ids = ids.astype(np.int64)
    algo.update(data.sample_batch(ids, 5, rng), ids)
    masks = algo.impl._modules.masks
    union = masks.union(torch.unique(torch.as_tensor(ids)))
    moved = 0
    for name, p in params.items():
        frozen = ~union[name]
        assert torch.equal(p.detach()[frozen], before[name][frozen]), name
        moved += int((p.detach() != before[name])[union[name]].sum())
    assert moved > 0


def test_presets_are_one_line() -> None:
    data = synthetic()
    for name in PRESETS:
        algo = fit(HarmoDT.from_preset(name, **SMALL), data, 4)
        assert algo.grad_step == 4
    mtdt = HarmoDT.from_preset("mtdt")
    assert not mtdt.config.uses_masks and mtdt.config.prompt_length == 0
    assert HarmoDT.from_preset("prompt-dt").config.prompt_length > 0
    assert HarmoDT.from_preset("harmodt-m").config.importance == "magnitude"
    with pytest.raises(ValueError, match="harmodt-f"):
        HarmoDT.from_preset("nope")


def test_the_readme_preset_table_is_the_records() -> None:
    """One record per preset: the README's table is generated from it
    (``python -m harmodt_algo.presets``), and so are the benchmark's labels."""
    import dataclasses
    from pathlib import Path

    from harmodt_algo.benchmark.methods import HARMODT_METHODS, METHOD_LABELS
    from harmodt_algo.presets import PRESET_RECORDS, preset_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert preset_table(dataclasses.asdict(HarmoDTConfig())) in readme
    assert HARMODT_METHODS == tuple(PRESET_RECORDS)
    assert all(METHOD_LABELS[n] == p.label for n, p in PRESET_RECORDS.items())


# ---------------------------------------------------------------- bad input


def test_bad_config_values_are_named() -> None:
    with pytest.raises(ValueError, match="mask_init.*erk"):
        HarmoDTConfig(mask_init="bogus").create()
    with pytest.raises(ValueError, match="importance"):
        HarmoDT(HarmoDTConfig(importance="bogus"))
    with pytest.raises(ValueError, match="sparsity"):
        HarmoDT(HarmoDTConfig(sparsity=1.5))


def test_bad_datasets_raise_clear_errors() -> None:
    rng = np.random.default_rng(0)

    def ep(obs: int = 39, nan: bool = False) -> Episode:
        o = rng.normal(size=(10, obs)).astype(np.float32)
        if nan:
            o[3, 2] = np.nan
        return Episode(
            o, np.zeros((10, 4), np.float32), np.zeros((10, 1), np.float32), False
        )

    with pytest.raises(DatasetError, match="a.*b|b.*a"):
        HarmoDT(small()).fit(
            MultiTaskDataset.from_episodes({"a": [ep()], "b": [ep(obs=12)]}), 1
        )
    with pytest.raises(DatasetError, match="NaN"):
        MultiTaskDataset.from_episodes({"a": [ep(nan=True)]})
    with pytest.raises(DatasetError):
        MultiTaskDataset.from_episodes({})
    with pytest.raises(ValueError, match="max_timestep"):
        fit(HarmoDT(small(max_timestep=10)), synthetic(length=30), 1)
    algo = fit(HarmoDT(small()), synthetic(), 1)
    other = MultiTaskDataset.from_episodes({"unknown-task": [ep(), ep()]})
    with pytest.raises(ValueError, match="unknown-task"):
        fit(algo, other, 1)
    with pytest.raises(ValueError, match="task list"):
        HarmoDT(small()).create_impl((39,), 4)


def test_tiny_recipe_dataset_has_expected_shape(tiny_recipe_dataset: Any) -> None:
    data = harmodt_algo.as_multitask_dataset(tiny_recipe_dataset)
    assert data.task_names == TINY_TASKS
    assert data.max_episode_length == TINY_STEPS


def test_evaluators_are_called_every_epoch_and_logged(tmp_path: Path) -> None:
    calls: list[int] = []

    def scalar(a: HarmoDT) -> float:
        calls.append(a.grad_step)
        return 0.5

    def per_task(a: HarmoDT) -> dict[str, float]:
        return {f"score_{t}": float(i) for i, t in enumerate(a.task_names)}

    algo = HarmoDT(small())
    fit(
        algo,
        synthetic(),
        n_steps=6,
        n_steps_per_epoch=3,
        experiment_name="ev",
        with_timestamp=False,
        logger_adapter=FileAdapterFactory(root_dir=str(tmp_path)),
        evaluators={"scalar": scalar, "tasks": per_task},
    )
    assert calls == [3, 6]
    logdir = tmp_path / "ev"
    rows = (logdir / "scalar.csv").read_text().strip().splitlines()
    assert len(rows) == 2 and rows[-1].endswith("0.5")
    assert (logdir / "score_task-2.csv").read_text().strip().endswith("2.0")
    # the epoch means d3rlpy's fit would return, as logged
    epochs = algo.epoch_metrics
    assert [e for e, _ in epochs] == [1, 2]
    assert [m["scalar"] for _, m in epochs] == [0.5, 0.5]
    losses = (logdir / "loss.csv").read_text().strip().splitlines()
    assert [float(r.split(",")[2]) for r in losses] == [m["loss"] for _, m in epochs]
    assert all(m["time_step"] > 0 for _, m in epochs)


def test_same_seed_same_training_curve_whatever_the_global_rng() -> None:
    data = synthetic()
    curves = []
    for global_seed in (1, 999):
        torch.manual_seed(global_seed)
        np.random.seed(global_seed)
        losses: list[float] = []
        algo = HarmoDT(small())
        fit(algo, data, 1)
        for step in range(1, 6):
            ids = np.zeros(8, dtype=np.int64)
            batch = data.sample_batch(ids, 5, np.random.default_rng(step))
            torch.manual_seed(step)
            losses.append(algo.update(batch, ids)["loss"])
        curves.append(losses)
    assert curves[0] == curves[1]
    other = HarmoDT(small(seed=1))
    fit(other, data, 1)
    assert other.impl is not None
    assert not torch.equal(other.impl.flat_masks(), algo.impl.flat_masks())  # type: ignore[union-attr]


def test_fit_on_a_task_subset_fails_before_training_when_masks_update() -> None:
    data = synthetic(num_tasks=3)
    algo = fit(HarmoDT(small()), data, 1)
    subset = MultiTaskDataset.from_episodes({"task-1": list(data.episodes[1])})
    step = algo.grad_step
    with pytest.raises(ValueError, match="task-0.*mask_interval=0"):
        fit(algo, subset, 4)
    assert algo.grad_step == step  # nothing trained
    frozen = fit(HarmoDT(small(mask_interval=0)), data, 1)
    fit(frozen, subset, 2)  # without mask updates a subset is fine
    assert frozen.grad_step == 3


def test_set_grad_step_positions_the_counter_as_d3rlpy_expects() -> None:
    algo = HarmoDT(small())
    algo.set_grad_step(7)  # before building: the built model starts there
    algo.build_with_dataset(synthetic())
    assert algo.grad_step == 7
    data = synthetic()
    batch = data.sample_batch(np.zeros(8, dtype=np.int64), 5, np.random.default_rng(0))
    algo.update(batch)
    assert algo.grad_step == 8  # d3rlpy's update_tester: +1 per update
    algo.set_grad_step(0)
    assert algo.grad_step == 0
    assert algo.impl is not None and int(algo.impl._modules.masks.step) == 0
    with pytest.raises(ValueError, match="grad_step"):
        algo.set_grad_step(-1)


def test_bf16_precision_trains_and_predicts_in_float32() -> None:
    data = synthetic()
    fp32 = fit(HarmoDT(small()), data, n_steps=3)
    bf16 = fit(HarmoDT(small(precision="bf16")), data, n_steps=3)
    assert bf16.impl is not None and fp32.impl is not None
    for p in bf16.impl._modules.transformer.parameters():
        assert p.dtype == torch.float32 and bool(torch.isfinite(p).all())
    a16, a32 = bf16.predict(window(bf16), task=0), fp32.predict(window(fp32), task=0)
    assert a16.dtype == np.float32 and np.all(np.isfinite(a16))
    assert not np.array_equal(a16, a32)  # the forward really ran in bf16
    assert np.allclose(a16, a32, atol=0.1)


def test_compile_graph_is_rejected_with_a_reason() -> None:
    with pytest.raises(ValueError, match="compile_graph=True is not supported"):
        HarmoDT(small(compile_graph=True))
