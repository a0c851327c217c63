"""Error surfaces you can see: every optimizer's path across an analytic 2-D surface.

Finds and names the surface's critical points (minimum, maximum, saddle, degenerate), runs
the registry's real optimizers from one start, and writes a run directory with the paths
(paths.csv), the critical points (critical_points.json), the figures (contour.png, loss.png,
dimension_lift.png, paths.gif with --animate) and report.html; on a surface with a single,
elongated minimum also valley.json (each path's swings across the valley and progress along it).
--tune picks every optimizer's rate on a log grid, widened a step at a time while the best rate
is at its edge. --basins (on by default for the double well) maps which minimum heavy-ball SGD
ends in from every start of a grid over the window, at every --basin-rates rate and
--basin-momenta beta (basins.npz, basins.json, basins.png).

Examples:
  descentlab surface                       # the lecture model, six classic optimizers
  descentlab surface --list                # every surface and its critical points
  descentlab surface --function elongated-bowl --tune   # one fixed rate against per-coordinate rates
  descentlab surface --function rotated-bowl --tune     # the same bowl turned 45 degrees
  descentlab surface --function double-well             # paths, and the map of which minimum each start ends in
  descentlab surface --function rosenbrock --optimizers sgd,momentum,nesterov,adagrad,rmsprop,adam \\
      --steps 300 --tune --animate --out runs/rosenbrock
"""

from __future__ import annotations

import argparse

DEFAULT_FUNCTION = "lecture"
DEFAULT_OPTIMIZERS = "sgd,momentum,nesterov,adagrad,rmsprop,adam"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--function", default=DEFAULT_FUNCTION, metavar="NAME",
                        help=f"surface name (default {DEFAULT_FUNCTION}; --list shows them all)")
    parser.add_argument("--optimizers", default=DEFAULT_OPTIMIZERS, metavar="A,B,...",
                        help=f"comma-separated registry names, e.g. lookahead:adam (default {DEFAULT_OPTIMIZERS})")
    parser.add_argument("--steps", type=int, default=None, help="steps per optimizer (default: the surface's)")
    parser.add_argument("--start", default=None, metavar="X,Y", help="starting point (default: the surface's)")
    parser.add_argument("--lr", type=float, default=None,
                        help="one learning rate for all (default: the surface's suggestion per optimizer family)")
    parser.add_argument("--tune", action="store_true",
                        help="pick each optimizer's learning rate on a log grid 1e-4..1 by final loss (same budget; "
                             "not with --lr)")
    parser.add_argument("--schedule", default=None, help="learning-rate schedule for descentlab.schedules")
    parser.add_argument("--animate", action="store_true", help="also write paths.gif")
    parser.add_argument("--frame-every", type=int, default=None, metavar="K",
                        help="one GIF frame per K steps (default: about 60 frames)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (noisy optimizers only)")
    parser.add_argument("--out", default=None, metavar="DIR", help="run directory (default runs/surface-<time>)")
    parser.add_argument("--basins", action=argparse.BooleanOptionalAction, default=None,
                        help="map which minimum heavy-ball SGD ends in from a grid of starts x rates x momenta "
                             "(default: on for double-well)")
    parser.add_argument("--basin-rates", default=None, metavar="A,B,...",
                        help="learning rates of the basin map (default 0.003,0.01,0.03,0.1)")
    parser.add_argument("--basin-momenta", default=None, metavar="A,B,...",
                        help="heavy-ball beta values of the basin map, in [0, 1) (default 0,0.5,0.9,0.95)")
    parser.add_argument("--basin-steps", type=int, default=1000, help="steps of every basin-map run (default 1000)")
    parser.add_argument("--list", action="store_true", help="print the surfaces and their critical points, then exit")


def _parse_start(text: str):
    from descentlab.errors import UserInputError

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 2 or any(v != v or abs(v) == float("inf") for v in values):
        raise UserInputError(f"--start must be two numbers 'x,y', got {text!r}")
    return values


def _parse_numbers(text: str | None, option: str, default, low: float, high: float, closed_low: bool):
    """Comma-separated numbers in (low, high) (``closed_low``: [low, high)), or ``default``."""
    from descentlab.errors import UserInputError

    if text is None:
        return tuple(default)
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    inside = all((v >= low if closed_low else v > low) and v < high for v in values)
    if not values or not inside or len(set(values)) != len(values):
        bound = f"{'[' if closed_low else '('}{low:g}, {high:g})"
        raise UserInputError(f"{option} must be distinct comma-separated numbers in {bound}, got {text!r}")
    return values


