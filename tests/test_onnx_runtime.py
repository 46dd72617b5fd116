"""ONNX Runtime helper, and parity of every registered op: ONNX Runtime vs the compiled torch module."""

from __future__ import annotations

import warnings
from collections import defaultdict

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from graphdnn.converters.onnx_export import build_model
from graphdnn.converters.onnx_import import load_onnx
from graphdnn.converters.onnx_node_cases import compare_outputs, iter_node_cases, to_torch

import graphdnn as gd
from graphdnn import layers, nn
from graphdnn.errors import GraphError
from graphdnn.ops import registry
from graphdnn.runtime import OrtRunner

ort.set_default_logger_severity(4)


def small_mlp():
    torch.manual_seed(0)
    g = gd.Graph("mlp")
    X = g.placeholder("X", (None, 20))
    with g.name_scope("dnn"):
        h1 = layers.dense(X, 16, activation=nn.relu, name="hidden1")
        logits = layers.dense(h1, 4, name="outputs")
    return g, logits


def test_runner_feeds_by_name_caches_sessions_and_fetches_intermediates():
    g, logits = small_mlp()
    runner = OrtRunner(g, outputs=[logits])
    x = np.random.default_rng(0).standard_normal((3, 20)).astype(np.float32)
    module = gd.compile(g, outputs=["dnn/hidden1/Relu:0", logits]).eval()
    hidden, expected = (t.detach().numpy() for t in module(torch.from_numpy(x)))

    out = runner.run({"X": x})
    assert list(out) == ["dnn/outputs/BiasAdd:0"]
    np.testing.assert_allclose(out["dnn/outputs/BiasAdd:0"], expected, atol=1e-5, rtol=1e-4)
    assert runner.session() is runner.session()  # cached

    both = runner.run({"X:0": torch.from_numpy(x)}, outputs=["dnn/hidden1/Relu:0", logits])
    np.testing.assert_allclose(both["dnn/hidden1/Relu:0"], hidden, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(both[logits.name], expected, atol=1e-5, rtol=1e-4)
    assert runner.session(["dnn/hidden1/Relu:0"]) is runner.session(["dnn/hidden1/Relu:0"])

    with pytest.raises(GraphError, match="not an input"):
        runner.run({"nope": x})
    with pytest.raises(GraphError, match="missing feeds"):
        runner.run({})


def test_runner_on_a_file_with_chosen_providers(tmp_path):
    g, logits = small_mlp()
    path = tmp_path / "mlp.onnx"
    gd.export_onnx(g, path, outputs=[logits])
    runner = OrtRunner(path, providers=["CPUExecutionProvider"])
    assert runner.session().get_providers() == ["CPUExecutionProvider"]
    x = np.ones((2, 20), np.float32)
    out = runner.run({"X": x}, outputs=["dnn/hidden1/BiasAdd:0", "dnn/outputs/BiasAdd:0"])
    ref = gd.compile(g, outputs=["dnn/hidden1/BiasAdd:0", logits]).eval()(torch.from_numpy(x))
    np.testing.assert_allclose(out["dnn/hidden1/BiasAdd:0"], ref[0].detach().numpy(), atol=1e-5, rtol=1e-4)
    with pytest.raises(GraphError, match="no value named"):
        runner.run({"X": x}, outputs=["does/not/exist"])


# ----------------------------------------------------------------------------------------------
# Parity: every op in the registry, ONNX Runtime vs compiled torch
# ----------------------------------------------------------------------------------------------
def _tolerance(array: np.ndarray) -> tuple[float, float]:
    """(rtol, atol): float32 1e-4/1e-5; half precision types 1e-2/1e-3."""
    if array.dtype.kind == "f" and array.dtype.itemsize <= 2 or array.dtype.name == "bfloat16":
        return 1e-2, 1e-3
    return 1e-4, 1e-5


def _single_node_cases() -> dict[tuple[str, str], list]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = defaultdict(list)
        for case in iter_node_cases():
            nodes = case.model.graph.node
            # training-mode cases are random or stateful; ORT serves inference graphs
            if len(nodes) == 1 and "training" not in case.name:
                domain = "" if nodes[0].domain == "ai.onnx" else nodes[0].domain
                found[(domain, nodes[0].op_type)].append(case)
    return found


_CASES = _single_node_cases()
#: Sequence ops and Optional (which has no node test of its own): checked against ONNX Runtime inside
#: models by test_onnx_import.py::test_sequence_ops_inside_a_model_match_onnxruntime and
#: test_onnx_sequence_io.py.
SEQUENCE_OPS = {"SequenceEmpty", "SequenceConstruct", "SequenceInsert", "SequenceErase", "SequenceAt",
                "SequenceLength", "ConcatFromSequence", "SplitToSequence", "Optional"}

#: Ops whose outputs are random draws: ORT and torch agree on the support and shape, not the values
#: (their distributions are tested in test_ops_detection_text.py).
RANDOM_OPS = {"Bernoulli"}


def _check_random_op(op_type: str) -> None:
    x = np.random.default_rng(0).uniform(size=(50, 40)).astype(np.float32)
    node = onnx.helper.make_node(op_type, ["p"], ["y"])
    graph = onnx.helper.make_graph([node], "random", [onnx.helper.make_tensor_value_info("p", 1, [50, 40])],
                                   [onnx.helper.make_tensor_value_info("y", 1, [50, 40])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 15)])
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"p": x})[0]
    g = load_onnx(model)
    with torch.no_grad():
        ours = _torch_outputs(g)(torch.from_numpy(x)).numpy()
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    assert set(np.unique(ours)) <= {0, 1} and set(np.unique(ref)) <= {0, 1}
    assert abs(ours.mean() - ref.mean()) < 0.1  # both draw with probability x: means near x.mean()


