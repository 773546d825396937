"""analysis/learning_curves.py: the seed-averaged table of a workflow's own curves."""

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
import learning_curves  # noqa: E402


def _curve(path: Path, returns: list[float], costs: list[float]) -> None:
    path.parent.mkdir(parents=True)
    pd.DataFrame({"step": [100, 200], "return_mean": returns, "cost_mean": costs}).to_csv(
        path, index=False
    )


def test_from_runs_averages_each_step_over_the_seeds(tmp_path):
    runs = tmp_path / "runs"
    _curve(runs / "T/default/bc/seed0/curve.csv", [1.0, 3.0], [10.0, 20.0])
    _curve(runs / "T/default/bc/seed1/curve.csv", [2.0, 5.0], [30.0, 40.0])
    curves = learning_curves.seed_means(runs, "T", "default", ["bc"])
    assert curves["bc"]["return_mean"].tolist() == [1.5, 4.0]
    assert curves["bc"]["cost_mean"].tolist() == [20.0, 30.0]
    assert curves["bc"]["seeds"].tolist() == [2, 2]
    text = learning_curves.table(curves, [100, 200], "caption")
    assert "| bc | 1.5 / 20.0 | 4.0 / 30.0 |" in text


def test_from_runs_names_the_missing_method(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="uniq"):
        learning_curves.seed_means(tmp_path, "T", "default", ["uniq"])
