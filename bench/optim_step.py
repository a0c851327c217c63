"""Step time of every registry optimizer against torch's own kernel paths, pytorch-optimizer's
SGDW / Lookahead / SWATS, and the memory-bandwidth bound, on ~10M float32 parameters.

Each row times ``optimizer.step()`` alone (gradients are fixed, random): ``--repeats``
rounds, each building every configuration afresh and timing ``--steps`` steps after two
warm-up steps, round-robin; a row keeps its best round (min, not mean: the machine may be
shared, and round-robin spreads a burst of load over all rows alike). The bound
is the bytes an algorithm must move per step (each state tensor read and written once,
params read and written, gradient read) divided by the copy bandwidth measured in this run.

    .venv/bin/python bench/optim_step.py                       # the recorded table (~10M params)
    .venv/bin/python bench/optim_step.py --layouts 10x100000 --repeats 2   # a quick run
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time

from descentlab.openmp import set_wait_default  # noqa: E402

set_wait_default()  # before torch loads OpenMP (see descentlab/openmp.py)

import torch

from descentlab.optim import OPTIMIZERS, SWATS, GradientNoise, cpu_kernels, make_optimizer

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


def time_steps(opt, steps: int, repeats: int, warmup: int = 2) -> float:
    """Best seconds per step over ``repeats`` runs of ``steps`` steps."""
    for _ in range(warmup):
        opt.step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            opt.step()
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def copy_bandwidth(numel: int, repeats: int) -> float:
    """Bytes per second of ``dst.copy_(src)`` (one read + one write of numel float32)."""
    src, dst = torch.randn(numel), torch.empty(numel)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats * 3):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * 4 * numel / best


def torch_class_path(name: str, params, path: str):
    spec = OPTIMIZERS[name]
    flags = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[path]
    try:
        return spec.factory(params, **{**spec.defaults, "lr": spec.lr, **flags})
    except (TypeError, RuntimeError, ValueError):
        return None  # torch has no such path for this class


def swats_in_sgd_phase(params):
    opt = SWATS(params, lr=1e-3)
    for group in opt.param_groups:  # as if the switch test had fired at step 1
        group.update(phase="sgd", switch_step=1, sgd_lr=0.01, switch_lr=group["lr"], step=1)
    return opt


class TorchKernelsOnly:
    """Steps ``optimizer`` with descentlab's numba CPU kernels switched off (torch's kernels only)."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def step(self):
        cpu_kernels.enabled = False
        try:
            self.optimizer.step()
        finally:
            cpu_kernels.enabled = True


def lookahead_two_pass(params):
    """``lookahead:adam`` with its sync as a pass of its own after torch's fused Adam (no folding)."""
    optimizer = make_optimizer("lookahead:adam", params)
    optimizer.fold = False
    return optimizer


def lookahead_sync_steps(n_tensors: int, size: int, rounds: int) -> dict[str, float]:
    """Median over ``rounds`` of (one Lookahead *sync* step / one torch fused Adam step), folded and two-pass.

    The main table times 5 steps with one sync among them, a few rounds: the sync's share is
    small beside this machine's noise. Here every timed Lookahead step is a sync step
    (``fast_steps`` set to ``k - 1`` first), the three are timed back to back in a rotating
    order, and the ratio is taken within each round.
    """
    adam = torch_class_path("adam", make_params(n_tensors, size), "fused")
    folded = make_optimizer("lookahead:adam", make_params(n_tensors, size))
    two_pass = lookahead_two_pass(make_params(n_tensors, size))
    optimizers = {"adam": adam, "folded": folded, "two-pass": two_pass}
    for opt in optimizers.values():
        for _ in range(2):
            opt.step()
    ratios: dict[str, list[float]] = {"folded": [], "two-pass": []}
    names = list(optimizers)
    for round_ in range(rounds):
        times = {}
        for name in names[round_ % 3:] + names[:round_ % 3]:
            opt = optimizers[name]
            if name != "adam":
                opt.fast_steps = opt.k - 1  # this step ends with the sync
            times[name] = _timed(opt.step)
        for name in ratios:
            ratios[name].append(times[name] / times["adam"])
    return {name: statistics.median(values) for name, values in ratios.items()}


