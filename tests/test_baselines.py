"""Baselines on problems with known answers: BC, DWBC, SafeDICE (baselines/)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from baselines.bc import BC, BCSafe
from baselines.dwbc import DWBC, disc_interval, per_dim_log_prob, pu_loss
from baselines.safedice import SafeDICE, safedice_alpha, safedice_reward
from envs.tasks import TaskSpec
from uniq.data import OfflineData, Sampler
from uniq.method import ConfigError, build_config

torch.set_num_threads(1)

SPEC = TaskSpec("Synthetic-v0", "navigation", obs_dim=3, act_dim=2)
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"),
    ),
]


def synthetic(n_episodes: int, desirable: bool, rng: np.random.Generator, length: int = 50):
    """Episodes whose first action coordinate is ~ +0.6 (desirable) or ~ -0.6 (undesirable)."""
    n = n_episodes * length
    obs = rng.normal(size=(n + n_episodes, SPEC.obs_dim)).astype(np.float32)
    keep = np.ones(len(obs), bool)
    keep[np.arange(1, n_episodes + 1) * (length + 1) - 1] = False  # last obs is only a next_obs
    next_idx = np.flatnonzero(keep) + 1
    actions = np.stack(
        [
            np.full(n, 0.6 if desirable else -0.6) + 0.1 * rng.normal(size=n),
            np.tanh(0.5 * obs[keep][:, 0]) + 0.1 * rng.normal(size=n),
        ],
        1,
    ).clip(-1, 1)
    timeouts = np.zeros(n)
    timeouts[length - 1 :: length] = 1
    return OfflineData(
        observations=obs[keep],
        actions=actions,
        rewards=np.zeros(n),
        costs=np.zeros(n),
        next_observations=obs[next_idx],
        terminals=np.zeros(n),
        timeouts=timeouts,
        is_desirable=np.full(n, float(desirable)),
    )


def make_data(device="cpu", seed=0, n_un=4, n_des=4, n_und=4):
    """Samplers for D_UN (undesirable), D_MIX (desirable + undesirable) and the oracle part."""
    rng = np.random.default_rng(seed)
    un = synthetic(n_un, False, rng)
    mix = OfflineData.concatenate([synthetic(n_des, True, rng), synthetic(n_und, False, rng)])
    desirable = mix.select_rows(np.flatnonzero(mix.is_desirable > 0))
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    parts = {"un": un, "mix": mix, "mix_desirable": desirable}
    return {k: Sampler(v.to_tensors(device), gen) for k, v in parts.items()}


def run_updates(method, steps: int) -> dict:
    logs = {}
    for _ in range(steps):
        batch = {k: method.data[src].sample(n) for k, (src, n) in method.batches().items()}
        logs = method.update(batch)
    return logs


# -- BC --------------------------------------------------------------------------------
def linear_gaussian_expert(n: int = 4000):
    """(obs, actions, W, b) with a = tanh(W s + b + 0.1 eps), s ~ N(0, I_3); seeds torch too."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    w_true = np.array([[0.8, -0.5, 0.2], [-0.3, 0.4, 0.9]], np.float32)
    b_true = np.array([0.1, -0.2], np.float32)
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    actions = np.tanh(obs @ w_true.T + b_true + 0.1 * rng.normal(size=(n, 2)))
    return obs, actions, w_true, b_true


def test_bc_recovers_linear_gaussian_expert():
    """a = tanh(W s + b + 0.1 eps): the MLE of a linear tanh-Gaussian policy is (W, b, 0.1)."""
    obs, actions, w_true, b_true = linear_gaussian_expert()
    n = len(obs)
    z = np.zeros(n)
    data = OfflineData(obs, actions, z, z, obs, z, z, np.ones(n))
    gen = torch.Generator().manual_seed(0)
    samplers = {"mix": Sampler(data.to_tensors(), gen)}
    cfg = build_config(BC.Config, {"depth": 0, "lr": 2e-2}, "bc-mix")
    bc = BC(cfg, SPEC, samplers, "cpu", seed=0)
    run_updates(bc, 600)

    layer = bc.actor.trunk[0]  # depth 0: one linear layer -> (mean, log_std)
    w_mean, b_mean = layer.weight[:2].detach().numpy(), layer.bias[:2].detach().numpy()
    np.testing.assert_allclose(w_mean, w_true, atol=0.05)
    np.testing.assert_allclose(b_mean, b_true, atol=0.05)
    _, log_std = bc.actor(torch.as_tensor(obs[:256]))
    assert abs(log_std.mean().item() - math.log(0.1)) < 0.1


