"""LRP rules, each written once from three parts: input modifiers, parameter modifiers and a stabiliser.

A rule explains one *linear* map ``z = f(x; W, b)`` (a dense layer, a convolution, a pooling window
seen as a linear map, the sum of an ``Add`` layer, ...). The layer supplies ``f``; the rule says how to
modify its inputs and parameters. Relevance ``R`` at the output is redistributed as

.. math::

    R_i = \\sum_g c_g \\sum_{t \\in g} x^{(t)}_i \\cdot
          \\Big[ \\frac{\\partial}{\\partial x^{(t)}} \\sum_{t' \\in g} f(x^{(t')}; W^{(t')}, b^{(t')})
          \\Big]^\\top \\frac{R}{\\mathrm{stab}(z_g)},
    \\qquad z_g = \\sum_{t \\in g} f(x^{(t)}; W^{(t)}, b^{(t)})

i.e. one forward pass per modified term and one vector-Jacobian product (a transposed convolution
for a convolution) per group. Every rule in the literature that this library offers is a choice of
groups ``g`` (with coefficient ``c_g``), terms ``t`` (input and parameter modifiers) and a stabiliser.
A group may also select the outputs it explains by the sign of the unmodified pre-activation ``z``
(``Group(..., outputs='positive')``: only where ``z >= 0``; ``'negative'``: where ``z < 0``): the
generalised gamma rule uses one group for each sign, so that its denominator never changes sign.

Custom rules: subclass :class:`LinearRule` and implement :meth:`LinearRule.groups`, or build one
directly from :class:`Term` and :class:`Group` with :class:`CustomRule`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import tensorflow as tf

__all__ = [
    "TINY",
    "WeightSum",
    "Term",
    "Group",
    "Rule",
    "LinearRule",
    "CustomRule",
    "Epsilon",
    "Z",
    "Flat",
    "WSquare",
    "AlphaBeta",
    "Gamma",
    "ZPlus",
    "ZPlusFast",
    "ZBox",
    "GradientMap",
    "Pass",
    "WinnerTakesAll",
    "RULES",
    "get_rule",
    "register_rule",
]

#: Stabiliser of rules that have no epsilon of their own: large enough to keep ``R / z`` finite when
#: ``z == 0`` (all numerators are then 0 too), small enough not to change any result in float32.
TINY = 1e-12

Modifier = Callable[[tf.Tensor], tf.Tensor]


def identity(t: tf.Tensor) -> tf.Tensor:
    return t


def positive(t: tf.Tensor) -> tf.Tensor:
    return tf.maximum(t, tf.constant(0, t.dtype))


def negative(t: tf.Tensor) -> tf.Tensor:
    return tf.minimum(t, tf.constant(0, t.dtype))


def ones(t: tf.Tensor) -> tf.Tensor:
    return tf.ones_like(t)


def square(t: tf.Tensor) -> tf.Tensor:
    return tf.square(t)


@dataclasses.dataclass(frozen=True)
class WeightSum:
    """A parameter modifier that is a sum of scaled simple ones: ``sum_k c_k * m_k(W)``.

    Being a linear combination, the layer's output under it is the same combination of the outputs
    under each ``m_k`` (``f(x; W + g W^+) = f(x; W) + g f(x; W^+)``), which the engine uses to
    share forward passes between terms. Example: the gamma rule's ``W + gamma * W^+`` is
    ``WeightSum(((1.0, identity), (gamma, positive)))``.
    """

    parts: tuple[tuple[float, Modifier], ...]

    def __call__(self, t: tf.Tensor) -> tf.Tensor:
        out = None
        for c, m in self.parts:
            v = m(t) if c == 1.0 else constant(c, t.dtype) * m(t)
            out = v if out is None else out + v
        return out


def constant(value: Any, dtype: tf.DType) -> tf.Tensor:
    """``value`` (a Python number, array or tensor) as a tensor of ``dtype``. Unlike ``tf.cast`` of a
    Python float, which makes a float32 tensor first, this keeps a float64 value exact."""
    if tf.is_tensor(value):
        return tf.cast(value, dtype)
    return tf.constant(value, dtype=dtype)


def sign0(z: tf.Tensor) -> tf.Tensor:
    """+1 where ``z >= 0``, -1 elsewhere (the sign convention of all stabilisers)."""
    return tf.where(z >= 0, tf.constant(1, z.dtype), tf.constant(-1, z.dtype))


#: smallest normal number of each float dtype: a stabiliser is kept at least this large, so that
#: e.g. TINY (1e-12) does not underflow to 0 in float16 and ``R / stab(0)`` is never ``0 / 0``
_SMALLEST_NORMAL = {tf.float16: 2.0 ** -14, tf.bfloat16: 2.0 ** -126, tf.float32: 2.0 ** -126,
                    tf.float64: 2.0 ** -1022}


def stabilize(z: tf.Tensor, epsilon: float) -> tf.Tensor:
    """``z + epsilon * sign0(z)``: moves the denominator away from zero, keeping its sign. ``epsilon``
    is raised to at least the dtype's smallest normal number, so the result is never zero."""
    if isinstance(epsilon, (int, float)) and z.dtype in _SMALLEST_NORMAL:
        epsilon = max(float(epsilon), _SMALLEST_NORMAL[z.dtype])
    return z + tf.constant(epsilon, z.dtype) * sign0(z)


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

    Subclasses either are :class:`LinearRule` (handled by the generic linear engine) or special rules
    (:class:`Pass`, :class:`WinnerTakesAll`) that layers treat directly.
    """

    name: str = "rule"
    #: Under this rule, max pooling distributes relevance uniformly over each window (LRP Toolbox
    #: semantics of flat and w^2) instead of winner-takes-all.
    uniform_max_pool: bool = False

    def params(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.params() == other.params()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted((k, repr(v)) for k, v in self.params().items()))))

    def merge_rule(self) -> "LinearRule":
        """Rule for layers without weights that mix inputs (sums, average pooling, standalone
        BatchNorm) when this rule is applied to a whole model: proportional split (z-rule) with this
        rule's stabiliser."""
        return Z()


