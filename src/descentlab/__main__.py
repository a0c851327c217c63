"""``python -m descentlab`` is the ``descentlab`` command."""

from descentlab.cli import run

run()
