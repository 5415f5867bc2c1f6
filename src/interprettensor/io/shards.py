"""Explain a whole data set, shard by shard, resumably: :func:`explain_dataset` and :func:`load_relevances`.

The input (a ``tf.data.Dataset``, a numpy array, or a folder of images / ``.npy`` arrays) is streamed
through one compiled :class:`~interprettensor.Explainer` with ``tf.data`` prefetching. Results go to
``OUT/shard-00000.npz``, ``OUT/shard-00001.npz``, ... (``shard_size`` samples each, the last one may be
shorter), each written atomically (temporary file in ``OUT``, fsync, rename), and ``OUT/manifest.json``
lists the finished shards and a fingerprint of the model, rule and input. A run that is killed and
started again with the same arguments skips every finished shard and continues after the last one;
a run with another model, rule or input refuses to touch the folder.

Each shard holds ``relevance`` (float32, shaped like the inputs), ``indices`` (the samples' positions
in the input), ``targets`` (the explained classes), ``outputs`` (the explained output, e.g. logits,
one row per sample), ``valid`` (False for samples skipped for NaN or inf) and, for files, ``names``:
the same arrays as the ``relevances.npz`` of ``interprettensor explain``. :func:`load_relevances`
reads either back.

Under a ``tf.distribute`` strategy (``MirroredStrategy`` on one machine's GPUs,
``MultiWorkerMirroredStrategy`` across machines) each batch is split over the replicas and the results
are gathered back in sample order; only the chief worker writes files.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
import sys
import tempfile
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from ..engine.errors import ExplainError
from ..engine.explainer import Explainer
from .inputs import InputError, collect_inputs, load_image, model_input_shape

__all__ = ["explain_dataset", "load_relevances", "StreamError", "StreamResult", "KEYS"]

MANIFEST = "manifest.json"
FORMAT = 1
RERUN = "run again with the same arguments to continue"
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.npz$")


class StreamError(ExplainError):
    """A run of :func:`explain_dataset` that cannot go on (the finished shards stay valid)."""


@dataclasses.dataclass
class StreamResult:
    """What :func:`explain_dataset` did: ``skipped`` shards were already finished, ``computed`` were
    written by this call; ``nonfinite`` samples (over all shards) held NaN or infinite values and were
    skipped (``nonfinite='skip'``: relevance 0, ``valid`` False)."""

    out: str
    n_samples: int
    shards: int
    skipped: int
    computed: int
    explainer: Explainer
    nonfinite: int = 0


def shard_path(out: str, k: int) -> str:
    return os.path.join(out, f"shard-{k:05d}.npz")


# ---------------------------------------------------------------------------------------------- files
def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str, write: Callable[[Any], None]) -> None:
    """Write ``path`` via a temporary file in the same folder, fsync and rename: a reader sees the old
    file or the complete new one, never a partial one."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def _write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write one shard atomically (monkeypatched by the tests to simulate a full disk)."""
    _atomic_write(path, lambda f: np.savez(f, **arrays))


