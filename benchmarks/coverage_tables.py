"""Rewrite the README's coverage tables from the converters' registries (``graphdnn.converters.coverage_tables``).

``python benchmarks/coverage_tables.py`` rewrites them; ``--check`` exits 1 when one is stale (a test runs
the check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphdnn.converters.coverage_tables import TABLES, rewrite  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a table is not current")
    parser.add_argument("tables", nargs="*", help=f"tables to rewrite (default: all of {', '.join(TABLES)})")
    args = parser.parse_args(argv)
    unknown = [t for t in args.tables if t not in TABLES]
    if unknown:
        parser.error(f"unknown table(s) {unknown}; known: {list(TABLES)}")
    old = README.read_text(encoding="utf-8")
    new = rewrite(old, args.tables or None)
    if args.check:
        if new != old:
            print("README.md coverage tables are stale: run python benchmarks/coverage_tables.py")
            return 1
        return 0
    if new != old:
        README.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