def _check_against_simple_suite(name: str) -> None:
    """Run one case of ONNX's bundled ``simple`` suite and compare with its stored outputs."""
    import glob
    import os

    import onnx.backend.test as backend_test

    folder = os.path.join(os.path.dirname(backend_test.__file__), "data", "simple", name)
    graph = load_onnx(os.path.join(folder, "model.onnx"))
    read = [onnx.load_tensor(p) for p in sorted(glob.glob(os.path.join(folder, "test_data_set_0", "input_*.pb")))]
    expected = [onnx.numpy_helper.to_array(onnx.load_tensor(p))
                for p in sorted(glob.glob(os.path.join(folder, "test_data_set_0", "output_*.pb")))]
    with torch.no_grad():
        out = _torch_outputs(graph)(*[torch.from_numpy(onnx.numpy_helper.to_array(t).copy()) for t in read])
    assert len(expected) == len(out) >= 2
    for e, o in zip(expected, out):
        np.testing.assert_allclose(o.numpy(), e, rtol=1e-5, atol=1e-6)


#: Ops no ONNX node test covers: a handwritten graph and a handwritten torch reference.
_HANDWRITTEN = {
    ("", "GlobalLpPool"): (lambda x: x.abs().pow(2).sum(dim=(2, 3), keepdim=True).sqrt(), {"p": 2}),
    ("graphdnn", "StopGradient"): (lambda x: x, {}),
    ("graphdnn", "AlphaDropout"): (lambda x: x, {"ratio": 0.2}),
    ("graphdnn", "GaussianNoise"): (lambda x: x, {"stddev": 0.3}),  # identity at inference, exported as Identity
    ("graphdnn", "GaussianDropout"): (lambda x: x, {"ratio": 0.2}),
}


def _torch_outputs(graph):
    module = gd.compile(graph, inputs=graph.meta["onnx"]["inputs"], outputs=graph.meta["onnx"]["outputs"]).eval()
    return module


