"""it.evaluate: region perturbation / AOPC (Samek et al. 2017), method comparison, model-randomisation
sanity check (Adebayo et al. 2018), similarity measures, plots, and the `evaluate` command."""

from __future__ import annotations

import csv
import os

import keras
import numpy as np
import pytest
import warm_python

import interprettensor as it

E = it.evaluate
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- models

def _linear(h: int, w: int, weights: np.ndarray, c: int = 1) -> keras.Model:
    """f(x) = [w . x, -w . x] (no bias), with a softmax on top (skipped by the metric)."""
    inp = keras.Input((h, w, c))
    z = keras.layers.Flatten()(inp)
    dense = keras.layers.Dense(2, use_bias=False)
    out = keras.layers.Softmax()(dense(z))
    model = keras.Model(inp, out)
    wv = np.asarray(weights, np.float32).reshape(-1, 1)
    dense.set_weights([np.concatenate([wv, -wv], axis=1)])
    return model


def _cnn(h: int = 10, w: int = 10, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((h, w, 2))
    z = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    z = keras.layers.Flatten()(z)
    z = keras.layers.Dense(3)(z)
    return keras.Model(inp, keras.layers.Softmax()(z))


def _logits(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras.Model(model.inputs[0], model.layers[-2].output)(x), np.float64)


# ----------------------------------------------------------------------------- hand-made cases

def _four_patches() -> np.ndarray:
    """A 4x4 image whose 2x2 patches sum to 3 (top left), -1 (top right), 5 (bottom left), 0.5."""
    x = np.zeros((4, 4), np.float32)
    x[:2, :2] = 0.75
    x[:2, 2:] = [[-1.0, 0.5], [0.0, -0.5]]
    x[2:, :2] = 1.25
    x[2:, 2:] = 0.125
    return x[None, :, :, None]


def test_linear_model_morf_and_lerf_by_hand():
    x = _four_patches()
    model = _linear(4, 4, np.ones(16))
    R = x.copy()  # w * x: the exact contributions of a bias-free linear model
    res = E.region_perturbation(model, x, R, patch=2, perturbation=0.0)
    # f = 7.5; MoRF removes 5, 3, 0.5, -1
    np.testing.assert_allclose(res.scores[0], [7.5, 2.5, -0.5, -1.0, 0.0], atol=1e-5)
    np.testing.assert_array_equal(res.ranking[0], [2, 0, 3, 1])
    assert res.aopc == pytest.approx((0 + 5 + 8 + 8.5 + 7.5) / 5, abs=1e-5)
    np.testing.assert_array_equal(res.target, [0])
    lerf = E.region_perturbation(model, x, R, patch=2, perturbation=0.0, order="lerf")
    np.testing.assert_allclose(lerf.scores[0], [7.5, 8.5, 8.0, 5.0, 0.0], atol=1e-5)
    assert lerf.aopc == pytest.approx((0 - 1 - 0.5 + 2.5 + 7.5) / 5, abs=1e-5)
    # target 1 scores -f; steps=2 stops early
    t1 = E.region_perturbation(model, x, R, target=1, patch=2, steps=2, perturbation=0.0)
    np.testing.assert_allclose(t1.scores[0], [-7.5, -2.5, 0.5], atol=1e-5)
    assert t1.scores.shape == (1, 3) and t1.ranking.shape == (1, 2)


def test_exact_ranking_is_optimal_and_beats_random():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 8))
    x = rng.normal(size=(20, 8, 8, 1)).astype(np.float32)
    model = _linear(8, 8, w)
    R = x * w[None, :, :, None]
    best = E.region_perturbation(model, x, R, target=0, patch=2, perturbation=0.0)
    # reference: the score after k steps is f minus the k largest patch contributions
    contrib = R[..., 0].reshape(20, 4, 2, 4, 2).sum((2, 4)).reshape(20, 16)
    f0 = R.reshape(20, -1).sum(1)
    expected = f0[:, None] - np.concatenate([np.zeros((20, 1)), np.cumsum(-np.sort(-contrib, 1), 1)], 1)
    np.testing.assert_allclose(best.scores, expected, rtol=1e-4, atol=1e-4)
    for seed in range(3):
        rnd = E.region_perturbation(model, x, "random", target=0, patch=2, perturbation=0.0, seed=seed)
        assert (best.scores <= rnd.scores + 1e-4).all()  # every prefix removes the most
        assert best.aopc > rnd.aopc + 1.0
    worst = E.region_perturbation(model, x, R, target=0, patch=2, perturbation=0.0, order="lerf")
    assert worst.aopc < rnd.aopc - 1.0


