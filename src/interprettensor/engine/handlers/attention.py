"""Operations of attention: products of two activations (``Q·Kᵀ``, ``A·V``: einsum and matmul of two
computed tensors; an element-wise ``a * b`` is a :class:`~.routing.GateHandler`) and the softmax.
Their rules are the operation rules of :mod:`interprettensor.engine.operation_rules`."""

from __future__ import annotations

from typing import Any

from keras import ops

from .. import dtypes
from ..backend import Tensor
from ..errors import ExplainError
from ..linear import LinearMap, Product, linear_relevance, materialize
from ..operation_rules import product_relevance, softmax_relevance
from .base import (
    DEFAULT_PASS,
    LINEAR,
    PRODUCT,
    SOFTMAX,
    Handler,
    cached_map,
    check_linear_rule,
    shaped_like,
)

__all__ = ["ContractionHandler", "MultiOutputLinearHandler", "OpLinearHandler", "ProductHandler", "SoftmaxHandler",
           "signal_inputs"]


def _factors(step: Any, xs: list) -> list[bool]:
    """The inputs that are factors carrying relevance (float, and computed from the explained input;
    a mask cast to float is a constant)."""
    carried = tuple(step.carried) if getattr(step, "carried", ()) else (True,) * len(xs)
    return [dtypes.is_floating(x.dtype) and c for x, c in zip(xs, carried)]


def signal_inputs(step: Any, xs: list, out: Tensor) -> list[bool]:
    """Which float inputs of a product carry the signal under :class:`Gate`: those the graph did not
    mark as gates (``step.gates``); if that leaves none or all, the first input shaped like the
    output (else the first input)."""
    floats = _factors(step, xs)
    gates = tuple(step.gates) if getattr(step, "gates", ()) else (False,) * len(xs)
    signal = [f and not g for f, g in zip(floats, gates)]
    if 0 < sum(signal) < sum(floats):
        return signal
    idx = next((i for i, x in enumerate(xs) if floats[i] and x.shape == out.shape),
               next(i for i, f in enumerate(floats) if f))
    return [i == idx for i in range(len(xs))]


def factor_relevance(step: Any, xs: list, z: Tensor, R: "Tensor | Product", rule: Any,
                     elementwise: bool = False) -> list:
    """Relevance of the factors of the product ``step`` under the product rule ``rule`` (the shares of
    :meth:`ProductRule.shares`: uniform split, gate, or, for element-wise products only, in proportion
    to the factors' values)."""
    if not rule.explains_products:
        raise ExplainError(f"layer {step.name!r} ({step.type_name}) multiplies two computed tensors and cannot use "
                           f"rule {rule!r}: give it 'uniform' (AttnLRP) or 'gate' (CP-LRP)")
    floats = _factors(step, xs)
    if not any(floats):  # a product of constants, masks and positions (an ALiBi bias): no relevance flows back
        return [None] * len(xs)
    signal = signal_inputs(step, xs, z)
    if rule.elementwise_only:
        if not elementwise:
            raise ExplainError(f"layer {step.name!r} ({step.type_name}) contracts its factors (einsum, matmul), so rule "
                               f"{rule.name!r}, which splits each element of an element-wise product by the factors' "
                               f"values, does not apply: give it 'uniform' (AttnLRP), 'half' or 'gate' (CP-LRP)")
        idx = [i for i, f in enumerate(floats) if f]
        shape = ops.shape(z)
        part = rule.shares([ops.broadcast_to(ops.cast(xs[i], z.dtype), shape) for i in idx], [signal[i] for i in idx])
        shares: list = [0.0] * len(xs)
        for i, w in zip(idx, part):
            shares[i] = w
    else:
        part = rule.shares([x for x, f in zip(xs, floats) if f], [s for s, f in zip(signal, floats) if f])
        it_part = iter(part)
        shares = [next(it_part) if f else 0.0 for f in floats]
    eps = rule.epsilon

    def fn(args):
        return step.call(args)[0]

    if isinstance(R, Product):  # read by the division's kernel, not multiplied out first
        R = Product(ops.reshape(R.x, ops.shape(z)), ops.reshape(R.g, ops.shape(z)))
    else:
        R = ops.reshape(R, ops.shape(z))
    return product_relevance(fn, xs, z, R, shares, eps, lazy=True)


class ProductHandler(Handler):
    """A product of two or more computed tensors, linear in each (einsum, matmul): the uniform rule
    (AttnLRP) or the gate rule (CP-LRP)."""

    category = PRODUCT
    accepts_lazy = True

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        return factor_relevance(step, list(xs), ys[0], Rs[0], rule)


