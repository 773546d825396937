"""Reliability at the command line: kill and resume, bad inputs, determinism, provenance.

Each check drives ``uniq-bench`` (``uniq.cli.main`` in-process, or a real subprocess where a
SIGKILL is needed) on tiny synthetic datasets with SafetyHalfCheetahVelocity-v1's dims
(obs 17, act 6), one torch thread and tiny networks. Evaluation runs the real environment
with episodes cut to ``EPISODE_STEPS`` steps (a TaskSpec override registered under the
task's own name), so every number here comes from the same code paths the workflow uses.

Unit-level versions of several faults live in test_data.py, test_train.py,
test_evaluate.py, test_splits.py and test_stats.py; here the point is what a user or
Snakemake sees: the exit code, a message naming the problem and the fix, and that no
existing result file changes.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

import envs.tasks
from envs.splits import SplitError
from uniq import jobtimes, stats
from uniq.cli import main
from uniq.data import OfflineData
from uniq.nets import load_policy

torch.set_num_threads(1)

TASK = "SafetyHalfCheetahVelocity-v1"
OBS, ACT = 17, 6
EPISODE_STEPS = 25
ROOT = Path(__file__).resolve().parents[1]
UNIQ_TINY = dict(
    hidden=16, batch_mix=16, batch_un=16, actor_batch=32, ratio_batch=32, ratio_steps=20,
    ratio_eval_every=5,
)  # fmt: skip
WALL_FIELDS = ("wall_time_s", "eval_wall_time_s", "policy_sha256")
"""eval.json fields that measure time (the policy file's hash covers its training's wall time,
kept in its meta); every other field must repeat bit for bit."""


# ---------------------------------------------------------------------------- helpers
def episodes(n: int, shift: float, desirable: float, seed: int, obs=OBS, act=ACT, T=10):
    rng = np.random.default_rng(seed)
    rows = n * T
    return OfflineData(
        observations=rng.normal(shift, 1, (rows, obs)),
        actions=rng.uniform(-1, 1, (rows, act)),
        rewards=rng.normal(size=rows),
        costs=rng.uniform(size=rows),
        next_observations=rng.normal(shift, 1, (rows, obs)),
        terminals=np.zeros(rows),
        timeouts=(np.arange(rows) % T == T - 1),
        is_desirable=np.full(rows, desirable),
    )


def write_split(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """un.h5 (4 unsafe trajectories) and mix.h5 (4 safe + 4 unsafe), with split attrs."""
    folder.mkdir(parents=True, exist_ok=True)
    un = episodes(4, 1.0, 0.0, seed)
    mix = OfflineData.concatenate(
        [episodes(4, 0.0, 1.0, seed + 1), episodes(4, 1.0, 0.0, seed + 2)]
    )
    for d in (un, mix):
        d.attrs.update(env_id=TASK, n_un=4, n_mix_desirable=4, n_mix_undesirable=4)
    un.save(folder / "un.h5")
    mix.save(folder / "mix.h5")
    return folder / "un.h5", folder / "mix.h5"


def train_argv(un, mix, out, *, algo="uniq", task=TASK, seed=0, steps=10, sets=UNIQ_TINY):
    argv = ["train", "--algo", algo, "--task", task, "--un", str(un), "--mix", str(mix)]
    argv += ["--seed", str(seed), "--steps", str(steps), "--out", str(out), "--variant", "v"]
    argv += ["--threads", "1", "--no-progress"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    return argv


def eval_argv(policy, out, *, task=TASK, seed=0, extra=()):
    episodes = [] if "--episodes" in extra else ["--episodes", "2"]  # an option is given once
    argv = ["evaluate", "--policy", str(policy), "--task", task, *episodes]
    return argv + [
        "--seed",
        str(seed),
        "--num-envs",
        "1",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def snapshot(folder: Path) -> dict[str, str]:
    """name -> sha256 of every file under ``folder`` (temp files included)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def log_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return [
            {k: v for k, v in row.items() if k not in ("wall_time_s", "updates_per_s")}
            for row in csv.DictReader(f)
        ]


def same_params(a: Path, b: Path) -> bool:
    sa, sb = load_policy(a)[0].state_dict(), load_policy(b)[0].state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def without_wall(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in WALL_FIELDS}


def same_record(a: dict, b: dict) -> bool:
    """Equal field by field (NaN equals NaN: return_normalized is NaN without references)."""
    a, b = without_wall(a), without_wall(b)

    def same(x, y) -> bool:
        both_nan = isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)
        return x == y or both_nan

    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)


