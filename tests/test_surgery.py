"""Graph surgery by name, checked by compiling the edited graphs against the original or plain torch."""

import pytest
import torch
import torch.nn.functional as F

import graphdnn as gd
from graphdnn import layers, nn
from graphdnn.errors import GraphError


def dnn(seed=0):
    torch.manual_seed(seed)
    g = gd.Graph("dnn")
    X = g.placeholder("X", (None, 6))
    y = g.placeholder("y", (None,), "int64")
    with g.name_scope("dnn"):
        h1 = layers.dense(X, 8, activation=nn.relu, name="hidden1")
        h2 = layers.dense(h1, 7, activation=nn.relu, name="hidden2")
        logits = layers.dense(h2, 3, name="outputs")
    loss = nn.reduce_mean(nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits), name="loss")
    g.add_to_collection("my_important_ops", X)
    g.add_to_collection("my_important_ops", loss)
    return g, h1, h2, logits, loss


def test_extract_subgraph_between_named_tensors():
    g, h1, h2, logits, _ = dnn()
    sub = gd.extract_subgraph(g, [h1], [logits])
    assert sub.get_tensor(h1.name).op.is_placeholder                      # the input keeps its name
    assert {v.name for v in sub.variables()} == {"hidden2/kernel", "hidden2/bias", "outputs/kernel", "outputs/bias"}
    assert sub.values["outputs/kernel"] is g.values["outputs/kernel"]
    assert "y" not in sub and "hidden1/kernel" not in sub and sub.get_collection("my_important_ops") == []
    h = torch.randn(4, 8)
    v = g.values
    expected = F.relu(h @ v["hidden2/kernel"] + v["hidden2/bias"]) @ v["outputs/kernel"] + v["outputs/bias"]
    torch.testing.assert_close(gd.compile(sub, outputs=[logits.name])(h), expected)
    copy = gd.extract_subgraph(g, ["X"], [h2], share_values=False)
    assert copy.values["hidden1/kernel"] is not g.values["hidden1/kernel"]
    assert torch.equal(copy.values["hidden1/kernel"], g.values["hidden1/kernel"])


def test_prune_keeps_only_what_outputs_need():
    g, h1, h2, logits, loss = dnn()
    removed = gd.prune(g, [h2])
    assert "y" in removed and "outputs/kernel" in removed and "loss" in removed
    assert g.get_collection("my_important_ops") == ["X:0"]
    assert "outputs/kernel" not in g.values and set(g.values) == {"hidden1/kernel", "hidden1/bias",
                                                                  "hidden2/kernel", "hidden2/bias"}


def test_remove_and_replace_scope():
    g, h1, h2, logits, loss = dnn()
    with pytest.raises(GraphError, match="cannot remove scope 'hidden2'.*dnn/outputs/MatMul"):
        gd.remove_scope(g, "hidden2")
    new = gd.replace_scope(g, "hidden2", lambda t: layers.dense(t, 7, activation=nn.tanh, name="hidden2"))
    assert g.get_operation("dnn/outputs/MatMul").inputs[0] == new.name == "dnn/hidden2/Tanh:0"
    assert "dnn/hidden2/Relu" not in g
    x = torch.randn(5, 6)
    v = g.values
    hid = F.tanh(F.relu(x @ v["hidden1/kernel"] + v["hidden1/bias"]) @ v["hidden2/kernel"] + v["hidden2/bias"])
    torch.testing.assert_close(gd.compile(g, outputs=[logits])(x), hid @ v["outputs/kernel"] + v["outputs/bias"])
    removed = gd.remove_scope(g, "hidden2", dependents=True)
    assert "loss" in removed and "outputs/kernel" in removed and "hidden1/kernel" in g
    layers.dense(h1, 2, name="hidden2")                                   # the name is free again


def test_rename_scope_everywhere_and_through_a_checkpoint(tmp_path):
    g, h1, h2, logits, loss = dnn()
    x = torch.randn(3, 6)
    before = gd.compile(g, outputs=[logits])(x)
    mapping = gd.rename_scope(g, "hidden1", "encoder")
    assert mapping["hidden1/kernel"] == "encoder/kernel" and mapping["dnn/hidden1/Relu"] == "dnn/encoder/Relu"
    assert g.get_operation("dnn/hidden2/MatMul").inputs[0] == "dnn/encoder/Relu:0"
    assert [op.name for op in g.placeholders()] == ["X", "y"]
    loaded = gd.load(gd.save(g, tmp_path / "r.safetensors"))
    assert "encoder/kernel" in loaded.values and "hidden1/kernel" not in loaded.values
    torch.testing.assert_close(gd.compile(loaded, outputs=[logits.name])(x), before, rtol=0, atol=0)


def test_new_layers_on_a_loaded_graph(tmp_path):
    g, h1, h2, logits, loss = dnn()
    loaded = gd.load(gd.save(g, tmp_path / "m.safetensors"))
    top = loaded.get_tensor("dnn/hidden2/Relu:0")
    with loaded.name_scope("dnn"):
        new = layers.dense(top, 4, name="new_outputs")
        with pytest.raises(GraphError, match="already exists"):
            layers.dense(top, 4, name="hidden2")                           # scopes survive the round trip
    assert new.name == "dnn/new_outputs/BiasAdd:0"
    out = gd.compile(loaded, outputs=[new])(torch.randn(2, 6))
    assert out.shape == (2, 4)
