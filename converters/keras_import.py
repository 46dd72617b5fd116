"""Rebuild Keras models (``.keras``, legacy ``.h5``) as graphs, and load Keras weights by layer name.

``load_keras(path)`` reads the model config (Sequential or functional) and rebuilds each layer in
its own scope named after the Keras layer: ``hidden1/kernel``, ``hidden1/MatMul``, ``conv1/Conv2D``...
The InputLayer becomes a placeholder of the same name and shape, and ``graph.get_tensor("<layer>")``
(an alias) is the layer's output, exactly what Keras computed: images stay **NHWC** between layers
(a Keras CNN takes the arrays Keras took), convolutions and pooling transpose to NCHW and back
inside their scope, and ``Flatten`` flattens NHWC, Keras's element order. Variables keep Keras's
layouts (dense ``[in, out]``, conv ``HWIO``, ``layout`` attributes ``"io"``/``"hwio"``); a ``Transpose``
op gives ``Conv`` its OIHW view. BatchNormalization keeps Keras's momentum and epsilon.

Each layer class is one translator in ``converters/keras_layers/`` (``supported_layers()`` lists them).
Variables are named by Keras's ``Variable.path`` (``lstm/lstm_cell/kernel``, ``mha/query/kernel``,
``td/dense/kernel``; a nested functional model's layers by their own names, ``proj/kernel``, its scoped
``encoder/proj/kernel`` an alias in ``graph.aliases``; a nested Sequential's under its name, ``seq/d1/kernel``;
when two nested models' layers share a name, the later weights keep their scoped names, with a warning and
``graph.meta["keras_import"]["scoped_names"]``); layout changes (ONNX's LSTM gate order, conv kernels) are ops
in the graph. A layer called on numbers (``x + 3.0`` in a functional model) gets
them as constants. Shared layers and nested models called several times build each call on one
weight set. Keras masks (``Embedding(mask_zero=True)``, ``Masking``) flow as Keras's ``compute_mask`` does
and reach the recurrent, attention and masked-average translators. Refused with an error: a mask reaching a
layer whose masked behaviour is not rebuilt, and layers no translator handles (all listed in one error).

``load_keras_weights(graph, path)`` loads the weights of a ``.weights.h5`` (or any Keras file) into
an existing graph whose layer scopes carry the Keras layer names, converting layouts as needed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from graphdnn.converters.keras_h5 import KerasFile, read_keras_file
from graphdnn.converters.keras_layers import LAYERS, KerasLayer
from graphdnn.converters.keras_layers import supported_layers as _registry

from graphdnn.errors import FileFormatError, GraphDNNError, GraphError, UnknownOpError, reading_file
from graphdnn.graph import Graph, Tensor

__all__ = ["keras_named_tensors", "load_keras", "load_keras_weights", "supported_layers"]


def supported_layers() -> dict[str, str]:
    """The Keras layer classes ``load_keras`` rebuilds (besides ``InputLayer``), each with its family."""
    return _registry()


#: Keras masks (bool ``(batch, time)``, from ``Embedding(mask_zero=True)`` and ``Masking``) flow as Keras's
#: ``compute_mask`` does: these layers pass their first input's mask on; recurrent layers (with
#: ``return_sequences``) and attention (the query's) pass theirs on; merges OR their inputs' masks; every
#: other layer drops it. The translators of the recurrent, attention and masked-average layers use it.
_PASS_MASK = {"Activation", "ActivityRegularization", "AlphaDropout", "BatchNormalization", "Dense", "Dropout", "ELU",
              "GaussianDropout", "GaussianNoise", "GroupNormalization", "Identity", "LayerNormalization", "LeakyReLU",
              "Normalization", "PReLU", "ReLU", "Rescaling", "Softmax", "SpatialDropout1D", "SpatialDropout2D",
              "SpatialDropout3D", "TimeDistributed", "UnitNormalization"}
_MERGES = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"}
_RNNS = {"LSTM", "GRU", "SimpleRNN"}
_ATTENTION = {"MultiHeadAttention", "Attention", "AdditiveAttention"}
#: Layers whose Keras ``call`` uses a mask in a way graphdnn does not rebuild (refused when one reaches them).
_MASK_REFUSED = {"BatchNormalization": "batch statistics over the unmasked steps in training",
                 "Softmax": "a Softmax over a masked input"}
_USES_MASK = _RNNS | _ATTENTION | {"Bidirectional", "GlobalAveragePooling1D", "GlobalAvgPool1D"}


# ------------------------------------------------------------------------------------ model config
Ref = tuple[str, int, int]  # (layer name, call node, output index)


def _history(obj: Any, numbers: bool = False) -> list[Any]:
    """Inbound (layer, node, tensor) triples of a Keras 3 ``args`` structure, in order; with ``numbers``
    the Python numbers among them too (``x + 3.0`` in a functional model is an ``Add`` on [x, 3.0])."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            h = obj["config"]["keras_history"]
            return [(h[0], int(h[1]), int(h[2]))]
        return [t for v in obj.values() for t in _history(v, numbers)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _history(v, numbers)]
    if numbers and isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return [float(obj)]
    return []


