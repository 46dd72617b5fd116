"""Compile-time fusion and fused recurrent kernels: each fused form fires (the generated code or the
profiler shows it) and computes what ONNX Runtime and the unfused ops compute, gradients included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from graphdnn.converters.onnx_import import load_onnx
from helpers import run_ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import graphdnn as gd
from graphdnn import fusion, layers, nn
from graphdnn import initializers as init
from graphdnn.ops import rnn

RNG = np.random.default_rng(0)


def _randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _model(nodes, inputs, outputs, inits, opset=17):
    graph = h.make_graph(nodes, "m", [h.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                         [h.make_tensor_value_info(n, T.FLOAT, None) for n in outputs],
                         [numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _compiled(model):
    g = load_onnx(model, trainable="float")
    return gd.compile(g)


# -- dense layers and the mean softmax cross-entropy --------------------------------------------
def _book_dnn():
    torch.manual_seed(0)
    g = gd.Graph("dnn")
    X = g.placeholder("X", (None, 12))
    y = g.placeholder("y", (None,), "int64")
    hidden = layers.dense(X, 7, activation=nn.relu, kernel_initializer=init.he_normal(), name="hidden")
    logits = layers.dense(hidden, 4, name="outputs")
    xent = nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    loss = nn.reduce_mean(xent, name="loss")
    return g, X, y, xent, loss


def _hand_loss(g, x, y):
    """The same network written by hand without fused calls: matmul, add, log-softmax, pick, mean."""
    v = {k: t.detach().clone().requires_grad_(True) for k, t in g.values.items()}
    a = torch.relu(x @ v["hidden/kernel"] + v["hidden/bias"])
    logits = a @ v["outputs/kernel"] + v["outputs/bias"]
    per_sample = -torch.log_softmax(logits, dim=1).gather(1, y.reshape(-1, 1)).reshape(-1)
    return per_sample.mean(), v


def test_dense_layers_and_mean_loss_fuse_and_match_the_unfused_ops():
    g, X, y, xent, loss = _book_dnn()
    model = gd.compile(g, inputs=[X, y], outputs=[loss])
    assert model.code.count("torch.addmm(") == 2
    assert "torch._C._nn.cross_entropy_loss(" in model.code and "softmax_cross_entropy_loss(" not in model.code
    x, labels = torch.randn(9, 12), torch.randint(0, 4, (9,))
    model.train()
    out = model(x, labels)
    out.backward()
    expected, v = _hand_loss(g, x, labels)
    expected.backward()
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    assert out.shape == ()
    for name in ("hidden/kernel", "hidden/bias", "outputs/kernel", "outputs/bias"):  # reached by graph name
        torch.testing.assert_close(model.variable(name).grad, v[name].grad, rtol=1e-5, atol=1e-6)


def test_loss_read_elsewhere_is_not_fused():
    g, X, y, xent, loss = _book_dnn()
    both = gd.compile(g, inputs=[X, y], outputs=[loss, xent])
    assert "softmax_cross_entropy_loss(" in both.code and "cross_entropy_loss(" not in both.code.replace(
        "softmax_cross_entropy_loss(", "")
    fused = gd.compile(g, inputs=[X, y], outputs=[loss])
    x, labels = torch.randn(5, 12), torch.randint(0, 4, (5,))
    torch.testing.assert_close(fused(x, labels), both(x, labels)[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes_as_input", [False, True])
def test_mean_softmax_cross_entropy_matches_onnxruntime(keepdims, axes_as_input):
    """N-D scores [N, C, D]; ReduceMean over every axis (none named, or all named as an input at opset 18)."""
    nodes = [h.make_node("SoftmaxCrossEntropyLoss", ["scores", "labels"], ["per"], reduction="none")]
    if axes_as_input:
        nodes.append(h.make_node("ReduceMean", ["per", "axes"], ["loss"], keepdims=keepdims))
        inits, opset = {"axes": np.array([1, 0], np.int64)}, 18
    else:
        nodes.append(h.make_node("ReduceMean", ["per"], ["loss"], keepdims=keepdims))
        inits, opset = {}, 17
    model = _model(nodes, [("scores", T.FLOAT, [3, 5, 2]), ("labels", T.INT64, [3, 2])], ["loss"], inits, opset)
    scores, labels = _randn(3, 5, 2), RNG.integers(0, 5, (3, 2)).astype(np.int64)
    module = _compiled(model)
    assert ("softmax_cross_entropy_mean(" if keepdims else "torch._C._nn.cross_entropy_loss(") in module.code
    got = module(torch.from_numpy(scores), torch.from_numpy(labels))
    (expected,) = run_ort(model, {"scores": scores, "labels": labels})
    assert tuple(got.shape) == expected.shape
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-6, atol=1e-6)


def test_ignore_index_keeps_the_divisor_of_the_unfused_ops():
    """With ignore_index, ReduceMean divides by every element and cross_entropy would not: no fusion."""
    nodes = [h.make_node("SoftmaxCrossEntropyLoss", ["scores", "labels"], ["per"], reduction="none",
                         ignore_index=1),
             h.make_node("ReduceMean", ["per"], ["loss"], keepdims=0)]
    model = _model(nodes, [("scores", T.FLOAT, [6, 3]), ("labels", T.INT64, [6])], ["loss"], {})
    scores, labels = _randn(6, 3), np.array([0, 1, 2, 1, 0, 2], np.int64)
    module = _compiled(model)
    assert "softmax_cross_entropy_mean(" not in module.code and "_nn.cross_entropy_loss(" not in module.code
    (expected,) = run_ort(model, {"scores": scores, "labels": labels})
    np.testing.assert_allclose(module(torch.from_numpy(scores), torch.from_numpy(labels)).numpy(), expected,
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bias_first", [False, True])
def test_batched_matmul_and_bias_become_linear(bias_first):
    w, b = _randn(8, 5), _randn(5)
    add_in = ["b", "mm"] if bias_first else ["mm", "b"]
    nodes = [h.make_node("MatMul", ["x", "w"], ["mm"]), h.make_node("Add", add_in, ["z"]),
             h.make_node("Relu", ["z"], ["out"])]
    model = _model(nodes, [("x", T.FLOAT, [2, 3, 8])], ["out"], {"w": w, "b": b})
    module = _compiled(model)
    assert "graphdnn_fusion_linear(" in module.code and "matmul(" not in module.code
    x = _randn(2, 3, 8)
    (expected,) = run_ort(model, {"x": x})
    got = module(torch.from_numpy(x))
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    got.sum().backward()
    xt = torch.from_numpy(x)
    wt, bt = torch.from_numpy(w).requires_grad_(True), torch.from_numpy(b).requires_grad_(True)
    torch.relu(torch.matmul(xt, wt) + bt).sum().backward()
    torch.testing.assert_close(module.variable("w").grad, wt.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(module.variable("b").grad, bt.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("attrs", "fused"), [({"transB": 1}, True), ({"transA": 1, "transB": 1}, True),
                                             ({"alpha": 0.5}, False)])
def test_gemm_becomes_addmm_when_unscaled(attrs, fused):
    a_shape = [6, 4] if attrs.get("transA") else [4, 6]
    b = _randn(5, 6) if attrs.get("transB") else _randn(6, 5)
    nodes = [h.make_node("Gemm", ["a", "b", "c"], ["y"], **attrs)]
    model = _model(nodes, [("a", T.FLOAT, a_shape)], ["y"], {"b": b, "c": _randn(5)})
    module = _compiled(model)
    assert ("graphdnn_fusion_gemm(" in module.code) is fused
    a = _randn(*a_shape)
    (expected,) = run_ort(model, {"a": a})
    np.testing.assert_allclose(module(torch.from_numpy(a)).detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_constant_chains_still_fold():
    consts = [h.make_node("Constant", [], [n], value=numpy_helper.from_array(v, n))
              for n, v in (("p", _randn(3, 4)), ("q", _randn(4, 2)), ("r", _randn(2)))]
    nodes = [*consts, h.make_node("MatMul", ["p", "q"], ["mm"]), h.make_node("Add", ["mm", "r"], ["k"]),
             h.make_node("Add", ["x", "k"], ["y"])]
    model = _model(nodes, [("x", T.FLOAT, [3, 2])], ["y"], {})
    module = _compiled(model)
    assert "addmm" not in module.code and "_const_" in module.code
    x = _randn(3, 2)
    np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), run_ort(model, {"x": x})[0], rtol=1e-5,
                               atol=1e-6)


# -- recurrent layers through torch's fused kernels --------------------------------------------
def _rnn_model(op, hidden, inputs, inits, n_out, attrs):
    names = ["x", "w", "r", "b" if "b" in inits else "", "", "h0"] + (["c0"] if op == "LSTM" else [])
    outs = ["y", "yh", "yc"][:n_out]
    node = h.make_node(op, names, outs, hidden_size=hidden, **attrs)
    graph = h.make_graph([node], "m", [h.make_tensor_value_info(n, T.FLOAT, v.shape) for n, v in inputs.items()],
                         [h.make_tensor_value_info(n, T.FLOAT, None) for n in outs],
                         [numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 14)])
    model.ir_version = 8
    return model


_RNN_CASES = [
    ("LSTM", {"direction": "bidirectional"}, True, 3),
    ("LSTM", {"direction": "reverse"}, True, 3),
    ("LSTM", {"layout": 1}, True, 3),
    ("LSTM", {}, False, 2),
    ("GRU", {"linear_before_reset": 1, "direction": "bidirectional"}, True, 2),
    ("GRU", {"linear_before_reset": 1, "layout": 1}, True, 2),
    ("RNN", {"direction": "bidirectional", "activations": ["Relu", "Relu"]}, True, 2),
    ("RNN", {"direction": "reverse"}, True, 2),
]


@pytest.mark.parametrize(("op", "attrs", "with_bias", "n_out"), _RNN_CASES)
def test_recurrent_ops_run_fused_and_match_onnxruntime(op, attrs, with_bias, n_out):
    gates, hidden, seq, batch, size = {"LSTM": 4, "GRU": 3, "RNN": 1}[op], 5, 4, 3, 6
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    layout = attrs.get("layout", 0)
    x = _randn(batch, seq, size) if layout else _randn(seq, batch, size)
    state = (lambda: _randn(batch, dirs, hidden)) if layout else (lambda: _randn(dirs, batch, hidden))
    inputs = {"x": x, "h0": state()}
    if op == "LSTM":
        inputs["c0"] = state()
    inits = {"w": _randn(dirs, gates * hidden, size), "r": _randn(dirs, gates * hidden, hidden)}
    if with_bias:
        inits["b"] = _randn(dirs, 2 * gates * hidden)
    model = _rnn_model(op, hidden, inputs, inits, n_out, attrs)
    if layout:  # ONNX Runtime runs layout 0 only: the same op on transposed feeds, results transposed back
        swapped = {k: np.ascontiguousarray(v.swapaxes(0, 1)) for k, v in inputs.items()}
        seq_first = _rnn_model(op, hidden, swapped, inits, n_out, {**attrs, "layout": 0})
        y, *states = run_ort(seq_first, swapped)
        expected = [y.transpose(2, 0, 1, 3), *(st.swapaxes(0, 1) for st in states)]
    else:
        expected = run_ort(model, inputs)
    module = _compiled(model)
    feeds = [torch.from_numpy(inputs[n.split(":")[0]]) for n in module.input_names]
    with torch.profiler.profile() as prof:
        got = module(*feeds)
    kernel = {"LSTM": "aten::lstm", "GRU": "aten::gru", "RNN": "aten::rnn_relu" if "activations" in attrs
              else "aten::rnn_tanh"}[op]
    assert kernel in {e.name for e in prof.events()}
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g.detach().numpy(), e, rtol=1e-5, atol=1e-5)
    sum(g.sum() for g in got).backward()
    for name in inits:  # gradients reach the ONNX-named tensors
        assert module.variable(name).grad is not None and module.variable(name).grad.abs().sum() > 0


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_fused_recurrent_gradients_match_the_time_loop(op, direction):
    """A clip no value reaches sends the op through the Python time loop: same outputs, same gradients."""
    gates, hidden, seq, batch, size = {"LSTM": 4, "GRU": 3, "RNN": 1}[op], 4, 5, 2, 3
    dirs = 2 if direction == "bidirectional" else 1
    gen = torch.Generator().manual_seed(1)
    tensors = [torch.randn(seq, batch, size, generator=gen, dtype=torch.float64),
               torch.randn(dirs, gates * hidden, size, generator=gen, dtype=torch.float64),
               torch.randn(dirs, gates * hidden, hidden, generator=gen, dtype=torch.float64),
               torch.randn(dirs, 2 * gates * hidden, generator=gen, dtype=torch.float64)]
    n_states = 2 if op == "LSTM" else 1
    states = [torch.randn(dirs, batch, hidden, generator=gen, dtype=torch.float64) for _ in range(n_states)]
    fn = {"LSTM": rnn.lstm, "GRU": rnn.gru, "RNN": rnn.rnn}[op]
    extra = {"linear_before_reset": 1} if op == "GRU" else {}
    results = []
    for clip in (None, 1e30):
        leaves = [t.clone().requires_grad_(True) for t in (*tensors, *states)]
        x, w, r, b, *init_states = leaves
        with torch.profiler.profile() as prof:
            outs = fn(x, w, r, b, None, *init_states, direction=direction, hidden_size=hidden, clip=clip,
                      _outputs=1 + n_states, **extra)
        kernel = {"LSTM": "aten::lstm", "GRU": "aten::gru", "RNN": "aten::rnn_tanh"}[op]
        assert (kernel in {e.name for e in prof.events()}) is (clip is None)
        weights = [torch.linspace(-1, 1, o.numel(), dtype=o.dtype).reshape(o.shape) for o in outs]
        sum((o * wt).sum() for o, wt in zip(outs, weights)).backward()
        results.append(([o.detach() for o in outs], [t.grad for t in leaves]))
    (fused_out, fused_grad), (loop_out, loop_grad) = results
    for a, b in zip(fused_out + fused_grad, loop_out + loop_grad):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_recurrent_weights_laid_out_for_inference_follow_in_place_changes():
    """Without gradients the kernel's weight list is kept between calls, until W, R or B change."""
    hidden = 3
    inputs = {"x": _randn(4, 2, 5), "h0": _randn(1, 2, hidden), "c0": _randn(1, 2, hidden)}
    inits = {"w": _randn(1, 4 * hidden, 5), "r": _randn(1, 4 * hidden, hidden), "b": _randn(1, 8 * hidden)}
    model = _rnn_model("LSTM", hidden, inputs, inits, 1, {})
    module = _compiled(model)
    feeds = [torch.from_numpy(inputs[n.split(":")[0]]) for n in module.input_names]
    with torch.no_grad():
        module(*feeds)
        module.variable("r").mul_(0.5)
        got = module(*feeds)
    inits["r"] = inits["r"] * np.float32(0.5)
    expected = run_ort(_rnn_model("LSTM", hidden, inputs, inits, 1, {}), inputs)[0]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_unsupported_recurrent_settings_keep_the_time_loop():
    x, w, r = torch.randn(3, 2, 4), torch.randn(1, 12, 4), torch.randn(1, 12, 4)
    for kwargs in ({"linear_before_reset": 0}, {"linear_before_reset": 1, "clip": 0.5},
                   {"linear_before_reset": 1, "activations": ["HardSigmoid", "Tanh"]}):
        with torch.profiler.profile() as prof:
            rnn.gru(x, w, r, hidden_size=4, **kwargs)
        assert "aten::gru" not in {e.name for e in prof.events()}


