"""ONNX import: names kept, trainable weights, Constant/ConstantOfShape, dynamic shapes, bad input,
round trips, and fine-tuning an imported CNN end to end (checked against ONNX Runtime)."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from graphdnn.converters.onnx_import import load_onnx
from helpers import run_ort
from onnx import TensorProto, helper, numpy_helper

import graphdnn as gd
from graphdnn import layers, nn
from graphdnn.errors import FileFormatError, GraphDNNError, UnknownOpError
from graphdnn.graph import Graph
from graphdnn.ops import registry


def foreign_cnn(opset: int = 13, batch: str | int = "N") -> onnx.ModelProto:
    """A small CNN as a PyTorch-style exporter writes it: value names that are not ``op:i``, an
    empty node name, a Constant shape, a ConstantOfShape bias and batch norm statistics."""
    rng = np.random.default_rng(0)

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [
        init("conv1.weight", 8, 3, 3, 3), init("conv1.bias", 8),
        init("bn1.weight", 8), init("bn1.bias", 8),
        numpy_helper.from_array(rng.random(8).astype(np.float32), "bn1.running_mean"),
        numpy_helper.from_array((rng.random(8) + 0.5).astype(np.float32), "bn1.running_var"),
        init("fc.weight", 10, 8 * 4 * 4),
        numpy_helper.from_array(np.array([10], np.int64), "fc_bias_shape"),
    ]
    shape_const = helper.make_tensor("c", TensorProto.INT64, [2], [-1, 8 * 4 * 4])
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["/conv1/Conv_output_0"], "/conv1/Conv",
                         pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["/conv1/Conv_output_0", "bn1.weight", "bn1.bias",
                                                "bn1.running_mean", "bn1.running_var"], ["/bn1/bn_out"], "/bn1/BN",
                         epsilon=1e-5),
        helper.make_node("Relu", ["/bn1/bn_out"], ["/relu/Relu_output_0"], ""),
        helper.make_node("MaxPool", ["/relu/Relu_output_0"], ["/pool/out"], "/pool/MaxPool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Constant", [], ["/flatten/shape"], "/flatten/Constant", value=shape_const),
        helper.make_node("Reshape", ["/pool/out", "/flatten/shape"], ["/flatten/out"], "/flatten/Reshape"),
        helper.make_node("ConstantOfShape", ["fc_bias_shape"], ["fc.bias"], "/fc/bias_fill",
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.1])),
        helper.make_node("Gemm", ["/flatten/out", "fc.weight", "fc.bias"], ["logits"], "/fc/Gemm", transB=1),
    ]
    graph = helper.make_graph(nodes, "foreign_cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                   [batch, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _compile(g: Graph):
    return gd.compile(g, inputs=g.meta["onnx"]["inputs"], outputs=g.meta["onnx"]["outputs"])


def test_names_roles_and_values_equal_ort(tmp_path):
    model = foreign_cnn()
    path = tmp_path / "cnn.onnx"
    onnx.save(model, path)
    g = load_onnx(path)
    # initializers -> variables named exactly as in ONNX; ConstantOfShape weight too
    assert {v.name for v in g.variables()} >= {"conv1.weight", "bn1.running_mean", "fc.weight", "fc.bias"}
    assert "fc_bias_shape" not in g  # read only by the folded ConstantOfShape
    trainable = set(g.get_collection("trainable_variables"))
    assert trainable == {"conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias", "fc.weight", "fc.bias"}
    assert not g.get_operation("bn1.running_var").attrs["trainable"]
    # node names kept; the empty one is <op_type>_<index>; ONNX value names resolve
    assert g.get_operation("/conv1/Conv").type == "Conv"
    assert g.get_operation("Relu_2").type == "Relu"
    assert g.get_tensor("/relu/Relu_output_0").name == "Relu_2:0"
    assert g.get_tensor("logits").name == "/fc/Gemm:0"
    assert g.get_operation("/flatten/Constant").type == "Constant"
    assert g.get_tensor("input").shape == (None, 3, 8, 8)  # dynamic batch kept
    assert g.get_tensor("/pool/out").shape == (None, 8, 4, 4)

    x = np.random.default_rng(1).standard_normal((5, 3, 8, 8)).astype(np.float32)
    module = _compile(g).eval()
    got = module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, run_ort(model, {"input": x})[0], atol=1e-5, rtol=1e-4)


def test_one_optimizer_step_changes_every_trainable_variable():
    torch.manual_seed(0)
    g = load_onnx(foreign_cnn())
    module = _compile(g).train()
    params = dict(module.named_parameters())
    assert len(params) == len(g.get_collection("trainable_variables")) == 6
    before = {k: p.detach().clone() for k, p in params.items()}
    stats = module.variable("bn1.running_mean").clone()
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    x = torch.randn(4, 3, 8, 8)
    loss = torch.nn.functional.cross_entropy(module(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    assert all(not torch.equal(before[k], p) for k, p in params.items()), "some variable did not move"
    assert not torch.equal(stats, module.variable("bn1.running_mean"))  # state updated in train mode


def test_trainable_policies():
    none = load_onnx(foreign_cnn(), trainable="none")
    assert none.get_collection("trainable_variables") == []
    regex = load_onnx(foreign_cnn(), trainable=r"^fc\.")
    assert set(regex.get_collection("trainable_variables")) == {"fc.weight", "fc.bias"}
    fn = load_onnx(foreign_cnn(), trainable=lambda name, value: value.dim() > 1)
    assert set(fn.get_collection("trainable_variables")) == {"conv1.weight", "fc.weight"}
    with pytest.raises(GraphDNNError, match="trainable"):
        load_onnx(foreign_cnn(), trainable=3)


def test_big_constants_become_state_and_small_ones_stay_literals():
    w = np.arange(5000, dtype=np.float32).reshape(50, 100) / 5000
    nodes = [helper.make_node("Constant", [], ["W"], "w_const", value=numpy_helper.from_array(w)),
             helper.make_node("Constant", [], ["k"], "k_const", value_float=2.0),
             helper.make_node("MatMul", ["x", "W"], ["y"], "mm"),
             helper.make_node("Mul", ["y", "k"], ["z"], "scale")]
    graph = helper.make_graph(nodes, "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 50])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["b", 100])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g = load_onnx(model)
    assert g.get_operation("W").is_variable and not g.get_operation("W").attrs["trainable"]
    assert g.get_operation("k_const").type == "Constant"
    x = np.random.default_rng(0).standard_normal((3, 50)).astype(np.float32)
    got = _compile(g)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, run_ort(model, {"x": x})[0], atol=1e-5, rtol=1e-4)


def test_name_collisions_and_tensor_like_names():
    nodes = [helper.make_node("Relu", ["in:0"], ["out:0"], "in"),  # node named like the input
             helper.make_node("Neg", ["out:0"], ["neg"], "")]
    graph = helper.make_graph(nodes, "n", [helper.make_tensor_value_info("in:0", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("neg", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g = load_onnx(model)
    assert g.get_tensor("in:0").op.is_placeholder  # placeholder 'in', tensor 'in:0'
    relu = g.get_operation("in_1")
    assert relu.meta["onnx_name"] == "in" and g.get_tensor("out:0").name == "in_1:0"
    again = gd.export_onnx(g, None, inputs=g.meta["onnx"]["inputs"], outputs=g.meta["onnx"]["outputs"])
    assert [n.name for n in again.graph.node] == ["in", ""]
    assert [list(n.output) for n in again.graph.node] == [["out:0"], ["neg"]]
    assert [i.name for i in again.graph.input] == ["in:0"]


def test_opset_semantics_follow_since_version():
    # Squeeze: axes is an attribute before opset 13 and an input from 13 on
    def model(opset):
        if opset < 13:
            node = helper.make_node("Squeeze", ["x"], ["y"], "sq", axes=[1])
            inits = []
        else:
            node = helper.make_node("Squeeze", ["x", "axes"], ["y"], "sq")
            inits = [numpy_helper.from_array(np.array([1], np.int64), "axes")]
        graph = helper.make_graph([node], "s", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 3])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])

    x = torch.randn(2, 1, 3)
    for opset in (11, 13):
        g = load_onnx(model(opset))
        assert g.opset[""] == opset
        assert _compile(g)(x).shape == (2, 3)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
def test_truncated_garbage_and_empty_files(tmp_path):
    data = foreign_cnn().SerializeToString()
    (tmp_path / "trunc.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\xff" * 100 + b"not a model")
    (tmp_path / "empty.onnx").write_bytes(b"")
    for name in ("trunc.onnx", "garbage.onnx", "empty.onnx"):
        with pytest.raises(FileFormatError, match=re.escape(name)):
            load_onnx(tmp_path / name)
    with pytest.raises(FileFormatError, match="no such"):
        load_onnx(tmp_path / "missing.onnx")


def test_unsupported_ops_are_listed_in_one_error_before_any_work():
    nodes = [helper.make_node("Relu", ["x"], ["a"], "fine"),
             helper.make_node("FancyOp", ["a"], ["b"], "fancy1", domain="com.example"),
             helper.make_node("FancyOp", ["b"], ["c"], "fancy2", domain="com.example"),
             helper.make_node("ImageDecoder", ["c"], ["d"], "decode")]  # an ONNX op graphdnn lacks
    graph = helper.make_graph(nodes, "u", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("d", TensorProto.UINT8, [None, None, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.example", 1)])
    with pytest.raises(UnknownOpError) as err:
        load_onnx(model)
    msg = str(err.value)
    assert "com.example::FancyOp: 'fancy1', 'fancy2'" in msg and "ImageDecoder: 'decode'" in msg
    assert "3 node(s)" in msg


@pytest.mark.parametrize("opset", [0, registry.MAX_ONNX_OPSET + 1, 99])
def test_opset_out_of_range(opset):
    model = foreign_cnn()
    model.opset_import[0].version = opset
    with pytest.raises(FileFormatError, match=f"opset {opset}.*supports opsets {registry.MIN_ONNX_OPSET} to"):
        load_onnx(model)


# ----------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------
def _graph_signature(model: onnx.ModelProto):
    nodes = [(n.name, n.op_type, n.domain, list(n.input), list(n.output), [a.SerializeToString() for a in n.attribute])
             for n in model.graph.node]
    inits = [(t.name, t.data_type, list(t.dims), numpy_helper.to_array(t).tobytes()) for t in model.graph.initializer]
    ios = [(v.name, v.type.SerializeToString()) for v in (*model.graph.input, *model.graph.output)]
    return nodes, inits, ios, [(o.domain, o.version) for o in model.opset_import]


def _book_graph():
    torch.manual_seed(0)
    g = gd.Graph("book")
    X = g.placeholder("X", (None, 784))
    with g.name_scope("dnn"):
        h = nn.elu(layers.batch_normalization(layers.dense(X, 30, name="hidden1"), momentum=0.9, name="bn1"))
        h = layers.dropout(h, 0.2, name="drop")
        logits = layers.dense(h, 10, name="outputs")
        probs = nn.softmax(logits, name="probs")
    return g, probs


def test_export_import_export_is_the_same_graph(tmp_path):
    g, probs = _book_graph()
    first = gd.export_onnx(g, tmp_path / "a.onnx", outputs=[probs])
    imported = load_onnx(tmp_path / "a.onnx")
    assert {v.name for v in imported.variables()} == {v.name for v in g.variables() if v.name in imported}
    assert imported.get_tensor("dnn/bn1/FusedBatchNorm:0").op.type == "BatchNormalization"
    assert not imported.aliases  # graphdnn names round-trip without any alias
    second = gd.export_onnx(imported, tmp_path / "b.onnx")
    assert _graph_signature(first) == _graph_signature(second)
    for p in ("graphdnn.name_map",):
        assert {m.key: m.value for m in first.metadata_props}[p] == {m.key: m.value for m in second.metadata_props}[p]


def test_import_then_json_and_values_keep_every_name(tmp_path):
    model = foreign_cnn()
    g = load_onnx(model)
    restored = Graph.from_json(g.to_json())
    for name, value in g.values.items():
        restored.set_value(name, value)
    assert [op.name for op in restored.operations()] == [op.name for op in g.operations()]
    assert restored.aliases == g.aliases and restored.get_tensor("/relu/Relu_output_0").name == "Relu_2:0"
    again = gd.export_onnx(restored, None, inputs=restored.meta["onnx"]["inputs"],
                           outputs=restored.meta["onnx"]["outputs"])
    values = {o for n in again.graph.node for o in n.output}
    assert {"/conv1/Conv_output_0", "/bn1/bn_out", "/relu/Relu_output_0", "logits"} <= values
    assert "" in {n.name for n in again.graph.node}  # the unnamed node stays unnamed
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run_ort(again, {"input": x})[0], run_ort(model, {"input": x})[0], atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# Fine-tuning an imported CNN
# ----------------------------------------------------------------------------------------------
def test_fine_tune_imported_cnn_then_serve_with_ort(tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save(foreign_cnn(), path)
    g = load_onnx(path)
    # cut the classifier by name and add a new head on the flattened features
    features = g.get_tensor("/flatten/out")
    with g.name_scope("new_head"):
        hidden = layers.dense(features, 16, activation=nn.relu, name="dense1")
        logits = layers.dense(hidden, 3, name="logits")
    # freeze the backbone by regex
    for v in g.variables(r"conv1\.|bn1\."):
        v.attrs["frozen"] = True
        g.values[v.name].requires_grad_(False)
    assert set(g.get_collection("trainable_variables")) == {"fc.weight", "fc.bias", "dense1/kernel", "dense1/bias",
                                                             "logits/kernel", "logits/bias"}
    model = gd.compile(g, inputs=["input"], outputs=[logits])
    assert "fc.weight" not in {gd.graph_name(k) for k in model.state_dict()}  # the old head is cut off
    frozen_before = {v: g.values[v].detach().clone() for v in ("conv1.weight", "bn1.weight")}
    head_before = g.values["logits/kernel"].detach().clone()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 8, 8, generator=gen), torch.randint(0, 3, (16,), generator=gen)
    model.eval()  # keep the frozen batch-norm statistics fixed
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(g.values[v], before) for v, before in frozen_before.items())
    assert not torch.equal(g.values["logits/kernel"], head_before)

    out_path = tmp_path / "tuned.onnx"
    exported = gd.export_onnx(model, out_path)
    assert {"conv1.weight", "logits/kernel"} <= {t.name for t in exported.graph.initializer}
    assert "fc.weight" not in {t.name for t in exported.graph.initializer}
    test_x = torch.randn(7, 3, 8, 8, generator=gen)
    got = ort.InferenceSession(str(out_path)).run(None, {"input": test_x.numpy()})[0]
    np.testing.assert_allclose(got, model(test_x).detach().numpy(), atol=1e-5, rtol=1e-4)


def test_graphdnn_load_dispatches_onnx_and_a_checkpoint_keeps_every_name(tmp_path):
    onnx.save(foreign_cnn(), tmp_path / "cnn.onnx")
    g = gd.load(str(tmp_path / "cnn.onnx"))
    assert g.get_tensor("logits").name == "/fc/Gemm:0"
    gd.save(g, str(tmp_path / "cnn.safetensors"))
    back = gd.load(str(tmp_path / "cnn.safetensors"))
    assert [op.name for op in back.operations()] == [op.name for op in g.operations()]
    assert back.aliases == g.aliases and back.get_tensor("/relu/Relu_output_0").name == "Relu_2:0"
    assert all(torch.equal(back.values[k], v) for k, v in g.values.items())


def test_invalid_utf8_names_are_a_clean_error(tmp_path):
    g = Graph()
    x = g.placeholder("X", (None, 4))
    nn.relu(x, name="relu_name")
    data = gd.export_onnx(g, None).SerializeToString()
    assert data.count(b"relu_name") >= 1
    path = tmp_path / "bad.onnx"
    path.write_bytes(data.replace(b"relu_name", b"relu_nam\xff"))
    with pytest.raises(FileFormatError, match="not UTF-8 text|codec can.t decode"):  # older protobuf checks at parse
        load_onnx(path)


def test_sequence_ops_inside_a_model_match_onnxruntime():
    nodes = [
        helper.make_node("SplitToSequence", ["X"], ["parts"], axis=1, keepdims=1),
        helper.make_node("SequenceLength", ["parts"], ["n"]),
        helper.make_node("SequenceConstruct", ["X", "X"], ["pair"]),
        helper.make_node("SequenceInsert", ["pair", "Y", "pos"], ["three"]),
        helper.make_node("SequenceErase", ["three", "pos"], ["two"]),
        helper.make_node("SequenceAt", ["three", "pos"], ["picked"]),
        helper.make_node("ConcatFromSequence", ["two"], ["cat"], axis=0),
        helper.make_node("ConcatFromSequence", ["parts"], ["stacked"], axis=0, new_axis=1),
        helper.make_node("SequenceEmpty", [], ["empty"], dtype=TensorProto.FLOAT),
        helper.make_node("SequenceInsert", ["empty", "Y"], ["single"]),
        helper.make_node("SequenceAt", ["single", "zero"], ["only"]),
    ]
    graph = helper.make_graph(
        nodes, "seq",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("pos", TensorProto.INT64, [])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT if n != "n" else TensorProto.INT64, None)
         for n in ("n", "picked", "cat", "stacked", "only")],
        [helper.make_tensor("zero", TensorProto.INT64, [], [0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    rng = np.random.default_rng(0)
    feeds = {"X": rng.standard_normal((2, 3)).astype(np.float32), "Y": rng.standard_normal((2, 3)).astype(np.float32),
             "pos": np.array(1, dtype=np.int64)}
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    g = load_onnx(model)
    module = gd.compile(g, inputs=["X", "Y", "pos"], outputs=["n", "picked", "cat", "stacked", "only"])
    got = module(*(torch.from_numpy(feeds[k]) for k in ("X", "Y", "pos")))
    for e, t in zip(expected, got):
        np.testing.assert_allclose(t.numpy(), e, rtol=1e-6)


def test_value_names_with_newlines_follow_the_graphs_tensor_name_rule():
    graph = helper.make_graph([helper.make_node("Relu", ["a\n:0"], ["y"], name="r")], "g",
                              [helper.make_tensor_value_info("a\n:0", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    g = load_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert g.get_tensor("a\n:0").name == "a\n:0"  # the ONNX value name resolves to the placeholder
    x = torch.tensor([-1.0, 2.0])
    torch.testing.assert_close(gd.compile(g)(x), torch.relu(x))
