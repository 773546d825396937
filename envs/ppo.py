r"""PPO (unsafe) and PPO-Lagrangian (safe) demonstrators, the navigation tasks' trainers.

Why PPO here: OmniSafe's benchmark trains these four Safety-Gym tasks with on-policy
methods; PPO reaches return 17-33 on all of them, and the Lagrangian variant is the usual
constrained baseline (SafeDICE's data came from PPO-Lagrangian and PPO). SAC
(envs/demonstrators.py) stays the velocity tasks' trainer.

Policy: the suite's tanh-Gaussian (:class:`uniq.nets.TanhGaussianPolicy`, with its own
observation standardisation layer), so a demonstrator file is an ordinary policy file and
the rollouts sample exactly the distribution PPO trained. PPO works on the pre-squash
Gaussian sample ``u`` (the env gets ``tanh(u)``): the tanh's log-determinant is the same for
the old and the new policy and cancels in the probability ratio.

Per epoch (``epoch_steps`` env steps over ``num_envs`` envs, whole episodes on the
navigation tasks), with GAE(lambda) advantages ``A_r`` and ``A_c`` of reward and cost and
the clipped surrogate

    rho = pi(u|s) / pi_old(u|s)
    L_pi = -E[ min(rho A, clip(rho, 1 - eps, 1 + eps) A) ]
    A    = A_r                                 (PPO)
    A    = (A_r - lambda A_c) / (1 + lambda)   (PPO-Lagrangian, as OmniSafe's PPOLag)

``A_r`` is standardised over the epoch and ``A_c`` centred. The multiplier ``lambda >= 0``
follows the epoch's mean episode cost ``J_c`` against the training limit ``d``: projected
Adam ascent on ``lambda (J_c - d)`` (OmniSafe's default), or a PID controller
(Stooke et al. 2020, ``lagrangian: pid``). Remedies for a policy that hovers above the
limit are options, chosen by measurement: a training limit below the evaluation's
(``cost_limit``), a curriculum from ``cost_limit_start`` down to ``cost_limit`` over the
first ``curriculum_frac`` of training, a warm start from another policy file
(``init_from``), and policy snapshots along training (``snapshot_every``) to choose from.

Checkpoints: one at the end of every ``checkpoint_every`` epochs (an epoch ends on episode
boundaries: an unfinished episode is cut and its env reset at the next epoch), so a resumed
run continues exactly as the uninterrupted one (episode resets are seeded).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from envs.lagrangian import AdamMultiplier, PIDMultiplier
from envs.tasks import TaskSpec, make_vec_env, resolve_task
from uniq.atomic import atomic_path, git_commit
from uniq.jobtimes import carried_cpu, resume_line, trained_line
from uniq.nets import ObsNormalizer, TanhGaussianPolicy, load_policy, mlp, save_policy

log = logging.getLogger(__name__)

KINDS = {"unsafe": "ppo", "safe": "ppo-lagrangian"}
LOG_FIELDS = [
    "step", "epoch", "episodes", "return", "cost", "return_std", "cost_std",
    "lambda", "cost_limit", "kl", "passes", "wall_s",
]  # fmt: skip


@dataclass
class PPOConfig:
    """PPO(-Lagrangian) hyper-parameters; defaults follow OmniSafe's PPO/PPOLag where it has one."""

    hidden: int = 64  # width of the policy's and critics' two hidden layers (OmniSafe [64, 64])
    depth: int = 2  # hidden layers per network
    num_envs: int = 4  # envs stepped together (one batched policy forward per step)
    epoch_steps: int = 20_000  # env steps per epoch (OmniSafe 20k); a multiple of num_envs x 1000 keeps episodes whole
    passes: int = 10  # passes over an epoch's data (stopped early by target_kl)
    minibatch: int = 1000  # rows per gradient step
    lr: float = 3e-4  # Adam step size of the actor and of the critics
    gamma: float = 0.99  # reward discount
    gae_lambda: float = 0.95  # GAE lambda of the reward advantage
    cost_gamma: float = 0.99  # cost discount
    cost_gae_lambda: float = 0.95  # GAE lambda of the cost advantage
    clip: float = 0.2  # PPO's ratio clip epsilon
    target_kl: float = 0.02  # stop the epoch's passes once the mean KL(old || new) exceeds this
    entropy_coef: float = 0.0  # entropy bonus of the pre-squash Gaussian (OmniSafe 0)
    max_grad_norm: float = 40.0  # gradient-norm clip (OmniSafe 40)
    obs_clip: float = 10.0  # standardised observations are clipped to +-obs_clip
    init_log_std: float = -0.5  # initial log sigma of the pre-squash Gaussian (sigma ~ 0.6)
    # --- Lagrangian (safe demonstrator only) ---
    cost_limit: float | None = (
        None  # training limit d; None: the task's cost_limit (the evaluation's)
    )
    cost_limit_start: float | None = (
        None  # curriculum: d starts here and falls linearly to cost_limit
    )
    curriculum_frac: float = 0.5  # share of the step budget over which the curriculum falls
    lagrangian: str = "adam"  # 'adam': projected Adam ascent (OmniSafe PPOLag) | 'pid' (CPPO-PID)
    lambda_init: float = 0.001  # initial multiplier (OmniSafe 0.001)
    lambda_lr: float = (
        0.035  # Adam step size of the multiplier, one step per epoch (OmniSafe 0.035)
    )
    pid_kp: float = 0.1  # PID: proportional gain (OmniSafe CPPOPID 0.1)
    pid_ki: float = 0.01  # PID: integral gain (0.01)
    pid_kd: float = 0.01  # PID: derivative gain (0.01)
    pid_ema: float = 0.95  # PID: smoothing of the cost for the P and D terms (0.95)
    # --- bookkeeping (may change between a run and its resume) ---
    init_from: str = (
        ""  # warm start: a policy file (same task) whose actor and statistics start this run
    )
    checkpoint_every: int = 1  # epochs between checkpoints
    snapshot_every: int = (
        0  # if > 0: save the policy as <out stem>.step<N>.pt every this many epochs
    )


