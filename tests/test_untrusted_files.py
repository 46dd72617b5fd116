"""Model files that point outside themselves: nothing outside the model (or the folder allowed) is read.

HDF5 (``.h5``, ``.weights.h5``, the weights inside ``.keras``): external raw storage, virtual datasets and
external links (also reached through a soft link) are refused before any data is read. ONNX: every tensor
location (initializers, sparse initializers, Constant ``value``/``sparse_value``, tensors in control-flow
bodies) must resolve inside the model's folder. Each hostile file is first shown to read the outside bytes
with the plain library, so that the refusal is what keeps them out.
"""

import os
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from graphdnn.converters.keras_import import keras_named_tensors, load_keras
from graphdnn.converters.onnx_import import load_onnx
from onnx import TensorProto, helper, numpy_helper

import graphdnn as gd
from graphdnn.cli import main as cli
from graphdnn.errors import ExternalReferenceError, FileFormatError, ResourceLimitError

KERAS = Path(__file__).parent / "fixtures" / "foreign" / "keras"
SECRET = np.arange(32, dtype=np.float32) * 7 + 1000  # the values of a file outside the model


@pytest.fixture
def secret(tmp_path):
    """An outside raw file and an outside HDF5 file, both holding ``SECRET``; the model goes in ``model/``."""
    (tmp_path / "model").mkdir()
    raw = tmp_path / "secret.bin"
    raw.write_bytes(SECRET.tobytes())
    with h5py.File(tmp_path / "secret.h5", "w") as f:
        f["data"] = SECRET
    return tmp_path


# ------------------------------------------------------------------------------------------------ HDF5
BIAS_KERAS3 = "layers/dense/vars/1"  # shape (32,) float32 in mlp.weights.h5 and in mlp.keras
BIAS_LEGACY = "model_weights/hidden1/mlp/hidden1/bias"  # shape (32,) float32 in mlp.h5


def _replace(path: Path, name: str, how: str, outside: Path) -> None:
    """Replace dataset ``name`` (shape [32]) of the HDF5 file at ``path`` by one whose data comes from ``outside``."""
    with h5py.File(path, "r+") as f:
        assert f[name].shape == (32,)
        del f[name]
        if how == "external":
            f.create_dataset(name, shape=(32,), dtype="<f4", external=[(str(outside / "secret.bin"), 0, 128)])
        elif how == "virtual":
            layout = h5py.VirtualLayout(shape=(32,), dtype="<f4")
            layout[:] = h5py.VirtualSource(str(outside / "secret.h5"), "data", shape=(32,))
            f.create_virtual_dataset(name, layout)
        elif how == "external_link":
            f[name] = h5py.ExternalLink(str(outside / "secret.h5"), "/data")
        elif how == "soft_to_external":  # a soft link whose path passes through an external link
            f["elsewhere"] = h5py.ExternalLink(str(outside / "secret.h5"), "/")
            f[name] = h5py.SoftLink("/elsewhere/data")
        else:
            raise AssertionError(how)
    with h5py.File(path, "r") as f:  # the hostile file really does read the outside bytes
        np.testing.assert_array_equal(f[name][()], SECRET)


def _keras_with_weights(dst: Path, weights: Path) -> None:
    with zipfile.ZipFile(KERAS / "mlp.keras") as src, zipfile.ZipFile(dst, "w") as out:
        for info in src.infolist():
            out.writestr(info, weights.read_bytes() if info.filename == "model.weights.h5" else src.read(info))


HOWS = ["external", "virtual", "external_link", "soft_to_external"]


@pytest.mark.parametrize("how", HOWS)
def test_weights_h5_pointing_outside_is_refused(secret, how):
    path = secret / "model" / "mlp.weights.h5"
    shutil.copy(KERAS / "mlp.weights.h5", path)
    _replace(path, BIAS_KERAS3, how, secret)
    with pytest.raises(ExternalReferenceError) as err:
        keras_named_tensors(path)
    msg = str(err.value)
    assert str(path) in msg and "secret." in msg
    assert "/layers/dense/vars/1" in msg or "/elsewhere" in msg


