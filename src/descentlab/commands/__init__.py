"""One module per ``descentlab`` sub-command: ``configure(parser)`` and ``run(args) -> int``.

Modules import torch and the layers below inside ``run`` only, so ``--help`` stays instant.
"""
