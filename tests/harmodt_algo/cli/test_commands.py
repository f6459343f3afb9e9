"""``harmodt train | evaluate | info`` run in-process on the tiny recipe dataset.

One real training run (4 steps, 2 epochs, evaluated after each) is shared by
the tests of ``evaluate``, ``info`` and the plots (``tiny_run``, session scope):
it is the slowest part. Error paths check the CLI contract: exit code 2, ONE
line on stderr, no traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import harmodt_algo  # noqa: F401  (before d3rlpy: registers HarmoDT)

# isort: split
import d3rlpy
import numpy as np
import pytest
import torch
from d3rlpy.dataset import Episode, create_infinite_replay_buffer

from harmodt_algo import PRESETS, HarmoDT
from harmodt_algo.cli import MODEL_FILE, RUN_FILE, main

from ...conftest import TINY_STEPS, TINY_TASKS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: A model small enough to train in about a second; 2 epochs of 2 steps.
TINY_ARGS = [
    "--steps",
    "4",
    "--eval-every",
    "2",
    "--batch-size",
    "8",
    "--embed-size",
    "32",
    "--layers",
    "1",
    "--heads",
    "2",
    "--context",
    "5",
    "--eval-episodes",
    "1",
    "--set",
    "mask_interval=2",
    "--set",
    "mask_batch_size=4",
    "--set",
    "max_timestep=100",
    "--no-progress",
]


@dataclass(frozen=True)
class TinyRun:
    dataset_id: str
    root: Path
    run_dir: Path
    code: int
    stdout: str
    stderr: str

    @property
    def model(self) -> Path:
        return self.run_dir / MODEL_FILE


def read_csv(path: Path) -> list[tuple[int, int, float]]:
    rows = []
    for line in path.read_text().splitlines():
        epoch, step, value = line.split(",")
        rows.append((int(epoch), int(step), float(value)))
    return rows


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert err.startswith("harmodt: error: "), err
    assert err.strip().count("\n") == 0, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


def run_cli(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="session")
def tiny_run(
    _tiny_recipe_store: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> TinyRun:
    """``harmodt train`` on the tiny recipe dataset, once per session."""
    store, dataset_id = _tiny_recipe_store
    root = tmp_path_factory.mktemp("runs")
    out, err = io.StringIO(), io.StringIO()
    with (
        pytest.MonkeyPatch.context() as mp,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        mp.setenv("MINARI_DATASETS_PATH", str(store))
        code = main(
            ["train", "--dataset", dataset_id, *TINY_ARGS]
            + ["--logdir", str(root), "--name", "tiny"]
        )
    runs = sorted(root.iterdir())
    assert len(runs) == 1, runs
    return TinyRun(dataset_id, root, runs[0], code, out.getvalue(), err.getvalue())


# --------------------------------------------------------------------------- #
# train
# --------------------------------------------------------------------------- #


def test_train_writes_model_run_file_logs_and_plots(tiny_run: TinyRun) -> None:
    assert tiny_run.code == 0
    assert re.fullmatch(r"tiny_\d{14}", tiny_run.run_dir.name)

    algo = d3rlpy.load_learnable(str(tiny_run.model))
    assert isinstance(algo, HarmoDT)
    assert algo.task_names == TINY_TASKS
    assert algo.grad_step == 4
    assert algo.config.embed_size == 32 and algo.config.mask_interval == 2
    # the code-free copy beside it holds the same model
    from harmodt_algo.model_files import load_learnable_file

    safe = load_learnable_file(tiny_run.model.with_suffix(".safetensors"))
    assert safe.impl is not None and algo.impl is not None
    assert torch.equal(safe.impl.flat_masks(), algo.impl.flat_masks())

    run = json.loads((tiny_run.run_dir / RUN_FILE).read_text())
    assert run["dataset_id"] == tiny_run.dataset_id
    assert run["preset"] == "harmodt-f"
    assert (run["steps"], run["eval_every"], run["eval_episodes"]) == (4, 2, 1)
    assert run["status"] == "finished"
    assert run["overrides"]["max_timestep"] == 100
    assert list(run["final"]["tasks"]) == list(TINY_TASKS)

    # d3rlpy's file logger: one row per epoch, at steps 2 and 4
    loss = read_csv(tiny_run.run_dir / "loss.csv")
    assert [(e, s) for e, s, _ in loss] == [(1, 2), (2, 4)]
    assert all(np.isfinite(v) for _, _, v in loss)
    for task in TINY_TASKS:
        assert (tiny_run.run_dir / f"loss_{task}.csv").is_file()
        success = read_csv(tiny_run.run_dir / f"success_{task}.csv")
        assert [s for _, s, _ in success] == [2, 4]
        assert all(v in (0.0, 1.0) for _, _, v in success)  # 1 episode per task
        assert (tiny_run.run_dir / f"return_{task}.csv").is_file()
    # the evaluation went through the logger: its last row is the final result
    mean = read_csv(tiny_run.run_dir / "success_mean.csv")
    assert mean[-1][2] == pytest.approx(run["final"]["success_mean"])
    returns = read_csv(tiny_run.run_dir / "return_mean.csv")
    assert returns[-1][2] == pytest.approx(run["final"]["return_mean"])
    assert (tiny_run.run_dir / "model_4.d3").is_file()  # d3rlpy's snapshot
    # the training speed: 1 / the mean of d3rlpy's per-epoch time_step
    step_times = [v for _, _, v in read_csv(tiny_run.run_dir / "time_step.csv")]
    assert run["train_steps_per_s"] == pytest.approx(1 / np.mean(step_times), 0.01)
    assert f"training speed: {run['train_steps_per_s']:g} steps/s" in tiny_run.stdout

    for name in ("learning_curve.png", "task_success.png"):
        assert (tiny_run.run_dir / name).read_bytes()[:8] == PNG_MAGIC

    # the results table and the paths
    for task in TINY_TASKS:
        assert task in tiny_run.stdout
    assert "mean over tasks" in tiny_run.stdout
    assert "epoch 2/2 (step 4)" in tiny_run.stdout
    flat = "".join(tiny_run.stdout.split())  # rich may wrap long paths
    assert "".join(str(tiny_run.model).split()) in flat


def test_train_is_reproducible_and_runs_without_evaluation(
    tiny_run: TinyRun,
    tiny_recipe_dataset: object,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Same flags → same losses (evaluation does not touch the training RNGs);
    ``--eval-episodes 0`` trains without environments and says so; ``-v``
    shows d3rlpy's debug lines, which are hidden by default."""
    args = list(TINY_ARGS)
    args[args.index("--eval-episodes") + 1] = "0"
    code, out, err = run_cli(
        ["train", "-v", "--dataset", tiny_run.dataset_id, *args]
        + ["--logdir", str(tmp_path)],
        capsys,
    )
    assert code == 0
    assert "Fitting observation scaler" in out + err  # d3rlpy's debug line
    assert "Fitting observation scaler" not in tiny_run.stdout + tiny_run.stderr
    (run_dir,) = tmp_path.iterdir()
    assert run_dir.name.startswith("harmodt-f_custom-")  # default name
    assert read_csv(run_dir / "loss.csv") == read_csv(tiny_run.run_dir / "loss.csv")
    assert not (run_dir / "success_mean.csv").exists()
    assert (run_dir / MODEL_FILE).is_file()
    assert "not evaluated" in out
    assert "final" not in json.loads((run_dir / RUN_FILE).read_text())


