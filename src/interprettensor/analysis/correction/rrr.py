"""Right for the Right Reasons: fine-tuning with a penalty on the explanation of annotated regions.

Two forms of the penalty, added to the model's own loss ``L`` (the cross-entropy) in every training step:

* ``method="gradient"`` (Ross et al. 2017, "Right for the right reasons: training differentiable
  models by constraining their explanations", eq. 1): the squared input gradient of the summed
  log-probabilities on the annotated (irrelevant) input elements,

  .. math:: P_{grad} = \\frac{1}{N} \\sum_n \\sum_d \\Big(A_{nd} \\,
            \\frac{\\partial}{\\partial x_{nd}} \\sum_k \\log p_k(x_n)\\Big)^2

* ``method="lrp"`` (the LRP form of Reveal to Revise, Pahde et al. 2023, "Reveal to Revise: an
  explainable AI life cycle for iterative bias correction of deep models", RRR with the explanation's
  attribution in place of the gradient): the squared relevance that the engine's rules give the
  annotated input elements,

  .. math:: P_{lrp} = \\frac{1}{N} \\sum_n \\sum_d \\big(A_{nd} \\, R_d(x_n)\\big)^2, \\qquad
            R(x_n) = \\sum_k \\big(1 - K p_k(x_n)\\big) R^{(k)}(x_n)

  where ``R^(k)`` is the relevance of logit ``k`` (of ``K``): the backward pass starts from
  ``R0_k = z_k (1 - K p_k)``, the logits times the gradient of Ross et al.'s ``sum_k log p_k`` with
  respect to them (``start="log_probs"``; ``start="label"``: ``R = R^(y_n)``, the true class's logit,
  which a model can empty by shifting all its logits without changing what it relies on;
  ``start="classes"``: every class's relevance, ``P = 1/N sum_n sum_k sum_d (A_nd R^(k)_d(x_n))^2``). A
  model with a final softmax uses ``z = log p``. (Reveal to Revise's own RRR code penalises input
  gradients; this LRP form, the squared masked relevance in Ross et al.'s shape, is this module's
  reading of "penalise the relevance on the artefact".)

with ``A`` the annotation mask (1 on the artefact, 0 elsewhere; an (N, H, W) mask is broadcast over
the channels). The training loss is ``L + lam * P``. The relevance ``R`` is computed by
:class:`~interprettensor.Explainer`'s compiled pass inside the training step; its backward pass is made
of vector-Jacobian products on the forward pass's values, so the gradient of ``P_lrp`` with respect to
the weights is the exact second-order derivative of the LRP pass (denominators included), no engine
change needed. Training runs on the TensorFlow backend (a ``train_step`` override).

Measurement: :func:`~.measure.relevance_share`, the share of a heatmap's positive relevance that falls
on the mask; :func:`~.shortcut.plant_watermark` makes a planted-shortcut data set.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from ...engine.errors import ExplainError

__all__ = ["RRRModel", "rrr_fit", "rrr_penalty"]

METHODS = ("gradient", "lrp")
#: where the LRP penalty's backward pass starts: ``'log_probs'`` (the default; Ross et al.'s summed
#: log-probabilities, linearised at the logits: ``R0_k = z_k (1 - K p_k)``, the gradient of
#: ``sum_k log p_k`` with respect to the logits times the logits; by the linearity of the backward pass
#: ``R = sum_k (1 - K p_k) R^(k)``, the class relevances weighted as the gradient weighs them; invariant
#: to adding a constant to all logits, which one logit's explanation is not) or ``'label'`` (the true
#: class's logit, ``R = R^(y)``) or ``'classes'`` (every logit's relevance penalised: the squares of
#: ``R^(1) .. R^(K)`` summed, K backward passes per sample)
STARTS = ("log_probs", "label", "classes")


def _tf():
    if keras.backend.backend() != "tensorflow":
        raise ExplainError(f"RRR fine-tuning needs the TensorFlow backend (a train_step override with nested "
                           f"gradient tapes); the Keras backend is {keras.backend.backend()!r}")
    import tensorflow as tf

    return tf


def _final_softmax(model: keras.Model) -> bool:
    """Whether the model's output is a softmax (probabilities) rather than logits."""
    last = model.layers[-1] if getattr(model, "layers", None) else None
    if isinstance(last, keras.layers.Softmax):
        return True
    act = getattr(last, "activation", None)
    return getattr(act, "__name__", "") == "softmax"


