"""python -m harmodt_algo.benchmark: run, resume and report from the command
line, and bad input in one line before any work.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import harmodt_algo  # noqa: F401  (before d3rlpy use)
from harmodt_algo import HarmoDTConfig, benchmark
from harmodt_algo.benchmark import (
    BenchmarkError,
    BenchmarkSettings,
    cell_path,
    check_methods,
    parse_dataset,
    run_matrix,
)

from ._matrix import OVERRIDES, SETTINGS, Matrix, load_json

# ----------------------------------------------------------------------- CLI


def test_cli_runs_a_transformer_baseline_resumes_and_reports(
    matrix: Matrix,
    store: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [
        "run",
        "--methods",
        "mtdt-d3rlpy",
        "--datasets",
        matrix.dataset_id,
        "--seeds",
        "1",
        "--steps",
        "4",
        "--eval-episodes",
        "1",
        "--out",
        str(tmp_path / "results"),
    ]
    args += [
        f"--set=mtdt-d3rlpy.{key}={json.dumps(value)}"
        for key, value in OVERRIDES["mtdt-d3rlpy"].items()
    ]
    assert benchmark.main(args) == 0
    cell = cell_path(tmp_path / "results", matrix.dataset_id, "mtdt-d3rlpy", 1)
    record = load_json(cell)
    assert record["algorithm"] == "DecisionTransformer"
    assert record["config"]["params"]["context_size"] == 5
    assert set(record["target_returns"]) == set(record["success"])

    assert benchmark.main(args) == 0  # resumed: nothing to do
    assert "skip" in capsys.readouterr().out

    docs = tmp_path / "docs"
    code = benchmark.main(["report", str(tmp_path / "results"), "--out", str(docs)])
    assert code == 0
    assert "MTDT (d3rlpy)" in (docs / "benchmark.md").read_text()


# ----------------------------------------------------------------- bad input


def test_unknown_method_lists_the_valid_ones(
    minari_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(BenchmarkError) as info:
        check_methods("mtbc,mtsac")
    message = str(info.value)
    assert "'mtsac'" in message
    for name in ("harmodt-f", "prompt-dt", "mtiql", "mtdt-d3rlpy", "mttd3bc"):
        assert name in message
    assert check_methods("MTBC, mtdt,mtbc") == ["mtbc", "mtdt"]
    from harmodt_algo import PRESETS
    from harmodt_algo.baselines import BASELINES

    assert len(check_methods("all")) == len(benchmark.METHODS)
    assert set(benchmark.METHODS) == set(PRESETS) | set(BASELINES)

    code = benchmark.main(
        ["run", "--methods", "mtsac", "--datasets", "MT5:expert", "--steps", "1"]
    )
    assert code == 2
    assert "valid methods" in capsys.readouterr().err


def test_unknown_dataset_says_how_to_build_it(
    minari_path: Path, tmp_path: Path
) -> None:
    with pytest.raises(BenchmarkError) as info:
        run_matrix(
            "mtbc",
            ["metaworld-v3/mt5/near-optimal-v0"],
            [0],
            tmp_path,
            SETTINGS,
            log=lambda _: None,
        )
    message = str(info.value)
    assert "no local dataset 'metaworld-v3/mt5/near-optimal-v0'" in message
    assert "harmodt-recipes metaworld --suite MT5 --quality near-optimal" in message
    assert "--build-missing" in message
    assert not list(tmp_path.rglob("*.json"))

    with pytest.raises(BenchmarkError, match="MT5:near-optimal"):
        run_matrix("mtbc", ["someone/else-v0"], [0], tmp_path, SETTINGS)
    with pytest.raises(BenchmarkError, match="SUITE:quality"):
        parse_dataset("mt5-near")
    with pytest.raises(BenchmarkError, match="quality"):
        parse_dataset("MT5:great")


def test_replay_data_is_never_built_by_the_harness(
    minari_path: Path, tmp_path: Path
) -> None:
    spec = parse_dataset("MT5:sub-optimal-replay")
    assert spec.dataset_id == "metaworld-v3/mt5/sub-optimal-replay-v0"
    assert spec.replay and not spec.buildable
    assert parse_dataset(spec.dataset_id).replay
    with pytest.raises(BenchmarkError) as info:
        run_matrix("mtbc", [spec], [0], tmp_path, SETTINGS, build_missing=True)
    message = str(info.value)
    assert "does not build it" in message
    assert "--suite MT5 --quality replay --env-steps-per-task N" in message
    assert not list(tmp_path.rglob("*.json"))


def test_mujoco_data_is_never_built_by_the_harness(
    minari_path: Path, tmp_path: Path
) -> None:
    spec = parse_dataset("harmodt-mujoco/ant-dir-test/expert-v0")
    with pytest.raises(BenchmarkError) as info:
        run_matrix("mtbc", [spec], [0], tmp_path, SETTINGS, build_missing=True)
    assert "'harmodt-recipes mujoco --benchmark ant-dir'" in str(info.value)
    assert not list(tmp_path.rglob("*.json"))


def test_seeds_out_of_range_fail_before_any_work(
    minari_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = "99999999999999999999"
    code = benchmark.main(
        ["run", "--methods", "mtdt", "--datasets", "MT5:expert", "--seeds", huge]
        + ["--steps", "1", "--out", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "seeds must be in [0, 4294967295]" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="seed must be in"):
        HarmoDTConfig(seed=2**32, task_names=["a"]).validate()


def test_bad_options_fail_before_any_work(minari_path: Path, tmp_path: Path) -> None:
    bad = BenchmarkSettings(steps=1, overrides={"mtbc": {"embed_size": 3}})
    with pytest.raises(BenchmarkError, match="mtbc: bad option.*batch_size"):
        run_matrix("mtbc", ["MT5:expert"], [0], tmp_path / "out", bad)
    reserved = BenchmarkSettings(steps=1, overrides={"mtdt": {"seed": 3}})
    with pytest.raises(BenchmarkError, match="--seeds"):
        reserved.validate()
    with pytest.raises(BenchmarkError, match="steps must be a positive int"):
        BenchmarkSettings(steps=0).validate()
    with pytest.raises(BenchmarkError, match="cpu, cuda or cuda:N"):
        BenchmarkSettings(steps=1, device="tpu").validate()
    with pytest.raises(BenchmarkError, match="no selected method has"):
        benchmark.parse_overrides(["embed_size=3"], ["mtbc"])
    assert benchmark.parse_overrides(["batch_size=3"], ["mtbc", "mtdt"]) == {
        "mtbc": {"batch_size": 3},
        "mtdt": {"batch_size": 3},
    }
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("embed_size=abc", "expected int"),
        ("embed_size=32.0", "expected int"),
        ("compile_graph=maybe", "expected true or false"),
        ("mtbc.hidden_units=[64", "expected a JSON value"),
    ],
)
def test_set_values_are_typed_like_the_option(item: str, needle: str) -> None:
    with pytest.raises(BenchmarkError, match=needle):
        benchmark.parse_overrides([item], ["mtdt", "mtbc"])


def test_set_values_use_the_one_shared_parser() -> None:
    overrides = benchmark.parse_overrides(
        [
            "compile_graph=no",
            "embed_size=32",
            'mtdt.task_schedule="mixed"',
            "mtdt.harmony_gamma=2",
            "mtbc.hidden_units=[64, 64]",
        ],
        ["mtdt", "mtbc"],
    )
    assert overrides["mtdt"]["compile_graph"] is False
    assert overrides["mtdt"]["embed_size"] == 32
    assert overrides["mtdt"]["task_schedule"] == "mixed"
    assert overrides["mtdt"]["harmony_gamma"] == 2.0
    assert isinstance(overrides["mtdt"]["harmony_gamma"], float)
    assert overrides["mtbc"]["hidden_units"] == [64, 64]


@pytest.mark.parametrize("device", ["nonsense", "gpu", "mps", "cuda", "cuda:1"])
def test_bad_devices_are_one_line(device: str) -> None:
    with pytest.raises(BenchmarkError, match="--device") as info:
        BenchmarkSettings(steps=1, device=device).validate()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["mtdt,", "mtdt,,mtbc", " ,mtdt"])
def test_a_stray_comma_is_an_error(text: str) -> None:
    with pytest.raises(BenchmarkError, match="empty item"):
        check_methods(text)
