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
  32 query heads and 8 key/value heads, vocabulary 128256, untied output projection): float32 weights
  would take 32 GB. ``--big int8`` (the default) builds it with int8 weights from the start (8.0 GB):
  the backbone takes a ``keras.dtype_policies.DTypePolicyMap`` giving its projections and embedding
  ``'int8_from_bfloat16'`` (the policy ``model.quantize('int8')`` gives a bfloat16 model's layers, and
  keras_hub's quantised presets load with), so that no float copy of the weights ever exists, then draws
  random int8 weights and scales in place (``model.quantize('int8')`` would first need the 16 GB
  bfloat16 model). ``--big bfloat16`` builds it in bfloat16 (16 GB of weights).

Rows (batch 1, the next-token logit of the predicted token at the last position explained):

1. sequence 512: gradient x input at the token embeddings (the fastest compiled gradient: the tape
   watches the token embedding's output only, no variable; per token, the gradient there times the
   embedding summed over the hidden axis) against AttnLRP (``it.Explainer(model, 'attnlrp')``), time
   (median of ``--repeats`` calls after one warm-up call) and peak memory above the model's own (see
   Memory below);
2. sequence 4096: AttnLRP's peak memory without and with ``checkpoint=True``;
3. the 8B-shaped model on 256 tokens: AttnLRP's time and memory, plain and with ``checkpoint=True``.
   The weights stay int8 (or bfloat16); the explanation computes as ``--big-dtype`` says: the default
   ``mixed_bfloat16`` runs the forward pass in bfloat16 and the relevance in float32 (the layers the
   backward pass calls again compute in float32 too); ``float32`` makes every layer compute in float32
   (the weights read as float32 when a layer runs); ``model`` explains in the model's own bfloat16.
   ``--big-layers N`` builds the same model with N of its 32 blocks (the same dtypes, quantisation and
   code path, less memory: one block is 0.22 GB of int8 weights next to 1.05 GB of embedding and output
   projection), to check the row on a machine that cannot hold the full model.

Memory (MiB; Linux): each child process resets its peak resident set (``/proc/self/clear_refs``) after
building the model and running it once, then reads its resident set (``VmRSS``: the model's own) and,
after the measurement, its peak (``VmHWM``); "above the model" is the difference. Row 1 also measures
each method's live memory, in two more processes with glibc returning freed blocks of 1 MiB or more to
the system at once (``MALLOC_MMAP_THRESHOLD_=1048576``; by default glibc keeps freed blocks of a few MB
in its heap depending on the order of allocations, and the peak of the same code moves by tens of
percent between runs): the peak of a call after the first above what the first left resident. The parent also reads
each child's lifetime peak from the kernel (``os.wait4``'s ``ru_maxrss``, the building included). Where
the peak cannot be reset, the child's ``getrusage`` peak is used (building included).

``--quick``: the same rows on tiny shapes (2 layers, hidden 64, sequences 64 / 256 / 32; the long
prompt row for the Qwen-shaped model only, the 8B row (built the same way, int8 by default)
checkpointed only), about two minutes on an idle 2-core CPU: a check that the benchmark runs, not a
measurement.
``--long-layers N``: row 2's models with N of their blocks (the same shapes otherwise), for a machine
without the time for the full models at 4096 tokens. ``--long-methods`` / ``--big-methods``: row 2's
/ row 3's plain and / or checkpointed run. A run that the machine cannot hold is reported as killed
(out of memory) in its cell.
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


#: the layers that ``model.quantize('int8')`` quantises in a Llama 3 backbone, as a pattern of layer
#: paths (``transformer_layer_3/self_attention/query``, ``token_embedding``) for a ``DTypePolicyMap``:
#: the attention and feed-forward projections and the token embedding (with its output projection)
INT8_LAYERS = (r"(.*/)?(token_embedding|query|key|value|attention_output|feedforward_gate_dense|"
               r"feedforward_intermediate_dense|feedforward_output_dense)")
#: the standard deviation of the random int8 model's dequantised weights (``q / s``, ``q`` uniform on
#: -127..127: standard deviation 73.3)
INT8_STD = 0.02


