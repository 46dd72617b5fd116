"""Opset-27 stateful ops and the ONNX preview-domain ops, each against an independent reference on
inputs of its own: ONNX Runtime where it has a kernel (LinearAttention, CausalConvWithState), else
ONNX's ReferenceEvaluator (FlexAttention, Adagrad, Momentum, Adam) and handwritten numpy formulas."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
import torch
from helpers import run_graphdnn, run_ort
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from graphdnn.ops.preview import PREVIEW_DOMAIN, TRAINING_DOMAIN
from graphdnn.ops.stateful import linear_attention

FLOAT, DOUBLE, FLOAT16, INT64 = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT64
_NP = {FLOAT: np.float32, DOUBLE: np.float64, FLOAT16: np.float16, INT64: np.int64}


def _model(node: onnx.NodeProto, feeds: dict[str, np.ndarray], n_out: int, opsets: dict[str, int]) -> onnx.ModelProto:
    """A one-node model whose inputs are ``feeds`` (in order) and whose outputs are the node's."""
    code = {np.dtype(v): k for k, v in _NP.items()}
    inputs = [helper.make_tensor_value_info(k, code[v.dtype], v.shape) for k, v in feeds.items()]
    outputs = [helper.make_empty_tensor_value_info(name) for name in node.output[:n_out]]
    graph = helper.make_graph([node], "one_node", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])


def _reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return list(ReferenceEvaluator(model).run(None, feeds))


def _close(ours: list[np.ndarray], ref: list[Any], rtol: float = 1e-4, atol: float = 1e-5) -> None:
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        b = np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------------------------
# LinearAttention and CausalConvWithState (opset 27): ONNX Runtime
# ------------------------------------------------------------------------------------------------
def _linear_attention_feeds(rng: np.random.Generator, rule: str, b: int, t: int, hq: int, hkv: int, dk: int,
                            dv: int, per_key_decay: bool, shared_beta: bool, past: bool) -> dict[str, np.ndarray]:
    q = rng.standard_normal((b, t, hq * dk)).astype(np.float32)
    k = rng.standard_normal((b, t, hkv, dk))
    if "delta" in rule:  # the delta rule wants unit-norm keys
        k /= np.linalg.norm(k, axis=-1, keepdims=True)
    feeds = {"query": q, "key": k.reshape(b, t, hkv * dk).astype(np.float32),
             "value": rng.standard_normal((b, t, hkv * dv)).astype(np.float32)}
    feeds["past_state"] = (0.3 * rng.standard_normal((b, hkv, dk, dv))).astype(np.float32) if past else None
    if "gated" in rule:
        width = hkv * dk if per_key_decay else hkv
        feeds["decay"] = np.log(rng.uniform(0.6, 0.99, (b, t, width))).astype(np.float32)
    if "delta" in rule:
        feeds["beta"] = rng.uniform(0.1, 0.9, (b, t, 1 if shared_beta else hkv)).astype(np.float32)
    return feeds


@pytest.mark.parametrize("rule,t,hq,hkv,per_key_decay,shared_beta,past,scale", [
    ("linear", 6, 2, 2, False, False, True, 0.0),
    ("linear", 1, 4, 2, False, False, False, 0.0),
    ("gated", 5, 2, 2, True, False, True, 0.0),
    ("gated", 7, 4, 1, False, False, True, 0.25),
    ("delta", 5, 2, 2, False, True, True, 0.0),
    ("gated_delta", 6, 4, 2, True, False, True, 0.0),
    ("gated_delta", 4, 3, 3, False, True, False, 0.5),
])
def test_linear_attention_matches_onnxruntime(rule, t, hq, hkv, per_key_decay, shared_beta, past, scale):
    rng = np.random.default_rng(len(rule) * 10 + t)
    full = _linear_attention_feeds(rng, rule, 2, t, hq, hkv, 4, 3, per_key_decay, shared_beta, past)
    names = ["query", "key", "value", "past_state", "decay", "beta"]
    present = [n for n in names if full.get(n) is not None]
    last = max(names.index(n) for n in present)
    node = helper.make_node("LinearAttention", [n if full.get(n) is not None else "" for n in names[:last + 1]],
                            ["output", "present_state"], q_num_heads=hq, kv_num_heads=hkv, update_rule=rule,
                            scale=scale)
    feeds = {n: full[n] for n in present}
    model = _model(node, feeds, 2, {"": 27})
    _close(run_graphdnn(model, feeds), run_ort(model, feeds), rtol=1e-4, atol=1e-5)


