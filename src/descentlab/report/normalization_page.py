"""The report page of a ``normalization`` study: how normalisation reshapes the error surface.

Reads only the run directory (``config.json``, ``variants.csv``, ``sweep.csv``,
``curves.csv``, ``spectra.pt``, ``bowls.json``, ``summary.json``); states the finding from
the measured numbers, and draws the two-weight bowl before and after standardising, the
steps to the target against the learning rate, the loss curves at each variant's best rate,
and the Hessian spectra.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from descentlab.rundir import RunDir
from descentlab.report.html import Page, format_value

__all__ = ["build", "finding"]

_COLOURS = {"raw": "#d62728", "standardised": "#2ca02c", "batchnorm": "#1f77b4"}


def _number(value: Any) -> float:
    return float(value) if value not in ("", None) else math.nan


def _rows(run: RunDir) -> list[dict[str, Any]]:
    rows = []
    for raw in run.read_csv("variants.csv"):
        rows.append({k: (v if k == "variant" else _number(v)) for k, v in raw.items()})
    return rows


def _steps(value: float, budget: int) -> str:
    return f"not within {budget} steps" if math.isnan(value) else f"{value:.0f} steps"


def _compare(new: float, old: float) -> str:
    if not (math.isfinite(new) and math.isfinite(old)) or old == 0:
        return "changed"
    factor = new / old
    return f"{'fell' if factor < 1 else 'rose'} {max(factor, 1 / factor):.3g}-fold"


def finding(rows: Sequence[Mapping[str, Any]], conditions: Sequence[float], target: float, budget: int) -> str:
    """The result in a few sentences, every number from ``rows`` (``variants.csv``) and the bowls' conditions."""
    by = {r["variant"]: r for r in rows}
    raw = by["raw"]

    def reached(r: Mapping[str, Any]) -> str:
        if math.isnan(r["steps_to_target"]):
            return (f"no rate reached the training loss {target:g} within {budget} steps (best rate {r['best_lr']:.3g}, "
                    f"final loss {r['final_loss']:.3g})")
        return f"GD reached the training loss {target:g} in {r['steps_to_target']:.0f} steps at rate {r['best_lr']:.3g}"

    parts = [f"Raw features: lambda_max {raw['lambda_max_init']:.4g} at initialisation (largest stable GD rate "
             f"2/lambda_max = {raw['stable_lr_init']:.3g}); {reached(raw)}."]
    for name, label in (("standardised", "Standardised"), ("batchnorm", "BatchNorm layers")):
        if name in by:
            r = by[name]
            parts.append(f"{label}: lambda_max {_compare(r['lambda_max_init'], raw['lambda_max_init'])} to "
                         f"{r['lambda_max_init']:.4g} (stable rate {r['stable_lr_init']:.3g}); {reached(r)}.")
    ratios = ", ".join(f"{r['ratio_init']:.3g} {r['variant']}" for r in rows)
    lowest = min(rows, key=lambda r: r["ratio_init"] if math.isfinite(r["ratio_init"]) else math.inf)
    parts.append(f"The ratio lambda_max / smallest positive eigenvalue at initialisation: {ratios} (lowest: "
                 f"{lowest['variant']}).")
    raw_kappa, std_kappa = conditions
    parts.append(f"The two-weight least-squares bowl's condition number: {raw_kappa:.4g} raw, {std_kappa:.4g} "
                 "standardised.")
    return " ".join(parts)


