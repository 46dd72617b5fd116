"""TF2 SavedModels imported without TensorFlow, against outputs TensorFlow computed (fixtures written by
``tests/fixtures/make_foreign.py``: tf.Module, Keras 3 ``model.export``, tf_keras ``model.save``)."""

from __future__ import annotations

import shutil
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from graphdnn.converters.onnx_export import export_onnx
from graphdnn.converters.saved_model import load_saved_model, signature_names
from graphdnn.converters.tf_protos import message_class

import graphdnn as gd
from graphdnn.cli import main as cli
from graphdnn.errors import FileFormatError, GraphDNNError, UnknownOpError

FOREIGN = Path(__file__).parent / "fixtures" / "foreign"
IMPORTABLE = ["module", "nested", "while", "ops", "tf_keras_mlp", "keras_cnn", "keras_lstm"]


def _folder(name: str) -> Path:
    return FOREIGN / f"saved_model_{name}"


@cache
def _expected(name: str) -> dict[str, np.ndarray]:
    with np.load(_folder(name) / "expected.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@cache
def _graph(name: str) -> gd.Graph:
    return gd.load(_folder(name))


def _keys(z: dict[str, np.ndarray], kind: str) -> list[str]:
    return sorted(k.split(":", 1)[1] for k in z if k.startswith(kind + ":"))


def _feed(z: dict[str, np.ndarray]) -> list[torch.Tensor]:
    return [torch.as_tensor(z[f"input:{k}"]) for k in _keys(z, "input")]


def _outputs(module: torch.nn.Module, feed: list[torch.Tensor]) -> list[torch.Tensor]:
    out = module(*feed)
    return list(out) if isinstance(out, (tuple, list)) else [out]


@pytest.mark.parametrize("name", IMPORTABLE)
def test_outputs_match_tensorflow_in_sorted_key_order(name):
    z, graph = _expected(name), _graph(name)
    model = gd.compile(graph).eval()
    got = _outputs(model, _feed(z))
    keys = _keys(z, "output")
    assert graph.meta["saved_model"]["outputs"] == keys and len(got) == len(keys)
    for key, value in zip(keys, got):
        want = z[f"output:{key}"]
        assert tuple(value.shape) == want.shape, key
        np.testing.assert_allclose(value.detach().numpy(), want, atol=1e-4, err_msg=key)
    if "predict" in z:  # the framework's own predict agrees with the served signature
        np.testing.assert_allclose(got[0].detach().numpy(), z["predict"], atol=1e-4)


@pytest.mark.parametrize("name", IMPORTABLE)
def test_inputs_and_outputs_are_found_by_key(name):
    z, graph = _expected(name), _graph(name)
    inputs, outputs = _keys(z, "input"), _keys(z, "output")
    assert graph.signature["inputs"] == [graph.get_tensor(k).name for k in inputs]
    assert [op.name for op in graph.placeholders()] == sorted(inputs) or set(
        op.name for op in graph.placeholders()) == set(inputs)
    assert graph.signature["outputs"] == [graph.get_tensor(k).name for k in outputs]
    fetch = gd.compile(graph, inputs=inputs, outputs=outputs[-1:]).eval()
    np.testing.assert_allclose(_outputs(fetch, _feed(z))[0].detach().numpy(), z[f"output:{outputs[-1]}"], atol=1e-4)


@pytest.mark.parametrize("name", IMPORTABLE)
def test_variables_have_tf_names_values_and_trainable_flags(name):
    z, graph = _expected(name), _graph(name)
    expected = {k.split(":", 1)[1]: v for k, v in z.items() if k.startswith("variable:")}
    got = {op.name: op for op in graph.variables()}
    assert set(got) == set(expected)
    for var_name, value in expected.items():
        np.testing.assert_array_equal(graph.values[var_name].detach().numpy(), value, err_msg=var_name)
    trainable = {v.name for v in graph.trainable_variables()}
    assert trainable == {s.decode() for s in z["trainable"]}


def test_object_paths_are_aliases_of_the_variables():
    module, keras_cnn, tf_keras = _graph("module"), _graph("keras_cnn"), _graph("tf_keras_mlp")
    assert module.get_tensor("w").name == module.get_tensor("weights").name
    assert module.get_tensor("scale").op.name == "scale"
    assert keras_cnn.get_tensor("variables/0").op.name == "conv1/kernel"
    assert tf_keras.get_tensor("layer_with_weights-0/kernel").op.name == "hidden1/kernel"
    nested = _graph("nested")
    assert nested.meta["saved_model"]["variables"]["encoder/dense/kernel"] == "encoder/dense/kernel"


def test_inlined_ops_keep_the_names_tf_gave_them():
    names = {op.name for op in _graph("tf_keras_mlp").operations()}
    assert {"mlp/hidden1/MatMul", "mlp/hidden2/Elu", "mlp/outputs/Softmax", "mlp/bn1/batchnorm/add_1"} <= names
    assert not any("PartitionedCall" in n for n in names)
    assert "cnn_1/conv1_1/convolution" in {op.name for op in _graph("keras_cnn").operations()}


def test_another_signature_by_name():
    z = _expected("nested")
    assert signature_names(_folder("nested")) == ["encode", "serving_default"]
    graph = load_saved_model(_folder("nested"), signature="encode")
    model = gd.compile(graph).eval()
    (code,) = _outputs(model, [torch.as_tensor(z["encode:input:x"])])
    np.testing.assert_allclose(code.detach().numpy(), z["encode:output:code"], atol=1e-5)
    assert {v.name for v in graph.variables()} == {f"encoder/{a}/{b}" for a in ("dense", "gate")
                                                   for b in ("kernel", "bias")}
    with pytest.raises(FileFormatError, match="encode.*serving_default"):
        load_saved_model(_folder("nested"), signature="predict")


def test_while_loop_and_cond_become_loop_and_if():
    graph = _graph("while")
    types = {op.type for op in graph.operations()}
    assert {"Loop", "If"} <= types
    z = _expected("while")
    model = gd.compile(graph).eval()
    for n in (0, 1, 7):  # the trip count is data: zero iterations too
        x = torch.as_tensor(z["input:x"])
        h = x.clone()
        w = graph.values["w"].detach()
        for _ in range(n):
            h = torch.tanh(h @ w + x)
        y = h * 2.0 if h.sum() > 0 else h - 1.0
        got_h, got_y = _outputs(model, [torch.tensor(n, dtype=torch.int32), x])
        torch.testing.assert_close(got_h, h, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_y, y, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", IMPORTABLE)
def test_gradients_match_tensorflow_for_every_trainable_variable(name):
    z, graph = _expected(name), gd.load(_folder(name))  # a fresh graph: its values receive gradients
    model = gd.compile(graph).eval()  # the serving signature is TF's inference mode
    params = {v.name: graph.values[v.name] for v in graph.trainable_variables()}
    assert set(params) == {k.split(":", 1)[1] for k in z if k.startswith("grad:")}
    for p in params.values():
        p.grad = None
    loss = sum((o ** 2).sum() for o in _outputs(model, _feed(z)) if o.is_floating_point())
    loss.backward()
    for var_name, p in params.items():
        assert p.grad is not None, var_name
        np.testing.assert_allclose(p.grad.numpy(), z[f"grad:{var_name}"], rtol=1e-4, atol=1e-4, err_msg=var_name)


@pytest.mark.parametrize("name", IMPORTABLE)
def test_onnx_export_runs_in_onnxruntime(name, tmp_path):
    z, graph = _expected(name), _graph(name)
    path = tmp_path / "model.onnx"
    export_onnx(gd.compile(graph).eval(), path)
    options = ort.SessionOptions()  # ORT's extended fusions mis-wire the tanh GELU pattern (a dangling input)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert [i.name.removesuffix(":0") for i in session.get_inputs()] == _keys(z, "input")
    feed = {i.name: z[f"input:{i.name.removesuffix(':0')}"] for i in session.get_inputs()}
    got = session.run(None, feed)
    for key, value in zip(_keys(z, "output"), got):
        np.testing.assert_allclose(value, z[f"output:{key}"], atol=1e-4, err_msg=key)


def test_unsupported_content_is_listed_by_function_and_op():
    with pytest.raises(UnknownOpError) as err:
        gd.load(_folder("lookup"))
    text = str(err.value)
    assert "LookupTableFindV2" in text and "hash_table (HashTableV2)" in text and "__inference___call__" in text


def test_damaged_saved_model_raises_a_graphdnn_error(tmp_path):
    for cut in (7, 200, 3000):
        folder = tmp_path / f"cut{cut}"
        shutil.copytree(_folder("module"), folder)
        data = (folder / "saved_model.pb").read_bytes()
        (folder / "saved_model.pb").write_bytes(data[: len(data) - cut])
        with pytest.raises(GraphDNNError, match="saved_model"):
            gd.load(folder)
    folder = tmp_path / "novalues"
    shutil.copytree(_folder("module"), folder)
    shutil.rmtree(folder / "variables")
    graph = gd.load(folder)
    assert graph.meta["saved_model"]["unbound_variables"] == ["weights", "bias", "scale"] or set(
        graph.meta["saved_model"]["unbound_variables"]) == {"weights", "bias", "scale"}


def test_cli_inspects_and_converts_a_saved_model_folder(tmp_path, capsys):
    folder = _folder("tf_keras_mlp")
    assert cli(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "TensorFlow SavedModel" in out and "403 parameters" in out
    weights = tmp_path / "mlp.safetensors"
    assert cli(["convert", str(folder), str(weights)]) == 0
    reloaded = gd.load(weights)
    assert {v.name for v in reloaded.variables()} == {v.name for v in _graph("tf_keras_mlp").variables()}
    onnx_path = tmp_path / "mlp.onnx"
    assert cli(["convert", str(folder), str(onnx_path)]) == 0
    z = _expected("tf_keras_mlp")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: z["input:features"]})
    np.testing.assert_allclose(got, z["output:outputs"], atol=1e-4)
    nested = _expected("nested")
    for key in ("a", "b"):
        np.save(tmp_path / f"{key}.npy", nested[f"input:{key}"])
    args = ["run", str(_folder("nested")), "--input", f"a={tmp_path / 'a.npy'}", "--input", f"b={tmp_path / 'b.npy'}",
            "--output", "score", "--out-dir", str(tmp_path / "out")]
    assert cli(args) == 0
    np.testing.assert_allclose(np.load(tmp_path / "out" / "score.npy"), nested["output:score"], atol=1e-5)


def _edited(tmp_path: Path, edit) -> Path:
    """A copy of the ``module`` fixture whose ``saved_model.pb`` ``edit(SavedModel message)`` changed."""
    folder = tmp_path / "edited"
    shutil.copytree(_folder("module"), folder)
    message = message_class("SavedModel").FromString((folder / "saved_model.pb").read_bytes())
    edit(message)
    (folder / "saved_model.pb").write_bytes(message.SerializeToString())
    return folder


def _function(message, name: str):
    return next(f for f in message.meta_graphs[0].graph_def.library.function if f.signature.name == name)


def test_custom_ops_are_listed_with_their_function(tmp_path):
    def edit(message):
        for node in _function(message, "__inference___call___32").node_def:
            if node.op in ("Relu", "MatMul"):
                node.op = "MyCustom" + node.op

    with pytest.raises(UnknownOpError) as err:
        gd.load(_edited(tmp_path, edit))
    text = str(err.value)
    assert "__inference___call___32: MatMul (MyCustomMatMul)" in text
    assert "__inference___call___32: Relu (MyCustomRelu)" in text


@pytest.mark.parametrize("damage", ["object id", "missing function", "arity", "dangling input"])
def test_inconsistent_saved_models_raise_file_format_errors(tmp_path, damage):
    def edit(message):
        meta = message.meta_graphs[0]
        if damage == "object id":
            meta.object_graph_def.concrete_functions["__inference___call___32"].bound_inputs.append(99)
        elif damage == "missing function":
            _function(message, "__inference___call___32").signature.name = "renamed"
        elif damage == "arity":
            del _function(message, "__inference___call___32").signature.input_arg[-1]
        else:
            _function(message, "__inference___call___32").node_def[1].input[0] = "nowhere:out:0"

    with pytest.raises(FileFormatError, match="saved_model.pb"):
        gd.load(_edited(tmp_path, edit))


def test_random_byte_damage_raises_only_graphdnn_errors(tmp_path):
    data = (_folder("module") / "saved_model.pb").read_bytes()
    rng = np.random.default_rng(0)
    folder = tmp_path / "damaged"
    shutil.copytree(_folder("module"), folder)
    for _ in range(40):
        damaged = bytearray(data)
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 6))):
            damaged[pos] = int(rng.integers(0, 256))
        (folder / "saved_model.pb").write_bytes(bytes(damaged))
        try:
            graph = gd.load(folder)
        except GraphDNNError:
            continue
        assert graph.signature is not None  # damage that leaves a loadable model is fine
