"""analysis/claims.py: the verdict rule on synthetic results whose answer is known."""

from __future__ import annotations

import importlib.util
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

spec = importlib.util.spec_from_file_location(
    "claims", Path(__file__).resolve().parents[1] / "analysis" / "claims.py"
)
claims = importlib.util.module_from_spec(spec)
spec.loader.exec_module(claims)

NAV, BUTTON, VEL = "SafetyCarGoal1-v0", "SafetyPointButton1-v0", "SafetyHalfCheetahVelocity-v1"


def runs(env, algo, ret, cost, seeds=5, oracle=False, n_un=20, spread=0.05, variant="default"):
    rs = np.random.RandomState(zlib.crc32(f"{env} {algo} {n_un}".encode()))
    return [
        dict(algo=algo, env=env, variant=variant, seed=s, task=env, n_un=n_un,
             uses_hidden_labels=oracle,
             return_normalized=ret + spread * rs.randn(), cost_normalized=cost + spread * rs.randn(),
             return_mean=100 * ret, cost_mean=25 * cost)
        for s in range(seeds)
    ]  # fmt: skip


def frame(*groups):
    return pd.DataFrame([row for g in groups for row in g])


def test_lowest_cost_holds_fails_or_stays_open_by_the_cis():
    safe_uniq = frame(runs(NAV, "uniq", 0.5, 0.2), runs(NAV, "bc-mix", 0.9, 2.0),
                      runs(NAV, "bc-safe", 0.6, 0.1, oracle=True))  # fmt: skip
    assert claims.claim_lowest_cost(safe_uniq, 500)[0] == claims.HOLDS  # the oracle is not a rival
    unsafe_uniq = frame(runs(NAV, "uniq", 0.5, 2.0), runs(NAV, "bc-mix", 0.9, 0.5))
    assert claims.claim_lowest_cost(unsafe_uniq, 500)[0] == claims.FAILS
    tie = frame(runs(NAV, "uniq", 0.5, 1.0, spread=1.0), runs(NAV, "bc-mix", 0.9, 1.0, spread=1.0))
    assert claims.claim_lowest_cost(tie, 500)[0] == claims.OPEN
    velocity_only = frame(runs(VEL, "uniq", 0.5, 0.2), runs(VEL, "bc-mix", 0.9, 2.0))
    assert claims.claim_lowest_cost(velocity_only, 500)[0].startswith("not tested")


def test_button_return_compares_only_button_tasks():
    df = frame(runs(BUTTON, "uniq", 0.2, 0.5), runs(BUTTON, "dwbc", 0.6, 0.9),
               runs(NAV, "uniq", 0.9, 0.5), runs(NAV, "dwbc", 0.1, 0.9))  # fmt: skip
    verdict, lines = claims.claim_button_return(df, 500)
    assert verdict == claims.HOLDS and not any("CarGoal1" in line for line in lines)


def test_undesirable_size_needs_a_drop_and_the_largest_for_uniq():
    def sweep(uniq_costs, dwbc_costs):
        return frame(*(runs(VEL, a, 0.5, c, n_un=n, variant=f"un{n}")
                       for a, costs in (("uniq", uniq_costs), ("dwbc", dwbc_costs))
                       for n, c in zip((5, 20), costs, strict=True)))  # fmt: skip

    assert claims.claim_undesirable_size(sweep((3.0, 0.2), (2.0, 1.5)), 500)[0] == claims.HOLDS
    # both drop, DWBC more: "most for UNIQ" fails
    assert claims.claim_undesirable_size(sweep((3.0, 2.0), (3.0, 0.2)), 500)[0] == claims.FAILS
    # UNIQ's cost rises with |D_UN|
    assert claims.claim_undesirable_size(sweep((0.2, 3.0), (2.0, 1.5)), 500)[0] == claims.FAILS
    # UNIQ's own drop unresolved, DWBC's clearly larger: "most for UNIQ" is refuted all the same
    noisy = sweep((2.0, 1.9), (3.0, 0.2))
    noisy.loc[noisy["algo"] == "uniq", "cost_normalized"] += np.tile([-1.0, 1.0, 0.0, 0.5, -0.5], 2)
    assert claims.claim_undesirable_size(noisy, 500)[0] == claims.FAILS


def test_undesirable_size_names_what_is_missing():
    only_small = frame(runs(VEL, "uniq", 0.5, 2.0, n_un=5, variant="un5"),
                       *(runs(VEL, "dwbc", 0.5, c, n_un=n, variant=f"un{n}")
                         for n, c in ((5, 2.0), (20, 1.0))))  # fmt: skip
    verdict = claims.claim_undesirable_size(only_small, 500)[0]
    assert verdict == "not tested (no uniq runs at both 5 and 20)"
    uniq_alone = frame(*(runs(VEL, "uniq", 0.5, c, n_un=n, variant=f"un{n}")
                         for n, c in ((5, 2.0), (20, 1.0))))  # fmt: skip
    verdict = claims.claim_undesirable_size(uniq_alone, 500)[0]
    assert verdict.startswith("not tested (no other method ran both sizes")


