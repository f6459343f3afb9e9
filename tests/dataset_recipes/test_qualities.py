"""The quality mixtures: stratified degraded episodes, plans, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from dataset_recipes import QUALITIES
from dataset_recipes.qualities import is_degraded, plan_episode
from dataset_recipes.rollout import episode_rng, stratification_phase


@pytest.mark.parametrize("name", ["near-optimal", "sub-optimal"])
@pytest.mark.parametrize("n", [10, 20, 100])
def test_stratified_degraded_count(name: str, n: int) -> None:
    q = QUALITIES[name]
    for task in ("reach-v3", "push-v3", "box-close-v3"):
        phase = stratification_phase(0, task, q)
        count = sum(is_degraded(q, phase, i) for i in range(n))
        assert abs(count - q.degraded_fraction * n) <= 1.5, (task, count)


def test_extreme_qualities() -> None:
    assert not any(is_degraded(QUALITIES["expert"], 0.3, i) for i in range(50))
    assert all(is_degraded(QUALITIES["random"], 0.3, i) for i in range(50))
    plan = plan_episode(
        QUALITIES["random"],
        np.random.default_rng(0),
        phase=0.0,
        episode_index=0,
        steps=30,
    )
    assert plan.random_mask(30).all()


def test_plan_is_deterministic_and_varies() -> None:
    q = QUALITIES["sub-optimal"]
    plans = [
        plan_episode(
            q,
            episode_rng(0, "reach-v3", q.stream, i),
            phase=0.1,
            episode_index=i,
            steps=500,
        )
        for i in range(20)
    ]
    again = plan_episode(
        q,
        episode_rng(0, "reach-v3", q.stream, 3),
        phase=0.1,
        episode_index=3,
        steps=500,
    )
    assert again == plans[3]
    assert len({p.noise_std for p in plans}) == 20
    lo, hi = q.noise_std
    assert all(lo <= p.noise_std <= hi for p in plans)
    guided = [p for p in plans if not p.degraded]
    degraded = [p for p in plans if p.degraded]
    assert guided and degraded
    for p in degraded:  # random from the takeover step to the end
        mask = p.random_mask(500)
        assert mask[p.takeover_step :].all() and not mask[: p.takeover_step].any()
        assert p.takeover_step <= q.takeover_step[1]