class LinearRule(Rule):
    """A rule given by groups of modified terms and a stabiliser (see module docstring)."""

    epsilon: float = TINY

    def groups(self) -> tuple[Group, ...]:
        raise NotImplementedError

    def stabilize(self, z: tf.Tensor) -> tf.Tensor:
        return stabilize(z, self.epsilon)


class CustomRule(LinearRule):
    """A rule assembled from data, for users who want their own.

    Example: the z+ rule on non-negative inputs::

        rule = it.rules.CustomRule(
            [it.rules.Group((it.rules.Term(kernel=it.rules.positive, bias=None),))],
            epsilon=1e-9, name="my_zplus")
    """

    def __init__(self, groups: Sequence[Group], epsilon: float = TINY, name: str = "custom",
                 uniform_max_pool: bool = False):
        self._groups = tuple(groups)
        self.epsilon = epsilon
        self.name = name
        self.uniform_max_pool = uniform_max_pool

    def groups(self) -> tuple[Group, ...]:
        return self._groups

    def params(self) -> dict[str, Any]:
        return {"groups": self._groups, "epsilon": self.epsilon, "name": self.name}


class Epsilon(LinearRule):
    """LRP-epsilon (Bach et al. 2015, eq. 58; Montavon et al. 2019, eq. 5):
    ``R_i = sum_j x_i w_ij / (z_j + eps * sign(z_j)) R_j`` with ``z_j = sum_i x_i w_ij + b_j``.

    ``bias=False`` leaves the bias out of ``z_j`` (iNNvestigate's "IgnoreBias" variants).
    ``epsilon=0`` is LRP-0, the z-rule: it gets the z-rule's stabiliser :data:`TINY` (1e-12), so
    that units with ``z_j = 0`` give 0 instead of ``0 / 0``.
    """

    name = "epsilon"

    def __init__(self, epsilon: float = 1e-6, bias: bool = True):
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon >= 0 \
                or epsilon == float("inf"):
            raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
        self.epsilon = float(epsilon) if epsilon > 0 else TINY
        self.bias = bool(bias)

    def params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "bias": self.bias}

    def groups(self) -> tuple[Group, ...]:
        return (Group((Term(bias=identity if self.bias else None),)),)

    def merge_rule(self) -> LinearRule:
        return Epsilon(self.epsilon)


