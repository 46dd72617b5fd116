"""Built-in operators. Importing this package registers them; see ``registry`` for the contract."""

from graphdnn.ops import (  # noqa: F401
    activations,
    attention,
    autodiff,
    control,
    conv,
    detection,
    elementwise,
    image,
    linalg,
    loss,
    nn,
    norm,
    preview,
    project,
    quant,
    random_ops,
    reduce,
    resize,
    rnn,
    sequence,
    signal,
    stateful,
    strings,
    tensor,
)
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
