"""Slice the loss landscape: 2-D planes (contour + surface), 1-D lines and directions.

The model comes from a training run directory (--run), a built-in workload (--workload,
optionally trained here with --train-steps so its trajectory can be drawn), or your own
model and data (--model package.module:factory --data file.npz). The loss is evaluated on
the training data, many grid points per batched (vmapped) model call.

Slices (--slice):
  plane      L(theta + a d1 + b d2); --plane random (filter-normalised, Li et al. 2018),
             hessian (two top eigenvectors), pca (of the trajectory) or axes (a two-parameter
             model's own coordinates); default: axes for two parameters, else random
  direction  L(theta + t d); --direction random|top|bottom|escape|FILE.pt
  line       L((1 - t) theta_from + t theta_to); --from/--to init|final|CHECKPOINT|RUN_DIR

Examples:
  descentlab landscape --workload lecture --span 2
  descentlab landscape --workload digits-mlp --train-steps 300 --plane pca --trajectory
  descentlab landscape --run runs/diagnose-20260101-120000 --slice direction --direction escape
  descentlab landscape --run runs/a --slice line --to runs/b          # two runs' solutions

Writes runs/landscape-<timestamp>/ (or --out): config.json, summary.json, slice.csv or
grid.csv (+ trajectory.csv), directions.pt, the figures and report.html.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Light modules only (no torch, numpy or matplotlib): `descentlab --help` imports every command.
# torch, the landscape library, workloads and training are imported inside the functions below.
from descentlab import files
from descentlab.commands.common import emit, output_dir
from descentlab.errors import UserInputError
from descentlab.report.html import format_value
from descentlab.report.render import render
from descentlab.rundir import RunDir, staged_run

SLICES = ("plane", "direction", "line")
PLANES = ("auto", "random", "hessian", "pca", "axes")


def configure(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("what to slice (one of --run, --workload, --model)")
    source.add_argument("--run", metavar="DIR", help="a training run directory (config.json + checkpoint.pt)")
    source.add_argument("--workload", metavar="NAME", help="a built-in workload (digits-mlp, lecture, ...; `descentlab workloads` lists them)")
    source.add_argument("--model", metavar="MODULE:FACTORY", help="your model factory (with --data)")
    source.add_argument("--data", metavar="FILE", help="your data: .npz with X, y (or CSV)")
    source.add_argument("--checkpoint", metavar="FILE", help="weights to load as the final point (state_dict)")
    source.add_argument("--train-steps", type=int, default=0, metavar="N",
                        help="train the workload for N steps first, recording its trajectory (default: 0)")
    source.add_argument("--optimizer", default=None, help="optimizer for --train-steps (default: the workload's)")
    source.add_argument("--lr", type=float, default=None, help="learning rate for --train-steps")
    source.add_argument("--batch-size", type=int, default=None, help="batch size for --train-steps")

    shape = parser.add_argument_group("the slice")
    shape.add_argument("--slice", choices=SLICES, default="plane", help="plane (default), direction or line")
    shape.add_argument("--plane", choices=PLANES, default="auto", help="directions of the plane (default: auto)")
    shape.add_argument("--direction", default="top", metavar="KIND|FILE",
                       help="random, top, bottom, escape, or a .pt file with a flat vector (default: top)")
    shape.add_argument("--from", dest="start", default="init", metavar="POINT", help="line start (default: init)")
    shape.add_argument("--to", dest="end", default="final", metavar="POINT", help="line end (default: final)")
    shape.add_argument("--span", type=float, default=1.0, help="coordinates run over [-span, span] (default: 1)")
    shape.add_argument("--margin", type=float, default=0.25, help="line: t over [-margin, 1 + margin]")
    shape.add_argument("--points", type=int, default=51, help="points of a 1-D slice (default: 51)")
    shape.add_argument("--resolution", type=int, default=25, help="grid points per side of a plane (default: 25)")
    shape.add_argument("--no-filter-norm", action="store_true", help="random directions without filter normalisation")
    shape.add_argument("--keep-bias", action="store_true",
                       help="random directions also move biases (Li et al. zero them)")
    shape.add_argument("--trajectory", action="store_true", help="project the training trajectory onto the plane")
    shape.add_argument("--split", choices=("train", "val"), default="train", help="data the loss is measured on")

    compute = parser.add_argument_group("computation and output")
    compute.add_argument("--chunk-size", type=int, default=64, help="grid points per batched call (default: 64)")
    compute.add_argument("--workers", type=int, default=1, help="processes for large grids (default: 1)")
    compute.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="for workloads")
    compute.add_argument("--seed", type=int, default=0, help="seeds init, random directions and Lanczos")
    compute.add_argument("--out", metavar="DIR", help="run directory to write (default: runs/landscape-<time>)")


def run(args: argparse.Namespace) -> int:
    _validate(args)
    started = time.perf_counter()
    out = output_dir(args, "landscape")
    config = {key: value for key, value in vars(args).items()
              if not key.startswith("_") and key not in ("command", "json", "progress")}
    if args.data is not None:
        config["data"] = str(Path(args.data).absolute())
    with staged_run(out, "landscape", config) as run_dir:
        source = _load_source(args, run_dir)
        summary = _compute(args, source, run_dir)
        summary["table"]["wall time (s)"] = round(time.perf_counter() - started, 2)
        run_dir.write_json("summary.json", summary)
    report = render(out)
    for key, value in summary["table"].items():
        print(f"{key:>24}: {format_value(value)}")
    print(f"report: {report}")
    emit(args, {"run": str(out), "report": str(report), **summary["table"]})
    return 0


# --- everything below runs inside run(): torch is imported in the functions that need it ---


def _validate(args: argparse.Namespace) -> None:
    from descentlab.errors import UserInputError

    given = [name for name in ("run", "workload", "model") if getattr(args, name)]
    if len(given) != 1:
        raise UserInputError("give exactly one of --run, --workload and --model (with --data)")
    if args.model and not args.data:
        raise UserInputError("--model needs --data FILE")
    if args.data and not args.model:
        raise UserInputError("--data goes with --model")
    if args.run and (args.train_steps or args.checkpoint):
        raise UserInputError("--train-steps and --checkpoint go with --workload or --model, not --run")
    if args.train_steps and args.checkpoint:
        raise UserInputError("--train-steps trains from the seeded initial weights; it cannot start from --checkpoint")
    if not args.span > 0:
        raise UserInputError(f"--span must be positive, got {args.span}")
    if not args.margin >= 0:
        raise UserInputError(f"--margin must be >= 0, got {args.margin}")
    for name, low in (("points", 2), ("resolution", 2), ("chunk_size", 1), ("workers", 1), ("train_steps", 0),
                      ("seed", 0)):
        if getattr(args, name) is not None and getattr(args, name) < low:
            raise UserInputError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    if args.trajectory and args.slice != "plane":
        raise UserInputError("--trajectory draws on a plane: use it with --slice plane")
    if args.plane == "pca" and not (args.train_steps or args.run):
        raise UserInputError("--plane pca needs a trajectory: use --train-steps N (or a --run that saved one)")
    _check_fits_in_memory(args)


#: Memory a slice holds per point, whatever the model: its loss, coordinates, grid.csv row (the
#: table is built in memory and written atomically) and its share of the figures. Peak RSS grew
#: by 585-590 bytes per point from 300^2 to 1,000^2 to 2,000^2 points (the model's own memory is
#: per chunk of --chunk-size points, not per point).
_BYTES_PER_POINT = 600


def _check_fits_in_memory(args: argparse.Namespace) -> None:
    """A one-line error, before any work, for a slice whose points cannot fit in this machine's memory."""
    import math
    import os

    from descentlab.errors import UserInputError

    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): nothing to compare with
        return
    plane = args.slice == "plane"
    option, value = ("--resolution", args.resolution) if plane else ("--points", args.points)
    points = value**2 if plane else value
    if points * _BYTES_PER_POINT <= memory:
        return
    most = memory // _BYTES_PER_POINT
    limit = math.isqrt(most) if plane else most
    what = f"a {value:,} x {value:,} grid is {points:,} points" if plane else f"{points:,} points"
    raise UserInputError(f"{option} {value} is too large: {what}, about {_gib(points * _BYTES_PER_POINT)} of memory "
                         f"at ~{_BYTES_PER_POINT} bytes a point, and this machine has {_gib(memory)}: "
                         f"at most {option} {limit}")


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:,.0f} GiB" if n_bytes >= 10 * 2**30 else f"{n_bytes / 2**30:.1f} GiB"