def test_book_network_loss_matches_cross_entropy():
    """The fused loss equals torch's cross-entropy on the same logits (independent formula)."""
    g, X, y, xent, loss = _book_dnn()
    model = gd.compile(g, inputs=[X, y], outputs=[loss])
    x, labels = torch.randn(6, 12), torch.randint(0, 4, (6,))
    v = g.values
    logits = torch.relu(x @ v["hidden/kernel"] + v["hidden/bias"]) @ v["outputs/kernel"] + v["outputs/bias"]
    torch.testing.assert_close(model(x, labels), F.cross_entropy(logits, labels), rtol=1e-6, atol=1e-6)


# -- attention through scaled_dot_product_attention ---------------------------------------------
B, SEQ, HEADS, DH = 2, 5, 2, 4
W = HEADS * DH
FLOAT_MIN = float(np.finfo(np.float32).min)


def _attention_model(mask: str, scale: str = "div", fill_as: str = "constant"):
    """Exporter-style self-attention: x @ Wq/Wk/Wv, heads split by Reshape + Transpose (K straight to
    [B, H, D, SEQ]), MatMul(Q, Kt), scaled, masked (``mask``: "add" of a [B, 1, 1, SEQ] input, "where" /
    "where_swapped" with a causal condition and finfo.min, or "none"), Softmax, MatMul(V), heads merged."""
    shape4 = np.array([0, 0, HEADS, DH], np.int64)
    inits = {"wq": _randn(W, W), "wk": _randn(W, W), "wv": _randn(W, W), "shape4": shape4,
             "shape3": np.array([0, 0, W], np.int64)}
    nodes = []
    for n in "qkv":
        nodes += [h.make_node("MatMul", ["x", f"w{n}"], [f"{n}_"]),
                  h.make_node("Reshape", [f"{n}_", "shape4"], [f"{n}4"]),
                  h.make_node("Transpose", [f"{n}4"], [f"{n}h"], perm=[0, 2, 3, 1] if n == "k" else [0, 2, 1, 3])]
    nodes.append(h.make_node("MatMul", ["qh", "kh"], ["scores"]))
    if scale == "div":
        inits["d"] = np.array(np.sqrt(DH), np.float32)
        nodes.append(h.make_node("Div", ["scores", "d"], ["scaled"]))
    elif scale == "mul":
        inits["d"] = np.array(1 / np.sqrt(DH), np.float32)
        nodes.append(h.make_node("Mul", ["d", "scores"], ["scaled"]))
    scaled = "scores" if scale == "none" else "scaled"
    inputs = [("x", T.FLOAT, [None, SEQ, W])]
    if mask == "add":
        inputs.append(("mask", T.FLOAT, [None, 1, 1, SEQ]))
        nodes.append(h.make_node("Add", [scaled, "mask"], ["masked"]))
    elif mask.startswith("where"):
        causal = np.tril(np.ones((SEQ, SEQ), bool)).reshape(1, 1, SEQ, SEQ)
        fill = np.array(FLOAT_MIN, np.float32)
        if fill_as == "constant":
            nodes.append(h.make_node("Constant", [], ["fill"], value=numpy_helper.from_array(fill, "fill")))
        else:
            inits["fill"] = fill
        if mask == "where":
            nodes.append(h.make_node("Where", ["causal", scaled, "fill"], ["masked"]))
        else:
            inits["causal"] = ~causal
            nodes.append(h.make_node("Where", ["causal", "fill", scaled], ["masked"]))
        inits.setdefault("causal", causal)
    masked = scaled if mask == "none" else "masked"
    nodes += [h.make_node("Softmax", [masked], ["probs"], axis=-1),
              h.make_node("MatMul", ["probs", "vh"], ["ctx"]),
              h.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
              h.make_node("Reshape", ["ctx_t", "shape3"], ["y"])]
    return _model(nodes, inputs, ["y"], inits)


