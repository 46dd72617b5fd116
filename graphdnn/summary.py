"""Model summaries: the Keras-style table of a graph, a compiled module or any ``torch.nn.Module``.

``summary(obj, depth=None)`` groups ops into *layers* by name scope: an op belongs to the scope that
holds it (``dnn/hidden1/MatMul`` -> ``dnn/hidden1``), cut to ``depth`` levels when given. A variable
counts in the layer of the first op that reads it (through ``Identity`` readers), so TF1 graphs whose
variables live in another scope than their ops (``hidden1/kernel`` read by ``dnn/hidden1/MatMul``)
still show one row per layer. ``summary_data`` returns the same as plain data (``graphdnn inspect
--json``); ``variable_records`` and ``variable_tree`` describe every variable by scope.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from graphdnn.dtypes import dtype_name
from graphdnn.errors import ArgumentTypeError
from graphdnn.graph import Graph, Op, needed_ops
from graphdnn.names import graph_name, split_tensor_name

__all__ = ["SummaryRow", "VariableRecord", "format_bytes", "format_shape", "group_key", "layer_key",
           "summary", "summary_data", "variable_owners", "variable_records", "variable_tree"]

_READERS = {"Identity"}


@dataclass
class VariableRecord:
    """One named tensor: shape, dtype, element count, bytes and status (trainable, frozen, state or '-')."""

    name: str
    shape: list[int] | None
    dtype: str | None
    numel: int
    nbytes: int
    status: str


@dataclass
class SummaryRow:
    """One layer of a summary: its scope, op types, output shape and parameter counts."""

    scope: str
    types: list[str]
    ops: int
    output: str | None
    output_shape: str
    params: int = 0
    trainable: int = 0
    frozen: int = 0
    state: int = 0
    variables: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.params:
            return ""
        kinds = [k for k, n in (("yes", self.trainable), ("frozen", self.frozen), ("state", self.state)) if n]
        return kinds[0] if len(kinds) == 1 else "partly"


# ----------------------------------------------------------------------------------- helpers
def format_shape(shape: Iterable[int | None] | None) -> str:
    """``(None, 300)``; ``?`` for an unknown rank."""
    if shape is None:
        return "?"
    dims = ["None" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def format_bytes(n: int) -> str:
    """``1.5 MiB`` style sizes."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _parts(name: str) -> list[str]:
    return [p for p in name.split("/") if p] or [name]


def layer_key(op_name: str, depth: int | None = None) -> str:
    """The layer (scope) of an op: its name without the last part, cut to ``depth`` parts."""
    parts = _parts(op_name)
    scope = parts[:-1] or parts
    return "/".join(scope[:depth] if depth else scope)


def group_key(op_name: str, depth: int | None = None) -> str:
    """The box an op falls in when scopes are collapsed to ``depth`` parts (None: the op itself)."""
    parts = _parts(op_name)
    return "/".join(parts[:depth]) if depth else "/".join(parts)


def _status(op: Op) -> str:
    if op.attrs.get("frozen"):
        return "frozen"
    floating = str(op.attrs.get("dtype", "")).startswith(("float", "bfloat"))
    return "trainable" if op.attrs.get("trainable") and floating else "state"


def _numel(shape: Iterable[int] | None) -> int:
    n = 1
    for d in shape or ():
        n *= int(d)
    return n


def _graph_and_names(obj: Any) -> tuple[Graph, list[Op], set[str]] | None:
    """The graph, the ops a graph or compiled module computes, and its variable names."""
    if isinstance(obj, Graph):
        ops = obj.operations()
        return obj, ops, {op.name for op in ops if op.is_variable}
    graph = getattr(obj, "source_graph", None)
    if isinstance(graph, Graph) and hasattr(obj, "variable_names"):
        wanted = {op.name for op in needed_ops(graph, obj.input_names, obj.output_names)}
        wanted |= {split_tensor_name(r)[0] for r in obj.input_names}
        ops = [op for op in graph.operations() if op.name in wanted]
        return graph, ops, set(obj.variable_names)
    return None


