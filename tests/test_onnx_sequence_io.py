"""Sequence- and optional-typed graph inputs and outputs: import, compile, run, export, save/load."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from graphdnn.converters.onnx_import import load_onnx, value_name_of
from graphdnn.converters.onnx_types import type_proto, type_string
from helpers import run_ort
from onnx import TensorProto, helper

import graphdnn as gd
from graphdnn.dtypes import parse_value_type, value_type_name
from graphdnn.errors import GraphError, UnknownOpError


def _tensor(elem: int, shape=None) -> onnx.TypeProto:
    return helper.make_tensor_type_proto(elem, shape)


def _seq(elem: int, shape=None) -> onnx.TypeProto:
    return helper.make_sequence_type_proto(_tensor(elem, shape))


def _opt(inner: onnx.TypeProto) -> onnx.TypeProto:
    return helper.make_optional_type_proto(inner)


def sequence_model() -> onnx.ModelProto:
    """seq(float) input ``parts`` and tensor ``x`` in; seq outputs, a tensor read out of a sequence."""
    nodes = [
        helper.make_node("SequenceInsert", ["parts", "x"], ["grown"], name="insert"),
        helper.make_node("SequenceAt", ["grown", "first"], ["head"], name="at"),
        helper.make_node("ConcatFromSequence", ["grown"], ["joined"], name="concat", axis=0),
        helper.make_node("Identity", ["parts"], ["same"], name="copy"),
        helper.make_node("SplitToSequence", ["x"], ["rows"], name="split", axis=0, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "seq_io",
        [helper.make_value_info("parts", _seq(TensorProto.FLOAT, [None, 3])),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_value_info("grown", _seq(TensorProto.FLOAT, [None, 3])),
         helper.make_tensor_value_info("head", TensorProto.FLOAT, [None, 3]),
         helper.make_tensor_value_info("joined", TensorProto.FLOAT, [None, 3]),
         helper.make_value_info("same", _seq(TensorProto.FLOAT, [None, 3])),
         helper.make_value_info("rows", _seq(TensorProto.FLOAT, [3]))],
        [helper.make_tensor("first", TensorProto.INT64, [], [0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model, full_check=True)
    return model


def optional_model() -> onnx.ModelProto:
    """An optional(tensor) input ``maybe``: has-element, pass-through, and an optional built inside."""
    opt_t = _opt(_tensor(TensorProto.FLOAT, [4]))
    nodes = [
        helper.make_node("OptionalHasElement", ["maybe"], ["has"], name="has_it"),
        helper.make_node("Identity", ["maybe"], ["echo"], name="echo_it"),
        helper.make_node("Optional", ["y"], ["wrapped"], name="wrap"),
        helper.make_node("OptionalGetElement", ["wrapped"], ["unwrapped"], name="unwrap"),
        helper.make_node("Optional", [], ["nothing"], name="none", type=_seq(TensorProto.INT64)),
        helper.make_node("OptionalHasElement", ["nothing"], ["has_nothing"], name="has_none"),
    ]
    graph = helper.make_graph(
        nodes, "opt_io",
        [helper.make_value_info("maybe", opt_t), helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("has", TensorProto.BOOL, []),
         helper.make_value_info("echo", opt_t),
         helper.make_value_info("wrapped", opt_t),
         helper.make_tensor_value_info("unwrapped", TensorProto.FLOAT, [4]),
         helper.make_value_info("nothing", _opt(_seq(TensorProto.INT64))),
         helper.make_tensor_value_info("has_nothing", TensorProto.BOOL, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _torch(value):
    if value is None:
        return None
    if isinstance(value, list):
        return [torch.from_numpy(v) for v in value]
    return torch.from_numpy(value)


def _assert_same(expected, got) -> None:
    """Strict: a sequence is a list of the same length, an empty optional is None, tensors match."""
    if expected is None:
        assert got is None
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for e, t in zip(expected, got):
            _assert_same(e, t)
    else:
        assert isinstance(got, torch.Tensor) and tuple(got.shape) == expected.shape
        assert got.numpy().dtype == expected.dtype
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


def _io_types(model: onnx.ModelProto) -> list[tuple[str, bytes]]:
    return [(v.name, v.type.SerializeToString()) for v in (*model.graph.input, *model.graph.output)]


def _run(g, feeds: dict) -> list:
    """Run an imported graph on ``feeds`` (ONNX input name -> value), outputs in the model's order."""
    onnx_meta = g.meta["onnx"]
    module = gd.compile(g, inputs=onnx_meta["inputs"], outputs=onnx_meta["outputs"])
    out = module(*(_torch(feeds[value_name_of(g, ref)]) for ref in onnx_meta["inputs"]))
    return list(out) if isinstance(out, tuple) else [out]


