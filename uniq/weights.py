r"""UNIQ's weights, as pure functions of the occupancy ratio and the advantage (design.md
section 5.2 and 5.4). Rows are the last dimension, behind an optional leading member dim;
every statistic (quantiles, max, mean) is per member along the rows.

Transition weight, from tau of the batch's rows:

    w(x)       = -R (clip(tau(x), lo, hi) - lo) / (hi - lo)   lo, hi = 10%, 90% quantiles
    W(s, a, s') = w(s) + gamma w(s')          (state form; lo, hi separately for s and s')
    W(s, a)     = (1 + gamma) w(s, a)          (state_action form)

with the quantiles taken over the batch's D_MIX rows (critic: its ``batch_mix`` rows, D_UN
rows scaled by them; actor: all its rows). Critic: W clipped to [-R, R] (so in [-R, 0]);
actor: unclipped. Without occupancy correction (ablation): W = -R on D_UN, 0 on D_MIX.

Actor weight, from the advantage A = min(Q - V, adv_clip):

    weight = min( exp(A - max A) / mean(exp(A - max A)) * clip(1 / W^2, 0, 100), 100 )
"""

from __future__ import annotations

from typing import Any

import torch


def inverse_square_weight(W: torch.Tensor, clip: float) -> torch.Tensor:
    """clip(1 / W^2, 0, clip). W = 0 gives 1/0 = +inf, which the clip turns into ``clip``."""
    return W.square().reciprocal().clamp(max=clip)


def actor_weights(A: torch.Tensor, W: torch.Tensor | None, cfg: Any) -> torch.Tensor:
    """The actor's per-row weight from the advantage A and, for the recipe's form, the
    transition weight W (None: no 1/W^2 factor), normalized per member along the last dim:

        min( exp(A - max A) / mean(exp(A - max A)) * clip(1 / W^2, 0, inv_w2_clip), weight_clip )
    """
    A = A.clamp(max=cfg.adv_clip)
    e = torch.exp(A - A.amax(-1, keepdim=True))
    weight = e / e.mean(-1, keepdim=True)
    if W is not None:
        weight = weight * inverse_square_weight(W, cfg.inv_w2_clip)
    return weight.clamp(max=cfg.weight_clip)


def scale_ratio(
    tau: torch.Tensor,
    q: tuple[float, float],
    reward_factor: float,
    ref: torch.Tensor | None = None,
) -> torch.Tensor:
    """w = -R (clip(tau, lo, hi) - lo) / (hi - lo), with [lo, hi] the quantiles ``q`` of
    ``ref`` (default: ``tau`` itself) along the last dimension.

    w is in [-R, 0]: 0 for the least and -R for the most undesirable-looking rows. A batch
    whose quantiles coincide (constant tau) gets w = 0.
    """
    ref = tau if ref is None else ref
    lo, hi = (v.unsqueeze(-1) for v in quantiles(ref, q))  # per member when batched
    return (tau.clamp(lo, hi) - lo) / (hi - lo).clamp_min(1e-12) * -reward_factor


def quantiles(x: torch.Tensor, q: tuple[float, ...]) -> list[torch.Tensor]:
    """``torch.quantile(x, q, dim=-1)`` (linear interpolation) along the last dim, without
    device syncs: positions are computed from Python numbers, so nothing is read back from a GPU."""
    s = x.sort().values
    n = s.shape[-1]
    out = []
    for qi in q:
        pos = qi * (n - 1)
        i = min(int(pos), n - 1)
        j = min(i + 1, n - 1)
        out.append(s[..., i] + (pos - i) * (s[..., j] - s[..., i]))
    return out


def transition_weight(
    tau: torch.Tensor, n_ref: int, q: tuple[float, float], R: float, gamma: float
) -> torch.Tensor:
    """W per row from tau ``[..., rows, (s, s')]`` (or ``[..., rows, 1]`` for tau(s, a)):
    w(s) + gamma w(s') (or (1 + gamma) w(s, a)), each column scaled by :func:`scale_ratio`
    with the quantiles of its first ``n_ref`` rows (the D_MIX ones)."""
    t = tau.transpose(-1, -2)  # one scale per column (and member)
    w = scale_ratio(t, q, R, ref=t[..., :n_ref])
    return w[..., 0, :] + gamma * w[..., 1, :] if t.shape[-2] == 2 else (1 + gamma) * w[..., 0, :]


def batch_weights(
    tau_mix: torch.Tensor,
    tau_un: torch.Tensor,
    n_critic_mix: int,
    n_actor: int,
    q: tuple[float, float],
    R: float,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W on the critic batch [mix[:n_critic_mix]; un], clipped to [-R, R]; W on the actor
    batch mix[:n_actor], unclipped), from tau of the sampled D_MIX and D_UN rows."""
    tau_critic = torch.cat([tau_mix[..., :n_critic_mix, :], tau_un], -2)
    W_critic = transition_weight(tau_critic, n_critic_mix, q, R, gamma).clamp(-R, R)
    return W_critic, transition_weight(tau_mix[..., :n_actor, :], n_actor, q, R, gamma)


def ablation_weights(
    like: torch.Tensor, lead: tuple[int, ...], n_critic_mix: int, n_un: int, n_actor: int, R: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Without occupancy correction: W = 0 on the critic's D_MIX rows and -R on its D_UN
    rows (-R: the most undesirable weight the corrected critic's clip allows); 0 on the
    actor's rows. ``like``: a tensor of the dtype and device wanted; ``lead``: member dims."""
    W_critic = torch.cat(
        [like.new_zeros((*lead, n_critic_mix)), like.new_full((*lead, n_un), -R)], -1
    )
    return W_critic, like.new_zeros((*lead, n_actor))
