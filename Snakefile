"""UNIQ reproducibility suite: the workflow (design.md section 3).

    uv run snakemake --cores 8 all                               # the paper (config/config.yaml)
    uv run snakemake --cores 2 --configfile config/quick.yaml    # CPU, a few hours
    uv run snakemake --cores 2 --configfile config/smoke.yaml    # every rule, minutes

Rules only: each calls one `uniq-bench` subcommand; uniq/workflow.py turns the config into
the runs. Runs are keyed by (env, variant, algo, seed), so experiments sharing a run train it
once. Every path is rooted at the config's `profile`.
"""

import os

from snakemake.utils import min_version, validate

from uniq import plan
from uniq import workflow as W

min_version("9.0")


# The paper config is the default, not a base: a profile given with --configfile replaces it
# (Snakemake would otherwise merge the two, e.g. adding the paper's tasks to the smoke run).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


validate(config, "config/schema.yaml")
W.check(config)

P = config["profile"]
DATA = f"results/{P}/data"
RUNS = f"results/{P}/runs"
LOGS = f"logs/{P}"
RUN = f"{RUNS}/{{env}}/{{variant}}/{{algo}}/seed{{seed}}"
KINDS = W.KINDS
EXPERIMENTS = list(config["experiments"])


wildcard_constraints:
    env=W.name_regex(config["tasks"]),
    kind="safe|unsafe",
    variant=W.name_regex(config["datasets"]["variants"]),
    algo=W.name_regex(list(config["algorithms"]) + list(config["external_results"])),
    exp=W.name_regex(EXPERIMENTS),
    seed=r"\d+",


localrules:
    all,


for _path in config["external_rules"]:

    include: os.path.abspath(_path)


def rollouts(env):
    """The env's rollouts files: the normalization reference of evaluation."""
    return expand(f"{DATA}/{env}/rollouts_{{kind}}.h5", kind=KINDS)


def run_files(runs, name):
    return [os.path.join(RUN.format(**run._asdict()), name) for run in runs]


def figure_files(exp, suffixes=("png", "pdf")):
    from uniq.plots import figure_kinds

    kinds = figure_kinds(exp) + (["curves"] if config["train"]["eval_every"] else [])
    return [f"figures/{P}/{exp}_{kind}.{suffix}" for kind in kinds for suffix in suffixes]


LAST_K = config["aggregate"].get("last_k", 0)


def bench(rule):
    """The rule's benchmark file (uniq.plan.BENCH: a price names the jobs by it)."""
    return f"{LOGS}/benchmarks/{plan.BENCH[rule]}"


# Where the config names its price (`price:`, a `uniq-bench plan --json` file of this profile),
# the longest chains of work left start first (uniq.plan.priorities, with each training job's
# updates left as its checkpoint says: a resumed profile's order changes as it goes); without
# one, demonstrators.
PRICE = plan.config_price(config)
PRIORITY = {}
if PRICE:
    from uniq import progress  # torch, to read the checkpoints: only for a priced profile

    PRIORITY = plan.priorities(config, PRICE, left=progress.updates_left(config))


def priority(rule, default=0):
    """The rule's priority: its job's from the price, else ``default``."""
    return lambda w: PRIORITY.get(plan.BENCH[rule].format(**dict(w.items())), default)


rule all:
    input:
        expand(f"results/{P}/{{exp}}/summary.csv", exp=EXPERIMENTS),
        [figure_files(exp) for exp in EXPERIMENTS],
        expand(f"results/{P}/{{exp}}/last{LAST_K}/summary.csv", exp=EXPERIMENTS) if LAST_K else [],


rule demonstrator:
    output:
        f"{DATA}/{{env}}/demonstrator_{{kind}}.pt",
    params:
        steps=lambda w: W.demo_steps(config, w.env),
        seed=lambda w: config["demonstrator"]["seed"] + W.kind_offset(w.kind),
        hparams=lambda w: W.demonstrator_args(config, w.env),
    log:
        f"{LOGS}/demonstrator/{{env}}_{{kind}}.log",
    benchmark:
        bench("demonstrator")
    priority: priority("demonstrator", default=10)  # everything waits on them
    threads: 1
    resources:
        gpu=1,
    shell:
        "uniq-bench demonstrator --task {wildcards.env} --kind {wildcards.kind} --steps {params.steps}"
        " --seed {params.seed} {params.hparams} --threads {threads} --device auto --no-progress"
        " --out {output} > {log} 2>&1"