class Z(Epsilon):
    """The z-rule, the LRP Toolbox's ``'simple'`` (Bach et al. 2015, eq. 56): epsilon with a tiny,
    sign-matched stabiliser; the bias stays in the denominator and absorbs its share."""

    name = "simple"

    def __init__(self, bias: bool = True):
        super().__init__(TINY, bias)

    def params(self) -> dict[str, Any]:
        return {"bias": self.bias}

    def merge_rule(self) -> LinearRule:
        return Z()


class Flat(LinearRule):
    """The flat rule (Lapuschkin et al. 2019): ``R_i = sum_j 1 / (sum_i' 1) R_j``; each output's
    relevance spreads uniformly over its receptive field. Inputs and weights are ignored."""

    name = "flat"
    uniform_max_pool = True

    def groups(self) -> tuple[Group, ...]:
        return (Group((Term(input=ones, kernel=ones, bias=None),)),)


class WSquare(LinearRule):
    """The w^2 rule (Montavon et al. 2017, Deep Taylor): ``R_i = sum_j w_ij^2 / sum_i' w_i'j^2 R_j``."""

    name = "ww"
    uniform_max_pool = True

    def groups(self) -> tuple[Group, ...]:
        return (Group((Term(input=ones, kernel=square, bias=None),)),)


class AlphaBeta(LinearRule):
    """LRP-alpha-beta (Bach et al. 2015, eq. 60):
    ``R_i = sum_j (alpha * z_ij^+ / z_j^+ - beta * z_ij^- / z_j^-) R_j`` with ``z_ij = x_i w_ij``.

    Positive contributions are ``x^+ w^+ + x^- w^-``, negative ones ``x^+ w^- + x^- w^+``; each part's
    denominator takes the bias of its own sign (unless ``bias=False``). ``beta`` defaults to
    ``alpha - 1`` so that relevance is conserved (alpha=2: alpha2-beta1; alpha=1: alpha1-beta0).
    """

    name = "alphabeta"

    def __init__(self, alpha: float = 2.0, beta: float | None = None, bias: bool = True):
        alpha = float(alpha)
        beta = alpha - 1.0 if beta is None else float(beta)
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta, self.bias = alpha, beta, bool(bias)

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta, "bias": self.bias}

    def groups(self) -> tuple[Group, ...]:
        b_pos = positive if self.bias else None
        b_neg = negative if self.bias else None
        groups = []
        if self.alpha != 0:
            groups.append(Group((Term(positive, positive, b_pos), Term(negative, negative, None)), self.alpha))
        if self.beta != 0:
            groups.append(Group((Term(positive, negative, b_neg), Term(negative, positive, None)), -self.beta))
        return tuple(groups)


class Gamma(LinearRule):
    """LRP-gamma (Montavon et al. 2019, eq. 7), in its generalised, sign-aware form by default.

    Generalised (``generalized=True``, as Zennit's ``Gamma``; Andeol et al. 2021): the weights are
    pushed towards the output's own sign, so the denominator never changes sign. Where the
    pre-activation ``z_j >= 0``::

        R_i = sum_j (x_i^+ (w_ij + g w_ij^+) + x_i^- (w_ij + g w_ij^-)) / d_j^+ R_j,
        d_j^+ = z_j + g (sum_i x_i^+ w_ij^+ + x_i^- w_ij^- + b_j^+)

    and where ``z_j < 0`` the same with ``w^+`` and ``w^-`` (and ``b^+``, ``b^-``) swapped, so that
    ``d_j^- <= z_j < 0``. On non-negative inputs and positive outputs this is exactly eq. 7.

    Literal (``generalized=False``, rule name ``'gamma_literal'``): eq. 7 as printed, ``w + g w^+`` and
    ``b + g b^+`` for every output and input. Montavon et al. state it for ReLU inputs and positive
    outputs; where a unit's output is negative while carrying relevance (a conv-BN before a residual
    sum, a linear bottleneck), ``z + g * (positive part)`` can change sign and the relevance explodes.
    """

    name = "gamma"

    def __init__(self, gamma: float = 0.25, bias: bool = True, generalized: bool = True):
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 <= gamma < float("inf"):
            raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
        self.gamma, self.bias, self.generalized = float(gamma), bool(bias), bool(generalized)

    def params(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "bias": self.bias, "generalized": self.generalized}

    def groups(self) -> tuple[Group, ...]:
        up = WeightSum(((1.0, identity), (self.gamma, positive)))
        down = WeightSum(((1.0, identity), (self.gamma, negative)))
        if not self.generalized:
            return (Group((Term(identity, up, up if self.bias else None),)),)
        return (Group((Term(positive, up, up if self.bias else None), Term(negative, down, None)), outputs="positive"),
                Group((Term(positive, down, down if self.bias else None), Term(negative, up, None)),
                      outputs="negative"))


