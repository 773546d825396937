"""analysis/ scripts: the state restoring that the recovery analysis rests on."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.tasks import make_env

TASK = "SafetyHalfCheetahVelocity-v1"
TASK_NAV = "SafetyPointGoal1-v0"
ROOT = Path(__file__).resolve().parent.parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "analysis" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def running_observation(steps: int = 30) -> np.ndarray:
    env = make_env(TASK, seed=3)
    obs, _ = env.reset(seed=3)
    for _ in range(steps):
        obs, *_ = env.step(env.action_space.sample())
    return obs


def test_restore_reproduces_the_observation_and_the_next_step():
    recovery = load("recovery")
    obs = running_observation()
    env_a, env_b = make_env(TASK, seed=0), make_env(TASK, seed=1)
    env_a.reset(seed=0)
    env_b.reset(seed=1)
    np.testing.assert_allclose(recovery.restore(env_a, obs), obs, rtol=0, atol=1e-12)
    recovery.restore(env_b, obs)
    action = np.linspace(-1, 1, 6)
    # the state is the whole story: two different envs restored to it step identically
    np.testing.assert_allclose(env_a.step(action)[0], env_b.step(action)[0], atol=1e-12)


def test_follow_measures_slowing_down_from_a_fast_start():
    recovery = load("recovery")
    fast = running_observation().copy()
    fast[8] = 8.0  # x velocity far above the limit

    class Idle:  # no torque: the cheetah coasts to a stop
        def act(self, obs):
            return torch.zeros(len(obs), 6)

    r = recovery.follow(TASK, Idle(), fast[None], steps=100)
    assert r["cost_rate_first"] > 0  # it starts over the limit
    assert r["cost_rate_second"] == 0
    assert abs(r["speed_second"]) < 1.0
    with pytest.raises(SystemExit, match="velocity tasks"):
        recovery.follow("SafetyPointGoal1-v0", Idle(), fast[None], steps=2)


def _bc_runs(root: Path, task: str, algo: str, costs: list[float]) -> None:
    for seed, cost in enumerate(costs):
        run = root / task / "default" / algo / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "eval.json").write_text(f'{{"cost_mean": {cost}}}')


def test_cloneability_bar_from_bc_runs(tmp_path):
    table = load("demonstrator_table")
    task = "SafetyPointGoal1-v0"
    _bc_runs(tmp_path / "a", task, "bc-safe", [10.0, 12.0, 14.0])
    _bc_runs(tmp_path / "a", task, "bc-mix", [40.0, 45.0, 50.0])
    ok = table.cloneability(task, safe_cost=4.0, runs=tmp_path / "a")
    assert ok["bc_safe_cost_mean"] == pytest.approx(12.0) and ok["bc_safe_cost_bound"] == 13.0
    assert ok["bc_safe_close_to_demonstrator"] and ok["bc_mix_clearly_less_safe"]
    assert not table.cloneability(task, safe_cost=3.0, runs=tmp_path / "a")[
        "bc_safe_close_to_demonstrator"
    ]  # 12 > 2 * 3 + 5
    # a mean gap inside three standard errors is not "clearly" less safe
    _bc_runs(tmp_path / "b", task, "bc-safe", [0.0, 30.0, 10.0])
    _bc_runs(tmp_path / "b", task, "bc-mix", [5.0, 50.0, 15.0])
    assert not table.cloneability(task, 20.0, tmp_path / "b")["bc_mix_clearly_less_safe"]
    assert table.cloneability(task, 20.0, tmp_path / "missing") is None
    _bc_runs(tmp_path / "c", task, "bc-safe", [1.0])  # one seed: no standard error
    _bc_runs(tmp_path / "c", task, "bc-mix", [50.0])
    assert table.cloneability(task, 20.0, tmp_path / "c") is None
    # runs on rollouts of another demonstrator than the committed one do not count
    assert table.cloneability(task, 4.0, tmp_path / "a", {"safe": "x", "unsafe": "y"}) is None


def constant_policy(forward: float, members: int | None = None):
    """A Point policy whose deterministic action is (tanh(forward), 0) in every state."""
    from envs.tasks import resolve_task
    from uniq.nets import TanhGaussianPolicy

    spec = resolve_task(TASK_NAV)
    policy = TanhGaussianPolicy(spec.obs_dim, spec.act_dim, 8, 1, members=members)
    with torch.no_grad():
        for p in policy.parameters():
            p.zero_()
        policy.trunk[-1].bias[..., 0] = forward  # the mean of action 0, the forward thrust
    return policy


def test_agent_reach_tells_a_policy_that_leaves_the_arena():
    """Full thrust ahead ends every episode far beyond 3 m from the arena's centre; no thrust
    stays where the episode put the agent, inside the +-1.5 m placement area."""
    from envs.tasks import resolve_task

    reach = load("agent_reach")
    short = resolve_task(TASK_NAV).with_overrides(max_episode_steps=300)
    away = reach.reach(constant_policy(3.0), short, 0, 2)
    still = reach.reach(constant_policy(0.0), short, 0, 2)
    assert away["left"] == 1.0 and away["final"] > 5.0
    assert still["left"] == 0.0 and still["farthest"] < 1.5 * 2**0.5 and abs(still["return"]) < 0.01
    # ahead: blind once beyond 3 m of every object, with the same action seeing and blind
    assert 0.1 < away["blind"] < 1.0 and still["blind"] == 0.0
    for where in ("seeing", "blind"):
        assert away[f"action_{where}"] == pytest.approx([np.tanh(3.0), 0.0], abs=1e-5)
    assert np.isnan(still["action_blind"]).all() and still["magnitude_seeing"][0] == 0.0
    with pytest.raises(SystemExit, match="nor an arena to leave"):
        reach.reach(constant_policy(0.0), TASK, 0, 1)


@pytest.mark.parametrize("members", [None, 2], ids=["one_seed", "batched"])
def test_agent_reach_reads_a_checkpoints_members(tmp_path, members):
    """Each member of a batched job's checkpoint (a one-seed job's policy), on its learning
    curve's episodes."""
    from envs.evaluate import eval_seed_base

    reach = load("agent_reach")
    saved = constant_policy(0.0, members=members)
    with torch.no_grad():
        if members is None:
            saved.trunk[-1].bias[0] = 2.0
        else:
            saved.trunk[-1].bias[1, ..., 0] = 2.0  # member 1 drives, member 0 does not
    seeds = [3] if members is None else [3, 4]
    path = tmp_path / "checkpoint.pt"
    identity = {"seed": seeds if members else 3, "task": TASK_NAV, "obs_norm": False}
    torch.save({"identity": identity, "step": 7, "method": {"actor": saved.state_dict()}}, path)
    got = reach.policies(path)
    assert [(base, task) for _, base, _, task in got] == [
        (eval_seed_base(s), TASK_NAV) for s in seeds
    ]
    obs = torch.randn(5, got[0][2].init_kwargs["obs_dim"])
    for k, (label, _, policy, _) in enumerate(got):
        assert "step 7" in label
        torch.testing.assert_close(policy.act(obs), saved.member(k).act(obs))
    if members:
        assert not torch.equal(got[0][2].act(obs), got[1][2].act(obs))
    identity["obs_norm"] = True  # its actor expects standardised observations: refused
    torch.save({"identity": identity, "step": 7, "method": {"actor": saved.state_dict()}}, path)
    with pytest.raises(SystemExit, match="standardises observations"):
        reach.policies(path)


