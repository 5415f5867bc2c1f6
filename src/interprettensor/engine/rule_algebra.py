"""What LRP rules are made of: modifiers of inputs and parameters, terms and groups of terms,
stabilisers, and :class:`Rule`, the interface through which the engine asks a rule what it does.

A rule explains one *linear* map ``z = f(x; W, b)`` (a dense layer, a convolution, a pooling window
seen as a linear map, the sum of an ``Add`` layer, ...). The layer supplies ``f``; the rule says how to
modify its inputs and parameters. Relevance ``R`` at the output is redistributed as

.. math::

    R_i = \\sum_g c_g \\sum_{t \\in g} x^{(t)}_i \\cdot
          \\Big[ \\frac{\\partial}{\\partial x^{(t)}} \\sum_{t' \\in g} f(x^{(t')}; W^{(t')}, b^{(t')})
          \\Big]^\\top \\frac{R}{\\mathrm{stab}(z_g)},
    \\qquad z_g = \\sum_{t \\in g} f(x^{(t)}; W^{(t)}, b^{(t)})

i.e. one forward pass per modified term and one vector-Jacobian product (a transposed convolution
for a convolution) per group: a choice of groups ``g`` (with coefficient ``c_g``), terms ``t`` (input
and parameter modifiers) and a stabiliser. A group may also select the outputs it explains by the
sign of the unmodified pre-activation ``z`` (``Group(..., outputs='positive')``: only where
``z >= 0``; ``'negative'``: where ``z < 0``). :mod:`.linear` evaluates such groups; :mod:`.rules`
holds the rules of the literature.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from keras import ops

from . import dtypes
from .backend import Tensor

__all__ = ["TINY", "Modifier", "identity", "positive", "negative", "ones", "square", "Fill", "WeightSum", "constant",
           "sign0", "stabilize", "Term", "Group", "Rule"]

#: Stabiliser of rules that have no epsilon of their own: large enough to keep ``R / z`` finite when
#: ``z == 0`` (all numerators are then 0 too), small enough not to change any result in float32.
TINY = 1e-12

Modifier = Callable[[Tensor], Tensor]


def identity(t: Tensor) -> Tensor:
    return t


def positive(t: Tensor) -> Tensor:
    return ops.maximum(t, constant(0, t.dtype))


def negative(t: Tensor) -> Tensor:
    return ops.minimum(t, constant(0, t.dtype))


def ones(t: Tensor) -> Tensor:
    return ops.ones_like(t)


def square(t: Tensor) -> Tensor:
    return ops.square(t)


def _np_shape(value: Any) -> tuple:
    import numpy as np

    return np.shape(value)


@dataclasses.dataclass(frozen=True, eq=False)
class Fill:
    """An input modifier that replaces the input by ``value`` (a number or an array broadcastable to
    the input, e.g. a bound of the z^B rule) broadcast to the input's shape."""

    value: Any

    def __call__(self, t: Tensor) -> Tensor:
        return ops.broadcast_to(constant(self.value, t.dtype), ops.shape(t))

    def same_over_batch(self, t: Tensor) -> bool:
        """Whether the filled input is the same for every sample of ``t`` (``value`` has no batch axis,
        or one of size 1): then a layer's output under it is too, and the engine computes it for one
        sample and lets it broadcast."""
        shape = tuple(self.value.shape) if hasattr(self.value, "shape") else _np_shape(self.value)
        return len(shape) < len(t.shape) or shape[0] == 1


@dataclasses.dataclass(frozen=True)
class WeightSum:
    """A parameter modifier that is a sum of scaled simple ones: ``sum_k c_k * m_k(W)``.

    Being a linear combination, the layer's output under it is the same combination of the outputs
    under each ``m_k`` (``f(x; W + g W^+) = f(x; W) + g f(x; W^+)``), which the engine uses to
    share forward passes between terms. Example: the gamma rule's ``W + gamma * W^+`` is
    ``WeightSum(((1.0, identity), (gamma, positive)))``.
    """

    parts: tuple[tuple[float, Modifier], ...]

    def __call__(self, t: Tensor) -> Tensor:
        out = None
        for c, m in self.parts:
            v = m(t) if c == 1.0 else constant(c, t.dtype) * m(t)
            out = v if out is None else out + v
        return out


def constant(value: Any, dtype: Any) -> Tensor:
    """``value`` (a Python number, array or tensor) as a tensor of ``dtype`` (a dtype or its name).
    Unlike a cast of a Python float, which makes a float32 tensor first, this keeps a float64 value
    exact."""
    if ops.is_tensor(value):
        return ops.cast(value, dtype)
    return ops.convert_to_tensor(value, dtype=dtype)


def sign0(z: Tensor) -> Tensor:
    """+1 where ``z >= 0``, -1 elsewhere (the sign convention of all stabilisers)."""
    return ops.where(z >= 0, constant(1, z.dtype), constant(-1, z.dtype))


