"""uniq-bench progress: each training job's state, read from its files."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from uniq import plan, progress
from uniq.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config/paper_data.yaml"  # 2 tasks x 5 methods, 5 seeds batched, 100k steps
RUNS = "results/paper_data/runs/SafetyPointGoal1-v0/default"


def write_log(path: Path, rows: list[tuple[int, float]]) -> None:
    """A training log of (step, wall seconds) rows, as uniq.runlog writes it."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss", "wall_time_s", "updates_per_s"])
        w.writerows((s, 0.1, t, 999.0) for s, t in rows)


@pytest.fixture
def profile(tmp_path) -> Path:
    """One job of each state: bc-mix done, uniq training (checkpoint at 40000, logged to
    42000 at 5 updates/s), safedice pretraining (2 seeds kept), dwbc started."""
    seeds = [f"seed{s}" for s in range(5)]
    for s in seeds:
        d = tmp_path / RUNS / "bc-mix" / s
        d.mkdir(parents=True)
        (d / "policy.pt").write_bytes(b"")
        (d / "train_log.csv").write_text("step\n")
    job = tmp_path / RUNS / "uniq/seed0_1_2_3_4"
    job.mkdir(parents=True)
    torch.save({"step": 40000, "method": {}}, job / "checkpoint.pt")
    (tmp_path / RUNS / "uniq/seed0").mkdir()
    # 30 rows of 1000 steps; the last 10 windows took 2000 s: 5 updates/s (each row claims 999)
    rows = [(1000 * i, 100.0 * i) for i in range(1, 33)] + [
        (1000 * i, 200.0 * i - 3200) for i in range(33, 43)
    ]
    write_log(tmp_path / RUNS / "uniq/seed0/train_log.csv.part", rows)
    job = tmp_path / RUNS / "safedice/seed0_1_2_3_4"
    job.mkdir(parents=True)
    torch.save({"identity": {}, "seeds": {0: {}, 1: {}}}, job / "pretrain.pt")
    (tmp_path / RUNS / "dwbc/seed0").mkdir(parents=True)
    (tmp_path / RUNS / "dwbc/seed0/train_log.csv.part").write_text("step,loss\n")
    (tmp_path / RUNS / "bc-mix/seed0/eval.json").write_text("{}")
    # bc-safe has not started: `snakemake --touch` (continue.sh) left its log empty
    log = tmp_path / RUNS.replace("results", "logs").replace("/runs/", "/train/") / "bc-safe"
    log.mkdir(parents=True)
    (log / "seeds.log").write_text("")
    price = yaml.safe_load(CONFIG.read_text())["price"]  # relative to the workflow's folder
    (tmp_path / price).parent.mkdir(parents=True)
    shutil.copy(ROOT / price, tmp_path / price)
    return tmp_path


def test_each_jobs_state_step_and_time_left(profile):
    jobs = {j.job: j for j in progress.training_jobs(plan.load_config(CONFIG), profile)}
    assert len(jobs) == 10
    goal = "SafetyPointGoal1-v0 default"
    assert jobs[f"{goal} bc-mix"].state == "done"
    uniq = jobs[f"{goal} uniq"]
    assert (uniq.state, uniq.step, uniq.logged) == ("training", 40000, 42000)
    assert uniq.rate == pytest.approx(5.0)  # over the last 10 rows, not the last row's claim
    assert uniq.hours_left == pytest.approx(58000 / 5.0 / 3600)
    safedice = jobs[f"{goal} safedice"]
    assert (safedice.state, safedice.seeds_kept, safedice.seeds) == ("pretraining", 2, 5)
    assert jobs[f"{goal} dwbc"].state == "started"
    assert jobs[f"{goal} bc-safe"].state == "not started" and jobs[f"{goal} bc-safe"].age_s is None
    assert sum(j.state == "not started" for j in jobs.values()) == 6
    done, left = progress.evaluations(plan.load_config(CONFIG), profile)
    assert (len(done), len(done) + len(left)) == (1, 50)


