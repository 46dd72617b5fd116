"""Layers in the style of TF1's ``tf.layers``: each opens a *layer scope* and adds primitive ops.

``dense(X, 300, name="hidden1")`` under ``name_scope("dnn")`` creates variables ``hidden1/kernel``
(``[in, out]``) and ``hidden1/bias`` and ops ``dnn/hidden1/MatMul``, ``dnn/hidden1/BiasAdd`` and,
with an activation, ``dnn/hidden1/Relu`` (or ``Elu``...), exactly the names TF1 gives. Every
argument but the input is a keyword, so ``functools.partial(batch_normalization, momentum=0.9)``
works as in the book. Images are NCHW (ONNX/PyTorch layout).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from graphdnn import initializers as init
from graphdnn import nn
from graphdnn.errors import GraphError
from graphdnn.graph import Tensor
from graphdnn.ops.registry import GRAPHDNN_DOMAIN

Activation = Callable[[Tensor], Tensor] | None


def _last_dim(x: Tensor, layer: str) -> int:
    if x.shape is None or x.shape[-1] is None:
        raise GraphError(f"layer {layer!r}: the last dimension of input {x.name!r} must be known, got {x.shape}")
    return int(x.shape[-1])


def _training_attrs(training: Any, layer: str) -> dict[str, int]:
    if training is None:
        return {}
    if isinstance(training, bool):
        return {"training_mode": int(training)}
    raise GraphError(
        f"layer {layer!r}: training={training!r}; graphdnn switches batch norm and dropout with "
        "model.train() / model.eval(), so pass nothing (or True/False to force a mode)"
    )


def dense(
    inputs: Tensor,
    units: int,
    *,
    activation: Activation = None,
    use_bias: bool = True,
    kernel_initializer: dict | None = None,
    bias_initializer: dict | None = None,
    kernel_regularizer: dict | None = None,
    bias_regularizer: dict | None = None,
    kernel_constraint: dict | None = None,
    trainable: bool = True,
    name: str | None = None,
) -> Tensor:
    """Fully connected layer ``activation(inputs @ kernel + bias)``; kernel is ``[in, out]``.

    Args:
        inputs: The layer's input, ``[..., in]`` with a known last dimension.
        units: The number of outputs (``out``).
        activation: Applied to the result (``graphdnn.nn.relu``...); None for none.
        use_bias: Whether to add a ``bias`` variable.
        kernel_initializer: Spec from ``graphdnn.initializers`` (default: Glorot uniform).
        bias_initializer: Spec from ``graphdnn.initializers`` (default: zeros).
        kernel_regularizer: Spec from ``graphdnn.regularizers``, attached to ``kernel``.
        bias_regularizer: Spec from ``graphdnn.regularizers``, attached to ``bias``.
        kernel_constraint: A max-norm spec (``graphdnn.regularizers.max_norm``) applied after each step.
        trainable: Whether the variables are trained.
        name: The layer's scope (default: a unique ``dense``, ``dense_1``...).

    Returns:
        The layer's output, ``[..., units]``.
    """
    g = inputs.graph
    with g.layer_scope(name, "dense") as scope:
        n_in = _last_dim(inputs, scope)
        kernel = g.variable("kernel", (n_in, units), dtype=inputs.dtype,
                            initializer=kernel_initializer or init.glorot_uniform(), trainable=trainable,
                            regularizer=kernel_regularizer, constraint=kernel_constraint, layout="io")
        y = g.add_op("MatMul", [inputs, kernel], name="MatMul").out()
        if use_bias:
            bias = g.variable("bias", (units,), dtype=inputs.dtype, initializer=bias_initializer or init.zeros(),
                              trainable=trainable, regularizer=bias_regularizer)
            y = g.add_op("Add", [y, bias], name="BiasAdd").out()
        return activation(y) if activation is not None else y


def _pair(v: int | Sequence[int], n: int = 2) -> list[int]:
    return [int(v)] * n if isinstance(v, int) else [int(x) for x in v]


def _padding(padding: str) -> str:
    p = padding.lower()
    if p not in ("valid", "same"):
        raise GraphError(f"padding must be 'valid' or 'same', not {padding!r}")
    return "SAME_UPPER" if p == "same" else "VALID"


def conv2d(
    inputs: Tensor,
    filters: int,
    kernel_size: int | Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: str = "valid",
    dilation_rate: int | Sequence[int] = 1,
    groups: int = 1,
    activation: Activation = None,
    use_bias: bool = True,
    kernel_initializer: dict | None = None,
    bias_initializer: dict | None = None,
    kernel_regularizer: dict | None = None,
    kernel_constraint: dict | None = None,
    trainable: bool = True,
    name: str | None = None,
) -> Tensor:
    """2-D convolution on NCHW input; kernel ``[out, in/groups, kh, kw]`` (ONNX/torch layout).

    Args:
        inputs: The layer's input, ``[N, C, H, W]`` with known channels ``C``.
        filters: The number of output channels.
        kernel_size: The window's height and width (one int for both).
        strides: The step in height and width (one int for both).
        padding: ``"valid"`` (no padding) or ``"same"`` (output size ``ceil(input / stride)``).
        dilation_rate: The spacing between kernel elements (one int for both).
        groups: The number of groups the channels are split into (``C`` and ``filters`` divisible by it).
        activation: Applied to the result (``graphdnn.nn.relu``...); None for none.
        use_bias: Whether to add a ``bias`` variable.
        kernel_initializer: Spec from ``graphdnn.initializers`` (default: Glorot uniform).
        bias_initializer: Spec from ``graphdnn.initializers`` (default: zeros).
        kernel_regularizer: Spec from ``graphdnn.regularizers``, attached to ``kernel``.
        kernel_constraint: A max-norm spec (``graphdnn.regularizers.max_norm``) applied after each step.
        trainable: Whether the variables are trained.
        name: The layer's scope (default: a unique ``conv2d``, ``conv2d_1``...).

    Returns:
        The layer's output, ``[N, filters, H', W']``.
    """
    g = inputs.graph
    with g.layer_scope(name, "conv2d") as scope:
        if inputs.shape is None or len(inputs.shape) != 4 or inputs.shape[1] is None:
            raise GraphError(f"layer {scope!r}: expects NCHW input with known channels, got {inputs.shape}")
        k = _pair(kernel_size)
        kernel = g.variable("kernel", (filters, inputs.shape[1] // groups, *k), dtype=inputs.dtype,
                            initializer=kernel_initializer or init.glorot_uniform(), trainable=trainable,
                            regularizer=kernel_regularizer, constraint=kernel_constraint, layout="oihw")
        ins = [inputs, kernel]
        if use_bias:
            ins.append(g.variable("bias", (filters,), dtype=inputs.dtype,
                                  initializer=bias_initializer or init.zeros(), trainable=trainable))
        attrs = {"kernel_shape": k, "strides": _pair(strides), "dilations": _pair(dilation_rate),
                 "group": groups, "auto_pad": _padding(padding)}
        y = g.add_op("Conv", ins, attrs, name="Conv2D").out()
        return activation(y) if activation is not None else y


def _pool(op: str, default: str, inputs: Tensor, pool_size, strides, padding, name) -> Tensor:
    g = inputs.graph
    with g.layer_scope(name, default):
        attrs = {"kernel_shape": _pair(pool_size), "strides": _pair(strides if strides is not None else pool_size),
                 "auto_pad": _padding(padding)}
        if op == "AveragePool":
            attrs["count_include_pad"] = 0
        return g.add_op(op, [inputs], attrs, name=op.replace("AveragePool", "AvgPool")).out()


def max_pool2d(inputs: Tensor, pool_size: int | Sequence[int] = 2, strides: int | Sequence[int] | None = None,
               *, padding: str = "valid", name: str | None = None) -> Tensor:
    """Max pooling over NCHW input (``strides`` defaults to ``pool_size``)."""
    return _pool("MaxPool", "max_pooling2d", inputs, pool_size, strides, padding, name)


def avg_pool2d(inputs: Tensor, pool_size: int | Sequence[int] = 2, strides: int | Sequence[int] | None = None,
               *, padding: str = "valid", name: str | None = None) -> Tensor:
    """Average pooling over NCHW input; padded cells are not counted (TF's behaviour)."""
    return _pool("AveragePool", "average_pooling2d", inputs, pool_size, strides, padding, name)


def global_avg_pool2d(inputs: Tensor, *, name: str | None = None) -> Tensor:
    g = inputs.graph
    with g.layer_scope(name, "global_average_pooling2d"):
        y = g.add_op("GlobalAveragePool", [inputs], name="GlobalAveragePool").out()
        return g.add_op("Flatten", [y], {"axis": 1}, name="Flatten").out()


def flatten(inputs: Tensor, *, name: str | None = None) -> Tensor:
    """Keep the batch dimension, flatten the rest (NCHW element order)."""
    g = inputs.graph
    with g.layer_scope(name, "flatten"):
        return g.add_op("Flatten", [inputs], {"axis": 1}, name="Flatten").out()


def batch_normalization(
    inputs: Tensor,
    *,
    axis: int = 1,
    momentum: float = 0.99,
    epsilon: float = 1e-3,
    center: bool = True,
    scale: bool = True,
    training: bool | None = None,
    beta_initializer: dict | None = None,
    gamma_initializer: dict | None = None,
    trainable: bool = True,
    name: str | None = None,
) -> Tensor:
    """Batch normalization over the channel ``axis`` (1 for NC and NCHW) with TF's defaults
    (momentum 0.99, epsilon 1e-3). ``moving = momentum * moving + (1 - momentum) * batch`` in
    training mode (``model.train()``); ``training=True/False`` forces a mode. ``center=False`` /
    ``scale=False`` keep beta / gamma fixed at 0 / 1 as non-trainable state."""
    g = inputs.graph
    with g.layer_scope(name, "batch_normalization") as scope:
        if axis not in (1, -1) or inputs.shape is None or inputs.shape[axis] is None:
            raise GraphError(f"layer {scope!r}: needs a known channel dimension at axis 1, input {inputs.shape}")
        if axis == -1 and len(inputs.shape) != 2:
            raise GraphError(f"layer {scope!r}: use axis=1 (NCHW); axis=-1 is only the same for 2-D inputs")
        c = int(inputs.shape[axis])
        dt = inputs.dtype
        gamma = g.variable("gamma", (c,), dtype=dt, initializer=gamma_initializer or init.ones(),
                           trainable=trainable and scale)
        beta = g.variable("beta", (c,), dtype=dt, initializer=beta_initializer or init.zeros(),
                          trainable=trainable and center)
        mean = g.variable("moving_mean", (c,), dtype=dt, initializer=init.zeros(), trainable=False)
        var = g.variable("moving_variance", (c,), dtype=dt, initializer=init.ones(), trainable=False)
        attrs = {"epsilon": float(epsilon), "momentum": float(momentum), **_training_attrs(training, scope)}
        return g.add_op("BatchNormalization", [inputs, gamma, beta, mean, var], attrs, name="FusedBatchNorm").out()


def dropout(inputs: Tensor, rate: float = 0.5, *, training: bool | None = None, name: str | None = None) -> Tensor:
    """Drop units with probability ``rate`` in training mode (scaling the rest by 1/(1-rate))."""
    g = inputs.graph
    if not 0.0 <= rate < 1.0:
        raise GraphError(f"dropout rate must be in [0, 1), got {rate}")
    with g.layer_scope(name, "dropout") as scope:
        ratio = g.constant(float(rate), name="rate", dtype=inputs.dtype)
        ins: list[Tensor | None] = [inputs, ratio]
        if training is not None:
            _training_attrs(training, scope)
            ins.append(g.constant(bool(training), name="training_mode"))
        return g.add_op("Dropout", ins, name="Dropout").out()


def alpha_dropout(inputs: Tensor, rate: float = 0.1, *, name: str | None = None) -> Tensor:
    """Alpha dropout for SELU networks: keeps mean and variance (Klambauer et al. 2017)."""
    g = inputs.graph
    with g.layer_scope(name, "alpha_dropout"):
        return g.add_op("AlphaDropout", [inputs], {"ratio": float(rate)}, name="AlphaDropout",
                        domain=GRAPHDNN_DOMAIN).out()


def activation(inputs: Tensor, fn: Callable[[Tensor], Tensor], *, name: str | None = None) -> Tensor:
    """Apply ``fn`` (``nn.relu``...) inside its own layer scope."""
    g = inputs.graph
    with g.layer_scope(name, "activation"):
        return fn(inputs)


__all__ = [
    "activation",
    "alpha_dropout",
    "avg_pool2d",
    "batch_normalization",
    "conv2d",
    "dense",
    "dropout",
    "flatten",
    "global_avg_pool2d",
    "max_pool2d",
    "nn",
]
