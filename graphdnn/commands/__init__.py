"""Subcommands of the ``graphdnn`` command, one module each with ``register(subparsers)``; see ``graphdnn.cli``."""