def _mask_like(mask: Any, x: Any) -> Any:
    """The annotation ``mask`` broadcastable to ``x``: an (N, H, W) mask of a channels-last (N, H, W, C)
    ``x`` gets a channel axis."""
    from keras import ops

    mask = ops.cast(mask, x.dtype)
    if len(mask.shape) == len(x.shape) - 1:
        mask = ops.expand_dims(mask, -1)
    if len(mask.shape) != len(x.shape):
        raise ExplainError(f"mask of shape {tuple(mask.shape)} does not fit inputs of shape {tuple(x.shape)}: give "
                           f"one like the inputs or without their channel axis")
    return mask


def _labels(y: Any, tf: Any) -> Any:
    """Integer class labels (one-hot or probability rows: their argmax)."""
    y = tf.convert_to_tensor(y)
    if len(y.shape) >= 2 and y.shape[-1] is not None and y.shape[-1] > 1:
        y = tf.argmax(y, axis=-1)
    return tf.cast(tf.reshape(y, [-1]), tf.int32)


class _Penalty:
    """``P(x, y, mask)`` of :mod:`this module <interprettensor.analysis.correction.rrr>`, differentiable
    with respect to the model's weights (TensorFlow)."""

    def __init__(self, model: keras.Model, method: str = "lrp", rule: Any = None,
                 from_logits: bool | None = None, start: str = "log_probs", **rule_params: Any):
        if method not in METHODS:
            raise ExplainError(f"unknown RRR method {method!r}: use one of {METHODS}")
        if start not in STARTS:
            raise ExplainError(f"unknown starting relevance {start!r}: use one of {STARTS}")
        if method == "gradient" and (rule_params or start != "log_probs" or rule is not None):
            given = sorted(rule_params) + [f"{k}={v!r}" for k, v in (("start", start), ("rule", rule))
                                           if v is not None and v != "log_probs"]
            raise ExplainError(f"rule, rule parameters and start= apply only to method='lrp', got {given}")
        shape = getattr(model, "output_shape", None)
        if not isinstance(shape, tuple) or len(shape) != 2 or not isinstance(shape[-1], int) or shape[-1] < 2:
            raise ExplainError(f"RRR needs a classifier with one output of shape (N, classes >= 2) (logits or a "
                               f"softmax); model {model.name!r} has output shape {shape}")
        self.model = model
        self.method = method
        self.rule = "epsilon" if rule is None else rule
        self.start = start
        self.rule_params = rule_params
        self.from_logits = (not _final_softmax(model)) if from_logits is None else bool(from_logits)
        self._explainer = None
        self._fns: dict = {}

    def explainer(self):
        if self._explainer is None:
            from ...engine.explainer import Explainer

            self._explainer = Explainer(self.model, self.rule, verify=False, **self.rule_params)
            if self._explainer.shape_specific:
                raise ExplainError(f"model {self.model.name!r} can only be explained per input shape; RRR's LRP "
                                   f"penalty needs one traced pass for every batch")
        return self._explainer

    def relevance(self, x: Any, y: Any, out: Any) -> Any:
        """The relevance ``R`` of the LRP penalty (see :data:`STARTS`), differentiable with respect to
        the weights; ``out``: the model's output on ``x``."""
        tf = _tf()
        e = self.explainer()
        spec = [tf.TensorSpec((None,) + tuple(x.shape[1:]), x.dtype)]
        labels = _labels(y, tf)
        if self.start in ("label", "classes"):
            fn = self._fns.get("label")
            if fn is None:
                fn = self._fns["label"] = e.compiled(spec).__wrapped__
            if self.start == "label":
                return fn((x,), labels)[0][0]
            k = int(self.model.output_shape[-1])
            n = tf.shape(x)[0]
            xs = tf.repeat(x, k, axis=0)  # sample n's copies n*k .. n*k + k - 1 explain classes 0 .. k - 1
            R = fn((xs,), tf.tile(tf.range(k, dtype=tf.int32), [n]))[0][0]
            return tf.reshape(R, tf.concat([[n, k], tf.shape(x)[1:]], 0))
        fn = self._fns.get("log_probs")
        if fn is None:
            fn = self._fns["log_probs"] = e._function(spec, "relevance", False)  # a custom starting relevance
        z = tf.cast(out if self.from_logits else tf.math.log(tf.maximum(out, 1e-12)), e.dtype)
        p = tf.nn.softmax(z)
        k = tf.cast(tf.shape(z)[-1], z.dtype)
        return fn((tf.cast(x, e.dtype),), z * (1.0 - k * p))[0][0]

    def log_probs(self, out: Any) -> Any:
        """``log p_k`` from the model's output (logits, or probabilities clipped at 1e-12)."""
        tf = _tf()
        return tf.nn.log_softmax(out) if self.from_logits else tf.math.log(tf.maximum(out, 1e-12))

    def log_prob_gradient(self, x: Any, training: bool = False) -> tuple[Any, Any]:
        """``(d/dx sum_k log p_k(x), model output)``; differentiable with respect to the weights."""
        tf = _tf()
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = self.model(x, training=training)
            total = tf.reduce_sum(self.log_probs(out))
        return tape.gradient(total, x), out

    def __call__(self, x: Any, y: Any, mask: Any, explanation: Any = None, out: Any = None) -> Any:
        """``P`` of the batch; ``explanation``: the input gradient or relevance if already computed,
        ``out``: the model's output on ``x`` (computed if not given)."""
        tf = _tf()
        x = tf.convert_to_tensor(x)
        e = explanation
        if e is None and self.method == "gradient":
            e = self.log_prob_gradient(x)[0]
        elif e is None:
            if out is None and self.start != "label":
                out = self.model(x, training=False)
            e = self.relevance(x, y, out)
        e = tf.cast(e, x.dtype)
        m = _mask_like(mask, x)
        if len(e.shape) == len(x.shape) + 1:  # one relevance per class
            m = m[:, None]
        per_sample = tf.reduce_sum(tf.reshape(tf.square(m * e), [tf.shape(e)[0], -1]), axis=1)
        return tf.reduce_mean(per_sample)


