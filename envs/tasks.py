"""The task registry: one :class:`TaskSpec` per environment the suite knows.

A task's spec is the single source of its dimensions, episode length, cost threshold
``kappa`` (used as the safe demonstrator's cost limit and to normalize costs, DSRL-style)
and demonstrator budgets. Adding a task is one entry in ``TASKS``.

Cost threshold: Safety-Gym's customary per-episode limit is 25; DSRL evaluates at
thresholds 20/40/80. We use 25 for every task (``TaskSpec.cost_limit``; the config has no
override) and every table caption states the value used.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import multiprocessing as mp
import os
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np

from envs import fastpath
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
    obs_normalize: bool = False
    """Offline learners see observations standardised over D_MIX + D_UN (uniq.sources.make_sources).

    The authors' code standardises on the velocity tasks and not on the navigation ones
    (whose lidar readings already lie in [0, 1]); config files may override it per task.
    """
    demo_steps_quick: int = 50_000
    """Environment steps for each RL demonstrator in the quick (CPU) profile.

    Chosen per task as the smallest budget whose demonstrators show the gap (unsafe cost
    and return clearly above the safe ones) on one CPU thread; see the task list. The quick
    profile uses scripted controllers (envs/scripted.py) for the navigation tasks, where RL
    needs the paper budget, so this number matters only for the velocity tasks there.
    """
    demo_steps_paper: int = 1_000_000
    """Environment steps for each RL demonstrator in the paper profile (GPU machine).

    1M steps for every task: the usual off-policy budget on Safety-Gymnasium's level-1
    navigation and velocity tasks (SAC converges on the velocity tasks well before; the
    navigation tasks need on the order of 1M). Not tuned per task: check each
    demonstrator's ``*.log.csv`` (return plateaued, safe cost near or below ``cost_limit``)
    and raise it in the config if needed; ``uniq-bench split`` refuses data without a gap.
    """

    demo_algo: str = "sac"
    """Trainer of the RL demonstrators: ``sac`` (envs/demonstrators.py, velocity tasks) or
    ``ppo`` (envs/ppo.py, navigation tasks: OmniSafe's benchmark trains them on-policy)."""

    def with_overrides(self, **overrides) -> TaskSpec:
        """A copy with some fields replaced (tests shorten episodes: ``max_episode_steps``)."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown TaskSpec field(s) {sorted(unknown)} for task {self.name}")
        return dataclasses.replace(self, **overrides)


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec("SafetyPointGoal1-v0", "navigation", obs_dim=60, act_dim=2, demo_algo="ppo"),
        TaskSpec("SafetyCarGoal1-v0", "navigation", obs_dim=72, act_dim=2, demo_algo="ppo"),
        TaskSpec("SafetyPointButton1-v0", "navigation", obs_dim=76, act_dim=2, demo_algo="ppo"),
        TaskSpec("SafetyCarButton1-v0", "navigation", obs_dim=88, act_dim=2, demo_algo="ppo"),
        # Quick budget measured (hidden=128, batch_size=128, one CPU thread, ~20 min per
        # demonstrator): at 40k steps the SAC-Lagrangian run is still as fast as SAC (no gap).
        TaskSpec(
            "SafetyHalfCheetahVelocity-v1",
            "velocity",
            obs_dim=17,
            act_dim=6,
            obs_normalize=True,
            demo_steps_quick=80_000,
        ),
        TaskSpec("SafetyAntVelocity-v1", "velocity", obs_dim=27, act_dim=8, obs_normalize=True),
    ]
}


COMMITTED_DEMONSTRATORS = Path(__file__).resolve().parents[1] / "demonstrators"
"""Where the committed demonstrators live: the repository's demonstrators/ (absolute, so a
workflow run with ``--directory`` elsewhere still finds them)."""


def committed_demonstrator(task: str, kind: str) -> str:
    """The committed ``kind`` demonstrator of ``task``: demonstrators/<task>/<kind>/policy.pt."""
    return str(COMMITTED_DEMONSTRATORS / task / kind / "policy.pt")


def get_task(name: str) -> TaskSpec:
    """The spec of ``name``; an unknown name fails with the list of known tasks."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(
            f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}. "
            "Add a TaskSpec to envs/tasks.py to register a new one."
        ) from None


def resolve_task(task: str | TaskSpec) -> TaskSpec:
    """``task`` itself if it is a spec (e.g. one with overrides), else ``get_task(task)``."""
    return task if isinstance(task, TaskSpec) else get_task(task)


