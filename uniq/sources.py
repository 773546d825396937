"""What a method samples from: D_UN, D_MIX and the oracle's desirable rows as device tensors.

:func:`make_sources` loads both datasets onto the training device once, standardises the
observations when asked (one place, for every method; design.md section 5.0), withholds
the columns no learner may see (rewards, costs, the hidden label) and returns a
:class:`Sources`: source name (``uniq.method.SOURCES``) -> :class:`uniq.data.Sampler`.
"""

from __future__ import annotations

import torch

from uniq.data import DatasetError, OfflineData, Sampler, observation_stats
from uniq.method import SOURCES

HIDDEN_COLUMNS = ("rewards", "costs", "is_desirable")
"""Dataset columns the training loop withholds from every method."""


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
