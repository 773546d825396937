"""Wall time and memory of a workflow run, per rule, from Snakemake's ``benchmark:`` files.

Every rule writes ``logs/<profile>/benchmarks/<rule>/...tsv`` (seconds, max RSS, CPU time).
This sums them per rule; with ``--start``/``--end`` (ISO times, e.g. from ``date -u +%FT%TZ``
around the run) it also gives the run's wall clock, which is less than the sum of the jobs'
times when jobs ran in parallel.

    uv run python benchmarks/workflow_times.py --profile quick
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path


def read(root: Path) -> dict[str, list[dict[str, float]]]:
    """rule -> one dict per job (s, max_rss MiB, cpu_time s)."""
    jobs: dict[str, list[dict[str, float]]] = defaultdict(list)
    for path in sorted(root.glob("*/**/*.tsv")):
        rule = path.relative_to(root).parts[0]
        with open(path) as f:
            for row in csv.DictReader(f, delimiter="\t"):
                jobs[rule].append(
                    {
                        k: float(row[k]) if row[k] not in ("", "NA", "-") else 0.0
                        for k in ("s", "max_rss", "cpu_time")
                    }  # fmt: skip
                )
    return jobs


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
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--logs", default="logs", help="the workflow's log folder")
    parser.add_argument("--start", help="ISO time the run started")
    parser.add_argument("--end", help="ISO time it ended")
    args = parser.parse_args(argv)
    root = Path(args.logs) / args.profile / "benchmarks"
    jobs = read(root)
    if not jobs:
        print(f"no benchmark files under {root}; run the workflow first", file=sys.stderr)
        return 2
    print(table(jobs), end="")
    if args.start and args.end:
        wall = datetime.fromisoformat(args.end) - datetime.fromisoformat(args.start)
        print(f"\nWall clock of the run: {wall.total_seconds() / 60:.0f} min.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
