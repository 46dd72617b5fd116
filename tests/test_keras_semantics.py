"""Keras semantics beyond single layers, checked against Keras's own outputs: masks (``mask_zero``, ``Masking``)
into recurrent and attention layers, a nested model called twice, ``initial_state``, and the training
behaviour of the dropout and noise layers (against their formulas).

The fixtures (``fixtures/foreign/keras/semantics``) were written by Keras 3 (``fixtures/make_keras_semantics.py``)
on padded sequences: padding before, after and inside the sequences, and a row that is all padding.
"""

import functools
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from graphdnn.converters.keras_import import keras_named_tensors, load_keras, load_keras_weights

import graphdnn as gd
from graphdnn.errors import UnknownOpError

SEMANTICS = Path(__file__).parent / "fixtures" / "foreign" / "keras" / "semantics"
MODELS = ["masked_rnn", "masked_attention", "nested_states", "noise"]


def _expected(name):
    return np.load(SEMANTICS / f"{name}_expected.npz", allow_pickle=False)


def _feeds(graph, z, rows=None):
    return [torch.from_numpy(z[f"input:{n}"][:rows]) for n in graph.meta["keras_import"]["inputs"]]


@pytest.mark.parametrize("name", MODELS)
def test_outputs_and_intermediates_match_keras(name):
    z = _expected(name)
    graph = load_keras(SEMANTICS / f"{name}.keras")
    meta = graph.meta["keras_import"]
    probes = [k[len("layer:"):] for k in z.files if k.startswith("layer:")]
    module = gd.compile(graph, outputs=meta["outputs"] + probes).eval()
    with torch.no_grad():
        got = [t.numpy() for t in module(*_feeds(graph, z))]
    n_out = len(meta["outputs"])
    for i in range(n_out):  # a masked average over an all-padding row is 0/0 in Keras too (NaN == NaN here)
        np.testing.assert_allclose(got[i], z[f"output:{i}"], atol=1e-5, err_msg=f"output {i} ({meta['outputs'][i]})")
    for probe, value in zip(probes, got[n_out:]):
        np.testing.assert_allclose(value, z[f"layer:{probe}"], atol=1e-5, err_msg=probe)
    weights = {k: z[f"weight:{k}"] for k in (f[len("weight:"):] for f in z.files if f.startswith("weight:"))}
    assert set(weights) == {op.name for op in graph.variables()}  # one variable per Keras weight, shared calls too
    for path, value in weights.items():
        assert np.array_equal(graph.values[path].detach().numpy(), value), path


def test_masked_steps_hold_the_previous_output():
    """Masked recurrences are Scans; padding before a sequence gives zeros, padding after repeats the last output."""
    z = _expected("masked_rnn")
    with zipfile.ZipFile(SEMANTICS / "masked_rnn.keras") as f:
        config = json.loads(f.read("config.json"))
    embed = next(layer for layer in config["config"]["layers"] if layer["config"]["name"] == "embed")
    assert embed["config"]["mask_zero"]
    graph = load_keras(SEMANTICS / "masked_rnn.keras")
    scans = [op for op in graph.operations() if op.type == "Scan"]
    assert len(scans) == 10 and {op.name.split("/")[0] for op in scans} >= {"lstm_seq", "gru_back", "bidi_seq"}
    module = gd.compile(graph).eval()
    with torch.no_grad():
        got = module(*_feeds(graph, z))
    row = z["input:ids"][0]  # padded at the front: the outputs there are Keras's zeros, the state stays 0
    assert (row[:2] == 0).all() and np.all(got[0].numpy()[0, :2] == 0)
    held = z["input:ids"][1]  # padded at the end: the last output is repeated over the padding
    assert (held[-3:] == 0).all()
    np.testing.assert_array_equal(got[0].numpy()[1, -3:], np.repeat(got[0].numpy()[1, -4:-3], 3, axis=0))


def _edited(tmp_path, name, edit):
    with zipfile.ZipFile(SEMANTICS / f"{name}.keras") as z:
        config, weights = json.loads(z.read("config.json")), z.read("model.weights.h5")
    edit(config["config"]["layers"])
    path = tmp_path / f"edited_{name}.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", weights)
    return path