Call = tuple[list[Any], dict[str, Any]]  # (refs and numbers it is called on, keyword arguments)


def _call(node: Any) -> Call:
    if isinstance(node, dict):  # Keras 3
        kwargs = {k: (_history(v) or v) for k, v in (node.get("kwargs") or {}).items()}
        return _history(node.get("args", []), numbers=True), kwargs
    if node and isinstance(node[0], str):  # tf_keras writes a single call as [name, node, tensor, kwargs]
        node = [node]
    refs = [(e[0], int(e[1]), int(e[2])) for e in node]  # Keras 2: [[name, node, tensor, kwargs], ...]
    kwargs = dict(node[0][3]) if node and len(node[0]) > 3 and isinstance(node[0][3], dict) else {}
    return refs, {k: ([(v[0], int(v[1]), int(v[2]))] if isinstance(v, list) and len(v) >= 3 and isinstance(v[0], str)
                      else v) for k, v in kwargs.items()}  # a tensor passed by keyword: [layer, node, index]


def _inbound(layer: dict[str, Any]) -> list[Call]:
    """Each call of a layer (a shared layer has several): what it is called on, and its keyword arguments."""
    return [_call(node) for node in layer.get("inbound_nodes") or []]


def _refs(spec: Any) -> list[Ref]:
    if spec and isinstance(spec[0], str):
        return [(spec[0], int(spec[1]) if len(spec) > 1 else 0, int(spec[2]) if len(spec) > 2 else 0)]
    return [(s[0], int(s[1]), int(s[2])) for s in spec]


def _input_shape(layer: dict[str, Any]) -> list[int | None] | None:
    cfg = layer.get("config", {})
    return cfg.get("batch_shape") or cfg.get("batch_input_shape") or (layer.get("build_config") or {}).get(
        "input_shape")


def _plan(config: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, list[Call]], list[Ref]]:
    """(layers in config order, the calls of each layer, output refs)."""
    cls, body = config.get("class_name"), config.get("config", {})
    layers = body.get("layers", body if isinstance(body, list) else [])
    if cls == "Sequential":
        layers = list(layers)
        if not layers or layers[0]["class_name"] != "InputLayer":
            shape = _input_shape(layers[0]) if layers else None
            shape = shape or body.get("build_input_shape") or (config.get("build_config") or {}).get("input_shape")
            if shape is None:
                raise FileFormatError("the Sequential model has no input shape (it was never built)")
            layers.insert(0, {"class_name": "InputLayer", "config": {"name": "input", "batch_shape": shape}})
        names = [layer["config"]["name"] for layer in layers]
        return layers, {n: [([(names[i - 1], 0, 0)] if i else [], {})] for i, n in enumerate(names)}, [
            (names[-1], 0, 0)]
    if cls in ("Functional", "Model"):
        inbound = {layer["config"]["name"]: _inbound(layer) for layer in layers}
        outputs = _refs(body.get("output_layers", []))
        skipped = {layer["config"]["name"] for layer in layers if _skips_first_node(layer)}
        if skipped:
            inbound = {name: [([_shifted(a, skipped) for a in args],
                               {k: [_shifted(r, skipped) for r in v] if isinstance(v, list) else v
                                for k, v in kwargs.items()}) for args, kwargs in calls]
                       for name, calls in inbound.items()}
            outputs = [_shifted(r, skipped) for r in outputs]
        return layers, inbound, outputs
    raise UnknownOpError(f"model class {cls!r}: graphdnn imports Sequential and functional models")


