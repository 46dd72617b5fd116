"""Names: the mapping between graph names, tensor names, state-dict keys and Python identifiers.

* An **op name** is a ``/``-separated path: ``dnn/hidden1/MatMul``, ``hidden1/kernel``.
* A **tensor name** is ``<op name>:<output index>``: ``dnn/hidden4/Relu:0``. ONNX value names and
  initializer names are the same strings (an initializer is named after its variable op).
* A **state-dict key** replaces each ``/`` by ``.`` after escaping every segment, so the module
  hierarchy mirrors the scopes (``hidden1/kernel`` -> ``hidden1.kernel``). Escaping is percent-style
  and reversible: ``%`` -> ``%25``, ``.`` -> ``%2E``, an empty segment -> ``%``, and a segment that
  would shadow an ``nn.Module`` attribute (``training``, ``forward``...) gets its first character
  percent-encoded. ``graph_name(state_key(n)) == n`` for every name.
"""

from __future__ import annotations

import keyword
import re

import torch.nn as nn

from graphdnn.errors import GraphError

_RESERVED = frozenset(dir(nn.Module)) | {"training", "graph", "code", "source_graph"}
_TENSOR_RE = re.compile(r"^(.*):(\d+)$")


def split_tensor_name(name: str) -> tuple[str, int]:
    """``"dnn/hidden1/Relu:0"`` -> ``("dnn/hidden1/Relu", 0)``; a bare op name means output 0."""
    m = _TENSOR_RE.match(name)
    if m:
        return m.group(1), int(m.group(2))
    return name, 0


def tensor_name(op_name: str, index: int = 0) -> str:
    """The name of output ``index`` of op ``op_name``."""
    return f"{op_name}:{index}"


def _escape_segment(seg: str) -> str:
    if seg == "":
        return "%"
    out = seg.replace("%", "%25").replace(".", "%2E")
    if out in _RESERVED or out.startswith("_"):
        out = f"%{ord(out[0]):02X}{out[1:]}"
    return out


def _unescape_segment(seg: str) -> str:
    if seg == "%":
        return ""
    return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), seg)


def state_key(name: str) -> str:
    """The state-dict key (``.``-separated module path) of a variable's graph name."""
    return ".".join(_escape_segment(s) for s in name.split("/"))


def graph_name(key: str) -> str:
    """Inverse of ``state_key``."""
    return "/".join(_unescape_segment(s) for s in key.split("."))


def identifier(name: str, prefix: str = "v") -> str:
    """A safe Python identifier derived from any name (used only for generated-code readability)."""
    ident = re.sub(r"\W", "_", name.encode("ascii", "replace").decode("ascii")).strip("_").lower()
    if not ident or not ident[0].isalpha():
        ident = f"{prefix}_{ident}"
    if keyword.iskeyword(ident):
        ident += "_"
    return ident[:60]


def check_name(name: str, what: str = "name") -> str:
    """Validate a user-supplied op/scope name: non-empty string without ``:`` (reserved for outputs)."""
    if not isinstance(name, str) or not name:
        raise GraphError(f"{what} must be a non-empty string, got {name!r}")
    if ":" in name and _TENSOR_RE.match(name):
        raise GraphError(f"{what} {name!r} looks like a tensor name; ':<index>' is reserved for outputs")
    return name
