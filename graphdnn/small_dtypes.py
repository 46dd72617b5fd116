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
Packing two or four elements per byte happens only in files (``converters.onnx_tensors``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
    if info.kind == "int":
        return -(1 << (info.bits - 1)), (1 << (info.bits - 1)) - 1
    if info.kind == "uint":
        return 0, (1 << info.bits) - 1
    raise TypeError(f"{info.name} is not an integer type")


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

    * int4/uint4/int2/uint2: floats are truncated toward zero, then (like every integer narrowing)
      the higher bits are discarded: 8 -> -8 for int4, -1 -> 15 for uint4 (the ONNX reference).
    * float4_e2m1fn: round to nearest even, saturating to +/-6 (infinities too); NaN becomes 0 (the
      ONNX reference and test data; the float4 note's table says 6). The sign of zero is kept.
    * float8_e8m0fnu: the exponent of ``|x|`` rounded per ``round_mode`` ("up", "down", "nearest"),
      as ``onnx.numpy_helper.to_float8e8m0``; with ``saturate`` an overflow stays at the largest
      value and infinity becomes it (the Cast table), else both give NaN."""
    info = SMALL_DTYPES[dtype]
    x = decode(x)
    if info.kind in ("int", "uint"):
        return _encode_int(x, info).view(dtype)
    if info.kind == "float4":
        return _encode_float4(x).view(dtype)
    return _encode_e8m0(x, saturate, round_mode).view(dtype)


def _encode_int(x: torch.Tensor, info: SmallType) -> torch.Tensor:
    v = x.to(torch.int64)  # float -> int truncates toward zero; bool -> 0/1
    low = v & ((1 << info.bits) - 1)
    if info.kind == "int":
        low = torch.where(low >= (1 << (info.bits - 1)), low - (1 << info.bits), low)
    return low.to(info.storage)


def _encode_float4(x: torch.Tensor) -> torch.Tensor:
    xf = x.to(torch.float32)
    negative = torch.signbit(xf) & ~torch.isnan(xf)
    a = torch.nan_to_num(xf.abs(), nan=0.0).clamp(max=6.0)
    # the E2M1 grid: steps of 0.5 below 2, of 1 in [2, 4), of 2 in [4, 6]; torch.round is half-to-even
    coarse = torch.where(a < 4.0, torch.round(a), torch.round(a * 0.5) * 2.0)
    q = torch.where(a < 2.0, torch.round(a * 2.0) * 0.5, coarse)
    code = torch.where(q < 2.0, q * 2.0, torch.where(q < 4.0, q + 2.0, q * 0.5 + 4.0)).to(torch.uint8)
    return torch.where(negative, code | 8, code)


def _encode_e8m0(x: torch.Tensor, saturate: int, round_mode: str) -> torch.Tensor:
    bits = x.to(torch.float32).view(torch.int32)
    exp = (bits >> 23) & 0xFF
    frac = bits & 0x7FFFFF
    special = exp == 0xFF
    if round_mode == "up":
        up = frac > 0
    elif round_mode == "nearest":  # as the reference: the guard bit, and a lower bit or a nonzero exponent
        guard = (frac & 0x400000) != 0
        rest = (frac & 0x3FFFFF) != 0
        up = guard & (rest | (exp > 0))
    elif round_mode == "down":
        up = torch.zeros_like(special)
    else:
        raise ValueError(f"Cast: round_mode must be 'up', 'down' or 'nearest', not {round_mode!r}")
    if saturate:
        up = up & (exp != _E8M0_MAX)
    code = exp + (up & ~special).to(torch.int32)
    inf_code = _E8M0_MAX if saturate else _E8M0_NAN
    code = torch.where(special & (frac == 0), torch.full_like(code, inf_code), code)  # NaN stays 0xFF
    return code.to(torch.uint8)
