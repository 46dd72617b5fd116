"""Pictures of a graph: scopes collapsed to a depth, laid out in layers, written as SVG or PNG.

``draw(graph_or_module, "graph.svg", depth=2)`` groups ops into boxes by the first ``depth`` parts of
their names (``None``: one box per op), folds variables, constants and ``Identity`` readers into the
box of the op that uses them, and merges boxes that would form a cycle (``dnn/hidden1`` and
``dnn/hidden1/batch_normalization`` at full depth become ``dnn/hidden1``). Each box shows its scope, op
types, output shape and parameters. Frozen boxes are blue with a dashed border and say ``frozen``.

The layout is done here rather than by Graphviz: ``dot`` is a system program that ``pip install`` cannot
provide, and a layered drawing of a network is simple enough. Layers come from networkx's
``topological_generations``; edges that pass layers (residual and concat inputs) run in lanes of their
own beside the boxes and are purple; no edge crosses a box. SVG needs nothing; PNG is rasterized by
:mod:`graphdnn.raster` (Pillow, the ``draw`` extra), which the learning-curve plots use too.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from graphdnn.atomic import atomic_write
from graphdnn.errors import GraphDNNError
from graphdnn.graph import Graph, Op
from graphdnn.names import split_tensor_name
from graphdnn.summary import _graph_and_names, format_shape, group_key, is_reader, variable_owners, variable_records

__all__ = ["Box", "Layout", "Route", "draw", "layout", "plan", "render_png", "render_svg", "scope_graph"]

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
Point = tuple[float, float]


@dataclass
class Route:
    """The path of one edge: from ``start`` through ``pieces``, each ``("L", end)`` (a straight line) or
    ``("C", control1, control2, end)`` (a cubic Bezier). ``skip``: it passes layers (a residual or concat
    input, routed beside the boxes it skips)."""

    source: str
    target: str
    start: Point
    pieces: list[tuple[Any, ...]] = field(default_factory=list)
    skip: bool = False

    def points(self, steps: int = 12) -> list[Point]:
        """The path as a polyline (each Bezier sampled at ``steps`` points)."""
        out = [self.start]
        for piece in self.pieces:
            if piece[0] == "L":
                out.append(piece[1])
                continue
            (x0, y0), (x1, y1), (x2, y2), (x3, y3) = out[-1], piece[1], piece[2], piece[3]
            for t in np.linspace(0.0, 1.0, steps)[1:]:
                u = 1.0 - t
                out.append((u**3 * x0 + 3 * u * u * t * x1 + 3 * u * t * t * x2 + t**3 * x3,
                            u**3 * y0 + 3 * u * u * t * y1 + 3 * u * t * t * y2 + t**3 * y3))
        return out


@dataclass
class Layout:
    """Boxes placed (``x, y, w, h`` set), edges routed, the canvas size and where the title goes."""

    boxes: dict[str, Box]
    routes: list[Route]
    width: float
    height: float
    title: str
    title_xy: Point
    scale: int = 1


def _layers(dag: nx.DiGraph, inputs: set[str]) -> dict[str, int]:
    """Layer of each box: ``topological_generations`` (longest path from the sources); then, from the
    bottom up, each input and each box that no input reaches (constants, shape computations) moves down
    to just above its first user (a label placeholder sits beside the loss, not at the top)."""
    layer = {k: i for i, generation in enumerate(nx.topological_generations(dag)) for k in generation}
    fed = set(inputs).union(*(nx.descendants(dag, k) for k in inputs)) if inputs else set()
    for k in reversed(list(nx.topological_sort(dag))):
        if dag.out_degree(k) and (k in inputs or k not in fed):
            layer[k] = min(layer[s] for s in dag.successors(k)) - 1
    return layer


def _order(rows: dict[int, list[str]], pred: dict[str, list[str]], succ: dict[str, list[str]],
           sweeps: int = 8) -> None:
    """Order each layer by the barycenter of its neighbours' positions, sweeping down and up."""
    position = {k: float(i) for row in rows.values() for i, k in enumerate(row)}
    for sweep in range(sweeps):
        down = sweep % 2 == 0
        near = pred if down else succ
        for level in sorted(rows, reverse=not down):
            bary = {k: float(np.mean([position[n] for n in near[k]])) if near[k] else position[k] for k in rows[level]}
            rows[level].sort(key=lambda k: (bary[k], position[k]))
            position.update({k: float(i) for i, k in enumerate(rows[level])})