def rrr_penalty(model: keras.Model, x: Any, y: Any, mask: Any, *, method: str = "lrp", rule: Any = None,
                from_logits: bool | None = None, start: str = "log_probs", **rule_params: Any) -> Any:
    """The RRR penalty ``P`` (module docstring: ``P_grad`` or ``P_lrp``) of one batch, as a scalar tensor
    differentiable with respect to ``model``'s weights (call it under a ``tf.GradientTape``).

    Args:
        model: a Keras classifier (logits or a final softmax; ``from_logits`` overrides the guess).
        x, y: inputs and integer (or one-hot) labels; ``mask``: 1 on the annotated (wrong-reason) input
            elements, shaped like ``x`` or without its channel axis.
        method: ``'gradient'`` (Ross et al. 2017) or ``'lrp'`` (relevance of the true class under
            ``rule`` and ``rule_params``, as :class:`~interprettensor.Explainer` takes them).
    """
    return _Penalty(model, method, rule, from_logits, start, **rule_params)(x, y, mask)


class RRRModel(keras.Model):
    """``model`` fine-tuned with the RRR penalty: its loss is the compiled loss plus ``lam * P``
    (module docstring). Train it with ``fit`` on data ``(x, y, mask)`` (a PyDataset or ``tf.data``
    yielding triples, or arrays as ``fit(x, y, sample_weight=mask)``: the third element is the mask,
    never a sample weight); the wrapped ``model``'s weights are the ones trained. The logs show
    ``loss`` (the total), ``penalty`` (``P``, unweighted) and the compiled metrics.

    Args:
        model: the Keras classifier to correct.
        lam: the penalty's weight ``lambda``.
        method: ``'lrp'`` (the default) or ``'gradient'``.
        rule: the engine's rule or preset for ``method='lrp'`` (default ``'epsilon'``); ``rule_params``
            its parameters.
        from_logits: whether ``model`` outputs logits (default: unless its last layer is a softmax).
        start: where the LRP penalty's backward pass starts (:data:`STARTS`).

    Example::

        rrr = it.correction.RRRModel(model, lam=10.0, rule="epsilon")
        rrr.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        rrr.fit(x, y, sample_weight=masks, epochs=3)
    """

    def __init__(self, model: keras.Model, lam: float = 1.0, method: str = "lrp", rule: Any = None,
                 from_logits: bool | None = None, start: str = "log_probs", **rule_params: Any):
        _tf()
        super().__init__(name=f"rrr_{model.name}")
        if not float(lam) >= 0.0:
            raise ExplainError(f"lam must be a non-negative number, got {lam!r}")
        self.model = model
        self.lam = float(lam)
        self.penalty = _Penalty(model, method, rule, from_logits, start, **rule_params)
        self.penalty_tracker = keras.metrics.Mean(name="penalty")

    def call(self, x: Any, training: bool = False) -> Any:
        return self.model(x, training=training)

    def compile(self, *args: Any, jit_compile: Any = False, **kwargs: Any) -> None:
        """Keras' ``compile``; ``jit_compile`` defaults to ``False`` here (Keras' ``'auto'`` turns XLA on
        where a GPU is present; the second-order step through the LRP pass is tested without XLA)."""
        super().compile(*args, jit_compile=jit_compile, **kwargs)

    @property
    def metrics(self) -> list:
        return super().metrics + [self.penalty_tracker]

    @staticmethod
    def _unpack(data: Any) -> tuple[Any, Any, Any]:
        x, y, mask = keras.utils.unpack_x_y_sample_weight(data)
        if mask is None:
            raise ExplainError("RRR training data must hold a mask: (x, y, mask) triples, or fit(x, y, sample_weight="
                               "mask) on arrays")
        return x, y, mask

    def train_step(self, data: Any) -> dict:
        tf = _tf()
        x, y, mask = self._unpack(data)
        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            if self.penalty.method == "gradient":
                # one forward pass for the loss and the input gradient (Ross et al.: on the same outputs)
                with tf.GradientTape() as inner:
                    inner.watch(x)
                    y_pred = self.model(x, training=True)
                    total = tf.reduce_sum(self.penalty.log_probs(y_pred))
                grad = inner.gradient(total, x)
                pen = self.penalty(x, y, mask, explanation=grad)
            else:
                y_pred = self.model(x, training=True)
                pen = self.penalty(x, y, mask, out=y_pred)
            loss = self._compute_loss(x=x, y=y, y_pred=y_pred, training=True)
            total_loss = loss + tf.cast(self.lam, loss.dtype) * tf.cast(pen, loss.dtype)
            self._loss_tracker.update_state(total_loss, sample_weight=tf.shape(x)[0])
            scaled = self.optimizer.scale_loss(total_loss)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        self.penalty_tracker.update_state(pen)
        return self.compute_metrics(x, y, y_pred)

    def test_step(self, data: Any) -> dict:
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)  # a mask in evaluation data is no sample weight
        y_pred = self(x, training=False)
        loss = self._compute_loss(x=x, y=y, y_pred=y_pred, training=False)
        self._loss_tracker.update_state(loss, sample_weight=keras.ops.shape(x)[0])
        return self.compute_metrics(x, y, y_pred)


