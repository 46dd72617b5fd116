"""A fast slice of the ONNX conformance run (import -> compile -> torch, each case in a forked worker).

The full run is ``python benchmarks/onnx_conformance.py --json PATH``."""

from __future__ import annotations

import warnings

from graphdnn.converters import onnx_conformance as conf


def _run(cases):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = conf.run_cases(cases, jobs=2, timeout=60)
    return {r["name"]: r for r in results}


def test_light_models_and_pytorch_suites():
    light = [c for c in conf.light_cases() if c.name in ("squeezenet", "inception_v1", "shufflenet")]
    cases = light + conf.model_suite_cases("pytorch-operator") + conf.model_suite_cases("pytorch-converted")
    results = _run(cases)
    failed = {n: r["message"] for n, r in results.items() if r["status"] != "pass"}
    assert all(results[c.name]["status"] == "pass" for c in light), failed
    operator = [r for r in results.values() if r["suite"] == "pytorch-operator"]
    converted = [r for r in results.values() if r["suite"] == "pytorch-converted"]
    assert sum(r["status"] == "pass" for r in operator) >= 33, failed
    assert sum(r["status"] == "pass" for r in converted) >= 79, failed


def test_node_cases_of_core_cnn_ops():
    pattern = r"^test_(relu|conv|gemm|add|mul|softmax|maxpool|averagepool|batchnorm|concat|reshape|transpose|flatten)"
    cases = [c for c in conf.node_suite_cases(pattern) if c.name.startswith("test_")]
    results = _run(cases)
    passed = sum(r["status"] == "pass" for r in results.values())
    failed = {n: r["message"] for n, r in results.items() if r["status"] != "pass"}
    assert len(cases) > 60
    assert passed / len(cases) >= 0.6, failed
    assert all(r["status"] != "crash" for r in results.values())


def test_node_cases_of_control_flow():
    pattern = r"^test_(if|loop11|scan_sum|scan9_.*|range_.*_expanded|affine_grid_2d_expanded)$"
    cases = [c for c in conf.node_suite_cases(pattern) if c.name.startswith("test_")]
    results = _run(cases)
    failed = {n: r["message"] for n, r in results.items() if r["status"] != "pass"}
    assert len(cases) >= 11, sorted(results)
    assert not failed, failed