def test_linear_attention_chunked_calls_equal_one_call():
    """Carrying present_state into the next call continues the recurrence exactly (both code paths)."""
    rng = np.random.default_rng(7)
    for rule, per_key in [("gated", False), ("gated", True), ("gated_delta", False)]:
        f = _linear_attention_feeds(rng, rule, 1, 6, 2, 2, 4, 3, per_key, False, True)
        args = {k: torch.from_numpy(v) for k, v in f.items() if v is not None}
        kw = {"q_num_heads": 2, "kv_num_heads": 2, "update_rule": rule}
        seq = ("query", "key", "value")
        whole, state = linear_attention(*(args[n] for n in seq), args["past_state"], args["decay"], args.get("beta"),
                                        **kw)

        def cut(n: str, s: slice, args: dict[str, torch.Tensor] = args) -> torch.Tensor | None:
            return args[n][:, s] if n in args else None

        first, mid = linear_attention(*(cut(n, slice(0, 4)) for n in seq), args["past_state"],
                                      cut("decay", slice(0, 4)), cut("beta", slice(0, 4)), **kw)
        second, end = linear_attention(*(cut(n, slice(4, 6)) for n in seq), mid, cut("decay", slice(4, 6)),
                                       cut("beta", slice(4, 6)), **kw)
        torch.testing.assert_close(torch.cat([first, second], dim=1), whole)
        torch.testing.assert_close(end, state)


def test_linear_attention_rejects_inconsistent_inputs():
    x = torch.zeros(1, 2, 4)
    with pytest.raises(ValueError, match="requires decay"):
        linear_attention(x, x, x, q_num_heads=2, kv_num_heads=2, update_rule="gated")
    with pytest.raises(ValueError, match="update_rule"):
        linear_attention(x, x, x, q_num_heads=2, kv_num_heads=2, update_rule="mamba")
    with pytest.raises(ValueError, match="multiple"):
        linear_attention(x, x, x, q_num_heads=2, kv_num_heads=3, update_rule="linear")


@pytest.mark.parametrize("k,bias,past,activation,dtype", [
    (4, True, True, "silu", FLOAT),
    (3, False, True, "none", FLOAT),
    (2, True, False, "swish", FLOAT),
    (1, True, True, "none", FLOAT),
    (4, True, True, "silu", FLOAT16),
])
def test_causal_conv_with_state_matches_onnxruntime(k, bias, past, activation, dtype):
    rng = np.random.default_rng(k)
    np_dtype = _NP[dtype]
    feeds = {"input": rng.standard_normal((2, 5, 7)).astype(np_dtype),
             "weight": rng.standard_normal((5, 1, k)).astype(np_dtype)}
    if bias:
        feeds["bias"] = rng.standard_normal(5).astype(np_dtype)
    if past:
        feeds["past_state"] = rng.standard_normal((2, 5, k - 1)).astype(np_dtype)
    names = ["input", "weight", "bias" if bias else "", "past_state" if past else ""]
    while not names[-1]:
        names.pop()
    node = helper.make_node("CausalConvWithState", names, ["y", "state"], activation=activation)
    model = _model(node, feeds, 2, {"": 27})
    ours, ref = run_graphdnn(model, feeds), run_ort(model, feeds)
    tol = (1e-2, 1e-2) if dtype == FLOAT16 else (1e-5, 1e-5)
    _close(ours, ref, *tol)
    x = feeds["input"].astype(np.float64)  # and the definition, by hand
    padded = np.concatenate([feeds.get("past_state", np.zeros((2, 5, k - 1))).astype(np.float64), x], axis=2)
    w = feeds["weight"][:, 0].astype(np.float64)
    y = sum(w[None, :, j, None] * padded[:, :, j:j + 7] for j in range(k)) + feeds.get("bias", np.zeros(5))[:, None]
    if activation != "none":
        y = y / (1 + np.exp(-y))
    np.testing.assert_allclose(ours[0].astype(np.float64), y, rtol=tol[0], atol=tol[1])
    np.testing.assert_array_equal(ours[1], padded[:, :, padded.shape[2] - (k - 1):].astype(np_dtype))


# ------------------------------------------------------------------------------------------------
# FlexAttention (ai.onnx.preview): ONNX's reference evaluator, and numpy for captured values
# ------------------------------------------------------------------------------------------------
def _body(name: str, nodes: list[onnx.NodeProto], dtype: int, inits: list[onnx.TensorProto] = ()) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", dtype, None)],
                             [helper.make_tensor_value_info("y", dtype, None)], list(inits))