def _skips_first_node(layer: dict[str, Any]) -> bool:
    """Whether a Keras 2 config numbers the calls of this nested model from 1: ``tf_keras`` leaves out the
    node a model built on an ``Input`` has of its own (a functional model, a Sequential given an input shape)
    but counts it in the node indices of the layers that read the model."""
    nodes = layer.get("inbound_nodes") or []
    if not nodes or not all(isinstance(node, list) for node in nodes):  # Keras 3 numbers the saved calls
        return False
    if layer.get("class_name") in ("Functional", "Model"):
        return True
    inner = (layer.get("config") or {}).get("layers") if isinstance(layer.get("config"), dict) else None
    return (layer.get("class_name") == "Sequential" and isinstance(inner, list) and bool(inner)
            and isinstance(inner[0], dict) and inner[0].get("class_name") == "InputLayer")


def _shifted(ref: Any, skipped: set[str]) -> Any:
    """A Keras 2 (layer, node, tensor) reference with the node index of a model in ``skipped`` made the
    index of its call in the config."""
    if not isinstance(ref, tuple) or ref[0] not in skipped:
        return ref
    if ref[1] < 1:
        raise FileFormatError(f"a layer reads node {ref[1]} of nested model {ref[0]!r}, which Keras 2 does not "
                              "save (its calls are numbered from 1)")
    return (ref[0], ref[1] - 1, *ref[2:])


#: What a config that lies (a missing key, a wrong type, an impossible value) raises while it is read.
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError, OverflowError,
              RecursionError, RuntimeError)


def build_keras_graph(kfile: KerasFile) -> Graph:
    """A graph for the model described by ``kfile`` (config + weights). A config that does not describe
    a model graphdnn can rebuild gives a ``FileFormatError`` naming the file and the layer."""
    if kfile.config is None:
        raise FileFormatError(f"{kfile.path}: a weights-only file has no model config; build the graph in code and "
                              "call graphdnn.converters.keras_import.load_keras_weights(graph, path)")
    current: list[str] = []
    try:
        return _build_keras_graph(kfile, current)
    except GraphDNNError:
        raise
    except _MALFORMED as exc:
        where = f"layer {current[-1]!r}" if current else "the model config"
        raise FileFormatError(f"{kfile.path}: {where} is malformed ({type(exc).__name__}: {exc}); re-save the "
                              "model with Keras") from None


_MODELS = ("Sequential", "Functional", "Model")


def _unsupported(config: dict[str, Any]) -> list[str]:
    """``name (Class)`` of every layer, nested models included, that no translator handles."""
    bad = []
    for layer in _plan(config)[0]:
        cls = layer["class_name"]
        if cls in _MODELS:
            bad += _unsupported(layer)
        elif cls not in LAYERS and cls != "InputLayer":
            bad.append(f"{layer['config'].get('name')} ({cls})")
    return bad


class _Context:
    def __init__(self, kfile: KerasFile, graph: Graph, current: list[str]):
        self.path, self.graph, self.current = kfile.path, graph, current
        scoped = {name: path for path, name in kfile.aliases.items()}
        #: Weights by scoped name (``encoder/proj/kernel``); ``names`` gives the variable names that differ.
        self.weights = {scoped.get(path, path): arr for entries in kfile.weights.values() for path, arr in entries}
        self.names = dict(kfile.aliases)
        self.used: set[str] = set()
        self.variables: dict[str, Tensor] = {}  # Keras path -> variable, shared by a shared layer's calls


