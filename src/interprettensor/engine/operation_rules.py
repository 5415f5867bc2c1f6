"""Operation rules: relevance through operations that are not a linear map of one input with weights.

Transformers multiply two activations (``Q·Kᵀ``, ``A·V``, a gated ``a * silu(b)``) and normalise
with a softmax. AttnLRP (Achtibat et al., ICML 2024) and CP-LRP (Ali et al., ICML 2022) explain them
with the rules below; a handler supplies the operation, the rule says how relevance crosses it:

* :class:`UniformProduct` (AttnLRP, Prop. 3.3, the uniform rule): a product ``z = f(a, b)`` that is
  linear in each factor splits the relevance equally between the factors, each half by the epsilon
  rule with the other factor fixed: ``R_a = a ⊙ J_aᵀ (R / 2 stab(z))``, ``R_b`` likewise.
* :class:`Gate` (CP-LRP, and the gate of a squeeze-excitation block): the gating factors (attention
  weights, a sigmoid or SiLU gate) are constants; the signal factor receives all of the relevance by
  the epsilon rule, ``R_v = v ⊙ J_vᵀ (R / stab(z))``.
* :class:`SoftmaxRule` (AttnLRP, Prop. 3.1): ``s = softmax(x)`` linearised at ``x`` (its Taylor
  expansion with the bias term dropped): ``R_x = x ⊙ (R − s · Σ R)``, the sum over the softmax axis.
  It does not conserve relevance: ``Σ R_x = Σ x ⊙ R − (Σ x ⊙ s) Σ R``.

Each rule is written once here as a function of tensors; handlers call them with the tensors of their
layer or operation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from .linear import distinct
from .rules import TINY, Rule, constant, register_rule, stabilize

__all__ = ["OPERATION_RULE_NAMES", "Gate", "ProductRule", "SoftmaxRule", "UniformProduct", "product_relevance",
           "softmax_relevance"]


class ProductRule(Rule):
    """A rule for products of activations, with the stabiliser of its epsilon divisions
    (default: the z-rule's tiny one, as everywhere)."""

    def __init__(self, epsilon: float = TINY):
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 <= epsilon < float("inf"):
            raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
        self.epsilon = float(epsilon) if epsilon > 0 else TINY

    def params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon}


class UniformProduct(ProductRule):
    """The uniform rule for products of activations (AttnLRP, Achtibat et al. 2024, Prop. 3.3): each
    of the ``n`` factors receives ``1/n`` of the relevance, by the epsilon rule with the other factors
    held fixed."""

    name = "uniform"


class Gate(ProductRule):
    """Gates are constants (CP-LRP, Ali et al. 2022): the factor that carries the signal receives all
    of the relevance, by the epsilon rule with the gating factors (attention weights, a sigmoid or
    SiLU gate) held fixed. Which factor is the gate is decided from the graph: the output of a softmax
    or of a squashing/gating activation; otherwise the factor shaped like the output is the signal."""

    name = "gate"


class SoftmaxRule(Rule):
    """AttnLRP's softmax rule (Achtibat et al. 2024, Prop. 3.1): ``R_x = x ⊙ (R − s · Σ_axis R)``.
    Positions a mask removes from the softmax get zero relevance."""

    name = "softmax"


def product_relevance(fn: Callable[[Sequence[tf.Tensor]], tf.Tensor], xs: Sequence[tf.Tensor], z: tf.Tensor,
                      R: tf.Tensor, shares: Sequence[float], epsilon: float) -> list[tf.Tensor | None]:
    """Relevance of the factors of a product ``z = fn(xs)`` that is linear in each factor:
    ``R_i = shares[i] · x_i ⊙ J_iᵀ (R / stab(z))`` (one vector-Jacobian product for all factors; a
    factor with share 0 gets ``None``)."""
    with tf.control_dependencies([R]):  # not before R exists: otherwise every layer's denominator
        s = R / stabilize(z, epsilon)   # would be computed right after the forward pass and held
    watched = distinct(xs)
    with tf.GradientTape() as tape:
        tape.watch(watched)
        out = fn(watched)
    grads = tape.gradient(out, watched, output_gradients=s, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    result: list[tf.Tensor | None] = []
    for x, g, share in zip(xs, grads, shares):
        if share == 0:
            result.append(None)
        else:
            r = x * g
            result.append(r if share == 1.0 else r * constant(share, r.dtype))
    return result


def softmax_relevance(x: tf.Tensor, s: tf.Tensor, R: tf.Tensor, axis: int | Sequence[int] = -1) -> tf.Tensor:
    """``x ⊙ (R − s · Σ_axis R)``; positions where ``s`` is exactly 0 get 0, and so do masked positions
    (inputs at a large negative mask value: Keras sets masked scores to -1e9 or lower, -3e4 in float16)."""
    total = tf.reduce_sum(R, axis=axis, keepdims=True)
    out = x * (R - s * total)
    sentinel = constant(-1e4 if x.dtype == tf.float16 else -1e8, x.dtype)
    with tf.control_dependencies([out]):  # the mask only once it is needed (see product_relevance)
        masked = tf.logical_or(tf.equal(s, tf.zeros_like(s)), x <= sentinel)
    return tf.where(masked, tf.zeros_like(out), out)


#: rules of operations, not of layers with weights (with ``pass`` and ``winner_takes_all``)
OPERATION_RULE_NAMES = frozenset({"uniform", "gate", "softmax", "pass", "winner_takes_all"})

register_rule("uniform", UniformProduct)
register_rule("gate", Gate)
register_rule("softmax", SoftmaxRule)
