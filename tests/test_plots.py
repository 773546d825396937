"""uniq/plots.py: every figure of every experiment kind is written as a valid PNG and PDF."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from test_stats import DISPLAY, make_experiment

from uniq import plots, stats
from uniq.cli import main

REPS = 50
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


CODE_NAMES = {"uniq", "bc-mix", "bc-safe", "bc-safe†", "dwbc", "safedice", "uniq-nocorr"}


def figure_texts(fig) -> list[str]:
    """Every tick label, legend entry and figure label of a figure."""
    texts = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels() + ax.get_xticklabels()]
    texts += [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    texts += [t.get_text() for t in fig.texts]
    return texts


def legend_entries(fig) -> dict[str, object]:
    (leg,) = fig.legends
    return {t.get_text(): h for t, h in zip(leg.get_texts(), leg.legend_handles, strict=True)}


def check_legend_like_lines(fig) -> None:
    """Each method's legend handle has the marker (and width) of that method's plotted lines."""
    from matplotlib.colors import same_color

    for label, handle in legend_entries(fig).items():
        if label == plots.LIMIT_LABEL:
            continue
        lines = [
            ln
            for ax in fig.axes
            for ln in ax.get_lines()
            if same_color(ln.get_color(), handle.get_color()) and len(ln.get_xdata()) > 1
        ]
        assert lines, label
        for ln in lines:
            assert handle.get_marker() == ln.get_marker(), (label, ln.get_marker())
            assert handle.get_linewidth() == ln.get_linewidth(), label


def limit_lines(fig) -> list:
    return [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_label() == plots.LIMIT_LABEL]


def check_limit_labelled(fig) -> None:
    """The dashed cost-limit line is drawn, carries its label and the legend names it."""
    assert limit_lines(fig)
    assert all(ln.get_linestyle() == "--" for ln in limit_lines(fig))
    handle = legend_entries(fig)[plots.LIMIT_LABEL]
    assert handle.get_linestyle() == "--"


def check_figure(stem: Path) -> None:
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    assert png.read_bytes()[:8] == PNG_MAGIC, png
    img = matplotlib.image.imread(png)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01  # not a blank canvas
    assert pdf.read_bytes()[:5] == b"%PDF-", pdf
    caption = stem.parent / "captions" / f"{stem.name}.rst"
    assert len(caption.read_text().strip()) > 40, caption


def make_curves(
    root: Path, methods=("uniq", "bc-mix"), envs=("SafetyPointGoal1-v0", "SafetyCarButton1-v0")
) -> list[Path]:
    paths = []
    steps = np.arange(0, 5001, 1000)
    for k, algo in enumerate(methods):
        for env in envs:
            for seed in range(3):
                ret = (1 - np.exp(-steps / 2000)) * (0.8 - 0.3 * k) + 0.02 * seed
                cost = 1.5 * np.exp(-steps / 1500) + 0.3 + 0.6 * k + 0.03 * seed
                df = pd.DataFrame(
                    dict(
                        step=steps,
                        return_mean=100 * ret,
                        cost_mean=25 * cost,
                        return_normalized=ret,
                        cost_normalized=cost,
                        episodes=5,
                    )
                )
                path = root / "runs" / env / "default" / algo / f"seed{seed}" / "curve.csv"
                path.parent.mkdir(parents=True, exist_ok=True)
                df.to_csv(path, index=False)
                paths.append(path)
    return paths


def test_main_figures_with_curves(tmp_path):
    centres = {
        ("uniq", "SafetyPointGoal1-v0"): (0.8, 0.4),
        ("uniq", "SafetyCarButton1-v0"): (0.6, 0.7),
        ("bc-mix", "SafetyPointGoal1-v0"): (0.5, 1.4),
        ("bc-mix", "SafetyCarButton1-v0"): (0.3, 1.6),
        ("some-new-method", "SafetyPointGoal1-v0"): (0.2, 0.2),
        ("some-new-method", "SafetyCarButton1-v0"): (0.1, 0.3),
    }
    paths = make_experiment(tmp_path, centres)
    paths += make_experiment(
        tmp_path,
        {
            ("bc-safe", "SafetyPointGoal1-v0"): (0.9, 0.3),
            ("bc-safe", "SafetyCarButton1-v0"): (0.8, 0.5),
        },
        hidden=True,
    )
    stats.aggregate(paths, "main", tmp_path / "res", reps=REPS, display=DISPLAY)
    curves = make_curves(tmp_path)
    figs = tmp_path / "fig"
    caps = plots.make_figures("main", tmp_path / "res", figs, curves=curves, reps=REPS)
    assert set(caps) == {"aggregate", "profiles", "poi", "curves"}
    for kind in caps:
        check_figure(figs / f"main_{kind}")
    assert not list(figs.glob(".*tmp"))
    # every caption (the .rst beside the figure too) names the task count and the seeds
    for kind in ("aggregate", "profiles", "poi"):
        assert "2 tasks" in caps[kind] and "5 seeds (0-4)" in caps[kind], kind
        assert "5 seeds (0-4)" in (figs / "captions" / f"main_{kind}.rst").read_text()
    assert "2 tasks (CarButton1, PointGoal1)" in caps["aggregate"]
    assert "2 tasks, 3 seeds (0-2) per method and task" in caps["curves"]
    assert "P(UNIQ > baseline)" in caps["poi"] and "uniq" not in caps["poi"]


def _main_summary(tmp_path) -> tuple[Path, dict, pd.DataFrame]:
    centres = {
        ("uniq", "EnvA"): (0.8, 0.4),
        ("uniq", "EnvB"): (0.6, 0.7),
        ("bc-mix", "EnvA"): (0.5, 1.4),
        ("bc-mix", "EnvB"): (0.3, 1.6),
        ("safedice", "EnvA"): (0.0, 0.1),  # always worse on return, better on cost: POI 0 and 1
        ("safedice", "EnvB"): (0.0, 0.1),
        ("some-new-method", "EnvA"): (0.2, 0.2),
        ("some-new-method", "EnvB"): (0.1, 0.3),
    }
    paths = make_experiment(tmp_path, centres)
    paths += make_experiment(
        tmp_path, {("bc-safe", "EnvA"): (0.9, 0.3), ("bc-safe", "EnvB"): (0.8, 0.5)}, hidden=True
    )
    res = tmp_path / "res"
    stats.aggregate(paths, "main", res, reps=REPS, display=DISPLAY)
    return res, json.loads((res / "meta.json").read_text()), pd.read_csv(res / "summary.csv")


DISPLAYED = ["UNIQ", "BC-mix", "BC-safe†", "SafeDICE", "some-new-method"]


def test_figures_print_display_names(tmp_path):
    res, meta, runs = _main_summary(tmp_path)
    agg, _ = plots.plot_aggregate(pd.read_csv(res / "aggregate.csv"), meta, runs)
    prof, _ = plots.plot_profiles(pd.read_csv(res / "profiles.csv"), meta, runs)
    poi, _ = plots.plot_poi(pd.read_csv(res / "poi.csv"), meta, runs)
    # y tick labels of the interval plots: display names, the unknown label as itself
    assert [t.get_text() for t in agg.axes[0].get_yticklabels()] == DISPLAYED[::-1]
    assert [t.get_text() for t in poi.axes[0].get_yticklabels()] == DISPLAYED[1:][::-1]
    assert [t for t in legend_entries(prof) if t != plots.LIMIT_LABEL] == DISPLAYED
    for fig in (agg, prof, poi):
        assert not CODE_NAMES & set(figure_texts(fig)), figure_texts(fig)
    assert poi._supxlabel.get_text() == "P(UNIQ better than baseline)"


def test_figures_of_an_aggregate_without_names_print_labels(tmp_path):
    # `uniq-bench aggregate` without --display (or a meta.json from before display_names):
    # every figure prints the labels, the oracle still with its dagger.
    paths = make_experiment(tmp_path, {("uniq", "EnvA"): (0.8, 0.4), ("dwbc", "EnvA"): (0.5, 1)})
    paths += make_experiment(tmp_path, {("bc-safe", "EnvA"): (0.9, 0.3)}, hidden=True)
    res = tmp_path / "res"
    stats.aggregate(paths, "main", res, reps=REPS)
    meta = json.loads((res / "meta.json").read_text())
    old_meta = {k: v for k, v in meta.items() if k != "display_names"}
    for m in (meta, old_meta):
        agg, _ = plots.plot_aggregate(pd.read_csv(res / "aggregate.csv"), m)
        ticks = [t.get_text() for t in agg.axes[0].get_yticklabels()]
        assert ticks == ["uniq", "bc-safe†", "dwbc"][::-1]
        poi, _ = plots.plot_poi(pd.read_csv(res / "poi.csv"), m)
        assert poi._supxlabel.get_text() == "P(uniq better than baseline)"


def test_legend_handles_look_like_the_lines(tmp_path):
    res, meta, runs = _main_summary(tmp_path)
    prof, _ = plots.plot_profiles(pd.read_csv(res / "profiles.csv"), meta, runs)
    check_legend_like_lines(prof)
    assert all(h.get_marker() in ("None", "", None) for h in legend_entries(prof).values())
    bands = plots.curve_bands(plots.load_curves(make_curves(tmp_path / "c")), reps=REPS)
    curves, _ = plots.plot_curves(bands, meta)
    check_legend_like_lines(curves)
    assert [t for t in legend_entries(curves) if t != plots.LIMIT_LABEL] == ["UNIQ", "BC-mix"]


def test_poi_axes_show_the_ends(tmp_path):
    res, meta, runs = _main_summary(tmp_path)
    table = pd.read_csv(res / "poi.csv").set_index(["baseline", "metric"])
    # the data put marks exactly at 0 (return) and 1 (cost): they must not be clipped
    assert table.loc[("safedice", "return_normalized"), "poi"] == 1.0
    assert table.loc[("safedice", "cost_normalized"), "poi"] == 0.0
    fig, _ = plots.plot_poi(pd.read_csv(res / "poi.csv"), meta, runs)
    for ax in fig.axes:
        low, high = ax.get_xlim()
        assert low < 0 and high > 1 and low >= -0.1 and high <= 1.1


def test_cost_limit_labelled_in_every_figure_that_draws_it(tmp_path):
    res, meta, runs = _main_summary(tmp_path)
    agg, _ = plots.plot_aggregate(pd.read_csv(res / "aggregate.csv"), meta, runs)
    prof, _ = plots.plot_profiles(pd.read_csv(res / "profiles.csv"), meta, runs)
    bands = plots.curve_bands(plots.load_curves(make_curves(tmp_path / "c")), reps=REPS)
    curves, _ = plots.plot_curves(bands, meta)
    for fig in (agg, prof, curves):
        check_limit_labelled(fig)
    poi, _ = plots.plot_poi(pd.read_csv(res / "poi.csv"), meta, runs)
    assert not limit_lines(poi)  # its dashed line is P = 0.5, not the cost limit


def test_runs_phrase():
    runs = pd.DataFrame(
        dict(
            task=["A"] * 5 + ["B"] * 3 + ["A"] * 5,
            algo=["x"] * 8 + ["y"] * 5,
            seed=[0, 1, 2, 4, 5, 0, 1, 2, 0, 1, 2, 4, 5],
        )
    )
    assert plots.runs_phrase(runs) == "2 tasks, 3-5 seeds (0-2, 4-5) per method and task"
    assert plots.runs_phrase(runs, ["A"], names=True) == (
        "1 task (A), 5 seeds (0-2, 4-5) per method and task"
    )
    one = runs[runs.seed == 0]
    assert plots.runs_phrase(one, task_unit="sweep point") == (
        "2 sweep points, 1 seed (0) per method and sweep point"
    )


@pytest.mark.parametrize("experiment", ["undesirable_size", "mix_ratio"])
def test_sweep_figures(tmp_path, experiment):
    paths = []
    for n_un, n_des in ((10, 10), (50, 20), (100, 30)):
        params = {"n_un": n_un, "n_mix_desirable": n_des, "n_mix_undesirable": 40 - n_des}
        paths += make_experiment(
            tmp_path,
            {("uniq", "EnvA"): (0.3 + n_un / 200, 0.5), ("bc-mix", "EnvA"): (0.4, 1.3)},
            variant=f"v{n_un}",
            params=params,
        )
    stats.aggregate(paths, experiment, tmp_path / "res", reps=REPS, display=DISPLAY)
    caps = plots.make_figures(experiment, tmp_path / "res", tmp_path / "fig", reps=REPS)
    assert set(caps) == {"sweep"}
    check_figure(tmp_path / "fig" / f"{experiment}_sweep")
    assert "1 task (EnvA), 3 sweep points, 5 seeds (0-4)" in caps["sweep"]
    # the lines carry markers here, so the legend shows them
    meta = json.loads((tmp_path / "res" / "meta.json").read_text())
    fig, _ = plots.plot_sweep(pd.read_csv(tmp_path / "res" / "by_x.csv"), meta)
    check_legend_like_lines(fig)
    assert legend_entries(fig)["UNIQ"].get_marker() == "o"
    check_limit_labelled(fig)


def test_ablation_figures_via_cli(tmp_path):
    centres = {
        ("uniq", "EnvA"): (0.8, 0.5),
        ("uniq-nocorr", "EnvA"): (0.7, 0.9),
        ("uniq", "EnvB"): (0.6, 0.6),
        ("uniq-nocorr", "EnvB"): (0.6, 1.2),
    }
    paths = [str(p) for p in make_experiment(tmp_path, centres)]
    res, figs = tmp_path / "res", tmp_path / "fig"
    exp = ["--experiment", "occupancy_ablation"]
    display = ["--display", "uniq=UNIQ", "--display", "uniq-nocorr=UNIQ (no corr.)"]
    assert main(["aggregate", *exp, "--out", str(res), "--reps", str(REPS), *display, *paths]) == 0
    assert (
        main(["figures", *exp, "--summary", str(res), "--out", str(figs), "--reps", str(REPS)]) == 0
    )
    for kind in ("ablation", "aggregate", "poi"):
        check_figure(figs / f"occupancy_ablation_{kind}")
        caption = (figs / "captions" / f"occupancy_ablation_{kind}.rst").read_text()
        assert "2 tasks" in caption and "5 seeds (0-4)" in caption, kind
    assert (
        "UNIQ and UNIQ (no corr.)"
        in (figs / "captions/occupancy_ablation_ablation.rst").read_text()
    )
    meta = json.loads((res / "meta.json").read_text())
    fig, _ = plots.plot_ablation(pd.read_csv(res / "table.csv"), meta)
    assert set(legend_entries(fig)) == {"UNIQ", "UNIQ (no corr.)", plots.LIMIT_LABEL}
    check_limit_labelled(fig)
    assert legend_entries(fig)["UNIQ"].get_marker() == "o"  # the points carry markers
    # figures of an experiment that was not aggregated: a clear error, exit code 2
    assert main(["figures", "--experiment", "main", "--summary", str(res), "--out", str(figs)]) == 2


def test_method_colors_fixed_and_deterministic():
    assert plots.method_color("uniq") == plots.METHOD_COLORS["uniq"]
    # one colour for each label of the known order, no more, no less
    assert list(plots.METHOD_COLORS) == list(stats.KNOWN_METHODS)
    assert "uniq-paper-actor" in stats.KNOWN_METHODS
    assert len(set(plots.METHOD_COLORS.values())) == len(plots.METHOD_COLORS)
    assert plots.method_color("new-method") == plots.method_color("new-method")
    assert plots.method_color("new-method") not in plots.METHOD_COLORS.values()


def test_curves_need_run_path_and_columns(tmp_path):
    bad = tmp_path / "curve.csv"
    bad.write_text("step,return_mean\n0,1\n")
    with pytest.raises(stats.StatsError, match="cannot read the run"):
        plots.load_curves([bad])
    good_path = make_curves(tmp_path, methods=("uniq",), envs=("EnvA",))[0]
    pd.read_csv(good_path).drop(columns="cost_normalized").to_csv(good_path, index=False)
    with pytest.raises(stats.StatsError, match="cost_normalized"):
        plots.load_curves([good_path])


def test_curve_bands_mean_and_ci(tmp_path):
    bands = plots.curve_bands(
        plots.load_curves(make_curves(tmp_path, ("uniq",), ("EnvA",))), reps=REPS
    )
    last = bands[(bands.metric == "return_normalized") & (bands.step == 5000)].iloc[0]
    expect = (1 - np.exp(-2.5)) * 0.8 + 0.02  # mean over seeds 0, 1, 2
    assert last["mean"] == pytest.approx(expect)
    assert last.ci_low <= expect <= last.ci_high and last.n_seeds == 3
