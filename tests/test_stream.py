"""Compiled reuse, automatic batching and resumable sharded runs (``it.explain_dataset``, ``explain --shard-size``)."""

import errno
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import interprettensor as it
from interprettensor.apps import cli
from interprettensor.io import shards as shards_mod
from interprettensor.io.shards import StreamError


def small_cnn(seed=0, classes=5):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                             keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                             keras.layers.Dense(classes)], name=f"cnn{seed}")


@pytest.fixture(scope="module")
def model():
    return small_cnn()


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).random((23, 8, 8, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def reference(model, data):
    return it.Explainer(model, "epsilon")(data, return_output=True)


def shards(out):
    return sorted(f for f in os.listdir(out) if f.startswith("shard-"))


def same_files(a, b):
    assert shards(a) == shards(b)
    for f in shards(a):
        with np.load(os.path.join(a, f)) as x, np.load(os.path.join(b, f)) as y:
            assert x.files == y.files
            for k in x.files:
                if x[k].dtype.kind == "f":  # a resumed run's first batch is shorter: float rounding may differ
                    np.testing.assert_allclose(x[k], y[k], rtol=1e-5, atol=1e-6, err_msg=f"{f}:{k}")
                else:
                    np.testing.assert_array_equal(x[k], y[k], err_msg=f"{f}:{k}")
    ma, mb = (json.load(open(os.path.join(d, "manifest.json"))) for d in (a, b))
    assert ma == mb


# ------------------------------------------------------------------ compiled reuse and batching
def test_no_retracing_on_repeated_calls(model, data):
    e = it.Explainer(model, "epsilon_gamma_box", low=0.0, high=1.0)
    first = e(data[:5])
    for n in (5, 3, 11, 1):
        e(data[:n])
        e(data[:n], target=2)
    assert e.trace_count == 1
    np.testing.assert_array_equal(e(data[:5]), first)
    assert e.trace_count == 1


def test_automatic_batching_equals_one_batch(model, data):
    e = it.Explainer(model, "alphabeta")
    whole = e(data)
    np.testing.assert_allclose(e(data, batch_size=4), whole, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(it.Explainer(model, "alphabeta", batch_size=7)(data), whole, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(it.lrp(model, data, "alphabeta", batch_size=5), whole, rtol=1e-5, atol=1e-7)
    assert e.trace_count == 1


def test_compiled_hook_is_the_per_batch_function(model, data, reference):
    e = it.Explainer(model, "epsilon")
    fn = e.compiled([tf.TensorSpec((None, 8, 8, 1), tf.float32)])
    rel, _, out, model_out = fn((tf.constant(data),), tf.fill((len(data),), -1))
    np.testing.assert_allclose(rel[0].numpy(), reference[0], rtol=1e-5, atol=1e-7)
    assert fn is e.compiled([tf.constant(data[:2])]) and e.trace_count == 1


# ------------------------------------------------------------------ explain_dataset
def test_array_run_equals_explainer(model, data, reference, tmp_path):
    res = it.explain_dataset(model, data, out=str(tmp_path), shard_size=5, batch_size=4, progress=False)
    assert (res.n_samples, res.shards, res.skipped, res.computed) == (23, 5, 0, 5)
    assert res.explainer.trace_count == 1  # 6 batches, the last one shorter: one trace
    assert shards(tmp_path) == [f"shard-{k:05d}.npz" for k in range(5)]
    got = it.load_relevances(str(tmp_path))
    np.testing.assert_allclose(got["relevance"], reference[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(got["indices"], np.arange(23))
    np.testing.assert_array_equal(got["targets"], reference[1].argmax(-1))
    np.testing.assert_allclose(got["outputs"], reference[1], rtol=1e-5, atol=1e-6)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    # a finished run is not recomputed
    again = it.explain_dataset(model, data, out=str(tmp_path), shard_size=5, batch_size=4, progress=False)
    assert (again.skipped, again.computed, again.n_samples) == (5, 0, 23)


@pytest.mark.parametrize("form", ["samples", "batches", "onehot"])
def test_tf_data_with_labels(model, data, tmp_path, form):
    labels = np.arange(23) % 5
    y = np.eye(5, dtype=np.float32)[labels] if form == "onehot" else labels
    ds = tf.data.Dataset.from_tensor_slices((data, y))
    if form != "samples":
        ds = ds.batch(6)
    it.explain_dataset(model, ds, out=str(tmp_path), shard_size=8, batch_size=5, progress=False)
    got = it.load_relevances(str(tmp_path))
    np.testing.assert_array_equal(got["targets"], labels)
    np.testing.assert_allclose(got["relevance"], it.Explainer(model)(data, target=labels), rtol=1e-5, atol=1e-7)
    # target= overrides the labels
    it.explain_dataset(model, ds, out=str(tmp_path / "p"), target="predicted", shard_size=8, progress=False)
    got = it.load_relevances(str(tmp_path / "p"), keys=["targets"])
    np.testing.assert_array_equal(got["targets"], it.Explainer(model)(data, return_output=True)[1].argmax(-1))


def test_interrupted_and_resumed_gives_the_same_files(model, data, tmp_path, monkeypatch):
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    it.explain_dataset(model, data, out=full, shard_size=5, batch_size=3, progress=False)

    calls = []
    real = shards_mod.write_npz

    def killed_at_shard_3(path, arrays):
        calls.append(path)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the process dies while writing shard 3
        real(path, arrays)

    monkeypatch.setattr(shards_mod, "write_npz", killed_at_shard_3)
    with pytest.raises(KeyboardInterrupt):
        it.explain_dataset(model, data, out=cut, shard_size=5, batch_size=3, progress=False)
    monkeypatch.setattr(shards_mod, "write_npz", real)
    assert shards(cut) == shards(full)[:3]
    assert not [f for f in os.listdir(cut) if f.endswith(".tmp")]
    written = []
    res = it.explain_dataset(model, data, out=cut, shard_size=5, batch_size=3, progress=False,
                             on_shard=lambda k, a: written.append(k))
    assert written == [3, 4] and (res.skipped, res.computed) == (3, 2)
    same_files(full, cut)


def test_shard_written_but_not_in_manifest_is_kept(model, data, tmp_path, monkeypatch):
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    it.explain_dataset(model, data, out=full, shard_size=5, progress=False)
    real = shards_mod.RunState.commit

    def killed_after_shard_file(self):
        if len(self.shards) == 3:
            raise KeyboardInterrupt  # shard 2's file is on disk, the manifest does not list it yet
        real(self)

    monkeypatch.setattr(shards_mod.RunState, "commit", killed_after_shard_file)
    with pytest.raises(KeyboardInterrupt):
        it.explain_dataset(model, data, out=cut, shard_size=5, progress=False)
    monkeypatch.setattr(shards_mod.RunState, "commit", real)
    written = []
    res = it.explain_dataset(model, data, out=cut, shard_size=5, progress=False,
                             on_shard=lambda k, a: written.append(k))
    assert written == [3, 4] and res.skipped == 3
    same_files(full, cut)


def test_hard_kill_in_a_subprocess_then_resume(model, data, tmp_path):
    """A real kill (os._exit while shard 2 is being produced), then a resumed run in this process."""
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", data)
    it.explain_dataset(model, data, out=full, shard_size=5, batch_size=4, progress=False)
    script = textwrap.dedent(f"""
        import os, numpy as np, keras, interprettensor as it
        m = keras.models.load_model({str(tmp_path / 'm.keras')!r})
        x = np.load({str(tmp_path / 'x.npy')!r})
        def die(k, arrays):
            if k == 2:
                os._exit(3)
        it.explain_dataset(m, x, out={cut!r}, shard_size=5, batch_size=4, progress=False, on_shard=die)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert shards(cut) == shards(full)[:2]
    res = it.explain_dataset(keras.models.load_model(tmp_path / "m.keras"), data, out=cut, shard_size=5,
                             batch_size=4, progress=False)
    assert (res.skipped, res.computed) == (2, 3)
    same_files(full, cut)


# ------------------------------------------------------------------ bad input
def test_folder_of_another_model_or_rule_is_refused(model, data, tmp_path):
    out = str(tmp_path)
    it.explain_dataset(model, data[:12], out=out, shard_size=5, progress=False, on_shard=lambda k, a: None)
    before = {f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out)}
    with pytest.raises(StreamError) as e:
        it.explain_dataset(small_cnn(seed=1), data[:12], out=out, shard_size=5, progress=False)
    assert "another run" in str(e.value) and "'cnn0 (fingerprint" in str(e.value) and "'cnn1 (fingerprint" in str(e.value)
    retrained = small_cnn(seed=0)
    retrained.layers[-1].bias.assign(np.ones(5, np.float32))  # same name and architecture, other weights
    with pytest.raises(StreamError, match="model: the folder has"):
        it.explain_dataset(retrained, data[:12], out=out, shard_size=5, progress=False)
    with pytest.raises(StreamError, match=r"rule: the folder has .*'epsilon'.*this run .*'zplus'"):
        it.explain_dataset(model, data[:12], "zplus", out=out, shard_size=5, progress=False)
    with pytest.raises(StreamError, match="shard size: the folder has 5, this run 4"):
        it.explain_dataset(model, data[:12], out=out, shard_size=4, progress=False)
    with pytest.raises(StreamError, match="input: "):
        it.explain_dataset(model, data[1:13], out=out, shard_size=5, progress=False)
    assert {f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out)} == before
    # resume=False starts over
    res = it.explain_dataset(model, data[:12], "zplus", out=out, shard_size=4, progress=False, resume=False)
    assert (res.skipped, res.computed) == (0, 3) and shards(out) == [f"shard-{k:05d}.npz" for k in range(3)]


def test_full_disk_is_a_clear_error_and_keeps_finished_shards(model, data, reference, tmp_path, monkeypatch):
    out = str(tmp_path)
    real, calls = shards_mod.write_npz, []

    def disk_full_at_shard_2(path, arrays):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, arrays)

    monkeypatch.setattr(shards_mod, "write_npz", disk_full_at_shard_2)
    with pytest.raises(StreamError) as e:
        it.explain_dataset(model, data, out=out, shard_size=5, progress=False)
    msg = str(e.value)
    assert msg.startswith(f"no space left on device while writing shard 2 to {os.path.join(out, 'shard-00002.npz')!r}")
    assert "shards 0..1 are complete (10 samples)" in msg
    assert shards(out) == ["shard-00000.npz", "shard-00001.npz"]
    got = it.load_relevances(out)
    np.testing.assert_allclose(got["relevance"], reference[0][:10], rtol=1e-5, atol=1e-7)
    monkeypatch.setattr(shards_mod, "write_npz", real)
    res = it.explain_dataset(model, data, out=out, shard_size=5, progress=False)
    assert (res.skipped, res.computed) == (2, 3)
    np.testing.assert_allclose(it.load_relevances(out)["relevance"], reference[0], rtol=1e-5, atol=1e-7)


def _png_folder(path, n, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(path, exist_ok=True)
    for i in range(n):
        Image.fromarray((rng.random((8, 8)) * 255).astype("uint8")).save(os.path.join(path, f"im{i:02d}.png"))


def test_corrupt_image_names_the_file_and_keeps_finished_shards(model, tmp_path):
    imgs, out, clean = str(tmp_path / "imgs"), str(tmp_path / "out"), str(tmp_path / "clean")
    _png_folder(imgs, 9)
    it.explain_dataset(model, imgs, out=clean, shard_size=3, batch_size=2, progress=False)
    good = open(os.path.join(imgs, "im07.png"), "rb").read()
    with open(os.path.join(imgs, "im07.png"), "wb") as f:
        f.write(good[:20])  # truncated
    with pytest.raises(StreamError) as e:
        it.explain_dataset(model, imgs, out=out, shard_size=3, batch_size=2, progress=False)
    assert "im07.png" in str(e.value) and "shards 0..1 are complete (6 samples)" in str(e.value)
    assert shards(out) == ["shard-00000.npz", "shard-00001.npz"]
    with open(os.path.join(imgs, "im07.png"), "wb") as f:
        f.write(good)  # fixed in place: the run continues
    res = it.explain_dataset(model, imgs, out=out, shard_size=3, batch_size=2, progress=False)
    assert (res.skipped, res.computed) == (2, 1)
    same_files(clean, out)
    assert list(it.load_relevances(out, keys=["names"])["names"]) == [f"im{i:02d}" for i in range(9)]


def test_other_bad_input(model, data, tmp_path):
    with pytest.raises(StreamError, match=r"shape \(8, 8, 3\) per sample, but the model expects \(8, 8, 1\)"):
        it.explain_dataset(model, np.zeros((4, 8, 8, 3)), out=str(tmp_path / "a"), progress=False)
    with pytest.raises(StreamError, match="yields x of shape"):
        it.explain_dataset(model, tf.data.Dataset.from_tensor_slices(np.zeros((4, 8, 8))), out=str(tmp_path / "a"),
                           progress=False)
    with pytest.raises(StreamError, match="target out of range"):
        it.explain_dataset(model, data, out=str(tmp_path / "b"), target=7, progress=False)
    with pytest.raises(StreamError, match="holds no explanations: neither a sharded run"):
        it.load_relevances(str(tmp_path / "nothing"))
    os.makedirs(tmp_path / "c")
    (tmp_path / "c" / "manifest.json").write_text("{not json")
    with pytest.raises(StreamError, match="manifest.json.*not a manifest written by explain_dataset"):
        it.explain_dataset(model, data, out=str(tmp_path / "c"), progress=False)


# ------------------------------------------------------------------ command line
def test_cli_sharded_explain_and_resume(model, tmp_path, capsys):
    imgs, out = str(tmp_path / "imgs"), str(tmp_path / "out")
    _png_folder(imgs, 5)
    model.save(tmp_path / "m.keras")
    os.rename(os.path.join(imgs, "im03.png"), os.path.join(imgs, "im03.bak"))
    with open(os.path.join(imgs, "im03.png"), "wb") as f:
        f.write(b"not a png")
    argv = ["explain", str(tmp_path / "m.keras"), imgs, "--out", out, "--shard-size", "2", "-q"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "im03.png" in err and "shard 0 is complete" in err and "run again with --resume" in err
    assert cli.main(argv) == 1
    assert "pass --resume to continue" in capsys.readouterr().err
    os.replace(os.path.join(imgs, "im03.bak"), os.path.join(imgs, "im03.png"))
    assert cli.main(argv[:-3] + ["--resume", "-q"]) == 0  # the shard size comes from the manifest
    assert "explained 5 input(s)" in capsys.readouterr().out
    assert shards(out) == [f"shard-{k:05d}.npz" for k in range(3)]
    assert os.path.exists(os.path.join(out, "im04_heatmap.png"))
    got = it.load_relevances(out)
    x = np.stack([cli.load_image(os.path.join(imgs, f"im{i:02d}.png"), (None, 8, 8, 1), "auto", (0, 1), False)
                  for i in range(5)])
    np.testing.assert_allclose(got["relevance"], it.Explainer(model)(x), rtol=1e-5, atol=1e-7)


def test_damaged_shard_is_recomputed(model, data, tmp_path):
    full, out = str(tmp_path / "full"), str(tmp_path / "out")
    for d in (full, out):
        it.explain_dataset(model, data, out=d, shard_size=5, progress=False)
    path = os.path.join(out, "shard-00001.npz")
    with open(path, "r+b") as f:
        f.truncate(100)
    written = []
    res = it.explain_dataset(model, data, out=out, shard_size=5, progress=False,
                             on_shard=lambda k, a: written.append(k))
    assert res.skipped == 4 and res.computed == 1 and written == [1]  # only the damaged shard
    same_files(full, out)


# ------------------------------------------------------------------ models without functional inputs
def _digits_like(n=7, seed=0):
    return np.random.default_rng(seed).random((n, 28, 28, 1), dtype=np.float32)


@pytest.mark.parametrize("arch", ["linear", "convolutional"])
def test_models_saved_by_train_are_accepted(arch, tmp_path):
    """`interprettensor train` saves an it.Sequential: no functional inputs, the shape is in its build config."""
    from interprettensor.apps.demo import build_network

    build_network(arch).save(tmp_path / "m.keras")
    model = keras.models.load_model(tmp_path / "m.keras")
    x = _digits_like()
    res = it.explain_dataset(model, x, out=str(tmp_path / "out"), shard_size=4, batch_size=3, progress=False)
    assert (res.n_samples, res.shards) == (7, 2)
    np.testing.assert_allclose(it.load_relevances(str(tmp_path / "out"))["relevance"], it.Explainer(model)(x),
                               rtol=1e-5, atol=1e-7)
    # and from the command line, sharded
    np.save(tmp_path / "batch.npy", x)
    assert cli.main(["explain", str(tmp_path / "m.keras"), str(tmp_path / "batch.npy"), "--out",
                     str(tmp_path / "cli"), "--shard-size", "3", "--no-png", "-q"]) == 0
    want = it.Explainer(model)(x)
    np.testing.assert_allclose(it.load_relevances(str(tmp_path / "cli"))["relevance"], want,
                               rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_sequential_models_built_by_input_dim_by_a_call_or_not_at_all(tmp_path):
    x = _digits_like(5)
    flat = it.Sequential([it.Linear(6, input_dim=784, act="relu"), it.Linear(3), it.Softmax()])  # built (None, 784)
    it.explain_dataset(flat, x, out=str(tmp_path / "a"), progress=False)  # it.Linear flattens (28, 28, 1)
    np.testing.assert_allclose(it.load_relevances(str(tmp_path / "a"))["relevance"], it.Explainer(flat)(x),
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(StreamError, match=r"shape \(27, 28, 1\) per sample, but the model expects \(784\)"):
        it.explain_dataset(flat, x[:, 1:], out=str(tmp_path / "bad"), progress=False)

    f = np.random.default_rng(1).random((5, 6)).astype(np.float32)
    called = it.Sequential([it.Linear(3), it.Softmax()])
    called.forward(f[:2])  # built by a call on a batch of 2: the batch size must not stick
    it.explain_dataset(called, f, out=str(tmp_path / "b"), batch_size=4, progress=False)
    np.testing.assert_allclose(it.load_relevances(str(tmp_path / "b"))["relevance"], it.Explainer(called)(f),
                               rtol=1e-5, atol=1e-7)

    unbuilt = it.Sequential([it.Linear(3), it.Softmax()])
    it.explain_dataset(unbuilt, tf.data.Dataset.from_tensor_slices(f).batch(2), out=str(tmp_path / "c"),
                       progress=False)
    np.testing.assert_allclose(it.load_relevances(str(tmp_path / "c"))["relevance"], it.Explainer(unbuilt)(f),
                               rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ one target per sample
def test_target_array(model, data, tmp_path):
    t = (np.arange(23) * 3) % 5
    res = it.explain_dataset(model, data, out=str(tmp_path / "a"), target=t, shard_size=10, batch_size=4,
                             progress=False)
    got = it.load_relevances(str(tmp_path / "a"))
    np.testing.assert_array_equal(got["targets"], t)
    np.testing.assert_allclose(got["relevance"], it.Explainer(model)(data, target=t), rtol=1e-5, atol=1e-7)
    assert res.n_samples == 23
    # a list, and a tf.data input without labels
    it.explain_dataset(model, tf.data.Dataset.from_tensor_slices(data).batch(6), out=str(tmp_path / "b"),
                       target=list(t), shard_size=10, progress=False)
    np.testing.assert_array_equal(it.load_relevances(str(tmp_path / "b"))["targets"], t)
    # a batched tf.data input has no known length: the count is checked while reading and at the end
    batched = tf.data.Dataset.from_tensor_slices(data).batch(6)
    with pytest.raises(StreamError, match="target has 22 class indices, but the data has more samples"):
        it.explain_dataset(model, batched, out=str(tmp_path / "c"), target=t[:22], progress=False)
    with pytest.raises(StreamError, match="target has 24 class indices, but the data has 23 samples"):
        it.explain_dataset(model, batched, out=str(tmp_path / "d"), target=np.append(t, 0), progress=False)
    # the fingerprint knows the targets: other targets in the same folder are refused
    with pytest.raises(StreamError, match="target: the folder has"):
        it.explain_dataset(model, data, out=str(tmp_path / "a"), target=(t + 1) % 5, shard_size=10, progress=False)


@pytest.mark.parametrize("target,match", [
    (np.arange(22) % 5, "target has 22 class indices, but the data has 23 samples"),
    (np.zeros(23, np.float32), "integer class indices, got dtype float32"),
    (np.full(23, -1), r"class indices >= 0; sample\(s\) 0, 1, 2"),
    (np.zeros((23, 5), int), r"one class index per sample, shape \(N,\); got shape \(23, 5\)"),
    (np.zeros(23, bool), "integer class indices, got dtype bool"),
    ("first", "got the string 'first'"),
    (2.5, "got float"),
])
def test_bad_targets_are_clear_errors(model, data, tmp_path, target, match):
    with pytest.raises(StreamError, match=match):
        it.explain_dataset(model, data, out=str(tmp_path), target=target, progress=False)
    assert not shards(tmp_path)


# ------------------------------------------------------------------ NaN and inf
def _with_nonfinite(data):
    bad = data.copy()
    bad[12, 3, 4, 0] = np.nan
    bad[17, 0, 0, 0] = np.inf
    return bad


def test_nonfinite_stops_with_the_samples_named_keeping_finished_shards(model, data, reference, tmp_path):
    out = str(tmp_path)
    with pytest.raises(StreamError) as e:
        it.explain_dataset(model, _with_nonfinite(data), out=out, shard_size=5, batch_size=4, progress=False)
    msg = str(e.value)
    assert msg.startswith("sample(s) 12 hold NaN or infinite values") and "nonfinite='skip'" in msg, msg
    assert "shards 0..1 are complete (10 samples)" in msg
    assert shards(out) == ["shard-00000.npz", "shard-00001.npz"]
    np.testing.assert_allclose(it.load_relevances(out)["relevance"], reference[0][:10], rtol=1e-5, atol=1e-7)
    # the same folder continues with nonfinite='skip'
    res = it.explain_dataset(model, _with_nonfinite(data), out=out, shard_size=5, batch_size=4, progress=False,
                             nonfinite="skip")
    assert (res.skipped, res.computed, res.nonfinite) == (2, 3, 2)


def test_nonfinite_skip(model, data, reference, tmp_path):
    out = str(tmp_path)
    res = it.explain_dataset(model, _with_nonfinite(data), out=out, shard_size=5, batch_size=4, progress=False,
                             nonfinite="skip")
    assert (res.n_samples, res.nonfinite) == (23, 2)
    got = it.load_relevances(out)
    valid = np.ones(23, bool)
    valid[[12, 17]] = False
    np.testing.assert_array_equal(got["valid"], valid)
    assert got["valid"].dtype == bool
    np.testing.assert_array_equal(got["relevance"][~valid], 0.0)
    np.testing.assert_array_equal(got["outputs"][~valid], 0.0)
    np.testing.assert_array_equal(got["targets"][~valid], -1)
    np.testing.assert_allclose(got["relevance"][valid], reference[0][valid], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(got["targets"][valid], reference[1][valid].argmax(-1))
    with np.load(os.path.join(out, "shard-00002.npz")) as z:  # in every shard
        assert list(z["valid"]) == [True, True, False, True, True]
    # a finished run reports the count again
    assert it.explain_dataset(model, _with_nonfinite(data), out=out, shard_size=5, batch_size=4, progress=False,
                              nonfinite="skip").nonfinite == 2
    with pytest.raises(StreamError, match="nonfinite must be 'error' or 'skip', got 'ignore'"):
        it.explain_dataset(model, data, out=str(tmp_path / "x"), nonfinite="ignore", progress=False)


def test_nonfinite_in_files_names_the_file(model, data, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "a.npy", data[:3])
    np.save(folder / "b.npy", _with_nonfinite(data)[12:14])
    with pytest.raises(StreamError, match=r"sample\(s\) 3 \(files: b_0\) hold NaN"):
        it.explain_dataset(model, str(folder), out=str(tmp_path / "out"), progress=False)


# ------------------------------------------------------------------ reading results back
def test_load_relevances_reads_every_form(model, data, tmp_path):
    it.explain_dataset(model, data[:6], out=str(tmp_path / "run"), shard_size=4, progress=False)
    whole = it.load_relevances(str(tmp_path / "run"))
    assert sorted(whole) == ["indices", "outputs", "relevance", "targets", "valid"]
    assert whole["relevance"].dtype == np.float32 and whole["indices"].dtype == np.int64
    assert whole["targets"].dtype == np.int32 and whole["outputs"].shape == (6, 5)
    # a relevances.npz (what `interprettensor explain` writes without --shard-size), and its folder
    os.makedirs(tmp_path / "flat")
    np.savez(tmp_path / "flat" / "relevances.npz", **whole)
    for path in (tmp_path / "flat" / "relevances.npz", tmp_path / "flat"):
        got = it.load_relevances(str(path))
        assert sorted(got) == sorted(whole)
        for k in whole:
            np.testing.assert_array_equal(got[k], whole[k])
    assert sorted(it.load_relevances(str(tmp_path / "flat"), keys=["targets"])) == ["targets"]
    # shards written before `valid` existed read as all valid
    for f in shards(tmp_path / "run"):
        p = tmp_path / "run" / f
        with np.load(p) as z:
            old = {k: z[k] for k in z.files if k != "valid"}
        np.savez(p, **old)
    np.testing.assert_array_equal(it.load_relevances(str(tmp_path / "run"))["valid"], np.ones(6, bool))
    # the format before 2.0: a clear error
    np.savez(tmp_path / "old.npz", names=np.array(["a"]), relevance=np.zeros((1, 8, 8, 1)), target=np.array([1]),
             output=np.array([0.5]))
    with pytest.raises(StreamError, match="not in the format of interprettensor 2.0.*read it with numpy.load"):
        it.load_relevances(str(tmp_path / "old.npz"))


# ------------------------------------------------------------------ stored inputs and labels
def test_store_inputs_and_labels_in_every_shard(model, data, tmp_path):
    labels = (np.arange(23) * 7) % 5
    out = str(tmp_path / "run")
    it.explain_dataset(model, (data, labels), out=out, shard_size=5, batch_size=4, progress=False,
                       store_inputs=True, target="predicted")
    for k in range(5):
        with np.load(os.path.join(out, f"shard-{k:05d}.npz")) as z:
            assert z.files == ["relevance", "indices", "targets", "outputs", "valid", "inputs", "labels"]
            np.testing.assert_array_equal(z["inputs"], data[5 * k:5 * k + 5])  # the inputs themselves
            np.testing.assert_array_equal(z["labels"], labels[5 * k:5 * k + 5])
    got = it.load_relevances(out)
    assert got["inputs"].dtype == np.float32 and got["inputs"].shape == got["relevance"].shape
    assert got["labels"].dtype == np.int64
    np.testing.assert_array_equal(got["inputs"], data)
    np.testing.assert_array_equal(got["labels"], labels)
    assert sorted(it.load_relevances(out, keys=["labels"])) == ["labels"]
    assert json.load(open(os.path.join(out, "manifest.json")))["identity"]["stored"] == ["inputs", "labels"]
    # split differently over batches (same shard size): the same bytes
    again = str(tmp_path / "again")
    it.explain_dataset(model, (data, labels), out=again, shard_size=5, batch_size=5, progress=False,
                       store_inputs=True, target="predicted")
    for k in range(5):
        f = f"shard-{k:05d}.npz"
        with np.load(os.path.join(out, f)) as a, np.load(os.path.join(again, f)) as b:
            np.testing.assert_array_equal(a["inputs"], b["inputs"])
            np.testing.assert_array_equal(a["labels"], b["labels"])
    # a resumed run with the other flag is refused, either way
    with pytest.raises(StreamError, match=r"stored arrays \(store_inputs, labels\): the folder has \['inputs', "
                                          r"'labels'\], this run \['labels'\]"):
        it.explain_dataset(model, (data, labels), out=out, shard_size=5, progress=False, target="predicted")
    plain = str(tmp_path / "plain")
    it.explain_dataset(model, data, out=plain, shard_size=5, progress=False)
    with pytest.raises(StreamError, match=r"stored arrays.*the folder has None, this run \['inputs'\]"):
        it.explain_dataset(model, data, out=plain, shard_size=5, progress=False, store_inputs=True)
    with np.load(os.path.join(plain, "shard-00000.npz")) as z:  # no labels, no inputs: the arrays as before
        assert z.files == ["relevance", "indices", "targets", "outputs", "valid"]


def test_labels_from_tf_data_and_unknown_labels(model, data, tmp_path):
    labels = np.arange(23) % 5
    onehot = np.eye(5, dtype=np.float32)[labels]
    ds = tf.data.Dataset.from_tensor_slices((data, onehot)).batch(4)
    it.explain_dataset(model, ds, out=str(tmp_path / "tf"), shard_size=8, batch_size=3, progress=False,
                       target="predicted", store_inputs=True)
    got = it.load_relevances(str(tmp_path / "tf"))
    np.testing.assert_array_equal(got["labels"], labels)  # one-hot -> class index, kept though not explained
    np.testing.assert_array_equal(got["targets"], it.Explainer(model)(data, return_output=True)[1].argmax(-1))
    np.testing.assert_array_equal(got["inputs"], data)
    # labels that are no class indices (here masks) are not stored when they are not explained
    masks = tf.data.Dataset.from_tensor_slices((data, data[..., 0] > 0.5))
    it.explain_dataset(model, masks, out=str(tmp_path / "m"), shard_size=8, progress=False, target="predicted")
    assert "labels" not in it.load_relevances(str(tmp_path / "m"))


def test_stored_inputs_of_skipped_samples_are_zero(model, data, tmp_path):
    out = str(tmp_path / "run")
    it.explain_dataset(model, _with_nonfinite(data), out=out, shard_size=5, progress=False, nonfinite="skip",
                       store_inputs=True)
    got = it.load_relevances(out)
    assert np.isfinite(got["inputs"]).all()
    np.testing.assert_array_equal(got["inputs"][[12, 17]], 0.0)
    keep = np.setdiff1d(np.arange(23), [12, 17])
    np.testing.assert_array_equal(got["inputs"][keep], data[keep])


def test_cli_store_inputs_sharded_and_not(model, data, tmp_path):
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "batch.npy", data[:7])
    for extra in ([], ["--shard-size", "3"]):
        out = str(tmp_path / f"out{len(extra)}")
        assert cli.main(["explain", str(tmp_path / "m.keras"), str(tmp_path / "batch.npy"), "--out", out,
                         "--no-png", "-q", "--store-inputs"] + extra) == 0
        got = it.load_relevances(out)
        np.testing.assert_array_equal(got["inputs"], data[:7])
        assert "labels" not in got  # files carry no labels
        assert os.path.exists(os.path.join(out, "manifest.json" if extra else "relevances.npz"))


# ------------------------------------------------------------------ damaged or missing shards (issue 18)
def _snapshot(folder):
    return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))}


def _flip_byte_inside(path, array):
    """Change one byte of ``array``'s data inside the (uncompressed) archive: the directory stays readable,
    the member's CRC no longer matches."""
    raw = bytearray(open(path, "rb").read())
    at = bytes(raw).index(np.ascontiguousarray(array).tobytes()) + array.nbytes // 2
    raw[at] ^= 0xFF
    open(path, "wb").write(bytes(raw))


REWRITE_ADVICE = (r"rerun `interprettensor explain \.\.\. --resume` \(or explain_dataset with the same arguments\), "
                  r"which rewrites missing or damaged shards")


def test_damaged_or_missing_shard_is_named_and_a_rerun_rewrites_it(model, data, tmp_path):
    ref, out = str(tmp_path / "ref"), str(tmp_path / "out")
    for d in (ref, out):
        it.explain_dataset(model, data, out=d, shard_size=5, progress=False)
    undamaged = _snapshot(ref)
    assert _snapshot(out) == undamaged  # deterministic: the reference for "bit-identical" below
    path = os.path.join(out, "shard-00003.npz")
    for damage in ("truncate", "crc", "delete"):
        if damage == "truncate":
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            match = r"shard-00003\.npz' of the run in .* is damaged \(BadZipFile"
        elif damage == "crc":
            with np.load(path) as z:
                _flip_byte_inside(path, z["relevance"])
            match = r"shard-00003\.npz' of the run in .* is damaged \(BadZipFile: Bad CRC-32"
        else:
            os.remove(path)
            match = r"shard-00003\.npz' of the run in .* is missing"
        assert json.load(open(os.path.join(out, "manifest.json")))["complete"] is True
        before = _snapshot(out)
        for target in (out, path):
            with pytest.raises(StreamError, match=match + ".*" + REWRITE_ADVICE):
                it.load_relevances(target)
        if damage != "crc":  # (a bad byte in the relevance does not stop reading only the targets)
            with pytest.raises(StreamError, match=match):
                it.load_relevances(out, keys=["targets"])
        assert _snapshot(out) == before  # a reader changes nothing
        written = []
        res = it.explain_dataset(model, data, out=out, shard_size=5, progress=False,
                                 on_shard=lambda k, a: written.append(k))
        assert (res.skipped, res.computed, written, res.complete) == (4, 1, [3], True), damage
        assert _snapshot(out) == undamaged, damage  # bit-identical to the undamaged run
    np.testing.assert_array_equal(it.load_relevances(out)["relevance"], it.load_relevances(ref)["relevance"])


def test_cli_resume_rewrites_a_damaged_or_missing_shard_of_a_complete_run(model, data, tmp_path, capsys):
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", data[:10])
    argv = ["explain", str(tmp_path / "m.keras"), str(tmp_path / "x.npy"), "--no-png", "-q", "--shard-size", "3"]
    ref, out = str(tmp_path / "ref"), str(tmp_path / "out")
    for d in (ref, out):
        assert cli.main(argv + ["--out", d]) == 0
    undamaged = _snapshot(ref)
    for damage in ("truncate", "delete"):
        path = os.path.join(out, "shard-00001.npz")
        if damage == "truncate":
            with open(path, "r+b") as f:
                f.truncate(100)
        else:
            os.remove(path)
        capsys.readouterr()
        assert cli.main(argv + ["--out", out, "--resume"]) == 0
        assert "4 shard(s)" in capsys.readouterr().out
        assert _snapshot(out) == undamaged, damage


def test_ctrl_c_keeps_finished_shards_and_says_how_to_resume(model, data, tmp_path, capsys, monkeypatch):
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", data[:10])
    out = str(tmp_path / "out")
    argv = ["explain", str(tmp_path / "m.keras"), str(tmp_path / "x.npy"), "--no-png", "-q", "--shard-size", "3",
            "--out", out]
    real = shards_mod.write_npz
    calls = []

    def interrupted_at_the_third(path, arrays):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(path, arrays)

    monkeypatch.setattr(shards_mod, "write_npz", interrupted_at_the_third)
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert f"interrupted; the finished shards in {out} are kept: run the same command again with --resume to " \
           f"continue" in err, err
    assert shards(out) == ["shard-00000.npz", "shard-00001.npz"]
    monkeypatch.setattr(shards_mod, "write_npz", real)
    assert cli.main(argv + ["--resume"]) == 0
    assert "(2 were complete before)" in capsys.readouterr().out
    assert shards(out) == [f"shard-{k:05d}.npz" for k in range(4)]


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_atomically_written_files_follow_the_umask(model, data, tmp_path, mask):
    old = os.umask(mask)
    try:
        out = str(tmp_path / "run")
        it.explain_dataset(model, data[:6], out=out, shard_size=4, progress=False)
        shards_mod.write_json(str(tmp_path / "other.json"), {"a": 1})
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    want = 0o666 & ~mask
    assert os.stat(tmp_path / "plain").st_mode & 0o777 == want
    for f in sorted(os.listdir(out)) + ["../other.json"]:
        assert os.stat(os.path.join(out, f)).st_mode & 0o777 == want, (f, oct(want))
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


# ------------------------------------------------------------------ labels of files (issue 18)
def _class_folders(root, classes, per_class=3, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        os.makedirs(os.path.join(root, c))
        for i in range(per_class):
            Image.fromarray((rng.random((8, 8)) * 255).astype("uint8")).save(os.path.join(root, c, f"im{i}.png"))
    return str(root)


def test_class_subfolders_and_given_labels_of_files(model, tmp_path):
    named = _class_folders(tmp_path / "pets", ["dog", "cat"])  # names: sorted, cat = 0, dog = 1
    numbered = _class_folders(tmp_path / "digits", ["4", "1"], per_class=2)  # integers: the classes themselves
    out = str(tmp_path / "named")
    res = it.explain_dataset(model, named, out=out, shard_size=4, progress=False, target="predicted")
    got = it.load_relevances(out)
    assert got["labels"].dtype == np.int64
    np.testing.assert_array_equal(got["labels"], [0, 0, 0, 1, 1, 1])
    assert list(got["names"]) == ["cat_im0", "cat_im1", "cat_im2", "dog_im0", "dog_im1", "dog_im2"]
    np.testing.assert_array_equal(got["targets"], got["outputs"].argmax(-1))  # predicted, as asked
    identity = json.load(open(os.path.join(out, "manifest.json")))["identity"]
    assert identity["stored"] == ["labels"] and identity["classes"] == ["cat", "dog"]
    for k in range(res.shards):
        with np.load(os.path.join(out, f"shard-{k:05d}.npz")) as z:
            np.testing.assert_array_equal(z["labels"], got["labels"][4 * k:4 * k + 4])
    # integer subfolder names; the default target is the label, as for (x, y) arrays
    out = str(tmp_path / "numbered")
    it.explain_dataset(model, numbered, out=out, shard_size=3, progress=False)
    got = it.load_relevances(out)
    np.testing.assert_array_equal(got["labels"], [1, 1, 4, 4])
    np.testing.assert_array_equal(got["targets"], [1, 1, 4, 4])
    assert "classes" not in json.load(open(os.path.join(out, "manifest.json")))["identity"]
    # (files, labels): -1 is unknown (explained for the predicted class)
    files = [os.path.join(named, "cat", "im0.png"), os.path.join(named, "dog", "im1.png")]
    out = str(tmp_path / "given")
    it.explain_dataset(model, (files, [3, -1]), out=out, shard_size=4, progress=False)
    got = it.load_relevances(out)
    np.testing.assert_array_equal(got["labels"], [3, -1])
    assert got["targets"][0] == 3 and got["targets"][1] == got["outputs"][1].argmax()
    with pytest.raises(StreamError, match="3 labels, but there are 2 inputs"):
        it.explain_dataset(model, (files, [3, 1, 0]), out=str(tmp_path / "bad"), shard_size=4, progress=False)


def test_runs_of_files_without_labels_keep_their_identity(model, tmp_path):
    """A folder of images (no class subfolders) has no labels: the identity is as before (no "stored", the
    input's description without labels), so runs written before labels existed still resume."""
    _png_folder(str(tmp_path / "imgs"), 5)
    out = str(tmp_path / "run")
    it.explain_dataset(model, str(tmp_path / "imgs"), out=out, shard_size=2, progress=False)
    identity = json.load(open(os.path.join(out, "manifest.json")))["identity"]
    assert "stored" not in identity and "classes" not in identity and ":labels:" not in identity["input"]
    assert identity["target"] == "None"
    res = it.explain_dataset(model, str(tmp_path / "imgs"), out=out, shard_size=2, progress=False)
    assert res.skipped == 3 and res.computed == 0
    assert "labels" not in it.load_relevances(out)
