"""Decode TensorFlow protocol buffers without TensorFlow: meta graphs, graph defs, tensors, bundle entries,
SavedModels and TF2 checkpoint object graphs.

The bytes are parsed by the protobuf runtime with graphdnn's own schema of the messages and fields it reads
(``converters/tf_protos/tf_wire.proto``: TF's field numbers and wire types; unknown fields are skipped);
malformed data raises ``FileFormatError`` naming the file. Everything comes back as plain dataclasses,
numpy arrays and Python values.

Attribute values (``TFNode.attrs``) map to Python as follows:

- ``s`` -> ``str`` when the bytes are valid UTF-8, else ``bytes``; ``i`` -> ``int``; ``f`` -> ``float``;
  ``b`` -> ``bool``; ``type`` -> :class:`TFDType` (a ``str`` such as ``"float32"`` or ``"float32_ref"``);
  ``shape`` -> :class:`TFShape`; ``tensor`` -> ``np.ndarray`` (DT_STRING: object array of ``bytes``);
  ``func`` -> :class:`TFFunc`; ``placeholder`` -> :class:`TFAttrPlaceholder`; ``list`` -> ``list`` of those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError
from graphdnn.converters.tf_protos import message_class

from graphdnn import budget
from graphdnn.errors import FileFormatError

__all__ = [
    "TFDType",
    "TFShape",
    "TFFunc",
    "TFAttrPlaceholder",
    "TFNode",
    "TFFunction",
    "TFGraph",
    "TFSaverDef",
    "TFVariableDef",
    "TFTensorInfo",
    "TFSignature",
    "MetaGraph",
    "BundleHeader",
    "BundleEntry",
    "read_meta_graph",
    "parse_meta_graph",
    "read_saved_model",
    "parse_saved_model",
    "parse_trackable_object_graph",
    "TFSavedVariable",
    "TFSavedObject",
    "TFObjectGraph",
    "TFTrackable",
    "read_graph_def",
    "parse_graph_def",
    "parse_tensor_proto",
    "parse_bundle_header",
    "parse_bundle_entry",
    "decode_tensor_bytes",
    "parse_tensor_name",
    "MAX_FILL_ELEMENTS",
]

#: Largest tensor (in elements) a TensorProto may describe through TF's "repeat the last value" rule.
MAX_FILL_ELEMENTS = 1 << 28


class _WireError(ValueError):
    """Internal: malformed protobuf; wrapped into FileFormatError naming the file at the API boundary."""


# ================================================================================================ dtypes
_DTYPE_NAMES: dict[int, str] = {
    0: "invalid",
    1: "float32",
    2: "float64",
    3: "int32",
    4: "uint8",
    5: "int16",
    6: "int8",
    7: "string",
    8: "complex64",
    9: "int64",
    10: "bool",
    11: "qint8",
    12: "quint8",
    13: "qint32",
    14: "bfloat16",
    15: "qint16",
    16: "quint16",
    17: "uint16",
    18: "complex128",
    19: "float16",
    20: "resource",
    21: "variant",
    22: "uint32",
    23: "uint64",
    24: "float8_e5m2",
    25: "float8_e4m3fn",
    26: "float8_e4m3fnuz",
    27: "float8_e4m3b11fnuz",
    28: "float8_e5m2fnuz",
    29: "int4",
    30: "uint4",
    31: "int2",
    32: "uint2",
    33: "float4_e2m1fn",
}
_DTYPE_ENUMS = {v: k for k, v in _DTYPE_NAMES.items()}
# little-endian numpy storage of each dtype as TF lays it out in memory (bfloat16: raw uint16 bits)
_NUMPY_STORAGE: dict[str, str] = {
    "float32": "<f4",
    "float64": "<f8",
    "int32": "<i4",
    "uint8": "u1",
    "int16": "<i2",
    "int8": "i1",
    "complex64": "<c8",
    "int64": "<i8",
    "bool": "u1",
    "qint8": "i1",
    "quint8": "u1",
    "qint32": "<i4",
    "bfloat16": "<u2",
    "qint16": "<i2",
    "quint16": "<u2",
    "uint16": "<u2",
    "complex128": "<c16",
    "float16": "<f2",
    "uint32": "<u4",
    "uint64": "<u8",
}


class TFDType(str):
    """A TensorFlow dtype by its Python name (``"float32"``, ``"int64"``, ``"float32_ref"``, ...).

    It is a ``str``, so it compares equal to the name; ``enum`` is TF's ``DataType`` number.
    """

    enum: int

    def __new__(cls, enum: int) -> TFDType:
        base = enum - 100 if enum > 100 else enum
        name = _DTYPE_NAMES.get(base, f"dtype_{base}")
        obj = super().__new__(cls, name + "_ref" if enum > 100 else name)
        obj.enum = enum
        return obj

    @classmethod
    def from_name(cls, name: str) -> TFDType:
        """The dtype called ``name`` (``"float32"``, ``"bool_ref"``, ...)."""
        ref = name.endswith("_ref")
        base = name[:-4] if ref else name
        if base not in _DTYPE_ENUMS:
            raise ValueError(f"unknown TensorFlow dtype {name!r}")
        return cls(_DTYPE_ENUMS[base] + (100 if ref else 0))

    @property
    def is_ref(self) -> bool:
        """Whether this is a reference dtype (TF1 ``VariableV2`` outputs)."""
        return self.enum > 100

    @property
    def base_dtype(self) -> TFDType:
        """The non-reference dtype."""
        return TFDType(self.enum - 100) if self.is_ref else self

    @property
    def numpy_dtype(self) -> np.dtype | None:
        """The numpy dtype graphdnn decodes this dtype to (bfloat16 -> float32, string -> object)."""
        base = str(self.base_dtype)
        if base == "bfloat16":
            return np.dtype(np.float32)
        if base == "string":
            return np.dtype(object)
        if base == "bool":
            return np.dtype(bool)
        storage = _NUMPY_STORAGE.get(base)
        return np.dtype(storage).newbyteorder("=") if storage else None

    def __repr__(self) -> str:
        return f"TFDType({str(self)!r})"


def decode_tensor_bytes(
    raw: bytes | bytearray | memoryview,
    dtype: TFDType | int,
    shape: tuple[int, ...],
    what: str = "tensor",
    big_endian: bool = False,
) -> np.ndarray:
    """Decode TF's raw in-memory layout of a numeric tensor (``tensor_content``, bundle data) to numpy.

    bfloat16 becomes float32 (exact), bool becomes ``bool``; the result is a fresh native-endian array.
    ``raw`` must hold exactly ``prod(shape) * itemsize`` bytes, else ``FileFormatError`` naming ``what``.
    """
    try:
        return _decode_tensor_bytes(raw, dtype, shape, what, big_endian)
    except _WireError as exc:
        raise FileFormatError(str(exc)) from None


def _decode_tensor_bytes(
    raw: bytes | bytearray | memoryview, dtype: TFDType | int, shape: tuple[int, ...], what: str, big_endian: bool
) -> np.ndarray:
    dt = dtype if isinstance(dtype, TFDType) else TFDType(int(dtype))
    base = str(dt.base_dtype)
    storage = _NUMPY_STORAGE.get(base)
    if storage is None:
        raise _WireError(f"{what}: dtype {base} has no raw numeric layout graphdnn can decode")
    np_dtype = np.dtype(storage)
    if big_endian:
        np_dtype = np_dtype.newbyteorder(">")
    count = 1
    for d in shape:
        if d < 0:
            raise _WireError(f"{what}: negative dimension in shape {list(shape)}")
        count *= d
    if len(raw) != count * np_dtype.itemsize:
        raise _WireError(
            f"{what}: {base} tensor of shape {list(shape)} needs {count * np_dtype.itemsize} bytes, found {len(raw)}"
        )
    arr = np.frombuffer(raw, dtype=np_dtype).reshape(shape)
    if base == "bfloat16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    if base == "bool":
        return arr != 0
    return arr.astype(np_dtype.newbyteorder("="), copy=True)


# ====================================================================================== wire decoding
def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A base-128 varint at ``pos`` (LevelDB tables of checkpoint indexes); returns (value, next position)."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _WireError("varint longer than 10 bytes")


def _is_repeated(field: Any) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf >= 6; ``label`` before
    return bool(repeated) if repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _to_dict(msg: Any) -> dict[str, Any]:
    """A parsed message as the plain values this module builds its objects from: set fields only, nested
    messages as dicts, repeated fields as lists, maps as dicts."""
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        if fd.type != FieldDescriptor.TYPE_MESSAGE:
            out[fd.name] = list(value) if _is_repeated(fd) else value
        elif fd.message_type.GetOptions().map_entry:
            nested = fd.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE
            out[fd.name] = {k: _to_dict(v) if nested else v for k, v in value.items()}
        elif _is_repeated(fd):
            out[fd.name] = [_to_dict(v) for v in value]
        else:
            out[fd.name] = _to_dict(value)
    return out


def _parse(message: str, data: bytes) -> dict[str, Any]:
    """Parse ``data`` as TF message ``message`` (``converters/tf_protos/tf_wire.proto``) into plain values."""
    return _to_dict(message_class(message).FromString(bytes(data)))


# ================================================================================= public data classes
@dataclass(frozen=True)
class TFShape:
    """A TF shape: ``dims`` with ``None`` for unknown sizes, or ``dims is None`` for unknown rank."""

    dims: tuple[int | None, ...] | None

    def as_list(self) -> list[int | None] | None:
        """The dims as a list (``None`` when the rank is unknown), like TF's ``TensorShape.as_list``."""
        return None if self.dims is None else list(self.dims)


