"""ONNX export written from the graph: names kept, inference form, dynamic batch, checker, ORT parity."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from graphdnn.converters import onnx_export

import graphdnn as gd
from graphdnn import initializers as init
from graphdnn import layers, nn
from graphdnn.errors import GraphError
from graphdnn.graph import ValueInfo


def book_mlp(kind: str):
    """The book's 784-300-100-10 MLP: ReLU, or batch norm (momentum 0.9) + ELU, plus dropout."""
    torch.manual_seed(0)
    g = gd.Graph("book")
    X = g.placeholder("X", (None, 784))
    bn = partial(layers.batch_normalization, momentum=0.9)
    with g.name_scope("dnn"):
        if kind == "relu":
            h1 = layers.dense(X, 300, activation=nn.relu, name="hidden1")
            h2 = layers.dense(h1, 100, activation=nn.relu, name="hidden2")
        else:
            h1 = nn.elu(bn(layers.dense(X, 300, kernel_initializer=init.he_normal(), name="hidden1"), name="bn1"))
            h2 = nn.elu(bn(layers.dense(h1, 100, name="hidden2"), name="bn2"))
        h2 = layers.dropout(h2, 0.5, name="drop")
        logits = layers.dense(h2, 10, name="outputs")
    return g, logits


def _randomize_bn_stats(g):
    for v in g.variables():
        if "moving" in v.name:
            g.set_value(v.name, torch.rand(v.attrs["shape"]) + 0.5)


@pytest.mark.parametrize("kind", ["relu", "bn_elu"])
def test_names_inference_form_and_ort_parity(tmp_path, kind):
    g, logits = book_mlp(kind)
    _randomize_bn_stats(g)
    path = tmp_path / "book.onnx"
    model = gd.export_onnx(g, path, outputs=[logits])
    onnx.checker.check_model(onnx.load(path), full_check=True)

    nodes = {n.name: n for n in model.graph.node}
    # a dense layer is one Gemm named after its BiasAdd; the MatMul's names live in the metadata
    gemm = nodes["dnn/hidden1/BiasAdd"]
    assert gemm.op_type == "Gemm" and list(gemm.input) == ["X", "hidden1/kernel", "hidden1/bias"]
    assert gemm.output[0] == "dnn/hidden1/BiasAdd:0" and "dnn/hidden1/MatMul" not in nodes
    fused = json.loads({p.key: p.value for p in model.metadata_props}["graphdnn.fused_gemm"])
    assert fused["dnn/hidden1/BiasAdd"] == {"matmul": "dnn/hidden1/MatMul", "matmul_output": "dnn/hidden1/MatMul:0"}
    unfused = {n.name: n for n in gd.export_onnx(g, None, outputs=[logits], fuse_gemm=False).graph.node}
    assert unfused["dnn/hidden1/MatMul"].input[1] == "hidden1/kernel"
    assert unfused["dnn/hidden1/MatMul"].output[0] == "dnn/hidden1/MatMul:0"
    assert unfused["dnn/hidden1/BiasAdd"].op_type == "Add"
    assert {t.name for t in model.graph.initializer} >= {"hidden1/kernel", "hidden1/bias", "outputs/kernel"}
    assert [i.name for i in model.graph.input] == ["X"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [o.name for o in model.graph.output] == ["dnn/outputs/BiasAdd:0"]
    out_dims = model.graph.output[0].type.tensor_type.shape.dim  # the batch axis keeps its name downstream
    assert (out_dims[0].dim_param, out_dims[1].dim_value) == ("batch", 10)
    # dropout in inference form: an Identity with the same node and value names; no rate constant
    assert nodes["dnn/drop/Dropout"].op_type == "Identity"
    assert not any("rate" in n for n in nodes)
    if kind == "bn_elu":
        bn_node = nodes["dnn/bn1/FusedBatchNorm"]
        assert bn_node.op_type == "BatchNormalization" and list(bn_node.input[3:]) == ["bn1/moving_mean",
                                                                                        "bn1/moving_variance"]
        assert all(a.name != "training_mode" for a in bn_node.attribute)
        assert nodes["dnn/Elu"].output[0] == "dnn/Elu:0"
    props = {p.key: p.value for p in model.metadata_props}
    assert props["graphdnn.version"] == gd.__version__
    assert json.loads(props["graphdnn.name_map"])["hidden1/kernel:0"] == "hidden1/kernel"

    module = gd.compile(g, outputs=[logits]).eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 64):  # one file, any batch size
        x = np.random.default_rng(batch).standard_normal((batch, 784)).astype(np.float32)
        got = session.run(None, {"X": x})[0]
        np.testing.assert_allclose(got, module(torch.from_numpy(x)).detach().numpy(), atol=1e-5, rtol=1e-4)