def test_masks_flow_without_explicit_mask_arguments(tmp_path):
    """Files that do not write the masks as ``mask=`` call arguments (older Keras 3): the importer derives
    them from ``mask_zero``/``Masking`` as Keras's ``compute_mask`` does, with the same outputs."""
    def edit(layers):
        layers[:] = [layer for layer in layers if layer["class_name"] not in ("NotEqual", "Any", "LogicalOr")]
        for layer in layers:
            for node in layer.get("inbound_nodes") or []:
                node["kwargs"].pop("mask", None)

    z = _expected("masked_rnn")
    graph = load_keras(_edited(tmp_path, "masked_rnn", edit))
    module = gd.compile(graph).eval()
    with torch.no_grad():
        got = module(*_feeds(graph, z))
    for i, value in enumerate(got):
        np.testing.assert_allclose(value.numpy(), z[f"output:{i}"], atol=1e-5, err_msg=f"output {i}")


def test_a_mask_into_a_layer_whose_masking_is_not_rebuilt_is_refused(tmp_path):
    def edit(layers):
        layers.append({"class_name": "Softmax", "config": {"name": "masked_softmax"}, "inbound_nodes": [
            {"args": [{"class_name": "__keras_tensor__", "config": {"keras_history": ["masking", 0, 0]}}],
             "kwargs": {}}]})

    with pytest.raises(UnknownOpError, match=r"'masked_softmax' \(Softmax\) reads a masked sequence"):
        load_keras(_edited(tmp_path, "masked_rnn", edit))


def test_a_stateful_recurrent_layer_is_refused(tmp_path):
    def edit(layers):
        for layer in layers:
            if layer["config"]["name"] == "lstm_init":
                layer["config"]["stateful"] = True

    with pytest.raises(UnknownOpError, match="stateful"):
        load_keras(_edited(tmp_path, "nested_states", edit))


def test_a_nested_model_called_twice_shares_one_weight_set():
    graph = load_keras(SEMANTICS / "nested_states.keras")
    # Keras names a nested functional model's variables by its layers alone; the scoped names reach them too
    assert {"proj/kernel", "enc_lstm/lstm_cell/kernel"} <= {op.name for op in graph.variables()}
    assert graph.get_tensor("encoder/proj/kernel").name == graph.get_tensor("proj/kernel").name
    first, second = graph.get_tensor("encoder"), graph.get_tensor("encoder_1")
    assert first.name.startswith("encoder/") and second.name.startswith("encoder_1/")
    assert graph.get_tensor("encoder_1/proj").name.startswith("encoder_1/proj/")
    z = _expected("nested_states")
    module = gd.compile(graph, outputs=[first, second]).eval()
    with torch.no_grad():
        a, b = module(*_feeds(graph, z)[:2])
    np.testing.assert_allclose(np.concatenate([a.numpy(), b.numpy()], -1), z["output:0"][:, :6], atol=1e-5)
    feeds = _feeds(graph, z)  # the same input through both calls: equal outputs
    with torch.no_grad():
        a, b = module(feeds[0], feeds[0])
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# ------------------------------------------------------------------------- nested models' weight paths
def _keras_paths():
    """Keras's ``Variable.path`` of each weight of ``nested_paths`` (in ``model.weights`` order) and its value;
    the second of two weights sharing a path (two nested models each holding a ``proj`` layer) is named by
    its scoped name ``other/proj/...``."""
    z = _expected("nested_paths")
    paths = [str(p) for p in z["paths"]]
    names = [f"other/{p}" if p in paths[:i] else p for i, p in enumerate(paths)]
    return {name: z[f"weight_{i}"] for i, name in enumerate(names)}, paths


#: The scoped names (every enclosing model's name) of nested models' weights, aliases of their Keras paths.
SCOPED = {"encoder/proj/kernel": "proj/kernel", "mid/inner/deep/bias": "deep/bias",
          "mid/mid_dense/kernel": "mid_dense/kernel", "mid/iseq/sd/kernel": "iseq/sd/kernel"}


