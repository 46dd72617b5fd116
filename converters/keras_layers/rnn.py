"""Recurrent layers as ONNX LSTM/GRU/RNN ops: LSTM, GRU (``reset_after`` both ways), SimpleRNN with
``return_sequences``/``return_state``/``go_backwards``; Bidirectional and TimeDistributed wrappers.

The graph variables are Keras's (``lstm/lstm_cell/kernel`` ``(in, 4u)`` in Keras's gate order i, f, c, o);
the ONNX ``W``/``R``/``B`` views (gate order i, o, f, c, transposed) are ops on them, so training updates
the Keras-named variables. ``initial_state`` feeds the ONNX op's initial states. A Keras mask
(``mask_zero``, ``Masking``) makes the layer an ONNX ``Scan`` whose body is one step of the same ONNX op,
as Keras computes it: at a masked step the states keep their previous values and the output repeats the
previous output (zeros before the first unmasked step; zeros at every masked step inside a
``Bidirectional`` with ``return_sequences``, Keras's ``zero_output_for_mask``). ``stateful`` is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from graphdnn.converters.keras_layers import LAYERS, KerasLayer, translates

from graphdnn.graph import Graph, Tensor, ValueInfo
from graphdnn.subgraphs import CAPTURES_KEY, set_signature

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


def recurrent(layer: KerasLayer, x: Tensor, reverse: bool, initial: list[Tensor] | None = None,
              mask: Tensor | None = None, zero_masked_output: bool = False) -> list[Tensor]:
    """Run the LSTM/GRU/SimpleRNN ``layer`` over ``x`` (N, T, F), backwards when ``reverse``, from the
    ``initial`` states (zeros by default) and under the Keras ``mask`` (N, T) if any: returns
    [sequence (N, T, u) in input time order, final h, (final c)]."""
    cfg = layer.cfg
    if cfg.get("stateful"):
        raise layer.unsupported("a stateful recurrent layer (stateful=True keeps states across batches; re-save "
                                "the model with stateful=False and pass initial_state)")
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
    n_states = 2 if op_type == "LSTM" else 1
    if initial is not None and len(initial) != n_states:
        raise layer.unsupported(f"an initial_state of {len(initial)} tensor(s) ({layer.cls} has {n_states} states)")
    if mask is not None:
        return _masked(layer, x, inputs[1:], attrs, op_type, units, initial, mask, reverse, zero_masked_output)
    if initial is not None:
        inputs += [None] * (5 - len(inputs)) + [layer.op("Unsqueeze", [s, axes0], name="initial_state")
                                                for s in initial]
    outs = layer.op(op_type, inputs, attrs, layer.cls, outputs=3 if op_type == "LSTM" else 2)
    axes1 = layer.const([1], "axes1", "int64")
    seq = layer.op("Transpose", [layer.op("Squeeze", [outs[0], axes1])], {"perm": [1, 0, 2]}, "batch_major")
    return [seq] + [layer.op("Squeeze", [s, axes0], name="final_state") for s in outs[1:]]


def _masked(layer: KerasLayer, x: Tensor, weights: list[Tensor], attrs: dict[str, Any], op_type: str, units: int,
            initial: list[Tensor] | None, mask: Tensor, reverse: bool, zero_masked_output: bool) -> list[Tensor]:
    """The masked recurrence as an ONNX ``Scan`` over the batch-major ``x`` and ``mask``: each step runs the
    ONNX op on one time step, then keeps the previous states (and output) where the step is masked."""
    g = layer.g
    n_states = 2 if op_type == "LSTM" else 1
    if mask.dtype != "bool":  # a mask given as numbers: nonzero keeps the step
        mask = layer.op("Cast", [mask], {"to": 9}, "mask_as_bool")
    batch = layer.op("Slice", [layer.op("Shape", [x]), layer.const([0], "start", "int64"),
                               layer.const([1], "end", "int64")], name="batch")
    state_shape = layer.op("Concat", [batch, layer.const([units], "units", "int64")], {"axis": 0}, "state_shape")
    info = ValueInfo((None, units), x.dtype or "float32")

    def zeros(name: str) -> Tensor:
        return g.add_op("ConstantOfShape", [state_shape], None, None, default_name=name, outputs=[info]).out()

    states = list(initial) if initial is not None else [zeros("initial_state") for _ in range(n_states)]
    base = g.current_scope() + layer.path[len(layer.scope):] + "/step"
    body = Graph(base)
    body.opset.update(g.opset)
    step = KerasLayer(body, layer.cls, layer.cfg, layer.weights, layer.path, layer.scope)
    with body.name_scope(base):
        prev = [body.placeholder(f"state{i}", (None, units), info.dtype) for i in range(n_states)]
        prev_out = body.placeholder("output", (None, units), info.dtype)
        x_t = body.placeholder("x_t", (None, int(x.shape[-1])), x.dtype or "float32")
        m_t = body.placeholder("mask_t", (None,), "bool")
        captured = [body.placeholder(f"captured_{w.op.name.rsplit('/', 1)[-1]}", w.shape, w.dtype) for w in weights]
        axes0 = step.const([0], "axes0", "int64")
        ins: list[Any] = [step.op("Unsqueeze", [x_t, axes0], name="X"), *captured]
        ins += [None] * (5 - len(ins)) + [step.op("Unsqueeze", [s, axes0], name="initial_state") for s in prev]
        outs = step.op(op_type, ins, dict(attrs, direction="forward"), layer.cls, outputs=1 + n_states)
        new = [step.op("Squeeze", [s, axes0], name="new_state") for s in outs[1:]]
        keep = step.op("Unsqueeze", [m_t, step.const([1], "axes1", "int64")], name="keep")
        kept = [step.op("Where", [keep, n, p], name="state") for n, p in zip(new, prev)]
        fallback = step.fconst(0.0, "zero", new[0]) if zero_masked_output else prev_out
        out = step.op("Where", [keep, new[0], fallback], name="output")
        scanned = step.op("Identity", [out], name="scan_output")
    set_signature(body, [*(t.name for t in prev), prev_out.name, x_t.name, m_t.name], [t.name for t in captured],
                  [*(t.name for t in kept), out.name, scanned.name])
    direction = [int(reverse)]
    values = [info] * (n_states + 1) + [ValueInfo((None, x.shape[1], units), info.dtype)]
    scan = g.add_op("Scan", [*states, zeros("initial_output"), x, mask, *weights],
                    {"body": body, "num_scan_inputs": 2, "scan_input_axes": [1, 1], "scan_input_directions":
                     direction * 2, "scan_output_axes": [1], "scan_output_directions": direction},
                    None, default_name=f"masked_{layer.cls}", outputs=values)
    scan.op.meta[CAPTURES_KEY] = len(weights)
    return [scan.out(n_states + 1)] + [scan.out(i) for i in range(n_states)]


def _flip_time(layer: KerasLayer, y: Tensor) -> Tensor:
    return layer.op("Slice", [y, layer.const([-1], "starts", "int64"),
                              layer.const([np.iinfo(np.int64).min], "ends", "int64"),
                              layer.const([1], "axes", "int64"), layer.const([-1], "steps", "int64")],
                    name="reverse_time")


def _last(layer: KerasLayer, seq: Tensor) -> Tensor:
    """Keras's output without ``return_sequences``: the last step processed."""
    return layer.op("Gather", [seq, layer.const(-1, "last", "int64")], {"axis": 1}, "last_output")


