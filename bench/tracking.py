"""What sharpness tracking costs, how accurate it is, and what remedy trials cost.

Usage:
    .venv/bin/python bench/tracking.py             # the tables recorded in bench/RESULTS.md
    .venv/bin/python bench/tracking.py --quick     # one round, shorter runs (a smoke test)

Targets (issue 15), digits-mlp, full batch (1,437 samples), SGD at lr 0.1, 1,000 steps, the
sharpness tracked every 10 steps on the monitor's fixed sample of 512:

* tracking costs <= 15 % of the training time, as a ratio in one run: the tracker's own clock
  (every second inside its estimates) against the training time of the same run. Measured in
  the training loop ``descentlab diagnose`` runs (``experiments.train.train`` with the stall
  monitor, metrics, evaluations and checkpoints: what a user's ``--track-sharpness 10`` adds)
  and, stricter, in a bare loop of forward, backward and SGD step (the monitor's ``update``
  called after each). Paired rounds (with and without tracking, the order alternating) also
  give the wall-time difference of whole runs;
* every estimate within 1 % of a cold-started Lanczos at tolerance 1e-6 on the same operator:
  the parameters at each tracked step are replayed (same seed, same numbers) and the top
  eigenvalue of the same sample's Hessian is computed cold in float64 at tolerance 1e-6.

The peer: what a PyHessian user does to track the sharpness, ``hessian(...).eigenvalues(top_n=1)``
(power iteration from a random vector, tol 1e-3) every 10 steps on the same sample; its time
per estimate against ours (ratio ours / peer) and its error against the same reference.

Also: remedy trials at the stall, unstable and noise-floor presets' first stalls (their cost, and
the training time before the stall, i.e. what the default budget allows).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from descentlab.openmp import set_wait_default  # noqa: E402

set_wait_default()  # before torch loads OpenMP (see descentlab/openmp.py)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from descentlab.critical import StallMonitor  # noqa: E402
from descentlab.curvature import HessianOperator, lanczos  # noqa: E402
from descentlab.engine import LoopState  # noqa: E402
from descentlab.experiments.train import TrainConfig, train  # noqa: E402
from descentlab.problems.workloads import get_workload  # noqa: E402

EVERY = 10
LR = 0.1


def bare(steps: int, tracked: bool, snapshots: list | None = None):
    """A bare full-batch loop with a stall monitor (tracking on or off); returns (training s, monitor)."""
    workload = get_workload("digits-mlp")
    torch.manual_seed(0)
    model = workload.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    X, y = workload.X_train, workload.y_train
    monitor = StallMonitor(workload.loss_fn, (X, y), track_sharpness=EVERY if tracked else None)
    monitor.on_train_start(LoopState(model, optimizer, batch_size=len(X), n_train=len(X), total_steps=steps))
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        loss = workload.loss_fn(model(X), y)
        loss.backward()
        optimizer.step()
        monitor.update(step, loss.item(), model)
        if snapshots is not None and step % EVERY == 0:
            snapshots.append(copy.deepcopy(model))
    return monitor.train_time, monitor


def in_train_loop(steps: int, tracked: bool):
    """``descentlab diagnose --workload digits-mlp --batch-size full --lr 0.1 --track-sharpness 10``'s loop."""
    workload = get_workload("digits-mlp")
    monitor = StallMonitor(workload.loss_fn, (workload.X_train, workload.y_train),
                           track_sharpness=EVERY if tracked else None)
    config = TrainConfig(optimizer="sgd", lr=LR, batch_size=None, steps=steps)
    with tempfile.TemporaryDirectory() as out:
        result = train(workload, config, Path(out) / "run", kind="diagnose", callbacks=[monitor], progress=False)
    return result.seconds, monitor


def cost(steps: int, rounds: int) -> list[dict]:
    rows = []
    for label, runner in (("diagnose's training loop", in_train_loop), ("bare loop", bare)):
        plain, watched, own, per, products = [], [], [], [], []
        for index in range(rounds):
            for tracked in ((False, True) if index % 2 == 0 else (True, False)):
                seconds, monitor = runner(steps, tracked)
                if not tracked:
                    plain.append(seconds)
                    continue
                watched.append(seconds)
                tracking = monitor.sharpness.seconds
                # the monitor's own time (its sharpness estimates included) is not training; a bare
                # loop's ``seconds`` is the monitor's train_time, which already leaves it out
                training = seconds - (monitor.spent if runner is in_train_loop else 0.0)
                own.append(tracking / training)
                per.append(tracking / len(monitor.sharpness.points))
                products.append(statistics.mean(p.n_matvecs for p in monitor.sharpness.points))
        rows.append({"case": label, "plain": statistics.median(plain), "tracked": statistics.median(watched),
                     "own": statistics.median(own), "per": statistics.median(per),
                     "products": statistics.median(products)})
    return rows


