"""Rendering relevance maps: colour maps centred on zero, overlays, grids and PNG files.

Only numpy and matplotlib are used, and matplotlib only through its object API with the Agg canvas:
importing this module never changes matplotlib's global backend or pyplot state.

* :func:`normalize` scales each sample to [-1, 1] (max-abs, or a percentile of ``|R|`` with clipping);
* :func:`relevance_to_rgb` maps relevance to RGB with a diverging map where 0 is the neutral colour:
  ``'bwr'`` (blue-white-red, neutral white) or ``'coldnhot'`` (the LRP "cold and hot" map: cyan and
  blue for negative, black for 0, red and yellow for positive);
* :func:`overlay` draws the heatmap over the input image;
* :func:`grid` / :func:`save_grid` lay out images with row and column titles; :func:`save_png`
  writes one RGB image;
* for inputs that are no images: :func:`feature_bars` draws a bar chart of the relevance of each
  feature of a vector ``(F,)`` (tabular data), :func:`sequence_strip` a coloured strip per channel
  over time for a sequence ``(T, C)``.

Example::

    from interprettensor import render
    rgb = render.relevance_to_rgb(R, cmap="coldnhot")          # (N, H, W, 3) in [0, 1]
    render.save_png("heatmap.png", rgb[0], scale=4)
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

__all__ = ["COLORMAPS", "get_cmap", "to_2d", "normalize", "relevance_to_rgb", "input_to_rgb", "overlay",
           "enlarge", "grid", "save_grid", "save_png", "feature_bars", "sequence_strip"]

#: Diverging colour maps with the neutral colour at 0 (centre of the map): name -> list of
#: (position in [0, 1], RGB) control points.
COLORMAPS: dict[str, list[tuple[float, tuple[float, float, float]]]] = {
    "bwr": [(0.0, (0.0, 0.0, 1.0)), (0.5, (1.0, 1.0, 1.0)), (1.0, (1.0, 0.0, 0.0))],
    "coldnhot": [(0.0, (0.0, 1.0, 1.0)), (0.25, (0.0, 0.0, 1.0)), (0.5, (0.0, 0.0, 0.0)),
                 (0.75, (1.0, 0.0, 0.0)), (1.0, (1.0, 1.0, 0.0))],
}


def get_cmap(name: str = "bwr"):
    """A matplotlib colour map: one of :data:`COLORMAPS` or any matplotlib name (e.g. ``'seismic'``)."""
    import matplotlib
    from matplotlib.colors import LinearSegmentedColormap

    if name in COLORMAPS:
        return LinearSegmentedColormap.from_list(f"interprettensor_{name}", COLORMAPS[name], N=257)  # odd: 0 hits the centre
    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown colour map {name!r}; use one of {', '.join(COLORMAPS)} "
                         f"or a matplotlib colour map name") from None


def to_2d(R: np.ndarray) -> np.ndarray:
    """Relevance as a batch of 2-D maps ``(N, H, W)``: channels (last axis) are summed.

    Accepts one map ``(H, W)``, a batch of maps ``(N, H, W)`` or a batch of images ``(N, H, W, C)``
    (pass one image ``(H, W, C)`` as ``R[None]``).
    """
    R = np.asarray(R, dtype=np.float64)
    if R.ndim == 2:
        return R[None]
    if R.ndim == 3:
        return R
    if R.ndim == 4:
        return R.sum(-1)
    raise ValueError(f"relevance must be (H, W), (N, H, W) or (N, H, W, C), got shape {R.shape}")


def normalize(R: np.ndarray, method: str = "maxabs", percentile: float = 99.5) -> np.ndarray:
    """Scale each sample of a batch ``(N, ...)`` into [-1, 1] without moving 0.

    Args:
        R: relevance, first axis is the batch.
        method: ``'maxabs'`` divides by the largest ``|R|`` of each sample; ``'percentile'`` divides
            by the ``percentile``-th percentile of ``|R|`` and clips to [-1, 1], so that a few extreme
            pixels do not wash out the rest.
        percentile: used by ``'percentile'``.

    All-zero samples stay zero.
    """
    R = np.asarray(R, dtype=np.float64)
    flat = np.abs(R.reshape(len(R), -1))
    if method == "maxabs":
        scale = flat.max(axis=1) if flat.size else np.zeros(len(R))
    elif method == "percentile":
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        scale = np.percentile(flat, percentile, axis=1) if flat.size else np.zeros(len(R))
        # a sparse map can have a zero percentile; fall back to its maximum then
        scale = np.where(scale > 0, scale, flat.max(axis=1) if flat.size else 0.0)
    else:
        raise ValueError(f"unknown normalisation {method!r}; use 'maxabs' or 'percentile'")
    scale = np.where(scale > 0, scale, 1.0).reshape((-1,) + (1,) * (R.ndim - 1))
    return np.clip(R / scale, -1.0, 1.0)


def relevance_to_rgb(R: np.ndarray, cmap: str = "bwr", normalization: str | None = "maxabs",
                     percentile: float = 99.5) -> np.ndarray:
    """Relevance to RGB images ``(N, H, W, 3)`` in [0, 1] (channels summed first, see :func:`to_2d`).

    Zero relevance maps to the centre of the colour map (white for ``'bwr'``, black for
    ``'coldnhot'``), positive relevance to its upper half (red), negative to its lower half (blue).
    ``normalization=None`` expects values already in [-1, 1].
    """
    R2 = to_2d(R)
    Rn = np.clip(R2, -1.0, 1.0) if normalization is None else normalize(R2, normalization, percentile)
    rgba = get_cmap(cmap)((Rn + 1.0) / 2.0)
    return rgba[..., :3].astype(np.float64)


def input_to_rgb(x: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Input images to RGB ``(N, H, W, 3)`` in [0, 1].

    Accepts ``(H, W)``, ``(N, H, W)`` or ``(N, H, W, C)``. Grey-scale inputs are repeated over
    three channels, a 4th (alpha) channel is dropped. Values are
    mapped linearly from ``[vmin, vmax]`` (default: each batch's own range) to [0, 1].
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[None, ..., None]
    elif x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"images must be (H, W), (N, H, W) or (N, H, W, C), got shape {x.shape}")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    elif x.shape[-1] >= 3:
        x = x[..., :3]
    else:
        x = np.repeat(x.mean(-1, keepdims=True), 3, axis=-1)
    lo = float(x.min()) if vmin is None else float(vmin)
    hi = float(x.max()) if vmax is None else float(vmax)
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def overlay(R: np.ndarray, x: np.ndarray, cmap: str = "bwr", alpha: float = 0.8,
            normalization: str = "maxabs", percentile: float = 99.5, vmin: float | None = None,
            vmax: float | None = None) -> np.ndarray:
    """The heatmap drawn over a grey version of the input, ``(N, H, W, 3)`` in [0, 1].

    Each pixel blends the grey input with the heatmap colour by ``alpha * |R|`` (normalised), so
    pixels without relevance show the input and strongly relevant pixels show the heatmap colour.
    """
    Rn = normalize(to_2d(R), normalization, percentile)
    heat = get_cmap(cmap)((Rn + 1.0) / 2.0)[..., :3]
    img = input_to_rgb(x, vmin, vmax)
    if img.shape[:3] != heat.shape[:3]:
        raise ValueError(f"relevance of shape {np.shape(R)} does not match the images of shape {np.shape(x)}")
    grey = img.mean(-1, keepdims=True).repeat(3, axis=-1)
    w = (alpha * np.abs(Rn))[..., None]
    return np.clip((1.0 - w) * grey + w * heat, 0.0, 1.0)


def enlarge(img: np.ndarray, scale: int) -> np.ndarray:
    """Repeat each pixel ``scale`` times along height and width of ``(H, W)``, ``(H, W, C)`` or a
    batch ``(N, H, W, C)``."""
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"scale must be an integer >= 1, got {scale}")
    a = 1 if np.ndim(img) == 4 else 0
    return np.repeat(np.repeat(img, int(scale), axis=a), int(scale), axis=a + 1)


def _ensure_dir(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)


def save_png(path: str, rgb: np.ndarray, scale: int = 1) -> str:
    """Write one image ``(H, W, 3)`` (or ``(H, W)``) with values in [0, 1] as a PNG; returns ``path``."""
    from matplotlib import image as mpimg

    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=-1)
    if rgb.ndim != 3 or rgb.shape[-1] not in (3, 4):
        raise ValueError(f"an RGB image must be (H, W, 3), got shape {rgb.shape}")
    if scale != 1:
        rgb = enlarge(rgb, scale)
    _ensure_dir(path)
    mpimg.imsave(path, np.clip(rgb, 0.0, 1.0), format="png")
    return path


def grid(images: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str] | None = None,
         col_titles: Sequence[str] | None = None, cell_size: float = 1.4, title: str | None = None):
    """A matplotlib Figure (Agg canvas, no pyplot) showing ``images[row][col]`` (RGB in [0, 1])."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_rows = len(images)
    n_cols = max((len(r) for r in images), default=0)
    if n_rows == 0 or n_cols == 0:
        raise ValueError("grid needs at least one image")
    if row_titles is not None and len(row_titles) != n_rows:
        raise ValueError(f"{len(row_titles)} row titles for {n_rows} rows")
    if col_titles is not None and len(col_titles) != n_cols:
        raise ValueError(f"{len(col_titles)} column titles for {n_cols} columns")
    extra_w = 0.9 if row_titles is not None else 0.1
    extra_h = (0.45 if col_titles is not None else 0.1) + (0.4 if title else 0.0)
    fig = Figure(figsize=(n_cols * cell_size + extra_w, n_rows * cell_size + extra_h), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < len(images[r]) and images[r][c] is not None:
                ax.imshow(np.clip(np.asarray(images[r][c], dtype=np.float64), 0, 1), interpolation="nearest")
            if r == 0 and col_titles is not None:
                ax.set_title(col_titles[c], fontsize=8)
            if c == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[r], fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_grid(path: str, images: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str] | None = None,
              col_titles: Sequence[str] | None = None, cell_size: float = 1.4, title: str | None = None,
              dpi: int = 100) -> str:
    """Lay out ``images[row][col]`` with titles (see :func:`grid`) and write a PNG; returns ``path``."""
    fig = grid(images, row_titles, col_titles, cell_size, title)
    _ensure_dir(path)
    fig.savefig(path, format="png", dpi=dpi)
    return path


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _finish(fig, path: str | None, dpi: int, tight: bool = True):
    if tight:
        fig.tight_layout()
    if path is not None:
        _ensure_dir(path)
        fig.savefig(path, format="png", dpi=dpi)
    return fig


