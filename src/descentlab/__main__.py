"""``python -m descentlab`` is the ``descentlab`` command."""

from descentlab.cli import main

raise SystemExit(main())
