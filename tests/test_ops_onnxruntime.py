"""Parity of the op lowerings with ONNX Runtime on single-node models, one or more per op family."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from graphdnn.converters.onnx_attrs import attribute_to_python, tensor_attr_to_torch
from onnx import TensorProto, helper, numpy_helper

from graphdnn.ops import lookup

RNG = np.random.default_rng(0)


def _randn(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def _run_ort(op_type, inputs, attrs, opset, n_outputs, domain=""):
    names = [f"in{i}" if v is not None else "" for i, v in enumerate(inputs)]
    while names and names[-1] == "":
        names.pop()
    outs = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, names, outs, domain=domain, **attrs)
    graph_inputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for n, v in zip(names, inputs)
        if n
    ]
    graph_outputs = [onnx.ValueInfoProto(name=o) for o in outs]
    graph = helper.make_graph([node], "g", graph_inputs, graph_outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, opset)])
    model.ir_version = 8 if opset < 21 else 10
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {n: v for n, v in zip(names, inputs) if n}
    return sess.run(None, feeds), node


def check(op_type, inputs, attrs=None, opset=17, n_outputs=1, atol=1e-5, rtol=1e-4, compare=None):
    """Run ``op_type`` in ONNX Runtime and through the registry and compare every output."""
    attrs = attrs or {}
    expected, node = _run_ort(op_type, inputs, attrs, opset, n_outputs)
    opdef = lookup(op_type, "", opset)
    kwargs = {a.name: attribute_to_python(a) for a in node.attribute}
    args = [torch.from_numpy(np.array(v)) if v is not None else None for v in inputs]
    for i in opdef.static_inputs:
        if i < len(args) and args[i] is not None:
            args[i] = args[i].tolist()
    if opdef.uses_training:
        kwargs["training"] = False
    if opdef.num_outputs is None:
        kwargs["_outputs"] = n_outputs
    got = opdef.lower(*args, **kwargs)
    got = (got,) if opdef.num_outputs == 1 else tuple(got)
    assert len(got) >= n_outputs
    for i, (e, g) in enumerate(zip(expected, got)):
        g = g.detach().numpy()
        assert g.shape == e.shape, f"{op_type} output {i}: shape {g.shape} != {e.shape}"
        assert g.dtype == e.dtype, f"{op_type} output {i}: dtype {g.dtype} != {e.dtype}"
        if compare is not None:
            compare(i, g, e)
        else:
            np.testing.assert_allclose(g, e, atol=atol, rtol=rtol, err_msg=f"{op_type} output {i}")


# ---- elementwise -----------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean"])
def test_binary_broadcasting(op):
    a = np.abs(_randn(2, 3, 4)) + 0.5
    check(op, [a, _randn(3, 1)])


@pytest.mark.parametrize("op", ["Sqrt", "Exp", "Log", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Erf",
                                "Sin", "Cos", "Tan", "Atan", "Sinh", "Cosh", "Asinh", "Abs", "Neg"])
def test_unary(op):
    x = np.abs(_randn(3, 5)) + 0.1 if op in ("Sqrt", "Log", "Reciprocal") else _randn(3, 5)
    check(op, [x])


def test_integer_div_mod_bitshift():
    a = np.array([7, -7, 9, -9, 5], dtype=np.int32)
    b = np.array([2, 2, -4, -4, 3], dtype=np.int32)
    check("Div", [a, b])
    check("Mod", [a, b])
    check("Mod", [a, b], {"fmod": 1})
    check("Mod", [_randn(6), np.full(6, 0.7, np.float32)], {"fmod": 1})
    u = np.array([16, 4, 1], dtype=np.uint32)
    check("BitShift", [u, np.array([1, 2, 3], np.uint32)], {"direction": "RIGHT"})
    check("BitShift", [u.astype(np.uint8), np.array([1, 2, 3], np.uint8)], {"direction": "LEFT"})
    check("BitwiseAnd", [a, b], opset=18)
    check("BitwiseNot", [a], opset=18)


@pytest.mark.parametrize("op", ["Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Equal"])
def test_comparisons(op):
    a = np.array([[1, 2, 3], [3, 2, 1]], dtype=np.int64)
    check(op, [a, np.array([2], dtype=np.int64)])


def test_logic_where_cast():
    a, b = RNG.random((3, 4)) > 0.5, RNG.random((3, 4)) > 0.5
    for op in ("And", "Or", "Xor"):
        check(op, [a, b])
    check("Not", [a])
    check("Where", [a, _randn(3, 4), _randn(1, 4)])
    check("Cast", [_randn(3, 4) * 10], {"to": TensorProto.INT32})
    check("Cast", [_randn(3, 4)], {"to": TensorProto.FLOAT16}, atol=1e-3)
    check("CastLike", [_randn(3, 4), np.zeros(1, np.float64)], opset=15)
    check("IsNaN", [np.array([1.0, np.nan, np.inf], np.float32)])
    check("IsInf", [np.array([1.0, -np.inf, np.inf], np.float32)], {"detect_negative": 0})


def test_clip_versions():
    x = _randn(4, 5) * 3
    check("Clip", [x], {"min": -1.0, "max": 1.5}, opset=6)
    check("Clip", [x, np.array(-0.5, np.float32), None], opset=13)
    check("Clip", [x, None, np.array(0.5, np.float32)], opset=13)


# ---- activations -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "op,attrs,opset",
    [
        ("Relu", {}, 14), ("LeakyRelu", {"alpha": 0.2}, 16), ("Elu", {"alpha": 0.5}, 6), ("Selu", {}, 6),
        ("Celu", {"alpha": 2.0}, 12), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, 6), ("HardSwish", {}, 14),
        ("Mish", {}, 18), ("Softplus", {}, 1), ("Softsign", {}, 1), ("ThresholdedRelu", {"alpha": 0.3}, 10),
        ("Shrink", {"lambd": 0.6, "bias": 0.2}, 9), ("Gelu", {}, 20), ("Gelu", {"approximate": "tanh"}, 20),
        ("Sigmoid", {}, 13), ("Tanh", {}, 13),
    ],
)
def test_activations(op, attrs, opset):
    check(op, [_randn(3, 4, 5)], attrs, opset=opset)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_family(op, opset):
    check(op, [_randn(2, 3, 4)], {"axis": 1}, opset=opset)


def test_prelu():
    check("PRelu", [_randn(2, 3, 4), _randn(3, 1)], opset=16)


# ---- reductions ------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
                                "ReduceLogSumExp", "ReduceSumSquare", "ReduceMean", "ReduceSum"])
@pytest.mark.parametrize("opset", [13, 18])
def test_reductions(op, opset):
    x = np.abs(_randn(2, 3, 4)) + 0.1
    axes = np.array([0, -1], np.int64)
    if opset >= 18 or (op == "ReduceSum" and opset >= 13):
        check(op, [x, axes], {"keepdims": 0}, opset=opset)
    else:
        check(op, [x], {"axes": [0, -1], "keepdims": 0}, opset=opset)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_reductions(op):
    x = np.array([[1, 3, 3, 0], [2, 2, 0, 0]], np.float32)
    check(op, [x], {"axis": 1, "keepdims": 0, "select_last_index": 1}, opset=13)
    check(op, [x], {"axis": -1}, opset=13)


def test_cumsum():
    x = _randn(3, 4)
    check("CumSum", [x, np.array(1, np.int64)], {"exclusive": 1, "reverse": 1}, opset=14)


# ---- matrix products -------------------------------------------------------------------------
def test_matmul_gemm_einsum():
    check("MatMul", [_randn(2, 3, 4), _randn(4, 5)])
    check("Gemm", [_randn(4, 3), _randn(5, 4), _randn(5)], {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0})
    check("Gemm", [_randn(3, 4), _randn(4, 5)], opset=13)
    check("Einsum", [_randn(2, 3, 4), _randn(2, 4, 5)], {"equation": "bij, bjk -> bik"}, opset=12)
    a = RNG.integers(0, 255, (3, 4)).astype(np.uint8)
    b = RNG.integers(0, 255, (4, 2)).astype(np.uint8)
    check("MatMulInteger", [a, b, np.array(12, np.uint8), np.array(3, np.uint8)], opset=10)


# ---- convolution and pooling -----------------------------------------------------------------
def test_conv_variants():
    x = _randn(1, 4, 9, 8)
    check("Conv", [x, _randn(6, 2, 3, 3), _randn(6)],
          {"pads": [1, 0, 2, 1], "strides": [2, 1], "dilations": [1, 2], "group": 2})
    check("Conv", [x, _randn(3, 4, 3, 2)], {"auto_pad": "SAME_LOWER", "strides": [2, 2]})
    check("Conv", [_randn(2, 3, 7), _randn(4, 3, 2)], {"auto_pad": "VALID"})
    check("Conv", [_randn(1, 2, 4, 5, 3), _randn(2, 2, 2, 2, 2)], {"pads": [1, 0, 1, 0, 1, 1]})


def test_conv_transpose_variants():
    x = _randn(1, 4, 5, 4)
    w = _randn(4, 3, 3, 3)
    check("ConvTranspose", [x, w, _randn(3)], {"strides": [2, 2], "output_padding": [1, 0], "pads": [1, 0, 0, 1]})
    check("ConvTranspose", [x, _randn(4, 1, 2, 3)], {"group": 2, "dilations": [2, 1], "strides": [1, 2]})
    check("ConvTranspose", [x, w], {"strides": [2, 2], "output_shape": [11, 10]})
    check("ConvTranspose", [x, w], {"strides": [2, 2], "auto_pad": "SAME_UPPER"})
    check("ConvTranspose", [_randn(1, 2, 6), _randn(2, 2, 3)], {"strides": [3]})


def test_pooling():
    x = _randn(2, 3, 9, 7)
    check("MaxPool", [x], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 1], "ceil_mode": 1},
          opset=12, n_outputs=2)
    check("MaxPool", [x], {"kernel_shape": [2, 2], "dilations": [2, 1], "storage_order": 1}, opset=12,
          n_outputs=2)
    check("AveragePool", [x], {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 1, 0, 1],
                               "count_include_pad": 1}, opset=19)
    check("AveragePool", [x], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, opset=19)
    check("AveragePool", [x], {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER"}, opset=19)
    check("LpPool", [x], {"kernel_shape": [2, 3], "p": 3, "strides": [1, 2]}, opset=18)
    check("GlobalAveragePool", [x])
    check("GlobalMaxPool", [x])
    check("GlobalLpPool", [x], {"p": 2})


# ---- normalization ---------------------------------------------------------------------------
def test_normalization():
    x = _randn(2, 4, 3, 5)
    c = [np.abs(_randn(4)) + 0.5 for _ in range(4)]
    check("BatchNormalization", [x, *c], {"epsilon": 1e-3}, opset=15)
    check("InstanceNormalization", [x, c[0], c[1]])
    check("LayerNormalization", [x, _randn(3, 5), _randn(3, 5)], {"axis": 2}, n_outputs=3)
    check("LpNormalization", [x], {"axis": 1, "p": 1})
    check("MeanVarianceNormalization", [x], {"axes": [0, 2, 3]}, opset=13)
    check("LRN", [x], {"size": 3, "alpha": 0.01, "beta": 0.5, "bias": 2.0}, opset=13)
    check("GroupNormalization", [x, _randn(4), _randn(4)], {"num_groups": 2}, opset=21)


# ---- shape and indexing ----------------------------------------------------------------------
def test_slice_variants():
    x = _randn(5, 6, 7)
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    check("Slice", [x, i64(4, 1), i64(-10, -1), i64(0, 2), i64(-2, 3)], opset=13)
    check("Slice", [x, i64(-1), i64(-100), i64(1), i64(-1)], opset=13)
    check("Slice", [x, i64(1, 0), i64(1000, 3)], opset=13)


def test_pad_modes():
    x = _randn(2, 3, 4)
    for mode in ("constant", "reflect", "edge", "wrap"):
        check("Pad", [x, np.array([0, 1, 2, 0, 2, 1], np.int64), np.array(0.5, np.float32)], {"mode": mode},
              opset=19)
    check("Pad", [x, np.array([2, -1], np.int64), None, np.array([-1], np.int64)], opset=18)


def test_gather_scatter():
    x = _randn(4, 5, 3)
    idx = np.array([[0, -1], [2, 1]], np.int64)
    check("Gather", [x, idx], {"axis": 1})
    check("GatherElements", [x, RNG.integers(-3, 3, (4, 2, 3)).astype(np.int64)], {"axis": 2})
    check("GatherND", [x, np.array([[1, 2], [3, 0]], np.int64)])
    check("GatherND", [x, np.array([[1], [3], [0], [2]], np.int64)], {"batch_dims": 1})
    upd = _randn(4, 2, 3)
    check("ScatterElements", [x, RNG.integers(0, 5, (4, 2, 3)).astype(np.int64), upd], {"axis": 1}, opset=16)
    check("ScatterElements", [x, np.zeros((4, 2, 3), np.int64), upd], {"axis": 1, "reduction": "add"}, opset=16)
    check("ScatterND", [x, np.array([[1, 2], [3, 4]], np.int64), _randn(2, 3)], opset=16)
    check("ScatterND", [x, np.array([[1], [1]], np.int64), _randn(2, 5, 3)], {"reduction": "mul"}, opset=16)


def test_shape_ops():
    x = _randn(2, 3, 4)
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    check("Reshape", [x, i64(0, -1, 2)], opset=14)
    check("Flatten", [x], {"axis": -1})
    check("Transpose", [x], {"perm": [2, 0, 1]})
    check("Squeeze", [x[:, :1], i64(1)])
    check("Unsqueeze", [x, i64(-1, 0)])
    check("Expand", [_randn(3, 1), i64(2, 1, 4)])
    check("Tile", [x, i64(1, 2, 1)])
    check("Concat", [x, x[:, :1]], {"axis": -2})
    check("Split", [_randn(7, 2)], {"axis": 0, "num_outputs": 3}, opset=18, n_outputs=3)
    check("Split", [_randn(6, 2), i64(1, 5)], opset=13, n_outputs=2)
    check("Shape", [x], {"start": 1, "end": -1}, opset=15)
    check("Size", [x])
    check("DepthToSpace", [_randn(1, 8, 2, 3)], {"blocksize": 2, "mode": "CRD"})
    check("DepthToSpace", [_randn(1, 8, 2, 3)], {"blocksize": 2})
    check("SpaceToDepth", [_randn(1, 2, 4, 6)], {"blocksize": 2})
    check("Trilu", [x, np.array(1, np.int64)], {"upper": 0})
    check("EyeLike", [_randn(3, 5)], {"k": 1, "dtype": TensorProto.INT32})
    check("NonZero", [np.array([[1, 0, 2], [0, 0, 3]], np.int64)])
    check("Compress", [x, np.array([True, False, True])], {"axis": 1})
    check("ConstantOfShape", [i64(2, 3)], {"value": numpy_helper.from_array(np.array([7], np.int32))})
    check("Range", [np.array(1.0, np.float32), np.array(4.0, np.float32), np.array(0.7, np.float32)], opset=11)
    check("OneHot", [np.array([[0, 2], [-1, 1]], np.int64), np.array(3, np.int64), np.array([0.0, 5.0], np.float32)],
          {"axis": 1}, opset=11)
    check("ReverseSequence", [x, np.array([1, 3], np.int64)], {"batch_axis": 0, "time_axis": 1})


def test_topk_unique():
    x = np.array([[3, 1, 3, 2], [0, 5, 5, 5]], np.float32)
    check("TopK", [x, np.array([2], np.int64)], {"axis": 1}, n_outputs=2, opset=11)
    check("TopK", [x, np.array([3], np.int64)], {"largest": 0}, n_outputs=2, opset=11)
    check("Unique", [np.array([2, 1, 1, 3, 4, 3], np.float32)], {"sorted": 0}, n_outputs=4, opset=11)
    check("Unique", [np.array([[1, 0], [1, 0], [2, 3]], np.int64)], {"axis": 0}, n_outputs=4, opset=11)


@pytest.mark.parametrize(
    "attrs",
    [
        {"mode": "nearest"},
        {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
        {"mode": "linear"},
        {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
        {"mode": "cubic"},
        {"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1},
    ],
)
def test_resize(attrs):
    x = _randn(1, 2, 4, 5)
    check("Resize", [x, None, np.array([1, 1, 1.5, 0.6], np.float32)], attrs, opset=13)
    check("Resize", [x, None, None, np.array([1, 2, 7, 3], np.int64)], attrs, opset=13)


# ---- recurrent, losses, attention ------------------------------------------------------------
def test_lstm_bidirectional():
    seq, batch, inp, hid = 4, 2, 3, 5
    x = _randn(seq, batch, inp)
    w, r, b = _randn(2, 4 * hid, inp), _randn(2, 4 * hid, hid), _randn(2, 8 * hid)
    lens = np.array([4, 2], np.int32)
    h0, c0 = _randn(2, batch, hid), _randn(2, batch, hid)
    check("LSTM", [x, w, r, b, lens, h0, c0], {"hidden_size": hid, "direction": "bidirectional"}, opset=14,
          n_outputs=3)


def test_gru_rnn():
    x = _randn(3, 2, 4)
    check("GRU", [x, _randn(1, 9, 4), _randn(1, 9, 3), _randn(1, 18)],
          {"hidden_size": 3, "linear_before_reset": 1}, opset=14, n_outputs=2)
    check("GRU", [x, _randn(1, 9, 4), _randn(1, 9, 3)], {"hidden_size": 3, "direction": "reverse"}, opset=14,
          n_outputs=2)
    check("RNN", [x, _randn(1, 3, 4), _randn(1, 3, 3), _randn(1, 6)],
          {"hidden_size": 3, "activations": ["Relu"]}, opset=14, n_outputs=2)


def test_losses():
    scores = _randn(3, 5, 2)
    labels = np.array([[0, 4], [1, -1], [2, 3]], np.int64)
    weights = np.abs(_randn(5))
    check("SoftmaxCrossEntropyLoss", [scores, labels, weights], {"ignore_index": -1}, opset=13, n_outputs=2)
    check("SoftmaxCrossEntropyLoss", [scores, np.abs(labels)], {"reduction": "none"}, opset=13)
    check("NegativeLogLikelihoodLoss", [scores, np.abs(labels), weights], {"reduction": "sum"}, opset=13)


def test_dropout_inference_is_identity():
    x = _randn(3, 4)
    check("Dropout", [x, np.array(0.3, np.float32)], opset=13, n_outputs=2)


def test_quantize_dequantize():
    x = _randn(2, 4) * 3
    check("QuantizeLinear", [x, np.array(0.05, np.float32), np.array(10, np.int8)], opset=13)
    check("QuantizeLinear", [x, np.array([0.1, 0.05, 0.2, 0.3], np.float32), np.zeros(4, np.uint8)],
          {"axis": 1}, opset=13)
    q = RNG.integers(0, 255, (2, 4)).astype(np.uint8)
    check("DequantizeLinear", [q, np.array(0.1, np.float32), np.array(3, np.uint8)], opset=13)


# ---- attribute conversion --------------------------------------------------------------------
def test_attribute_conversion_roundtrip():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    attr = helper.make_attribute("value", numpy_helper.from_array(arr))
    d = attribute_to_python(attr)
    assert d == {"dtype": "float32", "shape": [2, 3], "data": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]}
    assert torch.equal(tensor_attr_to_torch(d), torch.from_numpy(arr))
    assert attribute_to_python(helper.make_attribute("mode", "edge")) == "edge"
    assert attribute_to_python(helper.make_attribute("ints", [1, 2])) == [1, 2]
    graph_attr = helper.make_attribute("body", helper.make_graph([], "g", [], []))
    with pytest.raises(Exception, match="not supported"):
        attribute_to_python(graph_attr)


def test_constant_op_from_tensor_attribute():
    arr = np.array([[1, 2]], dtype=np.int64)
    node = helper.make_node("Constant", [], ["y"], value=numpy_helper.from_array(arr))
    kwargs = {a.name: attribute_to_python(a) for a in node.attribute}
    y = lookup("Constant", "", 13).lower(**kwargs)
    assert y.dtype == torch.int64 and y.tolist() == [[1, 2]]
    assert isinstance(onnx.checker, object)
