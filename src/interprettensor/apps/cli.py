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

Each subcommand is a module of :mod:`interprettensor.apps.commands` (listed in :data:`SUBCOMMANDS`), what
several share is in :mod:`interprettensor.apps.commands.options`; this module builds the parser and runs a
command, reporting its errors.

Errors are reported as ``error: <message>`` on stderr with exit status 1 (2 for usage errors); use
``--debug`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

# InputError is handled by main; load_image, load_model (io.inputs), needs_box (rule_names) and
# DEFAULT_METHOD_NAMES (commands.evaluate) are imported from here by tests
from ..io.inputs import InputError, load_image, load_model  # noqa: F401
from .commands.evaluate import DEFAULT_METHOD_NAMES  # noqa: F401
from .commands.options import CLIError, _first_line, needs_box  # noqa: F401

__all__ = ["main", "build_parser", "CLIError"]

#: the subcommands in the order of ``interprettensor --help``: modules of ``apps/commands/`` (the command's
#: name with ``_`` for ``-``), each with ``add_parser(sub, common)`` that sets ``func`` (and ``light=True`` for
#: a command that needs neither TensorFlow nor Keras); the modules import neither, so that ``--help`` stays fast
SUBCOMMANDS: tuple[str, ...] = ("demo", "demo_text", "train", "explain", "evaluate", "explain_text", "finalize",
                                "concepts", "view", "spray", "digits", "correct", "prune")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``interprettensor`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars or progress messages")
    common.add_argument("--debug", action="store_true", help="show the traceback of errors")
    common.add_argument("--backend", choices=("tensorflow", "jax", "torch"), default=None,
                        help="Keras' backend to run on (default: KERAS_BACKEND, else keras.json, else tensorflow); "
                             "the command says which one it used")

    p = argparse.ArgumentParser(
        prog="interprettensor",
        description="Layer-wise Relevance Propagation (LRP) for Keras 3 on TensorFlow, JAX and PyTorch.",
        epilog="Run 'interprettensor COMMAND --help' for the options of a command.")
    from .. import __version__

    p.add_argument("--version", action="version", version=f"interprettensor {__version__}")
    # also before the command (interprettensor --backend jax explain ...); its own dest: a subcommand's
    # default (None) would overwrite it
    p.add_argument("--backend", dest="main_backend", choices=("tensorflow", "jax", "torch"), default=None,
                   help="Keras' backend to run on (also accepted after the command)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__package__}.commands.{name}").add_parser(sub, common)
    return p


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
        if not _choose_backend(args):
            return 1
        try:  # the first heavy import: checks Keras' backend, imports TensorFlow
            from ..engine.errors import ExplainError
            from ..io.downloads import DatasetError
            from ..analysis import correction  # noqa: F401 - its layers, registered for load_model (P-ClArC)
        except ImportError as e:
            _error(_first_line(e) if "KERAS_BACKEND" in str(e) or "interprettensor[" in str(e) else
                   f"cannot import TensorFlow/Keras ({_first_line(e)}); install interprettensor[cpu] or "
                   f"interprettensor[gpu]", args)
            return 1
        if not getattr(args, "quiet", False):
            import keras

            print(f"interprettensor: Keras backend {keras.backend.backend()}", file=sys.stderr)
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


def _choose_backend(args: argparse.Namespace) -> bool:
    """``--backend`` sets KERAS_BACKEND before Keras is imported; False (after an error message) when
    Keras already runs on another backend in this process."""
    chosen = getattr(args, "backend", None) or getattr(args, "main_backend", None)
    if not chosen:
        return True
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() != chosen:
        _error(f"--backend {chosen}: Keras was already imported in this process with its "
               f"{keras.backend.backend()!r} backend; run the command in a new process", args)
        return False
    os.environ["KERAS_BACKEND"] = chosen
    return True


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

