"""ONNX's small element types (int4, uint4, int2, uint2, float4_e2m1fn, float8_e8m0fnu): import,
compute, export. graphdnn holds them unpacked, one element per byte (see ``graphdnn.small_dtypes``)."""

from __future__ import annotations

from functools import partial

import ml_dtypes
import numpy as np
import onnx
import pytest
import torch
from graphdnn.converters.onnx_export import export_onnx
from graphdnn.converters.onnx_import import load_onnx
from graphdnn.converters.onnx_tensors import array_to_torch, proto_to_torch, torch_to_array, torch_to_proto
from helpers import run_ort
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import graphdnn as gd
from graphdnn.dtypes import dtype_name, onnx_code, onnx_to_name, torch_dtype
from graphdnn.errors import GraphError
from graphdnn.ops.registry import lookup
from graphdnn.small_dtypes import decode, encode, storage

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


# ORT's default optimizations turn DequantizeLinear + MatMul into an approximate MatMulNBits;
# the plain kernels compute what the ONNX spec says.
_plain_ort = partial(run_ort, optimize=False)


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
    (expected,) = _plain_ort(model, {"x": x})
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
    np.testing.assert_allclose(_run(module2, x)[0].numpy(), _plain_ort(exported, {"x": x})[0], rtol=1e-5, atol=1e-5)


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
# Cast: the rules of the ONNX spec, computed here from small formulas; the ONNX reference evaluator and
# onnxruntime are compared only on inputs where they follow the same rules.
# ------------------------------------------------------------------------------------------------
def _cast_model(to: int, x: np.ndarray, opset: int = 25, **attrs: object) -> onnx.ModelProto:
    """``x -> Cast(to) -> small -> Cast(FLOAT) -> y``, outputs ``small`` (unless float8) and ``y``."""
    nodes = [helper.make_node("Cast", ["x"], ["small"], to=to, **attrs),
             helper.make_node("Cast", ["small"], ["y"], to=TensorProto.FLOAT)]
    source = helper.np_dtype_to_tensor_dtype(x.dtype)
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))]
    if to not in FLOAT8:
        outputs.insert(0, helper.make_tensor_value_info("small", to, list(x.shape)))
    return _model(nodes, [helper.make_tensor_value_info("x", source, list(x.shape))], outputs, opset=opset)


def _cast_round_trip(to: int, x: np.ndarray, opset: int = 25, **attrs: object) -> tuple:
    """graphdnn's (small, y) and the model, for ``_cast_model`` (small is None for float8)."""
    model = _cast_model(to, x, opset, **attrs)
    graph, module = _compile(model)
    if to in FLOAT8:
        return None, _run(module, x)[0], model
    assert graph.get_tensor("small").dtype == onnx_to_name(to)
    small, y = _run(module, x)
    return small, y, model


