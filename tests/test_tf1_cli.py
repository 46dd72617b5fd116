"""The CLI on the TF1 fixture: ``inspect`` lists every tensor TF wrote, grouped like ``inspect_checkpoint``;
``convert`` to ONNX explains an input of unknown rank and exports the part that does not need it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from graphdnn.cli import main

TF1 = Path(__file__).parent / "fixtures" / "foreign" / "tf1_dnn"


def _expected() -> dict[str, tuple[int, ...]]:
    """Every variable TF saved (recorded by TF itself when the fixture was made) and its shape."""
    with np.load(TF1 / "expected.npz") as z:
        return {k.split(":", 1)[1]: z[k].shape for k in z.files if k.startswith("variable:")}


@pytest.mark.parametrize("name", ["my_model_final.ckpt", "my_model_final.ckpt.meta"])
def test_inspect_json_lists_every_checkpoint_tensor_grouped(name: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", str(TF1 / name), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    groups = doc["checkpoint"]["groups"]
    listed = {e["name"]: tuple(e["shape"]) for entries in groups.values() for e in entries}
    assert listed == _expected() and doc["checkpoint"]["tensors"] == len(listed) == 44
    slots = {e["name"] for e in groups["optimizer slots"]}
    assert "global_step" in slots and "hidden1/kernel/Momentum" in slots and len(slots) == 13
    assert {e["name"] for e in groups["variables"]} == {v["name"] for v in doc["variables"]}
    assert {e["name"] for e in groups["other tensors"]} == {n for n in listed if n.startswith("misc/")}
    assert next(e for e in groups["other tensors"] if e["name"] == "misc/string")["dtype"] == "string"


def test_inspect_text_shows_the_hidden_tensors(capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", str(TF1 / "my_model_final.ckpt")]) == 0
    out = capsys.readouterr().out
    assert "44 tensors" in out and "optimizer slots (13):" in out and "other tensors (19):" in out
    for name in _expected():
        assert f"    {name} " in out


def test_convert_meta_to_onnx_names_the_unknown_rank_input_and_the_fix(tmp_path: Path, capsys) -> None:
    dst = tmp_path / "out.onnx"
    assert main(["convert", str(TF1 / "my_model_final.ckpt.meta"), str(dst)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checker" not in err
    assert "out.onnx" in err and "'y'" in err and "unknown rank" in err and "--output" in err
    assert not dst.exists()
    # the fix the message gives: export the inference part, which does not need the labels
    assert main(["convert", str(TF1 / "my_model_final.ckpt.meta"), str(dst), "--output", "dnn/outputs/BiasAdd:0"]) == 0
    with np.load(TF1 / "expected.npz") as z:
        x, want = z["input:X"], z["tensor:dnn/outputs/BiasAdd:0"]
    session = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
