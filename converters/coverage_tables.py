"""The README's coverage tables, generated from the converters' registries.

Each table sits between ``<!-- coverage:NAME:begin -->`` and ``<!-- coverage:NAME:end -->`` markers in
``README.md`` and is produced by one function in ``TABLES``; add a table by adding a marker pair and an
entry. ``rewrite(text)`` regenerates them in a README's text; ``python benchmarks/coverage_tables.py``
rewrites the source tree's README, and ``--check`` exits 1 when one is stale (a test runs the check).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from graphdnn.converters.keras_import import supported_layers
from graphdnn.converters.tf_ops import supported_ops
from graphdnn.converters.torch_export import coverage

from graphdnn.errors import InputError

#: The README of the source tree this package runs from (an editable install or a checkout).
README = Path(__file__).resolve().parents[1] / "README.md"


def _grid(names: list[str], columns: int = 6) -> str:
    rows = [names[i:i + columns] for i in range(0, len(names), columns)]
    lines = ["| " + " | ".join([""] * columns) + " |", "|" + " --- |" * columns]
    lines += ["| " + " | ".join([f"`{n}`" for n in row] + [""] * (columns - len(row))) + " |" for row in rows]
    return "\n".join(lines)


def tf_ops_table() -> str:
    """The TF op types a TF1 meta graph may hold (``graphdnn.converters.tf_ops.supported_ops``)."""
    ops = supported_ops()
    return f"{len(ops)} op types.\n\n{_grid(ops)}"


def keras_layers_table() -> str:
    """The Keras layer classes ``load_keras`` rebuilds, by family
    (``graphdnn.converters.keras_import.supported_layers``)."""
    table = supported_layers()
    families: dict[str, list[str]] = {}
    for cls, family in table.items():
        families.setdefault(family, []).append(cls)
    lines = ["| family (`converters/keras_layers/`) | layer classes |", "| --- | --- |"]
    for family, classes in sorted(families.items()):
        lines.append(f"| `{family}` | {', '.join(f'`{c}`' for c in classes)} |")
    head = f"{len(table)} layer classes, plus `InputLayer` and nested `Sequential`/functional models."
    return head + "\n\n" + "\n".join(lines)


def torch_aten_table() -> str:
    """The ATen op families ``graphdnn.from_torch`` translates (``graphdnn.converters.torch_export.coverage``)."""
    families = [name for name, _ in coverage()]
    return f"{len(families)} ATen op families (every overload of each).\n\n{_grid(families, 5)}"


TABLES: dict[str, Callable[[], str]] = {"tf-ops": tf_ops_table, "keras-layers": keras_layers_table,
                                        "torch-aten": torch_aten_table}


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- coverage:{re.escape(name)}:begin -->).*?(<!-- coverage:{re.escape(name)}:end -->)", re.S)


def rewrite(text: str, names: list[str] | None = None) -> str:
    """``text`` (the README) with the named tables (default: all) regenerated."""
    for name in names or list(TABLES):
        pattern = _block(name)
        if not pattern.search(text):
            raise InputError(f"the README text has no <!-- coverage:{name}:begin/end --> markers; add them where "
                             f"the {name} table belongs")
        body = TABLES[name]()
        text = pattern.sub(lambda m, body=body: f"{m.group(1)}\n{body}\n{m.group(2)}", text)
    return text
