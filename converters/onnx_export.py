"""Export a graph to ONNX directly from the graph IR, keeping every name.

The mapping is close to identity, because graphdnn's op vocabulary is the ONNX operator set:

* a **Placeholder** ``X`` becomes the graph input ``X`` (its tensor ``X:0``); ``None`` dims become
  symbolic dims (``batch`` for axis 0, ``<input>_<axis>`` elsewhere); a sequence or optional value
  (dtype ``seq(float32)``, ``optional(...)``) gets that ONNX type, element shape included;
* a **Variable** ``hidden1/kernel`` becomes the initializer ``hidden1/kernel``: the ONNX value name
  of a variable is its *op* name, so tensor ``hidden1/kernel:0`` == initializer ``hidden1/kernel``;
* every other op becomes a ``NodeProto`` named after the op (``dnn/hidden1/MatMul``) whose outputs
  are the graph's tensor names (``dnn/hidden4/Relu:0``); attributes are written as they are, typed
  by the operator schema;
* a graph imported from ONNX keeps its original names: a variable/placeholder's ``meta["onnx_name"]``
  and an op's ``meta["onnx_outputs"]`` / ``meta["onnx_name"]`` override the defaults above;
* inference form: graphdnn-domain ``StopGradient``/``AlphaDropout`` and ``Dropout`` become
  ``Identity`` (same node and value names), ``BatchNormalization`` loses ``training_mode``.
* an LSTM/GRU whose weights are held in torch's gate order (``gate_order="torch"``, see
  ``graphdnn.gate_order``) is a standard ONNX LSTM/GRU: the attribute is dropped and the variables marked
  ``gates:torch`` are written in ONNX's gate order.

* a dense layer's ``MatMul`` + bias ``Add`` becomes one ``Gemm`` node named after the ``Add``
  (``fuse_gemm=False`` keeps them apart); the ``MatMul``'s names go to ``graphdnn.fused_gemm``
  metadata, from which the importer restores both ops.

``metadata_props`` carries ``graphdnn.version`` and ``graphdnn.name_map`` (JSON: graphdnn tensor
name -> ONNX value name, for every tensor whose two names differ). The model passes
``onnx.checker.check_model(full_check=True)``. Models whose initializers exceed 2 GB are saved with
external data (one ``<file>.<generation>.data`` beside the model, a new name on each export).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from graphdnn.converters.onnx_bodies import body_attribute
from graphdnn.converters.onnx_gemm import METADATA_KEY as FUSED_KEY
from graphdnn.converters.onnx_gemm import gemm_node, gemm_pairs
from graphdnn.converters.onnx_tensors import torch_to_proto
from graphdnn.converters.onnx_types import type_proto, type_string, unsupported_type
from onnx import AttributeProto, TensorProto, helper

from graphdnn import atomic
from graphdnn.bulk import paused_gc
from graphdnn.compiler import CompiledGraph, default_outputs, needed_ops
from graphdnn.dtypes import is_container_type, onnx_code
from graphdnn.errors import GraphError
from graphdnn.gate_order import check_marked, gate_kind, permute_gates
from graphdnn.graph import Graph, Op, Tensor
from graphdnn.names import split_tensor_name, tensor_name
from graphdnn.ops import registry
from graphdnn.ops.static import tensor_from_attr
from graphdnn.subgraphs import captures, is_graph

__all__ = ["EXTERNAL_DATA_THRESHOLD", "build_model", "export_onnx", "value_names"]

#: Total initializer bytes above which ``external_data=None`` writes the weights to a side file.
EXTERNAL_DATA_THRESHOLD = 2_000_000_000 - 64 * 1024 * 1024
_IDENTITY_IN_INFERENCE = {("graphdnn", "StopGradient"), ("graphdnn", "AlphaDropout"), ("graphdnn", "GaussianNoise"),
                          ("graphdnn", "GaussianDropout"), ("", "Dropout")}


def export_onnx(
    obj: Graph | CompiledGraph,
    path: str | os.PathLike[str] | None,
    inputs: Sequence[Tensor | str] | None = None,
    outputs: Sequence[Tensor | str] | Tensor | str | None = None,
    opset: int | None = None,
    external_data: bool | None = None,
    fuse_gemm: bool = True,
) -> onnx.ModelProto:
    """Write ``obj`` (a graph, or a compiled module: its graph, inputs and outputs) to ONNX at ``path``
    and return the model. ``inputs``/``outputs`` choose the part to export as in ``graphdnn.compile``
    (any tensor can be an input). ``opset`` defaults to the graph's. ``external_data``: None = only
    when the weights exceed 2 GB; True/False to force. ``path=None`` only builds the model.
    ``fuse_gemm`` writes dense layers as one ``Gemm`` node (see ``graphdnn.converters.onnx_gemm``)."""
    with paused_gc():
        model = build_model(obj, inputs, outputs, opset, fuse_gemm)
    big = sum(len(t.raw_data) for t in model.graph.initializer) > EXTERNAL_DATA_THRESHOLD
    use_external = big if external_data is None else bool(external_data)
    _require_ranks(model, path)
    if path is None:
        if use_external:
            raise GraphError("external data needs a path to write the weights beside the model")
        _check(model, None)
        return model
    _save(model, Path(path), use_external)
    return model


def _require_ranks(model: onnx.ModelProto, path: str | os.PathLike[str] | None) -> None:
    """An ONNX model must declare the rank of each tensor input and output; a tensor of unknown rank (a
    TF1 ``tf.placeholder(..., shape=None)``) is an error that says what to do, not a checker message."""
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for vi in values:
            if vi.type.WhichOneof("value") == "tensor_type" and not vi.type.tensor_type.HasField("shape"):
                where = f"{path}: " if path is not None else ""
                fix = ("give the placeholder a shape where the graph is built (e.g. shape=(None,)), or export only "
                       "outputs that do not need it (export_onnx(..., outputs=[...]); graphdnn convert --output NAME)"
                       if kind == "input" else "export other outputs (export_onnx(..., outputs=[...]); graphdnn "
                       "convert --output NAME), or give the graph's placeholders shapes so it can be inferred")
                raise GraphError(f"{where}cannot export to ONNX: {kind} {vi.name!r} has an unknown rank, which an "
                                 f"ONNX model cannot declare; {fix}")


def _resolve(obj: Any, inputs: Any, outputs: Any) -> tuple[Graph, list[str], list[str]]:
    if isinstance(obj, CompiledGraph):
        graph = obj.source_graph
        inputs = obj.input_names if inputs is None else inputs
        outputs = obj.output_names if outputs is None else outputs
    elif isinstance(obj, Graph):
        graph = obj
    else:
        raise GraphError(f"export_onnx needs a graphdnn Graph or compiled module, not {type(obj).__name__}")
    if isinstance(outputs, (Tensor, str)):
        outputs = [outputs]
    out_refs = [graph.get_tensor(t).name for t in outputs] if outputs is not None else default_outputs(graph)
    if not out_refs:
        raise GraphError(f"graph {graph.name!r} has no outputs to export; pass outputs=[...]")
    if inputs is None and graph.signature is not None and out_refs == graph.signature["outputs"]:
        in_refs = list(graph.signature["inputs"])  # a model's declared inputs, unused ones included
    elif inputs is None:
        fed = [op.output() for op in graph.placeholders()]
        needed = {op.name for op in needed_ops(graph, fed, out_refs)}
        reads = {r for name in needed for r in graph.get_operation(name).inputs} | set(out_refs)
        in_refs = [ref for ref in fed if ref in reads]
    else:
        in_refs = [graph.get_tensor(t).name for t in inputs]
    return graph, in_refs, out_refs


def value_names(graph: Graph) -> dict[str, str]:
    """graphdnn tensor name -> ONNX value name, for every output of every op of ``graph``."""
    names: dict[str, str] = {}
    for op in graph.operations():
        if op.is_variable or op.is_placeholder:
            names[op.output()] = op.meta.get("onnx_name", op.name)
            continue
        onnx_outs = op.meta.get("onnx_outputs") or []
        for i in range(len(op.outputs)):
            ref = tensor_name(op.name, i)
            given = onnx_outs[i] if i < len(onnx_outs) else None
            names[ref] = given if given else ref
    return names


def _inference_form(op: Op) -> tuple[str, str, list[str | None], dict[str, Any]]:
    """(domain, type, inputs, attrs) of ``op`` as exported for inference."""
    if (op.domain, op.type) in _IDENTITY_IN_INFERENCE and len(op.outputs) == 1:
        return "", "Identity", op.inputs[:1], {}
    if (op.domain, op.type) == ("", "Dropout"):  # the mask is wanted: inference Dropout (mask of ones)
        return "", "Dropout", op.inputs[:2], {k: v for k, v in op.attrs.items() if k != "seed"}
    if op.domain == registry.GRAPHDNN_DOMAIN:
        raise GraphError(f"op {op.name!r}: graphdnn-domain op {op.type!r} has no ONNX form")
    attrs = dict(op.attrs)
    if op.type == "BatchNormalization" and not op.domain:
        attrs.pop("training_mode", None)
    return op.domain, op.type, list(op.inputs), attrs


def _onnx_gates(graph: Graph, op: Op, attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` without ``gate_order``, once every ``W``/``R``/``B`` of an op in torch's gate order is checked
    to be a variable marked ``gates:torch`` (written back in ONNX's order)."""
    if op.type not in ("LSTM", "GRU") or op.domain or "gate_order" not in attrs:
        return attrs
    attrs = dict(attrs)
    order = attrs.pop("gate_order")
    if order in (None, "onnx"):
        return attrs
    if order != "torch":
        raise GraphError(f"op {op.name!r} ({op.type}): gate_order {order!r} is not 'onnx' or 'torch'")
    check_marked(graph, op)
    return attrs


