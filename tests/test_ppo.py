"""PPO / PPO-Lagrangian demonstrators (envs/ppo.py) on problems whose answer is known."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from envs import ppo
from envs.tasks import TaskSpec
from uniq import jobtimes
from uniq.nets import load_policy

torch.set_num_threads(1)

TOY = TaskSpec("Toy-v0", "navigation", obs_dim=2, act_dim=1, max_episode_steps=10, cost_limit=0.0)


class ToyVecEnv:
    """Episodes of 10 steps, constant observation; reward -(a - 0.5)^2, cost 1 when a > 0.

    Unconstrained, the best action is 0.5; with the episode cost (10 steps) limited to 0.5, it is below 0.
    """

    def __init__(self, spec, num_envs, workers=0):
        self.t = np.zeros(num_envs, int)

    def reset(self, slots, seeds):
        self.t[slots] = 0
        return np.tile(np.array([1.0, -1.0], np.float32), (len(slots), 1))

    def step(self, slots, actions):
        a = np.asarray(actions)[:, 0]
        self.t[slots] += 1
        n = len(slots)
        obs = np.tile(np.array([1.0, -1.0], np.float32), (n, 1))
        trunc = self.t[slots] >= 10
        return obs, -((a - 0.5) ** 2), (a > 0).astype(float), np.zeros(n, bool), trunc, [{}] * n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(ppo, "make_vec_env", ToyVecEnv)


FAST = dict(hidden=16, num_envs=2, epoch_steps=200, minibatch=100, lr=3e-3)


def deterministic_action(path) -> float:
    policy, _ = load_policy(path)
    return float(policy.act(torch.tensor([[1.0, -1.0]])))


def test_gae_matches_the_hand_computed_recursion():
    # one env, 3 steps: an episode of 2 steps cut by truncation (bootstrap 5.0), then one
    # step that terminates (bootstrap 0)
    rew = np.array([[1.0], [2.0], [3.0]])
    v = np.array([[0.5], [1.0], [2.0]])
    end = np.array([[False], [True], [True]])
    boot = np.array([[0.0], [5.0], [0.0]])
    g, lam = 0.9, 0.8
    adv, ret = ppo.gae(rew, v, np.zeros(1), end, boot, g, lam)
    d1 = 2.0 + g * 5.0 - 1.0
    d0 = 1.0 + g * 1.0 - 0.5
    d2 = 3.0 - 2.0
    np.testing.assert_allclose(adv[:, 0], [d0 + g * lam * d1, d1, d2])
    np.testing.assert_allclose(ret, adv + v)


def test_ppo_finds_the_unconstrained_optimum(toy, tmp_path):
    cfg = ppo.PPOConfig(**FAST)
    ppo.train_ppo(TOY, "unsafe", 6000, 0, tmp_path / "u.pt", cfg, progress=False)
    assert abs(deterministic_action(tmp_path / "u.pt") - 0.5) < 0.15


def test_ppo_lagrangian_gives_up_reward_to_meet_the_cost_limit(toy, tmp_path):
    # The multiplier starts high: once the reward has shrunk the policy's spread, a cost that
    # every sample pays has no advantage left to steer by (PPO-Lagrangian's known weakness).
    cfg = ppo.PPOConfig(**FAST, lambda_init=5.0, lambda_lr=0.1, cost_limit=0.5)
    meta = ppo.train_ppo(TOY, "safe", 6000, 0, tmp_path / "s.pt", cfg, progress=False)
    assert deterministic_action(tmp_path / "s.pt") < 0.15
    assert meta["final_lambda"] > 0.05  # it is the multiplier that holds the policy back
    unconstrained = ppo.PPOConfig(**FAST, lambda_init=0.0, lambda_lr=0.0, cost_limit=0.5)
    ppo.train_ppo(TOY, "safe", 6000, 0, tmp_path / "free.pt", unconstrained, progress=False)
    assert deterministic_action(tmp_path / "free.pt") > 0.35  # the same run without the multiplier


def test_resumed_training_equals_the_uninterrupted_run(toy, tmp_path, monkeypatch, caplog):
    """A continued run ends as the uninterrupted one, and its resume line tells uniq.jobtimes
    the wall and CPU seconds of the piece before."""
    cfg = ppo.PPOConfig(**FAST)
    ppo.train_ppo(TOY, "safe", 800, 0, tmp_path / "a.pt", cfg, progress=False)
    monkeypatch.setattr(jobtimes, "cpu_seconds", lambda: 4.0)  # the first piece's process clock
    ppo.train_ppo(TOY, "safe", 400, 0, tmp_path / "b.pt", cfg, progress=False)
    with caplog.at_level(logging.INFO, "envs.ppo"):
        ppo.train_ppo(TOY, "safe", 800, 0, tmp_path / "b.pt", cfg, progress=False)  # continues
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming"))
    assert jobtimes._RESUMED.search(line).group(2) == "4.0"
    a, b = (torch.load(tmp_path / f"{n}.pt", weights_only=False)["state_dict"] for n in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [(tmp_path / f"{n}.log.csv").read_text().splitlines() for n in "ab"]
    strip = [[",".join(r.split(",")[:-1]) for r in rs] for rs in rows]  # wall time differs
    assert strip[0] == strip[1]


def test_resume_refuses_other_hyper_parameters(toy, tmp_path):
    ppo.train_ppo(TOY, "safe", 200, 0, tmp_path / "a.pt", ppo.PPOConfig(**FAST), progress=False)
    with pytest.raises(RuntimeError, match="clip"):
        ppo.train_ppo(
            TOY, "safe", 400, 0, tmp_path / "a.pt", ppo.PPOConfig(**FAST, clip=0.3), progress=False
        )


def test_the_saved_policy_standardises_with_the_running_statistics(toy, tmp_path):
    meta = ppo.train_ppo(
        TOY, "unsafe", 400, 0, tmp_path / "u.pt", ppo.PPOConfig(**FAST), progress=False
    )
    policy, _ = load_policy(tmp_path / "u.pt")
    np.testing.assert_allclose(policy.obs_norm.mean.numpy(), [1.0, -1.0])
    np.testing.assert_allclose(policy.obs_norm.std.numpy(), [0.0, 0.0])
    assert meta["obs_stats"]["count"] == 400


def test_multipliers_rise_above_the_limit_and_fall_back_to_zero():
    for kind in ("adam", "pid"):
        cfg = ppo.PPOConfig(lagrangian=kind, lambda_init=0.0)
        m = ppo.make_multiplier(cfg)
        up = [m.update(50.0, 25.0) for _ in range(20)]
        assert up[-1] > up[0] >= 0.0 and all(
            b >= a for a, b in zip(up[:-1], up[1:], strict=True)
        ), kind
        down = [m.update(0.0, 25.0) for _ in range(400)]
        assert down[-1] == 0.0, kind


def test_cost_limit_curriculum_falls_linearly_then_holds():
    cfg = ppo.PPOConfig(cost_limit=10.0, cost_limit_start=50.0, curriculum_frac=0.5)
    limits = [ppo._limit_at(cfg, TOY, s, 1000) for s in (0, 250, 500, 900)]
    assert limits == [50.0, 30.0, 10.0, 10.0]
    assert ppo._limit_at(ppo.PPOConfig(), TOY, 0, 1000) == TOY.cost_limit
