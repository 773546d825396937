"""uniq/stats.py on synthetic eval.json files whose answers are known."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from uniq import stats
from uniq.atomic import file_sha256
from uniq.cli import main

REPS = 200
OFFSETS = (-0.02, -0.01, 0.0, 0.01, 0.02)  # symmetric: mean = median = IQM = the centre
# The names the workflow passes for the shipped labels (uniq.workflow.display_names; checked
# against the configs in tests/test_display_names.py).
DISPLAY = {
    "uniq": "UNIQ",
    "uniq-nocorr": "UNIQ (no corr.)",
    "uniq-paper-actor": "UNIQ (paper actor)",
    "bc-mix": "BC-mix",
    "bc-safe": "BC-safe",
    "dwbc": "DWBC",
    "safedice": "SafeDICE",
}


def make_eval(
    root: Path,
    algo: str,
    env: str,
    seed: int,
    ret: float,
    cost: float,
    variant: str = "default",
    hidden: bool = False,
    checksums: dict | None = None,
    params: dict | None = None,
    drop: tuple[str, ...] = (),
) -> Path:
    """One eval.json with normalized return ``ret`` and normalized cost ``cost`` (kappa 25)."""
    rec = dict(
        algo=algo,
        env=env,
        variant=variant,
        seed=seed,
        episodes=10,
        return_mean=100.0 * ret,
        return_std=1.0,
        cost_mean=25.0 * cost,
        cost_cvar10=30.0 * cost,
        cost_rate=0.01,
        return_normalized=ret,
        cost_normalized=cost,
        steps=1000,
        wall_time_s=1.0,
        git_commit="abc123",
        dataset_checksums=checksums or {"un": f"u-{env}-{variant}", "mix": f"m-{env}-{variant}"},
        variant_params=params or {"n_un": 50, "n_mix_desirable": 10, "n_mix_undesirable": 10},
        uses_hidden_labels=hidden,
        cost_limit=25.0,
        return_min=0.0,
        return_max=100.0,
    )
    for key in drop:
        rec.pop(key)
    path = root / "runs" / env / variant / algo / f"seed{seed}" / "eval.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return path


def make_experiment(root: Path, centres: dict, **kw) -> list[Path]:
    """centres: {(algo, env): (ret, cost)}; five seeds around each centre."""
    paths = []
    for (algo, env), (ret, cost) in centres.items():
        for seed, off in enumerate(OFFSETS):
            paths.append(make_eval(root, algo, env, seed, ret + off, cost + off, **kw))
    return paths


CENTRES = {
    ("uniq", "EnvA"): (0.8, 0.4),
    ("uniq", "EnvB"): (0.6, 0.6),
    ("bc-mix", "EnvA"): (0.5, 1.4),
    ("bc-mix", "EnvB"): (0.3, 1.6),
}


def test_known_means_and_cis(tmp_path):
    paths = make_experiment(tmp_path, CENTRES)
    out = tmp_path / "out"
    written = stats.aggregate(paths, "main", out, reps=REPS)
    assert set(written) >= {
        "summary.csv",
        "aggregate.csv",
        "poi.csv",
        "table.md",
        "table.tex",
        "table.csv",
    }
    assert len(pd.read_csv(out / "summary.csv")) == 20
    agg = pd.read_csv(out / "aggregate.csv")
    expect = {
        ("uniq", "return_normalized"): 0.7,
        ("uniq", "cost_normalized"): 0.5,
        ("bc-mix", "return_normalized"): 0.4,
        ("bc-mix", "cost_normalized"): 1.5,
    }
    for (method, metric), value in expect.items():
        row = agg[(agg.method == method) & (agg.metric == metric) & (agg.statistic == "Mean")].iloc[
            0
        ]
        assert row.value == pytest.approx(value)
        assert row.ci_low <= value <= row.ci_high
        assert row.ci_high - row.ci_low < 0.1  # seeds spread only +-0.02
        assert (row.n_runs, row.n_tasks) == (5, 2)
    # Per-task table: the mean over seeds is the centre and the CI contains it.
    table = pd.read_csv(out / "table.csv")
    row = table[(table.task == "EnvA") & (table.method == "uniq")].iloc[0]
    assert row.return_normalized == pytest.approx(0.8)
    assert row.return_mean == pytest.approx(80.0)
    assert row.return_normalized_ci_low <= 0.8 <= row.return_normalized_ci_high
    assert not list(out.glob(".*tmp"))  # atomic writes left no temp files


def test_bootstrap_is_reproducible_and_leaves_global_rng_alone(tmp_path):
    paths = make_experiment(tmp_path, CENTRES)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    stats.aggregate(paths, "main", tmp_path / "a", reps=REPS, seed=7)
    assert np.array_equal(np.random.get_state()[1], before)
    stats.aggregate(paths, "main", tmp_path / "b", reps=REPS, seed=7)
    for name in ("aggregate.csv", "poi.csv", "table.csv", "profiles.csv"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()


def test_probability_of_improvement(tmp_path):
    centres = {
        ("uniq", "EnvA"): (0.5, 0.2),  # uniq: same return as bc-mix, always lower cost
        ("uniq", "EnvB"): (0.5, 0.3),
        ("bc-mix", "EnvA"): (0.5, 0.9),
        ("bc-mix", "EnvB"): (0.5, 1.2),
        ("dwbc", "EnvA"): (0.5, 0.05),  # dwbc: always lower cost than uniq
        ("dwbc", "EnvB"): (0.5, 0.1),
    }
    stats.aggregate(make_experiment(tmp_path, centres), "main", tmp_path / "o", reps=REPS)
    poi = pd.read_csv(tmp_path / "o" / "poi.csv").set_index(["baseline", "metric"])
    assert set(poi.index.get_level_values(0)) == {"bc-mix", "dwbc"}
    assert poi.loc[("bc-mix", "cost_normalized"), "poi"] == pytest.approx(1.0)
    assert poi.loc[("dwbc", "cost_normalized"), "poi"] == pytest.approx(0.0)
    # identical returns -> 0.5, with a CI around it
    assert poi.loc[("bc-mix", "return_normalized"), "poi"] == pytest.approx(0.5)
    row = poi.loc[("bc-mix", "return_normalized")]
    assert row.ci_low <= 0.5 <= row.ci_high


def test_poi_matches_rliable():
    from rliable import metrics as rm

    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(5, 3)).astype(float)  # ties included
    y = rng.integers(0, 4, size=(7, 3)).astype(float)
    assert stats.poi(x, y) == pytest.approx(rm.probability_of_improvement(x, y))
    assert stats.poi(x, x) == pytest.approx(0.5)
    assert stats.poi(x + 10, y) == 1.0 and stats.poi(x, y + 10) == 0.0


def test_table_marks_best_unsafe_and_oracle(tmp_path):
    centres = {
        ("uniq", "EnvA"): (0.8, 0.5),
        ("bc-mix", "EnvA"): (0.6, 1.5),  # unsafe
        ("bc-safe", "EnvA"): (0.95, 0.1),  # oracle: better, but excluded from best
    }
    paths = make_experiment(tmp_path, {k: v for k, v in centres.items() if k[0] != "bc-safe"})
    paths += make_experiment(
        tmp_path, {("bc-safe", "EnvA"): centres[("bc-safe", "EnvA")]}, hidden=True
    )
    out = tmp_path / "o"
    stats.aggregate(paths, "main", out, reps=REPS, display=DISPLAY)
    md = {
        line.split("|")[2].strip(): line
        for line in (out / "table.md").read_text().splitlines()
        if line.startswith("| ") and "Method" not in line
    }
    # methods by their display names (the map given, stats.display_name), not their labels
    assert set(md) == {"UNIQ", "BC-mix", "BC-safe†"}
    # UNIQ: best return and best cost (bold), safe
    assert md["UNIQ"].count("**") == 8 and "‡" not in md["UNIQ"]
    assert "**80.0 ± " in md["UNIQ"] and "**0.50 ± " in md["UNIQ"]
    # BC-mix: nothing bold, both cost cells marked unsafe, return cells not
    assert "**" not in md["BC-mix"] and md["BC-mix"].count("‡") == 2
    cells = [c.strip() for c in md["BC-mix"].split("|")[3:7]]
    assert "‡" not in cells[0] + cells[1] and cells[2].endswith("‡") and cells[3].endswith("‡")
    # the oracle is marked and never bold even though its numbers are the best
    assert "**" not in md["BC-safe†"]
    tex = (out / "table.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    lines = {line.split("&")[1].strip(): line for line in tex.splitlines() if line.count("&") == 5}
    assert set(lines) - {"Method"} == {"UNIQ", "BC-mix", "BC-safe$^\\dagger$"}
    assert lines["UNIQ"].count("\\textbf{") == 4
    assert "\\textbf" not in lines["BC-mix"] and lines["BC-mix"].count("$^\\ddagger$") == 2
    assert "\\textbf" not in lines["BC-safe$^\\dagger$"]
    table = pd.read_csv(out / "table.csv").set_index("method")
    assert table.loc["bc-mix", "unsafe"] and not table.loc["uniq", "unsafe"]
    assert table.loc["bc-safe", "oracle"] and not table.loc["bc-safe", "best_return_normalized"]
    caption = (out / "table.md").read_text().splitlines()[0]
    for phrase in ("R_min", "C/κ", "κ = 25", "5 seeds", "10 evaluation episodes", "†", "‡"):
        assert phrase in caption, phrase


def test_display_name_from_the_map_with_fallback():
    assert {m: stats.display_name(m, DISPLAY) for m in DISPLAY} == DISPLAY
    assert stats.display_name("bc-safe", DISPLAY, oracle=["bc-safe"]) == "BC-safe†"
    assert stats.display_name("uniq", DISPLAY, oracle=["bc-safe"]) == "UNIQ"
    # a label missing from the map (or no map at all) is printed as itself
    assert stats.display_name("my-method", DISPLAY) == "my-method"
    assert stats.display_name("my-method", oracle=("my-method",)) == "my-method†"
    assert stats.display_name("bc-safe") == "bc-safe"
    assert not hasattr(stats, "DISPLAY_NAMES")  # no hard-coded table of names left


def test_method_order_given_first_then_known_then_alphabetical():
    names = ["zeta", "bc-mix", "alpha", "uniq", "uniq-paper-actor", "dwbc"]
    assert stats.method_order(names) == [
        "uniq", "uniq-paper-actor", "bc-mix", "dwbc", "alpha", "zeta"
    ]  # fmt: skip
    assert stats.method_order(names, ["dwbc", "zeta", "absent", "uniq"]) == [
        "dwbc", "zeta", "uniq", "uniq-paper-actor", "bc-mix", "alpha"
    ]  # fmt: skip


def _table_methods(path: Path) -> list[str]:
    """The Method column of table.md, in order, blank task cells skipped."""
    return [
        line.split("|")[2].strip()
        for line in path.read_text().splitlines()
        if line.startswith("| ") and "Method" not in line
    ]


def test_aggregate_without_display_prints_labels(tmp_path):
    # An old-style call (no --display: external users, older Snakefiles) still works; every
    # method is printed by its label, in the known order; the oracle keeps its dagger.
    paths = make_experiment(tmp_path, CENTRES)
    paths += make_experiment(tmp_path, {("bc-safe", "EnvA"): (0.9, 0.2)}, hidden=True)
    out = tmp_path / "o"
    args = ["aggregate", "--experiment", "main", "--out", str(out), "--reps", str(REPS)]
    assert main([*args, *map(str, paths)]) == 0
    assert _table_methods(out / "table.md") == ["uniq", "bc-mix", "bc-safe†"] * 2
    assert "bc-safe$^\\dagger$ &" in (out / "table.tex").read_text()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["methods"] == ["uniq", "bc-mix", "bc-safe"]
    assert meta["display_names"] == {"uniq": "uniq", "bc-mix": "bc-mix", "bc-safe": "bc-safe"}


def test_display_option_names_and_orders_the_methods(tmp_path):
    paths = make_experiment(tmp_path, {**CENTRES, ("my_method", "EnvA"): (0.1, 0.1)})
    out = tmp_path / "o"
    args = ["aggregate", "--experiment", "main", "--out", str(out), "--reps", str(REPS)]
    display = ["--display", "bc-mix=BC-mix", "--display", "my_method=Mine (v2)"]
    assert main([*args, *display, *map(str, paths)]) == 0
    # the labels given first, in the order given; uniq, not given, prints as itself
    assert _table_methods(out / "table.md") == ["BC-mix", "Mine (v2)", "uniq"] * 2  # EnvB: n/a
    tex = (out / "table.tex").read_text()
    assert "Mine (v2) &" in tex and "my\\_method" not in tex
    meta = json.loads((out / "meta.json").read_text())
    assert meta["methods"] == ["bc-mix", "my_method", "uniq"]
    assert meta["display_names"] == {"bc-mix": "BC-mix", "my_method": "Mine (v2)", "uniq": "uniq"}
    summary = pd.read_csv(out / "summary.csv")
    assert list(dict.fromkeys(summary["algo"])) == ["bc-mix", "my_method", "uniq"]  # labels
    assert set(pd.read_csv(out / "table.csv")["method"]) == {"bc-mix", "my_method", "uniq"}
    # a malformed pair is a clear error (exit code 2), not a traceback
    assert main([*args, "--display", "bc-mix", *map(str, paths)]) == 2
    assert main([*args, "--display", "uniq=A", "--display", "uniq=B", *map(str, paths)]) == 2


def test_method_missing_on_a_task_gives_na_and_restricts_aggregates(tmp_path, caplog):
    paths = make_experiment(tmp_path, {**CENTRES, ("dwbc", "EnvA"): (0.7, 0.9)})
    out = tmp_path / "o"
    with caplog.at_level(logging.WARNING, logger="uniq.stats"):
        stats.aggregate(paths, "main", out, reps=REPS, display=DISPLAY)
    assert "left out EnvB" in caplog.text and "dwbc" in caplog.text
    md = (out / "table.md").read_text()
    rows = [line for line in md.splitlines() if "| DWBC |" in line]
    assert len(rows) == 2  # EnvA with numbers, EnvB explicit n/a (not dropped)
    row = rows[1]
    assert [c.strip() for c in row.split("|")[3:7]] == ["n/a"] * 4
    assert "n/a" in (out / "table.tex").read_text()
    table = pd.read_csv(out / "table.csv")
    na = table[(table.task == "EnvB") & (table.method == "dwbc")]
    assert len(na) == 1 and na.n_seeds.iloc[0] == 0 and np.isnan(na.return_normalized.iloc[0])
    agg = pd.read_csv(out / "aggregate.csv")
    assert set(agg.method) == {"uniq", "bc-mix", "dwbc"} and (agg.n_tasks == 1).all()
    uniq_mean = agg[
        (agg.method == "uniq") & (agg.metric == "return_normalized") & (agg.statistic == "Mean")
    ]
    assert uniq_mean.value.iloc[0] == pytest.approx(0.8)  # EnvA only
    assert "left out: EnvB" in md.splitlines()[0]


def test_mixed_dataset_checksums_are_refused(tmp_path):
    paths = make_experiment(tmp_path, {("uniq", "EnvA"): (0.5, 0.5)})
    paths.append(
        make_eval(tmp_path, "bc-mix", "EnvA", 0, 0.5, 0.5, checksums={"un": "OLD", "mix": "m"})
    )
    with pytest.raises(stats.StatsError, match="different datasets") as err:
        stats.aggregate(paths, "main", tmp_path / "o", reps=REPS)
    assert "OLD" in str(err.value) and "env=EnvA variant=default" in str(err.value)
    assert not (tmp_path / "o").exists()  # nothing partial written


def test_runs_of_different_lengths_are_refused(tmp_path):
    paths = make_experiment(tmp_path, {("uniq", "EnvA"): (0.5, 0.5)})
    stale = json.loads(paths[0].read_text()) | {"steps": 500}  # left from an older config
    paths[0].write_text(json.dumps(stale))
    with pytest.raises(stats.StatsError, match="different numbers of updates") as err:
        stats.aggregate(paths, "main", tmp_path / "o", reps=REPS)
    assert f"500: 1 run(s), e.g. {paths[0]}" in str(err.value)
    assert not (tmp_path / "o").exists()


def test_an_evaluation_of_another_policy_than_the_one_beside_it_is_refused(tmp_path):
    path = make_eval(tmp_path, "uniq", "EnvA", 0, 0.5, 0.5)
    policy = path.with_name("policy.pt")
    policy.write_bytes(b"the policy evaluated")
    path.write_text(
        json.dumps(json.loads(path.read_text()) | {"policy_sha256": file_sha256(policy)})
    )
    stats.load_evals([path])
    policy.write_bytes(b"trained again since")
    with pytest.raises(stats.StatsError, match="evaluated another policy than the .*policy.pt"):
        stats.load_evals([path])


def test_a_score_that_is_not_a_number_is_refused(tmp_path):
    path = make_eval(tmp_path, "uniq", "EnvA", 0, float("nan"), 0.5)
    with pytest.raises(
        stats.StatsError, match="non-finite return_mean, return_normalized: a broken"
    ) as err:
        stats.load_evals([path])
    assert str(path) in str(err.value)
    rec = json.loads(path.read_text()) | {"return_mean": 50.0}  # evaluated without references
    path.write_text(json.dumps(rec))
    with pytest.raises(stats.StatsError, match="non-finite return_normalized .*--reference"):
        stats.load_evals([path])


def test_missing_field_names_file_and_field(tmp_path):
    bad = make_eval(tmp_path, "uniq", "EnvA", 0, 0.5, 0.5, drop=("cost_normalized",))
    with pytest.raises(stats.StatsError, match="cost_normalized") as err:
        stats.load_evals([bad])
    assert str(bad) in str(err.value)
    twice = make_eval(tmp_path, "uniq", "EnvA", 1, 0.5, 0.5)
    with pytest.raises(stats.StatsError, match="more than once"):
        stats.load_evals([twice, twice])


def test_sweeps_write_by_x(tmp_path):
    paths = []
    for n_un, ret in ((10, 0.3), (50, 0.6)):
        for env in ("EnvA", "EnvB"):
            paths += make_experiment(
                tmp_path,
                {("uniq", env): (ret, 0.5), ("bc-mix", env): (0.4, 1.2)},
                variant=f"un{n_un}",
                params={"n_un": n_un, "n_mix_desirable": 10, "n_mix_undesirable": 30},
            )
    out = tmp_path / "o"
    stats.aggregate(paths, "undesirable_size", out, reps=REPS)
    bx = pd.read_csv(out / "by_x.csv")
    got = bx[(bx.method == "uniq") & (bx.metric == "return_normalized") & (bx.statistic == "Mean")]
    assert dict(zip(got.x, got.value, strict=True)) == pytest.approx({10.0: 0.3, 50.0: 0.6})
    assert (bx.n_tasks == 2).all()
    stats.aggregate(paths, "mix_ratio", tmp_path / "m", reps=REPS)
    assert set(pd.read_csv(tmp_path / "m" / "by_x.csv").x) == {0.25}
    no_params = make_eval(tmp_path / "x", "uniq", "EnvA", 0, 0.5, 0.5, drop=("variant_params",))
    with pytest.raises(stats.StatsError, match="variant_params.n_un"):
        stats.load_evals([no_params], "undesirable_size")


def test_cli_aggregate(tmp_path, caplog):
    paths = make_experiment(tmp_path, CENTRES)
    out = tmp_path / "res"
    args = ["aggregate", "--experiment", "main", "--out", str(out), "--reps", "50"]
    assert main(args + [str(p) for p in paths]) == 0
    assert (out / "table.tex").exists() and (out / "meta.json").exists()
    missing = tmp_path / "nope" / "eval.json"
    assert main(args + [str(missing)]) == 2
    assert "no such file" in caplog.text


def _curve(eval_path: Path, rows: list[tuple[int, float, float]], episodes: int = 5) -> None:
    """curve.csv beside an eval.json: (step, normalized return, normalized cost) rows."""
    df = pd.DataFrame(
        [
            dict(step=s, return_mean=100 * r, cost_mean=25 * c, return_normalized=r,
                 cost_normalized=c, episodes=episodes)
            for s, r, c in rows
        ]
    )  # fmt: skip
    df.to_csv(eval_path.with_name("curve.csv"), index=False)


def test_last_k_scoring_averages_the_last_k_curve_evaluations(tmp_path):
    a = make_eval(tmp_path, "uniq", "E", 0, ret=0.9, cost=0.1)
    b = make_eval(tmp_path, "bc-mix", "E", 0, ret=0.5, cost=2.0)
    # an early good point that last-3 must leave out; the last row is the final policy
    _curve(a, [(250, 1.0, 0.0), (500, 0.3, 0.6), (750, 0.6, 0.3), (1000, 0.9, 0.0)])
    _curve(b, [(250, 0.1, 0.0), (500, 0.2, 1.0), (750, 0.5, 2.0), (1000, 0.8, 3.0)])
    last3 = stats.load_evals([a, b], scoring=stats.Scoring("last-k", 3)).set_index("algo")
    assert last3.loc["uniq", "return_normalized"] == pytest.approx(0.6)
    assert last3.loc["uniq", "cost_normalized"] == pytest.approx(0.3)
    assert last3.loc["uniq", "return_mean"] == pytest.approx(60.0)
    assert last3.loc["bc-mix", "cost_normalized"] == pytest.approx(2.0)
    assert last3.loc["uniq", "final_return_normalized"] == pytest.approx(0.9)
    assert last3.loc["uniq", "episodes"] == 5  # per evaluation
    assert last3.loc["uniq", "scored_steps"] == "500 750 1000"
    final = stats.load_evals([a, b]).set_index("algo")  # the default ignores the curves
    assert final.loc["uniq", "return_normalized"] == pytest.approx(0.9)

    out = tmp_path / "out"
    stats.aggregate([a, b], "main", out, reps=50, scoring=stats.Scoring("last-k", 3))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["scoring"] == {"mode": "last-k", "k": 3}
    assert "last 3 curve evaluations" in meta["table_caption"]
    assert "3 evaluations x 5 episodes per run" in meta["table_caption"]
    stats.aggregate([a, b], "main", tmp_path / "final", reps=50)
    caption = json.loads((tmp_path / "final" / "meta.json").read_text())["table_caption"]
    assert "final policy" in caption and "curve" not in caption


def test_last_k_scoring_refuses_missing_short_or_stale_curves(tmp_path):
    a = make_eval(tmp_path, "uniq", "E", 0, ret=0.9, cost=0.1)
    last3 = stats.Scoring("last-k", 3)
    with pytest.raises(stats.StatsError, match="no curve beside"):
        stats.load_evals([a], scoring=last3)
    _curve(a, [(500, 0.5, 0.0), (1000, 0.9, 0.0)])
    with pytest.raises(stats.StatsError, match="fewer than k=3"):
        stats.load_evals([a], scoring=last3)
    _curve(a, [(250, 0.5, 0.0), (500, 0.5, 0.0), (750, 0.9, 0.0)])  # run trained 1000 steps
    with pytest.raises(stats.StatsError, match="ends at step 750"):
        stats.load_evals([a], scoring=last3)
    _curve(a, [(250, 0.5, 0.0), (500, float("nan"), 0.0), (1000, 0.9, 0.0)])
    with pytest.raises(stats.StatsError, match="non-finite .*return_normalized"):
        stats.load_evals([a], scoring=last3)
    a.with_name("curve.csv").write_text("")  # a curve file left empty
    with pytest.raises(stats.StatsError, match="curve.csv: empty"):
        stats.load_evals([a], scoring=last3)
    with pytest.raises(stats.StatsError, match="k must be >= 1"):
        stats.Scoring("last-k", 0)
    with pytest.raises(stats.StatsError, match="use one of"):
        stats.Scoring("best")


def test_cli_aggregate_last_k(tmp_path):
    a = make_eval(tmp_path, "uniq", "E", 0, ret=0.9, cost=0.1)
    _curve(a, [(500, 0.5, 0.0), (1000, 0.9, 0.0)])
    out = tmp_path / "out"
    argv = ["aggregate", "--experiment", "main", "--out", str(out), "--reps", "20"]
    assert main([*argv, "--scoring", "last-k", "--last-k", "2", str(a)]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert summary["return_normalized"].iloc[0] == pytest.approx(0.7)
    assert summary["scoring"].iloc[0] == "last2"
    assert main([*argv, "--scoring", "last-k", "--last-k", "3", str(a)]) == 2  # clear error
