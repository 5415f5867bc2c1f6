"""Reading inputs from files: image files (PNG, JPEG, ...), folders of them and ``.npy`` arrays,
checked against a model's input shape; and loading saved models. Used by the command line and by
:func:`~interprettensor.explain_dataset` on files."""

from __future__ import annotations

import os
from typing import Any, Sequence

from ..engine.errors import InterpretTensorError

__all__ = ["InputError", "IMAGE_EXTS", "load_model", "model_input_shape", "collect_inputs", "load_image",
           "shape_str", "folder_labels", "read_labels"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class InputError(InterpretTensorError, ValueError):
    """An input file or model that cannot be read or does not fit: the message names the file and
    the shapes."""


def load_model(path: str) -> Any:
    """``keras.models.load_model`` with clean errors for missing and unreadable files."""
    import keras

    from .. import original  # noqa: F401 - the library's layers, registered for deserialisation

    if not os.path.exists(path):
        raise InputError(f"model file {path!r} does not exist")
    if os.path.isdir(path):
        raise InputError(f"model path {path!r} is a folder; give a .keras or .h5 file")
    if path.lower().endswith(".keras"):
        import zipfile

        if not zipfile.is_zipfile(path):
            raise InputError(f"cannot load the model {path!r}: not a Keras .keras archive (corrupt, truncated "
                           f"or another kind of file)")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - keras raises many kinds for a corrupt file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot load the model {path!r} (is it a Keras .keras or .h5 file?): "
                       f"{type(e).__name__}: {msg[:300]}") from None


def model_input_shape(model: Any) -> tuple | None:
    """The model's input shape ``(None, H, W, C)`` (None entries: any size), if it can be known: from a
    functional model's input, else from the shape the model was built with (``get_build_config()``, e.g.
    ``it.Sequential`` and models saved by ``interprettensor train``), else from the first layer (an
    ``it.Linear`` with ``input_dim``, an ``it.Convolution`` with ``input_depth``); the batch size is
    always None. None when nothing tells (the data's shape is then used)."""
    from ..engine.targets import known_input_shapes  # here: reading files needs no TensorFlow

    shapes = known_input_shapes(model)
    if shapes:
        if len(shapes) > 1:
            raise InputError(f"the model has {len(shapes)} inputs; 'explain' supports single-input models")
        return (None,) + tuple(shapes[0])
    layers = getattr(model, "modules", None) or getattr(model, "layers", None) or []
    first = layers[0] if layers else None
    dim, depth = getattr(first, "input_dim", None), getattr(first, "input_depth", None)
    if depth is not None:  # it.Convolution
        if isinstance(dim, (tuple, list)) and len(dim) == 2:
            return (None, int(dim[0]), int(dim[1]), int(depth))
        return (None, None, None, int(depth))
    if isinstance(dim, int):  # it.Linear
        return (None, dim)
    return None


def shape_str(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("any" if s is None else str(int(s)) for s in shape) + ")"


class _Item:
    __slots__ = ("name", "path", "array", "index", "klass")

    def __init__(self, name: str, path: str, array: Any = None, index: int | None = None):
        self.name, self.path, self.array, self.index = name, path, array, index
        self.klass: str | None = None  # the class subfolder the input came from (class-per-subfolder layout)


def _npy_samples(path: str, expected: tuple | None) -> tuple[Any, bool]:
    """Open a .npy array; returns (array as a batch, added_channel) after checking its shape."""
    import numpy as np

    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the array {path!r}: {e}") from None
    if expected is None:
        return (arr if arr.ndim >= 2 else arr[None]), False
    sample = tuple(expected[1:])

    def fits(shape: tuple) -> bool:
        return len(shape) == len(sample) and all(e is None or e == s for e, s in zip(sample, shape))

    if fits(arr.shape):
        return arr[None], False
    if arr.ndim >= 1 and fits(arr.shape[1:]):
        return arr, False
    if sample and sample[-1] == 1 and arr.ndim >= 1 and fits(arr.shape[1:] + (1,)):
        return arr, True
    if sample and sample[-1] == 1 and fits(arr.shape + (1,)):
        return arr[None], True
    raise InputError(f"array {path!r} has shape {shape_str(arr.shape)}, but the model expects one sample of "
                   f"shape {shape_str(sample)} or a batch (N, {shape_str(sample)[1:]}")


def _input_files(folder: str) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTS + (".npy",))
                  and os.path.isfile(os.path.join(folder, f)))


