"""Property-based tests (hypothesis): the HDF5 loader and the split builder on random inputs.

- ``OfflineData.save`` / ``load`` round-trip any shape, content, episode boundaries and
  attributes bit for bit, and any NaN/inf put anywhere makes ``load`` raise DatasetError;
- ``split_files`` on random rollouts files gives exactly the asked counts, disjoint intact
  trajectories and the right labels, and fails (SplitError, naming the numbers) exactly
  when more trajectories are asked than exist.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from envs.splits import SplitError, split_files
from envs.tasks import TaskSpec
from uniq.data import KEYS, DatasetError, OfflineData

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FLOATS = st.floats(width=32, allow_nan=False, allow_infinity=False)  # any finite float32
SCALARS = (
    st.integers(-(2**62), 2**62)
    | st.integers(-(2**62), 2**62).map(np.int64)  # counts computed with NumPy
    | st.booleans().map(np.bool_)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
    | st.sampled_from(["[1, 2]", "{}", '{"a": 1}', "[oops"])  # strings that look like JSON
)
ATTRS = st.dictionaries(
    st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10).filter(
        lambda k: k not in ("checksum", "uniq_json_attrs")  # save() sets them
    ),
    SCALARS
    | st.lists(st.integers(-1000, 1000) | st.text("xyz", max_size=3), max_size=4)
    | st.dictionaries(
        st.text("ab", min_size=1, max_size=2), st.integers(0, 9).map(np.int32), max_size=3
    ),
    max_size=5,
)


@st.composite
def datasets(draw) -> OfflineData:
    n = draw(st.integers(0, 30))
    obs_dim, act_dim = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    arr = lambda *shape: draw(hnp.arrays(np.float32, shape, elements=FLOATS))  # noqa: E731
    flags = lambda: draw(hnp.arrays(np.float32, n, elements=st.sampled_from([0.0, 1.0])))  # noqa: E731
    return OfflineData(
        observations=arr(n, obs_dim),
        actions=arr(n, act_dim),
        rewards=arr(n),
        costs=arr(n),
        next_observations=arr(n, obs_dim),
        terminals=flags(),  # random episode boundaries
        timeouts=flags(),
        is_desirable=flags(),
        attrs=draw(ATTRS),
    )


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint32)  # -0.0 != 0.0, subnormals kept


@SETTINGS
@given(data=datasets())
def test_hdf5_round_trip_is_bit_exact(data):
    with tempfile.TemporaryDirectory() as tmp:
        data.save(Path(tmp) / "d.h5")
        back = OfflineData.load(Path(tmp) / "d.h5")
    for key in KEYS:
        a, b = getattr(data, key), getattr(back, key)
        assert b.dtype == np.float32 and b.shape == a.shape, key
        assert np.array_equal(_bits(a), _bits(b)), key
    assert back.attrs == data.attrs  # incl. the checksum save() added
    assert back.num_episodes() == data.num_episodes()
    assert [(s.start, s.stop) for s in back.episode_slices()] == [
        (s.start, s.stop) for s in data.episode_slices()
    ]


@SETTINGS
@given(
    data=datasets().filter(lambda d: len(d) > 0),
    key=st.sampled_from(KEYS),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
    where=st.integers(0, 10**6),
)
def test_any_non_finite_value_is_rejected(data, key, bad, where):
    array = getattr(data, key)
    flat = array.reshape(-1)
    index = where % flat.size
    flat[index] = bad
    row = index // (array.shape[1] if array.ndim == 2 else 1)
    with tempfile.TemporaryDirectory() as tmp:
        data.save(Path(tmp) / "d.h5")
        with pytest.raises(DatasetError) as err:
            OfflineData.load(Path(tmp) / "d.h5")
    message = str(err.value)
    assert f"'{key}' holds 1 NaN/inf value(s) (first at row {row})" in message
    assert "d.h5" in message and "regenerate" in message


# ---------------------------------------------------------------------------- splits
SPEC = TaskSpec("Toy-v0", "velocity", obs_dim=2, act_dim=1)


def _rollouts(lengths: list[int], first_id: int, cost: float, unflagged_last: bool):
    """Trajectories whose observations[:, 0] is the trajectory id, [:, 1] the step."""
    ids = np.repeat(np.arange(first_id, first_id + len(lengths)), lengths)
    steps = np.concatenate([np.arange(n) for n in lengths])
    ends = np.cumsum(lengths) - 1
    terminals, timeouts = np.zeros(len(ids)), np.zeros(len(ids))
    timeouts[ends[::2]], terminals[ends[1::2]] = 1, 1  # both kinds of ending
    if unflagged_last:  # a file may end without a flag (the last trajectory is closed at len)
        timeouts[ends[-1]] = terminals[ends[-1]] = 0
    obs = np.stack([ids, steps], axis=1)
    return OfflineData(
        observations=obs,
        actions=steps[:, None] / 10,
        rewards=ids,
        costs=np.full(len(ids), cost),
        next_observations=obs + 0.5,
        terminals=terminals,
        timeouts=timeouts,
        is_desirable=np.full(len(ids), 0.5),  # the split must overwrite the label
        attrs={"env_id": SPEC.name},
    )


def _trajectories(data: OfflineData) -> list[int]:
    """Trajectory ids in order; checks each one is whole and unchanged."""
    ids = []
    for s in data.episode_slices():
        traj = data.observations[s]
        assert len(np.unique(traj[:, 0])) == 1, "a trajectory was cut or merged"
        assert np.array_equal(traj[:, 1], np.arange(len(traj))), "rows lost or reordered"
        ids.append(int(traj[0, 0]))
    return ids


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    safe_lengths=st.lists(st.integers(1, 5), min_size=1, max_size=10),
    unsafe_lengths=st.lists(st.integers(1, 5), min_size=1, max_size=10),
    n_un=st.integers(1, 12),
    n_des=st.integers(0, 12),
    n_undes=st.integers(0, 12),
    seed=st.integers(0, 2**31),
    unflagged=st.booleans(),
)
def test_split_counts_disjointness_labels_and_too_many(
    safe_lengths, unsafe_lengths, n_un, n_des, n_undes, seed, unflagged
):
    n_safe, n_unsafe = len(safe_lengths), len(unsafe_lengths)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _rollouts(safe_lengths, 1000, 0.0, unflagged).save(tmp / "rollouts_safe.h5")
        _rollouts(unsafe_lengths, 2000, 1.0, unflagged).save(tmp / "rollouts_unsafe.h5")
        run = lambda: split_files(  # noqa: E731
            SPEC, tmp / "rollouts_safe.h5", tmp / "rollouts_unsafe.h5", n_un, n_des, n_undes,
            seed, tmp / "v",
        )  # fmt: skip
        too_many = n_des > n_safe or n_un + n_undes > n_unsafe
        if n_des + n_undes == 0:
            with pytest.raises(SplitError, match="D_MIX would be empty"):
                run()
            return
        if too_many:
            with pytest.raises(SplitError) as err:
                run()
            kind, have, asked = (
                ("safe", n_safe, n_des) if n_des > n_safe else ("unsafe", n_unsafe, n_un + n_undes)
            )
            assert f"holds {have} {kind} trajectories but the split asks for {asked}" in str(
                err.value
            )
            assert not (tmp / "v").exists()  # nothing written
            return
        run()
        un, mix = OfflineData.load(tmp / "v/un.h5"), OfflineData.load(tmp / "v/mix.h5")

    un_ids, mix_ids = _trajectories(un), _trajectories(mix)
    assert len(un_ids) == n_un and all(2000 <= i < 2000 + n_unsafe for i in un_ids)
    mix_safe = [i for i in mix_ids if i < 2000]
    mix_unsafe = [i for i in mix_ids if i >= 2000]
    assert len(mix_safe) == n_des and len(mix_unsafe) == n_undes
    all_ids = un_ids + mix_ids
    assert len(set(all_ids)) == len(all_ids), "a trajectory is used twice"
    assert np.all(un.is_desirable == 0)
    assert np.array_equal(mix.is_desirable, (mix.observations[:, 0] < 2000).astype(np.float32))
    lengths = {1000 + i: n for i, n in enumerate(safe_lengths)}
    lengths |= {2000 + i: n for i, n in enumerate(unsafe_lengths)}
    assert len(un) + len(mix) == sum(lengths[i] for i in all_ids)
    assert (un.attrs["n_un"], mix.attrs["n_mix_desirable"], mix.attrs["n_mix_undesirable"]) == (
        n_un, n_des, n_undes,
    )  # fmt: skip
