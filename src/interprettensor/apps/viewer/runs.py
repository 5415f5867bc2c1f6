"""The runs the viewer shows, found on disk and read lazily (numpy only: no TensorFlow).

What a folder may hold (``/work`` formats of issue 13, see ``io/shards.py`` and the README):

* an ``explain_dataset`` run: ``manifest.json`` and ``shard-00000.npz``, ... (:class:`ShardRun`);
* an ``interprettensor explain`` run: ``relevances.npz`` (:class:`NpzRun`);
* SpRAy results of a run: ``RUN/spray/spray.json`` and ``RUN/spray/class-<c>.npz`` (:class:`Spray`);
* a concepts (CRP) run: ``concepts.json`` and ``layer-<name>.npz`` (:class:`ConceptsRun`).

Nothing is loaded as a whole: the per-sample metadata (targets, labels, valid, names) is read from
each shard once (a few small arrays), and a sample's relevance or input is read from a memory map of
its shard's member (shards are uncompressed ``.npz`` archives), so a run of any size opens at once.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import threading
import zipfile
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np

from ...engine.errors import InterpretTensorError

__all__ = ["RunError", "ShardRun", "NpzRun", "Spray", "ConceptsRun", "discover", "safe_layer_name"]

MANIFEST, RELEVANCES, CONCEPTS, SPRAY_DIR, SPRAY_JSON = ("manifest.json", "relevances.npz", "concepts.json", "spray",
                                                        "spray.json")
_SHARD_RE = re.compile(r"^shard-\d{5,}\.npz$")
#: how deep below a given folder runs are looked for (RUN/epsilon, RUN/rules/gamma, ...)
MAX_DEPTH = 3


class RunError(InterpretTensorError, ValueError):
    """A path that holds no run the viewer can show, or a run file that cannot be read."""


def safe_layer_name(layer: str) -> str:
    """A layer's name as used in ``layer-<safe name>.npz``: characters other than ``[A-Za-z0-9_.-]``
    replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", layer)


# ---------------------------------------------------------------------------------------------- arrays
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
                    shape, fortran, dtype = read(f)
                    offset = f.tell()
                if dtype.hasobject:
                    raise RunError(f"{path!r}: array {key!r} holds Python objects")
                if int(np.prod(shape)) == 0:
                    return np.zeros(shape, dtype)
                return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape),
                                 order="F" if fortran else "C")
            with zf.open(name) as f:
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


# ---------------------------------------------------------------------------------------------- explain runs
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


def _read_meta(path: str, kind: str, table: str, what: str) -> dict:
    """The JSON file ``path`` of a result of ``kind``, which must hold a dict under ``table``."""
    meta = _read_json(path, f"{what} ({os.path.basename(path)})")
    if meta.get("kind") != kind or not isinstance(meta.get(table), dict):
        raise RunError(f"{path!r} is not {what} (expected \"kind\": \"{kind}\" and \"{table}\")")
    return meta


