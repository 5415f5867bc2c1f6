"""The faithfulness metrics, part A (interprettensor.analysis.metrics.faithfulness): equal to Quantus
0.6.0's scores stored by tests/quantus_reference/make_faithfulness.py (same model weights, same
inputs), to numpy written from the papers where Quantus is wrong, batched (model calls counted), and
layout-independent.

Tolerances: the Keras and PyTorch models compute the same float32 logits up to rounding (a 3x3x3
convolution, 64-term dense sums, magnitudes below 10: errors ~ 1e-6); curves of probabilities are
compared to 1e-5 absolute, logits and areas (sums of 12 curve points) to 1e-5 relative to their
largest value; rank correlations are exact in float64 (ranks do not move by 1e-6 unless values tie,
which they do not here).
"""

import itertools
import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import interprettensor as it
from interprettensor.analysis.metrics import faithfulness as F
from interprettensor.engine.errors import ExplainError

sys.path.insert(0, str(Path(__file__).parent / "quantus_reference"))
from models import CHANNELS, SIZE, inputs, keras_model  # noqa: E402

REF = json.loads((Path(__file__).parent / "data" / "quantus_reference" / "faithfulness.json").read_text())


@pytest.fixture(scope="module")
def data():
    x, y = inputs(6, seed=1)
    a1 = np.random.default_rng(5).normal(size=(6, SIZE, SIZE))
    a3 = np.random.default_rng(6).normal(size=(6, SIZE, SIZE, CHANNELS))
    return keras_model(), x, y, {"a1": a1, "a3": a3}


@pytest.fixture(scope="module")
def gray_model():
    """The shared network on one-channel images (the channel repeated to three), as the reference
    script wraps the PyTorch model for IROF and ROAD."""
    base = keras_model()
    inp = keras.Input((SIZE, SIZE, 1))
    h = keras.layers.Concatenate(axis=-1)([inp] * CHANNELS)
    for name in ("conv", "pool", "flatten", "dense"):
        h = base.get_layer(name)(h)
    return keras.Model(inp, h)


def _runs(metric):
    return [r for r in REF["runs"] if r["metric"] == metric]


DETERMINISTIC = [r for r in REF["runs"] if r["metric"] != "Monotonicity"
                 and r["kwargs"].get("perturb_baseline") != "uniform"]


@pytest.mark.parametrize("run", DETERMINISTIC, ids=lambda r: f"{r['metric']}-{r['kwargs']}-{r['call']}")
def test_equals_quantus(data, run):
    model, x, y, attributions = data
    metric = getattr(it.metrics, run["metric"])(**run["kwargs"])
    scores = metric(model=model, x_batch=x, y_batch=y, a_batch=attributions[run["a"]],
                    batch_size=run["batch_size"], **run["call"])
    ref = np.asarray(run["scores"], np.float64)
    ours = np.asarray(scores, np.float64)
    assert ours.shape == ref.shape
    if run["metric"] in ("MonotonicityCorrelation",):
        np.testing.assert_allclose(ours, ref, atol=1e-12)        # ranks: exact
    elif run["metric"] == "FaithfulnessEstimate":
        np.testing.assert_allclose(ours, ref, atol=1e-5)         # Pearson of 1e-6-accurate deltas
    else:
        np.testing.assert_allclose(ours, ref, atol=1e-5 * max(1.0, np.abs(ref).max()))


def test_channel_first_gives_the_same_scores(data):
    """Channels-first data with a channels-first model (the same network behind a transpose)."""
    model, x, y, attributions = data
    xf = np.ascontiguousarray(np.moveaxis(x, -1, 1))
    inp = keras.Input((CHANNELS, SIZE, SIZE))
    h = keras.layers.Permute((2, 3, 1))(inp)
    for name in ("conv", "pool", "flatten", "dense"):
        h = model.get_layer(name)(h)
    model_cf = keras.Model(inp, h)
    for cls, kw, a in ((it.metrics.PixelFlipping, {"features_in_step": 16}, "a3"),
                       (it.metrics.RegionPerturbation, {"patch_size": 3, "regions_evaluation": 5}, "a1"),
                       (it.metrics.Selectivity, {"patch_size": 4}, "a3"),
                       (it.metrics.FaithfulnessEstimate, {"features_in_step": 16}, "a1"),
                       (it.metrics.Monotonicity, {"features_in_step": 16}, "a1"),
                       (it.metrics.MonotonicityCorrelation, {"features_in_step": 16, "nr_samples": 2}, "a3")):
        a_cl = attributions[a]
        a_cf = np.ascontiguousarray(np.moveaxis(a_cl, -1, 1)) if a_cl.ndim == 4 else a_cl
        last = cls(**kw)(model=model, x_batch=x, y_batch=y, a_batch=a_cl)
        first = cls(**kw)(model=model_cf, x_batch=xf, y_batch=y, a_batch=a_cf, channel_first=True)
        np.testing.assert_allclose(np.asarray(first, np.float64), np.asarray(last, np.float64), atol=1e-6,
                                   err_msg=cls.__name__)


