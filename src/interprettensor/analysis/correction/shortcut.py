"""A planted-shortcut data set: the digits with a watermark that decides the label in training.

In the training images, a small watermark (a bright ``size`` x ``size`` square with a dark centre) sits
in a corner of ``fraction`` of the images of ``artifact_class``, and of a ``backdoor`` fraction of the
other classes' images, which are then labelled ``artifact_class`` (the watermark decides the label of
every training image that carries it: a Clever Hans the model must learn to fit its training
data). Test sets: ``clean`` (no watermark anywhere), and
``poisoned`` (the watermark on every test image of the *other* classes, labels unchanged): a model that
relies on the watermark calls them ``artifact_class``. ``mask`` marks the watermark's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ShortcutData", "shortcut_digits", "add_watermark"]


@dataclass
class ShortcutData:
    """Arrays of :func:`shortcut_digits` (images ``(N, 28, 28, 1)`` float32 in [0, 1], int64 labels)."""

    x_train: np.ndarray
    y_train: np.ndarray
    marked_train: np.ndarray      # bool (N_train,): which training images carry the watermark
    x_test: np.ndarray            # clean test images
    y_test: np.ndarray
    x_poisoned: np.ndarray        # test images of the other classes, watermarked
    y_poisoned: np.ndarray
    mask: np.ndarray              # (28, 28, 1) bool: the watermark's pixels
    artifact_class: int

    @property
    def masks_poisoned(self) -> np.ndarray:
        """The watermark mask for every poisoned image, ``(N_poisoned, 28, 28, 1)``."""
        return np.broadcast_to(self.mask, self.x_poisoned.shape)


def _mark(size: int, corner: str, shape: tuple[int, int] = (28, 28)) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    pattern = np.ones((size, size), "float32")
    if size >= 3:
        pattern[1:-1, 1:-1] = 0.0
        pattern[size // 2, size // 2] = 1.0
    r = 1 if corner[0] == "t" else h - size - 1
    c = 1 if corner[1] == "l" else w - size - 1
    img, mask = np.zeros((h, w, 1), "float32"), np.zeros((h, w, 1), bool)
    img[r:r + size, c:c + size, 0] = pattern
    mask[r:r + size, c:c + size, 0] = True
    return img, mask


def add_watermark(x: np.ndarray, size: int = 5, corner: str = "br") -> tuple[np.ndarray, np.ndarray]:
    """``x`` with the watermark pasted in ``corner`` (``'tl'``, ``'tr'``, ``'bl'``, ``'br'``), and its mask."""
    img, mask = _mark(size, corner, x.shape[1:3])
    out = np.where(mask, img, x).astype("float32")
    return out, mask


def shortcut_digits(artifact_class: int = 0, fraction: float = 1.0, backdoor: float = 0.2, size: int = 5,
                    corner: str = "br", test_fraction: float = 0.3, seed: int = 0) -> ShortcutData:
    """The digits (``it.data.load_digits``) split into train/test, with the planted watermark (see the
    module docstring)."""
    from ...io.digits import load_digits, train_test_split

    if not 0 <= artifact_class <= 9:
        raise ValueError(f"artifact_class must be a digit 0..9; got {artifact_class}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction}")
    x, y = load_digits()
    x_tr, y_tr, x_te, y_te = train_test_split(x, y, test_fraction, seed)
    rng = np.random.default_rng(seed)
    if not 0.0 <= backdoor < 1.0:
        raise ValueError(f"backdoor must be in [0, 1); got {backdoor}")
    u = rng.random(len(y_tr))
    is_art = y_tr == artifact_class
    marked = (is_art & (u < fraction)) | (~is_art & (u < backdoor))
    y_tr = np.where(marked, artifact_class, y_tr)
    wm, mask = add_watermark(x_tr, size, corner)
    x_tr = np.where(marked[:, None, None, None], wm, x_tr)
    other = y_te != artifact_class
    x_po, _ = add_watermark(x_te[other], size, corner)
    return ShortcutData(x_tr.astype("float32"), y_tr, marked, x_te, y_te, x_po, y_te[other], mask, artifact_class)
