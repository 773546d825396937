"""A training job's checkpoint: everything a resumed run needs to end bit for bit where an
uninterrupted one would (same device, thread count and torch).

``checkpoint.pt`` holds the run's identity (what must match to resume it: algorithm, task,
seeds, config, dataset checksums, observation standardisation; the step count may grow),
how its learning curve is evaluated (which must match too: the curve.csv goes on), the
step, the method's state (networks and optimizers), every random stream
(:func:`uniq.seeding.rng_state`), each seed's pretraining log, the wall and CPU seconds so
far (what the job's time counts over its pieces: :mod:`uniq.jobtimes`), the logs written so
far (:meth:`uniq.runlog.RunLogs.state`) and where it was written (``host``: device, threads,
torch, commit). It is written atomically (a temp file and a rename), after pretraining,
every ``checkpoint_every`` steps and at the end. Per-seed fields are lists, one entry per
seed of the job; one seed is a list of one.

A resume on another device, thread count or torch than the checkpoint's goes on (a job may
move machines) with a warning: the floating-point sums, and so the numbers, may differ
from an uninterrupted run's from there on.

A job of several seeds pretrains them one after another (each as its own run would), which
at the paper's sizes takes hours (SafeDICE: 100k classifier steps a seed); ``pretrain.pt``
(:class:`PretrainStore`) keeps each seed's finished pretraining until the first checkpoint,
so a job stopped part-way resumes at the next seed, not at the first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from uniq.atomic import atomic_path
from uniq.method import ConfigError, Method
from uniq.runlog import RunLogs
from uniq.seeding import rng_state, set_rng_state

log = logging.getLogger(__name__)

NAME = "checkpoint.pt"
PRETRAIN_NAME = "pretrain.pt"
PER_SEED = ("pretrain", "metrics", "log", "curve")
"""The fields holding one entry per seed."""


def read_saved(path: Path, fix: str, **load_kw) -> Any:
    """``torch.load`` of a file a run saved (checkpoint, pretraining, ratio fit or its cache);
    one that cannot be read (damaged by a copy, cut short by a full disk: the suite's own
    writes are whole or nothing) is a :class:`ConfigError` naming it and ``fix``."""
    load_kw.setdefault("map_location", "cpu")
    try:
        return torch.load(path, weights_only=False, **load_kw)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds on a damaged file
        raise ConfigError(f"{path} cannot be read ({type(err).__name__}: {err}); {fix}") from err


START_OVER = "delete it and the job starts over from the beginning"


@dataclass
class Resume:
    """Where a checkpoint left off: the step, each seed's pretraining log, the wall and CPU
    seconds so far (CPU None: a checkpoint written before they were kept), and the logs'
    saved state (for :class:`uniq.runlog.RunLogs`)."""

    step: int
    pretrain: list[dict[str, float]]
    wall_time_s: float
    cpu_time_s: float | None
    logs: dict[str, list]


class Checkpoint:
    """``folder/checkpoint.pt`` of the job whose identity is ``identity``; ``curve``: how its
    learning curve is evaluated (``every`` updates, on ``episodes`` episodes; every 0: none),
    which may not change while a curve.csv is being written; ``host`` (set once the device
    is resolved, before any save or restore): where this piece runs."""

    def __init__(self, folder: Path, identity: dict[str, Any], curve: dict[str, int]):
        self.path, self.identity, self.curve = Path(folder) / NAME, identity, curve
        self.host: dict[str, Any] = {}

    def load(self, steps: int) -> dict[str, Any] | None:
        """The saved state if there is one (checked against this job; ``steps``: the run's
        length, which may grow but not shrink), else None."""
        if not self.path.exists():
            return None
        state = _upgrade(read_saved(self.path, START_OVER))
        _same_job(self.path, state, self.identity)
        _same_curve(self.path, state, self.curve)
        if state["step"] > steps:
            raise ConfigError(
                f"{self.path} is at step {state['step']} > --steps {steps}; delete it to retrain "
                "for fewer steps."
            )
        return state

    def restore(self, state: dict[str, Any], method: Method, generator: torch.Generator) -> Resume:
        """Put the method and every random stream back as saved; return where the run was."""
        warn_if_moved(self.path, state.get("host"), self.host)
        method.load_state_dict(state["method"])
        set_rng_state(state["rng"], generator)
        logs = {k: state[k] for k in ("metrics", "log", "curve")}
        cpu = state.get("cpu_time_s")
        return Resume(state["step"], state["pretrain"], state["wall_time_s"], cpu, logs)

    def save(
        self,
        step: int,
        seconds: tuple[float, float | None],
        method: Method,
        generator: torch.Generator,
        pretrain: list[dict[str, float]],
        logs: RunLogs,
    ) -> None:
        """``seconds``: the job's (wall, CPU) seconds so far (CPU None: not known)."""
        logs.metrics.flush()  # never checkpoint past a non-finite loss
        state = {
            "identity": self.identity,
            "curve_settings": self.curve,
            "host": self.host,
            "step": step,
            "method": method.state_dict(),
            "rng": rng_state(generator),
            "pretrain": pretrain,
            "wall_time_s": seconds[0],
            "cpu_time_s": seconds[1],
            **logs.state(),
        }
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)


