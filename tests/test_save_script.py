"""profiles/save.sh: a profile's progress is committed so another machine continues it.

An unfinished job's checkpoint must reach the commit (else a job hours into its updates restarts
at zero on a fresh machine); a finished job's must leave the index (tens of MB each, no use once
its policy exists); the data must not be committed (they are regenerated)."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def _repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "profiles").mkdir(parents=True)
    shutil.copy(REPO / "profiles" / "save.sh", root / "profiles" / "save.sh")
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    _git(root, "init", "--quiet")
    _git(root, "config", "user.email", "t@example.org")
    _git(root, "config", "user.name", "t")
    _git(root, "add", ".")
    _git(root, "commit", "--quiet", "-m", "init")
    return root


def _write(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _save(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "profiles/save.sh", "paper_data"], cwd=root, capture_output=True, text=True
    )


def test_unfinished_checkpoints_are_committed_finished_ones_dropped(tmp_path):
    root = _repo(tmp_path)
    runs = root / "results/paper_data/runs/SafetyPointGoal1-v0/default"
    # uniq: 2 seeds trained together, killed while writing its outputs -> unfinished
    _write(runs / "uniq/seed0_1/checkpoint.pt", "ckpt-uniq")
    for s in (0, 1):
        _write(runs / f"uniq/seed{s}/policy.pt")
    _write(runs / "uniq/seed0/train_log.csv")
    _write(runs / "uniq/seed1/train_log.csv.part")
    # bc-mix: finished (both policies)
    _write(runs / "bc-mix/seed0_1/checkpoint.pt", "ckpt-bc")
    for s in (0, 1):
        _write(runs / f"bc-mix/seed{s}/policy.pt")
        _write(runs / f"bc-mix/seed{s}/train_log.csv")
    _write(root / "results/paper_data/data/SafetyPointGoal1-v0/default/mix.h5")
    _write(root / "logs/paper_data/benchmarks/train/x.tsv")
    _write(root / "logs/paper_data/train/x.log")
    _write(root / "logs/paper_data/evaluate/x.log")

    r = _save(root)
    assert r.returncode == 0, r.stderr
    tracked = set(_git(root, "ls-files").split())
    base = "results/paper_data/runs/SafetyPointGoal1-v0/default"
    assert f"{base}/uniq/seed0_1/checkpoint.pt" in tracked
    assert f"{base}/bc-mix/seed0_1/checkpoint.pt" not in tracked
    assert f"{base}/bc-mix/seed1/policy.pt" in tracked
    assert f"{base}/uniq/seed1/train_log.csv.part" not in tracked
    assert "logs/paper_data/benchmarks/train/x.tsv" in tracked
    assert "logs/paper_data/train/x.log" in tracked  # a resumed job's time before its resume
    assert "logs/paper_data/evaluate/x.log" not in tracked
    assert not any(p.startswith("results/paper_data/data/") for p in tracked)

    # the uniq job finishes: its checkpoint, committed before, leaves the index at the next save
    _write(runs / "uniq/seed1/train_log.csv")
    r = _save(root)
    assert r.returncode == 0, r.stderr
    tracked = set(_git(root, "ls-files").split())
    assert f"{base}/uniq/seed0_1/checkpoint.pt" not in tracked
    assert f"{base}/uniq/seed1/train_log.csv" in tracked
    assert (runs / "uniq/seed0_1/checkpoint.pt").exists()  # kept on disk, only untracked


def test_single_seed_job_and_nothing_to_commit(tmp_path):
    root = _repo(tmp_path)
    job = root / "results/paper_data/runs/T/default/dwbc/seed3"
    _write(job / "checkpoint.pt")
    assert _save(root).returncode == 0
    assert "results/paper_data/runs/T/default/dwbc/seed3/checkpoint.pt" in _git(root, "ls-files")
    r = _save(root)
    assert r.returncode == 0 and "nothing new" in r.stdout


def test_a_profile_that_has_not_started_is_named(tmp_path):
    root = _repo(tmp_path)
    r = _save(root)
    assert r.returncode == 2 and "results/paper_data/runs" in r.stderr


def test_an_ignored_profile_is_refused_before_anything_is_staged(tmp_path):
    root = _repo(tmp_path)
    _write(root / "results/paper/runs/T/default/uniq/seed0_1/checkpoint.pt")
    r = subprocess.run(
        ["bash", "profiles/save.sh", "paper"], cwd=root, capture_output=True, text=True
    )
    assert r.returncode == 2 and "ignored by .gitignore" in r.stderr
    assert _git(root, "diff", "--cached", "--name-only") == ""


def test_other_staged_changes_are_not_swept_into_the_commit(tmp_path):
    root = _repo(tmp_path)
    _write(root / "results/paper_data/runs/T/default/dwbc/seed12/checkpoint.pt")
    _write(root / "notes.txt", "mine")
    _git(root, "add", "notes.txt")
    r = _save(root)
    assert r.returncode == 2 and "staged" in r.stderr
    assert _git(root, "log", "--oneline").count("\n") == 1  # only the initial commit


def test_seed_folders_are_matched_whole(tmp_path):
    # seed12 (one seed) is finished when seed12 holds its log, not seed1 and seed2
    root = _repo(tmp_path)
    base = root / "results/paper_data/runs/T with space/default/dwbc"
    _write(base / "seed12/checkpoint.pt")
    _write(base / "seed1/train_log.csv")
    _write(base / "seed2/train_log.csv")
    _write(base / "seed1_2/checkpoint.pt")
    assert _save(root).returncode == 0
    tracked = _git(root, "ls-files")
    assert "dwbc/seed12/checkpoint.pt" in tracked and "dwbc/seed1_2/checkpoint.pt" not in tracked