rule rollouts:
    input:
        demonstrator=lambda w: W.demonstrator_file(config, w.env, w.kind, DATA),
    output:
        f"{DATA}/{{env}}/rollouts_{{kind}}.h5",
    params:
        source=lambda w, input: (
            f"--demonstrator {input.demonstrator[0]}" if input.demonstrator else f"--scripted {w.kind}"
        ),
        episodes=lambda w: W.rollout_episodes(config, w.env, w.kind),
        seed=lambda w: config["rollouts"]["seed"] + W.kind_offset(w.kind),
        num_envs=config["rollouts"]["num_envs"],
    wildcard_constraints:
        env=W.name_regex(W.generated_tasks(config)),
    log:
        f"{LOGS}/rollouts/{{env}}_{{kind}}.log",
    benchmark:
        bench("rollouts")
    priority: priority("rollouts")
    threads: 1  # envs are vectorized in one single-threaded process (workers: UNIQ_ENV_WORKERS)
    shell:
        "uniq-bench collect --task {wildcards.env} {params.source} --episodes {params.episodes}"
        " --seed {params.seed} --num-envs {params.num_envs} --no-progress --out {output}"
        " > {log} 2>&1"


# A `data: dsrl` task's rollouts are the user's DSRL file split into desirable (safe) and
# undesirable (unsafe) episodes: one job writes both, so they always come from one version
# of the file. From the dataset rule on, nothing differs from generated rollouts.
rule dsrl_rollouts:
    input:
        dsrl=lambda w: W.dsrl_path(config, w.env),
    output:
        safe=f"{DATA}/{{env}}/rollouts_safe.h5",
        unsafe=f"{DATA}/{{env}}/rollouts_unsafe.h5",
    params:
        rule=lambda w: W.dsrl_args(config, w.env),
    wildcard_constraints:
        env=W.name_regex(W.dsrl_tasks(config)),
    log:
        f"{LOGS}/rollouts/{{env}}_dsrl.log",
    benchmark:
        bench("dsrl_rollouts")
    priority: priority("dsrl_rollouts")
    threads: 1
    shell:
        "uniq-bench dsrl --task {wildcards.env} --file {input.dsrl:q} {params.rule}"
        " --out-safe {output.safe} --out-unsafe {output.unsafe} > {log} 2>&1"


rule dataset:
    input:
        safe=f"{DATA}/{{env}}/rollouts_safe.h5",
        unsafe=f"{DATA}/{{env}}/rollouts_unsafe.h5",
    output:
        un=f"{DATA}/{{env}}/{{variant}}/un.h5",
        mix=f"{DATA}/{{env}}/{{variant}}/mix.h5",
    params:
        split=lambda w: W.variant_params(config, w.variant),
        seed=config["datasets"]["seed"],
        out_dir=lambda w, output: os.path.dirname(output.un),
        no_gap="--allow-no-gap" if config["datasets"]["allow_no_gap"] else "",
    log:
        f"{LOGS}/dataset/{{env}}_{{variant}}.log",
    benchmark:
        bench("dataset")
    priority: priority("dataset")
    threads: 1
    shell:
        "uniq-bench split --task {wildcards.env} --safe {input.safe} --unsafe {input.unsafe}"
        " --n-un {params.split[n_un]} --n-mix-desirable {params.split[n_mix_desirable]}"
        " --n-mix-undesirable {params.split[n_mix_undesirable]} --seed {params.seed}"
        " --out-dir {params.out_dir} {params.no_gap} > {log} 2>&1"


def curve_args(wildcards, input):
    """The train rules' learning-curve flags (none when train.eval_every is 0)."""
    if not config["train"]["eval_every"]:
        return ""
    return (
        f"--eval-every {config['train']['eval_every']}"
        f" --eval-episodes {config['train']['eval_episodes']} --reference {input.reference}"
    )