def test_stop_gradient_and_alpha_dropout_export_as_identity(tmp_path):
    g = gd.Graph()
    x = g.placeholder("x", (None, 4))
    y = layers.alpha_dropout(nn.stop_gradient(nn.selu(x), name="frozen"), 0.1, name="ad")
    model = gd.export_onnx(g, tmp_path / "m.onnx", outputs=[y])
    ops = {n.name: n.op_type for n in model.graph.node}
    assert ops == {"Selu": "Selu", "frozen": "Identity", "ad/AlphaDropout": "Identity"}
    assert [o.domain for o in model.opset_import] == [""]


def test_compiled_module_and_an_intermediate_input(tmp_path):
    g, logits = book_mlp("bn_elu")
    _randomize_bn_stats(g)
    top = gd.compile(g, inputs=["dnn/Elu:0"], outputs=[logits]).eval()
    model = gd.export_onnx(top, tmp_path / "top.onnx")
    assert [i.name for i in model.graph.input] == ["dnn/Elu:0"]
    assert "hidden1/kernel" not in {t.name for t in model.graph.initializer}
    h = np.random.default_rng(0).standard_normal((5, 300)).astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "top.onnx")).run(None, {"dnn/Elu:0": h})[0]
    np.testing.assert_allclose(got, top(torch.from_numpy(h)).detach().numpy(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("forced", [True, None])
def test_external_data(tmp_path, monkeypatch, forced):
    if forced is None:  # the automatic switch, with the 2 GB threshold lowered to this model's size
        monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 10_000)
    g, logits = book_mlp("relu")
    path = tmp_path / "big.onnx"
    gd.export_onnx(g, path, outputs=[logits], external_data=forced)
    (data,) = tmp_path.glob("big.onnx.*.data")  # one external-data file, named per export
    assert data.stat().st_size > 784 * 300 * 4
    assert path.stat().st_size < 100_000
    x = np.ones((2, 784), np.float32)
    got = ort.InferenceSession(str(path)).run(None, {"X": x})[0]
    ref = gd.compile(g, outputs=[logits]).eval()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-4)


def test_opset_choice_and_errors(tmp_path):
    g, logits = book_mlp("relu")
    model = gd.export_onnx(g, None, outputs=[logits], opset=18)  # same definitions at 17 and 18
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 18)]
    with pytest.raises(GraphError, match="another definition"):
        gd.export_onnx(g, None, outputs=[logits], opset=11)  # Dropout/Add... differ at 11
    with pytest.raises(GraphError, match="outside"):
        gd.export_onnx(g, None, outputs=[logits], opset=99)
    with pytest.raises(GraphError, match="Graph or compiled module"):
        gd.export_onnx(object(), tmp_path / "x.onnx")


def test_a_failed_export_keeps_the_previous_file(tmp_path):
    g, logits = book_mlp("relu")
    path = tmp_path / "m.onnx"
    gd.export_onnx(g, path, outputs=[logits])
    before = path.read_bytes()
    bad = gd.Graph()
    x = bad.placeholder("x", (None, 2))
    y = bad.add_op("Relu", [x], {"not_an_attr": 1}, outputs=[ValueInfo((None, 2), "float32")]).out()
    with pytest.raises(GraphError, match="not_an_attr"):
        gd.export_onnx(bad, path, outputs=[y])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_fused_gemm_splits_back_on_import(tmp_path):
    g, logits = book_mlp("relu")
    path = tmp_path / "fused.onnx"
    first = gd.export_onnx(g, path, outputs=[logits])
    imported = gd.load(path)
    assert imported.get_operation("dnn/hidden1/MatMul").type == "MatMul"
    assert imported.get_operation("dnn/hidden1/BiasAdd").inputs == ["dnn/hidden1/MatMul:0", "hidden1/bias:0"]
    again = gd.export_onnx(imported, None)
    assert [(n.name, n.op_type, list(n.input), list(n.output)) for n in again.graph.node] == [
        (n.name, n.op_type, list(n.input), list(n.output)) for n in first.graph.node]
    x = torch.randn(3, 784)
    torch.testing.assert_close(gd.compile(imported).eval()(x), gd.compile(g, outputs=[logits]).eval()(x))
