"""Scripted navigation controllers: a cheap second data source for the Goal/Button tasks.

RL demonstrators on the navigation tasks need ~1M env steps (GPU profile). For CI and the
quick CPU profile these controllers produce the safe/unsafe trajectories instead, from the
observation alone (no privileged state), so the learners see ordinary env observations:

- the flat observation is sliced by the env's own observation dict (``<object>_lidar`` keys,
  in the order safety-gymnasium flattens them), read once from a reference env;
- pseudo-lidar bin ``i`` of ``B`` covers ego angles ``[i, i+1) 2 pi / B`` and aliases into
  its two neighbours, so the reading-weighted mean of the bin *centres*
  ``(i + 1/2) 2 pi / B`` points at the object (the aliasing shifts the mean by half a bin);
- ``unsafe``: steer straight at the goal at full speed, ignoring hazards;
- ``safe``: the same attraction plus a repulsion from every constrained object's lidar
  (hazards, gremlins, non-goal buttons) within ``avoid_dist``, at a lower speed.
  Repulsion weight per bin: ``gain ((h - h0) / (1 - h0))^2`` for closeness ``h > h0``.
- Gaussian action noise (``noise``) makes trajectories differ; the controller keeps no state.

Robots: Point (actions: forward force, turn rate; heading = ego +x) and Car (two wheel
torques; the car drives toward ego -y, and ``left - right`` turns it counter-clockwise),
both checked by stepping the envs. Other robots (Doggo, Ant, Racecar) are not supported.
Data from these controllers is labelled ``source="scripted"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.tasks import TaskSpec, make_env, resolve_task

MODES = ("safe", "unsafe")


@dataclass
class ScriptedConfig:
    """Controller gains (hand-tuned on SafetyPointGoal1-v0; see the module docstring)."""

    speed_unsafe: float = 1.0  # forward command of the unsafe controller (max 1)
    speed_safe: float = 0.6  # target forward speed (m/s) of the safe controller
    speed_gain: float = 3.0  # safe: forward command per m/s below the target speed
    turn_gain: float = 2.0  # turn command per radian of heading error
    avoid_dist: float = 1.2  # metres: constrained objects nearer than this repel (safe only)
    avoid_gain: float = 8.0  # repulsion weight of a bin at zero distance (attraction weight 1)
    radial: float = 0.5  # weight of the radial push relative to the tangential slide
    wander_turn: float = 0.3  # turn command while the goal is out of lidar range (> max_dist)
    noise: float = 0.15  # std of the Gaussian noise added to every action component


class ScriptedController:
    """``act(obs [n, obs_dim]) -> actions [n, 2]`` for a navigation task (an ``envs.rollout`` act_fn)."""

    def __init__(
        self,
        task: str | TaskSpec,
        mode: str,
        seed: int = 0,
        config: ScriptedConfig | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown scripted mode {mode!r}; use one of {MODES}.")
        self.spec = resolve_task(task)
        self.mode, self.cfg = mode, config or ScriptedConfig()
        self.rng = np.random.default_rng(seed)
        if "Point" in self.spec.name:
            self.robot, self.heading = "point", 0.0
        elif "Car" in self.spec.name:
            self.robot, self.heading = "car", -np.pi / 2
        else:
            raise ValueError(
                f"scripted controllers support the Point and Car navigation tasks, not "
                f"{self.spec.name}; train RL demonstrators for it (uniq-bench demonstrator)."
            )
        env = make_env(self.spec)
        try:
            nav = env.unwrapped.task
            spaces = nav.obs_info.obs_space_dict.spaces
            self.max_dist = float(nav.lidar_conf.max_dist)
            constrained = [
                o.name + "_lidar"
                for o in nav._obstacles
                if o.is_lidar_observed and getattr(o, "is_constrained", False)
            ]
        finally:
            env.close()
        offsets, pos = {}, 0
        for key, space in spaces.items():
            size = int(np.prod(space.shape))
            offsets[key] = slice(pos, pos + size)
            pos += size
        if pos != self.spec.obs_dim or "goal_lidar" not in offsets:
            raise ValueError(
                f"{self.spec.name}: observation layout {list(offsets)} ({pos} values) does not "
                f"match obs_dim {self.spec.obs_dim} or lacks goal_lidar."
            )
        self.goal = offsets["goal_lidar"]
        self.velocimeter = offsets["velocimeter"]
        self.avoid = [offsets[k] for k in constrained]
        # Buttons: the goal button is one of the buttons, so its reading is removed before
        # the buttons repel (pressing a wrong button costs, pressing the goal one is the task).
        self.buttons = offsets.get("buttons_lidar") if "buttons_lidar" in constrained else None
        if self.buttons is not None:
            self.avoid = [s for s in self.avoid if s != self.buttons]
        bins = self.goal.stop - self.goal.start
        angles = (np.arange(bins) + 0.5) * 2 * np.pi / bins
        self.dirs = np.stack([np.cos(angles), np.sin(angles)], axis=1)  # [bins, 2]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        cfg = self.cfg
        goal = obs[:, self.goal]
        attract = goal @ self.dirs
        norm = np.linalg.norm(attract, axis=1, keepdims=True)
        visible = norm[:, 0] > 1e-6
        desired = np.where(visible[:, None], attract / np.maximum(norm, 1e-6), 0.0)
        if self.mode == "safe":
            h0 = max(0.0, 1.0 - cfg.avoid_dist / self.max_dist)
            near = [obs[:, s] for s in self.avoid]
            if self.buttons is not None:
                near.append(np.clip(obs[:, self.buttons] - goal - 0.05, 0.0, None))
            goal_dir = desired.copy()
            for closeness in near:
                w = cfg.avoid_gain * (np.clip(closeness - h0, 0.0, None) / (1.0 - h0)) ** 2
                away = -(w @ self.dirs)  # [n, 2]: radial push away from near objects
                # Tangential part: slide around the obstacle on the goal's side instead of
                # stopping in front of it (pure repulsion stalls where it balances attraction).
                tangent = np.stack([-away[:, 1], away[:, 0]], axis=1)
                side = np.sign(tangent[:, 0] * goal_dir[:, 0] + tangent[:, 1] * goal_dir[:, 1])
                desired = desired + cfg.radial * away + side[:, None] * tangent
        # Heading error: angle of the desired direction relative to the robot's heading.
        err = np.arctan2(desired[:, 1], desired[:, 0]) - self.heading
        err = (err + np.pi) % (2 * np.pi) - np.pi
        moving = np.linalg.norm(desired, axis=1) > 1e-6
        turn = np.where(moving, np.clip(cfg.turn_gain * err, -1, 1), cfg.wander_turn)
        align = np.where(moving, np.clip(np.cos(err), 0.0, 1.0), 1.0)
        if self.mode == "unsafe":
            # Full throttle, slowed only by misalignment (the robots' momentum then carries
            # them through hazards: that is what makes this controller unsafe).
            forward = cfg.speed_unsafe * align
        else:
            # Speed feedback from the velocimeter (ego frame): the Point robot slides on when
            # it turns, so an open-loop throttle drifts into hazards it is steering away from.
            vel = obs[:, self.velocimeter]
            v_fwd = vel[:, 0] if self.robot == "point" else -vel[:, 1]
            forward = np.clip(cfg.speed_gain * (cfg.speed_safe * align - v_fwd), -1.0, 1.0)
        if self.robot == "point":
            action = np.stack([forward, turn], axis=1)
        else:  # car: left - right turns counter-clockwise
            action = np.stack([forward + 0.5 * turn, forward - 0.5 * turn], axis=1)
        action += cfg.noise * self.rng.standard_normal(action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def scripted_act_fn(task: str | TaskSpec, mode: str, seed: int = 0) -> ScriptedController:
    """The scripted ``mode`` controller of ``task`` as an ``envs.rollout.rollout`` act_fn."""
    return ScriptedController(task, mode, seed)
