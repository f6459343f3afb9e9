"""Writing recipe datasets into the local Minari store, safely.

Shared by the scripted recipes (``builder``) and the SAC learner's replay
(``replay_build``): where the store is, one build per dataset at a time
(a ``filelock`` lock), the Minari file written from staged chunks under a
private root, and the one ``os.rename`` that publishes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from . import schema
from .envs import (
    ACTION_SPACE,
    OBSERVATION_SPACE,
    env_spec_dict,
    env_spec_from_dict,
    train_make_seeds,
)
from .errors import RecipeError
from .locks import Busy, exclusive
from .rollout import REF_EPISODES
from .running import SuitePlan

__all__ = [
    "STAGING_DIRNAME",
    "MinariWrite",
    "Staging",
    "build_lock",
    "check_writable",
    "datasets_root",
    "exists_message",
    "params_digest",
    "publish",
    "recipe_metadata",
    "write_minari",
]

STAGING_DIRNAME = ".staging"


def datasets_root() -> Path:
    """Where Minari keeps local datasets (``MINARI_DATASETS_PATH`` or the default)."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    if env:
        return Path(env)
    return Path.home() / ".minari" / "datasets"


def check_writable(root: Path) -> None:
    try:
        staging = root / STAGING_DIRNAME
        staging.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=staging, prefix="probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RecipeError(
            f"dataset path {root} is not writable ({reason}); set "
            "MINARI_DATASETS_PATH to a writable directory"
        ) from None


@contextlib.contextmanager
def minari_root(path: Path) -> Iterator[None]:
    """Point Minari at ``path`` for the duration (not thread-safe)."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


@contextlib.contextmanager
def build_lock(path: Path, dataset: str) -> Iterator[None]:
    """One build of ``dataset`` at a time (an OS lock, released if the
    holder dies), or :class:`RecipeError` at once."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(exclusive(path, f"the build of {dataset}"))
        except Busy:
            raise RecipeError(
                f"another build of {dataset} is running (lock {path})"
            ) from None
        yield