@dataclass(frozen=True)
class TFFunc:
    """A function-valued attribute: a function name plus its attributes."""

    name: str
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TFAttrPlaceholder:
    """An attribute that refers to an attribute of the enclosing function."""

    name: str


def parse_tensor_name(name: str) -> tuple[str, int]:
    """Split ``"dnn/hidden4/Relu:0"`` into ``("dnn/hidden4/Relu", 0)``; a bare op name means output 0."""
    op, sep, idx = name.rpartition(":")
    if sep and idx.isdigit():
        return op, int(idx)
    return name, 0


@dataclass
class TFNode:
    """One NodeDef: ``inputs`` are data inputs (``"X"``, ``"cond/Switch:1"``), ``control_inputs`` the
    ``^name`` inputs without the caret."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    control_inputs: list[str] = field(default_factory=list)
    device: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)

    def input_refs(self) -> list[tuple[str, int]]:
        """Data inputs as ``(op name, output index)`` pairs."""
        return [parse_tensor_name(i) for i in self.inputs]


@dataclass
class TFFunction:
    """A function of the graph's library (TF2 control flow, ``tf.function``): name, body and returns."""

    name: str
    nodes: list[TFNode] = field(default_factory=list)
    ret: dict[str, str] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)  # the signature's input argument names, in order
    outputs: list[str] = field(default_factory=list)  # its output argument names (keys of ``ret``), in order
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TFGraph:
    """A GraphDef: nodes in file order, the version producer, and the function library."""

    nodes: list[TFNode]
    producer: int = 0
    min_consumer: int = 0
    functions: list[TFFunction] = field(default_factory=list)
    _index: dict[str, TFNode] = field(default_factory=dict, init=False, repr=False, compare=False)

    def node(self, name: str) -> TFNode:
        """The node called ``name`` (``KeyError`` naming it if absent)."""
        if len(self._index) != len(self.nodes):
            self._index = {n.name: n for n in self.nodes}
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"no operation named {name!r} in the graph") from None

    def __contains__(self, name: object) -> bool:
        try:
            self.node(str(name))
        except KeyError:
            return False
        return True

    def op_names(self) -> list[str]:
        """All node names, in file order."""
        return [n.name for n in self.nodes]

    def get_operation_by_name(self, name: str) -> TFNode:
        """Like TF's ``graph.get_operation_by_name``."""
        return self.node(name)

    def get_tensor_by_name(self, name: str) -> tuple[TFNode, int]:
        """``"dnn/hidden4/Relu:0"`` -> (its node, output index). The ``:index`` part is required, as in TF."""
        op, sep, idx = name.rpartition(":")
        if not sep or not idx.isdigit():
            raise ValueError(f"{name!r} is not a tensor name; tensor names look like 'op_name:0'")
        return self.node(op), int(idx)


