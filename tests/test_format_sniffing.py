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


@pytest.mark.parametrize("header_bytes", [0x0380, 0x0480, 0x0580])
def test_safetensors_whose_header_length_starts_like_a_pickle(tmp_path: Path, header_bytes: int) -> None:
    """A header length of 0x0N80 bytes makes a safetensors file begin with a pickle's protocol bytes."""
    g = gd.Graph()
    g.variable("w", [2], value=np.arange(2, dtype=np.float32))
    path = tmp_path / "m.safetensors"
    gd.save(g, path)
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    assert length < header_bytes  # pad the JSON header with spaces, as the safetensors format allows
    padded = data[8:8 + length] + b" " * (header_bytes - length)
    (tmp_path / "p.safetensors").write_bytes(header_bytes.to_bytes(8, "little") + padded + data[8 + length:])
    assert (tmp_path / "p.safetensors").read_bytes()[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
    assert sniff(tmp_path / "p.safetensors") == "safetensors"
    loaded = gd.load(tmp_path / "p.safetensors")
    assert loaded.values["w"].tolist() == [0.0, 1.0]


def test_cli_inspect_names_the_format_the_bytes_show(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from graphdnn.cli import main

    g = _graph()
    gd.export_onnx(g, str(tmp_path / "m.onnx"))
    shutil.copy(tmp_path / "m.onnx", tmp_path / "m.safetensors")
    assert main(["inspect", str(tmp_path / "m.safetensors"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "ONNX" and {v["name"] for v in doc["variables"]} == set(g.values)


# ------------------------------------------------------------------------------ formats as plugins
_PLUGIN = '''
"""A format another package adds: a text file of named rows of numbers after a magic line."""
from graphdnn.formats import Format


def _sniff(probe):
    return probe.head.startswith(b"ROWS1\\n")


def load_rows(path, *, scale=1.0):
    import graphdnn as gd

    g = gd.Graph("rows")
    with open(path, encoding="ascii") as f:
        f.readline()
        for line in f:
            name, *numbers = line.split()
            g.variable(name, value=[float(x) * scale for x in numbers], scoped=False)
    return g


def save_rows(obj, path):
    with open(path, "w", encoding="ascii") as f:
        f.write("ROWS1\\n")
        for name, value in obj.values.items():
            f.write(name + " " + " ".join(str(float(x)) for x in value.reshape(-1).tolist()) + "\\n")


ROWS = Format(name="rows", description="a rows file", suffixes=(".rows",), sniff=_sniff,
              load="rows_plugin:load_rows", save="rows_plugin:save_rows", title="rows")
'''


@pytest.fixture
def rows_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A distribution ``rows-plugin`` on ``sys.path`` whose entry point registers the ``rows`` format."""
    from graphdnn import formats

    site = tmp_path / "site"
    site.mkdir()
    (site / "rows_plugin.py").write_text(_PLUGIN)
    info = site / "rows_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rows-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[graphdnn.formats]\nrows = rows_plugin:ROWS\n")
    monkeypatch.syspath_prepend(str(site))
    formats.reset()
    yield
    formats.reset()


def test_a_format_registered_by_another_distribution_loads_and_saves(tmp_path: Path, rows_plugin: None) -> None:
    from graphdnn import formats

    (tmp_path / "w.txt").write_text("ROWS1\nbias 1 2 3\nscale 0.5\n")  # told by its bytes, not its name
    assert sniff(tmp_path / "w.txt") == "rows"
    g = gd.load(tmp_path / "w.txt", scale=2.0)  # the format's own keyword passes through
    torch.testing.assert_close(g.values["bias"], torch.tensor([2.0, 4.0, 6.0]))
    torch.testing.assert_close(g.values["scale"], torch.tensor([1.0]))
    gd.save(g, tmp_path / "copy.rows")  # its suffix chooses its writer
    assert (tmp_path / "copy.rows").read_text().splitlines() == ["ROWS1", "bias 2.0 4.0 6.0", "scale 1.0"]
    assert {"rows", "onnx", "safetensors", "pytorch"} <= {f.name for f in formats.formats()}
    rows = formats.get("rows")
    assert formats.register(rows) is rows  # the same format again: nothing to do
    with pytest.raises(gd.GraphDNNError, match="'rows' is registered already"):
        formats.register(formats.Format(name="rows", description="another rows file"))
    with pytest.raises(TypeError):
        gd.load(tmp_path / "w.txt", opset=13)  # a keyword the format does not take


def test_formats_and_their_sniffers_import_no_reader() -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom graphdnn import formats\n"
            f"print(formats.sniff({str(FOREIGN / 'keras' / 'mlp.h5')!r}), len(formats.formats()))\n"
            "heavy = [m for m in ('torch', 'onnx', 'h5py', 'graphdnn.converters.onnx_import', "
            "'graphdnn.converters.keras_import') if m in sys.modules]\nprint(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0].startswith("hdf5 ") and out[1] == "[]"


def test_save_by_suffix_and_unknown_files_list_what_load_reads(tmp_path: Path) -> None:
    g = _graph()
    model = gd.save(g, tmp_path / "m.onnx", outputs=["out/BiasAdd:0"])  # .onnx: written as ONNX
    assert model.graph.output[0].name and sniff(tmp_path / "m.onnx") == "onnx"
    _same_values(gd.load(tmp_path / "m.onnx"), g)
    with pytest.raises(gd.GraphError, match="max_shard_size apply to safetensors"):
        gd.save(g, tmp_path / "m2.onnx", max_shard_size="1MB")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FileFormatError, match=r"notes\.txt: unknown model format; graphdnn\.load reads") as info:
        gd.load(tmp_path / "notes.txt")
    for what in (".onnx", ".safetensors (graphdnn checkpoint)", "SavedModel folder", ".keras / .h5"):
        assert str(info.value).count(what) == 1
