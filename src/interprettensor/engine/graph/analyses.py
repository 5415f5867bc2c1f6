"""Static analyses of a graph, run once it is built: which inputs of each step carry relevance
(:func:`mark_carried`), are non-negative (:func:`mark_nonneg`) or gate a product (:func:`mark_gates`);
and, per rule set, which layers' relevance is provably zero where their output is
(:func:`relu_denominator_steps`, :func:`positive_output_steps`)."""

from __future__ import annotations

from typing import Any, Sequence

import keras

from ..errors import ExplainError
from ..handlers import GATE, PRODUCT
from ..rules import Rule
from .model import Graph, Step


def mark_carried(g: Graph, inputs_float: Sequence[bool]) -> None:
    """Mark which inputs of each step depend on the values of a float model input or an embedding's
    output (a mask cast to float does not); handlers that depend on the number of such inputs (an
    einsum of two activations is a product, of an activation and a constant a linear map) choose
    their form here."""
    carried = {k for k, f in zip(g.inputs, inputs_float) if f}
    for step in g.steps:
        step.carried = tuple(k in carried for k in step.inputs)
        handler = step.handler.for_inputs(sum(step.carried))
        if handler is None and getattr(step.handler, "statistic_op", False):
            raise ExplainError(
                f"layer {step.name!r} of type {step.type_name} cannot be explained: it is a nonlinear operation on "
                f"a tensor that carries relevance, which the engine explains only inside a normalisation's "
                f"statistic (x * rsqrt(mean(x**2) + eps), x / sqrt(var + eps)), held constant there; register a "
                f"handler for the layer that contains it (interprettensor.register_handler)")
        if handler is None:
            raise ExplainError(f"layer {step.name!r} of type {step.type_name} cannot be explained: it combines "
                               f"{sum(step.carried)} computed tensors in a way that has no LRP rule")
        step.handler = handler
        if (any(step.carried) and step.handler.depends_on_values) or step.handler.integer_inputs:
            carried.update(step.outputs)


def _is_gate(step: Step | None, producer: dict) -> bool:
    """``step``'s output is a gate: a softmax, a squashing or gating activation (also as the activation
    of a layer with weights), or such a value reshaped, repeated, transposed or cast (the handler
    answers :meth:`~interprettensor.engine.handlers.Handler.is_gate`)."""
    while step is not None:
        answer = step.handler.is_gate(step.layer, step)
        if answer is not None:
            return answer
        step = producer.get(step.inputs[0])
    return False


def mark_gates(g: Graph) -> None:
    """Mark, for each product (element-wise or contraction), which factors are gates."""
    producer = g.producer()
    for step in g.steps:
        if step.category in (GATE, PRODUCT):
            step.gates = tuple(_is_gate(producer.get(k), producer) for k in step.inputs)


def mark_nonneg(g: Graph) -> None:
    """Mark the inputs of each step that are non-negative by construction (outputs of ReLU-like
    activations, and pooling, reshaping or summing of such); rules use it to skip terms that would
    be zero. Model inputs count as signed."""
    known: set = set()
    for step in g.steps:
        step.nonneg = tuple(k in known for k in step.inputs)
        if step.handler.output_nonneg(step.layer, step.nonneg, step):
            known.update(step.outputs)


def _is_plain_relu(step: Step) -> bool:
    act = step.handler.activation_of(step.layer) if step.handler.uses_output_signs else None
    if act is None:
        return False
    # keras' relu, or a backend's own (tf.nn.relu, jax.nn.relu, torch.relu), by its name
    module = getattr(act, "__module__", None) or ""
    return act is keras.activations.relu or (getattr(act, "__name__", "") == "relu"
                                             and module.startswith(("keras", "tensorflow", "jax", "torch")))


class _ZeroAnalysis:
    """Which tensors' relevance is provably zero wherever the tensor is zero: every consumer
    redistributes in proportion to its inputs under its rule (identity, x^+, x^- input modifiers), or
    moves relevance exactly (reshapes, winner-takes-all, gates, f(0)=0 activations) into tensors that
    are such too. Each consumer's handler answers for its layer and rule
    (:meth:`~interprettensor.engine.handlers.Handler.zero_relevance`)."""

    def __init__(self, g: Graph, rules: Sequence[Rule], start_key: Any, proportional_start: bool):
        self.consumers = g.consumers()
        self.rule_of = dict(zip(g.steps, rules))
        self.start_key, self.proportional_start = start_key, proportional_start
        self.memo: dict = {}

    def ok(self, c: Step) -> bool:
        how = c.handler.zero_relevance(c.layer, self.rule_of[c])
        if how == "proportional":
            return True
        return how == "moved" and all(self.zero(k) for k in c.outputs)

    def zero(self, key: Any) -> bool:
        if key == self.start_key:
            return self.proportional_start
        if key not in self.memo:
            self.memo[key] = all(self.ok(c) for c in self.consumers.get(key, []))
        return self.memo[key]


def relu_denominator_steps(g: Graph, rules: Sequence[Rule], start_key: Any, proportional_start: bool) -> frozenset:
    """Layers with a built-in ReLU whose output relevance is provably zero wherever the output is
    zero (see :class:`_ZeroAnalysis`). For these, relu(z) can replace z in the denominators (they
    differ only where z <= 0, where the relevance is 0), so the forward pass keeps no pre-activation
    and TensorFlow fuses convolution, bias and ReLU. ``proportional_start``: the starting relevance is
    the output times a mask."""
    zero = _ZeroAnalysis(g, rules, start_key, proportional_start).zero
    return frozenset(s for s in g.steps if s.handler.uses_output_signs and not s.strip_activation
                     and _is_plain_relu(s) and zero(s.outputs[0]))


def positive_output_steps(g: Graph, rules: Sequence[Rule], start_key: Any, proportional_start: bool) -> frozenset:
    """Layers with weights whose pre-activation's relevance is provably zero wherever it is ``<= 0``:
    those of :func:`relu_denominator_steps`, and those without activation whose every consumer is a
    ReLU layer (``Activation('relu')``, ``ReLU()``, a ReLU op) whose output's relevance is provably zero
    where it is zero (relevance passes a ReLU unchanged, and its output is zero exactly where its
    input is ``<= 0``). Rules whose groups explain negative outputs separately (the generalised gamma)
    skip those groups there."""
    analysis = _ZeroAnalysis(g, rules, start_key, proportional_start)
    consumers = analysis.consumers

    def relu_after(step: Step) -> bool:
        key = step.outputs[0]
        cs = consumers.get(key, [])
        if key == start_key or not cs or key in g.outputs:
            return False
        return all(c.handler.relu_like(c.layer) and all(analysis.zero(k) for k in c.outputs) for c in cs)

    out = set()
    for s in g.steps:
        if not s.handler.uses_output_signs or s.strip_activation:
            continue
        act = s.handler.activation_of(s.layer)
        linear = act is None or getattr(act, "__name__", "") == "linear"
        if (_is_plain_relu(s) and analysis.zero(s.outputs[0])) or (linear and relu_after(s)):
            out.add(s)
    return frozenset(out)
