"""Re-render the report.html of a run directory from the files in it (config, metrics, data).

Any run directory works: the page is chosen by the "kind" in its config.json.

Example:
  descentlab report runs/diagnose-20260101-120000
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="DIR", help="a run directory (one with a config.json)")


def run(args: argparse.Namespace) -> int:
    from descentlab.commands.common import emit
    from descentlab.report.render import render

    report = render(args.run_dir)  # a missing, corrupt or kind-less config.json: a one-line error
    print(f"report: {report}")
    emit(args, {"report": str(report)})
    return 0
