"""The arithmetic floor of an exact HVP against a gradient, measured on the 1M-parameter MLP.

Usage:
    .venv/bin/python bench/hvp_floor.py [--threads N] [--repeat R]

For MLP 64-1024-1024-10 (float32, 128 digits) the middle 1024x1024 layer dominates. With
inputs A (B x 1024, the layer's input), weight W and backpropagated G (B x 1024):

* a gradient needs 3 layer-sized products: A Wᵀ (forward), G W (gradient of the input),
  Gᵀ A (gradient of the weight);
* an exact HVP with the cached double-backward graph needs 6: the direction's weight block V
  meets A and G (A Vᵀ, G V), the second-order terms meet W again (two products with W), and
  the weight block of the result is a sum of two outer products over the batch (two Gᵀ A).

So HVP / gradient >= 6/3 = 2.0 from the dominant layer alone. This script times the bare
products (same shapes, dtype and threads) interleaved with our HVP and a plain gradient, best
of ``--repeat`` rounds, and prints the table: a measured HVP / gradient below the floor ratio
means the gradient itself carries non-matmul work (tanh, cross-entropy) the floor leaves out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from descentlab.openmp import set_wait_default  # noqa: E402

set_wait_default()  # before torch loads OpenMP (see descentlab/openmp.py)

import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hessian import digits, trained_mlp  # noqa: E402

from descentlab.curvature import HessianOperator  # noqa: E402


def best_times(fns: dict, repeat: int) -> dict:
    """Best wall time of each function, the functions interleaved round by round."""
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn()  # warm-up: allocator, thread pool
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    X, y = digits(128, torch.float32)
    model = trained_mlp([64, 1024, 1024, 10], X, y, torch.float32, steps=5)
    params = list(model.parameters())
    op = HessianOperator(model, nn.functional.cross_entropy, (X, y))
    v = torch.randn(op.n_params)

    B, D = X.shape[0], 1024
    A, G = torch.randn(B, D), torch.randn(B, D)
    W, V = torch.randn(D, D), torch.randn(D, D)

    def three():
        A @ W.T, G @ W, G.T @ A

    def six():
        A @ V.T, G @ V, A @ W.T, G @ W, G.T @ A, G.T @ A

    def gradient():
        torch.autograd.grad(nn.functional.cross_entropy(model(X), y), params)

    t = best_times({"3 products": three, "6 products": six, "gradient": gradient, "HVP": lambda: op @ v}, args.repeat)
    floor, measured = t["6 products"] / t["3 products"], t["HVP"] / t["gradient"]
    print(f"MLP 64-1024-1024-10 ({op.n_params:,} parameters), float32, {B} samples, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeat}\n")
    print("| measure | ms | ratio |")
    print("|---|---|---|")
    print(f"| 3 layer products (a gradient's matmuls) | {t['3 products'] * 1e3:.2f} | 1 |")
    print(f"| 6 layer products (an HVP's matmuls) | {t['6 products'] * 1e3:.2f} | {floor:.2f} (floor) |")
    print(f"| gradient (autograd) | {t['gradient'] * 1e3:.2f} | 1 |")
    print(f"| HVP, cached graph (HessianOperator @ v) | {t['HVP'] * 1e3:.2f} | {measured:.2f} (measured) |")


if __name__ == "__main__":
    main()
