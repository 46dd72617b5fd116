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
* A name is Unicode text that UTF-8 can encode: a lone surrogate (``"\\ud800"``) is refused where a
  name is made (``check_name``) and where a graph is read from JSON or written to it.
* Generated code never spells a name: only ``identifier`` (ASCII, for readability), ``state_key``
  paths, and attribute keywords that pass ``is_identifier`` reach it.
"""

from __future__ import annotations

import builtins
import functools
import json
import keyword
import re
import unicodedata
import urllib.parse
from typing import Any

import torch.fx as fx
import torch.nn as nn

from graphdnn.errors import GraphError

# graphdnn's own attributes of a compiled module (a test checks this list against ``CompiledGraph``)
_COMPILED_ATTRIBUTES = frozenset({"source_graph", "input_names", "output_names", "variable_names", "check_inputs",
                                  "summary", "variable", "graph_state_dict", "regularization_loss",
                                  "apply_constraints"})


@functools.cache
def _reserved() -> frozenset[str]:
    """The attributes of a compiled module: ``nn.Module``'s and torch.fx ``GraphModule``'s (its class and an
    instance: torch versions add fields) and graphdnn's own. A path segment spelled like one is escaped,
    so that a variable neither hides an attribute nor fails to become a child module."""
    probe = fx.GraphModule(nn.Module(), fx.Graph())
    return frozenset(dir(fx.GraphModule)) | frozenset(vars(probe)) | _COMPILED_ATTRIBUTES


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
    if _PLAIN.fullmatch(seg) and seg not in _reserved() and not keyword.iskeyword(seg):
        return seg
    if seg == "":
        return "%"
    out = "".join(ch if (ch.isalnum() and ch.isprintable()) or ch in _SAFE else _encode_char(ch) for ch in seg)
    if not out.isascii() and unicodedata.normalize("NFKC", out) != out:
        # Python reads identifiers in NFKC (``self.º`` is ``self.o``): keep only ASCII as it is
        out = "".join(ch if ch.isascii() and (ch.isalnum() or ch in _SAFE) else _encode_char(ch) for ch in seg)
    if out in _reserved() or out.startswith("_") or keyword.iskeyword(out):
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


def is_identifier(text: object) -> bool:
    """Whether ``text`` may be written into generated Python source as it is: an ASCII Python
    identifier that is not a keyword. Anything else read from a file stays data."""
    return isinstance(text, str) and text.isascii() and text.isidentifier() and not keyword.iskeyword(text)


def check_text(text: str, what: str = "name") -> str:
    """Refuse a string that is not Unicode text UTF-8 can encode (a lone surrogate such as ``"\\ud800"``):
    no file format graphdnn writes (safetensors, ONNX) can store it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise GraphError(
            f"{what} {text!r} holds a lone surrogate ({text[exc.start]!r} at position {exc.start}), which is not "
            "Unicode text and cannot be saved; use a valid string"
        ) from None
    return text


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE_BYTES = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}|\xed[\xa0-\xbf]")


def json_lone_surrogate(text: str | bytes, doc: Any = None) -> str | None:
    """Where the JSON document ``text`` (``doc``, when already parsed) holds a string with a lone
    surrogate (JSON can spell one, ``"\\ud800"``; no UTF-8 file can hold it), such as
    ``"ops[2].attrs key 'a\\ud800'"``; None when nowhere. Only a text that could hold one is walked."""
    if isinstance(text, str):
        if (text.isascii() or _is_utf8(text)) and not _SURROGATE_ESCAPE.search(text):
            return None
    elif not _SURROGATE_BYTES.search(text):
        return None
    if doc is None:
        doc = json.loads(text)
    stack: list[tuple[str, Any]] = [("", doc)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if not _is_utf8(item):
                return f"{where or 'the document'}: {item!r}"
        elif isinstance(item, dict):
            for key, value in item.items():
                if isinstance(key, str) and not _is_utf8(key):
                    return f"{where or 'the document'} key {key!r}"
                stack.append((f"{where}.{key}" if where else str(key), value))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", value) for i, value in enumerate(item))
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_name(name: str, what: str = "name") -> str:
    """Validate a user-supplied op/scope name: non-empty Unicode text (no lone surrogates) without ``:``
    (reserved for outputs)."""
    if not isinstance(name, str) or not name:
        raise GraphError(f"{what} must be a non-empty string, got {name!r}")
    check_text(name, what)
    if ":" in name and _TENSOR_RE.match(name):
        raise GraphError(f"{what} {name!r} looks like a tensor name; ':<index>' is reserved for outputs")
    return name
