"""UNIQ on problems whose answer is known (tiny nets and step counts, one thread)."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math

import numpy as np
import pytest
import torch

from envs.tasks import TaskSpec
from uniq import jobtimes, ratio
from uniq.algorithm import (
    UNIQ,
    UNIQConfig,
    actor_weights,
    inverse_square_weight,
    quantiles,
    scale_ratio,
)
from uniq.data import OfflineData
from uniq.method import ConfigError
from uniq.nets import load_policy
from uniq.ratio import gap_bound
from uniq.seeding import seed_everything
from uniq.sources import make_sources
from uniq.train import train

torch.set_num_threads(1)

TINY = dict(hidden=32, batch_mix=32, batch_un=32, actor_batch=64, ratio_batch=64)
CHAIN = dict(TINY, ratio_steps=300, ratio_eval_every=50)
"""The chain problem's config (:func:`chain_datasets`)."""
CHAIN_STEPS = 1000
"""Updates on the chain: with the reference's orthogonal init (zero biases) the policy
leaves BC's average action within ~1000 updates (measured: mean action -0.25 to -0.31 over
seeds 0-2 at 1000 updates, -0.00 to -0.12 at 300)."""


def offline(obs, act, nxt, episode_len: int, desirable: float) -> OfflineData:
    n = len(obs)
    timeouts = (np.arange(n) % episode_len == episode_len - 1).astype(np.float32)
    return OfflineData(
        obs, act, np.zeros(n), np.zeros(n), nxt, np.zeros(n), timeouts, np.full(n, desirable)
    )


# ---------------------------------------------------------------------------- pieces
def test_inverse_square_weight_clips_zero_to_the_bound():
    W = torch.tensor([0.0, -0.0, -0.05, -0.5, -20.0])
    out = inverse_square_weight(W, 100.0)
    # 1/0 = +inf -> 100 (not nan); 1/0.05^2 = 400 -> 100; 1/0.25 = 4; 1/400
    assert torch.equal(out, torch.tensor([100.0, 100.0, 100.0, 4.0, 1 / 400]))
    assert torch.isfinite(out).all()


def test_actor_weights_recipe_and_paper_forms():
    cfg = UNIQConfig()
    A = torch.tensor([0.0, 0.0, 0.0, 20.0])  # the last is clipped to adv_clip = 10
    W = torch.tensor([0.0, -1.0, -10.0, -10.0])
    paper = actor_weights(A, None, cfg)
    e = torch.exp(torch.tensor([-10.0, -10.0, -10.0, 0.0]))
    assert torch.allclose(paper, (e / e.mean()).clamp(max=100))
    recipe = actor_weights(A, W, cfg)
    # 1/W^2: W = 0 -> clipped to 100, -1 -> 1, -10 -> 0.01; the product is capped at 100
    assert torch.allclose(
        recipe, (e / e.mean() * torch.tensor([100, 1, 0.01, 0.01])).clamp(max=100)
    )
    with pytest.raises(ConfigError, match="actor_weight"):
        UNIQConfig(actor_weight="paper")


def test_scale_ratio_maps_quantiles_to_minus_r_and_zero():
    tau = torch.linspace(0.1, 10.0, 101)
    q = (0.1, 0.9)
    w = scale_ratio(tau, q, 5.0)
    assert w.max() == 0 and w.min() == -5.0
    assert (w.diff() <= 0).all()  # more undesirable-looking (larger tau) -> lower weight
    assert (w[:11] == 0).all() and (w[-11:] == -5.0).all()  # clipped tails
    assert torch.equal(scale_ratio(torch.full((8,), 3.0), q, 5.0), torch.zeros(8))  # constant tau


def test_sync_free_quantiles_equal_torch_quantile():
    x = torch.randn(1000).exp()
    for q in [(0.1, 0.9), (0.0, 1.0), (0.25, 0.333)]:
        assert torch.allclose(torch.stack(quantiles(x, q)), torch.quantile(x, torch.tensor(q)))
    assert quantiles(torch.tensor([2.0]), (0.1, 0.9)) == [2.0, 2.0]


# ---------------------------------------------------------------------------- ratio estimator
@pytest.mark.parametrize(
    "form, stop", [("state", "gap"), ("state_action", "gap"), ("state", "heldout")]
)
def test_ratio_estimator_recovers_gaussian_density_ratio(form, stop):
    """D_UN states ~ N(1, 1), D_MIX states ~ N(0, 1): tau(x) = exp(x - 1/2) exactly.

    Actions are drawn from the same distribution in both sets, so the (s, a) form must
    find the same ratio. On x in [-1, 2] the true tau spans [0.22, 4.5], inside the
    [1/19, 19] range the probability clip allows, with >= 16% of each set's mass beyond
    the grid ends. Bounds: with 4000 + 4000 samples the log-odds in a 0.1-wide bin of
    the grid's ends have binomial noise sd ~ 0.1-0.15, and dropout, weight decay and early
    stopping smooth (bias) the estimate somewhat; we measured mean absolute errors of
    0.06-0.21 over seeds. So: correlation of log tau with the truth > 0.98 and mean
    absolute error < 0.3 (a constant estimate has correlation 0 and error 0.75; a ratio in
    the wrong direction has correlation -1), and E_MIX[tau] within 0.15 of its exact 1.
    Both stop rules: the reference's gap rule and the held-out early stopping.
    """
    rng = np.random.default_rng(0)
    n = 4000
    x_un, x_mix = rng.normal(1, 1, (n, 1)), rng.normal(0, 1, (n, 1))
    a_un, a_mix = rng.uniform(-1, 1, (n, 1)), rng.uniform(-1, 1, (n, 1))
    un = offline(x_un, a_un, x_un, 10, 0.0)
    mix = offline(x_mix, a_mix, x_mix, 10, 1.0)
    spec = TaskSpec("Gauss-v0", "navigation", obs_dim=1, act_dim=1)
    gen = seed_everything(0)
    cfg = UNIQConfig(
        hidden=32,
        ratio_batch=256,
        ratio_steps=400,
        ratio_lr=3e-3,
        ratio_eval_every=50,
        ratio_form=form,
        ratio_stop=stop,  # "gap": navigation checks every 5000 steps, so all 400 run
    )
    method = UNIQ(cfg, spec, make_sources(un, mix, torch.device("cpu"), gen), "cpu", 0)
    info = method.pretrain()
    grid = torch.linspace(-1, 2, 31)[:, None]
    x = grid if form == "state" else torch.cat([grid, torch.zeros_like(grid)], 1)
    with torch.no_grad():
        est = method.occupancy_ratio(x).log()
    true = grid.squeeze(1) - 0.5
    corr = np.corrcoef(est.numpy(), true.numpy())[0, 1]
    assert corr > 0.98, (corr, info)
    assert (est - true).abs().mean() < 0.3, ((est - true).abs().mean(), info)
    assert abs(info["ratio_mean_mix"] - 1) < 0.15  # E_MIX[tau] = 1 for the true ratio


