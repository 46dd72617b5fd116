"""The ``graphdnn`` command: ``graphdnn <subcommand> [options]``.

Each subcommand is a module of ``graphdnn.commands`` with a ``register(subparsers)`` function that adds
its parser and sets ``func`` (``args -> exit status``) with ``parser.set_defaults(func=...)``; modules
are discovered, so adding a subcommand touches one new file (a module that fails to import for want of a
dependency becomes a command that says so, and the others keep working). A ``GraphDNNError`` (or an ``OSError``)
becomes one line on stderr, ``graphdnn <subcommand>: error: <message>``, and exit status 1;
``--traceback`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import Any

from graphdnn import __version__
from graphdnn.errors import GraphDNNError

__all__ = ["build_parser", "main", "one_line"]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand of ``graphdnn.commands`` registered."""
    import graphdnn.commands as commands

    parser = argparse.ArgumentParser(
        prog="graphdnn", description="Deep networks as named operation graphs, compiled to PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"graphdnn {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{commands.__name__}.{info.name}")
        except ImportError as exc:  # one command's missing dependency must not break the others
            _unavailable(subparsers, info.name, exc)
            continue
        module.register(subparsers)
    return parser


def _unavailable(subparsers: Any, name: str, exc: ImportError) -> None:
    """Register ``name`` as a command that only reports why it cannot run."""
    reason = f"cannot be used here: {one_line(exc)}"

    def fail(args: argparse.Namespace) -> int:
        raise GraphDNNError(reason)

    parser = subparsers.add_parser(name, help=f"(unavailable: {one_line(exc)})", add_help=False)
    parser.set_defaults(func=fail, takes_any_arguments=True)


def one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name when it has none)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except (GraphDNNError, OSError) as exc:
        if args.traceback:
            raise
        print(f"graphdnn {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"graphdnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
