"""Concept Relevance Propagation (CRP): explain a prediction through the channels of hidden layers.

Achtibat et al. 2023, "From attribution maps to human-understandable explanations through Concept
Relevance Propagation", Nature Machine Intelligence 5. A hidden layer's channels are the concepts;
this module answers, for one prediction:

* :func:`relevance`: how much relevance each channel carries (``R_c = Σ_positions R``, eq. 5; the
  channels' relevances sum to the layer's);
* :func:`conditional`: where in the input each channel's relevance comes from: one heatmap
  ``R(x | θ)`` per condition ``θ = {layer: channels}`` (eq. 6-7), several layers at once, computed as
  one batched backward pass below the conditioned layer;
* :func:`attribution_graph`: which lower-layer channels a channel's relevance comes from.

The data set's most relevant examples of each channel ("relevance maximisation"):
:func:`reference_examples` and :class:`ConceptRun` (from
:mod:`interprettensor.analysis.relevance_maximization`).

Example::

    R_c = it.concepts.relevance(model, x, layer="block4_conv3")            # (N, 512)
    top = np.argsort(-R_c[0])[:8]
    H = it.concepts.conditional(model, x, layer="block4_conv3", channels=top)   # (N, 8, 224, 224, 3)
    g = it.concepts.attribution_graph(model, x[:1], "block4_conv3", int(top[0]),
                                      lower_layers=["block3_conv3", "block2_conv2"], top_n=3)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from ..engine.conditions import ConditionalExplainer
from ..engine.errors import ExplainError
from .relevance_maximization import ConceptRun, reference_examples

__all__ = ["relevance", "conditional", "attribution_graph", "AttributionGraph", "ConditionalExplainer",
           "reference_examples", "ConceptRun"]


def _explainer(model: Any, rule: Any, layers: Sequence[str], params: dict) -> ConditionalExplainer:
    if isinstance(model, ConditionalExplainer):
        missing = [name for name in layers if name not in model._by_name]
        if missing:
            raise ExplainError(f"the explainer was built for layers {[s.name for s in model.sites]}, not {missing}")
        return model
    return ConditionalExplainer(model, rule, layers=list(dict.fromkeys(layers)), **params)


def relevance(model: Any, x: Any, layer: str | Sequence[str], target: Any = None, rule: Any = "epsilon", *,
              batch_size: int | None = None, **params: Any) -> np.ndarray | dict[str, np.ndarray]:
    """The relevance of each channel of ``layer`` for the explained output: ``(N, channels)``, the
    layer's relevance summed over its other axes (a dict by layer name for several layers).

    ``model`` is a Keras model (or a :class:`~interprettensor.engine.conditions.ConditionalExplainer`
    to reuse its compiled passes); ``rule`` and ``**params`` as for :func:`interprettensor.lrp`.
    """
    layers = [layer] if isinstance(layer, str) else list(layer)
    cx = _explainer(model, rule, layers, params)
    rel, _ = cx.channel_statistics(x, target, batch_size=batch_size)
    by_given = {name: rel[cx._by_name[name].name] for name in layers}
    return by_given[layers[0]] if isinstance(layer, str) else by_given


def conditional(model: Any, x: Any, layer: str | None = None, channels: Sequence[Any] | None = None,
                target: Any = None, rule: Any = "epsilon", *, conditions: Sequence[Mapping[str, Any]] | None = None,
                batch_size: int | None = None, condition_batch_size: int | None = None,
                **params: Any) -> np.ndarray:
    """Conditional heatmaps ``R(x | θ)``: ``(N, K, *input shape)``, one per condition.

    Either ``layer`` and ``channels`` (one condition per entry: a channel, or a list of channels taken
    together), or ``conditions``: a list of ``{layer: channel(s)}`` dicts, each restricting the
    relevance at several layers at once (CRP's conditions over more than one layer). The heatmaps of
    all channels of a layer sum to the relevance that flows through the layer (the unconditional
    heatmap when every path from input to output passes it) for every rule, as the backward pass is
    linear in the relevance at the layer.
    """
    if conditions is None:
        if layer is None or channels is None:
            raise ExplainError("give layer= and channels=, or conditions=[{layer: channels}, ...]")
        conditions = [{layer: c} for c in (channels.tolist() if isinstance(channels, np.ndarray) else channels)]
    elif layer is not None or channels is not None:
        raise ExplainError("give either layer= and channels=, or conditions=, not both")
    if isinstance(conditions, Mapping):
        conditions = [conditions]
    if len(conditions) == 0:
        raise ExplainError("conditions is empty: give at least one {layer: channels} condition")
    layers = [name for cond in conditions for name in cond]
    cx = _explainer(model, rule, layers, params)
    return cx.conditional(x, conditions, target, batch_size=batch_size, condition_batch_size=condition_batch_size)


@dataclasses.dataclass
class AttributionGraph:
    """Where a channel's relevance comes from, for one sample.

    Each node is explained under the condition of its path from the root (``{root layer: c,
    ..., its layer: c'}``), so that relevance is accounted for once along every path.
    ``nodes``: ``{(layer, channel): relevance}`` (the root: its relevance for the explained output;
    the others: the relevance they receive from their parents, summed over the paths that reach them).
    ``edges``: ``[(parent, child, relevance)]`` with ``parent`` and ``child`` ``(layer, channel)``
    pairs: the child channel's relevance under the parent's path condition (summed over positions,
    and over the parent's paths). ``totals``: ``{parent: relevance}`` that reaches the next layer down
    from ``parent`` over all of that layer's channels (the edges shown are its ``top_n`` largest
    parts; with a conserving rule it equals the parent's relevance)."""

    root: tuple[str, int]
    layers: list[str]
    nodes: dict
    edges: list
    totals: dict

    def children(self, node: tuple[str, int]) -> list[tuple[tuple[str, int], float]]:
        """The children of ``node`` and their edge relevances, largest first."""
        return sorted(((c, r) for p, c, r in self.edges if p == node), key=lambda t: -t[1])


def attribution_graph(model: Any, x: Any, layer: str, channel: int, lower_layers: Sequence[str],
                      target: Any = None, rule: Any = "epsilon", *, top_n: int = 5, **params: Any) -> AttributionGraph:
    """The attribution graph of channel ``channel`` of ``layer`` for one sample ``x`` (a batch of one):
    for each layer of ``lower_layers`` (from the top down), the ``top_n`` channels that receive the
    most relevance from each node of the layer above (CRP, Achtibat et al. 2023, sec. "Attribution
    graphs"). The nodes of one layer are explained together, in one batched pass."""
    if isinstance(lower_layers, str):
        lower_layers = [lower_layers]
    if not lower_layers:
        raise ExplainError("lower_layers= needs at least one layer below the root's layer")
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise ExplainError(f"top_n must be a positive integer, got {top_n!r}")
    xs = x if isinstance(x, (list, tuple)) else [x]
    if int(np.shape(xs[0])[0]) != 1:
        raise ExplainError(f"attribution_graph explains one sample: x has {np.shape(xs[0])[0]} (pass x[:1])")
    cx = _explainer(model, rule, [layer] + list(lower_layers[:-1]), params)
    rel, _ = cx.channel_statistics(x, target)
    root_layer = cx._by_name[layer].name
    if not 0 <= int(channel) < rel[root_layer].shape[1]:
        raise ExplainError(f"layer {root_layer!r} has {rel[root_layer].shape[1]} channels, got channel {channel}")
    root = (root_layer, int(channel))
    nodes: dict = {root: float(rel[root_layer][0, int(channel)])}
    edge_sum: dict = {}
    totals: dict = {}
    # each node is explained under the condition of its path from the root: {root: c, ..., node: c'}
    frontier: list = [(root, {root_layer: int(channel)})]
    names = [root_layer]
    for below in lower_layers:
        stop = cx._site(below)
        if stop.index >= cx._by_name[frontier[0][0][0]].index:
            raise ExplainError(f"layer {stop.name!r} is not below layer {frontier[0][0][0]!r}: list lower_layers "
                               f"from the top down")
        R = cx.conditional(x, [path for _, path in frontier], target, layer=below)  # (1, K, ..., C)
        axes = tuple(i + 1 for i in range(1, stop.rank) if i != stop.axis)
        per_channel = R.sum(axis=axes)[0] if axes else R[0]  # (K, C)
        nxt: list = []
        for (parent, path), row in zip(frontier, per_channel):
            totals[parent] = totals.get(parent, 0.0) + float(row.sum())
            for c in np.argsort(-row, kind="stable")[:top_n]:
                child = (stop.name, int(c))
                edge_sum[(parent, child)] = edge_sum.get((parent, child), 0.0) + float(row[c])
                nodes[child] = nodes.get(child, 0.0) + float(row[c])
                nxt.append((child, {**path, stop.name: int(c)}))
        frontier = nxt
        names.append(stop.name)
    edges = [(p, c, r) for (p, c), r in edge_sum.items()]
    return AttributionGraph(root, names, nodes, edges, totals)
