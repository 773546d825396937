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
(:func:`method_color`); cost panels draw the threshold (normalized cost 1) dashed. Figures are
drawn on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot global state).
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
from uniq.stats import SWEEPS, StatsError, method_order

log = logging.getLogger(__name__)

COLUMN_WIDTH = 3.3  # inches, one column of a two-column paper
# Okabe-Ito (colour-blind safe) for the known methods: UNIQ warm, baselines cool.
METHOD_COLORS = {
    "uniq": "#D55E00",
    "uniq-nocorr": "#E69F00",
    "uniq-paper-actor": "#994F00",
    "bc-mix": "#56B4E9",
    "bc-safe": "#009E73",
    "dwbc": "#332288",
    "safedice": "#CC79A7",
}
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


def _band(ax, x, y, low, high, color, fmt: str = "-", **line_kw) -> None:
    """A curve with its CI as a shaded band."""
    ax.plot(x, y, fmt, color=color, lw=1.0, **line_kw)
    ax.fill_between(x, low, high, color=color, alpha=0.2, lw=0)


def _interval(ax, y: float, low: float, high: float, value: float, color) -> None:
    """One row of an interval plot: the CI as a thick bar, the point estimate as a tick."""
    ax.plot([low, high], [y, y], color=color, lw=3.5, alpha=0.45, solid_capstyle="butt")
    ax.plot([value], [y], "|", color=color, ms=7, mew=1.5)


def _threshold(ax, vertical: bool) -> None:
    """Dashed line at normalized cost 1 (the cost limit)."""
    kw = dict(color="0.25", ls="--", lw=0.8, zorder=0)
    ax.axvline(1.0, **kw) if vertical else ax.axhline(1.0, **kw)


def _message(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_axis_off()


def _legend(fig: Figure, methods: Sequence[str], oracle: Sequence[str] = ()) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=method_color(m), marker="o", ms=3) for m in methods]
    labels = [m + ("†" if m in oracle else "") for m in methods]
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=min(len(methods), 3),
        handlelength=1.5,
        columnspacing=1.0,
    )


def _method_label(m: str, oracle: Sequence[str]) -> str:
    return m + ("†" if m in oracle else "")


# ---------------------------------------------------------------- figure kinds


def plot_aggregate(agg: pd.DataFrame, meta: dict) -> tuple[Figure, str]:
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
            ax.set_yticks(
                range(n), [_method_label(m, meta["oracle_methods"]) for m in methods[::-1]]
            )
            ax.set_ylim(-0.6, n - 0.4)
            ax.tick_params(axis="y", length=0)
            ax.spines["left"].set_visible(False)
            ax.grid(axis="x", lw=0.3, alpha=0.5)
        axes[2, j].set_xlabel(AXIS_LABEL[metric])
    if agg.empty:
        _message(axes[0, 0], "no task on which every method ran")
    tasks = meta["aggregate_tasks"]
    cap = (
        f"Aggregate performance over {len(tasks)} task(s) ({', '.join(map(short_env, tasks))}; "
        f"{meta['seeds']} per method and task): interquartile mean (IQM), median and mean of "
        "normalized return (left, higher is better) and normalized cost (right, lower is better; "
        "dashed line: the cost limit). Bars: 95% stratified-bootstrap CIs over runs "
        f"({meta['reps']} resamples); ticks: point estimates."
    )
    return fig, cap + _policy_note(meta)


def plot_profiles(prof: pd.DataFrame, meta: dict) -> tuple[Figure, str]:
    """Performance profiles F(tau) = fraction of runs with score > tau, with CI bands."""
    methods = [m for m in meta["methods"] if m in set(prof["method"])]
    fig = _figure(COLUMN_WIDTH, 1.9)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("return_normalized", "cost_normalized"), strict=True):
        sub = prof[prof["metric"] == metric]
        for m in methods:
            s = sub[sub["method"] == m]
            _band(ax, s["tau"], s["fraction"], s["ci_low"], s["ci_high"], method_color(m))
        if metric == "cost_normalized":
            _threshold(ax, vertical=True)
        ax.set_xlabel(f"τ ({METRIC_LABEL[metric].lower()})")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(ARROW[metric], loc="left", pad=2)
        ax.grid(lw=0.3, alpha=0.5)
    axes[0].set_ylabel("Fraction of runs > τ")
    if prof.empty:
        _message(axes[0], "no task on which every method ran")
    _legend(fig, methods, meta["oracle_methods"])
    cap = (
        "Performance profiles: fraction of runs (over all tasks and seeds) whose normalized "
        "return (left; higher curves are better) or normalized cost (right; lower curves are "
        "better, the value at the dashed line τ = 1 is the fraction of unsafe runs) exceeds τ. "
        f"Shaded: 95% stratified-bootstrap CIs ({meta['reps']} resamples)."
    )
    return fig, cap + _policy_note(meta)


