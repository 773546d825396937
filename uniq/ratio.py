r"""UNIQ's occupancy ratio tau = rho_UN / rho_MIX: the classifiers and their stop rule
(design.md section 5.1). Pretrained once, then frozen; :meth:`RatioEstimator.table` gives tau
of every dataset row, which the weights (:mod:`uniq.weights`) read by row index.

``ratio_form="state"`` (the authors' code, default): two state classifiers,

    c_mix(s) = P(MIX | s),  c_un(s) = P(UN | s),  tau(s) = c_un(s) / c_mix(s);

``"state_action"`` (the paper's derivation): one balanced classifier c(s, a) = P(UN | s, a),
tau(s, a) = c / (1 - c). Each is Linear-ReLU-Dropout x depth + Linear, its sigmoid clipped to
[p_min, p_max] = [0.05, 0.95] (so tau in [1/19, 19]), trained with the balanced BCE

    L(c) = E_UN[bce(c(x), y_UN)] + E_MIX[bce(c(x), y_MIX)]

(y = 1 for the class the classifier names). Stop rule ``ratio_stop="gap"`` (the reference):
each classifier in turn (c_mix, then c_un), until mean c(positive rows) - mean c(negative
rows) on ``ratio_check_rows`` in-sample rows, dropout off, exceeds its threshold (checked every
``ratio_check_every`` steps, at most ``ratio_steps``), the last weights kept; ``"heldout"``
(suite option): together, early-stopped on held-out trajectories, the best weights kept.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from uniq import jobtimes, nets
from uniq.atomic import atomic_path, git_commit
from uniq.checkpoint import read_saved
from uniq.lock import output_lock
from uniq.nets import mlp, orthogonal_init_

log = logging.getLogger(__name__)


def _partial(cache: Path) -> Path:
    """Where a cached fit keeps its state while it runs (uniq_ratio_<key>.partial.pt)."""
    return cache.with_name(cache.stem + ".partial.pt")


CLASSIFIER_FIELDS = (
    "hidden", "depth", "ratio_form", "ratio_lr", "ratio_weight_decay", "ratio_dropout",
    "ratio_batch", "ratio_steps", "ratio_prob_min", "ratio_prob_max", "ratio_stop",
    "ratio_check_every", "ratio_gap_mix", "ratio_gap_un", "ratio_check_rows", "ratio_holdout",
    "ratio_eval_every", "ratio_patience",
)  # fmt: skip
"""The config fields that determine the classifiers (with the data, family and dimensions)."""


def gap_bound(desirable_share: float, p_min: float = 0.05, p_max: float = 0.95) -> float:
    """The largest class gap the stop rule can see without memorising rows, for a D_MIX whose
    share ``desirable_share`` = f of rows is desirable and whose undesirable rows come from
    D_UN's distribution (the best case: desirable and undesirable states apart).

    The balanced-BCE optimum is c_mix(s) = rho_MIX / (rho_MIX + rho_UN): p_max on desirable
    states and u = (1 - f) / (2 - f) on undesirable ones, so the gap E_MIX[c_mix] - E_UN[c_mix]
    = f (p_max - u); c_un is v = 1 / (2 - f) on undesirable states and p_min on desirable ones,
    gap f (v - p_min). Both are about 0.10 at the paper's f = 0.2 (400 of 2000): the
    reference's thresholds (0.2; 0.5 for c_un on navigation tasks) are then met only by a
    classifier that tells D_UN's own rows from D_MIX's, i.e. memorises them.
    Returns the smaller of the two."""
    f = desirable_share
    return min(f * (p_max - (1 - f) / (2 - f)), f * (1 / (2 - f) - p_min))


def _code_sha256() -> str:
    h = hashlib.sha256()
    for module in (__file__, nets.__file__):
        h.update(Path(module).read_bytes())
    return h.hexdigest()


CODE = {"commit": git_commit(), "sha256": _code_sha256()}
"""The code that fits the classifiers here (this module and uniq/nets.py) and its commit, both
as imported: a commit made during an hours-long fit is not the code that ran it. A cached fit
and a fit's partial state keep it; the cache key leaves the code out (a commit that touches
nothing here must not refit an hour's classifiers), so a load compares it."""
CODE_SHA256 = CODE["sha256"]


def _mixed(saved: dict[str, str]) -> dict[str, str]:
    """The tag of a fit begun by ``saved``'s code and resumed by this one: never this code's."""
    return {"commit": f"{saved['commit']}, resumed by {CODE['commit']}", "sha256": "mixed"}