# ---------------------------------------------------------------------------- known behaviour
def chain_datasets(tmp_path, seed: int = 0):
    """1-D chain s' = clip(s + 0.2 a + noise): desirable demos take a = -0.5 (drift left),
    undesirable a = +0.5 (drift right), from the same start states U(-0.5, 0.5).

    D_UN: 10 undesirable trajectories; D_MIX: 10 desirable + 10 undesirable. Near the start
    states both actions occur equally often in D_MIX, so BC on D_MIX averages them
    (mean action ~ 0) while a method that avoids D_UN's behaviour must choose a < 0.
    """
    rng = np.random.default_rng(seed)

    def episodes(k, action, desirable, T=20):
        rows = []
        for _ in range(k):
            s = rng.uniform(-0.5, 0.5)
            for _ in range(T):
                a = float(np.clip(action + 0.05 * rng.standard_normal(), -1, 1))
                s2 = float(np.clip(s + 0.2 * a + 0.02 * rng.standard_normal(), -1, 1))
                rows.append((s, a, s2))
                s = s2
        s, a, s2 = (np.array(c, dtype=np.float32)[:, None] for c in zip(*rows, strict=True))
        data = offline(s, a, s2, T, desirable)
        # for diagnose's reward and cost under the actor's weight (training reads neither):
        # reward for progress to the left, cost for entering the right end
        data.rewards, data.costs = (s - s2)[:, 0], (s2[:, 0] > 0.5).astype(np.float32)
        return data

    un = episodes(10, 0.5, 0.0)
    mix = OfflineData.concatenate([episodes(10, -0.5, 1.0), episodes(10, 0.5, 0.0)])
    un.save(tmp_path / "un.h5")
    mix.save(tmp_path / "mix.h5")
    return (
        TaskSpec("Chain-v0", "navigation", obs_dim=1, act_dim=1),
        tmp_path / "un.h5",
        tmp_path / "mix.h5",
    )


def mean_action(policy_path, lo=-0.3, hi=0.3) -> float:
    policy, _ = load_policy(policy_path)
    return float(policy.act(torch.linspace(lo, hi, 13)[:, None]).mean())


def test_uniq_avoids_the_undesirable_action_where_bc_does_not(tmp_path):
    spec, un, mix = chain_datasets(tmp_path)
    kw = dict(device="cpu", log_every=100, progress=False)
    train("uniq", spec, un, mix, 0, CHAIN_STEPS, tmp_path / "uniq", CHAIN, **kw)
    bc_cfg = dict(hidden=32, batch_size=64)
    train("bc-mix", spec, un, mix, 0, CHAIN_STEPS, tmp_path / "bc", bc_cfg, **kw)
    a_uniq, a_bc = mean_action(tmp_path / "uniq/policy.pt"), mean_action(tmp_path / "bc/policy.pt")
    # desirable action -0.5, undesirable +0.5: BC sits near their average 0
    assert a_uniq < -0.15, (a_uniq, a_bc)
    assert a_uniq < a_bc - 0.1, (a_uniq, a_bc)


def test_auc_is_the_mann_whitney_probability():
    from scipy.stats import norm

    from uniq.diagnostics import auc

    rng = np.random.default_rng(0)
    x, y = rng.normal(1, 1, 4000), rng.normal(0, 1, 4000)
    assert abs(auc(x, y) - norm.cdf(1 / np.sqrt(2))) < 0.02  # P(X > Y) for unit normals 1 apart
    assert auc(np.array([1.0, 2.0]), np.array([2.0, 3.0])) == 0.125  # one tie counted half


def test_diagnose_finds_the_separation_uniq_learned_on_the_chain(tmp_path):
    from uniq.diagnostics import diagnose, format_report

    spec, un, mix = chain_datasets(tmp_path)
    train(
        "uniq", spec, un, mix, 0, CHAIN_STEPS, tmp_path / "run", CHAIN, device="cpu", progress=False
    )
    report = diagnose(tmp_path / "run", spec=spec, weight_batches=40)
    # Undesirable rows drift right, desirable ones left: the ratio tells them apart, and the
    # critic learned a lower implicit reward on D_UN's and the undesirable D_MIX rows.
    assert report["auc"]["tau"]["desirable>mix_undesirable"] > 0.8, format_report(report)
    assert report["auc"]["tau"]["desirable>un"] > 0.8, format_report(report)
    assert report["mean"]["reward"]["un"] < report["mean"]["reward"]["mix_desirable"]
    assert report["auc"]["reward"]["desirable>un"] > 0.6, format_report(report)
    # The actor learns mostly from desirable rows (half of D_MIX here), which move left (the
    # reward) and stay out of the right end (the cost); so does each factor of its weight.
    weight = report["actor_weight"]
    assert weight["batches"] == 40 and weight["data"]["desirable"] == 0.5
    assert weight["data"]["reward"] > 0 and 0 < weight["data"]["negative_reward"] < 0.5
    assert weight["desirable_rows"]["desirable"] == 1 and weight["desirable_rows"]["cost"] == 0
    assert weight["desirable_rows"]["reward"] > weight["data"]["reward"]
    for factor in ("whole", "occupancy", "advantage"):
        w = weight[factor]
        assert w["desirable"] > 0.6, (factor, format_report(report))
        assert w["reward"] > weight["data"]["reward"], (factor, format_report(report))
        assert w["cost"] < weight["data"]["cost"], (factor, format_report(report))
        assert w["negative_reward"] < weight["data"]["negative_reward"], factor
        assert 0 < w["reward_se"] < w["reward"] and 1 <= w["effective_rows"] <= 64
        assert 0 <= w["at_cap"] < 1
    assert "| 1/W^2 factor alone |" in format_report(report)