def test_bc_safe_is_an_oracle_on_the_desirable_part():
    """BC-safe clones only desirable rows (mean first action ~ +0.6); BC-mix averages (~ 0)."""
    assert BCSafe.uses_hidden_labels and not BC.uses_hidden_labels
    assert "hidden labels" in BCSafe.__doc__ or "oracle" in BCSafe.__doc__.lower()
    torch.manual_seed(0)
    data = make_data()
    means = {}
    for cls in (BC, BCSafe):
        method = cls(build_config(cls.Config, {"lr": 3e-3, "hidden": 32}), SPEC, data, "cpu", 0)
        assert method.batches()["demo"][0] == ("mix_desirable" if cls is BCSafe else "mix")
        run_updates(method, 300)
        obs = data["mix"].tensors["observations"]
        means[cls.name] = method.act(obs)[:, 0].mean()
    assert means["bc-safe"] > 0.45
    assert abs(means["bc-mix"]) < 0.3


# -- DWBC ------------------------------------------------------------------------------
def test_dwbc_pieces_match_hand_computation():
    d_un, d_mix = torch.tensor([0.8]), torch.tensor([0.4])
    expected = 0.5 * -math.log(0.8) - math.log(0.6) - 0.5 * -math.log(0.2)
    assert pu_loss(d_un, d_mix, 0.5).item() == pytest.approx(expected, abs=1e-6)
    data = make_data()
    method = DWBC(DWBC.Config(hidden=16), SPEC, data, "cpu", 0)
    batch = data["mix"].sample(64)
    per_dim = per_dim_log_prob(method.actor, batch["observations"], batch["actions"])
    assert per_dim.shape == (64, SPEC.act_dim)
    torch.testing.assert_close(
        per_dim.sum(-1), method.actor.log_prob(batch["observations"], batch["actions"])
    )


def test_dwbc_weights_lower_on_undesirable_samples():
    torch.manual_seed(0)
    data = make_data()
    cfg = build_config(
        DWBC.Config, {"disc_update_every": 1, "disc_lr": 3e-3, "hidden": 32, "disc_hidden": 32}
    )
    method = DWBC(cfg, SPEC, data, "cpu", 0)
    run_updates(method, 300)
    mix = data["mix"].tensors
    w = method.weights(mix)
    desirable = mix["is_desirable"] > 0
    assert w[~desirable].mean() < 0.3 * w[desirable].mean()


def disc_steps(method: DWBC) -> int:
    """Discriminator optimizer steps taken so far (Adam's per-parameter step count)."""
    state = method.disc_opt.state_dict()["state"]
    return int(state[0]["step"]) if state else 0


def test_dwbc_discriminator_interval_scales_with_run_length():
    # clip(T // 5000, 1, 100): at least the official 5000 steps, at most the published interval
    expected = {None: 100, 50: 1, 9_999: 1, 10_000: 2, 250_000: 50, 500_000: 100, 10**6: 100}
    assert {t: disc_interval(t) for t in expected} == expected
    data = make_data()
    for every, total, want in ((None, 10_000, 5), (None, None, 1), (3, 10_000, 4)):
        cfg = build_config(DWBC.Config, {"hidden": 16, "disc_hidden": 16, "batch_size": 32})
        cfg.disc_update_every = every
        method = DWBC(cfg, SPEC, data, "cpu", 0)
        method.total_steps = total
        run_updates(method, 10)  # a quick-profile run (10k steps) steps it every 2 updates
        assert disc_steps(method) == want, (every, total)
    with pytest.raises(ConfigError, match="disc_update_every"):
        DWBC(build_config(DWBC.Config, {"disc_update_every": 0}), SPEC, data, "cpu", 0)