def _build_layers(ctx: _Context, config: dict[str, Any], feeds: list[Tensor] | None = None, prefix: str = "",
                  feed_masks: list[Tensor | None] | None = None, alias_prefix: str | None = None
                  ) -> tuple[list[Tensor], list[str], list[Tensor | None]]:
    """Build the layers of a (possibly nested) model config; returns (its outputs, its input names, the
    outputs' Keras masks). ``feeds`` are the tensors a nested model is called on (None: the inputs become
    placeholders), ``feed_masks`` their masks. ``prefix`` is the Keras path of the nested model's layers
    (``sub/``), ``alias_prefix`` the scope of this call's ops and tensor names (``sub_1/`` for a nested
    model's second call, which reuses the first call's variables)."""
    layers, inbound, outputs = _plan(config)
    input_names = [s["config"]["name"] for s in layers if s["class_name"] == "InputLayer"]
    if feeds is not None and len(feeds) != len(input_names):
        raise FileFormatError(f"{ctx.path}: nested model {prefix.rstrip('/')!r} takes {len(input_names)} inputs, "
                              f"it is called on {len(feeds)}")
    state = _Calls(inbound)
    for spec in layers:
        name = spec["config"]["name"]
        if spec["class_name"] == "InputLayer":
            if feeds is not None:
                state.out[(name, 0)] = [feeds[input_names.index(name)]]
                mask = (feed_masks or [None] * len(feeds))[input_names.index(name)]
                if mask is not None:
                    state.masks[(name, 0, 0)] = mask
            else:
                cfg = spec["config"]
                dtype = cfg.get("dtype") if isinstance(cfg.get("dtype"), str) else "float32"
                state.out[(name, 0)] = [ctx.graph.placeholder(name, tuple(_input_shape(spec)), dtype)]
    pending = [(spec, k) for spec in layers if spec["class_name"] != "InputLayer"
               for k in range(len(inbound.get(spec["config"]["name"]) or [None]))]
    built = 0
    for spec, k in _schedule(state, pending):
        _build_call(ctx, state, spec, k, prefix, prefix if alias_prefix is None else alias_prefix)
        built += 1
    if built < len(pending):
        names = sorted({spec["config"]["name"] for spec, k in pending if (spec["config"]["name"], k) not in state.out})
        raise FileFormatError(f"{ctx.path}: layer(s) {names[:10]} read tensors no layer produces (a cycle or "
                              "a missing layer)")
    return ([state.out[(n, node)][i] for n, node, i in outputs], input_names,
            [state.masks.get(ref) for ref in outputs])


class _Calls:
    """The outputs of the layer calls built so far, by (layer name, call index)."""

    def __init__(self, inbound: dict[str, list[Call]]):
        self.inbound = inbound
        self.out: dict[tuple[str, int], list[Tensor]] = {}
        self.masks: dict[Ref, Tensor] = {}  # the Keras mask of a layer call's output

    def call(self, name: str, k: int) -> Call:
        calls = self.inbound.get(name) or [([], {})]
        return calls[k]

    def needs(self, name: str, k: int) -> set[tuple[str, int]]:
        """The (layer, call) pairs whose outputs call ``k`` of layer ``name`` reads."""
        args, kwargs = self.call(name, k)
        refs = [a for a in args if isinstance(a, tuple)]
        refs += [r for v in kwargs.values() if isinstance(v, list) for r in v if isinstance(r, tuple)]
        return {(r[0], r[1]) for r in refs}

    def tensor(self, ref: Ref) -> Tensor:
        outs = self.out[(ref[0], ref[1])]
        if ref[2] >= len(outs):
            raise FileFormatError(f"layer {ref[0]!r} has {len(outs)} output(s), output {ref[2]} is read")
        return outs[ref[2]]


