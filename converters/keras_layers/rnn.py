"""Recurrent layers as ONNX LSTM/GRU/RNN ops: LSTM, GRU (``reset_after`` both ways), SimpleRNN with
``return_sequences``/``return_state``/``go_backwards``; Bidirectional and TimeDistributed wrappers.

The graph variables are Keras's (``lstm/lstm_cell/kernel`` ``(in, 4u)`` in Keras's gate order i, f, c, o);
the ONNX ``W``/``R``/``B`` views (gate order i, o, f, c, transposed) are ops on them, so training updates
the Keras-named variables. Masked inputs (``mask_zero``, ``Masking``) are refused, not approximated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from graphdnn.converters.keras_layers import LAYERS, KerasLayer, translates

from graphdnn.graph import Tensor, ValueInfo

_ACT = {"tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu", "softsign": "Softsign", "softplus": "Softplus"}
_KIND = {"LSTM": ("LSTM", 4, [0, 3, 1, 2]), "GRU": ("GRU", 3, [0, 1, 2]), "SimpleRNN": ("RNN", 1, [0])}
_PER_STEP = {"Dense", "Activation", "Dropout", "ReLU", "LeakyReLU", "ELU", "Softmax", "Identity"}
_CELL = {"LSTM": "lstm_cell", "GRU": "gru_cell", "SimpleRNN": "simple_rnn_cell"}


def _act(layer: KerasLayer, key: str, default: str) -> str:
    name = layer.cfg.get(key, default)
    name = name if isinstance(name, str) else (name or {}).get("config", {}).get("name", default)
    if str(name).lower() not in _ACT:
        raise layer.unsupported(f"{key} {name!r} in a recurrent layer (imported: {', '.join(sorted(_ACT))})")
    return _ACT[str(name).lower()]


def _gates(layer: KerasLayer, t: Tensor, gates: int, units: int, order: list[int], name: str) -> Tensor:
    """Rows of ``t`` (gate blocks of ``units``) reordered from Keras's gate order to ONNX's."""
    if order == list(range(gates)):
        return t
    idx = np.concatenate([np.arange(g * units, (g + 1) * units) for g in order]).astype(np.int64)
    return layer.op("Gather", [t, layer.const(idx, f"{name}_gate_order", "int64")], {"axis": 0}, name)


def recurrent(layer: KerasLayer, x: Tensor, reverse: bool) -> list[Tensor]:
    """Run the LSTM/GRU/SimpleRNN ``layer`` over ``x`` (N, T, F), backwards when ``reverse``: returns
    [sequence (N, T, u) in input time order, final h, (final c)]."""
    cfg = layer.cfg
    if cfg.get("stateful"):
        raise layer.unsupported("a stateful recurrent layer")
    op_type, gates, order = _KIND[layer.cls]
    units, features = int(cfg["units"]), int(x.shape[-1])
    cell = _CELL[layer.cls]
    kernel = layer.var(f"{cell}/kernel", (features, gates * units))
    recurrent_kernel = layer.var(f"{cell}/recurrent_kernel", (units, gates * units))
    w = _gates(layer, layer.op("Transpose", [kernel], {"perm": [1, 0]}, "W_t"), gates, units, order, "W")
    r = _gates(layer, layer.op("Transpose", [recurrent_kernel], {"perm": [1, 0]}, "R_t"), gates, units, order, "R")
    axes0 = layer.const([0], "axes0", "int64")
    inputs: list[Any] = [layer.op("Transpose", [x], {"perm": [1, 0, 2]}, "time_major"),
                         layer.op("Unsqueeze", [w, axes0], name="W"), layer.op("Unsqueeze", [r, axes0], name="R")]
    attrs: dict[str, Any] = {"hidden_size": units, "direction": "reverse" if reverse else "forward"}
    reset_after = op_type == "GRU" and cfg.get("reset_after", True)
    if cfg.get("use_bias", True):
        if reset_after:
            bias = layer.var(f"{cell}/bias", (2, gates * units))
            parts = [_gates(layer, layer.op("Gather", [bias, layer.const(i, f"row{i}", "int64")], {"axis": 0}),
                            gates, units, order, f"B{i}") for i in (0, 1)]
        else:
            bias = layer.var(f"{cell}/bias", (gates * units,))
            zeros = layer.fconst(np.zeros(gates * units, np.float32), "recurrent_bias", x)
            parts = [_gates(layer, bias, gates, units, order, "Wb"), zeros]
        inputs.append(layer.op("Unsqueeze", [layer.op("Concat", parts, {"axis": 0}), axes0], name="B"))
    act, rec_act = _act(layer, "activation", "tanh"), _act(layer, "recurrent_activation", "sigmoid")
    attrs["activations"] = {"LSTM": [rec_act, act, act], "GRU": [rec_act, act], "RNN": [act]}[op_type]
    if op_type == "GRU":
        attrs["linear_before_reset"] = int(bool(reset_after))
    outs = layer.op(op_type, inputs, attrs, layer.cls, outputs=3 if op_type == "LSTM" else 2)
    axes1 = layer.const([1], "axes1", "int64")
    seq = layer.op("Transpose", [layer.op("Squeeze", [outs[0], axes1])], {"perm": [1, 0, 2]}, "batch_major")
    return [seq] + [layer.op("Squeeze", [s, axes0], name="final_state") for s in outs[1:]]


def _flip_time(layer: KerasLayer, y: Tensor) -> Tensor:
    return layer.op("Slice", [y, layer.const([-1], "starts", "int64"),
                              layer.const([np.iinfo(np.int64).min], "ends", "int64"),
                              layer.const([1], "axes", "int64"), layer.const([-1], "steps", "int64")],
                    name="reverse_time")


def _last(layer: KerasLayer, seq: Tensor) -> Tensor:
    """Keras's output without ``return_sequences``: the last step processed."""
    return layer.op("Gather", [seq, layer.const(-1, "last", "int64")], {"axis": 1}, "last_output")


