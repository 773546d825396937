"""``uniq-bench plan`` (uniq/plan.py): the job grid, the arithmetic of a price, the bursts on a
tiny config, the check against benchmark files (uniq/jobtimes.py), the README's job counts."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path

import pytest

from uniq import jobtimes, plan
from uniq import workflow as W

ROOT = Path(__file__).resolve().parents[1]
PROFILES = {
    "paper": "config/config.yaml",
    "quick": "config/quick.yaml",
    "paper_data": "config/paper_data.yaml",
    "smoke": "config/smoke.yaml",
}


@pytest.fixture(scope="module")
def configs():
    return {name: plan.load_config(ROOT / path) for name, path in PROFILES.items()}


def test_smoke_grid_counts_each_rule(configs):
    counts = plan.job_counts(configs["smoke"])
    # 3 tasks: HalfCheetah trains 2 demonstrators; 3 x 2 rollouts; splits: HalfCheetah 3, the
    # others 1; 20 runs of one seed, each evaluated; 4 experiments x (aggregate, last-k, figures)
    assert counts == {
        "demonstrator": 2, "rollouts": 6, "dataset": 5, "train": 20, "evaluate": 20,
        "aggregate": 8, "figures": 4, "all": 1, "total": 66,
    }  # fmt: skip


def test_batched_seeds_make_one_train_job_per_env_variant_algo(configs):
    config = copy.deepcopy(configs["paper"])
    assert config["train"]["batch_seeds"]
    batched = plan.job_counts(config)
    config["train"]["batch_seeds"] = False
    single = plan.job_counts(config)
    assert single["train"] == 5 * batched["train"] == 650
    assert single["evaluate"] == batched["evaluate"] == 650


@pytest.mark.slow
def test_grid_is_snakemakes_job_for_job(configs):
    """Every job of ``snakemake -n --forceall`` (quick: seeds batched) is in the grid, named
    by the same benchmark file, and nothing else is."""
    out = subprocess.run(
        ["snakemake", "-n", "--forceall", "--configfile", PROFILES["quick"]],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    prefix = "logs/quick/benchmarks/"
    files = {m[len(prefix) :] for m in re.findall(r"benchmark: (\S+)", out)}
    grid = [j for j in plan.jobs(configs["quick"]) if j.rule != "all"]
    assert files == {j.bench for j in grid}
    assert int(re.search(r"^total\s+(\d+)", out, re.M).group(1)) == len(grid) + 1


def test_readme_states_each_profiles_job_count(configs):
    """The README's job counts are the configs' (they went stale once: 1359 / 49 jobs)."""
    readme = (ROOT / "README.md").read_text()
    for name, config in configs.items():
        counts = plan.job_counts(config)
        row = next(ln for ln in readme.splitlines() if ln.startswith(f"| `{name}` | `config/"))
        stated = re.search(r"(\d+) jobs \((\d+) training", row)
        assert stated, f"README's {name} row states no 'N jobs (M training ...)'"
        assert (int(stated[1]), int(stated[2])) == (counts["total"], counts["train"]), (
            f"README says {name} has {stated[1]} jobs ({stated[2]} training); the config "
            f"gives {counts['total']} ({counts['train']}): update the README"
        )
        priced = re.search(rf"^\| `{name}` \| ([\d,]+) \|", readme, re.M)  # the price table
        assert priced and int(priced[1].replace(",", "")) == counts["total"], (
            f"README's price of {name} is for another job count; rerun uniq-bench plan"
        )


def test_prices_follow_the_units(configs):
    config = configs["smoke"]
    tasks = list(config["tasks"])
    u = plan.Units(
        startup_s=2.0,
        env={t: {"build_s": 1.0, "reset_s": 0.5, "step_s": 0.001} for t in tasks},
        policy={k: 0.0 for k in ("256x1", "64x1")},
        update={f"{a} x1": 0.01 for a in config["algorithms"]},
        pretrain={"uniq": [0.1, 0.0], "uniq-nocorr": [0.1, 0.0], "safedice": [0.2, 0.0]},
        demo={f"SafetyHalfCheetahVelocity-v1 {k}": 0.05 for k in ("safe", "unsafe")},
    )
    by_bench = {j.bench: j.seconds for j in plan.jobs(config, u)}
    # evaluate: 2 episodes of 1000 steps on one env: 2 + 1 + 2 x (0.5 + 1000 x 0.001)
    assert by_bench["evaluate/SafetyPointGoal1-v0/default/uniq/seed0.tsv"] == pytest.approx(6.0)
    # train bc-mix: 50 updates x 0.01 + curves at 25 and 50 of 1 episode (1 + 0.5 + 1)
    assert by_bench["train/SafetyPointGoal1-v0/default/bc-mix/seed0.tsv"] == pytest.approx(
        2 + 0.5 + 2 * 2.5
    )
    # uniq adds 20 ratio steps x 0.1 s of pretraining
    assert by_bench["train/SafetyPointGoal1-v0/default/uniq/seed0.tsv"] == pytest.approx(
        2 + 2.0 + 0.5 + 2 * 2.5
    )
    # a 1000-step SAC demonstrator: 1000 steps, 1 reset, 1 build; no update before step 5000
    assert by_bench["demonstrator/SafetyHalfCheetahVelocity-v1_safe.tsv"] == pytest.approx(
        2 + 1.0 + 0.5 + 1.0
    )
    summary = plan.summarize(plan.jobs(config, u), cores=2)
    evals = summary["rules"]["evaluate"]
    assert evals["jobs"] == 20 and evals["job_hours"] == pytest.approx(20 * 6.0 / 3600)
    assert evals["wall_hours"] == pytest.approx(20 * 6.0 / 3600 / 2)
    assert summary["total"]["job_hours"] == pytest.approx(
        sum(r["job_hours"] for r in summary["rules"].values())
    )


def test_cached_classifiers_are_priced_once_per_dataset(configs):
    """UNIQ's ``ratio_cache_dir``: the seeds (and arms) of one dataset share one fit."""
    config = copy.deepcopy(configs["smoke"])
    config["train"].update(seeds=[0, 1], batch_seeds=True)
    config["algorithms"]["uniq"]["set"]["ratio_cache_dir"] = "cache"
    tasks = list(config["tasks"])
    u = plan.Units(
        env={t: {"build_s": 0.0, "reset_s": 0.0, "step_s": 0.0} for t in tasks},
        update={f"{a} x2": 0.0 for a in config["algorithms"]},
        pretrain={"uniq": [1.0, 0.0], "uniq-nocorr": [1.0, 0.0], "safedice": [1.0, 0.0]},
        demo={f"SafetyHalfCheetahVelocity-v1 {k}": 0.0 for k in ("safe", "unsafe")},
    )
    by_bench = {j.bench: j.seconds for j in plan.jobs(config, u)}
    cheetah = "train/SafetyHalfCheetahVelocity-v1/default/{}/seeds.tsv"
    # smoke: 20 ratio steps, one fit for both seeds; SafeDICE (no cache): 20 steps per seed
    assert by_bench[cheetah.format("uniq")] == pytest.approx(20.0)
    assert by_bench[cheetah.format("uniq-nocorr")] == pytest.approx(0.0)  # fits no ratio
    assert by_bench[cheetah.format("safedice")] == pytest.approx(40.0)


