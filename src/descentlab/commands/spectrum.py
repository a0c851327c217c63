"""The Hessian of a saved model's training loss: eigenvalues at both ends, the density of the
spectrum, the minimum ratio, and what kind of point the model sits at.

The model comes from a run directory (--run: its workload, seed and checkpoint.pt), or from
--workload / --model with --data, optionally loading --checkpoint (a checkpoint.pt or a
state_dict saved with torch.save; loaded weights-only). Writes runs/spectrum-<timestamp>/
(spectrum.json, report.html) and prints the findings.

Examples:
  descentlab spectrum --run runs/diagnose-20260101-120000
  descentlab spectrum --workload stall --k 6
  descentlab spectrum --model mypkg.models:make_net --data train.npz --checkpoint net.pt
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", default=None, metavar="DIR", help="a diagnose run directory: its model at its checkpoint")
    parser.add_argument("--workload", default=None, help="a built-in workload (its model at initialisation, "
                        "or at --checkpoint)")
    parser.add_argument("--model", default=None, metavar="PKG.MOD:FACTORY", help="your model factory (needs --data)")
    parser.add_argument("--data", default=None, metavar="FILE", help=".npz or .csv data file for --model")
    parser.add_argument("--checkpoint", default=None, metavar="FILE", help="weights to load into the model")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the estimators (default 0)")
    parser.add_argument("--k", type=int, default=10, help="extreme eigenvalues in all, half at each end (default 10)")
    parser.add_argument("--out", default=None, help="run directory (default: runs/spectrum-<timestamp>)")


def run(args: argparse.Namespace) -> int:
    import torch

    from descentlab.errors import UserInputError
    from descentlab.rundir import RunDir, default_run_path, staged_run
    from descentlab.experiments.train import load_checkpoint_model
    from descentlab.problems.user_workload import resolve_workload
    from descentlab.report.render import render

    if args.k < 2:
        raise UserInputError(f"--k must be an integer >= 2 (both ends of the spectrum), got {args.k}")
    if args.run and (args.workload or args.model or args.data):
        raise UserInputError("give --run, or --workload / --model with --data, not both")
    if args.run:
        source = RunDir.open(args.run)
        saved = source.config
        if "workload" not in saved or "train" not in saved:
            raise UserInputError(f"{args.run} is a {saved.get('kind')!r} run without a trained model")
        spec, seed = saved["workload"], int(saved["train"]["seed"])
        checkpoint = args.checkpoint or source.file("checkpoint.pt")
    else:
        spec = {"workload": args.workload, "model": args.model, "data": args.data, "seed": args.seed}
        if not any((args.workload, args.model, args.data)):
            raise UserInputError("say which model: --run DIR, --workload NAME, or --model with --data")
        seed, checkpoint = args.seed, args.checkpoint
    workload = resolve_workload(spec)
    torch.manual_seed(seed)
    model = workload.make_model()
    if checkpoint is not None:
        try:
            load_checkpoint_model(model, checkpoint)
        except UserInputError:
            raise
        except Exception as error:  # wrong keys or shapes, not a torch file
            raise UserInputError(f"cannot load {checkpoint} into the model: {type(error).__name__}: "
                                 f"{str(error).splitlines()[0]}") from None
    result = analyse(model, workload.loss_fn, (workload.X_train, workload.y_train), k=args.k, seed=args.seed)
    out = args.out or default_run_path("spectrum")
    with staged_run(out, "spectrum", {"workload": spec, "checkpoint": None if checkpoint is None else str(checkpoint),
                                      "k": args.k, "seed": args.seed,
                                      "workload_description": workload.description}) as run_dir:
        run_dir.write_json("spectrum.json", result)
    report = render(out)
    print(summary_text(result))
    print(f"report: {report}")
    return 0


def analyse(model, loss_fn, data, *, k: int, seed: int) -> dict:
    """classify + (every eigenvalue, or the estimated density) as plain numbers for ``spectrum.json``.

    Small models (classify's exact path) keep every eigenvalue; larger ones get the stochastic
    Lanczos quadrature density of :func:`descentlab.curvature.spectral_density`.
    """
    import torch

    from descentlab.critical import classify
    from descentlab.curvature import HessianOperator, spectral_density

    point = classify(model, loss_fn, data, k=k, seed=seed)
    result = {
        "n_params": point.n_params, "loss": float(point.loss), "grad_norm": float(point.grad_norm),
        "kind": point.kind, "degenerate": bool(point.degenerate), "method": point.method,
        "min_eigenvalue": float(point.min_eigenvalue), "max_eigenvalue": float(point.max_eigenvalue),
        "minimum_ratio": float(point.minimum_ratio), "minimum_ratio_exact": bool(point.minimum_ratio_exact),
        "minimum_ratio_std_error": float(point.minimum_ratio_std_error),
        "minimum_ratio_bounds": [float(b) for b in point.minimum_ratio_bounds],
        "extremes": [float(v) for v in torch.as_tensor(point.eigenpairs.values).flatten().tolist()],
        "spectrum": None if point.spectrum is None else [float(v) for v in point.spectrum.tolist()],
        "density": None,
    }
    if point.spectrum is None:
        density = spectral_density(HessianOperator(model, loss_fn, data), seed=seed)
        result["density"] = {"grid": density.grid.tolist(), "density": density.values.tolist()}
    return result


def summary_text(result: dict) -> str:
    """The findings as a few aligned lines."""
    kind = result["kind"] + (" (degenerate)" if result["degenerate"] else "")
    lines = [
        ("parameters", str(result["n_params"])),
        ("loss", f"{result['loss']:.6g}"),
        ("gradient norm", f"{result['grad_norm']:.3g}"),
        ("lambda_min", f"{result['min_eigenvalue']:.6g}"),
        ("lambda_max", f"{result['max_eigenvalue']:.6g}"),
        ("minimum ratio", f"{result['minimum_ratio']:.4g}" + ("" if result["minimum_ratio_exact"] else
                          f" +- {result['minimum_ratio_std_error']:.2g}, quadrature bracket "
                          f"[{result['minimum_ratio_bounds'][0]:.3g}, {result['minimum_ratio_bounds'][1]:.3g}] (estimated)")),
        ("kind", kind),
        ("lowest eigenvalues", ", ".join(f"{v:.4g}" for v in sorted(result["extremes"])[:5])),
        ("highest eigenvalues", ", ".join(f"{v:.4g}" for v in sorted(result["extremes"])[-5:])),
    ]
    width = max(len(name) for name, _ in lines)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in lines)