def test_occupancy_correction_trades_return_for_cost_as_unresolved():
    def ablation(ret, cost):
        return frame(runs(VEL, "uniq", ret, cost), runs(VEL, "uniq-nocorr", 0.5, 1.0))

    assert claims.claim_occupancy(ablation(0.9, 1.0), 500)[0] == claims.HOLDS  # better return
    assert claims.claim_occupancy(ablation(0.5, 0.2), 500)[0] == claims.HOLDS  # lower cost
    assert claims.claim_occupancy(ablation(0.1, 1.0), 500)[0] == claims.FAILS
    assert claims.claim_occupancy(ablation(0.9, 2.0), 500)[0] == claims.OPEN  # a trade-off
    # better return on both tasks, and cost even pooled, but costlier on HalfCheetah
    two_tasks = frame(runs(VEL, "uniq", 0.9, 2.0), runs(VEL, "uniq-nocorr", 0.5, 1.0),
                      runs(NAV, "uniq", 0.9, 0.2), runs(NAV, "uniq-nocorr", 0.5, 1.0))  # fmt: skip
    assert claims.claim_occupancy(two_tasks, 500)[0] == claims.MIXED


def test_report_writes_both_scorings(tmp_path):
    main = frame(runs(NAV, "uniq", 0.5, 0.2), runs(NAV, "bc-safe", 0.6, 0.1, oracle=True))
    for sub in ("main", "main/last3"):
        (tmp_path / sub).mkdir(parents=True)
        main.to_csv(tmp_path / sub / "summary.csv", index=False)
    text = claims.report(tmp_path, 3, 200)
    assert "scored by the final policy | scored by the last 3 evaluations' mean" in text
    assert "UNIQ is safer than BC-safe | **does not hold** | **does not hold**" in text


def test_profiles_beside_each_other_on_the_tasks_they_share(tmp_path):
    # small scale: UNIQ costlier than BC-mix on PointButton1; paper scale: cheaper. Each
    # profile also has a task the other lacks, where UNIQ's cost would flip the verdict.
    small = frame(runs(BUTTON, "uniq", 0.5, 2.0), runs(BUTTON, "bc-mix", 0.9, 0.5),
                  runs(NAV, "uniq", 0.5, 0.1), runs(NAV, "bc-mix", 0.9, 3.0))  # fmt: skip
    large = frame(runs(BUTTON, "uniq", 0.5, 0.2), runs(BUTTON, "bc-mix", 0.9, 2.0),
                  runs(VEL, "uniq", 0.5, 3.0), runs(VEL, "bc-mix", 0.9, 0.1))  # fmt: skip
    for name, df in (("quick", small), ("paper_data", large)):
        (tmp_path / name / "main").mkdir(parents=True)
        df.to_csv(tmp_path / name / "main" / "summary.csv", index=False)
    profiles = [tmp_path / "quick", tmp_path / "paper_data"]
    text = claims.beside(profiles, 300, [BUTTON])
    assert f"| claim | {profiles[0]} | {profiles[1]} |" in text
    lowest = "| UNIQ has the lowest cost on the Safety-Gym tasks |"
    assert f"{lowest} **does not hold** | **holds** |" in text
    assert "CarGoal1" not in text and "HalfCheetah" not in text
    # without --tasks: the tasks both profiles have (PointButton1 only), not each one's own
    assert claims.beside(profiles, 300).split("| claim |")[1] == text.split("| claim |")[1]
    # a task one profile lacks is named, not silently dropped from that profile
    with pytest.raises(SystemExit, match="has no runs of SafetyCarGoal1-v0"):
        claims.beside(profiles, 300, [BUTTON, NAV])


def test_a_misspelled_task_and_a_missing_arm_are_named(tmp_path):
    main = frame(runs(BUTTON, "uniq", 0.5, 0.2), runs(BUTTON, "bc-mix", 0.9, 2.0))
    for exp in ("main", "occupancy_ablation"):  # the ablation without its uniq-nocorr arm
        (tmp_path / exp).mkdir()
        main.to_csv(tmp_path / exp / "summary.csv", index=False)
    with pytest.raises(SystemExit, match="its tasks: SafetyPointButton1-v0"):
        claims.report(tmp_path, 3, 200, ["PointButton1"])
    text = claims.report(tmp_path, 3, 200)
    assert "| Occupancy correction helps | **not tested (no uniq-nocorr run)** |" in text
    assert "| UNIQ is safer than BC-safe | **not tested (no bc-safe run)** |" in text


