"""Recurrent layers: RNN, GRU, LSTM (ONNX semantics: gate layouts, directions, activation lists,
clip, sequence_lens, initial states, peepholes, ``layout``).

The common configuration (the default activations, or ``Relu`` for RNN; no clip, ``sequence_lens`` or
peepholes; GRU with ``linear_before_reset=1``; float32/float64) runs through torch's fused recurrent
kernels (``torch.lstm``/``gru``/``rnn_*``, what ``nn.LSTM`` & co. call), with ONNX's gate order mapped
to torch's by one row gather per tensor that autograd sees, so gradients reach the ONNX ``W``/``R``/``B``
tensors; calls that need no gradient reuse the mapped weights while ``W``/``R``/``B`` are unchanged.
LSTM and GRU take a graphdnn attribute ``gate_order``: absent or ``"onnx"``, ONNX's semantics; ``"torch"``,
the gate blocks of the rows of ``W``, ``R`` and of each half of ``B`` are in torch's order (LSTM i, f, g, o;
GRU r, z, n), which the fused kernels read as they are (``graphdnn.gate_order`` converts graphs to it).
``stacked`` runs several such layers, joined as the exporters join the layers of a multi-layer module, as
one multi-layer kernel call (``graphdnn.fusion`` plans it). Every
other configuration unrolls the time loop in Python over the (static) sequence length, so compiled
code is straight-line torch. Sequences shorter than the padded length (``sequence_lens``) keep their last
state and produce zeros in ``Y`` past their end; the reverse direction reverses each sequence
within its own length.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F

from graphdnn.gate_order import TORCH_GATES, gate_rows
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


_TORCH_GATES = {**TORCH_GATES, "RNN": None}  # RNN has one gate
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
    dtype, device = x.dtype, x.device
    if dtype not in _FUSED_DTYPES or x.dim() != 3 or 0 in x.shape:
        return False
    for t in tensors:
        if t is not None and (t.dtype != dtype or t.device != device):
            return False
    return True


class _Gates(torch.autograd.Function):
    """Layers' ``W``, ``R`` (and ``B``) to the fused kernel's weight list, per layer and direction ``d``:
    ``W[d]``, ``R[d]`` (and ``B[d]``'s halves), rows in torch's gate order (one row gather each). One autograd
    node for all of them, whose gradients are gathers by the inverse permutation (``index_select``'s own
    gradient is a zero fill and a scatter-add). ``tensors``: ``W, R[, B]`` per layer (``B`` with
    ``bias_rows``)."""

    @staticmethod
    def forward(ctx: Any, rows: tuple, bias_rows: tuple | None, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.rows, ctx.bias_rows = rows, bias_rows
        ctx.dirs, ctx.shapes = tensors[0].shape[0], [t.shape for t in tensors]
        per = 2 if bias_rows is None else 3
        out = []
        for k in range(0, len(tensors), per):
            w, r = tensors[k], tensors[k + 1]
            for d in range(ctx.dirs):
                out += [w[d].index_select(0, rows[0]), r[d].index_select(0, rows[0])]
                if bias_rows is not None:
                    out += tensors[k + 2][d].index_select(0, bias_rows[0]).chunk(2)
        return tuple(out)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple:
        per = 2 if ctx.bias_rows is None else 4
        if any(g is None for g in grads):  # an output that the loss does not reach
            like = next(g for g in grads if g is not None)
            fill = []
            for j, g in enumerate(grads):
                i = j % per
                shape = ctx.shapes[j // (per * ctx.dirs) * (per - per // 4) + min(i, 2)]
                fill.append(g if g is not None else like.new_zeros(shape[1:] if i < 2 else (shape[1] // 2,)))
            grads = tuple(fill)
        inverse, dirs = ctx.rows[1], ctx.dirs
        result: list[torch.Tensor | None] = [None, None]
        for k in range(0, len(grads), per * dirs):
            g = grads[k : k + per * dirs]
            if dirs == 1:  # the common case, without per-direction lists
                result += [g[0].index_select(0, inverse).unsqueeze(0), g[1].index_select(0, inverse).unsqueeze(0)]
                if per == 4:
                    result.append(torch.cat(g[2:4]).index_select(0, ctx.bias_rows[1]).unsqueeze(0))
                continue
            result += [torch.stack([g[d * per].index_select(0, inverse) for d in range(dirs)]),
                       torch.stack([g[d * per + 1].index_select(0, inverse) for d in range(dirs)])]
            if per == 4:
                result.append(torch.stack([torch.cat(g[d * per + 2 : d * per + 4]).index_select(0, ctx.bias_rows[1])
                                           for d in range(dirs)]))
        return tuple(result)


def _torch_params(kind, w, r, b, hidden, num_dir, more: tuple = (), gate_order: str = "onnx") -> list[torch.Tensor]:
    """The fused kernel's weight list (per direction: W_ih, W_hh[, b_ih, b_hh], torch's gate order) from
    ``W``/``R``/``B`` (in ``gate_order``), differentiable back to them; ``more``: further layers' ``(W, R, B)``,
    whose lists follow in the same autograd node (ONNX order) or are views of them (torch order)."""
    order = _TORCH_GATES[kind] if _gate_order(gate_order) == "onnx" else None
    layers = ((w, r, b), *more)
    if order is None:
        out = []
        for w, r, b in layers:
            parts = [w.unbind(0), r.unbind(0)]
            if b is not None:
                bi, bh = b.split(b.shape[1] // 2, dim=1)
                parts += [bi.unbind(0), bh.unbind(0)]
            out += [p[d] for d in range(num_dir) for p in parts]
        return out
    rows = gate_rows(order, hidden, 1, w.device)
    bias_rows = gate_rows(order, hidden, 2, b.device) if b is not None else None
    return list(_Gates.apply(rows, bias_rows, *(t for layer in layers for t in layer if t is not None)))


def _gate_order(gate_order: Any) -> str:
    if gate_order in (None, "onnx", "torch"):
        return gate_order or "onnx"
    from graphdnn.errors import GraphError

    raise GraphError(f"recurrent op attribute gate_order={gate_order!r}: expected 'onnx' or 'torch'")


def _onnx_order(kind: str, w, r, b, hidden: int, gate_order: Any) -> tuple:
    """``W``, ``R``, ``B`` with their gate blocks in ONNX's order (a differentiable row gather when they are in
    torch's), for the Python time loop."""
    order = _TORCH_GATES[kind]
    if _gate_order(gate_order) == "onnx" or order is None:
        return w, r, b
    inverse = gate_rows(order, hidden, 1, w.device)[1]
    w, r = w.index_select(1, inverse), r.index_select(1, inverse)
    if b is not None:
        b = b.index_select(1, gate_rows(order, hidden, 2, b.device)[1])
    return w, r, b


