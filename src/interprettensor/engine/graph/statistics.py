"""Normalisations recognised by what they compute (:func:`mark_statistics`), whatever the layer's class.

A normalisation divides a tensor ``a`` by a statistic of it: ``a · rsqrt(mean(a²) + ε)`` (RMS norm,
any spelling: ``rsqrt``, ``1 / sqrt``, ``(·)^-½``, a division by ``sqrt``), ``(x − mean x) / sqrt(var x
+ ε)`` (layer norm), ``a / ‖a‖`` (L2 normalisation), followed or not by a scale ``γ`` or ``1 + γ``.
AttnLRP (Achtibat et al. 2024, Sec. 3.3) and LXT hold that statistic constant: the scaling becomes a
diagonal linear map, through which relevance passes unchanged (the centring ``x − mean x``, where there
is one, stays a linear map of its own, and the scale ``γ`` an element-wise product with a constant).

Why a pattern in the traced graph, not a numerical probe: the graph of a layer's call (traced into
keras operations, :mod:`interprettensor.engine.expand`) says exactly which tensor is scaled by which
function of which other tensor, so the recognition is exact and holds for every input; probing a layer
numerically (``f(c·x) = f(x)`` for a few ``x`` and ``c``) can only test finitely many points, is fooled
by ``ε`` and cannot tell which part of the computation the statistic is. The rule recognised here is
algebraic: in a product ``a ⊙ s`` (or a quotient ``a / s``), ``s`` is a *statistic of a* when it is
computed from ``a`` (or from the tensor ``a`` is a centred or cast copy of) only by the operations of
:data:`_DEGREE` (powers, square roots, reciprocals, adding a constant ``ε``, casts, reshapes), at least
one of which is a reduction (mean, sum, variance, norm), and its degree of homogeneity in that tensor
is ``−1`` (``+1`` for a divisor): ``a ⊙ s`` is then invariant to scaling ``a`` up to ``ε``, a
normalisation. An element-wise function (``a · rsqrt(a²)`` is ``sign(a)``), a gate computed by layers
with weights (squeeze-and-excitation) or a statistic of another degree are not normalisations and keep
their own rules.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from ..handlers.normalization import HeldStatisticHandler, NormScaleHandler
from .model import Graph, Step

__all__ = ["mark_statistics"]

_SAME = ("Cast", "Reshape", "ExpandDims", "Squeeze", "BroadcastTo", "Transpose", "StopGradient")
_REDUCTIONS = {"Mean": 1, "Sum": 1, "Var": 2, "Std": 1, "Norm": 1}
_POWERS = {"Square": Fraction(2), "Sqrt": Fraction(1, 2), "Rsqrt": Fraction(-1, 2), "Reciprocal": Fraction(-1),
           "Abs": Fraction(1)}

#: the operations a statistic may be made of (the keras operation's class name; the layers ``Add``,
#: ``Multiply``, ``Subtract`` alike), each with its degree in :meth:`_Deg.of`
_DEGREE = frozenset(_SAME + tuple(_REDUCTIONS) + tuple(_POWERS) + ("Power", "Add", "Subtract", "Multiply", "Divide",
                                                                  "TrueDivide"))


class _Deg:
    """The degree of homogeneity of tensors in a root tensor, and whether they pass a reduction."""

    def __init__(self, producer: dict, roots: set):
        self.producer, self.roots = producer, roots
        self.memo: dict = {}
        self.steps: set = set()

    def of(self, key: Any) -> tuple[Fraction, bool] | None:
        """``(degree, reduced)`` of the tensor ``key`` in the roots, or ``None`` if it is not a
        function of them by the operations of :data:`_DEGREE`."""
        if key in self.roots:
            return Fraction(1), False
        if key not in self.memo:
            self.memo[key] = None  # a cycle cannot occur in a graph, but a key is computed once
            step = self.producer.get(key)
            out = None if step is None or step.type_name not in _DEGREE else self._step(step, key)
            self.memo[key] = out
            if out is not None:
                self.steps.add(step)
        return self.memo[key]

    def _step(self, step: Step, key: Any) -> tuple[Fraction, bool] | None:
        t, ins, opts = step.type_name, step.inputs, step.options
        parts = [self.of(k) for k in ins]
        if not ins or any(p is None for p in parts):
            return None
        if t in _SAME:
            return parts[0] if len(ins) == 1 else None
        if t in _POWERS:
            return (parts[0][0] * _POWERS[t], parts[0][1]) if len(ins) == 1 else None
        if t in _REDUCTIONS:
            return (parts[0][0] * _REDUCTIONS[t], True) if len(ins) == 1 else None
        reduced = any(r for _, r in parts)
        if t == "Power":  # x ** p with a number p
            p = opts.get("arg1")
            return (parts[0][0] * Fraction(p), reduced) if len(ins) == 1 and p is not None else None
        if t in ("Add", "Subtract"):  # + ε (one tensor and a constant), or terms of one degree
            degrees = {d for d, _ in parts}
            return (degrees.pop(), reduced) if len(degrees) == 1 else None
        if t == "Multiply":  # by constants, or of tensors: degrees add
            return sum((d for d, _ in parts), Fraction(0)), reduced
        if t in ("Divide", "TrueDivide"):
            if len(ins) == 2:
                return parts[0][0] - parts[1][0], reduced
            return (-parts[0][0] if "arg0" in opts else parts[0][0]), reduced  # c / s, or s / c
        return None


def _lineage(a: Any, producer: dict) -> set:
    """``a`` and the tensors it is a cast or centred copy of (``t − mean(t)``): a statistic of any of
    them normalises ``a``."""
    roots, key = {a}, a
    while key in producer:
        step = producer[key]
        if step.type_name == "Cast" and len(step.inputs) == 1:
            key = step.inputs[0]
        elif step.type_name == "Subtract" and len(step.inputs) == 2:
            t, m = step.inputs
            deg = _Deg(producer, {t}).of(m)
            if deg != (Fraction(1), True):
                break
            key = t
        else:
            break
        roots.add(key)
    return roots


def _normalisation(step: Step, producer: dict, consumers: dict) -> tuple[int, set] | None:
    """``(index of the signal input, the statistic's steps)`` if ``step`` scales a tensor by a
    statistic of it (see the module's docstring), else ``None``."""
    if step.type_name not in ("Multiply", "Divide", "TrueDivide") or len(step.inputs) != 2:
        return None
    wanted = Fraction(-1) if step.type_name == "Multiply" else Fraction(1)
    order = (0, 1) if step.type_name == "Multiply" else (0,)  # a / s: the divisor is the statistic
    for i in order:
        a, s = step.inputs[i], step.inputs[1 - i]
        deg = _Deg(producer, _lineage(a, producer))
        if deg.of(s) != (wanted, True):
            continue
        held = set(deg.steps)
        # the statistic's operations feed nothing else (else they would need relevance of their own)
        if all(c in held or c is step for h in held for k in h.outputs for c in consumers.get(k, [])):
            return i, held
    return None


def mark_statistics(g: Graph) -> None:
    """Find the normalisations in ``g`` (see the module's docstring): each product ``a ⊙ s`` or quotient
    ``a / s`` whose ``s`` is a statistic of ``a`` gets :class:`NormScaleHandler` (relevance passes to
    ``a``), the operations computing ``s`` :class:`HeldStatisticHandler` (constants: no relevance, not
    counted as carrying the input). Runs before :func:`~.analyses.mark_carried`."""
    producer, consumers = g.producer(), g.consumers()
    for step in g.steps:
        found = _normalisation(step, producer, consumers)
        if found is None:
            continue
        signal, held = found
        step.handler = NormScaleHandler(signal)
        for h in held:
            h.handler = HeldStatisticHandler()
