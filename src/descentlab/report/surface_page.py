"""The report page of a ``surface`` run, drawn from its files alone.

Reads ``config.json``, ``paths.csv``, ``critical_points.json``, ``grid.npz`` and, when
present, ``dimension_lift.json``, ``valley.json``, ``tuning.csv``, ``basins.json`` with
``basins.npz``, and ``paths.gif``; writes ``contour.png``, ``loss.png``, ``dimension_lift.png``
and ``basins.png`` next to them (and ``paths.gif`` if the run asked for an animation and it is
missing).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from descentlab.rundir import RunDir
from descentlab.report import surface_figures as figures
from descentlab.report.html import Page, format_value

__all__ = ["build", "read_paths", "read_grid", "ended_near", "valley_finding", "basin_lines"]


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
            x, y = (_rounded(candidate[k], radius) for k in ("x", "y"))
            best, best_distance = f"{candidate['kind']} ({x:.3g}, {y:.3g})", distance
    for curve in curves:
        xs = np.asarray(curve["x"], dtype=float)
        ys = np.asarray(curve["y"], dtype=float)
        distances = np.hypot(xs - point[0], ys - point[1])
        if np.isfinite(distances).any() and np.nanmin(distances) <= best_distance:
            name = curve["description"].split(" (")[0]
            best, best_distance = f"{curve['kind']} (on the curve {name})", float(np.nanmin(distances))
    return best


def _rounded(value: float, scale: float) -> float:
    """``value``, or 0 where it is rounding noise next to ``scale`` (a minimum found at 1e-30 is at 0)."""
    return 0.0 if abs(value) < 1e-12 * max(scale, 1e-300) else value


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
                                        for m in missed) + ". "
    turned = _axis_angle(valley["steep"])
    if turned < 1.0:
        text += ("The valley's directions are the x and y axes, so a per-coordinate (diagonal) preconditioner "
                 "(Adagrad's, RMSProp's and Adam's division of each coordinate by its own gradient history) rescales "
                 "exactly the steep and the shallow direction.")
    else:
        text += (f"The valley's directions are turned {turned:.0f} degrees from the x and y axes: a per-coordinate "
                 "(diagonal) preconditioner (Adagrad's, RMSProp's and Adam's division of each coordinate by its own "
                 "gradient history) rescales x and y, not the steep and the shallow direction, so it cannot undo the "
                 "elongation here; gradient descent is rotation invariant and does what it does on the axis-aligned "
                 "bowl.")
    return text.strip()


def _axis_angle(vector) -> float:
    """Degrees between a unit 2-vector and the nearer coordinate axis (0 to 45)."""
    x, y = abs(float(vector[0])), abs(float(vector[1]))
    return math.degrees(math.atan2(min(x, y), max(x, y)))


def _minimum_names(basins: dict[str, Any]) -> list[tuple[str, str]]:
    """``(short, long)`` names of the minima: ``("deep", "deep minimum (-1.04, 0)")`` and ``"shallow"``
    for two, else ``"#1"``... by rank of their loss."""
    order = sorted(range(len(basins["minima"])), key=lambda k: basins["losses"][k])
    names = {}
    for rank, k in enumerate(order):
        x, y = basins["minima"][k]
        short = ("deep" if rank == 0 else "shallow") if len(order) == 2 else f"#{rank + 1}"
        names[k] = (short, f"{short} minimum ({x:.3g}, {y:.3g})")
    return [names[k] for k in range(len(order))]


def basin_lines(basins: dict[str, Any]) -> list[str]:
    """The basin map in words, from ``basins.json``: what it ran, a table of the share of starts that
    ended in the deepest minimum per momentum and rate, and where the paths' start ended."""
    names = _minimum_names(basins)
    deepest = min(range(len(names)), key=lambda k: basins["losses"][k])
    nx, ny = basins["starts"]
    lines = [f"basins: {nx} x {ny} starts over the window x {len(basins['lrs'])} rates x {len(basins['momenta'])} "
             f"momenta, heavy-ball SGD for {basins['steps']} steps each; share of starts ending in the "
             f"{names[deepest][1]} (unsettled / diverged when not 0):"]
    lines.append("momentum" + "".join(f"{f'lr {lr:g}':>18}" for lr in basins["lrs"]))
    for beta in basins["momenta"]:
        cells = []
        for row in basins["shares"]:
            if row["momentum"] != beta:
                continue
            cell = f"{row[f'minimum {deepest}']:.2f}"
            if row["unsettled"] or row["diverged"]:
                cell += f" ({row['unsettled']:.2f}/{row['diverged']:.2f})"
            cells.append(cell)
        lines.append(f"{beta:<8g}" + "".join(f"{c:>18}" for c in cells))
    where = {(e["momentum"], e["lr"]): e["end"] for e in basins["from_start"]}
    start = basins["start"]
    summary = []
    for beta in basins["momenta"]:
        ends = [where[(beta, lr)] for lr in basins["lrs"]]
        text = ", ".join(f"lr {lr:g}: {_end_name(code, names)}" for lr, code in zip(basins["lrs"], ends))
        summary.append(f"beta {beta:g}: {text}")
    grid_start = basins.get("grid_start", start)
    if math.dist(grid_start, start) > 1e-9 * (1 + math.hypot(*start)):
        where_from = f"from the grid start ({grid_start[0]:.3g}, {grid_start[1]:.3g}), nearest the paths' start"
    else:
        where_from = f"from the start ({start[0]:.3g}, {start[1]:.3g})"
    lines.append(f"{where_from}: " + "; ".join(summary))
    return lines


