"""OfflineData: the suite's offline dataset, stored as DSRL-compatible HDF5.

A file holds flat transitions under DSRL's keys (``observations, actions, rewards, costs,
next_observations, terminals, timeouts``) plus ``is_desirable`` (the hidden label, kept for
the oracle baseline and for analysis; learners other than BC-safe never read it). File
attributes carry the env id, seed, provenance and a content checksum.

Trajectories are contiguous rows; a trajectory ends where ``terminals`` or ``timeouts`` is 1.
Training samples random rows from device-resident tensors (:class:`Sampler`): no DataLoader.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from uniq.atomic import atomic_path

KEYS = (
    "observations",
    "actions",
    "rewards",
    "costs",
    "next_observations",
    "terminals",
    "timeouts",
    "is_desirable",
)
"""Every key a suite file holds; a DSRL file may lack ``is_desirable`` (then all rows are 1)."""

VECTOR_KEYS = ("observations", "actions", "next_observations")
JSON_KEYS_ATTR = "uniq_json_attrs"
"""HDF5 attribute listing the attributes ``save`` stored as JSON text (lists, dicts)."""


class DatasetError(ValueError):
    """A dataset file that cannot be used; the message names the file, the problem and the fix."""


@dataclass
class OfflineData:
    """Flat transitions, all float32, ``N`` rows (``observations`` is ``[N, obs_dim]``)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    costs: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    is_desirable: np.ndarray
    attrs: dict = field(default_factory=dict)
    """env_id, seed, provenance, demonstrator statistics, ... (JSON-serializable values)."""

    def __post_init__(self) -> None:
        for key in KEYS:
            setattr(self, key, np.asarray(getattr(self, key), dtype=np.float32))

    def __len__(self) -> int:
        return len(self.observations)

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def act_dim(self) -> int:
        return self.actions.shape[1]

    # ------------------------------------------------------------------ structure
    def episode_ends(self) -> np.ndarray:
        """Exclusive end row of each trajectory (the last trajectory ends at ``len``)."""
        done = np.flatnonzero((self.terminals > 0) | (self.timeouts > 0)) + 1
        if len(done) == 0 or done[-1] != len(self):
            done = np.append(done, len(self))
        return done

    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], self.episode_ends()[:-1]])

    def episode_slices(self) -> list[slice]:
        return [
            slice(s, e) for s, e in zip(self.episode_starts(), self.episode_ends(), strict=True)
        ]

    def num_episodes(self) -> int:
        return len(self.episode_ends())

    def episode_returns(self) -> np.ndarray:
        return np.add.reduceat(self.rewards, self.episode_starts()) if len(self) else np.zeros(0)

    def episode_costs(self) -> np.ndarray:
        return np.add.reduceat(self.costs, self.episode_starts()) if len(self) else np.zeros(0)

    def initial_mask(self) -> np.ndarray:
        """1.0 on the first row of each trajectory (s_0 samples for (1-gamma) E[V(s_0)] terms)."""
        mask = np.zeros(len(self), dtype=np.float32)
        if len(self):  # an empty dataset has no starts (episode_starts() would say [0])
            mask[self.episode_starts()] = 1.0
        return mask

    def select_episodes(self, indices) -> OfflineData:
        """A new dataset made of the given trajectories, in the given order."""
        slices = self.episode_slices()
        # each episode's own range: a slice of one arange over all rows would keep that whole
        # array alive per episode (1,700 episodes of 1.7M rows: 23 GB, the paper-scale split)
        rows = (
            np.concatenate([np.arange(slices[i].start, slices[i].stop) for i in indices])
            if len(indices)
            else np.zeros(0, int)
        )
        out = self.select_rows(rows)
        # The source's last trajectory may end without a flag (episode_ends() closes it at
        # len); once reordered it would merge with the next one, so mark it as a timeout.
        ends = np.cumsum([slices[i].stop - slices[i].start for i in indices]).astype(int) - 1
        unflagged = ends[(out.terminals[ends] == 0) & (out.timeouts[ends] == 0)]
        out.timeouts[unflagged] = 1.0
        return out

    def select_rows(self, rows: np.ndarray) -> OfflineData:
        return OfflineData(**{k: getattr(self, k)[rows] for k in KEYS}, attrs=dict(self.attrs))

    @staticmethod
    def concatenate(parts: list[OfflineData], attrs: dict | None = None) -> OfflineData:
        return OfflineData(
            **{k: np.concatenate([getattr(p, k) for p in parts]) for k in KEYS},
            attrs=dict(attrs if attrs is not None else parts[0].attrs),
        )

    def checksum(self) -> str:
        """SHA-256 over every array's bytes, in KEYS order (identical content, identical sum)."""
        digest = hashlib.sha256()
        for key in KEYS:
            array = np.ascontiguousarray(getattr(self, key))
            digest.update(key.encode())
            digest.update(str(array.shape).encode())
            digest.update(array)  # the buffer itself: no copy of a GB-sized array
        return digest.hexdigest()

    # ------------------------------------------------------------------ validation
    def validate(self, spec=None, source: str | os.PathLike = "<memory>") -> None:
        """Raise :class:`DatasetError` on inconsistent lengths, wrong dims or non-finite values.

        ``spec`` is an ``envs.tasks.TaskSpec``; when given, obs/action dims must match it.
        """
        n = len(self.observations)
        if (
            self.observations.ndim != 2
            or self.actions.ndim != 2
            or self.next_observations.ndim != 2
        ):
            raise DatasetError(
                f"{source}: observations, next_observations and actions must be 2-D arrays [N, dim]."
            )
        for key in KEYS:
            if len(getattr(self, key)) != n:
                raise DatasetError(
                    f"{source}: length mismatch: '{key}' has {len(getattr(self, key))} rows but "
                    f"'observations' has {n}. Every key must hold one row per transition; regenerate the file."
                )
        if self.next_observations.shape[1] != self.obs_dim:
            raise DatasetError(
                f"{source}: next_observations has dim {self.next_observations.shape[1]}, observations {self.obs_dim}."
            )
        for key in KEYS:
            values = getattr(self, key)
            if np.isfinite(
                values.sum(dtype=np.float64)
            ):  # no copy: NaN/inf make the sum non-finite
                continue
            bad = ~np.isfinite(values)
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise DatasetError(
                    f"{source}: '{key}' holds {int(bad.sum())} NaN/inf value(s) (first at row {row}). "
                    "Clean or regenerate the dataset; the suite does not train on non-finite data."
                )
        if spec is not None and (self.obs_dim != spec.obs_dim or self.act_dim != spec.act_dim):
            raise DatasetError(
                f"{source}: obs/action dims ({self.obs_dim}, {self.act_dim}) do not match task "
                f"{spec.name} ({spec.obs_dim}, {spec.act_dim}). Is this dataset from another environment? "
                "Point the config at a file generated for this task."
            )

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: a temp file in the same folder, then rename (no partial file ever)."""
        attrs = dict(self.attrs, checksum=self.checksum())
        if JSON_KEYS_ATTR in attrs:
            raise ValueError(f"{JSON_KEYS_ATTR!r} is reserved; rename that attribute")
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            for key in KEYS:
                f.create_dataset(key, data=getattr(self, key))
            encoded = []
            for k, v in attrs.items():
                v = v.item() if isinstance(v, np.generic) else v  # np.int64 from counts
                if not isinstance(v, str | int | float | bool):
                    v = json.dumps(v, default=_json_default)
                    encoded.append(k)
                f.attrs[k] = v
            # Which strings are JSON we wrote: a string attribute that merely looks like JSON
            # comes back as the same string.
            f.attrs[JSON_KEYS_ATTR] = json.dumps(encoded)
        self.attrs = attrs

    @classmethod
    def load(cls, path: str | os.PathLike, spec=None, verify_checksum: bool = True) -> OfflineData:
        """Read a suite or DSRL HDF5 file and validate it (against ``spec`` if given)."""
        path = Path(path)
        if not path.exists():
            raise DatasetError(
                f"{path}: no such dataset file. Generate it with the workflow or fix the path."
            )
        if not h5py.is_hdf5(path):
            raise DatasetError(
                f"{path}: not an HDF5 file (truncated or another format). Regenerate it or point to a DSRL-style .h5/.hdf5 file."
            )
        try:
            with h5py.File(path, "r") as f:
                missing = [k for k in KEYS if k not in f and k != "is_desirable"]
                if missing:
                    raise DatasetError(
                        f"{path}: missing key(s) {missing}; a dataset needs {list(KEYS[:-1])} "
                        "(DSRL layout) and optionally 'is_desirable'."
                    )
                arrays = {k: f[k][()] for k in KEYS if k in f}
                attrs = _decode_attrs(dict(f.attrs))
        except OSError as err:
            raise DatasetError(
                f"{path}: unreadable HDF5 file ({err}). It may be truncated; regenerate it."
            ) from err
        if "is_desirable" not in arrays:
            arrays["is_desirable"] = np.ones(len(arrays["observations"]), dtype=np.float32)
        for key in ("rewards", "costs", "terminals", "timeouts", "is_desirable"):
            arrays[key] = (
                np.asarray(arrays[key]).reshape(len(arrays[key]), -1)[:, 0]
                if np.ndim(arrays[key]) > 1
                else arrays[key]
            )
        data = cls(**arrays, attrs=attrs)
        data.validate(spec, source=path)
        if verify_checksum and "checksum" in attrs and attrs["checksum"] != data.checksum():
            raise DatasetError(
                f"{path}: content does not match its stored checksum; the file is corrupt. Regenerate it."
            )
        return data

    # ------------------------------------------------------------------ training
    def to_tensors(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Every column as a device tensor; rewards/costs/flags as ``[N]``; plus ``initial``."""
        out = {k: torch.as_tensor(getattr(self, k), device=device) for k in KEYS}
        out["initial"] = torch.as_tensor(self.initial_mask(), device=device)
        return out


