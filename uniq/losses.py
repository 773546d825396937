r"""UNIQ's losses, each written as its equation (design.md section 5.3 and 5.4).

Rows are the last dimension, behind an optional leading member dim; means are per member.
"""

from __future__ import annotations

import torch


def critic_loss(
    W: torch.Tensor, r: torch.Tensor, V_s: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_Q, mean V(s)), for each Q head i with implicit reward r_i = Q_i(s, a) - gamma (1 - done) V(s'):

        L_i = - E_B[W r_i]                 low implicit reward where rho_UN is
              + 1/2 E_B[r_i^2]             chi^2 regularizer
              + (1 - gamma) E_B[V(s)]      the initial-state value term
        L_Q = mean_i L_i

    ``r``: ``[heads, (K,) rows]``; ``W``, ``V_s``: ``[(K,) rows]``.
    """
    v_mean = V_s.mean(-1)
    loss = (-(W * r).mean(-1) + 0.5 * r.square().mean(-1) + (1 - gamma) * v_mean).mean(0)
    return loss, v_mean


def actor_loss(
    log_pi: torch.Tensor, weight: torch.Tensor, log_pi_min: float, log_pi_max: float
) -> torch.Tensor:
    """L_pi = - E_MIX[ weight * clip(log pi(a|s), log_pi_min, log_pi_max) ].

    torch.clip passes no gradient outside the range: rows whose likelihood already fits
    (above) and far outliers (below) stop pulling on the policy.
    """
    return -(weight * log_pi.clip(log_pi_min, log_pi_max)).mean(-1)


def expectile_loss(u: torch.Tensor, expectile: float) -> torch.Tensor:
    """L_V = E[ |expectile - 1(u < 0)| u^2 ],  u = Q_target(s, a) - V(s) (the paper's V)."""
    return (torch.abs(expectile - (u < 0).float()) * u.square()).mean(-1)
