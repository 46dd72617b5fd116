"""Rebuild Keras models (``.keras``, legacy ``.h5``) as graphs, and load Keras weights by layer name.

``load_keras(path)`` reads the model config (Sequential or functional) and rebuilds each layer in
its own scope named after the Keras layer: ``hidden1/kernel``, ``hidden1/MatMul``, ``conv1/Conv2D``...
The InputLayer becomes a placeholder of the same name and shape, and ``graph.get_tensor("<layer>")``
(an alias) is the layer's output, exactly what Keras computed: images stay **NHWC** between layers
(a Keras CNN takes the arrays Keras took), convolutions and pooling transpose to NCHW and back
inside their scope, and ``Flatten`` flattens NHWC, Keras's element order. Variables keep Keras's
layouts (dense ``[in, out]``, conv ``HWIO``, ``layout`` attributes ``"io"``/``"hwio"``); a ``Transpose``
op gives ``Conv`` its OIHW view. BatchNormalization keeps Keras's momentum and epsilon.

``load_keras_weights(graph, path)`` loads the weights of a ``.weights.h5`` (or any Keras file) into
an existing graph whose layer scopes carry the Keras layer names, converting layouts as needed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from converters.keras_h5 import KerasFile, read_keras_file
from graphdnn.errors import FileFormatError, GraphDNNError, GraphError, UnknownOpError
from graphdnn.graph import Graph, Tensor

__all__ = ["keras_named_tensors", "load_keras", "load_keras_weights"]

TO_NCHW, TO_NHWC, HWIO_TO_OIHW = [0, 3, 1, 2], [0, 2, 3, 1], [3, 2, 0, 1]


class _Layer:
    """One Keras layer being rebuilt: config, weights (by Keras name), inputs, and op helpers."""

    def __init__(self, graph: Graph, cls: str, config: dict[str, Any], weights: list[tuple[str, np.ndarray]]):
        self.g, self.cls, self.cfg = graph, cls, config
        self.name = config["name"]
        self.weights = list(weights)

    def op(self, op_type: str, inputs: list[Any], attrs: dict[str, Any] | None = None, name: str | None = None,
           domain: str = "") -> Tensor:
        return self.g.add_op(op_type, inputs, attrs, name or op_type, domain=domain).out()

    def var(self, index: int, name: str, shape: tuple[int, ...], layout: str | None = None,
            trainable: bool = True) -> Tensor:
        if index >= len(self.weights):
            raise FileFormatError(f"layer {self.name!r} ({self.cls}): the file has {len(self.weights)} weights, "
                                  f"weight {index} ({name}) is missing")
        value = torch.from_numpy(np.array(self.weights[index][1], order="C", copy=True))
        if tuple(value.shape) != tuple(shape):
            raise FileFormatError(f"layer {self.name!r} ({self.cls}): weight {name} has shape {list(value.shape)}, "
                                  f"the config implies {list(shape)}")
        return self.g.variable(name, value=value, trainable=trainable and self.cfg.get("trainable", True),
                               layout=layout)

    def const(self, value: Any, name: str, dtype: str | None) -> Tensor:
        return self.g.constant(value, name=name, dtype=dtype)


def _pair(v: Any) -> list[int]:
    return [int(v)] * 2 if isinstance(v, (int, float)) else [int(i) for i in v]


def _pad(padding: str) -> str:
    return "SAME_UPPER" if str(padding).lower() == "same" else "VALID"


def _channels_last(layer: _Layer) -> None:
    if layer.cfg.get("data_format", "channels_last") != "channels_last":
        raise UnknownOpError(f"layer {layer.name!r} ({layer.cls}): data_format channels_first is not imported")


# ---------------------------------------------------------------------------------- activations
def _activation(layer: _Layer, x: Tensor, fn: Any) -> Tensor:
    name = fn if isinstance(fn, str) else (fn or {}).get("config", {}).get("name", (fn or {}).get("class_name"))
    name = (name or "linear").lower()
    simple = {"relu": "Relu", "elu": "Elu", "selu": "Selu", "sigmoid": "Sigmoid", "tanh": "Tanh",
              "softplus": "Softplus", "softsign": "Softsign", "exponential": "Exp"}
    if name in ("linear", "none"):
        return x
    if name in simple:
        return layer.op(simple[name], [x], name=simple[name])
    if name == "softmax":
        return layer.op("Softmax", [x], {"axis": -1})
    if name == "leaky_relu":
        return layer.op("LeakyRelu", [x], {"alpha": 0.2})
    if name in ("swish", "silu"):
        return layer.op("Mul", [x, layer.op("Sigmoid", [x])], name="swish")
    if name == "relu6":
        return _clip(layer, x, 6.0)
    if name == "hard_sigmoid":
        return layer.op("HardSigmoid", [x], {"alpha": 1.0 / 6.0, "beta": 0.5})
    if name == "gelu":
        erf = layer.op("Erf", [layer.op("Mul", [x, layer.const(1 / math.sqrt(2), "inv_sqrt2", x.dtype)])])
        half = layer.op("Mul", [x, layer.const(0.5, "half", x.dtype)])
        return layer.op("Mul", [half, layer.op("Add", [erf, layer.const(1.0, "one", x.dtype)])], name="gelu")
    raise UnknownOpError(f"layer {layer.name!r}: activation {name!r} is not imported")


def _clip(layer: _Layer, x: Tensor, hi: float) -> Tensor:
    return layer.op("Clip", [x, layer.const(0.0, "min", x.dtype), layer.const(hi, "max", x.dtype)], name="Relu6")


# ---------------------------------------------------------------------------------------- layers
def _dense(layer: _Layer, xs: list[Tensor]) -> Tensor:
    x = xs[0]
    units = int(layer.cfg["units"])
    kernel = layer.var(0, "kernel", (int(x.shape[-1]), units), "io")
    y = layer.op("MatMul", [x, kernel])
    if layer.cfg.get("use_bias", True):
        y = layer.op("Add", [y, layer.var(1, "bias", (units,))], name="BiasAdd")
    return _activation(layer, y, layer.cfg.get("activation"))


def _conv2d(layer: _Layer, xs: list[Tensor]) -> Tensor:
    _channels_last(layer)
    x = xs[0]
    k, filters, groups = _pair(layer.cfg["kernel_size"]), int(layer.cfg["filters"]), int(layer.cfg.get("groups", 1))
    kernel = layer.var(0, "kernel", (*k, int(x.shape[-1]) // groups, filters), "hwio")
    ins = [layer.op("Transpose", [x], {"perm": TO_NCHW}, "to_nchw"),
           layer.op("Transpose", [kernel], {"perm": HWIO_TO_OIHW}, "kernel_oihw")]
    if layer.cfg.get("use_bias", True):
        ins.append(layer.var(1, "bias", (filters,)))
    attrs = {"kernel_shape": k, "strides": _pair(layer.cfg.get("strides", 1)), "group": groups,
             "dilations": _pair(layer.cfg.get("dilation_rate", 1)), "auto_pad": _pad(layer.cfg.get("padding"))}
    y = layer.op("Transpose", [layer.op("Conv", ins, attrs, "Conv2D")], {"perm": TO_NHWC}, "to_nhwc")
    return _activation(layer, y, layer.cfg.get("activation"))


def _pool(layer: _Layer, xs: list[Tensor]) -> Tensor:
    _channels_last(layer)
    size = _pair(layer.cfg.get("pool_size", 2))
    attrs = {"kernel_shape": size, "strides": _pair(layer.cfg.get("strides") or size),
             "auto_pad": _pad(layer.cfg.get("padding", "valid"))}
    op = "MaxPool" if layer.cls.startswith("Max") else "AveragePool"
    if op == "AveragePool":
        attrs["count_include_pad"] = 0
    y = layer.op(op, [layer.op("Transpose", [xs[0]], {"perm": TO_NCHW}, "to_nchw")], attrs)
    return layer.op("Transpose", [y], {"perm": TO_NHWC}, "to_nhwc")


def _global_pool(layer: _Layer, xs: list[Tensor]) -> Tensor:
    _channels_last(layer)
    op = "ReduceMean" if "Average" in layer.cls else "ReduceMax"
    axes = list(range(1, len(xs[0].shape) - 1))
    attrs: dict[str, Any] = {"keepdims": int(bool(layer.cfg.get("keepdims", False)))}
    ins: list[Any] = [xs[0]]
    if layer.g.opset.get("", 17) >= 18:
        ins.append(layer.const(axes, "axes", "int64"))
    else:
        attrs["axes"] = axes
    return layer.op(op, ins, attrs)


def _batch_norm(layer: _Layer, xs: list[Tensor]) -> Tensor:
    x = xs[0]
    rank = len(x.shape)
    axis = layer.cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) else axis
    if axis % rank != rank - 1:
        raise UnknownOpError(f"layer {layer.name!r}: BatchNormalization over axis {axis} is not imported")
    c = int(x.shape[-1])
    i, dt = 0, x.dtype
    if layer.cfg.get("scale", True):
        gamma, i = layer.var(i, "gamma", (c,)), i + 1
    else:
        gamma = layer.const(np.ones(c, np.float32), "gamma", dt)
    if layer.cfg.get("center", True):
        beta, i = layer.var(i, "beta", (c,)), i + 1
    else:
        beta = layer.const(np.zeros(c, np.float32), "beta", dt)
    mean = layer.var(i, "moving_mean", (c,), trainable=False)
    var = layer.var(i + 1, "moving_variance", (c,), trainable=False)
    attrs = {"epsilon": float(layer.cfg.get("epsilon", 1e-3)), "momentum": float(layer.cfg.get("momentum", 0.99))}
    if rank == 2:
        return layer.op("BatchNormalization", [x, gamma, beta, mean, var], attrs)
    perm = [0, rank - 1] + list(range(1, rank - 1))
    y = layer.op("BatchNormalization", [layer.op("Transpose", [x], {"perm": perm}, "to_nchw"), gamma, beta, mean,
                                        var], attrs)
    return layer.op("Transpose", [y], {"perm": [0] + list(range(2, rank)) + [1]}, "to_nhwc")


def _dropout(layer: _Layer, xs: list[Tensor]) -> Tensor:
    ratio = layer.const(float(layer.cfg.get("rate", 0.5)), "rate", xs[0].dtype)
    return layer.op("Dropout", [xs[0], ratio])


def _act_layer(layer: _Layer, xs: list[Tensor]) -> Tensor:
    cls, cfg, x = layer.cls, layer.cfg, xs[0]
    if cls == "Activation":
        return _activation(layer, x, cfg.get("activation"))
    if cls == "LeakyReLU":
        return layer.op("LeakyRelu", [x], {"alpha": float(cfg.get("negative_slope", cfg.get("alpha", 0.3)))})
    if cls == "ELU":
        return layer.op("Elu", [x], {"alpha": float(cfg.get("alpha", 1.0))})
    if cls == "Softmax":
        return layer.op("Softmax", [x], {"axis": int(cfg.get("axis", -1))})
    # ReLU(max_value, negative_slope, threshold)
    if float(cfg.get("negative_slope") or 0) or float(cfg.get("threshold") or 0):
        raise UnknownOpError(f"layer {layer.name!r}: ReLU with negative_slope/threshold is not imported")
    hi = cfg.get("max_value")
    return layer.op("Relu", [x]) if hi is None else _clip(layer, x, float(hi))


def _merge(layer: _Layer, xs: list[Tensor]) -> Tensor:
    if layer.cls == "Concatenate":
        return layer.op("Concat", xs, {"axis": int(layer.cfg.get("axis", -1))})
    op = {"Add": "Add", "Subtract": "Sub", "Multiply": "Mul", "Maximum": "Max", "Minimum": "Min"}.get(layer.cls)
    if layer.cls == "Average":
        total = layer.op("Sum", xs)
        return layer.op("Div", [total, layer.const(float(len(xs)), "count", xs[0].dtype)], name="Average")
    if op in ("Max", "Min"):
        return layer.op(op, xs)
    y = xs[0]
    for i, x in enumerate(xs[1:]):
        y = layer.op(op, [y, x], name=op if i == len(xs) - 2 else f"{op}_{i}")
    return y


def _reshape(layer: _Layer, xs: list[Tensor]) -> Tensor:
    shape = [0] + [int(d) for d in layer.cfg["target_shape"]]
    return layer.op("Reshape", [xs[0], layer.const(shape, "shape", "int64")])


def _flatten(layer: _Layer, xs: list[Tensor]) -> Tensor:
    return layer.op("Flatten", [xs[0]], {"axis": 1})


LAYERS: dict[str, Callable[[_Layer, list[Tensor]], Tensor]] = {
    "Dense": _dense, "Conv2D": _conv2d, "MaxPooling2D": _pool, "AveragePooling2D": _pool, "MaxPool2D": _pool,
    "AvgPool2D": _pool, "GlobalAveragePooling2D": _global_pool, "GlobalMaxPooling2D": _global_pool,
    "Flatten": _flatten, "BatchNormalization": _batch_norm, "Dropout": _dropout, "Activation": _act_layer,
    "ReLU": _act_layer, "LeakyReLU": _act_layer, "ELU": _act_layer, "Softmax": _act_layer, "Add": _merge,
    "Subtract": _merge, "Multiply": _merge, "Average": _merge, "Maximum": _merge, "Minimum": _merge,
    "Concatenate": _merge, "Reshape": _reshape,
}


# ------------------------------------------------------------------------------------ model config
def _history(obj: Any) -> list[tuple[str, int, int]]:
    """Inbound (layer, node, tensor) triples of a Keras 3 ``args`` structure, in order."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            h = obj["config"]["keras_history"]
            return [(h[0], int(h[1]), int(h[2]))]
        return [t for v in obj.values() for t in _history(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _history(v)]
    return []


def _inbound(layer: dict[str, Any]) -> list[tuple[str, int, int]]:
    nodes = layer.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise UnknownOpError(f"layer {layer['config'].get('name')!r} is shared ({len(nodes)} calls); graphdnn "
                             "imports layers called once")
    if not nodes:
        return []
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3
        return _history(node.get("args", []))
    return [(e[0], int(e[1]), int(e[2])) for e in node]  # Keras 2: [[name, node, tensor, kwargs], ...]


def _refs(spec: Any) -> list[str]:
    if spec and isinstance(spec[0], str):
        return [spec[0]]
    return [s[0] for s in spec]


def _input_shape(layer: dict[str, Any]) -> list[int | None] | None:
    cfg = layer.get("config", {})
    return cfg.get("batch_shape") or cfg.get("batch_input_shape") or (layer.get("build_config") or {}).get(
        "input_shape")


def _plan(config: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, list[str]], list[str]]:
    """(layers in build order, inbound layer names per layer, output layer names)."""
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
        return layers, {n: ([names[i - 1]] if i else []) for i, n in enumerate(names)}, [names[-1]]
    if cls in ("Functional", "Model"):
        inbound = {}
        for layer in layers:
            refs = _inbound(layer)
            if any(node or tensor for _, node, tensor in refs):
                raise UnknownOpError(f"layer {layer['config']['name']!r} reads a shared layer's second call")
            inbound[layer["config"]["name"]] = [r[0] for r in refs]
        return layers, inbound, _refs(body.get("output_layers", []))
    raise UnknownOpError(f"model class {cls!r}: graphdnn imports Sequential and functional models")


