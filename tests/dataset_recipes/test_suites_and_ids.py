"""Suites, task validation, quality lookup and dataset ids (no env stepping)."""

from __future__ import annotations

import metaworld
import metaworld.env_dict
import pytest

from dataset_recipes import (
    QUALITY_NAMES,
    RecipeError,
    all_tasks,
    dataset_id,
    get_quality,
    list_suites,
    resolve_tasks,
)
from dataset_recipes.envs import stable_key


def test_suites_match_metaworld() -> None:
    suites = list_suites()
    assert {k: len(v) for k, v in suites.items()} == {
        "MT5": 5,
        "MT10": 10,
        "MT30": 30,
        "MT50": 50,
        "ML10-TRAIN": 10,
        "ML10-TEST": 5,
        "ML45-TRAIN": 45,
        "ML45-TEST": 5,
    }
    assert set(all_tasks()) == set(metaworld.ALL_V3_ENVIRONMENTS)
    assert list(suites["MT10"]) == list(metaworld.env_dict.MT10_V3)
    assert suites["MT5"] == suites["MT50"][:5]
    assert suites["MT30"] == suites["MT50"][:30]


def test_resolve_tasks_variants() -> None:
    assert resolve_tasks("mt5") == list_suites()["MT5"]
    assert resolve_tasks(None, "push-v3, reach-v3") == ("push-v3", "reach-v3")
    assert resolve_tasks("MT1", ["reach-v3"]) == ("reach-v3",)
    assert resolve_tasks("MT10", "door-open-v3") == ("door-open-v3",)
    with pytest.raises(RecipeError, match="exactly one task"):
        resolve_tasks("MT1", "reach-v3,push-v3")
    with pytest.raises(RecipeError, match="not in suite MT10"):
        resolve_tasks("MT10", "basketball-v3")
    with pytest.raises(RecipeError, match="listed twice"):
        resolve_tasks(None, "reach-v3,reach-v3")


def test_unknown_task_and_suite_messages_name_choices() -> None:
    with pytest.raises(RecipeError) as err:
        resolve_tasks(None, "reach-v2")
    msg = str(err.value)
    assert "'reach-v2'" in msg and "did you mean 'reach-v3'" in msg
    assert "assembly-v3" in msg and "\n" not in msg
    with pytest.raises(RecipeError) as err:
        resolve_tasks("MT99")
    assert "MT99" in str(err.value) and "MT1, MT5, MT10, MT30, MT50" in str(err.value)


def test_quality_lookup() -> None:
    assert QUALITY_NAMES == ("expert", "near-optimal", "sub-optimal", "random")
    assert get_quality("near-optimal").success_band == (0.75, 0.95)
    assert get_quality("sub-optimal").success_band == (0.25, 0.60)
    with pytest.raises(RecipeError, match="expert, near-optimal, sub-optimal, random"):
        get_quality("great")


def test_dataset_id_scheme() -> None:
    assert dataset_id("MT10", "near-optimal") == "metaworld-v3/mt10/near-optimal-v0"
    assert dataset_id("mt50", "random") == "metaworld-v3/mt50/random-v0"
    assert dataset_id("reach-v3", "expert") == "metaworld-v3/reach-v3/expert-v0"
    assert dataset_id(["reach-v3"], "expert") == "metaworld-v3/reach-v3/expert-v0"
    # The exact ordered suite list is the suite.
    assert dataset_id(list_suites()["MT5"], "expert") == "metaworld-v3/mt5/expert-v0"
    custom = dataset_id(["reach-v3", "push-v3"], "sub-optimal")
    assert custom.startswith("metaworld-v3/custom-") and custom.endswith(
        "/sub-optimal-v0"
    )
    assert custom == dataset_id("reach-v3,push-v3", "sub-optimal")  # deterministic
    assert custom != dataset_id(["push-v3", "reach-v3"], "sub-optimal")  # order
    with pytest.raises(RecipeError):
        dataset_id("MT10", "excellent")
    with pytest.raises(RecipeError):
        dataset_id("not-a-task", "expert")


def test_stable_key_is_not_salted() -> None:
    # A fixed value: the episode RNG seeds must never depend on hash() salting.
    assert stable_key("reach-v3") == int.from_bytes(
        __import__("hashlib").sha256(b"reach-v3").digest()[:4], "big"
    )
    assert stable_key("reach-v3") != stable_key("push-v3")


def test_meta_learning_splits_come_from_metaworld() -> None:
    from metaworld import env_dict

    from dataset_recipes import dataset_id, resolve_tasks
    from dataset_recipes.suites import META_SUITES, list_suites, suite_tasks

    suites = list_suites()
    for bench, splits in (("ML10", env_dict.ML10_V3), ("ML45", env_dict.ML45_V3)):
        for split in ("train", "test"):
            name = f"{bench}-{split.upper()}"
            assert name in META_SUITES
            assert suites[name] == tuple(splits[split])
    train, test = suite_tasks("ML10-train"), suite_tasks("ml10-test")
    assert len(train) == 10 and len(test) == 5 and not set(train) & set(test)
    assert resolve_tasks(suite="ML10-test") == test
    assert dataset_id("ML10-test", "expert") == "metaworld-v3/ml10-test/expert-v0"
    assert dataset_id(list(test), "expert") == "metaworld-v3/ml10-test/expert-v0"


def test_parse_dataset_id_inverts_dataset_id() -> None:
    from dataset_recipes import dataset_id, parse_dataset_id

    for where, suite, task in (
        ("MT10", "MT10", None),
        ("ML45-train", "ML45-TRAIN", None),
        ("reach-v3", None, "reach-v3"),
        ("reach-v3,push-v3", None, None),
    ):
        ident = dataset_id(where, "sub-optimal")
        parsed = parse_dataset_id(ident)
        assert parsed is not None and parsed.quality == "sub-optimal"
        assert (parsed.suite, parsed.task, parsed.version) == (suite, task, 0)
        assert ident.split("/")[1] == parsed.group
    assert parse_dataset_id("mujoco/hopper/expert-v0") is None
    assert parse_dataset_id("metaworld-v3/mt5/amazing-v0") is None
