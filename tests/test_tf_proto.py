"""TF protobuf decoding (meta graphs, graph defs, tensors) against files written by TensorFlow itself."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from _protowire import len_field as _len
from _protowire import varint as _varint
from _protowire import varint_field as _vint
from graphdnn.converters.tf_checkpoint import TFCheckpointReader
from graphdnn.converters.tf_proto import (
    MetaGraph,
    TFAttrPlaceholder,
    TFDType,
    TFFunc,
    TFShape,
    TFVariableDef,
    decode_tensor_bytes,
    parse_bundle_entry,
    parse_graph_def,
    parse_meta_graph,
    parse_tensor_name,
    parse_tensor_proto,
    read_graph_def,
    read_meta_graph,
)

from graphdnn.errors import FileFormatError

FOREIGN = Path(__file__).parent / "fixtures" / "foreign"
DNN_META = FOREIGN / "tf1_dnn" / "my_model_final.ckpt.meta"
BN_META = FOREIGN / "tf1_bn" / "my_model_final.ckpt.meta"


@pytest.fixture(scope="module")
def dnn() -> MetaGraph:
    return read_meta_graph(DNN_META)


@pytest.fixture(scope="module")
def bn() -> MetaGraph:
    return read_meta_graph(BN_META)


# ---------------------------------------------------------------------------- the book's DNN (.meta)
def test_meta_info_and_saver(dnn: MetaGraph) -> None:
    assert dnn.tf_version.startswith("2.") and dnn.tf_git_version.startswith("v2.")
    assert "MatMul" in dnn.stripped_ops and "Relu" in dnn.stripped_ops
    assert dnn.saver is not None
    assert dnn.saver.version == 2  # V2 checkpoint format
    assert dnn.saver.restore_op_name == "save/restore_all"
    assert dnn.saver.filename_tensor_name == "save/Const:0"
    assert dnn.source == str(DNN_META)


def test_book_node_names_ops_and_inputs(dnn: MetaGraph) -> None:
    names = dnn.graph.op_names()
    for i in range(1, 6):
        for op in ("MatMul", "BiasAdd", "Relu"):
            assert f"dnn/hidden{i}/{op}" in names
    assert dnn.node("dnn/hidden4/Relu").op == "Relu"
    node, index = dnn.get_tensor_by_name("dnn/hidden4/Relu:0")
    assert node.name == "dnn/hidden4/Relu" and index == 0
    matmul = dnn.get_operation_by_name("dnn/hidden1/MatMul")
    assert matmul.op == "MatMul" and matmul.inputs == ["X", "hidden1/kernel/read"]
    assert matmul.attrs["transpose_a"] is False and matmul.attrs["T"] == "float32"
    assert dnn.node("dnn/hidden1/BiasAdd").inputs == ["dnn/hidden1/MatMul", "hidden1/bias/read"]
    assert dnn.node("dnn/outputs/BiasAdd").op == "BiasAdd"
    with pytest.raises(ValueError, match="tensor name"):
        dnn.get_tensor_by_name("dnn/hidden4/Relu")
    with pytest.raises(KeyError, match="dnn/hidden9"):
        dnn.node("dnn/hidden9/Relu")


def test_variables_placeholders_and_attr_types(dnn: MetaGraph) -> None:
    kernel = dnn.node("hidden1/kernel")
    assert kernel.op == "VariableV2"
    assert kernel.attrs["dtype"] == "float32" and isinstance(kernel.attrs["dtype"], TFDType)
    assert kernel.attrs["shape"] == TFShape((64, 32))
    assert kernel.attrs["_class"] == ["loc:@hidden1/kernel"]
    assert kernel.attrs["container"] == ""
    X = dnn.node("X")
    assert X.op == "Placeholder" and X.attrs["shape"].as_list() == [None, 64]
    y = dnn.node("y")
    assert y.attrs["dtype"] == "int64" and y.attrs["shape"] == TFShape(None)  # shape=(None): unknown rank
    read = dnn.node("hidden1/kernel/read")
    assert read.op == "Identity"
    assert dnn.node("hidden1/kernel/Assign").attrs["use_locking"] is True


def test_control_inputs_are_split_out(dnn: MetaGraph) -> None:
    with_controls = [n for n in dnn.nodes if n.control_inputs]
    assert with_controls
    assert all(not i.startswith("^") for n in dnn.nodes for i in n.inputs + n.control_inputs)
    assert dnn.node("save/control_dependency").control_inputs == ["save/SaveV2"]
    update = dnn.node("train/Momentum/update")  # a NoOp grouping the 12 ApplyMomentum updates
    assert update.op == "NoOp" and update.inputs == [] and len(update.control_inputs) == 12
    assert "train/Momentum/update_hidden1/kernel/ApplyMomentum" in update.control_inputs
    assert dnn.node("train/Momentum/Const").control_inputs == ["train/Momentum/update"]
    assert dnn.node("train/Momentum").op == "AssignAddVariableOp"  # global_step += 1


def test_collections(dnn: MetaGraph) -> None:
    assert dnn.get_collection("my_important_ops") == ["X:0", "y:0", "eval/accuracy:0", "train/Momentum"]
    assert dnn.get_collection("train_op") == ["train/Momentum"]
    trainable = dnn.variables(trainable_only=True)
    assert all(isinstance(v, TFVariableDef) for v in trainable)
    expected = [
        f"{layer}/{v}" for layer in [f"hidden{i}" for i in range(1, 6)] + ["outputs"] for v in ("kernel", "bias")
    ]
    assert [v.name for v in trainable] == expected
    first = trainable[0]
    assert first.variable_name == "hidden1/kernel:0" and first.snapshot_name == "hidden1/kernel/read:0"
    assert first.trainable and not first.is_resource
    (step,) = [v for v in dnn.variables() if v.name == "global_step"]
    assert step.is_resource and not step.trainable  # TF 2.x makes tf.Variable(0) a resource variable
    everything = {v.name for v in dnn.variables()}
    assert {"global_step", "misc/string", "hidden1/kernel/Momentum"} <= everything
    # every variable of the meta graph is in the checkpoint written beside it
    assert everything == set(TFCheckpointReader(DNN_META).names())
    assert dnn.get_collection("no such collection") == []


def test_const_tensors_for_every_dtype_match_the_variables(dnn: MetaGraph) -> None:
    """The misc/* variables were initialized from Const nodes: their TensorProtos hold the same values."""
    with np.load(FOREIGN / "tf1_dnn" / "expected.npz", allow_pickle=False) as z:
        expected = {k[len("variable:") :]: z[k] for k in z.files if k.startswith("variable:misc/")}
    checked = 0
    for name, value in expected.items():
        source = dnn.node(dnn.node(f"{name}/Assign").inputs[1])
        if source.op != "Const":  # bfloat16 goes through a Cast
            continue
        const = source.attrs["value"]
        assert isinstance(const, np.ndarray)
        if const.dtype == object:
            assert [bytes(x) for x in const.ravel()] == list(value.ravel()) and const.shape == value.shape
        else:
            assert const.dtype == value.dtype and np.array_equal(const, value), name
        checked += 1
    assert checked >= 16
    shape_const = dnn.node("hidden1/kernel/Initializer/random_uniform/shape").attrs["value"]
    assert shape_const.dtype == np.int32 and shape_const.tolist() == [64, 32]
    limit = dnn.node("hidden1/kernel/Initializer/random_uniform/max").attrs["value"]
    assert limit.shape == () and np.isclose(limit, np.sqrt(6 / (64 + 32)))  # Glorot uniform


# ------------------------------------------------------------------- batch norm + training placeholder
def test_batch_norm_graph(bn: MetaGraph) -> None:
    training = bn.node("training")
    assert training.op == "PlaceholderWithDefault"
    assert training.attrs["dtype"] == "bool" and training.attrs["shape"] == TFShape(())
    default = bn.node(training.inputs[0]).attrs["value"]
    assert default.dtype == bool and default.shape == () and not default
    switch = bn.node("dnn/batch_normalization/cond/Switch")
    assert switch.op == "Switch" and switch.inputs == ["training", "training"]
    merge = bn.node("dnn/batch_normalization/cond/Merge")
    assert merge.op == "Merge"
    assert [parse_tensor_name(i) for i in merge.inputs] == merge.input_refs()
    assert any(index == 1 for _, index in merge.input_refs())  # the true branch is Switch output 1
    assert sum(n.op == "Switch" for n in bn.nodes) > 10 and sum(n.op == "Merge" for n in bn.nodes) > 5
    assert bn.node("dnn/Elu").op == "Elu" and bn.node("dnn/Elu_1").op == "Elu"
    assert bn.node("dnn/Elu").inputs == ["dnn/batch_normalization/batchnorm/add_1"]


def test_batch_norm_collections(bn: MetaGraph) -> None:
    update_ops = bn.get_collection("update_ops")
    assert len(update_ops) == 6 and all("/cond_" in op and op.endswith("/Merge") for op in update_ops)
    assert len(bn.get_collection("my_important_ops")) == 4
    assert all(isinstance(b, bytes) for b in bn.get_collection("cond_context"))
    names = [v.name for v in bn.variables()]
    for layer in ("batch_normalization", "batch_normalization_1", "batch_normalization_2"):
        for var in ("gamma", "beta", "moving_mean", "moving_variance"):
            assert f"{layer}/{var}" in names
    assert {"hidden1/kernel/Adam", "hidden1/kernel/Adam_1", "train/beta1_power"} <= set(names)
    trainable = {v.name for v in bn.variables(trainable_only=True)}
    assert "batch_normalization/gamma" in trainable and "batch_normalization/moving_mean" not in trainable


# ------------------------------------------------------------------------- synthetic protos, errors



def _shape(*dims: int) -> bytes:
    return b"".join(_len(2, _vint(1, d)) for d in dims)


def _tensor(dtype: int, dims: tuple[int, ...], *fields: bytes) -> bytes:
    return _vint(1, dtype) + _len(2, _shape(*dims)) + b"".join(fields)


def _packed_floats(num: int, values: list[float], fmt: str = "<f") -> bytes:
    return _len(num, b"".join(struct.pack(fmt, v) for v in values))


def test_tensor_fill_rule_and_value_fields() -> None:
    t = parse_tensor_proto(_tensor(1, (2, 3), _packed_floats(5, [1.0, 2.0])))
    assert t.dtype == np.float32 and t.tolist() == [[1, 2, 2], [2, 2, 2]]
    assert parse_tensor_proto(_tensor(1, (2,))).tolist() == [0.0, 0.0]  # no values: zeros
    assert parse_tensor_proto(_tensor(3, (3,), _len(7, _varint(5) + _varint(-1)))).tolist() == [5, -1, -1]
    unpacked = _tensor(9, (2,), _vint(10, -7), _vint(10, 1 << 40))  # unpacked repeated int64
    assert parse_tensor_proto(unpacked).tolist() == [-7, 1 << 40]
    assert parse_tensor_proto(_tensor(10, (3,), _len(11, b"\x01"))).tolist() == [True, True, True]
    strings = parse_tensor_proto(_tensor(7, (3,), _len(8, b"a"), _len(8, b"bc")))
    assert strings.dtype == object and strings.tolist() == [b"a", b"bc", b"bc"]
    half = parse_tensor_proto(_tensor(19, (2,), _len(13, _varint(0x3C00))))  # 1.0 in float16
    assert half.dtype == np.float16 and half.tolist() == [1.0, 1.0]
    bf16 = parse_tensor_proto(_tensor(14, (1,), _len(13, _varint(0x4049))))  # 3.140625 in bfloat16
    assert bf16.dtype == np.float32 and bf16.tolist() == [3.140625]
    c64 = parse_tensor_proto(_tensor(8, (2,), _packed_floats(9, [1.0, -2.0])))
    assert c64.dtype == np.complex64 and c64.tolist() == [1 - 2j, 1 - 2j]
    f64 = parse_tensor_proto(_tensor(2, (), _packed_floats(6, [0.1], "<d")))
    assert f64.dtype == np.float64 and f64.shape == () and f64 == 0.1
    content = np.arange(6, dtype=np.int16).reshape(2, 3)
    t = parse_tensor_proto(_tensor(5, (2, 3), _len(4, content.tobytes())))
    assert t.dtype == np.int16 and np.array_equal(t, content)


@pytest.mark.parametrize(
    "data, message",
    [
        (_tensor(1, (1,), _packed_floats(5, [1.0, 2.0])), "2 values for 1 elements"),
        (_tensor(1, (2,), _len(4, b"\x00" * 7)), "needs 8 bytes"),
        (_tensor(1, (-1, 2)), "not fully defined"),
        (_tensor(1, (1 << 20, 1 << 20), _packed_floats(5, [1.0])), "exceed"),  # fill rule bomb
        (_tensor(20, (1,)), "resource"),
        (_tensor(1, (1,))[:-1], "not a valid TensorProto"),
        (b"\x0b", "protobuf data is malformed"),  # a group start with no end
    ],
)
def test_bad_tensor_protos(data: bytes, message: str) -> None:
    with pytest.raises(FileFormatError, match=message):
        parse_tensor_proto(data, "weights.pb")


def _attr_node(name: str, attrs: dict[str, bytes]) -> bytes:
    body = _len(1, name.encode()) + _len(2, b"Custom") + _len(3, b"a:1") + _len(3, b"^b") + _len(4, b"/cpu:0")
    for key, value in attrs.items():
        body += _len(5, _len(1, key.encode()) + _len(2, value))
    return body


def test_graph_def_attr_kinds() -> None:
    attrs = {
        "f": b"\x25" + struct.pack("<f", 0.5),
        "i": _vint(3, -3),
        "b": _vint(5, 1),
        "s": _len(2, b"NHWC"),
        "raw": _len(2, b"\xff\xfe"),
        "ty": _vint(6, 101),
        "ints": _len(1, _len(3, _varint(1) + _varint(2))),
        "floats": _len(1, _packed_floats(4, [0.25, 0.5])),
        "types": _len(1, _len(6, _varint(1) + _varint(9))),
        "shapes": _len(1, _len(7, _shape(2, -1)) + _len(7, _vint(3, 1))),
        "empty": _len(1, b""),
        "fn": _len(10, _len(1, b"my_fn") + _len(2, _len(1, b"k") + _len(2, _vint(3, 7)))),
        "ph": _len(9, b"T"),
        "unset": b"",
        "unknown_field": _vint(99, 5) + _vint(3, 4),
    }
    graph = parse_graph_def(_len(1, _attr_node("n", attrs)) + _len(4, _vint(1, 27)), "frozen.pb")
    node = graph.node("n")
    assert (node.op, node.inputs, node.control_inputs, node.device) == ("Custom", ["a:1"], ["b"], "/cpu:0")
    assert node.input_refs() == [("a", 1)]
    a = node.attrs
    assert a["f"] == 0.5 and a["i"] == -3 and a["b"] is True and a["s"] == "NHWC" and a["raw"] == b"\xff\xfe"
    assert a["ty"] == "float32_ref" and a["ty"].is_ref and a["ty"].base_dtype == "float32"
    assert a["ints"] == [1, 2] and a["floats"] == [0.25, 0.5] and a["types"] == ["float32", "int64"]
    assert a["shapes"] == [TFShape((2, None)), TFShape(None)]
    assert a["empty"] == [] and a["unset"] is None and a["unknown_field"] == 4
    assert a["fn"] == TFFunc("my_fn", {"k": 7}) and a["ph"] == TFAttrPlaceholder("T")
    assert graph.producer == 27


def test_dtype_helpers() -> None:
    assert TFDType.from_name("float32_ref").enum == 101
    assert TFDType(14).numpy_dtype == np.float32 and TFDType(7).numpy_dtype == np.dtype(object)
    assert TFDType(10).numpy_dtype == np.bool_ and TFDType(20).numpy_dtype is None
    with pytest.raises(ValueError):
        TFDType.from_name("float33")
    assert parse_tensor_name("a/b:3") == ("a/b", 3) and parse_tensor_name("a/b") == ("a/b", 0)
    raw = np.array([1.5, -2.0], dtype=">f4").tobytes()
    assert decode_tensor_bytes(raw, 1, (2,), big_endian=True).tolist() == [1.5, -2.0]
    with pytest.raises(FileFormatError, match="kernel"):
        decode_tensor_bytes(raw, 1, (3,), "kernel")


def test_bundle_entry_decoding() -> None:
    data = (
        _vint(1, 1) + _len(2, _shape(3, 4)) + _vint(3, 0) + _vint(4, 128) + _vint(5, 48) + b"\x35" + b"\x01\x00\x00\x00"
    )
    entry = parse_bundle_entry(data, "x.index", "w")
    assert (entry.dtype, entry.shape, entry.offset, entry.size, entry.crc32c) == ("float32", (3, 4), 128, 48, 1)
    with pytest.raises(FileFormatError, match=r"x\.index.*'w'"):
        parse_bundle_entry(data[:-2], "x.index", "w")


def test_deeply_nested_attrs_are_refused() -> None:
    value = _vint(3, 1)
    for _ in range(200):
        value = _len(10, _len(1, b"f") + _len(2, _len(1, b"k") + _len(2, value)))
    with pytest.raises(FileFormatError, match="deep.pb: not a valid TensorFlow GraphDef"):
        parse_graph_def(_len(1, _attr_node("n", {"deep": value})), "deep.pb")


def test_bad_meta_files(tmp_path: Path) -> None:
    data = DNN_META.read_bytes()
    truncated = tmp_path / "truncated.meta"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="truncated.meta"):
        read_meta_graph(truncated)
    garbage = tmp_path / "garbage.meta"
    garbage.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(FileFormatError, match="garbage.meta"):
        read_meta_graph(garbage)
    with pytest.raises(FileFormatError, match="empty.meta"):
        parse_meta_graph(b"", "empty.meta")
    with pytest.raises(FileFormatError, match="missing.meta"):
        read_meta_graph(tmp_path / "missing.meta")
    with pytest.raises(FileFormatError, match="index"):  # a checkpoint index is not a graph
        read_graph_def(FOREIGN / "tf1_dnn" / "my_model_final.ckpt.index")
    assert parse_graph_def(b"").nodes == []


def test_graph_def_file_roundtrip(tmp_path: Path, dnn: MetaGraph) -> None:
    """A frozen-graph style ``.pb`` (a bare GraphDef): cut the graph_def field out of the .meta file."""
    data = DNN_META.read_bytes()
    pos = 0
    while True:  # walk the top-level fields of the MetaGraphDef to find field 2 (graph_def)
        tag = data[pos]
        pos += 1
        length, shift = 0, 0
        while True:
            b = data[pos]
            pos += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        if tag == (2 << 3 | 2):
            break
        pos += length
    path = tmp_path / "frozen.pb"
    path.write_bytes(data[pos : pos + length])
    graph = read_graph_def(path)
    assert graph.op_names() == dnn.graph.op_names() and graph.producer == dnn.graph.producer