def test_measure_times_every_unit_of_a_tiny_config(configs):
    """Real (tiny) bursts: one fast task, BC and UNIQ, two seeds per job."""
    config = copy.deepcopy(configs["smoke"])
    config["tasks"] = {"SafetyHalfCheetahVelocity-v1": {"data": "committed"}}
    config["algorithms"] = {k: config["algorithms"][k] for k in ("uniq", "bc-mix")}
    config["train"].update(seeds=[0, 1], batch_seeds=True)
    config["experiments"] = {
        "main": {"variants": ["default"], "algorithms": ["uniq", "bc-mix"]},
    }
    u = plan.measure(config, "cpu", budget_s=0.05)
    task = "SafetyHalfCheetahVelocity-v1"
    assert u.startup_s > 0.5  # torch alone takes longer to import
    assert all(u.env[task][k] > 0 for k in ("build_s", "reset_s", "step_s"))
    assert set(u.update) == {"uniq x2", "bc-mix x2"}
    assert all(v > 0 for v in u.update.values())
    assert u.pretrain["uniq"][0] > 0 and u.pretrain["bc-mix"] == [0.0, 0.0]
    result = plan.plan(config, cores=2, units=u)
    assert result["rules"]["train"]["jobs"] == 2 and result["total"]["job_hours"] > 0
    text = plan.table(result)
    assert "Measured on this machine" in text and "| train | 2 |" in text


