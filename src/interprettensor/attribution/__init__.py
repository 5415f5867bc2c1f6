"""Attribution baselines to compare with LRP, called the same way as :func:`interprettensor.lrp`.

Every function takes ``(model, x, target=None, ...)`` and returns an array shaped like ``x`` (a list
for multi-input models); the explained score is the *pre-softmax* output (a final softmax or sigmoid
is skipped), found by the same graph machinery as LRP.

================================  ================================================================
``gradient``                      d f_t / d x (Simonyan et al. 2014)
``input_x_gradient``              x * d f_t / d x (Shrikumar et al. 2016)
``smoothgrad``                    mean gradient over noisy copies of x (Smilkov et al. 2017)
``integrated_gradients``          path integral of the gradient from a baseline (Sundararajan et
                                  al. 2017)
``guided_backprop``               ReLU backward passes only positive gradients where z > 0
                                  (Springenberg et al. 2015)
``deconvnet``                     ReLU backward passes only positive gradients (Zeiler & Fergus
                                  2014)
``deep_taylor``                   Deep Taylor decomposition, z+ on layers with weights (Montavon
                                  et al. 2017), the preset ``'deep_taylor'``
``bounded_deep_taylor``           as above with z^B(low, high) on the first layer, the preset
                                  ``'bounded_deep_taylor'``
================================  ================================================================

:func:`attribute` runs any of them, or any LRP rule or preset, by name.

:func:`explain_generation` (also ``it.explain_generation``) generates tokens with a causal language
model and explains each generated token's logit with LRP over the prompt and the tokens before it
(:mod:`.generation`); :func:`attention_heads` splits a layer-wise explanation per attention head.
"""

from ..engine.rules import GradientMap
from .deep_taylor import bounded_deep_taylor, deep_taylor
from .generation import Generation, attention_heads, explain_generation
from .gradients import deconvnet, gradient, guided_backprop, input_x_gradient, integrated_gradients, smoothgrad
from .methods import _ALIASES, METHODS, attribute  # noqa: F401 - the CLI reads the aliases

__all__ = ["gradient", "input_x_gradient", "smoothgrad", "integrated_gradients", "guided_backprop", "deconvnet",
           "deep_taylor", "bounded_deep_taylor", "attribute", "METHODS", "GradientMap", "explain_generation", "Generation", "attention_heads"]