def collect_inputs(paths: Sequence[str], expected: tuple | None) -> list[_Item]:
    """Expand files, folders and .npy arrays into a list of named inputs (checked to exist).

    A folder that holds no inputs itself but subfolders of them is a class-per-subfolder layout
    (``digits/0/*.png``, ``digits/1/*.png``, ...): its inputs are read subfolder by subfolder (sorted by
    name), named ``SUBFOLDER_NAME``, and carry their subfolder as their class (:func:`folder_labels`)."""
    items: list[_Item] = []
    for p in paths:
        if not os.path.exists(p):
            raise InputError(f"input {p!r} does not exist")
        if os.path.isdir(p):
            files = _input_files(p)
            if not files:
                subs = sorted(d for d in os.listdir(p) if os.path.isdir(os.path.join(p, d))
                              and not d.startswith(".") and _input_files(os.path.join(p, d)))
                if not subs:
                    raise InputError(f"folder {p!r} has no images ({', '.join(IMAGE_EXTS)}) or .npy arrays, nor "
                                     f"class subfolders of them")
                for d in subs:
                    for f in _input_files(os.path.join(p, d)):
                        for it in _file_items(os.path.join(p, d, f), expected):
                            it.name, it.klass = f"{d}_{it.name}", d
                            items.append(it)
                continue
            for f in files:
                items.extend(_file_items(os.path.join(p, f), expected))
        else:
            items.extend(_file_items(p, expected))
    seen: dict[str, int] = {}
    for it in items:
        k = seen.get(it.name, 0)
        seen[it.name] = k + 1
        if k:
            it.name = f"{it.name}_{k + 1}"
    return items


def folder_labels(items: Sequence[_Item]) -> tuple[Any, list[str] | None]:
    """The class labels of inputs read from class subfolders (:func:`collect_inputs`): ``(labels, names)``
    with ``labels`` int64, one per input, -1 for inputs not from a class subfolder, or ``None`` when no
    input is. Subfolder names that are all integers >= 0 are the class indices themselves (``names``
    None); otherwise the sorted subfolder names are classes 0..K-1 and ``names`` lists them in that order."""
    import numpy as np

    found = sorted({it.klass for it in items if it.klass is not None})
    if not found:
        return None, None
    if all(k.isdigit() for k in found):
        index, names = {k: int(k) for k in found}, None
    else:
        index, names = {k: i for i, k in enumerate(found)}, found
    labels = np.array([-1 if it.klass is None else index[it.klass] for it in items], np.int64)
    return labels, names


def read_labels(path: str, n: int | None = None) -> Any:
    """A labels file: one integer class index per input, in the order the inputs are read (-1: unknown);
    either a ``.npy`` array of shape ``(N,)`` or a text file (``.txt``, ``.csv``, ...) with one integer per
    line (blank lines are ignored). Returns int64 ``(N,)``; ``n``: the number of inputs, checked."""
    import numpy as np

    if not os.path.isfile(path):
        raise InputError(f"labels file {path!r} does not exist")
    if path.lower().endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read the labels file {path!r}: {e}") from None
        if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer)
                                 or (np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0))):
            raise InputError(f"labels file {path!r} must hold one integer class index per input, shape (N,); got "
                             f"shape {arr.shape} of {arr.dtype}")
        labels = arr.astype(np.int64)
    else:
        values = []
        try:
            with open(path) as f:
                for lineno, line in enumerate(f, 1):
                    text = line.strip().rstrip(",")
                    if not text:
                        continue
                    try:
                        values.append(int(text))
                    except ValueError:
                        raise InputError(f"labels file {path!r}, line {lineno}: {line.strip()!r} is not an integer "
                                         f"class index (one per line)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read the labels file {path!r}: {e}") from None
        labels = np.array(values, np.int64)
    if labels.size and labels.min() < -1:
        raise InputError(f"labels file {path!r}: class indices must be >= 0 (-1: unknown), got {int(labels.min())}")
    if n is not None and len(labels) != n:
        raise InputError(f"labels file {path!r} has {len(labels)} labels, but there are {n} inputs; give one class "
                         f"index per input, in input order")
    return labels