def test_nested_paths_fixture_holds_keras_paths():
    _, paths = _keras_paths()
    # a nested functional model's layers keep their own names (called twice: one weight set), a nested
    # Sequential's are under its name, at any depth
    assert paths == ["pre/kernel", "pre/bias", "proj/kernel", "proj/bias", "seq/d1/kernel", "seq/d1/bias",
                     "seq/d2/kernel", "seq/d2/bias", "deep/kernel", "deep/bias", "mid_dense/kernel", "mid_dense/bias",
                     "iseq/sd/kernel", "iseq/sd/bias", "proj/kernel", "proj/bias"]


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_nested_model_variables_are_named_by_keras_paths(suffix):
    expected, _ = _keras_paths()
    with pytest.warns(UserWarning, match=r"other/proj/kernel"):
        graph = load_keras(SEMANTICS / f"nested_paths{suffix}")
    assert sorted(op.name for op in graph.variables()) == sorted(expected)
    for name, value in expected.items():
        assert np.array_equal(graph.values[name].detach().numpy(), value), name
    assert graph.meta["keras_import"]["scoped_names"] == ["other/proj/kernel", "other/proj/bias"]
    for scoped, path in SCOPED.items():  # the scoped names reach the same variables
        assert graph.get_tensor(scoped).name == graph.get_tensor(path).name, scoped
        assert graph.get_operation(scoped).name == path
    z = _expected("nested_paths")
    with torch.no_grad():
        got = gd.compile(graph).eval()(*_feeds(graph, z))
    np.testing.assert_allclose(got.numpy(), z["output:0"], atol=1e-5)


@pytest.mark.parametrize("suffix", [".keras", ".h5", ".weights.h5"])
def test_every_reader_names_nested_weights_alike(suffix):
    expected, _ = _keras_paths()
    tensors = keras_named_tensors(SEMANTICS / f"nested_paths{suffix}")
    assert sorted(tensors.names()) == sorted(expected)
    for name, value in expected.items():
        assert np.array_equal(tensors.read_one(name).numpy(), value), name


def test_weights_file_loads_into_an_imported_graph_by_keras_paths():
    expected, _ = _keras_paths()
    with pytest.warns(UserWarning):
        graph = load_keras(SEMANTICS / "nested_paths.keras")
    with torch.no_grad():
        for op in graph.variables():
            graph.values[op.name].zero_()
    report = load_keras_weights(graph, SEMANTICS / "nested_paths.weights.h5")
    assert sorted(report.matched) == sorted(expected) and not report.missing and not report.unexpected
    for name, value in expected.items():
        assert np.array_equal(graph.values[name].detach().numpy(), value), name


def test_weights_load_into_a_graph_using_the_scoped_names():
    """A graph whose variables carry the nested models' scoped names (as graphdnn named them before) still
    receives the weights."""
    expected, _ = _keras_paths()
    with pytest.warns(UserWarning):
        graph = load_keras(SEMANTICS / "nested_paths.keras")
    graph.rename_ops({path: scoped for scoped, path in SCOPED.items()})
    with torch.no_grad():
        for op in graph.variables():
            graph.values[op.name].zero_()
    load_keras_weights(graph, SEMANTICS / "nested_paths.weights.h5")
    for scoped, path in SCOPED.items():
        assert np.array_equal(graph.values[scoped].detach().numpy(), expected[path]), scoped


