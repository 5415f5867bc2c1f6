"""Quantised models (``model.quantize('int8' | 'int4')``) are explained with their dequantised weights:
the explanation equals that of the float model whose weights were replaced by the dequantised ones,
computed here in NumPy from Keras' quantisation formulas (``W = q / s`` per output channel for int8,
``W = (q - z[g]) * s[g]`` per group of input rows for int4 with a block size)."""

from __future__ import annotations

import numpy as np
import pytest

import keras
from keras import ops

import interprettensor as it
from interprettensor.engine.errors import ExplainError

L = keras.layers
pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:Layer .* does not have a `quantize` method")]
# the two explanations compute the same float32 operations on weights that differ by the rounding of
# q / s to float32 (one ulp): relative differences of a few 1e-7 per weight, grown through the layers


def _np(v):
    return np.asarray(ops.convert_to_numpy(v), np.float64)


def _unpacked(packed, length, axis):
    return _np(keras.quantizers.unpack_int4(ops.convert_to_tensor(packed), length, axis=axis))


def _grouped(q, scale, zero, g_idx, axis):
    """``(q - z[g]) * s[g]``: scale/zero hold one row (axis 0) or column (axis 1) per group."""
    g = np.asarray(_np(g_idx), int)
    s, z = (np.take(_np(a), g, axis=axis) for a in (scale, zero))
    return (q - z) * s


def _kernel(layer):
    """A quantised Dense / EinsumDense kernel, dequantised from Keras' stored integers and scales."""
    if layer.quantization_mode == "int8":
        q, s = _np(layer._kernel), np.squeeze(_np(layer.kernel_scale))
        assert np.broadcast_shapes(q.shape, s.shape) == q.shape  # one scale per output unit, trailing axes
        return q / s
    shape = tuple(layer.kernel.shape)  # int4: packed two per byte along the last axis of a 2-D layout
    cols = layer._int4_unpacked_column_size if isinstance(layer, L.EinsumDense) else layer._orig_output_dim
    q = _unpacked(layer._kernel, cols, -1)
    return _grouped(q, layer.kernel_scale, layer.kernel_zero, layer.g_idx, 0).reshape(shape)


def _embeddings(layer):
    if layer.quantization_mode == "int8":
        return _np(layer._embeddings) / _np(layer.embeddings_scale)[:, None]
    q = _unpacked(layer._embeddings, layer.output_dim, -1)
    return _grouped(q, layer.embeddings_scale, layer.embeddings_zero, layer.g_idx, 1)


def _reverse(layer):
    if layer.quantization_mode == "int8":
        return _np(layer.reverse_embeddings) / _np(layer.reverse_embeddings_scale)[None, :]
    q = _unpacked(layer.reverse_embeddings, layer.output_dim, 0)
    return _grouped(q, layer.reverse_embeddings_scale, layer.reverse_embeddings_zero, layer.g_idx, 0)


def _dequantised_copy(make, mode):
    """``(quantised model, float model with the dequantised weights)``, both from ``make()``'s weights."""
    model = make()
    weights = model.get_weights()
    quantised = make()
    quantised.set_weights(weights)
    quantised.quantize(mode)
    copy = model  # the float model keeps the weights; its quantised layers' kernels are replaced below
    n = 0
    for lq, lf in zip(quantised._flatten_layers(), copy._flatten_layers()):
        assert type(lq) is type(lf)
        if not getattr(lq, "quantization_mode", None):
            continue
        n += 1
        if isinstance(lq, L.Embedding):
            lf.embeddings.assign(_embeddings(lq).astype("float32"))
            if isinstance(lq, L.ReversibleEmbedding) and not lq.tie_weights:
                lf.reverse_embeddings.assign(_reverse(lq).astype("float32"))
        else:
            lf.kernel.assign(_kernel(lq).astype("float32"))
    assert n > 0
    return quantised, copy