def _export(g, path=None) -> onnx.ModelProto:
    """Export an imported graph with the model's inputs and outputs."""
    return gd.export_onnx(g, path, inputs=g.meta["onnx"]["inputs"], outputs=g.meta["onnx"]["outputs"])


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------
def test_sequence_inputs_and_outputs_match_onnxruntime(tmp_path):
    model = sequence_model()
    onnx.save(model, tmp_path / "seq.onnx")
    g = gd.load(str(tmp_path / "seq.onnx"))
    parts = g.get_tensor("parts")
    assert parts.op.is_placeholder and parts.shape is None and parts.dtype == "seq(float32[?,3])"
    assert g.get_tensor("rows").dtype == "seq(float32[3])"
    rng = np.random.default_rng(0)
    for n in (0, 1, 3):  # an empty sequence included
        feeds = {"parts": [rng.standard_normal((k + 1, 3)).astype(np.float32) for k in range(n)],
                 "x": rng.standard_normal((2, 3)).astype(np.float32)}
        expected = run_ort(model, feeds)
        got = _run(g, feeds)
        assert len(got) == len(expected) == 5
        for e, t in zip(expected, got):
            _assert_same(e, t)


def test_optional_input_given_and_omitted_match_onnxruntime():
    model = optional_model()
    g = load_onnx(model)
    assert g.get_tensor("maybe").dtype == "optional(float32[4])"
    assert g.get_tensor("nothing").dtype == "optional(seq(int64))"
    y = np.arange(4, dtype=np.float32)
    for maybe in (np.array([1, 2, 3, 4], dtype=np.float32), None):
        feeds = {"maybe": maybe, "y": y}
        expected = run_ort(model, feeds)
        got = _run(g, feeds)
        for e, t in zip(expected, got):
            _assert_same(e, t)
        assert bool(got[0]) is (maybe is not None) and (got[1] is None) is (maybe is None)


def test_optional_get_element_of_an_empty_optional_is_an_error():
    graph = helper.make_graph([helper.make_node("OptionalGetElement", ["maybe"], ["value"])], "g",
                              [helper.make_value_info("maybe", _opt(_tensor(TensorProto.FLOAT, [2])))],
                              [helper.make_tensor_value_info("value", TensorProto.FLOAT, [2])])
    g = load_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    module = gd.compile(g, inputs=["maybe"], outputs=["value"])
    assert torch.equal(module(torch.ones(2)), torch.ones(2))
    with pytest.raises(ValueError, match="empty"):
        module(None)


# ----------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [sequence_model, optional_model])
def test_export_import_export_keeps_types_and_names(tmp_path, make):
    original = make()
    first = _export(load_onnx(original), tmp_path / "a.onnx")
    assert _io_types(first) == _io_types(original)  # the source model's types, names kept
    second = _export(load_onnx(tmp_path / "a.onnx"), tmp_path / "b.onnx")
    assert _io_types(second) == _io_types(first)
    assert [(n.name, n.op_type, list(n.input), list(n.output)) for n in second.graph.node] == \
        [(n.name, n.op_type, list(n.input), list(n.output)) for n in first.graph.node]
    optional_types = [a.tp for n in second.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TYPE_PROTO]
    assert [type_string(t) for t in optional_types] == (["seq(int64)"] if make is optional_model else [])


