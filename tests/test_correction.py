"""it.correction: CAVs against their equations in NumPy, the P-ClArC projection layer (forward, LRP
against a NumPy epsilon rule and against a hand-built Dense with the same matrix and bias, save/load,
Sequential and Functional insertion), A-ClArC's augmentation and fine-tuning, the measurement, the
planted shortcut corrected (a smaller version of benchmarks/bench_correction.py) and `correct` on the
command line."""

import os

import keras
import numpy as np
import pytest

import interprettensor as it
from interprettensor.analysis import correction as C
from reference_numpy import dense_lrp

F32 = 2.0 ** -23
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def identity_model(d):
    """A model whose layer 'id' outputs its input: the layer's activations are the data."""
    inp = keras.Input((d,))
    lay = keras.layers.Dense(d, use_bias=False, kernel_initializer="identity", name="id")
    return keras.Model(inp, keras.layers.Dense(2, name="head")(lay(inp)))


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    d, n = 6, 80
    true = np.array([3.0, -1.0, 0.0, 0.0, 2.0, 0.0])
    clean = rng.normal(size=(n, d)).astype("float32")
    art = (rng.normal(size=(n, d)) + true).astype("float32")
    return identity_model(d), art, clean, true / np.linalg.norm(true)


def test_cav_signal_and_mean_difference_equations(planted):
    model, art, clean, _ = planted
    X = np.concatenate([art, clean]).astype("float64")
    t = np.r_[np.ones(len(art)), np.zeros(len(clean))]
    pattern = ((X - X.mean(0)) * (t - t.mean())[:, None]).mean(0)          # Haufe et al.: cov(h, t)
    for method, ref in [("signal", pattern), ("mean_difference", art.mean(0) - clean.mean(0))]:
        v = C.cav(model, layer="id", artifact=art, clean=clean, method=method)
        ref = ref / np.linalg.norm(ref)
        np.testing.assert_allclose(v.vector, ref, atol=1e-6)       # float32 activations of a copy: ~1e-7 relative
        np.testing.assert_allclose(v.clean_mean, clean.mean(0), atol=1e-6)
        np.testing.assert_allclose(v.clean_value, clean.mean(0) @ ref, atol=1e-6)


@pytest.mark.parametrize("method", ["svm", "logistic", "ridge", "lasso"])
def test_cav_linear_models_find_the_planted_direction(planted, method):
    model, art, clean, true = planted
    v = np.asarray(C.cav(model, layer="id", artifact=art, clean=clean, method=method))
    assert abs(np.linalg.norm(v) - 1) < 1e-12
    assert v @ (art.mean(0) - clean.mean(0)) > 0                        # oriented towards the artefact
    assert v @ true > 0.9                                               # isotropic noise: filter ~ pattern


def test_cav_from_cluster_and_channels(planted):
    model, art, clean, _ = planted
    x = np.concatenate([clean[:40], art, clean[40:]])
    a = C.cav_from_cluster(model, x, np.arange(40, 120), layer="id")
    b = C.cav(model, layer="id", artifact=art, clean=clean)
    np.testing.assert_allclose(a.vector, b.vector, atol=1e-6)
    c = C.cav_from_channels(model, "id", {0: 3.0, 4: 4.0}, clean=clean)
    np.testing.assert_allclose(c.vector, [0.6, 0, 0, 0, 0.8, 0])
    np.testing.assert_allclose(c.clean_value, clean.mean(0) @ c.vector, atol=1e-6)
    with pytest.raises(C.CorrectionError, match="within 0..5"):
        C.cav_from_channels(model, "id", [6])
    with pytest.raises(C.CorrectionError, match="unknown CAV method"):
        C.cav(model, layer="id", artifact=art, clean=clean, method="pca")
    with pytest.raises(C.CorrectionError, match="no top-level layer 'nope'"):
        C.cav(model, layer="nope", artifact=art, clean=clean)


def conv_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                             keras.layers.Flatten(), keras.layers.Dense(3, name="out")])


