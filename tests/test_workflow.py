"""The Snakemake workflow: its DAG, lint, config validation, and the smoke run end to end."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.utils import validate

import envs.tasks
from uniq import workflow as W

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
CONFIGS = REPO / "config"


def snakemake(*args: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    """``snakemake ARGS`` with this interpreter's environment (so `uniq-bench` is on PATH)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("UNIQ_GPU_LOCK_DIR", str(cwd / ".gpu_locks"))
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


def job_counts(output: str) -> dict[str, int]:
    """The ``Job stats`` table of a dry run, rule -> count."""
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def expected_counts(config: dict) -> dict[str, int]:
    """Jobs per rule, computed from the config independently of uniq/workflow.py."""
    default_seeds = config["train"]["seeds"]
    runs, datasets = set(), set()
    for block in config["experiments"].values():
        for env in block.get("tasks") or config["tasks"]:
            for variant in block["variants"]:
                datasets.add((env, variant))
                for algo in block["algorithms"]:
                    for seed in block.get("seeds") or default_seeds:
                        runs.add((env, variant, algo, seed))
    # train.batch_seeds: one job per (env, variant, algo) trains all its seeds
    train_jobs = {run[:3] for run in runs} if config["train"].get("batch_seeds") else runs
    source = {t: spec.get("data", "demonstrator") for t, spec in config["tasks"].items()}
    rl_tasks = [t for t, s in source.items() if s == "demonstrator"]
    dsrl_tasks = [t for t, s in source.items() if s == "dsrl"]
    counts = {
        "demonstrator": 2 * len(rl_tasks),
        "rollouts": 2 * (len(config["tasks"]) - len(dsrl_tasks)),
        "dsrl_rollouts": len(dsrl_tasks),  # one job writes both kinds
        "dataset": len(datasets),
        "train": len(train_jobs),
        "evaluate": len(runs),
        "aggregate": len(config["experiments"]),
        "aggregate_last_k": len(config["experiments"]) if config["aggregate"].get("last_k") else 0,
        "all": 1,
    }
    counts.update({f"figures_{exp}": 1 for exp in config["experiments"]})
    counts = {rule: n for rule, n in counts.items() if n}
    counts["total"] = sum(counts.values())
    return counts


