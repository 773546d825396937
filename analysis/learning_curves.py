"""How long each method needs to settle: one long run per method, evaluated along the way.

Trains every method of an experiment (the profile's own hyper-parameters, from its config)
for ``--steps`` updates on one task and dataset variant, evaluating the policy every
``--eval-every`` steps on ``--eval-episodes`` episodes (the curve), then tabulates return and
cost at the ``--at`` steps (``<out>/table.md``; each run's curve in ``<out>/curves/``, the runs
themselves in ``<out>/runs/``, not committed). This is how the quick profile's training length is chosen.

One caveat: a long run evaluated at step t is not exactly a run of length t where a method
scales a schedule with its length (DWBC's discriminator interval, clip(T // 5000, 1, 100));
the table says so. Runs resume where they stopped (``uniq-bench train`` checkpoints), so the
script can be rerun after an interruption.

``--from-runs`` trains nothing: it tabulates the curves a workflow's runs already wrote
(``<runs>/<task>/<variant>/<method>/seed*/curve.csv``), averaged over their seeds, to check
that a profile's own runs have stopped moving by their last steps.

    uv run python analysis/learning_curves.py --config config/quick.yaml \
        --task SafetyHalfCheetahVelocity-v1 --steps 100000 --at 10000 30000 100000 \
        --out results/quick/learning_curves
    uv run python analysis/learning_curves.py --config config/quick.yaml \
        --task SafetyCarGoal1-v0 --from-runs results/quick/runs --at 2500 5000 7500 10000 \
        --out results/quick/settling/SafetyCarGoal1-v0
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uniq import workflow as W  # noqa: E402
from uniq.atomic import atomic_write_text  # noqa: E402


def train_command(config: dict, algo: str, args, data: Path, out: Path) -> list[str]:
    refs = [str(data / f"rollouts_{kind}.h5") for kind in W.KINDS]
    return [
        "uniq-bench", "train", *shlex.split(W.train_args(config, algo, args.task)),
        "--task", args.task, "--variant", args.variant,
        "--un", str(data / args.variant / "un.h5"), "--mix", str(data / args.variant / "mix.h5"),
        "--seed", str(args.seed), "--steps", str(args.steps),
        "--eval-every", str(args.eval_every), "--eval-episodes", str(args.eval_episodes),
        "--reference", *refs, "--threads", "1", "--no-progress", "--out", str(out),
    ]  # fmt: skip


def seed_means(runs: Path, task: str, variant: str, methods: list[str]) -> dict[str, pd.DataFrame]:
    """Each method's curve averaged over its seeds' curve.csv (with the seed count per step)."""
    curves = {}
    for algo in methods:
        files = sorted((runs / task / variant / algo).glob("seed*/curve.csv"))
        if not files:
            raise FileNotFoundError(f"{runs / task / variant / algo}: no seed*/curve.csv")
        both = pd.concat(pd.read_csv(f) for f in files)
        curves[algo] = both.groupby("step", as_index=False).agg(
            return_mean=("return_mean", "mean"), cost_mean=("cost_mean", "mean"),
            seeds=("return_mean", "size"),
        )  # fmt: skip
    return curves


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}"


def table(curves: dict[str, pd.DataFrame], at: list[int], caption: str) -> str:
    head = "| method | " + " | ".join(f"{s / 1000:g}k: return / cost" for s in at) + " |"
    lines = [caption, "", head, "|---|" + "---:|" * len(at)]
    for algo, curve in curves.items():
        cells = []
        for step in at:
            row = curve[curve["step"] == step]
            cells.append(
                "n/a"
                if row.empty
                else f"{_num(row['return_mean'].iloc[0])} / {row['cost_mean'].iloc[0]:.1f}"
            )
        lines.append(f"| {algo} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config/quick.yaml")
    p.add_argument("--task", default="SafetyHalfCheetahVelocity-v1")
    p.add_argument("--variant", default="default")
    p.add_argument("--experiment", default="main", help="whose algorithms to run")
    p.add_argument("--methods", nargs="*", help="default: the experiment's algorithms")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--at", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    p.add_argument("--eval-every", type=int, default=10_000)
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/quick/learning_curves")
    p.add_argument("--from-runs", help="tabulate these workflow runs' curves instead of training")
    args = p.parse_args(argv)
    if args.from_runs:
        return from_runs(p, args)
    if any(s % args.eval_every or s > args.steps for s in args.at):
        p.error(
            f"every --at step must be a multiple of --eval-every {args.eval_every} and <= --steps"
        )
    config = yaml.safe_load(Path(args.config).read_text())
    W.check(config)
    methods = args.methods or config["experiments"][args.experiment]["algorithms"]
    data = Path(f"results/{config['profile']}/data/{args.task}")
    if not (data / args.variant / "mix.h5").exists():
        p.error(
            f"{data / args.variant}/mix.h5 not found: build the dataset first, e.g. "
            f"`uv run snakemake --cores 2 {data / args.variant}/mix.h5 "
            f"--configfile {args.config}`"
        )
    out = Path(args.out)
    curves, commands = {}, []
    for algo in methods:
        run = out / "runs" / algo / f"seed{args.seed}"
        cmd = train_command(config, algo, args, data, run)
        commands.append(shlex.join(["uv", "run", *cmd]))
        if not (run / "policy.pt").exists():
            print(f"training {algo}: {commands[-1]}", flush=True)
            subprocess.run(cmd, check=True)
        curves[algo] = pd.read_csv(run / "curve.csv")
        missing = sorted(set(args.at) - set(curves[algo]["step"]))
        if curves[algo]["step"].iloc[-1] != args.steps or missing:
            p.error(
                f"{run}: a run of other settings (its curve ends at step "
                f"{curves[algo]['step'].iloc[-1]}, lacks {missing}); delete it or use another --out"
            )
        atomic_write_text(out / "curves" / f"{algo}.csv", (run / "curve.csv").read_text())
    caption = (
        f"{args.task} ({args.variant} split of {args.config}), one run per method (seed "
        f"{args.seed}) of {args.steps} updates with the profile's hyper-parameters; return and "
        f"cost of the policy at each step, {args.eval_episodes} evaluation episodes. DWBC's "
        f"discriminator interval follows the run's length ({args.steps} // 5000), so its "
        "early columns are not exactly shorter runs."
    )
    text = table(curves, args.at, caption)
    atomic_write_text(out / "table.md", text + "\nCommands:\n\n" + "\n".join(
        f"    {c}" for c in commands) + "\n")  # fmt: skip
    print(text)
    return 0


def from_runs(p: argparse.ArgumentParser, args) -> int:
    config = yaml.safe_load(Path(args.config).read_text())
    methods = args.methods or config["experiments"][args.experiment]["algorithms"]
    try:
        curves = seed_means(Path(args.from_runs), args.task, args.variant, methods)
    except FileNotFoundError as err:
        p.error(f"{err}: run the workflow's training first")
    seeds = sorted({int(n) for c in curves.values() for n in c["seeds"]})
    caption = (
        f"{args.task} ({args.variant} split of {args.config}), the workflow's runs "
        f"({args.from_runs}): return and cost at each step averaged over the seeds "
        f"({'/'.join(map(str, seeds))} per point), each seed's curve point "
        f"{config['train']['eval_episodes']} episodes."
    )
    text = table(curves, args.at, caption)
    command = shlex.join(["uv", "run", "python", "analysis/learning_curves.py", *sys.argv[1:]])
    atomic_write_text(Path(args.out) / "table.md", text + f"\nCommand:\n\n    {command}\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
