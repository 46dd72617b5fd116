"""Torch tensors <-> ONNX ``TensorProto`` (bfloat16 and float8 included, bytes kept exactly).

The small types (int4, uint4, int2, uint2, float4_e2m1fn, float8_e8m0fnu) are unpacked on import into
graphdnn's one-element-per-byte tensors (``graphdnn.small_dtypes``) and packed again on export, through
``ml_dtypes`` arrays and ``onnx.numpy_helper``; ``array_to_torch``/``torch_to_array`` convert such arrays.

``load_external_data(model, base_dir, source)`` reads the external data of every tensor of a model
(initializers, sparse initializers, tensor and sparse-tensor attributes of any node, in control-flow
bodies and functions at any depth) into the tensors themselves, and reads nothing outside ``base_dir``:
see its docstring for the rules. It is the only place graphdnn reads ONNX external data."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import onnx
import torch
from onnx import AttributeProto, TensorProto, numpy_helper

from graphdnn import budget
from graphdnn.errors import ExternalReferenceError, FileFormatError
from graphdnn.small_dtypes import SMALL_DTYPES

#: ml_dtypes array dtype name -> the torch dtype holding it unpacked.
_SMALL_BY_NUMPY = {info.name: dtype for dtype, info in SMALL_DTYPES.items()}

# Element types numpy cannot hold natively: stored as raw little-endian bytes of the same width.
_RAW_TYPES: dict[torch.dtype, tuple[int, torch.dtype]] = {
    torch.bfloat16: (TensorProto.BFLOAT16, torch.int16),
    torch.float8_e4m3fn: (TensorProto.FLOAT8E4M3FN, torch.uint8),
    torch.float8_e4m3fnuz: (TensorProto.FLOAT8E4M3FNUZ, torch.uint8),
    torch.float8_e5m2: (TensorProto.FLOAT8E5M2, torch.uint8),
    torch.float8_e5m2fnuz: (TensorProto.FLOAT8E5M2FNUZ, torch.uint8),
}
_RAW_BY_CODE = {code: (dt, view) for dt, (code, view) in _RAW_TYPES.items()}


def torch_to_proto(tensor: torch.Tensor, name: str) -> TensorProto:
    """A ``TensorProto`` named ``name`` holding ``tensor``'s values (as raw data)."""
    t = tensor.detach().cpu()
    if t.dtype in SMALL_DTYPES:  # numpy_helper packs the ml_dtypes array (2 or 4 per byte)
        return numpy_helper.from_array(torch_to_array(t), name)
    t = t.contiguous()
    if t.dtype in _RAW_TYPES:
        code, view = _RAW_TYPES[t.dtype]
        proto = TensorProto()
        proto.name = name
        proto.data_type = code
        proto.dims.extend(int(d) for d in t.shape)
        proto.raw_data = t.view(view).numpy().astype("<" + t.view(view).numpy().dtype.str[1:]).tobytes()
        return proto
    if t.dtype in (torch.uint16, torch.uint32, torch.uint64):
        array = t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]).numpy()
        array = array.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[t.element_size()])
    else:
        array = t.resolve_conj().numpy()
    return numpy_helper.from_array(np.asarray(array, order="C"), name)


def proto_to_torch(proto: TensorProto, where: str = "tensor") -> torch.Tensor:
    """The torch tensor of a ``TensorProto`` (external data must already be loaded, see
    ``load_external_data``; a tensor still pointing at a file is refused, never read)."""
    _refuse_unloaded(proto, where)
    if proto.data_type == TensorProto.STRING:
        raise FileFormatError(f"{where}: string tensors are not supported by graphdnn")
    try:
        array = numpy_helper.to_array(proto)
    except Exception as exc:  # unknown element types or a bad payload
        kind = TensorProto.DataType.Name(proto.data_type) if proto.data_type in TensorProto.DataType.values() else (
            proto.data_type)
        raise FileFormatError(f"{where}: cannot read tensor of element type {kind}: {exc}") from exc
    if proto.data_type in _RAW_BY_CODE:
        dtype, view = _RAW_BY_CODE[proto.data_type]
        raw = np.ascontiguousarray(array).view(np.int16 if view == torch.int16 else np.uint8)
        return torch.from_numpy(raw.copy()).view(dtype).reshape([int(d) for d in proto.dims])
    if array.dtype.name in _SMALL_BY_NUMPY:
        return array_to_torch(array)
    if array.dtype.kind not in "biufc" or array.dtype.itemsize == 1 and array.dtype.name not in (
            "uint8", "int8", "bool"):
        raise FileFormatError(f"{where}: element type {array.dtype.name} is not supported by graphdnn")
    if array.dtype == np.uint16 or array.dtype == np.uint32 or array.dtype == np.uint64:
        signed = {2: np.int16, 4: np.int32, 8: np.int64}[array.dtype.itemsize]
        tdt = {2: torch.uint16, 4: torch.uint32, 8: torch.uint64}[array.dtype.itemsize]
        return torch.from_numpy(np.asarray(array, order="C").view(signed).copy()).view(tdt)
    return torch.from_numpy(np.array(array, copy=True))


