"""A run's measured job times, and a price checked against them.

Snakemake writes one ``benchmark:`` file per job (``logs/<profile>/benchmarks/<rule>/...tsv``:
wall seconds ``s``, ``cpu_time``, memory); :func:`read_benchmarks` reads them (also for
``benchmarks/workflow_times.py``), :func:`check` compares them with ``uniq-bench plan``'s
price (:mod:`uniq.plan`), job by job: each planned job is named by its benchmark file.

A training job stopped part-way (a session's end) and resumed from its checkpoint leaves a
benchmark file of its last piece only: Snakemake rewrites the file on each attempt. Its log
(``logs/<profile>/<rule>/...log``, the benchmark's path under the rule's log folder) holds
the whole job's time, which the job carries through its checkpoint (wall seconds, and CPU
seconds on :func:`cpu_seconds`' clock: :mod:`uniq.train`, and the demonstrators'
:mod:`envs.ppo` and :mod:`envs.demonstrators`); the job's row takes that, and is marked
``resumed``. The log lines are written by :func:`resume_line` and :func:`trained_line`, here
beside the patterns that read them.
"""

from __future__ import annotations

import csv
import os
import re
import resource
from collections import defaultdict
from pathlib import Path
from typing import Any

TOLERANCE = 0.30
"""A price passes its check when the run's measured job time is within this share of it."""


_RESUMED = re.compile(
    r"resuming \S+ from .+? at step \d+(?: \(([0-9.]+) s before(?:, ([0-9.]+) CPU s)?\))?"
)
_TRAINED = re.compile(r"trained \S+ \(\d+ steps, ([0-9.]+) s\)")
"""The log lines of a resume (with the job's wall and CPU seconds before it; older logs: the
wall seconds or neither) and of the job's end (with its seconds over all pieces)."""


def resume_line(
    label: str, path: os.PathLike, step: int, wall_s: float, cpu_s: float | None
) -> str:
    """The line a resumed job logs: its seconds before the resume (``cpu_s`` None: not known,
    as for a checkpoint written before CPU seconds were kept)."""
    cpu = "" if cpu_s is None else f", {cpu_s:.1f} CPU s"
    return f"resuming {label} from {path} at step {step} ({wall_s:.1f} s before{cpu})"


def trained_line(label: str, steps: int, wall_s: float, out: os.PathLike) -> str:
    """The line a job logs at its end (``wall_s``: over all its pieces)."""
    return f"trained {label} ({steps} steps, {wall_s:.1f} s) -> {out}"


def cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended: the clock a job's
    time is carried on through its checkpoints, as Snakemake's ``cpu_time`` counts the job's
    process tree. A child still running is not in it; envs step in the job's own process
    unless ``UNIQ_ENV_WORKERS`` asks for workers, and a training job's evaluation workers
    end with each evaluation."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def carried_cpu(before: float | None) -> float | None:
    """A job's CPU seconds so far, as its checkpoint carries them: its earlier pieces'
    (``before``) and this process's; None stays None (an earlier piece's were not kept)."""
    return None if before is None else before + cpu_seconds()


_credit = [0.0, 0.0]
"""Wall and CPU seconds earlier, stopped processes spent on work this process restored and
has not yet counted (:func:`credit`, :func:`take_credit`)."""


def credit(wall_s: float, cpu_s: float) -> None:
    """Count seconds an earlier, stopped process spent on work this one restores instead of
    redoing (a ratio fit resumed part-way, :mod:`uniq.ratio`), so the job's time includes
    them: :func:`uniq.train.pretrain` takes them (:func:`take_credit`) into the seed's time.

    The fit's cache is shared by the seeds and arms of a dataset, so the job that resumes a
    fit is credited with the part another job ran before it stopped (the rule's total is
    right, one job's row holds the other's part); a job that waited for the fit's lock
    while another ran it and died counts that stretch twice in wall time (not in CPU)."""
    _credit[0] += wall_s
    _credit[1] += cpu_s


def take_credit() -> tuple[float, float]:
    """The (wall, CPU) seconds credited since the last call, and none left."""
    taken = (_credit[0], _credit[1])
    _credit[0] = _credit[1] = 0.0
    return taken


