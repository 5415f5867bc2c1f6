"""``it.lrp`` and :class:`Explainer`: LRP on any Keras 3 Sequential or Functional model.

The explainer flattens the model once (:mod:`interprettensor.graph`), assigns rules with a composite
(:mod:`interprettensor.composites`) and compiles forward and backward pass into one
``tf.function`` per input signature; calling it again with inputs of the same shape never retraces.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from .composites import Composite, get_composite
from .graph import Graph, Step, backward, build_graph, explained_output, forward, relu_denominator_steps
from .handlers import KEEP_ACTIVATIONS, RELU_DENOMINATOR, ExplainError
from .rules import Rule, ZBox, constant

__all__ = ["Explainer", "lrp"]

#: let layers with a built-in ReLU keep only their activation for the denominators where that is
#: exact (:func:`~interprettensor.graph.relu_denominator_steps`); a switch for tests and debugging
FUSE_RELU_DENOMINATORS = True

ArrayLike = Any


def _model_dtype(model: Any) -> tf.DType:
    inputs = getattr(model, "inputs", None)
    if inputs:
        try:
            return tf.as_dtype(inputs[0].dtype)
        except TypeError:
            pass
    for layer in getattr(model, "layers", []):
        dt = getattr(layer, "compute_dtype", None)
        if dt:
            return tf.as_dtype(dt)
    return tf.float32


#: ``dtype=`` values of :class:`Explainer`: (forward dtype, backward dtype)
_DTYPES = {"float64": ("float64", "float64"), "float32": ("float32", "float32"),
           "float16": ("float16", "float16"), "bfloat16": ("bfloat16", "bfloat16"),
           "mixed_float16": ("float16", "float32"), "mixed_bfloat16": ("bfloat16", "float32")}


def _resolve_dtype(model: Any, dtype: Any) -> tuple[tf.DType, tf.DType]:
    """(forward dtype, backward dtype) from ``dtype=`` or, when None, from the model: a Keras
    ``mixed_float16``/``mixed_bfloat16`` policy on its layers gives the matching mixed mode."""
    if dtype is None:
        for layer in getattr(model, "layers", []):
            name = getattr(getattr(layer, "dtype_policy", None), "name", "")
            if name in ("mixed_float16", "mixed_bfloat16"):
                dtype = name
                break
        else:
            d = _model_dtype(model)
            return d, d
    key = getattr(dtype, "name", dtype)
    key = str(key)
    if key not in _DTYPES:
        raise ExplainError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    fwd, bwd = _DTYPES[key]
    return tf.as_dtype(fwd), tf.as_dtype(bwd)


def _cast_floats(structure: Any, dtype: tf.DType) -> Any:
    def cast(t: Any) -> Any:
        if tf.is_tensor(t) and t.dtype.is_floating and t.dtype != dtype:
            return tf.cast(t, dtype)
        return t

    return tf.nest.map_structure(cast, structure)


def check_finite(xs: Sequence[tf.Tensor], what: str = "input") -> None:
    """Stop with an error naming the samples whose values hold NaN or inf (their relevance would be
    NaN)."""
    for i, t in enumerate(xs):
        if not t.dtype.is_floating or int(tf.size(t)) == 0:
            continue
        bad = tf.logical_not(tf.reduce_all(tf.math.is_finite(tf.reshape(t, (tf.shape(t)[0], -1))), axis=1))
        idx = np.flatnonzero(bad.numpy())
        if idx.size:
            which = f"{what} {i} " if len(xs) > 1 else f"the {what} "
            shown = ", ".join(map(str, idx[:10])) + (f", ... ({idx.size} in all)" if idx.size > 10 else "")
            raise ExplainError(f"{which}holds NaN or inf values in sample(s) {shown}; LRP of such samples is "
                               f"undefined: remove or repair them (explain_dataset can skip them: "
                               f"nonfinite='skip')")


def as_inputs(model: Any, x: ArrayLike, n_inputs: int, dtype: tf.DType) -> list[tf.Tensor]:
    """Convert ``x`` (array, tensor, or list of them for multi-input models) and check its shape
    against the model's inputs."""
    xs = list(x) if (n_inputs > 1 and isinstance(x, (list, tuple))) else [x]
    if len(xs) != n_inputs:
        raise ExplainError(f"the model takes {n_inputs} inputs, got {len(xs)}")
    out = []
    expected = [tuple(kt.shape) for kt in model.inputs] if getattr(model, "inputs", None) else [None] * n_inputs
    for i, (xi, exp) in enumerate(zip(xs, expected)):
        t = tf.convert_to_tensor(np.asarray(xi) if not tf.is_tensor(xi) else xi)
        if not t.dtype.is_floating:
            t = tf.cast(t, dtype)
        elif t.dtype != dtype:
            t = tf.cast(t, dtype)
        if exp is not None:
            ok = t.shape.rank == len(exp) and all(e is None or e == s for e, s in zip(exp[1:], t.shape[1:]))
            if not ok:
                raise ExplainError(f"input {i} has shape {tuple(t.shape)} but the model's input "
                                   f"{model.inputs[i].name!r} expects {exp} (None = any size)")
        out.append(t)
    return out


