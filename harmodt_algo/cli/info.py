"""``harmodt info``: what a saved model is (tasks, preset, config, parameters)
and where its masks stand (density per task, update settings, overlap).

The numbers come from :mod:`harmodt_algo.summary`, shared with the benchmark
cells, so a "parameter" or an "overlap" means the same in both.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from dataset_recipes.commandline import EXIT_OK, say

from .common import infer_preset, load_model, read_run_file

if TYPE_CHECKING:  # pragma: no cover
    from ..harmodt import HarmoDT

__all__ = ["SUMMARY_KEYS", "cmd_info", "describe_model"]

#: Config keys ``info`` shows (the ones a preset or a flag sets).
SUMMARY_KEYS = (
    "embed_size",
    "num_layers",
    "num_heads",
    "ff_size",
    "context_size",
    "max_timestep",
    "prompt_length",
    "mask_init",
    "sparsity",
    "mask_interval",
    "change_fraction",
    "change_schedule",
    "importance",
    "harmony_gamma",
    "task_schedule",
    "batch_size",
    "learning_rate",
    "seed",
)


def describe_model(
    algo: HarmoDT, run: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Everything ``harmodt info`` shows, as JSON-able data."""
    from ..summary import mask_summary

    assert algo.impl is not None  # load_learnable always builds the model
    run = run or {}
    preset = run.get("preset")
    preset_source = "run.json"
    if not preset:
        preset, preset_source = infer_preset(algo.config), "inferred from the config"
    return {
        "tasks": list(algo.task_names),
        "num_tasks": len(algo.task_names),
        "preset": preset,
        "preset_source": preset_source if preset else None,
        "dataset_id": run.get("dataset_id"),
        "grad_steps": algo.grad_step,
        "config": {k: getattr(algo.config, k) for k in SUMMARY_KEYS},
        **mask_summary(algo),
    }


def cmd_info(args: argparse.Namespace, out: Console) -> int:
    """``harmodt info``: tables, or with ``--json`` the same facts as JSON."""
    model_path = Path(args.model)
    algo = load_model(model_path, trust_pickle=args.trust_pickle)
    info = describe_model(algo, read_run_file(model_path))
    if args.json:
        sys.stdout.write(
            json.dumps({"model": str(model_path), **info}, indent=2) + "\n"
        )
        return EXIT_OK
    out.print(_overview_table(str(model_path), info))
    out.print(_density_table(info))
    _print_overlap(out, info)
    return EXIT_OK


def _overview_table(title: str, info: Mapping[str, Any]) -> Table:
    """One row per fact: tasks, preset, data, size, architecture, masks."""
    preset = info["preset"] or "custom"
    source = f" ({info['preset_source']})" if info["preset_source"] else ""
    params = info["parameters"]
    head = Table(title=title, show_header=False)
    head.add_column("key", style="bold")
    head.add_column("value")
    head.add_row("tasks", f"{info['num_tasks']}: {', '.join(info['tasks'])}")
    head.add_row("preset", f"{preset}{source}")
    if info["dataset_id"]:
        head.add_row("dataset", str(info["dataset_id"]))
    head.add_row("grad steps", f"{info['grad_steps']:,}")
    head.add_row(
        "parameters",
        f"{params['total']:,} in the transformer ({params['masked']:,} under masks)",
    )
    cfg = info["config"]
    head.add_row(
        "architecture",
        f"embed {cfg['embed_size']}, layers {cfg['num_layers']}, "
        f"heads {cfg['num_heads']}, ff {cfg['ff_size'] or 4 * cfg['embed_size']}, "
        f"context {cfg['context_size']}, max_timestep {cfg['max_timestep']}, "
        f"prompt {cfg['prompt_length']}",
    )
    masks, mask_update = _mask_rows(info)
    head.add_row("masks", masks)
    head.add_row("mask update", mask_update)
    head.add_row(
        "training",
        f"batch {cfg['batch_size']}, lr {cfg['learning_rate']}, "
        f"schedule {cfg['task_schedule']}, seed {cfg['seed']}",
    )
    return head


def _mask_rows(info: Mapping[str, Any]) -> tuple[str, str]:
    """The "masks" (what they are) and "mask update" (how they move) rows."""
    upd = info["mask_update"]
    change = (
        f"{upd['change_count']} entries"
        if upd["change_count"]
        else f"{upd['change_fraction']} of active"
    )
    estimator = (
        "accumulated training gradients"
        if upd["harmony_estimator"] == "accumulated"
        else f"fresh batch of {upd['mask_batch_size']}"
        + ("" if upd["harmony_dropout"] else ", dropout off")
    )
    masks = (
        f"init {upd['mask_init']}, sparsity {upd['sparsity']}, interval "
        f"{upd['mask_interval']}, change {change} ({upd['change_schedule']}), "
        f"importance {upd['importance']}, gamma {upd['harmony_gamma']}"
    )
    clip = upd["harmony_grad_clip"]
    mask_update = (
        f"estimator {estimator}; consensus "
        f"{'leave-one-out' if upd['harmony_leave_one_out'] else 'all tasks'}"
        f"{f', task grads clipped to {clip}' if clip else ''}; "
        f"normalisation {upd['score_normalization']}; 1-D params "
        f"{'protected' if upd['protect_1d'] else 'droppable'}; total turnover "
        f"{100 * info['mask_turnover']['mean']:.2f} % of active entries"
    )
    return masks, mask_update


def _density_table(info: Mapping[str, Any]) -> Table:
    """Per task: its mask's density and the parameters it uses."""
    params = info["parameters"]
    density = Table(title="per-task masks")
    density.add_column("#", justify="right")
    density.add_column("task")
    density.add_column("density", justify="right")
    density.add_column("active params", justify="right")
    for i, task in enumerate(info["tasks"]):
        density.add_row(
            str(i),
            task,
            f"{info['mask_density'][task]:.3f}",
            f"{params['active_per_task'][task]:,}",
        )
    return density


def _print_overlap(out: Console, info: Mapping[str, Any]) -> None:
    """Mean/min/max Jaccard overlap; the full matrix when it fits (<= 10 tasks)."""
    ov = info["mask_overlap"]
    if ov["mean"] is None:
        out.print("mask overlap (Jaccard): n/a (one task)", highlight=False)
        return
    say(
        out,
        f"mask overlap (Jaccard) between task pairs: mean {ov['mean']:.3f}, "
        f"min {ov['min']:.3f}, max {ov['max']:.3f}",
    )
    if len(info["tasks"]) <= 10:
        matrix = Table(title="pairwise mask overlap (Jaccard)")
        matrix.add_column("#", justify="right")
        for i in range(len(info["tasks"])):
            matrix.add_column(str(i), justify="right")
        for i, row in enumerate(ov["matrix"]):
            matrix.add_row(str(i), *(f"{v:.2f}" for v in row))
        out.print(matrix)
