r"""UNIQ (Hoang, Mai, Varakantham, arXiv 2410.08307): offline inverse Q-learning that moves
the learner's occupancy *away* from the undesirable demonstrations' (design.md section 5).

Data: a small labeled undesirable set D_UN and a large unlabeled D_MIX. Expectations under
the undesirable occupancy rho_UN use D_UN plus D_MIX reweighted by the occupancy ratio
tau = rho_UN / rho_MIX (the occupancy correction). Three parts:

1. Ratio estimation (``pretrain``, then frozen). ``ratio_form="state"`` (reference code,
   default): two state classifiers, c_mix(s) = P(MIX | s) and c_un(s) = P(UN | s),
   tau(s) = c_un(s) / c_mix(s). ``ratio_form="state_action"`` (the paper's derivation): one
   balanced classifier c(s, a) = P(UN | s, a), tau(s, a) = c / (1 - c). Probabilities are
   clipped to [0.05, 0.95], so tau lies in [1/19, 19]. ``ratio_stop="gap"`` (reference):
   the classifiers are trained one after the other, each until the gap between its mean
   output on in-sample positive and negative rows exceeds a per-family threshold (checked
   every 1000 steps on velocity tasks, 5000 on navigation ones); ``"heldout"``: together,
   early-stopped on held-out trajectories.
   Per batch, tau is clipped to the [10%, 90%] quantiles of its D_MIX rows (separately for
   s and s') and min-max scaled to w in [-R, 0] (the most undesirable-looking -> -R), and a
   transition's weight is

       W(s, a, s') = w(s) + gamma w(s')          (state form)
       W(s, a)     = (1 + gamma) w(s, a)          (state_action form; same range as above)

   clipped to [-R, R] in the critic (so W in [-R, 0] there), unclipped in the actor.

   Without occupancy correction (ablation): W = -R on D_UN rows (the clipped value of the
   corrected form's most undesirable rows), 0 on D_MIX.

2. Critic (twin Q, Polyak targets), over the concatenated D_MIX + D_UN batch B:

       V(s')    = clip(min_i Q_target_i(s', a') - alpha log pi(a'|s'), +-max_v),  a' ~ pi
       r_i      = Q_i(s, a) - gamma (1 - done) V(s')        (implicit reward, head i)
       V_on(s)  = min_i Q_i(s, a~pi) - alpha log pi(a|s)    (the ONLINE critic)
       L_i = - E_B[W r_i]                                   (low reward where rho_UN is)
             + 1/2 E_B[r_i^2]                               (chi^2 regularizer)
             + (1 - gamma) E_B[V_on(s)]
       L_Q = mean_i L_i

   The value term goes through the online critic with its gradient, as in the reference
   (the policy sample is a constant there: no gradient into the actor); it is logged as
   ``v_mean``. ``value_form="expectile"``: V is a separate network fitted by expectile
   (0.7) regression to Q_target(s, a) on B, and the value term, V of that network, is a
   constant for the critic.

3. Actor (tanh-Gaussian, log_std = -5 + 3.5 (tanh(x) + 1)), weighted behaviour cloning on D_MIX:

       Q, V   = clip(Q_target(s, a), +-max_v), clip(V(s), +-max_v)     max_v = R / (1 - gamma)
       A      = min(Q - V, 10)
       weight = min( exp(A - max A) / mean(exp(A - max A)) * clip(1 / W^2, 0, 100), 100 )
       L_pi   = - E_MIX[ weight * clip(log pi(a|s), -5 act_dim, 2 act_dim) ]

   with dataset actions clipped to [-1 + 1e-7, 1 - 1e-7] before atanh. The clip of log pi
   passes no gradient outside its range (torch.clip), as the reference's.

   1 / W^2 at W = 0 is +inf and the clip makes it 100 (see :func:`inverse_square_weight`);
   without occupancy correction the factor is 1 on D_MIX. ``actor_weight="advantage"``
   drops the factor (the paper's max E[exp(A) log pi]): the ratio then shapes the critic,
   and through it the advantage, but does not reweight the actor's rows directly.

Speed: the classifiers are frozen after ``pretrain``, so tau of every dataset row (and of
its next state) is computed once and gathered by row index. The actor's 512 D_MIX rows
include the critic's 256 (all rows are i.i.d. uniform draws), so one policy forward
serves the actor's log-likelihood and V on those states, every target-critic evaluation
of an update is one batched call, and the online critic evaluates Q(s, a) and
Q(s, a~pi) in one call.

Batched over seeds (``members=K``): batches are ``[K, B, ...]``, every per-batch statistic
above (the quantiles and min-max scaling of tau, max A and mean exp(A - max A), the means of
the losses) is taken per member along the batch dimension, and tau is cached per member
(``[K, N, ...]``, each member's classifiers) and gathered by each member's row indices.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from uniq.atomic import atomic_path
from uniq.method import ConfigError, Method
from uniq.nets import (
    LOG_STD_FORMS,
    TanhGaussianPolicy,
    TwinQ,
    mlp,
    orthogonal_init_,
    soft_update,
)

RATIO_FORMS = ("state", "state_action")
RATIO_STOPS = ("gap", "heldout")
FAMILY_DEFAULTS: dict[str, dict[str, float]] = {
    # the reference's stop rule per task family (design.md section 5.1)
    "velocity": {"ratio_check_every": 1000, "ratio_gap_mix": 0.2, "ratio_gap_un": 0.2},
    "navigation": {"ratio_check_every": 5000, "ratio_gap_mix": 0.2, "ratio_gap_un": 0.5},
}
"""What a UNIQConfig field left at None means, per ``TaskSpec.family``."""
ACTOR_WEIGHTS = ("recipe", "advantage")
VALUE_FORMS = ("policy", "expectile")


@dataclass
class UNIQConfig:
    """UNIQ's hyper-parameters. Defaults: the authors' code, run as in its final experiments
    (design.md section 5); paper forms and suite options are named values beside them."""

    gamma: float = 0.99
    """Discount factor (0.99, as the authors' code)."""
    batch_mix: int = 256
    """D_MIX transitions in each critic batch (256, as the authors' code)."""
    batch_un: int = 256
    """D_UN transitions in each critic batch (256, as the authors' code)."""
    actor_batch: int = 512
    """D_MIX transitions in each actor batch (512, as the authors' code, who draw them apart
    from the critic's; here the first ``batch_mix`` are the critic's, all i.i.d. draws)."""
    hidden: int = 256
    """Width of every hidden layer (actor, critics, classifiers; 256, as the authors' code)."""
    depth: int = 2
    """Hidden layers of every MLP (2, as the authors' code)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the twin Q, default betas (3e-4, as the authors' code)."""
    actor_lr: float = 1e-4
    """Adam learning rate of the policy, default betas (1e-4, as the authors' code)."""
    tau: float = 0.005
    """Polyak rate of the target critic, applied after the actor step (0.005, as the
    authors' code)."""
    alpha: float = 1e-3
    """Fixed entropy temperature in V(s) = min_i Q_i(s, a~pi) - alpha log pi(a|s) (1e-3, as
    the authors' code; not learned)."""
    reward_factor: float = 5.0
    """R: ratio weights are scaled to w in [-R, 0], the critic's W clipped to [-R, R], and
    max_v = R / (1 - gamma) bounds the values (5, as the authors' code)."""
    occupancy_correction: bool = True
    """False: the paper's ablation, the undesirable expectation from D_UN alone (D_UN rows
    W = -R, D_MIX rows 0 in the critic; the actor's 1/W^2 factor is 1)."""
    ratio_form: str = "state"
    """'state': tau(s) = c_un(s) / c_mix(s), two state classifiers, as the authors' code;
    'state_action': tau(s, a) = c / (1 - c), one classifier on (s, a), the paper's derivation."""
    ratio_lr: float = 1e-4
    """Adam learning rate of the classifiers (1e-4, as the authors' code)."""
    ratio_weight_decay: float = 1e-4
    """Adam (L2) weight decay of the classifiers (1e-4, as the authors' code)."""
    ratio_dropout: float = 0.5
    """Dropout after each hidden layer of the classifiers, off when their outputs are used
    (0.5, as the authors' code)."""
    ratio_batch: int = 1024
    """Rows from each of D_UN and D_MIX per classifier step (1024 + 1024, as the authors'
    code)."""
    ratio_steps: int = 50_000
    """Most steps of each classifier (50k, as the authors' code); the stop rule usually
    ends sooner."""
    ratio_prob_min: float = 0.05
    """Lower clip of the classifiers' sigmoid output (0.05, as the authors' code)."""
    ratio_prob_max: float = 0.95
    """Upper clip of the classifiers' sigmoid output (0.95, as the authors' code)."""
    ratio_stop: str = "gap"
    """'gap': the authors' stop rule, each classifier trained in turn (c_mix, then c_un)
    until the gap between its mean output on in-sample positive and negative rows exceeds
    its threshold, the last weights kept; 'heldout': a suite option, the classifiers trained
    together and early-stopped on held-out trajectories, the best weights kept."""
    ratio_check_every: int | None = None
    """'gap': classifier steps between gap checks. None: the task family's value from the
    authors' code (velocity 1000, navigation 5000)."""
    ratio_gap_mix: float | None = None
    """'gap': c_mix stops once mean c_mix(D_MIX) - mean c_mix(D_UN) exceeds this. None: the
    task family's value from the authors' code (0.2 for both families)."""
    ratio_gap_un: float | None = None
    """'gap': c_un (and the state-action form's c) stops once mean c_un(D_UN) - mean
    c_un(D_MIX) exceeds this. None: the task family's value from the authors' code
    (velocity 0.2, navigation 0.5)."""
    ratio_check_rows: int = 5000
    """'gap': in-sample rows of each set on which the gap is measured, dropout off (5000, as
    the authors' code)."""
    ratio_cache_dir: str | None = None
    """Off (None) by default. A folder where trained classifiers are kept and reused by every
    later run whose classifiers come from the same inputs, as the authors' code reuses them
    for every seed. Keyed by the whole config (this field aside), the task family and
    dimensions, the classifier inputs' content, the device type and the torch version; not
    by the seed: a seed that finds them uses the classifiers of the seed that trained them."""
    ratio_holdout: float = 0.1
    """'heldout': share of each dataset's trajectories held out (suite choice; 0 = none;
    the authors' code holds none out)."""
    ratio_eval_every: int = 1000
    """'heldout': classifier steps between held-out evaluations (suite choice)."""
    ratio_patience: int = 5
    """'heldout': stop after this many evaluations without held-out improvement (suite
    choice)."""
    ratio_quantile_low: float = 0.1
    """tau is clipped below at this quantile (linear interpolation) of the batch's D_MIX
    rows, separately for s and s': in the critic over its D_MIX rows only, in the actor
    over all its rows (10th percentile, as the authors' code)."""
    ratio_quantile_high: float = 0.9
    """tau is clipped above at this quantile, taken as the lower one (90th percentile, as
    the authors' code)."""
    value_form: str = "policy"
    """'policy': V(s) = min_i Q_i(s, a~pi) - alpha log pi, with the target critic for V(s')
    and the actor and the online critic (with its gradient) for the critic's (1 - gamma)
    E[V(s)] term, as the authors' code; 'expectile': the paper's separate V network."""
    expectile: float = 0.7
    """Expectile of the separate V network (value_form='expectile' only; the paper's form)."""
    value_lr: float = 3e-4
    """Adam learning rate of the separate V network (value_form='expectile' only; suite
    choice: the critic's rate)."""
    adv_clip: float = 10.0
    """A = min(Q - V, adv_clip) in the actor's weight, Q and V clipped to +-max_v first
    (10, as the authors' code)."""
    actor_weight: str = "recipe"
    """'recipe': exp-advantage times clip(1/W^2, 0, 100) with the actor batch's unclipped W,
    as the authors' code; 'advantage': exp-advantage only, the paper's max E[exp(A) log pi]
    (the ratio then acts through the critic alone)."""
    inv_w2_clip: float = 100.0
    """1/W^2 is clipped to [0, inv_w2_clip] in the actor's weight (100, as the authors' code;
    W = 0 gives the clip, not inf)."""
    weight_clip: float = 100.0
    """The actor's per-row weight is clipped above at this value (100, as the authors' code)."""
    log_std_min: float = -5.0
    """Lower bound of the policy's log standard deviation (-5, as the authors' code)."""
    log_std_max: float = 2.0
    """Upper bound of the policy's log standard deviation (2, as the authors' code)."""
    log_std_form: str = "tanh"
    """'tanh': log_std = min + (max - min) (tanh(x) + 1) / 2 = -5 + 3.5 (tanh(x) + 1), as the
    authors' code; 'clamp': a hard clamp of x to [min, max] (the baselines' policy)."""
    action_eps: float = 1e-7
    """Dataset actions are clipped to [-1 + eps, 1 - eps] before atanh in log pi(a|s)
    (1e-7, as the authors' code)."""
    log_pi_min_per_dim: float = -5.0
    """The actor loss's log pi(a|s) is clipped below at this times act_dim, with no gradient
    outside the clip (-5 act_dim, as the authors' code)."""
    log_pi_max_per_dim: float = 2.0
    """The actor loss's log pi(a|s) is clipped above at this times act_dim, with no gradient
    outside the clip (2 act_dim, as the authors' code)."""

    def __post_init__(self) -> None:
        for name in ("ratio_check_every", "ratio_check_rows", "ratio_steps"):
            value = getattr(self, name, None)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name}={value!r}; need a positive integer (or leave it unset)")
        if self.ratio_form not in RATIO_FORMS:
            raise ConfigError(f"ratio_form={self.ratio_form!r}; choose one of {RATIO_FORMS}")
        if self.value_form not in VALUE_FORMS:
            raise ConfigError(f"value_form={self.value_form!r}; choose one of {VALUE_FORMS}")
        if self.actor_weight not in ACTOR_WEIGHTS:
            raise ConfigError(f"actor_weight={self.actor_weight!r}; choose one of {ACTOR_WEIGHTS}")
        if self.ratio_stop not in RATIO_STOPS:
            raise ConfigError(f"ratio_stop={self.ratio_stop!r}; choose one of {RATIO_STOPS}")
        if self.log_std_form not in LOG_STD_FORMS:
            raise ConfigError(f"log_std_form={self.log_std_form!r}; choose one of {LOG_STD_FORMS}")
        if not 0 <= self.ratio_quantile_low < self.ratio_quantile_high <= 1:
            raise ConfigError("need 0 <= ratio_quantile_low < ratio_quantile_high <= 1")

    def for_family(self, family: str) -> UNIQConfig:
        """This config with every field left at None set to ``family``'s reference value
        (:data:`FAMILY_DEFAULTS`)."""
        if family not in FAMILY_DEFAULTS:
            raise ConfigError(
                f"task family {family!r} has no UNIQ defaults; known: {sorted(FAMILY_DEFAULTS)}"
            )
        unset = {k: v for k, v in FAMILY_DEFAULTS[family].items() if getattr(self, k) is None}
        return dataclasses.replace(self, **unset)

    @property
    def max_v(self) -> float:
        """max_v = R / (1 - gamma): the values V and the actor's Q are clipped to [-max_v, max_v]."""
        return self.reward_factor / (1 - self.gamma)


