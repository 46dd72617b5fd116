"""Pictures of a graph: scopes collapsed to a depth, laid out in layers, written as SVG or PNG.

``draw(graph_or_module, "graph.svg", depth=2)`` groups ops into boxes by the first ``depth`` parts of
their names (``None``: one box per op), folds variables, constants and ``Identity`` readers into the
box of the op that uses them, and merges boxes that would form a cycle (``dnn/hidden1`` and
``dnn/hidden1/batch_normalization`` at full depth become ``dnn/hidden1``). Boxes are placed by
longest-path layering with a few barycenter sweeps to reduce crossings; each shows its scope, op
types, output shape and parameters. Frozen boxes are blue with a dashed border and say ``frozen``.
PNG output is rasterized here (``graphdnn.train.png`` and its bitmap font): no new dependency.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from graphdnn.atomic import atomic_write
from graphdnn.errors import GraphDNNError
from graphdnn.graph import Graph, Op
from graphdnn.names import split_tensor_name
from graphdnn.summary import _graph_and_names, format_shape, group_key, is_reader, variable_owners, variable_records

__all__ = ["Box", "draw", "layout", "render_png", "render_svg", "scope_graph"]

MAX_PNG_PIXELS = 60_000_000
_NAME_CHARS = 44


@dataclass
class Box:
    """One box of the picture: a scope (or an op) with what it holds, and its place once laid out."""

    key: str
    ops: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    output_shape: str = ""
    params: int = 0
    frozen: int = 0
    inputs_only: bool = True
    layer: int = 0
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0
    h: float = 0.0

    @property
    def status(self) -> str:
        if not self.frozen:
            return ""
        return "frozen" if self.frozen == self.params else "partly frozen"

    def lines(self) -> list[str]:
        """The text of the box, one string per line."""
        name = self.key if len(self.key) <= _NAME_CHARS else "..." + self.key[-(_NAME_CHARS - 3):]
        types = ", ".join(self.types[:3]) + (f", +{len(self.types) - 3}" if len(self.types) > 3 else "")
        if len(self.ops) > 1:
            types = f"{len(self.ops)} ops: {types}"
        out = [name, types[:_NAME_CHARS], self.output_shape]
        if self.params:
            out.append(f"{self.params:,} params" + (f", {self.status}" if self.status else ""))
        return [line for line in out if line]


def scope_graph(obj: Any, depth: int | None = None) -> tuple[dict[str, Box], set[tuple[str, str]]]:
    """The boxes (scopes collapsed to ``depth``; None: every op) and the edges between them."""
    found = _graph_and_names(obj)
    if found is None:
        raise GraphDNNError(f"draw() takes a Graph or a compiled module, not {type(obj).__name__}")
    graph, ops, _ = found
    if depth is not None and depth < 1:
        raise GraphDNNError(f"depth must be 1 or more (or None for every op), got {depth}")
    shown = [op for op in ops if not is_reader(graph, op)]
    key = {op.name: group_key(op.name, depth) for op in shown}
    dg = nx.DiGraph()
    dg.add_nodes_from(dict.fromkeys(key.values()))
    for op in shown:
        for ref in op.inputs:
            src = split_tensor_name(ref)[0] if ref else None
            if src in key and key[src] != key[op.name]:
                dg.add_edge(key[src], key[op.name])
    merged = _merge_cycles(dg)
    boxes: dict[str, Box] = {}
    for op in shown:
        box = boxes.setdefault(merged[key[op.name]], Box(merged[key[op.name]]))
        box.ops.append(op.name)
        box.inputs_only &= op.is_placeholder
        if op.type not in box.types:
            box.types.append(op.type)
    _outputs(graph, shown, {n: merged[k] for n, k in key.items()}, boxes)
    records = {r.name: r for r in variable_records(obj)}
    for var, owner in variable_owners(graph, ops).items():
        if owner in key and var in records:
            box = boxes[merged[key[owner]]]
            box.params += records[var].numel
            box.frozen += records[var].numel if records[var].status == "frozen" else 0
    edges = {(merged[a], merged[b]) for a, b in dg.edges if merged[a] != merged[b]}
    return boxes, edges


def _merge_cycles(dg: nx.DiGraph) -> dict[str, str]:
    """Map each box key to itself, or, inside a cycle, to the common scope of the cycle's keys."""
    mapping = {}
    for component in nx.strongly_connected_components(dg):
        members = sorted(component)
        if len(members) == 1:
            mapping[members[0]] = members[0]
            continue
        parts = [m.split("/") for m in members]
        common = []
        for column in zip(*parts):
            if len(set(column)) != 1:
                break
            common.append(column[0])
        name = "/".join(common) or " + ".join(members[:3]) + ("..." if len(members) > 3 else "")
        for m in members:
            mapping[m] = name
    return mapping


def _outputs(graph: Graph, ops: list[Op], box_of: dict[str, str], boxes: dict[str, Box]) -> None:
    for op in ops:
        here = box_of[op.name]
        users = [box_of.get(c.name) for c in graph.consumers(op.name)]
        outside = [u for u in users if u is not None and u != here]
        if (outside or all(u is None for u in users)) and op.outputs:
            boxes[here].output_shape = format_shape(op.outputs[0].shape)


