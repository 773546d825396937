"""A new method file is discovered by the registry and trains through ``uniq.train.train``.

The method below is the README's "Add a baseline" example, dropped into a temporary folder
named by ``UNIQ_EXTRA_METHODS`` (the registry's extra-folder mechanism; a file in
``baselines/`` is found the same way, by its class attribute ``name``).
"""

from __future__ import annotations

import csv
import textwrap

import numpy as np
import pytest
import torch

from envs.tasks import TaskSpec
from uniq import registry
from uniq.data import OfflineData
from uniq.method import ConfigError
from uniq.nets import load_policy
from uniq.train import train

torch.set_num_threads(1)

SPEC = TaskSpec("Synthetic-v0", "navigation", obs_dim=3, act_dim=2)

EXAMPLE = textwrap.dedent(
    '''
    """BC-MSE: regress tanh(mu(s)) on the D_MIX actions (a deterministic-BC baseline)."""

    from dataclasses import dataclass

    import torch

    from uniq.method import Method
    from uniq.nets import TanhGaussianPolicy


    @dataclass
    class BCMSEConfig:
        batch_size: int = 256
        """Transitions per gradient step."""
        lr: float = 1e-4
        """Adam learning rate."""
        hidden: int = 256
        """Width of the policy's hidden layers."""


    class BCMSE(Method):
        """L = E_{D_MIX} ||tanh(mu(s)) - a||^2."""

        name = "bc-mse"
        display_name = "BC-MSE"
        Config = BCMSEConfig

        def __init__(self, cfg, spec, data, device, seed):
            super().__init__(cfg, spec, data, device, seed)
            self.actor = TanhGaussianPolicy(spec.obs_dim, spec.act_dim, cfg.hidden).to(self.device)
            self.opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)

        def batches(self):
            return {"mix": ("mix", self.cfg.batch_size)}

        def update(self, batch):
            mix = batch["mix"]
            mean, _ = self.actor(mix["observations"])
            loss = ((torch.tanh(mean) - mix["actions"]) ** 2).sum(-1).mean()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            return {"loss": loss.detach()}
    '''
)


def _episodes(n_episodes: int, desirable: bool, rng, length: int = 20) -> OfflineData:
    n = n_episodes * length
    obs = rng.normal(size=(n, SPEC.obs_dim)).astype(np.float32)
    timeouts = np.zeros(n)
    timeouts[length - 1 :: length] = 1
    z = np.zeros(n)
    actions = np.tanh(obs[:, :2] + (0.5 if desirable else -0.5))
    return OfflineData(obs, actions, z, z, obs + 0.1, z, timeouts, np.full(n, float(desirable)))


@pytest.fixture
def extra_folder(tmp_path, monkeypatch):
    folder = tmp_path / "my_methods"
    folder.mkdir()
    (folder / "bc_mse.py").write_text(EXAMPLE)
    monkeypatch.setenv(registry.EXTRA_ENV, str(folder))
    registry.clear_cache()
    yield folder
    registry.clear_cache()


def test_new_method_file_is_discovered_and_trains(extra_folder, tmp_path):
    methods = registry.available()
    assert "bc-mse" in methods
    assert {"bc-mix", "bc-safe", "dwbc", "safedice"} <= set(methods)  # the built-in baselines
    assert registry.get_method("bc-mse").__module__.endswith("bc_mse")

    rng = np.random.default_rng(0)
    un_path, mix_path = tmp_path / "un.h5", tmp_path / "mix.h5"
    _episodes(2, False, rng).save(un_path)
    OfflineData.concatenate([_episodes(2, True, rng), _episodes(2, False, rng)]).save(mix_path)

    out = tmp_path / "run"
    meta = train(
        "bc-mse", SPEC, un_path, mix_path, seed=0, steps=5, out_dir=out,
        overrides={"hidden": 8, "batch_size": 16}, device="cpu", log_every=1, threads=1,
        progress=False,
    )  # fmt: skip
    assert meta["algo"] == "bc-mse" and meta["steps"] == 5
    policy, saved = load_policy(out / "policy.pt")
    assert saved["config"]["hidden"] == 8 and not saved["uses_hidden_labels"]
    assert policy.act(torch.zeros(1, SPEC.obs_dim)).shape == (1, SPEC.act_dim)
    with open(out / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(float(r["loss"])) for r in rows)


def test_unknown_name_lists_the_discovered_ones(extra_folder):
    with pytest.raises(ConfigError, match="bc-mse"):
        registry.get_method("no-such-method")
