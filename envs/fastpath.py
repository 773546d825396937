"""A bit-identical fast path for safety-gymnasium 1.0.0's navigation hot spots.

safety-gymnasium spends most of a navigation step in Python around the physics: gremlin
moves built with ``np.r_`` before every physics sub-step, a per-object pseudo-lidar loop,
contact loops that look up geom names by string, body look-ups by name for every position,
and a reset that samples the layout by rejection with numpy calls on 2-vectors. Each
replacement below returns exactly the same bits as the upstream function it replaces (same
float operations on the same operands, the same random draws in the same order); what goes
is Python overhead: name look-ups are done once per compiled model, and elementwise work on
a few objects is done by one numpy call instead of a Python loop. The matrix products keep
upstream's own per-object vector-matrix product (numpy runs it per row of a stacked array,
the same BLAS call), and every other vectorised operation is elementwise and exactly
rounded, or a max over non-negative values, whose result does not depend on its order.
tests/test_fastpath.py runs upstream and the fast path side by side and compares every
observation, reward, cost and RNG state bit for bit.

One switch: ``UNIQ_ENV_FASTPATH=0`` leaves upstream in place (default on). The patches are
class attributes, so they hold for every env of the process: :func:`envs.tasks.make_env`
applies the setting it is given (or reads the variable) before building an env, and the
vectorised envs hand the parent's setting to their worker processes explicitly.

The patches apply only to the pinned safety-gymnasium 1.0.0; on any other version
:func:`set_enabled` warns once and leaves upstream behaviour in place.
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.metadata
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import mujoco
import numpy as np

from envs.compat import import_safety_gymnasium

FASTPATH_ENV = "UNIQ_ENV_FASTPATH"
SUPPORTED_VERSION = "1.0.0"


def enabled_by_env() -> bool:
    """The switch: ``$UNIQ_ENV_FASTPATH`` (default on; ``0``, ``false``, ``off`` or ``no`` turn it off)."""
    return os.environ.get(FASTPATH_ENV, "1").strip().lower() not in {"0", "false", "off", "no"}


# ---------------------------------------------------------------- per-model look-ups
#
# A navigation env compiles a new MjModel at every reset, so ids are cached per model:
# each cache holds the model it was built for and is rebuilt when ``engine.model`` changes.


def _cached(owner: Any, key: str, model: Any, build: Callable[[], Any]) -> Any:
    cache = owner.__dict__.get(key)
    if cache is None or cache[0] is not model:
        cache = (model, build())
        owner.__dict__[key] = cache
    return cache[1]


def _agent_id(engine: Any) -> int:
    return _cached(
        engine, "_fastpath_agent_id", engine.model, lambda: engine.model.body("agent").id
    )


def _body_ids(obstacle: Any) -> np.ndarray:
    """Body ids of an obstacle's objects, in the order of its upstream ``pos`` property."""
    model = obstacle.engine.model
    cache = obstacle.__dict__.get("_fastpath_body_ids")
    if cache is not None and cache[0] is model:
        return cache[1]
    name = obstacle.name
    if name == "goal":
        names = ["goal"]
    elif name == "gremlins":
        names = [f"gremlin{i}obj" for i in range(obstacle.num)]
    else:  # hazards -> hazard0.., buttons -> button0.., vases -> vase0..
        names = [f"{name[:-1]}{i}" for i in range(obstacle.num)]
    return _cached(
        obstacle, "_fastpath_body_ids", model, lambda: np.array([model.body(n).id for n in names])
    )


_POSITIONED = {"goal", "gremlins", "hazards", "buttons", "vases"}
"""Obstacles whose upstream ``pos`` reads ``data.body(name).xpos`` of the bodies above."""


def _positions(obstacle: Any) -> Any:
    """The positions upstream's ``obstacle.pos`` returns (a copy), as one ``(n, 3)`` array."""
    if obstacle.name not in _POSITIONED:
        return obstacle.pos
    return obstacle.engine.data.xpos[_body_ids(obstacle)]


def _geom_names(engine: Any) -> np.ndarray:
    model = engine.model
    return _cached(
        engine,
        "_fastpath_geom_names",
        model,
        lambda: np.array([model.geom(g).name for g in range(model.ngeom)], dtype=object),
    )


def _geom_flags(engine: Any, agent: Any, key: str, test: Callable[[str], bool]) -> np.ndarray:
    """``test(name)`` for every geom id of the current model (cached per model and key)."""
    flags = engine.__dict__.setdefault("_fastpath_geom_flags", {})
    model = engine.model
    if flags.get("model") is not model:
        flags.clear()
        flags["model"] = model
    if key not in flags:
        flags[key] = np.array([test(n) for n in _geom_names(engine)], dtype=bool)
    return flags[key]


def _agent_geoms(engine: Any, agent: Any) -> np.ndarray:
    names = agent.body_info.geom_names
    return _geom_flags(engine, agent, "agent", lambda n: n in names)


