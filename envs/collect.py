"""Roll a demonstrator (or a scripted controller) out and write ``rollouts_{kind}.h5``.

The transitions come from :func:`envs.rollout.rollout` (the suite's one rollout engine)
with ``record=True``. Demonstrators act *stochastically* (a ~ pi(.|s), not tanh(mu)): the
datasets should show the behaviour's spread, as the paper's reference data did.
Episode ``i`` is reset with seed ``seed + i``; collection seeds stay far below the
evaluation seeds (10 million and up, see ``envs.evaluate.eval_seed_base``).

File attributes: env_id, seed, source (``sac`` | ``sac-lagrangian`` | ``ppo`` |
``ppo-lagrangian`` | ``scripted``), kind, episodes, return_mean/std/min/max,
cost_mean/std/min/max, cost_limit, the demonstrator's file name, path and SHA-256 and its
training stats, ``portable_numerics`` (whether the rollout ran on the CPU-independent math
paths of uniq/numerics.py, as the ``collect`` command does) and the content checksum
(written by ``OfflineData.save``).
``is_desirable`` is 1 for ``safe`` rollouts and 0 for ``unsafe`` ones. Rollouts of a
``data: dsrl`` task are not collected but cut from the user's DSRL file (envs/dsrl.py), in
the same format.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.rollout import ActFn, rollout
from envs.tasks import TaskSpec, resolve_task
from uniq import numerics
from uniq.data import OfflineData

KINDS = ("safe", "unsafe")


def demonstrator_act_fn(path: str | os.PathLike, seed: int) -> tuple[ActFn, dict[str, Any]]:
    """Stochastic actions a ~ pi(.|s) of a demonstrator file; returns (act_fn, its meta)."""
    from uniq.nets import load_policy

    policy, meta = load_policy(path, "cpu")
    gen = torch.Generator().manual_seed(seed)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            mean, log_std = policy(torch.as_tensor(obs, dtype=torch.float32))
            noise = torch.randn(mean.shape, generator=gen)
            return torch.tanh(mean + log_std.exp() * noise).numpy()

    return act, meta


def return_cost_stats(returns: np.ndarray, costs: np.ndarray) -> dict[str, float]:
    """Mean, std, min and max of the episode returns and costs: a rollouts file's attributes."""
    out = {}
    for name, values in (("return", returns), ("cost", costs)):
        for stat in ("mean", "std", "min", "max"):
            out[f"{name}_{stat}"] = float(getattr(values, stat)())
    return out


def collect(
    task: str | TaskSpec,
    out: str | os.PathLike,
    episodes: int,
    seed: int,
    demonstrator: str | os.PathLike | None = None,
    scripted: str | None = None,
    num_envs: int = 1,
    progress: bool = True,
) -> OfflineData:
    """Roll ``episodes`` episodes out of ``demonstrator`` (a .pt) or ``scripted`` (safe|unsafe).

    Writes ``out`` atomically and returns the data. The kind (safe/unsafe) is the
    demonstrator's ``kind`` meta field, or the scripted mode.
    """
    spec = resolve_task(task)
    if (demonstrator is None) == (scripted is None):
        raise ValueError("give exactly one of --demonstrator FILE.pt or --scripted safe|unsafe.")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1 (got {episodes}).")
    if scripted is not None:
        from envs.scripted import scripted_act_fn

        act_fn: ActFn = scripted_act_fn(spec, scripted, seed)
        kind, source, extra = scripted, "scripted", {}
    else:
        if not Path(demonstrator).exists():
            raise FileNotFoundError(
                f"{demonstrator}: no demonstrator file; train it with `uniq-bench demonstrator`."
            )
        act_fn, meta = demonstrator_act_fn(demonstrator, seed)
        if meta.get("task") not in (None, spec.name):
            raise ValueError(
                f"{demonstrator} was trained on {meta.get('task')}, not {spec.name}; fix --task."
            )
        kind, source = meta.get("kind"), meta.get("source", "unknown")
        from uniq.atomic import file_sha256

        extra = {
            "demonstrator": Path(demonstrator).name,
            "demonstrator_path": str(demonstrator),
            "demonstrator_sha256": file_sha256(demonstrator),
            "demonstrator_stats": {
                k: meta[k]
                for k in (
                    "steps",
                    "episodes",
                    "train_return_last10",
                    "train_cost_last10",
                    "train_return_last5",
                    "train_cost_last5",
                    "git_commit",
                    "final_lambda",
                    "wall_time_s",
                )
                if k in meta
            },
        }
    if kind not in KINDS:
        raise ValueError(f"demonstrator kind {kind!r} is not one of {KINDS}.")

    result = rollout(act_fn, spec, episodes, seed, num_envs, record=True, progress=progress)
    data = result.data
    data.is_desirable[:] = 1.0 if kind == "safe" else 0.0
    returns, costs = result.episode_returns, result.episode_costs
    data.attrs = dict(
        env_id=spec.name,
        seed=int(seed),
        source=source,
        kind=kind,
        episodes=int(episodes),
        cost_limit=float(spec.cost_limit),
        **return_cost_stats(returns, costs),
        env_fastpath=bool(result.env_fastpath),
        portable_numerics=all(numerics.status().values()),
        **extra,
    )
    data.save(out)
    return data
