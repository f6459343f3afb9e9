"""The dataset card: a markdown description plus a rich table of measured stats.

Why: a recipe dataset must say how it was made and what its data look like
(per-task success and return, reference scores) in a form that travels with
the data. The card is stored as the Minari ``description`` (so ``minari show``
prints it) and the same numbers go to ``metadata[schema.METADATA_STATS]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from . import schema
from .qualities import Quality


@dataclass(frozen=True)
class TaskStats:
    """Measured statistics of one task's episodes in a dataset."""

    task: str
    task_id: int
    episodes: int
    success_rate: float  # success at any step (standard metric)
    last_step_success_rate: float
    mean_return: float
    std_return: float
    degraded_episodes: int
    ref_min_score: float  # random policy, held-out goals
    ref_max_score: float  # noise-free scripted expert, held-out goals

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskStats:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def in_band(self, band: tuple[float, float] | None) -> bool | None:
        if band is None:
            return None
        return band[0] <= self.success_rate <= band[1]


def _num(x: float) -> str:
    return "-" if x != x else f"{x:.1f}"  # NaN: not measured


def _mark(flag: bool | None) -> str:
    return "" if flag is None else ("yes" if flag else "**NO**")


def stats_markdown(
    stats: Sequence[TaskStats], band: tuple[float, float] | None = None
) -> str:
    """The per-task table in markdown (one row per task plus the mean)."""
    head = "| id | task | episodes | success | last-step success | mean return "
    head += "| ref min | ref max |"
    sep = "|---:|---|---:|---:|---:|---:|---:|---:|"
    if band is not None:
        head += " in band |"
        sep += ":---:|"
    rows = [head, sep]
    for s in stats:
        row = (
            f"| {s.task_id} | {s.task} | {s.episodes} | {s.success_rate:.0%} "
            f"| {s.last_step_success_rate:.0%} | {_num(s.mean_return)} "
            f"| {_num(s.ref_min_score)} | {_num(s.ref_max_score)} |"
        )
        if band is not None:
            row += f" {_mark(s.in_band(band))} |"
        rows.append(row)
    n = max(len(stats), 1)
    mean_row = (
        f"| | **mean** | {sum(s.episodes for s in stats)} "
        f"| {sum(s.success_rate for s in stats) / n:.0%} "
        f"| {sum(s.last_step_success_rate for s in stats) / n:.0%} "
        f"| {_num(sum(s.mean_return for s in stats) / n)} "
        f"| {_num(sum(s.ref_min_score for s in stats) / n)} "
        f"| {_num(sum(s.ref_max_score for s in stats) / n)} |"
    )
    if band is not None:
        mean_row += " |"
    rows.append(mean_row)
    return "\n".join(rows)


def render_card(
    *,
    dataset_id: str,
    tasks: Sequence[str],
    suite: str | None,
    quality: Quality,
    seed: int,
    episodes_per_task: int,
    max_episode_steps: int,
    stats: Sequence[TaskStats],
    env_meta: Mapping[str, Any],
    command: str,
    package_version: str,
    recipe_version: int,
) -> str:
    """The markdown description stored in the dataset."""
    kind = "Multi-task" if len(tasks) > 1 else "Single-task"
    suite_txt = f" ({suite})" if suite else ""
    total = len(tasks) * episodes_per_task * max_episode_steps
    band = quality.success_band
    band_txt = (
        f" Designed band for this quality: {band[0]:.0%}-{band[1]:.0%}." if band else ""
    )
    n_tasks = len(tasks)
    return f"""{kind} offline dataset of Meta-World v3: {n_tasks} task(s){suite_txt}, \
quality **{quality.name}**, {episodes_per_task} episodes per task of \
{max_episode_steps} steps ({total:,} transitions), recipe seed {seed}. Built by \
the deterministic recipe `dataset_recipes` {package_version} \
(recipe v{recipe_version}): the same command rebuilds the same arrays bit for bit.

### Behaviour policy

{quality.describe()} Actions are clipped to [-1, 1]; the stored actions are \
exactly the executed ones.

### Goals and evaluation

Meta-World ignores reset seeds; goals come from the make-seed. \
{env_meta["goal_rule"]}. Training make-seeds: {env_meta["train_make_seeds"]}; \
evaluation make-seed: {env_meta["eval_make_seed"]}. Rebuild the evaluation \
environment of any task with `dataset_recipes.make_env(dataset, task_name)`.

### Layout

Observations float32 (39,), T+1 per episode; actions float32 (4,). Per-step \
infos: `{schema.INFO_TASK_ID}` (int64, index into metadata \
`{schema.METADATA_TASKS}`), `{schema.INFO_TASK_NAME}` (ASCII bytes), \
`{schema.INFO_SUCCESS}` (float32, 0 at reset). Metadata: \
`{schema.METADATA_TASKS}`, `{schema.METADATA_ENV}`, `{schema.METADATA_STATS}`, \
`{schema.METADATA_REF_SCORES}`, `{schema.METADATA_RECIPE}`.

### Measured per-task statistics

Success = success at any step of the episode (the standard Meta-World \
metric); reference scores: mean return of a uniform random policy (min) and of \
the noise-free scripted expert (max) on held-out evaluation goals.{band_txt}

{stats_markdown(stats, band)}

### Reproduce

```
{command}
```
"""