def _contacts_touching(engine: Any, agent: Any, key: str, test: Callable[[str], bool]):
    """Per contact: does one of its geoms pass ``test``, does one belong to the agent.

    Upstream's predicate, ``any(test(n) for n in names) and any(n in agent_geoms for n in
    names)`` over the two geom names of each of ``data.contact[:ncon]``, evaluated on
    per-geom flags instead of name strings.
    """
    data = engine.data
    ncon = data.ncon
    contact = data.contact
    g1, g2 = contact.geom1[:ncon], contact.geom2[:ncon]
    hit = _geom_flags(engine, agent, key, test)
    mine = _agent_geoms(engine, agent)
    return hit[g1] | hit[g2], mine[g1] | mine[g2]


# ---------------------------------------------------------------- replacements


def gremlins_move(self) -> None:
    """Replaces ``Gremlins.move``: one (x, y, z) row instead of ``np.r_`` (whose type resolution was ~45% of a Button step), sin/cos once per call, mocap ids looked up once per model."""
    engine = self.engine
    data = engine.data
    ids = _cached(
        self,
        "_fastpath_mocap_ids",
        engine.model,
        lambda: engine.model.body_mocapid[
            [engine.model.body(f"gremlin{i}mocap").id for i in range(self.num)]
        ],
    )
    phase = float(data.time)
    travel = self.travel
    # Upstream: np.array([np.sin(phase), np.cos(phase)]) * travel, then [x, y, size], written
    # to every gremlin's mocap row: the same np.sin/np.cos calls and float64 products.
    data.mocap_pos[ids] = (np.sin(phase) * travel, np.cos(phase) * travel, self.size)


def gremlins_cal_cost(self) -> dict:
    """Replaces ``Gremlins.cal_cost``: contacts tested on per-geom flags, not by name strings per contact."""
    cost = {}
    if not self.is_constrained:
        return cost
    cost["cost_gremlins"] = 0
    touching, agent = _contacts_touching(
        self.engine, self.agent, "gremlin", lambda n: n.startswith("gremlin")
    )
    for _ in range(int(np.count_nonzero(touching & agent))):
        cost["cost_gremlins"] += self.contact_cost  # the same sum, term by term, as upstream
    return cost


def buttons_cal_cost(self) -> dict:
    """Replaces ``Buttons.cal_cost``: contacts tested on per-geom flags, not by name strings per contact."""
    assert self.goal_button is not None, (
        "Please make sure this method can get information about goal button."
    )
    cost = {}
    if not self.is_constrained or not self.timer == 0:
        return cost
    cost["cost_buttons"] = 0
    goal = f"button{self.goal_button}"
    button, agent = _contacts_touching(
        self.engine, self.agent, "button", lambda n: n.startswith("button")
    )
    is_goal, _ = _contacts_touching(self.engine, self.agent, goal, lambda n: n == goal)
    for _ in range(int(np.count_nonzero(button & agent & ~is_goal))):
        cost["cost_buttons"] += self.cost
    return cost


def button_goal_achieved(self) -> bool:
    """Replaces ``ButtonLevel0.goal_achieved``: contacts tested on per-geom flags, not by name strings per contact."""
    goal = f"button{self.buttons.goal_button}"
    is_goal, agent = _contacts_touching(self.agent.engine, self.agent, goal, lambda n: n == goal)
    return bool((is_goal & agent).any())


def hazards_cal_cost(self) -> dict:
    """Replaces ``Hazards.cal_cost``: each hazard's ``dist_xy`` on Python floats from one read of ``xpos``, not an ``np.sqrt(np.sum(np.square(..)))`` of three numpy calls each."""
    cost = {}
    if not self.is_constrained:
        return cost
    cost["cost_hazards"] = 0
    engine = self.engine
    xpos = engine.data.xpos
    ax, ay, _ = xpos[_agent_id(engine)].tolist()
    size = self.size
    for hx, hy, _ in xpos[_body_ids(self)].tolist():
        # dist_xy per hazard (see agent_dist_xy): the same two squares, sum and sqrt.
        dx, dy = hx - ax, hy - ay
        h_dist = np.float64(math.sqrt(dx * dx + dy * dy))
        if h_dist <= size:  # np.float64 terms, in hazard order, as upstream
            cost["cost_hazards"] += self.cost * (size - h_dist)
    return cost


def agent_dist_xy(self, pos) -> Any:
    """Replaces ``BaseAgent.dist_xy``: the same two squares, sum and sqrt on Python floats, without a body look-up by name."""
    pos = np.asarray(pos)
    if pos.shape == (3,):
        pos = pos[:2]
    if pos.shape != (2,) or pos.dtype != np.float64:
        return _UPSTREAM[("bases.base_agent", "BaseAgent", "dist_xy")](self, pos)
    agent = self.engine.data.xpos[_agent_id(self.engine)]
    dx = float(pos[0]) - float(agent[0])
    dy = float(pos[1]) - float(agent[1])
    # np.square is x*x, np.sum of two is a + b, and both square roots are correctly rounded.
    return np.float64(math.sqrt(dx * dx + dy * dy))


