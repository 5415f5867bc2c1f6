"""A text demo with a known answer: a small transformer learns which marker word a sentence holds, and
LRP for transformers (AttnLRP, CP-LRP) should put the most relevance on that word.

The data is generated here (no download): a vocabulary of 40 filler words, the special tokens
``[PAD]`` (id 0) and ``[CLS]`` (id 1), and three marker words, ``excellent``, ``terrible`` and
``average`` (classes 0, 1, 2). Each sentence is ``[CLS]``, then 8-16 random filler words with exactly
one marker word at a random place among them, padded with ``[PAD]`` to 20 tokens. The class is the
marker's class, so the marker is the only token that matters: the ground truth of each explanation.

The model (:func:`build_text_model`) is a small encoder built from Keras layers: token and learned
position embeddings, transformer blocks (MultiHeadAttention with a padding mask computed from the
ids inside the model, residual Add, LayerNormalization, a Dense(gelu) feed-forward), a mean over the
non-padding tokens and Dense logits. :func:`run_text_demo` trains it with Adam, explains every
correctly classified test sentence (target: the predicted class) with ``it.Explainer(model,
"attnlrp")`` and ``"cp_lrp"``, measures how often the marker is the token with the highest relevance
(over the non-padding tokens), and writes ``text_demo.html``, ``text_demo.png`` (example sentences,
coloured by relevance, see :mod:`interprettensor.io.render_text`) and ``text_demo_summary.json``.

With ``arch="lstm"`` or ``"gru"`` the model is instead ``Embedding(vocab, dim, mask_zero=True)`` ->
``LSTM(dim)`` (or ``GRU(dim)``) -> ``Dense(3)`` (:func:`build_recurrent_model`), trained until the test
accuracy exceeds 95 % (a few epochs past ``epochs`` at most), and explained with the rule ``"epsilon"``
(LRP for recurrent layers after Arras et al., the library's default for recurrent models) and, as a
baseline, gradient x input at the embedding output summed over the embedding axis
(:func:`gradient_x_input`). Its outputs carry the architecture as a suffix: ``text_demo_lstm.html``,
``text_demo_lstm.png``, ``text_demo_lstm_summary.json``.

Command line: ``interprettensor demo-text --out DIR [--arch {transformer,lstm,gru}]``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["ARCHS", "CLASS_NAMES", "CLS", "MARKERS", "METHODS", "PAD", "RECURRENT_METHODS", "SEQ_LEN", "VOCAB",
           "build_recurrent_model", "build_text_model", "format_text_table", "gradient_x_input", "make_sentences",
           "marker_share", "marker_top_fraction", "run_text_demo"]

PAD, CLS = 0, 1
#: the marker words; the marker at index c decides class c
MARKERS = ("excellent", "terrible", "average")
CLASS_NAMES = ("positive", "negative", "neutral")
#: 40 filler words, none of which says anything about the class
FILLERS = ("the", "a", "of", "and", "to", "in", "is", "was", "it", "that", "for", "on", "with", "as", "this",
           "at", "by", "from", "be", "have", "or", "one", "had", "not", "but", "what", "all", "were", "when",
           "we", "there", "can", "an", "your", "which", "their", "said", "if", "do", "will")
#: id -> word: ``[PAD]``, ``[CLS]``, the markers (ids 2, 3, 4), then the fillers
VOCAB = ("[PAD]", "[CLS]") + MARKERS + FILLERS
FIRST_MARKER = 2
FIRST_FILLER = FIRST_MARKER + len(MARKERS)
#: the fixed sentence length, [CLS] and padding included
SEQ_LEN = 20
#: the explanation methods compared, as (label, preset)
METHODS = (("AttnLRP", "attnlrp"), ("CP-LRP", "cp_lrp"))
#: the methods compared for the recurrent models, as (label, rule); ``None``: gradient x input
RECURRENT_METHODS = (("LRP-epsilon", "epsilon"), ("Gradient x input", None))
#: the model architectures of :func:`run_text_demo`
ARCHS = ("transformer", "lstm", "gru")
#: the key of gradient x input in the summary's ``marker_top``
GXI = "gradient_x_input"
#: for the recurrent models: the accuracy to train to, and the extra epochs allowed to reach it
TARGET_ACCURACY, MAX_EXTRA_EPOCHS = 0.95, 10


# ------------------------------------------------------------------------------------------- data
def make_sentences(n: int, rng: np.random.Generator, seq_len: int = SEQ_LEN, min_words: int = 8,
                   max_words: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` sentences as token ids ``(n, seq_len)`` int32, their classes ``(n,)`` and the position of
    each one's marker ``(n,)``.

    Each sentence is ``[CLS]`` followed by ``min_words``..``max_words`` words (filler words, one of
    them replaced by the marker of a random class), then ``[PAD]`` up to ``seq_len``.
    """
    if not 1 <= min_words <= max_words <= seq_len - 1:
        raise ValueError(f"need 1 <= min_words <= max_words <= seq_len - 1, got {min_words}, {max_words}, {seq_len}")
    ids = np.full((n, seq_len), PAD, dtype=np.int32)
    labels = rng.integers(0, len(MARKERS), n)
    lengths = rng.integers(min_words, max_words + 1, n)
    where = np.zeros(n, dtype=np.int64)
    for i in range(n):
        words = rng.integers(FIRST_FILLER, len(VOCAB), lengths[i])
        k = int(rng.integers(0, lengths[i]))
        words[k] = FIRST_MARKER + labels[i]
        ids[i, 0] = CLS
        ids[i, 1:1 + lengths[i]] = words
        where[i] = 1 + k
    return ids, labels.astype(np.int64), where


