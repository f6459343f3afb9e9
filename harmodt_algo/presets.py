"""The named presets: one record each (settings, label, one line of what it
is), from which ``HarmoDTConfig.from_preset``, the benchmark's method list and
labels, and the README's preset table derive.

Adding a preset is one entry in :data:`PRESET_RECORDS` (plus its test); the
README's table is checked against :func:`preset_table` by a test:
``python -m harmodt_algo.presets`` prints it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "PRESETS",
    "PRESET_RECORDS",
    "Preset",
    "RELEASE_REGIME",
    "RELEASE_SIZED",
    "preset_table",
]


@dataclasses.dataclass(frozen=True)
class Preset:
    """One named configuration: its label in tables, what it is in one line,
    and the config settings it sets (the rest are the config's defaults)."""

    label: str
    summary: str
    settings: Mapping[str, Any]


#: The schedule sized like the release's: at most 100 entries per task per
#: update (its k_max, one top-k over all masked entries), cosine over the run.
#: Updates every 100 steps (the release: 500 of 10^6 steps) so that a
#: CPU-sized run still makes tens of updates.
RELEASE_SIZED: dict[str, Any] = {"change_count": 100, "mask_interval": 100}

#: The authors' release (charleshsc/HarmoDT) setting by setting; where each
#: comes from (file:line of its main.py, prompt_dt/fl_utils.py and
#: prompt_dt/prompt_seq_trainer.py) is in the README's preset table.
RELEASE_REGIME: dict[str, Any] = {
    "importance": "fisher",  # --select fisher
    "harmony_gamma": 10.0,  # --gamma 10
    "batch_size": 8,  # --batch_size 8
    "task_schedule": "round_robin",  # env_id = iter % num_env
    "mask_init": "erk",  # ERK_maskinit, drawn anew per task (mode "random")
    "sparsity": 0.2,  # --sparsity 0.2
    "shared_update_masks": True,  # embed*/predict* masked in the update only
    "block_growth": False,  # block growth is blind: it lands in the shared layers
    "protect_1d": False,  # every parameter's mask takes part
    "mask_interval": 500,  # --mask_interval 500
    "change_count": 100,  # --eta_max 100: int(100·sin²(π·s/S)) per task
    "change_schedule": "cosine",
    "harmony_estimator": "batch",  # update_gradient: one fresh batch per task
    "mask_batch_size": 8,  # that batch has the training batch size
    "harmony_dropout": True,  # model.train() during update_gradient
    "harmony_grad_clip": 0.25,  # clip_grad_norm_(..., .25) before the gradient
    "harmony_leave_one_out": False,  # the consensus includes the task's own
    "score_normalization": "none",  # raw gamma·h + g²
    "prompt_length": 5,  # --prompt-length 5, from the training trajectories
}

_SETTINGS: dict[str, dict[str, Any]] = {
    # the paper's three variants (importance term), our defaults otherwise
    "harmodt-f": {"importance": "fisher"},
    "harmodt-m": {"importance": "magnitude"},
    "harmodt-r": {"importance": "random"},
    # exactly what the first committed matrix ran (1-D parameters droppable)
    "harmodt-f-v0": {"importance": "fisher", "protect_1d": False},
    # HarmoDT-F with the release-sized change per update
    "harmodt-f-release": {"importance": "fisher", **RELEASE_SIZED},
    # the low-noise update of issue 9: running-mean gradients, leave-one-out
    # consensus, release-sized changes, masks as the only task signal (no
    # prompt), and a drop score normalised by scale, so that the most
    # conflicting entries are the first dropped
    "harmodt-plus": {
        "importance": "fisher",
        "harmony_estimator": "accumulated",
        "harmony_leave_one_out": True,
        "score_normalization": "scale",
        "prompt_length": 0,
        **RELEASE_SIZED,
    },
    # exactly what the committed MT10 study ran as HarmoDT+: its rank-normalised
    # score lets the importance rank protect strong conflicts (issue 20)
    "harmodt-plus-v0": {
        "importance": "fisher",
        "harmony_estimator": "accumulated",
        "harmony_leave_one_out": True,
        "score_normalization": "rank",
        "prompt_length": 0,
        **RELEASE_SIZED,
    },
    # HarmoDT+ with the release's per-task update masks on the shared layers
    "harmodt-plus-shared": {
        "importance": "fisher",
        "harmony_estimator": "accumulated",
        "harmony_leave_one_out": True,
        "score_normalization": "scale",
        "prompt_length": 0,
        "shared_update_masks": True,
        **RELEASE_SIZED,
    },
    # the release's regime in every setting the paper's runs depend on (the
    # README's preset table cites the release for each); model size, steps
    # and the learning-rate warm-up are the run's, not the preset's
    "harmodt-f-paper": RELEASE_REGIME,
    # gradient surgery on the dense model without prompt (MTDT's network),
    # every task in every batch: PCGrad (Yu et al. 2020), CAGrad (Liu et al. 2021)
    "pcgrad": {
        "mask_init": "dense",
        "mask_interval": 0,
        "prompt_length": 0,
        "task_schedule": "mixed",
        "gradient_surgery": "pcgrad",
    },
    "cagrad": {
        "mask_init": "dense",
        "mask_interval": 0,
        "prompt_length": 0,
        "task_schedule": "mixed",
        "gradient_surgery": "cagrad",
        "cagrad_c": 0.5,
    },
    # controls: ERK masks at HarmoDT's density that never change, no prompt
    "sparse-static": {"mask_interval": 0, "prompt_length": 0},
    "mtdt": {"mask_init": "dense", "mask_interval": 0, "prompt_length": 0},
    "prompt-dt": {"mask_init": "dense", "mask_interval": 0},
}


#: label and one line per preset, in table order
_ABOUT: dict[str, tuple[str, str]] = {
    "harmodt-f": (
        "HarmoDT-F",
        "the paper's HarmoDT-F: harmony + Fisher importance (the default)",
    ),
    "harmodt-m": (
        "HarmoDT-M",
        "the paper's HarmoDT-M: harmony + weight-magnitude importance",
    ),
    "harmodt-r": ("HarmoDT-R", "HarmoDT-R: harmony + random importance (ablation)"),
    "harmodt-f-v0": (
        "HarmoDT-F (v0)",
        "HarmoDT-F exactly as the first committed matrix ran it",
    ),
    "harmodt-f-release": (
        "HarmoDT-F (release-sized)",
        "HarmoDT-F with the release-sized change per update",
    ),
    "harmodt-plus": (
        "HarmoDT+",
        "the low-noise update (issue 9) with a drop score that drops the most "
        "conflicting entries first (issue 20)",
    ),
    "harmodt-plus-v0": (
        "HarmoDT+ (v0, rank score)",
        "HarmoDT+ exactly as the committed MT10 study ran it (rank-normalised "
        "score: the importance rank protects strong conflicts)",
    ),
    "harmodt-plus-shared": (
        "HarmoDT+ (shared update masks)",
        "HarmoDT+ with the release's per-task update masks on the shared layers",
    ),
    "harmodt-f-paper": (
        "HarmoDT-F (release regime)",
        "the release's regime in every setting of the next table (size, steps "
        "and warm-up are the run's)",
    ),
    "pcgrad": (
        "PCGrad",
        "gradient surgery instead of masks: PCGrad (Yu et al. 2020) on MTDT's "
        "dense network, every task in every batch",
    ),
    "cagrad": (
        "CAGrad",
        "CAGrad (Liu et al. 2021), likewise; `cagrad_c=0` is the plain mean",
    ),
    "sparse-static": (
        "Sparse-static",
        "control: ERK masks at HarmoDT's density that never change, no prompt",
    ),
    "mtdt": ("MTDT", "dense masks, no mask updates, no prompt (plain multi-task DT)"),
    "prompt-dt": (
        "Prompt-DT",
        "dense masks, no mask updates, 5-step trajectory prompts",
    ),
}

#: Every preset, in table order: ``HarmoDT.from_preset(name)``.
PRESET_RECORDS: dict[str, Preset] = {
    name: Preset(label, summary, _SETTINGS[name])
    for name, (label, summary) in _ABOUT.items()
}
assert set(_ABOUT) == set(_SETTINGS), "a preset needs settings, a label and a line"

#: name -> settings (what ``from_preset`` applies over the config's defaults).
PRESETS: dict[str, dict[str, Any]] = {
    name: dict(p.settings) for name, p in PRESET_RECORDS.items()
}


def _value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def preset_table(defaults: Mapping[str, Any]) -> str:
    """The README's markdown table: each preset's name, line and the settings
    in which it differs from ``defaults`` (the config's)."""
    rows = [
        "| preset | what it is | settings that differ from the config defaults |",
        "|---|---|---|",
    ]
    for name, preset in PRESET_RECORDS.items():
        changed = [
            f"`{key}={_value(value)}`"
            for key, value in preset.settings.items()
            if defaults.get(key) != value
        ]
        rows.append(f"| `{name}` | {preset.summary} | {', '.join(changed) or '—'} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover - prints the README table
    from .harmodt import HarmoDTConfig

    print(preset_table(dataclasses.asdict(HarmoDTConfig())))
