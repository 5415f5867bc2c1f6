"""``interprettensor explain`` at the edges: one relevances.npz format with and without shards, pictures
for feature vectors and sequences, NaN/inf inputs, box rules' bounds, epsilon 0."""

import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

import interprettensor as it
from interprettensor.apps import cli

KEYS = {"relevance", "indices", "targets", "outputs", "valid", "names"}


def run(capsys, *args):
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def is_png(path):
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return False
    with Image.open(path) as im:
        im.verify()
        return im.size[0] > 50 and im.size[1] > 50


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """Small models for images (8x8x1), feature vectors (12,), sequences (20, 3), and inputs for them."""
    d = tmp_path_factory.mktemp("explain")
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.Flatten(),
                      keras.layers.Dense(3)]).save(d / "cnn.keras")
    keras.Sequential([keras.Input((12,)), keras.layers.Dense(6, activation="relu"),
                      keras.layers.Dense(3)]).save(d / "mlp.keras")
    keras.Sequential([keras.Input((20, 3)), keras.layers.Conv1D(4, 3, activation="relu"), keras.layers.Flatten(),
                      keras.layers.Dense(2)]).save(d / "seq.keras")
    np.save(d / "x.npy", rng.random((3, 8, 8, 1)).astype(np.float32))
    np.save(d / "f.npy", rng.random((4, 12)).astype(np.float32))
    np.save(d / "s.npy", rng.normal(size=(3, 20, 3)).astype(np.float32))
    (d / "imgs").mkdir()
    for i in range(2):
        Image.fromarray((rng.random((8, 8)) * 255).astype("uint8")).save(d / "imgs" / f"im{i}.png")
    bad = rng.random((3, 8, 8, 1)).astype(np.float32)
    bad[1, 2, 2, 0] = np.nan
    np.save(d / "bad.npy", bad)
    return d


