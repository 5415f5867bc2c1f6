"""keras_hub models (built from configs with random weights, or loaded from a preset directory the test
writes; nothing is downloaded) under AttnLRP and CP-LRP, and a keras_hub BERT against the same
architecture written by hand from ``keras.layers`` with the same weights."""

from __future__ import annotations

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402
from keras import ops  # noqa: E402

import interprettensor as it  # noqa: E402

L = keras.layers
SMALL = dict(num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32)
pytestmark = pytest.mark.slow


def _text_inputs(rng, n=2, seq=8, vocab=50, segments=False, pad_last=2):
    x = {"token_ids": rng.integers(5, vocab, (n, seq)).astype("int32"),
         "padding_mask": np.ones((n, seq), "int32")}
    x["padding_mask"][-1, seq - pad_last:] = 0
    x["token_ids"][-1, seq - pad_last:] = 0
    if segments:
        x["segment_ids"] = np.zeros((n, seq), "int32")
        x["segment_ids"][:, seq // 2:] = 1
    return x


def _bert():
    b = keras_hub.models.BertBackbone(vocabulary_size=50, max_sequence_length=16, **SMALL)
    return keras_hub.models.BertTextClassifier(backbone=b, num_classes=3, preprocessor=None), True


def _distilbert():
    b = keras_hub.models.DistilBertBackbone(vocabulary_size=50, max_sequence_length=16, **SMALL)
    return keras_hub.models.DistilBertTextClassifier(backbone=b, num_classes=3, preprocessor=None), False


def _roberta():
    b = keras_hub.models.RobertaBackbone(vocabulary_size=50, max_sequence_length=16, **SMALL)
    return keras_hub.models.RobertaTextClassifier(backbone=b, num_classes=3, preprocessor=None), False


CLASSIFIERS = {"BertTextClassifier": _bert, "DistilBertTextClassifier": _distilbert,
               "RobertaTextClassifier": _roberta}


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_text_classifiers_explain_per_token(name):
    keras.utils.set_random_seed(0)
    model, segments = CLASSIFIERS[name]()
    x = _text_inputs(np.random.default_rng(0), segments=segments)
    logits = np.asarray(model(x))
    for rule in ("attnlrp", "cp_lrp"):
        R = it.lrp(model, x, rule=rule)
        assert isinstance(R, dict) and set(R) == set(x)
        r = R["token_ids"]
        assert r.shape == x["token_ids"].shape and np.isfinite(r).all() and np.abs(r).sum() > 0
        assert np.all(R["padding_mask"] == 0)
    # the class explained by default is the predicted one; another target gives another explanation
    R0 = it.lrp(model, x, rule="cp_lrp", target=int(np.argmin(logits[0])))["token_ids"]
    assert not np.allclose(R0, it.lrp(model, x, rule="cp_lrp")["token_ids"])


def _causal_lm(kind):
    if kind == "GPT2CausalLM":
        b = keras_hub.models.GPT2Backbone(vocabulary_size=50, max_sequence_length=16, **SMALL)
        return keras_hub.models.GPT2CausalLM(backbone=b, preprocessor=None)
    b = keras_hub.models.Llama3Backbone(vocabulary_size=50, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                                        hidden_dim=16, intermediate_dim=32)
    return keras_hub.models.Llama3CausalLM(backbone=b, preprocessor=None)


@pytest.mark.parametrize("kind", ["GPT2CausalLM", "Llama3CausalLM"])
def test_causal_language_models_explain_a_next_token_logit(kind):
    keras.utils.set_random_seed(1)
    model = _causal_lm(kind)
    x = _text_inputs(np.random.default_rng(1), n=2, seq=8, pad_last=0)
    for rule in ("attnlrp", "cp_lrp"):
        for pos in (3, -1):
            r = it.lrp(model, x, rule=rule, position=pos, target=7)["token_ids"]
            p = pos % 8
            assert r.shape == (2, 8) and np.isfinite(r).all()
            assert np.all(r[:, p + 1:] == 0), "a causal model's later tokens cannot explain an earlier position"
            assert np.abs(r[:, : p + 1]).sum() > 0
    # a batch of another sequence length gets its own graph (the causal mask depends on it)
    x2 = _text_inputs(np.random.default_rng(2), n=3, seq=5, pad_last=0)
    assert it.lrp(model, x2, rule="attnlrp", position=-1)["token_ids"].shape == (3, 5)


def test_vit_image_classifier_explains_pixels():
    keras.utils.set_random_seed(2)
    b = keras_hub.models.ViTBackbone(image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=16,
                                     mlp_dim=32)
    model = keras_hub.models.ViTImageClassifier(backbone=b, num_classes=3, preprocessor=None)
    x = np.random.default_rng(3).random((2, 16, 16, 3)).astype("float32")
    for rule in ("attnlrp", "cp_lrp"):
        R = it.lrp(model, x, rule=rule)
        assert R.shape == x.shape and np.isfinite(R).all() and np.abs(R).sum() > 0


def test_bert_loaded_from_a_local_preset_directory(tmp_path):
    keras.utils.set_random_seed(3)
    model, _ = _bert()
    model.save_to_preset(str(tmp_path / "bert_tiny"))
    loaded = keras_hub.models.BertTextClassifier.from_preset(str(tmp_path / "bert_tiny"), preprocessor=None)
    x = _text_inputs(np.random.default_rng(4), segments=True)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)
    np.testing.assert_allclose(it.lrp(loaded, x, rule="attnlrp")["token_ids"],
                               it.lrp(model, x, rule="attnlrp")["token_ids"], rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------------- BERT by hand
def _gelu_approximate(x):
    return keras.activations.gelu(x, approximate=True)


def _hand_written_bert(hub: keras.Model, seq: int) -> keras.Model:
    """keras_hub's BERT classifier as plain keras.layers, with its weights."""
    bb = hub.backbone
    vocab, hidden = bb.token_embedding.input_dim, bb.hidden_dim
    ids = keras.Input((seq,), dtype="int32", name="token_ids")
    seg = keras.Input((seq,), dtype="int32", name="segment_ids")
    pad = keras.Input((seq,), dtype="int32", name="padding_mask")
    tok_layer, pos_layer, seg_layer = (L.Embedding(vocab, hidden), L.Embedding(bb.max_sequence_length, hidden),
                                       L.Embedding(bb.num_segments, hidden))
    tok = tok_layer(ids)
    pos = pos_layer(ops.zeros_like(ids) + ops.arange(seq))  # symbolic: a constant input would be baked in
    x = tok + pos + seg_layer(seg)
    ln0 = L.LayerNormalization(epsilon=1e-12)
    x = ln0(x)
    mask = ops.expand_dims(ops.cast(pad, "bool"), 1)
    copies = [(tok_layer, [bb.token_embedding.embeddings.numpy()]),
              (pos_layer, [bb.position_embedding.position_embeddings.numpy()]),
              (seg_layer, bb.segment_embedding.get_weights()), (ln0, bb.embeddings_layer_norm.get_weights())]
    for block in bb.transformer_layers:
        mha = L.MultiHeadAttention(bb.num_heads, hidden // bb.num_heads)
        ln1, ln2 = L.LayerNormalization(epsilon=1e-12), L.LayerNormalization(epsilon=1e-12)
        d1, d2 = L.Dense(bb.intermediate_dim, activation=_gelu_approximate), L.Dense(hidden)
        x = ln1(x + mha(x, x, attention_mask=mask))
        x = ln2(x + d2(d1(x)))
        copies += [(mha, block._self_attention_layer.get_weights()),
                   (ln1, block._self_attention_layer_norm.get_weights()),
                   (d1, block._feedforward_intermediate_dense.get_weights()),
                   (d2, block._feedforward_output_dense.get_weights()),
                   (ln2, block._feedforward_layer_norm.get_weights())]
    pooled = L.Dense(hidden, activation="tanh")
    logits = L.Dense(hub.num_classes)
    out = logits(pooled(x[:, 0, :]))
    model = keras.Model([ids, seg, pad], out)
    copies += [(pooled, bb.pooled_dense.get_weights()), (logits, hub.output_dense.get_weights())]
    for layer, weights in copies:
        layer.set_weights(weights)
    return model


def test_keras_hub_bert_equals_bert_written_by_hand():
    keras.utils.set_random_seed(4)
    hub, _ = _bert()
    hand = _hand_written_bert(hub, 8)
    x = _text_inputs(np.random.default_rng(5), n=3, segments=True)
    args = [x["token_ids"], x["segment_ids"], x["padding_mask"]]
    np.testing.assert_allclose(np.asarray(hand(args)), np.asarray(hub(x)), rtol=1e-4, atol=1e-5)
    for rule in ("attnlrp", "cp_lrp"):
        got = it.lrp(hub, x, rule=rule)["token_ids"]
        want = it.lrp(hand, args, rule=rule)[0]
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6)


# ----------------------------------------------------------------------------- Gemma 3 by hand
def _gemma3():
    b = keras_hub.models.Gemma3Backbone(
        vocabulary_size=50, image_size=16, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=16,
        intermediate_dim=32, head_dim=8, use_query_key_norm=True, use_post_ffw_norm=True,
        use_post_attention_norm=True, use_sliding_window_attention=True, sliding_window_size=4)
    return keras_hub.models.Gemma3CausalLM(backbone=b, preprocessor=None)


def _rope_tables(seq: int, dim: int, wavelength: float, scaling: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of RoFormer's rotary position embedding (Su et al. 2021, eq. 34) for positions
    0..seq-1, each frequency used for both halves of the feature axis, as ``(1, seq, 1, dim)``."""
    inverse = wavelength ** (-np.arange(0, dim, 2) / dim) / scaling
    angles = np.arange(seq)[:, None] * inverse[None, :]
    angles = np.concatenate([angles, angles], axis=-1)[None, :, None, :]
    return np.cos(angles).astype("float32"), np.sin(angles).astype("float32")


def _hand_written_gemma3(hub: keras.Model, seq: int) -> keras.Model:
    """keras_hub's Gemma 3 causal LM (text only) as plain keras.layers and keras.ops, with its weights:
    scaled embedding, RMS norms with scale 1 + w, query/key norms, rotary positions, grouped-query
    attention under a causal sliding-window mask, GeGLU feed-forward, post-norms, tied output."""
    bb = hub.backbone
    hidden, heads, kv, dim = bb.hidden_dim, bb.num_query_heads, bb.num_key_value_heads, bb.head_dim
    ids = keras.Input((seq,), dtype="int32", name="token_ids")
    pad = keras.Input((seq,), dtype="int32", name="padding_mask")
    copies = []

    def rms(source, name):
        layer = L.RMSNormalization(epsilon=source.epsilon, name=name)
        copies.append((layer, [1.0 + source.scale.numpy()]))
        return layer

    def dense(source, equation, shape, name):
        layer = L.EinsumDense(equation, output_shape=shape, name=name)
        copies.append((layer, source.get_weights()))
        return layer

    embed = L.Embedding(bb.vocabulary_size, hidden, name="embed")
    copies.append((embed, [bb.token_embedding.embeddings.numpy()]))
    x = embed(ids) * np.float32(np.sqrt(hidden))
    i, j = np.arange(seq)[:, None], np.arange(seq)[None, :]
    for n, block in enumerate(bb.transformer_layers):
        att = block.attention
        window = (i - j < att.sliding_window_size) if att.use_sliding_window_attention else np.ones((seq, seq), bool)
        allowed = ((i >= j) & window)[None, None, None]  # (1, kv, groups, t, s) after broadcasting
        mask = ops.logical_and(allowed, ops.cast(pad, "bool")[:, None, None, None, :])
        cos, sin = _rope_tables(seq, dim, att.rope_wavelength, att.rope_scaling_factor)

        def rope(t):
            t1, t2 = ops.split(t, 2, axis=-1)
            return t * cos + ops.concatenate([-t2, t1], axis=-1) * sin

        h = rms(block.pre_attention_norm, f"pre_attention_norm_{n}")(x)
        q = rms(att.query_norm, f"query_norm_{n}")(dense(att.query_dense, "btd,ndh->btnh", (None, heads, dim),
                                                         f"query_{n}")(h))
        k = rms(att.key_norm, f"key_norm_{n}")(dense(att.key_dense, "bsd,kdh->bskh", (None, kv, dim), f"key_{n}")(h))
        v = dense(att.value_dense, "bsd,kdh->bskh", (None, kv, dim), f"value_{n}")(h)
        q = ops.reshape(rope(q) * np.float32(1 / np.sqrt(dim)), (-1, seq, kv, heads // kv, dim))
        logits = ops.einsum("btkgh,bskh->bkgts", q, rope(k))
        weights = L.Softmax(name=f"softmax_{n}")(logits, mask=mask)
        a = ops.reshape(ops.einsum("bkgts,bskh->btkgh", weights, v), (-1, seq, heads, dim))
        a = dense(att.output_dense, "btnh,nhd->btd", (None, hidden), f"attention_output_{n}")(a)
        x = x + rms(block.post_attention_norm, f"post_attention_norm_{n}")(a)
        h = rms(block.pre_ffw_norm, f"pre_ffw_norm_{n}")(x)
        g = dense(block.gating_ffw, "btd,df->btf", (None, block.intermediate_dim), f"ffw_gating_{n}")(h)
        u = dense(block.gating_ffw_2, "btd,df->btf", (None, block.intermediate_dim), f"ffw_gating_2_{n}")(h)
        f = dense(block.ffw_linear, "btf,fd->btd", (None, hidden), f"ffw_linear_{n}")(
            _gelu_approximate(g) * u)
        x = x + rms(block.post_ffw_norm, f"post_ffw_norm_{n}")(f)
    x = rms(bb.layer_norm, "final_normalization")(x)
    out = L.Dense(bb.vocabulary_size, use_bias=False, name="logits")
    copies.append((out, [bb.token_embedding.embeddings.numpy().T]))
    model = keras.Model([ids, pad], out(x))
    for layer, weights in copies:
        layer.set_weights(weights)
    return model


def test_keras_hub_gemma3_equals_gemma3_written_by_hand():
    keras.utils.set_random_seed(6)
    hub = _gemma3()
    hand = _hand_written_gemma3(hub, 8)
    x = _text_inputs(np.random.default_rng(7), n=2, seq=8, pad_last=0)
    args = [x["token_ids"], x["padding_mask"]]
    np.testing.assert_allclose(np.asarray(hand(args)), np.asarray(hub(x)), rtol=1e-4, atol=1e-5)
    for rule in ("attnlrp", "cp_lrp"):
        for pos in (3, -1):
            got = it.lrp(hub, x, rule=rule, position=pos, target=7)["token_ids"]
            want = it.lrp(hand, args, rule=rule, position=pos, target=7)[0]
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6)
