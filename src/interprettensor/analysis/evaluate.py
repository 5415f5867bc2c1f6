"""Measuring explanation quality (``it.evaluate``): region perturbation (pixel flipping, AOPC) and
the model-randomisation sanity check, with tables and plots.

* :func:`region_perturbation` (Samek et al. 2017, IEEE TNNLS): perturb the most (or least) relevant
  regions first and record the model's pre-softmax score; AOPC summarises the curve
  (:mod:`.perturbation`).
* :func:`compare` runs several attribution methods (LRP rules and presets, gradient, input x
  gradient, SmoothGrad, integrated gradients, ...) through the same perturbation, always with the
  random baseline for the ``-random`` column, and returns a :class:`Comparison` (``table()``,
  ``to_csv()``, ``plot()``).
* The region size defaults to the input size (:func:`default_patch`): ``max(1, min(H, W) // 7)``
  for images (7 x 7 = 49 regions or more: 4 on 28 x 28 digits, 1 on 8 x 8 inputs),
  ``max(1, length // 49)`` for sequences and feature vectors, ``max(1, min(side) // 4)`` for volumes.
* :func:`model_randomisation` (Adebayo et al. 2018, NeurIPS): re-initialise the layers from the top
  down and measure how similar each explanation stays to the original (:mod:`.randomisation`).

Example::

    R = it.lrp(model, x, rule="epsilon_gamma_box", low=0.0, high=1.0)
    res = it.evaluate.region_perturbation(model, x, R)      # 4x4 regions on 28x28 inputs
    res.aopc, res.curve                                   # AOPC and mean score per step
    base = it.evaluate.region_perturbation(model, x, "random", patch=4)
    cmp = it.evaluate.compare(model, x, ["epsilon_gamma_box", "gradient", "random"], value_range=(0, 1))
    print(cmp.table()); cmp.plot("curves.png"); cmp.to_csv("aopc.csv")

Randomness (uniform noise, the random baseline, the breaking of ties between regions of equal
relevance) is drawn per sample from ``seed`` and the sample's content: the same image gets the same
noise under every method, in every batch, alone or with others, so methods are compared on identical
perturbations and batching never changes a number.

The perturbation is part of the measurement: uniform noise (the paper's default) also tests regions
that hold no signal (a black background), where methods that multiply by the input (input x
gradient, integrated gradients from a black baseline) assign exactly zero relevance; ``'mean'`` and
``'blur'`` barely change such regions. Compare methods under the same perturbation, and against
``'random'``.
"""

from .perturbation import (DEFAULT_METHODS, MAGNITUDE_METHODS, Comparison, PerturbationResult, _needs_box, check_regions,
                           compare,
                           default_patch, explain, plot_curves, region_label, region_perturbation, spatial_shape)
from .randomisation import (RandomisationResult, model_randomisation, plot_randomisation, spearman, ssim,
                            weighted_layers)

__all__ = ["region_perturbation", "PerturbationResult", "default_patch", "region_label", "compare", "Comparison",
           "DEFAULT_METHODS", "MAGNITUDE_METHODS", "explain", "spatial_shape", "check_regions", "model_randomisation", "RandomisationResult",
           "weighted_layers", "spearman", "ssim", "plot_curves", "plot_randomisation", "_needs_box"]
