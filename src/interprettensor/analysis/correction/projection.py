"""The P-ClArC projection as a Keras layer, its LRP handler, and inserting a layer into a model.

P-ClArC (Anders et al. 2022, "Finding and removing Clever Hans: using explanation methods to debug and
improve deep models", Information Fusion 77, eq. 8) moves a hidden representation ``h`` along the
artefact's unit concept activation vector ``v`` to the clean samples' mean ``z`` along it::

    h' = h - (h . v - z . v) v  =  h (I - v v^T) + (z . v) v

an affine map: kernel ``I - v v^T`` and bias ``(z . v) v``. :class:`ClassArtifactProjection` applies it
over the last axis (the channels of a convolution's output, at every position, or a dense layer's
units), or over the trailing ``direction.shape`` as one flattened vector when the CAV was computed on
flattened activations. Its handler is the engine's linear-map handler (``kind='dense'``): the
composite's rule for dense layers (epsilon, z) runs through ``I - v v^T`` with the constant shift
acting as a bias (it absorbs relevance like one).
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np
from keras import ops

from ...engine.errors import InterpretTensorError

__all__ = ["ClassArtifactProjection", "ArtifactAugmentation", "insert_after", "copy_model", "CorrectionError"]


class CorrectionError(InterpretTensorError, ValueError):
    """A model, layer or data set that a correction cannot use (names what and why)."""


def _unit(direction: Any) -> np.ndarray:
    v = np.asarray(direction, "float64")
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0.0:
        raise CorrectionError(f"the artefact direction must be a finite non-zero vector; got norm {n}")
    return v / n


@keras.saving.register_keras_serializable(package="interprettensor")
class ClassArtifactProjection(keras.layers.Layer):
    """``h' = h - (h . v - c) v``: P-ClArC's projection of the artefact direction ``v`` (unit length,
    stored as given after normalisation) towards the value ``c = z . v`` of the clean mean ``z``.

    Args:
        direction: ``v``, shaped like the trailing axes it acts on: ``(C,)`` acts on the last axis at
            every position; ``(H, W, C)`` acts on the whole flattened sample.
        reference: ``c``, the clean samples' mean along ``v`` (a number).
    """

    def __init__(self, direction: Any, reference: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        v = _unit(direction)
        self.direction_shape = tuple(int(d) for d in np.shape(direction))
        self._v = v.astype("float32").reshape(-1)
        self.reference = float(reference)

    def build(self, input_shape: Any) -> None:
        tail = tuple(input_shape[len(input_shape) - len(self.direction_shape):])
        if tail != self.direction_shape:
            raise CorrectionError(f"{self.name}: the direction has shape {self.direction_shape} but the layer's "
                                  f"input ends in {tail} (input shape {tuple(input_shape)})")
        d = self._v.size
        self.kernel = self.add_weight(name="kernel", shape=(d, d), trainable=False,
                                      initializer=keras.initializers.Constant(
                                          np.eye(d, dtype="float32") - np.outer(self._v, self._v)))
        self.bias = self.add_weight(name="bias", shape=(d,), trainable=False,
                                    initializer=keras.initializers.Constant(self.reference * self._v))

    @property
    def direction(self) -> np.ndarray:
        """The unit direction ``v``, shaped like ``direction_shape``."""
        return self._v.reshape(self.direction_shape)

    def call(self, x: Any) -> Any:
        return _affine_tail(x, self.kernel, self.bias, len(self.direction_shape))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(direction=self.direction.tolist(), reference=self.reference)
        return cfg


def _affine_tail(x: Any, kernel: Any, bias: Any, n_tail: int) -> Any:
    """``x @ kernel + bias`` over the flattened last ``n_tail`` axes of ``x``."""
    if n_tail == 1:
        return ops.matmul(x, ops.cast(kernel, x.dtype)) + ops.cast(bias, x.dtype)
    shape = ops.shape(x)
    flat = ops.reshape(x, (-1, int(np.prod(x.shape[len(x.shape) - n_tail:]))))
    out = ops.matmul(flat, ops.cast(kernel, x.dtype)) + ops.cast(bias, x.dtype)
    return ops.reshape(out, shape)


@keras.saving.register_keras_serializable(package="interprettensor")
class ArtifactAugmentation(keras.layers.Layer):
    """A-ClArC's augmentation in feature space (Anders et al. 2022, eq. 7): during training, a random
    ``rate`` of the samples are moved along the artefact direction ``v`` to the artefact samples' mean
    value ``a`` along it, ``h' = h + (a - h . v) v`` (at every position for a channel direction), so that
    fine-tuning teaches the layers above to ignore ``v``; the identity at inference.
    """

    def __init__(self, direction: Any, target: float = 0.0, rate: float = 0.5, seed: int | None = None,
                 **kwargs: Any):
        super().__init__(**kwargs)
        if not 0.0 < float(rate) <= 1.0:
            raise CorrectionError(f"ArtifactAugmentation: rate must be in (0, 1]; got {rate}")
        v = _unit(direction)
        self.direction_shape = tuple(int(d) for d in np.shape(direction))
        self._v = v.astype("float32").reshape(-1)
        self.target, self.rate, self.seed = float(target), float(rate), seed
        self._rng = keras.random.SeedGenerator(seed if seed is not None else 0)

    def call(self, x: Any, training: bool | None = None) -> Any:
        if not training:
            return x
        n_tail = len(self.direction_shape)
        v = ops.cast(self._v, x.dtype)
        if n_tail == 1:
            along = ops.matmul(x, v[:, None])                              # (..., 1)
            moved = x + (self.target - along) * v
        else:
            flat = ops.reshape(x, (ops.shape(x)[0], -1))
            along = ops.matmul(flat, v[:, None])
            moved = ops.reshape(flat + (self.target - along) * v[None], ops.shape(x))
        pick = keras.random.uniform((ops.shape(x)[0],), seed=self._rng) < self.rate
        pick = ops.reshape(ops.cast(pick, x.dtype), (-1,) + (1,) * (len(x.shape) - 1))
        return pick * moved + (1.0 - pick) * x

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(direction=self._v.reshape(self.direction_shape).tolist(), target=self.target, rate=self.rate,
                   seed=self.seed)
        return cfg


def _projection_handler() -> Any:
    from ...engine.handlers import LinearHandler

    def params(layer: ClassArtifactProjection) -> dict:
        return {"kernel": layer.kernel, "bias": layer.bias}

    def fn(layer: ClassArtifactProjection, xs: Any, p: dict) -> Any:
        return _affine_tail(xs[0], p["kernel"], p.get("bias", 0.0) if p.get("bias") is not None else 0.0,
                            len(layer.direction_shape))

    return LinearHandler(params, fn, activation=lambda layer: None, channel_axis=None, kind="dense")


def register() -> None:
    """Register the projection's handler with the engine (done on import of :mod:`.correction`)."""
    from ...engine.handlers import register_handler

    register_handler(ClassArtifactProjection, _projection_handler())


