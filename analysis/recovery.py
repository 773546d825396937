"""Where does a policy go when it starts in the undesirable demonstrations' states?

An offline imitator is evaluated from the task's own start states; this puts it, instead, in
states that D_UN visits (for a velocity task: already running faster than the speed limit)
and follows it for ``--steps`` steps. A policy that learned what to do there comes back under
the limit; one that only ever learned from desirable states has to extrapolate. MuJoCo
velocity tasks only: their observation is the simulator state without the x position, so a
dataset row can be restored exactly (``set_state``).

    uv run python analysis/recovery.py --task SafetyHalfCheetahVelocity-v1 \\
        --un results/quick/data/SafetyHalfCheetahVelocity-v1/default/un.h5 \\
        --policy uniq=results/quick/runs/SafetyHalfCheetahVelocity-v1/default/uniq/seed0/policy.pt \\
        --policy bc-safe=results/quick/runs/SafetyHalfCheetahVelocity-v1/default/bc-safe/seed0/policy.pt

Prints a Markdown table: per policy, the share of steps with a cost (over the limit) in the
first and in the second half of the ``--steps``, and the mean speed of the second half.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envs.tasks import get_task, make_env  # noqa: E402
from uniq.data import OfflineData  # noqa: E402
from uniq.nets import load_policy  # noqa: E402


def start_states(un: OfflineData, n: int, min_cost: float, seed: int) -> np.ndarray:
    """``n`` D_UN observations whose transition had a cost (the undesirable behaviour itself)."""
    rows = np.flatnonzero(un.costs >= min_cost)
    if len(rows) == 0:
        raise SystemExit(f"no D_UN row has cost >= {min_cost}; nothing undesirable to start from")
    return un.observations[np.random.default_rng(seed).choice(rows, n, replace=len(rows) < n)]


def restore(env, obs: np.ndarray) -> np.ndarray:
    """Put a velocity task's simulator in the state ``obs`` describes (x position 0); returns
    the observation it now emits."""
    sim = env.unwrapped
    if not hasattr(sim, "set_state") or hasattr(sim, "task"):
        raise SystemExit("only MuJoCo velocity tasks can be restored from an observation")
    nq = sim.model.nq  # observation = qpos without the x position, then qvel
    sim.set_state(np.concatenate([[0.0], obs[: nq - 1]]), obs[nq - 1 :])
    return sim._get_obs()


@torch.no_grad()
def follow(task: str, policy, starts: np.ndarray, steps: int) -> dict[str, float]:
    """Cost rates (first and second half) and mean speed (second half) of ``policy`` run
    ``steps`` steps from each of ``starts``."""
    env = make_env(task, seed=0)
    costs, speed = np.zeros((len(starts), steps)), np.zeros((len(starts), steps))
    for i, obs in enumerate(starts):
        env.reset(seed=i)
        o = restore(env, obs)
        for t in range(steps):
            a = policy.act(torch.as_tensor(o, dtype=torch.float32)[None])[0].numpy()
            o, _, cost, terminated, truncated, info = env.step(a)
            costs[i, t], speed[i, t] = cost, info.get("x_velocity", np.nan)
            if terminated or truncated:
                costs[i, t + 1 :], speed[i, t + 1 :] = np.nan, np.nan
                break
    half = steps // 2
    return {
        "cost_rate_first": float(np.nanmean(costs[:, :half])),
        "cost_rate_second": float(np.nanmean(costs[:, half:])),
        "speed_second": float(np.nanmean(speed[:, half:])),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--un", required=True, help="D_UN file (un.h5): where the starts come from")
    p.add_argument("--policy", action="append", required=True, metavar="NAME=POLICY.PT")
    p.add_argument("--starts", type=int, default=20)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    spec = get_task(args.task)
    starts = start_states(OfflineData.load(args.un, spec), args.starts, 1.0, args.seed)
    print(f"{args.starts} starts from D_UN rows with a cost; {args.steps} steps each\n")
    print("| policy | cost rate, first half | cost rate, second half | speed, second half |")
    print("|---|---:|---:|---:|")
    for item in args.policy:
        name, _, path = item.partition("=")
        policy, _ = load_policy(path)
        r = follow(spec.name, policy, starts, args.steps)
        print(
            f"| {name} | {r['cost_rate_first']:.2f} | {r['cost_rate_second']:.2f} "
            f"| {r['speed_second']:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
