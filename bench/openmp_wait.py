"""How torch's OpenMP workers should wait: PASSIVE vs a short spin vs libgomp's default.

    .venv/bin/python bench/openmp_wait.py             # idle machine
    .venv/bin/python bench/openmp_wait.py --busy      # beside one busy process

Each setting runs in a fresh process (libgomp reads its environment once, when torch loads)
at 2 threads: torch's fused Adam over 1,000 tensors of 10k (one parallel region per tensor)
and 20 training steps of a small MLP on the digits data size (many small regions), and 20
Hessian-vector products of a 64-32-10 MLP through a kept graph (more, smaller regions). Prints
milliseconds (best of 7) and the ratio to the setting descentlab uses (`descentlab.openmp`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from descentlab.openmp import SPIN_COUNT

SETTINGS = {
    "GOMP_SPINCOUNT=1000": {"GOMP_SPINCOUNT": "1000"},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
    "GOMP_SPINCOUNT=30000": {"GOMP_SPINCOUNT": "30000"},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "libgomp default": {},
}

#: the setting ``descentlab.openmp`` uses
OURS = f"GOMP_SPINCOUNT={SPIN_COUNT}"

CHILD = r"""
import json, time, torch
torch.set_num_threads(2)
n, size = 1000, 10_000
ps = [torch.randn(size, requires_grad=True) for _ in range(n)]
for p in ps:
    p.grad = torch.randn(size)
fused_adam = torch.optim.Adam(ps, lr=1e-3, fused=True)
def adam():
    fused_adam.step()
net = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.Tanh(), torch.nn.Linear(8, 10))
X, y = torch.randn(1797, 64), torch.randint(0, 10, (1797,))
def train():
    for _ in range(20):
        torch.nn.functional.cross_entropy(net(X), y).backward()
mlp = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10)).double()
Xd = X.double()
params = list(mlp.parameters())
grads = torch.autograd.grad(torch.nn.functional.cross_entropy(mlp(Xd), y), params, create_graph=True)
directions = [torch.randn_like(p) for p in params]
def hvp():
    for _ in range(20):
        torch.autograd.grad(grads, params, directions, retain_graph=True)
def best(fn):
    fn(); out = float("inf")
    for _ in range(7):
        t = time.perf_counter(); fn(); out = min(out, time.perf_counter() - t)
    return out * 1e3
print(json.dumps({"adam": best(adam), "train": best(train), "hvp": best(hvp)}))
"""


def measure(env_extra: dict[str, str]) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", action="store_true", help="run one busy-looping process beside the measurement")
    args = parser.parse_args(argv)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    try:
        time.sleep(0.5 if hog else 0)
        results = {name: measure(env) for name, env in SETTINGS.items()}
    finally:
        if hog:
            hog.kill()
    ours = results[OURS]
    print(f"2 threads, {'one busy process beside' if args.busy else 'idle machine'}\n")
    print(f"ours: {OURS}\n")
    print("| setting | fused Adam 1000x10k ms | x ours | 20 small MLP steps ms | x ours | 20 HVPs, digits MLP ms | x ours |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['adam']:.1f} | {r['adam'] / ours['adam']:.2f} | {r['train']:.1f} | "
              f"{r['train'] / ours['train']:.2f} | {r['hvp']:.1f} | {r['hvp'] / ours['hvp']:.2f} |")


if __name__ == "__main__":
    main()
