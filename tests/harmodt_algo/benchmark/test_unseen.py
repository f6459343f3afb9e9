"""The benchmark's held-out protocol (``run --held-out``) on tiny real data.

One module-scoped matrix trains HarmoDT-F, MTDT and MTBC (4 gradient steps,
one evaluation episode of 20 steps per task) on a 2-task recipe dataset and
adapts them to a disjoint 2-task held-out dataset (both built by the harness:
2 expert episodes x 40 steps per task) from its first episode per task; the
same HarmoDT-F cell also runs without ``--held-out``. Plumbing, not learning.
"""

from __future__ import annotations

import csv
import json
import runpy
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

import harmodt_algo  # noqa: F401  (before d3rlpy use)
from harmodt_algo import benchmark
from harmodt_algo.benchmark import (
    BenchmarkError,
    BenchmarkSettings,
    HeldOut,
    cell_path,
    check_methods,
    parse_adapt,
    parse_dataset,
    report,
    run_matrix,
)

from ._matrix import OVERRIDES, RESUMABLE, ROOT, comparable

TRAIN = "reach-v3+button-press-topdown-v3:expert"
HELD = "push-v3+drawer-close-v3:expert"
HELD_TASKS = ["push-v3", "drawer-close-v3"]
SIZES = {"mtdt": OVERRIDES["mtdt"], "mtbc": OVERRIDES["mtbc"], "harmodt-f": RESUMABLE}
HELD_OUT = HeldOut(HELD, adapt=("vote", "tune", "finetune"), demos=1, tune_steps=3)
SETTINGS = BenchmarkSettings(
    steps=4, eval_episodes=1, eval_max_steps=20, overrides=SIZES
)
HELD_SETTINGS = replace(SETTINGS, held_out=HELD_OUT, save_models=True)
BUILD: dict[str, Any] = {"episodes_per_task": 2, "max_episode_steps": 40}


@dataclass
class Runs:
    store: Path
    held: Path  # results with --held-out
    plain: Path  # the HarmoDT-F cell without
    train_id: str
    held_id: str

    def cell(self, method: str, out: Path | None = None) -> dict[str, Any]:
        path = cell_path(out or self.held, self.train_id, method, 0)
        data: dict[str, Any] = json.loads(path.read_text())
        return data


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    store = tmp_path_factory.mktemp("minari")
    held, plain = tmp_path_factory.mktemp("held"), tmp_path_factory.mktemp("plain")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(store))
        quiet = {"log": lambda _: None, **BUILD}
        summary = run_matrix(
            "harmodt-f,mtdt,mtbc", [TRAIN], [0], held, HELD_SETTINGS, **quiet
        )
        assert summary.ok and len(summary.ran) == 3
        assert run_matrix("harmodt-f", [TRAIN], [0], plain, SETTINGS, **quiet).ok
    ids = (parse_dataset(TRAIN).dataset_id, parse_dataset(HELD).dataset_id)
    yield Runs(store, held, plain, *ids)


@pytest.fixture
def store(runs: Runs, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(runs.store))
    return runs.store


def test_a_held_out_cell_records_unseen_success_per_adaptation(runs: Runs) -> None:
    cell = runs.cell("harmodt-f")
    unseen = cell["unseen"]
    assert unseen["dataset_id"] == runs.held_id
    assert unseen["tasks"] == HELD_TASKS and unseen["demos_per_task"] == 1
    adapted = ["vote", "tune", "finetune"]
    assert list(unseen["adapt"]) == adapted and not unseen["not_applicable"]
    for result in unseen["adapt"].values():
        assert list(result["success"]) == list(result["return"]) == HELD_TASKS
        assert set(result["target_returns"]) == set(HELD_TASKS)
        assert 0.0 <= result["success_mean"] <= 1.0
        assert result["adapt_time_s"] >= 0
    assert unseen["eval_time_s"] > 0
    assert set(unseen["data_success"]) == set(HELD_TASKS)
    assert cell["budget"]["held_out"] == {
        "dataset_id": runs.held_id,
        "adapt": adapted,
        "demos": 1,
        "threshold": 0.5,
        "tune_steps": 3,
    }
    # the baselines: MTDT zero-shot, MTBC not applicable (one-hot task input)
    mtdt = runs.cell("mtdt")["unseen"]
    assert list(mtdt["adapt"]) == ["zero-shot"]
    assert list(mtdt["adapt"]["zero-shot"]["success"]) == HELD_TASKS
    assert runs.cell("mtdt")["budget"]["held_out"]["adapt"] == ["zero-shot"]
    mtbc = runs.cell("mtbc")
    assert mtbc["unseen"]["adapt"] == {}
    assert "one-hot" in mtbc["unseen"]["not_applicable"]["add_task"]
    assert mtbc["budget"]["held_out"] == {"dataset_id": runs.held_id, "adapt": []}


