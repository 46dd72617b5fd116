"""``graphdnn draw FILE -o graph.svg|png [--depth N]``: a picture of a model's graph.

Scopes are collapsed to ``--depth`` levels (``--depth 1``/``2`` for big models such as ResNet-50; no
``--depth``: one box per op, right for the book's DNN). Each box shows its scope, op types, output
shape and parameters; frozen parts are blue with a dashed border. SVG or PNG by the output's suffix.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from graphdnn.commands._args import add_max_bytes, positive_int
from graphdnn.commands._model import open_model

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``draw`` subcommand."""
    parser = subparsers.add_parser("draw", help="draw a model's graph as SVG or PNG, scopes collapsed to a depth",
                                   description=__doc__.split("\n\n")[1])
    parser.add_argument("file", metavar="FILE", help="a model file with a graph (.safetensors, .onnx, TF, Keras)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the picture to write: .svg or .png")
    parser.add_argument("--depth", type=positive_int, default=None,
                        help="collapse scopes to N levels (default: every op)")
    add_max_bytes(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the picture; prints its path and box count."""
    from graphdnn.draw import draw, scope_graph

    graph = open_model(args.file, need_graph=True, max_bytes=args.max_bytes).graph
    path = draw(graph, args.output, args.depth)
    boxes, edges = scope_graph(graph, args.depth)
    print(f"wrote {path}: {len(boxes)} boxes, {len(edges)} edges")
    return 0
