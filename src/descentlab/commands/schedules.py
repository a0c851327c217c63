"""Draw learning-rate schedules (factor of the base rate against the step) and print their values.

With no --schedule, draws one example of every schedule. A schedule is written NAME or
NAME:key=value,... (see `descentlab.schedules`):
  constant | warmup-linear:warmup=W,total=T,final=F | warmup-cosine:warmup=W,total=T,final=F
  warmup-rsqrt:warmup=W | noam:d_model=D,warmup=W | exponential:gamma=G | step:every=N,gamma=G
  cosine-restarts:period=P,mult=M,final=F

Example:
  descentlab schedules --plot schedules.png
  descentlab schedules --steps 2000 --schedule warmup-cosine:warmup=200,total=2000 --schedule noam:warmup=400 --plot mine.png
"""

from __future__ import annotations

import argparse

# One example of each schedule, scaled to the number of steps drawn.
_GALLERY = (
    "constant",
    "warmup-linear:warmup={w},total={n}",
    "warmup-cosine:warmup={w},total={n},final=0.05",
    "warmup-rsqrt:warmup={w}",
    "noam:d_model=64,warmup={w}",
    "exponential:gamma={g}",
    "step:every={s},gamma=0.5",
    "cosine-restarts:period={s},mult=2",
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schedule", action="append", metavar="SPEC",
                        help="a schedule to draw (repeatable); default: one of each")
    parser.add_argument("--steps", type=int, default=1000, help="steps to draw (default 1000)")
    parser.add_argument("--plot", metavar="PNG", help="write the figure to this PNG file")


def run(args: argparse.Namespace) -> int:
    from descentlab.errors import UserInputError
    from descentlab.schedules import parse_schedule

    if args.steps < 2:
        raise UserInputError(f"--steps must be an integer >= 2, got {args.steps}")
    if args.plot is not None:
        _check_plot_path(args.plot)
    n = args.steps
    specs = args.schedule or [s.format(n=n, w=max(1, n // 10), s=max(1, n // 8), g=round(0.01 ** (1 / n), 6))
                              for s in _GALLERY]
    schedules = [parse_schedule(spec) for spec in specs]
    marks = sorted({0, 1, n // 10, n // 4, n // 2, n - 1})
    rows = [["schedule"] + [f"t={t}" for t in marks]]
    rows += [[str(s)] + [f"{s(t):.4g}" for t in marks] for s in schedules]
    from descentlab.report.text_table import text_table

    print(text_table(rows))
    if args.plot:
        _plot(schedules, n, args.plot)
        print(f"wrote {args.plot}")
    from descentlab.commands.common import emit

    emit(args, {"steps": n, "plot": args.plot,
                "schedules": [{"schedule": str(s), "values": {str(t): s(t) for t in marks}} for s in schedules]})
    return 0


def _check_plot_path(path: str) -> None:
    """--plot must name a file we can write: not a directory, in a folder that exists or can be made."""
    import os
    from pathlib import Path

    from descentlab.errors import UserInputError

    target = Path(path)
    if target.is_dir():
        raise UserInputError(f"--plot {path} is a directory; name a .png file, e.g. {target / 'schedules.png'}")
    if target.suffix.lower() != ".png":
        raise UserInputError(f"--plot {path}: name a .png file")
    folder = target.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UserInputError(f"--plot {path}: cannot write there (permission denied or not a directory)")


def _plot(schedules, n: int, path: str) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from descentlab import files

    steps = range(n)
    fig, axes = plt.subplots(len(schedules), 1, figsize=(7, 1.6 * len(schedules) + 0.6), sharex=True, squeeze=False)
    for ax, schedule in zip(axes[:, 0], schedules):
        ax.plot(steps, [schedule(t) for t in steps], color="#2f7bd8")
        ax.set_title(str(schedule), fontsize=9, loc="left")
        ax.set_ylabel("factor", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    files.write_bytes(path, buffer.getvalue())