def test_updates_left_for_the_priorities(profile):
    """What uniq.plan.priorities scales each job's price by: done none, the training job
    what its checkpoint has left (not its log, which runs ahead of what a rerun keeps), the
    others absent (all); an unreadable checkpoint leaves every job whole."""
    config = plan.load_config(CONFIG)
    bench = {j.job: j.bench for j in progress.training_jobs(config, profile)}
    goal = "SafetyPointGoal1-v0 default"
    assert progress.updates_left(config, profile) == {
        bench[f"{goal} bc-mix"]: 0.0,
        bench[f"{goal} uniq"]: pytest.approx(0.6),
    }
    (profile / RUNS / "uniq/seed0_1_2_3_4/checkpoint.pt").write_bytes(b"not a checkpoint")
    assert progress.updates_left(config, profile) == {bench[f"{goal} bc-mix"]: 0.0}


def test_a_job_training_its_seeds_one_after_another_counts_the_seeds_done(
    profile, capsys, monkeypatch
):
    """A method that cannot batch (a new baseline's default; BC here, as if it could not):
    in a batched profile its job trains seed 0, then 1, ... each with its own checkpoint.
    Seed 0 done and seed 1 at 90000 of 100000 is 190000 of 500000 updates."""
    from uniq import registry

    monkeypatch.setattr(registry.get_method("bc-safe"), "supports_members", False)
    bc = profile / RUNS / "bc-safe"
    for name in ("policy.pt", "train_log.csv"):
        (bc / "seed0").mkdir(parents=True, exist_ok=True)
        (bc / "seed0" / name).write_bytes(b"")
    (bc / "seed1").mkdir()
    torch.save({"step": 90000}, bc / "seed1/checkpoint.pt")
    write_log(bc / "seed1/train_log.csv.part", [(1000 * i, 10.0 * i) for i in range(1, 93)])
    config = plan.load_config(CONFIG)
    jobs = progress.training_jobs(config, profile)
    (job,) = [j for j in jobs if j.job == "SafetyPointGoal1-v0 default bc-safe"]
    assert (job.one_by_one, job.seeds_done, job.step, job.logged) == (True, 1, 90000, 92000)
    assert job.share_left == pytest.approx(1 - 190000 / 500000)
    assert job.hours_left == pytest.approx((500000 - 192000) / 100.0 / 3600)
    assert progress.updates_left(config, profile)[job.bench] == pytest.approx(0.62)
    assert main(["progress", "--configfile", str(CONFIG), "--directory", str(profile)]) == 0
    assert "| bc-safe | training | seed 2 of 5: 92000 of 100000 (90000) | 100.00 |" in (
        capsys.readouterr().out.replace("SafetyPointGoal1-v0 default ", "")
    )


def test_an_unreadable_checkpoint_is_reported_not_a_traceback(profile, capsys):
    path = profile / RUNS / "uniq/seed0_1_2_3_4/checkpoint.pt"
    path.write_bytes(path.read_bytes()[:40])  # cut short
    assert main(["progress", "--configfile", str(CONFIG), "--directory", str(profile)]) == 0
    out = capsys.readouterr().out
    assert f"| SafetyPointGoal1-v0 default uniq | unreadable | log: {path} cannot be read" in out
    assert "1 job(s) with a checkpoint that cannot be read" in out


def test_the_command_prints_the_table(profile, capsys):
    assert main(["progress", "--configfile", str(CONFIG), "--directory", str(profile)]) == 0
    out = capsys.readouterr().out
    assert (
        "| SafetyPointGoal1-v0 default uniq | training | 42000 of 100000 (40000) | 5.00 | 3.2 |"
        in out
    )
    assert "| SafetyPointGoal1-v0 default safedice | pretraining | 2 of 5 seeds pretrained |" in out
    assert "| SafetyPointGoal1-v0 default dwbc | started |  |  |  |" in out
    assert "| SafetyPointGoal1-v0 default bc-safe | not started |  |  |  |  |" in out
    assert "1 done, 1 training, 1 pretraining, 1 started, 6 not started (of 10)" in out
    assert "Evaluations: 1 of 50." in out
    assert "Learning curves so far" not in out  # no job has a curve point yet