def test_constant_relevance_gives_the_random_curve_in_expectation():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(8, 8))
    n, P = 1500, 16
    x = rng.normal(size=(n, 8, 8, 1)).astype(np.float32)
    model = _linear(8, 8, w)
    res = E.region_perturbation(model, x, np.ones_like(x), target=0, patch=2, perturbation=0.0)
    # a uniformly random order removes each region with probability k / P after k steps
    contrib = (x[..., 0] * w).reshape(n, 4, 2, 4, 2).sum((2, 4)).reshape(n, P)
    f0 = contrib.sum(1)
    k = np.arange(P + 1)
    expected = (f0[:, None] - contrib.sum(1, keepdims=True) * k / P).mean(0)
    sem = res.scores.std(0) / np.sqrt(n)
    assert (np.abs(res.curve - expected) <= 4 * sem + 1e-4).all()
    # ties are broken uniformly: every region comes first about n / P times
    first = np.bincount(res.ranking[:, 0], minlength=P)
    assert first.min() > n / P * 0.6 and first.max() < n / P * 1.4
    rnd = E.region_perturbation(model, x, "random", target=0, patch=2, perturbation=0.0)
    assert abs(res.aopc - rnd.aopc) < 4 * np.hypot(res.aopc_sem, rnd.aopc_sem)


# ----------------------------------------------------------------------------- against a naive loop