def _run_case(case):
    """('same'|'ort-unavailable'|'ort-deviates'|'differs'|'torch-error', detail)."""
    try:
        graph = load_onnx(case.model)
        module = _torch_outputs(graph)
        inputs = case.data_sets[0][0]
        with torch.no_grad():
            out = module(*[to_torch(v) for v in inputs])
        out = list(out) if isinstance(out, tuple) else [out]
    except Exception as exc:  # conformance reports these; parity needs a torch result
        return "torch-error", f"{type(exc).__name__}: {exc}"
    try:
        model = build_model(graph, graph.meta["onnx"]["inputs"], graph.meta["onnx"]["outputs"])
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {i.name: np.asarray(onnx.numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else v)
                 for i, v in zip(session.get_inputs(), inputs)}
        ref = session.run(None, feeds)
    except Exception as exc:  # ORT lacks a kernel for this opset/type: ONNX's reference output decides
        if compare_outputs(case.data_sets[0][1], out, case.rtol, case.atol) is None:
            return "reference", f"ORT cannot run it ({type(exc).__name__}); torch matches ONNX's reference"
        return "ort-unavailable", f"{type(exc).__name__}: {str(exc)[:200]}"
    rtol, atol = _tolerance(np.asarray(ref[0]))
    bad = compare_outputs(ref, out, rtol, atol)
    if bad is None:
        return "same", ""
    expected = case.data_sets[0][1]
    if compare_outputs(expected, out, case.rtol, case.atol) is None or _error(expected, out) < _error(expected, ref):
        return "ort-deviates", bad  # torch is closer to ONNX's own reference output than ORT is
    return "differs", bad


def _error(expected, actual) -> float:
    """Largest absolute difference from ONNX's reference outputs (inf when shapes differ)."""
    worst = 0.0
    for e, a in zip(expected, actual):
        e = np.asarray(onnx.numpy_helper.to_array(e) if isinstance(e, onnx.TensorProto) else e)
        a = a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        if e.shape != a.shape or e.dtype.kind not in "biuf" or a.dtype.kind not in "biuf":
            return float("inf")
        worst = max(worst, float(np.nanmax(np.abs(e.astype(np.float64) - a.astype(np.float64)), initial=0.0)))
    return worst


@pytest.fixture()
def all_opsets(monkeypatch):
    """Parity concerns semantics, not the import opset gate: accept every opset onnx knows."""
    monkeypatch.setattr(registry, "MAX_ONNX_OPSET", max(registry.MAX_ONNX_OPSET, onnx.defs.onnx_opset_version()))


@pytest.mark.parametrize("domain,op_type", registry.known_ops(), ids=lambda v: v or "onnx")
def test_ort_parity_every_registered_op(domain, op_type, all_opsets):
    if (domain, op_type) in _HANDWRITTEN:
        fn, attrs = _HANDWRITTEN[(domain, op_type)]
        g = gd.Graph("parity")
        x = g.placeholder("x", (None, 3, 4, 5))
        y = g.add_op(op_type, [x], attrs, name="op", domain=domain).out()
        data = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
        got = OrtRunner(g, outputs=[y]).run({"x": data})[y.name]
        torch_out = gd.compile(g, outputs=[y]).eval()(torch.from_numpy(data)).detach().numpy()
        np.testing.assert_allclose(torch_out, got, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(torch_out, fn(torch.from_numpy(data)).numpy(), rtol=1e-4, atol=1e-5)
        return
    if op_type in SEQUENCE_OPS:  # against ORT in test_onnx_import's sequence model
        return
    if op_type in RANDOM_OPS:
        _check_random_op(op_type)
        return
    if (domain, op_type) == ("ai.onnx.preview.training", "Gradient"):  # ORT serves no Gradient kernel
        _check_against_simple_suite("test_gradient_of_add_and_mul")
        return
    cases = _CASES.get((domain, op_type), [])
    assert cases, f"no ONNX node test and no handwritten case for {op_type}"
    outcome = defaultdict(list)
    for case in cases:
        status, detail = _run_case(case)
        outcome[status].append(f"{case.name}: {detail}")
    assert not outcome["differs"], "\n".join(outcome["differs"])
    assert outcome["same"] or outcome["ort-deviates"] or outcome["reference"], (
        f"{op_type}: no case where both torch and ORT ran; torch: {outcome['torch-error'][:3]}; "
        f"ORT: {outcome['ort-unavailable'][:3]}")
