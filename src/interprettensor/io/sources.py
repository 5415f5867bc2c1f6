"""The data sets that :func:`~interprettensor.explain_dataset` reads: numpy arrays (with labels or
not), folders and lists of image files and ``.npy`` arrays, Python iterables (generators, iterators),
``keras.utils.PyDataset`` and ``tf.data`` datasets; each as a stream of NumPy blocks ``(indices, x,
targets, labels)`` from any sample on (:meth:`Source.chunks`), with the ``target=`` argument checked.

Every source is read on the host, whatever Keras' backend: a ``tf.data.Dataset`` through
``as_numpy_iterator()`` (it needs TensorFlow installed, as it does to exist). :meth:`Source.dataset` gives
the same samples as a ``tf.data`` pipeline for code that wants one (TensorFlow only)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import sys
from typing import Any, Iterator, Sequence

import numpy as np

from .inputs import InputError, collect_inputs, folder_labels, load_image
from .shards import StreamError

__all__ = ["make_source", "Source", "Chunk"]


Ranges = Sequence[tuple[int, "int | None"]]
#: a block of consecutive samples of a source: ``(indices int64 (k,), x (k, ...), targets int32 (k,),
#: labels int32 (k,))``; targets -1: the predicted class, labels -1: none
Chunk = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
#: samples per block that an array source hands out at once
_BLOCK = 1024


class Source:
    """The input as NumPy blocks of ``(index, x, target, label)`` over given ranges of sample indices
    (``label``: the data's class label, -1 where it has none; ``has_labels``: whether it has them;
    ``x_dtype``: the dtype of ``x`` as read)."""

    n: int | None = None
    has_labels: bool = False
    names: list[str] | None = None
    description: str = ""
    sample_shape: tuple = ()
    x_dtype: Any = np.float32
    error: list  # an exception raised while reading through :meth:`dataset` (reported after the stream)

    def chunks(self, ranges: Ranges) -> Iterator[Chunk]:
        """The samples whose index lies in one of ``ranges`` (``[lo, hi)`` pairs in increasing order;
        ``hi=None``: to the end), in index order, as blocks of consecutive samples (NumPy arrays); a
        reading error is raised where it happens (a :class:`StreamError` for bad data)."""
        raise NotImplementedError

    def samples(self, ranges: Ranges, batch_size: int) -> Iterator[Chunk]:
        """:meth:`chunks` regrouped into batches of at most ``batch_size`` samples."""
        pending: list[Chunk] = []
        count = 0
        for chunk in self.chunks(ranges):
            while len(chunk[0]):
                take = min(batch_size - count, len(chunk[0]))
                pending.append(tuple(v[:take] for v in chunk))  # type: ignore[arg-type]
                chunk = tuple(v[take:] for v in chunk)  # type: ignore[assignment]
                count += take
                if count == batch_size:
                    yield _concat(pending)
                    pending, count = [], 0
        if pending:
            yield _concat(pending)

    def dataset(self, ranges: Ranges, dtype: Any) -> Any:
        """The samples of :meth:`chunks` as an unbatched ``tf.data.Dataset`` of ``(index, x, target,
        label)`` with ``x`` cast to ``dtype`` (needs TensorFlow). A reading error ends the dataset and is
        kept in :attr:`error`."""
        tf = _tensorflow("a tf.data pipeline of the data set")

        def gen():
            try:
                for idx, x, t, lab in self.chunks(ranges):
                    for j in range(len(idx)):
                        yield idx[j], x[j], t[j], lab[j]
            except Exception as e:  # noqa: BLE001 - reported by the reader after the samples before it
                self.error.append(e)

        spec = (tf.TensorSpec((), tf.int64), tf.TensorSpec(self.sample_shape, tf.as_dtype(np.dtype(self.x_dtype))),
                tf.TensorSpec((), tf.int32), tf.TensorSpec((), tf.int32))
        dtype = getattr(dtype, "name", dtype)
        return tf.data.Dataset.from_generator(gen, output_signature=spec).map(
            lambda i, xi, ti, li: (i, tf.cast(xi, dtype), ti, li))


def _tensorflow(what: str) -> Any:
    """TensorFlow, imported for a TensorFlow-only feature; else an error naming what to install."""
    try:
        import tensorflow as tf
    except ImportError:
        raise StreamError(f"{what} needs TensorFlow, which is not installed: pip install tensorflow "
                          f"(or interprettensor[cpu])") from None
    return tf


def is_tf_dataset(data: Any) -> bool:
    """Whether ``data`` is a ``tf.data.Dataset`` (without importing TensorFlow: one exists only if it is)."""
    tf = sys.modules.get("tensorflow")
    data_module = getattr(tf, "data", None) if tf is not None else None
    return data_module is not None and isinstance(data, data_module.Dataset)


def _concat(parts: list[Chunk]) -> Chunk:
    if len(parts) == 1:
        return parts[0]
    return tuple(np.concatenate([p[j] for p in parts]) for j in range(4))  # type: ignore[return-value]


def _indices(ranges: Ranges, n: int):
    for lo, hi in ranges:
        yield from range(lo, n if hi is None else min(hi, n))


def _blocks(ranges: Ranges, n: int, size: int = _BLOCK) -> Iterator[tuple[int, int]]:
    """``[lo, hi)`` blocks of at most ``size`` samples covering ``ranges`` (clipped to ``n``)."""
    for lo, hi in ranges:
        hi = n if hi is None else min(hi, n)
        for a in range(lo, hi, size):
            yield a, min(a + size, hi)


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


def parse_target(target: Any) -> _Target:
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
    if not isinstance(target, (list, tuple, np.ndarray)) and hasattr(target, "__array__"):
        target = np.asarray(target)  # a tensor of any backend
    if isinstance(target, (list, tuple, np.ndarray)):
        arr = np.asarray(target)
        if arr.ndim == 0:
            return parse_target(arr.item())
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
        raise StreamError("target as an array needs a data set of known length (an array, files, a PyDataset, "
                          "a tf.data cardinality); pass (x, label) pairs instead")
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


class _ArraySource(Source):
    def __init__(self, x: np.ndarray, t: np.ndarray | None, target: _Target, shape: "_ShapeCheck"):
        self.x = x
        self.n = len(x)
        labels = None
        if target.uses_label(t is not None):
            labels = self.t = _label_array(np.asarray(t), self.n)
        else:
            self.t = _fixed_targets(target, self.n)
            if t is not None:  # not explained, only stored: labels that are no class indices are dropped
                try:
                    labels = _label_array(np.asarray(t), self.n)
                except StreamError:
                    labels = None
        self.has_labels = labels is not None
        self.labels = labels if labels is not None else np.full((self.n,), -1, np.int32)
        self.sample_shape = shape(tuple(x.shape[1:]))
        h = hashlib.sha256(np.ascontiguousarray(x).view(np.uint8).reshape(-1)).hexdigest()[:16] if x.size else ""
        self.description = f"array{tuple(x.shape)}:{x.dtype}:{h}"
        if labels is not None:
            self.description += f":labels:{hashlib.sha256(labels.tobytes()).hexdigest()[:16]}"
        self.error = []
        self.x_dtype = x.dtype

    def chunks(self, ranges: Ranges) -> Iterator[Chunk]:
        for lo, hi in _blocks(ranges, self.n):
            yield (np.arange(lo, hi, dtype=np.int64), np.asarray(self.x[lo:hi]), self.t[lo:hi], self.labels[lo:hi])


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


class _FileSource(Source):
    """Image files and .npy arrays (files or folders), loaded with the CLI's loaders."""

    def __init__(self, paths: Sequence[str], target: _Target, shape: "_ShapeCheck", input_range: Sequence[float],
                 color_mode: str, resize: bool, labels: Any = None):
        expected = shape.expected
        try:
            self.items = collect_inputs(list(paths), expected)
        except InputError as e:
            raise StreamError(str(e)) from None
        self.n = len(self.items)
        # labels: given (one per input, -1 unknown), else from class subfolders (folder_labels), else none
        self.class_names = None
        if labels is not None:
            lab = np.asarray(labels)
            if lab.ndim != 1 or len(lab) != self.n:
                got = f"{len(lab)} labels" if lab.ndim == 1 else f"labels of shape {lab.shape}"
                raise StreamError(f"{got}, but there are {self.n} inputs; give one class index per input, in input "
                                  f"order (-1: unknown)")
            if lab.size and not np.issubdtype(lab.dtype, np.integer):
                raise StreamError(f"labels must be integer class indices (-1: unknown), got {lab.dtype}")
            if lab.size and lab.min() < -1:
                raise StreamError(f"labels must be class indices >= 0 (-1: unknown), got {int(lab.min())}")
        else:
            lab, self.class_names = folder_labels(self.items)
        self.has_labels = lab is not None
        self.labels = (np.full((self.n,), -1, np.int32) if lab is None else np.asarray(lab).astype(np.int32))
        if target.uses_label(self.has_labels):  # None or 'label': the label where known, else the predicted
            _check_target_length(target, self.n)
            self.t = self.labels.copy()
        else:
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
        if self.has_labels:  # only then: the description of runs without labels stays as it was
            self.description += f":labels:{hashlib.sha256(self.labels.tobytes()).hexdigest()[:16]}"

    def _load(self, i: int) -> np.ndarray:
        item = self.items[i]
        try:
            if item.array is not None:
                return np.asarray(item.array[item.index], dtype="float32")
            return load_image(item.path, self.expected, self.options[1], self.options[0], self.options[2])
        except InputError as e:
            raise StreamError(str(e)) from None

    def chunks(self, ranges: Ranges) -> Iterator[Chunk]:
        for i in _indices(ranges, self.n):
            x = self._load(i)
            if tuple(x.shape) != self.sample_shape:
                raise StreamError(f"input {self.items[i].path!r} has shape {tuple(x.shape)}, the "
                                  f"first input {self.sample_shape}")
            yield np.array([i], np.int64), x[None], self.t[i:i + 1], self.labels[i:i + 1]


