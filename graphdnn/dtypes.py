"""Data types by name: the graph stores dtypes as strings ("float32"); these map them to torch,
numpy and ONNX ``TensorProto`` codes."""

from __future__ import annotations

import numpy as np
import torch

from graphdnn.errors import GraphError

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
