"""The report page of a ``surface`` run, drawn from its files alone.

Reads ``config.json``, ``paths.csv``, ``critical_points.json``, ``grid.npz`` and, when
present, ``dimension_lift.json``, ``valley.json``, ``tuning.csv`` and ``paths.gif``; writes ``contour.png``,
``loss.png`` and ``dimension_lift.png`` next to them (and ``paths.gif`` if the run asked for
an animation and it is missing).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from descentlab.rundir import RunDir
from descentlab.report import surface_figures as figures
from descentlab.report.html import Page, format_value

__all__ = ["build", "read_paths", "read_grid", "ended_near", "valley_finding"]


def read_paths(run: RunDir) -> dict[str, dict[str, np.ndarray]]:
    """``paths.csv`` as optimizer -> {"x", "y", "loss"} arrays indexed by step (in file order)."""
    rows = run.read_csv("paths.csv")
    paths: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        path = paths.setdefault(row["optimizer"], {"x": [], "y": [], "loss": []})
        for key in ("x", "y", "loss"):
            path[key].append(float(row[key]))
    return {name: {k: np.asarray(v) for k, v in path.items()} for name, path in paths.items()}


def read_grid(run: RunDir) -> dict[str, np.ndarray]:
    """``grid.npz``: the loss on a regular grid over the window (x, y, z, all 2-D)."""
    with np.load(io.BytesIO(run.file("grid.npz").read_bytes())) as data:
        return {key: data[key] for key in ("x", "y", "z")}


def ended_near(point: tuple[float, float], points: list[dict[str, Any]], radius: float,
               curves: list[dict[str, Any]] = ()) -> str:
    """Where a path ended: the nearest critical point within ``radius`` of ``point`` (its kind
    and place), or a curve of critical points passing within ``radius``; "" when none."""
    best, best_distance = "", radius
    for candidate in points:
        if not candidate.get("isolated", True):
            continue  # stands for its curve, matched below
        distance = math.hypot(point[0] - candidate["x"], point[1] - candidate["y"])
        if distance <= best_distance:
            best, best_distance = f"{candidate['kind']} ({candidate['x']:.3g}, {candidate['y']:.3g})", distance
    for curve in curves:
        xs = np.asarray(curve["x"], dtype=float)
        ys = np.asarray(curve["y"], dtype=float)
        distances = np.hypot(xs - point[0], ys - point[1])
        if np.isfinite(distances).any() and np.nanmin(distances) <= best_distance:
            name = curve["description"].split(" (")[0]
            best, best_distance = f"{curve['kind']} (on the curve {name})", float(np.nanmin(distances))
    return best


def _motion(m: dict[str, Any], steps: int, reach: float) -> str:
    if m["reached"]:
        return f"reached the minimum ({m['distance_left']:.2g} of the start's distance left)"
    if not math.isfinite(m["distance_left"]):
        return "diverged"
    parts = []
    if m["sign_changes"] >= steps / 4:
        parts.append(f"swung across the valley {m['sign_changes']} times in {steps} steps")
    if m["shallow_left"] > reach:
        parts.append(f"crawled along it ({m['shallow_left']:.2g} of its offset along the valley left)")
    return " and ".join(parts) or f"ended {m['distance_left']:.2g} of the start's distance away"


def valley_finding(valley: dict[str, Any]) -> str:
    """What every path did across and along the valley, in words, from ``valley.json``'s numbers."""
    low, high = valley["eigenvalues"]
    steps, reach = int(valley["steps"]), float(valley["reach"])
    reached = [m for m in valley["motions"] if m["reached"]]
    missed = [m for m in valley["motions"] if not m["reached"]]
    text = (f"At the minimum the curvatures are {low:.3g} (along the valley) and {high:.3g} (across it): condition "
            f"number {valley['condition']:.3g}, so one fixed gradient-descent rate must stay below "
            f"2/{high:.3g} = {2 / high:.3g}. ")
    if reached:
        text += (f"Reached the minimum (within {reach:.0%} of the start's distance): "
                 + ", ".join(f"{m['optimizer']} (lr {m['lr']:.3g})" for m in reached) + ". ")
    if missed:
        text += "Did not: " + "; ".join(f"{m['optimizer']} (lr {m['lr']:.3g}) {_motion(m, steps, reach)}"
                                        for m in missed) + "."
    return text.strip()