@translates("LSTM", "GRU", "SimpleRNN")
def rnn_layer(layer: KerasLayer, xs: list[Tensor]) -> list[Tensor]:
    backwards = bool(layer.cfg.get("go_backwards"))
    seq, *states = recurrent(layer, xs[0], backwards)
    if backwards:  # Keras returns the steps in processing order
        seq = _flip_time(layer, seq)
    y = seq if layer.cfg.get("return_sequences") else _last(layer, seq)
    return [y, *states] if layer.cfg.get("return_state") else [y]


@translates("Bidirectional")
def bidirectional(layer: KerasLayer, xs: list[Tensor]) -> list[Tensor]:
    spec = layer.cfg["layer"]
    if spec.get("class_name") not in _KIND:
        raise layer.unsupported(f"Bidirectional around a {spec.get('class_name')}")
    back_spec = layer.cfg.get("backward_layer")
    base = str(spec["config"]["name"])
    base = base[len("forward_"):] if base.startswith("forward_") else base  # the config holds the forward copy
    fwd = layer.sub(spec, "forward_" + base)
    bwd = layer.sub(back_spec) if back_spec else layer.sub(spec, "backward_" + base)
    f_seq, *f_states = recurrent(fwd, xs[0], bool(fwd.cfg.get("go_backwards")))
    b_seq, *b_states = recurrent(bwd, xs[0], True)  # Keras runs the backward copy with go_backwards
    if spec["config"].get("return_sequences"):
        f_y, b_y = f_seq, b_seq
    else:
        f_y = _last(layer, f_seq)
        b_y = layer.op("Gather", [b_seq, layer.const(0, "first", "int64")], {"axis": 1}, "last_output")
    mode = layer.cfg.get("merge_mode", "concat")
    if mode == "concat":
        ys = [layer.op("Concat", [f_y, b_y], {"axis": -1})]
    elif mode in ("sum", "mul", "ave"):
        y = layer.op("Mul" if mode == "mul" else "Add", [f_y, b_y])
        ys = [y if mode != "ave" else layer.op("Mul", [y, layer.fconst(0.5, "half", y)])]
    elif mode is None:
        ys = [f_y, b_y]
    else:
        raise layer.unsupported(f"merge_mode {mode!r}")
    return ys + f_states + b_states if spec["config"].get("return_state") else ys


@translates("TimeDistributed")
def time_distributed(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    x = xs[0]
    inner = layer.sub(layer.cfg["layer"])
    if not any(k.startswith(inner.path + "/") for k in layer.weights):  # Keras 2: td/kernel, no inner name
        inner.path = inner.scope = layer.path
    if inner.cls not in LAYERS or x.shape[1] is None or any(d is None for d in x.shape[2:]):
        raise layer.unsupported(f"TimeDistributed({inner.cls}) over {list(x.shape)}")
    if inner.cls in _PER_STEP:  # acts on the last axis: the same on (N, T, ...) as on each step
        y = LAYERS[inner.cls](inner, [x])
        return y[0] if isinstance(y, list) else y
    steps = int(x.shape[1])
    flat = layer.op("Reshape", [x, layer.const([-1, *[int(d) for d in x.shape[2:]]], "merge_time", "int64")])
    y = LAYERS[inner.cls](inner, [flat])
    y = y[0] if isinstance(y, list) else y
    batch = layer.op("Slice", [layer.op("Shape", [x]), layer.const([0], "start", "int64"),
                               layer.const([1], "end", "int64")], name="batch")
    shape = layer.op("Concat", [batch, layer.const([steps, *[int(d) for d in y.shape[1:]]], "step_shape", "int64")],
                     {"axis": 0}, "split_time_shape")
    out = [None, steps, *[int(d) for d in y.shape[1:]]]
    return layer.g.add_op("Reshape", [y, shape], None, None, default_name="split_time",
                          outputs=[ValueInfo(tuple(out), y.dtype)]).out()
