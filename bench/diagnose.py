"""What the stall monitor costs: its time against the training time, and one diagnosis.

Usage:
    .venv/bin/python bench/diagnose.py             # the table recorded in bench/RESULTS.md
    .venv/bin/python bench/diagnose.py --quick     # one round, shorter runs (a smoke test)

Targets (issue 14), with the default monitor (``StallMonitor(loss_fn, data, optimizer=...,
batch_size=...)``: budget 0.25, sample 512, window 50):

* total monitor time <= 25 % of the training time on ``digits-cnn`` (500 mini-batch steps, the
  preset's defaults) and on a healthy ``digits-mlp`` run of 2,000 mini-batch steps. Measured two
  ways in the same process, in paired rounds (with and without the monitor, the order
  alternating): the monitor's own clock (``spent / train_time``: every second inside its calls
  against every second between them — the target's measure) and the wall time of the whole run
  against the same run without the monitor (on a shared machine the training steps' own time
  moves by ±20 % from run to run, so this column is mostly the machine's noise);
* one diagnosis on ``digits-cnn`` <= 10 s on 2 cores: ``monitor.diagnose(model)`` at the end of
  training (cold, then warm-started from the first one's eigenvectors), beside PyHessian's top
  eigenvalue alone on the same sample (its power iteration, tol 1e-3) as the peer.

Also printed: each preset's one diagnosis (the verdict, its time, the training time before it)
and, for digits-cnn, the first diagnosis's expected cost (from the tracked loss's time per
sample) against the measured one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

from descentlab.openmp import set_wait_default  # noqa: E402

set_wait_default()  # before torch loads OpenMP (see descentlab/openmp.py)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from descentlab.critical import StallMonitor  # noqa: E402
from descentlab.engine import LoopState  # noqa: E402
from descentlab.problems.workloads import get_workload  # noqa: E402


def run(name: str, steps: int, monitored: bool, seed: int = 0, *, stop_at_stall: bool = False, **options):
    """Train ``name`` with its preset's optimizer settings (a plain loop); returns (wall s, monitor, model)."""
    workload = get_workload(name)
    torch.manual_seed(seed)
    model = workload.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=workload.lr)
    X, y = workload.X_train, workload.y_train
    batch = workload.batch_size or len(X)
    monitor = None
    if monitored:
        monitor = StallMonitor(workload.loss_fn, (X, y), **options)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    if monitor is not None:
        monitor.on_train_start(LoopState(model, optimizer, batch_size=batch, n_train=len(X), total_steps=steps))
    for step in range(1, steps + 1):
        index = torch.randint(0, len(X), (batch,), generator=generator) if batch < len(X) else slice(None)
        optimizer.zero_grad()
        loss = workload.loss_fn(model(X[index]), y[index])
        loss.backward()
        optimizer.step()
        if monitor is not None and monitor.update(step, loss.item(), model) is not None and stop_at_stall:
            break
    return time.perf_counter() - started, monitor, model


def overhead(name: str, steps: int, rounds: int) -> dict:
    """Paired rounds, the order alternating (plain first, then monitored first), medians."""
    plain, watched, own = [], [], []
    stalls = 0
    for index in range(rounds):
        for monitored in ((False, True) if index % 2 == 0 else (True, False)):
            wall, monitor, _ = run(name, steps, monitored)
            if monitor is None:
                plain.append(wall)
                continue
            watched.append(wall)
            own.append(monitor.spent / monitor.train_time)
            stalls = len(monitor.stalls)
    base = statistics.median(plain)
    return {"case": f"{name}, {steps} steps", "train_s": base, "with_s": statistics.median(watched),
            "wall_ratio": statistics.median(watched) / base - 1.0, "own_ratio": statistics.median(own),
            "stalls": stalls}


def pyhessian_top(model, X, y):
    import pyhessian  # noqa: F401  (the package re-exports the class under the module's name)

    ph = sys.modules["pyhessian.hessian"]
    torch.manual_seed(0)
    started = time.perf_counter()
    comp = ph.hessian(model, torch.nn.functional.cross_entropy, data=(X, y), cuda=False)
    values, _ = comp.eigenvalues(top_n=1, tol=1e-3, maxIter=100)
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - started, float(values[0])