def _bowl_figure(bowls: list[dict]):
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, bowl in zip(axes, bowls):
        H = np.asarray(bowl["hessian"])
        w_star = np.asarray(bowl["w_star"])
        path = np.asarray(bowl["path"])
        reach = 1.15 * max(float(np.abs(path - w_star).max()), 1e-12)
        a = np.linspace(w_star[0] - reach, w_star[0] + reach, 241)
        b = np.linspace(w_star[1] - reach, w_star[1] + reach, 241)
        A, B = np.meshgrid(a, b)
        D = np.stack([A - w_star[0], B - w_star[1]], axis=-1)
        # L(w) = L* + 1/2 (w - w*)^T H (w - w*): exact for least squares
        Z = bowl["loss_star"] + 0.5 * np.einsum("...i,ij,...j->...", D, H, D)
        levels = bowl["loss_star"] + (Z.max() - bowl["loss_star"]) * np.linspace(0, 1, 25)[1:] ** 2
        ax.contourf(A, B, Z, levels=np.concatenate([[Z.min()], levels]), cmap="Greys_r", alpha=0.35)
        ax.contour(A, B, Z, levels=levels, colors="#555", linewidths=0.5)
        ax.plot(path[:, 0], path[:, 1], "-o", color="#d62728", ms=2.5, lw=1.2,
                label=f"GD, best fixed rate, {len(path) - 1} steps")
        ax.plot(*w_star, "*", color="#2ca02c", ms=13, label="minimum")
        ax.set_aspect("equal")
        ax.set_xlabel(f"w1 ({bowl['features'][0]})")
        ax.set_ylabel(f"w2 ({bowl['features'][1]})")
        state = "standardised" if bowl["standardised"] else "raw"
        ax.set_title(f"{state} features: condition number {bowl['condition']:.3g}", fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def _sweep_figure(sweep: list[dict], rows: list[dict], budget: int):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for row in rows:
        name = row["variant"]
        points = [(float(s["lr"]), _number(s["steps_to_target"])) for s in sweep if s["variant"] == name]
        rates = [p[0] for p in points]
        steps = [p[1] if math.isfinite(p[1]) else budget * 1.15 for p in points]
        ax.plot(rates, steps, "-o", color=_COLOURS.get(name), ms=4, label=name)
        ax.axvline(row["stable_lr_init"], color=_COLOURS.get(name), ls=":", lw=1)
    ax.axhline(budget, color="#888", lw=0.8)
    ax.text(min(float(s["lr"]) for s in sweep), budget * 1.17, "did not reach the target", fontsize=8,
            color="#555", va="bottom")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate (dotted: 2/lambda_max at initialisation)")
    ax.set_ylabel("GD steps to the target loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig


def _curves_figure(curves: list[dict], target: float):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name in _COLOURS:
        points = [(int(c["step"]), _number(c["loss"]), float(c["lr"])) for c in curves if c["variant"] == name]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], color=_COLOURS[name],
                    label=f"{name} (lr {points[0][2]:.3g})")
    ax.axhline(target, color="#888", ls="--", lw=0.8, label=f"target {target:g}")
    ax.set_yscale("log")
    ax.set_xlabel("GD step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _spectra_figure(spectra: Mapping[str, Mapping[str, Any]]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, when in zip(axes, ("init", "trained")):
        for name, spectrum in spectra.items():
            values = spectrum[when].numpy()
            ax.plot(range(len(values)), sorted(abs(values), reverse=True), color=_COLOURS.get(name), label=name)
        ax.set_yscale("log")
        ax.set_xlabel("eigenvalue rank (by |lambda|)")
        ax.set_title("at initialisation" if when == "init" else "after training at the best rate", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("|eigenvalue| of the Hessian")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def build(run: RunDir) -> Page:
    """The normalization page of ``run``."""
    from descentlab import files

    config = run.config
    summary = run.read_json("summary.json")
    rows = _rows(run)
    bowls = run.read_json("bowls.json")
    target = float(summary["target_loss"])
    budget = int(config["steps"])
    settings = summary.get("settings", {})
    hidden = int(config.get("hidden", 0))
    model = f"a tanh MLP {settings.get('n_features')}-{hidden}-2" if hidden else \
        f"the linear model {settings.get('n_features')}-2 (softmax regression)"
    page = Page("normalization: how feature scales shape the error surface")
    page.paragraph(
        f"The same network ({model}, the same initial weights) trained with full-batch gradient descent on "
        f"scikit-learn's breast-cancer table ({settings.get('n_train')} training tumours, "
        f"{settings.get('n_features')} features as measured: spreads from about 0.003 to 570) three ways: raw "
        "features; standardised features (mean 0, spread 1); raw features with BatchNorm on the input and after "
        "the hidden linear layer. Every variant tries the same learning rates for "
        f"{budget} steps; its best rate is the one that reaches the training loss {target:g} first.")
    page.finding(finding(rows, [b["condition"] for b in bowls], target, budget))
    page.paragraph(
        "The smallest positive eigenvalue is the smallest one above the zero tolerance |lambda| <= 1e-6 max|lambda| "
        "(descentlab.critical.rules); a network's Hessian has many eigenvalues near zero (n_zero), so for the "
        "network this ratio mostly measures that tolerance, while lambda_max and the stable rate 2/lambda_max "
        "measure how steep the steepest direction is. The two-weight bowl below is convex and quadratic: there "
        "the ratio is the exact condition number.")
    columns = ["variant", "n_params", "lambda_max_init", "smallest_positive_init", "ratio_init", "n_negative_init",
               "n_zero_init", "stable_lr_init", "best_lr", "steps_to_target", "final_loss", "lambda_max_trained",
               "smallest_positive_trained", "ratio_trained", "n_zero_trained", "stable_lr_trained", "val_accuracy"]
    page.table(rows, columns)

    page.heading("The elongated bowl turning round")
    raw, std = bowls
    page.paragraph(
        f"Least squares of the label on two features, L(w) = mean (y - w1 x1 - w2 x2)^2, with x1 = "
        f"{raw['features'][0]} and x2 = {raw['features'][1]}. Its Hessian 2 X^T X / N is constant: raw, its "
        f"eigenvalues are {format_value(raw['eigenvalues'][0])} and {format_value(raw['eigenvalues'][1])} "
        f"(condition number {raw['condition']:.4g}); standardised, {format_value(std['eigenvalues'][0])} and "
        f"{format_value(std['eigenvalues'][1])} ({std['condition']:.4g}). Gradient descent at its best fixed "
        "rate 2/(lambda_max + lambda_min) gets (kappa - 1)/(kappa + 1) closer per step: "
        f"{raw['steps_to_shrink_100']:.0f} steps to get 100 times closer to the minimum raw, "
        f"{std['steps_to_shrink_100']:.0f} standardised.")
    page.figure(_bowl_figure(bowls), "Contours of the two-weight loss (equal axes) and 50 GD steps from w = 0.",
                save_to=run.file("bowl.png"))

    page.heading("Steps to the target loss at every rate")
    sweep = run.read_csv("sweep.csv")
    page.figure(_sweep_figure(sweep, rows, budget), "Rates that never reached the target are drawn above the "
                "budget line.", save_to=run.file("sweep.png"))
    page.heading("Training loss at each variant's best rate")
    page.figure(_curves_figure(run.read_csv("curves.csv"), target), "", save_to=run.file("curves.png"))
    page.heading("Hessian spectra")
    spectra = files.load_torch(run.file("spectra.pt"))
    page.figure(_spectra_figure(spectra), "Every eigenvalue's magnitude, largest first (exact Hessian).",
                save_to=run.file("spectra.png"))
    page.heading("Configuration")
    page.code("\n".join(f"{key}: {value}" for key, value in sorted(config.items())))
    return page
