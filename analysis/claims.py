"""The paper's five claims, tested on one profile's results: numbers, rliable CIs, a verdict.

Reads ``results/<profile>/{main,undesirable_size,occupancy_ablation}/summary.csv`` and the
last-k tables beside them (``last<k>/summary.csv``) and writes ``results/<profile>/claims.md``.

Every claim is a set of comparisons "A is better than B" on one metric (normalized return or
normalized cost, lower cost being better), each the probability of improvement P(A better than
B) with its 95% stratified-bootstrap CI (rliable, ``uniq.stats``; runs of the two methods
resampled within each task, over the tasks the claim names; with several tasks, also on each
task alone). One rule gives every verdict; ``RULE`` states it, and every report prints it.

    uv run python analysis/claims.py [--results results/quick] [--last-k 3]
    uv run python analysis/claims.py --results results/quick results/paper_data \\
        --tasks SafetyPointGoal1-v0 SafetyPointButton1-v0 --out results/paper_data/claims_beside_quick.md
"""

from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniq.atomic import atomic_write_text  # noqa: E402
from uniq.stats import ScoreSet, probability_of_improvement, score_arrays  # noqa: E402

REF = "uniq"
METRIC = {"return": "return_normalized", "cost": "cost_normalized"}
HOLDS, FAILS, OPEN = "holds", "does not hold", "unresolved at this budget"
MIXED = "holds on average, not on every task"
RULE = f"""Verdicts. Each claim is a set of comparisons "A is better than B", each the probability of
improvement P(A better than B) over the claim's tasks (the mean over tasks of a per-task
Mann-Whitney probability) with its 95% stratified-bootstrap CI, and, with several tasks, the
same on each task alone.

- **{HOLDS}**: every comparison's CI lies above 0.5 and no task's CI lies below 0.5;
- **{MIXED}**: every comparison's CI lies above 0.5, but on some task one lies below 0.5;
- **{FAILS}**: some comparison's CI lies below 0.5;
- **{OPEN}**: otherwise.

The |D_UN| claim compares each method at the largest |D_UN| with itself at the smallest, and
"most for UNIQ" sets UNIQ's drop in normalized cost against each other method's without hidden
labels (bootstrap CI of the difference of the drops, over the tasks where both ran both sizes):
a CI below 0 makes it fail, one not above 0 leaves it open. "Occupancy correction helps" asks
for one metric better and the other not worse: it holds when one CI lies above 0.5 and the
other does not lie below; it does not hold when one lies below and the other does not lie
above; and, as every claim, it holds only on average where a CI on one task lies below 0.5.
No correction for multiple comparisons: with k comparisons and m tasks at 95%, a
claim that fails, or holds only on average, by one of them is weaker evidence than one that
does by all; with 5 runs a task the percentile CIs are narrow (1.00 [1.00, 1.00]: every run
of one method better than every run of the other)."""


def read(results: Path, experiment: str, scoring: str) -> pd.DataFrame | None:
    path = results / experiment / ("" if scoring == "final" else scoring) / "summary.csv"
    return pd.read_csv(path) if path.exists() else None


class NoRuns(Exception):
    """A claim compares a method the table has no runs of: the claim is not tested."""


def compare(df: pd.DataFrame, a: str, b: str, metric: str, reps: int) -> dict:
    """P(a better than b) on ``metric`` over df's tasks, with its 95% CI."""
    for m in (a, b):
        if not df["algo"].eq(m).any():
            raise NoRuns(f"not tested (no {m} run)")
    sub = df[df["algo"].isin([a, b])]
    scores = score_arrays(sub)
    if not scores.tasks:
        raise NoRuns(f"not tested (no task with runs of both {a} and {b})")
    c = dict(a=a, b=b, metric=metric, tasks=scores.tasks, dropped=scores.dropped_tasks)
    c |= _poi(scores, a, b, metric, reps)
    if len(scores.tasks) > 1:  # each task's column of the same arrays: the P's average to c's
        c["per_task"] = {
            t: _poi(_column(scores, j), a, b, metric, reps) for j, t in enumerate(scores.tasks)
        }
    return c


