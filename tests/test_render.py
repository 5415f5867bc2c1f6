"""Rendering: colour maps centred on zero, normalisation, overlays, grids and PNG files (by pixel values)."""

import sys

import numpy as np
import pytest

from interprettensor import render

WHITE, BLACK, RED, BLUE = (1, 1, 1), (0, 0, 0), (1, 0, 0), (0, 0, 1)


def rgb_of(values, cmap, normalization=None):
    return render.relevance_to_rgb(np.array([values], dtype=float), cmap, normalization)[0]


def test_bwr_zero_is_white_and_signs_go_to_red_and_blue():
    rgb = rgb_of([[0.0, 1.0, -1.0]], "bwr")
    np.testing.assert_allclose(rgb[0, 0], WHITE, atol=0.01)
    np.testing.assert_allclose(rgb[0, 1], RED, atol=0.01)
    np.testing.assert_allclose(rgb[0, 2], BLUE, atol=0.01)
    # weaker relevance is a lighter shade of the same side
    half = rgb_of([[0.5, -0.5]], "bwr")
    assert half[0, 0, 0] > 0.99 and 0.3 < half[0, 0, 1] < 0.7  # light red
    assert half[0, 1, 2] > 0.99 and 0.3 < half[0, 1, 0] < 0.7  # light blue


def test_coldnhot_zero_is_black_positive_hot_negative_cold():
    rgb = rgb_of([[0.0, 0.5, 1.0, -0.5, -1.0]], "coldnhot")
    np.testing.assert_allclose(rgb[0, 0], BLACK, atol=0.01)
    np.testing.assert_allclose(rgb[0, 1], RED, atol=0.01)
    np.testing.assert_allclose(rgb[0, 2], (1, 1, 0), atol=0.01)  # yellow
    np.testing.assert_allclose(rgb[0, 3], BLUE, atol=0.01)
    np.testing.assert_allclose(rgb[0, 4], (0, 1, 1), atol=0.01)  # cyan


def test_all_zero_relevance_is_neutral_after_normalisation():
    for cmap, neutral in (("bwr", WHITE), ("coldnhot", BLACK)):
        rgb = render.relevance_to_rgb(np.zeros((2, 4, 4, 1)), cmap, "maxabs")
        np.testing.assert_allclose(rgb, np.broadcast_to(neutral, rgb.shape), atol=0.01)


def test_normalize_maxabs_is_per_sample():
    R = np.array([[[1.0, -2.0]], [[100.0, 50.0]], [[0.0, 0.0]]])
    n = render.normalize(R, "maxabs")
    np.testing.assert_allclose(n[0], [[0.5, -1.0]])
    np.testing.assert_allclose(n[1], [[1.0, 0.5]])
    np.testing.assert_allclose(n[2], [[0.0, 0.0]])


def test_normalize_percentile_clips_outliers():
    R = np.full((1, 10, 10), 1.0)
    R[0, 0, 0] = 1000.0
    maxabs = render.normalize(R, "maxabs")
    pct = render.normalize(R, "percentile", 90)
    assert maxabs[0, 5, 5] == pytest.approx(0.001)
    assert pct[0, 5, 5] == pytest.approx(1.0) and pct[0, 0, 0] == 1.0  # outlier clipped
    with pytest.raises(ValueError, match="normalisation"):
        render.normalize(R, "nope")


def test_channels_are_summed():
    R = np.zeros((1, 2, 2, 3))
    R[0, 0, 0] = [1.0, 1.0, -1.0]   # sums to +1 -> red
    R[0, 1, 1] = [-1.0, -1.0, 1.0]  # sums to -1 -> blue
    rgb = render.relevance_to_rgb(R, "bwr")
    np.testing.assert_allclose(rgb[0, 0, 0], RED, atol=0.01)
    np.testing.assert_allclose(rgb[0, 1, 1], BLUE, atol=0.01)
    np.testing.assert_allclose(rgb[0, 0, 1], WHITE, atol=0.01)


def test_overlay_shows_input_where_relevance_is_zero():
    x = np.zeros((1, 2, 2, 1))
    x[0, 0, 1] = 1.0
    R = np.zeros((1, 2, 2, 1))
    R[0, 1, 1] = 2.0
    out = render.overlay(R, x, "bwr", alpha=1.0, vmin=0.0, vmax=1.0)
    np.testing.assert_allclose(out[0, 0, 0], BLACK, atol=1e-6)  # dark input, no relevance
    np.testing.assert_allclose(out[0, 0, 1], WHITE, atol=1e-6)  # bright input, no relevance
    np.testing.assert_allclose(out[0, 1, 1], RED, atol=0.01)    # full relevance: the heatmap colour
    with pytest.raises(ValueError, match="does not match"):
        render.overlay(np.zeros((1, 3, 3, 1)), x)


