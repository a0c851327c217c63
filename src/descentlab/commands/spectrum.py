"""The Hessian of a saved model's training loss: eigenvalues at both ends, the density of the
spectrum, the minimum ratio, and what kind of point the model sits at. Where there is negative
curvature, lambda_min is split into its Gauss-Newton and residual parts (H = GGN + R);
--per-layer adds each parameter group's block: its extreme eigenvalues and minimum ratio.

The model comes from a run directory (--run: its workload, seed and checkpoint.pt), or from
--workload / --model with --data, optionally loading --checkpoint (a checkpoint.pt or a
state_dict saved with torch.save; loaded weights-only). Writes runs/spectrum-<timestamp>/
(spectrum.json, report.html) and prints the findings.

Examples:
  descentlab spectrum --run runs/diagnose-20260101-120000
  descentlab spectrum --workload stall --k 6
  descentlab spectrum --workload digits-mlp --per-layer
  descentlab spectrum --model mypkg.models:make_net --data train.npz --checkpoint net.pt
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", default=None, metavar="DIR", help="a diagnose run directory: its model at its checkpoint")
    parser.add_argument("--workload", default=None, help="a built-in workload (its model at initialisation, "
                        "or at --checkpoint; `descentlab workloads` lists them)")
    parser.add_argument("--model", default=None, metavar="PKG.MOD:FACTORY", help="your model factory (needs --data)")
    parser.add_argument("--data", default=None, metavar="FILE", help=".npz or .csv data file for --model")
    parser.add_argument("--checkpoint", default=None, metavar="FILE", help="weights to load into the model")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the estimators (default 0)")
    parser.add_argument("--k", type=int, default=10, help="extreme eigenvalues in all, half at each end (default 10)")
    parser.add_argument("--per-layer", action="store_true", help="also each parameter group's Hessian block "
                        "(the parameters a module owns): extreme eigenvalues and minimum ratio, a table and a figure")
    parser.add_argument("--out", default=None, help="run directory (default: runs/spectrum-<timestamp>)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from descentlab.commands.common import emit, output_dir
    from descentlab.errors import UserInputError
    from descentlab.experiments.train import load_checkpoint_model
    from descentlab.problems.user_workload import model_directory, resolve_workload
    from descentlab.report.render import render
    from descentlab.rundir import RunDir, staged_run

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
        data = None if args.data is None else str(Path(args.data).absolute())
        spec = {"workload": args.workload, "model": args.model, "data": data, "seed": args.seed}
        if not any((args.workload, args.model, args.data)):
            raise UserInputError("say which model: --run DIR, --workload NAME, or --model with --data")
        seed, checkpoint = args.seed, args.checkpoint
    out = output_dir(args, "spectrum")
    workload = resolve_workload(spec)
    if spec.get("model") and not spec.get("model_path"):  # where the module was found, for --run from anywhere
        spec = {**spec, "model_path": model_directory(spec["model"])}
    torch.manual_seed(seed)
    model = workload.make_model()
    if checkpoint is not None:
        load_checkpoint_model(model, checkpoint)  # unreadable or mismatched: a one-line UserInputError
    result = analyse(model, workload.loss_fn, (workload.X_train, workload.y_train), k=args.k, seed=args.seed,
                     per_layer=args.per_layer)
    with staged_run(out, "spectrum", {"workload": spec, "checkpoint": None if checkpoint is None else str(checkpoint),
                                      "k": args.k, "seed": args.seed, "per_layer": args.per_layer,
                                      "workload_description": workload.description}) as run_dir:
        run_dir.write_json("spectrum.json", result)
    report = render(out)
    print(summary_text(result))
    print(f"report: {report}")
    emit(args, {"run": str(out), "report": str(report),
                **{key: value for key, value in result.items() if key not in ("spectrum", "density")}})
    return 0


def analyse(model, loss_fn, data, *, k: int, seed: int, per_layer: bool = False) -> dict:
    """classify + (every eigenvalue, or the estimated density) as plain numbers for ``spectrum.json``.

    Small models (classify's exact path) keep every eigenvalue; larger ones get the stochastic
    Lanczos quadrature density of :func:`descentlab.curvature.spectral_density`. With negative
    curvature, ``split`` says how lambda_min divides into u'Gu + u'Ru along its eigenvector u
    (:func:`descentlab.curvature.split_curvature`); with ``per_layer``, ``per_layer`` lists
    each parameter group's block (:func:`descentlab.curvature.layer_spectra`).
    """
    import torch

    from descentlab.critical import classify
    from descentlab.curvature import HessianOperator, layer_spectra, spectral_density, split_curvature

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
        "split": None,
        "per_layer": None,
    }
    op = HessianOperator(model, loss_fn, data)
    if point.spectrum is None:
        density = spectral_density(op, seed=seed)
        result["density"] = {"grid": density.grid.tolist(), "density": density.values.tolist()}
    eig_tol = point.eig_tol
    if point.min_eigenvalue < -eig_tol * max(1.0, abs(point.min_eigenvalue), abs(point.max_eigenvalue)):
        u = point.eigenpairs.vectors[:, int(torch.argmin(point.eigenpairs.values))]
        try:
            split = split_curvature(op, u)
        except ValueError:  # a model whose output is not one tensor has no Gauss-Newton matrix here
            split = None
        if split is not None:
            result["split"] = {"eigenvalue": float(split.total[0]), "ggn": float(split.ggn[0]),
                               "residual": float(split.residual[0]), "residual_share": float(split.residual_share[0])}
    if per_layer:
        groups = layer_spectra(model, loss_fn, data, eig_tol=eig_tol, seed=seed)
        result["per_layer"] = [{"group": g.name, "n_params": g.n_params, "min_eigenvalue": g.min_eigenvalue,
                                "max_eigenvalue": g.max_eigenvalue, "minimum_ratio": g.minimum_ratio,
                                "minimum_ratio_std_error": g.minimum_ratio_std_error, "exact": g.exact}
                               for g in groups]
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
    ]
    # the extremes are half from each end of the spectrum (--k 6: the 3 lowest and the 3 highest)
    ordered = sorted(result["extremes"])
    half = max(1, len(ordered) // 2)
    lines += [("lowest eigenvalues", ", ".join(f"{v:.4g}" for v in ordered[:half])),
              ("highest eigenvalues", ", ".join(f"{v:.4g}" for v in ordered[-half:]))]
    if result.get("split"):
        split = result["split"]
        lines.append(("lambda_min split", f"GGN {split['ggn']:.4g} + residual {split['residual']:.4g} "
                      f"(the residual carries {100 * split['residual_share']:.0f}%)"))
    width = max(len(name) for name, _ in lines)
    text = "\n".join(f"{name.ljust(width)}  {value}" for name, value in lines)
    if result.get("per_layer"):
        text += "\n\n" + layer_table(result["per_layer"])
    return text


def layer_table(rows: list[dict]) -> str:
    """The per-layer spectra as an aligned text table."""
    header = ("group", "parameters", "lambda_min", "lambda_max", "minimum ratio")
    body = [(r["group"], str(r["n_params"]), f"{r['min_eigenvalue']:.4g}", f"{r['max_eigenvalue']:.4g}",
             f"{r['minimum_ratio']:.4g}" + ("" if r["exact"] else f" +- {r['minimum_ratio_std_error']:.2g}"))
            for r in rows]
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in (header, *body))
