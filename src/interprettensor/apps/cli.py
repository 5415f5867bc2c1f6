"""The ``interprettensor`` command (also ``python -m interprettensor``).

Subcommands:

* ``demo``: train the original convolutional network on the embedded digits (or load the pretrained
  one with ``--pretrained``), explain test digits with the five original variants and a composite,
  write ``OUT/demo_heatmaps.png`` and TensorBoard logs in ``OUT/logs``;
* ``demo-text``: train a small transformer on generated sentences whose class is decided by one marker
  word, explain them with AttnLRP and CP-LRP, measure how often the marker gets the most relevance;
  writes ``OUT/text_demo.html``, ``OUT/text_demo.png`` and ``OUT/text_demo_summary.json``;
* ``train``: train one of the original examples' networks and save it as ``.keras``;
* ``explain``: explain a saved Keras model on image files, folders or ``.npy`` arrays; writes a
  picture per input (heatmap and overlay for images, a bar chart for feature vectors, a strip per
  channel for sequences) and ``relevances.npz`` (or shards with ``--shard-size``; the same arrays,
  see :func:`interprettensor.load_relevances`; ``--worker I/N`` for one of several processes).
* ``explain-text``: explain a text model (a transformer) on token ids (``.npy``, ``.txt``) or, for a keras_hub
  task saved with its preprocessor, on texts; writes ``OUT/relevances.npz``, ``OUT/explanations.html`` and
  ``OUT/explanations.png`` (see :mod:`interprettensor.apps.explain_text`).
* ``finalize``: check that a sharded run of several workers is complete and write its manifest.
* ``evaluate``: region perturbation (pixel flipping, AOPC) of several explanation methods on a saved
  model or the digits CNN; writes ``OUT/curves.png`` and ``OUT/aopc.csv`` (``--sanity``: also the
  model-randomisation check).

Errors are reported as ``error: <message>`` on stderr with exit status 1 (2 for usage errors); use
``--debug`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import Any, Sequence

__all__ = ["main", "build_parser", "CLIError"]

RULE_PARAMS = ("epsilon", "alpha", "beta", "gamma", "low", "high")
#: product rules for recurrent cells' gates (``--gates``; :mod:`interprettensor.engine.operation_rules`)
GATE_RULES = ("gate", "signal_take_all", "half", "proportional", "proportional_abs")


#: the labels of :data:`interprettensor.evaluate.DEFAULT_METHODS`, for ``evaluate --help`` without
#: importing TensorFlow (a test keeps the two lists equal)
DEFAULT_METHOD_NAMES = ("epsilon_gamma_box", "epsilon_plus", "epsilon_alpha2_beta1", "epsilon", "gradient",
                        "input_x_gradient", "smoothgrad", "integrated_gradients", "deconvnet", "random")


#: rules and presets that apply the z^B (box) rule and need the input's bounds ``low``/``high``
BOX_RULES = ("zbox", "epsilon_gamma_box", "bounded_deep_taylor")


def needs_box(rule: str) -> bool:
    """Whether the rule or preset ``rule`` needs ``low``/``high``: the names in :data:`BOX_RULES` and any
    name containing ``box`` (but not the ``toolbox_*`` presets)."""
    key = str(rule).lower().replace("-", "_")
    return key in BOX_RULES or "box" in key.replace("toolbox", "")


from ..io.inputs import InputError, collect_inputs, load_image, load_model, model_input_shape, shape_str  # noqa: E402
from ..engine.errors import InterpretTensorError  # noqa: E402


class CLIError(InterpretTensorError):
    """An expected failure: reported as ``error: <message>`` without a traceback."""


# ---------------------------------------------------------------------------------------------- parser
#: subcommands defined in their own modules under ``apps/commands/`` (each has ``add_parser(sub, common)``
#: and sets ``func``; the module imports neither TensorFlow nor Keras, so that ``--help`` stays fast)
SUBCOMMANDS: tuple[str, ...] = ("concepts", "view", "spray", "digits")

def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``interprettensor`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars or progress messages")
    common.add_argument("--debug", action="store_true", help="show the traceback of errors")

    p = argparse.ArgumentParser(
        prog="interprettensor",
        description="Layer-wise Relevance Propagation (LRP) for TensorFlow 2 / Keras 3.",
        epilog="Run 'interprettensor COMMAND --help' for the options of a command.")
    from .. import __version__

    p.add_argument("--version", action="version", version=f"interprettensor {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", parents=[common], help="train (or load) the original CNN and explain test digits",
                       description="Train the original convolutional network on scikit-learn's 8x8 digits "
                                   "(prepared into the MNIST frame; no download), or load the original "
                                   "pretrained MNIST CNN with --pretrained; explain a grid of test digits "
                                   "with the five original LRP variants and the epsilon-gamma-box composite; "
                                   "write OUT/demo_heatmaps.png and TensorBoard logs in OUT/logs; print the "
                                   "test accuracy and each method's relevance sum against the explained output.")
    d.add_argument("--out", default="output/demo", help="output folder (default: %(default)s)")
    d.add_argument("--pretrained", action="store_true", help="use the original project's pretrained CNN")
    d.add_argument("--epochs", type=_positive_int, default=10, help="training epochs (default: %(default)s)")
    d.add_argument("--n", type=_positive_int, default=8, help="test digits to explain (default: %(default)s)")
    d.add_argument("--batch-size", type=_positive_int, default=32, help="training batch size (default: %(default)s)")
    d.add_argument("--learning-rate", type=_positive_float, default=3e-3, help="Adam learning rate (default: %(default)s)")
    d.add_argument("--cmap", default="bwr", help="colour map: bwr, coldnhot or a matplotlib name (default: %(default)s)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    d.set_defaults(func=cmd_demo)
    _demo_text_parser(sub, common)

    t = sub.add_parser("train", parents=[common], help="train one of the original example networks",
                       description="Train the original examples' linear or convolutional network and save "
                                   "it as a Keras model (.keras) that 'explain' (or keras.models.load_model) "
                                   "reads. The model takes 28x28x1 images in [0, 1].")
    t.add_argument("--dataset", default="digits", choices=["digits", "mnist", "fashion_mnist"],
                   help="digits: embedded, no download (default); mnist, fashion_mnist: downloaded into "
                        "--data-dir and checked against their official checksums")
    t.add_argument("--arch", default="convolutional", choices=["linear", "convolutional"],
                   help="network (default: %(default)s)")
    t.add_argument("--epochs", type=_positive_int, default=10, help="training epochs (default: %(default)s)")
    t.add_argument("--batch-size", type=_positive_int, default=32, help="batch size (default: %(default)s)")
    t.add_argument("--learning-rate", type=_positive_float, default=None,
                   help="Adam learning rate (default: 3e-3 convolutional, 1e-3 linear)")
    t.add_argument("--dropout", type=_keep_prob, default=1.0,
                   help="keep probability of the hidden layers' dropout, as in the original (default: 1, none)")
    t.add_argument("--out", default="model.keras", help="where to save the model, a .keras file (default: %(default)s)")
    t.add_argument("--data-dir", default=None, help="download cache for mnist/fashion_mnist "
                                                    "(default: $INTERPRETTENSOR_CACHE or ~/.cache/interprettensor)")
    t.add_argument("--logdir", default=None, help="also write TensorBoard logs (loss, accuracy per epoch) here")
    t.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("explain", parents=[common], help="explain a saved Keras model on images or arrays",
                       description="Explain a saved Keras model (.keras or .h5) with LRP. INPUTS are image "
                                   "files (PNG, JPEG, ...), folders of them, or .npy arrays (one sample or a "
                                   "batch, used as they are). Writes a picture per input: NAME_heatmap.png "
                                   "and NAME_overlay.png for images, NAME_bars.png (relevance per feature) "
                                   "for feature vectors (N, F), NAME_strip.png (channels over time) for "
                                   "sequences (N, T, C); and OUT/relevances.npz (relevance, indices, targets, "
                                   "outputs, valid, names; labels with --labels or from class subfolders; read it with "
                                   "interprettensor.load_relevances). "
                                   "With --shard-size N the inputs are streamed and written as "
                                   "OUT/shard-00000.npz, ... (the same arrays) and OUT/manifest.json; an "
                                   "interrupted run continues with --resume. Inputs with NaN or inf stop the "
                                   "run with an error naming them, unless --skip-nonfinite.")
    e.add_argument("model", help="a saved Keras model (.keras, .h5)")
    e.add_argument("inputs", nargs="+", help="image files, folders, or .npy arrays")
    e.add_argument("--rule", default="epsilon",
                   help="rule (simple, epsilon, flat, ww, alphabeta, gamma, zplus, ...) or preset "
                        "(epsilon_gamma_box, epsilon_plus, preset_a, ...); default: %(default)s")
    for name, hlp in [("epsilon", "epsilon of the epsilon rule"), ("alpha", "alpha of alpha-beta"),
                      ("beta", "beta of alpha-beta"), ("gamma", "gamma of the gamma rule"),
                      ("low", "lowest input value, for box rules (zbox, epsilon_gamma_box, bounded_deep_taylor, "
                              "any name with 'box'); default for images: LOW of --input-range; .npy arrays "
                              "need it"),
                      ("high", "highest input value, for box rules; default for images: HIGH of --input-range; "
                               ".npy arrays need it")]:
        e.add_argument(f"--{name}", type=float, default=None, help=hlp)
    e.add_argument("--gates", choices=GATE_RULES, default=None,
                   help="rule for the gate x signal products inside LSTM/GRU cells: gate (all to the signal, "
                        "Arras et al. 2017; the default), half, proportional, proportional_abs (Arras et al. 2019)")
    e.add_argument("--target", type=int, default=None, help="class to explain (default: the predicted class)")
    e.add_argument("--out", default="explanations", help="output folder (default: %(default)s)")
    e.add_argument("--batch-size", type=_positive_int, default=64, help="inputs per LRP pass (default: %(default)s)")
    e.add_argument("--input-range", type=float, nargs=2, default=(0.0, 1.0), metavar=("LOW", "HIGH"),
                   help="image pixels 0..255 are mapped to LOW..HIGH (default: 0 1); .npy arrays are used as they are")
    e.add_argument("--color-mode", choices=["auto", "grayscale", "rgb"], default="auto",
                   help="auto: the image must have the model's channel count; grayscale/rgb: convert")
    e.add_argument("--resize", action="store_true", help="resize images to the model's input size")
    e.add_argument("--cmap", default="bwr", help="colour map: bwr, coldnhot or a matplotlib name (default: %(default)s)")
    e.add_argument("--normalize", choices=["maxabs", "percentile"], default="maxabs",
                   help="per-sample heatmap scaling (default: %(default)s)")
    e.add_argument("--percentile", type=float, default=99.5, help="for --normalize percentile (default: %(default)s)")
    e.add_argument("--scale", type=_positive_int, default=None,
                   help="enlarge heatmap PNGs by this factor (default: up to about 224 pixels)")
    e.add_argument("--no-png", action="store_true", help="write only relevances.npz")
    e.add_argument("--store-inputs", action="store_true",
                   help="also store the inputs as explained (array 'inputs', float32) in relevances.npz / the "
                        "shards, e.g. for 'interprettensor view'")
    e.add_argument("--labels", default=None, metavar="FILE",
                   help="the inputs' class labels, stored as 'labels' (e.g. for the viewer's label filter): a .npy "
                        "array (N,) or a text file with one integer per line, one per input in the order the inputs "
                        "are read (folders sorted by file name), -1 for unknown. Without it, a folder of class "
                        "subfolders (digits/0/*.png, digits/1/*.png, ...) gives the labels: integer subfolder "
                        "names are the classes, other names are sorted into classes 0..K-1 (OUT/classes.json)")
    e.add_argument("--shard-size", type=_positive_int, default=None, metavar="N",
                   help="stream the inputs and write OUT/shard-00000.npz, ... (N inputs each) and "
                        "OUT/manifest.json instead of relevances.npz; an interrupted run continues with --resume")
    e.add_argument("--skip-nonfinite", action="store_true",
                   help="explain the inputs without NaN or infinite values and give those relevance 0 and valid "
                        "False in relevances.npz / the shards (default: stop with an error naming them)")
    e.add_argument("--worker", default=None, metavar="I/N",
                   help="with --shard-size: be worker I of N independent processes sharing OUT (explains the "
                        "shards k with k %% N == I), or 'auto' inside a Slurm job array or a Kubernetes indexed job "
                        "(INTERPRETTENSOR_NUM_WORKERS); the last worker to finish writes OUT/manifest.json, "
                        "'interprettensor finalize OUT' checks the run")
    e.add_argument("--resume", action="store_true",
                   help="continue the sharded run in OUT after its last complete shard (same model, rule, inputs)")
    e.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16", "mixed_float16",
                                                     "mixed_bfloat16"],
                   help="compute precision (default: the model's); mixed_*: low-precision forward, float32 relevance")
    e.set_defaults(func=cmd_explain)
    _evaluate_parser(sub, common)
    _explain_text_parser(sub, common)
    f = sub.add_parser("finalize", parents=[common], help="check a sharded run of several workers and complete it",
                       description="Check that every shard of the sharded run in OUT (written by 'explain "
                                   "--shard-size N --worker I/N' processes) is there and holds its samples, and "
                                   "write OUT/manifest.json; names the missing shards and their workers otherwise.")
    f.add_argument("out", metavar="OUT", help="the run directory")
    f.set_defaults(func=cmd_finalize)
    for name in SUBCOMMANDS:  # each module: add_parser(sub, common), importable without TensorFlow
        importlib.import_module(f"{__package__}.commands.{name}").add_parser(sub, common)
    return p


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}")
    return v


def _keep_prob(s: str) -> float:
    v = _positive_float(s)
    if v > 1:
        raise argparse.ArgumentTypeError(f"a keep probability is in (0, 1], got {s!r}")
    return v


# ---------------------------------------------------------------------------------------------- helpers
def _check_range(option: str, pair: Sequence[float]) -> None:
    lo, hi = (float(v) for v in pair)
    if not (lo < hi):  # also NaN
        raise CLIError(f"{option}: the low value must be below the high value, got {lo:g} and {hi:g}")


def _say(args: argparse.Namespace, msg: str) -> None:
    if not args.quiet:
        print(msg, flush=True)


def prepare_out_dir(path: str) -> str:
    """Create ``path`` and check that files can be written into it."""
    import tempfile

    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
            pass
    except OSError as e:
        raise CLIError(f"cannot write to the output folder {path!r}: {e.strerror or e}") from None
    return path


# ---------------------------------------------------------------------------------------------- commands
def cmd_demo(args: argparse.Namespace) -> int:
    """``interprettensor demo``."""
    from ..io.render import get_cmap
    from .demo import format_table, run_demo

    get_cmap(args.cmap)
    prepare_out_dir(args.out)
    res = run_demo(args.out, epochs=args.epochs, n=args.n, pretrained=args.pretrained, batch_size=args.batch_size,
                   learning_rate=args.learning_rate, cmap=args.cmap, quiet=args.quiet, seed=args.seed,
                   echo=lambda m: _say(args, m))
    print(f"test accuracy: {res.accuracy:.4f}")
    if res.aopc is not None:
        print(res.aopc.table())
    print(f"relevance sum vs explained output (mean over {args.n} test digits):")
    print(format_table(res.rows))
    print(f"heatmaps: {res.png}")
    print(f"TensorBoard logs: {res.logdir}  (view with: tensorboard --logdir={res.logdir})")
    _say(args, f"done in {res.seconds:.1f} s")
    return 0


def _demo_text_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``demo-text`` subcommand's arguments (built without importing TensorFlow)."""
    d = sub.add_parser("demo-text", parents=[common],
                       help="train a small transformer on generated sentences and explain it (known answer)",
                       description="Generate sentences ([CLS], 8-16 filler words, exactly one marker word: "
                                   "'excellent', 'terrible' or 'average' for classes 0, 1, 2; no download), "
                                   "train a small transformer encoder (embeddings, MultiHeadAttention with a "
                                   "padding mask, LayerNormalization, feed-forward, mean over tokens) to find "
                                   "the class, explain the correctly classified test sentences with AttnLRP "
                                   "and CP-LRP, and print how often the marker is the token with the most "
                                   "relevance. Writes OUT/text_demo.html and OUT/text_demo.png (example "
                                   "sentences coloured by relevance) and OUT/text_demo_summary.json.")
    d.add_argument("--out", default="output/demo_text", help="output folder (default: %(default)s)")
    d.add_argument("--epochs", type=_positive_int, default=3, help="training epochs (default: %(default)s)")
    d.add_argument("--train-size", type=_positive_int, default=3000, metavar="N",
                   help="generated training sentences (default: %(default)s)")
    d.add_argument("--test-size", type=_positive_int, default=500, metavar="N",
                   help="generated test sentences, all explained when classified correctly (default: %(default)s)")
    d.add_argument("--examples", type=_positive_int, default=6, metavar="N",
                   help="example sentences in the HTML and PNG (default: %(default)s)")
    d.add_argument("--blocks", type=_positive_int, default=2, help="transformer blocks (default: %(default)s)")
    d.add_argument("--batch-size", type=_positive_int, default=64, help="training batch size (default: %(default)s)")
    d.add_argument("--learning-rate", type=_positive_float, default=3e-3,
                   help="Adam learning rate (default: %(default)s)")
    d.add_argument("--cmap", default="bwr", help="colour map: bwr, coldnhot or a matplotlib name (default: %(default)s)")
    d.add_argument("--seed", type=int, default=0, help="random seed of the data and the training (default: %(default)s)")
    d.add_argument("--arch", choices=("transformer", "lstm", "gru"), default="transformer",
                   help="model: the transformer (AttnLRP, CP-LRP) or Embedding(mask_zero) -> LSTM/GRU -> Dense "
                        "(LRP epsilon and gradient x input; outputs OUT/text_demo_ARCH.*) (default: %(default)s)")
    d.set_defaults(func=cmd_demo_text)