def test_agent_reach_rolls_out_a_policys_evaluation_episodes(tmp_path):
    """A policy.pt's episodes are its eval.json's; without one, the workflow's evaluation's."""
    from envs.evaluate import eval_seed_base
    from uniq.nets import save_policy

    reach = load("agent_reach")
    path = tmp_path / "policy.pt"
    save_policy(constant_policy(0.0), path, {"seed": 2, "task": TASK_NAV})
    ((_, base, _, task),) = reach.policies(path)
    assert (base, task) == (eval_seed_base(100_002), TASK_NAV)
    (tmp_path / "eval.json").write_text('{"eval_seed_base": 1234}')
    assert reach.policies(path)[0][1] == 1234


def test_the_lidar_columns_of_each_navigation_task():
    """PointButton1: 12 sensor values, then four 16-bin lidars (buttons, goal, hazards,
    gremlins); PointGoal1 (the hazards, vases and goal lidars): 3 x 16 after its sensors. A
    step 3 m beyond every object reads 0 on exactly those columns, not on the sensors."""
    from envs.tasks import lidar_columns

    assert lidar_columns("SafetyPointButton1-v0").tolist() == list(range(12, 76))
    goal = lidar_columns(TASK_NAV)
    assert len(goal) == 48 and goal[-1] == 59
    with pytest.raises(ValueError, match="no lidar"):
        lidar_columns("SafetyHalfCheetahVelocity-v1")
    env = make_env(TASK_NAV)
    near, _ = env.reset(seed=0)
    env.unwrapped.task.agent.engine.data.qpos[:2] = [9.0, 9.0]  # far from every object
    far, *_ = env.step(np.zeros(2, np.float32))
    env.close()
    assert (near[goal] != 0).any() and (far[goal] == 0).all()


