"""Splits: exact counts, disjoint trajectories, labels, determinism, clear failures."""

from __future__ import annotations

import numpy as np
import pytest

from envs.splits import SplitError, split_files
from uniq.cli import main
from uniq.data import OfflineData

TASK = "SafetyHalfCheetahVelocity-v1"  # obs 17, act 6


def _rollouts(first_id: int, episodes: int, cost_per_step: float, desirable: float):
    """Trajectories of 3-6 rows whose observations[:, 0] holds the trajectory id."""
    rng = np.random.default_rng(first_id)
    parts = []
    for i in range(episodes):
        n = int(rng.integers(3, 7))
        obs = rng.normal(size=(n, 17))
        obs[:, 0] = first_id + i
        timeouts = np.zeros(n)
        timeouts[-1] = 1
        parts.append(
            OfflineData(
                observations=obs,
                actions=rng.uniform(-1, 1, (n, 6)),
                rewards=rng.normal(size=n),
                costs=np.full(n, cost_per_step),
                next_observations=obs,
                terminals=np.zeros(n),
                timeouts=timeouts,
                is_desirable=np.full(n, desirable),
            )
        )
    return OfflineData.concatenate(parts, attrs={"env_id": TASK})


@pytest.fixture
def rollouts(tmp_path):
    safe, unsafe = tmp_path / "rollouts_safe.h5", tmp_path / "rollouts_unsafe.h5"
    _rollouts(1000, 12, 0.0, 1.0).save(safe)
    _rollouts(2000, 20, 1.0, 0.0).save(unsafe)
    return safe, unsafe


def _ids(data: OfflineData) -> list[int]:
    """Trajectory ids in file order; also checks every trajectory is intact (one id)."""
    ids = []
    for s in data.episode_slices():
        values = np.unique(data.observations[s, 0])
        assert len(values) == 1, "a trajectory was cut or mixed"
        ids.append(int(values[0]))
    return ids


def test_split_has_exact_counts_disjoint_trajectories_and_labels(rollouts, tmp_path):
    safe, unsafe = rollouts
    out = tmp_path / "variant"
    split_files(TASK, safe, unsafe, 5, 4, 7, seed=0, out_dir=out)
    un, mix = OfflineData.load(out / "un.h5"), OfflineData.load(out / "mix.h5")
    un_ids, mix_ids = _ids(un), _ids(mix)
    assert len(un_ids) == 5 and all(2000 <= i < 2020 for i in un_ids)
    assert sum(i < 2000 for i in mix_ids) == 4 and sum(i >= 2000 for i in mix_ids) == 7
    assert len(set(un_ids) | set(mix_ids)) == 16  # no trajectory used twice
    assert (un.is_desirable == 0).all()
    assert np.array_equal(mix.is_desirable == 1, mix.observations[:, 0] < 2000)
    # D_MIX is shuffled by trajectory, not the safe block then the unsafe block.
    assert [i < 2000 for i in mix_ids] != sorted([i < 2000 for i in mix_ids], reverse=True)
    for data in (un, mix):
        a = data.attrs
        assert (a["n_un"], a["n_mix_desirable"], a["n_mix_undesirable"], a["seed"]) == (5, 4, 7, 0)
        assert a["env_id"] == TASK
        assert a["source_checksums"]["safe"] == OfflineData.load(safe).attrs["checksum"]


def test_split_is_deterministic_per_seed(rollouts, tmp_path):
    safe, unsafe = rollouts
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        split_files(TASK, safe, unsafe, 5, 4, 7, seed=seed, out_dir=tmp_path / name)
        runs[name] = [OfflineData.load(tmp_path / name / f).checksum() for f in ("un.h5", "mix.h5")]
    assert runs["a"] == runs["b"]
    assert runs["a"][0] != runs["c"][0] and runs["a"][1] != runs["c"][1]


def test_asking_for_too_many_trajectories_fails_with_the_numbers(rollouts, tmp_path):
    safe, unsafe = rollouts
    out = tmp_path / "variant"
    with pytest.raises(SplitError) as err:
        split_files(TASK, safe, unsafe, 15, 4, 7, seed=0, out_dir=out)
    msg = str(err.value)
    assert "holds 20 unsafe trajectories" in msg and "asks for 22" in msg
    assert "n_un=15" in msg and "n_mix_undesirable=7" in msg
    with pytest.raises(SplitError, match="holds 12 safe trajectories but the split asks for 13"):
        split_files(TASK, safe, unsafe, 1, 13, 1, seed=0, out_dir=out)
    assert not out.exists()  # nothing partial


def test_no_cost_gap_fails_unless_allowed(tmp_path):
    safe, unsafe = tmp_path / "s.h5", tmp_path / "u.h5"
    _rollouts(1000, 6, 0.9, 1.0).save(safe)
    _rollouts(2000, 6, 1.0, 0.0).save(unsafe)
    with pytest.raises(SplitError, match=r"safe rollouts cost [\d.]+ .* unsafe ones [\d.]+"):
        split_files(TASK, safe, unsafe, 2, 2, 2, seed=0, out_dir=tmp_path / "v")
    assert not (tmp_path / "v").exists()
    split_files(TASK, safe, unsafe, 2, 2, 2, seed=0, out_dir=tmp_path / "v", allow_no_gap=True)
    assert (tmp_path / "v" / "mix.h5").exists()


def test_cli_split(rollouts, tmp_path, caplog):
    safe, unsafe = rollouts
    args = ["split", "--task", TASK, "--safe", str(safe), "--unsafe", str(unsafe), "--seed", "1"]
    out = tmp_path / "cli"
    assert main([*args, "--n-un", "3", "--n-mix-desirable", "2", "--n-mix-undesirable", "2",
                 "--out-dir", str(out)]) == 0  # fmt: skip
    assert OfflineData.load(out / "mix.h5").num_episodes() == 4
    assert main([*args, "--n-un", "30", "--n-mix-desirable", "2", "--n-mix-undesirable", "2",
                 "--out-dir", str(tmp_path / "bad")]) == 2  # fmt: skip
    assert "asks for 32" in caplog.text