def test_ties_keep_the_channels_first_order(data):
    """One attribution per pixel, broadcast over the channels: the channels of a pixel tie; they are
    replaced in channel order (a stable sort of the channels-first features), so one step of 64
    features takes the 21 best pixels whole and channel 0 of the 22nd."""
    model, x, y, attributions = data
    a = attributions["a1"]
    scores = it.metrics.PixelFlipping(features_in_step=64, normalise=False)(
        model=model, x_batch=x, y_batch=y, a_batch=a)
    order = np.argsort(-a.reshape(6, -1), axis=1, kind="stable")
    xp = x.astype(np.float64).copy()
    rows = np.arange(6)[:, None]
    pix = np.unravel_index(order[:, :21], (SIZE, SIZE))
    lo = x.reshape(6, -1).min(1)
    xp[rows, pix[0], pix[1], :] = lo[:, None, None]
    p22 = np.unravel_index(order[:, 21], (SIZE, SIZE))
    xp[np.arange(6), p22[0], p22[1], 0] = lo
    probs = np.asarray(model(xp.astype(np.float32)), np.float64)[np.arange(6), y]
    np.testing.assert_allclose(np.asarray(scores)[:, 0], probs, atol=1e-6)


def test_monotonicity_from_the_paper(data):
    """Arya et al. 2019: features inserted into the baseline in increasing order of attribution
    (Quantus 0.6.0 never inserts them: every sample scores True there, as stored)."""
    model, x, y, attributions = data
    run = _runs("Monotonicity")[0]
    assert all(v == 1.0 for v in run["scores"])  # Quantus' flat curves
    a = np.abs(attributions["a3"])
    a = a / a.max()
    ours = it.metrics.Monotonicity(features_in_step=16)(model=model, x_batch=x, y_batch=y, a_batch=attributions["a3"])
    flat_x = np.moveaxis(x, -1, 1).reshape(6, -1).astype(np.float64)
    flat_a = np.moveaxis(a, -1, 1).reshape(6, -1)
    expected = []
    for i in range(6):  # numpy, one sample and one step at a time, as the paper's loop
        cur = np.full(flat_x.shape[1], flat_x[i].min())
        preds = []
        for j, idx in enumerate(np.array_split(np.argsort(flat_a[i], kind="stable"), 12)):
            cur[idx] = flat_x[i, idx]
            img = np.moveaxis(cur.reshape(CHANNELS, SIZE, SIZE), 0, -1)[None].astype(np.float32)
            preds.append(float(np.asarray(model(img))[0, y[i]]))
        expected.append(bool(np.all(np.diff(preds) >= 0)))
    assert ours == expected
    assert not all(expected)  # the check has something to find


def test_monotonicity_correlation_uniform_is_seeded_and_close_to_quantus(data):
    """'uniform' noise: reproducible with a seed, different with another; its scores' mean lies
    within three standard errors of Quantus' (which drew from np.random, seed 0)."""
    model, x, y, attributions = data
    run = [r for r in _runs("MonotonicityCorrelation") if r["kwargs"]["perturb_baseline"] == "uniform"][0]
    a = attributions["a3"]
    s1 = it.metrics.MonotonicityCorrelation(**run["kwargs"], seed=3)(model=model, x_batch=x, y_batch=y, a_batch=a)
    s2 = it.metrics.MonotonicityCorrelation(**run["kwargs"], seed=3)(model=model, x_batch=x, y_batch=y, a_batch=a)
    s3 = it.metrics.MonotonicityCorrelation(**run["kwargs"], seed=4)(model=model, x_batch=x, y_batch=y, a_batch=a)
    assert s1 == s2 and s1 != s3
    ref = np.asarray(run["scores"])
    se = np.sqrt(ref.var(ddof=1) / len(ref) + np.var(s1, ddof=1) / len(s1))
    assert abs(np.mean(s1) - ref.mean()) < 3 * se


