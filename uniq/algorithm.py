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

Where each part lives: 1. the classifiers and their stop rule in :mod:`uniq.ratio`; the
weights W and the actor's weight as pure functions in :mod:`uniq.weights`; 2.-3. the losses
in :mod:`uniq.losses`; this module holds the config, the networks and the update that wires
them together (the class the registry sees).

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
from dataclasses import dataclass

import torch

from uniq import losses
from uniq.compiled import adam, compiled
from uniq.method import ConfigError, Method
from uniq.nets import LOG_STD_FORMS, TanhGaussianPolicy, TwinQ, mlp, orthogonal_init_, soft_update
from uniq.ratio import RatioEstimator
from uniq.weights import (  # noqa: F401  (public: the weight functions' one home is uniq.weights)
    ablation_weights,
    actor_weights,
    batch_weights,
    inverse_square_weight,
    quantiles,
    scale_ratio,
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
    compile: bool = False
    """Compile the update (suite choice; see uniq.compiled): its loss with torch.compile
    and fused Adam steps, the same numbers within a float tolerance, 1.1-1.2x faster on
    one CPU thread (measured by the update benchmark). Off by default until the whole
    test suite and workflow run with it (tests that replace torch's random functions need
    the eager update, and each job pays a compile warm-up). False: the eager update, bit
    for bit that of earlier runs."""

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


class UNIQ(Method):
    """UNIQ: inverse Q-learning away from D_UN, occupancy-corrected with D_MIX.

    The networks and the update; the ratio lives in :mod:`uniq.ratio`, the weights in
    :mod:`uniq.weights`, the losses in :mod:`uniq.losses`.
    """

    name = "uniq"
    display_name = "UNIQ"
    Config = UNIQConfig
    supports_members = True

    def __init__(self, cfg: UNIQConfig, spec, data, device, seed: int, members: int | None = None):
        cfg = cfg.for_family(spec.family)  # None fields -> the family's reference values
        super().__init__(cfg, spec, data, device, seed, members)
        obs_dim, act_dim, h, d, k = spec.obs_dim, spec.act_dim, cfg.hidden, cfg.depth, members
        self.actor = TanhGaussianPolicy(
            obs_dim, act_dim, h, d, cfg.log_std_min, cfg.log_std_max, eps=cfg.action_eps,
            members=k, log_std_form=cfg.log_std_form,
        ).to(self.device)  # fmt: skip
        self.critic = TwinQ(obs_dim, act_dim, h, d, members=k).to(self.device)
        # The reference initialises every network orthogonally with zero biases.
        orthogonal_init_(self.actor)
        orthogonal_init_(self.critic)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = adam(self.actor.parameters(), cfg.compile, lr=cfg.actor_lr)
        self.critic_opt = adam(self.critic.parameters(), cfg.compile, lr=cfg.critic_lr)
        if cfg.value_form == "expectile":
            self.value = orthogonal_init_(mlp(obs_dim, 1, h, d, members=k).to(self.device))
            self.value_opt = adam(self.value.parameters(), cfg.compile, lr=cfg.value_lr)
        self.ratio: RatioEstimator | None = None
        if cfg.occupancy_correction:
            self.ratio = RatioEstimator(cfg, spec.family, (obs_dim, act_dim), self.device, k)
            # Held under their own names too, so checkpoints (and Method.adopt) see them.
            for n, net in self.ratio.nets.items():
                setattr(self, n, net)
            self.ratio_opt = self.ratio.opt
            self.classifiers = self.ratio.names
        self._optimizers = [self.critic_opt, self.actor_opt]
        if cfg.value_form == "expectile":
            self._optimizers.append(self.value_opt)
        self._loss_fn = compiled(self.update_loss, cfg.compile, self.device, "uniq")
        self.ratio_q = (cfg.ratio_quantile_low, cfg.ratio_quantile_high)
        self._tau: dict[str, torch.Tensor] = {}
        """Per source, tau of every row (:meth:`uniq.ratio.RatioEstimator.table`)."""
        if members is not None:  # member k's rows of a [K, N, ...] table: table[_members, index]
            self._members = torch.arange(members, device=self.device).unsqueeze(-1)

    def batches(self) -> dict[str, tuple[str, int]]:
        cfg = self.cfg
        return {"mix": ("mix", max(cfg.batch_mix, cfg.actor_batch)), "un": ("un", cfg.batch_un)}

    # ------------------------------------------------------------------ ratio
    def pretrain(self) -> dict[str, float]:
        """Train the ratio classifiers (:class:`uniq.ratio.RatioEstimator`), freeze them and
        keep tau of every row."""
        if self.ratio is None:
            return {}
        info = self.ratio.fit(self.data)
        self._tau = self.ratio.table(self.data)
        # E_MIX[tau] = 1 for the true ratio: a check of the estimate's calibration
        info["ratio_mean_mix"] = float(self._tau["mix"][:, 0].mean())
        info["ratio_mean_un"] = float(self._tau["un"][:, 0].mean())
        return info

    def occupancy_ratio(self, x: torch.Tensor) -> torch.Tensor:
        """tau = rho_UN / rho_MIX of classifier inputs x (states, or (s, a) concatenated)."""
        return self.ratio.occupancy_ratio(x)

    def _features(self, t: dict[str, torch.Tensor], next_state: bool = False) -> torch.Tensor:
        return self.ratio.features(t, next_state)

    def adopt(self, plains: list[UNIQ]) -> None:
        super().adopt(plains)
        if self.ratio is not None:  # as load_state_dict does: a resume gets the same tau
            self.ratio.set_frozen(True)
            self._tau = self.ratio.table(self.data)

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        if self.ratio is not None:
            self.ratio.set_frozen(True)
            self._tau = self.ratio.table(self.data)

    def _gather_tau(self, source: str, index: torch.Tensor) -> torch.Tensor:
        """tau of the sampled rows (each member's own tau and rows when batched)."""
        tau = self._tau[source]
        return tau[index] if self.members is None else tau[self._members, index]

    # ------------------------------------------------------------------ weights
    def _weights(self, mix: dict, un: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(W on the critic batch [mix[:batch_mix]; un], W on the actor batch
        mix[:actor_batch]): :func:`uniq.weights.batch_weights`, or the ablation's
        :func:`uniq.weights.ablation_weights` without occupancy correction."""
        cfg, R = self.cfg, self.cfg.reward_factor
        if not cfg.occupancy_correction:
            obs_un = un["observations"]
            lead = mix["observations"].shape[:-2]
            return ablation_weights(
                obs_un, lead, cfg.batch_mix, obs_un.shape[-2], cfg.actor_batch, R
            )
        tau_mix, tau_un = self._gather_tau("mix", mix["index"]), self._gather_tau("un", un["index"])
        return batch_weights(
            tau_mix, tau_un, cfg.batch_mix, cfg.actor_batch, self.ratio_q, R, cfg.gamma
        )

    @property
    def weighs_by_occupancy(self) -> bool:
        """Whether the actor's weight has the 1/W^2 factor: the recipe's form with occupancy
        correction."""
        return self.cfg.occupancy_correction and self.cfg.actor_weight == "recipe"

    def actor_weights(self, A: torch.Tensor, W_act: torch.Tensor | None) -> torch.Tensor:
        """The actor's weights (:func:`uniq.weights.actor_weights`) with the 1/W^2 factor
        where the config has one (:attr:`weighs_by_occupancy`; ``W_act`` None: without)."""
        return actor_weights(A, W_act if self.weighs_by_occupancy else None, self.cfg)

    # ------------------------------------------------------------------ update
    def update(self, batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        loss, out = self._loss_fn(batch)
        for opt in self._optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in self._optimizers:
            opt.step()
        soft_update(self.critic_target, self.critic, self.cfg.tau)
        return out

    def update_loss(
        self, batch: dict[str, dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(L, logged scalars) of one update: L = sum over members of L_Q + L_pi (+ L_V).

        Each loss reaches only its own network's parameters (the actor's weights, V and
        the targets are constants for it), so one backward of the sum gives every network
        exactly the gradient of its own loss, and the optimizer steps are independent."""
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

        # Critic (losses.critic_loss): L_i = -E[W r_i] + 1/2 E[r_i^2] + (1 - gamma) E[V(s)].
        if cfg.value_form == "policy":
            # V(s) through the online critic (gradient into it; a ~ pi is a constant): its
            # forward shares one call with Q(s, a)
            q = torch.stack(self.critic(torch.cat([s, s], -2), torch.cat([a, a_pi], -2)))
            Q, V_s = q[..., :n], q[..., n:].amin(0) - cfg.alpha * logp_pi
        else:  # the separate V network's V(s): a constant for the critic
            Q = torch.stack(self.critic(s, a))
        r = Q - target  # implicit reward, [2 heads, (K,) batch]
        critic_loss, v_mean = losses.critic_loss(W, r, V_s, g)
        total = critic_loss.sum()  # sum over members: each gets its own gradient

        out = {}
        if cfg.value_form == "expectile":
            value_loss = losses.expectile_loss(Q_sa - self.value(s).squeeze(-1), cfg.expectile)
            total = total + value_loss.sum()
            out["value_loss"] = value_loss.detach()

        # Actor: weighted BC on D_MIX.
        with torch.no_grad():
            weight = self.actor_weights(Q_act - V_act, W_act)
        actor_loss = self.actor_loss(mean[..., :m_a, :], log_std[..., :m_a, :], a_act, weight)
        total = total + actor_loss.sum()

        r = r[0].detach()
        out.update(
            critic_loss=critic_loss.detach(),
            actor_loss=actor_loss.detach(),
            v_mean=v_mean.detach(),
            reward_mix=r[..., :m_c].mean(-1),  # implicit reward: should end lower on D_UN
            reward_un=r[..., m_c:].mean(-1),
            actor_weight_max=weight.amax(-1),
        )
        return total, out

    def actor_loss(
        self, mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """:func:`uniq.losses.actor_loss` per member, from the policy's (mean, log_std) on
        the actor batch and its dataset actions (log pi clipped to [-5, 2] act_dim)."""
        cfg, act_dim = self.cfg, self.spec.act_dim
        log_pi = self.actor.dist_log_prob(mean, log_std, actions)
        return losses.actor_loss(
            log_pi, weight, cfg.log_pi_min_per_dim * act_dim, cfg.log_pi_max_per_dim * act_dim
        )

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
