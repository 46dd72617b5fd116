"""The file formats the converters read and write, registered with ``graphdnn.formats`` through the
``graphdnn.formats`` entry points in ``pyproject.toml``.

This module must stay light: it holds the content sniffers (magic bytes) and ``"module:function"``
references; the importers and exporters themselves are imported only when a file is read or written.
"""

from __future__ import annotations

from pathlib import Path

from graphdnn.formats import Format, Probe, looks_like_safetensors

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_TF_TABLE_MAGIC = bytes.fromhex("57fb808b247547db")  # the footer of a TF checkpoint's .index (a LevelDB table)
# tags of the ModelProto fields that can follow ir_version: producer_name/version, domain, model_version,
# doc_string, graph, opset_import, metadata_props
_ONNX_FIELDS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72}

_NAMED_TENSORS = "graphdnn.converters.named_tensors"
_LOAD_WEIGHTS = f"{_NAMED_TENSORS}.load_weights"
_READ_TENSORS = f"{_NAMED_TENSORS}:read_named_tensors"


# ------------------------------------------------------------------------------------- sniffers
def _hdf5(probe: Probe) -> bool:
    return probe.head[:8] == _HDF5_MAGIC or (probe.size > 520 and probe.read(512, 8) == _HDF5_MAGIC)  # user block


def _npy(probe: Probe) -> bool:
    return probe.head[:6] == b"\x93NUMPY"


def _pytorch(probe: Probe) -> bool:
    if probe.head[:1] == b"\x80" and probe.head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        # a pickle (torch.save's legacy format), unless it is a safetensors file whose header length starts
        # with those bytes: a pickle never has ``{`` at offset 8 (torch's magic number or a frame length there)
        return not looks_like_safetensors(probe)
    names = probe.zip_names()
    return names is not None and any(n == "data.pkl" or n.endswith("/data.pkl") for n in names)


def _keras(probe: Probe) -> bool:
    names = probe.zip_names()
    return names is not None and "config.json" in names and ("model.weights.h5" in names or "metadata.json" in names)


def _npz(probe: Probe) -> bool:
    names = probe.zip_names()
    return bool(names) and all(n.endswith(".npy") for n in names)  # type: ignore[union-attr]


def _not_zip(probe: Probe) -> bool:
    return probe.head[:4] != b"PK\x03\x04"


def _tf_index(probe: Probe) -> bool:
    return _not_zip(probe) and probe.size >= 48 and probe.tail == _TF_TABLE_MAGIC


def _onnx(probe: Probe) -> bool:
    head = probe.head
    # ir_version (field 1, a small varint) then another ModelProto field
    return _not_zip(probe) and len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 30 and head[2] in _ONNX_FIELDS


# ------------------------------------------------------------------------------------- claims
def _saved_model(path: Path) -> bool:
    return (path.is_dir() and (path / "saved_model.pb").is_file()) or path.name == "saved_model.pb"


def _tf_prefix(path: Path) -> bool:
    return not path.exists() and (Path(f"{path}.index").is_file() or Path(f"{path}.meta").is_file())


def _hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


# ------------------------------------------------------------------------------------- formats
ONNX = Format(
    name="onnx", description="an ONNX model", suffixes=(".onnx",), sniff=_onnx, priority=90,
    load="graphdnn.converters.onnx_import:load_onnx", save="graphdnn.converters.onnx_export:export_onnx",
    title="ONNX", label=".onnx",
    hooks={"build_model": "graphdnn.converters.onnx_export:build_model",
           "value_names": "graphdnn.converters.onnx_export:value_names",
           "read_model": "graphdnn.converters.onnx_import:read_model"},
)

HDF5 = Format(
    name="hdf5", description="an HDF5 file (Keras .h5)", suffixes=(".h5", ".hdf5"), sniff=_hdf5, priority=10,
    load="graphdnn.converters.keras_import:load_keras", title="Keras", label=".keras / .h5 / .hdf5 (Keras)",
)

KERAS = Format(
    name="keras", description="a Keras v3 archive (.keras)", suffixes=(".keras",), sniff=_keras, priority=31,
    load="graphdnn.converters.keras_import:load_keras", title="Keras", label=".keras / .h5 / .hdf5 (Keras)",
)

TF_INDEX = Format(
    name="tf-index", description="a TensorFlow checkpoint index", suffixes=(".index",), sniff=_tf_index,
    claims=_tf_prefix, priority=60, load="graphdnn.converters.tf_import:load_tf", title="TensorFlow checkpoint",
    label=".meta / .index / checkpoint prefix (TensorFlow 1)",
    rename_hint="name it PREFIX.index beside its PREFIX.data-* files and load PREFIX.index (or PREFIX.meta)",
    hooks={"read_tensors": _READ_TENSORS, "holds_tensors": "graphdnn.converters.tf_checkpoint:is_tf_checkpoint"},
)

TF_META = Format(
    name="tf-meta", description="a TensorFlow meta graph", suffixes=(".meta",), priority=61,
    load="graphdnn.converters.tf_import:load_tf", title="TensorFlow checkpoint",
    label=".meta / .index / checkpoint prefix (TensorFlow 1)",
)

SAVED_MODEL = Format(
    name="saved-model", description="a TensorFlow SavedModel", claims=_saved_model, priority=62,
    load="graphdnn.converters.saved_model:load_saved_model", title="TensorFlow SavedModel",
    label="a SavedModel folder (TensorFlow 2)",
)

PYTORCH = Format(
    name="pytorch", description="a PyTorch file (torch.save)", suffixes=(".pt", ".pth", ".bin"), sniff=_pytorch,
    priority=30, content="weights", reader=_LOAD_WEIGHTS, title="PyTorch", hooks={"read_tensors": _READ_TENSORS},
)

NPZ = Format(
    name="npz", description="a NumPy .npz archive", suffixes=(".npz",), sniff=_npz, priority=32,
    content="weights", reader=_LOAD_WEIGHTS, title="NumPy", hooks={"read_tensors": _READ_TENSORS},
)

NPY = Format(
    name="npy", description="a NumPy .npy array", suffixes=(".npy",), sniff=_npy, priority=20, content="array",
    reader="numpy.load", title="NumPy",
)

HF_FOLDER = Format(
    name="hf-folder", description="a Hugging Face model folder", claims=_hf_folder, priority=70, content="weights",
    reader=_LOAD_WEIGHTS, title="Hugging Face", hooks={"read_tensors": _READ_TENSORS},
)

#: A ``torch.nn.Module`` in memory: not a file, reached through the same registry (``graphdnn.from_torch``).
TORCH_MODULE = Format(
    name="torch.nn.Module", description="a PyTorch module", priority=100, content="object", title="PyTorch",
    hooks={"from_torch": "graphdnn.converters.torch_export:from_torch"},
)

#: Every format above, in the order ``graphdnn.load``'s messages list them (the entry point's value).
FORMATS = (ONNX, TF_INDEX, TF_META, SAVED_MODEL, HDF5, KERAS, PYTORCH, NPZ, NPY, HF_FOLDER, TORCH_MODULE)
