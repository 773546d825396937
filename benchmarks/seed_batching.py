"""Seeds batched in one network vs separate runs: time per update step of K seeds.

For each method, at its published sizes on benchmarks/update_speed.py's synthetic data
(SafetyPointGoal1 dimensions), three ways of making progress are timed *interleaved*, in
rounds of ``--block`` steps, and the median over rounds is reported:

- ``one``: one seed, the plain method (``members=None``), as a one-seed run trains;
- ``separate``: K plain methods (seeds 0..K-1) stepped one after another in this process,
  i.e. K separate runs done back to back (no process start-up or data loading counted);
- ``batched``: one method with ``members=K`` (what ``train.batch_seeds`` runs).

Targets (the suite's performance issue): batched K=5 takes at most 2x the time of one seed
on a GPU, and at most 0.8x the time of 5 separate runs on CPU.

    uv run python benchmarks/seed_batching.py --threads 2 --steps 200
    uv run python benchmarks/seed_batching.py --algos uniq bc-mix dwbc safedice --members 5

Writes a Markdown table to stdout and to ``benchmarks/out/seed_batching.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from update_speed import SHORT_PRETRAIN, sync, synthetic  # noqa: E402

from envs.tasks import TaskSpec  # noqa: E402
from uniq import registry  # noqa: E402
from uniq.atomic import atomic_write_text  # noqa: E402
from uniq.job import parse_overrides  # noqa: E402
from uniq.seeding import job_seed, seed_everything  # noqa: E402
from uniq.sources import make_sources  # noqa: E402


def build(name: str, spec, device, members: int, overrides: dict):
    """(one plain method, K plain methods, one batched method), all pretrained (shortly)."""
    cls = registry.get_method(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    sets = {k: v for k, v in overrides.items() if k in fields}  # e.g. hidden=128 for all
    cfg = cls.Config(**{**SHORT_PRETRAIN.get(name, {}), **sets})
    sources = make_sources(
        synthetic(spec, 10, 0.5, 1), synthetic(spec, 40, 0.0, 2), device, seed_everything(0, device)
    )

    def plain(seed: int):
        method = cls(cfg, spec, sources.with_generator(seed_everything(seed, device)), device, seed)
        method.pretrain()
        return method

    plains = [plain(seed) for seed in range(members)]
    batched_sources = sources.with_generator(seed_everything(job_seed(range(members)), device))
    batched = cls(cfg, spec, batched_sources, device, 0, members=members)
    batched.adopt(plains)
    return plain(0), plains, batched


def step(method, members: int | None = None) -> None:
    batch = {
        k: method.data[src].sample(n) if members is None else method.data[src].sample(n, members)
        for k, (src, n) in method.batches().items()
    }
    method.update(batch)


def measure(
    name: str, device, members: int, steps: int, block: int, warmup: int, overrides: dict
) -> dict:
    spec = TaskSpec("SafetyPointGoal1-v0", "navigation", obs_dim=60, act_dim=2)
    one, plains, batched = build(name, spec, device, members, overrides)
    runs = {
        "one": lambda: step(one),
        "separate": lambda: [step(m) for m in plains],
        "batched": lambda: step(batched, members),
    }
    for fn in runs.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(max(1, steps // block)):
        for key, fn in runs.items():  # interleaved: the same machine conditions for all
            sync(device)
            t = time.perf_counter()
            for _ in range(block):
                fn()
            sync(device)
            times[key].append((time.perf_counter() - t) / block)
    return {k: statistics.median(v) for k, v in times.items()}


def table(results: dict, members: int, threads: int, steps: int, block: int, sets: str) -> str:
    lines = [
        f"Time per update step of K={members} seeds (median over rounds of {block}; {steps} "
        f"timed steps each; torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{threads} thread(s); published sizes{', with ' + sets if sets else ''}). "
        "Targets: batched/one <= 2 on a GPU, batched/separate <= 0.8 on CPU.",
        "",
        f"| device | method | one seed ms | {members} separate ms | batched K={members} ms "
        "| batched / one | batched / separate |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (device, name), r in results.items():
        lines.append(
            f"| {device} | {name} | {1000 * r['one']:.1f} | {1000 * r['separate']:.1f} "
            f"| {1000 * r['batched']:.1f} | {r['batched'] / r['one']:.2f}x "
            f"| {r['batched'] / r['separate']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["uniq", "bc-mix", "dwbc", "safedice"])
    parser.add_argument("--members", type=int, default=5, help="K seeds batched")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per variant")
    parser.add_argument("--block", type=int, default=10, help="steps per timed block")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu (+ cuda)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="hyper-parameter for every method that has it (e.g. hidden=128, the quick profile)",
    )  # fmt: skip
    parser.add_argument("--out", default=str(ROOT / "benchmarks/out/seed_batching.md"))
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.set)
    torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    results = {}
    for d in devices:
        for name in args.algos:
            results[d, name] = measure(
                name, torch.device(d), args.members, args.steps, args.block, args.warmup, overrides
            )
            print(d, name, {k: f"{1000 * v:.1f} ms" for k, v in results[d, name].items()})
    text = table(results, args.members, args.threads, args.steps, args.block, " ".join(args.set))
    print(text)
    atomic_write_text(args.out, f"Command: `{' '.join(['python', *sys.argv])}`\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
