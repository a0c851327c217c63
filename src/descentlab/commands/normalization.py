"""How normalisation reshapes the error surface: the same network and data with raw features,
standardised features, and BatchNorm layers.

For each variant: the exact Hessian's largest eigenvalue, its smallest positive eigenvalue
and their ratio at initialisation and after training, the largest stable gradient-descent
rate 2/lambda_max, and the full-batch GD steps to --target-loss at the variant's best rate
of one shared grid. Data: scikit-learn's breast-cancer table (30 features whose spreads run
from about 0.003 to 570; shipped with scikit-learn). Also the lecture's picture in closed
form: the two-weight least-squares bowl of two features before and after standardising.

Examples:
  descentlab normalization                       # tanh MLP 30-8-2, ~30 s
  descentlab normalization --hidden 0            # the linear model (softmax regression)
  descentlab normalization --bowl-features "mean radius,mean smoothness" --out runs/norm

Writes runs/normalization-<timestamp>/ (or --out): config.json, variants.csv, sweep.csv,
curves.csv, spectra.pt, bowls.json, summary.json, the figures and report.html.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hidden", type=int, default=8,
                        help="tanh units of the network's hidden layer (default: 8); 0 = the linear model")
    parser.add_argument("--steps", type=int, default=300, help="full-batch GD steps per rate (default: 300)")
    parser.add_argument("--target-loss", type=float, default=0.1,
                        help="training loss (cross-entropy) that counts as arrived (default: 0.1)")
    parser.add_argument("--rates", default=None, metavar="A,B,...",
                        help="learning rates every variant tries (default: 1e-4 to 10, two per decade)")
    parser.add_argument("--bowl-features", default="mean texture,mean smoothness", metavar="A,B",
                        help="the two features of the closed-form bowl (default: 'mean texture,mean smoothness')")
    parser.add_argument("--seed", type=int, default=0, help="data split and initial weights (default: 0)")
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/normalization-<time>)")


def _numbers(text: str, option: str) -> list[float]:
    import math

    from descentlab.errors import UserInputError

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not (math.isfinite(v) and v > 0) for v in values):
        raise UserInputError(f"{option} must be positive numbers 'A,B,...', got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    import math

    from descentlab import files
    from descentlab.commands.common import emit, output_dir
    from descentlab.errors import UserInputError
    from descentlab.experiments.normalization import DEFAULT_RATES, normalization_study
    from descentlab.rundir import staged_run
    from descentlab.problems.features import breast_cancer
    from descentlab.report.normalization_page import finding
    from descentlab.report.render import render

    if args.hidden < 0:
        raise UserInputError(f"--hidden must be >= 0, got {args.hidden}")
    if args.steps < 1:
        raise UserInputError(f"--steps must be >= 1, got {args.steps}")
    if not (math.isfinite(args.target_loss) and args.target_loss > 0):
        raise UserInputError(f"--target-loss must be a positive number, got {args.target_loss}")
    rates = DEFAULT_RATES if args.rates is None else tuple(_numbers(args.rates, "--rates"))
    features = tuple(f.strip() for f in args.bowl_features.split(","))
    names = breast_cancer(seed=args.seed).names
    if len(features) != 2 or len(set(features)) != 2 or any(f not in names for f in features):
        raise UserInputError(f"--bowl-features must name two different features of the table, got "
                             f"{args.bowl_features!r}; valid: {', '.join(names)}")

    out = output_dir(args, "normalization")
    config = {key: value for key, value in vars(args).items()
              if not key.startswith("_") and key not in ("command", "json", "progress")}
    config["rates"] = list(rates)
    with staged_run(out, "normalization", config) as run_dir:
        study = normalization_study(hidden=args.hidden, steps=args.steps, rates=rates, target_loss=args.target_loss,
                                    seed=args.seed, bowl_features=features, progress=args.progress)
        rows = []
        for result in study.variants:
            row = {"variant": result.variant, "n_params": result.n_params}
            for when, spectrum in (("init", result.init), ("trained", result.trained)):
                row.update({f"lambda_max_{when}": spectrum.lambda_max,
                            f"smallest_positive_{when}": spectrum.smallest_positive,
                            f"ratio_{when}": spectrum.ratio, f"n_negative_{when}": spectrum.n_negative,
                            f"n_zero_{when}": spectrum.n_zero, f"stable_lr_{when}": spectrum.stable_lr})
            row.update({"best_lr": result.best_lr, "steps_to_target": result.best_steps,
                        "final_loss": float(result.curve[-1]), "val_accuracy": result.val_accuracy})
            rows.append(row)
        run_dir.write_csv("variants.csv", rows)
        run_dir.write_csv("sweep.csv", [
            {"variant": r.variant, "lr": lr, "steps_to_target": hit, "final_loss": final}
            for r in study.variants for lr, hit, final in zip(r.rates, r.steps_to_target, r.final_losses)])
        run_dir.write_csv("curves.csv", [
            {"variant": r.variant, "lr": r.best_lr, "step": step, "loss": float(loss)}
            for r in study.variants for step, loss in enumerate(r.curve)])
        files.save_torch(run_dir.file("spectra.pt"), {
            r.variant: {"init": r.init.eigenvalues, "trained": r.trained.eigenvalues} for r in study.variants})
        run_dir.write_json("bowls.json", [
            {"standardised": standardised, "features": list(b.features), "hessian": b.hessian.tolist(),
             "w_star": b.w_star.tolist(), "loss_star": b.loss_star, "eigenvalues": b.eigenvalues.tolist(),
             "condition": b.condition, "best_lr": b.best_lr, "contraction": b.contraction,
             "steps_to_shrink_100": b.steps_to_shrink(100.0), "path": b.path.tolist()}
            for standardised, b in zip((False, True), study.bowls)])
        run_dir.write_json("summary.json", {"target_loss": study.target_loss, "seconds": round(study.seconds, 2),
                                            "settings": study.settings})
    report = render(out)
    print(finding(rows, [b.condition for b in study.bowls], study.target_loss, args.steps))
    print(f"{'variant':<13}{'params':>7}{'lambda_max':>12}{'min pos':>11}{'ratio':>10}{'2/lam_max':>11}"
          f"{'best lr':>9}{'steps':>7}{'lambda_max':>12}{'val acc':>9}")
    print(f"{'':<13}{'':>7}{'(init)':>12}{'(init)':>11}{'(init)':>10}{'(init)':>11}{'':>9}{'':>7}{'(trained)':>12}")
    for row in rows:
        steps = "never" if math.isnan(row["steps_to_target"]) else f"{row['steps_to_target']:.0f}"
        print(f"{row['variant']:<13}{row['n_params']:>7}{row['lambda_max_init']:>12.4g}"
              f"{row['smallest_positive_init']:>11.3g}{row['ratio_init']:>10.3g}{row['stable_lr_init']:>11.3g}"
              f"{row['best_lr']:>9.3g}{steps:>7}{row['lambda_max_trained']:>12.4g}{row['val_accuracy']:>9.4f}")
    raw, std = study.bowls
    print(f"bowl ({', '.join(raw.features)}): condition number {raw.condition:.4g} raw, {std.condition:.4g} "
          f"standardised; GD at its best fixed rate needs {raw.steps_to_shrink():.0f} vs "
          f"{std.steps_to_shrink():.0f} steps to get 100x closer to the minimum")
    print(f"report: {report}")
    emit(args, {"run": str(out), "report": str(report), "target_loss": study.target_loss,
                "variants": [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
                             for row in rows],
                "bowls": [{"features": list(b.features), "standardised": standardised, "condition": b.condition}
                          for standardised, b in zip((False, True), study.bowls)]})
    return 0