def variable_records(obj: Any) -> list[VariableRecord]:
    """Every variable of a graph / compiled module (or tensor of a ``{name: tensor}`` mapping or a
    ``names()/info()/read()`` tensor source) with its shape, dtype, size and status."""
    found = _graph_and_names(obj)
    records = []
    if found is not None:
        graph, ops, names = found
        for op in ops:
            if op.is_variable and op.name in names:
                shape, dtype = list(op.attrs["shape"]), str(op.attrs["dtype"])
                value = graph.values.get(op.name)
                size = value.element_size() if value is not None else _itemsize(dtype)
                records.append(VariableRecord(op.name, shape, dtype, _numel(shape), _numel(shape) * size, _status(op)))
        return records
    if isinstance(obj, Mapping):
        items: Iterable[tuple[str, Any]] = obj.items()
    elif hasattr(obj, "names") and hasattr(obj, "read"):
        items = _source_items(obj)
    elif isinstance(obj, torch.nn.Module):
        items = ((graph_name(k), v) for k, v in obj.state_dict().items())
    else:
        raise ArgumentTypeError(f"cannot describe the variables of a {type(obj).__name__}")
    for name, value in items:
        t = torch.as_tensor(value)
        records.append(VariableRecord(name, list(t.shape), dtype_name(t.dtype), t.numel(),
                                      t.numel() * t.element_size(), "-"))
    return records


def _source_items(source: Any) -> Iterable[tuple[str, Any]]:
    names = source.names()
    unknown = []
    for name in names:
        shape, dtype = source.info(name)
        if shape is None or dtype is None:
            unknown.append(name)
    read = dict(source.read(unknown)) if unknown else {}
    for name in names:
        if name in read:
            yield name, read[name]
        else:
            shape, dtype = source.info(name)
            yield name, torch.empty(shape, dtype=dtype, device="meta")


def _itemsize(dtype: str) -> int:
    from graphdnn.dtypes import torch_dtype

    try:
        return torch.empty((), dtype=torch_dtype(dtype)).element_size()
    except Exception:  # an exotic dtype name: count it as 4 bytes
        return 4


def variable_owners(graph: Graph, ops: list[Op] | None = None) -> dict[str, str]:
    """Variable name -> the first op (in topological order) that reads it, looking through ``Identity``
    readers; a variable nothing reads owns itself."""
    ops = graph.operations() if ops is None else ops
    order = {op.name: i for i, op in enumerate(ops)}
    owners: dict[str, str] = {}
    for op in ops:
        if not op.is_variable:
            continue
        frontier, seen, best = [op.name], set(), None
        while frontier:
            name = frontier.pop()
            for user in graph.consumers(name):
                if user.name in seen or user.name not in order:
                    continue
                seen.add(user.name)
                if user.type in _READERS and not user.domain and len(user.inputs) == 1:
                    frontier.append(user.name)
                elif user.name.startswith(op.name + "/"):  # its own bookkeeping (a regularizer...)
                    continue
                elif best is None or order[user.name] < order[best]:
                    best = user.name
        owners[op.name] = best or op.name
    return owners


def is_reader(graph: Graph, op: Op) -> bool:
    """Variables, constants, ``Identity`` readers of a variable and ops in a variable's own scope (its
    regularizer): folded into the ops that use the variable."""
    if op.is_variable or op.type == "Constant":
        return True
    scope = op.name.rpartition("/")[0]
    while scope:
        if scope in graph.nx and graph.get_operation(scope).is_variable:
            return True
        scope = scope.rpartition("/")[0]
    if op.type in _READERS and len(op.inputs) == 1 and op.inputs[0]:
        return is_reader(graph, graph.get_operation(split_tensor_name(op.inputs[0])[0]))
    return False


