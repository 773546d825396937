"""envs/fastpath.py returns exactly what upstream safety-gymnasium returns, and its switch.

Each equality test runs the same reset seeds and actions through upstream
(``fastpath_on=False``) and through the fast path, and compares bit for bit: observations
(as raw bytes), rewards, costs, terminated, truncated, the cost entries of info (values and
types) and the layout RNG's full state after every reset. The patches are process-wide, so
the two runs happen one after the other in this process.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from envs import fastpath
from envs.tasks import TASKS, make_env, make_vec_env

NAV_TASKS = [name for name, spec in TASKS.items() if spec.family == "navigation"]


def _trace(name: str, fastpath_on: bool, episodes: list[tuple[int, int]], hook=None) -> list:
    """Everything the env returns over ``episodes`` = [(reset seed, max steps), ...].

    ``hook(task, t)``, if given, runs before step ``t`` of each episode (in both runs alike).
    """
    env = make_env(name, fastpath_on=fastpath_on)
    assert fastpath.is_active() == fastpath_on
    rng = np.random.default_rng(1234)
    out = []
    for seed, steps in episodes:
        obs, _ = env.reset(seed=seed)
        state = env.unwrapped.task.random_generator.random_generator.get_state()
        out.append(("reset", obs.tobytes(), obs.dtype, state[1].tobytes(), state[2:]))
        for t in range(steps):
            if hook is not None:
                hook(env.unwrapped.task, t)
            obs, reward, cost, terminated, truncated, info = env.step(rng.uniform(-1, 1, 2))
            costs = {k: (v, type(v)) for k, v in info.items() if k.startswith("cost")}
            out.append(
                (obs.tobytes(), obs.dtype, reward, type(reward), cost, terminated, truncated, costs)
            )
            if terminated or truncated:
                break
    env.close()
    return out


def _assert_identical(name: str, episodes: list[tuple[int, int]], hook=None) -> None:
    try:
        upstream = _trace(name, False, episodes, hook)
        fast = _trace(name, True, episodes, hook)
    finally:
        fastpath.set_enabled(fastpath.enabled_by_env())
    assert len(fast) == len(upstream)
    for t, (a, b) in enumerate(zip(upstream, fast, strict=True)):
        assert a == b, f"{name}: record {t} differs:\nupstream {a}\nfast     {b}"


@pytest.mark.parametrize("name", NAV_TASKS)
def test_bit_identical_to_upstream(name):
    # One full 1000-step episode, then a reset with a new seed and a shorter one (CI time).
    _assert_identical(name, [(7, 1000), (8, 200)])


def _start_button_timer(task, t) -> None:
    if t % 40 == 0:
        task.buttons.timer = 10  # as after pressing the goal button: a blank buttons lidar


@pytest.mark.parametrize("name", ["SafetyPointButton1-v0", "SafetyCarButton1-v0"])
def test_button_timer_obs_identical(name):
    """ButtonLevel0.obs while the button timer runs (random actions rarely press the goal button)."""
    _assert_identical(name, [(3, 200)], hook=_start_button_timer)


@pytest.mark.parametrize("alias", [True, False])
def test_lidar_values_match_upstream_on_edge_positions(alias):
    """The lidar's Python-float loop body against upstream's on points the episodes rarely hit:
    the agent's own position, exact bin boundaries, beyond max_dist, negative angles."""
    env = make_env("SafetyPointGoal1-v0", seed=0, fastpath_on=True)
    task = env.unwrapped.task
    task.lidar_conf.alias = alias
    upstream = fastpath._UPSTREAM[("bases.base_task", "BaseTask", "_obs_lidar_pseudo")]
    agent = task.agent.pos
    rng = np.random.default_rng(5)
    cases = [agent[None, :2], agent[None, :]]
    for k in range(16):  # points on bin boundaries in the world frame
        angle = k * np.pi / 8
        cases.append(agent[:2] + np.array([[np.cos(angle), np.sin(angle)]]) * 0.5)
    cases += [agent[:2] + rng.uniform(-4, 4, size=(n, 2)) for n in (1, 3, 10, 40)]
    cases += [rng.uniform(-4, 4, size=(7, 3)), np.array([[100.0, -100.0]])]
    try:
        for positions in cases:
            fast = fastpath.task_obs_lidar_pseudo(task, positions)
            assert fast.tobytes() == upstream(task, positions).tobytes(), positions
    finally:
        env.close()


def test_float_remainder_is_numpys():
    """The lidar's ``angle % 2pi`` on Python floats is numpy's float64 remainder, bit for bit."""
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [rng.uniform(-4, 4, 10000), [0.0, -0.0, -1e-300, 1e-300, -np.pi, np.pi, 2 * np.pi]]
    )
    two_pi = np.pi * 2
    assert (
        np.array([v % two_pi for v in values.tolist()]).tobytes()
        == (np.array([np.float64(v) % two_pi for v in values])).tobytes()
    )


