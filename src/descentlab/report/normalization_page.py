"""The report page of a ``normalization`` study: conditioning, saturation, and what standardising
and BatchNorm change.

Reads only the run directory (``config.json``, ``seeds.csv`` one row per variant and seed,
``sweep.csv``, ``curves.csv``, ``spectra.pt``, ``bowls.json``, ``summary.json``). Every number
it states is a mean over the seeds with its 95 % interval (:mod:`descentlab.intervals`; quantities
that span decades -- curvatures, rates -- as geometric means, their intervals from the logs), and
every comparison is paired by seed (the same initial weights) and stated as a finding only when its
interval excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from descentlab.intervals import Interval, difference_interval, finding, mean_interval
from descentlab.report.html import Page, format_value
from descentlab.rundir import RunDir

__all__ = ["build", "findings", "variant_table", "geometric_interval", "LOG_COLUMNS"]

_COLOURS = {"raw": "#d62728", "standardised": "#2ca02c", "standardised+bn": "#1f77b4", "raw+bn": "#9467bd"}
#: Columns of ``seeds.csv`` summarised as geometric means (they span decades).
LOG_COLUMNS = ("lambda_max_init", "quadratic_bound", "largest_stable", "stable_over_bound", "best_lr",
               "lambda_max_trained")
_MODEL_LABELS = {"softmax": "softmax regression (zero init)", "tanh": "tanh MLP (default init)",
                 "relu": "ReLU MLP (small init)", "deep": "deep tanh MLP (default init)"}
_SATURATED = 0.5  # a variant whose pre-activations are mostly in the flat tails is told as saturated


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_seeds(run: RunDir) -> list[dict[str, Any]]:
    """``seeds.csv`` with its numbers as numbers."""
    text = ("variant", "model", "inputs", "at_edge", "batchnorm")
    return [{k: (v if k in text else _number(v)) for k, v in row.items()} for row in run.read_csv("seeds.csv")]


def geometric_interval(values: Sequence[float]) -> Interval:
    """The geometric mean with the t interval of the mean of the logs, back in the values' units
    (positive finite values only)."""
    logs = [math.log10(v) for v in values if math.isfinite(v) and v > 0]
    found = mean_interval(logs)
    power = lambda x: 10 ** x if math.isfinite(x) else math.nan  # noqa: E731
    return Interval(power(found.estimate), power(found.low), power(found.high), found.n, found.level, "t of log10")


def _by(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["variant"], []).append(row)
    for seeds in out.values():
        seeds.sort(key=lambda r: r["seed"])
    return out


#: Columns that are shares: their intervals are clipped to [0, 1], where a share can lie.
SHARE_COLUMNS = ("test_accuracy", "saturated_preact_init", "saturated_units_init", "saturated_preact_trained",
                 "saturated_units_trained")


def _summary(seeds: Sequence[Mapping[str, Any]], column: str) -> Interval:
    values = [r[column] for r in seeds]
    if column in LOG_COLUMNS:
        return geometric_interval(values)
    found = mean_interval(values)
    if column in SHARE_COLUMNS and math.isfinite(found.low):
        return Interval(found.estimate, max(found.low, 0.0), min(found.high, 1.0), found.n, found.level, found.method)
    return found


def _paired(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], column: str, log: bool = False) -> Interval:
    """``a - b`` of ``column``, paired by seed (log10 first with ``log``)."""
    seeds = sorted({r["seed"] for r in a} & {r["seed"] for r in b})
    pick = lambda rows: [next(r[column] for r in rows if r["seed"] == s) for s in seeds]  # noqa: E731
    x, y = pick(a), pick(b)
    if log:
        x = [math.log10(v) if v > 0 else math.nan for v in x]
        y = [math.log10(v) if v > 0 else math.nan for v in y]
    return difference_interval(x, y, paired=True)


def _reached(seeds: Sequence[Mapping[str, Any]]) -> str:
    hits = [r["steps_to_target"] for r in seeds if math.isfinite(r["steps_to_target"])]
    if not hits:
        return f"0/{len(seeds)}"
    return f"{len(hits)}/{len(seeds)}, {mean_interval(hits).text(3)}" if len(hits) > 1 else \
        f"{len(hits)}/{len(seeds)}, {hits[0]:.0f}"


def variant_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant: means over seeds with their 95 % intervals."""
    table = []
    for name, seeds in _by(rows).items():
        edges = sorted({r["at_edge"] for r in seeds if r["at_edge"]})
        table.append({
            "variant": name, "seeds": len(seeds), "params": int(seeds[0]["n_params"]),
            "lambda_max start": _summary(seeds, "lambda_max_init").text(3),
            "zero eigenvalues start": _summary(seeds, "n_zero_init").text(3)
            if any(math.isfinite(r["n_zero_init"]) for r in seeds) else "",
            "bound 2/lambda_max": _summary(seeds, "quadratic_bound").text(2),
            "largest rate not diverged": _summary(seeds, "largest_stable").text(2),
            "x the bound": _summary(seeds, "stable_over_bound").text(2),
            "best rate": _summary(seeds, "best_lr").text(2) + (f" (at the {'/'.join(edges)} edge)" if edges else ""),
            "steps to target (reached)": _reached(seeds),
            "final loss": _summary(seeds, "final_loss").text(3),
            "lambda_max end": _summary(seeds, "lambda_max_trained").text(3),
            "test accuracy": _summary(seeds, "test_accuracy").text(3),
            "|z|>3 start (1st tanh layer)": _summary(seeds, "saturated_preact_init").text(2)
            if any(math.isfinite(r["saturated_preact_init"]) for r in seeds) else "",
            "saturated units start (1st tanh layer)": _summary(seeds, "saturated_units_init").text(2)
            if any(math.isfinite(r["saturated_units_init"]) for r in seeds) else "",
        })
    return table


