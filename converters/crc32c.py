"""CRC-32C (Castagnoli), as used by LevelDB tables and TensorFlow checkpoint bundles, in numpy.

Small inputs go through a table-driven byte loop. Large inputs are cut into N equal chunks whose CRC
registers are advanced together, one 16-bit word per numpy step (a 65536-entry table), and then combined
pairwise with the linear "append L zero bytes" operator; a 100 MB buffer takes well under a second.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["crc32c", "mask", "unmask", "masked_crc32c"]

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_MASK_DELTA = 0xA282EAD8
_VECTOR_MIN = 8192  # below this a plain loop is faster than numpy's per-call overhead


def _byte_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _byte_table()
_TABLE_NP = np.array(_TABLE, dtype=np.uint32)


@lru_cache(maxsize=1)
def _word_table() -> np.ndarray:
    """T16[x] = register after two zero-byte steps from the 16-bit state x."""
    x = np.arange(65536, dtype=np.uint32)
    s = _TABLE_NP[x & 0xFF] ^ (x >> 8)
    return _TABLE_NP[s & 0xFF] ^ (s >> 8)


def _update_bytes(state: int, data: bytes | bytearray | memoryview) -> int:
    table = _TABLE
    for b in bytes(data):
        state = table[(state ^ b) & 0xFF] ^ (state >> 8)
    return state


# A linear operator on 32-bit registers is kept as the list of its 32 column images.
def _apply(op: list[int], x: int) -> int:
    out = 0
    k = 0
    while x:
        if x & 1:
            out ^= op[k]
        x >>= 1
        k += 1
    return out


def _compose(a: list[int], b: list[int]) -> list[int]:
    """a after b."""
    return [_apply(a, col) for col in b]


@lru_cache(maxsize=64)
def _zeros_operator(nbytes: int) -> tuple[int, ...]:
    """Operator advancing a register over ``nbytes`` zero bytes (square-and-multiply)."""
    one = [_update_bytes(1 << k, b"\x00") for k in range(32)]
    result = [1 << k for k in range(32)]
    base = one
    n = nbytes
    while n:
        if n & 1:
            result = _compose(base, result)
        n >>= 1
        if n:
            base = _compose(base, base)
    return tuple(result)


def _byte_tables(op: tuple[int, ...]) -> list[np.ndarray]:
    tables = []
    for b in range(4):
        t = np.zeros(256, dtype=np.uint32)
        for j in range(8):
            t[1 << j : 2 << j] = t[: 1 << j] ^ np.uint32(op[8 * b + j])
        tables.append(t)
    return tables


def _apply_np(tables: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    return tables[0][x & 0xFF] ^ tables[1][(x >> 8) & 0xFF] ^ tables[2][(x >> 16) & 0xFF] ^ tables[3][x >> 24]


def _update_vectorized(state: int, data: memoryview) -> int:
    n = len(data)
    nchunks = max(64, min(n // 512, 1 << 16))
    chunk = (n // nchunks) & ~7
    words = np.frombuffer(data[: nchunks * chunk], dtype="<u2").reshape(nchunks, chunk // 2)
    columns = np.ascontiguousarray(words.T)
    regs = np.zeros(nchunks, dtype=np.uint32)
    regs[0] = state
    t16 = _word_table()
    for col in columns:
        regs = t16[(regs ^ col) & 0xFFFF] ^ (regs >> 16)
    # combine: total = XOR_i Z(chunk)^(n-1-i) regs[i]; pad in front with zero registers
    size = 1 << (nchunks - 1).bit_length()
    if size != nchunks:
        regs = np.concatenate([np.zeros(size - nchunks, dtype=np.uint32), regs])
    span = chunk
    while len(regs) > 1:
        tables = _byte_tables(_zeros_operator(span))
        regs = _apply_np(tables, regs[0::2]) ^ regs[1::2]
        span *= 2
    state = int(regs[0])
    return _update_bytes(state, data[nchunks * chunk :])


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C of ``data``; pass a previous result as ``crc`` to extend it over more data."""
    view = memoryview(data).cast("B")
    state = (crc ^ 0xFFFFFFFF) & 0xFFFFFFFF
    if len(view) >= _VECTOR_MIN:
        state = _update_vectorized(state, view)
    else:
        state = _update_bytes(state, view)
    return state ^ 0xFFFFFFFF


def mask(crc: int) -> int:
    """LevelDB/TensorFlow checksum masking: rotate right by 15 bits and add a constant."""
    crc &= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    """Inverse of :func:`mask`."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """``mask(crc32c(data))``: the form stored in TF bundle entries and table block trailers."""
    return mask(crc32c(data))
