"""Seeds and random streams: the one ``seed_everything``, and every RNG state as one value.

A run's random numbers come from Python's, NumPy's and torch's global generators (network
initialisation, policy noise) and from one ``torch.Generator`` that draws the batch indices
on the data's device. :func:`rng_state` / :func:`set_rng_state` capture and restore all of
them (checkpoints, so a resumed run draws what an uninterrupted one would), and
:func:`rng_preserved` keeps work done mid-training (a curve evaluation) from shifting them.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return the batch-sampling generator.

    The sampling generator lives on ``device`` (indices are drawn where the data is) and
    gets its own seed derived from ``seed``, so its stream differs from torch's global one.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    sampler_seed = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(sampler_seed)


def job_seed(seeds: Sequence[int]) -> int:
    """The seed of a job's own streams (batch sampling, policy noise) during the updates.

    One seed: that seed (a job of one seed is that seed's run). Several seeds trained
    together: one seed drawn from all of them, so the job's streams are its own.
    """
    seeds = [int(s) for s in seeds]
    if len(seeds) == 1:
        return seeds[0]
    return int(np.random.SeedSequence([*seeds, 2]).generate_state(1)[0])


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random stream a run draws from: the global ones and the sampling ``generator``."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "sampler": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["sampler"])


@contextlib.contextmanager
def rng_preserved(generator: torch.Generator) -> Iterator[None]:
    """Work inside (an evaluation during training) must not shift the training's streams."""
    state = rng_state(generator)
    try:
        yield
    finally:
        set_rng_state(state, generator)
