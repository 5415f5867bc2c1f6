"""Data sets: the 8x8 digits that scikit-learn ships, prepared into the MNIST frame (no download)."""

from __future__ import annotations

import numpy as np

__all__ = ["load_digits", "to_pretrained_input", "train_test_split"]


def load_digits(size: int = 28, digit_size: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten 8x8 digits as MNIST-like images.

    Each digit is scaled to [0, 1], resized bilinearly to ``digit_size`` x ``digit_size`` and centred
    in a ``size`` x ``size`` frame, as MNIST digits are. Returns ``(x, y)`` with ``x`` of shape
    (N, size, size, 1), float32, and integer labels ``y`` of shape (N,).
    """
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    imgs = (d.images / 16.0).astype("float32")[..., None]
    small = _resize_bilinear(imgs, digit_size)
    small = np.clip(small, 0.0, 1.0)
    lo = (size - digit_size) // 2
    x = np.zeros((len(imgs), size, size, 1), "float32")
    x[:, lo:lo + digit_size, lo:lo + digit_size] = small
    return x, d.target.astype("int64")


def _resize_bilinear(imgs: np.ndarray, size: int) -> np.ndarray:
    """``(N, H, W, C)`` float32 images resized to ``size`` x ``size`` bilinearly with half-pixel centres,
    in float32: the values of ``tf.image.resize(imgs, (size, size), "bilinear")`` bit for bit (the same
    sample positions, clamping and interpolation order), without TensorFlow."""

    def axis(out: int, inp: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scale = np.float32(inp) / np.float32(out)
        src = (np.arange(out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
        floor = np.floor(src)
        lo = np.maximum(floor, 0).astype(np.int64)
        hi = np.minimum(np.ceil(src), inp - 1).astype(np.int64)
        return lo, hi, (src - floor).astype(np.float32)

    imgs = np.asarray(imgs, np.float32)
    ylo, yhi, yf = axis(size, imgs.shape[1])
    xlo, xhi, xf = axis(size, imgs.shape[2])
    top, bottom = imgs[:, ylo], imgs[:, yhi]
    xf, yf = xf[None, None, :, None], yf[None, :, None, None]
    top = top[:, :, xlo] + (top[:, :, xhi] - top[:, :, xlo]) * xf
    bottom = bottom[:, :, xlo] + (bottom[:, :, xhi] - bottom[:, :, xlo]) * xf
    return top + (bottom - top) * yf


def to_pretrained_input(x: np.ndarray) -> np.ndarray:
    """Prepare 28x28 digits in [0, 1] for the original pretrained CNN: pad by 2 pixels to 32x32 and
    scale to [-1, 1]."""
    x = np.asarray(x, "float32")
    if x.ndim == 3:
        x = x[..., None]
    if x.shape[1:3] != (28, 28):
        raise ValueError(f"expected 28x28 digits, got images of shape {x.shape[1:]}")
    x = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    return 2.0 * x - 1.0


def train_test_split(x: np.ndarray, y: np.ndarray, test_fraction: float = 0.2,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A reproducible shuffled split: ``(x_train, y_train, x_test, y_test)``."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = idx[:n_test], idx[n_test:]
    return x[train], y[train], x[test], y[test]
