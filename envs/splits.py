"""Build a variant's ``un.h5`` and ``mix.h5`` from the safe and unsafe rollouts.

- ``D_UN``: ``n_un`` unsafe trajectories (``is_desirable = 0``);
- ``D_MIX``: ``n_mix_desirable`` safe trajectories (``is_desirable = 1``) and
  ``n_mix_undesirable`` unsafe ones (0), shuffled by trajectory;
- no trajectory is used twice: the unsafe trajectories of ``D_UN`` and ``D_MIX`` are two
  disjoint blocks of one permutation.

Deterministic for a seed: ``rng = np.random.default_rng(seed)`` draws, in this order, the
permutation of the safe trajectories, the permutation of the unsafe ones, and the order of
``D_MIX``. Unsafe trajectories ``perm[:n_un]`` form ``D_UN`` and
``perm[n_un:n_un + n_mix_undesirable]`` go to ``D_MIX``.

Before splitting, the demonstrators' gap is checked: the safe rollouts' mean episode cost
must be below the unsafe ones' by at least ``min_cost_gap`` (relative to the unsafe mean);
otherwise the learners would be asked to tell apart two equally (un)safe behaviours.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from envs.tasks import TaskSpec, resolve_task
from uniq.data import DatasetError, OfflineData


class SplitError(ValueError):
    """A split that cannot be built; the message names the numbers and the fix."""


def check_gap(safe: OfflineData, unsafe: OfflineData, min_cost_gap: float = 0.25) -> None:
    """Fail unless ``mean C_safe <= (1 - min_cost_gap) mean C_unsafe`` (and C_unsafe > 0)."""
    c_safe = float(safe.episode_costs().mean())
    c_unsafe = float(unsafe.episode_costs().mean())
    if not (c_unsafe > 0 and c_safe <= (1.0 - min_cost_gap) * c_unsafe):
        origin = _dsrl_origin(safe)
        fix = (
            f"{origin} Lower the task's dsrl_cost_threshold in the config"
            if origin
            else "Train the demonstrators longer (task demo_steps), check the safe "
            "demonstrator's cost limit"
        )
        raise SplitError(
            f"no clear cost gap between the demonstrators: safe rollouts cost {c_safe:.2f} per "
            f"episode on average, unsafe ones {c_unsafe:.2f} (needed: safe <= "
            f"{1 - min_cost_gap:.2f} x unsafe). {fix}, or pass --allow-no-gap "
            "(datasets.allow_no_gap) to split anyway."
        )


def _dsrl_origin(data: OfflineData) -> str | None:
    """Where rollouts cut from a DSRL file came from, with both class counts (else None)."""
    a = data.attrs
    if a.get("source") != "dsrl":
        return None
    return (
        f"They are the {'desirable' if a.get('kind') == 'safe' else 'undesirable'} episodes "
        f"of the DSRL file {a.get('dsrl_path')}, which gave {a.get('dsrl_desirable')} "
        f"desirable and {a.get('dsrl_undesirable')} undesirable episodes of "
        f"{a.get('dsrl_episodes')} under the split rule ({a.get('split_rule')})."
    )


def _need(kind: str, have: int, asked: dict[str, int], path, data: OfflineData) -> None:
    total = sum(asked.values())
    if total > have:
        detail = " + ".join(f"{k}={v}" for k, v in asked.items())
        origin = _dsrl_origin(data)
        more = (
            "move the task's dsrl_return_threshold / dsrl_cost_threshold in the config"
            if origin
            else f"collect more {kind} episodes (the config's rollout episodes)"
        )
        raise SplitError(
            f"{path}: holds {have} {kind} trajectories but the split asks for {total} "
            f"({detail}). {origin + ' ' if origin else ''}Lower {' / '.join(asked)} in the "
            f"variant's config, or {more}."
        )


def build_split(
    safe: OfflineData,
    unsafe: OfflineData,
    n_un: int,
    n_mix_desirable: int,
    n_mix_undesirable: int,
    seed: int,
    safe_source="safe rollouts",
    unsafe_source="unsafe rollouts",
) -> tuple[OfflineData, OfflineData]:
    """(D_UN, D_MIX) as described in the module docstring."""
    for name, n in (
        ("n_un", n_un),
        ("n_mix_desirable", n_mix_desirable),
        ("n_mix_undesirable", n_mix_undesirable),
    ):
        if n < 0:
            raise SplitError(f"{name} must be >= 0 (got {n}).")
    if n_un == 0:
        raise SplitError("n_un must be >= 1: D_UN is the labeled undesirable set.")
    if n_mix_desirable + n_mix_undesirable == 0:
        raise SplitError("D_MIX would be empty; set n_mix_desirable and/or n_mix_undesirable.")
    _need("safe", safe.num_episodes(), {"n_mix_desirable": n_mix_desirable}, safe_source, safe)
    _need(
        "unsafe",
        unsafe.num_episodes(),
        {"n_un": n_un, "n_mix_undesirable": n_mix_undesirable},
        unsafe_source,
        unsafe,
    )
    rng = np.random.default_rng(seed)
    safe_perm = rng.permutation(safe.num_episodes())
    unsafe_perm = rng.permutation(unsafe.num_episodes())
    un = unsafe.select_episodes(unsafe_perm[:n_un])
    mix_parts = [
        safe.select_episodes(safe_perm[:n_mix_desirable]),
        unsafe.select_episodes(unsafe_perm[n_un : n_un + n_mix_undesirable]),
    ]
    un.is_desirable[:] = 0.0
    mix_parts[0].is_desirable[:] = 1.0
    mix_parts[1].is_desirable[:] = 0.0
    mix = OfflineData.concatenate(mix_parts)
    mix = mix.select_episodes(rng.permutation(mix.num_episodes()))
    return un, mix


def split_files(
    task: str | TaskSpec,
    safe_path: str | os.PathLike,
    unsafe_path: str | os.PathLike,
    n_un: int,
    n_mix_desirable: int,
    n_mix_undesirable: int,
    seed: int,
    out_dir: str | os.PathLike,
    allow_no_gap: bool = False,
    min_cost_gap: float = 0.25,
) -> tuple[OfflineData, OfflineData]:
    """Read the rollouts, check the gap, write ``out_dir/un.h5`` and ``out_dir/mix.h5``.

    Both files are first written to a temporary folder next to ``out_dir`` and only then
    moved into place, so a failure leaves no partial split behind.
    """
    spec = resolve_task(task)
    safe = OfflineData.load(safe_path, spec)
    unsafe = OfflineData.load(unsafe_path, spec)
    for path, data in ((safe_path, safe), (unsafe_path, unsafe)):
        env_id = data.attrs.get("env_id")
        if env_id not in (None, spec.name):
            raise DatasetError(f"{path}: rollouts of {env_id}, not {spec.name}; fix --task.")
    if not allow_no_gap:
        check_gap(safe, unsafe, min_cost_gap)
    un, mix = build_split(
        safe, unsafe, n_un, n_mix_desirable, n_mix_undesirable, seed, safe_path, unsafe_path
    )
    attrs = dict(
        env_id=spec.name,
        seed=int(seed),
        n_un=int(n_un),
        n_mix_desirable=int(n_mix_desirable),
        n_mix_undesirable=int(n_mix_undesirable),
        source_checksums={
            "safe": safe.attrs.get("checksum"),
            "unsafe": unsafe.attrs.get("checksum"),
        },
        source_files={"safe": Path(safe_path).name, "unsafe": Path(unsafe_path).name},
        sources={"safe": safe.attrs.get("source"), "unsafe": unsafe.attrs.get("source")},
        safe_cost_mean=float(safe.episode_costs().mean()),
        unsafe_cost_mean=float(unsafe.episode_costs().mean()),
    )
    un.attrs = dict(attrs, split="un", episodes=un.num_episodes())
    mix.attrs = dict(attrs, split="mix", episodes=mix.num_episodes())

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        un.save(tmp / "un.h5")
        mix.save(tmp / "mix.h5")
        out_dir.mkdir(exist_ok=True)
        # Two renames: a crash between them leaves un.h5 new and mix.h5 old/missing; the
        # workflow sees mix.h5 older than its inputs and rebuilds the split.
        os.replace(tmp / "un.h5", out_dir / "un.h5")
        os.replace(tmp / "mix.h5", out_dir / "mix.h5")
    finally:
        for f in tmp.glob("*"):
            f.unlink()
        tmp.rmdir()
    return un, mix