def agent_get_sensor(self, name: str) -> np.ndarray:
    """Replaces ``BaseAgent.get_sensor``: the sensor's address and size looked up once per model, not by name at every read."""
    model = self.engine.model
    table = _cached(self, "_fastpath_sensors", model, dict)
    if name not in table:
        sensor = model.sensor(name).id
        adr = int(model.sensor_adr[sensor])
        table[name] = (adr, adr + int(model.sensor_dim[sensor]))
    start, stop = table[name]
    return self.engine.data.sensordata[start:stop].copy()


def agent_apply_action(self, action: np.ndarray, noise: np.ndarray | None = None) -> None:
    """Replaces ``BaseAgent.apply_action``: calls the ``clip`` ufunc that ``np.clip`` ends in, without its Python argument checks (~60 us)."""
    action = np.array(action, copy=False)  # Cast to ndarray
    action_range = self.engine.model.actuator_ctrlrange
    # np.clip -> numpy.core._methods._clip -> um.clip(a, min, max, out=None) for array bounds.
    self.engine.data.ctrl[:] = _CLIP(action, action_range[:, 0], action_range[:, 1], out=None)
    if noise:
        self.engine.data.ctrl[:] += noise


_CLIP = np.core.umath.clip


def task_simulation_forward(self, action: np.ndarray) -> bool:
    """Replaces ``Underlying.simulation_forward``: model, data, the mocaps' ``move`` and ``mj_step`` looked up once per step instead of once per physics sub-step; the same calls in the same order."""
    if self.debug:
        self.agent.debug()
    else:
        noise = (
            self.action_noise * self.random_generator.randn(self.agent.body_info.nu)
            if self.action_noise
            else None
        )
        self.agent.apply_action(action, noise)
    model, data = self.model, self.data
    moves = [mocap.move for mocap in self._mocaps.values()]
    step = mujoco.mj_step
    exception = False
    for _ in range(
        self.random_generator.binomial(
            self.sim_conf.frameskip_binom_n,
            self.sim_conf.frameskip_binom_p,
        ),
    ):
        try:
            for move in moves:
                move()
            step(model, data)  # Physics simulation step
        except _mujoco_exception() as me:  # noqa: N806
            print("MujocoException", me)
            exception = True
            break
    if exception:
        return exception
    mujoco.mj_forward(model, data)  # Needed to get sensor readings correct!
    return exception


@functools.cache
def _mujoco_exception() -> type:
    from safety_gymnasium.utils.common_utils import MujocoException

    return MujocoException


def goal_pos(self) -> np.ndarray:
    """Replaces the ``Goal.pos`` property: ``xpos`` of the goal body by its id, cached per model, not looked up by name at every read (three times a step)."""
    return self.engine.data.xpos[_body_ids(self)[0]].copy()


def task_dist_goal(self) -> Any:
    """Replaces ``BaseTask.dist_goal``: ``agent.dist_xy(goal.pos)`` as one read of the two ``xpos`` rows, without the goal position's copy and ``dist_xy``'s array checks."""
    assert hasattr(self, "goal"), "Please make sure you have added goal into env."
    goal, agent = self.goal, self.agent
    if type(goal).pos is not _GOAL_POS or type(agent).dist_xy is not agent_dist_xy:
        return _UPSTREAM[("bases.base_task", "BaseTask", "dist_goal")](self)
    gx, gy, _ = goal.engine.data.xpos[_body_ids(goal)[0]].tolist()
    engine = agent.engine
    ax, ay, _ = engine.data.xpos[_agent_id(engine)].tolist()
    dx, dy = gx - ax, gy - ay  # agent_dist_xy's arithmetic
    return np.float64(math.sqrt(dx * dx + dy * dy))


@functools.cache
def _goal_achieved() -> Any:
    return _owner(*_GOAL).__dict__["goal_achieved"]


def goal_calculate_reward(self) -> Any:
    """Replaces ``GoalLevel0.calculate_reward``: ``dist_goal`` once instead of twice (again in ``goal_achieved``) at the same simulator state, where it has the same value."""
    if type(self).goal_achieved is not _goal_achieved():
        return _UPSTREAM[_GOAL + ("calculate_reward",)](self)
    reward = 0.0
    dist_goal = self.dist_goal()
    reward += (self.last_dist_goal - dist_goal) * self.goal.reward_distance
    self.last_dist_goal = dist_goal
    if dist_goal <= self.goal.size:  # goal_achieved: self.dist_goal() <= self.goal.size
        reward += self.goal.reward_goal
    return reward


