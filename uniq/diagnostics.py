"""What a trained UNIQ run learned, split by the hidden labels the learner never saw.

For a finished (or checkpointed) UNIQ run folder, rebuilds the method from its
``checkpoint.pt`` and the datasets named in its ``config.yaml``, then reports on three
groups of transitions: D_UN, the desirable part of D_MIX and its undesirable part:

- the occupancy ratio tau(s) = rho_UN / rho_MIX (should be high on D_UN and on undesirable
  D_MIX rows, low on desirable ones);
- the implicit reward r(s, a) = Q(s, a) - gamma (1 - done) V(s') (should be low where the
  undesirable demonstrations go);
- the advantage Q_target(s, a) - V(s) that weights the actor (should favour desirable rows);
- the actor's weights themselves, as in training (uniform D_MIX batches, the configured
  ``actor_weight`` form): the share of their mass on desirable rows, the environment's reward
  and cost per row under them and their share on rows of negative reward, beside D_MIX's own
  (which rows a batch's weight favours: on a navigation task a reward below 0 is a step away
  from the goal), and their effective sample size per batch, (sum w)^2 / sum w^2: the rows the
  policy actually learns from. For the recipe's weight, each of its two factors alone too
  (the 1/W^2 occupancy factor, the advantage factor): which one pulls where.

Each as a mean per group and as AUC(desirable D_MIX vs the other group): the probability that
a random desirable row scores higher (reward, advantage) or lower (tau) than a random row of
the other group; 0.5 is no separation. This tells a budget problem (little separation
anywhere) from an estimator problem (tau does not separate) from a learning one (tau does,
the reward does not)::

    uniq-bench diagnose results/quick/runs/SafetyHalfCheetahVelocity-v1/default/uniq/seed0

or part-way through a long run, from a training job's checkpoint (``--member``: its seed)::

    uniq-bench diagnose results/paper_data/runs/SafetyPointButton1-v0/default/uniq/seed0_1_2_3_4
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from scipy.stats import rankdata

from uniq.checkpoint import NAME as CHECKPOINT
from uniq.checkpoint import read_saved
from uniq.data import OfflineData
from uniq.job import dataset_checksum
from uniq.sources import make_sources

GROUPS = ("un", "mix_desirable", "mix_undesirable")


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a random ``pos`` value > a random ``neg`` value), ties counted half (Mann-Whitney)."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _value(method, s: torch.Tensor) -> torch.Tensor:
    """V(s) as UNIQ's update computes it for its targets V(s') and its actor:
    clip(Q_target(s, a~pi) - alpha log pi(a|s), +-max_v), or the separate network's output
    (clipped alike) when ``value_form="expectile"``."""
    max_v = method.cfg.max_v
    if method.cfg.value_form == "expectile":
        return method.value(s).squeeze(-1).clamp(-max_v, max_v)
    a_pi, logp = method.actor.sample(s)
    return (method.critic_target.min_q(s, a_pi) - method.cfg.alpha * logp).clamp(-max_v, max_v)


def _advantage(method, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """A(s, a) = clip(Q_target(s, a), +-max_v) - V(s), the advantage that weights UNIQ's actor."""
    max_v = method.cfg.max_v
    return method.critic_target.min_q(s, a).clamp(-max_v, max_v) - _value(method, s)


@torch.no_grad()
def _scores(
    method, rows: dict[str, torch.Tensor], member: int = 0, chunk: int = 8192
) -> dict[str, np.ndarray]:
    cfg, K = method.cfg, method.members
    out: dict[str, list] = {"tau": [], "reward": [], "advantage": []}
    for i in range(0, len(rows["observations"]), chunk):
        t = {k: v[i : i + chunk] for k, v in rows.items()}
        if K is not None:  # a batched job: every member sees the rows; keep ``member``'s view
            t = {k: v.unsqueeze(0).expand(K, *v.shape) for k, v in t.items()}
        s, a, s2 = t["observations"], t["actions"], t["next_observations"]
        if cfg.occupancy_correction:
            out["tau"].append(method.occupancy_ratio(method._features(t)))
        q = torch.stack(method.critic(s, a)).mean(0)
        out["reward"].append(q - cfg.gamma * (1 - t["terminals"]) * _value(method, s2))
        out["advantage"].append(_advantage(method, s, a))
    if K is not None:
        out = {k: [x[member] for x in v] for k, v in out.items()}
    return {k: torch.cat(v).cpu().numpy() for k, v in out.items() if v}


