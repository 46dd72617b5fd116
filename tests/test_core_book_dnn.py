"""The book's 784-300-100-10 DNN with batch norm (momentum 0.9) + ELU, built by name, against a
handwritten torch module holding the same weights."""

from functools import partial

import pytest
import torch
import torch.nn as tnn
import torch.nn.functional as F

import graphdnn as gd
from graphdnn import initializers as init
from graphdnn import layers, nn


def build_book_dnn(momentum=0.9):
    g = gd.Graph("book")
    X = g.placeholder("X", (None, 784))
    y = g.placeholder("y", (None,), "int64")
    bn = partial(layers.batch_normalization, momentum=momentum)
    dense = partial(layers.dense, kernel_initializer=init.he_normal())
    with g.name_scope("dnn"):
        h1 = dense(X, 300, name="hidden1")
        a1 = nn.elu(bn(h1, name="bn1"))
        h2 = dense(a1, 100, name="hidden2")
        a2 = nn.elu(bn(h2, name="bn2"))
        logits = layers.dense(a2, 10, name="outputs")
    with g.name_scope("loss"):
        xent = nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        loss = nn.reduce_mean(xent, name="loss")
    return g, logits, loss


class Handwritten(tnn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn1 = tnn.Linear(784, 300), tnn.BatchNorm1d(300, eps=1e-3, momentum=0.1)
        self.fc2, self.bn2 = tnn.Linear(300, 100), tnn.BatchNorm1d(100, eps=1e-3, momentum=0.1)
        self.out = tnn.Linear(100, 10)

    def hidden2(self, x):
        return self.bn2(self.fc2(F.elu(self.bn1(self.fc1(x)))))

    def forward(self, x):
        return self.out(F.elu(self.hidden2(x)))


def copy_weights(g, ref):
    with torch.no_grad():
        for scope, fc in (("hidden1", ref.fc1), ("hidden2", ref.fc2), ("outputs", ref.out)):
            fc.weight.copy_(g.values[f"{scope}/kernel"].T)
            fc.bias.copy_(g.values[f"{scope}/bias"])
        for scope, b in (("bn1", ref.bn1), ("bn2", ref.bn2)):
            b.weight.copy_(g.values[f"{scope}/gamma"])
            b.bias.copy_(g.values[f"{scope}/beta"])
            b.running_mean.copy_(g.values[f"{scope}/moving_mean"])
            b.running_var.copy_(g.values[f"{scope}/moving_variance"])


@pytest.fixture()
def pair():
    torch.manual_seed(0)
    g, logits, loss = build_book_dnn()
    ref = Handwritten()
    copy_weights(g, ref)
    return g, logits, loss, ref


def test_names_are_tf1_names(pair):
    g, logits, loss, _ = pair
    assert logits.name == "dnn/outputs/BiasAdd:0"
    assert g.get_tensor("dnn/hidden1/MatMul:0").shape == (None, 300)
    assert {"hidden1/kernel", "hidden1/bias", "bn1/gamma", "bn1/beta", "bn1/moving_mean",
            "bn1/moving_variance"} <= {v.name for v in g.variables()}
    assert g.get_collection("trainable_variables", scope="hidden[12]") == [
        "hidden1/kernel", "hidden1/bias", "hidden2/kernel", "hidden2/bias"]
    assert "bn1/moving_mean" not in g.get_collection("trainable_variables")
    assert g.get_tensor_by_name("dnn/Elu:0").op.type == "Elu"
    assert g.get_tensor_by_name("dnn/Elu_1:0").op.inputs == ["dnn/bn2/FusedBatchNorm:0"]


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_outputs_equal_handwritten(pair, mode):
    g, logits, _, ref = pair
    model = gd.compile(g, outputs=[logits])
    getattr(model, mode)()
    getattr(ref, mode)()
    x = torch.randn(64, 784)
    torch.testing.assert_close(model(x), ref(x), atol=1e-6, rtol=0)


def test_gradients_and_moving_statistics_after_five_steps(pair):
    g, logits, loss, ref = pair
    model = gd.compile(g, inputs=["X", "y"], outputs=[loss])
    opt_a = torch.optim.SGD(model.parameters(), lr=0.05)
    opt_b = torch.optim.SGD(ref.parameters(), lr=0.05)
    model.train()
    ref.train()
    gen = torch.Generator().manual_seed(1)
    for step in range(5):
        x, y = torch.randn(50, 784, generator=gen), torch.randint(0, 10, (50,), generator=gen)
        opt_a.zero_grad()
        opt_b.zero_grad()
        la, lb = model(x, y), F.cross_entropy(ref(x), y)
        torch.testing.assert_close(la, lb, atol=1e-6, rtol=0)
        la.backward()
        lb.backward()
        if step == 0:
            torch.testing.assert_close(model.variable("hidden1/kernel").grad, ref.fc1.weight.grad.T, atol=1e-6, rtol=0)
            torch.testing.assert_close(model.variable("bn2/gamma").grad, ref.bn2.weight.grad, atol=1e-6, rtol=0)
            torch.testing.assert_close(model.variable("outputs/bias").grad, ref.out.bias.grad, atol=1e-6, rtol=0)
        opt_a.step()
        opt_b.step()
    for scope, b in (("bn1", ref.bn1), ("bn2", ref.bn2)):
        torch.testing.assert_close(model.variable(f"{scope}/moving_mean"), b.running_mean, atol=1e-6, rtol=0)
        torch.testing.assert_close(model.variable(f"{scope}/moving_variance"), b.running_var, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.variable("hidden2/kernel"), ref.fc2.weight.T, atol=1e-6, rtol=0)
    # the moving statistics really moved: momentum 0.9 from zeros/ones
    assert model.variable("bn1/moving_mean").abs().max() > 0


def test_intermediate_output_and_feeding_an_intermediate(pair):
    g, logits, _, ref = pair
    ref.eval()
    x = torch.randn(8, 784)
    hidden2 = gd.compile(g, outputs=["dnn/bn2/FusedBatchNorm:0"]).eval()
    torch.testing.assert_close(hidden2(x), ref.hidden2(x), atol=1e-6, rtol=0)

    top = gd.compile(g, inputs=["dnn/bn2/FusedBatchNorm:0"], outputs=[logits]).eval()
    assert top.input_names == ["dnn/bn2/FusedBatchNorm:0"]
    assert set(top.variable_names) == {"outputs/kernel", "outputs/bias"}
    assert not any("hidden1" in k for k in top.state_dict())
    h = torch.randn(8, 100)
    torch.testing.assert_close(top(h), ref.out(F.elu(h)), atol=1e-6, rtol=0)


def test_state_dict_keys_mirror_scopes_and_map_back(pair):
    g, logits, _, _ = pair
    model = gd.compile(g, outputs=[logits])
    keys = list(model.state_dict())
    assert "hidden1.kernel" in keys and "bn1.moving_variance" in keys
    assert all(gd.state_key(gd.graph_name(k)) == k for k in keys)
    assert isinstance(model.get_submodule("hidden1"), torch.nn.Module)
    assert "def forward(self, x)" in model.code


def test_compiled_modules_share_the_graph_variables(pair):
    g, logits, _, _ = pair
    a = gd.compile(g, outputs=[logits])
    b = gd.compile(g, inputs=["dnn/Elu_1:0"], outputs=[logits])
    assert a.variable("outputs/kernel") is b.variable("outputs/kernel") is g.values["outputs/kernel"]


def test_to_float64_and_torch_compile(pair):
    g, logits, _, ref = pair
    model = gd.compile(g, outputs=[logits]).eval()
    ref.eval()
    x = torch.randn(4, 784)
    expected = ref(x)
    compiled = torch.compile(model)
    torch.testing.assert_close(compiled(x), expected, atol=1e-5, rtol=1e-5)
    model64 = model.to(torch.float64)
    assert model64.variable("hidden1/kernel").dtype == torch.float64
    torch.testing.assert_close(model64(x.double()), ref.double()(x.double()), atol=1e-10, rtol=0)