def bench_layout(n_tensors: int, size: int, args) -> tuple[list[dict], list[dict]]:
    import pytorch_optimizer as po

    numel = n_tensors * size
    bandwidth = copy_bandwidth(numel, args.repeats)
    pass_seconds = 4 * numel / bandwidth  # one weight-sized pass

    # Every configuration to time, by label; timed round-robin (each round builds each one afresh
    # and times it), keeping each one's best round, so a burst of load on a shared machine
    # cannot bias one row against the row it is compared with.
    makers = {}
    for name in OPTIMIZERS:
        makers[("ours", name)] = lambda p, name=name: make_optimizer(name, p)
        if OPTIMIZERS[name].source == "torch":
            for path in TORCH_PATHS:
                if torch_class_path(name, make_params(1, 4), path) is not None:
                    makers[(path, name)] = lambda p, name=name, path=path: torch_class_path(name, p, path)
    makers[("ours", "lookahead:adam")] = lambda p: make_optimizer("lookahead:adam", p)
    makers[("ours", "lookahead:adam-two-pass")] = lookahead_two_pass
    makers[("ours", "noisy:sgd")] = lambda p: make_optimizer("noisy:sgd", p)
    makers[("ours", "swats-sgd-phase")] = swats_in_sgd_phase
    makers[("ours", "swats-torch-kernels")] = lambda p: TorchKernelsOnly(make_optimizer("swats", p))
    makers[("ours", "sgdw-torch-kernels")] = lambda p: TorchKernelsOnly(make_optimizer("sgdw", p))
    makers[("ours", "noisy:sgd-flat-draw")] = lambda p: GradientNoise(make_optimizer("sgd", p), foreach=True)
    makers[("peer", "lookahead-default")] = lambda p: po.Lookahead(torch.optim.Adam(p, lr=1e-3))
    makers[("peer", "lookahead-fused")] = lambda p: po.Lookahead(torch.optim.Adam(p, lr=1e-3, fused=True))
    makers[("peer", "swats")] = lambda p: po.SWATS(p, lr=1e-3)
    makers[("peer", "swats-foreach")] = lambda p: po.SWATS(p, lr=1e-3, foreach=True)
    makers[("peer", "sgdw")] = lambda p: po.SGDW(p, lr=1e-2, momentum=0.9, weight_decay=1e-2)
    makers[("peer", "sgdw-foreach")] = lambda p: po.SGDW(p, lr=1e-2, momentum=0.9, weight_decay=1e-2, foreach=True)
    best = {key: float("inf") for key in makers}
    rounds: list[dict] = []  # each round's times, for paired ratios
    noise_buffer = torch.empty(numel)
    for round_ in range(args.repeats):
        times = {}
        for key, make in makers.items():
            try:
                times[key] = time_steps(make(make_params(n_tensors, size)), args.steps, 1)
            except Exception as error:  # noqa: BLE001 - a peer that fails is reported, not fatal
                print(f"{key} failed: {error}", file=sys.stderr)
                times[key] = float("nan")
            best[key] = min(best[key], times[key])
        times["draw"] = min(_timed(lambda: noise_buffer.normal_()) for _ in range(3))
        best["draw"] = min(best.get("draw", float("inf")), times["draw"])
        rounds.append(times)
        print(f"  {n_tensors}x{size}: round {round_ + 1}/{args.repeats} done", file=sys.stderr, flush=True)

    rows = []
    for name in OPTIMIZERS:
        ours = best[("ours", name)]
        row = {"optimizer": name, "ms": ours * 1e3, "bound_ms": PASSES[name] * pass_seconds * 1e3}
        for path in TORCH_PATHS:
            if (path, name) in best:
                row[path] = ours / best[(path, name)]
        rows.append(row)

    def peer(t, name):
        return min(t[("peer", name)], t[("peer", f"{name}-foreach")])

    checks = [  # (check, ratio of one set of times, target)
        ("lookahead:adam / torch fused Adam", lambda t: t[("ours", "lookahead:adam")] / t[("fused", "adam")], "<= 1.15"),
        ("lookahead:adam, sync as a pass of its own / torch fused Adam",
         lambda t: t[("ours", "lookahead:adam-two-pass")] / t[("fused", "adam")], "(info)"),
        ("lookahead:adam / pytorch-optimizer Lookahead(torch Adam default)",
         lambda t: t[("ours", "lookahead:adam")] / t[("peer", "lookahead-default")], "<= 0.33"),
        ("lookahead:adam / pytorch-optimizer Lookahead(torch fused Adam)",
         lambda t: t[("ours", "lookahead:adam")] / t[("peer", "lookahead-fused")], "(info)"),
        ("swats (Adam phase) / torch fused Adam", lambda t: t[("ours", "swats")] / t[("fused", "adam")], "<= 1.5"),
        ("swats (SGD phase) / torch fused SGD-momentum",
         lambda t: t[("ours", "swats-sgd-phase")] / t[("fused", "momentum")], "<= 1.3"),
        ("swats (Adam phase) / pytorch-optimizer SWATS (faster of default, foreach)",
         lambda t: t[("ours", "swats")] / peer(t, "swats"), "<= 0.33"),
        ("sgdw / torch fused SGD-momentum", lambda t: t[("ours", "sgdw")] / t[("fused", "momentum")], "<= 1.5"),
        ("sgdw / pytorch-optimizer SGDW (faster of default, foreach)",
         lambda t: t[("ours", "sgdw")] / peer(t, "sgdw"), "<= 1.0"),
        ("(noisy:sgd - torch fused sgd) / drawing the noise (normal_)",
         lambda t: (t[("ours", "noisy:sgd")] - t[("fused", "sgd")]) / t["draw"], "<= 1.1"),
        ("swats (Adam phase), torch kernels only (no numba) / torch fused Adam",
         lambda t: t[("ours", "swats-torch-kernels")] / t[("fused", "adam")], "(info)"),
        ("sgdw, torch kernels only (no numba) / torch fused SGD-momentum",
         lambda t: t[("ours", "sgdw-torch-kernels")] / t[("fused", "momentum")], "(info)"),
        ("(noisy:sgd on the flat multi-tensor path - torch fused sgd) / drawing the noise",
         lambda t: (t[("ours", "noisy:sgd-flat-draw")] - t[("fused", "sgd")]) / t["draw"], "(info)"),
    ]
    targets = [{"check": check, "ratio": ratio(best), "median": statistics.median(ratio(t) for t in rounds),
                "target": target} for check, ratio, target in checks]
    fused_adam, fused_sgdm = best[("fused", "adam")], best[("fused", "momentum")]
    la, noisy, sw_sgd, draw = best[("ours", "lookahead:adam")], best[("ours", "noisy:sgd")], best[("ours", "swats-sgd-phase")], best["draw"]
    po_la_default, po_la_fused = best[("peer", "lookahead-default")], best[("peer", "lookahead-fused")]
    po_sw, po_sgdw = peer(best, "swats"), peer(best, "sgdw")
    absolute = {"copy bandwidth GB/s": bandwidth / 1e9, "torch fused Adam ms": fused_adam * 1e3,
                "torch fused SGD-momentum ms": fused_sgdm * 1e3, "lookahead:adam ms": la * 1e3,
                "pytorch-optimizer Lookahead(Adam) ms": po_la_default * 1e3,
                "pytorch-optimizer Lookahead(fused Adam) ms": po_la_fused * 1e3, "swats SGD phase ms": sw_sgd * 1e3,
                "pytorch-optimizer SWATS ms": po_sw * 1e3, "pytorch-optimizer SGDW ms": po_sgdw * 1e3,
                "noisy:sgd ms": noisy * 1e3, "noise draw ms": draw * 1e3}
    for key, value in absolute.items():
        targets.append({"check": key, "ratio": value, "target": "(absolute)"})
    return rows, targets


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", default="20x500000,1000x10000", help="comma-separated TENSORSxSIZE")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed run (a multiple of Lookahead's k=5)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--sync-rounds", type=int, default=60, help="rounds of the Lookahead sync-step table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# optim_step — {datetime.date.today()} — torch {torch.__version__}, {args.threads} threads, "
          f"steps={args.steps}, repeats={args.repeats}\n")
    for layout in args.layouts.split(","):
        n_tensors, size = (int(x) for x in layout.lower().split("x"))
        rows, targets = bench_layout(n_tensors, size, args)
        print(f"## {n_tensors} tensors x {size:,} = {n_tensors * size / 1e6:.1f}M float32\n")
        print("| optimizer | ours ms | bound ms | ours/bound | ours/torch loop | ours/torch foreach | ours/torch fused |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            cells = [f"{r[p]:.2f}" if p in r else "—" for p in TORCH_PATHS]
            print(f"| {r['optimizer']} | {r['ms']:.1f} | {r['bound_ms']:.1f} | {r['ms'] / r['bound_ms']:.2f} | "
                  + " | ".join(cells) + " |")
        print("\n| target check | value (best times) | median of paired rounds | target |\n|---|---:|---:|---|")
        for r in targets:
            median = f"{r['median']:.2f}" if "median" in r else ""
            print(f"| {r['check']} | {r['ratio']:.2f} | {median} | {r['target']} |")
        sync = lookahead_sync_steps(n_tensors, size, args.sync_rounds)
        print(f"\n| Lookahead(Adam) sync step, median of {args.sync_rounds} paired rounds | folded | two-pass |"
              "\n|---|---:|---:|")
        print(f"| sync step / torch fused Adam step | {sync['folded']:.2f} | {sync['two-pass']:.2f} |")
        print(f"| => lookahead:adam / torch fused Adam at k = 5: (4 + that) / 5 | {(4 + sync['folded']) / 5:.3f} | "
              f"{(4 + sync['two-pass']) / 5:.3f} |")
        print()


if __name__ == "__main__":
    main()
