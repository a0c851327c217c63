"""How feature scales shape the error surface, and when the failure is saturation instead:
softmax regression, a small-init ReLU MLP, a tanh MLP and a deeper tanh MLP, each on raw and on
standardised features, hidden ones also with BatchNorm after every hidden linear layer.

For every variant and seed (the same initial weights for every rate and treatment): the exact
Hessian's lambda_max at the start and the quadratic bound 2/lambda_max (the rate above which GD
would diverge on the start's quadratic model), a shared log grid of rates (widened past an end
while the best rate sits there) with full-batch GD, the largest rate that did not diverge, the
best rate's steps to --target-loss and final loss, lambda_max along training, the test accuracy
on a split no choice saw, and how saturated the tanh units are (|z| > 3; the stall monitor's
saturated_units). Means over --seeds with 95 % intervals; every comparison is paired by seed and
stated as a finding only when its interval excludes 0. Data: scikit-learn's breast-cancer table
(30 features whose spreads run from about 0.003 to 570). Also the lecture's picture in closed
form: the two-weight least-squares bowl of two features before and after standardising.

Examples:
  descentlab normalization                                  # 4 models, 14 variants x 5 seeds, minutes
  descentlab normalization --models softmax,relu --seeds 10
  descentlab normalization --quick --out runs/norm          # 2 models x 2 seeds, short runs

Writes runs/normalization-<timestamp>/ (or --out): config.json, seeds.csv (one row per variant and
seed), sweep.csv, curves.csv, spectra.pt, bowls.json, summary.json, the figures and report.html.
"""

from __future__ import annotations

import argparse

#: --quick: a study small enough for a test or a first look.
QUICK = {"models": "softmax,tanh", "seeds": 2, "steps": 60, "rates": "0.001,0.01,0.1,1,3", "track_every": 20}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="softmax,tanh,relu,deep", metavar="A,B,...",
                        help="models to study (default: softmax,tanh,relu,deep): softmax regression from zero, a "
                             "tanh MLP, a small-init ReLU MLP (both 30-HIDDEN-2), a tanh MLP 30-16-16-16-2")
    parser.add_argument("--seeds", type=int, default=5,
                        help="initial weights drawn from seed, seed+1, ... (default: 5)")
    parser.add_argument("--hidden", type=int, default=8, help="hidden units of the tanh and ReLU MLPs (default: 8)")
    parser.add_argument("--steps", type=int, default=300, help="full-batch GD steps per rate (default: 300)")
    parser.add_argument("--target-loss", type=float, default=0.1,
                        help="training loss (cross-entropy) that counts as arrived (default: 0.1)")
    parser.add_argument("--rates", default=None, metavar="A,B,...",
                        help="the shared learning-rate grid (default: 1e-4 to 10, two per decade; widened past an "
                             "end while the best rate sits there)")
    parser.add_argument("--track-every", type=int, default=25,
                        help="measure lambda_max every this many steps of the best run (default: 25; 0: never)")
    parser.add_argument("--bowl-features", default="mean texture,mean smoothness", metavar="A,B",
                        help="the two features of the closed-form bowl (default: 'mean texture,mean smoothness')")
    parser.add_argument("--quick", action="store_true",
                        help="a small study: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items())
                             + " (options you give win)")
    parser.add_argument("--seed", type=int, default=0, help="the train/test split and the first initial weights "
                                                            "(default: 0)")
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/normalization-<time>)")


def _numbers(text: str, option: str) -> list[float]:
    import math

    from descentlab.errors import UserInputError

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not (math.isfinite(v) and v > 0) for v in values) or len(set(values)) != len(values):
        raise UserInputError(f"{option} must be distinct positive numbers 'A,B,...', got {text!r}")
    return values


def _models(text: str) -> list[str]:
    from descentlab.errors import UserInputError
    from descentlab.experiments.normalization import MODELS

    models = [m.strip() for m in text.split(",") if m.strip()]
    if not models or len(set(models)) != len(models) or any(m not in MODELS for m in models):
        raise UserInputError(f"--models must be distinct names from {', '.join(MODELS)}, got {text!r}")
    return models


