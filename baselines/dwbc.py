r"""DWBC (Xu et al. 2022) with the undesirable set D_UN as the labeled class.

Original DWBC: a labeled expert set D_E, an unlabeled set D_O, and a discriminator
d(s, a, log pi(a|s)) ~ P(expert | s, a) trained by positive-unlabeled (PU) learning with
class prior eta (the expert share of D_O):

    L_d  = eta E_{D_E}[-log d] + E_{D_O}[-log(1 - d)] - eta E_{D_E}[-log(1 - d)]
    L_pi = alpha E_{D_E}[-log pi] - E_{D_E}[(eta / (d (1 - d)) + 1) (-log pi)]
           + E_{D_O}[w_O (-log pi)],   w_O = (1/(1 - d) - 1) 1[d >= 0.5] = d/(1 - d) 1[d >= 0.5]

(L_pi as in the authors' released code; w_O is the odds that a D_O sample is expert.)

Here the roles swap: D_UN is the labeled class and D_MIX the unlabeled one, so
d ~ P(undesirable | s, a), with eta the undesirable share of D_MIX (PU optimum:
d = eta rho_UN / rho_MIX). L_d keeps its form with D_E -> D_UN, D_O -> D_MIX. In L_pi:

- the two D_E terms clone the labeled class; the labeled class is now what to avoid, so
  they are dropped (negating them is unbounded: -log pi on D_UN has no minimum). With
  them goes alpha, which only weighted that term: it has no counterpart here.
- the D_O term keeps its form, with the odds of the *desirable* class in place of the
  expert's: d -> 1 - d, so

    L_pi = E_{D_MIX}[w (-log pi(a|s))],   w = (1 - d)/d 1[d <= 0.5]  in {0} U [1, 9]

  (d clipped to [0.1, 0.9]). Samples the discriminator marks undesirable (d > 0.5) get
  weight 0 and the rest are up-weighted by how desirable d says they are: the policy is
  BC on D_MIX pushed away from what d marks undesirable.

When the mirrored form works: eta > weight_cutoff s. Let s be the undesirable share of
D_MIX; D_UN comes from the same undesirable demonstrator, so rho_MIX = s rho_UN + (1 - s)
rho_DES. Pointwise in (s, a), L_d = eta rho_UN (-log d) + (rho_MIX - eta rho_UN)(-log(1 - d)),
minimised by d = eta rho_UN / rho_MIX (then clipped to [d_min, d_max]) where rho_MIX >= eta
rho_UN. Where only undesirable behaviour goes (rho_DES = 0), d = eta / s; where only
desirable behaviour goes, d = 0 -> d_min. The weight zeroes undesirable rows only if
eta / s > weight_cutoff, i.e.

    eta > weight_cutoff s = s / 2   (published cutoff 0.5).

With eta <= s/2 those rows get d <= 0.5, so weight (1 - d)/d >= 1: nothing is avoided and
DWBC is BC on D_MIX with a milder reweighting. (eta > s breaks the PU risk's non-negativity
there, rho_MIX - eta rho_UN < 0, which only drives d to the clip d_max: weight 0 still.) The
published eta = 0.5 satisfies the condition for every s < 1, so for all of the suite's splits
(s = 0.8, 0.5, 0.2); :meth:`DWBC.check_split` rejects an eta (or cutoff) that violates it.

Discriminator schedule. Published: one discriminator step every 100 policy steps, 5000 in
the official 500k-step runs. At that fixed interval a 10k-step run gives the discriminator
100 steps at lr 1e-4, too few to leave its initialisation (d ~ 0.5 everywhere), and the
weights then do not tell the classes apart. So, unless ``disc_update_every`` fixes it, a
T-step run updates the discriminator every

    clip(T // 5000, 1, 100)

steps: a short run keeps at least the official 5000 discriminator steps (T = 10k: every 2
steps; T < 10k: every step), a run of 500k steps or more keeps the published interval (the
paper profile's 1M steps: 10k discriminator steps). Outside the training loop (no
``total_steps``) the published 100 holds. A run resumed for more steps than it was started
with keeps the interval it trained with (its checkpoint and pretraining log name it).

Published (Xu et al.): two 128-unit input branches (s, a) and log pi, output clipped to
[0.1, 0.9], log pi clipped to [-20, 10] and scaled to [0, 1], discriminator updated every
100 steps, eta 0.5, lr 1e-4, policy weight decay 5e-3, batches of 256 from each set.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from uniq.method import ConfigError, Method
from uniq.nets import TanhGaussianPolicy, linear, mlp

log = logging.getLogger(__name__)

PUBLISHED_DISC_EVERY = 100
"""The published discriminator interval, kept by runs of 500k steps or more."""
PUBLISHED_DISC_UPDATES = 5000
"""Discriminator steps of the official 500k-step runs; a shorter run gets at least these."""


def disc_interval(total_steps: int | None) -> int:
    """clip(T // 5000, 1, 100) for a T-step run; the published 100 when T is unknown."""
    if total_steps is None:
        return PUBLISHED_DISC_EVERY
    return min(PUBLISHED_DISC_EVERY, max(1, total_steps // PUBLISHED_DISC_UPDATES))


@dataclass
class DWBCConfig:
    batch_size: int = 256
    """Transitions per step from each of D_UN and D_MIX (published 256)."""
    eta: float = 0.5
    """PU class prior: the assumed undesirable share of D_MIX (published 0.5); must exceed
    weight_cutoff times the actual share (module docstring)."""
    actor_lr: float = 1e-4
    """Adam learning rate of the policy (published 1e-4)."""
    actor_weight_decay: float = 5e-3
    """Adam weight decay of the policy (published 5e-3)."""
    disc_lr: float = 1e-4
    """Adam learning rate of the discriminator (published 1e-4)."""
    disc_update_every: int | None = None
    """The discriminator takes one step every this many updates; None: clip(T // 5000, 1, 100)
    for a T-step run (module docstring; published 100 in 500k-step runs)."""
    disc_hidden: int = 128
    """Width of each of the two discriminator input branches (published 128)."""
    d_min: float = 0.1
    """Lower clip of the discriminator output (published 0.1)."""
    d_max: float = 0.9
    """Upper clip of the discriminator output (published 0.9)."""
    log_pi_min: float = -20.0
    """Per-dimension log pi is clipped to [log_pi_min, log_pi_max] and scaled to [0, 1]."""
    log_pi_max: float = 10.0
    """Upper end of that clip (published 10)."""
    weight_cutoff: float = 0.5
    """D_MIX samples with d above this get policy weight 0 (DWBC's 0.5 threshold, mirrored)."""
    hidden: int = 256
    """Width of the policy's hidden layers."""
    depth: int = 2
    """Hidden layers of the policy."""


class Discriminator(nn.Module):
    """d(s, a, log pi) in [d_min, d_max]: two ReLU branches, (s, a) and log pi, then an MLP."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: int,
        d_min: float,
        d_max: float,
        members: int | None = None,
    ):
        super().__init__()
        self.sa_branch = nn.Sequential(linear(obs_dim + act_dim, hidden, members), nn.ReLU())
        self.logp_branch = nn.Sequential(linear(act_dim, hidden, members), nn.ReLU())
        self.head = mlp(2 * hidden, 1, 2 * hidden, depth=1, members=members)
        self.d_min, self.d_max = d_min, d_max

    def forward(self, obs, actions, log_pi_scaled) -> torch.Tensor:
        h = torch.cat(
            [self.sa_branch(torch.cat([obs, actions], -1)), self.logp_branch(log_pi_scaled)], -1
        )
        # Clipping (not squashing) as published: the loss ignores samples already at a bound.
        return torch.sigmoid(self.head(h)).squeeze(-1).clamp(self.d_min, self.d_max)


def per_dim_log_prob(policy: TanhGaussianPolicy, obs, actions) -> torch.Tensor:
    """log pi(a_i|s) per action dimension (``[B, act_dim]``); its sum is ``policy.log_prob``."""
    mean, log_std = policy(obs)
    u = torch.atanh(actions.clamp(-1 + policy.eps, 1 - policy.eps))
    gauss = -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    return gauss - 2 * (math.log(2) - u - F.softplus(-2 * u))


def pu_loss(d_un: torch.Tensor, d_mix: torch.Tensor, eta: float) -> torch.Tensor:
    """L_d = eta E_UN[-log d] + E_MIX[-log(1 - d)] - eta E_UN[-log(1 - d)] (per member)."""
    return (
        eta * -torch.log(d_un).mean(-1)
        + -torch.log(1 - d_mix).mean(-1)
        - eta * -torch.log(1 - d_un).mean(-1)
    )


def desirability_weight(d: torch.Tensor, cutoff: float) -> torch.Tensor:
    """w = (1 - d)/d 1[d <= cutoff]: odds that a D_MIX sample is desirable, 0 if marked undesirable."""
    return torch.where(d <= cutoff, (1 - d) / d, torch.zeros_like(d))


class DWBC(Method):
    """Discriminator-weighted BC on D_MIX, the discriminator learning D_UN vs D_MIX (PU)."""

    name = "dwbc"
    display_name = "DWBC"
    Config = DWBCConfig
    supports_members = True

    def __init__(self, cfg: DWBCConfig, spec, data, device, seed: int, members: int | None = None):
        super().__init__(cfg, spec, data, device, seed, members)
        every = cfg.disc_update_every
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, int) or every < 1
        ):
            raise ConfigError(
                f"dwbc: disc_update_every={every!r} must be a positive integer, or null to "
                "scale with the run's length (e.g. --set disc_update_every=100)"
            )
        obs_dim, act_dim, k = spec.obs_dim, spec.act_dim, members
        self.actor = TanhGaussianPolicy(obs_dim, act_dim, cfg.hidden, cfg.depth, members=k).to(
            self.device
        )
        self.disc = Discriminator(
            obs_dim, act_dim, cfg.disc_hidden, cfg.d_min, cfg.d_max, members=k
        ).to(self.device)
        self.actor_opt = torch.optim.Adam(
            self.actor.parameters(), lr=cfg.actor_lr, weight_decay=cfg.actor_weight_decay
        )
        self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.disc_lr)
        self.step = 0
        self._trained_every: int | None = None  # the interval a resumed run trained with

    @classmethod
    def check_split(cls, cfg: DWBCConfig, undesirable_share: float) -> None:
        """Fail unless eta > weight_cutoff s (module docstring), s the undesirable share."""
        bound = cfg.weight_cutoff * undesirable_share
        if cfg.eta <= bound:
            raise ConfigError(
                f"dwbc: eta={cfg.eta} <= weight_cutoff * s = {cfg.weight_cutoff} * "
                f"{undesirable_share:.3f} = {bound:.3f}, where s is the undesirable share of "
                "D_MIX (n_mix_undesirable / (n_mix_desirable + n_mix_undesirable)): the PU "
                "optimum on undesirable rows, d = eta / s, stays under the cutoff, so none of "
                "them gets weight 0 and DWBC avoids nothing. "
                f"Set eta above {bound:.3f} (e.g. the published 0.5, or s itself) or use a split "
                "with fewer undesirable trajectories in D_MIX."
            )

    @property
    def disc_every(self) -> int:
        """The discriminator interval in use: the config's, else the one a resumed run trained
        with (a run resumed for more steps keeps it, as its logged pretraining says), else
        scaled with ``total_steps``."""
        return self.cfg.disc_update_every or self._trained_every or disc_interval(self.total_steps)

    def pretrain(self) -> dict[str, float]:
        # Nothing to pretrain: record the interval, which the resolved config leaves as None.
        log.info("dwbc: discriminator step every %d updates", self.disc_every)
        return {"disc_update_every": float(self.disc_every)}

    def batches(self) -> dict[str, tuple[str, int]]:
        return {"un": ("un", self.cfg.batch_size), "mix": ("mix", self.cfg.batch_size)}

    def _scaled(self, log_pi: torch.Tensor) -> torch.Tensor:
        lo, hi = self.cfg.log_pi_min, self.cfg.log_pi_max
        return (log_pi.detach().clamp(lo, hi) - lo) / (hi - lo)

    def _d(self, part: dict[str, torch.Tensor], log_pi: torch.Tensor) -> torch.Tensor:
        return self.disc(part["observations"], part["actions"], self._scaled(log_pi))

    @torch.no_grad()
    def weights(self, part: dict[str, torch.Tensor]) -> torch.Tensor:
        """The policy weight w of each row of a D_MIX batch (for analysis and tests)."""
        log_pi = per_dim_log_prob(self.actor, part["observations"], part["actions"])
        return desirability_weight(self._d(part, log_pi), self.cfg.weight_cutoff)

    def update(self, batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        un, mix = batch["un"], batch["mix"]
        log_pi_mix = per_dim_log_prob(self.actor, mix["observations"], mix["actions"])
        with torch.no_grad():
            log_pi_un = per_dim_log_prob(self.actor, un["observations"], un["actions"])

        update_disc = self.step % self.disc_every == 0
        with torch.set_grad_enabled(update_disc):  # no discriminator graph on the other steps
            d_un, d_mix = self._d(un, log_pi_un), self._d(mix, log_pi_mix)
            disc_loss = pu_loss(d_un, d_mix, self.cfg.eta)
        if update_disc:
            self.disc_opt.zero_grad(set_to_none=True)
            disc_loss.sum().backward()  # sum over members: each gets its own gradient
            self.disc_opt.step()

        w = desirability_weight(d_mix.detach(), self.cfg.weight_cutoff)
        actor_loss = (w * -log_pi_mix.sum(-1)).mean(-1)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.sum().backward()
        self.actor_opt.step()
        self.step += 1
        return {
            "actor_loss": actor_loss.detach(),
            "disc_loss": disc_loss.detach(),
            "d_un": d_un.detach().mean(-1),
            "d_mix": d_mix.detach().mean(-1),
            "weight_mean": w.mean(-1),
            "weight_zero_frac": (w == 0).float().mean(-1),
        }

    def extra_state(self) -> dict:
        return {"step": self.step, "disc_every": self.disc_every}

    def load_extra_state(self, state: dict) -> None:
        self.step = state.get("step", 0)
        self._trained_every = state.get("disc_every")  # None: saved before it was kept
