"""LRP on each Keras backend: its time over the same backend's gradient x input, measured in one run
(a script, not a timed test). Each backend runs in its own process (Keras picks its backend once per
process); the rows come back as JSON and are printed side by side::

    python benchmarks/bench_backends.py                  # VGG16 batch 8, BERT-base batch 8 x 128
    python benchmarks/bench_backends.py --quick          # small models (a minute)
    python benchmarks/bench_backends.py --backends jax   # some backends only

Both sides are compiled the same way on a backend (``tf.function``, ``jax.jit``; PyTorch eager), warmed
up, and timed alternately (best of ``--repeats``), returning NumPy arrays: gradient x input is one
vector-Jacobian product of the explained logit through the model (the engine's ``backend.vjp``),
LRP the explainer's call. On PyTorch the explainer's convolutions skip two layout copies that Keras'
``ops.conv`` makes per call (``backend.conv``); VGG16's rows there also time gradient x input with the
model's convolutions computed so (the fastest gradient of the same model), and print LRP's ratio to it. Models are built from configs with random weights (nothing downloads).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BACKENDS = ("tensorflow", "jax", "torch")
#: model -> rows: (label, rule, parameters)
ROWS = {"vgg16": [("epsilon", "epsilon", {"epsilon": 1e-6}), ("epsilon_gamma_box (gamma preset)", "epsilon_gamma_box",
                                                                 {"low": -3.0, "high": 3.0})],
        "bert": [("attnlrp", "attnlrp", {}), ("cp_lrp", "cp_lrp", {})]}


def build(name: str, quick: bool):
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    if name == "vgg16":
        size = 64 if quick else 224
        model = keras.applications.VGG16(weights=None, input_shape=(size, size, 3), classes=1000,
                                         classifier_activation=None)
        return model, rng.uniform(-3, 3, (8, size, size, 3)).astype("float32")
    import keras_hub

    dims = (dict(num_layers=2, num_heads=4, hidden_dim=64, intermediate_dim=128) if quick else
            dict(num_layers=12, num_heads=12, hidden_dim=768, intermediate_dim=3072))
    seq = 32 if quick else 128
    backbone = keras_hub.models.BertBackbone(vocabulary_size=30522, max_sequence_length=512, **dims)
    model = keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2, preprocessor=None)
    x = {"token_ids": rng.integers(1, 30522, (8, seq)).astype("int32"),
         "segment_ids": np.zeros((8, seq), "int32"), "padding_mask": np.ones((8, seq), "int32")}
    return model, x


def gradient_x_input(model, x, engine_conv: bool = False):
    """Gradient x input of the predicted logit (for token inputs: at the embedding output, as LRP).
    ``engine_conv``: the model's convolution layers compute with the engine's convolution
    (``backend.conv``, which LRP's passes use: on PyTorch without Keras' layout copies; elsewhere
    ``ops.conv`` itself), so that LRP is also compared with the fastest gradient of the same model."""
    import keras
    from keras import ops

    from interprettensor.engine import backend

    if not isinstance(x, dict):
        convs = [l for l in model._flatten_layers() if isinstance(l, keras.layers.Conv2D)] if engine_conv else []

        def fn(xs):
            for l in convs:  # the layer's call reads its convolution_op at every (eager) call or trace
                l.convolution_op = (lambda a, k, l=l: backend.conv(a, k, l.strides, l.padding, l.dilation_rate,
                                                                   l.data_format))
            try:
                out = model(xs[0], training=False)
            finally:
                for l in convs:
                    del l.convolution_op
            return ops.sum(out * ops.one_hot(ops.argmax(out, axis=-1), out.shape[-1], dtype=out.dtype))

        def grad_x(t):
            return backend.vjp(fn, [t], ops.ones((), t.dtype))[0] * t

        compiled = backend.compile(grad_x, [backend.spec((None,) + x.shape[1:], "float32")], variables=model.variables)
        t = ops.convert_to_tensor(x)
        return lambda: keras.ops.convert_to_numpy(compiled(t))
    emb = model.backbone.token_embedding

    def run(ids, seg, mask):
        rows = emb(ids)  # the batch's embedding rows: where LRP reads a token's relevance

        def fn(xs):
            emb.call = lambda *a, **k: xs[0]  # the model on the watched rows (at trace time)
            try:
                out = model({"token_ids": ids, "segment_ids": seg, "padding_mask": mask}, training=False)
            finally:
                del emb.call
            return ops.sum(out * ops.one_hot(ops.argmax(out, axis=-1), out.shape[-1], dtype=out.dtype))

        return ops.sum(backend.vjp(fn, [rows], ops.ones((), rows.dtype))[0] * rows, axis=-1)

    spec = [backend.spec((None, None), "int32")] * 3
    compiled = backend.compile(run, spec, variables=model.variables)
    args = [ops.convert_to_tensor(x[k]) for k in ("token_ids", "segment_ids", "padding_mask")]
    return lambda: keras.ops.convert_to_numpy(compiled(*args))


def paired_best(fns, repeats: int) -> list[float]:
    for fn in fns:  # trace / warm up
        fn()
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def worker(args) -> None:
    import keras

    import interprettensor as it

    for name in args.models:
        model, x = build(name, args.quick)
        grad = gradient_x_input(model, x)
        # on PyTorch LRP's convolutions skip Keras' layout copies (backend.conv): time the gradient so too
        fast = gradient_x_input(model, x, engine_conv=True) if name == "vgg16" and keras.backend.backend() == "torch" else None
        for label, rule, params in ROWS[name]:
            explainer = it.Explainer(model, rule=rule, **params)
            lrp = (lambda e=explainer: e(x))
            times = paired_best([lrp, grad] + ([fast] if fast else []), args.repeats)
            row = {"backend": keras.backend.backend(), "model": name, "rule": label, "lrp_s": times[0],
                   "grad_s": times[1], "ratio": times[0] / times[1]}
            if fast:
                row.update(grad_engine_conv_s=times[2], ratio_engine_conv=times[0] / times[2])
            print(json.dumps(row), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--models", nargs="+", choices=list(ROWS), default=list(ROWS))
    p.add_argument("--quick", action="store_true", help="small models (VGG16 at 64x64, a 2-layer BERT, sequence 32)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    rows = []
    for b in args.backends:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", b, "--models", *args.models,
               "--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, KERAS_BACKEND=b))
        got = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0:
            print(f"{b}: failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        rows += got
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{'quick models' if args.quick else 'VGG16 224x224 batch 8, BERT-base 128 tokens batch 8'}")
    print(f"{'model':8} {'rule':36} {'backend':11} {'LRP s':>8} {'grad x input s':>15} {'LRP/grad':>9}")
    for r in rows:
        print(f"{r['model']:8} {r['rule']:36} {r['backend']:11} {r['lrp_s']:8.3f} {r['grad_s']:15.3f} "
              f"{r['ratio']:9.2f}" + (f"   (gradient x input with the engine's convolutions {r['grad_engine_conv_s']:.3f} s:"
                                     f" LRP / it {r['ratio_engine_conv']:.2f})" if "grad_engine_conv_s" in r else ""))
    tf_rows = {(r["model"], r["rule"]): r for r in rows if r["backend"] == "tensorflow"}
    for r in rows:
        ref = tf_rows.get((r["model"], r["rule"]))
        if ref and r["backend"] != "tensorflow":
            print(f"{r['backend']:10} {r['model']:6} {r['rule']:36} ratio {r['ratio'] / ref['ratio']:.2f}x "
                  f"TensorFlow's; absolute LRP time {r['lrp_s'] / ref['lrp_s']:.2f}x TensorFlow's")


if __name__ == "__main__":
    main()