def test_dwbc_resumed_for_more_steps_keeps_the_interval_it_trained_with():
    data = make_data()
    cfg = build_config(DWBC.Config, {"hidden": 16, "disc_hidden": 16, "batch_size": 32})
    short = DWBC(cfg, SPEC, data, "cpu", 0)
    short.total_steps = 10_000  # every 2, as its pretraining log says
    run_updates(short, 4)
    longer = DWBC(cfg, SPEC, data, "cpu", 0)
    longer.total_steps = 100_000  # alone it would step every 20
    longer.load_state_dict(short.state_dict())
    assert longer.disc_every == 2
    run_updates(longer, 6)
    assert disc_steps(longer) == 5  # updates 0, 2, 4, 6, 8
    old = short.state_dict()
    del old["__extra__"]["disc_every"]  # a checkpoint from before the interval was kept
    again = DWBC(cfg, SPEC, data, "cpu", 0)
    again.total_steps = 100_000
    again.load_state_dict(old)
    assert again.disc_every == 20


def test_dwbc_check_split_needs_eta_above_half_the_undesirable_share():
    ok = build_config(DWBC.Config, {"eta": 0.41})
    DWBC.check_split(ok, 0.8)  # the paper's default split: s = 1600 / 2000
    DWBC.check_split(DWBC.Config(), 0.999)  # published eta 0.5: any s < 1
    for overrides, share in (({"eta": 0.4}, 0.8), ({"eta": 0.45, "weight_cutoff": 0.6}, 0.8)):
        with pytest.raises(ConfigError, match=r"eta=0.4\d* <= weight_cutoff \* s") as err:
            DWBC.check_split(build_config(DWBC.Config, overrides), share)
        assert "n_mix_undesirable" in str(err.value) and "0.5" in str(err.value)


@pytest.mark.parametrize("eta", [0.2, 0.35])
def test_dwbc_discriminator_reaches_eta_over_s_on_undesirable_rows(eta):
    """The PU optimum d = eta rho_UN / rho_MIX is eta / s on rows only D_UN's demonstrator
    produces (here s = 1/2): above the 0.5 cutoff (weight 0) iff eta > s/2."""
    torch.manual_seed(0)
    data = make_data()  # D_MIX: 4 desirable + 4 undesirable episodes, s = 0.5
    cfg = build_config(
        DWBC.Config,
        {"eta": eta, "disc_update_every": 1, "disc_lr": 3e-3, "hidden": 32, "disc_hidden": 32},
    )
    method = DWBC(cfg, SPEC, data, "cpu", 0)
    run_updates(method, 300)
    mix = data["mix"].tensors
    log_pi = per_dim_log_prob(method.actor, mix["observations"], mix["actions"])
    with torch.no_grad():
        d = method._d(mix, log_pi)
    undesirable = mix["is_desirable"] < 0.5
    assert d[undesirable].mean().item() == pytest.approx(eta / 0.5, abs=0.1)
    assert d[~undesirable].mean().item() < 0.2  # d = 0 there, clipped to 0.1
    # 300 steps leave d noisy row by row (10-90%: about +-0.2), so the cutoff is read off the
    # median: most undesirable rows get weight 0 only when eta > s/2.
    assert (d[undesirable].median().item() > 0.5) == (eta > 0.25)


# -- SafeDICE --------------------------------------------------------------------------
def logit(s) -> torch.Tensor:
    return torch.logit(torch.as_tensor(s, dtype=torch.float64))


def test_safedice_alpha_matches_hand_computation():
    # (1 - s)/s = 4, 1, 2/3 -> alpha = 2/3 - margin
    assert safedice_alpha(logit([0.2, 0.5, 0.6]), 1e-5) == pytest.approx(2 / 3 - 1e-5)
    # every (1 - s)/s > 1 -> alpha capped at 1 - margin
    assert safedice_alpha(logit([0.1, 0.2]), 1e-5) == pytest.approx(1 - 1e-5)


def test_safedice_alpha_is_computed_from_float64_logits():
    """alpha = exp(-max c) - margin to float64 precision, from float32 logits; through a
    float32 s = sigmoid(c), 1 - s at s ~ 1 keeps only a few digits (here ~3)."""
    c = torch.tensor([0.0, 2.0, 9.0])
    assert safedice_alpha(c, 1e-5) == pytest.approx(math.exp(-9) - 1e-5, rel=1e-12)