@pytest.mark.parametrize("name", ["masked_rnn", "masked_attention", "nested_states"])
def test_gradients_reach_every_trainable_variable(name):
    z = _expected(name)
    graph = load_keras(SEMANTICS / f"{name}.keras")
    module = gd.compile(graph).train()
    got = module(*_feeds(graph, z, rows=3))  # rows with unmasked steps (an all-padding row's average is NaN)
    torch.manual_seed(0)
    loss = sum((o * torch.randn_like(o)).sum() for o in got)
    loss.backward()
    for op in graph.variables():
        grad = module.variable(op.name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, op.name


@pytest.mark.parametrize("name", ["masked_rnn", "masked_attention", "nested_states", "noise"])
def test_onnx_export_runs_in_onnx_runtime(name, tmp_path):
    z = _expected(name)
    graph = load_keras(SEMANTICS / f"{name}.keras")
    meta = graph.meta["keras_import"]
    path = tmp_path / f"{name}.onnx"
    gd.export_onnx(graph, str(path), outputs=meta["outputs"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: z[f"input:{k}"] for i, k in zip(session.get_inputs(), meta["inputs"])}
    for i, value in enumerate(session.run(None, feeds)):
        np.testing.assert_allclose(value, z[f"output:{i}"], atol=1e-5, err_msg=f"output {i}")


def test_masked_recurrences_survive_save_and_load(tmp_path):
    z = _expected("masked_rnn")
    path = tmp_path / "masked_rnn.safetensors"
    gd.save(load_keras(SEMANTICS / "masked_rnn.keras"), path)
    graph = gd.load(path)
    module = gd.compile(graph).eval()
    with torch.no_grad():
        got = module(*_feeds(graph, z))
    for i, value in enumerate(got):
        np.testing.assert_allclose(value.numpy(), z[f"output:{i}"], atol=1e-5, err_msg=f"output {i}")


# ------------------------------------------------------------------------- dropout and noise in training
@functools.cache
def _noise_module():
    graph = load_keras(SEMANTICS / "noise.keras")
    return graph, gd.compile(graph).train()


def _train_outputs(seed=0):
    graph, module = _noise_module()
    feeds = _feeds(graph, _expected("noise"))
    torch.manual_seed(seed)
    with torch.no_grad():
        return feeds, [t.numpy() for t in module(*feeds)]


@pytest.mark.parametrize("index, rate, channel_axis", [(0, 0.5, -1), (1, 0.3, -1), (2, 0.25, -1), (6, 0.3, 1)])
def test_spatial_dropout_drops_whole_channels(index, rate, channel_axis):
    feeds, outs = _train_outputs()
    x = feeds[{0: 0, 1: 1, 2: 2, 6: 1}[index]].numpy()
    ratio = outs[index] / x  # per element: 0 or 1 / (1 - rate)
    assert np.all(np.isclose(ratio, 0) | np.isclose(ratio, 1 / (1 - rate), rtol=1e-5))
    ratio = np.moveaxis(ratio, channel_axis, 1).reshape(x.shape[0], x.shape[channel_axis], -1)
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :, :1], ratio.shape), rtol=1e-5)  # per channel
    drops = np.mean([np.isclose(np.moveaxis(_train_outputs(s)[1][index] / x, channel_axis, 1), 0).reshape(
        x.shape[0], x.shape[channel_axis], -1)[:, :, 0].mean() for s in range(40)])
    assert abs(drops - rate) < 0.06  # the dropped fraction of channels is the rate


def test_gaussian_noise_and_dropout_follow_their_formulas():
    torch.manual_seed(0)
    x = torch.full((200, 6, 8), 2.0)
    graph = load_keras(SEMANTICS / "noise.keras")
    module = gd.compile(graph, inputs=["seq"], outputs=["gnoise", "gdrop"]).train()
    with torch.no_grad():
        noisy, dropped = (t.numpy() for t in module(x))
    noise = noisy - 2.0  # GaussianNoise(0.7): x + N(0, 0.7)
    assert abs(noise.mean()) < 0.02 and abs(noise.std() - 0.7) < 0.02
    factor = dropped / 2.0  # GaussianDropout(0.4): x * N(1, sqrt(0.4 / 0.6))
    assert abs(factor.mean() - 1) < 0.02 and abs(factor.std() - math.sqrt(0.4 / 0.6)) < 0.02
    module.eval()
    with torch.no_grad():
        for value in module(x):
            assert torch.equal(value, x)


def test_alpha_dropout_follows_keras_formula():
    rate = 0.2
    alpha_p = -1.6732632423543772848170429916717 * 1.0507009873554804934193349852946
    a = ((1 - rate) * (1 + rate * alpha_p ** 2)) ** -0.5
    b = -a * alpha_p * rate
    feeds, outs = _train_outputs()
    x, y = feeds[0].numpy(), outs[5]
    kept = np.isclose(y, a * x + b, atol=1e-6)
    dropped = np.isclose(y, a * alpha_p + b, atol=1e-6)
    assert np.all(kept | dropped) and 0.05 < dropped.mean() < 0.4
    torch.manual_seed(1)
    big = torch.randn(400, 6, 8)
    module = gd.compile(load_keras(SEMANTICS / "noise.keras"), inputs=["seq"], outputs=["adrop"]).train()
    with torch.no_grad():
        out = module(big).numpy()
    assert abs(np.isclose(out, a * alpha_p + b, atol=1e-6).mean() - rate) < 0.01
    assert abs(out.mean()) < 0.02 and abs(out.std() - 1) < 0.03  # SELU-preserving: mean 0, variance 1 kept
