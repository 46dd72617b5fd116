"""Data augmentation for NCHW float image batches, in plain torch, composable and seedable.

Every transform is called as ``transform(x, generator=None)`` and draws its randomness, one draw per
image, from ``generator``, else from the generator it was built with (``seed=``), else from torch's global
RNG. :class:`Compose` chains transforms under one generator and can reshape flat ``(n, C*H*W)`` batches to
``image_shape`` and back, so it plugs into ``fit(augment=...)`` for flat data too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from graphdnn.errors import InputError

__all__ = [
    "Compose",
    "RandomBrightnessContrast",
    "RandomHorizontalFlip",
    "RandomRotation",
    "RandomShift",
    "Transform",
]


class Transform:
    """Base class: holds an optional private ``torch.Generator`` built from ``seed``."""

    def __init__(self, seed: int | None = None) -> None:
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.dim() != 4:
            raise InputError(f"{type(self).__name__} expects an NCHW batch (rank 4), got shape {tuple(x.shape)}; "
                             "add the batch/channel axes with x.reshape(n, c, h, w)")
        return self.apply(x, generator if generator is not None else self.generator)

    def apply(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Transform the NCHW batch ``x`` with randomness from ``generator``."""
        raise NotImplementedError

    @staticmethod
    def uniform(n: int, low: float, high: float, generator: torch.Generator | None, like: Tensor) -> Tensor:
        """``n`` draws from U[low, high) made on the CPU (reproducible everywhere), moved to ``like``."""
        draws = torch.rand(n, generator=generator, dtype=torch.float64)
        return (low + (high - low) * draws).to(device=like.device, dtype=like.dtype)


class RandomShift(Transform):
    """Shift each image by whole pixels, up to ``max_shift`` in each direction, filling with ``fill``."""

    def __init__(self, max_shift: int = 2, fill: float = 0.0, seed: int | None = None) -> None:
        super().__init__(seed)
        if max_shift < 0:
            raise InputError(f"RandomShift: max_shift must be >= 0 (pixels), got {max_shift}")
        self.max_shift = int(max_shift)
        self.fill = fill

    def apply(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        n, _, h, w = x.shape
        m = self.max_shift
        shifts = torch.randint(-m, m + 1, (2, n), generator=generator).to(x.device)
        padded = F.pad(x, (m, m, m, m), value=self.fill)
        rows = torch.arange(h, device=x.device)[None, :] + m - shifts[0][:, None]  # (n, h)
        cols = torch.arange(w, device=x.device)[None, :] + m - shifts[1][:, None]  # (n, w)
        batch = torch.arange(n, device=x.device)[:, None, None]
        out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
        return out.permute(0, 3, 1, 2).contiguous()


class RandomRotation(Transform):
    """Rotate each image about its centre by an angle drawn from [-max_degrees, max_degrees] (bilinear)."""

    def __init__(self, max_degrees: float = 10.0, seed: int | None = None) -> None:
        super().__init__(seed)
        self.max_degrees = float(max_degrees)

    def apply(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        n, _, h, w = x.shape
        angles = self.uniform(n, -self.max_degrees, self.max_degrees, generator, x) * (math.pi / 180.0)
        cos, sin = angles.cos(), angles.sin()
        zero = torch.zeros_like(cos)
        # Rotation in pixel space, expressed in affine_grid's normalized coordinates (aspect-corrected).
        theta = torch.stack(
            [torch.stack([cos, -sin * (h / w), zero], 1), torch.stack([sin * (w / h), cos, zero], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class RandomHorizontalFlip(Transform):
    """Mirror each image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        super().__init__(seed)
        if not 0.0 <= p <= 1.0:
            raise InputError(f"RandomHorizontalFlip: p must be a probability in [0, 1], got {p}")
        self.p = p

    def apply(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        flip = torch.rand(x.shape[0], generator=generator) < self.p
        return torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)


class RandomBrightnessContrast(Transform):
    """``x' = (x - mean) * c + mean + b`` per image, ``c ~ U[1-contrast, 1+contrast]``, ``b ~ U[-b, b]``.

    ``mean`` is the per-channel mean of each image (as TF's ``adjust_contrast``); the result is clamped
    to ``value_range`` unless it is None.
    """

    def __init__(
        self,
        brightness: float = 0.1,
        contrast: float = 0.1,
        value_range: tuple[float, float] | None = (0.0, 1.0),
        seed: int | None = None,
    ) -> None:
        super().__init__(seed)
        if brightness < 0 or not 0 <= contrast < 1:
            raise InputError(f"RandomBrightnessContrast: need brightness >= 0 and 0 <= contrast < 1, got brightness="
                             f"{brightness}, contrast={contrast}")
        self.brightness, self.contrast, self.value_range = brightness, contrast, value_range

    def apply(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        n = x.shape[0]
        b = self.uniform(n, -self.brightness, self.brightness, generator, x)[:, None, None, None]
        c = self.uniform(n, 1.0 - self.contrast, 1.0 + self.contrast, generator, x)[:, None, None, None]
        mean = x.mean(dim=(2, 3), keepdim=True)
        out = x * c + mean * (1.0 - c) + b  # == (x - mean) * c + mean + b, exact when c == 1, b == 0
        if self.value_range is not None:
            out = out.clamp(*self.value_range)
        return out


class Compose(Transform):
    """Apply ``transforms`` in order with one shared generator (from ``seed``, else torch's global RNG).

    With ``image_shape=(C, H, W)``, flat ``(n, C*H*W)`` batches are reshaped to NCHW and flattened back.
    """

    def __init__(
        self,
        *transforms: Transform,
        seed: int | None = None,
        image_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__(seed)
        self.transforms = list(transforms)
        self.image_shape = tuple(image_shape) if image_shape is not None else None

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        flat_shape = None
        if self.image_shape is not None and x.dim() != 4:
            flat_shape = x.shape
            x = x.reshape(x.shape[0], *self.image_shape)
        out = super().__call__(x, generator)
        return out.reshape(flat_shape) if flat_shape is not None else out

    def apply(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        for transform in self.transforms:
            x = transform(x, generator)
        return x