def _rows(study) -> tuple[list[dict], list[dict], list[dict]]:
    import math

    seeds, sweep, curves = [], [], []
    for r in study.runs:
        name = r.variant.name
        seeds.append({
            "variant": name, "model": r.variant.model, "inputs": r.variant.inputs, "batchnorm": r.variant.batchnorm,
            "seed": r.seed, "n_params": r.n_params, "lambda_max_init": r.lambda_max_init,
            "n_zero_init": r.init.n_zero if r.init is not None else math.nan, "quadratic_bound": r.quadratic_bound,
            "largest_stable": r.largest_stable, "stable_over_bound": r.largest_stable / r.quadratic_bound,
            "best_lr": r.best_lr, "at_edge": r.at_edge, "grid_low": r.rates[0], "grid_high": r.rates[-1],
            "steps_to_target": r.best_steps, "final_loss": r.final_loss, "lambda_max_trained": r.lambda_max_trained,
            "test_accuracy": r.test_accuracy, "saturated_preact_init": r.saturation_init.pre_activations,
            "saturated_units_init": r.saturation_init.units,
            "saturated_preact_trained": r.saturation_trained.pre_activations,
            "saturated_units_trained": r.saturation_trained.units})
        sweep += [{"variant": name, "seed": r.seed, "lr": lr, "steps_to_target": hit, "final_loss": final,
                   "diverged": diverged}
                  for lr, hit, final, diverged in zip(r.rates, r.steps_to_target, r.final_losses, r.diverged)]
        tracked = dict(zip(r.training.track_steps, r.training.track_lambda))
        curves += [{"variant": name, "seed": r.seed, "lr": r.best_lr, "step": step, "loss": float(loss),
                    "lambda_max": tracked.get(step, "")} for step, loss in enumerate(r.training.losses)]
    return seeds, sweep, curves


def run(args: argparse.Namespace) -> int:
    import math

    from descentlab import files
    from descentlab.commands.common import emit, given, output_dir
    from descentlab.errors import UserInputError
    from descentlab.experiments.normalization import DEFAULT_RATES, normalization_study
    from descentlab.problems.features import breast_cancer
    from descentlab.report.normalization_page import findings, variant_table
    from descentlab.report.render import render
    from descentlab.report.text_table import text_table
    from descentlab.rundir import staged_run

    if args.quick:
        for key, value in QUICK.items():
            if not given(args, key):
                setattr(args, key, value)
    models = _models(args.models)
    for name, low in (("seeds", 1), ("hidden", 1), ("steps", 1), ("track_every", 0)):
        if getattr(args, name) < low:
            raise UserInputError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
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
        study = normalization_study(models=models, seeds=args.seeds, hidden=args.hidden, steps=args.steps,
                                    rates=rates, target_loss=args.target_loss, track_every=args.track_every,
                                    seed=args.seed, bowl_features=features, progress=args.progress)
        seeds, sweep, curves = _rows(study)
        run_dir.write_csv("seeds.csv", seeds)
        run_dir.write_csv("sweep.csv", sweep)
        run_dir.write_csv("curves.csv", curves)
        first = {}
        for r in study.runs:
            if r.variant.name not in first and r.init is not None:
                first[r.variant.name] = {"init": r.init.eigenvalues,
                                         "trained": r.trained.eigenvalues if r.trained is not None else None}
        files.save_torch(run_dir.file("spectra.pt"), first)
        run_dir.write_json("bowls.json", [
            {"standardised": standardised, "features": list(b.features), "hessian": b.hessian.tolist(),
             "w_star": b.w_star.tolist(), "loss_star": b.loss_star, "eigenvalues": b.eigenvalues.tolist(),
             "condition": b.condition, "best_lr": b.best_lr, "contraction": b.contraction,
             "steps_to_shrink_100": b.steps_to_shrink(100.0), "path": b.path.tolist()}
            for standardised, b in zip((False, True), study.bowls)])
        run_dir.write_json("summary.json", {"target_loss": study.target_loss, "prior_entropy": study.prior_entropy,
                                            "seconds": round(study.seconds, 2), "settings": study.settings})
    report = render(out)
    for line in findings(seeds, study.prior_entropy):
        print(line)
    table = variant_table(seeds)
    shown = ["variant", "lambda_max start", "bound 2/lambda_max", "largest rate not diverged", "best rate",
             "steps to target (reached)", "final loss", "test accuracy", "|z|>3 start (1st tanh layer)"]
    print(text_table([shown] + [[str(row[c]) for c in shown] for row in table]))
    raw, std = study.bowls
    print(f"bowl ({', '.join(raw.features)}): condition number {raw.condition:.4g} raw, {std.condition:.4g} "
          f"standardised; GD at its best fixed rate needs {raw.steps_to_shrink():.0f} vs "
          f"{std.steps_to_shrink():.0f} steps to get 100x closer to the minimum")
    print(f"report: {report}")

    def plain(value):  # NaN as None: strict JSON
        return None if isinstance(value, float) and not math.isfinite(value) else value

    emit(args, {"run": str(out), "report": str(report), "target_loss": study.target_loss,
                "variants": table, "seeds": [{k: plain(v) for k, v in row.items()} for row in seeds],
                "findings": findings(seeds, study.prior_entropy),
                "bowls": [{"features": list(b.features), "standardised": standardised, "condition": b.condition}
                          for standardised, b in zip((False, True), study.bowls)],
                "seconds": round(study.seconds, 2)})
    return 0
