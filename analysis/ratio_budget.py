"""How many classifier steps UNIQ's ratio needs on a profile's splits (design.md section 5.1).

For each (task, variant) of the profile that UNIQ trains on, the two state classifiers are
trained as the profile's ``uniq`` entry sets them (its width, its ``ratio_steps`` cap, the
task family's check interval and gap thresholds: the reference's stop rule), one seed,
exactly as ``uniq-bench train`` fits them (uniq.ratio.RatioEstimator). The table gives each
classifier's steps to the stop rule (or the cap), the gap reached against its threshold and
against the gap a classifier can reach without memorising rows (``gap_bound``), and the
seconds per step. Where the profile sets ``ratio_cache_dir`` the fit is written there, so
the profile's UNIQ jobs load it instead of fitting again (seeds and arms share it).

    uv run python analysis/ratio_budget.py --configfile config/quick.yaml

Writes results/<profile>/ratio_budget/{table.md,table.csv}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from uniq import jobtimes, registry
from uniq.atomic import atomic_path, atomic_write_text
from uniq.data import OfflineData
from uniq.method import build_config
from uniq.ratio import gap_bound
from uniq.seeding import seed_everything
from uniq.sources import make_sources


def splits(config: dict) -> list[tuple[str, str]]:
    """(task, variant) pairs of every experiment that trains UNIQ with its ratio."""
    uniq_algos = {
        a for a, spec in config["algorithms"].items() if (spec or {}).get("method", a) == "uniq"
    }
    pairs = set()
    for exp in config["experiments"].values():
        if uniq_algos & set(exp["algorithms"]):
            pairs |= {(t, v) for t in exp["tasks"] for v in exp["variants"]}
    return sorted(pairs)


def measure(root: Path, task: str, variant: str, overrides: dict, seed: int = 0) -> dict:
    cls = registry.get_method("uniq")
    spec = registry.get_task(task)
    un = OfflineData.load(root / task / variant / "un.h5", spec)
    mix = OfflineData.load(root / task / variant / "mix.h5", spec)
    device = torch.device("cpu")
    generator = seed_everything(seed, device)
    cfg = build_config(cls.Config, overrides, "uniq")
    data = make_sources(un, mix, device, generator, obs_norm=bool(spec.obs_normalize))
    method = cls(cfg, spec, data, device, seed)
    jobtimes.take_credit()
    start = time.perf_counter()
    info = method.ratio.fit(data)
    wall = time.perf_counter() - start + jobtimes.take_credit()[0]  # a resumed fit's earlier part
    steps = info["ratio_steps_c_mix"] + info["ratio_steps_c_un"]
    row = dict(
        task=task,
        variant=variant,
        un_rows=len(un.observations),
        mix_rows=len(mix.observations),
        check_every=info["ratio_check_every"],
    )
    for name, gap_key in (("c_mix", "ratio_gap_mix"), ("c_un", "ratio_gap_un")):
        row[f"{name}_threshold"] = info[gap_key]
        row[f"{name}_steps"] = int(info[f"ratio_steps_{name}"])
        row[f"{name}_gap"] = round(info[f"ratio_final_gap_{name}"], 3)
        row[f"{name}_stopped"] = info[f"ratio_final_gap_{name}"] > info[gap_key]
    # the gap a classifier reaches without memorising rows (uniq.ratio.gap_bound), from the
    # split's hidden share of desirable rows (read here for the analysis only)
    row["gap_bound"] = round(gap_bound(float(mix.is_desirable.mean())), 3)
    row["cap"] = cfg.ratio_steps
    row["cached"] = bool(info.get("ratio_cached", 0.0))
    row["seconds_per_step"] = float("nan") if row["cached"] else round(wall / steps, 4)
    row["wall_s"] = round(wall, 1)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configfile", default="config/quick.yaml")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", nargs="*", default=None, help="tasks to measure (default: all)")
    p.add_argument("--again", action="store_true", help="measure splits already in the table")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(Path(args.configfile).read_text())
    profile = config["profile"]
    overrides = (config["algorithms"]["uniq"] or {}).get("set", {})
    root = Path(f"results/{profile}/data")
    out = Path(f"results/{profile}/ratio_budget")
    out.mkdir(parents=True, exist_ok=True)
    # rows measured earlier (another --only) stay; --again measures them again
    old = out / "table.csv"
    rows = pd.read_csv(old).to_dict("records") if old.exists() else []
    for task, variant in splits(config):
        if args.only and task not in args.only:
            continue
        if not args.again and any((r["task"], r["variant"]) == (task, variant) for r in rows):
            continue
        if not (root / task / variant / "mix.h5").exists():
            print(f"{task}/{variant}: no data yet (run the profile's dataset jobs first); skipped")
            continue
        rows = [r for r in rows if (r["task"], r["variant"]) != (task, variant)]
        rows.append(measure(root, task, variant, overrides))
        print(rows[-1], flush=True)
        with atomic_path(out / "table.csv") as tmp:  # after each split: a long run keeps its rows
            pd.DataFrame(rows).to_csv(tmp, index=False)
    table = pd.DataFrame(rows)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in table.itertuples(index=False)]
    atomic_write_text(out / "table.md", "\n".join(lines) + "\n")
    print(table.to_string())


if __name__ == "__main__":
    main()
