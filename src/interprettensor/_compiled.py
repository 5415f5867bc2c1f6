"""Compiled functions of a model outside the engine (the original API's ``Sequential``, the gradient
baselines, the evaluation's scorer): :func:`~interprettensor.engine.backend.compile` with the model's
variables passed in, so that JAX reads the weights at every call instead of baking them into the
compiled code (TensorFlow and PyTorch read them live anyway)."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

from .engine import backend

__all__ = ["compile_model_fn"]


def compile_model_fn(fn: Callable, signature: Sequence[Any], variables: Sequence[Any], jit: bool = False) -> Callable:
    """``backend.compile(fn, signature, jit, variables=variables)``; a backend module whose ``compile``
    takes no ``variables`` (it reads them live: the TensorFlow module) gets none."""
    if "variables" in inspect.signature(backend.compile).parameters:
        return backend.compile(fn, signature, jit=jit, variables=list(variables))
    return backend.compile(fn, signature, jit=jit)
