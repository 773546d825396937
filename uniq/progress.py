"""Where a profile's run stands, read from its files: ``uniq-bench progress``.

A long profile (config/paper_data.yaml: about 16 h on 2 cores) runs over several working
sessions and machines, stopped and resumed many times. Snakemake names the outputs still
missing, not how far a job stopped part-way has come; this reads each training job's folder:

- **done**: every seed's ``policy.pt`` and ``train_log.csv``;
- **training**: its checkpoint's step (where a rerun resumes), the step its log has
  reached, its update rate over the log's last :data:`WINDOWS` rows (curve evaluations
  included) and the hours left at that rate;
- **pretraining**: the seeds ``pretrain.pt`` keeps (one after another, before the first
  checkpoint);
- **started**: its folders exist, nothing kept yet (a first seed pretraining, or stopped);
- **not started**;

each with the age of its newest file (a job whose files are hours old is not running), then
the evaluations done and any UNIQ ratio fit stopped part-way (``*.partial.pt``). Given a
price (``uniq-bench plan --json``), it also says what is left: the training jobs' updates at
their own rates, the jobs not yet training and the evaluations not done at their price.

    uv run uniq-bench plan --configfile config/paper_data.yaml --cores 2 --json price.json
    uv run uniq-bench progress --configfile config/paper_data.yaml --price price.json
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from uniq import workflow as W
from uniq.checkpoint import NAME as CHECKPOINT
from uniq.checkpoint import PRETRAIN_NAME as PRETRAIN
from uniq.job import seed_dirs
from uniq.plan import train_jobs

WINDOWS = 10
"""A training job's rate is read over its log's last this many rows."""


@dataclass
class JobState:
    """One training job's state (``step``: its checkpoint's; ``logged``: its log's)."""

    job: str
    bench: str
    """Its benchmark file under logs/<profile>/benchmarks/ (how a price names the job)."""
    state: str
    steps: int
    step: int = 0
    logged: int = 0
    rate: float = 0.0
    seeds_kept: int = 0
    seeds: int = 1
    age_s: float | None = None

    @property
    def hours_left(self) -> float | None:
        if self.state != "training" or self.rate <= 0:
            return None
        return (self.steps - self.logged) / self.rate / 3600


def training_jobs(config: dict, root: str | Path = ".") -> list[JobState]:
    """Every training job of the profile and its state (``root``: the workflow's folder)."""
    runs = Path(root) / "results" / config["profile"] / "runs"
    steps, out = int(config["train"]["steps"]), []
    for env, variant, algo, seeds in train_jobs(config):
        folders, job_dir = seed_dirs(runs / env / variant / algo / "seed{seed}", seeds)
        name = f"{env} {variant} {algo}"
        bench = f"train/{env}/{variant}/{algo}/" + (
            "seeds.tsv" if config["train"]["batch_seeds"] else f"seed{seeds[0]}.tsv"
        )  # the Snakefile's benchmark paths, as uniq.plan names the jobs
        files = [p for d in {*folders, job_dir} if d.is_dir() for p in d.iterdir()]
        age = time.time() - max(p.stat().st_mtime for p in files) if files else None
        state = JobState(name, bench, "not started", steps, seeds=len(seeds), age_s=age)
        if all((d / "policy.pt").is_file() and (d / "train_log.csv").is_file() for d in folders):
            state.state, state.step = "done", steps
        elif (job_dir / CHECKPOINT).is_file():
            state.state, state.step = "training", _checkpoint_step(job_dir / CHECKPOINT)
            state.logged, state.rate = _last_logged(folders[0] / "train_log.csv.part")
            state.logged = max(state.logged, state.step)
        elif (job_dir / PRETRAIN).is_file():
            state.state, state.seeds_kept = "pretraining", _seeds_kept(job_dir / PRETRAIN)
        elif files:
            state.state = "started"
        out.append(state)
    return out


def evaluations(config: dict, root: str | Path = ".") -> tuple[int, int]:
    """(evaluations done, evaluations planned)."""
    return len(config_evaluations(config, root)[0]), len(W.all_runs(config))


def config_evaluations(config: dict, root: str | Path = ".") -> tuple[list[str], list[str]]:
    """The evaluation jobs (named by their benchmark files): (done, not done)."""
    runs = Path(root) / "results" / config["profile"] / "runs"
    done, left = [], []
    for r in W.all_runs(config):
        bench = f"evaluate/{r.env}/{r.variant}/{r.algo}/seed{r.seed}.tsv"
        folder = runs / r.env / r.variant / r.algo / f"seed{r.seed}"
        (done if (folder / "eval.json").is_file() else left).append(bench)
    return done, left