#: What a config that lies (a missing key, a wrong type, an impossible value) raises while it is read.
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError, OverflowError,
              RecursionError, RuntimeError)


def build_keras_graph(kfile: KerasFile) -> Graph:
    """A graph for the model described by ``kfile`` (config + weights). A config that does not describe
    a model graphdnn can rebuild gives a ``FileFormatError`` naming the file and the layer."""
    if kfile.config is None:
        raise FileFormatError(f"{kfile.path}: a weights-only file has no model config; build the graph in code and "
                              "call converters.keras_import.load_keras_weights(graph, path)")
    current: list[str] = []
    try:
        return _build_keras_graph(kfile, current)
    except GraphDNNError:
        raise
    except _MALFORMED as exc:
        where = f"layer {current[-1]!r}" if current else "the model config"
        raise FileFormatError(f"{kfile.path}: {where} is malformed ({type(exc).__name__}: {exc}); re-save the "
                              "model with Keras") from None


def _build_keras_graph(kfile: KerasFile, current: list[str]) -> Graph:
    assert kfile.config is not None
    layers, inbound, outputs = _plan(kfile.config)
    bad = [f"{layer['config'].get('name')} ({layer['class_name']})" for layer in layers
           if layer["class_name"] not in LAYERS and layer["class_name"] != "InputLayer"]
    if bad:
        raise UnknownOpError(f"{kfile.path}: cannot import layer(s) {', '.join(bad)}; supported: InputLayer, "
                             f"{', '.join(sorted(LAYERS))}")
    graph = Graph(kfile.config.get("config", {}).get("name") or Path(kfile.path).stem)
    out: dict[str, Tensor] = {}
    for spec in layers:
        cls, cfg = spec["class_name"], spec["config"]
        name = cfg["name"]
        current.append(str(name))
        if cls == "InputLayer":
            dtype = cfg.get("dtype") if isinstance(cfg.get("dtype"), str) else "float32"
            out[name] = graph.placeholder(name, tuple(_input_shape(spec)), dtype)
            continue
        xs = [out[n] for n in inbound[name]]
        layer = _Layer(graph, cls, cfg, kfile.weights.get(name, []))
        try:
            with graph.layer_scope(name, name):
                out[name] = LAYERS[cls](layer, xs)
        except GraphError as exc:
            raise FileFormatError(f"{kfile.path}: layer {name!r} ({cls}): {exc}") from None
        graph.aliases[name] = out[name].name
        graph.aliases[f"{name}:0"] = out[name].name
    unused = sorted(set(kfile.weights) - set(out))
    if unused:
        raise FileFormatError(f"{kfile.path}: weights for layers {unused} that the config does not have")
    graph.meta["keras_import"] = {"source": kfile.path, "model": kfile.config.get("class_name"),
                                  "inputs": [s["config"]["name"] for s in layers if s["class_name"] == "InputLayer"],
                                  "outputs": [out[n].name for n in outputs]}
    return graph


