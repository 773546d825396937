"""Lagrange multipliers of the safe demonstrators: ``lambda >= 0`` on the constraint ``J_c <= d``.

Both trainers (SAC-Lagrangian, envs/demonstrators.py, one update per finished episode; and
PPO-Lagrangian, envs/ppo.py, one per epoch) use these; the limit ``d`` is passed at each update
so that a curriculum can move it.
"""

from __future__ import annotations

import torch


class AdamMultiplier:
    """Projected Adam ascent on ``lambda (J_c - d)``: Adam descends ``-lambda (J_c - d)``, then
    lambda is clipped at 0.

    The projection (rather than a softplus/log parameter) lets lambda sit at exactly 0 while
    the policy is safe and react at once when it stops being safe (no "wind-up" of a
    parameter that drifted far negative). The second-moment normalization makes a step
    ~``lr`` whatever the scale of the task's costs. ``betas``: OmniSafe's PPO-Lagrangian uses
    Adam's defaults; the SAC demonstrators run without momentum (``beta1 = 0``), so each step
    follows the sign of the latest episode's violation (with momentum, lambda kept rising for
    several episodes after the policy became safe).
    """

    def __init__(self, init: float, lr: float, betas=(0.9, 0.999), device="cpu"):
        self.param = torch.tensor(float(max(init, 0.0)), device=device, requires_grad=True)
        self.opt = torch.optim.Adam([self.param], lr=lr, betas=betas)

    @property
    def value(self) -> float:
        return float(self.param.detach())

    def update(self, episode_cost: float, cost_limit: float) -> float:
        """One ascent step on ``lambda (J_c - d)``; returns the new lambda (never below 0)."""
        loss = -self.param * (float(episode_cost) - float(cost_limit))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            self.param.clamp_(min=0.0)
        return self.value

    def state_dict(self) -> dict:
        return {"param": self.param.detach().clone(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():  # "value": the key of SAC checkpoints written before this class
            self.param.copy_(state["param"] if "param" in state else state["value"])
        self.opt.load_state_dict(state["opt"])


class PIDMultiplier:
    """lambda = max(0, Kp e_p + I + Kd max(0, delta C)), I = max(0, I + Ki e) (Stooke et al. 2020).

    ``e = J_c - d`` for the integral; the P and D terms read an exponential moving average of
    ``J_c`` (smoothing the noisy per-epoch cost), D only its rise since the previous epoch.
    """

    def __init__(self, init: float, kp: float, ki: float, kd: float, ema: float):
        self.kp, self.ki, self.kd, self.ema = kp, ki, kd, ema
        self.integral, self.smoothed, self.previous = init, None, None
        self.value = init

    def update(self, episode_cost: float, cost_limit: float) -> float:
        self.integral = max(0.0, self.integral + self.ki * (episode_cost - cost_limit))
        prev = self.smoothed if self.smoothed is not None else episode_cost
        self.smoothed = self.ema * prev + (1 - self.ema) * episode_cost
        rise = 0.0 if self.previous is None else max(0.0, self.smoothed - self.previous)
        self.previous = self.smoothed
        p = self.kp * (self.smoothed - cost_limit)
        self.value = max(0.0, p + self.integral + self.kd * rise)
        return self.value

    def state_dict(self) -> dict:
        return dict(
            integral=self.integral, smoothed=self.smoothed, previous=self.previous, value=self.value
        )

    def load_state_dict(self, state: dict) -> None:
        for key in ("integral", "smoothed", "previous", "value"):
            setattr(self, key, state[key])