_PARAMS_CACHE: dict[tuple, tuple[Any, Any, Any, list[torch.Tensor]]] = {}
_PARAMS_CACHE_ENTRIES = 64


def _params(kind, w, r, b, hidden, num_dir, gate_order: str = "onnx") -> list[torch.Tensor]:
    """``_torch_params``, remembered between calls that need no gradient (inference) while ``W``, ``R``, ``B``
    are the same live tensors (weak references) at the same in-place version and storage (in torch's gate
    order, the list holds views of them)."""
    gate_order = _gate_order(gate_order)
    if torch.is_grad_enabled() and (w.requires_grad or r.requires_grad or (b is not None and b.requires_grad)):
        return _torch_params(kind, w, r, b, hidden, num_dir, gate_order=gate_order)
    if w.is_inference() or r.is_inference() or (b is not None and b.is_inference()) or \
            torch.compiler.is_compiling():  # inference tensors have no version counter
        return _torch_params(kind, w, r, b, hidden, num_dir, gate_order=gate_order)
    key = (kind, hidden, num_dir, gate_order, id(w), w._version, w.data_ptr(), id(r), r._version, r.data_ptr(),
           None if b is None else (id(b), b._version, b.data_ptr()))
    entry = _PARAMS_CACHE.get(key)
    if entry is None or entry[0]() is not w or entry[1]() is not r or (b is not None and entry[2]() is not b):
        with torch.inference_mode(False), torch.no_grad():  # usable by later calls in any mode
            params = [p.contiguous() for p in _torch_params(kind, w, r, b, hidden, num_dir, gate_order=gate_order)]
        entry = (weakref.ref(w), weakref.ref(r), None if b is None else weakref.ref(b), params)
        if len(_PARAMS_CACHE) >= _PARAMS_CACHE_ENTRIES:
            _PARAMS_CACHE.clear()
        _PARAMS_CACHE[key] = entry
    return entry[3]