def load_keras(path: str | os.PathLike) -> Graph:
    """Rebuild the Keras model saved at ``path`` (``.keras`` or legacy ``.h5``) with its weights."""
    return build_keras_graph(read_keras_file(path))


# ---------------------------------------------------------------------------------------- weights
def keras_named_tensors(path: str | os.PathLike) -> Any:
    """The weights of a Keras file as ``NamedTensors`` named ``<layer>/<weight>`` (``hidden1/kernel``)."""
    from converters.named_tensors import _from_mapping

    kfile = read_keras_file(path)
    mapping = {f"{layer}/{wname}": arr for layer, ws in kfile.weights.items() for wname, arr in ws}
    return _from_mapping(mapping, str(path), "keras")


def load_keras_weights(graph: Graph | Any, path: str | os.PathLike, *, strict: bool = True) -> Any:
    """Load a Keras file's weights into the graph's variables by layer name: ``<layer>/<weight>`` when
    that variable exists, else the layer scope's variables in creation order. Conv kernels are
    converted to the target's layout (``HWIO`` -> ``OIHW`` for ``graphdnn.layers.conv2d``). Returns the
    ``RestoreReport``."""
    from converters.named_tensors import load_weights

    g = graph if isinstance(graph, Graph) else graph.source_graph
    kfile = read_keras_file(path)
    names = [op.name for op in g.variables()]
    mapping: dict[str, np.ndarray] = {}
    for layer, ws in kfile.weights.items():
        scoped = [n for n in names if n.startswith(layer + "/") and "/" not in n[len(layer) + 1:]]
        for i, (wname, arr) in enumerate(ws):
            exact = f"{layer}/{wname}"
            key = exact if exact in names or i >= len(scoped) else scoped[i]
            mapping[key] = arr
    return load_weights(graph, mapping, framework="keras", strict=strict)
