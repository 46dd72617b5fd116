"""Control flow: If, Loop, Scan and SequenceMap.

Their bodies are nested graphs (see ``graphdnn.subgraphs``). The compiler hands each lowering its
bodies compiled to modules, called as ``body(*formal_inputs, *captured)``: ``captured`` are the
outer-scope values the bodies read, which the op receives as its last ``_captures`` inputs, so
gradients flow from a body into the outer graph's variables. The loops run in Python, as in eager
PyTorch; ``torch.compile`` traces through them when trip counts are fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from graphdnn.errors import GraphError, InputError
from graphdnn.ops.registry import register

Body = Callable[..., Any]


def _results(body: Body, out: Any) -> tuple[Any, ...]:
    """A body's outputs as a tuple (a single output, even a list, is one value)."""
    n = len(getattr(body, "output_names", ())) or (len(out) if isinstance(out, tuple) else 1)
    return (out,) if n == 1 else tuple(out)


def _split(args: Sequence[Any], captures: int) -> tuple[list[Any], list[Any]]:
    cut = len(args) - captures
    return list(args[:cut]), list(args[cut:])


def _truth(value: Any) -> bool:
    return bool(value.reshape(-1)[0]) if isinstance(value, torch.Tensor) else bool(value)


# ------------------------------------------------------------------------------------------------
# If
# ------------------------------------------------------------------------------------------------
@register("If", since=1, num_outputs=None)
def if_(cond: torch.Tensor, *captured: Any, then_branch: Body, else_branch: Body, _outputs: int = 1,
        _captures: int = 0) -> tuple[Any, ...]:
    """Run ``then_branch`` when the one-element ``cond`` is true, else ``else_branch``."""
    branch = then_branch if _truth(cond) else else_branch
    return _results(branch, branch(*captured))[:_outputs]


# ------------------------------------------------------------------------------------------------
# Loop
# ------------------------------------------------------------------------------------------------
@register("Loop", since=1, num_outputs=None)
def loop(trip_count: torch.Tensor | None, cond: torch.Tensor | None, *rest: Any, body: Body, _outputs: int = 1,
         _captures: int = 0) -> tuple[Any, ...]:
    """ONNX Loop: run ``body(i, cond, *carried)`` while ``i < trip_count`` (when given) and ``cond``
    (when given) holds; returns the final carried values, then each scan output stacked on a new
    leading axis. Without a ``cond`` input the body's condition output is ignored."""
    carried, captured = _split(rest, _captures)
    n_carried = len(carried)
    limit = None if trip_count is None else int(trip_count.reshape(-1)[0])
    keep_going = True if cond is None else _truth(cond)
    cond_value = torch.tensor(True) if cond is None else cond.reshape(()).to(torch.bool)
    if limit is None and cond is None:
        raise GraphError("Loop has neither a trip count nor a condition input: it would never end")
    scans: list[list[torch.Tensor]] = [[] for _ in range(_outputs - n_carried)]
    i = 0
    while keep_going and (limit is None or i < limit):
        out = _results(body, body(torch.tensor(i, dtype=torch.int64), cond_value, *carried, *captured))
        cond_value = out[0]
        carried = list(out[1:1 + n_carried])
        for acc, value in zip(scans, out[1 + n_carried:]):
            acc.append(value)
        if cond is not None:
            keep_going = _truth(cond_value)
        i += 1
    stacked = [torch.stack(acc) if acc else torch.empty(0) for acc in scans]
    return (*carried, *stacked)


# ------------------------------------------------------------------------------------------------
# Scan
# ------------------------------------------------------------------------------------------------
def _axes(values: list[int] | None, count: int, ranks: list[int]) -> list[int]:
    axes = list(values) if values else [0] * count
    return [a + r if a < 0 else a for a, r in zip(axes, ranks)]


