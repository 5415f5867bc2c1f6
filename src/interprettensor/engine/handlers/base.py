"""What every handler shares: the :class:`Handler` interface, layer categories, and the switches a
traced pass sets (activation overrides, ReLU denominators, kept activations).

A handler does two things for a layer: the forward computation (recording what the backward pass
needs, e.g. the pre-activation and the layer's linear map) and the relevance pass, given the rule
that the composite assigned to the layer.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator, Sequence

import tensorflow as tf
from keras import ops

from ..errors import ExplainError
from ..linear import LinearMap, Product
from ..rules import LinearRule, Rule

__all__ = ["Handler", "WEIGHTED", "LINEAR", "MAXPOOL", "ROUTE", "ELEMENTWISE", "GATE", "PRODUCT", "SOFTMAX", "NORM",
           "EMBEDDING", "CONSTANT", "RELU_DENOMINATOR",
           "KEEP_ACTIVATIONS", "POSITIVE_OUTPUTS", "override_activations", "apply_activation", "strips_activation",
           "is_nonneg_activation"]

# categories decide which rule a composite gives a layer by default
WEIGHTED = "weighted"    # dense, convolutions: the composite's main rules
LINEAR = "linear"        # sums, average pooling, standalone BatchNorm, upsampling: rule.merge_rule()
MAXPOOL = "maxpool"      # winner-takes-all unless a rule says otherwise
ROUTE = "route"          # reshapes, padding, cropping, concatenation: exact routing
ELEMENTWISE = "elementwise"  # activations, dropout, rescaling: relevance passes unchanged
GATE = "gate"            # multiply: relevance to the signal input
PRODUCT = "product"      # einsum / matmul of two computed tensors (Q·Kᵀ, A·V): the uniform rule
SOFTMAX = "softmax"      # softmax: relevance passes, or AttnLRP's softmax rule
NORM = "norm"            # layer normalisation: a linear map with the standard deviation held constant
EMBEDDING = "embedding"  # lookups of integer inputs: relevance per index
CONSTANT = "constant"    # values independent of the inputs' values (masks, position embeddings)

ACTIVATION_OVERRIDE: contextvars.ContextVar = contextvars.ContextVar("activation_override", default=None)
#: steps with a built-in ReLU whose output relevance is provably zero wherever the pre-activation is
#: ``<= 0`` (see :func:`interprettensor.engine.graph.relu_denominator_steps`): their ReLU output stands
#: in for the pre-activation in denominators, and rule groups for negative outputs are skipped; set by
#: the Explainer while tracing
RELU_DENOMINATOR: contextvars.ContextVar = contextvars.ContextVar("relu_denominator", default=frozenset())
#: steps with weights whose output relevance is provably zero wherever the pre-activation is ``<= 0``
#: (a built-in ReLU, or a ReLU layer after them; see
#: :func:`interprettensor.engine.graph.positive_output_steps`): rule groups for negative outputs are
#: skipped there; set by the Explainer while tracing
POSITIVE_OUTPUTS: contextvars.ContextVar = contextvars.ContextVar("positive_outputs", default=frozenset())
#: while set, layers keep a final activation that the explanation strips (used to check the graph's
#: forward pass against the model's own)
KEEP_ACTIVATIONS: contextvars.ContextVar = contextvars.ContextVar("keep_activations", default=False)


def strips_activation(step: Any) -> bool:
    """Whether ``step`` leaves out its activation in this forward pass (a final softmax/sigmoid)."""
    return bool(step.strip_activation) and not KEEP_ACTIVATIONS.get()


@contextlib.contextmanager
def override_activations(fn: Callable[[Any, Callable | None, tf.Tensor], tf.Tensor | None]) -> Iterator[None]:
    """Within this context, the graph's forward pass asks ``fn(layer, activation, z)`` for every
    activation (the ``activation=`` of layers with weights, and element-wise activation layers, with
    ``activation=None`` for those); a tensor it returns replaces the activation's output, ``None``
    keeps it. Gradient baselines (guided backprop, deconvnet) use this to change ReLU's gradient."""
    token = ACTIVATION_OVERRIDE.set(fn)
    try:
        yield
    finally:
        ACTIVATION_OVERRIDE.reset(token)


