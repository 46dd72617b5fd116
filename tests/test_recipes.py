"""Chapter 11's practical defaults (graphdnn.recipes): names, the computation against handwritten torch,
training on the bundled digits, and the fast and sparse variants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import graphdnn as gd
from graphdnn.data import load_digits
from graphdnn.recipes import default_dnn, train_default_dnn, zero_small_weights
from graphdnn.train import evaluate, fit


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models train fastest, and most predictably, on one thread
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    x_train, y_train, x_test, y_test = load_digits()
    return {"train": (x_train[288:], y_train[288:]), "valid": (x_train[:288], y_train[:288]),
            "test": (x_test, y_test)}


def kernels(graph):
    return {v.name: graph.values[v.name] for v in graph.variables(r".*/kernel$")}


def test_default_dnn_names_follow_the_book():
    dnn = default_dnn(64, 10, hidden=(30, 20, 10))
    g = dnn.graph
    ops = {op.name: op for op in g.operations()}
    for i in (1, 2, 3):
        assert f"dnn/hidden{i}/MatMul" in ops and f"dnn/hidden{i}/Elu" in ops
        assert f"hidden{i}/kernel" in ops and f"hidden{i}/bias" not in ops  # batch norm's beta is the bias
        bn = ops[f"dnn/hidden{i}/batch_normalization/FusedBatchNorm"]
        assert bn.type == "BatchNormalization" and bn.attrs["momentum"] == 0.9
        assert {f"hidden{i}/batch_normalization/{v}" for v in ("gamma", "beta", "moving_mean", "moving_variance")} \
            <= set(ops)
    assert dnn.X.name == "X:0" and dnn.y.name == "y:0" and dnn.y.dtype == "int64"
    assert dnn.logits.name == "dnn/outputs/BiasAdd:0" and dnn.output_name == dnn.logits.name
    assert [t.name for t in dnn.hidden] == [f"dnn/hidden{i}/Elu:0" for i in (1, 2, 3)]
    assert g.get_tensor_by_name("dnn/hidden2/Elu:0") == dnn.hidden[1]
    assert g.get_collection("my_important_ops") == ["X:0", "y:0", dnn.accuracy.name]
    assert dnn.loss.name == "loss/loss:0" and dnn.accuracy.name == "eval/accuracy:0"
    assert len(g.get_collection("regularization_losses")) == 4  # L2 on the 3 hidden kernels + outputs
    assert (dnn.optimizer, dnn.clip_value, dnn.patience) == ("nesterov", 1.0, 10)


def test_default_dnn_he_initialization_statistics():
    torch.manual_seed(0)
    dnn = default_dnn(400, 10, hidden=(300,))
    w = dnn.graph.values["hidden1/kernel"]
    # He (TF's variance_scaling(2.0, fan_in, truncated_normal)): variance 2 / fan_in; the underlying normal's
    # stddev is sqrt(2 / fan_in) / 0.8796 (the std of a unit normal cut at +-2) and values are cut at 2 of those.
    assert abs(w.std().item() - math.sqrt(2 / 400)) < 0.03 * math.sqrt(2 / 400)
    assert w.abs().max().item() <= 2 * math.sqrt(2 / 400) / 0.87962566 + 1e-6


def test_default_dnn_computes_what_handwritten_torch_computes(digits):
    torch.manual_seed(1)
    dnn = default_dnn(64, 10, hidden=(16, 12))
    g = dnn.graph
    with torch.no_grad():  # non-trivial moving statistics and affine parameters
        for i in (1, 2):
            for v in ("gamma", "beta", "moving_mean", "moving_variance"):
                t = g.values[f"hidden{i}/batch_normalization/{v}"]
                t.copy_(torch.rand_like(t) + (0.5 if v in ("gamma", "moving_variance") else -0.5))
    x = torch.from_numpy(digits["test"][0][:50])
    got = dnn.compile().eval()(x)

    def layer(h, i):
        bn = {v: g.values[f"hidden{i}/batch_normalization/{v}"].detach()
              for v in ("gamma", "beta", "moving_mean", "moving_variance")}
        h = h @ g.values[f"hidden{i}/kernel"].detach()
        h = (h - bn["moving_mean"]) / torch.sqrt(bn["moving_variance"] + 1e-3) * bn["gamma"] + bn["beta"]
        return F.elu(h)

    h = layer(layer(x, 1), 2)
    want = h @ g.values["outputs/kernel"].detach() + g.values["outputs/bias"].detach()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_default_dnn_reaches_95_percent_on_digits(digits):
    dnn, model, history = train_default_dnn(*digits["train"], validation_data=digits["valid"], hidden=(100, 100),
                                            epochs=20, seed=0, progress=False, decay_steps=1000)
    assert max(history["val_accuracy"]) >= 0.95
    # fit restored the best epoch's weights: an independent evaluation gives that epoch's score
    assert history.best_epoch is not None
    best = history["val_loss"][history.best_epoch - 1]
    assert evaluate(model, *digits["valid"])["loss"] == pytest.approx(best, rel=1e-5)
    # batch norm moving statistics were updated during training (TF's UPDATE_OPS)
    assert not torch.equal(dnn.graph.values["hidden1/batch_normalization/moving_mean"], torch.zeros(100))
    assert evaluate(model, *digits["test"])["accuracy"] >= 0.93


def test_fast_variant_has_no_batch_norm_and_leaky_relu(digits):
    dnn, model, history = train_default_dnn(*digits["train"], validation_data=digits["valid"], hidden=(64, 64),
                                            variant="fast", epochs=8, seed=0, progress=False)
    types = {op.type for op in dnn.graph.operations()}
    assert "BatchNormalization" not in types
    relus = [op for op in dnn.graph.operations() if op.type == "LeakyRelu"]
    assert [op.name for op in relus] == ["dnn/hidden1/LeakyRelu", "dnn/hidden2/LeakyRelu"]
    assert all(op.attrs["alpha"] == 0.01 for op in relus)
    assert "hidden1/bias" in {v.name for v in dnn.graph.variables()}
    x = torch.randn(5, 64)
    pre = (x @ dnn.graph.values["hidden1/kernel"] + dnn.graph.values["hidden1/bias"]).detach()
    got = gd.compile(dnn.graph, inputs=[dnn.X], outputs=[dnn.hidden[0]])(x)
    torch.testing.assert_close(got, torch.where(pre > 0, pre, 0.01 * pre))
    assert max(history["val_accuracy"]) >= 0.9


def test_sparse_variant_ftrl_yields_exact_zeros(digits):
    torch.manual_seed(0)
    dnn = default_dnn(64, 10, hidden=(64, 64), variant="sparse", decay_steps=None)
    model = dnn.compile()
    opt = dnn.make_optimizer(model)
    kernel_params = {id(model.variable(n)) for n in model.variable_names if n.endswith("/kernel")}
    groups = {len(g["params"]): g["l1_regularization_strength"] for g in opt.param_groups}
    assert type(opt).__name__ == "FTRL" and groups == {5: 0.0, 3: 1e-3}  # L1 on the 3 kernels only
    assert {id(p) for g in opt.param_groups if g["l1_regularization_strength"] for p in g["params"]} == kernel_params
    history = fit(model, *digits["train"], validation_data=digits["valid"], epochs=10, seed=0, progress=False,
                  **dnn.fit_kwargs(model))
    assert max(history["val_accuracy"]) >= 0.85
    values = kernels(dnn.graph)
    zeros_from_training = sum(int((w == 0).sum()) for w in values.values())
    total = sum(w.numel() for w in values.values())
    assert zeros_from_training > 0.05 * total  # FTRL's L1 proximal step sets weights to exactly 0
    gammas = [dnn.graph.values[f"hidden{i}/batch_normalization/gamma"] for i in (1, 2)]
    assert all(bool((g != 0).all()) for g in gammas)  # no L1 on batch norm
    before = {n: w.detach().clone().numpy() for n, w in values.items()}
    count = dnn.zero_small_weights()
    expected = sum(int((np.abs(w) < 1e-3).sum()) for w in before.values())
    assert count == expected > zeros_from_training
    for name, w in kernels(dnn.graph).items():
        w = w.detach()
        small = np.abs(before[name]) < 1e-3
        assert (w.numpy()[small] == 0).all() and np.array_equal(w.numpy()[~small], before[name][~small])


def test_default_variant_has_no_exact_zeros_for_contrast(digits):
    torch.manual_seed(0)
    dnn = default_dnn(64, 10, hidden=(32,))
    model = dnn.compile()
    fit(model, *digits["train"], epochs=2, seed=0, progress=False, **dnn.fit_kwargs(model))
    assert all(int((w == 0).sum()) == 0 for w in kernels(dnn.graph).values())
    with pytest.raises(gd.GraphDNNError, match="zero_threshold"):
        dnn.zero_small_weights()
    assert zero_small_weights(dnn.graph, 1e9) == sum(w.numel() for w in kernels(dnn.graph).values())


def test_options_dropout_max_norm_and_freezing(digits):
    torch.manual_seed(0)
    dnn = default_dnn(64, 10, hidden=(20, 20), dropout=0.5, max_norm=1.0, optimizer="adam")
    g = dnn.graph
    assert g.get_operation("dnn/hidden1/dropout/Dropout").type == "Dropout"
    assert g.get_operation("hidden1/kernel").attrs["constraint"]["max_value"] == 1.0
    assert dnn.optimizer == "adam" and dnn.lr == 0.001
    model = dnn.compile()
    fit(model, *digits["train"], epochs=1, seed=0, progress=False, **dnn.fit_kwargs(model))
    rows = g.values["hidden1/kernel"].norm(dim=1)  # each input unit's outgoing weights
    assert rows.max().item() <= 1.0 + 1e-5
    frozen = gd.freeze(g, "hidden1")  # the whole layer, batch norm included, is one name
    assert sorted(frozen) == sorted(["hidden1/kernel"] + [f"hidden1/batch_normalization/{v}" for v in
                                                          ("gamma", "beta", "moving_mean", "moving_variance")])
    opt = dnn.make_optimizer(model)
    trained = {id(p) for group in opt.param_groups for p in group["params"]}
    assert id(model.variable("hidden1/kernel")) not in trained and id(model.variable("hidden2/kernel")) in trained


@pytest.mark.parametrize("kwargs, message", [({"variant": "tiny"}, "unknown variant"),
                                             ({"hidden": ()}, "hidden"),
                                             ({"activation": "swish"}, "unknown activation")])
def test_bad_arguments_raise_graphdnn_errors(kwargs, message):
    with pytest.raises(gd.GraphDNNError, match=message):
        default_dnn(4, 2, **kwargs)
