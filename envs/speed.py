"""Short timed bursts of what the workflow's env-bound jobs do, for ``uniq-bench plan``.

- :func:`env_cost`: one env of a task: seconds to build it, per reset, per step (random
  actions, the fast path as configured);
- :func:`policy_cost`: one batched forward of a tanh-Gaussian policy (evaluation, rollouts);
- :func:`sac_update_cost` / :func:`ppo_epoch_update_cost`: a demonstrator's gradient work
  (SAC: per env step after ``start_steps``; PPO: per epoch).

Each is capped to a second or two; the caller multiplies them by a job's episodes and steps.
Seconds are CPU seconds of this process (``time.process_time``): another process's load
does not stretch them, so a price measured on a busy machine holds on an idle one.
``benchmarks/env_speed.py`` measures the same rates at length, with ratios against references.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from envs.rollout import policy_act_fn
from envs.tasks import TaskSpec, make_env, resolve_task
from uniq.nets import TanhGaussianPolicy, load_policy


@dataclass(frozen=True)
class EnvCost:
    build_s: float
    reset_s: float
    step_s: float


def env_cost(
    task: str | TaskSpec, steps: int = 300, resets: int = 2, policy: str | None = None
) -> EnvCost:
    """Build one env (its second build: the first pays one-off imports and compilation,
    which every job pays once and :func:`uniq.plan` counts in the job's start-up), then
    ``resets`` seeded resets and ``steps`` steps (episodes restarted as needed), the actions
    of ``policy`` (a policy file) or random ones. Only ``env.step`` is timed: a policy that
    reaches goals and presses buttons makes the env resample them (measured: PointGoal1
    0.56 ms a step with its committed demonstrator, 0.17 ms with random actions)."""
    spec = resolve_task(task)
    rng = np.random.default_rng(0)
    act = lambda obs: rng.uniform(-1, 1, spec.act_dim)  # noqa: E731
    if policy is not None:
        act_batch = policy_act_fn(load_policy(policy)[0])
        act = lambda obs: act_batch(np.asarray(obs, np.float32)[None])[0]  # noqa: E731
    make_env(spec, seed=0).close()
    t = time.process_time()
    env = make_env(spec, seed=0)
    build_s = time.process_time() - t
    try:
        t = time.process_time()
        for i in range(resets):
            obs, _ = env.reset(seed=i)
        reset_s = (time.process_time() - t) / resets
        stepping, extra_resets = 0.0, 0
        for _ in range(steps):
            action = act(obs)
            t = time.process_time()
            obs, _, _, terminated, truncated, _ = env.step(action)
            stepping += time.process_time() - t
            if terminated or truncated:
                obs, _ = env.reset(seed=resets + extra_resets)
                extra_resets += 1
    finally:
        env.close()
    return EnvCost(build_s, reset_s, stepping / steps)


def policy_cost(spec: TaskSpec, hidden: int, batch: int, calls: int = 200) -> float:
    """Seconds per call of a ``hidden``-unit policy on ``batch`` observations, through the
    rollout engine's act function (deterministic, padded to its blocks)."""
    act = policy_act_fn(TanhGaussianPolicy(spec.obs_dim, spec.act_dim, hidden).eval())
    obs = np.zeros((batch, spec.obs_dim), np.float32)
    act(obs)
    t = time.process_time()
    for _ in range(calls):
        act(obs)
    return (time.process_time() - t) / calls


def sac_update_cost(spec: TaskSpec, cfg, lagrangian: bool, budget_s: float = 1.0) -> float:
    """Seconds per SAC(-Lagrangian) gradient step (``cfg``: a DemoConfig) on random replay rows."""
    from envs.demonstrators import ReplayBuffer, SACAgent

    agent = SACAgent(spec.obs_dim, spec.act_dim, cfg, lagrangian, spec.cost_limit, "cpu")
    rows = 4 * cfg.batch_size
    buffer = ReplayBuffer(spec.obs_dim, spec.act_dim, rows, "cpu")
    for v in buffer.data.values():
        v.copy_(torch.rand_like(v))
    buffer.size = rows
    gen = torch.Generator().manual_seed(0)
    agent.update(buffer.sample(cfg.batch_size, gen))  # first-call allocations
    n, started = 0, time.process_time()
    while n < 3 or time.process_time() - started < budget_s:
        agent.update(buffer.sample(cfg.batch_size, gen))
        n += 1
        if n >= 200:
            break
    return (time.process_time() - started) / n


def ppo_epoch_update_cost(spec: TaskSpec, cfg, lagrangian: bool) -> float:
    """Seconds of one PPO(-Lagrangian) epoch update (``cfg``: a PPOConfig) on random rows:
    one pass timed, times ``cfg.passes`` (no KL stop: an upper bound of the real epoch's)."""
    from envs.ppo import PPOAgent

    agent = PPOAgent(spec, cfg, lagrangian)
    n = cfg.epoch_steps
    batch = {
        "obs": torch.randn(n, spec.obs_dim), "u": torch.randn(n, spec.act_dim),
        "logp": torch.full((n,), -1.0), "adv": torch.randn(n), "adv_c": torch.randn(n),
        "ret": torch.randn(n), "ret_c": torch.randn(n),
    }  # fmt: skip
    no_stop = type(cfg)(**{**cfg.__dict__, "target_kl": float("inf"), "passes": 1})
    agent.cfg = no_stop
    t = time.process_time()
    agent.update(batch, torch.Generator().manual_seed(0))
    return (time.process_time() - t) * cfg.passes