@pytest.mark.parametrize("how", HOWS)
def test_legacy_h5_pointing_outside_is_refused(secret, how):
    path = secret / "model" / "mlp.h5"
    shutil.copy(KERAS / "mlp.h5", path)
    _replace(path, BIAS_LEGACY, how, secret)
    with pytest.raises(ExternalReferenceError, match="hidden1|elsewhere") as err:
        gd.load(path)
    assert str(path) in str(err.value) and str(secret / "secret.") in str(err.value)


@pytest.mark.parametrize("how", ["external", "virtual", "external_link"])
def test_keras_archive_with_weights_pointing_outside_is_refused(secret, how):
    inner = secret / "inner.weights.h5"
    shutil.copy(KERAS / "mlp.weights.h5", inner)
    _replace(inner, BIAS_KERAS3, how, secret)
    path = secret / "model" / "mlp.keras"
    _keras_with_weights(path, inner)
    with pytest.raises(ExternalReferenceError) as err:
        load_keras(path)
    msg = str(err.value)
    assert f"{path}:model.weights.h5" in msg and "/layers/dense/vars/1" in msg and "secret." in msg


@pytest.mark.parametrize("how", ["external", "virtual", "external_link"])
def test_a_dataset_that_is_never_read_is_refused_too(secret, how):
    path = secret / "model" / "mlp.weights.h5"
    shutil.copy(KERAS / "mlp.weights.h5", path)
    _replace(path, "optimizer/vars/4", how, secret)  # the optimizer's state: not a weight graphdnn reads
    with pytest.raises(ExternalReferenceError, match="/optimizer/vars/4"):
        keras_named_tensors(path)