def _lidar_values(task: Any, positions: np.ndarray, offsets: list, groups: int) -> list | None:
    """``BaseTask._obs_lidar_pseudo`` of ``groups`` obstacles at once, as one flat list.

    Object ``i`` at ``positions[i]`` (x, y[, z]) belongs to the lidar whose bins start at
    ``offsets[i]`` (its group times ``num_bins``). None where upstream would fail or take
    another branch (the caller then runs upstream).

    The ego vectors, their length and their angle come from numpy (upstream's own
    vector-matrix product per row, ``np.abs`` of the complex vector, ``arctan2``); the
    rest of upstream's loop body (``% 2pi``, the bin, ``max(0, max_dist - dist) / max_dist``,
    the alias) runs on Python floats: the same IEEE double operations on the same operands
    as upstream's numpy float64 scalars (float ``%`` is numpy's ``npy_remainder`` formula:
    ``fmod``, then ``+ b`` where the signs differ), without numpy's per-call overhead on
    arrays of ten objects.
    """
    conf = task.lidar_conf
    num_bins = conf.num_bins
    max_dist = conf.max_dist
    obs = [0.0] * (groups * num_bins)
    n = len(positions)
    if n == 0:
        return obs
    if not max_dist > 0:
        return None  # upstream divides by it (ZeroDivisionError, or -0.0 readings)
    engine = task.agent.engine
    data = engine.data
    agent = _agent_id(engine)
    agent_3vec = data.xpos[agent]
    agent_mat = data.xmat[agent].reshape(3, 3)
    # _ego_xy: [x, y, 0] - agent position, then upstream's vector @ matrix product per row
    # (a stacked matmul makes the same BLAS gemv call for each object).
    world_3vec = np.zeros((n, 1, 3))
    world_3vec[:, 0, :2] = positions[:, :2]
    world_3vec -= agent_3vec
    ego = np.matmul(world_3vec, agent_mat)
    z = np.empty(n, dtype=np.complex128)
    z.real, z.imag = ego[:, 0, 0], ego[:, 0, 1]
    dists = np.abs(z).tolist()
    angles = np.arctan2(z.imag, z.real).tolist()  # np.angle(z), without its Python wrapper
    two_pi = np.pi * 2
    bin_size = two_pi / num_bins
    alias_on = conf.alias
    for dist, angle, offset in zip(dists, angles, offsets, strict=True):
        angle = angle % two_pi
        if angle != angle:
            return None  # NaN: upstream's int() raises
        bin = int(angle / bin_size)  # noqa: A001 (upstream's name)
        if bin >= num_bins:
            return None  # upstream indexes out of range
        sensor = max(0, max_dist - dist) / max_dist
        i = offset + bin
        if sensor > obs[i]:  # max(obs[bin], sensor): the first unless the second is greater
            obs[i] = sensor
        if alias_on:
            alias = (angle - bin_size * bin) / bin_size
            if not 0 <= alias <= 1:
                return None  # upstream's assert
            i = offset + (bin + 1) % num_bins
            value = alias * sensor
            if value > obs[i]:
                obs[i] = value
            i = offset + (bin - 1) % num_bins
            value = (1 - alias) * sensor
            if value > obs[i]:
                obs[i] = value
    return obs


def _lidar_pseudo(
    task: Any, positions: np.ndarray, group: np.ndarray, groups: int
) -> np.ndarray | None:
    """:func:`_lidar_values` as a ``[groups, num_bins]`` array (group ``group[i]`` per object)."""
    num_bins = task.lidar_conf.num_bins
    values = _lidar_values(task, positions, (np.asarray(group) * num_bins).tolist(), groups)
    return None if values is None else np.array(values).reshape(groups, num_bins)


def _fast_lidar_applies(task: Any) -> bool:
    conf = task.lidar_conf
    return (
        conf.type == "pseudo"
        and conf.max_dist is not None
        and type(task)._obs_lidar is _base_obs_lidar()
    )


@functools.cache
def _base_obs_lidar() -> Any:
    return _owner("bases.base_task", "BaseTask")._obs_lidar


def task_obs_lidar_pseudo(self, positions) -> np.ndarray:
    """Replaces ``BaseTask._obs_lidar_pseudo``: one numpy pass over all objects for the ego vectors, lengths and angles instead of ``complex``/``np.angle`` per object, then the loop body on Python floats (:func:`_lidar_values`)."""
    array = np.array(positions, ndmin=2)
    if self.lidar_conf.max_dist is not None and array.dtype == np.float64 and array.ndim == 2:
        if array.shape[1] in (2, 3):
            obs = _lidar_pseudo(self, array, np.zeros(len(array), np.int64), 1)
            if obs is not None:
                return obs[0]
    return _UPSTREAM[("bases.base_task", "BaseTask", "_obs_lidar_pseudo")](self, positions)


def _lidar_ids(task: Any, observed: list) -> tuple[np.ndarray, list]:
    """Body ids of all ``observed`` obstacles' objects, and each object's first bin."""
    model = task.agent.engine.model
    num_bins = task.lidar_conf.num_bins

    def build():
        ids = [_body_ids(o) for o in observed]
        group = np.repeat(np.arange(len(observed)), [len(i) for i in ids])
        return np.concatenate(ids).astype(np.int64), (group * num_bins).tolist()

    return _cached(task, "_fastpath_lidar_ids", model, build)


def _all_lidars(task: Any, observed: list) -> np.ndarray | None:
    """The pseudo-lidars of all ``observed`` obstacles in one pass (None: not applicable)."""
    ids, offsets = _lidar_ids(task, observed)
    values = _lidar_values(task, task.agent.engine.data.xpos[ids], offsets, len(observed))
    return None if values is None else np.array(values).reshape(len(observed), -1)