def stats_table(
    stats: Sequence[TaskStats],
    band: tuple[float, float] | None = None,
    title: str | None = None,
) -> Table:
    """A compact rich table of the per-task stats (fits 80 columns for MT50 names)."""
    table = Table(
        title=title, box=None, padding=(0, 1, 0, 0), header_style="bold underline"
    )
    headers = ["id", "task", "eps", "succ", "last", "return", "ref lo", "ref hi"]
    if band is not None:
        headers.append("band")
    for name in headers:
        justify = "left" if name == "task" else "right"
        if name == "band":
            justify = "center"
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    table.columns[1].min_width = max([4] + [len(s.task) for s in stats])

    def whole(x: float) -> str:
        return "-" if x != x else f"{x:.0f}"

    for s in stats:
        cells = [
            str(s.task_id),
            s.task,
            str(s.episodes),
            f"{s.success_rate:.0%}",
            f"{s.last_step_success_rate:.0%}",
            whole(s.mean_return),
            whole(s.ref_min_score),
            whole(s.ref_max_score),
        ]
        if band is not None:
            cells.append("[green]yes[/]" if s.in_band(band) else "[red]NO[/]")
        table.add_row(*cells)
    n = max(len(stats), 1)
    cells = [
        "",
        "[bold]mean[/]",
        str(sum(s.episodes for s in stats)),
        f"{sum(s.success_rate for s in stats) / n:.0%}",
        f"{sum(s.last_step_success_rate for s in stats) / n:.0%}",
        whole(sum(s.mean_return for s in stats) / n),
        whole(sum(s.ref_min_score for s in stats) / n),
        whole(sum(s.ref_max_score for s in stats) / n),
    ]
    if band is not None:
        cells.append("")
    table.add_row(*cells)
    return table


def print_card(
    console: Console,
    card: str,
    stats: Sequence[TaskStats],
    band: tuple[float, float] | None,
) -> None:
    """Print a card with rich, its markdown stats table shown as a compact table."""
    table_md = stats_markdown(stats, band)
    if stats and table_md in card:
        before, after = card.split(table_md, 1)
        console.print(Markdown(before))
        console.print(stats_table(stats, band))
        console.print()
        console.print(Markdown(after))
    else:
        console.print(Markdown(card))


# --------------------------------------------------------------- replay cards


@dataclass(frozen=True)
class LearnerCurve:
    """How one task's SAC learner progressed over its budget (replay quality)."""

    task: str
    env_steps: int
    episodes: int
    data_success_by_tenth: tuple[float, ...]  # success of the recorded episodes
    greedy_after_episodes: tuple[int, ...]  # when the greedy policy was measured
    greedy_success: tuple[float, ...]  # on held-out goals, at those points
    cpu_seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LearnerCurve:
        values = {k: data[k] for k in cls.__dataclass_fields__}
        for key in ("data_success_by_tenth", "greedy_after_episodes", "greedy_success"):
            values[key] = tuple(values[key])
        return cls(**values)


def _pct(x: float) -> str:
    return "-" if x != x else f"{x:.0%}"


