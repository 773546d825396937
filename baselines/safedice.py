r"""SafeDICE (Jang et al. 2023): imitate D_MIX with the undesirable occupancy taken out.

1. Classifier (pretrained, then frozen). c(s, a) separates D_UN ("real", label 1) from D_MIX
   (label 0) on balanced batches, with a gradient penalty (weight 10):

       L_c = -E_UN[log s] - E_MIX[log(1 - s)] + 10 E_x^[(||grad_x c(x^)|| - 1)^2],
       s = sigmoid(c),  x^ = u x_UN + (1 - u) x_MIX  and  u x_MIX' + (1 - u) x_MIX (shuffled)

   At the optimum s = d_UN / (d_UN + d_MIX), so d_UN / d_MIX = s / (1 - s).

2. Target occupancy and reward. d* = (d_MIX - alpha d_UN) / (1 - alpha) removes an alpha share
   of undesirable occupancy from the mix. d* >= 0 on the data iff alpha <= d_MIX/d_UN =
   (1 - s)/s = exp(-c) on every D_MIX row, so

       alpha = clip(min(1, exp(-max_{D_MIX} c)) - 1e-5,  0,  1 - 1e-5)

   (as the reference code, plus the clip). The margin keeps 1 - alpha exp(c) >= 1e-5 exp(c) > 0
   on the argmax row, so the reward's log stays finite; with the cap, 1 - alpha >= 1e-5, so
   log(1 - alpha) >= log(1e-5). The reward is the log-ratio of target to data occupancy:

       r = log(d*/d_MIX) = log((1 - alpha exp(c)) / (1 - alpha))
         = log((1 - (1 + alpha) s) / ((1 - alpha)(1 - s)))

   the second form being the paper's and the reference code's; r is then standardized with its
   mean and standard deviation over D_MIX (computed once, after pretraining).

   Both are computed from the logit c in float64, never from s: a classifier that saturates
   on some D_MIX row (c > 16.6 rounds s to 1 in float32) would make (1 - s)/s exactly 0 and
   the raw alpha -1e-5, the reward log(x / 0) infinite. More generally the raw alpha is
   negative whenever max c > log(1/1e-5) ~ 11.5: the classifier claims a D_MIX row is
   (almost) certainly D_UN's, so no positive share can be removed without d* < 0 there.
   alpha is then clipped to 0 (d* = d_MIX, r = 0: SafeDICE falls back to BC on D_MIX) and
   a warning names the raw value.

3. Value nu(s), the dual of max_d E_d[r] - KL(d || d_MIX) under the Bellman flow constraints:

       L_nu = logsumexp_batch(A) + (1 - gamma) E_{s0}[nu(s0)] + 1e-6 E_x^[||grad_x nu(x^)||^2],
       A = r + gamma (1 - done) nu(s') - nu(s)   on D_MIX,

   s0 the first states of D_MIX trajectories, x^ the D_MIX states and interpolations of
   D_UN/D_MIX states and next states.

4. Policy: weighted BC on D_MIX with w = exp(A - 1) / mean_batch exp(A - 1) (= B softmax(A)):

       L_pi = -E_MIX[w log pi(a|s)].

Batched over seeds (``members=K``): alpha and the reward statistics are per member
(``[K, 1]`` tensors, from each member's own classifier), logsumexp and softmax per member.

Published: 2x256 MLPs, batch 512, lr 1e-4 (nu, classifier), 1e-5 (actor), gamma 0.99,
100k classifier steps, gradient penalties (10, 1e-6).

Small departures from the authors' code (jys5609/SafeDICE, algorithms/utils.py), kept because
the suite's networks are shared by every method: PyTorch's default layer init with output
biases (theirs: he_normal, zero biases, no output bias on the classifier and nu; nu's output
bias does not enter its loss); the actor's mean is not clipped to [-7, 7], dataset actions are
clamped to 1 - 1e-5 before atanh (theirs: float32 eps) and the tanh correction is the exact
log(1 - tanh(u)^2) (theirs: log(1 - a^2 + eps)); evaluation takes the deterministic action
tanh(mean), as for every method here (their Safety-Gym runs default to sampled actions).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from uniq.compiled import adam, compiled
from uniq.method import Method
from uniq.nets import BatchedLinear, TanhGaussianPolicy, mlp

log = logging.getLogger(__name__)
PROGRESS_EVERY = 10_000
"""Classifier steps between two progress lines in the log."""


@dataclass
class SafeDICEConfig:
    batch_size: int = 512
    """Transitions per step from each of D_UN and D_MIX (published 512)."""
    gamma: float = 0.99
    """Discount of the occupancy (published 0.99)."""
    actor_lr: float = 1e-5
    """Adam learning rate of the policy (published 1e-5)."""
    nu_lr: float = 1e-4
    """Adam learning rate of the value nu (published 1e-4)."""
    classifier_lr: float = 1e-4
    """Adam learning rate of the classifier (published 1e-4)."""
    classifier_steps: int = 100_000
    """Classifier pretraining steps before it is frozen (published 100k; smoke runs use few)."""
    classifier_gp: float = 10.0
    """Weight of the classifier's gradient penalty (||grad|| - 1)^2 (published 10)."""
    nu_gp: float = 1e-6
    """Weight of nu's gradient penalty ||grad||^2 (published 1e-6)."""
    alpha_margin: float = 1e-5
    """alpha = min(1, exp(-max c)) - alpha_margin keeps the reward finite (reference: 1e-5)."""
    hidden: int = 256
    """Width of every MLP's hidden layers (published 256)."""
    depth: int = 2
    """Hidden layers of every MLP (published 2)."""
    compile: bool = False
    """Compile the update (suite choice, see uniq.compiled): its loss with torch.compile
    (nu's gradient penalty through the written-out input gradient, which it can trace) and
    fused Adam steps, the same numbers within a float tolerance. False: the eager update
    (the penalty by double backward), bit for bit that of earlier runs."""


