"""Recover the source parameter names that the torch ONNX exporters lose.

The TorchScript exporter (``dynamo=False``) folds the transpose of a ``Linear`` weight into a new
initializer named ``onnx::MatMul_<n>`` and keeps one initializer for equal-valued parameters (every
zero bias of a fresh model reads the same tensor); the dynamo exporter names folded values ``val_<n>``
and shares equal constants the same way. The module path survives elsewhere: in the legacy exporter's
node names (``/encoder/layer.0/attention/self/query/MatMul``) and in the dynamo exporter's node metadata
(``pkg.torch.onnx.name_scopes``, whose next-to-last entry is the module path).

``recover_names(model, graph)`` runs after ``graphdnn.converters.onnx_import`` has built ``graph`` and, for each
variable read by a layer op, derives the parameter that op reads in torch: its module path plus the
attribute its input slot holds (``MatMul``/``Gemm`` input 1 -> ``weight``, ``Add`` after a ``MatMul`` ->
``bias``, ``Conv`` -> ``weight``/``bias``, ``BatchNormalization`` -> ``weight``/``bias``/``running_mean``/
``running_var``, ``LayerNormalization`` -> ``weight``/``bias``, ``Gather`` input 0 -> ``weight``) and the
layout relation (``transpose`` for a folded ``onnx::MatMul`` weight or a ``Gemm`` without ``transB``;
``same`` otherwise). It records them in ``graph.meta["weight_sources"]`` (``{source name: [variable,
layout]}``, used by ``graphdnn.restore``) and as ``graph.aliases``. A variable shared by ops of
different modules (a deduplicated initializer) is split: each module gets its own copy, named after its
parameter, so restoring a trained state dict gives every module its own values. A float variable
whose name is an exporter artefact and which no layer op reads as a weight was folded with other
constants (the dynamo exporter folds an embedding of constant indices into its result, batch norm
into a convolution...): it is listed by name, with the op that reads it, in
``graph.meta["weight_sources_folded"]``, and ``restore`` reports it.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import onnx

from graphdnn.graph import Graph, Op
from graphdnn.names import split_tensor_name, tensor_name
from graphdnn.restoring import WEIGHT_SOURCES, WEIGHT_SOURCES_FOLDED

__all__ = ["SOURCES_KEY", "FOLDED_KEY", "is_artefact", "module_path", "recover_names"]

#: ``graph.meta`` keys (the format ``graphdnn.restore`` reads).
SOURCES_KEY = WEIGHT_SOURCES
FOLDED_KEY = WEIGHT_SOURCES_FOLDED
_ARTEFACT = re.compile(r"\A(?:onnx::.*|_?val_\d+|.*::.*)\Z")
_PASS = {"Identity", "Cast"}
_NORMS = {"LayerNormalization", "GroupNormalization", "InstanceNormalization"}
_BN_SLOTS = {1: "weight", 2: "bias", 3: "running_mean", 4: "running_var"}


def is_artefact(name: str) -> bool:
    """Whether an initializer name was made up by an exporter (``onnx::MatMul_12``, ``val_48``, or a bare
    FX node name such as ``embedding_2``) rather than being a state-dict key (``fc.weight``)."""
    return bool(_ARTEFACT.match(name)) or "." not in name


def module_path(op: Op, metadata: dict[str, dict[str, str]]) -> str | None:
    """The torch module path of an imported op: from the dynamo exporter's ``name_scopes`` metadata, else
    from a legacy scoped node name (``/encoder/layer.0/query/MatMul`` -> ``encoder.layer.0.query``)."""
    onnx_name = op.meta.get("onnx_name", op.name)
    props = metadata.get(onnx_name)
    if props and "pkg.torch.onnx.name_scopes" in props:
        try:
            scopes = ast.literal_eval(props["pkg.torch.onnx.name_scopes"])
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
        if isinstance(scopes, list) and len(scopes) >= 2 and all(isinstance(s, str) for s in scopes):
            return scopes[-2]
        return None
    if onnx_name.startswith("/") and onnx_name.count("/") >= 2:
        return ".".join(onnx_name[1:].split("/")[:-1])
    return None


def _producer(graph: Graph, ref: str | None) -> Op | None:
    if ref is None:
        return None
    op = graph.get_operation(split_tensor_name(ref)[0])
    while op.type in _PASS and not op.domain and op.inputs and op.inputs[0]:
        op = graph.get_operation(split_tensor_name(op.inputs[0])[0])
    return op


def _slot_param(graph: Graph, op: Op, slot: int, rank: int) -> tuple[str, str] | None:
    """(attribute, layout) of the torch parameter that input ``slot`` of ``op`` holds, or None."""
    if op.domain:
        return None
    kind = op.type
    if kind == "MatMul" and slot == 1:
        return "weight", "transpose"
    if kind == "Gemm" and slot in (1, 2):
        if slot == 2:
            return "bias", "same"
        return "weight", "same" if op.attrs.get("transB") else "transpose"
    if kind in ("Conv", "ConvTranspose") and slot in (1, 2):
        return ("weight" if slot == 1 else "bias"), "same"
    if kind == "BatchNormalization" and slot in _BN_SLOTS:
        return _BN_SLOTS[slot], "same"
    if kind in _NORMS and slot in (1, 2):
        return ("weight" if slot == 1 else "bias"), "same"
    if kind == "Gather" and slot == 0:
        return "weight", "same"
    if kind == "Add" and len(op.inputs) == 2 and rank == 1:  # a layer's bias is 1-D (a mask added to scores is not)
        other = _producer(graph, op.inputs[1 - slot])
        if other is not None and other.type in ("MatMul", "Gemm", "Conv") and not other.domain:
            return "bias", "same"
    return None


def _uses(graph: Graph, var: Op) -> list[tuple[Op, int, bool]]:
    """(consumer, input slot, transposed on the way) of a variable, read through Identity, Cast and a
    2-D ``Transpose`` (an exporter's unfolded weight transpose)."""
    found: list[tuple[Op, int, bool]] = []
    stack = [(var.output(0), False)]
    while stack:
        ref, flipped = stack.pop()
        op_name = split_tensor_name(ref)[0]
        for consumer in graph.consumers(op_name):
            for slot, r in enumerate(consumer.inputs):
                if r != ref:
                    continue
                if consumer.type in _PASS and not consumer.domain:
                    stack.append((consumer.output(0), flipped))
                elif (consumer.type == "Transpose" and not consumer.domain and len(var.attrs["shape"]) == 2
                      and consumer.attrs.get("perm") in (None, [1, 0])):
                    stack.append((consumer.output(0), not flipped))
                else:
                    found.append((consumer, slot, flipped))
    return found


def _legacy_fused_conv(graph: Graph, var: Op, init: str, metadata: dict[str, dict[str, str]]) -> str | None:
    """The module path of the conv whose weight or bias is ``init`` when the TorchScript exporter rewrote it
    (``onnx::Conv_<n>``: it keeps a parameter's name unless it folds a batch norm into it)."""
    if not init.startswith("onnx::Conv_"):
        return None
    for consumer, slot, _ in _uses(graph, var):
        if consumer.type == "Conv" and slot in (1, 2):
            return module_path(consumer, metadata)
    return None


def _fused_batch_norm(graph: Graph, var: Op, metadata: dict[str, dict[str, str]]) -> str | None:
    """The module path of a batch norm the dynamo exporter fused into the layer op reading ``var``: the op
    is a Conv/Gemm/MatMul whose recorded FX node is the batch norm."""
    for consumer, _, _ in _uses(graph, var):
        props = metadata.get(consumer.meta.get("onnx_name", consumer.name)) or {}
        node = props.get("pkg.torch.onnx.fx_node", "")
        if consumer.type in ("Conv", "Gemm", "MatMul") and "batch_norm" in node.split("(", 1)[0]:
            return module_path(consumer, metadata)
    return None


def recover_names(model: onnx.ModelProto, graph: Graph) -> dict[str, list[str]]:
    """Record the source parameter of every variable a torch exporter renamed or shared (see the module
    docstring); returns ``graph.meta["weight_sources"]``. Models that another producer than PyTorch wrote
    (``producer_name``) are left as they are."""
    if model.producer_name != "pytorch":
        return dict(graph.meta.get(SOURCES_KEY, {}))
    metadata = {n.name: {p.key: p.value for p in n.metadata_props} for n in model.graph.node
                if n.metadata_props}
    sources: dict[str, list[str]] = dict(graph.meta.get(SOURCES_KEY, {}))
    folded: dict[str, str] = dict(graph.meta.get(FOLDED_KEY, {}))
    fused_into: dict[str, list[str]] = {}
    for var in list(graph.variables()):
        if not var.attrs.get("dtype", "").startswith(("float", "bfloat")):
            continue
        init = var.meta.get("onnx_name", var.name)
        groups: dict[str, tuple[str, list[tuple[Op, int]]]] = {}
        conv = _legacy_fused_conv(graph, var, init, metadata)
        if conv is not None:  # the TorchScript exporter's eval-mode Conv + BatchNormalization fusion
            folded[init] = (f"{conv}.weight or bias with the batch norm after it folded in by the exporter "
                            "(export with do_constant_folding=False to keep it)")
            folded.setdefault(f"{conv}.weight", f"folded with the batch norm after it into {init!r} by the exporter")
            continue
        fused = _fused_batch_norm(graph, var, metadata)
        if fused is not None:  # the exporter multiplied a batch norm into this conv / linear weight
            folded[init] = f"batch norm {fused!r} folded into it by the exporter"
            fused_into.setdefault(fused, []).append(init)
            continue
        for consumer, slot, flipped in _uses(graph, var):
            path = module_path(consumer, metadata)
            param = _slot_param(graph, consumer, slot, len(var.attrs["shape"]))
            if path is None or param is None:
                continue
            attr, layout = param
            if flipped:
                layout = "same" if layout == "transpose" else "transpose"
            name = f"{path}.{attr}" if path else attr
            if name == init:
                layout = "same"  # the exporter kept the parameter as it is
            groups.setdefault(name, (layout, []))[1].append((consumer, slot))
        if not groups:
            if is_artefact(init) and var.attrs.get("trainable"):
                readers = ", ".join(sorted({f"{c.type} {c.meta.get('onnx_name', c.name)!r}"
                                            for c, _, _ in _uses(graph, var)})[:3])
                folded[init] = f"folded with constants by the exporter (read by {readers or 'nothing'})"
            continue
        ordered = sorted(groups, key=lambda n: (n != init, n))  # the initializer's own name keeps the variable
        for i, name in enumerate(ordered):
            layout, reads = groups[name]
            target = var.name if i == 0 else _split(graph, var, name, reads)
            if name != target or layout != "same":
                sources[name] = [target, layout]
                if name not in graph.nx:
                    graph.aliases[name] = tensor_name(target, 0)
    for bn, inits in fused_into.items():
        for attr in _BN_SLOTS.values():
            folded[f"{bn}.{attr}"] = f"folded into {' and '.join(repr(i) for i in inits)} by the exporter"
    if sources:
        graph.meta[SOURCES_KEY] = sources
    if folded:
        graph.meta[FOLDED_KEY] = folded
    return sources


def _split(graph: Graph, var: Op, name: str, reads: list[tuple[Op, int]]) -> str:
    """A copy of ``var`` named ``name`` (made free) that the ``reads`` use instead of ``var``."""
    new_name, k = name, 1
    while new_name in graph.nx:
        new_name, k = f"{name}_{k}", k + 1
    value: Any = graph.values[var.name]
    copy = graph.variable(new_name, value=value.detach().clone(), trainable=var.attrs["trainable"], scoped=False)
    copy.op.meta["split_from"] = var.meta.get("onnx_name", var.name)
    for consumer, slot in reads:
        ref = consumer.inputs[slot]
        if ref is not None and split_tensor_name(ref)[0] == var.name:
            graph.set_input(consumer.name, slot, copy.name)
    return new_name
