"""Tracing layers without a handler through their call, whatever their library's conventions (those of
keras_hub's blocks): sub-layers that return ``None`` among their outputs, ``training=`` passed to a call
that does not take it, hand-written output shapes that do not fit the call, sizes read with
``ops.shape`` at run time, outputs that do not depend on the input, products of masks. Each convention
is a small synthetic layer; the relevance is compared with a twin model written from ``keras.layers``
with the same weights (no tracing), or with another preset where the two must agree."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

import interprettensor as it
from interprettensor.engine.errors import ExplainError
from interprettensor.engine.handlers import ConstantHandler

L = keras.layers
D = 4


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(3)


def _x(shape=(2, 3, D), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _same(model, twin, x, rules=("epsilon", "attnlrp", "cp_lrp")):
    """The traced model explains as its hand-written twin (and computes the same)."""
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(twin(x)), rtol=1e-6, atol=1e-6)
    for rule in rules:
        got, want = it.lrp(model, x, rule=rule), it.lrp(twin, x, rule=rule)
        assert np.isfinite(got).all() and np.abs(got).sum() > 0
        # the same operations in the same order: equal up to float32 rounding of a few sums of D terms
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- None among the outputs
class WithCache(L.Layer):
    """Returns ``(output, cache)``, the cache ``None`` unless asked for (keras_hub's attention)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.proj = L.Dense(D, use_bias=False)

    def call(self, x, cache=None):
        y = self.proj(x)
        return y, (None if cache is None else cache + 1.0)


class CachedBlock(L.Layer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.attn = WithCache()
        self.out = L.Dense(D, use_bias=False)

    def call(self, x):
        y, cache = self.attn(x)
        assert cache is None  # the caller sees its structure, None in place
        return self.out(y) + x


def test_sub_layer_returning_none_among_its_outputs_is_traced():
    inp = keras.Input((3, D))
    block = CachedBlock()
    model = keras.Model(inp, L.Dense(2, use_bias=False)(block(inp)))
    t = keras.Input((3, D))
    p, o, head = L.Dense(D, use_bias=False), L.Dense(D, use_bias=False), L.Dense(2, use_bias=False)
    twin = keras.Model(t, head(L.Add()([o(p(t)), t])))
    p.set_weights(block.attn.proj.get_weights())
    o.set_weights(block.out.get_weights())
    head.set_weights(model.layers[-1].get_weights())
    _same(model, twin, _x())


# ----------------------------------------------------------------------------- training= not taken
class Mlp(L.Layer):
    """A composite whose call takes no ``training`` (SigLIP's MLP)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.a, self.b = L.Dense(8, activation="relu", use_bias=False), L.Dense(D, use_bias=False)

    def call(self, x):
        return self.b(self.a(x))


class TrainingBlock(L.Layer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.mlp = Mlp()

    def call(self, x, training=None):
        return x + self.mlp(x, training=training)


def test_training_passed_to_a_call_that_does_not_take_it():
    inp = keras.Input((3, D))
    block = TrainingBlock()
    model = keras.Model(inp, block(inp))
    t = keras.Input((3, D))
    a, b = L.Dense(8, activation="relu", use_bias=False), L.Dense(D, use_bias=False)
    twin = keras.Model(t, L.Add()([t, b(a(t))]))
    a.set_weights(block.mlp.a.get_weights())
    b.set_weights(block.mlp.b.get_weights())
    _same(model, twin, _x(), rules=("epsilon",))


# ----------------------------------------------------------------------------- hand-written shapes
class TwoInputAttention(L.Layer):
    """A composite with its own ``compute_output_shape`` written for a list of shapes, called with two
    arguments (keras_hub's SmolLM3 attention): Keras' spec from it fails."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.q = L.Dense(D, use_bias=False)

    def call(self, x, scale):
        return self.q(x) * scale

    def compute_output_shape(self, input_shape):
        return input_shape[0][:-1] + (D,)  # input_shape is x's shape: a tuple of ints, not a list


class ScaleBlock(L.Layer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.attn = TwoInputAttention()

    def call(self, x):
        return self.attn(x, ops.ones_like(x[..., :1]) * 0.5) + x


def test_hand_written_output_shape_that_does_not_fit_the_call():
    inp = keras.Input((3, D))
    block = ScaleBlock()
    model = keras.Model(inp, L.Dense(2, use_bias=False)(block(inp)))
    t = keras.Input((3, D))
    q, head = L.Dense(D, use_bias=False), L.Dense(2, use_bias=False)
    twin = keras.Model(t, head(L.Add()([L.Rescaling(0.5)(q(t)), t])))
    q.set_weights(block.attn.q.get_weights())
    head.set_weights(model.layers[-1].get_weights())
    _same(model, twin, _x(), rules=("epsilon",))


# ----------------------------------------------------------------------------- sizes read at run time
class Heads(L.Layer):
    """Splits into heads with sizes read by ``ops.shape`` (unknown while tracing: ``None``) and merges
    them back (Gemma's and GPT-NeoX's attention)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.proj = L.Dense(D, use_bias=False)

    def call(self, x):
        b, t, _ = ops.shape(x)
        y = ops.reshape(self.proj(x), (b, t, 2, D // 2))
        y = ops.flip(y, axis=2)  # something per head, so that the split matters
        return ops.reshape(y, ops.shape(x))


@pytest.mark.parametrize("seq", [3, None])
def test_reshape_to_sizes_read_at_run_time(seq):
    """A batch of unknown size (one unknown size: exact for any input) and, with ``seq=None``, a
    sequence of unknown length too (the graph is built for the shape of the inputs explained)."""
    inp = keras.Input((seq, D))
    heads = Heads()
    model = keras.Model(inp, L.Dense(2, use_bias=False)(heads(inp)))
    t = keras.Input((3, D))
    proj, head = L.Dense(D, use_bias=False), L.Dense(2, use_bias=False)
    y = L.Reshape((3, D))(ops.flip(L.Reshape((3, 2, D // 2))(proj(t)), axis=2))
    twin = keras.Model(t, head(y))
    proj.set_weights(heads.proj.get_weights())
    head.set_weights(model.layers[-1].get_weights())
    _same(model, twin, _x())
    # another batch size (and length) is explained too
    x5 = _x((5, 3, D), seed=1)
    np.testing.assert_allclose(it.lrp(model, x5, rule="epsilon"), it.lrp(twin, x5, rule="epsilon"), rtol=1e-5,
                               atol=1e-6)


class SplitHeads(L.Layer):
    """Splits into heads with the batch given as -1 and the length read by ``ops.shape`` (MiT's
    attention): the unknown length cannot become a second -1."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.proj = L.Dense(D, use_bias=False)

    def call(self, x):
        return ops.reshape(self.proj(x), (-1, ops.shape(x)[1], 2, D // 2))


def test_reshape_with_minus_one_beside_a_size_read_at_run_time():
    inp = keras.Input((None, D))
    split = SplitHeads()
    model = keras.Model(inp, L.Dense(2, use_bias=False)(ops.sum(ops.flip(split(inp), axis=2), axis=(1, 2))))
    t = keras.Input((3, D))
    proj, head = L.Dense(D, use_bias=False), L.Dense(2, use_bias=False)
    twin = keras.Model(t, head(ops.sum(ops.flip(L.Reshape((3, 2, D // 2))(proj(t)), axis=2), axis=(1, 2))))
    proj.set_weights(split.proj.get_weights())
    head.set_weights(model.layers[-1].get_weights())
    _same(model, twin, _x())


# ----------------------------------------------------------------------------- outputs independent of the input
class RelativeTable(L.Layer):
    """A table of weights, normalised and repeated for each sample: depends on the input's batch size
    only (DeBERTa-v3's relative embedding)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.norm = L.LayerNormalization()

    def build(self, shape):
        self.table = self.add_weight(shape=(3, D), initializer="random_normal")

    def call(self, x):
        t = self.norm(ops.expand_dims(ops.convert_to_tensor(self.table), 0))
        return ops.repeat(t, ops.shape(x)[0], axis=0)


class TableTwin(L.Layer):
    """The same table, with a registered constant handler instead of tracing."""

    def __init__(self, source, **kw):
        super().__init__(**kw)
        self.source = source

    def call(self, x):
        return self.source(x)


it.register_handler(TableTwin, ConstantHandler())


def test_output_that_does_not_depend_on_the_input_is_a_constant():
    inp = keras.Input((3, D))
    table = RelativeTable()
    h = L.Dense(D, use_bias=False)
    head = L.Dense(2, use_bias=False)
    model = keras.Model(inp, head(h(inp) + table(inp)))
    twin = keras.Model(inp, head(h(inp) + TableTwin(table)(inp)))
    _same(model, twin, _x())
    ex = it.Explainer(model, "epsilon")
    ex(_x())
    assert next(s for s in ex.graph.steps if "relative_table" in s.name).category == "constant"


class WithPlaceholder(L.Layer):
    """Returns its output and an empty placeholder for hidden states not asked for (DeiT's encoder)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.proj = L.Dense(D, use_bias=False)

    def call(self, x):
        return self.proj(x), ops.zeros((0, 3, D))


def test_constant_output_beside_a_computed_one():
    inp = keras.Input((3, D))
    layer = WithPlaceholder()
    y, _ = layer(inp)
    head = L.Dense(2, use_bias=False)
    model = keras.Model(inp, head(y))
    t = keras.Input((3, D))
    proj = L.Dense(D, use_bias=False)
    twin = keras.Model(t, head(proj(t)))
    proj.set_weights(layer.proj.get_weights())
    _same(model, twin, _x())


# ----------------------------------------------------------------------------- products of masks
def test_product_of_masks_and_positions_takes_no_relevance():
    """``(cumsum(mask) - 1) * mask`` (Falcon's ALiBi positions): a product of integers cast to float,
    none of whose factors carries relevance; the uniform rule of AttnLRP must not divide by their
    number. With no softmax and no product of activations, AttnLRP and CP-LRP are the same rules."""
    xi, mi = keras.Input((3, D)), keras.Input((3,), dtype="int32")
    m = ops.cast(mi, "float32")
    pos = ops.cast(ops.cumsum(mi, axis=-1) - 1, "float32") * m
    h = L.Dense(D, use_bias=False)(xi) * ops.expand_dims(m, -1)  # a mask factor: linear in the other
    model = keras.Model([xi, mi], L.Dense(2, use_bias=False)(h + ops.expand_dims(pos, -1)))
    x = [_x(), np.array([[1, 1, 0], [1, 1, 1]], "int32")]
    ra = it.lrp(model, x, rule="attnlrp", epsilon=1e-6)[0]
    rc = it.lrp(model, x, rule="cp_lrp", epsilon=1e-6)[0]
    assert np.isfinite(ra).all() and np.abs(ra).sum() > 0
    np.testing.assert_allclose(ra, rc, rtol=1e-6, atol=1e-7)
    assert np.all(ra[0, 2] == 0)  # the masked position


# ----------------------------------------------------------------------------- what cannot be traced
class Opaque(L.Layer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.proj = L.Dense(D)

    def call(self, x):
        return self.proj(x) * float(np.asarray(x).mean())  # a value read on the host: no symbolic tensor

    def compute_output_spec(self, x):
        return keras.KerasTensor(x.shape[:-1] + (D,), x.dtype)


def test_untraceable_call_names_the_layer_and_the_line():
    inp = keras.Input((3, D))
    model = keras.Model(inp, Opaque(name="opaque")(inp))
    with pytest.raises(ExplainError, match=r"'opaque' of type Opaque.*test_tracing_conventions\.py:\d+ "
                                           r"\(`return self\.proj\(x\) \* float"):
        it.lrp(model, _x(), rule="epsilon")


# ----------------------------------------------------------------------------- a constant of the input's shape
class CosSin(L.Layer):
    """A layer of its own (no sub-layers, no handler) whose outputs depend on the input's length only
    (SmolLM3's rotary embedding: cos and sin of the positions)."""

    def call(self, x):
        pos = ops.arange(ops.shape(x)[1], dtype="float32")[:, None] * ops.arange(1, D + 1, dtype="float32")
        return ops.cos(pos), ops.sin(pos)


class CosSinTwin(L.Layer):
    def call(self, x):
        return CosSin()(x)


it.register_handler(CosSinTwin, ConstantHandler())


def test_layer_of_its_own_whose_outputs_are_constants_of_the_input_shape():
    inp = keras.Input((None, D))
    h = L.Dense(D, use_bias=False)(inp)
    cos, sin = CosSin()(inp)
    head = L.Dense(2, use_bias=False)
    model = keras.Model(inp, head(h * cos + h * sin))
    cos2, sin2 = CosSinTwin()(inp)
    h2 = model.layers[1](inp)
    twin = keras.Model(inp, head(h2 * cos2 + h2 * sin2))
    _same(model, twin, _x())


class Unexplained(L.Layer):
    """A layer of its own whose output depends on its input through an operation without a handler."""

    def call(self, x):
        return ops.cumsum(x, axis=1)


def test_layer_of_its_own_traced_into_an_operation_without_handler_names_both():
    inp = keras.Input((3, D))
    model = keras.Model(inp, Unexplained(name="unexplained")(inp))
    with pytest.raises(ExplainError, match=r"(?s)type Cumsum cannot be explained: no LRP handler.*"
                                           r"part of layer 'unexplained' of type Unexplained.*register_handler\(Unexplained"):
        it.lrp(model, _x(), rule="epsilon")


# ----------------------------------------------------------------------------- output specs vaguer than the inputs
class PositionShift(L.Layer):
    """An ``EinsumDense`` whose configured output shape leaves the length unknown (``(None, D)``), and a
    call that reads that length (DeBERTa-v3's relative positions): the spec must come from the call."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.q = L.EinsumDense("btd,dh->bth", output_shape=(None, D))

    def call(self, x):
        q = self.q(x)
        return q * ops.cast(ops.arange(ops.shape(q)[1]) + 1, q.dtype)[:, None]


def test_sub_layer_spec_vaguer_than_its_inputs_is_taken_from_its_call():
    inp = keras.Input((None, D))
    layer = PositionShift()
    model = keras.Model(inp, L.Dense(2, use_bias=False)(layer(inp)))
    t = keras.Input((3, D))
    q = L.EinsumDense("btd,dh->bth", output_shape=(None, D))
    y = q(t) * ops.cast(ops.arange(3) + 1, "float32")[:, None]
    twin = keras.Model(t, model.layers[-1](y))
    q.set_weights(layer.q.get_weights())
    _same(model, twin, _x(), rules=("epsilon",))
