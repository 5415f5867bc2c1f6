"""PNG pictures of one sample for the viewer: the input, the heatmap and the heatmap over the input,
rendered with :mod:`interprettensor.io.render` (matplotlib colour maps) and encoded with Pillow;
concept crops and their conditional heatmaps likewise. Any sample shape is shown as a 2-D picture:
images ``(H, W, C)`` as they are, maps ``(H, W)``, vectors ``(F,)`` as a one-row strip."""

from __future__ import annotations

import functools
import io
import threading
from collections import OrderedDict
from typing import Callable

import numpy as np

from ...io import render

__all__ = ["CMAPS", "check_cmap", "to_picture", "picture", "png", "PngCache"]

#: colour maps offered in the viewer's menu (any matplotlib name is accepted as well)
CMAPS = ("bwr", "coldnhot", "seismic", "RdBu_r", "coolwarm", "PiYG", "viridis", "hot", "gray")
KINDS = ("input", "heatmap", "overlay")


@functools.lru_cache(maxsize=32)
def _cmap(name: str):
    return render.get_cmap(name)


def check_cmap(name: str) -> str:
    """``name`` if it is a colour map (raises ValueError naming the known ones otherwise)."""
    _cmap(name)
    return name


def to_picture(a: np.ndarray) -> np.ndarray:
    """A sample as ``(H, W, C)`` (images), ``(H, W, 1)`` (2-D maps), ``(1, F, 1)`` (vectors)."""
    a = np.asarray(a, np.float64)
    if a.ndim == 3 and a.shape[-1] in (1, 3, 4):
        return a
    if a.ndim == 3:  # (H, W, many channels): their mean, as a 2-D map
        return a.mean(-1, keepdims=True)
    if a.ndim == 2:
        return a[..., None]
    if a.ndim == 1:
        return a[None, :, None]
    if a.ndim == 0:
        return a.reshape(1, 1, 1)
    return a.reshape(a.shape[0], a.shape[1], -1).mean(-1, keepdims=True)  # (H, W, ...): averaged


def _heat(R: np.ndarray, cmap: str) -> tuple[np.ndarray, np.ndarray]:
    """Normalised relevance (max-abs, in [-1, 1]) and its colours (H, W, 3)."""
    R2 = render.to_2d(to_picture(R)[None])[0]
    scale = np.abs(R2).max()
    Rn = R2 / scale if scale > 0 and np.isfinite(scale) else np.zeros_like(R2)
    return Rn, _cmap(cmap)((np.nan_to_num(Rn) + 1.0) / 2.0)[..., :3]


def picture(kind: str, R: np.ndarray | None, x: np.ndarray | None, cmap: str) -> np.ndarray:
    """``(H, W, 3)`` in [0, 1]: ``kind`` is ``input`` (the input scaled to its own range), ``heatmap``
    (relevance, max-abs normalised, the colour map's centre at 0) or ``overlay`` (the heatmap blended
    over the grey input by ``0.8 |R|``, as :func:`interprettensor.render.overlay`)."""
    if kind == "heatmap":
        return _heat(R, cmap)[1]
    if x is None:
        raise ValueError("the run holds no inputs (explain with store_inputs=True / --store-inputs to see them)")
    img = render.input_to_rgb(np.nan_to_num(to_picture(x))[None])[0]
    if kind == "input":
        return img
    if kind != "overlay":
        raise ValueError(f"unknown picture {kind!r}; use {', '.join(KINDS)}")
    Rn, heat = _heat(R, cmap)
    if heat.shape[:2] != img.shape[:2]:
        raise ValueError(f"relevance {np.shape(R)} and input {np.shape(x)} differ in shape")
    grey = img.mean(-1, keepdims=True).repeat(3, axis=-1)
    w = (0.8 * np.abs(Rn))[..., None]
    return np.clip((1.0 - w) * grey + w * heat, 0.0, 1.0)


def png(rgb: np.ndarray, size: int) -> bytes:
    """PNG bytes of ``rgb`` (H, W, 3) in [0, 1], its longer side scaled to ``size`` pixels (pixels
    repeated when enlarging, averaged when shrinking)."""
    from PIL import Image

    img = Image.fromarray((np.clip(np.nan_to_num(rgb), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), "RGB")
    h, w = rgb.shape[:2]
    long = max(h, w)
    if size and long != size:
        f = size / long
        new = (max(1, round(w * f)), max(1, round(h * f)))
        img = img.resize(new, Image.NEAREST if f > 1 else Image.BOX)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class PngCache:
    """Rendered pictures by key, least recently used dropped beyond ``max_bytes``."""

    def __init__(self, max_bytes: int = 64 << 20):
        self.max_bytes, self.size = max_bytes, 0
        self.items: OrderedDict[tuple, bytes] = OrderedDict()
        self.lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple, make: Callable[[], bytes]) -> bytes:
        with self.lock:
            data = self.items.get(key)
            if data is not None:
                self.items.move_to_end(key)
                self.hits += 1
                return data
            self.misses += 1
        data = make()
        with self.lock:
            if key not in self.items:
                self.items[key] = data
                self.size += len(data)
            while self.size > self.max_bytes and self.items:
                _, old = self.items.popitem(last=False)
                self.size -= len(old)
        return data
