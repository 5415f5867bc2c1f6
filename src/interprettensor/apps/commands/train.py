"""``interprettensor train``: train one of the original examples' networks and save it as ``.keras``
(the networks and the training loop are :mod:`interprettensor.apps.demo`'s)."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from .options import CLIError, _keep_prob, _positive_float, _positive_int, _say, prepare_out_dir

__all__ = ["add_parser", "cmd_train"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``train`` subcommand's arguments (built without importing TensorFlow)."""

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


def cmd_train(args: argparse.Namespace) -> int:
    """``interprettensor train``."""
    import keras

    from ...io.downloads import load
    from ..demo import accuracy, build_network, train_network

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
