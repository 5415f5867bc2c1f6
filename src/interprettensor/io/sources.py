"""The data sets that :func:`~interprettensor.explain_dataset` reads: numpy arrays (with labels or
not), folders and lists of image files and ``.npy`` arrays, and ``tf.data`` datasets; each as a
stream of ``(index, x, target, label)`` from any sample on, with the ``target=`` argument checked."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from .inputs import InputError, collect_inputs, folder_labels, load_image
from .shards import StreamError

__all__ = ["make_source", "Source"]


Ranges = Sequence[tuple[int, "int | None"]]


class Source:
    """The input as an unbatched ``tf.data.Dataset`` of ``(index, x, target, label)`` over given ranges
    of sample indices (``label``: the data's class label, -1 where it has none; ``has_labels``: whether
    it has them)."""

    n: int | None = None
    has_labels: bool = False
    names: list[str] | None = None
    description: str = ""
    sample_shape: tuple = ()
    error: list  # an exception raised while reading (set by generator-based sources)

    def dataset(self, ranges: Ranges, dtype: tf.DType) -> tf.data.Dataset:
        """The samples whose index lies in one of ``ranges`` (``[lo, hi)`` pairs in increasing order;
        ``hi=None``: to the end), in index order."""
        raise NotImplementedError


def _indices(ranges: Ranges, n: int):
    for lo, hi in ranges:
        yield from range(lo, n if hi is None else min(hi, n))


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
    if tf.is_tensor(target):
        target = target.numpy()
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

    def dataset(self, ranges: Ranges, dtype: tf.DType) -> tf.data.Dataset:
        x, t, labels, n = self.x, self.t, self.labels, self.n

        def gen():
            for i in _indices(ranges, n):
                yield np.int64(i), np.asarray(x[i]), t[i], labels[i]

        spec = (tf.TensorSpec((), tf.int64), tf.TensorSpec(self.sample_shape, tf.as_dtype(x.dtype)),
                tf.TensorSpec((), tf.int32), tf.TensorSpec((), tf.int32))
        return tf.data.Dataset.from_generator(gen, output_signature=spec).map(
            lambda i, xi, ti, li: (i, tf.cast(xi, dtype), ti, li))


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

    def dataset(self, ranges: Ranges, dtype: tf.DType) -> tf.data.Dataset:
        def gen():
            for i in _indices(ranges, self.n):
                try:
                    x = self._load(i)
                    if tuple(x.shape) != self.sample_shape:
                        raise StreamError(f"input {self.items[i].path!r} has shape {tuple(x.shape)}, the "
                                          f"first input {self.sample_shape}")
                except Exception as e:  # noqa: BLE001 - reported by explain_dataset after the last good shard
                    self.error.append(e)
                    return
                yield np.int64(i), x, self.t[i], self.labels[i]

        spec = (tf.TensorSpec((), tf.int64), tf.TensorSpec(self.sample_shape, tf.float32),
                tf.TensorSpec((), tf.int32), tf.TensorSpec((), tf.int32))
        return tf.data.Dataset.from_generator(gen, output_signature=spec).map(
            lambda i, xi, ti, li: (i, tf.cast(xi, dtype), ti, li))


class _TFDataSource(Source):
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
        trank = None if ts is None or ts.shape.rank is None else ts.shape.rank - (1 if batched else 0)
        if use_label and trank not in (0, 1):
            raise StreamError(f"labels must be class indices or one-hot vectors, got shape {tuple(ts.shape)}")
        # labels that are no class indices (e.g. masks) are not stored when they are not explained
        self.has_labels = ts is not None and trank in (0, 1) and (ts.dtype.is_integer or ts.dtype.is_floating)
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

    def dataset(self, ranges: Ranges, dtype: tf.DType) -> tf.data.Dataset:
        use_label, has_label, const = self.use_label, self.has_label, self.const
        keep_label = self.has_labels or use_label
        per_sample = None if self.per_sample is None else tf.constant(self.per_sample, tf.int32)

        def fix(i, elem):
            x = elem[0] if isinstance(elem, tuple) else elem
            label = tf.constant(-1, tf.int32)
            if keep_label:
                y = elem[1]
                label = tf.cast(y if y.shape.rank == 0 else tf.argmax(y, axis=-1), tf.int32)
            if use_label:
                t = label
            elif per_sample is not None:
                m = int(per_sample.shape[0])
                with tf.control_dependencies([tf.debugging.assert_less(
                        i, tf.constant(m, tf.int64), message=f"{_TOO_FEW}{m} class indices, but the data has more "
                                                             f"samples; give one per sample")]):
                    t = tf.gather(per_sample, tf.minimum(i, m - 1))
            else:
                t = tf.constant(const, tf.int32)
            return i, tf.cast(x, dtype), t, label

        ds = self.ds
        if has_label and not keep_label:
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
        return ds.map(fix)


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
    if isinstance(data, tf.data.Dataset):
        return _TFDataSource(data, tgt, shape)
    if _is_paths(data):
        paths = [os.fspath(data)] if isinstance(data, (str, os.PathLike)) else [os.fspath(p) for p in data]
        return _FileSource(paths, tgt, shape, **file_options)
    if isinstance(data, tuple) and len(data) == 2 and _is_paths(data[0]) and not _is_paths(data[1]):
        files, given = data  # (files or a folder, one label per input)
        paths = [os.fspath(files)] if isinstance(files, (str, os.PathLike)) else [os.fspath(p) for p in files]
        return _FileSource(paths, tgt, shape, labels=np.asarray(given), **file_options)
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