def pyhessian_top(model, X, y) -> tuple[float, float]:
    import pyhessian  # noqa: F401  (the package re-exports the class under the module's name)

    ph = sys.modules["pyhessian.hessian"]
    torch.manual_seed(0)
    started = time.perf_counter()
    comp = ph.hessian(model, torch.nn.functional.cross_entropy, data=(X, y), cuda=False)
    values, _ = comp.eigenvalues(top_n=1, tol=1e-3, maxIter=100)
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - started, float(values[0])


def accuracy(steps: int) -> dict:
    snapshots: list = []
    _, monitor = bare(steps, True, snapshots)
    points = {p.step: p for p in monitor.sharpness.points}
    X, y = monitor.sample
    errors, peer_errors, peer_seconds = [], [], []
    for step, model in zip(range(EVERY, steps + 1, EVERY), snapshots):
        m64 = copy.deepcopy(model).double()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cold = float(lanczos(HessianOperator(m64, torch.nn.functional.cross_entropy, (X.double(), y)), k=1,
                                 which="LA", tol=1e-6).values[0])
        errors.append(abs(points[step].sharpness - cold) / cold)
        try:
            seconds, top = pyhessian_top(model, X, y)
            peer_errors.append(abs(top - cold) / cold)
            peer_seconds.append(seconds)
        except ImportError:
            pass
    ours = monitor.sharpness.seconds / len(monitor.sharpness.points)
    return {"estimates": len(errors), "max": max(errors), "median": statistics.median(errors), "ours_s": ours,
            "peer_s": statistics.median(peer_seconds) if peer_seconds else None,
            "peer_max": max(peer_errors) if peer_errors else None,
            "products": statistics.mean(p.n_matvecs for p in monitor.sharpness.points)}


def trials() -> list[dict]:
    """Each preset trained until its first stall (bench/diagnose.py's loop), remedies on."""
    from diagnose import run  # bench/diagnose.py, beside this script

    rows = []
    for name in ("stall", "unstable", "noise-floor"):
        _, monitor, _ = run(name, get_workload(name).steps, True, stop_at_stall=True, remedies=True, escape=False)
        stall = monitor.stalls[0] if monitor.stalls else None
        t = (stall.trials or {}) if stall is not None else {}
        rows.append({"case": name, "verdict": stall.verdict if stall else "-", "step": stall.step if stall else "-",
                     "status": t.get("status", "-"), "trials": len(t.get("trials", [])), "winner": t.get("winner"),
                     "seconds": t.get("seconds"), "train_s": monitor.train_time,
                     "diagnosis_s": stall.seconds if stall else 0})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round, shorter runs")
    parser.add_argument("--rounds", type=int, default=4, help="paired rounds per cost case (default 4)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rounds = 1 if args.quick else args.rounds
    steps = 200 if args.quick else 1000
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {rounds} paired rounds, "
          f"digits-mlp full batch, {steps} steps, tracked every {EVERY}\n")

    print("| loop | training s (no tracking) | with tracking s | wall difference | tracking / training (own clock, same run) "
          "| ms per estimate | products per estimate | target |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in cost(steps, rounds):
        met = "met" if r["own"] <= 0.15 else "NOT met"
        print(f"| {r['case']} | {r['plain']:.2f} | {r['tracked']:.2f} | {r['tracked'] / r['plain'] - 1:+.1%} | "
              f"{r['own']:.1%} | {1e3 * r['per']:.2f} | {r['products']:.2f} | <= 15 % ({met}) |")

    a = accuracy(steps)
    print("\n| accuracy against a cold float64 Lanczos at 1e-6 (same sample, same parameters) | estimates | max error "
          "| median error | ms per estimate | target |")
    print("|---|---:|---:|---:|---:|---|")
    met = "met" if a["max"] <= 0.01 else "NOT met"
    print(f"| ours: warm-started Lanczos, residual 1e-2, {a['products']:.2f} products | {a['estimates']} | "
          f"{a['max']:.2e} | {a['median']:.2e} | {1e3 * a['ours_s']:.2f} | <= 1 % ({met}) |")
    if a["peer_s"] is not None:
        print(f"| peer: PyHessian eigenvalues(top_n=1), cold, tol 1e-3 | {a['estimates']} | {a['peer_max']:.2e} | - | "
              f"{1e3 * a['peer_s']:.2f} | - |")
        print(f"\nours / peer, time per estimate: {a['ours_s'] / a['peer_s']:.2f}")

    print("\n| remedy trials at the first stall | verdict | step | trials | winner | trials s | diagnosis s "
          "(trials included) | training s before it |")
    print("|---|---|---:|---:|---|---:|---:|---:|")
    for r in trials():
        seconds = "-" if r["seconds"] is None else f"{r['seconds']:.2f}"
        print(f"| {r['case']} | {r['verdict']} | {r['step']} | {r['trials']} | {r['winner']} | {seconds} | "
              f"{r['diagnosis_s']:.2f} | {r['train_s']:.2f} |")


if __name__ == "__main__":
    main()
