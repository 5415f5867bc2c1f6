"""The interpreter: which tensor's value starts the relevance (:func:`explained_output`), the
forward pass that records what relevance needs (:func:`forward`), and the backward pass that walks
the steps in reverse, summing the relevance that reaches a tensor from all of its consumers
(:func:`backward`)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Collection, ContextManager, Sequence

import keras
from keras import ops

from .. import backend, dtypes
from ..backend import Tensor
from ..errors import ExplainError
from ..handlers import DEFAULT_PASS, ELEMENTWISE, SOFTMAX, PassOptions
from ..linear import Product, materialize
from ..rules import Rule
from .checkpoint import Dropped, Segment, drop_segment
from .model import Graph, Step


_SQUASHING = ("softmax", "sigmoid")


def _is_squashing(step: Step) -> bool:
    """A softmax or sigmoid: as the layer itself (``Softmax``, ``Activation('sigmoid')``, a keras op)
    or as the activation of a layer with weights."""
    layer = step.layer
    if isinstance(layer, keras.layers.Softmax) or type(layer).__name__ in ("Softmax", "Sigmoid"):
        return True
    if isinstance(layer, keras.layers.Activation):
        act = layer.activation
    else:
        act = step.handler.activation_of(layer)
    return getattr(act, "__name__", "") in _SQUASHING


def explained_output(g: Graph, output: int | str | None, probability: bool = False) -> tuple[Any, Step | None]:
    """The key of the tensor whose value starts the relevance. A final softmax or sigmoid is skipped
    (the logit is explained) unless ``probability``."""
    if output is None:
        idx = 0
    elif isinstance(output, int) and not isinstance(output, bool):
        if not -len(g.outputs) <= output < len(g.outputs):
            raise ExplainError(f"output index {output} out of range: the model has {len(g.outputs)} outputs")
        idx = output
    else:
        if output not in g.output_names:
            raise ExplainError(f"the model has no output {output!r}; its outputs: {g.output_names}")
        idx = g.output_names.index(output)
    key = g.outputs[idx]
    step = g.producer().get(key)
    if step is not None and not probability and _is_squashing(step):
        if step.handler.category in (ELEMENTWISE, SOFTMAX):
            return step.inputs[0], step
        step.strip_activation = True
    return key, step


def _run_step(step: Step, ins: list, options: PassOptions) -> tuple[list, Any]:
    """One step's handler forward on ``ins``: ``(outputs, state)``; a failure names the layer."""
    try:
        return step.handler.forward(step.layer, ins, step, options)
    except ExplainError:
        raise
    except (ValueError, TypeError) + backend.RUNTIME_ERRORS as e:
        raise ExplainError(f"layer {step.name!r} ({step.type_name}) failed on inputs of shape "
                           f"{[tuple(x.shape) for x in ins]}: {e}") from e


def forward(g: Graph, xs: Sequence[Tensor], options: PassOptions = DEFAULT_PASS,
            keep: Sequence[Any] = ()) -> tuple[dict, list]:
    """Run the steps on the inputs ``xs`` under the pass's ``options``: ``(value by key, one record
    (inputs, outputs, state) per step)``. The steps of ``options.checkpoints``' segments get
    :class:`~.checkpoint.Dropped` records (recomputed by :func:`backward`), and the values written inside
    them that no later step, model output or ``keep`` key reads are not returned."""
    values = dict(zip(g.inputs, xs))
    records: list = []
    ends = {hi: lo for lo, hi in options.checkpoints}
    for i, step in enumerate(g.steps):
        ins = [values[k] for k in step.inputs]
        outs, state = _run_step(step, ins, options)
        for k, v in zip(step.outputs, outs):
            values[k] = v
        records.append((ins, outs, state))
        if i + 1 in ends:
            drop_segment(g, ends[i + 1], i + 1, values, records, keep)
    return values, records


def _recompute(records: list, seg: Segment, rel: dict, options: PassOptions,
               recast: Callable[[list], list] | None,
               precision: Callable[[], ContextManager[Any]] | None = None) -> None:
    """Fill the :class:`~.checkpoint.Dropped` records of ``seg`` in ``records``: its steps run again on
    its saved inputs, ordered after the relevance that has reached the segment (so that the backend
    neither merges them with the forward pass's computation nor runs them early)."""
    deps = []
    for k in seg.produced:
        if k in rel:
            rel[k] = materialize(rel[k])
            deps.append(rel[k])
    keys = [k for k, v in seg.saved.items() if ops.is_tensor(v)]
    fixed = {k: v for k, v in seg.saved.items() if k not in keys}

    def run(xs: list) -> list:
        values = {**fixed, **dict(zip(keys, xs))}
        out = []
        for step in seg.steps:
            ins = [values[k] for k in step.inputs]
            outs, state = _run_step(step, ins, options)
            values.update(zip(step.outputs, outs))
            out.append((ins, outs, state))
        return out

    with precision() if precision is not None else contextlib.nullcontext():
        new = backend.recompute(deps, [seg.saved[k] for k in keys], run)
    if recast is not None:
        new = recast(new)
    for j, r in enumerate(records):
        if isinstance(r, Dropped) and r.segment is seg:
            records[j] = new[r.offset]


