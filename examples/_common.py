"""Shared code of the MNIST examples: the original examples' flags, training loop and TensorBoard logs.

The 2017 examples trained for ``--max_steps`` batches, printed the test accuracy every
``--test_every`` steps, and with ``--relevance=True`` explained a test batch with
``--relevance_method`` and wrote the heatmaps to TensorBoard. These do the same with
interprettensor 2 on any of the data sets of :mod:`interprettensor.io.downloads` (default: the embedded
digits, no download).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import numpy as np

#: --relevance_method names of the original examples (and rule or preset names) -> (rule, parameters)
METHODS = {
    "simple": ("simple", {}),
    "epsilon": ("epsilon", {"epsilon": 0.01}),
    "eps": ("epsilon", {"epsilon": 0.01}),
    "flat": ("flat", {}),
    "ww": ("ww", {}),
    "w^2": ("ww", {}),
    "alphabeta": ("alphabeta", {"alpha": 2.0, "beta": 1.0}),
    "epsilon_gamma_box": ("epsilon_gamma_box", {"low": 0.0, "high": 1.0}),
}


def str2bool(s: str) -> bool:
    v = str(s).strip().lower()
    if v in ("1", "true", "t", "yes", "y"):
        return True
    if v in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {s!r}")


def parse_args(arch: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The original flags (``--flag=value`` or ``--flag value``), with defaults sized for the digits."""
    name = "mnist_linear" if arch == "linear" else "mnist_convolutional"
    p = argparse.ArgumentParser(description=f"Train the original {arch} MNIST network and explain it with LRP.")
    p.add_argument("--max_steps", type=int, default=301, help="number of training steps (batches)")
    p.add_argument("--batch_size", type=int, default=100, help="batch size")
    p.add_argument("--test_every", type=int, default=50, help="test accuracy every this many steps")
    p.add_argument("--learning_rate", type=float, default=1e-3 if arch == "linear" else 3e-3,
                   help="Adam learning rate")
    p.add_argument("--dropout", type=float, default=0.9 if arch == "linear" else 1.0,
                   help="keep probability of training dropout")
    p.add_argument("--data_dir", default="data", help="download cache for --dataset mnist/fashion_mnist")
    p.add_argument("--summaries_dir", default=f"{name}_logs", help="TensorBoard summaries directory")
    p.add_argument("--relevance", type=str2bool, nargs="?", const=True, default=False,
                   help="compute relevances and write heatmaps (--relevance=True)")
    p.add_argument("--relevance_method", default="simple", choices=sorted(METHODS),
                   help="LRP variant for --relevance")
    p.add_argument("--save_model", type=str2bool, nargs="?", const=True, default=False, help="save the trained model")
    p.add_argument("--reload_model", type=str2bool, nargs="?", const=True, default=False,
                   help="start from the model saved in --checkpoint_dir")
    p.add_argument("--checkpoint_dir", default=f"{name}_model", help="where the model is saved (model.keras)")
    p.add_argument("--dataset", default="digits", choices=["digits", "mnist", "fashion_mnist"],
                   help="digits: embedded, no download")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(arch: str, argv: list[str] | None = None) -> int:
    """Run one example; returns the exit status."""
    flags = parse_args(arch, argv)
    try:
        return _run(arch, flags)
    except (OSError, ValueError) as e:  # DatasetError, ExplainError, bad paths
        print(f"error: {e}", file=sys.stderr)
        return 1


def _run(arch: str, flags: argparse.Namespace) -> int:
    import keras
    from tqdm.auto import tqdm

    import interprettensor as it
    from interprettensor.io import downloads as datasets
    from interprettensor.apps.demo import build_network
    from interprettensor.io.summaries import SummaryWriter

    x_train, y_train, x_test, y_test = datasets.load(flags.dataset, cache_dir=flags.data_dir)
    ckpt = os.path.join(flags.checkpoint_dir, "model.keras")
    if flags.reload_model:
        if not os.path.exists(ckpt):
            raise OSError(f"--reload_model: no saved model at {ckpt}")
        print(f"Reloading from -- {ckpt}")
        net = keras.models.load_model(ckpt)
    else:
        net = build_network(arch, keep_prob=flags.dropout)
    net.compile_lrp_style("softmax_crossentropy", "adam", [flags.learning_rate])

    for sub in ("train", "test"):  # as the original: start with fresh logs
        shutil.rmtree(os.path.join(flags.summaries_dir, sub), ignore_errors=True)
    train_writer = SummaryWriter(os.path.join(flags.summaries_dir, "train"))
    test_writer = SummaryWriter(os.path.join(flags.summaries_dir, "test"))

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    n_test = min(flags.batch_size, len(x_test))
    x_tb = x_test[:n_test]
    rule, params = METHODS[flags.relevance_method]
    explainer = it.Explainer(net, rule, **params) if flags.relevance else None
    order = rng.permutation(len(x_train))
    pos = 0
    t0 = time.time()
    for i in tqdm(range(flags.max_steps), desc="training", disable=flags.quiet, file=sys.stderr, leave=False):
        if i % flags.test_every == 0:
            pred = np.asarray(net.predict(x_test, verbose=0)).reshape(len(x_test), -1).argmax(-1)
            acc = float((pred == y_test).mean())
            test_writer.scalar("accuracy", acc, i)
            tqdm.write(f"Accuracy at step {i}: {acc:f}", file=sys.stdout)
            if explainer is not None:
                R, logits = explainer(x_tb, return_output=True)
                tqdm.write(f"  relevance sum {R.sum():.4f}, explained output sum "
                           f"{np.asarray(logits).reshape(n_test, -1).max(-1).sum():.4f}", file=sys.stdout)
        else:
            if pos + flags.batch_size > len(order):
                order, pos = rng.permutation(len(x_train)), 0
            idx = order[pos:pos + flags.batch_size]
            pos += flags.batch_size
            logs = net.train_on_batch(x_train[idx], keras.utils.to_categorical(y_train[idx], 10), return_dict=True)
            for k, v in logs.items():
                train_writer.scalar(k, float(v), i)

    if explainer is not None:  # heatmaps of the last test batch, drawn over the digits
        R, per_layer = explainer(x_tb, layerwise=True)
        test_writer.relevance_histograms(per_layer, flags.max_steps)
        test_writer.heatmaps("relevance", R, x_tb, flags.max_steps)
        test_writer.heatmaps("relevance_alone", R, None, flags.max_steps)
    train_writer.close()
    test_writer.close()
    if flags.save_model:
        os.makedirs(flags.checkpoint_dir, exist_ok=True)
        net.save(ckpt)
        print(f"saved the model to {ckpt}")
    print(f"done in {time.time() - t0:.1f} s; view the logs with: tensorboard --logdir={flags.summaries_dir}")
    return 0
