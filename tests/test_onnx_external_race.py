"""An ONNX model whose external data a concurrent export removes while it is being loaded is read again."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from graphdnn.converters import onnx_tensors
from onnx import TensorProto, helper, numpy_helper

import graphdnn as gd
from graphdnn.errors import FileFormatError


def _export(folder: Path, weights: np.ndarray, data_name: str) -> None:
    """``y = x + W`` with ``W`` stored in ``data_name``, as a save writes it (a new data file per version)."""
    graph = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 16])],
                              initializer=[numpy_helper.from_array(weights, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=0)


def _weights(graph: gd.Graph) -> np.ndarray:
    (value,) = graph.values.values()
    return value.detach().numpy()


@pytest.mark.parametrize("stage", ["_external_region", "_read_region"])   # before the check, before the open
def test_data_removed_by_a_concurrent_export_is_read_from_the_new_model(tmp_path: Path, stage: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = np.full((16, 16), 1.0, np.float32), np.arange(256, dtype=np.float32).reshape(16, 16)
    staging = tmp_path / "staging"
    staging.mkdir()
    _export(tmp_path, old, "m.onnx.1.data")
    _export(staging, new, "m.onnx.2.data")
    original, calls = getattr(onnx_tensors, stage), []

    def racing(*args: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:  # the other process commits its model and removes the data this load was about to read
            os.replace(staging / "m.onnx.2.data", tmp_path / "m.onnx.2.data")
            os.replace(staging / "m.onnx", tmp_path / "m.onnx")
            (tmp_path / "m.onnx.1.data").unlink()
        return original(*args)

    monkeypatch.setattr(onnx_tensors, stage, racing)
    graph = gd.load(tmp_path / "m.onnx")
    assert len(calls) == 2
    np.testing.assert_array_equal(_weights(graph), new)


def test_missing_data_of_an_unchanged_model_is_an_error_at_once(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _export(tmp_path, np.ones((16, 16), np.float32), "m.onnx.1.data")
    (tmp_path / "m.onnx.1.data").unlink()
    calls = []
    original = onnx_tensors._external_region
    monkeypatch.setattr(onnx_tensors, "_external_region", lambda *a: calls.append(a) or original(*a))
    with pytest.raises(FileFormatError, match=r"m\.onnx\.1\.data"):
        gd.load(tmp_path / "m.onnx")
    assert len(calls) == 1
