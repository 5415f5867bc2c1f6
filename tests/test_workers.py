"""A data set explained by several independent worker processes sharing one run directory: the same
bytes as one process, whatever is killed and rerun; and the workers found in a scheduler's environment."""

import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import interprettensor as it
from interprettensor.io.shards import StreamError
from interprettensor.io.workers import Worker, parse_worker, worker_from_environment

L = keras.layers

WORKER = r"""
import sys, time
import numpy as np, keras
import interprettensor as it
model = keras.models.load_model(sys.argv[1])
x = np.load(sys.argv[2])
worker = sys.argv[4] or None
pause = float(sys.argv[5])
res = it.explain_dataset(model, x, rule="epsilon_gamma_box", low=0.0, high=1.0, out=sys.argv[3], shard_size=4,
                         batch_size=3, worker=worker, progress=False, on_shard=lambda k, a: time.sleep(pause))
print("DONE", res.computed, res.complete, flush=True)
"""


def _start(tmp_path, out, worker, pause=0.0):
    return subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "m.keras"), str(tmp_path / "x.npy"), out,
                             worker, str(pause)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))


def _files(folder):
    return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))}


@pytest.mark.slow
def test_three_workers_one_killed_and_rerun_give_the_bytes_of_one_process(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(4, 3, activation="relu"), L.MaxPooling2D(),
                              L.Flatten(), L.Dense(5)])
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((50, 8, 8, 1), dtype=np.float32))  # 13 shards
    single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
    workers = {i: _start(tmp_path, multi, f"{i}/3", pause=0.5 if i == 1 else 0.0) for i in range(3)}
    # the run of one process: this one (what the worker script does, without a worker), while they start
    res = it.explain_dataset(keras.models.load_model(tmp_path / "m.keras"), np.load(tmp_path / "x.npy"),
                             rule="epsilon_gamma_box", low=0.0, high=1.0, out=single, shard_size=4, batch_size=3,
                             progress=False)
    assert res.complete
    # kill worker 1 once it has written two of its shards (1, 4, 7, 10)
    deadline = time.time() + 240
    while not os.path.exists(os.path.join(multi, "shard-00004.npz")):
        assert workers[1].poll() is None, workers[1].communicate()
        assert time.time() < deadline, "worker 1 wrote no second shard"
        time.sleep(0.05)
    workers[1].send_signal(signal.SIGKILL)
    workers[1].wait()
    for i in (0, 2):
        stdout, stderr = workers[i].communicate(timeout=240)
        assert workers[i].returncode == 0, stderr[-3000:]
        assert "DONE" in stdout and stdout.strip().endswith("False"), stdout  # not complete: worker 1 is missing
    assert not os.path.exists(os.path.join(multi, "manifest.json"))
    with pytest.raises(StreamError, match=r"not complete: shard\(s\) 7, 10 of 13 are missing.*worker 1/3"):
        it.finalize_run(multi)
    rerun = _start(tmp_path, multi, "1/3")
    stdout, stderr = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, stderr[-3000:]
    assert stdout.split()[1:] == ["2", "True"], stdout  # shards 7 and 10 computed, the run complete
    a, b = _files(single), _files(multi)
    assert sorted(a) == sorted(b) == ["manifest.json"] + [f"shard-{k:05d}.npz" for k in range(13)]
    assert a == b  # byte-identical: shards and manifest
    # the final step can be run again by hand: it checks and changes nothing
    from interprettensor.apps.cli import main

    assert main(["finalize", multi]) == 0
    assert _files(multi) == a
    np.testing.assert_array_equal(it.load_relevances(multi)["indices"], np.arange(50))


