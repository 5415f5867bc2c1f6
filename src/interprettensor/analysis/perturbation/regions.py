"""The regions that region perturbation replaces: the inputs' spatial axes (:func:`spatial_shape`), the
default region size (:func:`default_patch`), the checks of ``patch`` and ``steps`` (:func:`check_regions`),
how a region size reads (:func:`region_label`) and the region of every position (:func:`_region_ids`):
a grid of ``patch``-sized blocks over images, runs of ``patch`` positions over sequences and vectors."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def spatial_shape(shape: tuple) -> tuple[int, ...]:
    """Spatial axes of a batch: (N, H, W, C) -> (H, W); (N, T, C) -> (T,); (N, D) -> (D,)."""
    return tuple(shape[1:-1]) if len(shape) >= 3 else tuple(shape[1:])


def default_patch(spatial: Sequence[int]) -> int:
    """The default region size for inputs of spatial size ``spatial`` (``(H, W)`` for images, ``(T,)``
    for sequences ``(N, T, C)``, ``(F,)`` for feature vectors ``(N, F)``): about 49 regions or more,
    ``max(1, min(spatial) // k)`` with ``k = ceil(49 ** (1 / d))`` for ``d`` spatial axes, i.e.
    ``min(H, W) // 7`` for images, ``length // 49`` for 1-D inputs and ``min(side) // 4`` for volumes."""
    spatial = tuple(int(s) for s in spatial)
    if not spatial or min(spatial) < 1:
        raise ValueError(f"inputs need a spatial size of at least 1, got {spatial}")
    k = int(np.ceil(49.0 ** (1.0 / len(spatial)) - 1e-9))
    return max(1, min(spatial) // k)


def region_label(patch: int, ndim: int) -> str:
    """How a region of size ``patch`` reads for inputs with ``ndim`` spatial axes: ``'4x4 regions'``
    for images, ``'regions of 4 positions'`` for sequences and feature vectors."""
    if ndim == 1:
        return f"regions of {patch} position{'s' if patch != 1 else ''}"
    return "x".join([str(patch)] * max(ndim, 1)) + " regions"


def check_regions(spatial: tuple[int, ...], patch: Any, steps: Any) -> tuple[int, int, int]:
    """Validate ``patch`` (None: :func:`default_patch`) and ``steps`` (None: all regions) for inputs of
    spatial size ``spatial``; returns ``(patch, steps, number of regions)``."""
    if patch is None:
        patch = default_patch(spatial)
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 1:
        raise ValueError(f"patch must be a positive integer, got {patch!r}")
    size = "x".join(map(str, spatial))
    if patch > min(spatial):
        raise ValueError(f"patch {patch} is larger than the {'image' if len(spatial) >= 2 else 'input'}: the "
                         f"inputs have spatial size {size}")
    n_regions = int(np.prod([-(-s // int(patch)) for s in spatial]))
    if steps is None:
        steps = n_regions
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if steps > n_regions:
        raise ValueError(f"steps {steps} exceeds the number of regions: {size} inputs have {n_regions} "
                         f"{region_label(int(patch), len(spatial))}")
    return int(patch), int(steps), n_regions


def _region_ids(spatial: tuple[int, ...], patch: int) -> tuple[np.ndarray, int]:
    """The region index of every spatial position (flattened) and the number of regions. Regions
    are a grid of ``patch``-sized blocks; where a size is not a multiple of ``patch``, the last block
    along that axis is smaller."""
    grid = tuple(-(-s // patch) for s in spatial)
    idx = np.indices(spatial).reshape(len(spatial), -1) // patch
    return np.ravel_multi_index(tuple(idx), grid), int(np.prod(grid))
