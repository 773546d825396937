"""The safety-gymnasium shim, the task registry, make_env and the vectorized envs."""

from __future__ import annotations

import subprocess
import sys

import mujoco
import numpy as np
import pytest

from envs.compat import import_safety_gymnasium
from envs.tasks import TASKS, get_task, make_env, make_vec_env


def test_shim_imports_and_array_defaults_are_per_instance_copies():
    sg = import_safety_gymnasium()
    assert hasattr(sg, "make")
    from safety_gymnasium.assets.geoms import Hazards

    a, b = Hazards(), Hazards()
    assert isinstance(a.color, np.ndarray)
    assert a.color is not b.color
    np.testing.assert_array_equal(a.color, b.color)
    before = b.color.copy()
    a.color[0] = -123.0
    np.testing.assert_array_equal(b.color, before)


def test_import_does_not_print_the_adroit_notice():
    code = "from envs.compat import import_safety_gymnasium as f; f(); print('imported')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "imported" in done.stdout
    assert "reward functions were updated" not in done.stderr


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_makes_resets_and_steps_with_its_dims(name):
    spec = get_task(name)
    env = make_env(name, seed=0)
    obs, info = env.reset(seed=1)
    assert obs.shape == (spec.obs_dim,)
    assert env.observation_space.shape == (spec.obs_dim,)
    assert env.action_space.shape == (spec.act_dim,)
    out = env.step(env.action_space.sample())
    assert len(out) == 6
    obs, reward, cost, terminated, truncated, info = out
    assert obs.shape == (spec.obs_dim,)
    assert np.isfinite(float(reward)) and float(cost) >= 0.0
    assert isinstance(terminated, bool | np.bool_) and isinstance(truncated, bool | np.bool_)
    env.close()


def test_get_task_unknown_name_lists_the_tasks():
    with pytest.raises(KeyError) as err:
        get_task("SafetyUnicornGoal9-v0")
    message = str(err.value)
    assert "SafetyUnicornGoal9-v0" in message
    for name in TASKS:
        assert name in message


def test_make_env_honours_a_spec_override():
    spec = get_task("SafetyHalfCheetahVelocity-v1").with_overrides(max_episode_steps=7)
    env = make_env(spec)
    env.reset(seed=0)
    ends = [env.step(np.zeros(spec.act_dim))[4] for _ in range(7)]
    assert ends == [False] * 6 + [True]


def _trajectory(env, seed: int, steps: int = 30) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    rows = [obs]
    for _ in range(steps):
        obs, reward, cost, *_ = env.step(np.tanh(np.sin(3 * obs[:2] + np.arange(2))))
        rows.append(np.append(obs, [reward, cost]))
    return np.concatenate(rows)


def test_an_episode_depends_only_on_its_seed_not_on_the_env_history():
    # Car tasks left the MuJoCo solver warm start of earlier resets in the new episode.
    fresh, used = make_env("SafetyCarGoal1-v0"), make_env("SafetyCarGoal1-v0")
    _trajectory(used, seed=7)
    np.testing.assert_array_equal(_trajectory(fresh, 5), _trajectory(used, 5))


def test_navigation_worlds_compile_without_the_skybox():
    env = make_env("SafetyPointGoal1-v0", seed=0)
    model = env.unwrapped.task.model
    assert mujoco.mjtTexture.mjTEXTURE_SKYBOX not in set(model.tex_type.tolist())
    assert model.ntex >= 1  # the floor texture is still there


def test_vec_env_in_worker_processes_matches_local_envs():
    spec = get_task("SafetyPointGoal1-v0")
    actions = np.array([[0.5, -0.2], [1.0, 0.3], [-0.4, 0.9]])
    with make_vec_env(spec, 3, workers=0) as local, make_vec_env(spec, 3, workers=2) as remote:
        assert remote.workers == 2
        first = [venv.reset([0, 1, 2], [11, 12, 13]) for venv in (local, remote)]
        steps = [venv.step([2, 0], actions[:2]) for venv in (local, remote)]
    np.testing.assert_array_equal(first[0], first[1])
    for a, b in zip(steps[0][:5], steps[1][:5], strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0][0], first[0][1])  # the seeds matter


def test_vec_env_worker_errors_name_the_cause():
    with make_vec_env("SafetyPointGoal1-v0", 1, workers=1) as venv:
        venv.reset([0], [0])
        with pytest.raises(RuntimeError, match="Action dimension mismatch"):
            venv.step([0], np.zeros((1, 5)))
