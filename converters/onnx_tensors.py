"""Torch tensors <-> ONNX ``TensorProto`` (bfloat16 and float8 included, bytes kept exactly).

The small types (int4, uint4, int2, uint2, float4_e2m1fn, float8_e8m0fnu) are unpacked on import into
graphdnn's one-element-per-byte tensors (``graphdnn.small_dtypes``) and packed again on export, through
``ml_dtypes`` arrays and ``onnx.numpy_helper``; ``array_to_torch``/``torch_to_array`` convert such arrays."""

from __future__ import annotations

import numpy as np
import torch
from onnx import TensorProto, numpy_helper

from graphdnn.errors import FileFormatError
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
    """The torch tensor of a ``TensorProto`` (external data must already be loaded)."""
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