# ------------------------------------------------------------------------------------ summary
def summary_data(obj: Any, depth: int | None = None) -> dict[str, Any]:
    """The summary of a graph, compiled module or ``nn.Module`` as plain data: ``rows`` and ``totals``."""
    found = _graph_and_names(obj)
    if found is None:
        if isinstance(obj, torch.nn.Module):
            return _module_data(obj, depth)
        raise ArgumentTypeError(f"summary() takes a Graph, a compiled module or an nn.Module, not {type(obj).__name__}")
    graph, ops, names = found
    rows: dict[str, SummaryRow] = {}
    groups: dict[str, str] = {}
    last: str | None = None
    current: dict[str, str] = {}  # scope -> the key of its latest row
    owners = variable_owners(graph, ops)
    layers = {layer_key(owner, depth) for owner in owners.values()}  # scopes holding a layer's variables
    for op in ops:
        if is_reader(graph, op):
            continue
        scope = op.name if op.is_placeholder else layer_key(op.name, depth)
        if scope != last and scope in current and scope not in layers:
            # ops of a plain name scope (``dnn/Elu`` between layers) resumed after other layers: a row in place
            current[scope] = f"{scope}\x00{len(rows)}"
        key = current.setdefault(scope, scope)
        last = scope
        groups[op.name] = key
        row = rows.setdefault(key, SummaryRow(scope, [], 0, None, ""))
        row.ops += 1
        if op.type not in row.types:
            row.types.append(op.type)
    _outputs(graph, ops, groups, rows)
    records = {r.name: r for r in variable_records(obj)}
    for var, owner in owners.items():
        if var not in records:
            continue
        key = groups.get(owner) or layer_key(var, depth)
        row = rows.setdefault(key, SummaryRow(key, [], 0, None, "-"))
        rec = records[var]
        row.params += rec.numel
        row.variables.append(var)
        kind = rec.status if rec.status in ("trainable", "frozen") else "state"
        setattr(row, kind, getattr(row, kind) + rec.numel)
    return {"name": graph.name, "ops": len(ops), "variables": len(records),
            "rows": [asdict(r) | {"status": r.status} for r in rows.values()], "totals": _totals(records.values())}


def _outputs(graph: Graph, ops: list[Op], groups: dict[str, str], rows: dict[str, SummaryRow]) -> None:
    """Each row's output: the last tensor of the group read outside it (or read by nothing)."""
    for op in ops:
        key = groups.get(op.name)
        if key is None:
            continue
        users = [groups.get(c.name) for c in graph.consumers(op.name)]
        if not users or any(u != key for u in users if u is not None) or all(u is None for u in users):
            rows[key].output = op.output()
            rows[key].output_shape = format_shape(op.outputs[0].shape) if op.outputs else "?"


def _totals(records: Iterable[VariableRecord]) -> dict[str, int]:
    totals = {"params": 0, "trainable": 0, "frozen": 0, "state": 0, "bytes": 0}
    for r in records:
        totals["params"] += r.numel
        totals["bytes"] += r.nbytes
        totals[r.status if r.status in ("trainable", "frozen") else "state"] += r.numel
    return totals


def _module_data(module: torch.nn.Module, depth: int | None) -> dict[str, Any]:
    rows: dict[str, SummaryRow] = {}
    records = []
    for key, param in module.named_parameters():
        name = graph_name(key)
        scope = layer_key(name, depth)
        row = rows.setdefault(scope, SummaryRow(scope, [type(module.get_submodule(key.rpartition(".")[0]))
                                                        .__name__], 0, None, "?"))
        row.params += param.numel()
        row.variables.append(name)
        status = "trainable" if param.requires_grad else "frozen"
        setattr(row, status, getattr(row, status) + param.numel())
        records.append(VariableRecord(name, list(param.shape), dtype_name(param.dtype), param.numel(),
                                      param.numel() * param.element_size(), status))
    for key, buf in module.named_buffers():
        records.append(VariableRecord(graph_name(key), list(buf.shape), dtype_name(buf.dtype), buf.numel(),
                                      buf.numel() * buf.element_size(), "state"))
        scope = layer_key(graph_name(key), depth)
        row = rows.setdefault(scope, SummaryRow(scope, [], 0, None, "?"))
        row.params += buf.numel()
        row.state += buf.numel()
    return {"name": type(module).__name__, "ops": 0, "variables": len(records),
            "rows": [asdict(r) | {"status": r.status} for r in rows.values()], "totals": _totals(records)}


