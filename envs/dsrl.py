"""A user's DSRL HDF5 file as the data of a task: ``rollouts_safe.h5`` and ``rollouts_unsafe.h5``.

DSRL (github.com/liuzuxin/DSRL) publishes one file per Safety-Gymnasium task with flat
transitions under ``observations, next_observations, actions, rewards, costs, terminals,
timeouts``. The file's episodes are split the way the UNIQ authors split DSRL's HalfCheetah
data: with ``R`` and ``C`` an episode's return and cost, min-max normalised over the file's
episodes,

    desirable  <=>  (R - R_min) / (R_max - R_min) > return_threshold
                    and (C - C_min) / (C_max - C_min) < cost_threshold     (both 0.5 by default)

and every other episode is undesirable. Desirable episodes become ``rollouts_safe.h5``
(``is_desirable = 1``), the rest ``rollouts_unsafe.h5`` (0), in the format of generated
rollouts, so the split (envs/splits.py), training, evaluation and statistics read them
unchanged. Both files are written together or not at all.

Decisions a DSRL file forces:

- episode boundaries are ``terminals | timeouts`` (bool or float, ``[N]`` or ``[N, 1]``; one of
  the two keys may be absent). Rows after the last flagged row are a partial episode and are
  dropped with a warning, as DSRL's own loader does (``OfflineEnv.pre_process_data`` only
  iterates up to the last flag); their count is recorded (``dsrl_dropped_rows``). A file with no
  flagged row at all has no recoverable episodes and is refused;
- min-max normalisation needs a spread: a file whose episodes all have the same return, or all
  the same cost, is refused (the rule would be 0/0);
- a class with no episode at all is refused here, naming both counts; a class with too few
  episodes for a split is refused where the split is cut (envs/splits.py), with the same counts
  read back from these files' attributes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import h5py
import numpy as np

from envs.tasks import TaskSpec, resolve_task
from uniq.atomic import atomic_path
from uniq.data import DatasetError, OfflineData

log = logging.getLogger(__name__)

RETURN_THRESHOLD = 0.5
"""Default bar on the normalised return a desirable episode must exceed (the authors' 0.5)."""
COST_THRESHOLD = 0.5
"""Default bar on the normalised cost a desirable episode must stay below (the authors' 0.5)."""

ARRAY_KEYS = ("observations", "next_observations", "actions", "rewards", "costs")
FLAG_KEYS = ("terminals", "timeouts")


def split_rule(return_threshold: float, cost_threshold: float) -> str:
    """The rule in words, as recorded in the rollouts' attributes and quoted in errors."""
    return (
        f"desirable iff (R - R_min)/(R_max - R_min) > {return_threshold:g} and "
        f"(C - C_min)/(C_max - C_min) < {cost_threshold:g}, R and C an episode's return and "
        "cost, min and max over the file's episodes; all other episodes undesirable"
    )


def _fix(spec: TaskSpec) -> str:
    return (
        f"Point `tasks.{spec.name}.path` at DSRL's HDF5 file for {spec.name} "
        "(README, 'DSRL datasets')."
    )


def _column(name: str, values: np.ndarray, n: int, path: Path) -> np.ndarray:
    """A per-row key as ``[N]`` float32; DSRL stores some as ``[N, 1]`` and flags as bool."""
    values = np.asarray(values)
    if values.shape == (n, 1):
        values = values[:, 0]
    if values.shape != (n,):
        raise DatasetError(
            f"{path}: '{name}' has shape {values.shape}; DSRL's layout has one value per row, "
            f"[{n}] or [{n}, 1] for the file's {n} rows. Is this a DSRL file?"
        )
    return values.astype(np.float32)


def read_dsrl(path: str | os.PathLike, task: str | TaskSpec) -> OfflineData:
    """The complete episodes of a DSRL file, validated against ``task`` (``is_desirable`` = 0).

    ``attrs`` holds ``dsrl_rows`` (rows in the file) and ``dsrl_dropped_rows`` (the trailing
    partial episode, see the module docstring).
    """
    spec = resolve_task(task)
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"{path}: no such DSRL file. {_fix(spec)}")
    if not h5py.is_hdf5(path):
        raise DatasetError(
            f"{path}: not an HDF5 file (truncated, or another format). DSRL files are .hdf5; "
            f"download it again. {_fix(spec)}"
        )
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ARRAY_KEYS if k not in f]
            flags = [k for k in FLAG_KEYS if k in f]
            if missing or not flags:
                need = list(ARRAY_KEYS) + [" and/or ".join(FLAG_KEYS)]
                lacks = missing + ([] if flags else [" and ".join(FLAG_KEYS)])
                raise DatasetError(
                    f"{path}: not in DSRL's layout: no {', '.join(repr(k) for k in lacks)} "
                    f"(the file holds {sorted(f.keys())}; DSRL's files hold {need}). {_fix(spec)}"
                )
            arrays = {k: f[k][()] for k in (*ARRAY_KEYS, *flags)}
    except OSError as err:
        raise DatasetError(f"{path}: unreadable HDF5 file ({err}); download it again.") from err

    obs, act = np.asarray(arrays["observations"]), np.asarray(arrays["actions"])
    if obs.shape[1:] != (spec.obs_dim,) or act.shape[1:] != (spec.act_dim,):
        raise DatasetError(
            f"{path}: observations of shape {obs.shape[1:]} and actions of shape "
            f"{act.shape[1:]}, but {spec.name} has observations ({spec.obs_dim},) and actions "
            f"({spec.act_dim},): a file for another task. {_fix(spec)}"
        )
    n = len(obs)
    for key in ("rewards", "costs", *flags):
        arrays[key] = _column(key, arrays[key], n, path)
    for key in FLAG_KEYS:
        arrays.setdefault(key, np.zeros(n, np.float32))
    done = np.flatnonzero((arrays["terminals"] != 0) | (arrays["timeouts"] != 0))
    if len(done) == 0:
        raise DatasetError(
            f"{path}: no row of its {n} is flagged in {' or '.join(flags)}, so its episode "
            "boundaries cannot be recovered. DSRL's files flag every episode's last step; "
            "download the file again or add the flags."
        )
    keep = int(done[-1]) + 1
    if keep < n:
        log.warning(
            "%s: dropping the last %d row(s): they follow the last flagged row, a partial "
            "episode (DSRL's own loader ignores them too)",
            path,
            n - keep,
        )
    data = OfflineData(
        **{k: np.asarray(v)[:keep] for k, v in arrays.items()},
        is_desirable=np.zeros(keep, np.float32),
        attrs={"dsrl_rows": n, "dsrl_dropped_rows": n - keep},
    )
    data.validate(spec, source=path)  # lengths, next_observations, NaN/inf
    return data


