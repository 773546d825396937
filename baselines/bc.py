"""Behavior cloning: BC-mix (on D_MIX) and BC-safe (oracle, on the desirable part of D_MIX).

Maximum likelihood of the dataset actions under a tanh-Gaussian policy:

    L(pi) = -E_{(s,a) ~ D}[log pi(a|s)]

with D = D_MIX for ``bc-mix`` and D = {(s,a) in D_MIX : is_desirable = 1} for ``bc-safe``.
BC-safe reads the hidden ``is_desirable`` labels, which no other learner sees: it is an
oracle (an upper reference, not a competitor), and every table marks it as such.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uniq.method import Method
from uniq.nets import TanhGaussianPolicy


@dataclass
class BCConfig:
    batch_size: int = 256
    """Transitions per gradient step (suite choice; the BC papers use 256)."""
    lr: float = 1e-4
    """Adam learning rate of the policy (same as the UNIQ / DWBC actors)."""
    weight_decay: float = 0.0
    """Adam L2 weight decay of the policy."""
    hidden: int = 256
    """Width of each hidden layer of the policy MLP."""
    depth: int = 2
    """Hidden layers of the policy MLP (0 gives a linear-Gaussian policy)."""


class BC(Method):
    """BC on D_MIX: the policy imitates every demonstration, desirable or not."""

    name = "bc-mix"
    display_name = "BC-mix"
    Config = BCConfig
    supports_members = True
    source = "mix"
    """Which dataset is cloned (see ``uniq.method.SOURCES``)."""

    def __init__(self, cfg: BCConfig, spec, data, device, seed: int, members: int | None = None):
        super().__init__(cfg, spec, data, device, seed, members)
        self.actor = TanhGaussianPolicy(
            spec.obs_dim, spec.act_dim, cfg.hidden, cfg.depth, members=members
        ).to(self.device)
        self.actor_opt = torch.optim.Adam(
            self.actor.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )

    def batches(self) -> dict[str, tuple[str, int]]:
        return {"demo": (self.source, self.cfg.batch_size)}

    def update(self, batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        demo = batch["demo"]
        loss = -self.actor.log_prob(demo["observations"], demo["actions"]).mean(-1)  # per member
        self.actor_opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # sum over members: each gets its own gradient
        self.actor_opt.step()
        return {"actor_loss": loss.detach()}


class BCSafe(BC):
    """Oracle: BC on the desirable part of D_MIX, selected with the hidden labels."""

    name = "bc-safe"
    display_name = "BC-safe"
    source = "mix_desirable"
    uses_hidden_labels = True
