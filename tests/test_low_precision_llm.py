"""Language models built in low precision: a keras_hub model under Keras' ``mixed_bfloat16`` policy, one
built in ``bfloat16`` (explained in its own precision and in float32), and that model quantised to int8
(``model.quantize('int8')`` keeps such layers computing in bfloat16: ``'int8_from_bfloat16'``). Each is
compared with the float32 model holding the same weights (bfloat16 values are exact in float32; the
int8 model's are dequantised in NumPy from Keras' integers and scales), an independent computation.

Tolerance: bfloat16 keeps 8 significant bits (``2**-8`` relative spacing). Each token's relevance is a
sum over the ``hidden`` units of its embedding, each of which carries a relative rounding error of that
order from the bfloat16 forward values, so ``|R - R32| <= 2**-8 * hidden * max|R32|``; the relevance
summed over the tokens (AttnLRP's conserved total, which the float32 model itself keeps only up to its
stabilisers and softmax rule) then within ``2**-8 * hidden * sum|R32|``.
"""

from __future__ import annotations

import numpy as np
import pytest

import keras

import interprettensor as it

keras_hub = pytest.importorskip("keras_hub")

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:Layer .* does not have a `quantize` method")]

HIDDEN = 16
EPS_BF16 = 2.0 ** -8
EPS32 = 2.0 ** -23
TARGET, POSITION = 7, -1


def _llama(dtype=None):
    keras.utils.set_random_seed(0)
    b = keras_hub.models.Llama3Backbone(vocabulary_size=50, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                                        hidden_dim=HIDDEN, intermediate_dim=32, dtype=dtype)
    return keras_hub.models.Llama3CausalLM(backbone=b, preprocessor=None)


X = {"token_ids": np.random.default_rng(1).integers(5, 50, (2, 8)).astype("int32"),
     "padding_mask": np.ones((2, 8), "int32")}


@pytest.fixture(scope="module")
def models():
    """``(bfloat16 model, float32 model with its weights, the float32 model's relevance)``."""
    m16 = _llama("bfloat16")
    m32 = _llama()
    m32.set_weights([np.asarray(w, np.float32) for w in m16.get_weights()])
    R32 = it.Explainer(m32, "attnlrp")(X, target=TARGET, position=POSITION)["token_ids"].astype(np.float64)
    assert np.abs(R32).max() > 0
    return m16, m32, R32


def _bf16_close(R, R32):
    R = np.asarray(R, np.float64)
    assert np.isfinite(R).all()
    np.testing.assert_allclose(R, R32, rtol=0, atol=EPS_BF16 * HIDDEN * np.abs(R32).max())
    np.testing.assert_allclose(R.sum(-1), R32.sum(-1), rtol=0, atol=EPS_BF16 * HIDDEN * np.abs(R32).sum(-1).max())


def test_token_models_compute_in_float_not_in_their_inputs_integer_dtype(models):
    """A model whose inputs are all integers (token ids, a mask) computes in its layers' float dtype:
    the explainer's dtype was once taken from the first input (int32), which made a custom starting
    relevance integer (0.25 became 0)."""
    m16, m32, _ = models
    e = it.Explainer(m32, "attnlrp")
    assert (e.dtype, e.backward_dtype) == ("float32", "float32")
    assert it.Explainer(m16, "attnlrp").dtype == "bfloat16"
    R0 = np.zeros((2, 8, 50), np.float32)
    R0[:, -1, TARGET] = 1.0
    one = e(X, relevance=R0)["token_ids"].astype(np.float64)
    quarter = e(X, relevance=0.25 * R0)["token_ids"].astype(np.float64)
    assert np.abs(one).max() > 0
    # LRP is linear in the starting relevance (the forward pass, and so every denominator, is fixed)
    np.testing.assert_allclose(quarter, 0.25 * one, rtol=0, atol=EPS32 * 32 * np.abs(one).max())


def test_keras_mixed_bfloat16_policy(models):
    """Built under ``mixed_bfloat16`` (float32 variables, bfloat16 computation): the forward pass in
    bfloat16, the relevance in float32; the layers the backward pass calls again (the rotary embedding's
    linear map) compute in float32 too (they once multiplied the float32 relevance's map by their
    bfloat16 output). Checkpointed segments recompute their records in bfloat16, as the forward pass
    did, so the checkpointed pass gives the same float32 relevance."""
    _, m32, R32 = models
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = _llama()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    mixed.set_weights(m32.get_weights())
    e = it.Explainer(mixed, "attnlrp")
    assert (e.dtype, e.backward_dtype) == ("bfloat16", "float32")
    R = e(X, target=TARGET, position=POSITION)["token_ids"]
    assert R.dtype == np.float32
    _bf16_close(R, R32)
    Rc = it.Explainer(mixed, "attnlrp", checkpoint=True)(X, target=TARGET, position=POSITION)["token_ids"]
    np.testing.assert_allclose(np.asarray(Rc, np.float64), np.asarray(R, np.float64), rtol=0,
                               atol=EPS32 * 32 * np.abs(R).max())


