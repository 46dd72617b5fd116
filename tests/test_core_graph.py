"""Graph IR: scopes, naming, collections, JSON, initializers, errors."""

import json
import math
import os

import numpy as np
import pytest
import torch

import graphdnn as gd
from graphdnn import initializers as init
from graphdnn import layers, nn, regularizers


def small_graph():
    g = gd.Graph("small")
    X = g.placeholder("X", (None, 4))
    with g.name_scope("dnn"):
        h = layers.dense(X, 3, name="hidden1", activation=nn.relu,
                         kernel_regularizer=regularizers.l1_l2(0.01, 0.1))
        h = layers.dropout(h, 0.5)
        out = layers.dense(h, 2, name="outputs")
    g.add_to_collection("my_important_ops", X)
    g.add_to_collection("my_important_ops", out)
    return g, X, out


def test_tf_style_uniquifying_and_scopes():
    g = gd.Graph()
    x = g.placeholder("x", (None, 2))
    with g.name_scope("dnn"):
        a = nn.relu(x)
        b = nn.relu(a)
        d1 = layers.dense(b, 2)
        d2 = layers.dense(d1, 2)
    assert (a.name, b.name) == ("dnn/Relu:0", "dnn/Relu_1:0")
    assert d1.op.name == "dnn/dense/BiasAdd" and d2.op.name == "dnn/dense_1/BiasAdd"
    assert "dense/kernel" in g and "dense_1/kernel" in g
    with g.variable_scope("outer"):
        v = g.variable("w", (2,), initializer=init.zeros())
    assert v.name == "outer/w:0"


def test_get_tensor_by_op_and_tensor_name_and_collections():
    g, X, out = small_graph()
    assert g.get_tensor("dnn/hidden1/Relu:0").op.type == "Relu"
    assert g.get_tensor("hidden1/kernel").name == "hidden1/kernel:0"
    assert g.get_collection("my_important_ops") == ["X:0", "dnn/outputs/BiasAdd:0"]
    assert g.get_collection("variables", scope="hidden1") == ["hidden1/kernel", "hidden1/bias"]
    assert g.get_collection("regularization_losses") == ["hidden1/kernel/Regularizer/l1_l2:0"]
    order = [op.name for op in g.operations()]
    for op in g.operations():
        for ref in op.inputs:
            assert order.index(ref.split(":")[0]) < order.index(op.name)


def test_regularization_loss_ops_match_formula():
    g, X, out = small_graph()
    w = g.values["hidden1/kernel"].detach().numpy()
    expected = 0.01 * np.abs(w).sum() + 0.1 * (w ** 2).sum() / 2
    reg = gd.compile(g, inputs=[], outputs=g.get_collection("regularization_losses"))
    assert reg() .item() == pytest.approx(expected, rel=1e-6)
    model = gd.compile(g, outputs=[out])
    assert model.regularization_loss().item() == pytest.approx(expected, rel=1e-6)


def test_json_round_trip_is_identical():
    g, X, out = small_graph()
    text = g.to_json()
    g2 = gd.Graph.from_json(text)
    assert g2.to_json() == text
    for name, value in g.values.items():
        g2.set_value(name, value)
    x = torch.randn(5, 4)
    a = gd.compile(g, outputs=[out]).eval()
    b = gd.compile(g2, outputs=[out.name]).eval()
    torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)
    assert json.loads(text)["version"] == 1


def test_json_from_initializers():
    g, X, out = small_graph()
    g2 = gd.Graph.from_json(g.to_json(), initialize=True)
    assert set(g2.values) == set(g.values)
    assert g2.values["hidden1/kernel"].shape == (4, 3)