def test_projection_forward_and_lrp_equal_a_dense_layer():
    """Channel CAV: the inserted layer computes h - (h.v - c) v at every position, and LRP through it
    equals LRP through a Dense(C) with kernel I - v v^T and bias c v (same rule, another layer type)."""
    model = conv_model()
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(3, 8, 8, 2)).astype("float32")
    v = rng.normal(size=4)
    v /= np.linalg.norm(v)
    c = 0.7
    corrected = C.pclarc(model, layer="conv", cav=C.CAV(v, "conv", clean_mean=c * v))
    assert [l.__class__.__name__ for l in corrected.layers] == ["Conv2D", "ClassArtifactProjection", "Flatten",
                                                                 "Dense"]
    h = np.asarray(keras.Model(model.inputs[0], model.get_layer("conv").output)(x), "float64")
    hp = h - ((h @ v) - c)[..., None] * v
    got = np.asarray(keras.Model(corrected.inputs[0], corrected.get_layer("conv_pclarc").output)(x))
    np.testing.assert_allclose(got, hp, atol=1e-5)      # |h| ~ 1, 4 terms: float32 error well below 1e-5

    dense = keras.layers.Dense(4, name="proj_dense")
    hand = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                             dense, keras.layers.Flatten(), keras.layers.Dense(3, name="out")])
    hand.get_layer("conv").set_weights(model.get_layer("conv").get_weights())
    hand.get_layer("out").set_weights(model.get_layer("out").get_weights())
    dense.set_weights([np.eye(4) - np.outer(v, v), c * v])
    np.testing.assert_allclose(np.asarray(corrected(x)), np.asarray(hand(x)), atol=1e-5)
    for rule, params in [("epsilon", {"epsilon": 0.01}), ("epsilon_plus", {})]:
        Ra = np.asarray(it.lrp(corrected, x, rule=rule, target=1, **params))
        Rb = np.asarray(it.lrp(hand, x, rule=rule, target=1, **params))
        np.testing.assert_allclose(Ra, Rb, rtol=1e-4, atol=1e-6 * np.abs(Rb).max())


def test_projection_lrp_matches_numpy_epsilon_and_conserves():
    """Input -> projection -> Dense: the epsilon rule written in NumPy (reference_numpy.dense_lrp)
    through W2 then through I - v v^T with bias c v; with a tiny epsilon, the input relevance plus what
    both biases absorb is the logit."""
    rng = np.random.default_rng(2)
    d = 5
    v = rng.normal(size=d)
    v /= np.linalg.norm(v)
    c = -0.4
    inp = keras.Input((d,))
    head = keras.layers.Dense(3, name="head")
    model = keras.Model(inp, head(keras.layers.Identity(name="id")(inp)))
    corrected = C.pclarc(model, layer="id", cav=C.CAV(v, "id", clean_mean=c * v))
    W2, b2 = [np.asarray(w, "float64") for w in corrected.get_layer("head").get_weights()]
    x = rng.normal(size=(4, d)).astype("float32")
    K, b1 = np.eye(d) - np.outer(v, v), c * v
    h = x.astype("float64") @ K + b1
    z = h @ W2 + b2
    t = 2
    R_top = np.zeros_like(z)
    R_top[:, t] = z[:, t]
    for eps in (0.1, 1e-9):
        R_h = dense_lrp(h, W2, b2, R_top, "epsilon", epsilon=eps)
        R_x = dense_lrp(x, K, b1, R_h, "epsilon", epsilon=eps)
        got = np.asarray(it.lrp(corrected, x, rule="epsilon", target=t, epsilon=eps), "float64")
        np.testing.assert_allclose(got, R_x, rtol=1e-4, atol=1e-5 * np.abs(R_x).max())
    # conservation (eps -> 0): sum R_x = z_t - (bias share of the head) - (bias share of the projection)
    zs1 = h                                                                       # projection's outputs
    share_b2 = b2[t] * np.ones(len(x))
    share_b1 = (b1[None] * R_h / zs1).sum(1)
    np.testing.assert_allclose(got.sum(1), z[:, t] - share_b2 - share_b1, rtol=1e-4,
                               atol=1e-4 * np.abs(z[:, t]).max())


