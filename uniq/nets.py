"""Networks shared by every method: MLP, tanh-Gaussian policy, twin Q.

Every network takes an optional ``members=K``: it then holds K independent copies (one per
seed of a batched-over-seeds run) and maps inputs ``[K, B, in]`` to ``[K, B, out]`` with one
batched matrix product per layer (:class:`BatchedLinear`), so K small networks cost about
as many kernel launches as one. ``members=None`` builds exactly today's ``nn.Linear`` nets.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uniq.atomic import atomic_path


class BatchedLinear(nn.Module):
    """K independent linear layers: ``y[k] = x[k] @ weight[k] + bias[k]`` for x ``[K, B, in]``.

    weight ``[K, in, out]``, bias ``[K, 1, out]``; each member is initialised as ``nn.Linear``
    is, U(-1/sqrt(in), 1/sqrt(in)) for weight and bias, from the global torch RNG.
    """

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        bound = 1 / math.sqrt(in_features) if in_features else 0.0
        self.weight = nn.Parameter(
            torch.empty(members, in_features, out_features).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.empty(members, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        k, i, o = self.weight.shape
        return f"members={k}, in_features={i}, out_features={o}"


def linear(in_dim: int, out_dim: int, members: int | None = None) -> nn.Module:
    """``nn.Linear``, or a :class:`BatchedLinear` of ``members`` copies."""
    return (
        nn.Linear(in_dim, out_dim) if members is None else BatchedLinear(members, in_dim, out_dim)
    )


def mlp(
    in_dim: int,
    out_dim: int,
    hidden: int = 256,
    depth: int = 2,
    dropout: float = 0.0,
    members: int | None = None,
) -> nn.Sequential:
    """``depth`` hidden ReLU layers of width ``hidden`` (optional dropout), then a linear output."""
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(depth):
        layers += [linear(dim, hidden, members), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        dim = hidden
    layers.append(linear(dim, out_dim, members))
    return nn.Sequential(*layers)


@torch.no_grad()
def orthogonal_init_(module: nn.Module, gain: float = 1.0) -> nn.Module:
    """Every linear layer of ``module``: weight <- an orthogonal matrix (times ``gain``), bias <- 0.

    For a :class:`BatchedLinear`, each member gets its own orthogonal matrix, drawn as a
    plain ``nn.Linear``'s would be (``[out, in]``, then transposed). Returns ``module``.
    """
    for mod in module.modules():
        if isinstance(mod, nn.Linear):
            nn.init.orthogonal_(mod.weight, gain)
            nn.init.zeros_(mod.bias)
        elif isinstance(mod, BatchedLinear):
            for w in mod.weight:  # [in, out]
                w.copy_(nn.init.orthogonal_(torch.empty_like(w.T), gain).T)
            mod.bias.zero_()
    return module


@torch.no_grad()
def stack_members(batched: nn.Module, plains: Sequence[nn.Module]) -> None:
    """Copy K plain modules (``members=None``) into the same module built with ``members=K``."""
    for name, mod in batched.named_modules():
        if isinstance(mod, BatchedLinear):
            layers = [p.get_submodule(name) for p in plains]
            mod.weight.copy_(torch.stack([layer.weight.T for layer in layers]))
            mod.bias.copy_(torch.stack([layer.bias for layer in layers]).unsqueeze(1))
        elif any(True for _ in mod.parameters(recurse=False)):
            raise TypeError(f"{name}: {type(mod).__name__} has parameters but is not batched")


@torch.no_grad()
def unstack_member(batched: nn.Module, plain: nn.Module, k: int) -> nn.Module:
    """Copy member ``k`` of a batched module into ``plain`` (the same module, ``members=None``)."""
    for name, mod in batched.named_modules():
        if isinstance(mod, BatchedLinear):
            layer = plain.get_submodule(name)
            layer.weight.copy_(mod.weight[k].T)
            layer.bias.copy_(mod.bias[k, 0])
    return plain


class ObsNormalizer(nn.Module):
    """``(s - mean) / (std + 1e-3)``, optionally clipped to ``[-clip, clip]``.

    The one observation standardisation of the suite. It is a layer of the networks that
    use it, its statistics are buffers: they are saved and loaded with the network's weights,
    so a policy trained on standardised observations cannot be run on raw ones by mistake.
    Statistics start at (0, 1) (nearly the identity) and are set with :meth:`set_stats`.
    """

    EPS = 1e-3

    def __init__(self, dim: int, clip: float | None = None):
        super().__init__()
        self.clip = clip
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def set_stats(self, mean, std) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = (obs - self.mean) / (self.std + self.EPS)
        return x if self.clip is None else x.clamp(-self.clip, self.clip)


LOG_STD_FORMS = ("clamp", "tanh")


class TanhGaussianPolicy(nn.Module):
    """pi(a|s) = tanh(N(mu(s), sigma(s)^2)), with log sigma from the trunk's raw output x as

        log_std_form="clamp":  log sigma = clamp(x, log_std_min, log_std_max)
        log_std_form="tanh":   log sigma = log_std_min + (log_std_max - log_std_min) (tanh(x) + 1) / 2

    (the tanh form keeps a gradient at the bounds). ``log_prob`` of given (dataset) actions
    inverts the tanh on actions clipped to ``[-1 + eps, 1 - eps]`` so that saturated actions
    (exactly +-1) keep a finite log-prob.
    ``obs_norm``: the policy standardises its raw observations itself (:class:`ObsNormalizer`,
    statistics in ``self.obs_norm``, clipped at ``obs_clip`` if given).
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
        members: int | None = None,
        obs_norm: bool = False,
        obs_clip: float | None = None,
        log_std_form: str = "clamp",  # policy.pt files without it were written with "clamp"
    ):
        super().__init__()
        if log_std_form not in LOG_STD_FORMS:
            raise ValueError(f"log_std_form={log_std_form!r}; choose one of {LOG_STD_FORMS}")
        self.members = members
        self.init_kwargs = dict(  # of one member: what policy.pt stores
            obs_dim=obs_dim,
            act_dim=act_dim,
            hidden=hidden,
            depth=depth,
            log_std_min=log_std_min,
            log_std_max=log_std_max,
            eps=eps,
            log_std_form=log_std_form,
        )
        if obs_norm:  # only then: older policy files (without these keys) keep loading
            self.init_kwargs.update(obs_norm=True, obs_clip=obs_clip)
        self.obs_norm = ObsNormalizer(obs_dim, obs_clip) if obs_norm else None
        self.trunk = mlp(obs_dim, 2 * act_dim, hidden, depth, members=members)
        self.log_std_min, self.log_std_max, self.eps = log_std_min, log_std_max, eps
        self.log_std_form = log_std_form

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.obs_norm is not None:
            obs = self.obs_norm(obs)
        mean, x = self.trunk(obs).chunk(2, dim=-1)
        lo, hi = self.log_std_min, self.log_std_max
        if self.log_std_form == "tanh":
            return mean, lo + 0.5 * (hi - lo) * (torch.tanh(x) + 1)
        return mean, x.clamp(lo, hi)

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
        """log pi(a|s) of given actions in [-1, 1] (shape ``[B]``, or ``[K, B]`` batched)."""
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

    def member(self, k: int) -> TanhGaussianPolicy:
        """Member ``k`` of a batched policy as a plain one (for evaluation and policy.pt)."""
        if self.members is None:
            return self
        device = self.trunk[0].weight.device
        plain = TanhGaussianPolicy(**self.init_kwargs).to(device).train(self.training)
        if self.obs_norm is not None:  # shared by the members: one dataset, one statistic
            plain.obs_norm.load_state_dict(self.obs_norm.state_dict())
        return unstack_member(self, plain, k)


