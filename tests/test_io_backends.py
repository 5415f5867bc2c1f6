"""``explain_dataset``, TensorBoard summaries and the command line on Keras' JAX and PyTorch backends.

A small conv/dense model is saved and explained here with TensorFlow (the reference); then, in one fresh
interpreter per backend (Keras picks its backend once per process), the same saved model explains the
same data from an array, a folder of ``.npy`` files, a Python generator, a ``keras.utils.PyDataset`` and
a ``tf.data.Dataset``, each run interrupted after two shards and resumed (a failing ``on_shard`` or a
generator that breaks: kill-free), split over two workers, and a run that TensorFlow began as worker 0 is
finished there as worker 1. ``interprettensor --backend B explain`` writes ``relevances.npz``;
``strategy=`` is refused by name, a target beyond the output is stopped, NaN samples are skipped.

Tolerance: the relevances agree to 1e-5 of the largest |R|. Each backend computes the same float32
operations with its own kernels (oneDNN, XLA, Eigen) in its own summation order, so values differ by a
few float32 roundings of the largest terms (~1e-7 relative); the epsilon rule divides by the
pre-activations, which can amplify such differences where a pre-activation is near zero; ``epsilon=0.1``
bounds that amplification (with the default epsilon a random-input conv net showed up to 5e-4 of the
largest |R| on PyTorch for a few samples: the rule's conditioning, not the input layer's). The largest
difference seen here is ~4e-7.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from test_backends import JAX_FLAGS

N, SHARD, BATCH = 60, 16, 6  # 4 shards (the last of 12), batches of 6 padded at each shard's end
PARAMS = {"epsilon": 0.1}

SCRIPT = textwrap.dedent("""
    import contextlib, io, json, os, shutil, sys
    import numpy as np
    import keras
    import interprettensor as it
    from interprettensor.io.shards import StreamError

    D = sys.argv[1]
    B = keras.backend.backend()
    W = os.path.join(D, B)
    model = keras.saving.load_model(os.path.join(D, "model.keras"))
    x = np.load(os.path.join(D, "x.npy"))
    labels = np.load(os.path.join(D, "labels.npy"))
    ref = dict(np.load(os.path.join(D, "ref.npz")))
    params = json.loads(sys.argv[2])
    kw = dict(shard_size=int(sys.argv[3]), batch_size=int(sys.argv[4]), progress=False, **params)
    scale = float(np.abs(ref["relevance"]).max())
    report = {"backend": B}

    def compare(name, out):
        r = it.load_relevances(out)
        report[name] = {"n": int(len(r["indices"])),
                        "indices": bool(np.array_equal(r["indices"], np.arange(len(x)))),
                        "targets": bool(np.array_equal(r["targets"], ref["targets"])),
                        "valid": bool(r["valid"].all()),
                        "rel": float(np.abs(r["relevance"] - ref["relevance"]).max()) / scale,
                        "dtypes": {k: str(v.dtype) for k, v in r.items() if k != "names"}}

    class Stop(Exception):
        pass

    def stop_at(k0):
        def on_shard(k, arrays):
            if k == k0:
                raise Stop()
        return on_shard

    def interrupted_then_resumed(name, data):
        out = os.path.join(W, name)
        try:
            it.explain_dataset(model, data(), out=out, on_shard=stop_at(2), **kw)
            report[name + " stop"] = "not stopped"
        except Stop:
            report[name + " stop"] = sorted(f for f in os.listdir(out) if f.startswith("shard-"))
        res = it.explain_dataset(model, data(), out=out, **kw)
        report[name + " resume"] = [res.skipped, res.computed, res.complete]
        compare(name, out)

    class Batches(keras.utils.PyDataset):
        def __init__(self, size):
            super().__init__()
            self.size = size
        def __len__(self):
            return -(-len(x) // self.size)
        def __getitem__(self, b):
            return x[b * self.size:(b + 1) * self.size]

    interrupted_then_resumed("array", lambda: x)
    interrupted_then_resumed("folder", lambda: os.path.join(D, "npy"))
    interrupted_then_resumed("pydataset", lambda: Batches(7))

    # a generator, broken after 40 samples (shards 0 and 1 are written), then read again in full
    def samples(limit=None):
        for i, xi in enumerate(x):
            if limit is not None and i == limit:
                raise OSError("the stream broke")
            yield xi
    out = os.path.join(W, "generator")
    try:
        it.explain_dataset(model, samples(40), out=out, **kw)
        report["generator stop"] = "not stopped"
    except StreamError as e:
        report["generator stop"] = str(e)
    res = it.explain_dataset(model, samples(), out=out, **kw)
    report["generator resume"] = [res.skipped, res.computed, res.complete]
    compare("generator", out)

    # two workers on a PyDataset; a run that TensorFlow began as worker 0 of 2, finished here as worker 1
    out = os.path.join(W, "workers")
    done = [it.explain_dataset(model, Batches(5), out=out, worker=(i, 2), **kw).complete for i in (0, 1)]
    report["workers complete"] = done
    compare("workers", out)
    out = os.path.join(W, "cross")
    shutil.copytree(os.path.join(D, "tf-worker0"), out)
    report["cross complete"] = it.explain_dataset(model, x, out=out, worker=(1, 2), **kw).complete
    compare("cross", out)

    # a tf.data.Dataset is read as NumPy on any backend
    import tensorflow as tf
    ds = tf.data.Dataset.from_tensor_slices((x, labels)).batch(9)
    it.explain_dataset(model, ds, out=os.path.join(W, "tfdata"), target="predicted", **kw)
    compare("tfdata", os.path.join(W, "tfdata"))
    report["tfdata labels"] = bool(np.array_equal(it.load_relevances(os.path.join(W, "tfdata"))["labels"], labels))

    # NaN: skipped with nonfinite='skip' (relevance 0, valid False), the others as before
    xn = x.copy()
    xn[3, 0, 0, 0] = np.nan
    r = it.explain_dataset(model, xn, out=os.path.join(W, "nan"), nonfinite="skip", **kw)
    got = it.load_relevances(os.path.join(W, "nan"))
    keep = np.arange(len(x)) != 3
    report["nan"] = {"count": r.nonfinite, "valid3": bool(got["valid"][3]), "zero3": bool(not got["relevance"][3].any()),
                     "target3": int(got["targets"][3]),
                     "rel": float(np.abs(got["relevance"][keep] - ref["relevance"][keep]).max()) / scale}

    # what is refused, and how
    for name, call in (("strategy", lambda: it.explain_dataset(model, x, out=os.path.join(W, "s"), **kw,
                                                                  strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))),
                       ("target", lambda: it.explain_dataset(model, x, out=os.path.join(W, "t"), target=7, **kw))):
        try:
            call()
            report["error " + name] = "no error"
        except StreamError as e:
            report["error " + name] = str(e)

    # TensorBoard summaries: tf.summary writes NumPy values whatever Keras' backend
    from interprettensor.io.summaries import SummaryWriter, read_events
    with SummaryWriter(os.path.join(W, "logs")) as w:
        w.scalar("loss", 0.25, step=3)
        w.histogram("relevance", ref["relevance"], step=3)
    events = read_events(os.path.join(W, "logs"))
    report["summaries"] = [events["loss"][0][1], int(events["relevance"][0][1][:, 2].sum())]

    # the command line, as the entry point runs it
    from interprettensor.apps.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["--backend", B, "explain", os.path.join(D, "model.keras"), os.path.join(D, "x.npy"),
                   "--out", os.path.join(W, "cli"), "--no-png", "--epsilon", str(params["epsilon"])])
    report["cli"] = {"rc": rc, "said": f"interprettensor: Keras backend {B}" in err.getvalue(), "err": err.getvalue()[-500:]}
    with np.load(os.path.join(W, "cli", "relevances.npz")) as z:
        report["cli"]["rel"] = float(np.abs(z["relevance"] - ref["relevance"]).max()) / scale
    print("REPORT" + json.dumps(report))