def make_multiplier(cfg: PPOConfig) -> AdamMultiplier | PIDMultiplier:
    """The safe demonstrator's multiplier: OmniSafe's Adam ascent (Adam's default betas) or PID."""
    if cfg.lagrangian == "pid":
        return PIDMultiplier(cfg.lambda_init, cfg.pid_kp, cfg.pid_ki, cfg.pid_kd, cfg.pid_ema)
    return AdamMultiplier(cfg.lambda_init, cfg.lambda_lr)


class RunningStats:
    """Mean and std of every observation seen so far (Chan et al.'s parallel update, float64)."""

    def __init__(self, dim: int):
        self.count, self.mean, self.m2 = 0, np.zeros(dim), np.zeros(dim)

    def update(self, x: np.ndarray) -> None:
        x = x.reshape(-1, self.mean.shape[0]).astype(np.float64)
        n, mean = len(x), x.mean(0)
        delta, total = mean - self.mean, self.count + n
        self.m2 += ((x - mean) ** 2).sum(0) + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.count, 1))

    def state_dict(self) -> dict:
        return dict(count=self.count, mean=self.mean.copy(), m2=self.m2.copy())

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = state["count"], state["mean"].copy(), state["m2"].copy()


def _critic(spec: TaskSpec, cfg: PPOConfig) -> nn.Module:
    return nn.Sequential(
        ObsNormalizer(spec.obs_dim, cfg.obs_clip), mlp(spec.obs_dim, 1, cfg.hidden, cfg.depth)
    )