def _reference(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ReferenceEvaluator(model).run(None, {"x": x})


def _half_even(x: np.ndarray) -> np.ndarray:
    """Round to the nearest integer, ties to the even one (spelled out, not ``np.round``)."""
    f = np.floor(x)
    d = x - f
    return f + (d > 0.5) + ((d == 0.5) & (np.mod(f, 2) == 1))


SMALL_INTS = {TensorProto.INT4: (-8, 7, 4), TensorProto.UINT4: (0, 15, 4), TensorProto.INT2: (-2, 1, 2),
              TensorProto.UINT2: (0, 3, 2)}


@pytest.mark.parametrize("to", list(SMALL_INTS))
def test_cast_float_to_small_int_rounds_half_to_even(to):
    """The int4/int2 notes: round to nearest, ties to even. Out of range (and inf/NaN) is undefined in
    ``Cast`` (float to fixed point), so only in-range results are asserted; the rest must be valid values."""
    lo, hi, _ = SMALL_INTS[to]
    x = np.concatenate([np.arange(-10, 17, 0.25), [0.3, -2.7, 6.9, 1e6, -1e6, 1e-7, -0.0], SPECIAL]).astype(np.float32)
    small, y, model = _cast_round_trip(to, x)
    assert small.dtype == torch_dtype(onnx_to_name(to))
    got = torch_to_array(small).astype(np.int64)
    with np.errstate(invalid="ignore"):
        expected = _half_even(x)
        defined = np.isfinite(x) & (expected >= lo) & (expected <= hi)
        ties = x - np.floor(x) == 0.5
    assert defined.sum() >= 15 and np.all((got >= lo) & (got <= hi))
    np.testing.assert_array_equal(got[defined], expected[defined])
    np.testing.assert_array_equal(y.numpy()[defined], expected[defined])  # back to float: exact
    at = {float(v): int(g) for v, g, d in zip(x, got, defined) if d}
    assert at[0.5] == 0 and at[-0.5] == 0 and at.get(1.5, 2) == 2 and at.get(2.5, 2) == 2
    # the reference truncates toward zero: it agrees on whole numbers; onnxruntime rounds ties away
    # from zero: it agrees away from ties
    whole = defined & (x == np.floor(x))
    np.testing.assert_array_equal(got[whole], _reference(model, x)[0].astype(np.int64)[whole])
    no_tie = defined & ~ties
    np.testing.assert_array_equal(got[no_tie], _plain_ort(model, {"x": x}, ["y"])[0][no_tie])
    # deterministic where undefined
    again = torch_to_array(_cast_round_trip(to, x)[0]).astype(np.int64)
    np.testing.assert_array_equal(got, again)


@pytest.mark.parametrize("to", list(SMALL_INTS))
def test_cast_integer_to_small_int_discards_higher_bits(to):
    """``Cast`` fixed point to fixed point: discard the higher bits, two's complement for signed types."""
    lo, hi, bits = SMALL_INTS[to]
    x = np.arange(-40, 41, dtype=np.int32)
    small, y, model = _cast_round_trip(to, x)
    expected = np.mod(x - lo, 1 << bits) + lo
    np.testing.assert_array_equal(torch_to_array(small).astype(np.int64), expected)
    np.testing.assert_array_equal(y.numpy(), expected.astype(np.float32))
    np.testing.assert_array_equal(_plain_ort(model, {"x": x}, ["y"])[0], expected.astype(np.float32))


def test_cast_to_int4_known_values():
    cast = lookup("Cast").lower
    x = torch.tensor([7.4, -8.0, 0.5, 1.5, 2.5, 3.5, -0.5, -2.5, -2.6], dtype=torch.float32)
    assert decode(cast(x, to=TensorProto.INT4)).tolist() == [7, -8, 0, 2, 2, 4, 0, -2, -3]
    n = torch.tensor([8, 9, -9, 15, 16, -1], dtype=torch.int64)
    assert decode(cast(n, to=TensorProto.INT4)).tolist() == [-8, -7, 7, -1, 0, -1]
    assert decode(cast(n, to=TensorProto.UINT4)).tolist() == [8, 9, 7, 15, 0, 15]
    assert decode(cast(torch.tensor([True, False]), to=TensorProto.INT2)).tolist() == [1, 0]


def test_castlike_takes_the_small_type_of_its_target():
    target = numpy_helper.from_array(np.array([1], dtype=ml_dtypes.int4), "like")
    nodes = [helper.make_node("CastLike", ["x", "like"], ["small"]),
             helper.make_node("Cast", ["small"], ["y"], to=TensorProto.FLOAT)]
    x = np.array([-8.0, -2.5, -0.5, 0.5, 1.5, 2.5, 3.0, 6.6, 7.0], dtype=np.float32)
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(x)])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [len(x)])], [target])
    graph, module = _compile(model)
    assert graph.get_tensor("small").dtype == "int4"
    (y,) = _run(module, x)
    np.testing.assert_array_equal(y.numpy(), _half_even(x))
    whole = x == np.floor(x)
    np.testing.assert_array_equal(y.numpy()[whole], _reference(model, x)[0][whole])


# ---- float4 E2M1 ---------------------------------------------------------------------------------
E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])  # codes 0..7 (S.EE.M without the sign)


def _e2m1_rule(x: float) -> float:
    """The float4 note's table: nearest of the grid, ties to the even code; beyond 6 and +/-inf: +/-6;
    NaN: 6; +/-0 stays."""
    if np.isnan(x):
        return 6.0
    a = min(abs(x), 6.0)
    dist = np.abs(E2M1 - a)
    best = np.flatnonzero(dist == dist.min())
    code = best[0] if len(best) == 1 else [c for c in best if c % 2 == 0][0]
    return float(np.copysign(E2M1[code], x))


@pytest.mark.parametrize("src", [np.float32, np.float16])
def test_cast_to_float4e2m1_follows_the_float4_table(src):
    mids = (E2M1[1:] + E2M1[:-1]) / 2  # every tie
    base = np.concatenate([E2M1, mids, mids + 0.01, mids - 0.01, [0.3, 2.7, 5.5, 6.5, 7.0, 100.0, 1e-7]])
    with np.errstate(over="ignore"):
        x = np.concatenate([base, -base, SPECIAL]).astype(src)
    small, y, model = _cast_round_trip(TensorProto.FLOAT4E2M1, x)
    got = torch_to_array(small).astype(np.float32)
    expected = np.array([_e2m1_rule(float(v)) for v in x], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))  # -0 stays -0
    np.testing.assert_array_equal(y.numpy(), expected)
    assert list(got[-3:]) == [6.0, -6.0, 6.0]
    # the reference follows the table except for NaN (it gives -0); onnxruntime has no float4 Cast
    ref = _reference(model, x)[0].astype(np.float32)
    finite = ~np.isnan(x)
    np.testing.assert_array_equal(got[finite], ref[finite])