def _min_max(values: np.ndarray, what: str, path: Path) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if not high > low:
        raise DatasetError(
            f"{path}: all {len(values)} episodes have the same {what} ({low:g}), so the "
            f"min-max normalised {what} of the split rule is 0/0 and the file cannot be split "
            "into desirable and undesirable episodes. Use a DSRL file whose episodes differ "
            f"in {what}."
        )
    return (values - low) / (high - low)


def desirable_mask(
    data: OfflineData,
    return_threshold: float = RETURN_THRESHOLD,
    cost_threshold: float = COST_THRESHOLD,
    path: str | os.PathLike = "<memory>",
) -> np.ndarray:
    """Per episode, whether it is desirable under :func:`split_rule`."""
    starts = data.episode_starts()
    returns = np.add.reduceat(data.rewards.astype(np.float64), starts)
    costs = np.add.reduceat(data.costs.astype(np.float64), starts)
    r = _min_max(returns, "return", Path(path))
    c = _min_max(costs, "cost", Path(path))
    return (r > return_threshold) & (c < cost_threshold)


def _stats(data: OfflineData) -> dict[str, float]:
    from envs.collect import return_cost_stats

    return return_cost_stats(data.episode_returns(), data.episode_costs())


def dsrl_rollouts(
    task: str | TaskSpec,
    path: str | os.PathLike,
    out_safe: str | os.PathLike,
    out_unsafe: str | os.PathLike,
    return_threshold: float = RETURN_THRESHOLD,
    cost_threshold: float = COST_THRESHOLD,
) -> tuple[OfflineData, OfflineData]:
    """Split the DSRL file ``path`` into (desirable, undesirable) rollouts files.

    Nothing is written unless both files can be: every check runs first, and the two files
    are renamed into place only once both are complete.
    """
    from uniq.atomic import file_sha256

    spec = resolve_task(task)
    for name, value in (("return", return_threshold), ("cost", cost_threshold)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"the {name} threshold must lie in [0, 1] (got {value}).")
    path = Path(path).expanduser()
    data = read_dsrl(path, spec)
    desirable = desirable_mask(data, return_threshold, cost_threshold, path)
    n_des, n_und = int(desirable.sum()), int((~desirable).sum())
    rule = split_rule(return_threshold, cost_threshold)
    if n_des == 0 or n_und == 0:
        raise DatasetError(
            f"{path}: {n_des} desirable and {n_und} undesirable episodes of {len(desirable)} "
            f"under the split rule ({rule}); both classes need episodes. Move "
            f"`tasks.{spec.name}.dsrl_return_threshold` / `dsrl_cost_threshold`."
        )
    returns, costs = data.episode_returns(), data.episode_costs()
    common = dict(
        env_id=spec.name,
        source="dsrl",
        cost_limit=float(spec.cost_limit),
        dsrl_file=path.name,
        dsrl_path=str(path.resolve()),
        dsrl_sha256=file_sha256(path),
        split_rule=rule,
        return_threshold=float(return_threshold),
        cost_threshold=float(cost_threshold),
        dsrl_episodes=len(desirable),
        dsrl_desirable=n_des,
        dsrl_undesirable=n_und,
        dsrl_rows=data.attrs["dsrl_rows"],
        dsrl_dropped_rows=data.attrs["dsrl_dropped_rows"],
        dsrl_return_min=float(returns.min()),
        dsrl_return_max=float(returns.max()),
        dsrl_cost_min=float(costs.min()),
        dsrl_cost_max=float(costs.max()),
    )
    parts = []
    for kind, mask, label in (("safe", desirable, 1.0), ("unsafe", ~desirable, 0.0)):
        part = data.select_episodes(np.flatnonzero(mask))
        part.is_desirable[:] = label
        part.attrs = dict(common, kind=kind, episodes=int(mask.sum()), **_stats(part))
        parts.append(part)
    with contextlib.ExitStack() as stack:
        # Each temp file is renamed over its destination when the stack closes, i.e. only
        # after both saves succeeded; a failure deletes both temp files.
        tmps = [stack.enter_context(atomic_path(out)) for out in (out_safe, out_unsafe)]
        for part, tmp in zip(parts, tmps, strict=True):
            part.save(tmp)
    return parts[0], parts[1]
