"""``it.lrp`` and :class:`Explainer`: LRP on any Keras 3 Sequential or Functional model.

The explainer flattens the model once (:mod:`.graph`), assigns rules with a composite
(:mod:`.composites`) and compiles forward and backward pass into one ``tf.function`` per input
signature; calling it again with inputs of the same shape never retraces. Its first call checks the
forward pass it explains against the model's own output (:mod:`.forward_check`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterator, Sequence

import keras
import numpy as np
from keras import ops, tree

from . import backend
from . import dtypes as _dtypes
from .backend import Tensor
from .composites import Composite, get_composite
from .errors import ExplainError
from .forward_check import locate_mismatch, outputs_agree, reference_rtol
from .expand import ShapeDependent
from .graph import (Graph, Step, backward, build_graph, explained_output, forward, plan_segments, start_at_position,
                    positive_output_steps, relu_denominator_steps)
from .graph.checkpoint import check_checkpoint
from .handlers import PassOptions
from .handlers.quantised import weight_only
from .precision import cast_floats, layer_precision, model_dtype, resolve_dtype, scale_down, scale_up
from .rules import Rule, constant
from .targets import (as_inputs, as_positions, as_targets, at_positions, check_finite, check_targets, input_dtypes,
                      pack_inputs, start_relevance)

__all__ = ["Explainer", "lrp"]

#: let layers with a built-in ReLU keep only their activation for the denominators, and rules skip the
#: groups for negative outputs, where that is exact (:func:`~interprettensor.engine.graph.relu_denominator_steps`,
#: :func:`~interprettensor.engine.graph.positive_output_steps`); a switch for tests and debugging
FUSE_RELU_DENOMINATORS = True

ArrayLike = Any
# names other modules import from here
_model_dtype = model_dtype  # noqa: F401


class Explainer:
    """A compiled LRP explainer for one model and one rule or composite.

    Args:
        model: a Keras 3 Sequential or Functional model (nested models are fine), or an
            :class:`interprettensor.Sequential`.
        rule: a rule name (``'epsilon'``, ``'alphabeta'``, ``'gamma'``, ...), a preset name
            (``'epsilon_gamma_box'``, ``'preset_a'``, ...), a :class:`~interprettensor.engine.rules.Rule` or a
            :class:`~interprettensor.Composite`. A rule name applies to the layers with weights;
            other layers get the composite's category defaults.
        layer: explain a unit of this hidden layer instead of the model output.
        output: which output of a multi-output model (index or layer name).
        probability: explain a final softmax or sigmoid's output (the probability) instead of the
            logit before it (the default, as in the LRP literature: the logit is what the network's
            evidence adds up to; a squashed probability saturates).
        canonize: merge BatchNormalization into the preceding layer.
        verify: on the first call, check that the forward pass the explainer explains reproduces the
            model's own output (a handler that computes something other than its layer would otherwise
            give a silently wrong explanation); stops with an error naming the first layer that differs.
        jit_compile: compile with XLA (TensorFlow; JAX always compiles with XLA, PyTorch ignores it):
            it fuses the pass's element-wise steps; a keras_hub BERT-base explains with AttnLRP in
            0.9x the time without it (``benchmarks/bench_transformer.py``). Compiled once per input
            shape.
        batch_size: split larger inputs into batches of this size.
        dtype: compute precision: ``'float32'``, ``'float64'``, ``'float16'``/``'bfloat16'`` (forward and
            backward pass in that precision; stabilisers are kept above the dtype's smallest normal
            number; in float16 the relevance is scaled by a power of two against underflow and
            returned as float32) or ``'mixed_float16'``/``'mixed_bfloat16'`` (forward pass in low precision, the
            relevance divisions in float32: the accurate choice). Default: the model's input dtype, or
            the mixed mode of a Keras mixed-precision policy on the model.
        checkpoint: keep memory to about a forward pass's by recomputing forward activations per
            segment of the layers instead of keeping them all for the backward pass (gradient
            checkpointing): ``True`` (segments of about ``sqrt(steps)`` steps, cut where one tensor
            carries everything, e.g. the residual stream between a transformer's blocks), an int
            (segments of about that many steps), or layer names (a cut after each, e.g. a decoder's
            ``['transformer_layer_0', 'transformer_layer_1', ...]``). The relevance is the same; the
            forward computation of every segment but the last runs twice.
        **params: rule parameters (``epsilon=``, ``alpha=``, ``beta=``, ``gamma=``, ``low=``, ``high=``).

    Example::

        explainer = it.Explainer(model, rule="epsilon_gamma_box", low=0.0, high=1.0)
        R = explainer(x)                  # relevance for the predicted classes, shaped like x
        R = explainer(x, target=3)        # for class 3
        R, per_layer = explainer(x, layerwise=True)
    """

    def __init__(self, model: keras.Model, rule: str | Rule | Composite = "epsilon", *,
                 layer: str | None = None, output: int | str | None = None, probability: bool = False,
                 canonize: bool = True, jit_compile: bool = False, batch_size: int | None = None,
                 dtype: Any = None, verify: bool = True, checkpoint: bool | int | Sequence[str] | None = None,
                 **params: Any):
        self.model = model
        #: ``checkpoint=`` as given (checked); :func:`~interprettensor.engine.graph.plan_segments` cuts it
        self.checkpoint = check_checkpoint(checkpoint)
        self.composite = get_composite(rule, **params)
        self.layer = layer
        self.output = output
        self.canonize = canonize
        self.probability = bool(probability)
        self.verify = bool(verify)
        self._verified = not self.verify
        self._start_shape: tuple | None = None
        self.jit_compile = jit_compile
        self.batch_size = batch_size
        #: dtype of the inputs and forward pass; ``backward_dtype``: of the relevance computation
        self.dtype, self.backward_dtype = resolve_dtype(model, dtype)
        self._functions: dict = {}
        #: the functions :meth:`compiled` returned, by the id of the compiled function they check for
        self._checked: dict = {}
        self.trace_count = 0
        #: graphs built for concrete input shapes (models with layers traceable only at known shapes)
        self._plans: dict = {}
        self.shape_specific = False
        try:
            self._activate(self._plan())
        except ShapeDependent:
            # a layer (e.g. a decoder building its causal mask from the sequence length) can only be
            # traced for known shapes: the graph is built per input shape, on the first call
            self.shape_specific = True
            self.graph = None  # type: ignore[assignment]

    def _plan(self, input_shapes: Sequence[tuple] | None = None) -> dict:
        """The graph (for ``input_shapes``, or any shape), its rules, where the explanation starts, and
        the options of its passes per mode (the layers whose denominators may use their ReLU output)."""
        graph = build_graph(self.model, canonize=self.canonize, input_shapes=input_shapes)
        rules = self.composite.assign(graph)
        if self.layer is not None:
            start_step: Step | None = graph.find(self.layer)
            start_key = start_step.outputs[0]
        else:
            start_key, start_step = explained_output(graph, self.output, self.probability)
        # per mode (True: starting relevance = output x mask; False: a custom relevance)
        segments = plan_segments(graph, self.checkpoint)
        options = {start: PassOptions(relu_denominator=relu_denominator_steps(graph, rules, start_key, start),
                                      positive_outputs=positive_output_steps(graph, rules, start_key, start),
                                      checkpoints=segments)
                   if FUSE_RELU_DENOMINATORS else PassOptions(checkpoints=segments) for start in (True, False)}
        return {"graph": graph, "rules": rules, "start_key": start_key, "start_step": start_step,
                "pass_options": options}

    def _activate(self, plan: dict) -> None:
        self.graph: Graph = plan["graph"]
        self.rules: list[Rule] = plan["rules"]
        self.start_key = plan["start_key"]
        self.start_step = plan["start_step"]
        #: the options of the traced pass per mode (``True``: the starting relevance is the output times
        #: a mask; ``False``: a custom relevance)
        self.pass_options: dict[bool, PassOptions] = plan["pass_options"]

    @property
    def _relu_steps(self) -> dict[bool, frozenset]:
        """The steps whose denominators use their ReLU output, per mode (see :attr:`pass_options`)."""
        return {k: o.relu_denominator for k, o in self.pass_options.items()}

    @property
    def _positive_steps(self) -> dict[bool, frozenset]:
        """The steps whose groups for negative outputs are skipped, per mode."""
        return {k: o.positive_outputs for k, o in self.pass_options.items()}

    def _activate_for(self, xs: Sequence[Tensor]) -> None:
        """For a model explained per input shape: make the graph for ``xs``'s shapes the active one."""
        if not self.shape_specific:
            return
        key = tuple(tuple(int(d) if d is not None else None for d in x.shape) for x in xs)
        if any(d is None for shape in key for d in shape):
            raise ExplainError(f"model {self.model.name!r} has a layer that can only be traced for known input shapes "
                               f"(batch size included), got input shapes {list(key)}")
        if key not in self._plans:
            self._plans[key] = self._plan(key)
        if self.graph is not self._plans[key]["graph"]:
            self._activate(self._plans[key])
            self._start_shape = None

    # ------------------------------------------------------------------ introspection
    def rule_map(self) -> dict[str, Rule]:
        """The rule each layer gets: ``{layer name: rule}`` (for a model explained per input shape: in
        the graph of the last call's shape)."""
        if self.graph is None:
            raise ExplainError("this model's graph depends on the input shape (a layer can only be traced for "
                               "known shapes); call the explainer once, then ask for its rule map")
        return {s.name: r for s, r in zip(self.graph.steps, self.rules)}

    # ------------------------------------------------------------------ the traced pass
    def _core(self, xs: Sequence[Tensor], targets: Tensor | None, R0: Tensor | None,
              layerwise: bool, positions: Tensor | None = None, contrast: Tensor | None = None) -> tuple:
        """Forward pass, starting relevance, backward pass: ``(relevances, layerwise, explained output,
        model outputs)``."""
        self.trace_count += 1
        options = self.pass_options[R0 is None]  # for the forward and the backward pass
        values, records, model_outputs, out, xs = self._forward_pass(xs, options)
        where = f"layer {self.layer!r}" if self.layer else "the model output"
        rules = self._bounds_rules(xs)
        recast = (lambda recs: cast_floats(recs, self.backward_dtype)) if self._recast() else None
        scale = None
        with self._backward_precision() as precision:
            begin = None
            if positions is not None and not layerwise and _dtypes.name(out.dtype) != "float16":
                # one position explained: a layer that maps positions on its own is explained there only
                zeros = ops.zeros_like(positions)
                begin = start_at_position(self.graph, records, rules, self.start_key, positions, options=options,
                                          take=lambda t: at_positions(t, positions),
                                          start=lambda y: start_relevance(y, targets, None, False, where, zeros,
                                                                          contrast))
            if begin is None:
                R = start_relevance(out, targets, R0, self.layer is not None, where, positions, contrast)
                if _dtypes.name(R.dtype) == "float16":
                    R, scale = scale_up(R)
                begin = {self.start_key: R}
            dtype = next(iter(begin.values())).dtype
            rel, lw = backward(self.graph, records, begin, rules, keep=layerwise, options=options, recast=recast,
                               forward_precision=precision, wanted=self.graph.inputs)
        result = [rel[k] if k in rel else ops.zeros(ops.shape(x), dtype) for k, x in zip(self.graph.inputs, xs)]
        if layerwise:
            for name, k, x in zip(self.graph.input_names, self.graph.inputs, xs):
                lw[name] = rel.get(k, ops.zeros(ops.shape(x), dtype))
        if scale is not None:
            result = [scale_down(r, scale) for r in result]
            lw = tree.map_structure(lambda t: scale_down(t, scale), lw)
        return result, lw, out, model_outputs

    def _forward_pass(self, xs: Sequence[Tensor], options: PassOptions) -> tuple:
        """The forward pass under ``options``, with its records, explained output and inputs in the
        backward dtype: ``(values, records, model outputs, explained output, inputs)``."""
        values, records = forward(self.graph, xs, options, keep=(self.start_key,))
        model_outputs = self._model_outputs(values)
        out = values[self.start_key]
        if self._recast():
            records = cast_floats(records, self.backward_dtype)
            out = ops.cast(out, _dtypes.name(self.backward_dtype))
            xs = [ops.cast(x, _dtypes.name(self.backward_dtype)) if _dtypes.is_floating(x.dtype) else x for x in xs]
        return values, records, model_outputs, out, list(xs)

    @contextlib.contextmanager
    def _backward_precision(self) -> Iterator[Callable[[], ContextManager[Any]] | None]:
        """Where the relevance is computed in a wider dtype than the forward pass (``mixed_bfloat16``,
        ``mixed_float16``), the layers that the backward pass calls again (a rotary embedding's linear
        map, a reshape's vector-Jacobian product) compute in it too, instead of casting the float32
        relevance's operands to their own bfloat16 or float16 (a Keras mixed policy); yields the context
        that restores the forward pass's precision (for checkpointed segments' recomputed records), or
        None where nothing changes."""
        if _dtypes.itemsize(self.backward_dtype) <= _dtypes.itemsize(self.dtype):
            yield None
            return
        with layer_precision(self.graph, self.backward_dtype) as wide:
            yield wide.suspended

    def _recast(self) -> bool:
        """Whether the records need casting: mixed precision (relevance in ``backward_dtype``), or low
        precision (layers of a float32 model, autocasting their inputs, may have returned float32)."""
        dtype = _dtypes.name(self.dtype)
        return _dtypes.name(self.backward_dtype) != dtype or dtype in _dtypes.LOW_PRECISION

    def _model_outputs(self, values: dict) -> list[Tensor]:
        """The model's outputs as the pass computed them, with a stripped final activation re-applied
        (for the comparison with the model's own output)."""
        producer = self.graph.producer()
        outs = []
        for k in self.graph.outputs:
            v = values[k]
            step = producer.get(k)
            if step is not None and step.strip_activation:
                act = step.handler.activation_of(step.layer)
                v = v if act is None else act(v)
            outs.append(v)
        return outs

    def _bounds_rules(self, xs: Sequence[Tensor]) -> list[Rule]:
        """Bounds of rules that need them (z^B) are given for the model input; map them through the
        affine preprocessing layers before the layer (rescaling, normalisation, padding; the composite
        assigns such rules only where the input is such) by running those layers on them. A decreasing
        map (a negative scale) swaps them, so the mapped bounds are their element-wise minimum and
        maximum."""
        rules = list(self.rules)
        for i, (step, rule) in enumerate(zip(self.graph.steps, rules)):
            box = rule.bounds()
            if box is None or step.inputs[0] in self.graph.inputs:
                continue
            mapped = []
            for bound in box:
                filled = [ops.broadcast_to(constant(bound, x.dtype), ops.shape(x)) for x in xs]
                values, _ = forward(self._prefix(step), filled)
                mapped.append(values[step.inputs[0]])
            rules[i] = rule.with_bounds(ops.minimum(mapped[0], mapped[1]), ops.maximum(mapped[0], mapped[1]))
        return rules

    def _prefix(self, step: Step) -> Graph:
        needed = set(step.inputs)
        order = []
        for s in reversed(self.graph.steps[: self.graph.steps.index(step)]):
            if any(k in needed for k in s.outputs):
                order.append(s)
                needed.update(s.inputs)
        return Graph(self.graph.inputs, list(step.inputs), order[::-1], [], [])

    def _function(self, xs: Sequence[Tensor], mode: str, layerwise: bool, outputs: bool = True):
        """The compiled pass for ``xs``'s shapes: ``(relevances, layerwise, explained output, model
        outputs)``. ``outputs=False``: the outputs as zero-sample slices (their shapes only), so that the
        pass need not hold them to its end (a language model's logits: vocabulary-sized per position)."""
        # per input shape (batch size included) where the graph holds only for that shape
        batch = int(xs[0].shape[0]) if self.shape_specific else None
        sig = tuple(backend.spec((batch,) + tuple(x.shape[1:]), x.dtype) for x in xs)
        key = (mode, layerwise, sig, outputs)
        fn = self._functions.get(key)
        if fn is None:
            fn = self._compile(sig, mode, layerwise, outputs)
            self._functions[key] = fn
        return fn

    def _compile(self, sig: tuple, mode: str, layerwise: bool, outputs: bool):
        def core(*args):
            res = self._core(*args)
            if outputs:
                return res
            return res[0], res[1], res[2][:0], [o[:0] for o in res[3]]

        ids = backend.spec((None,), "int32")
        if mode == "contrast":
            def run(xs, targets, contrast):
                with layer_precision(self.graph, self.dtype):
                    return core(xs, targets, None, layerwise, None, contrast)

            spec = (sig, ids, ids)
        elif mode == "position_contrast":
            def run(xs, targets, positions, contrast):
                with layer_precision(self.graph, self.dtype):
                    return core(xs, targets, None, layerwise, positions, contrast)

            spec = (sig, ids, ids, ids)
        elif mode == "target":
            def run(xs, targets):
                with layer_precision(self.graph, self.dtype):
                    return core(xs, targets, None, layerwise)

            spec = (sig, backend.spec((None,), "int32"))
        elif mode == "position":
            def run(xs, targets, positions):
                with layer_precision(self.graph, self.dtype):
                    return core(xs, targets, None, layerwise, positions)

            spec = (sig, backend.spec((None,), "int32"), backend.spec((None,), "int32"))
        else:
            def run(xs, R0):
                with layer_precision(self.graph, self.dtype):
                    return core(xs, None, R0, layerwise)

            spec = (sig, backend.spec(None, self.dtype))
        return backend.compile(run, spec, jit=self.jit_compile, variables=self.model.variables)

    def compiled(self, specs: Sequence[Any], layerwise: bool = False):
        """The compiled per-batch function for inputs like ``specs`` (tensors or TensorSpecs, one per
        model input; the batch dimension is free): ``fn(xs, targets) -> (relevances, layerwise,
        output, model_outputs)`` with ``xs`` a tuple of tensors in :attr:`dtype`, ``targets`` int32 of
        shape (N,) (-1: the predicted class), ``relevances`` a list (one per input), ``output`` the
        explained output and ``model_outputs`` the model's outputs as the pass computed them (see
        :meth:`check_forward`). Usable inside ``tf.distribute.Strategy.run``; repeated calls never
        retrace. Targets the host can read (not those of a computation being traced) are checked
        against the explained output before the compiled call; one beyond it raises one of
        :data:`~interprettensor.engine.backend.RUNTIME_ERRORS` with a message that starts with
        ``target out of range``."""
        wanted = input_dtypes(self.model, len(specs), self.dtype)
        specs = [backend.spec((s.shape[0] if self.shape_specific else None,) + tuple(s.shape[1:]), d)
                 for s, d in zip(specs, wanted)]
        self._activate_for(specs)
        fn = self._function(specs, "target", layerwise)
        known = self._checked.get(id(fn))
        if known is not None:
            return known[1]

        def checked(xs, targets):
            if not backend.is_symbolic(targets) and not any(backend.is_symbolic(x) for x in xs):
                try:
                    self._check_targets(ops.convert_to_numpy(targets), xs)
                except ExplainError as e:
                    raise backend.runtime_error(str(e)) from None
            return fn(xs, targets)

        checked.__wrapped__ = fn  # type: ignore[attr-defined]
        self._checked[id(fn)] = (fn, checked)
        return checked

    # ------------------------------------------------------------------ public call
    def __call__(self, x: ArrayLike, target: ArrayLike | None = None, *, relevance: ArrayLike | None = None,
                 layerwise: bool = False, batch_size: int | None = None, return_output: bool = False,
                 position: ArrayLike | None = None, contrast: ArrayLike | None = None):
        """Relevance of ``x`` (an array shaped like ``x``; a list for multi-input models, a dict for
        models that take a dict). For integer inputs (token ids) the relevance has the shape of the ids:
        one value per token, the relevance that reached its embedding, summed over the embedding axis.

        Args:
            x: input batch (or list of batches for multi-input models, or a dict of named inputs).
            target: ``None`` (predicted class, or the most active channel of ``layer``), an int, or
                one int per sample.
            position: for an output with a sequence axis ``(N, T, classes)`` (a language model's
                next-token logits): explain the output at this position (an int, negative from the
                end, or one per sample); ``target`` is then a class (token) at that position.
            contrast: explain the difference ``logit[target] - logit[contrast]`` (an int, or one per
                sample): the backward pass starts from ``+z_target`` at the target and ``-z_contrast`` at
                the contrast class; LRP's backward pass is linear in its starting relevance, so this is
                the explanation of the target minus that of the contrast ("why A rather than B").
            relevance: a custom starting relevance shaped like the explained output (overrides target).
            layerwise: also return ``{layer name: relevance of that layer's output}`` (and the
                inputs' relevance under the input names), from the same backward pass.
            batch_size: split the input into batches of this size.
            return_output: also return the explained output (logits).
        """
        xs = self._inputs(x)
        self._activate_for(xs)
        self._check_indices(xs)
        n = int(xs[0].shape[0])
        targets = as_targets(target, n)
        R0 = self._custom_relevance(relevance, xs)
        contrasts = None
        if contrast is not None:
            if R0 is not None:
                raise ExplainError("contrast and relevance exclude each other: a custom relevance already says "
                                   "where the explanation starts")
            contrasts = as_targets(contrast, n)
        positions = self._positions(position, xs) if R0 is None else None
        if position is not None and R0 is not None:
            raise ExplainError("position and relevance exclude each other: a custom relevance already says "
                               "where the explanation starts")
        if R0 is None and n:
            self._check_targets(ops.convert_to_numpy(targets), xs, positions is not None)
            if contrasts is not None:
                self._check_targets(ops.convert_to_numpy(contrasts), xs, positions is not None)
        if n == 0:  # run one zero sample (XLA kernels reject zero-sized batches) and slice it away
            xs1 = [ops.zeros((1,) + tuple(t.shape[1:]), t.dtype) for t in xs]
            R1 = None if R0 is None else ops.zeros((1,) + tuple(R0.shape[1:]), R0.dtype)
            P1 = None if positions is None else ops.zeros((1,), "int32")
            C1 = None if contrasts is None else ops.zeros((1,), "int32")
            chunks = [tree.map_structure(lambda t: t[:0], c)
                      for c in self._run_batches(xs1, ops.full((1,), -1, dtype="int32"), R1, layerwise, 1, P1, C1,
                                                 return_output)]
        else:
            chunks = self._run_batches(xs, targets, R0, layerwise, batch_size or self.batch_size or n, positions,
                                       contrasts, return_output)
        rel = [np.concatenate([ops.convert_to_numpy(c[0][i]) for c in chunks]) for i in range(len(xs))]
        result: Any = rel[0] if len(xs) == 1 else rel
        if isinstance(x, dict):
            result = pack_inputs(self.model, rel)
        extra = []
        if layerwise:
            extra.append({k: np.concatenate([ops.convert_to_numpy(c[1][k]) for c in chunks]) for k in chunks[0][1]})
        if return_output:
            extra.append(np.concatenate([ops.convert_to_numpy(c[2]) for c in chunks]))
        return (result, *extra) if extra else result

    def _inputs(self, x: ArrayLike) -> list[Tensor]:
        """``x`` as checked tensors of :attr:`dtype` (building an unbuilt Sequential on it)."""
        n_inputs = len(self.graph.inputs) if self.graph is not None else len(self.model.inputs)
        xs = as_inputs(self.model, x, n_inputs, self.dtype)
        if not getattr(self.model, "built", True):  # a Sequential without an Input: build it on x
            try:
                self.model(xs[0][:1] if n_inputs == 1 else [t[:1] for t in xs])
            except (ValueError, TypeError) as e:
                raise ExplainError(f"model {self.model.name!r} is not built and cannot be built on input of shape "
                                   f"{tuple(xs[0].shape)}: {e}") from None
        n = int(xs[0].shape[0])
        if any(int(t.shape[0]) != n for t in xs):
            raise ExplainError(f"all inputs need the same batch size, got {[int(t.shape[0]) for t in xs]}")
        check_finite(xs)
        return xs

    def _check_indices(self, xs: Sequence[Tensor]) -> None:
        """Integer inputs read by an embedding must be valid rows of its table."""
        if self.graph is None:
            return
        for step in self.graph.steps:
            size = getattr(step.layer, "input_dim", None)
            if not step.handler.integer_inputs or not isinstance(size, int) or not step.inputs:
                continue
            if step.inputs[0] not in self.graph.inputs:
                continue
            i = self.graph.inputs.index(step.inputs[0])
            ids = ops.convert_to_numpy(xs[i])
            if ids.dtype.kind not in "iu" or not ids.size:
                continue
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= size:
                raise ExplainError(f"input {self.graph.input_names[i]!r} holds the index {hi if hi >= size else lo}, but "
                                   f"layer {step.name!r} ({step.type_name}) has {size} rows: indices must be in "
                                   f"[0, {size - 1}]")

    def _custom_relevance(self, relevance: ArrayLike | None, xs: Sequence[Tensor]) -> Tensor | None:
        """A custom starting relevance, checked: one finite row per sample, shaped like the explained
        output."""
        if relevance is None:
            return None
        n = int(xs[0].shape[0])
        R0 = ops.convert_to_tensor(np.asarray(relevance), dtype=_dtypes.name(self.dtype))
        if len(R0.shape) == 0 or int(R0.shape[0]) != n:
            raise ExplainError(f"relevance has shape {tuple(R0.shape)}: it needs one row per input sample "
                               f"({n}), shaped like the explained output")
        check_finite([R0], "relevance")
        if n:
            want = self.explained_shape(xs)
            if tuple(R0.shape[1:]) != want:
                where = f"layer {self.layer!r}" if self.layer else "the explained model output"
                raise ExplainError(f"relevance has shape {tuple(R0.shape)}, but {where} has shape "
                                   f"{(n,) + want}: give one relevance per output value")
        return R0

    def _positions(self, position: ArrayLike | None, xs: Sequence[Tensor]) -> Tensor | None:
        if position is None:
            return None
        shape = self.explained_shape(xs) if int(xs[0].shape[0]) else None
        if shape is not None and len(shape) < 2:
            raise ExplainError(f"position= needs an output with a sequence axis (N, T, classes); the explained "
                               f"output has shape (N, {', '.join(map(str, shape))})")
        return as_positions(position, int(xs[0].shape[0]), None if shape is None else shape[0])

    def _check_targets(self, targets: np.ndarray, xs: Sequence[Tensor], positions: bool = False) -> None:
        """Stop where a target (NumPy, -1: predicted) is beyond the explained output: checked on the
        host, before the compiled pass (which cannot raise on every backend). Needs the explained
        output's shape only where a target is given (:meth:`explained_shape`)."""
        t = np.asarray(targets)
        if not t.size or int(t.max()) < 0:
            return
        where = f"layer {self.layer!r}" if self.layer else "the model output"
        check_targets(t, self.explained_shape(xs), self.layer is not None, where, positions)

    def _run_batches(self, xs: list[Tensor], targets: Tensor, R0: Tensor | None, layerwise: bool,
                     bs: int, positions: Tensor | None = None, contrasts: Tensor | None = None,
                     return_output: bool = False) -> list:
        """The compiled pass on batches of ``bs``; the first checks the forward pass once. An explanation
        of one position (a language model's) returns the outputs only where they are asked for or checked:
        they are a vocabulary-sized tensor per position, held to the end of a pass that returns them."""
        n = int(xs[0].shape[0])
        chunks = []
        for lo in range(0, n, bs):
            part = [t[lo:lo + bs] for t in xs]
            outputs = return_output or not self._verified
            try:
                if contrasts is not None and positions is not None:
                    res = self._function(part, "position_contrast", layerwise, outputs)(
                        tuple(part), targets[lo:lo + bs], positions[lo:lo + bs], contrasts[lo:lo + bs])
                elif contrasts is not None:
                    res = self._function(part, "contrast", layerwise)(tuple(part), targets[lo:lo + bs],
                                                                      contrasts[lo:lo + bs])
                elif positions is not None:
                    res = self._function(part, "position", layerwise, outputs)(tuple(part), targets[lo:lo + bs],
                                                                               positions[lo:lo + bs])
                elif R0 is None:
                    res = self._function(part, "target", layerwise)(tuple(part), targets[lo:lo + bs])
                else:
                    res = self._function(part, "relevance", layerwise)(tuple(part), R0[lo:lo + bs])
            except backend.RUNTIME_ERRORS as e:
                msg = backend.error_message(e)
                if "is not in [0," in msg:  # a gather beyond an embedding's table
                    raise ExplainError(f"an index input is out of range for the table it reads: "
                                       f"{msg.splitlines()[0][:300]}") from None
                raise
            if self._start_shape is None:  # known now: later target checks need no probe
                self._start_shape = tuple(int(d) for d in res[2].shape[1:])
            if not self._verified:
                self.check_forward(part, res[3])
            chunks.append(res)
        return chunks

    # ------------------------------------------------------------------ forward-pass check
    def check_forward(self, xs: Sequence[Tensor], model_outputs: Sequence[Tensor]) -> None:
        """Check, on the first sample of ``xs``, that the forward pass the explainer explains (each
        layer as its LRP handler computes it; ``model_outputs`` from the compiled pass) reproduces the
        model's own output; raise an :class:`ExplainError` naming the first layer whose handler
        computes something else than the layer. Runs once per explainer, on its first call
        (``verify=False`` skips it); costs one eager forward pass of the model on one sample."""
        reference = model_dtype(self.model)
        ref = _dtypes.name(reference)  # ``reference`` as precision gives it, for layer_precision
        sample = [ops.cast(t, ref) if _dtypes.is_floating(t.dtype) else t for t in self._probe(xs)]
        n = int(sample[0].shape[0])
        # a quantised model is explained as its dequantised weights applied to float inputs: the model
        # is compared with its input quantisers switched off (interprettensor.engine.handlers.quantised)
        with weight_only(self.model):
            try:
                expected = tree.flatten(self.model(pack_inputs(self.model, sample), training=False))
            except Exception:  # noqa: BLE001 - the model cannot run eagerly on its own: nothing to compare with
                self._verified = True
                return
        rtol = reference_rtol(self.graph)
        if _dtypes.name(self.dtype) == ref:
            got = [ops.convert_to_numpy(t[:n]).astype(np.float64) for t in model_outputs]
        else:  # another precision than the model's: compare the model's own precision, eagerly
            got = [ops.convert_to_numpy(t).astype(np.float64) for t in self._eager_outputs(sample, reference)]
        if not outputs_agree(got, expected, rtol):
            with weight_only(self.model):
                locate_mismatch(self.graph, sample, reference, rtol)
            raise ExplainError("the forward pass that the explanation follows does not reproduce the model's "
                               "output, although every layer matched its own call: the model's wiring was not "
                               "followed. Please report this (Explainer(..., verify=False) skips the check)")
        self._verified = True

    def _eager_outputs(self, sample: Sequence[Tensor], dtype: Any) -> list[Tensor]:
        with layer_precision(self.graph, dtype):
            values, _ = forward(self.graph, sample, PassOptions(keep_activations=True))
        return [values[k] for k in self.graph.outputs]

    def _probe(self, xs: Sequence[Tensor]) -> list[Tensor]:
        """The inputs an eager check runs on: the first sample, or the whole batch where the graph was
        built for this batch's shape."""
        return list(xs) if self.shape_specific else [t[:1] for t in xs]

    def explained_shape(self, xs: Sequence[Tensor]) -> tuple:
        """The per-sample shape of the explained output (a custom ``relevance`` has this shape)."""
        if self._start_shape is None:
            ref = _dtypes.name(model_dtype(self.model))
            probe = [ops.cast(t, ref) if _dtypes.is_floating(t.dtype) else t for t in self._probe(xs)]
            with layer_precision(self.graph, model_dtype(self.model)):
                values, _ = forward(self.graph, probe)
            self._start_shape = tuple(int(d) for d in values[self.start_key].shape[1:])
        return self._start_shape


def lrp(model: keras.Model, x: ArrayLike, rule: str | Rule | Composite = "epsilon", target: ArrayLike | None = None,
        *, layer: str | None = None, output: int | str | None = None, relevance: ArrayLike | None = None,
        layerwise: bool = False, batch_size: int | None = None, canonize: bool = True,
        position: ArrayLike | None = None, contrast: ArrayLike | None = None,
        checkpoint: bool | int | Sequence[str] | None = None, **params: Any):
    """Explain ``model``'s prediction for ``x`` with LRP; returns relevance shaped like ``x``.

    A final softmax is skipped: the chosen class's logit is the starting relevance. See
    :class:`Explainer` for the arguments; ``it.lrp`` builds one and calls it once (build an
    :class:`Explainer` yourself to reuse the compiled pass).

    Example::

        R = it.lrp(model, x, rule="epsilon", epsilon=0.01)
        R = it.lrp(model, x, rule="epsilon_gamma_box", low=0.0, high=1.0, target=7)
        R = it.lrp(lm, tokens, rule="attnlrp", position=-1, target=7, contrast=3)  # logit 7 - logit 3
    """
    explainer = Explainer(model, rule, layer=layer, output=output, canonize=canonize, checkpoint=checkpoint, **params)
    return explainer(x, target, relevance=relevance, layerwise=layerwise, batch_size=batch_size, position=position,
                     contrast=contrast)
