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
