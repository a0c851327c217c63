"""Print every registered optimizer: its name, family, where the code comes from, and its paper.

Example:
  descentlab optimizers
  descentlab optimizers --format csv
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("table", "csv"), default="table",
                        help="plain-text table (default) or CSV")


def run(args: argparse.Namespace) -> int:
    from descentlab.optim.registry import OPTIMIZERS, WRAPPERS

    rows = [("name", "family", "implementation", "default lr", "paper")]
    for spec in OPTIMIZERS.values():
        rows.append((spec.name, spec.family, f"{spec.source} ({spec.factory.__qualname__})", f"{spec.lr:g}", spec.paper))
    for name, (factory, _) in WRAPPERS.items():
        paper = getattr(factory, "paper", "")
        rows.append((f"{name}:<any>", "wrapper", f"descentlab ({factory.__qualname__})", "(base's)", paper))
    from descentlab.commands.common import emit

    emit(args, {"optimizers": [dict(zip(rows[0], row)) for row in rows[1:]]})
    if args.format == "csv":
        import csv
        import sys

        csv.writer(sys.stdout, lineterminator="\n").writerows(rows)
        return 0
    from descentlab.report.text_table import text_table

    print(text_table(rows))
    return 0