@pytest.mark.parametrize("value_form", ["policy", "expectile"])
def test_diagnose_uses_the_value_the_update_uses(value_form):
    from uniq.diagnostics import _value

    spec = TaskSpec("Chain-v0", "navigation", obs_dim=1, act_dim=1)
    method = UNIQ(UNIQConfig(**dict(TINY, value_form=value_form)), spec, {}, "cpu", 0)
    s = torch.linspace(-1, 1, 9)[:, None]
    # outputs beyond max_v = 500 on half the states: the update clips V there
    for head in (method.critic_target.q1, method.critic_target.q2, getattr(method, "value", None)):
        if head is not None:
            with torch.no_grad():
                head[-1].weight.fill_(2000.0)
    torch.manual_seed(1)
    v = _value(method, s)
    if value_form == "expectile":  # the separate network, no policy sample
        raw = method.value(s).squeeze(-1)
    else:
        torch.manual_seed(1)
        a, logp = method.actor.sample(s)
        raw = method.critic_target.min_q(s, a) - method.cfg.alpha * logp
    assert (raw.abs() > 500).any() and (raw.abs() < 500).any()
    assert torch.equal(v, raw.clamp(-500, 500))


def test_diagnose_reads_a_seed_of_a_batched_job(tmp_path):
    from uniq.diagnostics import diagnose, format_report

    spec, un, mix = chain_datasets(tmp_path)
    out = tmp_path / "runs/seed{seed}"
    train("uniq", spec, un, mix, [0, 1], CHAIN_STEPS, out, CHAIN, device="cpu", progress=False)
    assert not (tmp_path / "runs/seed1/checkpoint.pt").exists()  # the job's is in seed0_1
    report = diagnose(tmp_path / "runs/seed1", spec=spec)
    assert report["auc"]["tau"]["desirable>mix_undesirable"] > 0.8, format_report(report)
    assert report["auc"]["reward"]["desirable>un"] > 0.6, format_report(report)

    # the table diagnose and analysis/blind_rows.py read: member 1's classifiers, s and s'
    from uniq.diagnostics import load_run

    loaded = load_run(tmp_path / "runs/seed1", spec=spec)
    m, rows = loaded.method, {k: torch.as_tensor(getattr(loaded.mix, k)) for k in
                              ("observations", "next_observations", "actions")}  # fmt: skip
    with torch.no_grad():
        want = [m.occupancy_ratio(m._features(rows, nxt).expand(2, -1, -1))[1] for nxt in (0, 1)]
    assert loaded.member == 1
    assert np.allclose(loaded.mix_tau(), torch.stack(want, -1).numpy())

    from uniq.diagnostics import FACTORS, _advantage, actor_weighted_means
    from uniq.weights import actor_weights, inverse_square_weight, transition_weight

    good = loaded.mix.is_desirable > 0.5
    columns = {"all": np.ones(len(good), bool), "good": good, "bad": ~good,
               "three": np.full(len(good), 3.0), "label": 2 * loaded.mix.is_desirable}  # fmt: skip
    rng = np.random.default_rng(0)
    torch.manual_seed(7)  # V(s) in the advantage takes a policy sample
    got = actor_weighted_means(m, loaded.mix, 1, rng, columns, batches=3, factors=tuple(FACTORS))
    whole = got["whole"]
    assert whole["all"] == pytest.approx(1) and whole["good"] + whole["bad"] == pytest.approx(1)
    assert whole["three"] == pytest.approx(3) and whole["three_se"] == pytest.approx(0)
    assert 0 < whole["good"] < 1 and 1 <= whole["effective_rows"] <= m.cfg.actor_batch

    # by hand, on the same three batches: member 1's advantage and its own tau's W
    cfg, tau, label, rng = m.cfg, loaded.mix_tau(), columns["label"], np.random.default_rng(0)
    means = {factor: [] for factor in FACTORS}
    torch.manual_seed(7)
    for _ in range(3):
        idx = rng.integers(0, len(tau), cfg.actor_batch)
        s, a = (torch.as_tensor(getattr(loaded.mix, k)[idx]) for k in ("observations", "actions"))
        with torch.no_grad():
            A = _advantage(m, s.expand(2, *s.shape), a.expand(2, *a.shape))[1]
        W = transition_weight(
            torch.as_tensor(tau[idx]), cfg.actor_batch, m.ratio_q, cfg.reward_factor, cfg.gamma
        )
        by_hand = {
            "whole": actor_weights(A, W, cfg),
            "occupancy": inverse_square_weight(W, cfg.inv_w2_clip).clamp(max=cfg.weight_clip),
            "advantage": actor_weights(A, None, cfg),
        }
        for factor, w in by_hand.items():
            w = w.double()
            means[factor].append(float((w * torch.as_tensor(label[idx])).sum() / w.sum()))
    for factor, v in means.items():
        assert got[factor]["label"] == pytest.approx(np.mean(v)), factor
        assert got[factor]["label_se"] == pytest.approx(np.std(v, ddof=1) / np.sqrt(3)), factor
    assert len({got[factor]["label"] for factor in FACTORS}) == 3  # three different weights