def _hand_attention(v, x, mask_kind, mask, scale):
    """The attention written with torch ops (the unfused formula), for outputs and gradients."""
    def heads(z):
        return z.reshape(z.shape[0], SEQ, HEADS, DH).transpose(1, 2)

    q, k, val = heads(x @ v["wq"]), heads(x @ v["wk"]), heads(x @ v["wv"])
    s = q @ k.transpose(-2, -1) * scale
    if mask_kind == "add":
        s = s + mask
    elif mask_kind.startswith("where"):
        s = s.masked_fill(~torch.tril(torch.ones(SEQ, SEQ, dtype=torch.bool)), FLOAT_MIN)
    return (s.softmax(-1) @ val).transpose(1, 2).reshape(x.shape)


@pytest.mark.parametrize("mask,scale,fill_as", [("add", "div", "constant"), ("where", "div", "constant"),
                                                ("where_swapped", "mul", "variable"), ("none", "none", "constant"),
                                                ("where", "mul", "variable")])
def test_attention_runs_as_sdpa_and_matches_onnxruntime_and_gradients(mask, scale, fill_as):
    model = _attention_model(mask, scale, fill_as)
    x = _randn(B, SEQ, W)
    feeds = {"x": x}
    if mask == "add":
        m = np.zeros((B, 1, 1, SEQ), np.float32)
        m[1, ..., SEQ - 2:] = FLOAT_MIN  # padding at the end of the second sequence
        feeds["mask"] = m
    g = load_onnx(model)  # weights trainable, the scale and fill constants
    module = gd.compile(g)
    assert module.code.count("fusion_attention(") == 1
    assert "activations_softmax(" not in module.code and "torch.softmax(" not in module.code
    inputs = [torch.from_numpy(feeds[n.split(":")[0]]) for n in module.input_names]
    with torch.profiler.profile() as prof:
        got = module(*inputs)
    assert any("scaled_dot_product" in e.name for e in prof.events())
    np.testing.assert_allclose(got.detach().numpy(), run_ort(model, feeds)[0], rtol=1e-5, atol=1e-5)

    # gradients in float64 (the fused call runs in any floating dtype) against the formula by hand
    module.double()
    inputs = [t.double() for t in inputs]
    leaf = inputs[0].clone().requires_grad_(True)
    weights = torch.linspace(-1, 1, got.numel(), dtype=torch.float64).reshape(got.shape)
    out = module(leaf, *inputs[1:])
    (out * weights).sum().backward()
    v = {n: module.variable(n).detach().clone().requires_grad_(True) for n in ("wq", "wk", "wv")}
    ref_leaf = inputs[0].clone().requires_grad_(True)
    scale_value = 1 / np.sqrt(DH) if scale != "none" else 1.0
    expected = _hand_attention(v, ref_leaf, mask, inputs[1] if mask == "add" else None, float(scale_value))
    (expected * weights).sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-7, atol=1e-7)  # the scale was read in float32
    torch.testing.assert_close(leaf.grad, ref_leaf.grad, rtol=1e-6, atol=1e-6)
    for n in ("wq", "wk", "wv"):
        torch.testing.assert_close(module.variable(n).grad, v[n].grad, rtol=1e-6, atol=1e-6)