def _refuse_unloaded(proto: TensorProto, where: str) -> None:
    """Never let ``numpy_helper`` read external data itself (it resolves against the working directory)."""
    if proto.data_location == TensorProto.EXTERNAL:
        location = next((e.value for e in proto.external_data if e.key == "location"), "")
        raise ExternalReferenceError(f"{where}: the data is in external file {location!r}, which was not loaded; "
                                     "import the model from its file (or pass external_data_dir=)")


def array_to_torch(array: np.ndarray) -> torch.Tensor:
    """A numpy array of an ml_dtypes small type (int4... float8_e8m0fnu) as graphdnn's unpacked tensor."""
    dtype = _SMALL_BY_NUMPY[array.dtype.name]
    info = SMALL_DTYPES[dtype]
    if info.kind in ("int", "uint"):  # the values (ml_dtypes' own bytes are not sign-extended)
        raw = np.asarray(array).astype(np.int8 if info.kind == "int" else np.uint8)
    else:  # float4 / e8m0: ml_dtypes keeps the code in the byte
        raw = np.ascontiguousarray(array).view(np.uint8)
    return torch.from_numpy(np.array(raw, order="C", copy=True)).view(dtype)


def torch_to_array(tensor: torch.Tensor) -> np.ndarray:
    """A graphdnn small-type tensor as a numpy array of the ml_dtypes type (``array_to_torch`` reversed)."""
    import ml_dtypes

    info = SMALL_DTYPES[tensor.dtype]
    raw = tensor.detach().cpu().view(info.storage).contiguous().numpy()
    if info.kind in ("int", "uint"):
        return raw.astype(getattr(ml_dtypes, info.name))
    return raw.view(getattr(ml_dtypes, info.name))


# ------------------------------------------------------------------------------------------------
# External data, read inside one folder only
# ------------------------------------------------------------------------------------------------
_MAX_DEPTH = 64  # nesting of control-flow bodies walked
_SEPARATORS = re.compile(r"[\\/]")
#: ONNX element types packed several to a byte -> elements per byte (those the installed onnx knows)
_PACKED = {getattr(TensorProto, name): per_byte
           for name, per_byte in (("INT4", 2), ("UINT4", 2), ("FLOAT4E2M1", 2), ("INT2", 4), ("UINT2", 4))
           if hasattr(TensorProto, name)}


def _graph_tensors(graph: onnx.GraphProto, label: str, depth: int) -> Iterator[tuple[str, TensorProto]]:
    if depth > _MAX_DEPTH:
        raise FileFormatError(f"{label}control-flow bodies nested deeper than {_MAX_DEPTH} levels")
    for t in graph.initializer:
        yield f"{label}initializer {t.name!r}", t
    for sp in graph.sparse_initializer:
        yield f"{label}sparse initializer {sp.values.name!r} (values)", sp.values
        yield f"{label}sparse initializer {sp.values.name!r} (indices)", sp.indices
    yield from _node_tensors(graph.node, label, depth)


def _node_tensors(nodes: list[onnx.NodeProto], label: str, depth: int) -> Iterator[tuple[str, TensorProto]]:
    for i, node in enumerate(nodes):
        at = f"{label}node {node.name or f'#{i}'!r} ({node.op_type}) attribute"
        for a in node.attribute:
            if a.type == AttributeProto.TENSOR or a.HasField("t"):
                yield f"{at} {a.name!r}", a.t
            for k, t in enumerate(a.tensors):
                yield f"{at} {a.name!r}[{k}]", t
            sparse = [a.sparse_tensor] if a.HasField("sparse_tensor") else []
            for k, sp in enumerate([*sparse, *a.sparse_tensors]):
                yield f"{at} {a.name!r} (sparse values{f' #{k}' if k else ''})", sp.values
                yield f"{at} {a.name!r} (sparse indices{f' #{k}' if k else ''})", sp.indices
            bodies = [a.g] if a.HasField("g") else []
            for body in [*bodies, *a.graphs]:
                yield from _graph_tensors(body, f"{at} {a.name!r}, body {body.name!r}: ", depth + 1)


