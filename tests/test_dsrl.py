"""DSRL files as a data source: the authors' split rule, DSRL's variants, and every bad input."""

from __future__ import annotations

import hashlib
import logging

import h5py
import numpy as np
import pytest

from envs.dsrl import dsrl_rollouts
from envs.evaluate import reference_returns
from envs.splits import SplitError, split_files
from envs.tasks import get_task
from uniq.cli import main
from uniq.data import DatasetError, OfflineData

TASK = "SafetyHalfCheetahVelocity-v1"  # obs 17, act 6
STEPS = 20
# Per-step reward i and cost COSTS[i] of episode i: returns 0..180 normalise to i / 9, costs
# to COSTS[i] / 9. Desirable (> 0.5 and < 0.5): i >= 5 with COSTS[i] <= 4, i.e. 5, 7 and 9.
RETURNS = list(range(10))
COSTS = [9, 0, 8, 1, 7, 2, 6, 3, 5, 4]
DESIRABLE = [5, 7, 9]


def _ids(data: OfflineData) -> list[int]:
    """Episode ids in file order; checks every episode is whole (one id, STEPS rows)."""
    ids = []
    for s in data.episode_slices():
        values = np.unique(data.observations[s, 0])
        assert len(values) == 1 and s.stop - s.start == STEPS, "an episode was cut or merged"
        ids.append(int(values[0]))
    return ids


def _run(tmp_path, src, **kwargs):
    safe, unsafe = tmp_path / "rollouts_safe.h5", tmp_path / "rollouts_unsafe.h5"
    dsrl_rollouts(TASK, src, safe, unsafe, **kwargs)
    spec = get_task(TASK)
    return OfflineData.load(safe, spec), OfflineData.load(unsafe, spec)


def test_desirable_episodes_are_those_the_rule_picks(tmp_path, make_dsrl):
    src = make_dsrl(tmp_path / "dsrl.hdf5", RETURNS, COSTS)
    safe, unsafe = _run(tmp_path, src)
    assert _ids(safe) == DESIRABLE
    assert _ids(unsafe) == [i for i in range(10) if i not in DESIRABLE]
    assert (safe.is_desirable == 1).all() and (unsafe.is_desirable == 0).all()
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    for data, kind, n in ((safe, "safe", 3), (unsafe, "unsafe", 7)):
        a = data.attrs
        assert (a["source"], a["kind"], a["episodes"], a["env_id"]) == ("dsrl", kind, n, TASK)
        assert a["dsrl_sha256"] == digest and a["dsrl_path"] == str(src.resolve())
        assert (a["return_threshold"], a["cost_threshold"]) == (0.5, 0.5)
        assert "> 0.5" in a["split_rule"] and "< 0.5" in a["split_rule"]
        assert (a["dsrl_episodes"], a["dsrl_desirable"], a["dsrl_undesirable"]) == (10, 3, 7)
        assert a["dsrl_dropped_rows"] == 0
    assert (safe.attrs["return_min"], safe.attrs["cost_max"]) == (5 * STEPS, 4 * STEPS)
    # Evaluation's R_min / R_max reference: the whole file's extremes.
    paths = [tmp_path / "rollouts_safe.h5", tmp_path / "rollouts_unsafe.h5"]
    assert reference_returns(paths) == (0.0, 9.0 * STEPS)


def test_thresholds_move_the_split(tmp_path, make_dsrl):
    src = make_dsrl(tmp_path / "dsrl.hdf5", RETURNS, COSTS)
    # return i / 9 > 0.2: i >= 2; cost COSTS[i] / 9 < 0.8: COSTS[i] <= 7 (drops 2).
    safe, unsafe = _run(tmp_path, src, return_threshold=0.2, cost_threshold=0.8)
    assert _ids(safe) == [3, 4, 5, 6, 7, 8, 9] and _ids(unsafe) == [0, 1, 2]
    assert "> 0.2" in safe.attrs["split_rule"] and safe.attrs["cost_threshold"] == 0.8


@pytest.mark.parametrize(
    "variant",
    [
        {"flag_dtype": np.float32},
        {"column": True},
        {"keys": ["observations", "next_observations", "actions", "rewards", "costs", "timeouts"]},
    ],
    ids=["float flags", "[N, 1] columns", "no terminals key"],
)
def test_dsrl_variants_give_the_same_rollouts(tmp_path, make_dsrl, variant):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    base = _run(tmp_path / "a", make_dsrl(tmp_path / "base.hdf5", RETURNS, COSTS))
    other = _run(tmp_path / "b", make_dsrl(tmp_path / "other.hdf5", RETURNS, COSTS, **variant))
    for x, y in zip(base, other, strict=True):
        assert x.checksum() == y.checksum()


def test_trailing_partial_episode_is_dropped_with_a_warning(tmp_path, make_dsrl, caplog):
    src = make_dsrl(tmp_path / "dsrl.hdf5", RETURNS, COSTS, trailing_rows=7)
    with caplog.at_level(logging.WARNING, logger="envs.dsrl"):
        safe, unsafe = _run(tmp_path, src)
    assert "dropping the last 7 row(s)" in caplog.text
    assert len(safe) + len(unsafe) == 10 * STEPS and 10 not in _ids(safe) + _ids(unsafe)
    assert (safe.attrs["dsrl_dropped_rows"], safe.attrs["dsrl_rows"]) == (7, 10 * STEPS + 7)


def _unflag(path):
    with h5py.File(path, "a") as f:
        f["timeouts"][...] = False
    return path


