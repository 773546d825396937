"""``uniq-bench``: the suite's command line (also ``python -m uniq``).

Every Snakemake rule calls one of these subcommands. The parser is built from
:data:`SUBCOMMANDS`, one row per subcommand: its name, its help line, the function that adds
its arguments and the handler that runs it. A handler imports its module lazily, so
``uniq-bench tasks`` starts fast, and turns the errors a user can fix into a message and exit
status 2 (no traceback). This is glue: with ``registry.py`` and ``workflow.py`` the one place
in ``uniq/`` that imports ``envs/`` (design.md section 2).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass


def _error(logger: str, err: BaseException) -> int:
    """Log ``err``'s message (a KeyError's own text, not its repr) under ``logger``; status 2."""
    logging.getLogger(logger).error("%s", err.args[0] if err.args else err)
    return 2


def _no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _task(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="task name (see `uniq-bench tasks`)")


# ---------------------------------------------------------------- tasks
def _args_tasks(p: argparse.ArgumentParser) -> None:
    pass


def _tasks(args: argparse.Namespace) -> int:
    from envs.tasks import TASKS

    print(f"{'task':32s} {'family':10s} {'obs':>4s} {'act':>4s} {'T':>5s} {'kappa':>6s}")
    for spec in TASKS.values():
        print(
            f"{spec.name:32s} {spec.family:10s} {spec.obs_dim:4d} {spec.act_dim:4d} "
            f"{spec.max_episode_steps:5d} {spec.cost_limit:6.1f}"
        )
    return 0


# ---------------------------------------------------------------- evaluate (envs/evaluate.py)
def _args_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="policy.pt written by `train`, or 'random'")
    _task(p)
    p.add_argument("--episodes", type=int, default=10, help="evaluation episodes (paper: 100)")
    p.add_argument(
        "--seed", type=int, default=0, help="episode i uses seed 10_000_000 + 1000*seed + i"
    )
    p.add_argument(
        "--reference",
        nargs="+",
        default=[],
        help="the env's rollouts_*.h5 giving R_min/R_max (without: return_normalized is NaN)",
    )
    p.add_argument("--out", help="eval.json to write (default: print the record)")
    p.add_argument(
        "--num-envs", type=int, default=8, help="envs stepped side by side (worker processes)"
    )
    _no_progress(p)


def _evaluate(args: argparse.Namespace) -> int:
    import json

    import torch

    from envs.evaluate import evaluate_policy_file
    from uniq.data import DatasetError

    torch.set_num_threads(1)  # the policy is tiny; env workers want the cores
    try:
        record = evaluate_policy_file(
            args.policy,
            args.task,
            args.episodes,
            args.seed,
            args.reference,
            args.num_envs,
            args.out,
            progress=not args.no_progress,
        )
    except (DatasetError, KeyError, ValueError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        logging.getLogger("envs.evaluate").error("%s", message)
        return 2
    if args.out is None:
        print(json.dumps(record, indent=2, sort_keys=True))
    return 0


# ---------------------------------------------------------------- data (envs/)
def _args_demonstrator(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--algo",
        choices=["sac", "ppo"],
        default="sac",
        help="sac: envs/demonstrators.py (velocity tasks); ppo: envs/ppo.py (navigation tasks)",
    )
    _task(p)
    p.add_argument("--kind", required=True, choices=["safe", "unsafe"])
    p.add_argument("--steps", type=int, required=True, help="environment steps (task demo_steps_*)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help=".../demonstrator_{kind}.pt")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of DemoConfig (sac) or PPOConfig (ppo), e.g. hidden=128; repeatable",
    )
    _no_progress(p)


def _demonstrator(args: argparse.Namespace) -> int:
    import torch

    from uniq.devices import device_for
    from uniq.job import parse_overrides
    from uniq.method import ConfigError, build_config

    torch.set_num_threads(args.threads)
    try:
        if args.algo == "ppo":  # on-policy, CPU-bound by the env: no GPU slot
            from envs.ppo import PPOConfig, train_ppo

            cfg = build_config(
                PPOConfig, parse_overrides(args.set), f"{args.kind} PPO demonstrator"
            )
            stats = train_ppo(
                args.task, args.kind, args.steps, args.seed, args.out, cfg,
                progress=not args.no_progress,
            )  # fmt: skip
        else:
            from envs.demonstrators import DemoConfig, train_demonstrator

            cfg = build_config(DemoConfig, parse_overrides(args.set), f"{args.kind} demonstrator")
            with device_for(args.device) as device:  # the GPU slot allocator, as for training
                stats = train_demonstrator(
                    args.task, args.kind, args.steps, args.seed, args.out, str(device), cfg,
                    progress=not args.no_progress,
                )  # fmt: skip
    except (ConfigError, KeyError, ValueError, RuntimeError) as err:
        return _error("envs.demonstrators", err)
    if args.algo == "ppo":
        logging.getLogger("envs.ppo").info(
            "%s: last-5 epochs return %.1f cost %.1f (lambda %.3f), %.0f s",
            args.out,
            stats["train_return_last5"],
            stats["train_cost_last5"],
            stats["final_lambda"],
            stats["wall_time_s"],
        )
        return 0
    logging.getLogger("envs.demonstrators").info(
        "%s: last-10 training episodes return %.1f cost %.1f (lambda %.3f), %.0f s",
        args.out,
        stats["train_return_last10"] or float("nan"),
        stats["train_cost_last10"] or float("nan"),
        stats["final_lambda"],
        stats["wall_time_s"],
    )
    return 0


def _args_quality(p: argparse.ArgumentParser) -> None:
    _task(p)
    p.add_argument("--dir", required=True, help="demonstrators/<Task> (holding safe/ and unsafe/)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--num-envs", type=int, default=1)


def _quality(args: argparse.Namespace) -> int:
    from envs.quality import assess

    try:
        records = assess(args.task, args.dir, args.episodes, args.num_envs)
    except (FileNotFoundError, KeyError, ValueError) as err:
        return _error("envs.quality", err)
    for kind, r in records.items():
        s, d, rnd = r["stochastic"], r["deterministic"], r["random"]
        print(
            f"{args.task} {kind}: stochastic return {s['return_mean']:.1f} cost {s['cost_mean']:.1f}"
            f" | deterministic {d['return_mean']:.1f} / {d['cost_mean']:.1f}"
            f" | random {rnd['return_mean']:.1f} / {rnd['cost_mean']:.1f}"
            + (f" | below bar: {r['below_bar']}" if r.get("below_bar") else "")
        )
    return 0


# ---------------------------------------------------------------- fingerprint (envs/fingerprints.py)
def _args_fingerprint(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--write", action="store_true",
        help="record this machine's fingerprints as the committed ones (after changing a "
        "demonstrator or the env code on purpose)",
    )  # fmt: skip
    p.add_argument("--file", default=None, help="default: demonstrators/fingerprints.json")


def _fingerprint(args: argparse.Namespace) -> int:
    import json

    from envs import fingerprints
    from uniq.atomic import atomic_write_text
    from uniq.numerics import status

    path = args.file or fingerprints.FINGERPRINT_FILE
    try:
        expected = None if args.write else fingerprints.load(path)
    except (OSError, ValueError, KeyError) as err:
        return _error("envs.fingerprints", ValueError(f"{path}: cannot read it ({err})."))
    found = fingerprints.compute()
    pinned = status()
    if args.write:
        if not all(pinned.values()):
            return _error("envs.fingerprints", ValueError(f"not writing {path}: unpinned {pinned}"))
        record = {"steps": fingerprints.STEPS, "seed": fingerprints.SEED, "fingerprints": found}
        atomic_write_text(path, json.dumps(record, indent=1) + "\n")
        print(f"wrote {len(found)} fingerprints to {path}")
        return 0
    differ = fingerprints.compare(expected, found)
    for key in sorted(found):
        print(f"{key:40s} {'DIFFERS' if key in differ else 'ok'}")
    if differ:
        logging.getLogger("envs.fingerprints").error(
            "%d of %d rollouts differ from %s: data regenerated here will have other "
            "checksums than the committed results. Pinned numerics: %s (uniq/numerics.py: "
            "an x86-64-v3 CPU and UNIQ_PORTABLE_NUMERICS unset are needed).",
            len(differ), len(found), path, pinned,
        )  # fmt: skip
        return 1
    print(f"all {len(found)} rollouts match {path}")
    return 0


def _args_select(p: argparse.ArgumentParser) -> None:
    _task(p)
    p.add_argument(
        "--dir", required=True, help="demonstrators/<Task>/<kind> (train.pt, train.step*.pt)"
    )
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument(
        "--max-cost", type=float, help="the highest return with mean cost <= this (default: final)"
    )
    p.add_argument(
        "--min-cost", type=float,
        help="the highest return with mean cost >= this (unsafe snapshots; default: final)",
    )  # fmt: skip
    p.add_argument("--num-envs", type=int, default=1)
    p.add_argument(
        "--from-step", type=int, default=0,
        help="only snapshots from this training step on, and train.pt (skips a long warm-up)",
    )  # fmt: skip


def _select(args: argparse.Namespace) -> int:
    from envs.quality import select

    try:
        record = select(
            args.task, args.dir, args.episodes, args.max_cost, args.num_envs, args.min_cost,
            args.from_step,
        )  # fmt: skip
    except (FileNotFoundError, KeyError, ValueError) as err:
        return _error("envs.quality", err)
    for c in record["candidates"]:
        mark = "*" if c["policy"] == record["chosen"] else " "
        print(f"{mark} {c['policy']}: return {c['return_mean']:.1f} cost {c['cost_mean']:.1f}")
    return 0


def _args_collect(p: argparse.ArgumentParser) -> None:
    _task(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--demonstrator", help="demonstrator_{kind}.pt (stochastic actions)")
    src.add_argument(
        "--scripted", choices=["safe", "unsafe"], help="scripted navigation controller"
    )
    p.add_argument("--episodes", type=int, required=True)
    p.add_argument("--seed", type=int, default=0, help="episode i is reset with seed + i")
    p.add_argument("--out", required=True, help=".../rollouts_{kind}.h5")
    p.add_argument(
        "--num-envs", type=int, default=1, help="envs stepped side by side (worker processes)"
    )
    _no_progress(p)


def _collect(args: argparse.Namespace) -> int:
    import torch

    from envs.collect import collect
    from uniq.data import DatasetError

    torch.set_num_threads(1)
    try:
        data = collect(
            args.task, args.out, args.episodes, args.seed, args.demonstrator, args.scripted,
            args.num_envs, progress=not args.no_progress,
        )  # fmt: skip
    except (DatasetError, KeyError, ValueError, FileNotFoundError) as err:
        return _error("envs.collect", err)
    a = data.attrs
    logging.getLogger("envs.collect").info(
        "%s: %d %s episodes (%s): return %.1f +- %.1f, cost %.1f +- %.1f",
        args.out, a["episodes"], a["kind"], a["source"], a["return_mean"], a["return_std"],
        a["cost_mean"], a["cost_std"],
    )  # fmt: skip
    return 0


def _args_dsrl(p: argparse.ArgumentParser) -> None:
    _task(p)
    p.add_argument("--file", required=True, help="the DSRL .hdf5 file of that task")
    p.add_argument(
        "--return-threshold",
        type=float,
        help="desirable: min-max normalised return above this (default: the authors' 0.5)",
    )
    p.add_argument(
        "--cost-threshold",
        type=float,
        help="desirable: min-max normalised cost below this (default: the authors' 0.5)",
    )
    p.add_argument("--out-safe", required=True, help=".../rollouts_safe.h5 (desirable episodes)")
    p.add_argument(
        "--out-unsafe", required=True, help=".../rollouts_unsafe.h5 (undesirable episodes)"
    )


def _dsrl(args: argparse.Namespace) -> int:
    from envs.dsrl import dsrl_rollouts
    from uniq.data import DatasetError

    thresholds = {  # unset: envs.dsrl's defaults, kept in one place
        k: v
        for k, v in (
            ("return_threshold", args.return_threshold),
            ("cost_threshold", args.cost_threshold),
        )
        if v is not None
    }
    try:
        safe, unsafe = dsrl_rollouts(
            args.task, args.file, args.out_safe, args.out_unsafe, **thresholds
        )
    except (DatasetError, KeyError, ValueError) as err:
        return _error("envs.dsrl", err)
    a = safe.attrs
    logging.getLogger("envs.dsrl").info(
        "%s: %d episodes -> %d desirable (%s), %d undesirable (%s); %s",
        args.file, a["dsrl_episodes"], a["dsrl_desirable"], args.out_safe,
        a["dsrl_undesirable"], args.out_unsafe, a["split_rule"],
    )  # fmt: skip
    return 0


def _args_split(p: argparse.ArgumentParser) -> None:
    _task(p)
    p.add_argument("--safe", required=True, help="rollouts_safe.h5")
    p.add_argument("--unsafe", required=True, help="rollouts_unsafe.h5")
    p.add_argument("--n-un", type=int, required=True, help="unsafe trajectories in D_UN")
    p.add_argument("--n-mix-desirable", type=int, required=True, help="safe trajectories in D_MIX")
    p.add_argument(
        "--n-mix-undesirable", type=int, required=True, help="unsafe trajectories in D_MIX"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", required=True, help="variant folder receiving un.h5 and mix.h5")
    p.add_argument(
        "--allow-no-gap",
        action="store_true",
        help="split even if the safe rollouts are not clearly cheaper than the unsafe ones",
    )


def _split(args: argparse.Namespace) -> int:
    from envs.splits import SplitError, split_files
    from uniq.data import DatasetError

    try:
        un, mix = split_files(
            args.task, args.safe, args.unsafe, args.n_un, args.n_mix_desirable,
            args.n_mix_undesirable, args.seed, args.out_dir, args.allow_no_gap,
        )  # fmt: skip
    except (SplitError, DatasetError, KeyError) as err:
        return _error("envs.splits", err)
    logging.getLogger("envs.splits").info(
        "%s: un.h5 %d trajectories, mix.h5 %d trajectories",
        args.out_dir,
        un.num_episodes(),
        mix.num_episodes(),
    )
    return 0


# ---------------------------------------------------------------- train (uniq/train.py)
def _args_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--algo", required=True, help="registered algorithm name (uniq, bc-mix, ...)")
    _task(p)
    p.add_argument("--un", required=True, help="D_UN file (un.h5)")
    p.add_argument("--mix", required=True, help="D_MIX file (mix.h5)")
    p.add_argument(
        "--seed",
        type=int,
        nargs="+",
        default=[0],
        help="one seed, or several trained together as one batched-over-seeds job (each "
        "seed's outputs in its own folder; see --out)",
    )
    p.add_argument("--steps", type=int, required=True, help="gradient updates")
    p.add_argument(
        "--out",
        required=True,
        help="run folder (policy.pt, train_log.csv, ...); with several seeds a pattern with "
        "{seed} in it (runs/uniq/seed{seed}); the job's checkpoint goes to {seed} = the seeds "
        "joined by _ (runs/uniq/seed0_1_2)",
    )
    p.add_argument("--label", help="name in results and tables (default: the algorithm name)")
    p.add_argument("--variant", help="dataset variant name, recorded in the outputs")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a hyper-parameter of the algorithm's Config (YAML scalar); repeatable",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, help="torch CPU threads (default $UNIQ_THREADS or 1)")
    p.add_argument(
        "--eval-every", type=int,
        help="steps between curve evaluations (curve.csv); default and 0: no curve",
    )  # fmt: skip
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--eval-num-envs", type=int, default=1)
    p.add_argument("--reference", nargs="+", default=[], help="rollouts_*.h5 for R_min/R_max")
    p.add_argument("--log-every", type=int, default=1000)
    p.add_argument("--checkpoint-every", type=int, default=10_000)
    p.add_argument(
        "--obs-norm",
        choices=["auto", "on", "off"],
        default="auto",
        help="standardise observations over D_MIX + D_UN for every network; auto: the task's "
        "default (on for velocity tasks, off for navigation, as the authors' code)",
    )
    _no_progress(p)


def _train(args: argparse.Namespace) -> int:
    from uniq.data import DatasetError
    from uniq.job import parse_overrides
    from uniq.method import ConfigError
    from uniq.train import TrainingDiverged, train

    if args.eval_every == 0:  # given, not defaulted: the user may expect a curve
        logging.getLogger("uniq.train").warning(
            "--eval-every 0: no learning curve (curve.csv) is written; give N > 0 to "
            "evaluate the policy every N steps"
        )
    try:
        train(
            args.algo,
            args.task,
            args.un,
            args.mix,
            args.seed[0] if len(args.seed) == 1 else args.seed,
            args.steps,
            args.out,
            parse_overrides(args.set),
            label=args.label,
            variant=args.variant,
            device=args.device,
            eval_every=args.eval_every or 0,
            eval_episodes=args.eval_episodes,
            reference_paths=args.reference,
            log_every=args.log_every,
            checkpoint_every=args.checkpoint_every,
            threads=args.threads,
            eval_num_envs=args.eval_num_envs,
            progress=not args.no_progress,
            obs_norm={"auto": None, "on": True, "off": False}[args.obs_norm],
        )
    except (ConfigError, DatasetError, TrainingDiverged) as err:
        logging.getLogger("uniq.train").error("%s", err)
        return 2
    return 0


def _args_diagnose(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run",
        help="a UNIQ run folder (with config.yaml; its checkpoint.pt kept beside or in its "
        "batched job's folder), or a job still training (a folder with only checkpoint.pt)",
    )
    p.add_argument("--rows", type=int, default=20_000, help="rows sampled per group")
    p.add_argument("--seed", type=int, default=0, help="seed of the row samples")
    p.add_argument("--batches", type=int, default=100, help="actor batches for the actor's weights")
    p.add_argument("--member", type=int, help="a training job's seed to read (default: its first)")
    p.add_argument("--un", help="a training job's D_UN file (default: the workflow's)")
    p.add_argument("--mix", help="a training job's D_MIX file (default: the workflow's)")
    p.add_argument("--out", help="also write the report as JSON here")


def _diagnose(args: argparse.Namespace) -> int:
    from uniq.diagnostics import diagnose, format_report, write

    try:
        if (args.un is None) != (args.mix is None):
            raise ValueError("give both --un and --mix, or neither")
        paths = {"un": args.un, "mix": args.mix} if args.un else None
        report = diagnose(
            args.run, args.rows, args.seed, member_seed=args.member, data_paths=paths,
            weight_batches=args.batches,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        logging.getLogger("uniq.diagnostics").error("%s", e)
        return 2
    print(format_report(report), end="")
    if args.out:
        write(report, args.out)
    return 0


# ------------------------------------------------- stats (uniq/stats.py, uniq/plots.py)
def _args_aggregate(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--experiment", required=True, help="experiment name (main, undesirable_size, ...)"
    )
    p.add_argument("--out", required=True, help="output folder, e.g. results/P/E")
    p.add_argument("--reference", default="uniq", help="method compared with each baseline (PoI)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument(
        "--scoring",
        choices=["final", "last-k"],
        default="final",
        help="score a run by its final policy (eval.json, the default) or by the mean of its "
        "last --last-k curve evaluations (curve.csv beside eval.json)",
    )
    p.add_argument("--last-k", type=int, default=3, help="k of --scoring last-k")
    p.add_argument(
        "--display",
        action="append",
        default=[],
        metavar="LABEL=NAME",
        help="the name tables and figures print for LABEL (repeat per label; the workflow "
        "passes every label's, uniq.workflow.display_names); the labels given come first, in "
        "this order; a label not given prints as itself",
    )
    p.add_argument("evals", nargs="+", metavar="EVAL_JSON", help="the runs' eval.json files")


def _display_map(pairs: list[str]) -> dict[str, str]:
    """``["uniq=UNIQ", "uniq-nocorr=UNIQ (no corr.)"]`` -> an ordered label -> name map."""
    from uniq.stats import StatsError

    names: dict[str, str] = {}
    for pair in pairs:
        label, sep, name = pair.partition("=")
        if not sep or not label or not name:
            raise StatsError(f"--display {pair!r}: expected LABEL=NAME, e.g. bc-safe=BC-safe")
        if label in names and names[label] != name:
            raise StatsError(
                f"--display gives {label!r} two names ({names[label]!r}, {name!r}); give one"
            )
        names[label] = name
    return names


def _aggregate(args: argparse.Namespace) -> int:
    from uniq.stats import Scoring, StatsError, aggregate

    try:
        scoring = Scoring(args.scoring, args.last_k)
        aggregate(
            args.evals,
            args.experiment,
            args.out,
            args.reference,
            args.reps,
            args.seed,
            scoring,
            display=_display_map(args.display),
        )
    except StatsError as e:  # bad inputs: a clear message, no traceback
        logging.getLogger("uniq.stats").error("%s", e)
        return 2
    return 0


def _args_figures(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True)
    p.add_argument("--summary", required=True, help="folder written by `aggregate`")
    p.add_argument("--out", required=True, help="figure folder, e.g. figures/P")
    p.add_argument("--curves", nargs="*", default=[], metavar="CURVE_CSV", help="curve.csv files")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples for curve bands")
    p.add_argument("--seed", type=int, default=0)


def _figures(args: argparse.Namespace) -> int:
    from uniq.plots import make_figures
    from uniq.stats import StatsError

    try:
        make_figures(args.experiment, args.summary, args.out, args.curves, args.reps, args.seed)
    except StatsError as e:
        logging.getLogger("uniq.plots").error("%s", e)
        return 2
    return 0


# ---------------------------------------------------------------- check-config (uniq/workflow.py)
def _args_check_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("configfile", help="a workflow config, e.g. config/quick.yaml")


def _check_config(args: argparse.Namespace) -> int:
    from uniq.workflow import WorkflowConfigError, check_file

    try:
        config = check_file(args.configfile)
    except WorkflowConfigError as err:
        return _error("uniq.workflow", err)
    print(f"{args.configfile}: valid (profile {config['profile']})")
    return 0


# ---------------------------------------------------------------- plan (uniq/plan.py)
def _args_plan(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configfile", default="config/config.yaml", help="the profile to price")
    p.add_argument("--cores", type=int, default=8, help="the --cores you will give Snakemake")
    p.add_argument("--gpus", type=int, default=0, help="GPUs the train jobs will share")
    p.add_argument("--device", default="auto", help="where the updates run: auto | cpu | cuda")
    p.add_argument("--burst-s", type=float, default=0.6, help="seconds per timed update burst")
    p.add_argument("--json", help="also write the price (and what was measured) here")
    p.add_argument(
        "--check", metavar="BENCH_DIR",
        help="compare with a finished run's benchmark files (logs/<profile>/benchmarks); "
        "status 1 when the total is off by more than 30%% or a file names no planned job",
    )  # fmt: skip


def _plan(args: argparse.Namespace) -> int:
    from uniq import jobtimes, plan
    from uniq.workflow import WorkflowConfigError

    try:
        config = plan.load_config(args.configfile)
    except WorkflowConfigError as err:
        return _error("uniq.workflow", err)
    measured = jobtimes.read_benchmarks(args.check) if args.check else None
    if args.check and not measured:  # before a minute of measuring, not after
        return _error("uniq.plan", ValueError(
            f"--check {args.check}: no Snakemake benchmark files (*.tsv) there; give the run's "
            f"logs/<profile>/benchmarks folder."
        ))  # fmt: skip
    result = plan.plan(config, args.cores, args.gpus, args.device, budget_s=args.burst_s)
    print(plan.table(result))
    status = 0
    if args.check:
        result["check"] = jobtimes.check(result, measured)
        print(jobtimes.check_table(result["check"]))
        status = 0 if result["check"]["passed"] else 1
    if args.json:
        plan.dump(result, args.json)
    return status


# ---------------------------------------------------------------- progress (uniq/progress.py)
def _args_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configfile", default="config/config.yaml", help="the profile running")
    p.add_argument("--directory", default=".", help="the workflow's folder (default: here)")
    p.add_argument(
        "--price", help="the profile's price (`uniq-bench plan --json FILE`, at the --cores you "
        "run): also say the time left (default: the config's `price`, if it names one)",
    )  # fmt: skip


def _progress(args: argparse.Namespace) -> int:
    from uniq import plan, progress
    from uniq import workflow as W

    try:
        config = plan.load_config(args.configfile)
        if args.price:
            price = plan.load_price(args.price, config)
        else:
            price = plan.config_price(config, args.directory)
    except W.WorkflowConfigError as err:
        return _error("uniq.workflow", err)
    except (OSError, ValueError) as err:
        return _error("uniq.progress", err)
    print(progress.table(config, args.directory, price), end="")
    return 0


# ---------------------------------------------------------------- the table
@dataclass(frozen=True)
class Subcommand:
    """One ``uniq-bench`` subcommand: ``add_arguments(parser)`` then ``run(args) -> status``."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("tasks", "list the registered tasks with their dims and thresholds",
               _args_tasks, _tasks),
    Subcommand("evaluate", "roll out a policy.pt (or random) and write eval.json",
               _args_evaluate, _evaluate),
    Subcommand("demonstrator",
               "train an unsafe / safe demonstrator: SAC / SAC-Lagrangian or PPO / PPO-Lagrangian",
               _args_demonstrator, _demonstrator),
    Subcommand("demonstrator-quality",
               "a task's demonstrators against a random policy and the bars: "
               "<dir>/<kind>/quality.json",
               _args_quality, _quality),
    Subcommand("demonstrator-select",
               "choose a demonstrator among its training snapshots: <dir>/policy.pt, "
               "selection.json",
               _args_select, _select),
    Subcommand("fingerprint",
               "check that this machine rolls the committed demonstrators out into the "
               "committed bytes (demonstrators/fingerprints.json)",
               _args_fingerprint, _fingerprint),
    Subcommand("collect", "roll a demonstrator / scripted controller out into rollouts_{kind}.h5",
               _args_collect, _collect),
    Subcommand("dsrl",
               "split a DSRL HDF5 file into desirable / undesirable rollouts_{safe,unsafe}.h5",
               _args_dsrl, _dsrl),
    Subcommand("split", "build a variant's un.h5 and mix.h5 from the rollouts",
               _args_split, _split),
    Subcommand("train", "train one algorithm on (D_UN, D_MIX); resumes if interrupted",
               _args_train, _train),
    Subcommand("diagnose",
               "a UNIQ run's ratios, implicit reward and advantage on D_UN and on D_MIX's "
               "desirable and undesirable rows (hidden labels used for the diagnosis only)",
               _args_diagnose, _diagnose),
    Subcommand("aggregate",
               "summary, rliable aggregates, probability of improvement and tables of an "
               "experiment",
               _args_aggregate, _aggregate),
    Subcommand("figures", "PNG/PDF figures (+ .rst captions) of an aggregated experiment",
               _args_figures, _figures),
    Subcommand("plan",
               "price a profile before launch: jobs, job-hours and wall time per rule, "
               "from short bursts measured on this machine",
               _args_plan, _plan),
    Subcommand("progress", "where a profile's run stands: each training job's step, rate, "
               "hours left", _args_progress, _progress),
    Subcommand("check-config",
               "the Snakefile's checks of a config file, naming the line of a YAML error",
               _args_check_config, _check_config),
)  # fmt: skip
"""Every subcommand, in the order ``uniq-bench --help`` lists them."""


