"""Gradient-based attribution baselines to compare with LRP, called like :func:`interprettensor.lrp`:
``gradient``, ``input_x_gradient``, ``smoothgrad``, ``integrated_gradients``, ``guided_backprop`` and
``deconvnet`` (the table with their papers is in :mod:`interprettensor.attribution`).

Every function takes ``(model, x, target=None, ...)`` and returns an array shaped like ``x`` (a list
for multi-input models). ``target`` follows :func:`~interprettensor.lrp`: ``None`` explains the
predicted class, an int or one int per sample a given class; the explained score is the
*pre-softmax* output (a final softmax is skipped), found by the same graph machinery as LRP.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any, Callable, Sequence

import keras
import numpy as np
from keras import ops

from ..engine import backend, dtypes
from ..engine.backend import Tensor
from ..engine.errors import ExplainError
from ..engine.precision import model_dtype as _model_dtype
from ..engine.targets import as_inputs, as_targets
from ..engine.graph import build_graph, explained_output, forward
from ..engine.handlers import PassOptions
from ..original import modules as itl

__all__ = ["gradient", "input_x_gradient", "smoothgrad", "integrated_gradients", "guided_backprop", "deconvnet"]

ArrayLike = Any

#: rows per compiled call when a method evaluates many copies of the input (SmoothGrad, IG)
_MAX_ROWS = 256


# ----------------------------------------------------------------------------- ReLU overrides

def _is_relu_fn(act: Callable | None) -> bool:
    return act is not None and (act is keras.activations.relu or getattr(act, "__name__", "") == "relu")


def _is_relu_layer(layer: Any) -> bool:
    if isinstance(layer, keras.layers.ReLU):
        return (layer.max_value is None and float(layer.negative_slope) == 0.0
                and float(layer.threshold) == 0.0)
    if isinstance(layer, keras.layers.Activation):
        return _is_relu_fn(layer.activation)
    if isinstance(layer, itl.Relu):
        return True
    return type(layer).__name__ == "Relu"  # keras.ops.relu inside a functional model


# ``grad(upstream)`` on TensorFlow and JAX, ``grad(*inputs, upstream=...)`` on PyTorch (keras.ops.custom_gradient)

@ops.custom_gradient
def _guided_relu(z: Tensor):
    def grad(*args: Tensor, upstream: Tensor | None = None) -> Tensor:
        g = args[0] if upstream is None else upstream
        return ops.where(ops.greater(z, 0), ops.relu(g), ops.zeros_like(g))

    return ops.relu(z), grad


@ops.custom_gradient
def _deconv_relu(z: Tensor):
    def grad(*args: Tensor, upstream: Tensor | None = None) -> Tensor:
        g = args[0] if upstream is None else upstream
        return ops.relu(g)

    return ops.relu(z), grad


def _relu_override(relu: Callable[[Tensor], Tensor]) -> Callable:
    def fn(layer: Any, act: Callable | None, z: Tensor) -> Tensor | None:
        if act is not None:
            return relu(z) if _is_relu_fn(act) else None
        return relu(z) if _is_relu_layer(layer) else None

    return fn


_OVERRIDES: dict[str, Callable | None] = {
    "plain": None,
    "guided": _relu_override(_guided_relu),
    "deconvnet": _relu_override(_deconv_relu),
}


# ----------------------------------------------------------------------------- gradient engine

class _GradientExplainer:
    """Compiled ``d f_t(x) / d x`` of a model's explained output (softmax skipped), with an optional
    ReLU override (guided backprop, deconvnet). One trace per input signature."""

    def __init__(self, model: keras.Model, mode: str = "plain", output: int | str | None = None,
                 times_output: bool = False):
        self.model = model
        self.graph = build_graph(model, canonize=False)
        self.key, _ = explained_output(self.graph, output)
        self.override = _OVERRIDES[mode]
        self.times_output = bool(times_output)
        self.dtype = _model_dtype(model)
        self.n_inputs = len(self.graph.inputs)
        self._fns: dict = {}

    def inputs(self, x: ArrayLike) -> list[Tensor]:
        xs = as_inputs(self.model, x, self.n_inputs, self.dtype)
        n = int(xs[0].shape[0])
        if any(int(t.shape[0]) != n for t in xs):
            raise ExplainError(f"all inputs need the same batch size, got {[int(t.shape[0]) for t in xs]}")
        return xs

    def _core(self, xs: Sequence[Tensor], targets: Tensor):
        options = PassOptions(activation_override=self.override)

        def explained(xs: list) -> Tensor:
            values, _ = forward(self.graph, xs, options)
            out = values[self.key]
            return ops.reshape(out, (-1, int(np.prod(out.shape[1:]))))

        # one forward pass; the backward pass starts from the one-hot of the target (times f_t)
        _, flat, back = backend.pullback(explained, list(xs))
        size = int(flat.shape[-1])
        pred = ops.cast(ops.argmax(flat, axis=-1), "int32")
        t = ops.where(ops.less(targets, 0), pred, targets)
        # the one-hot of t (a row of zeros for a target out of range, which __call__ reports)
        seed = ops.cast(ops.equal(ops.expand_dims(t, -1), ops.arange(size, dtype="int32")), flat.dtype)
        if self.times_output:  # the backward pass starts from f_t instead of 1
            seed = seed * flat
        grads = [back(i, seed) for i in range(len(xs))]
        return grads, flat, t

    def __call__(self, xs: Sequence[Tensor], targets: Tensor):
        key = tuple((tuple(x.shape[1:]), dtypes.name(x.dtype)) for x in xs)
        fn = self._fns.get(key)
        if fn is None:
            sig = tuple(backend.spec((None,) + tuple(x.shape[1:]), x.dtype) for x in xs)
            fn = backend.compile(self._core, [sig, backend.spec((None,), "int32")], variables=self.model.variables)
            self._fns[key] = fn
        grads, flat, t = fn(tuple(xs), targets)
        size = int(flat.shape[-1])
        wanted = ops.convert_to_numpy(targets)
        if (wanted >= size).any():
            raise ExplainError(f"target out of range: the model output has {size} units, valid targets are "
                               f"0..{size - 1}")
        return grads, flat, t

    def predicted(self, xs: Sequence[Tensor], targets: Tensor) -> Tensor:
        """The targets with ``-1`` (predicted class) resolved on ``xs``."""
        return self(xs, targets)[2]


_targets = as_targets


def _result(arrays: Sequence[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    return arrays[0] if len(arrays) == 1 else list(arrays)


#: the compiled gradient explainers of the models explained last (a model's graph is built and its
#: function traced once, not on every call: the evaluation explains the same model many times)
_RECENT: "OrderedDict[tuple, tuple[weakref.ref, _GradientExplainer]]" = OrderedDict()
_RECENT_SIZE = 8


def _explainer(model: keras.Model, mode: str, output: int | str | None, times_output: bool) -> _GradientExplainer:
    """The gradient explainer of ``model`` (reused while ``model`` is among the last few explained;
    it reads the model's variables on every call, so changed weights are seen)."""
    key = (id(model), mode, output, bool(times_output))
    hit = _RECENT.get(key)
    if hit is not None and hit[0]() is model:
        _RECENT.move_to_end(key)
        return hit[1]
    g = _GradientExplainer(model, mode, output, times_output)
    _RECENT[key] = (weakref.ref(model), g)
    while len(_RECENT) > _RECENT_SIZE:
        _RECENT.popitem(last=False)
    return g


def _grad(model: keras.Model, x: ArrayLike, target: ArrayLike | None, mode: str,
          output: int | str | None, times_output: bool = False) -> tuple[list[Tensor], list[np.ndarray]]:
    g = _explainer(model, mode, output, times_output)
    xs = g.inputs(x)
    grads, _, _ = g(xs, _targets(target, int(xs[0].shape[0])))
    return xs, [ops.convert_to_numpy(gr) for gr in grads]


# ----------------------------------------------------------------------------- public baselines

def gradient(model: keras.Model, x: ArrayLike, target: ArrayLike | None = None, *,
             output: int | str | None = None) -> np.ndarray | list[np.ndarray]:
    """The gradient ``d f_t / d x`` of the explained (pre-softmax) output (Simonyan, Vedaldi &
    Zisserman 2014, "Deep inside convolutional networks")."""
    return _result(_grad(model, x, target, "plain", output)[1])


def input_x_gradient(model: keras.Model, x: ArrayLike, target: ArrayLike | None = None, *,
                     output: int | str | None = None) -> np.ndarray | list[np.ndarray]:
    """Input times gradient ``x * d f_t / d x`` (Shrikumar et al. 2016, "Not just a black box");
    equals LRP-z (``'simple'``) on bias-free ReLU networks."""
    xs, grads = _grad(model, x, target, "plain", output)
    return _result([ops.convert_to_numpy(x_) * g for x_, g in zip(xs, grads)])


def guided_backprop(model: keras.Model, x: ArrayLike, target: ArrayLike | None = None, *,
                    times_output: bool = False, output: int | str | None = None) -> np.ndarray | list[np.ndarray]:
    """Guided backpropagation (Springenberg et al. 2015, "Striving for simplicity"): the gradient,
    but each ReLU passes back ``relu'(z) * max(g, 0)``.

    ``times_output=True`` starts the backward pass from the target's output value ``f_t`` instead of
    1, as iNNvestigate's ``GuidedBackprop`` does."""
    return _result(_grad(model, x, target, "guided", output, times_output)[1])


def deconvnet(model: keras.Model, x: ArrayLike, target: ArrayLike | None = None, *,
              times_output: bool = False, output: int | str | None = None) -> np.ndarray | list[np.ndarray]:
    """Deconvnet (Zeiler & Fergus 2014, "Visualizing and understanding convolutional networks"):
    the gradient, but each ReLU passes back ``max(g, 0)`` regardless of its forward input.

    ``times_output=True`` starts the backward pass from the target's output value ``f_t`` instead of
    1, as iNNvestigate's ``Deconvnet`` does."""
    return _result(_grad(model, x, target, "deconvnet", output, times_output)[1])


def _augmented_mean(g: _GradientExplainer, xs: list[Tensor], targets: Tensor, n: int,
                    make: Callable[[int, int], list[np.ndarray]], batch_size: int | None,
                    weights: np.ndarray | None = None) -> list[np.ndarray]:
    """(Weighted) mean gradient over ``n`` modified copies of ``xs``; ``make(lo, hi)`` returns copies
    ``lo..hi-1`` stacked copy-major (``(hi - lo) * batch`` rows per input)."""
    b = int(xs[0].shape[0])
    per_call = max(1, (batch_size or _MAX_ROWS) // max(b, 1))
    sums = [np.zeros(x.shape, np.float64) for x in xs]
    t_rep = None
    for lo in range(0, n, per_call):
        hi = min(lo + per_call, n)
        if t_rep is None or int(t_rep.shape[0]) != (hi - lo) * b:
            t_rep = ops.tile(targets, [hi - lo])
        copies = [ops.convert_to_tensor(c, dtype=x.dtype) for c, x in zip(make(lo, hi), xs)]
        grads, _, _ = g(copies, t_rep)
        for s, gr, x in zip(sums, grads, xs):
            gr = ops.convert_to_numpy(gr).reshape((hi - lo,) + tuple(x.shape))
            if weights is not None:
                gr = gr * weights[lo:hi].reshape((hi - lo,) + (1,) * len(x.shape))
            s += gr.sum(axis=0)
    return [(s / n).astype(_numpy_dtype(x.dtype)) for s, x in zip(sums, xs)]


def _numpy_dtype(dtype: Any) -> np.dtype:
    """The NumPy dtype of a tensor's dtype (``bfloat16``: ml_dtypes', as Keras converts it)."""
    name = dtypes.name(dtype)
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def smoothgrad(model: keras.Model, x: ArrayLike, target: ArrayLike | None = None, n: int = 64,
               noise_scale: float = 1.0, seed: int | None = None, *, batch_size: int | None = None,
               output: int | str | None = None) -> np.ndarray | list[np.ndarray]:
    """SmoothGrad (Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise"): the mean
    gradient over ``n`` copies of ``x`` with Gaussian noise of standard deviation ``noise_scale``
    (absolute, in input units; iNNvestigate's defaults ``n=64``, ``noise_scale=1``).

    The target class is chosen on the clean input. ``batch_size`` caps the rows per compiled call.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    g = _explainer(model, "plain", output, False)
    xs = g.inputs(x)
    targets = g.predicted(xs, _targets(target, int(xs[0].shape[0])))
    rng = np.random.default_rng(seed)
    base = [ops.convert_to_numpy(x_) for x_ in xs]

    def make(lo: int, hi: int) -> list[np.ndarray]:
        return [np.concatenate([b_ + rng.normal(0.0, noise_scale, b_.shape).astype(b_.dtype)
                                for _ in range(hi - lo)]) for b_ in base]

    return _result(_augmented_mean(g, xs, targets, n, make, batch_size))


def _alphas(steps: int, method: str) -> np.ndarray:
    k = np.arange(steps, dtype=np.float64)
    if method == "left":
        return k / steps
    if method == "right":
        return (k + 1) / steps
    if method == "middle":
        return (k + 0.5) / steps
    if method == "trapezoid":
        return np.linspace(0.0, 1.0, steps)
    raise ValueError(f"method must be 'left', 'right', 'middle' or 'trapezoid', got {method!r}")


def integrated_gradients(model: keras.Model, x: ArrayLike, target: ArrayLike | None = None,
                         steps: int = 64, baseline: ArrayLike | None = None, *, method: str = "left",
                         batch_size: int | None = None,
                         output: int | str | None = None) -> np.ndarray | list[np.ndarray]:
    """Integrated gradients (Sundararajan, Taly & Yan 2017, "Axiomatic attribution for deep
    networks"): ``(x - x0) * mean_k grad f_t(x0 + a_k (x - x0))`` over ``steps`` points ``a_k``.

    ``baseline`` ``x0``: ``None`` (zeros), a scalar, an array broadcastable to ``x`` (a list for
    multi-input models). ``method='left'`` takes ``a_k = k / steps``, ``k = 0..steps-1`` (the left
    Riemann sum, as iNNvestigate); ``'right'``, ``'middle'``; ``'trapezoid'`` averages
    ``linspace(0, 1, steps)``. The target class is chosen on ``x``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    g = _explainer(model, "plain", output, False)
    xs = g.inputs(x)
    targets = g.predicted(xs, _targets(target, int(xs[0].shape[0])))
    base = [ops.convert_to_numpy(x_) for x_ in xs]
    if baseline is None:
        refs = [np.zeros_like(b_) for b_ in base]
    else:
        bl = list(baseline) if (len(base) > 1 and isinstance(baseline, (list, tuple))) else [baseline] * len(base)
        if len(bl) != len(base):
            raise ExplainError(f"baseline: the model takes {len(base)} inputs, got {len(bl)} baselines")
        refs = [np.broadcast_to(np.asarray(r, b_.dtype), b_.shape) for r, b_ in zip(bl, base)]
    alphas = _alphas(steps, method)
    weights = None
    if method == "trapezoid" and steps > 1:
        weights = np.ones(steps)
        weights[[0, -1]] = 0.5
        weights *= steps / weights.sum()

    def make(lo: int, hi: int) -> list[np.ndarray]:
        return [np.concatenate([r + a * (b_ - r) for a in alphas[lo:hi]]).astype(b_.dtype)
                for b_, r in zip(base, refs)]

    mean = _augmented_mean(g, xs, targets, steps, make, batch_size, weights)
    return _result([(m * (b_ - r)).astype(b_.dtype) for m, b_, r in zip(mean, base, refs)])