# case -> (make the source file, dsrl_rollouts keyword arguments, words the error must hold)
BAD_INPUTS = {
    "missing file": (
        lambda d, mk: d / "absent.hdf5",
        {},
        ["absent.hdf5", "no such DSRL file", f"tasks.{TASK}.path"],
    ),
    "not HDF5": (
        lambda d, mk: (d / "x.hdf5").write_text("not hdf5") and d / "x.hdf5",
        {},
        ["not an HDF5 file"],
    ),
    "a key missing": (
        lambda d, mk: mk(
            d / "x.hdf5",
            RETURNS,
            COSTS,
            keys=["observations", "next_observations", "actions", "rewards", "timeouts"],
        ),
        {},
        ["not in DSRL's layout", "'costs'", "DSRL's files hold"],
    ),
    "no terminals or timeouts key": (
        lambda d, mk: mk(
            d / "x.hdf5",
            RETURNS,
            COSTS,
            keys=["observations", "next_observations", "actions", "rewards", "costs"],
        ),
        {},
        ["not in DSRL's layout", "'terminals and timeouts'"],
    ),
    "no flagged row": (
        lambda d, mk: _unflag(mk(d / "x.hdf5", RETURNS, COSTS)),
        {},
        ["no row of its 200 is flagged", "cannot be recovered"],
    ),
    "file of another task": (
        lambda d, mk: mk(d / "x.hdf5", RETURNS, COSTS, obs_dim=27, act_dim=8),
        {},
        ["(27,)", "(8,)", "(17,)", "(6,)", "another task", f"tasks.{TASK}.path"],
    ),
    "all returns equal": (
        lambda d, mk: mk(d / "x.hdf5", [1.0] * 10, COSTS),
        {},
        ["all 10 episodes have the same return (20)", "0/0"],
    ),
    "all costs equal": (
        lambda d, mk: mk(d / "x.hdf5", RETURNS, [0.0] * 10),
        {},
        ["all 10 episodes have the same cost (0)"],
    ),
    "no desirable episode": (
        lambda d, mk: mk(d / "x.hdf5", RETURNS, COSTS),
        {"return_threshold": 1.0},
        ["0 desirable and 10 undesirable episodes of 10", "> 1", "dsrl_return_threshold"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_the_problem_and_changes_nothing(tmp_path, make_dsrl, case):
    make, kwargs, words = BAD_INPUTS[case]
    src = make(tmp_path, make_dsrl)
    out = tmp_path / "data"
    out.mkdir()
    # Earlier rollouts stay as they were (and no temp file is left beside them).
    for name in ("rollouts_safe.h5", "rollouts_unsafe.h5"):
        (out / name).write_bytes(b"earlier " + name.encode())
    with pytest.raises(DatasetError) as err:
        dsrl_rollouts(TASK, src, out / "rollouts_safe.h5", out / "rollouts_unsafe.h5", **kwargs)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    assert sorted(p.name for p in out.iterdir()) == ["rollouts_safe.h5", "rollouts_unsafe.h5"]
    assert (out / "rollouts_safe.h5").read_bytes() == b"earlier rollouts_safe.h5"


def test_too_few_episodes_for_the_split_says_how_many_the_file_gave(tmp_path, make_dsrl):
    _run(tmp_path, make_dsrl(tmp_path / "dsrl.hdf5", RETURNS, COSTS))
    safe, unsafe = tmp_path / "rollouts_safe.h5", tmp_path / "rollouts_unsafe.h5"
    out = tmp_path / "variant"
    un, mix = split_files(TASK, safe, unsafe, 2, 3, 4, 0, out)  # exactly what there is
    assert mix.is_desirable.sum() == 3 * STEPS and un.num_episodes() == 2
    for sizes, words in [
        ((1, 4, 1), ["holds 3 safe trajectories", "asks for 4", "desirable episodes"]),
        ((2, 1, 6), ["holds 7 unsafe trajectories", "asks for 8", "undesirable episodes"]),
    ]:
        with pytest.raises(SplitError) as err:
            split_files(TASK, safe, unsafe, *sizes, 0, tmp_path / "too_big")
        text = str(err.value)
        for word in [*words, "3 desirable and 7 undesirable episodes of 10", "> 0.5"]:
            assert word in text, (word, text)
        assert "dsrl_return_threshold" in text and "collect more" not in text
    assert not (tmp_path / "too_big").exists()


def test_cli_writes_both_files_or_exits_2_naming_the_problem(tmp_path, make_dsrl, caplog):
    src = make_dsrl(tmp_path / "dsrl.hdf5", RETURNS, COSTS)
    outs = ["--out-safe", str(tmp_path / "s.h5"), "--out-unsafe", str(tmp_path / "u.h5")]
    args = ["dsrl", "--task", TASK, "--file", str(src), *outs]
    assert main([*args, "--cost-threshold", "0.8"]) == 0
    assert OfflineData.load(tmp_path / "s.h5").attrs["cost_threshold"] == 0.8
    assert OfflineData.load(tmp_path / "u.h5").attrs["return_threshold"] == 0.5  # the default
    bad = ["dsrl", "--task", "SafetyAntVelocity-v1", "--file", str(src)]
    (tmp_path / "s.h5").unlink()
    assert main([*bad, *outs]) == 2
    assert "another task" in caplog.text and not (tmp_path / "s.h5").exists()
    assert main([*args, "--return-threshold", "1.5"]) == 2
    assert "must lie in [0, 1]" in caplog.text