def _schedule(state: _Calls, pending: list[tuple[dict[str, Any], int]]) -> Iterator[tuple[dict[str, Any], int]]:
    """Yield the layer calls of ``pending`` in waves, each call once every call it reads is built: wave
    ``n + 1`` holds the calls whose latest input comes from wave ``n`` (the inputs being wave 0), each wave in
    config order (a shared layer's later call may read layers listed after it). One pass over the calls and
    their inputs; the calls left out read tensors nothing produces (a cycle or a missing layer)."""
    missing = [0] * len(pending)  # inputs not built yet
    readers: dict[tuple[str, int], list[int]] = {}
    wave: list[int] = []
    for i, (spec, k) in enumerate(pending):
        for ref in state.needs(spec["config"]["name"], k):
            if ref in state.out:
                continue
            missing[i] += 1
            readers.setdefault(ref, []).append(i)
        if not missing[i]:
            wave.append(i)
    while wave:
        following: list[int] = []
        for i in wave:  # every call of a wave is ready before the wave starts: build it in config order
            spec, k = pending[i]
            yield spec, k
            for j in readers.get((spec["config"]["name"], k), ()):
                missing[j] -= 1
                if not missing[j]:
                    following.append(j)
        wave = sorted(following)


def _build_call(ctx: _Context, state: _Calls, spec: dict[str, Any], k: int, prefix: str, alias_prefix: str) -> None:
    """Build call ``k`` of a layer; a shared layer's later calls (and the layers of a nested model's later
    calls) reuse the first call's variables, their ops in their own scope (``dense_1``, ``sub_1/dense``)."""
    graph = ctx.graph
    cls, cfg = spec["class_name"], spec["config"]
    name = cfg["name"]
    path = f"{prefix}{name}"
    repeated = alias_prefix != prefix  # a layer of a nested model's later call
    alias = f"{alias_prefix}{name}" + (f"_{k}" if k else "")
    ctx.current.append(path)
    args, kwargs = state.call(name, k)
    xs: list[Any] = [state.tensor(a) if isinstance(a, tuple) else a for a in args]
    call = {key: _kwarg(state, v) for key, v in kwargs.items()}
    in_masks = _input_masks(ctx, state, path, cls, cfg, args, kwargs, call)
    if "key" in call and isinstance(call["key"], Tensor):
        call["key_tensor"] = call.pop("key")
    scope = graph.layer_scope(name, name) if k == 0 and not repeated else graph.name_scope(
        f"{name}_{k}" if k else name)
    try:
        with scope:
            like = next((x for x in xs if isinstance(x, Tensor)), None)
            xs = [x if isinstance(x, Tensor) else graph.add_op(
                "Constant", [], {"value": {"dtype": like.dtype if like is not None else "float32", "shape": [],
                                           "data": [x]}}, None, default_name="operand").out() for x in xs]
            if cls in _MODELS:
                result, _, out_masks = _build_layers(ctx, spec, xs, path + "/", in_masks, alias + "/")
            else:
                layer = KerasLayer(graph, cls, cfg, ctx.weights, path=path, scope=path, used=ctx.used, kwargs=call,
                                   cache=ctx.variables, masks=in_masks, names=ctx.names)
                result = LAYERS[cls](layer, xs)
                out_masks = _output_masks(layer, in_masks)
    except GraphError as exc:
        raise FileFormatError(f"{ctx.path}: layer {path!r} ({cls}): {exc}") from None
    outs = result if isinstance(result, list) else [result]
    state.out[(name, k)] = outs
    for i, m in enumerate(out_masks[:len(outs)]):
        if m is not None:
            state.masks[(name, k, i)] = m
    for i, t in enumerate(outs):
        if i == 0:
            graph.aliases[alias] = t.name
        graph.aliases[f"{alias}:{i}"] = t.name


def _kwarg(state: _Calls, value: Any) -> Any:
    """A call's keyword argument: a tensor for one layer output, a list of tensors for several."""
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        tensors = [state.tensor(v) for v in value]
        return tensors[0] if len(tensors) == 1 else tensors
    return value


