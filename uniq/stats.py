"""Aggregation of ``eval.json`` results: summary, rliable interval estimates, tables.

Scores. Every run (one ``eval.json``) gives a normalized return
``r = (R - R_min) / (R_max - R_min)`` (min/max trajectory return over the env's demonstrator
rollouts) and a normalized cost ``c = C / kappa`` (kappa = the task's cost limit). A *task* is
one (env, variant) pair; per method the scores form an array of shape (runs x tasks).

Aggregates (rliable, Agarwal et al. 2021): the IQM and the mean of all runs and tasks and the
median of the tasks' mean scores (with one or two tasks the same as the mean), with
stratified-bootstrap 95% percentile CIs (runs resampled within each task). Probability of
improvement ``P(X > Y) = 1/M sum_m P(X_m > Y_m)`` (Mann-Whitney per task, :func:`poi`); for cost, lower is
better, so ``P(UNIQ better on cost) = P(-c_UNIQ > -c_baseline)`` (both arrays negated).
Performance profile: ``F(tau) = fraction of runs with score > tau`` (for cost, lower curves are
better; ``F(1)`` is the fraction of unsafe runs).

Scoring (:class:`Scoring`): by default a run is scored by its final policy's evaluation
(``eval.json``: no model selection on the test episodes). ``last-k`` scores it instead by the
mean of its last ``k`` curve evaluations (``curve.csv`` beside ``eval.json``, the last row
being the final policy): no selection either; it averages k nearby policies, each on the
curve's own (fewer) episodes, so it smooths the policy-to-policy noise of the last steps
while the final evaluation measures one policy on more episodes. Every caption and ``meta.json`` say which scoring a table uses.

Missing data policy: a method absent from a task gets an explicit "n/a" table cell; aggregate
score arrays use only the tasks on which *every* method ran (a warning and the captions say
which were left out), and per method the same number of runs on each task (the lowest seeds;
rliable needs a rectangular array).

Reproducibility: rliable 1.2 draws bootstrap indices from the *global* ``np.random`` (its
``random_state`` argument only seeds arch's own generator, which the stratified resampler does
not use), so a fixed ``RandomState`` alone does not fix the CIs. :func:`_seeded_numpy` seeds the
global state per (statistic, method) from a base seed and restores it afterwards.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from uniq.atomic import atomic_write_text, file_sha256

log = logging.getLogger(__name__)

REFERENCE = "uniq"
# Table / legend order of the shipped configs' labels, for an aggregate given no order (no
# ``--display``); the workflow passes each experiment's own order. Other labels follow
# alphabetically. ``uniq.plots.METHOD_COLORS`` gives each of these a fixed colour.
KNOWN_METHODS = ("uniq", "uniq-nocorr", "uniq-paper-actor", "bc-mix", "bc-safe", "dwbc", "safedice")
METRICS = ("return_normalized", "cost_normalized")
STATISTICS = ("IQM", "Median", "Mean")
# Experiments whose variants form a sweep: x column name and axis label.
SWEEPS = {
    "undesirable_size": ("n_un", "|D_UN| (trajectories)"),
    "mix_ratio": ("mix_ratio", "desirable fraction of D_MIX"),
}

_NUM = (int, float)
# The eval.json contract (design.md section 3): field -> accepted JSON types.
REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {
    "algo": (str,),
    "env": (str,),
    "variant": (str,),
    "seed": (int,),
    "episodes": (int,),
    "return_mean": _NUM,
    "cost_mean": _NUM,
    "cost_cvar10": _NUM,
    "cost_rate": _NUM,
    "return_normalized": _NUM,
    "cost_normalized": _NUM,
    "steps": (int,),
    "wall_time_s": _NUM,
    "git_commit": (str, type(None)),
}
SCORE_FIELDS = ("return_mean", "cost_mean", "return_normalized", "cost_normalized")
# Optional fields (absent for external rules): field -> default.
OPTIONAL_FIELDS = {
    "return_std": math.nan,
    "cost_limit": math.nan,
    "return_min": math.nan,
    "return_max": math.nan,
    "uses_hidden_labels": False,
    "dataset_checksums": None,
    "variant_params": None,
}


class StatsError(ValueError):
    """Bad or inconsistent result files; the message names the file, the field and the fix."""


SCORING_MODES = ("final", "last-k")


@dataclass(frozen=True)
class Scoring:
    """How a run is scored: ``final`` (its eval.json) or ``last-k`` (the mean of the last
    ``k`` rows of its curve.csv)."""

    mode: str = "final"
    k: int = 3

    def __post_init__(self):
        if self.mode not in SCORING_MODES:
            raise StatsError(f"scoring {self.mode!r}: use one of {', '.join(SCORING_MODES)}")
        if self.mode == "last-k" and self.k < 1:
            raise StatsError(f"last-k scoring with k={self.k}: k must be >= 1")

    @property
    def name(self) -> str:
        return "final" if self.mode == "final" else f"last{self.k}"

    def phrase(self) -> str:
        if self.mode == "final":
            return "of the final policy (its evaluation after the last training step)"
        return (
            f"scored by the mean of each run's last {self.k} curve evaluations (the last one "
            "being the final policy; no model selection; the curve's episodes, not the final "
            "evaluation's)"
        )


# ---------------------------------------------------------------- writing


def write_outputs(out_dir: Path, outputs: dict[str, str]) -> dict[str, Path]:
    """Write every file to a staging folder inside ``out_dir``, then rename each into place.

    A failure while writing (full disk, interrupt) leaves the previous outputs as they were,
    never a new summary.csv beside an old table.md; only the renames are not one step.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".aggregate.", dir=out_dir))
    try:
        for name, text in outputs.items():
            atomic_write_text(stage / name, text)
        for name in outputs:
            os.replace(stage / name, out_dir / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {name: out_dir / name for name in outputs}


def _csv(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.6g")
    return buf.getvalue()


# ---------------------------------------------------------------- loading


def display_name(
    label: str, names: Mapping[str, str] | None = None, oracle: Iterable[str] = ()
) -> str:
    """The printed name of an algorithm label: ``names[label]`` (the map the workflow resolves
    from the config and each method's ``display_name``, kept in meta.json), a label missing
    from it as itself; with a dagger when the label is one of ``oracle`` (hidden labels). The
    one place tables and figures name a method."""
    return (names or {}).get(label, label) + ("†" if label in set(oracle) else "")


def method_order(names: Iterable[str], order: Iterable[str] = ()) -> list[str]:
    """The names in ``order`` first (an experiment's order, e.g. the keys of its display map),
    then those of :data:`KNOWN_METHODS` in that order, then any other name alphabetically."""
    names = set(names)
    first = [m for m in dict.fromkeys(order) if m in names]
    known = [m for m in KNOWN_METHODS if m in names and m not in first]
    return first + known + sorted(names - set(first) - set(known))


def _read_eval(path: Path) -> dict:
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        raise StatsError(
            f"{path}: no such file; run `uniq-bench evaluate --out {path}` first"
        ) from None
    except json.JSONDecodeError as e:
        raise StatsError(f"{path}: not valid JSON ({e}); re-run `uniq-bench evaluate`") from None
    if not isinstance(rec, dict):
        raise StatsError(f"{path}: expected a JSON object (the eval.json contract)")
    missing = [k for k in REQUIRED_FIELDS if k not in rec]
    if missing:
        raise StatsError(
            f"{path}: missing required field(s) {', '.join(missing)} of the eval.json contract "
            "(design.md section 3); re-run `uniq-bench evaluate` or add the field(s)"
        )
    for key, types in REQUIRED_FIELDS.items():
        value = rec[key]
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise StatsError(f"{path}: field {key!r} = {value!r} should be {want}")
    bad = [k for k in SCORE_FIELDS if not math.isfinite(rec[k])]
    if bad == ["return_normalized"]:
        raise StatsError(
            f"{path}: non-finite return_normalized (an evaluation without --reference has "
            "none); re-run `uniq-bench evaluate` with --reference"
        )
    if bad:
        raise StatsError(
            f"{path}: non-finite {', '.join(bad)}: a broken evaluation; re-run `uniq-bench "
            "evaluate` (or the rule that wrote it)"
        )
    _check_policy(path, rec)
    return rec


def _check_policy(path: Path, rec: dict) -> None:
    """An eval.json that names its policy's hash must sit beside that policy.pt (a policy
    retrained after its evaluation leaves a stale eval.json that a copy or a touch keeps)."""
    policy = path.with_name("policy.pt")
    want = rec.get("policy_sha256")
    if want is None or not policy.is_file() or file_sha256(policy) == want:
        return
    raise StatsError(
        f"{path} evaluated another policy than the {policy} beside it (sha256 differs: the "
        "policy was trained again after this evaluation); evaluate it again (`uniq-bench "
        f"evaluate --policy {policy} --out {path} ...`, or delete {path} and rerun the workflow)"
    )


def _row(path: Path, rec: dict) -> dict:
    row = {k: rec[k] for k in REQUIRED_FIELDS}
    for key, default in OPTIONAL_FIELDS.items():
        value = rec.get(key, default)
        row[key] = default if value is None else value
    checks = row.pop("dataset_checksums") or {}
    params = row.pop("variant_params") or {}
    if not isinstance(checks, dict) or not isinstance(params, dict):
        raise StatsError(f"{path}: dataset_checksums and variant_params must be JSON objects")
    row["uses_hidden_labels"] = bool(row["uses_hidden_labels"])
    row["dataset_checksums"] = json.dumps(checks, sort_keys=True) if checks else ""
    for key in ("n_un", "n_mix_desirable", "n_mix_undesirable"):
        row[key] = params.get(key, math.nan)
    row["path"] = str(path)
    return row


def _score_last_k(row: dict, k: int) -> dict:
    """``row`` with its scores replaced by the mean of the run's last ``k`` curve evaluations
    (the eval.json figures kept as ``final_*``)."""
    path = Path(row["path"]).with_name("curve.csv")
    if not path.exists():
        raise StatsError(
            f"{path}: no curve beside {row['path']}, which last-k scoring reads; train with "
            "--eval-every (config train.eval_every > 0), or score with --scoring final"
        )
    try:
        curve = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise StatsError(f"{path}: empty (no curve evaluation); re-run the training") from None
    missing = [c for c in (*SCORE_FIELDS, "step", "episodes") if c not in curve]
    if missing:
        raise StatsError(f"{path}: missing column(s) {', '.join(missing)}; re-run the training")
    if len(curve) < k:
        raise StatsError(
            f"{path}: {len(curve)} curve evaluation(s), fewer than k={k}; lower k or evaluate "
            "more often (train.eval_every)"
        )
    if int(curve["step"].iloc[-1]) != row["steps"]:
        raise StatsError(
            f"{path}: the curve ends at step {int(curve['step'].iloc[-1])} but the run trained "
            f"{row['steps']} steps (a stale or partial curve); re-run the training"
        )
    last = curve.tail(k)
    bad = [c for c in SCORE_FIELDS if not np.isfinite(last[c].to_numpy(float)).all()]
    if bad:
        raise StatsError(
            f"{path}: non-finite {', '.join(bad)} in the last {k} rows (a curve evaluated "
            "without --reference has no normalized scores); re-run the training with "
            "--reference, or score with --scoring final"
        )
    out = dict(row)
    for col in SCORE_FIELDS:
        out[f"final_{col}"] = row[col]
        out[col] = float(last[col].mean())
    out["episodes"] = int(last["episodes"].iloc[-1])  # per evaluation: the caption says k x
    out["scored_steps"] = " ".join(str(int(s)) for s in last["step"])
    return out


def load_evals(
    paths: Sequence[str | os.PathLike],
    experiment: str = "main",
    scoring: Scoring = Scoring(),
    order: Iterable[str] = (),
) -> pd.DataFrame:
    """One row per run (the future summary.csv), validated and scored by ``scoring``, sorted by
    task, then method (:func:`method_order` with ``order``), then seed.

    Raises :class:`StatsError` for a missing/ill-typed contract field, a run given twice, runs of
    one (env, variant) trained on different datasets (checksums differ), or a sweep experiment
    whose runs lack ``variant_params``.
    """
    if not paths:
        raise StatsError("no eval.json files given; pass the runs' eval.json paths")
    rows = [_row(Path(p), _read_eval(Path(p))) for p in paths]
    if scoring.mode == "last-k":
        rows = [_score_last_k(row, scoring.k) for row in rows]
    df = pd.DataFrame(rows)
    df["scoring"] = scoring.name
    _check_duplicates(df)
    _check_checksums(df)
    _check_steps(df)
    if experiment in SWEEPS:
        df["x"] = _sweep_x(df, experiment)
    df["task"] = _task_labels(df, experiment)
    rank = {m: i for i, m in enumerate(method_order(df["algo"], order))}
    df = df.assign(_o=df["algo"].map(rank))
    keys = ["env", "x", "variant", "_o", "seed"] if "x" in df else ["env", "variant", "_o", "seed"]
    return df.sort_values(keys).drop(columns="_o").reset_index(drop=True)


def _check_duplicates(df: pd.DataFrame) -> None:
    key = ["algo", "env", "variant", "seed"]
    dup = df[df.duplicated(key, keep=False)]
    if len(dup):
        (a, e, v, s), grp = next(iter(dup.groupby(key)))
        raise StatsError(
            f"run algo={a} env={e} variant={v} seed={s} given more than once: "
            f"{', '.join(grp['path'])}; pass each run's eval.json once"
        )


def _check_checksums(df: pd.DataFrame) -> None:
    for (env, variant), grp in df.groupby(["env", "variant"]):
        known = grp[grp["dataset_checksums"] != ""]
        if len(known) < len(grp):
            log.warning(
                "%d run(s) of env=%s variant=%s have no dataset_checksums; cannot check that "
                "they used the same dataset",
                len(grp) - len(known),
                env,
                variant,
            )
        _require_one(
            known,
            "dataset_checksums",
            f"results for env={env} variant={variant} come from different datasets "
            "(dataset_checksums differ)",
            "re-run the stale runs on the current dataset, or pass only the eval.json files of "
            "one dataset version",
        )


def _check_steps(df: pd.DataFrame) -> None:
    """One method's runs of one task trained equally long: a run left from an older config
    (a copied or touched result) would otherwise be pooled with the current ones."""
    for (algo, env, variant), grp in df.groupby(["algo", "env", "variant"]):
        _require_one(
            grp,
            "steps",
            f"runs of algo={algo} env={env} variant={variant} trained for different numbers "
            "of updates",
            "re-run the stale runs with the current config, or pass only one length's eval.json "
            "files",
        )


def _require_one(runs: pd.DataFrame, column: str, problem: str, fix: str) -> None:
    """Raise naming ``problem``, each value's runs and ``fix`` when ``runs`` hold more than one
    value of ``column``."""
    versions = runs.groupby(column)["path"].apply(list)
    if len(versions) > 1:
        lines = [f"  {v}: {len(ps)} run(s), e.g. {', '.join(ps[:2])}" for v, ps in versions.items()]
        raise StatsError(f"{problem}:\n" + "\n".join(lines) + f"\n{fix}")


def _sweep_x(df: pd.DataFrame, experiment: str) -> pd.Series:
    """x = n_un (undesirable_size) or n_mix_desirable / (n_mix_desirable + n_mix_undesirable)."""
    need = (
        ["n_un"] if experiment == "undesirable_size" else ["n_mix_desirable", "n_mix_undesirable"]
    )
    for key in need:
        bad = df[df[key].isna()]
        if len(bad):
            raise StatsError(
                f"{bad['path'].iloc[0]}: experiment {experiment!r} needs variant_params.{key} "
                "(written by `uniq-bench train` from the split files); re-run evaluate on a "
                "policy trained with the current code"
            )
    if experiment == "undesirable_size":
        return df["n_un"].astype(float)
    total = df["n_mix_desirable"] + df["n_mix_undesirable"]
    return df["n_mix_desirable"] / total.where(total > 0)


def _task_labels(df: pd.DataFrame, experiment: str) -> pd.Series:
    """``env`` when each env has one variant, else ``env/variant`` (sweeps: ``env, x=...``)."""
    if experiment in SWEEPS:
        name = SWEEPS[experiment][0]
        return df["env"] + ", " + name + "=" + df["x"].map(lambda x: f"{x:g}")
    if df.groupby("env")["variant"].nunique().max() == 1:
        return df["env"].copy()
    return df["env"] + "/" + df["variant"]


# ---------------------------------------------------------------- score arrays


@dataclass
class ScoreSet:
    """Aggregate-ready score arrays and the policy that shaped them."""

    tasks: list[str]  # tasks in the arrays (every method ran on each)
    dropped_tasks: list[str]  # tasks left out because some method did not run on them
    arrays: dict[str, dict[str, np.ndarray]] = field(
        default_factory=dict
    )  # metric -> method -> (runs x tasks)
    notes: list[str] = field(default_factory=list)


def score_arrays(
    df: pd.DataFrame, metrics: Sequence[str] = METRICS, order: Iterable[str] = ()
) -> ScoreSet:
    """Per metric and method a (runs x tasks) array over the tasks every method ran on
    (methods in :func:`method_order` with ``order``)."""
    methods = method_order(df["algo"], order)
    tasks = list(dict.fromkeys(df["task"]))
    ran = df.groupby("task")["algo"].apply(set)
    common = [t for t in tasks if ran[t] >= set(methods)]
    dropped = [t for t in tasks if t not in common]
    out = ScoreSet(tasks=common, dropped_tasks=dropped)
    if dropped:
        msg = (
            f"aggregates use the {len(common)} task(s) on which every method ran; left out "
            f"{', '.join(dropped)} (missing: "
            + "; ".join(f"{t}: {', '.join(m for m in methods if m not in ran[t])}" for t in dropped)
            + ")"
        )
        log.warning(msg)
        out.notes.append(msg)
    if not common:
        return out
    sub = df[df["task"].isin(common)]
    for metric in metrics:
        out.arrays[metric] = {}
    for method in methods:
        runs = sub[sub["algo"] == method]
        per_task = [runs[runs["task"] == t].sort_values("seed") for t in common]
        n = min(len(r) for r in per_task)
        if any(len(r) > n for r in per_task):
            msg = f"{method}: tasks have unequal numbers of runs; aggregates use its {n} lowest seed(s) per task"
            log.warning(msg)
            out.notes.append(msg)
        for metric in metrics:
            out.arrays[metric][method] = np.stack(
                [r[metric].to_numpy(float)[:n] for r in per_task], axis=1
            )
    return out


# ---------------------------------------------------------------- bootstrap (rliable)


@contextlib.contextmanager
def _seeded_numpy(seed: int, *keys: str):
    """Seed the global ``np.random`` from (seed, keys) and restore it afterwards (see module doc)."""
    state = np.random.get_state()
    np.random.seed([seed % 2**32] + [zlib.crc32(k.encode()) for k in keys])
    try:
        with warnings.catch_warnings():
            # arch warns that ``random_state`` is deprecated; rliable 1.2 still passes it.
            warnings.simplefilter("ignore", FutureWarning)
            yield np.random.RandomState(seed)
    finally:
        np.random.set_state(state)


def _interval(
    scores, func: Callable[..., np.ndarray], reps: int, seed: int, *keys: str
) -> tuple[np.ndarray, np.ndarray]:
    """Point estimate and (2 x k) 95% stratified-bootstrap percentile CI of ``func(scores)``."""
    from rliable import library as rly

    with _seeded_numpy(seed, *keys) as rs:
        point, ci = rly.get_interval_estimates(
            {"x": scores}, func, reps=reps, random_state=rs, confidence_interval_size=0.95
        )
    return np.asarray(point["x"]), np.asarray(ci["x"])


def _statistics(scores: np.ndarray) -> np.ndarray:
    """[IQM of all runs and tasks, median of the tasks' means, mean] (one bootstrap serves all three)."""
    from rliable import metrics as rm

    return np.array(
        [rm.aggregate_iqm(scores), rm.aggregate_median(scores), rm.aggregate_mean(scores)]
    )


def interval_estimates(scores: ScoreSet, reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """IQM, median and mean of each metric per method with 95% CIs (long format)."""
    rows = []
    for metric, per_method in scores.arrays.items():
        for method, arr in per_method.items():
            point, ci = _interval(arr, _statistics, reps, seed, metric, method)
            for k, stat in enumerate(STATISTICS):
                rows.append(
                    dict(
                        method=method,
                        metric=metric,
                        statistic=stat,
                        value=float(point[k]),
                        ci_low=float(ci[0, k]),
                        ci_high=float(ci[1, k]),
                        n_runs=arr.shape[0],
                        n_tasks=arr.shape[1],
                    )
                )
    cols = ["method", "metric", "statistic", "value", "ci_low", "ci_high", "n_runs", "n_tasks"]
    return pd.DataFrame(rows, columns=cols)


def poi(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) = 1/M sum_m [P(x_m > y_m) + 0.5 P(x_m = y_m)] over runs of each task m.

    The value of rliable's ``metrics.probability_of_improvement`` (Mann-Whitney U / (n_x n_y),
    per task, averaged), computed by broadcasting: scipy's ``mannwhitneyu`` costs ~2 ms per call,
    which dominates a 2000-resample bootstrap.
    """
    diff = x[:, None, :] - y[None, :, :]  # (runs_x, runs_y, tasks)
    return float(np.mean((diff > 0).mean(axis=(0, 1)) + 0.5 * (diff == 0).mean(axis=(0, 1))))


def probability_of_improvement(
    scores: ScoreSet, reference: str = REFERENCE, reps: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """P(reference better than each baseline) on return and on cost, with 95% CIs.

    Return: ``P(r_ref > r_base)``. Cost (lower is better): ``P(-c_ref > -c_base) =
    P(c_ref < c_base)``, i.e. rliable's probability_of_improvement on negated costs. Runs of the
    two methods are resampled independently within each task (rliable's independent bootstrap).
    """
    cols = ["reference", "baseline", "metric", "poi", "ci_low", "ci_high", "n_tasks"]
    if not scores.arrays:
        return pd.DataFrame(columns=cols)
    methods = list(next(iter(scores.arrays.values())))
    if reference not in methods:
        log.warning(
            "reference method %r not among %s; no probability of improvement", reference, methods
        )
        return pd.DataFrame(columns=cols)
    rows = []
    for base in (m for m in methods if m != reference):
        for metric, sign in (("return_normalized", 1.0), ("cost_normalized", -1.0)):
            x = sign * scores.arrays[metric][reference]
            y = sign * scores.arrays[metric][base]
            point, ci = _interval(
                [x, y],
                lambda a, b: np.array([poi(a, b)]),
                reps,
                seed,
                "poi",
                metric,
                reference,
                base,
            )
            rows.append(
                dict(
                    reference=reference,
                    baseline=base,
                    metric=metric,
                    poi=float(point[0]),
                    ci_low=float(ci[0, 0]),
                    ci_high=float(ci[1, 0]),
                    n_tasks=x.shape[1],
                )
            )
    return pd.DataFrame(rows, columns=cols)


def performance_profiles(
    scores: ScoreSet, reps: int = 2000, seed: int = 0, points: int = 81
) -> pd.DataFrame:
    """F(tau) = fraction of runs (over all tasks) with score > tau, with 95% CIs.

    Same function as rliable's ``create_performance_profile`` (score distributions), called
    through ``get_interval_estimates`` so that the bootstrap is seeded (see module doc).
    """
    rows = []
    for metric, per_method in scores.arrays.items():
        allv = np.concatenate([a.ravel() for a in per_method.values()])
        hi = 1.0 if metric == "return_normalized" else 2.0
        taus = np.linspace(min(0.0, float(allv.min())), max(hi, float(allv.max())), points)

        def profile(s, taus=taus):
            return (s.reshape(-1, 1) > taus).mean(axis=0)

        for method, arr in per_method.items():
            point, ci = _interval(arr, profile, reps, seed, "profile", metric, method)
            rows += [
                dict(method=method, metric=metric, tau=t, fraction=p, ci_low=lo, ci_high=hi_)
                for t, p, lo, hi_ in zip(taus, point, ci[0], ci[1], strict=True)
            ]
    return pd.DataFrame(rows, columns=["method", "metric", "tau", "fraction", "ci_low", "ci_high"])


def by_x(df: pd.DataFrame, reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Sweep aggregates: per x value, the interval estimates over the tasks at that x."""
    parts = []
    for x, grp in df.groupby("x", sort=True):
        est = interval_estimates(score_arrays(grp), reps=reps, seed=seed)
        parts.append(est.assign(x=x))
    out = pd.concat(parts, ignore_index=True)
    return out[["x"] + [c for c in out.columns if c != "x"]]


# ---------------------------------------------------------------- per-task table


def _mean_ci(
    values: np.ndarray, reps: int, rs: np.random.RandomState
) -> tuple[float, float, float]:
    """Mean over seeds and its 95% percentile bootstrap CI (NaN CI for a single seed)."""
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    if len(v) == 1:
        return float(v[0]), math.nan, math.nan
    means = v[rs.randint(0, len(v), size=(reps, len(v)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(v.mean()), float(lo), float(hi)


TABLE_COLUMNS = {  # summary column -> (table header, higher is better)
    "return_mean": ("Return", True),
    "return_normalized": ("Norm. return", True),
    "cost_mean": ("Cost", False),
    "cost_normalized": ("Norm. cost", False),
}


def task_table(
    df: pd.DataFrame, reps: int = 2000, seed: int = 0, order: Iterable[str] = ()
) -> pd.DataFrame:
    """One row per (task, method), n/a rows included; best/unsafe/oracle flags as booleans."""
    methods = method_order(df["algo"], order)
    oracle = df.groupby("algo")["uses_hidden_labels"].any()
    rs = np.random.RandomState(seed)
    rows = []
    for task in dict.fromkeys(df["task"]):
        tdf = df[df["task"] == task]
        for method in methods:
            runs = tdf[tdf["algo"] == method]
            row = dict(
                task=task,
                env=tdf["env"].iloc[0],
                variant=tdf["variant"].iloc[0],
                method=method,
                n_seeds=len(runs),
                oracle=bool(oracle[method]),
            )
            if "x" in tdf:
                row["x"] = tdf["x"].iloc[0]
            for col in TABLE_COLUMNS:
                m, lo, hi = _mean_ci(runs[col].to_numpy(float), reps, rs)
                row.update({col: m, f"{col}_ci_low": lo, f"{col}_ci_high": hi})
            row["unsafe"] = bool(row["cost_normalized"] > 1.0)
            rows.append(row)
    table = pd.DataFrame(rows)
    for col, (_, higher) in TABLE_COLUMNS.items():
        cand = table[col].where(~table["oracle"])
        best = cand.groupby(table["task"]).transform("max" if higher else "min")
        table[f"best_{col}"] = np.isclose(table[col], best, rtol=0, atol=1e-12) & ~table["oracle"]
    return table


def _count_phrase(values: Iterable[int], unit: str) -> str:
    vals = sorted({int(v) for v in values if v > 0})
    if not vals:
        return f"0 {unit}s"
    if len(vals) == 1:
        return f"{vals[0]} {unit}{'s' if vals[0] != 1 else ''}"
    return f"{vals[0]}-{vals[-1]} {unit}s"


def table_caption(
    df: pd.DataFrame, experiment: str, scores: ScoreSet, reps: int, scoring: Scoring = Scoring()
) -> str:
    """Plain-text caption: what the numbers are, the normalization, seeds, episodes, markers."""
    kappas = df.groupby("env")["cost_limit"].first()
    if kappas.isna().all():
        kappa = "κ = the task cost limit (not recorded in eval.json)"
    elif kappas.nunique() == 1:
        kappa = f"κ = {kappas.iloc[0]:g} (the task cost limit, from eval.json cost_limit)"
    else:
        kappa = (
            "κ = the task cost limit (" + ", ".join(f"{e}: {k:g}" for e, k in kappas.items()) + ")"
        )
    seeds = df.groupby(["task", "algo"]).size()
    text = (
        f"Experiment {experiment}: return and cost per task and method, {scoring.phrase()}; "
        f"mean ± half-width of the 95% percentile bootstrap CI over seeds ({reps} resamples); "
        f"{_count_phrase(seeds, 'seed')} per method and task, "
        + (
            f"{scoring.k} evaluations x {_count_phrase(df['episodes'], 'episode')} per run. "
            if scoring.mode == "last-k"
            else f"{_count_phrase(df['episodes'], 'evaluation episode')} per run. "
        )
        + "Normalized return = (R - R_min)/(R_max - R_min), with R_min and R_max the min and max "
        "trajectory return over the env's demonstrator rollouts; normalized cost = C/κ, "
        f"{kappa}. Bold: best per task and column (highest return, lowest cost) among methods "
        "without hidden labels. † uses the hidden desirability labels (oracle), excluded from "
        "best. ‡ unsafe: normalized cost > 1. n/a: method not run on that task."
    )
    if scores.dropped_tasks:
        text += (
            " Aggregate metrics (IQM, mean, median, probability of improvement) use only the "
            f"tasks on which every method ran; left out: {', '.join(scores.dropped_tasks)}."
        )
    return text


def _fmt_cell(mean: float, lo: float, hi: float, digits: int, pm: str) -> str:
    if math.isnan(mean):
        return "n/a"
    if math.isnan(lo):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f}{pm}{(hi - lo) / 2:.{digits}f}"


def _cells(row: pd.Series, pm: str, bold: Callable[[str], str], unsafe_mark: str) -> list[str]:
    out = []
    for col in TABLE_COLUMNS:
        digits = 2 if col.endswith("normalized") else 1
        text = _fmt_cell(row[col], row[f"{col}_ci_low"], row[f"{col}_ci_high"], digits, pm)
        if text != "n/a" and row[f"best_{col}"]:
            text = bold(text)
        if text != "n/a" and col.startswith("cost") and row["unsafe"]:
            text += unsafe_mark
        out.append(text)
    return out


def _oracles(table: pd.DataFrame) -> set[str]:
    return set(table.loc[table["oracle"].astype(bool), "method"])


def table_markdown(
    table: pd.DataFrame, caption: str, names: Mapping[str, str] | None = None
) -> str:
    """The task table in Markdown, methods by :func:`display_name` (``names``: label -> name)."""
    oracle = _oracles(table)
    head = ["Task", "Method"] + [h for h, _ in TABLE_COLUMNS.values()]
    lines = [f"**Table.** {caption}", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join([":--", ":--"] + ["--:"] * len(TABLE_COLUMNS)) + "|")
    prev = None
    for _, row in table.iterrows():
        name = display_name(row["method"], names, oracle)
        task = row["task"] if row["task"] != prev else ""
        prev = row["task"]
        cells = _cells(row, " ± ", lambda s: f"**{s}**", "‡")
        lines.append("| " + " | ".join([task, name] + cells) + " |")
    return "\n".join(lines) + "\n"


_TEX_ESCAPE = {
    "\\": r"\textbackslash{}",
    "_": r"\_",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
}
_TEX_SYMBOLS = {
    "±": r"$\pm$",
    "†": r"$^\dagger$",
    "‡": r"$^\ddagger$",
    "|": r"$|$",
    "κ": r"$\kappa$",
    ">": r"$>$",
    "<": r"$<$",
}


def tex_escape(text: str) -> str:
    """Escape LaTeX specials and map the caption's symbols (±, †, ‡, κ, |, <, >) to math."""
    return "".join(_TEX_ESCAPE.get(c, _TEX_SYMBOLS.get(c, c)) for c in text)


def table_latex(
    table: pd.DataFrame, caption: str, experiment: str, names: Mapping[str, str] | None = None
) -> str:
    """The task table in LaTeX (booktabs), methods by :func:`display_name`."""
    oracle = _oracles(table)
    head = ["Task", "Method"] + [h for h, _ in TABLE_COLUMNS.values()]
    lines = [
        "% Generated by `uniq-bench aggregate`; needs \\usepackage{booktabs}.",
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        f"\\caption{{{tex_escape(caption)}}}",
        f"\\label{{tab:{experiment.replace('_', '-')}}}",
        "\\begin{tabular}{ll" + "r" * len(TABLE_COLUMNS) + "}",
        "\\toprule",
        " & ".join(h.replace(". ", ".\\ ") for h in head) + " \\\\",
    ]
    prev = None
    for _, row in table.iterrows():
        if row["task"] != prev:
            lines.append("\\midrule")
        name = tex_escape(display_name(row["method"], names, oracle))  # † -> $^\dagger$
        task = tex_escape(row["task"]) if row["task"] != prev else ""
        prev = row["task"]
        cells = _cells(row, r" $\pm$ ", lambda s: f"\\textbf{{{s}}}", r"$^\ddagger$")
        lines.append(" & ".join([task, name] + cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- driver


def aggregate(
    paths: Sequence[str | os.PathLike],
    experiment: str,
    out_dir: str | os.PathLike,
    reference: str = REFERENCE,
    reps: int = 2000,
    seed: int = 0,
    scoring: Scoring = Scoring(),
    display: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """Compute everything, then write every output atomically; returns name -> path.

    ``display``: label -> the name tables and figures print (``uniq.workflow.display_names``;
    a label missing from it prints as itself); its order is the methods' order (labels it
    lacks follow, :func:`method_order`). Written to meta.json as ``display_names`` (every
    method of the experiment), where the figures read it.

    Outputs: summary.csv (one row per run), aggregate.csv (IQM/median/mean with CIs),
    poi.csv, profiles.csv, table.{md,tex,csv}, meta.json (captions, display names and the task
    policy), and for sweep experiments by_x.csv.
    """
    if reps < 10:
        raise StatsError(f"reps={reps} is too few bootstrap resamples; use >= 10 (default 2000)")
    display = dict(display or {})
    df = load_evals(paths, experiment, scoring, order=display)
    methods = method_order(df["algo"], display)
    names = {m: display.get(m, m) for m in methods}
    scores = score_arrays(df, order=methods)
    table = task_table(df, reps=reps, seed=seed, order=methods)
    caption = table_caption(df, experiment, scores, reps, scoring)
    outputs: dict[str, str] = {
        "summary.csv": _csv(df),
        "aggregate.csv": _csv(interval_estimates(scores, reps=reps, seed=seed)),
        "poi.csv": _csv(probability_of_improvement(scores, reference, reps=reps, seed=seed)),
        "profiles.csv": _csv(performance_profiles(scores, reps=reps, seed=seed)),
        "table.csv": _csv(table),
        "table.md": table_markdown(table, caption, names),
        "table.tex": table_latex(table, caption, experiment, names),
    }
    if experiment in SWEEPS:
        outputs["by_x.csv"] = _csv(by_x(df, reps=reps, seed=seed))
    meta = dict(
        experiment=experiment,
        scoring=dict(mode=scoring.mode, k=scoring.k if scoring.mode == "last-k" else None),
        reference=reference,
        reps=reps,
        seed=seed,
        methods=methods,
        display_names=names,
        oracle_methods=sorted(df.loc[df["uses_hidden_labels"], "algo"].unique()),
        tasks=list(dict.fromkeys(df["task"])),
        aggregate_tasks=scores.tasks,
        dropped_tasks=scores.dropped_tasks,
        notes=scores.notes,
        seeds=_count_phrase(df.groupby(["task", "algo"]).size(), "seed"),
        episodes=_count_phrase(df["episodes"], "evaluation episode"),
        x_name=SWEEPS[experiment][0] if experiment in SWEEPS else None,
        x_label=SWEEPS[experiment][1] if experiment in SWEEPS else None,
        table_caption=caption,
    )
    outputs["meta.json"] = json.dumps(meta, indent=2) + "\n"
    written = write_outputs(Path(out_dir), outputs)
    log.info(
        "aggregate %s: %d runs, %d tasks -> %s", experiment, len(df), len(meta["tasks"]), out_dir
    )
    return written