@dataclass(frozen=True)
class _Source:
    """The model at its final point, its workload (loss and data), and the points a line can join.

    ``init`` and ``final`` are flat parameter vectors; ``trajectory`` is ``[(step, flat), ...]``
    or ``None`` when the source recorded none.
    """

    label: str
    workload: Any
    model: Any
    init: Any
    final: Any
    trajectory: Any


def _load_source(args, run_dir) -> _Source:
    import torch

    from descentlab.experiments.train import CHECKPOINT
    from descentlab.params import flatten

    dtype = getattr(torch, args.dtype)
    trajectory = None
    if args.run:
        run = RunDir.open(args.run)
        workload = _workload_from_run_config(run.config, dtype)
        seed = int(run.config.get("train", {}).get("seed", 0))
        torch.manual_seed(seed)  # the run's own initial weights: its model init follows this seed
        model = workload.make_model()
        init = flatten(model).clone()
        if not run.exists(CHECKPOINT):
            raise UserInputError(f"{args.run} has no {CHECKPOINT}")
        _load_weights(model, run.file(CHECKPOINT))
        trajectory = _saved_trajectory(run)
        label = f"run {args.run} ({getattr(workload, 'name', 'model')})"
    else:
        workload = _workload(args, dtype)
        torch.manual_seed(args.seed)
        model = workload.make_model()
        init = flatten(model).clone()
        label = workload.name if args.workload else f"{args.model} on {args.data}"
        if args.checkpoint:
            _load_weights(model, args.checkpoint)
        if args.train_steps:
            model, trajectory = _train(args, workload, run_dir)
    if trajectory is None and args.slice == "plane" and (args.trajectory or args.plane == "pca"):
        raise UserInputError("this source has no saved trajectory: use --workload/--model with --train-steps N")
    return _Source(label, workload, model, init, flatten(model).clone(), trajectory)