@pytest.mark.parametrize("dtype", [None, "float32"])
def test_bfloat16_model(models, dtype):
    """Built with ``dtype='bfloat16'``: explained in its own precision (``dtype=None``: bfloat16
    relevance) and in float32 (each layer reads its bfloat16 weights as float32); both once failed in
    the token embedding (an autocast to the token ids' int32)."""
    m16, _, R32 = models
    R = it.Explainer(m16, "attnlrp", dtype=dtype)(X, target=TARGET, position=POSITION)["token_ids"]
    assert R.dtype == np.dtype("bfloat16" if dtype is None else "float32")
    _bf16_close(R, R32)


def _dequantised_float32(quantised, m32):
    """The float32 model with the int8 model's weights dequantised in NumPy (``W = q / s``)."""
    from test_quantised import _embeddings, _kernel, _reverse

    ref = _llama()
    ref.set_weights(m32.get_weights())
    n = 0
    for lq, lf in zip(quantised._flatten_layers(), ref._flatten_layers()):
        assert type(lq) is type(lf)
        if not getattr(lq, "quantization_mode", None):
            continue
        n += 1
        if isinstance(lq, keras.layers.Embedding):
            lf.embeddings.assign(_embeddings(lq).astype("float32"))
            if not lq.tie_weights:
                lf.reverse_embeddings.assign(_reverse(lq).astype("float32"))
        else:
            lf.kernel.assign(_kernel(lq).astype("float32"))
    assert n == 2 * 7 + 1  # per block: query, key, value, output, gate, up, down; the embedding
    return ref


@pytest.fixture(scope="module")
def int8(models):
    """``(the bfloat16 model quantised to int8, the float32 model's relevance with its weights
    dequantised)``."""
    m16, m32, _ = models
    q = _llama("bfloat16")
    q.set_weights(m16.get_weights())
    q.quantize("int8")
    ref = _dequantised_float32(q, m32)
    Rq = it.Explainer(ref, "attnlrp")(X, target=TARGET, position=POSITION)["token_ids"].astype(np.float64)
    return q, Rq


def _policies(model):
    return {lay.dtype_policy.name for lay in model._flatten_layers() if getattr(lay, "quantization_mode", None)}


@pytest.mark.parametrize("dtype", ["float32", None])
def test_int8_quantised_bfloat16_model(int8, dtype):
    """``model.quantize('int8')`` of the bfloat16 model: Keras keeps the quantised layers computing in
    bfloat16 (``'int8_from_bfloat16'``); under ``dtype='float32'`` they now compute in float32 like the
    rest (they once returned bfloat16 into a float32 residual sum). The explanation is that of the float
    model with the dequantised weights."""
    q, Rq = int8
    assert _policies(q) == {"int8_from_bfloat16"}
    R = it.Explainer(q, "attnlrp", dtype=dtype)(X, target=TARGET, position=POSITION)["token_ids"]
    _bf16_close(R, Rq)
    assert _policies(q) == {"int8_from_bfloat16"}  # the model's own policies again after the explanation


def test_int8_model_built_from_a_dtype_policy_map(int8):
    """A model built (or loaded, as keras_hub's quantised presets are) with a ``DTypePolicyMap`` naming
    its int8 layers by path (no float copy of the weights ever exists): under ``dtype='float32'`` the
    layers' map entries compute in float32 and are restored afterwards (the map holds its one pattern)."""
    q, Rq = int8
    pattern = (r"(.*/)?(token_embedding|query|key|value|attention_output|feedforward_gate_dense|"
               r"feedforward_intermediate_dense|feedforward_output_dense)")
    policies = keras.dtype_policies.DTypePolicyMap(
        default_policy="bfloat16", policy_map={pattern: keras.dtype_policies.get("int8_from_bfloat16")})
    built = _llama(policies)
    assert [lay.quantization_mode for lay in built._flatten_layers()].count("int8") == 2 * 7 + 1
    built.set_weights(q.get_weights())
    R = it.Explainer(built, "attnlrp", dtype="float32")(X, target=TARGET, position=POSITION)["token_ids"]
    _bf16_close(R, Rq)
    assert len(policies) == 1 and built.backbone.token_embedding.compute_dtype == "bfloat16"


def test_copied_weights_are_not_held_for_the_backward_pass(models, int8):
    """The forward records of a layer whose weights the rules read as a computed copy (dequantised
    int8; bfloat16 weights read in float32) hold no copy for the backward pass, which makes it again
    when the relevance arrives: held, every layer's copy would be alive at once (16 GB for an 8B int8
    model in bfloat16). A layer whose variables are read as they are keeps its map."""
    from interprettensor.engine.graph import forward
    from interprettensor.engine.precision import layer_precision

    m16, m32, _ = models
    q, _ = int8
    xs = [keras.ops.convert_to_tensor(X[k]) for k in sorted(X)]
    for model, dtype, copies in [(q, "float32", True), (m16, "float32", True), (m16, None, False),
                                 (m32, None, False)]:
        e = it.Explainer(model, "attnlrp", dtype=dtype, verify=False)
        e._activate_for(xs)
        with layer_precision(e.graph, e.dtype):
            _, records = forward(e.graph, xs, e.pass_options[True])
        dense = [r for s, r in zip(e.graph.steps, records) if s.type_name in ("Dense", "EinsumDense")]
        assert len(dense) == 2 * 7
        assert all(("map" in state) != copies for _, _, state in dense), (dtype, copies)
