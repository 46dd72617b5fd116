"""``graphdnn.load(path)``: the one entry point that turns a model file into a ``Graph`` with values.

The format is chosen by the file's content first (:func:`sniff`: the magic bytes of HDF5, zip, pickle,
safetensors, ONNX and TF index files), by the path second:

=============================================  ===============================================
``*.safetensors``                               graphdnn checkpoint (``graphdnn.checkpoint``)
``*.safetensors.index.json``                    sharded graphdnn checkpoint
``*.onnx``                                      ``graphdnn.converters.onnx_import.load_onnx``
``*.meta``, ``*.index``, a TF checkpoint prefix ``graphdnn.converters.tf_import.load_tf``
a folder holding ``saved_model.pb``             ``graphdnn.converters.saved_model.load_saved_model``
``*.keras``, ``*.h5``, ``*.hdf5``               ``graphdnn.converters.keras_import.load_keras``
=============================================  ===============================================

Importers of foreign formats are imported only when needed; one that is not installed gives a
``FileFormatError`` naming the format.
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from typing import Any

from graphdnn import budget
from graphdnn.bulk import paused_gc
from graphdnn.errors import FileFormatError, reading_file
from graphdnn.graph import Graph

SUPPORTED = (
    ".safetensors (graphdnn checkpoint)",
    ".safetensors.index.json (sharded checkpoint)",
    ".onnx",
    ".meta / .index / checkpoint prefix (TensorFlow 1)",
    "a SavedModel folder (TensorFlow 2)",
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
    return _read(fn, path, kwargs)


def _read(fn: Any, path: Path, kwargs: dict[str, Any]) -> Graph:
    """``fn(path, **kwargs)``, any unforeseen exception from reading the file a ``CorruptFileError`` (a
    keyword ``fn`` does not take stays the caller's ``TypeError``)."""
    inspect.signature(fn).bind(str(path), **kwargs)
    with reading_file(path):
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


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_TF_TABLE_MAGIC = bytes.fromhex("57fb808b247547db")  # the footer of a TF checkpoint's .index (a LevelDB table)
# tags of the ModelProto fields that can follow ir_version: producer_name/version, domain, model_version,
# doc_string, graph, opset_import, metadata_props
_ONNX_FIELDS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72}

#: What :func:`sniff` recognises, in words, and the function that reads it.
KINDS = {
    "safetensors": ("a safetensors file", "graphdnn.load"),
    "onnx": ("an ONNX model", "graphdnn.load"),
    "hdf5": ("an HDF5 file (Keras .h5)", "graphdnn.load"),
    "keras": ("a Keras v3 archive (.keras)", "graphdnn.load"),
    "tf-index": ("a TensorFlow checkpoint index", "graphdnn.load"),
    "pytorch": ("a PyTorch file (torch.save)", "graphdnn.converters.named_tensors.load_weights"),
    "npz": ("a NumPy .npz archive", "graphdnn.converters.named_tensors.load_weights"),
    "npy": ("a NumPy .npy array", "numpy.load"),
}