def time_left(config: dict, price: dict, cores: int, root: str | Path = ".") -> dict[str, float]:
    """CPU hours left (``training``: the updates of jobs training, at their rates; ``priced``:
    jobs not yet training and evaluations not done, at the price) and the wall hours on
    ``cores`` idle cores, never shorter than the longest job left."""
    seconds = {j["bench"]: j["seconds"] for j in price["jobs"]}
    jobs, (_, evals) = training_jobs(config, root), config_evaluations(config, root)
    training = [j.hours_left or 0.0 for j in jobs if j.state == "training"]
    priced = [seconds.get(j.bench, 0.0) / 3600 for j in jobs if j.state not in ("done", "training")]
    priced += [seconds.get(b, 0.0) / 3600 for b in evals]
    total = sum(training) + sum(priced)
    longest = max([*training, *priced], default=0.0)
    return {"training": sum(training), "priced": sum(priced), "cpu_hours": total,
            "wall_hours": max(total / cores, longest), "cores": cores}  # fmt: skip


def load_price(path: str | os.PathLike, config: dict) -> dict:
    """A price written by ``uniq-bench plan --json`` for this profile."""
    price = json.loads(Path(path).read_text())
    if price.get("profile") != config["profile"] or "jobs" not in price:
        raise ValueError(
            f"{path} is not a price of profile {config['profile']!r} (profile "
            f"{price.get('profile')!r}); write one with `uniq-bench plan --configfile ... --json "
            f"{path}`."
        )
    return price


def table(config: dict, root: str | Path = ".", price: dict | None = None) -> str:
    """The progress report, in Markdown (with ``price``: the time left)."""
    jobs = training_jobs(config, root)
    lines = [
        f"# Progress of profile {config['profile']}",
        "",
        "| training job | state | step (checkpoint) | updates/s | hours left | newest file |",
        "|---|---|---|---|---|---|",
    ]
    for j in jobs:
        if j.state == "training":
            where = f"{j.logged} of {j.steps} ({j.step})"
        elif j.state in ("pretraining", "started"):
            where = f"{j.seeds_kept} of {j.seeds} seeds pretrained" if j.seeds > 1 else ""
        else:
            where = f"{j.step} of {j.steps}" if j.state == "done" else ""
        rate = f"{j.rate:.2f}" if j.state == "training" and j.rate else ""
        left = "" if j.hours_left is None else f"{j.hours_left:.1f}"
        lines.append(f"| {j.job} | {j.state} | {where} | {rate} | {left} | {_age(j.age_s)} |")
    states = ("done", "training", "pretraining", "started")
    counts = {s: sum(j.state == s for j in jobs) for s in states}
    done, planned = evaluations(config, root)
    lines += [
        "",
        f"Training jobs: {counts['done']} done, {counts['training']} training, "
        f"{counts['pretraining']} pretraining, {counts['started']} started, "
        f"{len(jobs) - sum(counts.values())} not started (of {len(jobs)}). "
        f"Evaluations: {done} of {planned}.",
    ]
    partial = sorted((Path(root) / "results" / config["profile"]).rglob("*.partial.pt"))
    if partial:
        lines.append(
            "UNIQ ratio fits stopped part-way (they resume there): "
            + ", ".join(str(p) for p in partial) + "."
        )  # fmt: skip
    if price is not None:
        left = time_left(config, price, price["cores"], root)
        lines.append(
            f"Left: {left['cpu_hours']:.1f} CPU-hours ({left['training']:.1f} of updates at "
            f"the training jobs' rates, {left['priced']:.1f} priced: the jobs not yet training, "
            f"at their whole price, and the evaluations not done), about "
            f"{left['wall_hours']:.1f} h on {left['cores']} idle cores."
        )
    lines.append(
        f"Hours left: the job's updates left at its rate over its log's last {WINDOWS} rows. "
        "The newest file's age tells a running job from a stopped one: training writes its "
        "log every window, pretraining keeps each seed as it ends. "
        "`uniq-bench plan` prices the jobs not started."
    )
    return "\n".join(lines) + "\n"


def _checkpoint_step(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["step"])


def _seeds_kept(path: Path) -> int:
    import torch

    return len(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["seeds"])


def _last_logged(part: Path) -> tuple[int, float]:
    """(step, updates per second) of a training log: its last row's step, and the rate over
    its last :data:`WINDOWS` rows (the job's wall time, which a resume carries on; one row:
    that row's own rate; (0, 0): no row yet)."""
    if not part.is_file():
        return 0, 0.0
    with open(part, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return 0, 0.0
    last, first = rows[-1], rows[max(0, len(rows) - 1 - WINDOWS)]
    steps = int(last["step"]) - int(first["step"])
    seconds = float(last["wall_time_s"]) - float(first["wall_time_s"])
    rate = steps / seconds if steps > 0 and seconds > 0 else float(last["updates_per_s"] or 0)
    return int(last["step"]), rate


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