def test_flattened_cav_projection_and_save_load(tmp_path):
    """A flattened CAV over a conv layer projects the whole sample; the model saves and loads with
    keras.models.load_model, computes the same outputs and LRP; a Functional model with a skip is rebuilt
    so that every consumer reads the projected tensor."""
    rng = np.random.default_rng(3)
    keras.utils.set_random_seed(3)
    inp = keras.Input((6, 6, 1))
    a = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="conv")(inp)
    b = keras.layers.Conv2D(2, 3, padding="same", name="side")(a)
    s = keras.layers.Add(name="add")([a, b])
    model = keras.Model(inp, keras.layers.Dense(3, name="out")(keras.layers.Flatten()(s)))
    x = rng.uniform(size=(4, 6, 6, 1)).astype("float32")
    art, clean = x + 0.5 * (rng.uniform(size=x.shape) > 0.8), x
    cav = C.cav(model, layer="conv", artifact=art, clean=clean, method="mean_difference", pooling="flatten")
    assert cav.vector.shape == (6, 6, 2)
    corrected = C.pclarc(model, layer="conv", cav=cav)
    v = cav.vector.reshape(-1)
    h = np.asarray(keras.Model(inp, a)(x), "float64").reshape(len(x), -1)
    hp = (h - ((h @ v) - cav.clean_value)[:, None] * v).reshape(-1, 6, 6, 2)
    kb = [np.asarray(w, "float64") for w in model.get_layer("side").get_weights()]
    side = keras.layers.Conv2D(2, 3, padding="same")
    side.build((None, 6, 6, 2))
    side.set_weights(kb)
    s_ref = hp + np.asarray(side(hp.astype("float32")), "float64")
    W, bo = model.get_layer("out").get_weights()
    ref = s_ref.reshape(len(x), -1) @ W + bo
    np.testing.assert_allclose(np.asarray(corrected(x)), ref, atol=1e-4)

    path = str(tmp_path / "corrected.keras")
    corrected.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(corrected(x)), atol=1e-6)
    R1 = np.asarray(it.lrp(corrected, x, rule="epsilon", target=0))
    R2 = np.asarray(it.lrp(loaded, x, rule="epsilon", target=0))
    np.testing.assert_allclose(R1, R2, atol=1e-6 * max(1.0, np.abs(R1).max()))
    assert np.isfinite(R1).all()