# --------------------------------------------------------------------------- #
# evaluate
# --------------------------------------------------------------------------- #


def test_evaluate_prints_table_and_json(
    tiny_run: TinyRun, tiny_recipe_dataset: object, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        ["evaluate", str(tiny_run.model), "--episodes", "1", "--no-progress"], capsys
    )
    assert code == 0
    for task in TINY_TASKS:
        assert task in out
    assert "mean over tasks" in out and "success" in out

    code, out, _ = run_cli(
        ["evaluate", str(tiny_run.model), "--episodes", "2", "--json"], capsys
    )
    assert code == 0
    result = json.loads(out)  # JSON only on stdout (the progress bar is on stderr)
    assert result["dataset_id"] == tiny_run.dataset_id  # found via run.json
    assert result["grad_steps"] == 4
    assert set(result["tasks"]) == set(TINY_TASKS)
    for task in TINY_TASKS:
        entry = result["tasks"][task]
        assert 0.0 <= entry["success_rate"] <= 1.0
        assert len(entry["episodes"]) == 2
        assert len({e["goal"] for e in entry["episodes"]}) == 2  # distinct goals
        assert all(e["length"] == TINY_STEPS for e in entry["episodes"])
        assert result["target_returns"][task] > 0
    means = [result["tasks"][t]["mean_return"] for t in TINY_TASKS]
    assert result["return_mean"] == pytest.approx(float(np.mean(means)))
    assert result["env_steps"] == len(TINY_TASKS) * 2 * TINY_STEPS

    code, out, _ = run_cli(
        ["evaluate", str(tiny_run.model), "--episodes", "1", "--json"]
        + ["--tasks", "reach-v3", "--max-steps", "5", "--target-return", "10"],
        capsys,
    )
    assert code == 0
    result = json.loads(out)
    assert list(result["tasks"]) == ["reach-v3"]
    assert result["env_steps"] == 5
    assert result["target_returns"] == {"reach-v3": 10.0}