def test_attention_intermediates_requested_as_outputs_are_not_fused():
    model = _attention_model("where", "div")
    module = gd.compile(load_onnx(model), outputs=["y", "probs"])
    assert "fusion_attention(" not in module.code
    x = _randn(B, SEQ, W)
    y, probs = module(torch.from_numpy(x))
    np.testing.assert_allclose(y.detach().numpy(), run_ort(model, {"x": x})[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(B, HEADS, SEQ))
    assert float(probs.detach()[0, 0, 0, 1:].abs().max()) == 0.0  # the causal mask: the first query sees itself only


def test_attention_with_a_small_fill_value_is_not_fused():
    """Where(cond, x, -10000) differs from adding -10000 on a fully masked row: left to the unfused ops."""
    model = _attention_model("where", "div")
    for node in model.graph.node:
        if node.op_type == "Constant":
            node.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array(-1e4, np.float32), "fill"))
    assert "fusion_attention(" not in gd.compile(load_onnx(model)).code


def test_attention_with_broadcast_batch_dimensions_runs_the_unfused_ops():
    """MatMul broadcasts batch dimensions, scaled_dot_product_attention does not: checked at run time."""
    nodes = [h.make_node("MatMul", ["q", "kt"], ["s"]), h.make_node("Softmax", ["s"], ["p"], axis=-1),
             h.make_node("MatMul", ["p", "v"], ["y"])]
    model = _model(nodes, [("q", T.FLOAT, [None, 2, 3, 4]), ("kt", T.FLOAT, [None, 2, 4, 5]),
                           ("v", T.FLOAT, [None, 2, 5, 4])], ["y"], {})
    module = _compiled(model)
    assert "fusion_attention(" in module.code
    for bq, bk in ((2, 2), (2, 1), (1, 3)):
        feeds = {"q": _randn(bq, 2, 3, 4), "kt": _randn(bk, 2, 4, 5), "v": _randn(max(bq, bk), 2, 5, 4)}
        got = module(*(torch.from_numpy(feeds[n]) for n in ("q", "kt", "v")))
        np.testing.assert_allclose(got.numpy(), run_ort(model, feeds)[0], rtol=1e-5, atol=1e-5)


# -- shape arithmetic computed once per input shape ---------------------------------------------
def _shape_model():
    """y = Reshape(x, [batch, -1]) + ConstantOfShape([batch, 1]) + 1: legacy-exporter shape arithmetic."""
    consts = [h.make_node("Constant", [], [n], value=numpy_helper.from_array(v, n))
              for n, v in (("zero", np.array([0], np.int64)), ("minus1", np.array([-1], np.int64)),
                           ("one", np.array([1], np.int64)))]
    nodes = [*consts, h.make_node("Shape", ["x"], ["shape"]), h.make_node("Gather", ["shape", "zero"], ["batch"]),
             h.make_node("Concat", ["batch", "minus1"], ["flat"], axis=0),
             h.make_node("Reshape", ["x", "flat"], ["x2"]),
             h.make_node("Concat", ["batch", "one"], ["col"], axis=0),
             h.make_node("ConstantOfShape", ["col"], ["ones"],
                         value=numpy_helper.from_array(np.array([1.0], np.float32), "v")),
             h.make_node("Add", ["x2", "ones"], ["y"])]
    return _model(nodes, [("x", T.FLOAT, ["n", 4, 3])], ["y"], {})


