"""Linear maps that write their transpose out (``LinearMap.transpose``: sums, differences, averages,
a layer norm's centring and scaling) equal the vector-Jacobian product of the map, which is what the
engine takes for every other layer, under the weight modifiers the rules apply (the plain weights,
``W^+``, ``|W|``). Both sides compute the same few products and a mean over at most 24 values in
float32, so they agree within ``2^-23 · 24`` of the largest value; where the transpose is not given
(inputs broadcast to the output) the engine falls back to the vector-Jacobian product."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers as L
from keras import ops

import interprettensor as it
from interprettensor.engine import backend
from interprettensor.engine.graph import forward
from interprettensor.engine.linear import absolute, modify_params
from interprettensor.engine.rule_algebra import Term, identity, positive


def _models():
    a, b, c = keras.Input((3, 4)), keras.Input((3, 4)), keras.Input((3, 4))
    yield "add", keras.Model([a, b, c], L.Add()([a, b, c]))
    a, b = keras.Input((3, 4)), keras.Input((3, 4))
    yield "subtract", keras.Model([a, b], L.Subtract()([a, b]))
    a, b = keras.Input((3, 4)), keras.Input((3, 4))
    yield "average", keras.Model([a, b], L.Average()([a, b]))
    x = keras.Input((3, 8))
    yield "layer_norm", keras.Model(x, L.LayerNormalization(gamma_initializer="random_normal")(x))
    x = keras.Input((3, 8))
    yield "layer_norm_two_axes", keras.Model(x, L.LayerNormalization(axis=[1, 2], scale=False)(x))


@pytest.mark.parametrize("name,model", list(_models()), ids=lambda v: v if isinstance(v, str) else "")
def test_a_written_out_transpose_equals_the_vector_jacobian_product(name, model):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    xs = [ops.convert_to_tensor(rng.normal(size=(2,) + tuple(i.shape[1:])).astype("float32")) for i in model.inputs]
    e = it.Explainer(model, "epsilon")
    e(xs if len(xs) > 1 else xs[0])
    _, records = forward(e.graph, xs)
    maps = [st["map"] for _, _, st in records if isinstance(st, dict) and "map" in st]
    assert maps and all(m.transpose is not None for m in maps), f"{name}: no map with a written-out transpose"
    for lm in maps:
        ins = next(ins for ins, _, st in records if isinstance(st, dict) and st.get("map") is lm)
        s = ops.convert_to_tensor(rng.normal(size=tuple(ins[0].shape)).astype("float32"))
        for kernel in (identity, positive, absolute):
            params = modify_params(lm.params, Term(kernel=kernel), with_bias=False)
            mine = [ops.convert_to_numpy(t) for t in lm.transpose(ins, params, s)]
            ref = [ops.convert_to_numpy(t) for t in backend.vjp(lambda a: lm(a, params), ins, s)]
            assert len(mine) == len(ref) == len(ins)
            for m, r in zip(mine, ref):
                assert m.shape == r.shape
                np.testing.assert_allclose(m, r, rtol=0, atol=2.0 ** -23 * 24 * max(np.abs(r).max(), 1e-30),
                                           err_msg=f"{name}, kernel {kernel.__name__}")


def test_a_sum_that_broadcasts_takes_the_vector_jacobian_product():
    a, b = keras.Input((1, 4)), keras.Input((3, 4))
    model = keras.Model([a, b], L.Dense(2)(L.Add()([a, b])))
    rng = np.random.default_rng(1)
    xa, xb = rng.normal(size=(2, 1, 4)).astype("float32"), rng.normal(size=(2, 3, 4)).astype("float32")
    e = it.Explainer(model, "epsilon")
    Ra, Rb = (ops.convert_to_numpy(r) for r in e([xa, xb]))
    _, records = forward(e.graph, [ops.convert_to_tensor(xa), ops.convert_to_tensor(xb)])
    sums = [st["map"] for _, _, st in records if isinstance(st, dict) and "map" in st]
    assert sums and all(m.transpose is None for m in sums)
    assert Ra.shape == xa.shape and Rb.shape == xb.shape and np.all(np.isfinite(Ra)) and np.all(np.isfinite(Rb))
