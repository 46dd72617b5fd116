"""Every loader, fuzzed (a bounded run of ``tests/fuzz_loaders.py``): each mutated input loads or
raises a graphdnn error, within a time bound and an address-space cap, without killing the
interpreter. Also: the harness really catches hangs, big allocations and crashes, and regressions
for the loader bugs fuzzing found."""

from __future__ import annotations

import io
import json
import re
import struct
import zipfile
from pathlib import Path

import fuzz_loaders as fuzz
import h5py
import numpy as np
import pytest
import torch
from graphdnn.converters.keras_import import keras_named_tensors, load_keras
from graphdnn.converters.named_tensors import read_named_tensors

import graphdnn as gd
from graphdnn.errors import FileFormatError

KERAS = Path(__file__).parent / "fixtures" / "foreign" / "keras"
CASES_PER_FORMAT = 4  # x 15 formats; tests/fuzz_loaders.py --cases 300 for a longer run


def test_bounded_fuzz_of_every_loader() -> None:
    """Mutated real files and generated hostile ones: each loads (and compiles and runs) or raises a graphdnn
    error; no other exception, crash, timeout or allocation past the cap."""
    report = fuzz.run_fuzz(CASES_PER_FORMAT, seed=0, jobs=2, timeout=30.0)
    data = report.to_dict()
    assert set(data["formats"]) == set(fuzz.FORMATS)
    for fmt, counts in data["formats"].items():
        assert counts["cases"] == CASES_PER_FORMAT, fmt
        assert counts["ok"] + counts["clean"] + counts["run_error"] == CASES_PER_FORMAT, (fmt, counts,
                                                                                          data["failures"])
    assert data["totals"]["ok"] > 0 and data["totals"]["clean"] > 0
    for group in (fuzz.MUTATED, fuzz.GENERATED):  # the cases reach the loaders: some are refused, some load
        assert sum(data["formats"][f]["clean"] for f in group) > 0 and sum(data["formats"][f]["ok"] for f in group)
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
# in this process, each must load or raise a graphdnn error (or load, compile, and fail only in PyTorch
# when it runs: the harness's ``RunError``)
FOUND = [("keras", 2, 0), ("keras", 9, 0), ("keras", 35, 0), ("h5", 7, 0), ("h5", 41, 0), ("npz", 6, 0),
         ("npz", 10, 0), ("npz", 9, 0), ("npz", 61, 0), ("safetensors", 3, 1), ("safetensors", 89, 1),
         ("tf_meta", 25, 2), ("onnx", 32, 0), ("onnx", 220, 0), ("onnx", 451, 0), ("onnx", 419, 2),
         ("onnx", 152, 0), ("onnx_gen", 101, 0), ("onnx_gen", 111, 0), ("onnx_gen", 189, 0), ("h5_gen", 119, 0),
         ("h5_gen", 233, 0), ("safetensors_gen", 20, 0)]


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
    except (gd.GraphDNNError, fuzz.RunError):
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


