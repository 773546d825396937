"""Figures for one experiment, from the CSVs that ``uniq-bench aggregate`` wrote.

Each figure is written as ``{out}/{experiment}_{kind}.png`` and ``.pdf`` and gets a caption
``{out}/captions/{experiment}_{kind}.rst`` (Snakemake report captions). Kinds per experiment:

- ``main`` (and any other non-sweep experiment): ``aggregate`` (IQM/median/mean with 95% CIs of
  normalized return and cost), ``profiles`` (performance profiles), ``poi`` (probability of
  improvement of the reference method over each baseline);
- ``undesirable_size``, ``mix_ratio``: ``sweep`` (IQM of normalized return and cost against
  |D_UN| or the desirable fraction of D_MIX);
- ``occupancy_ablation``: ``ablation`` (per-env return and cost of UNIQ with and without the
  occupancy correction), ``aggregate``, ``poi``;
- every experiment, when curve.csv files are given: ``curves`` (learning curves per task).

Sized for a paper column (3.3 in wide, fonts >= 7 pt); method colours are fixed across figures
(:func:`method_color`), methods are printed by their display names (meta.json's
``display_names``, written by ``uniq-bench aggregate --display``, through
:func:`uniq.stats.display_name`: the tables' names, a label without one as itself; † marks the
oracle) in meta.json's method order; cost panels draw the cost limit (normalized cost 1) dashed
and label it; each caption states the number of tasks and the seeds. Figures are drawn on
``matplotlib.figure.Figure`` with the Agg canvas (no pyplot global state).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from uniq.atomic import atomic_write_bytes, atomic_write_text
from uniq.stats import KNOWN_METHODS, SWEEPS, StatsError, display_name, method_order

log = logging.getLogger(__name__)

COLUMN_WIDTH = 3.3  # inches, one column of a two-column paper
# Okabe-Ito (colour-blind safe), one per label of uniq.stats.KNOWN_METHODS (zip's strict check
# keeps the two lists one): UNIQ and its variants warm, baselines cool.
METHOD_COLORS = dict(
    zip(
        KNOWN_METHODS,
        # uniq,     uniq-nocorr, uniq-paper-actor, bc-mix, bc-safe,   dwbc,      safedice
        ("#D55E00", "#E69F00", "#994F00", "#56B4E9", "#009E73", "#332288", "#CC79A7"),
        strict=True,
    )
)
# Fallback for other names: distinct from the fixed colours above.
_FALLBACK_COLORS = ("#7F7F7F", "#8C564B", "#999933", "#882255", "#000000")
RC = {
    "font.size": 7,
    "axes.titlesize": 7,
    "axes.labelsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "lines.linewidth": 1.2,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "pdf.fonttype": 42,  # embed TrueType: editable text, accepted by publishers
    "savefig.dpi": 300,
}
METRIC_LABEL = {"return_normalized": "Normalized return", "cost_normalized": "Normalized cost"}
# Two-line axis labels: one line would overflow a half-column panel.
AXIS_LABEL = {
    "return_normalized": "Normalized return\n(higher is better)",
    "cost_normalized": "Normalized cost\n(lower is better)",
}
ARROW = {"return_normalized": "higher is better", "cost_normalized": "lower is better"}
LIMIT_LABEL = "cost limit"
LINE_WIDTH = 1.0  # curves and their legend handles
BAND_ALPHA = 0.12  # light enough that five overlapping CI bands stay readable
# Probability-of-improvement axes: a little beyond [0, 1], so marks at 0 and 1 are whole.
POI_XLIM = (-0.04, 1.04)


def method_color(name: str) -> str:
    """Fixed colour for known methods; for others a deterministic pick from a fallback list."""
    return (
        METHOD_COLORS.get(name)
        or _FALLBACK_COLORS[zlib.crc32(name.encode()) % len(_FALLBACK_COLORS)]
    )


def short_env(name: str) -> str:
    """``SafetyPointGoal1-v0`` -> ``PointGoal1`` (keeps labels readable at column width)."""
    return re.sub(r"-v\d+$", "", re.sub(r"^Safety", "", name))


def _short_task(task: str) -> str:
    return ", ".join([short_env(task.split(", ")[0])] + task.split(", ")[1:])


def _save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically (rendered in memory, then temp + rename)."""
    paths = []
    for fmt in ("png", "pdf"):
        buf = io.BytesIO()
        # No bbox_inches="tight": constrained layout already fits the content, and the file
        # keeps the exact column width (and skips a second draw).
        fig.savefig(buf, format=fmt)
        atomic_write_bytes(out_dir / f"{stem}.{fmt}", buf.getvalue())
        paths.append(out_dir / f"{stem}.{fmt}")
    return paths


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _band(ax, x, y, low, high, color, fmt: str = "-", zorder: float = 2, **line_kw) -> None:
    """A curve with its CI as a light shaded band (the line drawn above every band)."""
    ax.fill_between(x, low, high, color=color, alpha=BAND_ALPHA, lw=0, zorder=1)
    ax.plot(x, y, fmt, color=color, lw=LINE_WIDTH, zorder=zorder, **line_kw)