def test_a_pretraining_job_shows_its_logs_last_progress_line(profile, capsys):
    """How far the seed under way has come: the log's last INFO line, not a later warning;
    a started job whose log holds only a warning shows none."""
    logs = profile / RUNS.replace("results", "logs").replace("/runs/", "/train/")
    (logs / "safedice").mkdir(parents=True)
    (logs / "safedice/seeds.log").write_text(
        "2026-12-07 02:39:37,694 INFO uniq.train: pretraining seed 2 (3 of 5)\n"
        "2026-12-07 02:47:56,510 INFO baselines.safedice: classifier step 20000 of 100000, "
        "loss 1.2939\n"
        "2026-12-07 02:48:00,000 WARNING uniq.devices: no CUDA device is visible\n"
    )
    (logs / "dwbc").mkdir(parents=True)
    (logs / "dwbc/seeds.log").write_text(
        "2026-12-07 02:48:00,000 WARNING uniq.devices: no CUDA device is visible\n"
    )
    assert main(["progress", "--configfile", str(CONFIG), "--directory", str(profile)]) == 0
    out = capsys.readouterr().out
    goal = "SafetyPointGoal1-v0 default"
    assert (
        f"| {goal} safedice | pretraining | 2 of 5 seeds pretrained; log: classifier step 20000 "
        "of 100000, loss 1.2939 |" in out
    )
    assert f"| {goal} dwbc | started |  |" in out


def curve_text(rows: list[tuple[int, float, float]]) -> str:
    """A curve.csv of (step, return, cost) rows, as uniq.train writes it."""
    head = "step,return_mean,cost_mean,return_normalized,cost_normalized,episodes\n"
    return head + "".join(f"{s},{r},{c},0,0,20\n" for s, r, c in rows)


def test_curves_so_far_are_seed_means_from_the_files_or_the_checkpoints(profile, capsys):
    """bc-mix (done): each seed's curve.csv. uniq (a batched job training): the job's
    checkpoint keeps each seed's curve, but seed0's newer curve.csv.part has reached 20k, a
    point of one seed of five. dwbc (standing in for a method that cannot batch, whose
    seeds train one by one): seed0's own checkpoint. safedice (pretraining): none."""
    for s in range(5):
        (profile / RUNS / "bc-mix" / f"seed{s}" / "curve.csv").write_text(
            curve_text([(10000, s, 10 * s)])
        )
    members = [{"columns": None, "text": curve_text([(10000, 2.0 * s, 1.0)])} for s in range(5)]
    torch.save(
        {"step": 40000, "curve": members}, profile / RUNS / "uniq/seed0_1_2_3_4/checkpoint.pt"
    )
    (profile / RUNS / "uniq/seed0/curve.csv.part").write_text(
        curve_text([(10000, 100.0, 1.0), (20000, 5.0, 3.0)]) + "30000,7.0"  # a row being written
    )
    torch.save(
        {"step": 2000, "curve": [{"columns": None, "text": curve_text([(10000, -1.5, 7.0)])}]},
        profile / RUNS / "dwbc/seed0/checkpoint.pt",
    )
    config = plan.load_config(CONFIG)
    config["train"]["batch_seeds"] = False  # dwbc's seed0 is a job of its own
    jobs = {j.job: j for j in progress.training_jobs(config, profile)}
    goal = "SafetyPointGoal1-v0 default"
    assert jobs[f"{goal} dwbc seed0"].curve == {10000: (-1.5, 7.0, 1)}
    assert jobs[f"{goal} safedice seed0"].curve == {}

    jobs = {j.job: j for j in progress.training_jobs(plan.load_config(CONFIG), profile)}
    assert jobs[f"{goal} bc-mix"].curve == {10000: (2.0, 20.0, 5)}
    # seed0 from its .part (100), seeds 1-4 from the checkpoint (2, 4, 6, 8)
    assert jobs[f"{goal} uniq"].curve == {10000: (24.0, 1.0, 5), 20000: (5.0, 3.0, 1)}
    assert jobs[f"{goal} safedice"].curve == {}

    assert main(["progress", "--configfile", str(CONFIG), "--directory", str(profile)]) == 0
    out = capsys.readouterr().out
    assert "| training job | 10k | 20k |" in out
    assert f"| {goal} uniq | 24.0 / 1.0 | 5.0 / 3.0 (1 of 5 seeds) |" in out
    assert f"| {goal} bc-mix | 2.0 / 20.0 |  |" in out
    assert f"| {goal} dwbc | -1.5 / 7.0 (1 of 5 seeds) |  |" in out  # seed0's own checkpoint
    assert f"| {goal} safedice |" not in out.split("Learning curves so far")[1]