def write_bench(root: Path, files: dict[str, float]) -> None:
    """One Snakemake benchmark file per job: ``cpu_time`` as given, wall 10x (a busy box)."""
    for rel, cpu in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
            f"{10 * cpu}\t0:00:01\t100\t1\t1\t1\t0\t0\t10\t{cpu}\n"
        )


TRAIN = [f"train/T/default/uniq/seed{s}.tsv" for s in range(4)]
EVAL = [f"evaluate/T/default/uniq/seed{s}.tsv" for s in range(4)]


def fake_price(train_s: float, evaluate_s: float) -> dict:
    """A plan of 4 train and 4 evaluate jobs of the given seconds each."""
    jobs = [{"rule": "train", "bench": b, "seconds": train_s} for b in TRAIN]
    jobs += [{"rule": "evaluate", "bench": b, "seconds": evaluate_s} for b in EVAL]
    return {"jobs": jobs + [{"rule": "all", "bench": "", "seconds": 0.0}]}


@pytest.mark.parametrize(("train_s", "passed"), [(60, True), (75, True), (97, False), (30, False)])
def test_check_passes_within_30_percent_only(tmp_path, train_s, passed):
    write_bench(tmp_path, {**dict.fromkeys(TRAIN, 60.0), **dict.fromkeys(EVAL, 15.0)})
    result = jobtimes.check(fake_price(train_s, 15.0), jobtimes.read_benchmarks(tmp_path))
    assert result["measured_min"] == pytest.approx(5.0)  # CPU time, not the 10x wall
    assert result["wall_min"] == pytest.approx(50.0)
    assert result["ratio"] == pytest.approx((4 * train_s + 60) / 300)
    assert result["passed"] is passed and not result["partial"]
    assert ("PASS" if passed else "FAIL") in jobtimes.check_table(result)


def test_check_of_a_partial_run_compares_its_finished_jobs(tmp_path):
    write_bench(tmp_path, {TRAIN[0]: 60.0, EVAL[0]: 15.0})
    result = jobtimes.check(fake_price(60.0, 15.0), jobtimes.read_benchmarks(tmp_path))
    assert result["partial"] and result["passed"]
    assert result["ratio"] == pytest.approx(1.0)
    assert [r["measured_jobs"] for r in result["rows"]] == [1, 1]


def test_check_fails_on_a_job_the_plan_does_not_know(tmp_path):
    write_bench(tmp_path, {**dict.fromkeys(TRAIN, 60.0), **dict.fromkeys(EVAL, 15.0)})
    write_bench(tmp_path, {"train/T/default/uniq/seed9.tsv": 0.001})
    result = jobtimes.check(fake_price(60.0, 15.0), jobtimes.read_benchmarks(tmp_path))
    assert not result["passed"] and result["unknown"] == ["train/T/default/uniq/seed9.tsv"]


def test_check_against_an_empty_folder_is_refused_before_measuring(tmp_path, caplog):
    from uniq.cli import main

    argv = ["plan", "--configfile", str(ROOT / PROFILES["smoke"]), "--check", str(tmp_path)]
    assert main(argv) == 2
    assert "no Snakemake benchmark files" in caplog.text