def start_at_position(g: Graph, records: list, rules: Sequence[Rule], key: Any, positions: Tensor,
                      take: Callable[[Tensor], Tensor], start: Callable[[Tensor], Tensor],
                      options: PassOptions = DEFAULT_PASS) -> dict | None:
    """The start of the backward pass for an explanation of one position per sample (``positions``,
    ``(N,)``) of the sequence output ``key``, where the layer that writes ``key`` maps every position on
    its own (its handler's ``record_at_position``; a language model's output projection): the layer's
    relevance computed on the explained positions alone (``take`` cuts a sequence ``(N, T, ...)`` to
    them, ``(N, 1, ...)``; ``start``: the relevance of the layer's output
    there, ``(N, 1, ...)``, from that output), placed at those positions of its input, zero elsewhere.
    Equal to starting at ``key`` with a relevance that is zero at every other position, without the
    layer's ``(N, T, ...)`` ratio and transpose (a vocabulary-sized tensor per position). Returns
    ``{input key: relevance}`` (the layer's record is then not read again), or None where the layer does
    not map positions on its own."""
    step = g.producer().get(key)
    if step is None or len(step.outputs) != 1 or len(step.inputs) != 1:
        return None
    i = g.steps.index(step)
    if isinstance(records[i], Dropped) or rules[i] is None or rules[i].bounds() is not None:
        return None  # (bounds of z^B are given for the whole input)
    ins, outs, state = records[i]
    rank = len(ins[0].shape)
    if rank < 3 or not dtypes.is_floating(ins[0].dtype):
        return None

    at = step.handler.record_at_position(step.layer, ins, outs, state, step, take)
    if at is None:
        return None
    xs_at, ys_at, state_at = at
    R_at = start(ys_at[0])
    R_in = materialize(step.handler.relevance(step.layer, xs_at, ys_at, state_at, [R_at], rules[i], step, options)[0])
    onehot = ops.one_hot(positions, ops.shape(ins[0])[1], dtype=R_in.dtype)
    return {step.inputs[0]: ops.reshape(onehot, ops.shape(onehot) + (1,) * (rank - 2)) * R_in}


class _Remade:
    """Values written by cheap steps (:meth:`~interprettensor.engine.handlers.Handler.cheap_to_recompute`:
    an element-wise function of its inputs, each of the output's shape and no larger per element),
    computed again in the backward pass when a step being explained reads them, instead of being kept
    from the forward pass. Their inputs are made again too where their producers are cheap (up to
    :attr:`DEPTH` steps back), so a chain of element-wise steps (a residual sum and the ReLU after it,
    block after block) keeps only the values at its ends, which other rules read anyway (a convolution's
    pre-activation, a pre-activation and its activation, the scores a scaling multiplies). On a backend
    that frees what nothing reads (:data:`~interprettensor.engine.backend.FREES_UNREAD`) the values
    between are not kept."""

    #: how many cheap steps back a value is made again from (a longer chain reads the value there as
    #: kept: recomputing a chain of n steps at each of its n reads costs n^2 element-wise steps)
    DEPTH = 12

    def __init__(self, g: Graph, records: list, options: PassOptions, enabled: bool):
        self.g, self.records, self.options = g, records, options
        self.producer: dict = {}
        if enabled:
            for j, step in enumerate(g.steps):
                if len(step.outputs) == 1 and step.handler.cheap_to_recompute(step.layer, step):
                    self.producer[step.outputs[0]] = j
        self.made: dict = {}

    def _value(self, key: Any, value: Any, deps: list) -> Any:
        if key not in self.producer:
            return value
        if key not in self.made:
            made = self._make(key, deps, self.DEPTH)
            if made is None:
                return value
            self.made[key] = made
        return self.made[key]

    def _make(self, key: Any, deps: list, depth: int) -> Any:
        """``key``'s value computed again from its producer's inputs (themselves made again while
        ``depth`` lasts), or None where it cannot be."""
        j = self.producer[key]
        rec = self.records[j]
        if not isinstance(rec, tuple):  # walked, or in a dropped segment (its outputs that others read are kept)
            return None
        ins, outs, _ = rec
        if any(tuple(x.shape) != tuple(outs[0].shape) or dtypes.itemsize(x.dtype) > dtypes.itemsize(outs[0].dtype)
               for x in ins):
            return None
        step = self.g.steps[j]
        args, after = [], list(deps)
        for k, x in zip(step.inputs, ins):
            made = self.made.get(k)
            if made is None and depth > 1 and k in self.producer:
                made = self._make(k, deps, depth - 1)  # not held for later readers: made again there
                if made is not None:
                    after.append(made)
            args.append(x if made is None else made)
        # the step runs once the values it reads are made again: its kept inputs (a convolution's
        # pre-activation beside the residual stream) are not read, and its intermediates not made, at
        # every level of the chain at once
        return backend.recompute(after, args, lambda xs: _run_step(step, xs, self.options)[0][0])

    def record(self, i: int, record: tuple, Rs: list) -> tuple:
        """Step ``i``'s record with the values of cheap steps made anew (after ``Rs`` exist)."""
        if not self.producer:
            return record
        step = self.g.steps[i]
        keys = [k for k in list(step.inputs) + list(step.outputs) if k in self.producer]
        if not keys:
            return record
        deps = [r.g if isinstance(r, Product) else r for r in Rs if r is not None]
        ins, outs, state = record
        ins = [self._value(k, v, deps) for k, v in zip(step.inputs, ins)]
        outs = [self._value(k, v, deps) for k, v in zip(step.outputs, outs)]
        for k in step.outputs:  # its producer is walked: no later step reads it
            self.made.pop(k, None)
        return ins, outs, state


