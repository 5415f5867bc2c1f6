"""TensorBoard summaries: written with tf.summary.write and TensorBoard's plugin metadata, read back."""

import glob
import os

import keras
import numpy as np
import tensorflow as tf

from interprettensor.io.summaries import EpochSummaries, SummaryWriter, read_events


def plugins(logdir):
    """{tag: plugin name} from the raw event protos."""
    out = {}
    for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        for e in tf.compat.v1.train.summary_iterator(path):
            for v in e.summary.value:
                out[v.tag] = v.metadata.plugin_data.plugin_name
    return out


def test_scalars_histograms_images_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.normal(size=500)
    x = rng.uniform(size=(3, 5, 6, 1))
    with SummaryWriter(str(tmp_path)) as w:
        w.scalar("loss", 0.5, 0)
        w.scalar("loss", 0.25, 1)
        w.histogram("relevance/dense", values, 1, bins=20)
        w.images("inputs", x, 1)
        w.heatmaps("heatmap", rng.normal(size=(3, 5, 6, 1)), x, 1, scale=2)
    ev = read_events(str(tmp_path))
    assert ev["loss"] == [(0, 0.5), (1, 0.25)]
    (step, hist), = ev["relevance/dense"]
    assert step == 1 and hist.shape == (20, 3)
    assert hist[:, 2].sum() == 500 and hist[0, 0] == values.min() and hist[-1, 1] == values.max()
    (_, pngs), = ev["inputs"]
    assert len(pngs) == 3
    img = tf.io.decode_png(pngs[0]).numpy()
    assert img.shape == (5, 6, 1)
    np.testing.assert_allclose(img[..., 0] / 255.0, x[0, ..., 0], atol=1 / 255)
    (_, heat), = ev["heatmap"]
    assert tf.io.decode_png(heat[0]).numpy().shape == (10, 12, 3)  # enlarged RGB
    assert plugins(str(tmp_path)) == {"loss": "scalars", "relevance/dense": "histograms", "inputs": "images",
                                      "heatmap": "images"}


def test_constant_histogram_and_layerwise(tmp_path):
    with SummaryWriter(str(tmp_path)) as w:
        w.relevance_histograms({"conv": np.zeros((2, 4)), "dense": np.arange(6.0)}, 3, prefix="R")
    ev = read_events(str(tmp_path))
    assert set(ev) == {"R/conv", "R/dense"}
    assert ev["R/conv"][0][1][:, 2].sum() == 8


def test_epoch_callback_writes_loss_and_accuracy_per_epoch(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    x, y = np.random.default_rng(0).normal(size=(16, 4)), np.arange(16) % 2
    train, test = SummaryWriter(str(tmp_path / "train")), SummaryWriter(str(tmp_path / "test"))
    model.fit(x, y, epochs=3, verbose=0, validation_data=(x, y), callbacks=[EpochSummaries(train, test)])
    train.close(), test.close()
    ev = read_events(str(tmp_path))
    for tag in ("train/loss", "train/accuracy", "test/loss", "test/accuracy"):
        assert [s for s, _ in ev[tag]] == [0, 1, 2], tag
    assert ev["train/loss"][2][1] < ev["train/loss"][0][1] + 1e-6


def test_epoch_callback_takes_log_folders_and_checks_its_arguments(tmp_path):
    import pytest

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 2
    cb = EpochSummaries(str(tmp_path / "train"), tmp_path / "test")  # a str and a PathLike
    assert os.path.isdir(tmp_path / "train")
    model.fit(x, y, epochs=2, verbose=0, validation_data=(x, y), callbacks=[cb])
    ev = read_events(str(tmp_path))
    assert [s for s, _ in ev["train/loss"]] == [0, 1] and [s for s, _ in ev["test/loss"]] == [0, 1]
    with pytest.raises(TypeError, match="EpochSummaries: writer must be a SummaryWriter or a log folder path"):
        EpochSummaries(42)
    with pytest.raises(TypeError, match="val_writer must be .* got dict"):
        EpochSummaries(str(tmp_path / "a"), val_writer={"dir": "x"})
    with pytest.raises(TypeError, match="writer must be"):
        EpochSummaries("")
