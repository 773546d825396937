"""Fixtures shared by several test modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture
def fake_rollouts(monkeypatch) -> list[int]:
    """Curve evaluations without environments; returns the list of evaluation seeds seen."""
    from uniq import evaluate

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