def safedice_alpha(logits: torch.Tensor, margin: float = 1e-5) -> float:
    """alpha = clip(min(1, exp(-max_i c_i)) - margin, 0, 1 - margin) from the logits c_i.

    The largest alpha keeping d* >= 0 on the rows (``(1 - s)/s = exp(-c)``), in float64;
    a raw value below 0 (a saturated classifier, see the module docstring) is clipped to 0
    with a warning.
    """
    c_max = logits.double().max()
    raw = float(torch.clamp(torch.exp(-c_max), max=1.0)) - margin
    if not raw >= 0.0:  # also catches NaN logits
        log.warning(
            "safedice: raw alpha %.6g (max classifier logit %.6g on D_MIX: the classifier is "
            "saturated) is outside [0, %g]; clipped to 0, so the reward is 0 and SafeDICE "
            "reduces to BC on D_MIX",
            raw, float(c_max), 1 - margin,
        )  # fmt: skip
        return 0.0
    return raw  # <= 1 - margin by the cap


def safedice_reward(logits: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """r = log((1 - alpha exp(c)) / (1 - alpha)), computed in float64 from the logits c."""
    c = logits.double()
    alpha = torch.as_tensor(alpha, dtype=torch.float64, device=c.device)
    # exp(c + log alpha), not alpha exp(c): with alpha = 0 a huge logit gives 0, not 0 * inf
    return (torch.log1p(-torch.exp(c + torch.log(alpha))) - torch.log1p(-alpha)).to(torch.float32)


def gradient_penalty(f, x: torch.Tensor, center: float) -> torch.Tensor:
    """E[(||grad_x f(x)|| - center)^2] (center 1: WGAN-GP style; center 0: plain norm penalty)."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(x).sum(), x, create_graph=True)  # members: own rows only
    return ((grad.norm(dim=-1) - center) ** 2).mean(-1)


def mlp_input_gradient(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """grad_x f(x) of a one-output ReLU MLP (:func:`uniq.nets.mlp`), its backward pass
    written out: g <- g W per linear layer, g <- g 1(h > 0) per ReLU, from g = 1.

    The same values as ``torch.autograd.grad(f(x).sum(), x, create_graph=True)``, and the
    same gradient into the weights (the ReLU masks are constants, as autograd's double
    backward treats them), but a first-order graph: ``torch.compile`` traces it, where
    it cannot trace ``autograd.grad`` inside a loss. Rows (and members) stay separate."""
    masks, h = [], x
    for layer in net:
        h = layer(h)
        if isinstance(layer, nn.ReLU):
            masks.append(h > 0)
    g = None
    for layer in reversed(net):
        if isinstance(layer, nn.ReLU):
            g = g * masks.pop()
        elif isinstance(layer, nn.Linear):  # y = x W^T + b: dy/dx = W ([out, in])
            g = (
                layer.weight.expand(*x.shape[:-1], *layer.weight.shape[-1:])
                if g is None
                else g @ layer.weight
            )
        elif isinstance(layer, BatchedLinear):  # y = x W + b, W [K, in, out]
            w_t = layer.weight.transpose(-1, -2)
            g = w_t.expand(*x.shape[:-1], w_t.shape[-1]) if g is None else torch.bmm(g, w_t)
        else:
            raise TypeError(f"mlp_input_gradient: unsupported layer {type(layer).__name__}")
    return g


class SafeDICE(Method):
    """SafeDICE: weighted BC on D_MIX with DICE weights from a frozen D_UN-vs-D_MIX classifier."""

    name = "safedice"
    display_name = "SafeDICE"
    Config = SafeDICEConfig
    supports_members = True

    def __init__(
        self, cfg: SafeDICEConfig, spec, data, device, seed: int, members: int | None = None
    ):
        super().__init__(cfg, spec, data, device, seed, members)
        obs_dim, act_dim, h, d, k = spec.obs_dim, spec.act_dim, cfg.hidden, cfg.depth, members
        self.actor = TanhGaussianPolicy(obs_dim, act_dim, h, d, members=k).to(self.device)
        self.classifier = mlp(obs_dim + act_dim, 1, h, d, members=k).to(self.device)
        self.nu = mlp(obs_dim, 1, h, d, members=k).to(self.device)
        self.actor_opt = adam(self.actor.parameters(), cfg.compile, lr=cfg.actor_lr)
        self.nu_opt = adam(self.nu.parameters(), cfg.compile, lr=cfg.nu_lr)
        self._optimizers = [self.nu_opt, self.actor_opt]
        self._loss_fn = compiled(self.update_loss, cfg.compile, self.device, "safedice")
        self.classifier_opt = torch.optim.Adam(self.classifier.parameters(), lr=cfg.classifier_lr)
        mix = data["mix"].tensors
        self.init_obs = mix["observations"][mix["initial"] > 0]
        # Set by pretrain() (or restored from a checkpoint): alpha and the reward statistics.
        self.alpha, self.reward_mean, self.reward_std = 0.0, 0.0, 1.0

    def batches(self) -> dict[str, tuple[str, int]]:
        return {"un": ("un", self.cfg.batch_size), "mix": ("mix", self.cfg.batch_size)}

    # -- 1-2: classifier, alpha, reward ------------------------------------------------
    @staticmethod
    def _sa(part: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([part["observations"], part["actions"]], -1)

    def classifier_step(self, un: dict, mix: dict) -> torch.Tensor:
        """One step on L_c (see the module docstring); returns the loss."""
        x_un, x_mix = self._sa(un), self._sa(mix)
        c_un, c_mix = self.classifier(x_un), self.classifier(x_mix)
        bce = F.softplus(-c_un).mean() + F.softplus(c_mix).mean()  # -log s, -log(1 - s)
        u = torch.rand(len(x_mix), 1, device=x_mix.device)
        shuffled = x_mix[torch.randperm(len(x_mix), device=x_mix.device)]
        x_hat = torch.cat([u * x_un + (1 - u) * x_mix, u * shuffled + (1 - u) * x_mix])
        loss = bce + self.cfg.classifier_gp * gradient_penalty(self.classifier, x_hat, 1.0)
        self.classifier_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.classifier_opt.step()
        return loss.detach()

    @torch.no_grad()
    def logits(self, part: dict[str, torch.Tensor]) -> torch.Tensor:
        """c(s, a) in float64: alpha and the reward are computed from it, not from s."""
        return self.classifier(self._sa(part)).squeeze(-1).double()

    @torch.no_grad()
    def prob_un(self, part: dict[str, torch.Tensor]) -> torch.Tensor:
        """s = sigmoid(c(s, a)): the classifier's probability that a row comes from D_UN."""
        return torch.sigmoid(self.logits(part))

    def pretrain(self) -> dict[str, float]:
        """Train the classifier, freeze it, then fix alpha and the reward statistics over D_MIX."""
        loss = torch.tensor(float("nan"))
        for step in range(1, self.cfg.classifier_steps + 1):
            un = self.data["un"].sample(self.cfg.batch_size)
            mix = self.data["mix"].sample(self.cfg.batch_size)
            loss = self.classifier_step(un, mix)
            if step % PROGRESS_EVERY == 0:  # about 3.5 min apart at the paper's sizes on a CPU
                log.info(
                    "classifier step %d of %d, loss %.4f",
                    step,
                    self.cfg.classifier_steps,
                    float(loss),
                )
        self.classifier.requires_grad_(False)
        mix_all = self.data["mix"].tensors
        c = torch.cat([self.logits(chunk) for chunk in _chunks(mix_all, 65536)])
        self.alpha = safedice_alpha(c, self.cfg.alpha_margin)
        r = safedice_reward(c, self.alpha)
        s = torch.sigmoid(c)
        self.reward_mean, self.reward_std = float(r.mean()), float(r.std()) + 1e-8
        s_un = torch.cat([self.prob_un(chunk) for chunk in _chunks(self.data["un"].tensors, 65536)])
        return {
            "classifier_loss": float(loss),
            "alpha": self.alpha,
            "reward_mean": self.reward_mean,
            "reward_std": self.reward_std,
            "s_mix": float(s.mean()),
            "s_un": float(s_un.mean()),
        }

    def adopt(self, plains: list[SafeDICE]) -> None:
        super().adopt(plains)
        self.classifier.requires_grad_(False)

        def column(name: str, dtype: torch.dtype) -> torch.Tensor:  # [K, 1]: broadcasts on rows
            values = [getattr(p, name) for p in plains]
            return torch.tensor(values, dtype=dtype, device=self.device).unsqueeze(-1)

        self.alpha = column("alpha", torch.float64)  # safedice_reward works in float64
        self.reward_mean = column("reward_mean", torch.float32)
        self.reward_std = column("reward_std", torch.float32)

    def reward(self, mix: dict[str, torch.Tensor]) -> torch.Tensor:
        """Standardized r of a D_MIX batch."""
        r = safedice_reward(self.logits(mix), self.alpha)
        return (r - self.reward_mean) / self.reward_std

    # -- 3-4: value and policy ----------------------------------------------------------
    def _advantage(self, mix: dict[str, torch.Tensor]) -> torch.Tensor:
        """A = r + gamma (1 - done) nu(s') - nu(s)."""
        nu_s = self.nu(mix["observations"]).squeeze(-1)
        nu_next = self.nu(mix["next_observations"]).squeeze(-1)
        return self.reward(mix) + self.cfg.gamma * (1 - mix["terminals"]) * nu_next - nu_s

    @torch.no_grad()
    def weights(self, mix: dict[str, torch.Tensor]) -> torch.Tensor:
        """The policy weight w = exp(A - 1)/mean exp(A - 1) of each row of a D_MIX batch."""
        return mix["observations"].shape[-2] * torch.softmax(self._advantage(mix), -1)

    def update(self, batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        # The update's draws (s0 rows from the sampler's stream, interpolation weights from
        # the global one) are made here, eagerly, and passed in: the same draws whether the
        # loss is compiled or not.
        un, cfg = batch["un"], self.cfg
        lead = un["observations"].shape[:-2]  # (K,) when batched, else ()
        idx = torch.randint(
            len(self.init_obs), (*lead, cfg.batch_size), device=self.init_obs.device,
            generator=self.data["mix"].generator,
        )  # fmt: skip
        u = None
        if cfg.nu_gp > 0:
            u = torch.rand(*lead, un["observations"].shape[-2], 1, device=self.device)
        loss, out = self._loss_fn(batch, self.init_obs[idx], u)
        for opt in self._optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in self._optimizers:
            opt.step()
        return out

    def update_loss(
        self, batch: dict[str, dict[str, torch.Tensor]], s0: torch.Tensor, u: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(L, logged scalars): L = sum over members of L_nu + L_pi, on the batch, the
        initial states ``s0`` and the interpolation weights ``u`` (None: no penalty). L_nu
        reaches only nu and L_pi only the policy (its weights are constants), so one
        backward gives each network its own loss's gradient."""
        un, mix = batch["un"], batch["mix"]
        cfg = self.cfg
        adv = self._advantage(mix)
        nu_0 = self.nu(s0).squeeze(-1)
        nu_loss = torch.logsumexp(adv, -1) + (1 - cfg.gamma) * nu_0.mean(-1)
        if u is not None:  # the costliest term (a second backward); nu_gp = 0 skips it
            x_hat = torch.cat(
                [
                    mix["observations"],
                    u * un["observations"] + (1 - u) * mix["observations"],
                    u * un["next_observations"] + (1 - u) * mix["next_observations"],
                ],
                -2,
            )
            if cfg.compile:  # the same penalty, in a graph torch.compile can trace
                grad = mlp_input_gradient(self.nu, x_hat)
                penalty = grad.norm(dim=-1).square().mean(-1)
            else:
                penalty = gradient_penalty(self.nu, x_hat, 0.0)
            nu_loss = nu_loss + cfg.nu_gp * penalty

        w = adv.shape[-1] * torch.softmax(adv.detach(), -1)  # exp(A - 1) / mean exp(A - 1)
        log_pi = self.actor.log_prob(mix["observations"], mix["actions"])
        actor_loss = -(w * log_pi).mean(-1)
        out = {
            "nu_loss": nu_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "advantage": adv.detach().mean(-1),
            "weight_max": w.amax(-1),
        }
        return nu_loss.sum() + actor_loss.sum(), out  # sum over members: own gradients

    def extra_state(self) -> dict:
        return {"alpha": self.alpha, "reward_mean": self.reward_mean, "reward_std": self.reward_std}

    def load_extra_state(self, state: dict) -> None:
        def here(x):  # floats, or [K, 1] tensors when batched (loaded on the CPU)
            return x.to(self.device) if isinstance(x, torch.Tensor) else x

        self.alpha = here(state["alpha"])
        self.reward_mean, self.reward_std = here(state["reward_mean"]), here(state["reward_std"])
        self.classifier.requires_grad_(False)


def _chunks(tensors: dict[str, torch.Tensor], size: int):
    n = len(tensors["observations"])
    for start in range(0, n, size):
        yield {k: v[start : start + size] for k, v in tensors.items()}