def build(run: RunDir) -> Page:
    """The page: settings, critical points, contour with paths, loss curves, GIF, dimension lift."""
    config = run.config
    critical = run.read_json("critical_points.json")
    points, curves = critical["points"], critical["curves"]
    paths = read_paths(run)
    grid = read_grid(run)
    window = config["window"]
    size = max(window[0][1] - window[0][0], window[1][1] - window[1][0])

    page = Page(f"surface: {config['function']}")
    page.paragraph(f"L(x, y) = {config['formula']}. {config['description']}.")
    page.paragraph(
        f"{len(paths)} optimizers from ({config['start'][0]:g}, {config['start'][1]:g}), "
        f"{config['steps']} steps each; learning rates "
        + ("tuned on a log grid by final loss (same budget for all)." if config.get("tuned") else
           "from the surface's defaults or --lr.")
        + (f" Schedule: {config['schedule']}." if config.get("schedule") else "")
    )

    rows = []
    for name, path in paths.items():
        final = (float(path["x"][-1]), float(path["y"][-1]))
        loss = float(path["loss"][-1])
        rows.append({
            "optimizer": name, "lr": config["lrs"][name], "final x": final[0], "final y": final[1],
            "final loss": loss if math.isfinite(loss) else "diverged",
            "ended at": ended_near(final, points, 1e-2 * size, curves) if math.isfinite(loss) else "",
        })
    best = min(rows, key=lambda r: r["final loss"] if isinstance(r["final loss"], float) else math.inf)
    page.finding(f"Lowest final loss: {best['optimizer']} ({format_value(best['final loss'])}).")
    page.table(rows)

    page.heading("Paths on the contour map")
    page.figure(figures.contour_figure(grid, points, curves, paths, window, config["function"]),
                "Critical points by kind (hollow: degenerate); every optimizer's path from the start (★).",
                save_to=run.file("contour.png"))
    page.heading("Loss against step")
    page.figure(figures.loss_figure(paths, config.get("minimum")), "", save_to=run.file("loss.png"))

    if config.get("animate"):
        gif = run.file("paths.gif")
        if not gif.exists():
            figures.animate_paths(gif, grid, points, curves, paths, window, every=config["frame_every"],
                                  title=config["function"])
        page.heading("Animation")
        page.image(gif, f"One frame every {config['frame_every']} steps.")

    page.heading("Critical points")
    isolated = [p for p in points if p.get("isolated", True)]
    page.table([
        {"x": p["x"], "y": p["y"], "kind": p["kind"], "degenerate": p["degenerate"], "loss": p["loss"],
         "eigenvalues": ", ".join(f"{v:.4g}" for v in p["eigenvalues"]), "decided by": p["decided_by"]}
        for p in isolated
    ])
    on_curves = len(points) - len(isolated)
    for curve in curves:
        page.paragraph(f"Curve of critical points: {curve['description']} — {curve['kind']}, degenerate "
                       f"({on_curves} points of it found).")

    if run.exists("valley.json"):
        valley = run.read_json("valley.json")
        page.heading("Across and along the valley")
        page.finding(valley_finding(valley))
        page.table([{"optimizer": m["optimizer"], "lr": m["lr"], "final loss": m["final_loss"],
                     "swings across (sign changes)": m["sign_changes"],
                     "offset along the valley left": m["shallow_left"],
                     "distance to the minimum left": m["distance_left"], "reached": m["reached"]}
                    for m in valley["motions"]])

    page.heading("Dimension lift: a 1-D minimum that is a 2-D saddle")
    if run.exists("dimension_lift.json"):
        lift = run.read_json("dimension_lift.json")
        page.figure(figures.lift_figure(lift, grid, window),
                    "Along one eigenvector of the Hessian the saddle is a minimum; the other eigenvector "
                    "(negative eigenvalue) still leads down.", save_to=run.file("dimension_lift.png"))
    else:
        page.paragraph("This surface has no non-degenerate saddle in its window; try --function lecture.")

    if run.exists("tuning.csv"):
        page.heading("Learning-rate tuning (final loss at each rate)")
        tuning = run.read_csv("tuning.csv")
        rates = sorted({float(r["lr"]) for r in tuning})
        table = {}
        for r in tuning:
            row = table.setdefault(r["optimizer"], {"optimizer": r["optimizer"]})
            row[f"{float(r['lr']):.3g}"] = float(r["final_loss"])
        page.table(list(table.values()), ["optimizer", *[f"{v:.3g}" for v in rates]])
    return page
