"""The ONNX inference benchmark's non-timing parts: the structural check (ORT runs the same optimized graph for
graphdnn's export as for ``torch.onnx.export``; ``graphdnn.converters.ort_parity``) and the statistics helpers
(``graphdnn.testing``). No timing assertions.

The full run is ``python benchmarks/onnx_inference.py --json PATH``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from graphdnn.converters import ort_parity as bench

from graphdnn.testing import bootstrap_median_ci, ci_verdict, interleaved_times


@pytest.mark.parametrize("kind", bench.KINDS)
def test_optimized_graphs_identical(kind: str, tmp_path: Path) -> None:
    ours, base, _ = bench.export_pair(kind, tmp_path)
    result = bench.structural_check(ours, base, tmp_path)
    assert result["optimized_graphs_identical"], (result["graphdnn"], result["torch_export"])
    op_types = [op["op_type"] for op in result["graphdnn"]]
    # the dense layers run as (Fused)Gemm, batch norm as one inference-form node
    assert sum(t in ("Gemm", "FusedGemm") for t in op_types) == 3
    if kind == "bn_elu":
        assert op_types.count("BatchNormalization") == 2
        assert all(op["attrs"].get("training_mode", 0) == 0 for op in result["graphdnn"])
    # only the weight layout may differ: graphdnn's kernels are [in, out], torch's [out, in]
    def trans_b(ops: list[dict]) -> set[int]:
        return {op["attrs"]["transB"] for op in ops if op["op_type"] in ("Gemm", "FusedGemm")}

    assert trans_b(result["graphdnn"]) == {0}
    assert trans_b(result["torch_export"]) == {1}


def test_structural_check_detects_a_different_graph(tmp_path: Path) -> None:
    relu, _, _ = bench.export_pair("relu", tmp_path)
    _, bn_elu_torch, _ = bench.export_pair("bn_elu", tmp_path)
    assert not bench.structural_check(relu, bn_elu_torch, tmp_path)["optimized_graphs_identical"]


def test_bootstrap_ci_excludes_one_for_a_real_difference() -> None:
    rng = np.random.default_rng(1)
    ratios = 1.05 * np.exp(rng.normal(0.0, 0.03, 30))
    lo, hi = bootstrap_median_ci(ratios)
    assert 1.0 < lo <= np.median(ratios) <= hi
    assert ci_verdict(lo, hi) == "slower"
    lo, hi = bootstrap_median_ci(1 / ratios)
    assert ci_verdict(lo, hi) == "faster"


def test_bootstrap_ci_includes_one_for_identical_distributions() -> None:
    covered = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        a, b = rng.lognormal(0.0, 0.05, (2, 30))
        lo, hi = bootstrap_median_ci(a / b)
        assert lo <= np.median(a / b) <= hi
        covered += ci_verdict(lo, hi) == "equal within noise"
    assert covered >= 34  # nominal 95% coverage; the percentile bootstrap of a median runs a little under


def test_bootstrap_ci_is_reproducible_and_checks_input() -> None:
    values = np.random.default_rng(0).normal(1.0, 0.1, 25)
    assert bootstrap_median_ci(values) == bootstrap_median_ci(values)
    assert bootstrap_median_ci([1.0] * 10) == (1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_median_ci([])


def test_interleaved_times_balances_the_order() -> None:
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = interleaved_times(fns, repeats=12, inner=2, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 12, "b": 12, "c": 12}
    rounds = calls[3:]  # after the warm-up
    orders = [tuple(rounds[i:i + 6:2]) for i in range(0, len(rounds), 6)]
    assert len(orders) == 12
    for block in (orders[:6], orders[6:]):  # every block of 3! rounds runs all orders
        assert len(set(block)) == 6
