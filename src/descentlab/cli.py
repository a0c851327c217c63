"""The ``descentlab`` command line.

Each sub-command lives in its own module under :mod:`descentlab.commands` and exposes
``configure(parser)`` (adds its arguments) and ``run(args) -> int``. Command modules import
torch, matplotlib and the layers below only inside ``run``, so ``descentlab --help`` and every
``descentlab COMMAND --help`` answer at once, without importing torch.

What every command shares is handled here, once: ``--json`` (the command's summary as one
JSON object on stdout; its human-readable lines then go to stderr) and ``--no-progress``;
bad input and a full disk as one line on stderr with exit status 2; Ctrl-C (SIGINT) and
SIGTERM as one line that says how to resume where the command can (exit status 130 and 143,
after any worker processes ended); a closed pipe (``descentlab ... | head``) as a quiet exit;
library warnings as one line each above the progress bar.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import logging
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Sequence

from descentlab import __version__
from descentlab.errors import UserInputError
from descentlab.files import DISK_FULL
from descentlab.openmp import set_wait_default

# name -> (module under descentlab.commands, one-line help). Order is the order in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "optimizers": ("optimizers", "table of every registered optimizer and its paper"),
    "schedules": ("schedules", "draw learning-rate schedules (warm-up, decay, cosine, noam)"),
    "workloads": ("workloads", "the built-in workloads (data and model) and the analytic surfaces"),
    "diagnose": ("diagnose", "train, notice the stall, name the critical point, escape a saddle, report"),
    "spectrum": ("spectrum", "Hessian eigenvalues at both ends, density, minimum ratio and kind of a saved model"),
    "report": ("report", "re-render the report.html of a run directory"),
    "landscape": ("landscape", "1-D and 2-D slices of the loss: lines, eigenvectors, filter-normalised planes"),
    "minimum-ratio": ("minimum_ratio", "the lecture's study: loss against the fraction of positive eigenvalues"),
    "surface": ("surface", "every optimizer's path across an analytic 2-D surface, its critical points named"),
    "compare": ("compare", "fair optimizer comparison: same tuning budget, shared seeds, steps and seconds"),
    "batch-size": ("batch_size", "batch-size study: time per update and epoch, loss to target, sharpness, gap"),
    "normalization": ("normalization", "raw vs standardised features vs BatchNorm: conditioning or saturation, "
                                       "curvature, speed"),
    "zoo": ("zoo", "broken and healthy training runs: does the stall monitor name each cause, and repair it?"),
}

#: Exit status after the reader of stdout went away (128 + SIGPIPE, what ``yes | head`` gives).
BROKEN_PIPE = 141

#: Exit status after Ctrl-C (128 + SIGINT) and after SIGTERM (128 + SIGTERM), as a shell reports them.
INTERRUPTED = 130
TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C raises ``KeyboardInterrupt``.

    A subclass, so everything that cleans up after a Ctrl-C (staged run directories, worker
    pools, checkpoints) does the same after a SIGTERM from a scheduler or ``timeout``.
    """


#: A word that is a (negative) number or a list of them, never an option: ``-1,2``, ``-.5``.
_NEGATIVE = re.compile(r"^-\.?\d")


def attach_negative_values(argv: Sequence[str]) -> list[str]:
    """``--start -1,2`` as ``--start=-1,2``: plain argparse takes a word that starts with ``-`` and
    is not a plain number (``-1,2``) for an option. None of our options looks like a negative
    number, so such a word after a long option is that option's value."""
    out: list[str] = []
    for word in argv:
        if out and _NEGATIVE.match(word) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={word}"
        else:
            out.append(word)
    return out


class _Parser(argparse.ArgumentParser):
    """argparse with bad input as one line on stderr (exit status 2)."""

    def error(self, message: str):
        """One line on stderr and exit status 2 (argparse prints the whole usage first)."""
        _stderr(f"{self.prog}: error: {message} (see {self.prog} --help)")
        raise SystemExit(2)