def _saturation_story(model: str, by: Mapping[str, Sequence[Mapping[str, Any]]], prior: float) -> str | None:
    raw = by.get(f"{model}/raw")
    if not raw or not any(math.isfinite(r["saturated_preact_init"]) for r in raw):
        return None
    share = _summary(raw, "saturated_preact_init")
    if not share.estimate > _SATURATED:
        return (f"{_MODEL_LABELS[model]} on raw features: {share.text(2)} of the pre-activations of its first tanh "
                "layer have |z| > 3 at the start; saturation is not what limits it.")
    units = _summary(raw, "saturated_units_init")
    zeros = _summary(raw, "n_zero_init")
    parts = [f"{_MODEL_LABELS[model]} on raw features is saturated: at the start {share.text(2)} of the "
             "pre-activations (samples x units) of its first tanh layer, the one the raw inputs feed, have |z| > 3, "
             f"where tanh's slope is below 0.01, and the stall monitor calls {units.text(2)} of that layer's units "
             "saturated (its verdict saturated_units)"]
    if math.isfinite(zeros.estimate):
        parts.append(f"{zeros.text(3)} of the Hessian's {int(raw[0]['n_params'])} eigenvalues are zero there")
    at_prior = mean_interval([r["final_loss"] - prior for r in raw])
    parts.append(finding(at_prior, f"its final training loss at the best rate minus the class prior's entropy "
                                   f"{prior:.3f} (what predicting the class shares alone scores)"))
    story = "; ".join(parts) + "."
    if not at_prior.excludes(0.0):
        story += (" At its best rate it ends no detectably better than predicting the class shares: what stops it is "
                  "saturation (units that pass almost no gradient), not an elongated valley.")
    rescued = by.get(f"{model}/raw+bn")
    if rescued:
        after = _summary(rescued, "saturated_preact_init")
        story += (f" With BatchNorm on the hidden layers and the same raw inputs, {after.text(2)} of those "
                  "pre-activations are beyond |z| > 3; " + finding(_paired(rescued, raw, "final_loss"),
                                                                  "final loss, raw+BN minus raw (paired seeds)") + ".")
    return story


