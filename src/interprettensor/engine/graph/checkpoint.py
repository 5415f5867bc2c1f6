"""Checkpointed passes: which segments of the step list drop their forward records after the forward
pass, to be recomputed from their saved inputs when the backward pass reaches them (gradient
checkpointing, Chen et al. 2016, "Training deep nets with sublinear memory cost"; LXT uses it for long
prompts).

A segment is a run of consecutive steps ``[lo, hi)``. The forward pass keeps, of a dropped segment,
only the values its steps read from outside it (its saved inputs: for a cut where one tensor carries
everything, the residual stream); the backward pass, on reaching the segment's last step with
relevance, runs the segment's steps again on those values (ordered after the relevance that reached
the segment, so that the recomputed records exist only while the segment is explained) and walks
them. The last segment is never dropped (its records are the backward pass's first need).

:func:`plan_segments` turns ``checkpoint=`` into segments: ``True`` (cuts about every ``sqrt(steps)``
steps), an int (cuts about every that many steps) or layer names (a cut after each named layer's
last step). Automatic cuts fall where the fewest tensors that carry relevance cross the cut (one, the
residual stream between a transformer's blocks, or the activation between a CNN's layers), so that
the saved inputs are few.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Sequence

from ..errors import ExplainError
from .model import Graph

__all__ = ["Segment", "Dropped", "plan_segments", "check_checkpoint"]


@dataclasses.dataclass(eq=False)
class Segment:
    """A dropped segment of one forward pass: its steps, the values they read from outside the segment
    (by key), and the keys its steps write."""

    steps: list
    saved: dict
    produced: frozenset


@dataclasses.dataclass(eq=False)
class Dropped:
    """The record of a step of a dropped :class:`Segment` (the ``offset``-th of its steps), in place of
    ``(inputs, outputs, state)`` until the backward pass recomputes it."""

    segment: Segment
    offset: int


def check_checkpoint(checkpoint: Any) -> Any:
    """``checkpoint=`` checked for its kind (layer names are checked against the graph by
    :func:`plan_segments`): ``None``/``False`` (off), ``True``, a positive int, or layer names."""
    if checkpoint is None or isinstance(checkpoint, bool):
        return checkpoint or None
    if isinstance(checkpoint, numbers.Integral):
        checkpoint = int(checkpoint)
        if checkpoint < 1:
            raise ExplainError(f"checkpoint={checkpoint}: a segment length must be a positive number of steps")
        return checkpoint
    if isinstance(checkpoint, str):
        checkpoint = [checkpoint]
    if isinstance(checkpoint, (list, tuple)) and checkpoint and all(isinstance(n, str) for n in checkpoint):
        return tuple(checkpoint)
    raise ExplainError(f"checkpoint= takes True (automatic segments), a positive int (segments of about that many "
                       f"steps) or a non-empty list of layer names (a cut after each); got {checkpoint!r}")


def _matches(step_name: str, name: str) -> bool:
    """``name`` is the step's name or a run of its path's components (a layer that holds the step)."""
    return step_name == name or f"/{name}/" in f"/{step_name}/"


def _after_layer(g: Graph, name: str) -> int:
    hits = [i for i, s in enumerate(g.steps) if any(_matches(n, name) for n in s.names())]
    if not hits:
        tops = list(dict.fromkeys(n.split("/")[1] if n.count("/") else n for n in g.layer_names()))
        raise ExplainError(f"checkpoint=: the model has no layer {name!r} to cut after; layers (top level): "
                           f"{', '.join(tops[:60])}")
    return hits[-1] + 1


def crossing_counts(g: Graph) -> list[int]:
    """For each cut ``c`` (between step ``c - 1`` and step ``c``, ``0 < c < len(steps)``, index ``c``;
    index 0 unused): how many tensors that carry relevance are written before it and read after it."""
    n = len(g.steps)
    carried = {k for s in g.steps for k, c in zip(s.inputs, s.carried) if c}
    born = {k: -1 for k in g.inputs}
    last: dict = {}
    for i, s in enumerate(g.steps):
        for k in s.outputs:
            born.setdefault(k, i)
        for k in s.inputs:
            last[k] = i
    for k in g.outputs:
        last[k] = n
    diff = [0] * (n + 2)
    for k in carried:
        if k in born and k in last and last[k] > born[k]:
            diff[born[k] + 1] += 1
            diff[last[k] + 1] -= 1
    counts, run = [], 0
    for c in range(n + 1):
        run += diff[c]
        counts.append(run)
    return counts


def _automatic_cuts(g: Graph, size: int) -> list[int]:
    """Cuts at least ``size`` steps apart, each where the fewest carried tensors cross."""
    n = len(g.steps)
    counts = crossing_counts(g)
    inner = range(1, n)
    if not inner:
        return []
    best = min(max(counts[c], 1) for c in inner)
    cuts, last = [], 0
    for c in inner:
        if counts[c] <= best and c - last >= size:
            cuts.append(c)
            last = c
    return cuts


def plan_segments(g: Graph, checkpoint: Any) -> tuple[tuple[int, int], ...]:
    """The dropped segments ``((lo, hi), ...)`` of ``g`` for ``checkpoint=`` (see the module); empty
    where nothing is checkpointed."""
    checkpoint = check_checkpoint(checkpoint)
    n = len(g.steps)
    if checkpoint is None or n < 2:
        return ()
    if checkpoint is True:
        cuts = _automatic_cuts(g, max(2, math.isqrt(n)))
    elif isinstance(checkpoint, int):
        cuts = _automatic_cuts(g, checkpoint)
    else:
        cuts = sorted({_after_layer(g, name) for name in checkpoint} - {n})
    bounds = [0, *cuts, n]
    return tuple((lo, hi) for lo, hi in zip(bounds[:-2], bounds[1:-1]) if hi > lo)


def drop_segment(g: Graph, lo: int, hi: int, values: dict, records: list, keep: Sequence[Any] = ()) -> None:
    """After the forward pass ran steps ``[lo, hi)``: replace their records by :class:`Dropped` ones,
    saving the values the segment reads from outside it, and forget the values written inside it that
    no later step, model output or ``keep`` key reads (on an eager backend, this frees them)."""
    steps = g.steps[lo:hi]
    produced = frozenset(k for s in steps for k in s.outputs)
    reads = list(dict.fromkeys(k for s in steps for k in s.inputs if k not in produced))
    seg = Segment(steps, {k: values[k] for k in reads}, produced)
    records[lo:hi] = [Dropped(seg, j) for j in range(hi - lo)]
    later = {k for s in g.steps[hi:] for k in s.inputs} | set(g.outputs) | set(keep)
    for k in produced - later:
        values.pop(k, None)
