"""The committed navigation demonstrators' table: quality, bars and cloneability.

Per task, from ``demonstrators/<Task>/{safe,unsafe}/quality.json`` (``uniq-bench
demonstrator-quality``): the safe, unsafe and random policies' return / cost (50 episodes of
the stochastic rollout policy) and which bars fail. Cloneability comes from the quick
profile's BC runs on that task's default split (``results/quick/runs/<Task>/default/
{bc-safe,bc-mix}/seed*/eval.json``, which the quick workflow writes):

- BC-safe's mean cost over seeds is at most twice the safe demonstrator's + 5;
- BC-mix is clearly less safe than BC-safe: its mean cost exceeds BC-safe's by more than
  three standard errors of the difference (seeds as samples, as quality.json's "clearly").

Only runs on rollouts of the committed demonstrators count: the quick data's rollouts must
record the checksums quality.json has, and the runs must be newer than those rollouts.

Writes ``demonstrators/<Task>/cloneability.json`` where the runs exist, and the Markdown table
between the ``<!-- demonstrator-table -->`` markers of README.md and demonstrators/README.md.

    uv run python analysis/demonstrator_table.py [--runs results/quick/runs]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.quality import CLEAR_MARGIN_SE  # noqa: E402
from envs.tasks import TASKS  # noqa: E402
from uniq.atomic import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MARK = re.compile(r"(<!-- demonstrator-table -->\n).*?(<!-- /demonstrator-table -->)", re.S)


def _costs(runs: Path, task: str, algo: str, newer_than: float) -> np.ndarray:
    """The cost of each seed's evaluation, of runs written after ``newer_than`` (mtime)."""
    files = sorted((runs / task / "default" / algo).glob("seed*/eval.json"))
    fresh = [f for f in files if f.stat().st_mtime >= newer_than]
    return np.array([json.loads(f.read_text())["cost_mean"] for f in fresh])


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def rollout_shas(data: Path) -> dict[str, str | None]:
    """Which demonstrator (sha256) each kind's rollouts of a quick data folder came from."""
    import h5py

    out = {}
    for kind in ("safe", "unsafe"):
        path = data / f"rollouts_{kind}.h5"
        out[kind] = None
        if path.exists():
            with h5py.File(path, "r") as f:
                out[kind] = f.attrs.get("demonstrator_sha256")
    return out


def cloneability(
    task: str, safe_cost: float, runs: Path, expected_shas: dict[str, str] | None = None
) -> dict | None:
    """The cloneability bar from the BC runs (at least 2 seeds of each), or None where they
    have not run, or ran on rollouts of other demonstrators than ``expected_shas``."""
    data = runs.parent / "data" / task
    newer_than = 0.0
    if expected_shas is not None:
        if rollout_shas(data) != expected_shas:
            return None  # the quick data predates these demonstrators: rerun it
        newer_than = max((data / f"rollouts_{k}.h5").stat().st_mtime for k in expected_shas)
    safe = _costs(runs, task, "bc-safe", newer_than)
    mix = _costs(runs, task, "bc-mix", newer_than)
    if len(safe) < 2 or len(mix) < 2:
        return None
    se = math.sqrt(safe.var(ddof=1) / len(safe) + mix.var(ddof=1) / len(mix))
    return dict(
        task=task,
        runs=_relative(runs / task / "default"),
        demonstrator_sha256=expected_shas,
        bc_safe_cost=[float(c) for c in safe],
        bc_mix_cost=[float(c) for c in mix],
        bc_safe_cost_mean=float(safe.mean()),
        bc_mix_cost_mean=float(mix.mean()),
        bc_safe_cost_bound=2 * safe_cost + 5,
        bc_safe_close_to_demonstrator=bool(safe.mean() <= 2 * safe_cost + 5),
        bc_mix_clearly_less_safe=bool(mix.mean() - safe.mean() > CLEAR_MARGIN_SE * se),
    )


BAR_TEXT = {  # quality.json's bar names, as the table says them
    "safe_cost_at_most_limit": "safe cost > 25",
    "safe_return_above_random": "safe return not clearly above random",
    "unsafe_return_above_safe": "unsafe return not clearly above safe",
    "unsafe_cost_at_least_50": "unsafe cost < 50",
    "unsafe_cost_at_least_twice_safe": "unsafe cost < twice safe",
}