""")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The saved model, the data (an array, a folder of three .npy files), TensorFlow's relevances, and a
    run that TensorFlow began as worker 0 of 2."""
    import keras

    import interprettensor as it

    d = tmp_path_factory.mktemp("io_backends")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                              keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    model.save(d / "model.keras")
    x = np.random.default_rng(0).random((N, 8, 8, 1), dtype=np.float32)
    np.save(d / "x.npy", x)
    np.save(d / "labels.npy", np.arange(N) % 3)
    os.makedirs(d / "npy")
    for k, name in enumerate("abc"):
        np.save(d / "npy" / f"{name}.npy", x[20 * k:20 * (k + 1)])
    loaded = keras.saving.load_model(d / "model.keras")
    kw = dict(shard_size=SHARD, batch_size=BATCH, progress=False, **PARAMS)
    it.explain_dataset(loaded, x, out=str(d / "tf"), **kw)
    ref = it.load_relevances(str(d / "tf"))
    np.savez(d / "ref.npz", **ref)
    res = it.explain_dataset(loaded, x, out=str(d / "tf-worker0"), worker=(0, 2), **kw)
    assert not res.complete
    return d, ref


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_explain_dataset_and_cli_on_backend(prepared, backend):
    d, ref = prepared
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               **(JAX_FLAGS if backend == "jax" and "XLA_FLAGS" not in os.environ else {}))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(d), json.dumps(PARAMS), str(SHARD), str(BATCH)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT")][-1]
    r = json.loads(line[len("REPORT"):])
    assert r["backend"] == backend
    tol = 1e-5
    dtypes = {k: str(v.dtype) for k, v in ref.items() if k != "names"}
    for name in ("array", "folder", "pydataset", "generator", "workers", "cross", "tfdata"):
        got = r[name]
        assert got["n"] == N and got["indices"] and got["targets"] and got["valid"], (name, got)
        assert got["rel"] <= tol, (name, got)
        extra = {"labels": "int64"} if name == "tfdata" else {}
        assert got["dtypes"] == {**dtypes, **extra}, (name, got["dtypes"])  # the same files for the same values
    for name in ("array", "folder", "pydataset"):
        assert r[name + " stop"] == ["shard-00000.npz", "shard-00001.npz"], (name, r[name + " stop"])
        assert r[name + " resume"] == [2, 2, True], (name, r[name + " resume"])
    assert r["generator stop"].startswith("reading the input failed: OSError: the stream broke; shards 0..1 are "
                                          "complete (32 samples)"), r["generator stop"]
    assert r["generator resume"] == [2, 2, True]
    assert r["workers complete"] == [False, True] and r["cross complete"] is True
    assert r["tfdata labels"]
    assert r["nan"]["count"] == 1 and not r["nan"]["valid3"] and r["nan"]["zero3"] and r["nan"]["target3"] == -1
    assert r["nan"]["rel"] <= tol, r["nan"]
    assert r["error strategy"].startswith(f"strategy= needs Keras' TensorFlow backend (Keras runs on '{backend}')"), \
        r["error strategy"]
    assert r["error target"].startswith("target out of range: the model output has 3 units, valid targets are 0..2; "
                                        "no shard was complete yet"), r["error target"]
    assert r["summaries"] == [0.25, ref["relevance"].size]
    assert r["cli"]["rc"] == 0 and r["cli"]["said"], r["cli"]
    assert r["cli"]["rel"] <= tol, r["cli"]
    shutil.rmtree(d / backend, ignore_errors=True)