def test_diagnose_reads_a_job_still_training_from_its_checkpoint(tmp_path, caplog):
    """A batched job's folder holds only checkpoint.pt while it trains: diagnose reads the
    seed asked for, on the data the workflow's layout names (or the files given), and gives
    what the finished seed's run folder gives; data that are not the job's are refused."""
    import shutil

    from uniq.diagnostics import diagnose

    spec, un, mix = chain_datasets(tmp_path)
    data = tmp_path / "results/p/data/chain/default"
    data.mkdir(parents=True)
    for f in (un, mix):
        shutil.copy(f, data)
    runs = tmp_path / "results/p/runs/chain/default/uniq"
    train("uniq", spec, data / "un.h5", data / "mix.h5", [0, 1], CHAIN_STEPS,
          runs / "seed{seed}", CHAIN, device="cpu", progress=False)  # fmt: skip
    job = runs / "seed0_1"
    assert (job / "checkpoint.pt").is_file() and not (job / "config.yaml").exists()
    finished = diagnose(runs / "seed1", spec=spec)
    training = diagnose(job, spec=spec, member_seed=1)
    assert training["mean"] == finished["mean"] and training["auc"] == finished["auc"]
    assert diagnose(job, spec=spec)["mean"] != finished["mean"]  # seed 0 by default
    given = {"un": str(data / "un.h5"), "mix": str(data / "mix.h5")}
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(job, elsewhere)
    assert (
        diagnose(elsewhere, spec=spec, member_seed=1, data_paths=given)["mean"]
        == (finished["mean"])
    )
    with pytest.raises(ValueError, match="give its data"):
        diagnose(elsewhere, spec=spec)
    with pytest.raises(ValueError, match="seed 7 is not one of the job's seeds"):
        diagnose(job, spec=spec, member_seed=7)
    from uniq.cli import main

    with caplog.at_level(logging.ERROR, logger="uniq"):
        assert main(["diagnose", str(elsewhere), "--un", given["un"]]) == 2
    assert "give both --un and --mix" in caplog.text
    with pytest.raises(ValueError, match="a run's folder: its config.yaml names its seed"):
        diagnose(runs / "seed1", spec=spec, member_seed=1)
    swapped = {"un": given["mix"], "mix": given["un"]}
    with pytest.raises(ValueError, match="not the un data .* checksum differs"):
        diagnose(job, spec=spec, data_paths=swapped)


def test_without_occupancy_correction_it_still_trains(tmp_path):
    spec, un, mix = chain_datasets(tmp_path)
    out = tmp_path / "ablation"
    cfg = dict(TINY, occupancy_correction=False)
    meta = train("uniq", spec, un, mix, 0, 60, out, cfg, device="cpu", log_every=20, progress=False)
    assert meta["pretrain"] == {}  # no classifiers to train
    log = np.genfromtxt(out / "train_log.csv", delimiter=",", names=True)
    assert np.isfinite(log["critic_loss"]).all() and np.isfinite(log["actor_loss"]).all()
    assert log["actor_loss"][-1] != log["actor_loss"][0]

    # The policy moved away from its initialization.
    seed_everything(0)
    fresh = UNIQ(UNIQConfig(**cfg), spec, {}, "cpu", 0).actor.state_dict()
    trained, _ = load_policy(out / "policy.pt")
    assert any(not torch.equal(v, trained.state_dict()[k]) for k, v in fresh.items())


def test_ablation_weights_are_constant_per_source():
    spec = TaskSpec("Chain-v0", "navigation", obs_dim=1, act_dim=1)
    cfg = UNIQConfig(**dict(TINY, occupancy_correction=False))
    method = UNIQ(cfg, spec, {}, "cpu", 0)
    mix = {"observations": torch.zeros(64, 1)}
    un = {"observations": torch.zeros(32, 1)}
    W, W_actor = method._weights(mix, un)
    assert torch.equal(W[:32], torch.zeros(32))
    # -R: the corrected critic's clip of W to [-R, R] caps D_UN-like rows there too
    assert torch.equal(W[32:], torch.full((32,), -5.0))
    assert torch.equal(W_actor, torch.zeros(64))


# ---------------------------------------------------------------------------- reference recipe
def fixed_batch(method: UNIQ, seed: int = 0, terminal_share: float = 0.25) -> dict:
    """A batch of the sizes ``method.batches()`` asks for, from a fixed random stream."""
    g = torch.Generator().manual_seed(seed)
    obs_dim, act_dim = method.spec.obs_dim, method.spec.act_dim

    def part(n: int) -> dict[str, torch.Tensor]:
        return {
            "observations": torch.randn(n, obs_dim, generator=g),
            "actions": torch.rand(n, act_dim, generator=g) * 2 - 1,
            "next_observations": torch.randn(n, obs_dim, generator=g),
            "terminals": (torch.rand(n, generator=g) < terminal_share).float(),
            "index": torch.arange(n),
        }

    return {key: part(n) for key, (_, n) in method.batches().items()}


def set_output(head: torch.nn.Sequential, bias: list[float]) -> None:
    """Make an MLP's output the constant ``bias`` (its last layer's weights zeroed)."""
    with torch.no_grad():
        head[-1].weight.zero_()
        head[-1].bias.copy_(torch.tensor(bias))


def test_uniq_policy_log_std_is_the_reference_tanh_form_and_round_trips(tmp_path):
    from uniq.nets import save_policy

    spec = TaskSpec("Chain-v0", "navigation", obs_dim=1, act_dim=3)
    actor = UNIQ(UNIQConfig(**TINY), spec, {}, "cpu", 0).actor
    x = torch.tensor([-3.0, 0.0, 3.0])  # the trunk's raw log-std outputs
    set_output(actor.trunk, [0.0, 0.0, 0.0, *x.tolist()])
    _, log_std = actor(torch.zeros(1, 1))
    # -5 + 3.5 (tanh(x) + 1): smooth inside [-5, 2]; a hard clamp would give [-3, 0, 2]
    torch.testing.assert_close(log_std[0], -5 + 3.5 * (torch.tanh(x) + 1))
    save_policy(actor, tmp_path / "policy.pt", {})
    loaded, _ = load_policy(tmp_path / "policy.pt")
    torch.testing.assert_close(loaded(torch.zeros(1, 1))[1], log_std)
    # a policy.pt written before the option existed was a clamp policy, and still loads as one
    payload = torch.load(tmp_path / "policy.pt", weights_only=False)
    del payload["kwargs"]["log_std_form"]
    torch.save(payload, tmp_path / "old.pt")
    old, _ = load_policy(tmp_path / "old.pt")
    torch.testing.assert_close(old(torch.zeros(1, 1))[1][0], x.clamp(-5, 2))


