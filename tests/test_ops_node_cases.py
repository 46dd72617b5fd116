"""A fast subset of ONNX's node conformance cases, evaluated through the op registry.

The full run is ``python benchmarks/onnx_node_cases.py``; this test pins the op types that must
keep passing completely."""

from __future__ import annotations

import pytest
from graphdnn.converters import onnx_node_cases

#: Op types (single-node cases) whose every ONNX node case must pass.
OP_TYPES = [
    "Abs", "Add", "And", "ArgMax", "ArgMin", "AveragePool", "BatchNormalization", "Concat", "Conv",
    "ConvTranspose", "CumSum", "DepthToSpace", "Div", "Einsum", "Elu", "Expand", "Flatten", "Gather",
    "GatherElements", "GatherND", "Gemm", "GlobalAveragePool", "GRU", "HardSigmoid", "InstanceNormalization",
    "LayerNormalization", "LeakyRelu", "LpPool", "LRN", "LSTM", "MatMul", "Max", "MaxPool", "Mod", "Mul",
    "NegativeLogLikelihoodLoss", "OneHot", "Pad", "Pow", "ReduceL2", "ReduceLogSumExp", "ReduceMax",
    "ReduceMean", "ReduceSum", "Relu", "Reshape", "Resize", "RNN", "ScatterElements", "ScatterND", "Shape",
    "Slice", "Softmax", "SoftmaxCrossEntropyLoss", "SpaceToDepth", "Split", "Squeeze", "Tile", "TopK",
    "Transpose", "Trilu", "Unsqueeze", "Where",
]


@pytest.fixture(scope="module")
def harness():
    return onnx_node_cases


@pytest.fixture(scope="module")
def cases(harness):
    wanted = set(OP_TYPES)
    return [c for c in harness.iter_node_cases() if len(c.op_types) == 1 and c.op_types[0] in wanted]


def test_subset_is_large_enough(cases):
    assert len({c.op_type for c in cases}) == len(OP_TYPES)
    assert len(cases) > 300


def test_node_cases_pass(harness, cases):
    failures = []
    for case in cases:
        status, message = harness.run_case(case)
        if status != "pass":
            failures.append(f"{case.name}: {status}: {message}")
    assert not failures, "\n".join(failures)


def test_compare_outputs_reports_mismatches(harness):
    import numpy as np
    import torch

    ref = [np.array([1.0, 2.0], np.float32)]
    assert harness.compare_outputs(ref, [torch.tensor([1.0, 2.0])]) is None
    assert "dtype" in harness.compare_outputs(ref, [torch.tensor([1.0, 2.0], dtype=torch.float64)])
    assert "shape" in harness.compare_outputs(ref, [torch.tensor([1.0])])
    assert "values differ" in harness.compare_outputs(ref, [torch.tensor([1.0, 2.5])])