@dataclass
class TFSaverDef:
    """A SaverDef: the ops a ``tf.train.Saver`` created and the checkpoint format version (2 = V2)."""

    filename_tensor_name: str = ""
    save_tensor_name: str = ""
    restore_op_name: str = ""
    max_to_keep: int = 0
    sharded: bool = False
    keep_checkpoint_every_n_hours: float = 0.0
    version: int = 0


@dataclass
class TFVariableDef:
    """A VariableDef as stored in the ``variables``/``trainable_variables`` collections.

    ``variable_name`` is a tensor name (``"hidden1/kernel:0"``); ``name`` is the op/checkpoint name.
    """

    variable_name: str
    initializer_name: str = ""
    snapshot_name: str = ""
    initial_value_name: str = ""
    is_resource: bool = False
    trainable: bool = True

    @property
    def name(self) -> str:
        """The variable's op name, which is also its checkpoint key (``"hidden1/kernel"``)."""
        return parse_tensor_name(self.variable_name)[0]


@dataclass
class TFTensorInfo:
    """A SignatureDef input/output: tensor name, dtype, shape."""

    name: str
    dtype: TFDType
    shape: TFShape


@dataclass
class TFSignature:
    """A SignatureDef (SavedModel serving signature)."""

    method_name: str
    inputs: dict[str, TFTensorInfo]
    outputs: dict[str, TFTensorInfo]