# ---------------------------------------------------------------------------------------------- SpRAy
class Spray:
    """SpRAy results of an explain run (``RUN/spray/spray.json``, ``class-<c>.npz``)."""

    def __init__(self, folder: str, members: _Members):
        self.folder, self.members = folder, members
        path = os.path.join(folder, SPRAY_JSON)
        self.meta = meta = _read_meta(path, "spray", "classes", "SpRAy results")
        self.classes = {str(c): v for c, v in meta["classes"].items()}
        for c, v in self.classes.items():
            if not isinstance(v, dict) or not isinstance(v.get("clusterings", []), list) \
                    or not isinstance(v.get("embeddings", []), list):
                raise RunError(f"{path!r}: the entry of class {c} is not {{\"file\", \"n\", \"clusterings\": [...], "
                               f"\"embeddings\": [...], \"eigengap\"}}")
        skipped = meta.get("skipped")
        self.skipped = {str(c): str(why) for c, why in skipped.items()} if isinstance(skipped, dict) else {}
        self._eigengaps: dict[str, int | None] = {}

    def empty_message(self) -> str:
        """Why no class can be shown (every class was skipped); only meaningful without classes."""
        why = "; ".join(f"class {c}: {w}" for c, w in sorted(self.skipped.items(), key=lambda kv: _num(kv[0])))
        return (f"SpRAy analysed no class of this run ({os.path.join(self.folder, SPRAY_JSON)}): "
                + (f"all skipped: {why}" if why else "its \"classes\" are empty") + ". SpRAy needs enough samples "
                f"per explained class (at least n_neighbors + 1)")

    def eigengap(self, cls: str) -> int | None:
        """The number of clusters the eigengap suggests for ``cls``: as stored by spray (the library's
        relative gap, :func:`interprettensor.analysis.spray.eigengap`), computed the same way from the
        stored eigenvalues for files written without it; ``None`` if neither can be read."""
        v = self.classes[cls].get("eigengap")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
            return int(v)
        if cls not in self._eigengaps:
            from ...analysis.spray import eigengap  # numpy only

            try:
                self._eigengaps[cls] = eigengap(self.array(cls, "eigenvalues"))
            except RunError:
                self._eigengaps[cls] = None
        return self._eigengaps[cls]

    def summary(self) -> dict:
        out = {"params": self.meta.get("params", {}), "skipped": self.skipped,
               "classes": {c: {"n": v.get("n"), "clusterings": list(v.get("clusterings", [])),
                               "embeddings": list(v.get("embeddings", [])), "eigengap": self.eigengap(c)}
                           for c, v in self.classes.items()}}
        if not self.classes:
            out["empty"] = self.empty_message()
        return out

    def _file(self, cls: str) -> str:
        if not self.classes:
            raise RunError(self.empty_message())
        if cls not in self.classes:
            raise RunError(f"the SpRAy results in {self.folder!r} have no class {cls!r} (classes: "
                           f"{', '.join(sorted(self.classes, key=_num))})")
        return os.path.join(self.folder, self.classes[cls].get("file", f"class-{cls}.npz"))

    def array(self, cls: str, key: str) -> np.ndarray:
        return np.asarray(self.members.get(self._file(cls), key))

    def class_data(self, cls: str, embedding: str) -> dict:
        """The class's samples, 2-D coordinates of one embedding, every clustering and the eigenvalues."""
        info = self.classes.get(cls)
        f = self._file(cls)
        keys = _npz_keys(f)
        if embedding not in keys or embedding not in ("tsne", "umap", "spectral"):
            raise RunError(f"the SpRAy results of class {cls} have no embedding {embedding!r} (have "
                           f"{', '.join(k for k in ('spectral', 'tsne', 'umap') if k in keys)})")
        emb = np.asarray(self.members.get(f, embedding), np.float64)
        eig = self.array(cls, "eigenvalues").astype(np.float64) if "eigenvalues" in keys else np.zeros(0)
        columns = [0, 1]
        if embedding == "spectral":
            # the first eigenvector of a connected graph is constant (eigenvalue 0): show the next two
            if emb.shape[1] >= 3 and len(eig) and abs(eig[0]) < 1e-6:
                columns = [1, 2]
            emb = emb[:, columns] if emb.shape[1] >= 2 else np.concatenate([emb, np.zeros_like(emb)], 1)
        clusterings = {}
        for name in info.get("clusterings", []):
            key = f"cluster-{name}"
            if key in keys:
                clusterings[name] = self.array(cls, key).astype(np.int64).tolist()
        return {"class": cls, "embedding": embedding, "columns": columns, "eigengap": self.eigengap(cls),
                "indices": self.array(cls, "indices").astype(np.int64).tolist(),
                "points": np.round(np.nan_to_num(emb[:, :2]), 5).tolist(),
                "clusterings": clusterings, "eigenvalues": [float(v) for v in np.nan_to_num(eig)]}


