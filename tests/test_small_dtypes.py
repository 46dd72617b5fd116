"""ONNX's small element types (int4, uint4, int2, uint2, float4_e2m1fn, float8_e8m0fnu): import,
compute, export. graphdnn holds them unpacked, one element per byte (see ``graphdnn.small_dtypes``)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import graphdnn as gd
from converters.onnx_export import export_onnx
from converters.onnx_import import load_onnx
from converters.onnx_tensors import array_to_torch, proto_to_torch, torch_to_array, torch_to_proto
from graphdnn.dtypes import dtype_name, onnx_code, onnx_to_name, torch_dtype
from graphdnn.errors import GraphError
from graphdnn.ops.registry import lookup
from graphdnn.small_dtypes import decode, encode, storage

# Rounding ties, saturation, wrap-around, negatives, signed zero and the special values.
CAST_VALUES = np.array(
    [0.0, -0.0, 0.25, 0.5, 0.75, 1.25, 1.5, 1.75, 2.5, 3.5, 5.0, 5.5, 6.0, 6.5, 7.0, 8.0, 9.0, 15.0, 16.0,
     -0.25, -0.5, -1.5, -2.5, -3.5, -5.0, -7.0, -8.0, -9.0, -16.0, 0.3, -2.7, 1e6, -1e6, 1e-7],
    dtype=np.float32,
)
SPECIAL = np.array([np.inf, -np.inf, np.nan], dtype=np.float32)


def _model(nodes: list, inputs: list, outputs: list, inits: tuple | list = (), opset: int = 25) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 11 if opset >= 25 else 10
    return model


def _compile(model: onnx.ModelProto) -> tuple[gd.Graph, torch.nn.Module]:
    graph = load_onnx(model)
    module = gd.compile(graph, inputs=graph.meta["onnx"]["inputs"], outputs=graph.meta["onnx"]["outputs"]).eval()
    return graph, module


def _run(module: torch.nn.Module, *feeds: np.ndarray) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = module(*[torch.from_numpy(np.ascontiguousarray(f)) for f in feeds])
    return out if isinstance(out, tuple) else (out,)


# ------------------------------------------------------------------------------------------------
# int4-weight model (DequantizeLinear of int4 initializers, then MatMul) against onnxruntime
# ------------------------------------------------------------------------------------------------
def _int4_weight_model(k: int = 64, n: int = 24, block: int = 32, kind: int = TensorProto.INT4,
                       seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    lo, hi, np_type = (-8, 8, ml_dtypes.int4) if kind == TensorProto.INT4 else (0, 16, ml_dtypes.uint4)
    w = rng.integers(lo, hi, size=(k, n)).astype(np_type)
    scale = (rng.random((k // block, n)) * 0.05 + 0.01).astype(np.float32)
    zp = rng.integers(max(lo, -3), 4, size=(k // block, n)).astype(np_type)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(scale, "W_scale"),
             numpy_helper.from_array(zp, "W_zero_point"), numpy_helper.from_array(rng.standard_normal(n).astype(
                 np.float32), "bias")]
    nodes = [
        helper.make_node("DequantizeLinear", ["W", "W_scale", "W_zero_point"], ["W_deq"], axis=0, block_size=block),
        helper.make_node("MatMul", ["x", "W_deq"], ["mm"]),
        helper.make_node("Add", ["mm", "bias"], ["y"]),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", k])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n])], inits, opset=21)
    onnx.checker.check_model(model, full_check=True)
    return model


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    # ORT's default optimizations turn DequantizeLinear + MatMul into an approximate MatMulNBits;
    # the plain kernels compute what the ONNX spec says.
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("kind", [TensorProto.INT4, TensorProto.UINT4])
def test_int4_weight_model_matches_onnxruntime(kind):
    model = _int4_weight_model(kind=kind)
    graph, module = _compile(model)
    name = onnx_to_name(kind)
    assert graph.get_operation("W").attrs["dtype"] == name and graph.get_tensor("W").dtype == name
    assert graph.get_operation("W").attrs["trainable"] is False
    assert graph.values["W"].dtype == torch_dtype(name) and graph.get_tensor("W_deq").dtype == "float32"
    x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    (ours,) = _run(module, x)
    (expected,) = _ort(model, {"x": x})
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_int4_initializer_round_trip_keeps_type_and_bytes(tmp_path):
    model = _int4_weight_model()
    graph, module = _compile(model)
    path = tmp_path / "int4.onnx"
    export_onnx(graph, path)
    exported = onnx.load(path)
    onnx.checker.check_model(exported, full_check=True)
    before = {t.name: t for t in model.graph.initializer}
    after = {t.name: t for t in exported.graph.initializer}
    for name in ("W", "W_zero_point"):
        assert after[name].data_type == TensorProto.INT4
        assert list(after[name].dims) == list(before[name].dims)
        assert after[name].raw_data == before[name].raw_data
    # and again through graphdnn: the same type, bytes and results
    graph2, module2 = _compile(exported)
    assert graph2.get_tensor("W").dtype == "int4"
    export_onnx(graph2, tmp_path / "again.onnx")
    again = {t.name: t for t in onnx.load(tmp_path / "again.onnx").graph.initializer}
    assert again["W"].data_type == TensorProto.INT4 and again["W"].raw_data == before["W"].raw_data
    x = np.random.default_rng(2).standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_array_equal(_run(module, x)[0].numpy(), _run(module2, x)[0].numpy())
    np.testing.assert_allclose(_run(module2, x)[0].numpy(), _ort(exported, {"x": x})[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", [TensorProto.INT4, TensorProto.UINT4])
def test_small_type_variables_save_load_and_restore(tmp_path, kind):
    """Checkpoints hold int4/uint4 variables as their int8/uint8 bytes; the graph keeps the type."""
    graph, module = _compile(_int4_weight_model(kind=kind))
    path = tmp_path / "q.safetensors"
    gd.save(graph, path)
    loaded = gd.load(path)
    assert loaded.values["W"].dtype == graph.values["W"].dtype
    expected = "int4" if kind == TensorProto.INT4 else "uint4"
    assert loaded.get_tensor("W").dtype == graph.get_tensor("W").dtype == expected
    assert torch.equal(storage(loaded.values["W"]), storage(graph.values["W"]))
    x = np.random.default_rng(3).standard_normal((3, 64)).astype(np.float32)
    module2 = gd.compile(loaded, inputs=loaded.meta["onnx"]["inputs"], outputs=loaded.meta["onnx"]["outputs"])
    np.testing.assert_array_equal(_run(module, x)[0].numpy(), _run(module2, x)[0].numpy())
    fresh, _ = _compile(_int4_weight_model(kind=kind))
    shape, raw = tuple(fresh.get_tensor("W").shape), storage(fresh.values["W"]).dtype
    fresh.set_value("W", torch.zeros(shape, dtype=raw))
    gd.restore(fresh, path, include="W")
    assert torch.equal(storage(fresh.values["W"]), storage(graph.values["W"]))
    with pytest.raises(GraphError, match="range"):
        fresh.set_value("W", torch.full(shape, 100, dtype=raw))


@pytest.mark.parametrize("np_type", [ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.int2, ml_dtypes.uint2,
                                     ml_dtypes.float4_e2m1fn, ml_dtypes.float8_e8m0fnu])
def test_tensor_proto_unpack_and_pack(np_type):
    values = np.arange(-7, 8, dtype=np.float32).reshape(3, 5)  # odd count: packing pads the last byte
    if np_type == ml_dtypes.float8_e8m0fnu:
        values = np.exp2(values)
    array = values.astype(np_type)
    proto = numpy_helper.from_array(array, "t")
    t = proto_to_torch(proto)
    assert dtype_name(t.dtype) == np.dtype(np_type).name and tuple(t.shape) == (3, 5)
    np.testing.assert_array_equal(decode(t).numpy().astype(np.float32), array.astype(np.float32))
    back = torch_to_proto(t, "t")
    assert back.data_type == proto.data_type == onnx_code(np.dtype(np_type).name)
    assert back.raw_data == proto.raw_data
    assert torch_to_array(array_to_torch(array)).tobytes() == array.tobytes()


# ------------------------------------------------------------------------------------------------
# Cast to and from the small types against the ONNX reference (and onnxruntime where it agrees)
# ------------------------------------------------------------------------------------------------
def _cast_round_trip(to: int, x: np.ndarray, **attrs: object) -> tuple:
    """A model ``x -> Cast(to) -> small -> Cast(FLOAT) -> y``; returns graphdnn's and the reference's
    results for the small value and y."""
    nodes = [helper.make_node("Cast", ["x"], ["small"], to=to, **attrs),
             helper.make_node("Cast", ["small"], ["y"], to=TensorProto.FLOAT)]
    source = helper.np_dtype_to_tensor_dtype(x.dtype)
    model = _model(nodes, [helper.make_tensor_value_info("x", source, list(x.shape))],
                   [helper.make_tensor_value_info("small", to, list(x.shape)),
                    helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))])
    graph, module = _compile(model)
    assert graph.get_tensor("small").dtype == onnx_to_name(to)
    small, y = _run(module, x)
    ref_small, ref_y = ReferenceEvaluator(model).run(None, {"x": x})
    return (small, y), (ref_small, ref_y), model


@pytest.mark.parametrize("to", [TensorProto.INT4, TensorProto.UINT4, TensorProto.INT2, TensorProto.UINT2])
def test_cast_float_to_small_int_and_back(to):
    x = CAST_VALUES  # truncation toward zero, then the higher bits are discarded (8 -> -8 for int4)
    (small, y), (ref_small, ref_y), model = _cast_round_trip(to, x)
    assert small.dtype == torch_dtype(onnx_to_name(to))
    np.testing.assert_array_equal(torch_to_array(small).astype(np.int64), ref_small.astype(np.int64))
    np.testing.assert_array_equal(y.numpy(), ref_y)
    if to in (TensorProto.INT4, TensorProto.UINT4):  # onnxruntime agrees on whole numbers (it rounds halves away)
        whole = np.arange(-20, 21, dtype=np.float32)
        sub = _model(list(model.graph.node), [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
        (ours,) = _run(_compile(sub)[1], whole)
        np.testing.assert_array_equal(ours.numpy(), _ort(sub, {"x": whole})[0])


def test_cast_float_to_int4_known_values():
    x = np.array([7.9, 8.0, -8.0, -9.0, 15.0, 16.0, -0.5, 2.5], dtype=np.float32)
    y = lookup("Cast").lower(lookup("Cast").lower(torch.from_numpy(x), to=TensorProto.INT4), to=TensorProto.FLOAT)
    assert y.tolist() == [7, -8, -8, 7, -1, 0, 0, 2]


@pytest.mark.parametrize("src", [np.float32, np.float16])
def test_cast_to_float4e2m1_and_back(src):
    with np.errstate(over="ignore"):  # 1e6 is inf in float16
        x = np.concatenate([CAST_VALUES, SPECIAL]).astype(src)
    (small, y), (ref_small, ref_y), _ = _cast_round_trip(TensorProto.FLOAT4E2M1, x)
    got = torch_to_array(small).astype(np.float32)
    # round to nearest even, saturate to +/-6 (infinities too); NaN gives 0 like the reference
    np.testing.assert_array_equal(got, ref_small.astype(np.float32))
    np.testing.assert_array_equal(y.numpy(), ref_y)
    assert np.signbit(got[1]) and not np.signbit(got[0])  # -0 stays -0
    assert got[list(x).index(np.float32(5.0))] == 4.0 and got[list(x).index(np.float32(7.0))] == 6.0
    assert list(got[-3:]) == [6.0, -6.0, 0.0]


@pytest.mark.parametrize("round_mode", ["up", "down", "nearest"])
@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("src", [np.float32, np.float16])
def test_cast_to_float8e8m0(round_mode, saturate, src):
    x = np.concatenate([np.exp2(np.arange(-126, 128, 0.37)), [0.0, 3.0, 0.124, 1.1, 1.5, np.nan]]).astype(np.float32)
    if src == np.float16:
        x = x[np.abs(x) < 60000].astype(np.float16)
    (small, y), (ref_small, ref_y), _ = _cast_round_trip(TensorProto.FLOAT8E8M0, x, round_mode=round_mode,
                                                         saturate=saturate)
    np.testing.assert_array_equal(torch_to_array(small).view(np.uint8), ref_small.view(np.uint8))
    np.testing.assert_array_equal(y.numpy(), ref_y)
    inf = encode(torch.tensor([np.inf]), torch.float8_e8m0fnu, saturate, round_mode)
    assert inf.view(torch.uint8).item() == (0xFE if saturate else 0xFF)  # the Cast table: E8M0_MAX or NaN


def test_castlike_takes_the_small_type_of_its_target():
    target = numpy_helper.from_array(np.array([1], dtype=ml_dtypes.int4), "like")
    nodes = [helper.make_node("CastLike", ["x", "like"], ["small"]),
             helper.make_node("Cast", ["small"], ["y"], to=TensorProto.FLOAT)]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(CAST_VALUES)])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [len(CAST_VALUES)])], [target])
    _, module = _compile(model)
    np.testing.assert_array_equal(_run(module, CAST_VALUES)[0].numpy(),
                                  ReferenceEvaluator(model).run(None, {"x": CAST_VALUES})[0])


# ------------------------------------------------------------------------------------------------
# QuantizeLinear / DequantizeLinear
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("np_type,lo,hi", [(ml_dtypes.int4, -8, 7), (ml_dtypes.uint4, 0, 15), (ml_dtypes.int2, -2, 1),
                                           (ml_dtypes.uint2, 0, 3)])
def test_quantize_saturates_to_the_small_range(np_type, lo, hi):
    x = np.linspace(-40, 40, 33, dtype=np.float32).reshape(3, 11)
    scale = np.array([2.0, 3.0, 0.5], dtype=np.float32)
    zp = np.array([1, 0, 1], dtype=np.int64).clip(lo, hi).astype(np_type)
    inits = [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zp, "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=0),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=0)]
    tensor_type = helper.np_dtype_to_tensor_dtype(np.dtype(np_type))
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 11])],
                   [helper.make_tensor_value_info("q", tensor_type, [3, 11]),
                    helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 11])], inits, opset=25)
    _, module = _compile(model)
    q, y = _run(module, x)
    ref_q, ref_y = ReferenceEvaluator(model).run(None, {"x": x})
    values = torch_to_array(q).astype(np.int64)
    assert values.min() == lo and values.max() == hi
    np.testing.assert_array_equal(values, ref_q.astype(np.int64))
    np.testing.assert_allclose(y.numpy(), ref_y, rtol=1e-6)


def test_small_graph_values_copy_and_set():
    g = gd.Graph("small")
    w = proto_to_torch(numpy_helper.from_array(np.array([[-8, 7], [3, -1]], dtype=ml_dtypes.int4)))
    t = g.variable("w", value=w, trainable=False)  # copies: torch cannot clone the int4 shell
    assert t.dtype == "int4" and g.values["w"].data_ptr() != w.data_ptr()
    g.set_value("w", encode(torch.tensor([[1, 2], [3, 4]]), torch.int4))
    assert decode(g.values["w"]).tolist() == [[1, 2], [3, 4]]


def test_int4_through_data_movement_ops():
    """Ops ONNX allows on int4 (Transpose, Reshape, Pad, ConstantOfShape, Concat...) keep the type."""
    w = np.arange(-6, 6).reshape(3, 4).astype(ml_dtypes.int4)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array(2.0, np.float32), "s"),
             numpy_helper.from_array(np.array([4, 3], np.int64), "shape"),
             numpy_helper.from_array(np.array([1, 0, 0, 1], np.int64), "pads"),
             numpy_helper.from_array(np.array(-8, ml_dtypes.int4), "fill"),
             numpy_helper.from_array(np.array([2, 4], np.int64), "cshape")]
    fill = helper.make_tensor("v", TensorProto.INT4, [1], [7])
    nodes = [helper.make_node("Transpose", ["W"], ["t"], perm=[1, 0]),
             helper.make_node("Reshape", ["t", "shape"], ["r"]),
             helper.make_node("Pad", ["r", "pads", "fill"], ["p"]),
             helper.make_node("ConstantOfShape", ["cshape"], ["c"], value=fill),
             helper.make_node("Concat", ["p", "c"], ["cat"], axis=0),
             helper.make_node("DequantizeLinear", ["cat", "s"], ["y"])]
    model = _model(nodes, [], [helper.make_tensor_value_info("cat", TensorProto.INT4, None),
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits, opset=21)
    graph, module = _compile(model)
    assert graph.get_tensor("p").dtype == "int4"
    cat, y = _run(module)
    ref_cat, ref_y = ReferenceEvaluator(model).run(None, {})
    np.testing.assert_array_equal(torch_to_array(cat).astype(np.int64), ref_cat.astype(np.int64))
    np.testing.assert_array_equal(y.numpy(), ref_y)
