"""Seeds batched in one process: members are independent runs (CPU, tiny nets, one thread)."""

from __future__ import annotations

import copy
import logging
import math
import time

import numpy as np
import pytest
import torch
import yaml
from test_baselines import SPEC as SPEC3
from test_baselines import linear_gaussian_expert, make_data
from test_train import SPEC, TINY, assert_same_state, checkpoint_params, data, log_rows
from test_uniq import CHAIN, CHAIN_STEPS, chain_datasets, mean_action

from baselines.bc import BC
from baselines.dwbc import DWBC
from baselines.safedice import SafeDICE
from uniq import jobtimes
from uniq.algorithm import UNIQ
from uniq.cli import main as cli_main
from uniq.data import OfflineData, Sampler
from uniq.method import ConfigError, build_config
from uniq.nets import (
    BatchedLinear,
    TanhGaussianPolicy,
    TwinQ,
    load_policy,
    mlp,
    stack_members,
    unstack_member,
)
from uniq.train import TrainingDiverged, train

torch.set_num_threads(1)
assert data  # the fixture, imported for the tests below
FAST = dict(device="cpu", progress=False, log_every=10)


# ---------------------------------------------------------------------------- networks
def test_batched_linear_is_k_linear_layers_initialised_like_nn_linear():
    torch.manual_seed(0)
    layer = BatchedLinear(4, 50, 30)
    bound = 1 / math.sqrt(50)
    assert layer.weight.shape == (4, 50, 30) and layer.bias.shape == (4, 1, 30)
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
    assert abs(layer.weight.std().item() - bound / math.sqrt(3)) < 0.01  # U(-b, b)
    plain = [torch.nn.Linear(50, 30) for _ in range(4)]
    stack_members(torch.nn.Sequential(layer), [torch.nn.Sequential(p) for p in plain])
    x = torch.randn(4, 7, 50)
    for k in range(4):
        torch.testing.assert_close(layer(x)[k], plain[k](x[k]))


def test_member_policy_acts_as_the_batched_forward_of_that_member():
    torch.manual_seed(0)
    policy = TanhGaussianPolicy(3, 2, hidden=16, members=3)
    obs = torch.randn(3, 5, 3)
    batched = policy.act(obs)
    mean, log_std = policy(obs)
    for k in range(3):
        member = policy.member(k)
        assert member.members is None and member.init_kwargs == policy.init_kwargs
        torch.testing.assert_close(member.act(obs[k]), batched[k])
        m, ls = member(obs[k])
        torch.testing.assert_close(m, mean[k])
        torch.testing.assert_close(ls, log_std[k])
    # the plain networks keep today's layers (and so policy.pt files)
    assert all(type(m) is not BatchedLinear for m in TanhGaussianPolicy(3, 2).modules())
    assert TwinQ(3, 2, members=2)(obs[:2], torch.zeros(2, 5, 2))[0].shape == (2, 5)
    assert mlp(3, 1, 8, members=2)(obs[:2]).shape == (2, 5, 1)


def test_sampler_gives_each_member_its_own_rows():
    t = {"x": torch.arange(1000.0)[:, None], "index": torch.arange(1000)}
    batch = Sampler(t, torch.Generator().manual_seed(0)).sample(64, members=3)
    assert batch["x"].shape == (3, 64, 1) and batch["index"].shape == (3, 64)
    assert torch.equal(batch["x"][..., 0].long(), batch["index"])
    assert not torch.equal(batch["index"][0], batch["index"][1])


# ---------------------------------------------------------------------------- updates
def _uniq_data(device="cpu"):
    """D_UN and D_MIX samplers of the baselines' synthetic data, with row indices."""
    samplers = make_data(device)
    for s in samplers.values():
        s.tensors["index"] = torch.arange(s.size, device=device)
    return samplers