def _workload(args, dtype):
    if args.workload:
        from descentlab.problems.workloads import get_workload

        return get_workload(args.workload, dtype=dtype)
    from descentlab.problems.user_workload import user_workload

    return user_workload(args.model, args.data, seed=args.seed, dtype=dtype)


def _workload_from_run_config(config, dtype):
    """Rebuild the workload a training run used from its config.json."""
    import torch

    from descentlab.problems.user_workload import resolve_workload

    dtype_name = str(config.get("dtype", "")).replace("torch.", "")
    if dtype_name in ("float32", "float64"):
        dtype = getattr(torch, dtype_name)
    spec = config["workload"] if isinstance(config.get("workload"), dict) else config
    return resolve_workload(spec, dtype=dtype)


def _saved_trajectory(run):
    """``trajectory.pt`` of a run (``{"steps": [...], "params": (m, n)}``), if it saved one."""
    if not run.exists("trajectory.pt"):
        return None
    saved = files.load_torch(run.file("trajectory.pt"))
    return [(int(step), vector) for step, vector in zip(saved["steps"], saved["params"])]


def _train(args, workload, run_dir):
    """Train in ``run_dir/train`` with the project's loop, snapshotting the weights about 60 times."""
    import torch

    from descentlab.experiments.train import TrainConfig, train
    from descentlab.params import flatten

    steps = args.train_steps
    every = max(1, steps // 60)
    config = TrainConfig(optimizer=args.optimizer or workload.optimizer,
                         lr=args.lr if args.lr is not None else (None if args.optimizer else workload.lr),
                         batch_size=args.batch_size if args.batch_size is not None else workload.batch_size,
                         steps=steps, seed=args.seed, eval_every=steps, checkpoint_every=steps)
    snapshots = []

    def record(step, loss, model):
        if step == 1 or step % every == 0 or step == steps:
            snapshots.append((step, flatten(model).clone()))

    result = train(workload, config, run_dir.file("train"), callbacks=[record], progress=args.progress)
    # train() seeds with config.seed before building the model, exactly as _load_source did,
    # so the initial point is the same; record it as step 0.
    torch.manual_seed(args.seed)
    start = flatten(workload.make_model())
    return result.model, [(0, start)] + snapshots


def _data(args, source):
    workload = source.workload
    if args.split == "val":
        return workload.X_val, workload.y_val
    return workload.X_train, workload.y_train


def _point(spec, source):
    """``init``, ``final``, a checkpoint file or a run directory, as a flat vector."""
    from descentlab.params import flatten

    if spec == "init":
        return source.init
    if spec == "final":
        return source.final
    if not Path(spec).exists():
        raise UserInputError(f"point {spec!r}: not init, final, a checkpoint file or a run directory")
    return flatten(_load_weights(source.workload.make_model(), spec))


def _point_name(spec):
    return spec if spec in ("init", "final") else Path(spec).name


def _load_weights(model, path):
    """Load a checkpoint (or a run directory's) into ``model``; unreadable or another
    architecture: a one-line UserInputError."""
    from descentlab.experiments.train import load_checkpoint_model

    return load_checkpoint_model(model, path)


def _compute(args, source, run_dir) -> dict:
    """Build the slice's request from the arguments, compute it (one library call), write it."""
    from descentlab.landscape import slice_landscape

    data = _data(args, source)
    request = {"line": _line_request, "direction": _direction_request, "plane": _plane_request}[args.slice](args, source)
    try:
        view = slice_landscape(source.model, source.workload.loss_fn, data, request, chunk_size=args.chunk_size,
                               workers=args.workers, progress=args.progress)
    except ValueError as error:  # what only the model tells: e.g. filter normalisation zeroes every direction
        raise UserInputError(str(error)) from None
    table = {"parameters": source.final.numel(), "data": f"{args.split} ({len(data[0])} samples)"}
    write = {"line": _write_line, "direction": _write_direction, "plane": _write_plane}[args.slice]
    return write(args, source, view, table, run_dir)


def _line_request(args, source):
    from descentlab.landscape import LineRequest

    start, end = _point(args.start, source), _point(args.end, source)
    if float((end - start).norm()) == 0.0:
        raise UserInputError(f"--from {args.start} and --to {args.end} are the same point: nothing to slice")
    return LineRequest(start, end, n_points=args.points, margin=args.margin)


def _write_line(args, source, line, table, run_dir):
    start_name, end_name = _point_name(args.start), _point_name(args.end)
    run_dir.write_csv("slice.csv", [{"t": t, "loss": loss} for t, loss in zip(line.t.tolist(), line.losses.tolist())])
    files.save_torch(run_dir.file("directions.pt"), {"origin": line.origin, "direction": line.direction})
    t0 = int((line.t - 0).abs().argmin())  # exactly 0 and 1: line_slice always measures both ends
    t1 = int((line.t - 1).abs().argmin())
    table.update({"points evaluated": len(line.t), f"loss at {start_name} (t=0)": float(line.losses[t0]),
                  f"loss at {end_name} (t=1)": float(line.losses[t1]),
                  "max loss between": float(line.losses[t0:t1 + 1].max()),
                  "distance": float(line.direction.norm())})
    return {"source": source.label, "title": f"loss on the line {start_name} -> {end_name}",
            "description": (f"The loss on the straight line theta(t) = (1 - t) theta_{start_name} + t theta_{end_name}, "
                            f"t from {-args.margin:g} to {1 + args.margin:g} (Goodfellow et al. 2015)."),
            "x_label": f"t (0 = {start_name}, 1 = {end_name})",
            "markers": [{"t": 0.0, "label": start_name}, {"t": 1.0, "label": end_name}],
            "caption": "A line without a bump means the optimizer's path had no barrier to cross.",
            "table": table}


def _direction_request(args, source):
    import torch

    from descentlab.landscape import DIRECTIONS, DirectionRequest
    from descentlab.params import flatten, layout_of

    kind = args.direction
    options = {"span": args.span, "n_points": args.points, "filter_norm": not args.no_filter_norm,
               "ignore_bias": not args.keep_bias, "seed": args.seed}
    if kind in DIRECTIONS:
        return DirectionRequest(kind, **options)
    if not Path(kind).is_file():
        raise UserInputError(f"--direction {kind!r}: expected random, top, bottom, escape or a .pt file")
    saved = files.load_torch(kind)  # unreadable: a one-line UserInputError
    if isinstance(saved, dict) and "direction" in saved and isinstance(saved["direction"], torch.Tensor):
        saved = saved["direction"]
    if isinstance(saved, torch.Tensor):
        direction = saved
    elif isinstance(saved, dict):
        try:
            direction = flatten(saved, layout_of(source.model))
        except (ValueError, TypeError, AttributeError) as error:
            raise UserInputError(f"--direction {kind}: not a direction for this model ({error})") from None
    else:
        raise UserInputError(f"--direction {kind}: expected a flat tensor, a state_dict-like dict of tensors or "
                             f"a landscape run's directions.pt, got {type(saved).__name__}")
    if not direction.is_floating_point():
        raise UserInputError(f"--direction {kind}: holds {direction.dtype} values, not floating-point ones")
    direction = direction.reshape(-1).to(source.final)
    if direction.numel() != source.final.numel():
        raise UserInputError(f"--direction has {direction.numel()} values, the model has {source.final.numel()} parameters")
    if float(direction.norm()) == 0.0:
        raise UserInputError("the direction is zero; try --keep-bias or --no-filter-norm")
    return DirectionRequest(direction, label=f"direction from {Path(kind).name}", **options)


def _write_direction(args, source, view, table, run_dir):
    line, quadratic = view.slice, view.quadratic
    name = line.label
    run_dir.write_csv("slice.csv", [{"t": t, "loss": loss} for t, loss in zip(line.t.tolist(), line.losses.tolist())])
    files.save_torch(run_dir.file("directions.pt"), {"origin": line.origin, "direction": line.direction})
    table.update({"direction": name, "direction norm": float(line.direction.norm()), "points evaluated": len(line.t),
                  "loss at theta (t=0)": float(line.losses[int(line.t.abs().argmin())]),
                  "min loss on the slice": float(line.losses.min()),
                  "at t": float(line.t[int(line.losses.argmin())])})
    if view.eigenvalue is not None:
        table["eigenvalue"] = view.eigenvalue
    table["slope g.d"] = quadratic.slope
    table["curvature d^T H d"] = quadratic.curvature
    return {"source": source.label, "title": f"loss along the {name}",
            "description": (f"The loss L(theta + t d) along the {name}, t in [-{args.span:g}, {args.span:g}], "
                            "with the second-order model L + t g.d + t^2 d^T H d / 2 around theta."),
            "x_label": "t",
            "quadratic": {"loss": quadratic.loss, "slope": quadratic.slope, "curvature": quadratic.curvature},
            "markers": [{"t": 0.0, "label": "theta"}],
            "caption": "Near theta the loss follows the dashed parabola; a negative curvature is a way down.",
            "table": table}


def _plane_request(args, source):
    from descentlab.landscape import PlaneRequest, Trajectory

    n_params = source.final.numel()
    if args.plane == "axes" and n_params != 2:
        raise UserInputError(f"--plane axes needs a two-parameter model; this one has {n_params}")
    trajectory = Trajectory.of(source.trajectory) if source.trajectory is not None else None
    return PlaneRequest(args.plane, span=args.span, resolution=args.resolution, trajectory=trajectory,
                        project_trajectory=args.trajectory, start=source.init, filter_norm=not args.no_filter_norm,
                        ignore_bias=not args.keep_bias, seed=args.seed)


def _write_plane(args, source, view, table, run_dir):
    grid, plane, path = view.grid, view.plane, view.trajectory
    if plane.eigenvalues is not None:
        table["eigenvalue 1"], table["eigenvalue 2"] = plane.eigenvalues
    if plane.explained is not None:
        table["variance explained by d1, d2"] = f"{plane.explained[0]:.3f}, {plane.explained[1]:.3f}"
    # row by row: losses[j, i] is the loss at (a[i], b[j])
    run_dir.write_csv("grid.csv", [{"a": a, "b": b, "loss": loss}
                                   for b, row in zip(grid.b.tolist(), grid.losses.tolist())
                                   for a, loss in zip(grid.a.tolist(), row)])
    files.save_torch(run_dir.file("directions.pt"), {"center": grid.center, "d1": grid.d1, "d2": grid.d2})
    if path is not None:
        run_dir.write_csv("trajectory.csv", [{"step": s, "a": float(p[0]), "b": float(p[1]), "loss": float(l)}
                                             for s, p, l in zip(path.steps, path.coords, path.losses)])
        table["trajectory points"] = len(path.steps)
        table["max distance off the plane"] = float(path.off_plane.max())
    table.update({"directions": grid.label, "grid": f"{args.resolution} x {args.resolution}",
                  "points evaluated": args.resolution**2, "loss at centre": grid.loss_at_center(),
                  "min loss on grid": float(grid.losses.min()), "max loss on grid": float(grid.losses.max())})
    return {"source": source.label, "title": f"loss on the plane of {grid.label}",
            "description": f"The loss L(theta + a d1 + b d2) of {source.label} on a "
                           f"{args.resolution} x {args.resolution} grid; d1, d2 are {grid.label}.",
            "a_label": plane.a_label, "b_label": plane.b_label,
            "marks": [{"label": label, "a": a, "b": b} for label, a, b in view.marks],
            "caption": "Contours of the loss; the star is the centre theta" +
                       (", the line the training path projected onto the plane." if path is not None else "."),
            "table": table}