def plot_poi(poi: pd.DataFrame, meta: dict) -> tuple[Figure, str]:
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
        ax.set_xlim(0, 1)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0", "", "0.5", "", "1"])  # no "1.0 0.0" clash
        ax.set_title(titles[metric], loc="left", pad=2)
        ax.set_yticks(range(n), [_method_label(b, meta["oracle_methods"]) for b in bases[::-1]])
        ax.set_ylim(-0.6, n - 0.4)
        ax.tick_params(axis="y", length=0)
        ax.spines["left"].set_visible(False)
        ax.grid(axis="x", lw=0.3, alpha=0.5)
    fig.supxlabel(f"P({ref} better than baseline)", fontsize=7)
    if poi.empty:
        _message(axes[0], f"no probability of improvement: method {ref!r} missing")
    cap = (
        f"Probability of improvement of {ref} over each baseline (Mann-Whitney per task, averaged "
        f"over tasks): on normalized return (left, P({ref} > baseline)) and on normalized cost "
        f"(right, P({ref} cost < baseline cost)). Values above 0.5 (dashed) favour {ref}. Bars: "
        f"95% stratified-bootstrap CIs ({meta['reps']} resamples); ticks: point estimates."
    )
    return fig, cap + _policy_note(meta)


_X_LABEL = {
    "n_un": "$|D_{\\mathrm{UN}}|$ (trajectories)",
    "mix_ratio": "Desirable fraction\nof $D_{\\mathrm{MIX}}$",
}


def plot_sweep(bx: pd.DataFrame, meta: dict, statistic: str = "IQM") -> tuple[Figure, str]:
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
            _band(ax, s["x"], s["value"], s["ci_low"], s["ci_high"], method_color(m), "o-", ms=2.5)
        if metric == "cost_normalized":
            _threshold(ax, vertical=False)
        if log_x:
            ax.set_xscale("log")
            ax.minorticks_off()
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel(_X_LABEL.get(meta["x_name"], meta["x_label"]))
        ax.set_ylabel(f"{statistic} {METRIC_LABEL[metric].lower()}")
        ax.set_title(ARROW[metric], loc="left", pad=2)
        ax.grid(lw=0.3, alpha=0.5)
    _legend(fig, methods, meta["oracle_methods"])
    what = (
        "the number of unlabeled undesirable trajectories (size of D_UN)"
        if meta["x_name"] == "n_un"
        else "the fraction of desirable trajectories in D_MIX"
    )
    cap = (
        f"{statistic} of normalized return (left, higher is better) and normalized cost (right, "
        f"lower is better; dashed: the cost limit) against {what}, over tasks and seeds "
        f"({meta['seeds']} per method and task). Shaded: 95% stratified-bootstrap CIs "
        f"({meta['reps']} resamples)."
    )
    return fig, cap


def plot_ablation(table: pd.DataFrame, meta: dict) -> tuple[Figure, str]:
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
                elinewidth=1.0,
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
    _legend(fig, methods, meta["oracle_methods"])
    cap = (
        "Occupancy-correction ablation: normalized return (left) and normalized cost (right; "
        "dashed: the cost limit) per task of " + " and ".join(methods) + f": mean over seeds "
        f"({meta['seeds']}) with 95% bootstrap CIs."
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


def plot_curves(bands: pd.DataFrame, meta: dict) -> tuple[Figure, str]:
    """Rows = tasks, columns = normalized return | cost, one line + CI band per method."""
    tasks = list(dict.fromkeys(bands["task"]))
    methods = method_order(bands["algo"])
    fig = _figure(COLUMN_WIDTH, 0.45 + 1.05 * len(tasks))
    axes = np.atleast_2d(fig.subplots(len(tasks), 2, sharex=True, squeeze=False))
    for i, task in enumerate(tasks):
        for j, metric in enumerate(("return_normalized", "cost_normalized")):
            ax = axes[i, j]
            sub = bands[(bands["task"] == task) & (bands["metric"] == metric)]
            for m in methods:
                s = sub[sub["algo"] == m]
                _band(ax, s["step"], s["mean"], s["ci_low"], s["ci_high"], method_color(m))
            if metric == "cost_normalized":
                _threshold(ax, vertical=False)
            ax.set_title(f"{_short_task(task)}", loc="left", pad=2)
            ax.set_ylabel(METRIC_LABEL[metric].replace("Normalized", "Norm."))
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 20k, 1M: no offset text
            ax.grid(lw=0.3, alpha=0.5)
        for j in range(2):
            axes[-1, j].set_xlabel("Training steps")
    _legend(fig, methods, meta.get("oracle_methods", ()))
    nseeds = sorted(bands["n_seeds"].unique())
    cap = (
        "Learning curves: normalized return (left, higher is better) and normalized cost (right, "
        "lower is better; dashed: the cost limit) of the policy during training, per task. "
        f"Lines: mean over seeds ({_range(nseeds)} per method and task); shaded: 95% percentile "
        "bootstrap CIs over seeds."
    )
    return fig, cap


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
    builders = {
        "aggregate": lambda: plot_aggregate(_read(summary_dir, "aggregate.csv"), meta),
        "profiles": lambda: plot_profiles(_read(summary_dir, "profiles.csv"), meta),
        "poi": lambda: plot_poi(_read(summary_dir, "poi.csv"), meta),
        "sweep": lambda: plot_sweep(_read(summary_dir, "by_x.csv"), meta),
        "ablation": lambda: plot_ablation(_read(summary_dir, "table.csv"), meta),
        "curves": lambda: plot_curves(curve_bands(load_curves(curves), reps, seed), meta),
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
