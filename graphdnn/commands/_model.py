"""Opening model files for the CLI: a graph (``graphdnn.load``) or, for weights-only files, named tensors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from graphdnn.errors import FileFormatError, GraphDNNError
from graphdnn.graph import Graph

__all__ = ["Model", "format_name", "open_model", "parse_rename"]

_FORMATS = (
    (".safetensors.index.json", "sharded graphdnn checkpoint"),
    (".safetensors", "safetensors"),
    (".onnx", "ONNX"),
    (".meta", "TensorFlow meta graph"),
    (".index", "TensorFlow checkpoint"),
    (".weights.h5", "Keras weights"),
    (".keras", "Keras"),
    (".h5", "Keras HDF5"),
    (".hdf5", "Keras HDF5"),
    (".pt", "PyTorch state dict"),
    (".pth", "PyTorch state dict"),
    (".bin", "PyTorch state dict"),
    (".npz", "numpy archive"),
)


_SNIFFED = {"safetensors": "safetensors", "onnx": "ONNX", "keras": "Keras", "hdf5": "Keras HDF5",
            "pytorch": "PyTorch state dict", "npz": "numpy archive"}


def format_name(path: str | Path) -> str:
    """A readable name of the file's format, judged by its content first (``graphdnn.loading.sniff``),
    its name second."""
    from graphdnn.loading import sniff

    name = Path(path).name.lower()
    kind = sniff(path) if Path(path).is_file() else None
    if kind in _SNIFFED and not (kind == "hdf5" and name.endswith(".weights.h5")):
        return _SNIFFED[kind]
    for suffix, label in _FORMATS:
        if name.endswith(suffix):
            return label
    if Path(path).is_dir():
        from graphdnn.converters.named_tensors import hf_weights_file

        if hf_weights_file(path) is not None:
            return "Hugging Face folder"
    if (Path(path) / "saved_model.pb").is_file() or name == "saved_model.pb":
        return "TensorFlow SavedModel"
    return "TensorFlow checkpoint" if Path(str(path) + ".index").is_file() else "unknown"


@dataclass
class Model:
    """What a file holds: a graph with its values, or (weights-only files) named tensors."""

    path: Path
    format: str
    graph: Graph | None
    tensors: Any = None

    def named_tensors(self) -> dict[str, torch.Tensor]:
        """Every stored tensor by name (a graph's variable values, or the file's tensors)."""
        if self.graph is not None:
            return dict(self.graph.values)
        return dict(self.tensors.read(self.tensors.names()))


def _exists(path: Path) -> bool:
    return path.exists() or Path(str(path) + ".index").is_file() or Path(str(path) + ".meta").is_file()


def open_model(path: str | Path, *, need_graph: bool = False, max_bytes: int | None = None) -> Model:
    """Open ``path``: a graph when ``graphdnn.load`` reads it, else (unless ``need_graph``) the named
    tensors of a weights-only file (PyTorch state dict, plain safetensors, ``.npz``, Keras weights).
    ``max_bytes`` is the load's memory budget (``--max-bytes``; see ``graphdnn.budget``)."""
    path = Path(path)
    if not _exists(path):
        raise FileFormatError(f"{path}: no such file; check the path")
    if path.is_dir() and format_name(path) == "unknown":
        raise FileFormatError(f"{path} is a folder; name a model file (or a TensorFlow checkpoint prefix)")
    fmt = format_name(path)
    if not _weights_only(path, fmt):
        from graphdnn.loading import load

        return Model(path, "graphdnn checkpoint" if fmt == "safetensors" else fmt, load(path, max_bytes=max_bytes))
    from graphdnn.converters.named_tensors import read_named_tensors

    tensors = read_named_tensors(path, max_bytes=max_bytes)
    if need_graph:
        raise FileFormatError(f"{path}: a {fmt} file holds named tensors but no graph; build the graph in code, "
                              f"or make a model with 'graphdnn convert {path.name} model.safetensors --graph MODEL'")
    return Model(path, fmt, None, tensors)


def _weights_only(path: Path, fmt: str) -> bool:
    """Whether the file holds tensors without a graph (PyTorch, numpy, Keras weights, plain safetensors)."""
    if fmt in ("PyTorch state dict", "numpy archive", "Keras weights", "Hugging Face folder"):
        return True
    if fmt == "safetensors" and path.is_file():
        from graphdnn.checkpoint import TensorFile

        return TensorFile(path).graph_json() is None
    return False


def parse_rename(rules: list[str] | None) -> list[tuple[str, str]]:
    """``["PAT=REPL", ...]`` -> ``[(PAT, REPL)]``, each pattern checked to be a valid regex."""
    out = []
    for rule in rules or []:
        pattern, sep, repl = rule.partition("=")
        if not sep or not pattern:
            raise GraphDNNError(f"--rename {rule!r}: write PATTERN=REPLACEMENT (a regex and its re.sub replacement)")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise GraphDNNError(f"--rename {rule!r}: {pattern!r} is not a valid regex ({exc})") from None
        out.append((pattern, repl))
    return out
