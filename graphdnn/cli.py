"""The ``graphdnn`` command: ``graphdnn <subcommand> [options]``.

Each subcommand is a module of ``graphdnn.commands`` with a ``register(subparsers)`` function that adds
its parser and sets ``func`` (``args -> exit status``) with ``parser.set_defaults(func=...)``; modules
are discovered, so adding a subcommand touches one new file (a module that fails to import for want of a
dependency becomes a command that says so, and the others keep working). An error becomes one line on stderr,
``graphdnn <subcommand>: error: <message>``, and exit status 1 (a ``GraphDNNError`` or an ``OSError`` says what
is wrong; anything else is named by its type); ``--traceback``, before or after the subcommand, shows the
full traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import Any

from graphdnn._version import __version__
from graphdnn.errors import GraphDNNError

__all__ = ["build_parser", "error_line", "main", "one_line"]


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
    for sub in subparsers.choices.values():  # module docstrings are reStructuredText: no ``literal`` marks in --help
        sub.description = _plain(sub.description)
        for action in sub._actions:
            action.help = _plain(action.help)
    return parser


def _plain(text: str | None) -> str | None:
    """``text`` with reStructuredText's inline-literal marks (double backquotes) turned into plain quotes."""
    return text.replace("``", "'") if isinstance(text, str) else text


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
    argv = list(sys.argv[1:] if argv is None else argv)
    show_traceback = _take_flag(argv, "--traceback")  # before or after the subcommand
    if argv[:1] == ["--version"]:  # answered before the subcommands (and torch) are imported
        print(f"graphdnn {__version__}")
        return 0
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.traceback = show_traceback
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"graphdnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if show_traceback:
            raise
        print(f"graphdnn {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 1


def _take_flag(argv: list[str], flag: str) -> bool:
    """Remove every ``flag`` from ``argv`` (up to a ``--``, after which arguments are literal)."""
    end = argv.index("--") if "--" in argv else len(argv)
    found = flag in argv[:end]
    argv[:end] = [a for a in argv[:end] if a != flag]
    return found


def error_line(exc: BaseException) -> str:
    """One line for the user: a project error or a failed read says what is wrong; anything else is named
    by its type too, with where to look (a bug, or a library refusing the input)."""
    if isinstance(exc, GraphDNNError):
        return one_line(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename and str(exc.filename) not in str(exc) else ""
        return where + one_line(exc)
    if isinstance(exc, MemoryError):
        return "out of memory" + (f" ({one_line(exc)})" if str(exc) else "") + "; rerun with --traceback to see where"
    return f"unexpected {type(exc).__name__}: {one_line(exc)} (rerun with --traceback to see where)"


if __name__ == "__main__":
    sys.exit(main())
