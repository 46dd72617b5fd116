"""Protobuf wire-format writers for tests that build TF tables and protos by hand (the readers under
test live in ``graphdnn.converters.tf_proto``)."""

from __future__ import annotations


def varint(n: int) -> bytes:
    """``n`` as a base-128 varint (negative numbers as their 64-bit two's complement, as protobuf)."""
    n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def len_field(num: int, payload: bytes) -> bytes:
    """Field ``num`` of wire type 2 (length-delimited) holding ``payload``."""
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def varint_field(num: int, value: int) -> bytes:
    """Field ``num`` of wire type 0 (varint) holding ``value``."""
    return varint(num << 3) + varint(value)
