"""``uniq-bench plan``: what a profile costs, measured on this machine before launch.

A price is (the profile's job grid) x (what one unit of each job's work costs here):

- the grid: every job Snakemake would run for the config, from :mod:`uniq.workflow`'s
  planning functions (the same ones the Snakefile calls), rule by rule;
- the units, each a short timed burst (:func:`measure`, about a minute or two in all):
  a process's start-up (a job is one ``uniq-bench`` process), each configured algorithm's
  update at its configured sizes and seeds per job, on the device the jobs would use
  (:mod:`uniq.measure`), its pretraining per step and per data row, and per task an env's
  build, reset and step, a policy's forward and the demonstrator trainers' updates
  (:mod:`envs.speed`).

Each job's price is its start-up plus its units times its counts (updates, episodes x
horizon, pretraining steps), so a job-hour here is one such process on ``threads`` threads of
this machine, loaded as it is now. Not priced: reading and writing data files, checkpoints,
the bootstrap of ``aggregate`` and the plotting of ``figures`` beyond their start-up, and
early stops (UNIQ's classifier stop rule, PPO's KL stop): each is priced at its cap.

:func:`uniq.jobtimes.check` compares a price with the ``benchmark:`` files of a run
(``logs/<profile>/benchmarks/<rule>/*.tsv``), job by job.

This module is workflow glue (design.md section 2): it joins the config, the methods and the
environments, so it may import ``envs/``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from uniq import workflow as W

RULES = ("demonstrator", "rollouts", "dataset", "train", "evaluate", "aggregate", "figures", "all")
"""Rows of a price, as the benchmark files group them (``logs/P/benchmarks/<rule>/``):
``rollouts`` includes ``dsrl_rollouts``, ``aggregate`` includes ``aggregate_last_k``,
``figures`` every ``figures_<exp>``; ``all`` is Snakemake's target job (no work)."""
POLICY_HIDDEN = 256
"""Width of the policy a rollout job runs (demonstrators: SAC 256, PPO 64; the wider one)."""


@dataclass
class Job:
    rule: str
    seconds: float
    threads: int = 1
    gpu: bool = False
    bench: str = ""
    """Its benchmark file, relative to logs/<profile>/benchmarks/ (the Snakefile's paths)."""


@dataclass
class Units:
    """What one unit of each kind of work costs here (seconds), from :func:`measure`."""

    startup_s: float = 0.0
    env: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> EnvCost fields
    policy: dict[str, float] = field(default_factory=dict)  # "hidden x batch" -> s per forward
    update: dict[str, float] = field(
        default_factory=dict
    )  # "algo xK" (K seeds per job) -> s per update
    pretrain: dict[str, list[float]] = field(default_factory=dict)  # algo -> [s/step, s/row]
    demo: dict[str, float] = field(default_factory=dict)  # "task kind" -> s per update/epoch
    measured_on: dict[str, Any] = field(default_factory=dict)
    measure_s: float = 0.0


# ---------------------------------------------------------------------------- the config
def load_config(path: str | os.PathLike) -> dict:
    """The profile's config as the Snakefile sees it (schema defaults filled in, checked)."""
    return W.check_file(path)


def train_jobs(config: dict) -> list[tuple[str, str, str, list[int]]]:
    """(env, variant, algo, the seeds the job trains): one job per seed, or per (env,
    variant, algo) with ``train.batch_seeds`` (the Snakefile's two train rules)."""
    runs = W.all_runs(config)
    if not config["train"]["batch_seeds"]:
        return [(r.env, r.variant, r.algo, [r.seed]) for r in runs]
    groups = sorted({(r.env, r.variant, r.algo) for r in runs})
    return [(*g, W.all_seeds(config)) for g in groups]


BENCH = {
    "demonstrator": "demonstrator/{env}_{kind}.tsv",
    "rollouts": "rollouts/{env}_{kind}.tsv",
    "dsrl_rollouts": "rollouts/{env}_dsrl.tsv",  # one job writes both kinds
    "dataset": "dataset/{env}_{variant}.tsv",
    "train": "train/{env}/{variant}/{algo}/seed{seed}.tsv",
    "train_batched": "train/{env}/{variant}/{algo}/seeds.tsv",
    "evaluate": "evaluate/{env}/{variant}/{algo}/seed{seed}.tsv",
}
"""Each rule's benchmark file under logs/<profile>/benchmarks/, in its wildcards: the
Snakefile's ``benchmark:`` paths are these, and a price names its jobs by them."""


