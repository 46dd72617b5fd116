"""Import an ONNX model as a graphdnn graph whose names are the model's names, ready to train.

Mapping (the reverse of ``converters.onnx_export``):

* an **initializer** ``conv1/W`` becomes the variable ``conv1/W`` (tensor ``conv1/W:0``). Float
  initializers are trainable under the default policy (``trainable="float"``), except the mean and
  variance inputs of ``BatchNormalization``, which are state (buffers); integer and boolean ones are
  non-trainable constants (shapes, axes). A variable is created where its initializer is first read;
  initializers that no node reads (or only a folded ``ConstantOfShape``) are dropped.
* a **graph input** that is not an initializer becomes a placeholder; ``dim_param`` and missing
  dims become ``None`` (dynamic). A sequence or optional input (or any such value) has no shape and
  a type string as its dtype (``seq(float32)``, ``optional(seq(int32[4]))``, see
  ``converters.onnx_types``); the compiled module takes a list of tensors / a value or ``None`` there.
* a **node** becomes an op named after the node; an empty node name becomes ``<op_type>_<index>``
  (index = position in ``graph.node``). A name that is taken already (by a variable, a placeholder
  or an earlier node) or that looks like a tensor name gets ``_1``, ``_2``... and the original is
  kept in ``op.meta["onnx_name"]``.
* **value names** are kept: an output whose ONNX name is not ``<op>:<i>`` is listed in
  ``op.meta["onnx_outputs"]`` and in ``graph.aliases``, so ``graph.get_tensor("<onnx value name>")``
  works and the exporter writes the same names back.
* ``Constant`` nodes become graph ``Constant`` ops (folded when compiled), or non-trainable variables
  named after their output value when they hold more than ``CONSTANT_LIMIT`` elements;
  ``ConstantOfShape`` with a constant shape and a float result (how ONNX's "light" models make their
  weights) becomes a variable named after its output value, under the same policy as initializers.
* each op follows the definition in force at the model's opset (``graph.opset``); output shapes
  and dtypes come from ONNX shape inference.

Before any work, the model is checked: a file that is not ONNX, an opset outside
``MIN_ONNX_OPSET..MAX_ONNX_OPSET``, and unsupported ops (all listed in one error) are refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import torch
from onnx import TensorProto

from converters.onnx_attrs import node_attributes, tensor_to_attr_dict
from converters.onnx_gemm import split_fused
from converters.onnx_tensors import proto_to_torch
from converters.onnx_types import type_string, unsupported_type
from graphdnn import shapes
from graphdnn.bulk import paused_gc
from graphdnn.dtypes import dtype_name
from graphdnn.errors import FileFormatError, GraphDNNError, UnknownOpError
from graphdnn.graph import Graph, ValueInfo
from graphdnn.names import split_tensor_name, tensor_name
from graphdnn.ops import registry
from graphdnn.ops.static import tensor_from_attr
from graphdnn.small_dtypes import is_small
from graphdnn.subgraphs import CAPTURES_KEY, set_signature

__all__ = ["CONSTANT_LIMIT", "TrainablePolicy", "load_onnx"]

#: A policy deciding which float weights train: "float" (all, the default), "none", a regex
#: matched (``re.search``) against the weight's name, or ``callable(name, tensor) -> bool``.
TrainablePolicy = str | Callable[[str, torch.Tensor], bool]
#: Constant nodes with more elements than this become non-trainable variables instead of literals.
CONSTANT_LIMIT = 4096
_BN_STATE_INPUTS = (3, 4)  # BatchNormalization's mean and var


def load_onnx(path_or_model: str | os.PathLike[str] | bytes | onnx.ModelProto, trainable: TrainablePolicy = "float",
              *, name: str | None = None) -> Graph:
    """Import an ONNX model (a path, serialized bytes or a ``ModelProto``) as a graph."""
    model, source = _read(path_or_model)
    with paused_gc():
        return _Importer(split_fused(model), source, _policy(trainable), name).run()


# ------------------------------------------------------------------------------------------------
# Reading and validating
# ------------------------------------------------------------------------------------------------
def _read(obj: Any) -> tuple[onnx.ModelProto, str]:
    if isinstance(obj, onnx.ModelProto):
        return obj, "<ModelProto>"
    if isinstance(obj, (bytes, bytearray)):
        data, source, base = bytes(obj), "<bytes>", None
    else:
        path = Path(obj)
        source = str(path)
        if not path.is_file():
            raise FileFormatError(f"{source}: no such ONNX file")
        data, base = path.read_bytes(), path.parent
    if not data:
        raise FileFormatError(f"{source}: the file is empty; it is not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # google.protobuf DecodeError and friends
        raise FileFormatError(
            f"{source}: not a valid ONNX model (protobuf decoding failed: {exc}); the file is truncated or is "
            "not ONNX, re-export or re-download it") from exc
    _check_text(model, source)
    if not model.HasField("graph") or not model.opset_import or model.ir_version <= 0:
        raise FileFormatError(
            f"{source}: not an ONNX model (no graph, IR version or opset import); the file is truncated or is "
            "not ONNX, re-export or re-download it")
    if base is not None and any(_is_external(t) for t in model.graph.initializer):
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(base))
        except Exception as exc:
            raise FileFormatError(f"{source}: cannot read the external weight data beside the model: {exc}") from exc
    return model, source


def _check_text(model: onnx.ModelProto, source: str) -> None:
    """Protobuf hands back invalid UTF-8 in string fields as ``bytes``: refuse such a file up front."""

    def bad(where: str, value: Any) -> None:
        if not isinstance(value, str):
            raise FileFormatError(f"{source}: {where} {value!r} is not UTF-8 text; the file is corrupted")

    def check_graph(g: onnx.GraphProto, label: str, depth: int) -> None:
        if depth > 32:
            raise FileFormatError(f"{source}: control-flow bodies nested deeper than 32 levels")
        for i, node in enumerate(g.node):
            for field in (node.name, node.op_type, node.domain, *node.input, *node.output):
                bad(f"{label}node #{i} field", field)
            for a in node.attribute:
                bad(f"{label}node #{i} attribute name", a.name)
                if a.type == onnx.AttributeProto.GRAPH:
                    check_graph(a.g, f"{label}node #{i} body {a.name!r}: ", depth + 1)
        for kind, items in (("initializer", g.initializer), ("input", g.input), ("output", g.output),
                            ("value_info", g.value_info)):
            for i, item in enumerate(items):
                bad(f"{label}{kind} #{i} name", item.name)

    for i, o in enumerate(model.opset_import):
        bad(f"opset import #{i} domain", o.domain)
    check_graph(model.graph, "", 0)
    for p in model.metadata_props:
        bad("metadata key", p.key)
        bad("metadata value", p.value)


def _is_external(t: TensorProto) -> bool:
    return t.data_location == TensorProto.EXTERNAL


def _policy(trainable: TrainablePolicy) -> Callable[[str, torch.Tensor], bool]:
    if callable(trainable):
        return trainable
    if trainable == "float":
        return lambda name, value: True
    if trainable == "none":
        return lambda name, value: False
    if isinstance(trainable, str):
        rx = re.compile(trainable)
        return lambda name, value: rx.search(name) is not None
    raise GraphDNNError(f"trainable must be 'float', 'none', a regex or a callable, not {trainable!r}")


def _domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def _opsets(model: onnx.ModelProto, source: str) -> dict[str, int]:
    opsets = {_domain(o.domain): int(o.version) for o in model.opset_import}
    onnx_opset = opsets.get("")
    if onnx_opset is not None and not registry.MIN_ONNX_OPSET <= onnx_opset <= registry.MAX_ONNX_OPSET:
        raise FileFormatError(
            f"{source}: the model uses ONNX opset {onnx_opset}; graphdnn supports opsets "
            f"{registry.MIN_ONNX_OPSET} to {registry.MAX_ONNX_OPSET}; convert it first with "
            f"onnx.version_converter.convert_version(model, {registry.MAX_ONNX_OPSET})")
    graphdnn_opset = opsets.get(registry.GRAPHDNN_DOMAIN)
    if graphdnn_opset is not None and graphdnn_opset > registry.DEFAULT_OPSET[registry.GRAPHDNN_DOMAIN]:
        raise FileFormatError(f"{source}: graphdnn opset {graphdnn_opset} is newer than this graphdnn; upgrade it")
    return opsets


def _unsupported(graph: onnx.GraphProto, opsets: dict[str, int],
                 bad: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """op type -> node names of every node graphdnn cannot run (control-flow bodies included)."""
    bad = {} if bad is None else bad
    for i, node in enumerate(graph.node):
        domain = _domain(node.domain)
        label = f"{domain}::{node.op_type}" if domain else node.op_type
        reason = None
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _unsupported(attr.g, opsets, bad)
        if any(a.type == onnx.AttributeProto.GRAPHS for a in node.attribute):
            reason = "graph-list attributes"
        elif node.op_type != "Constant" or domain:
            try:
                registry.lookup(node.op_type, domain, opsets.get(domain, opsets.get("", 1)))
            except UnknownOpError:
                reason = "" if not registry.is_known(node.op_type, domain) else f"not at opset {opsets.get(domain)}"
        if reason is not None:
            key = f"{label} ({reason})" if reason else label
            bad.setdefault(key, []).append(node.name or f"{node.op_type}_{i}")
    return bad


def _unsupported_message(source: str, bad: dict[str, list[str]]) -> str:
    listed = "; ".join(f"{t}: {', '.join(repr(n) for n in names[:8])}{' ...' if len(names) > 8 else ''}"
                       for t, names in sorted(bad.items()))
    return (f"{source}: {sum(len(v) for v in bad.values())} node(s) use op types graphdnn does not support: "
            f"{listed}. Register lowerings for them (graphdnn.ops.register) or remove them from the model")


# ------------------------------------------------------------------------------------------------
# Building the graph
# ------------------------------------------------------------------------------------------------
class _Importer:
    """Builds one graph; a control-flow body gets its own importer whose ``parent`` resolves the
    outer-scope values it reads (they become capture placeholders, see ``graphdnn.subgraphs``)."""

    def __init__(self, model: onnx.ModelProto, source: str, policy: Callable[[str, torch.Tensor], bool],
                 name: str | None, parent: _Importer | None = None) -> None:
        self.model, self.source, self.policy, self.parent = model, source, policy, parent
        self.g = Graph(name or model.graph.name or Path(source).stem or "onnx")
        self.captured: list[str] = []  # (bodies) ONNX names of the outer values read, in first-use order
        self.inferred_nodes: list[onnx.NodeProto] = []
        self.vmap: dict[str, str] = {}  # ONNX value name -> graphdnn tensor name
        self.infos: dict[str, onnx.ValueInfoProto] = {}
        self.consts: dict[str, torch.Tensor] = {}  # values known at import (initializers, constants)
        self.inits: dict[str, TensorProto] = {}
        self.bn_state: set[str] = set()

    def run(self) -> Graph:
        model, g = self.model, self.g
        opsets = _opsets(model, self.source)
        bad = _unsupported(model.graph, opsets)
        self._check_inputs(bad)
        if bad:
            raise UnknownOpError(_unsupported_message(self.source, bad))
        g.opset.update(opsets)
        g.opset.setdefault("", registry.DEFAULT_OPSET[""])
        graph = model.graph
        inits = {t.name: t for t in graph.initializer}
        self._build(graph, _inferred_graph(model), inits)
        g.meta["onnx"] = {
            "inputs": [self.vmap[vi.name] for vi in graph.input if vi.name not in inits],
            "outputs": [self.vmap[o.name] for o in graph.output],
            "ir_version": int(model.ir_version),
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
        }
        return g

    def _build(self, graph: onnx.GraphProto, inferred: onnx.GraphProto, inits: dict[str, TensorProto]) -> None:
        self.infos = {vi.name: vi for vi in (*inferred.input, *inferred.value_info, *inferred.output)}
        self.inferred_nodes = list(inferred.node) if len(inferred.node) == len(graph.node) else list(graph.node)
        self.inits = inits
        self.bn_state = {n.input[i] for n in graph.node if n.op_type == "BatchNormalization" and not _domain(n.domain)
                         for i in _BN_STATE_INPUTS if i < len(n.input)}
        for vi in graph.input:
            if vi.name not in inits:
                self._placeholder(vi)
        for index, node in enumerate(graph.node):
            try:
                self._node(index, node, self.bn_state)
            except GraphDNNError as exc:
                where = f"node {node.name or index!r} ({node.op_type})"
                prefix = f"body {graph.name!r}, " if self.parent else f"{self.source}: "
                raise type(exc)(f"{prefix}{where}: {exc}") from exc
        missing = [o.name for o in graph.output if not self._available(o.name)]
        if missing:
            raise FileFormatError(f"{self.source}: graph {graph.name!r} outputs {missing} are produced by no node")

    def _check_inputs(self, bad: dict[str, list[str]]) -> None:
        """Graph inputs and outputs must be tensors, or sequences/optionals of them (maps, sparse
        tensors and element types graphdnn has no dtype for are refused)."""
        for role, infos in (("inputs", self.model.graph.input), ("outputs", self.model.graph.output)):
            for vi in infos:
                kind = vi.type.WhichOneof("value")
                if kind in (None, "tensor_type"):
                    continue
                why = unsupported_type(vi.type) if kind in ("sequence_type", "optional_type") else ""
                if why is not None:
                    bad.setdefault(f"{kind} graph {role}{f' ({why})' if why else ''}", []).append(vi.name)

    # -- names ------------------------------------------------------------------------------
    def _free(self, wanted: str) -> str:
        """``wanted`` when it is a valid, unused op name, else the first free ``<base>_<k>``."""
        op_part, _ = split_tensor_name(wanted)
        base = (op_part or "value") if op_part != wanted else (wanted or "value")
        if base not in self.g.nx:
            return base
        k = 1
        while f"{base}_{k}" in self.g.nx:
            k += 1
        return f"{base}_{k}"

    def _bind(self, value_name: str, ref: str) -> None:
        self.vmap[value_name] = ref
        if value_name != ref and ref != tensor_name(value_name, 0):  # a bare op name means its output 0
            self.g.aliases[value_name] = ref

    # -- graph inputs and weights -----------------------------------------------------------
    def _use(self, value_name: str) -> None:
        """Create the variable of initializer ``value_name`` on its first use (unused ones are dropped);
        in a control-flow body, a ``Constant`` (bodies hold no variables)."""
        if value_name in self.vmap or value_name not in self.inits:
            return
        if self.parent is not None:
            op_name = self._free(value_name)
            tensor = self.inits[value_name]
            shape, dtype = tuple(int(d) for d in tensor.dims), dtype_name_of_code(tensor.data_type)
            attrs = {"value": tensor_to_attr_dict(tensor, f"initializer {value_name!r}")}
            self.g.add_op("Constant", [], attrs, op_name, outputs=[ValueInfo(shape, dtype)], scoped=False)
            if op_name != value_name:
                self.g.get_operation(op_name).meta["onnx_name"] = value_name
            self._bind(value_name, tensor_name(op_name, 0))
            return
        value = proto_to_torch(self.inits[value_name], f"{self.source}: initializer {value_name!r}")
        self._variable(value_name, value, value_name in self.bn_state)

    def _available(self, value_name: str) -> bool:
        """Whether ``value_name`` can be read here: defined in this graph, an initializer, or (in a
        body) an outer-scope value, which then becomes a capture placeholder."""
        self._use(value_name)
        if value_name in self.vmap:
            return True
        if self.parent is None or not self.parent._available(value_name):
            return False
        self._capture(value_name)
        return True

    def _capture(self, value_name: str) -> None:
        outer = self.parent.g.get_tensor(self.parent.vmap[value_name])
        op_name = self._free(value_name)
        t = self.g.placeholder(op_name, outer.shape, outer.dtype or "float32")
        if op_name != value_name:
            t.op.meta["onnx_name"] = value_name
        self._bind(value_name, t.name)
        self.captured.append(value_name)

    def _bodies(self, index: int, node: onnx.NodeProto) -> tuple[dict[str, Graph], list[str]]:
        """Import the node's graph attributes; returns them and the outer values they capture."""
        if not any(a.type == onnx.AttributeProto.GRAPH for a in node.attribute):
            return {}, []
        inferred_node = self.inferred_nodes[index] if index < len(self.inferred_nodes) else node
        inferred = {a.name: a.g for a in inferred_node.attribute if a.type == onnx.AttributeProto.GRAPH}
        importers: dict[str, tuple[_Importer, onnx.GraphProto]] = {}
        for attr in node.attribute:
            if attr.type != onnx.AttributeProto.GRAPH:
                continue
            sub = _Importer(self.model, self.source, self.policy, attr.g.name or attr.name, parent=self)
            sub.g.opset.update(self.g.opset)
            sub._build(attr.g, inferred.get(attr.name, attr.g), {t.name: t for t in attr.g.initializer})
            importers[attr.name] = sub, attr.g
        union: list[str] = []
        for sub, _ in importers.values():
            union += [v for v in sub.captured if v not in union]
        for sub, body in importers.values():  # every body of one op receives the same captured values
            for v in union:
                if v not in sub.vmap:
                    sub._capture(v)
            set_signature(sub.g, [sub.vmap[vi.name] for vi in body.input], [sub.vmap[v] for v in union],
                          [sub.vmap[o.name] for o in body.output])
        return {k: sub.g for k, (sub, _) in importers.items()}, union

    def _const(self, value_name: str) -> torch.Tensor | None:
        """The value of ``value_name`` when known at import (an initializer or a constant)."""
        if value_name in self.consts:
            return self.consts[value_name]
        if value_name in self.inits and value_name not in self.vmap:
            return proto_to_torch(self.inits[value_name], f"{self.source}: initializer {value_name!r}")
        return None

    def _placeholder(self, vi: onnx.ValueInfoProto) -> None:
        shape, dtype = _shape_dtype(vi)
        op_name = self._free(vi.name)
        t = self.g.placeholder(op_name, shape, dtype or "float32")
        if op_name != vi.name:
            t.op.meta["onnx_name"] = vi.name
        self._bind(vi.name, t.name)

    def _variable(self, value_name: str, value: torch.Tensor, bn_state: bool, producer: dict | None = None) -> None:
        op_name = self._free(value_name)
        floating = value.is_floating_point() and not is_small(value.dtype)  # float4/e8m0 codes do not train
        train = floating and not bn_state and bool(self.policy(value_name, value))
        t = self.g.variable(op_name, value=value, trainable=train, scoped=False, copy=False)
        if op_name != value_name:
            t.op.meta["onnx_name"] = value_name
        if producer:
            t.op.meta["onnx_producer"] = producer
        self._bind(value_name, t.name)
        if not value.is_floating_point() or not train:
            self.consts[value_name] = value

    # -- nodes -----------------------------------------------------------------------------
    def _node(self, index: int, node: onnx.NodeProto, bn_state: set[str]) -> None:
        domain = _domain(node.domain)
        attrs = node_attributes(node, skip_graphs=True)
        if not domain and node.op_type == "ConstantOfShape" and self._fold_constant_of_shape(node, attrs, bn_state):
            return
        if not domain and node.op_type == "Constant" and self._big_constant(node, attrs):
            return
        for value in node.input:
            if value and not self._available(value):
                raise FileFormatError(f"input {value!r} is produced by no earlier node (nodes must be in "
                                      "topological order) and is not a graph input or initializer")
        n_out = len(node.output)
        while n_out and not node.output[n_out - 1]:
            n_out -= 1
        n_out = max(n_out, 1)
        wanted = node.name or f"{node.op_type}_{index}"
        op_name = self._free(wanted)
        inputs = [self.vmap[v] if v else None for v in node.input]
        bodies, captured = self._bodies(index, node)
        if bodies:
            attrs.update(bodies)
            inputs += [self.vmap[v] for v in captured]  # after the formal inputs, omitted ones kept
        else:
            while inputs and inputs[-1] is None:
                inputs.pop()
        outputs = [self._info(node.output[i] if i < len(node.output) else "") for i in range(n_out)]
        if any(o.dtype is None for o in outputs):
            outputs = self._meta_infer(op_name, node, domain, inputs, attrs, outputs)
        handle = self.g.add_op(node.op_type, inputs, attrs, op_name, domain=domain, outputs=outputs, scoped=False)
        op = handle.op
        if bodies:
            op.meta[CAPTURES_KEY] = len(captured)
        if op_name != node.name:
            op.meta["onnx_name"] = node.name
        names = [node.output[i] if i < len(node.output) else "" for i in range(n_out)]
        if any(v and v != tensor_name(op_name, i) for i, v in enumerate(names)):
            op.meta["onnx_outputs"] = names
        for i, v in enumerate(names):
            if v:
                self._bind(v, tensor_name(op_name, i))
        if not domain and node.op_type == "Constant":
            try:
                self.consts[node.output[0]] = registry.lookup("Constant").lower(**attrs)
            except (NotImplementedError, ValueError, TypeError):  # string constants: not foldable here
                pass

    def _fold_constant_of_shape(self, node: onnx.NodeProto, attrs: dict[str, Any], bn_state: set[str]) -> bool:
        shape_value = self._const(node.input[0]) if node.input and node.input[0] else None
        if shape_value is None:
            return False
        fill = tensor_from_attr(attrs["value"]).reshape(-1) if attrs.get("value") is not None else None
        if fill is None:
            fill = torch.zeros(1, dtype=torch.float32)
        if not fill.is_floating_point() or is_small(fill.dtype) or fill.numel() != 1:
            return False
        # ONNX ConstantOfShape (every version): a tensor of ``shape`` filled with ``value`` (default
        # float32 zero).
        value = torch.full([int(d) for d in shape_value.tolist()], fill.item(), dtype=fill.dtype)
        producer = {"op_type": "ConstantOfShape", "name": node.name}
        self._variable(node.output[0], value, node.output[0] in bn_state, producer)
        return True

    def _big_constant(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> bool:
        tensor_attr = next((a for a in node.attribute if a.name == "value"), None)
        if tensor_attr is None or tensor_attr.type != onnx.AttributeProto.TENSOR:
            return False
        numel = 1
        for d in tensor_attr.t.dims:
            numel *= int(d)
        if numel <= CONSTANT_LIMIT:
            return False
        value = proto_to_torch(tensor_attr.t, f"{self.source}: Constant {node.name!r}")
        op_name = self._free(node.output[0])
        t = self.g.variable(op_name, value=value, trainable=False, scoped=False, copy=False)
        t.op.meta["onnx_producer"] = {"op_type": "Constant", "name": node.name}
        if op_name != node.output[0]:
            t.op.meta["onnx_name"] = node.output[0]
        self._bind(node.output[0], t.name)
        self.consts[node.output[0]] = value
        return True

    def _info(self, value_name: str) -> ValueInfo:
        vi = self.infos.get(value_name) if value_name else None
        if vi is None:
            return ValueInfo(None, None)
        shape, dtype = _shape_dtype(vi)
        return ValueInfo(shape, dtype)

    def _meta_infer(self, op_name: str, node: onnx.NodeProto, domain: str, inputs: list[str | None],
                    attrs: dict[str, Any], outputs: list[ValueInfo]) -> list[ValueInfo]:
        """Fill what ONNX shape inference left unknown by running the lowering on meta tensors."""
        from graphdnn.graph import Op

        opdef = registry.lookup(node.op_type, domain, self.g.opset.get(domain))
        probe = Op(op_name, node.op_type, list(inputs), dict(attrs), [], domain)
        try:
            inferred = shapes.infer(self.g, probe, opdef, len(outputs))
        except Exception:  # best effort: an unknown shape is fine, the compiled module finds out
            return outputs
        return [o if o.dtype is not None else i for o, i in zip(outputs, inferred)]


def _shape_dtype(vi: onnx.ValueInfoProto) -> tuple[tuple[int | None, ...] | None, str | None]:
    """(shape, dtype) of a value: a sequence or optional has no shape and a type string as its dtype
    (``seq(float32)``, see ``converters.onnx_types``); (None, None) when unknown or unsupported."""
    kind = vi.type.WhichOneof("value")
    if kind in ("sequence_type", "optional_type"):
        return None, None if unsupported_type(vi.type) else type_string(vi.type)
    if kind != "tensor_type":
        return None, None
    tt = vi.type.tensor_type
    dtype = None
    if tt.elem_type:
        try:
            dtype = dtype_name_of_code(tt.elem_type)
        except GraphDNNError:
            dtype = None
    if not tt.HasField("shape"):
        return None, dtype
    dims = tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim)
    return dims, dtype


def dtype_name_of_code(code: int) -> str:
    """The graphdnn dtype name of an ONNX element type code."""
    from graphdnn.dtypes import onnx_to_name

    return dtype_name(onnx_to_name(code))


def _inferred_graph(model: onnx.ModelProto) -> onnx.GraphProto:
    """The model's graph after ONNX shape inference (bodies included), or as declared when that fails."""
    inferred = model
    if model.ByteSize() < 1_900_000_000:
        try:
            inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
        except Exception:  # inference is an aid; the meta-tensor fallback covers what it misses
            inferred = model
    return inferred.graph


def value_name_of(graph: Graph, ref: str) -> str:
    """The ONNX value name of graphdnn tensor ``ref`` in an imported graph."""
    op_name, index = split_tensor_name(ref)
    op = graph.get_operation(op_name)
    if op.is_variable or op.is_placeholder:
        return op.meta.get("onnx_name", op.name)
    outs = op.meta.get("onnx_outputs") or []
    return outs[index] if index < len(outs) and outs[index] else tensor_name(op_name, index)
