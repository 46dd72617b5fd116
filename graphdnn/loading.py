"""``graphdnn.load(path)``: the one entry point that turns a model file into a ``Graph`` with values.

The format is chosen by the path (and, for an unknown extension, by sniffing a safetensors header):

=============================================  ===============================================
``*.safetensors``                               graphdnn checkpoint (``graphdnn.checkpoint``)
``*.safetensors.index.json``                    sharded graphdnn checkpoint
``*.onnx``                                      ``converters.onnx_import.load_onnx``
``*.meta``, ``*.index``, a TF checkpoint prefix ``converters.tf_import.load_tf``
``*.keras``, ``*.h5``, ``*.hdf5``               ``converters.keras_import.load_keras``
=============================================  ===============================================

Importers of foreign formats are imported only when needed; one that is not installed gives a
``FileFormatError`` naming the format.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from graphdnn.bulk import paused_gc
from graphdnn.errors import FileFormatError
from graphdnn.graph import Graph

SUPPORTED = (
    ".safetensors (graphdnn checkpoint)",
    ".safetensors.index.json (sharded checkpoint)",
    ".onnx",
    ".meta / .index / checkpoint prefix (TensorFlow 1)",
    ".keras / .h5 / .hdf5 (Keras)",
)


def _foreign(module: str, function: str, fmt: str, path: Path, kwargs: dict[str, Any]) -> Graph:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module or module.startswith(exc.name + ".")):
            raise FileFormatError(f"{path}: the {fmt} importer ({module}) is unavailable in this installation; "
                                  "convert the file elsewhere, or install a graphdnn that ships it") from None
        raise
    fn = getattr(mod, function, None)
    if fn is None:
        raise FileFormatError(f"{path}: the {fmt} importer ({module}) has no {function}()")
    return fn(str(path), **kwargs)


def _is_tf_prefix(path: Path) -> bool:
    return Path(str(path) + ".index").is_file() or Path(str(path) + ".meta").is_file()


def _looks_like_safetensors(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8


def load(path: str | os.PathLike, **kwargs: Any) -> Graph:
    """Load the graph (with its variable values) stored at ``path``, whatever the format.

    For graphdnn checkpoints ``values=False`` returns the graph alone (TF's ``import_meta_graph``),
    to be filled by ``graphdnn.restore``. Other keyword arguments go to the format's importer."""
    with paused_gc():
        return _load(Path(path), kwargs)


def _load(path: Path, kwargs: dict[str, Any]) -> Graph:
    name = path.name.lower()
    if name.endswith(".safetensors") or name.endswith(".safetensors.index.json"):
        from graphdnn.checkpoint import load_safetensors

        return load_safetensors(path, **kwargs)
    if name.endswith(".onnx"):
        return _foreign("converters.onnx_import", "load_onnx", "ONNX", path, kwargs)
    if name.endswith((".meta", ".index")) or (not path.exists() and _is_tf_prefix(path)):
        return _foreign("converters.tf_import", "load_tf", "TensorFlow checkpoint", path, kwargs)
    if name.endswith((".keras", ".h5", ".hdf5")):
        return _foreign("converters.keras_import", "load_keras", "Keras", path, kwargs)
    if path.is_file() and _looks_like_safetensors(path):
        from graphdnn.checkpoint import load_safetensors

        return load_safetensors(path, **kwargs)
    if not path.exists():
        raise FileFormatError(f"{path}: no such file")
    raise FileFormatError(f"{path}: unknown model format; graphdnn.load reads {', '.join(SUPPORTED)}")


__all__ = ["SUPPORTED", "load"]