# -------------------------------------------------------------------------------- one error family
def _sparse_model(path: Path, values: list, indices: list, dims: list, coords: bool = False) -> Path:
    import onnx
    from onnx import helper as h

    shape = [len(values), len(dims)] if coords else [len(indices)]
    sparse = h.make_sparse_tensor(h.make_tensor("v", onnx.TensorProto.FLOAT, [len(values)], values),
                                  h.make_tensor("i", onnx.TensorProto.INT64, shape, indices), dims)
    graph = h.make_graph([h.make_node("Constant", [], ["y"], sparse_value=sparse, name="k")], "g", [],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("values, indices, dims, coords, match", [
    ([1.0, 2.0], [0, 9], [4], False, r"index 9 is outside a tensor of 4 elements \(dims \[4\]\)"),
    ([1.0, 2.0], [0, -1], [4], False, "index -1 is outside"),
    ([1.0, 2.0], [0, 1, 2], [4], False, "2 values but 3 indices; the counts must match"),
    ([1.0], [0], [-4], False, r"negative dimension in dims \[-4\]"),
    ([1.0, 2.0], [1, 1], [4], False, "stored twice"),
    ([1.0], [0, 7], [2, 2], True, r"index \[0, 7\] is outside dims \[2, 2\]"),
])
def test_sparse_tensors_that_lie_are_refused_by_name(tmp_path: Path, values: list, indices: list, dims: list,
                                                     coords: bool, match: str) -> None:
    path = _sparse_model(tmp_path / "m.onnx", values, indices, dims, coords)
    with pytest.raises(FileFormatError, match=match) as info:
        gd.load(path)
    assert str(path) in str(info.value) and "'sparse_value'" in str(info.value)


def test_sparse_tensors_densify_as_the_onnx_spec_says(tmp_path: Path) -> None:
    """Linear indices into the flattened tensor, or [NNZ, rank] coordinates (the expected arrays by hand)."""
    for indices, dims, coords, expected in (
            ([1, 4, 5], [6], False, [0, 1.5, 0, 0, -2, 3]),
            ([0, 1, 1, 2, 2, 0], [3, 3], True, [[0, 1.5, 0], [0, 0, -2], [3, 0, 0]])):
        graph = gd.load(_sparse_model(tmp_path / "m.onnx", [1.5, -2.0, 3.0], indices, dims, coords))
        np.testing.assert_array_equal(gd.compile(graph)().numpy(), np.array(expected, dtype=np.float32))


def test_sparse_strings_and_two_dimensional_shapes_are_clear_errors(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    path = tmp_path / "s.onnx"
    sparse = h.make_sparse_tensor(h.make_tensor("v", T.STRING, [1], [b"a"]), h.make_tensor("i", T.INT64, [1], [0]),
                                  [3])
    graph = h.make_graph([h.make_node("Constant", [], ["y"], sparse_value=sparse)], "g", [],
                         [h.make_tensor_value_info("y", T.STRING, None)])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), path)
    with pytest.raises(FileFormatError, match="sparse string tensors are not supported"):
        gd.load(path)
    for op in ("Reshape", "ConstantOfShape"):
        ins = ["x", "s"] if op == "Reshape" else ["s"]
        graph = h.make_graph([h.make_node(op, ins, ["y"])], "g", [h.make_tensor_value_info("x", T.FLOAT, [6])],
                             [h.make_tensor_value_info("y", T.FLOAT, None)],
                             [h.make_tensor("s", T.INT64, [1, 2], [2, 3])])
        onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), path)
        with pytest.raises(FileFormatError, match=rf"node 0 \({op}\): input {len(ins) - 1} \('s'\) must be a scalar "
                                                  r"or a 1-D list of values, got a tensor of shape \[1, 2\]"):
            gd.load(path)


def test_unforeseen_reader_errors_become_corrupt_file_errors(tmp_path: Path) -> None:
    from graphdnn.errors import CorruptFileError, GraphError, reading_file

    path = tmp_path / "m.bin"
    with pytest.raises(CorruptFileError, match=rf"^{re.escape(str(path))}: the model file is corrupted or malformed "
                                               r"\(IndexError: list index out of range\)") as info:
        with reading_file(path):
            [][1]  # noqa: B018 - the reader's bug
    assert isinstance(info.value.__cause__, IndexError) and isinstance(info.value, gd.GraphDNNError)
    with pytest.raises(CorruptFileError, match="nested too deeply"), reading_file(path):
        raise RecursionError("maximum recursion depth exceeded")
    original = GraphError("a project error")
    with pytest.raises(GraphError) as passed, reading_file(path):
        raise original
    assert passed.value is original and str(original) == f"{path}: a project error"  # the same error, the file named
    with pytest.raises(GraphError, match=rf"^{re.escape(str(path))}: a project error$"), reading_file(path):
        raise original  # named once
    for exc in (MemoryError(), FileNotFoundError(2, "No such file or directory", str(path)), KeyboardInterrupt()):
        with pytest.raises(type(exc)), reading_file(path):
            raise exc
    with pytest.raises(CorruptFileError, match=r"cannot read '.*shard.bin', which the model file refers to \(No such"):
        with reading_file(path):  # a file the content names: the content's fault
            raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "shard.bin"))
    with pytest.raises(CorruptFileError, match="OSError: Unable to open"), reading_file(path):
        raise OSError("Unable to open file (file signature not found)")  # h5py's kind: no errno


def test_load_keeps_a_wrong_keyword_the_callers_error(tmp_path: Path) -> None:
    g = gd.Graph("g")
    g.variable("w", value=torch.ones(2))
    path = gd.save(g, tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match="no_such_option"):
        gd.load(path, no_such_option=1)