def test_convert_cli_refuses_and_writes_nothing(secret, capsys):
    path = secret / "model" / "mlp.h5"
    shutil.copy(KERAS / "mlp.h5", path)
    _replace(path, BIAS_LEGACY, "external", secret)
    out = secret / "out.safetensors"
    assert cli(["convert", str(path), str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "graphdnn convert: error:" in err
    assert f"dataset /{BIAS_LEGACY}" in err and str(secret / "secret.bin") in err
    assert not out.exists()


def test_soft_links_inside_the_file_are_followed(tmp_path):
    path = tmp_path / "mlp.weights.h5"
    shutil.copy(KERAS / "mlp.weights.h5", path)
    expected = keras_named_tensors(KERAS / "mlp.weights.h5").to_dict()
    with h5py.File(path, "r+") as f:
        f["moved"] = f[BIAS_KERAS3][()]
        del f[BIAS_KERAS3]
        f[BIAS_KERAS3] = h5py.SoftLink("/moved")
    got = keras_named_tensors(path).to_dict()
    assert sorted(got) == sorted(expected) and len(got) == 16
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_soft_link_cycle_is_a_clean_error(tmp_path):
    path = tmp_path / "mlp.weights.h5"
    shutil.copy(KERAS / "mlp.weights.h5", path)
    with h5py.File(path, "r+") as f:
        del f[BIAS_KERAS3]
        f[BIAS_KERAS3] = h5py.SoftLink("/a")
        f["a"] = h5py.SoftLink("/layers/dense/vars/1")
    with pytest.raises(FileFormatError, match="soft links chained"):
        keras_named_tensors(path)


def test_filter_plugin_is_not_loaded(tmp_path):
    path = tmp_path / "mlp.weights.h5"
    shutil.copy(KERAS / "mlp.weights.h5", path)
    with h5py.File(path, "r+") as f:
        del f[BIAS_KERAS3]
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((32,))
        dcpl.set_filter(32004, h5py.h5z.FLAG_OPTIONAL)  # LZ4: an HDF5 plugin, not built in
        dsid = h5py.h5d.create(f["layers/dense/vars"].id, b"1", h5py.h5t.IEEE_F32LE, h5py.h5s.create_simple((32,)),
                               dcpl=dcpl)
        h5py.Dataset(dsid)[...] = SECRET
    with pytest.raises(FileFormatError, match="filter 32004"):
        keras_named_tensors(path)


# ------------------------------------------------------------------------------------------------ ONNX
W = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
B = np.array([0.5, -1.0, 2.0, 3.5], dtype=np.float32)


def _externalize(t: TensorProto, location: str, offset: int = 0, length: int | None = None) -> TensorProto:
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for k, v in entries.items():
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def _matmul_model(w_location: str, length: int | None = None) -> onnx.ModelProto:
    """Y = X @ W + B with W stored externally at ``w_location``."""
    w = _externalize(numpy_helper.from_array(W, "W"), w_location, length=length)
    nodes = [helper.make_node("MatMul", ["X", "W"], ["XW"], name="mm"),
             helper.make_node("Add", ["XW", "B"], ["Y"], name="add")]
    graph = helper.make_graph(nodes, "mm", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 4])],
                              initializer=[w, numpy_helper.from_array(B, "B")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def _run(graph, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return gd.compile(graph).eval()(torch.from_numpy(x)).numpy()


X = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)


def test_external_data_inside_the_folder_loads_and_matches_onnxruntime(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "w.bin").write_bytes(b"\0" * 16 + W.tobytes())
    model = _matmul_model("data/w.bin")
    _externalize(model.graph.initializer[0], "data/w.bin", offset=16, length=W.nbytes)
    path = _save(model, tmp_path / "m.onnx")
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": X})[0]
    np.testing.assert_allclose(expected, X @ W + B, rtol=1e-6)
    np.testing.assert_allclose(_run(load_onnx(path), X), expected, rtol=1e-6)
    np.testing.assert_allclose(_run(gd.load(path), X), expected, rtol=1e-6)


def test_symlink_that_stays_inside_the_folder_is_followed(tmp_path):
    (tmp_path / "w.bin").write_bytes(W.tobytes())
    os.symlink("w.bin", tmp_path / "alias.bin")
    path = _save(_matmul_model("alias.bin"), tmp_path / "m.onnx")
    np.testing.assert_allclose(_run(load_onnx(path), X), X @ W + B, rtol=1e-6)


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink_file", "symlink_dir"])
def test_initializer_pointing_outside_is_refused(secret, kind):
    (secret / "secret_w.bin").write_bytes(W.tobytes())  # right size: only the location is wrong
    folder = secret / "model"
    location = {"absolute": str(secret / "secret_w.bin"), "dotdot": "../secret_w.bin",
                "symlink_file": "w.bin", "symlink_dir": "sub/secret_w.bin"}[kind]
    if kind == "symlink_file":
        os.symlink(secret / "secret_w.bin", folder / "w.bin")
    if kind == "symlink_dir":
        os.symlink(secret, folder / "sub")
    path = _save(_matmul_model(location), folder / "m.onnx")
    onnx.load(str(path), load_external_data=False)  # a well-formed model
    with pytest.raises(ExternalReferenceError) as err:
        load_onnx(path)
    msg = str(err.value)
    assert str(path) in msg and "initializer 'W'" in msg and repr(location) in msg


def test_region_outside_the_file_and_wrong_size_are_refused(tmp_path):
    (tmp_path / "w.bin").write_bytes(W.tobytes())
    model = _matmul_model("w.bin")
    _externalize(model.graph.initializer[0], "w.bin", offset=8, length=W.nbytes)
    with pytest.raises(FileFormatError, match=r"outside the file \(48 bytes\)"):
        load_onnx(_save(model, tmp_path / "m.onnx"))
    _externalize(model.graph.initializer[0], "w.bin", offset=0, length=40)
    with pytest.raises(FileFormatError, match="holds 40 bytes where dims \\[3, 4\\] need 48"):
        load_onnx(_save(model, tmp_path / "m.onnx"))


def test_missing_data_file_is_a_clean_error(tmp_path):
    with pytest.raises(FileFormatError, match="'w.bin': cannot read"):
        load_onnx(_save(_matmul_model("w.bin"), tmp_path / "m.onnx"))


def _sparse_constant_model(location: str) -> onnx.ModelProto:
    """Y = X + C, C a sparse Constant [2, 3] whose values are external data."""
    values = _externalize(numpy_helper.from_array(np.array([5.0, -3.0], np.float32), "C_values"), location)
    indices = numpy_helper.from_array(np.array([1, 5], np.int64), "C_indices")
    const = helper.make_node("Constant", [], ["C"], name="c",
                             sparse_value=helper.make_sparse_tensor(values, indices, [2, 3]))
    add = helper.make_node("Add", ["X", "C"], ["Y"], name="add")
    graph = helper.make_graph([const, add], "sp", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_sparse_constant_resolves_in_the_model_folder_not_the_working_directory(secret, monkeypatch):
    (secret / "values.bin").write_bytes(np.array([666.0, 666.0], np.float32).tobytes())  # in the working dir
    monkeypatch.chdir(secret)
    path = _save(_sparse_constant_model("values.bin"), secret / "model" / "m.onnx")
    with pytest.raises(FileFormatError, match="'values.bin': cannot read") as err:
        load_onnx(path)
    assert "node 'c' (Constant) attribute 'sparse_value'" in str(err.value)
    (secret / "model" / "values.bin").write_bytes(np.array([5.0, -3.0], np.float32).tobytes())
    dense = np.zeros(6, np.float32)
    dense[[1, 5]] = [5.0, -3.0]
    expected = X + dense.reshape(2, 3)
    np.testing.assert_array_equal(_run(load_onnx(path), X), expected)
    with pytest.raises(ExternalReferenceError, match="sparse_value"):
        load_onnx(_save(_sparse_constant_model("../values.bin"), secret / "model" / "m.onnx"))


def _if_model(location: str) -> onnx.ModelProto:
    """Y = If(cond) then X + K else X - K, K a Constant inside both bodies stored externally."""

    def body(op: str) -> onnx.GraphProto:
        k = _externalize(numpy_helper.from_array(B[:3], "K"), location)
        nodes = [helper.make_node("Constant", [], [f"K_{op}"], name=f"k_{op}", value=k),
                 helper.make_node(op, ["X", f"K_{op}"], [f"Y_{op}"], name=op)]
        return helper.make_graph(nodes, f"body_{op}", [],
                                 [helper.make_tensor_value_info(f"Y_{op}", TensorProto.FLOAT, [2, 3])])

    node = helper.make_node("If", ["cond"], ["Y"], name="branch", then_branch=body("Add"), else_branch=body("Sub"))
    graph = helper.make_graph([node], "if", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3]),
                                             helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_tensor_in_a_control_flow_body(secret):
    (secret / "model" / "k.bin").write_bytes(B[:3].tobytes())
    path = _save(_if_model("k.bin"), secret / "model" / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    module = gd.compile(load_onnx(path)).eval()
    for cond in (True, False):
        expected = session.run(None, {"X": X, "cond": np.array(cond)})[0]
        np.testing.assert_allclose(expected, X + B[:3] if cond else X - B[:3], rtol=1e-6)
        with torch.no_grad():
            got = module(torch.from_numpy(X), torch.tensor(cond))
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    (secret / "k.bin").write_bytes(B[:3].tobytes())
    body = r"node 'branch' \(If\) attribute '(then|else)_branch', body 'body_(Add|Sub)': node 'k_(Add|Sub)'"
    with pytest.raises(ExternalReferenceError, match=body):
        load_onnx(_save(_if_model(str(secret / "k.bin")), secret / "model" / "m.onnx"))


def test_loop_body_nested_two_deep(secret):
    """A Loop whose body holds an If whose branch holds the external Constant."""
    inner = _if_model("../secret.bin").graph.node[0]
    loop_body = helper.make_graph([inner, helper.make_node("Identity", ["c_in"], ["c_out"])], "loop_body",
                                  [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                                   helper.make_tensor_value_info("c_in", TensorProto.BOOL, [])],
                                  [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
                                   helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3])])
    loop = helper.make_node("Loop", ["n", "cond"], ["Ys"], name="loop", body=loop_body)
    graph = helper.make_graph([loop], "loop", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3]),
                                               helper.make_tensor_value_info("n", TensorProto.INT64, []),
                                               helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("Ys", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ExternalReferenceError, match=r"'body', body 'loop_body': node 'branch'.*'\.\./secret\.bin'"):
        load_onnx(_save(model, secret / "model" / "m.onnx"))


