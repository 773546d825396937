"""The one GPU allocator: which device a training or demonstrator job runs on.

Snakemake only counts ``gpu`` resources; it does not say *which* GPU a job gets. Each job
therefore claims a slot here when its CLI is given ``--device auto``:

- the candidate GPUs are the ones torch sees, i.e. those ``CUDA_VISIBLE_DEVICES`` exposes
  (lock names use the physical id from that variable, so jobs started with different
  masks on one host still coordinate);
- each GPU has ``UNIQ_JOBS_PER_GPU`` slots (default 4: small MLPs leave a GPU mostly idle,
  so several jobs share one); a slot is an exclusive ``flock`` on a file in
  ``UNIQ_GPU_LOCK_DIR`` (default ``results/.gpu_locks``). The kernel drops the lock when
  the process exits, so a killed job never leaves a stale claim;
- slots are filled breadth first (slot 0 of every GPU before slot 1 of any), spreading jobs;
- when no slot is free (or no GPU exists) the job waits up to ``UNIQ_GPU_WAIT_S`` seconds
  (default 0), then falls back to the CPU with a logged warning, or raises
  :class:`NoGpuError` when fallback is forbidden (``allow_cpu_fallback=False`` or
  ``UNIQ_GPU_REQUIRED=1``).

Use::

    with device_for("auto") as device:   # torch.device("cuda:1") or torch.device("cpu")
        run(device)
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import torch

log = logging.getLogger(__name__)

DEFAULT_LOCK_DIR = "results/.gpu_locks"
DEFAULT_JOBS_PER_GPU = 4


class NoGpuError(RuntimeError):
    """No GPU slot could be claimed and CPU fallback was forbidden."""


@dataclass
class GpuLease:
    """A claimed device. ``release()`` (or leaving the ``with`` block) frees its slot."""

    device: torch.device
    lock_path: Path | None = None
    _handle: IO | None = field(default=None, repr=False)

    def release(self) -> None:
        """Give the slot back (closing the file drops the flock)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> torch.device:
        return self.device

    def __exit__(self, *exc) -> None:
        self.release()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer; set it to e.g. {default}") from None
    return value


def visible_gpus() -> list[tuple[int, str]]:
    """``[(torch index, physical id)]`` of the GPUs this process may use.

    torch already restricts itself to ``CUDA_VISIBLE_DEVICES``; the physical id (the mask's
    entry, an index or a UUID) names the lock so that all jobs on a host agree on it.
    """
    count = torch.cuda.device_count()
    mask = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    ids = mask if "CUDA_VISIBLE_DEVICES" in os.environ else []
    return [(i, ids[i] if i < len(ids) else str(i)) for i in range(count)]


def _try_lock(path: Path) -> IO | None:
    handle = open(path, "a+")  # held open for the lease's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n")
    handle.flush()
    return handle


def acquire_gpu(
    *,
    allow_cpu_fallback: bool | None = None,
    jobs_per_gpu: int | None = None,
    lock_dir: str | os.PathLike | None = None,
    wait_s: float | None = None,
    poll_s: float = 1.0,
) -> GpuLease:
    """Claim a free GPU slot; a CPU lease (with a warning) when none is free, or NoGpuError.

    Arguments left ``None`` come from the environment: ``UNIQ_GPU_REQUIRED`` (1 forbids the
    CPU fallback), ``UNIQ_JOBS_PER_GPU``, ``UNIQ_GPU_LOCK_DIR``, ``UNIQ_GPU_WAIT_S``.
    """
    if allow_cpu_fallback is None:
        allow_cpu_fallback = os.environ.get("UNIQ_GPU_REQUIRED", "0") in ("", "0")
    jobs_per_gpu = jobs_per_gpu or _env_int("UNIQ_JOBS_PER_GPU", DEFAULT_JOBS_PER_GPU)
    if jobs_per_gpu < 1:
        raise ValueError(f"jobs_per_gpu must be >= 1 (got {jobs_per_gpu}); set UNIQ_JOBS_PER_GPU")
    lock_dir = Path(lock_dir or os.environ.get("UNIQ_GPU_LOCK_DIR") or DEFAULT_LOCK_DIR)
    wait_s = float(os.environ.get("UNIQ_GPU_WAIT_S", "0") or 0) if wait_s is None else wait_s

    gpus = visible_gpus()
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())
    if gpus:
        lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while gpus:
        for slot in range(jobs_per_gpu):  # breadth first: spread jobs over the GPUs
            for index, physical in gpus:
                name = re.sub(r"[^A-Za-z0-9_.-]", "_", physical)
                path = lock_dir / f"{host}.gpu{name}.slot{slot}.lock"
                handle = _try_lock(path)
                if handle is not None:
                    log.info("using GPU cuda:%d (physical %s, slot %d)", index, physical, slot)
                    return GpuLease(torch.device(f"cuda:{index}"), path, handle)
        if time.monotonic() >= deadline:
            break
        time.sleep(poll_s)

    if not gpus:
        reason = (
            "no CUDA device is visible (torch.cuda.device_count() == 0, "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')})"
        )
    else:
        reason = (
            f"all {len(gpus)} GPU(s) x {jobs_per_gpu} slots are taken (locks in {lock_dir}; "
            "raise UNIQ_JOBS_PER_GPU or UNIQ_GPU_WAIT_S, or lower Snakemake's --resources gpu=N)"
        )
    if not allow_cpu_fallback:
        raise NoGpuError(
            f"{reason}; a GPU is required (--device cuda or UNIQ_GPU_REQUIRED=1). "
            "Run with --device cpu, or --device auto without UNIQ_GPU_REQUIRED, to use the CPU."
        )
    log.warning("%s: falling back to the CPU", reason)
    return GpuLease(torch.device("cpu"))


@contextlib.contextmanager
def device_for(spec: str = "auto") -> Iterator[torch.device]:
    """The device a CLI's ``--device`` value names, held for the ``with`` block.

    ``auto``: a GPU slot from :func:`acquire_gpu`, else the CPU with a warning;
    ``cuda``: a GPU slot, NoGpuError when none is free; ``cpu`` or ``cuda:N``: as given.
    """
    if spec == "auto":
        lease = acquire_gpu()
    elif spec == "cuda":
        lease = acquire_gpu(allow_cpu_fallback=False)
    else:
        lease = GpuLease(torch.device(spec))
    with lease as device:
        yield device
