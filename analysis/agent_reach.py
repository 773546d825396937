"""How far from the arena's centre a navigation policy drives its agent.

A navigation policy can keep its cost near 0 by leaving the arena: Safety-Gymnasium's level-1
arenas have no walls and place every object within +-1.5 m of the origin
(``placements_conf.extents``), so an agent that drives away meets no hazard, while its return
(the distance gained toward the goal) turns negative. Returns and costs alone do not tell this
from caution; the agent's distance from the origin does. This rolls policies out as the
evaluation does (deterministic actions, episode i of run seed s reset with
``eval_seed_base(s) + i``) and reports, per policy, the mean return and cost, the mean final
and largest distance of the agent from the origin, and the share of episodes that end farther
than ``--radius`` from it (3 m, twice the placement area's half-width: no goal or button lies
there, so an agent that ends there has left the arena).

    uv run python analysis/agent_reach.py results/paper_data/runs/SafetyPointButton1-v0/default/uniq/seed*/policy.pt
    # a job still training: its checkpoint's members (policies of the checkpoint's step)
    uv run python analysis/agent_reach.py \\
        results/paper_data/runs/SafetyPointButton1-v0/default/uniq/seed0_1_2_3_4/checkpoint.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from envs.evaluate import eval_seed_base
from envs.rollout import policy_act_fn
from envs.tasks import make_env
from uniq.nets import TanhGaussianPolicy, load_policy


def policies(path: Path) -> list[tuple[str, int, TanhGaussianPolicy, str]]:
    """(label, run seed, policy, task) of a policy.pt, or of each member of a checkpoint.pt."""
    if path.name != "checkpoint.pt":
        policy, meta = load_policy(path)
        return [(str(path), int(meta["seed"]), policy, meta["task"])]
    state = torch.load(path, map_location="cpu", weights_only=False)
    identity = state["identity"]
    if identity.get("obs_norm"):
        raise SystemExit(
            f"{path}: this run standardises observations, and its checkpoint's actor expects "
            "them standardised; roll out its policy.pt once the run has finished"
        )
    actor = state["method"]["actor"]
    seeds = identity["seed"] if isinstance(identity["seed"], list) else [identity["seed"]]
    weights = [actor[k] for k in sorted(actor) if k.startswith("trunk.") and k.endswith("weight")]
    batched = weights[0].dim() == 3  # BatchedLinear: [K, in, out]; nn.Linear: [out, in]
    obs_dim, hidden = weights[0].shape[-2:] if batched else weights[0].shape[::-1]
    act_dim = (weights[-1].shape[-1] if batched else weights[-1].shape[0]) // 2
    members = len(seeds) if batched else None
    whole = TanhGaussianPolicy(obs_dim, act_dim, hidden, len(weights) - 1, members=members)
    whole.load_state_dict(actor)
    step = int(state["step"])
    return [
        (f"{path} seed {s} (step {step})", s, whole.member(k).eval(), identity["task"])
        for k, s in enumerate(seeds)
    ]


def reach(policy, task: str, run_seed: int, episodes: int, radius: float = 3.0) -> dict[str, float]:
    """The episodes' mean return and cost, final and largest distance from the origin, and
    the share that end farther than ``radius`` from it."""
    env = make_env(task)  # the evaluation's env: the fast path, the same episode per seed
    act = policy_act_fn(policy)
    rows = []
    for i in range(episodes):
        obs, _ = env.reset(seed=eval_seed_base(run_seed) + i)
        ret = cost = farthest = 0.0
        done = False
        while not done:
            obs, r, c, terminated, truncated, _ = env.step(act(obs[None].astype(np.float32))[0])
            ret, cost, done = ret + r, cost + c, terminated or truncated
            x, y = env.unwrapped.task.agent.pos[:2]
            farthest = max(farthest, float(np.hypot(x, y)))
        outside = np.hypot(x, y) > radius
        rows.append((ret, cost, float(np.hypot(x, y)), farthest, outside))
    ret, cost, final, farthest, outside = np.mean(rows, axis=0)
    env.close()
    return {"return": ret, "cost": cost, "final": final, "farthest": farthest, "out": outside}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", type=Path, help="policy.pt files or a job's checkpoint.pt")
    p.add_argument("--episodes", type=int, default=5, help="episodes per policy")
    p.add_argument(
        "--radius", type=float, default=3.0, help="an episode ending farther (m) left the arena"
    )
    args = p.parse_args()
    torch.set_num_threads(1)  # one row a step: more threads only contend
    print("| policy | return | cost | final distance (m) | farthest (m) | left the arena |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in args.paths:
        for label, seed, policy, task in policies(path):
            m = reach(policy, task, seed, args.episodes, args.radius)
            print(
                f"| {label} | {m['return']:.1f} | {m['cost']:.1f} | {m['final']:.2f} | "
                f"{m['farthest']:.2f} | {m['out']:.0%} |"
            )
    print(
        f"\n{args.episodes} episodes a policy, deterministic actions, the evaluation's seeds; "
        f"left the arena: the episode ended farther than {args.radius} m from its centre."
    )


if __name__ == "__main__":
    main()
