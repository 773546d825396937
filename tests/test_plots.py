"""uniq/plots.py: every figure of every experiment kind is written as a valid PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from test_stats import make_experiment

from uniq import plots, stats
from uniq.cli import main

REPS = 50
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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
    stats.aggregate(paths, "main", tmp_path / "res", reps=REPS)
    curves = make_curves(tmp_path)
    figs = tmp_path / "fig"
    caps = plots.make_figures("main", tmp_path / "res", figs, curves=curves, reps=REPS)
    assert set(caps) == {"aggregate", "profiles", "poi", "curves"}
    for kind in caps:
        check_figure(figs / f"main_{kind}")
    assert not list(figs.glob(".*tmp"))


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
    stats.aggregate(paths, experiment, tmp_path / "res", reps=REPS)
    caps = plots.make_figures(experiment, tmp_path / "res", tmp_path / "fig", reps=REPS)
    assert set(caps) == {"sweep"}
    check_figure(tmp_path / "fig" / f"{experiment}_sweep")


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
    assert main(["aggregate", *exp, "--out", str(res), "--reps", str(REPS), *paths]) == 0
    assert (
        main(["figures", *exp, "--summary", str(res), "--out", str(figs), "--reps", str(REPS)]) == 0
    )
    for kind in ("ablation", "aggregate", "poi"):
        check_figure(figs / f"occupancy_ablation_{kind}")
    # figures of an experiment that was not aggregated: a clear error, exit code 2
    assert main(["figures", "--experiment", "main", "--summary", str(res), "--out", str(figs)]) == 2


def test_method_colors_fixed_and_deterministic():
    assert plots.method_color("uniq") == plots.METHOD_COLORS["uniq"]
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
