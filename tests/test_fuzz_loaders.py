"""Every loader, fuzzed (a bounded run of ``benchmarks/fuzz_loaders.py``): each mutated input loads or
raises a graphdnn error, within a time bound and an address-space cap, without killing the
interpreter. Also: the harness really catches hangs, big allocations and crashes, and regressions
for the loader bugs fuzzing found."""

from __future__ import annotations

import io
import json
import struct
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import graphdnn as gd
from converters.keras_import import keras_named_tensors, load_keras
from converters.named_tensors import read_named_tensors
from graphdnn.errors import FileFormatError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import fuzz_loaders as fuzz  # noqa: E402

KERAS = Path(__file__).parent / "fixtures" / "foreign" / "keras"
CASES_PER_FORMAT = 40


def test_bounded_fuzz_of_every_loader() -> None:
    report = fuzz.run_fuzz(CASES_PER_FORMAT, seed=0, jobs=2, timeout=30.0)
    data = report.to_dict()
    assert set(data["formats"]) == set(fuzz.FORMATS)
    for fmt, counts in data["formats"].items():
        assert counts["cases"] == CASES_PER_FORMAT, fmt
        assert counts["ok"] + counts["clean"] == CASES_PER_FORMAT, (fmt, counts, data["failures"])
        assert counts["clean"] > 0, f"{fmt}: no mutation was rejected; the mutators do not reach the loader"
    assert data["totals"]["ok"] > 0
    assert not data["failures"], json.dumps(data["failures"], indent=1)[:4000]


def test_cases_are_reproducible_from_their_seed(tmp_path: Path) -> None:
    seeds = fuzz.make_seeds(tmp_path)
    for fmt in fuzz.FORMATS:
        a, b = fuzz.make_case(seeds, fmt, 3, 7), fuzz.make_case(seeds, fmt, 3, 7)
        assert a.files == b.files and a.steps == b.steps
        assert fuzz.make_case(seeds, fmt, 4, 7).files != a.files or fmt == "tf_data"


def test_the_harness_reports_hangs_allocations_and_crashes(tmp_path: Path) -> None:
    worker = fuzz.Worker(tmp_path / "worker.log")
    try:
        ask = {"folder": str(tmp_path), "budget": 256 * 2**20}
        assert worker.ask({**ask, "steps": [["_allocate", "x"]]}, 30)["outcome"] == "memory"
        reply = worker.ask({**ask, "steps": [["_raise", "x"]]}, 30)
        assert reply["outcome"] == "unexpected" and reply["type"] == "builtins.KeyError"
        assert worker.ask({**ask, "steps": [["_hang", "x"]]}, 2)["outcome"] == "timeout"
        assert worker.ask({**ask, "steps": [["_abort", "x"]]}, 30)["outcome"] == "crash"
        (tmp_path / "m.safetensors").write_bytes(b"\x00" * 3)
        reply = worker.ask({**ask, "steps": [["load", "m.safetensors"]]}, 30)  # a fresh worker took over
        assert reply["outcome"] == "clean"
    finally:
        worker.stop()


# ------------------------------------------------------------------ regressions found by fuzzing
# (format, case index, seed) of cases that once escaped as another exception or a MemoryError; rerun
# in this process, each must load or raise a graphdnn error
FOUND = [("keras", 2, 0), ("keras", 9, 0), ("keras", 35, 0), ("h5", 7, 0), ("h5", 41, 0), ("npz", 6, 0),
         ("npz", 10, 0), ("npz", 9, 0), ("npz", 61, 0), ("safetensors", 3, 1), ("safetensors", 89, 1),
         ("tf_meta", 25, 2), ("onnx", 32, 0), ("onnx", 220, 0), ("onnx", 451, 0), ("onnx", 419, 2)]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[fuzz.Seed]]:
    return fuzz.make_seeds(tmp_path_factory.mktemp("seeds"))


@pytest.mark.parametrize("fmt, index, seed", FOUND)
def test_cases_fuzzing_found_are_clean_now(seeds: dict[str, list[fuzz.Seed]], tmp_path: Path, fmt: str, index: int,
                                           seed: int) -> None:
    case = fuzz.make_case(seeds, fmt, index, seed)
    fuzz._write_case(tmp_path / "case", case)
    try:
        fuzz._run_steps(tmp_path / "case", case.steps)
    except gd.GraphDNNError:
        pass


