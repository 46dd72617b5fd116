"""Named tensors from anywhere, and the layout rules that fit foreign weights to graph variables.

``read_named_tensors(source)`` turns any of these into a ``NamedTensors`` (a ``graphdnn.restore``
``TensorSource``: ``names()``, ``info(name)``, ``read(names)``; tensors are read lazily):

* a PyTorch ``.pt`` / ``.pth`` / ``.bin`` state dict (``torch.load(weights_only=True)`` only, so no
  pickled code ever runs), or a live ``torch.nn.Module`` (its ``state_dict()``);
* a numpy ``.npz`` (``allow_pickle=False``), a plain ``.safetensors`` file;
* a TensorFlow V2 checkpoint (prefix, ``.index`` or directory), read without TensorFlow;
  optimizer slots (``*/Momentum``, ``*/Adam``, ``beta1_power``, ``global_step``...) are left out
  and listed in ``excluded``;
* a Keras ``.keras`` / ``.h5`` / ``.weights.h5`` file, named by Keras's ``Variable.path``
  (``hidden1/kernel``, ``lstm/lstm_cell/kernel``, ``mha/query/bias``); a weight the reader cannot
  name raises, none is dropped;
* a mapping of names to arrays, tensors or zero-argument callables (the book's ``original_w``).

``load_weights(target, source, rename=...)`` restores them into a graph through ``graphdnn.restore``
with regex renames, torch key names mapped to TF names (``fc1.weight`` -> ``fc1/kernel`` or
``bn1/gamma``, ``running_var`` -> ``moving_variance``), ``LayoutConverter`` as the ``convert``
hook, and batch-norm settings adopted from the source, all listed in ``report.converted``.

Layout rules (decided by the target variable's ``layout`` attribute and the source framework):

===========  ==========================  ===============================================
target       source                      conversion
===========  ==========================  ===============================================
``"io"``     torch ``Linear`` ``[out, in]``  transpose (always, so square kernels are right)
``"io"``     other, shape reversed        transpose
``"oihw"``   TF/Keras ``HWIO``            ``permute(3, 2, 0, 1)``
``"hwio"``   torch ``OIHW``               ``permute(2, 3, 1, 0)``
===========  ==========================  ===============================================

An LSTM/GRU variable held in torch's gate order (``layout`` ``"gates:torch:LSTM"``, see ``graphdnn.gate_order``)
is adapted by ``graphdnn.restore`` itself: a tensor from a source that does not say otherwise (any foreign one)
is in ONNX's gate order and is permuted; one from a graphdnn checkpoint or graph with the same marker is not.

Batch norm: torch's ``momentum`` is ``1 - m`` of TF/Keras/ONNX's ``m`` and its default epsilon is
1e-5 (TF: 1e-3); ``load_weights`` sets the target ``BatchNormalization`` op's ``momentum`` and
``epsilon`` to the source's (a module's real values, or torch's defaults for a state dict).
"""

from __future__ import annotations

import os
import tokenize
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphdnn import budget
from graphdnn.dtypes import torch_dtype
from graphdnn.errors import FileFormatError, GraphError, reading_file
from graphdnn.graph import Graph
from graphdnn.names import graph_name
from graphdnn.restoring import renamer

__all__ = ["HF_WEIGHT_FILES", "LayoutConverter", "NamedTensors", "hf_weights_file", "load_weights",
           "read_named_tensors", "torch_to_tf_name"]

Shape = tuple[int, ...]
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
_TORCH_BN = {"running_mean": "moving_mean", "running_var": "moving_variance"}
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module")


