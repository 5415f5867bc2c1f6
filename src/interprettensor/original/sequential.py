"""The original ``Sequential`` API: forward, fit, lrp and lrp_layerwise, as a Keras 3 model.

``net.forward(x)`` runs the network and caches every module's input and pre-activation;
``net.lrp(R, variant, param)`` propagates ``R`` back to the input with the shared LRP engine
(:mod:`interprettensor.engine.graph`, :mod:`interprettensor.engine.handlers`), compiled by the backend
(:func:`interprettensor.engine.backend.compile`).
A variant given to the call applies to every module (LRP Toolbox semantics: max pooling is
uniform under ``'flat'``/``'ww'``, winner-takes-all otherwise); without one, each module's preset
(:meth:`~interprettensor.original.modules.Module.set_lrp_parameters`) applies.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence as Seq

import keras
import numpy as np
from keras import ops

from ..engine import backend, dtypes
from ..engine.backend import Tensor
from ..engine.errors import ExplainError
from ..engine.graph import Graph, backward, build_graph, forward, register_chain
from ..engine.linear import materialize
from ..engine.rules import Rule
from . import handlers as _handlers  # noqa: F401 - registers the modules' handlers
from .modules import Module
from .variants import rule_from_variant

__all__ = ["Sequential"]

_LOSSES = {
    "softmax_crossentropy": lambda last_is_softmax: keras.losses.CategoricalCrossentropy(from_logits=not last_is_softmax),
    "sigmoid_crossentropy": lambda last_is_sigmoid: keras.losses.BinaryCrossentropy(from_logits=not last_is_sigmoid),
    "mse": lambda _: keras.losses.MeanSquaredError(),
}
_OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "rmsprop": keras.optimizers.RMSprop,
    "grad_descent": keras.optimizers.SGD,
    "sgd": keras.optimizers.SGD,
    "adagrad": keras.optimizers.Adagrad,
    "adadelta": keras.optimizers.Adadelta,
}


class _ForwardCache:
    """The last forward pass: what ``lrp`` reads (``cache["records"]``)."""

    def __init__(self, values: dict):
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[key]


def _plain(structure: Any) -> Any:
    """``structure`` with lists and dicts (Keras' tracked ones included) as plain tuples and dicts."""
    if isinstance(structure, dict):
        return {k: _plain(v) for k, v in structure.items()}
    if isinstance(structure, (list, tuple)):
        return tuple(_plain(v) for v in structure)
    return structure


@keras.saving.register_keras_serializable(package="interprettensor")
class Sequential(keras.Model):
    """A stack of interprettensor modules (or any Keras layers with an LRP handler).

    Example::

        net = it.Sequential([it.Linear(1296, input_dim=784, act='relu'), it.Linear(10), it.Softmax()])
        y = net.forward(x)
        R = net.lrp(y, 'epsilon', 0.01)
    """

    def __init__(self, modules: Iterable[keras.layers.Layer], name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.modules = list(modules)
        if not self.modules:
            raise ValueError("Sequential needs at least one module")
        self._cache: dict | None = None
        self._graph: Graph | None = None
        self._lrp_fns: dict = {}
        first = self.modules[0]
        input_dim = getattr(first, "input_dim", None)
        if isinstance(input_dim, int):
            self.build((None, input_dim))
        elif isinstance(input_dim, tuple) and getattr(first, "input_depth", None):
            self.build((None,) + input_dim + (first.input_depth,))

    # ------------------------------------------------------------------ keras plumbing
    def build(self, input_shape: Any) -> None:
        shape = tuple(input_shape)
        for m in self.modules:
            if not m.built:
                m.build(shape)
            shape = tuple(m.compute_output_shape(shape))
        self.built = True

    def call(self, x: Tensor, training: bool | None = None) -> Tensor:
        for m in self.modules:
            if isinstance(m, Module) and "training" in m.call.__code__.co_varnames:
                x = m(x, training=training)
            else:
                x = m(x)
        return x

    def compute_output_shape(self, input_shape: Any) -> Any:
        shape = tuple(input_shape)
        for m in self.modules:
            shape = tuple(m.compute_output_shape(shape))
        return shape

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name,
                "modules": [keras.saving.serialize_keras_object(m) for m in self.modules]}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> "Sequential":
        modules = [keras.saving.deserialize_keras_object(m, custom_objects=custom_objects)
                   for m in config["modules"]]
        return cls(modules, name=config.get("name"))

    # ------------------------------------------------------------------ the original API
    @property
    def graph(self) -> Graph:
        if self._graph is None:
            self._graph = build_graph(self, canonize=False)
        return self._graph

    def _input(self, x: Any) -> Tensor:
        t = x if ops.is_tensor(x) else ops.convert_to_tensor(np.asarray(x))
        if dtypes.name(t.dtype) != dtypes.name(self.compute_dtype):
            t = ops.cast(t, self.compute_dtype)
        if len(t.shape) < 2:
            raise ExplainError(f"input must be a batch (N, ...), got shape {tuple(t.shape)}")
        first = self.modules[0]
        if not self.built:
            self.build(tuple(t.shape))
        expected = _expected_input(first)
        if expected is not None and not _fits(expected, tuple(t.shape)):
            raise ExplainError(f"input of shape {tuple(t.shape)} does not fit the first layer "
                               f"{first.name!r} ({type(first).__name__}), which expects "
                               f"{' or '.join(str(e).replace(chr(39), '') for e in expected)}")
        return t

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # on Keras' PyTorch backend a layer is a torch.nn.Module, whose __call__ runs ``forward``: while
        # Keras calls the network, ``forward`` is the module's, not the 2017 API's (see ``forward``)
        depth = self.__dict__.get("_keras_calls", 0)
        object.__setattr__(self, "_keras_calls", depth + 1)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            object.__setattr__(self, "_keras_calls", depth)

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Tensor:
        """Run the network on ``x`` (numpy array or tensor) and cache what LRP needs."""
        if self.__dict__.get("_keras_calls"):  # torch.nn.Module.__call__ inside a Keras call (PyTorch backend)
            return super().forward(x, *args, **kwargs)
        if args or kwargs:
            raise TypeError(f"forward takes one input, got also {args or ''}{kwargs or ''}")
        t = self._input(x)
        fn = self._lrp_fns.get("forward")
        if fn is None:
            def run(t: Tensor) -> tuple:
                values, records = forward(self.graph, [t])
                # only tensors leave a compiled function: the cached linear maps are rebuilt by the handlers
                records = [(ins, outs, {k: v for k, v in state.items() if ops.is_tensor(v)})
                           for ins, outs, state in records]
                return values[self.graph.outputs[0]], records
            # no signature: traced once per input shape and dtype, as the records follow from them
            fn = self._lrp_fns["forward"] = backend.compile(run, None, variables=self.variables)
        out, records = fn(t)
        # a plain tuple in a holder: Keras would track a list or dict set on the model as its own
        # containers, which a compiled function (jax.jit) does not take as arguments
        self._cache = _ForwardCache({"x": t, "records": _plain(records), "output": out})
        return out

    def _rules(self, lrp_var: str | Rule | None, param: float | None) -> tuple[Rule, ...]:
        if lrp_var is not None:
            rule = rule_from_variant(lrp_var, param)
            return tuple(rule for _ in self.graph.steps)
        out = []
        for step in self.graph.steps:
            m = step.layer
            out.append(m.preset_rule() if isinstance(m, Module) else rule_from_variant(None))
        return tuple(out)

    def _check_cache(self, what: str) -> dict:
        if self._cache is None:
            raise ExplainError(f"{what} needs a forward pass first: call net.forward(x) before net.{what}(R)")
        return self._cache

    def _check_R(self, R: Any, shape: tuple, where: str) -> Tensor:
        R = ops.convert_to_tensor(np.asarray(R) if not ops.is_tensor(R) else R)
        R = ops.cast(R, self.compute_dtype)
        if tuple(R.shape) != tuple(shape):
            raise ExplainError(f"relevance of shape {tuple(R.shape)} does not match {where} of shape "
                               f"{tuple(shape)}")
        return R

    def lrp(self, R: Any, lrp_var: str | Rule | None = None, param: float | None = None) -> Tensor:
        """Propagate relevance ``R`` (shaped like the last output) to the input of the last forward.

        Args:
            R: starting relevance, usually the output masked to one class.
            lrp_var: ``'simple'``, ``'epsilon'``, ``'flat'``, ``'ww'``, ``'alphabeta'`` (or a Rule);
                ``None`` uses each module's preset.
            param: epsilon for ``'epsilon'``, alpha for ``'alphabeta'`` (beta = alpha - 1).
        """
        cache = self._check_cache("lrp")
        R = self._check_R(R, cache["output"].shape, "the network output")
        rules = self._rules(lrp_var, param)
        key = ("lrp", rules)
        fn = self._lrp_fns.get(key)
        if fn is None:
            graph = self.graph

            def run(records: Any, R: Tensor) -> Tensor:
                rel, _ = backward(graph, records, {graph.outputs[0]: R}, rules, wanted=graph.inputs[:1])
                return rel.get(graph.inputs[0], ops.zeros_like(records[0][0][0]))
            fn = self._lrp_fns[key] = backend.compile(run, None, variables=self.variables)  # traced per forward's shapes
        return fn(cache["records"], R)

    def lrp_layerwise(self, layer: keras.layers.Layer | str, R: Any, lrp_var: str | Rule | None = None,
                      param: float | None = None) -> Tensor:
        """Relevance at the input of one module, given relevance ``R`` at its output (from the last
        forward). Looping over ``net.modules[::-1]`` reproduces :meth:`lrp`."""
        cache = self._check_cache("lrp_layerwise")
        steps = self.graph.steps
        idx = next((i for i, s in enumerate(steps) if s.layer is layer or s.name == layer), None)
        if idx is None:
            raise ExplainError(f"{layer!r} is not a module of this network; modules: "
                               f"{[s.name for s in steps]}")
        step = steps[idx]
        ins, outs, state = cache["records"][idx]
        R = self._check_R(R, outs[0].shape, f"the output of layer {step.name!r}")
        if lrp_var is not None:
            rule = rule_from_variant(lrp_var, param)
        elif isinstance(step.layer, Module):
            rule = step.layer.preset_rule()
        else:
            rule = rule_from_variant(None)
        # one layer: a handful of ops, run eagerly (the full backward pass in lrp() is compiled)
        return materialize(step.handler.relevance(step.layer, ins, outs, state, [R], rule, step)[0])

    def set_lrp_parameters(self, lrp_var: str | None = None, param: float | None = None) -> None:
        """Preset the LRP variant and parameter of every module."""
        rule_from_variant(lrp_var, param)
        for m in self.modules:
            if isinstance(m, Module):
                m.set_lrp_parameters(lrp_var, param)

    def fit(self, x: Any = None, y: Any = None, loss: str | Any = None, optimizer: str | Any = None,
            opt_params: Seq[float] | None = None, epochs: int = 1, batch_size: int | None = None,
            **kwargs: Any) -> keras.callbacks.History:
        """Train the network. With the original arguments (``loss='softmax_crossentropy'|
        'sigmoid_crossentropy'|'MSE'``, ``optimizer='adam'|'rmsprop'|'grad_descent'|'adagrad'|
        'adadelta'``, ``opt_params=[learning_rate]``) the net is compiled first; otherwise this is
        Keras' ``fit`` on a compiled model. Integer labels are one-hot encoded. Returns Keras'
        History: ``history.history['loss']`` and ``['accuracy']`` per epoch."""
        if loss is not None or optimizer is not None or not self.compiled:
            self.compile_lrp_style(loss or "softmax_crossentropy", optimizer or "adam", opt_params)
        y_arr = np.asarray(y) if y is not None else None
        if y_arr is not None and y_arr.ndim == 1 and np.issubdtype(y_arr.dtype, np.integer):
            n_out = self.compute_output_shape((None,) + tuple(np.asarray(x).shape[1:]))[-1]
            y_arr = keras.utils.to_categorical(y_arr, int(n_out))
        self._cache = None
        kwargs.setdefault("verbose", 0)
        return super().fit(x, y_arr if y_arr is not None else y, epochs=epochs, batch_size=batch_size, **kwargs)

    def compile_lrp_style(self, loss: str | Any, optimizer: str | Any, opt_params: Seq[float] | None = None) -> None:
        """Compile with the original library's loss and optimizer names."""
        last = self.modules[-1]
        if isinstance(loss, str):
            key = loss.lower()
            if key not in _LOSSES:
                raise ValueError(f"unknown loss {loss!r}; valid: softmax_crossentropy, sigmoid_crossentropy, MSE")
            from .modules import Sigmoid, Softmax
            flag = isinstance(last, Sigmoid) if key == "sigmoid_crossentropy" else isinstance(last, Softmax)
            loss_obj = _LOSSES[key](flag)
        else:
            loss_obj = loss
        if isinstance(optimizer, str):
            key = optimizer.lower()
            if key not in _OPTIMIZERS:
                raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(_OPTIMIZERS)}")
            lr = float(opt_params[0]) if opt_params else 1e-3
            opt = _OPTIMIZERS[key](learning_rate=lr)
        else:
            opt = optimizer
        if isinstance(loss, str) and loss.lower() == "sigmoid_crossentropy":
            metric = keras.metrics.BinaryAccuracy(name="accuracy")
        else:
            metric = keras.metrics.CategoricalAccuracy(name="accuracy")
        self.compile(loss=loss_obj, optimizer=opt, metrics=[metric])

    def load_numpy(self, path: str) -> None:
        """Load a pickled list of numpy arrays (kernel, bias per layer), e.g. the original project's
        ``model.npy``, into this network."""
        try:
            arrays = np.load(path, allow_pickle=True, encoding="bytes")
        except (OSError, ValueError) as e:
            raise ExplainError(f"cannot read weights from {path}: {e}") from None
        self.set_weights(list(arrays))

    def set_weights(self, weights: Seq[Any]) -> None:
        """Set weights in the order kernel, bias per layer (as :meth:`get_weights` returns them)."""
        own = self.weights
        weights = list(weights)
        if len(weights) != len(own):
            raise ValueError(f"{self.name}: expected {len(own)} arrays "
                             f"({', '.join(v.path for v in own)}), got {len(weights)}")
        for v, w in zip(own, weights):
            w = np.asarray(w)
            if tuple(v.shape) != w.shape:
                raise ValueError(f"{self.name}: weight {v.path} has shape {tuple(v.shape)}, got {w.shape}")
            v.assign(w.astype(v.dtype))
        self._cache = None


def _expected_input(first: Any) -> tuple | None:
    """The input shapes the first module accepts, as a tuple of alternatives (None: unknown)."""
    from .modules import Convolution, Linear

    if isinstance(first, Linear) and first.input_dim is not None:
        return (("N", first.input_dim),)
    if isinstance(first, Convolution) and first.input_depth is not None:
        if first.input_dim is not None:
            h, w = first.input_dim
            return (("N", h * w * first.input_depth), ("N", h, w, first.input_depth))
        return (("N", "H", "W", first.input_depth),)
    return None


def _fits(expected: tuple, shape: tuple) -> bool:
    for alt in expected:
        if len(alt) == 2 and len(shape) >= 2:
            d = 1
            for s in shape[1:]:
                d *= int(s)
            if d == alt[1] and (len(shape) == 2 or alt is expected[0]):
                return True
        elif len(alt) == len(shape) and all(isinstance(a, str) or a == s for a, s in zip(alt[1:], shape[1:])):
            return True
    return False


register_chain(Sequential, lambda net: list(net.modules))