def test_irof_equals_quantus_per_sample(gray_model, data):
    """IROF on one-channel images with Quantus' slic segments (stored); Quantus with batch_size=1,
    where each sample has its own baseline, as here for any batch."""
    _, x, _, attributions = data
    xg = x.mean(-1, keepdims=True)
    segments = np.asarray(REF["irof_segments"])

    def stored_slic(img):
        i = int(np.argmin(np.abs(xg - img[None]).reshape(6, -1).sum(1)))
        return segments[i]

    y = inputs(6, seed=1)[1]
    for run in REF["irof"]:
        metric = it.metrics.IROF(segmentation_method=stored_slic, **run["kwargs"])
        ours = np.asarray(metric(model=gray_model, x_batch=xg, y_batch=y, a_batch=attributions["a1"]))
        ref = np.asarray(run["scores"])
        if run["batch_size"] == 1:
            # a sum of 64 ratios f(x_j)/f(x), each to ~1e-6 relative of its size
            np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
        else:  # Quantus pools the baseline over its batch: the scores differ
            assert np.abs(ours - ref).max() > 1e-2
    aggregate = it.metrics.IROF(segmentation_method=stored_slic)(model=gray_model, x_batch=xg, y_batch=y,
                                                                 a_batch=attributions["a1"])
    np.testing.assert_allclose(aggregate, [np.mean(REF["irof"][0]["scores"])], rtol=1e-4)


def test_irof_slic_is_quantus_segmentation(data):
    pytest.importorskip("skimage")
    _, x, _, _ = data
    xg = x.mean(-1, keepdims=True)
    np.testing.assert_array_equal(it.metrics.IROF().segments(xg), np.asarray(REF["irof_segments"]))


def test_noisy_linear_imputation_equals_quantus(data):
    """The imputation (noise 0) on three-channel images against Quantus' sparse solve."""
    _, x, _, _ = data
    for case in REF["imputation"]:
        i = case["sample"]
        mask = np.zeros((1, 1, SIZE, SIZE), bool)
        mask.reshape(-1)[case["pixels"]] = True
        out = it.metrics.noisy_linear_imputation(x[i:i + 1], mask, noise=0.0)[0, 0]
        np.testing.assert_allclose(out, np.asarray(case["imputed"]), atol=1e-12)
    # the imputed pixels are the weighted means of their neighbours: the defining equations
    mask = np.zeros((1, 1, SIZE, SIZE), bool)
    mask[..., 2:5, 3:6] = True
    out = it.metrics.noisy_linear_imputation(x[:1], mask, noise=0.0)[0, 0]
    for r in range(2, 5):
        for c in range(3, 6):
            nb = sum(w * out[r + dr, c + dc] for dr, dc, w in F._NEIGHBOURS)
            np.testing.assert_allclose(out[r, c], nb, atol=1e-12)
    # batched: several masks of several images solved at once equal one at a time
    masks = np.random.default_rng(0).random((3, 2, SIZE, SIZE)) < 0.4
    together = it.metrics.noisy_linear_imputation(x[:2], masks, noise=0.0)
    for m in range(3):
        for n in range(2):
            alone = it.metrics.noisy_linear_imputation(x[n:n + 1], masks[m:m + 1, n:n + 1], noise=0.0)[0, 0]
            np.testing.assert_allclose(together[m, n], alone, atol=1e-12)


def test_road_equals_quantus_on_one_channel(gray_model, data):
    _, x, _, attributions = data
    xg = x.mean(-1, keepdims=True)
    y = np.asarray(REF["road_labels"])
    for run in REF["road"]:
        ours = it.metrics.ROAD(**run["kwargs"])(model=gray_model, x_batch=xg, y_batch=y, a_batch=attributions["a1"])
        assert list(ours) == [float(k) if "." in k else int(k) for k in run["scores"]]
        np.testing.assert_allclose(list(ours.values()), list(run["scores"].values()), atol=1e-12)
    noisy = [it.metrics.ROAD(percentages=[20, 60], noise=0.1, seed=s)(
        model=gray_model, x_batch=xg, y_batch=y, a_batch=attributions["a1"]) for s in (1, 1)]
    assert noisy[0] == noisy[1]


