"""``interprettensor finalize OUT``: check that a sharded run of several workers ('explain --shard-size N
--worker I/N') is complete and write its manifest."""

from __future__ import annotations

import argparse
from typing import Any

from .options import CLIError

__all__ = ["add_parser", "cmd_finalize"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``finalize`` subcommand's arguments (built without importing TensorFlow)."""
    f = sub.add_parser("finalize", parents=[common], help="check a sharded run of several workers and complete it",
                       description="Check that every shard of the sharded run in OUT (written by 'explain "
                                   "--shard-size N --worker I/N' processes) is there and holds its samples, and "
                                   "write OUT/manifest.json; names the missing shards and their workers otherwise.")
    f.add_argument("out", metavar="OUT", help="the run directory")
    f.set_defaults(func=cmd_finalize)


def cmd_finalize(args: argparse.Namespace) -> int:
    """``interprettensor finalize OUT``: :func:`interprettensor.io.shards.finalize_run`."""
    from ...io.shards import MANIFEST, StreamError, finalize_run

    try:
        final = finalize_run(args.out)
    except StreamError as e:
        raise CLIError(str(e)) from None
    print(f"{args.out}: complete, {final['n_samples']} samples in {len(final['shards'])} shard(s); {MANIFEST} written")
    return 0
