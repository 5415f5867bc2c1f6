"""Concept Relevance Propagation: cost of conditional heatmaps, and memory of relevance maximisation.

1. 32 conditional heatmaps (32 channels of VGG16's ``block4_conv3``, one 224x224 image): the batched
   pass of :func:`interprettensor.concepts.conditional` (one forward pass, one backward pass above
   the layer, 32 backward passes below it as one batch) against 32 separate compiled LRP calls, each
   started at the layer with a one-hot channel mask on the layer's relevance (one forward pass and a
   backward pass from the layer down each). Both warmed up, best of ``--repeats``, in one process.
   The floor is one forward pass plus 32 backward passes from the layer down.
2. Relevance maximisation over N samples (a small CNN on 32x32 inputs, N = 1,000 and 4,000, each in
   a fresh process): peak resident memory, which must not grow with N (the samples are streamed in
   shards and the top-k merged shard by shard).

Run::

    python benchmarks/bench_crp.py               # both parts
    python benchmarks/bench_crp.py --quick       # a smaller model for part 1, N = 500 / 2,000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _best(fn, repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def conditional_cost(quick: bool, repeats: int, channels: int) -> None:
    import keras
    import tensorflow as tf

    import interprettensor as it
    from interprettensor.engine.conditions import ConditionalExplainer

    if quick:
        model = keras.applications.VGG16(weights=None, input_shape=(112, 112, 3))
        size = 112
    else:
        model = keras.applications.VGG16(weights=None)
        size = 224
    layer = "block4_conv3"
    x = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype("float32")
    rule = "epsilon_plus"
    cx = ConditionalExplainer(model, rule, layers=[layer])
    conds = [{layer: c} for c in range(channels)]

    def batched():
        return cx.conditional(x, conds)

    _, lw = it.Explainer(model, rule)(x, layerwise=True)
    R_L = lw[layer]
    start = it.Explainer(model, rule, layer=layer)
    fn = start._function([tf.constant(x)], "relevance", False)
    xs = (tf.constant(x),)
    masks = [tf.constant(R_L * np.eye(R_L.shape[-1], dtype=np.float32)[c]) for c in range(channels)]

    def separate():
        for m in masks:
            np.asarray(fn(xs, m)[0][0])

    # the floor: one forward pass, and 32 backward passes from the layer as one batch
    t_batched = _best(batched, repeats)
    t_separate = _best(separate, repeats)
    print(f"VGG16 {size}x{size}, {layer}, {channels} channels, rule {rule}")
    print(f"  batched conditional heatmaps: {t_batched:7.3f} s")
    print(f"  {channels} separate compiled passes from the layer: {t_separate:7.3f} s")
    print(f"  ratio batched / separate: {t_batched / t_separate:.2f}  (target <= 0.6)")


def _child(n: int, out: str) -> None:
    import keras

    import interprettensor as it

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(16, 3, activation="relu", name="c1"),
                              keras.layers.MaxPooling2D(), keras.layers.Conv2D(32, 3, activation="relu", name="c2"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])

    def data():  # a generator: the data set itself is never in memory
        rng = np.random.default_rng(1)
        for _ in range(n):
            yield rng.uniform(0, 1, (32, 32, 3)).astype("float32")

    import tensorflow as tf

    ds = tf.data.Dataset.from_generator(data, output_signature=tf.TensorSpec((32, 32, 3), tf.float32))
    ds = ds.apply(tf.data.experimental.assert_cardinality(n))
    t0 = time.perf_counter()
    it.concepts.reference_examples(model, ds, ["c2"], out, k=8, shard_size=256, batch_size=64, crop_size=16,
                                   progress=False)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    print(json.dumps({"n": n, "seconds": seconds, "peak_mib": peak}))


def streaming_memory(sizes: list[int]) -> None:
    print("relevance maximisation (small CNN, 32x32, layer c2 with 32 channels, k=8, shards of 256):")
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as out:
            res = subprocess.run([sys.executable, __file__, "--child", str(n), out], capture_output=True, text=True)
            if res.returncode:
                print(res.stderr[-2000:])
                raise SystemExit(1)
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"  N = {n:6d}: {row['seconds']:6.1f} s, peak memory {row['peak_mib']:7.0f} MiB")
    print(f"  peak memory ratio N={sizes[-1]} / N={sizes[0]}: {rows[-1]['peak_mib'] / rows[0]['peak_mib']:.2f} "
          f"(streaming: about 1)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--part", choices=["all", "conditional", "memory"], default="all")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(int(args.child[0]), args.child[1])
        return
    if args.part in ("all", "conditional"):
        conditional_cost(args.quick, args.repeats, args.channels)
    if args.part in ("all", "memory"):
        streaming_memory([500, 2000] if args.quick else [1000, 4000])


if __name__ == "__main__":
    main()