def _obs_plan(task: Any, button_timer: bool) -> tuple | None:
    """Where each entry of the flat observation comes from, for :func:`_planned_obs`.

    Built once per compiled model (sensor addresses change with it) from upstream's own
    rules: ``BaseAgent.obs_sensor``'s keys (each ``get_sensor`` a copy of a ``sensordata``
    slice; ``ballquat`` sensors through ``quat2mat`` when angle components are on), then a
    ``<name>_lidar`` per lidar-observed obstacle. None (the general path below runs) for
    anything else: a compass, hinge angles as sin/cos, another agent or lidar method, a
    space whose keys, shapes, dtypes or bounds are not exactly those of these readings
    (sensors in (-inf, inf), lidars in [0, 1]).
    """
    import gymnasium

    agent = task.agent
    base_agent = _owner("bases.base_agent", "BaseAgent")
    if type(agent).obs_sensor is not base_agent.obs_sensor:
        return None
    if type(agent).get_sensor is not agent_get_sensor or not _fast_lidar_applies(task):
        return None
    obstacles = task._obstacles
    observed = [o for o in obstacles if o.is_lidar_observed]
    if not all(o.name in _POSITIONED for o in observed):
        return None
    if any(hasattr(o, "is_comp_observed") and o.is_comp_observed for o in obstacles):
        return None
    model = task.model
    conf, info = agent.sensor_conf, agent.sensor_info

    def span(name):
        sensor = model.sensor(name).id
        adr = int(model.sensor_adr[sensor])
        return adr, adr + int(model.sensor_dim[sensor])

    sources: dict = {}  # obs_sensor's keys, in its order -> ("copy", start, stop) | ("quat", adr)
    try:
        for name in [*conf.sensors, *info.hinge_vel_names, *info.ballangvel_names]:
            sources[name] = ("copy", *span(name))
        if info.freejoint_pos_name:
            start, stop = span(info.freejoint_pos_name)
            sources[info.freejoint_pos_name] = ("copy", min(start + 2, stop), stop)
        if info.freejoint_qvel_name:
            sources[info.freejoint_qvel_name] = ("copy", *span(info.freejoint_qvel_name))
        if conf.sensors_angle_components:
            if info.hinge_pos_names:
                return None
            for name in info.ballquat_names:
                start, stop = span(name)
                if stop - start != 4:
                    return None
                sources[name] = ("quat", start)
        else:
            for name in [*info.hinge_pos_names, *info.ballquat_names]:
                sources[name] = ("copy", *span(name))
    except KeyError:
        return None  # upstream's get_sensor raises its own error
    num_bins = task.lidar_conf.num_bins
    lidar_keys = [o.name + "_lidar" for o in observed]
    if set(lidar_keys) & set(sources) or len(set(lidar_keys)) != len(lidar_keys):
        return None
    if button_timer and "buttons_lidar" not in lidar_keys:
        return None
    space = task.obs_info.obs_space_dict
    if not isinstance(space, gymnasium.spaces.Dict):
        return None
    if set(space.spaces) != set(sources) | set(lidar_keys) or len(space.spaces) != len(
        sources
    ) + len(lidar_keys):
        return None
    copy_dst: list = []
    copy_src: list = []
    quats: list = []
    lidar_at: dict = {}
    at = 0
    for key, box in space.spaces.items():
        if type(box) is not gymnasium.spaces.Box or box.dtype != np.float64:
            return None
        if key in sources:
            source = sources[key]
            shape = (3, 3) if source[0] == "quat" else (source[2] - source[1],)
            bounds = (-np.inf, np.inf)
        else:
            shape, bounds = (num_bins,), (0.0, 1.0)
            lidar_at[key] = at
        if box.shape != shape or not (
            (box.low == bounds[0]).all() and (box.high == bounds[1]).all()
        ):
            return None
        if key in sources:
            if source[0] == "quat":
                quats.append((at, source[1]))
            else:
                copy_dst.extend(range(at, at + shape[0]))
                copy_src.extend(range(source[1], source[2]))
        at += int(np.prod(shape))
    lidar_start = lidar_at[lidar_keys[0]] if lidar_keys else at
    if [lidar_at[k] for k in lidar_keys] != [
        lidar_start + i * num_bins for i in range(len(lidar_keys))
    ]:
        return None  # lidars not one block in obstacle order
    ids, offsets = _lidar_ids(task, observed)
    contiguous = copy_dst == list(range(len(copy_dst)))
    return (
        space,
        at,
        slice(0, len(copy_dst)) if contiguous else np.array(copy_dst, dtype=np.int64),
        np.array(copy_src, dtype=np.int64),
        quats,
        ids,
        offsets,
        len(observed),
        slice(lidar_start, lidar_start + len(observed) * num_bins),
        lidar_at.get("buttons_lidar"),
    )