@dataclass
class TFSavedVariable:
    """A SavedVariable of a SavedModel's object graph: its name (``v.name`` without ``:0``), dtype, shape."""

    name: str
    dtype: TFDType
    shape: TFShape
    trainable: bool


@dataclass
class TFSavedObject:
    """One node of a SavedModel's object graph (``SavedObject``).

    ``kind`` is the set member of the proto's ``kind`` oneof (``"user_object"``, ``"variable"``, ``"function"``,
    ``"bare_concrete_function"``, ``"constant"``, ``"resource"``, ``"asset"``, ``"captured_tensor"``, or ``""``);
    ``children`` are ``(local name, node id)`` pairs; ``identifier`` names a user object's class
    (``"_generic_user_object"``, ``"trackable_dict"``, ...).
    """

    children: list[tuple[str, int]] = field(default_factory=list)
    kind: str = ""
    identifier: str = ""
    variable: TFSavedVariable | None = None
    concrete_functions: list[str] = field(default_factory=list)
    registered_name: str = ""


@dataclass
class TFObjectGraph:
    """A SavedModel's ``SavedObjectGraph``: objects (node 0 is the root) and, per concrete function, the
    object ids of its captured inputs (``bound_inputs``: variables, resources, constants)."""

    nodes: list[TFSavedObject]
    bound_inputs: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class TFTrackable:
    """One node of a TF2 checkpoint's ``TrackableObjectGraph``: ``children`` as ``(local name, node id)``,
    ``attributes`` as ``{attribute name (VARIABLE_VALUE): checkpoint key}``, ``slots`` as
    ``(original variable node, slot name, slot node)``."""

    children: list[tuple[str, int]] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    slots: list[tuple[int, str, int]] = field(default_factory=list)


#: collections whose bytes_list holds VariableDef protos (TF's GraphKeys._VARIABLE_COLLECTIONS + global_step)
VARIABLE_COLLECTIONS = frozenset(
    {
        "variables",
        "local_variables",
        "metric_variables",
        "model_variables",
        "trainable_variables",
        "moving_average_variables",
        "concatenated_variables",
        "trainable_resource_variables",
        "global_step",
    }
)


@dataclass
class MetaGraph:
    """A decoded MetaGraphDef (``.meta`` file).

    ``collections`` maps a collection name to its values: node lists -> ``list[str]`` (tensor or op names
    as TF stored them), variable collections -> ``list[TFVariableDef]``, other bytes lists -> ``list[bytes]``,
    int64/float lists -> ``list[int]``/``list[float]``, any lists -> ``list[tuple[type_url, bytes]]``.
    """

    graph: TFGraph
    collections: dict[str, list[Any]] = field(default_factory=dict)
    saver: TFSaverDef | None = None
    tf_version: str = ""
    tf_git_version: str = ""
    meta_graph_version: str = ""
    tags: list[str] = field(default_factory=list)
    stripped_default_attrs: bool = False
    stripped_ops: list[str] = field(default_factory=list)
    signatures: dict[str, TFSignature] = field(default_factory=dict)
    source: str = "<bytes>"
    object_graph: TFObjectGraph | None = None  # a TF2 SavedModel's object graph

    @property
    def nodes(self) -> list[TFNode]:
        """The graph's nodes, in file order."""
        return self.graph.nodes

    def node(self, name: str) -> TFNode:
        """The node called ``name``."""
        return self.graph.node(name)

    def get_operation_by_name(self, name: str) -> TFNode:
        """Like TF's ``graph.get_operation_by_name``."""
        return self.graph.node(name)

    def get_tensor_by_name(self, name: str) -> tuple[TFNode, int]:
        """Like TF's ``graph.get_tensor_by_name``: ``"dnn/hidden4/Relu:0"`` -> (node, output index)."""
        return self.graph.get_tensor_by_name(name)

    def get_collection(self, name: str) -> list[Any]:
        """A collection's values (empty if absent), like ``tf.get_collection``."""
        return list(self.collections.get(name, []))

    def variables(self, trainable_only: bool = False) -> list[TFVariableDef]:
        """The ``variables`` (or ``trainable_variables``) collection as VariableDefs."""
        return [
            v
            for v in self.collections.get("trainable_variables" if trainable_only else "variables", [])
            if isinstance(v, TFVariableDef)
        ]


