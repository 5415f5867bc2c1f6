"""Rendering the relevance of text: one relevance value per token, as coloured HTML or a PNG.

Transformer explanations give relevance of shape ``(batch, sequence)``; each row is one sentence and
each value belongs to one token. The colours are those of :mod:`.render`: each sentence is scaled to
[-1, 1] with :func:`~.render.normalize` (zero stays zero) and mapped through a diverging colour map
(:func:`~.render.get_cmap`: ``'bwr'``, neutral white, or ``'coldnhot'``, neutral black).

* :func:`token_colors`: the RGB colour of each token of one sentence;
* :func:`tokens_html`: one sentence as an HTML fragment (a ``<div>`` of coloured ``<span>`` s);
* :func:`save_html`: sentences as a standalone HTML document with a colour legend;
* :func:`save_png`: the same as a PNG image (matplotlib object API, Agg canvas, lines wrapped);
* :func:`tokens_from_ids`: token strings from ids and a vocabulary (a list, a dict or a tokenizer);
* :func:`save_matrix_png`: a generation's relevance matrix (generated tokens x all tokens) as a
  heatmap, each row scaled on its own, the cells a token cannot see (the causal future) grey.

Sub-word pieces are shown as words: WordPiece continuations (``'##ing'``) join the piece before
them, and SentencePiece / byte-level BPE word starts (``'▁the'``, ``'Ġthe'``) begin a new word, their
marker shown as a space. Only numpy and matplotlib are used; importing this module changes no
global matplotlib state.

Example::

    from interprettensor.io import render_text
    tokens = render_text.tokens_from_ids(ids[0], tokenizer)      # tokenizer.id_to_token
    render_text.save_html("text.html", [(tokens, R[0], "sample 0", ids[0] != pad_id)])
    render_text.save_png("text.png", [(tokens, R[0], "sample 0", ids[0] != pad_id)])
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .render import get_cmap, normalize
from .shards import atomic_write

__all__ = ["save_html", "save_png", "save_matrix_png", "token_colors", "tokens_from_ids", "tokens_html"]

#: word-start markers of SentencePiece ("▁", U+2581) and byte-level BPE ("Ġ", U+0120)
WORD_START = ("\u2581", "\u0120")
#: prefix of WordPiece continuation pieces
CONTINUATION = "##"

_CSS = """\
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.2em; }
.it-sentence { margin: 0 0 1.2em 0; line-height: 1.9; }
.it-title { font-weight: bold; font-size: 0.9em; margin-bottom: 0.2em; }
.it-token { padding: 0.1em 0.15em; border-radius: 0.2em; white-space: pre; }
.it-legend { width: 18em; margin: 0 0 1.5em 0; font-size: 0.8em; }
.it-legend-bar { height: 0.9em; border: 1px solid #999; }
.it-legend-labels { display: flex; justify-content: space-between; }
"""


# ----------------------------------------------------------------------------------------- checks
def _token_strings(tokens: Sequence[Any]) -> list[str]:
    if isinstance(tokens, (str, bytes)):
        raise TypeError("tokens must be a sequence of token strings, got one string; "
                         "split it or pass [text]")
    if hasattr(tokens, "numpy"):  # a TensorFlow string tensor
        tokens = tokens.numpy()
    out = []
    for i, t in enumerate(tokens):
        if isinstance(t, (bytes, np.bytes_)):
            t = bytes(t).decode("utf-8", errors="replace")  # TensorFlow string tensors give bytes
        if not isinstance(t, str):
            raise TypeError(f"tokens[{i}] is {t!r} ({type(t).__name__}), not a string; "
                             f"map token ids to strings with tokens_from_ids(ids, vocabulary)")
        out.append(str(t))
    return out


def _relevance(R: Any, n_tokens: int | None = None) -> np.ndarray:
    """R as a float64 vector ``(T,)`` without NaN or inf, of ``n_tokens`` entries when given."""
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 1:
        raise ValueError(f"R must be the relevance of one sentence, shape (T,), got shape {R.shape}"
                         + ("; pass R[i] for sentence i of a batch" if R.ndim == 2 else ""))
    if n_tokens is not None and R.shape[0] != n_tokens:
        raise ValueError(f"tokens has {n_tokens} entries but R has shape {R.shape}")
    for what, bad in (("NaN", np.isnan(R)), ("inf", np.isinf(R))):
        if bad.any():
            raise ValueError(f"R contains {what} at positions {np.flatnonzero(bad).tolist()}")
    return R


def _mask(mask: Any, n_tokens: int) -> np.ndarray:
    if mask is None:
        return np.ones(n_tokens, dtype=bool)
    m = np.asarray(mask)
    if m.shape != (n_tokens,):
        raise ValueError(f"tokens has {n_tokens} entries but mask has shape {m.shape}")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise ValueError("mask must be booleans (or 0 and 1) per token: True shows the token, "
                             "False hides it (padding)")
        m = m.astype(bool)
    return m


def _sentence(item: Any, k: int) -> tuple[Sequence[Any], Any, str | None, Any]:
    """One entry of ``sentences``: (tokens, R), (tokens, R, title) or (tokens, R, title, mask)."""
    if not isinstance(item, (tuple, list)) or not 2 <= len(item) <= 4:
        raise ValueError(f"sentences[{k}] must be a tuple (tokens, R), (tokens, R, title) or "
                         f"(tokens, R, title, mask), got {type(item).__name__}"
                         + (f" of {len(item)} entries" if isinstance(item, (tuple, list)) else ""))
    tokens, R = item[0], item[1]
    title = item[2] if len(item) > 2 else None
    mask = item[3] if len(item) > 3 else None
    return tokens, R, None if title is None else str(title), mask


# ------------------------------------------------------------------------------------- colours
def token_colors(R: Any, cmap: str = "bwr", normalization: str | None = "maxabs",
                 percentile: float = 99.5) -> np.ndarray:
    """The RGB colour ``(T, 3)`` in [0, 1] of each token of one sentence with relevance ``R`` ``(T,)``.

    ``R`` is scaled to [-1, 1] as by :func:`~.render.normalize` (``'maxabs'`` or ``'percentile'``;
    ``None``: already in [-1, 1], clipped), then ``v`` maps to ``cmap`` at ``0.5 + 0.5 * v``: zero is
    the neutral colour of the map (white for ``'bwr'``, black for ``'coldnhot'``).
    """
    R = _relevance(R)
    if normalization is None:
        v = np.clip(R, -1.0, 1.0)
    else:
        v = normalize(R[None], normalization, percentile)[0]
    return np.asarray(get_cmap(cmap)(0.5 + 0.5 * v), dtype=np.float64).reshape(-1, 4)[:, :3]


def _hex(rgb: Sequence[float]) -> str:
    r, g, b = (round(255 * float(np.clip(c, 0.0, 1.0))) for c in rgb[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def _text_color(rgb: Sequence[float]) -> str:
    """Black or white, whichever contrasts more with the background ``rgb`` (WCAG relative luminance)."""
    c = np.asarray(rgb[:3], dtype=np.float64)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    luminance = float(lin @ np.array([0.2126, 0.7152, 0.0722]))
    return "#000000" if luminance > 0.179 else "#ffffff"


# ------------------------------------------------------------------------------------ sub-words
def _is_special(token: str) -> bool:
    return len(token) > 2 and ((token[0] == "[" and token[-1] == "]") or (token[0] == "<" and token[-1] == ">"))


def _pieces(tokens: list[str]) -> list[tuple[bool, str]]:
    """Each token as (starts a new word, text to show): ``'##'`` continuations join the piece before;
    with SentencePiece / BPE markers in the sentence, tokens without one continue the word before,
    except special tokens (``[CLS]``, ``<s>``)."""
    marked = any(t.startswith(WORD_START) for t in tokens)
    out = []
    for t in tokens:
        if t.startswith(CONTINUATION) and len(t) > len(CONTINUATION):
            out.append((False, t[len(CONTINUATION):]))
        elif t.startswith(WORD_START):
            text = t.lstrip("".join(WORD_START))
            out.append((True, text or t))  # a lone marker stays visible
        else:
            out.append((not marked or _is_special(t), t))
    return out


# ----------------------------------------------------------------------------------------- HTML
def tokens_html(tokens: Sequence[Any], R: Any, cmap: str = "bwr", normalization: str | None = "maxabs",
                title: str | None = None, mask: Any = None, percentile: float = 99.5) -> str:
    """One sentence as an HTML fragment: a ``<div>`` with each shown token in a ``<span>``.

    Each span's background is the token's colour (:func:`token_colors`), its text black or white
    for contrast, and its ``title`` attribute the relevance (``R=0.1234``). Tokens are HTML-escaped;
    sub-word pieces are joined as words (see the module's notes). ``mask`` (a boolean per token)
    hides the tokens where it is False (padding); the colours are scaled over the shown tokens only.
    ``title`` goes above the tokens.
    """
    toks = _token_strings(tokens)
    R = _relevance(R, len(toks))
    m = _mask(mask, len(toks))
    shown = np.flatnonzero(m)
    colours = token_colors(R[shown], cmap, normalization, percentile)
    pieces = _pieces(toks)
    parts = []
    for j, i in enumerate(shown):
        new_word, text = pieces[i]
        if new_word and parts:
            parts.append(" ")
        parts.append(f'<span class="it-token" title="R={R[i] + 0.0:.4g}" style="background-color:{_hex(colours[j])};'
                     f'color:{_text_color(colours[j])};padding:0 0.15em;border-radius:0.2em">'
                     f"{html.escape(text)}</span>")
    head = f'<div class="it-title">{html.escape(str(title))}</div>' if title is not None else ""
    return f'<div class="it-sentence">{head}<div class="it-tokens">{"".join(parts)}</div></div>'


def _legend_html(cmap: str, stops: int = 21) -> str:
    colours = get_cmap(cmap)(np.linspace(0.0, 1.0, stops))
    gradient = ", ".join(f"{_hex(c)} {100.0 * k / (stops - 1):g}%" for k, c in enumerate(colours))
    return ('<div class="it-legend">'
            f'<div class="it-legend-bar" style="background: linear-gradient(to right, {gradient})"></div>'
            '<div class="it-legend-labels"><div>-max</div><div>0</div><div>+max</div></div></div>')


def _write_atomic(path: str, write: Callable[[Any], None]) -> str:
    """Write ``path`` through a temporary file and a rename (:func:`~.shards.atomic_write`), creating
    its folder when missing: an error leaves no partial file, and an older file stays as it was."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, write)
    return path


def save_html(path: str, sentences: Sequence[Sequence[Any]], cmap: str = "bwr",
              normalization: str | None = "maxabs", percentile: float = 99.5,
              title: str = "Relevance of tokens", legend: bool = True) -> str:
    """Write sentences as a standalone HTML document (UTF-8) and return ``path``.

    Args:
        path: the file to write; missing folders are created, and an error leaves no partial file.
        sentences: ``(tokens, R)``, ``(tokens, R, title)`` or ``(tokens, R, title, mask)`` per
            sentence (see :func:`tokens_html`); each sentence is scaled on its own.
        cmap, normalization, percentile: the colours, as in :func:`token_colors`.
        title: the document's title and heading.
        legend: draw the colour map as a bar labelled ``-max 0 +max``.
    """
    blocks = []
    for k, item in enumerate(sentences):
        tokens, R, sub, mask = _sentence(item, k)
        try:
            blocks.append(tokens_html(tokens, R, cmap, normalization, sub, mask, percentile))
        except ValueError as e:
            raise ValueError(f"sentences[{k}]: {e}") from None
    doc = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
           f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}</style>\n</head>\n<body>\n"
           f"<h1>{html.escape(title)}</h1>\n"
           + (_legend_html(cmap) + "\n" if legend else "")
           + "\n".join(blocks) + "\n</body>\n</html>\n")
    data = doc.encode("utf-8")
    return _write_atomic(path, lambda f: f.write(data))