def _scale(R: np.ndarray) -> float:
    m = float(np.max(np.abs(R))) if R.size else 0.0
    return m if m > 0 and np.isfinite(m) else 1.0


def feature_bars(R: np.ndarray, x: np.ndarray | None = None, feature_names: Sequence[str] | None = None,
                 title: str | None = None, path: str | None = None, cmap: str = "bwr", dpi: int = 100):
    """A bar chart of the relevance of each feature of one sample (tabular data).

    Args:
        R: relevance of one sample, ``(F,)``.
        x: the sample's input values ``(F,)`` (optional): shown under the feature names.
        feature_names: ``F`` labels (default ``0 .. F-1``).
        title: figure title.
        path: write a PNG here when given.
        cmap: colour map of the bars, centred on zero (red: for the class, blue: against).

    Returns:
        the matplotlib Figure (Agg canvas, no pyplot).
    """
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 1 or R.size == 0:
        raise ValueError(f"feature_bars takes the relevance of one sample, shape (F,), got shape {R.shape}")
    n = R.size
    if feature_names is not None and len(feature_names) != n:
        raise ValueError(f"{len(feature_names)} feature names for {n} features")
    if x is not None and np.asarray(x).reshape(-1).size != n:
        raise ValueError(f"x has shape {np.shape(x)}, but the relevance has {n} features")
    names = [str(f) for f in feature_names] if feature_names is not None else [str(i) for i in range(n)]
    if x is not None:
        names = [f"{nm}\n{float(v):.3g}" for nm, v in zip(names, np.asarray(x, np.float64).reshape(-1))]
    colours = get_cmap(cmap)((np.clip(R / _scale(R), -1.0, 1.0) + 1.0) / 2.0)
    fig = _figure(min(16.0, max(4.0, 0.35 * n + 1.5)), 3.2)
    ax = fig.subplots()
    ax.bar(np.arange(n), R, color=colours, edgecolor="0.3", linewidth=0.4)
    ax.axhline(0.0, color="0.3", linewidth=0.8)
    if n <= 40:
        ax.set_xticks(np.arange(n))
        ax.set_xticklabels(names, fontsize=7, rotation=0 if n <= 12 else 90)
    ax.set_xlabel("feature" + (" (value)" if x is not None else ""))
    ax.set_ylabel("relevance")
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    return _finish(fig, path, dpi)