def rrr_fit(model: keras.Model, x: Any, y: Any = None, masks: Any = None, *, epochs: int = 1, lam: float = 1.0,
            method: str = "lrp", rule: Any = None, start: str = "log_probs", batch_size: int = 32,
            optimizer: Any = None, learning_rate: float | None = None, from_logits: bool | None = None,
            verbose: Any = "auto", validation_data: Any = None, callbacks: Any = None,
            **rule_params: Any) -> keras.callbacks.History:
    """Fine-tune ``model`` in place with the RRR penalty (:class:`RRRModel`, sparse cross-entropy, Adam
    with ``learning_rate`` (default 1e-3) unless ``optimizer``) and return Keras' ``History``
    (``loss``, ``penalty``, ``accuracy``; progress bar by ``verbose``).

    ``x``: an array with ``y`` (integer labels) and ``masks`` (shaped like ``x`` or (N, H, W)), or a
    PyDataset / ``tf.data.Dataset`` yielding ``(x, y, mask)`` batches (then ``y`` and ``masks`` are
    left out). ``validation_data``: ``(x, y)`` (clean accuracy each epoch).
    """
    if y is not None or masks is not None:
        if y is None or masks is None:
            raise ExplainError("rrr_fit on arrays needs y (labels) and masks")
        x = np.asarray(x)
        masks = np.asarray(masks, dtype=x.dtype)
        if len(masks) != len(x) or len(np.asarray(y)) != len(x):
            raise ExplainError(f"x, y and masks need one row per sample, got {len(x)}, {len(np.asarray(y))} and "
                               f"{len(masks)}")
        if masks.shape != x.shape and masks.shape != x.shape[:-1]:
            raise ExplainError(f"masks of shape {masks.shape} do not fit x of shape {x.shape}: give them shaped like x "
                               f"or without its channel axis")
    wrapper = RRRModel(model, lam=lam, method=method, rule=rule, from_logits=from_logits, start=start, **rule_params)
    if optimizer is not None and learning_rate is not None:
        raise ExplainError("give an optimizer or a learning_rate (for Adam), not both")
    if optimizer is None:
        optimizer = keras.optimizers.Adam(1e-3 if learning_rate is None else learning_rate)
    wrapper.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=wrapper.penalty.from_logits),
                    metrics=["accuracy"])
    if y is not None:
        return wrapper.fit(x, np.asarray(y), sample_weight=masks, epochs=epochs, batch_size=batch_size,
                           verbose=verbose, validation_data=validation_data, callbacks=callbacks)
    return wrapper.fit(x, epochs=epochs, verbose=verbose, validation_data=validation_data, callbacks=callbacks)