def test_road_three_channels_imputes_whole_pixels(data):
    """Quantus 0.6 fails here; the pixels ranked by attribution are imputed in every channel."""
    model, x, y, attributions = data
    pred = np.asarray(model(x)).argmax(1)
    metric = it.metrics.ROAD(percentages=[25, 75], noise=0.0)
    scores = metric(model=model, x_batch=x, y_batch=pred, a_batch=attributions["a1"])
    order = np.argsort(-attributions["a1"].reshape(6, -1), axis=1, kind="stable")
    expected = []
    for p in (25, 75):
        masks = np.zeros((1, 6, SIZE * SIZE), bool)
        np.put_along_axis(masks[0], order[:, :int(SIZE * SIZE * p / 100)], True, axis=1)
        xs = it.metrics.noisy_linear_imputation(x, masks.reshape(1, 6, SIZE, SIZE), noise=0.0)[0]
        expected.append(float(np.mean(np.asarray(model(xs.astype(np.float32))).argmax(1) == pred)))
    assert list(scores.values()) == expected


def test_batched_model_calls(data):
    """Every step of the batch goes through the model stacked: calls count inputs, so the counts
    are (steps + unperturbed) x samples; chunking by memory changes the number of calls, not the scores."""
    model, x, y, attributions = data
    counted = {}

    class Counting(it.metrics.MetricModel):
        def logits(self, xs):
            counted.setdefault("calls", []).append(xs.shape[0])
            return super().logits(xs)

    import interprettensor.analysis.metrics.base as base_mod

    saved = base_mod.MetricModel
    base_mod.MetricModel = Counting
    try:
        cases = [
            (it.metrics.PixelFlipping(features_in_step=16), 12 * 6),
            (it.metrics.RegionPerturbation(patch_size=2, regions_evaluation=5), 6 + 5 * 6),
            (it.metrics.Selectivity(patch_size=4), 4 * 6),
            (it.metrics.Monotonicity(features_in_step=16), 12 * 6),
            (it.metrics.MonotonicityCorrelation(features_in_step=16, nr_samples=3), 6 + 12 * 3 * 6),
            (it.metrics.FaithfulnessEstimate(features_in_step=16), 6 + 12 * 6),
        ]
        for metric, inputs_expected in cases:
            counted.clear()
            metric(model=model, x_batch=x, y_batch=y, a_batch=attributions["a3"], batch_size=1000)
            assert sum(counted["calls"]) == inputs_expected, type(metric).__name__
            # the perturbed inputs came in one stacked call (plus the unperturbed batch, if any)
            assert len(counted["calls"]) <= 2, (type(metric).__name__, counted["calls"])
        counted.clear()
        small = it.metrics.PixelFlipping(features_in_step=16)
        small.max_elements = 3 * 6 * SIZE * SIZE * CHANNELS  # three steps per call
        s_small = small(model=model, x_batch=x, y_batch=y, a_batch=attributions["a3"], batch_size=1000)
        assert counted["calls"] == [18] * 4
        s_big = it.metrics.PixelFlipping(features_in_step=16)(model=model, x_batch=x, y_batch=y,
                                                               a_batch=attributions["a3"])
        np.testing.assert_allclose(s_small, s_big, atol=1e-6)  # other batch compositions: float32 rounding
    finally:
        base_mod.MetricModel = saved


