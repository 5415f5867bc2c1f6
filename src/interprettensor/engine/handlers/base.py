"""What every handler shares: the :class:`Handler` interface, layer categories, and
:class:`PassOptions`, the options of one traced pass (activation overrides, ReLU denominators, kept
activations) that the graph walk hands to every handler.

A handler does two things for a layer: the forward computation (recording what the backward pass
needs, e.g. the pre-activation and the layer's linear map) and the relevance pass, given the rule
that the composite assigned to the layer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from keras import ops

from .. import dtypes
from ..backend import Tensor
from ..errors import ExplainError
from ..linear import LinearMap, Product
from ..rule_algebra import Rule

__all__ = ["Handler", "WEIGHTED", "LINEAR", "MAXPOOL", "ROUTE", "ELEMENTWISE", "GATE", "PRODUCT", "SOFTMAX", "NORM",
           "EMBEDDING", "CONSTANT", "PassOptions", "DEFAULT_PASS", "is_nonneg_activation",
           "is_gating_activation", "GATING_ACTIVATIONS"]

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

@dataclasses.dataclass(frozen=True)
class PassOptions:
    """The options of one traced pass, handed by the graph walk to every handler's ``forward`` and
    ``relevance`` (:func:`interprettensor.engine.graph.forward`, :func:`~interprettensor.engine.graph.backward`).

    Args:
        relu_denominator: steps with a built-in ReLU whose output relevance is provably zero wherever
            the pre-activation is ``<= 0`` (:func:`interprettensor.engine.graph.relu_denominator_steps`):
            their ReLU output stands in for the pre-activation in denominators.
        positive_outputs: steps with weights whose output relevance is provably zero wherever the
            pre-activation is ``<= 0`` (:func:`interprettensor.engine.graph.positive_output_steps`): rule
            groups for negative outputs are skipped there.
        keep_activations: layers keep a final activation that the explanation strips (to check the
            graph's forward pass against the model's own).
        activation_override: ``fn(layer, activation, z)``, asked for every activation (the
            ``activation=`` of layers with weights, and element-wise activation layers with
            ``activation=None``); a tensor it returns replaces the activation's output, ``None`` keeps
            it. Gradient baselines (guided backprop, deconvnet) change ReLU's gradient with it.
        checkpoints: segments ``(lo, hi)`` of the step list whose forward records the pass drops and
            recomputes from the segments' saved inputs when the backward pass reaches them
            (:mod:`interprettensor.engine.graph.checkpoint`; the explainer's ``checkpoint=``).
    """

    relu_denominator: frozenset = frozenset()
    positive_outputs: frozenset = frozenset()
    keep_activations: bool = False
    activation_override: Callable[[Any, Callable | None, Tensor], Tensor | None] | None = None
    checkpoints: tuple = ()

    def strips_activation(self, step: Any) -> bool:
        """Whether ``step`` leaves out its activation in this pass (a final softmax/sigmoid)."""
        return bool(step.strip_activation) and not self.keep_activations

    def activate(self, layer: Any, act: Callable | None, z: Tensor) -> Tensor:
        """``act(z)``, or what :attr:`activation_override` says instead."""
        if self.activation_override is not None:
            out = self.activation_override(layer, act, z)
            if out is not None:
                return out
        return z if act is None else act(z)


#: the options of a plain pass: nothing fused, activations as the layers have them
DEFAULT_PASS = PassOptions()


class Handler:
    """Base class: what a layer is, told through methods with defaults that the graph walk and its
    analyses ask (never by the handler's type), and the layer's two computations.

    ``forward`` returns ``(outputs, state)``: the layer's outputs and what its relevance needs (the
    pre-activation, the linear map); ``relevance`` returns one relevance per input of the layer, given
    the relevance of its outputs and the rule the composite assigned. Both receive the pass's
    :class:`PassOptions`.
    """

    category: str = ELEMENTWISE
    #: ``relevance`` accepts unevaluated :class:`~interprettensor.engine.linear.Product` relevances
    accepts_lazy: bool = False
    #: the layer reads integer inputs (indices) and credits them with relevance (embeddings)
    integer_inputs: bool = False
    #: the layer's output depends on its inputs' values (``False``: masks, shapes, position tables)
    depends_on_values: bool = True
    #: the layer multiplies gates with signals inside (recurrent cells): composites give it a
    #: :class:`~interprettensor.engine.operation_rules.CellRule`
    gated: bool = False
    #: a box on the layer's inputs bounds its input (``False`` for recurrent layers, which also read
    #: their own state)
    accepts_box: bool = True
    #: ``relevance`` follows the pass's :attr:`PassOptions.relu_denominator` and
    #: :attr:`PassOptions.positive_outputs` (layers with weights)
    uses_output_signs: bool = False
    #: the forward state holds only the batch's tensors and linear maps, so repeating its tensors
    #: along the batch repeats the samples (concepts repeat a pass per condition this way)
    batch_records: bool = False
    #: how composites address the layer's kind (``'dense'``, ``'conv'``) where it has weights
    kind: str = "conv"

    def forward(self, layer: Any, xs: Sequence[Tensor], step: Any,
                options: PassOptions = DEFAULT_PASS) -> tuple[list, dict]:
        return step.call(xs), {}

    def relevance(self, layer: Any, xs: Sequence[Tensor], ys: Sequence[Tensor], state: dict,
                  Rs: Sequence[Tensor], rule: Rule, step: Any, options: PassOptions = DEFAULT_PASS,
                  ) -> list[Tensor]:
        raise NotImplementedError

    def output_nonneg(self, layer: Any, inputs_nonneg: Sequence[bool], step: Any) -> bool:
        """Whether the layer's output is known to be >= 0 (lets rules skip negative-input terms)."""
        return False

    def for_layer(self, layer: Any, n_inputs: int) -> "Handler | None":
        """The handler for ``layer`` called on ``n_inputs`` traced tensors (a wrapper's handler is built
        around the wrapped layer's; ``None``: none)."""
        return self

    def for_inputs(self, n_computed: int) -> "Handler | None":
        """The handler for this layer when ``n_computed`` of its inputs carry relevance (an einsum of
        two activations is a product, of an activation and a constant a linear map); ``None``: the
        layer has no rule then."""
        return self

    def activation_of(self, layer: Any) -> Callable | None:
        """The activation the layer applies to its linear map (``None``: none)."""
        return None

    def can_absorb_batchnorm(self, layer: Any) -> bool:
        """Whether a BatchNormalization that follows can be merged into the layer's weights."""
        return False

    def relu_like(self, layer: Any) -> bool:
        """Whether the layer is a ReLU (relevance passes; output zero exactly where input ``<= 0``)."""
        return False

    def is_gate(self, layer: Any, step: Any) -> bool | None:
        """Whether the layer's output gates another factor of a product (a softmax, a squashing or
        gating activation); ``None``: the output is its one input moved or recast, ask its producer."""
        return False

    def zero_relevance(self, layer: Any, rule: Rule) -> str | None:
        """How the relevance of the layer's inputs relates to their zeros under ``rule``:
        ``'proportional'`` (zero wherever the input is zero), ``'moved'`` (so too if the output's
        relevance is zero wherever the output is), ``None`` (no such guarantee)."""
        return None

    def preserves_box(self, layer: Any) -> bool:
        """Whether a box on the layer's inputs maps to a box on its output (affine per element, or
        routing): z^B's bounds stay valid through it."""
        return False

    def cheap_to_recompute(self, layer: Any, step: Any) -> bool:
        """Whether the layer's one output is an element-wise function of its computed inputs (a scaling
        by a constant, a cast, an activation, a sum), cheap to compute again in the backward pass from
        them rather than kept from the forward pass (the graph walk does so where every input has the
        output's shape and no larger elements). Such a handler's :meth:`relevance` reads the output from
        ``ys``, not from a copy in its state (which would keep the forward value)."""
        return False

    def record_at_position(self, layer: Any, xs: Sequence[Tensor], ys: Sequence[Tensor], state: dict,
                           step: Any, take: Callable[[Tensor], Tensor]) -> tuple[list, list, dict] | None:
        """The forward record ``(inputs, outputs, state)`` of one position of a sequence, each tensor
        cut by ``take`` (``(N, T, ...)`` to ``(N, 1, ...)``: the explained position of each sample), where
        the layer maps every position of axis 1 on its own (its output there depends on its input there
        only: a dense layer on the last axis of a sequence); ``None`` where it does not. An explanation
        of one position then runs the layer's relevance on that position alone."""
        return None


_NONNEG_ACTIVATIONS = {"relu", "relu6", "sigmoid", "softmax", "softplus", "exponential", "hard_sigmoid",
                       "Relu", "Relu6", "Sigmoid", "Softmax", "Softplus", "Exp"}


def is_nonneg_activation(act: Any) -> bool:
    """True for activations whose output is never negative (relu, relu6, sigmoid, softmax, ...)."""
    return act is not None and getattr(act, "__name__", "") in _NONNEG_ACTIVATIONS


#: activations whose output gates another factor of a product (CP-LRP holds such factors constant)
GATING_ACTIVATIONS = {"sigmoid", "softmax", "silu", "swish", "gelu", "tanh", "hard_sigmoid", "hard_silu",
                      "hard_swish", "Sigmoid", "Softmax", "Silu", "Swish", "Gelu", "Tanh", "HardSigmoid", "HardSilu"}


def is_gating_activation(act: Any) -> bool:
    """True for squashing or gating activations (sigmoid, softmax, SiLU, GELU, tanh, ...)."""
    return act is not None and getattr(act, "__name__", "") in GATING_ACTIVATIONS


def cast_params(params: dict, dtype: Any) -> dict:
    """The layer's parameters as tensors of ``dtype`` (a dtype or its name; ``None`` entries dropped)."""
    return {k: ops.cast(ops.convert_to_tensor(v), dtype) for k, v in params.items() if v is not None}


def cached_map(lm: LinearMap | None, xs: Sequence[Tensor]) -> LinearMap | None:
    """The linear map the forward pass built, if its parameters have the inputs' dtype (under mixed
    precision the backward pass runs in another dtype than the forward)."""
    if lm is None:
        return None
    dtype = dtypes.name(xs[0].dtype)
    if any(dtypes.name(v.dtype) != dtype for v in lm.params.values()):
        return None
    return lm


def check_linear_rule(rule: Rule, step: Any) -> Rule:
    """``rule`` if it explains linear maps (modifies inputs and weights); an error naming the layer
    otherwise."""
    if not rule.explains_linear:
        raise ExplainError(f"layer {step.name!r} ({step.type_name}) cannot use rule {rule!r}: it needs a "
                           f"rule that modifies inputs/weights (epsilon, alphabeta, gamma, ...)")
    return rule


def rank(x: Any) -> int | None:
    """The number of axes of ``x`` (``None`` where unknown: a TensorFlow shape of unknown rank)."""
    try:
        return len(x.shape)
    except (TypeError, ValueError):
        return None


def _known(shape: Any) -> bool:
    return all(d is not None for d in shape)


def shaped_like(R: "Tensor | Product", z: Tensor) -> "Tensor | Product":
    """``R`` shaped like ``z`` (a lazy product stays lazy when the shapes already agree)."""
    if isinstance(R, Product) and rank(R) is not None and rank(z) is not None:
        r_shape, z_shape = tuple(R.shape), tuple(z.shape)
        if _known(r_shape) and _known(z_shape) and r_shape == z_shape:
            return R
        if r_shape[1:] == z_shape[1:] and _known(r_shape[1:]):
            return R
    if isinstance(R, Product):
        R = R.value()
    return ops.reshape(R, ops.shape(z))


def pass_through(xs: Sequence[Tensor], Rs: Sequence[Tensor], step: Any) -> list[Tensor]:
    """The ``pass`` rule: relevance unchanged, for layers whose input and output have one shape."""
    if len(xs) != 1 or len(Rs) != 1 or rank(xs[0]) != rank(Rs[0]):
        raise ExplainError(f"rule 'pass' needs a layer whose input and output have the same shape; "
                           f"layer {step.name!r} ({step.type_name}) maps {[tuple(x.shape) for x in xs]} "
                           f"to {[tuple(r.shape) for r in Rs]}")
    return [ops.reshape(Rs[0], ops.shape(xs[0]))]