def _initial_state(layer: KerasLayer, xs: list[Tensor]) -> list[Tensor] | None:
    """The ``initial_state`` tensors of a call: Keras 3's keyword, or the extra inputs Keras 2 files list."""
    given = layer.kwargs.get("initial_state")
    if isinstance(given, Tensor):
        return [given]
    if isinstance(given, list) and given:
        if not all(isinstance(t, Tensor) for t in given):
            raise layer.unsupported("an initial_state that is not layer outputs")
        return list(given)
    return list(xs[1:]) or None


@translates("LSTM", "GRU", "SimpleRNN")
def rnn_layer(layer: KerasLayer, xs: list[Tensor]) -> list[Tensor]:
    backwards = bool(layer.cfg.get("go_backwards"))
    seq, *states = recurrent(layer, xs[0], backwards, _initial_state(layer, xs), layer.mask(0))
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
    initial = _initial_state(layer, xs)
    if initial is not None and len(initial) % 2:
        raise layer.unsupported(f"a Bidirectional initial_state of {len(initial)} tensors (forward then backward "
                                "states expected)")
    half = len(initial) // 2 if initial else 0
    sequences = bool(spec["config"].get("return_sequences"))  # Keras zeroes masked outputs of the sequences
    f_seq, *f_states = recurrent(fwd, xs[0], bool(fwd.cfg.get("go_backwards")), initial[:half] if initial else None,
                                 layer.mask(0), sequences)
    b_seq, *b_states = recurrent(bwd, xs[0], True, initial[half:] if initial else None, layer.mask(0),
                                 sequences)  # Keras runs the backward copy with go_backwards
    if sequences:
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