def _interval(ax, y: float, low: float, high: float, value: float, color) -> None:
    """One row of an interval plot: the CI as a thick bar, the point estimate as a tick."""
    ax.plot([low, high], [y, y], color=color, lw=3.5, alpha=0.45, solid_capstyle="butt")
    ax.plot([value], [y], "|", color=color, ms=7, mew=1.5)


_LIMIT_STYLE = dict(color="0.25", ls="--", lw=0.8)


def _threshold(ax, vertical: bool):
    """Dashed line at normalized cost 1, labelled ``cost limit``; the figure's legend shows it
    (:func:`_legend` with ``limit=True``)."""
    draw = ax.axvline if vertical else ax.axhline
    return draw(1.0, zorder=0.5, label=LIMIT_LABEL, **_LIMIT_STYLE)


def _message(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_axis_off()


def _legend(
    fig: Figure,
    methods: Sequence[str],
    meta: dict | None = None,
    marker: str = "",
    ms: float = 0,
    limit: bool = False,
) -> None:
    """One entry per method, drawn like the figure's lines (``marker``: the one they carry, none
    by default); ``limit`` adds the dashed cost-limit line (alone when ``methods`` is empty)."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=method_color(m), lw=LINE_WIDTH, marker=marker or "None", ms=ms)
        for m in methods
    ]
    labels = [_method_label(m, meta or {}) for m in methods]
    if limit:
        handles.append(Line2D([], [], **_LIMIT_STYLE))
        labels.append(LIMIT_LABEL)
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        # three columns fit a column's width unless a label is long ("UNIQ (paper actor)")
        ncol=min(len(handles), 3 if max(map(len, labels)) <= 12 else 2),
        handlelength=1.8,
        columnspacing=1.0,
    )


def _method_label(m: str, meta: dict) -> str:
    """A method's printed name: meta.json's ``display_names`` (a label missing there, or a
    meta.json written before them, prints as itself) and the oracle's dagger."""
    return display_name(m, meta.get("display_names"), meta.get("oracle_methods", ()))


def _id_ranges(ids: Sequence[int]) -> str:
    """``[0, 1, 2, 4]`` -> ``0-2, 4``."""
    ids = sorted({int(i) for i in ids})
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ", ".join(_range(r) for r in runs)


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


def _tasks_head(tasks: Sequence[str], task_unit: str, names: bool) -> str:
    """``3 tasks`` (``names``: ``3 tasks (CarGoal1, ...)``), a caption's run phrase's head."""
    head = _count(len(tasks), task_unit)
    return head + f" ({', '.join(map(_short_task, tasks))})" if names else head


def runs_phrase(
    runs: pd.DataFrame,
    tasks: Sequence[str] | None = None,
    task_unit: str = "task",
    names: bool = False,
) -> str:
    """``3 tasks, 5 seeds (0-4) per method and task`` from rows with task, algo (or method) and
    seed, as in summary.csv.

    ``tasks``: the tasks that count (default: all in ``runs``); ``names``: list them after the
    count. Seed counts that differ between (method, task) pairs read as a range (``3-5 seeds``),
    the seed ids as ranges (``0-2, 4``).
    """
    algo = "algo" if "algo" in runs.columns else "method"
    if tasks is None:
        tasks = list(dict.fromkeys(runs["task"]))
    runs = runs[runs["task"].isin(list(tasks))]
    head = _tasks_head(tasks, task_unit, names)
    if runs.empty:
        return f"{head}, no runs"
    counts = sorted(runs.groupby(["task", algo])["seed"].nunique().unique())
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    unit = "seed" if counts == [1] else "seeds"
    return f"{head}, {n} {unit} ({_id_ranges(runs['seed'])}) per method and {task_unit}"


def _runs(
    meta: dict,
    runs: pd.DataFrame | None,
    tasks: Sequence[str] | None = None,
    task_unit: str = "task",
    names: bool = False,
) -> str:
    """The caption's run phrase from the aggregated runs (summary.csv rows); without them, from
    meta's task list and seed count (no seed ids)."""
    if runs is not None:
        return runs_phrase(runs, tasks, task_unit, names)
    tasks = meta["tasks"] if tasks is None else tasks
    return f"{_tasks_head(tasks, task_unit, names)}, {meta['seeds']} per method and {task_unit}"


# ---------------------------------------------------------------- figure kinds


def plot_aggregate(
    agg: pd.DataFrame, meta: dict, runs: pd.DataFrame | None = None
) -> tuple[Figure, str]:
    """Rows IQM/median/mean, columns normalized return | cost; one CI bar per method."""
    methods = [m for m in meta["methods"] if m in set(agg["method"])]
    n = max(len(methods), 1)
    fig = _figure(COLUMN_WIDTH, 0.45 + 3 * (0.3 + 0.14 * n))
    axes = fig.subplots(3, 2, sharey=True, sharex="col")
    for j, metric in enumerate(("return_normalized", "cost_normalized")):
        for i, stat in enumerate(("IQM", "Median", "Mean")):
            ax = axes[i, j]
            sub = agg[(agg["metric"] == metric) & (agg["statistic"] == stat)].set_index("method")
            for k, m in enumerate(methods):
                if m not in sub.index:
                    continue
                r = sub.loc[m]
                _interval(ax, n - 1 - k, r["ci_low"], r["ci_high"], r["value"], method_color(m))
            if metric == "cost_normalized":
                _threshold(ax, vertical=True)
            ax.set_title(stat, loc="left", pad=2)
            ax.set_yticks(range(n), [_method_label(m, meta) for m in methods[::-1]])
            ax.set_ylim(-0.6, n - 0.4)
            ax.tick_params(axis="y", length=0)
            ax.spines["left"].set_visible(False)
            ax.grid(axis="x", lw=0.3, alpha=0.5)
        axes[2, j].set_xlabel(AXIS_LABEL[metric])
    if agg.empty:
        _message(axes[0, 0], "no task on which every method ran")
    _legend(fig, [], limit=True)  # methods are named on the y axis
    tasks = meta["aggregate_tasks"]
    cap = (
        f"Aggregate performance over {_runs(meta, runs, tasks, names=True)}: "
        "interquartile mean (IQM) of all runs, median of the tasks' mean scores, and mean of "
        "normalized return (left, higher is better) and normalized cost (right, lower is better; "
        "dashed line: the cost limit). Bars: 95% stratified-bootstrap CIs over runs "
        f"({meta['reps']} resamples); ticks: point estimates."
    )
    return fig, cap + _policy_note(meta)


def plot_profiles(
    prof: pd.DataFrame, meta: dict, runs: pd.DataFrame | None = None
) -> tuple[Figure, str]:
    """Performance profiles F(tau) = fraction of runs with score > tau, with CI bands."""
    methods = [m for m in meta["methods"] if m in set(prof["method"])]
    fig = _figure(COLUMN_WIDTH, 1.9)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("return_normalized", "cost_normalized"), strict=True):
        sub = prof[prof["metric"] == metric]
        for m in methods:
            s = sub[sub["method"] == m]
            _band(
                ax,
                s["tau"],
                s["fraction"],
                s["ci_low"],
                s["ci_high"],
                method_color(m),
                zorder=_zorder(m, meta),
            )
        if metric == "cost_normalized":
            _threshold(ax, vertical=True)
        ax.set_xlabel(f"τ ({METRIC_LABEL[metric].lower()})")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(ARROW[metric], loc="left", pad=2)
        ax.grid(lw=0.3, alpha=0.5)
    axes[0].set_ylabel("Fraction of runs > τ")
    if prof.empty:
        _message(axes[0], "no task on which every method ran")
    _legend(fig, methods, meta, limit=True)
    cap = (
        f"Performance profiles over {_runs(meta, runs, meta['aggregate_tasks'])}: fraction of runs "
        "(over all tasks and seeds) whose normalized "
        "return (left; higher curves are better) or normalized cost (right; lower curves are "
        "better, the value at the dashed line τ = 1 is the fraction of unsafe runs) exceeds τ. "
        f"Shaded: 95% stratified-bootstrap CIs ({meta['reps']} resamples)."
    )
    return fig, cap + _policy_note(meta)


