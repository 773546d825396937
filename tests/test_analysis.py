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


def _bc_runs(root: Path, task: str, algo: str, costs: list[float]) -> None:
    for seed, cost in enumerate(costs):
        run = root / task / "default" / algo / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "eval.json").write_text(f'{{"cost_mean": {cost}}}')


def test_cloneability_bar_from_bc_runs(tmp_path):
    table = load("demonstrator_table")
    task = "SafetyPointGoal1-v0"
    _bc_runs(tmp_path / "a", task, "bc-safe", [10.0, 12.0, 14.0])
    _bc_runs(tmp_path / "a", task, "bc-mix", [40.0, 45.0, 50.0])
    ok = table.cloneability(task, safe_cost=4.0, runs=tmp_path / "a")
    assert ok["bc_safe_cost_mean"] == pytest.approx(12.0) and ok["bc_safe_cost_bound"] == 13.0
    assert ok["bc_safe_close_to_demonstrator"] and ok["bc_mix_clearly_less_safe"]
    assert not table.cloneability(task, safe_cost=3.0, runs=tmp_path / "a")[
        "bc_safe_close_to_demonstrator"
    ]  # 12 > 2 * 3 + 5
    # a mean gap inside three standard errors is not "clearly" less safe
    _bc_runs(tmp_path / "b", task, "bc-safe", [0.0, 30.0, 10.0])
    _bc_runs(tmp_path / "b", task, "bc-mix", [5.0, 50.0, 15.0])
    assert not table.cloneability(task, 20.0, tmp_path / "b")["bc_mix_clearly_less_safe"]
    assert table.cloneability(task, 20.0, tmp_path / "missing") is None
    _bc_runs(tmp_path / "c", task, "bc-safe", [1.0])  # one seed: no standard error
    _bc_runs(tmp_path / "c", task, "bc-mix", [50.0])
    assert table.cloneability(task, 20.0, tmp_path / "c") is None
    # runs on rollouts of another demonstrator than the committed one do not count
    assert table.cloneability(task, 4.0, tmp_path / "a", {"safe": "x", "unsafe": "y"}) is None
