"""What more than one ``harmodt`` command needs: the one error type, the run
directory's file names, and the loaders that turn a missing dataset or a bad
model file into ONE line that says what to do instead of a traceback."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..options import OptionError, parse_device, parse_value

if TYPE_CHECKING:  # pragma: no cover
    from ..harmodt import HarmoDT, HarmoDTConfig

__all__ = [
    "LOGGERS",
    "MODEL_FILE",
    "PROG",
    "RUN_FILE",
    "CliError",
    "check_positive",
    "first_sentence",
    "infer_preset",
    "load_minari",
    "load_model",
    "parse_overrides",
    "read_run_file",
    "recipe_hint",
    "torch_device",
]

PROG = "harmodt"
#: Written by ``train`` next to the model: how the run was made.
RUN_FILE = "run.json"
#: The final model of a ``train`` run.
MODEL_FILE = "model.d3"
LOGGERS = ("file", "tensorboard", "both", "none")


class CliError(Exception):
    """Bad input found by the CLI itself; printed as one line (exit code 2)."""


def check_positive(name: str, value: int | None, allow_zero: bool = False) -> None:
    """A count option must be > 0 (or >= 0); None means "not given"."""
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise CliError(f"{name} must be {bound}, got {value}")


def torch_device(device: str | None) -> str | bool:
    """``--device`` through the shared option parser, failing as a CLI error."""
    try:
        return parse_device(device)
    except OptionError as exc:
        raise CliError(f"--device: {exc}") from None


def _parse_value(key: str, text: str, default: Any) -> Any:
    """``text`` typed as the field's default (the shared option parser)."""
    try:
        return parse_value(key, text, default)
    except OptionError as exc:
        raise CliError(f"--set {exc}") from None


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> typed ``HarmoDTConfig`` overrides.

    Only fields whose default is a bool, int, float or str can be set from the
    command line (factories, scalers and the task list cannot).
    """
    from ..harmodt import HarmoDTConfig

    defaults = HarmoDTConfig()
    settable = {
        f.name: getattr(defaults, f.name)
        for f in dataclasses.fields(HarmoDTConfig)
        if isinstance(getattr(defaults, f.name), (bool, int, float, str))
    }
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise CliError(f"--set expects KEY=VALUE, got {item!r}")
        if key not in settable:
            fields = {f.name for f in dataclasses.fields(HarmoDTConfig)}
            why = (
                "cannot be set from the command line"
                if key in fields
                else "is not a HarmoDTConfig field"
            )
            raise CliError(
                f"--set {key}: {why}; settable fields: {', '.join(sorted(settable))}"
            )
        out[key] = _parse_value(key, text, settable[key])
    return out


def infer_preset(config: HarmoDTConfig) -> str | None:
    """The most specific preset whose every override the config has."""
    from ..harmodt import PRESETS

    best: tuple[int, str] | None = None
    for name, overrides in PRESETS.items():
        if all(getattr(config, k) == v for k, v in overrides.items()):
            if best is None or len(overrides) > best[0]:
                best = (len(overrides), name)
    return None if best is None else best[1]


def recipe_hint(dataset_id: str) -> str:
    """How to build ``dataset_id`` with ``harmodt-recipes`` (or a generic hint)."""
    from dataset_recipes import parse_dataset_id, schema

    generic = (
        "build a recipe dataset with e.g. 'harmodt-recipes metaworld --suite MT5 "
        "--quality near-optimal' (choices: 'harmodt-recipes list')"
    )
    recipe = parse_dataset_id(dataset_id)
    if recipe is None:
        if dataset_id.startswith(f"{schema.NAMESPACE}/"):
            return generic
        return f"{generic}, or fetch it with 'minari download {dataset_id}'"
    if recipe.suite is not None:
        args = f"--suite {recipe.suite}"
    elif recipe.task is not None:
        args = f"--suite MT1 --tasks {recipe.task}"
    elif recipe.group.startswith("custom-"):
        args = "--tasks <the same comma-separated task list>"
    else:
        return generic
    return (
        f"build it with 'harmodt-recipes metaworld {args} --quality {recipe.quality}'"
    )


def load_minari(dataset_id: str) -> Any:
    """The local Minari dataset ``dataset_id``; a missing one names the recipe."""
    import minari

    try:
        return minari.load_dataset(dataset_id)
    except FileNotFoundError:
        from dataset_recipes import datasets_root

        raise CliError(
            f"no local dataset {dataset_id!r} under {datasets_root()}; "
            f"{recipe_hint(dataset_id)}"
        ) from None


def first_sentence(text: str, limit: int = 200) -> str:
    """The first sentence of an exception text (torch's pickle errors run to
    paragraphs); cut at a word boundary with an ellipsis if still too long."""
    line = text.strip().splitlines()[0] if text.strip() else text
    end = line.find(". ")
    if 0 <= end < limit:
        return line[: end + 1]
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0] + " …"


def load_model(
    path: str | Path, device: str | None = None, trust_pickle: bool = False
) -> HarmoDT:
    """A saved HarmoDT, read without running code from the file
    (:mod:`harmodt_algo.model_files`) unless ``trust_pickle`` lets d3rlpy
    unpickle a ``.d3`` that holds more than data; anything else (missing,
    corrupt, such a pickle without ``trust_pickle``, another algorithm) is a
    :class:`CliError` that says which."""
    import harmodt_algo  # registers HarmoDTConfig before d3rlpy loads the file
    from harmodt_algo.model_files import UnsafeModelFile, load_learnable_file

    file = Path(path)
    if not file.exists():
        raise CliError(f"no model file {str(file)!r}")
    if not file.is_file():
        raise CliError(f"{str(file)!r} is not a file")
    device_arg = torch_device(device)  # a bad device is not a bad model file
    try:
        try:
            algo = load_learnable_file(file, device=device_arg)
        except UnsafeModelFile as exc:
            if not trust_pickle:
                raise CliError(
                    f"{str(file)!r} is not a plain model file: {exc}; it is a "
                    "pickle that can run code: use its .safetensors, or pass "
                    "--trust-pickle if you trust its source"
                ) from None
            import d3rlpy

            algo = d3rlpy.load_learnable(str(file), device=device_arg)
    except CliError:
        raise
    except Exception as exc:  # pickle / torch / d3rlpy all fail differently
        reason = first_sentence(f"{type(exc).__name__}: {exc}")
        raise CliError(
            f"{str(file)!r} is not a readable d3rlpy model file ({reason})"
        ) from None
    if not isinstance(algo, harmodt_algo.HarmoDT):
        raise CliError(
            f"{str(file)!r} is a d3rlpy {type(algo).__name__} model, not HarmoDT"
        )
    return algo


def read_run_file(model: Path) -> dict[str, Any]:
    """The ``run.json`` next to ``model`` (empty when there is none)."""
    path = model.parent / RUN_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CliError(f"{str(path)!r} is not valid JSON ({exc})") from None
    return data if isinstance(data, dict) else {}
