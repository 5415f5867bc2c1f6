"""The backward walk (``engine.graph.interpret.backward``) where a tensor is read by several layers.

A transformer block reads its normalised input four times (query, key and value projections and the
residual sum). Each consumer passes back relevance ``x * g`` (its input times a vector-Jacobian
product); the walk sums the shares of one tensor as ``x * (g_1 + g_2 + ...)``, and it materialises only
the relevances asked for (``wanted``), letting every other one go once passed on. Checked against
LRP-epsilon written out in NumPy (float64) for a net with such a fan-out, and against the walk that
returns every tensor's relevance.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers as L
from keras import ops

import interprettensor as it
from interprettensor.engine.graph import backward, forward
from interprettensor.engine.linear import Product, materialize

EPS = 0.01


@pytest.fixture(scope="module")
def fan_out():
    """x -> h = relu(W0 x + b0) -> a, b, c = W_i h + b_i -> s = h + a + b + c -> out = W4 s + b4."""
    keras.utils.set_random_seed(3)
    x = keras.Input((5,))
    h = L.Dense(7, activation="relu", name="h")(x)
    a, b, c = (L.Dense(7, name=n)(h) for n in "abc")
    s = L.Add(name="s")([h, a, b, c])
    out = L.Dense(3, name="out")(s)
    return keras.Model(x, out)


def _stab(z):
    return z + EPS * np.where(z >= 0, 1.0, -1.0)


def _numpy_epsilon(model, x, target):
    """LRP-epsilon (every layer, the sum too), float64, from the equations; and the largest ratio of a
    denominator's summed magnitudes to the denominator (how much a rounding of ``z`` can grow in
    ``R / stab(z)``)."""
    W = {n: [np.asarray(v, np.float64) for v in model.get_layer(n).get_weights()] for n in ("h", "a", "b", "c", "out")}
    zh = x @ W["h"][0] + W["h"][1]
    h = np.maximum(zh, 0)
    br = {n: h @ W[n][0] + W[n][1] for n in "abc"}
    s = h + br["a"] + br["b"] + br["c"]
    zo = s @ W["out"][0] + W["out"][1]
    mags = [(np.abs(x) @ np.abs(W["h"][0]) + np.abs(W["h"][1]), zh),
            (np.abs(h) + sum(np.abs(v) for v in br.values()), s),
            (np.abs(s) @ np.abs(W["out"][0]) + np.abs(W["out"][1]), zo)]
    mags += [(np.abs(h) @ np.abs(W[n][0]) + np.abs(W[n][1]), br[n]) for n in "abc"]
    cond = max(float(np.max(m / np.abs(_stab(z)))) for m, z in mags)
    R = np.zeros_like(zo)
    R[np.arange(len(x)), target] = zo[np.arange(len(x)), target]
    R_s = s * ((R / _stab(zo)) @ W["out"][0].T)
    ratio = R_s / _stab(s)
    R_h = h * ratio
    for n in "abc":
        R_n = br[n] * ratio
        R_h = R_h + h * ((R_n / _stab(br[n])) @ W[n][0].T)
    return x * ((R_h / _stab(zh)) @ W["h"][0].T), cond


def test_relevance_through_a_fan_out_equals_the_equations(fan_out):
    x = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
    target = np.array([0, 1, 2, 0, 1, 2])
    R = it.lrp(fan_out, x, rule=it.rules.Epsilon(EPS), target=target)
    ref, cond = _numpy_epsilon(fan_out, x.astype(np.float64), target)
    # float32 rounding of sums of at most 7 terms at each of four layers, grown at most ``cond``-fold by
    # a division by a sum that cancels, relative to the largest relevance
    tol = 2.0 ** -23 * 7 * 4 * cond * np.abs(ref).max()
    np.testing.assert_allclose(np.asarray(R, np.float64), ref, rtol=0, atol=tol)


def test_wanted_returns_those_keys_and_the_values_of_the_full_walk(fan_out):
    e = it.Explainer(fan_out, it.rules.Epsilon(EPS))
    x = np.random.default_rng(1).normal(size=(4, 5)).astype("float32")
    e(x)  # builds the graph for this input
    g = e.graph
    xs = [ops.convert_to_tensor(x)]
    values, records = forward(g, xs, keep=(e.start_key,))
    start = {e.start_key: values[e.start_key]}
    full, _ = backward(g, list(records), start, e.rules)
    h_key = next(s for s in g.steps if s.name == "h").outputs[0]
    assert h_key in full and len(full) > 2  # every tensor reached
    some, _ = backward(g, list(records), start, e.rules, wanted=[g.inputs[0], h_key])
    assert list(some) == [g.inputs[0], h_key]
    for k in some:
        np.testing.assert_array_equal(ops.convert_to_numpy(some[k]), ops.convert_to_numpy(full[k]))
    only_input, _ = backward(g, list(records), start, e.rules, wanted=g.inputs)
    assert list(only_input) == list(g.inputs)
    np.testing.assert_array_equal(ops.convert_to_numpy(only_input[g.inputs[0]]),
                                  ops.convert_to_numpy(full[g.inputs[0]]))


def test_shares_of_one_tensor_are_summed_before_the_product():
    from interprettensor.engine.graph.interpret import _add

    rng = np.random.default_rng(2)
    x, g1, g2, y = (ops.convert_to_tensor(rng.normal(size=(3, 4)).astype("float32")) for _ in range(4))
    same = _add(Product(x, g1), Product(x, g2))
    assert isinstance(same, Product) and same.x is x  # one product: x * (g1 + g2)
    xn, g1n, g2n, yn = (ops.convert_to_numpy(t).astype(np.float64) for t in (x, g1, g2, y))
    np.testing.assert_allclose(ops.convert_to_numpy(materialize(same)), xn * (g1n + g2n), rtol=1e-6, atol=1e-6)
    other = _add(Product(x, g1), Product(y, g2))  # different inputs: multiplied out and added
    np.testing.assert_allclose(ops.convert_to_numpy(other), xn * g1n + yn * g2n, rtol=1e-6, atol=1e-6)
    plain = _add(Product(x, g1), g2)
    np.testing.assert_allclose(ops.convert_to_numpy(plain), xn * g1n + g2n, rtol=1e-6, atol=1e-6)
