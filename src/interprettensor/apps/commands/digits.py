"""``interprettensor digits OUT``: write scikit-learn's handwritten digits (the embedded data set of
``train --dataset digits``, as 28x28 frames) as PNG files in class subfolders, ``OUT/0/digit-0000.png``,
``OUT/1/digit-0001.png``, ...: the folder that ``explain``, ``concepts`` and ``evaluate`` read, with
the class of each digit given by its subfolder. (The frames are resized as
:func:`interprettensor.data.load_digits` does.) Needs neither TensorFlow nor Keras."""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = ["add_parser", "cmd_digits", "write_digits"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    from .options import _positive_int

    d = sub.add_parser("digits", parents=[common], help="write the embedded handwritten digits as PNG files",
                       description="Write scikit-learn's 1,797 handwritten digits, prepared as 28x28 frames as "
                                   "'train --dataset digits' uses them, as 8-bit grayscale PNG files in one "
                                   "subfolder per class (OUT/0/digit-0000.png, ...; the number is the digit's "
                                   "index in it.data.load_digits()). 'explain' and 'concepts' read such a folder "
                                   "with the subfolders as the labels.")
    d.add_argument("out", metavar="OUT", help="folder to create (it must not exist or be empty)")
    d.add_argument("--count", type=_positive_int, default=None, metavar="N",
                   help="write only the first N digits (default: all 1,797)")
    d.set_defaults(func=cmd_digits, light=True)


def write_digits(out: str, count: int | None = None) -> tuple[int, list[int]]:
    """Write the first ``count`` digits (all by default) into ``out`` as ``<label>/digit-<index>.png``;
    returns how many were written and their classes. ``out`` must not exist or be an empty folder (nothing is overwritten)."""
    import numpy as np
    from PIL import Image

    from ...io.digits import load_digits

    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise FileExistsError(f"{out!r} exists and is not an empty folder; choose a new folder (nothing was written)")
    x, y = load_digits()
    if count is not None:
        x, y = x[:count], y[:count]
    for label in np.unique(y):
        os.makedirs(os.path.join(out, str(int(label))), exist_ok=True)
    for i, (img, label) in enumerate(zip(x, y)):
        pixels = np.clip(np.round(img[..., 0] * 255.0), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(out, str(int(label)), f"digit-{i:04d}.png"))
    return len(x), sorted(int(c) for c in np.unique(y))


def cmd_digits(args: argparse.Namespace) -> int:
    """``interprettensor digits``: :func:`write_digits`, then say what was written."""
    from .options import CLIError

    try:
        n, classes = write_digits(args.out, args.count)
    except (FileExistsError, OSError) as e:
        raise CLIError(str(e)) from None
    print(f"wrote {n} digits as 28x28 PNG files into {os.path.join(args.out, '<class>')}/ "
          f"(classes {', '.join(map(str, classes))})")
    return 0
