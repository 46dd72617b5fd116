"""Names: the mapping between graph names, tensor names, state-dict keys and Python identifiers.

* An **op name** is a ``/``-separated path: ``dnn/hidden1/MatMul``, ``hidden1/kernel``.
* A **tensor name** is ``<op name>:<output index>``: ``dnn/hidden4/Relu:0``. ONNX value names and
  initializer names are the same strings (an initializer is named after its variable op).
* A **state-dict key** replaces each ``/`` by ``.`` after escaping every segment, so the module
  hierarchy mirrors the scopes (``hidden1/kernel`` -> ``hidden1.kernel``). Escaping is URL-style
  percent-encoding of the UTF-8 bytes of every character outside letters, digits and
  ``_-+=@#$&()[]{},;:!?<>|~^*`` and space (so ``.`` -> ``%2E``, ``%`` -> ``%25``, quotes, backslashes
  and control characters never reach generated code; a segment whose NFKC form differs, such as
  ``º``, keeps only its ASCII characters unescaped, since Python reads identifiers in NFKC); an empty
  segment is ``%``, and a segment that
  would shadow an ``nn.Module`` attribute (``training``, ``forward``...), is a Python keyword or starts
  with ``_`` gets its
  first character encoded. ``graph_name(state_key(n)) == n`` for every name.
"""

from __future__ import annotations

import builtins
import functools
import keyword
import re
import unicodedata
import urllib.parse

import torch.nn as nn

from graphdnn.errors import GraphError

_RESERVED = frozenset(dir(nn.Module)) | {"training", "graph", "code", "source_graph"}
# names generated code relies on: an argument or value named like one would shadow it
_CODE_GLOBALS = frozenset(dir(builtins)) | {"self", "torch", "operator", "math", "fx_pytree", "pytree", "device",
                                            "inf", "nan", "builtins"}
_TENSOR_RE = re.compile(r"\A(.*):(\d+)\Z", re.DOTALL)


def split_tensor_name(name: str) -> tuple[str, int]:
    """``"dnn/hidden1/Relu:0"`` -> ``("dnn/hidden1/Relu", 0)``; a bare op name means output 0."""
    op, sep, index = name.rpartition(":")
    if sep and index.isascii() and index.isdigit():
        return op, int(index)
    return name, 0


def tensor_name(op_name: str, index: int = 0) -> str:
    """The name of output ``index`` of op ``op_name``."""
    return f"{op_name}:{index}"


_SAFE = frozenset("_-+=@#$&()[]{},;:!?<>|~^* ")


def _encode_char(ch: str) -> str:
    return "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))


_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")


def _escape_segment(seg: str) -> str:
    if _PLAIN.fullmatch(seg) and seg not in _RESERVED and not keyword.iskeyword(seg):
        return seg
    if seg == "":
        return "%"
    out = "".join(ch if (ch.isalnum() and ch.isprintable()) or ch in _SAFE else _encode_char(ch) for ch in seg)
    if not out.isascii() and unicodedata.normalize("NFKC", out) != out:
        # Python reads identifiers in NFKC (``self.º`` is ``self.o``): keep only ASCII as it is
        out = "".join(ch if ch.isascii() and (ch.isalnum() or ch in _SAFE) else _encode_char(ch) for ch in seg)
    if out in _RESERVED or out.startswith("_") or keyword.iskeyword(out):
        out = _encode_char(out[0]) + out[1:]
    return out


def _unescape_segment(seg: str) -> str:
    if seg == "%":
        return ""
    return urllib.parse.unquote(seg, errors="surrogatepass")


@functools.lru_cache(maxsize=65536)
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
    ident = ident[:60]
    if keyword.iskeyword(ident) or ident in _CODE_GLOBALS:
        ident += "_"
    return ident


def check_name(name: str, what: str = "name") -> str:
    """Validate a user-supplied op/scope name: non-empty string without ``:`` (reserved for outputs)."""
    if not isinstance(name, str) or not name:
        raise GraphError(f"{what} must be a non-empty string, got {name!r}")
    if ":" in name and _TENSOR_RE.match(name):
        raise GraphError(f"{what} {name!r} looks like a tensor name; ':<index>' is reserved for outputs")
    return name