def _column(scores: ScoreSet, j: int) -> ScoreSet:
    """``scores`` on its ``j``-th task alone."""
    arrays = {k: {m: x[:, j : j + 1] for m, x in per.items()} for k, per in scores.arrays.items()}
    return ScoreSet(tasks=[scores.tasks[j]], dropped_tasks=[], arrays=arrays)


def _poi(scores, a: str, b: str, metric: str, reps: int) -> dict:
    poi = probability_of_improvement(scores, reference=a, reps=reps)
    row = poi[(poi["baseline"] == b) & (poi["metric"] == METRIC[metric])].iloc[0]
    return dict(p=row["poi"], lo=row["ci_low"], hi=row["ci_high"])


def rule(comparisons: list[dict]) -> str:
    if not comparisons:
        return "not tested (no method to compare with)"
    if any(c["hi"] < 0.5 for c in comparisons):
        return FAILS
    if not all(c["lo"] > 0.5 for c in comparisons):
        return OPEN
    return MIXED if _loses_on_a_task(comparisons) else HOLDS


def _loses_on_a_task(comparisons: list[dict]) -> bool:
    return any(t["hi"] < 0.5 for c in comparisons for t in c.get("per_task", {}).values())


def baselines(df: pd.DataFrame) -> list[str]:
    """The methods without hidden labels, UNIQ excepted, in the table's order."""
    oracle = df.groupby("algo")["uses_hidden_labels"].any()
    return [m for m in dict.fromkeys(df["algo"]) if m != REF and not oracle[m]]


def means(df: pd.DataFrame, methods: list[str]) -> list[str]:
    """Per task, each method's mean return / cost (raw units) over its seeds."""
    lines = []
    for task, t in df.groupby("task", sort=False):
        cells = []
        for m in methods:
            r = t[t["algo"] == m]
            if len(r):
                cells.append(f"{m} {r['return_mean'].mean():.4g} / {r['cost_mean'].mean():.3g}")
        lines.append(f"{_names([task])}: " + ", ".join(cells))
    return lines


def _ci(c: dict) -> str:
    return f"{c['p']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}]"


def fmt(c: dict) -> str:
    better = "higher" if c["metric"] == "return" else "lower"
    line = f"P({c['a']} {c['metric']} {better} than {c['b']}) = {_ci(c)}"
    if "per_task" in c:
        line += f" over {len(c['tasks'])} tasks; " + ", ".join(
            f"{_names([t])} {_ci(p)}" for t, p in c["per_task"].items()
        )
    if c.get("dropped"):
        line += f" (left out: {', '.join(c['dropped'])}, where one of the two has no run)"
    return line


def claim_lowest_cost(main: pd.DataFrame, reps: int) -> tuple[str, list[str]]:
    nav = main[~main["env"].str.contains("Velocity")]
    if nav.empty:
        return "not tested (no navigation task)", []
    cs = [compare(nav, REF, b, "cost", reps) for b in baselines(nav)]
    return rule(cs), means(nav, [REF, *baselines(nav)]) + [fmt(c) for c in cs]


def claim_button_return(main: pd.DataFrame, reps: int) -> tuple[str, list[str]]:
    button = main[main["env"].str.contains("Button")]
    if button.empty:
        return "not tested (no Button task)", []
    cs = [compare(button, b, REF, "return", reps) for b in baselines(button)]
    return rule(cs), means(button, [REF, *baselines(button)]) + [fmt(c) for c in cs]


def claim_safer_than_bc_safe(main: pd.DataFrame, reps: int) -> tuple[str, list[str]]:
    cs = [compare(main, REF, "bc-safe", "cost", reps)]
    return rule(cs), means(main, [REF, "bc-safe"]) + [fmt(c) for c in cs]


def _both_sizes(df: pd.DataFrame, algo: str, small: int, large: int) -> set[str]:
    """The tasks on which ``algo`` ran at both sizes."""
    ran = df[df["algo"] == algo].groupby("task")["n_un"].apply(set)
    return {t for t, sizes in ran.items() if {small, large} <= sizes}


