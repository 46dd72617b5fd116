"""Control flow (If, Loop, Scan) imported from ONNX: run against ONNX Runtime, train through it,
save/load it and export it back."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from graphdnn.converters.onnx_export import export_onnx
from graphdnn.converters.onnx_import import load_onnx
from helpers import run_ort
from onnx import TensorProto as T
from onnx import helper as h

import graphdnn as gd
from graphdnn.errors import FileFormatError, GraphError, UnknownOpError


def _vi(name, elem, shape):
    return h.make_tensor_value_info(name, elem, shape)


def _model(graph: onnx.GraphProto, opset: int = 17) -> onnx.ModelProto:
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _loop_if_model() -> onnx.ModelProto:
    """acc = w * acc + x, M times (scan output: every acc); then Relu(acc) if sum(x) > 0 else -acc.
    The Loop body reads the outer initializer ``w`` and the graph input ``x``; the branches read
    the Loop's output."""
    body = h.make_graph(
        [h.make_node("Mul", ["acc_in", "w"], ["scaled"]), h.make_node("Add", ["scaled", "x"], ["acc_out"]),
         h.make_node("Identity", ["cond_in"], ["cond_out"]), h.make_node("Identity", ["acc_out"], ["scan_out"])],
        "body", [_vi("i", T.INT64, []), _vi("cond_in", T.BOOL, []), _vi("acc_in", T.FLOAT, [2, 3])],
        [_vi("cond_out", T.BOOL, []), _vi("acc_out", T.FLOAT, [2, 3]), _vi("scan_out", T.FLOAT, [2, 3])])
    then_g = h.make_graph([h.make_node("Relu", ["final"], ["r"])], "then", [], [_vi("r", T.FLOAT, [2, 3])])
    else_g = h.make_graph([h.make_node("Neg", ["final"], ["n"])], "else", [], [_vi("n", T.FLOAT, [2, 3])])
    graph = h.make_graph(
        [h.make_node("Loop", ["M", "", "acc0"], ["final", "scans"], body=body, name="loop"),
         h.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
         h.make_node("Greater", ["s", "zero"], ["c"]),
         h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="branch")],
        "main", [_vi("x", T.FLOAT, [2, 3]), _vi("M", T.INT64, [])],
        [_vi("y", T.FLOAT, [2, 3]), _vi("scans", T.FLOAT, [None, 2, 3])],
        [h.make_tensor("w", T.FLOAT, [], [0.5]), h.make_tensor("zero", T.FLOAT, [], [0.0]),
         h.make_tensor("acc0", T.FLOAT, [2, 3], [0.0] * 6)])
    return _model(graph)


def _compiled(graph: gd.Graph):
    return gd.compile(graph, inputs=graph.meta["onnx"]["inputs"], outputs=graph.meta["onnx"]["outputs"])


def _close(ours, theirs, atol=1e-6):
    ours = ours if isinstance(ours, tuple) else (ours,)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.detach().numpy(), b, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("trips", [0, 1, 4])
def test_loop_and_if_match_onnxruntime(sign, trips):
    model = _loop_if_model()
    module = _compiled(load_onnx(model))
    x = np.random.default_rng(trips).standard_normal((2, 3)).astype(np.float32) * 0.3 + sign
    expected = run_ort(model, {"x": x, "M": np.array(trips, np.int64)})
    out = module(torch.from_numpy(x), torch.tensor(trips))
    if trips == 0:  # no iteration: the final value is the initial one, the scan output is empty
        _close(out[0], expected[:1])
        assert out[1].numel() == 0 and expected[1].size == 0
    else:
        _close(out, expected)


def test_training_reaches_captured_outer_weights():
    graph = load_onnx(_loop_if_model(), trainable="float")  # w is a scalar: a constant by default
    module = _compiled(graph)
    assert graph.values["w"].requires_grad
    x = torch.full((2, 3), 0.7)
    y, scans = module(x, torch.tensor(3))
    # y = relu(acc_3) with acc_k = w*acc_{k-1} + x: d acc_3 / dw = 2*w*x + x*... computed by hand below
    w = 0.5
    acc1, acc2 = 0.7, w * 0.7 + 0.7
    d_acc2 = 0.7  # d(w*acc1 + x)/dw
    d_acc3 = acc2 + w * d_acc2
    (y.sum()).backward()
    assert acc1 > 0
    assert graph.values["w"].grad.item() == pytest.approx(6 * d_acc3, rel=1e-5)
    before = graph.values["w"].detach().clone()
    opt = torch.optim.SGD(module.parameters(), lr=0.01)
    opt.step()
    assert not torch.equal(before, graph.values["w"].detach())