def _place_rows(rows: dict[int, list[str]], width: dict[str, float], pred: dict[str, list[str]],
                succ: dict[str, list[str]], gap: float, rounds: int = 6) -> dict[str, float]:
    """Left edges: each node pulled toward the mean centre of its neighbours, order and gaps kept (the
    mean of the leftmost and rightmost placements that satisfy the gaps)."""
    left: dict[str, float] = {}
    for row in rows.values():
        x = 0.0
        for k in row:
            left[k], x = x, x + width[k] + gap
    for r in range(rounds):
        down = r % 2 == 0
        near = pred if down else succ
        for level in sorted(rows, reverse=not down):
            row = rows[level]
            want = [np.mean([left[n] + width[n] / 2 for n in near[k]]) - width[k] / 2 if near[k] else left[k]
                    for k in row]
            lo, hi = list(want), list(want)
            for i in range(1, len(row)):
                lo[i] = max(lo[i], lo[i - 1] + width[row[i - 1]] + gap)
            for i in range(len(row) - 2, -1, -1):
                hi[i] = min(hi[i], hi[i + 1] - width[row[i]] - gap)
            for i, k in enumerate(row):
                left[k] = (lo[i] + hi[i]) / 2
    return left


def layout(boxes: dict[str, Box], edges: set[tuple[str, str]], measure: Callable[[str], float], line_h: float,
           title: str = "", title_h: float = 0.0, title_measure: Callable[[str], float] | None = None,
           gap_x: float = 24.0, gap_y: float = 40.0, pad: float = 6.0, margin: float = 12.0) -> Layout:
    """Place the boxes and route the edges (a layered, Sugiyama-style drawing).

    Layers by :func:`networkx.topological_generations`; an edge that passes layers gets a waypoint in
    each, so it is routed through a lane of its own beside the boxes, never across one; order in a layer
    by barycenter sweeps; x by pulling nodes toward their neighbours. Boxes are top-aligned in their
    layer and edges leave a box's bottom and enter the next box's top at separate ports, so two inputs
    of an ``Add`` or ``Concat`` arrive side by side. ``measure(text)`` is a text's width.
    """
    dag = nx.DiGraph()
    dag.add_nodes_from(boxes)
    dag.add_edges_from(edges)
    layer = _layers(dag, {k for k, box in boxes.items() if box.inputs_only})
    for k, box in boxes.items():
        box.layer = layer[k]
        text = box.lines()
        box.w = max(measure(t) for t in text) + 2 * pad
        box.h = len(text) * line_h + 2 * pad
    width = {k: box.w for k, box in boxes.items()}
    node_layer = dict(layer)
    pred: dict[str, list[str]] = {k: [] for k in boxes}
    succ: dict[str, list[str]] = {k: [] for k in boxes}
    chains: list[list[str]] = []
    for a, b in sorted(edges):
        chain = [a]
        for level in range(layer[a] + 1, layer[b]):
            d = f"\0{len(node_layer)}"
            node_layer[d], width[d], pred[d], succ[d] = level, gap_x / 2, [], []
            chain.append(d)
        chain.append(b)
        for u, v in zip(chain, chain[1:]):
            succ[u].append(v)
            pred[v].append(u)
        chains.append(chain)
    rows: dict[int, list[str]] = {}
    for k in node_layer:  # boxes in creation order, then lanes
        rows.setdefault(node_layer[k], []).append(k)
    _order(rows, pred, succ)
    left = _place_rows(rows, width, pred, succ, gap_x)
    shift = margin - min(left.values(), default=0.0)
    left = {k: v + shift for k, v in left.items()}
    title_w = (title_measure or measure)(title) if title else 0.0
    canvas_w = max(max((left[k] + width[k] for k in left), default=0.0) + margin, title_w + 2 * margin)
    top, bottom = {}, {}
    y = margin + title_h + (margin if title else 0.0)
    for level in sorted(rows):
        height = max((boxes[k].h for k in rows[level] if k in boxes), default=0.0)
        top[level], bottom[level] = y, y + height
        for k in rows[level]:
            if k in boxes:
                boxes[k].x, boxes[k].y = left[k], y
        y += height + gap_y
    canvas_h = y - gap_y + margin
    centre = {k: left[k] + width[k] / 2 for k in left}
    out_port: dict[tuple[str, str], float] = {}
    in_port: dict[tuple[str, str], float] = {}
    for k, box in boxes.items():
        outs = sorted((c for c in chains if c[0] == k), key=lambda c: centre[c[1]])
        ins = sorted((c for c in chains if c[-1] == k), key=lambda c: centre[c[-2]])
        for i, c in enumerate(outs):
            out_port[c[0], c[-1]] = box.x + box.w * (i + 1) / (len(outs) + 1)
        for i, c in enumerate(ins):
            in_port[c[0], c[-1]] = box.x + box.w * (i + 1) / (len(ins) + 1)
    routes = []
    for chain in chains:
        a, b = chain[0], chain[-1]
        x, y0 = out_port[a, b], boxes[a].y + boxes[a].h
        route = Route(a, b, (x, y0), skip=len(chain) > 2)
        y = bottom[layer[a]]
        if y > y0:
            route.pieces.append(("L", (x, y)))
        for node in chain[1:]:
            x1, y1 = (in_port[a, b], boxes[b].y) if node == b else (centre[node], top[node_layer[node]])
            bend = (y1 - y) / 2
            route.pieces.append(("C", (x, y + bend), (x1, y1 - bend), (x1, y1)))
            x, y = x1, y1
            if node != b and bottom[node_layer[node]] > y:
                y = bottom[node_layer[node]]
                route.pieces.append(("L", (x, y)))
        routes.append(route)
    return Layout(boxes, routes, canvas_w, canvas_h, title, (margin, margin))


