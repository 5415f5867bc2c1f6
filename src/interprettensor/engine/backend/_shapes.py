"""What the JAX and PyTorch modules share: signatures as plain records (both run on concrete shapes:
JAX traces once per shape, PyTorch runs eagerly) and errors read by their text."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence


class Spec(NamedTuple):
    """The signature of one argument of a compiled function (``None``: any size)."""
    shape: Any
    dtype: Any


def spec(shape: Sequence[int | None] | None, dtype: Any) -> Spec:
    return Spec(None if shape is None else tuple(shape), dtype)


def error_message(e: BaseException) -> str:
    return str(e)
