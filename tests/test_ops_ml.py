"""``ai.onnx.ml`` ops (ArrayFeatureExtractor, Binarizer, LabelEncoder, TreeEnsemble) through the real path
(ONNX import -> ``graphdnn.compile``), compared with ONNX Runtime on inputs unlike those of ONNX's node
conformance cases; where ORT lacks a kernel or departs from the specification, with the specified values."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
import torch
from helpers import run_graphdnn, run_ort, value_info
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(11)


def _model(op_type: str, inputs: list[np.ndarray], attrs: dict[str, Any], ml_opset: int) -> onnx.ModelProto:
    names = [f"in{i}" for i in range(len(inputs))]
    node = helper.make_node(op_type, names, ["out"], domain="ai.onnx.ml", **attrs)
    feeds = [value_info(n, v) for n, v in zip(names, inputs)]
    graph = helper.make_graph([node], "g", feeds, [onnx.ValueInfoProto(name="out")])
    opsets = [helper.make_opsetid("", 19), helper.make_opsetid("ai.onnx.ml", ml_opset)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 9
    return model


def check(op_type: str, inputs: list[np.ndarray], attrs: dict[str, Any], ml_opset: int,
          expected: np.ndarray | None = None, rtol: float = 1e-5, atol: float = 1e-6) -> np.ndarray:
    """graphdnn vs ONNX Runtime (or vs ``expected`` where given); returns graphdnn's output."""
    model = _model(op_type, inputs, attrs, ml_opset)
    got = run_graphdnn(model, inputs)[0]
    if expected is None:
        expected = run_ort(model, {f"in{i}": v for i, v in enumerate(inputs)})[0]
    assert got.shape == expected.shape and got.dtype == expected.dtype, (got.shape, got.dtype, expected.dtype)
    if got.dtype == object:
        assert got.tolist() == expected.tolist()
    else:
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)
    return got


def _t(values: Any, dtype: Any = np.float32) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype))


# ---------------------------------------------------------------------------------------------
# ArrayFeatureExtractor, Binarizer
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data,index", [
    (np.arange(24, dtype=np.int64).reshape(2, 3, 4), np.array([[3, 1, 3]], np.int64)),  # rank 3, [1, k] indices
    (RNG.standard_normal((4, 5)).astype(np.float64), np.array([4], np.int64)),
    (np.arange(5, dtype=np.float32), np.array([4, 0], np.int64)),  # 1-D data: a [1, k] result
    (np.array([["a", "b", "c"], ["d", "e", "f"]], dtype=object), np.array([2, 0, 2], np.int64)),
])
def test_array_feature_extractor_matches_onnxruntime(data, index):
    check("ArrayFeatureExtractor", [data, index], {}, 1)


def test_array_feature_extractor_rejects_an_index_out_of_range():
    with pytest.raises(Exception, match="out of"):
        run_graphdnn(_model("ArrayFeatureExtractor", [np.zeros((2, 3), np.float32), np.array([3], np.int64)], {}, 1),
                     [np.zeros((2, 3), np.float32), np.array([3], np.int64)])


def test_binarizer_matches_onnxruntime_and_the_spec_on_other_types():
    x = RNG.standard_normal((3, 7)).astype(np.float32)
    x[0, 0] = 0.25  # exactly the threshold: not greater, so 0
    check("Binarizer", [x], {"threshold": 0.25}, 1)
    check("Binarizer", [x], {}, 1)
    # ORT has float32 kernels only; NaN, which ORT rejects, is not > threshold
    x64 = np.array([[-1.0, 0.0, 2.5, np.nan]])
    check("Binarizer", [x64], {"threshold": 0.0}, 1, expected=np.array([[0.0, 0.0, 1.0, 0.0]]))
    check("Binarizer", [np.array([1, 2, 3], np.int64)], {"threshold": 1.5}, 1, expected=np.array([0, 1, 1]))


# ---------------------------------------------------------------------------------------------
# LabelEncoder
# ---------------------------------------------------------------------------------------------
_WORDS = np.array([["cat", "dog"], ["emu", "cat"], ["yak", "dog"]], dtype=object)
_INTS = np.array([3, 1, 5, 3, -2], np.int64)


