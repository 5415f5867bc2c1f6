"""Explain runs, one row per sample (:class:`ExplainRun`): a run of ``explain_dataset`` (``manifest.json``
and shards, :class:`ShardRun`; damaged shards make their samples unavailable, the rest is shown) and a
``relevances.npz`` of ``interprettensor explain`` (:class:`NpzRun`). The per-sample metadata is read once,
relevance and inputs per sample from memory maps; :meth:`ExplainRun.group_key` tells which runs explain
the same inputs with the same model (hashes of the stored arrays, :func:`_hash_arrays`)."""

from __future__ import annotations

import bisect
import json
import os
import re
from typing import Any, Callable

import numpy as np

from .files import MANIFEST, RunError, _Members, _npz_keys, _read_json


class ExplainRun:
    """Explanations of a data set, one row per sample: the metadata in memory, relevance and inputs
    read per sample. ``ids`` are the samples' positions in the data set (the ``indices`` array)."""

    kind = "explain"
    path: str
    n: int
    sample_shape: tuple
    keys: list[str]
    rule: str
    targets: np.ndarray
    labels: np.ndarray | None
    valid: np.ndarray
    names: np.ndarray | None
    ids: np.ndarray

    def row_of(self, sample: int) -> int:
        """The row of sample id ``sample`` (a position in the data set)."""
        row = int(np.searchsorted(self.ids, sample))
        if row >= self.n or int(self.ids[row]) != sample:
            raise RunError(f"run {self.path!r} has no sample {sample} (it holds {self.n} samples)")
        return row

    def array_row(self, key: str, row: int) -> np.ndarray:
        raise NotImplementedError

    def relevance(self, sample: int) -> np.ndarray:
        return np.asarray(self.array_row("relevance", self.row_of(sample)), np.float32)

    def inputs(self, sample: int) -> np.ndarray | None:
        if "inputs" not in self.keys:
            return None
        return np.asarray(self.array_row("inputs", self.row_of(sample)), np.float32)

    def outputs(self, sample: int) -> np.ndarray:
        return np.asarray(self.array_row("outputs", self.row_of(sample)), np.float32).reshape(-1)

    #: shards that cannot be read (position in the run -> message naming the file and what to do)
    damaged: dict[int, str] = {}

    def unavailable(self, row: int) -> tuple[str, str] | None:
        """``(file name, message)`` where row ``row`` cannot be shown (its shard is damaged), else ``None``."""
        return None

    def available(self) -> np.ndarray:
        """Per row: ``False`` where the row's shard is damaged."""
        return np.ones(self.n, bool)

    def group_key(self) -> tuple | None:
        """Runs with the same key explain the same inputs with the same model (e.g. with other rules):
        the viewer lets the user switch between them. ``None``: the inputs (or the model) are not known,
        so the run is a group of its own: two runs whose inputs are not known to be equal are never
        offered as rules of one data set."""
        return None


def _rule_name(identity_rule: str) -> str:
    """``"'epsilon' {\"epsilon\": 0.01} (rules ...)"`` -> ``"epsilon epsilon=0.01"``."""
    m = re.match(r"^'([^']*)'\s*(\{.*?\})?", identity_rule or "")
    if not m:
        return (identity_rule or "").split(" (rules")[0][:60]
    name = m.group(1)
    try:
        params = json.loads(m.group(2)) if m.group(2) else {}
    except ValueError:
        params = {}
    shown = {k: v for k, v in params.items() if k not in ("batch_size", "jit_compile", "dtype")}
    return name + "".join(f" {k}={v}" for k, v in shown.items())