def test_blind_rows_counts_rows_episodes_and_labels():
    """D_MIX: episodes of 4 rows (desirable, undesirable, desirable) and 2 rows (desirable,
    ended by a terminal, not a timeout); rows 1, 2 (episode 0), 5 (episode 1) and 9 (episode 2)
    have every lidar 0. D_UN: one blind row of 4."""
    from uniq.data import OfflineData

    blind = load("blind_rows")
    columns = np.array([2, 3])

    def data(obs_rows, labels, ends):
        n = len(labels)
        obs = np.ones((n, 4), np.float32)
        obs[np.ix_(obs_rows, columns)] = 0
        terminals, timeouts = np.zeros(n, np.float32), np.zeros(n, np.float32)
        timeouts[ends[:-1]], terminals[ends[-1]] = 1, 1
        z = np.zeros(n, np.float32)
        return OfflineData(
            obs, np.zeros((n, 2), np.float32), z, z, obs, terminals, timeouts, labels
        )

    labels = np.repeat([1.0, 0.0, 1.0, 1.0], [4, 4, 4, 2]).astype(np.float32)
    mix = data([1, 2, 5, 9], labels, [3, 7, 11, 13])
    un = data([0], np.zeros(4, np.float32), [1, 3])
    assert blind.episode_ids(mix).tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 2
    s = blind.summary(un, mix, columns)
    assert s == {
        "mix_rows": 4, "mix_share": 4 / 14, "desirable_share": 0.75, "episodes": 3,
        "desirable_episodes": 2, "mix_episodes": 4, "mix_desirable_episodes": 3, "un_rows": 1,
    }  # fmt: skip


def test_blind_rows_inverse_square_factor_is_the_trainings():
    """Rows at the floor for s and s' both get W = 0: the cap; the most undesirable-looking
    get W = -R (1 + gamma): 1 / (R (1 + gamma))^2."""
    from types import SimpleNamespace

    blind = load("blind_rows")
    cfg = SimpleNamespace(actor_batch=10, reward_factor=5.0, gamma=0.99, inv_w2_clip=100.0)
    method = SimpleNamespace(cfg=cfg, ratio_q=(0.1, 0.9))
    tau = np.stack([np.linspace(0.05, 1.0, 10)] * 2, 1).astype(np.float32)
    tau[:2] = 0.05  # two rows at the floor: the 10th percentile
    rows, factor = blind.inverse_square_factor(tau, method, 50, np.random.default_rng(0))
    assert rows.shape == factor.shape == (500,)
    at_floor = rows < 2
    assert at_floor.any() and (factor[at_floor] == 100.0).all()
    top = tau[rows, 0] == 1.0
    assert top.any() and np.allclose(factor[top], 1 / (5 * 1.99) ** 2)  # at each batch's top
