"""Learning curves as a PNG, without matplotlib: axes, grid, tick labels, one polyline per series, legend.

Rasterized by :mod:`graphdnn.raster` (Pillow, the ``draw`` extra), like the graph pictures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from graphdnn.errors import InputError
from graphdnn.raster import Canvas, text_width

__all__ = ["nice_ticks", "plot_learning_curves", "render_learning_curves"]

PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
)
_WHITE, _BLACK, _GRID, _FRAME = (255, 255, 255), (0, 0, 0), (225, 225, 225), (90, 90, 90)
_TEXT = 11  # font size in pixels


def nice_ticks(low: float, high: float, count: int = 5, integer: bool = False) -> np.ndarray:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering ``[low, high]``.

    With ``integer`` the step is a whole number of 1, 2 or 5 times a power of ten (epoch axes).
    """
    if not math.isfinite(low) or not math.isfinite(high):
        raise InputError(f"tick range must be finite, got {low}, {high}")
    if high <= low:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(count, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    multipliers = (1.0, 2.0, 5.0, 10.0) if integer else (1.0, 2.0, 2.5, 5.0, 10.0)
    step = next(m * magnitude for m in multipliers if m * magnitude >= raw * (1 - 1e-9))
    if integer:
        step = max(1.0, round(step))
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return np.arange(first, last + 1) * step


def _label(value: float) -> str:
    text = f"{value:.4g}"
    return "0" if text in ("-0", "0") else text


def render_learning_curves(
    series: Mapping[str, Sequence[float]],
    x: Sequence[float] | None = None,
    *,
    width: int = 640,
    height: int = 400,
    title: str | None = None,
    xlabel: str = "epoch",
) -> np.ndarray:
    """An ``(height, width, 3)`` uint8 image of every series against ``x`` (default 1, 2, ...)."""
    return _render(series, x, width=width, height=height, title=title, xlabel=xlabel).pixels()


def _render(series: Mapping[str, Sequence[float]], x: Sequence[float] | None, *, width: int, height: int,
            title: str | None, xlabel: str) -> Canvas:
    curves = {name: np.asarray(values, dtype=np.float64).ravel() for name, values in series.items()}
    curves = {name: values for name, values in curves.items() if values.size}
    if not curves:
        raise InputError("nothing to plot: every series is empty")
    longest = max(values.size for values in curves.values())
    xs_all = np.arange(1, longest + 1, dtype=np.float64) if x is None else np.asarray(x, dtype=np.float64)
    if xs_all.size < longest:
        raise InputError(f"x has {xs_all.size} values but a series has {longest}")
    finite = np.concatenate([values[np.isfinite(values)] for values in curves.values()])
    if finite.size == 0:
        raise InputError("nothing to plot: no finite value in any series")
    y_ticks = nice_ticks(float(finite.min()), float(finite.max()))
    whole = bool(np.all(xs_all == np.round(xs_all)))
    x_ticks = nice_ticks(float(xs_all[:longest].min()), float(xs_all[:longest].max()), integer=whole)
    y_labels = [_label(v) for v in y_ticks]
    left = 14 + int(max(text_width(s, _TEXT) for s in y_labels))
    top, right, bottom = (28 if title else 14), width - 16, height - 36
    if right - left < 40 or bottom - top < 40:
        raise InputError(f"image {width}x{height} is too small for a plot; pass a larger width= and height=")
    canvas = Canvas(width, height, _WHITE)

    def to_px(xv: np.ndarray, yv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fx = (xv - x_ticks[0]) / (x_ticks[-1] - x_ticks[0])
        fy = (yv - y_ticks[0]) / (y_ticks[-1] - y_ticks[0])
        return left + fx * (right - left), bottom - fy * (bottom - top)

    for value, label in zip(y_ticks, y_labels):
        _, py = to_px(np.array([x_ticks[0]]), np.array([value]))
        row = int(round(py[0]))
        canvas.line([(left, row), (right, row)], _GRID)
        canvas.line([(left - 4, row), (left - 1, row)], _FRAME)
        canvas.text(left - 7, row - _TEXT // 2 - 1, label, _BLACK, _TEXT, anchor="right")
    for value in x_ticks:
        px, _ = to_px(np.array([value]), np.array([y_ticks[0]]))
        col = int(round(px[0]))
        canvas.line([(col, top), (col, bottom)], _GRID)
        canvas.line([(col, bottom + 1), (col, bottom + 4)], _FRAME)
        canvas.text(col, bottom + 7, _label(value), _BLACK, _TEXT, anchor="center")
    canvas.rect(left, top, right, bottom, outline=_FRAME)
    canvas.text((left + right) // 2, height - 16, xlabel, _BLACK, _TEXT, anchor="center")
    if title:
        canvas.text((left + right) // 2, 7, title, _BLACK, _TEXT + 2, anchor="center")

    for index, values in enumerate(curves.values()):
        color = PALETTE[index % len(PALETTE)]
        ok = np.isfinite(values)
        px, py = to_px(xs_all[: values.size], values)
        # Draw each run of consecutive finite points as its own polyline (a lone point as a dot).
        breaks = np.flatnonzero(np.diff(ok.astype(int)) != 0) + 1
        for start, stop in zip(np.r_[0, breaks], np.r_[breaks, values.size]):
            if not ok[start]:
                continue
            if stop - start == 1:
                canvas.rect(px[start] - 1, py[start] - 1, px[start] + 1, py[start] + 1, fill=color)
            else:
                canvas.line(list(zip(px[start:stop].tolist(), py[start:stop].tolist())), color, 2)

    legend_w = 32 + int(max(text_width(name, _TEXT) for name in curves))
    legend_h = 6 + 14 * len(curves)
    lx0, ly0 = right - 8 - legend_w, top + 8
    canvas.rect(lx0, ly0, lx0 + legend_w, ly0 + legend_h, fill=_WHITE, outline=_FRAME)
    for index, name in enumerate(curves):
        row = ly0 + 5 + 14 * index
        color = PALETTE[index % len(PALETTE)]
        canvas.rect(lx0 + 5, row + 5, lx0 + 20, row + 7, fill=color)
        canvas.text(lx0 + 25, row, name, _BLACK, _TEXT)
    return canvas


def plot_learning_curves(
    series: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    x: Sequence[float] | None = None,
    *,
    width: int = 640,
    height: int = 400,
    title: str | None = None,
    xlabel: str = "epoch",
) -> Path:
    """Render the curves (see :func:`render_learning_curves`) and write them to ``path`` as a PNG."""
    return _render(series, x, width=width, height=height, title=title, xlabel=xlabel).save(path)