def plot_poi(poi: pd.DataFrame, meta: dict, runs: pd.DataFrame | None = None) -> tuple[Figure, str]:
    """P(reference better than baseline) on return and on cost, one CI bar per baseline."""
    ref = meta["reference"]
    bases = [m for m in meta["methods"] if m in set(poi["baseline"])]
    n = max(len(bases), 1)
    fig = _figure(COLUMN_WIDTH, 0.75 + 0.17 * n)
    axes = fig.subplots(1, 2, sharey=True)
    titles = {"return_normalized": "Return (higher)", "cost_normalized": "Cost (lower)"}
    for ax, metric in zip(axes, ("return_normalized", "cost_normalized"), strict=True):
        sub = poi[poi["metric"] == metric].set_index("baseline")
        for k, b in enumerate(bases):
            r = sub.loc[b]
            _interval(ax, n - 1 - k, r["ci_low"], r["ci_high"], r["poi"], method_color(b))
        ax.axvline(0.5, color="0.25", ls="--", lw=0.8, zorder=0)
        ax.set_xlim(*POI_XLIM)
        ax.spines["bottom"].set_bounds(0, 1)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0", "", "0.5", "", "1"])  # no "1.0 0.0" clash
        ax.set_title(titles[metric], loc="left", pad=2)
        ax.set_yticks(range(n), [_method_label(b, meta) for b in bases[::-1]])
        ax.set_ylim(-0.6, n - 0.4)
        ax.tick_params(axis="y", length=0)
        ax.spines["left"].set_visible(False)
        ax.grid(axis="x", lw=0.3, alpha=0.5)
    name = _method_label(ref, meta)
    fig.supxlabel(f"P({name} better than baseline)", fontsize=7)
    if poi.empty:
        _message(axes[0], f"no probability of improvement: method {ref!r} missing")
    cap = (
        f"Probability of improvement of {name} over each baseline (Mann-Whitney per task, "
        f"averaged over {_runs(meta, runs, meta['aggregate_tasks'])}): on normalized return (left, "
        f"P({name} > baseline)) and on normalized cost (right, P({name} cost < baseline cost)). "
        f"Values above 0.5 (dashed) favour {name}. Bars: 95% stratified-bootstrap CIs "
        f"({meta['reps']} resamples); ticks: point estimates."
    )
    return fig, cap + _policy_note(meta)


