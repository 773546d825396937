"""SAC / SAC-Lagrangian demonstrators: the multiplier, the critics and the training loop."""

from __future__ import annotations

import copy
import csv
import io
import logging

import numpy as np
import pytest
import torch

import envs.demonstrators as demo
from envs.demonstrators import DemoConfig, ReplayBuffer, SACAgent
from envs.lagrangian import AdamMultiplier, PIDMultiplier
from envs.tasks import get_task
from uniq import jobtimes
from uniq.nets import load_policy

torch.set_num_threads(1)


def test_multiplier_rises_over_the_limit_and_falls_to_zero_under_it():
    lam = AdamMultiplier(0.0, lr=0.1, betas=(0.0, 0.999))  # the SAC demonstrators' multiplier
    values = [lam.update(100.0, 25.0) for _ in range(5)]
    assert values[0] > 0 and all(b > a for a, b in zip(values, values[1:], strict=False))
    falling = [lam.update(0.0, 25.0) for _ in range(50)]
    assert falling[0] < values[-1]
    assert min(falling) >= 0.0  # projected: never below zero
    assert falling[-1] == 0.0  # and it gets there while the policy stays safe
    # From zero, a violation lifts it again at once (no wind-up below zero).
    assert lam.update(60.0, 25.0) > 0.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: AdamMultiplier(0.0, 0.1, betas=(0.0, 0.999)),
        lambda: AdamMultiplier(0.001, 0.035),
        lambda: PIDMultiplier(0.001, 0.1, 0.01, 0.01, 0.95),
    ],
)
def test_multiplier_state_round_trip(make):
    a = make()
    for c in (80.0, 90.0):
        a.update(c, 25.0)
    buffer = io.BytesIO()  # through serialization, as in a checkpoint (no shared tensors)
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = make()
    b.load_state_dict(torch.load(buffer, weights_only=False))
    assert b.value == a.value
    assert b.update(70.0, 25.0) == pytest.approx(a.update(70.0, 25.0))


def test_adam_multiplier_reads_the_older_sac_checkpoint_key():
    a = AdamMultiplier(0.0, 0.1, betas=(0.0, 0.999))
    a.update(80.0, 25.0)
    legacy = copy.deepcopy({"value": a.param.detach(), "opt": a.opt.state_dict()})
    b = AdamMultiplier(0.0, 0.1, betas=(0.0, 0.999))
    b.load_state_dict(legacy)
    assert b.update(30.0, 25.0) == a.update(30.0, 25.0)


def test_pid_multiplier_follows_the_error():
    pid = PIDMultiplier(0.0, kp=0.1, ki=0.01, kd=0.0, ema=0.0)  # ema 0: P reads J_c itself
    assert pid.update(45.0, 25.0) == pytest.approx(0.1 * 20 + 0.01 * 20)
    assert pid.update(45.0, 25.0) == pytest.approx(0.1 * 20 + 0.01 * 40)  # I accumulates
    assert pid.update(0.0, 25.0) == pytest.approx(max(0.0, -2.5 + 0.01 * 15))  # clipped at 0


def _bandit_buffer(n=512, lagrangian_cost=False):
    """One-step problem: r(a) = 1 - 4 (a - 0.5)^2, c(a) = a + 1, every transition terminal."""
    g = torch.Generator().manual_seed(0)
    buf = ReplayBuffer(obs_dim=2, act_dim=1, capacity=n, device="cpu")
    for _ in range(n):
        a = torch.rand(1, generator=g) * 2 - 1
        buf.add(
            obs=torch.tensor([1.0, -1.0]),
            act=a,
            rew=float(1 - 4 * (a - 0.5) ** 2),
            cost=float(a + 1),
            next_obs=torch.tensor([1.0, -1.0]),
            done=1.0,
        )
    return buf, g


@pytest.mark.parametrize("lagrangian", [False, True])
def test_critics_learn_known_q_on_one_step_bandit(lagrangian):
    # done = 1 everywhere, so Q(s, a) = r(a) and Q_c(s, a) = c(a) exactly.
    torch.manual_seed(0)
    buf, g = _bandit_buffer()
    cfg = DemoConfig(hidden=32, batch_size=128, lr=3e-3)
    agent = SACAgent(2, 1, cfg, lagrangian=lagrangian, cost_limit=25.0, device="cpu")
    for _ in range(600):
        agent.update(buf.sample(128, g))
    a = torch.linspace(-1, 1, 41)[:, None]
    s = torch.tensor([[1.0, -1.0]]).expand(41, 2)
    with torch.no_grad():
        q1, q2 = agent.critic(s, a)
        r = 1 - 4 * (a[:, 0] - 0.5) ** 2
        assert ((q1 - r) ** 2).mean() < 0.01 and ((q2 - r) ** 2).mean() < 0.01
        if lagrangian:
            c1, c2 = agent.cost_critic(s, a)
            c = a[:, 0] + 1
            assert ((c1 - c) ** 2).mean() < 0.01 and ((c2 - c) ** 2).mean() < 0.01
        # The actor climbs the learned Q: tanh(mean) near the reward's argmax a* = 0.5.
        if not lagrangian:
            assert abs(float(agent.actor.act(s[:1])) - 0.5) < 0.2