def _json_default(value):
    """NumPy scalars and arrays inside list/dict attributes, as plain JSON values."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"attribute value {value!r} ({type(value).__name__}) is not JSON-serializable")


def _decode_attrs(raw: dict) -> dict:
    """HDF5 attributes as Python values; JSON-decodes exactly the keys ``save`` encoded.

    Files written before the key list existed (or by other tools) have no list: there a
    string that parses as a JSON list or object is decoded, the best guess available.
    """
    out = {}
    for k, v in raw.items():
        if isinstance(v, bytes):
            v = v.decode()
        out[k] = v.item() if isinstance(v, np.generic) else v
    listed = out.pop(JSON_KEYS_ATTR, None)
    if listed is not None:
        encoded = set(json.loads(listed))
        return {k: json.loads(v) if k in encoded else v for k, v in out.items()}
    for k, v in out.items():
        if isinstance(v, str) and v[:1] in "[{":
            try:
                out[k] = json.loads(v)
            except json.JSONDecodeError:
                pass
    return out


def observation_stats(*datasets: OfflineData) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (float64, per dimension) of the ``observations`` of all ``datasets`` together.

    The statistics of the recipe's standardisation ``(s - mean) / (std + 1e-3)``
    (:class:`uniq.nets.ObsNormalizer`), taken over D_MIX and D_UN, as the authors' code.
    """
    obs = np.concatenate([d.observations for d in datasets]).astype(np.float64)
    if not len(obs):
        raise DatasetError("no observations to standardise: D_MIX and D_UN are both empty.")
    return obs.mean(0), obs.std(0)


class Sampler:
    """Uniform random batches of rows from device-resident tensors.

    Indices come from a ``torch.Generator`` on the tensors' device, so sampling is
    reproducible from the seed and its state goes into checkpoints.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], generator: torch.Generator):
        self.tensors = tensors
        self.size = len(next(iter(tensors.values())))
        if self.size == 0:
            raise DatasetError(
                "cannot sample from an empty dataset; check the split sizes in the config."
            )
        self.generator = generator
        self.device = next(iter(tensors.values())).device

    def sample(self, batch_size: int, members: int | None = None) -> dict[str, torch.Tensor]:
        """``batch_size`` rows; with ``members=K`` each member draws its own rows (``[K, B, ...]``)."""
        shape = (batch_size,) if members is None else (members, batch_size)
        idx = torch.randint(self.size, shape, device=self.device, generator=self.generator)
        # index_select of the flat indices, then the shape: the same rows as v[idx], at a
        # third of its cost on a CPU (advanced indexing's general machinery is slower)
        flat = idx.reshape(-1)
        return {
            k: v.index_select(0, flat).view(*shape, *v.shape[1:]) for k, v in self.tensors.items()
        }
