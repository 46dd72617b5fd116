"""Helpers for inputs that an op needs as Python values (shapes, axes, ratios).

Such inputs are listed in ``OpDef.static_inputs``. When their producer is a constant, compiled code
passes them as Python lists or numbers (so ``torch.compile`` sees no data-dependent shape);
otherwise the lowering receives a tensor. These helpers accept either.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from graphdnn.errors import ArgumentTypeError, GraphError
from graphdnn.small_dtypes import encode, is_small


def as_ints(value: Any) -> list[int]:
    """A list of ints from a tensor, list, tuple or scalar."""
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, (list, tuple)) for v in value):
            raise GraphError(f"expected a scalar or a 1-D list of integers (a shape, axes, sizes), got {value!r:.200}")
        return [int(v) for v in value]
    return [int(value)]


def as_floats(value: Any) -> list[float]:
    """A list of floats from a tensor, list, tuple or scalar ([] for None or an empty input)."""
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        return [float(v) for v in value.reshape(-1).tolist()]
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return [float(value)]


def as_float(value: Any) -> float:
    """A Python float from a 0-d/1-element tensor or a number."""
    if isinstance(value, torch.Tensor):
        return float(value.reshape(-1)[0].item())
    if isinstance(value, (list, tuple)):
        return float(value[0])
    return float(value)


# ONNX element types beyond graphdnn.dtypes that torch can hold (Cast targets, attribute tensors).
_EXTRA_ONNX_DTYPES: dict[int, tuple[str, torch.dtype]] = {
    17: ("float8_e4m3fn", torch.float8_e4m3fn),
    18: ("float8_e4m3fnuz", torch.float8_e4m3fnuz),
    19: ("float8_e5m2", torch.float8_e5m2),
    20: ("float8_e5m2fnuz", torch.float8_e5m2fnuz),
}
_EXTRA_BY_NAME = {name: dt for name, dt in _EXTRA_ONNX_DTYPES.values()}


def dtype_from_onnx(code: int) -> torch.dtype:
    """The torch dtype of an ONNX ``TensorProto.DataType`` code (float8 types included)."""
    if code in _EXTRA_ONNX_DTYPES:
        return _EXTRA_ONNX_DTYPES[code][1]
    from graphdnn.dtypes import onnx_to_torch_dtype

    return onnx_to_torch_dtype(int(code))


def dtype_from_name(name: str) -> torch.dtype:
    """The torch dtype of a dtype name ("float32", "float8_e4m3fn"...)."""
    if name in _EXTRA_BY_NAME:
        return _EXTRA_BY_NAME[name]
    from graphdnn.dtypes import torch_dtype

    return torch_dtype(name)


def tensor_from_attr(value: Any) -> torch.Tensor:
    """A tensor from a TENSOR attribute's JSON-safe form ``{"dtype", "shape", "data"}``.

    Also accepts an already-built tensor (returned as is). String tensors have no torch form: this
    raises for them; ``array_from_attr`` turns them into numpy arrays of ``str``."""
    if isinstance(value, torch.Tensor):
        return value
    if value["dtype"] == "string":
        raise ArgumentTypeError("a string TENSOR attribute has no torch form; use ops.static.array_from_attr")
    dtype = dtype_from_name(value["dtype"])
    data = value["data"]
    if is_small(dtype):  # int4, float4_e2m1fn...: exact values, encoded one per byte
        base = torch.tensor(data, dtype=torch.float64 if dtype.is_floating_point else torch.int64)
        t = encode(base, dtype)
    elif dtype.is_floating_point and dtype not in (torch.float32, torch.float64):
        t = torch.tensor(data, dtype=torch.float64).to(dtype)
    elif dtype in (torch.uint16, torch.uint32, torch.uint64):
        t = torch.tensor(data, dtype=torch.int64).to(dtype)
    else:
        t = torch.tensor(data, dtype=dtype)
    return t.reshape([int(d) for d in value["shape"]])


def array_from_attr(value: Any) -> torch.Tensor | np.ndarray:
    """``tensor_from_attr``, except that a string tensor becomes a numpy array of ``str`` (object dtype),
    the run-time form of string tensors."""
    if isinstance(value, dict) and value.get("dtype") == "string":
        data = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value["data"]]
        return np.array(data, dtype=object).reshape([int(d) for d in value["shape"]])
    if isinstance(value, np.ndarray):
        return value
    return tensor_from_attr(value)