def test_evaluate_needs_a_dataset_without_run_file(
    tiny_run: TinyRun,
    tiny_recipe_dataset: object,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lone = tmp_path / "model.d3"
    shutil.copy(tiny_run.model, lone)
    # the model says which dataset its tasks came from: no run.json needed
    argv = ["--no-progress", "--episodes", "1", "--max-steps", "5"]
    code, out, err = run_cli(["evaluate", str(lone), *argv], capsys)
    assert code == 0, err
    # a model that does not (saved before it could) needs --dataset
    old = d3rlpy.load_learnable(str(tiny_run.model))
    old.config.task_datasets.clear()
    old.save(str(lone))
    code, out, err = run_cli(["evaluate", str(lone), "--no-progress"], capsys)
    assert_one_line_error(code, err, "--dataset", RUN_FILE)
    assert out == ""
    code, _, err = run_cli(
        ["evaluate", str(lone), "--tasks", "push-v3", "--dataset", tiny_run.dataset_id],
        capsys,
    )
    assert_one_line_error(code, err, "push-v3", "reach-v3")


# --------------------------------------------------------------------------- #
# info
# --------------------------------------------------------------------------- #


def test_info_shows_tasks_config_densities_and_overlap(
    tiny_run: TinyRun, capsys: pytest.CaptureFixture[str]
) -> None:
    algo = d3rlpy.load_learnable(str(tiny_run.model))
    flat = algo.impl.flat_masks()  # (T, N)
    expected = flat.float().mean(dim=1).tolist()  # (T,)

    code, out, _ = run_cli(["info", str(tiny_run.model)], capsys)
    assert code == 0
    for task in TINY_TASKS:
        assert task in out
    assert "harmodt-f (run.json)" in out
    assert "Jaccard" in out and "total turnover" in out
    assert f"{expected[0]:.3f}" in out  # the density column

    code, out, _ = run_cli(["info", str(tiny_run.model), "--json"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["tasks"] == list(TINY_TASKS)
    assert info["grad_steps"] == 4
    assert info["dataset_id"] == tiny_run.dataset_id
    assert info["config"]["embed_size"] == 32 and info["config"]["num_layers"] == 1
    for task, density in zip(TINY_TASKS, expected, strict=True):
        assert info["mask_density"][task] == pytest.approx(density)
        assert density == pytest.approx(1 - algo.config.sparsity, abs=0.02)
    params = info["parameters"]
    assert params["masked"] == flat.shape[1]
    assert 0 < params["active_per_task"]["reach-v3"] < params["masked"]
    assert params["masked"] < params["total"]
    overlap = info["mask_overlap"]
    inter = (flat[0] & flat[1]).sum().item()
    union = (flat[0] | flat[1]).sum().item()
    assert overlap["mean"] == pytest.approx(inter / union)
    assert overlap["min"] == overlap["max"] == pytest.approx(overlap["mean"])  # 1 pair
    assert overlap["matrix"][0][0] == 1.0 and overlap["matrix"][1][1] == 1.0
    # the mask-update settings and the total turnover (entries ever dropped)
    assert info["mask_update"]["importance"] == algo.config.importance
    assert info["mask_update"]["protect_1d"] is algo.config.protect_1d
    turnover = algo.impl.mask_turnover().tolist()
    assert info["mask_turnover"]["per_task"]["reach-v3"] == pytest.approx(turnover[0])


def test_info_infers_the_preset_without_run_file(
    tiny_run: TinyRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lone = tmp_path / "m.d3"
    shutil.copy(tiny_run.model, lone)
    code, out, _ = run_cli(["info", str(lone), "--json"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["preset"] == "harmodt-f"
    assert info["preset_source"] == "inferred from the config"
    assert info["dataset_id"] is None


# --------------------------------------------------------------------------- #
# bad input: one line, exit code 2
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("dataset_id", "command"),
    [
        (
            "metaworld-v3/mt5/near-optimal-v0",
            "harmodt-recipes metaworld --suite MT5 --quality near-optimal",
        ),
        (
            "metaworld-v3/reach-v3/expert-v0",
            "harmodt-recipes metaworld --suite MT1 --tasks reach-v3 --quality expert",
        ),
        ("someone/other-v1", "harmodt-recipes metaworld --suite MT5"),
    ],
)
def test_missing_dataset_says_how_to_build_it(
    minari_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    dataset_id: str,
    command: str,
) -> None:
    logdir = tmp_path / "runs"
    code, out, err = run_cli(
        ["train", "--dataset", dataset_id, "--logdir", str(logdir)], capsys
    )
    assert_one_line_error(code, err, repr(dataset_id), command)
    assert out == ""
    assert not logdir.exists()  # nothing written for a run that never started


def test_unknown_preset_lists_presets(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["train", "--dataset", "x/y-v0", "--preset", "dt"], capsys)
    assert_one_line_error(code, err, "'dt'", *PRESETS)


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("nope=1", ("nope", "not a HarmoDTConfig field", "sparsity")),
        ("task_names=a", ("task_names", "cannot be set")),
        ("sparsity=abc", ("sparsity", "expected float")),
        ("sparsity=1.5", ("sparsity must be in [0, 1)",)),
        ("mask_init=magic", ("magic", "erk")),
        ("missing-equals", ("KEY=VALUE",)),
    ],
)
def test_bad_config_overrides(
    capsys: pytest.CaptureFixture[str], override: str, needles: tuple[str, ...]
) -> None:
    code, _, err = run_cli(["train", "--dataset", "x/y-v0", "--set", override], capsys)
    assert_one_line_error(code, err, *needles)


def test_data_longer_than_max_timestep_is_caught_before_the_run(
    tiny_recipe_dataset: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset_id = tiny_recipe_dataset.spec.dataset_id  # type: ignore[attr-defined]
    code, _, err = run_cli(
        ["train", "--dataset", dataset_id, "--set", "max_timestep=10"]
        + ["--logdir", str(tmp_path / "runs")],
        capsys,
    )
    assert_one_line_error(code, err, f"max_timestep={TINY_STEPS}")
    assert not (tmp_path / "runs").exists()


def _bc_model(path: Path) -> None:
    rng = np.random.default_rng(0)
    episode = Episode(
        observations=rng.normal(size=(10, 3)).astype(np.float32),
        actions=rng.normal(size=(10, 2)).astype(np.float32),
        rewards=np.zeros((10, 1), np.float32),
        terminated=False,
    )
    bc = d3rlpy.algos.BCConfig().create()
    bc.build_with_dataset(create_infinite_replay_buffer(episodes=[episode]))
    bc.save(str(path))


@pytest.mark.parametrize("command", ["info", "evaluate"])
def test_files_that_are_not_harmodt_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    bc = tmp_path / "bc.d3"
    _bc_model(bc)
    capsys.readouterr()  # d3rlpy's own log lines while building the BC
    noise = tmp_path / "noise.d3"
    noise.write_bytes(np.random.default_rng(0).bytes(512))
    empty = tmp_path / "empty.d3"
    empty.write_bytes(b"")
    cases = {
        bc: "BC model, not HarmoDT",
        noise: "not a readable d3rlpy model file",
        empty: "not a readable d3rlpy model file",
        tmp_path / "missing.d3": "no model file",
        tmp_path: "is not a file",
    }
    for path, needle in cases.items():
        code, out, err = run_cli([command, str(path)], capsys)
        assert_one_line_error(code, err, str(path), needle)
        assert out == ""


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["info"]])
def test_help_has_examples(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "Examples:" in out
    assert "harmodt " in out.split("Examples:")[1]


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["train", "--steps", "4"], capsys)  # no --dataset
    assert_one_line_error(code, err, "--dataset")
    code, _, err = run_cli(["train", "--dataset", "x/y-v0", "--steps", "0"], capsys)
    assert_one_line_error(code, err, "--steps must be > 0")
    code, _, err = run_cli(["train", "--dataset", "x/y-v0", "--threads", "0"], capsys)
    assert_one_line_error(code, err, "--threads must be > 0")


def test_benchmark_command_delegates_to_the_harness(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["benchmark", "list"]) == 0
    listed = capsys.readouterr().out
    assert "harmodt-f" in listed and "mtbc" in listed
    try:
        code = main(
            ["benchmark", "run", "--methods", "nope", "--datasets", "x", "--steps", "1"]
        )
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code  # type: ignore[assignment]
    assert code == 2
    assert "harmodt-f" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["nonsense", "gpu", "mps", "cuda"])
def test_bad_device_is_one_line_and_writes_nothing(
    tiny_run: TinyRun, tmp_path: Path, capsys: pytest.CaptureFixture[str], device: str
) -> None:
    if device == "cuda" and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    logdir = tmp_path / "runs"
    code, out, err = run_cli(
        ["train", "--dataset", tiny_run.dataset_id, *TINY_ARGS]
        + ["--device", device, "--logdir", str(logdir)],
        capsys,
    )
    assert_one_line_error(
        code, err, "--device", "cpu, cuda or cuda:N" if device != "cuda" else "CUDA"
    )
    assert not logdir.exists()
    code, out, err = run_cli(
        ["evaluate", str(tiny_run.model), "--device", device, "--no-progress"], capsys
    )
    assert_one_line_error(code, err, "--device")
    assert "model file" not in err


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("embed_size=abc", "expected int"),
        ("embed_size=32.0", "expected int"),
        ("compile_graph=maybe", "expected true or false"),
    ],
)
def test_bad_set_values_are_one_line(
    tiny_run: TinyRun,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    item: str,
    needle: str,
) -> None:
    logdir = tmp_path / "runs"
    code, _, err = run_cli(
        ["train", "--dataset", tiny_run.dataset_id, *TINY_ARGS]
        + ["--set", item, "--logdir", str(logdir)],
        capsys,
    )
    assert_one_line_error(code, err, "--set", needle)
    assert not logdir.exists()