def _file_items(path: str, expected: tuple | None) -> list[_Item]:
    stem, ext = os.path.splitext(os.path.basename(path))
    ext = ext.lower()
    if ext == ".npy":
        arr, added = _npy_samples(path, expected)
        if added:
            arr = arr[..., None]
        if len(arr) == 1:
            return [_Item(stem, path, arr, 0)]
        width = len(str(len(arr) - 1))
        return [_Item(f"{stem}_{i:0{width}d}", path, arr, i) for i in range(len(arr))]
    if ext in IMAGE_EXTS:
        return [_Item(stem, path)]
    raise InputError(f"input {path!r}: unsupported file type {ext or '(none)'}; give images "
                   f"({', '.join(IMAGE_EXTS)}), folders or .npy arrays")


def load_image(path: str, expected: tuple | None, color_mode: str, input_range: Sequence[float],
               resize: bool) -> Any:
    """Read an image file as ``(H, W, C)`` float32 scaled from 0..255 to ``input_range``, checked
    against the model's expected input shape."""
    import keras
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode, size = im.mode, im.size
    except (OSError, UnidentifiedImageError) as e:
        raise InputError(f"cannot read the image {path!r}: {e}") from None
    native_c = 1 if (mode in ("1", "L", "LA", "I", "F") or mode.startswith("I;")) else 3
    native_shape = (size[1], size[0], native_c)
    want_c = expected[-1] if expected is not None and len(expected) == 4 else None
    if expected is not None and len(expected) != 4:
        raise InputError(f"the model expects inputs of shape {shape_str(expected[1:])}, not images; "
                       f"give a .npy array")
    if color_mode == "auto":
        if want_c is not None and want_c != native_c:
            raise InputError(f"image {path!r} has shape {shape_str(native_shape)} ({native_c} channel"
                           f"{'s' if native_c > 1 else ''}), but the model expects "
                           f"{shape_str(expected[1:])}; use --color-mode {'rgb' if want_c == 3 else 'grayscale'} "
                           f"to convert")
        c = want_c or native_c
    else:
        c = 1 if color_mode == "grayscale" else 3
        if want_c is not None and want_c != c:
            raise InputError(f"--color-mode {color_mode} gives {c} channel(s), but the model expects "
                           f"{shape_str(expected[1:])}")
    target = None
    if expected is not None:
        h, w = expected[1], expected[2]
        if (h is not None and h != native_shape[0]) or (w is not None and w != native_shape[1]):
            if not resize or h is None or w is None:
                raise InputError(f"image {path!r} has shape {shape_str(native_shape[:2] + (c,))}, but the "
                               f"model expects {shape_str(expected[1:])}" + ("" if resize else
                                                                              "; use --resize to resize"))
            target = (int(h), int(w))
    try:
        img = keras.utils.load_img(path, color_mode="grayscale" if c == 1 else "rgb", target_size=target)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the image {path!r}: {e}") from None
    arr = keras.utils.img_to_array(img, dtype="float32")
    lo, hi = input_range
    return (lo + (hi - lo) * arr / 255.0).astype("float32")
