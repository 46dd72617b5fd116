"""ONNX's small element types: int4, uint4, int2, uint2, float4_e2m1fn (sub-byte) and float8_e8m0fnu.

Torch has no arithmetic for them, so graphdnn holds them **unpacked, one element per byte**, in a
tensor whose torch dtype names the type; the dtype travels with the tensor through compiled code,
so ``CastLike`` and ``QuantizeLinear`` see which type a target or zero point has:

========================  ==========================  ==============================================
graphdnn dtype            torch dtype                 the byte of each element holds
========================  ==========================  ==============================================
``int4`` / ``int2``       ``torch.int4``/``int2``     the value, as an int8 (two's complement)
``uint4`` / ``uint2``     ``torch.uint4``/``uint2``   the value, as a uint8
``float4_e2m1fn``         ``torch.float4_e2m1fn_x2``  the 4-bit E2M1 code in the low nibble (torch's
                                                      two-per-byte packing is *not* used)
``float8_e8m0fnu``        ``torch.float8_e8m0fnu``    the E8M0 exponent byte (torch's own layout)
========================  ==========================  ==============================================

Torch implements almost nothing for the int/uint shells (no copy, indexing or printing), so
lowerings read such tensors through ``decode`` (values in int8/uint8/float32) and write them with
``encode`` (ONNX ``Cast`` rounding and saturation); ``storage``/``clone`` reach the raw bytes.
Packing two or four elements per byte happens only in files (``graphdnn.converters.onnx_tensors``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from graphdnn.errors import ArgumentTypeError, GraphError

__all__ = ["SMALL_DTYPES", "clone", "decode", "encode", "int_range", "is_small", "storage"]


@dataclass(frozen=True)
class SmallType:
    """One small element type: its graphdnn name, ONNX code, bit width and byte storage dtype."""

    name: str
    onnx_code: int
    bits: int
    storage: torch.dtype
    kind: str  # "int" (signed), "uint", "float4" or "e8m0"


def _table() -> dict[torch.dtype, SmallType]:
    rows = [
        ("uint4", "uint4", 21, 4, torch.uint8, "uint"),
        ("int4", "int4", 22, 4, torch.int8, "int"),
        ("float4_e2m1fn_x2", "float4_e2m1fn", 23, 4, torch.uint8, "float4"),
        ("float8_e8m0fnu", "float8_e8m0fnu", 24, 8, torch.uint8, "e8m0"),
        ("uint2", "uint2", 25, 2, torch.uint8, "uint"),
        ("int2", "int2", 26, 2, torch.int8, "int"),
    ]
    table = {}
    for attr, name, code, bits, store, kind in rows:
        dtype = getattr(torch, attr, None)  # older torch lacks some: those types are then unsupported
        if isinstance(dtype, torch.dtype):
            table[dtype] = SmallType(name, code, bits, store, kind)
    return table


#: torch dtype -> its ``SmallType``.
SMALL_DTYPES: dict[torch.dtype, SmallType] = _table()

_E8M0_NAN = 0xFF
_E8M0_MAX = 0xFE


def is_small(dtype: torch.dtype) -> bool:
    """Whether ``dtype`` is one of the small types above."""
    return dtype in SMALL_DTYPES


def storage(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a small-type tensor as int8/uint8 (a view); other tensors as they are."""
    info = SMALL_DTYPES.get(t.dtype)
    return t if info is None else t.view(info.storage)


def clone(t: torch.Tensor) -> torch.Tensor:
    """``t.clone()`` that also works for the small types (torch cannot copy the int/uint shells)."""
    return storage(t).clone().view(t.dtype) if is_small(t.dtype) else t.clone()


def int_range(dtype: torch.dtype) -> tuple[int, int]:
    """(min, max) of an integer dtype, small ones included."""
    info = SMALL_DTYPES.get(dtype)
    if info is None:
        i = torch.iinfo(dtype)
        return int(i.min), int(i.max)
    return _small_int_range(info)


def _small_int_range(info: SmallType) -> tuple[int, int]:
    """(min, max) of a small integer type."""
    if info.kind == "int":
        return -(1 << (info.bits - 1)), (1 << (info.bits - 1)) - 1
    if info.kind == "uint":
        return 0, (1 << info.bits) - 1
    raise ArgumentTypeError(f"{info.name} is not an integer type")


# ------------------------------------------------------------------------------------------------
# Reading: element values in a dtype torch computes with
# ------------------------------------------------------------------------------------------------
def decode(t: torch.Tensor) -> torch.Tensor:
    """The values of a small-type tensor: int8/uint8 for the integer types (a view), float32 for
    float4_e2m1fn and float8_e8m0fnu (exact). Other tensors are returned as they are."""
    info = SMALL_DTYPES.get(t.dtype)
    if info is None:
        return t
    raw = t.view(info.storage)
    if info.kind in ("int", "uint"):
        return raw
    if info.kind == "e8m0":  # 2 ** (code - 127); code 0xFF is NaN
        code = raw.to(torch.int32)
        value = torch.exp2((code - 127).to(torch.float32))
        return torch.where(code == _E8M0_NAN, torch.full_like(value, float("nan")), value)
    code = raw.to(torch.int32)  # float4 E2M1: S.EE.M, bias 1, subnormal when EE == 0
    exp = (code >> 1) & 3
    man = (code & 1).to(torch.float32)
    mag = torch.where(exp == 0, man * 0.5, torch.exp2(exp.to(torch.float32) - 1.0) * (1.0 + man * 0.5))
    return torch.where((code & 8) != 0, -mag, mag)