def sequence_strip(R: np.ndarray, x: np.ndarray | None = None, channel_names: Sequence[str] | None = None,
                   title: str | None = None, path: str | None = None, cmap: str = "bwr",
                   normalization: str = "maxabs", percentile: float = 99.5, dpi: int = 100):
    """The relevance of one sequence as a coloured strip: one heatmap row per channel over time.

    Args:
        R: relevance of one sample, ``(T, C)`` (or ``(T,)`` for one channel).
        x: the sample's input ``(T, C)`` (optional): drawn as lines above the strip.
        channel_names: ``C`` labels of the rows (default ``0 .. C-1``).
        title: figure title.
        path: write a PNG here when given.
        cmap: diverging colour map, zero in its centre (see :func:`get_cmap`).
        normalization, percentile: scaling of the colours, as in :func:`normalize` (one scale for the
            whole sample).

    Returns:
        the matplotlib Figure (Agg canvas, no pyplot).
    """
    R = np.asarray(R, dtype=np.float64)
    if R.ndim == 1:
        R = R[:, None]
    if R.ndim != 2 or R.size == 0:
        raise ValueError(f"sequence_strip takes the relevance of one sequence, shape (T, C), got shape {R.shape}")
    t, c = R.shape
    if channel_names is not None and len(channel_names) != c:
        raise ValueError(f"{len(channel_names)} channel names for {c} channels")
    if x is not None:
        x = np.asarray(x, dtype=np.float64)
        x = x[:, None] if x.ndim == 1 else x
        if x.shape != R.shape:
            raise ValueError(f"x has shape {x.shape}, but the relevance has shape {R.shape}")
    Rn = normalize(R[None], normalization, percentile)[0]
    names = [str(n) for n in channel_names] if channel_names is not None else [str(i) for i in range(c)]
    strip_h = max(0.9, min(0.35 * c, 6.0))
    fig = _figure(min(16.0, max(5.0, 0.06 * t + 2.0)), strip_h + (1.8 if x is not None else 0.0) + 0.9)
    fig.set_layout_engine("constrained")
    if x is not None:
        ax_x, ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.8, strip_h]})
        for k in range(c):
            ax_x.plot(np.arange(t), x[:, k], linewidth=1.0, label=names[k])
        ax_x.set_ylabel("input")
        if c <= 8:
            ax_x.legend(fontsize=7, loc="upper right")
        ax_x.grid(alpha=0.3)
    else:
        ax = fig.subplots()
    im = ax.imshow(Rn.T, aspect="auto", cmap=get_cmap(cmap), vmin=-1.0, vmax=1.0, interpolation="nearest",
                   extent=(-0.5, t - 0.5, c - 0.5, -0.5))
    ax.set_yticks(np.arange(c))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_ylabel("channel")
    ax.set_xlabel("time step")
    fig.colorbar(im, ax=list(fig.axes), fraction=0.03, pad=0.01, label="relevance (scaled)")  # keeps x aligned
    if title:
        (fig.axes[0]).set_title(title, fontsize=9)
    return _finish(fig, path, dpi, tight=False)