class ShardRun(ExplainRun):
    """A run of ``explain_dataset`` (``manifest.json`` + shards); only the shards the manifest lists."""

    def __init__(self, path: str, members: _Members):
        self.path, self.members = path, members
        m = _read_json(os.path.join(path, MANIFEST), "a manifest of explain_dataset")
        if not isinstance(m.get("shards"), list) or "identity" not in m:
            raise RunError(f"{os.path.join(path, MANIFEST)!r} is not a manifest written by explain_dataset")
        self.manifest = m
        ident = m["identity"]
        self.rule = _rule_name(str(ident.get("rule", "")))
        self.complete = bool(m.get("complete"))
        self.files = [os.path.join(path, e["file"]) for e in m["shards"]]
        self.starts = [int(e["start"]) for e in m["shards"]]
        counts = [int(e["count"]) for e in m["shards"]]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # row -> shard: bisect
        self.n = int(self.offsets[-1])
        self.sample_shape = tuple(ident.get("sample_shape") or ())
        small = ("indices", "targets", "valid", "labels", "names")
        # the small per-sample arrays, one member read each; a shard that cannot be read (truncated,
        # foreign) is marked damaged and its samples unavailable: the rest of the run is shown
        self.damaged = {}
        read: list[dict | None] = []
        self.keys = []
        for k, f in enumerate(self.files):
            try:
                keys = _npz_keys(f)
                got = {key: np.asarray(members.get(f, key)) for key in small if key in keys}
                if "indices" not in got or got["indices"].shape != (counts[k],):
                    raise RunError(f"it holds {got['indices'].shape if 'indices' in got else 'no'} indices, the "
                                   f"manifest lists {counts[k]} samples")
                self.keys = self.keys or keys
                read.append(got)
            except RunError as e:
                self.damaged[k] = self._damage(k, str(e))
                read.append(None)
        if not self.keys:  # no shard readable: what the manifest says was stored
            self.keys = ["relevance", "indices", "targets", "outputs", "valid"] + \
                [k for k in ident.get("stored", []) if isinstance(k, str)]
        parts: dict[str, list] = {k: [] for k in small}
        for k, got in enumerate(read):
            count, start = counts[k], self.starts[k]
            if got is None:
                got = {"indices": np.arange(start, start + count, dtype=np.int64),
                       "targets": np.full(count, -1, np.int64), "valid": np.zeros(count, bool),
                       "labels": np.full(count, -1, np.int64), "names": np.full(count, "", "<U1")}
            for key in small:
                if key in self.keys:
                    parts[key].append(got[key] if key in got else
                                      np.ones(count, bool) if key == "valid" else np.full(count, -1, np.int64))
        self.ids = np.concatenate(parts["indices"]).astype(np.int64) if self.files else np.zeros(0, np.int64)
        self.targets = np.concatenate(parts["targets"]).astype(np.int64) if self.files else np.zeros(0, np.int64)
        self.valid = (np.concatenate(parts["valid"]).astype(bool) if parts["valid"]
                      else np.ones(self.n, bool))
        self.labels = np.concatenate(parts["labels"]).astype(np.int64) if parts["labels"] else None
        self.names = np.concatenate(parts["names"]) if parts["names"] else None
        good = [f for k, f in enumerate(self.files) if k not in self.damaged]
        if not self.sample_shape and good:
            self.sample_shape = tuple(members.get(good[0], "relevance").shape[1:])

    def _damage(self, k: int, reason: str) -> str:
        start, count = self.starts[k], int(self.offsets[k + 1] - self.offsets[k])
        return (f"shard {os.path.basename(self.files[k])} of run {self.path!r} is damaged ({reason}): its "
                f"{count} samples ({start}..{start + count - 1}) are unavailable. Rerun the same "
                f"`interprettensor explain ... --resume` (explain_dataset(..., resume=True)): it rewrites damaged "
                f"shards")

    def _shard(self, row: int) -> int:
        return bisect.bisect_right(self.offsets, row) - 1

    def unavailable(self, row: int) -> tuple[str, str] | None:
        k = self._shard(row) if self.damaged else -1
        return (os.path.basename(self.files[k]), self.damaged[k]) if k in self.damaged else None

    def available(self) -> np.ndarray:
        ok = np.ones(self.n, bool)
        for k in self.damaged:
            ok[int(self.offsets[k]):int(self.offsets[k + 1])] = False
        return ok

    def group_key(self) -> tuple | None:
        """The model's fingerprint (the manifest's identity) and a fingerprint of the inputs: the
        content hash of an input array (the identity's ``input``), else a hash of the stored inputs
        (runs up to ``HASH_LIMIT`` bytes of them), else the identity's description of the input (file
        names, or a tf.data spec: not the content) together with a hash of the model's outputs (the same
        model gives the same outputs on the same inputs, whatever the rule). ``None`` otherwise."""
        ident = self.manifest.get("identity") or {}
        model, described = ident.get("model"), str(ident.get("input", ""))
        if not isinstance(model, str) or not model:
            return None
        if re.match(r"^array\(.*:[0-9a-f]{16}", described):  # the source hashed the whole array
            return ("input", model, described)
        if self.damaged:
            return None
        for key in ("inputs", "outputs"):
            if key in self.keys:
                digest = _hash_arrays(lambda: (self.members.get(f, key) for f in self.files))
                if digest is not None:
                    return (key, model, described if key == "outputs" else "", self.n, digest)
        return None

    def array_row(self, key: str, row: int) -> np.ndarray:
        k = self._shard(row)
        if k in self.damaged:
            raise RunError(self.damaged[k])
        try:
            return self.members.get(self.files[k], key)[row - int(self.offsets[k])]
        except (RunError, OSError, ValueError) as e:
            raise RunError(self._damage(k, str(e))) from None