def test_safedice_reward_matches_hand_computation_and_derivation():
    r = safedice_reward(logit([0.2, 0.5, 0.0]), 0.5)
    expected = [math.log(0.7 / 0.4), 0.0, math.log(2.0)]  # (1 - 1.5 s) / (0.5 (1 - s))
    np.testing.assert_allclose(r.numpy(), expected, atol=1e-6)
    # r = log(d*/d_MIX) with d* = (d_MIX - alpha d_UN)/(1 - alpha) and s = d_UN/(d_UN + d_MIX)
    d_un = torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64)
    d_mix = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    c = torch.log(d_un / d_mix)  # = logit(s)
    alpha = safedice_alpha(c, 1e-5)
    assert alpha == pytest.approx(1 / 3 - 1e-5)  # min d_MIX/d_UN = 0.2/0.6
    d_star = (d_mix - alpha * d_un) / (1 - alpha)
    torch.testing.assert_close(
        safedice_reward(c, alpha).double(), torch.log(d_star / d_mix), rtol=1e-5, atol=1e-5
    )
    assert torch.isfinite(safedice_reward(c, alpha)).all()  # the margin keeps the argmax finite


class SaturatedClassifier(torch.nn.Module):
    """c(s, a) = 1000 where the first action is negative (D_MIX's undesirable rows), else -2:
    sigmoid(c) is exactly 1 there, even in float64."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x[..., SPEC.obs_dim : SPEC.obs_dim + 1] < 0, 1000.0, -2.0)


def test_safedice_saturated_classifier_clips_alpha_to_zero_with_a_warning(caplog):
    torch.manual_seed(0)
    data = make_data()
    cfg = build_config(SafeDICE.Config, {"classifier_steps": 0, "hidden": 16, "batch_size": 32})
    method = SafeDICE(cfg, SPEC, data, "cpu", 0)
    method.classifier = SaturatedClassifier()
    with caplog.at_level("WARNING", logger="baselines.safedice"):
        info = method.pretrain()
    # raw alpha = exp(-1000) - 1e-5 = -1e-5 < 0: clipped to 0, named in the warning
    assert info["alpha"] == 0.0
    assert any("raw alpha -1e-05" in r.getMessage() for r in caplog.records), caplog.text
    assert math.isfinite(info["reward_mean"]) and math.isfinite(info["reward_std"])
    r = method.reward(data["mix"].tensors)
    assert torch.equal(r, torch.zeros_like(r))  # alpha = 0: d* = d_MIX, nothing removed
    logs = run_updates(method, 2)
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in logs.values())


def test_safedice_weights_lower_on_undesirable_samples():
    torch.manual_seed(0)
    data = make_data()
    cfg = build_config(
        SafeDICE.Config,
        {
            "classifier_steps": 300,
            "classifier_lr": 1e-3,
            "nu_lr": 1e-3,
            "hidden": 32,
            "batch_size": 128,
        },
    )
    method = SafeDICE(cfg, SPEC, data, "cpu", 0)
    info = method.pretrain()
    assert 0 < info["alpha"] <= 1 and info["s_un"] > info["s_mix"]
    run_updates(method, 50)
    mix = data["mix"].tensors
    w = method.weights(mix)
    desirable = mix["is_desirable"] > 0
    # The gradient penalty keeps the classifier smooth, so weights separate by rank more than
    # by size: nearly every undesirable row weighs less than the median desirable row.
    assert w[~desirable].mean() < 0.7 * w[desirable].mean()
    assert (w[~desirable] < w[desirable].median()).float().mean() > 0.9


# -- every method: one update on CPU tensors (and CUDA tensors where there is a GPU) ---
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", [BC, BCSafe, DWBC, SafeDICE])
def test_update_step_runs_and_checkpoints(cls, device):
    torch.manual_seed(0)
    data = make_data(device)
    overrides = {"hidden": 16, "batch_size": 32}
    if cls is SafeDICE:
        overrides["classifier_steps"] = 2
    method = cls(build_config(cls.Config, overrides), SPEC, data, device, 0)
    method.pretrain()
    before = [p.detach().clone() for p in method.actor.parameters()]
    logs = run_updates(method, 2)
    assert logs and all(torch.isfinite(torch.as_tensor(v)).all() for v in logs.values())
    assert any(
        not torch.equal(a, p) for a, p in zip(before, method.actor.parameters(), strict=True)
    )
    assert method.act(np.zeros((4, SPEC.obs_dim), np.float32)).shape == (4, SPEC.act_dim)

    clone = cls(build_config(cls.Config, overrides), SPEC, data, device, 1)
    clone.load_state_dict(method.state_dict())
    obs = data["mix"].tensors["observations"][:8]
    torch.testing.assert_close(clone.actor(obs)[0], method.actor(obs)[0])
    assert clone.extra_state() == method.extra_state()
