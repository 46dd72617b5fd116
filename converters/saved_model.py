"""Import a TensorFlow 2 SavedModel (``tf.saved_model.save``, Keras ``model.export``, tf_keras
``model.save(dir)``) without TensorFlow.

``load_saved_model("my_model/")`` reads ``saved_model.pb`` (a MetaGraphDef with its function library and
object graph) and ``variables/`` (a TF2 object-based checkpoint) and imports one signature
(``serving_default`` unless ``signature=`` names another) as a ``Graph``:

- the signature's function calls (``StatefulPartitionedCall``, ``PartitionedCall``, a library function
  used as an op) are inlined; their ops are scoped by the calling op's name (tf_keras' ``hidden1/
  StatefulPartitionedCall`` gives ``hidden1/MatMul``; the anonymous wrapper calls add no scope);
- the variables the signature captures get their TF names (``v.name`` without ``:0``, from the object
  graph) and their values from the checkpoint (found through the checkpoint's object graph); the object
  path (``encoder/dense/kernel``, ``variables/0``) is an alias; trainable flags come from the object graph;
- the placeholders are named after the signature's input keys; the graph's declared signature takes the
  inputs in sorted key order and returns the outputs in sorted key order; ``graph.get_tensor(key)`` finds
  an output by its key.

- ``While``/``StatelessWhile`` become ONNX ``Loop`` (the condition function computed on the initial values
  and, in the body, after each step) and ``If``/``StatelessIf`` become ``If``, their functions imported as
  nested body graphs (the op's inputs are the bodies' captured values); variables passed into a loop are
  carried as values; TensorLists (``tf.TensorArray`` in functions, Keras RNNs) become ONNX sequences.

The ops themselves, the functional control flow and TensorLists included, are translated by the TF
importers' one catalogue (``graphdnn.converters.tf_ops``; the control flow in
``graphdnn.converters.tf_control``, which builds
bodies through this importer's function library, ``_Inliner.subgraph``). What cannot
be imported (lookup tables, string ops, custom ops, resources other than variables, ops outside the
catalogue) is listed, all at once, in one ``UnknownOpError`` naming the function and op of each.
"""

from __future__ import annotations

import glob
import os
import re
from collections import deque
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
from graphdnn.converters.tf_checkpoint import TFCheckpointReader
from graphdnn.converters.tf_control import IF_OPS, WHILE_OPS
from graphdnn.converters.tf_import import import_meta_graph
from graphdnn.converters.tf_ops import TRANSLATORS
from graphdnn.converters.tf_proto import (
    MetaGraph,
    TFDType,
    TFFunction,
    TFGraph,
    TFNode,
    TFObjectGraph,
    TFShape,
    TFVariableDef,
    parse_tensor_name,
    parse_trackable_object_graph,
    read_saved_model,
)

from graphdnn import budget
from graphdnn.dtypes import is_container_type
from graphdnn.errors import FileFormatError, GraphDNNError, UnknownOpError, reading_file
from graphdnn.graph import Graph

__all__ = ["is_saved_model", "load_saved_model", "signature_names"]

