"""The graph walk: a Keras model (Sequential, Functional, nested) as a flat list of steps.

:func:`build_graph` flattens a model into :class:`Step` objects in topological order, each with the
handler that knows the layer's linear map or routing, and the keys of the tensors it reads and
writes. Nested models are inlined. :func:`forward` runs the steps and records what relevance needs;
:func:`backward` walks them in reverse, summing the relevance that reaches a tensor from all of its
consumers (skip connections, shared inputs).

One module per idea, each importing only the ones before it: :mod:`.model` (:class:`Step`,
:class:`Graph`, keys), :mod:`.canonical` (:func:`fuse_batchnorm`), :mod:`.statistics` (:func:`mark_statistics`: normalisations recognised by what they compute), :mod:`.analyses` (the static
analyses: :func:`mark_carried`, :func:`mark_nonneg`, :func:`mark_gates`, :func:`relu_denominator_steps`,
:func:`positive_output_steps`), :mod:`.checkpoint` (:func:`plan_segments`: checkpointed segments), :mod:`.trace` (:func:`build_graph`, :func:`register_chain`,
:func:`concrete_specs`) and :mod:`.interpret` (:func:`explained_output`, :func:`forward`,
:func:`backward`).
"""

from __future__ import annotations

from .analyses import mark_carried, mark_gates, mark_nonneg, positive_output_steps, relu_denominator_steps
from .canonical import fuse_batchnorm
from .checkpoint import plan_segments
from .interpret import backward, explained_output, forward, start_at_position
from .model import Graph, Key, Step
from .statistics import mark_statistics
from .trace import build_graph, concrete_specs, register_chain

__all__ = ["Key", "Step", "Graph", "build_graph", "register_chain", "concrete_specs", "fuse_batchnorm",
           "mark_statistics", "mark_carried", "mark_nonneg", "mark_gates", "relu_denominator_steps", "positive_output_steps",
           "explained_output", "forward", "backward", "start_at_position", "plan_segments"]
