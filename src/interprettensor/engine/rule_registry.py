"""The rule registry: rule names and the factories they stand for, and :func:`get_rule`, which turns
a name with keyword parameters into a rule. A rule module registers its rules at its end
(``register_rule('epsilon', Epsilon)``); the composites, the command line and ``it.lrp`` read
rule names through here."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from .rule_algebra import Rule

__all__ = ["RULES", "register_rule", "get_rule", "rule_param_names", "rule_params_from_kwargs"]

#: Rule names and the factories they stand for. Keyword parameters of :func:`get_rule` are passed on.
RULES: dict[str, Callable[..., Rule]] = {}


def register_rule(name: str, factory: Callable[..., Rule]) -> None:
    """Make ``factory`` available under ``name`` wherever rules are given by name."""
    RULES[name] = factory


def get_rule(rule: Rule | str, **params: Any) -> Rule:
    """Return a :class:`Rule` from a rule object or a name with keyword parameters.

    A name ending in ``_ignore_bias`` (or ``_nobias``) gives the rule with ``bias=False``.
    """
    if isinstance(rule, Rule):
        return rule
    if not isinstance(rule, str):
        raise TypeError(f"a rule is a Rule object or one of the names {sorted(RULES)}, got {rule!r}")
    key = rule.lower()
    for suffix in ("_ignore_bias", "_nobias", "ignorebias"):
        if key.endswith(suffix) and key[: -len(suffix)] in RULES:
            key = key[: -len(suffix)]
            params = {**params, "bias": False}
            break
    if key not in RULES:
        raise ValueError(f"unknown rule {rule!r}; valid rules: {', '.join(sorted(RULES))}")
    accepted = _signature_params(RULES[key])
    unknown = sorted(set(params) - accepted) if accepted is not None else []
    if unknown:
        raise ValueError(f"rule {rule!r} does not take the parameters {unknown}; it takes: "
                         f"{', '.join(sorted(accepted)) or 'no parameters'}")
    try:
        return RULES[key](**params)
    except TypeError as e:
        raise ValueError(f"rule {rule!r} does not take the parameters {sorted(params)}: {e}") from None


def _signature_params(factory: Callable[..., Rule]) -> set[str] | None:
    """The keyword parameters ``factory`` takes; ``None`` if it takes any (``**kwargs``) or cannot tell."""
    import inspect

    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def rule_param_names(name: str) -> set[str]:
    """The keyword parameters that the rule named ``name`` takes (empty if unknown)."""
    key = name.lower()
    for suffix in ("_ignore_bias", "_nobias", "ignorebias"):
        if key.endswith(suffix) and key[: -len(suffix)] in RULES:
            key = key[: -len(suffix)]
    factory = RULES.get(key)
    return (_signature_params(factory) or set()) if factory is not None else set()


def rule_params_from_kwargs(name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword parameters that the factory of rule ``name`` accepts (used by composites)."""
    import inspect

    factory = RULES.get(name)
    if factory is None:
        return {}
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in kwargs.items() if k in sig.parameters}
