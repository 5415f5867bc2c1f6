"""Is this explanation any good? Quantus' metrics (Hedström et al. 2023, JMLR 24(34)) for Keras 3:
the same names, keyword arguments and defaults, batched (every perturbation step of a batch is one
model call) and reproducible (``seed=``), on any Keras backend.

A Quantus user's code ports by changing the import::

    import interprettensor as it
    metric = it.metrics.PixelFlipping(features_in_step=28, perturb_baseline="black")
    scores = metric(model=model, x_batch=x, y_batch=y, a_batch=a)       # one curve per sample

Inputs are channels-last as Keras models take them (``channel_first=True`` for channels-first data);
``explain_func`` is any function with Quantus' signature, an :class:`interprettensor.Explainer`, a
method name, or :func:`explain` with ``explain_func_kwargs={"method": "epsilon"}``.

Modules: :mod:`.base` (the :class:`Metric` interface, normalisation), :mod:`.model` (the model as the
metrics call it), :mod:`.perturb` (baselines), :mod:`.explain`; one module per category of Quantus'
taxonomy.
"""

from __future__ import annotations

from .base import Metric, infer_channel_first, normalise_by_max, normalise_by_negative
from .explain import as_explain_func, explain
from .model import MetricModel
from .perturb import BASELINES

__all__ = ["Metric", "MetricModel", "explain", "as_explain_func", "normalise_by_max", "normalise_by_negative",
           "infer_channel_first", "BASELINES"]

from . import (axiomatic, comparison, complexity, faithfulness, faithfulness_sampling, ground_truth,  # noqa: E402
               localisation, randomisation, robustness, text)
from .axiomatic import *  # noqa: E402,F401,F403
from .comparison import *  # noqa: E402,F401,F403
from .complexity import *  # noqa: E402,F401,F403
from .faithfulness import *  # noqa: E402,F401,F403
from .faithfulness_sampling import *  # noqa: E402,F401,F403
from .ground_truth import *  # noqa: E402,F401,F403
from .localisation import *  # noqa: E402,F401,F403
from .randomisation import *  # noqa: E402,F401,F403
from .robustness import *  # noqa: E402,F401,F403
from .text import *  # noqa: E402,F401,F403

for _module in (faithfulness, faithfulness_sampling, robustness, localisation, complexity, randomisation, axiomatic,
                text, comparison, ground_truth):
    __all__ += [name for name in _module.__all__ if name not in __all__]
del _module
