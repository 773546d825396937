"""Every benchmark of the suite, one after another, into one Markdown report.

Each part times its own comparisons side by side in one process (see each script):

1. update_speed.py   update steps/s per method vs a minimal twin-Q + tanh-Gaussian update;
2. seed_batching.py  K seeds batched vs one seed vs K separate runs;
3. env_speed.py      evaluation with the policy in the loop vs raw random env stepping;
4. data_memory.py    peak memory of loading and training on a 2M-transition dataset.

    uv run python benchmarks/run_all.py                 # the full sizes (about 20 min on 2 CPU cores)
    uv run python benchmarks/run_all.py --quick         # fewer steps and rows (minutes)

Writes ``benchmarks/out/report.md`` (and each part's own table beside it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import data_memory  # noqa: E402
import env_speed  # noqa: E402
import seed_batching  # noqa: E402
import update_speed  # noqa: E402

ALGOS = ["uniq", "bc-mix", "bc-safe", "dwbc", "safedice"]


def parts(quick: bool, threads: int) -> list[tuple[str, object, list[str]]]:
    steps = "60" if quick else "200"
    out = ROOT / "out"
    return [
        ("Update speed", update_speed, ["--threads", str(threads), "--steps", steps,
                                        "--algos", *ALGOS, "--out", str(out / "update_speed.md")]),
        ("Seeds batched", seed_batching, ["--threads", str(threads), "--steps", steps,
                                          "--out", str(out / "seed_batching.md")]),
        ("Evaluation vs raw env stepping", env_speed,
         ["--episodes", "2" if quick else "4", "--out", str(out / "env_speed.md")]),
        ("Dataset memory", data_memory, ["--rows", "200000" if quick else "2000000",
                                         "--out", str(out / "data_memory.md")]),
    ]  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, 200k rows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "out/report.md"))
    args = parser.parse_args(argv)
    sections = [
        f"# uniq-bench benchmarks ({platform.processor() or platform.machine()}, "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC{', --quick' if args.quick else ''})"
    ]
    for title, module, module_args in parts(args.quick, args.threads):
        print(f"== {title}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = module.main(module_args)
        if rc:
            print(buf.getvalue(), file=sys.stderr)
            return rc
        sections.append(
            f"## {title}\n\n{buf.getvalue().strip()}\n\n({time.perf_counter() - t:.0f} s)"
        )
    text = "\n\n".join(sections) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