@pytest.mark.long
@pytest.mark.skipif(
    os.environ.get("UNIQ_LONG_TESTS") != "1", reason="long check: set UNIQ_LONG_TESTS=1"
)
@pytest.mark.parametrize("name", NAV_TASKS)
def test_bit_identical_to_upstream_long(name):
    """Five full 1000-step episodes per task. Skipped by default (CI);

    run with ``UNIQ_LONG_TESTS=1 uv run pytest tests/test_fastpath.py -k long``.
    """
    _assert_identical(name, [(seed, 1000) for seed in range(100, 105)])


def test_switch_off_leaves_upstream(monkeypatch):
    from safety_gymnasium.assets.mocaps.gremlins import Gremlins

    upstream_move = Gremlins.__dict__["move"]
    monkeypatch.setenv(fastpath.FASTPATH_ENV, "0")
    try:
        make_env("SafetyPointButton1-v0").close()
        assert not fastpath.is_active()
        assert Gremlins.__dict__["move"] is fastpath._UPSTREAM.get(
            ("assets.mocaps.gremlins", "Gremlins", "move"), upstream_move
        )
        monkeypatch.setenv(fastpath.FASTPATH_ENV, "1")
        make_env("SafetyPointButton1-v0").close()
        assert fastpath.is_active()
        assert Gremlins.__dict__["move"] is fastpath.gremlins_move
    finally:
        fastpath.set_enabled(True)


def test_other_version_refused_with_warning(monkeypatch):
    fastpath.set_enabled(False)
    fastpath._version_supported.cache_clear()
    monkeypatch.setattr(fastpath.importlib.metadata, "version", lambda _: "1.1.0")
    try:
        with pytest.warns(RuntimeWarning, match="safety-gymnasium 1.1.0"):
            assert fastpath.set_enabled(True) is False
        assert not fastpath.is_active()
    finally:
        monkeypatch.undo()
        fastpath._version_supported.cache_clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert fastpath.set_enabled(True)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
@pytest.mark.parametrize("setting", ["0", "1"])
def test_workers_get_the_parents_setting(monkeypatch, start_method, setting):
    monkeypatch.setenv(fastpath.FASTPATH_ENV, setting)
    try:
        with make_vec_env("SafetyPointGoal1-v0", 2, workers=2, start_method=start_method) as venv:
            assert venv.fastpath is (setting == "1")
            assert venv.worker_fastpath == [setting == "1"] * 2
            obs = venv.reset([0, 1], [3, 4])
            venv.step([0, 1], np.zeros((2, 2)))
        # the same first observations as an in-process env with the other setting
        env = make_env("SafetyPointGoal1-v0", fastpath_on=setting != "1")
        assert env.reset(seed=4)[0].tobytes() == obs[1].tobytes()
        env.close()
    finally:
        fastpath.set_enabled(True)


def _layouts(gen, build, seeds) -> list:
    out = []
    for seed in seeds:
        gen.set_random_seed(seed)
        try:
            layout = build(gen)
            result = [(k, v.tobytes()) for k, v in layout.items()]
        except AssertionError as err:  # ResamplingError
            result = (type(err), str(err))
        state = gen.random_generator.get_state()
        out.append((result, state[1].tobytes(), state[2:]))
    return out


@pytest.mark.parametrize("case", ["task", "one_rectangle", "several_rectangles", "impossible"])
def test_block_layout_sampler_matches_upstream(case):
    """build_layout's block draws give upstream's layouts and RNG states, on paths the episodes may not reach."""
    env = make_env("SafetyPointButton1-v0", seed=0, fastpath_on=True)
    gen = env.unwrapped.task.random_generator
    placements = dict(gen.placements)
    if case == "one_rectangle":  # an object with fixed `locations`: one rectangle, no choice draw
        placements["goal"] = ([(0.5, 0.5, 0.7, 0.7)], placements["goal"][1])
    elif case == "several_rectangles":  # a choice among rectangles: left to upstream
        placements["goal"] = ([(-1.0, -1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 1.0)], 0.1)
    elif case == "impossible":  # no layout fits: ResamplingError after all attempts
        placements = {"hazard0": (None, 0.9), "hazard1": (None, 0.9)}
    gen.placements = placements
    upstream = fastpath._UPSTREAM[("utils.random_generator", "RandomGenerator", "build_layout")]
    seeds = range(1) if case == "impossible" else range(20)
    assert _layouts(gen, upstream, seeds) == _layouts(gen, fastpath.build_layout, seeds)
    env.close()