def model_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, TensorProto]]:
    """Every ``TensorProto`` of a model, with where it is: the main graph's initializers and sparse
    initializers (values and indices), tensor, tensor-list and sparse-tensor attributes of every node,
    the same in every control-flow body (any depth), in functions and in training graphs."""
    yield from _graph_tensors(model.graph, "", 0)
    for f in model.functions:
        yield from _node_tensors(f.node, f"function {f.name!r}: ", 1)
    for k, info in enumerate(model.training_info):
        for part in ("initialization", "algorithm"):
            if info.HasField(part):
                yield from _graph_tensors(getattr(info, part), f"training info #{k} {part}: ", 1)


def _raw_size(tensor: TensorProto, where: str) -> int | None:
    """Bytes of ``tensor``'s raw data according to its dims and element type (None: unknown type)."""
    numel = 1
    for d in tensor.dims:
        if d < 0:
            raise FileFormatError(f"{where}: negative dimension {d} in dims {list(tensor.dims)}")
        numel *= int(d)
    if tensor.data_type in _PACKED:
        per = _PACKED[tensor.data_type]
        return (numel + per - 1) // per
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:  # an unknown element type: refused later, where the tensor is read
        return None
    return numel * itemsize


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class ExternalDataMissing(FileFormatError):
    """A tensor's external data file does not exist (or vanished: a concurrent save may have replaced the
    model and removed its old data files, so a loader reads the model again)."""


def _external_region(tensor: TensorProto, where: str, base: Path, root: str) -> tuple[str, int, int, int]:
    """(real path, offset, length, file size) of a tensor's external data, every rule checked."""
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    if not location:
        raise FileFormatError(f"{where}: marked as external data but names no location; the file is corrupted")
    refuse = f"{where}: external data location {location!r}"
    if "\0" in location:
        raise ExternalReferenceError(f"{refuse} holds a NUL character")
    if (PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute()
            or PureWindowsPath(location).drive or location.startswith(("/", "\\"))):
        raise ExternalReferenceError(f"{refuse} is an absolute path; external data must be a relative path inside "
                                     f"{root} (pass external_data_dir= to read another folder)")
    if ".." in _SEPARATORS.split(location):
        raise ExternalReferenceError(f"{refuse} climbs out with '..'; external data must be inside {root} (pass "
                                     "external_data_dir= to read another folder)")
    if tensor.data_type == TensorProto.STRING:
        raise FileFormatError(f"{where}: string tensors cannot be stored as external data")
    real = os.path.realpath(base / location)
    if not _inside(real, root):
        raise ExternalReferenceError(f"{refuse} resolves (through a symbolic link) to {real}, outside {root}; "
                                     "graphdnn reads no external data outside that folder (pass external_data_dir= "
                                     "to read another folder)")
    try:
        st = os.stat(real)
    except OSError as exc:
        error = ExternalDataMissing if isinstance(exc, FileNotFoundError) else FileFormatError
        raise error(f"{refuse}: cannot read {real} ({exc.strerror or exc}); keep the data file beside the "
                    "model") from None
    if not stat.S_ISREG(st.st_mode):
        raise ExternalReferenceError(f"{refuse} is not a regular file")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise FileFormatError(f"{refuse}: offset {info.get('offset')!r} / length {info.get('length')!r} are not "
                              "integers; the file is corrupted") from None
    size = st.st_size
    if length is None:
        length = size - offset
    if offset < 0 or length < 0 or offset + length > size:
        raise FileFormatError(f"{refuse}: bytes {offset}..{offset + length} are outside the file ({size} bytes); it "
                              "is truncated or the model is corrupted")
    expected = _raw_size(tensor, where)
    if expected is not None and length != expected:
        raise FileFormatError(f"{refuse}: holds {length} bytes where dims {list(tensor.dims)} need {expected}; the "
                              "data file does not belong to this model")
    return real, offset, length, size


