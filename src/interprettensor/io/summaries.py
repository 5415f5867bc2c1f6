"""TensorBoard summaries: loss and accuracy per epoch, relevance histograms per layer, heatmap images,
and the pictures of sequences: a strip per channel over time for multivariate series ``(N, T, C)``
(:func:`~.render.sequence_strip`) and coloured tokens for text ``(N, T)`` (:func:`~.render_text.save_png`).

The summaries are written with TensorFlow's own ``tf.summary.write`` and the metadata of TensorBoard's
scalar, histogram and image plugins, so that the ``tensorboard`` package is needed only to *view*
the logs (``pip install tensorboard``; ``tensorboard --logdir=LOGDIR``), not to write them. They hold
NumPy values, so they are written the same whatever Keras' backend (TensorFlow, JAX, PyTorch), as long as
TensorFlow is installed (``pip install tensorflow``); without it a :class:`SummaryWriter` says so.

Example::

    from interprettensor.io.summaries import SummaryWriter, EpochSummaries
    with SummaryWriter("logs/train") as w:
        net.fit(x, y, epochs=5, callbacks=[EpochSummaries(w)])
        w.relevance_histograms(per_layer, step=5)
        w.heatmaps("relevance", R, x, step=5)             # images (N, H, W, C)
        w.heatmaps("series", R_ts, x_ts, step=5)           # time series (N, T, C): per-channel strips
        w.heatmaps("text", R_tok, None, step=5, tokens=toks)  # tokens (N, T) with their strings
"""

from __future__ import annotations

import glob
import os
import tempfile
from typing import Any, Mapping, Sequence

import keras
import numpy as np

__all__ = ["SummaryWriter", "EpochSummaries", "read_events"]


def _tensorflow(what: str = "TensorBoard summaries") -> Any:
    """TensorFlow, which writes (and reads) the event files on any Keras backend; else an ImportError
    naming what to install."""
    try:
        import tensorflow as tf
    except ImportError:
        raise ImportError(f"{what} are written with tf.summary, and TensorFlow is not installed (Keras runs on "
                          f"{keras.backend.backend()!r}): pip install tensorflow (the CPU build is enough; "
                          f"or interprettensor[cpu])") from None
    return tf


def _metadata(plugin: str, data_class: str, description: str = ""):
    from tensorflow.core.framework import summary_pb2

    md = summary_pb2.SummaryMetadata()
    md.plugin_data.plugin_name = plugin
    md.plugin_data.content = b""  # version 0 of the plugin's data, as TensorBoard writes it
    md.summary_description = description
    md.data_class = getattr(summary_pb2, data_class)
    return md


