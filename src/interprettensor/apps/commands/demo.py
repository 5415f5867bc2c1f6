"""``interprettensor demo``: the command's options and what it prints; the demo itself is
:mod:`interprettensor.apps.demo`."""

from __future__ import annotations

import argparse
from typing import Any


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value

from .options import _positive_float, _positive_int, _say, prepare_out_dir

__all__ = ["add_parser", "cmd_demo"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``demo`` subcommand's arguments (built without importing TensorFlow)."""

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
    d.add_argument("--aopc", type=_non_negative_int, default=64, metavar="N",
                   help="test digits for the region perturbation (AOPC) of the methods; 0 skips it "
                        "(default: %(default)s)")
    d.add_argument("--batch-size", type=_positive_int, default=32, help="training batch size (default: %(default)s)")
    d.add_argument("--learning-rate", type=_positive_float, default=3e-3, help="Adam learning rate (default: %(default)s)")
    d.add_argument("--cmap", default="bwr", help="colour map: bwr, coldnhot or a matplotlib name (default: %(default)s)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    d.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """``interprettensor demo``."""
    from ...io.render import get_cmap
    from ..demo import format_table, run_demo

    get_cmap(args.cmap)
    prepare_out_dir(args.out)
    res = run_demo(args.out, epochs=args.epochs, n=args.n, pretrained=args.pretrained, batch_size=args.batch_size,
                   learning_rate=args.learning_rate, cmap=args.cmap, quiet=args.quiet, seed=args.seed,
                   echo=lambda m: _say(args, m), aopc_samples=args.aopc)
    print(f"test accuracy: {res.accuracy:.4f}")
    if res.aopc is not None:
        print(res.aopc.table())
    print(f"relevance sum vs explained output (mean over {args.n} test digits):")
    print(format_table(res.rows))
    print(f"heatmaps: {res.png}")
    print(f"TensorBoard logs: {res.logdir}  (view with: tensorboard --logdir={res.logdir})")
    _say(args, f"done in {res.seconds:.1f} s")
    return 0

