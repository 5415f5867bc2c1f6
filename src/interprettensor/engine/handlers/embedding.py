"""Where relevance leaves the network: embeddings of integer inputs (tokens, positions, segments),
and values that do not depend on the values of their inputs (integer and boolean masks, a position
embedding that reads its input only for its shape, ``zeros_like``)."""

from __future__ import annotations

from typing import Any

from keras import ops

from ..backend import Tensor
from ..linear import materialize
from .base import CONSTANT, DEFAULT_PASS, EMBEDDING, Handler
from .quantised import dequantised_reverse_embeddings
from .weighted import LinearHandler

__all__ = ["ConstantHandler", "EmbeddingHandler", "ReversibleEmbeddingHandler"]


class EmbeddingHandler(Handler):
    """A lookup ``e = E[i]``: the relevance of an index is the relevance of its embedding vector,
    summed over the embedding dimension (the token's share of everything that reached the
    embedding's output). Relevance shape: the shape of the indices."""

    category = EMBEDDING
    #: the relevance goes to an integer input (the explanation's result for token inputs)
    integer_inputs = True
    batch_records = True

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        R = ops.reshape(materialize(Rs[0]), ops.shape(ys[0]))
        per_index = ops.sum(R, axis=-1)
        return [ops.reshape(per_index, ops.shape(xs[0]))] + [None] * (len(xs) - 1)


class ConstantHandler(Handler):
    """An output that does not depend on the values of the inputs (integer or boolean masks and
    indices, a position embedding, ``zeros_like``): relevance reaching it stays there; nothing flows
    back to the inputs."""

    category = CONSTANT
    depends_on_values = False
    batch_records = True

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        return [None] * len(xs)


def _soft_cap(layer: Any) -> Any:
    cap = getattr(layer, "logit_soft_cap", None)
    if cap is None:
        return None

    def soft_cap(z: Tensor) -> Tensor:  # element-wise: relevance passes (AttnLRP's identity rule)
        c = ops.cast(cap, z.dtype)
        return ops.tanh(z / c) * c

    return soft_cap


class ReversibleEmbeddingHandler(LinearHandler):
    """``keras.layers.ReversibleEmbedding`` (keras_hub's language models): a lookup when called on
    token ids, and with ``reverse=True`` the output projection ``logits = h · Eᵀ`` (tied weights) or
    ``h · W``, a layer with weights under the composite's rule (a logit soft cap passes relevance)."""

    integer_inputs = True

    def __init__(self) -> None:
        super().__init__(params=lambda layer: {"kernel": dequantised_reverse_embeddings(layer)},
                         fn=lambda layer, xs, p: ops.matmul(xs[0], p["kernel"]), activation=_soft_cap,
                         channel_axis=None, kind="dense", per_position=True)
        self._lookup = EmbeddingHandler()

    def forward(self, layer, xs, step, options=DEFAULT_PASS):
        if not step.options.get("reverse", False):
            return step.call(xs), {}
        return super().forward(layer, xs, step, options)

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        if not step.options.get("reverse", False):
            return self._lookup.relevance(layer, xs, ys, state, Rs, rule, step, options)
        return super().relevance(layer, xs, ys, state, Rs, rule, step, options)

    def record_at_position(self, layer, xs, ys, state, step, take):
        if not step.options.get("reverse", False):  # a lookup: each position's ids, not a map of positions
            return None
        return super().record_at_position(layer, xs, ys, state, step, take)

    def output_nonneg(self, layer, inputs_nonneg, step):
        return False
