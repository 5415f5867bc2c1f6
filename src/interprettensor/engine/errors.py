"""The engine's error type."""

from __future__ import annotations

__all__ = ["ExplainError"]


class ExplainError(ValueError):
    """A model or layer that the engine cannot explain, or bad input to an explanation. Messages name
    what is wrong and where (layer, shape, parameter)."""
