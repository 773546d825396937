"""Fixtures shared by several test modules."""

from __future__ import annotations

# isort: off
import uniq  # noqa: F401  (first: pins numpy's SIMD dispatch before numpy loads)

# isort: on

import numpy as np
import pytest
import torch


@pytest.fixture
def fake_rollouts(monkeypatch) -> list[int]:
    """Curve evaluations without environments; returns the list of evaluation seeds seen."""
    from envs import evaluate

    seen = []

    def fake_rollout(act_fn, task, episodes, seed, num_envs, record, progress):
        seen.append(seed)
        actions = act_fn(np.zeros((episodes, 3), np.float32))
        np.random.rand(3), torch.rand(3)  # an env would use RNGs: training must not notice
        n = np.arange(episodes, dtype=float)
        return evaluate.Rollouts(n + actions.sum(), n, np.full(episodes, 10.0))

    monkeypatch.setattr(evaluate, "rollout", fake_rollout)
    monkeypatch.setattr(evaluate, "reference_returns", lambda paths: (0.0, 10.0))
    return seen


def write_dsrl_file(
    path,
    returns_per_step,
    costs_per_step,
    steps: int = 20,
    obs_dim: int = 17,
    act_dim: int = 6,
    flag_dtype=bool,
    column: bool = False,
    keys=None,
    trailing_rows: int = 0,
):
    """A synthetic file in DSRL's HDF5 layout (what DSRL's loader reads), made by the test.

    Episode ``i`` has ``steps`` rows with reward ``returns_per_step[i]`` and cost
    ``costs_per_step[i]`` per step, and ``observations[:, 0] = i`` (its id); its last row is
    flagged in ``timeouts``. ``flag_dtype`` bool or float and ``column`` ([N, 1] rewards,
    costs and flags) mimic DSRL's variants; ``keys`` keeps only those keys;
    ``trailing_rows`` appends an unflagged partial episode (id = number of episodes).
    """
    import h5py

    rng = np.random.default_rng(0)
    lengths = [steps] * len(returns_per_step) + ([trailing_rows] if trailing_rows else [])
    n = sum(lengths)
    ids = np.repeat(np.arange(len(lengths)), lengths)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    obs[:, 0] = ids
    rewards = np.concatenate(
        [np.full(steps, r) for r in returns_per_step] + [np.zeros(trailing_rows)]
    )
    costs = np.concatenate([np.full(steps, c) for c in costs_per_step] + [np.zeros(trailing_rows)])
    timeouts = np.zeros(n)
    timeouts[np.cumsum([steps] * len(returns_per_step)) - 1] = 1
    arrays = {
        "observations": obs,
        "next_observations": np.roll(obs, -1, axis=0),
        "actions": rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        "rewards": rewards.astype(np.float32),
        "costs": costs.astype(np.float32),
        "terminals": np.zeros(n, dtype=flag_dtype),
        "timeouts": timeouts.astype(flag_dtype),
    }
    with h5py.File(path, "w") as f:
        for key, values in arrays.items():
            if keys is not None and key not in keys:
                continue
            if column and values.ndim == 1:
                values = values[:, None]
            f.create_dataset(key, data=values)
    return path


@pytest.fixture
def make_dsrl():
    """:func:`write_dsrl_file`, for tests that build a DSRL-layout file."""
    return write_dsrl_file