def _write_json(path: str, obj: Any) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def _read_manifest(out: str) -> dict | None:
    path = os.path.join(out, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            m = json.load(f)
        if not isinstance(m, dict) or m.get("format") != FORMAT or not isinstance(m.get("shards"), list):
            raise ValueError("not an interprettensor shard manifest")
        return m
    except (OSError, ValueError) as e:
        raise StreamError(f"cannot read {path!r} ({e}); it is not a manifest written by explain_dataset. "
                          f"Choose another output folder or delete it") from None


def _verify_shard(out: str, entry: dict, start: int) -> bool:
    """A shard counts as finished when its file loads and holds the samples the manifest says."""
    import zipfile

    path = os.path.join(out, entry["file"])
    try:
        n = int(entry["count"])
        with np.load(path, allow_pickle=False) as z:
            idx = z["indices"]
            if not (int(entry["start"]) == start and idx.shape == (n,)
                    and np.array_equal(idx, np.arange(start, start + n))):
                return False
        with zipfile.ZipFile(path) as zf, zf.open("relevance.npy") as f:  # the header only: shards are big
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = read(f)[0]
        return len(shape) >= 1 and shape[0] == n
    except Exception:  # noqa: BLE001 - a truncated or foreign file is simply not finished
        return False


#: the arrays of a shard and of ``relevances.npz`` (``names`` only where the inputs were files)
KEYS = ("relevance", "indices", "targets", "outputs", "valid", "names")
RELEVANCES_NPZ = "relevances.npz"


def load_relevances(path: str, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Read explanations written by :func:`explain_dataset` or ``interprettensor explain`` back.

    Args:
        path: a sharded run's folder (``manifest.json`` and ``shard-00000.npz``, ...), a
            ``relevances.npz`` file, or a folder holding one.
        keys: read only these arrays (e.g. ``['targets']``: no relevance is loaded).

    Returns:
        ``{'relevance', 'indices', 'targets', 'outputs', 'valid'[, 'names']}``, one row per sample in input
        order: ``relevance`` float32 shaped like the inputs, ``indices`` int64 positions in the input,
        ``targets`` int32 explained classes (-1 for a skipped sample whose class was to be predicted),
        ``outputs`` float32 ``(N, units)`` explained outputs (e.g. logits; 0 for skipped samples),
        ``valid`` bool (False: skipped for NaN/inf, relevance 0), ``names`` str (inputs given as files).
        A sharded run gives its finished shards, concatenated in order. Shards written before
        ``valid`` existed read as all valid.

    Raises:
        StreamError: no results at ``path``, an unreadable file, or a ``relevances.npz`` of the format
            before version 2.0 (``target``/``output`` keys; read it with ``numpy.load``).
    """
    path = os.fspath(path)
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, MANIFEST)) \
            and os.path.exists(os.path.join(path, RELEVANCES_NPZ)):
        path = os.path.join(path, RELEVANCES_NPZ)
    if os.path.isfile(path):
        return _load_npz(path, keys)
    m = _read_manifest(path)
    if m is None:
        raise StreamError(f"{path!r} holds no explanations: neither a sharded run ({MANIFEST}) nor "
                          f"{RELEVANCES_NPZ}")
    parts: dict[str, list] = {}
    for entry in m["shards"]:
        for k, v in _load_npz(os.path.join(path, entry["file"]), keys).items():
            parts.setdefault(k, []).append(v)
    if not parts:
        return {k: np.zeros((0,)) for k in (keys or KEYS[:-1])}
    return {k: np.concatenate(v) for k, v in parts.items()}


def _load_npz(path: str, keys: Sequence[str] | None) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            if "relevance" not in files or ("indices" not in files and {"target", "output"} & files):
                raise StreamError(f"{path!r} is not in the format of interprettensor 2.0 (keys {sorted(files)}; "
                                  f"expected {', '.join(KEYS[:-1])}[, names]): an older relevances.npz, read "
                                  f"it with numpy.load")
            want = list(keys) if keys is not None else [k for k in KEYS if k in files or k == "valid"]
            missing = [k for k in want if k not in files and k != "valid"]
            if missing:
                raise StreamError(f"{path!r} has no {', '.join(missing)} (it holds {', '.join(sorted(files))})")
            out = {k: z[k] for k in want if k in files}
            if "valid" in want and "valid" not in files:  # written before NaN/inf were checked
                n = len(z["indices"]) if "indices" in files else len(z["relevance"])
                out["valid"] = np.ones((n,), bool)
            return out
    except StreamError:
        raise
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise StreamError(f"cannot read {path!r}: {e}") from None


# ---------------------------------------------------------------------------------------------- sources
class _Source:
    """The input as an unbatched ``tf.data.Dataset`` of ``(index, x, target)`` from a given sample on."""

    n: int | None = None
    names: list[str] | None = None
    description: str = ""
    sample_shape: tuple = ()
    error: list  # an exception raised while reading (set by generator-based sources)

    def dataset(self, start: int, dtype: tf.DType) -> tf.data.Dataset:
        raise NotImplementedError


@dataclasses.dataclass
class _Target:
    """``target=`` of :func:`explain_dataset`, checked: ``kind`` is ``'auto'`` (None: the label if the
    data has labels, else the predicted class), ``'predicted'``, ``'label'``, ``'const'`` (one class
    for all: ``value``) or ``'array'`` (one class per sample: ``array``)."""

    kind: str
    value: int = -1
    array: np.ndarray | None = None

    def uses_label(self, has_label: bool) -> bool:
        return has_label and self.kind in ("auto", "label")

    def describe(self) -> str:
        """For the run's fingerprint (an array by its content)."""
        if self.kind == "array":
            assert self.array is not None
            return f"array({len(self.array)}):{hashlib.sha256(self.array.tobytes()).hexdigest()[:16]}"
        return {"auto": "None", "predicted": "'predicted'", "label": "'label'"}.get(self.kind, str(self.value))


def _parse_target(target: Any) -> _Target:
    """Check ``target=``: None, 'predicted', 'label', a class index >= 0, or one class index per sample."""
    if target is None:
        return _Target("auto")
    if isinstance(target, str):
        if target in ("predicted", "label"):
            return _Target(target)
        raise StreamError(f"target must be None, 'predicted', 'label', a class index or one class index per "
                          f"sample, got the string {target!r}")
    if isinstance(target, (bool, np.bool_)):
        raise StreamError(f"target must be a class index (an integer), got {target!r}")
    if isinstance(target, (int, np.integer)):
        if target < 0:
            raise StreamError(f"target must be a class index >= 0, got {target}")
        return _Target("const", int(target))
    if tf.is_tensor(target):
        target = target.numpy()
    if isinstance(target, (list, tuple, np.ndarray)):
        arr = np.asarray(target)
        if arr.ndim == 0:
            return _parse_target(arr.item())
        if arr.ndim != 1:
            raise StreamError(f"target as an array must hold one class index per sample, shape (N,); got shape "
                              f"{arr.shape}")
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
            raise StreamError(f"target as an array must hold integer class indices, got dtype {arr.dtype}")
        if arr.size and arr.min() < 0:
            bad = np.flatnonzero(arr < 0)
            raise StreamError(f"target must hold class indices >= 0; sample(s) {_list(bad)} have "
                              f"{_list(arr[bad])}")
        if arr.size and arr.max() > np.iinfo(np.int32).max:
            raise StreamError(f"target holds a class index too large for int32: {int(arr.max())}")
        return _Target("array", array=arr.astype(np.int32))
    raise StreamError(f"target must be None, 'predicted', 'label', a class index or one class index per sample "
                      f"(a list or integer array), got {type(target).__name__}")


_TOO_FEW = "target has "


def _list(values: Any, limit: int = 10) -> str:
    v = [str(x) for x in np.asarray(values).reshape(-1)[:limit + 1]]
    return ", ".join(v[:limit]) + (", ..." if len(v) > limit else "")


def _check_target_length(tgt: _Target, n: int | None) -> None:
    if tgt.kind != "array":
        return
    assert tgt.array is not None
    if n is None:
        raise StreamError("target as an array needs a data set of known length (tf.data cardinality); pass "
                          "(x, label) pairs instead")
    if len(tgt.array) != n:
        raise StreamError(f"target has {len(tgt.array)} class indices, but the data has {n} samples; give one per "
                          f"sample")


def _fixed_targets(tgt: _Target, n: int) -> np.ndarray:
    """``(n,)`` int32 targets of a source without labels (-1: the predicted class)."""
    if tgt.kind == "label":
        raise StreamError("target='label' needs labels: pass (x, labels), or a tf.data.Dataset of (x, label)")
    _check_target_length(tgt, n)
    if tgt.kind == "array":
        assert tgt.array is not None
        return tgt.array
    return np.full((n,), tgt.value if tgt.kind == "const" else -1, np.int32)


class _ArraySource(_Source):
    def __init__(self, x: np.ndarray, t: np.ndarray | None, target: _Target, shape: "_ShapeCheck"):
        self.x = x
        self.n = len(x)
        if target.uses_label(t is not None):
            self.t = _label_array(np.asarray(t), self.n)
        else:
            self.t = _fixed_targets(target, self.n)
        self.sample_shape = shape(tuple(x.shape[1:]))
        h = hashlib.sha256(np.ascontiguousarray(x).view(np.uint8).reshape(-1)).hexdigest()[:16] if x.size else ""
        self.description = f"array{tuple(x.shape)}:{x.dtype}:{h}"
        self.error = []

    def dataset(self, start: int, dtype: tf.DType) -> tf.data.Dataset:
        x, t, n = self.x, self.t, self.n

        def gen():
            for i in range(start, n):
                yield np.int64(i), np.asarray(x[i]), t[i]

        spec = (tf.TensorSpec((), tf.int64), tf.TensorSpec(self.sample_shape, tf.as_dtype(x.dtype)),
                tf.TensorSpec((), tf.int32))
        return tf.data.Dataset.from_generator(gen, output_signature=spec).map(
            lambda i, xi, ti: (i, tf.cast(xi, dtype), ti))


def _label_array(t: np.ndarray, n: int) -> np.ndarray:
    if t.shape[:1] != (n,):
        raise StreamError(f"labels must have one entry per sample ({n}), got shape {t.shape}")
    if t.ndim == 2:
        t = t.argmax(-1)
    elif t.ndim != 1:
        raise StreamError(f"labels must be class indices (N,) or one-hot (N, K), got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        if not np.all(np.equal(np.mod(t, 1), 0)):
            raise StreamError(f"labels must be integer class indices, got {t.dtype}")
    if (t < 0).any():
        raise StreamError(f"labels must be class indices >= 0, got {int(t.min())}")
    return t.astype(np.int32)


class _FileSource(_Source):
    """Image files and .npy arrays (files or folders), loaded with the CLI's loaders."""

    def __init__(self, paths: Sequence[str], target: _Target, shape: "_ShapeCheck", input_range: Sequence[float],
                 color_mode: str, resize: bool):
        expected = shape.expected
        try:
            self.items = collect_inputs(list(paths), expected)
        except InputError as e:
            raise StreamError(str(e)) from None
        self.n = len(self.items)
        self.t = _fixed_targets(target, self.n)
        self.names = [it.name for it in self.items]
        self.options = (tuple(float(v) for v in input_range), color_mode, bool(resize))
        self.expected = expected
        self.error = []
        first = self._load(0)
        self.sample_shape = shape(tuple(first.shape))
        listing = "\n".join(it.name for it in self.items)  # names: a corrupt file may be fixed in place
        self.description = (f"files:{self.n}:{hashlib.sha256(listing.encode()).hexdigest()[:16]}:"
                            f"{self.options}")

    def _load(self, i: int) -> np.ndarray:
        item = self.items[i]
        try:
            if item.array is not None:
                return np.asarray(item.array[item.index], dtype="float32")
            return load_image(item.path, self.expected, self.options[1], self.options[0], self.options[2])
        except InputError as e:
            raise StreamError(str(e)) from None

    def dataset(self, start: int, dtype: tf.DType) -> tf.data.Dataset:
        def gen():
            for i in range(start, self.n):
                try:
                    x = self._load(i)
                    if tuple(x.shape) != self.sample_shape:
                        raise StreamError(f"input {self.items[i].path!r} has shape {tuple(x.shape)}, the "
                                          f"first input {self.sample_shape}")
                except Exception as e:  # noqa: BLE001 - reported by explain_dataset after the last good shard
                    self.error.append(e)
                    return
                yield np.int64(i), x, self.t[i]

        spec = (tf.TensorSpec((), tf.int64), tf.TensorSpec(self.sample_shape, tf.float32),
                tf.TensorSpec((), tf.int32))
        return tf.data.Dataset.from_generator(gen, output_signature=spec).map(
            lambda i, xi, ti: (i, tf.cast(xi, dtype), ti))


class _TFDataSource(_Source):
    def __init__(self, ds: tf.data.Dataset, target: _Target, shape: "_ShapeCheck"):
        spec = ds.element_spec
        if isinstance(spec, tf.TensorSpec):
            xs, ts = spec, None
        elif isinstance(spec, tuple) and len(spec) in (1, 2) and all(isinstance(s, tf.TensorSpec) for s in spec):
            xs, ts = spec[0], (spec[1] if len(spec) == 2 else None)
        else:
            raise StreamError(f"the dataset must yield x or (x, label) tensors, got elements {spec}")
        if xs.shape.rank is None:
            raise StreamError(f"the dataset yields x of unknown rank ({xs}); give it a shape")
        batched = shape.batched(tuple(xs.shape))
        self.sample_shape = shape(tuple(xs.shape[1:] if batched else xs.shape))
        if batched:
            ds = ds.unbatch()
        if ts is None and target.kind == "label":
            raise StreamError("target='label' needs a dataset of (x, label) pairs")
        use_label = target.uses_label(ts is not None)
        if use_label:
            trank = ts.shape.rank - (1 if batched else 0)
            if trank not in (0, 1):
                raise StreamError(f"labels must be class indices or one-hot vectors, got shape {tuple(ts.shape)}")
        card = int(ds.cardinality())
        self.n = card if card >= 0 else None
        self.per_sample = None
        if not use_label:
            if target.kind == "array":
                if self.n is not None:  # else checked while reading, and at the end
                    _check_target_length(target, self.n)
                self.per_sample = target.array
            const = target.value if target.kind == "const" else -1
        else:
            const = -1
        self.ds, self.has_label, self.use_label, self.const = ds, ts is not None, use_label, const
        self.description = f"tf.data:{spec}"
        self.error = []

    def dataset(self, start: int, dtype: tf.DType) -> tf.data.Dataset:
        use_label, has_label, const = self.use_label, self.has_label, self.const
        per_sample = None if self.per_sample is None else tf.constant(self.per_sample, tf.int32)

        def fix(i, elem):
            x = elem[0] if isinstance(elem, tuple) else elem
            if use_label:
                t = elem[1]
                t = tf.cast(t if t.shape.rank == 0 else tf.argmax(t, axis=-1), tf.int32)
            elif per_sample is not None:
                m = int(per_sample.shape[0])
                with tf.control_dependencies([tf.debugging.assert_less(
                        i, tf.constant(m, tf.int64), message=f"{_TOO_FEW}{m} class indices, but the data has more "
                                                             f"samples; give one per sample")]):
                    t = tf.gather(per_sample, tf.minimum(i, m - 1))
            else:
                t = tf.constant(const, tf.int32)
            return i, tf.cast(x, dtype), t

        ds = self.ds
        if has_label and not use_label:
            ds = ds.map(lambda *e: e[0])
        return ds.enumerate().skip(start).map(fix)


def _shape_str(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("any" if s is None else str(int(s)) for s in shape) + ")"


class _ShapeCheck:
    """The model's input shape as far as it is known (``expected``, ``(None, ...)``, or None), and the
    check of the data's sample shape against it. A model without functional inputs (a subclassed
    model such as ``it.Sequential``) also takes a sample shape it runs on (tried on one zero sample;
    ``it.Linear`` flattens N-D inputs), and one of unknown shape takes the data's."""

    def __init__(self, model: Any, expected: tuple | None):
        self.model = model
        self.expected = expected
        try:
            self.functional = bool(getattr(model, "inputs", None))
        except (AttributeError, ValueError):
            self.functional = False

    def batched(self, element_shape: tuple) -> bool:
        """Whether tf.data elements of this shape are batches (else samples)."""
        rank = len(element_shape)
        if self.expected is not None:
            if rank == len(self.expected) and (self.functional or self._fits(element_shape[1:])):
                return True
            if rank == len(self.expected) - 1 and (self.functional or self._fits(element_shape)):
                return False
            if self.functional:
                raise StreamError(f"the dataset yields x of shape {_shape_str(element_shape)}, but the model "
                                  f"expects samples of shape {_shape_str(self.expected[1:])} (or batches of them)")
        if rank >= 1 and element_shape[0] is None:
            return True  # .batch() leaves the batch size unknown
        if rank >= 2 and self.expected is not None and self._accepts(element_shape[1:]):
            return True
        return False

    def _fits(self, shape: tuple) -> bool:
        want = tuple(self.expected[1:]) if self.expected is not None else ()
        return len(shape) == len(want) and all(w is None or s is None or int(w) == int(s) for w, s in zip(want, shape))

    def _accepts(self, shape: tuple) -> bool:
        if any(s is None for s in shape):
            return False
        try:  # one forward pass on a zero sample (a symbolic call does not check every shape)
            self.model(np.zeros((1,) + tuple(int(s) for s in shape), np.float32))
            return True
        except Exception:  # noqa: BLE001 - any refusal means no
            return False

    def __call__(self, shape: tuple) -> tuple:
        """Check the data's sample shape; returns it as ints."""
        ok = (self.expected is None or self._fits(shape)
              or (not self.functional and self._accepts(shape)))
        if not ok:
            raise StreamError(f"inputs have shape {_shape_str(shape)} per sample, but the model expects "
                              f"{_shape_str(self.expected[1:])}")
        if any(s is None for s in shape):
            raise StreamError(f"inputs need a fixed shape per sample, got {_shape_str(shape)}")
        return tuple(int(s) for s in shape)


def _make_source(model: Any, data: Any, target: Any, expected: tuple | None, **file_options: Any) -> _Source:
    tgt = _parse_target(target)
    shape = _ShapeCheck(model, expected)
    if isinstance(data, tf.data.Dataset):
        return _TFDataSource(data, tgt, shape)
    if isinstance(data, (str, os.PathLike)) or (isinstance(data, (list, tuple)) and data
                                                and all(isinstance(p, (str, os.PathLike)) for p in data)):
        paths = [os.fspath(data)] if isinstance(data, (str, os.PathLike)) else [os.fspath(p) for p in data]
        return _FileSource(paths, tgt, shape, **file_options)
    labels = None
    if isinstance(data, tuple) and len(data) == 2:
        data, labels = data
    arr = np.asarray(data)
    if arr.dtype == object or arr.ndim < 1:
        raise StreamError(f"explain_dataset takes a tf.data.Dataset, a numpy array (or (x, labels)), a folder "
                          f"or a list of files; got {type(data).__name__}")
    if arr.ndim < 2:
        raise StreamError(f"the array must be a batch of samples (N, ...), got shape {arr.shape}")
    return _ArraySource(arr, labels, tgt, shape)


# ---------------------------------------------------------------------------------------------- fingerprint
def _model_fingerprint(model: Any) -> str:
    h = hashlib.sha256()
    try:
        cfg = json.dumps(model.get_config(), sort_keys=True, default=str)
    except Exception:  # noqa: BLE001 - subclassed models without a config
        cfg = type(model).__qualname__
    h.update(cfg.encode())
    for w in model.weights:
        v = np.asarray(keras.ops.convert_to_numpy(w))
        h.update(f"{v.shape}:{v.dtype}".encode())  # not w.path: it changes when a saved model is loaded
        h.update(np.ascontiguousarray(v).view(np.uint8).reshape(-1).tobytes())
    return h.hexdigest()[:16]


def _run_identity(model: Any, explainer: Explainer, rule: Any, params: dict, source: _Source, shard_size: int,
                  target: Any) -> dict:
    rules = json.dumps({k: repr(v) for k, v in explainer.rule_map().items()}, sort_keys=True)
    return {
        "model": f"{getattr(model, 'name', type(model).__name__)} (fingerprint {_model_fingerprint(model)})",
        "rule": f"{rule!r} {json.dumps(params, sort_keys=True, default=repr)} "
                f"(rules {hashlib.sha256(rules.encode()).hexdigest()[:12]})",
        "input": source.description,
        "sample_shape": list(source.sample_shape),
        "shard_size": int(shard_size),
        "target": _parse_target(target).describe(),
        "explained": f"layer={explainer.layer!r} output={explainer.start_key!r}"[:200],
        "dtype": f"{explainer.dtype.name}/{explainer.backward_dtype.name}",
    }


_LABELS = {"model": "model", "rule": "rule", "input": "input", "sample_shape": "sample shape",
           "shard_size": "shard size", "target": "target", "explained": "explained output", "dtype": "dtype"}


def _check_identity(out: str, old: dict, new: dict) -> None:
    diffs = [f"{_LABELS.get(k, k)}: the folder has {old.get(k)!r}, this run {new[k]!r}"
             for k in new if old.get(k) != new[k]]
    if diffs:
        raise StreamError(f"the output folder {out!r} holds shards of another run ({'; '.join(diffs)}). Resume it "
                          f"with the same arguments, or choose another output folder (or start over: resume=False)")


# ---------------------------------------------------------------------------------------------- main entry
def explain_dataset(model: keras.Model, dataset: Any, rule: Any = "epsilon", out: str = "explanations", *,
                    shard_size: int = 1024, batch_size: int = 64, strategy: tf.distribute.Strategy | None = None,
                    target: int | str | None = None, progress: bool = True, resume: bool = True,
                    input_range: Sequence[float] = (0.0, 1.0), color_mode: str = "auto", resize: bool = False,
                    on_shard: Callable[[int, dict], None] | None = None, nonfinite: str = "error",
                    **params: Any) -> StreamResult:
    """Explain every sample of ``dataset`` with LRP and write the results to ``out`` shard by shard.

    Args:
        model: a single-input Keras model (see :class:`~interprettensor.Explainer`).
        dataset: a ``tf.data.Dataset`` yielding ``x`` or ``(x, label)`` (samples or batches; a label is a
            class index or a one-hot vector), a numpy array ``x`` or a pair ``(x, labels)``, or a folder /
            a list of image files and ``.npy`` arrays (read like ``interprettensor explain`` does: pixels
            0..255 mapped to ``input_range``, ``color_mode`` and ``resize`` as there).
        rule: rule, preset or :class:`~interprettensor.Composite`; ``**params`` are its parameters and the
            other :class:`~interprettensor.Explainer` options (``jit_compile=``, ``dtype=``, ``layer=``, ...).
        out: output folder: ``shard-00000.npz``, ... and ``manifest.json``.
        shard_size: samples per shard file.
        batch_size: samples per LRP pass (over all replicas under a strategy); bounds the peak memory
            together with ``shard_size``.
        strategy: a ``tf.distribute.Strategy``: batches are split over its replicas; the result equals
            that of one device.
        target: ``None``: the label if the data has labels, else the predicted class; ``'predicted'``;
            ``'label'``; a class index for all samples; or one class index per sample (a list or an
            integer array of length N, values >= 0; a ``tf.data`` input then needs a known length).
        progress: show a progress bar (tqdm, on stderr).
        resume: continue a run found in ``out`` (same model, rule, input and shard size, else an error);
            ``False``: delete its shards and start over.
        on_shard: called as ``on_shard(k, arrays)`` before shard ``k`` is committed; ``arrays`` holds the
            shard's arrays and the inputs under ``'x'`` (the CLI writes heatmap PNGs with it).
        nonfinite: what to do with samples that hold NaN or infinite values (checked on every batch,
            in the compute dtype): ``'error'`` (default) stops with a :class:`StreamError` naming them
            (indices, and file names for files), keeping the finished shards; ``'skip'`` explains the
            others and gives the skipped ones relevance 0, output 0, target -1 where it was to be
            predicted, and ``valid`` False (counted in :attr:`StreamResult.nonfinite`).

    Each shard ``shard-00000.npz``, ... holds ``relevance`` (float32, shaped like the inputs), ``indices``
    (int64, the samples' positions in the input), ``targets`` (int32, the explained classes),
    ``outputs`` (float32 ``(n, units)``, the explained output, e.g. the logits), ``valid`` (bool, False
    for skipped samples) and, for files, ``names``; :func:`load_relevances` concatenates them.

    Returns:
        a :class:`StreamResult` (samples, shards, how many were skipped as finished and how many
        computed, samples skipped for NaN/inf).

    Raises:
        StreamError: for a folder of another run, a full disk, an unreadable input file, bad data
            (NaN or inf with ``nonfinite='error'``), a bad ``target``; the shards finished before stay
            intact and a rerun continues after them.

    Example::

        it.explain_dataset(model, ds.batch(256), rule="epsilon_gamma_box", out="runs/val",
                           low=-1.0, high=1.0)
        R = it.load_relevances("runs/val")["relevance"]
    """
    if shard_size < 1 or batch_size < 1:
        raise StreamError(f"shard_size and batch_size must be >= 1, got {shard_size} and {batch_size}")
    if nonfinite not in ("error", "skip"):
        raise StreamError(f"nonfinite must be 'error' or 'skip', got {nonfinite!r}")
    if strategy is not None:
        with strategy.scope():
            explainer = Explainer(model, rule, **params)
    else:
        explainer = Explainer(model, rule, **params)
    if len(explainer.graph.inputs) != 1:
        raise StreamError(f"explain_dataset supports single-input models; this one has "
                          f"{len(explainer.graph.inputs)} inputs")
    try:
        expected = model_input_shape(model)  # functional inputs, build config, first layer; else the data's
    except InputError as e:
        raise StreamError(str(e)) from None
    source = _make_source(model, dataset, target, expected, input_range=input_range, color_mode=color_mode,
                          resize=resize)
    if not getattr(model, "built", True):  # an unbuilt subclassed model (it.Sequential): built on the data
        try:
            model.build((None,) + tuple(source.sample_shape))
        except Exception as e:  # noqa: BLE001 - Keras raises many kinds
            raise StreamError(f"cannot build the model for inputs of shape {_shape_str(source.sample_shape)} per "
                              f"sample: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                              ) from None
    identity = _run_identity(model, explainer, rule, params, source, shard_size, target)
    chief = _is_chief(strategy)

    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise StreamError(f"cannot create the output folder {out!r}: {e.strerror or e}") from None
    manifest = _read_manifest(out)
    if manifest is not None and not resume and chief:
        for f in os.listdir(out):
            if _SHARD_RE.match(f):
                os.unlink(os.path.join(out, f))
        os.unlink(os.path.join(out, MANIFEST))
        manifest = None
    if manifest is not None:
        _check_identity(out, manifest.get("identity", {}), identity)
    shards: list[dict] = []
    if manifest is not None:
        for entry in manifest["shards"]:
            start = sum(e["count"] for e in shards)
            if not _verify_shard(out, entry, start):
                break
            shards.append(entry)
        complete = manifest.get("complete") and len(shards) == len(manifest["shards"])
    else:
        complete = False
    # a shard written just before a kill, before the manifest listed it
    while not complete:
        start = sum(e["count"] for e in shards)
        entry = {"file": os.path.basename(shard_path(out, len(shards))), "start": start, "count": shard_size}
        if not os.path.exists(shard_path(out, len(shards))) or not _verify_shard(out, entry, start):
            break
        valid = _load_npz(shard_path(out, len(shards)), ["valid"])["valid"]
        entry["nonfinite"] = int((~valid).sum())
        shards.append(entry)
    skipped = len(shards)
    done = sum(e["count"] for e in shards)
    state = {"format": FORMAT, "identity": identity, "shards": shards, "complete": bool(complete),
             "n_samples": done if complete else None}
    if chief:
        _commit_manifest(out, state, len(shards))
    if complete:
        return StreamResult(out, done, len(shards), skipped, 0, explainer, _count_nonfinite(shards))

    ds = source.dataset(done, explainer.dtype)
    head = -done % batch_size  # batches start at multiples of batch_size, as in an uninterrupted run
    if head:
        ds = ds.take(head).batch(head).concatenate(ds.skip(head).batch(batch_size))
    else:
        ds = ds.batch(batch_size)
    if strategy is not None:
        # every step gets a full global batch (padding has index -1 and is dropped): no replica gets
        # an empty batch, and the shapes stay fixed
        if batch_size < strategy.num_replicas_in_sync:
            raise StreamError(f"batch_size ({batch_size}) must be at least the number of replicas "
                              f"({strategy.num_replicas_in_sync})")
        ds = ds.map(lambda i, x, t: _pad(i, x, t, batch_size))
    ds = ds.prefetch(tf.data.AUTOTUNE)
    step = _make_step(explainer, source.sample_shape, strategy)
    if strategy is not None:
        opts = tf.data.Options()
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        ds = strategy.experimental_distribute_dataset(ds.with_options(opts))

    from tqdm.auto import tqdm

    bar = tqdm(total=source.n, initial=done, desc="explaining", unit="sample", disable=not progress,
               file=sys.stderr, leave=False)
    pending: dict[str, list] = {k: [] for k in ("indices", "relevance", "targets", "outputs", "valid", "x")}
    computed = 0

    def finished() -> str:
        which = "shard 0 is" if len(shards) == 1 else f"shards 0..{len(shards) - 1} are"
        return (f"{which} complete ({done_samples()} samples) in {out!r}; {RERUN}" if shards
                else "no shard was complete yet")

    def done_samples() -> int:
        return sum(e["count"] for e in shards)

    def emit(final: bool) -> None:
        nonlocal computed
        if not pending["indices"]:
            return
        cat = {k: np.concatenate(v) for k, v in pending.items()}
        order = np.argsort(cat["indices"], kind="stable")
        cat = {k: v[order] for k, v in cat.items()}
        pos = 0
        while True:
            nxt = done_samples()
            left = len(cat["indices"]) - pos
            if left == 0 or (left < shard_size and not final):
                break
            n = min(shard_size, left)
            part = {k: v[pos:pos + n] for k, v in cat.items()}
            if not np.array_equal(part["indices"], np.arange(nxt, nxt + n)):
                if final:
                    raise StreamError(f"internal error: samples {part['indices'][:5]}... arrived out of order "
                                      f"(expected {nxt}...)")
                break
            _write_shard(part)
            computed += 1
            pos += n
        for k in pending:
            pending[k] = [cat[k][pos:]]

    def _write_shard(part: dict) -> None:
        k = len(shards)
        arrays = {"relevance": part["relevance"], "indices": part["indices"].astype(np.int64),
                  "targets": part["targets"].astype(np.int32), "outputs": part["outputs"],
                  "valid": part["valid"].astype(bool)}
        if source.names is not None:
            arrays["names"] = np.array([source.names[i] for i in part["indices"]])
        if on_shard is not None and chief:
            on_shard(k, dict(arrays, x=part["x"]))
        path = shard_path(out, k)
        if chief:
            try:
                _write_npz(path, arrays)
            except OSError as e:
                raise _write_error(e, k, path, finished()) from None
        entry = {"file": os.path.basename(path), "start": int(arrays["indices"][0]),
                 "count": int(len(arrays["indices"])), "nonfinite": int((~arrays["valid"]).sum())}
        shards.append(entry)
        if chief:
            try:
                _commit_manifest(out, state, k + 1)
            except OSError as e:
                shards.pop()
                raise _write_error(e, k, os.path.join(out, MANIFEST), finished()) from None

    try:
        try:
            for batch in ds:
                idx, rel, tgt, outp, x, ok = step(batch)
                if nonfinite == "error" and not ok.all():
                    bad = np.sort(idx[~ok])
                    files = (f" (files: {_list([source.names[i] for i in bad])})" if source.names is not None
                             else "")
                    raise StreamError(f"sample(s) {_list(bad)}{files} hold NaN or infinite values; fix them, or "
                                      f"pass nonfinite='skip' to explain the others (relevance 0, valid False)")
                pending["valid"].append(ok)
                pending["indices"].append(idx)
                pending["relevance"].append(rel)
                pending["targets"].append(tgt)
                pending["outputs"].append(outp)
                pending["x"].append(x)
                bar.update(len(idx))
                emit(final=False)
        except tf.errors.OpError as e:
            if source.error:
                raise source.error[0]
            msg = e.message or str(e)
            if "target out of range" in msg:
                detail = msg[msg.index("target out of range"):].split("]")[0].split("\n")[0]
                raise StreamError(f"{detail}; {finished()}") from None
            if _TOO_FEW in msg:
                detail = msg[msg.index(_TOO_FEW):].split("\n")[0]
                raise StreamError(f"{detail[:detail.index('per sample') + 10]}; {finished()}") from None
            raise StreamError(f"reading or explaining the input failed after sample {done_samples() - 1}: "
                              f"{msg.strip().splitlines()[0] if msg.strip() else type(e).__name__}; "
                              f"{finished()}") from None
        if source.error:
            raise source.error[0]
        emit(final=True)
        expected_n = getattr(source, "per_sample", None)
        if expected_n is not None and done_samples() != len(expected_n):
            raise StreamError(f"target has {len(expected_n)} class indices, but the data has {done_samples()} "
                              f"samples; give one per sample")
    except StreamError as e:
        if RERUN in str(e) or "no shard was complete" in str(e):
            raise
        raise StreamError(f"{e}; {finished()}") from None
    finally:
        bar.close()
    total = done_samples()
    state["complete"], state["n_samples"] = True, total
    if chief:
        try:
            _commit_manifest(out, state, len(shards))
        except OSError as e:
            raise _write_error(e, len(shards), os.path.join(out, MANIFEST), finished()) from None
    return StreamResult(out, total, len(shards), skipped, computed, explainer, _count_nonfinite(shards))


def _count_nonfinite(shards: list[dict]) -> int:
    return sum(int(e.get("nonfinite", 0)) for e in shards)


def _commit_manifest(out: str, state: dict, n: int) -> None:
    _write_json(os.path.join(out, MANIFEST), dict(state, shards=state["shards"][:n]))


def _write_error(e: OSError, k: int, path: str, finished: str) -> StreamError:
    if e.errno == errno.ENOSPC:
        return StreamError(f"no space left on device while writing shard {k} to {path!r}; {finished}")
    return StreamError(f"cannot write shard {k} to {path!r}: {e.strerror or e}; {finished}")


def _is_chief(strategy: Any) -> bool:
    resolver = getattr(getattr(strategy, "extended", None), "_cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type in ("chief", None) or (resolver.task_type == "worker" and resolver.task_id == 0)


def _pad(i: tf.Tensor, x: tf.Tensor, t: tf.Tensor, size: int) -> tuple:
    k = size - tf.shape(i)[0]
    return (tf.concat([i, tf.fill([k], tf.constant(-1, tf.int64))], 0),
            tf.concat([x, tf.zeros(tf.concat([[k], tf.shape(x)[1:]], 0), x.dtype)], 0),
            tf.concat([t, tf.zeros([k], tf.int32)], 0))


def _make_step(explainer: Explainer, sample_shape: tuple, strategy: Any) -> Callable:
    """One batch -> numpy ``(indices, relevance, targets, outputs, x, valid)`` (float32 arrays, in sample
    order). Samples with NaN or inf are explained as zeros and get relevance 0, outputs 0, target -1
    where it was to be predicted, and ``valid`` False."""
    spec = [tf.TensorSpec((None,) + tuple(sample_shape), explainer.dtype)]
    if strategy is not None:
        with strategy.scope():
            fn = explainer.compiled(spec)
    else:
        fn = explainer.compiled(spec)

    def replica(i, x, t):
        n = tf.shape(x)[0]
        ok = tf.reduce_all(tf.math.is_finite(tf.reshape(x, (n, -1))), axis=-1)
        per_sample = lambda v: tf.reshape(ok, tf.concat([[n], tf.ones([tf.rank(v) - 1], tf.int32)], 0))  # noqa: E731
        rel, _, out = fn((tf.where(per_sample(x), x, tf.zeros_like(x)),), t)
        flat = tf.reshape(out, (n, -1))
        resolved = tf.where(t < 0, tf.argmax(flat, axis=-1, output_type=tf.int32), t)
        resolved = tf.where(ok | (t >= 0), resolved, -1)
        rel0 = tf.where(per_sample(rel[0]), rel[0], tf.zeros_like(rel[0]))
        flat = tf.where(per_sample(flat), flat, tf.zeros_like(flat))
        return (i, tf.cast(rel0, tf.float32), resolved, tf.cast(flat, tf.float32), tf.cast(x, tf.float32), ok)

    if strategy is None:
        def step(batch):
            return tuple(v.numpy() for v in replica(*batch))

        return step

    @tf.function(autograph=False)
    def dist_step(i, x, t):
        return strategy.run(replica, args=(i, x, t))

    multi_worker = bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())

    def step(batch):
        res = dist_step(*batch)
        if multi_worker:  # every worker's replicas (a collective); sorted by index afterwards
            got = [np.asarray(strategy.gather(v, axis=0)) for v in res]
        else:
            got = [np.concatenate([np.asarray(r) for r in strategy.experimental_local_results(v)]) for v in res]
        keep = got[0] >= 0  # drop the padding
        return tuple(v[keep] for v in got)

    return step
