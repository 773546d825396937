"""A demonstrator's quality: its return and cost against a random policy, and the bars.

``quality.json`` of a demonstrator (demonstrators/<Task>/<kind>/) holds, over the same
``episodes`` seeded episodes: the stochastic policy the rollouts use (a ~ pi(.|s)), the
deterministic one (tanh(mu(s))) and a uniformly random policy, each as return and cost mean
and std; the policy file's checksum; and, once both kinds exist, the task's bars:

- safe: mean cost <= ``cost_limit`` (25), return clearly above the random policy's;
- unsafe: return clearly above the safe one's, mean cost >= 50 and >= twice the safe one's.

"Clearly above" is a one-sided Welch test at 3 standard errors: the difference of the means
exceeds three times the standard error of that difference (a gap no seed noise explains).
Quality episodes are reset with seeds from :data:`QUALITY_SEED_BASE` on, apart from the
collection seeds (small) and the evaluation seeds (10 million and up).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from envs.tasks import TaskSpec, resolve_task
from uniq import numerics
from uniq.atomic import file_sha256

QUALITY_SEED_BASE = 20_000_000
SELECTION_SEED_BASE = 30_000_000
"""Snapshot selection runs on its own episodes: quality.json is never measured on the
episodes a snapshot was chosen by."""
UNSAFE_MIN_COST = 50.0
CLEAR_MARGIN_SE = 3.0


def _summary(result) -> dict[str, float]:
    r, c = result.episode_returns, result.episode_costs
    return dict(
        return_mean=float(r.mean()),
        return_std=float(r.std()),
        cost_mean=float(c.mean()),
        cost_std=float(c.std()),
        episodes=len(r),
    )


def measure(
    task: str | TaskSpec, policy_path: str | os.PathLike, episodes: int = 50, num_envs: int = 1
) -> dict[str, Any]:
    """The stochastic, deterministic and random policies' return and cost on ``episodes``
    episodes (the same seeds for all three)."""
    from envs.collect import demonstrator_act_fn
    from envs.rollout import policy_act_fn, random_act_fn, rollout
    from uniq.nets import load_policy

    spec = resolve_task(task)
    policy, meta = load_policy(policy_path)
    if meta.get("task") not in (None, spec.name):
        raise ValueError(f"{policy_path} was trained on {meta.get('task')}, not {spec.name}.")
    seed = QUALITY_SEED_BASE
    act_fns = {
        "stochastic": demonstrator_act_fn(policy_path, seed)[0],
        "deterministic": policy_act_fn(policy),
        "random": random_act_fn(spec, seed),
    }
    out: dict[str, Any] = {
        name: _summary(rollout(fn, spec, episodes, seed, num_envs, progress=False))
        for name, fn in act_fns.items()
    }
    out.update(
        task=spec.name,
        kind=meta.get("kind"),
        policy=str(policy_path),
        policy_sha256=file_sha256(policy_path),
        trained_steps=meta.get("steps"),
        episode_seeds=[seed, seed + episodes - 1],
        cost_limit=spec.cost_limit,
        portable_numerics=all(numerics.status().values()),
    )
    return out


def select(
    task: str | TaskSpec,
    folder: str | os.PathLike,
    episodes: int = 20,
    max_cost: float | None = None,
    num_envs: int = 1,
    min_cost: float | None = None,
    from_step: int = 0,
) -> dict[str, Any]:
    """Choose the demonstrator of ``folder`` (one kind) among its training snapshots.

    Candidates: ``train.step<N>.pt`` with N >= ``from_step`` (a long run's warm-up can be left
    out: each candidate costs ``episodes`` full episodes) and the final ``train.pt``, each
    measured (stochastic policy) on ``episodes`` episodes seeded from :data:`SELECTION_SEED_BASE`. Rule: the
    highest mean return among those with mean cost <= ``max_cost`` (a safe demonstrator) or
    >= ``min_cost`` (an unsafe one, whose bar asks for a cost well above the safe one's);
    none qualifying (or neither bound given): the final policy. The choice is copied to ``policy.pt`` and recorded, with every
    candidate's figures and the training's length (``trained_steps``, from ``train.pt``), in
    ``selection.json``. This selects a data-generating policy, never a
    method under test. A candidate that an earlier ``selection.json`` measured on the same
    episodes (same file checksum, episode count and ``num_envs``) keeps its figures instead of
    being rolled out again, so selecting after more training measures only the new snapshots.
    """
    import shutil

    from envs.collect import demonstrator_act_fn
    from envs.rollout import rollout

    spec, folder = resolve_task(task), Path(folder)
    final = folder / "train.pt"
    snaps = sorted(
        (p for p in folder.glob("train.step*.pt") if _step(p) >= from_step), key=_step
    )  # fmt: skip
    candidates = snaps + ([final] if final.exists() else [])
    if not candidates:
        raise FileNotFoundError(f"{folder}: no train.pt or train.step<N>.pt to choose from.")
    measured = _measured_before(folder / "selection.json", episodes, num_envs)
    table = []
    for path in candidates:
        sha = file_sha256(path)
        if sha not in measured:
            fn = demonstrator_act_fn(path, SELECTION_SEED_BASE)[0]
            result = rollout(fn, spec, episodes, SELECTION_SEED_BASE, num_envs, progress=False)
            measured[sha] = dict(_summary(result), sha256=sha)
        table.append(dict(measured[sha], policy=path.name))
    if max_cost is not None and min_cost is not None:
        raise ValueError("select: give max_cost (safe) or min_cost (unsafe), not both.")
    bounded = max_cost is not None or min_cost is not None
    ok = [
        r for r in table
        if bounded and (max_cost is None or r["cost_mean"] <= max_cost)
        and (min_cost is None or r["cost_mean"] >= min_cost)
    ]  # fmt: skip
    chosen = max(ok, key=lambda r: r["return_mean"]) if ok else table[-1]
    from uniq.atomic import atomic_path

    with atomic_path(folder / "policy.pt") as tmp:  # the workflow reads it: never half-written
        shutil.copyfile(folder / chosen["policy"], tmp)
    from uniq.nets import load_policy

    record = dict(
        task=spec.name,
        trained_steps=load_policy(final)[1].get("steps") if final.exists() else None,
        rule=(
            f"highest return with cost <= {max_cost}"
            if max_cost is not None
            else f"highest return with cost >= {min_cost}"
            if min_cost is not None
            else "final"
        ),  # fmt: skip
        from_step=from_step,
        fallback_to_last=not ok,
        chosen=chosen["policy"],
        episodes=episodes,
        episode_seeds=[SELECTION_SEED_BASE, SELECTION_SEED_BASE + episodes - 1],
        num_envs=num_envs,
        candidates=table,
    )
    write_json(folder / "selection.json", record)
    return record


def _step(path: Path) -> int:
    return int(path.stem.split("step")[-1])


def _measured_before(path: Path, episodes: int, num_envs: int) -> dict[str, dict[str, Any]]:
    """sha256 -> figures of the candidates an earlier selection measured on these episodes."""
    if not path.exists():
        return {}
    rec = json.loads(path.read_text())
    same = (rec.get("episodes"), rec.get("episode_seeds", [None])[0], rec.get("num_envs", 1)) == (
        episodes, SELECTION_SEED_BASE, num_envs
    )  # fmt: skip
    if not same:
        return {}
    return {
        c["sha256"]: {k: v for k, v in c.items() if k != "policy"}
        for c in rec["candidates"]
        if "sha256" in c
    }


def clearly_above(a: dict[str, float], b: dict[str, float], key: str = "return") -> bool:
    """mean_a - mean_b > 3 standard errors of the difference (Welch)."""
    se = np.sqrt(a[f"{key}_std"] ** 2 / a["episodes"] + b[f"{key}_std"] ** 2 / b["episodes"])
    return bool(a[f"{key}_mean"] - b[f"{key}_mean"] > CLEAR_MARGIN_SE * max(se, 1e-12))


def bars(safe: dict[str, Any], unsafe: dict[str, Any]) -> dict[str, bool]:
    """The demonstrator bars of the task (module docstring), on the stochastic policies."""
    s, u, rnd = safe["stochastic"], unsafe["stochastic"], safe["random"]
    limit = safe["cost_limit"]
    out = {
        "safe_cost_at_most_limit": s["cost_mean"] <= limit,
        "safe_return_above_random": clearly_above(s, rnd),
        "unsafe_return_above_safe": clearly_above(u, s),
        "unsafe_cost_at_least_50": u["cost_mean"] >= UNSAFE_MIN_COST,
        "unsafe_cost_at_least_twice_safe": u["cost_mean"] >= 2 * s["cost_mean"],
    }
    out["all"] = all(out.values())
    return out


def write_json(path: str | os.PathLike, record: dict) -> None:
    from uniq.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def assess(task: str | TaskSpec, folder: str | os.PathLike, episodes: int = 50, num_envs: int = 1):
    """Measure every demonstrator of ``folder`` (``<kind>/policy.pt``), write each kind's
    quality.json (with the task's bars once both kinds exist) and curve.png; returns the records."""
    spec = resolve_task(task)
    folder = Path(folder)
    records = {}
    for kind in ("safe", "unsafe"):
        policy = folder / kind / "policy.pt"
        if not policy.exists():
            continue
        records[kind] = measure(spec, policy, episodes, num_envs)
        log_csv = folder / kind / "train.log.csv"
        if log_csv.exists():
            plot_curve(log_csv, folder / kind / "curve.png", f"{spec.name} {kind}", spec.cost_limit)
    if not records:
        raise FileNotFoundError(f"{folder}: no safe/policy.pt or unsafe/policy.pt to assess.")
    if len(records) == 2:
        verdict = bars(records["safe"], records["unsafe"])
        for record in records.values():
            record["bars"] = verdict
            record["below_bar"] = sorted(k for k, ok in verdict.items() if not ok and k != "all")
    for kind, record in records.items():
        write_json(folder / kind / "quality.json", record)
    return records


def plot_curve(
    log_csv: str | os.PathLike, out_png: str | os.PathLike, title: str, limit: float = 25.0
) -> None:
    """Return and cost per epoch (mean over its episodes) against env steps, from ``*.log.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(log_csv)
    fig, (ax_r, ax_c) = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    ax_r.plot(df["step"], df["return"], color="tab:blue")
    ax_r.set(xlabel="env steps", ylabel="episode return", title=title)
    ax_c.plot(df["step"], df["cost"], color="tab:red", label="episode cost")
    if "cost_limit" in df and df["cost_limit"].notna().any():
        ax_c.plot(df["step"], df["cost_limit"], "k--", lw=1, label="training limit")
    ax_c.axhline(limit, color="gray", lw=0.8, ls=":", label=f"evaluation limit {limit:g}")
    ax_c.set(xlabel="env steps", ylabel="episode cost")
    ax_c.legend(fontsize=7)
    from uniq.atomic import atomic_path

    with atomic_path(Path(out_png)) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