# ------------------------------------------------------------------------------------------ layout
def layout(boxes: dict[str, Box], edges: set[tuple[str, str]], char_w: float, line_h: float,
           gap_x: float = 24.0, gap_y: float = 36.0, pad: float = 6.0) -> tuple[float, float]:
    """Place the boxes: layers by longest path from the inputs, order in a layer by barycenter
    sweeps. Sets each box's ``x, y, w, h`` and returns the picture's width and height."""
    dag = nx.DiGraph()
    dag.add_nodes_from(boxes)
    dag.add_edges_from(edges)
    order = list(nx.topological_sort(dag))
    for k in order:
        boxes[k].layer = max((boxes[p].layer + 1 for p in dag.predecessors(k)), default=0)
    rows: dict[int, list[str]] = {}
    for k in boxes:  # creation order first
        rows.setdefault(boxes[k].layer, []).append(k)
    position = {k: float(i) for row in rows.values() for i, k in enumerate(row)}
    for sweep in range(4):
        levels = sorted(rows) if sweep % 2 == 0 else sorted(rows, reverse=True)
        for level in levels:
            near = dag.predecessors if sweep % 2 == 0 else dag.successors
            bary = {k: np.mean([position[n] for n in near(k)]) if list(near(k)) else position[k] for k in rows[level]}
            rows[level].sort(key=lambda k: (bary[k], position[k]))
            position.update({k: float(i) for i, k in enumerate(rows[level])})
    for box in boxes.values():
        text = box.lines()
        box.w = max(len(t) for t in text) * char_w + 2 * pad
        box.h = len(text) * line_h + 2 * pad
    widths = {level: sum(boxes[k].w for k in row) + gap_x * (len(row) - 1) for level, row in rows.items()}
    width = max(widths.values(), default=0.0) + 2 * gap_x
    y = gap_y + line_h
    for level in sorted(rows):
        x = (width - widths[level]) / 2
        height = max(boxes[k].h for k in rows[level])
        for k in rows[level]:
            boxes[k].x, boxes[k].y = x, y + (height - boxes[k].h) / 2
            x += boxes[k].w + gap_x
        y += height + gap_y
    return width, y


def _control_points(a: Box, b: Box) -> list[tuple[float, float]]:
    """The cubic Bezier from the bottom middle of ``a`` to the top middle of ``b``."""
    x0, y0, x3, y3 = a.x + a.w / 2, a.y + a.h, b.x + b.w / 2, b.y
    bend = max((y3 - y0) / 2, 12.0)
    return [(x0, y0), (x0, y0 + bend), (x3, y3 - bend), (x3, y3)]


def _bezier(a: Box, b: Box, steps: int = 16) -> list[tuple[float, float]]:
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = _control_points(a, b)
    t = np.linspace(0.0, 1.0, steps)
    xs = (1 - t) ** 3 * x0 + 3 * (1 - t) ** 2 * t * x1 + 3 * (1 - t) * t**2 * x2 + t**3 * x3
    ys = (1 - t) ** 3 * y0 + 3 * (1 - t) ** 2 * t * y1 + 3 * (1 - t) * t**2 * y2 + t**3 * y3
    return list(zip(xs.tolist(), ys.tolist()))


def _title(obj: Any, depth: int | None) -> str:
    found = _graph_and_names(obj)
    name = found[0].name if found else type(obj).__name__
    return f"{name}: " + (f"scopes collapsed to depth {depth}" if depth else "every op") + " (frozen parts are blue)"


# --------------------------------------------------------------------------------------------- SVG
_FILL = {"input": "#fff4d6", "op": "#f4f6fa", "frozen": "#d7e8fb"}


def _kind(box: Box) -> str:
    return "input" if box.inputs_only else ("frozen" if box.frozen else "op")


def render_svg(obj: Any, depth: int | None = None) -> str:
    """The SVG text of the picture of ``obj`` (a graph or compiled module)."""
    boxes, edges = scope_graph(obj, depth)
    char_w, line_h = 7.3, 15.0
    width, height = layout(boxes, edges, char_w, line_h)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="monospace" font-size="12">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="12" y="{line_h + 4:.0f}" font-weight="bold">{html.escape(_title(obj, depth))}</text>']
    for a, b in sorted(edges):
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = _control_points(boxes[a], boxes[b])
        out.append(f'<path d="M {x0:.1f} {y0:.1f} C {x1:.1f} {y1:.1f} {x2:.1f} {y2:.1f} {x3:.1f} {y3:.1f}" '
                   'fill="none" stroke="#555" stroke-width="1.2" marker-end="url(#arrow)"/>')
    for box in boxes.values():
        kind = _kind(box)
        dash = ' stroke-dasharray="5,3"' if kind == "frozen" else ""
        radius = 10 if kind == "input" else 4
        out.append(f'<g class="{kind}"><title>{html.escape(box.key)}</title>'
                   f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.w:.1f}" height="{box.h:.1f}" rx="{radius}" '
                   f'fill="{_FILL[kind]}" stroke="#333"{dash}/>')
        for i, text in enumerate(box.lines()):
            weight = ' font-weight="bold"' if i == 0 else ""
            out.append(f'<text x="{box.x + 6:.1f}" y="{box.y + 6 + line_h * (i + 0.8):.1f}"{weight}>'
                       f"{html.escape(text)}</text>")
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------- PNG
_RGB = {"input": (255, 244, 214), "op": (244, 246, 250), "frozen": (215, 232, 251)}


