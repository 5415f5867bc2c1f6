"""``explain_dataset`` under ``tf.distribute.MultiWorkerMirroredStrategy``: two worker processes on
127.0.0.1 (a ``TF_CONFIG`` cluster on loopback ports) explain one data set together; the chief writes
the run into the folder both share, equal to a single device's."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import interprettensor as it

WORKER = textwrap.dedent("""
    import json, os, sys
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras, numpy as np
    import interprettensor as it
    model = keras.models.load_model(sys.argv[1])
    x = np.load(sys.argv[2])
    res = it.explain_dataset(model, x, "epsilon_gamma_box", out=sys.argv[3], shard_size=6, batch_size=4, strategy=strategy,
                             progress=False, low=0.0, high=1.0)
    print("DONE", strategy.num_replicas_in_sync, res.n_samples, res.shards, flush=True)
""")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_two_worker_processes_on_loopback_equal_one_device(tmp_path):
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(5, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Add()([h, keras.layers.Conv2D(5, 1)(inp)])
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h)))
    model.save(tmp_path / "m.keras")
    x = np.random.default_rng(3).random((17, 8, 8, 2), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    out = str(tmp_path / "run")
    procs = []
    for i in range(2):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "m.keras"), str(tmp_path / "x.npy"),
                                       out], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, stderr[-3000:]
        assert stdout.split()[:4] == ["DONE", "2", "17", "3"], stdout  # 2 replicas, 17 samples in 3 shards
    # both workers share the folder; only the chief wrote (one manifest, no temporary files left)
    assert sorted(os.listdir(out)) == ["manifest.json", "shard-00000.npz", "shard-00001.npz", "shard-00002.npz"]
    got = it.load_relevances(out)
    want = it.Explainer(model, "epsilon_gamma_box", low=0.0, high=1.0)(x)
    np.testing.assert_array_equal(got["indices"], np.arange(17))
    # float32 rounding of the two executions (different batch splits, kernels and graph rewrites per
    # replica): an input's relevance sums about 110 terms of at most max|R|'s order (the Dense's 3, the
    # 3x3 convolution's 45 and the 1x1's 5 contributions, z^B's denominators of 18 inputs x 3 terms)
    np.testing.assert_allclose(got["relevance"], want, rtol=1e-5, atol=110 * 2.0 ** -23 * np.abs(want).max())
