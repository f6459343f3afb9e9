"""One task of a HarmoDT model with the surface of d3rlpy's
``DecisionTransformer``, so that d3rlpy's evaluators and
``StatefulTransformerWrapper`` run on it unchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from d3rlpy.algos.transformer import StatefulTransformerWrapper
from d3rlpy.algos.transformer.action_samplers import (
    IdentityTransformerActionSampler,
    TransformerActionSampler,
)
from d3rlpy.algos.transformer.inputs import TransformerInput
from d3rlpy.constants import ActionSpace
from d3rlpy.types import NDArray

if TYPE_CHECKING:
    from .harmodt import HarmoDT, HarmoDTConfig
    from .impl import HarmoDTImpl

__all__ = ["HarmoDTTaskView"]


class HarmoDTTaskView:
    """HarmoDT bound to one task: the surface of d3rlpy's DecisionTransformer.

    ``predict(TransformerInput)`` and ``as_stateful_wrapper(target_return)``
    behave like d3rlpy's, so ``evaluate_transformer_with_environment`` and
    ``StatefulTransformerWrapper`` run on it unchanged.
    """

    def __init__(self, algo: HarmoDT, task_index: int):
        self._algo = algo
        self._task_index = task_index

    @property
    def task_name(self) -> str:
        return self._algo.task_names[self._task_index]

    @property
    def task_index(self) -> int:
        return self._task_index

    @property
    def algo(self) -> HarmoDT:
        return self._algo

    @property
    def config(self) -> HarmoDTConfig:
        return self._algo.config

    @property
    def impl(self) -> HarmoDTImpl | None:
        return self._algo.impl

    def get_action_type(self) -> ActionSpace:
        return self._algo.get_action_type()

    def predict(self, inpt: TransformerInput) -> NDArray:
        return self._algo.predict(inpt, task=self._task_index)

    def as_stateful_wrapper(
        self,
        target_return: float,
        action_sampler: TransformerActionSampler | None = None,
    ) -> StatefulTransformerWrapper[HarmoDTImpl, HarmoDTConfig]:
        sampler = action_sampler or IdentityTransformerActionSampler()
        return StatefulTransformerWrapper(self, target_return, sampler)  # type: ignore[arg-type]

    def save_policy(self, fname: str) -> None:
        """This task's policy as TorchScript (.pt) or ONNX (.onnx)."""
        self._algo.save_policy(fname, task=self._task_index)

    def __repr__(self) -> str:
        return f"HarmoDTTaskView(task={self.task_name!r})"