def test_time_left_counts_training_at_its_rate_and_the_rest_at_the_price(profile):
    """Left: uniq's 58000 updates at 5/s; the 8 jobs not yet training and the 49 evaluations
    not done at the price; nothing for the finished bc-mix job or its evaluation."""
    config = plan.load_config(CONFIG)
    price = {"profile": "paper_data", "cores": 2, "jobs": [
        {"rule": j.rule, "bench": j.bench, "seconds": 3600.0 if j.rule == "train" else 36.0}
        for j in plan.jobs(config)
    ]}  # fmt: skip
    left = progress.time_left(config, price, 2, profile)
    assert left["training"] == pytest.approx(58000 / 5.0 / 3600)
    # 8 training jobs, 49 evaluations, 9 other jobs (4 rollouts, 2 splits, 2 aggregates, 1 figures)
    assert left["priced"] == pytest.approx(8 * 1.0 + 49 * 0.01 + 9 * 0.01)
    assert left["wall_hours"] == pytest.approx((left["training"] + left["priced"]) / 2)
    one_core = progress.time_left(config, price, 1, profile)
    assert one_core["wall_hours"] == pytest.approx(left["cpu_hours"])
    # a job that has run shows no more on a new machine (no benchmark file yet: it is priced)
    bench = profile / "logs/paper_data/benchmarks/figures/main.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text("s\n1\n")
    assert progress.time_left(config, price, 2, profile)["priced"] == pytest.approx(
        left["priced"] - 0.01
    )


def test_a_fresh_clone_reads_the_rate_from_the_checkpoint(profile):
    """save.sh commits checkpoints, not the .part logs: the checkpoint's copy of the log gives
    the rate; with no row yet the job is priced by the share of its steps left."""
    config = plan.load_config(CONFIG)
    part = profile / RUNS / "uniq/seed0/train_log.csv.part"
    ckpt = profile / RUNS / "uniq/seed0_1_2_3_4/checkpoint.pt"
    torch.save({"step": 40000, "log": [{"columns": None, "text": part.read_text()}]}, ckpt)
    part.unlink()
    (uniq,) = [
        j
        for j in progress.training_jobs(config, profile)
        if j.job.endswith("Goal1-v0 default uniq")
    ]
    assert (uniq.step, uniq.logged, uniq.rate) == (40000, 42000, pytest.approx(5.0))
    torch.save({"step": 40000, "log": [{"columns": None, "text": ""}]}, ckpt)
    price = {"profile": "paper_data", "jobs": [
        {"rule": j.rule, "bench": j.bench, "seconds": 3600.0 if j.rule == "train" and "/uniq/" in j.bench else 0.0}
        for j in plan.jobs(config)
    ]}  # fmt: skip
    left = progress.time_left(config, price, 2, profile)
    assert left["training"] == 0 and left["priced"] == pytest.approx(1.0 + 0.6)  # PB1's + 60%


def test_jobs_of_one_seed_are_named_by_their_seed(profile):
    config = plan.load_config(CONFIG)
    config["train"]["batch_seeds"] = False
    names = [j.job for j in progress.training_jobs(config, profile)]
    assert len(names) == len(set(names)) == 50
    assert "SafetyPointGoal1-v0 default bc-mix seed3" in names


def test_a_price_of_another_profile_is_refused(profile, tmp_path, caplog):
    other = tmp_path / "price.json"
    other.write_text('{"profile": "quick", "jobs": []}')
    argv = ["progress", "--configfile", str(CONFIG), "--directory", str(profile)]
    assert main([*argv, "--price", str(other)]) == 2
    assert "a price of profile 'quick', not 'paper_data'" in caplog.text
    assert main([*argv, "--price", str(tmp_path / "missing.json")]) == 2


def test_the_configs_price_is_the_default(profile, capsys):
    """``price:`` in the config, relative to the workflow's folder, prices the time left."""
    config = yaml.safe_load(CONFIG.read_text())
    argv = ["progress", "--configfile", str(profile / "c.yaml"), "--directory", str(profile)]
    (profile / "c.yaml").write_text(yaml.safe_dump(config))  # the fixture copied its price
    assert main(argv) == 0
    assert "Left: " in capsys.readouterr().out
    config.pop("price")
    (profile / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(argv) == 0
    assert "Left: " not in capsys.readouterr().out


def test_an_invalid_config_is_named(tmp_path, caplog):
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: x\ntasks: {NoSuchTask-v0: {data: committed}}\n")
    assert main(["progress", "--configfile", str(bad)]) == 2
    assert "NoSuchTask-v0" in caplog.text
