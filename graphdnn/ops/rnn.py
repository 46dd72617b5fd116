"""Recurrent layers: RNN, GRU, LSTM (ONNX semantics: gate layouts, directions, activation lists,
clip, sequence_lens, initial states, peepholes, ``layout``).

The common configuration (the default activations, or ``Relu`` for RNN; no clip, ``sequence_lens`` or
peepholes; GRU with ``linear_before_reset=1``; float32/float64) runs through torch's fused recurrent
kernels (``torch._VF.lstm``/``gru``/``rnn_*``, what ``nn.LSTM`` & co. call), with ONNX's gate order mapped
to torch's by index ops that autograd sees, so gradients reach the ONNX ``W``/``R``/``B`` tensors. Every
other configuration unrolls the time loop in Python over the (static) sequence length, so compiled
code is straight-line torch. Sequences shorter than the padded length (``sequence_lens``) keep their last
state and produce zeros in ``Y`` past their end; the reverse direction reverses each sequence
within its own length.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from graphdnn.ops.registry import register

# name -> (function of (x, alpha, beta), how many of activation_alpha/beta it consumes, defaults)
_ACTIVATIONS = {
    "relu": (lambda x, a, b: torch.relu(x), False, (None, None)),
    "tanh": (lambda x, a, b: torch.tanh(x), False, (None, None)),
    "sigmoid": (lambda x, a, b: torch.sigmoid(x), False, (None, None)),
    "affine": (lambda x, a, b: a * x + b, True, (1.0, 0.0)),
    "leakyrelu": (lambda x, a, b: F.leaky_relu(x, a), True, (0.01, None)),
    "thresholdedrelu": (lambda x, a, b: torch.where(x > a, x, torch.zeros_like(x)), True, (1.0, None)),
    "scaledtanh": (lambda x, a, b: a * torch.tanh(b * x), True, (1.0, 1.0)),
    "hardsigmoid": (lambda x, a, b: torch.clamp(a * x + b, 0.0, 1.0), True, (0.2, 0.5)),
    "elu": (lambda x, a, b: F.elu(x, a), True, (1.0, None)),
    "softsign": (lambda x, a, b: x / (1 + torch.abs(x)), False, (None, None)),
    "softplus": (lambda x, a, b: F.softplus(x), False, (None, None)),
}


def _activations(names, alphas, betas, defaults: list[str], num_directions: int):
    names = list(names) if names else defaults * num_directions
    alphas, betas = list(alphas or []), list(betas or [])
    fns = []
    for name in names:
        fn, takes, (da, db) = _ACTIVATIONS[name.lower()]
        a = alphas.pop(0) if takes and da is not None and alphas else da
        b = betas.pop(0) if takes and db is not None and betas else db
        fns.append(lambda x, fn=fn, a=a, b=b: fn(x, a, b))
    per = len(names) // num_directions
    return [fns[d * per : (d + 1) * per] for d in range(num_directions)]


def _reverse_within(x: torch.Tensor, lens: torch.Tensor | None) -> torch.Tensor:
    """Reverse [seq, batch, ...] along time, each batch entry within its own length."""
    if lens is None:
        return torch.flip(x, dims=[0])
    steps = x.shape[0]
    t = torch.arange(steps, device=x.device).reshape(steps, 1)
    lens = lens.to(torch.int64).reshape(1, -1)
    src = torch.where(t < lens, lens - 1 - t, t)
    src = src.reshape(src.shape + (1,) * (x.dim() - 2)).expand(x.shape)
    return torch.gather(x, 0, src)


def _run(step, x, states, lens, reverse: bool):
    """Unroll ``step(x_t, states) -> states`` (states[0] is the hidden state) over [seq, batch, I]."""
    if reverse:
        x = _reverse_within(x, lens)
    outputs = []
    for t in range(x.shape[0]):
        new = step(x[t], states)
        if lens is not None:
            valid = (t < lens.to(torch.int64)).reshape(-1, 1)
            new = tuple(torch.where(valid, n, s) for n, s in zip(new, states))
            outputs.append(torch.where(valid, new[0], torch.zeros_like(new[0])))
        else:
            outputs.append(new[0])
        states = new
    y = torch.stack(outputs) if outputs else x.new_zeros((0,) + tuple(states[0].shape))
    if reverse:
        y = _reverse_within(y, lens)
    return y, states


# ONNX gate blocks in torch's order: LSTM i,o,f,c -> i,f,g(c),o; GRU z,r,h -> r,z,n; RNN has one gate
_TORCH_GATES = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2], "RNN": None}
_FUSED_DTYPES = (torch.float32, torch.float64)


def _fusable(x, tensors, *, activations, defaults, activation_alpha, activation_beta, clip, lens) -> bool:
    """Whether torch's fused kernel computes exactly this op: the given activations (per direction,
    case-insensitive), no clip, no ``sequence_lens``, float32/float64 tensors of one dtype."""
    if clip is not None or lens is not None or activation_alpha or activation_beta:
        return False
    if activations:
        names = [str(a).lower() for a in activations]
        if len(names) % len(defaults) or names != defaults * (len(names) // len(defaults)):
            return False
    if x.dtype not in _FUSED_DTYPES or 0 in x.shape or x.dim() != 3:
        return False
    return all(t is None or (t.dtype == x.dtype and t.device == x.device) for t in tensors)


@functools.lru_cache(maxsize=64)
def _gate_rows(order: tuple[int, ...], hidden: int, halves: int, device: torch.device) -> torch.Tensor:
    """Row indices taking ``halves`` blocks of gates (W's and R's bias halves of B) to torch's gate order."""
    gates = len(order)
    rows = [h * gates * hidden + k * hidden + i for h in range(halves) for k in order for i in range(hidden)]
    return torch.tensor(rows, dtype=torch.int64, device=device)


