"""Step time of descentlab's optimizers against the torch kernels they are built on and against
pytorch-optimizer's, and the cost of the first step in a fresh process.

Per layout (float32, gradients fixed and random), every configuration is built once and
warmed up; then each round times one unit of ``k = 5`` steps of every configuration (so each
Lookahead unit holds exactly one sync), back to back in an order that rotates from round to
round, and each ratio is taken *within* a round. The tables give the median over rounds: a
burst of load on a shared machine hits both sides of a ratio alike, or one round only.

The first-step table runs a fresh Python process per measurement, ours and torch's alternately,
on a 795k-parameter MLP: timed are importing descentlab.optim, building the optimizer and its
first step. torch imports torch._dynamo lazily when the first optimizer of a process is built
(2-3 s on this machine, for torch's own as much as for ours); a throwaway torch optimizer pays
that before the timer on both sides, so the difference is what ours adds.

    .venv/bin/python bench/optim_step.py                     # the recorded tables
    .venv/bin/python bench/optim_step.py --layouts 10x100000 --rounds 5 --fresh 2   # a quick run
    .venv/bin/python bench/optim_step.py --registry          # also every registry entry vs torch's paths
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import time

from descentlab.openmp import set_wait_default  # noqa: E402

set_wait_default()  # before torch loads OpenMP (see descentlab/openmp.py)

import torch

from descentlab.optim import OPTIMIZERS, SWATS, make_optimizer

K = 5  # Lookahead's k; every timed unit is K steps

# weight-sized passes per step: params (r+w) + grad (r) + each state tensor (r+w)
PASSES = {"sgd": 3, "momentum": 5, "nesterov": 5, "adagrad": 5, "rmsprop": 5, "adadelta": 7, "adam": 7,
          "amsgrad": 9, "adamw": 7, "nadam": 7, "radam": 7, "sgdw": 5, "swats": 7}
TORCH_PATHS = ("loop", "foreach", "fused")


def make_params(n_tensors: int, size: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(size, generator=gen).requires_grad_() for _ in range(n_tensors)]
    for p in params:
        p.grad = torch.randn(size, generator=gen) * 1e-3
    return params


def swats_in_sgd_phase(params):
    opt = SWATS(params, lr=1e-3)
    for group in opt.param_groups:  # as if the switch test had fired at step 1
        group.update(phase="sgd", switch_step=1, sgd_lr=0.01, switch_lr=group["lr"], step=1)
    return opt


class Draw:
    """``torch.randn`` of ``numel`` numbers per step: the least any gradient noise costs."""

    def __init__(self, numel: int) -> None:
        self.numel = numel

    def step(self) -> None:
        torch.randn(self.numel)


def configurations(n_tensors: int, size: int) -> dict:
    """label -> a factory of something with ``step()``."""
    import pytorch_optimizer as po

    def params():
        return make_params(n_tensors, size)

    return {
        "torch fused Adam": lambda: torch.optim.Adam(params(), lr=1e-3, fused=True),
        "torch fused SGD-momentum": lambda: torch.optim.SGD(params(), lr=1e-2, momentum=0.9, fused=True),
        "torch fused SGD": lambda: torch.optim.SGD(params(), lr=1e-2, fused=True),
        "torch.randn": lambda: Draw(n_tensors * size),
        "lookahead:adam": lambda: make_optimizer("lookahead:adam", params()),
        "swats (Adam phase)": lambda: make_optimizer("swats", params()),
        "swats (SGD phase)": lambda: swats_in_sgd_phase(params()),
        "sgdw": lambda: make_optimizer("sgdw", params()),
        "noisy:sgd": lambda: make_optimizer("noisy:sgd", params()),
        "pytorch-optimizer Lookahead(torch Adam)": lambda: po.Lookahead(torch.optim.Adam(params(), lr=1e-3)),
        "pytorch-optimizer Lookahead(torch fused Adam)":
            lambda: po.Lookahead(torch.optim.Adam(params(), lr=1e-3, fused=True)),
        "pytorch-optimizer SWATS": lambda: po.SWATS(params(), lr=1e-3),
        "pytorch-optimizer SWATS foreach": lambda: po.SWATS(params(), lr=1e-3, foreach=True),
        "pytorch-optimizer SGDW": lambda: po.SGDW(params(), lr=1e-2, momentum=0.9, weight_decay=1e-2),
        "pytorch-optimizer SGDW foreach":
            lambda: po.SGDW(params(), lr=1e-2, momentum=0.9, weight_decay=1e-2, foreach=True),
    }


def _unit(opt) -> float:
    """Seconds per step over one unit of K steps."""
    start = time.perf_counter()
    for _ in range(K):
        opt.step()
    return (time.perf_counter() - start) / K


def paired_rounds(n_tensors: int, size: int, rounds: int) -> list[dict[str, float]]:
    """``rounds`` dicts label -> seconds per step, every configuration timed once per round."""
    built = {}
    for label, make in configurations(n_tensors, size).items():
        built[label] = make()
        for _ in range(2):  # state allocated, kernels and caches warm
            _unit(built[label])
    labels = list(built)
    out = []
    for r in range(rounds):
        order = labels[r % len(labels):] + labels[:r % len(labels)]
        out.append({label: _unit(built[label]) for label in order})
        print(f"  {n_tensors}x{size}: round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    phase = built["swats (Adam phase)"].phases()[0].phase
    if phase != "adam":
        print(f"  warning: swats left its Adam phase during the run ({phase})", file=sys.stderr)
    return out


def _peer(t: dict[str, float], name: str) -> float:
    return min(t[f"pytorch-optimizer {name}"], t[f"pytorch-optimizer {name} foreach"])


#: (check, ratio of one round's times, target ratio or None for information only)
CHECKS = [
    ("lookahead:adam / torch fused Adam", lambda t: t["lookahead:adam"] / t["torch fused Adam"], 1.25),
    ("swats (Adam phase) / torch fused Adam", lambda t: t["swats (Adam phase)"] / t["torch fused Adam"], 2.0),
    ("swats (SGD phase) / torch fused SGD-momentum",
     lambda t: t["swats (SGD phase)"] / t["torch fused SGD-momentum"], 1.3),
    ("sgdw / torch fused SGD-momentum", lambda t: t["sgdw"] / t["torch fused SGD-momentum"], 1.5),
    ("noisy:sgd / (torch fused SGD + torch.randn of the same size)",
     lambda t: t["noisy:sgd"] / (t["torch fused SGD"] + t["torch.randn"]), 1.3),
    ("lookahead:adam / pytorch-optimizer Lookahead(torch Adam)",
     lambda t: t["lookahead:adam"] / t["pytorch-optimizer Lookahead(torch Adam)"], 0.5),
    ("lookahead:adam / pytorch-optimizer Lookahead(torch fused Adam)",
     lambda t: t["lookahead:adam"] / t["pytorch-optimizer Lookahead(torch fused Adam)"], None),
    ("swats (Adam phase) / pytorch-optimizer SWATS (faster of default, foreach)",
     lambda t: t["swats (Adam phase)"] / _peer(t, "SWATS"), 0.5),
    ("sgdw / pytorch-optimizer SGDW (faster of default, foreach)", lambda t: t["sgdw"] / _peer(t, "SGDW"), 0.5),
]


def _verdict(value: float, target: float | None) -> str:
    if target is None:
        return "(info)"
    return "met" if value <= target else "**not met**"


def print_layout(n_tensors: int, size: int, rounds: list[dict[str, float]]) -> None:
    print(f"## {n_tensors} tensors x {size:,} = {n_tensors * size / 1e6:.1f}M float32, "
          f"median of {len(rounds)} paired rounds\n")
    print("| configuration | ms per step |\n|---|---:|")
    for label in rounds[0]:
        print(f"| {label} | {statistics.median(t[label] for t in rounds) * 1e3:.2f} |")
    print("\n| target check | ratio (median) | lowest, highest round | target | |\n|---|---:|---:|---|---|")
    for check, ratio, target in CHECKS:
        values = [ratio(t) for t in rounds]
        median = statistics.median(values)
        print(f"| {check} | {median:.2f} | {min(values):.2f}, {max(values):.2f} | "
              f"{'<= ' + format(target, '.2f') if target else ''} | {_verdict(median, target)} |")
    print()


# --- the first step in a fresh process ----------------------------------------------------------

FIRST_STEP_CHILD = r"""
import sys, time
from descentlab.openmp import set_wait_default
set_wait_default()
import torch
torch.set_num_threads(int(sys.argv[2]))
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(784, 1000), torch.nn.ReLU(), torch.nn.Linear(1000, 10))
model(torch.randn(64, 784)).square().mean().backward()
torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # torch's lazy imports, outside the timer
start = time.perf_counter()
exec(sys.argv[1])  # builds `opt`
opt.step()
print(time.perf_counter() - start)
"""

#: (ours, torch's own counterpart), each a statement that builds ``opt``
FIRST_STEP_PAIRS = [
    ("from descentlab.optim import make_optimizer; opt = make_optimizer('lookahead:adam', model.parameters())",
     "opt = torch.optim.Adam(model.parameters(), lr=1e-3)"),
    ("from descentlab.optim import make_optimizer; opt = make_optimizer('swats', model.parameters())",
     "opt = torch.optim.Adam(model.parameters(), lr=1e-3)"),
    ("from descentlab.optim import make_optimizer; opt = make_optimizer('sgdw', model.parameters())",
     "opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)"),
    ("from descentlab.optim import make_optimizer; opt = make_optimizer('noisy:sgd', model.parameters())",
     "opt = torch.optim.SGD(model.parameters(), lr=1e-2)"),
]


def first_step_seconds(statement: str, threads: int) -> float:
    out = subprocess.run([sys.executable, "-c", FIRST_STEP_CHILD, statement, str(threads)], check=True,
                         capture_output=True, text=True, env=os.environ.copy())
    return float(out.stdout.strip().splitlines()[-1])


def print_first_steps(repeats: int, threads: int) -> None:
    print(f"## First step in a fresh process (795k-parameter MLP; median of {repeats} processes each, "
          "alternating)\n")
    print("| ours (import + build + first step) | s | torch's own (build + first step) | s | difference s | "
          "target | |\n|---|---:|---|---:|---:|---|---|")
    for ours, theirs in FIRST_STEP_PAIRS:
        a, b = [], []
        for _ in range(repeats):
            a.append(first_step_seconds(ours, threads))
            b.append(first_step_seconds(theirs, threads))
        diff = statistics.median(x - y for x, y in zip(a, b))
        name = ours.split("make_optimizer(")[1].split(",")[0]
        print(f"| {name} | {statistics.median(a):.3f} | {theirs.split('(')[0][6:]} | {statistics.median(b):.3f} | "
              f"{diff:+.3f} | <= 0.20 | {_verdict(diff, 0.2)} |")
    print()


# --- optional: every registry entry against torch's own kernel paths ----------------------------

def copy_bandwidth(numel: int) -> float:
    """Bytes per second of ``dst.copy_(src)`` (one read + one write of numel float32), best of 9."""
    src, dst = torch.randn(numel), torch.empty(numel)
    best = float("inf")
    for _ in range(9):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * 4 * numel / best


def torch_class_path(name: str, params, path: str):
    spec = OPTIMIZERS[name]
    flags = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[path]
    try:
        opt = spec.factory(params, **{**spec.defaults, "lr": spec.lr, **flags})
        opt.step()  # torch checks fused support on the first step
        return opt
    except (TypeError, RuntimeError, ValueError):
        return None  # torch has no such path for this class


def print_registry(n_tensors: int, size: int, rounds: int) -> None:
    """Per registry entry, paired rounds of ours against each of torch's paths (built afresh per round)."""
    numel = n_tensors * size
    pass_ms = 4 * numel / copy_bandwidth(numel) * 1e3
    print(f"## Registry, {n_tensors} tensors x {size:,} (median of {rounds} paired rounds; "
          "ours is torch's class where torch has the algorithm)\n")
    print("| optimizer | ours ms | bound ms | ours/bound | ours/torch loop | ours/torch foreach | ours/torch fused |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in OPTIMIZERS:
        times: dict[str, list[float]] = {}
        for _ in range(rounds):
            opts = {"ours": make_optimizer(name, make_params(n_tensors, size))}
            if OPTIMIZERS[name].source == "torch":
                for path in TORCH_PATHS:
                    opt = torch_class_path(name, make_params(n_tensors, size), path)
                    if opt is not None:
                        opts[path] = opt
            for label, opt in opts.items():
                opt.step()
                times.setdefault(label, []).append(_unit(opt))
        ours = statistics.median(times["ours"])
        cells = [f"{statistics.median(o / t for o, t in zip(times['ours'], times[p])):.2f}" if p in times else "—"
                 for p in TORCH_PATHS]
        print(f"| {name} | {ours * 1e3:.1f} | {PASSES[name] * pass_ms:.1f} | {ours * 1e3 / (PASSES[name] * pass_ms):.2f}"
              f" | " + " | ".join(cells) + " |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", default="20x500000,1000x10000", help="comma-separated TENSORSxSIZE")
    parser.add_argument("--rounds", type=int, default=15, help="paired rounds per layout")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fresh", type=int, default=5, help="fresh processes per side for the first-step table "
                                                            "(0: skip it)")
    parser.add_argument("--registry", action="store_true", help="also time every registry entry against torch's paths")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# optim_step — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC — torch "
          f"{torch.__version__}, {args.threads} threads, {K} steps per unit, load {os.getloadavg()[0]:.2f}\n")
    for layout in args.layouts.split(","):
        n_tensors, size = (int(x) for x in layout.lower().split("x"))
        print_layout(n_tensors, size, paired_rounds(n_tensors, size, args.rounds))
        if args.registry:
            print_registry(n_tensors, size, max(3, args.rounds // 5))
    if args.fresh:
        print_first_steps(args.fresh, args.threads)
    print(f"(load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())})")


if __name__ == "__main__":
    main()
