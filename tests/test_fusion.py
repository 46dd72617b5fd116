"""Compile-time fusion and fused recurrent kernels: each fused form fires (the generated code or the
profiler shows it) and computes what ONNX Runtime and the unfused ops compute, gradients included."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from graphdnn.converters.onnx_import import load_onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import graphdnn as gd
from graphdnn import initializers as init
from graphdnn import layers, nn
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


def _ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


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
    assert "softmax_cross_entropy_mean(" in model.code and "softmax_cross_entropy_loss(" not in model.code
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
    assert "softmax_cross_entropy_loss(" in both.code and "softmax_cross_entropy_mean(" not in both.code
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
    assert "softmax_cross_entropy_mean(" in module.code
    got = module(torch.from_numpy(scores), torch.from_numpy(labels))
    (expected,) = _ort(model, {"scores": scores, "labels": labels})
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
    assert "softmax_cross_entropy_mean(" not in module.code
    (expected,) = _ort(model, {"scores": scores, "labels": labels})
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
    (expected,) = _ort(model, {"x": x})
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
    (expected,) = _ort(model, {"a": a})
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
    np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), _ort(model, {"x": x})[0], rtol=1e-5,
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
        y, *states = _ort(seq_first, swapped)
        expected = [y.transpose(2, 0, 1, 3), *(st.swapaxes(0, 1) for st in states)]
    else:
        expected = _ort(model, inputs)
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


def test_shape_arithmetic_runs_once_per_input_shape_and_matches_onnxruntime():
    model = _shape_model()
    module = _compiled(model)
    assert module.code.count("run_shape_program(") == 2
    assert "tensor_shape(" not in module.code and "constant_of_shape(" not in module.code
    for n in (2, 5, 2, 1):
        x = _randn(n, 4, 3)
        got = module(torch.from_numpy(x))
        np.testing.assert_allclose(got.numpy(), _ort(model, {"x": x})[0], rtol=1e-6, atol=1e-6)
    programs = [v for k, v in vars(module).items() if k.startswith("_attr")]
    assert programs and all(len(p.cache) == 3 for p in programs)  # batch 2, 5 and 1: computed three times


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
    assert "run_shape_program(" in module.code and "tensor_shape(" not in module.code
    x = _randn(2, 4, 3)
    np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), _ort(model, {"x": x})[0])
    with torch.no_grad():
        module.variable("k").fill_(2)  # an in-place change is seen: [2 * n, -1]
    assert tuple(module(torch.from_numpy(x)).shape) == (4, 6)
