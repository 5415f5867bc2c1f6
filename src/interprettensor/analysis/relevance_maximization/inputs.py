"""Where the samples of relevance maximisation come from (:func:`_open`): any data set
:func:`~interprettensor.explain_dataset` reads (:mod:`interprettensor.io.sources`), or the inputs stored in
an ``explain_dataset`` run with the targets that run explained (:class:`_RunSource`; a missing or damaged
shard is an error naming it), read in batches of chosen sample ranges (:func:`_samples`)."""

from __future__ import annotations

import glob
import hashlib
import os
from typing import Any, Iterator, Sequence

import numpy as np
from keras import ops

from ...engine.backend import Tensor
from ...io.inputs import InputError, model_input_shape
from ...io.shards import StreamError, run_shard_files, shard_error
from ...io.sources import Source, make_source


class _RunSource(Source):
    """The inputs stored in an :func:`explain_dataset` run (``store_inputs=True``), shard by shard, with
    the targets that run explained."""

    def __init__(self, run: str):
        self.run = run
        # in order, without a gap, each there and readable: else an error naming the file (nothing is changed)
        self.files = run_shard_files(run)
        if not self.files:
            raise StreamError(f"{run}: no shard-*.npz files: not an explain_dataset run")
        with _open_shard(self.files[0]) as z:
            if "inputs" not in z.files:
                raise StreamError(f"{run}: the run holds no inputs; explain the data set with store_inputs=True "
                                  f"(interprettensor explain --store-inputs), or pass the data itself")
            self.sample_shape = tuple(_read(z, "inputs", self.files[0]).shape[1:])
        self.counts = []
        for f in self.files:
            with _open_shard(f) as z:
                self.counts.append(int(_read(z, "indices", f).shape[0]))
        self.n = int(sum(self.counts))
        manifest = os.path.join(run, "manifest.json")
        text = open(manifest, "rb").read() if os.path.exists(manifest) else b""
        self.description = f"run:{hashlib.sha256(text).hexdigest()[:16]}:{self.n}"
        self.names = None
        self.error = []

    def chunks(self, ranges):
        """The stored inputs and explained targets of the samples in ``ranges``, shard by shard (labels
        -1: the run's inputs carry none here); a missing or damaged shard raises a StreamError naming it."""
        wanted = np.array(sorted(i for lo, hi in ranges for i in range(lo, self.n if hi is None else min(hi, self.n))),
                          np.int64)
        start = 0
        for f, c in zip(self.files, self.counts):
            take = wanted[(wanted >= start) & (wanted < start + c)]
            if len(take):
                with _open_shard(f) as z:
                    xs, ts = _read(z, "inputs", f), _read(z, "targets", f)
                yield (take, np.asarray(xs[take - start], np.float32), np.asarray(ts[take - start], np.int32),
                       np.full(len(take), -1, np.int32))
            start += c


def _open_shard(path: str) -> Any:
    """``np.load`` of a shard of an explain run; a missing or damaged file is a :class:`StreamError` naming
    it and saying how to rewrite it."""
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - BadZipFile, OSError, ...
        raise shard_error(path, e) from None


def _read(z: Any, key: str, path: str) -> np.ndarray:
    """One array of an open shard (its data is read, and checked, here)."""
    try:
        return z[key]
    except KeyError:
        raise StreamError(f"{path!r} has no {key!r} array (it holds {', '.join(z.files)})") from None
    except Exception as e:  # noqa: BLE001 - a damaged member (bad CRC, truncated data)
        raise shard_error(path, e) from None


def _open(model: Any, data: Any, target: Any, input_range: Sequence[float], color_mode: str, resize: bool) -> Source:
    if isinstance(data, str) and os.path.isdir(data) and glob.glob(os.path.join(data, "shard-*.npz")):
        if target is not None:
            raise StreamError("an explain_dataset run as input is explained for the classes that run explained: "
                              "drop target= (--target)")
        return _RunSource(data)
    try:
        expected = model_input_shape(model)
    except InputError as e:
        raise StreamError(str(e)) from None
    return make_source(model, data, target, expected, input_range=input_range, color_mode=color_mode, resize=resize)


def _samples(source: Source, ranges: list, dtype: Any, batch_size: int) -> Iterator[tuple[np.ndarray, Tensor, np.ndarray]]:
    """Batches ``(indices, x, targets)`` of the samples in ``ranges`` (``x`` a tensor of Keras' backend)."""
    for i, x, t, _ in source.samples(ranges, batch_size):  # NumPy blocks read on the host
        yield (np.asarray(i).astype(np.int64), ops.convert_to_tensor(np.asarray(x), dtype=dtype),
               np.asarray(t).astype(np.int32))