def _schema(op_type: str, opset: int, domain: str) -> Any:
    try:
        return onnx.defs.get_schema(op_type, opset, domain)
    except Exception:  # SchemaError: not an ONNX-known op at this opset
        return None


def _tensor_attr(value: Any, where: str) -> TensorProto:
    if isinstance(value, TensorProto):
        return value
    if isinstance(value, dict) and value.get("dtype") == "string":
        data = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in value["data"]]
        return helper.make_tensor("", TensorProto.STRING, [int(d) for d in value["shape"]], data)
    if isinstance(value, dict) or isinstance(value, torch.Tensor):
        return torch_to_proto(tensor_from_attr(value), "")
    raise GraphError(f"{where}: a TENSOR attribute must be a {{dtype, shape, data}} literal, got {type(value)}")


def _attribute(name: str, value: Any, kind: int | None, where: str) -> AttributeProto:
    """An AttributeProto of the schema's type ``kind`` (or guessed from the Python value)."""
    if kind is None or kind == AttributeProto.UNDEFINED:
        if isinstance(value, dict):
            kind = AttributeProto.TENSOR
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, dict) for v in value):
            kind = AttributeProto.TENSORS
        else:
            return helper.make_attribute(name, value)
    attr = AttributeProto()
    attr.name, attr.type = name, int(kind)  # older onnx gives schema kinds as an enum, not an int
    try:
        if kind == AttributeProto.FLOAT:
            attr.f = float(value)
        elif kind == AttributeProto.INT:
            attr.i = int(value)
        elif kind == AttributeProto.STRING:
            attr.s = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        elif kind == AttributeProto.TENSOR:
            attr.t.CopyFrom(_tensor_attr(value, where))
        elif kind == AttributeProto.FLOATS:
            attr.floats.extend(float(v) for v in value)
        elif kind == AttributeProto.INTS:
            attr.ints.extend(int(v) for v in value)
        elif kind == AttributeProto.STRINGS:
            attr.strings.extend(v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in value)
        elif kind == AttributeProto.TENSORS:
            attr.tensors.extend(_tensor_attr(v, where) for v in value)
        elif kind == AttributeProto.TYPE_PROTO:
            attr.tp.CopyFrom(type_proto(value))
        else:
            raise GraphError(f"{where}: attribute {name!r} of kind {AttributeProto.AttributeType.Name(kind)} "
                             "cannot be exported")
    except (TypeError, ValueError) as exc:
        raise GraphError(f"{where}: attribute {name!r}={value!r} does not fit its ONNX type "
                         f"{AttributeProto.AttributeType.Name(kind)}: {exc}") from exc
    return attr