def test_uniq_actor_loss_clips_dataset_actions_and_log_pi_as_the_reference():
    """Four rows of a 2-D action: (A) a saturated action inside the log-pi clip, where the
    action clip 1 - 1e-7 sets the value; (B) far below -5 act_dim and (C) above 2 act_dim:
    clipped, and with no gradient; (D) an ordinary row."""
    spec = TaskSpec("Chain-v0", "navigation", obs_dim=1, act_dim=2)
    method = UNIQ(UNIQConfig(**TINY), spec, {}, "cpu", 0)
    mean = torch.tensor([[2.5, 2.5], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    log_std = torch.tensor([[0.0, 0.0], [-3.0, -3.0], [-5.0, -5.0], [0.0, 0.0]])
    log_std.requires_grad_(True)
    actions = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.5, -0.5]])
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0])
    loss = method.actor_loss(mean, log_std, actions, weight)

    # Independently, in float64: a clipped to float32(1 - 1e-7), u = atanh(a),
    # log pi = sum_j log N(u_j; mean_j, std_j) - log(1 - a_j^2).
    a = actions.double().clamp(-float(torch.tensor(1 - 1e-7)), float(torch.tensor(1 - 1e-7)))
    u = torch.atanh(a)
    normal = torch.distributions.Normal(mean.detach().double(), log_std.detach().double().exp())
    log_pi = (normal.log_prob(u) - torch.log(1 - a.square())).sum(-1)
    assert log_pi[0] > -10 and log_pi[1] < -10 and log_pi[2] > 4 and -10 < log_pi[3] < 4
    expected = -(weight.double() * log_pi.clamp(-10, 4)).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)
    loss.backward()
    for grad in (mean.grad, log_std.grad):
        assert (grad[1:3] == 0).all() and (grad[[0, 3]] != 0).all()


def test_actor_q_and_v_are_clipped_to_max_v():
    """A target critic that says Q = 1000 everywhere: clipped, Q = V = max_v = 500, so A = 0
    and every actor row weighs exactly 1 (unclipped, A = alpha log pi varies by row)."""
    spec = TaskSpec("Chain-v0", "navigation", obs_dim=2, act_dim=2)
    method = UNIQ(UNIQConfig(**dict(TINY, occupancy_correction=False)), spec, {}, "cpu", 0)
    for head in (method.critic_target.q1, method.critic_target.q2):
        set_output(head, [1000.0])
    out = method.update(fixed_batch(method))
    assert out["actor_weight_max"] == 1.0
    assert method.cfg.max_v == 5.0 / (1 - 0.99)


@pytest.mark.parametrize("members", [None, 2])
@pytest.mark.parametrize(
    "overrides", [{}, {"ratio_form": "state_action", "value_form": "expectile"}]
)
def test_every_uniq_network_starts_orthogonal_with_zero_biases(members, overrides):
    from uniq.nets import BatchedLinear

    spec = TaskSpec("Chain-v0", "navigation", obs_dim=5, act_dim=2)
    method = UNIQ(UNIQConfig(**dict(TINY, **overrides)), spec, {}, "cpu", 0, members=members)
    nets = [n for n in ("actor", "critic", "critic_target", "value", "c_un", "c_mix", "c")
            if hasattr(method, n)]  # fmt: skip
    assert len(nets) == 5
    layers = 0
    for name in nets:
        for mod in getattr(method, name).modules():
            if isinstance(mod, torch.nn.Linear):
                weights, biases = [mod.weight], [mod.bias]  # [out, in]
            elif isinstance(mod, BatchedLinear):
                weights, biases = [w.T for w in mod.weight], list(mod.bias)
            else:
                continue
            for w, b in zip(weights, biases, strict=True):
                layers += 1
                gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w  # the smaller side
                torch.testing.assert_close(gram, torch.eye(len(gram)), atol=1e-5, rtol=0)
                assert torch.equal(b, torch.zeros_like(b)), name
    assert layers == (3 + 2 * 6 + 2 * 3) * (members or 1)  # actor, twin Q and target, 2 more