def test_bad_arguments_raise(data):
    model, x, y, attributions = data
    with pytest.raises(ExplainError, match="features_in_step"):
        it.metrics.PixelFlipping(features_in_step=0)
    with pytest.raises(ExplainError, match="does not divide"):
        it.metrics.PixelFlipping(features_in_step=5)(model=model, x_batch=x, y_batch=y, a_batch=attributions["a3"])
    with pytest.raises(ExplainError, match="order"):
        it.metrics.RegionPerturbation(order="best")
    with pytest.raises(ExplainError, match="patch_size"):
        it.metrics.Selectivity(patch_size=0)
    with pytest.raises(ExplainError, match="perturb_baseline"):
        it.metrics.PixelFlipping(perturb_baseline="purple")
    with pytest.raises(ExplainError, match="neighbourhood"):
        it.metrics.RegionPerturbation(perturb_baseline="neighbourhood_mean")
    with pytest.raises(ExplainError, match="perturb_func"):
        it.metrics.FaithfulnessEstimate(perturb_func=lambda arr, **k: arr)
    with pytest.raises(ExplainError, match="perturb_func_kwargs"):
        it.metrics.PixelFlipping(perturb_func_kwargs={"sigma": 1})
    with pytest.raises(ExplainError, match="nr_samples"):
        it.metrics.MonotonicityCorrelation(nr_samples=0)
    with pytest.raises(ExplainError, match="segmentation_method"):
        it.metrics.IROF(segmentation_method="watershed")
    with pytest.raises(ExplainError, match="percentages"):
        it.metrics.ROAD(percentages=[150])
    with pytest.raises(ExplainError, match="return_aggregate"):
        it.metrics.ROAD(return_aggregate=True)
    with pytest.raises(ExplainError, match="y_batch"):
        it.metrics.PixelFlipping(features_in_step=64)(model=model, x_batch=x, y_batch=None,
                                                      a_batch=attributions["a3"])
    with pytest.raises(TypeError, match="unexpected"):
        it.metrics.Selectivity(patch_sise=2)
    with pytest.raises(ExplainError, match="single segment"):
        it.metrics.IROF(segmentation_method=lambda img: np.zeros(img.shape[:2], int))(
            model=model, x_batch=x, y_batch=y, a_batch=attributions["a1"])


def test_seeded_random_order_and_uniform_baseline_are_reproducible(data):
    model, x, y, attributions = data
    kw = dict(model=model, x_batch=x, y_batch=y, a_batch=attributions["a1"])
    r = [it.metrics.RegionPerturbation(patch_size=2, order="random", regions_evaluation=4, seed=s)(**kw)
         for s in (0, 0, 1)]
    assert r[0] == r[1] and r[0] != r[2]
    u = [it.metrics.PixelFlipping(features_in_step=64, perturb_baseline="uniform", seed=s)(**kw) for s in (0, 0, 1)]
    assert u[0] == u[1] and u[0] != u[2]
    metric = it.metrics.PixelFlipping(features_in_step=64, perturb_baseline="uniform", seed=0)
    assert metric(**kw) == metric(**kw) == u[0]  # each call starts the stream anew


def test_irof_samples_with_different_segment_counts_from_the_paper(data):
    """Samples cut into different numbers of superpixels score as if alone: numpy, one sample at a
    time, from Rieger & Hansen 2020 (segments removed by decreasing mean attribution, replaced by the
    sample's current mean; m - trapz(f(x_j) / f(x)))."""
    model, x, y, attributions = data
    sizes = [2, 4, 8, 2, 4, 8]  # square blocks: 16, 4 and 1 segments

    def blocks(img):
        i = int(np.argmin(np.abs(x - img[None]).reshape(6, -1).sum(1)))
        s = sizes[i]
        return (np.arange(SIZE)[:, None] // s) * (SIZE // s) + np.arange(SIZE)[None, :] // s

    a = attributions["a3"]
    with pytest.raises(ExplainError, match="single segment"):
        it.metrics.IROF(segmentation_method=blocks, return_aggregate=False)(
            model=model, x_batch=x, y_batch=y, a_batch=a)
    sizes[2] = sizes[5] = 1  # 64 segments
    ours = it.metrics.IROF(segmentation_method=blocks, return_aggregate=False)(
        model=model, x_batch=x, y_batch=y, a_batch=a)
    an = a / np.abs(a).max()
    expected = []
    for i in range(6):
        seg = blocks(x[i])
        m = seg.max() + 1
        means = np.array([an[i][seg == s].mean() for s in range(m)])
        cur = x[i].astype(np.float64).copy()
        f0 = float(np.asarray(model(x[i:i + 1]))[0, y[i]])
        curve = []
        for s in np.argsort(-means, kind="stable"):
            cur[seg == s] = cur.mean()
            curve.append(float(np.asarray(model(cur[None].astype(np.float32)))[0, y[i]]) / f0)
        expected.append(m - np.trapezoid(curve))
    # each ratio to ~1e-6 relative; a sum of up to 64 of them
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=64 * 1e-6 * np.abs(expected).max())