def _num(s: str) -> Any:
    try:
        return (0, int(s))
    except ValueError:
        return (1, s)


# ---------------------------------------------------------------------------------------------- concepts
class ConceptsRun:
    """A concepts (CRP) run: per layer and channel the reference examples (crops) and their
    conditional heatmaps, for two modes (``relevance``, ``activation``)."""

    kind = "concepts"
    MODES = ("relevance", "activation")

    def __init__(self, path: str, members: _Members):
        self.path, self.members = path, members
        self.meta = meta = _read_meta(os.path.join(path, CONCEPTS), "concepts", "layers", "a concepts run")
        self.layers = meta["layers"]

    def summary(self) -> dict:
        return {k: self.meta.get(k) for k in ("model", "rule", "n_samples", "k", "input_shape", "complete")} | {
            "layers": {name: {"channels": int(v.get("channels", 0))} for name, v in self.layers.items()}}

    def file(self, layer: str) -> str:
        if layer not in self.layers:
            raise RunError(f"the concepts run {self.path!r} has no layer {layer!r} (layers: "
                           f"{', '.join(self.layers)})")
        return os.path.join(self.path, self.layers[layer].get("file", f"layer-{safe_layer_name(layer)}.npz"))

    def array(self, layer: str, key: str) -> np.ndarray:
        return self.members.get(self.file(layer), key)

    def channels(self, layer: str, order: str) -> list[dict]:
        """Every channel with its mean relevance, sorted (``order``: relevance, activation, index)."""
        mean = np.asarray(self.array(layer, "mean_relevance"), np.float64)
        top_act = np.asarray(self.array(layer, "activation_values"), np.float64)
        act = np.nan_to_num(top_act[:, 0]) if top_act.ndim == 2 and top_act.shape[1] else np.zeros(len(mean))
        if order == "relevance":
            ranked = np.argsort(-np.nan_to_num(mean), kind="stable")
        elif order == "activation":
            ranked = np.argsort(-act, kind="stable")
        elif order == "index":
            ranked = np.arange(len(mean))
        else:
            raise RunError(f"unknown channel order {order!r}; use relevance, activation or index")
        return [{"channel": int(c), "mean_relevance": float(np.nan_to_num(mean[c])), "max_activation": float(act[c])}
                for c in ranked]

    def examples(self, layer: str, channel: int, mode: str) -> list[dict]:
        """The channel's reference examples in the order stored (descending value); empty slots dropped."""
        if mode not in self.MODES:
            raise RunError(f"unknown mode {mode!r}; use relevance or activation")
        idx = self.array(layer, f"{mode}_indices")
        if not 0 <= channel < idx.shape[0]:
            raise RunError(f"layer {layer!r} has channels 0..{idx.shape[0] - 1}, not {channel}")
        vals = self.array(layer, f"{mode}_values")[channel]
        boxes = self.array(layer, f"{mode}_boxes")[channel]
        try:  # a run may have drawn the pictures of chosen channels only (``channels=``)
            pictures = bool(self.array(layer, "referenced")[channel])
        except (KeyError, RunError):
            pictures = True
        return [{"rank": r, "sample": int(idx[channel, r]), "value": float(np.nan_to_num(vals[r])),
                 "box": [int(v) for v in boxes[r]], "pictures": pictures}
                for r in range(idx.shape[1]) if int(idx[channel, r]) >= 0]


# ---------------------------------------------------------------------------------------------- discovery
class Found:
    """What the given paths hold: explain runs (with their SpRAy results) and concepts runs, each
    with a name relative to the path it was found under."""

    def __init__(self) -> None:
        self.explain: list[tuple[str, ExplainRun]] = []
        self.spray: dict[str, Spray] = {}  # explain run name -> its SpRAy results
        self.concepts: list[tuple[str, ConceptsRun]] = []
        self.spray_errors: dict[str, str] = {}  # explain run name -> why its SpRAy results cannot be read
        self.warnings: list[str] = []  # runs left out (unreadable), damaged shards, ...


