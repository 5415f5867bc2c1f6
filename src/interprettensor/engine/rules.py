"""LRP rules, each written once from three parts: input modifiers, parameter modifiers and a stabiliser.

Every rule in the literature that this library offers is a choice of groups of terms (input and
parameter modifiers) with coefficients, and a stabiliser; the equation that evaluates them is in
:mod:`.rule_algebra`. A group may select the outputs it explains by the sign of the unmodified
pre-activation: the generalised gamma rule uses one group for each sign, so that its denominator
never changes sign.

The parts rules are made of (modifiers, :class:`Term`, :class:`Group`, stabilisers, the :class:`Rule`
interface) are in :mod:`.rule_algebra`, the name registry in :mod:`.rule_registry`; both are
re-exported here. :class:`LinearRule` evaluates its groups term by term (:func:`.linear.term_relevance`);
a rule with a cheaper closed form overrides :meth:`LinearRule.relevance` (the generalised
:class:`Gamma`).

Custom rules: subclass :class:`LinearRule` and implement :meth:`LinearRule.groups`, or build one
directly from :class:`Term` and :class:`Group` with :class:`CustomRule`; register it by name with
:func:`register_rule`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from keras import ops

from . import linear as linear_module
from .backend import Tensor
from .linear import term_relevance
from .rule_algebra import (TINY, Fill, Group, Modifier, Rule, Term, WeightSum, constant, identity, negative, ones,
                           positive, sign0, square, stabilize)
from .rule_registry import RULES, _signature_params, get_rule, register_rule, rule_param_names, rule_params_from_kwargs

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

# names other modules import from here
_REEXPORTED = (Modifier, constant, identity, negative, ones, positive, sign0, square, stabilize, _signature_params,
               rule_param_names, rule_params_from_kwargs)


class LinearRule(Rule):
    """A rule given by groups of modified terms and a stabiliser (see module docstring).

    The engine asks it for the relevance of a linear map (:meth:`relevance`: its groups evaluated term
    by term, :func:`~interprettensor.engine.linear.term_relevance`); a subclass with a cheaper closed
    form overrides :meth:`relevance`. Max pooling follows the winner unless :attr:`uniform_max_pool`;
    recurrent cells use the rule for their linear parts with signal-take-all gates.
    """

    epsilon: float = TINY
    explains_linear = True

    def groups(self) -> tuple[Group, ...]:
        raise NotImplementedError

    def stabilize(self, z: Tensor) -> Tensor:
        return stabilize(z, self.epsilon)

    def relevance(self, linear: Any, xs: Sequence[Tensor], R: Any, z: Tensor | None = None,
                  nonneg: Sequence[bool] | bool = False, lazy: bool = False,
                  positive_outputs_only: bool = False) -> list:
        """The equation of the module docstring, group by group (see
        :func:`~interprettensor.engine.linear.linear_relevance` for the arguments)."""
        return term_relevance(linear, xs, R, self, z, nonneg, lazy, positive_outputs_only)

    def merge_rule(self) -> "LinearRule":
        return Z()

    def max_pool(self) -> str:
        return "uniform" if self.uniform_max_pool else "winner"

    def keeps_zeros(self) -> bool:
        return all(t.input in (identity, positive, negative) for grp in self.groups() for t in grp.terms)

    def cell_rules(self) -> tuple[Rule, None]:
        return self, None


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

    def relevance(self, linear, xs, R, z=None, nonneg=False, lazy=False, positive_outputs_only=False) -> list:
        """The generalised rule in closed form (:func:`~interprettensor.engine.linear.sign_aware_gamma`:
        one extra forward pass and two vector-Jacobian products for both groups) on maps with weights;
        term by term otherwise, for the literal rule, for subclasses that change the groups, and while
        :data:`~interprettensor.engine.linear.GENERIC_GAMMA` is set (the reference it is tested against)."""
        if self.generalized and type(self).groups is Gamma.groups and any(k != "bias" for k in linear.params) \
                and not linear_module.GENERIC_GAMMA.get():
            return linear_module.sign_aware_gamma(linear, xs, R, self, z, nonneg, lazy, positive_outputs_only)
        return super().relevance(linear, xs, R, z, nonneg, lazy, positive_outputs_only)


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

    def bounds(self) -> tuple[Any, Any]:
        return self.low, self.high

    def with_bounds(self, low: Any, high: Any) -> "ZBox":
        return ZBox(low, high)

    def groups(self) -> tuple[Group, ...]:
        low, high = self.low, self.high

        def neg_pos(w: Tensor) -> Tensor:
            return -positive(w)

        def neg_neg(w: Tensor) -> Tensor:
            return -negative(w)

        return (Group((Term(identity, identity, None), Term(Fill(low), neg_pos, None),
                       Term(Fill(high), neg_neg, None))),)


def check_bounds(low: Any, high: Any) -> None:
    """``low`` and ``high`` must be finite numbers (or arrays of them) with ``low <= high``."""
    import numpy as np

    if ops.is_tensor(low) or ops.is_tensor(high):  # mapped bounds inside a traced pass
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

    def stabilize(self, z: Tensor) -> Tensor:
        return ops.ones_like(z)


class Pass(Rule):
    """Pass relevance through unchanged (layers whose input and output have the same shape)."""

    name = "pass"
    passes_through = True


class WinnerTakesAll(Rule):
    """Max pooling's default: each window's relevance goes to the input that won the max."""

    name = "winner_takes_all"

    def max_pool(self) -> str:
        return "winner"


def _alpha_beta(alpha: float = 2.0, beta: float | None = None, bias: bool = True) -> AlphaBeta:
    return AlphaBeta(alpha, beta, bias)


_BUILTIN: dict[str, Callable[..., Rule]] = {
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


for _name, _factory in _BUILTIN.items():
    register_rule(_name, _factory)