#: smallest normal number of each float dtype: a stabiliser is kept at least this large, so that
#: e.g. TINY (1e-12) does not underflow to 0 in float16 and ``R / stab(0)`` is never ``0 / 0``
_SMALLEST_NORMAL = {"float16": 2.0 ** -14, "bfloat16": 2.0 ** -126, "float32": 2.0 ** -126,
                    "float64": 2.0 ** -1022}


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """``z + epsilon * sign0(z)``: moves the denominator away from zero, keeping its sign. ``epsilon``
    is raised to at least the dtype's smallest normal number, so the result is never zero."""
    dtype = dtypes.name(z.dtype)
    if isinstance(epsilon, (int, float)) and dtype in _SMALLEST_NORMAL:
        epsilon = max(float(epsilon), _SMALLEST_NORMAL[dtype])
    e = constant(epsilon, z.dtype)
    return z + ops.where(z >= 0, e, ops.negative(e))  # = z + e * sign0(z), without the product's pass


@dataclasses.dataclass(frozen=True)
class Term:
    """One modified copy of the layer: ``f(input(x); kernel(W), bias(b))``.

    ``bias=None`` drops the bias from this term. ``kernel`` modifies every weight parameter of the
    layer (kernels, depthwise kernels, fixed pooling weights).
    """

    input: Modifier = identity
    kernel: Modifier = identity
    bias: Modifier | None = identity

    @property
    def is_identity(self) -> bool:
        return self.input is identity and self.kernel is identity and self.bias is identity


@dataclasses.dataclass(frozen=True)
class Group:
    """Terms that share one denominator ``z_g``; the group's result is scaled by ``coefficient``.

    ``outputs``: ``None`` (the group explains every output), ``'positive'`` (only the outputs whose
    unmodified pre-activation ``z`` is ``>= 0``) or ``'negative'`` (``z < 0``).
    """

    terms: tuple[Term, ...]
    coefficient: float = 1.0
    outputs: str | None = None

    def __post_init__(self) -> None:
        if self.outputs not in (None, "positive", "negative"):
            raise ValueError(f"Group outputs must be None, 'positive' or 'negative', got {self.outputs!r}")


class Rule:
    """Base class of everything that says how relevance passes one layer.

    A rule owns its behaviour: handlers supply a layer's operation (its linear map, its routing, its
    product) and ask the rule, through the methods below, what to do with it. The defaults describe a
    rule that explains nothing; :class:`~interprettensor.engine.rules.LinearRule` (the term algebra),
    :class:`~interprettensor.engine.rules.Pass`, the product and softmax rules of
    :mod:`~interprettensor.engine.operation_rules` override what they explain.
    """

    name: str = "rule"
    #: Under this rule, max pooling distributes relevance uniformly over each window (LRP Toolbox
    #: semantics of flat and w^2) instead of winner-takes-all.
    uniform_max_pool: bool = False
    #: relevance passes a layer unchanged (a layer whose input and output have one shape)
    passes_through: bool = False
    #: the rule explains linear maps (:meth:`relevance`)
    explains_linear: bool = False
    #: the rule explains products of activations (it has ``shares``, see
    #: :class:`~interprettensor.engine.operation_rules.ProductRule`)
    explains_products: bool = False
    #: the rule explains a softmax by its linearisation (AttnLRP, Prop. 3.1)
    explains_softmax: bool = False

    def params(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.params() == other.params()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted((k, repr(v)) for k, v in self.params().items()))))

    def merge_rule(self) -> "Rule | None":
        """Rule for layers without weights that mix inputs (sums, average pooling, standalone
        BatchNorm) when this rule is applied to a whole model; ``None``: the z-rule (proportional
        split), which :class:`~interprettensor.engine.rules.LinearRule` gives with its own
        stabiliser where it has one."""
        return None

    def relevance(self, linear: Any, xs: Sequence[Tensor], R: Any, z: Tensor | None = None,
                  nonneg: Sequence[bool] | bool = False, lazy: bool = False,
                  positive_outputs_only: bool = False) -> list:
        """Relevance at each input of the linear map ``linear`` (a
        :class:`~interprettensor.engine.linear.LinearMap`) given ``R`` at its output; see
        :func:`~interprettensor.engine.linear.linear_relevance` for the arguments."""
        raise TypeError(f"rule {self!r} does not explain linear maps")

    def max_pool(self) -> str | None:
        """How relevance crosses a max pooling: ``'winner'`` (to the input that won each window),
        ``'uniform'`` (spread over the window as a linear map under this rule), or ``None`` (the rule
        does not apply to max pooling)."""
        return None

    def keeps_zeros(self) -> bool:
        """Whether, on a linear map, the relevance of an input is zero wherever the input is zero
        (every term's input modifier is the identity, ``x^+`` or ``x^-``): the analysis that lets a
        layer with a built-in ReLU keep only its ReLU output asks this."""
        return False

    def bounds(self) -> tuple[Any, Any] | None:
        """The box ``(low, high)`` the rule's layer input lies in, for rules that need one (z^B);
        ``None`` for the others."""
        return None

    def with_bounds(self, low: Any, high: Any) -> "Rule":
        """The same rule for an input in the box ``[low, high]`` (rules without bounds: itself)."""
        return self

    def cell_rules(self) -> tuple["Rule", Any] | None:
        """The rules of a recurrent cell under this rule: ``(rule for its linear parts, product rule
        of its gate ⊙ signal products or None for signal-take-all)``; ``None``: the rule does not
        apply to recurrent layers."""
        return None