@dataclass
class BundleHeader:
    """The header entry (empty key) of a TF V2 checkpoint ``.index`` file."""

    num_shards: int
    big_endian: bool
    producer: int
    min_consumer: int


@dataclass
class BundleEntry:
    """Where and how one tensor is stored in a TF V2 checkpoint.

    ``slices`` is non-empty for partitioned variables: one list of ``(start, length or None)`` per slice.
    """

    dtype: TFDType
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int
    slices: list[list[tuple[int, int | None]]] = field(default_factory=list)


# ================================================================================= message -> objects
def _shape(d: dict[str, Any]) -> TFShape:
    if d.get("unknown_rank"):
        return TFShape(None)
    return TFShape(tuple(None if dim.get("size", 0) < 0 else dim.get("size", 0) for dim in d.get("dim", [])))


def _known_shape(d: dict[str, Any], what: str) -> tuple[int, ...]:
    shape = _shape(d)
    if shape.dims is None or any(x is None for x in shape.dims):
        raise _WireError(f"{what}: shape {shape.as_list()} is not fully defined")
    return tuple(int(x) for x in shape.dims)  # type: ignore[arg-type]


def _str_or_bytes(b: bytes) -> str | bytes:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def _tensor(d: dict[str, Any], what: str = "TensorProto") -> np.ndarray:
    dtype = TFDType(d.get("dtype", 0)).base_dtype
    name = str(dtype)
    shape = _known_shape(d.get("tensor_shape", {}), what)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if "tensor_content" in d and name != "string":
        return _decode_tensor_bytes(d["tensor_content"], dtype, shape, what, False)
    if count > MAX_FILL_ELEMENTS:
        raise _WireError(f"{what}: {count} elements exceed graphdnn's limit of {MAX_FILL_ELEMENTS}")
    sources: dict[str, tuple[str, Callable[[list[Any]], np.ndarray]]] = {
        "float32": ("float_val", lambda v: np.array(v, np.float32)),
        "float64": ("double_val", lambda v: np.array(v, np.float64)),
        "int32": ("int_val", lambda v: np.array(v, np.int32)),
        "int16": ("int_val", lambda v: np.array(v, np.int64).astype(np.int16)),
        "int8": ("int_val", lambda v: np.array(v, np.int64).astype(np.int8)),
        "uint8": ("int_val", lambda v: np.array(v, np.int64).astype(np.uint8)),
        "uint16": ("int_val", lambda v: np.array(v, np.int64).astype(np.uint16)),
        "qint8": ("int_val", lambda v: np.array(v, np.int64).astype(np.int8)),
        "quint8": ("int_val", lambda v: np.array(v, np.int64).astype(np.uint8)),
        "qint16": ("int_val", lambda v: np.array(v, np.int64).astype(np.int16)),
        "quint16": ("int_val", lambda v: np.array(v, np.int64).astype(np.uint16)),
        "qint32": ("int_val", lambda v: np.array(v, np.int32)),
        "int64": ("int64_val", lambda v: np.array(v, np.int64)),
        "uint32": ("uint32_val", lambda v: np.array(v, np.uint32)),
        "uint64": ("uint64_val", lambda v: np.array(v, np.uint64)),
        "bool": ("bool_val", lambda v: np.array(v, bool)),
        "float16": ("half_val", lambda v: np.array(v, np.int64).astype(np.uint16).view(np.float16)),
        "bfloat16": (
            "half_val",
            lambda v: (np.array(v, np.int64).astype(np.uint32) << 16).astype(np.uint32).view(np.float32),
        ),
        "complex64": (
            "scomplex_val",
            lambda v: np.array(v, np.float32).reshape(-1, 2).view(np.complex64).reshape(-1),
        ),
        "complex128": (
            "dcomplex_val",
            lambda v: np.array(v, np.float64).reshape(-1, 2).view(np.complex128).reshape(-1),
        ),
    }
    if name == "string":
        vals = d.get("string_val", [])
        if len(vals) > count:
            raise _WireError(f"{what}: {len(vals)} strings for {count} elements")
        budget.charge_tensor(shape, 8, what)  # one object reference per element
        arr = np.empty(count, dtype=object)
        arr[: len(vals)] = vals
        arr[len(vals) :] = vals[-1] if vals else b""
        return arr.reshape(shape)
    if name not in sources:
        raise _WireError(f"{what}: cannot decode a {name} TensorProto")
    key, make = sources[name]
    raw = d.get(key, [])
    if name in ("complex64", "complex128") and len(raw) % 2:
        raise _WireError(f"{what}: odd number of complex components")
    vals = make(raw)
    if vals.size > count:
        raise _WireError(f"{what}: {vals.size} values for {count} elements")
    budget.charge_tensor(shape, vals.dtype.itemsize, f"{what}: a {name} tensor of shape {list(shape)}")
    out = np.zeros(count, dtype=vals.dtype)
    out[: vals.size] = vals
    if 0 < vals.size < count:
        out[vals.size :] = vals[-1]  # TF's rule: the last value repeats to fill the shape
    return out.reshape(shape)