class OpLinearHandler(Handler):
    """A keras operation that is linear in its one computed input (an einsum or matmul with a constant,
    a mean or sum, a division by a constant): the rule for sums and pooling (``merge`` of the
    composite) applies to it as a linear map."""

    category = LINEAR
    accepts_lazy = True
    batch_records = True

    def linear_map(self, step: Any, xs) -> LinearMap:
        def fn(args, p):
            return p["kernel"] * step.call(args)[0]

        return LinearMap(fn, {"kernel": ops.ones((), xs[0].dtype)}, None)

    def forward(self, layer, xs, step, options=DEFAULT_PASS):
        lm = self.linear_map(step, xs)
        z = step.call(xs)[0]
        return [z], {"z": z, "map": lm}

    def output_nonneg(self, layer, inputs_nonneg, step):
        return False

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        if rule.passes_through:
            raise ExplainError(f"layer {step.name!r} ({step.type_name}) is a linear operation and needs a rule for "
                               f"linear maps (epsilon, z, ...)")
        rule = check_linear_rule(rule, step)
        floats = _factors(step, xs)
        lm = cached_map(state.get("map"), [x for x in xs if dtypes.is_floating(x.dtype)]) or self.linear_map(step, xs)
        z = state["z"]
        idx = [i for i, f in enumerate(floats) if f]
        if len(idx) == len(xs):
            return linear_relevance(lm, xs, shaped_like(Rs[0], z), rule, z, step.nonneg, lazy=True)

        def fn(args, p):  # the float inputs only; the others held at their values
            full = list(xs)
            for i, a in zip(idx, args):
                full[i] = a
            return lm.fn(full, p)

        part = linear_relevance(LinearMap(fn, lm.params, None), [xs[i] for i in idx], shaped_like(Rs[0], z), rule,
                                z, False, lazy=True)
        out: list = [None] * len(xs)
        for i, r in zip(idx, part):
            out[i] = r
        return out


def _joined(ts: list) -> Tensor:
    """The tensors flattened per sample and joined: ``(batch, n_1 + n_2 + ...)``."""
    flat = [ops.reshape(t, (ops.shape(t)[0], -1)) for t in ts]
    return flat[0] if len(flat) == 1 else ops.concatenate(flat, axis=1)


class MultiOutputLinearHandler(OpLinearHandler):
    """A map linear in its computed inputs with several outputs (``keras.ops.fft2``'s real and
    imaginary parts; a rotary embedding applied to queries and keys in one call): one linear map whose
    output is all of the outputs joined per sample (:func:`_joined`), so that the composite's rule
    (``merge``: the z-rule under the presets) sees every output's relevance at once, ``R_x = x ⊙ Jᵀ(R /
    stab(z))`` with ``z`` and ``R`` the joined outputs and their relevance. An output whose relevance is
    ``None`` (an imaginary part nobody reads) contributes zeros."""

    def linear_map(self, step: Any, xs) -> LinearMap:
        def fn(args, p):
            return p["kernel"] * _joined([ops.cast(o, args[0].dtype) for o in step.call(args)])

        return LinearMap(fn, {"kernel": ops.ones((), xs[0].dtype)}, None)

    def forward(self, layer, xs, step, options=DEFAULT_PASS):
        outs = step.call(xs)
        return outs, {"z": _joined([ops.cast(o, xs[0].dtype) for o in outs]), "map": self.linear_map(step, xs)}

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        R = _joined([ops.cast(materialize(r), state["z"].dtype) for r in Rs])
        return super().relevance(layer, xs, ys, state, [R], rule, step, options)


class ContractionHandler(Handler):
    """Einsum, matmul, tensordot, dot: a :class:`ProductHandler` when two or more computed tensors
    meet, an :class:`OpLinearHandler` when one meets a constant (see :meth:`for_inputs`)."""

    category = PRODUCT

    def __init__(self) -> None:
        self.product, self.linear = ProductHandler(), OpLinearHandler()

    def for_inputs(self, n_float: int) -> Handler | None:
        """The handler for ``n_float`` inputs that carry relevance."""
        if n_float == 0:
            from .embedding import ConstantHandler
            return ConstantHandler()
        return self.product if n_float >= 2 else self.linear


class SoftmaxHandler(Handler):
    """A softmax (the layer, also with a mask, or ``keras.ops.softmax``): AttnLRP's softmax rule, or
    relevance passed through unchanged (``'pass'``, the default outside the transformer presets)."""

    category = SOFTMAX
    accepts_lazy = True
    batch_records = True

    def output_nonneg(self, layer, inputs_nonneg, step):
        return True

    def is_gate(self, layer, step):
        return True

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        R = shaped_like(Rs[0], ys[0])
        rest = [None] * (len(xs) - 1)
        if rule is None or rule.passes_through:
            return [materialize(R)] + rest
        if rule.explains_softmax:
            axis = getattr(layer, "axis", -1)
            axis = list(axis) if isinstance(axis, (list, tuple)) else axis
            return [softmax_relevance(xs[0], ys[0], R, axis)] + rest
        raise ExplainError(f"layer {step.name!r} ({step.type_name}) is a softmax and cannot use rule {rule!r}: "
                           f"give it 'softmax' (AttnLRP) or 'pass'")
