"""The two evaluation protocols of the benchmark harness: Meta-World's (the
final checkpoint on ``--eval-episodes`` goals per task) and the HarmoDT
release's (the best of the learning curve's evaluations, on
``--curve-episodes`` goals per task), and the selection bias between them.

One real HarmoDT cell (the MTDT preset, tiny, 4 steps, a curve point every 2
steps on 1 goal per task, the final checkpoint on 2) runs through the command
line on the session's tiny recipe dataset; the protocols table is checked on
hand-made cell records and on the old-format cells committed under
``docs/benchmarks/``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import harmodt_algo  # noqa: F401  (before d3rlpy use)
from harmodt_algo import benchmark
from harmodt_algo.benchmark import BenchmarkError, BenchmarkSettings, cell_path, report
from harmodt_algo.benchmark.protocols import protocol_rows
from harmodt_algo.evaluation.envs import goal_indices

from ._matrix import OVERRIDES, ROOT

COMMITTED = ROOT / "docs" / "benchmarks" / "study-20k"
TASKS = ("reach-v3", "button-press-topdown-v3")
MTDT = OVERRIDES["mtdt"]  # the harness tests' tiny transformer


# ------------------------------------------------------------- a real cell


@dataclass
class Run:
    args: list[str]
    out: Path
    record: dict[str, Any]


def _args(dataset_id: str, out: Path, curve_episodes: int) -> list[str]:
    args = ["run", "--methods", "mtdt", "--datasets", dataset_id, "--steps", "4"]
    args += ["--eval-episodes", "2", "--eval-max-steps", "20", "--curve-every", "2"]
    args += ["--curve-episodes", str(curve_episodes), "--out", str(out)]
    return args + [f"--set=mtdt.{k}={json.dumps(v)}" for k, v in MTDT.items()]


@pytest.fixture(scope="module")
def run(
    _tiny_recipe_store: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    store, dataset_id = _tiny_recipe_store
    out = tmp_path_factory.mktemp("protocols")
    args = _args(dataset_id, out, curve_episodes=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(store))
        assert benchmark.main(args) == 0
    record = json.loads(cell_path(out, dataset_id, "mtdt", 0).read_text())
    yield Run(args, out, record)


def test_a_cell_records_per_task_curve_points_on_their_own_goals(run: Run) -> None:
    record = run.record
    curve = record["curve"]
    # every curve_every steps, and the last step (the release's last evaluation)
    assert [p["step"] for p in curve] == [2, 4]
    for point in curve:
        assert point["n_episodes"] == 1  # --curve-episodes, not --eval-episodes
        assert set(point["success"]) == set(TASKS)
        assert all(rate in (0.0, 1.0) for rate in point["success"].values())
        mean = float(np.mean(list(point["success"].values())))
        assert point["success_mean"] == pytest.approx(mean)
    # the final checkpoint: its own evaluation on 2 goals per task
    assert record["evaluation"]["n_episodes"] == 2
    for task in TASKS:
        goals = [e["goal"] for e in record["evaluation"]["tasks"][task]["episodes"]]
        assert goals == goal_indices(2, 0)
    assert record["budget"]["curve_every"] == 2
    assert record["budget"]["curve_episodes"] == 1


def test_curve_goals_are_the_first_of_the_final_evaluations() -> None:
    for seed in (0, 1, 7):
        assert goal_indices(10, seed) == goal_indices(50, seed)[:10]
    assert goal_indices(10, 0) != goal_indices(10, 1)


def test_another_curve_episodes_is_another_budget(
    run: Run,
    tiny_recipe_dataset: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = cell_path(run.out, run.record["dataset_id"], "mtdt", 0)
    before = path.read_bytes()
    capsys.readouterr()
    assert benchmark.main(run.args) == 0  # the same settings: reused
    assert "skip" in capsys.readouterr().out
    # the default (the final's goal count) is another budget than 1 goal
    other = _args(run.record["dataset_id"], run.out, curve_episodes=2)
    assert benchmark.main(other) == 2
    err = capsys.readouterr().err
    assert "different budget" in err and "'curve_episodes': 1" in err
    assert path.read_bytes() == before


def test_stop_on_success_is_recorded_and_is_another_budget(
    run: Run,
    _tiny_recipe_store: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A cell evaluated with episodes cut at their first success says so in
    its budget and its evaluations, and never reuses a full-length cell."""
    assert "eval_stop_on_success" not in BenchmarkSettings(steps=4).budget("mtdt")
    dataset_id = run.record["dataset_id"]
    capsys.readouterr()
    assert benchmark.main([*run.args, "--eval-stop-on-success"]) == 2
    assert "different budget" in capsys.readouterr().err
    store, _ = _tiny_recipe_store
    args = [*_args(dataset_id, tmp_path, curve_episodes=1), "--eval-stop-on-success"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(store))
        assert benchmark.main(args) == 0
    record = json.loads(cell_path(tmp_path, dataset_id, "mtdt", 0).read_text())
    assert record["budget"]["eval_stop_on_success"] is True
    assert record["evaluation"]["stop_on_success"] is True
    # same goals, same success definition: no episode runs past its success
    for task in TASKS:
        for episode in record["evaluation"]["tasks"][task]["episodes"]:
            assert episode["success"] or episode["length"] == 20