def test_bytes_and_model_proto_need_a_named_folder(tmp_path):
    (tmp_path / "w.bin").write_bytes(W.tobytes())
    model = _matmul_model("w.bin")
    with pytest.raises(ExternalReferenceError, match="not read from a file; pass external_data_dir="):
        load_onnx(model.SerializeToString())
    with pytest.raises(ExternalReferenceError, match="not read from a file"):
        load_onnx(model)
    np.testing.assert_allclose(_run(load_onnx(model.SerializeToString(), external_data_dir=tmp_path), X),
                               X @ W + B, rtol=1e-6)
    np.testing.assert_allclose(_run(load_onnx(model, external_data_dir=tmp_path), X), X @ W + B, rtol=1e-6)
    assert model.graph.initializer[0].data_location == TensorProto.EXTERNAL  # the caller's proto is untouched


def test_external_data_dir_names_another_folder(secret):
    weights = secret / "weights"
    weights.mkdir()
    (weights / "w.bin").write_bytes(W.tobytes())
    path = _save(_matmul_model("w.bin"), secret / "model" / "m.onnx")
    with pytest.raises(FileFormatError, match="cannot read"):
        gd.load(path)
    np.testing.assert_allclose(_run(gd.load(path, external_data_dir=weights), X), X @ W + B, rtol=1e-6)
    # the named folder confines just as well
    with pytest.raises(ExternalReferenceError, match=f"climbs out .* inside {weights}"):
        gd.load(_save(_matmul_model("../secret.bin"), secret / "model" / "m.onnx"), external_data_dir=weights)