def test_weights_take_quantiles_over_the_mix_rows_separately_for_s_and_next_s():
    """Known answer, computed with numpy's percentiles: critic batch = 5 D_MIX + 3 D_UN rows,
    actor batch = 8 D_MIX rows, tau(s') = 1.1 tau(s) on D_MIX (correlated, as in data)."""
    spec = TaskSpec("Chain-v0", "navigation", obs_dim=1, act_dim=1)
    cfg = UNIQConfig(hidden=8, batch_mix=5, batch_un=3, actor_batch=8)
    method = UNIQ(cfg, spec, {}, "cpu", 0)
    tau_s = torch.tensor([0.2, 1.0, 0.5, 3.0, 0.8, 2.0, 0.1, 6.0])
    tau_mix = torch.stack([tau_s, 1.1 * tau_s], -1)
    tau_un = torch.tensor([[4.0, 9.0], [0.3, 5.0], [2.5, 2.6]])
    method._tau = {"mix": tau_mix, "un": tau_un}
    W, W_act = method._weights({"index": torch.arange(8)}, {"index": torch.arange(3)})

    R, g = 5.0, 0.99

    def w(x, ref):
        lo, hi = np.percentile(ref, [10, 90])  # linear interpolation, as torch.quantile
        return -R * (np.clip(x, lo, hi) - lo) / (hi - lo)

    t_mix, t_un = tau_mix.double().numpy(), tau_un.double().numpy()
    critic_rows = np.concatenate([t_mix[:5], t_un])
    W_expected = np.clip(
        w(critic_rows[:, 0], t_mix[:5, 0]) + g * w(critic_rows[:, 1], t_mix[:5, 1]), -R, R
    )
    W_act_expected = w(t_mix[:, 0], t_mix[:, 0]) + g * w(t_mix[:, 1], t_mix[:, 1])
    np.testing.assert_allclose(W.double().numpy(), W_expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(W_act.double().numpy(), W_act_expected, rtol=1e-5, atol=1e-6)
    assert W.min() == -R and W_act.min() == pytest.approx(
        -R * (1 + g)
    )  # clipped only in the critic


def test_critic_loss_and_gradient_have_the_online_value_term(monkeypatch):
    """The critic's loss and gradient against a direct transcription of design.md 5.3:
    per head r_i = Q_i(s, a) - gamma (1 - done) clip(V_target(s'), +-500),
    L = mean_i [-mean(W r_i) + 1/2 mean(r_i^2)] + (1 - gamma) mean(min_i Q_i(s, a~pi) - alpha
    log pi), the last term through the online critic. Without occupancy correction W is
    known (0 on D_MIX, -R on D_UN); the target critic says 1000 so the V(s') clip is active;
    the policy noise is zero so a~pi = tanh(mean)."""
    spec = TaskSpec("Chain-v0", "navigation", obs_dim=2, act_dim=2)
    cfg = UNIQConfig(**dict(TINY, occupancy_correction=False))
    method = UNIQ(cfg, spec, {}, "cpu", 0)
    for head in (method.critic_target.q1, method.critic_target.q2):
        set_output(head, [1000.0])
    batch = fixed_batch(method)
    critic, actor = copy.deepcopy(method.critic), copy.deepcopy(method.actor)
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)
    out = method.update(batch)

    mix, un, m = batch["mix"], batch["un"], cfg.batch_mix
    s = torch.cat([mix["observations"][:m], un["observations"]])
    a = torch.cat([mix["actions"][:m], un["actions"]])
    done = torch.cat([mix["terminals"][:m], un["terminals"]])
    W = torch.cat([torch.zeros(m), torch.full((cfg.batch_un,), -5.0)])
    with torch.no_grad():
        mu, log_std = actor(s)
        a_pi = torch.tanh(mu)
        logp = (-log_std - 0.5 * math.log(2 * math.pi) - torch.log(1 - a_pi**2)).sum(-1)
    target = 0.99 * (1 - done) * 500.0
    losses = [-(W * (q - target)).mean() + 0.5 * (q - target).square().mean() for q in critic(s, a)]
    v_online = torch.min(*critic(s, a_pi)) - 1e-3 * logp
    loss = sum(losses) / 2 + 0.01 * v_online.mean()
    grads = torch.autograd.grad(loss, list(critic.parameters()))
    torch.testing.assert_close(out["critic_loss"], loss.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["v_mean"], v_online.mean().detach(), rtol=1e-5, atol=1e-5)
    for got, want in zip((p.grad for p in method.critic.parameters()), grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def gaussian_sources(n_un: int = 300, n_mix: int = 400, seed: int = 0, run_seed: int = 0):
    """1-D states, D_UN ~ N(1, 1) and D_MIX ~ N(-1, 1) (drawn with ``seed``), as samplers of
    a run seeded with ``run_seed``."""
    rng = np.random.default_rng(seed)
    x_un, x_mix = rng.normal(1, 1, (n_un, 1)), rng.normal(-1, 1, (n_mix, 1))
    un = offline(x_un, np.zeros((n_un, 1)), x_un, 10, 0.0)
    mix = offline(x_mix, np.zeros((n_mix, 1)), x_mix, 10, 1.0)
    return make_sources(un, mix, torch.device("cpu"), seed_everything(run_seed))


def pretrained(**overrides) -> tuple[UNIQ, dict]:
    spec = TaskSpec("Gauss-v0", "navigation", obs_dim=1, act_dim=1)
    cfg = UNIQConfig(**dict(hidden=16, ratio_batch=64, ratio_lr=3e-3, **overrides))
    method = UNIQ(cfg, spec, gaussian_sources(), "cpu", 0)
    return method, method.pretrain()


def test_class_gaps_reach_the_bound_of_a_known_mixture_and_no_further():
    """D_MIX = 20% desirable states N(4, .5) + 80% undesirable N(-4, .5), D_UN from the same
    undesirable distribution, many rows (nothing to memorise): both classifiers' gaps end at
    uniq.ratio.gap_bound(0.2) = 0.10, far below the reference's 0.2 / 0.5 thresholds."""
    rng = np.random.default_rng(0)
    n_un, n_mix = 4000, 10000
    x_un = rng.normal(-4, 0.5, (n_un, 1))
    x_mix = np.where(rng.uniform(size=(n_mix, 1)) < 0.2, 4.0, -4.0) + rng.normal(0, 0.5, (n_mix, 1))
    un = offline(x_un, np.zeros((n_un, 1)), x_un, 10, 0.0)
    mix = offline(x_mix, np.zeros((n_mix, 1)), x_mix, 10, 1.0)
    sources = make_sources(un, mix, torch.device("cpu"), seed_everything(0))
    spec = TaskSpec("Gauss-v0", "navigation", obs_dim=1, act_dim=1)
    cfg = UNIQConfig(hidden=16, ratio_batch=256, ratio_lr=3e-3, ratio_steps=600,
                     ratio_check_every=600, ratio_gap_mix=1.0, ratio_gap_un=1.0)  # fmt: skip
    info = UNIQ(cfg, spec, sources, "cpu", 0).pretrain()
    bound = gap_bound(0.2)
    assert bound == pytest.approx(0.101, abs=0.001)
    for name in ("c_mix", "c_un"):
        assert bound - 0.03 < info[f"ratio_final_gap_{name}"] < bound + 0.02, (name, info)


def test_classifiers_train_one_after_the_other_each_with_its_own_stop():
    """c_mix is trained first and alone: what c_un's threshold is cannot change it; each
    stops at its own first check past its threshold (-1: the first check; 2: never, a gap is
    at most 0.9)."""
    kw = dict(ratio_check_every=10, ratio_steps=60, ratio_gap_mix=-1.0)
    a, info_a = pretrained(**kw, ratio_gap_un=2.0)
    b, info_b = pretrained(**kw, ratio_gap_un=-1.0)
    assert info_a["ratio_steps_c_mix"] == info_b["ratio_steps_c_mix"] == 10
    assert info_a["ratio_steps_c_un"] == 60 and info_b["ratio_steps_c_un"] == 10
    assert_same = torch.testing.assert_close
    for k, v in a.c_mix.state_dict().items():
        assert_same(v, b.c_mix.state_dict()[k], rtol=0, atol=0)
    assert any(not torch.equal(v, b.c_un.state_dict()[k]) for k, v in a.c_un.state_dict().items())


def test_gap_stop_rule_stops_at_the_first_check_past_the_threshold(caplog):
    """Known answer: the data are smaller than 5000 rows, so the gap is over every row,
    recomputed here with dropout off. Each classifier stops at step S, the first check with
    its gap above its threshold (c_mix 0.2, c_un 0.4); a run limited to S - 10 steps
    repeats the same draws and ends with a gap not above the threshold. Every check is
    logged (a fit can run an hour), the last with the final gap."""
    threshold = {"c_mix": 0.2, "c_un": 0.4}
    kw = dict(ratio_check_every=10, ratio_steps=2000, ratio_gap_mix=0.2, ratio_gap_un=0.4)
    with caplog.at_level(logging.INFO, logger="uniq.ratio"):
        method, info = pretrained(**kw)
    for name in threshold:
        checks = [
            r.getMessage() for r in caplog.records if r.getMessage().startswith(f"ratio {name}:")
        ]
        assert len(checks) == info[f"ratio_steps_{name}"] // 10, checks
        assert f"gap {info[f'ratio_final_gap_{name}']:.3f}" in checks[-1], (checks[-1], info)
    x_un, x_mix = (method.data[k].tensors["observations"] for k in ("un", "mix"))
    with torch.no_grad():  # frozen: eval mode, dropout off
        p = {n: [method.ratio._probs(getattr(method, n), x).mean() for x in (x_mix, x_un)]
             for n in threshold}  # fmt: skip
    gaps = {"c_mix": p["c_mix"][0] - p["c_mix"][1], "c_un": p["c_un"][1] - p["c_un"][0]}
    for name, gap in gaps.items():
        steps = info[f"ratio_steps_{name}"]
        assert steps % 10 == 0 and 10 < steps < 2000, info
        assert gap > threshold[name] and info[f"ratio_final_gap_{name}"] == pytest.approx(
            float(gap)
        )
    # c_un's limit S - 10 must not cut c_mix short (then c_mix stops as before)
    assert info["ratio_steps_c_un"] - 10 >= info["ratio_steps_c_mix"], info
    for name in threshold:
        limit = info[f"ratio_steps_{name}"] - 10
        _, short = pretrained(**dict(kw, ratio_steps=limit))
        assert short[f"ratio_steps_{name}"] == limit
        assert short[f"ratio_final_gap_{name}"] <= threshold[name], (name, short)


def test_classifier_stop_rule_defaults_are_the_task_familys():
    spec = {f: TaskSpec("T-v0", f, obs_dim=1, act_dim=1) for f in ("velocity", "navigation")}
    cfg = UNIQConfig(**TINY)
    vel, nav = (UNIQ(cfg, spec[f], {}, "cpu", 0).cfg for f in ("velocity", "navigation"))
    assert (vel.ratio_check_every, vel.ratio_gap_mix, vel.ratio_gap_un) == (1000, 0.2, 0.2)
    assert (nav.ratio_check_every, nav.ratio_gap_mix, nav.ratio_gap_un) == (5000, 0.2, 0.5)
    own = UNIQ(UNIQConfig(**TINY, ratio_gap_un=0.3), spec["navigation"], {}, "cpu", 0).cfg
    assert (own.ratio_check_every, own.ratio_gap_un) == (5000, 0.3)  # an explicit value wins
    assert cfg.ratio_check_every is None  # the user's config is left as given
    _, info = pretrained(ratio_steps=5)  # the values used are logged with the pretraining
    assert (info["ratio_check_every"], info["ratio_gap_mix"], info["ratio_gap_un"]) == (
        5000,
        0.2,
        0.5,
    )


def test_every_config_field_says_where_its_default_comes_from():
    """Each UNIQConfig field has a docstring naming its source (the authors' code, the
    paper, or the suite), in words, not file names."""
    import ast
    import inspect
    import re

    from uniq import algorithm

    tree = ast.parse(inspect.getsource(algorithm.UNIQConfig))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr):
            docs[node.target.id] = " ".join(after.value.value.split())
    fields = [f.name for f in dataclasses.fields(UNIQConfig)]
    assert sorted(docs) == sorted(fields)  # every field documented
    sources = ("as the authors' code", "from the authors' code", "paper", "suite")
    for name, doc in docs.items():
        assert any(src in doc for src in sources), (name, doc)
        assert not re.search(r"[\w/]+\.(py|yaml|sh|json)\b", doc), (name, doc)  # no file names