# ---------------------------------------------------------------------------------------------- model surgery

def _layer(model: keras.Model, name: str) -> keras.layers.Layer:
    if not isinstance(name, str):
        raise CorrectionError(f"layer must be a layer's name; got {name!r}")
    names = [l.name for l in model.layers]
    if name not in names:
        raise CorrectionError(f"model {model.name!r} has no top-level layer {name!r}; its layers: {names}")
    return model.get_layer(name)


def copy_model(model: keras.Model) -> keras.Model:
    """A copy of a Sequential or Functional ``model`` with fresh layers holding the same weights."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def insert_after(model: keras.Model, layer: str, new_layer: keras.layers.Layer | Callable[[], keras.layers.Layer],
                 *, share: bool = False, name: str | None = None) -> keras.Model:
    """``model`` with ``new_layer`` applied to the output of its top-level layer ``layer``.

    Sequential models stay Sequential; Functional models are rebuilt node by node
    (:func:`keras.models.clone_model` with a ``call_function``), so every consumer of ``layer``'s
    output reads the new layer's. ``share=False`` copies the other layers (same weights, own
    variables); ``share=True`` reuses them (training the result trains ``model``).
    """
    target = _layer(model, layer)
    functional = not isinstance(model, keras.Sequential)
    if functional and len([n for n in getattr(target, "_inbound_nodes", []) if n.operation is target]) > 1:
        raise CorrectionError(f"layer {layer!r} is called more than once in {model.name!r}; insert after a layer "
                              "with one call")
    clone_fn = (lambda l: l) if share else None
    if isinstance(model, keras.Sequential):
        layers = []
        for l in model.layers:
            layers.append(l if share else l.__class__.from_config(l.get_config()))
            if l.name == layer:
                layers.append(new_layer)
        new = keras.Sequential([keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)] + layers,
                               name=name or model.name)
    else:
        def call(l: Any, *args: Any, **kwargs: Any) -> Any:
            out = l(*args, **kwargs)
            return new_layer(out) if l.name == layer else out

        new = keras.models.clone_model(model, clone_function=clone_fn, call_function=call)
        if name:
            new.name = name
    if not share:
        for l in model.layers:
            w = l.get_weights()
            if w:
                new.get_layer(l.name).set_weights(w)
    return new
