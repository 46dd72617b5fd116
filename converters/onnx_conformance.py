"""ONNX conformance of graphdnn: import -> graphdnn.compile -> run in torch, on ONNX's own test data.

Suites (all from the installed ``onnx`` package):

* ``node``: the node tests rebuilt in memory by ``onnx.backend.test.case.node.collect_testcases()``
  (the wheel ships no node data; ``graphdnn.converters.onnx_node_cases``);
* ``simple``, ``pytorch-converted``, ``pytorch-operator``: ``onnx/backend/test/data/<suite>/*`` with
  ``model.onnx`` and ``test_data_set_*/{input,output}_*.pb``;
* ``light``: ``data/light/light_<model>.onnx`` (weights made by ConstantOfShape) fed with
  ``arange(n).reshape(shape) / n`` in float32 (unknown dims = 1), as ONNX's runner does, compared with
  ``light_<model>_output_0.pb`` at the tolerances of ``data/real/test_<model>/data.json``.

``run_cases`` runs every case in a forked worker with a per-case alarm (``graphdnn.testing.run_isolated``);
a crash or a hang costs that case only. The path under test is
``graphdnn.converters.onnx_import.load_onnx`` -> ``graphdnn.compile`` -> forward.
The full run with a report is ``python benchmarks/onnx_conformance.py``.
"""

from __future__ import annotations

import glob
import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from graphdnn.converters.onnx_node_cases import compare_outputs, iter_node_cases, to_torch

from graphdnn.testing import describe_exception, run_isolated

DATA_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data"
MODEL_SUITES = ("simple", "pytorch-converted", "pytorch-operator")
SUITES = ("light", *MODEL_SUITES, "node")
LIGHT_MAX_BYTES = 4 << 30  # the memory budget the light models' loads get (``load_onnx(max_bytes=)``)
LIGHT_MODELS = ("resnet50", "vgg19", "densenet121", "inception_v1", "inception_v2", "shufflenet", "squeezenet",
                "bvlc_alexnet", "zfnet512")


@dataclass
class Case:
    """One conformance case: a model (in memory or a path) and how to get its data sets."""

    suite: str
    name: str
    model: onnx.ModelProto | None = None
    path: str | None = None
    data_sets: list[tuple[list[Any], list[Any]]] | None = None
    data_dir: str | None = None
    rtol: float = 1e-3
    atol: float = 1e-7
    op_type: str = "model"
    op_types: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# Collecting cases
# ------------------------------------------------------------------------------------------------
def light_cases() -> list[Case]:
    cases = []
    for name in LIGHT_MODELS:
        tol = json.loads((DATA_DIR / "real" / f"test_{name}" / "data.json").read_text())
        cases.append(Case("light", name, path=str(DATA_DIR / "light" / f"light_{name}.onnx"),
                          rtol=float(tol.get("rtol", 1e-3)), atol=float(tol.get("atol", 1e-7))))
    return cases


def model_suite_cases(suite: str) -> list[Case]:
    cases = []
    for case_dir in sorted((DATA_DIR / suite).iterdir()):
        if not (case_dir / "model.onnx").is_file():
            continue
        rtol, atol = 1e-3, 1e-7
        if (case_dir / "data.json").is_file():
            data = json.loads((case_dir / "data.json").read_text())
            rtol, atol = float(data.get("rtol", rtol)), float(data.get("atol", atol))
        cases.append(Case(suite, case_dir.name, path=str(case_dir / "model.onnx"), data_dir=str(case_dir),
                          rtol=rtol, atol=atol))
    return cases


def node_suite_cases(filter_regex: str | None = None) -> list[Case]:
    return [Case("node", c.name, model=c.model, data_sets=c.data_sets, rtol=c.rtol, atol=c.atol,
                 op_type=c.op_type, op_types=c.op_types) for c in iter_node_cases(filter_regex)]


def collect(suites: Sequence[str], filter_regex: str | None = None) -> list[Case]:
    cases: list[Case] = []
    rx = re.compile(filter_regex) if filter_regex else None
    for suite in suites:
        if suite == "node":
            cases += node_suite_cases(filter_regex)
            continue
        found = light_cases() if suite == "light" else model_suite_cases(suite)
        cases += [c for c in found if rx is None or rx.search(c.name)]
    return cases