if not config["train"]["batch_seeds"]:

    rule train:
        input:
            un=f"{DATA}/{{env}}/{{variant}}/un.h5",
            mix=f"{DATA}/{{env}}/{{variant}}/mix.h5",
            reference=lambda w: rollouts(w.env) if config["train"]["eval_every"] else [],
        output:
            # checkpoint.pt is left undeclared on purpose: Snakemake deletes a job's declared
            # outputs before rerunning it, and train resumes from the checkpoint.
            policy=f"{RUN}/policy.pt",
            log=f"{RUN}/train_log.csv",
            config=f"{RUN}/config.yaml",
            curve=f"{RUN}/curve.csv" if config["train"]["eval_every"] else [],
        params:
            algo=lambda w: W.train_args(config, w.algo, w.env),
            steps=config["train"]["steps"],
            checkpoint_every=config["train"]["checkpoint_every"],
            out_dir=lambda w, output: os.path.dirname(output.policy),
            curve=curve_args,
        wildcard_constraints:
            algo=W.name_regex(config["algorithms"]),
        log:
            f"{LOGS}/train/{{env}}/{{variant}}/{{algo}}/seed{{seed}}.log",
        benchmark:
            bench("train")
        priority: priority("train")
        threads: config["train"]["threads"]
        resources:
            gpu=1,
        shell:
            "uniq-bench train {params.algo} --task {wildcards.env} --variant {wildcards.variant}"
            " --un {input.un} --mix {input.mix} --seed {wildcards.seed} --steps {params.steps}"
            " {params.curve} --checkpoint-every {params.checkpoint_every} --threads {threads}"
            " --device auto --no-progress --out {params.out_dir}"
            " > {log} 2>&1"

else:
    # One job per (env, variant, algo) trains every seed as one batched-over-seeds network
    # (`uniq-bench train --seed S1 S2 ...`); each seed's files are those of a separate run.
    # Snakemake outputs cannot depend on the wildcards, so every job trains W.all_seeds.
    SEEDS = W.all_seeds(config)
    GROUP = f"{RUNS}/{{env}}/{{variant}}/{{algo}}"

    def seed_files(name):
        return [f"{GROUP}/seed{seed}/{name}" for seed in SEEDS]

    rule train:
        input:
            un=f"{DATA}/{{env}}/{{variant}}/un.h5",
            mix=f"{DATA}/{{env}}/{{variant}}/mix.h5",
            reference=lambda w: rollouts(w.env) if config["train"]["eval_every"] else [],
        output:
            # The job's checkpoint.pt (in seed<S1_S2_...>/) is left undeclared on purpose, as
            # in the one-seed rule: a rerun resumes from it.
            policy=seed_files("policy.pt"),
            log=seed_files("train_log.csv"),
            config=seed_files("config.yaml"),
            curve=seed_files("curve.csv") if config["train"]["eval_every"] else [],
        params:
            algo=lambda w: W.train_args(config, w.algo, w.env),
            seeds=" ".join(map(str, SEEDS)),
            steps=config["train"]["steps"],
            checkpoint_every=config["train"]["checkpoint_every"],
            out_pattern=lambda w: f"{RUNS}/{w.env}/{w.variant}/{w.algo}/seed{{seed}}",
            curve=curve_args,
        wildcard_constraints:
            algo=W.name_regex(config["algorithms"]),
        log:
            f"{LOGS}/train/{{env}}/{{variant}}/{{algo}}/seeds.log",
        benchmark:
            bench("train_batched")
        priority: priority("train_batched")
        threads: config["train"]["threads"]
        resources:
            gpu=1,
        shell:
            "uniq-bench train {params.algo} --task {wildcards.env} --variant {wildcards.variant}"
            " --un {input.un} --mix {input.mix} --seed {params.seeds} --steps {params.steps}"
            " {params.curve} --checkpoint-every {params.checkpoint_every} --threads {threads}"
            " --device auto --no-progress --out '{params.out_pattern}'"
            " > {log} 2>&1"


rule evaluate:
    input:
        policy=f"{RUN}/policy.pt",
        reference=lambda w: rollouts(w.env),
    output:
        f"{RUN}/eval.json",
    params:
        episodes=config["evaluate"]["episodes"],
        seed=lambda w: config["evaluate"]["seed_offset"] + int(w.seed),
        num_envs=config["evaluate"]["num_envs"],
    wildcard_constraints:
        algo=W.name_regex(config["algorithms"]),
    log:
        f"{LOGS}/evaluate/{{env}}/{{variant}}/{{algo}}/seed{{seed}}.log",
    benchmark:
        bench("evaluate")
    threads: 1  # envs are vectorized in one single-threaded process (workers: UNIQ_ENV_WORKERS)
    shell:
        "uniq-bench evaluate --policy {input.policy} --task {wildcards.env}"
        " --episodes {params.episodes} --seed {params.seed} --num-envs {params.num_envs}"
        " --reference {input.reference} --no-progress --out {output} > {log} 2>&1"


