"""The rows of a navigation split where the agent sees nothing: every lidar reads 0.

A navigation agent more than 3 m (the lidars' ``max_dist``) from every object sees none of them,
which is where a policy that has left the arena ends up (analysis/agent_reach.py). Are such
states in the demonstrations, whose are they, and how does a UNIQ run weigh them? For a UNIQ
run's folder (or a job still training: its checkpoint folder, ``--member`` its seed) this reads
its data and reports:

- the D_MIX rows whose lidars all read 0: how many, the share of them from desirable
  demonstrations (the hidden labels, read here for the analysis only) and the episodes that
  hold them; the same share of D_UN;
- the run's occupancy ratio tau(s) on those rows against D_MIX's 10th percentile and median,
  and the ratio's floor (the classifiers' clip: ``ratio_prob_min / ratio_prob_max``). In the
  recipe an actor batch's rows at or below its 10th percentile of tau get w(s) = 0, so
  W = w(s) + gamma w(s') is near 0 and the actor's factor clip(1/W^2, 0, 100) is at its cap:
  rows at the floor are the ones the actor imitates most.

    uv run python analysis/blind_rows.py \\
        results/paper_data/runs/SafetyPointButton1-v0/default/uniq/seed0_1_2_3_4 --member 0
"""

from __future__ import annotations

import argparse

import numpy as np

from envs.tasks import make_env, resolve_task
from uniq.data import OfflineData
from uniq.diagnostics import load_run


def lidar_columns(task) -> np.ndarray:
    """The observation's lidar columns: the task's observation dict flattened in its order."""
    spec = resolve_task(task)
    if spec.family != "navigation":
        raise SystemExit(f"{spec.name} is a {spec.family} task: it has no lidar")
    env = make_env(spec)
    try:
        layout = env.unwrapped.task.obs_info.obs_space_dict
    finally:
        env.close()
    columns, start = [], 0
    for name, space in layout.items():
        size = int(np.prod(space.shape))
        if name.endswith("_lidar"):
            columns.extend(range(start, start + size))
        start += size
    if start != spec.obs_dim:
        raise SystemExit(
            f"{spec.name}: its observation dict holds {start} values, not {spec.obs_dim}"
        )
    return np.array(columns)


def blind(data: OfflineData, columns: np.ndarray) -> np.ndarray:
    """Rows whose lidars all read 0."""
    return (data.observations[:, columns] == 0).all(1)


def episode_ids(data: OfflineData) -> np.ndarray:
    """Each row's episode (0, 1, ...): an episode ends at a terminal or timeout row."""
    ends = (data.terminals > 0) | (data.timeouts > 0)
    return np.concatenate([[0], np.cumsum(ends[:-1])])


def summary(un: OfflineData, mix: OfflineData, columns: np.ndarray) -> dict:
    rows, episode = blind(mix, columns), episode_ids(mix)
    desirable = mix.is_desirable > 0.5
    holding = np.unique(episode[rows])
    first_row = np.searchsorted(episode, holding)  # an episode's label: its rows'
    return {
        "mix_rows": int(rows.sum()),
        "mix_share": float(rows.mean()),
        "desirable_share": float(desirable[rows].mean()) if rows.any() else float("nan"),
        "episodes": len(holding),
        "desirable_episodes": int(desirable[first_row].sum()),
        "mix_episodes": int(episode[-1] + 1),
        "un_share": float(blind(un, columns).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a UNIQ run folder, or a training job's checkpoint folder")
    parser.add_argument("--member", type=int, help="a training job's seed (default: its first)")
    args = parser.parse_args()
    run = load_run(args.run, member_seed=args.member)
    if run.obs_norm:
        raise SystemExit(
            f"{args.run}: its networks see standardised observations; no lidar reads 0"
        )
    if run.method.ratio is None:
        raise SystemExit(f"{args.run}: a run without occupancy correction has no tau")
    columns = lidar_columns(run.spec)
    s = summary(run.un, run.mix, columns)
    print(
        f"{run.name} (step {run.step}): D_MIX rows with every lidar 0: {s['mix_rows']} "
        f"({s['mix_share']:.2%}), {s['desirable_share']:.0%} of them desirable; in "
        f"{s['episodes']} of {s['mix_episodes']} episodes ({s['desirable_episodes']} desirable). "
        f"D_UN rows with every lidar 0: {s['un_share']:.2%}."
    )
    tau = run.mix_tau()
    cfg = run.method.cfg
    floor = cfg.ratio_prob_min / cfg.ratio_prob_max
    rows = blind(run.mix, columns)
    q10, median = np.quantile(tau, [0.1, 0.5])
    on = f"median {np.median(tau[rows]):.4f}" if rows.any() else "none"
    print(
        f"tau(s): D_MIX 10th percentile {q10:.4f}, median {median:.4f}; on those rows {on}; "
        f"the floor {floor:.4f}; D_MIX rows at the floor {np.mean(tau <= floor * 1.0001):.1%}."
    )


if __name__ == "__main__":
    main()
