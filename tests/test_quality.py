"""Demonstrator quality records and bars (envs/quality.py)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from envs import quality
from envs.tasks import get_task
from uniq.atomic import file_sha256
from uniq.nets import TanhGaussianPolicy, save_policy, with_obs_norm

torch.set_num_threads(1)


def rec(ret, ret_std, cost, cost_std, n=50):
    return dict(return_mean=ret, return_std=ret_std, cost_mean=cost, cost_std=cost_std, episodes=n)


def record(stochastic, random=None):
    return {
        "stochastic": stochastic,
        "random": random or rec(0.0, 1.0, 50.0, 30.0),
        "cost_limit": 25.0,
    }


def test_clearly_above_is_three_standard_errors_of_the_difference():
    # se = sqrt(10^2/50 + 10^2/50) = 2: a gap of 6.1 passes, 5.9 does not
    assert quality.clearly_above(rec(6.1, 10, 0, 0), rec(0.0, 10, 0, 0))
    assert not quality.clearly_above(rec(5.9, 10, 0, 0), rec(0.0, 10, 0, 0))


@pytest.mark.parametrize(
    "safe, unsafe, failing",
    [
        (rec(15, 5, 20, 10), rec(30, 5, 60, 20), []),
        (rec(15, 5, 26, 10), rec(30, 5, 60, 20), ["safe_cost_at_most_limit"]),
        (rec(0.5, 5, 20, 10), rec(30, 5, 60, 20), ["safe_return_above_random"]),
        (rec(15, 5, 20, 10), rec(16, 5, 60, 20), ["unsafe_return_above_safe"]),
        (rec(15, 5, 20, 10), rec(30, 5, 45, 20), ["unsafe_cost_at_least_50"]),
        # with the safe cost within 25, ">= 50" implies "twice the safe": only a safe
        # demonstrator over its limit can miss the second alone
        (
            rec(15, 5, 30, 10),
            rec(30, 5, 55, 20),
            ["safe_cost_at_most_limit", "unsafe_cost_at_least_twice_safe"],
        ),
    ],
)
def test_bars_name_exactly_the_bar_missed(safe, unsafe, failing):
    verdict = quality.bars(record(safe), record(unsafe))
    assert sorted(k for k, ok in verdict.items() if not ok and k != "all") == failing
    assert verdict["all"] == (not failing)


def test_assess_writes_quality_and_curve_for_each_kind(tmp_path, monkeypatch):
    spec = get_task("SafetyPointGoal1-v0").with_overrides(max_episode_steps=20)
    monkeypatch.setattr(quality, "resolve_task", lambda task: spec)
    for kind in ("safe", "unsafe"):
        torch.manual_seed(len(kind))
        policy = TanhGaussianPolicy(spec.obs_dim, spec.act_dim, hidden=8)
        folder = tmp_path / kind
        save_policy(with_obs_norm(policy, [0.0] * 60, [1.0] * 60), folder / "policy.pt",
                    {"task": spec.name, "kind": kind, "steps": 100})  # fmt: skip
        with open(folder / "train.log.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["step", "return", "cost", "cost_limit"])
            w.writeheader()
            w.writerows(
                [{"step": s, "return": s / 10, "cost": 5, "cost_limit": 10} for s in (1, 2)]
            )
    records = quality.assess(spec, tmp_path, episodes=3)
    for kind in ("safe", "unsafe"):
        saved = json.loads((tmp_path / kind / "quality.json").read_text())
        assert saved == json.loads(json.dumps(records[kind]))
        for policy_kind in ("stochastic", "deterministic", "random"):
            assert saved[policy_kind]["episodes"] == 3
        assert saved["policy_sha256"] == file_sha256(tmp_path / kind / "policy.pt")
        assert set(saved["bars"]) >= {"all", "safe_cost_at_most_limit"}
        assert (tmp_path / kind / "curve.png").stat().st_size > 1000
    # the same seeds for every kind: the random policy's figures agree between the two files
    assert records["safe"]["random"] == records["unsafe"]["random"]


def test_assess_without_policies_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no safe/policy.pt"):
        quality.assess("SafetyPointGoal1-v0", tmp_path)


def test_select_takes_the_best_return_within_the_cost_and_records_every_candidate(
    tmp_path, monkeypatch
):
    from envs import collect, rollout

    # candidate -> (return, cost) of its episodes
    figures = {"train.step100.pt": (5.0, 10.0), "train.step200.pt": (9.0, 18.0),
               "train.step300.pt": (14.0, 40.0), "train.pt": (15.0, 60.0)}  # fmt: skip
    for name in figures:
        save_policy(TanhGaussianPolicy(60, 2, hidden=4), tmp_path / name, {"task": "x"})
    monkeypatch.setattr(collect, "demonstrator_act_fn", lambda path, seed: (path.name, {}))

    rolled = []

    def fake_rollout(name, spec, episodes, seed, num_envs, progress):
        r, c = figures[name]
        assert seed == quality.SELECTION_SEED_BASE  # never the quality episodes
        rolled.append(name)
        return rollout.Rollouts(np.full(episodes, r), np.full(episodes, c), np.full(episodes, 1000))

    monkeypatch.setattr(rollout, "rollout", fake_rollout)
    record = quality.select("SafetyPointGoal1-v0", tmp_path, episodes=4, max_cost=20.0)
    assert record["chosen"] == "train.step200.pt" and not record["fallback_to_last"]
    assert (tmp_path / "policy.pt").read_bytes() == (tmp_path / "train.step200.pt").read_bytes()
    saved = json.loads((tmp_path / "selection.json").read_text())
    assert [c["policy"] for c in saved["candidates"]] == list(figures)  # steps in order
    # nothing within the cost: the final policy
    assert quality.select("SafetyPointGoal1-v0", tmp_path, 4, max_cost=5.0)["chosen"] == "train.pt"
    # an unsafe demonstrator: the highest return among the costly enough
    record = quality.select("SafetyPointGoal1-v0", tmp_path, 4, min_cost=30.0)
    assert record["chosen"] == "train.pt" and record["rule"] == "highest return with cost >= 30.0"
    # each file was measured once: a selection again reuses the figures of unchanged files
    assert sorted(rolled) == sorted(figures)
    # more training: a new snapshot and a rewritten train.pt are measured, nothing else
    figures["train.step400.pt"], figures["train.pt"] = (12.0, 35.0), (15.0, 25.0)
    save_policy(TanhGaussianPolicy(60, 2, hidden=4), tmp_path / "train.step400.pt", {"task": "x"})
    save_policy(TanhGaussianPolicy(60, 2, hidden=5), tmp_path / "train.pt", {"task": "x"})
    rolled.clear()
    record = quality.select("SafetyPointGoal1-v0", tmp_path, 4, min_cost=30.0)
    assert sorted(rolled) == ["train.pt", "train.step400.pt"]
    assert record["chosen"] == "train.step300.pt"  # 14 / 40 beats 12 / 35; train.pt now 15 / 25
    # a warm-up left out: only the snapshots from step 300 on, and train.pt
    record = quality.select("SafetyPointGoal1-v0", tmp_path, 4, max_cost=20.0, from_step=300)
    assert [c["policy"] for c in record["candidates"]] == [
        "train.step300.pt", "train.step400.pt", "train.pt"
    ]  # fmt: skip
    assert record["chosen"] == "train.pt" and record["from_step"] == 300
    rolled.clear()
    quality.select("SafetyPointGoal1-v0", tmp_path, 8, min_cost=30.0)  # other episodes: all again
    assert len(rolled) == 5
    with pytest.raises(ValueError, match="not both"):
        quality.select("SafetyPointGoal1-v0", tmp_path, 4, max_cost=20.0, min_cost=30.0)