def train_job_path(config: dict, env: str, variant: str, algo: str, seeds: list[int]) -> str:
    """A training job's name in the Snakefile's log paths, ``{env}/{variant}/{algo}/seeds``
    (seeds batched) or ``.../seed{S}`` (``logs/<profile>/train/<it>.log``)."""
    name = "seeds" if config["train"]["batch_seeds"] else f"seed{seeds[0]}"
    return f"{env}/{variant}/{algo}/{name}"


def train_bench(config: dict, env: str, variant: str, algo: str, seeds: list[int]) -> str:
    """A training job's benchmark file (:data:`BENCH`)."""
    rule = "train_batched" if config["train"]["batch_seeds"] else "train"
    return BENCH[rule].format(env=env, variant=variant, algo=algo, seed=seeds[0])


def evaluate_bench(run: W.Run) -> str:
    """An evaluation job's benchmark file (:data:`BENCH`)."""
    return BENCH["evaluate"].format(**run._asdict())


def _kinds_per_job(config: dict, env: str) -> list[str]:
    return ["dsrl"] if W.data_source(config, env) == "dsrl" else list(W.KINDS)


# ---------------------------------------------------------------------------- measuring
def measure(config: dict, device: str = "cpu", budget_s: float = 0.6) -> Units:
    """Time each unit of work the config's jobs do (see the module docstring)."""
    import torch

    from envs import speed
    from uniq import measure as M
    from uniq import registry

    started = time.perf_counter()
    logging.getLogger("uniq").setLevel(logging.WARNING)  # the bursts' pretraining chatter
    logging.getLogger("baselines").setLevel(logging.WARNING)
    units = Units(startup_s=_startup_seconds())
    tasks = list(config["tasks"])
    torch.set_num_threads(1)  # env-bound jobs are single-threaded (Snakefile: threads 1)
    for task in tasks:  # stepped by a committed demonstrator where there is one: see env_cost
        units.env[task] = asdict(speed.env_cost(task, policy=_stepping_policy(task)))
    widest = max((registry.get_task(t) for t in tasks), key=lambda s: s.obs_dim)
    for hidden, batch in _policy_shapes(config):
        units.policy[f"{hidden}x{batch}"] = speed.policy_cost(widest, hidden, batch)
    for task, kind in _demo_jobs(config):
        units.demo[f"{task} {kind}"] = _demo_update_seconds(config, task, kind)

    # Updates on the device, on the widest task trained (an upper bound: the first layer is
    # the only one that grows with the observation), on one CPU thread: the CPU time of two
    # threads on a busy machine counts the spinning of a thread waiting for its descheduled
    # twin (measured: the same burst doubled between two runs), one thread's does not. A job's
    # own `threads` then shorten its wall at best in proportion (summarize's longest job).
    dev = torch.device(_resolve_device(device))
    trained = {env for env, *_ in train_jobs(config)}
    spec = max((registry.get_task(t) for t in trained), key=lambda s: s.obs_dim, default=widest)
    steps = config["train"]["steps"]
    for algo, members in sorted({(a, len(k)) for _, _, a, k in train_jobs(config)}):
        method, overrides = W.method_of(config, algo), config["algorithms"][algo].get("set", {})
        built = M.build(method, spec, dev, overrides, members, steps)
        units.update[f"{algo} x{members}"] = M.update_seconds(built, budget_s=budget_s)
        if algo not in units.pretrain:
            units.pretrain[algo] = list(M.pretrain_cost(method, spec, dev, overrides))
    units.measured_on = _machine(dev, torch.get_num_threads(), spec.name)
    units.measure_s = time.perf_counter() - started
    return units


