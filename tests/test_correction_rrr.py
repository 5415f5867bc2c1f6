"""Right for the Right Reasons (it.correction.rrr): the penalty's value against numpy written from the
equations (input gradient by hand; relevance from it.lrp), its weight gradient against a finite
difference in float64, and RRR fine-tuning emptying a planted watermark's relevance."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import interprettensor as it
from interprettensor.analysis.correction import rrr as rrr_mod

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="RRR trains on TensorFlow")

C = it.correction


def _mlp(dtype: str = "float32", seed: int = 0, activation: str | None = None) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4, 4, 1), dtype=dtype), keras.layers.Flatten(dtype=dtype),
                             keras.layers.Dense(6, activation="relu", dtype=dtype,
                                                bias_initializer=keras.initializers.RandomNormal(0.0, 0.1, seed)),
                             keras.layers.Dense(3, dtype=dtype, activation=activation,
                                                bias_initializer=keras.initializers.RandomNormal(0.0, 0.1, seed))])


def _data(dtype: str = "float32"):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 4, 4, 1)).astype(dtype)
    y = np.array([0, 1, 2, 1, 0])
    mask = (rng.random((5, 4, 4)) < 0.4).astype(dtype)
    return x, y, mask


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("activation", [None, "softmax"])
def test_gradient_penalty_equals_numpy(activation):
    """Ross et al. eq. 1 by hand: d/dx sum_k log p_k = ((1 - K p) W2^T * [h > 0]) W1^T (the same for a
    model that outputs logits and one that ends in a softmax)."""
    model = _mlp("float64", activation=activation)
    x, y, mask = _data("float64")
    (W1, b1), (W2, b2) = [(l.kernel.numpy(), l.bias.numpy()) for l in model.layers[1:]]
    xf = x.reshape(5, -1)
    h = xf @ W1 + b1
    z = np.maximum(h, 0) @ W2 + b2
    g = (((1 - 3 * _softmax(z)) @ W2.T) * (h > 0)) @ W1.T
    want = np.mean(np.sum((mask.reshape(5, -1) * g) ** 2, axis=1))
    got = float(C.rrr_penalty(model, x, y, mask, method="gradient"))
    assert got == pytest.approx(want, rel=1e-12)
    # a mask shaped like x is the same annotation
    assert float(C.rrr_penalty(model, x, y, mask[..., None], method="gradient")) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("start", ["label", "log_probs", "classes"])
def test_lrp_penalty_equals_it_lrp(start):
    """The LRP penalty from relevances that it.lrp computes per class (target mode): the start's
    combination of them (module docstring), squared on the mask."""
    model = _mlp("float64")
    x, y, mask = _data("float64")
    per_class = np.stack([it.lrp(model, x, rule="epsilon", epsilon=0.1, target=k) for k in range(3)], axis=1)
    z = np.asarray(model(x))  # (predict would cast the float64 inputs to float32)
    m = mask[:, None, ..., None]
    if start == "label":
        sq = (m[:, 0] * per_class[np.arange(5), y]) ** 2
    elif start == "log_probs":
        R = np.einsum("nk,nk...->n...", 1 - 3 * _softmax(z), per_class)
        sq = (m[:, 0] * R) ** 2
    else:
        sq = (m * per_class) ** 2
    want = np.mean(sq.reshape(5, -1).sum(axis=1))
    got = float(C.rrr_penalty(model, x, y, mask, method="lrp", rule="epsilon", epsilon=0.1, start=start))
    assert want > 0
    assert got == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("method,start,rule", [("gradient", "log_probs", "epsilon"), ("lrp", "log_probs", "epsilon"),
                                              ("lrp", "classes", "alphabeta")])
def test_penalty_weight_gradient_matches_finite_difference(method, start, rule):
    """The second-order gradient through the engine's LRP pass (nested vector-Jacobian products) is the
    derivative of the penalty: central differences in float64 along random directions in the space of
    all weights (both layers' kernels and biases)."""
    model = _mlp("float64")
    x, y, mask = _data("float64")
    params = {} if method == "gradient" else {"rule": rule, "start": start}
    pen = rrr_mod._Penalty(model, method, **params)
    weights = model.trainable_variables
    with tf.GradientTape() as tape:
        value = pen(x, y, mask)
    grads = [g.numpy() for g in tape.gradient(value, weights)]
    assert all(np.abs(g).max() > 0 for g in grads[:3])  # (the output bias may not reach a relevance)
    w0 = [w.numpy() for w in weights]
    rng = np.random.default_rng(2)
    h = 1e-6
    for _ in range(3):
        v = [rng.normal(size=w.shape) for w in w0]
        diff = []
        for sign in (1, -1):
            for w, a, d in zip(weights, w0, v):
                w.assign(a + sign * h * d)
            diff.append(float(pen(x, y, mask)))
        for w, a in zip(weights, w0):
            w.assign(a)
        fd = (diff[0] - diff[1]) / (2 * h)
        exact = sum(float(np.sum(g * d)) for g, d in zip(grads, v))
        # O(h^2) truncation and ~1e-16 |P| / h round-off: far below 1e-6 relative
        assert exact == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_plant_watermark():
    x = np.zeros((6, 8, 8, 2), "float32")
    y = np.array([0, 1, 1, 0, 1, 1])
    xw, yw, masks, marked = C.plant_watermark(x, y, 1, fraction=1.0, size=3, offset=1)
    assert yw.tolist() == y.tolist()  # no backdoor: no label changes
    assert marked.tolist() == [False, True, True, False, True, True]
    assert masks.shape == (6, 8, 8) and masks[1, 1:4, 1:4].all() and masks.sum() == 4 * 9
    assert (xw[1, 1:4, 1:4] == 1).all() and xw[0].sum() == 0 and xw.sum() == 4 * 9 * 2
    xp, _, mp, mkp = C.plant_watermark(x, y, 1, size=3, poison=True)
    assert mkp.tolist() == [True, False, False, True, False, False]
    with pytest.raises(it.InterpretTensorError, match="does not fit"):
        C.plant_watermark(x, y, 1, size=8, offset=1)


def test_bad_input_errors():
    model = _mlp()
    x, y, mask = _data()
    with pytest.raises(it.InterpretTensorError, match="unknown RRR method"):
        C.rrr_penalty(model, x, y, mask, method="saliency")
    with pytest.raises(it.InterpretTensorError, match="apply only to method=.lrp."):
        C.rrr_penalty(model, x, y, mask, method="gradient", epsilon=0.1)
    with pytest.raises(it.InterpretTensorError, match="rule='zplus'"):
        C.rrr_penalty(model, x, y, mask, method="gradient", rule="zplus")
    with pytest.raises(it.InterpretTensorError, match="unknown starting relevance"):
        C.rrr_penalty(model, x, y, mask, start="logits")
    with pytest.raises(it.InterpretTensorError, match="does not fit"):
        C.rrr_penalty(model, x, y, mask[:, :2, :2, None, None], method="gradient")
    with pytest.raises(it.InterpretTensorError, match="masks of shape"):
        C.rrr_fit(model, x, y, mask[:, :2], epochs=1, verbose=0)
    with pytest.raises(it.InterpretTensorError, match="must hold a mask"):
        rrr = C.RRRModel(model)
        rrr.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rrr.fit(x, y, epochs=1, verbose=0)
    scalar = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    with pytest.raises(it.InterpretTensorError, match="classes >= 2"):
        C.RRRModel(scalar)


# ---------------------------------------------------------------- fine-tuning on a planted shortcut
SIZE = 10


@pytest.fixture(scope="module")
def shortcut():
    """Digits 3 (class 0) and 8 (class 1), 10 x 10; a 2 x 2 watermark on 90 % of the training 8s."""
    x, y = it.data.load_digits(size=SIZE, digit_size=8)
    sel = (y == 3) | (y == 8)
    x, y = x[sel], (y[sel] == 8).astype("int64")
    xtr, ytr, xte, yte = it.data.train_test_split(x, y, seed=0)
    xw, _, mw, _ = C.plant_watermark(xtr, ytr, 1, fraction=0.9, size=2, offset=0, seed=0)
    xm, _, mm, mk = C.plant_watermark(xte, yte, 1, fraction=1.0, size=2, offset=0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(xw, ytr, epochs=5, batch_size=32, verbose=0)
    return model, (xw, ytr, mw), (xte, yte), (xm[mk], mm[mk], yte[mk])


@pytest.mark.slow
def test_rrr_fit_halves_the_artifact_share(shortcut):
    """After RRR fine-tuning (LRP form, every class's relevance) the watermark's share of the positive
    epsilon relevance of the true class falls by at least half; clean accuracy does not drop by more
    than 5 points (the test set has 71 images: one image is 1.4 points)."""
    model, (xw, ytr, mw), (xte, yte), (xm, mm, ym) = shortcut
    before = C.relevance_share(model, xm, mm, target=ym, rule="epsilon").mean()
    acc_before = (model.predict(xte, verbose=0).argmax(1) == yte).mean()
    hist = C.rrr_fit(model, xw, ytr, mw, epochs=5, lam=100.0, start="classes", learning_rate=3e-3, verbose=0)
    assert set(hist.history) >= {"loss", "penalty", "accuracy"} and len(hist.history["loss"]) == 5
    assert hist.history["penalty"][-1] < hist.history["penalty"][0]
    after = C.relevance_share(model, xm, mm, target=ym, rule="epsilon").mean()
    acc_after = (model.predict(xte, verbose=0).argmax(1) == yte).mean()
    assert before > 0.2  # the model relies on the watermark (4 of the 100 pixels)
    assert after <= before / 2
    assert acc_after >= acc_before - 0.05


class _Triples(keras.utils.PyDataset):
    def __init__(self, x, y, m, batch):
        super().__init__()
        self.x, self.y, self.m, self.batch = x, y, m, batch

    def __len__(self):
        return int(np.ceil(len(self.x) / self.batch))

    def __getitem__(self, i):
        s = slice(i * self.batch, (i + 1) * self.batch)
        return self.x[s], self.y[s], self.m[s]


def test_rrr_fit_on_pydataset_trains_the_wrapped_model():
    """A PyDataset of (x, y, mask) triples: one step per batch; the wrapped model's weights are the ones
    trained, and the step's penalty is the one rrr_penalty computes on the batch before the update."""
    model = _mlp()
    x, y, mask = _data()
    want = float(C.rrr_penalty(model, x, y, mask, rule="epsilon", start="log_probs"))
    w0 = model.layers[1].kernel.numpy().copy()
    hist = C.rrr_fit(model, _Triples(x, y, mask, batch=5), epochs=1, lam=1.0, verbose=0)
    assert hist.history["penalty"][0] == pytest.approx(want, rel=1e-5)
    assert not np.allclose(model.layers[1].kernel.numpy(), w0)