def build_parser(*, record_given: bool = False) -> argparse.ArgumentParser:
    """The full argument parser, every sub-command configured.

    With ``record_given`` every option's default is left out, so a parse holds only the
    options given on the command line (see :func:`given_options`).
    """
    parser = _Parser(
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
        common = command.add_argument_group("every command")
        common.add_argument("--json", action="store_true",
                            help="print a machine-readable summary (one JSON object) on stdout; "
                                 "everything else goes to stderr")
        common.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
        if record_given:
            for action in command._actions:
                if action.dest != "help":
                    action.default = argparse.SUPPRESS
        else:
            command.set_defaults(_run=module.run)
    return parser


def given_options(argv: Sequence[str]) -> set[str]:
    """The ``dest`` of every option given on the command line ``argv`` (not defaulted)."""
    namespace = build_parser(record_given=True).parse_args(attach_negative_values(argv))
    return {name for name in vars(namespace) if name != "command"}


def run() -> None:
    """The ``descentlab`` console command: :func:`main`, then exit with its status.

    Building any torch optimizer imports ``torch._dynamo``, whose many objects make the
    interpreter's final garbage collection take seconds after the work is done (measured in
    bench/RESULTS.md, "Design measurements"). Every file is written and closed by then, so the
    collector is frozen first and the process exits at once. (Not in :func:`main`, which tests
    and scripts call in a process that goes on.)"""
    status = main()
    gc.freeze()
    raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input, with a one-line error)."""
    set_wait_default()  # before torch loads OpenMP
    argv = attach_negative_values(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    args._argv = argv
    args._given = given_options(argv)
    args._summary = None
    args._resume = None
    name = args.command
    if isinstance(getattr(args, "seed", None), int) and args.seed < 0:  # one rule for every command's --seed
        _stderr(f"descentlab {name}: error: --seed must be an integer >= 0, got {args.seed}")
        return 2
    try:
        with _warnings_as_lines(name), _findings_as_lines(), _sigterm_as_interrupt():
            if args.json:
                with contextlib.redirect_stdout(sys.stderr):
                    status = int(args._run(args) or 0)
                print(json.dumps(args._summary if args._summary is not None else {}, default=_jsonable))
            else:
                status = int(args._run(args) or 0)
        sys.stdout.flush()
        return status
    except UserInputError as error:
        _stderr(f"descentlab {name}: error: {_one_line(error)}")
        return 2
    except KeyboardInterrupt as interrupt:
        hint = args._resume() if callable(args._resume) else None
        what = "terminated" if isinstance(interrupt, Terminated) else "interrupted"
        _stderr(f"descentlab {name}: {what}" + (f"; resume with: {hint}" if hint else ""))
        return TERMINATED if isinstance(interrupt, Terminated) else INTERRUPTED
    except BrokenPipeError:
        # The reader (``| head``) went away. Point stdout at devnull so the interpreter's final
        # flush cannot raise again (Python's docs, "Note on SIGPIPE"), and exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        # every file is written atomically (descentlab.files): the one that failed keeps its
        # previous contents, so a run that can resume resumes from its last checkpoint
        hint = args._resume() if callable(args._resume) else None
        where = f" writing {error.filename}" if error.filename else ""
        _stderr(f"descentlab {name}: error: no space left on device{where}: {error.strerror}"
                + (f"; free some space and resume with: {hint}" if hint else ""))
        return 2


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _stderr(text: str) -> None:
    try:
        print(text, file=sys.stderr)
    except (BrokenPipeError, OSError):
        pass


class _LineHandler(logging.Handler):
    """Each record of the ``descentlab`` loggers as one line above the progress bar, on the
    stdout of the moment (stderr under ``--json``)."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stdout)


@contextlib.contextmanager
def _findings_as_lines():
    """The library's findings (a monitor's stalls, at INFO and above) printed while a command runs."""
    logger = logging.getLogger("descentlab")
    handler = _LineHandler(logging.INFO)
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While the command runs, SIGTERM raises :class:`Terminated` in the main thread (Python's
    default would end the process at once, leaving its workers and staging folders behind).
    Only in the main thread, where Python runs signal handlers; the old handler is restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _warnings_as_lines(command: str):
    """Show each distinct warning once, as ``descentlab COMMAND: warning: ...`` above the progress
    bar (tqdm.write), with the library's advice to Python callers left out."""
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(getattr(message, "brief", message)).split())
        if text in seen:
            return
        seen.add(text)
        from tqdm import tqdm

        tqdm.write(f"descentlab {command}: warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


if __name__ == "__main__":
    raise SystemExit(main())