@pytest.mark.parametrize("x,attrs,opset", [
    (_WORDS, {"classes_strings": ["dog", "cat"], "default_int64": 9}, 1),  # strings -> index, default hit
    (np.array([1, 0, 7, -1], np.int64), {"classes_strings": ["a", "b"], "default_string": "none"}, 1),
    (_WORDS, {"keys_strings": ["cat", "dog"], "values_floats": [0.5, -1.5]}, 2),  # default -0.0
    (_INTS, {"keys_int64s": [1, 3], "values_strings": ["x", "y"], "default_string": "?"}, 2),
    (_INTS, {"keys_int64s": [5, 1], "values_int64s": [50, 10]}, 2),  # default -1
    (np.array([[0.5, 2.0], [np.nan, 7.0]], np.float32),
     {"keys_floats": [2.0, float("nan"), 0.5], "values_strings": ["two", "nan", "half"]}, 4),  # NaN key
    (np.array([0.5, np.nan, 3.0], np.float32),
     {"keys_floats": [0.5, float("nan")], "values_int64s": [1, 2], "default_int64": 0}, 4),
    (_WORDS, {"keys_tensor": _t(["dog", "emu"], object), "values_tensor": _t([4, 5], np.int64)}, 4),
    (_INTS, {"keys_tensor": _t([1, 3], np.int64), "values_tensor": _t(["u", "v"], object),
             "default_tensor": _t(["-"], object)}, 4),
    (_INTS, {"keys_int64s": [1, 3], "values_floats": [0.5, 1.5], "default_tensor": _t([7.5])}, 4),
    (np.array([2.5, 1.0], np.float64),
     {"keys_tensor": _t([1.0], np.float64), "values_tensor": _t([4.0], np.float64)}, 4),
])
def test_label_encoder_matches_onnxruntime(x, attrs, opset):
    check("LabelEncoder", [x], attrs, opset)


def test_label_encoder_follows_the_spec_where_onnxruntime_has_no_kernel_or_departs():
    # tensor-typed values ORT lacks kernels for; the type's default when no default_tensor is given
    x = np.array([5, 6, 7], np.int32)
    check("LabelEncoder", [x], {"keys_tensor": _t([5, 7], np.int32), "values_tensor": _t([1, 2], np.int16)}, 4,
          expected=np.array([1, -1, 2], np.int16))
    check("LabelEncoder", [x], {"keys_tensor": _t([5, 7], np.int32), "values_tensor": _t([0.25, 0.75], np.float64)}, 4,
          expected=np.array([0.25, -0.0, 0.75]))
    check("LabelEncoder", [x], {"keys_tensor": _t([7], np.int32), "values_tensor": _t(["seven"], object)}, 4,
          expected=np.array(["_Unused", "_Unused", "seven"], dtype=object))
    # a repeated key: the last one wins (opset 4 text, ONNX reference); ORT keeps the first
    check("LabelEncoder", [_INTS], {"keys_int64s": [1, 3, 3], "values_floats": [0.5, 1.5, 2.5]}, 4,
          expected=np.array([2.5, 0.5, -0.0, 2.5, -0.0], np.float32))