def _programs(module):
    """The shape programs the generated code calls."""
    return [n.target for n in module.graph.nodes if isinstance(n.target, fusion.ShapeProgram)]


def test_shape_arithmetic_runs_once_per_input_shape_and_matches_onnxruntime():
    model = _shape_model()
    module = _compiled(model)
    assert len(_programs(module)) == 2
    assert "tensor_shape(" not in module.code and "constant_of_shape(" not in module.code
    for n in (2, 5, 2, 1):
        x = _randn(n, 4, 3)
        got = module(torch.from_numpy(x))
        np.testing.assert_allclose(got.numpy(), run_ort(model, {"x": x})[0], rtol=1e-6, atol=1e-6)
    assert all(len(p.cache) == 3 for p in _programs(module))  # batch 2, 5 and 1: computed three times


def test_shape_values_are_handed_over_on_the_model_device():
    """Shape arithmetic runs on the CPU (where Shape puts its result) and hands its value over on the
    device of the tensor it reads (the meta device stands in for an accelerator)."""
    module = _compiled(_shape_model())
    y = module(torch.randn(2, 4, 3, device="meta"))
    assert y.device.type == "meta" and tuple(y.shape) == (2, 12)
    np.testing.assert_allclose(module(torch.ones(2, 4, 3)).numpy(), np.full((2, 12), 2.0, np.float32))


def test_shape_values_cached_in_inference_mode_serve_training():
    module = _compiled(_shape_model())
    x = torch.randn(3, 4, 3)
    with torch.inference_mode():
        module(x)
    leaf = x.clone().requires_grad_(True)
    module(leaf).sum().backward()
    torch.testing.assert_close(leaf.grad, torch.ones_like(leaf))


def test_shape_arithmetic_requested_as_an_output_is_computed_as_before():
    model = _shape_model()
    g = load_onnx(model)
    module = gd.compile(g, outputs=["y", "flat"])
    x = torch.randn(2, 4, 3)
    y, flat = module(x)
    assert flat.tolist() == [2, -1]
    flat.add_(7)  # the caller owns what it receives: nothing cached changes
    torch.testing.assert_close(module(x)[0], x.reshape(2, -1) + 1)


def test_shape_constants_held_in_variables_are_cached_until_they_change():
    """Exporters also store shape constants as initializers (non-trainable variables after import)."""
    nodes = [h.make_node("Shape", ["x"], ["shape"]), h.make_node("Gather", ["shape", "zero"], ["batch"]),
             h.make_node("Mul", ["batch", "k"], ["rows"]),
             h.make_node("Concat", ["rows", "minus1"], ["target"], axis=0),
             h.make_node("Reshape", ["x", "target"], ["y"])]
    inits = {"zero": np.array([0], np.int64), "minus1": np.array([-1], np.int64), "k": np.array([1], np.int64)}
    model = _model(nodes, [("x", T.FLOAT, ["n", 4, 3])], ["y"], inits)
    module = _compiled(model)
    assert _programs(module) and "tensor_shape(" not in module.code
    x = _randn(2, 4, 3)
    np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), run_ort(model, {"x": x})[0])
    with torch.no_grad():
        module.variable("k").fill_(2)  # an in-place change is seen: [2 * n, -1]
    assert tuple(module(torch.from_numpy(x)).shape) == (4, 6)


# -- direct calls and torch.compile ---------------------------------------------------------------
def test_float_ops_are_direct_torch_calls_and_a_constant_exponent_a_number():
    nodes = [h.make_node("Pow", ["x", "three"], ["cube"]), h.make_node("Mul", ["cube", "x"], ["m"]),
             h.make_node("Transpose", ["m"], ["t"], perm=[1, 0]), h.make_node("Softmax", ["t"], ["y"], axis=-1)]
    model = _model(nodes, [("x", T.FLOAT, [3, 4])], ["y"], {"three": np.array(3.0, np.float32)})
    module = gd.compile(load_onnx(model))
    code = module.code
    assert "torch.pow(x, 3.0)" in code and "torch.mul(" in code and "torch.permute(" in code
    assert "torch.softmax(" in code and "graphdnn_ops" not in code
    x = _randn(3, 4)
    np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), run_ort(model, {"x": x})[0], rtol=1e-6,
                               atol=1e-6)


def test_inductor_backend_computes_what_eager_computes():
    g, X, y, xent, loss = _book_dnn()
    eager = gd.compile(g, inputs=[X], outputs=["outputs/BiasAdd:0"])
    compiled = gd.compile(g, inputs=[X], outputs=["outputs/BiasAdd:0"], backend="inductor")
    x = torch.randn(5, 12)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-5)
    assert compiled._compiled_call_impl is not None  # forward went through torch.compile


def test_unknown_backend_is_refused():
    g, X, y, xent, loss = _book_dnn()
    with pytest.raises(gd.GraphError, match="not 'eager' or a torch.compile backend"):
        gd.compile(g, inputs=[X, y], outputs=[loss], backend="fastest")


# -- stacked recurrent layers: one multi-layer kernel call ----------------------------------------
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_TORCH_ORDER = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2], "RNN": [0]}  # ONNX iofc -> torch ifgo; zrh -> rzn


def _glue(kind, y, x_next, k):
    """The nodes an exporter writes between two layers: [seq, dirs, batch, H] -> [seq, batch, dirs * H]."""
    if kind == "squeeze":  # torch.onnx legacy exporter, one direction
        return [h.make_node("Squeeze", [y, "one"], [x_next])]
    nodes = [h.make_node("Transpose", [y], [f"t{k}"], perm=[0, 2, 1, 3])]
    if kind == "reshape":  # torch.onnx legacy exporter, two directions
        return nodes + [h.make_node("Reshape", [f"t{k}", "merge"], [x_next])]
    return nodes + [  # the default exporter: the target shape computed from the transposed tensor's shape
        h.make_node("Shape", [f"t{k}"], [f"s{k}"]),
        h.make_node("Slice", [f"s{k}", "zero", "two"], [f"sb{k}"]),
        h.make_node("Slice", [f"s{k}", "two", "four"], [f"dh{k}"]),
        h.make_node("ReduceProd", [f"dh{k}"], [f"p{k}"], keepdims=1),
        h.make_node("Concat", [f"sb{k}", f"p{k}"], [f"target{k}"], axis=0),
        h.make_node("Reshape", [f"t{k}", f"target{k}"], [x_next])]