#: stored inputs up to this size are hashed to tell whether two runs explain the same inputs
HASH_LIMIT = 256 * 2**20


def _hash_arrays(arrays: Callable[[], Any], limit: int = HASH_LIMIT) -> str | None:
    """A hash of the arrays' shapes, dtypes and bytes; ``None`` if they are larger than ``limit`` bytes
    together or cannot be read."""
    import hashlib

    h = hashlib.sha256()
    total = 0
    try:
        for a in arrays():
            total += a.nbytes
            if total > limit:
                return None
            h.update(f"{a.shape}:{a.dtype}".encode())
            h.update(np.ascontiguousarray(a).view(np.uint8).reshape(-1))
    except (RunError, OSError, ValueError):
        return None
    return h.hexdigest()[:16]


class NpzRun(ExplainRun):
    """A ``relevances.npz`` of ``interprettensor explain`` (the same arrays as a shard)."""

    def __init__(self, file: str, members: _Members):
        self.file, self.members = file, members
        self.path = os.path.dirname(file)
        self.keys = _npz_keys(file)
        if "relevance" not in self.keys or "indices" not in self.keys:
            raise RunError(f"{file!r} is not a relevances.npz of interprettensor 2.0 (arrays: "
                           f"{', '.join(sorted(self.keys))}; expected relevance, indices, targets, outputs, ...)")
        rel = members.get(file, "relevance")
        self.n, self.sample_shape = int(rel.shape[0]), tuple(rel.shape[1:])
        get = lambda k: np.asarray(members.get(file, k)) if k in self.keys else None  # noqa: E731
        self.ids = get("indices").astype(np.int64)
        self.targets = get("targets").astype(np.int64) if "targets" in self.keys else np.full(self.n, -1)
        self.valid = get("valid").astype(bool) if "valid" in self.keys else np.ones(self.n, bool)
        self.labels = get("labels").astype(np.int64) if "labels" in self.keys else None
        self.names = get("names")
        self.rule = ""
        self.complete = True
        order = np.argsort(self.ids, kind="stable")
        self.order = None if np.array_equal(order, np.arange(self.n)) else order

    def row_of(self, sample: int) -> int:
        if self.order is None:
            return super().row_of(sample)
        rows = np.flatnonzero(self.ids == sample)
        if not len(rows):
            raise RunError(f"run {self.file!r} has no sample {sample}")
        return int(rows[0])

    def array_row(self, key: str, row: int) -> np.ndarray:
        return self.members.get(self.file, key)[row]

    def group_key(self) -> tuple | None:
        """No manifest: a hash of the stored ``inputs`` (else of the ``names``), with a hash of the
        model's ``outputs`` standing for the model (the same model gives the same outputs on the same
        inputs, whatever the rule); ``None`` (a group of its own) where neither is stored."""
        for key in ("inputs", "names"):
            if key in self.keys:
                inputs = _hash_arrays(lambda: [self.members.get(self.file, key)])
                model = _hash_arrays(lambda: [self.members.get(self.file, "outputs")]) \
                    if "outputs" in self.keys else None
                if inputs is not None and model is not None:
                    return ("npz-" + key, self.n, inputs, model)
                return None
        return None
