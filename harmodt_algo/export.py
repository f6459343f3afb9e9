"""Deployable policies: one task's sub-network as TorchScript or ONNX.

d3rlpy users deploy a Decision Transformer with ``algo.save_policy("x.pt" |
"x.onnx")``: a graph that maps the last K steps (observations, actions,
returns-to-go, timesteps) to the next action, with the scalers inside and no
d3rlpy needed at run time. HarmoDT's policy is per task, so the export bakes
in one task's mask and prompt (``algo.for_task(name).save_policy(...)``).

It differs from d3rlpy's own ``TransformerAlgoBase.save_policy`` in two ways
that make the file's actions equal ``predict``'s: the attention mask is ones
(every one of the K given steps is real; d3rlpy passes a ``(1, K, 1)`` tensor
of zeros), and the returns-to-go go through the reward scaler, as ``predict``
does. Inputs must be exactly K steps, as for d3rlpy's exported DT.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from d3rlpy.algos.transformer.inputs import TorchTransformerInput

from .scaling import scale_inputs

if TYPE_CHECKING:  # pragma: no cover
    from .harmodt import HarmoDT

__all__ = ["POLICY_FORMATS", "save_task_policy"]

#: File suffix -> format name.
POLICY_FORMATS = {".pt": "TorchScript", ".onnx": "ONNX"}
ONNX_INPUTS = ["observation_0", "action", "return_to_go", "timestep"]


def save_task_policy(algo: HarmoDT, fname: str | Path, task_index: int) -> None:
    """Write task ``task_index``'s greedy policy to ``fname`` (.pt or .onnx).

    The file is written to a temporary name first and renamed, so a failed
    export never leaves half a file behind.
    """
    path = Path(fname)
    if path.suffix not in POLICY_FORMATS:
        raise ValueError(
            f"cannot export a policy to {str(path)!r}: use a .pt (TorchScript) "
            "or .onnx (ONNX) file name"
        )

    impl = algo.impl
    if impl is None:
        raise RuntimeError("the model is not built yet: fit() or load it first")
    cfg = algo.config
    context = cfg.context_size
    device = impl.device
    dummy = (
        torch.rand(context, *impl.observation_shape, device=device),  # (K, obs)
        torch.rand(context, impl.action_size, device=device),  # (K, A)
        torch.rand(context, 1, device=device),  # (K, 1)
        torch.arange(context, device=device),  # (K,)
    )

    def policy(
        observations: torch.Tensor,
        actions: torch.Tensor,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
    ) -> torch.Tensor:
        # reshape, not unsqueeze: the traced graph keeps K as a constant, so
        # any other number of steps fails instead of giving another action
        obs, act, rtg = scale_inputs(
            cfg,
            observations.reshape(1, context, *impl.observation_shape),  # (1, K, obs)
            actions.reshape(1, context, impl.action_size),  # (1, K, A)
            returns_to_go.reshape(1, context, 1),  # (1, K, 1)
        )
        inpt = TorchTransformerInput(
            observations=obs,
            actions=act,
            rewards=torch.zeros_like(rtg),
            returns_to_go=rtg,
            timesteps=timesteps.reshape(1, context).long(),  # (1, K)
            masks=torch.ones_like(rtg[..., 0]),  # (1, K): every step is real
            length=context,
        )
        action = impl.predict_task(inpt, task_index)  # (A,)
        if cfg.action_scaler is not None:
            action = cfg.action_scaler.reverse_transform(action)
        return action

    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    impl.modules.freeze()  # no autograd graph in the traced function
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # tracing bakes the task's shapes and branches in, on purpose
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="no signature found")
            traced = torch.jit.trace(policy, dummy, check_trace=False)
            _write(traced, dummy, path.suffix, tmp)
        tmp.replace(path)
    finally:
        impl.modules.unfreeze()
        tmp.unlink(missing_ok=True)


def _write(
    traced: Any, dummy: tuple[torch.Tensor, ...], suffix: str, tmp: Path
) -> None:
    if suffix == ".onnx":
        torch.onnx.export(
            traced,
            dummy,
            str(tmp),
            export_params=True,
            opset_version=17,
            input_names=ONNX_INPUTS,
            output_names=["output_0"],
            dynamo=False,  # the TorchScript exporter: takes the traced graph
        )
    else:
        traced.save(str(tmp))
