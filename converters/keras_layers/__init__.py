"""Keras layer translators: one function per Keras layer class, registered in ``LAYERS``.

Each translator receives a ``KerasLayer`` (the layer's config, its weights by Keras path, and op
helpers that build inside the layer's scope) and the layer's input tensors, and returns its output
tensor(s) built from graphdnn (ONNX) ops. Variables keep Keras's names (``Variable.path``:
``lstm/lstm_cell/kernel``) and layouts; any layout conversion is an op in the graph, so gradients
reach the Keras-named variable. The modules register by family: ``core`` (dense, embedding,
activations, dropout, merge), ``conv``, ``pooling``, ``norm``, ``reshape``, ``preprocessing``,
``rnn``, ``attention`` and ``applications`` (layers that ``keras.applications`` define).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from graphdnn.errors import FileFormatError, UnknownOpError
from graphdnn.graph import Graph, Tensor

__all__ = ["LAYERS", "KerasLayer", "supported_layers", "translates"]

_TORCH = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "int64": torch.int64, "int32": torch.int32, "bool": torch.bool}
Translator = Callable[["KerasLayer", list[Tensor]], "Tensor | list[Tensor]"]
#: Keras layer class name -> translator.
LAYERS: dict[str, Translator] = {}
#: Keras layer class name -> the family module that translates it (for the coverage table).
FAMILIES: dict[str, str] = {}


def translates(*classes: str) -> Callable[[Translator], Translator]:
    """Register the decorated function as the translator of the Keras layer ``classes``."""

    def register(fn: Translator) -> Translator:
        for cls in classes:
            if cls in LAYERS:
                raise ValueError(f"Keras layer class {cls} is registered twice")
            LAYERS[cls] = fn
            FAMILIES[cls] = fn.__module__.rsplit(".", 1)[-1]
        return fn

    return register


def supported_layers() -> dict[str, str]:
    """The Keras layer classes graphdnn imports, each with its family (``conv``, ``rnn``...), sorted."""
    return {cls: FAMILIES[cls] for cls in sorted(LAYERS)}


class KerasLayer:
    """One Keras layer being rebuilt: its class, config, weights (Keras path -> array), inputs' call
    arguments, and helpers that add ops and Keras-named variables in the layer's scope.

    ``path`` is the layer's Keras path (``bidi/forward_lstm`` for a wrapped layer); ``scope`` is the
    top-level layer whose graph scope the ops and variables are created in."""

    def __init__(self, graph: Graph, cls: str, config: dict[str, Any], weights: dict[str, np.ndarray],
                 path: str | None = None, scope: str | None = None, used: set[str] | None = None,
                 kwargs: dict[str, Any] | None = None, cache: dict[str, Tensor] | None = None,
                 masks: list[Tensor | None] | None = None, names: dict[str, str] | None = None):
        self.g, self.cls, self.cfg = graph, cls, config
        #: Variable names that differ from the weight's key in ``weights`` (a nested functional model's
        #: ``encoder/proj/kernel`` is Keras's ``proj/kernel``).
        self.names = names if names is not None else {}
        self.name = str(config["name"])
        self.path = path or self.name
        self.scope = scope or self.name
        self.weights = weights
        self.used = used if used is not None else set()
        self.kwargs = kwargs or {}
        self.cache = cache if cache is not None else {}
        #: The Keras masks (bool ``(batch, time)``) of the inputs, one per input (None: unmasked).
        self.masks: list[Tensor | None] = list(masks or [])
        #: Output masks a translator sets when it computes them (Embedding, Masking); None: Keras's rule.
        self.out_masks: list[Tensor | None] | None = None

    def mask(self, i: int = 0) -> Tensor | None:
        """The Keras mask of input ``i`` (None when it has none)."""
        return self.masks[i] if i < len(self.masks) else None

    def where(self) -> str:
        return f"layer {self.path!r} ({self.cls})"

    def sub(self, spec: dict[str, Any], name: str | None = None) -> KerasLayer:
        """The layer that ``spec`` (a ``{"class_name", "config"}`` inside this layer's config) describes,
        sharing this layer's weights and scope, its Keras path nested under this one."""
        cfg = dict(spec["config"])
        cfg["name"] = name or cfg["name"]
        return KerasLayer(self.g, spec["class_name"], cfg, self.weights, f"{self.path}/{cfg['name']}", self.scope,
                          self.used, cache=self.cache, masks=self.masks, names=self.names)

    def op(self, op_type: str, inputs: list[Any], attrs: dict[str, Any] | None = None, name: str | None = None,
           outputs: int | None = None, domain: str = "") -> Any:
        """Add an op; its name (``name`` or the op type) is uniquified in the scope (``Mul``, ``Mul_1``)."""
        handle = self.g.add_op(op_type, inputs, attrs, None, default_name=name or op_type, num_outputs=outputs,
                             domain=domain)
        return handle.out() if outputs is None else [handle.out(i) for i in range(outputs)]

    def has(self, path: str) -> bool:
        return f"{self.path}/{path}" in self.weights

    def var(self, path: str | tuple[str, ...], shape: tuple[int, ...], layout: str | None = None,
            trainable: bool = True) -> Tensor:
        """The variable Keras names ``<layer path>/<path>`` (``kernel``, ``lstm_cell/kernel``); a tuple
        gives the Keras 3 name then older ones (``("kernel", "depthwise_kernel")``), the file's is kept."""
        names = (path,) if isinstance(path, str) else path
        candidates = [f"{self.path}/{p}" for p in names]
        full = next((c for c in candidates if c in self.weights), candidates[0])
        if full not in self.weights:
            raise FileFormatError(f"{self.where()}: the file has no weight {full!r} (it has "
                                  f"{sorted(k for k in self.weights if k.startswith(self.scope + '/'))})")
        value = torch.from_numpy(np.array(self.weights[full], order="C", copy=True))
        if tuple(value.shape) != tuple(shape):
            raise FileFormatError(f"{self.where()}: weight {full!r} has shape {list(value.shape)}, the config "
                                  f"implies {list(shape)}")
        self.used.add(full)
        if full in self.cache:  # a shared layer's later call
            return self.cache[full]
        self.cache[full] = self.g.variable(self.names.get(full, full), value=value, scoped=False,
                                           trainable=trainable and bool(self.cfg.get("trainable", True)),
                                           layout=layout)
        return self.cache[full]

    def const(self, value: Any, name: str, dtype: str | None = "float32") -> Tensor:
        """A Constant op named ``name`` (uniquified in the scope) holding ``value`` as ``dtype``."""
        t = torch.as_tensor(np.asarray(value), dtype=_TORCH[dtype] if dtype else None)
        literal = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape), "data": t.reshape(-1).tolist()}
        return self.g.add_op("Constant", [], {"value": literal}, None, default_name=name).out()

    def fconst(self, value: Any, name: str, like: Tensor) -> Tensor:
        """A floating constant of ``like``'s dtype."""
        return self.const(np.asarray(value, dtype=np.float32), name, str(like.dtype or "float32"))

    def unsupported(self, what: str) -> UnknownOpError:
        return UnknownOpError(f"{self.where()}: {what} is not imported")


