"""Bad or unusual inputs (issue 35): each gets a clear error (exit 2, no traceback) or is
accepted with a warning, and nothing already computed is touched."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from envs.tasks import TASKS, TaskSpec
from uniq import train as train_module
from uniq import workflow as W
from uniq.atomic import atomic_write_text
from uniq.cli import main as cli_main
from uniq.data import DatasetError, OfflineData
from uniq.lock import OutputLocked, lock_file, output_lock
from uniq.train import train

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SPEC = TaskSpec("Tiny-v0", "navigation", obs_dim=3, act_dim=2)
TINY = dict(hidden=16, batch_size=16)
FAST = dict(device="cpu", progress=False, log_every=10)
HOLD = (
    "import sys, time\n"
    "from uniq.lock import output_lock\n"
    "with output_lock(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(120)\n"
)


def episodes(n: int, desirable: float, seed: int, T: int = 10, scale: float = 1.0) -> OfflineData:
    rng = np.random.default_rng(seed)
    rows = n * T
    return OfflineData(
        rng.normal(size=(rows, 3)), scale * rng.uniform(-1, 1, (rows, 2)), np.zeros(rows),
        np.zeros(rows), rng.normal(size=(rows, 3)), np.zeros(rows),
        (np.arange(rows) % T == T - 1), np.full(rows, desirable),
    )  # fmt: skip


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setitem(TASKS, SPEC.name, SPEC)
    episodes(4, 0.0, 0).save(tmp_path / "un.h5")
    OfflineData.concatenate([episodes(4, 1.0, 1), episodes(4, 0.0, 2)]).save(tmp_path / "mix.h5")
    return tmp_path / "un.h5", tmp_path / "mix.h5"


def train_argv(data, out, *extra) -> list[str]:
    argv = ["train", "--algo", "bc-mix", "--task", SPEC.name, "--un", str(data[0])]
    argv += ["--mix", str(data[1]), "--steps", "20", "--out", str(out), "--device", "cpu"]
    argv += ["--log-every", "10", "--no-progress", "--set", "hidden=16", "--set", "batch_size=16"]
    return argv + list(extra)


def errors(caplog) -> str:
    return " ".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")


# ---------------------------------------------------------------------------- concurrent writers
def test_a_second_train_into_a_locked_folder_exits_2_naming_the_holder(tmp_path, data, caplog):
    out = tmp_path / "runs" / "bc-mix" / "seed0"
    out.mkdir(parents=True)
    (out / "train_log.csv").write_text("the first writer's\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert cli_main(train_argv(data, out)) == 2
        assert str(out) in errors(caplog) and f"pid {holder.pid}" in errors(caplog)
        assert sorted(p.name for p in out.iterdir()) == ["train_log.csv"]
        assert (out / "train_log.csv").read_text() == "the first writer's\n"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel released the killed holder's lock; its lock file stays and blocks no one
    assert lock_file(out).exists()
    assert cli_main(train_argv(data, out)) == 0
    assert (out / "train_log.csv").read_text().count("step") == 1
    assert not lock_file(out).exists()  # a clean exit removes it


def test_a_forked_worker_does_not_keep_a_killed_writers_lock(tmp_path):
    # the child says it is past fork (its at-fork handler has run) before the parent is killed:
    # on a busy machine the parent can print and be killed before the child is ever scheduled.
    # One write(2) a process: print's pieces, unbuffered, would interleave in the pipe.
    fork = HOLD.replace(
        "    print('held', flush=True)",
        "    child = os.fork()\n"
        "    os.write(1, f'{child} held\\n'.encode() if child else b'forked\\n')",
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", "import os\n" + fork, str(tmp_path / "out")],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    child = None
    try:
        lines = sorted(holder.stdout.readline().split() for _ in range(2))
        assert lines[1] == ["forked"] and lines[0][1] == "held", lines
        child = int(lines[0][0])
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        os.kill(child, 0)  # the env worker outlives its parent...
        with output_lock(tmp_path / "out"):  # ...without holding the lock
            pass
    finally:
        holder.kill()
        holder.wait()
        if child is not None:
            os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize(
    "argv, out",
    [
        (["evaluate", "--policy", "random", "--task", "SafetyPointGoal1-v0", "--out"], "e.json"),
        (["aggregate", "--experiment", "main", "x.json", "--out"], "main"),
        (["demonstrator", "--task", "SafetyPointGoal1-v0", "--kind", "safe", "--steps", "10",
          "--out"], "demonstrator_safe.pt"),
        (["collect", "--task", "SafetyPointGoal1-v0", "--scripted", "safe", "--episodes", "1",
          "--out"], "rollouts_safe.h5"),
        (["split", "--task", "SafetyPointGoal1-v0", "--safe", "s.h5", "--unsafe", "u.h5",
          "--n-un", "1", "--n-mix-desirable", "1", "--n-mix-undesirable", "1", "--out-dir"], "v"),
    ],
    ids=lambda v: v[0] if isinstance(v, list) else "",
)  # fmt: skip
def test_every_writer_refuses_an_output_another_process_writes(tmp_path, caplog, argv, out):
    out = tmp_path / out
    with output_lock(out):
        assert cli_main([*argv, str(out)]) == 2
    assert "being written by another process" in errors(caplog)
    assert not out.exists()


def test_runs_sharing_the_ratio_cache_fit_it_under_its_lock(tmp_path, data, monkeypatch):
    from uniq.ratio import RatioEstimator

    fit, held = RatioEstimator._fit_gap, []

    def fit_checking_the_lock(self, source, gen, partial=None):
        cache = next(Path(tmp_path / "cache").glob("*.pt"), None)
        assert cache is None  # nothing written yet; another run would now wait for the lock
        with pytest.raises(OutputLocked):
            with output_lock(self.cache_path(source)):
                pass
        held.append(True)
        return fit(self, source, gen, partial)

    monkeypatch.setattr(RatioEstimator, "_fit_gap", fit_checking_the_lock)
    cfg = dict(hidden=16, batch_mix=16, batch_un=16, actor_batch=32, ratio_batch=32,
               ratio_steps=20, ratio_eval_every=5, ratio_cache_dir=str(tmp_path / "cache"))  # fmt: skip
    train("uniq", SPEC, *data, 0, 5, tmp_path / "a", cfg, **FAST)
    train("uniq", SPEC, *data, 1, 5, tmp_path / "b", cfg, **FAST)  # loads the cache
    assert held == [True]


# ---------------------------------------------------------------------------- shared clusters
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_outputs_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "eval.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "eval.json").stat().st_mode) == mode


# ---------------------------------------------------------------------------- messages, not tracebacks
def test_an_out_of_range_hyper_parameter_is_a_message(tmp_path, data, caplog):
    assert cli_main(train_argv(data, tmp_path / "r1", "--set", "lr=-0.1")) == 2
    assert "lr" in errors(caplog) and "-0.1" in errors(caplog)
    dwbc = train_argv(data, tmp_path / "r2", "--set", "actor_weight_decay=-1.0")
    dwbc[dwbc.index("bc-mix")] = "dwbc"
    assert cli_main(dwbc) == 2  # torch's own check, named
    assert "weight_decay" in errors(caplog) and "actor_weight_decay" in errors(caplog)


@pytest.fixture
def evaluations(monkeypatch) -> list:
    from envs import evaluate

    calls = []
    monkeypatch.setattr(evaluate, "evaluate_policy", lambda *a, **k: calls.append(a) or {})
    return calls


def test_an_unwritable_destination_fails_before_any_episode(tmp_path, evaluations, caplog):
    (tmp_path / "file").write_text("")
    argv = ["evaluate", "--policy", "random", "--task", "SafetyPointGoal1-v0", "--out"]
    assert cli_main([*argv, str(tmp_path / "file" / "eval.json")]) == 2
    assert "cannot write" in errors(caplog) and evaluations == []
    assert cli_main([*argv, str(tmp_path / "ok" / "eval.json")]) == 0 and len(evaluations) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_fails_before_any_episode(tmp_path, evaluations, caplog):
    (tmp_path / "ro").mkdir(mode=0o555)
    argv = ["evaluate", "--policy", "random", "--task", "SafetyPointGoal1-v0", "--out"]
    assert cli_main([*argv, str(tmp_path / "ro" / "eval.json")]) == 2
    assert "Permission denied" in errors(caplog) and evaluations == []


def test_train_into_an_unwritable_folder_is_a_message(tmp_path, data, caplog):
    (tmp_path / "file").write_text("")
    assert cli_main(train_argv(data, tmp_path / "file" / "run")) == 2
    assert "cannot write" in errors(caplog)


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path, caplog):
    path = tmp_path / "quick.yaml"
    path.write_text("profile: quick\ntasks: [SafetyPointGoal1-v0\ntrain: {}\n")
    assert cli_main(["check-config", str(path)]) == 2
    assert f"{path}, line 3" in errors(caplog) and "tab" not in errors(caplog)
    path.write_text("profile: quick\ntasks:\n\tSafetyPointGoal1-v0: {}\n")
    assert cli_main(["check-config", str(path)]) == 2
    assert "line 3" in errors(caplog) and "spaces" in errors(caplog)
    assert cli_main(["check-config", str(ROOT / "config" / "smoke.yaml")]) == 0


# ---------------------------------------------------------------------------- errors that came hours late
def smoke() -> dict:
    from snakemake.utils import validate

    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    validate(config, str(ROOT / "config" / "schema.yaml"))
    return config


def test_the_workflow_check_coerces_every_set_value():
    config = smoke()
    algo = next(a for a in config["algorithms"] if W.method_of(config, a) == "uniq")
    config["algorithms"][algo]["set"] = {"actor_lr": "fast"}
    with pytest.raises(W.WorkflowConfigError, match=rf"algorithms.{algo}.set.*actor_lr='fast'"):
        W.check(config)
    config["algorithms"][algo]["set"] = {"actor_lr": -1e-4}
    with pytest.raises(W.WorkflowConfigError, match=r"actor_lr.*>= 0"):
        W.check(config)
    config = smoke()
    config["demonstrator"]["set"] = {"lr": "fast"}
    with pytest.raises(W.WorkflowConfigError, match=r"demonstrator.set.*lr='fast'"):
        W.check(config)


# ---------------------------------------------------------------------------- misleading errors
def test_a_variant_without_desirable_trajectories_names_the_real_cause(tmp_path, data):
    config = smoke()
    variant = next(iter(config["datasets"]["variants"]))
    config["datasets"]["variants"][variant]["n_mix_desirable"] = 0
    with pytest.raises(W.WorkflowConfigError, match=r"n_mix_desirable is 0.*BC-safe") as err:
        W.check(config)
    assert "eta" not in str(err.value)
    episodes(4, 0.0, 3).save(tmp_path / "bad_mix.h5")
    with pytest.raises(DatasetError, match=r"no desirable trajectory.*BC-safe"):
        train("dwbc", SPEC, data[0], tmp_path / "bad_mix.h5", 0, 5, tmp_path / "r", {}, **FAST)


# ---------------------------------------------------------------------------- silent acceptance
def test_actions_outside_the_action_box_are_refused(tmp_path, data):
    episodes(4, 0.0, 0, scale=1.5).save(tmp_path / "wide.h5")
    with pytest.raises(DatasetError, match=r"wide.h5: \d+ of 40 rows have actions outside"):
        train("bc-mix", SPEC, tmp_path / "wide.h5", data[1], 0, 5, tmp_path / "r", TINY, **FAST)


def test_a_dataset_without_episode_ends_is_refused(tmp_path, data):
    un = episodes(4, 0.0, 0)
    un.timeouts[:] = 0
    un.save(tmp_path / "flat.h5")
    with pytest.raises(DatasetError, match=r"flat.h5: none of its 40 rows is flagged"):
        train("bc-mix", SPEC, tmp_path / "flat.h5", data[1], 0, 5, tmp_path / "r", TINY, **FAST)


def test_an_option_given_twice_is_an_error(tmp_path, data, capsys):
    with pytest.raises(SystemExit) as exit:
        cli_main(train_argv(data, tmp_path / "r", "--seed", "0", "--seed", "1"))
    assert exit.value.code == 2
    assert "--seed given twice" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_curves_off_and_absurd_step_counts_are_warned(tmp_path, data, caplog, monkeypatch):
    assert cli_main(train_argv(data, tmp_path / "r", "--eval-every", "0")) == 0
    assert "--eval-every 0: no learning curve" in caplog.text
    caplog.clear()
    assert cli_main(train_argv(data, tmp_path / "r2")) == 0  # the default says nothing
    assert "learning curve" not in caplog.text
    monkeypatch.setattr(train_module, "STEPS_WARNING", 10)
    train("bc-mix", SPEC, *data, 0, 20, tmp_path / "r3", TINY, **FAST)
    assert "--steps 20 is over 10" in caplog.text


# ---------------------------------------------------------------------------- the README
def test_the_readme_troubleshooting_answers_the_edge_cases():
    readme = (ROOT / "README.md").read_text()
    schema = (ROOT / "config" / "schema.yaml").read_text()
    assert "cost_limit" not in schema and "no override" in readme  # kappa: envs/tasks.py only
    assert "80), overridable per task in the config" not in readme
    trouble = readme.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    for needle in ("--forcerun", "-dirty", "--quiet rules", "--summary", "check-config",
                   "Directory cannot be locked", "being written by another process", "umask",
                   "outside [-1, 1]", "--eval-every 0", "given twice"):  # fmt: skip
        assert needle in trouble, needle