def _startup_seconds() -> float:
    """One process importing what a job imports (torch, the CLI, the methods, the envs)."""
    code = (
        "import torch, uniq.cli, uniq.train, envs.evaluate, envs.collect, envs.compat;"
        "envs.compat.import_safety_gymnasium();"
        "from uniq import registry; registry.available()"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _stepping_policy(task: str) -> str | None:
    """The task's committed unsafe demonstrator (it reaches goals and buttons most, and so
    costs the most per step), if this checkout has it."""
    from envs.tasks import committed_demonstrator

    path = Path(committed_demonstrator(task, "unsafe"))
    return str(path) if path.exists() else None


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _machine(dev, threads: int, task: str) -> dict[str, Any]:
    import torch

    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor()
    return {
        "host": platform.node(), "cpus": os.cpu_count(), "device": str(dev),
        "device_name": name or platform.machine(), "update_threads": threads,
        "update_task": task, "load_average": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }  # fmt: skip


def _policy_shapes(config: dict) -> set[tuple[int, int]]:
    """(hidden, batch) of every policy forward the jobs run: rollouts, evaluation, curves."""
    shapes = {(POLICY_HIDDEN, config["rollouts"]["num_envs"])}
    for algo in config["algorithms"]:
        hidden = _hidden(config, algo)
        shapes |= {(hidden, config["evaluate"]["num_envs"]), (hidden, 1)}
    return shapes


def _hidden(config: dict, algo: str) -> int:
    from uniq import registry
    from uniq.method import build_config

    cls = registry.get_method(W.method_of(config, algo))
    cfg = build_config(cls.Config, config["algorithms"][algo].get("set"), algo)
    return int(getattr(cfg, "hidden", POLICY_HIDDEN))


def _demo_jobs(config: dict) -> list[tuple[str, str]]:
    return [
        (t, k)
        for t in config["tasks"]
        if W.data_source(config, t) == "demonstrator"
        for k in W.KINDS
    ]


def _demo_config(config: dict, task: str):
    """(algo, the trainer's config with the profile's overrides) of a task's demonstrators."""
    from envs.demonstrators import DemoConfig
    from envs.ppo import PPOConfig
    from envs.tasks import get_task

    algo = get_task(task).demo_algo
    cls, key = (DemoConfig, "set") if algo == "sac" else (PPOConfig, "ppo_set")
    return algo, cls(**config["demonstrator"].get(key, {}))


def _demo_update_seconds(config: dict, task: str, kind: str) -> float:
    from envs import speed
    from envs.tasks import get_task

    algo, cfg = _demo_config(config, task)
    spec, safe = get_task(task), kind == "safe"
    if algo == "sac":
        return speed.sac_update_cost(spec, cfg, safe)
    return speed.ppo_epoch_update_cost(spec, cfg, safe)


# ---------------------------------------------------------------------------- pricing
def jobs(config: dict, units: Units | None = None) -> list[Job]:
    """Every job of the profile with its price (seconds on this machine; 0 without ``units``:
    the grid alone, as counted in the README)."""
    from uniq import registry

    units = units or _free_units()

    def episodes_s(task: str, episodes: int, num_envs: int, hidden: int | None) -> float:
        """``episodes`` whole episodes on ``num_envs`` in-process envs (envs/rollout.py)."""
        e, horizon = units.env[task], registry.get_task(task).max_episode_steps
        n = min(num_envs, episodes)
        forwards = math.ceil(episodes / n) * horizon * (units.policy.get(f"{hidden}x{n}", 0.0))
        return n * e["build_s"] + episodes * (e["reset_s"] + horizon * e["step_s"]) + forwards

    # Each job is named by its benchmark file under logs/<profile>/benchmarks/ (the
    # Snakefile's `benchmark:` paths), so a run's files are matched to it job by job.
    start, out = units.startup_s, []
    for task, kind in _demo_jobs(config):
        seconds = start + _demo_seconds(config, task, kind, units)
        bench = BENCH["demonstrator"].format(env=task, kind=kind)
        out.append(Job("demonstrator", seconds, 1, True, bench))
    for task in config["tasks"]:
        for kind in _kinds_per_job(config, task):
            work = 0.0
            if kind != "dsrl":  # a DSRL split reads a file: start-up only
                scripted = W.data_source(config, task) == "scripted"
                episodes = W.rollout_episodes(config, task, kind)
                hidden = None if scripted else POLICY_HIDDEN
                work = episodes_s(task, episodes, config["rollouts"]["num_envs"], hidden)
            bench = BENCH["rollouts"].format(env=task, kind=kind)
            out.append(Job("rollouts", start + work, 1, False, bench))
        for variant in W.env_variants(config, task):
            bench = BENCH["dataset"].format(env=task, variant=variant)
            out.append(Job("dataset", start, 1, False, bench))
    train, ev = config["train"], config["evaluate"]
    paid: set = set()  # cached pretraining priced once (measure.shared_pretraining)
    for env, variant, algo, seeds in train_jobs(config):
        k = len(seeds)
        seconds = start + _train_seconds(config, env, variant, algo, k, units, episodes_s, paid)
        bench = train_bench(config, env, variant, algo, seeds)
        out.append(Job("train", seconds, train["threads"], True, bench))
    for run in W.all_runs(config):
        work = episodes_s(run.env, ev["episodes"], ev["num_envs"], _hidden(config, run.algo))
        out.append(Job("evaluate", start + work, 1, False, evaluate_bench(run)))
    last_k = config["aggregate"].get("last_k", 0)
    for exp in config["experiments"]:
        out.append(Job("aggregate", start, bench=f"aggregate/{exp}.tsv"))
        if last_k:
            out.append(Job("aggregate", start, bench=f"aggregate/{exp}_last{last_k}.tsv"))
        out.append(Job("figures", start, bench=f"figures/{exp}.tsv"))
    out.append(Job("all", 0.0))
    return out


def _free_units() -> Units:
    """Units that cost nothing, whatever is asked of them."""
    free = defaultdict(float)
    return Units(env=defaultdict(lambda: free), policy=free, update=free,
                 pretrain=defaultdict(lambda: (0.0, 0.0)), demo=free)  # fmt: skip


def job_counts(config: dict) -> dict[str, int]:
    """Jobs per rule (:data:`RULES`) and ``total``, as ``snakemake -n`` counts them."""
    counts = {rule: 0 for rule in RULES}
    for job in jobs(config):
        counts[job.rule] += 1
    return {**counts, "total": sum(counts.values())}


def _train_seconds(
    config, env, variant, algo, seeds, units: Units, episodes_s: Callable, paid: set
) -> float:
    """Pretraining (each seed apart, or once per dataset where a cache shares it: ``paid``
    holds the fits already priced), the updates, and the learning-curve evaluations."""
    from uniq import measure as M
    from uniq import registry

    train = config["train"]
    method, overrides = W.method_of(config, algo), config["algorithms"][algo].get("set", {})
    split = W.variant_params(config, variant)
    rows = (
        split["n_un"] + split["n_mix_desirable"] + split["n_mix_undesirable"]
    ) * registry.get_task(env).max_episode_steps
    per_step, per_row = units.pretrain.get(algo, (0.0, 0.0))
    fits = seeds  # each seed pretrains its own, unless a cache shares one fit per dataset
    shared = M.shared_pretraining(method, overrides)
    if shared is not None:
        fits = 0 if (env, variant, shared) in paid else 1
        paid.add((env, variant, shared))
    pretrain = fits * (M.pretrain_steps(method, overrides) * per_step + rows * per_row)
    updates = train["steps"] * units.update[f"{algo} x{seeds}"]
    if not registry.get_method(method).supports_members:
        updates *= seeds  # trained one seed after another (uniq/train.py)
    curve = 0.0
    if train["eval_every"]:
        points = math.ceil(train["steps"] / train["eval_every"])
        curve = points * seeds * episodes_s(env, train["eval_episodes"], 1, _hidden(config, algo))
    return pretrain + updates + curve


def _demo_seconds(config: dict, task: str, kind: str, units: Units) -> float:
    from envs.tasks import get_task

    algo, cfg = _demo_config(config, task)
    spec, steps = get_task(task), W.demo_steps(config, task)
    e, update = units.env[task], units.demo[f"{task} {kind}"]
    stepping = steps * e["step_s"] + steps / spec.max_episode_steps * e["reset_s"] + e["build_s"]
    if algo == "sac":  # one env, one actor forward and (after start_steps) one update per step
        acting = steps * units.policy.get(f"{POLICY_HIDDEN}x1", 0.0)
        return stepping + acting + max(0, steps - cfg.start_steps) / cfg.update_every * update
    epochs = math.ceil(steps / cfg.epoch_steps)  # num_envs envs, one update per epoch
    return stepping + epochs * update


# ---------------------------------------------------------------------------- the table
def summarize(all_jobs: list[Job], cores: int, gpus: int = 0, jobs_per_gpu: int = 4) -> dict:
    """Per rule: jobs, job-hours (a job's seconds: CPU seconds of all its threads, or device
    wall seconds for a train job on a GPU) and the wall hours on ``cores`` cores (train jobs
    sharing ``gpus`` GPUs, ``jobs_per_gpu`` each, as uniq/devices.py does) if the rule ran
    alone on an idle machine, packed perfectly, never shorter than its longest job (its
    seconds over its threads); and the total, whose wall is also never shorter than the chain
    of each rule's longest job (demonstrator -> rollouts -> ... -> figures)."""
    slots = min(gpus * jobs_per_gpu, cores)

    def on_gpu(job: Job) -> bool:
        return bool(slots) and job.gpu

    rules: dict[str, dict[str, float]] = {}
    for rule in RULES:
        mine = [j for j in all_jobs if j.rule == rule]
        if not mine:
            continue
        hours = sum(j.seconds for j in mine) / 3600
        wall = hours / (slots if on_gpu(mine[0]) else cores)
        longest = max(j.seconds / j.threads for j in mine) / 3600
        rules[rule] = {
            "jobs": len(mine), "job_hours": hours, "wall_hours": max(wall, longest),
            "longest_job_hours": longest, "threads": mine[0].threads,
        }  # fmt: skip
    cpu_h = sum(j.seconds for j in all_jobs if not on_gpu(j)) / 3600
    gpu_h = sum(j.seconds for j in all_jobs if on_gpu(j)) / 3600
    chain = sum(r["longest_job_hours"] for r in rules.values())
    wall = max(cpu_h / cores, gpu_h / slots if slots else 0.0, chain)
    total = {"jobs": len(all_jobs), "job_hours": cpu_h + gpu_h, "wall_hours": wall}
    return {"rules": rules, "total": total, "cores": cores, "gpus": gpus if slots else 0}


def plan(
    config: dict, cores: int, gpus: int = 0, device: str = "cpu", units: Units | None = None,
    budget_s: float = 0.6,
) -> dict:  # fmt: skip
    """Measure (unless ``units`` is given) and price ``config``: :func:`summarize` plus the
    profile, the units and where they were measured. ``gpus`` count only when the updates
    were measured on a GPU (otherwise the train jobs are priced on the CPU)."""
    units = units or measure(config, device, budget_s)
    on_gpu = str(units.measured_on.get("device", "cpu")).startswith("cuda")
    all_jobs = jobs(config, units)
    summary = summarize(all_jobs, cores, gpus if on_gpu else 0)
    listed = [{"rule": j.rule, "bench": j.bench, "seconds": j.seconds} for j in all_jobs]
    return {"profile": config["profile"], **summary, "units": asdict(units), "jobs": listed}


def duration(hours: float) -> str:
    """``hours`` as a person reads it (seconds, minutes, hours, days)."""
    if hours < 1 / 60:
        return f"{hours * 3600:.0f} s"
    if hours < 1:
        return f"{hours * 60:.1f} min"
    return f"{hours:.1f} h" if hours < 48 else f"{hours:,.0f} h ({hours / 24:,.0f} d)"


def table(result: dict) -> str:
    """The price as text: per rule, the total, and what it was measured on."""
    where, units = result["units"]["measured_on"], result["units"]
    gpus = f" + {result['gpus']} GPU(s)" if result["gpus"] else ""
    lines = [
        f"Price of profile {result['profile']!r} on {result['cores']} cores{gpus}",
        "",
        f"| rule | jobs | job-hours | wall on {result['cores']} cores{gpus} | longest job |",
        "|---|---:|---:|---:|---:|",
    ]
    for rule, r in result["rules"].items():
        lines.append(
            f"| {rule} | {r['jobs']} | {r['job_hours']:,.2f} | {duration(r['wall_hours'])} "
            f"| {duration(r['longest_job_hours'])} |"
        )
    t = result["total"]
    lines += [
        f"| **total** | **{t['jobs']}** | **{t['job_hours']:,.2f}** "
        f"| **{duration(t['wall_hours'])}** | |",
        "",
        f"Measured on this machine ({where['host']}: {where['cpus']} CPUs, load average "
        f"{where['load_average']}, {where['date']}; measuring took {units['measure_s']:.0f} s): "
        f"updates on {where['device']} ({where['device_name']}, {where['update_threads']} "
        f"thread(s), {where['update_task']}'s dimensions), env steps on 1 CPU thread, a job's "
        f"start-up {units['startup_s']:.1f} CPU s. Job-hours are CPU hours (all of a job's "
        "threads; device hours for train jobs on a GPU); wall = job-hours / cores on an idle "
        "machine, never shorter than the longest job or the chain of stages. Other jobs on "
        "the machine stretch the wall; another machine or device gives another price.",
    ]
    return "\n".join(lines) + "\n"


def dump(result: dict, path: str | os.PathLike) -> None:
    from uniq.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=1) + "\n")