rule aggregate:
    input:
        lambda w: run_files(
            W.experiment_runs(config, w.exp) + W.external_runs(config, w.exp), "eval.json"
        ),
    output:
        summary=f"results/{P}/{{exp}}/summary.csv",
        tables=multiext(f"results/{P}/{{exp}}/table", ".md", ".tex"),
        table_csv=report(
            f"results/{P}/{{exp}}/table.csv",
            caption="report/table.rst",
            category="{exp}",
            labels={"experiment": "{exp}", "content": "table"},
        ),
    params:
        out_dir=lambda w, output: os.path.dirname(output.summary),
        reference=config["aggregate"]["reference"],
        reps=config["aggregate"]["reps"],
        # --display LABEL=NAME per label, in the experiment's order (uniq/workflow.py)
        display=lambda w: W.display_args(config, w.exp),
    log:
        f"{LOGS}/aggregate/{{exp}}.log",
    benchmark:
        f"{LOGS}/benchmarks/aggregate/{{exp}}.tsv"
    threads: 1
    shell:
        "uniq-bench aggregate --experiment {wildcards.exp} --out {params.out_dir}"
        " --reference {params.reference} --reps {params.reps} {params.display}"
        " {input} > {log} 2>&1"


rule aggregate_last_k:
    """The same tables with each run scored by its last k curve evaluations (the suite's runs
    only: external results carry no curve)."""
    input:
        evals=lambda w: run_files(W.experiment_runs(config, w.exp), "eval.json"),
        curves=lambda w: run_files(W.experiment_runs(config, w.exp), "curve.csv"),
    output:
        summary=f"results/{P}/{{exp}}/last{LAST_K}/summary.csv",
        tables=multiext(f"results/{P}/{{exp}}/last{LAST_K}/table", ".md", ".tex", ".csv"),
    params:
        out_dir=lambda w, output: os.path.dirname(output.summary),
        reference=config["aggregate"]["reference"],
        reps=config["aggregate"]["reps"],
        display=lambda w: W.display_args(config, w.exp, external=False),
    log:
        f"{LOGS}/aggregate/{{exp}}_last{LAST_K}.log",
    benchmark:
        f"{LOGS}/benchmarks/aggregate/{{exp}}_last{LAST_K}.tsv"
    threads: 1
    shell:
        "uniq-bench aggregate --experiment {wildcards.exp} --out {params.out_dir}"
        " --reference {params.reference} --reps {params.reps} --scoring last-k"
        f" --last-k {LAST_K} {{params.display}}"
        " {input.evals} > {log} 2>&1"


for _exp in EXPERIMENTS:

    rule:
        name:
            f"figures_{_exp}"
        input:
            summary=f"results/{P}/{_exp}/summary.csv",
            curves=(
                run_files(W.experiment_runs(config, _exp), "curve.csv")
                if config["train"]["eval_every"]
                else []
            ),
        output:
            [
                report(
                    png,
                    caption=f"report/{png.rsplit('_', 1)[-1].removesuffix('.png')}.rst",
                    category=_exp,
                    labels={"experiment": _exp, "figure": png.rsplit("/", 1)[-1]},
                )
                for png in figure_files(_exp, ("png",))
            ],
            figure_files(_exp, ("pdf",)),
        params:
            exp=_exp,
            summary_dir=lambda w, input: os.path.dirname(input.summary),
            reps=config["aggregate"]["reps"],
            out_dir=lambda w, output: os.path.dirname(output[0]),
        log:
            f"{LOGS}/figures/{_exp}.log",
        benchmark:
            f"{LOGS}/benchmarks/figures/{_exp}.tsv"
        threads: 1
        shell:
            "uniq-bench figures --experiment {params.exp} --summary {params.summary_dir}"
            " --out {params.out_dir} --reps {params.reps} --curves {input.curves} > {log} 2>&1"
