"""Environment steps per second: one plain env loop vs the rollout engine at several num_envs.

    uv run python benchmarks/env_speed.py [--episodes 8] [--num-envs 1 4 8] [--workers 2 --worker-num-envs 2 8]
    uv run python benchmarks/env_speed.py --fastpath-only [--fastpath-episodes 2]

First table (skipped with ``--fastpath-only``): rollout engine rows.

Every row runs the same episodes (seeds 0..E-1) with uniform random actions, except the
"MLP policy" row (a TanhGaussianPolicy 256x2, deterministic, batched in blocks of 16).
Times include building the envs (and worker processes), as an evaluation call pays them.
"in-process" steps all envs in this process (the default); "worker processes" splits them
over subprocesses (UNIQ_ENV_WORKERS). PointGoal episodes are shortened to 250 steps
to keep the run short (a reset rebuilds the MuJoCo model: about 0.05 s).

Second table, the navigation fast path (envs/fastpath.py): per navigation task, one env
stepped with the same seeds and random actions through upstream safety-gymnasium
(UNIQ_ENV_FASTPATH=0), through the fast path, and the MuJoCo-only limit: the same physics
work alone (frameskip x mj_step + one mj_forward per step, on the same model, no Python
around it), interleaved episode by episode so that the ratios survive a drifting machine
load. Steps/s over full 1000-step episodes, resets included (s/reset reported apart); the
limit has no resets.

Writes the Markdown tables to benchmarks/out/env_speed.md.
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

import envs.rollout as engine
from envs import fastpath
from envs.tasks import TASKS, get_task, make_env, make_vec_env
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


def nav_episode(env, seed: int, rng) -> tuple[int, float, float]:
    """(steps, seconds in all, seconds in the reset) of one episode with random actions."""
    started = time.perf_counter()
    env.reset(seed=seed)
    reset_time = time.perf_counter() - started
    steps, done = 0, False
    while not done:
        _, _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 2))
        done = terminated or truncated
        steps += 1
    return steps, time.perf_counter() - started, reset_time


class MujocoLimit:
    """The physics alone: frameskip x mj_step + mj_forward per env step, on the task's model."""

    def __init__(self, name: str):
        self.env = make_env(name, seed=0)
        task = self.env.unwrapped.task
        self.model, self.data = task.model, task.data
        self.frameskip = task.sim_conf.frameskip_binom_n  # binom_p = 1.0: always the max
        self.rng = np.random.default_rng(0)

    def seconds(self, steps: int) -> float:
        import mujoco

        model, data = self.model, self.data
        low, high = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
        actions = self.rng.uniform(low, high, size=(steps, model.nu))
        started = time.perf_counter()
        for action in actions:
            data.ctrl[:] = action
            for _ in range(self.frameskip):
                mujoco.mj_step(model, data)
            mujoco.mj_forward(model, data)
        return time.perf_counter() - started


def fastpath_row(name: str, episodes: int) -> dict[str, float]:
    """Upstream, fast path and MuJoCo limit, interleaved episode by episode.

    Each episode (seed i) runs through upstream, then the fast path, then the limit for as
    many steps: a change of machine load hits all three arms alike, so the ratios hold even
    when the absolute rates drift (a shared machine's load moves over a cell's minute).
    """
    arms = {"upstream": make_env(name, fastpath_on=False), "fast": make_env(name, fastpath_on=True)}
    limit = MujocoLimit(name)
    rngs = {arm: np.random.default_rng(0) for arm in arms}
    total = dict.fromkeys([*arms, "limit"], 0.0)
    steps = dict.fromkeys([*arms, "limit"], 0)
    resets = dict.fromkeys(arms, 0.0)
    try:
        for i in range(episodes):
            for arm, env in arms.items():
                fastpath.set_enabled(arm == "fast")  # the patches are process-wide class attributes
                n, seconds, reset_s = nav_episode(env, i, rngs[arm])
                total[arm] += seconds
                resets[arm] += reset_s
                steps[arm] += n
            total["limit"] += limit.seconds(n)
            steps["limit"] += n
    finally:
        for env in [*arms.values(), limit.env]:
            env.close()
        fastpath.set_enabled(fastpath.enabled_by_env())
    rate = {arm: steps[arm] / total[arm] for arm in total}
    return dict(
        rate, reset_upstream=resets["upstream"] / episodes, reset_fast=resets["fast"] / episodes
    )


def fastpath_table(episodes: int) -> list[str]:
    names = [name for name, spec in TASKS.items() if spec.family == "navigation"]
    lines = [
        f"Navigation fast path (envs/fastpath.py): steps/s of one env, {episodes} full "
        "1000-step episodes per cell with resets (seeds 0..), random actions; limit = "
        "frameskip x mj_step + mj_forward alone (no resets). The three arms run interleaved, "
        "episode by episode, in one process.",
        "",
        "| task | upstream | fast path | MuJoCo limit | fast / upstream | upstream / limit "
        "| fast / limit | s/reset upstream | s/reset fast |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        r = fastpath_row(name, episodes)
        up, fast, limit = r["upstream"], r["fast"], r["limit"]
        lines.append(
            f"| {name} | {up:.0f} | {fast:.0f} | {limit:.0f} | {fast / up:.2f}x "
            f"| {up / limit:.2f} | {fast / limit:.2f} | {r['reset_upstream']:.3f} "
            f"| {r['reset_fast']:.3f} |"
        )
        print(f"done: {name} (fast path)", flush=True)
    return lines


def with_rollout(spec, episodes: int, num_envs: int, act_fn, workers: int) -> float:
    """Steps/s of envs.rollout.rollout with ``workers`` env processes (0: in-process)."""
    original = engine.make_vec_env
    engine.make_vec_env = functools.partial(make_vec_env, workers=workers)
    try:
        started = time.perf_counter()
        out = engine.rollout(act_fn, spec, episodes, 0, num_envs, progress=False)
        return out.episode_lengths.sum() / (time.perf_counter() - started)
    finally:
        engine.make_vec_env = original


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--workers", type=int, default=2, help="processes in the worker rows")
    parser.add_argument("--worker-num-envs", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--fastpath-episodes", type=int, default=2)
    parser.add_argument(
        "--fastpath-only", action="store_true", help="only the navigation fast path table"
    )
    parser.add_argument("--out", default="benchmarks/out/env_speed.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    machine = f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    fast_lines = fastpath_table(args.fastpath_episodes)
    fast_lines.append(f"({machine}; load average {load:.1f} at the start.)")
    if args.fastpath_only:
        table = "\n".join(fast_lines) + "\n"
        print(table)
        atomic_write_text(args.out, table)
        return 0
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
        policy = engine.policy_act_fn(TanhGaussianPolicy(spec.obs_dim, spec.act_dim))
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
    table = "\n".join(lines + [""] + fast_lines) + "\n"
    print(table)
    atomic_write_text(args.out, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
