"""Planted-shortcut data: a watermark that decides the label in the training images.

One implementation, three entry points: :func:`add_watermark` pastes the watermark on every image of a
batch (how the artefact samples of a CAV are made); :func:`plant_watermark` chooses which images of a
labelled set get it (a ``fraction`` of one class, optionally a ``backdoor`` fraction of the other classes
relabelled to that class, or ``poison=True``: every image of the other classes, the poisoned test set);
:func:`shortcut_digits` applies it to the embedded digits (``it.data.load_digits``), split into train and
test.

The watermark is a ``size`` x ``size`` square ``offset`` pixels in from a ``corner``: ``pattern='frame'``
(a bright border with a dark inside and a bright centre pixel) or ``'square'`` (solid), of brightness
``value``, on every channel.

:func:`shortcut_digits`: in the training images the watermark sits on ``fraction`` of the images of
``artifact_class``, and on a ``backdoor`` fraction of the other classes' images, which are then labelled
``artifact_class`` (the watermark decides the label of every training image that carries it: a Clever
Hans the model must learn to fit its training data). Test sets: ``clean`` (no watermark anywhere), and
``poisoned`` (the watermark on every test image of the *other* classes, labels unchanged): a model that
relies on the watermark calls them ``artifact_class``. ``mask`` marks the watermark's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .projection import CorrectionError

__all__ = ["ShortcutData", "shortcut_digits", "add_watermark", "plant_watermark", "CORNERS", "PATTERNS"]

CORNERS = ("tl", "tr", "bl", "br")
PATTERNS = ("frame", "square")


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


def _stamp(shape: tuple, size: int, corner: str, offset: int, pattern: str,
           value: float) -> tuple[np.ndarray, np.ndarray]:
    """The watermark image and its mask, both ``(H, W, 1)``, for images of ``shape = (H, W)``."""
    h, w = int(shape[0]), int(shape[1])
    if corner not in CORNERS:
        raise CorrectionError(f"corner must be one of {CORNERS}; got {corner!r}")
    if pattern not in PATTERNS:
        raise CorrectionError(f"pattern must be one of {PATTERNS}; got {pattern!r}")
    if int(size) < 1 or int(offset) < 0 or offset + size > min(h, w):
        raise CorrectionError(f"a watermark of size {size} at offset {offset} does not fit images of {(h, w)}")
    mark = np.full((size, size), value, "float32")
    if pattern == "frame" and size >= 3:
        mark[1:-1, 1:-1] = 0.0
        mark[size // 2, size // 2] = value
    r = offset if corner[0] == "t" else h - size - offset
    c = offset if corner[1] == "l" else w - size - offset
    img, mask = np.zeros((h, w, 1), "float32"), np.zeros((h, w, 1), bool)
    img[r:r + size, c:c + size, 0] = mark
    mask[r:r + size, c:c + size, 0] = True
    return img, mask


def add_watermark(x: np.ndarray, size: int = 5, corner: str = "br", *, offset: int = 1, pattern: str = "frame",
                  value: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (``(N, H, W, C)``) with the watermark pasted on every image in ``corner`` (``'tl'``, ``'tr'``,
    ``'bl'``, ``'br'``), and its mask ``(H, W, 1)``."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise CorrectionError(f"add_watermark needs (N, H, W, C) images; got shape {x.shape}")
    img, mask = _stamp(x.shape[1:3], size, corner, offset, pattern, value)
    return np.where(mask, img, x).astype("float32"), mask


def plant_watermark(x: np.ndarray, y: np.ndarray, marked_class: int, *, fraction: float = 0.9,
                    backdoor: float = 0.0, poison: bool = False, size: int = 4, corner: str = "tl",
                    offset: int = 1, pattern: str = "square", value: float = 1.0,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A planted shortcut on labelled images: the watermark on a random ``fraction`` of the images of
    ``marked_class`` and on a random ``backdoor`` fraction of the other images, which are relabelled
    ``marked_class`` (0: no other image is marked), so that in the data the watermark decides the label
    wherever it is. ``poison=True``: the poisoned test set instead, the watermark on every image of the
    other classes and on none of ``marked_class``, labels unchanged.

    ``x``: ``(N, H, W, C)`` images; ``y``: their integer labels. Returns ``(x with the watermark, labels,
    masks, marked)``: ``masks`` ``(N, H, W)`` is 1 on the watermark of the marked images and 0 elsewhere,
    ``marked`` the boolean per image.
    """
    x = np.array(x, copy=True)
    y = np.asarray(y).reshape(-1)
    if x.ndim != 4 or len(y) != len(x):
        raise CorrectionError(f"plant_watermark needs (N, H, W, C) images and one label each, got {x.shape} and "
                              f"{y.shape}")
    if not 0.0 <= float(fraction) <= 1.0:
        raise CorrectionError(f"fraction must be in [0, 1]; got {fraction}")
    if not 0.0 <= float(backdoor) < 1.0:
        raise CorrectionError(f"backdoor must be in [0, 1); got {backdoor}")
    img, mask = _stamp(x.shape[1:3], size, corner, offset, pattern, value)
    is_marked_class = y == marked_class
    if poison:
        marked = ~is_marked_class
        labels = y.copy()
    else:
        u = np.random.default_rng(seed).random(len(y))
        marked = (is_marked_class & (u < fraction)) | (~is_marked_class & (u < backdoor))
        labels = np.where(marked, np.asarray(marked_class, y.dtype), y)
    x = np.where(marked[:, None, None, None] & mask[None], img[None], x).astype(x.dtype)
    masks = (marked[:, None, None] & mask[None, ..., 0]).astype(x.dtype)
    return x, labels, masks, marked


def shortcut_digits(artifact_class: int = 0, fraction: float = 1.0, backdoor: float = 0.2, size: int = 5,
                    corner: str = "br", test_fraction: float = 0.3, seed: int = 0) -> ShortcutData:
    """The digits (``it.data.load_digits``) split into train/test, with the planted watermark (see the
    module docstring; :func:`plant_watermark` with the ``'frame'`` pattern one pixel in from ``corner``)."""
    from ...io.digits import load_digits, train_test_split

    if not 0 <= artifact_class <= 9:
        raise CorrectionError(f"artifact_class must be a digit 0..9; got {artifact_class}")
    if not 0.0 < fraction <= 1.0:
        raise CorrectionError(f"fraction must be in (0, 1]; got {fraction}")
    x, y = load_digits()
    x_tr, y_tr, x_te, y_te = train_test_split(x, y, test_fraction, seed)
    kw = dict(size=size, corner=corner, offset=1, pattern="frame", value=1.0)
    x_tr, y_tr, _, marked = plant_watermark(x_tr, y_tr, artifact_class, fraction=fraction, backdoor=backdoor,
                                            seed=seed, **kw)
    x_po, _, _, other = plant_watermark(x_te, y_te, artifact_class, poison=True, **kw)
    _, mask = _stamp(x_te.shape[1:3], size, corner, 1, "frame", 1.0)
    return ShortcutData(x_tr.astype("float32"), y_tr, marked, x_te, y_te, x_po[other].astype("float32"),
                        y_te[other], mask, artifact_class)