def _value_info(name: str, dtype: str | None, shape: tuple[int | None, ...] | None, symbolic: bool) -> Any:
    if is_container_type(dtype):  # a sequence or optional: its type string holds the element type and shape
        return helper.make_value_info(name, type_proto(dtype))
    elem = onnx_code(dtype) if dtype else TensorProto.UNDEFINED
    if shape is None:
        return helper.make_tensor_value_info(name, elem, None)
    dims: list[int | str | None] = []
    for axis, d in enumerate(shape):
        if d is not None:
            dims.append(int(d))
        elif symbolic:
            dims.append("batch" if axis == 0 else f"{name}_{axis}")
        else:
            dims.append(None)
    return helper.make_tensor_value_info(name, elem, dims)


def build_model(
    obj: Graph | CompiledGraph,
    inputs: Sequence[Tensor | str] | None = None,
    outputs: Sequence[Tensor | str] | Tensor | str | None = None,
    opset: int | None = None,
    fuse_gemm: bool = True,
) -> onnx.ModelProto:
    """The ``ModelProto`` of ``obj`` (see the module docstring); nothing is checked or written."""
    graph, in_refs, out_refs = _resolve(obj, inputs, outputs)
    target = _target_opset(graph, opset)
    names = value_names(graph)
    for ref in in_refs:  # an intermediate tensor fed as an input keeps its value name
        names.setdefault(ref, ref)
    fed = set(in_refs)

    # Walk back from the outputs through the inference form of each op, so inputs that only
    # training needs (a dropout rate, a training_mode flag) are not exported.
    forms: dict[str, tuple[str, str, list[str | None], dict[str, Any]]] = {}
    seen: set[str] = set()
    stack = [r for r in out_refs if r not in fed]
    while stack:
        op_name = split_tensor_name(stack.pop())[0]
        if op_name in seen:
            continue
        seen.add(op_name)
        op = graph.get_operation(op_name)
        if op.is_placeholder:
            raise GraphError(f"the outputs need placeholder {op.name!r}, which is not among the inputs {in_refs}; "
                             "add it to inputs")
        if op.is_variable:
            continue
        forms[op_name] = form = _inference_form(op)
        stack.extend(r for r in form[2] if r is not None and r not in fed)
    order = [n for n in graph.topological_order() if n in seen]
    pairs = gemm_pairs(graph, forms, out_refs, fed) if fuse_gemm else {}
    absorbed = set(pairs.values())
    fused_meta: dict[str, dict[str, str]] = {}

    used_domains: dict[str, int] = {"": target}
    nodes, initializers = [], []
    for op_name in order:
        op = graph.get_operation(op_name)
        if op.is_variable:
            value = graph.values[op.name]
            kind = gate_kind(op.attrs.get("layout"))
            if kind is not None:  # held in torch's gate order
                value = permute_gates(value.detach(), kind, to="onnx", name=op.name)
            initializers.append(torch_to_proto(value, names[op.output()]))
            continue
        if op_name in absorbed:
            continue
        if op_name in pairs:
            mm = graph.get_operation(pairs[op_name])
            gemm_name = op.meta.get("onnx_name", op.name)
            nodes.append(gemm_node(gemm_name, [names[r] for r in (*mm.inputs, op.inputs[1])], names[op.output()]))
            fused_meta[gemm_name] = {"matmul": mm.meta.get("onnx_name", mm.name), "matmul_output": names[mm.output()]}
            continue
        domain, op_type, ins, attrs = forms[op_name]
        attrs = _onnx_gates(graph, op, attrs)
        where = f"op {op.name!r} ({op_type})"
        version = target if domain == "" else graph.opset.get(domain, 1)
        used_domains.setdefault(domain, version)
        schema = _schema(op_type, version, domain)
        kinds = {k: a.type for k, a in schema.attributes.items()} if schema is not None else {}
        n_captured = captures(op)
        if n_captured:  # control flow: captured outer values are read by name inside the bodies
            outer = [names[r] for r in ins[len(ins) - n_captured:]]
            ins = ins[: len(ins) - n_captured]
        attr_protos = []
        for key in sorted(attrs):
            value = attrs[key]
            if value is None:
                continue
            if schema is not None and key not in kinds:
                raise GraphError(f"{where}: attribute {key!r} is not part of ONNX {op_type} at opset {version}")
            if is_graph(value):
                attr_protos.append(body_attribute(key, value, outer if n_captured else [], target))
                continue
            attr_protos.append(_attribute(key, value, kinds.get(key), where))
        in_names = ["" if r is None else names[r] for r in ins]
        while in_names and in_names[-1] == "":
            in_names.pop()
        n_out = len(op.outputs) if op_type != "Identity" or op.type == "Identity" else 1
        out_names = [names[tensor_name(op.name, i)] for i in range(n_out)]
        node = helper.make_node(op_type, in_names, out_names, name=op.meta.get("onnx_name", op.name),
                                domain=domain or None)
        node.attribute.extend(attr_protos)
        nodes.append(node)

    graph_inputs = []
    for ref in in_refs:
        t = graph.get_tensor(ref)
        graph_inputs.append(_value_info(names[ref], t.dtype, t.shape, symbolic=True))
    graph_outputs = []
    for ref in out_refs:
        t = graph.get_tensor(ref)
        graph_outputs.append(_value_info(names[ref], t.dtype, t.shape, symbolic=False))
    onnx_graph = helper.make_graph(nodes, graph.name, graph_inputs, graph_outputs, initializers)
    opsets = [helper.make_opsetid(d, v) for d, v in sorted(used_domains.items())]
    model = helper.make_model(onnx_graph, opset_imports=opsets, producer_name="graphdnn",
                              producer_version=_version())
    model.ir_version = helper.find_min_ir_version_for(opsets, ignore_unknown=True)
    _fill_unknown_output_types(model)
    name_map = {ref: v for ref, v in names.items() if ref != v and (split_tensor_name(ref)[0] in seen or ref in fed)}
    props = {"graphdnn.version": _version(), "graphdnn.name_map": json.dumps(name_map)}
    if fused_meta:
        props[FUSED_KEY] = json.dumps(fused_meta)
    helper.set_model_props(model, props)
    return model


