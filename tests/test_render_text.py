"""Rendering text relevance: token colours, HTML fragments and documents, PNG images, ids to tokens."""

import html.parser
import os

import numpy as np
import pytest
from PIL import Image

import interprettensor as it
from interprettensor import render_text
from interprettensor.io.render import get_cmap


class Spans(html.parser.HTMLParser):
    """The token spans of an HTML text: their attributes and text, and the document's other tags."""

    def __init__(self):
        super().__init__()
        self.spans: list[dict] = []
        self.tags: list[str] = []
        self.text: list[str] = []  # all text, in order
        self._in_span = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "span":
            self.spans.append({**dict(attrs), "text": ""})
            self._in_span = True

    def handle_endtag(self, tag):
        if tag == "span":
            self._in_span = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_span:
            self.spans[-1]["text"] += data


def parse(text: str) -> Spans:
    p = Spans()
    p.feed(text)
    p.close()
    return p


def style_of(span: dict) -> dict:
    return dict(part.split(":", 1) for part in span["style"].split(";") if part)


def hex_to_rgb(h: str) -> np.ndarray:
    return np.array([int(h[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0


def expected_colors(R, cmap):
    R = np.asarray(R, dtype=float)
    v = R / np.abs(R).max()
    return get_cmap(cmap)(0.5 + 0.5 * v)[:, :3]


# ------------------------------------------------------------------------------------- colours
@pytest.mark.parametrize("cmap", ["bwr", "coldnhot"])
def test_token_colors_are_the_colour_map_at_the_scaled_relevance(cmap):
    R = np.array([0.3, -1.2, 0.0, 2.4, -0.05])
    got = render_text.token_colors(R, cmap)
    assert got.shape == (5, 3)
    np.testing.assert_allclose(got, expected_colors(R, cmap), atol=1e-12)
    # percentile scaling clips the outlier: the rest is scaled by a smaller number, so more saturated
    pct = render_text.token_colors(np.array([1.0, 1.0, 1.0, 100.0]), "bwr", "percentile", 50)
    np.testing.assert_allclose(pct, np.broadcast_to(get_cmap("bwr")(1.0)[:3], (4, 3)), atol=1e-12)


@pytest.mark.parametrize("cmap,neutral", [("bwr", (1, 1, 1)), ("coldnhot", (0, 0, 0))])
def test_zero_relevance_is_the_neutral_colour(cmap, neutral):
    got = render_text.token_colors([0.0, 0.0, 5.0], cmap)
    np.testing.assert_allclose(got[:2], [neutral, neutral], atol=1e-6)
    np.testing.assert_allclose(render_text.token_colors([0.0], cmap), [neutral], atol=1e-6)  # all zero


def test_positive_is_red_and_negative_is_blue_in_bwr():
    got = render_text.token_colors([3.0, -3.0], "bwr")
    np.testing.assert_allclose(got, [(1, 0, 0), (0, 0, 1)], atol=1e-6)


# ----------------------------------------------------------------------------------------- HTML
def test_html_spans_carry_colour_title_and_contrasting_text():
    tokens = ["good", "bad", "meh"]
    R = np.array([2.0, -1.5, 0.1234])
    p = parse(render_text.tokens_html(tokens, R, "bwr"))
    assert [s["text"] for s in p.spans] == tokens
    assert [s["title"] for s in p.spans] == ["R=2", "R=-1.5", "R=0.1234"]
    want = expected_colors(R, "bwr")
    for span, colour in zip(p.spans, want):
        np.testing.assert_allclose(hex_to_rgb(style_of(span)["background-color"]), colour, atol=0.6 / 255)
    # the more contrasting of black and white by WCAG luminance: black on pure red (luminance 0.21) and
    # on nearly white, white on the dark blue
    assert [style_of(s)["color"] for s in p.spans] == ["#000000", "#ffffff", "#000000"]
    # coldnhot: zero is black, so its text is white
    dark = parse(render_text.tokens_html(["x", "y"], [0.0, 1.0], "coldnhot")).spans[0]
    assert style_of(dark)["background-color"] == "#000000" and style_of(dark)["color"] == "#ffffff"


def test_html_escapes_tokens_and_title():
    out = render_text.tokens_html(["<b>&", "ok"], [1.0, -1.0], title='a "<title>"')
    assert "<b>" not in out and "&lt;b&gt;&amp;" in out
    p = parse(out)
    assert "b" not in p.tags
    assert p.spans[0]["text"] == "<b>&"
    assert 'a "<title>"' in "".join(p.text)


def test_wordpiece_pieces_join_and_word_starts_become_spaces():
    def shown(tokens):
        p = parse(render_text.tokens_html(tokens, np.arange(1.0, len(tokens) + 1)))
        return "".join(p.text), [s["text"] for s in p.spans]

    text, spans = shown(["[CLS]", "play", "##ing", "chess", "[SEP]"])
    assert text == "[CLS] playing chess [SEP]" and spans == ["[CLS]", "play", "ing", "chess", "[SEP]"]
    text, spans = shown(["<s>", "\u2581play", "ing", "\u2581chess", ",", "</s>"])
    assert text == "<s> playing chess, </s>" and spans == ["<s>", "play", "ing", "chess", ",", "</s>"]
    text, _ = shown(["\u0120The", "\u0120cat", "s", "\u0120sat"])
    assert text == "The cats sat"


def test_mask_hides_tokens_and_scales_over_the_shown_ones():
    tokens = ["[CLS]", "hi", "[SEP]", "[PAD]", "[PAD]"]
    R = np.array([0.5, 1.0, -0.25, 100.0, -100.0])
    mask = np.array([True, True, True, False, False])
    p = parse(render_text.tokens_html(tokens, R, mask=mask))
    assert [s["text"] for s in p.spans] == ["[CLS]", "hi", "[SEP]"]
    got = np.array([hex_to_rgb(style_of(s)["background-color"]) for s in p.spans])
    np.testing.assert_allclose(got, expected_colors(R[:3], "bwr"), atol=0.6 / 255)  # padding did not scale
    assert len(parse(render_text.tokens_html(tokens, R, mask=[1, 0, 0, 0, 0])).spans) == 1


# ------------------------------------------------------------------------------------- checks
def test_mismatched_lengths_and_nan_are_refused_with_both_shapes():
    with pytest.raises(ValueError, match=r"tokens has 5 entries but R has shape \(6,\)"):
        render_text.tokens_html(list("abcde"), np.ones(6))
    with pytest.raises(ValueError, match=r"tokens has 2 entries but mask has shape \(3,\)"):
        render_text.tokens_html(["a", "b"], [1.0, 2.0], mask=[True, True, False])
    with pytest.raises(ValueError, match=r"NaN at positions \[1, 3\]"):
        render_text.token_colors([1.0, np.nan, 2.0, np.nan])
    with pytest.raises(ValueError, match=r"shape \(T,\), got shape \(2, 3\)"):
        render_text.token_colors(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"sentences\[1\]: tokens has 1 entries but R has shape \(2,\)"):
        render_text.save_html("unused.html", [(["a"], [1.0]), (["b"], [1.0, 2.0])])
    assert not os.path.exists("unused.html")
    with pytest.raises(TypeError, match="tokens_from_ids"):
        render_text.tokens_html([101, 102], [1.0, 2.0])


# ----------------------------------------------------------------------------------------- files
def test_save_html_writes_a_standalone_document(tmp_path):
    sentences = [(["a", "<b>", "c"], [1.0, -1.0, 0.0], "first"),
                 (["x", "##y"], [0.2, 0.1]),
                 (["p", "q", "[PAD]"], [1.0, 2.0, 3.0], None, [True, True, False])]
    path = tmp_path / "deep" / "er" / "text.html"
    assert render_text.save_html(str(path), sentences, cmap="coldnhot") == str(path)
    raw = path.read_bytes()
    doc = raw.decode("utf-8")
    assert doc.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in doc and "<style>" in doc
    p = parse(doc)
    assert len(p.spans) == 3 + 2 + 2
    assert [s["text"] for s in p.spans] == ["a", "<b>", "c", "x", "y", "p", "q"]
    # the legend: a gradient from the colour map's ends through its centre, labelled
    stops = [tuple(round(255 * c) for c in get_cmap("coldnhot")(f)[:3]) for f in (0.0, 0.5, 1.0)]
    for rgb in stops:
        assert "#{:02x}{:02x}{:02x}".format(*rgb) in doc.split("linear-gradient", 1)[1].split(")", 1)[0]
    assert all(label in p.text for label in ("-max", "0", "+max"))
    assert os.listdir(path.parent) == ["text.html"]  # no temporary file left


def test_save_html_error_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "t.html"
    path.write_text("old")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(render_text.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        render_text.save_html(str(path), [(["a"], [1.0])])
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["t.html"]


def count_close(img: np.ndarray, rgb, tol: float = 3.0) -> int:
    return int((np.abs(img[..., :3].astype(float) - 255 * np.asarray(rgb)).max(-1) <= tol).sum())


def test_save_png_draws_token_boxes_in_their_colours(tmp_path):
    path = tmp_path / "out" / "text.png"
    R = np.array([1.0, -0.5])
    assert render_text.save_png(str(path), [(["good", "meh"], R, "a title")], width_inches=4, dpi=80,
                                legend=False) == str(path)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] == 4 * 80 and im.size[1] > 0
        img = np.asarray(im.convert("RGB"))
    red, light_blue = expected_colors(R, "bwr")
    np.testing.assert_allclose(red, (1, 0, 0), atol=1e-6)
    assert count_close(img, red) > 100  # the box of "good"
    assert count_close(img, light_blue) > 100  # the box of "meh"
    # a neutral token draws no coloured box: no red anywhere
    render_text.save_png(str(path), [(["zero"], [0.0])], width_inches=4, dpi=80, legend=False)
    with Image.open(path) as im:
        assert count_close(np.asarray(im.convert("RGB")), red) == 0


def test_save_png_wraps_long_sentences_into_more_lines(tmp_path):
    def height(n_tokens):
        path = tmp_path / f"{n_tokens}.png"
        render_text.save_png(str(path), [(["token"] * n_tokens, np.linspace(-1, 1, n_tokens))],
                             width_inches=3, dpi=60)
        with Image.open(path) as im:
            return im.size

    (w1, h1), (w2, h2) = height(2), height(40)
    assert w1 == w2 == 180
    assert h2 > h1 + 5 * 60 * 12 / 72  # several more lines of 12 pt text


def test_save_png_wraps_a_word_with_its_pieces(tmp_path):
    # "aaaa" would still fit after the neutral first word, "##bbbbbbbb" would not: both go down a line
    path = tmp_path / "w.png"
    render_text.save_png(str(path), [(["cccccccccc", "aaaa", "##bbbbbbbb"], [0.0, 1.0, -1.0])],
                         width_inches=2, dpi=100, legend=False)
    with Image.open(path) as im:
        img = np.asarray(im.convert("RGB")).astype(float)
    rows_red = np.flatnonzero((np.abs(img - (255, 0, 0)).max(-1) <= 3).any(1))
    rows_blue = np.flatnonzero((np.abs(img - (0, 0, 255)).max(-1) <= 3).any(1))
    assert rows_red.size > 5 and rows_blue.size > 5
    assert abs(rows_red.mean() - rows_blue.mean()) < 2  # on one line


# ------------------------------------------------------------------------------------------ ids
def test_tokens_from_ids_with_list_dict_and_tokenizer():
    vocab = ["[PAD]", "hello", "world", "##s"]
    assert render_text.tokens_from_ids([1, 2, 3, 9, -1], vocab) == ["hello", "world", "##s", "[9]", "[-1]"]
    as_dict = {t: i for i, t in enumerate(vocab)}
    assert render_text.tokens_from_ids(np.array([[1, 0], [2, 7]]), as_dict) == [["hello", "[PAD]"], ["world", "[7]"]]

    class Tokenizer:
        def id_to_token(self, i):
            if i >= len(vocab):
                raise ValueError(f"id {i} out of range")
            return vocab[i]

    assert render_text.tokens_from_ids(np.array([2, 1, 4]), Tokenizer()) == ["world", "hello", "[4]"]

    class Layer:
        def get_vocabulary(self):
            return vocab

    assert render_text.tokens_from_ids([3, 5], Layer()) == ["##s", "[5]"]
    with pytest.raises(ValueError, match="integers"):
        render_text.tokens_from_ids([0.5], vocab)


def test_exposed_on_the_package():
    assert it.render_text is render_text
    assert "render_text" in it.__all__
