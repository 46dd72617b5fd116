"""Small datasets shipped with graphdnn (no download, no scikit-learn at run time)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from graphdnn.errors import CorruptFileError, InputError

__all__ = ["DIGITS_PATH", "load_digits"]

DIGITS_PATH = Path(__file__).with_name("digits.npz")


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    if not DIGITS_PATH.is_file():
        raise FileNotFoundError(
            f"{DIGITS_PATH} is missing; regenerate it with `python -m graphdnn.data.make_digits`"
        )
    with np.load(DIGITS_PATH, allow_pickle=False) as archive:
        images = archive["images"]
        labels = archive["labels"]
    if images.shape != (1797, 8, 8) or labels.shape != (1797,):
        raise CorruptFileError(f"{DIGITS_PATH}: unexpected shapes {images.shape} and {labels.shape}")
    return images, labels


def load_digits(
    split: bool = True, seed: int = 42, test_fraction: float = 0.2, flat: bool = True
) -> tuple[np.ndarray, ...]:
    """Scikit-learn's 1797 handwritten 8x8 digits, pixels scaled to float32 in [0, 1], labels int64.

    With ``flat`` the images have shape ``(n, 64)``, otherwise ``(n, 1, 8, 8)`` (NCHW).
    With ``split`` (the default) return ``(x_train, y_train, x_test, y_test)`` after a shuffle seeded by
    ``seed``, holding out ``round(test_fraction * n)`` samples; otherwise ``(x, y)`` in the original order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must be in (0, 1), got {test_fraction}")
    images, labels = _read_digits()
    x = images.astype(np.float32) / np.float32(16.0)
    x = x.reshape(len(x), 64) if flat else x.reshape(len(x), 1, 8, 8)
    y = labels.astype(np.int64)
    if not split:
        return x, y
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]