def _fused(kind, x, w, r, b, initial, *, hidden_size, direction, layout, mode="", gate_order=None
           ) -> tuple[torch.Tensor, ...]:
    """The op's outputs (``Y`` [seq, dirs, batch, H] or, ``layout`` 1, [batch, seq, dirs, H]; the final states)
    from torch's fused kernel."""
    if layout:
        x = x.transpose(0, 1)
        initial = [s.transpose(0, 1) if s is not None else None for s in initial]
    num_dir = 2 if direction == "bidirectional" else 1
    hidden = hidden_size or r.shape[-1]
    params = _params(kind, w, r, b, hidden, num_dir, gate_order)
    seq, batch = x.shape[0], x.shape[1]
    hx = [s.contiguous() if s is not None else x.new_zeros(num_dir, batch, hidden) for s in initial]
    reverse = direction == "reverse"
    if reverse:
        x = torch.flip(x, dims=[0])
    args = (params, b is not None, 1, 0.0, False, num_dir == 2, False)
    if kind == "LSTM":
        y, *finals = torch.lstm(x, (hx[0], hx[1]), *args)
    elif kind == "GRU":
        y, *finals = torch.gru(x, hx[0], *args)
    else:
        y, *finals = (torch.rnn_relu if mode == "relu" else torch.rnn_tanh)(x, hx[0], *args)
    if reverse:
        y = torch.flip(y, dims=[0])
    y = y.unsqueeze(1) if num_dir == 1 else y.view(seq, batch, num_dir, hidden).transpose(1, 2)
    if layout:
        return (y.permute(2, 0, 1, 3), *(f.transpose(0, 1) for f in finals))
    return (y, *finals)


def _recurrent(kind, x, w, r, b, lens, initial, *, hidden_size, direction, layout, make_step, gates, extra=(),
               gate_order=None):
    """The op through the Python time loop (any configuration)."""
    if layout:
        x = x.transpose(0, 1)
        initial = [s.transpose(0, 1) if s is not None else None for s in initial]
    num_dir = 2 if direction == "bidirectional" else 1
    batch = x.shape[1]
    hidden = hidden_size or r.shape[-1]
    w, r, b = _onnx_order(kind, w, r, b, hidden, gate_order)
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
    mode = (activations[0] if activations else "tanh").lower()
    if mode in ("tanh", "relu") and _fusable(
            x, (w, r, b, initial_h), activations=activations, defaults=[mode], activation_alpha=activation_alpha,
            activation_beta=activation_beta, clip=clip, lens=sequence_lens):
        return _fused("RNN", x, w, r, b, [initial_h], hidden_size=hidden_size, direction=direction, layout=layout,
                      mode=mode)[:_outputs]
    num_dir = 2 if direction == "bidirectional" else 1

    def make_step(d, wd, rd, wb, rb):
        f = _activations(activations, activation_alpha, activation_beta, ["Tanh"], num_dir)[d][0]

        def step(xt, states):
            return (f(_clip(xt @ wd.t() + states[0] @ rd.t() + wb + rb, clip)),)

        return step

    outs = _recurrent("RNN", x, w, r, b, sequence_lens, [initial_h], hidden_size=hidden_size,
                      direction=direction, layout=layout, make_step=make_step, gates=1)
    return outs[:_outputs]


@register("GRU", since=1, num_outputs=None)
def gru(
    x, w, r, b=None, sequence_lens=None, initial_h=None, *,
    activation_alpha=None, activation_beta=None, activations=None, clip=None,
    direction: str = "forward", hidden_size: int | None = None, layout: int = 0,
    linear_before_reset: int = 0, gate_order: str | None = None, _outputs: int = 1,
):
    """Gate order z, r, h (update, reset, hidden); ``gate_order="torch"``: r, z, n."""
    if linear_before_reset and _fusable(
            x, (w, r, b, initial_h), activations=activations, defaults=["sigmoid", "tanh"],
            activation_alpha=activation_alpha, activation_beta=activation_beta, clip=clip, lens=sequence_lens):
        return _fused("GRU", x, w, r, b, [initial_h], hidden_size=hidden_size, direction=direction,
                      layout=layout, gate_order=gate_order)[:_outputs]
    num_dir = 2 if direction == "bidirectional" else 1

    def make_step(d, wd, rd, wb, rb):
        f, g = _activations(activations, activation_alpha, activation_beta, ["Sigmoid", "Tanh"], num_dir)[d]
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

    outs = _recurrent("GRU", x, w, r, b, sequence_lens, [initial_h], hidden_size=hidden_size,
                      direction=direction, layout=layout, make_step=make_step, gates=3, gate_order=gate_order)
    return outs[:_outputs]