# ---------------------------------------------------------------------------------------------
# TreeEnsemble
# ---------------------------------------------------------------------------------------------
def _forest(**extra: Any) -> dict[str, Any]:
    """Three trees over 3 features and 3 targets, every comparison mode, NaN routing and a one-leaf tree.

    tree 0: n0 f0 <= 0.5 ? (n1 f1 > 1 ? L0 : L1) : L2          (n0 sends NaN true)
    tree 1: n2 f2 < 0 ? L3 : (n3 f0 >= 1 ? L4 : (n4 f1 == 2 ? L5 : L6))   (n3 sends NaN true)
    tree 2: n5 f2 != 3 ? (n6 f1 in {1, 2, 5} ? L7 : L8) : L9    (n6 sends NaN true)
    tree 3: n7, both branches L10 (a tree that is a single leaf)
    """
    attrs = dict(
        tree_roots=[0, 2, 5, 7],
        nodes_modes=_t([0, 3, 1, 2, 4, 5, 6, 0], np.uint8),
        nodes_splits=_t([0.5, 1.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0]),
        nodes_featureids=[0, 1, 2, 0, 1, 2, 1, 0],
        nodes_truenodeids=[1, 0, 3, 4, 5, 6, 7, 10],
        nodes_trueleafs=[0, 1, 1, 1, 1, 0, 1, 1],
        nodes_falsenodeids=[2, 1, 3, 4, 6, 9, 8, 10],
        nodes_falseleafs=[1, 1, 0, 0, 1, 1, 1, 1],
        nodes_missing_value_tracks_true=[1, 0, 0, 1, 0, 0, 1, 0],
        membership_values=_t([1.0, 2.0, 5.0, np.nan]),
        leaf_targetids=[0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1],
        leaf_weights=_t([1.0, -2.0, 3.5, 0.25, 4.0, -1.5, 2.0, 0.75, -3.0, 5.0, 0.125]),
        n_targets=3,
    )
    attrs.update(extra)
    return attrs


def _samples() -> np.ndarray:
    fixed = np.array([[0.1, 2.0, -1.0], [0.7, 1.0, 3.0], [1.5, 2.0, 0.5], [np.nan, 5.0, np.nan],
                      [0.5, np.nan, 3.0], [2.0, 0.0, 1.0], [-4.0, 1.0, 2.0]], np.float32)
    grid = RNG.choice(np.array([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0, np.nan], np.float32), size=(40, 3))
    return np.concatenate([fixed, grid])


@pytest.mark.parametrize("aggregate_function", [0, 1, 2, 3])  # AVERAGE, SUM, MIN, MAX
def test_tree_ensemble_matches_onnxruntime(aggregate_function):
    x = _samples()
    check("TreeEnsemble", [x], _forest(aggregate_function=aggregate_function), 5)
    check("TreeEnsemble", [x], _forest(aggregate_function=aggregate_function, post_transform=3), 5)  # SOFTMAX_ZERO


def test_tree_ensemble_double_input_and_derived_target_count():
    x = RNG.uniform(-1, 4, size=(25, 3))
    attrs = _forest(nodes_splits=_t([0.5, 1.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0], np.float64),
                    membership_values=_t([1.0, 2.0, 5.0, np.nan], np.float64),
                    leaf_weights=_t(np.linspace(-2, 3, 11), np.float64))
    full = check("TreeEnsemble", [x], attrs, 5)
    del attrs["n_targets"]  # optional in the spec (ORT requires it): the largest target id + 1
    check("TreeEnsemble", [x], attrs, 5, expected=full)


def test_tree_ensemble_post_transforms_follow_the_spec():
    """SOFTMAX (1), LOGISTIC (2), PROBIT (4) as the specification numbers them; ONNX Runtime 1.2x swaps 1
    and 2 for several targets (and skips them for one), and approximates erfinv for PROBIT."""
    x = _samples()
    raw = torch.from_numpy(check("TreeEnsemble", [x], _forest(), 5)).double()
    expected = {1: torch.softmax(raw, dim=1), 2: torch.sigmoid(raw),
                4: np.sqrt(2.0) * torch.erfinv(2 * raw - 1)}
    for code, want in expected.items():
        check("TreeEnsemble", [x], _forest(post_transform=code), 5, expected=want.float().numpy())


def test_tree_ensemble_rejects_malformed_trees():
    x = np.zeros((2, 3), np.float32)
    cyclic = _forest(nodes_truenodeids=[1, 0, 3, 4, 5, 6, 7, 10], nodes_trueleafs=[0, 0, 1, 1, 1, 0, 1, 1])
    with pytest.raises(Exception, match="cycle"):
        run_graphdnn(_model("TreeEnsemble", [x], cyclic, 5), [x])
    no_members = _forest()
    del no_members["membership_values"]
    with pytest.raises(Exception, match="membership_values"):
        run_graphdnn(_model("TreeEnsemble", [x], no_members, 5), [x])