def _read_region(real: str, offset: int, length: int, where: str) -> bytes:
    """The bytes, read through a descriptor that is checked again: the last path component may not have
    become a symbolic link or a special file since it was checked."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        error = ExternalDataMissing if isinstance(exc, FileNotFoundError) else FileFormatError
        raise error(f"{where}: cannot read {real} ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ExternalReferenceError(f"{where}: {real} is not a regular file")
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise FileFormatError(f"{where}: {real} shrank while being read")
    return data


def has_external_data(model: onnx.ModelProto) -> bool:
    """Whether any tensor of ``model`` (anywhere, see ``model_tensors``) points at external data."""
    return any(t.data_location == TensorProto.EXTERNAL for _, t in model_tensors(model))


def load_external_data(model: onnx.ModelProto, base_dir: str | os.PathLike[str] | None, source: str) -> None:
    """Read the external data of every tensor of ``model`` into it (``raw_data``), in place.

    Each location must be a relative path without ``..`` that, symbolic links resolved, names a regular
    file inside ``base_dir``; ``offset``/``length`` must lie inside that file and match the tensor's
    dims. Anything else raises ``ExternalReferenceError`` (``FileFormatError`` for a malformed entry)
    naming ``source``, the tensor and the location, and nothing is read. ``base_dir=None`` (a model
    given as bytes) refuses every external tensor."""
    external = [(where, t) for where, t in model_tensors(model) if t.data_location == TensorProto.EXTERNAL]
    if not external:
        return
    if base_dir is None:
        where, t = external[0]
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        raise ExternalReferenceError(f"{source}: {where}: the data is in external file {location!r}, but the model "
                                     "was not read from a file; pass external_data_dir= naming its folder")
    base = Path(base_dir)
    root = os.path.realpath(base)
    if not os.path.isdir(root):
        raise FileFormatError(f"{source}: external data folder {base} is not a directory")
    regions = [_external_region(t, f"{source}: {where}", base, root) for where, t in external]
    total = sum(length for _, _, length, _ in regions)
    on_disk = sum({real: size for real, _, _, size in regions}.values())
    if total > on_disk:  # regions read more than once: charged, not free (a few bytes could ask for gigabytes)
        budget.charge(total - on_disk, f"{source}: external data that {len(regions)} tensors read again and again "
                                       f"({total} bytes from files of {on_disk} bytes)")
    datas = [_read_region(real, offset, length, f"{source}: {where}")
             for (where, _), (real, offset, length, _) in zip(external, regions)]
    for (_, t), data in zip(external, datas):
        t.raw_data = data
        del t.external_data[:]
        t.data_location = TensorProto.DEFAULT


def sparse_to_array(sparse: onnx.SparseTensorProto, where: str = "sparse tensor") -> np.ndarray:
    """The dense array of a ``SparseTensorProto`` (external data must already be loaded), its values and
    indices checked against its ``dims`` first: a file's indices are never trusted to be in range."""
    dims = [int(d) for d in sparse.dims]
    if any(d < 0 for d in dims):
        raise FileFormatError(f"{where}: negative dimension in dims {dims}")
    if sparse.values.data_type == TensorProto.STRING:
        raise FileFormatError(f"{where}: sparse string tensors are not supported by graphdnn")
    values, indices = _part(sparse.values, f"{where} values"), _part(sparse.indices, f"{where} indices")
    if values.ndim != 1:
        raise FileFormatError(f"{where}: values must be 1-D (one per stored element), got shape {list(values.shape)}")
    if indices.dtype.kind not in "iu":
        raise FileFormatError(f"{where}: indices must be integers, not {indices.dtype.name}")
    nnz, numel = values.shape[0], int(np.prod(dims, dtype=object))
    if indices.ndim == 1:  # linear positions in the flattened tensor
        if indices.shape[0] != nnz:
            raise FileFormatError(f"{where}: {nnz} values but {indices.shape[0]} indices; the counts must match")
        flat = indices.astype(np.int64)
    elif indices.ndim == 2:  # [NNZ, rank] coordinates
        if indices.shape != (nnz, len(dims)):
            raise FileFormatError(f"{where}: indices of shape {list(indices.shape)} for {nnz} values of a rank-"
                                  f"{len(dims)} tensor; expected [{nnz}, {len(dims)}]")
        coords = indices.astype(np.int64)
        outside = ((coords < 0) | (coords >= np.asarray(dims, dtype=np.int64))).any(axis=1)
        if outside.any():
            first = int(np.argmax(outside))
            raise FileFormatError(f"{where}: index {coords[first].tolist()} is outside dims {dims}")
        flat = np.ravel_multi_index(tuple(coords.T), dims) if dims else np.zeros(nnz, np.int64)
    else:
        raise FileFormatError(f"{where}: indices must be 1-D or 2-D, got shape {list(indices.shape)}")
    outside = (flat < 0) | (flat >= numel)
    if outside.any():
        raise FileFormatError(f"{where}: index {int(flat[int(np.argmax(outside))])} is outside a tensor of "
                              f"{numel} elements (dims {dims})")
    if len(np.unique(flat)) != nnz:
        raise FileFormatError(f"{where}: an element is stored twice (duplicated indices)")
    budget.charge(numel * values.dtype.itemsize, f"{where}: the dense form of a sparse tensor with dims {dims}")
    out = np.zeros(numel, dtype=values.dtype)
    out[flat] = values
    return out.reshape(dims)


def _part(proto: TensorProto, where: str) -> np.ndarray:
    _refuse_unloaded(proto, where)
    try:
        return numpy_helper.to_array(proto)
    except Exception as exc:  # unknown element types, a payload that does not match the dims
        raise FileFormatError(f"{where}: cannot read the tensor ({type(exc).__name__}: {exc})") from exc