FACTORS = {
    "whole": "whole weight",
    "occupancy": "1/W^2 factor alone",
    "advantage": "advantage factor alone",
}
"""The actor's weight and, for the recipe's form, each of its two factors on its own: the
1/W^2 factor with the advantage set to 0, and the advantage factor with 1/W^2 set to 1. Each
is capped at ``weight_clip`` as in training, so the whole weight is not their product where the
cap binds (``at_cap``: the share of a batch's rows at the cap)."""


@torch.no_grad()
def actor_weighted_means(
    method, mix: OfflineData, member: int, rng, columns: dict[str, np.ndarray], batches: int = 20,
    factors: tuple[str, ...] = ("whole",),
) -> dict[str, dict[str, float]]:  # fmt: skip
    """The actor's weights as in training (uniform D_MIX batches of ``actor_batch`` rows, the
    configured ``actor_weight`` form), or one of its factors (``factors``: keys of
    :data:`FACTORS`, each measured on the same batches), over ``batches`` batches: for each
    factor, the mean under the weight of each column of D_MIX (``columns``: name -> [N]
    values; a mask gives the share of the weight's mass on its rows), each batch's weighted
    mean averaged over the batches, with its standard error over them (``NAME_se``; a batch's
    weight sits on a few rows, so the means are noisy); on average the effective rows per
    batch, (sum w)^2 / sum w^2 (``effective_rows``), and the share of rows at the cap
    ``weight_clip`` (``at_cap``)."""
    unknown = set(factors) - set(FACTORS)
    if unknown:
        raise ValueError(f"factors {sorted(unknown)}: each one of {', '.join(FACTORS)}")
    cfg, K = method.cfg, method.members
    columns = {name: torch.as_tensor(np.asarray(c, np.float64)) for name, c in columns.items()}
    per_batch: dict[str, dict[str, list[float]]] = {
        f: {name: [] for name in [*columns, "effective_rows", "at_cap"]} for f in factors
    }
    for _ in range(batches):
        idx = torch.as_tensor(rng.integers(0, len(mix), cfg.actor_batch))
        s, a = (torch.as_tensor(getattr(mix, k)[idx.numpy()]) for k in ("observations", "actions"))
        b_mix = {"index": idx, "observations": s}
        # W on the actor batch is scaled within that batch: the critic's D_UN rows do not matter
        b_un = {
            "index": torch.zeros(cfg.batch_un, dtype=torch.long),
            "observations": s[: cfg.batch_un],
        }
        if K is not None:
            s, a = s.expand(K, *s.shape), a.expand(K, *a.shape)
            b_mix = {k: v.expand(K, *v.shape) for k, v in b_mix.items()}
            b_un = {k: v.expand(K, *v.shape) for k, v in b_un.items()}
        A, W = _advantage(method, s, a), method._weights(b_mix, b_un)[1]
        parts = {"whole": (A, W), "occupancy": (torch.zeros_like(A), W), "advantage": (A, None)}
        for factor in factors:
            w = method.actor_weights(*parts[factor])
            w = (w if K is None else w[member]).double()
            got = per_batch[factor]
            for name, column in columns.items():
                got[name].append(float((w * column[idx]).sum() / w.sum()))
            got["effective_rows"].append(float(w.sum() ** 2 / w.square().sum()))
            got["at_cap"].append(float((w >= cfg.weight_clip).double().mean()))
    out: dict[str, dict[str, float]] = {}
    for factor, got in per_batch.items():
        out[factor] = {}
        for name, v in got.items():
            out[factor][name] = float(np.mean(v))
            if name in columns:
                se = np.std(v, ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan
                out[factor][f"{name}_se"] = float(se)
    return out


def _actor_weights(method, mix: OfflineData, member: int, rng, batches: int) -> dict:
    """What the actor learns from, under its whole weight and (for the recipe's form, whose
    weight has the 1/W^2 factor) under each factor alone: the share of the weight on
    desirable D_MIX rows, the environment's reward and cost per row, the share on rows of
    negative reward (on navigation tasks: a step away from the goal), the effective rows and
    the share of rows at the cap per batch; ``data``: D_MIX's own (uniform weight);
    ``desirable_rows``: its desirable rows' own (what BC-safe, the oracle, imitates)."""
    columns = {
        "desirable": mix.is_desirable > 0.5,
        "reward": mix.rewards,
        "cost": mix.costs,
        "negative_reward": mix.rewards < 0,
    }
    factors = tuple(FACTORS) if method.weighs_by_occupancy else ("whole",)
    out: dict[str, Any] = {"batch_rows": method.cfg.actor_batch, "batches": batches}
    out["data"] = {k: float(np.mean(c)) for k, c in columns.items()}
    good = columns["desirable"]
    out["desirable_rows"] = {k: float(np.mean(c[good])) if good.any() else np.nan
                             for k, c in columns.items()}  # fmt: skip
    out.update(actor_weighted_means(method, mix, member, rng, columns, batches, factors))
    return out


def _standardised(data: OfflineData, norm) -> OfflineData:
    with torch.no_grad():
        obs, nxt = (
            norm(torch.as_tensor(getattr(data, k))).numpy()
            for k in ("observations", "next_observations")
        )
    return dataclasses.replace(data, observations=obs, next_observations=nxt)


@dataclasses.dataclass
class LoadedRun:
    """A UNIQ run's networks (a batched job's: every member's) and its data, as it trained."""

    method: Any
    member: int
    """The member of ``method`` that is the run's seed (0 when not batched)."""
    un: OfflineData
    mix: OfflineData
    """The data as the networks saw them (standardised when the run standardised them)."""
    step: int
    name: str
    spec: Any
    """The task."""
    obs_norm: bool
    """Whether the networks see standardised observations (``un`` and ``mix`` are so)."""

    def mix_tau(self) -> np.ndarray:
        """tau of every D_MIX row as the update reads it (the frozen classifiers' table), the
        run's member's: ``[N, 2]`` (tau(s), tau(s')), or ``[N, 1]`` (tau(s, a)) in that form."""
        tau = self.method._tau["mix"]
        return (tau if self.method.members is None else tau[self.member]).cpu().numpy()


def load_run(
    run_dir: str | os.PathLike,
    seed: int = 0,
    spec=None,
    member_seed: int | None = None,
    data_paths: dict[str, str] | None = None,
) -> LoadedRun:
    """A UNIQ run's or training job's networks on its data: ``run_dir``, ``member_seed`` and
    ``data_paths`` as for :func:`diagnose`; ``seed`` seeds the policy's samples."""
    from uniq import registry
    from uniq.method import build_config

    run = Path(run_dir)
    if (run / "config.yaml").is_file():
        if member_seed is not None or data_paths is not None:
            raise ValueError(
                f"{run} is a run's folder: its config.yaml names its seed and data (--member, "
                "--un and --mix are for a training job's checkpoint folder)"
            )
        config = yaml.safe_load((run / "config.yaml").read_text())
    elif (run / CHECKPOINT).is_file():
        config = _training_job(run, member_seed, data_paths)
    else:
        raise FileNotFoundError(f"{run}: neither config.yaml (a run) nor {CHECKPOINT} (a job)")
    # A seed trained in a batched job: its networks are member k of the job's checkpoint,
    # kept in the job's sibling folder (uniq.job.seed_dirs).
    seeds = config.get("loop", {}).get("seeds_trained_together")
    members, member, ckpt_dir = None, 0, run
    if seeds:
        members, member = len(seeds), seeds.index(config["seed"])
        ckpt_dir = run.parent / Path(config["loop"]["checkpoint_dir"]).name
    ckpt = read_saved(ckpt_dir / CHECKPOINT, "diagnose reads a checkpoint a run has written")
    cls = registry.get_method(config["base_algo"])
    if cls.name != "uniq":
        raise ValueError(f"{run}: a {cls.name} run; diagnose reads UNIQ's critic and ratios")
    if spec is None:
        spec = registry.get_task(config["task"])
    un = OfflineData.load(config["data"]["un"]["path"], spec)
    mix = OfflineData.load(config["data"]["mix"]["path"], spec)
    for name, data in (("un", un), ("mix", mix)):
        want = config["data"][name].get("checksum")
        if want and want != dataset_checksum(data):
            fix = (
                "regenerate the profile's data (profiles/continue.sh)"
                if (run / "config.yaml").is_file()
                else "give the job's files (--un, --mix)"
            )
            raise ValueError(
                f"{config['data'][name]['path']}: not the {name} data {run} was trained on "
                f"(its checksum differs); {fix}"
            )
    device = torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the policy samples inside V
    # The run's networks saw the data as the loop gave it: standardised or not, as recorded.
    data = make_sources(un, mix, device, gen, obs_norm=config.get("obs_norm", False))
    cfg = build_config(cls.Config, config["config"])
    if data.obs_norm is not None:  # the rows below are read from the files: standardise them too
        un, mix = (_standardised(d, data.obs_norm) for d in (un, mix))
    method = (
        cls(cfg, spec, data, device, 0)
        if members is None
        else cls(cfg, spec, data, device, 0, members=members)
    )
    method.load_state_dict(ckpt["method"])
    method.actor.eval()
    return LoadedRun(
        method, member, un, mix, int(ckpt["step"]), str(run), spec, data.obs_norm is not None
    )


def diagnose(
    run_dir: str | os.PathLike,
    max_rows: int = 20_000,
    seed: int = 0,
    spec=None,
    member_seed: int | None = None,
    data_paths: dict[str, str] | None = None,
    weight_batches: int = 100,
) -> dict[str, Any]:
    """Per-group means and AUCs (see the module docstring) of a UNIQ run's networks, and the
    actor's weights over ``weight_batches`` training batches.

    ``run_dir``: a run folder (its ``config.yaml`` names the data and, for a batched job, the
    job's checkpoint folder), or a job still training: a folder with only ``checkpoint.pt``
    (see :func:`_training_job`; ``member_seed`` picks the seed of a batched job, default its
    first; ``data_paths``: 'un', 'mix' -> the files it trains on, default the workflow's).
    ``spec``: the task (default: the registered task named in the run's config).
    """
    loaded = load_run(run_dir, seed, spec, member_seed, data_paths)
    method, member, un, mix = loaded.method, loaded.member, loaded.un, loaded.mix
    rng = np.random.default_rng(seed)
    groups = {
        "un": np.arange(len(un)),
        "mix_desirable": np.flatnonzero(mix.is_desirable > 0.5),
        "mix_undesirable": np.flatnonzero(mix.is_desirable <= 0.5),
    }
    scores = {}
    for name, idx in groups.items():
        src = un if name == "un" else mix
        idx = rng.choice(idx, min(max_rows, len(idx)), replace=False) if len(idx) else idx
        rows = {k: torch.as_tensor(getattr(src, k)[idx]) for k in
                ("observations", "actions", "next_observations", "terminals")}  # fmt: skip
        scores[name] = _scores(method, rows, member)
    report: dict[str, Any] = {
        "run": loaded.name,
        "step": loaded.step,
        "rows": {},
        "mean": {},
        "auc": {},
        "actor_weight": _actor_weights(method, mix, member, rng, weight_batches),
    }
    for name in GROUPS:
        report["rows"][name] = int(len(next(iter(scores[name].values()))))
    for key in scores["un"]:
        report["mean"][key] = {g: float(np.mean(scores[g][key])) for g in GROUPS}
        good = scores["mix_desirable"][key]
        sign = -1 if key == "tau" else 1  # desirable rows should have low tau, high reward
        report["auc"][key] = {
            f"desirable>{g}": auc(sign * good, sign * scores[g][key])
            for g in ("un", "mix_undesirable")
        }
    return report


def _training_job(
    job: Path, member_seed: int | None, data_paths: dict[str, str] | None
) -> dict[str, Any]:
    """What config.yaml would say of a job still training (only its ``checkpoint.pt`` so far),
    from the checkpoint's identity: for a look at a long run part-way. Its data: ``data_paths``,
    else the workflow's layout (``results/P/runs/ENV/VARIANT/ALGO/seed...`` trains on
    ``results/P/data/ENV/VARIANT/{un,mix}.h5``); either way checked against the checksums the
    checkpoint keeps."""
    saved = read_saved(job / CHECKPOINT, "diagnose reads a checkpoint a run has written", mmap=True)
    identity = saved.get("identity") if isinstance(saved, dict) else None
    if not isinstance(identity, dict) or "dataset_checksums" not in identity:
        raise ValueError(f"{job / CHECKPOINT}: no job identity (written by an older version)")
    seeds = identity["seed"] if isinstance(identity["seed"], list) else [identity["seed"]]
    if member_seed is None:
        member_seed = seeds[0]
    if member_seed not in seeds:
        raise ValueError(f"{job}: seed {member_seed} is not one of the job's seeds {seeds}")
    if data_paths is None:
        layout = job.resolve().parents
        if len(layout) < 5 or layout[3].name != "runs":
            raise ValueError(
                f"{job}: not in a workflow's runs/ENV/VARIANT/ALGO folder; give its data "
                "(--un, --mix)"
            )
        data = layout[4] / "data" / layout[2].name / layout[1].name
        data_paths = {"un": str(data / "un.h5"), "mix": str(data / "mix.h5")}
    config = {
        "base_algo": identity["base_algo"],
        "task": identity["task"],
        "seed": member_seed,
        "config": identity["config"],
        "obs_norm": identity["obs_norm"],
        "data": {
            name: {"path": data_paths[name], "checksum": identity["dataset_checksums"][name]}
            for name in ("un", "mix")
        },
    }
    if len(seeds) > 1:
        config["loop"] = {"seeds_trained_together": seeds, "checkpoint_dir": job.name}
    return config


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"{report['run']} (step {report['step']}; rows per group {report['rows']})",
        "",
        "| quantity | D_UN | D_MIX desirable | D_MIX undesirable | AUC desirable vs D_UN | AUC desirable vs undesirable |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, means in report["mean"].items():
        a = report["auc"][key]
        lines.append(
            f"| {key} | {means['un']:.3g} | {means['mix_desirable']:.3g} | "
            f"{means['mix_undesirable']:.3g} | {a['desirable>un']:.3f} | "
            f"{a['desirable>mix_undesirable']:.3f} |"
        )
    lines.append("")
    lines.append("AUC: P(a desirable row has lower tau / higher reward or advantage); 0.5 = none.")
    w = report["actor_weight"]
    lines += [
        "",
        f"The actor's weights as in training, over {w['batches']} batches of {w['batch_rows']} "
        "D_MIX rows (mean ± a standard error over the batches):",
        "",
        "| weight | on desirable rows | reward per row | cost per row | on rows of reward < 0 "
        "| effective rows a batch | rows at the cap |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| none (D_MIX) | {w['data']['desirable']:.1%} | {w['data']['reward']:.3g} | "
        f"{w['data']['cost']:.3g} | {w['data']['negative_reward']:.1%} | {w['batch_rows']} | |",
        f"| none, desirable rows only (BC-safe's) | {w['desirable_rows']['desirable']:.0%} | "
        f"{w['desirable_rows']['reward']:.3g} | {w['desirable_rows']['cost']:.3g} | "
        f"{w['desirable_rows']['negative_reward']:.1%} | | |",
    ]
    for factor, name in FACTORS.items():
        if factor in w:
            f = w[factor]
            lines.append(
                f"| {name} | {f['desirable']:.1%} ± {f['desirable_se']:.1%} | "
                f"{f['reward']:.3g} ± {f['reward_se']:.2g} | {f['cost']:.3g} ± "
                f"{f['cost_se']:.2g} | {f['negative_reward']:.1%} ± "
                f"{f['negative_reward_se']:.1%} | {f['effective_rows']:.1f} | "
                f"{f['at_cap']:.1%} |"
            )
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], path: str | os.PathLike) -> None:
    from uniq.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