def test_a_pooled_win_that_loses_on_one_task_is_not_called_holds():
    goal2, push = "SafetyPointGoal2-v0", "SafetyPointPush1-v0"
    df = frame(*(runs(t, "uniq", 0.5, c) for t, c in ((NAV, 0.2), (goal2, 0.2), (BUTTON, 2.0))),
               *(runs(t, "bc-mix", 0.5, 1.0) for t in (NAV, goal2, BUTTON)))  # fmt: skip
    verdict, lines = claims.claim_lowest_cost(df, 500)
    assert verdict == claims.MIXED  # pooled P = 2/3 with a CI above 0.5, PointButton1's P = 0
    assert any(
        "over 3 tasks" in line and "PointButton1-v0 0.00 [0.00, 0.00]" in line for line in lines
    )
    cheaper_everywhere = frame(*(runs(t, "uniq", 0.5, 0.2) for t in (NAV, goal2, push)),
                               *(runs(t, "bc-mix", 0.5, 1.0) for t in (NAV, goal2, push)))  # fmt: skip
    assert claims.claim_lowest_cost(cheaper_everywhere, 500)[0] == claims.HOLDS


def test_the_per_task_probabilities_average_to_the_pooled_one_with_unequal_seeds():
    # bc-mix has 5 runs on one task, 3 on the other: the pooled arrays keep 3 a task, and so
    # must each task's own P (its 2 extra runs are the ones that would flip it)
    df = frame(runs(NAV, "uniq", 0.5, 1.0), runs(BUTTON, "uniq", 0.5, 1.0),
               runs(NAV, "bc-mix", 0.5, 2.0, seeds=3), runs(BUTTON, "bc-mix", 0.5, 2.0, seeds=3),
               [r | dict(seed=r["seed"] + 3) for r in runs(NAV, "bc-mix", 0.5, 0.1, seeds=2)])  # fmt: skip
    c = claims.compare(df, "uniq", "bc-mix", "cost", 200)
    assert np.mean([t["p"] for t in c["per_task"].values()]) == pytest.approx(c["p"])
    assert c["per_task"][NAV]["p"] == 1.0


def test_methods_with_no_task_in_common_are_not_tested():
    df = frame(runs(NAV, "uniq", 0.5, 0.2), runs(BUTTON, "bc-mix", 0.5, 1.0))
    with pytest.raises(claims.NoRuns, match="no task with runs of both uniq and bc-mix"):
        claims.claim_lowest_cost(df, 500)


def test_the_drop_is_set_beside_another_methods_on_the_tasks_both_ran():
    # UNIQ's cost drops by 1.0 on both tasks; DWBC ran only HalfCheetah, where it drops by 1.5.
    # Over the task both ran, UNIQ's drop is the smaller: "most for UNIQ" fails (averaging
    # DWBC's drop over both tasks, as if it were 0 on the one it lacks, would call it holding).
    sweep = frame(*(runs(t, "uniq", 0.5, c, n_un=n, variant=f"un{n}")
                    for t in (VEL, NAV) for n, c in ((5, 2.0), (20, 1.0))),
                  *(runs(VEL, "dwbc", 0.5, c, n_un=n, variant=f"un{n}")
                    for n, c in ((5, 2.0), (20, 0.5))))  # fmt: skip
    verdict, lines = claims.claim_undesirable_size(sweep, 500)
    assert verdict == claims.FAILS
    assert any("minus dwbc's (over HalfCheetahVelocity-v1): -0.4" in line for line in lines)


def test_profiles_beside_each_other_read_each_experiment_on_the_tasks_both_ran(tmp_path):
    main = frame(runs(BUTTON, "uniq", 0.5, 0.2), runs(BUTTON, "bc-mix", 0.9, 2.0))
    # quick sweeps two tasks, where UNIQ's drop differs; the paper profile sweeps one of them
    quick_sweep = frame(*(runs(t, a, 0.5, c, n_un=n, variant=f"un{n}")
                          for t, costs in ((VEL, {"uniq": (2.0, 0.2), "dwbc": (2.0, 1.8)}),
                                           (NAV, {"uniq": (0.2, 2.0), "dwbc": (2.0, 1.8)}))
                          for a, cs in costs.items() for n, c in zip((5, 20), cs, strict=True)))  # fmt: skip
    paper_sweep = quick_sweep[quick_sweep["env"] == VEL]
    for name, sweep in (("quick", quick_sweep), ("paper_data", paper_sweep)):
        for exp, df in (("main", main), ("undesirable_size", sweep)):
            (tmp_path / name / exp).mkdir(parents=True)
            df.to_csv(tmp_path / name / exp / "summary.csv", index=False)
    profiles = [tmp_path / "quick", tmp_path / "paper_data"]
    text = claims.beside(profiles, 300)
    row = "| A larger D_UN lowers cost, most for UNIQ | **holds** | **holds** |"
    assert (
        row in text
    )  # both on HalfCheetah alone: quick's CarGoal1, where UNIQ's cost rises, left out
    assert "tasks: HalfCheetahVelocity-v1" in text and "CarGoal1" not in text
    # a --tasks the sweep never ran on: named as such, not as a missing experiment
    text = claims.beside(profiles, 300, [BUTTON])
    assert "not tested (no undesirable_size runs on PointButton1-v0; its tasks:" in text
    assert "Verdicts." in text  # the rule is printed, not only in a docstring
