"""Update steps per second of registered methods vs a minimal twin-Q + tanh-Gaussian actor update.

Every method is built from the registry with its published sizes (UNIQ: critic batch
256 + 256, actor batch 512, 256x2 MLPs) on synthetic device-resident data with the
dimensions of SafetyPointGoal1 (obs 60, act 2). Pretraining is shortened (it is timed
apart, not counted). The methods are timed *interleaved*, in rounds of ``--block`` updates
(one block of each per round), and the median rate over rounds is reported, so a noisy,
shared machine slows all of them alike.

The reference, ``minimal``, is the least work an update with these networks does: one
twin-Q TD step on 512 rows with V(s') = Q_target(s', a'~pi) - alpha log pi, one
advantage-weighted BC step on 512 rows (one policy pass reused for V(s)), Polyak targets.
``minimal+V`` adds the one term of UNIQ's critic loss that is more than a TD step, the
(1 - gamma) E[V(s)] through the online critic with its gradient, on 512 rows with the
policy sample the actor already drew: one more forward and backward of the twin Q (about
+40% of the arithmetic), so both yardsticks are reported.

    uv run python benchmarks/update_speed.py --threads 2 --steps 200
    uv run python benchmarks/update_speed.py --algos uniq bc-mix dwbc safedice

A second table puts each method's update against its physical limit on one CPU thread
(design.md section 9): its FLOPs (torch.utils.flop_counter's formulas), the time its
matmuls alone take at this machine's sgemm rate for their shapes, and the fraction of that
limit the update reaches, compiled (``compile: true``, uniq.compiled) and, with
``--eager``, not, at each ``--limit-hidden`` width:

    uv run python benchmarks/update_speed.py --algos uniq safedice --limit-only --eager

Writes the Markdown tables to stdout and to ``benchmarks/out/update_speed.md``.
"""

from __future__ import annotations

import argparse
import copy
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import flop_registry  # noqa: E402

from envs.tasks import TaskSpec  # noqa: E402
from uniq import registry  # noqa: E402
from uniq.atomic import atomic_write_text  # noqa: E402
from uniq.measure import sync, synthetic  # noqa: E402  (shared with uniq-bench plan)
from uniq.method import Method  # noqa: E402
from uniq.nets import TanhGaussianPolicy, TwinQ, soft_update  # noqa: E402
from uniq.seeding import seed_everything  # noqa: E402
from uniq.sources import make_sources  # noqa: E402

SHORT_PRETRAIN = {"uniq": {"ratio_steps": 20}, "safedice": {"classifier_steps": 20}}
"""Pretraining shortened to a few steps: this benchmark times the updates only."""
AUTHORS_RATE = 27.0
"""UNIQ reference code: ~27 update steps/s on 2 CPU threads (reported to the suite)."""


class Minimal(Method):
    """Twin-Q TD + advantage-weighted BC, the sizes of UNIQ's update; the speed yardstick."""

    name = ""  # not registered

    def __init__(
        self, spec, data, device, batch=512, gamma=0.99, alpha=1e-3, tau=0.005, online_v=False
    ):
        super().__init__(None, spec, data, device, 0)
        self.batch, self.gamma, self.alpha, self.tau = batch, gamma, alpha, tau
        self.online_v = online_v
        self.actor = TanhGaussianPolicy(spec.obs_dim, spec.act_dim).to(device)
        self.critic = TwinQ(spec.obs_dim, spec.act_dim).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=1e-4)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=3e-4)

    def batches(self):
        return {"critic": ("mix", self.batch), "actor": ("mix", self.batch)}

    def update(self, batch):
        c, a = batch["critic"], batch["actor"]
        mean, log_std = self.actor(a["observations"])
        with torch.no_grad():
            a_next, logp_next = self.actor.sample(c["next_observations"])
            a_pi, logp_pi = self.actor.dist_sample(mean, log_std)
            n = len(a_next)
            q = self.critic_target.min_q(
                torch.cat([c["next_observations"], a["observations"], a["observations"]]),
                torch.cat([a_next, a_pi, a["actions"]]),
            )
            v_next = q[:n] - self.alpha * logp_next
            v_act = q[n : 2 * n] - self.alpha * logp_pi
            y = self.gamma * (1 - c["terminals"]) * v_next  # (learners see no rewards)
            adv = (q[2 * n :] - v_act).clamp(max=10)
            w = torch.exp(adv - adv.max())
            w = (w / w.mean()).clamp(max=100)
        if self.online_v:  # + (1 - gamma) E[V(s)], V(s) = min_i Q_i(s, a~pi) - alpha log pi
            q1, q2 = self.critic(
                torch.cat([c["observations"], a["observations"]]), torch.cat([c["actions"], a_pi])
            )
            q1, q2, v = q1[:n], q2[:n], torch.min(q1[n:], q2[n:]) - self.alpha * logp_pi
        else:
            q1, q2 = self.critic(c["observations"], c["actions"])
        critic_loss = (q1 - y).square().mean() + (q2 - y).square().mean()
        if self.online_v:
            critic_loss = critic_loss + (1 - self.gamma) * v.mean()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        actor_loss = -(w * self.actor.dist_log_prob(mean, log_std, a["actions"])).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        soft_update(self.critic_target, self.critic, self.tau)
        return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach()}