class PretrainStore:
    """``folder/pretrain.pt`` of the job whose identity is ``identity``: seed -> that seed's
    pretrained method (``state``, as :meth:`Method.state_dict`), its pretraining ``log``,
    the wall ``seconds`` and ``cpu_seconds`` it took. Written after each seed but the last;
    removed once the job's first checkpoint (which holds them all) is written. ``host``: as
    :class:`Checkpoint`'s."""

    def __init__(self, folder: Path, identity: dict[str, Any]):
        self.path, self.identity = Path(folder) / PRETRAIN_NAME, identity
        self.host: dict[str, Any] = {}
        self._seeds: dict[int, dict[str, Any]] | None = None
        self._host: dict[str, Any] | None = None

    def load(self) -> dict[int, dict[str, Any]]:
        """The saved seeds (checked against this job; read once), else {}."""
        if self._seeds is None:
            self._seeds = {}
            if self.path.exists():
                saved = read_saved(self.path, "delete it and the seeds pretrain again")
                _same_job(self.path, saved, self.identity)
                self._seeds = saved["seeds"]
                self._host = saved.get("host")
        return self._seeds

    def restored(self) -> None:
        """Seeds are taken from the file: warn if it was written elsewhere."""
        warn_if_moved(self.path, self._host, self.host)

    def save(self, seeds: dict[int, dict[str, Any]]) -> None:
        with atomic_path(self.path) as tmp:
            torch.save({"identity": self.identity, "host": self.host, "seeds": seeds}, tmp)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _same_job(path: Path, saved: dict[str, Any], identity: dict[str, Any]) -> None:
    old = saved.get("identity", {})
    diff = sorted(k for k in identity if old.get(k) != identity[k])
    if diff:
        raise ConfigError(
            f"{path} was written by a different run (differs in: {', '.join(diff)}). "
            "Delete it to start over, or choose another --out."
        )


def _same_curve(path: Path, saved: dict[str, Any], curve: dict[str, int]) -> None:
    """A resumed run appends to its curve.csv: refuse a change of how the curve is evaluated
    (at the run's last step nothing would be appended, and config.yaml would name the new
    settings over the old curve). A checkpoint written before the settings were kept cannot
    say how its curve was evaluated: it is refused only when curves are asked for and it had
    none, and otherwise resumed unchecked. Either way a change before the first point that
    either setting puts on the curve is allowed: the curve is whole all the same."""
    old = saved.get("curve_settings")
    if old is None:
        had_curves = any(saved.get("curve") or [])  # a curve log's state, per seed, or None
        if not curve["every"] or had_curves:
            return
        old = {"every": 0, "episodes": 0}

    def points(c: dict[str, int]) -> int:  # points due by the checkpoint's step
        return saved["step"] // c["every"] if c["every"] else 0

    if old == curve or points(old) == points(curve) == 0:
        return

    def how(c: dict[str, int]) -> str:
        if not c["every"]:
            return "no learning curve"
        return f"a learning curve every {c['every']} updates on {c['episodes']} episode(s)"

    raise ConfigError(
        f"{path} was trained with {how(old)}; the config asks for {how(curve)}, and a resumed "
        "run's curve.csv cannot change. Set train.eval_every and train.eval_episodes back, or "
        "delete it and the job starts over from the beginning."
    )


MOVES = ("device", "threads", "torch")
"""Host fields whose change can change the numbers of a resumed run (float sums' order)."""


def warn_if_moved(path: Path, saved: dict[str, Any] | None, host: dict[str, Any]) -> None:
    """Log where this piece's setup differs from the one that wrote ``path``: a warning for
    what can change the numbers (:data:`MOVES`), a note for another commit (the numbers
    stay the same unless the change touched them). Files written before the host was
    kept (``saved`` None) say nothing."""
    if not saved or not host:
        return
    moved = [f"{k} {saved.get(k)} -> {host.get(k)}" for k in MOVES if saved.get(k) != host.get(k)]
    if moved:
        log.warning(
            "%s was written on another setup (%s): the run goes on from it, but its numbers "
            "may differ from a run trained there without a stop.", path, ", ".join(moved),
        )  # fmt: skip
    if saved.get("commit") != host.get("commit"):
        log.info(
            "%s was written at commit %s, this is %s: the run matches an uninterrupted one "
            "unless the change touched its numbers.", path, saved.get("commit"), host.get("commit"),
        )  # fmt: skip


def _upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of a one-seed run written before per-seed fields were always lists
    (its fields held that seed's values directly) in today's form, so it still resumes."""
    if isinstance(state.get("pretrain"), list):
        return state
    state = dict(state, **{k: [state.get(k)] for k in PER_SEED})
    identity = dict(state.get("identity", {}))
    if isinstance(identity.get("seed"), int):
        identity["seed"] = [identity["seed"]]
    return dict(state, identity=identity)
