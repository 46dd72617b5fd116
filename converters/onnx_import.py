"""Import an ONNX model as a graphdnn graph whose names are the model's names, ready to train.

Mapping (the reverse of ``graphdnn.converters.onnx_export``):

* an **initializer** ``conv1/W`` becomes the variable ``conv1/W`` (tensor ``conv1/W:0``). Whether it
  trains is decided by how the model uses it (``trainable="auto"``, the default; ``role``): the
  weights of Conv/ConvTranspose/Gemm/MatMul, of normalization ops (scale, bias), of embedding
  ``Gather`` and of LSTM/GRU/RNN (W, R, B, peepholes), and a bias added to a MatMul/Gemm/Conv
  output, are trainable; the mean and variance inputs of ``BatchNormalization`` are state (buffers); exponents
  (``Pow``), fill values (``Where``, ``ConstantOfShape``, ``Pad``, ``Clip`` bounds), masks, axes,
  shapes, scalars, values beyond +-1e30 and integer or boolean tensors are constants. A float tensor
  used otherwise (a positional embedding added to the input, a layer scale) trains when it has more
  than one element. ``graph.meta["import_summary"]`` counts what was decided (``graphdnn inspect``
  prints it). The TorchScript exporter writes a parameter equal to an earlier one as
  ``Identity(<earlier>)``; such a copy becomes a variable of its own, named after the Identity's
  output, as in the original module. A variable is created where its initializer is first read;
  initializers that no node reads (or only a folded ``ConstantOfShape``) are dropped.
* the model's declared inputs and outputs (in order) become the graph's ``signature``, the default
  of ``graphdnn.compile``, ``export_onnx`` and the CLI (``Graph.signature``).
* a **graph input** that is not an initializer becomes a placeholder; ``dim_param`` and missing
  dims become ``None`` (dynamic). A sequence or optional input (or any such value) has no shape and
  a type string as its dtype (``seq(float32)``, ``optional(seq(int32[4]))``, see
  ``graphdnn.converters.onnx_types``); the compiled module takes a list of tensors / a value or ``None`` there.
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

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import torch
from graphdnn.converters.onnx_attrs import node_attributes, tensor_to_attr_dict
from graphdnn.converters.onnx_gemm import split_fused
from graphdnn.converters.onnx_names import recover_names
from graphdnn.converters.onnx_tensors import ExternalDataMissing, has_external_data, load_external_data, proto_to_torch
from graphdnn.converters.onnx_types import type_string, unsupported_type
from onnx import TensorProto

from graphdnn import budget, shapes
from graphdnn.atomic import file_identity
from graphdnn.bulk import paused_gc
from graphdnn.dtypes import dtype_name, torch_dtype
from graphdnn.errors import FileFormatError, GraphDNNError, ResourceLimitError, UnknownOpError, reading_file
from graphdnn.gate_order import to_torch_gate_order
from graphdnn.graph import Graph, ValueInfo
from graphdnn.names import split_tensor_name, tensor_name
from graphdnn.ops import registry
from graphdnn.ops.static import tensor_from_attr
from graphdnn.small_dtypes import is_small
from graphdnn.subgraphs import CAPTURES_KEY, set_signature

__all__ = ["CONSTANT_LIMIT", "TrainablePolicy", "import_summary", "load_onnx", "read_model", "role", "tensor_uses"]

#: A policy deciding which float weights train: "auto" (by use, the default), "float" (every float
#: tensor but batch-norm statistics), "none", a regex matched (``re.search``) against the weight's
#: name, or ``callable(name, tensor) -> bool | None`` (None: as "auto" decides).
TrainablePolicy = str | Callable[[str, torch.Tensor], "bool | None"]
#: Constant nodes with more elements than this become non-trainable variables instead of literals.
CONSTANT_LIMIT = 4096
_BN_STATE_INPUTS = (3, 4)  # BatchNormalization's mean and var
logger = logging.getLogger(__name__)
#: Inputs that are weights: (op type -> input positions), in the ai.onnx domain.
WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1), "Einsum": (0, 1),
    "BatchNormalization": (1, 2), "LayerNormalization": (1, 2), "InstanceNormalization": (1, 2),
    "GroupNormalization": (1, 2), "RMSNormalization": (1,), "Gather": (0,), "PRelu": (1,),
    "LSTM": (1, 2, 3, 7), "GRU": (1, 2, 3), "RNN": (1, 2, 3),
}
#: Inputs that are state updated by the op itself.
STATE_INPUTS: dict[str, tuple[int, ...]] = {"BatchNormalization": _BN_STATE_INPUTS}
#: Inputs that are never learned: exponents, fill values, bounds, ratios, initial states.
CONSTANT_INPUTS: dict[str, tuple[int, ...]] = {
    "Pow": (1,), "Where": (0, 1, 2), "ConstantOfShape": (0,), "Clip": (1, 2), "Pad": (1, 2, 3), "Dropout": (1, 2),
    "Resize": (1, 2, 3), "Upsample": (1,), "Range": (0, 1, 2), "Trilu": (1,), "LSTM": (4, 5, 6),
    "GRU": (4, 5), "RNN": (4, 5), "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4),
}
#: Ops that pass a tensor on unchanged in value (layout, dtype, view): a weight read through them is a weight.
PASS_THROUGH = {"Identity", "Cast", "CastLike", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
                "Expand", "Slice", "Split", "Concat", "Tile"}
#: Ops whose output a bias is added to.
LINEAR_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum"}
#: Values at least this large (or not finite) are fill values (masks' -3.4e38), never weights.
FILL_MAGNITUDE = 1e30
_FLOAT_CODES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}


def load_onnx(path_or_model: str | os.PathLike[str] | bytes | onnx.ModelProto, trainable: TrainablePolicy = "auto",
              *, name: str | None = None, external_data_dir: str | os.PathLike[str] | None = None,
              max_bytes: int | None = None, gate_order: str = "torch") -> Graph:
    """Import an ONNX model (a path, serialized bytes or a ``ModelProto``) as a graph.

    ``gate_order="torch"`` (the default) stores the ``W``/``R``/``B`` initializers of the LSTM/GRU nodes that
    torch's fused kernels run with their gate blocks in torch's order, once, so no call reorders them
    (``graphdnn.gate_order.to_torch_gate_order``): ``graph.values`` of such a variable then differ from the file's
    initializer by that row permutation, and its ``layout`` attribute says ``"gates:torch:LSTM"`` (or ``GRU``).
    Export, ``graphdnn.restore`` and checkpoints account for it. ``gate_order="onnx"`` keeps the file's values.
    ``graph.meta["import_summary"]`` counts the converted ops.

    Tensors stored as external data are read only from inside the model file's folder (relative paths,
    no ``..``, no symbolic link out; ``graphdnn.converters.onnx_tensors.load_external_data``).
    ``external_data_dir`` names another folder to resolve them in instead (and confines them there); it is
    needed for a model given as bytes or as a ``ModelProto`` whose external data is not loaded yet.

    What the model makes graphdnn allocate (folded constants, densified sparse tensors...) is charged to
    a memory budget of 16 x the model's bytes (external data included) + 256 MiB, or ``max_bytes``;
    going over raises ``ResourceLimitError`` (see ``graphdnn.budget``)."""
    policy = _policy(trainable)
    if gate_order not in ("torch", "onnx"):
        raise GraphDNNError(f"gate_order must be 'torch' or 'onnx', not {gate_order!r}")
    path = path_or_model if isinstance(path_or_model, (str, os.PathLike)) else None
    with budget.load_scope(path, max_bytes=max_bytes) as scope, reading_file(path, "ONNX model"):
        model, source = _read(path_or_model, external_data_dir)
        scope.add_source(max(0, model.ByteSize() - (os.path.getsize(path) if path is not None else 0)))
        with paused_gc():
            graph = _Importer(split_fused(model), source, policy, name).run()
        if gate_order == "torch" and to_torch_gate_order(graph):
            graph.meta["import_summary"] = import_summary(graph)
        budget.remember(graph, scope)
        return graph


# ------------------------------------------------------------------------------------------------
# Reading and validating
# ------------------------------------------------------------------------------------------------
def read_model(obj: Any, external_data_dir: str | os.PathLike[str] | None = None) -> tuple[onnx.ModelProto, str]:
    """The checked ``ModelProto`` of ``obj`` (a path, serialized bytes or a ``ModelProto``) with its external
    data loaded (confined as in :func:`load_onnx`), and a label of where it came from."""
    return _read(obj, external_data_dir)


def _read(obj: Any, external_data_dir: str | os.PathLike[str] | None = None) -> tuple[onnx.ModelProto, str]:
    if isinstance(obj, onnx.ModelProto):
        if has_external_data(obj):  # read into a copy: the caller's model is left as it is
            obj = obj.__deepcopy__()
            load_external_data(obj, external_data_dir, "<ModelProto>")
        return obj, "<ModelProto>"
    if isinstance(obj, (bytes, bytearray)):
        return _parse(bytes(obj), "<bytes>", None, external_data_dir)
    path = Path(obj)
    for attempt in range(3):  # a concurrent export may replace the model and remove the data files it read
        before = file_identity(path)
        if before is None or not path.is_file():
            raise FileFormatError(f"{path}: no such ONNX file")
        try:
            return _parse(path.read_bytes(), str(path), path.parent, external_data_dir)
        except ExternalDataMissing:
            if attempt == 2 or file_identity(path) in (before, None):
                raise
    raise AssertionError("unreachable")


def _parse(data: bytes, source: str, base: Path | None,
           external_data_dir: str | os.PathLike[str] | None) -> tuple[onnx.ModelProto, str]:
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
    load_external_data(model, base if external_data_dir is None else external_data_dir, source)
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


def _policy(trainable: TrainablePolicy) -> Callable[[str, torch.Tensor], bool | None]:
    """``policy(name, value)``: whether the float tensor trains; None leaves it to the use-based roles."""
    if callable(trainable):
        return trainable
    if trainable == "auto":
        return lambda name, value: None
    if trainable == "float":
        return lambda name, value: True
    if trainable == "none":
        return lambda name, value: False
    if isinstance(trainable, str):
        try:
            rx = re.compile(trainable)
        except re.error as exc:
            raise GraphDNNError(f"trainable={trainable!r} is not a valid regex ({exc}); pass 'auto', 'float', "
                                "'none', a regex or a callable") from None
        return lambda name, value: rx.search(name) is not None
    raise GraphDNNError(f"trainable must be 'auto', 'float', 'none', a regex or a callable, not {trainable!r}")


def import_summary(graph: Graph) -> dict[str, Any]:
    """What the trainability policy decided, for ``graph.meta["import_summary"]``: counts of the variables
    and a line of text (``N trainable tensors, M state, K constants``); state is what batch norm updates. With
    LSTM/GRU ops, ``recurrent_gate_order`` counts them by the gate order their weights are held in
    (``{"torch": N, "onnx": M}``) and the text says how many hold torch's."""
    state = {r for op in graph.operations() if op.type == "BatchNormalization" and not op.domain
             for r in op.inputs[3:5] if r}
    counts = {"trainable": 0, "state": 0, "constant": 0}
    for v in graph.variables():
        counts["trainable" if v.attrs["trainable"] else "state" if v.output() in state else "constant"] += 1
    text = f"{counts['trainable']} trainable tensors, {counts['state']} state, {counts['constant']} constants"
    summary: dict[str, Any] = {"trainable": counts["trainable"], "state": counts["state"],
                               "constants": counts["constant"]}
    orders = [op.attrs.get("gate_order") or "onnx" for op in graph.operations()
              if op.type in ("LSTM", "GRU") and not op.domain]
    if orders:
        summary["recurrent_gate_order"] = {k: orders.count(k) for k in ("torch", "onnx") if k in orders}
        if "torch" in orders:
            text += f"; {orders.count('torch')} of {len(orders)} LSTM/GRU ops hold their weights in torch's gate order"
    summary["text"] = text
    return summary


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
# Trainability: from how each constant tensor is used
# ------------------------------------------------------------------------------------------------
def tensor_uses(graph: onnx.GraphProto, sources: set[str]) -> dict[str, set[str]]:
    """For each value in ``sources`` (initializers and other import-time constants): how the graph
    uses it, followed through ``PASS_THROUGH`` ops: ``weight`` (a weight input), ``bias`` (added to the
    output of a ``LINEAR_OPS`` op that reads a constant), ``state``, ``constant`` or ``other``."""
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    producer: dict[str, onnx.NodeProto] = {}
    derived: set[str] = set(sources)  # values computed from constants only through PASS_THROUGH ops
    for node in graph.node:
        for i, v in enumerate(node.input):
            if v:
                consumers.setdefault(v, []).append((node, i))
        for v in _read_in_bodies(node):  # an outer value a control-flow body reads: a use of no known kind
            consumers.setdefault(v, []).append((node, -1))
        for v in node.output:
            producer[v] = node
        if (not _domain(node.domain) and node.op_type in PASS_THROUGH and node.input and node.input[0] in derived
                and not _is_copy(node, sources)):
            derived.update(v for v in node.output if v)

    def linear_with_weight(value: str) -> bool:
        node = producer.get(value)
        return (node is not None and not _domain(node.domain) and node.op_type in LINEAR_OPS
                and any(v in derived for v in node.input))

    uses: dict[str, set[str]] = {}
    for source in sources:
        kinds: set[str] = set()
        stack, seen = [source], {source}
        while stack:
            value = stack.pop()
            for node, slot in consumers.get(value, ()):
                kind = node.op_type if not _domain(node.domain) else None
                if kind in STATE_INPUTS and slot in STATE_INPUTS[kind]:
                    kinds.add("state")
                elif kind in WEIGHT_INPUTS and slot in WEIGHT_INPUTS[kind]:
                    kinds.add("weight")
                elif kind in ("Add", "Sub") and len(node.input) == 2 and linear_with_weight(node.input[1 - slot]):
                    kinds.add("bias")
                elif kind in CONSTANT_INPUTS and slot in CONSTANT_INPUTS[kind]:
                    kinds.add("constant")
                elif kind in PASS_THROUGH and (slot == 0 or kind == "Concat") and not _is_copy(node, sources):
                    stack += [v for v in node.output if v and v not in seen]
                    seen.update(node.output)
                elif kind != "Shape":  # reading only the shape uses no value
                    kinds.add("other")
        uses[source] = kinds
    return uses