def inverse_square_weight(W: torch.Tensor, clip: float) -> torch.Tensor:
    """clip(1 / W^2, 0, clip). W = 0 gives 1/0 = +inf, which the clip turns into ``clip``."""
    return W.square().reciprocal().clamp(max=clip)


def actor_weights(A: torch.Tensor, W: torch.Tensor | None, cfg: UNIQConfig) -> torch.Tensor:
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


class UNIQ(Method):
    """UNIQ: inverse Q-learning away from D_UN, occupancy-corrected with D_MIX."""

    name = "uniq"
    Config = UNIQConfig
    supports_members = True

    def __init__(self, cfg: UNIQConfig, spec, data, device, seed: int, members: int | None = None):
        cfg = cfg.for_family(spec.family)  # None fields -> the family's reference values
        super().__init__(cfg, spec, data, device, seed, members)
        obs_dim, act_dim, h, d, k = spec.obs_dim, spec.act_dim, cfg.hidden, cfg.depth, members
        self.actor = TanhGaussianPolicy(
            obs_dim,
            act_dim,
            h,
            d,
            cfg.log_std_min,
            cfg.log_std_max,
            eps=cfg.action_eps,
            members=k,
            log_std_form=cfg.log_std_form,
        ).to(self.device)
        self.critic = TwinQ(obs_dim, act_dim, h, d, members=k).to(self.device)
        # The reference initialises every network orthogonally with zero biases.
        orthogonal_init_(self.actor)
        orthogonal_init_(self.critic)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        if cfg.value_form == "expectile":
            self.value = orthogonal_init_(mlp(obs_dim, 1, h, d, members=k).to(self.device))
            self.value_opt = torch.optim.Adam(self.value.parameters(), lr=cfg.value_lr)
        if cfg.occupancy_correction:
            in_dim = obs_dim + (act_dim if cfg.ratio_form == "state_action" else 0)
            names = ("c_mix", "c_un") if cfg.ratio_form == "state" else ("c",)  # training order
            for n in names:  # c_un: P(UN | x); c_mix: P(MIX | x); c: P(UN | s, a)
                net = orthogonal_init_(mlp(in_dim, 1, h, d, dropout=cfg.ratio_dropout, members=k))
                setattr(self, n, net.to(self.device))
            self.classifiers = names
            params = [p for n in names for p in getattr(self, n).parameters()]
            self.ratio_opt = torch.optim.Adam(
                params, lr=cfg.ratio_lr, weight_decay=cfg.ratio_weight_decay
            )
            self._set_classifiers_frozen(True)
        self.ratio_q = (cfg.ratio_quantile_low, cfg.ratio_quantile_high)
        self._tau: dict[str, torch.Tensor] = {}
        """Per source, tau of every row: [N, 2] (tau(s), tau(s')) or [N, 1] (tau(s, a));
        [K, N, ...] when batched (each member's classifiers)."""
        if members is not None:  # member k's rows of a [K, N, ...] table: table[_members, index]
            self._members = torch.arange(members, device=self.device).unsqueeze(-1)

    def batches(self) -> dict[str, tuple[str, int]]:
        cfg = self.cfg
        return {"mix": ("mix", max(cfg.batch_mix, cfg.actor_batch)), "un": ("un", cfg.batch_un)}

    # ------------------------------------------------------------------ ratio estimation
    def _set_classifiers_frozen(self, frozen: bool) -> None:
        for n in self.classifiers:
            getattr(self, n).train(not frozen).requires_grad_(not frozen)

    def _features(self, t: dict[str, torch.Tensor], next_state: bool = False) -> torch.Tensor:
        if self.cfg.ratio_form == "state_action":
            return torch.cat([t["observations"], t["actions"]], -1)
        return t["next_observations" if next_state else "observations"]

    def _probs(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(net(x).squeeze(-1)).clamp(
            self.cfg.ratio_prob_min, self.cfg.ratio_prob_max
        )

    def occupancy_ratio(self, x: torch.Tensor) -> torch.Tensor:
        """tau = rho_UN / rho_MIX of classifier inputs x (states, or (s, a) concatenated)."""
        if self.cfg.ratio_form == "state":
            return self._probs(self.c_un, x) / self._probs(self.c_mix, x)
        c = self._probs(self.c, x)
        return c / (1 - c)

    def _bce(self, name: str, x_un: torch.Tensor, x_mix: torch.Tensor) -> torch.Tensor:
        """BCE of classifier ``name`` (label UN for c_un and c, MIX for c_mix), the mean over
        each class summed: E_UN[bce] + E_MIX[bce], as the reference (balanced even when the
        two sets differ in size)."""
        x = torch.cat([x_un, x_mix])
        is_un = torch.cat([x_un.new_ones(len(x_un)), x_mix.new_zeros(len(x_mix))])
        target = 1 - is_un if name == "c_mix" else is_un
        bce = F.binary_cross_entropy(self._probs(getattr(self, name), x), target, reduction="none")
        return bce[: len(x_un)].mean() + bce[len(x_un) :].mean()

    def _classifier_loss(self, x_un: torch.Tensor, x_mix: torch.Tensor) -> torch.Tensor:
        """The classifiers' BCEs (:meth:`_bce`) summed."""
        return sum(self._bce(n, x_un, x_mix) for n in self.classifiers)

    def _gap(self, name: str, x_un: torch.Tensor, x_mix: torch.Tensor) -> float:
        """Mean output of classifier ``name`` on its positive rows minus on its negative ones
        (c_mix: D_MIX positive; c_un, c: D_UN positive), dropout off."""
        net = getattr(self, name)
        net.eval()
        with torch.no_grad():
            p_un, p_mix = self._probs(net, x_un).mean(), self._probs(net, x_mix).mean()
        net.train()
        return float(p_mix - p_un if name == "c_mix" else p_un - p_mix)

    def _holdout_split(self, t: dict[str, torch.Tensor], gen: torch.Generator):
        """(train rows, held-out rows): whole trajectories held out, so no near-duplicate leaks."""
        n = len(t["observations"])
        frac = self.cfg.ratio_holdout
        traj = torch.cumsum(t["initial"], 0).long() - 1  # trajectory id of each row
        n_traj = int(traj[-1]) + 1
        rows = torch.arange(n, device=self.device)
        if frac <= 0 or n < 2:
            return rows, rows[:0]
        if n_traj >= 2:
            n_hold = min(n_traj - 1, max(1, round(frac * n_traj)))
            held = torch.randperm(n_traj, generator=gen, device=self.device)[:n_hold]
            mask = torch.isin(traj, held)
        else:  # a single trajectory: hold out rows instead
            mask = torch.zeros(n, dtype=torch.bool, device=self.device)
            mask[
                torch.randperm(n, generator=gen, device=self.device)[: max(1, round(frac * n))]
            ] = True
        return rows[~mask], rows[mask]

    def pretrain(self) -> dict[str, float]:
        """Train the ratio classifiers (``ratio_stop``: the reference's gap rule, or held-out
        early stopping), freeze them and cache tau of every row."""
        if not self.cfg.occupancy_correction:
            return {}
        cache = self._ratio_cache_path()
        if cache is not None and cache.exists():
            payload = torch.load(cache, map_location=self.device, weights_only=False)
            for n in self.classifiers:
                getattr(self, n).load_state_dict(payload["state"][n])
            info = dict(payload["info"], ratio_cached=1.0)
        else:
            info = (
                self._pretrain_gap() if self.cfg.ratio_stop == "gap" else self._pretrain_heldout()
            )
            if cache is not None:
                state = {n: getattr(self, n).state_dict() for n in self.classifiers}
                with atomic_path(cache) as tmp:  # a run in parallel may write too: either wins
                    torch.save({"state": state, "info": info}, tmp)
                info = dict(info, ratio_cached=0.0)
        self._set_classifiers_frozen(True)
        self._cache_ratios()
        # E_MIX[tau] = 1 for the true ratio: a check of the estimate's calibration
        info["ratio_mean_mix"] = float(self._tau["mix"][:, 0].mean())
        info["ratio_mean_un"] = float(self._tau["un"][:, 0].mean())
        return info

    def _ratio_cache_path(self) -> Path | None:
        """``ratio_cache_dir``/<sha256 of what determines the classifiers but the seed>.pt."""
        cfg = self.cfg
        if cfg.ratio_cache_dir is None:
            return None
        h = hashlib.sha256()
        key = {
            "format": 1,
            "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "ratio_cache_dir"},
            "family": self.spec.family,
            "dims": [self.spec.obs_dim, self.spec.act_dim],
            "device": self.device.type,
            "torch": torch.__version__,
        }
        h.update(json.dumps(key, sort_keys=True).encode())
        for source in ("un", "mix"):  # the classifiers' inputs and, for 'heldout', trajectories
            t = self.data[source].tensors
            for x in (self._features(t), t["initial"]):
                h.update(str((x.dtype, tuple(x.shape))).encode())
                h.update(x.detach().cpu().contiguous().numpy().tobytes())
        return Path(cfg.ratio_cache_dir) / f"uniq_ratio_{h.hexdigest()[:32]}.pt"

    def _pretrain_gap(self) -> dict[str, float]:
        """The reference's rule: each classifier in turn (c_mix, then c_un; or c), BCE steps on
        ``ratio_batch`` rows of each set; every ``ratio_check_every`` steps the gap
        (:meth:`_gap`) on ``ratio_check_rows`` in-sample rows of each set; stop once it
        exceeds the classifier's threshold or after ``ratio_steps``; keep the last weights.

        Logs the settings used (the family's values where the config left None) and, per
        classifier, the steps run, the final gap and the last batch loss.
        """
        cfg, dev = self.cfg, self.device
        gen = self.data["mix"].generator
        x_un, x_mix = (
            self._features(self.data["un"].tensors),
            self._features(self.data["mix"].tensors),
        )
        info: dict[str, float] = {
            "ratio_check_every": cfg.ratio_check_every,
            "ratio_gap_mix": cfg.ratio_gap_mix,
            "ratio_gap_un": cfg.ratio_gap_un,
        }
        for name in self.classifiers:
            threshold = cfg.ratio_gap_mix if name == "c_mix" else cfg.ratio_gap_un
            check_un = x_un[
                torch.randperm(len(x_un), generator=gen, device=dev)[: cfg.ratio_check_rows]
            ]
            check_mix = x_mix[
                torch.randperm(len(x_mix), generator=gen, device=dev)[: cfg.ratio_check_rows]
            ]
            getattr(self, name).train().requires_grad_(True)
            step, loss = 0, torch.tensor(float("nan"))
            for step in range(1, cfg.ratio_steps + 1):
                i_un = torch.randint(len(x_un), (cfg.ratio_batch,), generator=gen, device=dev)
                i_mix = torch.randint(len(x_mix), (cfg.ratio_batch,), generator=gen, device=dev)
                loss = self._bce(name, x_un[i_un], x_mix[i_mix])
                self.ratio_opt.zero_grad(set_to_none=True)
                loss.backward()
                self.ratio_opt.step()
                if (
                    step % cfg.ratio_check_every == 0
                    and self._gap(name, check_un, check_mix) > threshold
                ):
                    break
            getattr(self, name).requires_grad_(False)
            info[f"ratio_steps_{name}"] = step
            info[f"ratio_final_gap_{name}"] = self._gap(name, check_un, check_mix)
            info[f"ratio_train_loss_{name}"] = float(loss.detach())
        return info

    def _pretrain_heldout(self) -> dict[str, float]:
        """Suite option: the classifiers trained together on the rows outside held-out
        trajectories, early-stopped on the held-out loss (patience ``ratio_patience``
        evaluations, every ``ratio_eval_every`` steps); the best weights kept."""
        cfg = self.cfg
        un, mix = self.data["un"].tensors, self.data["mix"].tensors
        gen = self.data["mix"].generator
        x_un, x_mix = self._features(un), self._features(mix)
        (tr_un, ho_un), (tr_mix, ho_mix) = (
            self._holdout_split(un, gen),
            self._holdout_split(mix, gen),
        )
        cap = 16_384  # held-out rows evaluated per set: bounds the cost of each evaluation
        ho_un, ho_mix = ho_un[:cap], ho_mix[:cap]
        early_stopping = len(ho_un) > 0 and len(ho_mix) > 0
        best, best_state, bad, heldout = float("inf"), None, 0, float("nan")
        self._set_classifiers_frozen(False)
        step = 0
        for step in range(1, cfg.ratio_steps + 1):
            i_un = tr_un[
                torch.randint(len(tr_un), (cfg.ratio_batch,), generator=gen, device=self.device)
            ]
            i_mix = tr_mix[
                torch.randint(len(tr_mix), (cfg.ratio_batch,), generator=gen, device=self.device)
            ]
            loss = self._classifier_loss(x_un[i_un], x_mix[i_mix])
            self.ratio_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.ratio_opt.step()
            if early_stopping and (step % cfg.ratio_eval_every == 0 or step == cfg.ratio_steps):
                self._set_classifiers_frozen(True)
                with torch.no_grad():
                    heldout = float(self._classifier_loss(x_un[ho_un], x_mix[ho_mix]))
                self._set_classifiers_frozen(False)
                if heldout < best - 1e-5:
                    best, bad = heldout, 0
                    best_state = {
                        n: copy.deepcopy(getattr(self, n).state_dict()) for n in self.classifiers
                    }
                else:
                    bad += 1
                    if bad >= cfg.ratio_patience:
                        break
        if best_state is not None:
            for n, state in best_state.items():
                getattr(self, n).load_state_dict(state)
        self._set_classifiers_frozen(True)
        acc = float("nan")
        if early_stopping:
            with torch.no_grad():
                tau_un = self.occupancy_ratio(x_un[ho_un])
                tau_mix = self.occupancy_ratio(x_mix[ho_mix])
            acc = 0.5 * float((tau_un > 1).float().mean() + (tau_mix <= 1).float().mean())
        return {
            "ratio_steps_run": step,
            "ratio_train_loss": float(loss.detach()),
            "ratio_heldout_loss": best if best_state is not None else heldout,
            "ratio_heldout_balanced_acc": acc,
        }

    @torch.no_grad()
    def _cache_ratios(self, chunk: int = 65_536) -> None:
        """tau of every row of D_MIX and D_UN (and of its next state), with frozen classifiers."""
        k = self.members
        for source in ("mix", "un"):
            t = self.data[source].tensors
            xs = [self._features(t)] + (
                [self._features(t, True)] if self.cfg.ratio_form == "state" else []
            )
            cols = [
                torch.cat(
                    [
                        self.occupancy_ratio(
                            x[i : i + chunk] if k is None else x[i : i + chunk].expand(k, -1, -1)
                        )
                        for i in range(0, len(x), chunk)
                    ],
                    -1,
                )
                for x in xs
            ]
            self._tau[source] = torch.stack(cols, -1)

    def adopt(self, plains: list[UNIQ]) -> None:
        super().adopt(plains)
        if self.cfg.occupancy_correction:  # as load_state_dict does: a resume gets the same tau
            self._set_classifiers_frozen(True)
            self._cache_ratios()

    def _gather_tau(self, source: str, index: torch.Tensor) -> torch.Tensor:
        """tau of the sampled rows (each member's own tau and rows when batched)."""
        tau = self._tau[source]
        return tau[index] if self.members is None else tau[self._members, index]

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        if self.cfg.occupancy_correction:
            self._set_classifiers_frozen(True)
            self._cache_ratios()

    # ------------------------------------------------------------------ weights
    def _weights(self, mix: dict, un: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(W on the critic batch [mix[:batch_mix]; un], W on the actor batch mix[:actor_batch]).

        W = w(s) + gamma w(s') (state form; (1 + gamma) w(s, a) for the state-action form),
        w scaled by :func:`scale_ratio` with quantiles taken separately for s and s' over the
        batch's D_MIX rows only: in the critic its ``batch_mix`` rows (D_UN rows are scaled
        by them, so mostly land at -R), in the actor all its rows. The critic's W is then
        clipped to [-R, R] (so to [-R, 0]); the actor's is not, as in the reference.
        """
        cfg, R, g = self.cfg, self.cfg.reward_factor, self.cfg.gamma
        m_c, m_a = cfg.batch_mix, cfg.actor_batch
        if not cfg.occupancy_correction:
            lead, obs_un = mix["observations"].shape[:-2], un["observations"]
            W_c = torch.cat(
                [
                    obs_un.new_zeros((*lead, m_c)),
                    # -R: the most undesirable weight the corrected critic's clip allows
                    obs_un.new_full((*lead, obs_un.shape[-2]), -R),
                ],
                -1,
            )
            return W_c, obs_un.new_zeros((*lead, m_a))

        def transition_weight(tau: torch.Tensor, n_ref: int) -> torch.Tensor:
            # tau [..., rows, (s, s')] -> [..., (s, s'), rows]: one scale per column (and
            # member), from the first n_ref rows (the D_MIX ones)
            t = tau.transpose(-1, -2)
            w = scale_ratio(t, self.ratio_q, R, ref=t[..., :n_ref])
            return w[..., 0, :] + g * w[..., 1, :] if t.shape[-2] == 2 else (1 + g) * w[..., 0, :]

        tau_mix = self._gather_tau("mix", mix["index"])
        tau_c = torch.cat([tau_mix[..., :m_c, :], self._gather_tau("un", un["index"])], -2)
        W_critic = transition_weight(tau_c, m_c).clamp(-R, R)
        return W_critic, transition_weight(tau_mix[..., :m_a, :], m_a)

    def actor_weights(self, A: torch.Tensor, W_act: torch.Tensor) -> torch.Tensor:
        """The actor's weights (:func:`actor_weights`) with the 1/W^2 factor where the config
        has one: the recipe's form with occupancy correction."""
        cfg = self.cfg
        use_w = cfg.occupancy_correction and cfg.actor_weight == "recipe"
        return actor_weights(A, W_act if use_w else None, cfg)

    # ------------------------------------------------------------------ update
    def update(self, batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        # Rows are dim -2 of features and dim -1 of per-row scalars, behind an optional
        # leading member dim; every mean/max over a batch is per member (dim -1).
        cfg, g = self.cfg, self.cfg.gamma
        mix, un = batch["mix"], batch["un"]
        m_c, m_a = cfg.batch_mix, cfg.actor_batch

        s = torch.cat([mix["observations"][..., :m_c, :], un["observations"]], -2)
        a = torch.cat([mix["actions"][..., :m_c, :], un["actions"]], -2)
        s_next = torch.cat([mix["next_observations"][..., :m_c, :], un["next_observations"]], -2)
        not_done = 1 - torch.cat([mix["terminals"][..., :m_c], un["terminals"]], -1)
        s_act, a_act = mix["observations"][..., :m_a, :], mix["actions"][..., :m_a, :]
        n = s.shape[-2]

        # The actor's forward pass on D_MIX (with grad) also gives pi(.|s) for V on those states.
        mean, log_std = self.actor(mix["observations"])
        with torch.no_grad():
            W, W_act = self._weights(mix, un)
            if cfg.value_form == "policy":
                a_pi, logp_pi, V_next, V_act, Q_act = self._soft_values(
                    mean, log_std, un["observations"], s_next, s_act, a_act
                )
            else:
                v = self.value(torch.cat([s, s_next, s_act], -2)).squeeze(-1)
                V_s, V_next, V_act = v.split([n, n, m_a], -1)
                Q_all = self.critic_target.min_q(
                    torch.cat([s, s_act], -2), torch.cat([a, a_act], -2)
                )
                Q_sa, Q_act = Q_all.split([n, m_a], -1)
                V_next = V_next.clamp(-cfg.max_v, cfg.max_v)
                V_act = V_act.clamp(-cfg.max_v, cfg.max_v)
            Q_act = Q_act.clamp(-cfg.max_v, cfg.max_v)
            target = g * not_done * V_next

        # Critic, per Q head i: L_i = -E[W r_i] + 1/2 E[r_i^2] + (1 - gamma) E[V(s)].
        if cfg.value_form == "policy":
            # V(s) through the online critic (gradient into it; a ~ pi is a constant): its
            # forward shares one call with Q(s, a)
            q = torch.stack(self.critic(torch.cat([s, s], -2), torch.cat([a, a_pi], -2)))
            Q, V_s = q[..., :n], q[..., n:].amin(0) - cfg.alpha * logp_pi
        else:  # the separate V network's V(s): a constant for the critic
            Q = torch.stack(self.critic(s, a))
        r = Q - target  # [2 heads, (K,) batch]
        v_mean = V_s.mean(-1)
        critic_loss = (
            -(W * r).mean(-1)  # low implicit reward where rho_UN is
            + 0.5 * r.square().mean(-1)  # chi^2 regularizer
            + (1 - g) * v_mean  # the initial-state value term
        ).mean(0)  # per member
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.sum().backward()  # sum over members: each gets its own gradient
        self.critic_opt.step()

        out = {}
        if cfg.value_form == "expectile":
            u = Q_sa - self.value(s).squeeze(-1)
            value_loss = (torch.abs(cfg.expectile - (u < 0).float()) * u.square()).mean(-1)
            self.value_opt.zero_grad(set_to_none=True)
            value_loss.sum().backward()
            self.value_opt.step()
            out["value_loss"] = value_loss.detach()

        # Actor: weighted BC on D_MIX.
        with torch.no_grad():
            weight = self.actor_weights(Q_act - V_act, W_act)
        actor_loss = self.actor_loss(mean[..., :m_a, :], log_std[..., :m_a, :], a_act, weight)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.sum().backward()
        self.actor_opt.step()

        soft_update(self.critic_target, self.critic, cfg.tau)
        r = r[0].detach()
        out.update(
            critic_loss=critic_loss.detach(),
            actor_loss=actor_loss.detach(),
            v_mean=v_mean.detach(),
            reward_mix=r[..., :m_c].mean(-1),  # implicit reward: should end lower on D_UN
            reward_un=r[..., m_c:].mean(-1),
            actor_weight_max=weight.amax(-1),
        )
        return out

    def actor_loss(
        self, mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """L_pi = -mean(weight * clip(log pi(a|s), -5 act_dim, 2 act_dim)) per member, from the
        policy's (mean, log_std) on the actor batch and its dataset actions.

        torch.clip passes no gradient outside the range: rows whose likelihood already fits
        (above) and far outliers (below) stop pulling on the policy.
        """
        cfg, act_dim = self.cfg, self.spec.act_dim
        log_pi = self.actor.dist_log_prob(mean, log_std, actions)
        log_pi = log_pi.clip(cfg.log_pi_min_per_dim * act_dim, cfg.log_pi_max_per_dim * act_dim)
        return -(weight * log_pi).mean(-1)

    def _soft_values(self, mean, log_std, s_un, s_next, s_act, a_act):
        """The policy's samples and the target critic's values an update needs, with every
        target-critic evaluation in one call:

        - a ~ pi(.|s) and log pi on the critic batch's states (for the online V(s));
        - V(s') = clip(Q_target(s', a') - alpha log pi(a'|s'), +-max_v) on its next states;
        - V(s) = clip(Q_target(s, a~pi) - alpha log pi, +-max_v) and Q_target(s, a) (clipped
          by the caller) on the actor batch (s_act, a_act).

        ``mean, log_std``: the policy on the D_MIX rows, whose first ``batch_mix`` are the
        critic's and first ``actor_batch`` the actor's, so one sample serves both.
        """
        cfg = self.cfg
        m_c, m_a, n_un = cfg.batch_mix, cfg.actor_batch, s_un.shape[-2]
        a_mix, logp_mix = self.actor.dist_sample(mean.detach(), log_std.detach())
        a_other, logp_other = self.actor.sample(torch.cat([s_un, s_next], -2))
        a_un, a_next = a_other.split([n_un, s_next.shape[-2]], -2)
        logp_un, logp_next = logp_other.split([n_un, s_next.shape[-2]], -1)
        q = self.critic_target.min_q(
            torch.cat([s_next, s_act, s_act], -2),
            torch.cat([a_next, a_mix[..., :m_a, :], a_act], -2),
        )
        q_next, q_pi, Q_act = q.split([s_next.shape[-2], m_a, m_a], -1)
        V_next = (q_next - cfg.alpha * logp_next).clamp(-cfg.max_v, cfg.max_v)
        V_act = (q_pi - cfg.alpha * logp_mix[..., :m_a]).clamp(-cfg.max_v, cfg.max_v)
        a_pi = torch.cat([a_mix[..., :m_c, :], a_un], -2)
        logp_pi = torch.cat([logp_mix[..., :m_c], logp_un], -1)
        return a_pi, logp_pi, V_next, V_act, Q_act