@pytest.mark.parametrize("spec,variance", [
    (init.he_normal(), 2 / 1000),
    (init.he_uniform(), 2 / 1000),
    (init.glorot_uniform(), 2 / (1000 + 1000)),
    (init.glorot_normal(), 2 / (1000 + 1000)),
    (init.lecun_normal(), 1 / 1000),
    (init.lecun_uniform(), 1 / 1000),
    (init.variance_scaling(2.0, "fan_out", "normal"), 2 / 1000),
])
def test_variance_scaling_matches_theory(spec, variance):
    torch.manual_seed(0)
    w = init.materialize(spec, (1000, 1000))
    assert abs(w.var().item() / variance - 1) < 0.05
    assert abs(w.mean().item()) < 0.01 * math.sqrt(variance) * 10
    if spec["distribution"] == "truncated_normal":
        # cut at two standard deviations of the untruncated normal, whose std is sqrt(var) / 0.8796
        assert w.abs().max().item() <= 2 * math.sqrt(variance) / 0.87962566103423978 + 1e-6
    if spec["distribution"] == "uniform":
        assert w.abs().max().item() <= math.sqrt(3 * variance) + 1e-6


def test_fans_by_layout():
    assert init.fans((3, 4)) == (3, 4)
    assert init.fans((5, 5, 3, 8)) == (75, 200)  # HWIO
    assert init.fans((8, 3, 5, 5), "oihw") == (75, 200)


def test_foreign_weights_initialize_a_layer():
    g = gd.Graph()
    X = g.placeholder("X", (None, 2))
    original_w = [[1, 2, 3], [4, 5, 6]]
    original_b = [7, 8, 9]
    h = layers.dense(X, 3, name="hidden1", kernel_initializer=init.from_array(original_w),
                     bias_initializer=init.from_array(original_b))
    out = gd.compile(g, outputs=[h])(torch.tensor([[10.0, 11.0]]))
    assert out.tolist() == [[61.0, 83.0, 105.0]]


def test_dropout_follows_train_and_eval():
    g, X, out = small_graph()
    h = g.get_tensor("dnn/dropout/Dropout:0")
    model = gd.compile(g, outputs=[h])
    relu = gd.compile(g, outputs=["dnn/hidden1/Relu:0"])
    x = torch.rand(2000, 4) + 1
    model.eval()
    torch.testing.assert_close(model(x), relu(x))
    model.train()
    torch.manual_seed(0)
    y, active = model(x), relu(x) != 0
    kept = (y != 0) & active
    assert 0.45 < kept[active].float().mean().item() < 0.55
    torch.testing.assert_close(y[kept], (relu(x) * 2)[kept])


def test_conv_pool_layers_match_torch():
    torch.manual_seed(0)
    g = gd.Graph()
    X = g.placeholder("X", (None, 3, 12, 12))
    c = layers.conv2d(X, 4, 3, padding="same", activation=nn.relu, name="conv1")
    p = layers.max_pool2d(c, 2, name="pool1")
    a = layers.avg_pool2d(p, 3, strides=1, padding="same", name="pool2")
    f = layers.flatten(a)
    assert f.shape == (None, 4 * 6 * 6)
    x = torch.randn(2, 3, 12, 12)
    out = gd.compile(g, outputs=[f])(x)
    k, b = g.values["conv1/kernel"], g.values["conv1/bias"]
    ref = torch.nn.functional.max_pool2d(torch.relu(torch.nn.functional.conv2d(x, k, b, padding=1)), 2)
    ref = torch.nn.functional.avg_pool2d(ref, 3, 1, 1, count_include_pad=False).flatten(1)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_stop_gradient_blocks_gradients():
    g = gd.Graph()
    X = g.placeholder("X", (None, 2))
    h = layers.dense(X, 2, name="low")
    top = layers.dense(nn.stop_gradient(h), 1, name="top")
    model = gd.compile(g, outputs=[top])
    model(torch.randn(3, 2)).sum().backward()
    assert model.variable("low/kernel").grad is None
    assert model.variable("top/kernel").grad is not None


# ---------------------------------------------------------------------- errors
def test_dangling_reference_names_the_op():
    g = gd.Graph()
    with pytest.raises(gd.GraphError, match=r"'Relu'.*'nowhere:0' does not exist"):
        g.add_op("Relu", ["nowhere:0"])


def test_duplicate_explicit_names():
    g = gd.Graph()
    X = g.placeholder("X", (None, 2))
    with pytest.raises(gd.GraphError, match="'X' already exists"):
        g.placeholder("X", (None, 2))
    layers.dense(X, 2, name="hidden1")
    with pytest.raises(gd.GraphError, match="'hidden1' already exists"):
        layers.dense(X, 2, name="hidden1")
    nn.relu(X, name="act")
    with pytest.raises(gd.GraphError, match="'act' already exists"):
        nn.relu(X, name="act")