def build(name: str, spec, device, seed: int = 0, overrides: dict | None = None):
    generator = seed_everything(seed, device)
    un = synthetic(spec, 10, 0.5, 1)
    mix = synthetic(spec, 40, 0.0, 2)
    data = make_sources(un, mix, device, generator)
    if name in ("minimal", "minimal+V"):
        return Minimal(spec, data, device, online_v=name == "minimal+V"), 0.0, generator
    cls = registry.get_method(name)
    cfg = cls.Config(**SHORT_PRETRAIN.get(name, {}), **(overrides or {}))
    method = cls(cfg, spec, data, device, seed)
    t = time.perf_counter()
    method.pretrain()
    return method, time.perf_counter() - t, generator


def step(method: Method) -> None:
    batch = {k: method.data[src].sample(n) for k, (src, n) in method.batches().items()}
    method.update(batch)


def measure(names, device, steps: int, block: int, warmup: int) -> dict[str, dict]:
    spec = TaskSpec("SafetyPointGoal1-v0", "navigation", obs_dim=60, act_dim=2)
    methods = {}
    for name in names:
        method, pre_s, _ = build(name, spec, device)
        for _ in range(warmup):
            step(method)
        methods[name] = (method, pre_s)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(max(1, steps // block)):
        for name, (method, _) in methods.items():  # interleaved: same machine conditions
            sync(device)
            t = time.perf_counter()
            for _ in range(block):
                step(method)
            sync(device)
            rates[name].append(block / (time.perf_counter() - t))
    return {
        n: {"rate": statistics.median(r), "min": min(r), "max": max(r), "pretrain_s": methods[n][1]}
        for n, r in rates.items()
    }


# ---------------------------------------------------------------------------- the sgemm limit
MATMULS = ("mm", "addmm", "bmm", "baddbmm")
"""The aten ops an update's arithmetic goes through (nn.Linear, BatchedLinear, their grads)."""


class MatmulRecorder(TorchDispatchMode):
    """Every matmul of the code run inside it: its op, operand shapes and strides, and FLOPs.

    FLOPs are torch.utils.flop_counter's formulas (``flop_registry``), applied here rather
    than through ``FlopCounterMode``, whose module tracker does not allow the
    ``torch.autograd.grad`` of a gradient penalty inside it."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[Any, tuple]] = []
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        packet = func._overloadpacket
        if packet in flop_registry:
            self.flops += flop_registry[packet](*args, **(kwargs or {}), out_val=out)
        if packet.__name__ in MATMULS:
            layout = tuple(
                (tuple(a.shape), a.stride()) if isinstance(a, torch.Tensor) else a for a in args
            )
            self.calls.append((func, layout))
        return out


def update_matmuls(method: Method) -> MatmulRecorder:
    """The matmuls and FLOPs of one update of ``method`` (run eagerly: the same maths as
    its compiled update, whose generated code may turn a matrix-vector product into a
    reduction)."""
    with MatmulRecorder() as rec:
        step(method)
    return rec


class SgemmLimit:
    """One thread's time for an update's matmuls alone: each distinct (op, shapes,
    strides) run back to back on random operands (hot caches) as many times as the update
    runs it. The update's own FLOPs at this machine's sgemm rate for its shapes: its
    physical limit on a CPU thread (design.md section 9)."""

    def __init__(self, calls: list[tuple[Any, tuple]], device: torch.device):
        groups: dict[tuple, int] = {}
        for call in calls:
            groups[call] = groups.get(call, 0) + 1
        self.groups = [(func, _operands(layout, device), n) for (func, layout), n in groups.items()]

    def run(self, updates: int) -> None:
        for func, args, n in self.groups:
            for _ in range(n * updates):
                func(*args)


def _operands(layout: tuple, device: torch.device) -> list:
    """Random tensors with the recorded shapes and strides (broadcast biases included)."""
    out = []
    for a in layout:
        if isinstance(a, tuple) and len(a) == 2 and isinstance(a[0], tuple):
            shape, stride = a
            span = 1 + sum((d - 1) * st for d, st in zip(shape, stride, strict=True))
            out.append(torch.randn(span, device=device).as_strided(shape, stride))
        else:
            out.append(a)
    return out


def measure_limit(
    arms: dict[str, tuple[str, dict]], device, steps: int, block: int, warmup: int
) -> dict[str, dict]:
    """Per arm (label: (registered name, config overrides)): FLOPs of one update, CPU
    seconds per update, the sgemm limit's CPU seconds per update, and their ratio.

    Arms and their limits run interleaved, in rounds of ``block`` updates, and each is the
    median over rounds of *process CPU time*: on a shared, loaded machine a one-thread
    process's CPU time leaves out the time other processes hold the core, which wall time
    does not, and both sides of the ratio use the same clock. Compile warm-up (the first
    updates of a compiled arm) is timed apart, in wall seconds.
    """
    spec = TaskSpec("SafetyPointGoal1-v0", "navigation", obs_dim=60, act_dim=2)
    built = {}
    for label, (name, overrides) in arms.items():
        eager = build(name, spec, device, overrides=dict(overrides, compile=False))[0]
        rec = update_matmuls(eager)
        method = build(name, spec, device, overrides=overrides)[0]
        t = time.perf_counter()
        step(method)  # a compiled update compiles here
        sync(device)
        first_s = time.perf_counter() - t
        for _ in range(warmup):
            step(method)
        built[label] = (method, SgemmLimit(rec.calls, device), rec.flops, first_s)
    cpu: dict[str, list[float]] = {a: [] for a in arms}
    lim: dict[str, list[float]] = {a: [] for a in arms}
    for _ in range(max(1, steps // block)):
        for label, (method, limit, _, _) in built.items():
            sync(device)
            t = time.process_time()
            for _ in range(block):
                step(method)
            sync(device)
            cpu[label].append((time.process_time() - t) / block)
            t = time.process_time()
            limit.run(block)
            sync(device)
            lim[label].append((time.process_time() - t) / block)
    out = {}
    for label, (_, _, flops, first_s) in built.items():
        c, ell = statistics.median(cpu[label]), statistics.median(lim[label])
        out[label] = {
            "gflop": flops / 1e9, "cpu_s": c, "limit_s": ell, "fraction": ell / c,
            "gflops": flops / 1e9 / c, "first_s": first_s,
        }  # fmt: skip
    return out


def limit_table(results: dict[str, dict], steps: int, block: int) -> str:
    lines = [
        f"The update against its sgemm limit (1 thread; CPU time, median over rounds of {block}, "
        f"{steps} timed updates per arm, arms and limits interleaved). limit = the update's "
        "matmuls alone at this machine's sgemm rate for their shapes; fraction = limit / update.",
        "",
        "| method | GFLOP/update | ms/update (CPU) | limit ms | fraction of limit | GFLOP/s "
        "| first update s (wall) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in results.items():
        lines.append(
            f"| {label} | {r['gflop']:.3f} | {1000 * r['cpu_s']:.2f} | {1000 * r['limit_s']:.2f} "
            f"| {r['fraction']:.2f} | {r['gflops']:.1f} | {r['first_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def table(results: dict, threads: int, steps: int, block: int) -> str:
    lines = [
        f"Update steps/s (median over rounds of {block}; {steps} timed steps each; "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{threads} thread(s)). Authors' UNIQ code: ~{AUTHORS_RATE:g} steps/s on 2 threads.",
        "",
        "| device | method | steps/s | range | vs minimal | vs minimal+V | ms/step |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for device, res in results.items():
        rels = []
        for ref in ("minimal", "minimal+V"):
            base = res.get(ref, {}).get("rate")
            rels.append({n: f"{r['rate'] / base:.2f}x" if base else "-" for n, r in res.items()})
        for name, r in res.items():
            lines.append(
                f"| {device} | {name} | {r['rate']:.1f} | {r['min']:.1f}-{r['max']:.1f} "
                f"| {rels[0][name]} | {rels[1][name]} | {1000 / r['rate']:.2f} |"
            )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines += ["", f"Peak RSS of the benchmark process: {rss:.0f} MiB."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["uniq"], help="registered names")
    parser.add_argument("--steps", type=int, default=200, help="timed updates per method")
    parser.add_argument("--block", type=int, default=20, help="updates per timed block")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu (+ cuda)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/out/update_speed.md"))
    parser.add_argument(
        "--limit-hidden", nargs="*", type=int, default=[128, 256],
        help="hidden widths of the sgemm-limit table (1 thread, CPU); none: no table",
    )  # fmt: skip
    parser.add_argument("--limit-only", action="store_true", help="only the sgemm-limit table")
    parser.add_argument(
        "--eager", action="store_true", help="the limit table also times compile=false"
    )
    args = parser.parse_args(argv)
    algos = [a for a in args.algos if a not in ("minimal", "minimal+V")]
    text = ""
    if not args.limit_only:
        torch.set_num_threads(args.threads)
        devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
        names = ["minimal", "minimal+V"] + algos
        results = {
            d: measure(names, torch.device(d), args.steps, args.block, args.warmup) for d in devices
        }
        text = table(results, args.threads, args.steps, args.block) + "\n"
    if args.limit_hidden:
        torch.set_num_threads(1)  # the limit is one thread's
        arms = {}
        for h in args.limit_hidden:
            for a in algos:
                for c in (False, True) if args.eager else (True,):
                    arms[f"{a} h{h}" + ("" if c else " eager")] = (a, {"hidden": h, "compile": c})
        res = measure_limit(arms, torch.device("cpu"), args.steps, args.block, args.warmup)
        text += limit_table(res, args.steps, args.block)
    print(text)
    atomic_write_text(args.out, f"Command: `{' '.join(['python', *sys.argv])}`\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