def _histogram_buckets(values: np.ndarray, bins: int) -> np.ndarray:
    """TensorBoard's histogram tensor: ``(bins, 3)`` rows of (left edge, right edge, count)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.zeros((0, 3), np.float64)
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        return np.array([[lo - 0.5, hi + 0.5, float(v.size)]], np.float64)
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    return np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)


class SummaryWriter:
    """Write TensorBoard event files into ``logdir`` (created if needed).

    Methods take a ``step`` (epoch or training step). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, logdir: str):
        tf = _tensorflow()
        os.makedirs(logdir, exist_ok=True)
        self.logdir = logdir
        self._tf = tf
        self._writer = tf.summary.create_file_writer(logdir)

    def scalar(self, tag: str, value: float, step: int, description: str = "") -> None:
        """One scalar (shown in TensorBoard's *Scalars* tab)."""
        tf = self._tf
        with self._writer.as_default():
            tf.summary.write(tag, tf.constant(float(value), tf.float32), step=int(step),
                             metadata=_metadata("scalars", "DATA_CLASS_SCALAR", description))

    def histogram(self, tag: str, values: Any, step: int, bins: int = 30, description: str = "") -> None:
        """A histogram of ``values`` (shown in the *Histograms* and *Distributions* tabs)."""
        buckets = _histogram_buckets(np.asarray(values), bins)
        tf = self._tf
        with self._writer.as_default():
            tf.summary.write(tag, tf.constant(buckets, tf.float64), step=int(step),
                             metadata=_metadata("histograms", "DATA_CLASS_TENSOR", description))

    def images(self, tag: str, images: np.ndarray, step: int, max_outputs: int = 16,
               description: str = "") -> None:
        """RGB or grey images ``(N, H, W, C)`` (or ``(N, H, W)``) in [0, 1] (the *Images* tab)."""
        imgs = np.asarray(images, dtype=np.float64)
        if imgs.ndim == 3:
            imgs = imgs[..., None]
        if imgs.ndim != 4 or imgs.shape[-1] not in (1, 3, 4):
            raise ValueError(f"images must be (N, H, W) or (N, H, W, C) with C in 1, 3, 4; got {imgs.shape}")
        imgs = (np.clip(imgs[:max_outputs], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        tf = self._tf
        encoded = [tf.io.encode_png(tf.constant(im)) for im in imgs]
        h, w = imgs.shape[1:3]
        tensor = tf.stack([tf.constant(str(w)), tf.constant(str(h))] + encoded)
        with self._writer.as_default():
            tf.summary.write(tag, tensor, step=int(step),
                             metadata=_metadata("images", "DATA_CLASS_BLOB_SEQUENCE", description))

    def relevance_histograms(self, per_layer: Mapping[str, Any], step: int, prefix: str = "relevance") -> None:
        """One histogram per layer, ``{layer name: relevance}`` as ``Explainer(..., layerwise=True)``
        returns it; tags are ``prefix/layer name``."""
        for name, values in per_layer.items():
            self.histogram(f"{prefix}/{name}", values, step)

    def heatmaps(self, tag: str, R: np.ndarray, x: np.ndarray | None, step: int, cmap: str = "bwr",
                 max_outputs: int = 16, scale: int = 3, tokens: Sequence[Sequence[Any]] | None = None) -> None:
        """Pictures of relevance ``R`` by its shape: images ``(N, H, W, C)`` as heatmaps (with ``x``, drawn
        over the inputs); sequences ``(N, T, C)`` as :meth:`sequence_strips`; token relevance ``(N, T)``
        with ``tokens`` as :meth:`token_pictures`."""
        from . import render

        R = np.asarray(R)
        if tokens is not None:
            if R.ndim != 2:
                raise ValueError(f"heatmaps with tokens takes token relevance (N, T), got shape {R.shape}")
            self.token_pictures(tag, tokens, R, step, cmap=cmap, max_outputs=max_outputs)
            return
        if R.ndim == 3:
            self.sequence_strips(tag, R, x, step, cmap=cmap, max_outputs=max_outputs)
            return
        if R.ndim == 2:
            raise ValueError(f"heatmaps: relevance of shape {R.shape} is one value per token or feature; give the "
                             f"token strings (tokens=) for token pictures, or reshape a single-channel series to "
                             f"(N, T, 1)")
        rgb = render.relevance_to_rgb(R, cmap) if x is None else render.overlay(R, x, cmap)
        self.images(tag, render.enlarge(rgb[:max_outputs], scale), step, max_outputs)

    def sequence_strips(self, tag: str, R: np.ndarray, x: np.ndarray | None, step: int,
                        channel_names: Sequence[str] | None = None, cmap: str = "bwr",
                        normalization: str = "maxabs", max_outputs: int = 16, dpi: int = 100) -> None:
        """Relevance of multivariate time series ``(N, T, C)`` (``(N, T)``: one channel): one picture per
        sample, the CLI's ``NAME_strip.png`` (:func:`~.render.sequence_strip`: a heatmap row per channel
        over time, the input ``x`` as lines above it when given)."""
        from . import render

        R = np.asarray(R, dtype=np.float64)
        if R.ndim == 2:
            R = R[..., None]
        if R.ndim != 3:
            raise ValueError(f"sequence_strips takes relevance of shape (N, T, C), got {R.shape}")
        if x is not None:
            x = np.asarray(x, dtype=np.float64).reshape(R.shape[0], R.shape[1], -1)
            if x.shape != R.shape:
                raise ValueError(f"sequence_strips: x has shape {x.shape}, the relevance {R.shape}")
        pictures = [_figure_rgb(render.sequence_strip(R[i], None if x is None else x[i], channel_names,
                                                      title=f"sample {i}", cmap=cmap, normalization=normalization,
                                                      dpi=dpi), dpi)
                    for i in range(min(len(R), max_outputs))]
        self.images(tag, _pad_white(pictures), step, max_outputs)

    def token_pictures(self, tag: str, tokens: Sequence[Sequence[Any]], R: np.ndarray, step: int,
                       mask: np.ndarray | None = None, cmap: str = "bwr", max_outputs: int = 16,
                       width_inches: float = 8.0, dpi: int = 100) -> None:
        """Relevance of tokens ``(N, T)`` with their strings (``N`` sequences of ``T`` tokens): one picture
        per sentence, each token in a box of its colour (:func:`~.render_text.save_png`); ``mask``
        ``(N, T)`` hides padding."""
        from . import render_text

        R = np.asarray(R, dtype=np.float64)
        if R.ndim != 2:
            raise ValueError(f"token_pictures takes token relevance of shape (N, T), got {R.shape}")
        if len(tokens) != len(R):
            raise ValueError(f"token_pictures: {len(tokens)} token sequences for {len(R)} relevance rows")
        pictures = []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(min(len(R), max_outputs)):
                path = os.path.join(tmp, f"{i}.png")
                sentence = (tokens[i], R[i], f"sample {i}") + (() if mask is None else (np.asarray(mask)[i],))
                render_text.save_png(path, [sentence], cmap=cmap, width_inches=width_inches, dpi=dpi)
                with open(path, "rb") as f:
                    pictures.append(self._tf.io.decode_png(f.read(), channels=3).numpy() / 255.0)
        self.images(tag, _pad_white(pictures), step, max_outputs)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()

    def __enter__(self) -> "SummaryWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _figure_rgb(fig: Any, dpi: int) -> np.ndarray:
    """A matplotlib figure (Agg canvas) as an RGB array in [0, 1], drawn at ``dpi``."""
    fig.set_dpi(dpi)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba(), dtype=np.float64)[..., :3] / 255.0


def _pad_white(pictures: Sequence[np.ndarray]) -> np.ndarray:
    """Pictures of different sizes as one batch ``(N, H, W, 3)``: padded with white at the bottom and
    right to the largest height and width."""
    h = max(p.shape[0] for p in pictures)
    w = max(p.shape[1] for p in pictures)
    out = np.ones((len(pictures), h, w, 3), np.float64)
    for k, p in enumerate(pictures):
        out[k, :p.shape[0], :p.shape[1]] = p[..., :3]
    return out


def _writer(value: Any, name: str) -> tuple["SummaryWriter", bool]:
    """``(writer, owned)``: a SummaryWriter as given, or a new one for a log folder path (owned)."""
    if isinstance(value, SummaryWriter):
        return value, False
    if isinstance(value, (str, os.PathLike)) and os.fspath(value):
        return SummaryWriter(os.fspath(value)), True
    raise TypeError(f"EpochSummaries: {name} must be a SummaryWriter or a log folder path (str), got "
                    f"{type(value).__name__} {value!r}"[:300])


class EpochSummaries(keras.callbacks.Callback):
    """Keras callback: every epoch's logs (``loss``, ``accuracy``, ``val_*``) as scalars.

    Args:
        writer: a :class:`SummaryWriter`, or a log folder path (a writer is created there, and closed
            when training ends).
        val_writer: the same for ``val_``-prefixed values, written under the name without the prefix
            (optional; without it they go to ``writer`` as they are).

    Raises:
        TypeError: at once, for an argument that is neither a SummaryWriter nor a path.
    """

    def __init__(self, writer: "SummaryWriter | str | os.PathLike[str]",
                 val_writer: "SummaryWriter | str | os.PathLike[str] | None" = None):
        super().__init__()
        self.writer, own = _writer(writer, "writer")
        self._owned = [self.writer] if own else []
        self.val_writer = None
        if val_writer is not None:
            self.val_writer, own = _writer(val_writer, "val_writer")
            if own:
                self._owned.append(self.val_writer)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        for key, value in (logs or {}).items():
            if key.startswith("val_") and self.val_writer is not None:
                self.val_writer.scalar(key[4:], value, epoch)
            else:
                self.writer.scalar(key, value, epoch)
        self.writer.flush()
        if self.val_writer is not None:
            self.val_writer.flush()

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        for w in self._owned:  # writers given by the caller stay open: the caller closes them
            w.flush()


def read_events(logdir: str) -> dict[str, list[tuple[int, Any]]]:
    """Read the event files under ``logdir`` (recursively) back: ``{tag: [(step, value), ...]}``.

    Scalars are floats, histograms ``(bins, 3)`` arrays, images lists of PNG bytes. Tags of
    subfolders are prefixed with the subfolder (``'train/loss'``).
    """
    tf = _tensorflow("TensorBoard event files")
    from tensorflow.core.util import event_pb2

    out: dict[str, list[tuple[int, Any]]] = {}
    files = sorted(glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True))
    for path in files:
        sub = os.path.relpath(os.path.dirname(path), logdir)
        prefix = "" if sub == "." else sub.replace(os.sep, "/") + "/"
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for v in event.summary.value:
                t = tf.make_ndarray(v.tensor) if v.HasField("tensor") else np.asarray(v.simple_value)
                plugin = v.metadata.plugin_data.plugin_name
                if plugin == "images":
                    value: Any = [bytes(b) for b in t[2:]]
                elif t.ndim == 0:
                    value = float(t)
                else:
                    value = t
                out.setdefault(prefix + v.tag, []).append((int(event.step), value))
    return out
