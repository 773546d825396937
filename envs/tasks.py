"""The task registry: one :class:`TaskSpec` per environment the suite knows.

A task's spec is the single source of its dimensions, episode length, cost threshold
``kappa`` (used as the safe demonstrator's cost limit and to normalize costs, DSRL-style)
and demonstrator budgets. Adding a task is one entry in ``TASKS``.

Cost threshold: Safety-Gym's customary per-episode limit is 25; DSRL evaluates at
thresholds 20/40/80. We use 25 for every task by default; config files may override it
(``tasks.<name>.cost_limit``) and every table caption states the value used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from envs.compat import import_safety_gymnasium


@dataclass(frozen=True)
class TaskSpec:
    name: str
    """Environment id registered by safety-gymnasium, e.g. ``SafetyPointGoal1-v0``."""
    family: str
    """``navigation`` (Safety-Gym goal/button tasks) or ``velocity`` (MuJoCo velocity limits)."""
    obs_dim: int
    act_dim: int
    max_episode_steps: int = 1000
    cost_limit: float = 25.0
    """kappa: the safe demonstrator's per-episode cost limit and the cost normalizer."""
    demo_steps_quick: int = 50_000
    """Environment steps for each RL demonstrator in the quick (CPU) profile."""
    demo_steps_paper: int = 1_000_000
    """Environment steps for each RL demonstrator in the paper profile (GPU machine)."""

    def with_overrides(self, **overrides) -> TaskSpec:
        """A copy with some fields replaced (config files override e.g. ``cost_limit``)."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown TaskSpec field(s) {sorted(unknown)} for task {self.name}")
        return dataclasses.replace(self, **overrides)


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec("SafetyPointGoal1-v0", "navigation", obs_dim=60, act_dim=2),
        TaskSpec("SafetyCarGoal1-v0", "navigation", obs_dim=72, act_dim=2),
        TaskSpec("SafetyPointButton1-v0", "navigation", obs_dim=76, act_dim=2),
        TaskSpec("SafetyCarButton1-v0", "navigation", obs_dim=88, act_dim=2),
        TaskSpec("SafetyHalfCheetahVelocity-v1", "velocity", obs_dim=17, act_dim=6),
        TaskSpec("SafetyAntVelocity-v1", "velocity", obs_dim=27, act_dim=8),
    ]
}


def get_task(name: str) -> TaskSpec:
    """The spec of ``name``; an unknown name fails with the list of known tasks."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(
            f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}. "
            "Add a TaskSpec to envs/tasks.py to register a new one."
        ) from None


def make_env(name: str, seed: int | None = None):
    """One environment of task ``name``.

    Its ``step`` returns ``(obs, reward, cost, terminated, truncated, info)`` and episodes are
    truncated at the spec's ``max_episode_steps``. ``seed`` seeds the first ``reset``.
    """
    spec = get_task(name)
    sg = import_safety_gymnasium()
    env = sg.make(spec.name, max_episode_steps=spec.max_episode_steps)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env