def make_env(task: str | TaskSpec, seed: int | None = None, fastpath_on: bool | None = None):
    """One environment of ``task`` (a registered name, or a spec copy with overrides).

    Its ``step`` returns ``(obs, reward, cost, terminated, truncated, info)`` and episodes are
    truncated at the spec's ``max_episode_steps``. ``seed`` seeds the first ``reset``.
    An episode depends only on its reset seed and the actions, not on the env's history
    (see :func:`_reset_from_cold_solver`).

    ``fastpath_on`` (default: ``$UNIQ_ENV_FASTPATH``, on) installs or removes the
    bit-identical fast path of :mod:`envs.fastpath`; it holds for the whole process.
    """
    spec = resolve_task(task)
    sg = import_safety_gymnasium()
    fastpath.set_enabled(fastpath.enabled_by_env() if fastpath_on is None else fastpath_on)
    _compile_worlds_without_skybox()
    env = sg.make(spec.name, max_episode_steps=spec.max_episode_steps)
    if hasattr(env.unwrapped, "task"):  # the Safety-Gym navigation builder
        env = _cold_solver_reset_wrapper()(env)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


_SKYBOX = re.compile(r'<texture type="skybox".*?(?:/>|</texture>)', re.DOTALL)


def lidar_columns(task: str | TaskSpec) -> np.ndarray:
    """A navigation task's lidar columns of the flat observation (its observation dict's
    ``*_lidar`` entries, in the dict's order); a step whose lidars all read 0 sees no object
    within the lidar's range."""
    spec = resolve_task(task)
    if spec.family != "navigation":
        raise ValueError(
            f"{spec.name} is a {spec.family} task: it has no lidar (nor an arena to leave); "
            "give a navigation task (Safety*Goal*, Safety*Button*)"
        )
    return np.array(_lidar_columns(spec))


@functools.cache  # building the env to read its layout takes a while: once per task
def _lidar_columns(spec: TaskSpec) -> tuple[int, ...]:
    name, obs_dim = spec.name, spec.obs_dim
    env = make_env(spec)
    try:
        layout = env.unwrapped.task.obs_info.obs_space_dict
    finally:
        env.close()
    columns, start = [], 0
    for key, space in layout.items():
        size = int(np.prod(space.shape))
        if key.endswith("_lidar"):
            columns.extend(range(start, start + size))
        start += size
    if start != obs_dim:
        raise ValueError(f"{name}: its observation dict holds {start} values, not {obs_dim}")
    return tuple(columns)


class _MujocoWithoutSkybox:
    """Stands in for ``mujoco`` inside ``safety_gymnasium.world``; see below."""

    def __init__(self, mujoco: ModuleType):
        self._mujoco = mujoco
        self.MjModel = SimpleNamespace(from_xml_string=self._compile)

    def __getattr__(self, name: str):
        return getattr(self._mujoco, name)

    def _compile(self, xml: str):
        return self._mujoco.MjModel.from_xml_string(_SKYBOX.sub("", xml, count=1))


@functools.cache
def _compile_worlds_without_skybox() -> None:
    """Speed: build navigation worlds without their skybox texture.

    A navigation env recompiles its MuJoCo model from XML at every reset (the layout is part
    of the model), and decoding the six ~4 MB star_hd PNGs of the skybox is almost all of
    that time (4.6 s of 4.6 s measured on a loaded 2-core box; 0.07 s without it). Textures
    only affect rendering, never the physics or the (non-vision) observations, so
    ``World.build`` compiles the XML minus the skybox element. Rendered frames lose the
    starry background.
    """
    world = importlib.import_module("safety_gymnasium.world")
    if not isinstance(world.mujoco, _MujocoWithoutSkybox):
        world.mujoco = _MujocoWithoutSkybox(world.mujoco)


def _reset_from_cold_solver(builder, obs: np.ndarray) -> np.ndarray:
    """Make a navigation env's reset independent of the episodes it ran before.

    Each reset rebuilds the MuJoCo model, but the constraint solver's warm start
    (``qacc_warmstart``) left by the reset's own ``mj_forward`` calls differs at the 1e-16
    level between a fresh env and a reused one (Car tasks), and contact dynamics grow that
    into visibly different episodes. Zeroing the warm start and recomputing the observation
    (``task.obs()`` calls ``mj_forward``) gives every reset with the same seed the same state.
    """
    task = builder.task
    if task.data.qacc_warmstart.any():
        task.data.qacc_warmstart[:] = 0.0
        obs = task.obs()
    return obs