def _gaussian_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    return (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(
        -1
    )


def gae(
    rew, values, last_values, episode_end, bootstrap, gamma, lam
) -> tuple[np.ndarray, np.ndarray]:
    """GAE(lambda) over ``[T, E]`` arrays; returns (advantages, value targets).

    ``episode_end[t]``: step t ends an episode (terminated, truncated or cut at the epoch's end);
    its successor value is then ``bootstrap[t]`` (0 if terminated, V(final obs) otherwise)
    instead of ``values[t + 1]``. ``last_values`` is unused when every last step ends an episode.
    """
    T = len(rew)
    adv = np.zeros_like(rew)
    running = np.zeros_like(rew[0])
    for t in reversed(range(T)):
        nxt = last_values if t == T - 1 else values[t + 1]
        nxt = np.where(episode_end[t], bootstrap[t], nxt)
        delta = rew[t] + gamma * nxt - values[t]
        running = delta + gamma * lam * np.where(episode_end[t], 0.0, running)
        adv[t] = running
    return adv, adv + values


def _limit_at(cfg: PPOConfig, spec: TaskSpec, step: int, total: int) -> float:
    end = spec.cost_limit if cfg.cost_limit is None else cfg.cost_limit
    if cfg.cost_limit_start is None:
        return float(end)
    frac = min(1.0, step / max(1.0, cfg.curriculum_frac * total))
    return float(cfg.cost_limit_start + frac * (end - cfg.cost_limit_start))


class PPOAgent:
    def __init__(self, spec: TaskSpec, cfg: PPOConfig, lagrangian: bool):
        self.cfg, self.spec = cfg, spec
        self.actor = TanhGaussianPolicy(
            spec.obs_dim, spec.act_dim, cfg.hidden, cfg.depth, obs_norm=True, obs_clip=cfg.obs_clip
        )
        with torch.no_grad():  # near-zero mean and sigma = exp(init_log_std) at the start
            last = self.actor.trunk[-1]
            last.weight.mul_(0.01)
            last.bias.zero_()
            last.bias[spec.act_dim :] = cfg.init_log_std
        self.critic = _critic(spec, cfg)
        self.cost_critic = _critic(spec, cfg) if lagrangian else None
        critics = [
            p for c in (self.critic, self.cost_critic) if c is not None for p in c.parameters()
        ]
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.critic_opt = torch.optim.Adam(critics, lr=cfg.lr)
        self.multiplier = None
        if lagrangian:
            self.multiplier = make_multiplier(cfg)
        self.stats = RunningStats(spec.obs_dim)

    @property
    def lam(self) -> float:
        return self.multiplier.value if self.multiplier is not None else 0.0

    def normalizers(self) -> list[ObsNormalizer]:
        nets = [self.critic] + ([self.cost_critic] if self.cost_critic is not None else [])
        return [self.actor.obs_norm] + [c[0] for c in nets]

    def freeze_stats(self) -> None:
        """The running statistics into every network, fixed for the coming epoch."""
        if self.stats.count:
            for norm in self.normalizers():
                norm.set_stats(self.stats.mean, self.stats.std)

    def values(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.critic(obs).squeeze(-1)
        vc = (
            self.cost_critic(obs).squeeze(-1)
            if self.cost_critic is not None
            else torch.zeros_like(v)
        )
        return v, vc

    def update(self, b: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, float]:
        cfg = self.cfg
        adv = (b["adv"] - b["adv"].mean()) / (b["adv"].std() + 1e-8)
        if self.cost_critic is not None:
            lam = self.lam
            adv = (adv - lam * (b["adv_c"] - b["adv_c"].mean())) / (1 + lam)
        n = len(adv)
        kl, passes = 0.0, 0
        while passes < cfg.passes:
            passes += 1
            order = torch.randperm(n, generator=gen)
            for i in range(0, n, cfg.minibatch):
                idx = order[i : i + cfg.minibatch]
                mean, log_std = self.actor(b["obs"][idx])
                logp = _gaussian_log_prob(b["u"][idx], mean, log_std)
                ratio = (logp - b["logp"][idx]).exp()
                surrogate = torch.min(
                    ratio * adv[idx], ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv[idx]
                )
                entropy = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)
                actor_loss = -(surrogate + cfg.entropy_coef * entropy).mean()
                self.actor_opt.zero_grad()
                actor_loss.backward()
                nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.max_grad_norm)
                self.actor_opt.step()

                v, vc = self.values(b["obs"][idx])
                critic_loss = ((v - b["ret"][idx]) ** 2).mean()
                if self.cost_critic is not None:
                    critic_loss = critic_loss + ((vc - b["ret_c"][idx]) ** 2).mean()
                self.critic_opt.zero_grad()
                critic_loss.backward()
                nn.utils.clip_grad_norm_(
                    self.critic_opt.param_groups[0]["params"], cfg.max_grad_norm
                )
                self.critic_opt.step()
            with torch.no_grad():  # KL(old || new) estimated as E[(rho - 1) - log rho]
                mean, log_std = self.actor(b["obs"])
                log_ratio = _gaussian_log_prob(b["u"], mean, log_std) - b["logp"]
                kl = float(((log_ratio.exp() - 1) - log_ratio).mean())
            if kl > cfg.target_kl:
                break
        return {"kl": kl, "passes": passes}

    def modules(self) -> dict[str, Any]:
        names = ["actor", "critic", "actor_opt", "critic_opt", "stats"]
        if self.cost_critic is not None:
            names += ["cost_critic", "multiplier"]
        return {n: getattr(self, n) for n in names}

    def state_dict(self) -> dict:
        return {n: m.state_dict() for n, m in self.modules().items()}

    def load_state_dict(self, state: dict) -> None:
        for n, m in self.modules().items():
            m.load_state_dict(state[n])


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.stem + ".checkpoint.pt")