def _planned_obs(task: Any, button_timer: bool) -> np.ndarray | None:
    """``BaseTask.obs``'s flat vector written straight into one array by :func:`_obs_plan`.

    The same values as upstream's dict of readings flattened (copies of the same
    ``sensordata`` entries, ``mju_quat2Mat`` of the same quaternion, the same lidar
    readings) in the space's key order. gymnasium's ``Dict.contains`` holds by
    construction for keys, shapes, dtypes and the lidars' [0, 1] (every reading is a
    ``max(0, .)/max_dist`` of a distance times an alias in [0, 1]); what remains of it is
    "no NaN among the sensors", tested by one sum (NaN, or inf - inf, goes to the general
    path, which runs upstream's own check). None: not applicable.
    """
    model = task.model
    cache = task.__dict__.get("_fastpath_obs_plan")
    if cache is None or cache[0] is not model or cache[1] != button_timer:
        cache = (model, button_timer, _obs_plan(task, button_timer))
        task.__dict__["_fastpath_obs_plan"] = cache
    plan = cache[2]
    if plan is None or plan[0] is not task.obs_info.obs_space_dict:
        return None
    _, total, copy_dst, copy_src, quats, ids, offsets, groups, lidars, buttons = plan
    data = task.data
    values = _lidar_values(task, data.xpos[ids], offsets, groups)
    if values is None:
        return None
    flat = np.empty(total)
    sensordata = data.sensordata
    flat[copy_dst] = sensordata[copy_src]
    for at, adr in quats:  # quat2mat: mju_quat2Mat of the quaternion, 9 entries row-major
        mujoco.mju_quat2Mat(flat[at : at + 9], sensordata[adr : adr + 4])
    flat[lidars] = values
    if button_timer and task.buttons.timer != 0:
        flat[buttons : buttons + task.lidar_conf.num_bins] = 0.0
    total = flat.sum()
    if total != total:
        return None
    return flat


def _flat_bounds(task: Any, space: Any) -> tuple[list, np.ndarray, np.ndarray]:
    """(key, shape) per box of the Dict space, in its order, and the flattened bounds."""

    def build():
        boxes = space.spaces
        items = [(key, box.shape) for key, box in boxes.items()]
        low = np.concatenate([box.low.ravel() for box in boxes.values()])
        high = np.concatenate([box.high.ravel() for box in boxes.values()])
        return items, low, high

    return _cached(task, "_fastpath_obs_bounds", space, build)


def _task_obs(task: Any, button_timer: bool) -> Any:
    """``BaseTask.obs`` (and ``ButtonLevel0.obs`` with ``button_timer``), for flat vector obs."""
    mujoco.mj_forward(task.model, task.data)  # Needed to get sensor's data correct
    flat = _planned_obs(task, button_timer)
    if flat is not None:
        return flat
    obs = task.agent.obs_sensor()
    obstacles = task._obstacles
    observed = [o for o in obstacles if o.is_lidar_observed]
    lidars = None
    if _fast_lidar_applies(task) and all(o.name in _POSITIONED for o in observed):
        rows = _all_lidars(task, observed)
        if rows is not None:
            lidars = {o.name: row for o, row in zip(observed, rows, strict=True)}
    for obstacle in obstacles:
        if obstacle.is_lidar_observed:
            if lidars:
                obs[obstacle.name + "_lidar"] = lidars[obstacle.name]
            else:
                obs[obstacle.name + "_lidar"] = task._obs_lidar(
                    _positions(obstacle), obstacle.group
                )
        if hasattr(obstacle, "is_comp_observed") and obstacle.is_comp_observed:
            obs[obstacle.name + "_comp"] = task._obs_compass(obstacle.pos)
    if button_timer and task.buttons.timer != 0:
        obs["buttons_lidar"] = np.zeros(task.lidar_conf.num_bins)
    space = task.obs_info.obs_space_dict
    items, low, high = _flat_bounds(task, space)
    # gymnasium's Dict.contains + flatten: same keys, each a float64 array of its box's shape,
    # within bounds (a NaN fails, as there), concatenated in the space's key order.
    parts = []
    ok = obs.keys() == space.spaces.keys()
    for key, shape in items if ok else ():
        value = obs[key]
        if not (
            isinstance(value, np.ndarray) and value.dtype == np.float64 and value.shape == shape
        ):
            ok = False
            break
        parts.append(value.ravel())
    if ok:
        flat = np.concatenate(parts)
        if (flat >= low).all() and (flat <= high).all():
            return flat
    # Anything unusual: upstream's own check (and its message) and flatten.
    import gymnasium  # imported by safety-gymnasium already (through the shim)

    assert space.contains(obs), f"Bad obs {obs} {space}"
    return gymnasium.spaces.utils.flatten(space, obs)


def task_obs(self) -> Any:
    """Replaces ``BaseTask.obs``: the flat vector written from a per-model plan (:func:`_planned_obs`) instead of a dict of readings by name, checked and flattened by gymnasium; else positions by cached body ids and the check and flatten as one bounds test and one concatenate."""
    if self.observe_vision or not self.observation_flatten:
        return _UPSTREAM[("bases.base_task", "BaseTask", "obs")](self)
    return _task_obs(self, button_timer=False)