@register("LSTM", since=1, num_outputs=None)
def lstm(
    x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None, *,
    activation_alpha=None, activation_beta=None, activations=None, clip=None,
    direction: str = "forward", hidden_size: int | None = None, input_forget: int = 0, layout: int = 0,
    gate_order: str | None = None, _outputs: int = 1,
):
    """Gate order i, o, f, c (``gate_order="torch"``: i, f, g(c), o for ``W``, ``R``, ``B``); peepholes
    P = [Pi, Po, Pf]. Outputs Y, Y_h, Y_c."""
    if not input_forget and p is None and _fusable(
            x, (w, r, b, initial_h, initial_c), activations=activations, defaults=["sigmoid", "tanh", "tanh"],
            activation_alpha=activation_alpha, activation_beta=activation_beta, clip=clip, lens=sequence_lens):
        return _fused("LSTM", x, w, r, b, [initial_h, initial_c], hidden_size=hidden_size, direction=direction,
                      layout=layout, gate_order=gate_order)[:_outputs]
    num_dir = 2 if direction == "bidirectional" else 1

    def make_step(d, wd, rd, wb, rb, pd):
        f, g, h_act = _activations(activations, activation_alpha, activation_beta, ["Sigmoid", "Tanh", "Tanh"],
                                   num_dir)[d]
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

    outs = _recurrent("LSTM", x, w, r, b, sequence_lens, [initial_h, initial_c], hidden_size=hidden_size,
                      direction=direction, layout=layout, make_step=make_step, gates=4, extra=(p,),
                      gate_order=gate_order)
    return outs[:_outputs]


def stacked(x: torch.Tensor, *tensors: torch.Tensor, kind: str, layers: int, bias: bool, states: tuple[bool, ...],
            hidden: int, direction: str = "forward", mode: str = "", gate_order: str = "onnx") -> torch.Tensor:
    """``layers`` ONNX ``kind`` ops of one configuration (layout 0, default activations or ``mode`` for RNN, no
    clip, ``sequence_lens`` or peepholes), each reading the previous one's ``Y`` with its directions merged
    ([seq, batch, dirs * H]), as one multi-layer call of torch's fused kernel; returns the last layer's ``Y``
    [seq, dirs, batch, H]. ``tensors``: each layer's ``W``, ``R`` (and ``B`` with ``bias``), then the initial
    states given, layer by layer (``states``: for each layer and state, whether it is given). Gradients reach
    every layer's ``W``/``R``/``B`` as they do through the ops one by one. ``gate_order``: every layer's, as the
    ops' attribute."""
    per = 3 if bias else 2
    slots = 2 if kind == "LSTM" else 1
    given = iter(tensors[layers * per :])
    initial = [[next(given) if states[k * slots + i] else None for i in range(slots)] for k in range(layers)]
    weights = [(tensors[k * per], tensors[k * per + 1], tensors[k * per + 2] if bias else None) for k in range(layers)]
    num_dir = 2 if direction == "bidirectional" else 1
    if not _fusable(x, tensors, activations=None, defaults=[], activation_alpha=None, activation_beta=None, clip=None,
                    lens=None):  # e.g. an empty batch: the ops one by one
        op = {"LSTM": lstm, "GRU": gru, "RNN": rnn}[kind]
        extra: dict[str, Any] = {"GRU": {"linear_before_reset": 1, "gate_order": gate_order},
                                 "LSTM": {"gate_order": gate_order}, "RNN": {"activations": [mode] * num_dir}}[kind]
        y = x
        for k, (w, r, b) in enumerate(weights):
            if k:
                y = y.transpose(1, 2).reshape(y.shape[0], y.shape[2], num_dir * y.shape[3])
            y = op(y, w, r, b, None, *initial[k], hidden_size=hidden, direction=direction, **extra)[0]
        return y
    if torch.is_grad_enabled() and any(t.requires_grad for layer in weights for t in layer if t is not None):
        params = _torch_params(kind, *weights[0], hidden, num_dir, more=tuple(weights[1:]), gate_order=gate_order)
    else:
        params = [p for w, r, b in weights for p in _params(kind, w, r, b, hidden, num_dir, gate_order)]
    batch = x.shape[1]
    hx = []
    for i in range(slots):
        parts = [s[i] for s in initial]
        if all(p is None for p in parts):
            hx.append(x.new_zeros(layers * num_dir, batch, hidden))
        else:
            hx.append(torch.cat([p if p is not None else x.new_zeros(num_dir, batch, hidden) for p in parts]))
    args = (params, bias, layers, 0.0, False, num_dir == 2, False)
    if kind == "LSTM":
        y = torch.lstm(x, (hx[0], hx[1]), *args)[0]
    elif kind == "GRU":
        y = torch.gru(x, hx[0], *args)[0]
    else:
        y = (torch.rnn_relu if mode == "relu" else torch.rnn_tanh)(x, hx[0], *args)[0]
    return y.unsqueeze(1) if num_dir == 1 else y.view(x.shape[0], batch, num_dir, hidden).transpose(1, 2)