@functools.cache
def _cold_solver_reset_wrapper() -> type:
    import gymnasium  # only after import_safety_gymnasium(): the shim silences its import noise

    class ColdSolverReset(gymnasium.Wrapper):
        """Resets via :func:`_reset_from_cold_solver`."""

        def reset(self, **kwargs):
            obs, info = self.env.reset(**kwargs)
            return _reset_from_cold_solver(self.env.unwrapped, obs), info

    return ColdSolverReset


# ---------------------------------------------------------------------- vectorized envs
#
# The evaluator needs every episode reset with its own seed (episode i <- seed + i), so the
# vector env below never auto-resets: the caller resets chosen slots with chosen seeds.
# (safety_gymnasium.vector auto-resets without a seed, which would tie episodes to slots.)


def _serve(conn, spec: TaskSpec, count: int, fastpath_on: bool) -> None:
    """Worker process: hold ``count`` envs and answer reset/step requests until "close"."""
    try:
        envs = [make_env(spec, fastpath_on=fastpath_on) for _ in range(count)]
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ok", (envs[0].observation_space, envs[0].action_space, fastpath.is_active())))
    while True:
        command, items = conn.recv()
        if command == "close":
            break
        try:
            if command == "reset":
                result = [envs[j].reset(seed=seed)[0] for j, seed in items]
            else:
                result = [envs[j].step(action) for j, action in items]
            conn.send(("ok", result))
        except BaseException:
            conn.send(("error", traceback.format_exc()))
    for env in envs:
        env.close()
    conn.close()


class _LocalEnvs:
    """Envs stepped in this process (the same requests a worker process answers)."""

    def __init__(self, spec: TaskSpec, count: int, fastpath_on: bool):
        self.envs = [make_env(spec, fastpath_on=fastpath_on) for _ in range(count)]
        self.spaces = (
            self.envs[0].observation_space,
            self.envs[0].action_space,
            fastpath.is_active(),
        )

    def request(self, command: str, items: list) -> None:
        if command == "reset":
            self.result = [self.envs[j].reset(seed=seed)[0] for j, seed in items]
        else:
            self.result = [self.envs[j].step(action) for j, action in items]

    def receive(self) -> list:
        return self.result

    def close(self) -> None:
        for env in self.envs:
            env.close()


class _WorkerEnvs:
    """Envs stepped in a subprocess; ``request`` returns at once, ``receive`` waits."""

    def __init__(self, spec: TaskSpec, count: int, context, fastpath_on: bool):
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child, spec, count, fastpath_on), daemon=True
        )
        self.process.start()
        child.close()

    def request(self, command: str, items: list) -> None:
        self.conn.send((command, items))

    def receive(self) -> list:
        status, result = self.conn.recv()
        if status == "error":
            raise RuntimeError(f"environment worker process failed:\n{result}")
        return result

    def close(self) -> None:
        try:
            self.conn.send(("close", None))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        self.conn.close()


WORKERS_ENV = "UNIQ_ENV_WORKERS"


def default_workers(num_envs: int) -> int:
    """Worker processes for ``num_envs`` envs: ``$UNIQ_ENV_WORKERS``, default 0 (in-process).

    Measured on the 2-core box (benchmarks/env_speed.py): with other jobs running, the
    in-process loop beat worker processes (each step waits for a worker to be scheduled),
    and Snakemake already runs one job per core. On an idle many-core machine set
    ``UNIQ_ENV_WORKERS=auto`` (one per core) or a number.
    """
    value = os.environ.get(WORKERS_ENV, "0").strip().lower()
    if value == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        workers = cores or 1
    else:
        try:
            workers = int(value)
        except ValueError:
            raise ValueError(
                f"${WORKERS_ENV}={value!r}: use 'auto' or a number of processes"
            ) from None
    workers = min(num_envs, workers)
    return 0 if num_envs == 1 or workers < 1 else workers


