"""``harmodt adapt``: unseen tasks added to a trained model from a few
demonstrations (:meth:`HarmoDT.add_task`), written to a NEW model file so the
trained one stays what was evaluated."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from rich.console import Console

from dataset_recipes.commandline import EXIT_OK, say

from .common import CliError, check_positive, load_minari, load_model

__all__ = ["cmd_adapt"]


def _target(args: argparse.Namespace, model_path: Path) -> Path:
    """``--out``, else ``<model>-<method>.d3`` beside the model; never the
    model, never an existing file without ``--overwrite``, checked before any
    work."""
    target = Path(
        args.out or model_path.with_name(f"{model_path.stem}-{args.method}.d3")
    )
    if target.resolve() == model_path.resolve():
        raise CliError("--out must differ from the model file (it is not changed)")
    if target.is_dir():
        raise CliError(f"--out {str(target)!r} is a directory; give a file name")
    from ..model_files import SAFE_SUFFIX, safe_sibling

    written = [target]
    if target.suffix != SAFE_SUFFIX:
        written.append(safe_sibling(target))  # the code-free copy beside it
    for path in written:
        if path.exists() and not args.overwrite:
            raise CliError(
                f"--out {str(path)!r} exists; pass --overwrite to replace it"
            )
    folder = target.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise CliError(
            f"cannot write --out {str(target)!r}: {str(folder)!r} is not a "
            "writable folder"
        )
    return target


def _write(algo: Any, target: Path) -> None:
    """``target`` as asked (``.safetensors``, or ``.d3`` with the code-free
    ``.safetensors`` beside it), each file atomically."""
    from ..model_files import SAFE_SUFFIX, safe_sibling, save_safe_model

    if target.suffix != SAFE_SUFFIX:
        tmp = target.with_name(f".{target.name}.tmp")
        algo.save(str(tmp))
        tmp.replace(target)
        target = safe_sibling(target)
    save_safe_model(algo, target)


def cmd_adapt(args: argparse.Namespace, out: Console) -> int:
    """``harmodt adapt``: every task of ``--dataset`` added with ``--method``."""
    from ..adapt import ADAPT_METHODS

    if args.method not in ADAPT_METHODS:
        raise CliError(
            f"unknown --method {args.method!r}; choose one of "
            f"{', '.join(ADAPT_METHODS)}"
        )
    check_positive("--tune-steps", args.tune_steps)
    model_path = Path(args.model)
    target = _target(args, model_path)
    algo = load_model(model_path, trust_pickle=args.trust_pickle)
    import harmodt_algo

    data = harmodt_algo.as_multitask_dataset(load_minari(args.dataset))
    known = [t for t in data.task_names if t in algo.task_names]
    if known:
        raise CliError(
            f"the model already has task(s) {known}; adapt adds tasks it never "
            "trained on"
        )
    for name in data.task_names:  # every check is made before a task is added
        algo.config.task_datasets[name] = args.dataset  # where it came from
        algo.add_task(
            name,
            {name: data.episodes[data.task_names.index(name)]},
            method=args.method,
            threshold=args.threshold,
            steps=args.tune_steps,
        )
    _write(algo, target)
    say(
        out,
        f"added {len(data.task_names)} task(s) to {model_path.name} with "
        f"{args.method}: {', '.join(data.task_names)}",
    )
    say(out, f"model: {target}")
    say(out, f"evaluate: harmodt evaluate {target} --dataset {args.dataset}")
    return EXIT_OK