def _alibi_causal(dtype: int) -> onnx.GraphProto:
    """score_mod: x - 0.5 * (i - j), and -inf above the diagonal (built with Trilu on the scores' shape)."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("ConstantOfShape", ["shape"], ["ones"], value=helper.make_tensor("one", dtype, [1], [1])),
        helper.make_node("Trilu", ["ones"], ["lower"], upper=0),
        helper.make_node("CumSum", ["lower", "axis"], ["dist"]),  # i - j + 1 on and below the diagonal, else 0
        helper.make_node("Mul", ["dist", "slope"], ["penalty"]),
        helper.make_node("Sub", ["x", "penalty"], ["biased"]),
        helper.make_node("Cast", ["lower"], ["keep"], to=TensorProto.BOOL),
        helper.make_node("Where", ["keep", "biased", "neg_inf"], ["y"]),
    ]
    inits = [helper.make_tensor("axis", INT64, [], [2]), helper.make_tensor("slope", dtype, [], [0.5]),
             helper.make_tensor("neg_inf", dtype, [], [float("-inf")])]
    return _body("alibi_causal", nodes, dtype, inits)


def _sharpen(dtype: int) -> onnx.GraphProto:
    """prob_mod: probs ** 2."""
    return _body("sharpen", [helper.make_node("Mul", ["x", "x"], ["y"])], dtype)


@pytest.mark.parametrize("hq,hkv,l,s,e,ev,dtype,scale,score_mod,prob_mod,precision", [
    (2, 2, 4, 6, 8, 8, FLOAT, None, False, False, None),
    (4, 2, 3, 5, 8, 6, FLOAT, 0.3, False, False, None),
    (2, 1, 5, 5, 4, 4, FLOAT, None, True, False, None),
    (2, 2, 4, 4, 8, 8, FLOAT, None, True, True, None),
    (2, 2, 3, 7, 8, 8, DOUBLE, 0.2, False, True, None),
    (4, 2, 4, 4, 8, 8, FLOAT16, None, True, False, None),
    (2, 2, 3, 5, 8, 8, FLOAT16, None, False, False, DOUBLE),
])
def test_flex_attention_matches_reference(hq, hkv, l, s, e, ev, dtype, scale, score_mod, prob_mod, precision):
    rng = np.random.default_rng(hq * 100 + l * 10 + s)
    np_dtype = _NP[dtype]
    feeds = {"Q": rng.standard_normal((2, hq, l, e)).astype(np_dtype),
             "K": rng.standard_normal((2, hkv, s, e)).astype(np_dtype),
             "V": rng.standard_normal((2, hkv, s, ev)).astype(np_dtype)}
    work = precision or (FLOAT if dtype == FLOAT16 else dtype)
    attrs: dict[str, Any] = {}
    if scale is not None:
        attrs["scale"] = scale
    if precision is not None:
        attrs["softmax_precision"] = precision
    if score_mod:
        attrs["score_mod"] = _alibi_causal(work)
    if prob_mod:
        attrs["prob_mod"] = _sharpen(work)
    node = helper.make_node("FlexAttention", ["Q", "K", "V"], ["Y"], domain=PREVIEW_DOMAIN, **attrs)
    model = _model(node, feeds, 1, {"": 27, PREVIEW_DOMAIN: 1})
    tol = (2e-3, 2e-3) if dtype == FLOAT16 else (1e-5, 1e-6)
    _close(run_graphdnn(model, feeds), _reference(model, feeds), *tol)


def test_flex_attention_score_mod_reads_outer_values():
    """A score_mod body that reads a graph input: the captured value reaches the compiled body
    (ONNX's reference evaluator cannot run this, so numpy is the reference)."""
    rng = np.random.default_rng(3)
    feeds = {"Q": rng.standard_normal((1, 2, 3, 4)).astype(np.float32),
             "K": rng.standard_normal((1, 2, 5, 4)).astype(np.float32),
             "V": rng.standard_normal((1, 2, 5, 2)).astype(np.float32),
             "bias": rng.standard_normal((3, 5)).astype(np.float32)}
    body = _body("add_bias", [helper.make_node("Add", ["x", "bias"], ["y"])], FLOAT)
    node = helper.make_node("FlexAttention", ["Q", "K", "V"], ["Y"], domain=PREVIEW_DOMAIN, score_mod=body, scale=0.7)
    model = _model(node, feeds, 1, {"": 27, PREVIEW_DOMAIN: 1})
    scores = np.einsum("bhle,bhse->bhls", feeds["Q"], feeds["K"]).astype(np.float64) * 0.7 + feeds["bias"]
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    _close(run_graphdnn(model, feeds), [(probs @ feeds["V"]).astype(np.float32)], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Adagrad, Momentum, Adam (ai.onnx.preview.training): reference evaluator and numpy
# ------------------------------------------------------------------------------------------------
def _optimizer_case(op: str, n_states: int, step: int, attrs: dict[str, Any], dtype: int = FLOAT,
                    n_tensors: int = 2) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(step + n_states)
    np_dtype = _NP[dtype]
    feeds = {"R": np.array(0.05, dtype=np.float32), "T": np.array(step, dtype=np.int64)}
    shapes = [(3, 4), (5,), (2, 1, 3)][:n_tensors]
    for role in ["X", "G", "S1", "S2"][:2 + n_states]:
        for i, shape in enumerate(shapes):
            data = rng.standard_normal(shape)
            feeds[f"{role}{i}"] = (np.abs(data) if role == "S2" or (role == "S1" and op == "Adagrad") else data
                                   ).astype(np_dtype)
    outs = [f"{role}{i}_new" for role in ["X", "S1", "S2"][:1 + n_states] for i in range(n_tensors)]
    node = helper.make_node(op, list(feeds), outs, domain=TRAINING_DOMAIN, **attrs)
    return _model(node, feeds, len(outs), {"": 27, TRAINING_DOMAIN: 1}), feeds


def _by_hand(op: str, feeds: dict[str, np.ndarray], attrs: dict[str, Any], n: int) -> list[np.ndarray]:
    """The spec's pseudo code, in float64."""
    r, t = float(feeds["R"]), int(feeds["T"])
    xs, news = [], []
    for i in range(n):
        x, g = feeds[f"X{i}"].astype(np.float64), feeds[f"G{i}"].astype(np.float64)
        g = attrs.get("norm_coefficient", 0.0) * x + g
        if op == "Adagrad":
            h = feeds[f"S1{i}"] + g * g
            rate = r / (1 + t * attrs.get("decay_factor", 0.0))
            xs.append(x - rate * g / (np.sqrt(h) + attrs.get("epsilon", 1e-6)))
            news.append([h])
        elif op == "Momentum":
            alpha, beta = attrs["alpha"], attrs["beta"] if t > 0 else 1.0
            v = alpha * feeds[f"S1{i}"] + beta * g
            xs.append(x - r * (v if attrs["mode"] == "standard" else g + alpha * v))
            news.append([v])
        else:
            alpha, beta = attrs.get("alpha", 0.9), attrs.get("beta", 0.999)
            v = alpha * feeds[f"S1{i}"] + (1 - alpha) * g
            h = beta * feeds[f"S2{i}"] + (1 - beta) * g * g
            rate = r * np.sqrt(1 - beta**t) / (1 - alpha**t) if t > 0 else r
            x_new = x - rate * v / (np.sqrt(h) + attrs.get("epsilon", 1e-6))
            xs.append((1 - attrs.get("norm_coefficient_post", 0.0)) * x_new)
            news.append([v, h])
    return xs + [s[j] for j in range(len(news[0])) for s in news]


@pytest.mark.parametrize("op,n_states,step,attrs", [
    ("Adagrad", 1, 0, {}),
    ("Adagrad", 1, 4, {"decay_factor": 0.2, "epsilon": 1e-4, "norm_coefficient": 0.01}),
    ("Momentum", 1, 0, {"alpha": 0.8, "beta": 0.3, "mode": "standard", "norm_coefficient": 0.02}),
    ("Momentum", 1, 5, {"alpha": 0.8, "beta": 0.3, "mode": "standard", "norm_coefficient": 0.0}),
    ("Momentum", 1, 2, {"alpha": 0.7, "beta": 0.5, "mode": "nesterov", "norm_coefficient": 0.01}),
    ("Adam", 2, 0, {}),
    ("Adam", 2, 3, {"alpha": 0.8, "beta": 0.95, "epsilon": 1e-3, "norm_coefficient": 0.01,
                    "norm_coefficient_post": 0.02}),
])
def test_optimizer_steps_match_reference_and_spec(op, n_states, step, attrs):
    model, feeds = _optimizer_case(op, n_states, step, attrs, n_tensors=2 if step else 3)
    ours = run_graphdnn(model, feeds)
    n = 2 if step else 3
    _close(ours, _reference(model, feeds), rtol=1e-5, atol=1e-6)
    for a, b in zip(ours, _by_hand(op, feeds, attrs, n)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_optimizer_step_keeps_float64():
    attrs = {"alpha": 0.875, "beta": 0.125, "mode": "nesterov", "norm_coefficient": 0.25}  # exact in float32
    model, feeds = _optimizer_case("Momentum", 1, 1, attrs, dtype=DOUBLE, n_tensors=1)
    ours = run_graphdnn(model, feeds)
    assert all(o.dtype == np.float64 for o in ours)
    for a, b in zip(ours, _by_hand("Momentum", feeds, attrs, 1)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
