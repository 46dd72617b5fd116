"""``graphdnn.load`` tells formats by their bytes first, the file name second: a misnamed file loads as
what it is, and a weights-only file says which function reads it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import graphdnn as gd
from graphdnn import layers
from graphdnn.errors import FileFormatError
from graphdnn.loading import sniff

FOREIGN = Path(__file__).parent / "fixtures" / "foreign"


def _graph() -> gd.Graph:
    torch.manual_seed(0)
    g = gd.Graph("mlp")
    layers.dense(gd.nn.relu(layers.dense(g.placeholder("X", (None, 4)), 3, name="hidden")), 2, name="out")
    return g


def _same_values(a: gd.Graph, b: gd.Graph) -> None:
    assert sorted(a.values) == sorted(b.values)
    for name in a.values:
        x, y = (torch.as_tensor(v.values[name]).detach() for v in (a, b))
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_onnx_named_safetensors_and_safetensors_named_onnx_load(tmp_path: Path) -> None:
    g = _graph()
    gd.export_onnx(g, str(tmp_path / "m.onnx"))
    gd.save(g, tmp_path / "m.safetensors")
    shutil.copy(tmp_path / "m.onnx", tmp_path / "really_onnx.safetensors")
    shutil.copy(tmp_path / "m.safetensors", tmp_path / "really_safetensors.onnx")
    assert sniff(tmp_path / "really_onnx.safetensors") == "onnx"
    assert sniff(tmp_path / "really_safetensors.onnx") == "safetensors"
    _same_values(gd.load(tmp_path / "really_onnx.safetensors"), gd.load(tmp_path / "m.onnx"))
    _same_values(gd.load(tmp_path / "really_safetensors.onnx"), gd.load(tmp_path / "m.safetensors"))
    assert not any(n.startswith("onnx::") for n in gd.load(tmp_path / "really_safetensors.onnx").values)


@pytest.mark.parametrize(("source", "misnamed"), [("cnn.keras", "cnn.h5"), ("mlp.h5", "mlp.keras")])
def test_keras_files_with_the_other_extension_load(tmp_path: Path, source: str, misnamed: str) -> None:
    pytest.importorskip("h5py")
    shutil.copy(FOREIGN / "keras" / source, tmp_path / misnamed)
    assert sniff(tmp_path / misnamed) == ("keras" if source.endswith(".keras") else "hdf5")
    _same_values(gd.load(tmp_path / misnamed), gd.load(FOREIGN / "keras" / source))


def test_pytorch_state_dict_names_the_weights_loader(tmp_path: Path) -> None:
    torch.save(torch.nn.Linear(4, 3).state_dict(), tmp_path / "net.pt")
    torch.save(torch.nn.Linear(4, 3).state_dict(), tmp_path / "net.onnx")  # misnamed too
    for name in ("net.pt", "net.onnx"):
        assert sniff(tmp_path / name) == "pytorch"
        with pytest.raises(FileFormatError) as info:
            gd.load(tmp_path / name)
        message = str(info.value)
        assert "\n" not in message and name in message
        assert "holds weights, not a graph" in message and "load_weights(graph," in message
    assert "named like an ONNX model" in message


def test_sniffed_kinds_of_real_files(tmp_path: Path) -> None:
    tf1 = FOREIGN / "tf1_dnn"
    assert sniff(tf1 / "my_model_final.ckpt.index") == "tf-index"
    assert sniff(tf1 / "my_model_final.ckpt.meta") is None  # a protobuf: told by its name
    assert sniff(tf1 / "expected.npz") == "npz"
    np.save(tmp_path / "a.npy", np.zeros(3))
    shutil.copy(tmp_path / "a.npy", tmp_path / "a.safetensors")
    with pytest.raises(FileFormatError, match=r"a\.safetensors: a NumPy \.npy array .* numpy\.load"):
        gd.load(tmp_path / "a.safetensors")
    # a TF1 meta graph still loads by its name
    assert gd.load(tf1 / "my_model_final.ckpt.meta").values


def test_cli_inspect_names_the_format_the_bytes_show(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from graphdnn.cli import main

    g = _graph()
    gd.export_onnx(g, str(tmp_path / "m.onnx"))
    shutil.copy(tmp_path / "m.onnx", tmp_path / "m.safetensors")
    assert main(["inspect", str(tmp_path / "m.safetensors"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "ONNX" and {v["name"] for v in doc["variables"]} == set(g.values)
