"""The committed studies' commands (examples/harmony_study.py, the lever study,
the committed matrix) are valid runs of the harness.
"""

from __future__ import annotations

import json
import runpy
import shlex
from pathlib import Path

import pytest

import harmodt_algo  # noqa: F401  (before d3rlpy use)
from harmodt_algo import HarmoDTConfig, benchmark
from harmodt_algo.benchmark import (
    check_methods,
    parse_dataset,
)

from ._matrix import ROOT


def test_list_and_the_committed_matrix_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert benchmark.main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(method in listed for method in benchmark.METHODS)

    example = runpy.run_path(str(ROOT / "examples" / "benchmark_matrix.py"))
    lines = example["commands"]()
    assert len(lines) == 5 and lines[-1].split()[3] == "report"
    datasets = set()
    for line in lines[:-1]:
        argv = shlex.split(line)[3:]
        args = benchmark.build_parser().parse_args(argv)
        assert check_methods(args.methods) == list(example["METHODS"])
        paper = {"harmodt-f", "harmodt-m", "harmodt-r", "mtdt", "prompt-dt"}
        assert set(example["METHODS"]) >= paper
        assert args.steps == example["STEPS"] and args.threads == 1
        # the size options are valid for the selected methods (fails before training)
        overrides = benchmark.parse_overrides(args.set, check_methods(args.methods))
        assert overrides["harmodt-f"]["embed_size"] == 64
        assert overrides["harmodt-f"]["protect_1d"] is False  # as the matrix ran
        assert overrides["mtdt-d3rlpy"]["hidden_units"] == [64]
        assert "embed_size" not in overrides.get("mtbc", {})
        datasets.add(parse_dataset(args.datasets).dataset_id)
    assert datasets == {
        f"metaworld-v3/{suite}/{quality}-v0"
        for suite in ("mt5", "mt10")
        for quality in ("near-optimal", "sub-optimal")
    }


def test_the_lever_study_commands_are_valid() -> None:
    # no sys.path entry for examples/: the study imports no other example
    levers = runpy.run_path(str(ROOT / "examples" / "benchmark_levers.py"))
    lines = levers["commands"]()
    assert len(lines) == len(levers["VARIANTS"])
    outs = set()
    for line, options in zip(lines, levers["VARIANTS"].values(), strict=True):
        args = benchmark.build_parser().parse_args(shlex.split(line)[3:])
        methods = check_methods(args.methods)
        overrides = benchmark.parse_overrides(args.set, methods)["harmodt-f"]
        for option in options:  # each variant sets what it says, at the matrix size
            key, value = option.split("=", 1)
            assert overrides[key] == json.loads(value)
        assert overrides["embed_size"] == 64
        HarmoDTConfig.from_preset("harmodt-f", **overrides).validate()
        outs.add(args.out)
    assert len(outs) == len(lines)  # one results folder per variant


