"""The model as the metrics see it (:class:`MetricModel`): batched, compiled predictions (logits or
softmax probabilities, as Quantus' ``softmax=`` asks), inputs in either channel layout, hidden
representations, and copies with randomised layers for the randomisation metrics.

The metrics work on channels-last arrays ``(N, *spatial, C)`` (or ``(N, D)`` feature vectors); a model
that takes channels-first inputs (``channel_first=True``) gets its inputs transposed back on each
call, so every metric is written once.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any, Iterator, Sequence

import keras
import numpy as np

from ...engine import backend
from ...engine.errors import ExplainError
from ..perturbation.scoring import _Scorer

__all__ = ["MetricModel", "to_channels_last", "to_channels_first", "softmax"]


def to_channels_last(x: np.ndarray) -> np.ndarray:
    """``(N, C, *spatial)`` -> ``(N, *spatial, C)``."""
    return np.moveaxis(x, 1, -1) if x.ndim >= 3 else x


def to_channels_first(x: np.ndarray) -> np.ndarray:
    """``(N, *spatial, C)`` -> ``(N, C, *spatial)``."""
    return np.moveaxis(x, -1, 1) if x.ndim >= 3 else x


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64."""
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class MetricModel:
    """A Keras model wrapped for the metrics.

    Args:
        model: a Keras model with one input and a class-score output (a final softmax is fine).
        channel_first: whether the model takes channels-first inputs; the metrics always hand
            :meth:`predict` channels-last arrays.
        softmax: whether :meth:`predict` returns softmax probabilities (``True``) or the logits
            before a final softmax (``False``), as Quantus' argument of that name.
        batch_size: inputs per model call (more are split into calls of this size).
        model_predict_kwargs: Quantus' argument; Keras models take none at prediction time here,
            so anything given is an error rather than silently dropped.
    """

    def __init__(self, model: keras.Model, channel_first: bool = False, softmax: bool = False,
                 batch_size: int = 64, model_predict_kwargs: dict | None = None):
        if isinstance(model, MetricModel):
            model = model.model
        if not isinstance(model, keras.Model):
            raise ExplainError(f"model must be a Keras model, got {type(model).__name__}")
        if model_predict_kwargs:
            raise ExplainError(f"model_predict_kwargs {sorted(model_predict_kwargs)} are not supported: Keras "
                               f"models are called with their inputs only")
        if int(batch_size) < 1:
            raise ExplainError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.channel_first = bool(channel_first)
        self.softmax = bool(softmax)
        self.batch_size = int(batch_size)
        self._scorer: _Scorer | None = None
        self.calls = 0  # inputs passed through the model (for the benchmarks' floors)

    @property
    def scorer(self) -> _Scorer:
        """The model's compiled prediction, shared by every MetricModel of the same Keras model (a
        metric wraps the model anew at each call; tracing it again each time cost more than the
        model calls of a small network)."""
        if self._scorer is None:
            self._scorer = _shared(self.model, "scorer", lambda: _Scorer(self.model))
        return self._scorer

    def native(self, x: np.ndarray) -> np.ndarray:
        """Channels-last ``x`` in the layout the model takes."""
        return to_channels_first(x) if self.channel_first else x

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The model's scores before a final softmax, ``(n, classes)`` float64, in calls of
        ``batch_size`` inputs (``x`` channels-last)."""
        x = np.asarray(x)
        if x.shape[0] == 0:
            raise ExplainError("no inputs to predict")
        outs = []
        for s in range(0, x.shape[0], self.batch_size):
            outs.append(self.scorer(self.native(x[s:s + self.batch_size])))
        self.calls += x.shape[0]
        return np.concatenate(outs)

    def predict(self, x: np.ndarray, softmax: bool | None = None) -> np.ndarray:
        """Class scores of channels-last ``x``: softmax probabilities or logits (``softmax``, default
        this model's), ``(n, classes)`` float64."""
        z = self.logits(x)
        use = self.softmax if softmax is None else bool(softmax)
        return softmax_fn(z) if use else z

    def scores(self, x: np.ndarray, y: np.ndarray, softmax: bool | None = None) -> np.ndarray:
        """``predict(x)[i, y[i]]`` for a batch ``x`` of ``n`` inputs and ``y`` of ``(n,)``; ``x`` may
        also hold ``k`` versions of each input, ``(k, n, ...)``, in one call: then ``(k, n)``."""
        x = np.asarray(x)
        y = np.asarray(y).astype(np.int64).reshape(-1)
        if x.ndim == self.input_rank:
            return self.predict(x, softmax)[np.arange(len(y)), y]
        if x.ndim != self.input_rank + 1 or x.shape[1] != len(y):
            raise ExplainError(f"inputs of shape {x.shape} do not match {len(y)} labels and the model's "
                               f"input rank {self.input_rank}")
        k = x.shape[0]
        p = self.predict(x.reshape((-1,) + x.shape[2:]), softmax).reshape(k, x.shape[1], -1)
        return p[:, np.arange(len(y)), y]

    @property
    def input_rank(self) -> int:
        """Rank of a batch of inputs (``len(model.input_shape)``)."""
        shape = self.model.inputs[0].shape if getattr(self.model, "inputs", None) else None
        if shape is None:
            raise ExplainError("the model has no known input shape; build it on an input first")
        return len(shape)

    # ------------------------------------------------------------------ hidden representations

    def hidden(self, x: np.ndarray, layer_names: Sequence[str] | None = None,
               layer_indices: Sequence[int] | None = None) -> np.ndarray:
        """Activations of the chosen layers (all layers by default), flattened per input and
        concatenated: ``(n, features)``; Quantus' ``get_hidden_representations``."""
        layers = [la for la in self.model.layers if not isinstance(la, keras.layers.InputLayer)]
        if layer_names is not None and layer_indices is not None:
            raise ExplainError("give layer_names or layer_indices, not both")
        if layer_names is not None:
            known = {la.name: la for la in layers}
            missing = [n for n in layer_names if n not in known]
            if missing:
                raise ExplainError(f"the model has no layers {missing}; its layers: {list(known)}")
            chosen = [known[n] for n in layer_names]
        elif layer_indices is not None:
            try:
                chosen = [layers[int(i)] for i in layer_indices]
            except IndexError:
                raise ExplainError(f"layer_indices {list(layer_indices)} out of range: the model has "
                                   f"{len(layers)} layers") from None
        else:
            chosen = layers
        ins = self.model.inputs
        fn = _shared(self.model, ("hidden",) + tuple(la.name for la in chosen),
                     lambda: keras.Model(ins[0] if len(ins) == 1 else ins,
                                         [_output_in(self.model, la) for la in chosen]))
        outs = []
        for s in range(0, x.shape[0], self.batch_size):
            res = fn(self.native(x[s:s + self.batch_size]), training=False)
            res = res if isinstance(res, (list, tuple)) else [res]
            outs.append(np.concatenate([keras.ops.convert_to_numpy(r).reshape(r.shape[0], -1) for r in res], 1))
        return np.concatenate(outs).astype(np.float64)

    # ------------------------------------------------------------------ randomisation

    def weighted_layers(self) -> list[keras.layers.Layer]:
        """Layers with weights, in the order of the model (bottom up), nested models flattened."""
        from ..randomisation import weighted_layers

        return weighted_layers(self.model)

    def randomised_layers(self, order: str = "top_down", seed: int = 42,
                          independent: bool = False) -> Iterator[tuple[str, "MetricModel"]]:
        """Yield ``(layer name, model)`` with the weights of one more layer randomised at each step, as
        Quantus 0.6's Keras wrapper (``TensorFlowModel.get_random_layer_generator``) does it:

        * the layers are the model's top-level layers that hold weights (``len(layer.get_weights()) >
          0``; a nested model is one layer), in the model's order; ``'top_down'`` reverses them,
          ``'bottom_up'`` keeps them, ``'independent'`` keeps them and restores the original weights
          before each layer (``independent=True`` does so in either order); otherwise cumulative
          (cascading, Adebayo et al. 2018);
        * a layer is randomised by permuting each of its weight arrays (``get_weights()`` order, the
          non-trainable ones such as batch-norm statistics included) along its first axis with
          ``np.random.RandomState(seed + 1)``, re-seeded for every layer (Quantus' ``np.random.seed(seed
          + 1); np.random.permutation(w)``); scalars stay as they are.

        The weights are assigned into the model's own variables between steps, and the yielded model
        is this object: every compiled function of the model (its explainers, its predictions) reads
        the variables at each call on every backend, so no step copies the model or compiles anything
        again (a copy would need its own traces).
        The original weights are restored when the generator finishes, is closed or is garbage
        collected; callers that may stop early wrap it in ``contextlib.closing``. While it runs, the
        model must not be used for anything else.

        Difference from Quantus: its Keras wrapper clones the model with ``clone_model``, which
        re-initialises every weight, so its cascade starts from a freshly initialised model; here it
        starts from the model's own weights."""
        if order not in ("top_down", "bottom_up", "independent"):
            raise ExplainError(f"layer_order must be 'top_down', 'bottom_up' or 'independent', got {order!r}")
        independent = bool(independent) or order == "independent"
        layers = [la for la in self.model.layers if la.weights]
        if not layers:
            raise ExplainError("the model has no layers with weights to randomise")
        if order == "top_down":
            layers = layers[::-1]
        # each variable's rows are gathered on the device (:func:`_permute`: a small one keeps its
        # original, a large one is restored by the inverse gather). Restorations run in the reverse
        # order of the randomisations (layers that share a variable get each permutation undone in turn).
        changed: list[list] = []
        try:
            for layer in layers:
                if independent and changed:
                    _restore(changed.pop())
                rows = _permutations(int(seed) + 1, tuple(int(v.shape[0]) if len(v.shape) > 0 else None
                                                          for v in layer.weights))
                undo: list = []
                changed.append(undo)
                _permute(layer, rows, undo)
                yield layer.name, self
        finally:
            while changed:
                _restore(changed.pop())

    def randomisable_layers(self) -> list[str]:
        """Names of the layers :meth:`randomised_layers` randomises, in the model's order (Quantus'
        ``random_layer_generator_length`` is their number)."""
        return [la.name for la in self.model.layers if la.weights]


#: variables of at least this many values are permuted in place (:func:`_permute`)
IN_PLACE_SIZE = 2 ** 18


def _permute(layer: keras.layers.Layer, rows: Sequence, undo: list) -> None:
    """Each variable of ``layer`` with its rows (first axis) reordered by its permutation in ``rows``
    (:func:`_permutations`; ``None``: a scalar, left alone); what undoes each reordering is appended to
    ``undo`` as it is done (:func:`_restore`).

    A small variable keeps its original value (:func:`backend.snapshot`: no copy on TensorFlow and JAX)
    and is restored by assigning it; a large one is restored by the inverse reordering, so that a model's
    large weights are not held twice. Both are exact (a reordering copies the values), and the weights
    stay on the device: the backend's own ops, each a tenth of ``Variable.assign`` and ``keras.ops.take``
    on a small variable, where these costs are what a small model's randomisation metrics spend beside
    the explanations."""
    for variable, p in zip(layer.weights, rows):
        if p is None:
            continue
        if int(np.prod(variable.shape)) >= IN_PLACE_SIZE:
            backend.assign(variable, backend.take_rows(variable.value, p[0]))
            undo.append((variable, p[1], True))
        else:
            original = backend.snapshot(variable)
            backend.assign(variable, backend.take_rows(original, p[0]))
            undo.append((variable, original, False))


def _restore(undo: list) -> None:
    """The reorderings :func:`_permute` recorded in ``undo``, undone in reverse order."""
    for variable, what, in_place in reversed(undo):
        backend.assign(variable, backend.take_rows(variable.value, what) if in_place else what)


#: the row permutations of the layers randomised last, by (seed, first-axis lengths of the arrays)
_PERMUTATIONS: "OrderedDict[tuple, list]" = OrderedDict()


def _permutations(seed: int, lengths: tuple) -> list:
    """The row orders ``p`` that ``np.random.RandomState(seed).permutation`` gives arrays with these
    first-axis lengths, drawn in turn, each as ``(p, argsort(p))``, int32 tensors (``None``: a scalar,
    left as it is): ``w[p]`` equals Quantus' ``permutation(w)`` (a shuffle of the rows draws the same
    numbers as one of their indices) and ``w[p][argsort(p)]`` is ``w``. Kept for the last layers seen:
    drawing them anew cost more than the assignment on small models."""
    key = (seed, lengths)
    hit = _PERMUTATIONS.get(key)
    if hit is not None:
        _PERMUTATIONS.move_to_end(key)
        return hit
    rs = np.random.RandomState(seed)
    rows = []
    for n in lengths:
        p = None if n is None else rs.permutation(n)
        rows.append(None if p is None else (keras.ops.convert_to_tensor(p.astype(np.int32)),
                                            keras.ops.convert_to_tensor(np.argsort(p).astype(np.int32))))
    _PERMUTATIONS[key] = rows
    while len(_PERMUTATIONS) > 64:
        _PERMUTATIONS.popitem(last=False)
    return rows


#: compiled functions of the models used last, by (id(model), what): reused while the model lives
_RECENT: "OrderedDict[tuple, tuple[weakref.ref, Any]]" = OrderedDict()
_RECENT_SIZE = 16


def _shared(model: keras.Model, what: Any, make: Any) -> Any:
    """``make()`` for ``model`` once, kept among the last few (a weak reference checks that an id
    still names the same model)."""
    key = (id(model), what)
    hit = _RECENT.get(key)
    if hit is not None and hit[0]() is model:
        _RECENT.move_to_end(key)
        return hit[1]
    obj = make()
    _RECENT[key] = (weakref.ref(model), obj)
    while len(_RECENT) > _RECENT_SIZE:
        _RECENT.popitem(last=False)
    return obj


def _output_in(model: keras.Model, layer: keras.layers.Layer) -> Any:
    """``layer``'s output in ``model``'s own graph (``layer.output`` is its first call's, another
    graph's when the layer is shared or a nested model)."""
    for depth in sorted(getattr(model, "_nodes_by_depth", {}), reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.operation is layer:
                return node.outputs[0] if len(node.outputs) == 1 else node.outputs
    return layer.output


softmax_fn = softmax