def cmd_demo_text(args: argparse.Namespace) -> int:
    """``interprettensor demo-text``: :func:`interprettensor.apps.demo_text.run_text_demo`."""
    from ..io.render import get_cmap

    get_cmap(args.cmap)
    prepare_out_dir(args.out)
    from .demo_text import run_text_demo

    res = run_text_demo(args.out, epochs=args.epochs, seed=args.seed, quiet=args.quiet, n_train=args.train_size,
                        n_test=args.test_size, n_examples=args.examples, blocks=args.blocks,
                        batch_size=args.batch_size, learning_rate=args.learning_rate, cmap=args.cmap,
                        echo=lambda m: _say(args, m), arch=args.arch)
    print(f"example sentences: {res['html']}, {res['png']}\nfigures: {res['summary']}")
    _say(args, f"done in {res['seconds']:.1f} s")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``interprettensor train``."""
    import keras

    from ..io.downloads import load
    from .demo import accuracy, build_network, train_network

    if not args.out.endswith(".keras"):
        raise CLIError(f"--out must end with .keras (Keras' model format), got {args.out!r}")
    prepare_out_dir(os.path.dirname(os.path.abspath(args.out)))
    if args.logdir:
        prepare_out_dir(args.logdir)
    lr = args.learning_rate or (1e-3 if args.arch == "linear" else 3e-3)
    _say(args, f"loading {args.dataset} ...")
    x_train, y_train, x_test, y_test = load(args.dataset, cache_dir=args.data_dir, quiet=args.quiet, seed=args.seed)
    keras.utils.set_random_seed(args.seed)
    net = build_network(args.arch, keep_prob=args.dropout)
    _say(args, f"training the {args.arch} network on {len(x_train)} {args.dataset} images, {args.epochs} epochs ...")
    t0 = time.time()
    train_network(net, x_train, y_train, args.epochs, args.batch_size, lr, x_test, y_test, args.logdir, args.quiet)
    acc = accuracy(net, x_test, y_test)
    try:
        net.save(args.out)
    except OSError as e:
        raise CLIError(f"cannot save the model to {args.out!r}: {e.strerror or e}") from None
    print(f"test accuracy: {acc:.4f} ({len(x_test)} test images)")
    print(f"saved model: {args.out}  (trained in {time.time() - t0:.1f} s)")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """``interprettensor explain``."""
    import numpy as np
    from tqdm.auto import tqdm

    import interprettensor as it
    from ..io import render

    params = {k: getattr(args, k) for k in RULE_PARAMS if getattr(args, k) is not None}
    if args.gates is not None:
        params["gates"] = args.gates
    _check_range("--input-range", args.input_range)
    if (args.low is None) != (args.high is None):
        raise CLIError(f"give both --low and --high (the input's value range), got only "
                       f"{'--low' if args.low is not None else '--high'}")
    if args.low is not None:
        _check_range("--low/--high", (args.low, args.high))
    box = needs_box(args.rule) and args.low is None
    if box:  # checked by name now; the bounds follow from the inputs below
        it.get_composite(args.rule, **dict(params, low=0.0, high=1.0))
    else:
        it.get_composite(args.rule, **params)  # unknown rules fail here, before any work
    render.get_cmap(args.cmap)
    if args.target is not None and args.target < 0:
        raise CLIError(f"--target must be a class index >= 0, got {args.target}")
    out = prepare_out_dir(args.out)
    model = load_model(args.model)
    expected = model_input_shape(model)
    if box:
        arrays = sorted({item.path for item in collect_inputs(args.inputs, expected) if item.array is not None})
        if arrays:
            raise CLIError(f"--rule {args.rule} needs the range of the input values (the box [low, high] of the "
                           f"z^B rule), and .npy arrays are used as they are: give --low and --high (e.g. "
                           f"--low 0 --high 1 for values in [0, 1]); arrays: {', '.join(arrays[:3])}"
                           f"{' ...' if len(arrays) > 3 else ''}")
        params["low"], params["high"] = (float(v) for v in args.input_range)
        _say(args, f"{args.rule}: --low {params['low']:g} --high {params['high']:g}, the range images are mapped "
                   f"into (--input-range)")
    if args.dtype:
        params["dtype"] = args.dtype
    if args.worker is not None and not args.shard_size:
        raise CLIError("--worker needs --shard-size N (the workers split the run by shards)")
    items = collect_inputs(args.inputs, expected)
    labels, class_names = _input_labels(args, items)
    if args.shard_size or args.resume:
        return _explain_sharded(args, model, params, out, labels, class_names)
    _write_classes(out, class_names)
    explainer = it.Explainer(model, args.rule, **params)
    lo, hi = args.input_range

    results: dict[str, list] = {k: [] for k in ("relevance", "indices", "targets", "outputs", "valid", "names")
                                + (("inputs",) if args.store_inputs else ()) + (("labels",) if labels is not None
                                                                                else ())}
    npz_path = os.path.join(out, "relevances.npz")
    last_save = [0.0]
    pictures = _Pictures(args, out)

    def save_npz(force: bool = False) -> None:
        if not results["names"] or (not force and time.time() - last_save[0] < 2.0):
            return
        tmp = npz_path + ".tmp.npz"
        np.savez(tmp, **{k: np.concatenate(v) for k, v in results.items()})
        os.replace(tmp, npz_path)
        last_save[0] = time.time()

    bar = tqdm(total=len(items), desc="explaining", unit="input", disable=args.quiet, file=sys.stderr, leave=False)

    def flush(pending: list) -> None:
        if not pending:
            return
        xs = np.stack([x for _, _, x in pending]).astype("float32")
        ok = np.isfinite(xs.reshape(len(xs), -1)).all(axis=1)
        if not ok.all() and not args.skip_nonfinite:
            bad = [name for (_, name, _), good in zip(pending, ok) if not good]
            raise CLIError(f"input(s) {', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''} hold NaN or "
                           f"infinite values; fix them, or pass --skip-nonfinite to explain the others")
        safe = np.where(ok.reshape((-1,) + (1,) * (xs.ndim - 1)), xs, 0.0).astype("float32")
        target = None if args.target is None else np.full(len(xs), args.target)
        R, logits = explainer(safe, target, return_output=True)
        R = np.asarray(R, "float32")
        flat = np.asarray(logits, "float32").reshape(len(xs), -1)
        tgt = flat.argmax(-1) if args.target is None else np.full(len(xs), args.target)
        R[~ok] = 0.0
        flat[~ok] = 0.0
        tgt = np.where(ok | (args.target is not None), tgt, -1)
        names = [n for _, n, _ in pending]
        pictures.write(names, R, xs, ok)
        results["names"].append(np.array(names))
        results["indices"].append(np.array([i for i, _, _ in pending], np.int64))
        results["relevance"].append(R)
        results["targets"].append(tgt.astype(np.int32))
        results["outputs"].append(flat)
        results["valid"].append(ok)
        if args.store_inputs:
            results["inputs"].append(safe)
        if labels is not None:
            results["labels"].append(labels[[i for i, _, _ in pending]].astype(np.int64))
        save_npz()
        bar.update(len(pending))
        pending.clear()

    pending: list = []
    ok = False
    try:
        for i, item in enumerate(items):
            try:
                if item.array is not None:
                    x = np.asarray(item.array[item.index], dtype="float32")
                else:
                    x = load_image(item.path, expected, args.color_mode, (lo, hi), args.resize)
            except (CLIError, InputError):
                flush(pending)  # what came before the bad input is still written
                raise
            pending.append((i, item.name, x))
            if len(pending) >= args.batch_size:
                flush(pending)
        flush(pending)
        ok = True
    finally:
        bar.close()
        save_npz(force=True)
        n_done = sum(len(v) for v in results["names"])
        if not ok and n_done:
            print(f"wrote the outputs of the first {n_done} input(s) to {out}", file=sys.stderr)
    n_bad = int(sum((~v).sum() for v in results["valid"]))
    print(f"explained {n_done - n_bad} input(s) with {args.rule}{_skipped_note(n_bad)}: "
          f"{pictures.summary()}{npz_path}")
    return 0


def _input_labels(args: argparse.Namespace, items: Sequence[Any]) -> tuple[Any, list[str] | None]:
    """``explain``'s labels, one per input (int64, -1 unknown), or None: from ``--labels FILE``, else from
    class subfolders (their names as classes 0..K-1 are printed, and returned: see :func:`_write_classes`)."""
    from ..io.inputs import folder_labels, read_labels

    if args.labels is not None:
        return read_labels(args.labels, len(items)), None
    labels, names = folder_labels(items)
    if names:
        print(f"classes from the subfolder names: {', '.join(f'{i} = {n}' for i, n in enumerate(names))}")
    return labels, names


def _write_classes(out: str, names: list[str] | None) -> None:
    """``OUT/classes.json``: ``{"classes": {"0": name, ...}}``, the class subfolders' names by class index."""
    if names:
        from ..io.shards import write_json

        write_json(os.path.join(out, "classes.json"), {"classes": {str(i): n for i, n in enumerate(names)}})


