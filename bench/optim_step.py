"""Step time of every registry optimizer against torch's own kernel paths, pytorch-optimizer's
SGDW / Lookahead / SWATS, and the memory-bandwidth bound, on ~10M float32 parameters.

Each row times ``optimizer.step()`` alone (gradients are fixed, random) as the minimum over
``--repeats`` runs of ``--steps`` steps (min, not mean: the machine may be shared). The bound
is the bytes an algorithm must move per step (each state tensor read and written once,
params read and written, gradient read) divided by the copy bandwidth measured in this run.

    .venv/bin/python bench/optim_step.py                       # the recorded table (~10M params)
    .venv/bin/python bench/optim_step.py --layouts 10x100000 --repeats 2   # a quick run
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time

import torch

from descentlab.optim import OPTIMIZERS, SWATS, make_optimizer

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


def bench_layout(n_tensors: int, size: int, args) -> tuple[list[dict], list[dict]]:
    import pytorch_optimizer as po

    numel = n_tensors * size
    bandwidth = copy_bandwidth(numel, args.repeats)
    pass_seconds = 4 * numel / bandwidth  # one weight-sized pass
    t = lambda make: time_steps(make(make_params(n_tensors, size)), args.steps, args.repeats)  # noqa: E731

    rows = []
    torch_best: dict[tuple[str, str], float] = {}
    for name in OPTIMIZERS:
        ours = t(lambda p: make_optimizer(name, p))
        row = {"optimizer": name, "ms": ours * 1e3, "bound_ms": PASSES[name] * pass_seconds * 1e3}
        if OPTIMIZERS[name].source == "torch":
            for path in TORCH_PATHS:
                if torch_class_path(name, make_params(1, 4), path) is None:
                    continue
                torch_best[(name, path)] = t(lambda p: torch_class_path(name, p, path))
                row[path] = ours / torch_best[(name, path)]
        rows.append(row)
        print(f"  {n_tensors}x{size} {name}: {ours * 1e3:.1f} ms", file=sys.stderr, flush=True)

    fused_adam = torch_best[("adam", "fused")]
    fused_sgdm = torch_best[("momentum", "fused")]
    fused_sgd = torch_best[("sgd", "fused")]
    randn_buf = torch.empty(numel)
    draw = min(_timed(lambda: randn_buf.normal_()) for _ in range(args.repeats * 2))

    def peer(make):
        try:
            return t(make)
        except Exception as error:  # noqa: BLE001 - a peer that fails is reported, not fatal
            print(f"peer failed: {error}", file=sys.stderr)
            return float("nan")

    la = t(lambda p: make_optimizer("lookahead:adam", p))
    po_la_default = peer(lambda p: po.Lookahead(torch.optim.Adam(p, lr=1e-3)))
    po_la_fused = peer(lambda p: po.Lookahead(torch.optim.Adam(p, lr=1e-3, fused=True)))
    sw_adam = next(r["ms"] for r in rows if r["optimizer"] == "swats") / 1e3
    sw_sgd = t(swats_in_sgd_phase)
    po_sw = min(peer(lambda p: po.SWATS(p, lr=1e-3)), peer(lambda p: po.SWATS(p, lr=1e-3, foreach=True)))
    sgdw = next(r["ms"] for r in rows if r["optimizer"] == "sgdw") / 1e3
    po_sgdw = min(peer(lambda p: po.SGDW(p, lr=1e-2, momentum=0.9, weight_decay=1e-2)),
                  peer(lambda p: po.SGDW(p, lr=1e-2, momentum=0.9, weight_decay=1e-2, foreach=True)))
    noisy = t(lambda p: make_optimizer("noisy:sgd", p))
    targets = [
        {"check": "lookahead:adam / torch fused Adam", "ratio": la / fused_adam, "target": "<= 1.15"},
        {"check": "lookahead:adam / pytorch-optimizer Lookahead(torch Adam default)", "ratio": la / po_la_default,
         "target": "<= 0.33"},
        {"check": "lookahead:adam / pytorch-optimizer Lookahead(torch fused Adam)", "ratio": la / po_la_fused,
         "target": "(info)"},
        {"check": "swats (Adam phase) / torch fused Adam", "ratio": sw_adam / fused_adam, "target": "<= 1.5"},
        {"check": "swats (SGD phase) / torch fused SGD-momentum", "ratio": sw_sgd / fused_sgdm, "target": "<= 1.3"},
        {"check": "swats (Adam phase) / pytorch-optimizer SWATS", "ratio": sw_adam / po_sw, "target": "<= 0.33"},
        {"check": "sgdw / torch fused SGD-momentum", "ratio": sgdw / fused_sgdm, "target": "<= 1.5"},
        {"check": "sgdw / pytorch-optimizer SGDW", "ratio": sgdw / po_sgdw, "target": "<= 1.0"},
        {"check": "(noisy:sgd - torch fused sgd) / drawing the noise (normal_)", "ratio": (noisy - fused_sgd) / draw,
         "target": "<= 1.0 + add pass"},
    ]
    absolute = {"copy bandwidth GB/s": bandwidth / 1e9, "lookahead:adam ms": la * 1e3,
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
    parser.add_argument("--steps", type=int, default=10, help="steps per timed run (a multiple of Lookahead's k=5)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
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
        print("\n| target check | value | target |\n|---|---:|---|")
        for r in targets:
            print(f"| {r['check']} | {r['ratio']:.2f} | {r['target']} |")
        print()


if __name__ == "__main__":
    main()
