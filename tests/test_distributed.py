"""``explain_dataset`` under ``tf.distribute.MirroredStrategy`` on 2 logical CPU devices equals one device.

Logical devices must be configured before TensorFlow initialises, so the comparison runs in a fresh
interpreter.
"""

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, sys, tempfile
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    import interprettensor as it

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(6, 3, padding="same")(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Activation("relu")(h)
    h = keras.layers.Add()([h, keras.layers.Conv2D(6, 1)(inp)])
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(4)(h))
    x = np.random.default_rng(0).random((25, 8, 8, 2), dtype=np.float32)
    labels = np.arange(25) % 4
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out, report = tempfile.mkdtemp(), {"replicas": strategy.num_replicas_in_sync}
    cases = {"array": lambda: x, "tf.data with labels": lambda: tf.data.Dataset.from_tensor_slices((x, labels)).batch(6)}
    for name, data in cases.items():
        runs = {}
        for mode, s in (("one", None), ("two", strategy)):
            # batch 4 over 2 replicas: 2 + 2 per step; 25 samples: the last step gives one replica nothing
            res = it.explain_dataset(model, data(), "epsilon_gamma_box", out=f"{out}/{name}-{mode}", shard_size=7,
                                     batch_size=4, strategy=s, progress=False, low=0.0, high=1.0)
            runs[mode] = it.load_relevances(f"{out}/{name}-{mode}")
            runs[mode + "_shards"] = res.shards
        one, two = runs["one"], runs["two"]
        direct = it.Explainer(model, "epsilon_gamma_box", low=0.0, high=1.0)(
            x, target=labels if "labels" in name else None)
        report[name] = {
            "shards": [runs["one_shards"], runs["two_shards"]],
            "indices_equal": bool(np.array_equal(one["indices"], two["indices"])),
            "targets_equal": bool(np.array_equal(one["targets"], two["targets"])),
            "max_rel_diff": float(np.abs(one["relevance"] - two["relevance"]).max()),
            "max_out_diff": float(np.abs(one["outputs"] - two["outputs"]).max()),
            "max_direct_diff": float(np.abs(two["relevance"] - direct).max()),
            "scale": float(np.abs(direct).max()),
            "n": int(len(two["indices"])),
        }
    # a target beyond the output is checked on the host before the strategy step (inside it, it would give zeros)
    from interprettensor.io.shards import StreamError
    for name, target in (("const", 9), ("per sample", [0] * 20 + [9] * 5)):
        try:
            it.explain_dataset(model, x, "epsilon", out=f"{out}/bad-{name}", shard_size=7, batch_size=4,
                               strategy=strategy, target=target, progress=False)
            report["bad " + name] = "no error"
        except StreamError as e:
            report["bad " + name] = str(e)
    print("REPORT" + json.dumps(report))
""")


def test_mirrored_strategy_on_two_logical_cpus_equals_one_device():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT")][-1]
    report = json.loads(line[len("REPORT"):])
    assert report["replicas"] == 2
    for name in ("array", "tf.data with labels"):
        r = report[name]
        assert r["n"] == 25 and r["shards"] == [4, 4], (name, r)
        assert r["indices_equal"] and r["targets_equal"], (name, r)
        tol = 1e-5 * r["scale"]
        assert r["max_rel_diff"] <= tol and r["max_direct_diff"] <= tol and r["max_out_diff"] <= 1e-4, (name, r)
    assert report["bad const"].startswith("target out of range: the model output has 4 units, valid targets are 0..3; "
                                          "no shard was complete yet"), report["bad const"]
    # samples 0..13 (shards 0 and 1) come before the first bad target (sample 20, in the batch 18..20)
    assert report["bad per sample"].startswith("target out of range: the model output has 4 units"), report
    assert "shards 0..1 are complete (14 samples)" in report["bad per sample"], report["bad per sample"]
