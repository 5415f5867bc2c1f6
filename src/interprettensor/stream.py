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
one row per sample) and, for files, ``names``.

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

from .explain import Explainer
from .handlers import ExplainError

__all__ = ["explain_dataset", "load_relevances", "StreamError", "StreamResult"]

MANIFEST = "manifest.json"
FORMAT = 1
RERUN = "run again with the same arguments to continue"
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.npz$")


class StreamError(ExplainError):
    """A run of :func:`explain_dataset` that cannot go on (the finished shards stay valid)."""


@dataclasses.dataclass
class StreamResult:
    """What :func:`explain_dataset` did: ``skipped`` shards were already finished, ``computed`` were
    written by this call."""

    out: str
    n_samples: int
    shards: int
    skipped: int
    computed: int
    explainer: Explainer


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


def load_relevances(out: str, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Read the results of :func:`explain_dataset` back: ``{'relevance', 'indices', 'targets',
    'outputs'[, 'names']}``, each concatenated over the finished shards in order (only ``keys``
    if given). ``load_relevances(out)['relevance']`` is the relevance of every explained sample."""
    m = _read_manifest(out)
    if m is None:
        raise StreamError(f"{out!r} holds no explain_dataset results ({MANIFEST} is missing)")
    parts: dict[str, list] = {}
    for entry in m["shards"]:
        path = os.path.join(out, entry["file"])
        try:
            with np.load(path, allow_pickle=False) as z:
                for k in (keys or z.files):
                    parts.setdefault(k, []).append(z[k])
        except (OSError, ValueError, KeyError) as e:
            raise StreamError(f"cannot read shard {path!r}: {e}") from None
    if not parts:
        return {k: np.zeros((0,)) for k in (keys or ("relevance", "indices", "targets", "outputs"))}
    return {k: np.concatenate(v) for k, v in parts.items()}


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


def _const_target(target: Any) -> int:
    if target is None or (isinstance(target, str) and target == "predicted"):
        return -1
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if target < 0:
            raise StreamError(f"target must be a class index >= 0, got {target}")
        return int(target)
    raise StreamError(f"target must be None, 'predicted', 'label' or a class index, got {target!r}")


class _ArraySource(_Source):
    def __init__(self, x: np.ndarray, t: np.ndarray | None, target: Any, expected: tuple):
        self.x = x
        self.n = len(x)
        if target == "label" and t is None:
            raise StreamError("target='label' needs labels: pass (x, labels)")
        if t is not None and target in (None, "label"):
            self.t = _label_array(np.asarray(t), self.n)
        else:
            self.t = np.full((self.n,), _const_target(target), np.int32)
        self.sample_shape = _check_sample_shape(tuple(x.shape[1:]), expected)
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

    def __init__(self, paths: Sequence[str], target: Any, expected: tuple, input_range: Sequence[float],
                 color_mode: str, resize: bool):
        from .cli import CLIError, collect_inputs

        try:
            self.items = collect_inputs(list(paths), expected)
        except CLIError as e:
            raise StreamError(str(e)) from None
        if target == "label":
            raise StreamError("target='label' needs labels; files have none")
        self.t = _const_target(target)
        self.n = len(self.items)
        self.names = [it.name for it in self.items]
        self.options = (tuple(float(v) for v in input_range), color_mode, bool(resize))
        self.expected = expected
        self.error = []
        first = self._load(0)
        self.sample_shape = _check_sample_shape(tuple(first.shape), expected)
        listing = "\n".join(it.name for it in self.items)  # names: a corrupt file may be fixed in place
        self.description = (f"files:{self.n}:{hashlib.sha256(listing.encode()).hexdigest()[:16]}:"
                            f"{self.options}")

    def _load(self, i: int) -> np.ndarray:
        from .cli import CLIError, load_image

        item = self.items[i]
        try:
            if item.array is not None:
                return np.asarray(item.array[item.index], dtype="float32")
            return load_image(item.path, self.expected, self.options[1], self.options[0], self.options[2])
        except CLIError as e:
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
                yield np.int64(i), x, np.int32(self.t)

        spec = (tf.TensorSpec((), tf.int64), tf.TensorSpec(self.sample_shape, tf.float32),
                tf.TensorSpec((), tf.int32))
        return tf.data.Dataset.from_generator(gen, output_signature=spec).map(
            lambda i, xi, ti: (i, tf.cast(xi, dtype), ti))


class _TFDataSource(_Source):
    def __init__(self, ds: tf.data.Dataset, target: Any, expected: tuple):
        spec = ds.element_spec
        rank = len(expected)
        if isinstance(spec, tf.TensorSpec):
            xs, ts = spec, None
        elif isinstance(spec, tuple) and len(spec) in (1, 2) and all(isinstance(s, tf.TensorSpec) for s in spec):
            xs, ts = spec[0], (spec[1] if len(spec) == 2 else None)
        else:
            raise StreamError(f"the dataset must yield x or (x, label) tensors, got elements {spec}")
        if xs.shape.rank == rank:
            ds = ds.unbatch()
            batched = True
        elif xs.shape.rank == rank - 1:
            batched = False
        else:
            raise StreamError(f"the dataset yields x of shape {tuple(xs.shape)}, but the model expects samples "
                              f"of shape {_shape_str(expected[1:])} (or batches of them)")
        self.sample_shape = _check_sample_shape(tuple(xs.shape[1:] if batched else xs.shape), expected)
        if ts is None and target == "label":
            raise StreamError("target='label' needs a dataset of (x, label) pairs")
        use_label = ts is not None and target in (None, "label")
        const = -1 if use_label else _const_target(target)
        if use_label:
            trank = ts.shape.rank - (1 if batched else 0)
            if trank not in (0, 1):
                raise StreamError(f"labels must be class indices or one-hot vectors, got shape {tuple(ts.shape)}")
        self.ds, self.has_label, self.use_label, self.const = ds, ts is not None, use_label, const
        card = int(ds.cardinality())
        self.n = card if card >= 0 else None
        self.description = f"tf.data:{spec}"
        self.error = []

    def dataset(self, start: int, dtype: tf.DType) -> tf.data.Dataset:
        use_label, has_label, const = self.use_label, self.has_label, self.const

        def fix(i, elem):
            x = elem[0] if isinstance(elem, tuple) else elem
            if use_label:
                t = elem[1]
                t = tf.cast(t if t.shape.rank == 0 else tf.argmax(t, axis=-1), tf.int32)
            else:
                t = tf.constant(const, tf.int32)
            return i, tf.cast(x, dtype), t

        ds = self.ds
        if has_label and not use_label:
            ds = ds.map(lambda *e: e[0])
        return ds.enumerate().skip(start).map(fix)


def _shape_str(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("any" if s is None else str(int(s)) for s in shape) + ")"


def _check_sample_shape(shape: tuple, expected: tuple) -> tuple:
    want = tuple(expected[1:])
    ok = len(shape) == len(want) and all(w is None or s is None or int(w) == int(s) for w, s in zip(want, shape))
    if not ok:
        raise StreamError(f"inputs have shape {_shape_str(shape)} per sample, but the model expects "
                          f"{_shape_str(want)}")
    if any(s is None for s in shape):
        raise StreamError(f"inputs need a fixed shape per sample, got {_shape_str(shape)}")
    return tuple(int(s) for s in shape)


def _make_source(model: Any, data: Any, target: Any, expected: tuple, **file_options: Any) -> _Source:
    if isinstance(data, tf.data.Dataset):
        return _TFDataSource(data, target, expected)
    if isinstance(data, (str, os.PathLike)) or (isinstance(data, (list, tuple)) and data
                                                and all(isinstance(p, (str, os.PathLike)) for p in data)):
        paths = [os.fspath(data)] if isinstance(data, (str, os.PathLike)) else [os.fspath(p) for p in data]
        return _FileSource(paths, target, expected, **file_options)
    labels = None
    if isinstance(data, tuple) and len(data) == 2:
        data, labels = data
    arr = np.asarray(data)
    if arr.dtype == object or arr.ndim < 1:
        raise StreamError(f"explain_dataset takes a tf.data.Dataset, a numpy array (or (x, labels)), a folder "
                          f"or a list of files; got {type(data).__name__}")
    return _ArraySource(arr, labels, target, expected)


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
        "target": repr(target),
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
                    on_shard: Callable[[int, dict], None] | None = None, **params: Any) -> StreamResult:
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
            ``'label'``; or a class index for all samples.
        progress: show a progress bar (tqdm, on stderr).
        resume: continue a run found in ``out`` (same model, rule, input and shard size, else an error);
            ``False``: delete its shards and start over.
        on_shard: called as ``on_shard(k, arrays)`` before shard ``k`` is committed; ``arrays`` holds the
            shard's arrays and the inputs under ``'x'`` (the CLI writes heatmap PNGs with it).

    Returns:
        a :class:`StreamResult` (samples, shards, how many were skipped as finished and how many computed).

    Raises:
        StreamError: for a folder of another run, a full disk, an unreadable input file, bad data; the
            shards finished before stay intact and a rerun continues after them.

    Example::

        it.explain_dataset(model, ds.batch(256), rule="epsilon_gamma_box", out="runs/val",
                           low=-1.0, high=1.0)
        R = it.load_relevances("runs/val")["relevance"]
    """
    if shard_size < 1 or batch_size < 1:
        raise StreamError(f"shard_size and batch_size must be >= 1, got {shard_size} and {batch_size}")
    if strategy is not None:
        with strategy.scope():
            explainer = Explainer(model, rule, **params)
    else:
        explainer = Explainer(model, rule, **params)
    if len(explainer.graph.inputs) != 1:
        raise StreamError(f"explain_dataset supports single-input models; this one has "
                          f"{len(explainer.graph.inputs)} inputs")
    expected = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else None
    if expected is None:
        raise StreamError("the model has no defined input shape; build it (call it once) first")
    source = _make_source(model, dataset, target, expected, input_range=input_range, color_mode=color_mode,
                          resize=resize)
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
        shards.append(entry)
    skipped = len(shards)
    done = sum(e["count"] for e in shards)
    state = {"format": FORMAT, "identity": identity, "shards": shards, "complete": bool(complete),
             "n_samples": done if complete else None}
    if chief:
        _commit_manifest(out, state, len(shards))
    if complete:
        return StreamResult(out, done, len(shards), skipped, 0, explainer)

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
    pending: dict[str, list] = {k: [] for k in ("indices", "relevance", "targets", "outputs", "x")}
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
                  "targets": part["targets"].astype(np.int32), "outputs": part["outputs"]}
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
                 "count": int(len(arrays["indices"]))}
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
                idx, rel, tgt, outp, x = step(batch)
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
            raise StreamError(f"reading or explaining the input failed after sample {done_samples() - 1}: "
                              f"{msg.strip().splitlines()[0] if msg.strip() else type(e).__name__}; "
                              f"{finished()}") from None
        if source.error:
            raise source.error[0]
        emit(final=True)
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
    return StreamResult(out, total, len(shards), skipped, computed, explainer)


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
    """One batch -> numpy ``(indices, relevance, targets, outputs, x)`` in float32, in sample order."""
    spec = [tf.TensorSpec((None,) + tuple(sample_shape), explainer.dtype)]
    if strategy is not None:
        with strategy.scope():
            fn = explainer.compiled(spec)
    else:
        fn = explainer.compiled(spec)

    def replica(i, x, t):
        rel, _, out = fn((x,), t)
        flat = tf.reshape(out, (tf.shape(out)[0], -1))
        resolved = tf.where(t < 0, tf.argmax(flat, axis=-1, output_type=tf.int32), t)
        return i, tf.cast(rel[0], tf.float32), resolved, tf.cast(flat, tf.float32), tf.cast(x, tf.float32)

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