def _target_opset(graph: Graph, opset: int | None) -> int:
    current = graph.opset.get("", registry.DEFAULT_OPSET[""])
    if opset is None or opset == current:
        return current
    if not registry.MIN_ONNX_OPSET <= opset <= registry.MAX_ONNX_OPSET:
        raise GraphError(f"opset {opset} is outside what graphdnn supports "
                         f"({registry.MIN_ONNX_OPSET}..{registry.MAX_ONNX_OPSET})")
    changed = []
    for op in graph.operations():
        if op.domain or op.is_variable or op.is_placeholder:
            continue
        a, b = _schema(op.type, current, ""), _schema(op.type, opset, "")
        if a is None or b is None or a.since_version != b.since_version:
            changed.append(op.type)
    if changed:
        raise GraphError(
            f"graph {graph.name!r} is written for opset {current}; at opset {opset} these op types have another "
            f"definition: {sorted(set(changed))}. Build the graph with graph.opset[''] = {opset} instead"
        )
    return opset


def _fill_unknown_output_types(model: onnx.ModelProto) -> None:
    """Complete the graph outputs from one ONNX shape inference pass: an output of unknown type (a
    tensor without element type) gets the inferred type, which may be a sequence or optional one;
    unknown dims take the symbolic names inference carries through from the inputs (``batch``)."""
    missing = {o.name for o in model.graph.output
               if o.type.WhichOneof("value") == "tensor_type" and (o.type.tensor_type.elem_type == TensorProto.UNDEFINED
                                                                  or not o.type.tensor_type.HasField("shape"))}
    open_dims = [o for o in model.graph.output if o.type.WhichOneof("value") == "tensor_type"
                 and any(not d.HasField("dim_value") and not d.HasField("dim_param")
                         for d in o.type.tensor_type.shape.dim)]
    if not missing and not open_dims:
        return
    inferred = _infer_without_weights(model, missing)
    if inferred is None:  # best effort: the checker reports real problems; unnamed dims stay dynamic
        return
    known = {v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    for out in model.graph.output:
        found = known.get(out.name)
        if out.name not in missing or found is None:
            continue
        if found.WhichOneof("value") in ("sequence_type", "optional_type") and not unsupported_type(found):
            out.type.CopyFrom(type_proto(type_string(found)))  # the spelling an import -> export writes back
        elif found.WhichOneof("value") not in (None, "tensor_type") or found.tensor_type.elem_type:
            out.type.CopyFrom(found)
    named = {d.dim_param for vi in model.graph.input if vi.type.HasField("tensor_type")
             for d in vi.type.tensor_type.shape.dim if d.HasField("dim_param")}  # not inference's "unk__0"
    for out in open_dims:
        found = known.get(out.name)
        dims = out.type.tensor_type.shape.dim
        if found is None or not found.HasField("tensor_type") or len(found.tensor_type.shape.dim) != len(dims):
            continue
        for ours, theirs in zip(dims, found.tensor_type.shape.dim):
            if not ours.HasField("dim_value") and not ours.HasField("dim_param") and theirs.dim_param in named:
                ours.dim_param = theirs.dim_param


_WEIGHT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}