def log_path(out: Path) -> Path:
    return out.with_name(out.stem + ".log.csv")


_FREE = {"checkpoint_every", "snapshot_every"}
"""Config fields that may differ between a run and its resume (they change no number)."""


def _check_resumable(
    state: dict, spec: TaskSpec, kind: str, seed: int, steps: int, cfg: PPOConfig, path
) -> None:
    if (state["task"], state["kind"], state["seed"]) != (spec.name, kind, seed):
        raise RuntimeError(
            f"{path} belongs to another run ({state['task']}, {state['kind']}, seed {state['seed']}); "
            "delete it or choose another --out."
        )
    old = {k: v for k, v in state["config"].items() if k not in _FREE}
    new = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _FREE}
    if old != new:
        changed = sorted(k for k in new if old.get(k) != new[k])
        raise RuntimeError(
            f"{path} was written with other hyper-parameters ({', '.join(changed)}); rerun with the "
            "same --set values, or delete the checkpoint to start over."
        )
    if cfg.cost_limit_start is not None and state["total_steps"] != steps:
        raise RuntimeError(
            f"{path}: the cost-limit curriculum was planned over {state['total_steps']} steps, "
            f"not {steps}; rerun with --steps {state['total_steps']}."
        )


def _warm_start(agent: PPOAgent, path: str, spec: TaskSpec) -> None:
    if not Path(path).exists():
        raise ValueError(f"init_from={path}: no such policy file; give a policy.pt of {spec.name}.")
    policy, meta = load_policy(path)
    if meta.get("task") != spec.name:
        raise ValueError(f"init_from={path}: a policy of {meta.get('task')!r}, not of {spec.name}.")
    agent.actor.load_state_dict(policy.state_dict())
    stats = meta.get("obs_stats")
    if stats is not None:  # the running statistics continue from the warm start's
        agent.stats.load_state_dict(
            {k: np.asarray(v) if k != "count" else v for k, v in stats.items()}
        )


