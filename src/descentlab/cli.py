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

# name -> (module under descentlab.commands, one-line help). Order is the order in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "optimizers": ("optimizers", "table of every registered optimizer and its paper"),
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