def test_save_and_load_keep_the_types(tmp_path):
    for make in (sequence_model, optional_model):
        g = load_onnx(make())
        gd.save(g, str(tmp_path / "m.safetensors"))
        back = gd.load(str(tmp_path / "m.safetensors"))
        assert [(op.name, op.attrs, op.outputs) for op in back.placeholders()] == \
            [(op.name, op.attrs, op.outputs) for op in g.placeholders()]
        assert [op.outputs for op in back.operations()] == [op.outputs for op in g.operations()]
        assert _io_types(_export(back)) == _io_types(make())
    y = np.arange(4, dtype=np.float32)
    got = _run(back, {"maybe": None, "y": y})
    assert not bool(got[0]) and got[1] is None and torch.equal(got[3], torch.from_numpy(y))


def test_graph_built_by_hand_exports_sequences_and_optionals_that_onnxruntime_runs():
    g = gd.Graph("hand")
    x = g.placeholder("x", (2, 6))
    s = g.placeholder("s", None, "seq( float32[2, ?] )")
    assert s.dtype == "seq(float32[2,?])" and s.shape is None
    pieces = g.add_op("SplitToSequence", [x], {"axis": 1}, name="pieces").out()
    merged = g.add_op("ConcatFromSequence", [s], {"axis": 1}, name="merged").out()
    wrapped = g.add_op("Optional", [x], name="wrapped").out()
    empty = g.add_op("Optional", [], {"type": "seq(float32)"}, name="empty").out()
    has = g.add_op("OptionalHasElement", [empty], name="has").out()
    back = g.add_op("OptionalGetElement", [wrapped], name="back").out()
    assert (wrapped.shape, wrapped.dtype) == (None, "optional(float32[2,6])")
    assert (empty.dtype, has.shape, has.dtype, back.dtype) == ("optional(seq(float32))", (), "bool", "float32")
    outs = [pieces, merged, wrapped, empty, has, back]
    model = gd.export_onnx(g, None, outputs=outs)
    kinds = [o.type.WhichOneof("value") for o in model.graph.output]
    assert kinds == ["sequence_type", "tensor_type", "optional_type", "optional_type", "tensor_type", "tensor_type"]
    feeds = {"x": np.arange(12, dtype=np.float32).reshape(2, 6),
             "s": [np.ones((2, 1), np.float32), np.zeros((2, 2), np.float32)]}
    expected = run_ort(model, feeds)
    got = gd.compile(g, inputs=[x, s], outputs=outs)(*(_torch(feeds[k]) for k in ("x", "s")))
    for e, t in zip(expected, got):
        _assert_same(e, t)


# ----------------------------------------------------------------------------------------------
# Type strings and refusals
# ----------------------------------------------------------------------------------------------
def test_type_strings():
    assert value_type_name("optional( seq(float[3, ?]) )") == "optional(seq(float32[3,?]))"
    assert parse_value_type("seq(int64[])") == ("seq", ("tensor", "int64", ()))
    assert value_type_name("double") == "float64"
    for spelling in ("seq(float32)", "optional(seq(bool[2,?]))", "optional(string[])", "uint8[1,2,3]"):
        assert type_string(type_proto(spelling)) == spelling
    for bad in ("seq(float32", "list(float32)", "seq(float32[-1])", "seq(nonsense)"):
        with pytest.raises(GraphError):
            value_type_name(bad)
    g = gd.Graph()
    with pytest.raises(GraphError, match="shape must be None"):
        g.placeholder("s", (3,), "seq(float32)")


def test_map_inputs_and_untyped_sequences_are_still_refused():
    map_t = helper.make_map_type_proto(TensorProto.INT64, _tensor(TensorProto.FLOAT))
    untyped = onnx.TypeProto()
    untyped.sequence_type.SetInParent()
    graph = helper.make_graph([helper.make_node("Identity", ["m"], ["y"]), helper.make_node("Identity", ["u"], ["z"])],
                              "g", [helper.make_value_info("m", map_t), helper.make_value_info("u", untyped)],
                              [helper.make_value_info("y", map_t), helper.make_value_info("z", untyped)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(UnknownOpError) as err:
        load_onnx(model)
    msg = str(err.value)
    assert "map_type graph inputs: 'm'" in msg and "map_type graph outputs: 'y'" in msg
    assert "sequence_type graph inputs (a sequence_type without an element type): 'u'" in msg
