"""ONNX ``TypeProto`` <-> graphdnn type strings (``seq(float32)``, ``optional(seq(int32[4]))``).

A graph value that is not a tensor keeps its ONNX type as a type string in its ``ValueInfo.dtype``
(shape ``None``); see ``graphdnn.dtypes.value_type_name`` for the spelling. Element shapes are kept;
symbolic dims (``dim_param``) become unknown dims (``?``), as they do for tensor graph inputs.
"""

from __future__ import annotations

from onnx import TypeProto

from graphdnn.dtypes import ValueType, format_value_type, onnx_code, onnx_to_name, parse_value_type
from graphdnn.errors import GraphDNNError, GraphError

__all__ = ["type_proto", "type_string", "unsupported_type"]

_KINDS = {"sequence_type": "seq", "optional_type": "optional"}


def _structure(tp: TypeProto) -> ValueType:
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        tt = tp.tensor_type
        if not tt.elem_type:
            raise GraphError("a tensor type without an element type")
        dtype = onnx_to_name(tt.elem_type)
        shape = None
        if tt.HasField("shape"):
            shape = tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim)
        return ("tensor", dtype, shape)
    if kind in _KINDS:
        inner = getattr(tp, kind)
        if not inner.HasField("elem_type"):
            raise GraphError(f"a {kind} without an element type")
        return (_KINDS[kind], _structure(inner.elem_type))
    raise GraphError(f"{kind or 'an empty type'} values are not supported")


def type_string(tp: TypeProto) -> str:
    """The type string of ``tp`` (``float32[2,?]`` for a tensor); a GraphError when graphdnn cannot
    represent it (maps, sparse tensors, unknown element types)."""
    return format_value_type(_structure(tp))


def unsupported_type(tp: TypeProto) -> str | None:
    """None when graphdnn can hold values of type ``tp``, else why not."""
    try:
        _structure(tp)
    except GraphDNNError as exc:
        return str(exc)
    return None


def type_proto(spelling: str) -> TypeProto:
    """The ``TypeProto`` of a type string (unknown dims have neither ``dim_value`` nor ``dim_param``)."""
    return _proto(parse_value_type(spelling))


def _proto(vtype: ValueType) -> TypeProto:
    tp = TypeProto()
    if vtype[0] == "seq":
        tp.sequence_type.elem_type.CopyFrom(_proto(vtype[1]))
    elif vtype[0] == "optional":
        tp.optional_type.elem_type.CopyFrom(_proto(vtype[1]))
    else:
        _, dtype, shape = vtype
        tp.tensor_type.elem_type = onnx_code(dtype)
        if shape is not None:
            tp.tensor_type.shape.SetInParent()  # a scalar has a shape with no dims
            for d in shape:
                dim = tp.tensor_type.shape.dim.add()
                if d is not None:
                    dim.dim_value = int(d)
    return tp
