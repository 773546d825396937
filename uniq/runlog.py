"""A run's logs: the CSV files written while it trains, the metrics averaged into them, and
the divergence guard that reads those metrics.

- :class:`CsvLog`: an append-only CSV written as ``NAME.part`` and renamed to ``NAME`` when
  the run ends, so a file named ``train_log.csv`` (or ``curve.csv``) is always complete.
- :class:`Metrics`: the per-step scalars ``Method.update`` returns, kept on the device until
  :meth:`Metrics.flush` reads every pending step back in one copy, averaged per seed for
  the log, and checked there: a NaN or inf raises :class:`TrainingDiverged` naming the key
  and the first bad step (:func:`check_finite`, the divergence guard).
- :class:`RunLogs`: each seed's train_log.csv and curve.csv and the job's metrics together,
  with the state a checkpoint keeps of them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


class TrainingDiverged(RuntimeError):
    """A logged loss became NaN or infinite; the message names the step and the key."""


class CsvLog:
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

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the columns and the text so far."""
        return {"columns": self.columns, "text": self.text()}

    @classmethod
    def resumed(cls, path: Path, state: dict[str, Any] | None) -> CsvLog:
        """The log again from a checkpoint's :meth:`state` (None: nothing written yet)."""
        return cls(path, state["columns"], state["text"]) if state else cls(path)

    def close(self) -> None:
        self.file.close()

    def finish(self) -> None:
        self.file.close()
        os.replace(self.part, self.path)


def _fmt(x: Any) -> str:
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def check_finite(x: float, key: str, step: int, algo: str, seed: int | None) -> None:
    """The divergence guard: raise :class:`TrainingDiverged` if ``x`` is NaN or infinite."""
    if math.isfinite(x):
        return
    member = "" if seed is None else f" for seed {seed}"
    raise TrainingDiverged(
        f"training diverged: {algo} returned {key} = {x} at step {step}{member}. Outputs were "
        "not written; the last good checkpoint (if any) is kept. Check the datasets and lower "
        "the learning rates (--set ...)."
    )


class Metrics:
    """Per-step scalars from ``update``: checked for NaN/inf and averaged for the log.

    Values stay on the device until ``flush`` reads all pending steps back in one copy. A
    method batched over K seeds returns ``[K]`` values, one per seed; one seed is a batch of
    one. Each seed's values are averaged apart.
    """

    def __init__(
        self,
        device: torch.device,
        seeds: Sequence[int],
        algo: str,
        state: list[dict] | None = None,
    ):
        self.device, self.seeds, self.algo = device, list(seeds), algo
        states = state or [{}] * len(self.seeds)
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

    def flush(self) -> None:
        """Read the pending steps back (one device sync), guard them and add them up."""
        if not self.pending:
            return
        flat = torch.cat([v.flatten() for _, _, v in self.pending]).cpu().tolist()
        named = len(self.seeds) > 1  # a one-seed run's message names no seed, as always
        i = 0
        for step, keys, _ in self.pending:
            for key in keys:
                for k, (sums, counts) in enumerate(zip(self.sums, self.counts, strict=True)):
                    x = flat[i]
                    i += 1
                    if not math.isfinite(x):
                        self.pending.clear()
                        check_finite(x, key, step, self.algo, self.seeds[k] if named else None)
                    sums[key] = sums.get(key, 0.0) + x
                    counts[key] = counts.get(key, 0) + 1
        self.pending.clear()

    def means(self, k: int = 0) -> dict[str, float]:
        """Seed ``k``'s means since the last call (and reset them)."""
        sums, counts = self.sums[k], self.counts[k]
        out = {key: sums[key] / counts[key] for key in sorted(sums)}
        sums.clear()
        counts.clear()
        return out

    def state(self) -> list[dict]:
        return [
            {"sums": dict(s), "counts": dict(c)}
            for s, c in zip(self.sums, self.counts, strict=True)
        ]


class RunLogs:
    """Each seed's ``train_log.csv`` and (with ``curves``) ``curve.csv`` in its folder of
    ``outs``, and the job's :class:`Metrics` (``algo`` names the method in the guard's message).

    ``saved``: a checkpoint's :meth:`state` to resume from (None: a fresh run).
    """

    def __init__(
        self,
        outs: Sequence[Path],
        seeds: Sequence[int],
        device: torch.device,
        algo: str,
        curves: bool,
        saved: dict[str, list] | None = None,
    ):
        n = len(outs)
        saved = saved or {"metrics": None, "log": [None] * n, "curve": [None] * n}
        self.metrics = Metrics(device, seeds, algo, saved["metrics"])
        self.train = [
            CsvLog.resumed(out / "train_log.csv", s)
            for out, s in zip(outs, saved["log"], strict=True)
        ]
        self.curves = (
            [
                CsvLog.resumed(out / "curve.csv", s)
                for out, s in zip(outs, saved["curve"], strict=True)
            ]
            if curves
            else []
        )

    def write_train(self, step: int, wall_time_s: float, updates_per_s: float) -> dict[str, Any]:
        """Each seed's means since the last row as a train_log.csv row; returns the last row."""
        self.metrics.flush()
        for k, csv in enumerate(self.train):
            row = {"step": step, **self.metrics.means(k)}
            row["wall_time_s"] = wall_time_s
            row["updates_per_s"] = updates_per_s
            csv.write(row)
        return row

    def write_curve(self, rows: Sequence[dict[str, Any]]) -> None:
        for csv, row in zip(self.curves, rows, strict=True):
            csv.write(row)

    def state(self) -> dict[str, list]:
        """What a checkpoint keeps: the metrics so far and the text of every log."""
        return {
            "metrics": self.metrics.state(),
            "log": [c.state() for c in self.train],
            "curve": [c.state() for c in self.curves] if self.curves else [None] * len(self.train),
        }

    def close(self) -> None:
        for c in [*self.train, *self.curves]:
            c.close()

    def finish(self) -> None:
        """Rename every ``.part`` file to its name: the run's logs are complete."""
        for c in [*self.train, *self.curves]:
            c.finish()
