"""Environment steps per second: one plain env loop vs the rollout engine at several num_envs.

    uv run python benchmarks/env_speed.py [--episodes 8] [--num-envs 1 4 8] [--workers 2 --worker-num-envs 2 8]

Every row runs the same episodes (seeds 0..E-1) with uniform random actions, except the
"MLP policy" row (a TanhGaussianPolicy 256x2, deterministic, batched in blocks of 16).
Times include building the envs (and worker processes), as an evaluation call pays them.
"in-process" steps all envs in this process (the default); "worker processes" splits them
over subprocesses (UNIQ_ENV_WORKERS). PointGoal episodes are shortened to 250 steps
to keep the run short (a reset rebuilds the MuJoCo model: about 0.05 s).
Writes the Markdown table to benchmarks/out/env_speed.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import time

import numpy as np
import torch

import uniq.evaluate as evaluate
from envs.tasks import get_task, make_env, make_vec_env
from uniq.atomic import atomic_write_text
from uniq.nets import TanhGaussianPolicy

HORIZONS = {"SafetyPointGoal1-v0": 250, "SafetyHalfCheetahVelocity-v1": 1000}


def single_env(spec, episodes: int) -> float:
    """Steps/s of a plain loop over one env with random actions."""
    started = time.perf_counter()
    env = make_env(spec)
    env.action_space.seed(0)
    steps = 0
    for i in range(episodes):
        env.reset(seed=i)
        done = False
        while not done:
            _, _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            done = terminated or truncated
            steps += 1
    env.close()
    return steps / (time.perf_counter() - started)


def with_rollout(spec, episodes: int, num_envs: int, act_fn, workers: int) -> float:
    """Steps/s of uniq.evaluate.rollout with ``workers`` env processes (0: in-process)."""
    original = evaluate.make_vec_env
    evaluate.make_vec_env = functools.partial(make_vec_env, workers=workers)
    try:
        started = time.perf_counter()
        out = evaluate.rollout(act_fn, spec, episodes, 0, num_envs, progress=False)
        return out.episode_lengths.sum() / (time.perf_counter() - started)
    finally:
        evaluate.make_vec_env = original


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--workers", type=int, default=2, help="processes in the worker rows")
    parser.add_argument("--worker-num-envs", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--out", default="benchmarks/out/env_speed.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)

    results: dict[tuple[str, int], dict[str, float]] = {}
    for name, horizon in HORIZONS.items():
        spec = get_task(name).with_overrides(max_episode_steps=horizon)

        def random_actions(obs, spec=spec):
            return rng.uniform(-1, 1, size=(len(obs), spec.act_dim))

        results.setdefault(("single env loop", 1), {})[name] = single_env(spec, args.episodes)
        for n in args.num_envs:
            results.setdefault(("rollout, in-process (default)", n), {})[name] = with_rollout(
                spec, args.episodes, n, random_actions, 0
            )
        for n in args.worker_num_envs:
            key = (f"rollout, {args.workers} worker processes", n)
            results.setdefault(key, {})[name] = with_rollout(
                spec, args.episodes, n, random_actions, args.workers
            )
        n = max(args.num_envs)
        policy = evaluate.policy_act_fn(TanhGaussianPolicy(spec.obs_dim, spec.act_dim))
        results.setdefault(("rollout, in-process, MLP policy", n), {})[name] = with_rollout(
            spec, args.episodes, n, policy, 0
        )
        print(f"done: {name}", flush=True)
    rows = [(label, n, values) for (label, n), values in results.items()]

    names = list(HORIZONS)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"Env steps/s ({args.episodes} episodes per cell; PointGoal1 horizon "
        f"{HORIZONS['SafetyPointGoal1-v0']}, HalfCheetahVelocity 1000; "
        f"{os.cpu_count()} CPUs, load average {load:.1f} at the end; {platform.processor() or platform.machine()}).",
        "",
        "| runner | num_envs | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for label, n, values in rows:
        cells = " | ".join(f"{values[name]:.0f}" for name in names)
        lines.append(f"| {label} | {n} | {cells} |")
    raw = results[("single env loop", 1)]
    with_policy = results[("rollout, in-process, MLP policy", max(args.num_envs))]
    ratios = ", ".join(f"{name} {with_policy[name] / raw[name]:.2f}x" for name in names)
    lines += [
        "",
        f"Evaluation with the policy vs raw random stepping of one env (target >= 0.8x): {ratios}.",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    atomic_write_text(args.out, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
