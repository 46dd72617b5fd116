"""Raster pictures (PNG) through Pillow, shared by the graph pictures and the learning-curve plots.

Pillow is a dependency of graphdnn (SVG pictures need nothing). Text uses the
scalable font that ships inside Pillow's wheel (``ImageFont.load_default(size=...)``, Pillow >= 10.1), so
names keep their case and any size is sharp.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from graphdnn.atomic import atomic_write
from graphdnn.errors import GraphDNNError

__all__ = ["Canvas", "pillow", "text_width", "write_png"]

Color = tuple[int, int, int]
Point = tuple[float, float]


def pillow() -> Any:
    """The ``PIL`` modules this module uses (``Image``, ``ImageDraw``, ``ImageFont``), or a clear error."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        raise GraphDNNError('PNG pictures need Pillow: pip install "pillow>=10.1" (or write an .svg)') from None
    return Image, ImageDraw, ImageFont


@functools.lru_cache(maxsize=16)
def _font(size: int) -> Any:
    _, _, image_font = pillow()
    try:
        return image_font.load_default(size=size)
    except TypeError:  # Pillow < 10.1: no scalable default font
        raise GraphDNNError('PNG pictures need Pillow 10.1 or newer: pip install -U "pillow>=10.1"') from None


def text_width(text: str, size: int) -> float:
    """The width in pixels of ``text`` in the default font at ``size`` pixels."""
    return float(_font(size).getlength(text))


class Canvas:
    """An RGB picture with filled/outlined (optionally dashed) rectangles, polylines, polygons and text."""

    def __init__(self, width: int, height: int, background: Color = (255, 255, 255)) -> None:
        image, image_draw, _ = pillow()
        self.image = image.new("RGB", (max(int(width), 1), max(int(height), 1)), background)
        self._draw = image_draw.Draw(self.image)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return self.image.size

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: Color | None = None,
             outline: Color | None = None, width: int = 1, radius: float = 0, dashed: bool = False) -> None:
        """A rectangle; ``dashed`` draws its outline as dashes."""
        box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        if radius:
            self._draw.rounded_rectangle(box, radius, fill=fill, outline=None if dashed else outline, width=width)
        else:
            self._draw.rectangle(box, fill=fill, outline=None if dashed else outline, width=width)
        if dashed and outline is not None:
            a, b, c, d = box
            for side in (((a, b), (c, b)), ((c, b), (c, d)), ((c, d), (a, d)), ((a, d), (a, b))):
                self.line(list(side), outline, width, dash=(5 * width, 3 * width))

    def line(self, points: Sequence[Point], color: Color, width: int = 1,
             dash: tuple[float, float] | None = None) -> None:
        """A polyline through ``points``; ``dash=(on, off)`` draws it dashed."""
        if len(points) < 2:
            return
        if dash is None:
            self._draw.line([tuple(p) for p in points], fill=color, width=width, joint="curve")
            return
        on, off = dash
        pattern, drawn = on + off, 0.0
        for (xa, ya), (xb, yb) in zip(points, points[1:]):
            length = float(np.hypot(xb - xa, yb - ya))
            s = 0.0
            while s < length:
                phase = (drawn + s) % pattern
                step = min((on - phase) if phase < on else (pattern - phase), length - s)
                if phase < on:
                    t0, t1 = s / length, (s + step) / length
                    self._draw.line([(xa + t0 * (xb - xa), ya + t0 * (yb - ya)),
                                     (xa + t1 * (xb - xa), ya + t1 * (yb - ya))], fill=color, width=width)
                s += max(step, 1e-6)
            drawn += length

    def polygon(self, points: Sequence[Point], fill: Color) -> None:
        """A filled polygon (arrow heads, legend marks)."""
        self._draw.polygon([tuple(p) for p in points], fill=fill)

    def text(self, x: float, y: float, text: str, color: Color = (20, 20, 20), size: int = 12,
             anchor: str = "left") -> None:
        """``text`` with its top at ``y``, starting (``left``), centred (``center``) or ending (``right``) at ``x``."""
        code = {"left": "la", "center": "ma", "right": "ra"}[anchor]
        self._draw.text((x, y), text, fill=color, font=_font(size), anchor=code)

    def pixels(self) -> np.ndarray:
        """The picture as an ``(H, W, 3)`` uint8 array."""
        return np.asarray(self.image, dtype=np.uint8).copy()

    def png(self) -> bytes:
        """The picture encoded as PNG."""
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG")
        return buffer.getvalue()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the picture to ``path`` as PNG, atomically (temporary file, then rename)."""
        data = self.png()
        return atomic_write(path, lambda f: f.write(data), fsync=True)


def write_png(path: str | os.PathLike[str], pixels: np.ndarray) -> Path:
    """Write a ``uint8`` image shaped ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` to ``path`` as PNG."""
    image, _, _ = pillow()
    array = np.asarray(pixels)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or 0 in array.shape:
        raise GraphDNNError(f"write_png needs a non-empty uint8 (H, W[, 3|4]) image, got {array.dtype} {array.shape}")
    buffer = io.BytesIO()
    image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    data = buffer.getvalue()
    return atomic_write(path, lambda f: f.write(data), fsync=True)