def apply_activation(layer: Any, act: Callable | None, z: tf.Tensor) -> tf.Tensor:
    """``act(z)``, or what an active :func:`override_activations` says instead."""
    override = ACTIVATION_OVERRIDE.get()
    if override is not None:
        out = override(layer, act, z)
        if out is not None:
            return out
    return z if act is None else act(z)


class Handler:
    """Base class. ``forward`` returns ``(outputs, state)``; ``relevance`` returns one relevance per
    input of the layer."""

    category: str = ELEMENTWISE
    #: ``relevance`` accepts unevaluated :class:`~interprettensor.engine.linear.Product` relevances
    accepts_lazy: bool = False

    def forward(self, layer: Any, xs: Sequence[tf.Tensor], step: Any) -> tuple[list, dict]:
        return step.call(xs), {}

    def output_nonneg(self, layer: Any, inputs_nonneg: Sequence[bool], step: Any) -> bool:
        """Whether the layer's output is known to be >= 0 (lets rules skip negative-input terms)."""
        return False

    def relevance(self, layer: Any, xs: Sequence[tf.Tensor], ys: Sequence[tf.Tensor], state: dict,
                  Rs: Sequence[tf.Tensor], rule: Rule, step: Any) -> list[tf.Tensor]:
        raise NotImplementedError


_NONNEG_ACTIVATIONS = {"relu", "relu6", "sigmoid", "softmax", "softplus", "exponential", "hard_sigmoid",
                       "Relu", "Relu6", "Sigmoid", "Softmax", "Softplus", "Exp"}


def is_nonneg_activation(act: Any) -> bool:
    """True for activations whose output is never negative (relu, relu6, sigmoid, softmax, ...)."""
    return act is not None and getattr(act, "__name__", "") in _NONNEG_ACTIVATIONS


def cast_params(params: dict, dtype: tf.DType) -> dict:
    """The layer's parameters as tensors of ``dtype`` (``None`` entries dropped)."""
    return {k: tf.cast(ops.convert_to_tensor(v), dtype) for k, v in params.items() if v is not None}


def cached_map(lm: LinearMap | None, xs: Sequence[tf.Tensor]) -> LinearMap | None:
    """The linear map the forward pass built, if its parameters have the inputs' dtype (under mixed
    precision the backward pass runs in another dtype than the forward)."""
    if lm is None or any(v.dtype != xs[0].dtype for v in lm.params.values()):
        return None
    return lm


def check_linear_rule(rule: Rule, step: Any) -> LinearRule:
    """``rule`` if it modifies inputs and weights; an error naming the layer otherwise."""
    if not isinstance(rule, LinearRule):
        raise ExplainError(f"layer {step.name!r} ({step.type_name}) cannot use rule {rule!r}: it needs a "
                           f"rule that modifies inputs/weights (epsilon, alphabeta, gamma, ...)")
    return rule


def shaped_like(R: "tf.Tensor | Product", z: tf.Tensor) -> "tf.Tensor | Product":
    """``R`` shaped like ``z`` (a lazy product stays lazy when the shapes already agree)."""
    if isinstance(R, Product):
        if R.shape.is_fully_defined() and z.shape.is_fully_defined() and R.shape == z.shape:
            return R
        if R.shape[1:] == z.shape[1:] and R.shape[1:].is_fully_defined():
            return R
        R = R.value()
    return tf.reshape(R, tf.shape(z))


def pass_through(xs: Sequence[tf.Tensor], Rs: Sequence[tf.Tensor], step: Any) -> list[tf.Tensor]:
    """The ``pass`` rule: relevance unchanged, for layers whose input and output have one shape."""
    if len(xs) != 1 or len(Rs) != 1 or xs[0].shape.rank != Rs[0].shape.rank:
        raise ExplainError(f"rule 'pass' needs a layer whose input and output have the same shape; "
                           f"layer {step.name!r} ({step.type_name}) maps {[tuple(x.shape) for x in xs]} "
                           f"to {[tuple(r.shape) for r in Rs]}")
    return [tf.reshape(Rs[0], tf.shape(xs[0]))]
