"""What several subcommands share: the error they raise for expected failures (:class:`CLIError`), the
argument types (:func:`_positive_int`, ...), the rule and input options, and small helpers (output
folder, ranges, progress messages). Imports neither TensorFlow nor Keras."""

from __future__ import annotations

import argparse
import os
from typing import Sequence

from ...rule_names import BOX_RULES, GATE_RULES, needs_box
from ...engine.errors import InterpretTensorError

__all__ = ["CLIError", "RULE_PARAMS", "GATE_RULES", "BOX_RULES", "needs_box", "prepare_out_dir",
           "add_rule_params", "add_image_options"]

RULE_PARAMS = ("epsilon", "alpha", "beta", "gamma", "low", "high")


class CLIError(InterpretTensorError):
    """An expected failure: reported as ``error: <message>`` without a traceback."""


# ---------------------------------------------------------------------------------------------- argument types
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


def fraction(interval: str):
    """An argparse type for a fraction in ``interval``, ``'(0, 1]'`` or ``'[0, 1)'`` (NaN refused)."""
    checks = {"(0, 1]": lambda v: 0.0 < v <= 1.0, "[0, 1)": lambda v: 0.0 <= v < 1.0}
    inside = checks[interval]

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            v = float("nan")
        if not inside(v):
            raise argparse.ArgumentTypeError(f"expected a fraction in {interval}, got {s!r}")
        return v

    return parse


def _keep_prob(s: str) -> float:
    v = _positive_float(s)
    if v > 1:
        raise argparse.ArgumentTypeError(f"a keep probability is in (0, 1], got {s!r}")
    return v


# ---------------------------------------------------------------------------------------------- options
def add_rule_params(p: argparse.ArgumentParser, helps: dict[str, str] | None = None) -> None:
    """``--epsilon``, ``--alpha``, ``--beta``, ``--gamma``, ``--low``, ``--high`` (:data:`RULE_PARAMS`):
    floats, default None; ``helps`` gives their help texts (default: "NAME of the rule")."""
    for name in RULE_PARAMS:
        p.add_argument(f"--{name}", type=float, default=None, help=(helps or {}).get(name, f"{name} of the rule"))


def add_image_options(p: argparse.ArgumentParser,
                      range_help: str = "image pixels 0..255 are mapped to LOW..HIGH (default: 0 1)",
                      color_help: str = "auto: the image must have the model's channel count; grayscale/rgb: "
                                        "convert") -> None:
    """``--input-range LOW HIGH``, ``--color-mode`` and ``--resize``: how image files become inputs."""
    p.add_argument("--input-range", type=float, nargs=2, default=(0.0, 1.0), metavar=("LOW", "HIGH"), help=range_help)
    p.add_argument("--color-mode", choices=["auto", "grayscale", "rgb"], default="auto", help=color_help)
    p.add_argument("--resize", action="store_true", help="resize images to the model's input size")


# ---------------------------------------------------------------------------------------------- helpers
def _check_range(option: str, pair: Sequence[float]) -> None:
    lo, hi = (float(v) for v in pair)
    if not (lo < hi):  # also NaN
        raise CLIError(f"{option}: the low value must be below the high value, got {lo:g} and {hi:g}")


def _check_target(target: int | None) -> None:
    if target is not None and target < 0:
        raise CLIError(f"--target must be a class index >= 0, got {target}")


def _say(args: argparse.Namespace, msg: str) -> None:
    if not args.quiet:
        print(msg, flush=True)


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


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