def _read_in_bodies(node: onnx.NodeProto) -> set[str]:
    """Every value name the node's control-flow bodies (and theirs) read."""
    names: set[str] = set()
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            for inner in attr.g.node:
                names.update(v for v in inner.input if v)
                names |= _read_in_bodies(inner)
    return names


def _is_copy(node: onnx.NodeProto, sources: set[str]) -> bool:
    """An ``Identity`` of a constant whose output is itself a source: a separate tensor (an exporter's dedupe)."""
    return node.op_type == "Identity" and not _domain(node.domain) and bool(node.output) and node.output[0] in sources


def role(uses: set[str], value: torch.Tensor) -> str:
    """``trainable``, ``state`` or ``constant`` for a tensor used as ``uses`` (from ``tensor_uses``)."""
    if not value.is_floating_point() or is_small(value.dtype):  # float4/e8m0 codes do not train
        return "constant"
    if "state" in uses:
        return "state"
    if "weight" in uses or ("bias" in uses and value.dim()):
        return "trainable"
    if "constant" in uses or not uses or value.numel() <= 1:
        return "constant"
    low, high = (float(v) for v in torch.aminmax(value))  # NaN compares false: a constant
    return "trainable" if -FILL_MAGNITUDE < low and high < FILL_MAGNITUDE else "constant"


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
        self.uses: dict[str, set[str]] = {}  # (top level) constant value -> how it is used, see tensor_uses
        self.copies: set[str] = set()  # (top level) outputs of Identity(<float initializer>): variables of their own
        self.used: set[str] = set()  # values some node (or body) reads, and the graph's outputs

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
        recover_names(model, g)  # source parameter names the torch exporters lost (graphdnn.converters.onnx_names)
        g.meta["onnx"] = {
            "inputs": [self.vmap[vi.name] for vi in graph.input if vi.name not in inits],
            "outputs": [self.vmap[o.name] for o in graph.output],
            "ir_version": int(model.ir_version),
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
        }
        g.signature = {"inputs": g.meta["onnx"]["inputs"], "outputs": g.meta["onnx"]["outputs"]}
        g.meta["import_summary"] = import_summary(g)
        logger.info("%s: %s", self.source, g.meta["import_summary"]["text"])
        return g

    def _build(self, graph: onnx.GraphProto, inferred: onnx.GraphProto, inits: dict[str, TensorProto]) -> None:
        self.infos = {vi.name: vi for vi in (*inferred.input, *inferred.value_info, *inferred.output)}
        self.inferred_nodes = list(inferred.node) if len(inferred.node) == len(graph.node) else list(graph.node)
        self.inits = inits
        self.used = {v for n in graph.node for v in (*n.input, *_read_in_bodies(n)) if v}
        self.used.update(o.name for o in graph.output)
        if self.parent is None:
            plain = [n for n in graph.node if not _domain(n.domain) and n.output]
            self.copies = {n.output[0] for n in plain if n.op_type == "Identity" and n.input and n.input[0] in inits
                           and inits[n.input[0]].data_type in _FLOAT_CODES}
            filled = {n.output[0] for n in plain if n.op_type == "ConstantOfShape"}
            self.uses = tensor_uses(graph, set(inits) | self.copies | filled)
        for vi in graph.input:
            if vi.name not in inits:
                self._placeholder(vi)
        for index, node in enumerate(graph.node):
            try:
                self._node(index, node)
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
        self._variable(value_name, value)

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

    def _variable(self, value_name: str, value: torch.Tensor, producer: dict | None = None) -> None:
        op_name = self._free(value_name)
        decided = role(self.uses.get(value_name, set()), value)
        if decided != "state" and value.is_floating_point() and not is_small(value.dtype):
            choice = self.policy(value_name, value)
            if choice is not None:
                decided = "trainable" if choice else "constant"
        train = decided == "trainable"
        t = self.g.variable(op_name, value=value, trainable=train, scoped=False, copy=False)
        if op_name != value_name:
            t.op.meta["onnx_name"] = value_name
        if producer:
            t.op.meta["onnx_producer"] = producer
        self._bind(value_name, t.name)
        if not value.is_floating_point() or not train:
            self.consts[value_name] = value

    # -- nodes -----------------------------------------------------------------------------
    def _node(self, index: int, node: onnx.NodeProto) -> None:
        domain = _domain(node.domain)
        if not domain and node.op_type in ("BatchNormalization", "Dropout"):
            node = self._mode_free(node)
        attrs = node_attributes(node, skip_graphs=True)
        self._check_static_inputs(node, domain)
        if not domain and node.op_type == "ConstantOfShape" and self._fold_constant_of_shape(node, attrs):
            return
        if not domain and node.op_type == "Identity" and node.output and node.output[0] in self.copies:
            self._copy(node)
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
        if not bodies:
            self._charge_folded(node, outputs)
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

    def _check_static_inputs(self, node: onnx.NodeProto, domain: str) -> None:
        """Refuse here, rather than inside the compiled model, a node that omits an input its ONNX schema
        requires, or feeds a constant of rank > 1 where the op reads Python values (shapes, axes, sizes:
        scalars or 1-D in every ONNX op)."""
        root = self
        while root.parent is not None:  # bodies follow the model's opsets
            root = root.parent
        if not domain:
            try:
                schema = onnx.defs.get_schema(node.op_type, root.g.opset.get("", 1), "")
            except Exception:  # noqa: BLE001 - no such schema: _unsupported reports unknown ops
                schema = None
            if schema is not None:
                given = len(node.input)
                for i, formal in enumerate(schema.inputs):
                    single = formal.option == onnx.defs.OpSchema.FormalParameterOption.Single
                    if single and (i >= given or not node.input[i]):
                        raise FileFormatError(f"input {i} ({formal.name!r}) is required by {node.op_type} but "
                                              "missing; the model is malformed")
        try:
            opdef = registry.lookup(node.op_type, domain, root.g.opset.get(domain, root.g.opset.get("", 1)))
        except UnknownOpError:
            return
        for i in opdef.static_inputs:
            value = self._const(node.input[i]) if i < len(node.input) and node.input[i] else None
            if value is not None and value.dim() > 1:
                raise FileFormatError(f"input {i} ({node.input[i]!r}) must be a scalar or a 1-D list of values, "
                                      f"got a tensor of shape {list(value.shape)}")

    def _mode_free(self, node: onnx.NodeProto) -> onnx.NodeProto:
        """The node without the training mode an exporter wrote (the mode the model was exported in):
        a ``BatchNormalization`` whose running-statistic outputs nothing reads keeps only its output, and
        a ``Dropout`` drops a constant ``training_mode`` input, so ``model.train()``/``eval()`` decides.
        A ``training_mode`` fed at run time, or running statistics that are read, follow ONNX."""
        if node.op_type == "BatchNormalization" and len(node.output) > 1 and not any(
                v in self.used for v in node.output[1:] if v):
            trimmed = onnx.NodeProto()
            trimmed.CopyFrom(node)
            del trimmed.output[1:]
            return trimmed
        mode = node.input[2] if node.op_type == "Dropout" and len(node.input) > 2 else ""
        if mode and self._const(mode) is not None:
            trimmed = onnx.NodeProto()
            trimmed.CopyFrom(node)
            del trimmed.input[2:]
            return trimmed
        return node

    def _copy(self, node: onnx.NodeProto) -> None:
        """``Identity(<initializer>)`` as a variable of its own holding a copy (see the module docstring)."""
        source = self.inits[node.input[0]]
        what = f"Identity {node.name!r} (output {node.output[0]!r})"
        budget.charge_tensor([int(d) for d in source.dims], 8, what)
        value = proto_to_torch(source, f"{self.source}: initializer {node.input[0]!r}").clone()
        self._variable(node.output[0], value, {"op_type": "Identity", "name": node.name, "input": node.input[0]})

    def _charge_folded(self, node: onnx.NodeProto, outputs: list[ValueInfo]) -> None:
        """A node whose inputs are all constants becomes a constant when the graph is compiled: charge its
        outputs (of known shape) to the load's budget now."""
        if not any(node.input) or not all(v in self.consts for v in node.input if v):
            return
        for value_name, info in zip(node.output, outputs):
            if info.shape is None or None in info.shape or info.dtype is None:
                continue
            try:
                itemsize = torch_dtype(info.dtype).itemsize
            except GraphDNNError:  # strings, sequences: no dense size to charge
                continue
            budget.charge_tensor(info.shape, itemsize, f"output {value_name!r} (a constant the compiled model folds)")

    def _fold_constant_of_shape(self, node: onnx.NodeProto, attrs: dict[str, Any]) -> bool:
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
        budget.charge_tensor(shape_value.reshape(-1).tolist(), fill.element_size(),
                             f"output {node.output[0]!r}")
        value = torch.full([int(d) for d in shape_value.tolist()], fill.item(), dtype=fill.dtype)
        producer = {"op_type": "ConstantOfShape", "name": node.name}
        self._variable(node.output[0], value, producer)
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
        except (ResourceLimitError, MemoryError):
            raise
        except Exception:  # best effort: an unknown shape is fine, the compiled module finds out
            return outputs
        return [o if o.dtype is not None else i for o, i in zip(outputs, inferred)]


def _shape_dtype(vi: onnx.ValueInfoProto) -> tuple[tuple[int | None, ...] | None, str | None]:
    """(shape, dtype) of a value: a sequence or optional has no shape and a type string as its dtype
    (``seq(float32)``, see ``graphdnn.converters.onnx_types``); (None, None) when unknown or unsupported."""
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
        except MemoryError:  # never a "successful" load that skipped what ran out of memory
            raise
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
