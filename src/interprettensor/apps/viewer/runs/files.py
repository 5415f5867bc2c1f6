"""Reading a run's files lazily (numpy only): the arrays of ``.npz`` files on demand (:class:`_Members`:
an uncompressed member is memory-mapped, a compressed one loaded once, the open maps kept in a small
LRU), their names (:func:`_npz_keys`), the JSON files that describe a run (:func:`_read_json`,
:func:`_read_meta`), the file names the viewer looks for, and :class:`RunError`, raised for anything that
cannot be read."""

from __future__ import annotations

import json
import os
import threading
import zipfile
from collections import OrderedDict

import numpy as np

from ....engine.errors import InterpretTensorError

MANIFEST, RELEVANCES, CONCEPTS, SPRAY_DIR, SPRAY_JSON = ("manifest.json", "relevances.npz", "concepts.json", "spray",
                                                        "spray.json")


#: held while numpy parses an array's header (``ast.literal_eval``): CPython 3.11's AST construction
#: fails when several threads parse at once and a garbage collection switches between them
#: (``SystemError: AST constructor recursion depth mismatch``, CPython gh-106905), and the viewer
#: answers its requests in threads (a page of thumbnails asks for many arrays at once)
_PARSING = threading.Lock()


class RunError(InterpretTensorError, ValueError):
    """A path that holds no run the viewer can show, or a run file that cannot be read."""


class _Members:
    """Arrays of ``.npz`` files read on demand: an uncompressed member is memory-mapped (nothing is
    read until a row is used), a compressed one loaded once. A small LRU keeps the open maps."""

    def __init__(self, capacity: int = 256):
        self.capacity = capacity
        self.cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, path: str, key: str) -> np.ndarray:
        with self.lock:
            hit = self.cache.get((path, key))
            if hit is not None:
                self.cache.move_to_end((path, key))
                return hit
        arr = _open_member(path, key)
        with self.lock:
            self.cache[(path, key)] = arr
            while len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
        return arr


def _open_member(path: str, key: str) -> np.ndarray:
    name = key + ".npy"
    try:
        with zipfile.ZipFile(path) as zf:
            try:
                info = zf.getinfo(name)
            except KeyError:
                raise RunError(f"{path!r} has no array {key!r} (it holds "
                               f"{', '.join(sorted(n[:-4] for n in zf.namelist()))})") from None
            if info.compress_type == zipfile.ZIP_STORED:
                with open(path, "rb") as f:
                    f.seek(info.header_offset)
                    local = f.read(30)
                    if local[:4] != b"PK\x03\x04":
                        raise RunError(f"{path!r}: damaged archive (member {name})")
                    start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") \
                        + int.from_bytes(local[28:30], "little")
                    f.seek(start)
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    with _PARSING:
                        shape, fortran, dtype = read(f)
                    offset = f.tell()
                if dtype.hasobject:
                    raise RunError(f"{path!r}: array {key!r} holds Python objects")
                if int(np.prod(shape)) == 0:
                    return np.zeros(shape, dtype)
                return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape),
                                 order="F" if fortran else "C")
            with zf.open(name) as f, _PARSING:
                return np.lib.format.read_array(f, allow_pickle=False)
    except RunError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise RunError(f"cannot read array {key!r} of {path!r}: {e}") from None


def _npz_keys(path: str) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    except (OSError, zipfile.BadZipFile) as e:
        raise RunError(f"cannot read {path!r}: {e}") from None


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read {path!r} ({what}): {e}") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path!r} is not {what} (a JSON object expected)")
    return obj


def _read_meta(path: str, kind: str, table: str, what: str) -> dict:
    """The JSON file ``path`` of a result of ``kind``, which must hold a dict under ``table``."""
    meta = _read_json(path, f"{what} ({os.path.basename(path)})")
    if meta.get("kind") != kind or not isinstance(meta.get(table), dict):
        raise RunError(f"{path!r} is not {what} (expected \"kind\": \"{kind}\" and \"{table}\")")
    return meta
