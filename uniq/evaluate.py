"""Rollouts and evaluation metrics: the suite's one rollout engine.

:func:`rollout` runs a batched policy on ``num_envs`` envs (each stepping its own episode)
and is used both to evaluate trained policies and to collect datasets. Episode ``i`` is
always reset with seed ``seed + i``, so the result does not depend on ``num_envs``.

Evaluation seeds are kept apart from training seeds: a run evaluated with ``--seed s`` uses
episodes seeded ``eval_seed_base(s) + i = 10_000_000 + 1000 s + i`` (training and data
collection use seeds far below 10 million). Every algorithm evaluated with the same ``s``
meets the same episodes (common random numbers across algorithms).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from envs import fastpath
from envs.tasks import TaskSpec, make_vec_env, resolve_task
from uniq.atomic import atomic_write_text, git_commit
from uniq.data import OfflineData

log = logging.getLogger(__name__)

ActFn = Callable[[np.ndarray], np.ndarray]

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


@dataclass
class Rollouts:
    """Per-episode results, ordered by episode index (and the transitions if recorded)."""

    episode_returns: np.ndarray
    episode_costs: np.ndarray
    episode_lengths: np.ndarray
    data: OfflineData | None = None
    env_fastpath: bool | None = None
    """Whether the envs ran safety-gymnasium's fast path (envs/fastpath.py; same bits)."""


class _Recorder:
    """Per-episode float32 buffers (allocated at the horizon, trimmed), joined in episode order.

    Columns: obs, action, reward, cost, next_obs, terminal, timeout. Storing float32 arrays
    rather than per-step Python objects keeps a large collection near the dataset's own size.
    """

    def __init__(self, spec: TaskSpec, episodes: int):
        self.spec = spec
        self.buffers: list[list[np.ndarray] | None] = [None] * episodes
        self.lengths = np.zeros(episodes, dtype=np.int64)

    def add(self, episode: int, *columns) -> None:
        if self.buffers[episode] is None:
            horizon = self.spec.max_episode_steps
            widths = (self.spec.obs_dim, self.spec.act_dim, 1, 1, self.spec.obs_dim, 1, 1)
            self.buffers[episode] = [np.zeros((horizon, w), np.float32) for w in widths]
        t = self.lengths[episode]
        for buffer, value in zip(self.buffers[episode], columns, strict=True):
            buffer[t] = value
        self.lengths[episode] = t + 1

    def finish(self, seed: int) -> OfflineData:
        columns = [
            np.concatenate([b[i][:n] for b, n in zip(self.buffers, self.lengths, strict=True)])
            for i in range(7)
        ]
        obs, act, rew, cost, nxt, term, tout = columns
        return OfflineData(
            observations=obs,
            actions=act,
            rewards=rew[:, 0],
            costs=cost[:, 0],
            next_observations=nxt,
            terminals=term[:, 0],
            timeouts=tout[:, 0],
            is_desirable=np.ones(len(obs), np.float32),
            attrs={"env_id": self.spec.name, "seed": int(seed)},
        )


