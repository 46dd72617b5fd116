"""Keras 3 ``.keras`` / legacy ``.h5`` / ``.weights.h5`` files, checked against Keras's own outputs."""

import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from graphdnn.converters.keras_import import keras_named_tensors, load_keras, load_keras_weights

import graphdnn as gd
from graphdnn import layers, nn
from graphdnn.errors import FileFormatError, UnknownOpError

KERAS = Path(__file__).parent / "fixtures" / "foreign" / "keras"


def _expected(model):
    return np.load(KERAS / f"{model}_expected.npz")


@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_model_and_layer_outputs_match_keras(model, ext):
    z = _expected(model)
    graph = gd.load(KERAS / f"{model}.{ext}")
    layer_names = [k[len("layer:"):] for k in z.files if k.startswith("layer:")]
    outputs = graph.meta["keras_import"]["outputs"] + layer_names      # layer names resolve to their outputs
    module = gd.compile(graph, outputs=outputs).eval()
    with torch.no_grad():
        got = module(torch.from_numpy(z["input"]))                     # NHWC in, as Keras took
    np.testing.assert_allclose(got[0].numpy(), z["output"], atol=1e-4)
    for name, value in zip(layer_names, got[1:]):
        np.testing.assert_allclose(value.numpy(), z["layer:" + name], atol=1e-4, err_msg=name)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_weights_keep_keras_names_and_layouts(model):
    z = _expected(model)
    graph = load_keras(KERAS / f"{model}.keras")
    for key in (k for k in z.files if k.startswith("weight:")):
        layer, rest = key[len("weight:"):].split("/")
        name = f"{layer}/{rest.split(':')[1]}"
        assert np.array_equal(graph.values[name].detach().numpy(), z[key]), name
    if model == "cnn":
        assert graph.get_operation("conv1/kernel").attrs["layout"] == "hwio"
        assert graph.get_tensor("image:0").shape == (None, 16, 16, 3)
        assert not graph.get_operation("bn1/moving_mean").attrs["trainable"]
    else:
        bn = graph.get_operation("bn1/BatchNormalization")
        assert (bn.attrs["momentum"], bn.attrs["epsilon"]) == (0.9, 0.001)
        assert graph.get_operation("dropout1/Dropout").type == "Dropout"


def test_weights_h5_into_an_existing_graph_by_layer_name():
    z = _expected("mlp")
    g = gd.Graph("mlp")
    x = g.placeholder("X", (None, 64))
    h = layers.dense(x, 32, name="hidden1")
    h = nn.elu(layers.batch_normalization(h, momentum=0.9, name="bn1"))
    h = layers.dropout(h, 0.5, name="dropout1")
    h = layers.batch_normalization(layers.dense(h, 16, name="hidden2"), momentum=0.9, name="bn2")
    h = nn.leaky_relu(h, 0.01)
    h = nn.elu(layers.dense(h, 16, name="hidden3"))
    out = nn.softmax(layers.dense(h, 10, name="outputs"))
    report = load_keras_weights(g, KERAS / "mlp.weights.h5")
    assert report.ok and len(report.matched) == 16
    model = gd.compile(g, inputs=[x], outputs=[out]).eval()
    np.testing.assert_allclose(model(torch.from_numpy(z["input"])).detach().numpy(), z["output"], atol=1e-4)


def test_weights_h5_converts_conv_kernels_for_nchw_layers():
    z = _expected("cnn")
    g = gd.Graph()
    x = g.placeholder("x", (None, 3, 16, 16))
    y = layers.conv2d(x, 8, 3, padding="same", activation=nn.relu, name="conv1")
    report = load_keras_weights(g, KERAS / "cnn.weights.h5", strict=False)
    assert report.matched == ["conv1/kernel", "conv1/bias"] and "HWIO" in report.converted["conv1/kernel"]
    got = gd.compile(g, inputs=[x], outputs=[y])(torch.from_numpy(z["input"]).permute(0, 3, 1, 2))
    np.testing.assert_allclose(got.detach().permute(0, 2, 3, 1).numpy(), z["layer:conv1"], atol=1e-4)


def test_reload_weights_into_imported_graph():
    graph = load_keras(KERAS / "cnn.h5")
    for value in graph.values.values():
        value.data.zero_()
    report = load_keras_weights(graph, KERAS / "cnn.weights.h5")
    assert report.ok and not report.converted
    z = _expected("cnn")
    assert np.array_equal(graph.values["conv4/kernel"].detach().numpy(), z["weight:conv4/0:kernel"])


def test_named_tensors_of_keras_files():
    names = keras_named_tensors(KERAS / "mlp.h5").names()
    assert "hidden1/kernel" in names and "bn2/moving_variance" in names


def test_weights_only_file_is_not_a_model():
    with pytest.raises(FileFormatError, match="load_keras_weights"):
        gd.load(KERAS / "mlp.weights.h5")


def test_truncated_h5(tmp_path):
    bad = tmp_path / "mlp.h5"
    bad.write_bytes((KERAS / "mlp.h5").read_bytes()[:5000])
    with pytest.raises(FileFormatError, match="mlp.h5"):
        load_keras(bad)


def test_zip_bomb_and_missing_members(tmp_path):
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", "{}")
        z.writestr("model.weights.h5", b"\0" * (8 * 2**20))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(FileFormatError, match="zip bomb"):
        load_keras(bomb)
    empty = tmp_path / "empty.keras"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("metadata.json", "{}")
    with pytest.raises(FileFormatError, match="config.json"):
        load_keras(empty)


def test_external_links_are_not_followed(tmp_path):
    secret = tmp_path / "other.h5"
    with h5py.File(secret, "w") as f:
        f["data"] = np.ones(3)
    evil = tmp_path / "evil.weights.h5"
    with h5py.File(evil, "w") as f:
        f.create_group("layers/dense/vars").attrs["name"] = "hidden1"
        f["layers/dense/vars/0"] = h5py.ExternalLink(str(secret), "/data")
    with pytest.raises(FileFormatError, match="external link"):
        keras_named_tensors(evil)


def test_unsupported_layers_listed(tmp_path):
    with zipfile.ZipFile(KERAS / "mlp.keras") as z:
        config, weights = z.read("config.json").decode(), z.read("model.weights.h5")
    config = config.replace('"class_name": "LeakyReLU"', '"class_name": "Lambda"').replace(
        '"class_name": "ELU"', '"class_name": "ThresholdedReLU"')
    path = tmp_path / "odd.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", config)
        z.writestr("model.weights.h5", weights)
    with pytest.raises(UnknownOpError, match=r"leaky2 \(Lambda\), elu3 \(ThresholdedReLU\)"):
        load_keras(path)


def test_missing_h5py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(FileFormatError, match=r"pip install graphdnn\[keras\]"):
        load_keras(KERAS / "mlp.h5")