def _dense_only():
    return keras.Sequential([keras.Input((12,)), L.Dense(10, activation="relu"), L.Dense(8, activation="relu"),
                             L.Dense(4)])


def _cnn_mlp():
    x = keras.Input((8, 8, 2))
    h = L.Conv2D(4, 3, activation="relu")(x)
    h = L.Flatten()(L.MaxPooling2D()(h))
    a = L.Dense(12, activation="relu")(h)
    b = L.EinsumDense("ab,bc->ac", output_shape=12, bias_axes="c", activation="relu")(h)
    return keras.Model(x, L.Dense(3)(L.Add()([a, b])))


@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("make", [_dense_only, _cnn_mlp])
def test_quantised_keras_models_explained_with_dequantised_weights(make, mode):
    keras.utils.set_random_seed(0)
    quantised, copy = _dequantised_copy(make, mode)
    shape = (3,) + tuple(quantised.inputs[0].shape[1:])
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    for rule in ("epsilon", "alpha1beta0"):
        got, out = it.Explainer(quantised, rule)(x, 1, return_output=True)
        want, out_f = it.Explainer(copy, rule)(x, 1, return_output=True)
        # the explained output is the float model's with dequantised weights (float inputs), not the
        # int8 model's, whose Dense layers also quantise their inputs
        np.testing.assert_allclose(out, out_f, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
        assert np.abs(got).sum() > 0
    if mode == "int8":  # the int8 model's own output differs by the activation quantisation error
        assert not np.allclose(np.asarray(quantised(x)), out_f, rtol=0, atol=1e-7)


def _llama():
    import keras_hub

    b = keras_hub.models.Llama3Backbone(vocabulary_size=50, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                                        hidden_dim=16, intermediate_dim=32)
    return keras_hub.models.Llama3CausalLM(backbone=b, preprocessor=None)


def _gpt2():
    import keras_hub

    b = keras_hub.models.GPT2Backbone(vocabulary_size=50, max_sequence_length=16, num_layers=2, num_heads=2,
                                      hidden_dim=16, intermediate_dim=32)
    return keras_hub.models.GPT2CausalLM(backbone=b, preprocessor=None)


def _qwen():
    import keras_hub

    b = keras_hub.models.QwenBackbone(vocabulary_size=50, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                                      hidden_dim=16, intermediate_dim=32)
    return keras_hub.models.QwenCausalLM(backbone=b, preprocessor=None)


@pytest.mark.parametrize("make,mode", [(_llama, "int8"), (_gpt2, "int4"), (_qwen, "int4")])
def test_quantised_causal_language_models(make, mode):
    pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(1)
    quantised, copy = _dequantised_copy(make, mode)
    x = {"token_ids": np.random.default_rng(1).integers(5, 50, (2, 8)).astype("int32"),
         "padding_mask": np.ones((2, 8), "int32")}
    # eagerly (the same code without graph compilation: 2-3x faster here); the compiled path of quantised
    # layers runs in test_quantised_keras_models_explained_with_dequantised_weights and in the transformers
    # tutorial's block (docs/tutorials/transformers-and-lstms.md, tests/test_docs.py)
    tf = pytest.importorskip("tensorflow")
    tf.config.run_functions_eagerly(True)
    try:
        got = it.lrp(quantised, x, rule="attnlrp", position=-2, target=7)["token_ids"]
        want = it.lrp(copy, x, rule="attnlrp", position=-2, target=7)["token_ids"]
    finally:
        tf.config.run_functions_eagerly(False)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    assert np.all(got[:, -1] == 0) and np.abs(got).sum() > 0


def test_a_quantisation_mode_the_engine_cannot_read_is_named():
    keras.utils.set_random_seed(2)
    model = _dense_only()
    model.quantize("float8")
    with pytest.raises(ExplainError, match=r"dense.*'float8'"):
        it.lrp(model, np.ones((1, 12), "float32"))
