"""The pictures of the reference samples: each winner's conditional heatmaps for the channels it is a
reference of (one batched pass per sample and mode), the crop box where the heatmap reaches
``crop_threshold`` of its largest absolute value (:func:`crop_box`, as CRP crops its reference images), the
input and the heatmap cut to it and resized to ``crop_size`` squared; written to ``layer-<name>.npz``
(:func:`_references`)."""

from __future__ import annotations

import glob
import os
from typing import Sequence

import numpy as np
from keras import ops

from ...engine.conditions import ConditionalExplainer
from ...io.shards import write_npz
from ...io.sources import Source
from .inputs import _samples
from .storage import MODES, safe_name


def crop_box(heatmap: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """``[top, left, bottom, right)`` of the pixels where ``|heatmap|`` (summed over a trailing colour
    axis) reaches ``threshold`` times its maximum; the whole image where the heatmap is zero."""
    h = heatmap.sum(-1) if heatmap.ndim == 3 else heatmap
    a = np.abs(h)
    peak = float(a.max()) if a.size else 0.0
    if peak <= 0.0 or not np.isfinite(peak):
        return 0, 0, h.shape[0], h.shape[1]
    rows, cols = np.nonzero(a >= threshold * peak)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def _area_weights(n: int, size: int) -> np.ndarray:
    """``(size, n)``: output pixel ``o`` averages the input over ``[o, o + 1) * n / size`` (each input
    pixel by the part of it inside that span)."""
    scale = n / size
    lo = np.arange(size)[:, None] * scale
    overlap = np.minimum(np.arange(n)[None, :] + 1, lo + scale) - np.maximum(np.arange(n)[None, :], lo)
    return np.clip(overlap, 0.0, None) / scale


def _triangle_weights(n: int, size: int) -> np.ndarray:
    """``(size, n)``: linear interpolation between pixel centres, the triangle widened ``n / size``
    times along an axis that shrinks (anti-aliased), each row normalised."""
    inv = n / size
    centre = (np.arange(size) + 0.5) * inv - 0.5
    w = np.clip(1.0 - np.abs(centre[:, None] - np.arange(n)[None, :]) / max(inv, 1.0), 0.0, None)
    total = w.sum(1, keepdims=True)
    return np.where(total > 1000.0 * np.finfo(np.float32).eps, w / np.where(total != 0, total, 1.0), 0.0)


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    """``(h, w, c)`` -> ``(size, size, c)`` float32 (bilinear, anti-aliased; area-averaging where both
    axes shrink), as TensorFlow's ``image.resize`` with ``antialias=True`` (``'area'`` where
    ``min(h, w) >= size``, else ``'bilinear'``), separably in NumPy."""
    weights = _area_weights if min(a.shape[:2]) >= size else _triangle_weights
    wy, wx = weights(a.shape[0], size), weights(a.shape[1], size)
    return np.einsum("ph,qw,hwc->pqc", wy, wx, a.astype(np.float32).astype(np.float64)).astype(np.float32)


def _to_uint8(x: np.ndarray, input_range: Sequence[float]) -> np.ndarray:
    lo, hi = float(input_range[0]), float(input_range[1])
    return np.clip(np.round((x - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)


def _references(cx: ConditionalExplainer, source: Source, out: str, top: dict, n: int, k: int, batch_size: int,
                crop_size: int, crop_threshold: float, input_range: Sequence[float], progress: bool,
                selected: dict) -> None:
    """Conditional heatmaps, boxes and crops of every reference sample (of the ``selected`` channels);
    ``layer-<name>.npz``."""
    from tqdm.auto import tqdm

    # per sample: the (layer, mode, channel, rank) slots it fills
    slots: dict[int, list] = {}
    for name, modes in top.items():
        for m in MODES:
            _, ids = modes[m]
            for c in np.flatnonzero(selected[name]):
                c = int(c)
                for r in range(ids.shape[1]):
                    slots.setdefault(int(ids[c, r]), []).append((name, m, c, r))
    shape = tuple(source.sample_shape)
    image = len(shape) == 3 and shape[-1] in (1, 3)
    colours = shape[-1] if image else 1
    arrays: dict = {}
    for s in cx.sites:
        for m in MODES:
            arrays[(s.name, m, "boxes")] = np.zeros((s.channels, k, 4), np.int64)
            arrays[(s.name, m, "crops")] = np.zeros((s.channels, k, crop_size, crop_size, colours), np.uint8)
            arrays[(s.name, m, "heatmaps")] = np.zeros((s.channels, k, crop_size, crop_size), np.float16)
    ranges = [(i, i + 1) for i in sorted(slots)]
    bar = tqdm(total=len(slots), desc="concepts: reference heatmaps", unit="sample", disable=not progress)
    for idx, x, t in _samples(source, ranges, cx.dtype, batch_size):
        for j, i in enumerate(idx):
            xi = x[j:j + 1]
            explained = _explained_target(out, int(i), t[j])
            for m in MODES:
                wanted = [sl for sl in slots[int(i)] if sl[1] == m]
                for name in dict.fromkeys(sl[0] for sl in wanted):
                    mine = [sl for sl in wanted if sl[0] == name]
                    conds = [{name: sl[2]} for sl in mine]
                    H = cx.conditional(xi, conds, explained, start="output" if m == "relevance" else "activation",
                                       condition_batch_size=64)[0]  # (K, *shape)
                    for (lname, mode, c, r), h in zip(mine, H):
                        _store(arrays, lname, mode, c, r, h, ops.convert_to_numpy(xi[0]), image, crop_size, crop_threshold,
                               input_range)
            bar.update(1)
    bar.close()
    for s in cx.sites:
        data = {}
        for m in MODES:
            v, ids = top[s.name][m]
            pad = k - ids.shape[1]
            data[f"{m}_indices"] = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1).astype(np.int64)
            data[f"{m}_values"] = np.pad(v, ((0, 0), (0, pad))).astype(np.float32)
            for part in ("boxes", "crops", "heatmaps"):
                data[f"{m}_{part}"] = arrays[(s.name, m, part)]
        data["mean_relevance"] = (top[s.name]["sum"] / max(n, 1)).astype(np.float32)
        data["referenced"] = selected[s.name]
        write_npz(os.path.join(out, f"layer-{safe_name(s.name)}.npz"), data)


def _explained_target(out: str, i: int, t: np.int32) -> int:
    """The class sample ``i`` was explained for in the statistics pass (the predicted one there)."""
    if t >= 0:
        return int(t)
    cache = _explained_target.__dict__.setdefault("cache", {})
    key = (out, os.path.getmtime(os.path.join(out, "concepts.json")))
    if key not in cache:
        targets = {}
        for f in sorted(glob.glob(os.path.join(out, "stats-*.npz"))):
            with np.load(f) as z:
                targets.update(zip(z["indices"].tolist(), z["targets"].tolist()))
        cache.clear()
        cache[key] = targets
    return int(cache[key][i])


def _store(arrays: dict, layer: str, mode: str, c: int, r: int, h: np.ndarray, x: np.ndarray, image: bool,
           size: int, threshold: float, input_range: Sequence[float]) -> None:
    if not image:  # not an image: the box is the whole input, no crop is drawn
        arrays[(layer, mode, "boxes")][c, r] = (0, 0, x.shape[0], x.shape[1] if x.ndim > 1 else 1)
        return
    top, left, bottom, right = crop_box(h, threshold)
    arrays[(layer, mode, "boxes")][c, r] = (top, left, bottom, right)
    arrays[(layer, mode, "crops")][c, r] = _to_uint8(_resize(x[top:bottom, left:right], size), input_range)
    heat = h.sum(-1, keepdims=True)[top:bottom, left:right]
    arrays[(layer, mode, "heatmaps")][c, r] = _resize(heat, size)[..., 0].astype(np.float16)