def test_convert_cli_refuses_outside_onnx_data(secret, capsys, monkeypatch):
    (secret / "secret_w.bin").write_bytes(W.tobytes())
    monkeypatch.chdir(secret)
    path = _save(_matmul_model("../secret_w.bin"), secret / "model" / "m.onnx")
    out = secret / "out.safetensors"
    assert cli(["convert", str(path), str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "initializer 'W'" in err and "'../secret_w.bin'" in err
    assert not out.exists()


def test_one_region_read_by_many_tensors_is_charged_to_the_budget(tmp_path):
    (tmp_path / "w.bin").write_bytes(np.ones(16384, np.float32).tobytes())  # 64 KiB on disk
    inits = [_externalize(numpy_helper.from_array(np.zeros(16384, np.float32), f"w{i}"), "w.bin") for i in range(64)]
    graph = helper.make_graph([helper.make_node("Identity", ["X"], ["Y"])], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])], initializer=inits)
    path = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    with pytest.raises(ResourceLimitError, match="read again and again"):  # 4 MiB asked for by 64 KiB of data
        load_onnx(path, max_bytes=2 << 20)
    assert load_onnx(path, max_bytes=64 << 20).meta["onnx"]["inputs"] == ["X:0"]


def test_sharded_checkpoint_shard_linking_outside_its_folder_is_refused(tmp_path):
    import graphdnn as gd
    from graphdnn.errors import FileFormatError

    g = gd.Graph()
    x = g.placeholder("X", (None, 4))
    gd.layers.dense(x, 3, name="hidden1")
    model = gd.compile(g)
    inside = tmp_path / "model"
    inside.mkdir()
    path = inside / "m.safetensors"
    gd.save(model, path, max_shard_size=64)
    index = next(inside.glob("*.index.json"))
    shard = sorted(inside.glob("*.safetensors"))[0]
    outside = tmp_path / "elsewhere.safetensors"
    shard.rename(outside)
    shard.symlink_to(outside)
    with pytest.raises(FileFormatError, match="outside the checkpoint's folder"):
        gd.load(index)
    inner = inside / "kept.safetensors"  # a link that stays inside the folder is fine
    outside.rename(inner)
    shard.unlink()
    shard.symlink_to(inner)
    assert gd.load(index).get_tensor("hidden1/kernel") is not None