def test_paper_dry_run_lists_every_job_once(tmp_path):
    config = load("config.yaml")
    result = snakemake(
        "-n", "--quiet", "rules", "--configfile", str(CONFIGS / "config.yaml"),
        "--directory", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    counts = job_counts(result.stdout + result.stderr)
    assert counts == expected_counts(config)
    # A run shared by two experiments is trained once: main's default split is also the
    # |D_UN| = 100 point of undesirable_size, so there are fewer runs than selections.
    selections = sum(len(W.experiment_runs(config, exp)) for exp in config["experiments"])
    assert counts["train"] < selections


def test_profile_config_replaces_the_paper_config(tmp_path):
    # Snakemake merges --configfile into the Snakefile's default config; the Snakefile loads
    # the paper config only when none is given, so the smoke DAG has only the smoke tasks.
    result = snakemake(
        "-n", "--quiet", "rules", "--configfile", str(CONFIGS / "smoke.yaml"),
        "--directory", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    assert job_counts(result.stdout + result.stderr) == expected_counts(load("smoke.yaml"))


def test_batch_seeds_makes_one_train_job_per_env_variant_algo(tmp_path):
    config = load("config.yaml")
    config["train"]["batch_seeds"] = True
    path = tmp_path / "batched.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(
        "-n", "--printshellcmds", "all", "--configfile", str(path), "--directory", str(tmp_path)
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout + result.stderr
    counts = job_counts(out)
    expected = expected_counts(config)
    groups = {run[:3] for run in W.all_runs(config)}
    assert counts["train"] == len(groups) == expected["train"]
    assert counts["evaluate"] == expected["evaluate"]  # still one per seed
    shells = [line for line in out.splitlines() if "uniq-bench train" in line]
    assert len(shells) == len(groups)
    seeds = " ".join(map(str, config["train"]["seeds"]))
    assert all(f"--seed {seeds} " in line and "/seed{seed}'" in line for line in shells)


# Snakemake asks for a conda env or container per rule; this project pins its software with
# uv (pyproject.toml + uv.lock) and every rule runs in that environment, so this one lint
# does not apply. Every other lint is a failure.
ALLOWED_LINTS = {"Specify a conda environment or container for each rule."}


def test_lint_is_clean():
    result = snakemake("--lint")
    text = result.stdout + result.stderr
    titles = set(re.findall(r"^\s+\* (.+?):?$", text, flags=re.MULTILINE))
    titles = {t.rstrip(":") for t in titles}
    assert titles <= ALLOWED_LINTS, text
    assert "Lints for snakefile" not in text, text


# ---------------------------------------------------------------- config validation


def smoke_with(edit) -> dict:
    config = load("smoke.yaml")
    edit(config)
    return config


BAD_CONFIGS = {
    "unknown task": (
        lambda c: c["tasks"].update({"SafetyPointGoal9-v0": {"data": "scripted"}}),
        ["SafetyPointGoal9-v0", "valid tasks", "SafetyPointGoal1-v0", "SafetyCarButton1-v0"],
    ),
    "unknown algorithm": (
        lambda c: c["algorithms"].update({"gail": {}}),
        ["'gail'", "valid algorithms", "uniq", "safedice", "dwbc"],
    ),
    "unknown aggregate reference": (
        lambda c: c["aggregate"].update({"reference": "uniqq"}),
        ["aggregate.reference", "'uniqq'", "bc-mix"],
    ),
    "aggregate reference in no experiment": (
        lambda c: (
            c["aggregate"].update({"reference": "bc-safe"}),
            c["experiments"]["main"]["algorithms"].remove("bc-safe"),
        ),
        ["aggregate.reference", "'bc-safe'", "in no experiment", "experiments.<name>.algorithms"],
    ),
    "unknown alias method": (
        lambda c: c["algorithms"].update({"x": {"method": "uniqq"}}),
        ["algorithms.x.method", "'uniqq'", "uniq"],
    ),
    "unknown hyper-parameter": (
        lambda c: c["algorithms"]["uniq"]["set"].update({"occupancy_corection": False}),
        ["occupancy_corection", "occupancy_correction"],
    ),
    "unknown variant": (
        lambda c: c["experiments"]["main"].update({"variants": ["huge"]}),
        ["experiments.main.variants", "huge", "default", "mix50"],
    ),
    "experiment algorithm not configured": (
        lambda c: c["experiments"]["main"]["algorithms"].append("bc"),
        ["experiments.main.algorithms", "'bc'", "bc-mix"],
    ),
    "scripted velocity task": (
        lambda c: c["tasks"]["SafetyHalfCheetahVelocity-v1"].update({"data": "scripted"}),
        ["SafetyHalfCheetahVelocity-v1", "navigation tasks only", "data: demonstrator"],
    ),
    "committed demonstrator missing": (
        lambda c: c["tasks"].update({"SafetyCarButton1-v0": {"data": "committed"}}),
        [
            "tasks.SafetyCarButton1-v0",
            "demonstrators/SafetyCarButton1-v0/safe/policy.pt",
            "data: demonstrator",
        ],
    ),
    "unknown PPO hyper-parameter": (
        lambda c: c["demonstrator"].update({"ppo_set": {"cost_limt": 10}}),
        ["demonstrator.ppo_set", "cost_limt", "PPOConfig", "cost_limit"],
    ),
    "dwbc eta at most s/2": (  # the default split's D_MIX is 4/6 undesirable: eta > 1/3
        lambda c: c["algorithms"]["dwbc"]["set"].update({"eta": 0.3}),
        [
            "algorithms.dwbc.set",
            "datasets.variants.default",
            "eta=0.3",
            "0.333",
            "n_mix_undesirable",
        ],
    ),
    "last_k beyond the curve": (
        lambda c: c["aggregate"].update({"last_k": 3}),  # 50 steps, eval every 25: 2 points
        ["aggregate.last_k: 3", "train.eval_every=25", "gives 2", "aggregate.last_k: 0"],
    ),
    "too few rollouts": (
        lambda c: c["rollouts"].update({"episodes": 3}),
        ["rollouts.episodes", "6 unsafe"],
    ),
    "dsrl without a path": (
        lambda c: c["tasks"].update({"SafetyHalfCheetahVelocity-v1": {"data": "dsrl"}}),
        ["tasks.SafetyHalfCheetahVelocity-v1", "`data: dsrl` needs `path:", "DSRL datasets"],
    ),
    "dsrl file missing": (
        lambda c: c["tasks"].update(
            {"SafetyHalfCheetahVelocity-v1": {"data": "dsrl", "path": "no/such/file.hdf5"}}
        ),
        ["tasks.SafetyHalfCheetahVelocity-v1.path", "no/such/file.hdf5", "is not a file"],
    ),
    "dsrl keys on a generated task": (
        lambda c: c["tasks"]["SafetyPointGoal1-v0"].update({"dsrl_cost_threshold": 0.3}),
        ["tasks.SafetyPointGoal1-v0", "dsrl_cost_threshold", "`data: dsrl` only", "scripted"],
    ),
    "two labels printed alike": (
        lambda c: c["algorithms"]["uniq-nocorr"].update({"display": "UNIQ"}),
        ["experiments.occupancy_ablation", "'uniq', 'uniq-nocorr'", "'UNIQ'", "display:"],
    ),
}

SCHEMA_ERRORS = {
    "unknown top-level key": (lambda c: c.update({"trian": {}}), "trian"),
    "unknown nested key": (lambda c: c["train"].update({"step": 5}), "step"),
    "unknown experiment": (
        lambda c: c["experiments"].update({"mains": c["experiments"]["main"]}),
        "mains",
    ),
    "bad data source": (
        lambda c: c["tasks"]["SafetyPointGoal1-v0"].update({"data": "d4rl"}),
        "d4rl",
    ),
    "dsrl threshold outside [0, 1]": (
        lambda c: c["tasks"]["SafetyPointGoal1-v0"].update({"dsrl_return_threshold": 1.5}),
        "1.5",
    ),
    "an experiment's seeds empty": (lambda c: c["experiments"]["main"].update({"seeds": []}), "[]"),
    "an experiment's seed twice": (
        lambda c: c["experiments"]["main"].update({"seeds": [0, 0]}),
        "[0, 0]",
    ),
    "empty display name": (lambda c: c["algorithms"]["uniq"].update({"display": ""}), "display"),
    "display of an experiment": (
        lambda c: c["experiments"]["main"].update({"display": "Main"}),
        "display",
    ),
}


def _validated(config: dict) -> dict:
    validate(config, str(CONFIGS / "schema.yaml"))
    return config


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_check_names_the_valid_choices(case, monkeypatch, tmp_path):
    # An empty demonstrators/ folder: the checks must not depend on what this checkout has trained.
    monkeypatch.setattr(envs.tasks, "COMMITTED_DEMONSTRATORS", tmp_path / "demonstrators")
    edit, words = BAD_CONFIGS[case]
    config = _validated(smoke_with(edit))
    with pytest.raises(W.WorkflowConfigError) as err:
        W.check(config)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


@pytest.mark.parametrize("case", sorted(SCHEMA_ERRORS))
def test_schema_rejects_unknown_keys(case):
    edit, word = SCHEMA_ERRORS[case]
    with pytest.raises(Exception, match=re.escape(word)):
        _validated(smoke_with(edit))


def test_shipped_configs_pass_and_aliases_become_cli_flags():
    for name in ("config.yaml", "quick.yaml", "smoke.yaml"):
        W.check(_validated(load(name)))
    config = load("config.yaml")
    assert W.train_args(config, "uniq-nocorr") == (
        "--algo uniq --label uniq-nocorr --set occupancy_correction=false"
    )
    assert W.train_args(config, "dwbc") == "--algo dwbc --label dwbc"
    # The task's trainer and, per data source, where the rollouts' demonstrator comes from.
    assert W.demonstrator_args(config, "SafetyCarGoal1-v0").startswith("--algo ppo")
    assert W.demonstrator_args(config, "SafetyHalfCheetahVelocity-v1").startswith("--algo sac")
    entry = config["tasks"]["SafetyCarGoal1-v0"]
    for source, want in [
        ("committed", ["demonstrators/SafetyCarGoal1-v0/safe/policy.pt"]),
        ("demonstrator", ["D/SafetyCarGoal1-v0/demonstrator_safe.pt"]),
        ("scripted", []),
    ]:
        entry["data"] = source
        got = W.demonstrator_file(config, "SafetyCarGoal1-v0", "safe", "D")
        assert len(got) == len(want) and all(g.endswith(w) for g, w in zip(got, want, strict=True))
    # Enough rollouts for the largest split: mix80 draws 1600 safe, default 100 + 1600 unsafe.
    env = "SafetyPointGoal1-v0"
    assert W.rollout_episodes(config, env, "safe") == 1600
    assert W.rollout_episodes(config, env, "unsafe") == 1700


def test_aggregate_rules_pass_the_display_names(tmp_path):
    # Both aggregate rules hand uniq-bench aggregate every label's printed name, in the
    # experiment's order (the train and evaluate rules are untouched by display names).
    exp = "occupancy_ablation"
    targets = [f"results/smoke/{exp}/summary.csv", f"results/smoke/{exp}/last2/summary.csv"]
    result = snakemake(
        "-n", "--printshellcmds", "--configfile", str(CONFIGS / "smoke.yaml"),
        "--directory", str(tmp_path), *targets,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    shells = [line for line in out.splitlines() if "uniq-bench aggregate" in line]
    assert len(shells) == 2, shells
    for line in shells:
        assert "--display uniq=UNIQ --display 'uniq-nocorr=UNIQ (no corr.)' " in line, line
    assert not any("--display" in line for line in out.splitlines() if "uniq-bench train" in line)


SHOWN = [
    "README.md", "Snakefile", "demonstrators/README.md", "profiles/continue.sh",
    "profiles/slurm/config.yaml", *(f"config/{p.name}" for p in CONFIGS.glob("*.yaml")),
]  # fmt: skip


def snakemake_args(text: str) -> list[list[str]]:
    """The arguments of every `snakemake ... --configfile ...` command in ``text``: a line,
    with its `\\` continuations, or an inline code span, which prose may wrap."""
    text = text.replace("```", "").replace("\\\n", " ")
    text = re.sub(r"`[^`]*`", lambda span: span[0].replace("\n", " "), text)
    commands = []
    for match in re.finditer(r"\bsnakemake ([^`#\n]*--configfile[^`#\n]*)", text):
        words = [w for w in shlex.split(match[1]) if w != "$@"]  # a script's options
        ends = [i for i, w in enumerate(words) if w in (">", "&", "2>&1", "|")]
        commands.append(words[: ends[0]] if ends else words)
    return commands


def test_no_command_shown_lets_configfile_swallow_a_target(tmp_path, monkeypatch, capsys):
    """Snakemake's --configfile takes every word up to the next option, so `--configfile C
    all` reads `all` as a second config file. Every command the repository shows a user (docs,
    scripts, config headers, an error message), read by Snakemake's own parser, names one."""
    from snakemake.cli import get_argument_parser

    monkeypatch.syspath_prepend(str(REPO / "analysis"))
    import learning_curves

    commands = [a for path in SHOWN for a in snakemake_args((REPO / path).read_text())]
    monkeypatch.chdir(tmp_path)  # no dataset here: the script shows the command that builds it
    with pytest.raises(SystemExit):
        learning_curves.main(["--config", str(CONFIGS / "quick.yaml")])
    shown = snakemake_args(capsys.readouterr().err)
    assert len(shown) == 1 and len(commands) >= 10
    parser = get_argument_parser()
    for args in [*commands, *shown]:
        parsed = parser.parse_args(args)
        assert len(parsed.configfile) == 1, f"snakemake {' '.join(args)}"


@pytest.mark.parametrize("batch_seeds", [False, True], ids=["one_seed_jobs", "batched"])
def test_a_price_starts_the_longest_chain_first(tmp_path, batch_seeds):
    """With ``price:`` every job of the dry run carries uniq.plan.priorities' minutes, read
    through the rules' benchmark names (a rule whose name drifts from the price's fails)."""
    from uniq import plan

    config = smoke_with(lambda c: c["train"].update(batch_seeds=batch_seeds))
    path = tmp_path / "priced.yaml"
    path.write_text(yaml.safe_dump(config))
    checked = plan.load_config(path)
    long = plan.train_bench(checked, "SafetyPointGoal1-v0", "default", "uniq", [0])
    jobs = [j for j in plan.jobs(checked) if j.rule != "all"]
    seconds = {j.bench: 6000.0 if j.bench == long else 60.0 for j in jobs}
    price = {"profile": "smoke", "jobs": [{"bench": b, "seconds": s} for b, s in seconds.items()]}
    (tmp_path / "price.json").write_text(json.dumps(price))
    config["price"] = str(tmp_path / "price.json")
    path.write_text(yaml.safe_dump(config))

    def dry_run_priorities() -> dict[str, int]:
        result = snakemake("-n", "--configfile", str(path), "--directory", str(tmp_path))
        out = result.stdout + result.stderr
        assert result.returncode == 0, out
        found = {}
        for block in re.split(r"^\[.*\]$", out, flags=re.M):  # each job's lines follow its time
            bench = re.search(r"benchmark: logs/smoke/benchmarks/(\S+)", block)
            if bench:
                level = re.search(r"priority: (\d+)", block)
                found[bench[1]] = int(level[1]) if level else 0
        return found

    found = dry_run_priorities()
    expected = plan.priorities(plan.load_config(path), price)
    assert found == {b: expected.get(b, 0) for b in seconds}
    assert found[long] == 100 + 1  # itself, then its evaluation
    assert found["dataset/SafetyPointGoal1-v0_default.tsv"] == 1 + 101
    assert max(v for b, v in found.items() if b.startswith("evaluate/")) == 0  # last anyway
    demo = [v for b, v in found.items() if b.startswith("demonstrator/")]
    assert demo and all(v == 1 + 1 + 1 + 1 + 1 for v in demo)  # no longer 10: priced

    # resumed: the long job's checkpoint at half its updates; it ranks by the half left
    import torch

    from uniq.job import seed_dirs

    steps = checked["train"]["steps"]
    assert steps % 2 == 0
    seeds = next(s for *job, s in plan.train_jobs(checked) if job[2] == "uniq" and 0 in s)
    runs = tmp_path / "results/smoke/runs/SafetyPointGoal1-v0/default/uniq"
    _, job_dir = seed_dirs(runs / "seed{seed}", seeds)
    job_dir.mkdir(parents=True)
    log = {"text": "step,wall_time_s,updates_per_s\n"}  # as kept before its first log row
    torch.save({"step": steps // 2, "log": [log] * len(seeds)}, job_dir / "checkpoint.pt")
    resumed = dry_run_priorities()
    assert resumed[long] == 50 + 1
    assert resumed["dataset/SafetyPointGoal1-v0_default.tsv"] == 1 + 51


@pytest.mark.parametrize(
    "edit,words",
    [
        (lambda c: c["tasks"].update({"SafetyPointGoal9-v0": {}}), ["valid tasks"]),
        (lambda c: c["train"].update({"step": 5}), ["step", "Additional properties"]),
        (lambda c: c.update(price="nowhere.json"), ["config `price`", "nowhere.json", "plan"]),
        (
            lambda c: c.update(price=str(REPO / "benchmarks/out/plan_paper_data.json")),
            ["config `price`", "a price of profile 'paper_data', not 'smoke'"],
        ),
    ],
    ids=["unknown task", "unknown key", "missing price", "another profile's price"],
)
def test_bad_config_stops_snakemake_before_any_job(tmp_path, edit, words):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(smoke_with(edit)))
    result = snakemake("-n", "--configfile", str(path), "--directory", str(tmp_path))
    text = result.stdout + result.stderr
    assert result.returncode != 0
    for word in words:
        assert word in text, text
    assert "Job stats" not in text and not (tmp_path / "results").exists()


# ---------------------------------------------------------------- the smoke run, end to end

EXTERNAL_RULES = """
# A method trained outside the suite: its script writes an eval.json in the result contract.
rule external_mymethod:
    input:
        reference=lambda w: rollouts(w.env),
    output:
        f"results/{P}/runs/{{env}}/{{variant}}/mymethod/seed{{seed}}/eval.json",
    params:
        split=lambda w: json.dumps(W.variant_params(config, w.variant)),
        episodes=config["evaluate"]["episodes"],
    log:
        f"logs/{P}/external/{{env}}_{{variant}}_mymethod_seed{{seed}}.log",
    shell:
        "python my_method.py --env {wildcards.env} --variant {wildcards.variant}"
        " --seed {wildcards.seed} --episodes {params.episodes} --split '{params.split}'"
        " --reference {input.reference} --out {output} > {log} 2>&1"
"""

MY_METHOD = '''
"""A stand-in for someone else's method: a uniformly random policy, scored by the suite."""
import argparse, json, os, subprocess, tempfile

p = argparse.ArgumentParser()
for flag in ("--env", "--variant", "--seed", "--episodes", "--split", "--out"):
    p.add_argument(flag, required=True)
p.add_argument("--reference", nargs="+", required=True)
a = p.parse_args()
tmp = a.out + ".tmp.json"
subprocess.run(
    ["uniq-bench", "evaluate", "--policy", "random", "--task", a.env, "--episodes", a.episodes,
     "--seed", a.seed, "--num-envs", "1", "--no-progress", "--reference", *a.reference,
     "--out", tmp],
    check=True,
)
record = json.load(open(tmp))
record.update(algo="mymethod", variant=a.variant, seed=int(a.seed),
              variant_params=json.loads(a.split))
with open(tmp, "w") as f:
    json.dump(record, f)
os.replace(tmp, a.out)
'''


@pytest.mark.slow
def test_smoke_workflow_end_to_end(tmp_path):
    config = load("smoke.yaml")
    config["external_results"] = {"mymethod": {"experiments": ["main"], "display": "My method"}}
    config["external_rules"] = ["external.smk"]
    (tmp_path / "smoke.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "external.smk").write_text("import json\n" + EXTERNAL_RULES)
    (tmp_path / "my_method.py").write_text(textwrap.dedent(MY_METHOD))

    start = time.monotonic()
    result = snakemake(
        "--cores", "2", "--configfile", str(tmp_path / "smoke.yaml"),
        "--directory", str(tmp_path), "--show-failed-logs", "all",
        cwd=tmp_path, timeout=1800,
    )  # fmt: skip
    wall = time.monotonic() - start
    print(f"smoke workflow wall time: {wall:.0f} s")
    assert result.returncode == 0, result.stderr[-6000:]

    root = tmp_path / "results" / "smoke"
    runs = W.all_runs(config)
    for run in runs:
        record = json.loads(
            (
                root / "runs" / run.env / run.variant / run.algo / f"seed{run.seed}" / "eval.json"
            ).read_text()
        )
        assert (record["env"], record["variant"], record["algo"], record["seed"]) == tuple(run)
    external = W.external_runs(config, "main")
    assert external and all(
        (root / "runs" / r.env / r.variant / "mymethod" / f"seed{r.seed}" / "eval.json").exists()
        for r in external
    )
    for exp in config["experiments"]:
        for name in ("summary.csv", "table.md", "table.tex", "table.csv"):
            assert (root / exp / name).stat().st_size > 0, (exp, name)
        assert list((tmp_path / "figures" / "smoke").glob(f"{exp}_*.pdf"))
    summary = (root / "main" / "summary.csv").read_text()
    assert "mymethod" in summary and "uniq" in summary
    # tables print the display names: the external method's and an alias's from the config,
    # the suite's methods' from their classes
    table = (root / "main" / "table.md").read_text()
    assert "| My method |" in table and "| UNIQ |" in table and "| BC-safe† |" in table
    assert "| UNIQ (no corr.) |" in (root / "occupancy_ablation" / "table.md").read_text()
    meta = json.loads((root / "main" / "meta.json").read_text())
    assert meta["methods"] == [*config["experiments"]["main"]["algorithms"], "mymethod"]
    k = config["aggregate"]["last_k"]  # the same runs scored by their last k curve points
    last_k = pd.read_csv(root / "main" / f"last{k}" / "summary.csv")
    assert set(last_k["scoring"]) == {f"last{k}"} and "mymethod" not in set(last_k["algo"])
    assert f"last {k} curve evaluations" in (root / "main" / f"last{k}" / "table.md").read_text()
    # Every rule wrote a benchmark file (resources measured per job).
    assert len(list((tmp_path / "logs" / "smoke" / "benchmarks").rglob("*.tsv"))) >= len(runs)

    # Nothing left to do: a second run is a no-op.
    again = snakemake(
        "-n",
        "--configfile",
        str(tmp_path / "smoke.yaml"),
        "--directory",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    # The report gathers every figure and table, each with its caption.
    report = snakemake(
        "--configfile", str(tmp_path / "smoke.yaml"), "--directory", str(tmp_path),
        "--report", str(tmp_path / "report.html"), cwd=tmp_path,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "report.html").read_text(errors="replace")
    for exp in config["experiments"]:
        assert f"{exp}_" in html and f"results/smoke/{exp}/table.csv" in html, exp
    assert "Probability of improvement of UNIQ" in html  # a caption from report/
    shutil.rmtree(tmp_path / ".snakemake", ignore_errors=True)


# ---------------------------------------------------------------- a DSRL file as the data

DSRL_TASK = "SafetyHalfCheetahVelocity-v1"


@pytest.mark.slow
def test_dsrl_file_runs_through_the_workflow_with_one_config_line(tmp_path, make_dsrl):
    # Episode i: reward i and cost COSTS[i] per step; under the default rule episodes 5, 7
    # and 9 are desirable (see tests/test_dsrl.py), enough for smoke's default split (2 + 2/4).
    costs = [9, 0, 8, 1, 7, 2, 6, 3, 5, 4]
    (tmp_path / "dsrl").mkdir()
    make_dsrl(tmp_path / "dsrl" / "OfflineHalfCheetahVelocity.hdf5", list(range(10)), costs)
    config = load("smoke.yaml")
    config["tasks"] = {DSRL_TASK: {"data": "dsrl", "path": "dsrl/OfflineHalfCheetahVelocity.hdf5"}}
    config["experiments"] = {"main": config["experiments"]["main"]}
    config["datasets"]["allow_no_gap"] = False  # the file's classes do differ in cost
    config["train"]["eval_every"] = 0
    config["aggregate"]["last_k"] = 0  # no curves: no last-k tables
    path = tmp_path / "dsrl.yaml"
    path.write_text(yaml.safe_dump(config))
    common = ("--configfile", str(path), "--directory", str(tmp_path))

    dry = snakemake("-n", "--printshellcmds", *common, cwd=tmp_path)
    out = dry.stdout + dry.stderr
    assert dry.returncode == 0, out
    assert job_counts(out) == expected_counts(config)  # no demonstrator, one dsrl_rollouts
    assert (
        f"uniq-bench dsrl --task {DSRL_TASK} --file dsrl/OfflineHalfCheetahVelocity.hdf5"
        " --return-threshold 0.5 --cost-threshold 0.5" in out
    )

    # One real run and what it needs: dsrl_rollouts, dataset, train, evaluate (live env).
    run = f"results/smoke/runs/{DSRL_TASK}/default/bc-mix/seed0"
    start = time.monotonic()
    result = snakemake(
        "--cores", "2", *common, "--show-failed-logs", f"{run}/eval.json", cwd=tmp_path
    )  # fmt: skip
    print(f"dsrl workflow wall time: {time.monotonic() - start:.0f} s")
    assert result.returncode == 0, result.stderr[-6000:]
    from uniq.data import OfflineData

    data = tmp_path / "results" / "smoke" / "data" / DSRL_TASK
    safe = OfflineData.load(data / "rollouts_safe.h5")
    assert (safe.attrs["source"], safe.attrs["dsrl_desirable"], safe.num_episodes()) == (
        "dsrl",
        3,
        3,
    )
    mix = OfflineData.load(data / "default" / "mix.h5")
    assert mix.attrs["sources"] == {"safe": "dsrl", "unsafe": "dsrl"}
    assert mix.is_desirable.sum() == 2 * 20 and mix.num_episodes() == 6
    record = json.loads((tmp_path / run / "eval.json").read_text())
    # Normalised against the file's returns (0 .. 180 over its 20-step episodes).
    expected = (record["return_mean"] - 0.0) / 180.0
    assert record["return_normalized"] == pytest.approx(expected)

    # The file is an input Snakemake tracks: a new version of it redoes the data.
    make_dsrl(tmp_path / "dsrl" / "OfflineHalfCheetahVelocity.hdf5", list(range(10)), costs[::-1])
    again = snakemake("-n", "--quiet", "rules", *common, f"{run}/eval.json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert job_counts(again.stdout + again.stderr).get("dsrl_rollouts") == 1
    shutil.rmtree(tmp_path / ".snakemake", ignore_errors=True)