def _drop(
    df: pd.DataFrame, algo: str, small: int, large: int, tasks: list[str], rs, reps: int
) -> np.ndarray:
    """Bootstrap samples of algo's mean over ``tasks`` of its normalized cost at ``small``
    minus at ``large`` (runs resampled within each task and size)."""
    out = np.zeros(reps)
    for task in tasks:
        t = df[(df["algo"] == algo) & (df["task"] == task)]
        lo = t[t["n_un"] == small]["cost_normalized"].to_numpy()
        hi = t[t["n_un"] == large]["cost_normalized"].to_numpy()
        out += lo[rs.randint(0, len(lo), (reps, len(lo)))].mean(1)
        out -= hi[rs.randint(0, len(hi), (reps, len(hi)))].mean(1)
    return out / len(tasks)


def claim_undesirable_size(sweep: pd.DataFrame, reps: int) -> tuple[str, list[str]]:
    sweep = sweep.assign(task=sweep["env"])  # one task per env: the sizes are compared, not pooled
    small, large = sweep["n_un"].min(), sweep["n_un"].max()
    lines, cs = [f"tasks: {_names(dict.fromkeys(sweep['env']))}"], []
    for algo in dict.fromkeys(sweep["algo"]):
        costs = sweep[sweep["algo"] == algo].groupby("n_un")["cost_mean"].mean()
        lines.append(
            f"{algo} cost at |D_UN| = " + ", ".join(f"{n}: {c:.3g}" for n, c in costs.items())
        )
        at = sweep[sweep["algo"] == algo].assign(
            algo=lambda d: d["n_un"].map({small: "small", large: "large"})
        )
        try:
            c = compare(at.dropna(subset=["algo"]), "large", "small", "cost", reps)
        except NoRuns:
            lines.append(f"{algo}: no task with runs at both {small} and {large}")
            continue
        cs.append(c | dict(a=f"{algo} at {large}", b=f"{algo} at {small}"))
    diffs = []
    for other in baselines(sweep):
        shared = sorted(
            _both_sizes(sweep, REF, small, large) & _both_sizes(sweep, other, small, large)
        )
        if not shared:
            lines.append(f"{other}: no task where both it and UNIQ ran at {small} and {large}")
            continue
        # a stream per pair: no CI moves with the list of methods
        rs = np.random.RandomState(zlib.crc32(other.encode()))
        d = _drop(sweep, REF, small, large, shared, rs, reps)
        d -= _drop(sweep, other, small, large, shared, rs, reps)
        lo, hi = np.percentile(d, [2.5, 97.5])
        diffs.append((lo, hi))
        lines.append(
            f"UNIQ's drop in normalized cost from {small} to {large} minus {other}'s "
            f"(over {_names(shared)}): "
            f"{d.mean():.2f} [{lo:.2f}, {hi:.2f}]"
        )
    lines += [fmt(c) for c in cs]
    own = [c for c in cs if c["a"].startswith(f"{REF} ")]
    if not own:
        return f"not tested (no {REF} runs at both {small} and {large})", lines
    verdict = rule(own)
    if verdict == FAILS or any(hi < 0 for _, hi in diffs):
        return FAILS, lines  # its cost does not drop, or another method's drops more
    if not diffs:
        return f"not tested (no other method ran both sizes on a task {REF} ran them on)", lines
    return (verdict if all(lo > 0 for lo, _ in diffs) else OPEN), lines


def claim_occupancy(ablation: pd.DataFrame, reps: int) -> tuple[str, list[str]]:
    ret, cost = (compare(ablation, REF, "uniq-nocorr", m, reps) for m in ("return", "cost"))
    if (ret["lo"] > 0.5 and cost["hi"] >= 0.5) or (cost["lo"] > 0.5 and ret["hi"] >= 0.5):
        verdict = HOLDS
    elif (ret["hi"] < 0.5 and cost["lo"] <= 0.5) or (cost["hi"] < 0.5 and ret["lo"] <= 0.5):
        verdict = FAILS
    else:
        verdict = OPEN
    if verdict == HOLDS and _loses_on_a_task([ret, cost]):
        verdict = MIXED
    arms = [m for m in dict.fromkeys(ablation["algo"])]
    return verdict, means(ablation, arms) + [fmt(ret), fmt(cost)]