def _input_masks(ctx: _Context, state: _Calls, path: str, cls: str, cfg: dict[str, Any], args: list[Any],
                 kwargs: dict[str, Any], call: dict[str, Any]) -> list[Tensor | None]:
    """The Keras masks of a call's inputs (a ``mask=`` argument overrides them); refuses a mask reaching a
    layer whose masked behaviour is not rebuilt."""
    masks: list[Tensor | None] = [state.masks.get(a) if isinstance(a, tuple) else None for a in args]
    for key, value in kwargs.items():  # a tensor passed by keyword (MultiHeadAttention's value=): its mask
        if isinstance(value, list) and len(value) == 1 and value[0] in state.masks and f"{key}_mask" not in call:
            call[f"{key}_mask"] = state.masks[value[0]]
    given = call.pop("mask", None)
    if isinstance(given, Tensor):
        masks[:1] = [given]
    elif isinstance(given, list):
        masks[:len(given)] = [m if isinstance(m, Tensor) else None for m in given]
    if not any(m is not None for m in masks) and not any(k.endswith("_mask") for k in call):
        return masks
    why = _MASK_REFUSED.get(cls)
    if cls == "TimeDistributed" and cfg.get("layer", {}).get("class_name") in _USES_MASK | set(_MASK_REFUSED):
        why = f"TimeDistributed({cfg['layer']['class_name']}) of a masked sequence"
    if cls == "Concatenate" and int(cfg.get("axis", -1)) not in (-1, len(_first_shape(args, state)) - 1):
        why = "a Concatenate of masked sequences along the time axis"
    if why:
        raise UnknownOpError(f"{ctx.path}: layer {path!r} ({cls}) reads a masked sequence (mask_zero or Masking "
                             f"upstream); graphdnn does not rebuild {why}")
    return masks


def _first_shape(args: list[Any], state: _Calls) -> tuple[Any, ...]:
    first = next((a for a in args if isinstance(a, tuple)), None)
    return tuple(state.tensor(first).shape or ()) if first is not None else ()


def _output_masks(layer: KerasLayer, in_masks: list[Tensor | None]) -> list[Tensor | None]:
    """The Keras masks of a layer's outputs, by its ``compute_mask`` rule."""
    if layer.out_masks is not None:
        return layer.out_masks
    first = in_masks[0] if in_masks else None
    cls, cfg = layer.cls, layer.cfg
    if first is None and not any(m is not None for m in in_masks):
        return []
    if cls in _RNNS:
        return [first if cfg.get("return_sequences") else None]
    if cls == "Bidirectional":
        m = first if cfg["layer"]["config"].get("return_sequences") else None
        return [m, m] if cfg.get("merge_mode", "concat") is None else [m]
    if cls in _ATTENTION:  # the query's mask
        return [first]
    if cls in _MERGES:  # Keras: no mask if an input has none (all True for Concatenate), else their OR
        if any(m is None for m in in_masks):
            return []
        out = in_masks[0]
        for m in in_masks[1:]:
            out = layer.g.add_op("Or", [out, m], None, None, default_name="mask").out()
        return [out]
    return [first] if cls in _PASS_MASK else []


def _build_keras_graph(kfile: KerasFile, current: list[str]) -> Graph:
    assert kfile.config is not None
    bad = _unsupported(kfile.config)
    if bad:
        raise UnknownOpError(f"{kfile.path}: cannot import layer(s) {', '.join(bad)}; supported: InputLayer, "
                             f"{', '.join(sorted(LAYERS))}, and nested Sequential/functional models")
    graph = Graph(kfile.config.get("config", {}).get("name") or Path(kfile.path).stem)
    ctx = _Context(kfile, graph, current)
    outs, inputs, _ = _build_layers(ctx, kfile.config)
    unused = sorted(set(ctx.weights) - ctx.used)
    if unused:
        raise FileFormatError(f"{kfile.path}: weights {unused[:10]}{' ...' if len(unused) > 10 else ''} are not "
                              "used by the layers the config describes; graphdnn drops no weight")
    out_names = [t.name for t in outs]
    layers = _plan(kfile.config)[0]
    for scoped, name in ctx.names.items():  # a nested model's weight: its scoped name reaches the variable too
        if name in graph.nx and scoped not in graph.nx:
            graph.aliases[scoped] = name
    graph.meta["keras_import"] = {"source": kfile.path, "model": kfile.config.get("class_name"), "inputs": inputs,
                                  "outputs": out_names,
                                  "layers": [_naming_spec(s) for s in layers if s["config"]["name"] in kfile.weights]}
    if kfile.scoped:
        graph.meta["keras_import"]["scoped_names"] = list(kfile.scoped)
        warnings.warn(f"{kfile.path}: nested models hold layers of the same name, so Keras gives weights "
                      f"{kfile.scoped[:8]} the path of an earlier weight; they keep these scoped names", stacklevel=3)
    graph.signature = {"inputs": [graph.get_tensor(n).name for n in inputs], "outputs": out_names}
    return graph


