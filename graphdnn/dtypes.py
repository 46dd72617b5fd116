"""Data types by name: the graph stores dtypes as strings ("float32"); these map them to torch,
numpy and ONNX ``TensorProto`` codes. Values that are not tensors (ONNX sequences and optionals)
carry a type string such as ``seq(float32)`` instead; see ``value_type_name``.

ONNX's small types (int4, uint4, int2, uint2, float4_e2m1fn, float8_e8m0fnu) are held unpacked, one
element per byte, in torch "shell" dtypes that carry the type; see ``graphdnn.small_dtypes``."""

from __future__ import annotations

import re

import numpy as np
import torch

from graphdnn.errors import GraphError
from graphdnn.small_dtypes import SMALL_DTYPES

_TABLE: list[tuple[str, torch.dtype, int]] = [
    ("float32", torch.float32, 1),
    ("uint8", torch.uint8, 2),
    ("int8", torch.int8, 3),
    ("uint16", torch.uint16, 4),
    ("int16", torch.int16, 5),
    ("int32", torch.int32, 6),
    ("int64", torch.int64, 7),
    ("bool", torch.bool, 9),
    ("float16", torch.float16, 10),
    ("float64", torch.float64, 11),
    ("uint32", torch.uint32, 12),
    ("uint64", torch.uint64, 13),
    ("complex64", torch.complex64, 14),
    ("complex128", torch.complex128, 15),
    ("bfloat16", torch.bfloat16, 16),
]
_TABLE += [(info.name, dtype, info.onnx_code) for dtype, info in SMALL_DTYPES.items()]
#: Strings have no torch dtype: string tensors are numpy object arrays of ``str`` in compiled code.
STRING = "string"
_BY_NAME = {name: (t, o) for name, t, o in _TABLE}
_BY_NAME[STRING] = (None, 8)  # type: ignore[assignment]
_BY_TORCH = {t: name for name, t, _ in _TABLE}
_BY_ONNX = {o: name for name, _, o in _TABLE}
_BY_ONNX[8] = STRING
_ALIASES = {"float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32"}


def dtype_name(dtype: str | torch.dtype | np.dtype | type) -> str:
    """Canonical name ("float32") of a dtype given by name, torch dtype or numpy dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype not in _BY_TORCH:
            raise GraphError(f"unsupported dtype {dtype}")
        return _BY_TORCH[dtype]
    if isinstance(dtype, str):
        name = _ALIASES.get(dtype, dtype)
        if name in _BY_NAME:
            return name
        raise GraphError(f"unknown dtype {dtype!r}; use one of {sorted(_BY_NAME)}")
    try:
        name = np.dtype(dtype).name
    except TypeError as exc:
        raise GraphError(f"unknown dtype {dtype!r}") from exc
    return dtype_name(name)


def torch_dtype(dtype: str | torch.dtype | np.dtype) -> torch.dtype:
    """The torch dtype for a dtype name (or any accepted dtype spelling)."""
    name = dtype_name(dtype)
    if name == STRING:
        raise GraphError("string tensors have no torch dtype; they are numpy arrays of str")
    return _BY_NAME[name][0]


def onnx_code(dtype: str | torch.dtype | np.dtype) -> int:
    """The ONNX ``TensorProto.DataType`` code of a dtype."""
    return _BY_NAME[dtype_name(dtype)][1]


def onnx_to_torch_dtype(code: int) -> torch.dtype:
    """The torch dtype of an ONNX ``TensorProto.DataType`` code."""
    if code not in _BY_ONNX:
        raise GraphError(f"unsupported ONNX tensor data type {code}")
    return torch_dtype(_BY_ONNX[code])


def onnx_to_name(code: int) -> str:
    """The dtype name of an ONNX ``TensorProto.DataType`` code."""
    if code not in _BY_ONNX:
        raise GraphError(f"unsupported ONNX tensor data type {code}")
    return _BY_ONNX[code]


# ------------------------------------------------------------------------------------------------
# Value types: ONNX sequences and optionals
# ------------------------------------------------------------------------------------------------
#: A value that is not a tensor (an ONNX ``seq(...)`` or ``optional(...)``) has the unknown shape
#: ``None`` and, as its dtype, a *type string*:
#:
#: * ``seq(T)``: a Python list of values of type ``T`` at run time;
#: * ``optional(T)``: a value of type ``T`` or ``None``;
#: * a tensor ``T`` inside them: its dtype name, optionally with its shape in brackets, ``?`` for an
#:   unknown dim: ``float32`` (any rank), ``float32[]`` (a scalar), ``int64[2,?]``.
#:
#: For example ``seq(float32)`` or ``optional(seq(int32[4]))``. ``value_type_name`` gives the
#: canonical spelling (no spaces); ``parse_value_type`` the structure.
CONTAINERS = ("seq", "optional")
_TENSOR_SPELLING = re.compile(r"([A-Za-z0-9_]+)(?:\[([0-9?,]*)\])?")

ValueType = tuple  # ("tensor", dtype, shape | None) | ("seq", ValueType) | ("optional", ValueType)


def is_container_type(dtype: object) -> bool:
    """Whether ``dtype`` is a type string of a sequence or optional value (not a tensor dtype)."""
    return isinstance(dtype, str) and dtype.startswith(tuple(f"{k}(" for k in CONTAINERS))


def parse_value_type(spelling: str) -> ValueType:
    """The structure of a type string: ``("seq", ("tensor", "float32", None))`` for ``seq(float32)``."""
    if not isinstance(spelling, str):
        raise GraphError(f"a value type is a string such as 'seq(float32)', not {spelling!r}")
    text = spelling.replace(" ", "")
    for kind in CONTAINERS:
        if text.startswith(f"{kind}(") and text.endswith(")"):
            return (kind, parse_value_type(text[len(kind) + 1:-1]))
    match = _TENSOR_SPELLING.fullmatch(text)
    if match is None:
        raise GraphError(f"bad value type {spelling!r}; write a dtype such as 'float32' or 'int64[2,?]', "
                         f"or wrap one in seq(...) / optional(...)")
    dims = match.group(2)
    shape: tuple[int | None, ...] | None = None
    if dims is not None:
        parts = dims.split(",") if dims else []
        if any(p != "?" and not p.isdigit() for p in parts):
            raise GraphError(f"bad value type {spelling!r}: dims are non-negative ints or '?'")
        shape = tuple(None if p == "?" else int(p) for p in parts)
    return ("tensor", dtype_name(match.group(1)), shape)


def format_value_type(vtype: ValueType) -> str:
    """The canonical type string of a ``parse_value_type`` structure."""
    if vtype[0] in CONTAINERS:
        return f"{vtype[0]}({format_value_type(vtype[1])})"
    _, dtype, shape = vtype
    if shape is None:
        return dtype
    return f"{dtype}[{','.join('?' if d is None else str(d) for d in shape)}]"


def value_type_name(dtype: str | torch.dtype | np.dtype | type) -> str:
    """``dtype_name`` for tensors; the canonical spelling of a ``seq(...)``/``optional(...)`` type."""
    if isinstance(dtype, str) and dtype.replace(" ", "").startswith(tuple(f"{k}(" for k in CONTAINERS)):
        return format_value_type(parse_value_type(dtype))
    return dtype_name(dtype)