def load_price(path: str | os.PathLike, config: dict) -> dict:
    """A price written by ``uniq-bench plan --json`` for this config: of its profile, and
    naming every job the config makes (a price of an older config would leave the new jobs
    out of the priorities and of the time left)."""
    rewrite = f"rewrite it with `uniq-bench plan --configfile ... --json {path}`"
    try:
        price = json.loads(Path(path).read_text())
    except OSError as err:
        raise ValueError(f"{path}: cannot read the price ({err.strerror}); {rewrite}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a price (not JSON: {err}); {rewrite}") from None
    if not isinstance(price, dict) or not isinstance(price.get("jobs"), list):
        raise ValueError(f"{path}: not a price (no list of `jobs`); {rewrite}")
    if price.get("profile") != config["profile"]:
        raise ValueError(
            f"{path} is a price of profile {price.get('profile')!r}, not "
            f"{config['profile']!r}; {rewrite}"
        )
    priced = {j.get("bench") for j in price["jobs"] if isinstance(j, dict)}
    missing = sorted(j.bench for j in jobs(config) if j.rule != "all" and j.bench not in priced)
    if missing:
        raise ValueError(
            f"{path} is a price of an older config: {len(missing)} of the profile's jobs are "
            f"not in it (e.g. {missing[0]}); {rewrite}"
        )
    return price