# ------------------------------------------------------------------------------------------ PNG
def save_png(path: str, sentences: Sequence[Sequence[Any]], cmap: str = "bwr",
             normalization: str | None = "maxabs", percentile: float = 99.5, width_inches: float = 8.0,
             dpi: int = 100, fontsize: float = 12.0, legend: bool = True) -> str:
    """Write sentences as a PNG image, each token a text in a box of its colour; returns ``path``.

    Takes the same ``sentences`` as :func:`save_html`. Lines wrap at ``width_inches`` (token widths are
    measured with the Agg renderer); each sentence is one block under its optional title, and
    ``legend`` adds the colour map as a bar labelled ``-max 0 +max`` at the bottom. The figure's
    height follows from its content. An error leaves no partial file.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties

    if width_inches <= 0 or dpi <= 0 or fontsize <= 0:
        raise ValueError(f"width_inches, dpi and fontsize must be positive, got {width_inches}, {dpi}, {fontsize}")
    fig = Figure(figsize=(width_inches, 1.0), dpi=dpi, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    font = FontProperties(size=fontsize)
    bold = FontProperties(size=fontsize, weight="bold")

    def width(s: str, prop: FontProperties = font) -> float:
        return renderer.get_text_width_height_descent(s, prop, ismath=False)[0]

    px = dpi / 72.0  # pixels per point
    pad = 0.2 * fontsize * px  # the box's padding around the text
    _, lp_h, descent = renderer.get_text_width_height_descent("lp", font, ismath=False)
    box_h = lp_h + 2 * pad
    line_h = box_h + 0.35 * fontsize * px
    space, join_gap = width("a a") - width("aa"), 1.0
    margin = 0.15 * dpi
    right = width_inches * dpi - margin

    # layout in pixels from the top: (x, baseline y, text, colour, properties, boxed)
    items: list[tuple[float, float, str, Any, FontProperties, bool]] = []
    y = margin
    for k, item in enumerate(sentences):
        tokens, R, sub, mask = _sentence(item, k)
        try:
            toks = _token_strings(tokens)
            Rv = _relevance(R, len(toks))
            shown = np.flatnonzero(_mask(mask, len(toks)))
            colours = token_colors(Rv[shown], cmap, normalization, percentile)
        except ValueError as e:
            raise ValueError(f"sentences[{k}]: {e}") from None
        if sub is not None:
            items.append((margin, y + lp_h - descent, sub, None, bold, False))
            y += line_h
        pieces = _pieces(toks)
        widths = [width(pieces[i][1]) + 2 * pad for i in shown]
        # a word (a piece and the continuations after it) wraps as a whole, unless it fills a line alone
        word_w = list(widths)
        for j in range(len(shown) - 2, -1, -1):
            if not pieces[shown[j + 1]][0]:
                word_w[j] = widths[j] + join_gap + word_w[j + 1]
        x = margin
        for j, i in enumerate(shown):
            new_word, text = pieces[i]
            if j > 0:
                gap = space if new_word else join_gap
                ahead = word_w[j] if new_word else widths[j]
                if x + gap + ahead > right:
                    x, y = margin, y + line_h
                else:
                    x += gap
            items.append((x + pad, y + pad + lp_h - descent, text, colours[j], font, True))
            x += widths[j]
        y += line_h + (0.5 * line_h if k < len(sentences) - 1 else 0.0)
    bar_h = 0.12 * dpi
    height = y + (bar_h + 2.2 * fontsize * px if legend else 0.0) + margin
    fig.set_size_inches(width_inches, height / dpi)

    def fx(x: float) -> float:
        return x / (width_inches * dpi)

    def fy(y: float) -> float:
        return 1.0 - y / height

    for x, base, text, colour, prop, boxed in items:
        kw: dict[str, Any] = {}
        if boxed:
            kw["bbox"] = {"boxstyle": "square,pad=0.2", "facecolor": tuple(colour), "edgecolor": "none"}
            kw["color"] = _text_color(colour)
        fig.text(fx(x), fy(base), text, fontproperties=prop, ha="left", va="baseline", parse_math=False,
                 **kw)
    if legend:
        bar_w = min(3.0 * dpi, right - margin)
        top = y + 0.2 * fontsize * px
        ax = fig.add_axes((fx(margin), fy(top + bar_h), fx(bar_w), bar_h / height))
        ax.imshow(np.linspace(0.0, 1.0, 256)[None], aspect="auto", cmap=get_cmap(cmap), vmin=0.0, vmax=1.0,
                  interpolation="bilinear")
        ax.set_xticks([])
        ax.set_yticks([])
        below = fy(top + bar_h + 0.2 * fontsize * px)
        for at, label, ha in ((margin, "-max", "left"), (margin + bar_w / 2, "0", "center"),
                              (margin + bar_w, "+max", "right")):
            fig.text(fx(at), below, label, fontsize=0.75 * fontsize, ha=ha, va="top")
    return _write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=dpi, facecolor="white"))


# ------------------------------------------------------------------------------------- matrices
def save_matrix_png(path: str, R: Any, tokens: Sequence[Any], prompt_length: int, cmap: str = "bwr",
                    normalization: str | None = "maxabs", percentile: float = 99.5, dpi: int = 100,
                    title: str | None = None) -> str:
    """Write a generation's relevance matrix as a heatmap PNG and return ``path``.

    Args:
        R: ``(G, T)``: row ``k`` the relevance of the ``T`` tokens for generated token ``k``, which is
            token ``prompt_length + k`` of ``tokens``; cells at or after it (what its logit cannot
            see) are drawn grey.
        tokens: the ``T`` token strings (or ids, shown as numbers) of the prompt and the generated
            tokens.
        prompt_length: where the generated tokens start (a line is drawn there).
        cmap, normalization, percentile: the colours, each row scaled on its own as in
            :func:`token_colors`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    R = np.asarray(R, dtype=np.float64)
    toks = _token_strings([str(int(t)) if isinstance(t, (int, np.integer)) else t for t in tokens])
    if R.ndim != 2 or R.shape[1] != len(toks):
        raise ValueError(f"R must be (generated, tokens) with {len(toks)} tokens, got shape {R.shape}")
    G, T = R.shape
    if not 0 < prompt_length <= T - G:
        raise ValueError(f"prompt_length must be in 1..{T - G} for {G} generated of {T} tokens, got {prompt_length}")
    v = np.clip(R, -1.0, 1.0) if normalization is None else normalize(R, normalization, percentile)
    rgba = np.asarray(get_cmap(cmap)(0.5 + 0.5 * v), dtype=np.float64)
    future = np.arange(T)[None, :] >= (prompt_length + np.arange(G))[:, None]
    rgba[future] = (0.85, 0.85, 0.85, 1.0)
    cell = 0.45
    label = 0.09 * max(len(t) for t in toks)  # inches for the rotated token labels
    fig = Figure(figsize=(1.6 + label + cell * T, 1.8 + label + cell * G), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(rgba, aspect="equal", interpolation="nearest")
    ax.set_xticks(range(T))
    ax.set_xticklabels(toks, rotation=90)
    ax.set_yticks(range(G))
    ax.set_yticklabels([toks[prompt_length + k] for k in range(G)])
    ax.axvline(prompt_length - 0.5, color="black", linewidth=1.0)
    ax.set_xlabel("tokens (prompt | generated)")
    ax.set_ylabel("generated token")
    if title is not None:
        ax.set_title(title)
    fig.tight_layout()
    return _write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=dpi, facecolor="white"))


