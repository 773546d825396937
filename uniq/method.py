"""The interface every algorithm implements (design.md section 7).

A method file (``uniq/algorithm.py``, ``baselines/*.py``) defines one subclass of
:class:`Method` with:

- ``name``: the algorithm name used by ``--algo``, configs and result paths (e.g. ``"uniq"``);
- ``display_name`` (optional, default ``name``): what tables and figures print for it
  (e.g. ``"UNIQ"``). A config alias (``uniq-nocorr: {method: uniq, ...}``) is printed by its
  own ``display:`` entry, else by its label, never by its method's ``display_name``
  (``uniq.workflow.display_names`` resolves the names an experiment prints);
- ``Config``: a dataclass whose defaults are the published hyper-parameters;
- ``batches()``: what the training loop samples for each update, as
  ``{key: (source, batch_size)}`` with ``source`` one of ``SOURCES``;
- ``update(batch)``: one gradient step on ``batch = {key: {column: tensor}}``; returns the
  scalars to log (tensors are fine: the loop converts them only when it logs);
- ``act(obs)``: actions for evaluation;
- optionally ``pretrain(data)`` (discriminators, ratio estimators) run once before the loop;
- optionally ``check_split(cfg, undesirable_share)``: reject a D_MIX composition the method
  cannot work with (the loop and the workflow's config check call it before training).

The loop sets ``total_steps`` (the run's number of updates) on every method it builds, right
after construction and before ``pretrain``, for settings that scale with the run's length.

Batched over seeds (``supports_members = True``): built with ``members=K``, a method holds
K independent copies of its networks (``uniq.nets``, leading member dimension), receives
batches with a leading ``[K, ...]`` dimension, reduces every batch statistic per member
(``dim=-1``), optimises the *sum* of the members' losses (so each member gets exactly its
own gradient, and Adam, being elementwise, its own step) and returns per-member scalars
(shape ``[K]``). Its ``pretrain`` is not called: ``uniq/train.py`` pretrains one plain
method per seed and hands them to :meth:`Method.adopt`, so a member's state before the
first update is bit for bit that of a separate run with its seed.

Everything else (seeding, sampling, logging, checkpoints, resume, NaN guard, evaluation)
lives once in ``uniq/train.py`` and ``envs/evaluate.py``. ``state_dict`` collects every
``nn.Module`` and ``torch.optim.Optimizer`` attribute automatically, so a method file only
holds its networks and losses.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from uniq.data import Sampler

SOURCES = ("mix", "un", "mix_desirable")
"""Where a batch can come from: D_MIX, D_UN, and the desirable part of D_MIX (oracle only)."""


class ConfigError(ValueError):
    """A config that names unknown fields or algorithms; the message lists the valid choices."""


def build_config(config_cls: type, overrides: dict[str, Any] | None, algo: str = "") -> Any:
    """``config_cls(**overrides)`` with a clear error listing valid fields for an unknown key."""
    overrides = dict(overrides or {})
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(
            f"unknown hyper-parameter(s) {unknown} for algorithm {algo or config_cls.__qualname__}; "
            f"valid ones: {', '.join(sorted(fields))}"
        )
    negative = sorted(
        k for k, v in overrides.items()
        if (k == "lr" or k.endswith("_lr")) and isinstance(v, int | float) and v < 0
    )  # fmt: skip
    if negative:
        raise ConfigError(
            f"{algo or config_cls.__qualname__}: learning rate(s) {negative} must be >= 0 (got "
            f"{[overrides[k] for k in negative]}); the defaults: "
            f"{[getattr(config_cls(), k) for k in negative]}"
        )
    return config_cls(**overrides)


class Method:
    """Base class of every algorithm. Subclasses set ``name``, ``Config`` and, optionally,
    ``display_name``."""

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    """What tables and figures print for ``name`` (e.g. ``"BC-safe"``). A subclass that sets its
    own ``name`` but no ``display_name`` gets ``display_name = name`` (it does not inherit its
    parent's)."""
    Config: ClassVar[type]
    uses_hidden_labels: ClassVar[bool] = False
    """True for oracles (reads ``is_desirable``); tables mark such methods."""
    supports_members: ClassVar[bool] = False
    """True if the constructor takes ``members=K`` (see the module docstring); otherwise the
    training loop trains the seeds of a batched job one after another."""
    total_steps: int | None = None
    """The run's number of updates (``--steps``), set by ``uniq/train.py`` after construction
    (not a constructor argument, so every existing method signature stays valid). None
    outside the loop (tests, diagnostics): a method then assumes its published run length.
    A run resumed with a larger ``--steps`` sees the new length."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in vars(cls) and "display_name" not in vars(cls):
            cls.display_name = cls.name

    def __init__(
        self,
        cfg: Any,
        spec,
        data: dict[str, Sampler],
        device: torch.device,
        seed: int,
        members: int | None = None,
    ):
        """``data`` maps each source in ``SOURCES`` to a sampler over its device tensors."""
        self.cfg, self.spec, self.data, self.device, self.seed = (
            cfg,
            spec,
            data,
            torch.device(device),
            seed,
        )
        self.members = members
        """None: one network per role (today's runs); K: K members batched over seeds."""

    # -- to implement ---------------------------------------------------------
    def batches(self) -> dict[str, tuple[str, int]]:
        raise NotImplementedError

    def update(self, batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor | float]:
        raise NotImplementedError

    def policy(self) -> nn.Module:
        """The module whose ``act(obs, deterministic)`` the evaluation calls."""
        return self.actor

    # -- optional ---------------------------------------------------------------
    @classmethod
    def check_split(cls, cfg: Any, undesirable_share: float) -> None:
        """Raise :class:`ConfigError` if ``cfg`` cannot work on a D_MIX of which a share
        ``undesirable_share`` in [0, 1] is undesirable. The method itself never sees the
        hidden labels: the loop (from the rows) and the workflow (from the split's episode
        counts) pass the share in."""

    def pretrain(self) -> dict[str, float]:
        """One-off work before the loop (e.g. a frozen ratio estimator). Returns scalars to log."""
        return {}

    def adopt(self, plains: list[Method]) -> None:
        """Take K pretrained plain methods (``members=None``) as this batched method's members.

        Stacks every network; optimizers start empty (the loop's optimizers have taken no
        step yet; those of pretraining belong to networks frozen afterwards). Override to
        also stack non-module state (and call this).
        """
        from uniq.nets import stack_members

        for name, module in self._stateful().items():
            if isinstance(module, nn.Module):
                stack_members(module, [getattr(p, name) for p in plains])

    def member_policy(self, k: int) -> nn.Module:
        """Member ``k``'s policy as a plain module (the whole policy when not batched)."""
        policy = self.policy()
        return policy if self.members is None else policy.member(k)

    # -- provided -------------------------------------------------------------
    def deployable_policy(self, k: int = 0) -> nn.Module:
        """Member ``k``'s policy for raw environment observations: with the data's
        standardisation folded in when the loop standardised the data (``data.obs_norm``).
        Curves and policy.pt use this, so a standardised policy never sees raw observations."""
        from uniq.nets import with_obs_norm

        policy = self.member_policy(k)
        norm = getattr(self.data, "obs_norm", None)
        return policy if norm is None else with_obs_norm(policy, norm.mean, norm.std)

    @torch.no_grad()
    def act(self, obs: np.ndarray | torch.Tensor, deterministic: bool = True) -> np.ndarray:
        """Actions for raw environment observations (standardised first, as the data was)."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        norm = getattr(self.data, "obs_norm", None)
        if norm is not None:
            obs_t = norm(obs_t)
        return self.policy().act(obs_t, deterministic).cpu().numpy()

    def _stateful(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        return {
            k: v for k, v in vars(self).items() if isinstance(v, nn.Module | torch.optim.Optimizer)
        }

    def state_dict(self) -> dict[str, Any]:
        """Every network and optimizer attribute's state, plus any ``extra_state()``."""
        state = {k: v.state_dict() for k, v in self._stateful().items()}
        state["__extra__"] = self.extra_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in self._stateful().items():
            v.load_state_dict(state[k])
        self.load_extra_state(state.get("__extra__", {}))

    def extra_state(self) -> dict[str, Any]:
        """Non-module state to checkpoint (e.g. a learned temperature kept as a plain tensor)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass
