"""Built-in operators. Importing this package registers them; see ``registry`` for the contract."""

from graphdnn.ops import activations, elementwise, linalg, nn, project, reduce, tensor  # noqa: F401
from graphdnn.ops.registry import (
    DEFAULT_OPSET,
    GRAPHDNN_DOMAIN,
    ONNX_DOMAIN,
    OpDef,
    is_known,
    known_ops,
    lookup,
    register,
)

__all__ = [
    "DEFAULT_OPSET",
    "GRAPHDNN_DOMAIN",
    "ONNX_DOMAIN",
    "OpDef",
    "is_known",
    "known_ops",
    "lookup",
    "register",
]
