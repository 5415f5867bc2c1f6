"""Conditional relevance: the relevance that flows through chosen channels of hidden layers.

Concept Relevance Propagation (CRP; Achtibat et al. 2023, "From attribution maps to
human-understandable explanations through Concept Relevance Propagation", Nature Machine
Intelligence 5, eq. 6-7) explains a prediction through the channels ("concepts") of hidden layers.
A *condition* ``θ = {layer: channels, ...}`` restricts the backward pass: at each conditioned layer the
relevance is multiplied by a 0/1 mask that keeps the listed channels, and only the relevance that
flows through that layer goes on (relevance that bypasses it, e.g. over a skip connection, is not part
of the condition). ``R(x | θ)`` is the input heatmap that remains.

Every LRP rule is linear in the relevance it receives (the forward pass fixes the denominators), so
the heatmaps of a partition of a layer's channels sum to the relevance that flows through the layer
(the unconditional heatmap when every path from the input to the output passes the layer).

Several conditions for the same inputs share one forward pass and one backward pass above the
topmost conditioned layer. Below it the forward records are repeated once per condition and the
conditions' backward passes run as one batch (a layer whose records cannot be repeated, such as a
recurrent layer, makes the pass below the layer run the forward pass again on the repeated inputs).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import keras
import numpy as np
from keras import ops

from . import backend
from .backend import Tensor
from .errors import ExplainError
from .explainer import Explainer
from .graph import Graph, backward, forward
from .linear import LinearMap, materialize
from .precision import cast_floats, layer_precision
from .targets import as_targets, input_dtypes, known_input_shapes, start_relevance

__all__ = ["ConditionalExplainer", "Condition", "conditions_for_channels"]

#: a condition: ``{layer name: channel or channels}``; a layer it does not name keeps all channels
Condition = Mapping[str, "int | Sequence[int]"]

@dataclasses.dataclass(frozen=True)
class _Site:
    """A conditioned layer: its name, the index of its step, the tensor it conditions, its channels."""

    name: str
    index: int
    key: Any
    channels: int
    axis: int
    rank: int


def conditions_for_channels(layer: str, channels: Sequence[int | Sequence[int]]) -> list[dict]:
    """One condition per entry of ``channels`` (a channel, or a list of channels whose relevance is
    taken together) at ``layer``."""
    return [{layer: c} for c in channels]


class ConditionalExplainer(Explainer):
    """LRP restricted to channels of hidden layers (CRP's conditional relevance ``R(x | θ)``).

    Args:
        model, rule, output, probability, canonize, jit_compile, dtype, verify, **params: as for
            :class:`~interprettensor.Explainer`.
        layers: the layers that conditions may name (their channel axis is the last one, or the
            first after the batch for ``data_format='channels_first'``).

    Example::

        cx = ConditionalExplainer(model, "epsilon_plus", layers=["block4_conv3"])
        R = cx(x, [{"block4_conv3": 7}, {"block4_conv3": [1, 2]}])   # (N, 2, H, W, 3)
        rel, act = cx.channel_statistics(x)                         # per layer: (N, channels)
    """

    def __init__(self, model: keras.Model, rule: Any = "epsilon", *, layers: Sequence[str],
                 output: int | str | None = None, probability: bool = False, canonize: bool = True,
                 jit_compile: bool = False, dtype: Any = None, verify: bool = True, **params: Any):
        super().__init__(model, rule, output=output, probability=probability, canonize=canonize,
                         jit_compile=jit_compile, dtype=dtype, verify=verify, **params)
        if self.shape_specific:
            raise ExplainError(f"model {model.name!r} has a layer that can only be traced for known input shapes; "
                               f"conditional relevance needs a graph that holds for every batch size")
        self._probe_values: dict | None = None
        if isinstance(layers, str):
            layers = [layers]
        if not layers:
            raise ExplainError("layers= needs at least one layer to condition on")
        sites = [self._site(name) for name in layers]
        if len({s.index for s in sites}) != len(sites):
            raise ExplainError(f"layers= names the same layer twice: {list(layers)}")
        start = self._start_index()
        for s in sites:
            if s.index > start:
                raise ExplainError(f"layer {s.name!r} comes after the explained output: relevance does not reach it")
        #: conditioned layers, topmost (closest to the output) first
        self.sites: list[_Site] = sorted(sites, key=lambda s: -s.index)
        self._by_name = {s.name: s for s in sites}
        for given, s in zip(layers, sites):
            self._by_name.setdefault(given, s)
        self._cond_functions: dict = {}

    # ------------------------------------------------------------------ set-up
    def _site(self, name: str) -> _Site:
        step = self.graph.find(name)
        out_shape = self._output_shape(step)
        rank = len(out_shape) + 1
        if rank < 2:
            raise ExplainError(f"layer {step.name!r} has a scalar output: it has no channels to condition on")
        axis = 1 if getattr(step.layer, "data_format", None) == "channels_first" and rank > 2 else rank - 1
        channels = out_shape[axis - 1]
        if channels is None:
            raise ExplainError(f"layer {step.name!r} has an unknown number of channels (output shape "
                               f"{(None,) + tuple(out_shape)})")
        return _Site(step.name, self.graph.steps.index(step), step.outputs[0], int(channels), axis, rank)

    def _output_shape(self, step: Any) -> tuple:
        """The per-sample shape of the step's (first) output: from the layer where it is called once,
        else from a forward pass on one zero sample of the model's input shape."""
        if len(step.outputs) == 1 and not step.aliases:
            try:
                return tuple(step.layer.output.shape[1:])
            except (AttributeError, ValueError, RuntimeError):
                pass
        shapes = known_input_shapes(self.model)
        if not shapes or any(d is None for s in shapes for d in s):
            raise ExplainError(f"cannot tell the output shape of layer {step.name!r}: the model's input shape is "
                               f"not fully known ({'no input shape' if not shapes else shapes}); build the model "
                               f"with keras.Input(shape) or call model.build((None, ...)) with the sample shape")
        dtypes = input_dtypes(self.model, len(shapes), self.dtype)
        probe = [ops.zeros((1,) + s, d) for s, d in zip(shapes, dtypes)]
        if self._probe_values is None:
            with layer_precision(self.graph, self.dtype):
                self._probe_values, _ = forward(self.graph, probe)
        return tuple(self._probe_values[step.outputs[0]].shape[1:])

    def _start_index(self) -> int:
        producer = self.graph.producer()
        step = producer.get(self.start_key)
        return self.graph.steps.index(step) if step is not None else len(self.graph.steps)

    # ------------------------------------------------------------------ masks
    def masks(self, conditions: Sequence[Condition]) -> tuple[list[_Site], list[np.ndarray]]:
        """The layers that ``conditions`` name (topmost first) and their 0/1 channel masks, one
        ``(K, channels)`` array each. A condition that does not name one of these layers keeps all of
        its channels (its relevance still has to flow through the layer)."""
        if isinstance(conditions, Mapping):
            conditions = [conditions]
        if len(conditions) == 0:
            raise ExplainError("conditions is empty: give at least one {layer: channels} condition")
        named = set()
        for k, cond in enumerate(conditions):
            if not isinstance(cond, Mapping) or not cond:
                raise ExplainError(f"condition {k} is {cond!r}: a condition is a non-empty dict {{layer: channels}}")
            for name in cond:
                site = self._by_name.get(name)
                if site is None:
                    raise ExplainError(f"condition {k} names layer {name!r}, which is not among the explainer's "
                                       f"conditioned layers {[s.name for s in self.sites]}")
                named.add(site.name)
        sites = [s for s in self.sites if s.name in named]
        out = [np.ones((len(conditions), s.channels), np.float32) for s in sites]
        where = {s.name: i for i, s in enumerate(sites)}
        for k, cond in enumerate(conditions):
            if not isinstance(cond, Mapping):
                raise ExplainError(f"condition {k} is {cond!r}: a condition is a dict {{layer: channels}}")
            for name, channels in cond.items():
                site = self._by_name[name]
                chans = np.atleast_1d(np.asarray(channels))
                if chans.dtype.kind not in "iu" or chans.ndim != 1:
                    raise ExplainError(f"condition {k}: channels of layer {name!r} must be integers, got {channels!r}")
                bad = chans[(chans < 0) | (chans >= site.channels)]
                if bad.size:
                    raise ExplainError(f"condition {k}: layer {site.name!r} has {site.channels} channels "
                                       f"(0..{site.channels - 1}), got channel {int(bad[0])}")
                m = np.zeros(site.channels, np.float32)
                m[chans] = 1.0
                out[where[site.name]][k] = m
        return sites, out

    # ------------------------------------------------------------------ traced passes
    def _forward_and_top(self, xs: Sequence[Tensor], targets: Tensor, lowest: int, wanted: Sequence[Any]) -> tuple:
        """Forward pass, starting relevance, and the backward pass down to step ``lowest`` (exclusive):
        ``(records, relevance by key (of the keys ``wanted``), explained output, model outputs, values,
        inputs in the backward dtype)``."""
        values, records, model_outputs, out, xs = self._forward_pass(xs, self.pass_options[True])
        R = start_relevance(out, targets, None, False, "the model output")
        rel = self._backward_range(records, {self.start_key: R}, lowest + 1, len(self.graph.steps), self.rules,
                                   wanted)
        return records, rel, out, model_outputs, values, xs

    def _backward_range(self, records: list, start: dict, lo: int, hi: int, rules: Sequence[Any],
                        wanted: Sequence[Any]) -> dict:
        """The backward pass through steps ``lo .. hi-1``: the relevance of the ``wanted`` keys."""
        g = self.graph
        sub = Graph(g.inputs, [], g.steps[lo:hi], [], [])
        with self._backward_precision() as precision:
            rel, _ = backward(sub, records[lo:hi], start, list(rules)[lo:hi], options=self.pass_options[True],
                              forward_precision=precision, wanted=wanted)
        return rel

    def _repeated_records(self, records: list, xs: Sequence[Tensor], K: Tensor, hi: int) -> list:
        """The records of steps ``0 .. hi-1`` for every sample repeated ``K`` times (sample-major)."""
        def rep(t: Any) -> Any:
            if _is_tensor(t) and len(t.shape) and t.shape[0] is None:
                return ops.repeat(t, K, axis=0)
            return t

        steps = self.graph.steps[:hi]
        # a traced batch axis of unknown size (TensorFlow's compiled signature) tells the samples' tensors
        # from the weights; where shapes are concrete (JAX, PyTorch) the forward pass runs again instead
        if xs[0].shape[0] is None and all(s.handler.batch_records and all(_is_tensor(v) or isinstance(v, (LinearMap, tuple)) or v is None
                                                        for v in st.values())
               for s, (_, _, st) in zip(steps, records)):
            out = []
            for (ins, outs, state) in records[:hi]:
                kept = {k: rep(v) for k, v in state.items() if _is_tensor(v)}
                out.append(([rep(t) for t in ins], [rep(t) for t in outs], kept))
            return out
        # a layer whose record is more than the batch's tensors: run the forward pass on repeated inputs
        _, again = forward(self.graph, [ops.repeat(x, K, axis=0) for x in xs], self.pass_options[True])
        return (cast_floats(again, self.backward_dtype) if self._recast() else again)[:hi]

    @staticmethod
    def _broadcast_mask(mask: Tensor, n: Any, site: _Site, dtype: Any) -> Tensor:
        """``(K, C)`` -> ``(N*K, 1, ..., C, ..., 1)``: condition ``k`` of sample ``i`` at row ``i*K + k``."""
        m = ops.tile(ops.cast(mask, dtype), (n, 1))
        shape = [-1] + [1] * (site.rank - 1)
        shape[site.axis] = site.channels
        return ops.reshape(m, tuple(shape))

    def _conditional_core(self, xs: Sequence[Tensor], targets: Tensor, masks: Sequence[Tensor],
                      sites: Sequence[_Site], stop: _Site | None, from_activation: bool) -> tuple:
        self.trace_count += 1
        top = sites[0]
        records, rel, out, model_outputs, values, xs_b = self._forward_and_top(
            xs, targets, len(self.graph.steps) if from_activation else top.index, [top.key])
        n = ops.shape(xs[0])[0]
        K = ops.shape(masks[0])[0]
        dtype = out.dtype
        if from_activation:  # start at the layer, with its activation as the relevance
            R_top = ops.cast(values[top.key], dtype)
        elif top.key == self.start_key:
            R_top = start_relevance(out, targets, None, False, "the model output")
        else:
            R_top = materialize(rel[top.key]) if top.key in rel else ops.zeros_like(ops.cast(values[top.key], dtype))
        lower = self._repeated_records(records, xs, K, top.index + 1)
        xs_rep = [ops.repeat(x, K, axis=0) for x in xs_b]
        R = ops.repeat(R_top, K, axis=0) * self._broadcast_mask(masks[0], n, top, dtype)
        current = top
        for site, mask in zip(sites[1:], masks[1:]):
            rel = self._backward_range(lower, {current.key: R}, site.index + 1, current.index + 1, self.rules,
                                       [site.key])
            R_site = rel.get(site.key)
            R_site = ops.zeros_like(lower[site.index][1][0], dtype) if R_site is None else R_site
            R = R_site * self._broadcast_mask(mask, n, site, dtype)
            current = site
        if stop is not None:  # the relevance at a lower layer (attribution graphs)
            rel = self._backward_range(lower, {current.key: R}, stop.index + 1, current.index + 1, self.rules,
                                       [stop.key])
            R_stop = rel.get(stop.key)
            if R_stop is None:
                R_stop = ops.zeros_like(lower[stop.index][1][0], dtype)
            return [R_stop], R_top, out, model_outputs
        rules = self._bounds_rules(xs_rep)
        rel = self._backward_range(lower, {current.key: R}, 0, current.index + 1, rules, self.graph.inputs)
        result = [rel[k] if k in rel else ops.zeros(ops.shape(x), dtype)
                  for k, x in zip(self.graph.inputs, xs_rep)]
        return result, R_top, out, model_outputs

    def _statistics_core(self, xs: Sequence[Tensor], targets: Tensor) -> tuple:
        self.trace_count += 1
        _, rel, out, model_outputs, values, _ = self._forward_and_top(xs, targets, self.sites[-1].index,
                                                                     [s.key for s in self.sites])
        relevances, activations = [], []
        for s in self.sites:
            R = rel.get(s.key)
            if s.key == self.start_key:
                R = start_relevance(out, targets, None, False, "the model output")
            a = ops.cast(values[s.key], out.dtype)
            R = ops.zeros_like(a) if R is None else materialize(R)
            axes = tuple(i for i in range(1, s.rank) if i != s.axis)
            relevances.append(ops.sum(R, axis=axes) if axes else R)
            activations.append(ops.max(a, axis=axes) if axes else a)
        return relevances, activations, out, model_outputs

    def _signature(self, xs: Sequence[Tensor]) -> tuple:
        return tuple(backend.spec((None,) + tuple(x.shape[1:]), x.dtype) for x in xs)

    def _cond_function(self, xs: Sequence[Tensor], kind: str, sites: Sequence[_Site] = (),
                       stop: _Site | None = None):
        sig = self._signature(xs)
        key = (kind, sig, tuple(s.name for s in sites), None if stop is None else stop.name)
        fn = self._cond_functions.get(key)
        if fn is None:
            targets_spec = backend.spec((None,), "int32")
            if kind == "statistics":
                def run(xs, targets):
                    with layer_precision(self.graph, self.dtype):
                        return self._statistics_core(xs, targets)

                spec = (sig, targets_spec)
            else:
                masks_spec = tuple(backend.spec((None, s.channels), "float32") for s in sites)
                from_activation = kind == "activation"

                def run(xs, targets, masks):
                    with layer_precision(self.graph, self.dtype):
                        return self._conditional_core(xs, targets, masks, sites, stop, from_activation)

                spec = (sig, targets_spec, masks_spec)
            fn = backend.compile(run, spec, jit=self.jit_compile, variables=self.model.variables)
            self._cond_functions[key] = fn
        return fn

    # ------------------------------------------------------------------ public calls
    def conditional(self, x: Any, conditions: Sequence[Condition] | Condition, target: Any = None, *,
                    batch_size: int | None = None, condition_batch_size: int | None = None,
                    layer: str | None = None, start: str = "output") -> Any:
        """``R(x | θ)`` for every condition: an array ``(N, K, *input shape)`` (a list for several
        inputs), ``K = len(conditions)``. With ``layer``: the relevance at that lower layer's output
        instead, ``(N, K, *layer output shape)``.

        Args:
            x: the inputs.
            conditions: ``{layer: channel or channels}`` dicts (see :func:`conditions_for_channels`).
            target: the explained class (``None``: the predicted one), an int or one per sample.
            batch_size: samples per pass.
            condition_batch_size: conditions per pass (default: all; bounds the memory, which grows
                with ``samples x conditions`` below the topmost conditioned layer).
            start: ``'output'`` (the explained output's relevance, CRP's ``R(x | θ)``) or
                ``'activation'``: start at the topmost conditioned layer with its activation as the
                relevance (the heatmaps CRP shows for activation-maximising reference samples).
        """
        if start not in ("output", "activation"):
            raise ExplainError(f"start must be 'output' or 'activation', got {start!r}")
        sites, masks = self.masks(conditions)
        stop = None
        if layer is not None:
            stop = self._site(layer)
            if stop.index >= sites[-1].index:
                raise ExplainError(f"layer {stop.name!r} is not below the conditioned layers "
                                   f"{[s.name for s in sites]}")
        xs = self._inputs(x)
        n = int(xs[0].shape[0])
        targets = _targets(target, n)
        self._check_targets(ops.convert_to_numpy(targets), xs)
        K = int(masks[0].shape[0])
        kb = condition_batch_size or K
        bs = batch_size or self.batch_size or max(n, 1)
        fn = self._cond_function(xs, "activation" if start == "activation" else "conditional", sites, stop)
        parts = []
        for lo in range(0, max(n, 1), bs):
            part = [t[lo:lo + bs] for t in xs]
            if n == 0:
                part = [ops.zeros((1,) + tuple(t.shape[1:]), t.dtype) for t in xs]
            m = int(part[0].shape[0])
            row = []
            for klo in range(0, K, kb):
                ms = tuple(ops.convert_to_tensor(mask[klo:klo + kb]) for mask in masks)
                res = self._call(fn, tuple(part), targets[lo:lo + bs] if n else ops.full((1,), -1, dtype="int32"), ms)
                k = int(ms[0].shape[0])
                row.append([ops.convert_to_numpy(r).reshape((m, k) + tuple(r.shape[1:])) for r in res[0]])
            parts.append([np.concatenate([c[i] for c in row], axis=1) for i in range(len(row[0]))])
        result = [np.concatenate([p[i] for p in parts])[:n] for i in range(len(parts[0]))]
        return result[0] if len(result) == 1 else result

    def channel_statistics(self, x: Any, target: Any = None, *, batch_size: int | None = None,
                           return_output: bool = False) -> tuple:
        """For every conditioned layer: each channel's relevance (the layer's relevance summed over its
        other axes; the channels' relevances sum to the layer's) and its largest activation.

        Returns ``(relevance, activation)``: dicts ``{layer name: (N, channels)}`` (and the explained
        output ``(N, classes)`` with ``return_output``)."""
        xs = self._inputs(x)
        n = int(xs[0].shape[0])
        targets = _targets(target, n)
        self._check_targets(ops.convert_to_numpy(targets), xs)
        bs = batch_size or self.batch_size or max(n, 1)
        fn = self._cond_function(xs, "statistics")
        rel = {s.name: [] for s in self.sites}
        act = {s.name: [] for s in self.sites}
        outs = []
        for lo in range(0, n, bs):
            part = [t[lo:lo + bs] for t in xs]
            R, A, out, _ = self._call(fn, tuple(part), targets[lo:lo + bs])
            for s, r, a in zip(self.sites, R, A):
                rel[s.name].append(ops.convert_to_numpy(r))
                act[s.name].append(ops.convert_to_numpy(a))
            outs.append(ops.convert_to_numpy(out))
        empty = {s.name: np.zeros((0, s.channels), np.float32) for s in self.sites}
        rel = {k: np.concatenate(v) if v else empty[k] for k, v in rel.items()}
        act = {k: np.concatenate(v) if v else empty[k] for k, v in act.items()}
        if return_output:
            return rel, act, (np.concatenate(outs) if outs else np.zeros((0,), np.float32))
        return rel, act

    def _call(self, fn: Any, *args: Any) -> tuple:
        res = fn(*args)
        if self._start_shape is None:  # known now: later target checks need no probe
            self._start_shape = tuple(int(d) for d in res[2].shape[1:])
        if not self._verified:
            self.check_forward(list(args[0]), res[3])
        return res


def _is_tensor(v: Any) -> bool:
    """Whether ``v`` is a tensor of the backend (not a variable)."""
    return ops.is_tensor(v) and not hasattr(v, "assign")


def _targets(target: Any, n: int) -> Tensor:
    """``target`` as int32 ``(n,)``; an integer array may hold -1 for "the predicted class" (as the data
    set readers give it)."""
    if ops.is_tensor(target):
        target = ops.convert_to_numpy(target)
    if isinstance(target, np.ndarray) and target.ndim == 1 and target.dtype.kind in "iu":
        t = target.astype(np.int32)
        if len(t) != n:
            raise ExplainError(f"target has {len(t)} entries for {n} samples")
        if t.size and t.min() < -1:
            raise ExplainError(f"target out of range: negative class index {int(t.min())}")
        return ops.convert_to_tensor(t)
    return as_targets(target, n)
