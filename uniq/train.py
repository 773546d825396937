"""The one offline training loop every method uses (design.md section 7).

``train`` loads D_UN and D_MIX (validated against the task), puts them on the device,
builds the method from the registry, runs its ``pretrain`` once, then repeats: sample
each batch the method asks for (``Method.batches``) from device-resident tensors, call
``Method.update``. Around that loop it owns, once for all methods:

- seeding (:func:`seed_everything`) and a dedicated ``torch.Generator`` for sampling;
- logging: mean of each returned scalar every ``log_every`` steps to ``train_log.csv``,
  with a tqdm bar; optional evaluation every ``eval_every`` steps to ``curve.csv``;
- a NaN/inf guard: a non-finite returned scalar stops training with the step and key named
  (checked every step on the CPU; on a GPU every ``CUDA_CHECK_EVERY`` steps, to avoid a
  device sync per step, still naming the first bad step);
- atomic checkpoints (method, optimizers, every RNG state, step, the logs so far) every
  ``checkpoint_every`` steps, after ``pretrain`` and at the end; a rerun with the same
  arguments resumes from ``checkpoint.pt`` and ends with the same parameters as an
  uninterrupted run (same device and thread count);
- outputs: ``config.yaml`` (resolved config), ``policy.pt`` (:func:`uniq.nets.save_policy`),
  written when training ends, so a failed or killed run leaves neither (nor overwrites
  those of an earlier run in the folder). Logs are written to ``*.csv.part`` while training
  runs and renamed last, after ``policy.pt``: a file named ``train_log.csv`` is always
  complete. The checkpoint holds the logs written so far, so a run killed at any point
  (even after it finished, before a workflow manager recorded it) resumes when the manager
  deletes its declared outputs and reruns it.
- seeds batched (``seed`` a list, ``train.batch_seeds`` in the workflow): one method with a
  leading member dimension trains every seed (``Method.supports_members``); each seed is
  built and pretrained as its separate run would be, gets its own folder with the files above
  (its own log and curve columns, its own policy), and the job keeps one checkpoint in a
  sibling folder (:func:`seed_dirs`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from uniq.atomic import atomic_path, atomic_write_text, git_commit
from uniq.data import DatasetError, OfflineData, Sampler, observation_stats
from uniq.method import SOURCES, ConfigError, Method, build_config

log = logging.getLogger(__name__)

THREADS_ENV = "UNIQ_THREADS"
"""Torch CPU threads when ``threads`` is not given (Snakemake passes ``--threads``)."""
CUDA_CHECK_EVERY = 100
"""On a GPU the NaN guard reads the logged scalars back every this many steps (one sync)."""
CHECKPOINT = "checkpoint.pt"
VARIANT_KEYS = ("n_un", "n_mix_desirable", "n_mix_undesirable")
META_FROM_CONFIG = (
    "algo", "base_algo", "task", "variant", "seed", "steps", "git_commit", "variant_params",
    "uses_hidden_labels",
)  # fmt: skip
"""policy.pt meta fields copied from the resolved config (plus wall time, checksums, config)."""
HIDDEN_COLUMNS = ("rewards", "costs", "is_desirable")
"""Dataset columns the training loop withholds from every method."""


class TrainingDiverged(RuntimeError):
    """A logged loss became NaN or infinite; the message names the step and the key."""


# ---------------------------------------------------------------------------- setup helpers
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


def _coerce(config_cls: type, overrides: dict[str, Any]) -> dict[str, Any]:
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


# ---------------------------------------------------------------------------- data sources
class Sources(dict):
    """source name -> Sampler; asking for a source with no rows fails with what to fix.

    ``obs_norm``: the :class:`uniq.nets.ObsNormalizer` the samplers' observations were
    standardised with (None: raw observations). Whatever acts in the environment applies it
    first (:meth:`uniq.method.Method.act`, :meth:`uniq.method.Method.deployable_policy`).
    """

    def __init__(self, samplers: dict[str, Sampler], empty_reasons: dict[str, str], obs_norm=None):
        super().__init__(samplers)
        self.empty_reasons = empty_reasons
        self.obs_norm = obs_norm

    def __missing__(self, key: str):
        if key in self.empty_reasons:
            raise DatasetError(self.empty_reasons[key])
        raise KeyError(f"unknown data source {key!r}; sources are {SOURCES}")

    def require(self, names) -> None:
        """Raise the DatasetError of the first of ``names`` that has no rows."""
        for name in names:
            self[name]

    def with_generator(self, generator: torch.Generator) -> Sources:
        """The same device tensors (not copied), sampled with another generator."""
        return Sources(
            {k: Sampler(v.tensors, generator) for k, v in self.items()},
            self.empty_reasons,
            self.obs_norm,
        )


def make_sources(
    un: OfflineData,
    mix: OfflineData,
    device: torch.device,
    generator: torch.Generator,
    paths: tuple[str, str] = ("D_UN", "D_MIX"),
    obs_norm: bool = False,
) -> Sources:
    """Samplers over device tensors for "mix", "un" and "mix_desirable" (hidden-label rows).

    ``obs_norm``: every network sees observations (and next observations) standardised as
    ``(s - mean) / (std + 1e-3)`` with the statistics of D_MIX and D_UN together
    (:func:`uniq.data.observation_stats`), done once here for every method.

    Columns: those of :meth:`OfflineData.to_tensors` minus ``HIDDEN_COLUMNS`` (learners
    never see rewards, costs or the hidden label; the oracle gets the desirable rows as
    their own source instead), plus ``index`` (row number within that source), so a method
    can look up per-row values it computed once (e.g. UNIQ's frozen density ratios).
    """
    tensors = {"un": un.to_tensors(device), "mix": mix.to_tensors(device)}
    normalizer = None
    if obs_norm:
        from uniq.nets import ObsNormalizer

        normalizer = ObsNormalizer(un.obs_dim).to(device)
        normalizer.set_stats(*observation_stats(mix, un))
        with torch.no_grad():
            for t in tensors.values():
                for key in ("observations", "next_observations"):
                    t[key] = normalizer(t[key])
    desirable = tensors["mix"]["is_desirable"] > 0.5
    tensors["mix_desirable"] = {k: v[desirable] for k, v in tensors["mix"].items()}
    for t in tensors.values():  # learners never see these (section 1); also less to gather
        for key in HIDDEN_COLUMNS:
            del t[key]
    reasons = {
        "un": f"{paths[0]}: D_UN has no rows, but this algorithm samples from it; "
        "make the split with --n-un > 0.",
        "mix": f"{paths[1]}: D_MIX has no rows; make the split with more trajectories.",
        "mix_desirable": f"{paths[1]}: D_MIX has no desirable rows (is_desirable == 1), but "
        "this algorithm (an oracle) clones them; make the split with --n-mix-desirable > 0.",
    }
    samplers, empty = {}, {}
    for name, t in tensors.items():
        n = len(t["observations"])
        t["index"] = torch.arange(n, device=device)
        if n:
            samplers[name] = Sampler(t, generator)
        else:
            empty[name] = reasons[name]
    return Sources(samplers, empty, normalizer)


def _checksum(data: OfflineData) -> str:
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


# ---------------------------------------------------------------------------- file helpers
def _write_yaml(path: Path, data: dict) -> None:
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


class _Csv:
    """An append-only CSV written as ``NAME.part`` and renamed to ``NAME`` by ``finish``.

    The checkpoint stores the text written so far (``text()``, a few hundred KB at most), and a
    resume starts the ``.part`` file again from it: what a crash, or a workflow manager deleting
    the outputs of an incomplete job, did to the files after the checkpoint cannot matter.
    """

    def __init__(self, path: Path, columns: list[str] | None = None, text: str = ""):
        self.path, self.part, self.columns = path, path.with_name(path.name + ".part"), columns
        self.part.write_text(text)
        self.file = open(self.part, "a")

    def write(self, row: dict[str, Any]) -> None:
        if self.columns is None:
            self.columns = list(row)
            self.file.write(",".join(self.columns) + "\n")
        self.file.write(",".join(_fmt(row.get(c, "")) for c in self.columns) + "\n")
        self.file.flush()

    def text(self) -> str:
        self.file.flush()
        return self.part.read_text()

    def close(self) -> None:
        self.file.close()

    def finish(self) -> None:
        self.file.close()
        os.replace(self.part, self.path)


def _fmt(x: Any) -> str:
    return f"{x:.6g}" if isinstance(x, float) else str(x)


# ---------------------------------------------------------------------------- metrics
class _Metrics:
    """Per-step scalars from ``update``: checked for NaN/inf and averaged for the log.

    Values stay on the device until ``flush`` reads all pending steps back in one copy. A
    batched method returns ``[K]`` values, one per seed of ``seeds``; each is averaged apart.
    """

    def __init__(self, device: torch.device, seeds: list[int] | None = None, state=None):
        self.device, self.seeds = device, seeds
        n = 1 if seeds is None else len(seeds)
        states = state if isinstance(state, list) else [state or {}] * n
        self.pending: list[tuple[int, tuple[str, ...], torch.Tensor]] = []
        self.sums: list[dict[str, float]] = [dict(st.get("sums", {})) for st in states]
        self.counts: list[dict[str, int]] = [dict(st.get("counts", {})) for st in states]

    def add(self, step: int, out: dict[str, Any]) -> None:
        n = len(self.sums)
        values = [
            v.detach().float().reshape(-1).expand(n)
            if isinstance(v, torch.Tensor)
            else torch.full((n,), float(v), device=self.device)
            for v in out.values()
        ]
        if values:
            self.pending.append((step, tuple(out), torch.stack(values)))

    def flush(self, algo: str) -> None:
        if not self.pending:
            return
        flat = torch.cat([v.flatten() for _, _, v in self.pending]).cpu().tolist()
        i = 0
        for step, keys, _ in self.pending:
            for key in keys:
                for k, (sums, counts) in enumerate(zip(self.sums, self.counts, strict=True)):
                    x = flat[i]
                    i += 1
                    if not math.isfinite(x):
                        self.pending.clear()
                        member = "" if self.seeds is None else f" for seed {self.seeds[k]}"
                        raise TrainingDiverged(
                            f"training diverged: {algo} returned {key} = {x} at step {step}"
                            f"{member}. Outputs were not written; the last good checkpoint "
                            "(if any) is kept. Check the datasets and lower the learning rates "
                            "(--set ...)."
                        )
                    sums[key] = sums.get(key, 0.0) + x
                    counts[key] = counts.get(key, 0) + 1
        self.pending.clear()

    def means(self, k: int = 0) -> dict[str, float]:
        """Member ``k``'s means since the last call (and reset them)."""
        sums, counts = self.sums[k], self.counts[k]
        out = {key: sums[key] / counts[key] for key in sorted(sums)}
        sums.clear()
        counts.clear()
        return out

    def state(self) -> dict | list[dict]:
        states = [
            {"sums": dict(s), "counts": dict(c)}
            for s, c in zip(self.sums, self.counts, strict=True)
        ]
        return states[0] if self.seeds is None else states


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "sampler": generator.get_state(),
    }


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["sampler"])