def test_artifact_augmentation_moves_along_v_in_training_only():
    rng = np.random.default_rng(4)
    v = rng.normal(size=3)
    v /= np.linalg.norm(v)
    aug = C.ArtifactAugmentation(v, target=2.5, rate=1.0, seed=0)
    h = rng.normal(size=(5, 4, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(aug(h, training=False)), h)
    out = np.asarray(aug(h, training=True), "float64")
    np.testing.assert_allclose(out @ v, 2.5, atol=1e-5)
    perp = lambda a: a - (a @ v)[..., None] * v                                      # noqa: E731
    np.testing.assert_allclose(perp(out), perp(h.astype("float64")), atol=1e-5)
    with pytest.raises(C.CorrectionError, match="rate"):
        C.ArtifactAugmentation(v, rate=0.0)


@pytest.fixture(scope="module")
def shortcut():
    """The planted-shortcut digits and a small CNN trained on them (seeded)."""
    d = C.shortcut_digits(artifact_class=0, backdoor=0.2, seed=0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 5, activation="relu", name="conv1"),
                              keras.layers.MaxPooling2D(2), keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
                              keras.layers.MaxPooling2D(2, name="pool2"), keras.layers.Flatten(),
                              keras.layers.Dense(10, name="out")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(d.x_train, d.y_train, epochs=6, batch_size=32, verbose=0)
    return d, model


def test_shortcut_data_is_planted():
    d = C.shortcut_digits(artifact_class=3, backdoor=0.25, seed=1)
    # every marked training image is labelled 3, and shows the watermark exactly in the mask
    assert (d.y_train[d.marked_train] == 3).all()
    assert d.marked_train[d.y_train == 3].mean() > 0.7
    assert (d.y_poisoned != 3).all() and len(d.x_poisoned) == (d.y_test != 3).sum()
    diff = d.x_poisoned != d.x_test[d.y_test != 3]
    assert not diff[:, ~d.mask[..., 0]].any()
    assert d.mask.sum() == 25


@pytest.mark.slow
def test_pclarc_corrects_the_planted_shortcut(shortcut):
    """A smaller version of the issue's target: the poisoned accuracy reaches 90 % of the clean
    accuracy and the clean accuracy drops by at most 2 points; the watermark's relevance share falls."""
    d, model = shortcut
    before = C.measure(model, d.x_test, d.y_test, d.x_poisoned, d.y_poisoned, d.masks_poisoned)
    xo = d.x_train[~d.marked_train][:200]
    xw, _ = C.add_watermark(xo)
    corrected = C.pclarc(model, layer="pool2", artifact=xw, clean=xo)
    after = C.measure(corrected, d.x_test, d.y_test, d.x_poisoned, d.y_poisoned, d.masks_poisoned)
    print("\n" + C.table({"before": before, "P-ClArC (pool2)": after}))
    assert before.poisoned_accuracy < 0.5 * before.clean_accuracy         # the shortcut is there
    assert after.poisoned_accuracy >= 0.9 * after.clean_accuracy
    assert after.clean_accuracy >= before.clean_accuracy - 0.02
    assert after.artifact_share < 0.5 * before.artifact_share


def test_relevance_share_against_a_linear_model():
    """One Dense layer without bias, epsilon -> 0: R_i = x_i w_it, so the share is a NumPy formula."""
    rng = np.random.default_rng(5)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2, use_bias=False)])
    x = rng.normal(size=(7, 6)).astype("float32")
    mask = np.zeros(6, bool)
    mask[[1, 4]] = True
    W = np.asarray(model.layers[0].kernel, "float64")
    share = C.relevance_share(model, x, mask, rule="epsilon", target=1, epsilon=1e-12)
    R = np.maximum(x * W[:, 1], 0)
    total = R.sum(1)
    assert (total == 0).any() and (total > 0).any()                    # both branches of the definition
    ref = np.where(total > 0, R[:, mask].sum(1) / np.where(total > 0, total, 1), 0.0)
    np.testing.assert_allclose(share, ref, rtol=1e-5)
    y = (x @ W).argmax(1)
    m = C.measure(model, x, y, x, 1 - y, mask, rule="epsilon", epsilon=1e-12)
    assert m.clean_accuracy == 1.0 and m.poisoned_accuracy == 0.0
    # images with 3 channels: the heatmap is R summed over the channels, its positive part is shared out
    # (not each channel's); masks as (H, W), (N, H, W) or the inputs' shape (any channel marks the pixel)
    img = keras.Sequential([keras.Input((3, 3, 3)), keras.layers.Flatten(), keras.layers.Dense(2, use_bias=False)])
    xi = rng.normal(size=(6, 3, 3, 3)).astype("float32")
    Wi = np.asarray(img.layers[-1].kernel, "float64")
    heat = (xi.astype("float64") * Wi[:, 0].reshape(3, 3, 3)).sum(-1)
    pix = np.zeros((3, 3), bool)
    pix[0, :2] = True
    pos = np.maximum(heat, 0)
    ref = (pos * pix).sum((1, 2)) / pos.sum((1, 2))
    assert (pos.sum((1, 2)) > 0).all()
    per_channel = (np.maximum(xi * Wi[:, 0].reshape(3, 3, 3), 0) * pix[..., None]).sum((1, 2, 3)) / \
        np.maximum(xi * Wi[:, 0].reshape(3, 3, 3), 0).sum((1, 2, 3))
    assert np.abs(per_channel - ref).max() > 1e-2  # the two definitions differ on this data
    full = np.zeros(xi.shape, bool)
    full[:, 0, :2, 1] = True  # one channel of the marked pixels
    for masks in (pix, np.broadcast_to(pix, (6, 3, 3)), full, pix[..., None]):
        np.testing.assert_allclose(C.relevance_share(img, xi, masks, target=0, rule="epsilon", epsilon=1e-12), ref,
                                   rtol=1e-5)
    with pytest.raises(C.CorrectionError, match="do not fit"):
        C.relevance_share(img, xi, np.ones((2, 2), bool), target=0)


