"""The SAC learners of a replay build, as a figure and two markdown tables.

Reads the ``learner`` and ``task_stats`` metadata that a replay build stores
in its datasets (nothing is re-run) and writes the learning curves (success of
the recorded episodes per tenth of the budget, and of the greedy policy on
held-out goals) to a PNG, and prints the per-task tables for the docs.

    python examples/replay_curves.py metaworld-v3/mt5/near-optimal-replay-v0 \
        --out docs/img/replay_mt5.png
"""

from __future__ import annotations

import argparse

import minari

from dataset_recipes import LearnerCurve, schema, stats_of
from dataset_recipes.card import learner_markdown, stats_markdown


def curves_of(dataset_id: str) -> list[LearnerCurve]:
    meta = minari.load_dataset(dataset_id).storage.metadata
    tasks = meta[schema.METADATA_LEARNER]["tasks"]
    return [LearnerCurve.from_json(tasks[t]) for t in meta[schema.METADATA_TASKS]]


def plot(curves: list[LearnerCurve], path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    FigureCanvasAgg(fig)
    data_ax, greedy_ax = fig.subplots(1, 2, sharey=True)
    for c in curves:
        tenths = [c.env_steps * (k + 0.5) / 10 / 1000 for k in range(10)]
        data = [100 * x for x in c.data_success_by_tenth]
        data_ax.plot(tenths, data, marker="o", ms=3, label=c.task)
        steps = [e * c.env_steps / c.episodes / 1000 for e in c.greedy_after_episodes]
        greedy_ax.plot(steps, [100 * x for x in c.greedy_success], marker="o", ms=3)
    data_ax.set_title("recorded episodes (per tenth)", fontsize=9)
    greedy_ax.set_title("greedy policy, 10 held-out goals", fontsize=9)
    for ax in (data_ax, greedy_ax):
        ax.set_xlabel("learner env steps (thousands)")
    data_ax.set_ylabel("success %")
    data_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset_id")
    parser.add_argument("--out", help="PNG of the learning curves")
    args = parser.parse_args()
    curves = curves_of(args.dataset_id)
    meta = minari.load_dataset(args.dataset_id).storage.metadata
    print(stats_markdown(stats_of(meta)), end="\n\n")
    print(learner_markdown(curves))
    if args.out:
        plot(curves, args.out)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