# ------------------------------------------------------------------------------------------ model
def build_text_model(vocab_size: int = len(VOCAB), seq_len: int = SEQ_LEN, dim: int = 32, heads: int = 2,
                     blocks: int = 2, n_classes: int = len(MARKERS)):
    """A small transformer encoder for token ids ``(batch, seq_len)`` (int32, ``[PAD]`` = 0) -> logits.

    Token embedding + learned position embedding (added with keras.ops), then ``blocks`` times: MultiHeadAttention over the
    non-padding tokens, residual Add, LayerNormalization, Dense(2 dim, gelu) -> Dense(dim), residual
    Add, LayerNormalization; then the mean over the non-padding tokens and Dense(``n_classes``).

    The padding mask is computed from the ids inside the model (keras.ops): a key mask
    ``(batch, 1, seq_len)`` that every query shares, so no query row is ever fully masked (``[CLS]``
    is always there). The pooling is a masked mean written with keras.ops (the padding's hidden
    states do not enter it), so padding tokens get no relevance at all.
    """
    import keras
    from keras import layers as L
    from keras import ops

    ids = keras.Input((seq_len,), dtype="int32", name="token_ids")
    valid = ops.not_equal(ids, PAD)  # (batch, seq)
    attention_mask = ops.expand_dims(valid, 1)  # (batch, 1, seq): the keys each query may attend to
    tokens = L.Embedding(vocab_size, dim, name="token_embedding")(ids)
    positions = L.Embedding(seq_len, dim, name="position_embedding")(ops.expand_dims(ops.arange(seq_len), 0))
    h = tokens + positions  # keras.ops.add broadcasts the positions (1, seq, dim) over the batch
    for b in range(blocks):
        a = L.MultiHeadAttention(heads, dim // heads, name=f"attention_{b}")(h, h, attention_mask=attention_mask)
        h = L.LayerNormalization(name=f"norm_{b}a")(L.Add(name=f"residual_{b}a")([h, a]))
        f = L.Dense(2 * dim, activation="gelu", name=f"ffn_{b}_in")(h)
        f = L.Dense(dim, name=f"ffn_{b}_out")(f)
        h = L.LayerNormalization(name=f"norm_{b}b")(L.Add(name=f"residual_{b}b")([h, f]))
    weights = ops.expand_dims(ops.cast(valid, h.dtype), -1)  # (batch, seq, 1)
    pooled = ops.sum(h * weights, axis=1) / ops.sum(weights, axis=1)
    logits = L.Dense(n_classes, name="logits")(pooled)
    return keras.Model(ids, logits, name="marker_transformer")


def build_recurrent_model(arch: str = "lstm", vocab_size: int = len(VOCAB), seq_len: int = SEQ_LEN, dim: int = 32,
                          n_classes: int = len(MARKERS)):
    """``Embedding(vocab_size, dim, mask_zero=True)`` -> ``LSTM(dim)`` (``arch="lstm"``) or ``GRU(dim)``
    (``"gru"``) -> ``Dense(n_classes)``: token ids ``(batch, seq_len)`` (int32, ``[PAD]`` = 0) -> logits.
    The embedding's mask makes the recurrent layer skip the padding."""
    import keras
    from keras import layers as L

    if arch not in ("lstm", "gru"):
        raise ValueError(f"arch must be 'lstm' or 'gru', got {arch!r}")
    ids = keras.Input((seq_len,), dtype="int32", name="token_ids")
    h = L.Embedding(vocab_size, dim, mask_zero=True, name="token_embedding")(ids)
    h = (L.LSTM if arch == "lstm" else L.GRU)(dim, name="recurrent")(h)
    logits = L.Dense(n_classes, name="logits")(h)
    return keras.Model(ids, logits, name=f"marker_{arch}")


def gradient_x_input(model, ids: np.ndarray, target: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Gradient x input at the embedding output of a :func:`build_recurrent_model` model, summed over the
    embedding axis: one relevance per token, ``(n, seq_len)``. ``target``: the class explained per
    sentence. The layers are called one after the other (with the embedding's padding mask); the gradient
    of the explained logit with respect to the embedding output is the vector-Jacobian product with its
    one-hot vector (:func:`interprettensor.engine.backend.vjp`, on any Keras backend)."""
    from keras import ops

    from ..engine import backend

    emb, rnn, head = (model.get_layer(n) for n in ("token_embedding", "recurrent", "logits"))
    out = []
    for s in range(0, len(ids), batch_size):
        x = ops.convert_to_tensor(np.asarray(ids[s:s + batch_size], dtype=np.int32))
        onehot = ops.one_hot(ops.convert_to_tensor(np.asarray(target[s:s + batch_size], dtype=np.int32)),
                             int(head.units), dtype="float32")
        e = emb(x)
        mask = emb.compute_mask(x)
        (g,) = backend.vjp(lambda es: head(rnn(es[0], mask=mask)), [e], onehot)
        out.append(ops.convert_to_numpy(ops.sum(g * e, axis=-1)))
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, ids.shape[1]))


# ---------------------------------------------------------------------------------------- measures
def marker_top_fraction(R: np.ndarray, ids: np.ndarray, marker_pos: np.ndarray) -> float:
    """The fraction of sentences whose highest-relevance token (over the non-padding positions) is the
    marker at ``marker_pos``."""
    R = np.where(np.asarray(ids) != PAD, np.asarray(R, dtype=np.float64), -np.inf)
    if len(R) == 0:
        return float("nan")
    return float((R.argmax(axis=1) == np.asarray(marker_pos)).mean())


def marker_share(R: np.ndarray, ids: np.ndarray, marker_pos: np.ndarray) -> float:
    """The marker's relevance as a share of the total absolute relevance of the non-padding tokens,
    averaged over the sentences (1: all relevance on the marker)."""
    R = np.where(np.asarray(ids) != PAD, np.asarray(R, dtype=np.float64), 0.0)
    if len(R) == 0:
        return float("nan")
    total = np.abs(R).sum(axis=1)
    marker = R[np.arange(len(R)), np.asarray(marker_pos)]
    return float(np.mean(marker / np.where(total > 0, total, 1.0)))


def format_text_table(summary: dict[str, Any]) -> str:
    """The printed summary: method, model accuracy, marker-top fraction, marker share of the absolute
    relevance, sentences explained."""
    w = max([10] + [len(label) for label in summary["methods"]])
    lines = [f"{'method':<{w}} {'accuracy':>9} {'marker top':>11} {'marker share':>13} {'explained':>10}"]
    for label, m in summary["methods"].items():
        lines.append(f"{label:<{w}} {summary['accuracy']:>9.4f} {m['marker_top']:>11.4f} {m['marker_share']:>13.4f} "
                     f"{summary['explained']:>10d}")
    return "\n".join(lines)


def _example_indices(labels: np.ndarray, n: int) -> list[int]:
    """``n`` indices cycling through the classes (0, 1, 2, 0, ...), in order of appearance."""
    by_class = [list(np.flatnonzero(labels == c)) for c in range(len(MARKERS))]
    out: list[int] = []
    while len(out) < min(n, len(labels)):
        for lst in by_class:
            if lst and len(out) < n:
                out.append(int(lst.pop(0)))
    return out


def _check_positive(**values: Any) -> None:
    for name, v in values.items():
        if not (isinstance(v, (int, float, np.integer, np.floating)) and v > 0):
            raise ValueError(f"{name} must be positive, got {v!r}")


# -------------------------------------------------------------------------------------------- demo
def run_text_demo(out: str = "output/demo_text", epochs: int = 3, seed: int = 0, quiet: bool = False,
                  n_train: int = 3000, n_test: int = 500, n_examples: int = 6, blocks: int = 2, dim: int = 32,
                  heads: int = 2, batch_size: int = 64, learning_rate: float = 3e-3, cmap: str = "bwr",
                  echo: Callable[[str], Any] = print, arch: str = "transformer") -> dict[str, Any]:
    """Generate the data, train the transformer, explain the correctly classified test sentences with
    AttnLRP and CP-LRP, and write ``out/text_demo.html``, ``out/text_demo.png`` and
    ``out/text_demo_summary.json``. See the module docstring.

    ``arch="lstm"`` or ``"gru"``: the recurrent model of :func:`build_recurrent_model` instead (``blocks``
    and ``heads`` unused), trained for ``epochs`` epochs and then one more at a time (at most
    ``MAX_EXTRA_EPOCHS``) until the test accuracy exceeds 95 %, explained with LRP (rule ``"epsilon"``)
    and gradient x input (``marker_top`` keys ``"epsilon"`` and ``"gradient_x_input"``); the outputs are
    ``out/text_demo_<arch>.html``, ``.png`` and ``_summary.json``, and the summary also holds ``"arch"``,
    ``"rule"`` and ``"epochs_trained"``.

    Unless ``quiet``, progress messages and the summary table go to ``echo`` (and a progress bar to
    stderr). Returns the figures (also in the JSON file)::

        {"accuracy": test accuracy, "explained": correctly classified test sentences explained,
         "marker_top": {"attnlrp": fraction, "cp_lrp": fraction},
         "methods": {label: {"preset", "marker_top", "marker_share", "seconds"}}, "n_train", "n_test", "epochs",
         "seed", "blocks", "dim", "heads", "train_seconds", "seconds", "html", "png", "summary"}
    """
    _check_positive(epochs=epochs, n_train=n_train, n_test=n_test, blocks=blocks, dim=dim, heads=heads,
                    batch_size=batch_size, learning_rate=learning_rate)
    if n_examples < 0:
        raise ValueError(f"n_examples must be >= 0, got {n_examples!r}")
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    recurrent = arch != "transformer"
    if not recurrent and dim % heads:
        raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads})")
    import keras

    import interprettensor as it

    from ..io import render_text
    from ..io.render import get_cmap
    from .demo import ProgressBar

    get_cmap(cmap)  # an unknown colour map fails before the training
    say: Callable[[str], Any] = (lambda m: None) if quiet else echo
    t0 = time.time()
    os.makedirs(out, exist_ok=True)
    stem = "text_demo" + (f"_{arch}" if recurrent else "")
    html_path = os.path.join(out, f"{stem}.html")
    png_path = os.path.join(out, f"{stem}.png")
    json_path = os.path.join(out, f"{stem}_summary.json")

    rng = np.random.default_rng(seed)
    x_train, y_train, _ = make_sentences(n_train, rng)
    x_test, y_test, where_test = make_sentences(n_test, rng)

    keras.utils.set_random_seed(seed)
    model = build_recurrent_model(arch, dim=dim) if recurrent else build_text_model(dim=dim, heads=heads, blocks=blocks)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    what = {"lstm": "an LSTM", "gru": "a GRU"}.get(arch, f"a {blocks}-block transformer")
    say(f"training {what} on {n_train} generated sentences, {epochs} epoch(s) ...")
    t_train = time.time()
    steps = int(np.ceil(n_train / batch_size)) * epochs
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
              callbacks=[ProgressBar(steps, quiet)])

    def test_predictions() -> tuple[np.ndarray, float]:
        p = np.asarray(model.predict(x_test, batch_size=256, verbose=0)).argmax(-1)
        return p, float((p == y_test).mean())

    pred, acc = test_predictions()
    trained = epochs
    while recurrent and acc <= TARGET_ACCURACY and trained < epochs + MAX_EXTRA_EPOCHS:
        say(f"test accuracy {acc:.3f} after {trained} epoch(s): one more ...")
        model.fit(x_train, y_train, batch_size=batch_size, epochs=1, shuffle=True, verbose=0)
        trained += 1
        pred, acc = test_predictions()
    train_seconds = time.time() - t_train
    if acc <= TARGET_ACCURACY:
        say(f"note: the test accuracy is only {acc:.3f}; more --epochs should help")

    correct = np.flatnonzero(pred == y_test)
    xs, ts, where = x_test[correct], pred[correct], where_test[correct]
    say(f"explaining the {len(correct)} correctly classified test sentences ...")
    methods: dict[str, dict[str, Any]] = {}
    relevances: dict[str, np.ndarray] = {}
    from tqdm.auto import tqdm

    compared = RECURRENT_METHODS if recurrent else METHODS
    for label, preset in tqdm(compared, desc="explaining", disable=quiet, file=sys.stderr, leave=False):
        t1 = time.time()
        if not len(xs):
            R = np.zeros((0, SEQ_LEN))
        elif preset is None:
            R = gradient_x_input(model, xs, ts)
        else:
            R = np.asarray(it.Explainer(model, preset)(xs, target=ts, batch_size=256), dtype=np.float64)
        relevances[label] = R
        methods[label] = {"preset": preset or GXI, "marker_top": marker_top_fraction(R, xs, where),
                          "marker_share": marker_share(R, xs, where), "seconds": round(time.time() - t1, 3)}

    # example sentences: each with every method, padding hidden
    sentences = []
    for j in _example_indices(y_test[correct], n_examples):
        toks = [VOCAB[int(i)] for i in xs[j]]
        marker = MARKERS[int(y_test[correct][j])]
        for label, _ in compared:
            title = (f"test sentence {int(correct[j])}: '{marker}' -> class {int(ts[j])} "
                     f"({CLASS_NAMES[int(ts[j])]}), {label}")
            sentences.append((toks, relevances[label][j], title, xs[j] != PAD))
    model_name = {"lstm": "an LSTM", "gru": "a GRU"}.get(arch, "a small transformer")
    render_text.save_html(html_path, sentences, cmap=cmap,
                          title=f"Token relevance of {model_name}: the marker word decides the class")
    render_text.save_png(png_path, sentences, cmap=cmap, width_inches=8.0, dpi=100, fontsize=11.0)

    summary: dict[str, Any] = {
        "accuracy": acc,
        "explained": len(correct),
        "marker_top": {m["preset"]: m["marker_top"] for m in methods.values()},
        "methods": methods,
        "n_train": int(n_train), "n_test": int(n_test), "epochs": int(epochs), "seed": int(seed),
        "blocks": int(blocks), "dim": int(dim), "heads": int(heads), "seq_len": SEQ_LEN,
        "train_seconds": round(train_seconds, 3),
    }
    if recurrent:  # blocks and heads do not apply; the LRP rule and the epochs actually trained do
        del summary["blocks"], summary["heads"]
        summary.update(arch=arch, rule="epsilon (LRP for LSTM/GRU after Arras et al.; the default for recurrent "
                                       "models)", epochs_trained=int(trained))
    say(format_text_table(summary))
    summary["seconds"] = round(time.time() - t0, 3)
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    summary.update(html=html_path, png=png_path, summary=json_path)
    return summary