def _print_list() -> int:
    from descentlab.problems.surfaces import SURFACES

    for surface in SURFACES.values():
        print(f"{surface.name:<12} {surface.formula}")
        print(f"{'':<12} {surface.description}")
        for point in surface.critical_points:
            degenerate = ", degenerate" if point.degenerate else ""
            print(f"{'':<14}({point.location[0]:.6g}, {point.location[1]:.6g})  {point.kind}{degenerate}")
        for curve in surface.critical_curves:
            print(f"{'':<14}curve {curve.description}  {curve.kind}, degenerate")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _print_list()

    import math
    import sys

    import numpy as np
    import torch
    from tqdm import tqdm

    from descentlab import files
    from descentlab.commands.common import emit, output_dir, refuse_with
    from descentlab.critical.surface_points import find_critical_points
    from descentlab.errors import UserInputError
    from descentlab.rundir import staged_run
    from descentlab.experiments.trajectories import run_trajectories, tune_learning_rates
    from descentlab.optim.registry import parse_name
    from descentlab.problems.surfaces import get_surface
    from descentlab.report.render import render

    if args.tune:
        refuse_with(args, "--tune", ["lr"], "picks each optimizer's learning rate itself")
    surface = get_surface(args.function)
    optimizers = [name.strip().lower() for name in args.optimizers.split(",") if name.strip()]
    if not optimizers:
        raise UserInputError("--optimizers must name at least one optimizer")
    for name in optimizers:
        parse_name(name)
    if len(set(optimizers)) != len(optimizers):
        raise UserInputError(f"--optimizers names one optimizer twice: {args.optimizers}")
    steps = surface.steps if args.steps is None else args.steps
    if steps < 1:
        raise UserInputError(f"--steps must be >= 1, got {steps}")
    start = surface.starts[0] if args.start is None else _parse_start(args.start)
    if args.lr is not None and not args.lr > 0:
        raise UserInputError(f"--lr must be > 0, got {args.lr}")
    every = args.frame_every if args.frame_every is not None else max(1, -(-steps // 60))  # at most ~61 frames
    if every < 1:
        raise UserInputError(f"--frame-every must be >= 1, got {every}")
    basins = surface.basins if args.basins is None else args.basins
    if not basins:
        refuse_with(args, "without --basins", ["basin_rates", "basin_momenta", "basin_steps"], "there is no basin map")
    from descentlab.experiments.basins import DEFAULT_MOMENTA, DEFAULT_RATES

    basin_rates = _parse_numbers(args.basin_rates, "--basin-rates", DEFAULT_RATES, 0.0, math.inf, False)
    basin_momenta = _parse_numbers(args.basin_momenta, "--basin-momenta", DEFAULT_MOMENTA, 0.0, 1.0, True)
    if args.basin_steps < 1:
        raise UserInputError(f"--basin-steps must be >= 1, got {args.basin_steps}")
    out = output_dir(args, "surface")
    torch.manual_seed(args.seed)

    points = find_critical_points(surface)
    tuning = None
    lrs: dict[str, float] | float | None = args.lr
    if args.tune:
        with tqdm(total=len(optimizers), desc="tuning learning rates", file=sys.stderr, unit="optimizer",
                  disable=not args.progress) as bar:
            chosen: dict[str, float] = {}
            finals: dict[str, tuple[float, ...]] = {}
            rates: dict[str, tuple[float, ...]] = {}
            edges: dict[str, str | None] = {}
            for name in optimizers:
                result = tune_learning_rates(surface, [name], start, steps, schedule=args.schedule, seed=args.seed)
                chosen.update(result.chosen)
                finals.update(result.final_losses)
                rates.update(result.rates)
                edges.update(result.edges)
                bar.update()
        tuning = (rates, finals, edges)
        lrs = chosen
    trajectories = run_trajectories(surface, optimizers, start, steps, lr=lrs, schedule=args.schedule, seed=args.seed)

    (x0, x1), (y0, y1) = surface.window
    config = {
        "function": surface.name, "formula": surface.formula, "description": surface.description,
        "window": [[x0, x1], [y0, y1]], "optimizers": optimizers, "start": list(start), "steps": steps,
        "lrs": {t.optimizer: t.lr for t in trajectories.paths}, "tuned": bool(args.tune),
        "schedule": args.schedule, "seed": args.seed, "animate": bool(args.animate), "frame_every": every,
        "minimum": surface.minimum, **({"tune_edges": tuning[2]} if tuning is not None else {}),
    }
    basin_data = None
    if basins:
        from descentlab.experiments.basins import basin_map

        minima = [p.location for p in points if p.kind == "local_min" and p.isolated]
        if not minima:
            raise UserInputError(f"--basins: {surface.name} has no isolated minimum in its window to map")
        basin_data = basin_map(surface, minima, lrs=basin_rates, momenta=basin_momenta, steps=args.basin_steps)
    with staged_run(out, "surface", config) as run_dir:
        run_dir.write_csv("paths.csv", [
            {"optimizer": t.optimizer, "step": step, "x": float(t.path[step, 0]), "y": float(t.path[step, 1]),
             "loss": float(t.losses[step])}
            for t in trajectories.paths for step in range(steps + 1)
        ], ["optimizer", "step", "x", "y", "loss"])
        run_dir.write_json("critical_points.json", {
            "points": [p.as_dict() for p in points],
            "curves": [_curve_samples(surface, curve) for curve in surface.critical_curves],
        })
        _write_grid(run_dir, surface, files, np)
        lift = _dimension_lift(surface, points)
        if lift is not None:
            run_dir.write_json("dimension_lift.json", lift)
        valley = _valley(surface, points, trajectories)
        if valley is not None:
            run_dir.write_json("valley.json", valley)
        if tuning is not None:
            rates, finals, _ = tuning
            run_dir.write_csv("tuning.csv", [
                {"optimizer": name, "lr": rate, "final_loss": loss}
                for name in optimizers for rate, loss in zip(rates[name], finals[name])
            ])
        basins_summary = None
        if basin_data is not None:
            basins_summary = _write_basins(run_dir, basin_data, start, files, np)
        render(run_dir)
    _print_summary(trajectories, points, surface, out, valley, tuning[2] if tuning is not None else None,
                   basins_summary)
    emit(args, {"run": str(out), "report": str(out / "report.html"), "function": surface.name,
                "start": list(start), "steps": steps,
                "paths": [{"optimizer": t.optimizer, "lr": t.lr,
                           "final_loss": t.final_loss if math.isfinite(t.final_loss) else None,
                           "final_point": [float(v) for v in t.final_point]} for t in trajectories.paths],
                "critical_points": [p.as_dict() for p in points if p.isolated],
                **({"valley": valley} if valley is not None else {}),
                **({"basins": basins_summary} if basins_summary is not None else {})})
    return 0


#: A minimum whose Hessian has at least this condition number is analysed as a valley.
VALLEY_CONDITION = 10.0


def _valley(surface, points, trajectories):
    """The valley analysis (``valley.json``) on a quadratic bowl: one isolated minimum, the same
    Hessian everywhere (so its eigenvectors are the valley's directions on the whole window),
    and a condition number of at least :data:`VALLEY_CONDITION`."""
    import torch

    from descentlab.experiments.trajectories import valley_motion

    minima = [p for p in points if p.kind == "local_min" and p.isolated and not p.degenerate]
    if len(minima) != 1 or surface.critical_curves:
        return None
    (x0, x1), (y0, y1) = surface.window
    probes = torch.tensor([minima[0].location, (x0, y0), (x0, y1), (x1, y0), (x1, y1)], dtype=torch.float64)
    hessians = surface.hessian(probes)
    if not torch.allclose(hessians, hessians[:1].expand_as(hessians), rtol=1e-9, atol=1e-12):
        return None  # curved valleys (Rosenbrock) have no single pair of directions
    valley = valley_motion(surface, trajectories, minima[0].location)
    if valley.condition < VALLEY_CONDITION:
        return None
    lrs = {t.optimizer: t.lr for t in trajectories.paths}
    finals = {t.optimizer: t.final_loss for t in trajectories.paths}
    return {"minimum": list(valley.minimum), "eigenvalues": list(valley.eigenvalues), "condition": valley.condition,
            "shallow": list(valley.shallow), "steep": list(valley.steep), "reach": valley.reach,
            "steps": trajectories.steps,
            "motions": [{"optimizer": m.optimizer, "lr": lrs[m.optimizer], "final_loss": finals[m.optimizer],
                         "sign_changes": m.sign_changes, "shallow_left": m.shallow_left,
                         "distance_left": m.distance_left, "reached": m.reached} for m in valley.motions]}


def _write_basins(run_dir, basin_data, start, files, np) -> dict:
    """``basins.npz`` (where every run ended) and ``basins.json`` (the grid, the minima, the shares,
    and where the run from the start nearest the paths' start ended); returns the JSON."""
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, ends=basin_data.ends.numpy(), xs=np.asarray(basin_data.xs),
                        ys=np.asarray(basin_data.ys))
    files.write_bytes(run_dir.file("basins.npz"), buffer.getvalue())
    summary = {"lrs": list(basin_data.lrs), "momenta": list(basin_data.momenta),
               "minima": [list(m) for m in basin_data.minima], "losses": list(basin_data.losses),
               "starts": [len(basin_data.xs), len(basin_data.ys)], "steps": basin_data.steps,
               "radius": basin_data.radius, "shares": basin_data.shares(), "start": list(start),
               "grid_start": list(basin_data.nearest_start(start)),
               "from_start": [{"momentum": beta, "lr": lr, "end": basin_data.end_of(start, lr, beta)}
                              for beta in basin_data.momenta for lr in basin_data.lrs]}
    run_dir.write_json("basins.json", summary)
    return summary


def _curve_samples(surface, curve) -> dict:
    import torch

    (x0, x1), (y0, y1) = surface.window
    t = torch.linspace(-3.0, 3.0, 600, dtype=torch.float64)
    samples = curve.parametric(t)
    # one polyline per branch: break the line with NaN between branches and outside the window
    inside = surface.in_window(samples, margin=0.05 * (x1 - x0))
    samples = torch.where(inside.unsqueeze(-1), samples, torch.full_like(samples, float("nan")))
    half = len(t)
    xs = samples[:half, 0].tolist() + [float("nan")] + samples[half:, 0].tolist()
    ys = samples[:half, 1].tolist() + [float("nan")] + samples[half:, 1].tolist()
    return {"description": curve.description, "kind": curve.kind, "degenerate": curve.degenerate,
            "x": [None if v != v else v for v in xs], "y": [None if v != v else v for v in ys]}


def _write_grid(run_dir, surface, files, np, n: int = 160) -> None:
    import io

    import torch

    (x0, x1), (y0, y1) = surface.window
    xs = torch.linspace(x0, x1, n, dtype=torch.float64)
    ys = torch.linspace(y0, y1, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    with torch.no_grad():
        z = surface(torch.stack([gx, gy], dim=-1))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=gx.numpy(), y=gy.numpy(), z=z.numpy())
    files.write_bytes(run_dir.file("grid.npz"), buffer.getvalue())


def _dimension_lift(surface, points):
    """The first non-degenerate saddle: the loss along its two Hessian eigenvectors."""
    import torch

    saddle = next((p for p in points if p.kind == "saddle" and not p.degenerate and p.isolated), None)
    if saddle is None:
        return None
    point = torch.tensor(saddle.location, dtype=torch.float64)
    values, vectors = torch.linalg.eigh(surface.hessian(point))
    (x0, x1), (y0, y1) = surface.window
    reach = 0.2 * min(x1 - x0, y1 - y0)
    t = torch.linspace(-reach, reach, 121, dtype=torch.float64)
    with torch.no_grad():
        up = surface(point + t.unsqueeze(-1) * vectors[:, 1])
        down = surface(point + t.unsqueeze(-1) * vectors[:, 0])
    return {"point": point.tolist(), "eigenvalues": values.tolist(), "up": vectors[:, 1].tolist(),
            "down": vectors[:, 0].tolist(), "t": t.tolist(), "loss_up": up.tolist(), "loss_down": down.tolist()}


def _print_summary(trajectories, points, surface, out, valley=None, edges=None, basins=None) -> None:
    from descentlab.report.surface_page import basin_lines, ended_near, valley_finding

    (x0, x1), (y0, y1) = surface.window
    radius = 1e-2 * max(x1 - x0, y1 - y0)
    named = [p.as_dict() for p in points]
    curves = [_curve_samples(surface, curve) for curve in surface.critical_curves]
    kinds: dict[str, int] = {}
    for p in points:
        if p.isolated:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
    listed = ", ".join(f"{n} {k}" for k, n in kinds.items())
    on_curves = "".join(f" + a curve of {c.kind} ({c.description.split(' (')[0]})" for c in surface.critical_curves)
    print(f"{surface.name}: {surface.formula}; critical points: {listed}{on_curves}")
    print(f"{'optimizer':<16}{'lr':>10}  {'final loss':>12}  ended at")
    for t in trajectories.paths:
        where = ended_near(t.final_point, named, radius, curves) if t.final_loss != float("inf") else "diverged"
        edge = f" (lr at the {edges[t.optimizer]} edge of the widened grid)" if edges and edges.get(t.optimizer) else ""
        print(f"{t.optimizer:<16}{t.lr:>10.3g}  {t.final_loss:>12.4g}  {where}{edge}")
    if valley is not None:
        print(valley_finding(valley))
    if basins is not None:
        for line in basin_lines(basins):
            print(line)
    print(f"wrote {out}/report.html")