def _kind_of(folder: str, files: Sequence[str]) -> str | None:
    names = set(files)
    if CONCEPTS in names:
        return "concepts"
    if MANIFEST in names and any(_SHARD_RE.match(f) for f in names):
        return "shards"
    if RELEVANCES in names:
        return "npz"
    return None


def discover(paths: Sequence[str], members: _Members | None = None,
             error: Callable[[str], Exception] = RunError) -> Found:
    """Find the runs in ``paths`` (folders searched ``MAX_DEPTH`` levels deep, or ``relevances.npz``
    files). Raises ``error(message)`` for a path that does not exist or holds no run, naming it and
    what was expected."""
    members = members or _Members()
    found = Found()
    used: set[str] = set()

    def unique(name: str) -> str:
        base, i = name, 2
        while name in used:
            name, i = f"{base} ({i})", i + 1
        used.add(name)
        return name

    for given in paths:
        path = os.path.abspath(os.fspath(given))
        label = os.path.basename(path.rstrip(os.sep)) or path
        if not os.path.exists(path):
            raise error(f"{given!r} does not exist; expected a run folder (manifest.json and shard-*.npz of "
                        f"explain_dataset, relevances.npz of 'interprettensor explain', concepts.json of a concepts "
                        f"run) or a folder holding such runs")
        if os.path.isfile(path):
            if os.path.basename(path) != RELEVANCES and not path.endswith(".npz"):
                raise error(f"{given!r} is a file but not a relevances.npz; expected a run folder or a "
                            f"relevances.npz")
            try:
                found.explain.append((unique(label), NpzRun(path, members)))
            except RunError as e:
                raise error(str(e)) from None
            continue
        before, warned = len(found.explain) + len(found.concepts), len(found.warnings)
        for folder, dirs, files in os.walk(path):
            depth = 0 if folder == path else os.path.relpath(folder, path).count(os.sep) + 1
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != SPRAY_DIR and d != "__pycache__")
            if depth >= MAX_DEPTH:
                dirs[:] = []
            kind = _kind_of(folder, files)
            if kind is None:
                continue
            rel = os.path.relpath(folder, path).replace(os.sep, "/")
            # named relative to the given folder; prefixed by it where two given folders hold the same names
            name = unique(label if rel == "." else (f"{label}/{rel}" if rel in used else rel))
            try:
                if kind == "concepts":
                    found.concepts.append((name, ConceptsRun(folder, members)))
                    dirs[:] = []
                    continue
                run: ExplainRun = ShardRun(folder, members) if kind == "shards" else \
                    NpzRun(os.path.join(folder, RELEVANCES), members)
            except RunError as e:
                if kind == "concepts":
                    raise error(str(e)) from None
                found.warnings.append(f"left out {name}: {e}")
                continue
            found.explain.append((name, run))
            found.warnings.extend(run.damaged.values())
            if os.path.exists(os.path.join(folder, SPRAY_DIR, SPRAY_JSON)):
                try:  # broken SpRAy results: said in the SpRAy tab, the samples are shown
                    found.spray[name] = Spray(os.path.join(folder, SPRAY_DIR), members)
                except RunError as e:
                    found.spray_errors[name] = str(e)
                    found.warnings.append(str(e))
        if len(found.explain) + len(found.concepts) == before:
            if len(found.warnings) > warned:
                raise error(f"{given!r} holds no run the viewer can show: {'; '.join(found.warnings[warned:])}")
            raise error(f"{given!r} holds no run the viewer can show: expected manifest.json and shard-*.npz "
                        f"(explain_dataset), relevances.npz ('interprettensor explain') or concepts.json (a concepts "
                        f"run), in it or up to {MAX_DEPTH} folders below")
    return found