class VecEnv:
    """``num_envs`` envs of one task, reset and stepped by slot, with no auto-reset.

    ``workers == 0`` steps them in this process (the default, see :func:`default_workers`);
    otherwise they are split into ``workers`` contiguous blocks, each in its own process
    (fork where available: the child inherits the patched safety-gymnasium import; spawn
    re-imports it through :mod:`envs.compat`), and a ``step`` over many slots sends one
    message per worker and lets them run in parallel. The caller chooses which slots to
    reset and with which seed, so an episode never depends on the slot that ran it.

    ``fastpath_on`` (default ``$UNIQ_ENV_FASTPATH``) is resolved here once and handed to
    every worker, forked or spawned, so all of them run the same code as this process;
    ``self.fastpath`` says whether the fast path is on (for provenance).
    """

    def __init__(
        self,
        task: str | TaskSpec,
        num_envs: int,
        workers: int | None = None,
        fastpath_on: bool | None = None,
        start_method: str | None = None,
    ):
        self.spec = resolve_task(task)
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = num_envs
        workers = default_workers(num_envs) if workers is None else min(workers, num_envs)
        self.workers = workers
        # Import here first: forked workers inherit it, and unpickling the spaces they send
        # back would otherwise import gymnasium without the shim (and print its notice).
        import_safety_gymnasium()
        wanted = fastpath.enabled_by_env() if fastpath_on is None else fastpath_on
        # What this process can actually run (False on an unsupported safety-gymnasium).
        self.fastpath = fastpath.set_enabled(wanted)
        if workers == 0:
            self._groups: list[Any] = [_LocalEnvs(self.spec, num_envs, self.fastpath)]
            sizes = [num_envs]
            replies = [self._groups[0].spaces]
        else:
            if start_method is None:
                start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            context = mp.get_context(start_method)
            sizes = [len(block) for block in np.array_split(np.arange(num_envs), workers)]
            self._groups = []
            try:
                for size in sizes:
                    self._groups.append(_WorkerEnvs(self.spec, size, context, self.fastpath))
                # each worker reports that its envs are built, with their spaces
                replies = [group.receive() for group in self._groups]
            except BaseException:
                self.close()
                raise
        self.observation_space, self.action_space, _ = replies[0]
        self.worker_fastpath = [reply[2] for reply in replies]
        """Whether each worker (or this process, without workers) runs the fast path."""
        if any(on != self.fastpath for on in self.worker_fastpath):
            self.close()
            raise RuntimeError(
                f"env workers run the fast path {self.worker_fastpath}, this process "
                f"{self.fastpath}: every env of one evaluation must run the same code."
            )
        # slot -> (group, index inside the group)
        self._where = [(g, j) for g, size in enumerate(sizes) for j in range(size)]

    def _dispatch(self, command: str, slots, payloads) -> list:
        per_group: dict[int, list] = {}
        for slot, payload in zip(slots, payloads, strict=True):
            group, j = self._where[slot]
            per_group.setdefault(group, []).append((j, payload))
        for group, items in per_group.items():
            self._groups[group].request(command, items)
        results, errors = {}, []
        for group in per_group:  # read every reply, so that no pipe is left out of step
            try:
                results[group] = iter(self._groups[group].receive())
            except RuntimeError as err:
                errors.append(err)
        if errors:
            raise errors[0]
        return [next(results[self._where[slot][0]]) for slot in slots]

    def reset(self, slots: list[int], seeds: list[int]) -> np.ndarray:
        """Reset the given slots with the given seeds; their observations, ``[len(slots), obs_dim]``."""
        return np.stack(self._dispatch("reset", slots, [int(s) for s in seeds]))

    def step(self, slots: list[int], actions: np.ndarray):
        """Step the given slots; ``(obs, reward, cost, terminated, truncated, infos)`` batched."""
        out = self._dispatch("step", slots, list(np.asarray(actions)))
        obs, reward, cost, terminated, truncated, infos = zip(*out, strict=True)
        return (
            np.stack(obs),
            np.asarray(reward, dtype=np.float64),
            np.asarray(cost, dtype=np.float64),
            np.asarray(terminated, dtype=bool),
            np.asarray(truncated, dtype=bool),
            list(infos),
        )

    def close(self) -> None:
        for group in getattr(self, "_groups", []):
            group.close()
        self._groups = []

    def __enter__(self) -> VecEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_vec_env(
    task: str | TaskSpec, num_envs: int, workers: int | None = None, **kwargs
) -> VecEnv:
    """A :class:`VecEnv` of ``num_envs`` envs (``workers`` processes; default: see default_workers).

    ``kwargs``: :class:`VecEnv`'s ``fastpath_on`` and ``start_method``.
    """
    return VecEnv(task, num_envs, workers, **kwargs)