# ------------------------------------------------------------------------------------------------
# Writing: ONNX Cast semantics
# ------------------------------------------------------------------------------------------------
def encode(x: torch.Tensor, dtype: torch.dtype, saturate: int = 1, round_mode: str = "up") -> torch.Tensor:
    """``x`` (any numeric dtype, small ones included) cast to small type ``dtype`` as ONNX ``Cast`` does.

    * int4/uint4/int2/uint2 from a float: rounded to the nearest integer, ties to even (the ONNX
      4-bit and 2-bit integer notes). A result outside the type's range, infinity and NaN are
      undefined in ONNX (``Cast``: float to fixed point, "undefined if OOR"); graphdnn gives 0 there,
      as the ONNX reference and its test data do. From an integer: the higher bits are discarded
      (two's complement), e.g. 8 -> -8 for int4; from bool: 0/1.
    * float4_e2m1fn (the ONNX float4 note): round to nearest even; beyond +/-6, and +/-infinity,
      saturate to +/-6; NaN gives 6; the sign of zero is kept. ``saturate`` does not apply.
    * float8_e8m0fnu: ``|x|`` rounded to a power of two per ``round_mode`` ("up": toward infinity,
      "down": toward zero, "nearest": ties up, i.e. up from 1.5 * 2**e). A finite ``x`` above
      E8M0_MAX = 2**127 or below E8M0_MIN = 2**-127 (0 included) and infinity become the nearest of
      E8M0_MAX/E8M0_MIN with ``saturate``, NaN without (the Cast table); NaN stays NaN. ONNX leaves
      negative values and -0 unspecified: graphdnn uses ``|x|``."""
    info = SMALL_DTYPES[dtype]
    x = decode(x)
    if info.kind in ("int", "uint"):
        return _encode_int(x, info).view(dtype)
    if info.kind == "float4":
        return _encode_float4(x).view(dtype)
    return _encode_e8m0(x, saturate, round_mode).view(dtype)


def _encode_int(x: torch.Tensor, info: SmallType) -> torch.Tensor:
    if x.dtype.is_floating_point:
        lo, hi = _small_int_range(info)
        r = torch.round(x.to(torch.float64))  # half to even
        v = torch.where((r >= lo) & (r <= hi), r, torch.zeros_like(r)).to(torch.int64)  # NaN fails both tests
        return v.to(info.storage)
    v = x.to(torch.int64)  # bool -> 0/1
    low = v & ((1 << info.bits) - 1)
    if info.kind == "int":
        low = torch.where(low >= (1 << (info.bits - 1)), low - (1 << info.bits), low)
    return low.to(info.storage)


def _encode_float4(x: torch.Tensor) -> torch.Tensor:
    xf = x.to(torch.float32)
    nan = torch.isnan(xf)
    negative = torch.signbit(xf) & ~nan
    a = torch.where(nan, torch.full_like(xf, 6.0), xf.abs()).clamp(max=6.0)
    # the E2M1 grid: steps of 0.5 below 2, of 1 in [2, 4), of 2 in [4, 6]; torch.round is half-to-even
    coarse = torch.where(a < 4.0, torch.round(a), torch.round(a * 0.5) * 2.0)
    q = torch.where(a < 2.0, torch.round(a * 2.0) * 0.5, coarse)
    code = torch.where(q < 2.0, q * 2.0, torch.where(q < 4.0, q + 2.0, q * 0.5 + 4.0)).to(torch.uint8)
    return torch.where(negative, code | 8, code)


def _encode_e8m0(x: torch.Tensor, saturate: int, round_mode: str) -> torch.Tensor:
    if round_mode not in ("up", "down", "nearest"):
        raise GraphError(f"Cast: round_mode must be 'up', 'down' or 'nearest', not {round_mode!r}")
    a = x.to(torch.float64).abs()  # exact for every float source; float32 subnormals become normal
    mant, exp = torch.frexp(a)  # a = mant * 2**exp, mant in [0.5, 1)
    e = (exp - 1).to(torch.int64)  # a = m * 2**e with m in [1, 2)
    m = mant * 2.0
    if round_mode == "up":
        e = e + (m > 1.0).to(torch.int64)
    elif round_mode == "nearest":
        e = e + (m >= 1.5).to(torch.int64)
    code = (e + 127).clamp(0, _E8M0_MAX)
    low = a < 2.0**-127  # 0 included
    high = a > 2.0**127  # infinity included
    if saturate:
        code = torch.where(low, torch.zeros_like(code), torch.where(high, torch.full_like(code, _E8M0_MAX), code))
    else:
        code = torch.where(low | high, torch.full_like(code, _E8M0_NAN), code)
    return torch.where(torch.isnan(a), torch.full_like(code, _E8M0_NAN), code).to(torch.uint8)