def _fused(kind, x, w, r, b, initial, *, hidden, num_dir, reverse, mode=""):
    """``(Y [seq, dirs, batch, H], final states [dirs, batch, H]...)`` from torch's fused kernel for
    layout-0 ``x`` [seq, batch, I]."""
    order = _TORCH_GATES[kind]
    gates = len(order) if order else 1

    if order is None:
        wi, wh = w, r
    else:  # one row gather per tensor (autograd routes the gradients back to W, R, B in ONNX's order)
        rows = _gate_rows(tuple(order), hidden, 1, w.device)
        wi, wh = torch.index_select(w, 1, rows), torch.index_select(r, 1, rows)
    if b is not None:
        b = b if order is None else torch.index_select(b, 1, _gate_rows(tuple(order), hidden, 2, b.device))
        bi, bh = b[:, : gates * hidden], b[:, gates * hidden :]
    params = []
    for d in range(num_dir):
        params += [wi[d], wh[d]] + ([bi[d], bh[d]] if b is not None else [])
    seq, batch = x.shape[0], x.shape[1]
    hx = [s.contiguous() if s is not None else x.new_zeros(num_dir, batch, hidden) for s in initial]
    if reverse:
        x = torch.flip(x, dims=[0])
    args = (params, b is not None, 1, 0.0, False, num_dir == 2, False)
    if kind == "LSTM":
        y, *finals = torch._VF.lstm(x, (hx[0], hx[1]), *args)
    elif kind == "GRU":
        y, *finals = torch._VF.gru(x, hx[0], *args)
    else:
        y, *finals = (torch._VF.rnn_relu if mode == "relu" else torch._VF.rnn_tanh)(x, hx[0], *args)
    if reverse:
        y = torch.flip(y, dims=[0])
    return y.reshape(seq, batch, num_dir, hidden).transpose(1, 2), finals


def _recurrent(kind, x, w, r, b, lens, initial, *, hidden_size, direction, layout, make_step, gates, extra=(),
               fusable=False, mode=""):
    if layout:
        x = x.transpose(0, 1)
        initial = [s.transpose(0, 1) if s is not None else None for s in initial]
    num_dir = 2 if direction == "bidirectional" else 1
    batch = x.shape[1]
    hidden = hidden_size or r.shape[-1]
    if fusable and all(e is None for e in extra):
        y, finals_t = _fused(kind, x, w, r, b, initial, hidden=hidden, num_dir=num_dir,
                             reverse=direction == "reverse", mode=mode)
        if layout:
            y = y.permute(2, 0, 1, 3)
            finals_t = [f.transpose(0, 1) for f in finals_t]
        return (y, *finals_t)
    ys, finals = [], []
    for d in range(num_dir):
        bias = b[d] if b is not None else torch.zeros(2 * gates * hidden, dtype=x.dtype, device=x.device)
        states = tuple(
            s[d] if s is not None else torch.zeros(batch, hidden, dtype=x.dtype, device=x.device) for s in initial
        )
        extras = [e[d] if e is not None else None for e in extra]
        step = make_step(d, w[d], r[d], bias[: gates * hidden], bias[gates * hidden :], *extras)
        reverse = direction == "reverse" or (direction == "bidirectional" and d == 1)
        y, states = _run(step, x, states, lens, reverse)
        ys.append(y)
        finals.append(states)
    y = torch.stack(ys, dim=1)  # [seq, dirs, batch, H]
    finals_t = [torch.stack([f[i] for f in finals]) for i in range(len(finals[0]))]
    if layout:
        y = y.permute(2, 0, 1, 3)
        finals_t = [f.transpose(0, 1) for f in finals_t]
    return (y, *finals_t)


def _clip(t: torch.Tensor, clip: float | None) -> torch.Tensor:
    return torch.clamp(t, -clip, clip) if clip is not None else t