def test_input_to_rgb_grey_and_range():
    x = np.array([[[0.0, 0.5, 1.0]]])  # (N=1, H=1, W=3)
    rgb = render.input_to_rgb(x, 0.0, 1.0)
    assert rgb.shape == (1, 1, 3, 3)
    np.testing.assert_allclose(rgb[0, 0, 1], (0.5, 0.5, 0.5))
    np.testing.assert_allclose(render.input_to_rgb(x * 2 - 1, -1.0, 1.0), rgb)


def test_save_png_round_trip(tmp_path):
    from matplotlib import image as mpimg

    rgb = render.relevance_to_rgb(np.array([[[1.0, 0.0], [0.0, -1.0]]]), "bwr")[0]
    path = render.save_png(str(tmp_path / "sub" / "h.png"), rgb, scale=3)
    back = mpimg.imread(path)
    assert back.shape[:2] == (6, 6)
    np.testing.assert_allclose(back[0, 0, :3], RED, atol=0.01)
    np.testing.assert_allclose(back[5, 5, :3], BLUE, atol=0.01)
    np.testing.assert_allclose(back[0, 5, :3], WHITE, atol=0.01)


def test_grid_with_titles(tmp_path):
    from PIL import Image

    imgs = [[np.zeros((4, 4, 3)), np.ones((4, 4, 3))] for _ in range(3)]
    path = render.save_grid(str(tmp_path / "g.png"), imgs, ["a", "b", "c"], ["x", "y"], title="t")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > im.size[0]  # 3 rows, 2 columns
    with pytest.raises(ValueError, match="row titles"):
        render.grid(imgs, ["a"], None)


def test_unknown_cmap_and_matplotlib_names():
    with pytest.raises(ValueError, match="unknown colour map"):
        render.get_cmap("no-such-map")
    rgb = rgb_of([[0.0]], "seismic")
    assert rgb.shape == (1, 1, 3)


def test_rendering_leaves_pyplot_state_alone(tmp_path):
    import matplotlib

    backend = matplotlib.rcParams._get_backend_or_none() if hasattr(matplotlib.rcParams, "_get_backend_or_none") \
        else None
    render.save_grid(str(tmp_path / "g.png"), [[np.zeros((2, 2, 3))]])
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []  # no figure left in pyplot's manager
    if backend is not None:
        assert matplotlib.rcParams._get_backend_or_none() == backend


def test_feature_bars(tmp_path):
    R = np.array([2.0, -1.0, 0.0, 0.5])
    fig = render.feature_bars(R, x=np.array([0.1, 0.2, 0.3, 0.4]), feature_names=list("abcd"), title="s",
                              path=str(tmp_path / "bars.png"))
    assert (tmp_path / "bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bars = fig.axes[0].patches
    assert [b.get_height() for b in bars] == list(R)
    np.testing.assert_allclose(bars[0].get_facecolor()[:3], (1.0, 0.0, 0.0), atol=1e-6)  # largest: full red
    np.testing.assert_allclose(bars[1].get_facecolor()[:3], (0.5, 0.5, 1.0), atol=0.01)  # -max/2: half-way to blue
    np.testing.assert_allclose(bars[2].get_facecolor()[:3], (1.0, 1.0, 1.0), atol=0.01)  # zero: white
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a\n0.1", "b\n0.2", "c\n0.3", "d\n0.4"]
    with pytest.raises(ValueError, match=r"shape \(F,\)"):
        render.feature_bars(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="3 feature names for 4 features"):
        render.feature_bars(R, feature_names=list("abc"))


def test_sequence_strip(tmp_path):
    R = np.zeros((10, 2))
    R[3, 0], R[7, 1] = 4.0, -2.0
    fig = render.sequence_strip(R, x=np.ones((10, 2)), channel_names=["p", "q"], path=str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = next(ax.get_images()[0] for ax in fig.axes if ax.get_images())
    shown = np.asarray(img.get_array())
    assert shown.shape == (2, 10)  # one row per channel, time along x
    assert shown[0, 3] == 1.0 and shown[1, 7] == -0.5 and shown[0, 0] == 0.0  # max-abs scaled
    assert img.get_clim() == (-1.0, 1.0)
    assert render.sequence_strip(R[:, 0]).axes[0].get_images()[0].get_array().shape == (1, 10)  # (T,): one channel
    with pytest.raises(ValueError, match=r"x has shape \(10, 3\)"):
        render.sequence_strip(R, x=np.ones((10, 3)))