def test_classifier_cache_serves_every_seed_of_the_same_inputs_and_only_those(tmp_path):
    spec = TaskSpec("Gauss-v0", "navigation", obs_dim=1, act_dim=1)

    def run(seed: int, cache: bool = True, data_seed: int = 0, **overrides) -> tuple[UNIQ, dict]:
        kw = dict(hidden=16, ratio_batch=64, ratio_steps=20, **overrides)
        if cache:
            kw["ratio_cache_dir"] = str(tmp_path / "cache")
        sources = gaussian_sources(seed=data_seed, run_seed=seed)
        method = UNIQ(UNIQConfig(**kw), spec, sources, "cpu", seed)
        return method, method.pretrain()

    def same(a: UNIQ, b: UNIQ) -> bool:
        return all(
            torch.equal(v, getattr(b, n).state_dict()[k])
            for n in a.classifiers
            for k, v in getattr(a, n).state_dict().items()
        )

    first, info0 = run(0)
    second, info1 = run(1)
    assert info0["ratio_cached"] == 0.0 and info1["ratio_cached"] == 1.0
    assert same(first, second)  # seed 1 uses seed 0's classifiers, as the reference
    assert torch.equal(first._tau["mix"], second._tau["mix"])
    assert info1["ratio_steps_c_mix"] == info0["ratio_steps_c_mix"]  # seed 0's log with them
    assert not same(run(1, cache=False)[0], first)  # off: each seed trains its own
    assert run(1, ratio_lr=3e-4)[1]["ratio_cached"] == 0.0  # another config
    assert run(1, data_seed=1)[1]["ratio_cached"] == 0.0  # other data
    # an ablation arm whose critic and actor differ shares the classifiers of its dataset
    assert run(2, actor_weight="advantage", critic_lr=1e-3)[1]["ratio_cached"] == 1.0
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_a_cache_fitted_by_other_code_is_reused_with_a_warning(tmp_path, caplog):
    spec = TaskSpec("Gauss-v0", "navigation", obs_dim=1, act_dim=1)
    cfg = UNIQConfig(hidden=16, ratio_batch=64, ratio_steps=20, ratio_cache_dir=str(tmp_path))

    def load() -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, "uniq.ratio"):
            assert UNIQ(cfg, spec, gaussian_sources(), "cpu", 1).pretrain()["ratio_cached"] == 1.0
        return [r.getMessage() for r in caplog.records]

    UNIQ(cfg, spec, gaussian_sources(), "cpu", 0).pretrain()
    (cache,) = tmp_path.glob("*.pt")
    assert load() == []  # the same code: silent
    payload = torch.load(cache, weights_only=False)
    torch.save({k: v for k, v in payload.items() if k != "code"}, cache)
    assert load() == []  # a cache from before the code was kept (a resumed profile's): silent
    payload["code"] = {"commit": "0123abc", "sha256": "an older ratio.py"}
    torch.save(payload, cache)
    (line,) = load()
    assert "fitted by other code" in line and "0123abc" in line and "delete it" in line