@contextlib.contextmanager
def _rng_preserved(generator: torch.Generator) -> Iterator[None]:
    """Evaluation inside training must not shift the training's random streams."""
    state = _rng_state(generator)
    try:
        yield
    finally:
        _set_rng_state(state, generator)


# ---------------------------------------------------------------------------- the loop
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


def job_seed(seeds: Sequence[int]) -> int:
    """The seed of a batched job's own streams (batch sampling, policy noise): from all seeds."""
    return int(np.random.SeedSequence([*seeds, 2]).generate_state(1)[0])


def train(
    algo: str,
    task,
    un_path: str | os.PathLike,
    mix_path: str | os.PathLike,
    seed: int | Sequence[int],
    steps: int,
    out_dir: str | os.PathLike,
    overrides: dict[str, Any] | None = None,
    label: str | None = None,
    variant: str | None = None,
    device: str = "auto",
    eval_every: int = 0,
    eval_episodes: int = 10,
    reference_paths: Sequence[str | os.PathLike] = (),
    log_every: int = 1000,
    checkpoint_every: int = 10_000,
    threads: int | None = None,
    eval_num_envs: int = 1,
    progress: bool = True,
    obs_norm: bool | None = None,
) -> dict[str, Any] | list[dict[str, Any]]:
    """Train ``algo`` on (D_UN, D_MIX) for ``steps`` updates into ``out_dir``; returns policy meta.

    ``task`` is a task name or an ``envs.tasks.TaskSpec``. ``overrides`` are method config
    fields (``--set``). Resumes from ``out_dir/checkpoint.pt`` when present. ``obs_norm``:
    standardise observations for every network (:func:`make_sources`); None: the task's
    default (``TaskSpec.obs_normalize``: on for velocity tasks, off for navigation, as the
    authors' code). The saved policy and the learning curves standardise raw observations
    themselves (:meth:`uniq.method.Method.deployable_policy`).

    ``seed`` may be a list of seeds: they are trained together as the members of one
    batched method (``Method.supports_members``; otherwise one after another), each into
    its own folder (``out_dir`` with ``{seed}`` replaced, see :func:`seed_dirs`) with the
    files and formats a one-seed run writes; returns the list of metas. Member k starts from
    exactly the state (initial weights, pretraining) of a separate run with seed k; the
    updates then draw each member's own batches and noise from the job's streams
    (:func:`job_seed`), so members are independent runs, but not bit-equal to separate ones.
    """
    from uniq import registry
    from uniq.nets import save_policy

    seeds = [seed] if isinstance(seed, int | np.integer) else [int(s) for s in seed]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"need one or more distinct seeds, got {seeds}")
    if steps < 0 or log_every < 1 or checkpoint_every < 1 or eval_every < 0:
        raise ConfigError("need steps >= 0, log_every >= 1, checkpoint_every >= 1, eval_every >= 0")
    outs, job_dir = seed_dirs(out_dir, seeds)
    batched = len(seeds) > 1
    spec = task if hasattr(task, "obs_dim") else registry.get_task(task)
    obs_norm = bool(spec.obs_normalize if obs_norm is None else obs_norm)
    method_cls = registry.get_method(algo)
    cfg = build_config(method_cls.Config, _coerce(method_cls.Config, overrides or {}), algo)
    label = label or method_cls.name
    if batched and not method_cls.supports_members:
        log.warning("%s cannot batch seeds: training %s one after another", label, seeds)
        kwargs = dict(
            overrides=overrides, label=label, variant=variant, device=device,
            eval_every=eval_every, eval_episodes=eval_episodes, reference_paths=reference_paths,
            log_every=log_every, checkpoint_every=checkpoint_every, threads=threads,
            eval_num_envs=eval_num_envs, progress=progress, obs_norm=obs_norm,
        )  # fmt: skip
        return [
            train(algo, spec, un_path, mix_path, s, steps, out, **kwargs)
            for s, out in zip(seeds, outs, strict=True)
        ]
    for folder in {*outs, job_dir}:
        folder.mkdir(parents=True, exist_ok=True)
    n_threads = set_threads(threads)

    un = OfflineData.load(un_path, spec)
    mix = OfflineData.load(mix_path, spec)
    checksums = {"un": _checksum(un), "mix": _checksum(mix)}
    variant_params = _variant_params(un, mix)
    if len(mix):  # fail before training; the share of rows, as the method samples them
        method_cls.check_split(cfg, float((mix.is_desirable <= 0.5).mean()))
    method_config = dataclasses.asdict(cfg)
    identity = {  # what a checkpoint must match to be resumed (steps may grow)
        "base_algo": method_cls.name,
        "task": spec.name,
        "seed": seeds if batched else seeds[0],
        "config": method_config,
        "dataset_checksums": checksums,
        "obs_norm": obs_norm,
    }
    ckpt_path = job_dir / CHECKPOINT
    for folder in {*outs, job_dir}:
        for name in (CHECKPOINT, "policy.pt", "config.yaml"):  # a kill mid-write leaves these
            for stale in folder.glob(f".{name}.*.tmp"):
                stale.unlink(missing_ok=True)
    ckpt = (
        torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt_path.exists()
        else None
    )
    if ckpt is not None:
        _check_resumable(ckpt, identity, steps, ckpt_path)

    reference = None
    if eval_every and reference_paths:  # fail before training, not at the first evaluation
        reference = registry.evaluation().reference_returns(list(reference_paths))

    def pack(items: list) -> Any:  # checkpoint fields: one run's as before, a list if batched
        return items if batched else items[0]

    def unpack(item: Any) -> list:
        return item if batched else [item]

    with device_scope(device) as dev:
        resolved = {
            "algo": label,
            "base_algo": method_cls.name,
            "task": spec.name,
            "variant": variant,
            "seed": seeds[0],
            "steps": steps,
            "device": str(dev),
            "threads": n_threads,
            "data": {
                name: {"path": str(path), "checksum": checksums[name], "rows": len(d)}
                for name, path, d in (("un", un_path, un), ("mix", mix_path, mix))
            },
            "variant_params": variant_params,
            "config": method_config,
            "obs_norm": obs_norm,
            "uses_hidden_labels": method_cls.uses_hidden_labels,
            "loop": dict(
                log_every=log_every,
                checkpoint_every=checkpoint_every,
                eval_every=eval_every,
                eval_episodes=eval_episodes,
                reference_paths=[str(p) for p in reference_paths],
            ),
            "git_commit": git_commit(),
        }
        if batched:
            resolved["loop"].update(seeds_trained_together=seeds, checkpoint_dir=str(job_dir))
        generator = seed_everything(job_seed(seeds) if batched else seeds[0], dev)
        sources = make_sources(un, mix, dev, generator, (str(un_path), str(mix_path)), obs_norm)
        members = len(seeds) if batched else None
        method = (
            method_cls(cfg, spec, sources, dev, seeds[0], members=members)
            if batched
            else method_cls(cfg, spec, sources, dev, seeds[0])
        )
        method.total_steps = steps
        wanted = _batches(method)
        sources.require(src for src, _ in wanted.values())  # before any log file exists

        def pretrain() -> list[dict[str, float]]:
            if not batched:
                return [method.pretrain()]
            # Each member is built and pretrained exactly as a separate run with its seed
            # (same RNG calls in the same order), then stacked into the batched method.
            plains, logs = [], []
            for s in seeds:
                own = sources.with_generator(seed_everything(s, dev))
                plains.append(method_cls(cfg, spec, own, dev, s))
                plains[-1].total_steps = steps
                logs.append(plains[-1].pretrain())
            method.adopt(plains)
            seed_everything(job_seed(seeds), dev)  # the job's global streams from here on
            return logs

        def save_checkpoint(step: int, wall: float) -> None:
            metrics.flush(label)  # never checkpoint past a non-finite loss
            state = {
                "identity": identity,
                "step": step,
                "method": method.state_dict(),
                "rng": _rng_state(generator),
                "pretrain": pack(pretrain_logs),
                "wall_time_s": wall,
                "metrics": metrics.state(),
                "log": pack([{"columns": c.columns, "text": c.text()} for c in log_csvs]),
                "curve": pack(
                    [{"columns": c.columns, "text": c.text()} for c in curve_csvs]
                    if eval_every
                    else [None] * len(seeds)
                ),
            }
            with atomic_path(ckpt_path) as tmp:
                torch.save(state, tmp)

        if ckpt is None:
            step, wall_before = 0, 0.0
            metrics = _Metrics(dev, seeds if batched else None)
            log_csvs = [_Csv(out / "train_log.csv") for out in outs]
            curve_csvs = [_Csv(out / "curve.csv") for out in outs] if eval_every else []
            t0 = time.perf_counter()
            pretrain_logs = [{k: _scalar(v) for k, v in p.items()} for p in pretrain()]
            for s, p in zip(seeds, pretrain_logs, strict=True):
                if p:
                    log.info(
                        "pretrain (seed %d): %s", s, ", ".join(f"{k}={v:.4g}" for k, v in p.items())
                    )
            save_checkpoint(0, time.perf_counter() - t0)
            wall_before = time.perf_counter() - t0
        else:
            method.load_state_dict(ckpt["method"])
            _set_rng_state(ckpt["rng"], generator)
            step, wall_before = ckpt["step"], ckpt["wall_time_s"]
            pretrain_logs = unpack(ckpt["pretrain"])
            metrics = _Metrics(dev, seeds if batched else None, ckpt["metrics"])
            log_csvs = [
                _Csv(out / "train_log.csv", c["columns"], c["text"])
                for out, c in zip(outs, unpack(ckpt["log"]), strict=True)
            ]
            curve_csvs = (
                [
                    _Csv(out / "curve.csv", c["columns"] if c else None, c["text"] if c else "")
                    for out, c in zip(outs, unpack(ckpt.get("curve")), strict=True)
                ]
                if eval_every
                else []
            )
            log.info("resuming %s from %s at step %d", label, ckpt_path, step)

        def sample(sampler: Sampler, n: int) -> dict[str, torch.Tensor]:
            return sampler.sample(n) if members is None else sampler.sample(n, members)

        check_every = 1 if dev.type == "cpu" else CUDA_CHECK_EVERY
        t_start, t_window, window_start_step = time.perf_counter(), time.perf_counter(), step
        bar = _progress_bar(steps, step, label, progress)
        try:
            while step < steps:
                batch = {key: sample(sources[src], n) for key, (src, n) in wanted.items()}
                step += 1
                metrics.add(step, method.update(batch))
                if step % check_every == 0:
                    metrics.flush(label)
                if step % log_every == 0 or step == steps:
                    metrics.flush(label)
                    now = time.perf_counter()
                    rate = (step - window_start_step) / max(now - t_window, 1e-9)
                    for k, log_csv in enumerate(log_csvs):
                        row = {"step": step, **metrics.means(k)}
                        row["wall_time_s"] = wall_before + now - t_start
                        row["updates_per_s"] = rate
                        log_csv.write(row)
                    t_window, window_start_step = now, step
                    bar.set_postfix(
                        {k: f"{v:.3g}" for k, v in list(row.items())[1:4]}, refresh=False
                    )
                if eval_every and (step % eval_every == 0 or step == steps):
                    for k, (s, curve_csv) in enumerate(zip(seeds, curve_csvs, strict=True)):
                        with _rng_preserved(generator):
                            curve_csv.write(
                                registry.evaluation().curve_point(
                                    method.deployable_policy(k),
                                    method.device,
                                    spec,
                                    step,
                                    eval_episodes,
                                    s,
                                    eval_num_envs,
                                    reference,
                                )
                            )
                if step % checkpoint_every == 0 and step < steps:
                    save_checkpoint(step, wall_before + time.perf_counter() - t_start)
                bar.update(1)
            wall = wall_before + time.perf_counter() - t_start
            save_checkpoint(step, wall)
        except BaseException:
            for c in [*log_csvs, *curve_csvs]:
                c.close()
            raise
        finally:
            bar.close()

        metas = []
        for k, (s, out) in enumerate(zip(seeds, outs, strict=True)):
            resolved_k = dict(resolved, seed=s)
            meta = {key: resolved_k[key] for key in META_FROM_CONFIG}
            meta.update(
                wall_time_s=wall,  # of the whole job when batched
                dataset_checksums=checksums,
                config=method_config,
                pretrain=pretrain_logs[k],
            )
            _write_yaml(out / "config.yaml", resolved_k)
            save_policy(method.deployable_policy(k), out / "policy.pt", meta)
            metas.append(meta)
        # Renamed last: until then the .part files and the checkpoint let a rerun resume.
        for c in [*log_csvs, *curve_csvs]:
            c.finish()
        log.info(
            "trained %s (%d steps, %.1f s) -> %s", label, steps, wall,
            ", ".join(str(out / "policy.pt") for out in outs),
        )  # fmt: skip
        return metas if batched else metas[0]


def _batches(method: Method) -> dict[str, tuple[str, int]]:
    wanted = method.batches()
    for key, (source, n) in wanted.items():
        if source not in SOURCES or int(n) < 1:
            raise ConfigError(
                f"{type(method).__name__}.batches() asks for {key}: ({source!r}, {n}); "
                f"sources are {SOURCES} and sizes must be >= 1"
            )
    return wanted


def _check_resumable(ckpt: dict, identity: dict, steps: int, path: Path) -> None:
    old = ckpt.get("identity", {})
    diff = sorted(k for k in identity if old.get(k) != identity[k])
    if diff:
        raise ConfigError(
            f"{path} was written by a different run (differs in: {', '.join(diff)}). "
            "Delete it to start over, or choose another --out."
        )
    if ckpt["step"] > steps:
        raise ConfigError(
            f"{path} is at step {ckpt['step']} > --steps {steps}; delete it to retrain for fewer steps."
        )


def _scalar(v: Any) -> float:
    return float(v.item() if isinstance(v, torch.Tensor) else v)


def _progress_bar(total: int, initial: int, label: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=label,
        disable=not enabled,
        mininterval=2.0,
        dynamic_ncols=True,
    )
