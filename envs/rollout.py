"""The suite's one rollout engine: a policy on ``num_envs`` vectorised envs.

:func:`rollout` runs a batched ``act_fn`` on ``num_envs`` envs (each stepping its own
episode) and serves both evaluation (:mod:`envs.evaluate`) and data collection
(:mod:`envs.collect`, :mod:`envs.quality`). Episode ``i`` is always reset with seed
``seed + i``, so the result does not depend on ``num_envs``. A policy enters as a numpy
``act_fn`` (:func:`policy_act_fn` wraps a ``uniq.nets`` policy), so nothing here depends on
how it was trained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from envs.tasks import TaskSpec, make_vec_env, resolve_task
from uniq.data import OfflineData

ActFn = Callable[[np.ndarray], np.ndarray]


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
