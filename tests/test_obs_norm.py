"""Observation standardisation: one implementation, applied to the data once, carried by
every policy that acts in an environment (recipe point 0 of design.md section 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from envs.tasks import TaskSpec, get_task
from uniq import registry
from uniq.data import OfflineData, observation_stats
from uniq.nets import TanhGaussianPolicy, load_policy, save_policy, with_obs_norm
from uniq.sources import make_sources
from uniq.train import train

torch.set_num_threads(1)

VELOCITY = TaskSpec("TinyVelocity-v0", "velocity", obs_dim=3, act_dim=2, obs_normalize=True)
NAVIGATION = TaskSpec("TinyNav-v0", "navigation", obs_dim=3, act_dim=2)


def data_at(shift: float, scale: float, n_episodes: int, seed: int, desirable: float, T=10):
    rng = np.random.default_rng(seed)
    n = n_episodes * T
    obs = (shift + scale * rng.normal(size=(n, 3))).astype(np.float32)
    nxt = (shift + scale * rng.normal(size=(n, 3))).astype(np.float32)
    act = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    timeouts = (np.arange(n) % T == T - 1).astype(np.float32)
    zeros = np.zeros(n, np.float32)
    return OfflineData(obs, act, zeros, zeros, nxt, zeros, timeouts, np.full(n, desirable))


@pytest.fixture
def files(tmp_path):
    # Far from zero mean, unit-free scales: standardisation changes every input a lot.
    un = data_at(100.0, 30.0, 3, 0, 0.0)
    mix = OfflineData.concatenate([data_at(50.0, 10.0, 3, 1, 1.0), data_at(100.0, 30.0, 3, 2, 0.0)])
    mix.attrs.update(n_un=3, n_mix_desirable=3, n_mix_undesirable=3)
    un.save(tmp_path / "un.h5")
    mix.save(tmp_path / "mix.h5")
    return tmp_path / "un.h5", tmp_path / "mix.h5", un, mix


def test_stats_are_over_mix_and_un_observations_together(files):
    *_, un, mix = files
    mean, std = observation_stats(mix, un)
    both = np.concatenate([mix.observations, un.observations]).astype(np.float64)
    np.testing.assert_allclose(mean, both.mean(0))
    np.testing.assert_allclose(std, both.std(0))


def test_sources_hold_standardised_observations_and_next_observations(files):
    *_, un, mix = files
    gen = torch.Generator().manual_seed(0)
    sources = make_sources(un, mix, torch.device("cpu"), gen, obs_norm=True)
    mean, std = observation_stats(mix, un)
    for name, d in (("un", un), ("mix", mix)):
        t = sources[name].tensors
        for key in ("observations", "next_observations"):
            want = (getattr(d, key).astype(np.float64) - mean) / (std + 1e-3)
            np.testing.assert_allclose(t[key].numpy(), want, rtol=1e-5, atol=1e-5)
    raw = make_sources(un, mix, torch.device("cpu"), gen)
    assert raw.obs_norm is None
    np.testing.assert_array_equal(raw["un"].tensors["observations"].numpy(), un.observations)


def test_with_obs_norm_acts_on_raw_observations_as_the_trained_policy_on_standardised_ones():
    torch.manual_seed(0)
    policy = TanhGaussianPolicy(3, 2, hidden=8)
    mean, std = np.array([1.0, -2.0, 30.0]), np.array([0.5, 2.0, 10.0])
    deployed = with_obs_norm(policy, mean, std)
    raw = torch.randn(5, 3) * 10
    standardised = (raw - torch.tensor(mean, dtype=torch.float32)) / (
        torch.tensor(std, dtype=torch.float32) + 1e-3
    )
    torch.testing.assert_close(deployed.act(raw), policy.act(standardised))


def test_policy_files_with_and_without_statistics_load(tmp_path):
    plain = TanhGaussianPolicy(3, 2, hidden=8)
    save_policy(plain, tmp_path / "plain.pt", {})
    assert load_policy(tmp_path / "plain.pt")[0].obs_norm is None  # older files keep loading
    deployed = with_obs_norm(plain, np.ones(3), 2 * np.ones(3))
    save_policy(deployed, tmp_path / "norm.pt", {})
    loaded, _ = load_policy(tmp_path / "norm.pt")
    torch.testing.assert_close(loaded.obs_norm.std, torch.full((3,), 2.0))
    x = torch.randn(4, 3)
    torch.testing.assert_close(loaded.act(x), deployed.act(x))


@pytest.mark.parametrize("algo", ["bc-mix", "uniq"])
def test_a_standardised_run_saves_a_policy_that_standardises_raw_observations(
    files, tmp_path, algo
):
    un_path, mix_path, un, mix = files
    small = {"hidden": 16}
    if algo == "uniq":
        small.update(batch_mix=16, batch_un=16, actor_batch=32, ratio_batch=32, ratio_steps=5)
    train(algo, VELOCITY, un_path, mix_path, 0, 5, tmp_path / "run", small, device="cpu",
          progress=False)  # fmt: skip
    policy, _ = load_policy(tmp_path / "run/policy.pt")
    mean, std = observation_stats(mix, un)
    assert policy.obs_norm is not None, (
        "a policy trained on standardised data must carry its statistics"
    )
    np.testing.assert_allclose(policy.obs_norm.mean.numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(policy.obs_norm.std.numpy(), std, rtol=1e-6)
    assert yaml.safe_load((tmp_path / "run/config.yaml").read_text())["obs_norm"] is True

    # The method's own act() takes raw observations too, and agrees with the policy file.
    gen = torch.Generator().manual_seed(0)
    sources = make_sources(un, mix, torch.device("cpu"), gen, obs_norm=True)
    method = registry.get_method(algo)(
        registry.get_method(algo).Config(**small), VELOCITY, sources, torch.device("cpu"), 0
    )
    method.policy().trunk.load_state_dict(policy.trunk.state_dict())
    raw = un.observations[:7]
    np.testing.assert_allclose(
        method.act(raw), policy.act(torch.as_tensor(raw)).numpy(), rtol=1e-5, atol=1e-6
    )


def test_navigation_tasks_train_on_raw_observations_by_default(files, tmp_path):
    un_path, mix_path, *_ = files
    train("bc-mix", NAVIGATION, un_path, mix_path, 0, 3, tmp_path / "nav", {"hidden": 16},
          device="cpu", progress=False)  # fmt: skip
    assert load_policy(tmp_path / "nav/policy.pt")[0].obs_norm is None
    train("bc-mix", NAVIGATION, un_path, mix_path, 0, 3, tmp_path / "on", {"hidden": 16},
          device="cpu", progress=False, obs_norm=True)  # fmt: skip
    assert load_policy(tmp_path / "on/policy.pt")[0].obs_norm is not None


def test_task_defaults_follow_the_reference_per_family():
    assert get_task("SafetyHalfCheetahVelocity-v1").obs_normalize
    assert get_task("SafetyAntVelocity-v1").obs_normalize
    for name in ("SafetyPointGoal1-v0", "SafetyCarButton1-v0"):
        assert not get_task(name).obs_normalize