def _types(types: list[str], ops: int) -> str:
    shown = ", ".join(types[:3]) + (f", +{len(types) - 3}" if len(types) > 3 else "")
    return shown if ops <= 1 or ops == len(types) else f"{shown}; {ops} ops"


def summary(obj: Any, depth: int | None = None) -> str:
    """The Keras-style table (scope and op types, output shape, parameters, trainable) of a graph, a
    compiled module or an ``nn.Module``, with parameter totals. ``depth`` cuts scopes to that many levels."""
    data = summary_data(obj, depth)
    table = [(f"{r['scope']} ({_types(r['types'], r['ops'])})" if r["types"] else r["scope"], r["output_shape"],
              f"{r['params']:,}", {"yes": "yes"}.get(r["status"], r["status"])) for r in data["rows"]]
    head = ("Scope (ops)", "Output shape", "Params", "Trainable")
    widths = [max([len(head[i])] + [len(row[i]) for row in table]) for i in range(4)]
    widths[0] = min(widths[0], 70)

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0] if len(cells[0]) <= widths[0] else cells[0][: widths[0] - 3] + "..."
        return f"{first:<{widths[0]}}  {cells[1]:<{widths[1]}}  {cells[2]:>{widths[2]}}  {cells[3]}".rstrip()

    rule = "=" * (sum(widths) + 6)
    t = data["totals"]
    lines = [f'Model "{data["name"]}": {data["ops"]} ops, {data["variables"]} variables', rule, line(head), rule]
    lines += [line(row) for row in table]
    lines += [rule, f"Total params: {t['params']:,} ({format_bytes(t['bytes'])})",
              f"Trainable params: {t['trainable']:,}", f"Frozen params: {t['frozen']:,}",
              f"Non-trainable params (state): {t['state']:,}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- variable tree
def variable_tree(records: list[VariableRecord]) -> str:
    """Variables as an indented tree by scope: each scope with its parameter count and size, each
    variable with shape, dtype, count and status."""
    tree: dict[str, Any] = {}
    for rec in records:
        node = tree
        *scopes, leaf = _parts(rec.name)
        for s in scopes:
            node = node.setdefault(s + "/", {})
        node[leaf] = rec
    lines: list[str] = []

    def totals(node: dict[str, Any]) -> tuple[int, int, set[str]]:
        n = b = 0
        kinds: set[str] = set()
        for child in node.values():
            if isinstance(child, VariableRecord):
                n, b, kinds = n + child.numel, b + child.nbytes, kinds | {child.status}
            else:
                cn, cb, ck = totals(child)
                n, b, kinds = n + cn, b + cb, kinds | ck
        return n, b, kinds

    def walk(node: dict[str, Any], indent: int) -> None:
        for key, child in node.items():
            pad = "  " * indent
            if isinstance(child, VariableRecord):
                shape = format_shape(child.shape)
                lines.append(f"{pad}{key:<{max(28 - len(pad), 1)}} {shape:<16} {str(child.dtype):<9} "
                             f"{child.numel:>12,}  {child.status}".rstrip())
            else:
                n, b, kinds = totals(child)
                status = next(iter(kinds)) if len(kinds) == 1 else "mixed"
                lines.append(f"{pad}{key:<{max(28 - len(pad), 1)}} {'':<16} {'':<9} {n:>12,}  {status}"
                             f" ({format_bytes(b)})")
                walk(child, indent + 1)

    walk(tree, 0)
    return "\n".join(lines)