def _stacked(op, layers, dirs, glue, states, attrs=None, hidden=5, size=6, seq=4, batch=3, also=()):
    """``layers`` ONNX ``op`` layers joined by ``glue``; ``states``: which layers get initial states."""
    gates = _GATES[op]
    nodes, inits, inputs = [], {"one": np.array([1], np.int64), "merge": np.array([0, 0, -1], np.int64),
                                "zero": np.array([0], np.int64), "two": np.array([2], np.int64),
                                "four": np.array([4], np.int64)}, {"x": _randn(seq, batch, size)}
    attrs = {"hidden_size": hidden, **({"direction": "bidirectional"} if dirs == 2 else {}), **(attrs or {})}
    for k in range(layers):
        width = size if k == 0 else dirs * hidden
        inits |= {f"w{k}": _randn(dirs, gates * hidden, width), f"r{k}": _randn(dirs, gates * hidden, hidden),
                  f"b{k}": _randn(dirs, 2 * gates * hidden)}
        names = ["x" if k == 0 else f"x{k}", f"w{k}", f"r{k}", f"b{k}", ""]
        for s in ("h", "c") if op == "LSTM" else ("h",):
            if k in states:
                inputs[f"{s}{k}"] = _randn(dirs, batch, hidden)
            names.append(f"{s}{k}" if k in states else "")
        outs = [f"y{k}", f"yh{k}", f"yc{k}"][: {"LSTM": 3, "GRU": 2, "RNN": 2}[op]]  # final states unused
        nodes.append(h.make_node(op, names, outs, **attrs))
        if k + 1 < layers:
            nodes += _glue(glue, f"y{k}", f"x{k + 1}", k)
    outputs = [f"y{layers - 1}", *also]
    graph = h.make_graph(nodes, "m", [h.make_tensor_value_info(n, T.FLOAT, v.shape) for n, v in inputs.items()],
                         [h.make_tensor_value_info(n, T.INT64 if n.startswith("target") else T.FLOAT, None)
                          for n in outputs],
                         [numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model, inputs, inits


def _torch_rows(a, op, hidden):
    """ONNX gate blocks (rows) of ``a`` in torch's order."""
    return np.concatenate([a[k * hidden : (k + 1) * hidden] for k in _TORCH_ORDER[op]])


def _reference(op, layers, dirs, inputs, inits, states, hidden, mode="tanh"):
    """torch.nn's multi-layer module with the ONNX weights (handwritten gate mapping): output as ONNX's last Y,
    and the module."""
    size = inputs["x"].shape[-1]
    kwargs = {"nonlinearity": mode} if op == "RNN" else {}
    module = getattr(torch.nn, op)(size, hidden, num_layers=layers, bidirectional=dirs == 2, **kwargs)
    gates = _GATES[op]
    with torch.no_grad():
        for k in range(layers):
            for d in range(dirs):
                sfx = f"l{k}" + ("_reverse" if d else "")
                b = inits[f"b{k}"][d]
                for name, value in (("weight_ih", inits[f"w{k}"][d]), ("weight_hh", inits[f"r{k}"][d]),
                                    ("bias_ih", b[: gates * hidden]), ("bias_hh", b[gates * hidden :])):
                    getattr(module, f"{name}_{sfx}").copy_(torch.from_numpy(_torch_rows(value, op, hidden)))
    batch = inputs["x"].shape[1]

    def initial(s):
        return torch.cat([torch.from_numpy(inputs[f"{s}{k}"]) if k in states else torch.zeros(dirs, batch, hidden)
                          for k in range(layers)])

    hx = (initial("h"), initial("c")) if op == "LSTM" else initial("h")
    y, _ = module(torch.from_numpy(inputs["x"]), hx)
    return y.reshape(y.shape[0], batch, dirs, hidden).transpose(1, 2), module


_STACKS = [
    ("LSTM", 2, 1, "squeeze", {0, 1}, {}),
    ("LSTM", 3, 2, "reshape", set(), {}),
    ("GRU", 2, 2, "shape", {0, 1}, {"linear_before_reset": 1}),
    ("GRU", 3, 1, "shape", {0}, {"linear_before_reset": 1}),
    ("RNN", 2, 2, "reshape", {1}, {"activations": ["Relu", "Relu"]}),
]


@pytest.mark.parametrize("gate_order", ["torch", "onnx"])
@pytest.mark.parametrize(("op", "layers", "dirs", "glue", "states", "attrs"), _STACKS)
def test_stacked_recurrent_layers_run_as_one_kernel_call(op, layers, dirs, glue, states, attrs, gate_order):
    """Imported with the weights held in torch's gate order (the default) or in ONNX's."""
    hidden = 5
    model, inputs, inits = _stacked(op, layers, dirs, glue, states, attrs, hidden=hidden)
    module = gd.compile(load_onnx(model, trainable="float", gate_order=gate_order))
    rows = _torch_rows if gate_order == "onnx" else lambda a, op, hidden: a  # torch order: held as torch's
    assert module.code.count("rnn_stacked(") == 1 and f"layers = {layers}" in module.code
    feeds = [torch.from_numpy(inputs[n.split(":")[0]]) for n in module.input_names]
    got = module(*feeds)
    np.testing.assert_allclose(got.detach().numpy(), run_ort(model, inputs)[0], rtol=1e-5, atol=1e-5)
    mode = attrs["activations"][0].lower() if op == "RNN" else "tanh"
    expected, ref = _reference(op, layers, dirs, inputs, inits, states, hidden, mode)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    weights = torch.linspace(-1, 1, got.numel()).reshape(got.shape)
    (got * weights).sum().backward()
    (expected * weights).sum().backward()
    gates = _GATES[op]
    for k in range(layers):  # every layer's ONNX-named tensors get the reference gradients
        for d in range(dirs):
            sfx = f"l{k}" + ("_reverse" if d else "")
            gb = module.variable(f"b{k}").grad[d].numpy()
            for grad, name in ((module.variable(f"w{k}").grad[d].numpy(), "weight_ih"),
                               (module.variable(f"r{k}").grad[d].numpy(), "weight_hh"),
                               (gb[: gates * hidden], "bias_ih"), (gb[gates * hidden :], "bias_hh")):
                want = getattr(ref, f"{name}_{sfx}").grad.numpy()
                np.testing.assert_allclose(rows(grad, op, hidden), want, rtol=1e-4, atol=1e-5)


def _set_initializer(model, name, value):
    for t in model.graph.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array(value, name))


def test_stacked_recurrent_layers_keep_the_weights_for_inference_until_they_change():
    model, inputs, inits = _stacked("LSTM", 2, 1, "squeeze", {0, 1})
    module = _compiled(model)
    feeds = [torch.from_numpy(inputs[n.split(":")[0]]) for n in module.input_names]
    with torch.no_grad():
        module(*feeds)
        module.variable("r1").mul_(0.5)
        got = module(*feeds)
    _set_initializer(model, "r1", inits["r1"] * np.float32(0.5))
    np.testing.assert_allclose(got.numpy(), run_ort(model, inputs)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("requested", ["y0", "t0", "target0"])
def test_stacked_layers_with_a_requested_intermediate_run_one_by_one(requested):
    """A layer's output, or the glue's, that is also a model output keeps the layers apart."""
    model, inputs, _ = _stacked("GRU", 2, 2, "shape", {0, 1}, {"linear_before_reset": 1}, also=(requested,))
    graph = load_onnx(model, trainable="float")
    module = gd.compile(graph, outputs=[graph.get_tensor(n).name for n in ("y1", requested)])
    assert "rnn_stacked(" not in module.code
    feeds = [torch.from_numpy(inputs[n.split(":")[0]]) for n in module.input_names]
    for got, want in zip(module(*feeds), run_ort(model, inputs)):
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-5, atol=1e-5)


def test_stacked_layers_of_other_settings_run_one_by_one():
    """Layers that differ (hidden size, clip, reverse direction) or glue that does not merge the directions
    as the kernel does are not joined."""
    for attrs in ({"clip": 5.0}, {"direction": "reverse"}):
        model, inputs, _ = _stacked("LSTM", 2, 1, "squeeze", {0, 1}, attrs)
        module = _compiled(model)
        assert "rnn_stacked(" not in module.code
        feeds = [torch.from_numpy(inputs[n.split(":")[0]]) for n in module.input_names]
        np.testing.assert_allclose(module(*feeds).detach().numpy(), run_ort(model, inputs)[0], rtol=1e-5, atol=1e-5)
    model, inputs, _ = _stacked("LSTM", 2, 2, "reshape", set())
    _set_initializer(model, "merge", np.array([0, -1, 10], np.int64))  # [seq, batch, 2 * H] another way
    assert "rnn_stacked(" in _compiled(model).code
    _set_initializer(model, "merge", np.array([-1, 3, 10], np.int64))
    assert "rnn_stacked(" not in _compiled(model).code  # a fixed batch of 3: not the merge for every batch


def test_stacked_layers_in_different_gate_orders_run_one_by_one():
    """A layer whose weights are held in torch's gate order is not joined with one in ONNX's order."""
    from graphdnn.gate_order import permute_gates

    model, inputs, _ = _stacked("LSTM", 2, 2, "reshape", {0, 1})
    graph = load_onnx(model, trainable="float", gate_order="onnx")
    first = next(op for op in graph.operations() if op.type == "LSTM")
    for ref in first.inputs[1:4]:  # the first layer only, by hand
        var = graph.get_operation(ref)
        with torch.no_grad():
            graph.values[var.name].copy_(permute_gates(graph.values[var.name], "LSTM", to="torch"))
        var.attrs["layout"] = "gates:torch:LSTM"
    first.attrs["gate_order"] = "torch"
    module = gd.compile(graph)
    assert "rnn_stacked(" not in module.code
    feeds = [torch.from_numpy(inputs[n.split(":")[0]]) for n in module.input_names]
    np.testing.assert_allclose(module(*feeds).detach().numpy(), run_ort(model, inputs)[0], rtol=1e-5, atol=1e-5)


# -- bias-free convolutions with a zero bias built at run time ------------------------------------------
_ZERO_BIAS_GLUE = ("shape_program", "expand", "cast_like", "constant_of_shape")


@pytest.fixture(scope="module")
def dynamo_conv_bn(tmp_path_factory):
    """A bias-free Conv + BatchNormalization + Relu as torch's dynamo exporter writes it unoptimized: the
    conv's bias is ``Expand(CastLike(0, x), Shape(W)[0:1])``."""
    import warnings

    torch.manual_seed(0)
    torch_model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.BatchNorm2d(4),
                                      torch.nn.ReLU()).eval()
    with torch.no_grad():  # running statistics other than the defaults
        torch_model[1].running_mean.uniform_(-0.5, 0.5)
        torch_model[1].running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("dynamo") / "conv_bn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch_model, (torch.randn(2, 3, 8, 8),), str(path), dynamo=True, optimize=False,
                          verbose=False)
    return torch_model, path


