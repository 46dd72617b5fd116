"""Source names of ONNX files written by the torch exporters: restoring a state dict or a ``save_pretrained``
folder into the imported graph maps every parameter (transposed where the exporter folded a transpose) and
reproduces the module's outputs; what an exporter folded beyond recovery is reported by name.

The TorchScript exporter runs here; the dynamo exporter's files come from
``fixtures/torch_onnx/make_torch_onnx.py`` (it takes 5-20 s per model), with the state dict they were
exported from beside them."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch
from _torch_models import MODELS, build, plain_outputs, trained
from safetensors.torch import load_file

import graphdnn
from graphdnn.errors import RestoreError

FIXTURES = Path(__file__).parent / "fixtures" / "torch_onnx"


def _outputs(fn, inputs) -> list[torch.Tensor]:
    with torch.no_grad():
        out = fn(*inputs)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _legacy(model: torch.nn.Module, inputs, path: Path) -> None:
    # eval-mode export folds every batch norm into its conv when constant folding is on (see the folded test)
    options = {"do_constant_folding": False} if type(model).__name__ == "ResNet18" else {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, str(path), dynamo=False, opset_version=17, **options)


def _parameters(model: torch.nn.Module) -> set[str]:
    """State-dict keys restored into an inference graph (``num_batches_tracked`` counts nothing there)."""
    return {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}


def _check_restore(graph: graphdnn.Graph, model: torch.nn.Module, inputs) -> graphdnn.RestoreReport:
    """Restore ``trained(model)`` into ``graph``: every parameter matched, the outputs the module's."""
    state = {k: v for k, v in trained(model).items() if k in _parameters(model)}
    report = graphdnn.restore(graph, state, strict=False)
    assert report.unexpected == [] and report.shape_mismatched == [], report.table()
    assert set(report.pairs.values()) == set(state), sorted(set(state) - set(report.pairs.values()))
    # what is left unrestored are the exporter's own constants (shapes, masks, scales), never a parameter
    assert all(graph.get_operation(n).meta.get("onnx_name", n) not in state for n in report.missing)
    plain_outputs(model)
    expected = _outputs(model, inputs)
    got = _outputs(graphdnn.compile(graph).eval(), inputs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-5)
    return report


@pytest.mark.parametrize("name", MODELS)
def test_torchscript_export_names_recovered(name: str, tmp_path: Path) -> None:
    model, inputs = build(name)
    plain_outputs(model)
    _legacy(model, inputs, tmp_path / "model.onnx")
    graph = graphdnn.load(tmp_path / "model.onnx")
    report = _check_restore(graph, model, inputs)
    if name in ("bert", "vit"):  # Linear weights: folded transposes (onnx::MatMul_<n>), mapped back transposed
        assert "transposed from" in report.table()
        assert any(v.startswith("onnx::MatMul_") for v in report.pairs)


@pytest.mark.parametrize("name", MODELS)
def test_dynamo_export_names_recovered(name: str) -> None:
    model, inputs = build(name)
    model.load_state_dict(load_file(FIXTURES / f"{name}.safetensors"))
    graph = graphdnn.load(FIXTURES / f"{name}_dynamo.onnx")
    report = _check_restore(graph, model, inputs)
    renamed = {t: s for t, s in report.pairs.items() if t != s}
    if name in ("bert", "vit", "gpt2"):
        assert any(t.startswith("val_") for t in renamed), renamed  # folded transposes named val_<n>


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_save_pretrained_folder_restores_into_both_exports(name: str, tmp_path: Path) -> None:
    model, inputs = build(name)
    model.load_state_dict(load_file(FIXTURES / f"{name}.safetensors"))
    graphs = {"dynamo": graphdnn.load(FIXTURES / f"{name}_dynamo.onnx")}
    plain_outputs(model)
    _legacy(model, inputs, tmp_path / "legacy.onnx")
    graphs["legacy"] = graphdnn.load(tmp_path / "legacy.onnx")
    trained(model)
    del model.forward  # back to the class's forward for save_pretrained
    folder = tmp_path / "pretrained"
    logging.disable(logging.WARNING)
    try:
        model.save_pretrained(folder, max_shard_size="20KB")
    finally:
        logging.disable(logging.NOTSET)
    assert len(list(folder.glob("*.safetensors"))) > 2 and (folder / "model.safetensors.index.json").is_file()
    plain_outputs(model)
    expected = _outputs(model, inputs)
    for kind, graph in graphs.items():
        report = graphdnn.restore(graph, folder, strict=False)
        assert report.unexpected == [] and report.shape_mismatched == [], (kind, report.table())
        saved = set(report.pairs.values())
        # GPT-2's lm_head.weight is tied to transformer.wte.weight: save_pretrained writes it once
        tied = {"lm_head.weight"} if name == "gpt2" else set()
        assert saved == _parameters(model) - tied, (kind, sorted(_parameters(model) - tied - saved))
        if tied:  # the exporters write a transposed copy of the tied weight: fill it from wte
            copy = graph.meta["weight_sources"]["lm_head.weight"][0]
            assert report.missing == [copy] or copy in report.missing
            graphdnn.restore(graph, {"lm_head.weight": model.state_dict()["lm_head.weight"]}, include=[copy])
        got = _outputs(graphdnn.compile(graph).eval(), inputs)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=0, atol=1e-5)