def test_a_cached_fit_does_not_depend_on_the_seed_that_fits_it(tmp_path):
    """Two caches filled by runs of different seeds hold the same classifiers."""
    spec = TaskSpec("Gauss-v0", "navigation", obs_dim=1, act_dim=1)

    def fit(seed: int, cache: str) -> UNIQ:
        cfg = UNIQConfig(hidden=16, ratio_batch=64, ratio_steps=20, ratio_cache_dir=cache)
        method = UNIQ(cfg, spec, gaussian_sources(seed=0, run_seed=seed), "cpu", seed)
        torch.manual_seed(1000 + seed)  # another global stream before the fit, as another run
        method.pretrain()
        return method

    a, b = fit(0, str(tmp_path / "a")), fit(3, str(tmp_path / "b"))
    for n in a.classifiers:
        for k, v in getattr(a, n).state_dict().items():
            assert torch.equal(v, getattr(b, n).state_dict()[k]), (n, k)


@pytest.mark.parametrize("stop_at", [25, 95])  # in c_mix's fit; in c_un's, c_mix done
def test_a_cached_fit_stopped_part_way_resumes_to_the_same_classifiers(
    tmp_path, monkeypatch, caplog, stop_at
):
    """A fit can outlast a working session at the paper's sizes: stopped after a check, it
    resumes from its .partial.pt (kept at each check it passes) and ends with the classifiers,
    steps and gaps of the fit that was never stopped; the partial file is gone after."""
    from uniq.ratio import RatioEstimator

    kw = dict(ratio_check_every=10, ratio_steps=60, ratio_gap_mix=2.0, ratio_gap_un=2.0,
              ratio_check_rows=7)  # fmt: skip
    a, info_a = pretrained(**kw, ratio_cache_dir=str(tmp_path / "a"))
    real, calls = RatioEstimator.bce, []

    def stop(self, *args):
        calls.append(1)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(RatioEstimator, "bce", stop)
    with pytest.raises(KeyboardInterrupt):
        pretrained(**kw, ratio_cache_dir=str(tmp_path / "b"))
    (partial,) = (tmp_path / "b").glob("*.partial.pt")
    partial_step_total = (stop_at - 1) // 10 * 10  # the last check passed, over both fits
    saved = torch.load(partial, weights_only=False)
    assert saved["step"] == partial_step_total % 60
    assert saved["seconds"][0] > 0  # the fit's time so far, which its resume credits to the job
    for rows in saved["rows"].values():  # the check rows alone, not the permutation they open
        assert rows.untyped_storage().nbytes() == 7 * rows.element_size()
    assert saved["code"]["sha256"] == ratio.CODE_SHA256
    # resumed by other code of ratio.py: goes on, with a warning naming the file's commit
    torch.save(dict(saved, code={"commit": "0123abc", "sha256": "older"}), partial)
    calls.clear()
    stop_at = 0  # count only
    jobtimes.take_credit()
    with caplog.at_level(logging.WARNING, "uniq.ratio"):
        b, info_b = pretrained(**kw, ratio_cache_dir=str(tmp_path / "b"))
    assert any(f"{partial} was fitted by other code" in r.getMessage() for r in caplog.records)
    assert jobtimes.take_credit() == tuple(saved["seconds"])
    assert len(calls) == 120 - partial_step_total  # resumed, not refitted from step 1
    assert info_a == info_b and info_a["ratio_steps_c_un"] == 60
    for n in a.classifiers:
        for k, v in getattr(a, n).state_dict().items():
            assert torch.equal(v, getattr(b, n).state_dict()[k]), (n, k)
    assert not list((tmp_path / "b").glob("*.partial.pt"))
    # the cache it ended in is not this code's fit alone: every later load says so
    (cache,) = (tmp_path / "b").glob("*.pt")
    code = torch.load(cache, weights_only=False)["code"]
    assert code["sha256"] != ratio.CODE_SHA256 and code["commit"].startswith("0123abc, resumed by")


def test_classifier_cache_hit_leaves_the_training_batches_as_a_miss(tmp_path):
    """Loading the classifiers must not shift the sampling stream the training loop reads."""
    spec = TaskSpec("Gauss-v0", "navigation", obs_dim=1, act_dim=1)

    def after_pretrain(cache: str | None) -> tuple[dict, torch.Tensor]:
        kw = dict(hidden=16, ratio_batch=64, ratio_steps=20, ratio_cache_dir=cache)
        sources = gaussian_sources(seed=0, run_seed=3)
        info = UNIQ(UNIQConfig(**kw), spec, sources, "cpu", 3).pretrain()
        return info, sources["mix"].generator.get_state()

    cache = str(tmp_path / "cache")
    miss, state_miss = after_pretrain(cache)
    hit, state_hit = after_pretrain(cache)
    _, state_off = after_pretrain(None)
    assert (miss["ratio_cached"], hit["ratio_cached"]) == (0.0, 1.0)
    assert torch.equal(state_hit, state_miss) and torch.equal(state_off, state_miss)


@pytest.mark.parametrize("field", ["ratio_check_every", "ratio_check_rows", "ratio_steps"])
def test_stop_rule_sizes_must_be_positive_integers(field):
    from uniq.method import ConfigError

    with pytest.raises(ConfigError, match=field):
        UNIQConfig(**{field: 0})