# ------------------------------------------------------------------------------------------------
# Data sets of model cases
# ------------------------------------------------------------------------------------------------
def _load_pb(path: str, type_proto: onnx.TypeProto | None) -> Any:
    data = Path(path).read_bytes()
    kind = type_proto.WhichOneof("value") if type_proto is not None else "tensor_type"
    if kind in (None, "tensor_type"):
        tensor = onnx.TensorProto()
        tensor.ParseFromString(data)
        return onnx.numpy_helper.to_array(tensor)
    if kind == "sequence_type":
        seq = onnx.SequenceProto()
        seq.ParseFromString(data)
        return onnx.numpy_helper.to_list(seq)
    if kind == "optional_type":
        opt = onnx.OptionalProto()
        opt.ParseFromString(data)
        return onnx.numpy_helper.to_optional(opt)
    raise NotImplementedError(f"test data of kind {kind} is not supported")


def model_data_sets(case: Case, model: onnx.ModelProto) -> list[tuple[list[Any], list[Any]]]:
    if case.data_sets is not None:
        return case.data_sets
    inits = {t.name for t in model.graph.initializer}
    real_inputs = [vi for vi in model.graph.input if vi.name not in inits]
    if case.suite == "light":
        feeds = []
        for vi in real_inputs:
            shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim)
            n = int(np.prod(shape))
            feeds.append((np.arange(n).reshape(shape) / n).astype(np.float32))
        prefix = str(Path(case.path).with_suffix(""))
        expected = [_load_pb(f"{prefix}_output_{i}.pb", o.type) for i, o in enumerate(model.graph.output)]
        return [(feeds, expected)]
    sets = []
    for set_dir in sorted(glob.glob(os.path.join(case.data_dir, "test_data_set*"))):
        n_in = len(glob.glob(os.path.join(set_dir, "input_*.pb")))
        n_out = len(glob.glob(os.path.join(set_dir, "output_*.pb")))
        ins = [_load_pb(os.path.join(set_dir, f"input_{i}.pb"), model.graph.input[i].type) for i in range(n_in)]
        outs = [_load_pb(os.path.join(set_dir, f"output_{i}.pb"), model.graph.output[i].type) for i in range(n_out)]
        sets.append((ins, outs))
    return sets


# ------------------------------------------------------------------------------------------------
# Running one case: the path under test
# ------------------------------------------------------------------------------------------------
def run_case(case: Case) -> tuple[str, str]:
    """(status, message): pass, fail (wrong values) or error (could not import/compile/run)."""
    from graphdnn.converters.onnx_import import load_onnx

    from graphdnn.compiler import compile as compile_graph

    stage = "load"
    try:
        model = case.model if case.model is not None else onnx.load(case.path)
        data_sets = model_data_sets(case, model)
        stage = "import"
        # light models build hundreds of MiB of weights from a few bytes (ConstantOfShape): more than the
        # default memory budget of a load grants such a small file, so they are loaded as a user would, raising it
        budget = {"max_bytes": LIGHT_MAX_BYTES} if case.suite == "light" else {}
        graph = load_onnx(case.path if case.model is None else model, **budget)
        stage = "compile"
        module = compile_graph(graph, inputs=graph.meta["onnx"]["inputs"], outputs=graph.meta["onnx"]["outputs"]).eval()
        for inputs, expected in data_sets:
            stage = "run"
            feeds = [to_torch(v) for v in inputs]
            with torch.no_grad():
                out = module(*feeds)
            actual = list(out) if isinstance(out, tuple) else [out]
            reason = compare_outputs(expected, actual, case.rtol, case.atol)
            if reason:
                return "fail", reason
        return "pass", ""
    except Exception as exc:  # isolate: one bad case never stops the run
        return "error", f"{stage}: {describe_exception(exc)}"


# ------------------------------------------------------------------------------------------------
# Isolation: forked workers, per-case alarm, crash recovery
# ------------------------------------------------------------------------------------------------
def _worker_setup(max_opset: int | None) -> Callable[[], None]:
    def setup() -> None:
        torch.set_num_threads(1)
        warnings.simplefilter("ignore")
        if max_opset is not None:
            from graphdnn.ops import registry

            registry.MAX_ONNX_OPSET = max_opset

    return setup


def run_cases(cases: list[Case], jobs: int = 1, timeout: float = 60.0,
              max_opset: int | None = None) -> list[dict[str, Any]]:
    """Run every case isolated in forked workers; one result dict per case, in input order."""
    order = sorted(range(len(cases)), key=lambda i: cases[i].suite != "light")  # slow light models first
    results = run_isolated(len(cases), lambda i: run_case(cases[i]), jobs=jobs, timeout=timeout, order=order,
                           setup=_worker_setup(max_opset))
    return [
        {"suite": c.suite, "name": c.name, "op_type": c.op_type, "status": status,
         "message": message, "seconds": round(seconds, 3)}
        for c, (status, message, seconds) in zip(cases, results)
    ]
