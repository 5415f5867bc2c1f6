"""Low precision: ``Explainer(dtype=...)``, Keras mixed policies, stabilisers that stay finite in float16,
and the accuracy against float32 (the figures are measured by benchmarks/mixed_precision.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.stats import spearmanr

import interprettensor as it
from interprettensor import rules
from interprettensor import ExplainError

LOW = ("float16", "bfloat16", "mixed_float16", "mixed_bfloat16")


@pytest.fixture(scope="module")
def digits():
    from interprettensor.io.digits import load_digits, to_pretrained_input
    from interprettensor.apps.demo import pretrained_network

    return pretrained_network(), to_pretrained_input(load_digits()[0][:48])


def small_cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((10, 10, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                             keras.layers.BatchNormalization(), keras.layers.MaxPooling2D(),
                             keras.layers.Flatten(), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(3)])


def test_stabiliser_never_underflows_in_low_precision():
    for dt in (tf.float16, tf.bfloat16):
        z = tf.constant([0.0, -0.0, 1e-30, -3.0], tf.float32)
        s = rules.stabilize(tf.cast(z, dt), rules.TINY).numpy().astype(np.float32)
        assert (s != 0).all() and np.isfinite(1.0 / s).all(), (dt, s)
    # float32 and float64 are untouched: z + eps * sign(z) exactly
    z = tf.constant([0.0, 2.0, -1e-20])
    np.testing.assert_array_equal(rules.stabilize(z, 1e-12).numpy(), (z + 1e-12 * np.array([1, 1, -1])).numpy())
    # epsilon = 0 still keeps 0 / stab(0) finite: the stabiliser is at least the smallest normal number
    for dt in (tf.float16, tf.bfloat16, tf.float32, tf.float64):
        s = rules.stabilize(tf.zeros((2,), dt), 0.0).numpy().astype(np.float64)
        assert (s > 0).all() and np.isfinite(1.0 / s).all(), dt


@pytest.mark.parametrize("dtype", LOW)
def test_dead_units_stay_finite(dtype):
    """An all-zero input makes denominators exactly 0 (TINY = 1e-12 would underflow in float16)."""
    model = small_cnn()
    e = it.Explainer(model, "simple", dtype=dtype)
    R = e(np.zeros((2, 10, 10, 1), np.float32), target=1)
    assert np.isfinite(R).all()
    R = e(np.random.default_rng(0).random((3, 10, 10, 1), dtype=np.float32))
    assert np.isfinite(R).all()


def test_dtypes_of_the_passes():
    model = small_cnn()
    x = np.random.default_rng(1).random((4, 10, 10, 1), dtype=np.float32)
    for dt, fwd, bwd, res in [("float16", "float16", "float16", "float32"), ("bfloat16", "bfloat16", "bfloat16", "bfloat16"),
                              ("mixed_float16", "float16", "float32", "float32"),
                              ("mixed_bfloat16", "bfloat16", "float32", "float32"), (None, "float32", "float32", "float32")]:
        e = it.Explainer(model, "epsilon", dtype=dt)
        assert (e.dtype, e.backward_dtype) == (fwd, bwd)
        R, out = e(x, return_output=True)
        assert R.dtype.name == res and R.shape == x.shape and np.isfinite(R).all()
        e(x[:2])
        assert e.trace_count == 1
    with pytest.raises(ExplainError, match="dtype must be one of float64, float32, float16, bfloat16, mixed_float16"):
        it.Explainer(model, dtype="int8")


def test_keras_mixed_precision_policy_is_honoured():
    x = np.random.default_rng(2).random((5, 10, 10, 1), dtype=np.float32)
    reference = small_cnn()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = small_cnn()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.set_weights(reference.get_weights())
    e = it.Explainer(model, "epsilon_gamma_box", low=0.0, high=1.0)
    assert (e.dtype, e.backward_dtype) == ("float16", "float32")
    R = e(x)
    R32 = it.Explainer(reference, "epsilon_gamma_box", low=0.0, high=1.0)(x)
    assert np.isfinite(R).all()
    assert np.linalg.norm(R - R32) / np.linalg.norm(R32) < 1e-2
    # jit_compile works with the mixed mode too
    Rj = it.Explainer(model, "epsilon_gamma_box", low=0.0, high=1.0, jit_compile=True)(x)
    np.testing.assert_allclose(Rj, R, rtol=1e-2, atol=1e-3 * np.abs(R).max())


@pytest.mark.parametrize("dtype,max_rel,min_rho", [("float16", 1e-2, 0.999), ("mixed_float16", 1e-2, 0.999),
                                                   ("bfloat16", 6e-2, 0.99), ("mixed_bfloat16", 6e-2, 0.99)])
@pytest.mark.parametrize("rule,params", [("epsilon", {"epsilon": 0.01}),
                                         ("epsilon_gamma_box", {"low": -1.0, "high": 1.0})])
def test_accuracy_against_float32_on_the_pretrained_cnn(digits, dtype, max_rel, min_rho, rule, params):
    net, x = digits
    R32, out = it.Explainer(net, rule, **params)(x, return_output=True)
    target = out.reshape(len(x), -1).argmax(-1)
    R = it.Explainer(net, rule, dtype=dtype, **params)(x, target=target).astype(np.float64)
    assert np.isfinite(R).all()
    a, b = R.reshape(len(x), -1), R32.reshape(len(x), -1).astype(np.float64)
    rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
    rho = [spearmanr(u, v).statistic for u, v in zip(a, b)]
    assert rel.max() < max_rel and min(rho) > min_rho, (rel.max(), min(rho))


def test_explain_dataset_in_mixed_precision(tmp_path):
    model = small_cnn()
    x = np.random.default_rng(3).random((9, 10, 10, 1), dtype=np.float32)
    it.explain_dataset(model, x, out=str(tmp_path), shard_size=4, dtype="mixed_bfloat16", progress=False)
    got = it.load_relevances(str(tmp_path))
    assert got["relevance"].dtype == np.float32
    np.testing.assert_allclose(got["relevance"], it.Explainer(model, dtype="mixed_bfloat16")(x), rtol=1e-6, atol=1e-7)
    with pytest.raises(it.stream.StreamError, match="dtype: the folder has 'bfloat16/float32', this run 'float32/float32'"):
        it.explain_dataset(model, x, out=str(tmp_path), shard_size=4, progress=False)


def test_float16_relevance_does_not_underflow_on_many_input_elements():
    """A logit spread over 96x96x3 inputs is ~1e-5 per element, subnormal in float16; the starting
    relevance is scaled by a power of two inside the pass and the result unscaled (in float32)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((96, 96, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    x = np.random.default_rng(4).random((2, 96, 96, 3), dtype=np.float32)
    R32, out = it.Explainer(model, "epsilon")(x, return_output=True)
    R16, lw = it.Explainer(model, "epsilon", dtype="float16")(x, target=out.argmax(-1), layerwise=True)
    assert np.abs(R32).mean() < 2e-5 and R16.dtype == np.float32
    rel = np.linalg.norm(R16.astype(np.float64) - R32) / np.linalg.norm(R32)
    Rm = it.Explainer(model, "epsilon", dtype="mixed_float16")(x, target=out.argmax(-1))
    rel_mixed = np.linalg.norm(Rm.astype(np.float64) - R32) / np.linalg.norm(R32)
    assert rel < 5e-2 and rel < 1.5 * rel_mixed, (rel, rel_mixed)  # no worse than float32 relevance
    # layer-wise relevances are unscaled too: the dense layer's output holds the logit
    np.testing.assert_allclose(np.asarray(lw[model.layers[-1].name], np.float32).max(-1), out.max(-1), rtol=1e-2)
