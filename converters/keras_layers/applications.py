"""Layers that ``keras.applications`` define for their own models: ConvNeXt's ``LayerScale`` and
InceptionResNetV2's ``CustomScaleLayer``."""

from __future__ import annotations

import re

from graphdnn.converters.keras_layers import KerasLayer, translates

from graphdnn.graph import Tensor


@translates("LayerScale")
def layer_scale(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    """``x * gamma`` (ConvNeXt), gamma the per-channel weight Keras names ``variable``."""
    # An unnamed Keras weight is "variable", "variable_1"... (a process-wide counter the legacy .h5 keeps)
    pattern = re.compile(re.escape(layer.path) + r"/variable(_\d+)?")
    names = [k[len(layer.path) + 1:] for k in layer.weights if pattern.fullmatch(k)]
    gamma = layer.var(names[0] if len(names) == 1 else "variable", (int(layer.cfg["projection_dim"]),))
    return layer.op("Mul", [xs[0], gamma], name="layer_scale")


@translates("CustomScaleLayer")
def custom_scale(layer: KerasLayer, xs: list[Tensor]) -> Tensor:
    """``inputs[0] + inputs[1] * scale`` (InceptionResNetV2's residual scaling)."""
    scaled = layer.op("Mul", [xs[1], layer.fconst(float(layer.cfg["scale"]), "scale", xs[1])])
    return layer.op("Add", [xs[0], scaled])
