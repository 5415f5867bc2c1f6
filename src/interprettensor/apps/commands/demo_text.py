"""``interprettensor demo-text``: the command's options and what it prints; the demo itself is
:mod:`interprettensor.apps.demo_text`."""

from __future__ import annotations

import argparse
from typing import Any

from .options import _positive_float, _positive_int, _say, prepare_out_dir

__all__ = ["add_parser", "cmd_demo_text"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
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
    from ...io.render import get_cmap

    get_cmap(args.cmap)
    prepare_out_dir(args.out)
    from ..demo_text import run_text_demo

    res = run_text_demo(args.out, epochs=args.epochs, seed=args.seed, quiet=args.quiet, n_train=args.train_size,
                        n_test=args.test_size, n_examples=args.examples, blocks=args.blocks,
                        batch_size=args.batch_size, learning_rate=args.learning_rate, cmap=args.cmap,
                        echo=lambda m: _say(args, m), arch=args.arch)
    print(f"example sentences: {res['html']}, {res['png']}\nfigures: {res['summary']}")
    _say(args, f"done in {res['seconds']:.1f} s")
    return 0

