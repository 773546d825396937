"""Compiled updates (uniq.compiled) give the eager update's numbers within the stated
tolerance, one seed and seeds batched; the switch off is the eager update; no compiler
means eager with a warning."""

from __future__ import annotations

import logging

import pytest
import torch
from test_baselines import SPEC as SPEC3
from test_seed_batching import _uniq_data
from test_train import TINY

from baselines.safedice import SafeDICE, gradient_penalty, mlp_input_gradient
from uniq import compiled
from uniq.algorithm import UNIQ
from uniq.method import build_config
from uniq.nets import mlp

CASES = {
    "uniq": (UNIQ, dict(TINY, ratio_steps=30)),
    "uniq-expectile": (UNIQ, dict(TINY, ratio_steps=30, value_form="expectile")),
    "safedice": (SafeDICE, dict(hidden=16, batch_size=32, classifier_steps=30)),
}
UPDATES = 5


@pytest.fixture(scope="module", autouse=True)
def _own_kernel_cache(tmp_path_factory):
    """Kernels compiled here go to a cache of this run's own: a machine's shared inductor
    cache (/tmp/torchinductor_$USER) once held an entry, left by an earlier process, that
    aborted every later process loading it, while a fresh cache compiled and ran cleanly."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.mktemp("inductor")))
        yield


def _pair(cls, overrides, members):
    """(eager, compiled) methods in the same state: built and pretrained from one seed,
    each on its own copy of the data (its samplers' streams in the same state)."""
    out = []
    for flag in (False, True):
        data = _uniq_data()
        cfg = build_config(cls.Config, dict(overrides, compile=flag))
        if members is None:
            torch.manual_seed(0)
            method = cls(cfg, SPEC3, data, "cpu", 0)
            method.pretrain()
        else:
            plains = []
            for seed in range(members):
                torch.manual_seed(seed)
                plains.append(cls(cfg, SPEC3, data, "cpu", seed))
                plains[-1].pretrain()
            method = cls(cfg, SPEC3, data, "cpu", 0, members=members)
            method.adopt(plains)
        out.append(method)
    return out


@pytest.mark.parametrize("members", [None, 2], ids=["one-seed", "batched"])
@pytest.mark.parametrize("case", list(CASES))
def test_compiled_update_matches_eager_within_tolerance(case, members):
    """The same batches and the same noise streams: after UPDATES updates every parameter
    and every logged scalar agrees within compiled.TOLERANCE, and the noise drawn was the
    same (the global stream ends in the same state)."""
    if compiled.available() is not None:
        pytest.skip(compiled.available())
    cls, overrides = CASES[case]
    eager, fast = _pair(cls, overrides, members)
    batches = [
        {key: eager.data[src].sample(n, members) for key, (src, n) in eager.batches().items()}
        for _ in range(UPDATES)
    ]
    start = {id(p): p.detach().clone() for m in (eager, fast) for p in _params(m)}
    ends = []
    for method in (eager, fast):
        torch.manual_seed(123)
        for sampler in method.data.values():
            sampler.generator.manual_seed(7)
        outs = [method.update(b) for b in batches]
        ends.append((outs, torch.rand(1)))
    (out_e, end_e), (out_c, end_c) = ends
    assert torch.equal(end_e, end_c)  # the compiled update drew exactly the eager noise
    for a, b in zip(out_e, out_c, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], **compiled.TOLERANCE)
    for name, opt in eager._stateful().items():
        if not isinstance(opt, torch.optim.Optimizer):
            continue
        fast_opt = getattr(fast, name)
        moved_e, moved_c = torch.zeros(()), torch.zeros(())
        for group, fast_group in zip(opt.param_groups, fast_opt.param_groups, strict=True):
            atol = compiled.param_atol(group["lr"], UPDATES)
            for p, q in zip(group["params"], fast_group["params"], strict=True):
                torch.testing.assert_close(q, p, rtol=compiled.TOLERANCE["rtol"], atol=atol)
                moved_e += (p - start[id(p)]).abs().sum()
                moved_c += (q - start[id(q)]).abs().sum()
        # that tolerance is the size of a few steps: check they were taken, and alike (summed
        # over the network: an element whose gradient is rounding noise may step either way)
        torch.testing.assert_close(moved_c, moved_e, rtol=0.02, atol=0.0)
    # the switch is real: the compiled method ran a compiled loss, the eager one did not
    assert eager._loss_fn == eager.update_loss and fast._loss_fn != fast.update_loss
    assert fast.actor_opt.param_groups[0]["fused"] and not eager.actor_opt.param_groups[0]["fused"]


def _params(method) -> list[torch.Tensor]:
    return [
        p
        for opt in method._stateful().values()
        if isinstance(opt, torch.optim.Optimizer)
        for group in opt.param_groups
        for p in group["params"]
    ]


@pytest.mark.parametrize("members", [None, 3])
def test_written_out_input_gradient_is_autograds(members):
    """mlp_input_gradient gives autograd's grad_x f(x), and the penalty built on it the
    same gradient into the weights as the double backward."""
    torch.manual_seed(0)
    net = mlp(5, 1, 8, 2, members=members)
    x = torch.randn(*(() if members is None else (members,)), 11, 5)
    (want,) = torch.autograd.grad(net(x.requires_grad_(True)).sum(), x)
    torch.testing.assert_close(mlp_input_gradient(net, x.detach()), want, rtol=0, atol=0)
    params = list(net.parameters())
    ref = torch.autograd.grad(
        gradient_penalty(net, x, 0.0).sum(), params, allow_unused=True, materialize_grads=True
    )
    pen = mlp_input_gradient(net, x.detach()).norm(dim=-1).square().mean(-1).sum()
    got_all = torch.autograd.grad(pen, params, allow_unused=True, materialize_grads=True)
    for got, exp in zip(got_all, ref, strict=True):
        torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-7)


def test_without_a_compiler_the_update_runs_eagerly_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(compiled, "available", lambda device_type="cpu": "no C++ compiler")
    cfg = build_config(UNIQ.Config, dict(TINY, occupancy_correction=False, compile=True))
    with caplog.at_level(logging.WARNING, logger="uniq.compiled"):
        method = UNIQ(cfg, SPEC3, _uniq_data(), "cpu", 0)
    assert method._loss_fn == method.update_loss
    assert "no C++ compiler" in caplog.text and "running eagerly" in caplog.text