def button_obs(self) -> Any:
    """Replaces ``ButtonLevel0.obs``: as ``BaseTask.obs`` above, plus its blank button lidar while the timer runs."""
    if self.observe_vision or not self.observation_flatten:
        return _UPSTREAM[_BUTTON + ("obs",)](self)
    return _task_obs(self, button_timer=True)


def sample_layout(self) -> bool:
    """Replaces ``RandomGenerator.sample_layout``: the keepout test on Python floats instead of numpy calls on 2-vectors; the same draws (``draw_placement``, upstream) in the same order."""
    layout = {}
    placed = []  # (keepout, x, y) of the objects in ``layout``, in its order
    margin = self.placements_margin
    for name, (placements, keepout) in self.placements.items():
        conflicted = True
        for _ in range(100):
            xy = self.draw_placement(placements, keepout)
            x, y = float(xy[0]), float(xy[1])
            for other_keepout, other_x, other_y in placed:
                dx, dy = x - other_x, y - other_y
                if math.sqrt(dx * dx + dy * dy) < other_keepout + margin + keepout:
                    break
            else:
                conflicted = False
                break
        if conflicted:
            return False
        layout[name] = xy
        placed.append((self.placements[name][1], x, y))
    self.layout = layout
    return True


_LAYOUT_BLOCKS = (64, 8192)
"""Standard uniform doubles in :func:`build_layout`'s first block, and the most in one block
(each block doubles; any sizes give the same bits)."""


def _layout_rectangles(gen: Any) -> list | None:
    """(name, keepout, xlow, xrange, ylow, yrange) per object, as ``draw_placement`` would use.

    None where ``draw_placement`` would choose among several rectangles (a random draw of
    its own) or fail: :func:`build_layout` then leaves the whole layout to upstream.
    """
    out = []
    for name, (placements, keepout) in gen.placements.items():
        if placements is None:
            choice = gen.constrain_placement(gen.placements_extents, keepout)
        else:
            constrained = []
            for placement in placements:
                xmin, ymin, xmax, ymax = gen.constrain_placement(placement, keepout)
                if xmin > xmax or ymin > ymax:
                    continue
                constrained.append((xmin, ymin, xmax, ymax))
            if len(constrained) != 1:
                return None
            choice = constrained[0]
        xmin, ymin, xmax, ymax = (float(v) for v in choice)
        # RandomState.uniform(low, high) on scalars: low + (high - low) * next_double, in C doubles.
        xrange, yrange = xmax - xmin, ymax - ymin
        if not (math.isfinite(xrange) and math.isfinite(yrange)):
            return None  # upstream raises OverflowError there
        out.append((name, keepout, xmin, xrange, ymin, yrange))
    return out


def build_layout(self) -> dict:
    """Replaces ``RandomGenerator.build_layout``: the rejection sampler's uniform draws taken in blocks of ``random_sample`` (one numpy call per block of up to 8192 draws instead of one per coordinate), then the state rewound and advanced by exactly the draws upstream takes.

    ``RandomState.uniform(low, high)`` on scalars returns ``low + (high - low) * u`` with
    ``u`` the next standard double of the MT19937 stream, the same double
    ``random_sample`` returns; the sum and product are done here on Python floats, the same
    IEEE double operations. The attempts, the keepout test (as :func:`sample_layout`) and the
    order of draws are upstream's, so the layout and the final RNG state are the same.
    """
    upstream = _UPSTREAM[("utils.random_generator", "RandomGenerator", "build_layout")]
    cls = type(self)
    rng = self.random_generator
    if (
        cls.draw_placement is not _owner("utils.random_generator", "RandomGenerator").draw_placement
        or cls.sample_layout is not sample_layout
        or type(rng) is not np.random.RandomState
    ):
        return upstream(self)
    objects = _layout_rectangles(self)
    if objects is None:
        return upstream(self)
    margin = self.placements_margin
    start = rng.get_state()
    draws: list = []
    block = _LAYOUT_BLOCKS[0]
    i = 0  # next unused draw in ``draws``
    used = 0  # draws upstream would have taken so far
    layout = None
    for _ in range(10000):  # build_layout's attempts
        placed: list = []  # (keepout, x, y) of the objects placed in this attempt
        for _name, keepout, xlow, xrange, ylow, yrange in objects:
            for _ in range(100):  # sample_layout's draws per object
                if i + 2 > len(draws):
                    draws = draws[i:] + rng.random_sample(block).tolist()
                    block = min(2 * block, _LAYOUT_BLOCKS[1])
                    i = 0
                x = xlow + xrange * draws[i]
                y = ylow + yrange * draws[i + 1]
                i += 2
                used += 2
                for other_keepout, other_x, other_y in placed:
                    dx, dy = x - other_x, y - other_y
                    if math.sqrt(dx * dx + dy * dy) < other_keepout + margin + keepout:
                        break
                else:
                    placed.append((keepout, x, y))
                    break
            else:
                break  # this object found no place: a new attempt
        else:
            layout = {
                obj[0]: np.array([x, y]) for obj, (_, x, y) in zip(objects, placed, strict=True)
            }
            break
    # Rewind: the stream as if only the ``used`` draws had been taken, one by one.
    rng.set_state(start)
    if used:
        rng.random_sample(used)
    if layout is None:
        from safety_gymnasium.utils.common_utils import ResamplingError

        raise ResamplingError("Failed to sample layout of objects")
    self.layout = layout
    return self.layout


