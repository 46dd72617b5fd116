"""Protobuf classes for the TensorFlow messages graphdnn reads (schema: ``tf_wire.proto``).

The classes are built at import from the descriptor protoc wrote (``_descriptor.py``, see ``generate.py``),
in a private descriptor pool: they parse TF's bytes with the installed protobuf runtime, whatever its
version, and never clash with TensorFlow's own classes when both are loaded.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from graphdnn.converters.tf_protos._descriptor import SERIALIZED

__all__ = ["message_class", "POOL"]

POOL = descriptor_pool.DescriptorPool()
POOL.Add(descriptor_pb2.FileDescriptorProto.FromString(SERIALIZED))
_PACKAGE = "graphdnn.tf."
_CLASSES: dict[str, Any] = {}


def message_class(name: str) -> Any:
    """The message class of ``name`` (``"MetaGraphDef"``, ``"TensorProto"``, ``"TrackableObjectGraph"``...)."""
    cls = _CLASSES.get(name)
    if cls is None:
        descriptor = POOL.FindMessageTypeByName(_PACKAGE + name)
        get = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.22
        cls = get(descriptor) if get is not None else message_factory.MessageFactory(POOL).GetPrototype(descriptor)
        _CLASSES[name] = cls
    return cls