def test_a_resumed_jobs_time_counts_its_pieces_before_the_resume(tmp_path):
    """Snakemake rewrites a job's benchmark file on each attempt, so a training job resumed
    from its checkpoint has a benchmark of its last piece only; its log, appended to by every
    attempt, says how long it ran before. An earlier finished attempt's resume is not this
    one's, and a job without a resume keeps its benchmark."""
    bench = tmp_path / "benchmarks"
    write_bench(bench, dict.fromkeys(TRAIN[:4], 60.0))  # wall 600 s, CPU 60 s each
    logs = tmp_path / "train/T/default/uniq"
    logs.mkdir(parents=True)
    resumed = "INFO uniq.train: resuming uniq from r/checkpoint.pt at step 4000 (900.0 s before)\n"
    trained = "INFO uniq.train: trained uniq (10000 steps, {} s) -> r/policy.pt\n"
    (logs / "seed0.log").write_text("start\n" + resumed + trained.format(1490.5))
    (logs / "seed1.log").write_text(resumed + trained.format(1490.5) + trained.format(590.0))
    # a log of the format before the seconds were reported: the whole time less this piece
    old = "INFO uniq.train: resuming uniq from r/checkpoint.pt at step 4000\n"
    (logs / "seed2.log").write_text(old + trained.format(1500.0))
    # today's lines, as uniq.train writes them: the CPU seconds before are carried, not estimated
    line = jobtimes.resume_line("uniq", "r/checkpoint.pt", 4000, 900.0, 345.6)
    end = jobtimes.trained_line("uniq", 10000, 1490.5, "r/policy.pt")
    (logs / "seed3.log").write_text(f"INFO uniq.train: {line}\nINFO uniq.train: {end}\n")
    rows = {r["file"]: r for r in jobtimes.read_benchmarks(bench)["train"]}
    first, second, third, fourth = (rows[f] for f in TRAIN[:4])
    assert first["resumed"] and first["s"] == pytest.approx(1500.0)
    assert first["cpu_time"] == pytest.approx(150.0)  # 900 s more at the piece's CPU share
    assert not second["resumed"] and second["s"] == pytest.approx(600.0)
    assert third["resumed"] and third["s"] == pytest.approx(1500.0)
    assert fourth["resumed"] and fourth["s"] == pytest.approx(1500.0)
    assert fourth["cpu_time"] == pytest.approx(60.0 + 345.6)


def test_priorities_start_the_longest_chain_first(configs):
    """A job's priority is its minutes to the end of the longest chain it starts: itself, then
    the longest job of each later stage on its task and variant (evaluate after train, train
    after dataset, ...). The smoke grid, priced with made-up seconds."""
    config = configs["smoke"]
    seconds = {}
    for job in plan.jobs(config):
        seconds[job.bench] = 60.0  # a minute each, unless below
    cheetah, goal = "SafetyHalfCheetahVelocity-v1", "SafetyPointGoal1-v0"
    seconds[f"train/{goal}/default/uniq/seed0.tsv"] = 600.0
    seconds[f"evaluate/{goal}/default/uniq/seed0.tsv"] = 120.0
    seconds[f"train/{cheetah}/default/safedice/seed0.tsv"] = 1200.0
    seconds.pop(f"dataset/{goal}_default.tsv")  # not in the price: free
    price = {"profile": "smoke", "jobs": [{"bench": b, "seconds": s} for b, s in seconds.items()]}
    p = plan.priorities(config, price)
    assert p[f"train/{goal}/default/uniq/seed0.tsv"] == 10 + 2
    assert p[f"train/{goal}/default/bc-mix/seed0.tsv"] == 1 + 1
    assert p[f"dataset/{goal}_default.tsv"] == 0 + 12
    assert p[f"rollouts/{goal}_safe.tsv"] == p[f"rollouts/{goal}_unsafe.tsv"] == 1 + 12
    # HalfCheetah: its longest train chain (20 + 1) on its variant, then back up the chain
    others = [v for v in W.env_variants(config, cheetah) if v != "default"]
    assert others and all(p[f"dataset/{cheetah}_{v}.tsv"] == 1 + 1 + 1 for v in others)
    assert p[f"dataset/{cheetah}_default.tsv"] == 1 + 20 + 1
    assert p[f"rollouts/{cheetah}_safe.tsv"] == 1 + 22
    assert p[f"demonstrator/{cheetah}_unsafe.tsv"] == 1 + 23
    # every train job is ranked, and the longest comes first
    trains = {b: v for b, v in p.items() if b.startswith("train/")}
    assert len(trains) == plan.job_counts(config)["train"]
    assert max(trains, key=trains.get) == f"train/{cheetah}/default/safedice/seed0.tsv"


