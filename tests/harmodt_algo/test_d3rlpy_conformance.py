"""d3rlpy's algorithm test chain for transformers, run on HarmoDT.

d3rlpy tests every transformer algorithm with ``algo_tester`` (its
``tests/algos/transformer/algo_test.py``): fit on a ``ReplayBuffer`` with a
mocked ``update``, ``from_json``, ``load_learnable``, ``predict``,
save/load, ``update`` and ``set_grad_step``, the stateful wrapper, and
``save_policy`` as TorchScript and ONNX checked against ``predict``. Its code is
not vendored; this file makes the same sequence of calls with the same
assertions, on HarmoDT's default config (one task: a bare ``ReplayBuffer`` is
one task, as for d3rlpy's own algorithms), with scalers off and min-max, as
d3rlpy's DT test does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest.mock import Mock

import d3rlpy
import numpy as np
import onnxruntime as ort
import pytest
import torch
from d3rlpy.algos import IdentityTransformerActionSampler, TransformerInput
from d3rlpy.base import LearnableConfigWithShape
from d3rlpy.dataset import (
    EpisodeGenerator,
    PartialTrajectory,
    TrajectoryMiniBatch,
    create_infinite_replay_buffer,
)
from d3rlpy.logging import NoopAdapterFactory
from d3rlpy.preprocessing import (
    MinMaxActionScaler,
    MinMaxObservationScaler,
    MinMaxRewardScaler,
)

from harmodt_algo import HarmoDT, HarmoDTConfig, as_multitask_dataset

OBS = (100,)
ACTIONS = 2


def _replay_buffer(rng: np.random.Generator) -> Any:
    episodes, length = 4, 25
    size = episodes * length
    terminals = np.zeros(size, dtype=np.float32)
    terminals[length - 1 :: length] = 1.0
    return create_infinite_replay_buffer(
        EpisodeGenerator(
            rng.random((size, *OBS)).astype(np.float32),
            rng.random((size, ACTIONS)),
            rng.random(size).astype(np.float32),
            terminals,
        )()
    )


def _config(scalers: str | None) -> HarmoDTConfig:
    if scalers is None:
        return HarmoDTConfig(
            observation_scaler=None, action_scaler=None, reward_scaler=None
        )
    return HarmoDTConfig(
        observation_scaler=MinMaxObservationScaler(),
        action_scaler=MinMaxActionScaler(),
        reward_scaler=MinMaxRewardScaler(),
    )


def _inpt(rng: np.random.Generator, context: int) -> TransformerInput:
    return TransformerInput(
        observations=rng.random((context, *OBS)).astype(np.float32),
        actions=rng.random((context, ACTIONS)).astype(np.float32),
        rewards=rng.random((context, 1)).astype(np.float32),
        returns_to_go=rng.random((context, 1)).astype(np.float32),
        timesteps=np.arange(context),
    )


@pytest.mark.parametrize("scalers", [None, "min_max"])
def test_d3rlpy_algo_tester_sequence(
    scalers: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    algo = HarmoDT(_config(scalers))
    context = algo.config.context_size

    # fit_tester: a ReplayBuffer, update mocked, one call per step
    dataset = _replay_buffer(rng)
    real_update = algo.update
    monkeypatch.setattr(algo, "update", Mock(return_value={"loss": 0.5}))
    algo.fit(
        dataset,
        n_steps=10,
        n_steps_per_epoch=5,
        logger_adapter=NoopAdapterFactory(),
        show_progress=False,
    )
    calls = algo.update.call_args_list  # type: ignore[attr-defined]
    assert len(calls) == 10
    for call in calls:
        assert isinstance(call[0][0], TrajectoryMiniBatch)
        assert len(call[0][0]) == algo.config.batch_size
    monkeypatch.setattr(algo, "update", real_update)
    assert algo.task_names == ("default",)

    # from_json_tester / load_learnable_tester
    assert algo.impl is not None
    params = tmp_path / "params.json"
    params.write_text(
        LearnableConfigWithShape(
            observation_shape=algo.impl.observation_shape,
            action_size=algo.impl.action_size,
            config=algo.config,
        ).serialize()
    )  # what d3rlpy's logger writes as params.json
    from_json = HarmoDT.from_json(str(params))
    assert isinstance(from_json, HarmoDT) and from_json.impl is not None
    algo.save(str(tmp_path / "algo.d3"))
    loaded = d3rlpy.load_learnable(str(tmp_path / "algo.d3"))
    assert isinstance(loaded, HarmoDT) and loaded.impl is not None

    # predict_tester
    algo.create_impl(OBS, ACTIONS)
    inpt = _inpt(rng, context)
    assert algo.predict(inpt).shape == (ACTIONS,)

    # save_and_load_tester
    algo.save_model(str(tmp_path / "model.pt"))
    algo2 = algo.config.create()
    algo2.create_impl(OBS, ACTIONS)
    algo2.load_model(str(tmp_path / "model.pt"))
    sampler = IdentityTransformerActionSampler()
    observation = rng.random(OBS).astype(np.float32)
    a1 = algo.as_stateful_wrapper(0, sampler).predict(observation, 0)
    a2 = algo2.as_stateful_wrapper(0, sampler).predict(observation, 0)
    assert np.all(a1 == a2)

    # update_tester: an all-padding batch, the step counter, set_grad_step
    trajectories = []
    for _ in range(algo.config.batch_size):
        rewards = rng.random((context, 1)).astype(np.float32)
        trajectories.append(
            PartialTrajectory(
                observations=rng.random((context, *OBS)).astype(np.float32),
                actions=rng.random((context, ACTIONS)).astype(np.float32),
                rewards=rewards,
                terminals=rng.random((context, 1)).astype(np.float32),
                returns_to_go=rewards,
                timesteps=np.arange(context),
                masks=np.zeros(context, dtype=np.float32),
                length=context,
            )
        )
    batch = TrajectoryMiniBatch.from_partial_trajectories(trajectories)
    algo.create_impl(OBS, ACTIONS)
    step = algo.grad_step
    loss = algo.update(batch)
    assert algo.grad_step == step + 1
    algo.set_grad_step(0)
    assert algo.grad_step == 0
    assert len(loss) > 0

    # stateful_wrapper_tester
    algo.create_impl(OBS, ACTIONS)
    wrapper = algo.as_stateful_wrapper(100.0, sampler)
    for _ in range(10):
        action = wrapper.predict(rng.random(OBS).astype(np.float32), 0.0)
        assert isinstance(action, np.ndarray) and action.shape == (ACTIONS,)
    wrapper.reset()
    first = rng.random(OBS).astype(np.float32)
    action1 = wrapper.predict(first, 0.0)
    action2 = wrapper.predict(rng.random(OBS).astype(np.float32), 0.0)
    assert np.all(action1 != action2)
    wrapper.reset()
    assert np.all(action1 == wrapper.predict(first, 0.0))

    # save_policy_tester: TorchScript and ONNX against predict
    algo.create_impl(OBS, ACTIONS)
    algo.save_policy(str(tmp_path / "model.pt"))
    policy = torch.jit.load(str(tmp_path / "model.pt"))
    inputs = [
        torch.rand(context, *OBS),
        torch.rand(context, ACTIONS),
        torch.rand(context, 1),
        torch.arange(context),
    ]
    action = policy(*inputs)
    assert action.shape == (ACTIONS,)
    longer = [torch.cat([x, x[:1]]) for x in inputs]  # K + 1 steps
    with pytest.raises(RuntimeError, match="shape"):
        policy(*longer)  # refused, as the ONNX graph does
    inpt = TransformerInput(
        observations=inputs[0].numpy(),
        actions=inputs[1].numpy(),
        rewards=inputs[2].numpy(),
        returns_to_go=inputs[2].numpy(),
        timesteps=inputs[3].numpy(),
    )
    assert np.allclose(action.detach().numpy(), algo.predict(inpt), atol=1e-3)
    algo.save_policy(str(tmp_path / "model.onnx"))
    session = ort.InferenceSession(
        str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (onnx_action,) = session.run(
        None,
        {
            "observation_0": inpt.observations,
            "action": inpt.actions,
            "return_to_go": inpt.returns_to_go,
            "timestep": inpt.timesteps,
        },
    )
    assert onnx_action.shape == (ACTIONS,)
    assert np.allclose(onnx_action, algo.predict(inpt), atol=1e-3)


def test_a_dict_of_replay_buffers_is_a_multitask_dataset() -> None:
    rng = np.random.default_rng(1)
    data = as_multitask_dataset({"b": _replay_buffer(rng), "a": _replay_buffer(rng)})
    assert data.task_names == ("b", "a")
    assert as_multitask_dataset(_replay_buffer(rng)).task_names == ("default",)
    named = as_multitask_dataset(_replay_buffer(rng), task_names=["reach-v3"])
    assert named.task_names == ("reach-v3",)


def test_each_task_exports_its_own_policy(tmp_path: Path) -> None:
    from .test_harmodt import fit, small, synthetic

    algo = fit(HarmoDT(small()), synthetic(num_tasks=2), n_steps=4)
    rng = np.random.default_rng(2)
    context = algo.config.context_size
    inpt = TransformerInput(
        observations=rng.normal(size=(context, 39)).astype(np.float32),
        actions=rng.uniform(-1, 1, (context, 4)).astype(np.float32),
        rewards=np.zeros((context, 1), np.float32),
        returns_to_go=np.full((context, 1), 100.0, np.float32),
        timesteps=np.arange(context),
    )
    args = [torch.as_tensor(x) for x in (inpt.observations, inpt.actions)]
    args += [torch.as_tensor(inpt.returns_to_go), torch.as_tensor(inpt.timesteps)]
    actions = []
    for task in algo.task_names:
        view = algo.for_task(task)
        view.save_policy(str(tmp_path / f"{task}.pt"))
        exported = torch.jit.load(str(tmp_path / f"{task}.pt"))(*args).numpy()
        np.testing.assert_allclose(exported, view.predict(inpt), atol=1e-5)
        actions.append(exported)
    assert not np.allclose(actions[0], actions[1])  # masks and prompts baked in
    with pytest.raises(ValueError, match="task="):
        algo.save_policy(str(tmp_path / "x.pt"))
    with pytest.raises(ValueError, match="unknown task"):
        algo.save_policy(str(tmp_path / "x.pt"), task="push-v3")
    with pytest.raises(ValueError, match=r"\.pt .*\.onnx"):
        algo.for_task(0).save_policy(str(tmp_path / "x.pkl"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task-0.pt", "task-1.pt"]
    # training still works after an export (the export froze, then unfroze)
    fit(algo, synthetic(num_tasks=2), n_steps=2)
