"""TimeDistributed: the wrapped layer's rule on every time step, checked against layers that compute
the same without the wrapper (Dense on a sequence, Conv3D with a 1 x k x k kernel)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import interprettensor as it

L = keras.layers


@pytest.mark.parametrize("rule", ["epsilon", "epsilon_plus", "alpha2beta1", "zplus"])
def test_time_distributed_dense_equals_dense_on_a_sequence(rule):
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 4))
    wrapped = L.TimeDistributed(L.Dense(5, activation="relu"))
    out = L.Dense(3)(L.Flatten()(wrapped(inp)))
    model = keras.Model(inp, out)
    plain_dense = L.Dense(5, activation="relu")
    plain = keras.Model(inp, L.Dense(3)(L.Flatten()(plain_dense(inp))))
    plain.set_weights(model.get_weights())
    x = np.random.default_rng(0).normal(size=(3, 6, 4)).astype("float32")
    np.testing.assert_allclose(it.lrp(model, x, rule=rule), it.lrp(plain, x, rule=rule), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("rule", ["epsilon", "epsilon_plus"])
def test_time_distributed_conv_equals_conv3d_with_a_flat_time_kernel(rule):
    keras.utils.set_random_seed(1)
    inp = keras.Input((4, 7, 7, 2))
    model = keras.Model(inp, L.Dense(3)(L.Flatten()(L.TimeDistributed(L.Conv2D(3, 3, activation="relu"))(inp))))
    conv3d = L.Conv3D(3, (1, 3, 3), activation="relu")
    ref = keras.Model(inp, L.Dense(3)(L.Flatten()(conv3d(inp))))
    w, b, wd, bd = model.get_weights()
    ref.set_weights([w[None], b, wd, bd])
    x = np.random.default_rng(1).normal(size=(2, 4, 7, 7, 2)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), ref.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(it.lrp(model, x, rule=rule), it.lrp(ref, x, rule=rule), rtol=1e-4, atol=1e-6)


def test_time_distributed_of_an_unsupported_layer_is_named():
    inp = keras.Input((3, 4))
    model = keras.Model(inp, L.Dense(2)(L.Flatten()(L.TimeDistributed(L.UnitNormalization(), name="td")(inp))))
    with pytest.raises(it.ExplainError, match="'td'.*UnitNormalization"):
        it.Explainer(model)
