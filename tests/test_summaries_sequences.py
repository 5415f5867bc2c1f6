"""TensorBoard pictures of sequences: per-channel strips of time series (N, T, C) and token pictures
of text (N, T), read back from the event file and compared with the pictures the renderers write
themselves (render.sequence_strip and render_text.save_png to a PNG file)."""

import numpy as np
import pytest
import tensorflow as tf

from interprettensor.io import render, render_text
from interprettensor.io.summaries import SummaryWriter, read_events


def _decode(png: bytes) -> np.ndarray:
    return tf.io.decode_png(png, channels=3).numpy()


def _file(path) -> np.ndarray:
    with open(path, "rb") as f:
        return _decode(f.read())


def test_time_series_strips(tmp_path):
    rng = np.random.default_rng(0)
    R = rng.normal(size=(3, 40, 3))
    R[2] = R[0]                      # the same relevance as sample 0
    R[1, 10:20] *= -5.0              # sample 1 differs in a stretch
    x = rng.normal(size=(3, 40, 3))
    x[2] = x[0]
    with SummaryWriter(str(tmp_path / "logs")) as w:
        w.heatmaps("series", R, x, step=2)
        w.sequence_strips("bare", R[:1], None, 2)
    events = read_events(str(tmp_path / "logs"))
    (step, pngs), = events["series"]
    assert step == 2 and len(pngs) == 3
    imgs = [_decode(p) for p in pngs]
    render.sequence_strip(R[0], x[0], title="sample 0", path=str(tmp_path / "s0.png"))
    want = _file(tmp_path / "s0.png")
    assert imgs[0].shape == want.shape  # the CLI's strip picture, at its own size
    assert imgs[0].shape[0] > 200 and imgs[0].shape[1] >= 500
    assert not np.array_equal(imgs[0], imgs[1]), "different relevance must give different pictures"
    diff = np.abs(imgs[0].astype(int) - imgs[2].astype(int)).sum(-1)
    # samples 0 and 2 differ only in their title ("sample 0" / "sample 2"): the plot area is the same
    assert (diff > 0).mean() < 0.01
    (_, bare), = events["bare"]
    assert _decode(bare[0]).shape[0] < imgs[0].shape[0], "without x there are no input lines above the strip"


def test_token_pictures(tmp_path):
    tokens = [["the", "film", "was", "great", "[PAD]"], ["a", "dull", "and", "long", "story"]]
    R = np.array([[0.1, 0.2, 0.0, 2.0, 0.0], [0.0, -1.5, 0.1, -0.4, 0.3]])
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
    with SummaryWriter(str(tmp_path / "logs")) as w:
        w.token_pictures("text", tokens, R, step=1, mask=mask)
        w.heatmaps("text_flipped", -R, None, step=1, tokens=tokens)
    events = read_events(str(tmp_path / "logs"))
    (step, pngs), = events["text"]
    assert step == 1 and len(pngs) == 2
    imgs = [_decode(p) for p in pngs]
    own = [_file(render_text.save_png(str(tmp_path / f"t{i}.png"), [(tokens[i], R[i], f"sample {i}", mask[i])]))
           for i in range(2)]
    h = max(o.shape[0] for o in own)
    for img, o in zip(imgs, own):
        assert img.shape == (h, o.shape[1], 3)           # padded with white to the batch's size
        np.testing.assert_array_equal(img[:o.shape[0], :o.shape[1]], o)
        assert np.all(img[o.shape[0]:] == 255)
    (_, flipped), = events["text_flipped"]
    assert not np.array_equal(_decode(flipped[0]), imgs[0]), "the opposite relevance must change the colours"


def test_bad_shapes(tmp_path):
    with SummaryWriter(str(tmp_path / "logs")) as w:
        with pytest.raises(ValueError, match="tokens="):
            w.heatmaps("t", np.ones((2, 5)), None, step=0)
        with pytest.raises(ValueError, match="2 token sequences for 3"):
            w.token_pictures("t", [["a"], ["b"]], np.ones((3, 1)), step=0)
        with pytest.raises(ValueError, match=r"x has shape \(2, 4, 2\)"):
            w.sequence_strips("s", np.ones((2, 4, 3)), np.ones((2, 4, 2)), step=0)