def test_adapting_leaves_the_trained_model_and_its_seen_results(runs: Runs) -> None:
    import d3rlpy

    held, plain = runs.cell("harmodt-f"), runs.cell("harmodt-f", runs.plain)
    assert set(held) - set(plain) == {"unseen"}
    assert held["budget"].pop("held_out") and held["budget"] == plain["budget"]
    mine = comparable({k: v for k, v in held.items() if k != "unseen"})
    theirs = comparable(plain)
    for key in ("success", "return", "final_metrics", "masks", "evaluation"):
        assert mine[key] == theirs[key], key
    assert mine == theirs  # all but the wall clock
    # the saved model is the trained one: no held-out task was added to it
    path = cell_path(runs.held, runs.train_id, "harmodt-f", 0).with_suffix(".d3")
    assert list(d3rlpy.load_learnable(str(path)).task_names) == list(held["success"])


def test_resume_never_mixes_held_out_settings(runs: Runs, store: Path) -> None:
    quiet = {"log": lambda _: None, **BUILD}
    before = cell_path(runs.held, runs.train_id, "harmodt-f", 0).stat().st_mtime_ns
    more_demos = replace(HELD_SETTINGS, held_out=replace(HELD_OUT, demos=2))
    for out, settings in (
        (runs.held, SETTINGS),  # held-out cells for a plain run
        (runs.plain, HELD_SETTINGS),  # a plain cell for a held-out run
        (runs.held, more_demos),  # other held-out settings
    ):
        with pytest.raises(BenchmarkError, match="different budget.*--overwrite"):
            run_matrix("harmodt-f", [TRAIN], [0], out, settings, **quiet)
    summary = run_matrix(
        "harmodt-f,mtdt", [TRAIN], [0], runs.held, HELD_SETTINGS, **quiet
    )
    assert len(summary.skipped) == 2 and not summary.ran
    # MTBC's budget holds only the dataset: other adaptation options reuse it
    vote = replace(HELD_SETTINGS, held_out=replace(HELD_OUT, adapt=("vote",), demos=2))
    assert run_matrix("mtbc", [TRAIN], [0], runs.held, vote, **quiet).skipped
    after = cell_path(runs.held, runs.train_id, "harmodt-f", 0).stat().st_mtime_ns
    assert after == before


def test_the_report_has_an_unseen_table_only_for_held_out_cells(
    runs: Runs, tmp_path: Path
) -> None:
    paths = report(runs.held, tmp_path / "held", plots=False)
    assert (tmp_path / "held" / "unseen.csv") in paths
    text = (tmp_path / "held" / "benchmark.md").read_text()
    assert f"## Unseen tasks: `{runs.train_id}` → `{runs.held_id}`" in text
    lines = text.splitlines()
    rows = ("| HarmoDT-F | vote |", "| HarmoDT-F | finetune |", "| MTDT | zero-shot |")
    for row in rows:
        assert sum(line.startswith(row) for line in lines) == 2  # + per task
    mtbc = next(line for line in lines if line.startswith("| MTBC | — |"))
    assert mtbc.split(" | ")[3] == "n/a"
    assert "- MTBC takes the task as a one-hot input" in text
    assert "| method | adaptation | push-v3 | drawer-close-v3 |" in text
    with (tmp_path / "held" / "unseen.csv").open() as fh:
        unseen = list(csv.DictReader(fh))
    assert len(unseen) == 8  # (vote, tune, finetune, zero-shot) x 2 tasks
    assert {r["task"] for r in unseen} == set(HELD_TASKS)

    report(runs.plain, tmp_path / "plain", plots=False)
    assert "Unseen" not in (tmp_path / "plain" / "benchmark.md").read_text()
    assert not (tmp_path / "plain" / "unseen.csv").exists()


def test_a_held_out_dataset_without_success_is_tabled_by_its_return(
    runs: Runs, tmp_path: Path
) -> None:
    # the cells relabelled as a MuJoCo recipe's data facts would say
    out = tmp_path / "results"
    for method in ("harmodt-f", "mtdt"):
        cell = runs.cell(method)
        cell["dataset"]["measure"] = "return"
        for k, result in enumerate(cell["unseen"]["adapt"].values()):
            result["return"] = {t: 100.0 + k for t in result["return"]}
            result["return_mean"] = 100.0 + k
        path = cell_path(out, runs.train_id, method, 0)
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(cell))
    report(out, tmp_path / "docs", plots=False)
    text = (tmp_path / "docs" / "benchmark.md").read_text()
    assert "Mean return over the held-out tasks" in text
    assert "| HarmoDT-F | tune | " in text and "| 101.0 |" in text
    assert "### Per-task unseen return" in text
    assert "| HarmoDT-F | tune | 101 | 101 |" in text