def findings(rows: Sequence[Mapping[str, Any]], prior: float) -> list[str]:
    """The results, one sentence each: every comparison paired by seed, a finding only where its
    95 % interval excludes 0 (:func:`descentlab.intervals.finding`)."""
    by = _by(rows)
    models = list(dict.fromkeys(r["model"] for r in rows))
    out = []
    for model in models:
        label = _MODEL_LABELS.get(model, model)
        raw, std = by.get(f"{model}/raw"), by.get(f"{model}/standardised")
        mine = [r for r in rows if r["model"] == model]
        same = all(len({repr(r["final_loss"]) for r in seeds}) == 1
                   for name, seeds in by.items() if name.startswith(model + "/"))
        if len({r["seed"] for r in mine}) > 1 and same:
            out.append(f"{label}: every seed gave the same numbers (its start does not depend on the seed), so its "
                       "intervals have width 0.")
        story = _saturation_story(model, by, prior)
        if story:
            out.append(story)
        if raw and std:
            out.append(finding(_paired(std, raw, "lambda_max_init", log=True),
                               f"{label}: log10 lambda_max at the start, standardised minus raw"))
            out.append(finding(_paired(std, raw, "final_loss"),
                               f"{label}: final training loss at each seed's best rate, standardised minus raw"))
        bn = by.get(f"{model}/standardised+bn")
        if bn and std:
            out.append(finding(_paired(bn, std, "final_loss"),
                               f"{label}: final training loss, standardised+BN minus standardised"))
            both = [s for s in {r["seed"] for r in bn} if all(
                math.isfinite(r["steps_to_target"]) for r in (*bn, *std) if r["seed"] == s)]
            if len(both) >= 2:
                keep = lambda rs: [r for r in rs if r["seed"] in both]  # noqa: E731
                out.append(finding(_paired(keep(bn), keep(std), "steps_to_target"),
                                   f"{label}: GD steps to the target, standardised+BN minus standardised "
                                   f"({len(both)} seeds where both reached it)"))
            out.append(finding(_paired(bn, std, "lambda_max_init", log=True),
                               f"{label}: log10 lambda_max at the start, standardised+BN minus standardised"))
    for name, seeds in by.items():
        logs = mean_interval([math.log10(r["stable_over_bound"]) for r in seeds
                              if math.isfinite(r["stable_over_bound"]) and r["stable_over_bound"] > 0])
        if logs.n:
            out.append(finding(logs, f"{name}: log10 (largest rate that did not diverge / the quadratic bound at the "
                                     "start 2/lambda_max)"))
    return out


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


def _treatment(variant: str) -> str:
    return variant.split("/", 1)[1]


def _panels(models: Sequence[str]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), squeeze=False)
    return fig, dict(zip(models, axes[0]))


