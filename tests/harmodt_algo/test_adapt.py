"""Unseen tasks: ``HarmoDT.add_task`` (vote, tune, prompt, zero-shot,
finetune) on tiny real data: the vote against a hand computation, ``tune``
touching nothing but the new prompt, ``finetune`` moving shared weights only
through the new task's mask, save/reload, d3rlpy's stateful wrapper and our
evaluator, and every bad input leaving the model unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import d3rlpy
import numpy as np
import pytest
import torch
from d3rlpy.dataset import Episode

from harmodt_algo import HarmoDT, MultiTaskDataset
from harmodt_algo.evaluation import MultiTaskEvaluator

from .test_harmodt import fit, small, synthetic, window


def _demos(seed: int = 9, obs: int = 39, act: int = 4) -> dict[str, list[Episode]]:
    rng = np.random.default_rng(seed)
    return {
        "new-task": [
            Episode(
                observations=rng.normal(size=(30, obs)).astype(np.float32),
                actions=np.tanh(rng.normal(size=(30, act))).astype(np.float32),
                rewards=rng.random((30, 1)).astype(np.float32),
                terminated=False,
            )
            for _ in range(2)
        ]
    }


def _trained(**overrides: Any) -> HarmoDT:
    return fit(HarmoDT(small(mask_interval=2, **overrides)), synthetic(), n_steps=4)


def _snapshot(algo: HarmoDT) -> dict[str, torch.Tensor]:
    assert algo.impl is not None
    out = {
        f"w.{k}": v.clone()
        for k, v in algo.impl.modules.transformer.state_dict().items()
    }
    out["masks"] = algo.impl.flat_masks().clone()
    for key in ("observations", "actions", "returns_to_go", "timesteps", "masks"):
        out[f"p.{key}"] = getattr(algo.impl.modules.prompts, key).clone()
    return out


def test_vote_mask_is_the_hand_vote_and_the_prompt_the_best_segment() -> None:
    algo = _trained()
    before = _snapshot(algo)
    algo.add_task("new-task", _demos(), method="vote", threshold=0.5)
    assert algo.task_names[-1] == "new-task" and len(algo.task_names) == 4
    assert algo.impl is not None
    masks = algo.impl.modules.masks
    for name in masks.names:
        trained = masks.get(name)[:3].to(torch.float64)
        assert torch.equal(masks.get(name)[3], trained.mean(dim=0) >= 0.5), name
    # the trained tasks' rows did not move
    assert torch.equal(algo.impl.flat_masks()[:3], before["masks"])
    demo = MultiTaskDataset.from_episodes(_demos())
    expected = algo.scale_prompts(demo.prompt_arrays(algo.config.prompt_length))
    torch.testing.assert_close(
        algo.impl.modules.prompts.observations[3], expected["observations"][0]
    )
    assert algo.predict(window(algo), task="new-task").shape == (4,)


def test_tune_changes_only_the_new_prompt(tmp_path: Path) -> None:
    voted = _trained().add_task("new-task", _demos(), method="vote")
    algo = _trained()
    before = _snapshot(algo)
    algo.add_task("new-task", _demos(), method="tune", steps=20)
    after = _snapshot(algo)
    for key, value in before.items():
        if key.startswith("p."):
            assert torch.equal(after[key][:3], value), key  # trained prompts
        elif key == "masks":
            assert torch.equal(after[key][:3], value)
        else:
            assert torch.equal(after[key], value), key  # shared weights
    assert voted.impl is not None and algo.impl is not None
    assert torch.equal(algo.impl.flat_masks()[3], voted.impl.flat_masks()[3])
    tuned = algo.impl.modules.prompts.observations[3]
    assert not torch.equal(tuned, voted.impl.modules.prompts.observations[3])
    for p in algo.impl.modules.transformer.parameters():
        assert p.requires_grad  # unfrozen again: the model still trains
    # saves, reloads and acts identically, through d3rlpy's stateful wrapper too
    algo.save(str(tmp_path / "adapted.d3"))
    loaded = d3rlpy.load_learnable(str(tmp_path / "adapted.d3"))
    assert loaded.task_names == algo.task_names
    np.testing.assert_array_equal(
        loaded.predict(window(loaded), task="new-task"),
        algo.predict(window(algo), task="new-task"),
    )
    wrapper = loaded.for_task("new-task").as_stateful_wrapper(100.0)
    assert wrapper.predict(np.zeros(39, np.float32), 0.0).shape == (4,)


def test_baselines_through_the_same_api() -> None:
    prompt_dt = fit(HarmoDT.from_preset("prompt-dt", **_size()), synthetic(), 2)
    prompt_dt.add_task("new-task", _demos(), method="prompt")
    assert prompt_dt.impl is not None
    assert bool(prompt_dt.impl.flat_masks()[3].all())
    assert bool((prompt_dt.impl.modules.prompts.masks[3] > 0).any())
    mtdt = fit(HarmoDT.from_preset("mtdt", **_size()), synthetic(), 2)
    mtdt.add_task("new-task", _demos(), method="zero-shot")
    assert mtdt.predict(window(mtdt), task="new-task").shape == (4,)


def test_finetune_moves_shared_weights_only_through_the_new_mask() -> None:
    voted = _trained().add_task("new-task", _demos(), method="vote")
    algo = _trained()
    before = _snapshot(algo)
    algo.add_task("new-task", _demos(), method="finetune", steps=5)
    after = _snapshot(algo)
    assert algo.impl is not None and voted.impl is not None
    assert torch.equal(algo.impl.flat_masks()[3], voted.impl.flat_masks()[3])
    assert torch.equal(after["masks"][:3], before["masks"])  # trained masks
    for key in ("p.observations", "p.actions", "p.returns_to_go"):
        assert torch.equal(after[key][:3], before[key]), key  # trained prompts
    masks = algo.impl.modules.masks
    moved = 0
    for name in algo.impl.masked_names:
        old, new = before[f"w.{name}"], after[f"w.{name}"]
        inactive = ~masks.get(name)[3]
        assert torch.equal(new[inactive], old[inactive]), name  # no gradient there
        moved += int((new != old).sum())
    assert moved > 0  # the shared weights did learn
    for p in algo.impl.modules.transformer.parameters():
        assert p.requires_grad
    assert algo.predict(window(algo), task="new-task").shape == (4,)


def test_finetune_on_a_dense_model_uses_the_all_ones_mask() -> None:
    mtdt = fit(HarmoDT.from_preset("mtdt", **_size()), synthetic(), 2)
    assert mtdt.impl is not None
    weights = [p.clone() for p in mtdt.impl.modules.transformer.parameters()]
    mtdt.add_task("new-task", _demos(), method="finetune", steps=3)
    assert bool(mtdt.impl.flat_masks()[3].all())
    now = list(mtdt.impl.modules.transformer.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(weights, now, strict=True))
    with pytest.raises(ValueError, match="finetune needs steps > 0"):
        mtdt.add_task("other", {"other": _demos()["new-task"]}, "finetune", steps=0)
    assert len(mtdt.task_names) == 4


def _size() -> dict[str, Any]:
    return dict(
        batch_size=8, embed_size=32, num_layers=1, num_heads=2, context_size=5,
        max_timestep=100,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(name="task-0"), "already has a task"),
        (dict(demos=_demos(obs=11)), "observations of shape"),
        (dict(demos=_demos(act=2)), "actions"),
        (dict(demos={"new-task": []}), "demonstrations"),
        (dict(threshold=0.0), r"threshold must be in \(0, 1\]"),
        (dict(threshold=1.5), r"threshold must be in \(0, 1\]"),
        (dict(method="finetune-all"), "unknown method"),
    ],
)
def test_bad_input_is_one_clear_error_and_changes_nothing(
    kwargs: dict[str, Any], match: str
) -> None:
    algo = _trained()
    before = _snapshot(algo)
    args: dict[str, Any] = {"name": "new-task", "demos": _demos(), **kwargs}
    with pytest.raises(ValueError, match=match) as info:
        algo.add_task(args.pop("name"), args.pop("demos"), **args)
    assert "\n" not in str(info.value)
    assert algo.task_names == ("task-0", "task-1", "task-2")
    after = _snapshot(algo)
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_vote_on_a_dense_model_says_what_to_use() -> None:
    mtdt = fit(HarmoDT.from_preset("mtdt", **_size()), synthetic(), 2)
    with pytest.raises(ValueError, match="masks disabled.*zero-shot"):
        mtdt.add_task("new-task", _demos(), method="vote")
    assert len(mtdt.task_names) == 3
    # MTDT has no masks and no prompt: every refusal names what it can use,
    # never a method that would be refused too
    for method in ("vote", "tune", "prompt"):
        with pytest.raises(ValueError) as info:
            mtdt.add_task("new-task", _demos(), method=method)
        assert str(info.value).endswith("this model can use 'zero-shot', 'finetune'")


def test_new_task_runs_in_the_multitask_evaluator(tiny_recipe_dataset: Any) -> None:
    data = MultiTaskDataset.from_minari(tiny_recipe_dataset)
    one = MultiTaskDataset.from_episodes({"reach-v3": data.episodes[0]})
    algo = fit(HarmoDT(small(mask_interval=0)), one, n_steps=2)
    other = data.task_names[1]
    algo.add_task(other, {other: data.episodes[1]}, method="vote")
    with MultiTaskEvaluator(tiny_recipe_dataset, n_episodes=1, max_steps=10) as ev:
        result = ev.evaluate(ev.policy_for(algo))
    assert sorted(result.task_names) == sorted(data.task_names)