def test_priorities_count_what_a_resumed_job_has_left(configs):
    """A training job resumed at three quarters of its updates ranks by the quarter left
    (plus its evaluation); a done one by its evaluation alone; the jobs up its chain by the
    work left below them."""
    config = configs["smoke"]
    seconds = {job.bench: 60.0 for job in plan.jobs(config)}
    goal = "SafetyPointGoal1-v0"
    uniq, safedice, bc = (
        f"train/{goal}/default/{a}/seed0.tsv" for a in ("uniq", "safedice", "bc-mix")
    )
    seconds[uniq], seconds[safedice] = 2400.0, 1800.0
    price = {"profile": "smoke", "jobs": [{"bench": b, "seconds": s} for b, s in seconds.items()]}
    whole = plan.priorities(config, price)
    assert (whole[uniq], whole[safedice], whole[bc]) == (40 + 1, 30 + 1, 1 + 1)
    p = plan.priorities(config, price, left={uniq: 0.25, bc: 0.0})
    assert (p[uniq], p[safedice], p[bc]) == (10 + 1, 30 + 1, 0 + 1)
    assert p[f"dataset/{goal}_default.tsv"] == 1 + 31  # safedice's chain is the longest now


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (None, "cannot read the price"),
        ("{not json", "not JSON"),
        ("[1, 2]", "no list of `jobs`"),
        ('{"profile": "smoke"}', "no list of `jobs`"),
        ('{"profile": "quick", "jobs": []}', "a price of profile 'quick', not 'smoke'"),
        ("OLDER", "a price of an older config: 1 of the profile's jobs are not in it"),
    ],
    ids=["missing", "not json", "a list", "no jobs", "another profile", "an older config"],
)
def test_a_bad_price_is_refused_with_the_command_that_rewrites_it(configs, tmp_path, text, words):
    config = configs["smoke"]
    path = tmp_path / "price.json"
    if text == "OLDER":  # the config has grown a job since
        jobs = [{"bench": j.bench, "seconds": 1.0} for j in plan.jobs(config) if j.rule != "all"]
        text = json.dumps({"profile": "smoke", "jobs": jobs[1:]})
    if text is not None:
        path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(words)) as err:
        plan.load_price(path, config)
    assert f"uniq-bench plan --configfile ... --json {path}" in str(err.value)


def test_a_whole_price_is_accepted_and_the_config_names_it(configs, tmp_path):
    config = dict(configs["smoke"], price="price.json")
    jobs = [{"bench": j.bench, "seconds": 1.0} for j in plan.jobs(config) if j.rule != "all"]
    (tmp_path / "price.json").write_text(json.dumps({"profile": "smoke", "jobs": jobs}))
    assert plan.config_price(config, tmp_path)["jobs"] == jobs
    assert plan.config_price(configs["smoke"], tmp_path) is None  # no `price:`
    with pytest.raises(W.WorkflowConfigError, match="config `price`: .*cannot read"):
        plan.config_price(config, tmp_path / "elsewhere")