def test_one_format_with_and_without_shards(d, capsys, monkeypatch):
    monkeypatch.chdir(d)
    assert run(capsys, "explain", "cnn.keras", "x.npy", "imgs", "--out", "flat", "--no-png", "-q")[0] == 0
    assert run(capsys, "explain", "cnn.keras", "x.npy", "imgs", "--out", "sharded", "--shard-size", "2",
               "--no-png", "-q")[0] == 0
    with np.load(d / "flat" / "relevances.npz") as z:
        assert set(z.files) == KEYS
    with np.load(d / "sharded" / "shard-00000.npz") as z:
        assert set(z.files) == KEYS
    a, b = it.load_relevances("flat"), it.load_relevances("sharded")
    assert set(a) == set(b) == KEYS
    for k in KEYS:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        if a[k].dtype.kind == "f":
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert list(a["names"]) == ["x_0", "x_1", "x_2", "im0", "im1"] and list(a["indices"]) == [0, 1, 2, 3, 4]
    model = keras.models.load_model(d / "cnn.keras")
    x = np.load(d / "x.npy")
    R, logits = it.Explainer(model)(x, return_output=True)
    np.testing.assert_allclose(a["relevance"][:3], R, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(a["outputs"][:3], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a["targets"][:3], logits.argmax(-1))
    # a folder holding relevances.npz, and the file itself
    assert list(it.load_relevances(str(d / "flat" / "relevances.npz"))["names"]) == list(a["names"])


@pytest.mark.parametrize("model,data,suffix,words", [
    ("mlp.keras", "f.npy", "bars", "bar charts of feature relevance (NAME_bars.png)"),
    ("seq.keras", "s.npy", "strip", "relevance strips, one row per channel over time (NAME_strip.png)"),
])
@pytest.mark.parametrize("sharded", [False, True])
def test_pictures_for_vectors_and_sequences(d, capsys, monkeypatch, model, data, suffix, words, sharded):
    monkeypatch.chdir(d)
    out = f"pics_{suffix}_{sharded}"
    code, stdout, err = run(capsys, "explain", model, data, "--out", out, "-q",
                            *(["--shard-size", "2"] if sharded else []))
    assert code == 0, err
    n = len(np.load(data))
    stem = data[:-4]
    for i in range(n):
        assert is_png(d / out / f"{stem}_{i}_{suffix}.png"), i
    assert sorted(f for f in os.listdir(d / out) if f.endswith(".png")) == \
        sorted(f"{stem}_{i}_{suffix}.png" for i in range(n))
    assert f"{n} {words} in {out}" in stdout, stdout
    assert "heatmap" not in stdout


def test_images_message_counts_the_files(d, capsys, monkeypatch):
    monkeypatch.chdir(d)
    code, stdout, err = run(capsys, "explain", "cnn.keras", "imgs", "--out", "img_pics", "-q")
    assert code == 0, err
    assert stdout.strip() == (f"explained 2 input(s) with epsilon: 4 heatmap and overlay PNGs (NAME_heatmap.png, "
                              f"NAME_overlay.png) in img_pics, and {os.path.join('img_pics', 'relevances.npz')}")
    assert sorted(f for f in os.listdir(d / "img_pics") if f.endswith(".png")) == [
        "im0_heatmap.png", "im0_overlay.png", "im1_heatmap.png", "im1_overlay.png"]
    code, stdout, err = run(capsys, "explain", "cnn.keras", "imgs", "--out", "img_nopng", "--no-png", "-q")
    assert "no pictures (--no-png)" in stdout and not [f for f in os.listdir(d / "img_nopng") if f.endswith(".png")]


def test_nonfinite_inputs(d, capsys, monkeypatch):
    monkeypatch.chdir(d)
    code, out, err = run(capsys, "explain", "cnn.keras", "x.npy", "bad.npy", "--batch-size", "3", "--out", "nan",
                         "-q")
    assert code == 1
    assert "error: input(s) bad_1 hold NaN or infinite values" in err and "--skip-nonfinite" in err, err
    assert "wrote the outputs of the first 3 input(s)" in err  # x.npy's batch is kept
    assert list(it.load_relevances("nan")["names"]) == ["x_0", "x_1", "x_2"]

    code, out, err = run(capsys, "explain", "cnn.keras", "x.npy", "bad.npy", "--batch-size", "3", "--out", "nan2",
                         "--skip-nonfinite", "-q")
    assert code == 0, err
    assert "explained 5 input(s) with epsilon, skipped 1 with NaN or infinite values" in out, out
    got = it.load_relevances("nan2")
    np.testing.assert_array_equal(got["valid"], [True, True, True, True, False, True])
    assert np.isfinite(got["relevance"]).all() and (got["relevance"][4] == 0).all() and got["targets"][4] == -1
    assert not (d / "nan2" / "bad_1_heatmap.png").exists() and (d / "nan2" / "bad_2_heatmap.png").exists()

    # sharded: the error names the input and keeps the finished shards; --resume --skip-nonfinite goes on
    code, out, err = run(capsys, "explain", "cnn.keras", "x.npy", "bad.npy", "--shard-size", "2", "--batch-size",
                         "2", "--out", "nan3", "-q")
    assert code == 1
    assert "sample(s) 4 (files: bad_1) hold NaN or infinite values" in err and "--skip-nonfinite" in err, err
    assert "shards 0..1 are complete" in err
    code, out, err = run(capsys, "explain", "cnn.keras", "x.npy", "bad.npy", "--out", "nan3", "--resume",
                         "--skip-nonfinite", "-q")
    assert code == 0, err
    assert "skipped 1 with NaN or infinite values" in out
    np.testing.assert_array_equal(it.load_relevances("nan3")["valid"], [True, True, True, True, False, True])


def _images(d):
    return np.stack([cli.load_image(str(d / "imgs" / f"im{i}.png"), (None, 8, 8, 1), "auto", (0.0, 1.0), False)
                     for i in range(2)])


def test_box_rules_get_the_image_range(d, capsys, monkeypatch):
    monkeypatch.chdir(d)
    model = keras.models.load_model(d / "cnn.keras")
    x = _images(d)
    code, out, err = run(capsys, "explain", "cnn.keras", "imgs", "--rule", "epsilon_gamma_box", "--out", "box01",
                         "--no-png")
    assert code == 0, err
    assert "--low 0 --high 1" in out
    np.testing.assert_allclose(it.load_relevances("box01")["relevance"],
                               it.lrp(model, x, rule="epsilon_gamma_box", low=0.0, high=1.0), rtol=1e-5, atol=1e-7)
    code, out, err = run(capsys, "explain", "cnn.keras", "imgs", "--rule", "epsilon_gamma_box", "--input-range",
                         "-1", "1", "--out", "box11", "--no-png", "-q")
    assert code == 0, err
    np.testing.assert_allclose(it.load_relevances("box11")["relevance"],
                               it.lrp(model, 2 * x - 1, rule="epsilon_gamma_box", low=-1.0, high=1.0),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("args,match", [
    (("x.npy", "--rule", "epsilon_gamma_box"), "needs the range of the input values"),
    (("x.npy", "--rule", "bounded_deep_taylor"), "give --low and --high"),
    (("imgs", "x.npy", "--rule", "zbox"), "x.npy"),
    (("x.npy", "--rule", "epsilon_gamma_box", "--low", "1", "--high", "0"),
     "--low/--high: the low value must be below the high value, got 1 and 0"),
    (("x.npy", "--rule", "epsilon_gamma_box", "--low", "0"), "give both --low and --high"),
    (("imgs", "--input-range", "1", "1"), "--input-range: the low value must be below the high value"),
])
def test_bounds_errors(d, capsys, monkeypatch, args, match):
    monkeypatch.chdir(d)
    code, out, err = run(capsys, "explain", "cnn.keras", *args, "--out", "bad_bounds", "-q")
    assert code == 1 and err.startswith("error: ") and match in err, err
    assert not (d / "bad_bounds" / "relevances.npz").exists()


def test_npy_with_box_rule_and_bounds(d, capsys, monkeypatch):
    monkeypatch.chdir(d)
    code, out, err = run(capsys, "explain", "cnn.keras", "x.npy", "--rule", "epsilon_gamma_box", "--low", "0",
                         "--high", "1", "--out", "boxnpy", "--no-png", "-q")
    assert code == 0, err
    model = keras.models.load_model(d / "cnn.keras")
    np.testing.assert_allclose(it.load_relevances("boxnpy")["relevance"],
                               it.lrp(model, np.load("x.npy"), rule="epsilon_gamma_box", low=0.0, high=1.0),
                               rtol=1e-5, atol=1e-7)


def test_epsilon_zero_gives_finite_relevance(d, capsys, monkeypatch):
    """epsilon=0 is the z-rule's stabiliser (the engine's part); the command must not write NaN and exit 0."""
    monkeypatch.chdir(d)
    x = np.zeros((2, 8, 8, 1), np.float32)  # all-zero inputs: every pre-activation of the first layer is its bias
    x[1, 2:5, 2:5] = 1.0
    np.save("zeros.npy", x)
    code, out, err = run(capsys, "explain", "cnn.keras", "zeros.npy", "x.npy", "--rule", "epsilon", "--epsilon", "0",
                         "--out", "eps0", "-q")
    assert code == 0, err
    got = it.load_relevances("eps0")
    assert np.isfinite(got["relevance"]).all()
    assert np.isfinite(got["outputs"]).all()


def test_toolbox_presets_are_no_box_rules(d, capsys, monkeypatch):
    """'toolbox_flat' contains 'box' but takes no bounds: explain and evaluate must not add any."""
    assert cli.needs_box("epsilon_gamma_box") and cli.needs_box("zbox") and cli.needs_box("my_box_rule")
    assert not cli.needs_box("toolbox_flat") and not cli.needs_box("toolbox_epsilon")
    assert it.evaluate._needs_box("bounded_deep_taylor") and not it.evaluate._needs_box("toolbox_ww")
    monkeypatch.chdir(d)
    code, out, err = run(capsys, "explain", "cnn.keras", "x.npy", "--rule", "toolbox_flat", "--out", "tbx", "-q")
    assert code == 0, err
    code, out, err = run(capsys, "evaluate", "cnn.keras", "x.npy", "--methods", "toolbox_flat", "--steps", "2",
                         "--out", "tbx_ev", "-q")
    assert code == 0, err


def _class_folders(root, classes, per_class=2, seed=1):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray((rng.random((8, 8)) * 255).astype("uint8")).save(root / c / f"im{i}.png")
    return str(root)


@pytest.mark.parametrize("sharded", [False, True])
def test_labels_from_class_subfolders(d, capsys, monkeypatch, tmp_path, sharded):
    monkeypatch.chdir(tmp_path)
    extra = ["--shard-size", "3"] if sharded else []
    _class_folders(tmp_path / "pets", ["dog", "cat"])  # names: sorted into 0 = cat, 1 = dog
    _class_folders(tmp_path / "digits", ["7", "2"])  # integers: the classes themselves
    code, out, err = run(capsys, "explain", str(d / "cnn.keras"), "pets", "--out", "p", "--no-png", "-q", *extra)
    assert code == 0, err
    assert "classes from the subfolder names: 0 = cat, 1 = dog" in out
    assert json.load(open("p/classes.json")) == {"classes": {"0": "cat", "1": "dog"}}
    got = it.load_relevances("p")
    assert got["labels"].dtype == np.int64
    np.testing.assert_array_equal(got["labels"], [0, 0, 1, 1])
    assert list(got["names"]) == ["cat_im0", "cat_im1", "dog_im0", "dog_im1"]
    np.testing.assert_array_equal(got["targets"], got["outputs"].argmax(-1))  # still the predicted class
    assert run(capsys, "explain", str(d / "cnn.keras"), "digits", "--out", "n", "--no-png", "-q", *extra)[0] == 0
    np.testing.assert_array_equal(it.load_relevances("n")["labels"], [2, 2, 7, 7])
    assert not os.path.exists("n/classes.json")


@pytest.mark.parametrize("sharded", [False, True])
def test_labels_file(d, capsys, monkeypatch, tmp_path, sharded):
    monkeypatch.chdir(tmp_path)
    extra = ["--shard-size", "2"] if sharded else []
    inputs = [str(d / "x.npy"), str(d / "imgs")]  # 3 + 2 inputs, in this order
    with open("labels.txt", "w") as f:
        f.write("2\n0\n-1\n1\n\n2\n")
    np.save("labels.npy", np.array([1, 1, 0, 2, -1]))
    for i, (labels, want) in enumerate((("labels.txt", [2, 0, -1, 1, 2]), ("labels.npy", [1, 1, 0, 2, -1]))):
        code, _, err = run(capsys, "explain", str(d / "cnn.keras"), *inputs, "--labels", labels, "--out", f"o{i}",
                           "--no-png", "-q", *extra)
        assert code == 0, err
        got = it.load_relevances(f"o{i}")
        assert got["labels"].dtype == np.int64
        np.testing.assert_array_equal(got["labels"], want)
        np.testing.assert_array_equal(got["targets"], got["outputs"].argmax(-1))
    if sharded:  # stored in every shard; the identity names them
        with np.load("o0/shard-00000.npz") as z:
            np.testing.assert_array_equal(z["labels"], [2, 0])
        assert json.load(open("o0/manifest.json"))["identity"]["stored"] == ["labels"]
    np.save("short.npy", np.array([1, 2, 0]))
    code, _, err = run(capsys, "explain", str(d / "cnn.keras"), *inputs, "--labels", "short.npy", "--out", "bad",
                       "--no-png", "-q", *extra)
    assert code == 1 and "error: labels file 'short.npy' has 3 labels, but there are 5 inputs" in err, err
    with open("words.txt", "w") as f:
        f.write("1\ncat\n")
    code, _, err = run(capsys, "explain", str(d / "cnn.keras"), *inputs, "--labels", "words.txt", "--out", "bad",
                       "--no-png", "-q", *extra)
    assert code == 1 and "line 2: 'cat' is not an integer class index" in err, err
