"""Learning curves as a PNG, without matplotlib: axes, grid, tick labels, one polyline per series, legend."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .font import GLYPH_HEIGHT, render_text
from .png import write_png

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


def nice_ticks(low: float, high: float, count: int = 5, integer: bool = False) -> np.ndarray:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering ``[low, high]``.

    With ``integer`` the step is a whole number of 1, 2 or 5 times a power of ten (epoch axes).
    """
    if not math.isfinite(low) or not math.isfinite(high):
        raise ValueError(f"tick range must be finite, got {low}, {high}")
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


class _Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.pixels = np.empty((height, width, 3), dtype=np.uint8)
        self.pixels[:] = _WHITE

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int]) -> None:
        h, w = self.pixels.shape[:2]
        x0, x1 = max(0, min(x0, x1)), min(w, max(x0, x1) + 1)
        y0, y1 = max(0, min(y0, y1)), min(h, max(y0, y1) + 1)
        if x0 < x1 and y0 < y1:
            self.pixels[y0:y1, x0:x1] = color

    def frame(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int]) -> None:
        self.rect(x0, y0, x1, y0, color)
        self.rect(x0, y1, x1, y1, color)
        self.rect(x0, y0, x0, y1, color)
        self.rect(x1, y0, x1, y1, color)

    def text(self, x: int, y: int, text: str, color: tuple[int, int, int], anchor: str = "left") -> None:
        mask = render_text(text)
        if anchor == "right":
            x -= mask.shape[1]
        elif anchor == "center":
            x -= mask.shape[1] // 2
        h, w = self.pixels.shape[:2]
        ys, xs = np.nonzero(mask)
        ys, xs = ys + y, xs + x
        keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        self.pixels[ys[keep], xs[keep]] = color

    def polyline(self, xs: np.ndarray, ys: np.ndarray, color: tuple[int, int, int], clip: tuple) -> None:
        x_min, y_min, x_max, y_max = clip
        points_x, points_y = [xs[:1]], [ys[:1]]
        for i in range(len(xs) - 1):
            n = int(max(abs(xs[i + 1] - xs[i]), abs(ys[i + 1] - ys[i]))) * 2 + 2
            t = np.linspace(0.0, 1.0, n)
            points_x.append(xs[i] + t * (xs[i + 1] - xs[i]))
            points_y.append(ys[i] + t * (ys[i + 1] - ys[i]))
        px = np.rint(np.concatenate(points_x)).astype(int)
        py = np.rint(np.concatenate(points_y)).astype(int)
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            qx, qy = px + dx, py + dy
            keep = (qx >= x_min) & (qx <= x_max) & (qy >= y_min) & (qy <= y_max)
            self.pixels[qy[keep], qx[keep]] = color


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
    curves = {name: np.asarray(values, dtype=np.float64).ravel() for name, values in series.items()}
    curves = {name: values for name, values in curves.items() if values.size}
    if not curves:
        raise ValueError("nothing to plot: every series is empty")
    longest = max(values.size for values in curves.values())
    xs_all = np.arange(1, longest + 1, dtype=np.float64) if x is None else np.asarray(x, dtype=np.float64)
    if xs_all.size < longest:
        raise ValueError(f"x has {xs_all.size} values but a series has {longest}")
    finite = np.concatenate([values[np.isfinite(values)] for values in curves.values()])
    if finite.size == 0:
        raise ValueError("nothing to plot: no finite value in any series")
    y_ticks = nice_ticks(float(finite.min()), float(finite.max()))
    whole = bool(np.all(xs_all == np.round(xs_all)))
    x_ticks = nice_ticks(float(xs_all[:longest].min()), float(xs_all[:longest].max()), integer=whole)
    y_labels = [_label(v) for v in y_ticks]
    left = 14 + 6 * max(len(s) for s in y_labels)
    top, right, bottom = (26 if title else 14), width - 16, height - 34
    if right - left < 40 or bottom - top < 40:
        raise ValueError(f"image {width}x{height} is too small for a plot")
    canvas = _Canvas(width, height)

    def to_px(xv: np.ndarray, yv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fx = (xv - x_ticks[0]) / (x_ticks[-1] - x_ticks[0])
        fy = (yv - y_ticks[0]) / (y_ticks[-1] - y_ticks[0])
        return left + fx * (right - left), bottom - fy * (bottom - top)

    for value, label in zip(y_ticks, y_labels):
        _, py = to_px(np.array([x_ticks[0]]), np.array([value]))
        row = int(round(py[0]))
        canvas.rect(left, row, right, row, _GRID)
        canvas.rect(left - 4, row, left - 1, row, _FRAME)
        canvas.text(left - 7, row - GLYPH_HEIGHT // 2, label, _BLACK, anchor="right")
    for value in x_ticks:
        px, _ = to_px(np.array([value]), np.array([y_ticks[0]]))
        col = int(round(px[0]))
        canvas.rect(col, top, col, bottom, _GRID)
        canvas.rect(col, bottom + 1, col, bottom + 4, _FRAME)
        canvas.text(col, bottom + 8, _label(value), _BLACK, anchor="center")
    canvas.frame(left, top, right, bottom, _FRAME)
    canvas.text((left + right) // 2, height - 12, xlabel, _BLACK, anchor="center")
    if title:
        canvas.text((left + right) // 2, 8, title, _BLACK, anchor="center")

    plot_area = (left + 1, top + 1, right - 1, bottom - 1)
    for index, values in enumerate(curves.values()):
        color = PALETTE[index % len(PALETTE)]
        ok = np.isfinite(values)
        px, py = to_px(xs_all[: values.size], values)
        # Draw each run of consecutive finite points as its own polyline.
        breaks = np.flatnonzero(np.diff(ok.astype(int)) != 0) + 1
        for start, stop in zip(np.r_[0, breaks], np.r_[breaks, values.size]):
            if ok[start]:
                canvas.polyline(px[start:stop], py[start:stop], color, plot_area)

    legend_w = 30 + 6 * max(len(name) for name in curves)
    legend_h = 6 + 12 * len(curves)
    lx0, ly0 = right - 8 - legend_w, top + 8
    canvas.rect(lx0, ly0, lx0 + legend_w, ly0 + legend_h, _WHITE)
    canvas.frame(lx0, ly0, lx0 + legend_w, ly0 + legend_h, _FRAME)
    for index, name in enumerate(curves):
        row = ly0 + 6 + 12 * index
        color = PALETTE[index % len(PALETTE)]
        canvas.rect(lx0 + 5, row + 2, lx0 + 20, row + 4, color)
        canvas.text(lx0 + 25, row, name, _BLACK)
    return canvas.pixels


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
    pixels = render_learning_curves(series, x, width=width, height=height, title=title, xlabel=xlabel)
    return write_png(path, pixels)
