"""Inputs through a config's scalers: one function for the prompts, the
evaluator's contexts and the exported policy.

Why its own module: ``export.py`` and ``contexts.py`` need it, and the
algorithm module imports them; living there it made a runtime import cycle.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["scale_inputs"]


def scale_inputs(
    config: Any,
    observations: torch.Tensor,
    actions: torch.Tensor,
    returns_to_go: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Observations, actions and returns-to-go through the config's scalers,
    as d3rlpy's ``TorchTransformerInput.from_numpy`` does: the one place for
    the prompts, the evaluator and the exported policy."""
    if config.observation_scaler is not None:
        observations = config.observation_scaler.transform(observations)
    if config.action_scaler is not None:
        actions = config.action_scaler.transform(actions)
    if config.reward_scaler is not None:
        returns_to_go = config.reward_scaler.transform(returns_to_go)
    return observations, actions, returns_to_go
