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
* :class:`Proportional` (LRP-prop of Arras et al. 2019, after Ding et al. 2017) and
  :class:`AbsProportional` (LRP-abs, Arras et al. 2019): an *element-wise* product ``z = a ⊙ b``
  splits each element's relevance in proportion to the factors' values,
  ``R_a = a / stab(a + b) · R`` (``|a| / (|a| + |b| + ε) · R`` for LRP-abs), each share passed on by
  the epsilon rule with the other factor fixed. They need factors that pair up element by element, so
  contractions (``Q·Kᵀ``, ``A·V``) refuse them. ``'half'`` (LRP-half) is the uniform rule.
* :class:`CellRule`: the rules of a recurrent cell, its linear parts' rule and the product rule of its
  gate ⊙ signal products (``'gate'``, i.e. signal-take-all, by default).
* :class:`SoftmaxRule` (AttnLRP, Prop. 3.1): ``s = softmax(x)`` linearised at ``x`` (its Taylor
  expansion with the bias term dropped): ``R_x = x ⊙ (R − s · Σ R)``, the sum over the softmax axis.
  It does not conserve relevance: ``Σ R_x = Σ x ⊙ R − (Σ x ⊙ s) Σ R``.

Each rule is written once here as a function of tensors; handlers call them with the tensors of their
layer or operation.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

from keras import ops

from ..rule_names import OPERATION_RULE_NAMES, PRODUCT_RULES, product_rule_list
from . import backend, dtypes
from .backend import Tensor
from .linear import Product, use_fused
from .rules import TINY, LinearRule, Rule, constant, get_rule, register_rule, stabilize

__all__ = ["OPERATION_RULE_NAMES", "AbsProportional", "CellRule", "Gate", "ProductRule", "Proportional",
           "SoftmaxRule", "UniformProduct", "get_product_rule", "product_relevance", "product_rule_names",
           "softmax_relevance"]


class ProductRule(Rule):
    """A rule for products of activations, with the stabiliser of its epsilon divisions
    (default: the z-rule's tiny one, as everywhere)."""

    def __init__(self, epsilon: float = TINY):
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 <= epsilon < float("inf"):
            raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
        self.epsilon = float(epsilon) if epsilon > 0 else TINY

    #: the shares depend on the factors' values, element by element: only element-wise products
    #: (``a * b``, a recurrent cell's gate ⊙ signal) can use the rule, not contractions
    elementwise_only: bool = False
    explains_products = True
    #: the signal factor receives all of the relevance, the gates none (:class:`Gate`)
    signal_take_all: bool = False

    def params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon}

    def shares(self, values: Sequence[Tensor], signal: Sequence[bool]) -> list[float | Tensor]:
        """The fraction of a product's relevance that each factor receives: a number, or (for rules
        that look at the values) a tensor shaped like the broadcast ``values``. ``signal[i]``: factor
        ``i`` carries the signal (is not a gate)."""
        raise NotImplementedError


class UniformProduct(ProductRule):
    """The uniform rule for products of activations (AttnLRP, Achtibat et al. 2024, Prop. 3.3): each
    of the ``n`` factors receives ``1/n`` of the relevance, by the epsilon rule with the other factors
    held fixed. For two factors this is LRP-half (Arras et al. 2019; name ``'half'``)."""

    name = "uniform"

    def shares(self, values, signal):
        return [1.0 / len(values)] * len(values)


class Gate(ProductRule):
    """Gates are constants (CP-LRP, Ali et al. 2022): the factor that carries the signal receives all
    of the relevance, by the epsilon rule with the gating factors (attention weights, a sigmoid or
    SiLU gate) held fixed. Which factor is the gate is decided from the graph: the output of a softmax
    or of a squashing/gating activation; otherwise the factor shaped like the output is the signal."""

    name = "gate"
    signal_take_all = True

    def shares(self, values, signal):
        return [1.0 if s else 0.0 for s in signal]


class Proportional(ProductRule):
    """LRP-prop (Arras et al. 2019, "Evaluating recurrent neural network explanations", Sec. 3, after
    Ding et al. 2017): each element of an element-wise product ``z = a ⊙ b`` splits its relevance in
    proportion to the factors' values, ``R_a = a / stab(a + b) · R``, ``R_b = b / stab(a + b) · R``
    (``stab(t) = t + ε sign(t)``; n factors likewise). Conserves up to the stabiliser; unstable where
    the factors nearly cancel (a larger ``epsilon`` damps it)."""

    name = "proportional"
    elementwise_only = True

    def shares(self, values, signal):
        den = stabilize(_sum(values), self.epsilon)
        return [v / den for v in values]


class AbsProportional(ProductRule):
    """LRP-abs (Arras et al. 2019, Sec. 3): as :class:`Proportional` with absolute values,
    ``R_a = |a| / (|a| + |b| + ε) · R``; the shares lie in [0, 1]."""

    name = "proportional_abs"
    elementwise_only = True

    def shares(self, values, signal):
        mags = [ops.abs(v) for v in values]
        den = stabilize(_sum(mags), self.epsilon)
        return [m / den for m in mags]


