"""The run of relevance maximisation, :func:`reference_examples`: the arguments checked (the layers, the
channels that get pictures: :func:`_selected_channels`), the run's identity and resuming it
(:func:`_identity`, :func:`_check_resume`), then the statistics pass, the top ``k`` merge and the
reference pictures, with ``concepts.json`` written before and after."""

from __future__ import annotations

import glob
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from ...engine.conditions import ConditionalExplainer
from ...engine.errors import ExplainError
from ...io.shards import StreamError, write_json
from ...io.sources import Source
from .inputs import _open
from .references import _references
from .statistics import _merge, _statistics
from .storage import FORMAT, ConceptRun, safe_name


def reference_examples(model: Any, data: Any, layers: str | Sequence[str], out: str = "concepts", *,
                       rule: Any = "epsilon", k: int = 8, target: Any = None, shard_size: int = 1024,
                       batch_size: int = 32, crop_size: int = 64, crop_threshold: float = 0.1,
                       input_range: Sequence[float] = (0.0, 1.0), color_mode: str = "auto", resize: bool = False,
                       channels: Mapping[str, Sequence[int]] | None = None, units: bool = False,
                       resume: bool = True, progress: bool = True, **params: Any) -> "ConceptRun":
    """The top ``k`` reference samples of every channel of ``layers`` over ``data``, by relevance and
    by activation, with crops and conditional heatmaps; written to ``out`` (see the docstring of
    :mod:`interprettensor.analysis.relevance_maximization`) and returned as a :class:`ConceptRun`.

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
    from ...io.dataset_run.folder import _model_fingerprint

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