_X_LABEL = {
    "n_un": "$|D_{\\mathrm{UN}}|$ (trajectories)",
    "mix_ratio": "Desirable fraction\nof $D_{\\mathrm{MIX}}$",
}


def plot_sweep(
    bx: pd.DataFrame, meta: dict, runs: pd.DataFrame | None = None, statistic: str = "IQM"
) -> tuple[Figure, str]:
    """IQM of normalized return and cost against the sweep variable, CI bands."""
    methods = [m for m in meta["methods"] if m in set(bx["method"])]
    xs = np.sort(bx["x"].unique())
    log_x = meta["x_name"] == "n_un" and len(xs) > 2 and xs.min() > 0 and xs.max() / xs.min() >= 8
    fig = _figure(COLUMN_WIDTH, 1.9)
    axes = fig.subplots(1, 2, sharex=True)
    for ax, metric in zip(axes, ("return_normalized", "cost_normalized"), strict=True):
        sub = bx[(bx["metric"] == metric) & (bx["statistic"] == statistic)]
        for m in methods:
            s = sub[sub["method"] == m].sort_values("x")
            _band(
                ax,
                s["x"],
                s["value"],
                s["ci_low"],
                s["ci_high"],
                method_color(m),
                "o-",
                zorder=_zorder(m, meta),
                ms=2.5,
            )
        if metric == "cost_normalized":
            _threshold(ax, vertical=False)
        if log_x:
            ax.set_xscale("log")
            ax.minorticks_off()
        ax.set_xticks(xs, [f"{x:.2f}".rstrip("0").rstrip(".") for x in xs])  # 1/3 -> 0.33
        ax.set_xlabel(_X_LABEL.get(meta["x_name"], meta["x_label"]))
        ax.set_ylabel(f"{statistic} {METRIC_LABEL[metric].lower()}")
        ax.set_title(ARROW[metric], loc="left", pad=2)
        ax.grid(lw=0.3, alpha=0.5)
    _legend(fig, methods, meta, marker="o", ms=2.5, limit=True)
    what = (
        "the number of unlabeled undesirable trajectories (size of D_UN)"
        if meta["x_name"] == "n_un"
        else "the fraction of desirable trajectories in D_MIX"
    )
    envs = [] if runs is None else list(dict.fromkeys(runs["env"]))
    where = f"{_count(len(envs), 'task')} ({', '.join(map(short_env, envs))}), " if envs else ""
    cap = (
        f"{statistic} of normalized return (left, higher is better) and normalized cost (right, "
        f"lower is better; dashed: the cost limit) against {what}, over tasks and seeds: "
        f"{where}{_runs(meta, runs, task_unit='sweep point')}. Shaded: 95% stratified-bootstrap "
        f"CIs ({meta['reps']} resamples)."
    )
    return fig, cap


