"""How far from the arena's centre a navigation policy drives its agent.

A navigation policy can keep its cost near 0 by leaving the arena: Safety-Gymnasium's level-1
arenas have no walls and place every object within +-1.5 m of the origin
(``placements_conf.extents``; Button1's gremlins move 0.35 m at most), so an agent that drives
away meets no hazard, while its return (the distance gained toward the goal) turns negative;
beyond 3 m from every object its lidar (``max_dist`` 3 m) sees none of them either. Returns
and costs alone do not tell this from caution; the agent's distance from the origin does.

This rolls policies out with deterministic actions on the evaluation's envs and reports, per
policy, the mean return and cost, the mean final and largest distance of the agent from the
origin, the share of episodes that end beyond :data:`RADIUS` (3 m, twice the placement
area's half-width: beyond every object), the share of steps whose lidars all read 0 (blind:
no object within 3 m), and the policy's mean action on the steps that see an object and on
the blind ones (a Point robot's action: forward thrust, turn), with its mean magnitude: a
policy that drives off and, blind, keeps one action goes on in a straight line. The
episodes are those of the policy's record: a ``policy.pt`` with an ``eval.json`` beside it,
that evaluation's episodes (its ``eval_seed_base``); without one, the workflow's final
evaluation's (``--seed-offset`` + run seed); a training job's ``checkpoint.pt``, its
members' learning-curve episodes.

    uv run python analysis/agent_reach.py results/paper_data/runs/SafetyPointButton1-v0/default/uniq/seed*/policy.pt
    # a job still training: its checkpoint's members (policies of the checkpoint's step)
    uv run python analysis/agent_reach.py \\
        results/paper_data/runs/SafetyPointButton1-v0/default/uniq/seed0_1_2_3_4/checkpoint.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from envs.evaluate import eval_seed_base
from envs.rollout import policy_act_fn
from envs.tasks import lidar_columns, make_env, resolve_task
from uniq.nets import TanhGaussianPolicy, load_policy

RADIUS = 3.0
"""An episode ending farther than this (m) from the origin has left the arena."""
SEED_OFFSET = 100_000
"""The workflow's final evaluation seeds (``evaluate.seed_offset`` in the configs)."""


def policies(path: Path, seed_offset: int = SEED_OFFSET) -> list[tuple[str, int, object, str]]:
    """(label, first episode's seed, policy, task) of a policy.pt, or of each member of a
    training job's checkpoint.pt."""
    if path.name != "checkpoint.pt":
        policy, meta = load_policy(path)
        record = path.with_name("eval.json")
        if record.is_file():
            base = int(json.loads(record.read_text())["eval_seed_base"])
        else:
            base = eval_seed_base(seed_offset + int(meta["seed"]))
        return [(str(path), base, policy, meta["task"])]
    state = torch.load(path, map_location="cpu", weights_only=False)
    identity = state["identity"]
    if identity.get("obs_norm"):
        raise SystemExit(
            f"{path}: this run standardises observations, and its checkpoint's actor expects "
            "them standardised; roll out its policy.pt once the run has finished"
        )
    actor = state["method"]["actor"]
    seeds = identity["seed"] if isinstance(identity["seed"], list) else [identity["seed"]]
    names = [k for k in actor if k.startswith("trunk.") and k.endswith(".weight")]
    weights = [actor[k] for k in sorted(names, key=lambda k: int(k.split(".")[1]))]
    batched = weights[0].dim() == 3  # BatchedLinear: [K, in, out]; nn.Linear: [out, in]
    obs_dim, hidden = weights[0].shape[-2:] if batched else weights[0].shape[::-1]
    act_dim = (weights[-1].shape[-1] if batched else weights[-1].shape[0]) // 2
    # The default log-std bounds do: a deterministic action is tanh(mean), the trunk's alone.
    whole = TanhGaussianPolicy(
        obs_dim, act_dim, hidden, len(weights) - 1, members=len(seeds) if batched else None
    )
    whole.load_state_dict(actor)
    step = int(state["step"])
    return [
        (f"{path} seed {s} (step {step})", eval_seed_base(s), whole.member(k).eval(),
         identity["task"])
        for k, s in enumerate(seeds)
    ]  # fmt: skip