@pytest.fixture
def short_episodes(monkeypatch):
    """The real task, its episodes cut to EPISODE_STEPS steps (evaluation stays seconds)."""
    spec = envs.tasks.TASKS[TASK].with_overrides(max_episode_steps=EPISODE_STEPS)
    monkeypatch.setitem(envs.tasks.TASKS, TASK, spec)


@pytest.fixture
def no_gpu(monkeypatch, tmp_path):
    """A machine without a visible GPU, whatever this one has; GPU locks in tmp."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setenv("UNIQ_GPU_LOCK_DIR", str(tmp_path / "locks"))
    for var in ("UNIQ_GPU_REQUIRED", "UNIQ_GPU_WAIT_S"):
        monkeypatch.delenv(var, raising=False)


# ---------------------------------------------------------------------------- kill and resume
def _cli_child(argv: list[str]) -> None:
    sys.exit(main(argv))


def _logged_step(part: Path) -> int:
    """Last step in a train_log.csv.part being written (0 if none yet)."""
    try:
        lines = part.read_text().splitlines()
    except FileNotFoundError:
        return 0
    last = lines[-1].split(",")[0] if len(lines) > 1 else "0"
    return int(last) if last.isdigit() else 0


def test_sigkill_mid_run_then_rerun_equals_uninterrupted_run(tmp_path, short_episodes):
    un, mix = write_split(tmp_path / "data")
    steps, every = 200, 40
    loop = ["--checkpoint-every", str(every), "--log-every", "20", "--device", "cpu"]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    argv = train_argv(un, mix, killed, seed=3, steps=steps) + loop
    assert main(train_argv(un, mix, clean, seed=3, steps=steps) + loop) == 0  # the reference

    # The run to kill: `uniq-bench train` in a forked child (a fresh interpreter would spend
    # most of this test importing torch); SIGKILL gives it no chance to clean up.
    child = multiprocessing.get_context("fork").Process(target=_cli_child, args=(argv,))
    child.start()
    deadline = time.monotonic() + 120
    # A log row past 2 x every means the checkpoint at `every` is on disk.
    while _logged_step(killed / "train_log.csv.part") < 2 * every and child.is_alive():
        assert time.monotonic() < deadline, "training child made no progress"
        time.sleep(0.01)
    child.kill()
    child.join()
    assert child.exitcode == -signal.SIGKILL, (
        f"the run ended (exit {child.exitcode}) before the kill"
    )

    # What a killed run leaves: the checkpoint, the .part log, maybe a temp file; no output
    # a later rule (evaluate, aggregate) or Snakemake's completeness check would take.
    left = {p.name for p in killed.iterdir()}
    assert not left & {"policy.pt", "train_log.csv", "config.yaml", "curve.csv", "eval.json"}
    assert {"checkpoint.pt", "train_log.csv.part"} <= left
    assert all(n.endswith(".tmp") for n in left - {"checkpoint.pt", "train_log.csv.part"})
    ckpt_step = torch.load(killed / "checkpoint.pt", weights_only=False)["step"]
    assert every <= ckpt_step < steps and ckpt_step % every == 0

    # The same command again, as Snakemake reruns it: a new `python -m uniq` process.
    env = dict(os.environ, UNIQ_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-m", "uniq", *argv], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert f"from {killed / 'checkpoint.pt'} at step {ckpt_step}" in res.stderr  # it resumed

    # Bit-identical to the uninterrupted run (same device and thread count), across processes.
    assert same_params(killed / "policy.pt", clean / "policy.pt")
    assert log_rows(killed / "train_log.csv") == log_rows(clean / "train_log.csv")
    assert (killed / "config.yaml").read_text() == (clean / "config.yaml").read_text()
    # the same files: the rerun also removed a temp file the kill may have left mid-checkpoint
    assert sorted(p.name for p in killed.iterdir()) == sorted(p.name for p in clean.iterdir())

    for run in (killed, clean):
        assert main(eval_argv(run / "policy.pt", run / "eval.json", seed=3)) == 0
    a, b = (json.loads((run / "eval.json").read_text()) for run in (killed, clean))
    assert same_record(a, b), (a, b)
    assert a["wall_time_s"] > 0 and a["steps"] == steps


KILL_CONFIG = {
    "profile": "smoke",
    "tasks": {"SafetyPointGoal1-v0": {"data": "scripted"}},
    "rollouts": {"episodes": "auto", "num_envs": 1},
    "datasets": {
        "variants": {"default": {"n_un": 1, "n_mix_desirable": 1, "n_mix_undesirable": 2}}
    },
    "algorithms": {"uniq": {"set": {**UNIQ_TINY, "hidden": 32}}},
    "train": {"steps": 1200, "seeds": [0], "checkpoint_every": 300},
    "evaluate": {"episodes": 1, "num_envs": 1},
    "aggregate": {"reps": 20},
    "experiments": {"main": {"variants": ["default"], "algorithms": ["uniq"]}},
}
KILL_RUNS = "results/smoke/runs/SafetyPointGoal1-v0/default/uniq"


def _snakemake(folder: Path, *args: str, wait: bool = True):
    """``snakemake ARGS`` in ``folder`` with this repository's Snakefile, one core."""
    env = dict(
        os.environ, UNIQ_THREADS="1", OMP_NUM_THREADS="1", UNIQ_GPU_LOCK_DIR=str(folder / "locks")
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    argv = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--cores",
        "1",
    ]
    argv += ["--configfile", str(folder / "config.yaml"), "--directory", str(folder), *args]
    if not wait:  # its own process group, so one killpg takes snakemake and its job
        return subprocess.Popen(
            argv,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.mark.parametrize("seeds", [[0], [0, 1]], ids=["one_seed", "batch_seeds"])
def test_snakemake_killed_mid_training_resumes_with_rerun_incomplete(tmp_path, seeds):
    """The whole workflow process group SIGKILLed mid-training (a node lost, an OOM kill);
    then `snakemake --unlock` and `snakemake --rerun-incomplete`, as the README says. The
    rerun must resume from the checkpoint and end with the uninterrupted run's parameters
    and eval.json. With two seeds the job is a batched one (``train.batch_seeds``): one job
    trains both, its checkpoint in the sibling folder seed0_1."""
    config = copy.deepcopy(KILL_CONFIG)
    config["train"].update(seeds=seeds, batch_seeds=len(seeds) > 1)
    runs = [f"{KILL_RUNS}/seed{s}" for s in seeds]
    job = f"{KILL_RUNS}/seed{'_'.join(map(str, seeds))}"
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    killed.mkdir()
    (killed / "config.yaml").write_text(yaml.safe_dump(config))
    data = "results/smoke/data/SafetyPointGoal1-v0"
    _snakemake(killed, f"{data}/default/un.h5", f"{data}/default/mix.h5")  # datasets once
    shutil.copytree(killed, clean)
    targets = [f"{run}/eval.json" for run in runs]
    _snakemake(clean, *targets)  # the reference

    proc = _snakemake(killed, *targets, wait=False)
    ckpt = killed / job / "checkpoint.pt"
    deadline = time.monotonic() + 900  # a guard against a hang, generous for loaded machines

    def written() -> int:  # the checkpoint's version: 0 absent, then its mtime
        return ckpt.stat().st_mtime_ns if ckpt.exists() else 0

    try:
        while not written() and proc.poll() is None:  # the first, after pretraining (step 0)
            assert time.monotonic() < deadline, "training made no checkpoint"
            time.sleep(0.05)
        first = written()
        while written() == first and proc.poll() is None:  # the second, mid-run
            assert time.monotonic() < deadline, "training made no second checkpoint"
            time.sleep(0.05)
    finally:  # the kill, and no workflow left running if an assertion failed
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the workflow ended before the kill"
    for run in runs:
        left = {p.name for p in (killed / run).iterdir()}
        assert not left & {"policy.pt", "train_log.csv", "config.yaml", "eval.json"}, left
    step = torch.load(ckpt, weights_only=False)["step"]
    assert 0 < step < config["train"]["steps"]

    _snakemake(killed, "--unlock")
    _snakemake(killed, "--rerun-incomplete", *targets)
    log_name = "seed0.log" if len(seeds) == 1 else "seeds.log"  # the batched job's one log
    log = killed / "logs/smoke/train/SafetyPointGoal1-v0/default/uniq" / log_name
    assert re.search(r"from \S*checkpoint\.pt at step \d+", log.read_text()), log.read_text()
    # the job's time counts its piece before the kill, not only the benchmark's last piece
    bench_root = killed / "logs/smoke/benchmarks"
    (row,) = jobtimes.read_benchmarks(bench_root)["train"]
    raw = float((bench_root / row["file"]).read_text().splitlines()[1].split("\t")[0])
    assert row["resumed"] and row["s"] > raw, (row, raw)
    for run in runs:
        assert same_params(killed / run / "policy.pt", clean / run / "policy.pt")
        assert log_rows(killed / run / "train_log.csv") == log_rows(clean / run / "train_log.csv")
        a, b = (json.loads((d / run / "eval.json").read_text()) for d in (killed, clean))
        assert same_record(a, b), (a, b)
    if len(seeds) > 1:  # two independent runs, not one run twice
        assert not same_params(killed / runs[0] / "policy.pt", killed / runs[1] / "policy.pt")


@pytest.mark.skipif(shutil.which("uv") is None, reason="profiles/continue.sh runs uv")
def test_continue_sh_resumes_a_fresh_clone_without_redoing_finished_runs(tmp_path):
    """profiles/continue.sh on what a fresh clone holds (README, "On another machine"): the
    committed outputs of a finished run (seed 0) and nothing else (no data, no Snakemake
    metadata), their times in the worst order a checkout may give (each output older than
    its inputs). It regenerates the data, trains and evaluates only seed 1, and leaves seed
    0's policy and evaluation as they were; with ``--directory``, every step runs there."""
    config = copy.deepcopy(KILL_CONFIG)
    config["train"].update(steps=200, checkpoint_every=100, seeds=[0, 1], batch_seeds=False)
    first, clone = tmp_path / "first", tmp_path / "clone"
    first.mkdir()
    (first / "config.yaml").write_text(yaml.safe_dump(config))
    _snakemake(first, f"{KILL_RUNS}/seed0/eval.json")
    shutil.copytree(first / "results", clone / "results", ignore=shutil.ignore_patterns("data"))
    shutil.copy(first / "config.yaml", clone / "config.yaml")
    now = time.time()
    for path in (clone / "results").rglob("*"):  # outputs older than their inputs
        age = {"eval.json": 300, "policy.pt": 200}.get(path.name, 0)
        os.utime(path, (now - age, now - age))
    seed0 = clone / KILL_RUNS / "seed0"
    before = {name: (seed0 / name).read_bytes() for name in ("policy.pt", "eval.json")}

    env = dict(os.environ, UNIQ_THREADS="1", OMP_NUM_THREADS="1",
               UNIQ_GPU_LOCK_DIR=str(clone / "locks"))  # fmt: skip
    res = subprocess.run(
        ["bash", str(ROOT / "profiles/continue.sh"), str(clone / "config.yaml"),
         "--directory", str(clone), "--cores", "1"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (clone / "results/smoke/data/SafetyPointGoal1-v0/default/mix.h5").is_file()
    assert {name: (seed0 / name).read_bytes() for name in before} == before
    assert (clone / KILL_RUNS / "seed1/eval.json").is_file()
    assert (clone / "results/smoke/main/summary.csv").is_file()


@pytest.mark.parametrize("crash_in", ["save_policy", "log_rename", "after_finish"])
def test_crash_while_writing_outputs_resumes_after_snakemake_deletes_them(
    tmp_path, monkeypatch, crash_in
):
    """A kill after the last checkpoint but before every output is in place, or after the
    job finished but before Snakemake recorded it (``after_finish``): Snakemake deletes the
    job's declared outputs (policy.pt, train_log.csv, config.yaml) and reruns it; the rerun
    must resume and finish with the uninterrupted run's results."""
    import uniq.nets
    import uniq.runlog

    un, mix = write_split(tmp_path / "data")

    def argv(out: Path) -> list[str]:
        loop = ["--log-every", "5", "--device", "cpu"]
        return train_argv(un, mix, out, algo="bc-mix", steps=20, sets=dict(hidden=16)) + loop

    assert main(argv(tmp_path / "clean")) == 0

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if killed here

    if crash_in == "after_finish":
        assert main(argv(tmp_path / "run")) == 0
    else:
        if crash_in == "save_policy":
            monkeypatch.setattr(uniq.nets, "save_policy", crash)
        else:
            monkeypatch.setattr(uniq.runlog.CsvLog, "finish", crash)
        with pytest.raises(KeyboardInterrupt):
            main(argv(tmp_path / "run"))
        monkeypatch.undo()
    for name in ("policy.pt", "train_log.csv", "config.yaml"):
        (tmp_path / "run" / name).unlink(missing_ok=True)  # what Snakemake does before a rerun

    assert main(argv(tmp_path / "run")) == 0
    assert same_params(tmp_path / "run/policy.pt", tmp_path / "clean/policy.pt")
    assert log_rows(tmp_path / "run/train_log.csv") == log_rows(tmp_path / "clean/train_log.csv")


def _eval_record(folder: Path, algo: str, seed: int, value: float, checksum: str = "c1") -> str:
    record = dict(
        algo=algo, env=TASK, variant="v", seed=seed, episodes=2, return_mean=value,
        cost_mean=value, cost_cvar10=value, cost_rate=value / 100, return_normalized=value,
        cost_normalized=value, steps=10, wall_time_s=1.0, git_commit="abc",
        dataset_checksums={"un": checksum, "mix": checksum},
    )  # fmt: skip
    path = folder / algo / f"seed{seed}" / "eval.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return str(path)


def test_interrupted_aggregate_leaves_the_previous_outputs_untouched(tmp_path, monkeypatch):
    runs = [
        _eval_record(tmp_path, algo, seed, 0.1 * seed + (algo == "uniq"))
        for algo in ("uniq", "bc-mix")
        for seed in range(3)
    ]
    out = tmp_path / "main"
    assert (
        main(["aggregate", "--experiment", "main", "--out", str(out), "--reps", "20", *runs]) == 0
    )
    before = snapshot(out)
    assert {"summary.csv", "table.md", "table.tex", "table.csv"} <= set(before)

    real, calls = stats.atomic_write_text, []

    def disk_full_at_third_file(path, text):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(path, text)

    monkeypatch.setattr(stats, "atomic_write_text", disk_full_at_third_file)
    more = runs + [_eval_record(tmp_path, "dwbc", 0, 0.5)]  # new results: every output changes
    with pytest.raises(OSError, match="No space left"):
        stats.aggregate(more, "main", out, reps=20)
    assert len(calls) == 3
    assert snapshot(out) == before  # no new summary beside an old table, no staging left

    calls.clear()
    with pytest.raises(OSError):  # and a first aggregate that fails leaves no file at all
        stats.aggregate(more, "main", tmp_path / "fresh", reps=20)
    assert snapshot(tmp_path / "fresh") == {}


# ---------------------------------------------------------------------------- bad inputs
FAULT_TABLE: list[tuple[str, str]] = []
"""(fault, what the CLI gave), printed when this module's tests end (visible with -s)."""


@pytest.fixture(scope="module", autouse=True)
def print_fault_table():
    yield
    if FAULT_TABLE:
        width = max(len(f) for f, _ in FAULT_TABLE)
        print("\n" + "\n".join(f"{f:{width}s} -> {g}" for f, g in FAULT_TABLE))


def bad_files(folder: Path, un: Path) -> dict[str, Path]:
    folder.mkdir()
    good = OfflineData.load(un)
    files = {}
    episodes(2, 0, 0, 9, obs=5).save(files.setdefault("obs_dims", folder / "obs_dims.h5"))
    episodes(2, 0, 0, 9, act=4).save(files.setdefault("act_dims", folder / "act_dims.h5"))
    raw = un.read_bytes()
    (files.setdefault("truncated", folder / "truncated.h5")).write_bytes(raw[: len(raw) // 2])
    (files.setdefault("not_hdf5", folder / "not_hdf5.h5")).write_text("observations,actions\n")
    with h5py.File(files.setdefault("nan", folder / "nan.h5"), "w") as f:
        for key in ("observations", "actions", "rewards", "costs", "next_observations"):
            value = getattr(good, key).copy()
            if key == "next_observations":
                value[3, 2] = np.nan
            f[key] = value
        f["terminals"], f["timeouts"] = good.terminals, good.timeouts
    good.select_rows(np.zeros(0, int)).save(files.setdefault("empty", folder / "empty.h5"))
    return files


@pytest.fixture(scope="module")
def existing(tmp_path_factory):
    """A finished run (policy.pt, train_log.csv, config.yaml, checkpoint.pt, eval.json)."""
    root = tmp_path_factory.mktemp("existing")
    un, mix = write_split(root / "data")
    run = root / "run"
    assert main(train_argv(un, mix, run) + ["--device", "cpu"]) == 0
    (run / "eval.json").write_text('{"algo": "uniq", "return_mean": 1.0}\n')  # stands for one
    return root, un, mix, bad_files(root / "bad", un)


TRAIN_FAULTS = {
    # fault: (argv changes, message pattern naming the problem and the fix)
    "unknown task": (dict(task="SafetyNoSuch-v0"), r"unknown task 'SafetyNoSuch-v0'; known tasks: .*Add a TaskSpec"),
    "unknown algorithm": (dict(algo="uniqq"), r"unknown algorithm 'uniqq'; known algorithms: .*bc-mix"),
    "unknown --set key": (dict(sets=dict(UNIQ_TINY, reward_scale=2)), r"unknown hyper-parameter\(s\) \['reward_scale'\] .*valid ones: .*reward_factor"),
    "mistyped --set value": (dict(sets=dict(UNIQ_TINY, ratio_steps="many")), r"ratio_steps='many' has type str; expected int"),
    "D_MIX obs dim 5 (task 17)": (dict(mix="obs_dims"), r"obs_dims.h5: obs/action dims \(5, 6\) do not match task .*\(17, 6\).*generated for this task"),
    "D_UN act dim 4 (task 6)": (dict(un="act_dims"), r"act_dims.h5: obs/action dims \(17, 4\) do not match"),
    "truncated HDF5": (dict(mix="truncated"), r"truncated.h5: unreadable HDF5 file .*truncated.*regenerate it"),
    "not an HDF5 file": (dict(un="not_hdf5"), r"not_hdf5.h5: not an HDF5 file .*Regenerate it"),
    "NaN in next_observations": (dict(mix="nan"), r"nan.h5: 'next_observations' holds 1 NaN/inf value\(s\) \(first at row 3\)\. Clean or regenerate"),
    "missing dataset file": (dict(mix="nope"), r"nope.h5: no such dataset file\. Generate it"),
    "empty D_UN (uniq samples it)": (dict(un="empty"), r"empty.h5: D_UN has no rows.*--n-un > 0"),
    "negative --steps": (dict(steps=-1), r"need steps >= 0"),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(TRAIN_FAULTS))
def test_bad_train_input_fails_clearly_and_overwrites_nothing(existing, fault, caplog, tmp_path):
    root, un, mix, bad = existing
    change, pattern = TRAIN_FAULTS[fault]
    kw = dict(dict(un=un, mix=mix), **change)
    for key in ("un", "mix"):  # a bad file by name (an absent one for "nope")
        if isinstance(kw[key], str):
            kw[key] = bad.get(kw[key], root / "bad" / f"{kw[key]}.h5")
    # The finished run's checkpoint refuses other data first ("written by a different
    # run"); a copy of the run without checkpoint.pt checks the guards behind it too.
    run, bare = root / "run", tmp_path / "bare"
    bare.mkdir()
    for p in run.iterdir():
        if p.name != "checkpoint.pt":
            (bare / p.name).write_bytes(p.read_bytes())
    for folder in (run, bare):
        before = snapshot(folder)
        caplog.clear()
        assert main(train_argv(out=folder, **kw) + ["--device", "cpu"]) == 2
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, errors
        refused = folder == run and "checkpoint.pt was written by a different run" in errors[0]
        assert refused or re.search(pattern, errors[0]), errors[0]
        assert snapshot(folder) == before, f"{fault}: an existing output changed"
    FAULT_TABLE.append((f"train: {fault}", f"exit 2: {errors[0][:110]}"))


DEVICE_FAULTS = {
    "--device cuda, no GPU": (["--device", "cuda"], {}, r"--device cuda: cannot use it \(no CUDA device is visible.*Use --device auto .* or --device cpu"),
    "--device auto + UNIQ_GPU_REQUIRED=1, no GPU": (["--device", "auto"], {"UNIQ_GPU_REQUIRED": "1"}, r"a GPU is required"),
    "--device cuda:99 (absent)": (["--device", "cuda:99"], {}, r"--device cuda:99: cannot use it"),
    "--device tpu (malformed)": (["--device", "tpu"], {}, r"--device tpu: cannot use it"),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(DEVICE_FAULTS))
def test_unusable_device_fails_clearly_and_overwrites_nothing(
    existing, fault, no_gpu, monkeypatch, caplog
):
    root, un, mix, _ = existing
    extra, env, pattern = DEVICE_FAULTS[fault]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    run = root / "run"
    before = snapshot(run)
    caplog.clear()
    assert main(train_argv(un, mix, run) + extra) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and re.search(pattern, errors[0]), errors
    assert snapshot(run) == before
    FAULT_TABLE.append((f"train: {fault}", f"exit 2: {errors[0][:110]}"))


def test_auto_device_without_gpu_falls_back_to_cpu_with_a_warning(
    existing, no_gpu, caplog, tmp_path
):
    _, un, mix, _ = existing
    with caplog.at_level(logging.WARNING):
        assert main(train_argv(un, mix, tmp_path / "run") + ["--device", "auto"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "no CUDA device is visible" in w and "falling back to the CPU" in w for w in warnings
    )
    assert yaml.safe_load((tmp_path / "run/config.yaml").read_text())["device"] == "cpu"
    FAULT_TABLE.append(("train: --device auto, no GPU", "exit 0, trains on CPU, WARNING logged"))


def _bad_policies(folder: Path, run: Path) -> dict[str, Path]:
    raw = (run / "policy.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    (folder / "text.pt").write_text("not a policy\n")
    return {"truncated": folder / "truncated.pt", "text": folder / "text.pt"}


EVAL_FAULTS = {
    "unknown task": (dict(task="SafetyNoSuch-v0"), r"unknown task 'SafetyNoSuch-v0'; known tasks"),
    "policy of another task": (dict(task="SafetyAntVelocity-v1"), r"policy was trained on SafetyHalfCheetahVelocity-v1, not SafetyAntVelocity-v1; fix --task"),
    "missing policy.pt": (dict(policy="nope"), r"nope.pt: no such policy file; train one"),
    "truncated policy.pt": (dict(policy="truncated"), r"truncated.pt: unreadable policy file .*truncated or not a policy.pt.*rerun `uniq-bench train`"),
    "text file as policy.pt": (dict(policy="text"), r"text.pt: unreadable policy file"),
    "reference with NaN": (dict(extra=["--reference", "nan"]), r"nan.h5: 'next_observations' holds 1 NaN/inf"),
    "reference not HDF5": (dict(extra=["--reference", "not_hdf5"]), r"not_hdf5.h5: not an HDF5 file"),
    "--episodes 0": (dict(extra=["--episodes", "0"]), r"episodes must be >= 1"),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(EVAL_FAULTS))
def test_bad_evaluate_input_fails_clearly_and_keeps_eval_json(existing, fault, caplog, tmp_path):
    root, _, _, bad = existing
    run = root / "run"
    change, pattern = EVAL_FAULTS[fault]
    policies = _bad_policies(tmp_path, run)
    kw = dict(change)
    policy = (
        policies.get(kw.pop("policy", ""), tmp_path / "nope.pt")
        if "policy" in change
        else run / "policy.pt"
    )
    if "extra" in kw:
        kw["extra"] = [str(bad[a]) if a in bad else a for a in kw["extra"]]
    before = snapshot(run)
    caplog.clear()
    assert main(eval_argv(policy, run / "eval.json", **kw)) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and re.search(pattern, errors[0]), errors
    assert snapshot(run) == before
    FAULT_TABLE.append((f"evaluate: {fault}", f"exit 2: {errors[0][:110]}"))


def test_split_asking_for_too_many_trajectories_keeps_the_existing_split(tmp_path, caplog):
    safe = OfflineData.concatenate([episodes(1, 0, 1, s) for s in range(5)])
    unsafe = OfflineData.concatenate([episodes(1, 1, 0, 10 + s) for s in range(6)])
    safe.costs[:], unsafe.costs[:] = 0.0, 1.0
    safe.save(tmp_path / "rollouts_safe.h5")
    unsafe.save(tmp_path / "rollouts_unsafe.h5")
    args = ["split", "--task", TASK, "--safe", str(tmp_path / "rollouts_safe.h5")]
    args += ["--unsafe", str(tmp_path / "rollouts_unsafe.h5"), "--out-dir", str(tmp_path / "v")]
    assert main(args + ["--n-un", "2", "--n-mix-desirable", "2", "--n-mix-undesirable", "2"]) == 0
    before = snapshot(tmp_path / "v")
    caplog.clear()
    code = main(args + ["--n-un", "4", "--n-mix-desirable", "5", "--n-mix-undesirable", "3"])
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "holds 6 unsafe trajectories but the split asks for 7" in errors[0]
    assert "n_un=4 + n_mix_undesirable=3" in errors[0] and "collect more" in errors[0]
    assert snapshot(tmp_path / "v") == before
    assert issubclass(SplitError, ValueError)
    FAULT_TABLE.append(("split: 7 unsafe asked, 6 exist", f"exit 2: {errors[0][:110]}"))


def test_aggregate_of_mixed_dataset_versions_keeps_previous_outputs(tmp_path, caplog):
    runs = [_eval_record(tmp_path, a, s, 0.3) for a in ("uniq", "bc-mix") for s in range(2)]
    out = tmp_path / "main"
    assert (
        main(["aggregate", "--experiment", "main", "--out", str(out), "--reps", "20", *runs]) == 0
    )
    before = snapshot(out)
    stale = _eval_record(tmp_path / "old", "dwbc", 0, 0.3, checksum="OLD")
    caplog.clear()
    code = main(
        ["aggregate", "--experiment", "main", "--out", str(out), "--reps", "20", *runs, str(stale)]
    )
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "come from different datasets" in errors[0] and "re-run the stale runs" in errors[0]
    assert snapshot(out) == before
    FAULT_TABLE.append(
        ("aggregate: runs of two dataset versions", "exit 2: " + errors[0][:110].replace("\n", " "))
    )


# ---------------------------------------------------------------------------- determinism
@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """train + evaluate through the CLI: seed 1 twice (a, b), seed 2 once (c)."""
    root = tmp_path_factory.mktemp("pipeline")
    un, mix = write_split(root / "data")
    spec = envs.tasks.TASKS[TASK]
    envs.tasks.TASKS[TASK] = spec.with_overrides(max_episode_steps=EPISODE_STEPS)
    try:
        for name, seed in (("a", 1), ("b", 1), ("c", 2)):
            run = root / name
            assert main(train_argv(un, mix, run, seed=seed, steps=30) + ["--device", "cpu"]) == 0
            assert main(eval_argv(run / "policy.pt", run / "eval.json", seed=seed)) == 0
    finally:
        envs.tasks.TASKS[TASK] = spec
    return root, un, mix


def test_same_seed_gives_the_same_eval_json_and_another_seed_does_not(pipeline):
    root, _, _ = pipeline
    a, b, c = (json.loads((root / n / "eval.json").read_text()) for n in "abc")
    assert same_record(a, b)  # every field but the times and the policy file's hash
    assert set(a) - set(without_wall(a)) == set(WALL_FIELDS)
    assert same_params(root / "a/policy.pt", root / "b/policy.pt")
    assert (root / "a/config.yaml").read_text() == (root / "b/config.yaml").read_text()
    assert not same_params(root / "a/policy.pt", root / "c/policy.pt")
    assert a["return_mean"] != c["return_mean"] and a["seed"] != c["seed"]


# ---------------------------------------------------------------------------- provenance
def test_every_result_records_commit_config_and_dataset_checksums(pipeline):
    root, un, mix = pipeline
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    sums = {
        "un": OfflineData.load(un).attrs["checksum"],
        "mix": OfflineData.load(mix).attrs["checksum"],
    }
    _, meta = load_policy(root / "a/policy.pt")
    config = yaml.safe_load((root / "a/config.yaml").read_text())
    record = json.loads((root / "a/eval.json").read_text())
    for where in (meta, config, record):
        # "-dirty" when the checkout had uncommitted source changes while the runs were made
        assert where["git_commit"] in (head, f"{head}-dirty")
    assert meta["git_commit"] == config["git_commit"] == record["git_commit"]
    assert meta["dataset_checksums"] == record["dataset_checksums"] == sums
    assert {k: v["checksum"] for k, v in config["data"].items()} == sums
    assert config["data"]["un"]["path"] == str(un) and config["data"]["mix"]["rows"] == 80
    # The resolved config: every field of the method's Config, defaults and --set values.
    from uniq.algorithm import UNIQ

    fields = {f for f in UNIQ.Config.__dataclass_fields__}
    assert set(config["config"]) == fields and set(meta["config"]) == fields
    assert config["config"]["hidden"] == 16 and config["config"]["reward_factor"] == 5.0
    assert config["seed"] == meta["seed"] == record["seed"] == 1
    assert config["device"] == "cpu" and config["threads"] == 1
    assert record["variant_params"] == meta["variant_params"] == config["variant_params"] == {
        "n_un": 4, "n_mix_desirable": 4, "n_mix_undesirable": 4,
    }  # fmt: skip
    # aggregate refusing runs of different dataset checksums for one split:
    # tests/test_stats.py::test_mixed_dataset_checksums_are_refused and the CLI check above.


def test_git_commit_flags_uncommitted_code_but_not_workflow_outputs(tmp_path):
    from uniq.atomic import git_commit

    assert git_commit(tmp_path) == "unknown"  # not a checkout
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "uniq").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "uniq/code.py").write_text("x = 1\n")
    (tmp_path / "results/table.md").write_text("| a |\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    sha = git("rev-parse", "HEAD").stdout.decode().strip()
    assert git_commit(tmp_path / "uniq") == sha
    (tmp_path / "results/table.md").write_text("| b |\n")  # a rerun rewrote a committed table
    (tmp_path / "uniq/new.py").write_text("")  # untracked
    assert git_commit(tmp_path / "uniq") == sha
    (tmp_path / "uniq/code.py").write_text("x = 2\n")
    assert git_commit(tmp_path / "uniq") == sha + "-dirty"