class _Canvas:
    """An RGB pixel buffer with rectangles, lines and bitmap-font text."""

    def __init__(self, width: int, height: int) -> None:
        self.pixels = np.full((height, width, 3), 255, dtype=np.uint8)

    def fill(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int]) -> None:
        h, w = self.pixels.shape[:2]
        self.pixels[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)] = color

    def frame(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int], dashed: bool, t: int) -> None:
        for a, b, c, d in ((x0, y0, x1, y0 + t), (x0, y1 - t, x1, y1), (x0, y0, x0 + t, y1), (x1 - t, y0, x1, y1)):
            if not dashed:
                self.fill(a, b, c, d, color)
                continue
            horizontal = c - a > d - b
            span = range(a, c, 8 * t) if horizontal else range(b, d, 8 * t)
            for s in span:
                if horizontal:
                    self.fill(s, b, min(s + 5 * t, c), d, color)
                else:
                    self.fill(a, s, c, min(s + 5 * t, d), color)

    def line(self, points: list[tuple[float, float]], color: tuple[int, int, int], t: int) -> None:
        h, w = self.pixels.shape[:2]
        for (xa, ya), (xb, yb) in zip(points, points[1:]):
            n = int(max(abs(xb - xa), abs(yb - ya))) + 1
            xs = np.clip(np.rint(np.linspace(xa, xb, n)).astype(int), 0, w - 1)
            ys = np.clip(np.rint(np.linspace(ya, yb, n)).astype(int), 0, h - 1)
            for dx in range(t):
                self.pixels[ys, np.clip(xs + dx, 0, w - 1)] = color

    def text(self, x: int, y: int, text: str, scale: int, color: tuple[int, int, int] = (20, 20, 20)) -> None:
        from graphdnn.train.font import render_text

        mask = render_text(text, scale=scale)
        h, w = self.pixels.shape[:2]
        mh, mw = min(mask.shape[0], h - y), min(mask.shape[1], w - x)
        if mh > 0 and mw > 0:
            self.pixels[y:y + mh, x:x + mw][mask[:mh, :mw]] = color


def render_png(obj: Any, depth: int | None = None) -> np.ndarray:
    """The picture of ``obj`` as an ``(H, W, 3)`` uint8 image (bitmap font, 2x scale when it fits)."""
    boxes, edges = scope_graph(obj, depth)
    width, height = layout(boxes, edges, 6.0, 11.0, gap_x=16, gap_y=28, pad=5)
    pixels = width * height
    if pixels > MAX_PNG_PIXELS:
        raise GraphDNNError(f"the picture would be {width:.0f}x{height:.0f} pixels; collapse more scopes with a "
                            "smaller depth, or write an .svg")
    s = 2 if pixels * 4 <= MAX_PNG_PIXELS / 3 else 1
    canvas = _Canvas(int(width * s) + 1, int(height * s) + 1)
    canvas.text(8 * s, 8 * s, _title(obj, depth), s)
    grey = (85, 85, 85)
    for a, b in sorted(edges):
        pts = [(x * s, y * s) for x, y in _bezier(boxes[a], boxes[b])]
        canvas.line(pts, grey, s)
        (xe, ye) = pts[-1]
        canvas.line([(xe - 4 * s, ye - 6 * s), (xe, ye), (xe + 4 * s, ye - 6 * s)], grey, s)
    for box in boxes.values():
        kind = _kind(box)
        x0, y0, x1, y1 = (int(v * s) for v in (box.x, box.y, box.x + box.w, box.y + box.h))
        canvas.fill(x0, y0, x1, y1, _RGB[kind])
        canvas.frame(x0, y0, x1, y1, (51, 51, 51), kind == "frozen", s)
        for i, text in enumerate(box.lines()):
            canvas.text(x0 + 5 * s, y0 + (5 + 11 * i) * s + 2 * s, text, s)
    return canvas.pixels


def draw(obj: Any, path: str | os.PathLike, depth: int | None = None) -> Path:
    """Write the picture of ``obj`` to ``path``: ``.svg`` or ``.png`` (chosen by the suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".svg":
        data = render_svg(obj, depth).encode("utf-8")
        return atomic_write(path, lambda f: f.write(data))
    if suffix == ".png":
        from graphdnn.train.png import write_png

        return write_png(path, render_png(obj, depth))
    raise GraphDNNError(f"{path}: draw writes .svg or .png pictures; choose one of those suffixes")
