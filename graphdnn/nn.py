"""Functional ops on ``Tensor`` handles, named like TF1's ``tf.nn`` ops (``Relu``, ``Elu``...).

Each call adds one op to the tensor's graph, in the current name scope; ``name`` overrides the
default op name. These are also the activations layers accept (``activation=nn.elu``).
"""

from __future__ import annotations

from collections.abc import Sequence

from graphdnn.graph import Graph, Tensor, get_default_graph
from graphdnn.ops.registry import GRAPHDNN_DOMAIN


def _op(op_type: str, inputs: Sequence[Tensor | None], attrs: dict | None = None, name: str | None = None,
        default: str | None = None, domain: str = "") -> Tensor:
    graph = next(t.graph for t in inputs if t is not None)
    return graph.add_op(op_type, list(inputs), attrs, name, domain=domain, default_name=default).out()


def relu(x: Tensor, name: str | None = None) -> Tensor:
    return _op("Relu", [x], name=name, default="Relu")


def leaky_relu(x: Tensor, alpha: float = 0.2, name: str | None = None) -> Tensor:
    """TF's default alpha is 0.2; the book uses 0.01."""
    return _op("LeakyRelu", [x], {"alpha": float(alpha)}, name, "LeakyRelu")


def elu(x: Tensor, alpha: float = 1.0, name: str | None = None) -> Tensor:
    return _op("Elu", [x], {"alpha": float(alpha)}, name, "Elu")


def selu(x: Tensor, name: str | None = None) -> Tensor:
    return _op("Selu", [x], name=name, default="Selu")


def tanh(x: Tensor, name: str | None = None) -> Tensor:
    return _op("Tanh", [x], name=name, default="Tanh")


def sigmoid(x: Tensor, name: str | None = None) -> Tensor:
    return _op("Sigmoid", [x], name=name, default="Sigmoid")


def softplus(x: Tensor, name: str | None = None) -> Tensor:
    return _op("Softplus", [x], name=name, default="Softplus")


def softmax(x: Tensor, axis: int = -1, name: str | None = None) -> Tensor:
    return _op("Softmax", [x], {"axis": axis}, name, "Softmax")


def log_softmax(x: Tensor, axis: int = -1, name: str | None = None) -> Tensor:
    return _op("LogSoftmax", [x], {"axis": axis}, name, "LogSoftmax")


def identity(x: Tensor, name: str | None = None) -> Tensor:
    return _op("Identity", [x], name=name, default="Identity")


def stop_gradient(x: Tensor, name: str | None = None) -> Tensor:
    """Forward unchanged, block gradients (TF's ``tf.stop_gradient``)."""
    return _op("StopGradient", [x], name=name, default="StopGradient", domain=GRAPHDNN_DOMAIN)


def matmul(a: Tensor, b: Tensor, name: str | None = None) -> Tensor:
    return _op("MatMul", [a, b], name=name, default="MatMul")


def add(a: Tensor, b: Tensor, name: str | None = None) -> Tensor:
    return _op("Add", [a, b], name=name, default="Add")


def clip_by_value(x: Tensor, lo: float, hi: float, name: str | None = None) -> Tensor:
    g = x.graph
    return _op("Clip", [x, g.constant(lo, dtype=x.dtype), g.constant(hi, dtype=x.dtype)], name=name,
               default="clip_by_value")


def _reduce(op_type: str, input_since: int, x: Tensor, axis: int | list[int] | None, keepdims: bool,
            name: str | None, default: str) -> Tensor:
    """ONNX moved ``axes`` from an attribute to an input (ReduceSum at 13, the others at 18)."""
    attrs: dict = {"keepdims": int(keepdims)}
    inputs: list[Tensor | None] = [x]
    if axis is not None:
        axes = [axis] if isinstance(axis, int) else list(axis)
        if x.graph.opset.get("", 17) >= input_since:
            inputs.append(x.graph.constant(axes, dtype="int64"))
        else:
            attrs["axes"] = axes
    return _op(op_type, inputs, attrs, name, default)


def reduce_mean(x: Tensor, axis: int | list[int] | None = None, keepdims: bool = False,
                name: str | None = None) -> Tensor:
    return _reduce("ReduceMean", 18, x, axis, keepdims, name, "Mean")


def reduce_sum(x: Tensor, axis: int | list[int] | None = None, keepdims: bool = False,
               name: str | None = None) -> Tensor:
    return _reduce("ReduceSum", 13, x, axis, keepdims, name, "Sum")


def argmax(x: Tensor, axis: int = -1, name: str | None = None) -> Tensor:
    return _op("ArgMax", [x], {"axis": axis, "keepdims": 0}, name, "ArgMax")


def equal(a: Tensor, b: Tensor, name: str | None = None) -> Tensor:
    return _op("Equal", [a, b], name=name, default="Equal")


def cast(x: Tensor, dtype: str, name: str | None = None) -> Tensor:
    from graphdnn.dtypes import onnx_code

    return _op("Cast", [x], {"to": onnx_code(dtype)}, name, "Cast")


def sparse_softmax_cross_entropy_with_logits(labels: Tensor, logits: Tensor, name: str | None = None) -> Tensor:
    """Per-example cross entropy of integer ``labels`` against ``logits`` (TF's op of that name)."""
    return _op("SoftmaxCrossEntropyLoss", [logits, labels], {"reduction": "none"}, name,
               "SparseSoftmaxCrossEntropyWithLogits")


def in_top_k(predictions: Tensor, targets: Tensor, k: int = 1, name: str | None = None) -> Tensor:
    """Whether each target is the top prediction (``k == 1``; TF's ``in_top_k``): an ``ArgMax``
    followed by an ``Equal`` named ``name`` (default ``InTopK``, uniquified)."""
    if k != 1:
        from graphdnn.errors import GraphError

        raise GraphError("in_top_k supports k=1; for k > 1 compare against TopK indices")
    best = argmax(predictions, axis=-1)
    labels = targets if targets.dtype == "int64" else cast(targets, "int64")
    return _op("Equal", [best, labels], name=name, default="InTopK")


def placeholder(name: str, shape: tuple[int | None, ...] | None, dtype: str = "float32",
                graph: Graph | None = None) -> Tensor:
    """A graph input in the default graph (``graphdnn.placeholder("X", (None, 784))``)."""
    return (graph or get_default_graph()).placeholder(name, shape, dtype)
