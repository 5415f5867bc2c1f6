"""Names of rules that several places must agree on, in pure Python (no TensorFlow).

The engine's registries register these names (:mod:`interprettensor.engine.operation_rules`), the
command line offers them as choices (``explain --gates``) and decides from them which rules need the
input's bounds (``--low``/``--high``), and the region perturbation gives box rules their bounds
(:mod:`interprettensor.analysis.perturbation`). The module lives outside :mod:`interprettensor.engine`
so that the command line's parser can read it without importing the engine (``interprettensor --help``
stays fast); it imports nothing from the package. ``tests/test_cli_registry.py`` checks these names
against the registries.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRODUCT_RULES", "GATE_RULES", "OPERATION_RULE_NAMES", "BOX_RULES", "needs_box", "product_rule_list"]

#: rules for products of activations (a recurrent cell's gate ⊙ signal, attention's ``A·V``), each name
#: with the name of the rule it stands for (:class:`~interprettensor.engine.operation_rules.ProductRule`
#: subclasses by their ``name``); the first name of each rule is its main name, the others aliases
PRODUCT_RULES: dict[str, str] = {
    "gate": "gate", "signal_take_all": "gate",  # CP-LRP; Arras et al. 2017's signal-take-all
    "half": "uniform", "uniform": "uniform",     # AttnLRP's uniform rule; LRP-half of Arras et al. 2019
    "proportional": "proportional",              # LRP-prop, Arras et al. 2019
    "proportional_abs": "proportional_abs",      # LRP-abs, Arras et al. 2019
}

#: the product rules for recurrent cells' gates, as ``explain --gates`` offers them
GATE_RULES: tuple[str, ...] = tuple(PRODUCT_RULES)

#: rules of operations, not of layers with weights (with ``pass`` and ``winner_takes_all``)
OPERATION_RULE_NAMES: frozenset[str] = frozenset(PRODUCT_RULES) | {"softmax", "pass", "winner_takes_all"}

#: rules and presets that apply the z^B (box) rule and need the input's bounds ``low``/``high``
BOX_RULES: tuple[str, ...] = ("zbox", "epsilon_gamma_box", "bounded_deep_taylor")


def needs_box(rule: Any) -> bool:
    """Whether the rule or preset named ``rule`` needs ``low``/``high``: the names in :data:`BOX_RULES`
    and any name containing ``box`` or ``bounded`` (``zbox_ignore_bias``, a registered ``my_box_rule``),
    but not the ``toolbox_*`` presets; ``False`` for anything that is not a name."""
    if not isinstance(rule, str):
        return False
    key = rule.lower().replace("-", "_")
    rest = key.replace("toolbox", "")
    return key in BOX_RULES or "box" in rest or "bounded" in rest


def product_rule_list() -> str:
    """The product rules' names for messages: ``'gate' (alias 'signal_take_all'), 'half' (alias
    'uniform'), ...``."""
    groups: dict[str, list[str]] = {}
    for name, rule in PRODUCT_RULES.items():
        groups.setdefault(rule, []).append(name)
    return ", ".join(repr(names[0]) + (f" (alias {', '.join(map(repr, names[1:]))})" if names[1:] else "")
                     for names in groups.values())