def _sweep_figure(sweep: list[dict], models: Sequence[str], target: float):
    fig, axes = _panels(models)
    for model, ax in axes.items():
        variants = sorted({s["variant"] for s in sweep if s["variant"].startswith(model + "/")})
        for variant in variants:
            by_rate: dict[float, list[float]] = {}
            for s in sweep:
                if s["variant"] == variant:
                    by_rate.setdefault(float(s["lr"]), []).append(_number(s["final_loss"]))
            rates = sorted(by_rate)
            means = [sum(min(v, 10.0) if math.isfinite(v) else 10.0 for v in by_rate[r]) / len(by_rate[r])
                     for r in rates]
            ax.plot(rates, means, "-o", ms=3, color=_COLOURS.get(_treatment(variant)), label=_treatment(variant))
        ax.axhline(target, color="#888", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(_MODEL_LABELS.get(model, model), fontsize=9)
        ax.set_xlabel("learning rate")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    next(iter(axes.values())).set_ylabel("final training loss (mean over seeds; capped at 10)")
    fig.tight_layout()
    return fig


def _sharpness_figure(curves: list[dict], models: Sequence[str]):
    fig, axes = _panels(models)
    for model, ax in axes.items():
        series: dict[str, dict[int, list[float]]] = {}
        for c in curves:
            value = _number(c.get("lambda_max"))
            if c["variant"].startswith(model + "/") and math.isfinite(value):
                series.setdefault(c["variant"], {}).setdefault(int(c["step"]), []).append(value * float(c["lr"]))
        for variant, points in sorted(series.items()):
            steps = sorted(points)
            ax.plot(steps, [sum(points[s]) / len(points[s]) for s in steps], "-",
                    color=_COLOURS.get(_treatment(variant)), label=_treatment(variant))
        ax.axhline(2.0, color="#444", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_title(_MODEL_LABELS.get(model, model), fontsize=9)
        ax.set_xlabel("GD step (at each seed's best rate)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    next(iter(axes.values())).set_ylabel("lr x lambda_max (mean over seeds; 2: GD's limit)")
    fig.tight_layout()
    return fig


def _spectra_figure(spectra: Mapping[str, Mapping[str, Any]]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, when in zip(axes, ("init", "trained")):
        for name, spectrum in spectra.items():
            values = spectrum.get(when)
            if values is None:
                continue
            values = values.numpy()
            ax.plot(range(len(values)), sorted(abs(values), reverse=True), label=name, lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("eigenvalue rank (by |lambda|)")
        ax.set_title("at the start" if when == "init" else "after training at the best rate", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("|eigenvalue| of the Hessian")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def build(run: RunDir) -> Page:
    """The normalization page of ``run``."""
    from descentlab import files

    config = run.config
    summary = run.read_json("summary.json")
    rows = read_seeds(run)
    bowls = run.read_json("bowls.json")
    target = float(summary["target_loss"])
    settings = summary.get("settings", {})
    models = list(dict.fromkeys(r["model"] for r in rows))
    page = Page("normalization: conditioning, saturation, standardising and BatchNorm")
    page.paragraph(
        f"Full-batch gradient descent on scikit-learn's breast-cancer table ({settings.get('n_train')} training "
        f"tumours, {settings.get('n_features')} features as measured, spreads from about 0.003 to 570; "
        f"{settings.get('n_test')} held out as a test split that no choice sees) for {config.get('steps')} steps, "
        "with: " + "; ".join(_MODEL_LABELS.get(m, m) for m in models) + ". Each on raw and on standardised "
        "features, hidden models also with BatchNorm after every hidden linear layer (on standardised and on raw "
        f"inputs), from {settings.get('seeds')} seeds of initial weights (the same draw for every rate and "
        "treatment of a model). Each seed's best rate is the one of a shared log grid (widened past an end while "
        f"the best sits there) that reaches the training loss {target:g} in the fewest steps, else the one with the "
        "lowest final training loss. 2/lambda_max at the start is the quadratic bound: the rate above which GD "
        "would diverge on the start's quadratic model; the sweep tests it rather than assuming it.")
    page.finding(" ".join(findings(rows, float(summary.get("prior_entropy", math.nan)))))
    page.heading("Every variant (means over seeds, 95 % intervals)")
    page.table(variant_table(rows))
    page.paragraph("Curvatures and rates are geometric means (their intervals from the logs); x the bound is the "
                   "largest rate that did not diverge divided by 2/lambda_max at the start. A run diverged when its "
                   "loss left the finite numbers or ended above where it started. BatchNorm changes the "
                   "parameterisation (the loss no longer depends on the scale of the weights before it), so its "
                   "lambda_max is not directly comparable with the plain network's; the loss reached is.")

    page.heading("The elongated bowl turning round (closed form)")
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
    page.heading("Final training loss at every rate")
    page.figure(_sweep_figure(run.read_csv("sweep.csv"), models, target),
                "Mean over seeds; the dashed line is the target; diverged runs are drawn at 10.",
                save_to=run.file("sweep.png"))
    page.heading("lambda_max along training")
    page.figure(_sharpness_figure(run.read_csv("curves.csv"), models),
                "lr x lambda_max at each seed's best rate, averaged over seeds: GD on a quadratic diverges above 2 "
                "(dotted).", save_to=run.file("sharpness.png"))
    spectra = files.load_torch(run.file("spectra.pt"))
    if spectra:
        page.heading("Hessian spectra (first seed)")
        page.figure(_spectra_figure(spectra), "Every eigenvalue's magnitude, largest first (exact Hessian).",
                    save_to=run.file("spectra.png"))
    page.heading("Configuration")
    page.code("\n".join(f"{key}: {value}" for key, value in sorted(config.items())))
    return page
