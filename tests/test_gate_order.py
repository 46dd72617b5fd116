"""LSTM/GRU weights imported from ONNX held in torch's gate order (``graphdnn.gate_order``): outputs against the
original ``torch.nn`` module and ONNX Runtime, gradients against the module's parameters mapped by torch's
documented gate order, re-export, checkpoints, restore by name, and the configurations left in ONNX's order."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from graphdnn.converters.named_tensors import load_weights
from graphdnn.converters.onnx_export import build_model
from graphdnn.converters.onnx_import import load_onnx
from helpers import run_ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import graphdnn as gd
from graphdnn.errors import GraphDNNError, GraphError, RestoreError
from graphdnn.gate_order import permute_gates, to_onnx_gate_order, to_torch_gate_order

SIZE, HIDDEN, GRU_HIDDEN, SEQ, BATCH = 5, 6, 4, 7, 3


class _Recurrent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(SIZE, HIDDEN, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = torch.nn.GRU(2 * HIDDEN, GRU_HIDDEN, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_, _ = self.lstm(x)
        return self.gru(h_)[0]


@pytest.fixture(scope="module")
def exported():
    torch.manual_seed(0)
    module = _Recurrent().eval()
    x = torch.randn(BATCH, SEQ, SIZE)
    buf = io.BytesIO()
    torch.onnx.export(module, (x,), buf, dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}})
    return module, x, onnx.load_from_string(buf.getvalue())


def _layers(graph):
    """``[(op, direction count, [(weight_ih, weight_hh, bias_ih, bias_hh) torch names per direction]), ...]``."""
    ops = [op for op in graph.operations() if op.type in ("LSTM", "GRU")]
    assert [op.type for op in ops] == ["LSTM", "LSTM", "GRU"]
    out = []
    for k, op in enumerate(ops):
        prefix, layer, dirs = ("lstm", k, 2) if op.type == "LSTM" else ("gru", 0, 1)
        names = [tuple(f"{prefix}.{p}_l{layer}{'_reverse' if d else ''}" for p in
                       ("weight_ih", "weight_hh", "bias_ih", "bias_hh")) for d in range(dirs)]
        out.append((op, names))
    return out


def _torch_to_onnx_rows(t: torch.Tensor, kind: str) -> torch.Tensor:
    """torch's documented gate blocks (LSTM i, f, g, o; GRU r, z, n) regrouped in ONNX's (i, o, f, c; z, r, h)."""
    if kind == "LSTM":
        i, f, g, o = t.chunk(4)
        return torch.cat([i, o, f, g])
    r, z, n = t.chunk(3)
    return torch.cat([z, r, n])


def _same(name: str) -> str:
    return name


def _ort(model, x):
    return run_ort(model, {"x": x.numpy()})[0]


def test_import_holds_torch_order_and_matches_module_and_onnxruntime(exported):
    module, x, model = exported
    graph = load_onnx(model)
    assert graph.meta["import_summary"]["recurrent_gate_order"] == {"torch": 3}
    assert "3 of 3 LSTM/GRU ops" in graph.meta["import_summary"]["text"]
    params = dict(module.named_parameters())
    for op, names in _layers(graph):
        assert op.attrs["gate_order"] == "torch"
        w, r, b = (graph.get_operation(ref) for ref in op.inputs[1:4])
        for var in (w, r, b):
            assert var.attrs["layout"] == f"gates:torch:{op.type}" and var.attrs["trainable"]
        for d, (wi, wh, bi, bh) in enumerate(names):  # held exactly as the module's own parameters
            torch.testing.assert_close(graph.values[w.name][d], params[wi].detach(), rtol=0, atol=0)
            torch.testing.assert_close(graph.values[r.name][d], params[wh].detach(), rtol=0, atol=0)
            torch.testing.assert_close(graph.values[b.name][d], torch.cat([params[bi], params[bh]]).detach(),
                                       rtol=0, atol=0)
    compiled = gd.compile(graph)
    with torch.no_grad():
        got = compiled(x)
        np.testing.assert_allclose(got.numpy(), module(x).numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got.numpy(), _ort(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gate_order", ["torch", "onnx"])
def test_one_training_step_matches_the_module(exported, gate_order):
    module, x, model = exported
    graph = load_onnx(model, gate_order=gate_order)
    compiled = gd.compile(graph).train()
    original = _Recurrent()
    original.load_state_dict(module.state_dict())
    original.train()
    target = torch.linspace(-1, 1, BATCH * SEQ * GRU_HIDDEN).reshape(BATCH, SEQ, GRU_HIDDEN)
    ((original(x) - target) ** 2).mean().backward()
    got = compiled(x)
    ((got.reshape(BATCH, SEQ, GRU_HIDDEN) - target) ** 2).mean().backward()
    params = dict(original.named_parameters())
    for op, names in _layers(graph):
        grads = [compiled.variable(graph.get_operation(ref).name).grad for ref in op.inputs[1:4]]
        for d, (wi, wh, bi, bh) in enumerate(names):
            parts = [params[n].grad for n in (wi, wh, bi, bh)]
            if gate_order == "onnx":  # ONNX's row order, built from torch's documented gate order
                parts = [_torch_to_onnx_rows(t, op.type) for t in parts]
            expected = [parts[0], parts[1], torch.cat(parts[2:])]
            for g, e in zip(grads, expected):
                torch.testing.assert_close(g[d], e, rtol=1e-5, atol=1e-6)
    if gate_order == "torch":  # the held gradient, taken to ONNX's order, is the hand-mapped one
        op, names = _layers(graph)[0]
        grad = compiled.variable(graph.get_operation(op.inputs[1]).name).grad
        torch.testing.assert_close(permute_gates(grad, "LSTM", to="onnx")[1],
                                   _torch_to_onnx_rows(params[names[1][0]].grad, "LSTM"), rtol=1e-5, atol=1e-6)


def test_onnx_gate_order_keeps_the_file_values(exported):
    _, x, model = exported
    graph = load_onnx(model, gate_order="onnx")
    assert graph.meta["import_summary"]["recurrent_gate_order"] == {"onnx": 3}
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for op, _ in _layers(graph):
        assert "gate_order" not in op.attrs
        for ref in op.inputs[1:4]:
            name = graph.get_operation(ref).name
            assert graph.get_operation(name).attrs["layout"] is None
            assert np.array_equal(graph.values[name].detach().numpy(), inits[name])
    with torch.no_grad():
        np.testing.assert_allclose(gd.compile(graph)(x).numpy(), _ort(model, x), rtol=1e-5, atol=1e-5)
    converted = to_torch_gate_order(graph)
    assert len(converted) == 3 and to_onnx_gate_order(graph) == converted
    for name, value in inits.items():  # back and forth: bit for bit
        if name in graph.values:
            assert np.array_equal(graph.values[name].detach().numpy(), value)


def test_reexport_is_standard_onnx_with_the_same_names_and_outputs(exported, tmp_path):
    _, x, model = exported
    graph = load_onnx(model)
    again = build_model(graph)
    original = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    written = {t.name: numpy_helper.to_array(t) for t in again.graph.initializer}
    assert set(written) == set(original)
    for name, value in written.items():
        assert np.array_equal(value, original[name]), name
    for node in again.graph.node:
        if node.op_type in ("LSTM", "GRU"):
            assert "gate_order" not in {a.name for a in node.attribute}
    np.testing.assert_allclose(_ort(again, x), _ort(model, x), rtol=1e-6, atol=1e-6)
    path = tmp_path / "again.onnx"
    gd.export_onnx(graph, path)
    np.testing.assert_allclose(_ort(str(path), x), _ort(model, x), rtol=1e-6, atol=1e-6)


def test_checkpoint_round_trip_and_restore(exported, tmp_path):
    _, x, model = exported
    graph = load_onnx(model)
    ckpt = tmp_path / "rnn.safetensors"
    gd.save(graph, ckpt)
    loaded = gd.load(ckpt)
    for op, _ in _layers(loaded):
        assert op.attrs["gate_order"] == "torch"
    for name, value in graph.values.items():
        assert loaded.get_operation(name).attrs["layout"] == graph.get_operation(name).attrs["layout"]
        assert torch.equal(loaded.values[name], value)
    with torch.no_grad():
        np.testing.assert_allclose(gd.compile(loaded)(x).numpy(), _ort(model, x), rtol=1e-5, atol=1e-5)
    fresh = load_onnx(model)
    held = {n: v.detach().clone() for n, v in fresh.values.items()}
    with torch.no_grad():
        for v in fresh.values.values():
            v.zero_()
    # graphdnn sources hold the variables by their own names, the exporter's artefact names (onnx::LSTM_<n>)
    # included, in the same order: copied as they are
    for source in (ckpt, loaded, gd.compile(loaded)):
        report = gd.restore(fresh, source)
        assert not any("gate" in note for note in report.converted.values())
        for name, value in held.items():
            assert torch.equal(fresh.values[name], value), (source, name)
    load_weights(fresh, ckpt)
    for name, value in held.items():
        assert torch.equal(fresh.values[name], value)


def test_restore_from_onnx_order_sources_permutes(exported, tmp_path):
    _, x, model = exported
    path = tmp_path / "rnn.onnx"
    onnx.save(model, path)
    graph = load_onnx(model)
    held = {n: v.detach().clone() for n, v in graph.values.items()}
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    onnx_order = load_onnx(model, gate_order="onnx")
    for source in (path, {n: inits[n] for n in held}, onnx_order):
        with torch.no_grad():
            for v in graph.values.values():
                v.zero_()
        # raw arrays under the exporter's artefact names are a foreign source, whose folded-looking names a
        # graph's record leaves out: an identity rename takes them by name; graphdnn sources need none
        report = gd.restore(graph, source, rename=_same if isinstance(source, dict) else None)
        for name, value in held.items():
            assert torch.equal(graph.values[name], value), (source, name)
        if not isinstance(source, type(path)):  # the .onnx file imports in torch's order itself
            assert sum("gate rows" in note for note in report.converted.values()) == 9
    with torch.no_grad():
        np.testing.assert_allclose(gd.compile(graph)(x).numpy(), _ort(model, x), rtol=1e-5, atol=1e-5)


def test_restore_from_torch_order_into_onnx_order(exported, tmp_path):
    _, x, model = exported
    target = load_onnx(model, gate_order="onnx")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    source = load_onnx(model)
    ckpt = tmp_path / "torch_order.safetensors"
    gd.save(source, ckpt)
    for src in (source, ckpt):
        with torch.no_grad():
            for v in target.values.values():
                v.zero_()
        report = gd.restore(target, src)
        assert sum("to ONNX's" in note for note in report.converted.values()) == 9
        for name, value in target.values.items():
            assert np.array_equal(value.detach().numpy(), inits[name]), (src, name)
    with torch.no_grad():
        np.testing.assert_allclose(gd.compile(target)(x).numpy(), _ort(model, x), rtol=1e-5, atol=1e-5)


def test_graphdnn_file_without_its_graph_cannot_tell_the_order(exported, tmp_path):
    from safetensors.torch import save_file

    _, _, model = exported
    graph = load_onnx(model)
    path = tmp_path / "bare.safetensors"
    save_file({n: v.detach().contiguous() for n, v in graph.values.items()}, str(path),
              metadata={"graphdnn.version": "1"})
    with pytest.raises(RestoreError, match="gate order"):
        gd.restore(graph, path, rename=_same)


def _single(op, attrs, *, lens=False, seq=4, batch=3, size=5, hidden=3, seed=0):
    gates = 4 if op == "LSTM" else 3
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    rng = np.random.default_rng(seed)
    inits = {"W": rng.standard_normal((dirs, gates * hidden, size), dtype=np.float32),
             "R": rng.standard_normal((dirs, gates * hidden, hidden), dtype=np.float32),
             "B": rng.standard_normal((dirs, 2 * gates * hidden), dtype=np.float32)}
    feeds = {"X": rng.standard_normal((seq, batch, size), dtype=np.float32)}
    inputs = ["X", "W", "R", "B"]
    if lens:
        feeds["L"] = np.array([seq, 1, seq - 1][:batch], dtype=np.int32)
        inputs.append("L")
    node = h.make_node(op, inputs, ["Y"], name=op, hidden_size=hidden, **attrs)
    vis = [h.make_tensor_value_info("X", T.FLOAT, [seq, batch, size])]
    if lens:
        vis.append(h.make_tensor_value_info("L", T.INT32, [batch]))
    graph = h.make_graph([node], "m", vis, [h.make_tensor_value_info("Y", T.FLOAT, None)],
                         [numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 14)])
    model.ir_version = 8
    return model, feeds


@pytest.mark.parametrize(("op", "attrs", "lens"), [
    ("LSTM", {"clip": 0.7, "direction": "bidirectional"}, False),
    ("LSTM", {}, True),
    ("GRU", {"linear_before_reset": 0}, False),
    ("GRU", {"linear_before_reset": 1, "direction": "reverse"}, True),
])
def test_time_loop_configurations_stay_onnx_order_and_run_in_torch_order(op, attrs, lens):
    model, feeds = _single(op, attrs, lens=lens)
    expected = run_ort(model, feeds)[0]
    graph = load_onnx(model)
    assert "gate_order" not in graph.get_operation(op).attrs  # the time loop gains nothing: left as it is
    assert graph.get_operation("W").attrs["layout"] is None
    # held in torch's order by hand, the time loop computes the same
    with torch.no_grad():
        for name in ("W", "R", "B"):
            graph.values[name].copy_(permute_gates(graph.values[name], op, to="torch"))
    graph.get_operation(op).attrs["gate_order"] = "torch"
    compiled = gd.compile(graph)
    got = compiled(*[torch.from_numpy(feeds[n.split(":")[0]]) for n in compiled.input_names])
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    got.sum().backward()
    assert all(compiled.variable(n).grad.abs().sum() > 0 for n in ("W", "R", "B"))


def test_weights_read_by_other_ops_stay_onnx_order():
    model, feeds = _single("LSTM", {})
    model.graph.node.append(h.make_node("ReduceSum", ["W"], ["S"], keepdims=0))
    model.graph.output.append(h.make_tensor_value_info("S", T.FLOAT, None))
    graph = load_onnx(model)
    assert "gate_order" not in graph.get_operation("LSTM").attrs
    assert graph.get_operation("W").attrs["layout"] is None
    model2, _ = _single("LSTM", {})  # the same W read by a converted LSTM and an unconvertible one
    node = h.make_node("LSTM", ["X", "W", "R", "B"], ["Y2"], hidden_size=3, clip=0.5)
    model2.graph.node.append(node)
    model2.graph.output.append(h.make_tensor_value_info("Y2", T.FLOAT, None))
    assert to_torch_gate_order(load_onnx(model2, gate_order="onnx")) == []


def test_bad_gate_order_settings_are_errors():
    model, _ = _single("GRU", {"linear_before_reset": 1})
    with pytest.raises(GraphDNNError, match="gate_order"):
        load_onnx(model, gate_order="keras")
    graph = load_onnx(model, gate_order="onnx")
    graph.get_operation("GRU").attrs["gate_order"] = "torch"  # unmarked weights: ONNX cannot say it
    with pytest.raises(GraphError, match="not a variable marked"):
        build_model(graph)
    with pytest.raises(GraphError, match="not a variable marked"):
        to_onnx_gate_order(graph)
    with pytest.raises(GraphError, match="gate blocks"):
        permute_gates(torch.zeros(1, 10, 2), "LSTM", to="torch")
