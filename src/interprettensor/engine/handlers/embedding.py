"""Where relevance leaves the network: embeddings of integer inputs (tokens, positions, segments),
and values that do not depend on the values of their inputs (integer and boolean masks, a position
embedding that reads its input only for its shape, ``zeros_like``)."""

from __future__ import annotations

import tensorflow as tf

from ..linear import materialize
from .base import CONSTANT, EMBEDDING, Handler

__all__ = ["EmbeddingHandler", "ConstantHandler"]


class EmbeddingHandler(Handler):
    """A lookup ``e = E[i]``: the relevance of an index is the relevance of its embedding vector,
    summed over the embedding dimension (the token's share of everything that reached the
    embedding's output). Relevance shape: the shape of the indices."""

    category = EMBEDDING
    #: the relevance goes to an integer input (the explanation's result for token inputs)
    integer_inputs = True

    def relevance(self, layer, xs, ys, state, Rs, rule, step):
        R = tf.reshape(materialize(Rs[0]), tf.shape(ys[0]))
        per_index = tf.reduce_sum(R, axis=-1)
        return [tf.reshape(per_index, tf.shape(xs[0]))] + [None] * (len(xs) - 1)


class ConstantHandler(Handler):
    """An output that does not depend on the values of the inputs (integer or boolean masks and
    indices, a position embedding, ``zeros_like``): relevance reaching it stays there; nothing flows
    back to the inputs."""

    category = CONSTANT

    def relevance(self, layer, xs, ys, state, Rs, rule, step):
        return [None] * len(xs)
