"""Explaining generated text (it.explain_generation): every generated token's logit explained over the
prompt and the tokens before it, in one batched pass; contrastive targets (logit A minus logit B);
relevance per attention head; the relevance matrix rendered."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402

import interprettensor as it  # noqa: E402
from interprettensor.attribution import attention_heads  # noqa: E402
from interprettensor.engine.errors import ExplainError  # noqa: E402

pytestmark = pytest.mark.slow
PROMPT = np.array([5, 9, 11, 20], "int32")


def _gpt2():
    b = keras_hub.models.GPT2Backbone(vocabulary_size=50, max_sequence_length=16, num_layers=2, num_heads=2,
                                      hidden_dim=16, intermediate_dim=32)
    return keras_hub.models.GPT2CausalLM(backbone=b, preprocessor=None)


def _llama():
    b = keras_hub.models.Llama3Backbone(vocabulary_size=50, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                                        hidden_dim=16, intermediate_dim=32)
    return keras_hub.models.Llama3CausalLM(backbone=b, preprocessor=None)


def _x(ids):
    ids = np.atleast_2d(ids)
    return {"token_ids": ids, "padding_mask": np.ones_like(ids)}


def test_every_generated_token_is_explained_in_one_batched_pass():
    keras.utils.set_random_seed(0)
    model = _gpt2()
    ex = it.Explainer(model, "attnlrp")
    g = it.explain_generation(model, PROMPT, 4, explainer=ex)
    P, G = 4, 4
    assert g.token_ids.shape == (P + G,) and np.array_equal(g.token_ids[:P], PROMPT) and g.prompt_length == P
    assert ex.trace_count == 1, "all generated tokens in one compiled pass"
    # greedy: each generated token is the argmax of the model's logits one position before it
    logits = np.asarray(model(_x(g.token_ids)))[0]
    positions = np.arange(P - 1, P + G - 1)
    np.testing.assert_array_equal(g.generated, logits[positions].argmax(-1))
    np.testing.assert_allclose(g.logits, logits[positions, g.generated], rtol=1e-5, atol=1e-6)
    # each row is the single explanation of that token at that position (a batch of one, another pass)
    assert g.relevance.shape == (G, P + G)
    single = it.Explainer(model, "attnlrp")
    for k in range(G):
        want = single(_x(g.token_ids), int(g.generated[k]), position=int(positions[k]))["token_ids"][0]
        np.testing.assert_allclose(g.relevance[k], want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
        assert np.all(g.relevance[k, P + k:] == 0), "a logit cannot depend on the token it chooses or later ones"
        assert np.abs(g.relevance[k, :P + k]).sum() > 0
    # keras_hub's own generate loop, compiled greedy, chooses the same tokens
    model.compile(sampler="greedy")
    np.testing.assert_array_equal(it.explain_generation(model, PROMPT, 4, sampler="model").token_ids, g.token_ids)
    # rendering: one line per generated token, and the matrix as a heatmap
    sentences = g.sentences([f"t{i}" for i in g.token_ids])
    assert [len(s[0]) for s in sentences] == [P, P + 1, P + 2, P + 3] and sentences[0][2] == f"-> 't{g.token_ids[P]}'"


def test_the_relevance_matrix_renders_as_html_and_png(tmp_path):
    from matplotlib.image import imread

    R = np.array([[0.5, -1.0, 0.0, 0.0], [0.2, 0.1, -0.3, 0.0]])
    tokens = ["a", "b", "c", "d"]
    png = it.render_text.save_matrix_png(str(tmp_path / "m.png"), R, tokens, prompt_length=2)
    img = imread(png)[..., :3]
    grey = np.all(np.abs(img - 0.85) < 0.01, axis=-1)  # the three cells of the causal future
    assert img.ndim == 3 and grey.any()
    html = it.render_text.save_html(str(tmp_path / "m.html"),
                                    [(tokens[:2 + k], R[k, :2 + k], f"-> {tokens[2 + k]}") for k in range(2)])
    assert open(html, encoding="utf-8").read().count('<div class="it-sentence">') == 2
    with pytest.raises(ValueError, match="prompt_length"):
        it.render_text.save_matrix_png(str(tmp_path / "bad.png"), R, tokens, prompt_length=3)


def test_contrastive_target_is_the_difference_of_the_two_explanations():
    keras.utils.set_random_seed(1)
    model = _llama()
    x = _x(np.random.default_rng(1).integers(5, 50, (2, 8)).astype("int32"))
    ex = it.Explainer(model, "attnlrp")
    got = ex(x, 7, position=-2, contrast=3)["token_ids"]
    # LRP's backward pass is linear in its starting relevance: separate passes for each logit
    want = ex(x, 7, position=-2)["token_ids"] - ex(x, 3, position=-2)["token_ids"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    assert np.all(got[:, -1] == 0) and np.abs(got).sum() > 0
    # a classifier without a sequence axis, one contrast class per sample
    clf = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(4)])
    xs = np.random.default_rng(2).normal(size=(2, 6)).astype("float32")
    np.testing.assert_allclose(it.lrp(clf, xs, target=[1, 2], contrast=[0, 3]),
                               it.lrp(clf, xs, target=[1, 2]) - it.lrp(clf, xs, target=[0, 3]), rtol=1e-5, atol=1e-7)
    with pytest.raises(ExplainError, match="target out of range"):
        it.lrp(clf, xs, target=1, contrast=4)
    with pytest.raises(ExplainError, match="contrast and relevance exclude each other"):
        it.lrp(clf, xs, relevance=np.ones((2, 4), "float32"), contrast=0)
    # the generation explains logit(generated) - logit(contrast)
    g = it.explain_generation(model, PROMPT, 2, contrast=3)
    logits = np.asarray(model(_x(g.token_ids)))[0]
    pos = np.arange(3, 5)
    np.testing.assert_allclose(g.logits, logits[pos, g.generated] - logits[pos, 3], rtol=1e-5, atol=1e-6)


def test_relevance_per_attention_head():
    keras.utils.set_random_seed(2)
    model = _gpt2()
    proj = model.backbone.transformer_layers[0]._self_attention_layer._output_dense
    kernel = proj.kernel.numpy()  # (heads, head_dim, hidden)
    kernel[0] = 0.0  # head 0 of the first layer reaches nothing: its relevance must be exactly zero
    proj.kernel.assign(kernel)
    g = it.explain_generation(model, PROMPT, 3, heads=True)
    names = [f"{model.backbone.name}/transformer_layer_{i}/self_attention" for i in (0, 1)]
    assert sorted(g.heads) == names
    first, second = (g.heads[n] for n in names)
    assert first.shape == second.shape == (3, 7, 2)
    assert np.all(first[..., 0] == 0) and np.abs(first[..., 1]).sum() > 0
    assert np.abs(second[..., 0]).sum() > 0 and np.abs(second[..., 1]).sum() > 0
    # grouped-query attention (Llama 3): one value per query head
    keras.utils.set_random_seed(3)
    llama = _llama()
    ex = it.Explainer(llama, "attnlrp")
    _, lw = ex(_x(PROMPT), 7, position=-1, layerwise=True)
    heads = attention_heads(ex, lw)
    assert len(heads) == 2 and all(v.shape == (1, 4, 4) for v in heads.values())


def test_bad_prompts_are_named():
    keras.utils.set_random_seed(4)
    model = _gpt2()
    with pytest.raises(ExplainError, match="integer token ids"):
        it.explain_generation(model, np.array([0.5, 1.0]), 2)
    with pytest.raises(ExplainError, match="new_tokens"):
        it.explain_generation(model, PROMPT, 0)
    with pytest.raises(ExplainError, match="sampler"):
        it.explain_generation(model, PROMPT, 1, sampler="beam")


# ----------------------------------------------------------------------------- the command line
def _bpe(words):
    """A byte-level BPE vocabulary and merges that spell each of ``words`` as one token, with and without a
    leading space (``'Ġcat'``, ``'cat'``); the space-led merges rank first, so they win."""
    vocab, spaced, plain = {"<|endoftext|>": 0}, [], []
    for ch in sorted(set("".join(words))) + ["Ġ"]:
        vocab.setdefault(ch, len(vocab))
    for w in words:
        for s, rest, merges in (("Ġ", w, spaced), (w[0], w[1:], plain)):
            for ch in rest:
                if f"{s} {ch}" not in merges:
                    merges.append(f"{s} {ch}")
                s += ch
                vocab.setdefault(s, len(vocab))
    return vocab, spaced + plain


def _cli(capsys, *args):
    from interprettensor.apps import cli

    code = cli.main(["explain-text", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def test_explain_text_reads_a_keras_hub_preset_folder_and_explains_a_generation(tmp_path, capsys):
    keras.utils.set_random_seed(5)
    vocab, merges = _bpe(["the", "cat", "sat", "on", "mat", "a", "dog", "ran"])
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocab, merges=merges)
    pre = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer=tokenizer, sequence_length=12)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=len(vocab), max_sequence_length=16, num_layers=2,
                                             num_heads=2, hidden_dim=16, intermediate_dim=64)  # GPT-2's 4 x hidden
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=pre)
    folder = tmp_path / "gpt2_tiny"
    model.save_to_preset(str(folder))
    prompt = np.array([0, vocab["the"], vocab["Ġcat"], vocab["Ġsat"]], "int32")  # what the preprocessor makes
    code, out, err = _cli(capsys, folder, "--text", "the cat sat", "--out", tmp_path / "o")
    assert code == 0, err
    with np.load(tmp_path / "o" / "relevances.npz") as z:
        np.testing.assert_array_equal(z["token_ids"][0, :4], prompt)
        assert z["mask"][0].sum() == 4 and int(z["positions"][0]) == 3
        want = it.lrp(model, _x(z["token_ids"][0]) | {"padding_mask": z["mask"][:1].astype("int32")},
                      rule="attnlrp", position=3, target=int(z["targets"][0]))["token_ids"][0]
        np.testing.assert_allclose(z["relevance"][0], want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    code, out, err = _cli(capsys, folder, "--text", "the cat sat", "--generate", "3", "--out", tmp_path / "g")
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "g")) == ["generation.html", "generation.npz", "generation_text_1.png"]
    g = it.explain_generation(model, prompt, 3)
    with np.load(tmp_path / "g" / "generation.npz") as z:
        np.testing.assert_array_equal(z["text_1/token_ids"], g.token_ids)
        assert int(z["text_1/prompt_length"]) == 4
        np.testing.assert_allclose(z["text_1/relevance"], g.relevance, rtol=1e-4, atol=1e-6 * np.abs(g.relevance).max())
    page = (tmp_path / "g" / "generation.html").read_text(encoding="utf-8")
    assert page.count('<div class="it-sentence">') == 3 and "cat" in page
    # the same model as a Hugging Face checkpoint folder (model.safetensors, config.json, vocab.json,
    # merges.txt), which keras_hub converts; the "architectures" entry is what transformers writes
    pytest.importorskip("safetensors")
    hf = tmp_path / "gpt2_hf"
    model.export_to_transformers(str(hf))
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps(dict(config, architectures=["GPT2LMHeadModel"])))
    code, out, err = _cli(capsys, hf, "--text", "the cat sat", "--generate", "3", "--out", tmp_path / "h")
    assert code == 0, err
    with np.load(tmp_path / "h" / "generation.npz") as z:
        np.testing.assert_array_equal(z["text_1/token_ids"], g.token_ids)
        np.testing.assert_allclose(z["text_1/relevance"], g.relevance, rtol=1e-4, atol=1e-6 * np.abs(g.relevance).max())


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "is not a keras_hub preset or a Hugging Face checkpoint (it has no config.json)"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text("{not json")), "cannot load the keras_hub preset"),
])
def test_a_bad_model_folder_is_named(tmp_path, capsys, make, message):
    make(tmp_path / "bad_preset")
    code, _, err = _cli(capsys, tmp_path / "bad_preset", "--text", "the cat", "--out", tmp_path / "o")
    assert code == 1 and message in err and "bad_preset" in err, err
    assert not os.path.exists(tmp_path / "o")


def test_generate_on_token_ids_and_its_errors(tmp_path, capsys):
    keras.utils.set_random_seed(6)
    ids = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(20, 8)(ids)
    h = keras.layers.LayerNormalization()(h + keras.layers.MultiHeadAttention(2, 4)(h, h, use_causal_mask=True))
    lm = keras.Model(ids, keras.layers.Dense(20)(h))
    lm.save(tmp_path / "lm.keras")
    (tmp_path / "ids.txt").write_text("1 2 3\n")
    code, out, err = _cli(capsys, tmp_path / "lm.keras", tmp_path / "ids.txt", "--generate", "2", "--out", tmp_path / "g")
    assert code == 0, err
    g = it.explain_generation(lm, np.array([1, 2, 3], "int32"), 2)
    with np.load(tmp_path / "g" / "generation.npz") as z:
        np.testing.assert_array_equal(z["ids:1/token_ids"], g.token_ids)
        np.testing.assert_allclose(z["ids:1/relevance"], g.relevance, rtol=1e-4, atol=1e-6 * np.abs(g.relevance).max())
    code, _, err = _cli(capsys, tmp_path / "lm.keras", tmp_path / "ids.txt", "--generate", "2", "--position", "1",
                        "--out", tmp_path / "e")
    assert code == 1 and "--position and --generate exclude each other" in err and not os.path.exists(tmp_path / "e")