def _sum(values: Sequence[Tensor]) -> Tensor:
    """The element-wise sum of the tensors (broadcast), added from the first to the last."""
    return functools.reduce(operator.add, values)


def get_product_rule(rule: ProductRule | str, what: str = "gates") -> ProductRule:
    """A :class:`ProductRule` from a rule object or one of the names ``'gate'`` (``'signal_take_all'``),
    ``'half'`` (``'uniform'``), ``'proportional'``, ``'proportional_abs'``; ``what`` names the
    parameter in the error for anything else."""
    try:
        out = get_rule(rule)
    except (TypeError, ValueError):
        out = None
    if out is None or not out.explains_products:
        raise ValueError(f"{what} must be a rule for products of activations: {product_rule_list()} or a "
                         f"ProductRule object; got {rule!r}")
    return out


class CellRule(Rule):
    """The rules of a recurrent layer (SimpleRNN, LSTM, GRU, their Bidirectional): ``linear`` for its
    linear parts ``W x_t + U h_{t-1} + b``, ``gates`` for its gate ⊙ signal products (``i ⊙ g``,
    ``f ⊙ c_{t-1}``, ``o ⊙ tanh(c_t)``; GRU: ``z ⊙ h_{t-1}``, ``(1 - z) ⊙ h̃``, the reset product).
    ``gates='gate'`` is Arras et al. 2017's signal-take-all; the others follow Arras et al. 2019.

    Example: ``it.Composite(default="epsilon", name_map={"lstm": CellRule("epsilon", gates="half")})``,
    or for every recurrent layer ``it.lrp(model, x, rule="epsilon", gates="half")``.
    """

    name = "cell"

    def __init__(self, linear: LinearRule | str = "epsilon", gates: ProductRule | str = "gate"):
        lin = get_rule(linear)
        if not lin.explains_linear:
            raise ValueError(f"the linear rule of a CellRule must be a rule for linear maps (epsilon, z, gamma, ...), "
                             f"got {linear!r}")
        self.linear = lin
        self.gates = get_product_rule(gates)

    def params(self) -> dict[str, Any]:
        return {"linear": self.linear, "gates": self.gates}

    def merge_rule(self) -> LinearRule:
        return self.linear.merge_rule()

    def cell_rules(self) -> tuple[LinearRule, ProductRule]:
        return self.linear, self.gates


class SoftmaxRule(Rule):
    """AttnLRP's softmax rule (Achtibat et al. 2024, Prop. 3.1): ``R_x = x ⊙ (R − s · Σ_axis R)``.
    Positions a mask removes from the softmax get zero relevance."""

    name = "softmax"
    explains_softmax = True


def product_relevance(fn: Callable[[Sequence[Tensor]], Tensor], xs: Sequence[Tensor], z: Tensor,
                      R: "Tensor | Product", shares: Sequence[float | Tensor], epsilon: float,
                      lazy: bool = False) -> list:
    """Relevance of the factors of a product ``z = fn(xs)`` that is linear in each factor:
    ``R_i = shares[i] · x_i ⊙ J_iᵀ (R / stab(z))`` (one vector-Jacobian product for all factors; a
    factor with share 0 gets ``None``). A share given as a tensor (shaped like ``z``: element-wise
    products) weighs ``R`` inside the product, ``R_i = x_i ⊙ J_iᵀ (shares[i] ⊙ R / stab(z))``.

    The vector-Jacobian product is taken for the factors with a share only (the others held at their
    values: a gate under CP-LRP costs no product with the cotangent), and a share common to all of
    them (the uniform rule's ``1/n``) scales the cotangent once, ``J_iᵀ (shares · R / stab(z))``,
    instead of each factor's relevance. ``R`` may be a :class:`~interprettensor.engine.linear.Product`
    (read inside the division's fused kernel), and with ``lazy`` a factor's relevance may be returned
    as one."""
    weights: list = []
    if not any(ops.is_tensor(w) for w in shares):
        idx = [i for i, w in enumerate(shares) if w != 0]
        if not idx:
            return [None] * len(xs)
        common = {float(shares[i]) for i in idx}
        if len(common) == 1:
            scale, weights = common.pop(), [1.0] * len(idx)
        else:
            scale, weights = 1.0, [float(shares[i]) for i in idx]
    else:
        scale = 1.0
    # not before R exists: otherwise every layer's denominator would be computed right after the
    # forward pass and held
    fns = _product_ratio(epsilon, scale, isinstance(R, Product))
    args = (R.x, R.g, z) if isinstance(R, Product) else (R, z)
    s = backend.after([args[-2]], lambda: fns[0](*args) if use_fused(z)
                      else fns[1](*args))
    if not weights:
        return _weighted_product_relevance(fn, xs, s, shares)
    grads = backend.vjp(_held(fn, xs, idx), [xs[i] for i in idx], s)
    result: list = [None] * len(xs)
    for i, g, w in zip(idx, grads, weights):
        if w != 1.0:
            result[i] = xs[i] * g * constant(w, g.dtype)
        else:
            result[i] = Product(xs[i], g) if lazy else xs[i] * g
    return result