def one_diagnosis(steps: int) -> list[dict]:
    _, monitor, model = run("digits-cnn", steps, True)
    monitor.budget.fraction = None
    rows = []
    estimate = monitor.diagnoser.expected_cost(model) if monitor.diagnoser.last_cost is None else None
    for label in ("cold", "warm-started"):
        stall = monitor.diagnose(model, step=steps)
        rows.append({"case": f"digits-cnn after {steps} steps, {label}", "seconds": stall.seconds,
                     "verdict": stall.verdict, "lambda_max": stall.max_eigenvalue,
                     "products": stall.evidence["curvature"]["n_matvecs"], "estimate": estimate})
        estimate = None
    # the hard case: a critical point near the interpolating minimum (400 full-batch Adam steps),
    # where Lanczos needs ~140 products for the cluster of eigenvalues near zero
    workload = get_workload("digits-cnn")
    torch.manual_seed(0)
    near = workload.make_model()
    adam = torch.optim.Adam(near.parameters(), lr=3e-3)
    for _ in range(400):
        adam.zero_grad()
        workload.loss_fn(near(workload.X_train), workload.y_train).backward()
        adam.step()
    critical = StallMonitor(workload.loss_fn, (workload.X_train, workload.y_train), optimizer=adam,
                            batch_size=len(workload.y_train), budget=None, escape=False)
    stall = critical.diagnose(near, step=400)
    rows.append({"case": "digits-cnn near its minimum (400 full-batch Adam steps), critical", "seconds": stall.seconds,
                 "verdict": stall.verdict, "lambda_max": stall.max_eigenvalue,
                 "products": stall.evidence["curvature"]["n_matvecs"], "estimate": None})
    try:
        seconds, top = pyhessian_top(model, *monitor.sample)
        rows.append({"case": "PyHessian top eigenvalue alone (peer), same sample", "seconds": seconds,
                     "verdict": "-", "lambda_max": top, "products": None, "estimate": None})
    except ImportError:
        pass
    return rows


def presets() -> list[dict]:
    rows = []
    for name in ("stall", "unstable", "noise-floor", "minimum"):
        _, monitor, _ = run(name, get_workload(name).steps, True, stop_at_stall=True, max_stalls=1)
        stall = monitor.stalls[0] if monitor.stalls else None
        rows.append({"case": name, "verdict": stall.verdict if stall else "none", "step": stall.step if stall else "-",
                     "seconds": stall.seconds if stall else 0.0,
                     "train_s": monitor.train_time, "spent_s": monitor.spent})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round, shorter runs")
    parser.add_argument("--rounds", type=int, default=4, help="paired rounds per overhead case (default 4)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rounds = 1 if args.quick else args.rounds
    cnn_steps, mlp_steps = (200, 500) if args.quick else (500, 2000)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {rounds} paired rounds\n")

    print("| healthy run (mini-batch, float32) | training s | with monitor s | wall overhead | monitor / training (own clock) | target | stalls |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for name, steps in (("digits-cnn", cnn_steps), ("digits-mlp", mlp_steps)):
        r = overhead(name, steps, rounds)
        met = "met" if r["own_ratio"] <= 0.25 else "NOT met"
        print(f"| {r['case']} | {r['train_s']:.2f} | {r['with_s']:.2f} | {r['wall_ratio']:+.1%} | "
              f"{r['own_ratio']:.1%} | <= 25 % ({met}) | {r['stalls']} |")

    print("\n| one diagnosis | seconds | verdict | lambda_max | Hessian-vector products | first estimate s | target |")
    print("|---|---:|---|---:|---:|---:|---|")
    for r in one_diagnosis(cnn_steps):
        target = "<= 10 s (" + ("met" if r["seconds"] <= 10 else "NOT met") + ")" if r["verdict"] != "-" else "-"
        estimate = "-" if r["estimate"] is None else f"{r['estimate']:.2f}"
        products = "-" if r["products"] is None else r["products"]
        print(f"| {r['case']} | {r['seconds']:.2f} | {r['verdict']} | {r['lambda_max']:.4g} | {products} | "
              f"{estimate} | {target} |")

    print("\n| preset | verdict | at step | diagnosis s | training s before it | monitor s in all |")
    print("|---|---|---:|---:|---:|---:|")
    for r in presets():
        print(f"| {r['case']} | {r['verdict']} | {r['step']} | {r['seconds']:.2f} | {r['train_s']:.2f} | "
              f"{r['spent_s']:.2f} |")


if __name__ == "__main__":
    main()
