"""Collecting rollouts files, and the scripted controllers' steering."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from envs.collect import collect
from envs.scripted import ScriptedConfig, ScriptedController
from envs.tasks import get_task
from uniq.cli import main
from uniq.data import OfflineData
from uniq.nets import TanhGaussianPolicy, save_policy

torch.set_num_threads(1)
CHEETAH = "SafetyHalfCheetahVelocity-v1"
ATTRS = {
    "env_id",
    "seed",
    "source",
    "kind",
    "return_mean",
    "return_std",
    "return_min",
    "return_max",
    "cost_mean",
    "cost_std",
    "episodes",
    "checksum",
}


@pytest.fixture
def random_demonstrator(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "demonstrator_unsafe.pt"
    meta = {"task": CHEETAH, "kind": "unsafe", "source": "sac", "steps": 0}
    save_policy(TanhGaussianPolicy(17, 6, hidden=16), path, meta)
    return path


def test_collect_from_a_demonstrator_writes_a_valid_file(random_demonstrator, tmp_path):
    spec = get_task(CHEETAH).with_overrides(max_episode_steps=20)
    out = tmp_path / "rollouts_unsafe.h5"
    collect(spec, out, 3, 7, demonstrator=random_demonstrator, progress=False)
    data = OfflineData.load(out, get_task(CHEETAH))
    assert ATTRS <= set(data.attrs)
    a = data.attrs
    assert (a["env_id"], a["source"], a["kind"], a["episodes"], a["seed"]) == (
        CHEETAH,
        "sac",
        "unsafe",
        3,
        7,
    )
    assert len(data) == 60 and data.num_episodes() == 3
    # provenance: which demonstrator file, byte for byte
    assert a["demonstrator_path"] == str(random_demonstrator)
    assert a["demonstrator_sha256"] == hashlib.sha256(random_demonstrator.read_bytes()).hexdigest()
    returns = data.episode_returns()
    assert a["return_mean"] == pytest.approx(returns.mean(), rel=1e-5)
    assert a["return_min"] == pytest.approx(returns.min(), rel=1e-5)
    assert a["return_max"] == pytest.approx(returns.max(), rel=1e-5)
    assert a["cost_mean"] == pytest.approx(data.episode_costs().mean(), abs=1e-5)
    assert (data.is_desirable == 0).all() and data.timeouts.sum() == 3
    # Stochastic actions: the same state would not give tanh(mean) every time.
    assert data.actions.std(axis=0).min() > 0.05
    # Deterministic for a seed, different for another.
    collect(spec, tmp_path / "again.h5", 3, 7, demonstrator=random_demonstrator, progress=False)
    collect(spec, tmp_path / "other.h5", 3, 8, demonstrator=random_demonstrator, progress=False)
    assert OfflineData.load(tmp_path / "again.h5").checksum() == data.checksum()
    assert OfflineData.load(tmp_path / "other.h5").checksum() != data.checksum()


def test_collect_scripted_navigation(tmp_path):
    spec = get_task("SafetyPointGoal1-v0").with_overrides(max_episode_steps=15)
    out = tmp_path / "rollouts_safe.h5"
    collect(spec, out, 2, 0, scripted="safe", progress=False)
    data = OfflineData.load(out, get_task("SafetyPointGoal1-v0"))
    assert data.attrs["source"] == "scripted" and data.attrs["kind"] == "safe"
    assert data.num_episodes() == 2 and (data.is_desirable == 1).all()


def test_collect_needs_exactly_one_source(random_demonstrator, tmp_path):
    out = tmp_path / "x.h5"
    with pytest.raises(ValueError, match="exactly one of"):
        collect(CHEETAH, out, 1, 0, progress=False)
    with pytest.raises(ValueError, match="exactly one of"):
        collect(CHEETAH, out, 1, 0, random_demonstrator, "safe", progress=False)
    with pytest.raises(FileNotFoundError, match="uniq-bench demonstrator"):
        collect(CHEETAH, out, 1, 0, demonstrator=tmp_path / "missing.pt", progress=False)
    with pytest.raises(ValueError, match="Point and Car"):
        collect(CHEETAH, out, 1, 0, scripted="safe", progress=False)
    assert not out.exists()


def test_cli_collect(random_demonstrator, tmp_path):
    out = tmp_path / "r.h5"
    argv = ["collect", "--task", CHEETAH, "--demonstrator", str(random_demonstrator)]
    assert main([*argv, "--episodes", "1", "--seed", "3", "--out", str(out), "--no-progress"]) == 0
    assert OfflineData.load(out).attrs["episodes"] == 1


# ---------------------------------------------------------------------- scripted steering
def _obs(controller, lidar: dict[str, dict[int, float]]) -> np.ndarray:
    """An observation of zeros but for the given lidar bins ({key: {bin: closeness}})."""
    env_keys = {"goal_lidar": controller.goal, "hazards_lidar": controller.avoid[0]}
    obs = np.zeros((1, controller.spec.obs_dim))
    for key, bins in lidar.items():
        for b, v in bins.items():
            obs[0, env_keys[key].start + b] = v
    return obs


QUIET = ScriptedConfig(noise=0.0)


def test_point_controller_turns_toward_the_goal():
    ctl = ScriptedController("SafetyPointGoal1-v0", "unsafe", config=QUIET)
    # Bins 3 and 4 equal: the goal is at 90 degrees, on the robot's left.
    forward, turn = ctl(_obs(ctl, {"goal_lidar": {3: 0.5, 4: 0.5}}))[0]
    assert turn == pytest.approx(1.0) and forward == pytest.approx(0.0, abs=1e-6)
    # Bins 15 and 0 equal: straight ahead -> full speed, no turn.
    forward, turn = ctl(_obs(ctl, {"goal_lidar": {15: 0.5, 0: 0.5}}))[0]
    assert forward == pytest.approx(1.0) and turn == pytest.approx(0.0, abs=1e-6)


def test_car_controller_drives_its_wheels_toward_the_goal():
    ctl = ScriptedController("SafetyCarGoal1-v0", "unsafe", config=QUIET)
    # The car's front is ego -y: bins 11 and 12 (centres 258.75 and 281.25 degrees).
    left, right = ctl(_obs(ctl, {"goal_lidar": {11: 0.5, 12: 0.5}}))[0]
    assert left == pytest.approx(right, abs=1e-6) and left > 0.9
    # Goal on the left (ego +x is the car's left when it faces -y): left wheel forward more.
    left, right = ctl(_obs(ctl, {"goal_lidar": {0: 0.5, 15: 0.5}}))[0]
    assert left > right


def test_safe_controller_steers_around_a_hazard_the_unsafe_one_ignores():
    lidar = {"goal_lidar": {15: 0.5, 0: 0.5}, "hazards_lidar": {0: 0.85, 1: 0.3}}
    unsafe = ScriptedController("SafetyPointGoal1-v0", "unsafe", config=QUIET)
    safe = ScriptedController("SafetyPointGoal1-v0", "safe", config=QUIET)
    assert unsafe(_obs(unsafe, lidar))[0, 1] == pytest.approx(0.0, abs=1e-6)
    # Hazard just left of straight ahead: the safe controller turns right (negative).
    assert safe(_obs(safe, lidar))[0, 1] < -0.3
