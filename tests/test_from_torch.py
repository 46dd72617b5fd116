"""``graphdnn.from_torch``: modules through ``torch.export`` into named graphs that keep every state-dict name,
compute what the module computes, train as it trains, and export to ONNX with those names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _torch_models import MODELS, build
from graphdnn.converters.torch_export import TorchExportError, coverage

import graphdnn
from graphdnn.errors import UnknownOpError
from graphdnn.names import graph_name, state_key


def _leaves(out) -> list[torch.Tensor]:
    return list(torch.utils._pytree.tree_leaves(out))


@pytest.fixture(scope="module", params=MODELS)
def converted(request: pytest.FixtureRequest):
    model, inputs = build(request.param)
    return request.param, model, inputs, graphdnn.from_torch(model, inputs)


def test_state_dict_names_and_module_scopes(converted) -> None:
    name, model, _, graph = converted
    variables = {op.name for op in graph.variables()}
    keys = list(model.state_dict())
    transient = {graph_name(k) for k, _ in model.named_buffers() if k not in keys}  # non-persistent buffers
    assert ({graph_name(k) for k in keys} | transient) - set(graph.aliases) == variables
    for key in keys:  # every key reaches its tensor, tied ones (GPT-2's lm_head) through an alias
        assert graph.get_tensor(graph_name(key)).op.is_variable
    trainable = {op.name for op in graph.trainable_variables()}
    assert trainable == {graph_name(k) for k, _ in model.named_parameters()}  # buffers are state
    compiled = graphdnn.compile(graph)
    assert set(compiled.state_dict()) <= set(keys) | {k for k, _ in model.named_buffers()}
    ops = [op.name for op in graph.operations() if not op.is_variable]
    scope = {"resnet": "layer1.0/conv1/Conv", "vit": "layers.0/attention/q_proj/MatMul",
             "bert": "encoder/layer.0/attention/self/query/MatMul", "gpt2": "transformer/h.1/mlp/c_fc/Gemm"}[name]
    assert any(op.startswith(scope) for op in ops), ops[:40]


def test_outputs_match_the_module(converted) -> None:
    _, model, inputs, graph = converted
    with torch.no_grad():
        expected = _leaves(model(*inputs))
        got = _leaves(graphdnn.compile(graph).eval()(*inputs))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-5)


def test_onnx_export_keeps_the_names_and_runs(converted, tmp_path: Path) -> None:
    _, model, inputs, graph = converted
    graphdnn.export_onnx(graph, str(tmp_path / "m.onnx"))
    proto = onnx.load(str(tmp_path / "m.onnx"))
    initializers = {t.name for t in proto.graph.initializer}
    used = {op.name for op in graph.variables() if graph.consumers(op.name)}
    assert used <= initializers
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    with torch.no_grad():
        expected = _leaves(model(*inputs))
    for got, e in zip(session.run(None, feeds), expected):
        np.testing.assert_allclose(got, e.numpy(), rtol=0, atol=1e-4)


def test_restore_by_state_dict_names(converted) -> None:
    _, model, inputs, graph = converted
    fresh, _ = build(converted[0], seed=5)
    report = graphdnn.restore(graph, fresh.state_dict(), strict=False)
    transient = {graph_name(k) for k, _ in fresh.named_buffers() if k not in fresh.state_dict()}
    assert not report.unexpected and set(report.missing) == transient and not report.shape_mismatched
    with torch.no_grad():
        expected = _leaves(fresh(*inputs))
        got = _leaves(graphdnn.compile(graph).eval()(*inputs))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-5)
    graphdnn.restore(graph, model.state_dict(), strict=False)  # back to the module's weights (shared fixture)


@pytest.mark.parametrize("name", ["resnet", "bert", "gpt2"])
def test_training_matches_the_module(name: str) -> None:
    """Five SGD steps in training mode: same losses (batch-norm batch statistics included), same weights and
    running statistics after."""
    model, inputs = build(name)
    graph = graphdnn.from_torch(model, inputs)
    compiled = graphdnn.compile(graph).train()
    model.train()

    def loss_of(out) -> torch.Tensor:
        return sum((leaf.float() ** 2).mean() for leaf in _leaves(out))

    opt_ref = torch.optim.SGD(model.parameters(), lr=0.05)
    opt = torch.optim.SGD(compiled.parameters(), lr=0.05)
    for _ in range(5):
        for module, optimizer in ((model, opt_ref), (compiled, opt)):
            optimizer.zero_grad()
            loss = loss_of(module(*inputs))
            loss.backward()
            optimizer.step()
            module.last_loss = float(loss.detach())
        assert abs(compiled.last_loss - model.last_loss) <= 1e-5 * max(1.0, abs(model.last_loss))
    state = compiled.state_dict()
    for key, value in model.state_dict().items():
        if key in state:
            torch.testing.assert_close(state[key], value, rtol=1e-3, atol=1e-4)  # float summation order
    if name == "resnet":
        assert "layer1.0.bn1.running_mean" in state


def test_dropout_follows_the_compiled_mode() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.5))
    x = torch.randn(64, 8)
    graph = graphdnn.from_torch(model, (x,))
    compiled = graphdnn.compile(graph)
    assert torch.equal(compiled.eval()(x), model.eval()(x))
    dropped = compiled.train()(x) == 0
    assert 0.3 < dropped.float().mean() < 0.7


def test_dynamic_batch() -> None:
    model, inputs = build("resnet")
    batch = torch.export.Dim("batch", min=1, max=32)
    graph = graphdnn.from_torch(model, inputs, dynamic_shapes={"x": {0: batch}})
    assert graph.placeholders()[0].outputs[0].shape == (None, 3, 16, 16)
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(graphdnn.compile(graph).eval()(x), model(x), rtol=0, atol=1e-5)


def test_dynamic_batch_and_sequence_length() -> None:
    """GPT-2 with both dims dynamic: symbolic sizes (views, causal masks, position ids) become graph ops."""
    model, inputs = build("gpt2")
    dims = {0: torch.export.Dim("batch", min=1, max=16), 1: torch.export.Dim("seq", min=2, max=32)}
    graph = graphdnn.from_torch(model, inputs, dynamic_shapes={"input_ids": dims})
    assert graph.placeholders()[0].outputs[0].shape == (None, None)
    compiled = graphdnn.compile(graph).eval()
    for shape in ((3, 11), (1, 2)):
        x = torch.randint(0, 99, shape)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x).logits, rtol=0, atol=1e-5)

    class Causal(torch.nn.Module):
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)

    graph = graphdnn.from_torch(Causal(), (torch.randn(2, 2, 5, 4),),
                                dynamic_shapes={"q": {2: torch.export.Dim("s", min=2, max=20)}})
    q = torch.randn(2, 2, 9, 4)
    torch.testing.assert_close(graphdnn.compile(graph)(q), Causal()(q), rtol=0, atol=1e-5)


class _DataDependent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # decided by the values: torch.export cannot capture it
            return self.fc(x)
        return -x


def test_data_dependent_control_flow_is_one_clear_error() -> None:
    with pytest.raises(TorchExportError, match=r"_DataDependent.*torch\.cond"):
        graphdnn.from_torch(_DataDependent(), (torch.randn(2, 4),))


class _Unsupported(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.spec = torch.nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.i0(x) + torch.sort(x).values + torch.sort(self.spec(x)).values


def test_unsupported_aten_ops_listed_at_once_with_module_paths() -> None:
    with pytest.raises(UnknownOpError) as info:
        graphdnn.from_torch(_Unsupported(), (torch.randn(2, 4),))
    message = str(info.value)
    assert "aten.special_i0" in message and "aten.sort" in message and "2 ATen op(s)" in message


def test_coverage_table() -> None:
    table = dict(coverage())
    for family in ("aten.linear", "aten.conv2d", "aten.batch_norm", "aten.scaled_dot_product_attention",
                   "aten.layer_norm", "aten.embedding", "aten.index", "operator.getitem"):
        assert family in table
    assert state_key(graph_name("encoder.layer.0.attention.self.query.weight")) == \
        "encoder.layer.0.attention.self.query.weight"
    from graphdnn.converters import coverage_tables

    text = coverage_tables.README.read_text(encoding="utf-8")
    assert coverage_tables.rewrite(text, ["torch-aten"]) == text, "run python benchmarks/coverage_tables.py"