_CALL_OPS = {"StatefulPartitionedCall", "PartitionedCall"}
_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
# output argument names of the multi-output ops in the catalogue (a function body names outputs by argument)
_OUTPUT_ARGS: dict[str, list[str]] = {
    **{op: ["y", "batch_mean", "batch_variance", "reserve_space_1", "reserve_space_2", "reserve_space_3"]
       for op in ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")},
    "SparseSoftmaxCrossEntropyWithLogits": ["loss", "backprop"],
    "SoftmaxCrossEntropyWithLogits": ["loss", "backprop"],
    "TopKV2": ["values", "indices"],
    "Unique": ["y", "idx"],
}
# ops the importer resolves itself (leaves and pass-throughs), beside the translators' catalogue
_HANDLED = {"Const", "Placeholder", "PlaceholderWithDefault", "VarHandleOp", "ReadVariableOp", "Identity"}


def is_saved_model(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a SavedModel folder (it holds ``saved_model.pb``) or its ``saved_model.pb``."""
    p = Path(path)
    return (p.is_dir() and (p / "saved_model.pb").is_file()) or (p.name == "saved_model.pb" and p.is_file())


def _folder(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.name == "saved_model.pb" and p.is_file():
        p = p.parent
    if not (p / "saved_model.pb").is_file():
        raise FileFormatError(f"{path}: not a SavedModel folder (no saved_model.pb in it)")
    return p


def _pick(metas: list[MetaGraph], signature: str, source: str) -> MetaGraph:
    for meta in metas:
        if signature in meta.signatures:
            return meta
    found = sorted({k for m in metas for k in m.signatures if not k.startswith("__")})
    raise FileFormatError(f"{source}: no signature {signature!r}; the SavedModel has {found}. "
                          "Pass signature='<name>'")


def signature_names(path: str | os.PathLike) -> list[str]:
    """The signatures a SavedModel serves (``serving_default``, ...), sorted."""
    folder = _folder(path)
    metas = read_saved_model(folder / "saved_model.pb")
    return sorted({k for m in metas for k in m.signatures if not k.startswith("__")})


# ------------------------------------------------------------------------------------ object graphs
def _paths(children: list[list[tuple[str, int]]]) -> dict[int, str]:
    """The shortest path (``encoder/dense/kernel``) from the root to each object, breadth first."""
    paths: dict[int, str] = {0: ""}
    queue = deque([0])
    while queue:
        node = queue.popleft()
        for local, child in children[node]:
            if child not in paths:
                paths[child] = f"{paths[node]}/{local}" if paths[node] else local
                queue.append(child)
    return paths


class _Variables:
    """The signature's variables: TF name, object path, trainable flag, checkpoint key."""

    def __init__(self, objects: TFObjectGraph | None, reader: TFCheckpointReader | None, source: str) -> None:
        self.objects, self.reader, self.source = objects, reader, source
        self.paths = _paths([o.children for o in objects.nodes]) if objects is not None else {}
        self.keys: dict[str, str] = {}  # object path -> checkpoint key of its value
        if reader is not None and _OBJECT_GRAPH_KEY in reader:
            raw = np.asarray(reader.read(_OBJECT_GRAPH_KEY)).reshape(-1)
            if raw.size != 1 or not isinstance(raw[0], bytes):
                raise FileFormatError(f"{reader.prefix}: {_OBJECT_GRAPH_KEY} is not one serialized object graph")
            trackables = parse_trackable_object_graph(raw[0], reader.prefix)
            for node_id, path in _paths([t.children for t in trackables]).items():
                key = trackables[node_id].attributes.get("VARIABLE_VALUE")
                if key:
                    self.keys[path] = key
        self.names: dict[int, str] = {}  # object id -> variable name in the graph
        self.by_name: dict[str, int] = {}

    def name_of(self, object_id: int) -> str:
        """The graph name of the variable object ``object_id`` (its TF name, made unique)."""
        if object_id in self.names:
            return self.names[object_id]
        var = self.objects.nodes[object_id].variable if self.objects is not None else None
        base = (var.name if var is not None and var.name else self.paths.get(object_id, f"variable_{object_id}"))
        name, i = base, 1
        while name in self.by_name:
            name, i = f"{base}_{i}", i + 1
        self.names[object_id], self.by_name[name] = name, object_id
        return name

    # the reader interface the TF1 builder uses: variables by graph name
    @property
    def prefix(self) -> str:
        return self.reader.prefix if self.reader is not None else self.source

    def _key(self, name: str) -> str | None:
        object_id = self.by_name.get(name)
        return None if object_id is None else self.keys.get(self.paths.get(object_id, ""))

    def __contains__(self, name: object) -> bool:
        key = self._key(str(name))
        return key is not None and self.reader is not None and key in self.reader

    def read(self, name: str) -> np.ndarray:
        key = self._key(name)
        assert key is not None and self.reader is not None
        return self.reader.read(key)


# ----------------------------------------------------------------------------------------- inlining
def _scope_of(call_name: str) -> str:
    """The scope a call op gives the function it calls: its name less the ``(Stateful)PartitionedCall``."""
    return re.sub(r"(?:^|/)(?:Stateful)?PartitionedCall(?:_\d+)?$", "", call_name)


class _Inliner:
    """Flattens the signature's call tree into one list of TF nodes with global names."""

    def __init__(self, meta: MetaGraph, variables: _Variables, source: str) -> None:
        self.meta, self.variables, self.source = meta, variables, source
        self.library: dict[str, TFFunction] = {f.name: f for f in meta.graph.functions}
        self.nodes: dict[str, TFNode] = {}
        self.origin: dict[str, str] = {}  # flat node -> the function (or "graph") it comes from
        self.scopes: set[str] = set()
        self.problems: list[str] = []

    def unique(self, name: str) -> str:
        base, i = name, 1
        while name in self.nodes:
            name, i = f"{base}_{i}", i + 1
        return name

    def emit(self, node: TFNode, origin: str) -> TFNode:
        self.nodes[node.name] = node
        self.origin[node.name] = origin
        return node

    def call_scope(self, parent: str, call_name: str) -> str:
        part = _scope_of(call_name)
        scope = f"{parent}/{part}" if parent and part else (parent or part)
        if scope in self.scopes and part:  # a second call with the same scope: keep the call's own name
            scope = f"{parent}/{call_name}" if parent else call_name
        base, i = scope, 1
        while scope in self.scopes and scope:
            scope, i = f"{base}_{i}", i + 1
        self.scopes.add(scope)
        return scope

    # -- one function body (or the top graph), its needed nodes in topological order
    def body(self, nodes: list[TFNode], args: dict[str, str], scope: str, fn: TFFunction | None,
             wanted: list[str]) -> dict[str, Any]:
        """Inline the nodes ``wanted`` needs; returns, per local node name, its flat name, or for an inlined
        call (or a pass-through) a function from output index to flat ref."""
        local = {n.name: n for n in nodes}
        label = fn.name if fn is not None else "graph"
        order = self._order(local, args, wanted, label)
        produced: dict[str, Any] = {}

        def ref(r: str) -> str:
            if fn is not None and ":" not in r and r in args:
                return args[r]
            if fn is None and r in args:
                return args[r]
            op_name, index = self.local_index(local, r, fn is not None, label)
            out = produced.get(op_name)
            if out is None:
                raise FileFormatError(f"{self.source}: {label}: {r!r} is not produced by any op")
            if callable(out):
                return out(index)
            return f"{out}:{index}"

        for name in order:
            node = local[name]
            ins = [ref(r) for r in node.inputs]
            callee = self._callee(node)
            if callee is not None:
                produced[name] = self.inline_call(node, callee, ins, scope, label)
                continue
            if node.op == "Identity" and str(node.attrs.get("T")) in ("variant", "resource") and ins:
                produced[name] = lambda index, ref=ins[0]: ref  # a TensorList or handle passed along
                continue
            flat_name = self.unique(f"{scope}/{name}" if scope else name)
            if fn is None and node.op in ("Placeholder", "VarHandleOp") and f"__rename__{name}" in args:
                flat_name = self.unique(args[f"__rename__{name}"])  # a signature key, a variable's TF name
            attrs = dict(node.attrs)
            if node.op in WHILE_OPS or node.op in IF_OPS:
                attrs["_functions"] = self
                attrs["_shapes"] = attrs.pop("_output_shapes", None)  # used for the outputs' ValueInfos
            if node.op in WHILE_OPS:  # the condition on the initial values, which ONNX Loop takes as input
                ins = ins + self.call_function(self.function(node, "cond"), ins, f"{flat_name}/cond")[:1]
            self.emit(TFNode(flat_name, node.op, ins, [], node.device, attrs), label)
            produced[name] = flat_name
        return produced

    def _order(self, local: dict[str, TFNode], args: dict[str, str], wanted: list[str], label: str) -> list[str]:
        g = nx.DiGraph()
        stack = [w for w in wanted if w in local]
        seen: set[str] = set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            g.add_node(name)
            for r in local[name].inputs:  # control inputs (side effects, NoOps) are not followed
                src = r.split(":")[0]
                if src in local and not (r in args and ":" not in r):
                    g.add_edge(src, name)
                    stack.append(src)
                elif src not in args and r not in args:
                    raise FileFormatError(f"{self.source}: {label}: op {name!r} reads {r!r}, which does not exist")
        try:
            return list(nx.lexicographical_topological_sort(g))
        except nx.NetworkXUnfeasible:
            raise FileFormatError(f"{self.source}: {label}: the function has a cycle") from None

    def local_index(self, local: dict[str, TFNode], r: str, in_function: bool, label: str) -> tuple[str, int]:
        if not in_function:
            return parse_tensor_name(r)
        parts = r.split(":")
        if len(parts) != 3 or not parts[2].isdigit() or parts[0] not in local:
            raise FileFormatError(f"{self.source}: {label}: malformed input reference {r!r}")
        node = local[parts[0]]
        callee = self._callee(node)
        if callee is not None and node.op not in _CALL_OPS:  # a library function used as an op
            names = callee.outputs
            if parts[1] not in names:
                raise FileFormatError(f"{self.source}: {label}: {r!r} names no output of {callee.name!r}")
            return parts[0], names.index(parts[1]) + int(parts[2])
        arg_names = _OUTPUT_ARGS.get(node.op)
        if arg_names and parts[1] in arg_names:
            return parts[0], arg_names.index(parts[1]) + int(parts[2])
        return parts[0], int(parts[2])

    def function(self, node: TFNode, attr: str) -> TFFunction:
        name = getattr(node.attrs.get(attr), "name", None)
        if name not in self.library:
            raise FileFormatError(f"{self.source}: op {node.name!r} ({node.op}) names function {name!r} as "
                                  f"{attr!r}, which the SavedModel's library does not define")
        return self.library[name]

    def resource_spec(self, ref: str) -> tuple[str, tuple[int | None, ...] | None] | None:
        """dtype and shape of the variable a resource ref points to (None when it is not a variable)."""
        node = self.nodes.get(parse_tensor_name(ref)[0])
        while node is not None and node.op == "Identity" and node.inputs:
            node = self.nodes.get(parse_tensor_name(node.inputs[0])[0])
        if node is None or node.op != "VarHandleOp":
            return None
        shape = node.attrs.get("shape")
        return str(node.attrs["dtype"].base_dtype), shape.dims if isinstance(shape, TFShape) else None

    def _callee(self, node: TFNode) -> TFFunction | None:
        if node.op in _CALL_OPS:
            f = node.attrs.get("f")
            name = getattr(f, "name", None)
            if name not in self.library:
                raise FileFormatError(f"{self.source}: op {node.name!r} calls function {name!r}, which the "
                                      "SavedModel's library does not define")
            return self.library[name]
        return self.library.get(node.op)

    def subgraph(self, label: str, specs: list[tuple[str, tuple[int | None, ...] | None]],
                 build: Any) -> tuple[Graph, list[str], list[str]]:
        """A control-flow body built from this library (see ``_body``)."""
        return _body(self, label, specs, build)

    def call_function(self, callee: TFFunction, ins: list[str], scope: str) -> list[str]:
        """Inline ``callee`` on the flat refs ``ins`` under ``scope``; its outputs' flat refs."""
        out = self.inline_call(TFNode(scope, "PartitionedCall"), callee, ins, "", callee.name)
        return [out(i) for i in range(len(callee.outputs))]

    def inline_call(self, node: TFNode, callee: TFFunction, ins: list[str], parent: str, label: str) -> Any:
        if len(ins) != len(callee.inputs):
            raise FileFormatError(f"{self.source}: {label}: op {node.name!r} passes {len(ins)} inputs to "
                                  f"{callee.name!r}, which takes {len(callee.inputs)}")
        scope = self.call_scope(parent, node.name)
        args = dict(zip(callee.inputs, ins))
        wanted = [callee.ret[o].split(":")[0] for o in callee.outputs if o in callee.ret]
        produced = self.body(callee.nodes, args, scope, callee, wanted)
        local = {n.name: n for n in callee.nodes}
        refs: list[str] = []
        for out in callee.outputs:
            r = callee.ret.get(out)
            if r is None:
                raise FileFormatError(f"{self.source}: function {callee.name!r} returns no value for {out!r}")
            if ":" not in r and r in args:
                refs.append(args[r])
                continue
            op_name, index = self.local_index(local, r, True, callee.name)
            out_ref = produced[op_name]
            refs.append(out_ref(index) if callable(out_ref) else f"{out_ref}:{index}")

        def output(index: int) -> str:
            if not 0 <= index < len(refs):
                raise FileFormatError(f"{self.source}: {label}: output {index} of {node.name!r} does not exist "
                                      f"({callee.name!r} returns {len(refs)})")
            return refs[index]

        return output


# ------------------------------------------------------------------------------------- control flow
def _body(functions: _Inliner, label: str, specs: list[tuple[str, tuple[int | None, ...] | None]],
          build: Any) -> tuple[Graph, list[str], list[str]]:
    """A control-flow body: placeholders ``specs`` (dtype, shape), the flat refs ``build(inliner, refs)``
    returns as outputs; returns (body graph, input refs, output refs)."""
    sub = _Inliner(functions.meta, functions.variables, functions.source)
    sub.library = functions.library
    args = []
    for i, (dtype, dims) in enumerate(specs):
        tf_dtype = _TypeName(dtype) if is_container_type(dtype) else TFDType.from_name(dtype)
        sub.emit(TFNode(f"arg_{i}", "Placeholder", attrs={"dtype": tf_dtype, "shape": TFShape(
            None if dims is None else tuple(dims))}), label)
        args.append(f"arg_{i}:0")
    outs = build(sub, args)
    for i, ref in enumerate(outs):
        sub.emit(TFNode(f"output_{i}", "_Retval", [ref]), label)
    out_refs = [f"output_{i}:0" for i in range(len(outs))]
    bad = _unsupported(sub, out_refs)
    if bad:
        raise UnknownOpError(f"{functions.source}: {label} uses {len(bad)} op(s) graphdnn cannot import "
                             f"(function: op (type)): {'; '.join(bad)}")
    flat = MetaGraph(TFGraph(list(sub.nodes.values())), {}, source=functions.source)
    graph = import_meta_graph(flat, None, outputs=out_refs, source=functions.source)
    graph.meta.pop("tf_import", None)
    graph.signature = None
    inputs = []
    for i, (dtype, dims) in enumerate(specs):
        if f"arg_{i}" not in graph.nx:
            graph.placeholder(f"arg_{i}", None if dims is None else tuple(dims), dtype)
        inputs.append(graph.get_operation(f"arg_{i}").output())
    outputs = []
    for i, ref in enumerate(outs):
        name = f"output_{i}"
        if name not in graph.nx:  # a value passed through unchanged: the placeholder itself
            source = ref
            while parse_tensor_name(source)[0] in sub.nodes and sub.nodes[parse_tensor_name(source)[0]].op in (
                    "Identity", "ReadVariableOp"):
                source = sub.nodes[parse_tensor_name(source)[0]].inputs[0]
            src = parse_tensor_name(source)[0]
            if not src.startswith("arg_") or src not in graph.nx:
                raise FileFormatError(f"{functions.source}: {label}: output {i} ({ref!r}) was not imported")
            graph.add_op("Identity", [graph.get_operation(src).output()], None, name, scoped=False)
        outputs.append(graph.get_operation(name).output())
    return graph, inputs, outputs


class _TypeName(str):
    """A graphdnn value type (``seq(float32)``) standing in for a TF dtype on a body placeholder."""

    @property
    def base_dtype(self) -> str:
        return str(self)


# ---------------------------------------------------------------------------------------- importing
def _captured_variables(meta: MetaGraph, variables: _Variables, call: TFNode) -> dict[str, str]:
    """Renames of the top-level VarHandleOps a signature call passes: graph node -> variable name."""
    objects = meta.object_graph
    f = call.attrs.get("f")
    bound = objects.bound_inputs.get(getattr(f, "name", ""), []) if objects is not None else []
    renames: dict[str, str] = {}
    captured = call.inputs[len(call.inputs) - len(bound):] if bound else []
    for ref, object_id in zip(captured, bound):
        obj = objects.nodes[object_id]  # type: ignore[union-attr]
        if obj.kind == "variable" and obj.variable is not None:
            renames[parse_tensor_name(ref)[0]] = variables.name_of(object_id)
    return renames


def _unsupported(inliner: _Inliner, outputs: list[str]) -> list[str]:
    needed, stack = set(), [parse_tensor_name(o)[0] for o in outputs]
    while stack:
        name = stack.pop()
        if name in needed or name not in inliner.nodes:
            continue
        needed.add(name)
        stack += [parse_tensor_name(r)[0] for r in inliner.nodes[name].inputs]
    bad = []
    for name in sorted(needed):
        node = inliner.nodes[name]
        if node.op in _HANDLED or node.op in TRANSLATORS:
            if node.op == "Const" and np.asarray(node.attrs.get("value")).dtype == object:
                bad.append(f"{inliner.origin[name]}: {name} (string constant)")
            continue
        if node.op == "VarHandleOp" and "shared_name" not in node.attrs:
            continue
        bad.append(f"{inliner.origin[name]}: {name} ({node.op})")
    return bad


def import_saved_model(meta: MetaGraph, signature: str, reader: TFCheckpointReader | None, source: str) -> Graph:
    """Translate signature ``signature`` of a decoded SavedModel meta graph, binding variables from ``reader``."""
    sig = meta.signatures.get(signature)
    if sig is None:
        raise FileFormatError(f"{source}: no signature {signature!r}")
    variables = _Variables(meta.object_graph, reader, source)
    inliner = _Inliner(meta, variables, source)
    top = {n.name: n for n in meta.graph.nodes}
    args: dict[str, str] = {}
    for key, info in sig.inputs.items():
        args[f"__rename__{parse_tensor_name(info.name)[0]}"] = key
    wanted = [parse_tensor_name(info.name)[0] for info in sig.outputs.values()]
    for name in wanted:
        node = top.get(name)
        if node is None:
            raise FileFormatError(f"{source}: signature {signature!r} returns {name!r}, which is not in the graph")
        if node.op in _CALL_OPS:
            for old, new in _captured_variables(meta, variables, node).items():
                args[f"__rename__{old}"] = new
    produced = inliner.body(meta.graph.nodes, args, "", None, wanted)
    outputs: dict[str, str] = {}
    for key, info in sig.outputs.items():
        op_name, index = parse_tensor_name(info.name)
        out = produced[op_name]
        outputs[key] = out(index) if callable(out) else f"{out}:{index}"
    bad = _unsupported(inliner, list(outputs.values()))
    if bad:
        raise UnknownOpError(f"{source}: signature {signature!r} uses {len(bad)} op(s) graphdnn cannot import "
                             f"(function: op (type)): {'; '.join(bad)}. Lookup tables, string ops, custom ops and "
                             "resources other than variables have no graphdnn equivalent")
    trainable = [TFVariableDef(f"{n}:0") for n, i in variables.by_name.items()
                 if (v := meta.object_graph.nodes[i].variable) is not None and v.trainable]  # type: ignore[union-attr]
    flat = MetaGraph(TFGraph(list(inliner.nodes.values())), {"trainable_variables": trainable}, source=source)
    keys = sorted(outputs)
    graph = import_meta_graph(flat, variables if reader is not None else None, outputs=[outputs[k] for k in keys],
                              source=source)
    graph.name = Path(source).parent.name or "saved_model"
    _finish(graph, sig, keys, variables, signature, source)
    return graph


def _finish(graph: Graph, sig: Any, out_keys: list[str], variables: _Variables, signature: str, source: str) -> None:
    declared = graph.signature
    out_refs = list(declared["outputs"]) if declared else []
    inputs = []
    for key in sorted(sig.inputs):
        if key not in graph.nx:  # an input no output reads still belongs to the signature
            shape = sig.inputs[key].shape
            graph.placeholder(key, shape.dims if isinstance(shape, TFShape) else None,
                              str(sig.inputs[key].dtype.base_dtype))
        inputs.append(graph.get_operation(key).output())
    for key, ref in zip(out_keys, out_refs):
        if key not in graph.nx:
            graph.aliases[key] = ref
    for object_id, name in variables.names.items():
        path = variables.paths.get(object_id)
        if path and path != name and name in graph.nx and path not in graph.nx:
            graph.aliases[path] = graph.get_operation(name).output()
    if out_refs:
        graph.signature = {"inputs": inputs, "outputs": out_refs}
    info = graph.meta.pop("tf_import", {})
    graph.meta["saved_model"] = {
        "path": str(Path(source).parent), "signature": signature, "inputs": sorted(sig.inputs),
        "outputs": out_keys, "unbound_variables": info.get("unbound_variables", []),
        "variables": {name: variables.paths.get(i, "") for name, i in variables.by_name.items()},
    }


def load_saved_model(path: str | os.PathLike, signature: str = "serving_default", *, values: bool = True,
                     max_bytes: int | None = None) -> Graph:
    """Import signature ``signature`` of the SavedModel folder ``path`` (or its ``saved_model.pb``) as a
    Graph with TF's names and the variable values of ``variables/`` (``values=False``: zeros).

    What the files make graphdnn allocate is charged to a memory budget of 16 x their size + 256 MiB, or
    ``max_bytes``; going over raises ``ResourceLimitError`` (see ``graphdnn.budget``)."""
    with reading_file(path, "TensorFlow SavedModel"), budget.load_scope(path, max_bytes=max_bytes) as scope:
        folder = _folder(path)
        pb = folder / "saved_model.pb"
        prefix = folder / "variables" / "variables"
        has_values = Path(str(prefix) + ".index").is_file()
        data = [str(prefix) + ".index", *glob.glob(glob.escape(str(prefix)) + ".data-*")] if has_values else []
        scope.add_files(str(pb), *data)
        meta = _pick(read_saved_model(pb), signature, str(pb))
        reader = TFCheckpointReader(str(prefix)) if has_values and values else None
        try:
            graph = import_saved_model(meta, signature, reader, str(pb))
        except RecursionError:
            raise FileFormatError(f"{pb}: functions nested too deeply") from None
        except GraphDNNError:
            raise
        budget.remember(graph, scope)
        return graph
