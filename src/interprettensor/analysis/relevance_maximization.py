"""Reference examples of concepts over a data set ("relevance maximisation", CRP).

Achtibat et al. 2023 (Nature Machine Intelligence 5, sec. "Relevance maximization"): a channel of a
hidden layer is shown by the data set's samples for which it is most *relevant* (its relevance
``R_c`` for the explained output), next to the classic *activation maximisation* (its largest
activation), each with the region of the input that drives the channel and the channel's conditional
heatmap there.

:func:`reference_examples` streams a data set (arrays, files, ``tf.data``, or an
:func:`~interprettensor.explain_dataset` run written with ``store_inputs=True``) in shards: each shard
``stats-00000.npz`` holds every sample's channel relevances and largest activations (one compiled
pass per batch, no input heatmaps), is written atomically and skipped when a run is resumed. The
top ``k`` per channel are then merged shard by shard (memory independent of the data set's size),
and only the winners get their conditional heatmaps (one batched pass per sample over its
channels). The result, ``layer-<name>.npz`` and ``concepts.json`` (format in the module
:class:`ConceptRun`), is read back without recomputation by :class:`ConceptRun`.

The crop: the bounding box of the pixels where the channel's conditional heatmap (summed over colour
channels) reaches ``crop_threshold`` times its largest absolute value, as CRP crops its reference
images; the input and the heatmap are cut to it and resized to ``crop_size`` squared.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf

from ..engine.conditions import ConditionalExplainer
from ..engine.errors import ExplainError
from ..io.inputs import InputError, model_input_shape
from ..io.shards import StreamError, run_shard_files, shard_error, write_json, write_npz
from ..io.sources import Source, make_source

__all__ = ["reference_examples", "ConceptRun", "safe_name", "MODES"]

FORMAT = 1
MODES = ("relevance", "activation")
_STATS_RE = re.compile(r"^stats-(\d{5,})\.npz$")


def safe_name(layer: str) -> str:
    """A layer name as a file name: characters other than ``[A-Za-z0-9_.-]`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", layer)


def _stats_path(out: str, k: int) -> str:
    return os.path.join(out, f"stats-{k:05d}.npz")


# ---------------------------------------------------------------------------------------------- input
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

    def dataset(self, ranges, dtype):
        wanted = sorted(i for lo, hi in ranges for i in range(lo, self.n if hi is None else min(hi, self.n)))

        def gen():
            start = 0
            want = iter(wanted)
            nxt = next(want, None)
            for f, c in zip(self.files, self.counts):
                if nxt is None:
                    return
                if nxt >= start + c:
                    start += c
                    continue
                try:
                    with _open_shard(f) as z:
                        xs, ts = _read(z, "inputs", f), _read(z, "targets", f)
                except StreamError as e:  # reported by _samples after the batches read before
                    self.error.append(e)
                    return
                while nxt is not None and nxt < start + c:
                    yield nxt, xs[nxt - start], ts[nxt - start]
                    nxt = next(want, None)
                start += c

        spec = (tf.TensorSpec((), tf.int64), tf.TensorSpec(self.sample_shape, tf.float32),
                tf.TensorSpec((), tf.int32))
        return tf.data.Dataset.from_generator(gen, output_signature=spec).map(
            lambda i, x, t: (i, tf.cast(x, dtype), t))


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


def _samples(source: Source, ranges: list, dtype: tf.DType, batch_size: int) -> Iterator[tuple]:
    """Batches ``(indices, x, targets)`` of the samples in ``ranges``."""
    ds = source.dataset(ranges, dtype).map(lambda *e: (e[0], e[1], e[2])).batch(batch_size)
    for i, x, t in ds:
        yield i.numpy().astype(np.int64), x, t.numpy().astype(np.int32)
    if getattr(source, "error", None):
        raise source.error[0]


# ---------------------------------------------------------------------------------------------- top k
def _top_k(best_v: np.ndarray, best_i: np.ndarray, values: np.ndarray, indices: np.ndarray,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    v = np.concatenate([best_v, values.T.astype(np.float64)], axis=1)
    i = np.concatenate([best_i, np.broadcast_to(indices[None, :], (values.shape[1], len(indices)))], axis=1)
    order = np.lexsort((i, -v), axis=-1)[:, :k]  # per channel: largest value first, ties to the lower index
    return np.take_along_axis(v, order, 1), np.take_along_axis(i, order, 1)


# ---------------------------------------------------------------------------------------------- crops
def crop_box(heatmap: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """``[top, left, bottom, right)`` of the pixels where ``|heatmap|`` (summed over a trailing colour
    axis) reaches ``threshold`` times its maximum; the whole image where the heatmap is zero."""
    h = heatmap.sum(-1) if heatmap.ndim == 3 else heatmap
    a = np.abs(h)
    peak = float(a.max()) if a.size else 0.0
    if peak <= 0.0 or not np.isfinite(peak):
        return 0, 0, h.shape[0], h.shape[1]
    rows, cols = np.nonzero(a >= threshold * peak)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    """``(h, w, c)`` -> ``(size, size, c)`` (bilinear, area-averaging when shrinking)."""
    t = tf.convert_to_tensor(a[None].astype(np.float32))
    return tf.image.resize(t, (size, size), method="area" if min(a.shape[:2]) >= size else "bilinear",
                           antialias=True)[0].numpy()


def _to_uint8(x: np.ndarray, input_range: Sequence[float]) -> np.ndarray:
    lo, hi = float(input_range[0]), float(input_range[1])
    return np.clip(np.round((x - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- the run
def reference_examples(model: Any, data: Any, layers: str | Sequence[str], out: str = "concepts", *,
                       rule: Any = "epsilon", k: int = 8, target: Any = None, shard_size: int = 1024,
                       batch_size: int = 32, crop_size: int = 64, crop_threshold: float = 0.1,
                       input_range: Sequence[float] = (0.0, 1.0), color_mode: str = "auto", resize: bool = False,
                       channels: Mapping[str, Sequence[int]] | None = None, units: bool = False,
                       resume: bool = True, progress: bool = True, **params: Any) -> "ConceptRun":
    """The top ``k`` reference samples of every channel of ``layers`` over ``data``, by relevance and
    by activation, with crops and conditional heatmaps; written to ``out`` (see the module docstring)
    and returned as a :class:`ConceptRun`.

    Args:
        model: a Keras model (single input).
        data: as for :func:`~interprettensor.explain_dataset` (arrays, ``(x, labels)``, files, a folder,
            ``tf.data``), or an ``explain_dataset`` run directory written with ``store_inputs=True``.
        layers: the hidden layers whose channels are the concepts.
        rule: rule or preset (``**params``: its parameters and :class:`~interprettensor.Explainer` options).
        k: reference samples per channel and mode.
        target: the explained class, as for ``explain_dataset`` (default: the label where the data
            has labels, else the predicted class).
        shard_size: samples per statistics shard (the unit of resuming).
        crop_size: side of the stored crops, in pixels.
        crop_threshold: the crop is the box where the conditional heatmap reaches this fraction of its
            largest absolute value.
        input_range: the inputs' value range (for the stored ``uint8`` crops and for box rules).
        channels: ``{layer: channels}``: draw the crops and heatmaps of these channels only (every
            channel's ranking is still computed and stored; ``referenced`` in ``layer-<name>.npz``
            says which have pictures). The pictures cost one backward pass per channel, reference and
            mode: for all 512 channels of a large layer that is most of the time. Default: all.
        units: accept layers whose output has no channel axis, ``(N, F)`` (Dense, Flatten), each of
            the ``F`` units a concept; without it such a layer is refused, as its entries are not the
            channels of a feature map (a Flatten's are positions times channels).
        resume: continue a run found in ``out`` (same model, rule, layers and data); ``False``: start over.
    """
    layers = [layers] if isinstance(layers, str) else list(layers)
    for name, value, lo in (("k", k, 1), ("shard_size", shard_size, 1), ("batch_size", batch_size, 1),
                            ("crop_size", crop_size, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise ExplainError(f"{name} must be an integer >= {lo}, got {value!r}")
    if not 0.0 <= float(crop_threshold) < 1.0:
        raise ExplainError(f"crop_threshold must be in [0, 1), got {crop_threshold!r}")
    cx = ConditionalExplainer(model, rule, layers=layers, **params)
    flat = [s for s in cx.sites if s.rank == 2]
    if flat and not units:
        s = flat[0]
        raise ExplainError(f"layer {s.name!r} has output shape (None, {s.channels}): no channel axis. Concepts are the "
                           f"channels of a feature map (N, ..., C), e.g. a convolution's output; pass units=True "
                           f"(--units) to take each of its {s.channels} units as a concept")
    selected = _selected_channels(cx, channels)
    source = _open(model, data, target, input_range, color_mode, resize)
    os.makedirs(out, exist_ok=True)
    identity = _identity(model, cx, rule, params, source, layers, k, shard_size, crop_size, crop_threshold)
    if channels is not None:
        identity["channels"] = {name: sorted(int(c) for c in np.flatnonzero(sel)) for name, sel in selected.items()}
    if _check_resume(out, identity, resume):
        return ConceptRun(out)  # finished before, with the same arguments
    meta = {"format": FORMAT, "kind": "concepts", "model": getattr(model, "name", type(model).__name__),
            "rule": rule if isinstance(rule, str) else repr(rule), "params": {k_: repr(v) for k_, v in params.items()},
            "n_samples": None, "k": int(k), "input_shape": list(source.sample_shape), "complete": False,
            "layers": {s.name: {"channels": s.channels, "file": f"layer-{safe_name(s.name)}.npz",
                                "kind": "units" if s.rank == 2 else "channels"}
                       for s in sorted(cx.sites, key=lambda s: s.index)},
            "identity": identity}
    write_json(os.path.join(out, "concepts.json"), meta)
    n = _statistics(cx, source, out, shard_size, batch_size, progress)
    meta["n_samples"] = n
    top = _merge(cx, out, n, shard_size, k)
    _references(cx, source, out, top, n, k, batch_size, crop_size, crop_threshold, input_range, progress, selected)
    meta["complete"] = True
    write_json(os.path.join(out, "concepts.json"), meta)
    return ConceptRun(out)


def _selected_channels(cx: ConditionalExplainer, channels: Mapping[str, Sequence[int]] | None) -> dict:
    """``{layer: (channels,) bool}``: which channels get crops and heatmaps."""
    out = {s.name: np.ones(s.channels, bool) for s in cx.sites}
    if channels is None:
        return out
    if not isinstance(channels, Mapping):
        raise ExplainError(f"channels must be a dict {{layer: [channels]}}, got {type(channels).__name__}")
    for name, chans in channels.items():
        site = cx._by_name.get(name)
        if site is None:
            raise ExplainError(f"channels names layer {name!r}, which is not among layers {[s.name for s in cx.sites]}")
        ids = np.atleast_1d(np.asarray(list(chans) if not isinstance(chans, (int, np.integer)) else chans))
        if ids.dtype.kind not in "iu":
            raise ExplainError(f"channels of layer {site.name!r} must be integers, got {list(ids.tolist())[:10]}")
        bad = ids[(ids < 0) | (ids >= site.channels)]
        if bad.size:
            raise ExplainError(f"channels of layer {site.name!r} must be integers in 0..{site.channels - 1}, got "
                               f"{', '.join(map(str, bad[:5].tolist()))}{' ...' if bad.size > 5 else ''}")
        out[site.name] = np.zeros(site.channels, bool)
        out[site.name][ids] = True
    return out


def _identity(model: Any, cx: ConditionalExplainer, rule: Any, params: dict, source: Source, layers: list,
              k: int, shard_size: int, crop_size: int, crop_threshold: float) -> dict:
    from ..io.dataset_run import _model_fingerprint

    return {"model": _model_fingerprint(model), "rule": f"{rule!r} {json.dumps(params, sort_keys=True, default=repr)}",
            "layers": [s.name for s in cx.sites], "data": source.description, "shard_size": int(shard_size),
            "k": int(k), "crop": [int(crop_size), float(crop_threshold)]}


def _check_resume(out: str, identity: dict, resume: bool) -> bool:
    """Whether ``out`` holds this very run, finished; an error if it holds another one."""
    path = os.path.join(out, "concepts.json")
    stats = glob.glob(os.path.join(out, "stats-*.npz"))
    if not resume:
        for f in stats + glob.glob(os.path.join(out, "layer-*.npz")):
            os.remove(f)
        return False
    if not os.path.exists(path):
        if stats:
            raise StreamError(f"{out} holds stats-*.npz files but no concepts.json: not a concepts run; use an "
                              f"empty folder or resume=False")
        return False
    try:
        with open(path) as f:
            meta = json.load(f)
        old = meta.get("identity")
    except (OSError, ValueError) as e:
        raise StreamError(f"{path}: unreadable ({e}); use resume=False to start over") from None
    if old != identity:
        diff = sorted(key for key in set(old or {}) | set(identity) if (old or {}).get(key) != identity.get(key))
        raise StreamError(f"{out} holds a concepts run of another {', '.join(diff)}; use another folder or "
                          f"resume=False (--restart) to start over")
    return bool(meta.get("complete")) and all(os.path.exists(os.path.join(out, v["file"]))
                                              for v in meta.get("layers", {}).values())


def _statistics(cx: ConditionalExplainer, source: Source, out: str, shard_size: int, batch_size: int,
                progress: bool) -> int:
    """Write ``stats-K.npz`` for every shard not finished yet; returns the number of samples."""
    from tqdm.auto import tqdm

    names = [s.name for s in cx.sites]
    bar = tqdm(total=source.n, desc="concepts: channel statistics", unit="sample", disable=not progress)
    n_total = 0
    shard = 0
    while True:
        lo = shard * shard_size
        if source.n is not None and lo >= source.n:
            break
        path = _stats_path(out, shard)
        done = _finished(path, lo, shard_size, source.n)
        if done is not None:
            n_total += done
            bar.update(done)
            shard += 1
            if done < shard_size:
                break
            continue
        arrays: dict[str, list] = {"indices": [], "targets": []}
        for name in names:
            arrays[f"relevance/{name}"], arrays[f"activation/{name}"] = [], []
        for idx, x, t in _samples(source, [(lo, lo + shard_size)], cx.dtype, batch_size):
            rel, act, outp = cx.channel_statistics(x, t, return_output=True)
            explained = np.where(t < 0, np.argmax(outp.reshape(len(t), -1), axis=1), t)
            arrays["indices"].append(idx)
            arrays["targets"].append(explained.astype(np.int64))
            for name in names:
                arrays[f"relevance/{name}"].append(rel[name].astype(np.float32))
                arrays[f"activation/{name}"].append(act[name].astype(np.float32))
            bar.update(len(idx))
        count = sum(len(i) for i in arrays["indices"])
        if count == 0:
            break
        write_npz(path, {k: np.concatenate(v) for k, v in arrays.items()})
        n_total += count
        shard += 1
        if count < shard_size:
            break
    bar.close()
    if n_total == 0:
        raise StreamError("the data set is empty: no reference examples to find")
    return n_total


def _finished(path: str, lo: int, shard_size: int, n: int | None) -> int | None:
    """The number of samples in a finished statistics shard, ``None`` if it is missing or incomplete."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path) as z:
            idx = z["indices"]
    except Exception:  # noqa: BLE001 - missing, truncated (BadZipFile) or foreign: not finished, recomputed
        return None
    want = shard_size if n is None else min(shard_size, n - lo)
    if len(idx) == 0 or idx[0] != lo or not np.array_equal(idx, np.arange(lo, lo + len(idx))):
        return None
    if n is not None and len(idx) != want:
        return None
    return int(len(idx))


def _merge(cx: ConditionalExplainer, out: str, n: int, shard_size: int, k: int) -> dict:
    """Top ``k`` per channel and mode, merged shard by shard: ``{layer: {mode: (values, indices),
    'mean': mean relevance}}``."""
    top: dict = {}
    for s in cx.sites:
        top[s.name] = {m: (np.zeros((s.channels, 0)), np.zeros((s.channels, 0), np.int64)) for m in MODES}
        top[s.name]["sum"] = np.zeros(s.channels, np.float64)
    for shard in range(0, (n + shard_size - 1) // shard_size):
        with np.load(_stats_path(out, shard)) as z:
            idx = z["indices"]
            for s in cx.sites:
                for m in MODES:
                    v, i = top[s.name][m]
                    top[s.name][m] = _top_k(v, i, z[f"{m}/{s.name}"], idx, k)
                top[s.name]["sum"] += z[f"relevance/{s.name}"].astype(np.float64).sum(0)
    return top


def _references(cx: ConditionalExplainer, source: Source, out: str, top: dict, n: int, k: int, batch_size: int,
                crop_size: int, crop_threshold: float, input_range: Sequence[float], progress: bool,
                selected: dict) -> None:
    """Conditional heatmaps, boxes and crops of every reference sample (of the ``selected`` channels);
    ``layer-<name>.npz``."""
    from tqdm.auto import tqdm

    # per sample: the (layer, mode, channel, rank) slots it fills
    slots: dict[int, list] = {}
    for name, modes in top.items():
        for m in MODES:
            _, ids = modes[m]
            for c in np.flatnonzero(selected[name]):
                c = int(c)
                for r in range(ids.shape[1]):
                    slots.setdefault(int(ids[c, r]), []).append((name, m, c, r))
    shape = tuple(source.sample_shape)
    image = len(shape) == 3 and shape[-1] in (1, 3)
    colours = shape[-1] if image else 1
    arrays: dict = {}
    for s in cx.sites:
        for m in MODES:
            arrays[(s.name, m, "boxes")] = np.zeros((s.channels, k, 4), np.int64)
            arrays[(s.name, m, "crops")] = np.zeros((s.channels, k, crop_size, crop_size, colours), np.uint8)
            arrays[(s.name, m, "heatmaps")] = np.zeros((s.channels, k, crop_size, crop_size), np.float16)
    ranges = [(i, i + 1) for i in sorted(slots)]
    bar = tqdm(total=len(slots), desc="concepts: reference heatmaps", unit="sample", disable=not progress)
    for idx, x, t in _samples(source, ranges, cx.dtype, batch_size):
        for j, i in enumerate(idx):
            xi = x[j:j + 1]
            explained = _explained_target(out, int(i), t[j])
            for m in MODES:
                wanted = [sl for sl in slots[int(i)] if sl[1] == m]
                for name in dict.fromkeys(sl[0] for sl in wanted):
                    mine = [sl for sl in wanted if sl[0] == name]
                    conds = [{name: sl[2]} for sl in mine]
                    H = cx.conditional(xi, conds, explained, start="output" if m == "relevance" else "activation",
                                       condition_batch_size=64)[0]  # (K, *shape)
                    for (lname, mode, c, r), h in zip(mine, H):
                        _store(arrays, lname, mode, c, r, h, xi[0].numpy(), image, crop_size, crop_threshold,
                               input_range)
            bar.update(1)
    bar.close()
    for s in cx.sites:
        data = {}
        for m in MODES:
            v, ids = top[s.name][m]
            pad = k - ids.shape[1]
            data[f"{m}_indices"] = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1).astype(np.int64)
            data[f"{m}_values"] = np.pad(v, ((0, 0), (0, pad))).astype(np.float32)
            for part in ("boxes", "crops", "heatmaps"):
                data[f"{m}_{part}"] = arrays[(s.name, m, part)]
        data["mean_relevance"] = (top[s.name]["sum"] / max(n, 1)).astype(np.float32)
        data["referenced"] = selected[s.name]
        write_npz(os.path.join(out, f"layer-{safe_name(s.name)}.npz"), data)


def _explained_target(out: str, i: int, t: np.int32) -> int:
    """The class sample ``i`` was explained for in the statistics pass (the predicted one there)."""
    if t >= 0:
        return int(t)
    cache = _explained_target.__dict__.setdefault("cache", {})
    key = (out, os.path.getmtime(os.path.join(out, "concepts.json")))
    if key not in cache:
        targets = {}
        for f in sorted(glob.glob(os.path.join(out, "stats-*.npz"))):
            with np.load(f) as z:
                targets.update(zip(z["indices"].tolist(), z["targets"].tolist()))
        cache.clear()
        cache[key] = targets
    return int(cache[key][i])


def _store(arrays: dict, layer: str, mode: str, c: int, r: int, h: np.ndarray, x: np.ndarray, image: bool,
           size: int, threshold: float, input_range: Sequence[float]) -> None:
    if not image:  # not an image: the box is the whole input, no crop is drawn
        arrays[(layer, mode, "boxes")][c, r] = (0, 0, x.shape[0], x.shape[1] if x.ndim > 1 else 1)
        return
    top, left, bottom, right = crop_box(h, threshold)
    arrays[(layer, mode, "boxes")][c, r] = (top, left, bottom, right)
    arrays[(layer, mode, "crops")][c, r] = _to_uint8(_resize(x[top:bottom, left:right], size), input_range)
    heat = h.sum(-1, keepdims=True)[top:bottom, left:right]
    arrays[(layer, mode, "heatmaps")][c, r] = _resize(heat, size)[..., 0].astype(np.float16)


# ---------------------------------------------------------------------------------------------- reading
class ConceptRun:
    """A finished :func:`reference_examples` run, read from disk without recomputation.

    Example::

        run = ConceptRun("concepts")
        ref = run.references("block4_conv3", 7, mode="relevance")
        ref["indices"], ref["values"], ref["crops"], ref["heatmaps"], ref["boxes"]
    """

    def __init__(self, path: str):
        meta_path = os.path.join(path, "concepts.json")
        try:
            with open(meta_path) as f:
                self.meta = json.load(f)
        except FileNotFoundError:
            raise StreamError(f"{path}: no concepts.json: not a concepts run") from None
        except ValueError as e:
            raise StreamError(f"{meta_path}: not valid JSON ({e})") from None
        if self.meta.get("kind") != "concepts":
            raise StreamError(f"{meta_path}: not a concepts run (kind {self.meta.get('kind')!r})")
        if not self.meta.get("complete"):
            raise StreamError(f"{path}: the concepts run is not finished; run it again with the same arguments "
                              f"to continue")
        self.path = path
        self._cache: dict = {}

    @property
    def layers(self) -> dict[str, int]:
        """``{layer name: number of channels}``."""
        return {name: int(v["channels"]) for name, v in self.meta["layers"].items()}

    @property
    def kinds(self) -> dict[str, str]:
        """``{layer name: 'channels' or 'units'}``: what the concepts of each layer are (``'units'``: the
        entries of an output without a channel axis, ``(N, F)``)."""
        return {name: v.get("kind", "channels") for name, v in self.meta["layers"].items()}

    def _layer(self, layer: str) -> Any:
        if layer not in self.meta["layers"]:
            raise StreamError(f"the concepts run has no layer {layer!r}; it has {list(self.meta['layers'])}")
        if layer not in self._cache:
            self._cache[layer] = np.load(os.path.join(self.path, self.meta["layers"][layer]["file"]))
        return self._cache[layer]

    def references(self, layer: str, channel: int, mode: str = "relevance") -> dict[str, np.ndarray]:
        """The reference samples of ``channel``: ``indices`` and ``values`` (``k``; index -1 where the
        data set had fewer samples), ``boxes`` ``(k, 4)``, ``crops`` ``(k, S, S, colours)`` uint8 and
        ``heatmaps`` ``(k, S, S)``, and ``referenced``: whether the run drew its crops and heatmaps
        (see ``channels=`` of :func:`reference_examples`; zeros otherwise)."""
        if mode not in MODES:
            raise StreamError(f"mode must be one of {MODES}, got {mode!r}")
        z = self._layer(layer)
        channels = self.layers[layer]
        if not 0 <= int(channel) < channels:
            raise StreamError(f"layer {layer!r} has {channels} channels (0..{channels - 1}), got {channel}")
        out = {part: z[f"{mode}_{part}"][int(channel)] for part in ("indices", "values", "boxes", "crops", "heatmaps")}
        out["referenced"] = bool(z["referenced"][int(channel)]) if "referenced" in z.files else True
        return out

    def mean_relevance(self, layer: str) -> np.ndarray:
        """Each channel's mean relevance over the data set."""
        return self._layer(layer)["mean_relevance"]

    def statistics(self, layer: str) -> dict[str, np.ndarray]:
        """Every sample's channel relevances and largest activations ``(N, channels)``, with ``indices``
        and ``targets`` (read from the statistics shards)."""
        if layer not in self.meta["layers"]:
            raise StreamError(f"the concepts run has no layer {layer!r}; it has {list(self.meta['layers'])}")
        parts: dict[str, list] = {"indices": [], "targets": [], "relevance": [], "activation": []}
        for f in sorted(glob.glob(os.path.join(self.path, "stats-*.npz"))):
            if not _STATS_RE.match(os.path.basename(f)):
                continue
            with np.load(f) as z:
                parts["indices"].append(z["indices"])
                parts["targets"].append(z["targets"])
                parts["relevance"].append(z[f"relevance/{layer}"])
                parts["activation"].append(z[f"activation/{layer}"])
        return {key: np.concatenate(v) for key, v in parts.items()}