def test_a_stray_comma_in_tasks_is_one_line(
    tiny_run: TinyRun, tiny_recipe_dataset: object, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        ["evaluate", str(tiny_run.model), "--tasks", "reach-v3,", "--no-progress"],
        capsys,
    )
    assert_one_line_error(code, err, "--tasks", "empty item")
    assert out == ""


# --------------------------------------------------------------------------- #
# adapt
# --------------------------------------------------------------------------- #


def test_adapt_adds_unseen_tasks_and_evaluate_reports_them(
    tiny_run: TinyRun,
    _tiny_recipe_store: tuple[Path, str],
    minari_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from dataset_recipes import build_metaworld_dataset

    new = build_metaworld_dataset(
        tasks=["push-v3"],
        quality="expert",
        episodes_per_task=2,
        max_episode_steps=TINY_STEPS,
        progress=False,
    ).dataset_id
    out_file = tmp_path / "adapted.d3"
    code, out, err = run_cli(
        ["adapt", str(tiny_run.model), "--dataset", new, "--out", str(out_file)], capsys
    )
    assert code == 0, err
    assert "added 1 task(s)" in out and out_file.is_file()
    assert out_file.with_suffix(".safetensors").is_file()  # the code-free copy
    adapted = d3rlpy.load_learnable(str(out_file))
    assert adapted.task_names == (*TINY_TASKS, "push-v3")
    assert d3rlpy.load_learnable(str(tiny_run.model)).task_names == TINY_TASKS

    code, out, err = run_cli(
        ["evaluate", str(out_file), "--dataset", new, "--episodes", "1"]
        + ["--no-progress", "--max-steps", "5"],
        capsys,
    )
    assert code == 0, err
    assert "push-v3" in out and "note:" in err

    # the adapted model remembers where every task came from: no --dataset,
    # no run.json beside it, and the trained and the adapted tasks together
    recorded = d3rlpy.load_learnable(str(out_file)).config.task_datasets
    trained = dict.fromkeys(TINY_TASKS, tiny_run.dataset_id)
    assert recorded == {**trained, "push-v3": new}
    store, trained_on = _tiny_recipe_store  # both datasets in one store
    shutil.copytree(store / trained_on, minari_path / trained_on)
    safe = out_file.with_suffix(".safetensors")  # the file to share
    code, out, err = run_cli(
        ["evaluate", str(safe), "--episodes", "1", "--no-progress"]
        + ["--max-steps", "5", "--json"],
        capsys,
    )
    assert code == 0, err
    report = json.loads(out)
    assert sorted(report["tasks"]) == sorted([*TINY_TASKS, "push-v3"])

    # the fine-tune reference writes its own file; the trained file stays
    tuned = tmp_path / "finetuned.d3"
    argv = ["--dataset", new, "--method", "finetune", "--tune-steps", "2"]
    code, out, err = run_cli(
        ["adapt", str(tiny_run.model), *argv, "--out", str(tuned)], capsys
    )
    assert code == 0, err
    assert d3rlpy.load_learnable(str(tuned)).task_names == (*TINY_TASKS, "push-v3")

    # bad input: one line, exit 2, nothing written
    seen = build_metaworld_dataset(
        tasks=["reach-v3"],
        quality="expert",
        episodes_per_task=1,
        max_episode_steps=TINY_STEPS,
        progress=False,
    ).dataset_id
    for argv, needle in (
        (["--dataset", seen], "already has task(s)"),
        (["--dataset", new, "--method", "retrain"], "unknown --method"),
        (["--dataset", new, "--threshold", "2"], "threshold"),
    ):
        bad = tmp_path / "bad.d3"
        code, _, err = run_cli(
            ["adapt", str(tiny_run.model), *argv, "--out", str(bad)], capsys
        )
        assert_one_line_error(code, err, needle)
        assert not bad.exists()

    # --out is checked before any work: an existing file, a folder, no folder
    kept = tmp_path / "notes.txt"
    kept.write_text("mine")
    for target, needle in (
        (kept, "exists; pass --overwrite"),
        (tmp_path, "is a directory"),
        (tmp_path / "missing" / "a.d3", "is not a writable folder"),
    ):
        code, _, err = run_cli(
            ["adapt", str(tiny_run.model), "--dataset", new, "--out", str(target)],
            capsys,
        )
        assert_one_line_error(code, err, needle)
    assert kept.read_text() == "mine"
    code, _, err = run_cli(
        ["adapt", str(tiny_run.model), "--dataset", new, "--out", str(out_file)]
        + ["--overwrite"],
        capsys,
    )
    assert code == 0, err


def test_json_records_keep_the_umask_mode(tmp_path: Path) -> None:
    import os

    from harmodt_algo.files import write_json_atomic

    path = tmp_path / "run.json"
    previous = os.umask(0o027)
    try:
        write_json_atomic(path, {"a": 1})
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600
    assert json.loads(path.read_text()) == {"a": 1}


def test_long_load_errors_end_at_a_sentence() -> None:
    from harmodt_algo.cli.common import first_sentence

    long = "UnpicklingError: Weights only load failed. This file can " + "x " * 200
    assert first_sentence(long) == "UnpicklingError: Weights only load failed."
    cut = first_sentence("word " * 100)
    assert cut.endswith(" …") and len(cut) <= 202 and "wor …" not in cut