def test_save_load_and_export_round_trip(tmp_path):
    model = _loop_if_model()
    graph = load_onnx(model)
    path = tmp_path / "cf.safetensors"
    gd.save(graph, path)
    again = gd.load(path)
    x = torch.randn(2, 3)
    a, b = _compiled(graph)(x, torch.tensor(2)), _compiled(again)(x, torch.tensor(2))
    assert all(torch.equal(p, q) for p, q in zip(a, b))

    exported = export_onnx(again, tmp_path / "cf.onnx", inputs=again.meta["onnx"]["inputs"],
                           outputs=again.meta["onnx"]["outputs"])
    loop = next(n for n in exported.graph.node if n.op_type == "Loop")
    assert list(loop.input) == ["M", "", "acc0"]  # captured values are read by name, not passed
    body = loop.attribute[0].g
    assert [n.input[1] for n in body.node if n.op_type == "Mul"] == ["w"]
    assert [vi.name for vi in body.input] == ["i", "cond_in", "acc_in"]
    feeds = {"x": x.numpy(), "M": np.array(2, np.int64)}
    _close(a, run_ort(exported, feeds))
    reexported = export_onnx(load_onnx(exported), None, inputs=["x", "M"], outputs=["y", "scans"])
    assert reexported.graph == exported.graph


def _scan9_model(reverse: bool) -> onnx.ModelProto:
    """Running sum along axis 1 (optionally reversed), scaled by an outer initializer."""
    body = h.make_graph(
        [h.make_node("Add", ["s_in", "x_t"], ["s_out"]), h.make_node("Mul", ["s_out", "k"], ["y_t"])],
        "scan_body", [_vi("s_in", T.FLOAT, [3]), _vi("x_t", T.FLOAT, [3])],
        [_vi("s_out", T.FLOAT, [3]), _vi("y_t", T.FLOAT, [3])])
    graph = h.make_graph(
        [h.make_node("Scan", ["s0", "x"], ["s", "ys"], body=body, num_scan_inputs=1, scan_input_axes=[1],
                     scan_input_directions=[int(reverse)], scan_output_axes=[1])],
        "scan9", [_vi("s0", T.FLOAT, [3]), _vi("x", T.FLOAT, [3, 5])],
        [_vi("s", T.FLOAT, [3]), _vi("ys", T.FLOAT, [3, 5])], [h.make_tensor("k", T.FLOAT, [], [2.0])])
    return _model(graph)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_matches_onnxruntime(reverse):
    model = _scan9_model(reverse)
    s0 = np.array([1.0, -1.0, 0.5], np.float32)
    x = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    out = _compiled(load_onnx(model))(torch.from_numpy(s0), torch.from_numpy(x))
    _close(out, run_ort(model, {"s0": s0, "x": x}), atol=1e-5)


def test_scan8_batched_with_sequence_lengths_matches_onnxruntime():
    body = h.make_graph(
        [h.make_node("Add", ["s_in", "x_t"], ["s_out"]), h.make_node("Identity", ["s_out"], ["y_t"])],
        "scan_body", [_vi("s_in", T.FLOAT, [2]), _vi("x_t", T.FLOAT, [2])],
        [_vi("s_out", T.FLOAT, [2]), _vi("y_t", T.FLOAT, [2])])
    graph = h.make_graph(
        [h.make_node("Scan", ["lens", "s0", "x"], ["s", "ys"], body=body, num_scan_inputs=1)],
        "scan8", [_vi("lens", T.INT64, [3]), _vi("s0", T.FLOAT, [3, 2]), _vi("x", T.FLOAT, [3, 4, 2])],
        [_vi("s", T.FLOAT, [3, 2]), _vi("ys", T.FLOAT, [3, 4, 2])])
    model = _model(graph, opset=8)
    s0 = np.ones((3, 2), np.float32)
    x = np.arange(24, dtype=np.float32).reshape(3, 4, 2)
    lens = np.array([4, 2, 4], np.int64)
    out = _compiled(load_onnx(model))(torch.from_numpy(lens), torch.from_numpy(s0), torch.from_numpy(x))
    _close(out, run_ort(model, {"lens": lens, "s0": s0, "x": x}))