def with_obs_norm(policy: TanhGaussianPolicy, mean, std) -> TanhGaussianPolicy:
    """A plain copy of ``policy`` that standardises raw observations itself.

    ``policy`` was trained on observations standardised with (``mean``, ``std``); the copy
    computes ``policy((s - mean) / (std + 1e-3))`` from raw ``s``, and its policy file keeps the
    statistics, so the policy cannot be run on unstandardised observations by mistake.
    """
    if policy.obs_norm is not None:
        raise ValueError("the policy already standardises its observations")
    kwargs = dict(policy.init_kwargs, obs_norm=True, obs_clip=None)
    device = policy.trunk[0].weight.device
    out = TanhGaussianPolicy(**kwargs).to(device).train(policy.training)
    out.trunk.load_state_dict(policy.trunk.state_dict())
    out.obs_norm.set_stats(mean, std)
    return out


class TwinQ(nn.Module):
    """Two independent Q(s, a) heads; ``forward`` returns both, ``min_q`` their minimum."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: int = 256,
        depth: int = 2,
        members: int | None = None,
    ):
        super().__init__()
        self.q1 = mlp(obs_dim + act_dim, 1, hidden, depth, members=members)
        self.q2 = mlp(obs_dim + act_dim, 1, hidden, depth, members=members)

    def forward(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, actions], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)

    def min_q(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return torch.min(*self(obs, actions))


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: target <- (1 - tau) target + tau source (one foreach call: the
    same lerp per tensor, fewer dispatches)."""
    targets, sources = list(target.parameters()), list(source.parameters())
    if len(targets) != len(sources):
        raise ValueError(f"soft_update: {len(targets)} target vs {len(sources)} source tensors")
    torch._foreach_lerp_(targets, sources, tau)


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