def train_ppo(
    task: str | TaskSpec,
    kind: str,
    steps: int,
    seed: int,
    out: str | os.PathLike,
    config: PPOConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the ``kind`` demonstrator of ``task`` with PPO(-Lagrangian) for ``steps`` env steps.

    Writes ``out`` (a policy file), ``<stem>.log.csv`` (one row per epoch: mean return and
    cost of its episodes, lambda, the training limit) and, until done, ``<stem>.checkpoint.pt``
    (resumed automatically; kept after the end so a later call with more steps continues).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown demonstrator kind {kind!r}; use one of {sorted(KINDS)}.")
    spec, cfg = resolve_task(task), config or PPOConfig()
    if cfg.lagrangian not in ("adam", "pid"):
        raise ValueError(f"lagrangian={cfg.lagrangian!r}; use 'adam' or 'pid'.")
    if cfg.epoch_steps % cfg.num_envs:
        raise ValueError(
            f"epoch_steps={cfg.epoch_steps} is not a multiple of num_envs={cfg.num_envs}."
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt_file, csv_file = checkpoint_path(out), log_path(out)
    torch.manual_seed(seed)
    agent = PPOAgent(spec, cfg, lagrangian=kind == "safe")
    gen = torch.Generator().manual_seed(seed)
    np_rng = np.random.default_rng(seed)
    step, epoch, rows, wall_before, cpu_before = 0, 0, [], 0.0, 0.0
    if ckpt_file.exists():
        state = torch.load(ckpt_file, weights_only=False)
        _check_resumable(state, spec, kind, seed, steps, cfg, ckpt_file)
        agent.load_state_dict(state["agent"])
        gen.set_state(state["gen"])
        np_rng.bit_generator.state = state["np_rng"]
        torch.set_rng_state(state["torch_rng"])
        step, epoch, rows, wall_before = (
            state["step"],
            state["epoch"],
            state["rows"],
            state["wall_s"],
        )
        cpu_before = state.get("cpu_s")  # None: a checkpoint written before it was kept
        log.info(resume_line(f"{spec.name}:{kind}", ckpt_file, step, wall_before, cpu_before))
        log.info("resumed at epoch %d", epoch)
    elif cfg.init_from:
        _warm_start(agent, cfg.init_from, spec)
    with atomic_path(csv_file) as tmp, open(tmp, "w", newline="") as f:  # the checkpointed epochs
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)

    E, T = cfg.num_envs, cfg.epoch_steps // cfg.num_envs
    t0 = time.time()
    with make_vec_env(spec, E, workers=0) as venv:
        while step < steps:
            t_epoch = time.time()
            agent.freeze_stats()
            batch, finished = _collect_epoch(agent, venv, spec, T, E, np_rng, gen)
            agent.stats.update(batch["obs"].numpy())
            limit = _limit_at(cfg, spec, step, steps)
            ep_ret = np.array([r for r, _ in finished]) if finished else np.array([np.nan])
            ep_cost = np.array([c for _, c in finished]) if finished else np.array([np.nan])
            info = agent.update(batch, gen)
            lam = agent.lam
            if (
                agent.multiplier and finished
            ):  # an epoch without a whole episode says nothing of J_c
                lam = agent.multiplier.update(float(ep_cost.mean()), limit)
            step, epoch = step + E * T, epoch + 1
            row = {
                "step": step, "epoch": epoch, "episodes": len(finished),
                "return": round(float(ep_ret.mean()), 3), "cost": round(float(ep_cost.mean()), 3),
                "return_std": round(float(ep_ret.std()), 3), "cost_std": round(float(ep_cost.std()), 3),
                "lambda": round(lam, 5), "cost_limit": limit if kind == "safe" else "",
                "kl": round(info["kl"], 5), "passes": info["passes"],
                "wall_s": round(wall_before + time.time() - t0, 1),
            }  # fmt: skip
            rows.append(row)
            with open(csv_file, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=LOG_FIELDS).writerow(row)
            if progress or epoch % 10 == 0:
                log.info(
                    "%s %s step %d: return %.1f cost %.1f lambda %.3f (%.0f steps/s)",
                    kind, spec.name, step, row["return"], row["cost"], lam,
                    E * T / max(1e-9, time.time() - t_epoch),
                )  # fmt: skip
            meta = _meta(spec, kind, seed, step, rows, agent, cfg, wall_before + time.time() - t0)
            if cfg.snapshot_every and epoch % cfg.snapshot_every == 0:
                save_policy(agent.actor, out.with_name(f"{out.stem}.step{step}.pt"), meta)
            if epoch % cfg.checkpoint_every == 0 or step >= steps:
                state = dict(
                    task=spec.name, kind=kind, seed=seed, step=step, epoch=epoch, rows=list(rows),
                    wall_s=wall_before + time.time() - t0, total_steps=steps,
                    cpu_s=carried_cpu(cpu_before),
                    agent=agent.state_dict(), gen=gen.get_state(), np_rng=np_rng.bit_generator.state,
                    torch_rng=torch.get_rng_state(), config=dataclasses.asdict(cfg),
                )  # fmt: skip
                with atomic_path(ckpt_file) as tmp:
                    torch.save(state, tmp)
    agent.freeze_stats()  # the policy file carries the statistics of every observation seen
    meta = _meta(spec, kind, seed, step, rows, agent, cfg, wall_before + time.time() - t0)
    save_policy(agent.actor, out, meta)
    log.info(trained_line(f"{spec.name}:{kind}", step, meta["wall_time_s"], out))
    return meta


def _collect_epoch(agent: PPOAgent, venv, spec: TaskSpec, T: int, E: int, np_rng, gen):
    """T steps of E envs from fresh seeded resets; the tensors PPO's update needs."""
    cfg = agent.cfg
    obs = np.zeros((T + 1, E, spec.obs_dim), np.float32)
    u = np.zeros((T, E, spec.act_dim), np.float32)
    logp, rew, cost = (np.zeros((T, E), np.float32) for _ in range(3))
    end = np.zeros((T, E), bool)
    boot_v, boot_c = np.zeros((T, E), np.float32), np.zeros((T, E), np.float32)
    slots = list(range(E))
    cur = venv.reset(slots, np_rng.integers(0, 2**31 - 1, E).tolist())
    ep_ret, ep_cost, finished = np.zeros(E), np.zeros(E), []
    for t in range(T):
        obs[t] = cur
        with torch.no_grad():
            mean, log_std = agent.actor(torch.as_tensor(cur, dtype=torch.float32))
            noise = torch.randn(mean.shape, generator=gen)
            ut = mean + log_std.exp() * noise
            logp[t] = _gaussian_log_prob(ut, mean, log_std).numpy()
        u[t] = ut.numpy()
        nxt, r, c, term, trunc, _ = venv.step(slots, np.tanh(u[t].astype(np.float64)))
        rew[t], cost[t] = r, c
        ep_ret += r
        ep_cost += c
        end[t] = term | trunc | (t == T - 1)
        done = np.flatnonzero(end[t])
        if len(done):
            with torch.no_grad():
                v, vc = agent.values(torch.as_tensor(nxt[done], dtype=torch.float32))
            keep = ~term[done]  # terminated: nothing follows; truncated or cut: bootstrap
            boot_v[t, done], boot_c[t, done] = v.numpy() * keep, vc.numpy() * keep
            for j in done:
                if term[j] or trunc[j]:
                    finished.append((ep_ret[j], ep_cost[j]))
                ep_ret[j] = ep_cost[j] = 0.0
            again = [int(j) for j in done if t < T - 1]
            if again:
                nxt[again] = venv.reset(again, np_rng.integers(0, 2**31 - 1, len(again)).tolist())
        cur = nxt
    with torch.no_grad():
        flat = torch.as_tensor(obs[:T].reshape(T * E, -1))
        v, vc = (x.view(T, E).numpy() for x in agent.values(flat))
    zeros = np.zeros(E, np.float32)
    adv, ret = gae(rew, v, zeros, end, boot_v, cfg.gamma, cfg.gae_lambda)
    adv_c, ret_c = gae(cost, vc, zeros, end, boot_c, cfg.cost_gamma, cfg.cost_gae_lambda)
    flat_t = {
        "obs": obs[:T], "u": u, "logp": logp, "adv": adv, "ret": ret, "adv_c": adv_c, "ret_c": ret_c,
    }  # fmt: skip
    batch = {
        k: torch.as_tensor(v.reshape(T * E, *v.shape[2:]), dtype=torch.float32)
        for k, v in flat_t.items()
    }
    return batch, finished


def _meta(spec, kind, seed, step, rows, agent, cfg, wall) -> dict[str, Any]:
    last = rows[-5:]
    return dict(
        task=spec.name,
        kind=kind,
        source=KINDS[kind],
        algo=KINDS[kind],
        seed=seed,
        steps=step,
        cost_limit=spec.cost_limit,
        train_return_last5=float(np.mean([r["return"] for r in last])) if last else None,
        train_cost_last5=float(np.mean([r["cost"] for r in last])) if last else None,
        final_lambda=agent.lam,
        obs_stats={k: np.asarray(v).tolist() for k, v in agent.stats.state_dict().items()},
        wall_time_s=round(wall, 1),
        config=dataclasses.asdict(cfg),
        git_commit=git_commit(),
    )