ROLLOUT_COMMANDS = (
    "evaluate",
    "collect",
    "demonstrator-quality",
    "demonstrator-select",
    "fingerprint",
)
"""They roll a policy out: their torch runs on CPU-independent paths (uniq/numerics.py), so
a policy file gives the same rollouts on any x86-64-v3 machine. Training does not: pinning
would halve its sgemm speed, and its updates are not CPU-independent anyway."""


class _StoreOnce(argparse.Action):
    """argparse's store, but an option given twice is an error: argparse would keep the last
    silently (``--seed 0 --seed 1`` trained seed 1 only)."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault("_given", set())
        if self.dest in given:
            several = " (several values follow one flag: --seed 0 1 2)" if self.nargs == "+" else ""
            parser.error(f"{option_string} given twice; give it once{several}")
        given.add(self.dest)
        setattr(namespace, self.dest, values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uniq-bench", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in SUBCOMMANDS:
        p = sub.add_parser(command.name, help=command.help)
        p.register("action", None, _StoreOnce)
        p.register("action", "store", _StoreOnce)
        command.add_arguments(p)
        p.set_defaults(handler=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command in ROLLOUT_COMMANDS and argv is None:
        # this process is the command (its own command line): pin it. A caller passing argv
        # (a test, a notebook) keeps its process's numerics, which may already be fixed.
        from uniq.numerics import pin_torch

        pin_torch()
    from uniq.lock import OutputError, output_lock

    try:
        with output_lock(*_outputs(args)):
            return int(args.handler(args) or 0)
    except OutputError as err:
        return _error("uniq.lock", err)


def _outputs(args: argparse.Namespace) -> list[str]:
    """What the command writes, locked against a second writer (uniq/lock.py)."""
    if args.command == "train":
        from uniq.job import seed_dirs, seed_list
        from uniq.method import ConfigError

        try:
            outs, job_dir = seed_dirs(args.out, seed_list(args.seed))
        except ConfigError:
            return []  # the handler names the mistake
        return [*outs, job_dir]
    if args.command == "figures":  # experiments share the folder: lock their prefix
        return [f"{args.out}/{args.experiment}"]
    names = ("out", "out_dir", "out_safe", "out_unsafe")
    return [v for n in names if (v := getattr(args, n, None))]


if __name__ == "__main__":
    sys.exit(main())