def read_benchmarks(root: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """rule -> one dict per job (s, max_rss MiB, cpu_time s, its ``file`` relative to
    ``root``, ``resumed``) from Snakemake's benchmark files under ``root``
    (``logs/<profile>/benchmarks``; the folder below it names the rule). A resumed job's
    ``s`` and ``cpu_time`` add the seconds its log reports before the resume (a log that
    reports wall seconds only: its CPU seconds at the last piece's CPU share, an estimate).
    Work lost after a piece's last checkpoint is in neither: a lower bound."""
    root, jobs_ = Path(root), defaultdict(list)
    for path in sorted(root.glob("*/**/*.tsv")):
        rel = path.relative_to(root)
        with open(path) as f:
            for row in csv.DictReader(f, delimiter="\t"):
                values = {
                    k: float(row[k]) if row[k] not in ("", "NA", "-") else 0.0
                    for k in ("s", "max_rss", "cpu_time")
                }  # fmt: skip
                log = root.parent / rel.with_suffix(".log")
                wall, cpu = _seconds_before_resume(log, values["s"])
                if wall:
                    if cpu is None:
                        cpu = wall * (values["cpu_time"] / values["s"] if values["s"] else 1.0)
                    values.update(s=values["s"] + wall, cpu_time=values["cpu_time"] + cpu)
                jobs_[rel.parts[0]].append(
                    {**values, "file": rel.as_posix(), "resumed": bool(wall)}
                )
    return dict(jobs_)


def _seconds_before_resume(log: Path, last_piece_s: float) -> tuple[float, float | None]:
    """(wall, CPU) seconds a job spent before the resume its finished attempt began with
    ((0, None): it was not resumed; CPU None: the log does not say), from its log (the
    finished attempt's lines: the last "trained" line and those since the "trained" line
    before it, if the log kept an earlier attempt). Logs written before the seconds were
    reported give the job's whole time, less this piece's."""
    if not log.is_file():
        return 0.0, None
    text = log.read_text(errors="replace")
    ends = list(_TRAINED.finditer(text))
    if not ends:
        return 0.0, None
    start = ends[-2].end() if len(ends) > 1 else 0  # the finished attempt's own lines
    resumes = list(_RESUMED.finditer(text, start, ends[-1].start()))
    if not resumes:
        return 0.0, None
    wall, cpu = resumes[-1].groups()
    if wall is not None:
        return float(wall), None if cpu is None else float(cpu)
    return max(float(ends[-1].group(1)) - last_piece_s, 0.0), None


def check(result: dict, measured: dict[str, list[dict]], tolerance: float = TOLERANCE) -> dict:
    """The plan's job-minutes against a run's measured CPU minutes (``cpu_time``, the clock
    the price counts in), job by job (matched by benchmark file), summed per rule; the run's
    wall minutes beside them (stretched by whatever else ran). Passes when the total over
    the jobs the run finished is within ``tolerance`` and the run holds no job the plan does
    not know; a run still going (or stopped) is checked on its finished jobs, ``partial``.

    Snakemake samples a job's CPU time every second for 30 s, then every 30 s, so the last
    interval of each job is missed: the measured CPU time is a slight underestimate."""
    planned = {j["bench"]: j for j in result["jobs"] if j["rule"] != "all"}
    got = {row["file"]: row for rows in measured.values() for row in rows}
    unknown = sorted(set(got) - set(planned))
    rows = []
    for rule in dict.fromkeys(j["rule"] for j in planned.values()):  # the plan's order
        mine = [b for b, j in planned.items() if j["rule"] == rule]
        done = [b for b in mine if b in got]
        if not mine:
            continue
        rows.append({
            "rule": rule, "jobs": len(mine), "measured_jobs": len(done),
            "predicted_min": sum(planned[b]["seconds"] for b in done) / 60,
            "measured_min": sum(got[b]["cpu_time"] for b in done) / 60,
            "wall_min": sum(got[b]["s"] for b in done) / 60,
        })  # fmt: skip
        rows[-1]["ratio"] = _ratio(rows[-1]["predicted_min"], rows[-1]["measured_min"])
    total = {k: sum(r[k] for r in rows) for k in ("predicted_min", "measured_min", "wall_min")}
    ratio = _ratio(total["predicted_min"], total["measured_min"])
    return {
        "rows": rows, **total, "ratio": ratio, "unknown": unknown,
        "partial": any(r["measured_jobs"] < r["jobs"] for r in rows),
        "passed": not unknown and abs(ratio - 1) <= tolerance, "tolerance": tolerance,
    }  # fmt: skip


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def check_table(result: dict) -> str:
    lines = [
        "| rule | jobs (run / plan) | predicted job-min | measured CPU-min | predicted / "
        "measured | measured wall-min |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['rule']} | {r['measured_jobs']} / {r['jobs']} | {r['predicted_min']:.1f} "
            f"| {r['measured_min']:.1f} | {r['ratio']:.2f} | {r['wall_min']:.1f} |"
        )
    verdict = "PASS" if result["passed"] else "FAIL"
    notes = [f"within ±{result['tolerance']:.0%}"]
    notes += ["partial run: its finished jobs only"] if result["partial"] else []
    if result["unknown"]:
        notes.append(
            f"{len(result['unknown'])} benchmark file(s) of no planned job, e.g. {result['unknown'][0]}"
        )
    lines.append(
        f"| **total** | | **{result['predicted_min']:.1f}** | **{result['measured_min']:.1f}** "
        f"| **{result['ratio']:.2f}** ({verdict}: {'; '.join(notes)}) | {result['wall_min']:.1f} |"
    )
    return "\n".join(lines) + "\n"
