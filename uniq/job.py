"""What one ``uniq-bench train`` call trains, resolved before anything runs.

:class:`Job` gathers it: the method class and its config, the task, the seeds and their
folders (:func:`seed_dirs`), the datasets, the loop's settings, and from these the run's
identity (what a checkpoint must match to be resumed) and the resolved config written to
``config.yaml``. The helpers here turn command-line values into that (``--set`` overrides,
``--threads``, ``--device``), each failing with a :class:`~uniq.method.ConfigError` that
names the fix before any output is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from uniq.atomic import atomic_write_text, git_commit
from uniq.data import OfflineData
from uniq.method import ConfigError, Method

THREADS_ENV = "UNIQ_THREADS"
"""Torch CPU threads when ``threads`` is not given (Snakemake passes ``--threads``)."""
VARIANT_KEYS = ("n_un", "n_mix_desirable", "n_mix_undesirable")
META_FROM_CONFIG = (
    "algo", "base_algo", "task", "variant", "seed", "steps", "git_commit", "variant_params",
    "uses_hidden_labels",
)  # fmt: skip
"""policy.pt meta fields copied from the resolved config (plus wall time, checksums, config)."""
SEED_FIELD = "{seed}"
"""In ``out_dir`` of a batched run, replaced by each seed (and by the joined seeds for the
job folder that holds the one checkpoint)."""


@dataclass
class Job:
    """One training job: ``seeds`` of ``method_cls`` on (D_UN, D_MIX), one folder per seed
    (``outs``) and the job's own (``job_dir``, the checkpoint's; ``outs[0]`` for one seed)."""

    method_cls: type[Method]
    cfg: Any
    label: str
    spec: Any
    seeds: list[int]
    steps: int
    outs: list[Path]
    job_dir: Path
    paths: dict[str, str]
    """'un', 'mix' -> the dataset file as given."""
    data: dict[str, OfflineData]
    """'un', 'mix' -> the loaded dataset."""
    obs_norm: bool
    variant: str | None = None
    loop: dict[str, Any] = field(default_factory=dict)
    """The loop's settings, recorded in config.yaml."""

    @cached_property
    def checksums(self) -> dict[str, str]:
        return {name: dataset_checksum(d) for name, d in self.data.items()}

    @property
    def method_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.cfg)

    @property
    def identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed (the step count may grow)."""
        return {
            "base_algo": self.method_cls.name,
            "task": self.spec.name,
            "seed": self.seeds,
            "config": self.method_config,
            "dataset_checksums": self.checksums,
            "obs_norm": self.obs_norm,
        }

    def resolved(self, device: torch.device, threads: int) -> dict[str, Any]:
        """config.yaml of the first seed (each seed's differs only in ``seed``)."""
        checksums = self.checksums
        loop = dict(self.loop)
        if len(self.seeds) > 1:
            loop.update(seeds_trained_together=self.seeds, checkpoint_dir=str(self.job_dir))
        return {
            "algo": self.label,
            "base_algo": self.method_cls.name,
            "task": self.spec.name,
            "variant": self.variant,
            "seed": self.seeds[0],
            "steps": self.steps,
            "device": str(device),
            "threads": threads,
            "data": {
                name: {"path": self.paths[name], "checksum": checksums[name], "rows": len(d)}
                for name, d in self.data.items()
            },
            "variant_params": _variant_params(self.data["un"], self.data["mix"]),
            "config": self.method_config,
            "obs_norm": self.obs_norm,
            "uses_hidden_labels": self.method_cls.uses_hidden_labels,
            "loop": loop,
            "git_commit": git_commit(),
        }

    def meta(self, resolved: dict[str, Any], k: int, wall: float, pretrain: dict) -> dict:
        """policy.pt meta of seed ``k`` (``wall``: the whole job's wall time when batched)."""
        meta = {key: dict(resolved, seed=self.seeds[k])[key] for key in META_FROM_CONFIG}
        meta.update(
            wall_time_s=wall,
            dataset_checksums=self.checksums,
            config=self.method_config,
            pretrain=pretrain,
        )
        return meta


def seed_list(seed: int | Sequence[int]) -> list[int]:
    """``seed`` as a list of distinct seeds (one seed: a list of one)."""
    seeds = [int(seed)] if isinstance(seed, int | np.integer) else [int(s) for s in seed]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"need one or more distinct seeds, got {seeds}")
    return seeds


SEED_FIELD = "{seed}"
"""In ``out_dir`` of a batched run, replaced by each seed (and by the joined seeds for the
job folder that holds the one checkpoint)."""