def _title(obj: Any, depth: int | None) -> str:
    found = _graph_and_names(obj)
    name = found[0].name if found else type(obj).__name__
    return (f"{name}: " + (f"scopes collapsed to depth {depth}" if depth else "every op")
            + " (frozen parts are blue, skip connections purple)")


# --------------------------------------------------------------------------------------------- SVG
_FILL = {"input": "#fff4d6", "op": "#f4f6fa", "frozen": "#d7e8fb"}
_EDGE, _SKIP = "#555555", "#7b3fb5"
SVG_FONT_SIZE, SVG_CHAR_W, SVG_LINE_H = 12, 7.3, 15.0  # monospace: a character is 0.6 em wide


def _kind(box: Box) -> str:
    return "input" if box.inputs_only else ("frozen" if box.frozen else "op")


def plan(obj: Any, depth: int | None = None, target: str = "svg") -> Layout:
    """The laid-out picture of ``obj`` in the units of ``target``: ``"svg"`` (monospace text) or
    ``"png"`` (pixels, text measured in Pillow's default font at twice the size when the picture fits)."""
    boxes, edges = scope_graph(obj, depth)
    title = _title(obj, depth)
    if target == "svg":
        def measure(text: str) -> float:
            return len(text) * SVG_CHAR_W

        return layout(boxes, edges, measure, SVG_LINE_H, title, SVG_LINE_H)
    if target != "png":
        raise GraphDNNError(f"plan() draws for 'svg' or 'png', not {target!r}")
    for scale in (2, 1):
        measure, title_measure = partial(_px_width, size=12 * scale), partial(_px_width, size=14 * scale)
        found = layout(boxes, edges, measure, 15.0 * scale, title, 16.0 * scale, title_measure,
                       20.0 * scale, 36.0 * scale, 6.0 * scale, 12.0 * scale)
        if found.width * found.height <= MAX_PNG_PIXELS / (3 if scale == 2 else 1):
            found.scale = scale
            return found
    raise GraphDNNError(f"the picture would be {found.width:.0f}x{found.height:.0f} pixels; collapse more scopes "
                        "with a smaller depth, or write an .svg")


