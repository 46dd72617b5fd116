"""Pictures of graphs a person can read: text with its case, nothing clipped, edges routed around boxes,
skip connections distinct from a chain. Checked by rendering and measuring the SVG geometry and PNG pixels."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from helpers import frozen_book_dnn
from PIL import Image

import graphdnn as gd
from graphdnn import layers, nn
from graphdnn.draw import draw, plan, render_svg, scope_graph

SVG = "{http://www.w3.org/2000/svg}"
CHAR_W = 12 * 0.6  # a monospace character at font-size 12 is 0.6 em wide


def _cnn(name: str = "cnn") -> gd.Graph:
    """Two residual blocks and an inception-style block whose branches are concatenated."""
    g = gd.Graph(name)
    x = g.placeholder("images", (None, 3, 8, 8))
    h = nn.relu(layers.conv2d(x, 4, 3, padding="same", name="stem"))
    for b in range(2):
        with g.name_scope(f"block{b}"):
            y = nn.relu(layers.conv2d(h, 4, 3, padding="same", name=f"b{b}conv1"))
            y = layers.conv2d(y, 4, 3, padding="same", name=f"b{b}conv2")
            h = nn.relu(nn.add(h, y))
    with g.name_scope("mixed"):
        a = layers.conv2d(h, 2, 1, name="branch1x1")
        c = layers.conv2d(nn.relu(layers.conv2d(h, 2, 1, name="branch3x3a")), 2, 3, padding="same", name="branch3x3b")
        m = nn._op("Concat", [a, c, h], {"axis": 1}, name="concat", default="Concat")
    layers.dense(layers.flatten(layers.global_avg_pool2d(m)), 10, name="logits")
    return g


def _flatten_path(d: str) -> list[tuple[float, float]]:
    """The points of an SVG path made of M, L and C commands (Beziers sampled)."""
    tokens = re.findall(r"[MLC]|-?\d+(?:\.\d+)?", d)
    points: list[tuple[float, float]] = []
    i = 0
    while i < len(tokens):
        cmd = tokens[i]
        i += 1
        n = {"M": 1, "L": 1, "C": 3}[cmd]
        xy = [(float(tokens[i + 2 * k]), float(tokens[i + 2 * k + 1])) for k in range(n)]
        i += 2 * n
        if cmd == "C":
            p0, (p1, p2, p3) = points[-1], xy
            for t in np.linspace(0, 1, 33)[1:]:
                u = 1 - t
                points.append(tuple(u**3 * np.array(p0) + 3 * u * u * t * np.array(p1) + 3 * u * t * t * np.array(p2)
                                    + t**3 * np.array(p3)))
        else:
            points.extend(xy)
    return points


def _segment_hits_rect(p: tuple[float, float], q: tuple[float, float], rect: tuple[float, float, float, float]) -> bool:
    """Whether segment pq enters the interior of ``rect = (x0, y0, x1, y1)`` (Liang-Barsky clipping)."""
    x0, y0, x1, y1 = rect[0] + 0.5, rect[1] + 0.5, rect[2] - 0.5, rect[3] - 0.5
    dx, dy = q[0] - p[0], q[1] - p[1]
    t0, t1 = 0.0, 1.0
    for den, num in ((-dx, p[0] - x0), (dx, x1 - p[0]), (-dy, p[1] - y0), (dy, y1 - p[1])):
        if den == 0:
            if num < 0:
                return False
            continue
        t = num / den
        if den < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return False
    return True


def _svg_geometry(svg: str):
    root = ET.fromstring(svg)
    boxes = {}
    for group in root.iter(SVG + "g"):
        rect = group.find(SVG + "rect")
        x, y, w, h = (float(rect.get(k)) for k in ("x", "y", "width", "height"))
        boxes[group.find(SVG + "title").text] = (x, y, x + w, y + h)
    edges = []
    for path in root.findall(SVG + "path"):
        if path.get("class") in ("edge", "skip"):
            source, target = path.find(SVG + "title").text.split(" -> ")
            edges.append((source, target, path.get("class"), _flatten_path(path.get("d"))))
    return root, boxes, edges


@pytest.mark.parametrize("depth", [None, 2])
def test_svg_edges_never_cross_a_box_and_skips_are_marked(depth: int | None) -> None:
    g = _cnn()
    root, boxes, edges = _svg_geometry(render_svg(g, depth))
    want_boxes, want_edges = scope_graph(g, depth)
    assert set(boxes) == set(want_boxes)
    assert {(a, b) for a, b, _, _ in edges} == want_edges
    for a, b, _, points in edges:
        assert points[0][1] == pytest.approx(boxes[a][3]) and points[-1][1] == pytest.approx(boxes[b][1])
        for key, rect in boxes.items():
            if key in (a, b):
                continue
            hits = [_segment_hits_rect(p, q, rect) for p, q in zip(points, points[1:])]
            assert not any(hits), f"edge {a} -> {b} crosses box {key}"
    for (ka, ra), (kb, rb) in ((p, q) for p in boxes.items() for q in boxes.items() if p[0] < q[0]):
        overlap = min(ra[2], rb[2]) > max(ra[0], rb[0]) and min(ra[3], rb[3]) > max(ra[1], rb[1])
        assert not overlap, f"boxes {ka} and {kb} overlap"
    skips = {(a, b) for a, b, kind, _ in edges if kind == "skip"}
    if depth is None:  # each residual Add and the Concat get an input that passes the layers of its block
        assert ("block0/Relu_1", "block1/Add") in skips or ("Relu", "block0/Add") in skips
        assert sum(b.endswith("/Add") for _, b in skips) == 2 and any(b == "mixed/concat" for _, b in skips)
    # two inputs of one box enter at different points
    ends = {}
    for _, b, _, points in edges:
        ends.setdefault(b, []).append(round(points[-1][0], 1))
    assert all(len(set(xs)) == len(xs) for xs in ends.values())


def test_svg_text_keeps_case_and_fits_with_the_title() -> None:
    g = frozen_book_dnn()
    g.name = "a deliberately long graph name that is wider than the narrow chain of boxes it describes"
    root, boxes, _ = _svg_geometry(render_svg(g))
    width = float(root.get("width"))
    texts = {t.text for t in root.iter(SVG + "text")}
    for box in scope_graph(g)[0].values():
        assert set(box.lines()) <= texts
    assert "X" in texts and "y" in texts  # the inputs keep their case
    title = next(t for t in root.iter(SVG + "text") if t.get("class") == "title")
    assert title.text.startswith(g.name)
    assert float(title.get("x")) >= 0 and float(title.get("x")) + len(title.text) * CHAR_W <= width
    for group in root.iter(SVG + "g"):
        rect = group.find(SVG + "rect")
        right = float(rect.get("x")) + float(rect.get("width"))
        assert right <= width
        for t in group.findall(SVG + "text"):
            assert float(t.get("x")) + len(t.text) * CHAR_W <= right + 0.5, t.text


def test_png_has_the_laid_out_size_text_in_every_box_and_an_unclipped_title(tmp_path: Path) -> None:
    g = _cnn("a residual and concat network drawn to check that nothing is clipped")
    path = draw(g, tmp_path / "g.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB")).astype(int)
    pic = plan(g, None, "png")
    assert pixels.shape[:2] == (round(np.ceil(pic.height)), round(np.ceil(pic.width)))
    dark = pixels.max(axis=2) < 110
    for key, box in pic.boxes.items():
        inside = dark[int(box.y) + 3:int(box.y + box.h) - 3, int(box.x) + 3:int(box.x + box.w) - 3]
        assert inside.sum() > 20 * len(box.lines()), f"no text in box {key}"
    first_box = min(b.y for b in pic.boxes.values())
    band = dark[: int(first_box)]
    cols = np.flatnonzero(band.any(axis=0))
    assert cols.size and cols.min() > 2 and cols.max() < pixels.shape[1] - 3  # title drawn, not cut off
    purple = np.all(np.abs(pixels - (123, 63, 181)) < 40, axis=2).sum()
    assert purple > 200  # skip connections are drawn in their own colour


def test_png_text_distinguishes_case(tmp_path: Path) -> None:
    def picture(name: str) -> np.ndarray:
        g = gd.Graph("g")
        layers.dense(g.placeholder(name, (None, 3)), 2, name="fc")
        with Image.open(draw(g, tmp_path / f"{name}.png")) as image:
            return np.asarray(image.convert("L"))

    upper, lower = picture("X"), picture("x")
    assert upper.shape == lower.shape and not np.array_equal(upper, lower)


def test_learning_curves_share_the_raster_text(tmp_path: Path) -> None:
    from graphdnn.train import plot_learning_curves

    def curves(name: str) -> np.ndarray:
        with Image.open(plot_learning_curves({name: [3.0, 2.0, 1.5]}, tmp_path / f"{name}.png")) as image:
            return np.asarray(image.convert("RGB"))

    assert not np.array_equal(curves("Loss"), curves("LOSS"))