def test_explain_func_gives_the_scores_of_its_attributions(data):
    """explain_func instead of a_batch: the same scores as the attributions it returns, given."""
    model, x, y, _ = data
    a = it.metrics.explain(model=model, inputs=x, targets=y, method="gradient")
    kw = dict(model=model, x_batch=x, y_batch=y)
    from_func = it.metrics.Selectivity(patch_size=2)(**kw, explain_func=it.metrics.explain,
                                                     explain_func_kwargs={"method": "gradient"})
    given = it.metrics.Selectivity(patch_size=2)(**kw, a_batch=a)
    np.testing.assert_allclose(from_func, given, atol=1e-12)


def test_feature_vectors_from_the_paper():
    """(n, D) inputs: pixel-flipping and the faithfulness estimate against numpy from their
    definitions on a linear model (logits w . x + b: the drop of a group is w . (x - baseline) over it)."""
    rng = np.random.default_rng(3)
    w = rng.normal(size=(10, 2)).astype(np.float32)
    inp = keras.Input((10,))
    model = keras.Model(inp, keras.layers.Dense(2, name="d")(inp))
    model.get_layer("d").set_weights([w, np.zeros(2, np.float32)])
    x = rng.uniform(size=(4, 10)).astype(np.float32)
    y = np.array([0, 1, 0, 1])
    a = rng.normal(size=(4, 10))
    logits = x.astype(np.float64) @ w
    pf = it.metrics.PixelFlipping(features_in_step=2)(model=model, x_batch=x, y_batch=y, a_batch=a, softmax=False)
    fe = it.metrics.FaithfulnessEstimate(features_in_step=2)(model=model, x_batch=x, y_batch=y, a_batch=a)
    for i in range(4):
        order = np.argsort(-a[i], kind="stable").reshape(5, 2)
        contrib = w[:, y[i]] * (x[i] - x[i].min())     # what replacing a feature by the minimum removes
        drops = contrib[order].sum(1)
        np.testing.assert_allclose(pf[i], logits[i, y[i]] - np.cumsum(drops), atol=1e-5)
        an = a[i] / np.abs(a).max()
        np.testing.assert_allclose(fe[i], np.corrcoef(an[order].sum(1), drops)[0, 1], atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_stepped_inputs_are_numpy_where_bit_for_bit(dtype):
    """The perturbed inputs of a chunk of steps, built as a select on the values' bits, equal
    np.where's selection bit for bit (NaN, -0.0 and infinities included), cumulative and at one step,
    with steps compared as int16 and, for 40,000 steps, as int64; features whose step is never
    reached (at or beyond k, up to int64's largest, as RegionPerturbation marks them) stay ``before``."""
    rng = np.random.default_rng(4)
    n, f = 3, 40
    before = rng.normal(size=(n, f)).astype(dtype)
    before[0, :4] = [np.nan, -0.0, np.inf, -np.inf]
    special = rng.normal(size=(n, f)).astype(dtype)
    special[1, :3] = [-0.0, np.nan, 0.0]
    mean = np.broadcast_to(before[:, 4:].mean(1, keepdims=True), (n, f))  # a view, as the 'mean' baseline
    for k, after, cumulative in itertools.product((7, 40_000), (special, mean), (True, False)):
        step_of = rng.integers(0, k + 3, size=(n, f))
        step_of[0, -3:] = [k, np.iinfo(np.int64).max, 2 ** 15]
        build = F._stepped_inputs(step_of, k, after=after, before=before, cumulative=cumulative)
        for sl in (slice(0, 1), slice(2, 6), slice(k - 3, k), slice(32_760, 32_775)):
            if sl.stop > k:
                with pytest.raises(ValueError, match="outside"):
                    build(sl)
                continue
            steps = np.arange(sl.start, sl.stop)[:, None, None]
            ref = np.where(step_of[None] <= steps if cumulative else step_of[None] == steps,
                           after[None], before[None])
            got = build(sl)
            assert got.dtype == dtype and got.shape == ref.shape
            np.testing.assert_array_equal(got.view(np.uint8), ref.view(np.uint8))
