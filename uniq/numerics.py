"""Portable floating point: the committed demonstrators give the same bytes on any x86-64 CPU.

Why this exists. The math libraries pick SIMD code paths by CPU at run time, and the paths
round differently. Two were found to change the data (measured 2026-12-06 on an AVX-512
AMD EPYC, by turning each path off in turn; ``tests/test_portability.py``):

- numpy's transcendental ufuncs (the SVML loops numpy 1.23 dispatches on AVX512_SKX, used
  by safety-gymnasium's layout, lidar and physics glue): with them a random-policy
  CarGoal1 run has return / cost -1.46 / 20.8 over 50 episodes, without them -1.66 / 24.6,
  the numbers an AVX2-only machine measured;
- MKL's sgemm under torch's ``Linear`` (a demonstrator's forward pass): its AVX-512 and AVX2
  kernels sum in different orders.

The fix pins both to paths every x86-64-v3 CPU (AVX2 + FMA: Intel since 2013, AMD since
2015) runs the same way:

- :func:`pin_numpy`, on import of ``uniq`` (so before numpy loads, in every process the suite
  starts): ``NPY_DISABLE_CPU_FEATURES`` lists the AVX-512 groups this CPU has, so numpy
  dispatches no higher than AVX2. Env stepping does not measurably slow down.
- :func:`pin_torch`, by the subcommands that roll a policy out (collect, evaluate, the
  demonstrator checks): MKL's conditional numerical reproducibility
  (``MKL_CBWR=COMPATIBLE``) on one thread and ATen's kernels at ``avx2``. It roughly halves
  sgemm speed, which a 16-row rollout forward pass does not notice, so training processes are not pinned
  (training is not bit-reproducible across CPUs anyway; the data it reads are).

What stays machine-dependent: a CPU below x86-64-v3, another architecture (ARM), another
glibc (its libm picks FMA or non-FMA variants) and training itself. :func:`status` says
whether this process runs pinned; rollouts record it, and ``uniq-bench fingerprint``
checks this machine against the committed rollout checksums.

Only the standard library is imported here: :func:`pin_numpy` must run before numpy loads.
"""

from __future__ import annotations

import os
import sys

NUMPY_AVX512_GROUPS = {
    # numpy's dispatch group -> the /proc/cpuinfo flags it needs
    "AVX512F": {"avx512f"},
    "AVX512CD": {"avx512f", "avx512cd"},
    "AVX512_SKX": {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"},
    "AVX512_CLX": {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni"},
    "AVX512_CNL": {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512ifma",
                   "avx512vbmi"},
    "AVX512_ICL": {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512ifma",
                   "avx512vbmi", "avx512_vnni", "avx512_vbmi2", "avx512_bitalg",
                   "avx512_vpopcntdq"},
}  # fmt: skip
"""numpy names a group only if the CPU has it: disabling a missing one warns at every import."""

OFF = "UNIQ_PORTABLE_NUMERICS"
"""Set to 0 to run the CPU's fastest paths (results then depend on the CPU)."""


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _disabled_off() -> bool:
    return os.environ.get(OFF, "1") == "0"


def pin_numpy() -> None:
    """Keep numpy's dispatch at or below AVX2 (adds to the user's own NPY_DISABLE_CPU_FEATURES).

    A no-op once numpy is loaded (its dispatch is fixed at import; :func:`status` tells)."""
    if _disabled_off() or "numpy" in sys.modules:
        return
    flags = _cpu_flags()
    groups = [g for g, needs in NUMPY_AVX512_GROUPS.items() if needs <= flags]
    # An inherited value (a SLURM job started from a node with AVX-512) may name groups this
    # CPU lacks: numpy would warn at every import, so they are dropped here.
    mine = [
        g for g in os.environ.get("NPY_DISABLE_CPU_FEATURES", "").replace(",", " ").split()
        if g not in NUMPY_AVX512_GROUPS or g in groups
    ]  # fmt: skip
    wanted = mine + [g for g in groups if g not in mine]
    if wanted or "NPY_DISABLE_CPU_FEATURES" in os.environ:
        os.environ["NPY_DISABLE_CPU_FEATURES"] = " ".join(wanted)


def pin_torch() -> None:
    """Pin MKL's sgemm and ATen's kernels to CPU-independent paths, before torch's first op."""
    if _disabled_off():
        return
    os.environ["MKL_CBWR"] = "COMPATIBLE"
    if "avx2" in _cpu_flags():
        os.environ["ATEN_CPU_CAPABILITY"] = "avx2"
    # One thread: MKL's reproducible mode holds for a fixed thread count only, and a rollout's
    # 16-row forward pass gains nothing from threads (measured: 0.13 ms on one thread, 33 ms
    # of CPU on two threads of a loaded machine, spinning).
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def status() -> dict[str, bool]:
    """Which pins this process runs under: ``numpy`` (no AVX-512 loops active) and ``torch``
    (MKL and ATen pinned; the variables are read at torch's first op, so set them before)."""
    numpy_ok = True
    if "numpy" in sys.modules:
        from numpy.core._multiarray_umath import __cpu_features__

        numpy_ok = not any(__cpu_features__.get(g, False) for g in NUMPY_AVX512_GROUPS)
    torch_ok = os.environ.get("MKL_CBWR") == "COMPATIBLE" and (
        os.environ.get("ATEN_CPU_CAPABILITY") == "avx2" or "avx2" not in _cpu_flags()
    )
    if "torch" in sys.modules:
        import torch

        torch_ok = (
            torch_ok
            and torch.backends.cpu.get_cpu_capability() in ("AVX2", "DEFAULT")
            and torch.get_num_threads() == 1
        )
    return {"numpy": numpy_ok, "torch": torch_ok}