class ZPlus(AlphaBeta):
    """The z+ rule (Montavon et al. 2017, Deep Taylor): alpha1-beta0 without bias."""

    name = "zplus"

    def __init__(self) -> None:
        super().__init__(1.0, 0.0, bias=False)

    def params(self) -> dict[str, Any]:
        return {}


class ZPlusFast(LinearRule):
    """z+ for non-negative inputs only (``x w^+``, no bias): one forward term instead of two."""

    name = "zplus_fast"

    def groups(self) -> tuple[Group, ...]:
        return (Group((Term(identity, positive, None),)),)


class ZBox(LinearRule):
    """The z^B rule for inputs in a box ``[low, high]`` (Montavon et al. 2017, Deep Taylor):
    ``R_i = sum_j (x_i w_ij - l_i w_ij^+ - h_i w_ij^-) / sum_i' (...) R_j``; no bias.

    ``low`` and ``high`` are required: scalars or arrays broadcastable to the model input (for
    images in [0, 1]: ``low=0.0, high=1.0``), with ``low <= high`` everywhere. In composites they
    are given for the model input and mapped through affine preprocessing layers before the layer.
    """

    name = "zbox"

    def __init__(self, low: Any = None, high: Any = None):
        if low is None or high is None:
            raise ValueError(
                "the z^B (box) rule needs the range of the input values: pass low= and high= (e.g. "
                "low=0.0, high=1.0 for images scaled to [0, 1], or per-channel arrays); on the command "
                "line --low and --high")
        check_bounds(low, high)
        self.low, self.high = low, high

    def params(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high}

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def groups(self) -> tuple[Group, ...]:
        low, high = self.low, self.high

        def fill(value: Any) -> Modifier:
            def mod(x: tf.Tensor) -> tf.Tensor:
                return tf.broadcast_to(constant(value, x.dtype), tf.shape(x))

            return mod

        def neg_pos(w: tf.Tensor) -> tf.Tensor:
            return -positive(w)

        def neg_neg(w: tf.Tensor) -> tf.Tensor:
            return -negative(w)

        return (Group((Term(identity, identity, None), Term(fill(low), neg_pos, None),
                       Term(fill(high), neg_neg, None))),)


def check_bounds(low: Any, high: Any) -> None:
    """``low`` and ``high`` must be finite numbers (or arrays of them) with ``low <= high``."""
    import numpy as np

    if tf.is_tensor(low) or tf.is_tensor(high):  # mapped bounds inside a traced pass
        return
    try:
        lo, hi = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"low and high must be numbers or arrays of numbers, got {low!r} and {high!r}") from None
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError(f"low and high must be finite, got {low!r} and {high!r}")
    try:
        ok = bool(np.all(lo <= hi))
    except ValueError:
        raise ValueError(f"low and high must broadcast against each other, got shapes {lo.shape} and "
                         f"{hi.shape}") from None
    if not ok:
        raise ValueError(f"low must be <= high, got low={low!r} and high={high!r}")