class _StreamSource(Source):
    """A source read element by element: ``x`` or ``(x, label)`` (samples or batches; a label is a class
    index or a one-hot vector), with ``target=`` resolved per block in NumPy. Subclasses give the
    elements (:meth:`_elements`) and call :meth:`_setup` with what the first element says."""

    kind = "the data"

    def _setup(self, x_shape: tuple, y_shape: tuple | None, y_numeric: bool, batched: bool, target: _Target,
               shape: "_ShapeCheck") -> None:
        self.sample_shape = shape(tuple(x_shape[1:] if batched else x_shape))
        self.batched = batched
        if y_shape is None and target.kind == "label":
            raise StreamError(f"target='label' needs {self.kind} of (x, label) pairs")
        use_label = target.uses_label(y_shape is not None)
        trank = None if y_shape is None else len(y_shape) - (1 if batched else 0)
        if use_label and trank not in (0, 1):
            raise StreamError(f"labels must be class indices or one-hot vectors, got shape {_shape_str(y_shape)}")
        # labels that are no class indices (e.g. masks) are not stored when they are not explained
        self.has_labels = y_shape is not None and trank in (0, 1) and y_numeric
        self.per_sample = None
        const = -1
        if not use_label:
            if target.kind == "array":
                if self.n is not None:  # else checked while reading, and at the end
                    _check_target_length(target, self.n)
                self.per_sample = target.array
            const = target.value if target.kind == "const" else -1
        self.use_label, self.const = use_label, const
        self.keep_label = self.has_labels or use_label
        self.error = []

    def _elements(self, ranges: Ranges) -> Iterator[tuple[np.ndarray, np.ndarray, Any]]:
        """``(indices, x, y or None)`` blocks of the samples in ``ranges`` (x and y with a batch axis)."""
        raise NotImplementedError

    def chunks(self, ranges: Ranges) -> Iterator[Chunk]:
        for idx, x, y in self._elements(ranges):
            if not len(idx):
                continue
            x = np.asarray(x)
            if tuple(x.shape[1:]) != self.sample_shape:
                raise StreamError(f"sample {int(idx[0])} of {self.kind} has shape {_shape_str(x.shape[1:])}, the "
                                  f"first {_shape_str(self.sample_shape)}")
            label = np.full((len(idx),), -1, np.int32)
            if self.keep_label:
                y = np.asarray(y)
                label = (y if y.ndim == 1 else y.argmax(-1)).astype(np.int32)
            if self.use_label:
                t = label
            elif self.per_sample is not None:
                m = len(self.per_sample)
                if int(idx[-1]) >= m:
                    raise StreamError(f"{_TOO_FEW}{m} class indices, but the data has more samples; give one per "
                                      f"sample")
                t = self.per_sample[idx]
            else:
                t = np.full((len(idx),), self.const, np.int32)
            yield idx, x, t, label


