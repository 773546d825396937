"""Evaluation: a policy's episodes, their metrics, and the eval.json record.

The episodes come from the rollout engine (:func:`envs.rollout.rollout`). Evaluation seeds
are kept apart from training seeds: a run evaluated with ``--seed s`` uses episodes seeded
``eval_seed_base(s) + i = 10_000_000 + 1000 s + i`` (training and data collection use seeds
far below 10 million). Every algorithm evaluated with the same ``s`` meets the same episodes
(common random numbers across algorithms).

Three callers: ``uniq-bench evaluate`` (:func:`evaluate_policy_file`, the final policy ->
eval.json), the training loop's learning curve (:func:`curve_point`, reached through
``uniq.registry.evaluation()`` so that ``uniq/train.py`` imports nothing from ``envs/``),
and demonstrator checks (:mod:`envs.quality`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs import fastpath
from envs.rollout import ActFn, Rollouts, policy_act_fn, random_act_fn, rollout
from envs.tasks import TaskSpec, resolve_task
from uniq.atomic import atomic_write_text, file_sha256, git_commit
from uniq.data import DatasetError, OfflineData

__all__ = [
    "ActFn", "Rollouts", "curve_point", "episode_metrics", "eval_seed_base", "evaluate_policy",
    "evaluate_policy_file", "policy_act_fn", "random_act_fn", "reference_returns", "rollout",
]  # fmt: skip

log = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 10_000_000
EVAL_SEEDS_PER_RUN = 1000

META_FIELDS = (
    "algo",
    "variant",
    "seed",
    "steps",
    "wall_time_s",
    "git_commit",
    "dataset_checksums",
    "variant_params",
    "uses_hidden_labels",
)
"""Policy-meta fields copied verbatim into eval.json."""


def eval_seed_base(seed: int) -> int:
    """Seed of the first evaluation episode for run seed ``seed``: 10_000_000 + 1000 seed."""
    return EVAL_SEED_OFFSET + EVAL_SEEDS_PER_RUN * int(seed)


# ---------------------------------------------------------------------- metrics
def episode_metrics(
    returns: np.ndarray,
    costs: np.ndarray,
    lengths: np.ndarray,
    cost_limit: float,
    return_min: float | None = None,
    return_max: float | None = None,
) -> dict[str, float]:
    """Summary of E episodes.

    return/cost mean and std (population std, ddof=0); ``cost_cvar10`` = mean of the
    ``ceil(0.1 E)`` largest episode costs (rounded up so that it is never empty: with fewer
    than 10 episodes it is the maximum cost); ``cost_rate`` = sum C / sum T;
    ``return_normalized`` = (mean R - R_min) / (R_max - R_min) (NaN without references);
    ``cost_normalized`` = mean C / kappa.
    """
    returns, costs = np.asarray(returns, float), np.asarray(costs, float)
    lengths = np.asarray(lengths, float)
    if len(returns) == 0:
        raise ValueError("no episodes to summarize")
    worst = np.sort(costs)[::-1][: math.ceil(0.1 * len(costs))]
    if return_min is None or return_max is None:
        normalized = float("nan")
    else:
        require_span(return_min, return_max)
        normalized = float((returns.mean() - return_min) / (return_max - return_min))
    return {
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "cost_mean": float(costs.mean()),
        "cost_std": float(costs.std()),
        "cost_cvar10": float(worst.mean()),
        "cost_rate": float(costs.sum() / lengths.sum()),
        "return_normalized": normalized,
        "cost_normalized": float(costs.mean() / cost_limit),
        "episodes": len(returns),
    }


def reference_returns(paths: Sequence[str | os.PathLike]) -> tuple[float, float]:
    """(R_min, R_max): min/max trajectory return over the env's rollouts files.

    A file's ``return_min``/``return_max`` attributes are used when present; otherwise its
    trajectories are loaded and their returns computed.
    """
    if not paths:
        raise ValueError("no reference rollouts files given; pass the env's rollouts_*.h5")
    lows, highs = [], []
    for path in paths:
        attrs = _h5_attrs(path)
        if "return_min" in attrs and "return_max" in attrs:
            lows.append(float(attrs["return_min"]))
            highs.append(float(attrs["return_max"]))
        else:
            episode_returns = OfflineData.load(path).episode_returns()
            lows.append(float(episode_returns.min()))
            highs.append(float(episode_returns.max()))
    low, high = min(lows), max(highs)
    # refused here, before a training job runs up to its first curve point
    require_span(low, high, ", ".join(map(str, paths)))
    return low, high


def require_span(low: float, high: float, source: str = "") -> None:
    """R_min < R_max, or a :class:`DatasetError` naming ``source`` (the rollouts files): the
    normalized return (R - R_min) / (R_max - R_min) is undefined without a range."""
    if not high > low:
        where = f"{source}: " if source else ""
        raise DatasetError(
            f"{where}reference returns R_min={low} >= R_max={high}: cannot normalize "
            "(R - R_min) / (R_max - R_min); the reference rollouts must span a range of "
            "returns: regenerate them or pass other --reference files"
        )


def _h5_attrs(path) -> dict:
    import h5py

    if not Path(path).exists():
        raise DatasetError(f"{path}: no such reference rollouts file; generate it or fix the path.")
    if not h5py.is_hdf5(path):
        raise DatasetError(f"{path}: not an HDF5 file; pass the env's rollouts_*.h5.")
    with h5py.File(path, "r") as f:
        return dict(f.attrs)


# ---------------------------------------------------------------------- evaluation


def evaluate_policy(
    act_fn: ActFn,
    task: str | TaskSpec,
    episodes: int,
    seed: int,
    reference: tuple[float, float] | None = None,
    num_envs: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Metrics of ``act_fn`` over ``episodes`` evaluation episodes (seeds from eval_seed_base).

    For in-training curves as well as final evaluation. Adds cost_limit, return_min, return_max.
    """
    spec = resolve_task(task)
    result = rollout(act_fn, spec, episodes, eval_seed_base(seed), num_envs, progress=progress)
    return_min, return_max = reference if reference is not None else (None, None)
    metrics = episode_metrics(
        result.episode_returns,
        result.episode_costs,
        result.episode_lengths,
        spec.cost_limit,
        return_min,
        return_max,
    )
    return dict(metrics, cost_limit=spec.cost_limit, return_min=return_min, return_max=return_max)