class _ComputePolicy(keras.DTypePolicy):
    """A dtype policy that computes in ``compute`` and keeps the variables in ``variable`` (read as
    ``compute``, like Keras' mixed-precision policies)."""

    def __init__(self, compute: str, variable: str):
        super().__init__(variable)
        self._compute_dtype = compute
        self._name = f"{variable}_computing_in_{compute}"


class Explainer:
    """A compiled LRP explainer for one model and one rule or composite.

    Args:
        model: a Keras 3 Sequential or Functional model (nested models are fine), or an
            :class:`interprettensor.Sequential`.
        rule: a rule name (``'epsilon'``, ``'alphabeta'``, ``'gamma'``, ...), a preset name
            (``'epsilon_gamma_box'``, ``'preset_a'``, ...), a :class:`~interprettensor.rules.Rule` or a
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
        jit_compile: compile with XLA.
        batch_size: split larger inputs into batches of this size.
        dtype: compute precision: ``'float32'``, ``'float64'``, ``'float16'``/``'bfloat16'`` (forward and
            backward pass in that precision; stabilisers are kept above the dtype's smallest normal
            number; in float16 the relevance is scaled by a power of two against underflow and
            returned as float32) or ``'mixed_float16'``/``'mixed_bfloat16'`` (forward pass in low precision, the
            relevance divisions in float32: the accurate choice). Default: the model's input dtype, or
            the mixed mode of a Keras mixed-precision policy on the model.
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
                 dtype: str | tf.DType | None = None, verify: bool = True, **params: Any):
        if keras.backend.backend() != "tensorflow":
            raise ExplainError(f"interprettensor needs the TensorFlow backend of Keras, "
                               f"got {keras.backend.backend()!r}")
        self.model = model
        self.graph: Graph = build_graph(model, canonize=canonize)
        self.composite = get_composite(rule, **params)
        self.rules: list[Rule] = self.composite.assign(self.graph)
        self.layer = layer
        if layer is not None:
            self.start_step: Step | None = self.graph.find(layer)
            self.start_key = self.start_step.outputs[0]
        else:
            self.start_key, self.start_step = explained_output(self.graph, output, probability)
        self.probability = bool(probability)
        self.verify = bool(verify)
        self._verified = not self.verify
        self.jit_compile = jit_compile
        self.batch_size = batch_size
        #: dtype of the inputs and forward pass; ``backward_dtype``: of the relevance computation
        self.dtype, self.backward_dtype = _resolve_dtype(model, dtype)
        self._functions: dict = {}
        self.trace_count = 0
        # per mode (True: starting relevance = output x mask; False: a custom relevance)
        self._relu_steps = {start: relu_denominator_steps(self.graph, self.rules, self.start_key, start)
                            for start in (True, False)}

    # ------------------------------------------------------------------ introspection
    def rule_map(self) -> dict[str, Rule]:
        """The rule each layer gets: ``{layer name: rule}``."""
        return {s.name: r for s, r in zip(self.graph.steps, self.rules)}

    # ------------------------------------------------------------------ compiled core
    def _bounds_rules(self, xs: Sequence[tf.Tensor]) -> list[Rule]:
        """ZBox bounds are given for the model input; map them through the affine preprocessing layers
        before the layer (rescaling, normalisation, padding; the composite assigns z^B only where the
        input is such) by running those layers on them. A decreasing map (a negative scale) swaps
        them, so the mapped bounds are their element-wise minimum and maximum."""
        rules = list(self.rules)
        for i, (step, rule) in enumerate(zip(self.graph.steps, rules)):
            if not isinstance(rule, ZBox) or step.inputs[0] in self.graph.inputs:
                continue
            mapped = []
            for bound in (rule.low, rule.high):
                filled = [tf.broadcast_to(constant(bound, x.dtype), tf.shape(x)) for x in xs]
                values, _ = forward(self._prefix(step), filled)
                mapped.append(values[step.inputs[0]])
            rules[i] = ZBox(tf.minimum(mapped[0], mapped[1]), tf.maximum(mapped[0], mapped[1]))
        return rules

    def _prefix(self, step: Step) -> Graph:
        needed = set(step.inputs)
        order = []
        for s in reversed(self.graph.steps[: self.graph.steps.index(step)]):
            if any(k in needed for k in s.outputs):
                order.append(s)
                needed.update(s.inputs)
        return Graph(self.graph.inputs, list(step.inputs), order[::-1], [], [])

    def _core(self, xs: Sequence[tf.Tensor], targets: tf.Tensor | None, R0: tf.Tensor | None,
              layerwise: bool) -> tuple:
        self.trace_count += 1
        fused = self._relu_steps[R0 is None] if FUSE_RELU_DENOMINATORS else frozenset()
        token = RELU_DENOMINATOR.set(fused)  # for the forward and the backward pass
        try:
            return self._pass(xs, targets, R0, layerwise)
        finally:
            RELU_DENOMINATOR.reset(token)

    def _pass(self, xs: Sequence[tf.Tensor], targets: tf.Tensor | None, R0: tf.Tensor | None,
              layerwise: bool) -> tuple:
        values, records = forward(self.graph, xs)
        out = values[self.start_key]
        if self.backward_dtype != self.dtype or self.dtype in (tf.float16, tf.bfloat16):
            # mixed precision: relevance in backward_dtype; low precision: layers of a float32 model
            # (autocasting their inputs) may have returned float32, so make the dtypes uniform
            records = _cast_floats(records, self.backward_dtype)
            out = tf.cast(out, self.backward_dtype)
            xs = [tf.cast(x, self.backward_dtype) for x in xs]
        size = int(np.prod(out.shape[1:]))
        flat = tf.reshape(out, (-1, size))
        if R0 is not None:
            R = tf.reshape(tf.cast(R0, out.dtype), tf.shape(out))
        elif self.layer is not None and out.shape.rank > 2:
            # a channel of a hidden layer: every position of channel ``target``
            depth = int(out.shape[-1])
            axes = list(range(1, out.shape.rank - 1))
            pred = tf.argmax(tf.reduce_sum(out, axis=axes), axis=-1, output_type=tf.int32)
            t = tf.where(targets < 0, pred, targets)
            tf.debugging.assert_less(t, depth, message=f"target out of range: layer {self.layer!r} has "
                                                       f"{depth} channels, valid targets are 0..{depth - 1}")
            mask = tf.one_hot(t, depth, dtype=out.dtype)
            R = out * tf.reshape(mask, [-1] + [1] * len(axes) + [depth])
        else:
            depth = int(flat.shape[-1])
            pred = tf.argmax(flat, axis=-1, output_type=tf.int32)
            t = tf.where(targets < 0, pred, targets)
            where = f"layer {self.layer!r}" if self.layer else "the model output"
            tf.debugging.assert_less(t, depth, message=f"target out of range: {where} has {depth} "
                                                       f"units, valid targets are 0..{depth - 1}")
            R = tf.reshape(flat * tf.one_hot(t, depth, dtype=flat.dtype), tf.shape(out))
        scale = None
        if R.dtype == tf.float16:
            # float16 has a narrow range: relevance spread over many input elements would underflow.
            # LRP is linear in the starting relevance, so scale each sample's by a power of two (exact)
            # towards a peak of 2**10 and undo it at the end, returning float32 (the unscaled values may
            # lie outside float16's range). The factor is at most 2**10: the ratios R / z grow with it.
            axes = list(range(1, R.shape.rank))
            peak = tf.reduce_max(tf.abs(tf.cast(R, tf.float32)), axis=axes)
            exponent = tf.round(tf.math.log(1024.0 / tf.maximum(peak, 1e-30)) / tf.math.log(2.0))
            scale = tf.where(peak > 0, tf.pow(2.0, tf.clip_by_value(exponent, 0.0, 10.0)), 1.0)
            R = tf.cast(tf.cast(R, tf.float32) * tf.reshape(scale, [-1] + [1] * len(axes)), R.dtype)
        rel, lw = backward(self.graph, records, {self.start_key: R}, self._bounds_rules(xs), keep=layerwise)
        result = [rel[k] if k in rel else tf.zeros_like(x) for k, x in zip(self.graph.inputs, xs)]
        if layerwise:
            for name, k, x in zip(self.graph.input_names, self.graph.inputs, xs):
                lw[name] = rel.get(k, tf.zeros_like(x))
        if scale is not None:
            def unscale(t: Any) -> Any:
                if not tf.is_tensor(t) or not t.dtype.is_floating or t.shape.rank == 0:
                    return t
                return tf.cast(t, tf.float32) / tf.reshape(scale, [-1] + [1] * (t.shape.rank - 1))

            result = [unscale(r) for r in result]
            lw = tf.nest.map_structure(unscale, lw)
        return result, lw, out

    def _function(self, xs: Sequence[tf.Tensor], mode: str, layerwise: bool):
        sig = tuple(tf.TensorSpec((None,) + tuple(x.shape[1:]), x.dtype) for x in xs)
        key = (mode, layerwise, sig)
        fn = self._functions.get(key)
        if fn is None:
            if mode == "target":
                def run(xs, targets):
                    with self._layer_precision():
                        return self._core(xs, targets, None, layerwise)

                spec = (sig, tf.TensorSpec((None,), tf.int32))
            else:
                def run(xs, R0):
                    with self._layer_precision():
                        return self._core(xs, None, R0, layerwise)

                spec = (sig, tf.TensorSpec(None, self.dtype))
            fn = tf.function(run, input_signature=spec, jit_compile=self.jit_compile, autograph=False)
            self._functions[key] = fn
        return fn

    @contextlib.contextmanager
    def _layer_precision(self, dtype: tf.DType | None = None) -> Iterator[None]:
        """While tracing in a dtype other than the layers' own, make every tensor of the pass have it:

        * wider (float64 for a float32 model): Keras layers compute in float64 instead of casting
          their inputs to float32 (which would round the pass at every reshape, pooling or
          activation); their variables are cast on reading, as under mixed precision;
        * narrower (float16/bfloat16 for a float32 model): layers without weights (pooling,
          activations, ...) compute in the low precision instead of autocasting their inputs to
          float32; layers with weights are computed by their handlers in the low precision.
        """
        dtype = self.dtype if dtype is None else dtype
        changed, unautocast = [], []
        for step in self.graph.steps:
            layer = step.layer
            if not isinstance(layer, keras.layers.Layer) or layer.compute_dtype == dtype.name \
                    or not keras.backend.is_float_dtype(layer.compute_dtype):
                continue
            policy = getattr(layer, "dtype_policy", None)
            if dtype.size > tf.as_dtype(layer.compute_dtype).size:
                if type(policy) is keras.DTypePolicy:
                    changed.append((layer, policy))
                    layer.dtype_policy = _ComputePolicy(dtype.name, policy.variable_dtype)
            elif not layer.weights and getattr(layer, "autocast", False):
                layer.autocast = False
                unautocast.append(layer)
        try:
            yield
        finally:
            for layer, policy in reversed(changed):
                layer.dtype_policy = policy
            for layer in unautocast:
                layer.autocast = True

    def compiled(self, specs: Sequence[tf.TensorSpec | tf.Tensor], layerwise: bool = False):
        """The compiled per-batch function for inputs like ``specs`` (tensors or TensorSpecs, one per
        model input; the batch dimension is free): ``fn(xs, targets) -> (relevances, layerwise,
        output)`` with ``xs`` a tuple of tensors in :attr:`dtype`, ``targets`` int32 of shape (N,)
        (-1: the predicted class), ``relevances`` a list (one per input) and ``output`` the explained
        output. Usable inside ``tf.distribute.Strategy.run``; repeated calls never retrace."""
        specs = [tf.TensorSpec((None,) + tuple(s.shape[1:]), self.dtype) for s in specs]
        return self._function(specs, "target", layerwise)

    # ------------------------------------------------------------------ public call
    def __call__(self, x: ArrayLike, target: ArrayLike | None = None, *, relevance: ArrayLike | None = None,
                 layerwise: bool = False, batch_size: int | None = None, return_output: bool = False):
        """Relevance of ``x`` (an array shaped like ``x``; a list for multi-input models).

        Args:
            x: input batch (or list of batches for multi-input models).
            target: ``None`` (predicted class, or the most active channel of ``layer``), an int, or
                one int per sample.
            relevance: a custom starting relevance shaped like the explained output (overrides target).
            layerwise: also return ``{layer name: relevance of that layer's output}`` (and the
                inputs' relevance under the input names), from the same backward pass.
            batch_size: split the input into batches of this size.
            return_output: also return the explained output (logits).
        """
        n_inputs = len(self.graph.inputs)
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
        targets = self._targets(target, n)
        R0 = None if relevance is None else tf.convert_to_tensor(np.asarray(relevance), self.dtype)
        if R0 is not None:
            if R0.shape.rank == 0 or int(R0.shape[0]) != n:
                raise ExplainError(f"relevance has shape {tuple(R0.shape)}: it needs one row per input sample "
                                   f"({n}), shaped like the explained output")
            check_finite([R0], "relevance")
        if n and not self._verified:
            self.verify_forward(xs)
        if R0 is not None and n:
            want = self.explained_shape(xs)
            if tuple(R0.shape[1:]) != want:
                where = f"layer {self.layer!r}" if self.layer else "the explained model output"
                raise ExplainError(f"relevance has shape {tuple(R0.shape)}, but {where} has shape "
                                   f"{(n,) + want}: give one relevance per output value")
        empty = n == 0
        if empty:  # run one zero sample (XLA kernels reject zero-sized batches) and slice it away
            xs = [tf.zeros((1,) + tuple(t.shape[1:]), t.dtype) for t in xs]
            targets = tf.fill((1,), -1)
            R0 = None if R0 is None else tf.zeros((1,) + tuple(R0.shape[1:]), R0.dtype)
            n = 1
        bs = batch_size or self.batch_size or max(n, 1)
        chunks = []
        for lo in range(0, max(n, 1), bs):
            hi = min(lo + bs, n)
            part = [t[lo:hi] for t in xs]
            try:
                if R0 is None:
                    res = self._function(part, "target", layerwise)(tuple(part), targets[lo:hi])
                else:
                    res = self._function(part, "relevance", layerwise)(tuple(part), R0[lo:hi])
            except tf.errors.InvalidArgumentError as e:
                msg = e.message or str(e)
                if "target out of range" in msg:
                    detail = msg[msg.index("target out of range"):].split("]")[0]
                    raise ExplainError(detail) from None
                msg = msg.strip().splitlines()[0]
                if R0 is not None:
                    raise ExplainError(f"relevance of shape {tuple(R0.shape)} does not fit the explained "
                                       f"output: {msg}") from None
                raise
            chunks.append(res)
        if empty:
            chunks = [tf.nest.map_structure(lambda t: t[:0], c) for c in chunks]
        rel = [np.concatenate([c[0][i].numpy() for c in chunks]) for i in range(n_inputs)]
        result: Any = rel[0] if n_inputs == 1 else rel
        extra = []
        if layerwise:
            extra.append({k: np.concatenate([np.asarray(c[1][k]) for c in chunks]) for k in chunks[0][1]})
        if return_output:
            extra.append(np.concatenate([c[2].numpy() for c in chunks]))
        return (result, *extra) if extra else result

    # ------------------------------------------------------------------ forward-pass check
    def _reference_dtype(self) -> tf.DType:
        return _model_dtype(self.model)

    def _eager_values(self, xs: Sequence[tf.Tensor], keep_activations: bool) -> dict:
        token = KEEP_ACTIVATIONS.set(keep_activations)
        try:
            with self._layer_precision(self._reference_dtype()):
                values, _ = forward(self.graph, xs)
        finally:
            KEEP_ACTIVATIONS.reset(token)
        return values

    def explained_shape(self, xs: Sequence[tf.Tensor]) -> tuple:
        """The per-sample shape of the explained output (a custom ``relevance`` has this shape)."""
        if getattr(self, "_start_shape", None) is None:
            probe = [tf.cast(t[:1], self._reference_dtype()) for t in xs]
            self._start_shape = tuple(int(d) for d in self._eager_values(probe, False)[self.start_key].shape[1:])
        return self._start_shape

    def verify_forward(self, xs: Sequence[tf.Tensor]) -> None:
        """Check, on up to two samples of ``xs``, that the forward pass the explainer explains (each layer
        as its LRP handler computes it) reproduces the model's own output; raise an
        :class:`ExplainError` naming the first layer whose handler computes something else than the
        layer. Runs once per explainer, on its first call (``verify=False`` skips it)."""
        dtype = self._reference_dtype()
        sample = [tf.cast(t[:2], dtype) for t in xs]
        try:
            expected = self.model(sample[0] if len(sample) == 1 else list(sample), training=False)
        except Exception:  # noqa: BLE001 - the model cannot run eagerly on its own: nothing to compare with
            self._verified = True
            return
        from keras import tree

        expected = [np.asarray(e, np.float64) for e in tree.flatten(expected)]
        values = self._eager_values(sample, True)
        self._start_shape = tuple(int(d) for d in values[self.start_key].shape[1:])
        got = [np.asarray(tf.cast(values[k], tf.float64)) for k in self.graph.outputs]
        rtol = 1e-3 if all(getattr(layer, "compute_dtype", "float32") in ("float32", "float64")
                           for layer in (s.layer for s in self.graph.steps)) else 3e-2
        if len(got) == len(expected) and all(_close(a, b, rtol) for a, b in zip(got, expected)):
            self._verified = True
            return
        self._locate_mismatch(sample, rtol)
        worst = max((float(np.max(np.abs(a - b))) for a, b in zip(got, expected) if a.shape == b.shape), default=None)
        raise ExplainError(f"the forward pass that the explanation follows does not reproduce the model's output "
                           f"(largest difference {worst!r}); every layer matched its own call, so the model's "
                           f"wiring was not followed. Please report this (Explainer(..., verify=False) skips the "
                           f"check)")

    def _locate_mismatch(self, sample: Sequence[tf.Tensor], rtol: float) -> None:
        """Run the steps one by one, comparing each handler's forward with the layer's own call."""
        token = KEEP_ACTIVATIONS.set(True)
        try:
            with self._layer_precision(self._reference_dtype()):
                values = dict(zip(self.graph.inputs, sample))
                for step in self.graph.steps:
                    ins = [values[k] for k in step.inputs]
                    outs, _ = step.handler.forward(step.layer, ins, step)
                    ref = step.call(ins)
                    for bn in step.fused:
                        ref = [bn(ref[0], training=False)]
                    for a, b in zip(outs, ref):
                        a64, b64 = np.asarray(tf.cast(a, tf.float64)), np.asarray(tf.cast(b, tf.float64))
                        if a64.shape != b64.shape or not _close(a64, b64, rtol):
                            diff = (float(np.max(np.abs(a64 - b64))) if a64.shape == b64.shape
                                    else f"shape {a64.shape} instead of {b64.shape}")
                            raise ExplainError(
                                f"layer {step.name!r} ({step.type_name}): its LRP handler "
                                f"({type(step.handler).__name__}) computes another output than the layer itself "
                                f"(largest difference {diff}), so its explanation would be wrong. Register a handler "
                                f"that computes what {step.type_name} computes (interprettensor.register_handler), "
                                f"or explain the model without it (Explainer(..., verify=False) skips this check)")
                    values.update(zip(step.outputs, outs))
        finally:
            KEEP_ACTIVATIONS.reset(token)

    def _targets(self, target: ArrayLike | None, n: int) -> tf.Tensor:
        return as_targets(target, n)


def _close(a: np.ndarray, b: np.ndarray, rtol: float) -> bool:
    """Equal up to ``rtol`` of each value's magnitude plus ``rtol`` of the largest magnitude."""
    if a.shape != b.shape:
        return False
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return bool(np.all(np.abs(a - b) <= rtol * (np.abs(b) + scale) + 1e-30))


def as_targets(target: ArrayLike | None, n: int) -> tf.Tensor:
    """``target`` (None, an int, or one int per sample) as int32 of shape (n,); -1 = predicted."""
    if target is None:
        return tf.fill((n,), -1)
    t = np.asarray(target)
    if t.ndim == 0:
        t = np.full((n,), int(t))
    if t.shape != (n,):
        raise ExplainError(f"target must be an int or one int per sample ({n}), got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise ExplainError(f"target must be integer class indices, got {t.dtype}")
    if (t < 0).any():
        raise ExplainError(f"target out of range: negative class index {int(t.min())}")
    return tf.constant(t, tf.int32)


def lrp(model: keras.Model, x: ArrayLike, rule: str | Rule | Composite = "epsilon", target: ArrayLike | None = None,
        *, layer: str | None = None, output: int | str | None = None, relevance: ArrayLike | None = None,
        layerwise: bool = False, batch_size: int | None = None, canonize: bool = True, **params: Any):
    """Explain ``model``'s prediction for ``x`` with LRP; returns relevance shaped like ``x``.

    A final softmax is skipped: the chosen class's logit is the starting relevance. See
    :class:`Explainer` for the arguments; ``it.lrp`` builds one and calls it once (build an
    :class:`Explainer` yourself to reuse the compiled pass).

    Example::

        R = it.lrp(model, x, rule="epsilon", epsilon=0.01)
        R = it.lrp(model, x, rule="epsilon_gamma_box", low=0.0, high=1.0, target=7)
    """
    explainer = Explainer(model, rule, layer=layer, output=output, canonize=canonize, **params)
    return explainer(x, target, relevance=relevance, layerwise=layerwise, batch_size=batch_size)