def test_fresh_bert_torchscript_export_restores_every_parameter(tmp_path: Path) -> None:
    """A fresh model (zero biases, unit LayerNorm weights: equal-valued tensors the exporter deduplicates),
    the case where only 6 of 18 variables matched a checkpoint name."""
    import transformers

    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).eval()
    inputs = (torch.randint(0, 99, (2, 7)),)
    plain_outputs(model)
    _legacy(model, inputs, tmp_path / "bert.onnx")
    _check_restore(graphdnn.load(tmp_path / "bert.onnx"), model, inputs)


def _scoped(op_type: str, inputs: list[str], output: str, scopes: list[str], **attrs) -> onnx.NodeProto:
    node = onnx.helper.make_node(op_type, inputs, [output], name=f"node_{output}", **attrs)
    entry = node.metadata_props.add()
    entry.key, entry.value = "pkg.torch.onnx.name_scopes", repr(scopes)
    return node


def test_shared_initializer_is_split_per_module() -> None:
    """The dynamo exporter reads one zero bias in every Linear of a fresh model and folds the weights'
    transposes into ``val_<n>``: each module gets its own bias variable, each weight its name, transposed."""
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 4)).astype(np.float32)
    inits = [onnx.numpy_helper.from_array(w1.T.copy(), "val_7"), onnx.numpy_helper.from_array(w2.T.copy(), "val_9"),
             onnx.numpy_helper.from_array(np.zeros(4, np.float32), "a.bias")]
    nodes = [_scoped("MatMul", ["x", "val_7"], "m1", ["", "a", "linear"]),
             _scoped("Add", ["m1", "a.bias"], "y1", ["", "a", "linear"]),
             _scoped("MatMul", ["y1", "val_9"], "m2", ["", "b", "linear_1"]),
             _scoped("Add", ["m2", "a.bias"], "y2", ["", "b", "linear_1"])]
    graph_proto = onnx.helper.make_graph(
        nodes, "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
        [onnx.helper.make_tensor_value_info("y2", onnx.TensorProto.FLOAT, [2, 4])], inits)
    model_proto = onnx.helper.make_model(graph_proto, opset_imports=[onnx.helper.make_opsetid("", 17)],
                                         producer_name="pytorch")
    graph = _load_proto(model_proto)
    assert graph.get_operation("b.bias").meta["split_from"] == "a.bias"
    torch.manual_seed(0)
    module = torch.nn.Sequential()
    module.add_module("a", torch.nn.Linear(3, 4))
    module.add_module("b", torch.nn.Linear(4, 4))
    report = graphdnn.restore(graph, module.state_dict())
    assert report.converted["val_7"] == "transposed from a.weight" and report.pairs["b.bias"] == "b.bias"
    x = torch.randn(2, 3)
    torch.testing.assert_close(graphdnn.compile(graph)(x), module(x).detach(), rtol=0, atol=1e-6)


def _load_proto(model_proto: onnx.ModelProto) -> graphdnn.Graph:
    from graphdnn.converters.onnx_import import load_onnx

    return load_onnx(model_proto)


def test_folded_batch_norms_are_reported_by_name(tmp_path: Path) -> None:
    # dynamo's optimizer fuses each batch norm into the conv before it
    model, inputs = build("resnet")
    model.load_state_dict(load_file(FIXTURES / "resnet.safetensors"))
    graph = graphdnn.load(FIXTURES / "resnet_dynamo_fused.onnx")
    state = {k: v for k, v in model.state_dict().items() if k in _parameters(model)}
    report = graphdnn.restore(graph, state, strict=False)
    assert "bn1.running_var" in report.folded and "layer2.0.downsample.1.weight" in report.folded
    assert "conv1.weight" in report.folded and "conv1.weight" in report.missing  # never filled with raw values
    assert "folded" in report.table() and "'conv1.weight'" in report.folded["bn1.weight"]
    with pytest.raises(RestoreError, match="folded"):
        graphdnn.restore(graph, state)
    # the TorchScript exporter fuses them too when constant folding is on: onnx::Conv_<n> weights
    small = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(small, (torch.randn(1, 3, 8, 8),), str(tmp_path / "fused.onnx"), dynamo=False,
                          opset_version=17)
    report = graphdnn.restore(graphdnn.load(tmp_path / "fused.onnx"), small.state_dict(), strict=False)
    assert "0.weight" in report.folded and any(n.startswith("onnx::Conv_") for n in report.folded)


def test_cli_inspect_and_convert_read_a_pretrained_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from graphdnn.cli import main

    model, _ = build("bert")
    logging.disable(logging.WARNING)
    try:
        model.save_pretrained(tmp_path / "bert", max_shard_size="20KB")
    finally:
        logging.disable(logging.NOTSET)
    assert main(["inspect", str(tmp_path / "bert")]) == 0
    out = capsys.readouterr().out
    assert "Hugging Face folder" in out and "encoder.layer.1.output.dense.weight" in out
    graph = graphdnn.from_torch(model, (torch.randint(0, 99, (2, 7)),))
    graphdnn.save(graph, tmp_path / "graph.safetensors")
    assert main(["convert", str(tmp_path / "bert"), str(tmp_path / "out.safetensors"), "--graph",
                 str(tmp_path / "graph.safetensors")]) == 0
    assert f"loaded {len(model.state_dict())} variables" in capsys.readouterr().out
    written = graphdnn.load(tmp_path / "out.safetensors").values
    for key, value in model.state_dict().items():
        torch.testing.assert_close(written[graphdnn.graph_name(key)], value, rtol=0, atol=0)
