"""An imported model's declared inputs and outputs are what ``compile``, ``export_onnx``, ``convert`` and
``run`` use by default, in the declared order, through save/load too.

The reference is ONNX Runtime running the original file: its outputs are the model's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import run_ort
from onnx import TensorProto, helper

import graphdnn as gd
from graphdnn.cli import main
from graphdnn.compiler import default_outputs

# Y = Relu(X) is declared *and* read by Z = Sigmoid(Y) (an output another node reads, like BERT's
# last_hidden_state feeding the pooler); U = Neg(X) is read by nothing and is not an output; X itself is
# an output. Declared order: Z, Y, X; inputs X and an unused S, in that order.
DECLARED = ["Z", "Y", "X"]


def _model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3])
    s = helper.make_tensor_value_info("S", TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node("Relu", ["X"], ["Y"], name="relu"),
             helper.make_node("Sigmoid", ["Y"], ["Z"], name="sigmoid"),
             helper.make_node("Neg", ["X"], ["U"], name="unused")]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in DECLARED]
    graph = helper.make_graph(nodes, "declared", [x, s], outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"X": rng.standard_normal((2, 3)).astype(np.float32), "S": rng.standard_normal((2, 3)).astype(np.float32)}


@pytest.fixture
def onnx_file(tmp_path):
    path = tmp_path / "a.onnx"
    onnx.save(_model(), path)
    return path


def _check_compiled(graph: gd.Graph, expected: list[np.ndarray]) -> None:
    module = gd.compile(graph)
    assert module.input_names == ["X:0", "S:0"]
    assert module.output_names == [graph.get_tensor(n).name for n in DECLARED]
    feeds = _feeds()
    out = module(torch.from_numpy(feeds["X"]), torch.from_numpy(feeds["S"]))
    assert isinstance(out, tuple) and len(out) == 3
    for got, want in zip(out, expected):
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-6, atol=1e-6)
    assert torch.equal(out[2], torch.from_numpy(feeds["X"]))  # the output that is an input: X itself


def test_compile_returns_the_declared_outputs_in_order(onnx_file):
    expected = run_ort(str(onnx_file), _feeds())
    graph = gd.load(onnx_file)
    assert graph.signature == {"inputs": ["X:0", "S:0"], "outputs": ["sigmoid:0", "relu:0", "X:0"]}
    _check_compiled(graph, expected)
    # without the signature: the old rule (terminal ops), which drops Y and X and adds U
    graph.signature = None
    assert default_outputs(graph) == ["sigmoid:0", "unused:0"]


def test_signature_survives_save_and_load(onnx_file, tmp_path):
    expected = run_ort(str(onnx_file), _feeds())
    gd.save(gd.load(onnx_file), tmp_path / "m.safetensors")
    again = gd.load(tmp_path / "m.safetensors")
    assert again.signature is not None
    _check_compiled(again, expected)


def test_export_and_convert_write_the_declared_signature(onnx_file, tmp_path):
    feeds = _feeds()
    expected = run_ort(str(onnx_file), feeds)
    exported = gd.export_onnx(gd.load(onnx_file), None)
    assert [o.name for o in exported.graph.output] == DECLARED
    assert [i.name for i in exported.graph.input] == ["X", "S"]
    out = tmp_path / "b.onnx"
    assert main(["convert", str(onnx_file), str(out)]) == 0
    converted = onnx.load(out)
    assert [o.name for o in converted.graph.output] == DECLARED
    assert [i.name for i in converted.graph.input] == ["X", "S"]
    for got, want in zip(run_ort(converted, feeds), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


FOREIGN = Path(__file__).resolve().parent / "fixtures" / "foreign"


def test_keras_model_compiles_to_its_declared_input_and_output(tmp_path):
    expected = np.load(FOREIGN / "keras" / "mlp_expected.npz")  # written by Keras itself
    graph = gd.load(FOREIGN / "keras" / "mlp.keras")
    assert graph.signature["outputs"] == graph.meta["keras_import"]["outputs"] == ["outputs/Softmax:0"]
    assert [graph.get_operation(r).name for r in graph.signature["inputs"]] == graph.meta["keras_import"]["inputs"]
    gd.save(graph, tmp_path / "mlp.safetensors")
    for g in (graph, gd.load(tmp_path / "mlp.safetensors")):
        out = gd.compile(g).eval()(torch.from_numpy(expected["input"]))
        np.testing.assert_allclose(out.detach().numpy(), expected["output"], rtol=1e-5, atol=1e-5)


def test_tf1_meta_graph_declares_its_placeholders_and_terminal_tensors():
    graph = gd.load(FOREIGN / "tf1_dnn" / "my_model_final.ckpt.meta")
    assert graph.signature == {"inputs": ["X:0", "y:0"], "outputs": ["loss/loss:0", "eval/accuracy:0"]}
    module = gd.compile(graph)
    assert module.input_names == ["X:0", "y:0"] and module.output_names == ["loss/loss:0", "eval/accuracy:0"]


def test_renaming_keeps_the_signature_and_adding_ops_drops_it(onnx_file):
    graph = gd.load(onnx_file)
    graph.rename_ops({"relu": "act/relu"})
    assert graph.signature["outputs"] == ["sigmoid:0", "act/relu:0", "X:0"]
    gd.compile(graph)  # still consistent
    graph.add_op("Exp", ["sigmoid:0"], name="extra", scoped=False)
    assert graph.signature is None  # an edited graph: its terminal tensors again
    assert default_outputs(graph) == ["unused:0", "extra:0"]


def test_run_command_fetches_the_declared_outputs(onnx_file, tmp_path, capsys):
    feeds = _feeds()
    np.save(tmp_path / "x.npy", feeds["X"])
    np.save(tmp_path / "s.npy", feeds["S"])
    capsys.readouterr()
    code = main(["run", str(onnx_file), "--engine", "both", "--input", f"X={tmp_path / 'x.npy'}",
                 "--input", f"S={tmp_path / 's.npy'}", "--atol", "1e-6"])
    out = capsys.readouterr().out
    assert code == 0, out
    fetched = [line.split(":")[0] for line in out.splitlines() if not line.startswith((" ", "largest"))]
    assert fetched == DECLARED
    # the compiled engine alone fetches the same declared outputs, in order
    capsys.readouterr()
    assert main(["run", str(onnx_file), "--engine", "torch", "--input", f"X={tmp_path / 'x.npy'}",
                 "--input", f"S={tmp_path / 's.npy'}"]) == 0
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == DECLARED


def test_a_signature_naming_a_missing_tensor_is_refused(onnx_file):
    import json

    doc = json.loads(gd.load(onnx_file).to_json())
    assert doc["meta"]["signature"]["outputs"] == ["sigmoid:0", "relu:0", "X:0"]
    doc["meta"]["signature"]["outputs"][0] = "nowhere:0"
    with pytest.raises(gd.FileFormatError, match="signature names 'nowhere:0'"):
        gd.Graph.from_json(json.dumps(doc))
    doc["meta"]["signature"] = {"outputs": "sigmoid:0"}
    with pytest.raises(gd.FileFormatError, match="signature must be"):
        gd.Graph.from_json(json.dumps(doc))
