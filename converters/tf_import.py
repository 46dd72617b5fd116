"""Import a TensorFlow 1 meta graph (``.meta``) with its checkpoint, without TensorFlow.

``load_tf("my_model_final.ckpt.meta")`` (or the checkpoint prefix, or its ``.index``) returns a
``Graph`` whose op and tensor names are TF's: ``graph.get_tensor("dnn/hidden4/Relu:0")`` works on a
model trained in TF1, variables keep their checkpoint names (``hidden1/kernel``, while the ops live
under ``dnn/``) and their TF layouts (dense kernels ``[in, out]``, conv kernels ``HWIO``), and their
values are bound bit-identically from the checkpoint next to the ``.meta``.

What is imported: the inference graph, i.e. every op the graph's outputs need (by default the
tensors nothing else consumes apart from training machinery: the logits, loss and accuracy of the
book's DNN; or ``outputs=[...]``). Dropped: gradients, optimizer updates (``Apply*``, ``Assign*``),
savers, initializers, and optimizer slots (listed in ``graph.meta["tf_import"]``). Variable reads
(``hidden1/kernel/read``), ``ReadVariableOp`` and the ``Switch``/``Merge`` of a ``training`` placeholder are
folded: the inference branch is taken (``training=True`` takes the training branch), and their TF
tensor names stay reachable through ``graph.aliases``.

Batch norm: ``tf.layers.batch_normalization`` (unfused: ``moments`` + ``cond`` + ``batchnorm/*``, or
``FusedBatchNorm*``) becomes one ``BatchNormalization`` op named after the TF op whose output the next
layer reads (``dnn/batch_normalization/batchnorm/add_1``), with TF's ``gamma/beta/moving_mean/
moving_variance`` variables, ``epsilon`` from the graph and ``momentum`` from the layer's
``AssignMovingAvg/decay`` (``1 - decay``; 0.99 when absent). In ``model.eval()`` it computes exactly
what TF's ``training=False`` branch computes. In ``model.train()`` it normalizes with batch
statistics and updates the moving averages in place, as TF's UPDATE_OPS did (``momentum * moving +
(1 - momentum) * batch``); the variance it folds in is the unbiased one, as TF's fused kernel does
(TF's unfused kernel used the biased one, a relative difference of 1/(batch-1)).

Control flow: a ``tf.while_loop`` frame (``dynamic_rnn`` included) becomes one ONNX ``Loop`` and a
``tf.cond`` on data one ``If`` per ``Merge``, with TF's names inside their bodies (``graphdnn.converters.tf_control``).
Shapes graphdnn cannot infer (``Fill`` of a dynamic shape, ``Where``) come from TF's ``_output_shapes``.

Unsupported ops are listed, all at once, in one ``UnknownOpError``.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch
from graphdnn.converters import tf_control as control_flow
from graphdnn.converters.tf_checkpoint import TFCheckpointReader, is_optimizer_slot, resolve_checkpoint_prefix
from graphdnn.converters.tf_ops import TRANSLATORS, f32
from graphdnn.converters.tf_proto import MetaGraph, TFNode, TFShape, TFVariableDef, parse_tensor_name, read_meta_graph

from graphdnn import budget
from graphdnn.dtypes import onnx_to_name
from graphdnn.errors import FileFormatError, GraphDNNError, GraphError, UnknownOpError, reading_file
from graphdnn.graph import Graph, ValueInfo
from graphdnn.names import split_tensor_name

__all__ = ["HANDLED_OPS", "TFImport", "import_meta_graph", "load_tf", "load_tf_with_report"]

_VARIABLE_OPS = {"VariableV2", "Variable", "VarHandleOp"}
_TRAINING_ONLY_PREFIXES = ("Apply", "ResourceApply", "Assign", "ResourceSparseApply", "SparseApply")
_TRAINING_ONLY = {
    "NoOp", "SaveV2", "RestoreV2", "Save", "Restore", "SaveSlices", "RestoreSlice", "MergeV2Checkpoints",
    "ShardedFilename", "StringJoin", "VarIsInitializedOp", "IsVariableInitialized", "RandomUniform",
    "RandomStandardNormal", "TruncatedNormal", "RandomUniformInt", "Assert", "Print", "PrintV2",
    "DestroyResourceOp", "ScatterAdd", "ScatterSub", "ScatterUpdate",
}
_TRAINING_SCOPES = re.compile(r"(?:^|/)gradients(?:_\d+)?/|^save(?:_\d+)?/")
_NOT_OUTPUTS = {"Const", "Shape", "Size", "Rank", "Placeholder", "PlaceholderWithDefault"}
_SKIP_COLLECTIONS = {"variables", "trainable_variables", "train_op", "cond_context", "while_context",
                     "update_ops", "savers", "summaries", "local_variables", "global_step", "model_variables",
                     "moving_average_variables"}
_DEAD = "<dead>"
_MERGES, _NEXT_ITERATIONS = control_flow.MERGES, control_flow.NEXT_ITERATIONS
_COMPARISONS = {"Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or", "Xor", "IsNaN",
                "IsInf"}
#: Ops read by the importer itself rather than by a translator in ``tf_ops``.
HANDLED_OPS = ("Const", "Placeholder", "PlaceholderWithDefault", "VariableV2", "Variable", "VarHandleOp",
               "ReadVariableOp", "Switch", "RefSwitch", "Merge", "RefMerge", "Enter", "Exit", "NextIteration",
               "LoopCond", "TensorArrayV3")


def _canon(ref: str) -> str:
    op, index = parse_tensor_name(ref)
    return f"{op}:{index}"


def _str(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass
class TFImport:
    """State of one import: the TF graph, the resolution of pass-through ops, the target graph."""

    meta: MetaGraph
    source: str
    training: bool
    nodes: dict[str, TFNode] = field(default_factory=dict)
    alias: dict[str, str] = field(default_factory=dict)  # TF tensor -> TF tensor (or _DEAD)
    dead_nodes: set[str] = field(default_factory=set)
    deps: dict[str, list[str]] = field(default_factory=dict)  # node -> resolved TF input tensors
    special: dict[str, dict[str, Any]] = field(default_factory=dict)  # matched patterns (batch norm)
    problems: dict[str, str] = field(default_factory=dict)  # node -> why it cannot be imported
    graph: Graph = field(default_factory=Graph)
    refs: dict[str, str] = field(default_factory=dict)  # TF tensor -> graph tensor
    layouts: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)  # the TF tensors imported as the model's outputs
    flow: control_flow.Flow = field(default_factory=control_flow.Flow)  # while-loop frames, cond branches
    region_deps: dict[str, list[str]] = field(default_factory=dict)  # body node -> its TF inputs
    order_cache: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ resolution
    def res(self, ref: str) -> str:
        ref = _canon(ref)
        seen = 0
        while ref in self.alias and seen < 10000:
            ref, seen = self.alias[ref], seen + 1
        return ref

    def is_dead(self, ref: str) -> bool:
        return ref == _DEAD or split_tensor_name(ref)[0] in self.dead_nodes

    def order(self) -> list[str]:
        g = nx.DiGraph()
        g.add_nodes_from(self.nodes)
        for node in self.nodes.values():
            for ref in node.inputs + node.control_inputs:
                src = parse_tensor_name(ref)[0]
                if src not in self.nodes:
                    raise FileFormatError(f"{self.source}: op {node.name!r} reads {ref!r}, which is not in the graph")
                if node.op in _MERGES and self.nodes[src].op in _NEXT_ITERATIONS:
                    continue  # a while loop's back edge: the loop becomes one Loop op
                g.add_edge(src, node.name)
        position = {name: i for i, name in enumerate(self.nodes)}
        try:
            order = list(nx.lexicographical_topological_sort(g, key=position.__getitem__))
        except nx.NetworkXUnfeasible:
            raise UnknownOpError(f"{self.source}: the graph has a cycle that is not a tf.while_loop frame "
                                 "(Enter/Merge/NextIteration); graphdnn cannot import it") from None
        self.order_cache = order
        control_flow.assign_frames(self, order)
        return order

    def predicate(self, ref: str) -> bool | None:
        """The static value of a Switch predicate: the training flag or a boolean constant."""
        node = self.nodes[split_tensor_name(ref)[0]]
        if node.op == "Const":
            return bool(np.asarray(node.attrs.get("value")).reshape(-1)[0])
        if node.op in ("PlaceholderWithDefault", "Placeholder") and _str(node.attrs.get("dtype")) == "bool":
            return self.training
        return None

    def resolve(self) -> list[str]:
        order = self.order()
        for name in order:
            node = self.nodes[name]
            if control_flow.in_region(self, name):  # translated inside a Loop's or an If's body
                continue
            ins = [self.res(r) for r in node.inputs]
            if any(self.is_dead(parse_tensor_name(c)[0] + ":0") for c in node.control_inputs):
                self.dead_nodes.add(name)
                continue
            if node.op in ("Switch", "RefSwitch"):
                pred = self.predicate(ins[1]) if not self.is_dead(ins[1]) else None
                if self.is_dead(ins[0]) or self.is_dead(ins[1]):
                    self.dead_nodes.add(name)
                elif pred is None:
                    self.problems[name] = "Switch on a predicate that is not a training flag or a constant"
                else:
                    self.alias[f"{name}:{int(pred)}"] = ins[0]
                    self.alias[f"{name}:{1 - int(pred)}"] = _DEAD
            elif node.op in ("Merge", "RefMerge"):
                live = [r for r in ins if not self.is_dead(r)]
                if not live:
                    self.dead_nodes.add(name)
                elif len(live) == 1:
                    self.alias[f"{name}:0"] = live[0]
                else:
                    self.problems[name] = "Merge of more than one live branch"
            elif node.op in ("Identity", "ReadVariableOp", "Enter", "Exit") and len(ins) == 1:
                if self.is_dead(ins[0]):
                    self.dead_nodes.add(name)
                elif node.op != "Identity" or self._foldable(ins[0]):
                    self.alias[f"{name}:0"] = ins[0]
                else:
                    self.deps[name] = ins
            elif any(self.is_dead(r) for r in ins):
                self.dead_nodes.add(name)
            else:
                self.deps[name] = ins
        control_flow.analyse_loops(self)
        control_flow.analyse_conds(self)
        return order

    def resolve_checked(self) -> list[str]:
        """``resolve``, with a malformed graph (a Switch without a predicate, a Merge of one input...) reported
        as a ``FileFormatError`` naming the file."""
        try:
            return self.resolve()
        except GraphDNNError:
            raise
        except (IndexError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FileFormatError(f"{self.source}: the graph's control flow is malformed "
                                  f"({type(exc).__name__}: {exc})") from None

    def dropout_mask(self, name: str) -> bool:
        """Whether RandomUniform ``name`` only feeds ``GreaterEqual`` comparisons (``tf.nn.dropout``'s keep mask)."""
        if not hasattr(self, "_consumers"):
            self._consumers: dict[str, list[TFNode]] = {}
            for node in self.nodes.values():
                for ref in node.inputs:
                    self._consumers.setdefault(parse_tensor_name(ref)[0], []).append(node)
        users = self._consumers.get(name, [])
        return bool(users) and all(u.op == "GreaterEqual" and parse_tensor_name(u.inputs[0])[0] == name
                                   for u in users)

    def _foldable(self, ref: str) -> bool:
        node = self.nodes[split_tensor_name(ref)[0]]
        return node.op in _VARIABLE_OPS or node.op == "Const" or self.predicate(ref) is not None

    # ------------------------------------------------------------------ selection
    def training_only(self, name: str) -> bool:
        op = self.nodes[name].op
        if op == "RandomUniform" and self.dropout_mask(name):
            return False
        return (op in _TRAINING_ONLY or op.startswith(_TRAINING_ONLY_PREFIXES) or op.endswith("Grad")
                or op.endswith("GradV2") or _TRAINING_SCOPES.search(name) is not None)

    def select(self, order: list[str], outputs: list[str] | None) -> list[str]:
        """The TF nodes to translate, in order, for ``outputs`` (default: the model's terminal tensors)."""
        dropped: set[str] = set()
        for name in order:
            if name in self.deps and (self.training_only(name) or any(
                    split_tensor_name(r)[0] in dropped for r in self.deps[name])):
                dropped.add(name)
        if outputs is None:
            outputs = self._default_outputs(order, dropped)
        self.outputs = list(outputs)
        needed: set[str] = set()
        stack = [split_tensor_name(self.res(r))[0] for r in outputs]
        while stack:
            name = stack.pop()
            if name in needed:
                continue
            needed.add(name)
            stack += [split_tensor_name(r)[0] for r in self.deps.get(name, [])]
        bad = {n: self.problems.get(n) or self._unsupported(n) for n in needed}
        bad = {n: why for n, why in bad.items() if why}
        if bad:
            listed = "; ".join(f"{n} ({self.nodes[n].op}{': ' + why if why != 'unsupported' else ''})"
                               for n, why in sorted(bad.items()))
            raise UnknownOpError(f"{self.source}: cannot import {len(bad)} op(s) the outputs need: {listed}. "
                                 "Import a part of the graph with outputs=[...] (tensor names), or rebuild the "
                                 "missing layers with graphdnn.layers")
        return [n for n in order if n in needed]

    def _unsupported(self, name: str) -> str:
        node = self.nodes[name]
        if name in self.special or node.op in _VARIABLE_OPS or node.op in ("Placeholder", "PlaceholderWithDefault",
                                                                             "TensorArrayV3"):
            return ""
        if node.op == "Const":
            return "" if np.asarray(node.attrs.get("value")).dtype != object else "string constant"
        if node.op == "RandomUniform" and self.dropout_mask(name):
            return ""
        if self.training_only(name):
            return "training-only op"
        return "" if node.op in TRANSLATORS else "unsupported"

    def _default_outputs(self, order: list[str], dropped: set[str]) -> list[str]:
        consumers: dict[str, list[str]] = {}
        for node in self.nodes.values():
            for ref in node.inputs:
                consumers.setdefault(parse_tensor_name(ref)[0], []).append(node.name)
        outs = []
        for name in order:
            node = self.nodes[name]
            if (name not in self.deps or name in dropped or node.op in _NOT_OUTPUTS or node.op in _VARIABLE_OPS
                    or node.op in control_flow.EXITS):
                continue
            users = consumers.get(name, [])
            updates = any(self.nodes[c].op.startswith(_TRAINING_ONLY_PREFIXES) for c in users)
            if not updates and all(self.training_only(c) for c in users) and self._reads_placeholder(name):
                outs.append(f"{name}:0")
        return outs

    def _reads_placeholder(self, name: str) -> bool:
        stack, seen = [name], set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if self.nodes[n].op in ("Placeholder", "PlaceholderWithDefault"):
                return True
            stack += [split_tensor_name(r)[0] for r in self.deps.get(n, [])]
        return False

    # ------------------------------------------------------------------ batch-norm patterns
    def _find_variable(self, ref: str, depth: int = 0) -> str | None:
        node = self.nodes.get(split_tensor_name(_canon(ref))[0])
        if node is None or depth > 16:
            return None
        if node.op in _VARIABLE_OPS:
            return f"{node.name}:0"
        if node.op in ("Identity", "ReadVariableOp", "Switch", "RefSwitch") and node.inputs:
            return self._find_variable(node.inputs[0], depth + 1)
        if node.op in ("Merge", "RefMerge"):
            for r in node.inputs:
                found = self._find_variable(r, depth + 1)
                if found:
                    return found
        return None

    def _node(self, ref: str, *ops: str) -> TFNode | None:
        node = self.nodes.get(parse_tensor_name(ref)[0])
        return node if node is not None and node.op in ops else None

    def match_batch_norms(self) -> None:
        """Collapse each unfused TF batch norm (``.../batchnorm/add_1``) into one special node."""
        for name in list(self.deps):
            if not name.endswith("/batchnorm/add_1") or self.nodes[name].op not in ("Add", "AddV2"):
                continue
            found = self._match_bn(self.nodes[name])
            if found:
                self.special[name] = found
                self.deps[name] = [r for r in found["inputs"] if r is not None]

    def _match_bn(self, add_1: TFNode) -> dict[str, Any] | None:
        mul_1 = self._node(add_1.inputs[0], "Mul")
        shift = self._node(add_1.inputs[1], "Sub", "Neg")
        if mul_1 is None or shift is None:
            return None
        mul = self._node(mul_1.inputs[1], "Mul", "Rsqrt")
        if mul is None:
            return None
        rsqrt, gamma = (mul, None) if mul.op == "Rsqrt" else (self._node(mul.inputs[0], "Rsqrt"), mul.inputs[1])
        add = self._node(rsqrt.inputs[0], "Add", "AddV2") if rsqrt is not None else None
        eps = self._node(add.inputs[1], "Const") if add is not None else None
        beta, mul_2 = ((shift.inputs[0], self._node(shift.inputs[1], "Mul")) if shift.op == "Sub"
                       else (None, self._node(shift.inputs[0], "Mul")))
        if add is None or eps is None or mul_2 is None:
            return None
        mean, var = self._find_variable(mul_2.inputs[0]), self._find_variable(add.inputs[0])
        if mean is None or var is None:
            return None
        inputs = [self.res(mul_1.inputs[0]), gamma and self.res(gamma), beta and self.res(beta), mean, var]
        return {"inputs": inputs, "epsilon": f32(np.asarray(eps.attrs["value"]).reshape(-1)[0]),
                "momentum": self.momentum_for(add_1.name)}

    def momentum_for(self, name: str) -> float:
        """``1 - decay`` of the closest enclosing scope's ``AssignMovingAvg/decay`` constant, else 0.99."""
        if not hasattr(self, "_decays"):
            self._decays: dict[str, float] = {}
            for node in self.nodes.values():
                if node.op == "Const" and node.name.endswith("AssignMovingAvg/decay"):
                    parts = node.name.split("/")
                    for i in range(1, len(parts)):
                        self._decays.setdefault("/".join(parts[:i]), float(np.asarray(node.attrs["value"])))
        parts = name.split("/")
        for i in range(len(parts) - 1, 0, -1):
            decay = self._decays.get("/".join(parts[:i]))
            if decay is not None:
                return round(1.0 - decay, 6)
        return 0.99


def _fold(graph: Graph, ref: str, depth: int = 0) -> torch.Tensor | None:
    """The value of ``ref`` when it depends on constants only (``concat([1, 0], range(2, rank))``), else None."""
    from graphdnn.ops.registry import lookup
    from graphdnn.shapes import constant_value
    from graphdnn.subgraphs import has_subgraphs

    op_name, index = split_tensor_name(ref)
    op = graph.get_operation(op_name)
    value = constant_value(graph, ref)
    if value is not None or depth > 32 or not op.inputs or op.is_variable or has_subgraphs(op):
        return value
    args = []
    for r in op.inputs:
        v = None if r is None else _fold(graph, r, depth + 1)
        if r is not None and v is None:
            return None
        args.append(v)
    opdef = lookup(op.type, op.domain, graph.opset.get(op.domain))
    for k in opdef.static_inputs:
        if k < len(args) and args[k] is not None:
            args[k] = args[k].tolist()
    kwargs = dict(op.attrs)
    if opdef.num_outputs is None:
        kwargs["_outputs"] = len(op.outputs)
    if sum(a.numel() for a in args if isinstance(a, torch.Tensor)) > 4096:
        return None
    try:
        with torch.no_grad():
            result = opdef.lower(*args, **kwargs)
    except Exception:  # noqa: BLE001 - not foldable here; the op runs at run time instead
        return None
    results = result if isinstance(result, tuple) else (result,)
    return results[index] if index < len(results) and isinstance(results[index], torch.Tensor) else None


class Node:
    """What a translator sees: one TF node, its resolved inputs and the graph being built."""

    def __init__(self, imp: TFImport, node: TFNode) -> None:
        self.imp, self.tf = imp, node
        self.name, self.op, self.inputs = node.name, node.op, node.inputs
        self.graph = imp.graph
        self.opset = imp.graph.opset.get("", 17)

    def attr(self, key: str, default: Any = None) -> Any:
        value = self.tf.attrs.get(key, default)
        return _str(value) if isinstance(value, bytes) else value

    def tf_dtype(self, key: str, default: str = "float32") -> str:
        value = self.tf.attrs.get(key)
        return str(value.base_dtype) if value is not None else default

    def _dep(self, i: int) -> str:
        deps = self.imp.region_deps.get(self.tf.name) or self.imp.deps[self.tf.name]
        if i >= len(deps):
            raise FileFormatError(f"{self.imp.source}: TF op {self.name!r} ({self.op}) has {len(deps)} input(s); "
                                  f"input {i} is missing (a corrupted meta graph)")
        return deps[i]

    def x(self, i: int) -> str:
        return self.imp.tensor(self._dep(i))

    def producer(self, i: int) -> TFNode:
        """The TF node that computes input ``i``."""
        return self.imp.nodes[split_tensor_name(self._dep(i))[0]]

    def input_of(self, node: TFNode, j: int) -> str:
        """The graph tensor of input ``j`` of another TF node (one this op reads through, such as the shape of a
        ``RandomUniform`` it replaces)."""
        ref = _canon(node.inputs[j])
        return self.imp.tensor(ref if node.name in self.imp.region_deps or self.imp.flow.frame_of.get(node.name)
                               or node.name in self.imp.flow.side else self.imp.res(ref))

    def static_ints(self, i: int, required: bool = True) -> list[int] | None:
        ref = self._dep(i)
        node = self.imp.nodes[split_tensor_name(ref)[0]]
        if node.op == "Const":
            return [int(v) for v in np.asarray(node.attrs["value"]).reshape(-1)]
        folded = _fold(self.graph, self.x(i)) if node.op not in ("Placeholder", "PlaceholderWithDefault") else None
        if folded is not None:
            return [int(v) for v in folded.reshape(-1).tolist()]
        if required:
            raise GraphError(f"TF op {self.name!r} ({self.op}): input {i} must be a constant, it is {ref!r}")
        return None

    def add(self, op_type: str, inputs: list[str | None], attrs: dict[str, Any] | None = None,
            name: str | None = None, domain: str = "") -> str:
        return self.graph.add_op(op_type, inputs, attrs, name or self.name, domain=domain, scoped=False).out().name

    def sub(self, suffix: str) -> str:
        return f"{self.name}/_{suffix}"

    def const(self, value: Any, suffix: str, dtype: str | None = None) -> str:
        return self.graph.constant(value, name=self.sub(suffix), dtype=dtype).name

    def ints(self, values: list[int], suffix: str) -> str:
        return self.const(list(values), suffix, "int64")

    def shape(self, ref: str) -> tuple[int | None, ...]:
        shape = self.graph.get_tensor(ref).shape
        if shape is None:
            raise GraphError(f"TF op {self.name!r} ({self.op}): the rank of {ref!r} is unknown")
        return shape

    def rank(self, ref: str) -> int:
        return len(self.shape(ref))

    def dtype(self, ref: str) -> str | None:
        return self.graph.get_tensor(ref).dtype

    def momentum(self) -> float:
        return self.imp.momentum_for(self.name)


# ----------------------------------------------------------------------------------------- building
class _Builder:
    """Translates the selected TF nodes into ``imp.graph``, binding variables from ``reader``."""

    def __init__(self, imp: TFImport, reader: TFCheckpointReader | None) -> None:
        self.imp, self.reader, self.graph = imp, reader, imp.graph
        self.trainable = {v.name for v in imp.meta.variables(trainable_only=True) if isinstance(v, TFVariableDef)}
        self.unbound: list[str] = []

    def tensor(self, ref: str) -> str:
        """The graph tensor of TF tensor ``ref`` (resolved), creating leaves (constants, variables,
        placeholders) on first use."""
        imp = self.imp
        if ref in imp.refs:
            return imp.refs[ref]
        op_name, index = split_tensor_name(ref)
        node = imp.nodes[op_name]
        if node.op == "Const":
            imp.refs[ref] = self._const(node)
        elif node.op in _VARIABLE_OPS:
            imp.refs[ref] = self._variable(node)
        elif node.op == "PlaceholderWithDefault" and self._default(node) is not None:
            # a tensor with a default (``keep_prob``): its default, which compile(inputs=[...]) can still feed
            imp.refs[ref] = self.graph.constant(self._default(node), name=node.name).name
        elif node.op in ("Placeholder", "PlaceholderWithDefault"):
            shape = node.attrs.get("shape")
            dims = shape.dims if isinstance(shape, TFShape) else None
            imp.refs[ref] = self.graph.placeholder(node.name, dims, str(node.attrs["dtype"].base_dtype)).name
        else:
            produced = sorted(r for r in imp.refs if r.startswith(op_name + ":"))
            raise GraphError(f"TF tensor {ref!r} is not importable (output {index} of {node.op} {op_name!r} is "
                             f"training-only; importable outputs: {produced})")
        return imp.refs[ref]

    def _default(self, node: TFNode) -> np.ndarray | None:
        source = self.imp.nodes.get(parse_tensor_name(node.inputs[0])[0]) if node.inputs else None
        if source is None or source.op != "Const":
            return None
        value = np.asarray(source.attrs["value"])
        return value if value.dtype != object and value.size <= 4096 else None

    def _const(self, node: TFNode) -> str:
        value = np.asarray(node.attrs["value"])
        budget.charge(value.nbytes, f"{self.imp.source}: Const {node.name!r} of shape {list(value.shape)}")
        if value.size > 4096:
            return self.graph.variable(node.name, value=torch.from_numpy(value.copy()), trainable=False,
                                       scoped=False).name
        return self.graph.constant(value, name=node.name).name

    def _variable(self, node: TFNode) -> str:
        name = node.name
        shape = node.attrs.get("shape")
        dims = tuple(shape.dims) if isinstance(shape, TFShape) and shape.dims is not None else None
        dtype = str(node.attrs["dtype"].base_dtype)
        value = None
        if self.reader is not None and name in self.reader:
            value = self.reader.read(name)
            if dims is not None and tuple(value.shape) != dims:
                raise FileFormatError(f"{self.reader.prefix}: tensor {name!r} has shape {list(value.shape)}, but the "
                                      f"meta graph declares {list(dims)}; the checkpoint belongs to another model")
            value = torch.from_numpy(np.array(value, order="C", copy=True))
        elif dims is None or None in dims:
            raise FileFormatError(f"{self.imp.source}: variable {name!r} has no value in the checkpoint and no "
                                  "static shape")
        else:
            self.unbound.append(name)
            budget.charge_tensor(dims, 4, f"{self.imp.source}: variable {name!r} (zeros, not in a checkpoint)")
            value = torch.zeros(dims)
        return self.graph.variable(name, value=value, dtype=dtype, trainable=name in self.trainable,
                                   layout=self.imp.layouts.get(name), scoped=False).name

    def build(self, selected: list[str]) -> None:
        imp = self.imp
        imp.tensor = self.tensor  # type: ignore[attr-defined]  # Node.x reads through it
        for name in selected:
            node = imp.nodes[name]
            if node.op in ("Const", "Placeholder", "PlaceholderWithDefault") or node.op in _VARIABLE_OPS:
                continue
            if node.op in ("TensorArrayV3", "RandomUniform"):  # read by the translators of their consumers
                continue
            spec = imp.special.get(name)
            try:
                if spec is not None and "loop" in spec:
                    outs = [control_flow.build_loop(self, spec["loop"])[spec["variable"]]]
                elif spec is not None and "if" in spec:
                    outs = [control_flow.build_if(self, name, spec)]
                elif spec is not None:
                    outs = [self._batch_norm(name, spec)]
                else:
                    outs = TRANSLATORS[node.op](Node(imp, node))
            except GraphDNNError:
                raise
            except (IndexError, KeyError, TypeError, ValueError, AttributeError) as exc:
                raise FileFormatError(f"{imp.source}: TF op {name!r} ({node.op}) is malformed "
                                      f"({type(exc).__name__}: {exc})") from None
            for i, ref in enumerate(outs):
                imp.refs[f"{name}:{i}"] = ref
                self._declared_shape(node, i, ref)
                if ref != f"{name}:{i}":  # an output made by a helper op stays reachable by its TF name
                    self.graph.aliases[f"{name}:{i}"] = ref

    def _declared_shape(self, node: TFNode, index: int, ref: str, graph: Graph | None = None) -> None:
        """Where graphdnn cannot infer a shape (``Fill``, ``Where``, dynamic ranges), take TF's own
        ``_output_shapes`` for it, so that the layers after it know their ranks."""
        op_name, i = split_tensor_name(ref)
        g = graph or self.graph
        op = g.get_operation(op_name)
        info = op.outputs[i]
        declared = node.attrs.get("_output_shapes")
        shape = info.shape
        if shape is None and isinstance(declared, list) and index < len(declared):
            dims = declared[index].dims if isinstance(declared[index], TFShape) else None
            shape = None if dims is None else tuple(dims)
        dtype = info.dtype
        if dtype is None and not op.domain:
            if op.type in ("NonZero", "Shape", "Size", "ArgMax", "ArgMin"):
                dtype = "int64"
            elif op.type == "Cast" and "to" in op.attrs:
                dtype = onnx_to_name(int(op.attrs["to"]))
            elif op.type in _COMPARISONS:
                dtype = "bool"
            elif op.inputs and op.inputs[0] is not None:  # the other ops keep their first input's dtype
                dtype = g.get_tensor(op.inputs[0]).dtype
        if (shape, dtype) != (info.shape, info.dtype):
            op.outputs[i] = ValueInfo(shape, dtype)

    def _batch_norm(self, name: str, spec: dict[str, Any]) -> str:
        x, gamma, beta, mean, var = (None if r is None else self.tensor(r) for r in spec["inputs"])
        g = self.graph
        channels = g.get_tensor(mean).shape[0]
        dt = g.get_tensor(x).dtype
        gamma = gamma or g.constant(np.ones(channels, np.float32), name=f"{name}/_gamma", dtype=dt).name
        beta = beta or g.constant(np.zeros(channels, np.float32), name=f"{name}/_beta", dtype=dt).name
        attrs = {"epsilon": spec["epsilon"], "momentum": spec["momentum"]}
        rank = len(g.get_tensor(x).shape or ())
        if rank <= 2:
            return g.add_op("BatchNormalization", [x, gamma, beta, mean, var], attrs, name, scoped=False).out().name
        nchw = g.add_op("Transpose", [x], {"perm": [0, rank - 1] + list(range(1, rank - 1))}, f"{name}/_to_nchw",
                        scoped=False).out()
        y = g.add_op("BatchNormalization", [nchw, gamma, beta, mean, var], attrs, f"{name}/_bn_nchw", scoped=False)
        back = [0] + list(range(2, rank)) + [1]
        return g.add_op("Transpose", [y.out()], {"perm": back}, name, scoped=False).out().name


def _detect_layouts(imp: TFImport) -> None:
    for name, deps in imp.deps.items():
        op = imp.nodes[name].op
        if len(deps) < 2:
            continue
        target = imp.nodes[split_tensor_name(deps[1])[0]]
        if target.op not in _VARIABLE_OPS:
            continue
        if op == "MatMul" and not imp.nodes[name].attrs.get("transpose_b"):
            imp.layouts.setdefault(target.name, "io")
        elif op == "Conv2D":
            imp.layouts.setdefault(target.name, "hwio")


def _aliases(imp: TFImport) -> None:
    graph = imp.graph
    for tf_ref in list(imp.alias):
        target = imp.res(tf_ref)
        if target == _DEAD or target not in imp.refs:
            continue
        ref = imp.refs[target]
        op_name, index = split_tensor_name(tf_ref)
        if op_name not in graph.nx:
            graph.aliases[tf_ref] = ref
            if index == 0:
                graph.aliases.setdefault(op_name, ref)


def _collections(imp: TFImport) -> list[str]:
    dropped = []
    for key, entries in imp.meta.collections.items():
        if key in _SKIP_COLLECTIONS or not all(isinstance(e, str) for e in entries):
            continue
        for entry in entries:
            ref = entry
            if ":" in entry:
                resolved = imp.res(entry)
                ref = imp.refs.get(resolved, "")
            if ref and ref in imp.graph:
                imp.graph.add_to_collection(key, ref)
            else:
                dropped.append(f"{key}: {entry}")
    return dropped


# ------------------------------------------------------------------------------------------ public
def _paths(path: str | os.PathLike, checkpoint: str | os.PathLike | None) -> tuple[str | None, str | None]:
    p = os.fspath(path)
    if p.endswith(".meta"):
        if not os.path.isfile(p):
            raise FileFormatError(f"{p}: no such meta graph file")
        prefix = p[: -len(".meta")]
        ckpt = checkpoint if checkpoint is not None else (prefix if os.path.isfile(prefix + ".index") else None)
        return p, None if ckpt is None else resolve_checkpoint_prefix(ckpt)
    prefix = resolve_checkpoint_prefix(checkpoint if checkpoint is not None else p)
    meta = prefix + ".meta"
    return (meta if os.path.isfile(meta) else None), prefix


def load_tf_with_report(path: str | os.PathLike, training: bool = False, *, checkpoint: str | os.PathLike | None = None,
                        outputs: list[str] | None = None, values: bool = True, max_bytes: int | None = None
                        ) -> tuple[Graph, Any]:
    """``load_tf`` plus the ``RestoreReport`` of binding the checkpoint (optimizer slots in ``skipped``)."""
    with budget.load_scope(path, max_bytes=max_bytes) as scope:
        graph, report = _load_tf_with_report(path, training, checkpoint, outputs, values, scope)
        budget.remember(graph, scope)
        return graph, report


def _load_tf_with_report(path: str | os.PathLike, training: bool, checkpoint: str | os.PathLike | None,
                         outputs: list[str] | None, values: bool, scope: budget.LoadBudget) -> tuple[Graph, Any]:
    from graphdnn.restoring import match_names

    meta_path, prefix = _paths(path, checkpoint)
    data = [prefix + ".index", *glob.glob(glob.escape(prefix) + ".data-*")] if prefix is not None else []
    scope.add_files(meta_path, *data)  # the meta graph's and the checkpoint's files count towards the budget
    reader = TFCheckpointReader(prefix) if prefix is not None and values else None
    if meta_path is None:
        graph = _variables_only(reader, prefix)
    else:
        graph = import_meta_graph(read_meta_graph(meta_path), reader, training=training, outputs=outputs,
                                  source=meta_path)
    return graph, _report(graph, reader, prefix, match_names)


def import_meta_graph(meta: MetaGraph, reader: TFCheckpointReader | None = None, *, training: bool = False,
                      outputs: list[str] | None = None, source: str | None = None) -> Graph:
    """Translate a decoded meta graph (``graphdnn.converters.tf_proto``), binding variables from ``reader``."""
    source = source or meta.source
    imp = TFImport(meta, source, training, {n.name: n for n in meta.nodes})
    imp.graph = Graph(Path(source).name.removesuffix(".meta") or "tf")
    order = imp.resolve_checked()
    imp.match_batch_norms()
    selected = imp.select(order, [_canon(o) for o in outputs] if outputs else None)
    _detect_layouts(imp)
    builder = _Builder(imp, reader)
    builder.build(selected)
    _aliases(imp)
    dropped = _collections(imp)
    imp.graph.meta["tf_import"] = {"meta_graph": source, "checkpoint": reader.prefix if reader else None,
                                   "tf_version": meta.tf_version, "training_branch": training,
                                   "unbound_variables": builder.unbound, "dropped_collection_entries": dropped}
    _declare_signature(imp)
    return imp.graph


def _declare_signature(imp: TFImport) -> None:
    """The imported outputs (in order) and the placeholders they need become the graph's signature."""
    from graphdnn.compiler import default_inputs

    outs = [imp.refs.get(imp.res(_canon(o))) for o in imp.outputs]
    if outs and all(outs):
        imp.graph.signature = {"inputs": default_inputs(imp.graph, outs), "outputs": outs}


def _variables_only(reader: TFCheckpointReader | None, prefix: str | None) -> Graph:
    """A checkpoint without a meta graph: its non-slot numeric tensors as variables."""
    from graphdnn.converters.named_tensors import read_named_tensors

    graph = Graph(Path(prefix or "tf").name)
    if reader is None:
        return graph
    src = read_named_tensors(prefix)
    for name, value in src.read(src.names()):
        graph.variable(name, value=value, trainable=value.is_floating_point(), scoped=False)
    graph.meta["tf_import"] = {"meta_graph": None, "checkpoint": prefix}
    return graph


def _report(graph: Graph, reader: TFCheckpointReader | None, prefix: str | None, match_names: Any) -> Any:
    names = reader.names() if reader is not None else []
    slots = sorted(n for n in names if is_optimizer_slot(n))
    source = {n: tuple(reader.shape(n)) for n in names if n not in slots} if reader is not None else {}
    target = {op.name: tuple(op.attrs["shape"]) for op in graph.variables()}
    report = match_names(target, source, label=prefix or "")
    report.skipped.extend(slots)
    info = graph.meta.setdefault("tf_import", {})
    info.update({"optimizer_slots": slots, "unused_checkpoint_tensors": sorted(report.unexpected),
                 "summary": report.summary()})
    return report


def load_tf(path: str | os.PathLike, training: bool = False, *, checkpoint: str | os.PathLike | None = None,
            outputs: list[str] | None = None, values: bool = True, max_bytes: int | None = None) -> Graph:
    """Import a TF1 meta graph (``.meta``, a checkpoint prefix or ``.index`` beside one) as a Graph with
    TF's names, its variables bound from the checkpoint (``checkpoint=`` overrides the one beside the
    ``.meta``; ``values=False`` leaves them at zero). ``training`` picks the branch of ``training``
    switches; ``outputs`` (TF tensor names) limits the import to what they need. A checkpoint
    without a ``.meta`` gives a graph of its (non-slot) variables only.

    What the files make graphdnn allocate is charged to a memory budget of 16 x their size + 256 MiB, or
    ``max_bytes``; going over raises ``ResourceLimitError`` (see ``graphdnn.budget``)."""
    with reading_file(path, "TensorFlow checkpoint"):
        return load_tf_with_report(path, training, checkpoint=checkpoint, outputs=outputs, values=values,
                                   max_bytes=max_bytes)[0]
