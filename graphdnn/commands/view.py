"""``graphdnn view FILE``: open a model in Netron (``pip install "graphdnn[view]"``) in the browser.

A graphdnn ``.safetensors`` model (or a TensorFlow checkpoint) is exported to a temporary ONNX file first,
so Netron shows the graph with graphdnn's names; files Netron reads natively are opened as they are.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from graphdnn.commands._model import open_model
from graphdnn.errors import GraphDNNError

__all__ = ["register", "run"]

_NATIVE = (".onnx", ".keras", ".h5", ".hdf5", ".pt", ".pth", ".tflite", ".pb")


def register(subparsers: Any) -> None:
    """Add the ``view`` subcommand."""
    parser = subparsers.add_parser("view", help="open a model in Netron (optional extra: graphdnn[view])",
                                   description=__doc__.split("\n\n")[1])
    parser.add_argument("file", metavar="FILE", help="a model file")
    parser.add_argument("--port", type=int, default=None, help="the port Netron serves on")
    parser.add_argument("--no-browser", action="store_true", help="serve only; print the address")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve the model with Netron until interrupted."""
    try:
        import netron
    except ImportError:
        raise GraphDNNError("Netron is not installed; pip install \"graphdnn[view]\" (or netron), "
                            "or draw the graph with 'graphdnn draw FILE -o graph.svg'") from None
    path = Path(args.file)
    with tempfile.TemporaryDirectory(prefix="graphdnn-view-") as tmp:
        if not path.name.lower().endswith(_NATIVE):
            import graphdnn as gd

            graph = open_model(path, need_graph=True).graph
            target = Path(tmp) / (path.name.split(".")[0] + ".onnx")
            gd.export_onnx(graph, target)
        elif not path.exists():
            raise GraphDNNError(f"{path}: no such file; check the path")
        else:
            target = path
        address = netron.start(str(target), address=args.port, browse=not args.no_browser)
        print(f"Netron serves {path} at {address}; press Ctrl+C to stop")
        netron.wait()
    return 0