def test_incompatible_shapes_name_the_node():
    g = gd.Graph()
    a = g.placeholder("a", (None, 3))
    b = g.variable("b", (4, 2), initializer=init.zeros())
    with pytest.raises(gd.GraphError, match=r"op 'bad' \(MatMul\): incompatible inputs.*'a:0' \(None, 3\)"):
        g.add_op("MatMul", [a, b], name="bad")


def test_unknown_op():
    g = gd.Graph()
    a = g.placeholder("a", (None, 3))
    with pytest.raises(gd.UnknownOpError, match="'NoSuchOp'"):
        g.add_op("NoSuchOp", [a])
    assert issubclass(gd.UnknownOpError, gd.GraphDNNError)


def test_missing_placeholder_feed_is_an_error():
    g, X, out = small_graph()
    with pytest.raises(gd.GraphError, match="placeholder 'X'"):
        gd.compile(g, inputs=[], outputs=[out])


def test_malformed_json_is_a_file_error():
    with pytest.raises(gd.FileFormatError, match="not valid JSON"):
        gd.Graph.from_json("{")
    g, _, _ = small_graph()
    doc = json.loads(g.to_json())
    doc["ops"][3]["inputs"] = ["ghost:0"]
    with pytest.raises(gd.FileFormatError, match="ghost:0"):
        gd.Graph.from_json(json.dumps(doc))
    doc = json.loads(g.to_json())
    doc["ops"][3]["type"] = "Evil"
    with pytest.raises(gd.FileFormatError, match="unsupported op types: Evil"):
        gd.Graph.from_json(json.dumps(doc))


def test_hostile_names_never_execute(tmp_path):
    canary = tmp_path / "pwned"
    evil = f"__import__('os').system('touch {canary}')"
    names = [evil, 'quote"\'\n\\newline', "ünïcødé/层", "class", "training", "a.b", "forward"]
    g = gd.Graph()
    x = g.placeholder(evil, (None, 2))
    h = x
    for name in names:
        h = layers.dense(h, 2, name=name, activation=nn.relu)
        assert f"{name}/kernel" in g
    model = gd.compile(g, outputs=[h])
    model(torch.randn(3, 2)).sum().backward()
    assert not canary.exists()
    assert sorted(model.variable_names) == sorted(f"{n}/{v}" for n in names for v in ("kernel", "bias"))
    g2 = gd.Graph.from_json(g.to_json(), initialize=True)
    gd.compile(g2)(torch.randn(1, 2))
    assert [op.name for op in g2.operations()] == [op.name for op in g.operations()]
    assert not canary.exists()
    assert os.listdir(tmp_path) == []


def test_max_norm_constraint_applied_by_the_compiled_module():
    torch.manual_seed(3)
    g = gd.Graph()
    X = g.placeholder("X", (None, 6))
    h = layers.dense(X, 4, name="hidden1", kernel_constraint=regularizers.max_norm(1.0, axes=1),
                     kernel_initializer=init.random_normal(stddev=0.55))
    model = gd.compile(g, outputs=[h])
    before = model.variable("hidden1/kernel").detach().numpy().copy()
    model.apply_constraints()
    after = model.variable("hidden1/kernel").detach().numpy()
    norms = np.linalg.norm(before, axis=1, keepdims=True)  # tf.clip_by_norm(w, 1.0, axes=1) by hand
    expected = np.where(norms > 1.0, before / norms, before)
    np.testing.assert_allclose(after, expected, rtol=1e-6)
    assert (norms <= 1.0).any() and (norms > 1.0).any()
    np.testing.assert_array_equal(after[(norms <= 1.0)[:, 0]], before[(norms <= 1.0)[:, 0]])


def test_string_placeholders_have_no_torch_dtype():
    g = gd.Graph()
    words = g.placeholder("words", (None,), "string")
    assert words.dtype == "string"
    from graphdnn.dtypes import onnx_code, torch_dtype

    assert onnx_code("string") == 8  # TensorProto.STRING
    with pytest.raises(gd.GraphError, match="no torch dtype"):
        torch_dtype("string")