class NamedTensors:
    """A lazily read set of named tensors (a ``graphdnn.restore`` ``TensorSource``).

    ``framework`` ("torch", "tf", "keras" or None) tells ``LayoutConverter`` which layouts the tensors
    use; ``excluded`` maps names left out (optimizer slots, ``num_batches_tracked``...) to the reason;
    ``batch_norm`` maps a torch module path to its ``(momentum, eps)`` when the source knew them."""

    def __init__(self, readers: Mapping[str, Callable[[], Any]], infos: Mapping[str, tuple[Shape | None, Any]],
                 *, label: str, framework: str | None = None, excluded: Mapping[str, str] | None = None,
                 batch_norm: Mapping[str, tuple[float, float]] | None = None) -> None:
        self._readers, self._infos = dict(readers), dict(infos)
        self.path = self.label = label
        self.framework = framework
        self.excluded: dict[str, str] = dict(excluded or {})
        self.batch_norm: dict[str, tuple[float, float]] = dict(batch_norm or {})

    def names(self) -> list[str]:
        return list(self._readers)

    def info(self, name: str) -> tuple[Shape | None, torch.dtype | None]:
        shape, dtype = self._infos.get(name, (None, None))
        return (None if shape is None else tuple(shape)), dtype

    def read(self, names: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        for name in names:
            yield name, _to_tensor(self._readers[name](), name, self.label)

    def read_one(self, name: str) -> torch.Tensor:
        return next(self.read([name]))[1]

    def to_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor, read now."""
        return dict(self.read(self.names()))

    def __len__(self) -> int:
        return len(self._readers)

    def __repr__(self) -> str:
        return f"NamedTensors({self.label!r}, {len(self)} tensors, framework={self.framework!r})"


def _to_tensor(value: Any, name: str, label: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise FileFormatError(f"{label}: tensor {name!r} holds {arr.dtype} data, not numbers; exclude it")
    if not arr.dtype.isnative:  # big-endian data: torch holds native byte order only
        arr = arr.astype(arr.dtype.newbyteorder("="))
    try:
        return torch.from_numpy(np.array(arr, order="C", copy=True))
    except (TypeError, ValueError) as exc:  # an element type torch has no dtype for (uint16 arrays of bools...)
        raise FileFormatError(f"{label}: tensor {name!r} of element type {arr.dtype} cannot be read: {exc}") from None


# --------------------------------------------------------------------------------------- readers
def read_named_tensors(source: Any, *, skip_optimizer_slots: bool = True, max_bytes: int | None = None
                       ) -> NamedTensors:
    """Named tensors of ``source``: a path (``.pt/.pth/.bin``, ``.npz``, ``.safetensors``, a TF
    checkpoint, ``.keras/.h5``), an ``nn.Module``, a mapping of names to arrays, or a ``NamedTensors``.

    Archive members (``.pt``, ``.npz``) are charged at their declared uncompressed sizes, before any is
    decompressed, to a memory budget of 16 x the file's size + 256 MiB, or ``max_bytes``; going over
    raises ``ResourceLimitError`` (see ``graphdnn.budget``)."""
    if isinstance(source, NamedTensors):
        return source
    if isinstance(source, torch.nn.Module):
        return _from_module(source)
    if isinstance(source, Mapping):
        return _from_mapping(source)
    if not isinstance(source, (str, os.PathLike)):
        raise GraphError(f"cannot read named tensors from a {type(source).__name__}: pass a path, an nn.Module "
                         "or a mapping of names to arrays")
    with budget.load_scope(source, max_bytes=max_bytes), reading_file(source, "tensor file"):
        return _read_path(Path(source), skip_optimizer_slots)


#: The weight files of a Hugging Face-style folder (``save_pretrained``), in the order they are looked for.
HF_WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                   "pytorch_model.bin")


def hf_weights_file(folder: str | os.PathLike[str]) -> Path | None:
    """The weights file of a Hugging Face-style folder (``config.json`` beside ``model.safetensors``, or its
    shards and ``model.safetensors.index.json``), or None when ``folder`` is not one. A sharded ``.bin``
    index is not read (its shards are pickles: convert them to safetensors)."""
    folder = Path(folder)
    if not folder.is_dir() or not (folder / "config.json").is_file():
        return None
    for name in HF_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def _read_path(path: Path, skip_optimizer_slots: bool) -> NamedTensors:
    weights = hf_weights_file(path)
    if weights is not None:
        if weights.name.endswith(".bin.index.json"):
            raise FileFormatError(f"{path}: sharded .bin weights are not read; save the model with "
                                  "save_pretrained(..., safe_serialization=True) to get safetensors shards")
        path = weights
    name = path.name.lower()
    if name.endswith(TORCH_SUFFIXES):
        return _from_torch_file(path)
    if name.endswith(".npz"):
        return _from_npz(path)
    if name.endswith(".safetensors") or name.endswith(".safetensors.index.json"):
        return _from_safetensors(path)
    if name.endswith((".keras", ".h5", ".hdf5")):
        from graphdnn.converters.keras_import import keras_named_tensors

        return keras_named_tensors(path)
    from graphdnn.converters.tf_checkpoint import is_tf_checkpoint

    if is_tf_checkpoint(path):
        return _from_tf_checkpoint(path, skip_optimizer_slots)
    if not path.exists():
        raise FileFormatError(f"{path}: no such file or checkpoint prefix")
    raise FileFormatError(f"{path}: unknown tensor file; named tensors come from .pt/.pth/.bin (PyTorch), .npz, "
                          ".safetensors, a TensorFlow checkpoint prefix, or .keras/.h5")


def _from_mapping(mapping: Mapping[str, Any], label: str = "<mapping>", framework: str | None = None,
                  excluded: Mapping[str, str] | None = None) -> NamedTensors:
    readers: dict[str, Callable[[], Any]] = {}
    infos: dict[str, tuple[Shape | None, Any]] = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise GraphError(f"{label}: tensor names must be strings, got {key!r}")
        if isinstance(value, (torch.Tensor, np.ndarray)):
            readers[key] = lambda v=value: v
            infos[key] = (tuple(value.shape), value.dtype if isinstance(value, torch.Tensor) else None)
        elif callable(value):
            readers[key], infos[key] = value, (None, None)
        else:
            arr = np.asarray(value)
            readers[key] = lambda v=arr: v
            infos[key] = (tuple(arr.shape), None)
    return NamedTensors(readers, infos, label=label, framework=framework, excluded=excluded)


def _split_torch_extras(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    kept, excluded = {}, {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            excluded[key] = "torch batch-norm step counter (no TF/graphdnn counterpart)"
        else:
            kept[key] = value
    return kept, excluded


def _from_module(module: torch.nn.Module) -> NamedTensors:
    state, excluded = _split_torch_extras(module.state_dict())
    bn = {name: (float(m.momentum if m.momentum is not None else 0.1), float(m.eps))
          for name, m in module.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    src = _from_mapping(state, f"<{type(module).__name__} module>", "torch", excluded)
    src.batch_norm = bn
    return src


def _charge_zip(path: Path, what: str) -> None:
    """Charge every member of the zip archive at ``path`` at the uncompressed size its central directory
    declares, refusing sizes deflate cannot produce (a zip bomb), before anything is decompressed; a file
    that is not a zip (a legacy torch pickle, whose tensors are stored raw) is left to its reader."""
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return  # the reader reports a damaged archive in its own words
    for info in infos:
        if info.compress_type == zipfile.ZIP_STORED:
            limit = info.compress_size
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            limit = _DEFLATE_MAX_RATIO * info.compress_size + 1024
        else:
            limit = None
        if limit is not None and info.file_size > limit:
            raise FileFormatError(f"{path}: {what} member {info.filename!r} declares {info.file_size} uncompressed "
                                  f"bytes from {info.compress_size} stored; the archive is corrupted or a zip bomb")
        budget.charge(info.file_size, f"{path}: {what} member {info.filename!r} (uncompressed)")


def _from_torch_file(path: Path) -> NamedTensors:
    _charge_zip(path, "PyTorch archive")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileFormatError(f"{path}: no such file") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad or unsafe file
        raise FileFormatError(
            f"{path}: not a PyTorch state dict graphdnn can read safely ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); save it with torch.save(model.state_dict(), path) "
            "(only tensors are loaded: torch.load(weights_only=True))"
        ) from None
    state = obj
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        nested = [k for k in _STATE_DICT_KEYS if isinstance(obj.get(k), Mapping)]
        state = obj[nested[0]] if nested else obj
    if not isinstance(state, Mapping):
        raise FileFormatError(f"{path}: holds a {type(obj).__name__}, not a state dict (a dict of tensors)")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise FileFormatError(f"{path}: no tensors found (keys: {list(state)[:10]}); save model.state_dict()")
    kept, excluded = _split_torch_extras(tensors)
    excluded.update({k: "not a tensor" for k in state if k not in tensors})
    return _from_mapping(kept, str(path), "torch", excluded)


#: Exceptions numpy and zipfile raise for a damaged ``.npy`` member (its header is parsed as a Python literal).
_NPY_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, SyntaxError,
               tokenize.TokenError, RecursionError, TypeError, OverflowError)
_DEFLATE_MAX_RATIO = 1032  # the most deflate can expand: a larger declared size is a lie


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, name: str
                ) -> tuple[tuple[int, ...], np.dtype, bool, Any]:
    """Validate member ``info``'s ``.npy`` header against the bytes the archive holds; return shape,
    dtype, Fortran order and the member opened after its header (the caller closes it)."""
    if info.compress_type == zipfile.ZIP_STORED:
        limit = info.compress_size
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        limit = _DEFLATE_MAX_RATIO * info.compress_size + 1024
    else:
        raise FileFormatError(f"{path}: array {name!r} uses zip compression method {info.compress_type}; numpy "
                              "writes stored or deflated members only")
    if info.file_size > limit:
        raise FileFormatError(f"{path}: array {name!r} declares {info.file_size} uncompressed bytes from "
                              f"{info.compress_size} stored; the archive is corrupted or a zip bomb")
    f: Any = None
    try:
        f = archive.open(info)
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran, dtype = read(f)
        if dtype.hasobject:
            raise FileFormatError(f"{path}: array {name!r} holds Python objects; graphdnn never unpickles. "
                                  "Save plain numeric arrays")
        count = 1
        for d in shape:
            count *= d
        need, have = count * dtype.itemsize, info.file_size - f.tell()
        if need != have:
            raise FileFormatError(f"{path}: array {name!r} declares {dtype} {list(shape)} ({need} bytes), but its "
                                  f"member holds {have} bytes of data; the file is truncated or corrupted")
    except FileFormatError:
        if f is not None:
            f.close()
        raise
    except _NPY_ERRORS as exc:
        if f is not None:
            f.close()
        raise FileFormatError(f"{path}: array {name!r} has a corrupted header ({type(exc).__name__}: {exc})") from None
    return tuple(shape), dtype, fortran, f


def _npz_members(archive: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            continue
        name = info.filename[:-4]
        if name in members:
            raise FileFormatError(f"{path}: array {name!r} is stored twice; which copy is meant is ambiguous")
        members[name] = info
    return members


def _from_npz(path: Path) -> NamedTensors:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise FileFormatError(f"{path}: not a readable .npz archive ({exc})") from None
    readers: dict[str, Callable[[], Any]] = {}
    infos: dict[str, tuple[Shape | None, Any]] = {}
    with archive:
        for name, info in _npz_members(archive, path).items():
            shape, _, _, f = _npy_header(archive, info, path, name)
            f.close()
            budget.charge(info.file_size, f"{path}: array {name!r}")
            readers[name] = lambda n=name: _npz_read(path, n)
            infos[name] = (shape, None)
    return NamedTensors(readers, infos, label=str(path), framework=None)


def _npz_read(path: Path, name: str) -> np.ndarray:
    """Array ``name`` of the archive, its header checked against the member's size before any allocation."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = _npz_members(archive, path).get(name)
            if info is None:
                raise FileFormatError(f"{path}: no array {name!r}")
            shape, dtype, fortran, f = _npy_header(archive, info, path, name)
            with f:
                data = f.read()
    except FileFormatError:
        raise
    except _NPY_ERRORS as exc:
        raise FileFormatError(f"{path}: cannot read array {name!r} ({type(exc).__name__}: {exc})") from None
    count = 1
    for d in shape:
        count *= d
    if len(data) != count * dtype.itemsize:
        raise FileFormatError(f"{path}: array {name!r} is truncated ({len(data)} of {count * dtype.itemsize} bytes)")
    return np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")


def _from_safetensors(path: Path) -> NamedTensors:
    from graphdnn.checkpoint import TensorFile

    tf = TensorFile(path)
    readers = {n: (lambda n=n: tf.read_one(n)) for n in tf.names()}
    named = NamedTensors(readers, {n: tf.info(n) for n in tf.names()}, label=str(path))
    named.graph_json, named.metadata = tf.graph_json, tf.metadata  # a checkpoint's graph tells its layouts
    return named


def _from_tf_checkpoint(path: str | os.PathLike, skip_optimizer_slots: bool) -> NamedTensors:
    from graphdnn.converters.tf_checkpoint import TFCheckpointReader, is_optimizer_slot

    reader = TFCheckpointReader(path)
    readers: dict[str, Callable[[], Any]] = {}
    infos: dict[str, tuple[Shape | None, Any]] = {}
    excluded: dict[str, str] = {}
    for name in reader.names():
        base = str(reader.dtype(name).base_dtype)
        if skip_optimizer_slots and is_optimizer_slot(name):
            excluded[name] = "optimizer slot"
        elif base in ("string", "resource", "variant") or reader.entry(name).slices:
            excluded[name] = f"{base} tensor (no torch equivalent)" if not reader.entry(name).slices else "partitioned"
        else:
            readers[name] = lambda n=name: reader.read(n)
            infos[name] = (reader.shape(name), _tf_torch_dtype(base))
    return NamedTensors(readers, infos, label=reader.prefix, framework="tf", excluded=excluded)


def _tf_torch_dtype(name: str) -> torch.dtype | None:
    try:
        return torch_dtype(name)
    except GraphError:
        return None


# --------------------------------------------------------------------------------------- layouts
class LayoutConverter:
    """A ``convert`` hook for ``graphdnn.restore``: fits a foreign tensor to the target variable's
    layout (see the module docstring) and records what it did in ``notes`` (target name -> text)."""

    def __init__(self, graph: Graph, framework: str | None = None) -> None:
        self.graph, self.framework = graph, framework
        self.notes: dict[str, str] = {}

    def __call__(self, name: str, value: torch.Tensor, shape: Shape | None) -> torch.Tensor:
        value = torch.as_tensor(value)
        if shape is None:
            return value
        shape = tuple(shape)
        layout = self.graph.get_operation(name).attrs.get("layout")
        src = tuple(value.shape)
        if layout == "io" and value.dim() == 2:
            if (self.framework == "torch" and src[::-1] == shape) or (src != shape and src[::-1] == shape):
                what = "torch Linear weight [out, in]" if self.framework == "torch" else "[out, in] kernel"
                self.notes[name] = f"transposed {what} {list(src)} -> [in, out] {list(shape)}"
                return value.t().contiguous()
        elif layout in ("oihw", "hwio") and value.dim() == 4:
            to_oihw, to_hwio = (3, 2, 0, 1), (2, 3, 1, 0)
            foreign = {"oihw": ("tf", "keras"), "hwio": ("torch",)}[layout]
            perm = to_oihw if layout == "oihw" else to_hwio
            permuted = tuple(src[p] for p in perm)
            if permuted == shape and (self.framework in foreign or src != shape):
                names = ("HWIO", "OIHW") if layout == "oihw" else ("OIHW", "HWIO")
                self.notes[name] = f"conv kernel {names[0]} {list(src)} -> {names[1]} {list(shape)}"
                return value.permute(*perm).contiguous()
        return value


# ------------------------------------------------------------------------------------- restoring
def torch_to_tf_name(key: str, targets: Iterable[str] = ()) -> str:
    """``fc1.weight`` -> ``fc1/kernel`` (or ``fc1/gamma`` when that is a target), ``bn.bias`` ->
    ``bn/bias`` or ``bn/beta``, ``running_mean`` -> ``moving_mean``, ``running_var`` -> ``moving_variance``."""
    targets = set(targets)
    scope, _, leaf = key.replace(".", "/").rpartition("/")
    prefix = f"{scope}/" if scope else ""
    candidates = {"weight": ("kernel", "gamma", "weight"), "bias": ("bias", "beta")}.get(leaf)
    if candidates:
        for c in candidates:
            if prefix + c in targets:
                return prefix + c
        return prefix + candidates[0]
    return prefix + _TORCH_BN.get(leaf, leaf)


def load_weights(target: Any, source: Any, *, rename: Any = None, include: Any = None, exclude: Any = None,
                 strict: bool = True, skip_mismatched: bool = False, framework: str | None = None,
                 convert_layouts: bool = True, adopt_batch_norm: bool = True, max_bytes: int | None = None) -> Any:
    """Restore foreign weights into ``target`` (a Graph or compiled module) by name; returns the
    ``RestoreReport``. ``rename`` rules (``[(regex, replacement)]``, a dict or a callable, as in
    ``graphdnn.restore``) apply first to the source names; torch keys then become TF names
    (``torch_to_tf_name``). Layouts are converted (``LayoutConverter``) and torch batch-norm settings
    adopted; both are listed in ``report.converted`` and excluded names in ``report.skipped``.
    ``max_bytes`` bounds what reading ``source`` may allocate (``read_named_tensors``)."""
    from graphdnn.restoring import restore

    src = read_named_tensors(source, max_bytes=max_bytes)
    framework = framework or src.framework
    graph = target if isinstance(target, Graph) else getattr(target, "source_graph", None)
    if not isinstance(graph, Graph):
        raise GraphError(f"cannot load weights into a {type(target).__name__}: pass a Graph or a compiled module")
    user = renamer(rename)
    names = [op.name for op in graph.variables()]
    known = set(names)

    def to_target(n: str) -> str:
        renamed = user(n)
        if renamed in known:
            return renamed
        as_graph_name = graph_name(renamed)  # a state-dict key (``encoder.layer.0.weight``) of a graph's variable
        if as_graph_name in known:
            return as_graph_name
        return torch_to_tf_name(renamed, names) if framework == "torch" else renamed
    converter = LayoutConverter(graph, framework) if convert_layouts else None
    report = restore(target, src, include=include, exclude=exclude, rename=to_target, strict=strict,
                     skip_mismatched=skip_mismatched, convert=converter)
    if converter is not None:
        report.converted.update(converter.notes)
    if adopt_batch_norm and framework == "torch":
        _adopt_batch_norm(graph, src, report)
    return report


def _adopt_batch_norm(graph: Graph, src: NamedTensors, report: Any) -> None:
    """Give each BatchNormalization op whose statistics came from torch the source's epsilon and
    momentum (converted to the TF/ONNX convention)."""
    for op in graph.operations():
        if op.type != "BatchNormalization" or op.domain:
            continue
        stats = [r.split(":")[0] for r in op.inputs[3:5] if r]
        restored = [report.pairs[s] for s in stats if s in report.pairs and s in report.matched]
        if not restored:
            continue
        module = restored[0].rsplit(".", 1)[0] if "." in restored[0] else ""
        momentum, eps = src.batch_norm.get(module, (0.1, 1e-5))
        old = (op.attrs.get("momentum", 0.9), op.attrs.get("epsilon", 1e-5))
        op.attrs["momentum"], op.attrs["epsilon"] = round(1.0 - momentum, 12), eps
        known = "module" if module in src.batch_norm else "torch defaults"
        report.converted[op.name] = (f"batch norm from torch ({known}) momentum {momentum} eps {eps} -> momentum "
                                     f"{op.attrs['momentum']} epsilon {eps} (was {old[0]}, {old[1]})")
