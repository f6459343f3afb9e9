"""The methods a matrix can run, their labels, the paper's numbers, and the
per-method options: what ``--methods`` and ``--set`` are checked against
before any training starts."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from ..baselines import BASELINES, HIDDEN_UNITS_KEY, baseline_config
from ..harmodt import HarmoDTConfig
from ..options import OptionError, parse_list
from ..presets import PRESET_RECORDS
from .errors import BenchmarkError

__all__ = [
    "BASELINE_METHODS",
    "HARMODT_METHODS",
    "METHODS",
    "METHOD_LABELS",
    "PAPER_TABLE1",
    "check_methods",
    "method_options",
    "option_default",
    "validate_overrides",
]

#: HarmoDT presets benchmarked (``HarmoDT.from_preset``), in table order.
HARMODT_METHODS: tuple[str, ...] = tuple(PRESET_RECORDS)
#: d3rlpy baselines through the one-hot adapter (``baselines.make_baseline``).
BASELINE_METHODS: tuple[str, ...] = tuple(BASELINES)
METHODS: tuple[str, ...] = HARMODT_METHODS + BASELINE_METHODS
METHOD_LABELS: dict[str, str] = {
    **{name: preset.label for name, preset in PRESET_RECORDS.items()},
    **{name: spec.label for name, spec in BASELINES.items()},
}

#: The paper's Table 1 (success %, Meta-World v2 data, 3 seeds; design §9),
#: keyed by method label and (suite, quality). A reference for the size of the
#: gaps between methods, not a target: the data differ.
PAPER_TABLE1: dict[str, dict[tuple[str, str], float]] = {
    "MTBC": {("MT50", "near-optimal"): 60.39, ("MT50", "sub-optimal"): 34.53},
    "MTIQL": {("MT50", "near-optimal"): 56.21, ("MT50", "sub-optimal"): 43.28},
    "MTDT": {
        ("MT5", "near-optimal"): 100.00,
        ("MT5", "sub-optimal"): 64.67,
        ("MT30", "near-optimal"): 71.89,
        ("MT30", "sub-optimal"): 49.33,
        ("MT50", "near-optimal"): 65.80,
        ("MT50", "sub-optimal"): 42.33,
    },
    "Prompt-DT": {
        ("MT5", "near-optimal"): 100.00,
        ("MT5", "sub-optimal"): 67.00,
        ("MT30", "near-optimal"): 71.30,
        ("MT30", "sub-optimal"): 54.33,
        ("MT50", "near-optimal"): 71.60,
        ("MT50", "sub-optimal"): 51.40,
    },
    "HarmoDT-R": {
        ("MT5", "near-optimal"): 100.00,
        ("MT5", "sub-optimal"): 68.00,
        ("MT30", "near-optimal"): 80.10,
        ("MT30", "sub-optimal"): 59.00,
        ("MT50", "near-optimal"): 74.24,
        ("MT50", "sub-optimal"): 52.45,
    },
    "HarmoDT-M": {
        ("MT5", "near-optimal"): 100.00,
        ("MT5", "sub-optimal"): 72.12,
        ("MT30", "near-optimal"): 79.67,
        ("MT30", "sub-optimal"): 62.33,
        ("MT50", "near-optimal"): 78.80,
        ("MT50", "sub-optimal"): 56.20,
    },
    "HarmoDT-F": {
        ("MT5", "near-optimal"): 100.00,
        ("MT5", "sub-optimal"): 75.04,
        ("MT30", "near-optimal"): 81.60,
        ("MT30", "sub-optimal"): 60.60,
        ("MT50", "near-optimal"): 77.80,
        ("MT50", "sub-optimal"): 57.50,
    },
}

#: Config fields the harness owns (set per cell, never overridden).
_RESERVED_OPTIONS = frozenset({"seed", "task_names"})


def check_methods(methods: str | Sequence[str]) -> list[str]:
    """Normalised method names (``"all"`` = every method); unknown names raise
    :class:`BenchmarkError` listing the valid ones."""
    try:
        items = (
            parse_list("--methods", methods)
            if isinstance(methods, str)
            else list(methods)
        )
    except OptionError as exc:
        raise BenchmarkError(str(exc)) from None
    names: list[str] = []
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        if name == "all":
            names.extend(METHODS)
        elif name not in METHODS:
            raise BenchmarkError(
                f"unknown method {item.strip()!r}; valid methods: "
                f"{', '.join(METHODS)} (or 'all')"
            )
        else:
            names.append(name)
    if not names:
        raise BenchmarkError(f"no methods given; valid methods: {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def method_options(method: str) -> set[str]:
    """The override keys ``method`` accepts (its config fields)."""
    if method in HARMODT_METHODS:
        fields = {f.name for f in dataclasses.fields(HarmoDTConfig)}
    else:
        config = baseline_config(method)
        fields = {f.name for f in dataclasses.fields(config)} | {HIDDEN_UNITS_KEY}
    return fields - _RESERVED_OPTIONS


def option_default(method: str, option: str) -> Any:
    """The default of ``option`` for ``method``: what types a ``--set`` value."""
    if method in HARMODT_METHODS:
        return getattr(HarmoDTConfig.from_preset(method), option)
    if option == HIDDEN_UNITS_KEY:
        return [256, 256]  # a list: parsed as JSON
    return getattr(baseline_config(method), option)


def validate_overrides(method: str, overrides: Mapping[str, Any]) -> None:
    """Build ``method``'s config with ``overrides`` so a bad option fails
    before any cell trains, not in the middle of a matrix."""
    reserved = sorted(set(overrides) & _RESERVED_OPTIONS)
    if reserved:
        raise BenchmarkError(
            f"{method}: {reserved} are set by the harness (the seed comes from "
            "--seeds, the tasks from the dataset)"
        )
    try:
        if method in HARMODT_METHODS:
            HarmoDTConfig.from_preset(method, **overrides).validate()
        else:
            baseline_config(method, **overrides)
    except (TypeError, ValueError) as exc:
        raise BenchmarkError(f"{method}: bad option: {exc}") from None