def learner_markdown(curves: Sequence[LearnerCurve]) -> str:
    """Per task: budget, CPU time, success of the data per tenth of the
    budget and of the greedy policy at the end of each tenth."""
    tenths = " | ".join(f"{k}/10" for k in range(1, 11))
    head = f"| task | env steps | episodes | CPU h | | {tenths} |"
    sep = "|---|---:|---:|---:|---|" + "---:|" * 10
    rows = [head, sep]
    for c in curves:
        data = " | ".join(_pct(x) for x in c.data_success_by_tenth)
        greedy = " | ".join(_pct(x) for x in c.greedy_success)
        rows.append(
            f"| {c.task} | {c.env_steps:,} | {c.episodes} | "
            f"{c.cpu_seconds / 3600:.2f} | data | {data} |"
        )
        rows.append(f"| | | | | greedy | {greedy} |")
    return "\n".join(rows)


def render_replay_card(
    *,
    dataset_id: str,
    kind: str,
    tasks: Sequence[str],
    suite: str | None,
    seed: int,
    episodes: int,
    episodes_run: int,
    max_episode_steps: int,
    sac_description: str,
    eval_episodes: int,
    stats: Sequence[TaskStats],
    curves: Sequence[LearnerCurve],
    env_meta: Mapping[str, Any],
    command: str,
    package_version: str,
    recipe_version: int,
) -> str:
    """The markdown description of a replay dataset."""
    kind_txt = "Multi-task" if len(tasks) > 1 else "Single-task"
    suite_txt = f" ({suite})" if suite else ""
    total = len(tasks) * episodes * max_episode_steps
    share = (
        "every episode the learner collected, in order (random warm-up to the "
        "end of its budget)"
        if episodes == episodes_run
        else f"the first {episodes} of the {episodes_run} episodes each task's "
        "learner collected, in order (the first half of its replay buffer)"
    )
    cpu = sum(c.cpu_seconds for c in curves) / 3600
    n_tasks = len(tasks)
    return f"""{kind_txt} offline dataset of Meta-World v3: {n_tasks} task(s)\
{suite_txt}, **{kind}**: {share}; {episodes} episodes per task of \
{max_episode_steps} steps ({total:,} transitions), recipe seed {seed}. Built \
by the recipe `dataset_recipes` {package_version} (replay recipe v{recipe_version}).

### Behaviour policy: a SAC learner

Per task, {sac_description} Trained online from scratch for \
{episodes_run * max_episode_steps:,} environment steps on the task's training \
goals; every episode it collected is recorded with the actions it executed. \
The published tables use the same kind of data at about 1 M steps per task \
(Meta-World v2); this budget is smaller, see the learner table.

### Reproducibility

The same command on the same machine gives the same arrays: the learner runs \
in one torch thread with seeded RNGs and resumes from exact checkpoints. \
Across CPUs or library versions the floating-point results of the networks \
may differ, and with them the whole run.

### Goals and evaluation

Meta-World ignores reset seeds; goals come from the make-seed. \
{env_meta["goal_rule"]}. Training make-seeds: {env_meta["train_make_seeds"]}; \
evaluation make-seed: {env_meta["eval_make_seed"]}. Rebuild the evaluation \
environment of any task with `dataset_recipes.make_env(dataset, task_name)`.

### Layout

Observations float32 (39,), T+1 per episode; actions float32 (4,). Per-step \
infos: `{schema.INFO_TASK_ID}`, `{schema.INFO_TASK_NAME}`, `{schema.INFO_SUCCESS}` \
(as every recipe dataset), `{schema.INFO_EPISODE_INDEX}` (the episode's index \
in the learner's run) and `{schema.INFO_LEARNER_STEP}` (environment steps the \
learner had taken before this step). Metadata `{schema.METADATA_LEARNER}` holds \
SAC's settings and the learner table below.

### Measured per-task statistics

Success = success at any step of the episode (the standard Meta-World metric); \
reference scores: mean return of a uniform random policy (min) and of the \
noise-free scripted expert (max) on held-out evaluation goals.

{stats_markdown(stats)}

### The learner over its budget

Success of the recorded episodes per tenth of the budget (data), and of the \
learner's deterministic policy on {eval_episodes} held-out goals at the end of \
each tenth (greedy). CPU time: {cpu:.2f} CPU-hours in all.

{learner_markdown(curves)}

### Reproduce

```
{command}
```
"""