def _px_width(text: str, size: int) -> float:
    from graphdnn.raster import text_width

    return text_width(text, size)


def _svg_path(route: Route) -> str:
    parts = [f"M {route.start[0]:.1f} {route.start[1]:.1f}"]
    for piece in route.pieces:
        parts.append(piece[0] + " " + " ".join(f"{x:.1f} {y:.1f}" for x, y in piece[1:]))
    return " ".join(parts)


def render_svg(obj: Any, depth: int | None = None) -> str:
    """The SVG text of the picture of ``obj`` (a graph or compiled module)."""
    pic = plan(obj, depth, "svg")
    width, height, line_h = pic.width, pic.height, SVG_LINE_H
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="monospace" font-size="{SVG_FONT_SIZE}">',
           '<defs>' + "".join(
               f'<marker id="{name}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
               f'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{color}"/></marker>'
               for name, color in (("arrow", _EDGE), ("skip-arrow", _SKIP))) + '</defs>',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text class="title" x="{pic.title_xy[0]:.0f}" y="{pic.title_xy[1] + line_h * 0.8:.0f}" '
           f'font-weight="bold">{html.escape(pic.title)}</text>']
    for route in pic.routes:
        color, marker, kind = (_SKIP, "skip-arrow", "skip") if route.skip else (_EDGE, "arrow", "edge")
        out.append(f'<path class="{kind}" d="{_svg_path(route)}" fill="none" stroke="{color}" '
                   f'stroke-width="{1.6 if route.skip else 1.2}" marker-end="url(#{marker})">'
                   f"<title>{html.escape(route.source)} -&gt; {html.escape(route.target)}</title></path>")
    for box in pic.boxes.values():
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
_EDGE_RGB, _SKIP_RGB, _FRAME_RGB = (85, 85, 85), (123, 63, 181), (51, 51, 51)


def _png_canvas(obj: Any, depth: int | None) -> Any:
    from graphdnn.raster import Canvas

    pic = plan(obj, depth, "png")
    s = pic.scale
    canvas = Canvas(int(np.ceil(pic.width)), int(np.ceil(pic.height)))
    canvas.text(pic.title_xy[0], pic.title_xy[1], pic.title, (20, 20, 20), 14 * s)
    for route in pic.routes:
        color = _SKIP_RGB if route.skip else _EDGE_RGB
        points = route.points()
        canvas.line(points, color, (2 if route.skip else 1) * s)
        xe, ye = points[-1]
        canvas.polygon([(xe - 4 * s, ye - 7 * s), (xe, ye), (xe + 4 * s, ye - 7 * s)], color)
    for box in pic.boxes.values():
        kind = _kind(box)
        canvas.rect(box.x, box.y, box.x + box.w, box.y + box.h, fill=_RGB[kind], outline=_FRAME_RGB, width=s,
                    radius=(8 if kind == "input" else 3) * s, dashed=kind == "frozen")
        for i, text in enumerate(box.lines()):
            canvas.text(box.x + 6 * s, box.y + 6 * s + 15 * s * i + s, text, (20, 20, 20), 12 * s)
    return canvas


def render_png(obj: Any, depth: int | None = None) -> np.ndarray:
    """The picture of ``obj`` as an ``(H, W, 3)`` uint8 image (needs Pillow: the ``draw`` extra)."""
    return _png_canvas(obj, depth).pixels()


def draw(obj: Any, path: str | os.PathLike, depth: int | None = None) -> Path:
    """Write the picture of ``obj`` to ``path``: ``.svg`` or ``.png`` (chosen by the suffix; PNG needs Pillow)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".svg":
        data = render_svg(obj, depth).encode("utf-8")
        return atomic_write(path, lambda f: f.write(data))
    if suffix == ".png":
        return _png_canvas(obj, depth).save(path)
    raise GraphDNNError(f"{path}: draw writes .svg or .png pictures; choose one of those suffixes")