@functools.cache
def _product_ratio(epsilon: float, scale: float, lazy: bool) -> tuple[Callable, Callable]:
    """``(fused, plain)`` functions of ``scale · R / stab(z)`` (``R`` given as its two factors if
    ``lazy``): on large activations one fused kernel instead of a pass over memory per operation."""
    def ratio(*args: Tensor) -> Tensor:
        *r, z = args
        num = r[0] * r[1] if lazy else r[0]
        s = num / stabilize(z, epsilon)
        return s if scale == 1.0 else s * constant(scale, s.dtype)

    return backend.fused(ratio), ratio


def _held(fn: Callable[[Sequence[Tensor]], Tensor], xs: Sequence[Tensor],
          idx: Sequence[int]) -> Callable[[Sequence[Tensor]], Tensor]:
    """``fn`` as a function of the factors ``idx`` only, the others held at their values (a held
    factor that is also one of the factors ``idx``, ``a * a`` under the gate rule, is held by a
    stopped gradient, so that only its own occurrence receives the product)."""
    taken = {id(xs[i]) for i in idx}
    held = [x if i in idx or id(x) not in taken else backend.stop_gradient(x) for i, x in enumerate(xs)]

    def part(args: Sequence[Tensor]) -> Tensor:
        full = list(held)
        for i, a in zip(idx, args):
            full[i] = a
        return fn(full)

    return part


def _weighted_product_relevance(fn, xs, s, shares) -> list[Tensor | None]:
    """As :func:`product_relevance` with a tensor of shares per factor: one vector-Jacobian product each."""
    watched, _, back = backend.pullback(fn, xs)
    result: list[Tensor | None] = []
    for i, (x, share) in enumerate(zip(watched, shares)):
        if not ops.is_tensor(share) and share == 0:
            result.append(None)
            continue
        w = s * ops.cast(share, s.dtype) if ops.is_tensor(share) else s * constant(share, s.dtype)
        result.append(x * back(i, w))
    return result


def softmax_relevance(x: Tensor, s: Tensor, R: "Tensor | Product", axis: int | Sequence[int] = -1) -> Tensor:
    """``x ⊙ (R − s · Σ_axis R)``; positions where ``s`` is exactly 0 get 0, and so do masked positions
    (inputs at a large negative mask value: Keras sets masked scores to -1e9 or lower, -3e4 in float16).
    ``R`` may be a :class:`~interprettensor.engine.linear.Product`; on large activations the rule runs
    as one fused kernel."""
    axes = tuple(axis) if isinstance(axis, (list, tuple)) else axis
    fns = _softmax_rule(axes, isinstance(R, Product))
    args = (x, s, R.x, R.g) if isinstance(R, Product) else (x, s, R)
    return fns[0](*args) if use_fused(s) else fns[1](*args)


@functools.cache
def _softmax_rule(axes: Any, lazy: bool) -> tuple[Callable, Callable]:
    """``(fused, plain)`` functions of :func:`softmax_relevance` over ``axes``."""
    def rule(x: Tensor, s: Tensor, *r: Tensor) -> Tensor:
        R = ops.cast(r[0] * r[1] if lazy else r[0], s.dtype)
        total = ops.sum(R, axis=axes, keepdims=True)
        out = x * (R - s * total)
        sentinel = constant(-1e4 if dtypes.name(x.dtype) == "float16" else -1e8, x.dtype)
        # the mask only once it is needed (see product_relevance)
        masked = backend.after([out], lambda: ops.logical_or(ops.equal(s, constant(0, s.dtype)), x <= sentinel))
        return ops.where(masked, constant(0, out.dtype), out)

    return backend.fused(rule), rule


#: the product rules by their ``name``; registered under the names of :data:`interprettensor.rule_names.PRODUCT_RULES`
_PRODUCT_RULE_CLASSES = {cls.name: cls for cls in (UniformProduct, Gate, Proportional, AbsProportional)}

for _name, _rule in PRODUCT_RULES.items():
    register_rule(_name, _PRODUCT_RULE_CLASSES[_rule])
register_rule("softmax", SoftmaxRule)


def product_rule_names() -> tuple[str, ...]:
    """The names the rule registry holds for rules of products of activations (those of
    :data:`interprettensor.rule_names.PRODUCT_RULES`, and any registered since)."""
    from .rules import RULES

    return tuple(name for name, factory in RULES.items()
                 if isinstance(factory, type) and issubclass(factory, ProductRule))
