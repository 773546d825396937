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
the evaluations done and any UNIQ ratio fit stopped part-way (``*.partial.pt``).

    uv run uniq-bench progress --configfile config/paper_data.yaml
"""

from __future__ import annotations

import csv
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
        files = [p for d in {*folders, job_dir} if d.is_dir() for p in d.iterdir()]
        age = time.time() - max(p.stat().st_mtime for p in files) if files else None
        state = JobState(name, "not started", steps, seeds=len(seeds), age_s=age)
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
    runs = Path(root) / "results" / config["profile"] / "runs"
    planned = W.all_runs(config)
    done = sum(
        (runs / r.env / r.variant / r.algo / f"seed{r.seed}" / "eval.json").is_file()
        for r in planned
    )
    return done, len(planned)


def table(config: dict, root: str | Path = ".") -> str:
    """The progress report, in Markdown."""
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