def config_price(config: dict, root: str | os.PathLike = ".") -> dict | None:
    """The price the config names (``price:``, relative to the workflow's folder ``root``),
    checked by :func:`load_price`; None if it names none."""
    if not config.get("price"):
        return None
    try:
        return load_price(Path(root) / config["price"], config)
    except ValueError as err:
        raise W.WorkflowConfigError(f"config `price`: {err}") from None


# ---------------------------------------------------------------------------- the order
def priorities(config: dict, price: dict, left: dict[str, float] | None = None) -> dict[str, int]:
    """Snakemake priorities from a price, keyed by benchmark name: each job's minutes to the
    end of the longest chain it starts (itself, then the longest job of each later stage on
    its task), so that the longest chains start first. On 2 cores a profile whose longest
    job is a third of its work loses hours if that job happens to start last. A job the
    price does not hold counts as free (load_price refuses a price that lacks any).

    ``left``: training job -> the share of its updates still to do (uniq.progress.updates_left;
    a job absent has all of them): a job resumed at half its updates counts half its price, so
    a resumed profile starts the longest work *left* first, not the longest job priced."""
    seconds = {j["bench"]: j["seconds"] for j in price["jobs"]}
    left = left or {}
    chain: dict[str, float] = {}
    after: dict[tuple[str, str], float] = defaultdict(float)  # (env, variant) -> longest train
    runs = W.all_runs(config)
    for env, variant, algo, seeds in train_jobs(config):
        bench = train_bench(config, env, variant, algo, seeds)
        mine = [r for r in runs if r[:3] == (env, variant, algo) and r.seed in seeds]
        evaluation = max((seconds.get(evaluate_bench(r), 0.0) for r in mine), default=0.0)
        chain[bench] = seconds.get(bench, 0.0) * left.get(bench, 1.0) + evaluation
        after[env, variant] = max(after[env, variant], chain[bench])
    for task in config["tasks"]:
        data = 0.0
        for variant in W.env_variants(config, task):
            bench = BENCH["dataset"].format(env=task, variant=variant)
            chain[bench] = seconds.get(bench, 0.0) + after[task, variant]
            data = max(data, chain[bench])
        for kind in _kinds_per_job(config, task):
            bench = BENCH["rollouts"].format(env=task, kind=kind)
            chain[bench] = seconds.get(bench, 0.0) + data
    for task, kind in _demo_jobs(config):
        bench = BENCH["demonstrator"].format(env=task, kind=kind)
        rollouts = BENCH["rollouts"].format(env=task, kind=kind)
        chain[bench] = seconds.get(bench, 0.0) + chain[rollouts]
    return {bench: round(s / 60) for bench, s in chain.items()}