def _naive(model, x, R, target, patch, steps, replacement, order):
    """Straightforward per-sample, per-step region perturbation with the pre-softmax logits."""
    n, h, w, _ = x.shape
    out = np.empty((n, steps + 1))
    for i in range(n):
        regions = [(r, c) for r in range(0, h, patch) for c in range(0, w, patch)]
        sums = [R[i, r:r + patch, c:c + patch].sum() for r, c in regions]
        idx = sorted(range(len(regions)), key=lambda j: -sums[j] if order == "morf" else sums[j])
        cur = x[i].copy()
        out[i, 0] = _logits(model, cur[None])[0, target[i]]
        for k in range(steps):
            r, c = regions[idx[k]]
            cur[r:r + patch, c:c + patch] = replacement[i, r:r + patch, c:c + patch]
            out[i, k + 1] = _logits(model, cur[None])[0, target[i]]
    return out


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_cnn_matches_naive_loop_with_partial_regions(order):
    model = _cnn()
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(3, 10, 10, 2)).astype(np.float32)
    R = rng.normal(size=x.shape)  # continuous: no ties
    rep = rng.uniform(size=x.shape).astype(np.float32)
    res = E.region_perturbation(model, x, R, patch=3, steps=10, perturbation=lambda xx: rep, order=order)
    target = _logits(model, x).argmax(1)
    np.testing.assert_array_equal(res.target, target)
    ref = _naive(model, x, R, target, 3, 10, rep, order)  # 10x10 in 3x3: 16 regions, edges 1 wide
    np.testing.assert_allclose(res.scores, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("perturbation", ["uniform", "mean", "blur"])
def test_batching_gives_the_same_numbers_as_one_sample_at_a_time(perturbation):
    model = _cnn()
    rng = np.random.default_rng(3)
    x = rng.uniform(size=(5, 10, 10, 2)).astype(np.float32)
    R = rng.normal(size=x.shape)
    kw = dict(patch=2, steps=12, perturbation=perturbation, value_range=(0.0, 1.0), seed=7)
    whole = E.region_perturbation(model, x, R, **kw)
    small = E.region_perturbation(model, x, R, batch_size=3, **kw)
    single = [E.region_perturbation(model, x[i:i + 1], R[i:i + 1], batch_size=1, **kw) for i in range(5)]
    rev = E.region_perturbation(model, x[::-1], R[::-1], **kw)
    for other in (small.scores, np.concatenate([s.scores for s in single]), rev.scores[::-1]):
        np.testing.assert_allclose(other, whole.scores, rtol=1e-5, atol=1e-5)
    assert whole.aopc == pytest.approx(np.mean([s.aopc for s in single]), abs=1e-5)
    # the perturbation really changes the input: the curve moves
    assert np.abs(whole.drops[:, 1:]).max() > 1e-3
    rnd = [E.region_perturbation(model, x[i:i + 1], "random", **kw).scores for i in range(5)]
    np.testing.assert_allclose(np.concatenate(rnd), E.region_perturbation(model, x, "random", **kw).scores,
                               rtol=1e-5, atol=1e-5)


def test_noise_and_seed():
    model = _cnn()
    x = np.random.default_rng(4).uniform(size=(2, 10, 10, 2)).astype(np.float32)
    seen = {}

    def spy(xx):
        return np.full_like(xx, 0.5)

    a = E.region_perturbation(model, x, "random", patch=5, seed=1)
    b = E.region_perturbation(model, x, "random", patch=5, seed=1)
    c = E.region_perturbation(model, x, "random", patch=5, seed=2)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert not np.allclose(a.scores, c.scores)
    seen["const"] = E.region_perturbation(model, x, "random", patch=5, perturbation=spy, seed=1).scores
    np.testing.assert_allclose(seen["const"],
                               E.region_perturbation(model, x, "random", patch=5, perturbation=0.5, seed=1).scores,
                               rtol=1e-6)
    # after every region is perturbed, a constant replacement leaves the constant image
    full = np.full_like(x, 0.5)
    np.testing.assert_allclose(seen["const"][:, -1], _logits(model, full)[np.arange(2), a.target], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- bad input

def test_clear_errors():
    model = _linear(4, 4, np.ones(16))
    x = _four_patches()
    with pytest.raises(ValueError, match=r"relevance has shape \(1, 4, 4\).*x has shape \(1, 4, 4, 1\)"):
        E.region_perturbation(model, x, x[..., 0], patch=2)
    with pytest.raises(ValueError, match="patch 5 is larger than the image"):
        E.region_perturbation(model, x, x, patch=5)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        E.region_perturbation(model, x, x, patch=2, steps=0)
    with pytest.raises(ValueError, match="exceeds the number of regions"):
        E.region_perturbation(model, x, x, patch=2, steps=5)
    with pytest.raises(ValueError, match="patch must be a positive integer"):
        E.region_perturbation(model, x, x, patch=0)
    with pytest.raises(ValueError, match="order must be 'morf'"):
        E.region_perturbation(model, x, x, patch=2, order="up")
    with pytest.raises(ValueError, match="perturbation must be"):
        E.region_perturbation(model, x, x, patch=2, perturbation="zeros")
    with pytest.raises(ValueError, match="'random'"):
        E.region_perturbation(model, x, "randm", patch=2)
    with pytest.raises(ValueError, match="NaN"):
        E.region_perturbation(model, x, np.full_like(x, np.nan), patch=2)
    with pytest.raises(it.ExplainError, match="target out of range"):
        E.region_perturbation(model, x, x, target=2, patch=2)
    with pytest.raises(it.ExplainError, match="expects"):
        E.region_perturbation(model, x[:, :3], x[:, :3], patch=2)


# ----------------------------------------------------------------------------- similarity

def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(5)
    a = rng.normal(size=(4, 6, 6))
    b = a + rng.normal(scale=[[[0.1]], [[1.0]], [[3.0]], [[0.0]]], size=a.shape)
    b[1, :3] = 0.0  # ties
    got = E.spearman(a, b)
    for i in range(4):
        assert got[i] == pytest.approx(spearmanr(a[i].ravel(), b[i].ravel()).statistic, abs=1e-12)
    assert E.spearman(a, np.exp(a))[0] == pytest.approx(1.0)
    assert E.spearman(a, -a)[0] == pytest.approx(-1.0)


@pytest.mark.parametrize("exact_float32", [True, False])
def test_ranks_match_scipy_with_ties_signed_zeros_and_infinities(exact_float32):
    """Average ranks equal scipy's rankdata, on float32 values (sorted as packed 64-bit keys) and on
    values float32 cannot hold (numpy's argsort): ties, -0.0 equal to 0.0, infinities, one value."""
    from scipy.stats import rankdata

    from interprettensor.analysis.randomisation import ranks

    rng = np.random.default_rng(11)
    for m in (1, 2, 7, 64, 301):
        a = rng.normal(size=(4, m)).astype(np.float32).astype(np.float64)
        a[:, rng.random(m) < 0.3] = 0.0
        a[:, rng.random(m) < 0.2] = -0.0
        a[0, rng.random(m) < 0.2] = 1.5
        a[1, rng.random(m) < 0.2] = -np.inf
        a[2, rng.random(m) < 0.2] = np.inf
        a[3] = rng.integers(-2, 3, size=m)
        if not exact_float32:
            a = a + 1e-12
        assert np.array_equal(a.astype(np.float32), a) == exact_float32 or m == 1
        np.testing.assert_array_equal(ranks(a), rankdata(a, axis=1))
        b = np.where(rng.random(a.shape) < 0.3, 0.0, rng.normal(size=a.shape)).astype(np.float32).astype(np.float64)
        got = E.spearman(a, b)
        for i in range(4):
            ra, rb = rankdata(a[i]) - (m + 1) / 2, rankdata(b[i]) - (m + 1) / 2
            den = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
            if den == 0:  # a constant map: no ranking
                assert np.isnan(got[i])
            else:  # the sums of half-integer ranks are exact; a division and a root: a few float64 ulps
                assert got[i] == pytest.approx((ra * rb).sum() / den, abs=1e-12)


def test_ssim_matches_a_naive_gaussian_window():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(2, 16, 14))
    b = 0.6 * a + 0.4 * rng.normal(size=a.shape)
    L = 4.0
    got = E.ssim(a, b, data_range=L)
    r, s = 5, 1.5  # 11 x 11 Gaussian window (Wang et al. 2004)
    g = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * s * s))
    win = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    for n in range(2):
        vals = []
        for i in range(r, 16 - r):
            for j in range(r, 14 - r):
                pa, pb = a[n, i - r:i + r + 1, j - r:j + r + 1], b[n, i - r:i + r + 1, j - r:j + r + 1]
                ma, mb = (win * pa).sum(), (win * pb).sum()
                va, vb = (win * pa * pa).sum() - ma ** 2, (win * pb * pb).sum() - mb ** 2
                cov = (win * pa * pb).sum() - ma * mb
                vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
        assert got[n] == pytest.approx(np.mean(vals), abs=1e-10)
    np.testing.assert_allclose(E.ssim(a, a), 1.0)
    noisy = [E.ssim(a, a + rng.normal(scale=sc, size=a.shape), data_range=L) for sc in (0.1, 0.5, 2.0)]
    assert (noisy[0] > noisy[1]).all() and (noisy[1] > noisy[2]).all()