CASES = {
    "uniq": (UNIQ, dict(TINY, ratio_steps=30)),
    "uniq-sa": (UNIQ, dict(TINY, ratio_steps=30, ratio_form="state_action")),
    "uniq-expectile": (UNIQ, dict(TINY, ratio_steps=30, value_form="expectile")),
    "uniq-nocorr": (UNIQ, dict(TINY, occupancy_correction=False)),
    "bc": (BC, dict(hidden=16, batch_size=32, weight_decay=1e-3)),
    "dwbc": (DWBC, dict(hidden=16, batch_size=32, disc_update_every=2)),
    "safedice": (SafeDICE, dict(hidden=16, batch_size=32, classifier_steps=30)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_batched_update_equals_separate_updates_on_each_members_batch(case, monkeypatch):
    """Member k of a batched method, given batch[k], moves exactly as a plain method does on
    batch[k]: no statistic, loss or optimizer state is shared between members."""
    cls, overrides = CASES[case]
    cfg = build_config(cls.Config, overrides)
    data = _uniq_data()
    plains = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        plains.append(cls(cfg, SPEC3, data, "cpu", seed))
        plains[-1].pretrain()
    batched = cls(cfg, SPEC3, data, "cpu", 0, members=2)
    batched.adopt(plains)
    for name, net in batched._stateful().items():  # stacked exactly: member k is plain k
        if isinstance(net, torch.nn.Module):
            for k, plain in enumerate(plains):
                own = getattr(plain, name)
                assert_same_state(
                    unstack_member(net, copy.deepcopy(own), k).state_dict(), own.state_dict()
                )

    # The updates' own noise (policy samples, SafeDICE's interpolation and s0 draws) would
    # differ between one [K, ...] draw and K separate ones: fix it to compare the arithmetic.
    batches = [
        {key: data[src].sample(n, 2) for key, (src, n) in batched.batches().items()}
        for _ in range(4)
    ]
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)
    monkeypatch.setattr(torch, "rand", lambda *size, **kw: torch.full(size, 0.5, **kw))
    monkeypatch.setattr(
        torch, "randint", lambda high, size, **kw: torch.zeros(size, dtype=torch.long)
    )
    # SafeDICE's reward is ill-conditioned on the row that fixes alpha: dr/dc = alpha
    # exp(c) / (1 - alpha exp(c)) ~ alpha / margin ~ 1e5 there, so the one-ulp logit
    # difference of a batched matmul against a plain one moves that row's reward by ~1e-3
    # (float64 from the logits shows it; the old float32 s rounded it away by chance).
    tol = dict(rtol=1e-3, atol=1e-4) if cls is SafeDICE else dict(rtol=1e-4, atol=1e-5)
    for batch in batches:
        out = batched.update(batch)
        for k, plain in enumerate(plains):
            own = plain.update(
                {key: {c: v[k] for c, v in part.items()} for key, part in batch.items()}
            )
            assert out.keys() == own.keys()
            for key in own:
                torch.testing.assert_close(out[key][k], own[key], **tol)
    for k, plain in enumerate(plains):
        for a, b in zip(
            plain.actor.parameters(), batched.actor.member(k).parameters(), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- known answers
def test_batched_bc_members_each_recover_the_linear_gaussian_expert():
    """As tests/test_baselines.py's BC test, with 2 members batched: each finds (W, b, 0.1)."""
    obs, actions, w_true, b_true = linear_gaussian_expert()
    n = len(obs)
    z = np.zeros(n)
    samplers = {
        "mix": Sampler(
            OfflineData(obs, actions, z, z, obs, z, z, z + 1).to_tensors(),
            torch.Generator().manual_seed(0),
        )
    }
    cfg = build_config(BC.Config, {"depth": 0, "lr": 2e-2}, "bc-mix")
    bc = BC(cfg, SPEC3, samplers, "cpu", seed=0, members=2)
    for _ in range(600):
        bc.update({"demo": samplers["mix"].sample(cfg.batch_size, 2)})
    layer = bc.actor.trunk[0]
    assert not torch.equal(layer.weight[0], layer.weight[1])  # two different runs
    for k in range(2):
        w = layer.weight[k].T.detach().numpy()  # [out, in], as nn.Linear
        np.testing.assert_allclose(w[:2], w_true, atol=0.05)
        np.testing.assert_allclose(layer.bias[k, 0, :2].detach().numpy(), b_true, atol=0.05)
        _, log_std = bc.actor.member(k)(torch.as_tensor(obs[:256]))
        assert abs(log_std.mean().item() - math.log(0.1)) < 0.1


def test_batched_uniq_members_each_avoid_the_undesirable_action(tmp_path):
    """tests/test_uniq.py's chain, two seeds batched: each member's mean action is the
    desirable side's (BC on D_MIX sits near 0 there)."""
    spec, un, mix = chain_datasets(tmp_path)
    kw = dict(device="cpu", log_every=100, progress=False)  # as the one-seed test
    train("uniq", spec, un, mix, [0, 1], CHAIN_STEPS, tmp_path / "uniq/seed{seed}", CHAIN, **kw)
    for seed in (0, 1):
        assert mean_action(tmp_path / f"uniq/seed{seed}/policy.pt") < -0.15, seed


# ---------------------------------------------------------------------------- the loop
@pytest.mark.parametrize("algo", ["uniq", "safedice"])
def test_each_member_starts_exactly_as_a_separate_run_with_its_seed(tmp_path, data, algo):
    """Initial weights and pretraining (classifiers, early stopping) are each seed's own."""
    un, mix = data
    cfg = TINY if algo == "uniq" else dict(hidden=16, batch_size=16, classifier_steps=10)
    metas = train(algo, SPEC, un, mix, [3, 4], 0, tmp_path / "b/seed{seed}", cfg, **FAST)
    for seed, meta in zip((3, 4), metas, strict=True):
        alone = train(algo, SPEC, un, mix, seed, 0, tmp_path / f"alone{seed}", cfg, **FAST)
        assert meta["pretrain"] == alone["pretrain"] and meta["seed"] == seed
        a = load_policy(tmp_path / f"b/seed{seed}/policy.pt")[0].state_dict()
        assert_same_state(a, load_policy(tmp_path / f"alone{seed}/policy.pt")[0].state_dict())
    p3, p4 = (load_policy(tmp_path / f"b/seed{s}/policy.pt")[0].state_dict() for s in (3, 4))
    assert any(not torch.equal(p3[k], p4[k]) for k in p3)


@pytest.mark.parametrize("algo", ["uniq", "safedice"])
def test_a_job_stopped_while_pretraining_resumes_at_the_next_seed(
    tmp_path, data, monkeypatch, caplog, algo
):
    """Seeds pretrain one after another (hours each for SafeDICE at the paper's sizes): a job
    stopped at its third seed keeps the first two (pretrain.pt), pretrains only the third
    when rerun, and ends as the uninterrupted job does."""
    un, mix = data
    cfg = TINY if algo == "uniq" else dict(hidden=16, batch_size=16, classifier_steps=10)
    seeds, method = [3, 4, 5], {"uniq": UNIQ, "safedice": SafeDICE}[algo]
    a = train(algo, SPEC, un, mix, seeds, 20, tmp_path / "a/seed{seed}", cfg, **FAST)

    real, calls = method.pretrain, []

    def stop_at_third(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        end = time.process_time() + 0.1  # busy: CPU time the log's 0.1 s resolution sees
        while time.process_time() < end:
            pass
        return real(self)

    monkeypatch.setattr(method, "pretrain", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        train(algo, SPEC, un, mix, seeds, 20, tmp_path / "b/seed{seed}", cfg, **FAST)
    job = tmp_path / "b/seed3_4_5"
    assert sorted(p.name for p in job.iterdir()) == ["pretrain.pt"]
    assert sorted(torch.load(job / "pretrain.pt", weights_only=False)["seeds"]) == [3, 4]

    saved = torch.load(job / "pretrain.pt", weights_only=False)  # as if written elsewhere
    torch.save(dict(saved, host=dict(saved["host"], threads=99)), job / "pretrain.pt")

    calls.clear()
    with caplog.at_level(logging.INFO, logger="uniq"):
        b = train(algo, SPEC, un, mix, seeds, 20, tmp_path / "b/seed{seed}", cfg, **FAST)
    assert len(calls) == 1  # seed 5 only
    (moved,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "pretrain.pt was written on another setup (threads 99 -> 1)" in moved
    # the job's time counts the first attempt's two seeds (uniq.jobtimes reads its log)
    log = tmp_path / "seeds.log"
    log.write_text("\n".join(r.getMessage() for r in caplog.records))
    wall, cpu = jobtimes._seconds_before_resume(log, 0.0)
    assert 0 < wall < b[0]["wall_time_s"] and cpu >= 0.2  # two seeds' 0.1 CPU s each
    assert sorted(p.name for p in job.iterdir()) == ["checkpoint.pt"]  # pretrain.pt merged in
    for seed, meta_a, meta_b in zip(seeds, a, b, strict=True):
        assert meta_a["pretrain"] == meta_b["pretrain"]
        pa, pb = (load_policy(tmp_path / f"{r}/seed{seed}/policy.pt")[0] for r in "ab")
        assert_same_state(pa.state_dict(), pb.state_dict())
    assert b[0]["wall_time_s"] > 0


def test_batched_run_writes_each_seeds_files_and_resumes_bit_exact(tmp_path, data, monkeypatch):
    un, mix = data
    kw = TINY
    fast = dict(FAST, log_every=8)
    seeds = [3, 4, 5]
    train(
        "uniq", SPEC, un, mix, seeds, 60, tmp_path / "a/seed{seed}", kw, checkpoint_every=30, **fast
    )

    calls = {"n": 0}
    real_update = UNIQ.update

    def crash_at_45(self, batch):
        calls["n"] += 1
        if calls["n"] == 45:
            raise KeyboardInterrupt
        return real_update(self, batch)

    monkeypatch.setattr(UNIQ, "update", crash_at_45)
    with pytest.raises(KeyboardInterrupt):
        train(
            "uniq",
            SPEC,
            un,
            mix,
            seeds,
            60,
            tmp_path / "b/seed{seed}",
            kw,
            checkpoint_every=30,
            **fast,
        )
    assert checkpoint_params(tmp_path / "b/seed3_4_5")[0] == 30
    assert not any((tmp_path / f"b/seed{s}/policy.pt").exists() for s in seeds)
    monkeypatch.setattr(UNIQ, "update", real_update)
    monkeypatch.setattr(UNIQ, "pretrain", lambda self: pytest.fail("resume must not pretrain"))
    train(
        "uniq", SPEC, un, mix, seeds, 60, tmp_path / "b/seed{seed}", kw, checkpoint_every=30, **fast
    )

    assert_same_state(
        checkpoint_params(tmp_path / "a/seed3_4_5"), checkpoint_params(tmp_path / "b/seed3_4_5")
    )
    assert sorted(p.name for p in (tmp_path / "b/seed3_4_5").iterdir()) == ["checkpoint.pt"]
    policies = []
    for seed in seeds:
        a, b = tmp_path / f"a/seed{seed}", tmp_path / f"b/seed{seed}"
        assert sorted(p.name for p in b.iterdir()) == ["config.yaml", "policy.pt", "train_log.csv"]
        pa, meta = load_policy(a / "policy.pt")
        assert_same_state(pa.state_dict(), load_policy(b / "policy.pt")[0].state_dict())
        assert meta["seed"] == seed and meta["steps"] == 60
        assert log_rows(a) == log_rows(b)
        assert [r["step"] for r in log_rows(b)] == [str(s) for s in [*range(8, 60, 8), 60]]
        config = yaml.safe_load((b / "config.yaml").read_text())
        assert config["seed"] == seed and config["loop"]["seeds_trained_together"] == seeds
        policies.append(pa.state_dict())
    assert any(not torch.equal(policies[0][k], policies[1][k]) for k in policies[0])
    logs = [log_rows(tmp_path / f"a/seed{s}") for s in seeds]
    assert logs[0] != logs[1]  # each seed logs its own member's values


def test_nan_in_one_member_stops_the_job_naming_step_and_seed(tmp_path, data, monkeypatch):
    un, mix = data
    real_sample = Sampler.sample
    calls = {"n": 0}

    def poisoned(self, batch_size, members=None):
        calls["n"] += 1  # two sources per step: call 13 is step 7's D_MIX batch
        out = real_sample(self, batch_size, members)
        if calls["n"] == 13:
            out["observations"] = out["observations"].clone()
            out["observations"][1, 0, 0] = float("nan")  # member 1 = seed 8 only
        return out

    monkeypatch.setattr(Sampler, "sample", poisoned)
    with pytest.raises(TrainingDiverged, match=r"critic_loss = nan at step 7 for seed 8\b"):
        train("uniq", SPEC, un, mix, [7, 8], 20, tmp_path / "s{seed}", TINY, **FAST)
    assert not (tmp_path / "s7/policy.pt").exists()


def test_cli_trains_several_seeds_into_a_folder_pattern(tmp_path, data, monkeypatch):
    monkeypatch.setitem(__import__("envs.tasks").tasks.TASKS, SPEC.name, SPEC)
    un, mix = data
    argv = ["train", "--algo", "bc-mix", "--task", SPEC.name, "--un", str(un), "--mix", str(mix)]
    argv += ["--steps", "5", "--device", "cpu", "--no-progress", "--set", "hidden=8"]
    out = str(tmp_path / "runs/seed{seed}")
    assert cli_main([*argv, "--seed", "0", "1", "--out", out]) == 0
    assert all((tmp_path / f"runs/seed{s}/policy.pt").exists() for s in (0, 1))
    assert (tmp_path / "runs/seed0_1/checkpoint.pt").exists()
    assert cli_main([*argv, "--seed", "0", "1", "--out", str(tmp_path / "flat")]) == 2
    with pytest.raises(ConfigError, match=r"\{seed\}"):
        train("bc-mix", SPEC, un, mix, [0, 1], 5, tmp_path / "flat", {}, **FAST)


def test_method_that_cannot_batch_trains_its_seeds_one_after_another(tmp_path, data, monkeypatch):
    un, mix = data
    monkeypatch.setattr(BC, "supports_members", False)
    metas = train("bc-mix", SPEC, un, mix, [1, 2], 10, tmp_path / "s{seed}", {"hidden": 8}, **FAST)
    assert [m["seed"] for m in metas] == [1, 2]
    for seed in (1, 2):  # exactly the separate runs
        train("bc-mix", SPEC, un, mix, seed, 10, tmp_path / f"alone{seed}", {"hidden": 8}, **FAST)
        assert_same_state(
            load_policy(tmp_path / f"s{seed}/policy.pt")[0].state_dict(),
            load_policy(tmp_path / f"alone{seed}/policy.pt")[0].state_dict(),
        )


def test_batched_run_evaluates_each_member_on_its_seeds_episodes(tmp_path, data, fake_rollouts):
    from envs import evaluate

    seen = fake_rollouts
    kw = dict(device="cpu", progress=False, log_every=5)
    train("uniq", SPEC, *data, [0, 1], 12, tmp_path / "plain/s{seed}", TINY, **kw)
    train(
        "uniq", SPEC, *data, [0, 1], 12, tmp_path / "curve/s{seed}", TINY, eval_every=5,
        eval_episodes=2, reference_paths=["ref.h5"], **kw,
    )  # fmt: skip
    base = [evaluate.eval_seed_base(s) for s in (0, 1)]
    assert seen == base * 3  # steps 5, 10, 12: each member on its own seed's episodes
    curves = []
    for seed in (0, 1):
        rows = (tmp_path / f"curve/s{seed}/curve.csv").read_text().splitlines()
        assert [r.split(",")[0] for r in rows[1:]] == ["5", "10", "12"]
        curves.append(rows)
        a = load_policy(tmp_path / f"plain/s{seed}/policy.pt")[0].state_dict()
        assert_same_state(a, load_policy(tmp_path / f"curve/s{seed}/policy.pt")[0].state_dict())
    assert curves[0] != curves[1]  # each member's own policy was evaluated
