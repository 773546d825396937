"""The one offline training loop every method uses (design.md section 7).

:func:`train` reads top to bottom: set up (the job, the data on the device, the method),
resume if the job has a checkpoint (else pretrain), loop (sample each batch the method
asks for, ``Method.update``, log, evaluate, checkpoint), finish (each seed's policy.pt and
config.yaml, then the logs renamed complete). The pieces it calls each do one job:

- :class:`uniq.job.Job`: what is trained, resolved from the arguments before anything runs
  (seeds and their folders, config, identity, config.yaml);
- :func:`uniq.sources.make_sources`: D_UN and D_MIX as device tensors, standardised once,
  the hidden columns withheld; :mod:`uniq.seeding`: ``seed_everything`` and RNG states;
- :class:`uniq.checkpoint.Checkpoint`: atomic checkpoints (method, optimizers, every RNG
  state, step, the logs so far) after ``pretrain``, every ``checkpoint_every`` steps and at
  the end; a rerun with the same arguments resumes from ``checkpoint.pt`` and ends with the
  same parameters as an uninterrupted run (same device, thread count and torch; a resume
  on another setup goes on with a warning);
- :class:`uniq.runlog.RunLogs`: the mean of each returned scalar every ``log_every`` steps
  to ``train_log.csv``; the divergence guard (:func:`uniq.runlog.check_finite`): a NaN/inf
  scalar stops training with the step and key named (checked every step on the CPU; on a
  GPU every ``CUDA_CHECK_EVERY`` steps, to avoid a device sync per step, still naming the
  first bad step);
- :class:`CurveEvaluation`: every ``eval_every`` steps each seed's policy on its
  evaluation episodes, a row of its ``curve.csv`` (environments reached through
  ``uniq.registry.evaluation()``: this module imports nothing from ``envs/``).

Outputs: ``config.yaml`` (resolved config) and ``policy.pt`` (:func:`uniq.nets.save_policy`)
are written when training ends, so a failed or killed run leaves neither (nor overwrites
those of an earlier run in the folder). Logs are written to ``*.csv.part`` while training
runs and renamed last, after ``policy.pt``: a file named ``train_log.csv`` is always
complete. The checkpoint holds the logs written so far, so a run killed at any point (even
after it finished, before a workflow manager recorded it) resumes when the manager deletes
its declared outputs and reruns it.

One seed is a batch of one. ``seed`` may be a list (``train.batch_seeds`` in the workflow):
one method with a leading member dimension trains every seed (``Method.supports_members``);
each seed is built and pretrained as its separate run would be (:func:`pretrain`), gets its
own folder with the files above (its own log and curve, its own policy), and the job keeps
one checkpoint in a sibling folder (:func:`uniq.job.seed_dirs`). The loop is the same for
one seed and for K: per-seed things are lists of one or of K.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from uniq import registry
from uniq.checkpoint import NAME as CHECKPOINT
from uniq.checkpoint import PRETRAIN_NAME as PRETRAIN
from uniq.checkpoint import Checkpoint, PretrainStore
from uniq.data import DatasetError, OfflineData
from uniq.job import (
    Job,
    coerce_overrides,
    device_scope,
    seed_dirs,
    seed_list,
    set_threads,
    write_yaml,
)
from uniq.jobtimes import carried_cpu, cpu_seconds, resume_line, take_credit, trained_line
from uniq.method import SOURCES, ConfigError, Method, build_config
from uniq.runlog import RunLogs, TrainingDiverged
from uniq.seeding import job_seed, rng_preserved, seed_everything
from uniq.sources import Sources, make_sources

__all__ = [
    "CHECKPOINT", "CurveEvaluation", "TrainingDiverged", "build_method",
    "pretrain", "train",
]  # fmt: skip

log = logging.getLogger(__name__)

CUDA_CHECK_EVERY = 100
"""On a GPU the divergence guard reads the logged scalars back every this many steps (one sync)."""
STEPS_WARNING = 10_000_000
"""More updates than this (10x the paper's) are trained, with a warning."""
ACTION_TOLERANCE = 1e-6
"""float32 rounding of an action stored as exactly +-1."""


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
    standardise observations for every network (:func:`uniq.sources.make_sources`); None:
    the task's default (``TaskSpec.obs_normalize``: on for velocity tasks, off for
    navigation, as the authors' code). The saved policy and the learning curves standardise
    raw observations themselves (:meth:`uniq.method.Method.deployable_policy`).

    ``seed`` may be a list of seeds: they are trained together as the members of one
    batched method (``Method.supports_members``; otherwise one after another), each into
    its own folder (``out_dir`` with ``{seed}`` replaced, see :func:`uniq.job.seed_dirs`)
    with the files and formats a one-seed run writes; returns the list of metas. Member k
    starts from exactly the state (initial weights, pretraining) of a separate run with seed
    k; the updates then draw each member's own batches and noise from the job's streams
    (:func:`uniq.seeding.job_seed`), so members are independent runs, but not bit-equal to
    separate ones.
    """
    # -- set up: the job, its data, where it left off
    seeds = seed_list(seed)
    if steps < 0 or log_every < 1 or checkpoint_every < 1 or eval_every < 0:
        raise ConfigError("need steps >= 0, log_every >= 1, checkpoint_every >= 1, eval_every >= 0")
    if steps > STEPS_WARNING:  # a typo (an extra zero) would hold a GPU for days
        log.warning(
            "--steps %d is over %d, %dx the paper's 1e6 updates: is that a typo? (a run "
            "stopped with Ctrl-C resumes from its last checkpoint)",
            steps, STEPS_WARNING, steps // 1_000_000,
        )  # fmt: skip
    spec = task if hasattr(task, "obs_dim") else registry.get_task(task)
    method_cls = registry.get_method(algo)
    cfg = build_config(
        method_cls.Config, coerce_overrides(method_cls.Config, overrides or {}), algo
    )
    label = label or method_cls.name
    loop = dict(
        log_every=log_every, checkpoint_every=checkpoint_every, eval_every=eval_every,
        eval_episodes=eval_episodes, reference_paths=[str(p) for p in reference_paths],
    )  # fmt: skip
    if len(seeds) > 1 and not method_cls.supports_members:
        log.warning("%s cannot batch seeds: training %s one after another", label, seeds)
        kwargs = dict(loop, overrides=overrides, label=label, variant=variant, device=device,
                      reference_paths=reference_paths, threads=threads, obs_norm=obs_norm,
                      eval_num_envs=eval_num_envs, progress=progress)  # fmt: skip
        outs = seed_dirs(out_dir, seeds)[0]
        return [
            train(algo, spec, un_path, mix_path, s, steps, o, **kwargs)
            for s, o in zip(seeds, outs, strict=True)
        ]
    outs, job_dir = seed_dirs(out_dir, seeds)
    for folder in {*outs, job_dir}:
        folder.mkdir(parents=True, exist_ok=True)
    n_threads = set_threads(threads)
    paths = {"un": str(un_path), "mix": str(mix_path)}
    data = {name: OfflineData.load(path, spec) for name, path in paths.items()}
    _check_training_data(data, paths)
    if len(data["mix"]):  # fail before training; the share of rows, as the method samples them
        method_cls.check_split(cfg, float((data["mix"].is_desirable <= 0.5).mean()))
    obs_norm = bool(spec.obs_normalize if obs_norm is None else obs_norm)
    job = Job(method_cls, cfg, label, spec, seeds, steps, outs, job_dir, paths, data, obs_norm,
              variant, loop)  # fmt: skip
    _remove_stale_temps({*outs, job_dir})
    checkpoint = Checkpoint(job_dir, job.identity, {"every": eval_every, "episodes": eval_episodes})
    saved = checkpoint.load(steps)
    store = PretrainStore(job_dir, job.identity)
    if saved is None:
        store.load()  # a stale one refused now, before the data go to the device
    else:
        store.remove()  # left by a stop between the first checkpoint and its removal
    curve = CurveEvaluation(eval_every, spec, eval_episodes, eval_num_envs, reference_paths)

    with device_scope(device) as dev:
        resolved = job.resolved(dev, n_threads)
        checkpoint.host = store.host = _host(resolved, dev)
        generator = seed_everything(job_seed(seeds), dev)
        sources = make_sources(
            data["un"], data["mix"], dev, generator, (paths["un"], paths["mix"]), obs_norm
        )
        method = build_method(method_cls, cfg, spec, sources, dev, seeds, steps)
        wanted = _batches(method)
        sources.require(src for src, _ in wanted.values())  # before any log file exists

        # -- resume if a checkpoint exists, else pretrain
        if saved is None:
            logs = RunLogs(outs, seeds, dev, label, curves=curve.enabled)
            t0 = time.perf_counter()
            pretrain_logs, (earlier_s, earlier_cpu) = pretrain(
                method,
                seeds,
                lambda own, s: build_method(method_cls, cfg, spec, own, dev, [s], steps),
                store,
            )
            clock = _Clock(earlier_s + time.perf_counter() - t0, earlier_cpu, 0)
            if earlier_s:  # seeds from pretrain.pt, a ratio fit's part: their time counts too
                log.info(resume_line(label, job_dir, 0, earlier_s, earlier_cpu))
            checkpoint.save(0, clock.seconds(), method, generator, pretrain_logs, logs)
            store.remove()  # the checkpoint holds every seed's pretraining now
            step = 0
        else:
            resumed = checkpoint.restore(saved, method, generator)
            step, pretrain_logs = resumed.step, resumed.pretrain
            logs = RunLogs(outs, seeds, dev, label, curve.enabled, resumed.logs)
            log.info(resume_line(label, checkpoint.path, step, resumed.wall_time_s,
                                 resumed.cpu_time_s))  # fmt: skip
            # a resumed job's log is new (Snakemake rewrites it): say what pretraining gave
            _log_pretrain(seeds, pretrain_logs, " from the checkpoint")
            clock = _Clock(resumed.wall_time_s, resumed.cpu_time_s, step)

        # -- loop: sample, update, log, evaluate, checkpoint
        check_every = 1 if dev.type == "cpu" else CUDA_CHECK_EVERY
        bar = _progress_bar(steps, step, label, progress)
        try:
            while step < steps:
                batch = {
                    key: sources[src].sample(n, method.members) for key, (src, n) in wanted.items()
                }
                step += 1
                logs.metrics.add(step, method.update(batch))
                if step % check_every == 0:
                    logs.metrics.flush()  # the divergence guard
                if step % log_every == 0 or step == steps:
                    row = logs.write_train(step, *clock.lap(step))
                    bar.set_postfix(
                        {k: f"{v:.3g}" for k, v in list(row.items())[1:4]}, refresh=False
                    )
                if curve.due(step, steps):
                    logs.write_curve(curve(method, seeds, step, generator))
                if step % checkpoint_every == 0 and step < steps:
                    checkpoint.save(step, clock.seconds(), method, generator, pretrain_logs, logs)
                    if not progress:  # no bar (the workflow's jobs): where it is, in its log
                        _log_progress(label, step, steps, clock.rate_since_mark(step))
                bar.update(1)
            seconds = clock.seconds()
            wall = seconds[0]
            checkpoint.save(step, seconds, method, generator, pretrain_logs, logs)
        except BaseException:
            logs.close()
            raise
        finally:
            bar.close()

        # -- finish: each seed's policy and config, then the logs renamed complete
        metas = [job.meta(resolved, k, wall, pretrain_logs[k]) for k in range(len(seeds))]
        for k, (s, out) in enumerate(zip(seeds, outs, strict=True)):
            write_yaml(out / "config.yaml", dict(resolved, seed=s))
            _save_policy(method.deployable_policy(k), out / "policy.pt", metas[k])
        logs.finish()  # last: until then the .part files and the checkpoint let a rerun resume
        log.info(trained_line(label, steps, wall, ", ".join(str(o / "policy.pt") for o in outs)))
        return metas if len(seeds) > 1 else metas[0]


# ---------------------------------------------------------------------------- the data
def _check_training_data(data: dict[str, OfflineData], paths: dict[str, str]) -> None:
    """What the loop would otherwise accept silently and learn nonsense from."""
    for name, d in data.items():
        if len(d) and not ((d.terminals > 0) | (d.timeouts > 0)).any():
            raise DatasetError(
                f"{paths[name]}: none of its {len(d)} rows is flagged in terminals or timeouts, "
                "so its trajectories (and their initial states) cannot be told apart. Flag "
                "each trajectory's last row (as the DSRL files and `uniq-bench collect` do)."
            )
        worst = float(np.abs(d.actions).max()) if len(d) else 0.0
        if worst > 1 + ACTION_TOLERANCE:
            outside = int((np.abs(d.actions) > 1 + ACTION_TOLERANCE).any(axis=1).sum())
            raise DatasetError(
                f"{paths[name]}: {outside} of {len(d)} rows have actions outside [-1, 1] "
                f"(largest |a| = {worst:.4g}); the policies are tanh-squashed into the tasks' "
                "action box [-1, 1] and would learn from clamped actions. Rescale the actions "
                "to [-1, 1], or clip them if they are unclipped Gaussian samples."
            )
    mix = data["mix"]
    if len(mix) and not (mix.is_desirable > 0.5).any():
        raise DatasetError(
            f"{paths['mix']}: D_MIX holds no desirable trajectory (the variant's "
            "n_mix_desirable is 0), so there is no desirable behaviour to imitate: "
            "the learners would see undesirable trajectories only, and BC-safe (trained on "
            "D_MIX's desirable rows) nothing at all. Give the variant n_mix_desirable >= 1."
        )


# ---------------------------------------------------------------------------- the method
def build_method(
    method_cls: type[Method],
    cfg: Any,
    spec,
    sources: Sources,
    device: torch.device,
    seeds: Sequence[int],
    steps: int,
) -> Method:
    """The one method that trains ``seeds``: a plain one (``members=None``) for one seed,
    K members batched over seeds for K; ``total_steps`` set before anything else runs."""
    # a method that cannot batch may not take ``members`` at all
    members = {} if len(seeds) == 1 else {"members": len(seeds)}
    try:
        method = method_cls(cfg, spec, sources, device, seeds[0], **members)
    except (ConfigError, DatasetError):
        raise
    except ValueError as err:  # torch's optimizers reject e.g. a negative lr or weight decay
        changed = {
            k: v for k, v in dataclasses.asdict(cfg).items()
            if v != dataclasses.asdict(method_cls.Config()).get(k)
        }  # fmt: skip
        raise ConfigError(
            f"{method_cls.name}: a hyper-parameter is out of range ({err}); set here: "
            f"{changed or 'none, the defaults'}. Fix the value (--set KEY=VALUE, or the "
            "config's `set:`)."
        ) from None
    method.total_steps = steps
    return method


def pretrain(
    method: Method,
    seeds: Sequence[int],
    build: Callable[[Sources, int], Method],
    store: PretrainStore | None = None,
) -> tuple[list[dict[str, float]], tuple[float, float | None]]:
    """Each seed's ``Method.pretrain`` as its separate run does it: (each seed's logged
    scalars, the (wall, CPU) seconds earlier, stopped attempts spent on the work restored
    here: seeds kept in pretrain.pt, the part of a ratio fit its partial file kept
    (:func:`uniq.jobtimes.credit`); CPU None when a restored seed's file did not keep them).

    One seed: the method's own. K seeds: each member is built (``build(sources, seed)``) and
    pretrained exactly as a separate run with its seed (the same RNG calls in the same
    order, its own sampling stream), the K are stacked into the batched method
    (``Method.adopt``), then the global streams are set to the job's for the updates. With a
    ``store``, each finished seed but the last is saved there, and a seed found there is
    restored instead of pretrained again (a member depends on its own seed only).
    """
    earlier_s, earlier_cpu, restored = 0.0, 0.0, False
    take_credit()  # a fresh count: only this pretraining's restored work
    if method.members is None:
        logs = [method.pretrain()]
        earlier_s, earlier_cpu = take_credit()
    else:
        done = store.load() if store else {}
        plains, logs = [], []
        for k, s in enumerate(seeds):
            plains.append(build(method.data.with_generator(seed_everything(s, method.device)), s))
            log.info("pretraining seed %d (%d of %d)", s, k + 1, len(seeds))
            if s in done:
                if not restored:
                    store.restored()  # warns if the file was written on another setup
                restored = True
                plains[-1].load_state_dict(done[s]["state"])
                logs.append(done[s]["log"])
                earlier_s += done[s]["seconds"]
                cpu = done[s].get("cpu_seconds")  # absent: a file written before it was kept
                earlier_cpu = None if cpu is None or earlier_cpu is None else earlier_cpu + cpu
                log.info("pretraining of seed %d restored from %s", s, store.path)
                continue
            t0, cpu0 = time.perf_counter(), cpu_seconds()
            logs.append(plains[-1].pretrain())
            # work an earlier attempt did for this seed and this one restored (a ratio fit)
            credit_s, credit_cpu = take_credit()
            earlier_s += credit_s
            earlier_cpu = None if earlier_cpu is None else earlier_cpu + credit_cpu
            done[s] = dict(state=plains[-1].state_dict(), log=logs[-1],
                           seconds=credit_s + time.perf_counter() - t0,
                           cpu_seconds=credit_cpu + cpu_seconds() - cpu0)  # fmt: skip
            if store and s != seeds[-1]:
                store.save(done)
        method.adopt(plains)
        seed_everything(job_seed(seeds), method.device)
    logs = [{k: _scalar(v) for k, v in p.items()} for p in logs]
    _log_pretrain(seeds, logs)
    return logs, (earlier_s, earlier_cpu)


def _log_pretrain(seeds: list[int], logs: list[dict], where: str = "") -> None:
    """One line per seed of what its pretraining logged (SafeDICE's alpha, the classifiers'
    losses...)."""
    for s, p in zip(seeds, logs, strict=True):
        if p:
            values = ", ".join(f"{k}={v:.4g}" for k, v in p.items())
            log.info("pretrain (seed %d%s): %s", s, where, values)


def _batches(method: Method) -> dict[str, tuple[str, int]]:
    wanted = method.batches()
    for key, (source, n) in wanted.items():
        if source not in SOURCES or int(n) < 1:
            raise ConfigError(
                f"{type(method).__name__}.batches() asks for {key}: ({source!r}, {n}); "
                f"sources are {SOURCES} and sizes must be >= 1"
            )
    return wanted


# ---------------------------------------------------------------------------- periodic evaluation
class CurveEvaluation:
    """Every ``every`` steps (and at the last), each seed's current policy on that seed's
    evaluation episodes: one ``curve.csv`` row per seed (``every`` = 0: never).

    The reference returns (R_min, R_max) are read here, before training, so a bad
    ``--reference`` fails at once rather than at the first evaluation. An evaluation leaves
    every random stream of the training as it found it.
    """

    def __init__(self, every: int, spec, episodes: int, num_envs: int, reference_paths=()):
        self.every, self.spec, self.episodes, self.num_envs = every, spec, episodes, num_envs
        self.enabled = every > 0
        self.reference = (
            registry.evaluation().reference_returns(list(reference_paths))
            if self.enabled and reference_paths
            else None
        )

    def due(self, step: int, steps: int) -> bool:
        return self.enabled and (step % self.every == 0 or step == steps)

    def __call__(
        self, method: Method, seeds: Sequence[int], step: int, generator: torch.Generator
    ) -> list[dict[str, Any]]:
        rows = []
        for k, s in enumerate(seeds):
            with rng_preserved(generator):
                rows.append(
                    registry.evaluation().curve_point(
                        method.deployable_policy(k),
                        method.device,
                        self.spec,
                        step,
                        self.episodes,
                        s,
                        self.num_envs,
                        self.reference,
                    )  # fmt: skip
                )
        return rows


# ---------------------------------------------------------------------------- small helpers
class _Clock:
    """The job's wall time (``before``: the seconds before now) and CPU time (``cpu_before``:
    the CPU seconds of the job's earlier pieces, None if not known; this piece counts its
    whole process, data loading included, as Snakemake's benchmark does), and update rate."""

    def __init__(self, before: float, cpu_before: float | None, step: int):
        self.before, self.cpu_before, self.start = before, cpu_before, time.perf_counter()
        self.window, self.window_step = self.start, step
        self.mark, self.mark_step = self.start, step

    def rate_since_mark(self, step: int) -> float:
        """Updates per second since the last call (the first: since this piece began)."""
        now = time.perf_counter()
        rate = (step - self.mark_step) / max(now - self.mark, 1e-9)
        self.mark, self.mark_step = now, step
        return rate

    def wall(self) -> float:
        return self.before + time.perf_counter() - self.start

    def seconds(self) -> tuple[float, float | None]:
        """(wall, CPU) seconds of the job so far, as a checkpoint keeps them."""
        return self.wall(), carried_cpu(self.cpu_before)

    def lap(self, step: int) -> tuple[float, float]:
        """(wall time, updates per second since the last lap)."""
        now = time.perf_counter()
        rate = (step - self.window_step) / max(now - self.window, 1e-9)
        self.window, self.window_step = now, step
        return self.before + now - self.start, rate


def _host(resolved: dict[str, Any], dev: torch.device) -> dict[str, Any]:
    """Where this piece of the job runs, as its checkpoint records it: the hardware the
    numbers depend on (the GPU's model, not the index the allocator happened to give; the
    CPU's vector instructions torch dispatches to), threads, torch and the commit."""
    if dev.type == "cuda":
        major, minor = torch.cuda.get_device_capability(dev)
        device = f"cuda {torch.cuda.get_device_name(dev)} (sm_{major}{minor})"
    else:
        device = f"cpu {torch.backends.cpu.get_cpu_capability()}"
    return dict(device=device, threads=resolved["threads"], torch=torch.__version__,
                commit=resolved["git_commit"])  # fmt: skip


def _remove_stale_temps(folders) -> None:
    """A kill mid-write leaves ``.NAME.*.tmp`` files of the atomic writes."""
    for folder in folders:
        for name in (CHECKPOINT, PRETRAIN, "policy.pt", "config.yaml"):
            for stale in folder.glob(f".{name}.*.tmp"):
                stale.unlink(missing_ok=True)


def _save_policy(policy, path, meta) -> None:
    from uniq.nets import save_policy

    save_policy(policy, path, meta)


def _scalar(v: Any) -> float:
    return float(v.item() if isinstance(v, torch.Tensor) else v)


def _log_progress(label: str, step: int, steps: int, rate: float) -> None:
    left = (steps - step) / rate if rate > 0 else float("inf")
    when = f"{left / 60:.0f} min" if left < 5400 else f"{left / 3600:.1f} h"
    log.info("%s: step %d of %d, %.3g updates/s, about %s left", label, step, steps, rate, when)


def _progress_bar(total: int, initial: int, label: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, desc=label, disable=not enabled, mininterval=2.0,
        dynamic_ncols=True,
    )  # fmt: skip
