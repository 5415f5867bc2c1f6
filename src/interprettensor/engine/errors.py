"""The library's errors: one root, :class:`InterpretTensorError`, that every error the library raises
on purpose derives from (with the builtin base that fits as its second base), and the engine's own
:class:`ExplainError`.

The lowest module of the lowest layer, importing nothing: every layer (and the command line's light
start) may import its error base from here without importing TensorFlow."""

from __future__ import annotations

__all__ = ["InterpretTensorError", "ExplainError"]


class InterpretTensorError(Exception):
    """The root of the library's errors: ``except it.InterpretTensorError`` catches every error that
    interprettensor raises on purpose (a model it cannot explain, bad input, a damaged run, a failed
    download, a command line mistake), and none of the bugs."""


class ExplainError(InterpretTensorError, ValueError):
    """A model or layer that the engine cannot explain, or bad input to an explanation. Messages name
    what is wrong and where (layer, shape, parameter)."""