# ----------------------------------------------------------------------------- a trained CNN

@pytest.fixture(scope="module")
def digits_cnn():
    """A small CNN trained on the 28x28 digits with fixed seeds (a few seconds). Like the library's
    digits networks (and the LRP Toolbox's MNIST models) it sees its [0, 1] inputs as [-1, 1]."""
    from interprettensor.io.digits import load_digits, train_test_split

    x, y = load_digits()
    x_tr, y_tr, x_te, y_te = train_test_split(x, y, test_fraction=0.2, seed=0)
    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1))
    z = keras.layers.Rescaling(2.0, -1.0)(inp)
    z = keras.layers.Conv2D(8, 5, activation="relu")(z)
    z = keras.layers.AveragePooling2D(2)(z)
    z = keras.layers.Conv2D(16, 5, activation="relu")(z)
    z = keras.layers.AveragePooling2D(2)(z)
    z = keras.layers.Flatten()(z)
    z = keras.layers.Dense(10)(z)
    model = keras.Model(inp, keras.layers.Softmax()(z))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_tr, y_tr, epochs=3, batch_size=32, verbose=0, shuffle=True)
    acc = model.evaluate(x_te, y_te, verbose=0)[1]
    assert acc > 0.9
    return model, x_te[:32], y_te[:32]


