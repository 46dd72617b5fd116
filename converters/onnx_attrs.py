"""ONNX ``AttributeProto`` -> the Python values that op lowerings receive as keyword arguments.

INT/FLOAT/STRING become ``int``/``float``/``str`` (UTF-8 decoded), the list kinds become lists of
those, and a TENSOR becomes a JSON-safe dict ``{"dtype": "float32", "shape": [...], "data": [...]}``
(``data`` is the flat, row-major list of values). ``tensor_attr_to_torch`` turns such a dict back
into a torch tensor. A TYPE_PROTO becomes a type string (``seq(float32)``, see
``graphdnn.converters.onnx_types``). GRAPH attributes (If/Loop/Scan bodies) are not supported here and raise
a clear error.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch
from graphdnn.converters.onnx_tensors import sparse_to_array
from graphdnn.converters.onnx_types import type_string
from onnx import AttributeProto, TensorProto, numpy_helper

from graphdnn import budget
from graphdnn.errors import FileFormatError, GraphDNNError
from graphdnn.ops.static import tensor_from_attr

__all__ = ["attribute_to_python", "node_attributes", "tensor_attr_to_torch", "tensor_to_attr_dict"]

# Element types the dict form can carry beyond graphdnn.dtypes (the op registry handles them).
_EXTRA_TYPE_NAMES = {
    TensorProto.FLOAT8E4M3FN: "float8_e4m3fn",
    TensorProto.FLOAT8E4M3FNUZ: "float8_e4m3fnuz",
    TensorProto.FLOAT8E5M2: "float8_e5m2",
    TensorProto.FLOAT8E5M2FNUZ: "float8_e5m2fnuz",
}


def _type_name(code: int, where: str) -> str:
    from graphdnn.dtypes import onnx_to_name

    if code in _EXTRA_TYPE_NAMES:
        return _EXTRA_TYPE_NAMES[code]
    try:
        return onnx_to_name(code)
    except Exception as exc:  # GraphError with a generic message: name the attribute
        kind = TensorProto.DataType.Name(code) if code in TensorProto.DataType.values() else code
        raise FileFormatError(f"{where}: tensor element type {kind} is not supported") from exc


def tensor_to_attr_dict(tensor: TensorProto, where: str = "tensor attribute") -> dict[str, Any]:
    """The JSON-safe dict form of a ``TensorProto``."""
    name = _type_name(tensor.data_type, where)
    if tensor.data_location == TensorProto.EXTERNAL:
        raise FileFormatError(f"{where}: tensor {tensor.name!r} points at external data, which attributes and "
                              "control-flow bodies cannot use")
    try:
        array = numpy_helper.to_array(tensor)
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:  # dims that lie about the payload
        raise FileFormatError(f"{where}: tensor {tensor.name!r} with dims {list(tensor.dims)} does not match its "
                              f"data ({exc}); the file is corrupted") from None
    # the list form: a float64 copy, then one Python number per element
    budget.charge(array.size * (8 + budget.PY_ELEMENT_BYTES), f"{where}: tensor {tensor.name!r} of shape "
                  f"{list(array.shape)} as a list of values")
    if name == "string":  # str (or bytes, decoded) values
        data = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1).tolist()]
    elif array.dtype.kind in "fc" or name.startswith(("float8", "float4", "bfloat16")):
        data = array.astype(np.float64 if array.dtype.kind != "c" else np.complex128).reshape(-1).tolist()
    elif array.dtype.kind not in "biu":  # int4/uint4/int2/uint2 (ml_dtypes): plain ints
        data = array.astype(np.int64).reshape(-1).tolist()
    else:
        data = array.reshape(-1).tolist()
    return {"dtype": name, "shape": [int(d) for d in array.shape], "data": data}


def tensor_attr_to_torch(value: dict[str, Any]) -> torch.Tensor:
    """A torch tensor from the dict form produced by ``tensor_to_attr_dict``."""
    return tensor_from_attr(value)


def attribute_to_python(attr: AttributeProto, where: str = "") -> Any:
    """The Python value of one attribute (see the module docstring for the mapping)."""
    label = f"{where}attribute {attr.name!r}"
    kind = attr.type
    if kind == AttributeProto.FLOAT:
        return float(attr.f)
    if kind == AttributeProto.INT:
        return int(attr.i)
    if kind == AttributeProto.STRING:
        return attr.s.decode("utf-8")
    if kind == AttributeProto.TENSOR:
        return tensor_to_attr_dict(attr.t, label)
    if kind == AttributeProto.FLOATS:
        return [float(v) for v in attr.floats]
    if kind == AttributeProto.INTS:
        return [int(v) for v in attr.ints]
    if kind == AttributeProto.STRINGS:
        return [s.decode("utf-8") for s in attr.strings]
    if kind == AttributeProto.TENSORS:
        return [tensor_to_attr_dict(t, label) for t in attr.tensors]
    if kind == AttributeProto.SPARSE_TENSOR:
        return tensor_to_attr_dict(numpy_helper.from_array(sparse_to_array(attr.sparse_tensor, label)), label)
    if kind == AttributeProto.TYPE_PROTO:  # Optional's ``type``: a type string such as "seq(float32)"
        try:
            return type_string(attr.tp)
        except GraphDNNError as exc:
            raise FileFormatError(f"{label}: {exc}") from exc
    if kind in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
        raise FileFormatError(
            f"{label}: graph-valued attributes (If/Loop/Scan bodies) are not supported by graphdnn"
        )
    raise FileFormatError(f"{label}: attribute type {AttributeProto.AttributeType.Name(kind)} is not supported")


def node_attributes(node: onnx.NodeProto, skip_graphs: bool = False) -> dict[str, Any]:
    """All attributes of a node as keyword arguments for its lowering; ``skip_graphs`` leaves out the
    graph-valued ones (control-flow bodies, which the importer turns into graphs itself)."""
    where = f"node {node.name or node.op_type!r}: "
    return {a.name: attribute_to_python(a, where) for a in node.attribute
            if not (skip_graphs and a.type == AttributeProto.GRAPH)}