def plot_ablation(
    table: pd.DataFrame, meta: dict, runs: pd.DataFrame | None = None
) -> tuple[Figure, str]:
    """Per env: mean normalized return and cost of each variant of UNIQ, with 95% CIs."""
    methods = [m for m in meta["methods"] if m in set(table["method"])]
    tasks = list(dict.fromkeys(table["task"]))
    n, k = len(tasks), len(methods)
    fig = _figure(COLUMN_WIDTH, 0.7 + 0.12 * n * k + 0.08 * n)
    axes = fig.subplots(1, 2, sharey=True)
    offsets = (np.arange(k) - (k - 1) / 2) * (0.7 / max(k, 1))
    for ax, metric in zip(axes, ("return_normalized", "cost_normalized"), strict=True):
        for j, m in enumerate(methods):
            s = table[table["method"] == m].set_index("task").reindex(tasks)
            y = n - 1 - np.arange(n) - offsets[j]
            err = np.vstack([s[metric] - s[f"{metric}_ci_low"], s[f"{metric}_ci_high"] - s[metric]])
            ax.errorbar(
                s[metric],
                y,
                xerr=np.nan_to_num(err),
                fmt="o",
                ms=3,
                color=method_color(m),
                elinewidth=LINE_WIDTH,
                capsize=0,
            )
        if metric == "cost_normalized":
            _threshold(ax, vertical=True)
        ax.set_yticks(range(n), [_short_task(t) for t in tasks[::-1]])
        ax.set_ylim(-0.6, n - 0.4)
        ax.set_xlabel(AXIS_LABEL[metric])
        ax.tick_params(axis="y", length=0)
        ax.spines["left"].set_visible(False)
        ax.grid(axis="x", lw=0.3, alpha=0.5)
    _legend(fig, methods, meta, marker="o", ms=3, limit=True)
    names = [_method_label(m, meta) for m in methods]
    cap = (
        "Occupancy-correction ablation: normalized return (left) and normalized cost (right; "
        "dashed: the cost limit) per task of "
        + (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names))
        + f": mean over seeds with 95% bootstrap CIs; {_runs(meta, runs, tasks)}."
    )
    return fig, cap


# ---------------------------------------------------------------- learning curves

CURVE_COLUMNS = (
    "step",
    "return_mean",
    "cost_mean",
    "return_normalized",
    "cost_normalized",
    "episodes",
)


