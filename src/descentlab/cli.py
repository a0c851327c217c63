"""The ``descentlab`` command line.

Each sub-command lives in its own module under :mod:`descentlab.commands` and exposes
``configure(parser)`` (adds its arguments) and ``run(args) -> int``. Command modules import
torch, matplotlib and the layers below only inside ``run``, so ``descentlab --help`` and every
``descentlab COMMAND --help`` answer at once, without importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from descentlab import __version__
from descentlab.errors import UserInputError
from descentlab.openmp import set_wait_default

# name -> (module under descentlab.commands, one-line help). Order is the order in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "optimizers": ("optimizers", "table of every registered optimizer and its paper"),
    "schedules": ("schedules", "draw learning-rate schedules (warm-up, decay, cosine, noam)"),
    "diagnose": ("diagnose", "train, notice the stall, name the critical point, escape a saddle, report"),
    "spectrum": ("spectrum", "Hessian eigenvalues at both ends, density, minimum ratio and kind of a saved model"),
    "report": ("report", "re-render the report.html of a run directory"),
    "landscape": ("landscape", "1-D and 2-D slices of the loss: lines, eigenvectors, filter-normalised planes"),
    "minimum-ratio": ("minimum_ratio", "the lecture's study: loss against the fraction of positive eigenvalues"),
    "surface": ("surface", "every optimizer's path across an analytic 2-D surface, its critical points named"),
    "compare": ("compare", "fair optimizer comparison: same tuning budget, shared seeds, steps and seconds"),
    "batch-size": ("batch_size", "batch-size study: time per update and epoch, loss to target, sharpness, gap"),
    "normalization": ("normalization", "raw vs standardised features vs BatchNorm: curvature, stable rate, speed"),
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, every sub-command configured."""
    parser = argparse.ArgumentParser(
        prog="descentlab",
        description="Find where gradient descent is stuck and what gets it moving again.",
    )
    parser.add_argument("--version", action="version", version=f"descentlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"descentlab.commands.{module_name}")
        command = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input, with a one-line error)."""
    set_wait_default()  # before torch loads OpenMP
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except UserInputError as error:
        print(f"descentlab {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"descentlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