def _end_name(code: int, names: list[tuple[str, str]]) -> str:
    if code >= 0:
        return names[code][0]
    return "unsettled" if code == -1 else "diverged"


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

    if run.exists("basins.json"):
        basins = run.read_json("basins.json")
        with np.load(io.BytesIO(run.file("basins.npz").read_bytes())) as data:
            ends, xs, ys = data["ends"], data["xs"], data["ys"]
        page.heading("Which minimum each start ends in")
        lines = basin_lines(basins)
        page.paragraph(lines[0])
        page.code("\n".join(lines[1:-1]))
        page.finding(lines[-1][0].upper() + lines[-1][1:] + ".")
        names = _minimum_names(basins)
        page.table([{"momentum": r["momentum"], "lr": r["lr"],
                     **{names[k][1]: r[f"minimum {k}"] for k in range(len(names))},
                     "unsettled": r["unsettled"], "diverged": r["diverged"]} for r in basins["shares"]])
        page.figure(figures.basin_figure(ends, xs, ys, basins["lrs"], basins["momenta"], basins["minima"],
                                         basins["losses"], basins["start"]),
                    "Every start of the grid coloured by the minimum heavy-ball SGD ended in from there (within "
                    f"{basins['radius']:.2g} of it after {basins['steps']} steps), one panel per momentum (rows) and "
                    "learning rate (columns); grey: still moving, black: diverged; the star is the paths' start.",
                    save_to=run.file("basins.png"))

    if run.exists("tuning.csv"):
        page.heading("Learning-rate tuning (final loss at each rate)")
        for name, edge in (config.get("tune_edges") or {}).items():
            if edge:
                page.paragraph(f"Note: {name}'s chosen rate is still at the {edge} edge of its widened grid.")
        tuning = run.read_csv("tuning.csv")
        rates = sorted({float(r["lr"]) for r in tuning})
        table = {}
        for r in tuning:
            row = table.setdefault(r["optimizer"], {"optimizer": r["optimizer"]})
            row[f"{float(r['lr']):.3g}"] = float(r["final_loss"])
        page.table(list(table.values()), ["optimizer", *[f"{v:.3g}" for v in rates]])
    return page
