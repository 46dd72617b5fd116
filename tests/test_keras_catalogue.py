"""The Keras layer catalogue, checked against Keras's own outputs (``keras.applications``:
``test_keras_applications.py``).

The fixtures (``fixtures/foreign/keras/catalogue``) were written by Keras 3 itself (see
``fixtures/make_keras_catalogue.py``): ``.keras``, legacy ``.h5`` and ``.weights.h5`` files, with the
outputs and intermediate layer outputs Keras computed and every weight under its ``Variable.path``.
"""

import json
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from graphdnn.converters.keras_import import keras_named_tensors, load_keras, load_keras_weights, supported_layers

import graphdnn as gd
from graphdnn.errors import FileFormatError, UnknownOpError

CATALOGUE = Path(__file__).parent / "fixtures" / "foreign" / "keras" / "catalogue"
MODELS = ["vision", "activations", "shapes", "text", "shared"]
# Weights-only files whose names need the config: bn_noscale (3 weights: center or scale is off), attention
# (1 weight: scale or concat_score_weight).
AMBIGUOUS = {"vision": "BatchNormalization with 3 weights", "text": "Attention layer's single weight"}


def _expected(name):
    return np.load(CATALOGUE / f"{name}_expected.npz", allow_pickle=False)


def _run(graph, z, extra=()):
    meta = graph.meta["keras_import"]
    module = gd.compile(graph, outputs=meta["outputs"] + list(extra)).eval()
    feeds = [torch.from_numpy(z[f"input:{n}"]) for n in meta["inputs"]]
    with torch.no_grad():
        got = module(*feeds)
    return [t.numpy() for t in (got if isinstance(got, (list, tuple)) else [got])]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_outputs_and_intermediates_match_keras(name, ext):
    z = _expected(name)
    graph = load_keras(CATALOGUE / f"{name}.{ext}")
    probes = [k[len("layer:"):] for k in z.files if k.startswith("layer:")]
    got = _run(graph, z, probes)
    n_out = len(graph.meta["keras_import"]["outputs"])
    for i in range(n_out):
        np.testing.assert_allclose(got[i], z[f"output:{i}"], atol=1e-4, err_msg=f"output {i}")
    for probe, value in zip(probes, got[n_out:]):
        np.testing.assert_allclose(value, z[f"layer:{probe}"], atol=1e-4, err_msg=probe)


@pytest.mark.parametrize("name", MODELS)
def test_variables_keep_keras_paths_and_values(name):
    z = _expected(name)
    graph = load_keras(CATALOGUE / f"{name}.keras")
    expected = {k[len("weight:"):]: z[k] for k in z.files if k.startswith("weight:")}
    assert expected and set(expected) == {op.name for op in graph.variables()}
    for path, value in expected.items():
        assert np.array_equal(graph.values[path].detach().numpy(), value), path


def test_keras_paths_of_nested_weights():
    graph = load_keras(CATALOGUE / "text.keras")
    names = {op.name for op in graph.variables()}
    assert {"lstm/lstm_cell/kernel", "lstm/lstm_cell/recurrent_kernel", "gru/gru_cell/bias", "mha/query/kernel",
            "mha/attention_output/bias", "bidi/forward_lstm/lstm_cell/kernel", "bidi/backward_lstm/lstm_cell/bias",
            "td/dense/kernel", "embed/embeddings", "attention/scale", "attention_concat/concat_score_weight",
            "einsum/kernel", "ln_2axes/gamma"} <= names
    assert graph.values["gru/gru_cell/bias"].shape == (2, 12)  # reset_after: input and recurrent biases
    assert graph.values["gru_v1/gru_cell/bias"].shape == (15,)
    vision = load_keras(CATALOGUE / "vision.keras")
    assert {"depthwise/kernel", "separable/depthwise_kernel", "separable/pointwise_kernel", "bn_plain/moving_mean",
            "bn_plain/moving_variance", "bn_noscale/beta", "prelu/alpha", "norm_adapted/mean"} <= {
        op.name for op in vision.variables()}
    assert "bn_plain/gamma" not in vision.values and "bn_noscale/gamma" not in vision.values
    assert not vision.get_operation("bn_plain/moving_mean").attrs["trainable"]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("ext", ["keras", "h5", "weights.h5"])
