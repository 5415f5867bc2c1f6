"""A concepts run on disk and reading it back: the file names (``concepts.json``, ``stats-K.npz``,
``layer-<name>.npz``: :func:`safe_name`), the two modes (:data:`MODES`: by relevance, by activation) and
:class:`ConceptRun`, a finished run read without recomputation."""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any

import numpy as np

from ...io.shards import StreamError

FORMAT = 1
MODES = ("relevance", "activation")
_STATS_RE = re.compile(r"^stats-(\d{5,})\.npz$")


def safe_name(layer: str) -> str:
    """A layer name as a file name: characters other than ``[A-Za-z0-9_.-]`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", layer)


def _stats_path(out: str, k: int) -> str:
    return os.path.join(out, f"stats-{k:05d}.npz")


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
