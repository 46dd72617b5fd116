"""Signal processing: DFT (opsets 17, 20) and the Hann/Hamming/Blackman windows."""

from __future__ import annotations

import math

import torch

from graphdnn.ops.registry import register
from graphdnn.ops.static import as_ints, dtype_from_onnx


def _dft(x: torch.Tensor, dft_length, axis: int, inverse: int, onesided: int) -> torch.Tensor:
    """Input [..., 1] (real) or [..., 2] (complex); output [..., 2] (or [..., 1] for inverse onesided)."""
    axis = axis % x.dim()
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    if x.shape[-1] == 1:
        signal = x[..., 0].to(work)
    else:
        signal = torch.complex(x[..., 0].to(work), x[..., 1].to(work))
    if dft_length is not None:
        n = as_ints(dft_length)[0]
    elif inverse and onesided:
        n = 2 * (x.shape[axis] - 1)
    else:
        n = x.shape[axis]
    if inverse:
        if onesided:
            out = torch.fft.irfft(signal, n=n, dim=axis).unsqueeze(-1)
            return out.to(x.dtype)
        out = torch.fft.ifft(signal, n=n, dim=axis)
    else:
        out = torch.fft.fft(signal, n=n, dim=axis)
        if onesided:
            out = out.narrow(axis, 0, n // 2 + 1)
    return torch.stack([out.real, out.imag], dim=-1).to(x.dtype)


@register("DFT", since=17, static_inputs=(1,))
def dft_v17(x: torch.Tensor, dft_length=None, *, axis: int = 1, inverse: int = 0, onesided: int = 0):
    return _dft(x, dft_length, axis, inverse, onesided)


@register("DFT", since=20, static_inputs=(1, 2))
def dft(x: torch.Tensor, dft_length=None, axis=None, *, inverse: int = 0, onesided: int = 0):
    return _dft(x, dft_length, as_ints(axis)[0] if axis is not None else -2, inverse, onesided)


def _window(size, periodic: int, output_datatype: int, terms: list[float]) -> torch.Tensor:
    n = as_ints(size)[0]
    denom = n if periodic else n - 1
    k = torch.arange(n, dtype=torch.float64)
    w = torch.zeros(n, dtype=torch.float64)
    for i, c in enumerate(terms):
        w = w + ((-1) ** i) * c * torch.cos(2 * math.pi * i * k / denom)
    return w.to(dtype_from_onnx(output_datatype))


@register("HannWindow", since=17, static_inputs=(0,))
def hann_window(size, *, output_datatype: int = 1, periodic: int = 1) -> torch.Tensor:
    return _window(size, periodic, output_datatype, [0.5, 0.5])


@register("HammingWindow", since=17, static_inputs=(0,))
def hamming_window(size, *, output_datatype: int = 1, periodic: int = 1) -> torch.Tensor:
    return _window(size, periodic, output_datatype, [25 / 46, 21 / 46])


@register("BlackmanWindow", since=17, static_inputs=(0,))
def blackman_window(size, *, output_datatype: int = 1, periodic: int = 1) -> torch.Tensor:
    return _window(size, periodic, output_datatype, [0.42, 0.5, 0.08])
