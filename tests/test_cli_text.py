"""``interprettensor explain-text``: token ids from .txt and .npy files on a small functional transformer,
texts through a keras_hub BERT classifier saved with its preprocessor, a causal model's positions, and
clear errors that leave no output files behind."""

import os

import keras
import numpy as np
import pytest

import interprettensor as it
from interprettensor.apps import cli

L = keras.layers
SEQ, VOCAB = 8, 20
OUTPUTS = {"relevances.npz", "explanations.html", "explanations.png"}


def run(capsys, *args):
    code = cli.main(["explain-text", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def classifier():
    ids = keras.Input((SEQ,), dtype="int32")
    h = L.Embedding(VOCAB, 8)(ids)
    h = L.LayerNormalization()(h + L.MultiHeadAttention(2, 4)(h, h))
    h = L.GlobalAveragePooling1D()(h)
    return keras.Model(ids, L.Dense(3)(h))


def causal_lm():
    ids = keras.Input((None,), dtype="int32")
    h = L.Embedding(VOCAB, 8)(ids)
    h = L.LayerNormalization()(h + L.MultiHeadAttention(2, 4)(h, h, use_causal_mask=True))
    return keras.Model(ids, L.Dense(VOCAB)(h))


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp("text")
    keras.utils.set_random_seed(0)
    classifier().save(d / "clf.keras")
    causal_lm().save(d / "lm.keras")
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(d / "mlp.keras")
    (d / "ids.txt").write_text("1 2 3 4\n5 6 7 8 9 10\n\n11 12\n")
    np.save(d / "ids.npy", np.array([[1, 2, 3, 0, 0, 0, 0, 0], [4, 5, 6, 7, 8, 9, 10, 11]], np.int64))
    (d / "vocab.txt").write_text("".join(f"w{i}\n" for i in range(VOCAB)))
    (d / "bad.txt").write_text("1 2 3\n4 five 6\n")
    (d / "big.txt").write_text("1 2 25\n")
    (d / "long.txt").write_text(" ".join(["1"] * (SEQ + 1)) + "\n")
    return d


def padded(rows, length):
    out = np.zeros((len(rows), length), np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def test_token_ids_from_txt_and_npy_match_lrp(d, capsys, monkeypatch):
    monkeypatch.chdir(d)
    code, out, err = run(capsys, "clf.keras", "ids.txt", "ids.npy", "--vocab", "vocab.txt", "--out", "o1")
    assert code == 0, err
    assert set(os.listdir(d / "o1")) == OUTPUTS
    ids = np.concatenate([padded([[1, 2, 3, 4], [5, 6, 7, 8, 9, 10], [11, 12]], SEQ), np.load(d / "ids.npy")])
    model = keras.models.load_model(d / "clf.keras")
    R = it.lrp(model, ids, rule="attnlrp")
    with np.load(d / "o1" / "relevances.npz") as z:
        np.testing.assert_array_equal(z["token_ids"], ids)
        np.testing.assert_allclose(z["relevance"], R, rtol=1e-5, atol=1e-7)
        assert list(z["names"]) == ["ids:1", "ids:2", "ids:4", "ids_0", "ids_1"]
        np.testing.assert_array_equal(z["mask"], np.arange(SEQ)[None] < np.array([4, 6, 2, 3, 8])[:, None])
        logits = np.asarray(model(ids))
        np.testing.assert_array_equal(z["predictions"], logits.argmax(-1))
        np.testing.assert_array_equal(z["targets"], logits.argmax(-1))
        assert "positions" not in z.files
    assert len(out.strip().splitlines()) == 6 and "most relevant: " in out  # a line per sentence, and a summary
    page = (d / "o1" / "explanations.html").read_text()
    assert "w12" in page and ">w0<" not in page  # --vocab names the tokens; padding (id 0) is hidden


def test_target_and_quiet(d, capsys, monkeypatch):
    monkeypatch.chdir(d)
    code, out, _ = run(capsys, "clf.keras", "ids.npy", "--target", "1", "--rule", "cp_lrp", "--out", "o2", "-q")
    assert code == 0 and len(out.strip().splitlines()) == 1
    model = keras.models.load_model(d / "clf.keras")
    R = it.lrp(model, np.load(d / "ids.npy"), rule="cp_lrp", target=1)
    with np.load(d / "o2" / "relevances.npz") as z:
        np.testing.assert_allclose(z["relevance"], R, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(z["targets"], [1, 1])


def test_causal_model_explains_a_position(d, capsys, monkeypatch):
    """Outputs (batch, sequence, vocabulary): --position, and by default each sentence's last token."""
    monkeypatch.chdir(d)
    model = keras.models.load_model(d / "lm.keras")
    ids = padded([[1, 2, 3, 4], [5, 6, 7, 8, 9, 10], [11, 12]], 6)  # to the longest line
    assert run(capsys, "lm.keras", "ids.txt", "--out", "o3", "-q")[0] == 0
    with np.load(d / "o3" / "relevances.npz") as z:
        np.testing.assert_array_equal(z["positions"], [3, 5, 1])
        np.testing.assert_allclose(z["relevance"], it.lrp(model, ids, rule="attnlrp", position=[3, 5, 1]),
                                   rtol=1e-5, atol=1e-7)
    assert run(capsys, "lm.keras", "ids.txt", "--position", "-5", "--target", "7", "--max-length", "7",
               "--out", "o4", "-q")[0] == 0
    with np.load(d / "o4" / "relevances.npz") as z:
        np.testing.assert_array_equal(z["positions"], [2, 2, 2])
        np.testing.assert_array_equal(z["targets"], [7, 7, 7])
        np.testing.assert_allclose(z["relevance"], it.lrp(model, padded(ids, 7), rule="attnlrp", position=2,
                                                          target=7), rtol=1e-5, atol=1e-7)
        assert np.all(z["relevance"][:, 3:] == 0)  # the causal mask: no relevance after the position


@pytest.mark.slow
def test_keras_hub_classifier_with_its_preprocessor(tmp_path, capsys, monkeypatch):
    keras_hub = pytest.importorskip("keras_hub")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "great", "bad", "a", "film",
             "not", "good", "plot", "acting"]
    tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=vocab)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=16)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(vocab), num_layers=2, num_heads=2, hidden_dim=16,
                                             intermediate_dim=32, max_sequence_length=16)
    model = keras_hub.models.BertTextClassifier(backbone, num_classes=2, preprocessor=preprocessor)
    model.save(tmp_path / "bert.keras")
    (tmp_path / "texts.txt").write_text("a bad film\n\nthe acting was not good\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "bert.keras", "texts.txt", "--text", "the movie was great", "--out", "o")
    assert code == 0, err
    assert set(os.listdir(tmp_path / "o")) == OUTPUTS
    assert 'text_1 "the movie was great": class ' in out and "texts:3" in out
    page = (tmp_path / "o" / "explanations.html").read_text()
    assert "movie" in page and "great" in page and "[PAD]" not in page
    model = keras.models.load_model(tmp_path / "bert.keras", compile=False)
    assert model.preprocessor is not None
    texts = ["a bad film", "the acting was not good", "the movie was great"]
    x = model.preprocessor(texts)
    x = {k: np.asarray(v) for k, v in (x[0] if isinstance(x, tuple) else x).items()}
    R = it.lrp(model, x, rule="attnlrp")["token_ids"]
    with np.load(tmp_path / "o" / "relevances.npz") as z:
        np.testing.assert_array_equal(z["token_ids"], x["token_ids"])
        np.testing.assert_array_equal(z["mask"], x["padding_mask"].astype(bool))
        np.testing.assert_allclose(z["relevance"], R, rtol=1e-5, atol=1e-7)
        assert list(z["texts"]) == texts and list(z["names"]) == ["texts:1", "texts:3", "text_1"]
    code, _, err = run(capsys, "bert.keras", "--text", "the movie", "--position", "1", "--out", "o2")
    assert code == 1 and "--position" in err and "classifier" in err and not os.path.exists("o2")


@pytest.mark.parametrize("args, message", [
    (["clf.keras", "ids.txt", "--rule", "nope"], "unknown rule or preset 'nope'"),
    (["mlp.keras", "ids.txt"], "takes no integer token ids"),
    (["clf.keras", "bad.txt"], "'bad.txt' line 2: 'five' is not an integer token id"),
    (["clf.keras", "big.txt"], "token id 25 (position 2) is outside the model's vocabulary"),
    (["clf.keras", "big.txt"], "its embedding takes ids 0..19"),
    (["clf.keras", "long.txt"], "'long.txt' line 1 has 9 token ids, more than the model's sequence length 8"),
    (["clf.keras", "ids.txt", "--position", "1"], "--position selects a position of a sequence output"),
    (["lm.keras", "ids.txt", "--position", "9"], "--position out of range"),
    (["clf.keras", "ids.txt", "--target", "3"], "--target 3 is out of range: model "),
    (["missing.keras", "ids.txt"], "model file 'missing.keras' does not exist"),
    (["clf.keras", "missing.txt"], "input 'missing.txt' does not exist"),
    (["clf.keras", "ids.txt", "--vocab", "missing.txt"], "vocabulary file 'missing.txt' does not exist"),
    (["clf.keras", "--text", "the movie"], "--text needs a keras_hub model saved with its preprocessor"),
    (["clf.keras"], "no inputs"),
])
def test_errors_are_clear_and_leave_no_output(d, capsys, monkeypatch, args, message):
    monkeypatch.chdir(d)
    code, _, err = run(capsys, *args, "--out", "err_out")
    assert code == 1
    assert message in err, err
    assert not os.path.exists(d / "err_out")


def test_a_failure_while_writing_leaves_the_older_outputs(d, capsys, monkeypatch):
    from interprettensor.io import render_text

    monkeypatch.chdir(d)
    assert run(capsys, "clf.keras", "ids.npy", "--out", "o5", "-q")[0] == 0
    before = {f: (d / "o5" / f).read_bytes() for f in OUTPUTS}

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(render_text, "save_png", fail)
    code, _, err = run(capsys, "clf.keras", "ids.txt", "--out", "o5", "-q")
    assert code == 1 and "No space left on device" in err
    assert sorted(os.listdir(d / "o5")) == sorted(OUTPUTS)  # no temporary files, the old outputs unchanged
    assert {f: (d / "o5" / f).read_bytes() for f in OUTPUTS} == before
    code, _, _ = run(capsys, "clf.keras", "ids.txt", "--out", "o6", "-q")
    assert code == 1 and not os.path.exists(d / "o6")  # a folder made by the failed run is removed