CLAIMS = [  # (claim, the experiment it reads, its test)
    ("UNIQ has the lowest cost on the Safety-Gym tasks", "main", claim_lowest_cost),
    ("Its return is lower on the Button tasks", "main", claim_button_return),
    ("A larger D_UN lowers cost, most for UNIQ", "undesirable_size", claim_undesirable_size),
    ("UNIQ is safer than BC-safe", "main", claim_safer_than_bc_safe),
    ("Occupancy correction helps", "occupancy_ablation", claim_occupancy),
]


def _names(tasks) -> str:
    return ", ".join(t.removeprefix("Safety") for t in tasks)


def read_all(results: Path, scoring: str, tasks: list[str] | None) -> dict[str, pd.DataFrame | str]:
    """Each experiment's table under ``results`` for ``scoring``, restricted to ``tasks``; for an
    experiment with no runs there, why (the verdict it gets)."""
    out = {}
    for exp in dict.fromkeys(e for _, e, _ in CLAIMS):
        df = read(results, exp, scoring)
        if df is None:
            out[exp] = f"not tested (no {exp} experiment)"
        elif tasks and not df["env"].isin(tasks).any():
            ran = _names(dict.fromkeys(df["env"]))
            out[exp] = f"not tested (no {exp} runs on {_names(tasks)}; its tasks: {ran})"
        else:
            out[exp] = df[df["env"].isin(tasks)] if tasks else df
    return out


def share_tasks(tables: list[dict[str, pd.DataFrame | str]]) -> None:
    """Restrict each experiment, in place, to the tasks every profile ran it on (where every
    profile has it), so a verdict that differs reflects the profile, not a different task set."""
    for exp, first in tables[0].items():
        dfs = [t[exp] for t in tables]
        if not all(isinstance(df, pd.DataFrame) for df in dfs):
            continue
        shared = set(first["env"]).intersection(*(df["env"] for df in dfs))
        for t in tables:
            t[exp] = (
                t[exp][t[exp]["env"].isin(shared)]
                if shared
                else f"not tested (the profiles' {exp} runs share no task)"
            )


def main_tasks(results: Path) -> list[str]:
    df = read(results, "main", "final")
    if df is None:
        raise SystemExit(f"{results}/main/summary.csv not found: run the profile's workflow first")
    return list(dict.fromkeys(df["env"]))


def check_tasks(results: Path, tasks: list[str]) -> None:
    """--tasks must name tasks of the profile's main comparison (a typo would narrow silently)."""
    have = main_tasks(results)
    missing = [t for t in tasks if t not in have]
    if missing:
        raise SystemExit(
            f"{results}/main has no runs of {', '.join(missing)}; its tasks: {', '.join(have)}"
        )


def verdicts(tables: dict[str, pd.DataFrame | str], reps: int) -> dict[str, tuple[str, list[str]]]:
    out = {}
    for name, exp, test in CLAIMS:
        if isinstance(tables[exp], str):
            out[name] = (tables[exp], [])
            continue
        try:
            out[name] = test(tables[exp], reps)
        except NoRuns as missing:
            out[name] = (str(missing), [])
    return out


def _scope(tasks: list[str] | None) -> str:
    return "" if not tasks else " on " + _names(tasks)


