"""Does this machine roll the committed demonstrators out into the committed bytes?

A fingerprint is the content checksum (:meth:`uniq.data.OfflineData.checksum`) of one short
episode: a uniformly random policy on each task with committed demonstrators (the env's own
numbers) and each committed demonstrator acting stochastically, as data collection does
(the env's and the policy's). They are committed in ``demonstrators/fingerprints.json``;
``uniq-bench fingerprint`` recomputes them and names every one that differs, and a test runs
it on every CI machine. The numerics behind them are pinned by uniq/numerics.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from envs.tasks import COMMITTED_DEMONSTRATORS, committed_demonstrator, resolve_task

FINGERPRINT_FILE = COMMITTED_DEMONSTRATORS / "fingerprints.json"
STEPS = 250
"""Steps per fingerprint episode: enough for contacts and costs to occur, seconds in all."""
SEED = 40_000_000
"""Apart from the collection, evaluation, quality and selection seeds."""


def committed_tasks() -> list[str]:
    """Tasks with both committed demonstrators."""
    return sorted(
        d.name
        for d in COMMITTED_DEMONSTRATORS.iterdir()
        if all((d / kind / "policy.pt").exists() for kind in ("safe", "unsafe"))
    )


def compute(tasks: list[str] | None = None, steps: int = STEPS) -> dict[str, str]:
    """``{"<task>/<random|safe|unsafe>": checksum}`` of one ``steps``-step episode each."""
    from envs.collect import demonstrator_act_fn
    from envs.rollout import random_act_fn, rollout

    out = {}
    for task in tasks or committed_tasks():
        spec = dataclasses.replace(resolve_task(task), max_episode_steps=steps)
        act_fns = {"random": random_act_fn(spec, SEED)}
        for kind in ("safe", "unsafe"):
            act_fns[kind] = demonstrator_act_fn(committed_demonstrator(task, kind), SEED)[0]
        for name, act_fn in act_fns.items():
            result = rollout(act_fn, spec, 1, SEED, record=True, progress=False)
            out[f"{task}/{name}"] = result.data.checksum()
    return out


def load(path: str | Path = FINGERPRINT_FILE) -> dict[str, str]:
    return json.loads(Path(path).read_text())["fingerprints"]


def compare(expected: dict[str, str], found: dict[str, str]) -> list[str]:
    """The keys whose checksums differ (or are missing on one side), sorted."""
    return sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
