"""Before/after table of a code change: the same runs' results from two summaries, side by side.

For one task and a list of methods: each seed's return, cost and normalised cost before and
after, and the IQM of the normalised return and cost with its 95% stratified-bootstrap CI
(rliable, as `uniq-bench aggregate`), from two `summary.csv` files (`uniq-bench aggregate`
writes them). A method missing from one side is shown as n/a there.

    uv run python analysis/before_after.py --task SafetyHalfCheetahVelocity-v1 \
        --before results/quick/main/summary.csv results/quick/longer_runs/... \
        --after results/quick/fidelity/main/summary.csv ... \
        --methods uniq uniq-nocorr bc-safe bc-mix dwbc safedice --out before_after.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniq.atomic import atomic_write_text  # noqa: E402
from uniq.stats import interval_estimates, score_arrays  # noqa: E402


def _runs(paths: list[str], task: str, steps: int | None, variant: str) -> pd.DataFrame:
    df = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    df = df[(df["task"] == task) & (df["variant"] == variant)]
    if steps is not None:
        df = df[df["steps"] == steps]
    return df.drop_duplicates(["algo", "seed"], keep="last")


def _iqm(df: pd.DataFrame, method: str, metric: str, reps: int) -> str:
    runs = df[df["algo"] == method]
    if runs.empty:
        return "n/a"
    est = interval_estimates(score_arrays(runs, [metric]), reps=reps)
    row = est[(est["statistic"] == "IQM")].iloc[0]
    return f"{row['value']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"


def _seeds(df: pd.DataFrame, method: str) -> str:
    runs = df[df["algo"] == method].sort_values("seed")
    if runs.empty:
        return "n/a"
    return "<br>".join(
        f"s{int(r.seed)}: {r.return_mean:.0f} / {r.cost_mean:.1f} ({r.cost_normalized:.2f})"
        for r in runs.itertuples()
    )


def table(before: pd.DataFrame, after: pd.DataFrame, methods: list[str], reps: int) -> str:
    lines = [
        "| method | before: per seed return / cost (norm. cost) | after: per seed | "
        "IQM norm. return before | after | IQM norm. cost before | after |",
        "|:--|:--|:--|--:|--:|--:|--:|",
    ]
    for m in methods:
        cells = [
            m,
            _seeds(before, m),
            _seeds(after, m),
            _iqm(before, m, "return_normalized", reps),
            _iqm(after, m, "return_normalized", reps),
            _iqm(before, m, "cost_normalized", reps),
            _iqm(after, m, "cost_normalized", reps),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--before", nargs="+", required=True, help="summary.csv file(s)")
    p.add_argument("--after", nargs="+", required=True, help="summary.csv file(s)")
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--steps", type=int, help="only runs of this many training steps")
    p.add_argument(
        "--variant", default="default", help="dataset variant (a summary may hold several)"
    )
    p.add_argument("--reps", type=int, default=2000)
    p.add_argument("--title", default="")
    p.add_argument("--out", help="Markdown file (default: print)")
    args = p.parse_args(argv)
    before = _runs(args.before, args.task, args.steps, args.variant)
    after = _runs(args.after, args.task, args.steps, args.variant)
    text = (f"{args.title}\n\n" if args.title else "") + table(
        before, after, args.methods, args.reps
    )
    if args.out:
        atomic_write_text(args.out, text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