def requirements() -> list[str]:
    reqs = []
    for pkg in ("metaworld", "mujoco", "gymnasium"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:  # pragma: no cover
            pass
    return reqs


def episode_buffers(
    path: str, task_id: int, task: str, width: int, count: int | None = None
) -> list[Any]:
    """Minari episode buffers of a staged chunk (its first ``count`` episodes,
    all by default). A learner's chunk (the replay quality) also carries each
    step's ``episode_index`` and ``learner_step`` in ``infos``."""
    from minari.data_collector import EpisodeBuffer

    buffers = []
    name = np.bytes_(task.encode("ascii"))
    with np.load(path) as z:
        obs, act, rew = z["observations"], z["actions"], z["rewards"]
        term, trunc, succ = z["terminations"], z["truncations"], z["success"]
        lengths = z["lengths"]
        learner = schema.INFO_LEARNER_STEP in z.files
        o = s = 0
        for k, length in enumerate(lengths[:count]):
            length = int(length)
            index = int(z["episode_index"][k])
            infos = {
                schema.INFO_TASK_ID: np.full(length + 1, task_id, dtype=np.int64),
                schema.INFO_TASK_NAME: np.full(length + 1, name, dtype=f"S{width}"),
                schema.INFO_SUCCESS: succ[o : o + length + 1].astype(np.float32),
            }
            options: dict[str, Any] = {
                "episode_index": index,
                "make_seed": int(z["make_seed"][k]),
                "goal_index": int(z["goal_index"][k]),
            }
            if learner:
                first_step = int(z[schema.INFO_LEARNER_STEP][k])
                infos[schema.INFO_EPISODE_INDEX] = np.full(length + 1, index, np.int64)
                infos[schema.INFO_LEARNER_STEP] = first_step + np.arange(
                    length + 1, dtype=np.int64
                )
                options[schema.INFO_LEARNER_STEP] = first_step
            else:
                options["degraded"] = int(z["degraded"][k])
                options["noise_std"] = float(z["noise_std"][k])
            buffers.append(
                EpisodeBuffer(
                    observations=obs[o : o + length + 1],
                    actions=act[s : s + length],
                    rewards=rew[s : s + length],
                    terminations=term[s : s + length],
                    truncations=trunc[s : s + length],
                    infos=infos,
                    options=options,
                )
            )
            o += length + 1
            s += length
    return buffers


@dataclass(frozen=True)
class MinariWrite:
    """What one recipe dataset is written from: the staged chunks of each task
    (with how many of their episodes to take), and what it says about itself."""

    dataset: str
    plan: SuitePlan  # its tasks, seed and episode length
    chunks: dict[str, list[tuple[str, int]]]  # task -> [(chunk path, episodes)]
    refs: dict[str, dict[str, float]]
    card: str
    env_meta: dict[str, Any]
    algorithm_name: str
    author: str
    code_permalink: str
    metadata: dict[str, Any]  # recipe-specific metadata entries


def write_minari(assemble_root: Path, spec: MinariWrite) -> Path:
    """Write ``spec`` as a Minari dataset under ``assemble_root``; returns its
    folder (published later with one rename)."""
    import minari

    tasks = spec.plan.tasks
    ref_min = float(np.mean([spec.refs[t]["ref_min_score"] for t in tasks]))
    ref_max = float(np.mean([spec.refs[t]["ref_max_score"] for t in tasks]))
    train_spec = eval_spec = None
    if len(tasks) == 1:
        task = tasks[0]
        train_spec = env_spec_from_dict(
            env_spec_dict(
                task,
                train_make_seeds(spec.plan.seed, 1)[0],
                spec.plan.max_episode_steps,
            )
        )
        eval_spec = env_spec_from_dict(spec.env_meta["tasks"][task])
    with minari_root(assemble_root), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = minari.create_dataset_from_buffers(
            spec.dataset,
            [],
            env=train_spec,
            eval_env=eval_spec,
            algorithm_name=spec.algorithm_name,
            author=spec.author,
            code_permalink=spec.code_permalink,
            action_space=ACTION_SPACE,
            observation_space=OBSERVATION_SPACE,
            ref_min_score=ref_min,
            ref_max_score=ref_max,
            num_episodes_average_score=REF_EPISODES,
            description=spec.card,
            requirements=requirements(),
        )
        width = max(len(t) for t in tasks)  # one fixed-width |S dtype
        for task_id, task in enumerate(tasks):
            for path, count in spec.chunks[task]:
                ds.storage.update_episodes(
                    episode_buffers(path, task_id, task, width, count)
                )
        ds.storage.update_metadata(
            {
                schema.METADATA_TASKS: list(tasks),
                schema.METADATA_ENV: spec.env_meta,
                schema.METADATA_REF_SCORES: spec.refs,
                **spec.metadata,
                "ref_min_score": ref_min,
                "ref_max_score": ref_max,
                "num_episodes_average_score": REF_EPISODES,
            }
        )
    return assemble_root / spec.dataset


def publish(
    built: Path, root: Path, dataset: str, staging: Path, overwrite: bool
) -> Path:
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.namespace import create_namespace, list_local_namespaces

    final = root / dataset
    namespace = parse_dataset_id(dataset)[0]
    if namespace is not None:
        with minari_root(root):
            if namespace not in list_local_namespaces():
                create_namespace(namespace)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        if not overwrite:
            raise RecipeError(exists_message(dataset, final))
        replaced = staging / "replaced"
        shutil.rmtree(replaced, ignore_errors=True)
        os.rename(final, replaced)
    os.rename(built, final)
    return final


def exists_message(dataset: str, path: Path) -> str:
    return (
        f"dataset {dataset} already exists at {path}; pass --overwrite "
        "(overwrite=True) to replace it"
    )


def params_digest(params: dict[str, Any]) -> str:
    """A short digest of a build's parameters: names its staging folder, so a
    re-run with the same parameters finds its staged work."""
    blob = json.dumps(params, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def recipe_metadata(
    stats: Sequence[Any],
    params: dict[str, Any],
    *,
    suite: str | None,
    command: str,
    success_band: tuple[float, float] | None,
    **extra: Any,
) -> dict[str, Any]:
    """The recipe's own metadata entries: per-task stats (``TaskStats``) and
    how the dataset was built (its parameters, ``extra``, the suite, this
    package's version, the command that rebuilds it)."""
    from . import __version__

    return {
        schema.METADATA_STATS: {s.task: s.to_json() for s in stats},
        schema.METADATA_RECIPE: {
            **params,
            **extra,
            "suite": suite,
            "package_version": __version__,
            "command": command,
            "success_band": success_band,
        },
    }


@dataclass(frozen=True)
class Staging:
    """One build's hidden work area, ``<root>/.staging/<slug>-<digest>``.

    A build checks its targets before any work (:meth:`open`), holds
    :attr:`lock` throughout, stages its work in :attr:`folder` (named by the
    parameters' digest, so a re-run resumes), writes each dataset under
    ``folder/assemble`` and publishes it with one rename (:meth:`publish`).
    """

    root: Path  # the Minari store
    slug: str  # what is being built, as one path component
    folder: Path  # <root>/.staging/<slug>-<digest>

    @classmethod
    def open(
        cls, targets: Sequence[str], slug: str, digest: str, overwrite: bool
    ) -> Staging:
        """The staging area of a build of ``targets``, checked first: the store
        is writable and holds none of them unless they may be overwritten."""
        root = datasets_root()
        check_writable(root)
        for target in targets:
            if (root / target).exists() and not overwrite:
                raise RecipeError(exists_message(target, root / target))
        return cls(root, slug, root / STAGING_DIRNAME / f"{slug}-{digest}")

    @property
    def parent(self) -> Path:
        """``<root>/.staging``: every build's area, and shared reference rollouts."""
        return self.folder.parent

    @property
    def lock(self) -> Path:
        """Held for the whole build: one build of these datasets at a time."""
        return self.parent / f"{self.slug}.lock"

    def prepare(self, params: dict[str, Any], *, drop_others: bool) -> None:
        """Create the folder and record ``params`` in it; ``drop_others``
        removes staged work of the same datasets under other parameters."""
        if drop_others:
            for other in self.parent.glob(f"{self.slug}-*"):
                if other.is_dir() and other != self.folder:
                    shutil.rmtree(other, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "recipe.json").write_text(json.dumps(params, indent=1))

    def assemble(self, spec: MinariWrite, part: str = "") -> Path:
        """Write ``spec`` under ``folder/assemble[/part]``, cleared first (a
        killed run may have left half a dataset there); returns its folder."""
        where = self.folder / "assemble" / part if part else self.folder / "assemble"
        shutil.rmtree(where, ignore_errors=True)
        return write_minari(where, spec)

    def publish(self, built: Path, target: str, overwrite: bool) -> Path:
        """Move an assembled dataset to its id (one rename)."""
        return publish(built, self.root, target, self.folder, overwrite)

    def remove(self) -> None:
        """After publishing: nothing is left to resume."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.lock.unlink(missing_ok=True)
