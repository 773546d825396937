"""The rows of a navigation split where the agent sees nothing: every lidar reads 0.

A navigation agent more than 3 m (the lidars' ``max_dist``) from every object sees none of them,
which is where a policy that has left the arena ends up (analysis/agent_reach.py). Are such
states in the demonstrations, whose are they, and how does a UNIQ run weigh them? For a UNIQ
run's folder (or a job still training: its checkpoint folder, ``--member`` its seed) this reads
its data and reports:

- the D_MIX rows whose lidars all read 0: how many, the share of them from desirable
  demonstrations (the hidden labels, read here for the analysis only) and the episodes that
  hold them; the D_UN rows that do;
- the run's occupancy ratio tau(s) on those rows against D_MIX's 10th percentile and median,
  and the share of them at the ratio's floor (the classifiers' clip: ``ratio_prob_min /
  ratio_prob_max``) for s and for s' both;
- the factor clip(1/W^2, 0, inv_w2_clip) the recipe's actor weight gives them, W = w(s) +
  gamma w(s') with each column's percentiles taken in its batch: measured on ``--batches``
  uniform 512-row actor batches drawn as training draws them, on those rows against all rows;
- the share of the actor's whole weight (that factor times the normalised exp(advantage),
  capped; uniq.diagnostics.actor_weighted_means) on those rows, over ``--weight-batches``
  batches, against their share of D_MIX.

    uv run python analysis/blind_rows.py \\
        results/paper_data/runs/SafetyPointButton1-v0/default/uniq/seed0_1_2_3_4 --member 0
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from envs.tasks import lidar_columns
from uniq.data import OfflineData
from uniq.diagnostics import actor_weighted_means, load_run
from uniq.weights import inverse_square_weight, transition_weight


def blind(data: OfflineData, columns: np.ndarray) -> np.ndarray:
    """Rows whose lidars all read 0."""
    return (data.observations[:, columns] == 0).all(1)


def episode_ids(data: OfflineData) -> np.ndarray:
    """Each row's episode (0, 1, ...), as OfflineData delimits them."""
    ids = np.zeros(len(data), np.int64)
    ids[data.episode_starts()[1:]] = 1
    return np.cumsum(ids)


def summary(un: OfflineData, mix: OfflineData, columns: np.ndarray) -> dict:
    """D_MIX's blind rows: their number and share, the desirable share of them, the episodes
    holding them (and how many of those are desirable), D_MIX's episodes (and desirable ones);
    D_UN's blind rows."""
    rows, episode = blind(mix, columns), episode_ids(mix)
    desirable = mix.is_desirable > 0.5
    holding = np.unique(episode[rows])
    first = desirable[mix.episode_starts()]  # each episode's label
    return {
        "mix_rows": int(rows.sum()),
        "mix_share": float(rows.mean()),
        "desirable_share": float(desirable[rows].mean()) if rows.any() else float("nan"),
        "episodes": len(holding),
        "desirable_episodes": int(first[holding].sum()),
        "mix_episodes": len(first),
        "mix_desirable_episodes": int(first.sum()),
        "un_rows": int(blind(un, columns).sum()),
    }


def inverse_square_factor(
    tau: np.ndarray, method, batches: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(row, clip(1/W^2, 0, inv_w2_clip)) of each row of ``batches`` actor batches drawn
    uniformly from D_MIX (tau ``[N, columns]``), W from each batch's own percentiles as in
    training (uniq.weights.transition_weight)."""
    cfg = method.cfg
    rows = rng.integers(0, len(tau), (batches, cfg.actor_batch))
    W = transition_weight(
        torch.as_tensor(tau[rows]), cfg.actor_batch, method.ratio_q, cfg.reward_factor, cfg.gamma
    )
    return rows.ravel(), inverse_square_weight(W, cfg.inv_w2_clip).ravel().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a UNIQ run folder, or a training job's checkpoint folder")
    parser.add_argument("--member", type=int, help="a training job's seed (default: its first)")
    parser.add_argument("--batches", type=int, default=2000, help="actor batches drawn")
    parser.add_argument(
        "--weight-batches", type=int, default=500, help="actor batches for the whole weight"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the batches")
    args = parser.parse_args()
    run = load_run(args.run, member_seed=args.member)
    if run.obs_norm:  # the rows are standardised as the networks saw them
        raise SystemExit(
            f"{args.run}: its networks see standardised observations, whose lidars do not read "
            "0; navigation runs do not standardise (obs_norm: false)"
        )
    if run.method.ratio is None:
        raise SystemExit(f"{args.run}: a run without occupancy correction has no tau")
    try:
        columns = lidar_columns(run.spec)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    s = summary(run.un, run.mix, columns)
    print(
        f"{run.name} (step {run.step}): D_MIX rows with every lidar 0: {s['mix_rows']} "
        f"({s['mix_share']:.2%}), {s['desirable_share']:.0%} of them desirable; in "
        f"{s['episodes']} of {s['mix_episodes']} episodes ({s['desirable_episodes']} of the "
        f"{s['mix_desirable_episodes']} desirable ones). D_UN rows with every lidar 0: "
        f"{s['un_rows']}."
    )
    rows = blind(run.mix, columns)
    if not rows.any():
        return
    tau, cfg = run.mix_tau(), run.method.cfg
    floor = cfg.ratio_prob_min / cfg.ratio_prob_max * 1.0001  # the clip's value, as stored
    q10, median = np.quantile(tau[:, 0], [0.1, 0.5])
    print(
        f"tau: D_MIX 10th percentile {q10:.4f}, median {median:.4f}, at the floor "
        f"{np.mean((tau <= floor).all(1)):.1%}; on those rows median {np.median(tau[rows, 0]):.4f}, "
        f"at the floor {np.mean((tau[rows] <= floor).all(1)):.1%} (s and s' both)."
    )
    drawn, factor = inverse_square_factor(
        tau, run.method, args.batches, np.random.default_rng(args.seed)
    )
    mine, cap = rows[drawn], cfg.inv_w2_clip
    print(
        f"clip(1/W^2, 0, {cap:g}) over {args.batches} actor batches: on those rows mean "
        f"{factor[mine].mean():.1f}, at the cap {np.mean(factor[mine] >= cap):.0%} "
        f"({mine.sum()} draws); on all rows mean {factor.mean():.1f}, at the cap "
        f"{np.mean(factor >= cap):.0%}."
    )
    rng = np.random.default_rng(args.seed + 1)
    got = actor_weighted_means(
        run.method, run.mix, run.member, rng, {"blind": rows}, args.weight_batches
    )["whole"]
    print(
        f"The actor's weight over {args.weight_batches} batches: {got['blind']:.2%} ± "
        f"{got['blind_se']:.2%} (a standard error) of its mass on those rows ({rows.mean():.2%} "
        f"of D_MIX); {got['effective_rows']:.1f} effective rows "
        f"of {cfg.actor_batch} a batch."
    )


if __name__ == "__main__":
    main()