def _attr(d: dict[str, Any], what: str) -> Any:
    if "list" in d:
        lv = d["list"]
        for key, conv in (
            ("s", _str_or_bytes),
            ("i", int),
            ("f", float),
            ("b", bool),
            ("type", TFDType),
            ("shape", _shape),
            ("tensor", lambda t: _tensor(t, what)),
            ("func", lambda f: _func(f, what)),
        ):
            if key in lv:
                return [conv(x) for x in lv[key]]
        return []
    if "s" in d:
        return _str_or_bytes(d["s"])
    if "i" in d:
        return d["i"]
    if "f" in d:
        return d["f"]
    if "b" in d:
        return d["b"]
    if "type" in d:
        return TFDType(d["type"])
    if "shape" in d:
        return _shape(d["shape"])
    if "tensor" in d:
        return _tensor(d["tensor"], what)
    if "func" in d:
        return _func(d["func"], what)
    if "placeholder" in d:
        return TFAttrPlaceholder(d["placeholder"])
    return None  # an AttrValue with no value set (proto3 default)


def _func(d: dict[str, Any], what: str) -> TFFunc:
    name = d.get("name", "")
    return TFFunc(name, {k: _attr(v, f"{what}, function {name!r} attr {k!r}") for k, v in d.get("attr", {}).items()})


def _node(d: dict[str, Any]) -> TFNode:
    name = d.get("name", "")
    inputs, controls = [], []
    for i in d.get("input", []):
        (controls.append(i[1:]) if i.startswith("^") else inputs.append(i))
    attrs = {k: _attr(v, f"node {name!r} attr {k!r}") for k, v in d.get("attr", {}).items()}
    return TFNode(name, d.get("op", ""), inputs, controls, d.get("device", ""), attrs)


def _function(f: dict[str, Any]) -> TFFunction:
    sig = f.get("signature", {})
    name = sig.get("name", "")
    return TFFunction(
        name,
        [_node(n) for n in f.get("node_def", [])],
        f.get("ret", {}),
        [a.get("name", "") for a in sig.get("input_arg", [])],
        [a.get("name", "") for a in sig.get("output_arg", [])],
        {k: _attr(v, f"function {name!r} attr {k!r}") for k, v in f.get("attr", {}).items()},
    )


def _graph(d: dict[str, Any]) -> TFGraph:
    versions = d.get("versions", {})
    functions = [_function(f) for f in d.get("library", {}).get("function", [])]
    return TFGraph(
        [_node(n) for n in d.get("node", [])],
        versions.get("producer", 0),
        versions.get("min_consumer", 0),
        functions,
    )


def _variable_def(b: bytes) -> TFVariableDef:
    d = _parse("VariableDef", b)
    return TFVariableDef(
        d.get("variable_name", ""),
        d.get("initializer_name", ""),
        d.get("snapshot_name", ""),
        d.get("initial_value_name", ""),
        d.get("is_resource", False),
        d.get("trainable", False),
    )