def _num(x: float) -> str:
    return f"{x:.1f}".replace("-0.0", "0.0")


def _cell(q: dict | None, folder: Path | None = None, steps: bool = True) -> str:
    if q is None:  # trained and chosen, not yet measured: selection's own 20 episodes
        sel = folder / "selection.json" if folder else None
        if sel is None or not sel.exists():
            return "not trained yet"
        rec = json.loads(sel.read_text())
        if not rec.get("trained_steps"):
            return "trained (no step count in selection.json)"
        c = next(r for r in rec["candidates"] if r["policy"] == rec["chosen"])
        return (
            f"{_num(c['return_mean'])} / {_num(c['cost_mean'])} ({rec['trained_steps'] / 1e6:g}M "
            f"steps; {c['episodes']} selection episodes, quality pending)"
        )
    s = q["stochastic"]
    text = f"{_num(s['return_mean'])} / {_num(s['cost_mean'])}"
    return text + (f" ({q['trained_steps'] / 1e6:g}M steps)" if steps else "")


def row(task: str, runs: Path) -> str:
    folder = ROOT / "demonstrators" / task
    quality = {
        kind: json.loads((folder / kind / "quality.json").read_text())
        if (folder / kind / "quality.json").exists()
        else None
        for kind in ("safe", "unsafe")
    }
    safe, unsafe = quality["safe"], quality["unsafe"]
    if safe is None or unsafe is None:
        partial = [
            k
            for k in ("safe", "unsafe")
            if (folder / k / "train.checkpoint.pt").exists()
            and not (folder / k / "selection.json").exists()
        ]
        state = f"training ({', '.join(partial)}; checkpoint committed)" if partial else "queued"
        cells = " | ".join(_cell(quality[k], folder / k) for k in ("safe", "unsafe"))
        return f"| {task} | {cells} | | | {state} |"
    random = {"stochastic": safe["random"]}
    shas = {kind: quality[kind]["policy_sha256"] for kind in ("safe", "unsafe")}
    clone = cloneability(task, safe["stochastic"]["cost_mean"], runs, shas)
    if clone is not None:
        atomic_write_text(folder / "cloneability.json", json.dumps(clone, indent=2) + "\n")
    failed = [BAR_TEXT.get(b, b) for b in safe.get("below_bar", [])]
    if clone is None:
        clone_cell, failed = "not measured", failed + ["cloneability not measured (>= 2 seeds)"]
    else:
        n = len(clone["bc_safe_cost"])
        clone_cell = (
            f"{clone['bc_safe_cost_mean']:.1f} / {clone['bc_mix_cost_mean']:.1f} ({n} seeds)"
        )
        if not clone["bc_safe_close_to_demonstrator"]:
            failed.append(f"BC-safe cost > {clone['bc_safe_cost_bound']:.1f}")
        if not clone["bc_mix_clearly_less_safe"]:
            failed.append("BC-mix not clearly less safe")
    bars = "all met" if not failed else "below: " + ", ".join(failed)
    return (
        f"| {task} | {_cell(safe)} | {_cell(unsafe)} | {_cell(random, steps=False)} "
        f"| {clone_cell} | {bars} |"
    )


def table(runs: Path) -> str:
    tasks = [name for name, spec in TASKS.items() if spec.family == "navigation"]
    lines = [
        "| task | safe | unsafe | random | BC-safe / BC-mix cost | bars |",
        "|---|---:|---:|---:|---:|---|",
        *(row(task, runs) for task in tasks),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=str(ROOT / "results/quick/runs"), help="the quick runs")
    args = p.parse_args(argv)
    text = table(Path(args.runs))
    for doc in (ROOT / "README.md", ROOT / "demonstrators" / "README.md"):
        body = doc.read_text()
        if not MARK.search(body):
            print(f"{doc}: no <!-- demonstrator-table --> markers; table not inserted")
            continue
        atomic_write_text(doc, MARK.sub(lambda m: m.group(1) + text + m.group(2), body))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
