"""The one LRP engine: a :class:`~interprettensor.engine.rules.LinearRule` applied to a layer's linear map.

Handlers call :func:`linear_relevance`, which asks the rule (:meth:`Rule.relevance
<interprettensor.engine.rule_algebra.Rule.relevance>`); a linear rule evaluates its groups with
:func:`term_relevance`, the generalised gamma rule with its closed form :func:`sign_aware_gamma`.

A layer contributes a :class:`LinearMap`: a function ``f(xs, params) -> z`` that is linear in each
input for fixed parameters (plus a bias), and its parameters. The transpose needed by LRP is the
vector-Jacobian product of ``f`` (``backend.vjp``), one transposed matmul or transposed convolution.
On TensorFlow, under ``tf.function``, the forward op that the gradient tape records for it is pruned
(its value is not used), so each term costs exactly one backward op; PyTorch, eager, skips the
convolutions and matrix products of that forward but computes its element-wise operations, so maps
whose transpose is one line (sums, a layer norm's centring and scaling) give it as
:attr:`LinearMap.transpose` (checked against the vector-Jacobian product in the tests).

Denominators are computed with as few forward passes as the rule allows:

* the unmodified term reuses the forward pass's pre-activation ``z`` (minus the bias if the rule
  drops it), so LRP-epsilon costs one forward and one backward pass, like gradient x input;
* on inputs known to be non-negative (after a ReLU, pooling of such, ...) input modifiers
  ``positive`` and ``negative`` reduce to the identity and to zero, and zero terms are skipped;
* linearity in the weights gives ``f(x; W^-) = f(x; W) - f(x; W^+)`` and
  ``f(x; W + g W^+) = f(x; W) + g f(x; W^+)``, so alpha-beta and gamma need one extra forward pass;
* groups that explain only the negative outputs (``Group(outputs='negative')``) are skipped where the
  relevance is known to be zero at every output with ``z <= 0`` (a ReLU layer whose consumers all
  redistribute in proportion to their inputs);
* the generalised (sign-aware) gamma rule is evaluated in closed form, one extra forward pass and two
  vector-Jacobian products for both of its groups together, instead of term by term (see
  :func:`sign_aware_gamma`).

A layer may receive the same tensor more than once (``Add()([h, h])``, ``Concatenate()([h, h])``);
the vector-Jacobian products are taken with respect to distinct copies, so that each occurrence gets
its own share and the relevance reaching ``h`` (summed over the occurrences by the graph walk) is
counted once.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

from keras import ops

from . import backend
from .backend import Tensor
from .backend import distinct  # noqa: F401 - re-exported: the engine's modules import it from here
from .rule_algebra import Group, Rule, Term, WeightSum, constant, identity, negative, positive

Params = Mapping[str, Tensor]


@dataclasses.dataclass(frozen=True)
class LinearMap:
    """``z = fn(xs, params)``; ``params`` holds weight tensors under any name and an optional
    ``'bias'``. Rules modify every weight with their kernel modifier and ``'bias'`` with their bias
    modifier (dropping it when the modifier is ``None``). ``bias_axis`` is the axis of ``z`` that the
    bias runs along (``None``: the bias is already broadcastable to ``z``). ``transpose``, where given:
    ``transpose(xs, params, s)``, the bias-free map's vector-Jacobian product ``J^T s`` for each input,
    written out (used instead of ``backend.vjp``, whose recorded forward pass an eager backend runs)."""

    fn: Callable[[Sequence[Tensor], Params], Tensor]
    params: Params
    bias_axis: int | None = -1
    transpose: Callable[[Sequence[Tensor], Params, Tensor], list] | None = None

    def __call__(self, xs: Sequence[Tensor], params: Params | None = None) -> Tensor:
        return self.fn(xs, self.params if params is None else params)

    def broadcast_bias(self, b: Tensor, z: Tensor) -> Tensor:
        if self.bias_axis is None or len(b.shape) != 1:
            return b
        rank = len(z.shape)
        shape = [1] * rank
        shape[self.bias_axis % rank] = -1
        return ops.reshape(b, tuple(shape))


def modify_params(params: Params, term: Term, with_bias: bool = True) -> dict[str, Tensor]:
    out = {}
    for name, value in params.items():
        if name == "bias":
            if with_bias and term.bias is not None and value is not None:
                out[name] = term.bias(value)
        else:
            out[name] = term.kernel(value)
    return out


def _simplify(term: Term, nonneg: bool) -> Term | None:
    """On non-negative inputs, ``positive`` is the identity and ``negative`` gives zeros."""
    if not nonneg:
        return term
    if term.input is negative:
        return None
    if term.input is positive:
        return Term(identity, term.kernel, term.bias)
    return term


class Sum:
    """A linear combination ``sum_i c_i t_i`` of tensors (forward passes, the forward's ``z``, broadcast
    biases) left unevaluated: a denominator such as alpha-beta's ``f(x; W^-) + b^- = z - b - f(x; W^+) + b^-``
    is summed inside the fused kernel that divides by it, instead of materialising each partial sum
    (every one activation-sized, all alive while the layer is explained)."""

    __slots__ = ("parts",)

    def __init__(self, parts: tuple):
        self.parts = parts  # ((coefficient, tensor), ...)

    @classmethod
    def of(cls, t: Tensor) -> "Sum":
        return cls(((1.0, t),))

    def __add__(self, other: "Sum") -> "Sum":
        return Sum(self.parts + other.parts)

    def scaled(self, c: float) -> "Sum":
        return Sum(tuple((c * a, t) for a, t in self.parts))

    def merged(self) -> tuple[tuple[float, ...], list]:
        """(coefficients, tensors): each tensor once, parts that cancel dropped."""
        coefs: dict = {}
        tensors: dict = {}
        for a, t in self.parts:
            coefs[id(t)] = coefs.get(id(t), 0.0) + a
            tensors[id(t)] = t
        keys = [k for k in tensors if coefs[k] != 0.0] or list(tensors)[:1]
        return tuple(coefs[k] for k in keys), [tensors[k] for k in keys]

    def value(self) -> Tensor:
        coefs, tensors = self.merged()
        return combine(coefs, *tensors)


def combine(coefs: Sequence[float], *tensors: Tensor) -> Tensor:
    """``sum_i coefs[i] * tensors[i]`` (broadcasting, in the first tensor's dtype)."""
    total = None
    for c, t in zip(coefs, tensors):
        t = ops.cast(t, tensors[0].dtype)
        t = t if c == 1.0 else (-t if c == -1.0 else t * constant(c, t.dtype))
        total = t if total is None else total + t
    return total


class _Values:
    """Bias-free term values ``f(input(x); kernel(W))`` as :class:`Sum` s of forward passes, each
    computed once, derived where linearity allows."""

    def __init__(self, linear: LinearMap, xs: Sequence[Tensor], z: Tensor | None):
        self.linear, self.xs, self.z = linear, xs, z
        self.cache: dict = {}
        self.last: Tensor | None = None  # the last value computed (not derived)

    def with_bias(self, term: Term) -> Sum:
        """The term's value including its (modified) bias; the plain term is the forward's ``z``."""
        bias = self.linear.params.get("bias")
        if self.z is not None and term.is_identity:
            return Sum.of(self.z)
        v = self.get(term)
        if term.bias is not None and bias is not None:
            v = v + Sum.of(self.linear.broadcast_bias(term.bias(bias), v.parts[0][1]))
        return v

    def _known(self, inp: object, ker: object) -> Sum | None:
        """The value of ``f(inp(x); ker(W))`` if it is cached or is the forward's ``z`` (minus the bias)."""
        if (inp, ker) not in self.cache and inp is identity and ker is identity and self.z is not None:
            b = self.linear.params.get("bias")
            z = Sum.of(self.z)
            self.cache[(identity, identity)] = z if b is None else z + Sum.of(self.linear.broadcast_bias(b, self.z)).scaled(-1.0)
        return self.cache.get((inp, ker))

    def _derive(self, inp: object, ker: object) -> Sum | None:
        """``f(inp(x); ker(W))`` from values already known, by linearity in the weights
        (``f(x; W^+) + f(x; W^-) = f(x; W)``, and sums of weight modifiers) or in the inputs
        (``f(x^+; W) + f(x^-; W) = f(x; W)``); ``None`` if it has to be computed."""
        if isinstance(ker, WeightSum) and all(m in (identity, positive, negative) for _, m in ker.parts):
            value = None
            for c, m in ker.parts:
                v = self.get(Term(inp, m, None)).scaled(float(c))
                value = v if value is None else value + v
            return value
        if ker in _PARTNER:
            other, whole = self._known(inp, _PARTNER[ker]), self._known(inp, identity)
            if other is not None and whole is not None:
                return whole + other.scaled(-1.0)
        if inp in _PARTNER:
            other, whole = self._known(_PARTNER[inp], ker), self._known(identity, ker)
            if other is not None and whole is not None:
                return whole + other.scaled(-1.0)
        return self._known(inp, ker)

    def get(self, term: Term) -> Sum:
        """The bias-free value ``f(input(x); kernel(W))``, derived from known values where linearity
        allows, else computed (one forward pass)."""
        key = (term.input, term.kernel)
        if key in self.cache:
            return self.cache[key]
        value = self._derive(term.input, term.kernel)
        if value is None:
            def compute() -> Tensor:
                # an input filled with a value the same for every sample (z^B's bounds): the term's
                # forward pass on one sample, broadcast where it is used (1/N of the work and memory)
                same = getattr(term.input, "same_over_batch", None)
                one = same is not None and all(x.shape[0] != 1 and same(x) for x in self.xs)
                inputs = [term.input(x[:1] if one else x) for x in self.xs]
                return self.linear(inputs, modify_params(self.linear.params, term, with_bias=False))

            # one forward pass after the other (their inputs and outputs are activation-sized)
            computed = compute() if self.last is None else backend.after([self.last], compute)
            self.last = computed
            value = Sum.of(computed)
        self.cache[key] = value
        return value


_PARTNER = {positive: negative, negative: positive}


class Product:
    """Relevance ``x * g`` (an input times its vector-Jacobian product) left unevaluated, so that the
    next layer's division ``R / stab(z)`` reads ``x`` and ``g`` in the same fused kernel instead of
    materialising ``R`` first. :func:`materialize` evaluates it."""

    __slots__ = ("x", "g")

    def __init__(self, x: Tensor, g: Tensor):
        self.x, self.g = x, g

    @property
    def shape(self) -> Any:
        return self.x.shape

    @property
    def dtype(self) -> Any:
        return self.x.dtype

    def value(self) -> Tensor:
        return self.x * self.g


def materialize(R: "Tensor | Product") -> Tensor:
    return R.value() if isinstance(R, Product) else R


#: per-sample size from which the stabilised division runs as one fused kernel (the backend's
#: :data:`~interprettensor.engine.backend.FUSED_MIN_ELEMENTS`: 2^19 for TensorFlow's XLA, compiled per
#: shape; 2^16 for PyTorch's Inductor, compiled once for all shapes); smaller tensors use plain operations
XLA_MIN_ELEMENTS = backend.FUSED_MIN_ELEMENTS


@functools.cache
def _ratio_functions(rule: Any, lazy: bool, groups: tuple, n_parts: int, signed: bool) -> tuple:
    """``(xla_function, plain_function)`` computing every group's ``coefficient * R / stabilize(z_g)`` at
    once from ``R`` (or the two factors of a :class:`Product`), ``n_parts`` tensors, of which each
    group's denominator ``z_g`` is a sum with coefficients, and, where ``signed``, the forward ``z``.
    ``groups``: ``((coefficient, select, coefficients over the parts), ...)``; ``select``: keep only the
    outputs where ``z >= 0`` (``'positive'``) or ``< 0`` (``'negative'``), zero elsewhere."""
    def ratio(*args: Tensor) -> "Tensor | tuple":
        args = list(args)
        sign = args.pop() if signed else None
        parts = args[len(args) - n_parts:]
        r = args[:len(args) - n_parts]
        num = r[0] * r[1] if lazy else r[0]
        out = []
        for coefficient, select, coefs in groups:
            z = ops.cast(combine(coefs, *parts), num.dtype)
            s = num / rule.stabilize(z)
            if coefficient != 1.0:
                s = s * constant(coefficient, s.dtype)
            if select is not None:
                keep = sign >= 0 if select == "positive" else sign < 0
                s = ops.where(keep, s, ops.zeros_like(s))
            out.append(s)
        return out[0] if len(out) == 1 else tuple(out)

    return backend.fused(ratio), ratio


def _ratios(rule: Any, R: "Tensor | Product", denominators: Sequence[Sum], coefficients: Sequence[float],
            selects: Sequence[str | None] = (), z_sign: Tensor | None = None) -> list[Tensor]:
    """``coefficient_g * R / stabilize(z_g)`` for each group ``g`` (``z_g`` a :class:`Sum`), computed
    together: ``R`` and the forward passes its denominators sum are read once, and die before the
    transposes that follow (which would otherwise run with them, and each other, alive). On large
    activations one fused XLA kernel: there the stabiliser's element-wise ops are memory-bound, and
    fusing them (with the product that formed ``R`` and the sums that form ``z_g``) keeps LRP-epsilon
    at the cost of gradient x input. Plain ops on small tensors (see :data:`XLA_MIN_ELEMENTS`) and
    when running eagerly. ``selects[g]``: keep only the outputs where ``z_sign >= 0``
    (``'positive'``) or ``< 0`` (``'negative'``), zero elsewhere."""
    lazy = isinstance(R, Product)
    tensors: dict = {}
    for d in denominators:
        for _, t in d.parts:
            tensors.setdefault(id(t), t)
    index = {k: i for i, k in enumerate(tensors)}
    parts = list(tensors.values())
    groups = []
    for d, c, sel in zip(denominators, coefficients, list(selects) + [None] * len(denominators)):
        coefs, ts = d.merged()
        over = [0.0] * len(parts)
        for a, t in zip(coefs, ts):
            over[index[id(t)]] = a
        groups.append((float(c), sel, tuple(over)))
    signed = any(sel is not None for _, sel, _ in groups)
    fn = _ratio_functions(rule, lazy, tuple(groups), len(parts), signed)
    args = ((R.x, R.g) if lazy else (R,)) + tuple(parts)
    if signed:
        args = args + (ops.cast(z_sign, parts[0].dtype),)
    out = fn[0](*args) if use_fused(parts[0]) else fn[1](*args)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def use_fused(z: Tensor) -> bool:
    """Whether the engine's element-wise functions run as fused kernels on ``z`` (from
    :data:`XLA_MIN_ELEMENTS` per sample, where the backend fuses)."""
    return backend.use_fused(z, XLA_MIN_ELEMENTS)


def _vjp(linear: LinearMap, inputs: Sequence[Tensor], params: Params, s: Tensor) -> list[Tensor]:
    """``J^T s`` of ``f(., params)`` for each input (the forward op inside it is dead code), or the
    map's own :attr:`~LinearMap.transpose`."""
    if linear.transpose is not None:
        return list(linear.transpose(inputs, params, s))
    return backend.vjp(lambda xs: linear(xs, params), inputs, s)


def interval_bounds(linear: LinearMap, x: Tensor, low: object, high: object) -> tuple[Tensor, Tensor]:
    """Bounds of ``linear([x])`` for every ``x`` in the box ``[low, high]`` (interval arithmetic):
    ``l' = f(l; W^+) + f(h; W^-) + b`` and ``h' = f(h; W^+) + f(l; W^-) + b``."""
    lo = ops.broadcast_to(constant(low, x.dtype), ops.shape(x))
    hi = ops.broadcast_to(constant(high, x.dtype), ops.shape(x))

    def f(v: Tensor, kernel: object) -> Tensor:
        return linear([v], modify_params(linear.params, Term(identity, kernel, None), with_bias=False))

    new_lo = f(lo, positive) + f(hi, negative)
    new_hi = f(hi, positive) + f(lo, negative)
    b = linear.params.get("bias")
    if b is not None:
        new_lo = new_lo + linear.broadcast_bias(b, new_lo)
        new_hi = new_hi + linear.broadcast_bias(b, new_hi)
    return new_lo, new_hi


def active_groups(rule: Any, positive_outputs_only: bool = False) -> tuple[Group, ...]:
    """The rule's groups; where the relevance is zero at every output with ``z <= 0``
    (``positive_outputs_only``), groups for negative outputs are dropped and the selection of positive
    outputs is dropped as a no-op."""
    groups = rule.groups()
    if not positive_outputs_only:
        return groups
    return tuple(Group(g.terms, g.coefficient) if g.outputs == "positive" else g
                 for g in groups if g.outputs != "negative")


def linear_relevance(linear: LinearMap, xs: Sequence[Tensor], R: "Tensor | Product", rule: Rule,
                     z: Tensor | None = None, nonneg: Sequence[bool] | bool = False,
                     lazy: bool = False, positive_outputs_only: bool = False) -> list:
    """Relevance at each input of ``linear`` given relevance ``R`` at its (pre-activation) output, as
    ``rule`` computes it (:meth:`~interprettensor.engine.rule_algebra.Rule.relevance`).

    Args:
        linear: the layer's linear map and parameters.
        xs: the layer's inputs in the forward pass.
        R: relevance at the output, shaped like ``z``.
        rule: the rule (a linear rule: its groups of modified terms and its stabiliser).
        z: the forward pass's value of ``linear(xs)`` (reused for the unmodified term).
        nonneg: whether the inputs are known to be non-negative (one flag, or one per input).
        lazy: a single-term result may be returned as a :class:`Product` (see :func:`materialize`).
        positive_outputs_only: ``R`` is known to be zero wherever ``z <= 0`` (groups for negative
            outputs are skipped).

    Everything the rule computes is ordered after ``R`` exists (``backend.after``): its modified
    forward passes (``f(x; W^+)``, ``f(|x|; |W|)``, ``f(l; W^+)``), modified inputs (``x^+``,
    ``|x|``) and weights depend on the forward pass's values only, so a graph executor would
    otherwise run them with the forward pass and hold every layer's results until the relevance
    arrives (activation-sized tensors for each layer at once). Made when the relevance reaches the
    layer, each lives only while its layer is explained, as a gradient's intermediates do.
    """
    dep = R.g if isinstance(R, Product) else R
    return backend.after([dep], lambda: rule.relevance(linear, xs, R, z, nonneg, lazy, positive_outputs_only))


def term_relevance(linear: LinearMap, xs: Sequence[Tensor], R: "Tensor | Product", rule: Any,
                   z: Tensor | None = None, nonneg: Sequence[bool] | bool = False,
                   lazy: bool = False, positive_outputs_only: bool = False) -> list:
    """A linear rule's groups (``rule.groups()``, stabilised by ``rule.stabilize``) evaluated term by
    term: the equation of :mod:`.rule_algebra`. Arguments as for :func:`linear_relevance`.

    Terms with the same input modifier share the product with the input:
    ``sum_t m(x) * J_t^T s_t = m(x) * sum_t J_t^T s_t`` (alpha-beta on a non-negative input: one
    product ``x * (W^+^T s^+ + W^-^T s^-)``, left unevaluated where ``lazy``), so one input-sized
    tensor per modifier is alive instead of one per term."""
    groups = active_groups(rule, positive_outputs_only)
    all_nonneg = all(nonneg) if isinstance(nonneg, (list, tuple)) else bool(nonneg)
    values = _Values(linear, xs, z)
    active = []  # (group, its terms on these inputs)
    for group in groups:
        terms = [t for t in (_simplify(t, all_nonneg) for t in group.terms) if t is not None]
        if terms:
            active.append((group, terms))
    if not active:
        return [ops.zeros_like(x) for x in xs]

    def denominator(terms: list) -> Sum:
        zg = values.with_bias(terms[0])
        for term in terms[1:]:
            zg = zg + values.with_bias(term)
        return zg

    def ratios(part: list) -> list[Tensor]:
        dens = [denominator(terms) for _, terms in part]
        selects = [g.outputs for g, _ in part]
        z_sign = values.with_bias(Term()).value() if any(sel is not None for sel in selects) else None
        out = _ratios(rule, R, dens, [g.coefficient for g, _ in part], selects, z_sign)
        return [ops.cast(s, dens[0].parts[0][1].dtype) for s in out]

    summed: dict = {}  # input modifier -> (modified inputs, the sum of their terms' vector-Jacobian products)
    last: list | None = None

    def transposes(terms: list, s: Tensor) -> None:
        nonlocal last
        for term in terms:
            def contribution(term: Term = term) -> tuple:
                inputs = [term.input(x) for x in xs]
                return inputs, _vjp(linear, inputs, modify_params(linear.params, term, with_bias=False), s)

            # one transpose after the other: the executor would otherwise run them at once, with all
            # their activation-sized results and working memory alive together
            inputs, grads = contribution() if last is None else backend.after(last, contribution)
            if term.input in summed:
                grads = [a + b for a, b in zip(summed[term.input][1], grads)]
            summed[term.input] = (inputs, grads)
            last = grads

    if all(t.input is identity for _, terms in active for t in terms):
        # every group's denominator is a sum of the same few forward passes (alpha-beta on a
        # non-negative input: f(x; W^+) and z): all ratios at once, then the transposes
        last = ratios(active)
        for (_, terms), s in zip(active, list(last)):
            transposes(terms, s)
    else:
        # groups with their own modified inputs (x^+, x^-) and forward passes: one group after the other
        for item in active:
            s = ratios([item])[0] if last is None else backend.after(last, lambda item=item: ratios([item])[0])
            transposes(item[1], s)
    if lazy and len(summed) == 1:
        inputs, grads = next(iter(summed.values()))
        return [Product(x, g) for x, g in zip(inputs, grads)]
    result = None
    for inputs, grads in summed.values():
        part = [x * g for x, g in zip(inputs, grads)]
        result = part if result is None else [a + c for a, c in zip(result, part)]
    return result


#: ``True``: evaluate the generalised gamma rule term by term from its groups, like any other rule (the
#: reference that :func:`sign_aware_gamma` is tested against). Read when a pass is traced.
GENERIC_GAMMA: contextvars.ContextVar = contextvars.ContextVar("generic_gamma", default=False)


def absolute(t: Tensor) -> Tensor:
    return ops.abs(t)


@functools.cache
def _gamma_ratio(rule: Any, lazy: bool, term: str | None, has_bias: bool, signed: bool, split: bool) -> tuple:
    """``(xla_function, plain_function)`` computing the generalised gamma's ``s = R / stab(d)`` from the
    relevance ``R`` (or the factors of a :class:`Product`), the forward ``z``, the term value ``t`` and
    the broadcast bias ``b`` (see :func:`sign_aware_gamma`; ``term``: ``'P'`` if ``t = f(x; W^+)``,
    ``'Q'`` if ``t = f(|x|; |W|)``, ``None`` if gamma is 0). ``split``: return
    ``((1 + g/2) s, (g/2) e s)`` with ``e = sign0(z)`` (``+1`` everywhere unless ``signed``), else ``s``."""
    def ratio(*args: Tensor) -> "Tensor | tuple[Tensor, Tensor]":
        args = list(args)
        b = args.pop() if has_bias else None
        t = args.pop() if term is not None else None
        z = args.pop()
        num = args[0] * args[1] if lazy else args[0]
        with_b = b is not None and rule.bias
        z0 = z - b if b is not None and not (with_b and term == "Q") else z  # bias-free f(x; W)
        d = z if with_b else z0
        e = ops.where(z >= 0, constant(1, z.dtype), constant(-1, z.dtype)) if signed else None
        if term == "Q":
            # where z >= 0: P + b^+ = (z0 + Q + b + |b|) / 2; elsewhere N + b^- = (z0 - Q + b - |b|) / 2
            if with_b:
                q = t + ops.abs(b)
                d = d + constant(rule.gamma / 2.0, z.dtype) * (z + (e * q if signed else q))
            else:
                d = d + constant(rule.gamma / 2.0, z.dtype) * (z0 + (e * t if signed else t))
        elif term == "P":
            part = ops.where(z >= 0, t, z0 - t) if signed else t  # P where z >= 0, N = z0 - P elsewhere
            if with_b:
                part = part + constant(0.5, z.dtype) * (b + e * ops.abs(b) if signed else b + ops.abs(b))
            d = d + constant(rule.gamma, z.dtype) * part
        s = num / rule.stabilize(ops.cast(d, num.dtype))
        if not split:
            return s
        a = s * constant(1.0 + rule.gamma / 2.0, s.dtype)
        c = s * constant(rule.gamma / 2.0, s.dtype)
        return a, (c * ops.cast(e, c.dtype) if signed else c)

    return backend.fused(ratio), ratio


def _combine(x: Tensor, ax: Tensor, a: Tensor, c: Tensor) -> Tensor:
    return x * a + ax * c


_COMBINE = backend.fused(_combine)


def sign_aware_gamma(linear: LinearMap, xs: Sequence[Tensor], R: "Tensor | Product", rule: Any,
                     z: Tensor | None = None, nonneg: Sequence[bool] | bool = False, lazy: bool = False,
                     positive_outputs_only: bool = False) -> list:
    """The generalised gamma rule (:class:`~interprettensor.engine.rules.Gamma`, ``generalized=True``),
    both of its groups at once; equal to the term-by-term evaluation of its groups up to round-off.

    With ``x^+ - x^- = |x|``, ``W^+ - W^- = |W|`` and ``f`` bilinear in inputs and weights, the positive
    and negative contributions are ``P = f(x^+; W^+) + f(x^-; W^-) = (f(x; W) + f(|x|; |W|)) / 2`` and
    ``N = f(x; W) - P``, so the denominators ``d = z + g (P + b^+)`` where ``z >= 0`` and
    ``z + g (N + b^-)`` where ``z < 0`` cost one forward pass ``f(|x|; |W|)`` (``f(x; W^+) = P`` on
    non-negative inputs). As ``W + g W^(+/-) = (1 + g/2) W +/- (g/2) |W|``, the four numerators of the
    two groups sum to two vector-Jacobian products::

        R_in = (1 + g/2) x * J_W^T s + (g/2) |x| * J_|W|^T (e s),   s = R / stab(d),  e = sign0(z)

    (one, ``x * J_(W + g W^+)^T s``, on non-negative inputs where only positive outputs carry relevance).
    Every input of ``f`` must enter through a weight (``f`` bilinear), as for all derivations by linearity
    here; maps without weights (sums) are evaluated term by term. Arguments as for :func:`linear_relevance`.
    """
    flags = list(nonneg) if isinstance(nonneg, (list, tuple)) else [bool(nonneg)] * len(xs)
    all_nonneg = all(flags)
    gamma = rule.gamma
    params = linear.params
    bias = params.get("bias")
    if z is None:
        z = linear(xs)
    signed = not positive_outputs_only
    split = gamma != 0 and (signed or not all_nonneg)
    abs_xs = [x if nn else ops.abs(x) for x, nn in zip(xs, flags)]
    args: list = [R.x, R.g] if isinstance(R, Product) else [R]
    args.append(z)
    term = None
    if gamma != 0:
        if all_nonneg:
            term = "P"
            args.append(linear(xs, modify_params(params, Term(kernel=positive), with_bias=False)))
        else:
            term = "Q"
            args.append(linear(abs_xs, modify_params(params, Term(kernel=absolute), with_bias=False)))
    if bias is not None:
        args.append(linear.broadcast_bias(bias, z))
    fns = _gamma_ratio(rule, isinstance(R, Product), term, bias is not None, signed, split)
    out = fns[0](*args) if use_fused(z) else fns[1](*args)
    if not split:
        kernel = WeightSum(((1.0, identity), (gamma, positive))) if gamma != 0 else identity
        s = ops.cast(out, z.dtype)
        grads = _vjp(linear, xs, modify_params(params, Term(kernel=kernel), with_bias=False), s)
        return [Product(x, g) if lazy else x * g for x, g in zip(xs, grads)]
    a, c = (ops.cast(v, z.dtype) for v in out)
    grads_w = _vjp(linear, xs, modify_params(params, Term(), with_bias=False), a)
    # the second transpose after the first (the executor would otherwise run both, with their working
    # memory, at once)
    grads_abs = backend.after(grads_w, lambda: _vjp(linear, xs, modify_params(params, Term(kernel=absolute),
                                                                               with_bias=False), c))
    result = []
    for x, ax, nn, ga, gc in zip(xs, abs_xs, flags, grads_w, grads_abs):
        if nn:
            g = ga + gc
            result.append(Product(x, g) if lazy else x * g)
        else:
            result.append(_COMBINE(x, ax, ga, gc) if use_fused(x) else _combine(x, ax, ga, gc))
    return result
