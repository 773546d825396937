"""analysis/ scripts: the state restoring that the recovery analysis rests on."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.tasks import make_env

TASK = "SafetyHalfCheetahVelocity-v1"
ROOT = Path(__file__).resolve().parent.parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "analysis" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def running_observation(steps: int = 30) -> np.ndarray:
    env = make_env(TASK, seed=3)
    obs, _ = env.reset(seed=3)
    for _ in range(steps):
        obs, *_ = env.step(env.action_space.sample())
    return obs


def test_restore_reproduces_the_observation_and_the_next_step():
    recovery = load("recovery")
    obs = running_observation()
    env_a, env_b = make_env(TASK, seed=0), make_env(TASK, seed=1)
    env_a.reset(seed=0)
    env_b.reset(seed=1)
    np.testing.assert_allclose(recovery.restore(env_a, obs), obs, rtol=0, atol=1e-12)
    recovery.restore(env_b, obs)
    action = np.linspace(-1, 1, 6)
    # the state is the whole story: two different envs restored to it step identically
    np.testing.assert_allclose(env_a.step(action)[0], env_b.step(action)[0], atol=1e-12)


def test_follow_measures_slowing_down_from_a_fast_start():
    recovery = load("recovery")
    fast = running_observation().copy()
    fast[8] = 8.0  # x velocity far above the limit

    class Idle:  # no torque: the cheetah coasts to a stop
        def act(self, obs):
            return torch.zeros(len(obs), 6)

    r = recovery.follow(TASK, Idle(), fast[None], steps=100)
    assert r["cost_rate_first"] > 0  # it starts over the limit
    assert r["cost_rate_second"] == 0
    assert abs(r["speed_second"]) < 1.0
    with pytest.raises(SystemExit, match="velocity tasks"):
        recovery.follow("SafetyPointGoal1-v0", Idle(), fast[None], steps=2)
