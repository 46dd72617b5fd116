"""A minimal PNG encoder (numpy + zlib + struct): 8-bit grayscale, RGB or RGBA, no filtering."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from graphdnn.atomic import atomic_write

__all__ = ["encode_png", "write_png"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (gray, RGB, RGBA)


def _chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def encode_png(pixels: np.ndarray, compress_level: int = 9) -> bytes:
    """PNG bytes of a ``uint8`` image shaped ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``."""
    image = np.asarray(pixels)
    if image.dtype != np.uint8:
        raise TypeError(f"encode_png needs uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in _COLOR_TYPES or 0 in image.shape:
        raise ValueError(f"encode_png needs a non-empty (H, W[, 1|3|4]) image, got shape {image.shape}")
    height, width, channels = image.shape
    rows = np.ascontiguousarray(image).reshape(height, width * channels)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    return b"".join(
        [
            PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(raw, compress_level)),
            _chunk(b"IEND", b""),
        ]
    )


def write_png(path: str | os.PathLike[str], pixels: np.ndarray) -> Path:
    """Encode ``pixels`` and write them to ``path`` atomically (temporary file, then rename)."""
    data = encode_png(pixels)
    return atomic_write(path, lambda f: f.write(data), fsync=True)
