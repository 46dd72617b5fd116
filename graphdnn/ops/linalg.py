"""Matrix products: MatMul, Gemm, Einsum, MatMulInteger, Det (ONNX semantics)."""

from __future__ import annotations

import torch

from graphdnn.ops._util import narrow, widen
from graphdnn.ops.registry import register


@register("MatMul", since=1)
def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dtype, (wa, wb) = widen(a, b)
    return narrow(torch.matmul(wa, wb), dtype)


@register("Gemm", since=1)
def gemm(
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor | None = None,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    transA: int = 0,
    transB: int = 0,
    broadcast: int = 0,
) -> torch.Tensor:
    """``alpha * A' @ B' + beta * C`` with C broadcast to (M, N); C is optional from opset 11."""
    dtype, (a, b, c) = widen(a, b, c)
    a = a.transpose(0, 1) if transA else a
    b = b.transpose(0, 1) if transB else b
    y = torch.matmul(a, b)
    if alpha != 1.0:
        y = y * alpha if y.dtype.is_floating_point else y * int(alpha)
    if c is not None:
        if beta != 1.0:
            c = c * beta if c.dtype.is_floating_point else c * int(beta)
        y = y + c
    return narrow(y.to(a.dtype), dtype)


@register("Einsum", since=12)
def einsum(*xs: torch.Tensor, equation: str) -> torch.Tensor:
    dtype, wide = widen(*xs)
    if all(x.dim() == 0 for x in wide):  # "->", ",->": torch.einsum rejects 0-d operands
        out = wide[0]
        for x in wide[1:]:
            out = out * x
        return narrow(out, dtype)
    return narrow(torch.einsum(equation.replace(" ", ""), *wide), dtype)


@register("MatMulInteger", since=10)
def matmul_integer(
    a: torch.Tensor,
    b: torch.Tensor,
    a_zero_point: torch.Tensor | None = None,
    b_zero_point: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integer product in int32 after subtracting the zero points (per-tensor, per-row/column)."""
    a32 = a.to(torch.int32)
    b32 = b.to(torch.int32)
    if a_zero_point is not None:
        za = a_zero_point.to(torch.int32)
        if za.dim() == 1 and za.numel() > 1:  # per row of A
            za = za.reshape(-1, 1)
        a32 = a32 - za
    if b_zero_point is not None:
        b32 = b32 - b_zero_point.to(torch.int32)
    return torch.matmul(a32.to(torch.int64), b32.to(torch.int64)).to(torch.int32)


@register("Det", since=11)
def det(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.det(x)
