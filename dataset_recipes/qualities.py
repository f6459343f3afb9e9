"""Behaviour policies and the four quality levels of a recipe, documented.

Why: "near-optimal" or "sub-optimal" only mean something if the mixture that
produces them is written down and its measured success lands in a stated band
for every task. Gaussian action noise alone does not do it: easy tasks (reach,
drawer-close, button-press-topdown) still succeed at sigma = 1. So each level
mixes two kinds of episode, chosen per episode:

* **guided** episode: Meta-World's scripted expert
  (``metaworld.policies.ENV_POLICY_MAP[task]``, actions clipped to [-1, 1]) plus
  Gaussian action noise whose std ``sigma`` is drawn once per episode from
  ``noise_std``; with probability ``segment_probability`` one segment of
  uniform random actions (length drawn from ``segment_length``, start uniform
  over the episode) replaces the expert for a while (the expert, being
  state-based, usually recovers: these episodes add state coverage);
* **degraded** episode: the noisy expert controls only the first ``k`` steps
  (``k`` drawn from ``takeover_step``, always shorter than the fastest measured
  expert success, about 35 steps), then uniform random actions take over until
  the end. These are failed attempts: their success rate is that of a random
  policy (0 on every measured task except drawer-close, about 0.15).

A fraction ``degraded_fraction`` of the episodes is degraded. The assignment is
*stratified*: episode ``i`` of a task is degraded iff
``frac(phase + i * 0.618...) < degraded_fraction`` with ``phase`` drawn once per
(seed, task, quality). Any ``n`` consecutive episodes then hold
``degraded_fraction * n`` degraded episodes up to rounding, so the measured
success of small builds stays close to its target instead of jittering by the
binomial spread of an i.i.d. draw. Everything about an episode is a function of
``(seed, task, quality, episode index)`` only.

Measured bands (success at any step, the standard Meta-World metric) are in
``docs/recipes.md``; ``success_band`` holds the band each level is designed and
calibrated for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .errors import RecipeError

#: Golden-ratio conjugate: the low-discrepancy step of the stratified assignment.
_GOLDEN = (5**0.5 - 1) / 2


@dataclass(frozen=True)
class Quality:
    """One quality level: a per-episode mixture of guided and degraded episodes."""

    name: str
    summary: str
    degraded_fraction: float
    noise_std: tuple[float, float]
    segment_probability: float
    segment_length: tuple[int, int]
    takeover_step: tuple[int, int]
    success_band: tuple[float, float] | None

    @property
    def stream(self) -> int:
        """Stable 32-bit key of this level, part of every episode's RNG seed."""
        return int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:4], "big")

    def describe(self) -> str:
        """One markdown paragraph: the mixture in words and numbers."""
        lo, hi = self.noise_std
        parts = [f"**{self.name}**: {self.summary}"]
        if self.degraded_fraction < 1.0:
            parts.append(
                f"Guided episodes ({1 - self.degraded_fraction:.0%}): scripted expert "
                f"+ Gaussian action noise, sigma ~ U({lo:g}, {hi:g}) per episode"
            )
            if self.segment_probability > 0:
                a, b = self.segment_length
                parts[-1] += (
                    f"; with probability {self.segment_probability:g} one segment of "
                    f"{a}-{b} uniform random actions"
                )
            parts[-1] += "."
        if self.degraded_fraction > 0:
            a, b = self.takeover_step
            if b == 0:
                parts.append(
                    f"Degraded episodes ({self.degraded_fraction:.0%}): uniform random "
                    "actions for the whole episode."
                )
            else:
                parts.append(
                    f"Degraded episodes ({self.degraded_fraction:.0%}, stratified "
                    f"over episode indices): noisy expert for the first {a}-{b} "
                    "steps, then uniform random actions to the end."
                )
        if self.success_band is not None:
            lo_b, hi_b = self.success_band
            parts.append(
                f"Designed success band (success at any step): {lo_b:.0%}-{hi_b:.0%}."
            )
        return " ".join(parts)