def test_dynamo_zero_conv_bias_is_dropped_and_matches_onnxruntime(dynamo_conv_bn):
    torch_model, path = dynamo_conv_bn
    import onnx

    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert {"Shape", "Expand", "CastLike"} <= set(ops)  # the glue this fusion is about
    module = gd.compile(load_onnx(str(path), trainable="float"))
    assert not any(name in module.code for name in _ZERO_BIAS_GLUE), module.code
    module.eval()
    x = _randn(2, 3, 8, 8)
    (expected,) = run_ort(str(path), {module.input_names[0].split(":")[0]: x})
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    # gradients reach the conv's weight as in the PyTorch module (the glue has none)
    x = torch.from_numpy(_randn(2, 3, 8, 8))
    module(x).square().sum().backward()
    torch_model(x).square().sum().backward()
    conv_weight = next(n for n in module.variable_names if module.variable(n).dim() == 4)
    torch.testing.assert_close(module.variable(conv_weight).grad, torch_model[0].weight.grad, rtol=1e-4, atol=1e-5)


def _zero_bias_conv(bias_nodes, extra_outputs=(), opset=17):
    """Conv(x, w, bias) + something reading ``y``; ``bias_nodes`` compute ``bias``."""
    nodes = [*bias_nodes, h.make_node("Conv", ["x", "w", "bias"], ["y"], pads=[1, 1, 1, 1])]
    return _model(nodes, [("x", T.FLOAT, [None, 2, 5, 5])], ["y", *extra_outputs], {"w": _randn(3, 2, 3, 3)},
                  opset)


