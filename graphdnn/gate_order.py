"""ONNX LSTM/GRU weights held in torch's gate order, mapped once instead of at every call.

ONNX orders the gate blocks of an LSTM's ``W`` [dirs, 4H, I], ``R`` [dirs, 4H, H] and of each half of ``B``
[dirs, 8H] as i, o, f, c; torch's fused kernels (``nn.LSTM``) read i, f, g(c), o. A GRU's z, r, h are torch's
r, z, n. ``to_torch_gate_order(graph)`` permutes the rows of the variables feeding such ops into torch's order,
in place, and marks both: the op gets the attribute ``gate_order="torch"`` (``graphdnn.ops.rnn`` then hands the
tensors to the kernel as they are, with no gather per call), each variable ``layout="gates:torch:LSTM"`` (or
``...:GRU``). So for a converted variable, ``graph.values[name]`` and ``graph.get_tensor(name)`` hold torch's
gate order, not the ONNX file's; the ``layout`` marker says so. ``graphdnn.converters.onnx_export`` writes
such variables back in ONNX's order (a standard ONNX LSTM/GRU), ``graphdnn.restore`` permutes a tensor coming
from a source that holds ONNX's order (an ``.onnx`` file imported with ``gate_order="onnx"``, a mapping of
arrays, a foreign checkpoint) and copies one from a graphdnn source with the same marker as it is.
``to_onnx_gate_order(graph)`` undoes the conversion. Run either before compiling the graph: a module
compiled earlier keeps the attributes it was compiled with.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from graphdnn.errors import GraphError
from graphdnn.graph import Graph, Op
from graphdnn.names import split_tensor_name

__all__ = ["GATES_TORCH", "TORCH_GATES", "check_marked", "gate_kind", "gate_rows", "permute_gates",
           "to_onnx_gate_order", "to_torch_gate_order"]

#: Prefix of the ``layout`` of a variable whose gate blocks are in torch's order (``"gates:torch:LSTM"``).
GATES_TORCH = "gates:torch"

#: ONNX gate blocks in torch's order: LSTM i,o,f,c -> i,f,g(c),o; GRU z,r,h -> r,z,n.
TORCH_GATES = {"LSTM": (0, 2, 3, 1), "GRU": (1, 0, 2)}
_DEFAULT_ACTIVATIONS = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"]}


def gate_kind(layout: Any) -> str | None:
    """``"LSTM"`` or ``"GRU"`` when a variable's ``layout`` says its gate blocks are in torch's order, else None."""
    if not isinstance(layout, str) or not layout.startswith(GATES_TORCH + ":"):
        return None
    kind = layout[len(GATES_TORCH) + 1:]
    return kind if kind in TORCH_GATES else None


@functools.lru_cache(maxsize=64)
def gate_rows(order: tuple[int, ...], hidden: int, halves: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Row indices taking ``halves`` blocks of gates (W's and R's rows: 1; B's two halves: 2) in ONNX's order to
    ``order`` (torch's), and the inverse permutation. Cached: callers only read them."""
    gates = len(order)
    rows = torch.tensor([h * gates * hidden + k * hidden + i for h in range(halves) for k in order
                         for i in range(hidden)], dtype=torch.int64)
    return rows.to(device), torch.argsort(rows).to(device)