def channels_last(layer: KerasLayer) -> bool:
    return layer.cfg.get("data_format") in (None, "channels_last")


def to_channels_first(layer: KerasLayer, x: Tensor) -> Tensor:
    """``x`` in ONNX's channels-first layout (a transpose unless the layer is ``channels_first``)."""
    if not channels_last(layer):
        return x
    rank = len(x.shape)
    return layer.op("Transpose", [x], {"perm": [0, rank - 1] + list(range(1, rank - 1))}, "to_channels_first")


def from_channels_first(layer: KerasLayer, y: Tensor) -> Tensor:
    if not channels_last(layer):
        return y
    rank = len(y.shape)
    return layer.op("Transpose", [y], {"perm": [0] + list(range(2, rank)) + [1]}, "to_channels_last")


def tuple_n(v: Any, n: int) -> list[int]:
    return [int(v)] * n if isinstance(v, (int, float)) else [int(i) for i in v]


def same_pads(sizes: list[int | None], kernel: list[int], strides: list[int], dilations: list[int],
              where: str) -> list[int]:
    """Explicit ONNX pads (begins then ends) for TF's ``same`` padding: the extra cell goes at the end."""
    begins, ends = [], []
    for n, k, s, d in zip(sizes, kernel, strides, dilations):
        if n is None:
            raise UnknownOpError(f"{where}: 'same' padding needs static spatial sizes, got {sizes}")
        out = math.ceil(n / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        begins.append(total // 2)
        ends.append(total - total // 2)
    return begins + ends


def spatial_sizes(layer: KerasLayer, x: Tensor) -> list[int | None]:
    """The spatial sizes of a Keras activation (NHWC unless ``channels_first``)."""
    shape = list(x.shape)
    return shape[1:-1] if channels_last(layer) else shape[2:]


def reduce(layer: KerasLayer, op: str, x: Tensor, axes: list[int], keepdims: bool, name: str | None = None) -> Tensor:
    """A Reduce* op over ``axes``, axes as an attribute or an input as the opset requires."""
    attrs: dict[str, Any] = {"keepdims": int(keepdims)}
    ins: list[Any] = [x]
    since_input = 18 if op != "ReduceSum" else 13
    if layer.g.opset.get("", 17) >= since_input:
        ins.append(layer.const(axes, "axes", "int64"))
    else:
        attrs["axes"] = axes
    return layer.op(op, ins, attrs, name)


# Family modules register their translators on import.
from graphdnn.converters.keras_layers import (  # noqa: E402,F401
    applications,
    attention,
    conv,
    core,
    norm,
    pooling,
    preprocessing,
    reshape,
    rnn,
)
