"""Checkpoints against plain safetensors: round trip, module values, tied tensors, shards, atomic
writes under a killed writer, truncated/corrupted files, hostile names, the load dispatcher."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import graphdnn as gd
from graphdnn import layers, nn
from graphdnn.checkpoint import TensorFile
from graphdnn.errors import FileFormatError


def small_graph(seed=0):
    torch.manual_seed(seed)
    g = gd.Graph("small")
    X = g.placeholder("X", (None, 6))
    with g.name_scope("dnn"):
        h = nn.elu(layers.batch_normalization(layers.dense(X, 8, name="hidden1"), name="bn1"))
        out = layers.dense(h, 3, name="outputs")
    g.add_to_collection("my_important_ops", X)
    g.add_to_collection("my_important_ops", out)
    return g, out


def test_round_trip_against_plain_safetensors(tmp_path):
    g, out = small_graph()
    path = gd.save(g, tmp_path / "m.safetensors")
    plain = load_file(path)
    assert set(plain) == set(g.values) and all(torch.equal(plain[k], g.values[k]) for k in plain)
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    assert meta["graphdnn.version"] == "1" and json.loads(meta["graphdnn.collections"]) == g.collections
    loaded = gd.load(path)
    assert [op.name for op in loaded.operations()] == [op.name for op in g.operations()]
    assert loaded.get_collection("my_important_ops") == ["X:0", out.name]
    assert isinstance(loaded.values["hidden1/kernel"], torch.nn.Parameter)
    x = torch.randn(5, 6)
    ref = gd.compile(g, outputs=[out]).eval()(x)
    torch.testing.assert_close(gd.compile(loaded, outputs=[out.name]).eval()(x), ref, rtol=0, atol=0)
    assert gd.load(path, values=False).values == {}


def test_save_module_uses_its_current_values(tmp_path):
    g, out = small_graph()
    model = gd.compile(g, outputs=[out]).to(torch.float64)     # buffers are replaced by .to()
    with torch.no_grad():
        model.variable("bn1/moving_mean").fill_(0.25)
    assert g.values["bn1/moving_mean"].dtype == torch.float32  # the graph's copy diverged
    gd.save(model, tmp_path / "m.safetensors")
    plain = load_file(tmp_path / "m.safetensors")
    assert plain["bn1/moving_mean"].dtype == torch.float64 and torch.all(plain["bn1/moving_mean"] == 0.25)
    assert torch.equal(plain["hidden1/kernel"], model.variable("hidden1/kernel"))


def test_tied_tensors_are_stored_once_and_stay_tied(tmp_path):
    g = gd.Graph("tied")
    a = g.variable("emb/weight", value=torch.randn(4, 3))
    g.variable("out/weight", value=torch.zeros(4, 3))
    g.values["out/weight"] = g.values["emb/weight"]            # one Parameter under two names
    path = gd.save(g, tmp_path / "t.safetensors")
    plain = load_file(path)
    assert list(plain) == ["emb/weight"]
    with safe_open(path, "pt") as f:
        assert json.loads(f.metadata()["graphdnn.aliases"]) == {"out/weight": "emb/weight"}
    loaded = gd.load(path)
    assert loaded.values["out/weight"] is loaded.values["emb/weight"]
    assert torch.equal(loaded.values["emb/weight"], g.values[a.op_name])
    base = torch.arange(6.0)
    gd.save({"whole": base, "head": base[:2]}, tmp_path / "views.safetensors")   # overlapping views: copied
    assert torch.equal(load_file(tmp_path / "views.safetensors")["head"], base[:2])


def test_sharded_save_loads_identically_and_shards_are_plain(tmp_path):
    g, out = small_graph()
    index = gd.save(g, tmp_path / "model.safetensors", max_shard_size=100)
    assert index.name == "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    shards = sorted(set(doc["weight_map"].values()))
    generation = shards[0].split("-")[1]
    assert len(shards) > 2 and shards == [f"model-{generation}-{i:05d}-of-{len(shards):05d}.safetensors"
                                          for i in range(1, len(shards) + 1)]
    assert set(doc["weight_map"]) == set(g.values)
    merged = {}
    for shard in shards:
        with safe_open(tmp_path / shard, "pt") as f:
            merged.update({k: f.get_tensor(k) for k in f.keys()})
    assert all(torch.equal(merged[k], g.values[k]) for k in g.values)
    loaded = gd.load(index)
    assert all(torch.equal(loaded.values[k], g.values[k]) for k in g.values)
    gd.save(g, tmp_path / "model.safetensors", max_shard_size="1KB")   # fewer shards: stale ones removed
    assert sorted(p.name for p in tmp_path.glob("model-*")) == sorted(
        set(json.loads(index.read_text())["weight_map"].values()))


KILLER = """
import os, signal, sys, torch
import graphdnn as gd
from graphdnn import checkpoint
real = checkpoint._write_tensors
def dying(f, tensors, meta):
    f.write(checkpoint._header(tensors, meta))
    f.write(b"\\x00" * 1000)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