class _CachedYaml:
    """Stands in for ``yaml`` inside ``safety_gymnasium.world``: assets.yaml parsed once."""

    def __init__(self, yaml: Any):
        self._yaml = yaml
        self._parsed: dict = {}

    def __getattr__(self, name: str):
        return getattr(self._yaml, name)

    def load(self, stream, Loader):  # noqa: N803 (yaml's own argument name)
        key = (getattr(stream, "name", None), Loader)
        if key[0] is None:
            return self._yaml.load(stream, Loader=Loader)
        if key not in self._parsed:
            self._parsed[key] = self._yaml.load(stream, Loader=Loader)
        return copy.deepcopy(self._parsed[key])  # World.build appends into what it loads


def world_yaml(yaml: Any) -> Any:
    """Replaces ``yaml`` in ``safety_gymnasium.world``: ``World.build`` re-parses assets.yaml at every reset (~0.06 s); a deep copy of one parse is the same dict."""
    return yaml if isinstance(yaml, _CachedYaml) else _CachedYaml(yaml)


# ---------------------------------------------------------------- the switch

_BUTTON = ("tasks.safe_navigation.button.button_level0", "ButtonLevel0")
_GOAL = ("tasks.safe_navigation.goal.goal_level0", "GoalLevel0")
_GOAL_POS = property(goal_pos)

_PATCHES: dict[tuple[str, str, str], Callable[[Any], Any]] = {
    ("assets.mocaps.gremlins", "Gremlins", "move"): lambda _: gremlins_move,
    ("assets.mocaps.gremlins", "Gremlins", "cal_cost"): lambda _: gremlins_cal_cost,
    ("assets.geoms.buttons", "Buttons", "cal_cost"): lambda _: buttons_cal_cost,
    ("assets.geoms.hazards", "Hazards", "cal_cost"): lambda _: hazards_cal_cost,
    ("bases.base_agent", "BaseAgent", "dist_xy"): lambda _: agent_dist_xy,
    ("bases.base_agent", "BaseAgent", "get_sensor"): lambda _: agent_get_sensor,
    ("bases.base_agent", "BaseAgent", "apply_action"): lambda _: agent_apply_action,
    ("bases.underlying", "Underlying", "simulation_forward"): lambda _: task_simulation_forward,
    ("assets.geoms.goal", "Goal", "pos"): lambda _: _GOAL_POS,
    ("bases.base_task", "BaseTask", "dist_goal"): lambda _: task_dist_goal,
    _GOAL + ("calculate_reward",): lambda _: goal_calculate_reward,
    ("bases.base_task", "BaseTask", "_obs_lidar_pseudo"): lambda _: task_obs_lidar_pseudo,
    ("bases.base_task", "BaseTask", "obs"): lambda _: task_obs,
    _BUTTON + ("obs",): lambda _: button_obs,
    _BUTTON + ("goal_achieved",): lambda _: property(button_goal_achieved),
    ("utils.random_generator", "RandomGenerator", "sample_layout"): lambda _: sample_layout,
    ("utils.random_generator", "RandomGenerator", "build_layout"): lambda _: build_layout,
    ("world", "", "yaml"): world_yaml,
}
"""(module under safety_gymnasium, class or "" for the module, attribute) -> its replacement
(a function of the upstream attribute)."""

_UPSTREAM: dict[tuple[str, str, str], Any] = {}
"""The upstream attributes the patches replaced (restored by ``set_enabled(False)``)."""
_active = False


def _owner(module: str, cls: str) -> Any:
    mod = importlib.import_module(f"safety_gymnasium.{module}")
    return getattr(mod, cls) if cls else mod


@functools.cache
def _version_supported() -> bool:
    version = importlib.metadata.version("safety-gymnasium")
    if version != SUPPORTED_VERSION:
        warnings.warn(
            f"envs/fastpath.py: safety-gymnasium {version} is installed, but the fast path "
            f"was proven bit-identical only for {SUPPORTED_VERSION} (the pinned version); "
            "leaving upstream behaviour in place.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


def set_enabled(enabled: bool) -> bool:
    """Install (``True``) or remove (``False``) every patch; returns whether the fast path is active.

    Process-wide: every env of this process, built before or after, runs the same code.
    """
    global _active
    if enabled == _active:
        return _active
    if enabled and not _version_supported():
        return False
    import_safety_gymnasium()
    for (module, cls, attr), replacement in _PATCHES.items():
        owner = _owner(module, cls)
        key = (module, cls, attr)
        if enabled:
            _UPSTREAM[key] = owner.__dict__[attr] if cls else getattr(owner, attr)
            setattr(owner, attr, replacement(_UPSTREAM[key]))
        else:
            setattr(owner, attr, _UPSTREAM[key])
    _active = enabled
    return _active


def is_active() -> bool:
    """Whether the fast path is installed in this process now."""
    return _active