def rollout(
    act_fn: ActFn,
    task: str | TaskSpec,
    episodes: int,
    seed: int,
    num_envs: int = 1,
    record: bool = False,
    progress: bool = True,
) -> Rollouts:
    """Run ``episodes`` episodes of ``act_fn`` on ``task``; episode ``i`` is reset with ``seed + i``.

    ``act_fn(obs [n, obs_dim] float32) -> actions [n, act_dim]`` is called once per step on
    the observations of every env still running; actions are clipped to the action space.
    With ``record`` the transitions come back as ``Rollouts.data`` (trajectories contiguous,
    in episode order; ``terminals``/``timeouts`` from terminated/truncated; a transition that
    is both counts as terminal; ``is_desirable`` = 1).
    ``task`` may be a TaskSpec copy (e.g. with a shorter ``max_episode_steps``).
    """
    spec = resolve_task(task)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    n = min(num_envs, episodes)
    returns, costs = np.zeros(episodes), np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=np.int64)
    recorder = _Recorder(spec, episodes) if record else None
    bar = tqdm(total=episodes, desc=f"rollout {spec.name}", unit="ep", disable=not progress)
    with bar, make_vec_env(spec, n) as venv:
        low, high = venv.action_space.low, venv.action_space.high
        episode_of = list(range(n))  # slot -> running episode index (-1: idle)
        next_episode = n
        obs = np.zeros((n, spec.obs_dim), np.float32)
        obs[:] = venv.reset(list(range(n)), [seed + i for i in range(n)])
        while True:
            slots = [k for k in range(n) if episode_of[k] >= 0]
            if not slots:
                break
            actions = _checked_actions(act_fn(obs[slots]), len(slots), spec)
            actions = np.clip(actions, low, high)
            next_obs, reward, cost, terminated, truncated, _ = venv.step(slots, actions)
            finished = []
            for j, slot in enumerate(slots):
                ep = episode_of[slot]
                returns[ep] += reward[j]
                costs[ep] += cost[j]
                lengths[ep] += 1
                if recorder is not None:
                    recorder.add(
                        ep,
                        obs[slot],
                        actions[j],
                        reward[j],
                        cost[j],
                        next_obs[j],
                        terminated[j],
                        truncated[j] and not terminated[j],
                    )
                obs[slot] = next_obs[j]
                if terminated[j] or truncated[j]:
                    finished.append(slot)
            if finished:
                bar.update(len(finished))
            restart = []
            for slot in finished:
                if next_episode < episodes:
                    episode_of[slot] = next_episode
                    restart.append(slot)
                    next_episode += 1
                else:
                    episode_of[slot] = -1
            if restart:
                obs[restart] = venv.reset(restart, [seed + episode_of[k] for k in restart])
        env_fastpath = venv.fastpath
    data = recorder.finish(seed) if recorder is not None else None
    return Rollouts(returns, costs, lengths, data, env_fastpath)


def _checked_actions(actions, count: int, spec: TaskSpec) -> np.ndarray:
    actions = np.asarray(actions, dtype=np.float64)
    if actions.shape != (count, spec.act_dim):
        raise ValueError(
            f"act_fn returned actions of shape {actions.shape}; expected ({count}, {spec.act_dim}) "
            f"for {spec.name} (one row per observation)."
        )
    if not np.isfinite(actions).all():
        raise ValueError(f"act_fn returned NaN/inf actions on {spec.name}; the policy diverged.")
    return actions


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
    elif return_max <= return_min:
        raise ValueError(
            f"reference returns R_min={return_min} >= R_max={return_max}: cannot normalize; "
            "the reference rollouts must span a range of returns."
        )
    else:
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
    return min(lows), max(highs)


def _h5_attrs(path) -> dict:
    import h5py

    from uniq.data import DatasetError

    if not Path(path).exists():
        raise DatasetError(f"{path}: no such reference rollouts file; generate it or fix the path.")
    if not h5py.is_hdf5(path):
        raise DatasetError(f"{path}: not an HDF5 file; pass the env's rollouts_*.h5.")
    with h5py.File(path, "r") as f:
        return dict(f.attrs)


# ---------------------------------------------------------------------- policies
POLICY_BLOCK = 16
"""Rows per policy call. Matrix products round differently for different batch sizes, so
a row's action could depend on how many envs are running; padding every call to blocks of
16 rows keeps the kernel shape fixed, which makes each row's action independent of the
batch (checked by a test on CPU). A 16-row call costs about as much as a 1-row call."""


def policy_act_fn(policy, device: str = "cpu") -> ActFn:
    """Deterministic action tanh(mu(s)) of a TanhGaussianPolicy, as a numpy act_fn."""
    import torch

    def act(obs: np.ndarray) -> np.ndarray:
        n = len(obs)
        padded = np.zeros((-(-n // POLICY_BLOCK) * POLICY_BLOCK, obs.shape[1]), np.float32)
        padded[:n] = obs
        x = torch.as_tensor(padded, device=device)
        with torch.no_grad():
            blocks = [policy.act(b, deterministic=True) for b in x.split(POLICY_BLOCK)]
        return torch.cat(blocks)[:n].cpu().numpy()

    return act


def random_act_fn(spec: TaskSpec, seed: int) -> ActFn:
    """Uniform random actions in [-1, 1]^act_dim from a seeded generator."""
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(-1.0, 1.0, size=(len(obs), spec.act_dim))


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
    else:
        from uniq.nets import load_policy

        if not Path(policy_path).is_file():
            raise FileNotFoundError(
                f"{policy_path}: no such policy file; train one with `uniq-bench train` "
                "or pass --policy random."
            )
        try:
            policy, meta = load_policy(policy_path, "cpu")
        except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError, TypeError) as err:
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