def _skipped_note(n: int) -> str:
    return f", skipped {n} with NaN or infinite values (relevance 0, valid False)" if n else ""


class _Pictures:
    """The pictures ``explain`` writes per input: for images ``NAME_heatmap.png`` and
    ``NAME_overlay.png``, for feature vectors ``(N, F)`` a bar chart ``NAME_bars.png``, for sequences
    ``(N, T, C)`` a strip per channel over time ``NAME_strip.png``; none for other shapes or with
    ``--no-png``. Counts what it wrote for the closing message."""

    KINDS = {4: ("heatmap and overlay PNG", "heatmap and overlay PNGs", "NAME_heatmap.png, NAME_overlay.png", 2),
             2: ("bar chart of feature relevance", "bar charts of feature relevance", "NAME_bars.png", 1),
             3: ("relevance strip, one row per channel over time",
                 "relevance strips, one row per channel over time", "NAME_strip.png", 1)}

    def __init__(self, args: argparse.Namespace, out: str):
        self.args, self.out = args, out
        self.count = 0  # inputs with pictures
        self.ndim: int | None = None

    def write(self, names: Sequence[str], R: Any, xs: Any, valid: Any) -> None:
        from ..io import render

        args, out = self.args, self.out
        self.ndim = R.ndim
        if args.no_png or R.ndim not in self.KINDS:
            return
        keep = [i for i in range(len(names)) if valid[i]]
        if not keep:
            return
        if R.ndim == 4:
            scale = args.scale or max(1, 224 // max(R.shape[1], R.shape[2]))
            heat = render.relevance_to_rgb(R[keep], args.cmap, args.normalize, args.percentile)
            over = render.overlay(R[keep], xs[keep], args.cmap, normalization=args.normalize,
                                  percentile=args.percentile, vmin=args.input_range[0], vmax=args.input_range[1])
            for j, i in enumerate(keep):
                render.save_png(os.path.join(out, f"{names[i]}_heatmap.png"), heat[j], scale)
                render.save_png(os.path.join(out, f"{names[i]}_overlay.png"), over[j], scale)
        elif R.ndim == 2:
            for i in keep:
                render.feature_bars(R[i], xs[i], title=names[i], cmap=args.cmap,
                                    path=os.path.join(out, f"{names[i]}_bars.png"))
        else:
            for i in keep:
                render.sequence_strip(R[i], xs[i], title=names[i], cmap=args.cmap, normalization=args.normalize,
                                      percentile=args.percentile, path=os.path.join(out, f"{names[i]}_strip.png"))
        self.count += len(keep)

    def summary(self) -> str:
        """What was written, as the start of a sentence ending in the npz path."""
        if self.args.no_png:
            return "no pictures (--no-png); "
        if self.ndim is not None and self.ndim not in self.KINDS:
            return f"no pictures (none for {self.ndim - 1}-D samples); "
        if self.count == 0:
            return ""
        one, many, files, per = self.KINDS[self.ndim or 4]
        n = self.count * per
        return f"{n} {one if n == 1 else many} ({files}) in {self.out}, and "


def _explain_sharded(args: argparse.Namespace, model: Any, params: dict, out: str, labels: Any = None,
                     class_names: list[str] | None = None) -> int:
    """``interprettensor explain --shard-size N [--resume]``: :func:`interprettensor.explain_dataset`."""
    from ..io.dataset_run import explain_dataset
    from ..io.shards import MANIFEST, RERUN, StreamError, read_manifest, worker_manifests

    manifest = read_manifest(out)
    if manifest is None:
        manifest = next(iter(worker_manifests(out).values()), None)
    if manifest is not None and not args.resume and args.worker is None:
        raise CLIError(f"{out!r} holds a sharded run ({len(manifest['shards'])} shard(s) complete, see "
                       f"{MANIFEST}); pass --resume to continue it, or choose another --out")
    if manifest is None and args.resume and not args.shard_size:
        raise CLIError(f"--resume: {out!r} holds no sharded run to continue; start one with --shard-size N")
    shard_size = args.shard_size or int(manifest["identity"]["shard_size"])
    lo, hi = args.input_range
    pictures = _Pictures(args, out)

    def write_pngs(k: int, arrays: dict) -> None:
        pictures.write([str(n) for n in arrays["names"]], arrays["relevance"], arrays["x"], arrays["valid"])

    try:
        # with labels the predicted class is still explained by default (explain_dataset's default: the label)
        target = args.target if args.target is not None or labels is None else "predicted"
        data = (list(args.inputs), labels) if args.labels is not None else list(args.inputs)
        res = explain_dataset(model, data, args.rule, out, shard_size=shard_size,
                              batch_size=args.batch_size, target=target, progress=not args.quiet,
                              input_range=(lo, hi), color_mode=args.color_mode, resize=args.resize,
                              on_shard=write_pngs, nonfinite="skip" if args.skip_nonfinite else "error",
                              worker=args.worker, store_inputs=args.store_inputs, **params)
    except StreamError as e:
        msg = str(e).replace(RERUN, "run again with --resume to continue")
        msg = msg.replace("pass nonfinite='skip'", "pass --skip-nonfinite")
        raise CLIError(msg.replace(" (or start over: resume=False)", "")) from None
    _write_classes(out, class_names)  # only now: a refused run must not change the folder
    done = f" ({res.skipped} were complete before)" if res.skipped else ""
    pics = pictures.summary()
    who = "" if res.worker is None else f"worker {res.worker}: "
    print(f"{who}explained {res.n_samples - res.nonfinite} input(s) with {args.rule}{_skipped_note(res.nonfinite)}: "
          f"{pics}{res.shards} shard(s) in {out}{done}")
    if res.worker is not None:
        print(f"the run in {out} is complete ({MANIFEST} written)" if res.complete else
              f"the run in {out} is not complete yet: the other workers are still at it; the last one writes "
              f"{MANIFEST} ('interprettensor finalize {out}' checks it)")
    return 0


def cmd_finalize(args: argparse.Namespace) -> int:
    """``interprettensor finalize OUT``: :func:`interprettensor.finalize_run`."""
    from ..io.shards import MANIFEST, StreamError, finalize_run

    try:
        final = finalize_run(args.out)
    except StreamError as e:
        raise CLIError(str(e)) from None
    print(f"{args.out}: complete, {final['n_samples']} samples in {len(final['shards'])} shard(s); {MANIFEST} written")
    return 0


# ---------------------------------------------------------------------------------------------- evaluate
def _evaluate_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``evaluate`` subcommand's arguments (built without importing TensorFlow)."""
    v = sub.add_parser(
        "evaluate", parents=[common], help="measure explanation quality: region perturbation (AOPC)",
        usage="interprettensor evaluate (MODEL | --demo-model) [INPUTS ...] [options]",
        description="Region perturbation (Samek et al. 2017): explain the inputs with several methods, "
                    "perturb the most relevant patch x patch regions first (MoRF) and record the model's "
                    "pre-softmax score of the explained class; the area over the perturbation curve (AOPC) "
                    "is larger for better explanations. Writes OUT/curves.png and OUT/aopc.csv and prints the "
                    "AOPC table; --sanity adds the model-randomisation check (Adebayo et al. 2018).")
    v.add_argument("paths", nargs="*", metavar="MODEL INPUTS",
                   help="a saved Keras model (.keras, .h5) followed by image files, folders or .npy arrays "
                        "(with --demo-model: only inputs)")
    v.add_argument("--demo-model", action="store_true",
                   help="train the demo's digits CNN for --epochs and evaluate it (saved as OUT/digits_cnn.keras)")
    v.add_argument("--epochs", type=_positive_int, default=10,
                   help="training epochs of --demo-model (default: %(default)s)")
    v.add_argument("--digits", type=_positive_int, default=None, metavar="N",
                   help="evaluate on the first N test digits (28x28x1 in [0, 1]; default with --demo-model "
                        "and no inputs: 64)")
    v.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help="LRP rules or presets, gradient, input_x_gradient, smoothgrad, integrated_gradients, "
                        "guided_backprop, deconvnet, deep_taylor, random; parameters as NAME:key=value,... "
                        f"(default: {' '.join(DEFAULT_METHOD_NAMES)})")
    v.add_argument("--patch", type=_positive_int, default=None,
                   help="region size in pixels (positions for 1-D inputs); default: from the input size, about "
                        "49 regions or more: min(H, W) // 7 for images (4 on 28x28), length // 49 for "
                        "sequences and feature vectors, at least 1")
    v.add_argument("--steps", type=_positive_int, default=None, help="regions to perturb (default: all)")
    v.add_argument("--perturbation", default="uniform",
                   help="uniform (noise in --value-range), mean (image mean), blur, or a number (default: %(default)s)")
    v.add_argument("--blur-sigma", type=_positive_float, default=None,
                   help="for --perturbation blur (default: patch/2)")
    v.add_argument("--order", choices=["morf", "lerf"], default="morf",
                   help="most (morf) or least (lerf) relevant regions first (default: %(default)s)")
    v.add_argument("--value-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="input value range: uniform noise and the bounds of box rules (default: 0 1 for digits, "
                        "--input-range for images; for .npy arrays the data's min and max for the noise, and "
                        "box rules such as epsilon_gamma_box need it given)")
    v.add_argument("--target", type=int, default=None, help="class to explain (default: the predicted class)")
    v.add_argument("--input-range", type=float, nargs=2, default=(0.0, 1.0), metavar=("LOW", "HIGH"),
                   help="image pixels 0..255 are mapped to LOW..HIGH (default: 0 1)")
    v.add_argument("--color-mode", choices=["auto", "grayscale", "rgb"], default="auto", help="as for 'explain'")
    v.add_argument("--resize", action="store_true", help="resize images to the model's input size")
    v.add_argument("--sanity", action="store_true",
                   help="also run the cascading model-randomisation sanity check on up to 16 inputs; writes "
                        "OUT/randomisation.png and OUT/randomisation.csv")
    v.add_argument("--batch-size", type=_positive_int, default=256,
                   help="perturbed inputs per forward pass (default: %(default)s)")
    v.add_argument("--seed", type=int, default=0, help="random seed of noise and training (default: %(default)s)")
    v.add_argument("--out", default="evaluation", help="output folder (default: %(default)s)")
    v.set_defaults(func=cmd_evaluate)


def _number(s: str) -> Any:
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def _parse_methods(specs: Sequence[str] | None) -> list[tuple[str, str, dict]] | None:
    """``NAME`` or ``NAME:key=value,...`` -> (label, method, params); unknown names fail here."""
    import interprettensor as it
    from ..analysis.evaluate import DEFAULT_METHODS
    from ..attribution import METHODS

    if specs is None:
        return None
    defaults = {a: (b, c) for a, b, c in DEFAULT_METHODS}
    out = []
    for spec in specs:
        name, _, rest = spec.partition(":")
        params: dict[str, Any] = {}
        for kv in filter(None, rest.split(",")):
            k, eq, val = kv.partition("=")
            if not eq or not k:
                raise CLIError(f"--methods {spec!r}: parameters are key=value pairs separated by commas")
            params[k.strip()] = _number(val.strip())
        if not rest and name in defaults:
            name, params = defaults[name][0], dict(defaults[name][1])
        key = name.lower().replace("-", "_")
        aliases = getattr(it.attribution, "_ALIASES", {})
        if key != "random" and key not in METHODS and key not in aliases:
            check = {k: v for k, v in params.items() if k != "absolute"}
            if needs_box(name):  # the bounds come from --value-range later; only the name is checked here
                check.setdefault("low", 0.0)
                check.setdefault("high", 1.0)
            try:
                it.get_composite(name, **check)
            except (ValueError, TypeError) as e:
                raise CLIError(f"--methods {spec!r}: {e}") from None
        out.append((spec, name, params))
    return out


def _evaluation_inputs(args: argparse.Namespace, model: Any, paths: Sequence[str]) -> tuple[Any, Any]:
    """The inputs (N, ...) and the default value range."""
    import numpy as np

    expected = model_input_shape(model)
    if args.digits is not None or (args.demo_model and not paths):
        if paths:
            raise CLIError("give input files or --digits N, not both")
        from ..io.digits import load_digits, train_test_split

        x, y = load_digits()
        x_test = train_test_split(x, y, test_fraction=0.2, seed=args.seed)[2]
        if expected is not None and tuple(expected[1:]) != tuple(x_test.shape[1:]):
            raise CLIError(f"--digits gives 28x28x1 images, but the model expects {shape_str(expected[1:])}")
        return x_test[: args.digits or 64], (0.0, 1.0)
    if not paths:
        raise CLIError("no inputs: give image files, folders or .npy arrays after the model, or --digits N")
    items = collect_inputs(paths, expected)
    arrays, any_image = [], False
    for item in items:
        if item.array is not None:
            arrays.append(np.asarray(item.array[item.index], dtype="float32"))
        else:
            any_image = True
            arrays.append(load_image(item.path, expected, args.color_mode, args.input_range, args.resize))
    if len({a.shape for a in arrays}) > 1:
        raise CLIError(f"inputs have different shapes: {sorted({shape_str(a.shape) for a in arrays})}")
    return np.stack(arrays), (tuple(args.input_range) if any_image else None)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``interprettensor evaluate``."""
    from ..analysis import evaluate as ev

    if args.perturbation not in ("uniform", "mean", "blur"):
        try:
            perturbation: Any = float(args.perturbation)
        except ValueError:
            raise CLIError(f"--perturbation must be uniform, mean, blur or a number, "
                           f"got {args.perturbation!r}") from None
    else:
        perturbation = args.perturbation
    if args.target is not None and args.target < 0:
        raise CLIError(f"--target must be a class index >= 0, got {args.target}")
    _check_range("--input-range", args.input_range)
    if args.value_range is not None:
        _check_range("--value-range", args.value_range)
    methods = _parse_methods(args.methods)
    out = prepare_out_dir(args.out)
    paths = list(args.paths)
    if args.demo_model:
        import keras

        from ..io.digits import load_digits, train_test_split
        from .demo import accuracy, build_network, train_network

        x, y = load_digits()
        x_train, y_train, x_test, y_test = train_test_split(x, y, test_fraction=0.2, seed=args.seed)
        keras.utils.set_random_seed(args.seed)
        model = build_network("convolutional")
        _say(args, f"training the digits CNN on {len(x_train)} digits, {args.epochs} epochs ...")
        train_network(model, x_train, y_train, args.epochs, 32, 3e-3, quiet=args.quiet)
        model.save(os.path.join(out, "digits_cnn.keras"))
        print(f"digits CNN: test accuracy {accuracy(model, x_test, y_test):.4f} "
              f"(saved as {os.path.join(out, 'digits_cnn.keras')})")
    else:
        if not paths:
            raise CLIError("give a saved Keras model (.keras, .h5) and inputs, or --demo-model")
        model = load_model(paths.pop(0))
    xs, default_range = _evaluation_inputs(args, model, paths)
    value_range = tuple(args.value_range) if args.value_range is not None else default_range
    target = None if args.target is None else args.target
    spatial = ev.spatial_shape(xs.shape)
    patch, _, n_regions = ev.check_regions(spatial, args.patch, args.steps)
    if value_range is None:
        specs = methods or [(a, b, dict(c)) for a, b, c in ev.DEFAULT_METHODS]
        boxed = [label for label, name, prm in specs if needs_box(name) and not {"low", "high"} <= set(prm)]
        if boxed:
            raise CLIError(f"{', '.join(boxed)} need{'s' if len(boxed) == 1 else ''} the range of the input "
                           f"values (the box [low, high] of the z^B rule), and .npy arrays are used as they are: "
                           f"give --value-range LOW HIGH (e.g. --value-range 0 1), or leave "
                           f"{'it' if len(boxed) == 1 else 'them'} out with --methods")
    how = "--patch" if args.patch is not None else (
        f"default for {'x'.join(map(str, spatial))} inputs: " + (
            "min side // 7" if len(spatial) == 2 else "length // 49" if len(spatial) == 1 else "min side // 4"))
    print(f"{ev.region_label(patch, len(spatial))} ({n_regions} per input; {how})")
    t0 = time.time()
    cmp = ev.compare(model, xs, methods, target, patch=patch, steps=args.steps, perturbation=perturbation,
                     order=args.order, value_range=value_range, blur_sigma=args.blur_sigma, seed=args.seed,
                     batch_size=args.batch_size, progress=lambda m: _say(args, f"  {m} ..."))
    print(cmp.table())
    csv_path = cmp.to_csv(os.path.join(out, "aopc.csv"))
    png_path = os.path.join(out, "curves.png")
    first = next(iter(cmp.results.values()))
    cmp.plot(png_path, title=f"Region perturbation, {len(xs)} inputs ({first.perturbation})")
    print(f"curves: {png_path}\ntable: {csv_path}")
    if args.sanity:
        _sanity(args, ev, model, xs, cmp, methods, target, value_range, out)
    _say(args, f"done in {time.time() - t0:.1f} s")
    return 0


def _sanity(args: argparse.Namespace, ev: Any, model: Any, xs: Any, cmp: Any, methods: list | None, target: Any,
            value_range: Any, out: str) -> None:
    """``evaluate --sanity``: model randomisation per method. Each finished method is written to
    OUT/randomisation.csv and .png at once; a method that fails is reported and the others go on;
    any failure ends in a CLIError naming the failed methods (exit status 1)."""
    import csv

    specs = methods or [(a, b, dict(c)) for a, b, c in ev.DEFAULT_METHODS]
    runs: dict[str, Any] = {}
    failed: list[str] = []
    rpath, ppath = os.path.join(out, "randomisation.csv"), os.path.join(out, "randomisation.png")
    n = min(16, len(xs))
    for label in cmp.results:
        if cmp.methods.get(label) == "random":
            continue
        spec = next(m for m in specs if m[0] == label)
        _say(args, f"  randomising the model for {label} ...")
        try:
            r = ev.model_randomisation(model, xs[:n], spec[1], target, seed=args.seed,
                                       value_range=value_range or (float(xs.min()), float(xs.max())),
                                       method_params=dict(spec[2]))
        except Exception as e:  # noqa: BLE001 - one method's failure must not lose the others' results
            if getattr(args, "debug", False):
                import traceback

                traceback.print_exc()
            failed.append(label)
            print(f"error: sanity check of {label!r} failed: {type(e).__name__}: {_first_line(e)}",
                  file=sys.stderr, flush=True)
            continue
        runs[label] = r
        print(r.table().replace(f"({spec[1]})", f"({label})"))
        with open(rpath + ".tmp", "w", newline="") as f:  # written after every method
            wr = csv.writer(f)
            wr.writerow(["method", "stage", "randomised_layer", "spearman", "spearman_abs", "ssim"])
            for lab, res in runs.items():
                for i, stage in enumerate(res.stages):
                    wr.writerow([lab, i, stage] + [f"{res.mean(m)[i]:.6g}"
                                                   for m in ("spearman", "spearman_abs", "ssim")])
        os.replace(rpath + ".tmp", rpath)
        ev.plot_randomisation(runs, ppath)
    if runs:
        print(f"sanity check ({n} inputs): {ppath}, {rpath}")
    if failed:
        done = f"; the results of {', '.join(runs)} are in {rpath}" if runs else ""
        raise CLIError(f"the sanity check failed for {', '.join(failed)} (see above){done}")


# ---------------------------------------------------------------------------------------------- explain-text
def _explain_text_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``explain-text`` subcommand's arguments (built without importing TensorFlow)."""
    x = sub.add_parser(
        "explain-text", parents=[common], help="explain a text model (transformer) on token ids or texts",
        usage="interprettensor explain-text MODEL [INPUTS ...] [--text TEXT ...] [options]",
        description="Explain a saved text model (.keras) with LRP, one relevance per token. A model whose "
                    "input is integer token ids takes .npy arrays (N, T) and .txt files with one sentence per "
                    "line as space-separated ids (padded at the end with id 0 to the model's sequence length "
                    "or the longest sentence; trailing 0s are padding); --vocab names the tokens. A keras_hub "
                    "task saved with its preprocessor (e.g. BertTextClassifier, GPT2CausalLM) takes .txt files "
                    "with one text per line, or --text. For a language model's output (batch, sequence, "
                    "vocabulary) the next-token logit at --position is explained (default: at each "
                    "sentence's last token). Writes OUT/relevances.npz (token_ids, relevance, mask, targets, "
                    "predictions, scores, names; positions, texts), OUT/explanations.html and "
                    "OUT/explanations.png.")
    x.add_argument("model", help="a saved Keras model (.keras)")
    x.add_argument("inputs", nargs="*", metavar="INPUTS",
                   help=".npy arrays or .txt files of token ids; for a keras_hub model with a preprocessor, .txt "
                        "files with one text per line")
    x.add_argument("--text", action="append", default=None, metavar="TEXT",
                   help="a text to explain (keras_hub models with a preprocessor); may be repeated")
    x.add_argument("--rule", default="attnlrp", help="rule or preset: attnlrp, cp_lrp, epsilon, ... "
                                                     "(default: %(default)s)")
    x.add_argument("--epsilon", type=float, default=None, help="epsilon of the rule (default: the rule's)")
    x.add_argument("--target", type=int, default=None,
                   help="class to explain, or the token id for a language model (default: the predicted one)")
    x.add_argument("--position", type=int, default=None,
                   help="for outputs (batch, sequence, vocabulary): the position whose next-token logit is "
                        "explained, negative from the end (default: each sentence's last token)")
    x.add_argument("--vocab", default=None, metavar="FILE",
                   help="token strings for token-id inputs: one token per line, line i = id i "
                        "(default: show the ids)")
    x.add_argument("--max-length", type=_positive_int, default=None, metavar="L",
                   help="sequence length: ids are padded to it (when the model's is not fixed); a keras_hub "
                        "preprocessor pads or cuts texts to it (default: the model's or the preprocessor's)")
    x.add_argument("--out", default="explanations", help="output folder (default: %(default)s)")
    x.add_argument("--batch-size", type=_positive_int, default=32,
                   help="sentences per LRP pass (default: %(default)s)")
    x.add_argument("--cmap", default="bwr", help="colour map: bwr, coldnhot or a matplotlib name "
                                                 "(default: %(default)s)")
    x.set_defaults(func=cmd_explain_text)


def cmd_explain_text(args: argparse.Namespace) -> int:
    """``interprettensor explain-text``: :func:`interprettensor.apps.explain_text.run`."""
    from .explain_text import TextCommandError, run

    try:
        return run(args, prepare_out_dir)
    except TextCommandError as e:
        raise CLIError(str(e)) from None


# ---------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 error, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    if getattr(args, "light", False):  # a subcommand that needs neither TensorFlow nor Keras (view)
        try:
            return int(args.func(args) or 0)
        except (CLIError, InputError, ValueError, OSError) as e:
            _error(_describe(e), args)
            return 1
        except KeyboardInterrupt:
            print(_interrupted(args), file=sys.stderr)
            return 130
    try:
        try:  # the first heavy import: checks Keras' backend, imports TensorFlow
            from ..engine.errors import ExplainError
            from ..io.downloads import DatasetError
        except ImportError as e:
            _error(_first_line(e) if "KERAS_BACKEND" in str(e) else
                   f"cannot import TensorFlow/Keras ({_first_line(e)}); install interprettensor[cpu] or "
                   f"interprettensor[gpu]", args)
            return 1
        try:
            return int(args.func(args) or 0)
        except (CLIError, InputError, ExplainError, DatasetError) as e:
            _error(str(e), args)
        except (ValueError, TypeError, OSError) as e:
            _error(_describe(e), args)
        except Exception as e:  # noqa: BLE001 - no traceback for users; --debug shows it
            _error(f"unexpected {type(e).__name__}: {_first_line(e)} (run with --debug for the traceback)", args)
        return 1
    except KeyboardInterrupt:
        print(_interrupted(args), file=sys.stderr)
        return 130


def _interrupted(args: argparse.Namespace) -> str:
    """The message for Ctrl-C: for a command that continues where it stopped, what is kept and how."""
    command, out = getattr(args, "command", None), getattr(args, "out", None)
    if command == "explain" and (getattr(args, "shard_size", None) or getattr(args, "resume", False)):
        how = "run the same command again" + ("" if getattr(args, "resume", False) else " with --resume")
        return f"interrupted; the finished shards in {out} are kept: {how} to continue"
    if command == "concepts":
        how = "without --restart " if getattr(args, "restart", False) else ""
        return (f"interrupted; the finished statistics shards in {out} are kept: run the same command again "
                f"{how}to continue")
    if command == "spray":
        folder = out or os.path.join(str(getattr(args, "run", "RUN_DIR")), "spray")
        how = "without --force " if getattr(args, "force", False) else ""
        return f"interrupted; the finished classes in {folder} are kept: run the same command again {how}to continue"
    return "interrupted"


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename:
        return f"{e.filename}: {e.strerror or e}"
    return str(e).strip() or type(e).__name__


def _error(msg: str, args: argparse.Namespace) -> None:
    if getattr(args, "debug", False):
        import traceback

        traceback.print_exc()
    print(f"error: {msg}", file=sys.stderr, flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