def reach(policy, task, first_seed: int, episodes: int, radius: float = RADIUS) -> dict:
    """The episodes' mean return and cost, final and largest distance from the origin, the
    share that end farther than ``radius`` from it (episode i reset with first_seed + i;
    ``task``: a navigation task's name or spec), the share of blind steps (every lidar 0),
    and the mean action and mean |action| per component on the seeing and the blind steps
    (NaN where there are none)."""
    spec = resolve_task(task)
    try:
        lidar = lidar_columns(spec)
    except ValueError as err:  # not a navigation task, or its observation not the env's
        raise SystemExit(str(err)) from None
    env = make_env(spec)  # the evaluation's env: the fast path, the same episode per seed
    act = policy_act_fn(policy)
    rows, actions, blind = [], [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=first_seed + i)
        ret = cost = farthest = 0.0
        done = False
        while not done:
            action = act(obs[None].astype(np.float32))[0]
            actions.append(action)
            blind.append(not obs[lidar].any())
            obs, r, c, terminated, truncated, _ = env.step(action)
            ret, cost, done = ret + r, cost + c, terminated or truncated
            x, y = env.unwrapped.task.agent.pos[:2]
            farthest = max(farthest, float(np.hypot(x, y)))
        rows.append((ret, cost, float(np.hypot(x, y)), farthest, np.hypot(x, y) > radius))
    env.close()
    ret, cost, final, farthest, left = np.mean(rows, axis=0)
    actions, blind = np.array(actions), np.array(blind)
    out = {"return": ret, "cost": cost, "final": final, "farthest": farthest, "left": left}
    out["blind"] = blind.mean()
    for name, steps in (("seeing", ~blind), ("blind", blind)):
        a = actions[steps] if steps.any() else np.full((1, actions.shape[1]), np.nan)
        out[f"action_{name}"], out[f"magnitude_{name}"] = a.mean(0), np.abs(a).mean(0)
    return out


def _vector(x: np.ndarray, sign: str = "+") -> str:
    return "(" + ", ".join("n/a" if np.isnan(v) else f"{v:{sign}.2f}" for v in x) + ")"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", type=Path, help="policy.pt files or a job's checkpoint.pt")
    p.add_argument("--episodes", type=int, default=5, help="episodes per policy")
    p.add_argument(
        "--seed-offset", type=int, default=SEED_OFFSET,
        help="a policy.pt without eval.json: its episodes are those of the evaluation with "
        "seed SEED_OFFSET + run seed (the workflow's evaluate.seed_offset)",
    )  # fmt: skip
    args = p.parse_args()
    torch.set_num_threads(1)  # one row a step: more threads only contend
    print(
        "| policy | return | cost | final distance (m) | farthest (m) | left the arena "
        "| blind steps | mean action seeing / blind | mean abs(action) seeing / blind |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for path in args.paths:
        for label, first_seed, policy, task in policies(path, args.seed_offset):
            m = reach(policy, task, first_seed, args.episodes)
            print(
                f"| {label} | {m['return']:.1f} | {m['cost']:.1f} | {m['final']:.2f} | "
                f"{m['farthest']:.2f} | {m['left']:.0%} | {m['blind']:.0%} | "
                f"{_vector(m['action_seeing'])} / {_vector(m['action_blind'])} | "
                f"{_vector(m['magnitude_seeing'], '')} / {_vector(m['magnitude_blind'], '')} |"
            )
    print(
        f"\n{args.episodes} episodes a policy, deterministic actions, the episodes of its "
        f"evaluation (a checkpoint: of its learning curve); left the arena: the episode ended "
        f"farther than {RADIUS} m from the centre, beyond every object; blind: every lidar "
        "reads 0 (no object within its range); actions are (forward thrust, turn) on a Point "
        "robot."
    )


if __name__ == "__main__":
    main()