def _scan(states: list[torch.Tensor], inputs: list[torch.Tensor], captured: list[Any], body: Body,
          in_axes: list[int], in_dirs: list[int], out_axes: list[int] | None, out_dirs: list[int] | None,
          n_outputs: int, steps: int | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    n_states = len(states)
    length = inputs[0].shape[in_axes[0]] if inputs else 0
    if any(x.shape[a] != length for x, a in zip(inputs, in_axes)):
        raise InputError(f"Scan inputs differ in length along their scan axes: "
                         f"{[tuple(x.shape) for x in inputs]}, axes {in_axes}")
    steps = length if steps is None else steps
    collected: list[list[torch.Tensor]] = [[] for _ in range(n_outputs - n_states)]
    for t in range(steps):
        slices = [x.select(a, length - 1 - t if d else t) for x, a, d in zip(inputs, in_axes, in_dirs)]
        out = _results(body, body(*states, *slices, *captured))
        states = list(out[:n_states])
        for acc, value in zip(collected, out[n_states:]):
            acc.append(value)
    scan_out = []
    dirs = list(out_dirs) if out_dirs else [0] * len(collected)
    for k, acc in enumerate(collected):
        if dirs[k]:
            acc = acc[::-1]
        stacked = torch.stack(acc) if acc else torch.empty(0)
        axis = (out_axes[k] if out_axes else 0)
        if axis < 0:
            axis += stacked.dim()
        scan_out.append(stacked.movedim(0, axis) if axis else stacked)
    return states, scan_out


@register("Scan", since=9, num_outputs=None)
def scan(*args: Any, body: Body, num_scan_inputs: int, scan_input_axes: list[int] | None = None,
         scan_input_directions: list[int] | None = None, scan_output_axes: list[int] | None = None,
         scan_output_directions: list[int] | None = None, _outputs: int = 1, _captures: int = 0) -> tuple[Any, ...]:
    """ONNX Scan (opset 9+): the first inputs are states, the last ``num_scan_inputs`` are sliced
    along their scan axes; returns the final states, then the per-step outputs stacked."""
    formal, captured = _split(args, _captures)
    n_states = len(formal) - num_scan_inputs
    states, inputs = list(formal[:n_states]), list(formal[n_states:])
    in_axes = _axes(scan_input_axes, num_scan_inputs, [x.dim() for x in inputs])
    in_dirs = list(scan_input_directions) if scan_input_directions else [0] * num_scan_inputs
    states, outs = _scan(states, inputs, captured, body, in_axes, in_dirs, scan_output_axes,
                         scan_output_directions, _outputs)
    return (*states, *outs)


@register("Scan", since=8, num_outputs=None)
def scan_8(sequence_lens: torch.Tensor | None, *args: Any, body: Body, num_scan_inputs: int,
           directions: list[int] | None = None, _outputs: int = 1, _captures: int = 0) -> tuple[Any, ...]:
    """ONNX Scan-8: inputs carry a leading batch axis and scan along axis 1; each batch entry runs
    for its ``sequence_lens`` steps (default: all), shorter scan outputs padded with zeros."""
    formal, captured = _split(args, _captures)
    n_states = len(formal) - num_scan_inputs
    states, inputs = list(formal[:n_states]), list(formal[n_states:])
    batch = (states or inputs)[0].shape[0]
    lengths = [None] * batch if sequence_lens is None else [int(v) for v in sequence_lens.reshape(-1).tolist()]
    dirs = list(directions) if directions else [0] * num_scan_inputs
    final: list[list[torch.Tensor]] = [[] for _ in range(n_states)]
    scanned: list[list[torch.Tensor]] = [[] for _ in range(_outputs - n_states)]
    for b in range(batch):
        entry_inputs = [x[b] for x in inputs]
        full = entry_inputs[0].shape[0] if entry_inputs else 0
        steps = full if lengths[b] is None else lengths[b]
        if steps != full:  # a shorter sequence scans its first ``steps`` entries (last ones when reversed)
            entry_inputs = [x[:steps] for x in entry_inputs]
        s, outs = _scan([x[b] for x in states], entry_inputs, captured, body, [0] * num_scan_inputs, dirs, None,
                        None, _outputs)
        for acc, value in zip(final, s):
            acc.append(value)
        for acc, value in zip(scanned, outs):
            if value.shape[0] < full:
                pad = value.new_zeros((full - value.shape[0], *value.shape[1:]))
                value = torch.cat([value, pad])
            acc.append(value)
    return (*(torch.stack(v) for v in final), *(torch.stack(v) for v in scanned))


# ------------------------------------------------------------------------------------------------
# SequenceMap
# ------------------------------------------------------------------------------------------------
@register("SequenceMap", since=17, num_outputs=None)
def sequence_map(input_sequence: list[torch.Tensor], *rest: Any, body: Body, _outputs: int = 1,
                 _captures: int = 0) -> tuple[list[Any], ...]:
    """Apply ``body`` to the i-th element of ``input_sequence`` (and of each additional sequence;
    an additional tensor is passed whole every time); each output is the sequence of results."""
    extra, captured = _split(rest, _captures)
    n = len(input_sequence)
    for k, x in enumerate(extra):
        if isinstance(x, list) and len(x) != n:
            raise InputError(f"SequenceMap: additional input {k} has {len(x)} elements, the input sequence {n}")
    outs: list[list[Any]] = [[] for _ in range(_outputs)]
    for i in range(n):
        args = [input_sequence[i], *(x[i] if isinstance(x, list) else x for x in extra)]
        for acc, value in zip(outs, _results(body, body(*args, *captured))):
            acc.append(value)
    return tuple(outs)