def _status_mib(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status`` (MiB), None where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_peak() -> tuple[float, bool]:
    """Reset this process's peak resident set to its current one (Linux: ``5`` to
    ``/proc/self/clear_refs``); returns ``(current RSS in MiB, whether the reset worked)``, else the
    lifetime peak so far (``getrusage``) and False."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        rss = _status_mib("VmRSS")
        if rss is not None:
            return rss, True
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, False


def _peak_mib() -> float:
    """This process's peak resident set since :func:`_reset_peak` (MiB)."""
    hwm = _status_mib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _random_int8(model, seed: int = 0) -> int:
    """Random int8 weights and scales, in place, for the int8 layers of ``model`` (built with int8
    variables initialised to 0 and scales to 1): ``q`` uniform on -127..127, every scale ``73.3 /
    INT8_STD``, so that the dequantised weights ``q / s`` have standard deviation ``INT8_STD``; returns
    the bytes of int8 weights. One variable at a time: the float copy never exists."""
    import numpy as np

    rng = np.random.default_rng(seed)
    scale = float(np.sqrt(((np.arange(-127, 128, dtype=np.float64)) ** 2).mean())) / INT8_STD
    n = 0
    for layer in model._flatten_layers():
        if getattr(layer, "quantization_mode", None) != "int8":
            continue
        for v in layer.weights:
            if v.dtype == "int8":
                v.assign(rng.integers(-127, 128, tuple(v.shape), dtype=np.int8))
                n += int(np.prod(v.shape))
            elif v.path.endswith("scale"):
                v.assign(np.full(tuple(v.shape), scale, np.float32).astype(v.dtype))
            else:
                raise RuntimeError(f"int8 layer {layer.path!r} has a float weight {v.path!r} that is no scale")
    return n


def build(name: str, quick: bool, dtype: str | None = None, layers: int | None = None):
    """The causal LM of ``name``'s shape with random weights: ``dtype`` None (float32), ``'bfloat16'``,
    or ``'int8'`` (int8 projections and embedding from the start, bfloat16 elsewhere; see the module);
    ``layers``: that many blocks instead of the shape's."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    cfg = dict((QUICK if quick else SHAPES)[name])
    cls = cfg.pop("cls")
    if layers:
        cfg["num_layers"] = layers
    policy = dtype
    if dtype == "int8":
        policy = keras.dtype_policies.DTypePolicyMap(
            default_policy="bfloat16", policy_map={INT8_LAYERS: keras.dtype_policies.get("int8_from_bfloat16")})
    backbone = getattr(keras_hub.models, cls + "Backbone")(**cfg, dtype=policy)
    model = getattr(keras_hub.models, cls + "CausalLM")(backbone=backbone, preprocessor=None)
    if dtype == "int8":
        quantised = [lay for lay in model._flatten_layers() if getattr(lay, "quantization_mode", None)]
        if len(quantised) != 7 * cfg["num_layers"] + 1:
            raise RuntimeError(f"{len(quantised)} int8 layers; expected 7 per block and the embedding")
        _random_int8(model)
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
        fn = explainer._function(list(xs), "position", False, outputs=False)  # as a checked explainer's calls
        n = int(xs[0].shape[0])
        # the relevance of each input, in the order of the sorted names (``keras.tree.flatten`` of the dict)
        return fn(xs, tf.fill((n,), -1), tf.fill((n,), int(xs[0].shape[1]) - 1))[0][names.index("token_ids")]

    return run


#: ``--big-dtype``: the explainer's ``dtype=`` for the 8B-shaped model
BIG_DTYPES = {"mixed_bfloat16": "mixed_bfloat16", "float32": "float32", "model": None}


def child(args) -> None:
    """One measurement in this process: prints one JSON line."""
    import numpy as np
    import tensorflow as tf

    big = args.model == "llama3_8b"
    model = build(args.model, args.quick, dtype=args.big if big else None,
                  layers=args.big_layers if big else (args.long_layers if args.row == "long" else None))
    seq = (SEQ_QUICK if args.quick else SEQ)[args.row]
    x = inputs(seq, model.backbone.vocabulary_size)
    fwd = tf.function(lambda t: model(t, training=False), autograph=False)
    np.asarray(fwd(x))
    built_peak = _peak_mib()
    base, reset = _reset_peak()
    if args.method == "gradient":
        fn = gradient_x_input(model)
    else:
        fn = attnlrp(model, checkpoint=True if args.method == "attnlrp_checkpoint" else None,
                     dtype=BIG_DTYPES[args.big_dtype] if big else None)
    times = []
    first_peak = later_base = None
    for i in range(1 + args.repeats):
        t0 = time.perf_counter()
        out = fn(x)
        r = np.asarray(out)
        times.append(time.perf_counter() - t0)
        if i == 0 and args.repeats:  # the later calls' peak alone: beyond what the first left resident
            first_peak = _peak_mib()
            later_base, _ = _reset_peak()
    peak = _peak_mib()
    size = {"int8": 1, "uint8": 1, "bfloat16": 2, "float16": 2, "float32": 4, "int32": 4, "float64": 8}
    weights = sum(int(np.prod(v.shape)) * size[str(v.dtype)] for v in model.weights)
    print(json.dumps({"base_mib": base, "peak_mib": max(peak, first_peak or 0.0), "peak_reset": reset,
                      "later_base_mib": later_base, "later_peak_mib": peak if first_peak is not None else None,
                      "built_peak_mib": built_peak,
                      "weights_mib": weights / 2**20, "time_s": statistics.median(times[1:]),
                      "first_s": times[0], "finite": bool(np.isfinite(r).all()),
                      "nonzero": bool(np.abs(r.astype(np.float32)).sum() > 0), "seq": seq}))


#: ``live`` measurements: glibc's malloc returns a freed block of at least 1 MiB to the system at once
#: (its default threshold grows with the blocks freed, up to 32 MiB, and the heap keeps the rest, so
#: the peak resident set of the same code moves with the order of allocations), so that the peak
#: resident set follows the tensors alive at each moment
LIVE_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


def measure(model: str, row: str, method: str, args, repeats: int, live: bool = False) -> dict:
    """One measurement in a fresh process (``live``: with :data:`LIVE_ENV`); adds the child's lifetime
    peak RSS as the kernel reports it for that process alone (``os.wait4``'s ``ru_maxrss``, MiB)."""
    import tempfile

    cmd = [sys.executable, __file__, "--child", model, row, method, "--repeats", str(repeats),
           "--big", args.big, "--big-dtype", args.big_dtype]
    cmd += ["--quick"] if args.quick else []
    cmd += ["--big-layers", str(args.big_layers)] if args.big_layers else []
    cmd += ["--long-layers", str(args.long_layers)] if args.long_layers else []
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                             env=dict(os.environ, **LIVE_ENV) if live else None)
        stdout = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        p.stdout.close()
        err.seek(0)
        stderr = err.read()
    if p.returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-1:] or [f"exit status {p.returncode}"]
        if p.returncode < 0 or p.returncode == 137:
            tail = [f"killed (signal {-p.returncode if p.returncode < 0 else 9}: out of memory?)"]
        return {"error": tail[0][:200]}
    out = json.loads(stdout.strip().splitlines()[-1])
    out["process_peak_mib"] = usage.ru_maxrss / 1024.0
    return out


