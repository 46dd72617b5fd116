"""Signal processing: DFT (opsets 17, 20), STFT, MelWeightMatrix and the Hann/Hamming/Blackman windows."""

from __future__ import annotations

import math

import torch

from graphdnn.errors import InputError
from graphdnn.ops._util import compute_dtype
from graphdnn.ops.registry import register
from graphdnn.ops.static import as_float, as_ints, dtype_from_onnx


def _dft(x: torch.Tensor, dft_length, axis: int, inverse: int, onesided: int) -> torch.Tensor:
    """Input [..., 1] (real) or [..., 2] (complex); output [..., 2] (or [..., 1] for inverse onesided)."""
    axis = axis % x.dim()
    work = compute_dtype(x.dtype)
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


@register("STFT", since=17, static_inputs=(1, 3))
def stft(
    signal: torch.Tensor, frame_step, window: torch.Tensor | None = None, frame_length=None, *, onesided: int = 1
) -> torch.Tensor:
    """Signal [B, L, 1] (real) or [B, L, 2] (complex) -> [B, frames, bins, 2], the DFT of each windowed
    frame ``frames = (L - frame_length) // frame_step + 1``. ``frame_length`` defaults to the window's
    length, else ``L``; the window to ones; ``onesided`` keeps the first ``frame_length // 2 + 1`` bins."""
    step = as_ints(frame_step)[0]
    if frame_length is not None:
        length = as_ints(frame_length)[0]
    else:
        length = window.shape[0] if window is not None else signal.shape[1]
    if window is not None and window.shape[0] != length:
        raise InputError(f"STFT: window length {window.shape[0]} != frame_length {length}")
    work = compute_dtype(signal.dtype)
    frames = signal.to(work).unfold(1, length, step)  # [B, frames, 1 or 2, length]
    if window is not None:
        frames = frames * window.to(work)
    if signal.shape[-1] == 1:
        spectrum = torch.fft.fft(frames[:, :, 0], dim=-1)
    else:
        spectrum = torch.fft.fft(torch.complex(frames[:, :, 0], frames[:, :, 1]), dim=-1)
    if onesided:
        spectrum = spectrum[..., : length // 2 + 1]
    return torch.stack([spectrum.real, spectrum.imag], dim=-1).to(signal.dtype)


@register("MelWeightMatrix", since=17, static_inputs=(0, 1, 2, 3, 4))
def mel_weight_matrix(
    num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz, *, output_datatype: int = 1
) -> torch.Tensor:
    """[dft_length // 2 + 1, num_mel_bins] triangular filters with peak 1. The band edges are
    ``num_mel_bins + 2`` points equally spaced on ``mel(f) = 2595 log10(1 + f / 700)`` from the lower
    edge (step ``(mel(upper) - mel(lower)) / (num_mel_bins + 2)``), mapped back to spectrogram bins
    ``floor((dft_length + 1) * f / sample_rate)``; filter ``i`` rises from edge i to i+1, falls to i+2."""
    bins, dft = as_ints(num_mel_bins)[0], as_ints(dft_length)[0]
    rate = as_ints(sample_rate)[0]
    low, high = as_float(lower_edge_hertz), as_float(upper_edge_hertz)
    low_mel = 2595 * math.log10(1 + low / 700)
    high_mel = 2595 * math.log10(1 + high / 700)
    step = (high_mel - low_mel) / (bins + 2)
    mels = torch.arange(bins + 2, dtype=torch.float64) * step + low_mel
    hertz = 700 * torch.expm1(mels / 2595 * math.log(10))
    edges = torch.floor((dft + 1) * hertz / rate).to(torch.int64)
    left, center, right = edges[:-2], edges[1:-1], edges[2:]  # [bins] each
    j = torch.arange(dft // 2 + 1, dtype=torch.int64).reshape(-1, 1)
    jf = j.to(torch.float64)
    rise_width = (center - left).clamp_min(1).to(torch.float64)
    rising = torch.where(center > left, (jf - left) / rise_width, (j == center).to(torch.float64))
    rising = torch.where((j >= left) & (j <= center), rising, 0.0)
    fall_width = (right - center).clamp_min(1).to(torch.float64)
    falling = (j >= center) & (j < right) & (right > center)
    out = torch.where(falling, (right - jf) / fall_width, rising)
    return out.to(dtype_from_onnx(output_datatype))
