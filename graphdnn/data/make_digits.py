"""Regenerate ``digits.npz`` from scikit-learn's bundled handwritten digits (run once, needs sklearn).

Usage: ``python -m graphdnn.data.make_digits``. The file holds two plain arrays, no pickled objects:
``images`` (uint8, shape (1797, 8, 8), values 0..16) and ``labels`` (int64, shape (1797,)).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DIGITS_PATH = Path(__file__).with_name("digits.npz")


def make_digits(path: Path = DIGITS_PATH) -> Path:
    """Write the digits archive to ``path`` and return it."""
    from sklearn.datasets import load_digits  # only needed to regenerate the file

    bunch = load_digits()
    images = np.asarray(bunch.images)
    if not np.array_equal(images, np.round(images)) or images.min() < 0 or images.max() > 16:
        raise ValueError("unexpected pixel values in sklearn's digits: expected integers in 0..16")
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, images=images.astype(np.uint8), labels=np.asarray(bunch.target, dtype=np.int64))
    tmp.replace(path)
    return path


if __name__ == "__main__":
    print(make_digits())
