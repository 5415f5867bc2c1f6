"""A concepts (CRP) run as the viewer shows it (:class:`ConceptsRun`): ``concepts.json`` and one
``layer-<name>.npz`` per layer (:func:`safe_layer_name`), read per layer and channel: the channels ranked,
and each channel's reference examples with their crops and conditional heatmaps."""

from __future__ import annotations

import os
import re

import numpy as np

from .files import CONCEPTS, RunError, _Members, _read_meta


def safe_layer_name(layer: str) -> str:
    """A layer's name as used in ``layer-<safe name>.npz``: characters other than ``[A-Za-z0-9_.-]``
    replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", layer)


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
