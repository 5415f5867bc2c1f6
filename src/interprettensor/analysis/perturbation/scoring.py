"""What region perturbation measures: the model's explained (pre-softmax) output, compiled once per input
signature (:class:`_Scorer`), and the explained classes checked against it (:func:`_resolve_targets`).
The model-randomisation check (:mod:`interprettensor.analysis.randomisation`) scores with them too."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from ...engine import backend, dtypes
from ...engine.backend import Tensor
from ...engine.errors import ExplainError
from ...engine.precision import model_dtype as _model_dtype
from ...engine.targets import as_inputs
from ...engine.graph import build_graph, explained_output, forward

ArrayLike = Any


class _Scorer:
    """The model's explained (pre-softmax) output, compiled once per input signature."""

    def __init__(self, model: keras.Model, output: int | str | None = None):
        self.model = model
        self.graph = build_graph(model, canonize=False)
        if len(self.graph.inputs) != 1:
            raise ExplainError(f"evaluation supports single-input models; this model takes "
                               f"{len(self.graph.inputs)} inputs")
        self.key, _ = explained_output(self.graph, output)
        self.dtype = _model_dtype(model)
        self._fns: dict = {}

    def check(self, x: ArrayLike) -> np.ndarray:
        t = as_inputs(self.model, x, 1, self.dtype)[0]
        return ops.convert_to_numpy(t)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Flat outputs ``(n, units)`` as float64."""
        t = ops.convert_to_tensor(x, dtype=self.dtype)
        key = (tuple(t.shape[1:]), dtypes.name(self.dtype))
        fn = self._fns.get(key)
        if fn is None:
            def run(xb: Tensor) -> Tensor:
                values, _ = forward(self.graph, [xb])
                out = values[self.key]
                return ops.reshape(out, (ops.shape(out)[0], -1))

            fn = backend.compile(run, [backend.spec((None,) + tuple(t.shape[1:]), self.dtype)],
                                 variables=self.model.variables)
            self._fns[key] = fn
        return ops.convert_to_numpy(fn(t)).astype(np.float64)


def _resolve_targets(flat: np.ndarray, target: ArrayLike | None) -> np.ndarray:
    n, units = flat.shape
    if target is None:
        return flat.argmax(-1)
    t = np.asarray(target)
    if t.ndim == 0:
        t = np.full((n,), t)
    if t.shape != (n,):
        raise ExplainError(f"target must be an int or one int per sample ({n}), got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise ExplainError(f"target must be integer class indices, got {t.dtype}")
    if (t < 0).any() or (t >= units).any():
        raise ExplainError(f"target out of range: the model output has {units} units, valid targets are "
                           f"0..{units - 1}")
    return t.astype(np.int64)