class GradientMap(LinearRule):
    """Relevance through a linear map by its transposed Jacobian, ``R_in = J^T R`` (no division by
    the layer's output): iNNvestigate's "gradient" mapping, which Deep Taylor uses at pooling, sums
    and upsampling. On average pooling each input of a window receives an equal share."""

    name = "gradient_map"

    def groups(self) -> tuple[Group, ...]:
        return (Group((Term(input=ones, bias=None),)),)

    def stabilize(self, z: tf.Tensor) -> tf.Tensor:
        return tf.ones_like(z)


class Pass(Rule):
    """Pass relevance through unchanged (layers whose input and output have the same shape)."""

    name = "pass"


class WinnerTakesAll(Rule):
    """Max pooling's default: each window's relevance goes to the input that won the max."""

    name = "winner_takes_all"


def _alpha_beta(alpha: float = 2.0, beta: float | None = None, bias: bool = True) -> AlphaBeta:
    return AlphaBeta(alpha, beta, bias)


#: Rule names and the factories they stand for. Keyword parameters of :func:`get_rule` are passed on.
RULES: dict[str, Callable[..., Rule]] = {
    "simple": Z,
    "z": Z,
    "epsilon": Epsilon,
    "flat": Flat,
    "ww": WSquare,
    "wsquare": WSquare,
    "alphabeta": _alpha_beta,
    "alpha1beta0": lambda bias=True: AlphaBeta(1.0, 0.0, bias),
    "alpha2beta1": lambda bias=True: AlphaBeta(2.0, 1.0, bias),
    "gamma": Gamma,
    "gamma_literal": lambda gamma=0.25, bias=True: Gamma(gamma, bias, generalized=False),
    "zplus": ZPlus,
    "zplus_fast": ZPlusFast,
    "zbox": ZBox,
    "pass": Pass,
    "winner_takes_all": WinnerTakesAll,
}


def register_rule(name: str, factory: Callable[..., Rule]) -> None:
    """Make ``factory`` available under ``name`` wherever rules are given by name."""
    RULES[name] = factory


def get_rule(rule: Rule | str, **params: Any) -> Rule:
    """Return a :class:`Rule` from a rule object or a name with keyword parameters.

    A name ending in ``_ignore_bias`` (or ``_nobias``) gives the rule with ``bias=False``.
    """
    if isinstance(rule, Rule):
        return rule
    if not isinstance(rule, str):
        raise TypeError(f"a rule is a Rule object or one of the names {sorted(RULES)}, got {rule!r}")
    key = rule.lower()
    for suffix in ("_ignore_bias", "_nobias", "ignorebias"):
        if key.endswith(suffix) and key[: -len(suffix)] in RULES:
            key = key[: -len(suffix)]
            params = {**params, "bias": False}
            break
    if key not in RULES:
        raise ValueError(f"unknown rule {rule!r}; valid rules: {', '.join(sorted(RULES))}")
    accepted = _signature_params(RULES[key])
    unknown = sorted(set(params) - accepted) if accepted is not None else []
    if unknown:
        raise ValueError(f"rule {rule!r} does not take the parameters {unknown}; it takes: "
                         f"{', '.join(sorted(accepted)) or 'no parameters'}")
    try:
        return RULES[key](**params)
    except TypeError as e:
        raise ValueError(f"rule {rule!r} does not take the parameters {sorted(params)}: {e}") from None


def _signature_params(factory: Callable[..., Rule]) -> set[str] | None:
    """The keyword parameters ``factory`` takes; ``None`` if it takes any (``**kwargs``) or cannot tell."""
    import inspect

    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def rule_param_names(name: str) -> set[str]:
    """The keyword parameters that the rule named ``name`` takes (empty if unknown)."""
    key = name.lower()
    for suffix in ("_ignore_bias", "_nobias", "ignorebias"):
        if key.endswith(suffix) and key[: -len(suffix)] in RULES:
            key = key[: -len(suffix)]
    factory = RULES.get(key)
    return (_signature_params(factory) or set()) if factory is not None else set()


def rule_params_from_kwargs(name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword parameters that the factory of rule ``name`` accepts (used by composites)."""
    import inspect

    factory = RULES.get(name)
    if factory is None:
        return {}
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in kwargs.items() if k in sig.parameters}