# ------------------------------------------------------------------------------------------ ids
def tokens_from_ids(ids: Any, vocabulary: Any) -> list:
    """Token strings for integer ``ids`` (``(T,)`` gives a list, a batch ``(N, T)`` a list of lists).

    ``vocabulary`` is a list of strings (index = id), a dict ``{token: id}`` (or ``{id: token}``), or
    an object with ``id_to_token(int)`` (keras_hub tokenizers) or ``get_vocabulary()``. Ids the
    vocabulary does not hold (negative ones too) become ``'[id]'``.
    """
    a = np.asarray(ids)
    if a.ndim not in (1, 2):
        raise ValueError(f"ids must be (T,) or a batch (N, T), got shape {a.shape}")
    integral = np.issubdtype(a.dtype, np.integer) or (np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)))
    if a.size and not integral:
        raise ValueError(f"ids must be integers, got dtype {a.dtype}")
    lookup = _lookup(vocabulary)
    cache: dict[int, str] = {}

    def name(i: int) -> str:
        if i not in cache:
            t = lookup(i)
            if isinstance(t, (bytes, np.bytes_)):
                t = bytes(t).decode("utf-8", errors="replace")
            cache[i] = f"[{i}]" if t is None else str(t)
        return cache[i]

    if a.ndim == 1:
        return [name(int(i)) for i in a]
    return [[name(int(i)) for i in row] for row in a]


def _lookup(vocabulary: Any) -> Callable[[int], Any]:
    """A function id -> token (None when the vocabulary does not hold it)."""
    if isinstance(vocabulary, dict):
        if all(isinstance(k, (int, np.integer)) for k in vocabulary):
            by_id = {int(k): v for k, v in vocabulary.items()}
        else:
            by_id = {int(v): k for k, v in vocabulary.items()}
        return by_id.get
    if hasattr(vocabulary, "id_to_token"):
        def via_tokenizer(i: int) -> Any:
            if i < 0:
                return None
            try:
                return vocabulary.id_to_token(i)
            except Exception:  # noqa: BLE001 - tokenizers refuse unknown ids with various errors
                return None
        return via_tokenizer
    if hasattr(vocabulary, "get_vocabulary"):
        vocabulary = vocabulary.get_vocabulary()
    if isinstance(vocabulary, (str, bytes)) or not hasattr(vocabulary, "__len__"):
        raise TypeError("vocabulary must be a list of strings, a dict {token: id}, or an object with "
                         f"id_to_token(int) or get_vocabulary(); got {type(vocabulary).__name__}")
    vocab = list(vocabulary)
    return lambda i: vocab[i] if 0 <= i < len(vocab) else None