def evaluate_policy_file(
    policy_path: str | os.PathLike,
    task: str | TaskSpec,
    episodes: int,
    seed: int,
    reference_paths: Sequence[str | os.PathLike] | None = None,
    num_envs: int = 1,
    out_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a ``policy.pt`` (or ``"random"``) and write the eval.json record (atomically).

    The record holds the policy meta fields (META_FIELDS), env, the metrics of
    :func:`evaluate_policy`, and ``eval_seed_base``. Without reference files the normalized
    return is NaN (written as the JSON token ``NaN``, which Python's json reads back).
    """
    spec = resolve_task(task)
    reference = reference_returns(reference_paths) if reference_paths else None
    if reference is None:
        log.warning(
            "no --reference rollouts given for %s: return_normalized will be NaN", spec.name
        )
    if str(policy_path) == "random":
        meta: dict[str, Any] = {
            "algo": "random",
            "variant": None,
            "seed": int(seed),
            "steps": 0,
            "wall_time_s": 0.0,
            "git_commit": git_commit(),
            "uses_hidden_labels": False,
        }
        act_fn = random_act_fn(spec, eval_seed_base(seed))
        policy_sha256 = None
    else:
        from uniq.nets import load_policy

        if not Path(policy_path).is_file():
            raise FileNotFoundError(
                f"{policy_path}: no such policy file; train one with `uniq-bench train` "
                "or pass --policy random."
            )
        policy_sha256 = file_sha256(policy_path)  # of the file as loaded, before the episodes
        try:
            policy, meta = load_policy(policy_path, "cpu")
        except (
            RuntimeError,
            OSError,
            pickle.UnpicklingError,
            EOFError,
            KeyError,
            TypeError,
        ) as err:
            # torch.load's own errors (zip/pickle internals) do not say what to do.
            raise ValueError(
                f"{policy_path}: unreadable policy file ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else 'no detail'}); it is truncated or "
                "not a policy.pt. Delete it and rerun `uniq-bench train` (it resumes from the "
                "run's checkpoint.pt)."
            ) from None
        _check_policy_fits(policy_path, policy, meta, spec)
        act_fn = policy_act_fn(policy)
    started = time.perf_counter()
    metrics = evaluate_policy(act_fn, spec, episodes, seed, reference, num_envs, progress)
    record = {k: meta[k] for k in META_FIELDS if k in meta}
    record.update(env=spec.name, **metrics)
    if policy_sha256 is not None:  # aggregate checks it against the policy.pt beside eval.json
        record["policy_sha256"] = policy_sha256
    record["eval_seed_base"] = eval_seed_base(seed)
    record["eval_wall_time_s"] = round(time.perf_counter() - started, 3)
    # The evaluation's envs (and their workers) ran with this process's fast-path setting.
    record["env_fastpath"] = fastpath.is_active()
    if out_path is not None:
        write_json_atomic(out_path, record)
    return record


def _check_policy_fits(path, policy, meta: dict, spec: TaskSpec) -> None:
    task = meta.get("task")
    if task is not None and task != spec.name:
        raise ValueError(f"{path}: policy was trained on {task}, not {spec.name}; fix --task.")
    dims = (policy.init_kwargs["obs_dim"], policy.init_kwargs["act_dim"])
    if dims != (spec.obs_dim, spec.act_dim):
        raise ValueError(
            f"{path}: policy dims (obs {dims[0]}, act {dims[1]}) do not match {spec.name} "
            f"(obs {spec.obs_dim}, act {spec.act_dim}); fix --task or --policy."
        )


def write_json_atomic(path: str | os.PathLike, record: dict) -> None:
    """Write ``record`` as JSON through a temp file in the same folder and a rename."""
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def curve_point(
    policy, device, spec: TaskSpec, step: int, episodes: int, seed: int, num_envs: int, reference
) -> dict[str, Any]:
    """One curve.csv row: the current ``policy`` (a run's, or a batched run's member's),
    deterministic, on the evaluation episodes of ``seed`` (the run's seed: those of
    ``uniq-bench evaluate --seed SEED``; the workflow's final evaluation uses ``seed_offset +
    seed``, other episodes); ``reference`` = (R_min, R_max) or None."""
    was_training = policy.training
    policy.eval()
    try:
        act_fn = policy_act_fn(policy, str(device))
        res = rollout(act_fn, spec, episodes, eval_seed_base(seed), num_envs, False, False)
    finally:
        policy.train(was_training)
    r_min, r_max = reference if reference else (None, None)
    m = episode_metrics(
        res.episode_returns, res.episode_costs, res.episode_lengths, spec.cost_limit, r_min, r_max
    )
    return {
        "step": step,
        **{k: m[k] for k in ("return_mean", "cost_mean", "return_normalized", "cost_normalized")},
        "episodes": episodes,
    }
