"""What tables and figures call a method: its class's ``display_name``, its config entry's
``display:``, or its label, resolved by the workflow (``uniq.workflow.display_names``) and
carried by ``uniq-bench aggregate --display`` into table.md, table.tex, meta.json and the
figures."""

from __future__ import annotations

import json
import shlex

import pandas as pd
import pytest
import yaml
from snakemake.utils import validate
from test_registry_discovery import extra_folder  # noqa: F401  (a fixture: README's BC-MSE)
from test_stats import DISPLAY, make_experiment
from test_workflow import CONFIGS, load

from uniq import plots, registry
from uniq import workflow as W
from uniq.cli import main
from uniq.method import Method

REPS = 50


def config_with_new_method() -> dict:
    """The smoke config with the new method, an alias of it without ``display:``, the shipped
    alias with one (uniq-nocorr) and an external method with one, all in ``main``."""
    config = load("smoke.yaml")
    config["algorithms"]["bc-mse"] = {}
    config["algorithms"]["bc-mse-wide"] = {"method": "bc-mse", "set": {"hidden": 512}}
    config["experiments"]["main"]["algorithms"] = [
        "uniq",
        "bc-mse",
        "bc-mse-wide",
        "uniq-nocorr",
        "bc-safe",
    ]
    config["external_results"] = {"mymethod": {"experiments": ["main"], "display": "My method"}}
    validate(config, str(CONFIGS / "schema.yaml"))
    return config


WANT = {
    "uniq": "UNIQ",  # the class attribute of the method the label names
    "bc-mse": "BC-MSE",  # the new method's class attribute
    "bc-mse-wide": "bc-mse-wide",  # an alias without display: its label, not "BC-MSE"
    "uniq-nocorr": "UNIQ (no corr.)",  # an alias with display: it
    "bc-safe": "BC-safe",
    "mymethod": "My method",  # external_results' display
}


@pytest.mark.usefixtures("extra_folder")
def test_workflow_resolves_each_label_in_the_experiments_order():
    config = config_with_new_method()
    W.check(config)
    names = W.display_names(config, "main")
    assert names == WANT and list(names) == list(WANT)
    assert list(W.display_names(config, "main", external=False)) == list(WANT)[:-1]
    # the same map as the Snakefile's aggregate rules pass it, quoted for the shell
    args = shlex.split(W.display_args(config, "main"))
    assert args[:4] == ["--display", "uniq=UNIQ", "--display", "bc-mse=BC-MSE"]
    assert "uniq-nocorr=UNIQ (no corr.)" in args and "mymethod=My method" in args
    # an external method without display: its label
    del config["external_results"]["mymethod"]["display"]
    assert W.display_names(config, "main")["mymethod"] == "mymethod"


@pytest.mark.usefixtures("extra_folder")
def test_new_method_and_aliases_named_in_table_and_figures(tmp_path):
    config = config_with_new_method()
    labels = list(W.display_names(config, "main"))
    paths = make_experiment(
        tmp_path,
        {(m, env): (0.3 + 0.1 * k, 0.5) for k, m in enumerate(labels) for env in ("EnvA", "EnvB")
         if m != "bc-safe"},
    )  # fmt: skip
    paths += make_experiment(tmp_path, {("bc-safe", "EnvA"): (0.9, 0.2)}, hidden=True)
    res = tmp_path / "res"
    argv = ["aggregate", "--experiment", "main", "--out", str(res), "--reps", str(REPS)]
    argv += shlex.split(W.display_args(config, "main"))  # what the aggregate rule runs
    assert main([*argv, *map(str, paths)]) == 0

    printed = [f"{WANT[m]}†" if m == "bc-safe" else WANT[m] for m in labels]
    rows = [
        line.split("|")[2].strip()
        for line in (res / "table.md").read_text().splitlines()
        if line.startswith("| ") and "Method" not in line
    ]
    assert rows == printed * 2  # EnvA, EnvB (bc-safe n/a there), in the config's order
    tex = (res / "table.tex").read_text()
    assert "BC-MSE &" in tex and "bc-mse-wide &" in tex and "UNIQ (no corr.) &" in tex
    meta = json.loads((res / "meta.json").read_text())
    assert meta["methods"] == labels and meta["display_names"] == WANT

    # the figures read the names from meta.json
    runs = pd.read_csv(res / "summary.csv")
    agg, _ = plots.plot_aggregate(pd.read_csv(res / "aggregate.csv"), meta, runs)
    assert [t.get_text() for t in agg.axes[0].get_yticklabels()] == printed[::-1]
    prof, _ = plots.plot_profiles(pd.read_csv(res / "profiles.csv"), meta, runs)
    legend = [t.get_text() for t in prof.legends[0].get_texts()]
    assert legend == printed + [plots.LIMIT_LABEL]
    poi, caption = plots.plot_poi(pd.read_csv(res / "poi.csv"), meta, runs)
    assert [t.get_text() for t in poi.axes[0].get_yticklabels()] == printed[1:][::-1]
    assert "P(UNIQ > baseline)" in caption
    # and make_figures writes them (the aggregate figure through the same meta.json)
    caps = plots.make_figures("main", res, tmp_path / "fig", reps=REPS)
    assert set(caps) == {"aggregate", "profiles", "poi"}


class _Parent(Method):
    name = "parent-x"
    display_name = "Parent X"


class _Child(_Parent):
    name = "child-x"  # its own name, no display_name: prints as its name, not "Parent X"


class _Renamed(_Parent):
    display_name = "Renamed X"  # same name, own display name


class _Plain(Method):
    name = "plain-x"


def test_display_name_class_attribute_defaults_to_name():
    assert (_Parent.display_name, _Child.display_name) == ("Parent X", "child-x")
    assert (_Renamed.name, _Renamed.display_name) == ("parent-x", "Renamed X")
    assert _Plain.display_name == "plain-x"
    shipped = {name: cls.display_name for name, cls in registry.available().items()}
    assert shipped == {
        "uniq": "UNIQ",
        "bc-mix": "BC-mix",
        "bc-safe": "BC-safe",
        "dwbc": "DWBC",
        "safedice": "SafeDICE",
    }


@pytest.mark.parametrize("name", ["config.yaml", "quick.yaml", "smoke.yaml", "paper_data.yaml"])
def test_shipped_configs_print_the_names_of_the_tables(name):
    config = load(name)
    validate(config, str(CONFIGS / "schema.yaml"))
    for exp in config["experiments"]:
        names = W.display_names(config, exp)
        assert list(names) == config["experiments"][exp]["algorithms"]
        assert names == {label: DISPLAY[label] for label in names}, (name, exp)


def test_schema_accepts_display_and_rejects_an_empty_one():
    config = config_with_new_method()  # display on an alias and on an external method
    assert config["algorithms"]["uniq-nocorr"]["display"] == "UNIQ (no corr.)"
    for bad in ("", 3):
        broken = yaml.safe_load(yaml.safe_dump(config))
        broken["algorithms"]["uniq"]["display"] = bad
        with pytest.raises(Exception, match="display"):
            validate(broken, str(CONFIGS / "schema.yaml"))