def load_curves(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Read curve.csv files; run identity from .../{env}/{variant}/{algo}/seed{seed}/curve.csv."""
    frames = []
    for p in map(Path, paths):
        parts = p.parts
        if len(parts) < 5 or not re.fullmatch(r"seed\d+", parts[-2]):
            raise StatsError(
                f"{p}: cannot read the run from the path; expected "
                "results/P/runs/{env}/{variant}/{algo}/seed{seed}/curve.csv"
            )
        try:
            df = pd.read_csv(p)
        except (FileNotFoundError, pd.errors.EmptyDataError) as e:
            raise StatsError(
                f"{p}: cannot read curve ({e}); re-run training with --eval-every"
            ) from None
        missing = [c for c in CURVE_COLUMNS if c not in df.columns]
        if missing:
            raise StatsError(
                f"{p}: missing column(s) {', '.join(missing)}; expected {', '.join(CURVE_COLUMNS)}"
            )
        frames.append(
            df.assign(env=parts[-5], variant=parts[-4], algo=parts[-3], seed=int(parts[-2][4:]))
        )
    curves = pd.concat(frames, ignore_index=True)
    multi = curves.groupby("env")["variant"].nunique().max() > 1
    curves["task"] = curves["env"] + "/" + curves["variant"] if multi else curves["env"]
    return curves


def curve_bands(curves: pd.DataFrame, reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (task, algo, step): mean over seeds and 95% percentile bootstrap CI over seeds.

    Only steps that every seed of a (task, algo) evaluated are kept (a warning says when some
    are dropped), so a band never mixes different sets of seeds.
    """
    rs = np.random.RandomState(seed)
    rows = []
    for (task, algo), grp in curves.groupby(["task", "algo"], sort=False):
        seeds = grp["seed"].unique()
        counts = grp.groupby("step")["seed"].nunique()
        steps = counts.index[counts == len(seeds)]
        if len(steps) < len(counts):
            log.warning(
                "%s %s: %d step(s) not evaluated by every seed are left out of the curve",
                task,
                algo,
                len(counts) - len(steps),
            )
        for metric in ("return_normalized", "cost_normalized"):
            piv = (
                grp.pivot_table(index="step", columns="seed", values=metric)
                .loc[steps]
                .to_numpy(float)
            )
            mean = piv.mean(axis=1)
            if piv.shape[1] > 1:
                idx = rs.randint(0, piv.shape[1], size=(reps, piv.shape[1]))
                boot = piv[:, idx].mean(axis=2)  # (steps, reps)
                lo, hi = np.percentile(boot, [2.5, 97.5], axis=1)
            else:
                lo = hi = mean
            rows.append(
                pd.DataFrame(
                    dict(
                        task=task,
                        algo=algo,
                        metric=metric,
                        step=steps,
                        mean=mean,
                        ci_low=lo,
                        ci_high=hi,
                        n_seeds=len(seeds),
                    )
                )
            )
    return pd.concat(rows, ignore_index=True)


def plot_curves(
    bands: pd.DataFrame, meta: dict, seeds: Sequence[int] | None = None
) -> tuple[Figure, str]:
    """Rows = tasks, columns = normalized return | cost, one line + light CI band per method
    (the reference method's line on top); ``seeds``: the seed ids, for the caption."""
    tasks = list(dict.fromkeys(bands["task"]))
    methods = method_order(bands["algo"], meta.get("methods", ()))
    fig = _figure(COLUMN_WIDTH, 0.45 + 1.05 * len(tasks))
    axes = np.atleast_2d(fig.subplots(len(tasks), 2, sharex=True, squeeze=False))
    for i, task in enumerate(tasks):
        for j, metric in enumerate(("return_normalized", "cost_normalized")):
            ax = axes[i, j]
            sub = bands[(bands["task"] == task) & (bands["metric"] == metric)]
            for m in methods:
                s = sub[sub["algo"] == m]
                _band(
                    ax,
                    s["step"],
                    s["mean"],
                    s["ci_low"],
                    s["ci_high"],
                    method_color(m),
                    zorder=_zorder(m, meta),
                )
            if metric == "cost_normalized":
                _threshold(ax, vertical=False)
            ax.set_title(f"{_short_task(task)}", loc="left", pad=2)
            ax.set_ylabel(METRIC_LABEL[metric].replace("Normalized", "Norm."))
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 20k, 1M: no offset text
            ax.grid(lw=0.3, alpha=0.5)
        for j in range(2):
            axes[-1, j].set_xlabel("Training steps")
    _legend(fig, methods, meta, limit=True)
    nseeds = sorted(bands["n_seeds"].unique())
    n = _range(nseeds)
    ids = f" ({_id_ranges(seeds)})" if seeds is not None and len(seeds) else ""
    cap = (
        "Learning curves: normalized return (left, higher is better) and normalized cost (right, "
        "lower is better; dashed: the cost limit) of the policy during training, per task; "
        f"{_count(len(tasks), 'task')}, {n} seed{'' if n == '1' else 's'}{ids} per method and "
        "task. Lines: mean over seeds; shaded: 95% percentile bootstrap CIs over seeds."
    )
    return fig, cap


def _zorder(method: str, meta: dict) -> float:
    """The reference method's line drawn above the others'."""
    return 3 if method == meta.get("reference", "uniq") else 2


# ---------------------------------------------------------------- driver


def _range(values: Sequence[int]) -> str:
    return f"{values[0]}" if values[0] == values[-1] else f"{values[0]}-{values[-1]}"


def _rst(text: str) -> str:
    """Escape reStructuredText markup characters (``|x|`` would be a substitution)."""
    return "".join("\\" + c if c in "|*`" else c for c in text)


def _policy_note(meta: dict) -> str:
    if not meta["dropped_tasks"]:
        return ""
    return (
        " Only tasks on which every method ran are aggregated; left out: "
        + ", ".join(meta["dropped_tasks"])
        + "."
    )


def figure_kinds(experiment: str) -> list[str]:
    """The figures made for an experiment (``curves`` in addition when curves are given)."""
    if experiment in SWEEPS:
        return ["sweep"]
    if experiment == "occupancy_ablation":
        return ["ablation", "aggregate", "poi"]
    return ["aggregate", "profiles", "poi"]


def _read(summary_dir: Path, name: str) -> pd.DataFrame:
    path = summary_dir / name
    if not path.exists():
        raise StatsError(
            f"{path}: missing; run `uniq-bench aggregate --out {summary_dir} ...` first"
        )
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def make_figures(
    experiment: str,
    summary_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    curves: Sequence[str | os.PathLike] = (),
    reps: int = 2000,
    seed: int = 0,
) -> dict[str, str]:
    """Write every figure of ``experiment`` (PNG + PDF + caption .rst); returns kind -> caption."""
    summary_dir, out_dir = Path(summary_dir), Path(out_dir)
    meta_path = summary_dir / "meta.json"
    if not meta_path.exists():
        raise StatsError(
            f"{meta_path}: missing; run `uniq-bench aggregate --out {summary_dir} ...` first"
        )
    meta = json.loads(meta_path.read_text())
    if meta["experiment"] != experiment:
        raise StatsError(
            f"{summary_dir} holds experiment {meta['experiment']!r}, not {experiment!r}"
        )
    runs = _read(summary_dir, "summary.csv")  # the runs behind the figures, for the captions

    def curves_figure():
        frame = load_curves(curves)
        bands = curve_bands(frame, reps, seed)
        return plot_curves(bands, meta, seeds=sorted(frame["seed"].unique()))

    builders = {
        "aggregate": lambda: plot_aggregate(_read(summary_dir, "aggregate.csv"), meta, runs),
        "profiles": lambda: plot_profiles(_read(summary_dir, "profiles.csv"), meta, runs),
        "poi": lambda: plot_poi(_read(summary_dir, "poi.csv"), meta, runs),
        "sweep": lambda: plot_sweep(_read(summary_dir, "by_x.csv"), meta, runs),
        "ablation": lambda: plot_ablation(_read(summary_dir, "table.csv"), meta, runs),
        "curves": curves_figure,
    }
    kinds = figure_kinds(experiment) + (["curves"] if curves else [])
    captions = {}
    for kind in kinds:
        with matplotlib.rc_context(RC):
            fig, caption = builders[kind]()
            _save(fig, out_dir, f"{experiment}_{kind}")
        atomic_write_text(out_dir / "captions" / f"{experiment}_{kind}.rst", _rst(caption) + "\n")
        captions[kind] = caption
        log.info("figure %s_%s -> %s", experiment, kind, out_dir)
    return captions
