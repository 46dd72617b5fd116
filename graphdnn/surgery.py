"""Graph surgery by name: extract, prune, remove / replace / rename a layer scope, rewire, stop-gradient.

Everything edits the graph (modules compiled before an edit keep computing what they computed; compile
again). New layers are built on any tensor of a graph, loaded or not, with the usual layer calls::

    g = graphdnn.load("model.safetensors")
    h3 = g.get_tensor("dnn/hidden3/Relu:0")
    with g.name_scope("new"):
        logits = layers.dense(layers.dense(h3, 20, activation=nn.relu, name="new_hidden4"), 10, name="new_outputs")

A *scope* argument names a layer: it matches ``scope``, ``scope/...`` and ``.../scope/...`` (ops sit in
the name scope, e.g. ``dnn/hidden1/MatMul``, and variables in the variable scope, ``hidden1/kernel``).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence

from graphdnn.errors import GraphError
from graphdnn.graph import Graph, Op, Tensor, ValueInfo
from graphdnn.names import split_tensor_name
from graphdnn.ops.registry import GRAPHDNN_DOMAIN

TensorRef = Tensor | str


def _ref(graph: Graph, t: TensorRef) -> str:
    return graph.get_tensor(t).name if not isinstance(t, Tensor) else t.name


def in_scope(name: str, scope: str) -> bool:
    """Whether op ``name`` belongs to layer ``scope`` (``scope/...`` or ``.../scope/...``)."""
    scope = scope.strip("/")
    return name == scope or name.startswith(scope + "/") or f"/{scope}/" in f"/{name}/"


def scope_ops(graph: Graph, scope: str) -> list[Op]:
    """The ops of layer ``scope``, in topological order; an error if there are none."""
    ops = [op for op in graph.operations() if in_scope(op.name, scope)]
    if not ops:
        raise GraphError(f"no op of graph {graph.name!r} is in scope {scope!r}")
    return ops


def _copy_op(op: Op) -> Op:
    outs = [ValueInfo(o.shape, o.dtype) for o in op.outputs]
    return Op(op.name, op.type, list(op.inputs), copy.deepcopy(op.attrs), outs, op.domain, copy.deepcopy(op.meta))


def extract_subgraph(
    graph: Graph,
    inputs: Sequence[TensorRef],
    outputs: Sequence[TensorRef],
    *,
    name: str | None = None,
    share_values: bool = True,
) -> Graph:
    """A new graph computing ``outputs`` from ``inputs``: each input becomes a placeholder that
    keeps the tensor's name when it is output 0 of its op (else ``<op>_<i>``). Variables share
    their values with ``graph`` unless ``share_values=False``. Collections are kept where their
    entries survive."""
    from graphdnn.compiler import needed_ops

    in_refs = [_ref(graph, t) for t in inputs]
    out_refs = [_ref(graph, t) for t in outputs]
    ops = needed_ops(graph, in_refs, out_refs)
    sub = Graph(name or graph.name)
    sub.opset, sub.meta = dict(graph.opset), copy.deepcopy(graph.meta)
    fed: dict[str, str] = {}
    for ref in in_refs:
        op_name, index = split_tensor_name(ref)
        info = graph.get_tensor(ref)
        ph_name = op_name if index == 0 else f"{op_name}_{index}"
        while ph_name in sub.nx or any(op.name == ph_name for op in ops if op.name != op_name):
            ph_name += "_"
        ph = sub.placeholder(ph_name, info.shape, info.dtype or "float32")
        fed[ref] = ph.name
    for op in ops:
        if op.name in sub.nx:
            continue
        new = _copy_op(op)
        new.inputs = [None if r is None else fed.get(r, r) for r in new.inputs]
        sub.insert_op(new)
        if op.is_variable and op.name in graph.values:
            value = graph.values[op.name]
            sub.values[op.name] = value if share_values else _clone(value)
    for key, refs in graph.collections.items():
        kept = [r for r in refs if split_tensor_name(r)[0] in sub.nx]
        if kept:
            sub.collections[key] = kept
    sub.layer_scopes = {s for s in graph.layer_scopes if any(in_scope(n, s) for n in sub.nx)}
    return sub


def _clone(value):
    import torch

    if isinstance(value, torch.nn.Parameter):
        return torch.nn.Parameter(value.detach().clone(), requires_grad=value.requires_grad)
    return value.detach().clone()


def prune(graph: Graph, outputs: Sequence[TensorRef], *, keep: Sequence[str] = ()) -> list[str]:
    """Remove, in place, every op that no tensor of ``outputs`` (or op of ``keep``) depends on;
    returns the removed names. Unneeded placeholders and variables go too."""
    import networkx as nx

    roots = {split_tensor_name(_ref(graph, t))[0] for t in outputs} | {graph.get_operation(k).name for k in keep}
    needed = set(roots)
    for r in roots:
        needed |= nx.ancestors(graph.nx, r)
    doomed = [n for n in graph.nx.nodes if n not in needed]
    graph.remove_ops(doomed)
    return doomed


def rewire(graph: Graph, old: TensorRef, new: TensorRef, *, skip: Sequence[str] = ()) -> list[str]:
    """Make every consumer of tensor ``old`` (except ops in ``skip``) read ``new``; returns them."""
    old_ref, new_ref = _ref(graph, old), _ref(graph, new)
    changed = []
    for op in graph.consumers(split_tensor_name(old_ref)[0]):
        if op.name in skip:
            continue
        for i, r in enumerate(op.inputs):
            if r == old_ref:
                graph.set_input(op.name, i, new_ref)
                changed.append(op.name)
    for key, refs in graph.collections.items():
        graph.collections[key] = [new_ref if r == old_ref else r for r in refs]
    return changed


def stop_gradient_after(graph: Graph, tensor: TensorRef, name: str | None = None) -> Tensor:
    """Insert a ``graphdnn::StopGradient`` after ``tensor`` and rewire its consumers to it, so no
    gradient flows into what computes ``tensor`` (TF's ``tf.stop_gradient`` put after hidden2).
    The new op is ``<op>/StopGradient`` unless ``name`` (a full op name) is given."""
    ref = _ref(graph, tensor)
    op_name = name or f"{split_tensor_name(ref)[0]}/StopGradient"
    base, i = op_name, 0
    while name is None and op_name in graph.nx:
        i += 1
        op_name = f"{base}_{i}"
    consumers = [op.name for op in graph.consumers(split_tensor_name(ref)[0]) if ref in op.inputs]
    stopped = graph.add_op("StopGradient", [ref], name=op_name, domain=GRAPHDNN_DOMAIN, scoped=False).out()
    for c in consumers:
        op = graph.get_operation(c)
        for j, r in enumerate(op.inputs):
            if r == ref:
                graph.set_input(c, j, stopped.name)
    return stopped


def _boundary(graph: Graph, ops: list[Op]) -> tuple[list[str], list[tuple[str, int, str]]]:
    """External non-variable inputs of ``ops`` and ``(consumer, index, tensor)`` reads from outside."""
    names = {op.name for op in ops}
    ins: list[str] = []
    for op in ops:
        for r in op.inputs:
            if r is None or split_tensor_name(r)[0] in names or r in ins:
                continue
            producer = graph.get_operation(r)
            if not (producer.is_variable or producer.type == "Constant"):
                ins.append(r)
    reads = []
    for op in graph.operations():
        if op.name in names:
            continue
        for i, r in enumerate(op.inputs):
            if r is not None and split_tensor_name(r)[0] in names:
                reads.append((op.name, i, r))
    return ins, reads


def remove_scope(graph: Graph, scope: str, *, dependents: bool = False) -> list[str]:
    """Remove layer ``scope`` (its ops and variables). If other ops read it, that is an error unless
    ``dependents=True``, which removes everything downstream too (with the variables and constants
    only those ops read). Returns the removed names."""
    import networkx as nx

    doomed = {op.name for op in scope_ops(graph, scope)}
    if dependents:
        for n in list(doomed):
            doomed |= nx.descendants(graph.nx, n)
        for n in list(doomed):  # variables and constants only the removed ops read go too
            for p in graph.nx.predecessors(n):
                op = graph.get_operation(p)
                if (op.is_variable or op.type == "Constant") and set(graph.nx.successors(p)) <= doomed:
                    doomed.add(p)
    _, reads = _boundary(graph, [graph.get_operation(n) for n in doomed])
    if reads:
        users = sorted({c for c, _, _ in reads})
        raise GraphError(f"cannot remove scope {scope!r}: ops {users[:5]} read it; pass dependents=True to remove "
                         "them too, or use replace_scope")
    graph.remove_ops(doomed)
    graph.layer_scopes = {s for s in graph.layer_scopes if not in_scope(s, scope)}
    return [n for n in list(doomed)]


def _name_prefix(ops: list[Op], scope: str) -> list[str]:
    segs = scope.strip("/").split("/")
    for op in ops:
        if op.is_variable:
            continue
        parts = op.name.split("/")
        for i in range(len(parts) - len(segs) + 1):
            if parts[i:i + len(segs)] == segs:
                return parts[:i]
    return []


def replace_scope(graph: Graph, scope: str, build: Callable[[Tensor], Tensor], *,
                  output: TensorRef | None = None) -> Tensor:
    """Replace layer ``scope`` by what ``build(input_tensor)`` makes (it may reuse the layer's name):
    the scope must read one tensor from outside; its consumers are rewired to the new output.
    ``output`` picks the replaced tensor when the scope exposes several."""
    ops = scope_ops(graph, scope)
    ins, reads = _boundary(graph, ops)
    if len(ins) != 1:
        raise GraphError(f"scope {scope!r} reads {len(ins)} outside tensors {ins[:5]}; replace_scope needs one")
    exposed = sorted({r for _, _, r in reads})
    if output is not None:
        exposed = [_ref(graph, output)]
    if len(exposed) > 1:
        raise GraphError(f"scope {scope!r} exposes tensors {exposed[:5]}; say which one with output=")
    reads = [(c, i, r) for c, i, r in reads if r in exposed]
    for consumer, index, _ in reads:  # park consumers on the input while the scope is rebuilt
        graph.set_input(consumer, index, ins[0])
    graph.remove_ops({op.name for op in ops})
    graph.layer_scopes = {s for s in graph.layer_scopes if not in_scope(s, scope)}
    with contextlib.ExitStack() as stack:  # build in the name scope the old layer's ops sat in (``dnn``)
        for part in _name_prefix(ops, scope):
            stack.enter_context(graph.name_scope(part))
        new = build(graph.get_tensor(ins[0]))
    if not isinstance(new, Tensor) or new.graph is not graph:
        raise GraphError("replace_scope: build() must return a Tensor of the same graph")
    for consumer, index, _ in reads:
        graph.set_input(consumer, index, new.name)
    return new


def rename_scope(graph: Graph, old: str, new: str) -> dict[str, str]:
    """Rename layer ``old`` to ``new`` in every op, variable, collection and value; returns the map."""
    old, new = old.strip("/"), new.strip("/")
    mapping = {}
    for op in scope_ops(graph, old):
        parts = op.name.split("/")
        olds = old.split("/")
        for i in range(len(parts) - len(olds) + 1):
            if parts[i:i + len(olds)] == olds:
                mapping[op.name] = "/".join(parts[:i] + new.split("/") + parts[i + len(olds):])
                break
    graph.rename_ops(mapping)
    graph.layer_scopes = {(new + s[len(old):]) if in_scope(s, old) and s.startswith(old) else s
                          for s in graph.layer_scopes}
    return mapping


__all__ = [
    "extract_subgraph",
    "in_scope",
    "prune",
    "remove_scope",
    "rename_scope",
    "replace_scope",
    "rewire",
    "scope_ops",
    "stop_gradient_after",
]