def _fitted_by_other_code(path: Path, saved: dict[str, Any] | None) -> bool:
    """Whether ``saved``, the file's :data:`CODE` (None: a file written before it was kept),
    is other code's; warns if so."""
    other = saved is not None and saved["sha256"] != CODE_SHA256
    if other:
        log.warning(
            "%s was fitted by other code of uniq/ratio.py or uniq/nets.py (commit %s); it is "
            "used as it is: delete it to fit the classifiers with this checkout's code",
            path,
            saved["commit"],
        )
    return other


class RatioEstimator:
    """The classifiers behind tau for inputs of ``in_dim`` (states, or (s, a) concatenated),
    ``members`` of them batched over seeds (None: one). ``nets`` (name -> network, in training
    order) and ``opt`` are checkpointed by the method that holds them, under those names."""

    def __init__(
        self, cfg: Any, family: str, dims: tuple[int, int], device, members: int | None = None
    ):
        self.cfg, self.family, self.dims, self.device, self.members = (
            cfg, family, dims, torch.device(device), members,
        )  # fmt: skip
        obs_dim, act_dim = dims
        in_dim = obs_dim + (act_dim if cfg.ratio_form == "state_action" else 0)
        self.names = ("c_mix", "c_un") if cfg.ratio_form == "state" else ("c",)  # training order
        self.nets: dict[str, nn.Module] = {}
        for n in self.names:  # c_un: P(UN | x); c_mix: P(MIX | x); c: P(UN | s, a)
            net = orthogonal_init_(
                mlp(in_dim, 1, cfg.hidden, cfg.depth, dropout=cfg.ratio_dropout, members=members)
            )
            self.nets[n] = net.to(self.device)
        params = [p for n in self.names for p in self.nets[n].parameters()]
        self.opt = torch.optim.Adam(params, lr=cfg.ratio_lr, weight_decay=cfg.ratio_weight_decay)
        self.set_frozen(True)

    def set_frozen(self, frozen: bool) -> None:
        for n in self.names:
            self.nets[n].train(not frozen).requires_grad_(not frozen)

    def features(self, t: dict[str, torch.Tensor], next_state: bool = False) -> torch.Tensor:
        if self.cfg.ratio_form == "state_action":
            return torch.cat([t["observations"], t["actions"]], -1)
        return t["next_observations" if next_state else "observations"]

    def _probs(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(net(x).squeeze(-1)).clamp(
            self.cfg.ratio_prob_min, self.cfg.ratio_prob_max
        )

    def occupancy_ratio(self, x: torch.Tensor) -> torch.Tensor:
        """tau = rho_UN / rho_MIX of classifier inputs x (states, or (s, a) concatenated)."""
        if self.cfg.ratio_form == "state":
            return self._probs(self.nets["c_un"], x) / self._probs(self.nets["c_mix"], x)
        c = self._probs(self.nets["c"], x)
        return c / (1 - c)

    def bce(self, name: str, x_un: torch.Tensor, x_mix: torch.Tensor) -> torch.Tensor:
        """BCE of classifier ``name`` (label UN for c_un and c, MIX for c_mix), the mean over
        each class summed: E_UN[bce] + E_MIX[bce], as the reference (balanced even when the
        two sets differ in size)."""
        x = torch.cat([x_un, x_mix])
        is_un = torch.cat([x_un.new_ones(len(x_un)), x_mix.new_zeros(len(x_mix))])
        target = 1 - is_un if name == "c_mix" else is_un
        bce = F.binary_cross_entropy(self._probs(self.nets[name], x), target, reduction="none")
        return bce[: len(x_un)].mean() + bce[len(x_un) :].mean()

    def loss(self, x_un: torch.Tensor, x_mix: torch.Tensor) -> torch.Tensor:
        """The classifiers' BCEs (:meth:`bce`) summed."""
        return sum(self.bce(n, x_un, x_mix) for n in self.names)

    def gap(self, name: str, x_un: torch.Tensor, x_mix: torch.Tensor) -> float:
        """Mean output of classifier ``name`` on its positive rows minus on its negative ones
        (c_mix: D_MIX positive; c_un, c: D_UN positive), dropout off."""
        net = self.nets[name]
        net.eval()
        with torch.no_grad():
            p_un, p_mix = self._probs(net, x_un).mean(), self._probs(net, x_mix).mean()
        net.train()
        return float(p_mix - p_un if name == "c_mix" else p_un - p_mix)

    def _holdout_split(self, t: dict[str, torch.Tensor], gen: torch.Generator):
        """(train rows, held-out rows): whole trajectories held out, so no near-duplicate leaks."""
        n = len(t["observations"])
        frac = self.cfg.ratio_holdout
        traj = torch.cumsum(t["initial"], 0).long() - 1  # trajectory id of each row
        n_traj = int(traj[-1]) + 1
        rows = torch.arange(n, device=self.device)
        if frac <= 0 or n < 2:
            return rows, rows[:0]
        if n_traj >= 2:
            n_hold = min(n_traj - 1, max(1, round(frac * n_traj)))
            held = torch.randperm(n_traj, generator=gen, device=self.device)[:n_hold]
            mask = torch.isin(traj, held)
        else:  # a single trajectory: hold out rows instead
            mask = torch.zeros(n, dtype=torch.bool, device=self.device)
            mask[
                torch.randperm(n, generator=gen, device=self.device)[: max(1, round(frac * n))]
            ] = True
        return rows[~mask], rows[mask]

    def fit(self, data) -> dict[str, float]:
        """Train the classifiers on ``data`` (source -> sampler; ``ratio_stop``: the
        reference's gap rule, or held-out early stopping), or load them from the cache
        (``ratio_cache_dir``); leave them frozen. Returns the scalars to log.

        The fit draws from its own generator, seeded by one draw of the run's sampling
        generator: a run that loads the classifiers from the cache then samples the same
        training batches as the run that trained them. A cached fit is a function of its key
        alone: initialised, sampled and dropped out from a seed the key gives, the global
        random state left as it was, so the cache holds the same classifiers whichever run
        (or analysis/ratio_budget.py) fits them first."""
        sampling = data["mix"].generator
        seed = int(torch.randint(2**62, (1,), generator=sampling, device=sampling.device))
        cache = self.cache_path(data)
        if cache is not None:
            seed = int(cache.stem.rsplit("_", 1)[1][:15], 16)
        gen = torch.Generator(sampling.device).manual_seed(seed)
        self._code = CODE  # a resumed partial fit of other code makes it _mixed
        # runs that share the cache fit it once: the others wait for it, then load it
        with output_lock(cache, wait=True) if cache is not None else contextlib.nullcontext():
            if cache is not None and cache.exists():
                fix = "delete it and the classifiers are fitted again"
                payload = read_saved(cache, fix, map_location=self.device)
                _fitted_by_other_code(cache, payload.get("code"))
                for n in self.names:
                    self.nets[n].load_state_dict(payload["state"][n])
                info = dict(payload["info"], ratio_cached=1.0)
            elif cache is not None:
                devices = [self.device] if self.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(seed)
                    for n in self.names:
                        orthogonal_init_(self.nets[n])
                    info = self._fit(data, gen, _partial(cache))
                state = {n: self.nets[n].state_dict() for n in self.names}
                with atomic_path(cache) as tmp:
                    torch.save({"state": state, "info": info, "code": self._code}, tmp)
                _partial(cache).unlink(missing_ok=True)
                info = dict(info, ratio_cached=0.0)
            else:
                info = self._fit(data, gen)
        self.set_frozen(True)
        return info

    def _fit(self, data, gen: torch.Generator, partial: Path | None = None) -> dict[str, float]:
        if self.cfg.ratio_stop == "gap":
            return self._fit_gap(data, gen, partial)
        return self._fit_heldout(data, gen)

    def cache_path(self, data) -> Path | None:
        """``ratio_cache_dir``/<sha256 of what determines the classifiers but the seed>.pt.

        Keyed by :data:`CLASSIFIER_FIELDS` only, so runs that differ elsewhere (an ablation
        arm's critic or actor, the run's length) share one pair of classifiers per dataset; the
        code that fitted them is kept in the file and compared on load (:data:`CODE`)."""
        cfg = self.cfg
        if cfg.ratio_cache_dir is None:
            return None
        h = hashlib.sha256()
        key = {
            "format": 3,  # 3: keyed by the fields the classifiers read (2: the whole config)
            "config": {k: getattr(cfg, k) for k in CLASSIFIER_FIELDS},
            "family": self.family,
            "dims": list(self.dims),
            "device": self.device.type,
            "torch": torch.__version__,
        }
        h.update(json.dumps(key, sort_keys=True).encode())
        for source in ("un", "mix"):  # the classifiers' inputs and, for 'heldout', trajectories
            t = data[source].tensors
            for x in (self.features(t), t["initial"]):
                h.update(str((x.dtype, tuple(x.shape))).encode())
                h.update(x.detach().cpu().contiguous().numpy().tobytes())
        return Path(cfg.ratio_cache_dir) / f"uniq_ratio_{h.hexdigest()[:32]}.pt"

    def _fit_gap(self, data, gen: torch.Generator, partial: Path | None = None) -> dict[str, float]:
        """The reference's rule: each classifier in turn (c_mix, then c_un; or c), BCE steps on
        ``ratio_batch`` rows of each set; every ``ratio_check_every`` steps the gap
        (:meth:`gap`) on ``ratio_check_rows`` in-sample rows of each set; stop once it
        exceeds the classifier's threshold or after ``ratio_steps``; keep the last weights.

        With ``partial`` (a cached fit's), the fit's state is saved there at each check it
        passes and a fit stopped part-way (a session's end: at the paper's sizes a fit can
        run longer than an hour) resumes from it to the same classifiers.

        Logs the settings used (the family's values where the config left None) and, per
        classifier, the steps run, the final gap and the last batch loss.
        """
        cfg, dev = self.cfg, self.device
        x_un, x_mix = (
            self.features(data["un"].tensors),
            self.features(data["mix"].tensors),
        )
        info: dict[str, float] = {
            "ratio_check_every": cfg.ratio_check_every,
            "ratio_gap_mix": cfg.ratio_gap_mix,
            "ratio_gap_un": cfg.ratio_gap_un,
        }
        saved = self._load_partial(partial, gen)
        # the fit's seconds so far, kept in the partial file: a resumed fit's job counts them
        before = (0.0, 0.0) if saved is None else saved.get("seconds", (0.0, 0.0))
        start = (time.perf_counter(), jobtimes.cpu_seconds())
        jobtimes.credit(*before)
        for i, name in enumerate(self.names):
            if saved is not None and i < saved["classifier"]:
                self.nets[name].requires_grad_(False)  # finished before the stop
                continue
            threshold = cfg.ratio_gap_mix if name == "c_mix" else cfg.ratio_gap_un
            if saved is not None and i == saved["classifier"]:
                rows, first, loss, info = (
                    saved["rows"],
                    saved["step"] + 1,
                    saved["loss"],
                    saved["info"],
                )
                log.info("ratio %s: resuming at step %d from %s", name, first - 1, partial)
            else:
                rows = {  # the rows each check reads, the same all this classifier's fit
                    k: torch.randperm(len(x), generator=gen, device=dev)[: cfg.ratio_check_rows]
                    for k, x in (("un", x_un), ("mix", x_mix))
                }  # fmt: skip
                first, loss = 1, torch.tensor(float("nan"))
            check_un, check_mix = x_un[rows["un"]], x_mix[rows["mix"]]
            self.nets[name].train().requires_grad_(True)
            step = first - 1
            for step in range(first, cfg.ratio_steps + 1):
                i_un = torch.randint(len(x_un), (cfg.ratio_batch,), generator=gen, device=dev)
                i_mix = torch.randint(len(x_mix), (cfg.ratio_batch,), generator=gen, device=dev)
                loss = self.bce(name, x_un[i_un], x_mix[i_mix])
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                if step % cfg.ratio_check_every == 0:
                    gap = self.gap(name, check_un, check_mix)
                    log.info(  # a fit can run an hour at the paper's sizes: show where it is
                        "ratio %s: step %d of at most %d, gap %.3f (stops above %.2f)",
                        name, step, cfg.ratio_steps, gap, threshold,
                    )  # fmt: skip
                    if gap > threshold:
                        break
                    if partial is not None:
                        seconds = (before[0] + time.perf_counter() - start[0],
                                   before[1] + jobtimes.cpu_seconds() - start[1])  # fmt: skip
                        self._save_partial(partial, gen, i, step, rows, loss, info, seconds)
            self.nets[name].requires_grad_(False)
            info[f"ratio_steps_{name}"] = step
            info[f"ratio_final_gap_{name}"] = self.gap(name, check_un, check_mix)
            info[f"ratio_train_loss_{name}"] = float(loss.detach())
        return info

    def _save_partial(
        self, path: Path, gen, classifier: int, step: int, rows, loss, info, seconds
    ) -> None:
        state = {
            "seconds": seconds,  # (wall, CPU) of the fit so far, over its pieces
            "classifier": classifier, "step": step, "loss": loss.detach(),
            # clones: a slice of randperm would save the whole permutation (16 MB at 2M rows)
            "rows": {k: v.clone() for k, v in rows.items()},
            "info": dict(info), "nets": {n: net.state_dict() for n, net in self.nets.items()},
            "opt": self.opt.state_dict(), "generator": gen.get_state(),
            "torch": torch.get_rng_state(),  # dropout draws from the global stream
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "code": self._code,
        }  # fmt: skip
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def _load_partial(self, path: Path | None, gen) -> dict[str, Any] | None:
        """A stopped fit's state, put back into the nets, optimizer and streams (None: none)."""
        if path is None or not path.exists():
            return None
        saved = read_saved(path, "delete it and the fit starts over")
        if _fitted_by_other_code(path, saved.get("code")):
            self._code = _mixed(saved["code"])  # so the cache it ends in warns on every load
        for n, net in self.nets.items():
            net.load_state_dict(saved["nets"][n])
        self.opt.load_state_dict(saved["opt"])  # its state follows the parameters' device
        gen.set_state(saved["generator"])
        torch.set_rng_state(saved["torch"])
        if saved["cuda"] is not None:
            torch.cuda.set_rng_state(saved["cuda"], self.device)
        saved["rows"] = {k: v.to(self.device) for k, v in saved["rows"].items()}
        return saved

    def _fit_heldout(self, data, gen: torch.Generator) -> dict[str, float]:
        """Suite option: the classifiers trained together on the rows outside held-out
        trajectories, early-stopped on the held-out loss (patience ``ratio_patience``
        evaluations, every ``ratio_eval_every`` steps); the best weights kept."""
        cfg = self.cfg
        un, mix = data["un"].tensors, data["mix"].tensors
        x_un, x_mix = self.features(un), self.features(mix)
        (tr_un, ho_un), (tr_mix, ho_mix) = (
            self._holdout_split(un, gen),
            self._holdout_split(mix, gen),
        )
        cap = 16_384  # held-out rows evaluated per set: bounds the cost of each evaluation
        ho_un, ho_mix = ho_un[:cap], ho_mix[:cap]
        early_stopping = len(ho_un) > 0 and len(ho_mix) > 0
        best, best_state, bad, heldout = float("inf"), None, 0, float("nan")
        self.set_frozen(False)
        step = 0
        for step in range(1, cfg.ratio_steps + 1):
            i_un = tr_un[
                torch.randint(len(tr_un), (cfg.ratio_batch,), generator=gen, device=self.device)
            ]
            i_mix = tr_mix[
                torch.randint(len(tr_mix), (cfg.ratio_batch,), generator=gen, device=self.device)
            ]
            loss = self.loss(x_un[i_un], x_mix[i_mix])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            if early_stopping and (step % cfg.ratio_eval_every == 0 or step == cfg.ratio_steps):
                self.set_frozen(True)
                with torch.no_grad():
                    heldout = float(self.loss(x_un[ho_un], x_mix[ho_mix]))
                self.set_frozen(False)
                if heldout < best - 1e-5:
                    best, bad = heldout, 0
                    best_state = {n: copy.deepcopy(self.nets[n].state_dict()) for n in self.names}
                else:
                    bad += 1
                    if bad >= cfg.ratio_patience:
                        break
        if best_state is not None:
            for n, state in best_state.items():
                self.nets[n].load_state_dict(state)
        self.set_frozen(True)
        acc = float("nan")
        if early_stopping:
            with torch.no_grad():
                tau_un = self.occupancy_ratio(x_un[ho_un])
                tau_mix = self.occupancy_ratio(x_mix[ho_mix])
            acc = 0.5 * float((tau_un > 1).float().mean() + (tau_mix <= 1).float().mean())
        return {
            "ratio_steps_run": step,
            "ratio_train_loss": float(loss.detach()),
            "ratio_heldout_loss": best if best_state is not None else heldout,
            "ratio_heldout_balanced_acc": acc,
        }

    @torch.no_grad()
    def table(self, data, chunk: int = 65_536) -> dict[str, torch.Tensor]:
        """tau of every row of D_MIX and D_UN (and of its next state), frozen classifiers:
        per source ``[N, 2]`` (tau(s), tau(s')) or ``[N, 1]`` (tau(s, a)); ``[K, N, ...]``
        for K members (each member's classifiers)."""
        k, out = self.members, {}
        for source in ("mix", "un"):
            t = data[source].tensors
            xs = [self.features(t)] + (
                [self.features(t, True)] if self.cfg.ratio_form == "state" else []
            )
            cols = [
                torch.cat(
                    [
                        self.occupancy_ratio(
                            x[i : i + chunk] if k is None else x[i : i + chunk].expand(k, -1, -1)
                        )
                        for i in range(0, len(x), chunk)
                    ],
                    -1,
                )
                for x in xs
            ]
            out[source] = torch.stack(cols, -1)
        return out
