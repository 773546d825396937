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
- **started**: a file in its folders or its log, nothing kept yet (a first seed pretraining,
  a ratio fit, or stopped; empty files do not count: ``snakemake --touch`` makes them);
  for these two, its log's last progress (INFO) line: how far the seed under way has come;
- **unreadable**: a checkpoint or ``pretrain.pt`` that cannot be read (its error shown;
  the job's run says the same, with the fix);
- **not started**;

each with the age of its newest file, its log included (a job whose files are all an hour old
is not running: UNIQ's ratio fit and SafeDICE's classifier log a line every few minutes), then
the evaluations done and any UNIQ ratio fit stopped part-way (``*.partial.pt``), and each
job's learning curve so far (:func:`curve_table`: the mean over its seeds of each curve
point's return and cost, from the seeds' ``curve.csv``, their ``.part`` or the checkpoint's
copy), so a reader sees whether a method learns long before its run ends. Given a
price (``uniq-bench plan --json``: ``--price FILE``, or the config's ``price:``), it also says
what is left (:func:`time_left`): the training jobs' updates at their own rates, every other
job not done at its price.

    uv run uniq-bench plan --configfile config/paper_data.yaml --cores 2 --json price.json
    uv run uniq-bench progress --configfile config/paper_data.yaml --price price.json
"""

from __future__ import annotations

import csv
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from uniq import registry
from uniq import workflow as W
from uniq.checkpoint import NAME as CHECKPOINT
from uniq.checkpoint import PRETRAIN_NAME as PRETRAIN
from uniq.checkpoint import START_OVER, read_saved
from uniq.job import seed_dirs
from uniq.method import ConfigError
from uniq.plan import duration, evaluate_bench, train_bench, train_job_path, train_jobs

WINDOWS = 10
"""A training job's rate is read over its log's last this many rows."""


@dataclass
class JobState:
    """One training job's state (``step``: its checkpoint's, where a rerun resumes;
    ``logged``: the step its log has reached; ``rate``: updates per second)."""

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
    one_by_one: bool = False
    """A batched profile's job of a method that cannot batch: its seeds train one after
    another, each with its own checkpoint (``step`` and ``logged`` are the current seed's)."""
    seeds_done: int = 0
    """Of such a job, the seeds finished."""
    age_s: float | None = None
    said: str = ""
    """Its log's last line (a job pretraining or started: how far its seed's pretraining is)."""
    curve: dict[int, tuple[float, float, int]] = field(default_factory=dict)
    """Its learning curve so far: step -> (return, cost, seeds), seed means (:func:`_curve`)."""

    @property
    def updates(self) -> int:
        """Its updates in all (every seed's, when they train one after another)."""
        return self.steps * (self.seeds if self.one_by_one else 1)

    @property
    def share_left(self) -> float:
        """The share of its updates still to do, as far as its checkpoints say."""
        if self.state == "done":
            return 0.0
        return max(0.0, 1 - (self.seeds_done * self.steps + self.step) / self.updates)

    @property
    def hours_left(self) -> float | None:
        """Wall hours of its updates left at its rate (None: not training, or no rate yet)."""
        if self.state != "training" or self.rate <= 0:
            return None
        return max(0, self.updates - self.seeds_done * self.steps - self.logged) / self.rate / 3600


def training_jobs(config: dict, root: str | Path = ".") -> list[JobState]:
    """Every training job of the profile and its state (``root``: the workflow's folder)."""
    runs = Path(root) / "results" / config["profile"] / "runs"
    logs = Path(root) / "logs" / config["profile"] / "train"
    steps, batched, out = int(config["train"]["steps"]), config["train"]["batch_seeds"], []
    for env, variant, algo, seeds in train_jobs(config):
        folders, job_dir = seed_dirs(runs / env / variant / algo / "seed{seed}", seeds)
        path = train_job_path(config, env, variant, algo, seeds)
        name = f"{env} {variant} {algo}" + ("" if batched else f" seed{seeds[0]}")
        # the job's log too: a ratio fit or a seed's pretraining writes nothing else for an hour.
        # Empty files are no sign of a start: `snakemake --touch` (profiles/continue.sh) creates
        # every job's log empty.
        files = [p for d in {*folders, job_dir} if d.is_dir() for p in d.iterdir()]
        files = [f for f in [*files, logs / f"{path}.log"] if f.is_file() and f.stat().st_size]
        age = time.time() - max(p.stat().st_mtime for p in files) if files else None
        bench = train_bench(config, env, variant, algo, seeds)
        state = JobState(name, bench, "not started", steps, seeds=len(seeds),
                         age_s=age)  # fmt: skip
        # a method that cannot batch trains the seeds one by one, each with its own checkpoint
        method = registry.get_method(W.method_of(config, algo))
        state.one_by_one = len(seeds) > 1 and not method.supports_members
        finished = [
            (d / "policy.pt").is_file() and (d / "train_log.csv").is_file() for d in folders
        ]
        state.seeds_done = sum(finished) if state.one_by_one else 0
        try:
            _read(state, folders, job_dir, finished, logs / f"{path}.log", bool(files))
        except Unreadable as err:  # the report goes on; the job says more when it runs
            state.state, state.said = "unreadable", str(err)
        out.append(state)
    return out


class Unreadable(Exception):
    """A checkpoint (or pretrain.pt) that cannot be read."""


def _read(
    state: JobState, folders: list[Path], job_dir: Path, finished: list[bool], log: Path,
    started: bool,
) -> None:  # fmt: skip
    """Fill ``state`` from the job's folders (see :func:`training_jobs`)."""
    ckpts = [d for d in [job_dir, *folders] if (d / CHECKPOINT).is_file()]
    ckpts = [d for d in ckpts if not (d != job_dir and (d / "policy.pt").is_file())]
    state.curve = _curve(folders, job_dir)
    if all(finished):
        state.state = "done"
    elif ckpts:
        saved = _load(ckpts[0] / CHECKPOINT)
        state.state, state.step = "training", int(_field(saved, "step", ckpts[0]))
        folder = folders[0] if ckpts[0] == job_dir else ckpts[0]
        part = folder / "train_log.csv.part"  # newer than the checkpoint's copy, if there
        text = part.read_text() if part.is_file() else _field(saved, "log", ckpts[0])[0]["text"]
        state.logged, state.rate = _last_logged(text)
        state.logged = max(state.logged, state.step)
    elif (job_dir / PRETRAIN).is_file():
        state.state = "pretraining"
        state.seeds_kept = len(_field(_load(job_dir / PRETRAIN), "seeds", job_dir))
    elif started:
        state.state = "started"
    if state.state in ("pretraining", "started"):
        state.said = _last_said(log)


def updates_left(config: dict, root: str | Path = ".") -> dict[str, float]:
    """Training job (its benchmark name) -> the share of its updates still to do
    (:attr:`JobState.share_left`), for the jobs that have done some: 0 when done, else what
    its checkpoints say (a job training its seeds one after another counts the seeds it has
    finished). Jobs not started, pretraining or with a checkpoint that cannot be read are
    absent (all their price is left: the job itself reports a bad checkpoint when it runs).
    For uniq.plan.priorities, which the Snakefile reads at every start of the workflow."""
    return {
        j.bench: j.share_left
        for j in training_jobs(config, root)
        if j.state in ("done", "training") or j.seeds_done
    }


def evaluations(config: dict, root: str | Path = ".") -> tuple[list[str], list[str]]:
    """The evaluation jobs (named by their benchmark files): (done, not done)."""
    runs = Path(root) / "results" / config["profile"] / "runs"
    done, left = [], []
    for r in W.all_runs(config):
        folder = runs / r.env / r.variant / r.algo / f"seed{r.seed}"
        (done if (folder / "eval.json").is_file() else left).append(evaluate_bench(r))
    return done, left


def time_left(
    config: dict, price: dict, cores: int, root: str | Path = ".",
    read: tuple[list[JobState], list[str]] | None = None,
) -> dict[str, float]:  # fmt: skip
    """Job-hours left, counted as the price counts them (CPU hours of all a job's threads;
    device hours for training on a GPU): ``training``, the updates left of the jobs
    training, at their own rates; ``priced``, at the price: the training jobs without a rate
    yet (the share of their price their steps left make), the training jobs not yet
    training, the evaluations not done and the other jobs without a benchmark file (rollouts,
    datasets, aggregates, figures). And the wall hours on ``cores`` idle cores, never shorter
    than the longest job left. ``read``: (:func:`training_jobs`, the evaluations not done),
    when the caller has read them already."""
    seconds = {j["bench"]: j["seconds"] for j in price["jobs"]}
    on_gpu = str(price.get("units", {}).get("measured_on", {}).get("device", "cpu"))
    threads = 1 if on_gpu.startswith("cuda") else int(config["train"]["threads"])
    jobs, evals = read or (training_jobs(config, root), evaluations(config, root)[1])
    training, priced = [], []
    for j in jobs:
        whole = seconds.get(j.bench, 0.0) / 3600
        if j.hours_left is not None:
            training.append(j.hours_left * threads)
        elif j.state != "done":
            priced.append(whole * j.share_left)  # all of it for a job without updates yet
    priced += [seconds.get(b, 0.0) / 3600 for b in evals]
    bench_root = Path(root) / "logs" / config["profile"] / "benchmarks"
    priced += [
        j["seconds"] / 3600 for j in price["jobs"]
        if j["rule"] not in ("train", "evaluate", "all") and not (bench_root / j["bench"]).is_file()
    ]  # fmt: skip
    total = sum(training) + sum(priced)
    longest = max([*training, *priced], default=0.0)
    return {"training": sum(training), "priced": sum(priced), "cpu_hours": total,
            "wall_hours": max(total / cores, longest), "cores": cores}  # fmt: skip


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
            if j.one_by_one:
                where = f"seed {j.seeds_done + 1} of {j.seeds}: {where}"
        elif j.state == "pretraining":
            where = f"{j.seeds_kept} of {j.seeds} seeds pretrained"
        else:
            where = ""
        if j.said:  # where the pretraining of the seed under way has come
            where = f"{where}; log: {j.said}" if where else f"log: {j.said}"
        rate = f"{j.rate:.2f}" if j.state == "training" and j.rate else ""
        left = "" if j.hours_left is None else f"{j.hours_left:.1f}"
        age = "" if j.age_s is None else f"{duration(j.age_s / 3600)} ago"
        lines.append(f"| {j.job} | {j.state} | {where} | {rate} | {left} | {age} |")
    states = ("done", "training", "pretraining", "started")
    counts = {s: sum(j.state == s for j in jobs) for s in states}
    done, left = evaluations(config, root)
    lines += [
        "",
        f"Training jobs: {counts['done']} done, {counts['training']} training, "
        f"{counts['pretraining']} pretraining, {counts['started']} started, "
        f"{len(jobs) - sum(counts.values())} not started (of {len(jobs)}). "
        f"Evaluations: {len(done)} of {len(done) + len(left)}.",
    ]
    bad = [j for j in jobs if j.state == "unreadable"]
    if bad:
        lines.append(
            f"{len(bad)} job(s) with a checkpoint that cannot be read (counted not started): "
            "its run will say why; delete the file to start that job over."
        )
    partial = sorted((Path(root) / "results" / config["profile"]).rglob("*.partial.pt"))
    if partial:
        lines.append(
            "UNIQ ratio fits stopped part-way (they resume there): "
            + ", ".join(str(p) for p in partial) + "."
        )  # fmt: skip
    if price is not None:
        hours = time_left(config, price, price["cores"], root, (jobs, left))
        lines.append(
            f"Left: {hours['cpu_hours']:.1f} job-hours ({hours['training']:.1f} of updates at "
            f"the training jobs' rates, {hours['priced']:.1f} at the price: the jobs not yet "
            f"training, the evaluations and the other jobs not done), about "
            f"{hours['wall_hours']:.1f} h on {hours['cores']} idle cores."
        )
    curves = curve_table(jobs)
    if curves:
        episodes = config["train"]["eval_episodes"]
        lines += [
            "",
            f"Learning curves so far (return / cost, each the mean over the seeds of "
            f"{episodes} episodes a seed; not results: the final evaluation has "
            f"{config['evaluate']['episodes']} episodes a seed):",
            "",
            *curves,
            "",
        ]
    lines.append(
        f"Hours left: the job's updates left at its rate over its log's last {WINDOWS} rows. "
        "The newest file's age (the job's log included) tells a running job from a stopped "
        "one; a stopped job resumes at its checkpoint's step. "
        "`uniq-bench plan` prices the jobs not started."
    )
    return "\n".join(lines) + "\n"


def curve_table(jobs: list[JobState]) -> list[str]:
    """The jobs' learning curves so far, in Markdown: a row per job with a curve point, a
    column per step, each cell "return / cost" (the mean over the seeds that reached it)."""
    jobs = [j for j in jobs if j.curve]
    if not jobs:
        return []
    steps = sorted({s for j in jobs for s in j.curve})
    lines = [
        "| training job | " + " | ".join(f"{s // 1000}k" if s % 1000 == 0 else str(s)
                                          for s in steps) + " |",
        "|---|" + "---|" * len(steps),
    ]  # fmt: skip
    for j in jobs:
        cells = [
            f"{j.curve[s][0]:.1f} / {j.curve[s][1]:.1f}"
            + ("" if j.curve[s][2] == j.seeds else f" ({j.curve[s][2]} of {j.seeds} seeds)")
            if s in j.curve else ""
            for s in steps
        ]  # fmt: skip
        lines.append(f"| {j.job} | " + " | ".join(cells) + " |")
    return lines


def _curve(folders: list[Path], job_dir: Path) -> dict[int, tuple[float, float, int]]:
    """step -> (mean return, mean cost, seeds) over the seeds' curves so far. Each seed's
    curve is its folder's ``curve.csv`` (done) or ``curve.csv.part`` (training; newer than
    the checkpoint's copy), else the copy its checkpoint keeps (a fresh clone: save.sh
    commits checkpoints, not .part files): the job's, or the seed's own where the method
    trains the seeds one by one."""
    points: dict[int, list[tuple[float, float]]] = {}
    kept = None
    for i, folder in enumerate(folders):
        files = [folder / "curve.csv", folder / "curve.csv.part"]
        text = next((f.read_text() for f in files if f.is_file()), None)
        if text is None:
            kept = _kept_curves(folders, job_dir) if kept is None else kept
            text = kept[i]["text"] if kept[i] else ""
        for row in csv.DictReader(text.splitlines()):
            if not (row.get("return_mean") and row.get("cost_mean")):
                continue  # a row being written as this reads the .part file
            point = float(row["return_mean"]), float(row["cost_mean"])
            points.setdefault(int(row["step"]), []).append(point)
    return {
        step: (sum(r for r, _ in p) / len(p), sum(c for _, c in p) / len(p), len(p))
        for step, p in sorted(points.items())
    }


def _kept_curves(folders: list[Path], job_dir: Path) -> list[dict | None]:
    """Each seed's curve state as a checkpoint keeps it (None: no checkpoint, or no curve)."""

    def curves(path: Path, n: int) -> list[dict | None]:
        return (_load(path).get("curve") if path.is_file() else None) or [None] * n

    if (job_dir / CHECKPOINT).is_file():
        return curves(job_dir / CHECKPOINT, len(folders))
    return [curves(d / CHECKPOINT, 1)[0] for d in folders]


def _last_said(log: Path, width: int = 90) -> str:
    """The message of a job log's last INFO line (its progress, not a warning), cut to width."""
    text = log.read_text() if log.is_file() else ""
    said = re.findall(r"^\S+ \S+ INFO [\w.]+: (.*)$", text, re.MULTILINE)
    if not said:
        return ""
    last = said[-1].replace("|", "/")  # a table cell
    return last if len(last) <= width else last[: width - 3] + "..."


def _load(path: Path) -> dict:
    try:
        saved = read_saved(path, START_OVER, mmap=True)
    except ConfigError as err:
        raise Unreadable(str(err)) from err
    if not isinstance(saved, dict):
        raise Unreadable(f"{path}: not a checkpoint (a {type(saved).__name__})")
    return saved


def _field(saved: dict, key: str, folder: Path):
    if key not in saved:
        raise Unreadable(f"{folder}: its file has no {key!r} (written by another version?)")
    return saved[key]


def _last_logged(text: str) -> tuple[int, float]:
    """(step, updates per second) of a training log's text: its last row's step, and the
    rate over its last :data:`WINDOWS` rows (the job's wall time, which a resume carries on;
    one row: that row's own rate; (0, 0): no row yet)."""
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        return 0, 0.0
    last, first = rows[-1], rows[max(0, len(rows) - 1 - WINDOWS)]
    steps = int(last["step"]) - int(first["step"])
    seconds = float(last["wall_time_s"]) - float(first["wall_time_s"])
    rate = steps / seconds if steps > 0 and seconds > 0 else float(last["updates_per_s"] or 0)
    return int(last["step"]), rate
