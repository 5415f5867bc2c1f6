"""The 2017 API's LRP variants: ``(lrp_var, param)`` pairs as given to ``Sequential.lrp`` and
``Module.set_lrp_parameters`` (``'simple'``, ``'epsilon'``, ``'flat'``, ``'ww'``, ``'alphabeta'``),
turned into the engine's rules."""

from __future__ import annotations

from ..engine.rules import RULES, AlphaBeta, Epsilon, Rule, get_rule

__all__ = ["VARIANTS", "rule_from_variant"]

#: the original API's variant names
VARIANTS = ("simple", "epsilon", "flat", "ww", "alphabeta")


def rule_from_variant(lrp_var: str | Rule | None, param: float | None = None) -> Rule:
    """The original API's ``(lrp_var, param)`` pair as a :class:`Rule`.

    ``'epsilon'``: param is epsilon; ``'alphabeta'``: param is alpha and beta = alpha - 1.
    Other rule names (and Rule objects) are accepted too.
    """
    if isinstance(lrp_var, Rule):
        return lrp_var
    if lrp_var is None:
        lrp_var = "simple"
    if not isinstance(lrp_var, str):
        raise TypeError(f"lrp_var must be a string or Rule, got {lrp_var!r}")
    key = lrp_var.lower()
    if key == "epsilon":
        return Epsilon(1e-6 if param is None else float(param))
    if key == "alphabeta":
        alpha = 2.0 if param is None else float(param)
        return AlphaBeta(alpha, alpha - 1.0)
    if key in ("simple", "z", "flat", "ww", "wsquare"):
        return get_rule(key)
    if key in RULES:
        return get_rule(key)
    raise ValueError(
        f"unknown LRP variant {lrp_var!r}; valid variants: {', '.join(VARIANTS)} "
        f"(and the rule names {', '.join(sorted(set(RULES) - set(VARIANTS)))})")