def _infer_without_weights(model: onnx.ModelProto, untyped: set[str]) -> onnx.ModelProto | None:
    """ONNX shape inference on the model with float weights replaced by typed inputs (inference needs
    their types, not their bytes) and the ``untyped`` outputs' declared types cleared (a declared
    tensor type would not give way to an inferred sequence); None when inference fails."""
    probe = onnx.ModelProto()
    probe.ir_version = model.ir_version
    probe.opset_import.extend(model.opset_import)
    graph = probe.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    for out in graph.output:
        if out.name in untyped:
            out.ClearField("type")
    for t in model.graph.initializer:
        if t.data_type in _WEIGHT_TYPES:
            graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:  # integer initializers may be shapes that inference reads
            graph.initializer.append(t)
    try:
        return onnx.shape_inference.infer_shapes(probe)
    except Exception:  # inference is an aid here
        return None


def _version() -> str:
    from graphdnn._version import __version__

    return __version__


def _check(model: onnx.ModelProto | str, where: str | None) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        label = where or "the exported model"
        raise GraphError(f"{label} fails onnx.checker: {str(exc).strip().splitlines()[0]}") from exc


def _save(model: onnx.ModelProto, path: Path, external: bool) -> None:
    """Write atomically and safely beside concurrent writers: the ``.onnx`` file is the only commit
    point, renamed into place last; external data goes to a new ``<file>.<generation>.data`` that no
    committed model names, so a killed export leaves the previous model with its own weights. Data
    files that the committed model does not name and no live writer holds are removed afterwards."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    if not external:
        _check(model, None)
        atomic.atomic_write(path, lambda f: f.write(model.SerializeToString()), fsync=True)
    else:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        while True:
            data_name = f"{path.name}.{atomic.new_generation()}.data"
            try:
                data = atomic.create_locked(folder / data_name)
                break
            except FileExistsError:
                continue
        tmp: Path | None = None
        committed = False
        try:
            with data:
                tmp_file, tmp = atomic.create_temp(folder, path.name)
                with tmp_file:
                    copy = onnx.ModelProto()
                    copy.CopyFrom(model)
                    onnx.save_model(copy, str(tmp), format="protobuf", save_as_external_data=True,
                                    all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
                    _check(str(tmp), str(path))
                    os.fsync(data.fileno())
                    os.fsync(tmp_file.fileno())
                    os.chmod(tmp, mode)
                    os.replace(tmp, path)  # the commit point, while both files are still locked
                    committed = True
        except BaseException:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            if not committed:
                (folder / data_name).unlink(missing_ok=True)
            raise
        atomic.fsync_folder(folder)
    name = re.escape(path.name)
    atomic.collect_garbage(folder, rf"{name}\.(?:{atomic.GENERATION}\.)?data|{atomic.temp_pattern(path.name)}",
                    lambda: _external_locations(path))


def _external_locations(path: Path) -> set[str] | None:
    """The external-data files that the ONNX model at ``path`` names (None when it cannot be read)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    found: set[str] = set()

    def tensors(graph: onnx.GraphProto) -> Any:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        for node in graph.node:
            for attr in node.attribute:
                yield from ([attr.t] if attr.HasField("t") else [])
                yield from attr.tensors
                if attr.HasField("sparse_tensor"):
                    yield from (attr.sparse_tensor.values, attr.sparse_tensor.indices)
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    yield from tensors(sub)

    for t in tensors(model.graph):
        if t.data_location == TensorProto.EXTERNAL:
            found.update(os.path.normpath(e.value) for e in t.external_data if e.key == "location")
    return found