def test_lrp_beats_random_on_a_trained_cnn(digits_cnn):
    model, x, _ = digits_cnn
    cmp = E.compare(model, x, ["epsilon_gamma_box", "epsilon_plus", "gradient", "random"], patch=4,
                    value_range=(0.0, 1.0), seed=0)
    rnd = cmp.results["random"]
    for label in ("epsilon_gamma_box", "epsilon_plus"):
        diff = cmp.results[label].aopc_per_sample - rnd.aopc_per_sample  # paired: same digits, same noise
        margin, sem = diff.mean(), diff.std(ddof=1) / np.sqrt(len(diff))
        assert margin > 0.5 * rnd.aopc and margin > 5 * sem, cmp.table()
    # the first regions removed matter most: LRP's curve falls faster than random's early on
    assert cmp.results["epsilon_gamma_box"].curve[5] < rnd.curve[5]
    # LeRF: removing the least relevant regions first keeps the score longer than random
    lerf = E.region_perturbation(model, x, it.lrp(model, x, "epsilon_gamma_box", low=0.0, high=1.0), patch=4,
                                 order="lerf", value_range=(0.0, 1.0))
    assert lerf.aopc < rnd.aopc


def test_compare_uses_the_same_noise_for_every_method(digits_cnn, tmp_path):
    model, x, _ = digits_cnn
    x = x[:6]
    kw = dict(patch=7, value_range=(0.0, 1.0), seed=3)
    cmp = E.compare(model, x, ["random", ("eps", "epsilon", {"epsilon": 0.1}), "gradient"], **kw)
    assert list(cmp.results) == ["random", "eps", "gradient"]
    np.testing.assert_allclose(cmp.results["random"].scores, E.region_perturbation(model, x, "random", **kw).scores)
    R = it.lrp(model, x, "epsilon", epsilon=0.1)
    np.testing.assert_allclose(cmp.results["eps"].scores, E.region_perturbation(model, x, R, **kw).scores,
                               rtol=1e-5, atol=1e-5)
    G = np.abs(it.attribution.gradient(model, x))  # sensitivity: ranked by magnitude
    np.testing.assert_allclose(cmp.results["gradient"].scores, E.region_perturbation(model, x, G, **kw).scores,
                               rtol=1e-5, atol=1e-5)
    # the unperturbed score is the same for every method
    assert len({tuple(np.round(r.scores[:, 0], 5)) for r in cmp.results.values()}) == 1
    rows = cmp.rows()
    assert [r["aopc"] for r in rows] == sorted((r["aopc"] for r in rows), reverse=True)
    assert next(r for r in rows if r["method"] == "random")["aopc_minus_random"] == 0.0
    text = cmp.table()
    assert all(m in text for m in ("random", "eps", "gradient", "AOPC"))
    path = cmp.to_csv(str(tmp_path / "aopc.csv"))
    with open(path) as f:
        table = list(csv.DictReader(f))
    assert {r["method"] for r in table} == {"random", "eps", "gradient"}
    assert float(next(r for r in table if r["method"] == "eps")["aopc"]) == pytest.approx(cmp.results["eps"].aopc,
                                                                                           rel=1e-5)
    png = tmp_path / "curves.png"
    cmp.plot(str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_randomisation(digits_cnn, tmp_path):
    model, x, _ = digits_cnn
    x = x[:8]
    before = [w.copy() for w in model.get_weights()]
    pred = model.predict(x, verbose=0)
    res = E.model_randomisation(model, x, "epsilon_gamma_box", value_range=(0.0, 1.0), seed=0)
    assert res.stages == ["original"] + [la.name for la in model.layers if la.trainable_weights][::-1]
    assert res.spearman.shape == res.ssim.shape == res.spearman_abs.shape == (4, 8)
    np.testing.assert_allclose(res.spearman[0], 1.0)
    np.testing.assert_allclose(res.ssim[0], 1.0)
    # destroying the model destroys the explanation
    assert res.mean("spearman")[-1] < 0.5 and res.mean("ssim")[-1] < 0.5
    # the model itself is untouched
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(model.predict(x, verbose=0), pred)
    again = E.model_randomisation(model, x, "epsilon_gamma_box", value_range=(0.0, 1.0), seed=0)
    np.testing.assert_allclose(again.spearman, res.spearman)
    text = res.table()
    assert "original" in text and "ssim" in text
    grad = E.model_randomisation(model, x, "gradient", seed=0)
    png = tmp_path / "rand.png"
    E.plot_randomisation({"LRP": res, "gradient": grad}, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res.to_csv(str(tmp_path / "r.csv"))
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 5


# ----------------------------------------------------------------------------- the command

def _cli(*args, cwd):
    return warm_python.run_cli(list(args), cwd, timeout=300)  # a fresh process (tests/warm_python.py)


@pytest.mark.slow
def test_evaluate_command(digits_cnn, tmp_path):
    model, x, _ = digits_cnn
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x[:4])
    p = _cli("evaluate", "m.keras", "x.npy", "--methods", "epsilon_gamma_box", "gradient", "random",
             "--patch", "7", "--value-range", "0", "1", "--out", "ev", "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    assert "AOPC" in p.stdout and "epsilon_gamma_box" in p.stdout
    assert (tmp_path / "ev" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "ev" / "aopc.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows if r["method"] != "random"] and len(rows) == 3
    expected = E.compare(model, x[:4], ["epsilon_gamma_box", "gradient", "random"], patch=7, value_range=(0.0, 1.0))
    for r in rows:
        assert float(r["aopc"]) == pytest.approx(expected.results[r["method"]].aopc, rel=1e-4, abs=1e-4)

    p = _cli("evaluate", "--demo-model", "--epochs", "1", "--digits", "6", "--methods", "epsilon", "random",
             "--patch", "7", "--steps", "8", "--sanity", "--out", "demo", "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    for f in ("curves.png", "aopc.csv", "randomisation.png", "randomisation.csv"):
        assert (tmp_path / "demo" / f).exists(), f

def test_evaluate_command_errors(tmp_path, capsys, monkeypatch):
    from interprettensor.apps.cli import main

    model = _linear(4, 4, np.ones(16))
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", _four_patches())
    monkeypatch.chdir(tmp_path)
    for args, msg in [(("m.keras", "x.npy", "--patch", "5"), "larger than the image"),
                      (("m.keras", "x.npy", "--patch", "2", "--steps", "5"), "exceeds the number of regions"),
                      (("m.keras", "x.npy", "--methods", "nosuchrule"), "unknown rule or preset"),
                      (("m.keras", "x.npy", "--perturbation", "zeros"), "--perturbation must be"),
                      (("m.keras",), "no inputs"),
                      (("m.keras", "x.npy", "--digits", "3"), "not both"),
                      (("missing.keras", "x.npy"), "does not exist")]:
        assert main(["evaluate", *args, "--out", "bad", "-q"]) == 1, args
        err = capsys.readouterr().err
        assert err.startswith("error:") and msg in err and "Traceback" not in err, (args, err)
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "m.keras", "x.npy", "--steps", "0"])
    assert e.value.code == 2 and "--steps" in capsys.readouterr().err
    assert main(["evaluate", "m.keras", "x.npy", "--patch", "2", "--perturbation", "0", "--methods", "input_x_gradient",
                 "--out", "ok", "-q"]) == 0
    out = capsys.readouterr().out
    assert "input_x_gradient" in out and "5.8000" in out  # the hand-made case: AOPC 5.8


# ----------------------------------------------------------------------------- region size, baseline, 1-D inputs

def test_default_patch_rule():
    """The documented rule: about 49 regions or more (values worked out by hand)."""
    assert E.default_patch((28, 28)) == 4  # 7 x 7 regions, as the README's figures
    assert E.default_patch((8, 8)) == 1  # 64 regions (4 before: only 2 x 2)
    assert E.default_patch((224, 224)) == 32
    assert E.default_patch((20, 30)) == 2
    assert E.default_patch((6, 6)) == 1
    assert E.default_patch((100,)) == 2  # 1-D: length // 49 -> 50 regions
    assert E.default_patch((20,)) == 1
    assert E.default_patch((16, 16, 16)) == 4  # volumes: min side // 4 -> 64 regions


def test_default_patch_is_used_on_small_images():
    model = _cnn(8, 8)
    x = np.random.default_rng(0).random((3, 8, 8, 2)).astype(np.float32)
    res = E.region_perturbation(model, x, "random", value_range=(0.0, 1.0))
    assert (res.patch, res.steps, res.ranking.shape) == (1, 64, (3, 64))
    assert res.region == "1x1 regions"


def test_compare_always_computes_the_random_baseline():
    model = _cnn(10, 10)
    x = np.random.default_rng(1).random((4, 10, 10, 2)).astype(np.float32)
    kw = dict(patch=2, value_range=(0.0, 1.0), seed=5)
    cmp = E.compare(model, x, [("eps", "epsilon", {"epsilon": 0.1}), "gradient"], **kw)
    assert list(cmp.results) == ["eps", "gradient"]  # the baseline is no row of its own
    rnd = E.region_perturbation(model, x, "random", **kw).aopc  # independent: the baseline by itself
    for row in cmp.rows():
        assert row["aopc_minus_random"] == pytest.approx(row["aopc"] - rnd, rel=1e-9, abs=1e-12)
    text = cmp.table()
    assert "nan" not in text and "random baseline" in text and f"{rnd:.4f}" in text
    # with 'random' among the methods, that one is the baseline
    cmp2 = E.compare(model, x, ["random", "gradient"], **kw)
    assert cmp2.baseline is None and cmp2.random_result() is cmp2.results["random"]
    assert "random baseline" not in cmp2.table()


def test_compare_checks_patch_and_steps_before_explaining(monkeypatch):
    model = _cnn(10, 10)
    x = np.zeros((2, 10, 10, 2), np.float32)
    monkeypatch.setattr(E, "explain", lambda *a, **k: pytest.fail("explained before checking the regions"))
    with pytest.raises(ValueError, match="patch 11 is larger than the image"):
        E.compare(model, x, ["epsilon"], patch=11)
    with pytest.raises(ValueError, match="steps 26 exceeds the number of regions: 10x10 inputs have 25 2x2 regions"):
        E.compare(model, x, ["epsilon"], patch=2, steps=26)


@pytest.mark.parametrize("shape", [(100,), (60, 3)])
def test_one_dimensional_inputs(shape):
    keras.utils.set_random_seed(0)
    inp = keras.Input(shape)
    z = keras.layers.Conv1D(4, 3, activation="relu")(inp) if len(shape) == 2 else inp
    z = keras.layers.Dense(3)(keras.layers.Flatten()(z))
    model = keras.Model(inp, z)
    x = np.random.default_rng(2).random((5,) + shape).astype(np.float32)
    cmp = E.compare(model, x, ["epsilon", "gradient"], value_range=(0.0, 1.0))
    first = cmp.results["epsilon"]
    length = shape[0]
    assert first.patch == max(1, length // 49) and first.steps == -(-length // first.patch)
    words = f"regions of {first.patch} position{'s' if first.patch > 1 else ''}"
    head = cmp.table().splitlines()[0]
    assert words in head and "x" not in head.split(",")[2], head
    fig = cmp.plot()
    assert words in fig.axes[0].get_xlabel()


def test_model_randomisation_takes_the_methods_seed():
    model = _cnn(8, 8)
    x = np.random.default_rng(3).random((3, 8, 8, 2)).astype(np.float32)
    sg = {"n": 4, "noise_scale": 0.1, "seed": 7}
    res = E.model_randomisation(model, x, "smoothgrad", seed=1, method_params=sg)
    again = E.model_randomisation(model, x, "smoothgrad", seed=1, method_params=sg)
    np.testing.assert_allclose(res.spearman, again.spearman)
    assert res.spearman.shape == (3, 3)  # original, then 2 layers with weights
    with pytest.raises(TypeError, match="n given both"):
        E.model_randomisation(model, x, "smoothgrad", method_params=sg, n=3)