def _rows(kind: str, value: torch.Tensor, name: str) -> tuple[torch.Tensor, ...]:
    """``gate_rows`` along dim 1 of ``W``/``R`` (rank 3) or ``B`` (rank 2, two halves), checked against the shape."""
    order = TORCH_GATES[kind]
    gates, halves = len(order), 1 if value.dim() == 3 else 2
    if value.dim() not in (2, 3) or value.shape[1] % (gates * halves):
        raise GraphError(f"variable {name!r} of shape {list(value.shape)} is not a {kind} W/R [dirs, {gates}*H, *] "
                         f"or B [dirs, {2 * gates}*H]; its gate blocks cannot be reordered")
    return gate_rows(order, value.shape[1] // (gates * halves), halves, value.device)


def permute_gates(value: torch.Tensor, kind: str, to: str, *, name: str = "tensor") -> torch.Tensor:
    """A new tensor: ``value`` (an LSTM/GRU ``W``/``R`` [dirs, G*H, *] or ``B`` [dirs, 2*G*H]) with its gate
    blocks taken to ``to`` (``"torch"`` from ONNX's order, ``"onnx"`` from torch's)."""
    if kind not in TORCH_GATES or to not in ("torch", "onnx"):
        raise GraphError(f"permute_gates: kind must be 'LSTM' or 'GRU' and to 'torch' or 'onnx', not {kind!r}, {to!r}")
    rows, inverse = _rows(kind, value, name)
    return value.index_select(1, rows if to == "torch" else inverse)


def _variable(graph: Graph, ref: str | None) -> Op | None:
    if ref is None:
        return None
    op_name, index = split_tensor_name(ref)
    op = graph.get_operation(op_name)
    return op if op.is_variable and index == 0 else None


def _candidate(graph: Graph, op: Op) -> tuple[tuple[str, int], list[Op]] | None:
    """``((kind, hidden), [W, R(, B) variables])`` when ``op`` is an ONNX LSTM/GRU in ONNX's gate order whose
    configuration torch's fused kernel runs and whose ``W``/``R``/``B`` are variables of consistent shapes."""
    kind, attrs = op.type, op.attrs
    if op.domain or kind not in TORCH_GATES or (attrs.get("gate_order") or "onnx") != "onnx":
        return None
    if attrs.get("clip") is not None or attrs.get("activation_alpha") or attrs.get("activation_beta"):
        return None
    if int(attrs.get("input_forget", 0) or 0) or (kind == "GRU" and not int(attrs.get("linear_before_reset", 0))):
        return None
    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        return None
    dirs = 2 if direction == "bidirectional" else 1
    names = [str(a).lower() for a in attrs.get("activations") or []]
    if names and names != _DEFAULT_ACTIVATIONS[kind] * dirs:
        return None
    inputs = op.inputs
    if len(inputs) < 3 or any(r is not None for r in inputs[4:5] + inputs[7:8]):  # sequence_lens, peepholes
        return None
    variables = [_variable(graph, r) for r in inputs[1:4] if r is not None]
    if len(variables) != len([r for r in inputs[1:4] if r is not None]) or None in variables or len(variables) < 2:
        return None
    gates = len(TORCH_GATES[kind])
    shapes = [v.attrs.get("shape") for v in variables]
    if any(v.attrs.get("layout") is not None for v in variables) or any(s is None for s in shapes):
        return None
    if len({v.attrs.get("dtype") for v in variables}) != 1 or variables[0].attrs.get("dtype") not in (
            "float32", "float64"):  # what the fused kernels run
        return None
    w, r = shapes[0], shapes[1]
    if len(w) != 3 or len(r) != 3 or w[0] != dirs or r[0] != dirs or r[1] != gates * r[2] or w[1] != r[1]:
        return None
    hidden = r[2]
    if attrs.get("hidden_size") not in (None, hidden):
        return None
    if len(shapes) == 3 and list(shapes[2]) != [dirs, 2 * gates * hidden]:
        return None
    return (kind, hidden), variables


def to_torch_gate_order(graph: Graph) -> list[str]:
    """Put the ``W``/``R``/``B`` variables of ``graph``'s ONNX LSTM/GRU ops in torch's gate order (in place: the
    variables keep their tensors, so ``Parameter`` identity, trainability and freezing are kept) and mark the
    ops ``gate_order="torch"`` and the variables ``layout="gates:torch:<kind>"``; returns the converted ops'
    names. Converted: ops in ONNX's order whose configuration torch's fused kernel runs (default activations, no
    clip, ``sequence_lens``, peepholes or ``input_forget``; GRU with ``linear_before_reset=1``; either
    ``layout``), whose ``W``/``R``/``B`` are float32 or float64 variables (no layout of their own) read by no op
    but converted ops of the same kind and hidden size, and are not declared graph outputs."""
    candidates: dict[str, tuple[tuple[str, int], list[Op]]] = {}
    for op in graph.operations():
        found = _candidate(graph, op)
        if found is not None:
            candidates[op.name] = found
    declared = {split_tensor_name(r)[0] for r in ((graph.signature or {}).get("outputs") or [])}
    changed = True
    while changed:  # drop ops sharing a variable with anything that is not converted alike
        changed = False
        for name, (key, variables) in list(candidates.items()):
            for v in variables:
                readers = graph.consumers(v.name)
                if v.name in declared or any(c.name not in candidates or candidates[c.name][0] != key
                                             for c in readers):
                    del candidates[name]
                    changed = True
                    break
    done: set[str] = set()
    for name, ((kind, _), variables) in candidates.items():
        for v in variables:
            if v.name in done:
                continue
            done.add(v.name)
            value = graph.values.get(v.name)
            if value is not None:
                with torch.no_grad():
                    value.copy_(permute_gates(value, kind, to="torch", name=v.name))
            v.attrs["layout"] = f"{GATES_TORCH}:{kind}"
        graph.get_operation(name).attrs["gate_order"] = "torch"
    return list(candidates)


def check_marked(graph: Graph, op: Op) -> None:
    """Raise ``GraphError`` unless every ``W``/``R``/``B`` of LSTM/GRU ``op`` (in torch's gate order) is a variable
    marked ``gates:torch:<its type>``, the only form whose ONNX order can be written back."""
    for ref in op.inputs[1:4]:
        v = _variable(graph, ref)
        if ref is not None and (v is None or gate_kind(v.attrs.get("layout")) != op.type):
            raise GraphError(f"op {op.name!r} ({op.type}, gate_order 'torch') reads {ref!r}, which is not a variable "
                             f"marked {GATES_TORCH}:{op.type}; its gate order cannot be taken back to ONNX's (hold "
                             "the weights in variables, or import with gate_order='onnx')")


def to_onnx_gate_order(graph: Graph) -> list[str]:
    """Undo ``to_torch_gate_order``: every variable marked ``gates:torch`` back to ONNX's gate order (in place)
    with no layout, and every LSTM/GRU op's ``gate_order`` attribute removed; returns those ops' names. An op
    in torch's order whose ``W``/``R``/``B`` is not such a variable raises ``GraphError``."""
    ops = [op for op in graph.operations() if op.type in TORCH_GATES and not op.domain
           and op.attrs.get("gate_order") == "torch"]
    for op in ops:
        check_marked(graph, op)
    for v in graph.variables():
        kind = gate_kind(v.attrs.get("layout"))
        if kind is None:
            continue
        value = graph.values.get(v.name)
        if value is not None:
            with torch.no_grad():
                value.copy_(permute_gates(value, kind, to="onnx", name=v.name))
        v.attrs["layout"] = None
    for op in ops:
        del op.attrs["gate_order"]
    return [op.name for op in ops]