def sniff(path: str | os.PathLike) -> str | None:
    """The format of the file at ``path`` told by its content (a key of :data:`KINDS`), or None when the
    bytes say nothing certain (a TF ``.meta`` protobuf, a text file, a folder)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            size = os.fstat(f.fileno()).st_size
            f.seek(max(size - 8, 0))
            tail = f.read(8)
            if head[:8] != _HDF5_MAGIC and size > 520:
                f.seek(512)  # an HDF5 file with a user block
                head_512 = f.read(8)
            else:
                head_512 = b""
    except OSError:
        return None
    if head[:8] == _HDF5_MAGIC or head_512 == _HDF5_MAGIC:
        return "hdf5"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if head[:4] == b"PK\x03\x04":
        return _zip_kind(path)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pytorch"  # a pickle: torch.save's legacy format
    if _looks_like_safetensors(path):
        return "safetensors"
    if size >= 48 and tail == _TF_TABLE_MAGIC:
        return "tf-index"
    if len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 30 and head[2] in _ONNX_FIELDS:
        return "onnx"  # ir_version (field 1, a small varint) then another ModelProto field
    return None


def _zip_kind(path: Path) -> str | None:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "pytorch"
    if "config.json" in names and ("model.weights.h5" in names or "metadata.json" in names):
        return "keras"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return None


_BY_NAME = (
    ("safetensors", (".safetensors",)),
    ("onnx", (".onnx",)),
    ("hdf5", (".h5", ".hdf5")),
    ("keras", (".keras",)),
    ("tf-index", (".index",)),
    ("pytorch", (".pt", ".pth", ".bin")),
    ("npz", (".npz",)),
    ("npy", (".npy",)),
)


def _kind_by_name(name: str) -> str | None:
    return next((kind for kind, suffixes in _BY_NAME if name.endswith(suffixes)), None)


def load(path: str | os.PathLike, *, max_bytes: int | None = None, **kwargs: Any) -> Graph:
    """Load the graph (with its variable values) stored at ``path``, whatever the format.

    What the file makes graphdnn allocate is charged to a memory budget (``graphdnn.budget``): by
    default 16 x the size of the model's files + 256 MiB; ``max_bytes`` sets it (raise it for a trusted
    file that legitimately expands). Going over raises ``ResourceLimitError`` naming the tensor.

    For graphdnn checkpoints ``values=False`` returns the graph alone (TF's ``import_meta_graph``),
    to be filled by ``graphdnn.restore``. Other keyword arguments go to the format's importer.

    Whatever is wrong with the file raises a ``GraphDNNError`` naming it (``CorruptFileError`` for
    damage no reader check foresaw, the reader's exception as its ``__cause__``)."""
    with paused_gc(), budget.load_scope(path, max_bytes=max_bytes) as scope:
        graph = _load(Path(path), kwargs)
        budget.remember(graph, scope)
        return graph


def _load(path: Path, kwargs: dict[str, Any]) -> Graph:
    name = path.name.lower()
    kind = sniff(path) if path.is_file() and name != "saved_model.pb" else None
    if kind is not None and not (kind == "tf-index" and name.endswith(".index")):
        return _load_kind(path, kind, _kind_by_name(name), kwargs)
    if name.endswith(".safetensors") or name.endswith(".safetensors.index.json"):
        from graphdnn.checkpoint import load_safetensors

        return _read(load_safetensors, path, kwargs)
    if name.endswith(".onnx"):
        return _foreign("graphdnn.converters.onnx_import", "load_onnx", "ONNX", path, kwargs)
    if (path.is_dir() and (path / "saved_model.pb").is_file()) or name == "saved_model.pb":
        return _foreign("graphdnn.converters.saved_model", "load_saved_model", "TensorFlow SavedModel", path, kwargs)
    if name.endswith((".meta", ".index")) or (not path.exists() and _is_tf_prefix(path)):
        return _foreign("graphdnn.converters.tf_import", "load_tf", "TensorFlow checkpoint", path, kwargs)
    if name.endswith((".keras", ".h5", ".hdf5")):
        return _foreign("graphdnn.converters.keras_import", "load_keras", "Keras", path, kwargs)
    if path.is_file() and _looks_like_safetensors(path):
        from graphdnn.checkpoint import load_safetensors

        return _read(load_safetensors, path, kwargs)
    if not path.exists():
        raise FileFormatError(f"{path}: no such file")
    raise FileFormatError(f"{path}: unknown model format; graphdnn.load reads {', '.join(SUPPORTED)}")


def _load_kind(path: Path, kind: str, named: str | None, kwargs: dict[str, Any]) -> Graph:
    """Read ``path`` as the ``kind`` its bytes show (whatever its extension says)."""
    if kind == "safetensors":
        from graphdnn.checkpoint import load_safetensors

        return _read(load_safetensors, path, kwargs)
    if kind == "onnx":
        return _foreign("graphdnn.converters.onnx_import", "load_onnx", "ONNX", path, kwargs)
    if kind in ("hdf5", "keras"):
        return _foreign("graphdnn.converters.keras_import", "load_keras", "Keras", path, kwargs)
    what, reader = KINDS[kind]
    misnamed = f" (named like {KINDS[named][0]})" if named and named != kind else ""
    if kind == "tf-index":
        raise FileFormatError(f"{path}: {what}{misnamed}; name it PREFIX.index beside its PREFIX.data-* files "
                              "and load PREFIX.index (or PREFIX.meta)")
    if kind in ("pytorch", "npz"):
        raise FileFormatError(f"{path}: {what}{misnamed} holds weights, not a graph: use "
                              f"{reader}(graph, {str(path)!r}) to load them into a graph built in code")
    raise FileFormatError(f"{path}: {what}{misnamed} is an array, not a model; read it with {reader}")


__all__ = ["KINDS", "SUPPORTED", "load", "sniff"]