def test_workers_in_process_split_the_shards_and_finalize(tmp_path):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6,)), L.Dense(4, activation="relu"), L.Dense(3)])
    x = np.random.default_rng(1).random((23, 6), dtype=np.float32)
    y = np.arange(23) % 3
    out = str(tmp_path / "run")
    kw = dict(shard_size=5, batch_size=2, progress=False, store_inputs=True)
    first = it.explain_dataset(model, (x, y), out=out, worker=(1, 2), target="predicted", **kw)
    assert (first.computed, first.complete) == (2, False)  # shards 1 and 3 of 0..4
    assert sorted(f for f in os.listdir(out) if f.startswith("shard")) == ["shard-00001.npz", "shard-00003.npz"]
    with pytest.raises(StreamError, match=r"stored arrays \(store_inputs, labels\): the folder has \['inputs', "
                                          r"'labels'\], this run \['labels'\]"):
        it.explain_dataset(model, (x, y), out=out, worker="0/2", target="predicted", **dict(kw, store_inputs=False))
    second = it.explain_dataset(model, (x, y), out=out, worker="0/2", target="predicted", **kw)
    assert (second.computed, second.complete) == (3, True)
    assert not [f for f in os.listdir(out) if f.startswith("manifest-worker")]
    whole = it.explain_dataset(model, (x, y), out=str(tmp_path / "whole"), target="predicted", **kw)
    assert whole.complete
    assert _files(out) == _files(str(tmp_path / "whole"))  # byte-identical, stored inputs and labels included
    got = it.load_relevances(out)
    np.testing.assert_array_equal(got["inputs"], x)
    np.testing.assert_array_equal(got["labels"], y)
    assert got["inputs"].dtype == np.float32 and got["labels"].dtype == np.int64
    # a worker of another run is refused
    with pytest.raises(StreamError, match="shard size: the folder has 5, this run 4"):
        it.explain_dataset(model, x, out=out, shard_size=4, worker=(0, 2), progress=False)


def test_worker_needs_a_known_length_and_a_valid_spec(tmp_path):
    import tensorflow as tf

    model = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    ds = tf.data.Dataset.from_tensor_slices(np.ones((6, 3), np.float32)).filter(lambda v: True)
    with pytest.raises(StreamError, match="worker= needs an input of known length.*assert_cardinality"):
        it.explain_dataset(model, ds, out=str(tmp_path), worker=(0, 2), progress=False)
    for bad, msg in [("3/3", "worker index must be in 0..N-1"), ("a/b", "integers"), ("2", "expected 'i/N'"),
                     ((0, 0), "N >= 1"), (5, "must be None")]:
        with pytest.raises(StreamError, match=msg):
            parse_worker(bad)


def test_workers_from_scheduler_environments():
    assert worker_from_environment({}) is None
    assert worker_from_environment({"INTERPRETTENSOR_WORKER": "2/5"}) == Worker(2, 5)
    assert worker_from_environment({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "8"}) == Worker(3, 8)
    assert worker_from_environment({"SLURM_ARRAY_TASK_ID": "11", "SLURM_ARRAY_TASK_MIN": "10",
                                    "SLURM_ARRAY_TASK_MAX": "13"}) == Worker(1, 4)
    assert worker_from_environment({"JOB_COMPLETION_INDEX": "0", "INTERPRETTENSOR_NUM_WORKERS": "4"}) == Worker(0, 4)
    with pytest.raises(StreamError, match="INTERPRETTENSOR_NUM_WORKERS"):
        worker_from_environment({"JOB_COMPLETION_INDEX": "0"})
    assert parse_worker("auto", {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"}) == Worker(0, 2)
    with pytest.raises(StreamError, match="no worker found in the environment"):
        parse_worker("auto", {})


def test_a_rerun_worker_removes_what_its_killed_run_left_half_written(tmp_path):
    """A worker killed inside an atomic write leaves ``.NAME.<random>.tmp``; its rerun removes those of
    its own files (its manifest, its shards) and leaves every other worker's alone (regression: a
    killed worker's temporary manifest stayed in the finished run folder)."""
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((6,)), L.Dense(3)])
    x = np.random.default_rng(2).random((12, 6), dtype=np.float32)
    out = str(tmp_path / "run")
    kw = dict(shard_size=4, batch_size=4, progress=False)
    it.explain_dataset(model, x, out=out, worker=(0, 2), **kw)  # shards 0 and 2
    own = [".manifest-worker-001-of-002.json.k1ll3d.tmp", ".shard-00001.npz.x7q2ab.tmp"]
    others = [".manifest-worker-000-of-002.json.k1ll3d.tmp", ".shard-00002.npz.x7q2ab.tmp", ".notes.tmp"]
    for f in own + others:
        with open(os.path.join(out, f), "wb") as fh:
            fh.write(b"half")
    res = it.explain_dataset(model, x, out=out, worker=(1, 2), **kw)  # shard 1, then the run is complete
    assert res.complete
    left = os.listdir(out)
    assert not set(own) & set(left)
    assert set(others) <= set(left)
