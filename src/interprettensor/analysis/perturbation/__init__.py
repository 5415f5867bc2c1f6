"""Region perturbation (pixel flipping, AOPC; Samek, Binder, Montavon, Lapuschkin & Müller 2017,
"Evaluating the visualization of what a deep neural network has learned", IEEE TNNLS 28(11)) of one
explanation or several methods compared, with tables and plots. See :mod:`interprettensor.analysis.evaluate`
for the overview.

The relevance is summed over non-overlapping ``patch`` x ``patch`` regions (and over channels; runs of
``patch`` positions for sequences ``(N, T, C)`` and feature vectors ``(N, F)``); regions are replaced,
one per step, in order of decreasing (``'morf'``) or increasing (``'lerf'``) relevance, and the
model's pre-softmax score for the target class is recorded after each step. The area over the
perturbation curve ``AOPC = 1/(L+1) sum_{k=0..L} <f(x^(0)) - f(x^(k))>`` is larger (MoRF) for
explanations that point at what the model uses.

The package, one module per idea: :mod:`.scoring` (the model's explained score, the targets),
:mod:`.regions` (the regions and their size), :mod:`.replacement` (what a perturbed region becomes, and
the per-sample randomness), :mod:`.curves` (:func:`region_perturbation`, :class:`PerturbationResult`),
:mod:`.comparison` (:func:`compare`, :class:`Comparison`, :data:`DEFAULT_METHODS`) and :mod:`.plots`
(:func:`plot_curves`).
"""

from __future__ import annotations

# every name the module had before it was split, private ones included
from .comparison import (DEFAULT_METHODS, MAGNITUDE_METHODS, Comparison, MethodSpec, _method_list,  # noqa: F401
                         _needs_box, compare, explain)
from .curves import PerturbationResult, region_perturbation  # noqa: F401
from .plots import _figure, _save, plot_curves  # noqa: F401
from .regions import _region_ids, check_regions, default_patch, region_label, spatial_shape  # noqa: F401
from .replacement import _NOISE, _RANDOM, _TIES, Perturbation, _replacement, _rng, _sample_key  # noqa: F401
from .scoring import ArrayLike, _resolve_targets, _Scorer  # noqa: F401

__all__ = ["region_perturbation", "PerturbationResult", "default_patch", "compare", "Comparison", "DEFAULT_METHODS",
           "plot_curves"]
