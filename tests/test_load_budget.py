"""The memory budget of a load: tiny hostile files that ask for gigabytes raise ``ResourceLimitError``
before allocating, legitimate files still load, and ``max_bytes=`` sets the budget."""

from __future__ import annotations

import collections
import io
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from graphdnn.converters.named_tensors import read_named_tensors
from graphdnn.converters.onnx_import import load_onnx
from graphdnn.converters.tf_import import load_tf
from onnx import TensorProto, helper, numpy_helper

import graphdnn as gd
from graphdnn import budget
from graphdnn.errors import FileFormatError, ResourceLimitError

sys.path.insert(0, str(Path(__file__).parent))
from _protowire import len_field, varint, varint_field  # noqa: E402

MiB = 1 << 20


# ----------------------------------------------------------------------------------------- builders
def _model(nodes, outputs, inits=()):
    graph = helper.make_graph(nodes, "g", [], outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save(tmp_path, model, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, path)
    return path


def _int_const(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.int64), name))


def _constant_of_shape(dims):
    return _model([_int_const("s", dims), helper.make_node("ConstantOfShape", ["s"], ["y"])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])


def _sparse_constant(dims):
    values = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    indices = helper.make_tensor("i", TensorProto.INT64, [1], [5])
    node = helper.make_node("Constant", [], ["y"], sparse_value=helper.make_sparse_tensor(values, indices, dims))
    return _model([node], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])


def _range(limit):
    nodes = [_int_const("a", 0), _int_const("b", limit), _int_const("d", 1), helper.make_node("Range", ["a", "b", "d"],
                                                                                              ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("y", TensorProto.INT64, None)])


def _tf_const(name, dtype, dims, field, payload):
    """A NodeDef ``Const`` whose ``value`` TensorProto has ``dims`` and the packed ``*_val`` ``field``."""
    shape = b"".join(len_field(2, varint_field(1, d)) for d in dims)
    tensor = varint_field(1, dtype) + len_field(2, shape) + len_field(field, payload)
    attr = len_field(5, len_field(1, b"value") + len_field(2, len_field(8, tensor)))
    dtype_attr = len_field(5, len_field(1, b"dtype") + len_field(2, varint_field(6, dtype)))
    return len_field(1, len_field(1, name.encode()) + len_field(2, b"Const") + attr + dtype_attr)


def _tf_node(name, op, inputs):
    t_attr = len_field(5, len_field(1, b"T") + len_field(2, varint_field(6, _F32)))
    return len_field(1, len_field(1, name.encode()) + len_field(2, op.encode())
                     + b"".join(len_field(3, x.encode()) for x in inputs) + t_attr)


def _tf_relu(name, x):
    return _tf_node(name, "Relu", [x])


def _tf_meta(tmp_path, nodes, name="bomb.meta"):
    path = tmp_path / name
    path.write_bytes(len_field(2, b"".join(nodes)))  # MetaGraphDef.graph_def = GraphDef(node=...)
    return path


_F32, _I32, _C128 = 1, 3, 18  # TF DataType enums
_ONE_FLOAT = np.array([1.5], "<f4").tobytes()