#: The four levels, one row each: name; degraded fraction; noise std range;
#: detour probability, length range; takeover step range; success band.
_LEVELS = (
    ("expert", 0.0, (0.0, 0.05), 0.0, (0, 0), (0, 0), (0.90, 1.00)),
    ("near-optimal", 0.10, (0.05, 0.30), 0.25, (10, 40), (0, 20), (0.75, 0.95)),
    ("sub-optimal", 0.55, (0.10, 0.50), 0.50, (20, 80), (0, 20), (0.25, 0.60)),
    ("random", 1.0, (0.0, 0.0), 0.0, (0, 0), (0, 0), None),
)
_SUMMARIES = {
    "expert": "the scripted expert with light action noise.",
    "near-optimal": "mostly the noisy scripted expert, about 1 episode in 10 a "
    "failed attempt.",
    "sub-optimal": "a noisier expert with random detours, more than half of the "
    "episodes failed attempts.",
    "random": "uniform random actions in [-1, 1] (the Minari ref_min policy).",
}
QUALITIES: dict[str, Quality] = {
    name: Quality(name, _SUMMARIES[name], *row)  # type: ignore[arg-type]
    for name, *row in _LEVELS
}

QUALITY_NAMES: tuple[str, ...] = tuple(QUALITIES)

#: The quality that records a SAC learner (:mod:`dataset_recipes.replay`); one
#: build of it writes the two datasets of :data:`REPLAY_DATASETS`.
REPLAY_QUALITY = "replay"
#: Replay dataset names and the share of each task's episodes they hold, in
#: order: the whole buffer, and its first half (the paper's definitions).
REPLAY_DATASETS: dict[str, float] = {
    "near-optimal-replay": 1.0,
    "sub-optimal-replay": 0.5,
}
#: Every name that can stand where a dataset id names its quality.
DATASET_KINDS: tuple[str, ...] = (*QUALITY_NAMES, *REPLAY_DATASETS)


def get_quality(name: str) -> Quality:
    """The :class:`Quality` called ``name``; :class:`RecipeError` naming the choices."""
    try:
        return QUALITIES[name]
    except KeyError:
        hint = ""
        if name == REPLAY_QUALITY or name in REPLAY_DATASETS:
            hint = " (the replay quality is built by build_replay_datasets)"
        raise RecipeError(
            f"unknown quality {name!r}; valid qualities: {', '.join(QUALITY_NAMES)}"
            f", {REPLAY_QUALITY}{hint}"
        ) from None


def check_dataset_kind(name: str) -> str:
    """``name`` if a recipe dataset id can carry it (a quality or a replay
    dataset name); :class:`RecipeError` naming the choices otherwise."""
    if name not in DATASET_KINDS:
        raise RecipeError(
            f"unknown quality {name!r}; valid: {', '.join(DATASET_KINDS)}"
        )
    return name


@dataclass(frozen=True)
class EpisodePlan:
    """What the behaviour policy does in one episode (all drawn up front)."""

    degraded: bool
    noise_std: float
    takeover_step: int
    segment_start: int
    segment_length: int

    def random_mask(self, steps: int) -> np.ndarray:
        """Boolean (steps,): True where the action is uniform random."""
        mask = np.zeros(steps, dtype=bool)
        if self.degraded:
            mask[self.takeover_step :] = True
        elif self.segment_length > 0:
            mask[self.segment_start : self.segment_start + self.segment_length] = True
        return mask


def is_degraded(quality: Quality, phase: float, episode_index: int) -> bool:
    """Stratified assignment: ``frac(phase + i * golden) < degraded_fraction``."""
    if quality.degraded_fraction >= 1.0:
        return True
    if quality.degraded_fraction <= 0.0:
        return False
    u = (phase + episode_index * _GOLDEN) % 1.0
    return u < quality.degraded_fraction


def plan_episode(
    quality: Quality,
    rng: np.random.Generator,
    *,
    phase: float,
    episode_index: int,
    steps: int,
) -> EpisodePlan:
    """Draw an episode's plan. Always consumes the same number of draws from ``rng``."""
    sigma = float(rng.uniform(*quality.noise_std))
    takeover = int(rng.integers(quality.takeover_step[0], quality.takeover_step[1] + 1))
    has_segment = bool(rng.random() < quality.segment_probability)
    seg_start = int(rng.integers(0, max(steps, 1)))
    seg_len = int(
        rng.integers(quality.segment_length[0], quality.segment_length[1] + 1)
    )
    return EpisodePlan(
        degraded=is_degraded(quality, phase, episode_index),
        noise_std=sigma,
        takeover_step=min(takeover, steps),
        segment_start=seg_start,
        segment_length=seg_len if has_segment else 0,
    )
