"""The workflow's plan: what a (schema-validated) config asks the Snakefile to build.

The Snakefile stays rules only; everything it derives from the config lives here, where it is
tested without Snakemake:

- :func:`check` cross-checks names the JSON schema cannot know (tasks against
  ``envs.tasks.TASKS``, methods against ``uniq.registry``, ``--set`` keys against each
  method's ``Config``, variants and algorithms an experiment names, and each method's
  ``check_split`` on the splits an experiment trains it on) and fails with the valid
  choices, before any job runs;
- runs are keyed by ``(env, variant, algo, seed)``, not by experiment: experiments that share
  a run (``main``'s default split is also ``undesirable_size``'s |D_UN| = 100) select the same
  files, so it is trained once;
- the rollouts of an env hold enough trajectories for the largest split any experiment
  draws from them (``rollouts.episodes: auto``), unless they come from a DSRL file
  (``data: dsrl``), which holds what it holds;
- the names tables and figures print (:func:`display_names`): an entry's ``display:``, else
  the registered method's ``display_name`` when the label is that method's name, else the
  label; the aggregate rules pass them to ``uniq-bench aggregate --display`` in the
  experiment's order.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path
from typing import Any, NamedTuple

KINDS = ("safe", "unsafe")
"""Demonstrator / rollout kinds: safe (SAC-Lagrangian or scripted safe), unsafe."""


class WorkflowConfigError(ValueError):
    """A config naming something unknown; the message names the key and the valid choices."""


class Run(NamedTuple):
    env: str
    variant: str
    algo: str
    seed: int


def _choices(names) -> str:
    return ", ".join(sorted(names))


def known_methods() -> dict[str, type]:
    """Registered method classes by name (UNIQ, baselines/, ``UNIQ_EXTRA_METHODS``)."""
    from uniq import registry

    return registry.available()


def method_of(config: dict, algo: str) -> str:
    """The registered method an algorithm entry runs (its ``method``, else its own name)."""
    return config["algorithms"][algo].get("method") or algo


def check(config: dict) -> None:
    """Fail with the valid names on anything the config names but the suite does not know."""
    from envs.tasks import TASKS
    from uniq.method import ConfigError, build_config

    unknown = sorted(set(config["tasks"]) - set(TASKS))
    if unknown:
        raise WorkflowConfigError(
            f"config `tasks`: unknown task(s) {unknown}; valid tasks: {_choices(TASKS)} "
            "(envs/tasks.py registers new ones)"
        )
    scripted = [t for t, e in config["tasks"].items() if e.get("data") == "scripted"]
    bad = [t for t in scripted if TASKS[t].family != "navigation"]
    if bad:
        navigation = [t for t, spec in TASKS.items() if spec.family == "navigation"]
        raise WorkflowConfigError(
            f"config `tasks`: {bad} cannot use `data: scripted` (scripted controllers exist for "
            f"the navigation tasks only: {_choices(navigation)}); use `data: demonstrator`"
        )
    methods = known_methods()
    for algo, entry in config["algorithms"].items():
        method = method_of(config, algo)
        if method not in methods:
            where = f"algorithms.{algo}.method" if entry.get("method") else "algorithms"
            raise WorkflowConfigError(
                f"config `{where}`: unknown algorithm {method!r}; valid algorithms: "
                f"{_choices(methods)} (or give an alias `{algo}: {{method: <one of them>, set: ...}}`)"
            )
        fields = {f.name for f in dataclasses.fields(methods[method].Config)}
        bad = sorted(set(entry.get("set", {})) - fields)
        if bad:
            raise WorkflowConfigError(
                f"config `algorithms.{algo}.set`: unknown hyper-parameter(s) {bad} of {method}; "
                f"valid ones: {_choices(fields)}"
            )
        _check_values(f"algorithms.{algo}.set", methods[method].Config, entry.get("set"))
    from envs.demonstrators import DemoConfig
    from envs.ppo import PPOConfig

    for key, cls in (("set", DemoConfig), ("ppo_set", PPOConfig)):
        fields = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(config["demonstrator"].get(key, {})) - fields)
        if bad:
            raise WorkflowConfigError(
                f"config `demonstrator.{key}`: unknown hyper-parameter(s) {bad} of "
                f"{cls.__name__}; valid ones: {_choices(fields)}"
            )
        _check_values(f"demonstrator.{key}", cls, config["demonstrator"].get(key))
    from envs.tasks import committed_demonstrator

    for env, entry in config["tasks"].items():
        if entry.get("data") != "committed":
            continue
        missing = [k for k in KINDS if not Path(committed_demonstrator(env, k)).exists()]
        if missing:
            raise WorkflowConfigError(
                f"config `tasks.{env}`: `data: committed`, but {', '.join(committed_demonstrator(env, k) for k in missing)} "
                "is not in this checkout; train it (demonstrators/README.md) or use "
                "`data: demonstrator` (retrain through the workflow) or `data: scripted`"
            )
    for env, entry in config["tasks"].items():
        _check_dsrl(env, entry)
    external = config.get("external_results", {})
    clash = sorted(set(external) & set(config["algorithms"]))
    if clash:
        raise WorkflowConfigError(
            f"config `external_results`: {clash} also in `algorithms`; an external method "
            "needs a name of its own"
        )
    reference = config["aggregate"].get("reference", "uniq")
    names = [*config["algorithms"], *external]
    if reference not in names:
        raise WorkflowConfigError(
            f"config `aggregate.reference`: {reference!r} is none of the config's methods, so "
            f"no probability of improvement could be drawn; name one of {_choices(names)}"
        )
    compared = [
        exp
        for exp, block in config["experiments"].items()
        if reference in block["algorithms"]
        or exp in external.get(reference, {}).get("experiments", [])
    ]
    if not compared:
        raise WorkflowConfigError(
            f"config `aggregate.reference`: {reference!r} is in no experiment's algorithms, so "
            "no probability of improvement could be drawn; add it to an experiment "
            f"(`experiments.<name>.algorithms`) or name another of {_choices(names)}"
        )
    last_k, train = config["aggregate"].get("last_k", 0), config["train"]
    every = train["eval_every"]
    points = -(-train["steps"] // every) if every else 0  # the last step is always evaluated
    if last_k and points < last_k:
        raise WorkflowConfigError(
            f"config `aggregate.last_k: {last_k}` needs at least {last_k} curve evaluations per "
            f"run, but train.steps={train['steps']} with train.eval_every={every} gives "
            f"{points}; evaluate more often or set aggregate.last_k: 0"
        )
    variants = config["datasets"]["variants"]
    for exp, block in config["experiments"].items():
        checks = [
            ("tasks", block.get("tasks", []), config["tasks"]),
            ("variants", block["variants"], variants),
            ("algorithms", block["algorithms"], config["algorithms"]),
        ]
        for key, names, valid in checks:
            missing = sorted(set(names) - set(valid))
            if missing:
                raise WorkflowConfigError(
                    f"config `experiments.{exp}.{key}`: unknown {missing}; valid: {_choices(valid)}"
                )
        for algo in block["algorithms"]:  # a method may reject a D_MIX composition
            method_cls = methods[method_of(config, algo)]
            cfg = build_config(method_cls.Config, config["algorithms"][algo].get("set"), algo)
            for variant in block["variants"]:
                n_des, n_und = (
                    variants[variant][k] for k in ("n_mix_desirable", "n_mix_undesirable")
                )
                if n_des + n_und == 0:
                    continue
                if n_des == 0:
                    raise WorkflowConfigError(
                        f"config `datasets.variants.{variant}` (experiment {exp}): "
                        "n_mix_desirable is 0, so D_MIX holds no desirable behaviour to imitate: "
                        "the learners would see undesirable trajectories only, and BC-safe "
                        "(trained on D_MIX's desirable rows) nothing at all. Set "
                        "n_mix_desirable >= 1."
                    )
                try:
                    method_cls.check_split(cfg, n_und / (n_des + n_und))
                except ConfigError as err:
                    raise WorkflowConfigError(
                        f"config `algorithms.{algo}.set` with `datasets.variants.{variant}` "
                        f"(experiment {exp}): {err}"
                    ) from err
    for algo, block in external.items():
        missing = sorted(set(block["experiments"]) - set(config["experiments"]))
        if missing:
            raise WorkflowConfigError(
                f"config `external_results.{algo}.experiments`: unknown {missing}; "
                f"valid: {_choices(config['experiments'])}"
            )
    for exp in config["experiments"]:  # two labels printed alike would be one in a figure
        by_name: dict[str, list[str]] = {}
        for label, name in display_names(config, exp).items():
            by_name.setdefault(name, []).append(label)
        same = {name: labels for name, labels in by_name.items() if len(labels) > 1}
        if same:
            name, labels = next(iter(same.items()))
            raise WorkflowConfigError(
                f"config `experiments.{exp}`: {labels} would all print as {name!r} in its tables "
                f"and figures; give each its own `display:` in `algorithms` (or "
                "`external_results`)"
            )
    for env in generated_tasks(config):  # a DSRL file holds what it holds (the split checks)
        for kind in KINDS:
            rollout_episodes(config, env, kind)  # raises when a fixed count is too small


def _check_values(key: str, config_cls: type, overrides: dict | None) -> None:
    """Each value as the job will take it (its Config's type), so a typo fails now, not
    when the job starts after hours of data jobs."""
    from uniq.job import coerce_overrides
    from uniq.method import ConfigError, build_config

    try:
        build_config(config_cls, coerce_overrides(config_cls, overrides or {}))
    except (ConfigError, TypeError, ValueError) as err:
        raise WorkflowConfigError(f"config `{key}`: {err}") from None


SCHEMA = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"


def check_file(path: str | Path) -> dict:
    """The checks the Snakefile runs on a config file (YAML, :data:`SCHEMA`, :func:`check`),
    without Snakemake, whose own message on a YAML error names neither the file nor the line.
    Returns the validated config (schema defaults filled in)."""
    import yaml
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        config = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise WorkflowConfigError(f"{path}: cannot read it ({err.strerror})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        what = ", ".join(filter(None, (getattr(err, "context", ""), getattr(err, "problem", ""))))
        tabs = " (YAML indents with spaces only)" if "\\t" in what else ""
        raise WorkflowConfigError(
            f"{where}: YAML syntax error: {what or err}{tabs}. Fix the file there."
        ) from None
    if not isinstance(config, dict):
        raise WorkflowConfigError(f"{path}: a config is a mapping of keys (profile, tasks, ...)")
    try:
        validate(config, str(SCHEMA))
    except WorkflowError as err:
        raise WorkflowConfigError(f"{path}: {err}") from None
    check(config)
    return config


DSRL_KEYS = ("path", "dsrl_return_threshold", "dsrl_cost_threshold")


def _check_dsrl(env: str, entry: dict) -> None:
    """A ``data: dsrl`` task names an existing file; its keys are not set on other tasks."""
    source = entry.get("data", "demonstrator")
    if source != "dsrl":
        stray = [k for k in DSRL_KEYS if k in entry]
        if stray:
            raise WorkflowConfigError(
                f"config `tasks.{env}`: {', '.join(stray)} apply to `data: dsrl` only, but the "
                f"task has `data: {source}`; set `data: dsrl` or remove them"
            )
        return
    if "path" not in entry:
        raise WorkflowConfigError(
            f"config `tasks.{env}`: `data: dsrl` needs `path: <DSRL's .hdf5 file of {env}>`; "
            "nothing is downloaded (README, 'DSRL datasets', says where DSRL publishes them)"
        )
    path = Path(entry["path"]).expanduser()
    if not path.is_file():
        raise WorkflowConfigError(
            f"config `tasks.{env}.path`: {path} is not a file (a relative path is read from "
            f"the working directory, {Path.cwd()}); download DSRL's file of {env} (README, "
            "'DSRL datasets') or fix the path"
        )


def experiment_tasks(config: dict, exp: str) -> list[str]:
    block = config["experiments"][exp]
    return list(block.get("tasks") or config["tasks"])


def experiment_seeds(config: dict, exp: str) -> list[int]:
    return list(config["experiments"][exp].get("seeds") or config["train"]["seeds"])


def experiment_runs(config: dict, exp: str) -> list[Run]:
    """The suite's runs an experiment aggregates (external methods excluded)."""
    block = config["experiments"][exp]
    return [
        Run(env, variant, algo, seed)
        for env in experiment_tasks(config, exp)
        for variant in block["variants"]
        for algo in block["algorithms"]
        for seed in experiment_seeds(config, exp)
    ]


def external_runs(config: dict, exp: str) -> list[Run]:
    """The runs of external methods (``external_results``) that join an experiment."""
    block = config["experiments"][exp]
    return [
        Run(env, variant, algo, seed)
        for algo, ext in config.get("external_results", {}).items()
        if exp in ext["experiments"]
        for env in experiment_tasks(config, exp)
        for variant in block["variants"]
        for seed in experiment_seeds(config, exp)
    ]


def display_names(config: dict, exp: str, external: bool = True) -> dict[str, str]:
    """Label -> the name tables and figures print, for the labels experiment ``exp`` uses, in
    its order (its ``algorithms``, then the external methods that join it, unless
    ``external`` is False).

    A label's name is its entry's ``display:`` if given; else, when the label is the name of
    the method it runs (``bc-safe: {}``), that method's ``display_name`` (class attribute);
    else the label itself (an alias such as ``uniq-nocorr`` never takes its method's name).
    """
    methods = known_methods()
    names = {}
    for label in config["experiments"][exp]["algorithms"]:
        entry = config["algorithms"][label]
        method = method_of(config, label)
        if entry.get("display"):
            names[label] = entry["display"]
        elif method == label and method in methods:
            names[label] = methods[method].display_name or label
        else:
            names[label] = label
    if external:
        for label, entry in config.get("external_results", {}).items():
            if exp in entry["experiments"]:
                names[label] = entry.get("display") or label
    return names


def display_args(config: dict, exp: str, external: bool = True) -> str:
    """``--display LABEL=NAME ...`` (shell-quoted) of :func:`display_names`, for
    ``uniq-bench aggregate``."""
    names = display_names(config, exp, external)
    return shlex.join(
        arg for label, name in names.items() for arg in ("--display", f"{label}={name}")
    )


def all_runs(config: dict) -> list[Run]:
    """Every distinct suite run over all experiments (each trained once)."""
    return sorted({run for exp in config["experiments"] for run in experiment_runs(config, exp)})


def all_seeds(config: dict) -> list[int]:
    """Every seed of the suite's runs: what one batched train job (``train.batch_seeds``)
    trains for each (env, variant, algo). Snakemake outputs cannot vary with the wildcards,
    so a job whose experiments use fewer seeds trains these all the same."""
    return sorted({run.seed for run in all_runs(config)})


def env_variants(config: dict, env: str) -> list[str]:
    """Variants some experiment draws on ``env`` (its datasets are built for these only)."""
    return sorted(
        {
            variant
            for exp, block in config["experiments"].items()
            if env in experiment_tasks(config, exp)
            for variant in block["variants"]
        }
    )


def variant_params(config: dict, variant: str) -> dict[str, int]:
    return dict(config["datasets"]["variants"][variant])


def episodes_needed(config: dict, env: str, kind: str) -> int:
    """Trajectories of ``kind`` the largest split on ``env`` draws (disjoint within a split).

    safe: ``n_mix_desirable``; unsafe: ``n_un + n_mix_undesirable``; max over the variants.
    """
    need = 0
    for variant in env_variants(config, env):
        p = variant_params(config, variant)
        n = p["n_mix_desirable"] if kind == "safe" else p["n_un"] + p["n_mix_undesirable"]
        need = max(need, n)
    return need


def rollout_episodes(config: dict, env: str, kind: str) -> int:
    """``rollouts.episodes`` (checked against the largest split), or exactly that need."""
    need = episodes_needed(config, env, kind)
    asked = config["rollouts"]["episodes"]
    if asked == "auto":
        return max(need, 1)
    if asked < need:
        raise WorkflowConfigError(
            f"config `rollouts.episodes` = {asked} is fewer than the {need} {kind} trajectories "
            f"the largest split of {env} needs; raise it or set it to auto"
        )
    return asked


def data_source(config: dict, env: str) -> str:
    """``committed`` (demonstrators/), ``demonstrator`` (trained by the workflow), ``scripted``
    or ``dsrl`` (the user's DSRL file)."""
    return config["tasks"][env]["data"]


def dsrl_tasks(config: dict) -> list[str]:
    """Tasks whose rollouts are cut from a DSRL file (rule ``dsrl_rollouts``)."""
    return [env for env in config["tasks"] if data_source(config, env) == "dsrl"]


def generated_tasks(config: dict) -> list[str]:
    """Tasks whose rollouts the suite generates (rule ``rollouts``)."""
    return [env for env in config["tasks"] if data_source(config, env) != "dsrl"]


def dsrl_path(config: dict, env: str) -> str:
    """The task's DSRL file (``~`` expanded), an input Snakemake tracks."""
    return str(Path(config["tasks"][env]["path"]).expanduser())


def dsrl_args(config: dict, env: str) -> str:
    """``--return-threshold R --cost-threshold C``: the task's split rule, defaults filled in
    (always spelled out, so a changed default reruns the job through its params)."""
    from envs.dsrl import COST_THRESHOLD, RETURN_THRESHOLD

    entry = config["tasks"][env]
    r = entry.get("dsrl_return_threshold", RETURN_THRESHOLD)
    c = entry.get("dsrl_cost_threshold", COST_THRESHOLD)
    return (
        f"--return-threshold {_format_value(float(r))} --cost-threshold {_format_value(float(c))}"
    )


def demo_steps(config: dict, env: str) -> int:
    """The task's ``demo_steps``, else envs/tasks.py's budget for ``demonstrator.budget``."""
    from envs.tasks import get_task

    steps = config["tasks"][env].get("demo_steps")
    if steps:
        return int(steps)
    spec = get_task(env)
    budget = config["demonstrator"]["budget"]
    return spec.demo_steps_paper if budget == "paper" else spec.demo_steps_quick


def kind_offset(kind: str) -> int:
    """Seed offset of a kind, so safe and unsafe jobs never share a random stream."""
    return KINDS.index(kind)


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _set_args(overrides: dict[str, Any]) -> list[str]:
    return [arg for k, v in overrides.items() for arg in ("--set", f"{k}={_format_value(v)}")]


def train_args(config: dict, algo: str, env: str | None = None) -> str:
    """``--algo METHOD --label ALGO [--set k=v ...] [--obs-norm on|off]`` (shell-quoted) for an
    algorithm entry, on task ``env`` (whose ``obs_norm`` entry, if any, overrides the task's
    default standardisation)."""
    entry = config["algorithms"][algo]
    args = ["--algo", method_of(config, algo), "--label", algo]
    norm = config["tasks"].get(env, {}).get("obs_norm") if env else None
    if norm is not None:
        args += ["--obs-norm", "on" if norm else "off"]
    return shlex.join(args + _set_args(entry.get("set", {})))


def demonstrator_args(config: dict, env: str) -> str:
    """``--algo sac|ppo [--set k=v ...]``: the task's demonstrator trainer (TaskSpec.demo_algo)
    with its hyper-parameters (``demonstrator.set`` for SAC, ``demonstrator.ppo_set`` for PPO)."""
    from envs.tasks import get_task

    algo = get_task(env).demo_algo
    overrides = config["demonstrator"].get("set" if algo == "sac" else "ppo_set", {})
    return shlex.join(["--algo", algo, *_set_args(overrides)])


def demonstrator_file(config: dict, env: str, kind: str, data_dir: str) -> list[str]:
    """The demonstrator the rollouts of (env, kind) come from: the committed one
    (``data: committed``), the workflow's own (``data: demonstrator``), or none (scripted)."""
    from envs.tasks import committed_demonstrator

    source = data_source(config, env)
    if source == "committed":
        return [committed_demonstrator(env, kind)]
    return [f"{data_dir}/{env}/demonstrator_{kind}.pt"] if source == "demonstrator" else []


def name_regex(names) -> str:
    """A wildcard constraint matching exactly ``names``."""
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"
