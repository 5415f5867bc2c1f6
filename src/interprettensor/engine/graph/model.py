"""The graph's data model: a model flattened into :class:`Step` objects (one layer or operation
call each, with its handler and the keys of the tensors it reads and writes) held by a
:class:`Graph` (inputs, outputs, steps in topological order); tensors are named by keys
(:data:`Key`) that :class:`_Keys` hands out."""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Callable, Hashable, Sequence

from ..backend import Tensor
from ..errors import ExplainError
from ..handlers import Handler

Key = Hashable


@dataclasses.dataclass(eq=False)
class Step:
    """One layer (or keras operation) call in the flattened model."""

    name: str
    layer: Any
    handler: Handler
    inputs: list
    outputs: list
    call: Callable[[Sequence[Tensor]], list]
    strip_activation: bool = False
    fused: tuple = ()
    aliases: tuple = ()
    #: per input: known to be >= 0 in every forward pass (set by :func:`mark_nonneg`)
    nonneg: tuple = ()
    #: per input of a product: the factor is a gate (a softmax or squashing activation's output; set
    #: by :func:`mark_gates`)
    gates: tuple = ()
    #: per input: its value depends on the values of a model input that carries relevance (a float
    #: input, or an embedding's output; set by :func:`mark_carried`)
    carried: tuple = ()
    #: the call's keyword arguments that are not tensors (e.g. ``reverse=True``)
    options: dict = dataclasses.field(default_factory=dict)

    @property
    def type_name(self) -> str:
        return type(self.layer).__name__

    @property
    def category(self) -> str:
        return self.handler.category

    def names(self) -> tuple[str, ...]:
        return (self.name,) + tuple(self.aliases)


@dataclasses.dataclass(eq=False)
class Graph:
    inputs: list
    outputs: list
    steps: list
    input_names: list
    output_names: list

    def producer(self) -> dict:
        return {k: s for s in self.steps for k in s.outputs}

    def consumers(self) -> dict:
        out: dict = {}
        for s in self.steps:
            for k in s.inputs:
                out.setdefault(k, []).append(s)
        return out

    def layer_names(self) -> list[str]:
        return [n for s in self.steps for n in s.names()]

    def find(self, name: str) -> Step:
        """The step of a layer by name (exact, then the last path component, then a glob)."""
        for s in self.steps:
            if name in s.names():
                return s
        hits = [s for s in self.steps if any(n.split("/")[-1] == name for n in s.names())]
        if not hits:
            hits = [s for s in self.steps if any(fnmatch.fnmatchcase(n, name) for n in s.names())]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ExplainError(f"layer name {name!r} is ambiguous: {[h.name for h in hits]}")
        raise ExplainError(f"the model has no layer {name!r}; its layers are: {', '.join(self.layer_names())}")


class _Keys:
    def __init__(self) -> None:
        self.n = 0

    def new(self) -> int:
        self.n += 1
        return self.n