def test_the_harmony_study_commands_are_valid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    study = runpy.run_path(str(ROOT / "examples" / "harmony_study.py"))
    streams = study["commands"]()
    assert len(streams) == 2
    seen: set[tuple[str, int]] = set()
    for stream in streams:
        for line in stream.split(" && "):
            args = benchmark.build_parser().parse_args(shlex.split(line)[3:])
            methods = check_methods(args.methods)
            overrides = benchmark.parse_overrides(args.set, methods)
            assert args.steps == study["STEPS"] and args.threads == 1
            for method in methods:
                if method == "mtbc":
                    assert overrides["mtbc"]["batch_size"] == 256
                else:
                    assert overrides[method]["batch_size"] == 16
                    HarmoDTConfig.from_preset(method, **overrides[method]).validate()
                seen |= {(method, seed) for seed in args.seeds}
            assert (args.curve_every is not None) == (methods == ["mtdt"])
    assert seen == {(m, s) for m in study["METHODS"] for s in study["SEEDS"]}
    # the budget probe: the same sizes at twice the steps, with curves
    probe: set[tuple[str, int]] = set()
    for stream in study["longer_commands"]():
        for line in stream.split(" && "):
            args = benchmark.build_parser().parse_args(shlex.split(line)[3:])
            assert args.steps == study["LONGER_STEPS"] == 2 * study["STEPS"]
            assert args.curve_every is not None and args.out == study["LONGER_RESULTS"]
            probe |= {(args.methods, seed) for seed in args.seeds}
    assert probe == {
        (m, s) for m in study["LONGER_METHODS"] for s in study["LONGER_SEEDS"]
    }
    # the lever cells: each preset with its settings changed, in its own folder
    levers: set[tuple[str, int]] = set()
    for stream in study["lever_commands"]():
        for line in stream.split(" && "):
            args = benchmark.build_parser().parse_args(shlex.split(line)[3:])
            (method,) = check_methods(args.methods)
            name = args.out.rsplit("/", 1)[-1]
            _, preset, extra = study["LEVERS"][name]
            overrides = benchmark.parse_overrides(args.set, [method])[method]
            assert method == preset and args.steps == study["STEPS"]
            assert overrides == {**overrides, **extra, "batch_size": 16}
            HarmoDTConfig.from_preset(method, **overrides).validate()
            levers |= {(name, seed) for seed in args.seeds}
    assert levers == {(n, s) for n in study["LEVERS"] for s in study["SEEDS"]}


def test_the_harmony_study_lever_table_pairs_each_lever(tmp_path: Path) -> None:
    """A lever's row pairs its cells seed by seed against the study's cells,
    read from the two folders the commands write to."""
    study = runpy.run_path(str(ROOT / "examples" / "harmony_study.py"))
    slug = study["DATASET_SLUG"]

    def write(folder: Path, method: str, successes: dict[int, float]) -> None:
        (folder / slug / method).mkdir(parents=True)
        for seed, success in successes.items():
            cell = {"seed": seed, "label": method, "success_mean": success}
            cell |= {"return_mean": 1000 * success, "train_time_s": 90.0}
            cell |= {"eval_time_s": 30.0}
            (folder / slug / method / f"seed{seed}.json").write_text(json.dumps(cell))

    results, levers = tmp_path / "study", tmp_path / "levers"
    write(results, "harmodt-plus-v0", {0: 0.50, 1: 0.60, 2: 0.70})
    write(results, "mtdt", {0: 0.40, 1: 0.40, 2: 0.40})
    name, (label, preset, _) = next(iter(study["LEVERS"].items()))
    write(levers / name, preset, {0: 0.55, 1: 0.65, 2: 0.70})
    text = study["lever_table"](results, levers)
    (row,) = [line for line in text.splitlines() if line.startswith(f"| {label} |")]
    cols = [c.strip() for c in row.strip("|").split("|")]
    assert cols[1:4] == ["3", "63.3 ± 7.6", "55.0, 65.0, 70.0"]
    by_ref = dict(zip(study["LEVER_REFERENCES"], cols[5:], strict=True))
    assert by_ref["harmodt-plus-v0"].startswith("+3.3 [")  # (5 + 5 + 0) / 3
    assert by_ref["mtdt"].startswith("+23.3 [")
    assert by_ref["sparse-static"] == "—"  # no cells, no interval
    assert "(3 cells, 0.10 CPU-h)" in text
    assert study["lever_table"](results, tmp_path / "none") == ""


def test_the_harmony_study_states_its_evaluation_noise() -> None:
    """The binomial standard error of a cell's mean success over tasks, and
    of a paired difference, at the goals run and at 50."""
    study = runpy.run_path(str(ROOT / "examples" / "harmony_study.py"))
    half = {"budget": {"eval_episodes": 20}, "success": {"a": 0.5, "b": 0.5}}
    solved = {"budget": {"eval_episodes": 20}, "success": {"a": 1.0, "b": 0.0}}
    text = study["_evaluation_noise"]([half, solved])
    # half: 100 * sqrt(2 * 0.25 / 20) / 2 = 7.91; solved: 0; mean 3.95
    assert "mean success 3.95 points (range 0.00-7.91)" in text
    assert "paired difference 5.59; with 50 goals per task 3.54." in text
