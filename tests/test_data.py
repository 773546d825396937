"""OfflineData: HDF5 round trip, validation errors, atomic saves, episode structure, Sampler."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import torch

from envs.tasks import get_task
from uniq.data import KEYS, DatasetError, OfflineData, Sampler


def make_data(n: int = 12, obs_dim: int = 3, act_dim: int = 2, seed: int = 0) -> OfflineData:
    rng = np.random.default_rng(seed)
    timeouts = np.zeros(n)
    timeouts[[3, n - 1]] = 1
    return OfflineData(
        observations=rng.normal(size=(n, obs_dim)),
        actions=rng.uniform(-1, 1, size=(n, act_dim)),
        rewards=rng.normal(size=n),
        costs=rng.integers(0, 2, size=n),
        next_observations=rng.normal(size=(n, obs_dim)),
        terminals=np.zeros(n),
        timeouts=timeouts,
        is_desirable=rng.integers(0, 2, size=n),
        attrs={"env_id": "Toy-v0", "seed": 7, "return_mean": 1.5, "source": {"kind": "safe"}},
    )


def write_raw(path, arrays: dict) -> None:
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)


def raw_arrays(data: OfflineData) -> dict:
    return {k: getattr(data, k) for k in KEYS}


def test_round_trip_is_bit_exact(tmp_path):
    data = make_data()
    path = tmp_path / "d.h5"
    data.save(path)
    back = OfflineData.load(path)
    for key in KEYS:
        original, loaded = getattr(data, key), getattr(back, key)
        assert loaded.dtype == np.float32 and loaded.shape == original.shape
        assert loaded.tobytes() == original.tobytes(), key
    assert back.attrs == data.attrs  # includes the checksum written by save
    assert back.attrs["source"] == {"kind": "safe"} and back.attrs["seed"] == 7
    assert back.checksum() == data.attrs["checksum"]


def test_json_looking_strings_round_trip_and_legacy_files_still_decode(tmp_path):
    data = make_data()
    data.attrs.update(note="[not, json]", listing="[1, 2]", table={"a": [1, 2]})
    data.save(tmp_path / "d.h5")
    back = OfflineData.load(tmp_path / "d.h5").attrs
    assert back["listing"] == "[1, 2]" and back["note"] == "[not, json]"
    assert back["table"] == {"a": [1, 2]} and back["source"] == {"kind": "safe"}
    with h5py.File(tmp_path / "d.h5", "a") as f:  # a file from before the key list existed
        del f.attrs["uniq_json_attrs"]
    legacy = OfflineData.load(tmp_path / "d.h5").attrs
    assert legacy["table"] == {"a": [1, 2]} and legacy["listing"] == [1, 2]


def test_missing_key_is_named(tmp_path):
    arrays = raw_arrays(make_data())
    del arrays["costs"]
    write_raw(tmp_path / "d.h5", arrays)
    with pytest.raises(DatasetError, match=r"missing key\(s\) \['costs'\]"):
        OfflineData.load(tmp_path / "d.h5")


def test_dsrl_file_without_is_desirable_loads_as_all_desirable(tmp_path):
    arrays = raw_arrays(make_data())
    del arrays["is_desirable"]
    write_raw(tmp_path / "d.h5", arrays)
    np.testing.assert_array_equal(OfflineData.load(tmp_path / "d.h5").is_desirable, 1.0)


def test_length_mismatch_is_named(tmp_path):
    arrays = raw_arrays(make_data())
    arrays["rewards"] = arrays["rewards"][:-2]
    write_raw(tmp_path / "d.h5", arrays)
    with pytest.raises(DatasetError, match="length mismatch: 'rewards' has 10 rows"):
        OfflineData.load(tmp_path / "d.h5")


def test_dims_must_match_the_task(tmp_path):
    make_data(obs_dim=3, act_dim=2).save(tmp_path / "d.h5")
    spec = get_task("SafetyPointGoal1-v0")
    with pytest.raises(DatasetError, match="do not match task SafetyPointGoal1-v0"):
        OfflineData.load(tmp_path / "d.h5", spec=spec)
    OfflineData.load(tmp_path / "d.h5", spec=spec.with_overrides(obs_dim=3))  # fits: no error


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected(tmp_path, bad):
    data = make_data()
    data.actions[5, 1] = bad
    data.save(tmp_path / "d.h5")
    with pytest.raises(
        DatasetError, match=r"'actions' holds 1 NaN/inf value\(s\) \(first at row 5\)"
    ):
        OfflineData.load(tmp_path / "d.h5")


def test_a_file_that_is_not_hdf5_is_rejected(tmp_path):
    path = tmp_path / "d.h5"
    path.write_text("observations,actions\n1,2\n")
    with pytest.raises(DatasetError, match="not an HDF5 file"):
        OfflineData.load(path)


def test_a_truncated_hdf5_file_is_rejected(tmp_path):
    path = tmp_path / "d.h5"
    make_data(n=2000).save(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(DatasetError, match="truncated"):
        OfflineData.load(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset file"):
        OfflineData.load(tmp_path / "nope.h5")


def test_changed_content_fails_the_checksum(tmp_path):
    path = tmp_path / "d.h5"
    make_data().save(path)
    with h5py.File(path, "r+") as f:
        f["rewards"][0] = 99.0
    with pytest.raises(DatasetError, match="does not match its stored checksum"):
        OfflineData.load(path)


def test_a_failed_save_leaves_nothing_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "d.h5"
    good = make_data(seed=1)
    good.save(path)
    bad = make_data(seed=2)
    bad.attrs["unserializable"] = object()  # json.dumps fails midway through the write
    with pytest.raises(TypeError):
        bad.save(path)
    assert sorted(os.listdir(tmp_path)) == ["d.h5"]  # no temp file left behind
    assert OfflineData.load(path).checksum() == good.checksum()  # not clobbered
    with pytest.raises(TypeError):
        bad.save(tmp_path / "new.h5")
    assert sorted(os.listdir(tmp_path)) == ["d.h5"]


def test_episode_structure_on_a_hand_made_dataset():
    # Three trajectories: rows 0-1 (terminal), 2-4 (timeout), 5 (no flag: ends with the data).
    n = 6
    data = OfflineData(
        observations=np.arange(n)[:, None],
        actions=np.zeros((n, 1)),
        rewards=[1, 2, 10, 20, 30, 5],
        costs=[0, 1, 1, 1, 0, 4],
        next_observations=np.arange(1, n + 1)[:, None],
        terminals=[0, 1, 0, 0, 0, 0],
        timeouts=[0, 0, 0, 0, 1, 0],
        is_desirable=np.ones(n),
    )
    np.testing.assert_array_equal(data.episode_starts(), [0, 2, 5])
    np.testing.assert_array_equal(data.episode_ends(), [2, 5, 6])
    assert data.num_episodes() == 3
    np.testing.assert_array_equal(data.episode_returns(), [3, 60, 5])
    np.testing.assert_array_equal(data.episode_costs(), [1, 2, 4])
    np.testing.assert_array_equal(data.initial_mask(), [1, 0, 1, 0, 0, 1])
    picked = data.select_episodes([1, 0])  # flagged trajectories keep their boundaries
    np.testing.assert_array_equal(picked.observations[:, 0], [2, 3, 4, 0, 1])
    np.testing.assert_array_equal(picked.episode_returns(), [60, 3])
    both = OfflineData.concatenate([picked, data.select_episodes([2])])
    np.testing.assert_array_equal(both.episode_returns(), [60, 3, 5])
    tensors = data.to_tensors()
    assert set(tensors) == set(KEYS) | {"initial"} and tensors["rewards"].shape == (n,)


def test_selecting_episodes_needs_memory_of_the_order_of_the_data():
    """A split selects most of its rollouts' episodes; its peak memory must stay of the order
    of the data's, not episodes x rows (the paper-scale split once took 23 GB this way)."""
    import tracemalloc

    episodes, length = 300, 300
    data = make_data(episodes * length, obs_dim=2, act_dim=1)
    data.timeouts[:] = 0
    data.timeouts[length - 1 :: length] = 1
    assert data.num_episodes() == episodes
    size = sum(getattr(data, k).nbytes for k in KEYS)
    order = np.random.default_rng(0).permutation(episodes)
    tracemalloc.start()
    try:
        picked = data.select_episodes(order)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(picked.episode_returns(), data.episode_returns()[order])
    assert peak < 4 * size, f"peak {peak / 2**20:.0f} MiB for {size / 2**20:.1f} MiB of data"


def test_sampler_is_reproducible_for_a_seed():
    tensors = make_data(n=50).to_tensors()

    def draws(seed: int) -> list[torch.Tensor]:
        sampler = Sampler(tensors, torch.Generator().manual_seed(seed))
        return [sampler.sample(8)["observations"] for _ in range(3)]

    same, again, other = draws(3), draws(3), draws(4)
    assert all(torch.equal(a, b) for a, b in zip(same, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(same, other, strict=True))
    batch = Sampler(tensors, torch.Generator().manual_seed(0)).sample(8)
    assert batch["actions"].shape == (8, 2) and batch["initial"].shape == (8,)


def test_sampler_refuses_an_empty_dataset():
    empty = {"observations": torch.zeros(0, 3), "rewards": torch.zeros(0)}
    with pytest.raises(DatasetError, match="empty dataset"):
        Sampler(empty, torch.Generator())