def _torch_zip_bomb(path, numel):
    """A ``.pt`` whose state dict holds one float tensor of ``numel`` zeros, its record deflated."""

    class Storage:
        pass

    class Rebuild:
        def __reduce__(self):
            args = (Storage(), 0, (numel,), (1,), False, collections.OrderedDict())
            return torch._utils._rebuild_tensor_v2, args

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel) if isinstance(obj, Storage) else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"w": Rebuild()})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        chunk = bytes(MiB)
        with z.open("archive/data/0", "w", force_zip64=True) as f:  # streamed: the test itself stays small
            for _ in range(numel * 4 // MiB):
                f.write(chunk)


# ------------------------------------------------------------------------------------------ bombs
def test_constant_of_shape_bomb_is_refused_before_allocating(tmp_path):
    path = _save(tmp_path, _constant_of_shape([10**9]))
    assert path.stat().st_size < 200
    with pytest.raises(ResourceLimitError) as err:
        gd.load(path)
    message = str(err.value)
    assert "'y'" in message and "4000000000 bytes" in message and "max_bytes=" in message and str(path) in message


def test_sparse_constant_bomb_is_refused_before_densifying(tmp_path):
    path = _save(tmp_path, _sparse_constant([10**8]))
    with pytest.raises(ResourceLimitError, match=r"sparse tensor with dims \[100000000\]"):
        gd.load(path)


def _expand(dims):
    one = helper.make_node("Constant", [], ["x"], value=numpy_helper.from_array(np.ones(1, np.float32), "x"))
    return _model([one, _int_const("s", dims), helper.make_node("Expand", ["x", "s"], ["y"])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])


@pytest.mark.parametrize(("model", "size"), [(_range(10**9), 8 * 10**9), (_expand([10**5, 10**5]), 4 * 10**10)],
                         ids=["Range", "Expand"])
def test_folded_constant_bomb_is_refused_at_load(tmp_path, model, size):
    path = _save(tmp_path, model)
    with pytest.raises(ResourceLimitError, match=rf"output 'y'.*{size} bytes"):
        gd.load(path)
    with pytest.raises(ResourceLimitError):  # the lower-level importer has the same budget
        load_onnx(path)


def test_folding_at_compile_time_is_bounded_for_a_loaded_graph():
    g = gd.Graph("folds")
    start, limit, delta = (g.constant(np.array(v, np.int64), name=n) for n, v in (("a", 0), ("b", 10**6), ("d", 1)))
    y = g.add_op("Range", [start, limit, delta], name="r").out()
    expected = torch.arange(10**6)
    assert torch.equal(gd.compile(g, [], [y])(), expected)  # a graph built in code has no budget
    budget.remember(g, budget.LoadBudget("folds.onnx", max_bytes=MiB))  # as if loaded under a 1 MiB budget
    with pytest.raises(ResourceLimitError, match=r"op 'r' \(Range\), folded to a constant needs 7.6 MiB"):
        gd.compile(g, [], [y])
    budget.remember(g, budget.LoadBudget("folds.onnx", max_bytes=16 * MiB))
    assert torch.equal(gd.compile(g, [], [y])(), expected)


def test_tf_complex_const_bomb(tmp_path):
    payload = np.array([1.0, 2.0], "<f8").tobytes()  # one complex128 value that TF repeats over the shape
    path = _tf_meta(tmp_path, [_tf_const("c", _C128, [1 << 28], 12, payload)])
    assert path.stat().st_size < 80
    with pytest.raises(ResourceLimitError, match=r"complex128 tensor of shape \[268435456\] needs 4.0 GiB"):
        gd.load(path)


def test_tf_consts_are_charged_to_one_total(tmp_path):
    one = [_tf_const("c0", _F32, [1 << 21], 5, _ONE_FLOAT), _tf_relu("out", "c0")]  # 8 MiB each
    graph = load_tf(_tf_meta(tmp_path, one, "one.meta"), outputs=["out:0"], max_bytes=20 * MiB)
    assert torch.equal(graph.values["c0"], torch.full((1 << 21,), 1.5))  # TF's rule: the last value repeats
    three = [_tf_const(f"c{i}", _F32, [1 << 21], 5, _ONE_FLOAT) for i in range(3)]
    with pytest.raises(ResourceLimitError, match="set by max_bytes"):  # each fits, all three do not
        load_tf(_tf_meta(tmp_path, three + [_tf_relu("out", "c0")], "three.meta"), outputs=["out:0"],
                max_bytes=20 * MiB)


def test_tf_tile_bomb_is_refused_when_compiled(tmp_path):
    nodes = [_tf_const("c", _F32, [1], 5, _ONE_FLOAT), _tf_const("m", _I32, [1], 7, varint(10**9)),
             _tf_node("tile", "Tile", ["c", "m"]), _tf_relu("out", "tile")]
    graph = gd.load(_tf_meta(tmp_path, nodes), outputs=["out:0"])  # the graph itself is small
    with pytest.raises(ResourceLimitError, match=r"op 'tile' \(Tile\), folded to a constant needs 3.7 GiB"):
        gd.compile(graph, [], ["out:0"])


def test_torch_zip_bomb_is_refused_from_the_central_directory(tmp_path):
    path = tmp_path / "bomb.pt"
    _torch_zip_bomb(path, 80 * MiB)  # 320 MiB of zeros in a few hundred KiB
    assert path.stat().st_size < 2 * MiB
    with pytest.raises(ResourceLimitError, match=r"member 'archive/data/0' \(uncompressed\) needs 320.0 MiB"):
        read_named_tensors(path)


def test_npz_members_are_charged(tmp_path):
    path = tmp_path / "w.npz"
    np.savez_compressed(path, w=np.zeros((512, 512), np.float32))
    with pytest.raises(ResourceLimitError, match="array 'w'"):
        read_named_tensors(path, max_bytes=MiB // 2)
    assert read_named_tensors(path).read_one("w").shape == (512, 512)


@pytest.mark.parametrize("model", [_constant_of_shape([4, -5]), _sparse_constant([-3])],
                         ids=["ConstantOfShape", "sparse Constant"])
def test_negative_dims_are_clean_errors(tmp_path, model):
    with pytest.raises(FileFormatError, match="negative dimension") as err:
        gd.load(_save(tmp_path, model))
    assert "'y'" in str(err.value) or "Constant" in str(err.value)


def test_memory_error_is_never_a_successful_load(tmp_path, monkeypatch):
    path = _save(tmp_path, _constant_of_shape([3]))

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", out_of_memory)
    with pytest.raises(ResourceLimitError, match="memory ran out"):
        gd.load(path)


def test_bombs_stay_small_in_memory(tmp_path):
    files = [_save(tmp_path, _constant_of_shape([10**9]), "a.onnx"),
             _save(tmp_path, _sparse_constant([10**8]), "b.onnx"), _save(tmp_path, _range(10**9), "c.onnx"),
             _tf_meta(tmp_path, [_tf_const("c", _C128, [1 << 28], 12, np.zeros(2, "<f8").tobytes())])]
    script = (
        "import json, resource, sys, graphdnn\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "names = []\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        graphdnn.load(p)\n"
        "    except graphdnn.ResourceLimitError:\n"
        "        names.append(p)\n"
        "print(json.dumps([names, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before]))\n")
    out = subprocess.run([sys.executable, "-c", script, *map(str, files)], capture_output=True, text=True, check=True,
                         timeout=120)
    refused, grown_kib = json.loads(out.stdout.strip().splitlines()[-1])
    assert refused == [str(f) for f in files]
    assert grown_kib < 100 * 1024  # each bomb asked for gigabytes


# ------------------------------------------------------------------------------------ legitimate
def test_legitimate_model_loads_and_runs(tmp_path):
    model = _model([_int_const("s", [2, 3]), helper.make_node("ConstantOfShape", ["s"], ["c"],
                                                              value=helper.make_tensor("f", TensorProto.FLOAT, [1],
                                                                                       [0.5])),
                    helper.make_node("Relu", ["x", ], ["r"]), helper.make_node("Add", ["r", "c"], ["y"])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model.graph.input.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]))
    graph = gd.load(_save(tmp_path, model))
    x = torch.tensor([[-1.0, 2.0, -3.0], [4.0, -5.0, 6.0]])
    torch.testing.assert_close(gd.compile(graph)(x), torch.relu(x) + 0.5)


def test_max_bytes_sets_the_budget(tmp_path):
    numel = 70_000_000  # 280 MB of float32: over the 256 MiB floor that a 100-byte file gets
    path = _save(tmp_path, _constant_of_shape([numel]))
    with pytest.raises(ResourceLimitError):
        gd.load(path)
    graph = gd.load(path, max_bytes=1 << 30)
    value = graph.values["y"]
    assert value.shape == (numel,) and value.dtype == torch.float32 and not value[::999_983].any()
    del graph, value
    with pytest.raises(ResourceLimitError, match="set by max_bytes"):  # it can also lower the budget
        gd.load(_save(tmp_path, _constant_of_shape([1 << 20]), "small.onnx"), max_bytes=MiB)


def test_budget_arithmetic():
    b = budget.LoadBudget("f", source_bytes=10)
    assert b.limit == budget.FACTOR * 10 + budget.FLOOR
    b.add_source(5)
    assert b.limit == budget.FACTOR * 15 + budget.FLOOR
    b.charge(b.limit - 1, "t")
    with pytest.raises(ResourceLimitError, match="t2 needs 2 bytes"):
        b.charge(2, "t2")
    assert budget.tensor_bytes([2**40, 2**40], 8, "t") == 2**83  # exact, no int64 wrap-around
    with pytest.raises(FileFormatError, match="negative dimension -1"):
        budget.tensor_bytes([3, -1], 4, "t")
    with pytest.raises(ValueError, match="max_bytes"):
        gd.load("model.onnx", max_bytes=-1)