_NAMING_KEYS = ("name", "use_bias", "center", "scale", "rms_scaling", "use_scale", "score_mode", "layer",
                "backward_layer")


def _naming_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The part of a layer's config that decides its weights' names (kept to name a weights-only file)."""
    cfg = spec.get("config", {})
    kept = {k: (_naming_spec(v) if isinstance(v, dict) and "class_name" in v else v)
            for k, v in cfg.items() if k in _NAMING_KEYS}
    if isinstance(cfg.get("layers"), list):  # a nested model
        kept["layers"] = [_naming_spec(layer) for layer in cfg["layers"]]
    return {"class_name": spec.get("class_name"), "config": kept}


def load_keras(path: str | os.PathLike) -> Graph:
    """Rebuild the Keras model saved at ``path`` (``.keras`` or legacy ``.h5``) with its weights."""
    with reading_file(path, "Keras file"):
        return build_keras_graph(read_keras_file(path))


# ---------------------------------------------------------------------------------------- weights
def keras_named_tensors(path: str | os.PathLike) -> Any:
    """The weights of a Keras file as ``NamedTensors`` named by Keras's ``Variable.path``
    (``hidden1/kernel``, ``lstm/lstm_cell/kernel``, ``mha/query/bias``)."""
    from graphdnn.converters.named_tensors import _from_mapping

    with reading_file(path, "Keras file"):
        kfile = read_keras_file(path)
    mapping = {wpath: arr for ws in kfile.weights.values() for wpath, arr in ws}
    return _from_mapping(mapping, str(path), "keras")


def load_keras_weights(graph: Graph | Any, path: str | os.PathLike, *, strict: bool = True) -> Any:
    """Load a Keras file's weights into the graph's variables by Keras's weight path: the variable of
    that name when it exists (an imported graph), else the layer scope's variables in creation order
    (a graph built in code with the Keras layer names). Conv kernels are converted to the target's
    layout (``HWIO`` -> ``OIHW`` for ``graphdnn.layers.conv2d``). Returns the ``RestoreReport``."""
    from graphdnn.converters.named_tensors import load_weights

    g = graph if isinstance(graph, Graph) else graph.source_graph
    layers = (g.meta.get("keras_import") or {}).get("layers")
    with reading_file(path, "Keras file"):
        kfile = read_keras_file(path, {"class_name": "Functional", "config": {"layers": layers}} if layers else None)
    names = [op.name for op in g.variables()]
    mapping: dict[str, np.ndarray] = {}
    known = set(names)
    scoped_of = {name: path for path, name in kfile.aliases.items()}
    for layer, ws in kfile.weights.items():
        scoped = [n for n in names if n.startswith(layer + "/") and "/" not in n[len(layer) + 1:]]
        for i, (wpath, arr) in enumerate(ws):
            if wpath not in known and scoped_of.get(wpath) in known:  # a graph naming it by its scoped name
                wpath = scoped_of[wpath]
            key = wpath if wpath in known or i >= len(scoped) else scoped[i]
            mapping[key] = arr
    return load_weights(graph, mapping, framework="keras", strict=strict)
