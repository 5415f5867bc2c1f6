"""The ground-truth benchmark (interprettensor.analysis.metrics.ground_truth): the generated shapes
data set is what it claims (one object per image deciding the class, its mask exact), a small CNN
learns it (> 90 % held-out accuracy), and LRP's presets localise the object better than random
attributions on the localisation metrics, by more than three standard errors."""

import time

import numpy as np
import pytest

import interprettensor as it
from interprettensor.analysis.metrics import ground_truth as gt

METRICS = ("RelevanceMassAccuracy", "RelevanceRankAccuracy", "PointingGame", "AttributionLocalisation")


def test_shapes_dataset_is_seeded_balanced_and_its_masks_are_the_objects():
    x, y, s = it.metrics.shapes_dataset(64, size=32, seed=5)
    x2, y2, s2 = it.metrics.shapes_dataset(64, size=32, seed=5)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(s, s2)
    assert x.shape == (64, 32, 32, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert np.bincount(y).tolist() == [16] * 4
    area = s.reshape(64, -1).sum(1)
    assert area.min() > 0.02 * 32 * 32 and area.max() < 0.4 * 32 * 32
    # the object is brighter than the background around it (>= 0.35 per channel, minus the noise)
    inside = (x * s[..., None]).sum((1, 2)) / area[:, None]
    outside = (x * ~s[..., None]).sum((1, 2)) / (~s).reshape(64, -1).sum(1)[:, None]
    assert (inside - outside).min() > 0.1
    # the masks are the shapes: the disc's area is pi r^2, the square's (1.7 r)^2 (same r drawn)
    ratio = area[y == 1].mean() / area[y == 0].mean()
    assert ratio == pytest.approx(np.pi / 1.7 ** 2, rel=0.1)


def test_benchmark_is_the_metrics_on_per_pixel_relevance():
    """localisation_benchmark (built on compare) gives each metric's scores of the channel-summed
    magnitude (or positive part) of each method's attributions, and random's uniform noise from seed;
    the reference calls the metrics directly (a tiny untrained network: only the bookkeeping is
    tested here)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "quantus_reference"))
    from models import inputs, keras_model

    model = keras_model()
    x, y = inputs(5, seed=2)
    masks = np.zeros(x.shape[:3], bool)
    masks[:, 2:6, 1:5] = True
    metrics = {"mass": it.metrics.RelevanceMassAccuracy(), "pointing": it.metrics.PointingGame()}
    tables = {}
    for relevance, f in (("abs", np.abs), ("positive", lambda v: np.maximum(v, 0.0))):
        table = tables[relevance] = it.metrics.localisation_benchmark(model, x, y, masks, methods=("gradient", "random"),
                                                  metrics=metrics, seed=3, relevance=relevance, per_sample=True)
        for method in ("gradient", "random"):
            a = (np.random.default_rng(3).uniform(0, 1, x.shape) if method == "random"
                 else it.metrics.explain(model, x, y, method=method))
            a = f(a.sum(-1))
            for key, m in metrics.items():
                np.testing.assert_array_equal(table[method][key],
                                              np.asarray(m(model=model, x_batch=x, y_batch=y, a_batch=a,
                                                           s_batch=masks), np.float64), err_msg=(method, key))
    means = it.metrics.localisation_benchmark(model, x, y, masks, methods=("gradient",), metrics=metrics)
    assert means["gradient"]["mass"] == pytest.approx(float(np.mean(tables["abs"]["gradient"]["mass"])), abs=1e-12)


@pytest.fixture(scope="module")
def trained():
    t0 = time.perf_counter()
    x, y, _ = it.metrics.shapes_dataset(1600, size=32, seed=0)
    model = it.metrics.train_shapes_cnn(x, y, epochs=3, seed=0)
    xt, yt, st = it.metrics.shapes_dataset(256, size=32, seed=1)
    return model, xt, yt, st, time.perf_counter() - t0


@pytest.mark.slow
def test_cnn_learns_the_shapes(trained):
    model, xt, yt, _, seconds = trained
    acc = (np.argmax(np.asarray(model(xt)), 1) == yt).mean()
    print(f"\nshapes CNN: held-out accuracy {acc:.3f}, data + training {seconds:.1f} s")
    assert acc > 0.9


@pytest.mark.slow
def test_lrp_localises_the_object_better_than_random(trained):
    model, xt, yt, st, _ = trained
    n = 64
    methods = ("epsilon_gamma_box", "preset_a", "gradient", "input_x_gradient", "random")
    table = it.metrics.localisation_benchmark(model, xt[:n], yt[:n], st[:n], methods=methods, per_sample=True)
    print("\n" + gt.format_table(table))
    assert set(table) == set(methods) and all(set(row) == set(METRICS) for row in table.values())

    def mean_se(v):
        v = v[np.isfinite(v)]
        return v.mean(), v.std(ddof=1) / np.sqrt(len(v))

    for method in ("epsilon_gamma_box", "preset_a"):
        for metric in METRICS:
            m1, e1 = mean_se(table[method][metric])
            m0, e0 = mean_se(table["random"][metric])
            assert m1 - m0 > 3 * np.hypot(e1, e0), (method, metric, m1, m0)
    # random attributions score the mask's share of the image on the mass metrics (their expectation)
    share = st[:n].reshape(n, -1).mean(1)
    m0, e0 = mean_se(table["random"]["RelevanceMassAccuracy"] - share)
    assert abs(m0) < 4 * e0 + 1e-3
