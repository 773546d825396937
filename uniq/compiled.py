"""Compiled updates: the one switch between a method's eager update and its compiled one.

A method with a ``compile`` config field splits its update in two: a pure function that
returns the update's loss (and the scalars it logs), and the eager rest (one backward, the
optimizer steps, Polyak targets). :func:`compiled` compiles the first with
``torch.compile`` (inductor: fused C++ loops for the elementwise work on a CPU, Triton on a
GPU, and a generated backward), and :func:`adam` makes the optimizers fused (one kernel per
step, not a dozen ops per parameter): on one CPU thread an update then spends nearly all its
time in sgemm (``benchmarks/update_speed.py`` prints the share).

Same numbers: random draws inside the compiled function stay ATen's (inductor's
``fallback_random``), so the compiled update draws exactly the eager update's noise from the
same streams; what differs is the order of float operations in fused kernels and Adam's
(tested: compiled vs eager within :data:`TOLERANCE` after several updates, one seed and
seeds batched). With ``compile: false`` the update is the eager one, bit for bit.

Warm-up: the first update compiles (seconds to tens of seconds on a CPU, less when the
on-disk inductor cache already holds the graphs); it happens inside the training job, so a
job's wall time includes it. Without a working C++ compiler (inductor's CPU backend needs
one) or when compiling fails, the method logs a warning and runs eagerly: the numbers are
then the eager ones.
"""

from __future__ import annotations

import functools
import logging
import shutil
from collections.abc import Callable, Iterable
from typing import Any

import torch

log = logging.getLogger(__name__)

TOLERANCE = dict(rtol=1e-4, atol=1e-5)
"""Compiled vs eager: the logged scalars (losses, values, weights) of the same updates agree
within this (``torch.testing.assert_close``); they differ by float32 rounding of reordered
sums. Parameters agree within this plus ``updates * lr`` absolute (:func:`param_atol`)."""


def param_atol(lr: float, updates: int) -> float:
    """How far compiled and eager parameters may drift apart in ``updates`` Adam steps.

    Adam moves an element by about lr whatever its gradient's size, so where a gradient
    cancels to rounding noise the sign of that noise picks the step, in the eager update
    as in the compiled one: SafeDICE's nu output bias has gradient gamma E[1 - done] - 1 +
    (1 - gamma) = 0 without terminals (measured: 1.8e-4 apart after 5 steps at lr 1e-4)."""
    return TOLERANCE["atol"] + updates * lr


@functools.cache
def available(device_type: str = "cpu") -> str | None:
    """None if ``torch.compile`` can run on ``device_type`` here, else why not."""
    if device_type == "cpu":
        from torch._inductor import cpp_builder

        try:
            compiler = cpp_builder.get_cpp_compiler()
        except Exception as err:  # noqa: BLE001 (any failure means: no compiler)
            return f"no C++ compiler for inductor ({err})"
        if not shutil.which(str(compiler).split()[0]):
            return f"no C++ compiler for inductor ({compiler!r} not found)"
    return None


def compiled(fn: Callable, enabled: bool, device: torch.device, name: str) -> Callable:
    """``fn`` compiled with ``torch.compile`` when ``enabled`` and possible, else ``fn``.

    Shapes are fixed for a run (``dynamic=False``: one specialised graph, no symbolic
    shapes). If compiling fails at the first call, the failure is logged and ``fn`` runs
    eagerly from then on (the first call included).
    """
    if not enabled:
        return fn
    why = available(torch.device(device).type)
    if why is not None:
        log.warning("%s: compile requested but %s: running eagerly", name, why)
        return fn
    fast = torch.compile(fn, dynamic=False, options={"fallback_random": True})
    state = {"fn": None}

    def call(*args: Any, **kwargs: Any):
        if state["fn"] is not None:
            return state["fn"](*args, **kwargs)
        try:
            out = fast(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 (compile errors come in many types)
            if not _is_compile_error(err):
                raise
            log.warning("%s: torch.compile failed (%s): running eagerly", name, err)
            state["fn"] = fn
            return fn(*args, **kwargs)
        state["fn"] = fast
        return out

    return call


def _is_compile_error(err: Exception) -> bool:
    """An error of the compiler (dynamo, inductor, the C++ build), not of the update."""
    module = type(err).__module__ or ""
    return module.startswith(("torch._dynamo", "torch._inductor", "torch._functorch")) or (
        "CppCompileError" in type(err).__name__
    )


def adam(params: Iterable[torch.nn.Parameter], compile: bool, **kwargs: Any) -> torch.optim.Adam:
    """``torch.optim.Adam(params, **kwargs)``; fused (one kernel per step) for a compiled
    update. The eager update keeps torch's default implementation, so its numbers stay
    those of every earlier run."""
    return torch.optim.Adam(params, fused=True if compile else None, **kwargs)
