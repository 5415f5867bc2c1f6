"""AttnLRP on decoder language models at LLM shapes: time and peak memory against gradient x input,
checkpointed long prompts, and a model too big for float32 in 24 GiB.

Every measurement runs in its own process (a fresh Python, so that peak memory is that of one
method and timings do not share caches); models are keras_hub backbones built from configs with
random weights (nothing is downloaded):

* ``gemma3_1b``: Gemma 3 1B's shape (keras_hub ``Gemma3Backbone``: 26 layers, hidden 1152,
  intermediate 6912, 4 query heads and 1 key/value head of dim 256, vocabulary 262144, sliding window
  512 in five of six layers, query/key norms, post-attention and post-feed-forward norms);
* ``qwen3_0.6b``: Qwen 3 0.6B's shape (``Qwen3Backbone``: 28 layers, hidden 1024, intermediate 3072,
  16 query heads and 8 key/value heads of dim 128, vocabulary 151936, tied embeddings);
* ``llama3_8b``: Llama 3 8B's shape (``Llama3Backbone``: 32 layers, hidden 4096, intermediate 14336,
  32 query heads and 8 key/value heads, vocabulary 128256), built in bfloat16 (16 GB of weights;
  float32 would be 32 GB) and, with ``--int8``, quantised to int8 weights with Keras'
  ``model.quantize('int8')`` (about 8 GB).

Rows (batch 1, the next-token logit of the predicted token at the last position explained):

1. sequence 512: gradient x input at the token embeddings (the fastest compiled gradient: the tape
   watches the token embedding's output only, no variable; per token, the gradient there times the
   embedding summed over the hidden axis) against AttnLRP (``it.Explainer(model, 'attnlrp')``), time
   (median of ``--repeats`` calls after one warm-up call) and peak memory above the model's own
   (peak RSS of the process minus its peak after building the model and one forward pass);
2. sequence 4096: AttnLRP's peak memory without and with ``checkpoint=True``;
3. the 8B-shaped model on 256 tokens: AttnLRP's time and peak memory (or why it could not run). Its
   weights stay in bfloat16 (or int8); the explanation computes in float32 (``dtype='float32'``: each
   layer reads its weights as float32 when it runs). ``dtype='mixed_bfloat16'`` and the model's own
   bfloat16 do not run on a bfloat16-variable keras_hub model today (a dtype mismatch in the attention
   scale's relevance, and an autocast error in the token embedding). ``--int8`` (the bfloat16 model
   quantised with ``model.quantize('int8')``) does not run today either: the quantised layers keep
   computing in bfloat16 under the explanation's float32 (a bfloat16/float32 mismatch at the first
   residual add); the row prints the error. A float32 8B model (32 GB of weights) cannot be built in
   24 GiB, and Keras quantises a model only after building it in a float dtype.

``--quick``: the same rows on tiny shapes (2 layers, hidden 64, sequences 64 / 256 / 32; the long
prompt row for the Qwen-shaped model only, the 8B row checkpointed only), about two minutes on an idle 2-core CPU: a check that the
benchmark runs, not a measurement.
``--only``: a comma-separated subset of ``gemma3_1b,qwen3_0.6b,llama3_8b`` (and ``--rows``: of
``time,long,big``).

Run on the TensorFlow backend (``KERAS_BACKEND=tensorflow``, the default).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: the real models' shapes (keras_hub's backbone arguments); see the module docstring
SHAPES = {
    "gemma3_1b": dict(cls="Gemma3", vocabulary_size=262144, image_size=896, num_layers=26, num_query_heads=4,
                      num_key_value_heads=1, hidden_dim=1152, intermediate_dim=6912, head_dim=256,
                      query_head_dim_normalize=True, use_query_key_norm=True, use_post_ffw_norm=True,
                      use_post_attention_norm=True, use_sliding_window_attention=True, sliding_window_size=512),
    "qwen3_0.6b": dict(cls="Qwen3", vocabulary_size=151936, num_layers=28, num_query_heads=16, num_key_value_heads=8,
                       head_dim=128, hidden_dim=1024, intermediate_dim=3072, rope_max_wavelength=1_000_000,
                       tie_word_embeddings=True),
    "llama3_8b": dict(cls="Llama3", vocabulary_size=128256, num_layers=32, num_query_heads=32, num_key_value_heads=8,
                      hidden_dim=4096, intermediate_dim=14336, rope_max_wavelength=500_000),
}
#: ``--quick``: the same families, tiny
QUICK = {
    "gemma3_1b": dict(SHAPES["gemma3_1b"], vocabulary_size=1000, num_layers=2, hidden_dim=64, intermediate_dim=128,
                      head_dim=16, sliding_window_size=32),
    "qwen3_0.6b": dict(SHAPES["qwen3_0.6b"], vocabulary_size=1000, num_layers=2, hidden_dim=64, intermediate_dim=128,
                       num_query_heads=4, num_key_value_heads=2, head_dim=16),
    "llama3_8b": dict(SHAPES["llama3_8b"], vocabulary_size=1000, num_layers=2, hidden_dim=64, intermediate_dim=128,
                      num_query_heads=4, num_key_value_heads=2),
}
SEQ = {"time": 512, "long": 4096, "big": 256}
SEQ_QUICK = {"time": 64, "long": 256, "big": 32}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build(name: str, quick: bool, dtype: str | None = None, int8: bool = False):
    """The causal LM of ``name``'s shape with random weights (``dtype``: its variables' dtype)."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    cfg = dict((QUICK if quick else SHAPES)[name])
    cls = cfg.pop("cls")
    backbone = getattr(keras_hub.models, cls + "Backbone")(**cfg, dtype=dtype)
    model = getattr(keras_hub.models, cls + "CausalLM")(backbone=backbone, preprocessor=None)
    if int8:
        model.quantize("int8")
    return model


