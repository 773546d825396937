"""Rollout engine and metrics: hand-computed metrics, vectorized == sequential, eval.json, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from envs.evaluate import (
    episode_metrics,
    eval_seed_base,
    evaluate_policy_file,
    policy_act_fn,
    reference_returns,
    rollout,
)
from envs.tasks import get_task
from uniq.atomic import file_sha256
from uniq.cli import main
from uniq.data import DatasetError, OfflineData
from uniq.nets import TanhGaussianPolicy, save_policy

torch.set_num_threads(1)

CONTRACT_FIELDS = {
    "algo", "env", "variant", "seed", "episodes", "return_mean", "return_std", "cost_mean",
    "cost_cvar10", "cost_rate", "return_normalized", "cost_normalized", "steps", "wall_time_s",
    "git_commit", "dataset_checksums", "variant_params", "uses_hidden_labels", "cost_limit",
    "return_min", "return_max",
}  # fmt: skip


def short(name: str, steps: int = 40):
    return get_task(name).with_overrides(max_episode_steps=steps)


def steer(obs: np.ndarray) -> np.ndarray:
    """A fixed deterministic policy, computed row by row (no batch-size-dependent rounding).

    Navigation: full thrust, turning with the sine of an observation (meets a hazard in
    episode 1 of seed 0 within 60 steps); HalfCheetah: a squashed sine of the observation.
    """
    if obs.shape[1] > 20:
        return np.stack([np.ones(len(obs)), np.sin(3 * obs[:, 3])], axis=1)
    return np.tanh(3 * np.sin(2 * obs[:, :6] + np.arange(6)) + 0.5)


# ---------------------------------------------------------------------- metrics
def test_metrics_on_hand_computed_episodes():
    costs = np.arange(11.0)  # 11 episodes: ceil(1.1) = 2 worst -> (10 + 9) / 2
    returns = np.array([2.0, 4.0] + [3.0] * 9)
    lengths = np.full(11, 10)
    m = episode_metrics(returns, costs, lengths, cost_limit=25.0, return_min=1.0, return_max=5.0)
    assert m["cost_cvar10"] == 9.5
    assert m["return_mean"] == 3.0 and m["cost_mean"] == 5.0
    assert m["return_std"] == pytest.approx(math.sqrt(2 / 11))  # population std
    assert m["cost_std"] == pytest.approx(math.sqrt(10.0))
    assert m["cost_rate"] == pytest.approx(55 / 110)
    assert m["return_normalized"] == pytest.approx((3 - 1) / (5 - 1))
    assert m["cost_normalized"] == pytest.approx(5 / 25)
    assert m["episodes"] == 11


def test_cvar_of_fewer_than_ten_episodes_is_the_worst_one():
    m = episode_metrics([0, 0, 0], [4.0, 30.0, 1.0], [5, 5, 5], cost_limit=10.0)
    assert m["cost_cvar10"] == 30.0
    assert math.isnan(m["return_normalized"])  # no reference returns
    m = episode_metrics(np.zeros(20), np.arange(20.0), np.ones(20), cost_limit=1.0)
    assert m["cost_cvar10"] == 18.5  # ceil(2.0) = 2 worst: 19 and 18


def test_degenerate_reference_returns_are_refused():
    with pytest.raises(ValueError, match="cannot normalize"):
        episode_metrics([1.0], [0.0], [1], 25.0, return_min=2.0, return_max=2.0)


def toy_rollouts(returns: list[float], attrs: dict | None = None) -> OfflineData:
    """Trajectories of two steps each, with the given returns."""
    n = 2 * len(returns)
    rewards = np.repeat(np.asarray(returns) / 2, 2)
    return OfflineData(
        observations=np.zeros((n, 17)),
        actions=np.zeros((n, 6)),
        rewards=rewards,
        costs=np.zeros(n),
        next_observations=np.zeros((n, 17)),
        terminals=np.zeros(n),
        timeouts=np.tile([0, 1], len(returns)),
        is_desirable=np.ones(n),
        attrs=attrs or {},
    )


def test_reference_returns_from_attrs_and_from_trajectories(tmp_path):
    toy_rollouts([0.0, 10.0], {"return_min": -50.0, "return_max": 100.0}).save(tmp_path / "a.h5")
    toy_rollouts([-80.0, 3.0, 40.0]).save(tmp_path / "b.h5")
    assert reference_returns([tmp_path / "a.h5"]) == (-50.0, 100.0)  # attrs win
    assert reference_returns([tmp_path / "b.h5"]) == (-80.0, 40.0)
    assert reference_returns([tmp_path / "a.h5", tmp_path / "b.h5"]) == (-80.0, 100.0)
    toy_rollouts([7.0, 7.0]).save(tmp_path / "flat.h5")
    with pytest.raises(DatasetError, match=r"flat.h5: reference returns R_min=7.0 >= R_max=7.0"):
        reference_returns([tmp_path / "flat.h5"])


# ---------------------------------------------------------------------- rollouts
@pytest.mark.parametrize(
    "name, workers",
    [
        ("SafetyHalfCheetahVelocity-v1", "0"),
        ("SafetyPointGoal1-v0", "0"),
        ("SafetyPointGoal1-v0", "2"),
    ],
)
def test_vectorized_rollout_gives_the_same_episodes_as_one_env(name, workers, monkeypatch):
    spec = short(name, 60)
    one = rollout(steer, spec, 4, seed=0, num_envs=1, progress=False)
    monkeypatch.setenv("UNIQ_ENV_WORKERS", workers)  # in-process or 2 worker processes
    many = rollout(steer, spec, 4, seed=0, num_envs=3, progress=False)
    np.testing.assert_array_equal(one.episode_returns, many.episode_returns)
    np.testing.assert_array_equal(one.episode_costs, many.episode_costs)
    np.testing.assert_array_equal(one.episode_lengths, [60] * 4)
    np.testing.assert_array_equal(many.episode_lengths, [60] * 4)
    assert len(set(one.episode_returns.tolist())) == 4  # each episode has its own seed
    if spec.family == "navigation":
        assert one.episode_costs[1] > 0  # costs are compared too, not only zeros
    # Episode i is seed + i: starting one later shifts the episodes by one.
    shifted = rollout(steer, spec, 2, seed=1, num_envs=2, progress=False)
    np.testing.assert_array_equal(shifted.episode_returns, one.episode_returns[1:3])


def test_vectorized_rollout_of_a_network_policy_is_exact():
    spec = short("SafetyPointGoal1-v0", 30)
    torch.manual_seed(0)
    act = policy_act_fn(TanhGaussianPolicy(spec.obs_dim, spec.act_dim))
    obs = np.random.default_rng(0).normal(size=(5, spec.obs_dim)).astype(np.float32)
    rows = np.concatenate([act(obs[i : i + 1]) for i in range(5)])
    np.testing.assert_array_equal(act(obs), rows)  # a row's action ignores the batch size
    one = rollout(act, spec, 3, seed=0, num_envs=1, progress=False)
    many = rollout(act, spec, 3, seed=0, num_envs=3, progress=False)
    np.testing.assert_array_equal(one.episode_returns, many.episode_returns)


def test_recorded_transitions_match_the_episodes():
    spec = short("SafetyPointGoal1-v0", 60)
    out = rollout(steer, spec, 3, seed=0, num_envs=2, record=True, progress=False)
    data = out.data
    assert out.episode_costs.sum() > 0  # this policy and seed meet a hazard
    assert len(data) == 180 and data.obs_dim == spec.obs_dim and data.act_dim == spec.act_dim
    np.testing.assert_array_equal(data.episode_ends(), [60, 120, 180])
    np.testing.assert_allclose(data.episode_returns(), out.episode_returns, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(data.episode_costs(), out.episode_costs)
    np.testing.assert_array_equal(data.timeouts[[59, 119, 179]], 1)
    assert data.timeouts.sum() == 3 and data.terminals.sum() == 0
    np.testing.assert_array_equal(data.is_desirable, 1)
    np.testing.assert_array_equal(data.next_observations[:59], data.observations[1:60])
    assert data.attrs == {"env_id": spec.name, "seed": 0}
    # The first observation is the reset of seed 0, the actions those of the policy.
    first = rollout(steer, spec, 1, seed=0, record=True, progress=False).data
    np.testing.assert_array_equal(first.observations, data.observations[:60])
    np.testing.assert_allclose(data.actions, steer(data.observations), atol=1e-6)


def test_actions_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"expected \(1, 6\)"):
        rollout(lambda obs: np.zeros((1, 2)), short("SafetyHalfCheetahVelocity-v1", 3), 1, 0)


# ---------------------------------------------------------------------- eval.json and CLI
def test_eval_json_has_every_contract_field(tmp_path):
    spec = short("SafetyHalfCheetahVelocity-v1", 25)
    torch.manual_seed(0)
    meta = {
        "algo": "uniq",
        "base_algo": "uniq",
        "task": spec.name,
        "variant": "default",
        "seed": 3,
        "steps": 1234,
        "wall_time_s": 5.5,
        "git_commit": "abc123",
        "dataset_checksums": {"un": "u" * 8, "mix": "m" * 8},
        "variant_params": {"n_un": 100, "n_mix_desirable": 400, "n_mix_undesirable": 1600},
        "config": {"lr": 3e-4},
        "uses_hidden_labels": False,
    }
    save_policy(TanhGaussianPolicy(spec.obs_dim, spec.act_dim), tmp_path / "policy.pt", meta)
    toy_rollouts([-100.0, 50.0]).save(tmp_path / "ref.h5")
    out = tmp_path / "run" / "eval.json"
    record = evaluate_policy_file(
        tmp_path / "policy.pt", spec, 2, 3, [tmp_path / "ref.h5"], 2, out, progress=False
    )
    written = json.loads(out.read_text())
    assert written == record
    assert CONTRACT_FIELDS <= set(written)
    for key in ("algo", "variant", "seed", "steps", "wall_time_s", "git_commit"):
        assert written[key] == meta[key]
    assert written["dataset_checksums"] == meta["dataset_checksums"]
    assert written["variant_params"] == meta["variant_params"]
    assert written["env"] == spec.name and written["episodes"] == 2
    assert (written["return_min"], written["return_max"]) == (-100.0, 50.0)
    assert written["cost_limit"] == spec.cost_limit
    assert written["return_normalized"] == pytest.approx((written["return_mean"] + 100) / 150)
    assert written["eval_seed_base"] == eval_seed_base(3) == 10_003_000
    assert written["policy_sha256"] == file_sha256(tmp_path / "policy.pt")
    assert [p.name for p in out.parent.iterdir()] == ["eval.json"]  # no temp files left


def test_a_policy_for_another_task_is_refused(tmp_path):
    spec = get_task("SafetyPointGoal1-v0")
    save_policy(TanhGaussianPolicy(60, 2), tmp_path / "p.pt", {"algo": "bc", "task": spec.name})
    with pytest.raises(ValueError, match="trained on SafetyPointGoal1-v0"):
        evaluate_policy_file(tmp_path / "p.pt", "SafetyHalfCheetahVelocity-v1", 1, 0)


def test_cli_evaluates_the_random_policy(tmp_path, capsys):
    task = "SafetyHalfCheetahVelocity-v1"
    args = ["evaluate", "--policy", "random", "--task", task, "--episodes", "1"]
    assert main(args + ["--num-envs", "1", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)  # NaN is read back as float nan
    assert printed["algo"] == "random" and printed["env"] == task and printed["seed"] == 0
    assert math.isnan(printed["return_normalized"])
    toy_rollouts([-900.0, 100.0]).save(tmp_path / "ref.h5")
    out = tmp_path / "eval.json"
    extra = ["--reference", str(tmp_path / "ref.h5"), "--out", str(out), "--no-progress"]
    assert main(args + extra) == 0
    written = json.loads(out.read_text())
    assert CONTRACT_FIELDS - {"dataset_checksums", "variant_params"} <= set(written)
    assert written["return_mean"] == printed["return_mean"]  # same seed, same episodes
    assert written["return_normalized"] == pytest.approx((written["return_mean"] + 900) / 1000)


def test_cli_reports_a_bad_reference_file(tmp_path, caplog):
    bad = tmp_path / "ref.h5"
    bad.write_text("not hdf5")
    code = main(["evaluate", "--policy", "random", "--task", "SafetyPointGoal1-v0",
                 "--reference", str(bad), "--no-progress"])  # fmt: skip
    assert code == 2
    assert "not an HDF5 file" in caplog.text
