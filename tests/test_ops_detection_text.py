"""Detection, signal, deformable-conv, KV-cache, string and random ops, run through the real path
(ONNX import -> ``graphdnn.compile``) and compared with ONNX Runtime (or ``onnx.reference`` where ORT
lacks the op) on inputs unlike those of ONNX's node conformance cases."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from graphdnn.converters.onnx_import import load_onnx
from helpers import run_graphdnn, value_info
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import graphdnn as gd

RNG = np.random.default_rng(7)


def _model(op_type, inputs, attrs=None, opset=20, n_outputs=1, consts=()):
    """One-node model; ``inputs`` are arrays (None: omitted), those whose index is in ``consts`` become
    initializers (the path where static inputs reach the lowering as Python values)."""
    names = [f"in{i}" if v is not None else "" for i, v in enumerate(inputs)]
    while names and names[-1] == "":
        names.pop()
    outs = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, names, outs, **(attrs or {}))
    feeds = {n: v for i, (n, v) in enumerate(zip(names, inputs)) if n and i not in consts}
    inits = [numpy_helper.from_array(v, n) for i, (n, v) in enumerate(zip(names, inputs)) if n and i in consts]
    graph = helper.make_graph([node], "g", [value_info(n, v) for n, v in feeds.items()],
                              [onnx.ValueInfoProto(name=o) for o in outs], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 21 else 10
    return model, feeds


def check(op_type, inputs, attrs=None, opset=20, n_outputs=1, consts=(), reference="ort", atol=1e-5, rtol=1e-4):
    """Compare graphdnn with ONNX Runtime (``reference="ort"``) or ``onnx.reference``; returns the outputs."""
    model, feeds = _model(op_type, inputs, attrs, opset, n_outputs, consts)
    if reference == "ort":
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        expected = sess.run(None, feeds)
    else:
        expected = ReferenceEvaluator(model).run(None, feeds)
    got = run_graphdnn(model, feeds)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        e = np.asarray(e)
        assert g.shape == e.shape, f"{op_type} output {i}: shape {g.shape} != {e.shape}"
        if e.dtype == object:
            assert g.tolist() == e.tolist(), f"{op_type} output {i}"
        else:
            assert g.dtype == e.dtype, f"{op_type} output {i}: dtype {g.dtype} != {e.dtype}"
            np.testing.assert_allclose(g, e, atol=atol, rtol=rtol, err_msg=f"{op_type} output {i}")
    return got


# ---- detection -------------------------------------------------------------------------------------
def _rois(n: int, size: float) -> np.ndarray:
    a = RNG.uniform(-1, size, (n, 2))
    b = a + RNG.uniform(0.3, size / 2, (n, 2))
    return np.concatenate([a, b], axis=1).astype(np.float32)  # [x1, y1, x2, y2]


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align(mode, ctm, sampling_ratio):
    x = RNG.standard_normal((2, 3, 9, 11)).astype(np.float32)
    rois = _rois(5, 18.0)
    rois[0] = [4.0, 4.0, 3.0, 3.5]  # malformed (x2 < x1)
    batch = np.array([0, 1, 1, 0, 1], np.int64)
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm, "output_height": 3, "output_width": 4,
             "sampling_ratio": sampling_ratio, "spatial_scale": 0.5}
    check("RoiAlign", [x, rois, batch], attrs, opset=16)


def test_roi_align_opset10_and_no_rois():
    x = RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)
    check("RoiAlign", [x, _rois(3, 6.0), np.zeros(3, np.int64)], {"output_height": 2, "output_width": 2}, opset=10)
    check("RoiAlign", [x, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)], {"output_height": 2}, opset=16)


def _boxes(batches: int, n: int) -> np.ndarray:
    corner = RNG.uniform(0, 10, (batches, n, 2))
    other = corner + RNG.uniform(-4, 4, (batches, n, 2))  # any diagonal pair of corners
    return np.concatenate([corner, other], axis=2).astype(np.float32)


@pytest.mark.parametrize("center_point_box", [0, 1])
def test_nms_random_boxes_several_classes(center_point_box):
    boxes = _boxes(2, 40)
    if center_point_box:
        boxes[..., 2:] = np.abs(boxes[..., 2:])  # width, height
    scores = RNG.random((2, 3, 40)).astype(np.float32)
    scores[0, 1, 5] = scores[0, 1, 6]  # a tie
    for limit, iou, score in [(10, 0.3, 0.2), (100, 0.5, None), (3, 0.0, 0.9)]:
        inputs = [boxes, scores, np.array([limit], np.int64), np.array([iou], np.float32)]
        if score is not None:
            inputs.append(np.array([score], np.float32))
        check("NonMaxSuppression", inputs, {"center_point_box": center_point_box}, opset=11, consts=(2, 3, 4))
        check("NonMaxSuppression", inputs, {"center_point_box": center_point_box}, opset=11)  # thresholds as tensors


def test_nms_empty_results():
    boxes, scores = _boxes(1, 8), RNG.random((1, 2, 8)).astype(np.float32)
    (out,) = check("NonMaxSuppression", [boxes, scores, np.array([5], np.int64), np.array([0.5], np.float32),
                                          np.array([1.5], np.float32)], opset=11)  # every score below threshold
    assert out.shape == (0, 3)
    (out,) = check("NonMaxSuppression", [boxes, scores], opset=11)  # max_output_boxes_per_class absent: 0
    assert out.shape == (0, 3)
    (out,) = check("NonMaxSuppression", [boxes, scores, np.array([0], np.int64)], opset=10)
    assert out.shape == (0, 3)


# ---- deformable convolution ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "group,offset_group,attrs,with_mask,with_bias",
    [
        (1, 1, {}, False, False),
        (2, 2, {"pads": [1, 2, 1, 0], "strides": [2, 1]}, True, True),
        (1, 4, {"dilations": [2, 1], "pads": [1, 1, 1, 1]}, True, False),
        (4, 1, {"strides": [1, 2], "pads": [0, 1, 2, 1]}, False, True),
    ],
)
def test_deform_conv(group, offset_group, attrs, with_mask, with_bias):
    n, c, oc, h, w, kh, kw = 2, 4, 8, 7, 6, 3, 2
    x = RNG.standard_normal((n, c, h, w)).astype(np.float32)
    weight = RNG.standard_normal((oc, c // group, kh, kw)).astype(np.float32)
    pads, strides, dil = attrs.get("pads", [0] * 4), attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1])
    oh = (h + pads[0] + pads[2] - dil[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - dil[1] * (kw - 1) - 1) // strides[1] + 1
    offset = (RNG.standard_normal((n, offset_group * kh * kw * 2, oh, ow)) * 1.5).astype(np.float32)
    bias = RNG.standard_normal(oc).astype(np.float32) if with_bias else None
    mask = RNG.random((n, offset_group * kh * kw, oh, ow)).astype(np.float32) if with_mask else None
    attrs = {**attrs, "group": group, "offset_group": offset_group, "kernel_shape": [kh, kw]}
    check("DeformConv", [x, weight, offset, bias, mask], attrs, opset=22, atol=1e-4)


def test_deform_conv_zero_offset_is_conv():
    x = RNG.standard_normal((1, 3, 5, 5)).astype(np.float32)
    weight = RNG.standard_normal((2, 3, 3, 3)).astype(np.float32)
    offset = np.zeros((1, 18, 5, 5), np.float32)
    (out,) = check("DeformConv", [x, weight, offset], {"pads": [1, 1, 1, 1]}, opset=19, atol=1e-4)
    conv = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight), padding=1)
    np.testing.assert_allclose(out, conv.numpy(), atol=1e-4)


# ---- signal ----------------------------------------------------------------------------------------
def test_stft_real_and_complex():
    real = RNG.standard_normal((2, 50, 1)).astype(np.float32)
    window = np.hanning(12).astype(np.float32)
    check("STFT", [real, np.array(5, np.int64), window], opset=17, atol=1e-4)
    check("STFT", [real, np.array(7, np.int64), None, np.array(16, np.int64)], {"onesided": 0}, opset=17, atol=1e-4)
    check("STFT", [real, np.array(7, np.int64), window, np.array(12, np.int64)], opset=17, consts=(1, 3), atol=1e-4)
    cplx = RNG.standard_normal((1, 30, 2)).astype(np.float32)
    check("STFT", [cplx, np.array(4, np.int64), window], {"onesided": 0}, opset=17, atol=1e-4)


@pytest.mark.parametrize("bins,dft,rate,low,high", [(10, 64, 16000, 0.0, 8000.0), (7, 129, 8000, 100.0, 3000.0),
                                                    (20, 512, 22050, 30.0, 11025.0)])
def test_mel_weight_matrix(bins, dft, rate, low, high):
    inputs = [np.array(bins, np.int64), np.array(dft, np.int64), np.array(rate, np.int64),
              np.array(low, np.float32), np.array(high, np.float32)]
    check("MelWeightMatrix", inputs, opset=17, consts=(0, 1, 2, 3, 4))
    check("MelWeightMatrix", inputs, {"output_datatype": TensorProto.DOUBLE}, opset=17, reference="onnx")


# ---- KV cache --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["linear", "circular"])
@pytest.mark.parametrize("axis", [-2, 1])
def test_tensor_scatter(mode, axis):
    shape = [3, 2, 8, 4]
    shape[axis % 4] = 8
    past = RNG.standard_normal(shape).astype(np.float32)
    upd_shape = list(shape)
    upd_shape[axis % 4] = 3
    update = RNG.standard_normal(upd_shape).astype(np.float32)
    indices = np.array([0, 5, 7] if mode == "circular" else [0, 5, 2], np.int64)
    check("TensorScatter", [past, update, indices], {"mode": mode, "axis": axis}, opset=24, atol=0, rtol=0)
    check("TensorScatter", [past, update], {"mode": mode, "axis": axis}, opset=24, atol=0, rtol=0)


# ---- strings ---------------------------------------------------------------------------------------
def _str(values, shape=None) -> np.ndarray:
    a = np.array(values, dtype=object)
    return a.reshape(shape) if shape is not None else a


def test_string_concat_broadcasting():
    check("StringConcat", [_str(["a", "bé", "", "🙂"], (2, 2)), _str(["-x", "y"])])
    check("StringConcat", [_str(["pre"]), _str(["", "1", "22"], (3, 1))])


@pytest.mark.parametrize("attrs", [{}, {"delimiter": " "}, {"delimiter": ",", "maxsplit": 1}, {"maxsplit": 2},
                                   {"delimiter": "ab"}])
def test_string_split(attrs):
    x = _str(["  hello  world ", "a,b,,c", "x ab y ab z", "one"], (4,))
    check("StringSplit", [x], attrs, n_outputs=2)
    check("StringSplit", [_str(["p q", "r", "s t u", " "], (2, 2))], attrs, n_outputs=2)
    # An empty element split on an explicit delimiter is one empty substring, as Python's str.split and
    # onnx.reference have it (ONNX Runtime counts 0 there).
    check("StringSplit", [_str(["", "a,b", ""], (3,))], attrs, n_outputs=2, reference="onnx")


def test_regex_full_match():
    x = _str(["abc123", "ABC", "abc", "", "x@y.org", "a.b@c.com"], (2, 3))
    for pattern in [r"[a-z]+\d*", r"\w+@\w+\.(org|com)", r".*", r"a|abc", r""]:
        check("RegexFullMatch", [x], {"pattern": pattern})


@pytest.mark.parametrize("mode", ["TF", "IDF", "TFIDF"])
def test_tfidf_vectorizer_ints(mode):
    x = RNG.integers(0, 5, (3, 12)).astype(np.int64)
    attrs = {"mode": mode, "min_gram_length": 1, "max_gram_length": 3, "max_skip_count": 2,
             "ngram_counts": [0, 4, 10], "ngram_indexes": [5, 0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11],
             "pool_int64s": [0, 1, 2, 3, 0, 1, 1, 2, 3, 4, 0, 1, 2, 2, 3, 3],
             "weights": [0.5 + 0.1 * i for i in range(12)]}
    check("TfIdfVectorizer", [x], attrs, opset=9)
    check("TfIdfVectorizer", [x[0].astype(np.int32)], {**attrs, "min_gram_length": 2}, opset=9)


def test_tfidf_vectorizer_strings():
    x = _str(["the", "cat", "sat", "on", "the", "mat", "the", "cat"], (8,))
    attrs = {"mode": "TF", "min_gram_length": 1, "max_gram_length": 2, "max_skip_count": 1,
             "ngram_counts": [0, 3], "ngram_indexes": [0, 1, 2, 3, 4],
             "pool_strings": ["the", "cat", "dog", "the", "cat", "the", "sat"]}
    check("TfIdfVectorizer", [x], attrs, opset=9)
    check("TfIdfVectorizer", [x.reshape(2, 4)], attrs, opset=9)


# ---- random ----------------------------------------------------------------------------------------
def test_bernoulli_distribution_and_seed():
    p = np.tile(np.array([0.0, 1.0, 0.25, 0.75], np.float32), (4000, 1))
    seeded, feeds = _model("Bernoulli", [p], {"seed": 3.0, "dtype": TensorProto.DOUBLE}, opset=22)
    first, second = run_graphdnn(seeded, feeds)[0], run_graphdnn(seeded, feeds)[0]
    assert first.dtype == np.float64 and first.shape == p.shape
    np.testing.assert_array_equal(first, second)  # a seed makes the node deterministic
    assert set(np.unique(first)) <= {0.0, 1.0}
    np.testing.assert_array_equal(first[:, 0], 0.0)
    np.testing.assert_array_equal(first[:, 1], 1.0)
    np.testing.assert_allclose(first[:, 2:].mean(axis=0), [0.25, 0.75], atol=0.03)
    unseeded, feeds = _model("Bernoulli", [p.astype(np.float64)], opset=15)
    out = run_graphdnn(unseeded, feeds)[0]
    assert out.dtype == np.float64
    np.testing.assert_allclose(out[:, 2:].mean(axis=0), [0.25, 0.75], atol=0.03)


def test_load_from_path(tmp_path):
    """``graphdnn.load`` of an .onnx file takes the same path."""
    boxes, scores = _boxes(1, 12), RNG.random((1, 2, 12)).astype(np.float32)
    model, feeds = _model("NonMaxSuppression", [boxes, scores, np.array([4], np.int64), np.array([0.4], np.float32)],
                          opset=11, consts=(2, 3))
    onnx.save(model, tmp_path / "nms.onnx")
    graph = gd.load(tmp_path / "nms.onnx")
    module = gd.compile(graph, inputs=graph.meta["onnx"]["inputs"], outputs=graph.meta["onnx"]["outputs"]).eval()
    got = module(torch.from_numpy(boxes), torch.from_numpy(scores)).numpy()
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(got, sess.run(None, feeds)[0])


def test_equal_compares_string_tensors_like_onnxruntime():
    a = np.array([["cat", "dog"], ["", "émoji 🙂"]], dtype=object)
    b = np.array(["cat", "émoji 🙂"], dtype=object)
    node = helper.make_node("Equal", ["a", "b"], ["y"])
    graph = helper.make_graph([node], "eq", [helper.make_tensor_value_info("a", TensorProto.STRING, [2, 2]),
                                             helper.make_tensor_value_info("b", TensorProto.STRING, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.BOOL, [2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"a": a, "b": b})[0]
    g = load_onnx(model)
    out = gd.compile(g, inputs=g.meta["onnx"]["inputs"], outputs=g.meta["onnx"]["outputs"])(a, b)
    np.testing.assert_array_equal(out.numpy(), expected)


def test_string_constants_run_and_export_like_onnxruntime():
    nodes = [helper.make_node("Constant", [], ["k"], value=helper.make_tensor("kv", TensorProto.STRING, [2],
                                                                               [b"cat", b"dog"])),
             helper.make_node("Constant", [], ["s"], value_strings=["cat", "x"]),
             helper.make_node("Equal", ["a", "k"], ["y"]), helper.make_node("Equal", ["a", "s"], ["z"])]
    graph = helper.make_graph(nodes, "c", [helper.make_tensor_value_info("a", TensorProto.STRING, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.BOOL, [2]),
                               helper.make_tensor_value_info("z", TensorProto.BOOL, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    a = np.array(["cat", "cow"], dtype=object)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"a": a})
    g = load_onnx(model)
    out = gd.compile(g, inputs=["a"], outputs=g.meta["onnx"]["outputs"])(a)
    for o, e in zip(out, expected):
        np.testing.assert_array_equal(o.numpy(), e)
    exported = gd.export_onnx(g, None, inputs=["a"], outputs=g.meta["onnx"]["outputs"])
    again = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"a": a})
    for o, e in zip(again, expected):
        np.testing.assert_array_equal(o, e)