def inputs(seq: int, vocab: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return {"token_ids": rng.integers(1, vocab, (1, seq)).astype("int32"), "padding_mask": np.ones((1, seq), "int32")}


def gradient_x_input(model):
    """Per-token gradient x input of the last position's top logit at the token embedding's output,
    compiled; the tape watches that output only (no weight gradient is computed: LRP computes none)."""
    import tensorflow as tf

    layer = model.backbone.token_embedding
    call = layer.call

    @tf.function(jit_compile=False, autograph=False)
    def run(x):
        seen = []
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            def watched(inputs, *args, **kwargs):
                out = call(inputs, *args, **kwargs)
                if not kwargs.get("reverse", args[0] if args else False):  # the lookup, not the tied logits
                    tape.watch(out)
                    seen.append(out)
                return out

            layer.call = watched
            try:
                logits = model(x, training=False)
            finally:
                layer.call = call
            last = logits[:, -1]
            sel = tf.reduce_sum(last * tf.one_hot(tf.argmax(last, -1), tf.shape(last)[-1], dtype=last.dtype))
        if len(seen) != 1:
            raise RuntimeError(f"the token embedding was looked up {len(seen)} times; expected once")
        emb = seen[0]
        return tf.reduce_sum(tf.cast(tape.gradient(sel, emb) * emb, "float32"), -1)

    return run


def attnlrp(model, checkpoint=None, dtype=None):
    """AttnLRP of the last position's top logit: the explainer's compiled pass, called directly."""
    import tensorflow as tf

    import interprettensor as it

    explainer = it.Explainer(model, "attnlrp", checkpoint=checkpoint, dtype=dtype, verify=False)

    names = sorted(model.input.keys())

    def run(x):
        xs = tuple(tf.convert_to_tensor(x[k]) for k in names)
        explainer._activate_for(list(xs))
        fn = explainer._function(list(xs), "position", False)
        n = int(xs[0].shape[0])
        return fn(xs, tf.fill((n,), -1), tf.fill((n,), int(xs[0].shape[1]) - 1))[0]

    return run


def child(args) -> None:
    """One measurement in this process: prints one JSON line."""
    import numpy as np
    import tensorflow as tf

    dtype = "bfloat16" if args.model == "llama3_8b" else None
    model = build(args.model, args.quick, dtype=dtype, int8=args.int8)
    seq = (SEQ_QUICK if args.quick else SEQ)[args.row]
    x = inputs(seq, model.backbone.vocabulary_size)
    fwd = tf.function(lambda t: model(t, training=False), autograph=False)
    np.asarray(fwd(x))
    base = _peak_rss_mib()
    if args.method == "gradient":
        fn = gradient_x_input(model)
    else:
        fn = attnlrp(model, checkpoint=True if args.method == "attnlrp_checkpoint" else None,
                     dtype="float32" if dtype == "bfloat16" else None)
    times = []
    for _ in range(1 + args.repeats):
        t0 = time.perf_counter()
        out = fn(x)
        r = np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"base_mib": base, "peak_mib": _peak_rss_mib(), "time_s": statistics.median(times[1:]),
                      "first_s": times[0], "finite": bool(np.isfinite(r).all()), "seq": seq}))