# ---- float8 (E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ) -----------------------------------------------------
#: ONNX type -> (exponent bits, mantissa bits, bias, finite codes end at, has -0, saturate=0 overflow gives inf)
FLOAT8 = {
    TensorProto.FLOAT8E4M3FN: (4, 3, 7, 0x7E, True, False),
    TensorProto.FLOAT8E4M3FNUZ: (4, 3, 8, 0x7F, False, False),
    TensorProto.FLOAT8E5M2: (5, 2, 15, 0x7B, True, True),
    TensorProto.FLOAT8E5M2FNUZ: (5, 2, 16, 0x7F, False, False),
}


def _float8_grid(to: int) -> np.ndarray:
    """The non-negative values of codes 0..last (code order is value order), from the bit formula,
    plus one code past the largest: the value an overflowing x rounds to."""
    ebits, mbits, bias, last, _, _ = FLOAT8[to]
    codes = np.arange(last + 2)
    e, m = codes >> mbits, codes & ((1 << mbits) - 1)
    return np.where(e == 0, m / 2.0**mbits * 2.0 ** (1 - bias), (1 + m / 2.0**mbits) * 2.0 ** (e - bias))


def _float8_rule(to: int, x: float, saturate: int, opset: int) -> float:
    """The Cast tables: RNE ([x]); [x] > FLT_MAX and +/-inf saturate or give NaN/inf per ``saturate``."""
    _, _, _, last, signed_zero, overflow_inf = FLOAT8[to]
    grid = _float8_grid(to)
    fmax = grid[last]
    if np.isnan(x):
        return np.nan
    if np.isinf(x):
        if saturate:
            return np.nan if (not signed_zero and opset < 24) else np.copysign(fmax, x)  # FNUZ before Cast-24: NaN
        return np.copysign(np.inf, x) if overflow_inf else np.nan
    dist = np.abs(grid - abs(x))
    best = np.flatnonzero(dist == dist.min())
    code = best[0] if len(best) == 1 else [c for c in best if c % 2 == 0][0]
    if code > last:
        if saturate:
            return np.copysign(fmax, x)
        return np.copysign(np.inf, x) if overflow_inf else np.nan
    value = grid[code]
    return np.copysign(value, x) if (signed_zero or value != 0) else 0.0


@pytest.mark.parametrize("opset", [21, 24])
@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("to", list(FLOAT8))
def test_cast_to_float8_follows_the_cast_tables(to, saturate, opset):
    grid = _float8_grid(to)
    last = FLOAT8[to][3]
    mids = (grid[1:] + grid[:-1]) / 2  # every tie, the overflow threshold included
    base = np.concatenate([grid[: last + 1], mids, mids * (1 + 2.0**-12), mids * (1 - 2.0**-12), [1e6, 1e-7, 0.3]])
    x = np.concatenate([base, -base, SPECIAL]).astype(np.float32)
    _, y, model = _cast_round_trip(to, x, opset=opset, saturate=saturate)
    got = y.numpy()
    expected = np.array([_float8_rule(to, float(v), saturate, opset) for v in x], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)  # NaN where NaN
    np.testing.assert_array_equal(np.signbit(got[got == 0]), np.signbit(expected[expected == 0]))
    # the reference and onnxruntime follow the tables on finite inputs below the overflow threshold
    fmax = grid[last]
    plain = np.abs(x) < fmax
    np.testing.assert_array_equal(got[plain], _reference(model, x)[0][plain])
    np.testing.assert_array_equal(got[plain], _plain_ort(model, {"x": x}, ["y"])[0][plain])


# ---- float8 E8M0 --------------------------------------------------------------------------------
def _e8m0_rule(x: float, saturate: int, round_mode: str) -> int | None:
    """The code (exponent + 127) from ``round_mode`` and the Cast table; None where ONNX leaves it open."""
    if np.isnan(x):
        return 0xFF
    if x < 0 or (x == 0 and np.signbit(x)):
        return None  # unspecified
    if np.isinf(x) or x > 2.0**127:
        return 0xFE if saturate else 0xFF
    if x < 2.0**-127:
        return 0 if saturate else 0xFF
    m, e = np.frexp(np.float64(x))  # x = m * 2**e, m in [0.5, 1)
    m, e = 2 * m, int(e) - 1
    e += {"up": m > 1, "down": False, "nearest": m >= 1.5}[round_mode]
    return e + 127