def test_while_loop_with_condition_and_nested_capture():
    """A Loop that stops on its condition; its body holds an If whose branch reads the top-level
    input ``scale`` (a capture through two levels)."""
    then_g = h.make_graph([h.make_node("Mul", ["v_in", "scale"], ["v_then"])], "then", [],
                          [_vi("v_then", T.FLOAT, [2])])
    else_g = h.make_graph([h.make_node("Identity", ["v_in"], ["v_else"])], "else", [], [_vi("v_else", T.FLOAT, [2])])
    body = h.make_graph(
        [h.make_node("Mod", ["i", "two"], ["r"]), h.make_node("Equal", ["r", "zero"], ["even"]),
         h.make_node("If", ["even"], ["v_out"], then_branch=then_g, else_branch=else_g),
         h.make_node("ReduceSum", ["v_out"], ["total"], keepdims=0),
         h.make_node("Less", ["total", "limit"], ["cond_out"])],
        "body", [_vi("i", T.INT64, []), _vi("cond_in", T.BOOL, []), _vi("v_in", T.FLOAT, [2])],
        [_vi("cond_out", T.BOOL, []), _vi("v_out", T.FLOAT, [2])],
        [h.make_tensor("two", T.INT64, [], [2]), h.make_tensor("zero", T.INT64, [], [0])])
    graph = h.make_graph(
        [h.make_node("Loop", ["", "go", "v0"], ["v"], body=body)],
        "while", [_vi("go", T.BOOL, []), _vi("v0", T.FLOAT, [2]), _vi("scale", T.FLOAT, []),
                  _vi("limit", T.FLOAT, [])], [_vi("v", T.FLOAT, [2])])
    model = _model(graph)
    graph_dnn = load_onnx(model)
    module = _compiled(graph_dnn)
    for go in (True, False):
        feeds = {"go": np.array(go), "v0": np.array([1.0, 2.0], np.float32), "scale": np.array(1.5, np.float32),
                 "limit": np.array(40.0, np.float32)}
        _close(module(*(torch.from_numpy(np.asarray(feeds[k])) for k in ("go", "v0", "scale", "limit"))),
               run_ort(model, feeds))
    exported = export_onnx(graph_dnn, None, inputs=graph_dnn.meta["onnx"]["inputs"], outputs=["v"])
    feeds = {"go": np.array(True), "v0": np.array([1.0, 2.0], np.float32), "scale": np.array(1.5, np.float32),
             "limit": np.array(40.0, np.float32)}
    np.testing.assert_allclose(run_ort(exported, feeds)[0], run_ort(model, feeds)[0])


def test_loop_without_trip_count_or_condition_is_refused():
    body = h.make_graph([h.make_node("Identity", ["c_in"], ["c_out"]), h.make_node("Identity", ["v_in"], ["v_out"])],
                        "body", [_vi("i", T.INT64, []), _vi("c_in", T.BOOL, []), _vi("v_in", T.FLOAT, [1])],
                        [_vi("c_out", T.BOOL, []), _vi("v_out", T.FLOAT, [1])])
    graph = h.make_graph([h.make_node("Loop", ["", "", "v0"], ["v"], body=body)], "forever",
                         [_vi("v0", T.FLOAT, [1])], [_vi("v", T.FLOAT, [1])])
    module = _compiled(load_onnx(_model(graph)))
    with pytest.raises(ValueError, match="neither a trip count nor a condition"):
        module(torch.zeros(1))


def test_unsupported_op_inside_a_body_is_listed_before_any_work():
    then_g = h.make_graph([h.make_node("NoSuchOp", ["x"], ["t"], name="deep")], "then", [],
                          [_vi("t", T.FLOAT, [1])])
    else_g = h.make_graph([h.make_node("Identity", ["x"], ["e"])], "else", [], [_vi("e", T.FLOAT, [1])])
    graph = h.make_graph([h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)], "g",
                         [_vi("c", T.BOOL, []), _vi("x", T.FLOAT, [1])], [_vi("y", T.FLOAT, [1])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    with pytest.raises(UnknownOpError, match="NoSuchOp: 'deep'"):
        load_onnx(model)


def test_corrupted_body_signature_is_a_clear_error(tmp_path):
    graph = load_onnx(_loop_if_model())
    doc = json.loads(graph.to_json())
    loop = next(op for op in doc["ops"] if op["type"] == "Loop")
    loop["attrs"]["body"]["graphdnn.body"]["meta"]["body"]["outputs"] = ["no_such_value:0"]
    with pytest.raises(FileFormatError, match="no_such_value"):
        gd.Graph.from_json(json.dumps(doc))


def test_bodies_with_variables_are_not_saved(tmp_path):
    graph = load_onnx(_loop_if_model())
    loop = graph.get_operation("loop")
    loop.attrs["body"].variable("stray", value=torch.ones(1), scoped=False)
    with pytest.raises(GraphError, match="holds variables"):
        gd.save(graph, tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()