def _collection(name: str, d: dict[str, Any]) -> list[Any]:
    if "node_list" in d:
        return list(d["node_list"].get("value", []))
    if "bytes_list" in d:
        values = d["bytes_list"].get("value", [])
        if name in VARIABLE_COLLECTIONS:
            return [_variable_def(v) for v in values]
        return list(values)
    if "int64_list" in d:
        return list(d["int64_list"].get("value", []))
    if "float_list" in d:
        return list(d["float_list"].get("value", []))
    if "any_list" in d:
        return [(a.get("type_url", ""), a.get("value", b"")) for a in d["any_list"].get("value", [])]
    return []


def _tensor_info(d: dict[str, Any]) -> TFTensorInfo:
    return TFTensorInfo(d.get("name", ""), TFDType(d.get("dtype", 0)), _shape(d.get("tensor_shape", {})))


# ============================================================================================ public API
def _guard(source: str, what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except _WireError as exc:
        raise FileFormatError(f"{source}: not a valid {what}: {exc}") from None
    except DecodeError as exc:
        raise FileFormatError(f"{source}: not a valid {what}: the protobuf data is malformed ({exc})") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise FileFormatError(f"{source}: not a valid {what}: {type(exc).__name__}: {exc}") from None


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise FileFormatError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None


def _refs(items: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(r.get("local_name", ""), r.get("node_id", 0)) for r in items]


def _object_graph(d: dict[str, Any]) -> TFObjectGraph:
    nodes = []
    for o in d.get("nodes", []):
        kind = next((k for k in ("user_object", "variable", "function", "bare_concrete_function", "constant",
                                 "resource", "asset", "captured_tensor") if k in o), "")
        var = o.get("variable")
        nodes.append(TFSavedObject(
            _refs(o.get("children", [])),
            kind,
            o.get("user_object", {}).get("identifier", ""),
            None if var is None else TFSavedVariable(var.get("name", ""), TFDType(var.get("dtype", 0)),
                                                     _shape(var.get("shape", {})), var.get("trainable", False)),
            list(o.get("function", {}).get("concrete_functions", [])),
            o.get("registered_name", ""),
        ))
    bound = {k: list(v.get("bound_inputs", [])) for k, v in d.get("concrete_functions", {}).items()}
    for name, ids in bound.items():
        if any(not 0 <= i < len(nodes) for i in ids):
            raise _WireError(f"concrete function {name!r} captures object ids {ids} of {len(nodes)} objects")
    for i, node in enumerate(nodes):
        if any(not 0 <= c < len(nodes) for _, c in node.children):
            raise _WireError(f"object {i} has children outside the {len(nodes)} objects")
    return TFObjectGraph(nodes, bound)


def parse_meta_graph(data: bytes, source: str = "<bytes>") -> MetaGraph:
    """Decode a serialized ``MetaGraphDef``; ``source`` names the file in error messages."""
    return _guard(source, "TensorFlow MetaGraphDef", lambda: _meta_graph(_parse("MetaGraphDef", data), source))


def _meta_graph(d: dict[str, Any], source: str) -> MetaGraph:
    if "graph_def" not in d and "meta_info_def" not in d:
        raise _WireError("no graph_def and no meta_info_def (is this a MetaGraphDef?)")
    info = d.get("meta_info_def", {})
    saver = d.get("saver_def")
    objects = d.get("object_graph_def")
    return MetaGraph(
        graph=_graph(d.get("graph_def", {})),
        collections={k: _collection(k, v) for k, v in d.get("collection_def", {}).items()},
        saver=TFSaverDef(**saver) if saver is not None else None,
        tf_version=info.get("tensorflow_version", ""),
        tf_git_version=info.get("tensorflow_git_version", ""),
        meta_graph_version=info.get("meta_graph_version", ""),
        tags=list(info.get("tags", [])),
        stripped_default_attrs=info.get("stripped_default_attrs", False),
        stripped_ops=[op.get("name", "") for op in info.get("stripped_op_list", {}).get("op", [])],
        signatures={
            k: TFSignature(
                v.get("method_name", ""),
                {n: _tensor_info(t) for n, t in v.get("inputs", {}).items()},
                {n: _tensor_info(t) for n, t in v.get("outputs", {}).items()},
            )
            for k, v in d.get("signature_def", {}).items()
        },
        source=source,
        object_graph=None if objects is None else _object_graph(objects),
    )


def read_meta_graph(path: str | Path) -> MetaGraph:
    """Read a ``.meta`` file (``tf.train.Saver`` / ``export_meta_graph``) without TensorFlow."""
    return parse_meta_graph(_read(path, "meta graph"), str(path))


def parse_graph_def(data: bytes, source: str = "<bytes>") -> TFGraph:
    """Decode a serialized ``GraphDef`` (a frozen ``.pb`` graph)."""

    def build() -> TFGraph:
        d = _parse("GraphDef", data)
        if data and not d.get("node") and "versions" not in d:
            raise _WireError("no nodes (is this a GraphDef?)")
        return _graph(d)

    return _guard(source, "TensorFlow GraphDef", build)


def read_graph_def(path: str | Path) -> TFGraph:
    """Read a binary ``GraphDef`` file (e.g. a frozen graph ``.pb``)."""
    return parse_graph_def(_read(path, "graph def"), str(path))


def parse_tensor_proto(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode a serialized ``TensorProto`` to numpy (TF's fill rule applies to the ``*_val`` fields)."""
    return _guard(source, "TensorProto", lambda: _tensor(_parse("TensorProto", data), source))


def parse_bundle_header(data: bytes, source: str = "<bytes>") -> BundleHeader:
    """Decode the ``BundleHeaderProto`` stored under the empty key of a checkpoint ``.index``."""

    def build() -> BundleHeader:
        d = _parse("BundleHeaderProto", data)
        version = d.get("version", {})
        if d.get("endianness", 0) not in (0, 1):
            raise _WireError(f"unknown endianness {d['endianness']}")
        return BundleHeader(
            d.get("num_shards", 0),
            d.get("endianness", 0) == 1,
            version.get("producer", 0),
            version.get("min_consumer", 0),
        )

    return _guard(source, "checkpoint bundle header", build)


def parse_bundle_entry(data: bytes, source: str = "<bytes>", key: str = "") -> BundleEntry:
    """Decode one ``BundleEntryProto`` (``key`` is the tensor name, for error messages)."""
    what = f"entry of tensor {key!r}"

    def build() -> BundleEntry:
        d = _parse("BundleEntryProto", data)
        slices = [
            [(e.get("start", 0), e["length"] if "length" in e else None) for e in s.get("extent", [])]
            for s in d.get("slices", [])
        ]
        return BundleEntry(
            TFDType(d.get("dtype", 0)),
            _known_shape(d.get("shape", {}), what),
            d.get("shard_id", 0),
            d.get("offset", 0),
            d.get("size", 0),
            d.get("crc32c", 0),
            slices,
        )

    return _guard(source, what, build)


def parse_saved_model(data: bytes, source: str = "<bytes>") -> list[MetaGraph]:
    """Decode a ``saved_model.pb`` (a ``SavedModel`` message): its meta graphs, with their object graphs."""

    def build() -> list[MetaGraph]:
        graphs = _parse("SavedModel", data).get("meta_graphs", [])
        if not graphs:
            raise _WireError("no meta graph (is this a saved_model.pb?)")
        return [_meta_graph(g, source) for g in graphs]

    return _guard(source, "TensorFlow SavedModel", build)


def read_saved_model(path: str | Path) -> list[MetaGraph]:
    """Read a ``saved_model.pb`` file without TensorFlow."""
    return parse_saved_model(_read(path, "SavedModel"), str(path))


def parse_trackable_object_graph(data: bytes, source: str = "<bytes>") -> list[TFTrackable]:
    """Decode a TF2 checkpoint's ``_CHECKPOINTABLE_OBJECT_GRAPH`` (a ``TrackableObjectGraph``)."""

    def build() -> list[TFTrackable]:
        d = _parse("TrackableObjectGraph", data)
        nodes = [
            TFTrackable(
                _refs(n.get("children", [])),
                {a.get("name", ""): a.get("checkpoint_key", "") for a in n.get("attributes", [])},
                [(s.get("original_variable_node_id", 0), s.get("slot_name", ""), s.get("slot_variable_node_id", 0))
                 for s in n.get("slot_variables", [])],
            )
            for n in d.get("nodes", [])
        ]
        for i, node in enumerate(nodes):
            if any(not 0 <= c < len(nodes) for _, c in node.children):
                raise _WireError(f"object {i} has children outside the {len(nodes)} objects")
        return nodes

    return _guard(source, "TensorFlow checkpoint object graph", build)