def _npz(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, payload in members.items():
            z.writestr(zipfile.ZipInfo(name), payload, compress_type=method)
    return buf.getvalue()


def _npy(header: str, body: bytes = b"") -> bytes:
    raw = header.encode("latin1")
    raw += b" " * (-(10 + len(raw) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw + body


@pytest.mark.parametrize("header, match", [
    ("{'descr': '<i8', 'fortran_order': False, 'shape': (1099511627776,), }", "declares"),
    ("[" * 5000, "corrupted header"),
    ("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", "Python objects"),
])
def test_npz_headers_that_lie_are_refused_before_allocating(tmp_path: Path, header: str, match: str) -> None:
    path = tmp_path / "a.npz"
    path.write_bytes(_npz({"w.npy": _npy(header, b"\x00" * 16)}))
    with pytest.raises(FileFormatError, match=match):
        read_named_tensors(path).to_dict()


def test_npz_duplicated_and_bombed_members(tmp_path: Path) -> None:
    good = io.BytesIO()
    np.save(good, np.arange(4, dtype=np.float32))
    path = tmp_path / "dup.npz"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
        z.writestr("w.npy", good.getvalue())
        z.writestr("w.npy", good.getvalue())
    path.write_bytes(buf.getvalue())
    with pytest.raises(FileFormatError, match="stored twice"):
        read_named_tensors(path)

    data = bytearray(_npz({"w.npy": good.getvalue()}))
    central = data.index(b"PK\x01\x02")
    data[central + 24:central + 28] = struct.pack("<I", 10**9)  # the declared uncompressed size lies
    path = tmp_path / "bomb.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match="zip bomb"):
        read_named_tensors(path).to_dict()

    path = tmp_path / "ok.npz"
    path.write_bytes(_npz({"w.npy": good.getvalue()}, zipfile.ZIP_DEFLATED))
    assert torch.equal(read_named_tensors(path).read_one("w"), torch.arange(4, dtype=torch.float32))


def _keras_with_config(tmp_path: Path, edit) -> Path:
    with zipfile.ZipFile(KERAS / "mlp.keras") as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    members["config.json"] = edit(members["config.json"])
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return path


def test_keras_config_that_lies_names_the_layer(tmp_path: Path) -> None:
    def bad_units(raw: bytes) -> bytes:
        doc = json.loads(raw)
        layer = next(la for la in doc["config"]["layers"] if la["class_name"] == "Dense")
        layer["config"]["units"] = "many"
        return json.dumps(doc).encode()

    with pytest.raises(FileFormatError, match="layer 'hidden1' is malformed"):
        load_keras(_keras_with_config(tmp_path, bad_units))
    with pytest.raises(FileFormatError, match="corrupted archive"):
        load_keras(_keras_with_config(tmp_path, lambda raw: b"[" * 100_000))
    with pytest.raises(FileFormatError, match="not a Keras model config"):
        load_keras(_keras_with_config(tmp_path, lambda raw: b"[1, 2]"))


def test_h5_link_cycles_huge_datasets_and_corruption(tmp_path: Path) -> None:
    path = tmp_path / "w.weights.h5"
    path.write_bytes((KERAS / "mlp.weights.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        f["layers/loop"] = h5py.SoftLink("/layers")
    with pytest.raises(FileFormatError, match="link cycle"):
        keras_named_tensors(path)

    path.write_bytes((KERAS / "mlp.weights.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        name = next(n for n in fuzz._h5_datasets(f) if n.endswith("vars/0"))
        del f[name]
        f.create_dataset(name, shape=(2**31, 1024), dtype="f4", chunks=True)
    with pytest.raises(FileFormatError, match="refusing to allocate"):
        keras_named_tensors(path).to_dict()

    data = bytearray((KERAS / "mlp.weights.h5").read_bytes())
    for offset in range(200, 2000, 7):  # damage the object headers and symbol tables
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match=str(path)):
        keras_named_tensors(path).to_dict()


def test_safetensors_entry_with_unhashable_dtype_and_unreadable_shard(tmp_path: Path) -> None:
    g = gd.Graph("g")
    g.variable("w", value=torch.ones(2))
    path = gd.save(g, tmp_path / "m.safetensors")
    n = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8:8 + n])
    header["w"]["dtype"] = ["F32"]
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + path.read_bytes()[8 + n:])
    with pytest.raises(FileFormatError, match="malformed entry"):
        gd.load(path)
    index = gd.save(g, tmp_path / "s.safetensors", max_shard_size=4)
    doc = json.loads(index.read_text())
    doc["weight_map"]["w"] = "x" * 5000
    index.write_text(json.dumps(doc))
    with pytest.raises(FileFormatError, match="cannot read"):
        gd.load(index)


# ---------------------------------------------------------------------------- Keras archive hygiene
def test_keras_archives_are_read_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is extracted or written: no zip extraction, no temporary files, no file opened for writing."""
    import builtins
    import tempfile

    path = tmp_path / "m.keras"
    path.write_bytes((KERAS / "cnn.keras").read_bytes())
    real_open = builtins.open

    def read_only_open(file, mode="r", *args, **kwargs):
        assert not set(str(mode)) & set("wax+"), f"opened {file} for writing"
        return real_open(file, mode, *args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("the loader touched the disk")

    monkeypatch.setattr(builtins, "open", read_only_open)
    for owner, name in ((zipfile.ZipFile, "extract"), (zipfile.ZipFile, "extractall"), (tempfile, "mkstemp"),
                        (tempfile, "mkdtemp"), (tempfile, "NamedTemporaryFile"), (tempfile, "TemporaryDirectory")):
        monkeypatch.setattr(owner, name, refuse)
    graph = load_keras(path)
    assert graph.values and sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]


def test_legacy_h5_external_link_in_model_weights_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    path.write_bytes((KERAS / "mlp.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        del f["model_weights/hidden1"]
        f["model_weights/hidden1"] = h5py.ExternalLink(str(KERAS / "cnn.h5"), "/model_weights/conv1")
    with pytest.raises(FileFormatError, match="external link"):
        load_keras(path)
