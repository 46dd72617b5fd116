"""Clipping, regularizers, max-norm, early stopping, augmentation, progress bar, PNG learning curves."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch

from graphdnn.train import (
    Compose,
    EarlyStopping,
    MaxNorm,
    ProgressBar,
    RandomBrightnessContrast,
    RandomHorizontalFlip,
    RandomRotation,
    RandomShift,
    clip_by_norm,
    clip_gradients_by_global_norm,
    clip_gradients_by_value,
    l1_l2_regularizer,
    l1_penalty,
    l1_regularizer,
    l2_penalty,
    l2_regularizer,
    max_norm_,
    plot_learning_curves,
    total_penalty,
)
from graphdnn.train.plot import PALETTE, nice_ticks

RNG = np.random.default_rng(1234)


# ---------------------------------------------------------------- gradient clipping


def params_with_grads(*grads: np.ndarray) -> list[torch.nn.Parameter]:
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64))
        p.grad = torch.tensor(g)
        params.append(p)
    return params


def test_clip_by_value_clamps_every_element():
    grads = [RNG.normal(scale=2.0, size=(4, 3)), RNG.normal(scale=2.0, size=5)]
    params = params_with_grads(*grads)
    clip_gradients_by_value(params, 1.0)
    for p, g in zip(params, grads):
        np.testing.assert_array_equal(p.grad.numpy(), np.clip(g, -1.0, 1.0))


@pytest.mark.parametrize("clip_norm", [0.5, 100.0])
def test_clip_by_global_norm(clip_norm):
    grads = [RNG.normal(size=(4, 3)), RNG.normal(size=5)]
    params = params_with_grads(*grads)
    global_norm = np.sqrt(sum((g**2).sum() for g in grads))
    returned = clip_gradients_by_global_norm(params, clip_norm)
    assert float(returned) == pytest.approx(global_norm, rel=1e-12)
    # TF: t * clip_norm / max(global_norm, clip_norm)  (torch adds 1e-6 to the divisor)
    for p, g in zip(params, grads):
        np.testing.assert_allclose(p.grad.numpy(), g * clip_norm / max(global_norm, clip_norm), rtol=1e-5)
    if clip_norm > global_norm:
        np.testing.assert_array_equal(params[0].grad.numpy(), grads[0])


def test_clipping_rejects_non_positive_thresholds():
    with pytest.raises(ValueError):
        clip_gradients_by_value([], 0.0)
    with pytest.raises(ValueError):
        clip_gradients_by_global_norm([], -1.0)


# ---------------------------------------------------------------- L1 / L2 penalties


def test_l1_l2_totals_follow_tf1_contrib_definitions():
    w = RNG.normal(size=(6, 4))
    t = torch.tensor(w)
    assert float(l1_penalty(t, 0.01)) == pytest.approx(0.01 * np.abs(w).sum())
    assert float(l2_penalty(t, 0.01)) == pytest.approx(0.01 * (w**2).sum() / 2)  # tf.nn.l2_loss halves
    assert float(l1_regularizer(0.001)(t)) == pytest.approx(0.001 * np.abs(w).sum())
    assert float(l2_regularizer(0.5)(t)) == pytest.approx(0.25 * (w**2).sum())
    both = l1_l2_regularizer(0.1, 0.2)(t)
    assert float(both) == pytest.approx(0.1 * np.abs(w).sum() + 0.1 * (w**2).sum())
    v = RNG.normal(size=3)
    total = total_penalty([(t, l1_regularizer(0.1)), (torch.tensor(v), l2_regularizer(2.0))])
    assert float(total) == pytest.approx(0.1 * np.abs(w).sum() + (v**2).sum())
    assert float(total_penalty([])) == 0.0


def test_l2_penalty_gradient_is_scale_times_weight():
    w = torch.nn.Parameter(torch.tensor(RNG.normal(size=(3, 2))))
    l2_regularizer(0.3)(w).backward()
    torch.testing.assert_close(w.grad, 0.3 * w.detach())


def test_negative_scales_are_rejected():
    for factory in (l1_regularizer, l2_regularizer):
        with pytest.raises(ValueError):
            factory(-0.1)
    with pytest.raises(ValueError):
        l1_l2_regularizer(0.1, -0.1)


# ---------------------------------------------------------------- max-norm


def kernel_with_row_norms(norms: list[float], out: int = 3) -> np.ndarray:
    rows = RNG.normal(size=(len(norms), out))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True) * np.array(norms)[:, None]


def numpy_clip_by_norm(t: np.ndarray, clip: float, axes: int) -> np.ndarray:
    """tf.clip_by_norm: t * clip / max(l2norm(t, axes, keepdims=True), clip)."""
    l2 = np.sqrt((t**2).sum(axis=axes, keepdims=True))
    return t * clip / np.maximum(l2, clip)


def test_max_norm_scales_rows_over_the_threshold_and_leaves_the_rest():
    # A TF-style [in, out] kernel; the book's clip_by_norm(axes=1) bounds each row (one input unit's
    # weights to every neuron).
    kernel = kernel_with_row_norms([0.5, 2.0, 1.0, 3.0, 0.999])
    weight = torch.nn.Parameter(torch.tensor(kernel))
    same = max_norm_(weight, 1.0)
    assert same is weight
    after = weight.detach().numpy()
    norms = np.linalg.norm(after, axis=1)
    np.testing.assert_allclose(norms[[1, 3]], 1.0, rtol=1e-12)
    np.testing.assert_array_equal(after[[0, 2, 4]], kernel[[0, 2, 4]])  # untouched, bit for bit
    np.testing.assert_allclose(after, numpy_clip_by_norm(kernel, 1.0, axes=1), rtol=1e-12)
    # directions are kept
    np.testing.assert_allclose(after[1] / norms[1], kernel[1] / np.linalg.norm(kernel[1]), rtol=1e-12)


def test_max_norm_axis_zero_bounds_columns():
    kernel = kernel_with_row_norms([2.0, 0.2, 1.5]).T.copy()  # columns with norms 2, 0.2, 1.5
    weight = torch.tensor(kernel)
    MaxNorm(max_value=1.0, axes=0)(weight)
    np.testing.assert_allclose(weight.numpy(), numpy_clip_by_norm(kernel, 1.0, axes=0), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(weight.numpy(), axis=0), [1.0, 0.2, 1.0], rtol=1e-12)


def test_clip_by_norm_is_functional_and_whole_tensor_by_default():
    t = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    out = clip_by_norm(t, 1.0)
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.8]], dtype=torch.float64))
    assert t[0, 0] == 3.0
    assert torch.equal(clip_by_norm(torch.zeros(2, 2), 1.0, axes=1), torch.zeros(2, 2))  # no 0/0


# ---------------------------------------------------------------- early stopping


def test_early_stopping_restores_the_best_epoch_weights():
    model = torch.nn.Linear(3, 2)
    stopper = EarlyStopping(monitor="val_loss", patience=2)
    losses = [1.0, 0.7, 0.5, 0.6, 0.55, 0.9]
    snapshots, stopped_at = [], None
    for epoch, value in enumerate(losses, start=1):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
            model.bias.fill_(-float(epoch))
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        if stopper.update(value, model, epoch):
            stopped_at = epoch
            break
    assert stopped_at == 5 and stopper.best_epoch == 3 and stopper.best == 0.5
    assert stopper.restore(model)
    for key, value in snapshots[2].items():
        assert torch.equal(model.state_dict()[key], value)


def test_early_stopping_max_mode_min_delta_and_nan():
    stopper = EarlyStopping(monitor="val_accuracy", patience=1, min_delta=0.01)
    assert stopper.mode == "max"
    assert not stopper.update(0.90)
    assert stopper.update(0.905)  # not better by more than min_delta
    stopper.reset()
    assert not stopper.update(0.5) and stopper.best_epoch == 0
    assert stopper.update(float("nan"))
    assert EarlyStopping(monitor="loss").mode == "min"
    assert not EarlyStopping().restore(torch.nn.Linear(1, 1))  # nothing stored yet


# ---------------------------------------------------------------- augmentation


def images(n=6, c=2, h=9, w=7) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize(
    "make",
    [
        lambda s: RandomShift(2, seed=s),
        lambda s: RandomRotation(15, seed=s),
        lambda s: RandomHorizontalFlip(seed=s),
        lambda s: RandomBrightnessContrast(0.2, 0.3, seed=s),
        lambda s: Compose(RandomShift(1), RandomRotation(10), RandomHorizontalFlip(), seed=s),
    ],
)
def test_augmentations_keep_shape_and_are_seeded(make):
    x = images()
    a, b, c = make(0)(x), make(0)(x), make(1)(x)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    t = make(None)
    assert torch.equal(t(x, g1), t(x, g2))  # an explicit generator overrides


def test_horizontal_flip_is_a_mirror():
    x = images()
    assert torch.equal(RandomHorizontalFlip(p=1.0)(x), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(p=0.0)(x), x)
    out = RandomHorizontalFlip(p=0.5, seed=3)(images(n=64))
    src = images(n=64)
    flipped = [torch.equal(o, s.flip(-1)) for o, s in zip(out, src)]
    kept = [torch.equal(o, s) for o, s in zip(out, src)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_shift_moves_whole_pixels_and_fills_with_zero():
    x = images(n=20)
    out = RandomShift(2, seed=0)(x).numpy()
    src = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)))
    for i in range(len(x)):
        candidates = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if np.array_equal(out[i], src[i, :, 2 - dy : 2 - dy + 9, 2 - dx : 2 - dx + 7])
        ]
        assert candidates, f"image {i} is not a whole-pixel shift of its input"
    assert torch.equal(RandomShift(0)(x), x)


def test_rotation_by_zero_degrees_is_identity_and_small_rotations_keep_mass():
    x = images()
    torch.testing.assert_close(RandomRotation(0.0)(x), x, atol=1e-6, rtol=0)
    blob = torch.zeros(4, 1, 15, 15)
    blob[:, :, 5:10, 5:10] = 1.0
    rotated = RandomRotation(20, seed=0)(blob)
    assert not torch.equal(rotated, blob)
    torch.testing.assert_close(rotated.sum(dim=(1, 2, 3)), blob.sum(dim=(1, 2, 3)), rtol=0.05, atol=0)


def test_brightness_contrast_ranges():
    x = images()
    assert torch.equal(RandomBrightnessContrast(0.0, 0.0)(x), x)
    shifted = RandomBrightnessContrast(0.2, 0.0, value_range=None, seed=0)(x)
    delta = (shifted - x).reshape(len(x), -1)
    torch.testing.assert_close(delta.max(dim=1).values, delta.min(dim=1).values, atol=1e-6, rtol=0)
    assert delta.abs().max() <= 0.2
    out = RandomBrightnessContrast(0.5, 0.5, seed=1)(x)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_compose_reshapes_flat_batches_and_follows_the_global_rng():
    flat = images(n=5, c=1, h=8, w=8).reshape(5, 64)
    aug = Compose(RandomShift(1), RandomHorizontalFlip(), image_shape=(1, 8, 8))
    torch.manual_seed(0)
    a = aug(flat)
    torch.manual_seed(0)
    b = aug(flat)
    assert a.shape == (5, 64) and torch.equal(a, b)
    with pytest.raises(ValueError, match="NCHW"):
        RandomShift(1)(flat)


# ---------------------------------------------------------------- progress bar


def test_progress_bar_without_a_tty_writes_one_line_at_close():
    stream = io.StringIO()
    bar = ProgressBar(3, "epoch 1/2", stream=stream)
    for _ in range(3):
        bar.update(1, loss=0.5)
    assert stream.getvalue() == ""
    bar.close(accuracy=0.75)
    bar.close()
    text = stream.getvalue()
    assert text.count("\n") == 1 and "\r" not in text
    assert text.startswith("epoch 1/2 [") and "3/3" in text and "loss=0.5" in text and "accuracy=0.75" in text


def test_progress_bar_tty_redraws_and_disabled_is_silent():
    stream = io.StringIO()
    with ProgressBar(None, stream=stream, tty=True, min_interval=0.0) as bar:
        bar.update(2)
    assert stream.getvalue().startswith("\r2 ") and stream.getvalue().endswith("\n")
    quiet = io.StringIO()
    bar = ProgressBar(5, stream=quiet, enabled=False)
    bar.update(5)
    bar.close()
    assert quiet.getvalue() == ""


def test_progress_bar_tick_counts_and_says_when_to_redraw():
    stream = io.StringIO()
    bar = ProgressBar(4, stream=stream, tty=True, min_interval=3600.0)
    assert bar.tick()                          # never drawn yet: due
    bar.update(0, loss=1.5)
    assert stream.getvalue().startswith("\r[") and "1/4" in stream.getvalue() and "loss=1.5" in stream.getvalue()
    assert not bar.tick() and not bar.tick()   # drawn a moment ago: counted, not due
    assert bar.count == 3
    piped = ProgressBar(4, stream=io.StringIO())
    assert not piped.tick() and piped.count == 1   # not a terminal: counts, never due
    off = ProgressBar(4, stream=io.StringIO(), enabled=False)
    assert not off.tick() and off.count == 0


# ---------------------------------------------------------------- PNG learning curves


def read_png(data: bytes) -> tuple[dict, np.ndarray]:
    """The header fields (from the IHDR chunk, CRC checked) and the pixels (decoded by Pillow)."""
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    body = data[16:29]
    assert struct.unpack(">I", data[29:33])[0] == zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF
    keys = ("width", "height", "depth", "color", "compression", "filter", "interlace")
    header = dict(zip(keys, struct.unpack(">IIBBBBB", body)))
    with Image.open(io.BytesIO(data)) as image:
        return header, np.asarray(image)


def test_learning_curve_png_is_valid_and_drawn(tmp_path):
    epochs = np.arange(30)
    series = {
        "loss": 2.0 * np.exp(-epochs / 6) + 0.1,
        "val_loss": 2.1 * np.exp(-epochs / 7) + 0.2,
        "accuracy": 1 - 0.9 * np.exp(-epochs / 5),
    }
    path = plot_learning_curves(series, tmp_path / "curves.png", title="Learning curves")
    header, pixels = read_png(path.read_bytes())
    assert (header["width"], header["height"], header["depth"], header["color"]) == (640, 400, 8, 2)
    assert header["interlace"] == 0
    colors = {tuple(c) for c in pixels.reshape(-1, 3)}
    assert len(colors) >= 5
    for color in PALETTE[:3]:  # one polyline per series
        assert int(np.all(pixels == color, axis=-1).sum()) > 200
    dark = np.all(pixels < 60, axis=-1)  # axis frame, ticks and text
    assert dark.sum() > 500
    from PIL import Image  # an independent decoder (dev extra)

    with Image.open(path) as image:
        image.load()
        assert image.size == (640, 400) and image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), pixels)


def test_plot_handles_nan_and_single_points(tmp_path):
    path = plot_learning_curves({"a": [1.0, float("nan"), 3.0, 2.0], "b": [0.5]}, tmp_path / "x.png")
    _, pixels = read_png(path.read_bytes())
    assert np.all(pixels == PALETTE[0], axis=-1).any()
    with pytest.raises(ValueError):
        plot_learning_curves({"a": []}, tmp_path / "y.png")


def test_ticks():
    np.testing.assert_allclose(nice_ticks(0.03, 0.97), [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(nice_ticks(1, 30), [0, 10, 20, 30])
    np.testing.assert_allclose(nice_ticks(1, 12), [0, 2.5, 5, 7.5, 10, 12.5])
    np.testing.assert_allclose(nice_ticks(1, 12, integer=True), [0, 5, 10, 15])
    np.testing.assert_allclose(nice_ticks(1, 3, integer=True), [1, 2, 3])
    assert len(nice_ticks(2.0, 2.0)) >= 2
