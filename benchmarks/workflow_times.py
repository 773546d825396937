"""Wall time and memory of a workflow run, per rule, from Snakemake's ``benchmark:`` files.

Every rule writes ``logs/<profile>/benchmarks/<rule>/...tsv`` (seconds, max RSS, CPU time).
This sums them per rule; with ``--start``/``--end`` (ISO times, e.g. from ``date -u +%FT%TZ``
around the run) it also gives the run's wall clock, which is less than the sum of the jobs'
times when jobs ran in parallel.

    uv run python benchmarks/workflow_times.py --profile quick
    uv run python benchmarks/workflow_times.py --profile smoke --start ... --end ... \
        --out benchmarks/out/workflow_times_smoke.md     # the table committed per profile run
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uniq.atomic import atomic_write_text  # noqa: E402
from uniq.jobtimes import read_benchmarks as read  # noqa: E402  (uniq-bench plan --check too)


def table(jobs: dict[str, list[dict[str, float]]]) -> str:
    lines = [
        "| rule | jobs | total (min) | mean (s) | max (s) | CPU total (min) | max RSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    total = cpu = 0.0
    for rule, rows in sorted(jobs.items(), key=lambda kv: -sum(r["s"] for r in kv[1])):
        s = [r["s"] for r in rows]
        c = sum(r["cpu_time"] for r in rows)
        total, cpu = total + sum(s), cpu + c
        lines.append(
            f"| {rule} | {len(rows)} | {sum(s) / 60:.1f} | {sum(s) / len(s):.0f} | {max(s):.0f} "
            f"| {c / 60:.1f} | {max(r['max_rss'] for r in rows):.0f} |"
        )
    n = sum(len(r) for r in jobs.values())
    lines.append(f"| all | {n} | {total / 60:.1f} | | | {cpu / 60:.1f} | |")
    resumed = [r["file"] for rows in jobs.values() for r in rows if r.get("resumed")]
    if resumed:
        lines.append(
            f"\n{len(resumed)} job(s) resumed from a checkpoint ({', '.join(resumed)}): their "
            "times add the wall and CPU seconds their logs report before the resume (a log "
            "that reports wall seconds only: the CPU time at the last piece's share; "
            "uniq.jobtimes.read_benchmarks); work lost after a piece's last checkpoint is not "
            "counted."
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--logs", default="logs", help="the workflow's log folder")
    parser.add_argument("--start", help="ISO time the run started")
    parser.add_argument("--end", help="ISO time it ended")
    parser.add_argument("--cores", type=int, default=2, help="the run's --cores (for the record)")
    parser.add_argument("--out", help="also write the table (Markdown) here")
    args = parser.parse_args(argv)
    root = Path(args.logs) / args.profile / "benchmarks"
    jobs = read(root)
    if not jobs:
        print(f"no benchmark files under {root}; run the workflow first", file=sys.stderr)
        return 2
    text = table(jobs)
    if args.start and args.end:
        wall = datetime.fromisoformat(args.end) - datetime.fromisoformat(args.start)
        text += (
            f"\nWall clock of the run on {args.cores} cores ({args.start} to {args.end}): "
            f"{wall.total_seconds() / 60:.1f} min.\n"
        )
    print(text, end="")
    if args.out:
        command = " ".join(["uv run python benchmarks/workflow_times.py", *sys.argv[1:]])
        atomic_write_text(args.out, f"Profile {args.profile}: `{command}`\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