def report(results: Path, last_k: int, reps: int, tasks: list[str] | None = None) -> str:
    scorings = {
        "final": "the final policy",
        f"last{last_k}": f"the last {last_k} evaluations' mean",
    }
    if tasks:
        check_tasks(results, tasks)
    found = {}
    for scoring in scorings:
        tables = read_all(results, scoring, tasks)
        if not isinstance(tables["main"], str):
            found[scoring] = verdicts(tables, reps)
    if not found:
        raise SystemExit(f"{results}/main/summary.csv not found: run the profile's workflow first")
    out = [
        f"# The paper's claims on {results}{_scope(tasks)}",
        "",
        "Written by `uv run python analysis/claims.py`; P(...) are rliable probabilities of "
        "improvement with 95% stratified-bootstrap CIs, on normalized scores; the per-task "
        "means are in raw units (return / cost).",
        "",
        "| claim | " + " | ".join(f"scored by {scorings[s]}" for s in found) + " |",
        "|---|" + "---|" * len(found),
    ]
    for name, _, _ in CLAIMS:
        out.append(f"| {name} | " + " | ".join(f"**{found[s][name][0]}**" for s in found) + " |")
    out += ["", RULE]
    for s, found_s in found.items():
        out += ["", f"## Scored by {scorings[s]}"]
        for name, (verdict, lines) in found_s.items():
            out += ["", f"- *{name}*: **{verdict}**"] + [f"  - {line}" for line in lines]
    return "\n".join(out) + "\n"


def beside(profiles: list[Path], reps: int, tasks: list[str] | None = None) -> str:
    """Each claim's verdict on each profile's results, side by side (final policies), then the
    numbers behind each, on the same tasks for every profile (``tasks``, which each profile's
    main comparison must have; by default the tasks all of them have; each experiment then on
    the tasks every profile ran it on: :func:`share_tasks`)."""
    for results in profiles:
        if tasks:
            check_tasks(results, tasks)
        else:
            main_tasks(results)  # names a profile not run yet
    tables = [read_all(results, "final", tasks) for results in profiles]
    share_tasks(tables)
    if isinstance(tables[0]["main"], str):
        raise SystemExit("the profiles' main comparisons share no task: nothing to set beside")
    shared_main = list(dict.fromkeys(tables[0]["main"]["env"]))
    found = {results: verdicts(t, reps) for results, t in zip(profiles, tables, strict=True)}
    names = [str(r) for r in profiles]
    out = [
        f"# The paper's claims, profile beside profile{_scope(tasks or shared_main)}",
        "",
        "Written by `uv run python analysis/claims.py --results "
        + " ".join(map(str, profiles))
        + (" --tasks " + " ".join(tasks) if tasks else "")
        + "`; final policies; P(...) are rliable probabilities of improvement with 95% "
        "stratified-bootstrap CIs. Each experiment is read on the tasks every profile ran it "
        "on. Normalized returns rest on each profile's own demonstrator rollouts (R_min, "
        "R_max), so they are not comparable across profiles; the verdicts are: a probability "
        "of improvement ranks runs within one task and profile, and the cost's normalizer is "
        "the task's cost limit in every profile.",
        "",
        "| claim | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for name, _, _ in CLAIMS:
        out.append(f"| {name} | " + " | ".join(f"**{found[r][name][0]}**" for r in profiles) + " |")
    out += ["", RULE]
    for name, _, _ in CLAIMS:
        out += ["", f"## {name}"]
        for results in profiles:
            verdict, lines = found[results][name]
            out += ["", f"- {results}: **{verdict}**"] + [f"  - {line}" for line in lines]
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--results", nargs="+", type=Path, default=[Path("results/quick")],
        help="a profile's results folder; several: their verdicts side by side (needs --out)",
    )  # fmt: skip
    p.add_argument(
        "--tasks", nargs="+", help="only these tasks (e.g. the tasks two profiles share)"
    )
    p.add_argument("--out", type=Path, help="where to write (default: RESULTS/claims.md)")
    p.add_argument(
        "--last-k",
        type=int,
        help="the last-k tables' k (aggregate.last_k; default 3; one profile only)",
    )
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    args = p.parse_args()
    if args.out is None and len(args.results) > 1:
        p.error("several --results are compared into one file: name it with --out")
    if args.out is None and args.tasks:
        p.error("--tasks gives claims on part of the profile: name the file with --out")
    if args.last_k is not None and len(args.results) > 1:
        p.error("several --results are compared on their final policies: drop --last-k")
    if len(args.results) > 1:
        text = beside(args.results, args.reps, args.tasks)
    else:
        text = report(args.results[0], args.last_k or 3, args.reps, args.tasks)
    atomic_write_text(args.out or args.results[0] / "claims.md", text)
    print(text)


if __name__ == "__main__":
    main()