def seed_dirs(out_dir: str | os.PathLike, seeds: Sequence[int]) -> tuple[list[Path], Path]:
    """(each seed's run folder, the job folder holding the checkpoint) for ``out_dir``.

    One seed: ``out_dir`` (``{seed}`` in it, if any, replaced) is both. Several seeds:
    ``out_dir`` must contain ``{seed}``; the job folder is ``out_dir`` with ``{seed}``
    replaced by the seeds joined with ``_`` (``.../seed{seed}`` -> ``.../seed0_1_2``), a
    sibling no seed's folder or workflow output shares.
    """
    pattern = str(out_dir)
    if len(seeds) > 1 and SEED_FIELD not in pattern:
        raise ConfigError(
            f"--out {pattern}: several seeds {list(seeds)} need a folder pattern with "
            f"{SEED_FIELD} in it, e.g. runs/uniq/seed{SEED_FIELD}"
        )
    outs = [Path(pattern.replace(SEED_FIELD, str(s))) for s in seeds]
    job = (
        Path(pattern.replace(SEED_FIELD, "_".join(map(str, seeds)))) if len(seeds) > 1 else outs[0]
    )
    return outs, job


@contextlib.contextmanager
def device_scope(device: str) -> Iterator[torch.device]:
    """The training device for ``--device`` (auto | cpu | cuda | cuda:N), held while training.

    Delegates to the GPU allocator (:func:`uniq.devices.device_for`); the one place to swap
    device policy. A device that cannot be used (no GPU free with ``cuda``, a malformed
    name, ``cuda:N`` without a driver) raises :class:`ConfigError` here, before any output
    is written, rather than a traceback halfway through.
    """
    from uniq.devices import NoGpuError, device_for

    with contextlib.ExitStack() as stack:
        try:
            dev = stack.enter_context(device_for(device))
            torch.empty(1, device=dev)  # touch it: CUDA errors surface on first use
        except (NoGpuError, RuntimeError, AssertionError) as err:
            raise ConfigError(
                f"--device {device}: cannot use it ({str(err).splitlines()[0]}). "
                "Use --device auto (GPU if free, else CPU) or --device cpu."
            ) from None
        yield dev


def set_threads(threads: int | None = None) -> int:
    """``torch.set_num_threads``: ``threads``, else ``$UNIQ_THREADS``, else 1."""
    n = threads if threads is not None else int(os.environ.get(THREADS_ENV, "1") or 1)
    if n < 1:
        raise ConfigError(f"threads must be >= 1 (got {n}); pass --threads N or set {THREADS_ENV}")
    torch.set_num_threads(n)
    return n


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["lr=1e-4", "occupancy_correction=false"]`` -> dict; values parsed as YAML scalars.

    YAML 1.1 reads ``1e-4`` (no dot) as a string; such strings that parse as numbers
    become floats.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set alpha=0.001")
        value = yaml.safe_load(raw) if raw.strip() else ""
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        out[key.strip()] = value
    return out


def coerce_overrides(config_cls: type, overrides: dict[str, Any]) -> dict[str, Any]:
    """Ints where a float field is expected become floats; a wrong type fails clearly."""
    types = {f.name: type(f.default) for f in dataclasses.fields(config_cls)}
    out = {}
    for key, value in overrides.items():
        want = types.get(key)
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif want in (int, float, bool, str) and not isinstance(value, want):
            raise ConfigError(
                f"hyper-parameter {key}={value!r} has type {type(value).__name__}; "
                f"expected {want.__name__} (e.g. --set {key}=<{want.__name__}>)"
            )
        out[key] = value
    return out


def dataset_checksum(data: OfflineData) -> str:
    """The checksum a run records for its data: the file's stored sum (OfflineData.load has
    checked it), else computed."""
    return str(data.attrs.get("checksum") or data.checksum())


def _variant_params(un: OfflineData, mix: OfflineData) -> dict[str, int]:
    """From the split files' attrs; counted from the data when a file lacks them."""
    counted = {
        "n_un": un.num_episodes() if len(un) else 0,
        "n_mix_desirable": _count_episodes(mix, desirable=True),
        "n_mix_undesirable": _count_episodes(mix, desirable=False),
    }
    return {
        k: int(mix.attrs.get(k, un.attrs.get(k, counted[k])))
        for k in VARIANT_KEYS  # split attrs win; counts fill in for other files
    }


def _count_episodes(data: OfflineData, desirable: bool) -> int:
    if not len(data):
        return 0
    starts = data.episode_starts()
    return int(((data.is_desirable[starts] > 0.5) == desirable).sum())


def write_yaml(path: Path, data: dict) -> None:
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