@register("RNN", since=1, num_outputs=None)
def rnn(
    x, w, r, b=None, sequence_lens=None, initial_h=None, *,
    activation_alpha=None, activation_beta=None, activations=None, clip=None,
    direction: str = "forward", hidden_size: int | None = None, layout: int = 0, _outputs: int = 1,
):
    num_dir = 2 if direction == "bidirectional" else 1
    acts = _activations(activations, activation_alpha, activation_beta, ["Tanh"], num_dir)

    def make_step(d, wd, rd, wb, rb):
        f = acts[d][0]

        def step(xt, states):
            return (f(_clip(xt @ wd.t() + states[0] @ rd.t() + wb + rb, clip)),)

        return step

    mode = (activations[0] if activations else "tanh").lower()
    fusable = mode in ("tanh", "relu") and _fusable(
        x, (w, r, b, initial_h), activations=activations, defaults=[mode], activation_alpha=activation_alpha,
        activation_beta=activation_beta, clip=clip, lens=sequence_lens)
    outs = _recurrent("RNN", x, w, r, b, sequence_lens, [initial_h], hidden_size=hidden_size,
                      direction=direction, layout=layout, make_step=make_step, gates=1, fusable=fusable, mode=mode)
    return outs[:_outputs]


@register("GRU", since=1, num_outputs=None)
def gru(
    x, w, r, b=None, sequence_lens=None, initial_h=None, *,
    activation_alpha=None, activation_beta=None, activations=None, clip=None,
    direction: str = "forward", hidden_size: int | None = None, layout: int = 0,
    linear_before_reset: int = 0, _outputs: int = 1,
):
    """Gate order z, r, h (update, reset, hidden)."""
    num_dir = 2 if direction == "bidirectional" else 1
    acts = _activations(activations, activation_alpha, activation_beta, ["Sigmoid", "Tanh"], num_dir)

    def make_step(d, wd, rd, wb, rb):
        f, g = acts[d]
        wz, wr, wh = torch.chunk(wd, 3)
        rz, rr, rh = torch.chunk(rd, 3)
        wbz, wbr, wbh = torch.chunk(wb, 3)
        rbz, rbr, rbh = torch.chunk(rb, 3)

        def step(xt, states):
            h = states[0]
            z = f(_clip(xt @ wz.t() + h @ rz.t() + wbz + rbz, clip))
            rt = f(_clip(xt @ wr.t() + h @ rr.t() + wbr + rbr, clip))
            if linear_before_reset:
                ht = g(_clip(xt @ wh.t() + rt * (h @ rh.t() + rbh) + wbh, clip))
            else:
                ht = g(_clip(xt @ wh.t() + (rt * h) @ rh.t() + rbh + wbh, clip))
            return ((1 - z) * ht + z * h,)

        return step

    fusable = bool(linear_before_reset) and _fusable(
        x, (w, r, b, initial_h), activations=activations, defaults=["sigmoid", "tanh"],
        activation_alpha=activation_alpha, activation_beta=activation_beta, clip=clip, lens=sequence_lens)
    outs = _recurrent("GRU", x, w, r, b, sequence_lens, [initial_h], hidden_size=hidden_size,
                      direction=direction, layout=layout, make_step=make_step, gates=3, fusable=fusable)
    return outs[:_outputs]


@register("LSTM", since=1, num_outputs=None)
def lstm(
    x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None, *,
    activation_alpha=None, activation_beta=None, activations=None, clip=None,
    direction: str = "forward", hidden_size: int | None = None, input_forget: int = 0, layout: int = 0,
    _outputs: int = 1,
):
    """Gate order i, o, f, c; peepholes P = [Pi, Po, Pf]. Outputs Y, Y_h, Y_c."""
    num_dir = 2 if direction == "bidirectional" else 1
    acts = _activations(activations, activation_alpha, activation_beta, ["Sigmoid", "Tanh", "Tanh"], num_dir)

    def make_step(d, wd, rd, wb, rb, pd):
        f, g, h_act = acts[d]
        bias = wb + rb
        if pd is not None:
            pi, po, pf = torch.chunk(pd, 3)
        else:
            pi = po = pf = None

        def step(xt, states):
            h, c = states
            gates = xt @ wd.t() + h @ rd.t() + bias
            gi, go, gf, gc = torch.chunk(gates, 4, dim=-1)
            if pi is not None:
                gi, gf = gi + pi * c, gf + pf * c
            i = f(_clip(gi, clip))
            fg = 1 - i if input_forget else f(_clip(gf, clip))
            c_new = fg * c + i * g(_clip(gc, clip))
            if po is not None:
                go = go + po * c_new
            o = f(_clip(go, clip))
            return (o * h_act(c_new), c_new)

        return step

    fusable = not input_forget and p is None and _fusable(
        x, (w, r, b, initial_h, initial_c), activations=activations, defaults=["sigmoid", "tanh", "tanh"],
        activation_alpha=activation_alpha, activation_beta=activation_beta, clip=clip, lens=sequence_lens)
    outs = _recurrent("LSTM", x, w, r, b, sequence_lens, [initial_h, initial_c], hidden_size=hidden_size,
                      direction=direction, layout=layout, make_step=make_step, gates=4, extra=(p,),
                      fusable=fusable)
    return outs[:_outputs]