def test_lagrangian_actor_trades_reward_for_cost():
    # Same bandit, with a fixed large multiplier: the penalised objective
    # r(a) - lam c(a) = 1 - 4 (a - 0.5)^2 - lam (a + 1) peaks at a = 0.5 - lam / 8.
    torch.manual_seed(0)
    buf, g = _bandit_buffer()
    cfg = DemoConfig(hidden=32, batch_size=128, lr=3e-3, lambda_init=4.0)
    agent = SACAgent(2, 1, cfg, lagrangian=True, cost_limit=25.0, device="cpu")
    for _ in range(600):
        agent.update(buf.sample(128, g))
    a = float(agent.actor.act(torch.tensor([[1.0, -1.0]])))
    assert a < 0.1  # 0.5 - 4/8 = 0: far below the unconstrained optimum 0.5


def _short_cheetah():
    return get_task("SafetyHalfCheetahVelocity-v1").with_overrides(max_episode_steps=50)


TINY = dict(hidden=16, batch_size=16, start_steps=40, checkpoint_every=100)


def test_train_demonstrator_writes_policy_log_and_stats(tmp_path):
    out = tmp_path / "demonstrator_safe.pt"
    stats = demo.train_demonstrator(
        _short_cheetah(), "safe", 150, 0, out, "cpu", DemoConfig(**TINY), progress=False
    )
    policy, meta = load_policy(out)
    assert meta["kind"] == "safe" and meta["source"] == "sac-lagrangian"
    assert meta["task"] == "SafetyHalfCheetahVelocity-v1" and meta["steps"] == 150
    assert policy.init_kwargs["obs_dim"] == 17 and policy.init_kwargs["act_dim"] == 6
    assert stats["episodes"] == 3 and stats["final_lambda"] >= 0.0
    rows = list(csv.DictReader(open(tmp_path / "demonstrator_safe.log.csv")))
    assert [int(r["step"]) for r in rows] == [50, 100, 150]
    assert set(rows[0]) >= {"return", "cost", "lambda", "alpha"}
    assert not (tmp_path / "demonstrator_safe.checkpoint.pt").exists()


def test_train_demonstrator_resumes_from_checkpoint(tmp_path, monkeypatch, caplog):
    """A stopped demonstrator resumes at its checkpoint, and its log tells uniq.jobtimes the
    wall and CPU seconds of the piece before (Snakemake's benchmark holds the last piece)."""
    out = tmp_path / "demonstrator_unsafe.pt"
    real_make_env = demo.make_env

    class Crash(Exception):
        pass

    def crashing_env(task, seed=None):
        env, count = real_make_env(task, seed), [0]
        step = env.step

        def counted(action):
            count[0] += 1
            if count[0] > 130:
                raise Crash
            return step(action)

        env.step = counted
        return env

    monkeypatch.setattr(demo, "make_env", crashing_env)
    monkeypatch.setattr(jobtimes, "cpu_seconds", lambda: 3.0)  # the first piece's process clock
    with pytest.raises(Crash):
        demo.train_demonstrator(
            _short_cheetah(), "unsafe", 200, 1, out, "cpu", DemoConfig(**TINY), progress=False
        )
    assert (tmp_path / "demonstrator_unsafe.checkpoint.pt").exists() and not out.exists()
    monkeypatch.setattr(demo, "make_env", real_make_env)
    with pytest.raises(RuntimeError, match=r"other hyper-parameters \(lr\)"):
        demo.train_demonstrator(
            _short_cheetah(), "unsafe", 200, 1, out, "cpu", DemoConfig(**TINY, lr=1e-3)
        )
    with pytest.raises(RuntimeError, match=r"at step 100 > --steps 50; rerun with --steps >= 100"):
        demo.train_demonstrator(_short_cheetah(), "unsafe", 50, 1, out, "cpu", DemoConfig(**TINY))
    with caplog.at_level(logging.INFO, "envs.demonstrators"):
        stats = demo.train_demonstrator(
            _short_cheetah(), "unsafe", 200, 1, out, "cpu", DemoConfig(**TINY), progress=False
        )
    log = tmp_path / "job.log"
    log.write_text("\n".join(r.getMessage() for r in caplog.records))
    wall, cpu = jobtimes._seconds_before_resume(log, 0.0)
    assert 0 < wall < stats["wall_time_s"] and cpu == 3.0
    # 2 episodes before the checkpoint at step 100, then 2 more from the resumed step 100.
    assert stats["episodes"] == 4
    rows = list(csv.DictReader(open(tmp_path / "demonstrator_unsafe.log.csv")))
    assert [int(r["step"]) for r in rows] == [50, 100, 150, 200]
    assert np.isfinite([float(r["return"]) for r in rows]).all()


def test_unknown_kind_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown demonstrator kind 'medium'"):
        demo.train_demonstrator(_short_cheetah(), "medium", 10, 0, tmp_path / "x.pt", "cpu")
