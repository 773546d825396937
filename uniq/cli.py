"""``uniq-bench``: the suite's command line (also ``python -m uniq``).

Every Snakemake rule calls one of these subcommands. Each subcommand is a thin parser whose
handler imports its module lazily, so ``uniq-bench tasks`` starts fast.
"""

from __future__ import annotations

import argparse
import logging
import sys


def _tasks(args: argparse.Namespace) -> int:
    from envs.tasks import TASKS

    print(f"{'task':32s} {'family':10s} {'obs':>4s} {'act':>4s} {'T':>5s} {'kappa':>6s}")
    for spec in TASKS.values():
        print(
            f"{spec.name:32s} {spec.family:10s} {spec.obs_dim:4d} {spec.act_dim:4d} "
            f"{spec.max_episode_steps:5d} {spec.cost_limit:6.1f}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uniq-bench", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tasks", help="list the registered tasks with their dims and thresholds")
    p.set_defaults(handler=_tasks)

    # == section: evaluate (uniq/evaluate.py) ================================
    # == end section: evaluate ==============================================

    # == section: data (envs/demonstrators.py, envs/collect.py, envs/splits.py) =
    # == end section: data ===================================================

    # == section: train (uniq/train.py) =======================================
    # == end section: train ==================================================

    # == section: stats (uniq/stats.py, uniq/plots.py) ========================
    # == end section: stats ==================================================

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
