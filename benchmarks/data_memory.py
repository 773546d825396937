"""Peak memory of loading a paper-size dataset and of training on it, beyond the data itself.

Writes a synthetic D_MIX of ``--rows`` transitions (default 2M, the paper's size) and a D_UN of
``--un-rows`` with the dims of the suite's widest task, then measures, each in a fresh process
(so one stage's peak does not hide another's):

- ``load``: ``OfflineData.load`` (validation and checksum included) of both files;
- ``sources``: load + ``make_sources`` (the device-resident tensors the loop samples from);
- ``train``: load + sources + a UNIQ at paper sizes, a short pretraining and ``--updates`` updates.

Each row reports the peak RSS above the process's RSS before loading, and that minus the
bytes of the arrays themselves ("overhead"), which is what the target (< 2 GB) bounds.

    uv run python benchmarks/data_memory.py
    uv run python benchmarks/data_memory.py --rows 200000   # a quick check

Writes a Markdown table to stdout and to ``benchmarks/out/data_memory.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("load", "sources", "train")


def widest_task():
    from envs.tasks import TASKS

    return max(TASKS.values(), key=lambda t: t.obs_dim)


def write_dataset(path: Path, rows: int, spec, desirable: float, seed: int) -> int:
    """A synthetic dataset with ``spec``'s dims; returns the bytes of its arrays."""
    from uniq.data import OfflineData

    rng = np.random.default_rng(seed)
    T = spec.max_episode_steps
    obs = rng.standard_normal((rows, spec.obs_dim), dtype=np.float32)
    data = OfflineData(
        observations=obs,
        actions=rng.uniform(-1, 1, (rows, spec.act_dim)).astype(np.float32),
        rewards=rng.standard_normal(rows, dtype=np.float32),
        costs=np.zeros(rows, np.float32),
        next_observations=np.roll(obs, -1, 0),
        terminals=np.zeros(rows, np.float32),
        timeouts=(np.arange(rows) % T == T - 1).astype(np.float32),
        is_desirable=np.repeat(rng.uniform(size=-(-rows // T)) < desirable, T)[:rows].astype(
            np.float32
        ),
        attrs={"env_id": spec.name},
    )
    data.save(path)
    return sum(getattr(data, k).nbytes for k in ("observations", "actions", "rewards", "costs",
                                                  "next_observations", "terminals", "timeouts",
                                                  "is_desirable"))  # fmt: skip


def rss_mib() -> float:
    """Current resident set size (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def stage(name: str, un_path: str, mix_path: str, updates: int) -> dict:
    """Run one stage in this process; returns RSS before and the peak after, MiB."""
    import torch

    from uniq import registry
    from uniq.data import OfflineData
    from uniq.seeding import seed_everything
    from uniq.sources import make_sources

    torch.set_num_threads(1)
    spec = widest_task()
    before = rss_mib()
    un, mix = OfflineData.load(un_path, spec), OfflineData.load(mix_path, spec)
    if name != "load":
        device = torch.device("cpu")
        data = make_sources(un, mix, device, seed_everything(0, device))
        if name == "train":
            cls = registry.get_method("uniq")
            method = cls(cls.Config(ratio_steps=20, ratio_eval_every=10), spec, data, device, 0)
            method.pretrain()
            for _ in range(updates):
                batch = {k: data[src].sample(n) for k, (src, n) in method.batches().items()}
                method.update(batch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"before": before, "peak": peak}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="D_MIX transitions")
    parser.add_argument("--un-rows", type=int, default=100_000, help="D_UN transitions")
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/out/data_memory.md"))
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # child process
    parser.add_argument("--files", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        print(json.dumps(stage(args.stage, *args.files, args.updates)))
        return 0

    spec = widest_task()
    with tempfile.TemporaryDirectory() as tmp:
        un, mix = Path(tmp, "un.h5"), Path(tmp, "mix.h5")
        data_bytes = write_dataset(un, args.un_rows, spec, 0.0, 1)
        data_bytes += write_dataset(mix, args.rows, spec, 0.2, 2)
        data_mib = data_bytes / 2**20
        results = {}
        for name in STAGES:
            cmd = [sys.executable, __file__, "--stage", name, "--files", str(un), str(mix),
                   "--updates", str(args.updates)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    lines = [
        f"Peak memory, D_MIX {args.rows:,} + D_UN {args.un_rows:,} transitions of {spec.name} "
        f"(obs {spec.obs_dim}, act {spec.act_dim}); arrays: {data_mib:.0f} MiB. Each stage in a "
        "fresh process; 'above start' = peak RSS minus RSS after imports.",
        "",
        "| stage | peak RSS (MiB) | above start (MiB) | overhead beyond the data (MiB) |",
        "|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        above = r["peak"] - r["before"]
        lines.append(f"| {name} | {r['peak']:.0f} | {above:.0f} | {above - data_mib:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    from uniq.atomic import atomic_write_text

    atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
