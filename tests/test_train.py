"""The training loop: resume, NaN guard, errors, outputs (CPU, tiny nets, one thread)."""

from __future__ import annotations

import csv
import logging
import textwrap
import time

import numpy as np
import pytest
import torch
import yaml

from envs.tasks import TaskSpec
from uniq import jobtimes, registry
from uniq.algorithm import UNIQ
from uniq.cli import main as cli_main
from uniq.data import DatasetError, OfflineData, Sampler
from uniq.job import parse_overrides
from uniq.method import ConfigError
from uniq.nets import load_policy
from uniq.train import TrainingDiverged, train

torch.set_num_threads(1)

SPEC = TaskSpec("Tiny-v0", "navigation", obs_dim=3, act_dim=2)
TINY = dict(
    hidden=16, batch_mix=16, batch_un=16, actor_batch=32, ratio_batch=32, ratio_steps=20,
    ratio_eval_every=5,
)  # fmt: skip
FAST = dict(device="cpu", progress=False, log_every=10)


def random_data(n_episodes: int, shift: float, desirable: float, seed: int, obs_dim=3, T=10):
    rng = np.random.default_rng(seed)
    n = n_episodes * T
    obs = rng.normal(shift, 1, (n, obs_dim)).astype(np.float32)
    nxt = rng.normal(shift, 1, (n, obs_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    timeouts = (np.arange(n) % T == T - 1).astype(np.float32)
    return OfflineData(
        obs, act, np.zeros(n), np.zeros(n), nxt, np.zeros(n), timeouts, np.full(n, desirable)
    )


@pytest.fixture
def data(tmp_path):
    un = random_data(4, 1.0, 0.0, 0)
    mix = OfflineData.concatenate([random_data(4, 0.0, 1.0, 1), random_data(4, 1.0, 0.0, 2)])
    mix.attrs.update(n_un=4, n_mix_desirable=4, n_mix_undesirable=4)
    un.save(tmp_path / "un.h5")
    mix.save(tmp_path / "mix.h5")
    return tmp_path / "un.h5", tmp_path / "mix.h5"


def checkpoint_params(run_dir):
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    return state["step"], state["method"]


def assert_same_state(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same_state(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def log_rows(run_dir):
    with open(run_dir / "train_log.csv") as f:
        return [
            {k: v for k, v in row.items() if k not in ("wall_time_s", "updates_per_s")}
            for row in csv.DictReader(f)
        ]


def test_interrupted_and_resumed_run_equals_uninterrupted_run(tmp_path, data, monkeypatch):
    un, mix = data
    kw = TINY
    fast = dict(FAST, log_every=8)  # the checkpoint at 30 falls inside a log window (24, 32]
    train("uniq", SPEC, un, mix, 3, 60, tmp_path / "a", kw, checkpoint_every=30, **fast)

    calls = {"n": 0}
    real_update = UNIQ.update

    def crash_at_45(self, batch):
        calls["n"] += 1
        if calls["n"] == 45:
            raise KeyboardInterrupt  # like a killed job: after the checkpoint at step 30
        return real_update(self, batch)

    monkeypatch.setattr(UNIQ, "update", crash_at_45)
    with pytest.raises(KeyboardInterrupt):
        train("uniq", SPEC, un, mix, 3, 60, tmp_path / "b", kw, checkpoint_every=30, **fast)
    assert checkpoint_params(tmp_path / "b")[0] == 30
    assert not (tmp_path / "b/policy.pt").exists()
    monkeypatch.setattr(UNIQ, "update", real_update)

    pretrain_calls = []
    monkeypatch.setattr(UNIQ, "pretrain", lambda self: pretrain_calls.append(1) or {})
    train("uniq", SPEC, un, mix, 3, 60, tmp_path / "b", kw, checkpoint_every=30, **fast)
    assert pretrain_calls == []  # resumed: the ratio classifiers come from the checkpoint

    step_a, state_a = checkpoint_params(tmp_path / "a")
    step_b, state_b = checkpoint_params(tmp_path / "b")
    assert step_a == step_b == 60
    assert_same_state(state_a, state_b)  # every network and optimizer, bit for bit
    pa, _ = load_policy(tmp_path / "a/policy.pt")
    pb, _ = load_policy(tmp_path / "b/policy.pt")
    assert_same_state(pa.state_dict(), pb.state_dict())
    assert log_rows(tmp_path / "a") == log_rows(tmp_path / "b")  # no duplicated or lost rows
    assert [r["step"] for r in log_rows(tmp_path / "b")] == [str(s) for s in [*range(8, 60, 8), 60]]


def test_a_resume_on_another_setup_warns_and_the_jobs_cpu_time_is_carried(
    tmp_path, data, caplog, request, monkeypatch
):
    """A job may move machines between its pieces: it resumes there, warning that its
    numbers may differ from here on (another thread count), and its CPU seconds go on from
    the checkpoint's, as the resume line uniq.jobtimes reads reports them. A checkpoint
    written before the host and CPU seconds were kept resumes quietly, its CPU unknown."""
    un, mix = data
    threads_before = torch.get_num_threads()
    request.addfinalizer(lambda: torch.set_num_threads(threads_before))
    ckpt = tmp_path / "a/checkpoint.pt"

    def run(steps: int, threads: int, cpu: float) -> tuple[dict, list]:
        """A piece in a process whose CPU clock reads ``cpu``; (checkpoint, log records)."""
        monkeypatch.setattr(jobtimes, "cpu_seconds", lambda: cpu)
        caplog.clear()
        with caplog.at_level(logging.INFO, "uniq"):
            train("bc-mix", SPEC, un, mix, 0, steps, tmp_path / "a", dict(hidden=16),
                  checkpoint_every=10, threads=threads, **FAST)  # fmt: skip
        return torch.load(ckpt, weights_only=False), list(caplog.records)

    def resume_seconds(records) -> tuple[str, str | None]:
        line = next(r.getMessage() for r in records if r.getMessage().startswith("resuming"))
        return jobtimes._RESUMED.search(line).groups()

    def moved(records) -> list[str]:
        return [r.getMessage() for r in records if r.levelno == logging.WARNING and "setup" in r.getMessage()]  # fmt: skip

    first, _ = run(20, 1, 5.0)
    assert first["host"]["threads"] == 1 and first["host"]["device"].startswith("cpu")
    assert first["cpu_time_s"] == 5.0
    second, records = run(40, 2, 7.0)  # more steps: it resumes at step 20
    assert len(moved(records)) == 1 and "threads 1 -> 2" in moved(records)[0]
    wall, cpu = resume_seconds(records)
    assert float(cpu) == 5.0 and float(wall) == pytest.approx(first["wall_time_s"], abs=0.05)
    assert second["cpu_time_s"] == 5.0 + 7.0
    assert run(60, 2, 1.0)[0]["cpu_time_s"] == 13.0 and not moved(caplog.records)  # same setup

    old = torch.load(ckpt, weights_only=False)
    del old["host"], old["cpu_time_s"]
    torch.save(old, ckpt)
    third, records = run(80, 1, 3.0)
    assert not moved(records) and resume_seconds(records)[1] is None
    assert third["cpu_time_s"] is None  # not known from here on: uniq.jobtimes estimates it


def stop_a_cached_fit_part_way(tmp_path, monkeypatch, train_once) -> tuple[float, float]:
    """``train_once()`` (a UNIQ job with :data:`FIT_KW` and ``tmp_path/cache``) stopped at
    its ratio fit's 12th step (in c_mix's fit, after its checks at steps 5 and 10), each step
    burning 0.02 CPU s (a time the log's 0.1 s resolution sees). Returns the (wall, CPU)
    seconds the partial file keeps; the fit is left unpatched."""
    from uniq.ratio import RatioEstimator

    real, calls = RatioEstimator.bce, []

    def slow_then_stop(self, *args):
        calls.append(1)
        if len(calls) == 12:
            raise KeyboardInterrupt
        end = time.process_time() + 0.02
        while time.process_time() < end:
            pass
        return real(self, *args)

    monkeypatch.setattr(RatioEstimator, "bce", slow_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_once()
    monkeypatch.setattr(RatioEstimator, "bce", real)
    (partial,) = (tmp_path / "cache").glob("*.partial.pt")
    wall, cpu = torch.load(partial, weights_only=False)["seconds"]
    # Ten steps of 0.02 CPU s each. Wall is not bounded below by CPU: the two clocks are read
    # one after the other and tick at their own resolutions (CI saw CPU exceed wall by 10 us).
    assert wall >= 0.2 and cpu >= 0.2
    return wall, cpu


def test_a_resumed_job_logs_its_pretraining_again(tmp_path, data, caplog):
    """Snakemake starts a resumed job's log afresh: the resume restates what pretraining
    gave each seed (SafeDICE's alpha, UNIQ's classifier gaps), from the checkpoint."""
    un, mix = data

    def pretrain_lines(steps: int) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.INFO, "uniq.train"):
            train("uniq", SPEC, un, mix, [0, 1], steps, tmp_path / "s{seed}", TINY,
                  checkpoint_every=10, **FAST)  # fmt: skip
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("pretrain (")]

    first = pretrain_lines(10)
    assert [line.split(")")[0] for line in first] == ["pretrain (seed 0", "pretrain (seed 1"]
    again = pretrain_lines(20)  # resumes at step 10
    assert again == [line.replace(")", " from the checkpoint)", 1) for line in first]


FIT_KW = dict(TINY, ratio_check_every=5, ratio_gap_mix=2.0, ratio_gap_un=2.0)


def test_a_ratio_fit_resumed_part_way_counts_its_earlier_part_in_the_jobs_time(
    tmp_path, data, monkeypatch, caplog
):
    """A job stopped inside UNIQ's cached ratio fit resumes the fit from its partial file;
    the fit's seconds before the stop reach the job's resume line (uniq.jobtimes reads it)."""
    un, mix = data
    kw = dict(FIT_KW, ratio_cache_dir=str(tmp_path / "cache"))

    def run():
        train("uniq", SPEC, un, mix, 0, 20, tmp_path / "a", kw, **FAST)

    wall, cpu = stop_a_cached_fit_part_way(tmp_path, monkeypatch, run)
    with caplog.at_level(logging.INFO, "uniq.train"):
        run()
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming"))
    assert tuple(map(float, jobtimes._RESUMED.search(line).groups())) == pytest.approx(
        (wall, cpu), abs=0.051
    )
    ckpt = torch.load(tmp_path / "a/checkpoint.pt", weights_only=False)
    assert ckpt["wall_time_s"] >= wall and ckpt["cpu_time_s"] >= cpu


def test_a_batched_jobs_resumed_fit_counts_once_through_a_second_stop(
    tmp_path, data, monkeypatch, caplog
):
    """Seeds [0, 1]: stopped in the shared ratio fit, then again in seed 1's pretraining, then
    finished. The fit's first part travels with seed 0's time in pretrain.pt and reaches the
    last attempt's resume line once."""
    un, mix = data
    kw = dict(FIT_KW, ratio_cache_dir=str(tmp_path / "cache"))

    def run():
        train("uniq", SPEC, un, mix, [0, 1], 20, tmp_path / "a/seed{seed}", kw, **FAST)

    wall, cpu = stop_a_cached_fit_part_way(tmp_path, monkeypatch, run)
    real_pretrain, seeds_done = UNIQ.pretrain, []

    def stop_at_seed_1(self):
        if seeds_done:
            raise KeyboardInterrupt
        seeds_done.append(1)
        return real_pretrain(self)

    monkeypatch.setattr(UNIQ, "pretrain", stop_at_seed_1)
    with pytest.raises(KeyboardInterrupt):
        run()
    kept = torch.load(tmp_path / "a/seed0_1/pretrain.pt", weights_only=False)["seeds"]
    assert kept[0]["seconds"] >= wall and kept[0]["cpu_seconds"] >= cpu
    monkeypatch.setattr(UNIQ, "pretrain", real_pretrain)
    with caplog.at_level(logging.INFO, "uniq.train"):
        run()
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming")]
    before_wall, before_cpu = map(float, jobtimes._RESUMED.search(line).groups())
    assert before_wall == pytest.approx(kept[0]["seconds"], abs=0.051)  # counted once
    assert before_cpu == pytest.approx(kept[0]["cpu_seconds"], abs=0.051)


def test_a_job_without_a_progress_bar_logs_where_it_is_at_each_checkpoint(tmp_path, data, caplog):
    """The workflow's jobs run with --no-progress: their log says the step, the rate and the
    time left at each checkpoint (hours of silence otherwise at the paper's sizes)."""
    un, mix = data
    with caplog.at_level(logging.INFO, "uniq.train"):
        train("bc-mix", SPEC, un, mix, 0, 30, tmp_path / "a", dict(hidden=16),
              checkpoint_every=10, **FAST)  # fmt: skip
    lines = [r.getMessage() for r in caplog.records if " of 30, " in r.getMessage()]
    assert [line.split(",")[0] for line in lines] == [
        "bc-mix: step 10 of 30",
        "bc-mix: step 20 of 30",
    ]
    assert all("updates/s, about" in line and line.endswith("left") for line in lines)


def test_same_seed_same_numbers_and_other_seed_differs(tmp_path, data):
    un, mix = data
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        train("bc-mix", SPEC, un, mix, seed, 20, tmp_path / name, dict(hidden=16), **FAST)
    a, b, c = (load_policy(tmp_path / n / "policy.pt")[0].state_dict() for n in "abc")
    assert_same_state(a, b)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_nan_in_a_batch_stops_training_naming_step_and_loss(tmp_path, data, monkeypatch):
    un, mix = data
    real_sample = Sampler.sample
    calls = {"n": 0}

    def poisoned(self, batch_size, members=None):
        calls["n"] += 1  # UNIQ samples twice per step (mix, un): call 13 is step 7's D_MIX batch
        out = real_sample(self, batch_size, members)
        if calls["n"] == 13:
            out["observations"] = out["observations"].clone()
            out["observations"][0, 0] = float("nan")
        return out

    monkeypatch.setattr(Sampler, "sample", poisoned)
    with pytest.raises(TrainingDiverged, match=r"critic_loss = nan at step 7\b"):
        train("uniq", SPEC, un, mix, 0, 20, tmp_path / "run", TINY, checkpoint_every=5, **FAST)
    run = tmp_path / "run"
    assert not (run / "policy.pt").exists()
    assert checkpoint_params(run)[0] == 5  # the last good state is kept for inspection
    assert not list(run.glob("*.tmp"))


def test_method_returning_inf_is_caught_by_name(tmp_path, data, monkeypatch):
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "exploding.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass
            import torch
            from baselines.bc import BC

            @dataclass
            class Cfg:
                batch_size: int = 8

            class Exploding(BC):
                name = "exploding-test"
                Config = Cfg

                def __init__(self, cfg, spec, data, device, seed):
                    cfg.hidden, cfg.depth, cfg.lr, cfg.weight_decay = 8, 1, 1e-3, 0.0
                    super().__init__(cfg, spec, data, device, seed)
                    self.t = 0

                def update(self, batch):
                    out = super().update(batch)
                    self.t += 1
                    return {**out, "blowup": torch.tensor(float("inf") if self.t == 4 else 1.0)}
            """
        )
    )
    monkeypatch.setenv("UNIQ_EXTRA_METHODS", str(tmp_path / "methods"))
    registry.clear_cache()
    try:
        assert "exploding-test" in registry.available()
        un, mix = data
        with pytest.raises(TrainingDiverged, match=r"blowup = inf at step 4\b"):
            train("exploding-test", SPEC, un, mix, 0, 10, tmp_path / "run", {}, **FAST)
    finally:
        monkeypatch.delenv("UNIQ_EXTRA_METHODS")
        registry.clear_cache()


def test_duplicate_algorithm_names_are_an_error(tmp_path, monkeypatch):
    (tmp_path / "dup.py").write_text(
        "from uniq.algorithm import UNIQ\n\nclass Other(UNIQ):\n    name = 'uniq'\n"
    )
    monkeypatch.setenv("UNIQ_EXTRA_METHODS", str(tmp_path))
    registry.clear_cache()
    try:
        with pytest.raises(ConfigError, match="defined twice"):
            registry.available()
    finally:
        monkeypatch.delenv("UNIQ_EXTRA_METHODS")
        registry.clear_cache()


def test_learners_never_see_rewards_costs_or_labels(data):
    from uniq.seeding import seed_everything
    from uniq.sources import make_sources

    un, mix = (OfflineData.load(p) for p in data)
    sources = make_sources(un, mix, torch.device("cpu"), seed_everything(0))
    for name in ("un", "mix", "mix_desirable"):
        batch = sources[name].sample(4)
        assert not {"rewards", "costs", "is_desirable"} & set(batch), name
        assert {"observations", "actions", "next_observations", "terminals", "index"} <= set(batch)
    assert len(sources["mix_desirable"].tensors["index"]) == 40  # the 4 desirable episodes


def test_dataset_of_another_task_is_rejected(tmp_path, data):
    un, _ = data
    wrong = random_data(2, 0.0, 1.0, 5, obs_dim=4)
    wrong.save(tmp_path / "wrong.h5")
    with pytest.raises(DatasetError, match="do not match task Tiny-v0"):
        train("uniq", SPEC, un, tmp_path / "wrong.h5", 0, 5, tmp_path / "run", TINY, **FAST)


def test_empty_source_fails_only_for_methods_that_use_it(tmp_path, data):
    _, mix = data
    empty = random_data(1, 0.0, 0.0, 0).select_rows(np.zeros(0, dtype=int))
    empty.save(tmp_path / "empty_un.h5")
    train("bc-mix", SPEC, tmp_path / "empty_un.h5", mix, 0, 5, tmp_path / "bc", {}, **FAST)
    with pytest.raises(DatasetError, match="D_UN has no rows"):
        train("uniq", SPEC, tmp_path / "empty_un.h5", mix, 0, 5, tmp_path / "u", TINY, **FAST)


def test_unknown_algorithm_lists_known_ones(tmp_path, data):
    with pytest.raises(ConfigError, match=r"unknown algorithm 'uniqq'.*bc-mix.*uniq"):
        train("uniqq", SPEC, *data, 0, 5, tmp_path / "run", {}, **FAST)


def test_unknown_or_mistyped_hyper_parameter_is_explained(tmp_path, data):
    with pytest.raises(ConfigError, match=r"\['reward_scale'\].*valid ones: .*reward_factor"):
        train("uniq", SPEC, *data, 0, 5, tmp_path / "run", {"reward_scale": 1.0}, **FAST)
    with pytest.raises(ConfigError, match="ratio_form='both'"):
        train("uniq", SPEC, *data, 0, 5, tmp_path / "run", {"ratio_form": "both"}, **FAST)
    with pytest.raises(ConfigError, match="ratio_steps='many'.*expected int"):
        train("uniq", SPEC, *data, 0, 5, tmp_path / "run", {"ratio_steps": "many"}, **FAST)


def test_methods_learn_the_run_length_and_may_reject_the_split(tmp_path, data):
    tiny = dict(hidden=16, disc_hidden=16, batch_size=16)
    train("dwbc", SPEC, *data, 0, 20, tmp_path / "run", tiny, **FAST)
    _, method = checkpoint_params(tmp_path / "run")
    # a 20-step run steps DWBC's discriminator every update (20 // 5000 -> 1); a method
    # that never learnt the length would keep the published interval, 1 step in 20
    assert int(method["disc_opt"]["state"][0]["step"]) == 20
    # D_MIX is half undesirable (s = 0.5): DWBC needs eta > s/2, checked before training
    with pytest.raises(ConfigError, match=r"eta=0.2 <= .*0.250"):
        train("dwbc", SPEC, *data, 0, 5, tmp_path / "bad", dict(tiny, eta=0.2), **FAST)
    assert not (tmp_path / "bad" / "checkpoint.pt").exists()


def test_set_values_are_yaml_scalars():
    assert parse_overrides(["a=1e-4", "b=3", "c=false", "d=state_action", "e=0.5"]) == {
        "a": 1e-4, "b": 3, "c": False, "d": "state_action", "e": 0.5,
    }  # fmt: skip
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["alpha"])


def test_resuming_with_another_config_is_refused(tmp_path, data):
    train("uniq", SPEC, *data, 0, 5, tmp_path / "run", TINY, **FAST)
    with pytest.raises(ConfigError, match="different run .*config"):
        train("uniq", SPEC, *data, 0, 10, tmp_path / "run", dict(TINY, alpha=0.1), **FAST)


def test_resuming_with_other_curve_settings_is_refused(tmp_path, data, fake_rollouts):
    """A finished run rerun with more curve episodes, or with a curve it never had, would
    append nothing (or write an empty curve.csv) under a config.yaml naming the new ones."""
    curve = dict(FAST, eval_every=5, eval_episodes=1, reference_paths=["ref.h5"])
    train("uniq", SPEC, *data, 0, 10, tmp_path / "a", TINY, **curve)
    with pytest.raises(
        ConfigError,
        match=r"curve every 5 updates on 1 episode\(s\); the config asks for a learning curve every 5 updates on 3",
    ):
        train("uniq", SPEC, *data, 0, 10, tmp_path / "a", TINY, **dict(curve, eval_episodes=3))
    train("uniq", SPEC, *data, 0, 20, tmp_path / "a", TINY, **curve)  # same settings: resumes
    train("uniq", SPEC, *data, 0, 10, tmp_path / "b", TINY, **FAST)  # no curve
    with pytest.raises(
        ConfigError,
        match="trained with no learning curve; the config asks for a learning curve every 5",
    ):
        train("uniq", SPEC, *data, 0, 10, tmp_path / "b", TINY, **curve)
    # ... unless no point was due yet: its curve is whole all the same
    train("uniq", SPEC, *data, 0, 3, tmp_path / "c", TINY, **FAST)
    train("uniq", SPEC, *data, 0, 10, tmp_path / "c", TINY, **curve)
    with open(tmp_path / "c/curve.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [5, 10]
    # a checkpoint written before the settings were kept: refused only with no curve in it
    ckpt = tmp_path / "b/checkpoint.pt"
    state = torch.load(ckpt, weights_only=False)
    torch.save({k: v for k, v in state.items() if k != "curve_settings"}, ckpt)
    with pytest.raises(
        ConfigError,
        match="trained with no learning curve; the config asks for a learning curve every 5",
    ):
        train("uniq", SPEC, *data, 0, 10, tmp_path / "b", TINY, **curve)
    # ... and one with a curve cannot say how it was evaluated: resumed unchecked
    state = torch.load(tmp_path / "a/checkpoint.pt", weights_only=False)
    torch.save(
        {k: v for k, v in state.items() if k != "curve_settings"}, tmp_path / "a/checkpoint.pt"
    )
    train("uniq", SPEC, *data, 0, 25, tmp_path / "a", TINY, **dict(curve, eval_episodes=2))


def test_a_damaged_checkpoint_or_ratio_cache_is_named_with_the_fix(tmp_path, data):
    """Cut short (a copy that ran out of disk): a clear error naming the file and what
    deleting it does, not torch's unpickling traceback; the file is left as it was."""
    kw = dict(TINY, ratio_cache_dir=str(tmp_path / "cache"))
    train("uniq", SPEC, *data, 0, 5, tmp_path / "run", kw, **FAST)
    ckpt = tmp_path / "run/checkpoint.pt"
    (cache,) = (tmp_path / "cache").glob("*.pt")
    for damaged, fix in ((ckpt, "the job starts over"), (cache, "classifiers are fitted again")):
        whole = damaged.read_bytes()
        damaged.write_bytes(whole[: len(whole) // 2])
        out = tmp_path / f"again_{damaged.stem}" if damaged == cache else tmp_path / "run"
        with pytest.raises(ConfigError, match=rf"{damaged.name} cannot be read .*delete it.*{fix}"):
            train("uniq", SPEC, *data, 0, 10, out, kw, **FAST)
        assert len(damaged.read_bytes()) == len(whole) // 2
        damaged.write_bytes(whole)


def test_cli_writes_complete_outputs_and_no_partial_files(tmp_path, data, monkeypatch):
    # The CLI takes a registered task name; register the tiny spec for this test.
    monkeypatch.setitem(__import__("envs.tasks").tasks.TASKS, SPEC.name, SPEC)
    un, mix = data
    out = tmp_path / "runs" / "uniq" / "seed0"
    argv = ["train", "--algo", "uniq", "--task", SPEC.name, "--un", str(un), "--mix", str(mix)]
    argv += ["--seed", "0", "--steps", "25", "--out", str(out), "--label", "uniq-test"]
    argv += ["--variant", "v1", "--device", "cpu", "--log-every", "10", "--no-progress"]
    for k, v in TINY.items():
        argv += ["--set", f"{k}={v}"]
    assert cli_main(argv) == 0

    policy, meta = load_policy(out / "policy.pt")
    assert policy.act(torch.zeros(1, 3)).shape == (1, 2)
    assert meta["algo"] == "uniq-test" and meta["base_algo"] == "uniq"
    assert meta["task"] == SPEC.name and meta["variant"] == "v1" and meta["steps"] == 25
    assert meta["variant_params"] == {"n_un": 4, "n_mix_desirable": 4, "n_mix_undesirable": 4}
    assert set(meta["dataset_checksums"]) == {"un", "mix"} and meta["git_commit"]
    assert meta["config"]["hidden"] == 16 and meta["uses_hidden_labels"] is False
    assert [r["step"] for r in log_rows(out)] == ["10", "20", "25"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["config"]["reward_factor"] == 5.0 and config["seed"] == 0
    assert config["data"]["mix"]["checksum"] == meta["dataset_checksums"]["mix"]
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt", "config.yaml", "policy.pt", "train_log.csv",
    ]  # fmt: skip

    # Errors come back as a non-zero exit with the message, not a traceback.
    bad = argv[:]
    bad[bad.index("uniq")] = "nope"
    assert cli_main(bad) == 2


def test_periodic_evaluation_writes_curve_and_leaves_training_unchanged(
    tmp_path, data, fake_rollouts
):
    from envs import evaluate

    seen = fake_rollouts
    kw = dict(device="cpu", progress=False, log_every=5)
    # UNIQ samples actions from torch's global RNG, which the rollout also draws from.
    train("uniq", SPEC, *data, 0, 12, tmp_path / "plain", TINY, **kw)
    train(
        "uniq", SPEC, *data, 0, 12, tmp_path / "curve", TINY, eval_every=5,
        eval_episodes=2, reference_paths=["ref.h5"], **kw,
    )  # fmt: skip
    with open(tmp_path / "curve/curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["5", "10", "12"]
    assert list(rows[0]) == [
        "step", "return_mean", "cost_mean", "return_normalized", "cost_normalized", "episodes",
    ]  # fmt: skip
    assert float(rows[0]["cost_mean"]) == 0.5 and float(rows[0]["cost_normalized"]) == 0.5 / 25
    assert seen == [evaluate.eval_seed_base(0)] * 3
    a = load_policy(tmp_path / "plain/policy.pt")[0].state_dict()
    b = load_policy(tmp_path / "curve/policy.pt")[0].state_dict()
    assert_same_state(a, b)


@pytest.mark.parametrize("seeds", [[3], [0, 1]], ids=["one_seed", "two_seeds"])
def test_the_loop_adds_nothing_to_a_bare_sample_update_loop(tmp_path, data, fake_rollouts, seeds):
    """Logging, checkpoints, curve evaluations and a resume change no number: ``train`` ends
    bit for bit where the bare recipe does (seed, sources, method, pretrain, then sample and
    update); a one-seed run is a batch of one through the same code as K seeds."""
    from uniq.seeding import job_seed, seed_everything
    from uniq.sources import make_sources
    from uniq.train import build_method, pretrain

    steps = 23
    un, mix = (OfflineData.load(p, SPEC) for p in data)
    loop = dict(FAST, log_every=4, checkpoint_every=6, eval_every=5, eval_episodes=1)
    train("uniq", SPEC, *data, seeds[0] if len(seeds) == 1 else seeds, 11, tmp_path / "s{seed}",
          TINY, **loop)  # fmt: skip
    for s in seeds:  # what a workflow manager deletes before it reruns an interrupted job
        for name in ("policy.pt", "train_log.csv", "curve.csv", "config.yaml"):
            (tmp_path / f"s{s}" / name).unlink()
    train("uniq", SPEC, *data, seeds, steps, tmp_path / "s{seed}", TINY, **loop)

    cfg = UNIQ.Config(**TINY)
    dev = torch.device("cpu")
    generator = seed_everything(job_seed(seeds))
    sources = make_sources(un, mix, dev, generator)
    method = build_method(UNIQ, cfg, SPEC, sources, dev, seeds, steps)
    pretrain(method, seeds, lambda own, s: build_method(UNIQ, cfg, SPEC, own, dev, [s], steps))
    wanted = method.batches()
    for _ in range(steps):
        method.update({k: sources[src].sample(n, method.members) for k, (src, n) in wanted.items()})
    for k, s in enumerate(seeds):
        saved = load_policy(tmp_path / f"s{s}/policy.pt")[0].state_dict()
        assert_same_state(saved, method.deployable_policy(k).state_dict())
