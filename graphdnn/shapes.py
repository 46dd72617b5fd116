"""Shape and dtype inference by running an op's lowering on ``meta`` tensors (no data, no compute).

Unknown dims (``None``, the batch) are stood in for by a sentinel size; output dims that are
multiples of it are unknown again. Inputs an op needs as values (``OpDef.static_inputs``) are read
from constants when they are constants; otherwise the output shape is left unknown.

Lowerings run with ``meta`` as the default device, so what one creates from static sizes
(``ConstantOfShape``, windows...) is never allocated here, whatever size a file asks for.

Meta execution costs milliseconds per call (PyTorch runs Python reference decompositions), so
results are memoized by (op, attributes, input shapes and dtypes): a network of repeated blocks
infers each distinct block once.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from graphdnn import graph_hooks
from graphdnn.dtypes import STRING, dtype_name, torch_dtype
from graphdnn.errors import GraphError
from graphdnn.graph import ValueInfo
from graphdnn.names import split_tensor_name
from graphdnn.ops.registry import lookup
from graphdnn.small_dtypes import decode
from graphdnn.subgraphs import has_subgraphs

if TYPE_CHECKING:
    from graphdnn.graph import Graph, Op
    from graphdnn.ops.registry import OpDef

_SENTINEL = 7919  # a prime no real layer width is a multiple of


def constant_value(graph: Graph, ref: str) -> torch.Tensor | None:
    """The value of tensor ``ref`` when it is a compile-time constant (a Constant op, or a
    non-trainable variable of an integer dtype such as an imported shape), else None."""
    op_name, _ = split_tensor_name(ref)
    op = graph.nx.nodes[op_name]["op"]
    if op.type == "Constant" and op.domain == "":
        return lookup("Constant").lower(**op.attrs)
    if op.is_variable and not op.attrs["trainable"] and not torch_dtype(op.attrs["dtype"]).is_floating_point:
        return graph.values.get(op_name)
    return None


_MEMO: dict[tuple, list[tuple[Any, Any]]] = {}
_MEMO_LIMIT = 100_000


def infer(graph: Graph, op: Op, opdef: OpDef, count: int) -> list[ValueInfo]:
    """Output ValueInfos of ``op``; raises GraphError when known input shapes are incompatible."""
    key = _memo_key(graph, op, opdef, count)
    if key is not None and key in _MEMO:
        return [ValueInfo(shape, dtype) for shape, dtype in _MEMO[key]]
    infos = _infer(graph, op, opdef, count)
    if key is not None:
        if len(_MEMO) >= _MEMO_LIMIT:
            _MEMO.clear()
        _MEMO[key] = [(i.shape, i.dtype) for i in infos]
    return infos


def _memo_key(graph: Graph, op: Op, opdef: OpDef, count: int) -> tuple | None:
    """A key for ops whose inference depends only on input shapes/dtypes and attributes
    (``repr`` of the attributes: cheap, and a spelling difference only costs a cache miss)."""
    if opdef.static_inputs or opdef.infer is not None or not op.inputs or has_subgraphs(op) or opdef.region:
        return None
    ins = tuple(None if ref is None else _key_of(_info(graph, ref)) for ref in op.inputs)
    return (opdef.domain, opdef.op_type, opdef.since_version, count, repr(op.attrs), ins)


def _key_of(info: ValueInfo) -> tuple:
    return (info.shape, info.dtype)


def _infer(graph: Graph, op: Op, opdef: OpDef, count: int) -> list[ValueInfo]:
    unknown = [ValueInfo(None, None) for _ in range(count)]
    if has_subgraphs(op) or opdef.region is not None:  # control flow, Gradient: not from inputs alone
        return unknown
    if opdef.infer is not None:  # the op's own rule, ``infer(graph, op) -> [(shape, dtype)]``
        infos = [ValueInfo(shape, dtype) for shape, dtype in opdef.infer(graph, op)][:count]
        return infos + unknown[len(infos):]
    args: list[Any] = []
    for i, ref in enumerate(op.inputs):
        if ref is None:
            args.append(None)
            continue
        if i in opdef.static_inputs:
            value = constant_value(graph, ref)
            if value is None:
                return unknown
            args.append(decode(value).tolist())  # int4 & co. as their values
            continue
        info = _info(graph, ref)
        if info.shape is None or info.dtype is None or info.dtype == STRING:
            return unknown
        shape = [_SENTINEL if d is None else d for d in info.shape]
        args.append(torch.empty(shape, dtype=torch_dtype(info.dtype), device="meta"))
    kwargs = dict(op.attrs)
    if opdef.uses_training:
        kwargs["training"] = False
    if opdef.num_outputs is None:
        kwargs["_outputs"] = count
    try:
        with torch.device("meta"):  # what a lowering creates from static sizes is never allocated here
            result = opdef.lower(*args, **kwargs)
    except (NotImplementedError, RuntimeError) as exc:
        if "meta" in str(exc).lower() or "data-dependent" in str(exc).lower():
            return unknown
        raise _shape_error(graph, op, exc) from exc
    except (ValueError, TypeError, IndexError) as exc:
        raise _shape_error(graph, op, exc) from exc
    results = result if isinstance(result, tuple) else (result,)
    infos = []
    for r in results[:count]:
        if not isinstance(r, torch.Tensor):
            infos.append(ValueInfo(None, None))
            continue
        dims = tuple(None if (d >= _SENTINEL and d % _SENTINEL == 0) else int(d) for d in r.shape)
        infos.append(ValueInfo(dims, dtype_name(r.dtype)))
    return infos + unknown[len(infos):]


def _info(graph: Graph, ref: str) -> ValueInfo:
    op_name, index = split_tensor_name(ref)
    return graph.nx.nodes[op_name]["op"].outputs[index]


def _shape_error(graph: Graph, op: Op, exc: Exception) -> GraphError:
    described = ", ".join(
        "None" if r is None else f"{r!r} {_info(graph, r).shape} {_info(graph, r).dtype}" for r in op.inputs
    )
    return GraphError(f"op {op.name!r} ({op.type}): incompatible inputs [{described}]: {exc}")


def fold_bytes(op: Op, opdef: OpDef, args: list[Any], kwargs: dict[str, Any]) -> int:
    """Bytes that folding ``op`` (computing ``opdef.lower(*args, **kwargs)`` on constants) will allocate,
    found without computing it: from the op's known output shapes, else by running the lowering on
    ``meta`` tensors (``Range`` from its three scalars); 0 when it cannot be told. A negative or
    non-integer dimension raises ``FileFormatError`` naming the op."""
    from graphdnn.budget import tensor_bytes

    what = f"op {op.name!r} ({op.type})"
    infos = op.outputs
    if infos and all(i.shape is not None and None not in i.shape and i.dtype not in (None, STRING) for i in infos):
        try:
            return sum(tensor_bytes(i.shape, torch_dtype(i.dtype).itemsize, what) for i in infos)
        except GraphError:  # a dtype without a dense size (sequences...)
            pass
    if op.type == "Range" and op.domain == "" and len(args) == 3 and all(isinstance(a, torch.Tensor) for a in args):
        start, limit, delta = (float(a.reshape(-1)[0]) if a.numel() == 1 else 0.0 for a in args)
        if delta == 0 or not all(map(math.isfinite, (start, limit, delta))):
            return 0
        return max(math.ceil((limit - start) / delta), 0) * args[0].element_size()
    meta_args = [torch.empty_like(a, device="meta") if isinstance(a, torch.Tensor) else a for a in args]
    try:
        with torch.device("meta"), torch.no_grad():
            result = opdef.lower(*meta_args, **kwargs)
    except Exception:  # noqa: BLE001 - data-dependent or unusual lowerings: size unknown beforehand
        return 0
    results = result if isinstance(result, tuple) else (result,)
    return sum(r.numel() * r.element_size() for r in results if isinstance(r, torch.Tensor))


# Graph.add_op builds with this operator set: the registry's definitions, outputs inferred here
graph_hooks.install(graph_hooks.OPS, (lookup, infer))