def measure(model: str, row: str, method: str, quick: bool, repeats: int, int8: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", model, row, method, "--repeats", str(repeats)]
    cmd += ["--quick"] if quick else []
    cmd += ["--int8"] if int8 else []
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or [f"exit status {p.returncode}"]
        if p.returncode < 0 or p.returncode == 137:
            tail = [f"killed (signal {-p.returncode if p.returncode < 0 else 9}: out of memory?)"]
        return {"error": tail[0][:200]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _mib(r: dict) -> str:
    return "-" if "error" in r else f"{r['peak_mib'] - r['base_mib']:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny shapes: checks that the benchmark runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="gemma3_1b,qwen3_0.6b,llama3_8b")
    ap.add_argument("--rows", default="time,long,big")
    ap.add_argument("--int8", action="store_true", help="the 8B-shaped model quantised to int8 (else bfloat16)")
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "ROW", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.model, args.row, args.method = args.child
        child(args)
        return
    try:
        import keras_hub  # noqa: F401
    except ImportError:
        sys.exit("this benchmark needs keras_hub: pip install -e '.[hub]'")
    models = [m for m in args.only.split(",") if m]
    rows = set(args.rows.split(","))
    print(f"bench_llm{' --quick (tiny shapes: not a measurement)' if args.quick else ''}; batch 1; memory: peak RSS "
          f"above the model's own (MiB), one process per measurement")
    if "time" in rows:
        seq = (SEQ_QUICK if args.quick else SEQ)["time"]
        print("\n| model | seq | gradient x input (s) | AttnLRP (s) | ratio | grad mem | AttnLRP mem | ratio |")
        print("|---|---|---|---|---|---|---|---|")
        for m in models:
            if m == "llama3_8b":
                continue
            g = measure(m, "time", "gradient", args.quick, args.repeats)
            a = measure(m, "time", "attnlrp", args.quick, args.repeats)
            if "error" in g or "error" in a:
                print(f"| {m} | {seq} | {g.get('error', '')} | {a.get('error', '')} | | | | |")
                continue
            mg, ma = g["peak_mib"] - g["base_mib"], a["peak_mib"] - a["base_mib"]
            print(f"| {m} | {seq} | {g['time_s']:.3f} | {a['time_s']:.3f} | {a['time_s'] / g['time_s']:.2f} | "
                  f"{mg:.0f} | {ma:.0f} | {ma / max(mg, 1.0):.2f} |")
    if "long" in rows:
        seq = (SEQ_QUICK if args.quick else SEQ)["long"]
        print("\n| model | seq | AttnLRP mem | checkpoint=True mem | AttnLRP (s) | checkpointed (s) |")
        print("|---|---|---|---|---|---|")
        for m in models:
            if m == "llama3_8b" or (args.quick and m != "qwen3_0.6b" and "qwen3_0.6b" in models):
                continue  # --quick: one model shows the row works
            a = measure(m, "long", "attnlrp", args.quick, 1)
            c = measure(m, "long", "attnlrp_checkpoint", args.quick, 1)
            ta = a.get("time_s", float("nan"))
            tc = c.get("time_s", float("nan"))
            print(f"| {m} | {seq} | {_mib(a) if 'error' not in a else a['error']} | "
                  f"{_mib(c) if 'error' not in c else c['error']} | {ta:.2f} | {tc:.2f} |")
    if "big" in rows and "llama3_8b" in models:
        seq = (SEQ_QUICK if args.quick else SEQ)["big"]
        kind = "int8" if args.int8 else "bfloat16"
        print("\n| model | weights | seq | AttnLRP (s) | model RSS (MiB) | peak RSS (MiB) |")
        print("|---|---|---|---|---|---|")
        for method in ("attnlrp_checkpoint",) if args.quick else ("attnlrp", "attnlrp_checkpoint"):
            r = measure("llama3_8b", "big", method, args.quick, 1, int8=args.int8)
            label = "llama3_8b" + (" checkpoint=True" if method.endswith("checkpoint") else "")
            if "error" in r:
                print(f"| {label} | {kind} | {seq} | {r['error']} | | |")
            else:
                print(f"| {label} | {kind} | {seq} | {r['time_s']:.2f} | {r['base_mib']:.0f} | {r['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