def test_the_three_readers_name_every_weight_alike(name, ext):
    z = _expected(name)
    expected = {k[len("weight:"):]: z[k] for k in z.files if k.startswith("weight:")}
    if name in AMBIGUOUS and ext == "weights.h5":  # without the config some names are undecidable: refused
        with pytest.raises(FileFormatError, match=AMBIGUOUS[name]):
            keras_named_tensors(CATALOGUE / f"{name}.{ext}")
        return
    tensors = keras_named_tensors(CATALOGUE / f"{name}.{ext}")
    assert sorted(tensors.names()) == sorted(expected)
    for path, value in expected.items():
        assert np.array_equal(tensors.read_one(path).numpy(), value), path


@pytest.mark.parametrize("name", ["vision", "text"])  # the two whose weights-only files need the config
def test_weights_h5_reload_into_an_imported_graph(name):
    graph = load_keras(CATALOGUE / f"{name}.keras")
    for value in graph.values.values():
        value.data.zero_()
    report = load_keras_weights(graph, CATALOGUE / f"{name}.weights.h5")
    assert report.ok and not report.converted
    z = _expected(name)
    np.testing.assert_allclose(_run(graph, z)[0], z["output:0"], atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_trainable_variable(name):
    z = _expected(name)
    graph = load_keras(CATALOGUE / f"{name}.keras")
    meta = graph.meta["keras_import"]
    module = gd.compile(graph).train()
    torch.manual_seed(0)
    got = module(*[torch.from_numpy(z[f"input:{n}"]) for n in meta["inputs"]])
    got = got if isinstance(got, (list, tuple)) else [got]
    loss = sum((o.float() * torch.randn_like(o.float())).sum() for o in got)
    loss.backward()
    trainable = [op.name for op in graph.variables() if op.attrs["trainable"]]
    assert trainable
    for path in trainable:
        grad = module.variable(path).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, path


@pytest.mark.parametrize("name", MODELS)
def test_onnx_export_runs_in_onnx_runtime(name, tmp_path):
    z = _expected(name)
    graph = load_keras(CATALOGUE / f"{name}.keras")
    meta = graph.meta["keras_import"]
    path = tmp_path / f"{name}.onnx"
    gd.export_onnx(graph, str(path), outputs=meta["outputs"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feeds = {n: z[f"input:{k}"] for n, k in zip(names, meta["inputs"])}
    assert all(n.split(":")[0] == k for n, k in zip(names, meta["inputs"]))
    for i, value in enumerate(session.run(None, feeds)):
        np.testing.assert_allclose(value, z[f"output:{i}"], atol=1e-4, err_msg=f"output {i}")


def test_keras2_legacy_h5_keeps_keras2_names():
    """A ``tf_keras`` (Keras 2) ``.h5``: its own weight names (``dw/depthwise_kernel``, ``td/kernel``), MHA's
    value passed by keyword."""
    z = _expected("tf2_keras")
    graph = load_keras(CATALOGUE / "tf2_keras.h5")
    got = _run(graph, z)
    for i, value in enumerate(got):
        np.testing.assert_allclose(value, z[f"output:{i}"], atol=1e-4, err_msg=f"output {i}")
    expected = {k[len("weight:"):]: z[k] for k in z.files if k.startswith("weight:")}
    assert {"dw/depthwise_kernel", "td/kernel", "mha/query/kernel", "bn/gamma"} <= set(expected)
    assert graph.get_operation("tf.__operators__.add/Add").type == "Add"  # tf_keras's TFOpLambda
    assert set(expected) == {op.name for op in graph.variables()}
    assert sorted(keras_named_tensors(CATALOGUE / "tf2_keras.h5").names()) == sorted(expected)
    for path, value in expected.items():
        assert np.array_equal(graph.values[path].detach().numpy(), value), path


def test_keras2_keras_archive_names_weights_as_keras2():
    """A ``tf_keras`` (Keras 2) ``.keras`` archive: its ``model.weights.h5`` keys layers by class (``conv2d``,
    ``lstm_1``) and names no weight; the weights get the names ``tf_keras``'s legacy ``.h5`` gives them. A nested
    Sequential (whose calls Keras 2 numbers from 1) feeds a shared Dense."""
    z = _expected("tf2_keras_zip")
    graph = load_keras(CATALOGUE / "tf2_keras_zip.keras")
    (got,) = _run(graph, z)
    np.testing.assert_allclose(got, z["output:0"], atol=1e-5)
    expected = {k[len("weight:"):]: z[k] for k in z.files if k.startswith("weight:")}
    assert {"emb/embeddings", "conv/kernel", "bn/moving_mean", "dw/depthwise_kernel", "lstm/lstm_cell/kernel",
            "bidi/backward_gru/gru_cell/bias", "mha/attention_output/kernel", "td/kernel",
            "block/inner_bn/gamma", "shared/kernel"} <= set(expected)
    assert {op.name for op in graph.variables()} == set(expected)
    for path, value in expected.items():
        assert np.array_equal(graph.values[path].detach().numpy(), value), path
    assert sorted(keras_named_tensors(CATALOGUE / "tf2_keras_zip.keras").names()) == sorted(expected)


def test_op_names_are_uniquified_inside_a_layer():
    graph = load_keras(CATALOGUE / "vision.keras")  # conv_dilated has activation="gelu": three Mul ops
    names = set(graph.nx.nodes)
    assert {"conv_dilated/Mul", "conv_dilated/Mul_1", "conv_dilated/gelu", "conv_dilated/Erf"} <= names


def _edited(tmp_path, name, edit):
    with zipfile.ZipFile(CATALOGUE / f"{name}.keras") as z:
        config, weights = json.loads(z.read("config.json")), z.read("model.weights.h5")
    for layer in config["config"]["layers"]:
        edit(layer)
    path = tmp_path / f"edited_{name}.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", weights)
    return path


def test_unsupported_layers_are_listed_by_name_and_class(tmp_path):
    renames = {"resize": "RandomFlip", "center_crop": "Lambda"}

    def edit(layer):
        layer["class_name"] = renames.get(layer["config"]["name"], layer["class_name"])

    with pytest.raises(UnknownOpError, match=r"resize \(RandomFlip\), center_crop \(Lambda\)"):
        load_keras(_edited(tmp_path, "vision", edit))


def test_a_weight_the_config_does_not_use_is_not_dropped(tmp_path):
    def edit(layer):
        if layer["config"]["name"] == "dense":
            layer["config"]["use_bias"] = False

    with pytest.raises(FileFormatError, match="dense"):
        load_keras(_edited(tmp_path, "activations", edit))


def test_supported_layers_registry():
    table = supported_layers()
    for cls in ("DepthwiseConv2D", "SeparableConv2D", "LSTM", "GRU", "MultiHeadAttention", "Rescaling",
                "Normalization", "ZeroPadding2D", "LayerNormalization", "Bidirectional", "Embedding"):
        assert cls in table
    assert table["LSTM"] == "rnn" and table["Conv2D"] == "conv" and list(table) == sorted(table)


def test_readme_keras_layer_table_is_current():
    from graphdnn.converters import coverage_tables

    text = coverage_tables.README.read_text(encoding="utf-8")
    assert coverage_tables.rewrite(text, ["keras-layers"]) == text, "run python benchmarks/coverage_tables.py"
    assert "`MultiHeadAttention`" in text and "`DepthwiseConv2D`" in text


def test_gelu_tanh_approximation(tmp_path):
    """``gelu(approximate=True)`` as a serialized activation: checked against torch's tanh GELU."""
    def edit(layer):
        if layer["config"]["name"] == "act_gelu":
            layer["config"]["activation"] = {"class_name": "function", "config": {"name": "gelu", "approximate": True}}

    graph = load_keras(_edited(tmp_path, "activations", edit))
    z = _expected("activations")
    hidden, got = _run(graph, z, ["dense", "act_gelu"])[1:]
    expected = torch.nn.functional.gelu(torch.from_numpy(hidden), approximate="tanh").numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.abs(got - z["layer:act_gelu"]).max() > 1e-6  # differs from the exact GELU Keras computed


def test_shared_layers_build_each_call_on_one_weight_set():
    graph = load_keras(CATALOGUE / "shared.keras")
    assert {op.name for op in graph.variables()} == {
        "shared_conv/kernel", "shared_conv/bias", "shared_lstm/lstm_cell/kernel",
        "shared_lstm/lstm_cell/recurrent_kernel", "shared_lstm/lstm_cell/bias", "shared_dense/kernel",
        "shared_dense/bias", "pre/kernel", "pre/bias"}
    assert graph.get_tensor("shared_conv_1").name.startswith("shared_conv_1/")  # the second call's own ops
