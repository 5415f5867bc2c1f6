"""Data sets by name: the embedded digits, and MNIST / Fashion-MNIST downloaded on request.

MNIST and Fashion-MNIST come as the official gzipped IDX files, fetched with
``keras.utils.get_file`` into a cache folder and checked against their published MD5 checksums. A
checksum mismatch or a failed download raises :class:`DatasetError` with the cause and a hint
(``--dataset digits`` needs no download).

``INTERPRETTENSOR_DATASET_MIRROR`` (a base URL, ``file://`` too) replaces the download locations.

Example::

    from interprettensor.io import downloads
    x_train, y_train, x_test, y_test = downloads.load("mnist", cache_dir="~/.cache/interprettensor")
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import struct
from typing import Sequence

import numpy as np

from ..engine.errors import InterpretTensorError

__all__ = ["DATASETS", "SOURCES", "DatasetError", "default_cache_dir", "read_idx", "fetch", "load_idx_dataset",
           "load"]

DATASETS = ("digits", "mnist", "fashion_mnist")

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

#: Per data set: mirrors (tried in order) and the official MD5 checksum of each file.
SOURCES: dict[str, dict] = {
    "mnist": {
        "mirrors": ["https://storage.googleapis.com/cvdf-datasets/mnist/",
                    "https://ossci-datasets.s3.amazonaws.com/mnist/"],
        "md5": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    },
    "fashion_mnist": {
        "mirrors": ["https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
                    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    },
}

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetError(InterpretTensorError, OSError):
    """A data set could not be downloaded, verified or read."""


def default_cache_dir() -> str:
    """``$INTERPRETTENSOR_CACHE``, else ``$XDG_CACHE_HOME/interprettensor``, else
    ``~/.cache/interprettensor``."""
    env = os.environ.get("INTERPRETTENSOR_CACHE")
    if env:
        return os.path.expanduser(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "interprettensor")


def read_idx(path_or_bytes: str | bytes) -> np.ndarray:
    """Parse an IDX file (gzipped or not): magic ``00 00 <type> <ndim>``, big-endian int32 sizes,
    then the data. Raises :class:`DatasetError` on a malformed file."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        raw, name = bytes(path_or_bytes), "IDX data"
    else:
        name = str(path_or_bytes)
        with open(path_or_bytes, "rb") as f:
            raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DatasetError(f"{name}: not a valid gzip file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DatasetError(f"{name}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{name}: truncated IDX header")
    shape = struct.unpack(f">{ndim}i", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetError(f"{name}: IDX header says shape {shape} ({expected} bytes of data), "
                           f"the file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _md5(path: str) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _mirrors(name: str) -> list[str]:
    env = os.environ.get("INTERPRETTENSOR_DATASET_MIRROR")
    if env:
        return [env if env.endswith("/") else env + "/"]
    return list(SOURCES[name]["mirrors"])


def fetch(name: str, cache_dir: str | None = None, quiet: bool = False) -> dict[str, str]:
    """Download (or find in the cache) the four IDX files of ``name``; returns ``{part: path}``.

    Files already in ``cache_dir/name`` with the right checksum are not downloaded again; a cached
    file with a wrong checksum is downloaded anew. Raises :class:`DatasetError` when every mirror
    fails or a downloaded file does not match its checksum.
    """
    import keras

    if name not in SOURCES:
        raise DatasetError(f"unknown data set {name!r} to download; known: {', '.join(SOURCES)}")
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
    try:
        os.makedirs(os.path.join(cache_dir, name), exist_ok=True)
    except OSError as e:
        raise DatasetError(f"cannot create the cache folder {cache_dir}: {e.strerror or e}") from None
    paths = {}
    for part, fname in FILES.items():
        md5 = SOURCES[name]["md5"][fname]
        target = os.path.join(cache_dir, name, fname)
        if os.path.exists(target) and _md5(target) == md5:
            paths[part] = target
            continue
        errors = []
        for base in _mirrors(name):
            url = base + fname
            try:
                out = io.StringIO()
                with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext():
                    got = keras.utils.get_file(fname, origin=url, file_hash=md5, hash_algorithm="md5",
                                               cache_dir=cache_dir, cache_subdir=name)
            except ValueError as e:  # keras: "Incomplete or corrupted file detected"
                _remove(target)
                errors.append(f"{url}: checksum mismatch ({e})")
                continue
            except Exception as e:  # noqa: BLE001 - keras raises a bare Exception on URL errors
                _remove(target)
                errors.append(f"{url}: {str(e).replace(f'URL fetch failure on {url}: ', '')}")
                continue
            if _md5(got) != md5:
                _remove(got)
                errors.append(f"{url}: checksum mismatch (md5 {_md5(got) if os.path.exists(got) else '?'} "
                              f"!= expected {md5})")
                continue
            paths[part] = got
            break
        else:
            mismatch = all("checksum mismatch" in e for e in errors)
            cause = ("the downloaded file does not match its published checksum (corrupt download or "
                     "changed mirror)" if mismatch else "the download failed (offline, or behind a proxy?)")
            raise DatasetError(
                f"cannot get {name} file {fname}: {cause}.\n  " + "\n  ".join(errors)
                + f"\nUse --dataset digits (scikit-learn's digits, no download), or put the official "
                  f"files into {os.path.join(cache_dir, name)}.")
    return paths


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def load_idx_dataset(paths: dict[str, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read four IDX files into ``(x_train, y_train, x_test, y_test)``: images as float32
    ``(N, H, W, 1)`` in [0, 1], labels int64."""
    arrays = {part: read_idx(p) for part, p in paths.items()}
    out = []
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DatasetError(f"{split} images of shape {x.shape} do not fit labels of shape {y.shape}")
        out += [(x.astype("float32") / 255.0)[..., None], y.astype("int64")]
    return tuple(out)  # type: ignore[return-value]


def load(name: str = "digits", cache_dir: str | None = None, quiet: bool = False, test_fraction: float = 0.2,
         seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)`` of 28x28 grey images in [0, 1], shape (N, 28, 28, 1).

    ``'digits'``: scikit-learn's digits in the MNIST frame (:func:`interprettensor.data.load_digits`),
    split with ``test_fraction``; ``'mnist'`` and ``'fashion_mnist'``: the official train/test split,
    downloaded into ``cache_dir`` (see :func:`fetch`).
    """
    key = name.lower().replace("-", "_")
    if key == "digits":
        from .digits import load_digits, train_test_split

        x, y = load_digits()
        return train_test_split(x, y, test_fraction=test_fraction, seed=seed)
    if key in SOURCES:
        return load_idx_dataset(fetch(key, cache_dir, quiet=quiet))
    raise DatasetError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")


def class_names(name: str) -> Sequence[str]:
    """Human-readable class names of a data set."""
    if name == "fashion_mnist":
        return ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                "Ankle boot")
    return tuple(str(i) for i in range(10))