def _const(name, value):
    return h.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def _zero_bias_glue(fill=0.0):
    return [h.make_node("Shape", ["w"], ["s"], start=0, end=1), _const("one", np.array([1], np.int64)),
            h.make_node("Expand", ["s", "one"], ["s1"]), _const("zero", np.array(fill, np.float32)),
            h.make_node("CastLike", ["zero", "x"], ["z"]), h.make_node("Expand", ["z", "s1"], ["bias"])]


@pytest.mark.parametrize("bias", ["expand", "constant_of_shape", "constant_of_shape_valued", "constant"])
def test_zero_conv_bias_forms_are_dropped(bias):
    glue = {
        "expand": _zero_bias_glue(),
        "constant_of_shape": [h.make_node("Shape", ["w"], ["s"], start=0, end=1),
                              h.make_node("ConstantOfShape", ["s"], ["bias"])],
        "constant_of_shape_valued": [h.make_node("Shape", ["w"], ["s"], start=0, end=1),
                                     h.make_node("ConstantOfShape", ["s"], ["bias"],
                                                 value=numpy_helper.from_array(np.array([-0.0], np.float32)))],
        "constant": [_const("bias", np.zeros(3, np.float32))],
    }[bias]
    model = _zero_bias_conv(glue, opset=21)
    module = _compiled(model)
    assert not any(name in module.code for name in _ZERO_BIAS_GLUE), module.code
    assert "conv_conv(x, w, pads" in module.code  # no bias argument
    x = _randn(2, 2, 5, 5)
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), run_ort(model, {"x": x})[0],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["nonzero", "input_shape", "requested"])
def test_conv_bias_that_may_not_be_zero_or_is_requested_is_kept(case):
    """A nonzero fill, or a bias shaped by the input (not known when compiled), keeps the bias; a requested
    bias is still computed (and the conv runs without it)."""
    glue = _zero_bias_glue(fill=0.5) if case == "nonzero" else _zero_bias_glue()
    if case == "input_shape":  # Shape(x)[0:1] * 3: a shape that depends on the input (right for a batch of 1)
        glue = [h.make_node("Shape", ["x"], ["s0"], start=0, end=1), _const("three", np.array([3], np.int64)),
                h.make_node("Mul", ["s0", "three"], ["s"]), *_zero_bias_glue()[1:]]
    model = _zero_bias_conv(glue, extra_outputs=("bias",) if case == "requested" else ())
    graph = load_onnx(model, trainable="float")
    module = gd.compile(graph, outputs=[graph.get_tensor(n).name for n in (["y", "bias"] if case == "requested"
                                                                              else ["y"])])
    batch = 1 if case == "input_shape" else 2
    x = _randn(batch, 2, 5, 5)
    want = run_ort(model, {"x": x})
    got = module(torch.from_numpy(x))
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.detach().numpy(), w, rtol=1e-5, atol=1e-5)
    assert "expand" in module.code  # the bias is computed...
    assert ("conv_conv(x, w, pads" in module.code) is (case == "requested")  # ...and passed to the conv, if not zero


@pytest.mark.parametrize(("op", "fill", "source"), [
    ("LSTM", 0.0, "ConstantOfShape"), ("GRU", 0.0, "ConstantOfShape"), ("LSTM", 0.5, "ConstantOfShape"),
    ("GRU", 0.25, "ConstantOfShape"), ("LSTM", 0.0, "Expand"), ("GRU", 0.0, "Expand"), ("LSTM", 0.5, "Expand")])
def test_zero_initial_states_from_shape_arithmetic_are_left_to_the_kernel(op, fill, source):
    """The exporters' initial states: shaped [layers * dirs, batch, H] from the input's shape by a ConstantOfShape
    (legacy exporter) or by Expand of a scalar initializer (dynamo exporter, imported as a constant), then sliced.
    Zeros run as the kernel's own zero state (one fused call, no per-call state computation); any other fill is
    computed and passed in. Both match ONNX Runtime at two batch sizes."""
    gates, hidden, size, seq = {"LSTM": 4, "GRU": 3}[op], 5, 6, 4
    attrs = {"direction": "bidirectional"} | ({"linear_before_reset": 1} if op == "GRU" else {})
    inits = {"w": _randn(2, gates * hidden, size), "r": _randn(2, gates * hidden, hidden),
             "b": _randn(2, 2 * gates * hidden), "four": np.array([4], dtype=np.int64),
             "hid": np.array([hidden], dtype=np.int64), "one": np.array([1], dtype=np.int64),
             "zero": np.array([0], dtype=np.int64), "two": np.array([2], dtype=np.int64)}
    nodes = [h.make_node("Shape", ["x"], ["shape"]), h.make_node("Gather", ["shape", "one"], ["batch"], axis=0),
             h.make_node("Concat", ["four", "batch", "hid"], ["state"], axis=0),
             h.make_node("ConstantOfShape", ["state"], ["zeros"],
                         value=numpy_helper.from_array(np.array([fill], dtype=np.float32)))
             if source == "ConstantOfShape" else h.make_node("Expand", ["fill", "state"], ["zeros"]),
             h.make_node("Slice", ["zeros", "zero", "two"], ["h0"]),
             h.make_node("Slice", ["zeros", "two", "four"], ["c0"]),
             h.make_node(op, ["x", "w", "r", "b", "", "h0"] + (["c0"] if op == "LSTM" else []), ["y"],
                         hidden_size=hidden, **attrs)]
    if source == "Expand":
        inits["fill"] = np.array(fill, dtype=np.float32)
    model = _model(nodes, [("x", T.FLOAT, ["seq", "batch", size])], ["y"], inits)
    graph = load_onnx(model)  # the scalar fill is a constant (a non-trainable variable), the weights trainable
    assert graph.get_operation("w").attrs["trainable"]
    assert source != "Expand" or not graph.get_operation("fill").attrs["trainable"]
    module = gd.compile(graph)
    calls = [n for n in module.graph.nodes if n.op == "call_function" and n.target is rnn.stacked]
    if fill == 0.0:
        assert len(calls) == 1 and not any(calls[0].kwargs["states"]) and "shape_program" not in module.code
    else:
        assert not calls and "shape_program" in module.code
    for batch in (3, 1):
        x = _randn(seq, batch, size)
        (expected,) = run_ort(model, {"x": x})
        with torch.no_grad():
            torch.testing.assert_close(module(torch.from_numpy(x)), torch.from_numpy(expected), atol=1e-5, rtol=1e-5)