checkpoint._write_tensors = dying
g = gd.Graph("big")
g.variable("w", value=torch.ones(1000, 100))
gd.save(g, sys.argv[1])
"""


def test_killed_writer_leaves_previous_checkpoint_intact(tmp_path):
    g, _ = small_graph()
    path = gd.save(g, tmp_path / "m.safetensors")
    before = path.read_bytes()
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLER), str(path)], capture_output=True)
    assert proc.returncode == -9
    assert path.read_bytes() == before
    assert set(load_file(path)) == set(g.values)


def test_failed_save_cleans_up_and_keeps_previous(tmp_path, monkeypatch):
    g, _ = small_graph()
    path = gd.save(g, tmp_path / "m.safetensors")
    before = path.read_bytes()
    from graphdnn import checkpoint

    def boom(f, tensors, meta):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "_write_tensors", boom)
    with pytest.raises(OSError, match="disk full"):
        gd.save(g, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.safetensors"]


@pytest.mark.parametrize("damage", ["empty", "short", "huge_header", "cut_header", "cut_data", "bad_json",
                                    "bad_offsets", "trailing"])
def test_truncated_or_corrupted_file_names_the_file(tmp_path, damage):
    g, _ = small_graph()
    path = gd.save(g, tmp_path / "m.safetensors")
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    if damage == "empty":
        raw = b""
    elif damage == "short":
        raw = raw[:5]
    elif damage == "huge_header":
        raw[:8] = (2**62).to_bytes(8, "little")
    elif damage == "cut_header":
        raw = raw[: 8 + n // 2]
    elif damage == "cut_data":
        raw = raw[:-1]
    elif damage == "bad_json":
        raw[9:14] = b"\xff\xfe{[("
    elif damage == "bad_offsets":
        text = raw[8:8 + n].decode().replace('"data_offsets":[0,', '"data_offsets":[4,', 1)
        raw[8:8 + n] = text.encode()
    elif damage == "trailing":
        raw += b"junk"
    path.write_bytes(bytes(raw))
    for call in (lambda: gd.load(path), lambda: gd.restore(small_graph()[0], path), lambda: TensorFile(path)):
        with pytest.raises(FileFormatError, match=str(path).replace("\\", "\\\\")):
            call()


HOSTILE = ["q'uo\"te", "new\nline", "__import__('os').system('touch CANARY')", "ünï/cödé/名前", "__metadata__",
           "a.b/c%2E", "training", "{{x}}\\"]


def test_hostile_names_round_trip_without_executing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    g = gd.Graph("h'\n")
    x = g.placeholder("in\"put", (None, 2))
    h = x
    for i, name in enumerate(HOSTILE):
        w = g.variable(name, value=torch.full((2, 2), float(i + 1)), scoped=False)
        h = g.add_op("MatMul", [h, w], name=f"op {name}").out()
        g.add_to_collection(name, h)
    path = gd.save(g, tmp_path / "h.safetensors")
    assert set(load_file(path)) - {"__metadata__%"} == set(HOSTILE) - {"__metadata__"}
    loaded = gd.load(path)
    assert set(loaded.values) == set(HOSTILE) and loaded.name == "h'\n"
    assert [op.name for op in loaded.operations()] == [op.name for op in g.operations()]
    assert set(loaded.collections) == set(HOSTILE)
    model = gd.compile(loaded, outputs=[h.name])
    assert sorted(model.variable_names) == sorted(HOSTILE)
    out = model(torch.ones(1, 2))
    expected = torch.ones(1, 2)
    for i in range(len(HOSTILE)):
        expected = expected @ torch.full((2, 2), float(i + 1))
    torch.testing.assert_close(out, expected)
    gd.restore(g, path)
    assert not (tmp_path / "CANARY").exists()


def test_load_dispatch_errors(tmp_path, monkeypatch):
    (tmp_path / "model.xyz").write_bytes(b"hello")
    with pytest.raises(FileFormatError, match=r"unknown model format") as info:
        gd.load(tmp_path / "model.xyz")
    assert all(kind in str(info.value) for kind in (".safetensors", ".onnx", "Keras"))  # the formats it reads
    with pytest.raises(FileFormatError, match="no such file"):
        gd.load(tmp_path / "missing.safetensors")
    monkeypatch.setitem(sys.modules, "graphdnn.converters.keras_import", None)
    (tmp_path / "m.keras").write_bytes(b"PK")
    with pytest.raises(FileFormatError, match="Keras importer .* unavailable"):
        gd.load(tmp_path / "m.keras")
    save_file({"w": torch.ones(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(FileFormatError, match="no graphdnn graph"):
        gd.load(tmp_path / "plain.safetensors")
    g, _ = small_graph()
    gd.save(g, tmp_path / "noext.safetensors")
    os.rename(tmp_path / "noext.safetensors", tmp_path / "noext")
    assert set(gd.load(tmp_path / "noext").values) == set(g.values)     # sniffed


def test_non_contiguous_tensors_are_written_in_row_major_order(tmp_path, monkeypatch):
    """Column-major kernels, permuted, strided, expanded and 0-d tensors, packed slice by slice through
    a small buffer (many slices each), read back by the safetensors library as their row-major values."""
    from graphdnn import checkpoint

    monkeypatch.setattr(checkpoint, "_CHUNK_BYTES", 1000)
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(40, 30, 6, generator=gen)
    tensors = {
        "kernel": torch.randn(300, 70, generator=gen).t(),                     # column-major, 64+ columns
        "narrow_kernel": torch.randn(9, 500, generator=gen).t(),
        "permuted": (base * 100).to(torch.int16).permute(2, 0, 1),
        "strided": base[:, ::2, 1],
        "expanded": torch.arange(7.0).expand(50, 7),                          # stride 0
        "bf16": torch.randn(130, 20, generator=gen).to(torch.bfloat16).t(),
        "mask": (torch.randn(64, 33, generator=gen) > 0).t(),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "empty": torch.zeros(0, 5).t(),
    }
    assert not any(t.is_contiguous() for k, t in tensors.items() if k not in ("scalar", "empty"))
    gd.save(tensors, tmp_path / "packed.safetensors")
    loaded = load_file(tmp_path / "packed.safetensors")
    assert loaded.keys() == tensors.keys()
    for name, t in tensors.items():
        assert loaded[name].dtype == t.dtype and torch.equal(loaded[name], t), name