@pytest.mark.parametrize("round_mode", ["up", "down", "nearest"])
@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("src", [np.float32, np.float16])
def test_cast_to_float8e8m0(round_mode, saturate, src):
    edges = [1.0, 1.25, 1.5, 1.75, 3.0, 0.124, 2.0**-127, 1.5 * 2.0**-127, 2.0**-128, 2.0**127, 1.5 * 2.0**127,
             3.4e38, 0.0, np.inf, np.nan]
    x = np.concatenate([np.exp2(np.arange(-149, 128, 0.37)), edges])
    x = x.astype(np.float32)
    if src == np.float16:
        x = x[(np.abs(x) < 60000) | ~np.isfinite(x)].astype(np.float16)
    small, y, model = _cast_round_trip(TensorProto.FLOAT8E8M0, x, round_mode=round_mode, saturate=saturate)
    got = torch_to_array(small).view(np.uint8)
    expected = np.array([_e8m0_rule(float(v), saturate, round_mode) for v in x])
    np.testing.assert_array_equal(got.astype(np.int64), expected.astype(np.int64))
    # the reference follows the same rules for normal float32 values up to E8M0_MAX
    normal = (x.astype(np.float32) >= 2.0**-126) & (x.astype(np.float32) <= 2.0**127)
    np.testing.assert_array_equal(got[normal], _reference(model, x)[0].view(np.uint8)[normal])
    assert encode(torch.tensor([np.inf]), torch.float8_e8m0fnu, saturate, round_mode).view(torch.uint8).item() == (
        0xFE if saturate else 0xFF)


# ------------------------------------------------------------------------------------------------
# QuantizeLinear / DequantizeLinear
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("np_type,lo,hi", [(ml_dtypes.int4, -8, 7), (ml_dtypes.uint4, 0, 15), (ml_dtypes.int2, -2, 1),
                                           (ml_dtypes.uint2, 0, 3)])
def test_quantize_saturates_to_the_small_range(np_type, lo, hi):
    """``y = saturate(round(x / y_scale) + y_zero_point)``, rounding half to even, saturating to the range."""
    x = np.linspace(-40, 40, 33, dtype=np.float32).reshape(3, 11)
    scale = np.array([2.0, 3.0, 0.5], dtype=np.float32)
    x[:, 1:6] = np.array([[-0.5, 0.5, 1.5, 2.5, -1.5]]) * scale[:, None]  # ties: to even
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
    zpf = zp.astype(np.float64)[:, None]
    expected = np.clip(_half_even(x / scale[:, None].astype(np.float64)) + zpf, lo, hi)
    values = torch_to_array(q).astype(np.int64)
    assert values.min() == lo and values.max() == hi
    np.testing.assert_array_equal(values, expected)
    np.testing.assert_allclose(y.numpy(), (expected - zpf) * scale[:, None], rtol=1e-6)
    ref_q, ref_y = ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_array_equal(values, ref_q.astype(np.int64))
    np.testing.assert_allclose(y.numpy(), ref_y, rtol=1e-6)
    if np_type in (ml_dtypes.int4, ml_dtypes.uint4):
        np.testing.assert_allclose(y.numpy(), _plain_ort(model, {"x": x}, ["y"])[0], rtol=1e-6)


@pytest.mark.parametrize("to", [TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E5M2, TensorProto.FLOAT4E2M1])
@pytest.mark.parametrize("saturate", [1, 0])
def test_quantize_to_small_floats_casts_per_the_tables(to, saturate):
    """QuantizeLinear to float8/float4: ``x / y_scale`` (+ zero point) cast as ``Cast`` does."""
    scale = np.float32(0.5)
    x = np.array([0.0, -0.0, 0.1, 0.3, 1.3, -2.6, 100.0, 224.0, 232.0, 240.0, 30000.0, 40000.0, -1e9, np.inf, np.nan],
                 np.float32)
    attrs = {"saturate": saturate} if to != TensorProto.FLOAT4E2M1 else {}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s"], ["q"], output_dtype=to, **attrs),
             helper.make_node("Cast", ["q"], ["y"], to=TensorProto.FLOAT)]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(x)])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [len(x)])],
                   [numpy_helper.from_array(np.array(scale), "s")], opset=25)
    (y,) = _run(_compile(model)[1], x)
    with np.errstate(invalid="ignore"):
        scaled = x / scale
    if to == TensorProto.FLOAT4E2M1:
        expected = np.array([_e2m1_rule(float(v)) for v in scaled], np.float32)
    else:
        expected = np.array([_float8_rule(to, float(v), saturate, 25) for v in scaled], np.float32)
    np.testing.assert_array_equal(y.numpy(), expected)


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