def _methods(value: str, flag: str) -> list[str]:
    """The comma-separated methods of ``--long-methods`` / ``--big-methods``, checked before anything runs."""
    methods = [m for m in value.split(",") if m]
    bad = set(methods) - {"attnlrp", "attnlrp_checkpoint"}
    if bad:
        sys.exit(f"{flag}: unknown {sorted(bad)}; choose from attnlrp,attnlrp_checkpoint")
    return methods


def _mib(r: dict) -> str:
    return "-" if "error" in r else f"{r['peak_mib'] - r['base_mib']:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny shapes: checks that the benchmark runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="gemma3_1b,qwen3_0.6b,llama3_8b")
    ap.add_argument("--rows", default="time,long,big")
    ap.add_argument("--big", choices=("int8", "bfloat16"), default="int8",
                    help="the 8B-shaped model's weights: int8 from the start (8 GB) or bfloat16 (16 GB)")
    ap.add_argument("--big-dtype", choices=tuple(BIG_DTYPES), default="mixed_bfloat16",
                    help="the explainer's dtype for the 8B-shaped model ('model': its own bfloat16)")
    ap.add_argument("--big-layers", type=int, default=None,
                    help="the 8B-shaped model with this many of its blocks (the same code path, less memory)")
    ap.add_argument("--long-methods", default="attnlrp,attnlrp_checkpoint",
                    help="row 2's plain and / or checkpointed run (comma-separated)")
    ap.add_argument("--long-layers", type=int, default=None,
                    help="the long-prompt row's models with this many of their blocks (less time and memory)")
    ap.add_argument("--big-methods", default="attnlrp,attnlrp_checkpoint",
                    help="the 8B row's runs: a comma-separated subset of attnlrp,attnlrp_checkpoint (plain needs "
                         "the most memory)")
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "ROW", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.model, args.row, args.method = args.child
        child(args)
        return
    import importlib.util

    if importlib.util.find_spec("keras_hub") is None:  # not imported here: the parent stays small
        sys.exit("this benchmark needs keras_hub: pip install -e '.[hub]'")
    models = [m for m in args.only.split(",") if m]
    rows = set(args.rows.split(","))
    long_methods, big_methods = _methods(args.long_methods, "--long-methods"), _methods(args.big_methods, "--big-methods")
    print(f"bench_llm{' --quick (tiny shapes: not a measurement)' if args.quick else ''}; batch 1; memory: peak RSS "
          f"above the model's own (MiB), one process per measurement")
    if args.big_layers and "big" in rows and "llama3_8b" in models:
        print(f"(llama3_8b with {args.big_layers} of its blocks: --big-layers; not the full model)")
    if args.long_layers and "long" in rows:
        print(f"(the long-prompt row's models with {args.long_layers} of their blocks: --long-layers; not the full "
              f"models)")
    small = [m for m in models if m != "llama3_8b"]
    if "time" in rows and small:
        seq = (SEQ_QUICK if args.quick else SEQ)["time"]
        print("(mem: the peak above the model over all calls, glibc's default allocator; live: a later call's "
              f"peak above what the first left resident, in another process with "
              f"MALLOC_MMAP_THRESHOLD_={LIVE_ENV['MALLOC_MMAP_THRESHOLD_']}: freed blocks returned at once)")
        print("\n| model | seq | gradient x input (s) | AttnLRP (s) | ratio | grad mem | AttnLRP mem | ratio | "
              "grad live | AttnLRP live | ratio |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for m in models:
            if m == "llama3_8b":
                continue
            g = measure(m, "time", "gradient", args, args.repeats)
            a = measure(m, "time", "attnlrp", args, args.repeats)
            gl = measure(m, "time", "gradient", args, 1, live=True)
            al = measure(m, "time", "attnlrp", args, 1, live=True)
            bad = [r["error"] for r in (g, a, gl, al) if "error" in r]
            if bad:
                print(f"| {m} | {seq} | {'; '.join(bad)} | | | | | | | | |")
                continue
            mg, ma = g["peak_mib"] - g["base_mib"], a["peak_mib"] - a["base_mib"]
            lg, la = (r["later_peak_mib"] - r["later_base_mib"] for r in (gl, al))
            print(f"| {m} | {seq} | {g['time_s']:.3f} | {a['time_s']:.3f} | {a['time_s'] / g['time_s']:.2f} | "
                  f"{mg:.0f} | {ma:.0f} | {ma / max(mg, 1.0):.2f} | {lg:.0f} | {la:.0f} | {la / max(lg, 1.0):.2f} |")
    if "long" in rows and small:
        seq = (SEQ_QUICK if args.quick else SEQ)["long"]
        print("\n| model | seq | AttnLRP mem | checkpoint=True mem | AttnLRP (s) | checkpointed (s) |")
        print("|---|---|---|---|---|---|")
        for m in models:
            if m == "llama3_8b" or (args.quick and m != "qwen3_0.6b" and "qwen3_0.6b" in models):
                continue  # --quick: one model shows the row works
            skipped = {"error": "not run (--long-methods)"}
            a = measure(m, "long", "attnlrp", args, 1) if "attnlrp" in long_methods else skipped
            c = measure(m, "long", "attnlrp_checkpoint", args, 1) if "attnlrp_checkpoint" in long_methods else skipped
            ta, tc = (f"{r['time_s']:.2f}" if "time_s" in r else "-" for r in (a, c))
            print(f"| {m} | {seq} | {_mib(a) if 'error' not in a else a['error']} | "
                  f"{_mib(c) if 'error' not in c else c['error']} | {ta} | {tc} |")
    if "big" in rows and "llama3_8b" in models:
        seq = (SEQ_QUICK if args.quick else SEQ)["big"]
        blocks = args.big_layers or (QUICK if args.quick else SHAPES)["llama3_8b"]["num_layers"]
        print("\n| model | weights | blocks | explained in | seq | AttnLRP (s) | weights (MiB) | model RSS (MiB) | "
              "peak RSS (MiB) | above the model | process peak (MiB) | finite |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for method in ("attnlrp_checkpoint",) if args.quick else big_methods:
            r = measure("llama3_8b", "big", method, args, 1)
            label = "llama3_8b" + (" checkpoint=True" if method.endswith("checkpoint") else "")
            head = f"| {label} | {args.big} | {blocks} | {args.big_dtype} | {seq} |"
            if "error" in r:
                print(f"{head} {r['error']} | | | | | | |")
            else:
                above = f"{r['peak_mib'] - r['base_mib']:.0f}" + ("" if r["peak_reset"] else " (peak not reset)")
                print(f"{head} {r['time_s']:.2f} | {r['weights_mib']:.0f} | {r['base_mib']:.0f} | "
                      f"{r['peak_mib']:.0f} | {above} | {r['process_peak_mib']:.0f} | {r['finite'] and r['nonzero']} |")


if __name__ == "__main__":
    main()