def test_the_ml10_example_commands_and_table(runs: Runs) -> None:
    ml10 = runpy.run_path(str(ROOT / "examples" / "unseen_ml10.py"))
    seen: list[tuple[str, int]] = []
    for stream in ml10["commands"]():
        for line in stream.split(" && "):
            args = benchmark.build_parser().parse_args(shlex.split(line)[3:])
            held = parse_dataset(args.held_out).dataset_id
            assert held == "metaworld-v3/ml10-test/sub-optimal-v0" and args.demos == 5
            assert args.steps == 10_000 and args.threads == 1
            seen += [(m, s) for m in check_methods(args.methods) for s in args.seeds]
    expected = [(m, s) for m in ("harmodt-f", "mtdt", "prompt-dt") for s in (0, 1, 2)]
    assert sorted(seen) == sorted(expected)  # each cell exactly once
    # the table, on the tiny held-out matrix of this module (one seed: no CI)
    slug = cell_path(runs.held, runs.train_id, "mtdt", 0).parent.parent.name
    text = ml10["table"](runs.held, slug)
    lines = text.splitlines()
    for row in (
        "| MTDT | zero-shot |",
        "| HarmoDT-F | vote |",
        "| HarmoDT-F | finetune |",
    ):
        assert sum(line.startswith(row) for line in lines) == 1, row
    assert "drawer-close-v3" in text and "3 cells" in text


def test_which_adaptations_each_method_gets() -> None:
    held = HeldOut(HELD, adapt=("vote", "tune"))
    assert held.adaptations("harmodt-f", {}) == {"vote": None, "tune": None}
    assert held.adaptations("mtdt", {}) == {"zero-shot": None}
    assert held.adaptations("prompt-dt", {}) == {"prompt": None}
    assert held.adaptations("mtbc", {}) == {}
    plus = held.adaptations("harmodt-plus", {})  # masks, but no prompt to tune
    assert plus["vote"] is None and "prompt_length 0" in str(plus["tune"])
    assert held.budget("harmodt-plus", {}) == {
        "dataset_id": parse_dataset(HELD).dataset_id,
        "adapt": ["vote", "tune"],
        "demos": 5,
        "threshold": 0.5,  # no tune_steps: tune does not run
    }
    assert held.recipe_tasks() == tuple(HELD_TASKS)


# ----------------------------------------------------------------- bad input


def test_held_out_tasks_that_were_trained_on_are_one_line(
    runs: Runs, store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import minari

    overlap = HELD.replace("push-v3", "reach-v3")
    args = ["run", "--methods", "mtdt", "--datasets", runs.train_id, "--steps", "1"]
    args += ["--held-out", overlap, "--out", str(tmp_path / "out")]
    assert benchmark.main(args) == 2
    with pytest.raises(FileNotFoundError):  # found before it was built
        minari.load_dataset(parse_dataset(overlap).dataset_id)
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "shares task(s) reach-v3" in err and "unseen" in err
    # more demonstrations than the held-out dataset has: one line too
    settings = BenchmarkSettings(
        steps=1, overrides=SIZES, held_out=HeldOut(runs.held_id, demos=3)
    )
    with pytest.raises(BenchmarkError, match="--demos 3: .* only 2 episode"):
        run_matrix("mtdt", [TRAIN], [0], tmp_path / "out", settings, log=lambda _: None)
    assert not list((tmp_path / "out").rglob("*.json"))


def test_bad_adapt_options_are_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(BenchmarkError, match="unknown adaptation.*'retrain'"):
        parse_adapt("vote,retrain")
    assert parse_adapt("Vote, tune,vote") == ("vote", "tune")
    with pytest.raises(BenchmarkError, match=r"threshold must be in \(0, 1\]"):
        BenchmarkSettings(steps=1, held_out=HeldOut(HELD, threshold=0.0)).validate()
    base = ["run", "--methods", "mtdt", "--datasets", TRAIN, "--steps", "1"]
    for extra, needle in (
        (["--held-out", HELD, "--adapt", "retrain"], "valid: vote, tune"),
        (["--demos", "3"], "--demos need(s) --held-out"),
        (["--held-out", HELD, "--demos", "0"], "demos must be a positive int"),
    ):
        assert benchmark.main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err
