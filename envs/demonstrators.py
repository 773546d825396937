"""Demonstrators: SAC (unsafe, costs ignored) and SAC-Lagrangian (safe), one implementation.

SAC (Haarnoja et al. 2018, with automatic entropy tuning) learns twin reward critics and a
tanh-Gaussian actor. The Lagrangian variant adds, and only adds:

- a twin cost critic ``Q_c(s, a) = c + gamma_c (1 - d) Q_c'(s', a')`` (no entropy term);
- a multiplier ``lambda >= 0`` on the constraint ``J_c(pi) <= d`` (``d`` = the task's
  ``cost_limit``, ``J_c`` = undiscounted episode cost), learned by gradient *ascent* on
  ``lambda (J_c - d)``: it rises while episodes cost more than ``d`` and falls toward 0
  when they cost less (see :class:`envs.lagrangian.AdamMultiplier`);
- the penalty in the actor loss:
  ``L_pi = E[alpha log pi(a|s) - Q_r(s, a) + lambda Q_c(s, a)] / (1 + lambda)``.
  Dividing by ``1 + lambda`` keeps the actor's gradient scale bounded while lambda grows;
  the trade-off ``lambda`` between reward and cost is unchanged.

The online loop runs one environment, keeps the replay buffer as torch tensors on the
training device, writes an atomic checkpoint every ``checkpoint_every`` steps (resumed
automatically), a CSV line per finished episode (return, cost, multiplier, alpha) and
finally ``demonstrator_{kind}.pt`` in the :func:`uniq.nets.save_policy` format, so
``load_policy`` rebuilds the actor for the rollouts.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from envs.lagrangian import AdamMultiplier
from envs.tasks import TaskSpec, get_task, make_env
from uniq.atomic import atomic_path
from uniq.jobtimes import carried_cpu, resume_line, trained_line
from uniq.nets import TanhGaussianPolicy, TwinQ, save_policy, soft_update

log = logging.getLogger(__name__)

KINDS = {"unsafe": "sac", "safe": "sac-lagrangian"}
"""Demonstrator kind -> the algorithm that trains it (the ``source`` recorded downstream)."""


@dataclass
class DemoConfig:
    """SAC hyper-parameters (Haarnoja et al. 2018, v2 with automatic entropy tuning)."""

    hidden: int = 256  # width of every MLP layer (actor and critics)
    depth: int = 2  # hidden layers per MLP
    lr: float = 3e-4  # Adam step size of actor, critics and temperature
    gamma: float = 0.99  # reward discount
    cost_gamma: float = 0.99  # cost discount of the cost critic
    tau: float = 0.005  # Polyak rate of the target critics
    batch_size: int = 256  # transitions per gradient step
    start_steps: int = 5000  # uniformly random actions before the actor acts (exploration)
    update_every: int = 1  # env steps per gradient step (1 = one update per step)
    buffer_size: int = 1_000_000  # replay capacity (transitions); capped at the step budget
    init_alpha: float = 1.0  # initial entropy temperature
    target_entropy: float | None = None  # None: -act_dim (the SAC paper's heuristic)
    # --- Lagrangian (safe demonstrator only) ---
    lambda_init: float = 0.0  # initial multiplier
    lambda_lr: float = 0.1  # Adam step size of the multiplier, one step per finished episode
    checkpoint_every: int = 10_000  # env steps between atomic checkpoints
    snapshot_every: int = 0  # if > 0: also save the actor as <out stem>.step<N>.pt every N steps


class ReplayBuffer:
    """A ring buffer of transitions as preallocated tensors on the training device."""

    FIELDS = ("obs", "act", "rew", "cost", "next_obs", "done")

    def __init__(self, obs_dim: int, act_dim: int, capacity: int, device):
        self.capacity, self.size, self.pos = capacity, 0, 0
        dims = {"obs": obs_dim, "act": act_dim, "next_obs": obs_dim}
        self.data = {
            k: torch.zeros((capacity, dims[k]) if k in dims else (capacity,), device=device)
            for k in self.FIELDS
        }

    def add(self, **row) -> None:
        for k in self.FIELDS:
            self.data[k][self.pos] = torch.as_tensor(row[k], dtype=torch.float32)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(self.size, (n,), generator=generator).to(self.data["obs"].device)
        return {k: v[idx] for k, v in self.data.items()}

    def state_dict(self) -> dict:
        # Only the filled rows: an early checkpoint of a 1M-capacity buffer stays small.
        return {
            "size": self.size,
            "pos": self.pos,
            "data": {k: v[: self.size].cpu() for k, v in self.data.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.size, self.pos = state["size"], state["pos"]
        for k, v in state["data"].items():
            self.data[k][: self.size] = v.to(self.data[k].device)


class SACAgent:
    """SAC, plus the cost critic and multiplier when ``lagrangian`` (the safe demonstrator)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        cfg: DemoConfig,
        lagrangian: bool,
        cost_limit: float,
        device,
    ):
        self.cfg, self.lagrangian, self.device = cfg, lagrangian, torch.device(device)
        h, d = cfg.hidden, cfg.depth
        self.actor = TanhGaussianPolicy(obs_dim, act_dim, h, d).to(self.device)
        self.critic = TwinQ(obs_dim, act_dim, h, d).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(
            float(np.log(cfg.init_alpha)), device=self.device, requires_grad=True
        )
        self.target_entropy = (
            -float(act_dim) if cfg.target_entropy is None else float(cfg.target_entropy)
        )
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.lr)
        self.cost_limit = cost_limit
        self.multiplier: AdamMultiplier | None = None
        if lagrangian:
            self.cost_critic = TwinQ(obs_dim, act_dim, h, d).to(self.device)
            self.cost_critic_target = copy.deepcopy(self.cost_critic).requires_grad_(False)
            self.cost_critic_opt = torch.optim.Adam(self.cost_critic.parameters(), lr=cfg.lr)
            self.multiplier = AdamMultiplier(
                cfg.lambda_init, cfg.lambda_lr, betas=(0.0, 0.999), device=self.device
            )

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp().detach()

    @property
    def lam(self) -> float:
        return self.multiplier.value if self.multiplier is not None else 0.0

    def update(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One gradient step of critics, actor and temperature on batch ``b``.

        Critic: ``min (Q_i(s,a) - y)^2`` with
        ``y = r + gamma (1 - done) [min_j Q'_j(s', a') - alpha log pi(a'|s')]``, ``a' ~ pi(s')``.
        Cost critic: ``y_c = c + gamma_c (1 - done) max_j Q'_c,j(s', a')`` (max: pessimistic
        about cost, the mirror of SAC's min for reward).
        Temperature: ``min -log_alpha (log pi + target_entropy)``.
        """
        cfg = self.cfg
        with torch.no_grad():
            next_a, next_logp = self.actor.sample(b["next_obs"])
            q_next = self.critic_target.min_q(b["next_obs"], next_a) - self.alpha * next_logp
            y = b["rew"] + cfg.gamma * (1 - b["done"]) * q_next
        q1, q2 = self.critic(b["obs"], b["act"])
        critic_loss = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        # Stats stay tensors: converting them here would sync the GPU on every update.
        stats = {"critic_loss": critic_loss.detach()}

        if self.lagrangian:
            with torch.no_grad():
                qc_next = torch.max(*self.cost_critic_target(b["next_obs"], next_a))
                yc = b["cost"] + cfg.cost_gamma * (1 - b["done"]) * qc_next
            c1, c2 = self.cost_critic(b["obs"], b["act"])
            cost_loss = ((c1 - yc) ** 2).mean() + ((c2 - yc) ** 2).mean()
            self.cost_critic_opt.zero_grad()
            cost_loss.backward()
            self.cost_critic_opt.step()
            stats["cost_critic_loss"] = cost_loss.detach()

        # Actor: the critics only pass gradients to the action, so their weights are frozen
        # for this backward pass (saves the weight-gradient matmuls).
        critics = [self.critic] + ([self.cost_critic] if self.lagrangian else [])
        for c in critics:
            c.requires_grad_(False)
        a, logp = self.actor.sample(b["obs"])
        actor_obj = self.alpha * logp - self.critic.min_q(b["obs"], a)
        if self.lagrangian:
            lam = self.lam
            actor_obj = (actor_obj + lam * torch.max(*self.cost_critic(b["obs"], a))) / (1 + lam)
        actor_loss = actor_obj.mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        for c in critics:
            c.requires_grad_(True)

        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()

        soft_update(self.critic_target, self.critic, cfg.tau)
        if self.lagrangian:
            soft_update(self.cost_critic_target, self.cost_critic, cfg.tau)
        stats.update(actor_loss=actor_loss.detach(), alpha=self.alpha)
        return stats

    def modules(self) -> dict[str, Any]:
        names = ["actor", "critic", "critic_target", "actor_opt", "critic_opt", "alpha_opt"]
        if self.lagrangian:
            names += ["cost_critic", "cost_critic_target", "cost_critic_opt", "multiplier"]
        return {n: getattr(self, n) for n in names}

    def state_dict(self) -> dict:
        state = {n: m.state_dict() for n, m in self.modules().items()}
        state["log_alpha"] = self.log_alpha.detach().clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        for n, m in self.modules().items():
            m.load_state_dict(state[n])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _write_csv_atomic(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


LOG_FIELDS = ["step", "episode", "return", "cost", "length", "lambda", "alpha", "wall_s"]


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.stem + ".checkpoint.pt")


def log_path(out: Path) -> Path:
    return out.with_name(out.stem + ".log.csv")


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU fails clearly."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked but no CUDA GPU is visible; use --device cpu/auto.")
    return torch.device(device)


def _stats(spec, kind, seed, steps, episodes, rows, agent, cfg, dev) -> dict[str, Any]:
    """Training stats stored in the policy file's meta (last-10 = the latest 10 episodes)."""
    last = rows[-10:]
    return dict(
        task=spec.name,
        kind=kind,
        source=KINDS[kind],
        algo=KINDS[kind],
        seed=seed,
        steps=steps,
        episodes=episodes,
        cost_limit=spec.cost_limit,
        train_return_last10=float(np.mean([r["return"] for r in last])) if last else None,
        train_cost_last10=float(np.mean([r["cost"] for r in last])) if last else None,
        final_lambda=agent.lam,
        final_alpha=float(agent.alpha),
        device=str(dev),
        config=dataclasses.asdict(cfg),
    )


def train_demonstrator(
    task: str | TaskSpec,
    kind: str,
    steps: int,
    seed: int,
    out: str | os.PathLike,
    device: str = "auto",
    config: DemoConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the ``kind`` demonstrator of ``task`` for ``steps`` env steps; write ``out``.

    ``kind``: ``unsafe`` (SAC) or ``safe`` (SAC-Lagrangian at the task's ``cost_limit``).
    Resumes from ``<out stem>.checkpoint.pt`` when present (removed once ``out`` is written).
    Returns the training stats also stored in the policy file's ``meta``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown demonstrator kind {kind!r}; use one of {sorted(KINDS)}.")
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    cfg = config or DemoConfig()
    if steps <= 0:
        raise ValueError(f"steps must be positive (got {steps}).")
    out, dev = Path(out), resolve_device(device)
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt_file, csv_file = checkpoint_path(out), log_path(out)

    torch.manual_seed(seed)
    np_rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    env = make_env(spec, seed)
    agent = SACAgent(spec.obs_dim, spec.act_dim, cfg, kind == "safe", spec.cost_limit, dev)
    buffer = ReplayBuffer(spec.obs_dim, spec.act_dim, min(cfg.buffer_size, steps), dev)
    step, episodes, rows, wall_before, cpu_before = 0, 0, [], 0.0, 0.0

    if ckpt_file.exists():
        state = torch.load(ckpt_file, map_location=dev, weights_only=False)
        if (state["task"], state["kind"], state["seed"]) != (spec.name, kind, seed):
            raise RuntimeError(
                f"{ckpt_file} belongs to another run ({state['task']}, {state['kind']}, seed "
                f"{state['seed']}); delete it or choose another --out."
            )
        # Bookkeeping fields may change between runs; the learning ones may not.
        free = {"checkpoint_every", "snapshot_every"}
        old_cfg = {k: v for k, v in state["config"].items() if k not in free}
        new_cfg = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in free}
        if old_cfg != new_cfg:
            changed = sorted(k for k in new_cfg if old_cfg.get(k) != new_cfg[k])
            raise RuntimeError(
                f"{ckpt_file} was written with other hyper-parameters ({', '.join(changed)}); "
                "rerun with the same --set values, or delete the checkpoint to start over."
            )
        if state["step"] > steps:  # (its replay buffer would not fit the shorter run's either)
            raise RuntimeError(
                f"{ckpt_file} is at step {state['step']} > --steps {steps}; rerun with --steps "
                f">= {state['step']}, or delete the checkpoint to train for fewer steps."
            )
        agent.load_state_dict(state["agent"])
        buffer.load_state_dict(state["buffer"])
        step, episodes, rows, wall_before = (
            state["step"],
            state["episodes"],
            state["rows"],
            state["wall_s"],
        )
        cpu_before = state.get("cpu_s")  # None: a checkpoint written before it was kept
        np_rng.bit_generator.state = state["np_rng"]
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        log.info(resume_line(kind, ckpt_file, step, wall_before, cpu_before))
    _write_csv_atomic(csv_file, rows)  # the log holds exactly the checkpointed episodes

    t0 = time.time()
    # A resumed run starts a fresh episode (env state is not checkpointed); the seed is derived
    # from the step so the resumed run is itself reproducible.
    obs, _ = env.reset(seed=seed + 1000 * step)
    ep_ret = ep_cost = 0.0
    ep_len = 0
    bar = tqdm(total=steps, initial=step, disable=not progress, desc=f"{kind} {spec.name}")
    with open(csv_file, "a", newline="") as csv_f:
        writer = csv.DictWriter(csv_f, fieldnames=LOG_FIELDS)
        while step < steps:
            if step < cfg.start_steps:
                action = np_rng.uniform(-1, 1, spec.act_dim).astype(np.float32)
            else:
                with torch.no_grad():
                    obs_t = torch.as_tensor(obs, dtype=torch.float32, device=dev)
                    action = agent.actor.act(obs_t[None], deterministic=False)[0].cpu().numpy()
            next_obs, reward, cost, terminated, truncated, _ = env.step(action)
            buffer.add(
                obs=obs, act=action, rew=reward, cost=cost, next_obs=next_obs, done=terminated
            )
            obs = next_obs
            ep_ret, ep_cost, ep_len = ep_ret + float(reward), ep_cost + float(cost), ep_len + 1
            step += 1
            bar.update(1)
            if step >= cfg.start_steps and step % cfg.update_every == 0:
                agent.update(buffer.sample(cfg.batch_size, gen))
            if terminated or truncated:
                episodes += 1
                lam = (
                    agent.multiplier.update(ep_cost, agent.cost_limit) if agent.multiplier else 0.0
                )
                row = dict(
                    step=step,
                    episode=episodes,
                    **{"return": round(ep_ret, 4)},
                    cost=ep_cost,
                    length=ep_len,
                    **{"lambda": round(lam, 6)},
                    alpha=round(float(agent.alpha), 6),
                    wall_s=round(wall_before + time.time() - t0, 1),
                )
                rows.append(row)
                writer.writerow(row)
                csv_f.flush()
                bar.set_postfix(ret=f"{ep_ret:.0f}", cost=f"{ep_cost:.0f}", lam=f"{lam:.2f}")
                obs, _ = env.reset()
                ep_ret = ep_cost = 0.0
                ep_len = 0
            if cfg.snapshot_every and step % cfg.snapshot_every == 0 and step < steps:
                # Budget studies: the policy after N steps, without a separate run per N.
                snap = dict(
                    _stats(spec, kind, seed, step, episodes, rows, agent, cfg, dev),
                    wall_time_s=round(wall_before + time.time() - t0, 1),
                )
                save_policy(agent.actor, out.with_name(f"{out.stem}.step{step}.pt"), snap)
            if step % cfg.checkpoint_every == 0 and step < steps:
                # Checkpoints land on step boundaries; the unfinished episode is dropped on resume.
                _atomic_torch_save(
                    dict(
                        task=spec.name,
                        kind=kind,
                        seed=seed,
                        step=step,
                        episodes=episodes,
                        rows=list(rows),
                        wall_s=wall_before + time.time() - t0,
                        cpu_s=carried_cpu(cpu_before),
                        agent=agent.state_dict(),
                        buffer=buffer.state_dict(),
                        np_rng=np_rng.bit_generator.state,
                        gen=gen.get_state(),
                        torch_rng=torch.get_rng_state(),
                        config=dataclasses.asdict(cfg),
                    ),
                    ckpt_file,
                )
    bar.close()
    env.close()

    stats = dict(
        _stats(spec, kind, seed, steps, episodes, rows, agent, cfg, dev),
        wall_time_s=round(wall_before + time.time() - t0, 1),
    )
    save_policy(agent.actor, out, stats)
    ckpt_file.unlink(missing_ok=True)
    log.info(trained_line(kind, steps, stats["wall_time_s"], out))
    return stats
