"""One parser per syntax: the same --device and --set strings mean the same
thing (or fail the same way) in every command."""

from __future__ import annotations

import pytest

from harmodt_algo import benchmark, cli
from harmodt_algo.benchmark import cells as benchmark_cells
from harmodt_algo.cli import common as cli_common
from harmodt_algo.options import OptionError, parse_device, parse_list, parse_value


@pytest.mark.parametrize("text", ["cpu", "CPU", " cpu ", "cpu:0", None])
def test_cpu_spellings_agree(text: str | None) -> None:
    assert parse_device(text) is False
    assert cli_common.torch_device(text) is False
    assert benchmark_cells._torch_device(text or "cpu") is False


@pytest.mark.parametrize("text", ["nonsense", "gpu", "mps", "cuda:x", "cuda", "cuda:3"])
def test_bad_or_missing_devices_fail_alike(text: str) -> None:
    import torch

    if text.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(OptionError) as direct:
        parse_device(text)
    with pytest.raises(cli.CliError) as from_cli:
        cli_common.torch_device(text)
    with pytest.raises(benchmark.BenchmarkError) as from_harness:
        benchmark_cells._torch_device(text)
    assert str(direct.value) in str(from_cli.value)
    assert str(direct.value) in str(from_harness.value)


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("compile_graph", "no", False),
        ("compile_graph", "On", True),
        ("embed_size", "32", 32),
        ("harmony_gamma", "2", 2.0),
        ("task_schedule", "mixed", "mixed"),
        ("task_schedule", '"mixed"', "mixed"),
    ],
)
def test_set_values_agree_in_train_and_benchmark(
    key: str, text: str, expected: object
) -> None:
    from_train = cli.parse_overrides([f"{key}={text}"])[key]
    from_harness = benchmark.parse_overrides([f"{key}={text}"], ["harmodt-f"])
    assert from_train == from_harness["harmodt-f"][key] == expected
    assert type(from_train) is type(expected)


def test_parse_value_and_list_errors() -> None:
    with pytest.raises(OptionError, match="expected int"):
        parse_value("embed_size", "32.0", 64)
    with pytest.raises(OptionError, match="expected true or false"):
        parse_value("flag", "maybe", True)
    assert parse_list("--tasks", " a , b ") == ["a", "b"]
    assert parse_list("--tasks", "") == []
    with pytest.raises(OptionError, match="empty item"):
        parse_list("--tasks", "a,")