def test_curve_episodes_alone_and_too_many_goals_are_refused(
    minari_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["run", "--methods", "mtdt", "--datasets", "MT5:expert", "--steps", "4"]
    assert benchmark.main([*base, "--curve-episodes", "10"]) == 2
    assert "curve_episodes needs curve_every" in capsys.readouterr().err
    many = [*base, "--curve-every", "2", "--curve-episodes", "51"]
    assert benchmark.main(many) == 2
    assert "curve_episodes must be <= 50" in capsys.readouterr().err
    # curve_episodes equal to eval_episodes is the default: the same budget
    same = BenchmarkSettings(steps=4, eval_episodes=10, curve_every=2)
    explicit = BenchmarkSettings(
        steps=4, eval_episodes=10, curve_every=2, curve_episodes=10
    )
    assert same.budget("mtdt") == explicit.budget("mtdt")
    assert "curve_episodes" not in same.budget("mtdt")
    with pytest.raises(BenchmarkError, match="positive int"):
        BenchmarkSettings(steps=4, curve_every=2, curve_episodes=0).validate()


def test_the_report_of_a_real_cell_has_both_protocols(run: Run, tmp_path: Path) -> None:
    paths = report(run.out, tmp_path, plots=False)
    assert tmp_path / "protocols.csv" in paths
    text = (tmp_path / "benchmark.md").read_text()
    (line,) = [row for row in text.splitlines() if "| MTDT | final" in row]
    assert "final, 2 goals/task" in line
    assert "best of 2 evaluations, 1 goals/task" in line
    with (tmp_path / "protocols.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    best = max(p["success_mean"] for p in run.record["curve"])
    assert float(row["best_success"]) == pytest.approx(best)
    assert float(row["final_success"]) == pytest.approx(run.record["success_mean"])
    assert (row["final_goals"], row["curve_goals"], row["evaluations"]) == (
        "2",
        "1",
        "2",
    )


# ----------------------------------------------------- hand-made records


DATASET = "metaworld-v3/mt5/near-optimal-v0"


def _cell(
    method: str,
    seed: int,
    final: float,
    curve: list[float] | None,
    *,
    eval_episodes: int = 50,
    curve_episodes: int | None = 10,
) -> dict[str, Any]:
    """A cell record with what the report reads; ``curve`` the mean success
    at steps 5000, 10000, ... (the last is the final step's point)."""
    steps = 5000 * len(curve or [1])
    budget: dict[str, Any] = {"steps": steps, "eval_episodes": eval_episodes}
    points = None
    if curve is not None:
        budget["curve_every"] = 5000
        if curve_episodes is not None:  # None: a cell of the old format
            budget["curve_episodes"] = curve_episodes
        points = [
            {"step": 5000 * (i + 1), "success_mean": value}
            | (
                {"success": {"reach-v3": value}, "n_episodes": curve_episodes}
                if curve_episodes is not None
                else {}
            )
            for i, value in enumerate(curve)
        ]
    return {
        "dataset_id": DATASET,
        "dataset": {"suite": "MT5", "quality": "near-optimal", "tasks": ["reach-v3"]},
        "method": method,
        "label": method,
        "seed": seed,
        "budget": budget,
        "steps": budget["steps"],
        "batch_size": 16,
        "device": "cpu",
        "success_mean": final,
        "return_mean": 100.0,
        "success": {"reach-v3": final},
        "return": {"reach-v3": 100.0},
        "curve": points,
        "train_time_s": 1.0,
        "eval_time_s": 1.0,
        "param_count": 10,
        "active_param_count": None,
    }


def _hand_made() -> list[dict[str, Any]]:
    """MTDT with curves (3 evaluations: a peak mid-run on seed 0, the last
    point highest on seed 1, the first on seed 2), MTBC without."""
    return [
        _cell("mtdt", 0, 0.50, [0.40, 0.60, 0.55]),
        _cell("mtdt", 1, 0.70, [0.30, 0.50, 0.70]),
        _cell("mtdt", 2, 0.40, [0.60, 0.45, 0.50]),
        *[_cell("mtbc", s, 0.3 + 0.1 * s, None) for s in range(3)],
    ]


def test_best_is_the_max_over_points_and_the_bias_is_paired() -> None:
    mtdt, mtbc = protocol_rows(_hand_made())
    assert (mtdt.method, mtbc.method) == ("mtdt", "mtbc")
    assert mtdt.final == pytest.approx({0: 50.0, 1: 70.0, 2: 40.0})
    assert mtdt.best == pytest.approx({0: 60.0, 1: 70.0, 2: 60.0})
    assert mtdt.best_step == {0: 10000, 1: 15000, 2: 5000}
    assert (mtdt.final_goals, mtdt.curve_goals, mtdt.evaluations) == (
        (50,),
        (10,),
        (3,),
    )
    bias = mtdt.bias()
    assert bias is not None and bias.n == 3
    # per seed: +10, 0, +20 -> mean 10, sample std 10, t(2) = 4.303
    assert bias.mean == pytest.approx(10.0)
    assert bias.half_width == pytest.approx(4.303 * 10.0 / math.sqrt(3))
    # MTBC has no curve: (a) only
    assert mtbc.best == {} and mtbc.bias() is None
    assert mtbc.final == pytest.approx({0: 30.0, 1: 40.0, 2: 50.0})


def test_the_protocols_table_is_labelled(tmp_path: Path) -> None:
    results = tmp_path / "results"
    for cell in _hand_made():
        path = cell_path(results, DATASET, cell["method"], cell["seed"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cell))
    paths = report(results, tmp_path / "docs", plots=False)
    assert tmp_path / "docs" / "protocols.csv" in paths
    text = (tmp_path / "docs" / "benchmark.md").read_text()
    assert "## Protocols" in text
    rows = {
        line.split(" | ")[1]: line
        for line in text.splitlines()
        if line.startswith("| MT5 near | ")
    }
    assert rows["MTDT"] == (
        "| MT5 near | MTDT | final, 50 goals/task | 53.3 ± 12.5 | best of 3 "
        "evaluations, 10 goals/task | 63.3 ± 4.7 | +10.0 [-14.8, +34.8] (n=3) |"
    )
    assert rows["MTBC"] == (
        "| MT5 near | MTBC | final, 50 goals/task | 40.0 ± 8.2 | no curve | — | — |"
    )


def test_one_seed_has_a_bias_without_an_interval(tmp_path: Path) -> None:
    (row,) = protocol_rows([_cell("mtdt", 3, 0.2, [0.1, 0.5])])
    bias = row.bias()
    assert bias is not None and bias.mean == pytest.approx(30.0) and bias.n == 1


def test_old_format_cells_take_their_goals_from_the_budget() -> None:
    old = [_cell("mtdt", s, 0.5, [0.4, 0.6, 0.5], curve_episodes=None) for s in (0, 1)]
    (row,) = protocol_rows(old)
    assert row.curve_goals == (50,)  # the curve ran on the final's goals
    assert row.best == pytest.approx({0: 60.0, 1: 60.0})
    bias = row.bias()
    assert bias is not None and bias.mean == pytest.approx(10.0)


def test_committed_cells_still_report(tmp_path: Path) -> None:
    cells = [json.loads(p.read_text()) for p in sorted(COMMITTED.rglob("seed*.json"))]
    assert cells and all("n_episodes" not in c["curve"][0] for c in cells)
    report(COMMITTED, tmp_path, plots=False)
    text = (tmp_path / "benchmark.md").read_text()
    for row in protocol_rows(cells):
        group = [c for c in cells if c["method"] == row.method]
        finals = [100 * c["success_mean"] for c in group]
        # the main table as before: mean ± std (ddof 0) of the final checkpoints
        label = benchmark.METHOD_LABELS.get(row.method, row.method)
        main = f"| {label} | {np.mean(finals):.1f} ± {np.std(finals):.1f} |"
        assert any(line.startswith(main) for line in text.splitlines()), main
        for cell in group:
            best = max(p["success_mean"] for p in cell["curve"])
            assert row.best[cell["seed"]] == pytest.approx(100 * best)
            assert row.final[cell["seed"]] == pytest.approx(100 * cell["success_mean"])
        assert row.curve_goals == row.final_goals == (20,)
        assert f"best of {len(group[0]['curve'])} evaluations, 20 goals/task" in text


def test_the_paper_study_commands_are_valid() -> None:
    """Every part's commands parse, run both protocols, train as the release
    (batch 8) and cover each (method, seed, size, steps) of the part once."""
    import runpy
    import shlex
    from itertools import zip_longest

    from harmodt_algo import HarmoDTConfig, benchmark
    from harmodt_algo.benchmark.methods import check_methods

    root = Path(__file__).resolve().parents[3]
    study = runpy.run_path(str(root / "examples" / "paper_study.py"))
    for part, spec in study["PARTS"].items():
        seen: set[tuple[str, tuple[int, ...], int, str]] = set()
        for stream in study["commands"](part):
            for line in stream.split("; "):
                args = benchmark.build_parser().parse_args(shlex.split(line)[3:])
                (method,) = check_methods(args.methods)
                overrides = benchmark.parse_overrides(args.set, [method])[method]
                assert args.eval_episodes == 50 and args.curve_episodes == 10
                assert args.curve_every == 5000 < args.steps
                assert args.threads == 1 and args.datasets == spec.dataset
                assert args.eval_stop_on_success == part.startswith("mt30")
                if method == "mtbc":
                    assert overrides["batch_size"] == 256
                else:
                    assert overrides["batch_size"] == 8
                    HarmoDTConfig.from_preset(method, **overrides).validate()
                seen.add((method, tuple(args.seeds), args.steps, args.out))
        expected = {
            (m, (s,), steps, study["_out"](part, size, steps))
            for size, steps in spec.points
            for s in spec.seeds
            for m in spec.methods
        }
        assert seen == expected, part
        # the answering comparison runs first: its cells precede every other
        streams = [s.split("; ") for s in study["commands"](part)]
        cells = [c for pair in zip_longest(*streams) for c in pair if c]
        methods = [shlex.split(c)[shlex.split(c).index("--methods") + 1] for c in cells]
        if len(spec.points) == 1:
            first = [m in study["KEY_METHODS"] for m in methods]
            assert first == sorted(first, reverse=True), part


def test_the_paper_study_table_pairs_both_protocols(tmp_path: Path) -> None:
    import runpy

    root = Path(__file__).resolve().parents[3]
    study = runpy.run_path(str(root / "examples" / "paper_study.py"))
    folder = tmp_path / "replay" / "64x2-10k"
    for seed, (mtdt, paper) in enumerate([(0.5, 0.6), (0.4, 0.6), (0.6, 0.7)]):
        for method, final in (("mtdt", mtdt), ("harmodt-f-paper", paper)):
            cell = _cell(method, seed, final, [final - 0.1, final + 0.1])
            path = folder / DATASET.replace("/", "__") / method / f"seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cell))
    text = study["tables"](tmp_path)
    (row,) = [line for line in text.splitlines() if line.startswith("| HarmoDT-F (rel")]
    cols = [c.strip() for c in row.strip("|").split("|")]
    assert cols[1:4] == ["3", "63.3", "73.3"]  # (a) final, (b) best = final + 10
    assert cols[4].startswith("+10.0 [+10.0, +10.0]")  # b − a, every seed +10
    assert cols[5].startswith("+13.3 [") and cols[6].startswith("+13.3 [")
    assert "6 cells, " in text and "CPU-hours" in text  # the cost line
    per_task = text.split("Per task, protocol (a)")[1].splitlines()
    assert per_task[2] == "| task | HarmoDT-F (release regime) | MTDT |"


def _write_study_cells(root: Path, *parts: tuple[str, str, tuple[float, ...]]) -> None:
    """(part, method, final success per seed) as paper-study cells at 64x2-10k
    (each with one curve point, its final value)."""
    for part, method, finals in parts:
        for seed, final in enumerate(finals):
            cell = _cell(method, seed, final, [final])
            folder = root / part / "64x2-10k" / DATASET.replace("/", "__")
            path = folder / method / f"seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cell))


def test_a_variant_part_is_tabled_beside_the_cells_it_pairs_with(
    tmp_path: Path,
) -> None:
    import runpy

    root = Path(__file__).resolve().parents[3]
    study = runpy.run_path(str(root / "examples" / "paper_study.py"))
    spec = study["PARTS"]["noprompt"]
    assert spec.paired_with == "replay" and "prompt_length=0" in spec.options
    _write_study_cells(
        tmp_path,
        ("replay", "mtdt", (0.2, 0.3)),
        ("replay", "harmodt-f-paper", (0.1, 0.2)),
        ("noprompt", "harmodt-f-paper", (0.4, 0.5)),
    )
    text = study["tables"](tmp_path).split("without its prompt\n")[1]
    rows = [line for line in text.splitlines() if line.startswith("| HarmoDT-F")]
    variant, paired = rows[0], rows[1]
    assert variant.startswith(
        "| HarmoDT-F (release regime) without its prompt | 2 | 45.0"
    )
    assert paired.startswith("| HarmoDT-F (release regime) | 2 | 15.0")
    # the variant's paired gap to the replay part's MTDT: +20 on both seeds
    assert "| +20.0 [+20.0, +20.0]" in variant


def test_the_ablation_study_commands_and_tables(tmp_path: Path) -> None:
    import runpy
    import shlex

    from harmodt_algo import HarmoDTConfig, benchmark
    from harmodt_algo.benchmark.methods import check_methods

    root = Path(__file__).resolve().parents[3]
    study = runpy.run_path(str(root / "examples" / "ablation_study.py"))
    seen = set()
    for stream in study["commands"]():
        for line in stream.split(" && "):
            args = benchmark.build_parser().parse_args(shlex.split(line)[3:])
            (method,) = check_methods(args.methods)
            overrides = benchmark.parse_overrides(args.set, [method])[method]
            row = args.out.rsplit("/", 1)[-1]
            label, preset, extra, _ = study["ROWS"][row]
            assert method == preset and overrides == {**overrides, **extra}
            assert overrides["batch_size"] == 16 and args.steps == 10_000
            HarmoDTConfig.from_preset(method, **overrides).validate()
            seen.add((row, args.seeds[0]))
    expected = {(r, s) for r, (*_, seeds) in study["ROWS"].items() for s in seeds}
    assert seen == expected
    # the easiest and hardest tasks by the data's own success, in suite order
    names = [f"t{i}" for i in range(12)]
    meta = {
        "task_names": names,
        "task_stats": {t: {"success_rate": i / 12} for i, t in enumerate(names)},
    }
    easy, hard = study["difficulty_sets"](meta, size=3)
    assert easy == ["t9", "t10", "t11"] and hard == ["t0", "t1", "t2"]
    # a row paired against the harmony study's cells
    slug = study["STUDY"]["DATASET_SLUG"]
    for folder, method, values in (
        (tmp_path / "study", "mtdt", (40.0, 50.0)),
        (tmp_path / "abl" / "pcgrad", "pcgrad", (45.0, 60.0)),
    ):
        for seed, value in enumerate(values):
            path = folder / slug / method / f"seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"seed": seed, "success_mean": value / 100}))
    text = study["table"](tmp_path / "abl", tmp_path / "study")
    (row,) = [line for line in text.splitlines() if line.startswith("| PCGrad |")]
    assert "| 2 | 52.5 | +7.5 [" in row and row.endswith("| — |")


def test_a_paired_part_compares_with_the_paired_method(tmp_path: Path) -> None:
    """``shared`` (HarmoDT+ with shared-layer update masks) is tabled beside
    the replay part's HarmoDT+ with a paired gap to it."""
    import runpy

    root = Path(__file__).resolve().parents[3]
    study = runpy.run_path(str(root / "examples" / "paper_study.py"))
    spec = study["PARTS"]["shared"]
    assert spec.paired_with == "replay" and spec.paired_methods == ("harmodt-plus",)
    _write_study_cells(
        tmp_path,
        ("replay", "mtdt", (0.2, 0.3)),
        ("replay", "harmodt-plus", (0.3, 0.4)),
        ("shared", "harmodt-plus-shared", (0.5, 0.5)),
    )
    label = study["METHOD_LABELS"]["harmodt-plus-shared"]
    section = study["tables"](tmp_path).split(f": {label}\n")[1]
    head = next(line for line in section.splitlines() if line.startswith("| method"))
    assert "Δ(a) vs harmodt-plus" in head
    row = next(line for line in section.splitlines() if line.startswith(f"| {label} "))
    # paired gaps over seeds 0, 1: vs MTDT +30, +20; vs HarmoDT+ +20, +10
    assert "| +25.0 [" in row and "| +15.0 [" in row


def test_the_paper_study_commands_of_some_methods(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import runpy

    root = Path(__file__).resolve().parents[3]
    study = runpy.run_path(str(root / "examples" / "paper_study.py"))
    lines = " ; ".join(study["commands"]("mt30", "python", ["mtdt", "sparse-static"]))
    cells = [c for c in lines.split(";") if c.strip()]
    assert len(cells) == 2 * len(study["PARTS"]["mt30"].seeds)
    assert all("--methods mtdt " in c or "--methods sparse-static " in c for c in cells)
    with pytest.raises(ValueError, match="no method \\['nope'\\]"):
        study["commands"]("mt30", "python", ["nope"])