def _split(element: Any, what: str) -> tuple[Any, Any]:
    """``x`` or ``(x,)`` or ``(x, label)`` -> ``(x, label or None)``."""
    if isinstance(element, (tuple, list)):
        if len(element) == 1:
            return element[0], None
        if len(element) == 2:
            return element[0], element[1]
        raise StreamError(f"{what} must yield x or (x, label), got a {type(element).__name__} of {len(element)} "
                          f"items")
    if isinstance(element, dict):
        raise StreamError(f"{what} must yield x or (x, label) arrays (explain_dataset supports single-input "
                          f"models), got a dict")
    return element, None


def _as_array(v: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(v)
    except Exception as e:  # noqa: BLE001 - whatever the element is, say what it was
        raise StreamError(f"{what} must yield arrays (NumPy or tensors), got {type(v).__name__}: {e}") from None
    if arr.dtype == object:
        raise StreamError(f"{what} must yield arrays (NumPy or tensors), got {type(v).__name__} that is no "
                          f"numeric array")
    return arr


def _first_element(x: np.ndarray, y: Any, shape: "_ShapeCheck", what: str) -> tuple[bool, tuple | None, bool]:
    """What the first element says: whether elements are batches, the label's shape and whether it is
    numeric."""
    if x.ndim == 0:
        raise StreamError(f"{what} yields x of shape (): samples need at least one axis")
    batched = shape.batched(tuple(x.shape))
    y_shape, numeric = None, False
    if y is not None:
        ya = _as_array(y, what)
        y_shape = tuple(ya.shape)
        numeric = np.issubdtype(ya.dtype, np.integer) or np.issubdtype(ya.dtype, np.floating)
    return batched, y_shape, numeric


def _numbered(blocks: Iterator[tuple[np.ndarray, Any]], ranges: Ranges) -> Iterator[tuple[np.ndarray, np.ndarray, Any]]:
    """Number the samples of consecutive blocks ``(x, y)`` from 0 on and keep those in ``ranges``."""
    start = 0
    los = np.array([lo for lo, _ in ranges], np.int64)
    his = np.array([np.iinfo(np.int64).max if hi is None else hi for _, hi in ranges], np.int64)
    end = int(his.max()) if len(his) else 0
    for x, y in blocks:
        k = len(x)
        idx = np.arange(start, start + k, dtype=np.int64)
        start += k
        keep = ((idx[:, None] >= los) & (idx[:, None] < his)).any(-1)
        if keep.all():
            yield idx, x, y
        elif keep.any():
            yield idx[keep], x[keep], None if y is None else np.asarray(y)[keep]
        if start >= end:
            return


class _IterableSource(_StreamSource):
    """A Python iterable or iterator (a generator, a ``torch.utils.data.DataLoader``, ...) yielding ``x`` or
    ``(x, label)`` as NumPy arrays or tensors of any backend, samples or batches; read once, in order (its
    length is unknown: a stream written shard by shard)."""

    kind = "the iterable"

    def __init__(self, data: Any, target: _Target, shape: "_ShapeCheck"):
        self.iterator = iter(data)
        try:
            first = next(self.iterator)
        except StopIteration:
            raise StreamError("the iterable yields no samples") from None
        x, y = _split(first, "the iterable")
        x = _as_array(x, "the iterable")
        batched, y_shape, numeric = _first_element(x, y, shape, "the iterable")
        self.first = first
        self.n = None
        self._setup(tuple(x.shape), y_shape, numeric, batched, target, shape)
        self.x_dtype = x.dtype
        self.description = f"iterable:{type(data).__name__}:{_shape_str(self.sample_shape)}:{x.dtype}"

    def _blocks(self) -> Iterator[tuple[np.ndarray, Any]]:
        for element in itertools.chain([self.first], self.iterator):
            x, y = _split(element, "the iterable")
            x = _as_array(x, "the iterable")
            y = None if y is None or not self.keep_label else _as_array(y, "the iterable")
            if not self.batched:
                x, y = x[None], (None if y is None else y[None])
            yield x, y

    def _elements(self, ranges: Ranges) -> Iterator[tuple[np.ndarray, np.ndarray, Any]]:
        if self.iterator is None:
            raise StreamError("the iterable was read already; pass a new one (a generator is read once)")
        try:
            yield from _numbered(self._blocks(), ranges)
        finally:
            self.iterator = None


class _PyDatasetSource(_StreamSource):
    """A ``keras.utils.PyDataset``: batches ``x`` or ``(x, label)`` read by index (only those of the wanted
    ranges); every batch but the last holds the same number of samples (read from the first and the
    last batch: the data's length)."""

    kind = "the PyDataset"

    def __init__(self, data: Any, target: _Target, shape: "_ShapeCheck"):
        self.data = data
        try:
            count = data.num_batches
        except NotImplementedError:
            count = None
        if count is None:
            raise StreamError("the PyDataset is infinite (num_batches is None); explain_dataset needs one of known "
                              "length")
        self.count = int(count)
        if self.count < 1:
            raise StreamError("the PyDataset holds no batches")
        x, y = self._batch(0)
        if x.ndim < 2:
            raise StreamError(f"the PyDataset's batches must be (N, ...) arrays, got shape {_shape_str(x.shape)}")
        self.batch_size = len(x)
        last = len(self._batch(self.count - 1)[0]) if self.count > 1 else self.batch_size
        self.n = self.batch_size * (self.count - 1) + last
        y_shape = None if y is None else tuple(np.shape(y))
        numeric = y is not None and (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating))
        self._setup(tuple(x.shape), y_shape, numeric, True, target, shape)
        self.x_dtype = x.dtype
        self.description = (f"PyDataset:{type(data).__name__}:{self.count}x{self.batch_size}:{self.n}:"
                            f"{_shape_str(self.sample_shape)}:{x.dtype}")

    def _batch(self, b: int) -> tuple[np.ndarray, Any]:
        x, y = _split(self.data[b], "the PyDataset")
        x = _as_array(x, "the PyDataset")
        return x, (None if y is None else _as_array(y, "the PyDataset"))

    def _elements(self, ranges: Ranges) -> Iterator[tuple[np.ndarray, np.ndarray, Any]]:
        B = self.batch_size
        for lo, hi in ranges:
            hi = self.n if hi is None else min(hi, self.n)
            for b in range(lo // B, -(-hi // B)):
                x, y = self._batch(b)
                want = B if b < self.count - 1 else self.n - b * B
                if len(x) != want:
                    raise StreamError(f"batch {b} of the PyDataset holds {len(x)} samples, the first {B}: every "
                                      f"batch but the last must hold as many")
                a, z = max(lo, b * B) - b * B, min(hi, (b + 1) * B) - b * B
                yield (np.arange(b * B + a, b * B + z, dtype=np.int64), x[a:z],
                       None if y is None or not self.keep_label else y[a:z])


class _TFDataSource(_StreamSource):
    """A ``tf.data.Dataset``, read as NumPy (``as_numpy_iterator``) on any Keras backend."""

    kind = "the dataset"

    def __init__(self, ds: Any, target: _Target, shape: "_ShapeCheck"):
        import tensorflow as tf  # the dataset exists: so does TensorFlow

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
        if batched:
            ds = ds.unbatch()
        card = int(ds.cardinality())
        self.n = card if card >= 0 else None
        y_shape = None if ts is None else (tuple(ts.shape) if ts.shape.rank is not None else (None,) * 9)
        self._setup(tuple(xs.shape), y_shape, ts is not None and (ts.dtype.is_integer or ts.dtype.is_floating),
                    batched, target, shape)
        self.ds, self.has_label = ds, ts is not None
        self.x_dtype = xs.dtype.as_numpy_dtype
        self.description = f"tf.data:{spec}"

    def _elements(self, ranges: Ranges) -> Iterator[tuple[np.ndarray, np.ndarray, Any]]:
        import tensorflow as tf

        ds = self.ds
        if self.has_label and not self.keep_label:
            ds = ds.map(lambda *e: e[0])
        ds = ds.enumerate()
        if ranges and ranges[-1][1] is not None:
            ds = ds.take(ranges[-1][1])
        if len(ranges) == 1:
            ds = ds.skip(ranges[0][0])
        else:  # a worker's shards: read through the others
            los = tf.constant([lo for lo, _ in ranges], tf.int64)
            his = tf.constant([np.iinfo(np.int64).max if hi is None else hi for _, hi in ranges], tf.int64)
            ds = ds.filter(lambda i, e: tf.reduce_any((i >= los) & (i < his)))
        for i, elem in ds.batch(256).prefetch(2).as_numpy_iterator():
            if self.keep_label:
                yield i.astype(np.int64), elem[0], elem[1]
            else:
                yield i.astype(np.int64), (elem[0] if isinstance(elem, tuple) else elem), None


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


def _is_paths(data: Any) -> bool:
    return isinstance(data, (str, os.PathLike)) or (isinstance(data, (list, tuple)) and bool(data)
                                                     and all(isinstance(p, (str, os.PathLike)) for p in data))


def make_source(model: Any, data: Any, target: Any, expected: tuple | None, **file_options: Any) -> Source:
    tgt = parse_target(target)
    shape = _ShapeCheck(model, expected)
    if is_tf_dataset(data):
        return _TFDataSource(data, tgt, shape)
    if _is_paths(data):
        paths = [os.fspath(data)] if isinstance(data, (str, os.PathLike)) else [os.fspath(p) for p in data]
        return _FileSource(paths, tgt, shape, **file_options)
    if isinstance(data, tuple) and len(data) == 2 and _is_paths(data[0]) and not _is_paths(data[1]):
        files, given = data  # (files or a folder, one label per input)
        paths = [os.fspath(files)] if isinstance(files, (str, os.PathLike)) else [os.fspath(p) for p in files]
        return _FileSource(paths, tgt, shape, labels=np.asarray(given), **file_options)
    if _is_pydataset(data):
        return _PyDatasetSource(data, tgt, shape)
    if _is_iterable(data):
        return _IterableSource(data, tgt, shape)
    labels = None
    if isinstance(data, tuple) and len(data) == 2:
        data, labels = data
    try:
        arr = np.asarray(data)
    except Exception:  # noqa: BLE001 - ragged lists and the like: named below
        arr = np.asarray(None)
    if arr.dtype == object or arr.ndim < 1:
        raise StreamError(f"explain_dataset takes a numpy array (or (x, labels)), a folder or a list of files, a "
                          f"Python iterable or generator, a keras.utils.PyDataset, or a tf.data.Dataset; got "
                          f"{type(data).__name__}")
    if arr.ndim < 2:
        raise StreamError(f"the array must be a batch of samples (N, ...), got shape {arr.shape}")
    return _ArraySource(arr, labels, tgt, shape)


def _is_pydataset(data: Any) -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(data, keras.utils.PyDataset)


def _is_iterable(data: Any) -> bool:
    """An iterable to read once, element by element: not an array, a tensor, a list or a tuple (those are
    arrays, or lists of files) nor a string."""
    if isinstance(data, (str, bytes, os.PathLike, list, tuple, dict, np.ndarray)) or hasattr(data, "__array__"):
        return False
    if hasattr(data, "shape") and hasattr(data, "dtype"):  # a tensor
        return False
    return hasattr(data, "__iter__") or hasattr(data, "__next__")
