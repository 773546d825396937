"""Timed bursts of a method's update and pretraining, on synthetic device-resident data.

The one place the suite times its learners: ``uniq-bench plan`` (:mod:`uniq.plan`) prices a
profile from these bursts, ``benchmarks/update_speed.py`` and ``benchmarks/seed_batching.py``
compare methods with them. A method is built as the training loop builds it
(:func:`uniq.train.build_method`: members for batched seeds, ``total_steps`` set), on random
data with the task's dimensions, so no dataset or environment is needed.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import numpy as np
import torch

from uniq import registry
from uniq.data import OfflineData
from uniq.method import Method, build_config
from uniq.seeding import seed_everything
from uniq.sources import make_sources

PRETRAIN_STEPS = {"uniq": "ratio_steps", "safedice": "classifier_steps"}
"""Each pretraining method's step-count field (UNIQ: per ratio classifier, both trained for
it; SafeDICE: its classifier). Pretraining costs that many times the cost of one step."""


def synthetic(spec, episodes: int, shift: float, seed: int) -> OfflineData:
    """``episodes`` random trajectories of ``spec``'s dimensions (half labelled desirable)."""
    rng = np.random.default_rng(seed)
    n = episodes * spec.max_episode_steps
    obs = rng.normal(shift, 1, (n, spec.obs_dim)).astype(np.float32)
    return OfflineData(
        obs,
        rng.uniform(-1, 1, (n, spec.act_dim)),
        rng.normal(size=n),
        np.zeros(n),
        np.roll(obs, -1, 0),
        np.zeros(n),
        (np.arange(n) % spec.max_episode_steps == spec.max_episode_steps - 1),
        (rng.uniform(size=n) < 0.5),
    )


def synthetic_sources(spec, device, seed: int = 0, episodes: tuple[int, int] = (4, 16)):
    """(D_UN, D_MIX) of ``episodes`` random trajectories each, as the loop's device tensors.
    Sampling cost does not grow with the rows, so a few dozen episodes stand for any split."""
    generator = seed_everything(seed, device)
    un = synthetic(spec, episodes[0], 0.5, 1)
    mix = synthetic(spec, episodes[1], 0.0, 2)
    return make_sources(un, mix, device, generator)


def build(
    method: str,
    spec,
    device,
    overrides: dict[str, Any] | None = None,
    members: int = 1,
    steps: int = 1_000_000,
    seed: int = 0,
    pretrain_steps: int = 1,
) -> Method:
    """The registered ``method`` with config ``overrides``, built and pretrained as
    ``uniq-bench train`` does it for ``members`` seeds of a ``steps``-update run, except that
    pretraining runs ``pretrain_steps`` steps (the updates need its outputs, not its quality).
    The pretraining's seconds (:func:`clock`) are left in ``method.pretrain_s``."""
    from uniq.train import build_method, pretrain

    cls = registry.get_method(method)
    field = PRETRAIN_STEPS.get(cls.name)
    short = dict(overrides or {}, **({field: pretrain_steps} if field else {}))
    # A burst does the pretraining work rather than load it from a cache, and must not leave
    # classifiers of random data beside a profile's real ones.
    short.update(
        {f.name: None for f in dataclasses.fields(cls.Config) if f.name.endswith("_cache_dir")}
    )
    cfg = build_config(cls.Config, short, method)
    data = synthetic_sources(spec, device, seed)
    seeds = list(range(seed, seed + (members if cls.supports_members else 1)))
    built = build_method(cls, cfg, spec, data, device, seeds, steps)
    t = clock(device)
    pretrain(built, seeds, lambda own, s: build_method(cls, cfg, spec, own, device, [s], steps))
    built.pretrain_s = clock(device) - t
    return built


def pretrain_cost(
    method: str,
    spec,
    device,
    overrides: dict[str, Any] | None = None,
    short: tuple = (1, 31),
    repeats: int = 2,
) -> tuple[float, float]:
    """(seconds per pretraining step, seconds per dataset row) of one seed's pretraining.

    Timed at two short lengths: the difference gives the per-step cost, the rest is what
    pretraining does once over the data (UNIQ caches tau on every row), per synthetic row.
    (0, 0) for a method without pretraining."""
    if registry.get_method(method).name not in PRETRAIN_STEPS:
        return 0.0, 0.0
    times = [float("inf")] * len(short)
    for _ in range(repeats):  # the least of each: a spike (an allocator's cleanup) is not work
        for i, n in enumerate(short):
            built = build(method, spec, device, overrides, pretrain_steps=n)
            times[i] = min(times[i], built.pretrain_s)
    per_step = (times[1] - times[0]) / (short[1] - short[0])
    if per_step <= 0:  # load noise swamped the difference: the longer run's mean, an upper bound
        per_step = times[1] / short[1]
    rows = sum(built.data[k].size for k in ("un", "mix"))
    return per_step, max(0.0, times[0] - short[0] * per_step) / rows


def step(method: Method) -> None:
    """One update on the batches the method asks for, sampled as the loop samples them."""
    batch = {
        k: method.data[src].sample(n, method.members) for k, (src, n) in method.batches().items()
    }
    method.update(batch)


def sync(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def clock(device) -> float:
    """Seconds by the clock a price is counted in: on a CPU the process's CPU time (all its
    threads), which another process's load does not stretch, unlike wall time; on a GPU,
    wall time after a sync (the device, not the CPU, is what the update waits for)."""
    if torch.device(device).type == "cuda":
        sync(device)
        return time.perf_counter()
    return time.process_time()


def update_seconds(
    method: Method, warmup: int = 1, budget_s: float = 2.0, block_s: float = 0.1,
    max_blocks: int = 20,
) -> float:  # fmt: skip
    """Seconds per update (:func:`clock`): the median over blocks of about ``block_s`` each,
    for at most ``budget_s`` of wall time (at least one block), after ``warmup`` untimed
    updates (first-call allocations); a slow update is timed alone."""
    for _ in range(warmup):
        step(method)
    t = clock(method.device)
    step(method)
    times = [clock(method.device) - t]
    block = max(1, round(block_s / max(times[0], 1e-6)))
    started = time.perf_counter()
    while time.perf_counter() - started < budget_s and len(times) < max_blocks:
        t = clock(method.device)
        for _ in range(block):
            step(method)
        times.append((clock(method.device) - t) / block)
    return statistics.median(times)


def pretrain_steps(method: str, overrides: dict[str, Any] | None = None) -> int:
    """The configured pretraining steps of ``method`` (its cap: a stop rule may end sooner)."""
    cls = registry.get_method(method)
    field = PRETRAIN_STEPS.get(cls.name)
    if field is None:
        return 0
    cfg = build_config(cls.Config, overrides, method)
    if not getattr(cfg, "occupancy_correction", True):  # UNIQ's ablation fits no ratio
        return 0
    return int(getattr(cfg, field))


def shared_pretraining(method: str, overrides: dict[str, Any] | None = None) -> tuple | None:
    """What identifies a pretraining that runs once and is shared through a cache (UNIQ's
    ``ratio_cache_dir``: one pair of classifiers per dataset for every seed and every arm
    with the same classifier fields), or None when each seed pretrains its own."""
    cls = registry.get_method(method)
    cfg = build_config(cls.Config, overrides, method)
    if cls.name != "uniq" or getattr(cfg, "ratio_cache_dir", None) is None:
        return None
    from uniq.ratio import CLASSIFIER_FIELDS

    return (cls.name, cfg.ratio_cache_dir, *(getattr(cfg, f) for f in CLASSIFIER_FIELDS))
