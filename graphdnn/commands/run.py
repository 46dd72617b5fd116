"""``graphdnn run MODEL --input NAME=FILE.npy ...``: run a model in ONNX Runtime or compiled PyTorch.

Inputs are ``.npy`` files fed by name (a placeholder ``X``, a tensor ``X:0`` or an ONNX value name; any
tensor can be fed, which skips what it depends on). ``--output NAME`` fetches any tensor by name
(repeatable; default: the model's outputs). ``--engine both`` runs both engines and prints the largest
absolute difference per output. ``--out-dir`` saves each result as ``<name>.npy`` (``/`` and ``:``
become ``_``; with ``--engine both``, ``<name>.ort.npy`` and ``<name>.torch.npy``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import numpy as np

from graphdnn.commands._args import add_max_bytes
from graphdnn.commands._model import open_model
from graphdnn.errors import GraphDNNError

__all__ = ["npy_name", "register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``run`` subcommand."""
    parser = subparsers.add_parser("run", help="run a model in ONNX Runtime or PyTorch, fetch tensors by name",
                                   description=__doc__.split("\n\n")[1])
    parser.add_argument("model", metavar="MODEL", help="a model file (.onnx, .safetensors, TF, Keras ...)")
    parser.add_argument("--input", metavar="NAME=FILE.npy", action="append", default=[], help="feed a tensor")
    parser.add_argument("--output", metavar="NAME", action="append", default=None, help="fetch a tensor")
    parser.add_argument("--out-dir", type=Path, help="save every fetched tensor as <name>.npy here "
                        "(<name>.ort.npy and <name>.torch.npy with --engine both)")
    parser.add_argument("--engine", choices=("ort", "torch", "both"), default="ort",
                        help="ONNX Runtime (default), compiled PyTorch, or both compared")
    parser.add_argument("--atol", type=float, default=None,
                        help="with --engine both: exit with status 1 when a difference exceeds this")
    add_max_bytes(parser)
    parser.set_defaults(func=run)


def npy_name(name: str) -> str:
    """A file name for a tensor name: ``dnn/hidden1/Relu:0`` -> ``dnn_hidden1_Relu_0.npy``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") + ".npy"


def _feeds(specs: list[str]) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            raise GraphDNNError(f"--input {spec!r}: write NAME=FILE.npy")
        path = Path(file)
        if not path.is_file():
            raise GraphDNNError(f"--input {name}: {path}: no such file; save the array with numpy.save")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise GraphDNNError(f"--input {name}: {path} is not a numeric .npy array ({exc})") from None
    return feeds


def _torch(graph: Any, feeds: dict[str, np.ndarray], outputs: list[str] | None) -> dict[str, np.ndarray]:
    import torch

    import graphdnn as gd
    from graphdnn import formats
    from graphdnn.compiler import default_outputs
    from graphdnn.dtypes import torch_dtype

    value_names = formats.get("onnx").function("value_names")

    ins = [graph.get_tensor(n) for n in feeds]
    outs = [graph.get_tensor(n) for n in outputs] if outputs else [graph.get_tensor(r)
                                                                     for r in default_outputs(graph)]
    model = gd.compile(graph, inputs=ins, outputs=outs).eval()
    args = [torch.from_numpy(np.ascontiguousarray(a)).to(torch_dtype(t.dtype) if t.dtype else None)
            for a, t in zip(feeds.values(), ins)]
    with torch.no_grad():
        result = model(*args)
    results = result if isinstance(result, tuple) else (result,)
    shown = value_names(graph)
    labels = outputs or [shown.get(t.name, t.name) for t in outs]
    return {label: r.detach().cpu().numpy() for label, r in zip(labels, results)}


def _ort(source: Any, feeds: dict[str, np.ndarray], outputs: list[str] | None) -> dict[str, np.ndarray]:
    from graphdnn.runtime import OrtRunner

    if isinstance(source, str):
        runner = OrtRunner(source)
    else:  # a graph: export just the part between the feeds and the fetches
        runner = OrtRunner(source, inputs=list(feeds) or None, outputs=outputs)
    missing = [n for n in runner.input_names if n not in {runner.value_name(f) for f in feeds}]
    if missing:
        raise GraphDNNError(f"the model needs inputs {missing}; feed them with --input NAME=FILE.npy "
                            "(or fetch other tensors with --output NAME)")
    types = {i.name: i.type for i in runner.session().get_inputs()}
    cast = {}
    for name, value in feeds.items():
        onnx_name = runner.value_name(name)
        want = _NP.get(types.get(onnx_name, ""))
        cast[name] = value.astype(want) if want is not None and value.dtype != want else value
    return runner.run(cast, outputs)


_NP = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
       "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(float16)": np.float16}


def run(args: argparse.Namespace) -> int:
    """Run the model; prints one line per fetched tensor (and the engines' differences)."""
    feeds = _feeds(args.input)
    path = Path(args.model)
    model = open_model(path, need_graph=args.engine != "ort" or not path.name.lower().endswith(".onnx"),
                       max_bytes=args.max_bytes)
    results: dict[str, dict[str, np.ndarray]] = {}
    if args.engine in ("ort", "both"):
        source = str(path) if path.name.lower().endswith(".onnx") else model.graph
        results["ort"] = _ort(source, feeds, args.output)
    if args.engine in ("torch", "both"):
        names = args.output or (list(results["ort"]) if "ort" in results else None)
        results["torch"] = _torch(model.graph, feeds, names)
    first = next(iter(results.values()))
    for name, value in first.items():
        print(f"{name}: shape {tuple(value.shape)} {value.dtype}, " + _stats(value))
    status = 0
    if args.engine == "both":
        worst, where = 0.0, ""
        for name, a in results["ort"].items():
            b = results["torch"][name]
            d = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
            print(f"  {name}: max |ort - torch| = {d:.3g}")
            if d >= worst:
                worst, where = d, name
        print(f"largest difference ort vs torch: {worst:.3g} ({where})")
        if args.atol is not None and worst > args.atol:
            status = 1
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for engine, values in results.items():
            for name, value in values.items():
                suffix = "" if len(results) == 1 else f".{engine}"
                np.save(args.out_dir / npy_name(name + suffix), value, allow_pickle=False)
        print(f"saved {sum(len(v) for v in results.values())} arrays in {args.out_dir}")
    return status


def _stats(value: np.ndarray) -> str:
    if value.size == 0 or value.dtype.kind not in "fiub":
        return "empty" if value.size == 0 else ""
    v = value.astype(np.float64)
    return f"min {v.min():.4g}, max {v.max():.4g}, mean {v.mean():.4g}"