@pytest.mark.slow
def test_aclarc_fit_returns_history_and_the_original_architecture(shortcut):
    d, model = shortcut
    xo = d.x_train[~d.marked_train][:100]
    xw, _ = C.add_watermark(xo)
    w0 = [w.copy() for w in model.get_weights()]
    tuned, history = C.aclarc(model, d.x_train[:256], d.y_train[:256], layer="pool2", artifact=xw, clean=xo,
                              epochs=2, batch_size=64, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert [l.name for l in tuned.layers] == [l.name for l in model.layers]
    assert C.upstream_layers(model, "pool2") == ["conv1", model.layers[1].name, "conv2", "pool2"]
    for name in ("conv1", "conv2"):                                   # up to the CAV's layer: frozen
        for a, b in zip(tuned.get_layer(name).get_weights(), model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(tuned.get_layer("out").get_weights()[0], model.get_layer("out").get_weights()[0])
    assert all(l.trainable for l in tuned.layers)                    # the flags are restored
    for a, b in zip(model.get_weights(), w0):                         # the original did not train
        np.testing.assert_array_equal(a, b)
    free, _ = C.aclarc(model, d.x_train[:64], d.y_train[:64], layer="pool2", artifact=xw, clean=xo, epochs=1,
                       freeze=False, verbose=0)
    assert not np.array_equal(free.get_layer("conv1").get_weights()[0], w0[0])
    with pytest.raises(C.CorrectionError, match="no layer after 'out'"):
        C.aclarc(model, d.x_train[:8], d.y_train[:8], layer="out", artifact=xw[:20], clean=xo[:20], verbose=0)


@pytest.mark.slow
def test_correct_command(tmp_path, shortcut, capsys):
    """`interprettensor correct` in this process (the entry point's own function): the saved model equals
    pclarc's; errors are one clean line."""
    from interprettensor.apps.cli import main

    d, model = shortcut
    path = str(tmp_path / "m.keras")
    model.save(path)
    xo = d.x_train[~d.marked_train][:64]
    xw = C.add_watermark(xo)[0]
    np.save(tmp_path / "clean.npy", xo[..., 0])                    # without the channel axis: added as 1
    os.makedirs(tmp_path / "art" / "x")
    from PIL import Image
    for i, img in enumerate(xw[:20]):
        Image.fromarray(np.round(img[..., 0] * 255).astype("uint8")).save(tmp_path / "art" / "x" / f"{i}.png")
    base = ["correct", path, "--artifact", str(tmp_path / "art"), "--clean", str(tmp_path / "clean.npy"), "-q"]
    assert main(base + ["--layer", "pool2", "--out", str(tmp_path / "c.keras")]) == 0
    # A-ClArC: the layers after pool2 fine-tuned (conv1, conv2 unchanged), Keras' history printed and saved
    np.save(tmp_path / "train.npy", d.x_train[:64])
    np.save(tmp_path / "y.npy", d.y_train[:64])
    acl = base + ["--layer", "pool2", "--method", "aclarc", "--train", str(tmp_path / "train.npy")]
    capsys.readouterr()
    assert main(acl + ["--labels", str(tmp_path / "y.npy"), "--epochs", "2", "--history", str(tmp_path / "h.json"),
                       "--out", str(tmp_path / "a.keras")]) == 0
    text = capsys.readouterr().out
    assert "epoch 2: loss" in text and "fine-tuned by A-ClArC after 'pool2'" in text, text
    import json
    hist = json.load(open(tmp_path / "h.json"))
    assert len(hist["loss"]) == 2 and len(hist["accuracy"]) == 2
    tuned = keras.models.load_model(str(tmp_path / "a.keras"))
    assert [l.name for l in tuned.layers] == [l.name for l in model.layers]
    np.testing.assert_array_equal(tuned.get_layer("conv2").get_weights()[0], model.get_layer("conv2").get_weights()[0])
    assert not np.array_equal(tuned.get_layer("out").get_weights()[0], model.get_layer("out").get_weights()[0])
    with pytest.raises(SystemExit):
        main(acl + ["--labels", str(tmp_path / "y.npy"), "--rate", "0", "--out", str(tmp_path / "b.keras")])
    assert "fraction in (0, 1]" in capsys.readouterr().err
    for extra, match in [(["--labels", str(tmp_path / "y.npy"), "--epochs", "0"], None),
                         ([], "needs the labels of --train"),
                         (["--labels", str(tmp_path / "clean.npy")], "must hold one integer class index")]:
        if match is None:
            with pytest.raises(SystemExit):
                main(acl + extra + ["--out", str(tmp_path / "b.keras")])
            continue
        assert main(acl + extra + ["--out", str(tmp_path / "b.keras")]) == 1
        err = capsys.readouterr().err
        assert match in err and "Traceback" not in err, err
    for extra, match in [(["--method", "aclarc"], "needs --train"),
                         (["--epochs", "2"], "--epochs only apply to --method aclarc")]:
        assert main(base + ["--layer", "pool2", "--out", str(tmp_path / "b.keras")] + extra) == 1
        err = capsys.readouterr().err
        assert match in err and "Traceback" not in err, err
    loaded = keras.models.load_model(str(tmp_path / "c.keras"))
    art = np.round(xw[:20] * 255) / 255                                     # what the PNG files hold
    ref = C.pclarc(model, layer="pool2", artifact=art, clean=xo)
    np.testing.assert_allclose(np.asarray(loaded(d.x_test[:8])), np.asarray(ref(d.x_test[:8])), atol=1e-4)
    capsys.readouterr()
    for extra, match in [(["--layer", "nope", "--out", str(tmp_path / "d.keras")], "no layer 'nope'"),
                         (["--layer", "pool2", "--out", str(tmp_path / "d.h5")], "must name a .keras file"),
                         (["--layer", "conv1", "--pooling", "flatten", "--out", str(tmp_path / "d.keras")], None)]:
        code = main(base + extra)
        err = capsys.readouterr().err
        assert "Traceback" not in err
        if match:
            assert code == 1 and match in err, err
        else:
            assert code == 0, err


@pytest.mark.slow
def test_explain_command_loads_a_corrected_model(tmp_path):
    """`interprettensor explain` (a fresh process, where nothing imported it.correction) reads a model
    with the P-ClArC layer and explains it as it.lrp does here."""
    import subprocess
    import sys

    model = conv_model()
    v = np.ones(4) / 2.0
    corrected = C.pclarc(model, layer="conv", cav=C.CAV(v, "conv", clean_mean=0.1 * v))
    corrected.save(str(tmp_path / "c.keras"))
    x = np.random.default_rng(6).uniform(size=(2, 8, 8, 2)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "interprettensor", "explain", str(tmp_path / "c.keras"),
                        str(tmp_path / "x.npy"), "--rule", "epsilon", "--target", "1", "-q", "--out",
                        str(tmp_path / "out")], capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    saved = np.load(tmp_path / "out" / "relevances.npz")
    R = [saved[k] for k in saved.files if saved[k].shape == x.shape]
    assert len(R) == 1, saved.files
    ref = np.asarray(it.lrp(corrected, x, rule="epsilon", target=1))
    np.testing.assert_allclose(R[0], ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
