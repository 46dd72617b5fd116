"""Elementwise operators: arithmetic, unary math, comparison, logic, bitwise, Where, Cast, Clip.

Binary ops broadcast numpy-style (opset >= 7). Opset < 7 versions take the legacy ``broadcast`` /
``axis`` attributes. Unsigned 16/32/64-bit integers, which torch stores but has few CPU kernels
for, are computed in int64 and cast back.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

from graphdnn.ops._util import legacy_broadcast, narrow, widen
from graphdnn.ops.registry import register
from graphdnn.ops.static import dtype_from_onnx
from graphdnn.small_dtypes import decode, encode, is_small


def _binary(fn):
    """Wrap ``fn(a, b)`` with unsigned widening; the result keeps a's dtype unless it is bool."""

    @functools.wraps(fn)
    def run(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        dtype, (wa, wb) = widen(a, b)
        return narrow(fn(wa, wb), dtype)

    return run


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.dtype.is_floating_point or a.dtype.is_complex:
        return torch.div(a, b)
    return torch.div(a, b, rounding_mode="trunc")


_ARITH = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": _div}


def _register_arith(op_type: str, fn) -> None:
    run = _binary(fn)

    def lower_v1(a, b, *, broadcast: int = 0, axis: int | None = None, consumed_inputs=None):
        return run(a, legacy_broadcast(a, b, broadcast, axis))

    def lower(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return run(a, b)

    lower_v1.__name__ = f"{op_type.lower()}_v1"
    lower.__name__ = op_type.lower()
    register(op_type, since=1)(lower_v1)
    register(op_type, since=7)(lower)


for _name, _fn in _ARITH.items():
    _register_arith(_name, _fn)


@register("Pow", since=1)
def pow_v1(a: torch.Tensor, b: torch.Tensor, *, broadcast: int = 0, axis: int | None = None) -> torch.Tensor:
    return pow_(a, legacy_broadcast(a, b, broadcast, axis))


@register("Pow", since=7)
def pow_(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The result has the base's type (opset 12 allows a different exponent type)."""
    dtype, (wa, wb) = widen(a, b)
    if wa.dtype.is_floating_point:
        y = torch.pow(wa, wb.to(wa.dtype) if not wb.dtype.is_floating_point else wb)
    elif wb.dtype.is_floating_point:
        y = torch.pow(wa.to(wb.dtype), wb)
    else:
        y = torch.pow(wa, wb.to(wa.dtype))
    return y.to(dtype)


@register("Mod", since=10)
def mod(a: torch.Tensor, b: torch.Tensor, *, fmod: int = 0) -> torch.Tensor:
    """``fmod=1``: C fmod (sign of the dividend); ``fmod=0``: Python-style (sign of the divisor)."""
    dtype, (wa, wb) = widen(a, b)
    y = torch.fmod(wa, wb) if fmod else torch.remainder(wa, wb)
    return narrow(y, dtype)


@register("BitShift", since=11)
def bit_shift(a: torch.Tensor, b: torch.Tensor, *, direction: str) -> torch.Tensor:
    dtype, (wa, wb) = widen(a, b)
    if direction == "LEFT":
        y = torch.bitwise_left_shift(wa, wb)
        if dtype in (torch.uint16, torch.uint32):  # drop bits shifted past the type's width
            y = torch.bitwise_and(y, (1 << (8 * _itemsize(dtype))) - 1)
    else:
        y = torch.bitwise_right_shift(wa, wb)
    return narrow(y, dtype)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


# ---- unary math --------------------------------------------------------------------------------
def _unary(op_type: str, fn, since: int = 1) -> None:
    def lower(x: torch.Tensor) -> torch.Tensor:
        dtype, (wx,) = widen(x)
        return narrow(fn(wx), dtype)

    lower.__name__ = op_type.lower()
    lower.__qualname__ = lower.__name__
    register(op_type, since=since)(lower)


_UNARY = {
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Sqrt": torch.sqrt,
    "Exp": torch.exp,
    "Log": torch.log,
    "Reciprocal": torch.reciprocal,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Round": torch.round,  # round half to even, as ONNX
    "Sign": torch.sign,
    "Erf": torch.erf,
    "Sin": torch.sin,
    "Cos": torch.cos,
    "Tan": torch.tan,
    "Asin": torch.asin,
    "Acos": torch.acos,
    "Atan": torch.atan,
    "Sinh": torch.sinh,
    "Cosh": torch.cosh,
    "Asinh": torch.asinh,
    "Acosh": torch.acosh,
    "Atanh": torch.atanh,
    "IsNaN": torch.isnan,
    "Not": torch.logical_not,
}
for _name, _fn in _UNARY.items():
    _unary(_name, _fn)


@register("BitwiseNot", since=18)
def bitwise_not(x: torch.Tensor) -> torch.Tensor:
    if x.dtype in (torch.uint16, torch.uint32, torch.uint64):
        bits = 8 * _itemsize(x.dtype)
        if bits < 64:
            return torch.bitwise_xor(x.to(torch.int64), (1 << bits) - 1).to(x.dtype)
        return torch.bitwise_not(x.view(torch.int64)).view(x.dtype)
    return torch.bitwise_not(x)


@register("IsInf", since=10)
def is_inf(x: torch.Tensor, *, detect_negative: int = 1, detect_positive: int = 1) -> torch.Tensor:
    if detect_negative and detect_positive:
        return torch.isinf(x)
    if detect_negative:
        return torch.isneginf(x)
    if detect_positive:
        return torch.isposinf(x)
    return torch.zeros_like(x, dtype=torch.bool)


# ---- comparison and logic ----------------------------------------------------------------------
def _compare(op_type: str, fn, versions: tuple[int, ...]) -> None:
    def lower_v1(a, b, *, broadcast: int = 0, axis: int | None = None):
        return lower(a, legacy_broadcast(a, b, broadcast, axis))

    def lower(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _, (wa, wb) = widen(a, b)
        if wb.dtype != wa.dtype:
            wb = wb.to(wa.dtype)
        return fn(wa, wb)

    lower.__name__ = op_type.lower()
    lower_v1.__name__ = op_type.lower() + "_v1"
    if versions[0] < 7:
        register(op_type, since=versions[0])(lower_v1)
        versions = versions[1:]
    for v in versions:
        register(op_type, since=v)(lower)


_compare("Equal", torch.eq, (1, 7))


@register("Equal", since=19)
def equal(a: Any, b: Any) -> torch.Tensor:
    """Equal-19 also compares string tensors (numpy arrays of ``str``), elementwise with broadcasting."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return torch.from_numpy(np.asarray(np.asarray(a) == np.asarray(b), dtype=bool))
    _, (wa, wb) = widen(a, b)
    return torch.eq(wa, wb if wb.dtype == wa.dtype else wb.to(wa.dtype))
_compare("Less", torch.lt, (1, 7))
_compare("Greater", torch.gt, (1, 7))
_compare("LessOrEqual", torch.le, (12,))
_compare("GreaterOrEqual", torch.ge, (12,))
_compare("And", torch.logical_and, (1, 7))
_compare("Or", torch.logical_or, (1, 7))
_compare("Xor", torch.logical_xor, (1, 7))


def _bitwise(op_type: str, fn) -> None:
    def lower(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        dtype, (wa, wb) = widen(a, b)
        return narrow(fn(wa, wb), dtype)

    lower.__name__ = op_type.lower()
    register(op_type, since=18)(lower)


_bitwise("BitwiseAnd", torch.bitwise_and)
_bitwise("BitwiseOr", torch.bitwise_or)
_bitwise("BitwiseXor", torch.bitwise_xor)


@register("Where", since=9)
def where(cond: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dtype, (wa, wb) = widen(a, b)
    return narrow(torch.where(cond.to(torch.bool), wa, wb), dtype)


# ---- variadic ----------------------------------------------------------------------------------
def _variadic(op_type: str, fn, finish=None) -> None:
    def lower(*xs: torch.Tensor) -> torch.Tensor:
        xs = tuple(x for x in xs if x is not None)
        dtype, wide = widen(*xs)
        y = functools.reduce(fn, wide)
        if finish is not None:
            y = finish(y, len(xs))
        return narrow(y, dtype)

    lower.__name__ = op_type.lower()
    register(op_type, since=1)(lower)


_variadic("Max", torch.maximum)
_variadic("Min", torch.minimum)
_variadic("Sum", torch.add)
_variadic("Mean", torch.add, finish=lambda y, n: y / n)


# ---- clip --------------------------------------------------------------------------------------
_FLT_MAX = 3.4028234663852886e38


@register("Clip", since=1)
def clip_v1(x: torch.Tensor, *, min: float = -_FLT_MAX, max: float = _FLT_MAX) -> torch.Tensor:
    return torch.clamp(x, min, max)


@register("Clip", since=11)
def clip(x: torch.Tensor, lo: torch.Tensor | None = None, hi: torch.Tensor | None = None) -> torch.Tensor:
    """``min(max(x, lo), hi)``: when lo > hi every element becomes hi, as in ONNX."""
    dtype, (y, lo, hi) = widen(x, lo, hi)
    if lo is not None:
        y = torch.maximum(y, lo.to(y.dtype))
    if hi is not None:
        y = torch.minimum(y, hi.to(y.dtype))
    return narrow(y, dtype)


# ---- cast --------------------------------------------------------------------------------------
_FLOAT8 = (torch.float8_e4m3fn, torch.float8_e4m3fnuz, torch.float8_e5m2, torch.float8_e5m2fnuz)
_FNUZ = (torch.float8_e4m3fnuz, torch.float8_e5m2fnuz)
#: float8 type -> the least |x| that rounds (to nearest even, exponent unbounded) above the largest
#: finite value: E4M3FN's 448 (1.110b * 2**8) is even, so its tie 464 stays; the others' maxima are odd.
_FLOAT8_OVERFLOW = {
    torch.float8_e4m3fn: (464.0, False),  # (threshold, whether the threshold itself overflows)
    torch.float8_e4m3fnuz: (248.0, True),
    torch.float8_e5m2: (61440.0, True),
    torch.float8_e5m2fnuz: (61440.0, True),
}


def _cast_float8(x: torch.Tensor, dtype: torch.dtype, saturate: int, fnuz_inf_nan: bool) -> torch.Tensor:
    """The ONNX Cast tables for float8 (round to nearest even in every case)."""
    xf = x.to(torch.float32)
    fmax = torch.finfo(dtype).max
    if saturate:  # out of range and +/-inf give +/-FLT_MAX, except inf to FNUZ before Cast-24: NaN
        y = torch.clamp(xf, -fmax, fmax).to(dtype)
        if fnuz_inf_nan and dtype in _FNUZ:
            y = torch.where(torch.isinf(xf), torch.full_like(y, math.nan), y)
        return y
    limit, inclusive = _FLOAT8_OVERFLOW[dtype]
    a = xf.abs()
    overflow = (a >= limit) if inclusive else (a > limit)  # infinities included
    y = torch.clamp(xf, -fmax, fmax).to(dtype)
    special = torch.where(xf < 0, -math.inf, math.inf) if dtype == torch.float8_e5m2 else torch.full_like(xf, math.nan)
    return torch.where(overflow, special.to(dtype), y)


def cast_to(
    x: torch.Tensor, dtype: torch.dtype, saturate: int = 1, round_mode: str = "up", *, fnuz_inf_nan: bool = False
) -> torch.Tensor:
    """ONNX Cast semantics: float8 targets follow the Cast tables (``saturate``; ``fnuz_inf_nan``: +/-inf
    to E4M3FNUZ/E5M2FNUZ gives NaN even when saturating, as Cast-19 to Cast-23 say); the small types
    (int4, float4_e2m1fn, float8_e8m0fnu...) convert as ``small_dtypes.encode`` says."""
    if x.dtype == dtype:
        return x
    if is_small(dtype):
        return encode(x, dtype, saturate, round_mode)
    x = decode(x)  # a small-type source: its values (int8/uint8/float32)
    if x.dtype == dtype:
        return x
    if dtype in _FLOAT8:
        return _cast_float8(x, dtype, saturate, fnuz_inf_nan)
    if dtype == torch.bool:
        return x != 0
    return x.to(dtype)


def _to_code(to) -> int:
    if isinstance(to, str):  # opset 1 spells the type as a string ("FLOAT")
        from onnx import TensorProto

        return TensorProto.DataType.Value(to.upper())
    return int(to)


@register("Cast", since=1)
def cast_v1(x: torch.Tensor, *, to, saturate: int = 1, round_mode: str = "up") -> torch.Tensor:
    return cast_to(x, dtype_from_onnx(_to_code(to)), saturate, round_mode, fnuz_inf_nan=True)


@register("Cast", since=24)
def cast(x: torch.Tensor, *, to, saturate: int = 1, round_mode: str = "up") -> torch.Tensor:
    return cast_to(x, dtype_from_onnx(_to_code(to)), saturate, round_mode)


@register("CastLike", since=15)
def cast_like_v15(x: torch.Tensor, target: torch.Tensor, *, saturate: int = 1, round_mode: str = "up") -> torch.Tensor:
    return cast_to(x, target.dtype, saturate, round_mode, fnuz_inf_nan=True)


@register("CastLike", since=24)
def cast_like(x: torch.Tensor, target: torch.Tensor, *, saturate: int = 1, round_mode: str = "up") -> torch.Tensor:
    return cast_to(x, target.dtype, saturate, round_mode)


@register("BitCast", since=26)
def bit_cast(x: torch.Tensor, *, to: int) -> torch.Tensor:
    """Reinterpret the bits as another type of the same width."""
    dtype = dtype_from_onnx(to)
    if dtype == torch.bool:
        return x.view(torch.uint8) != 0
    if x.dtype == torch.bool:
        return x.to(torch.uint8).view(dtype)
    return x.reshape(-1).view(dtype).reshape(x.shape)