def _relevance(step: Any, ins: list, outs: list, state: Any, Rs: list, rule: Rule, options: PassOptions,
               previous: list) -> list:
    """The step's relevance at its inputs, computed once the step walked before has passed its
    relevance on: steps on parallel branches (a residual block's shortcut and its last convolution)
    are explained one after the other, with one working set alive at a time, as the walk orders them."""
    if not previous:
        return step.handler.relevance(step.layer, ins, outs, state, Rs, rule, step, options)
    return backend.after(previous, lambda: step.handler.relevance(step.layer, ins, outs, state, Rs, rule, step, options))


def _add(a: Any, b: Any) -> Any:
    """The sum of two relevances of one tensor. Two products with the same input (a tensor read by
    several layers: a transformer block's query, key and value projections and its residual sum) stay
    one product, ``x * (g_a + g_b)``: one multiplication instead of two."""
    if isinstance(a, Product) and isinstance(b, Product) and a.x is b.x:
        return Product(a.x, a.g + b.g)
    return materialize(a) + materialize(b)


def backward(g: Graph, records: list, start: dict, rules: Sequence[Rule],
             keep: bool = False, options: PassOptions = DEFAULT_PASS,
             recast: Callable[[list], list] | None = None,
             forward_precision: Callable[[], ContextManager[Any]] | None = None,
             wanted: Collection[Any] | None = None) -> tuple[dict, dict]:
    """Relevance at the tensors reached from ``start`` (key -> relevance), each step's rule asked by
    its handler under the pass's ``options`` (those of the :func:`forward` that made ``records``).
    A dropped segment's records are recomputed when the walk reaches it (``recast`` maps them as the
    caller mapped the forward pass's records, e.g. to the backward dtype; ``forward_precision``, a
    context in which the layers compute as in the forward pass, where the caller runs the backward
    pass in another) and let go once walked.
    ``wanted``: the keys whose relevance is returned (default: every key reached). The relevance of
    any other tensor is let go once its producer has passed it on, so that an eager backend neither
    keeps every layer's relevance until the end nor computes those that nobody reads.
    Returns ``(relevance by key, relevance of each layer's output by layer name)``."""
    rel = dict(start)
    wanted_keys = None if wanted is None else set(wanted)
    layerwise: dict = {}
    records = list(records)
    remade = _Remade(g, records, options, backend.FREES_UNREAD and recast is None)
    previous: list = []  # the relevance the step walked before passed on
    for i in range(len(g.steps) - 1, -1, -1):
        step, rule = g.steps[i], rules[i]
        Rs = [rel.get(k) for k in step.outputs]
        if all(r is None for r in Rs):
            records[i] = None
            continue
        if isinstance(records[i], Dropped):
            _recompute(records, records[i].segment, rel, options, recast, forward_precision)
            Rs = [rel.get(k) for k in step.outputs]
        (ins, outs, state), records[i] = remade.record(i, records[i], Rs), None
        if not any(dtypes.is_floating(o.dtype) for o in outs):
            continue
        dtype = next(r.dtype for r in Rs if r is not None)
        Rs = [ops.zeros_like(o, dtype=dtype) if r is None else r for r, o in zip(Rs, outs)]
        if keep or not step.handler.accepts_lazy:
            Rs = [materialize(r) for r in Rs]
        if keep:
            for n in step.names():
                layerwise[n] = Rs[0] if len(Rs) == 1 else Rs
        R_in = _relevance(step, ins, outs, state, Rs, rule, options, previous)
        previous = [r.g if isinstance(r, Product) else r for r in R_in if r is not None]
        del Rs
        if wanted_keys is not None:
            for k in step.outputs:
                if k not in wanted_keys:
                    rel.pop(k, None)
        to_integers = step.handler.integer_inputs
        for k, r, x in zip(step.inputs, R_in, ins):
            if r is None or not (dtypes.is_floating(x.dtype) or to_integers):
                continue  # relevance does not flow into masks and indices (only embeddings credit them)
            rel[k] = r if k not in rel else _add(rel[k], r)
    keys = rel.keys() if wanted is None else [k for k in wanted if k in rel]
    return {k: materialize(rel[k]) for k in keys}, layerwise
