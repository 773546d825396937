"""Networks shared by every method: MLP, tanh-Gaussian policy, twin Q."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uniq.atomic import atomic_path


def mlp(
    in_dim: int, out_dim: int, hidden: int = 256, depth: int = 2, dropout: float = 0.0
) -> nn.Sequential:
    """``depth`` hidden ReLU layers of width ``hidden`` (optional dropout), then a linear output."""
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(depth):
        layers += [nn.Linear(dim, hidden), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        dim = hidden
    layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


class TanhGaussianPolicy(nn.Module):
    """pi(a|s) = tanh(N(mu(s), sigma(s)^2)), log sigma clamped to [log_std_min, log_std_max].

    ``log_prob`` of given (dataset) actions inverts the tanh on actions clipped to
    ``[-1 + eps, 1 - eps]`` so that saturated actions (exactly +-1) keep a finite log-prob.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: int = 256,
        depth: int = 2,
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.init_kwargs = dict(
            obs_dim=obs_dim,
            act_dim=act_dim,
            hidden=hidden,
            depth=depth,
            log_std_min=log_std_min,
            log_std_max=log_std_max,
            eps=eps,
        )
        self.trunk = mlp(obs_dim, 2 * act_dim, hidden, depth)
        self.log_std_min, self.log_std_max, self.eps = log_std_min, log_std_max, eps

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.trunk(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    @staticmethod
    def _gaussian_log_prob(u, mean, log_std) -> torch.Tensor:
        return (
            -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        ).sum(-1)

    @staticmethod
    def _tanh_log_det(u: torch.Tensor) -> torch.Tensor:
        # log(1 - tanh(u)^2), written stably as 2 (log 2 - u - softplus(-2u)).
        return (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) of given actions in [-1, 1] (shape ``[B]``)."""
        return self.dist_log_prob(*self(obs), actions)

    def dist_log_prob(
        self, mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        """``log_prob`` from an already computed ``forward`` (one pass serves several uses)."""
        a = actions.clamp(-1 + self.eps, 1 - self.eps)
        u = torch.atanh(a)
        return self._gaussian_log_prob(u, mean, log_std) - self._tanh_log_det(u)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterized action and its log-prob (for SAC-style targets)."""
        return self.dist_sample(*self(obs))

    def dist_sample(
        self, mean: torch.Tensor, log_std: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``sample`` from an already computed ``forward``."""
        u = mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(u), self._gaussian_log_prob(u, mean, log_std) - self._tanh_log_det(u)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """tanh(mu(s)) when deterministic, else a sample."""
        if deterministic:
            return torch.tanh(self(obs)[0])
        return self.sample(obs)[0]


class TwinQ(nn.Module):
    """Two independent Q(s, a) heads; ``forward`` returns both, ``min_q`` their minimum."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, depth: int = 2):
        super().__init__()
        self.q1 = mlp(obs_dim + act_dim, 1, hidden, depth)
        self.q2 = mlp(obs_dim + act_dim, 1, hidden, depth)

    def forward(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, actions], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)

    def min_q(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return torch.min(*self(obs, actions))


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: target <- (1 - tau) target + tau source."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.lerp_(s, tau)


def save_policy(policy: TanhGaussianPolicy, path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Write ``policy.pt``: the policy's constructor arguments, weights and ``meta``.

    ``meta`` carries what evaluation copies into eval.json (algo label, task, seed, steps,
    variant, dataset checksums, git commit, resolved config). Written atomically.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": "uniq-bench/tanh-gaussian-policy/1",
        "kwargs": policy.init_kwargs,
        "state_dict": {k: v.detach().cpu() for k, v in policy.state_dict().items()},
        "meta": meta,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_policy(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[TanhGaussianPolicy, dict[str, Any]]:
    """Read a ``policy.pt`` written by :func:`save_policy`; returns (policy in eval mode, meta)."""
    payload = torch.load(path, map_location=device, weights_only=False)
    if (
        not isinstance(payload, dict)
        or payload.get("format") != "uniq-bench/tanh-gaussian-policy/1"
    ):
        raise ValueError(
            f"{path}: not a uniq-bench policy file; train one with `uniq-bench train`."
        )
    policy = TanhGaussianPolicy(**payload["kwargs"]).to(device)
    policy.load_state_dict(payload["state_dict"])
    return policy.eval(), payload["meta"]
