"""The names the command line offers and decides by (:mod:`interprettensor.rule_names`) are the rule
registry's: ``explain --gates`` offers exactly the registered product rules, and every registered rule
or preset that needs the input's bounds is recognised as a box rule by the command line and by the
region perturbation alike (and none that does not)."""

import pytest

import interprettensor as it
from interprettensor import rule_names
from interprettensor.analysis import perturbation
from interprettensor.apps.cli import build_parser
from interprettensor.apps.commands import options
from interprettensor.engine.composites import PRESETS
from interprettensor.engine.operation_rules import OPERATION_RULE_NAMES, ProductRule, get_product_rule, product_rule_names
from interprettensor.engine.rules import RULES


def _option(command, flag):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return next(a for a in sub.choices[command]._actions if flag in a.option_strings)


def test_gate_choices_are_the_product_rule_registry():
    choices = _option("explain", "--gates").choices
    assert list(choices) == list(rule_names.GATE_RULES)
    assert set(choices) == set(product_rule_names())
    for name in choices:
        assert isinstance(get_product_rule(name), ProductRule), name


def test_product_rule_names_and_aliases_match_the_rule_classes():
    for name, rule in rule_names.PRODUCT_RULES.items():
        assert RULES[name]().name == rule, name
    assert OPERATION_RULE_NAMES is rule_names.OPERATION_RULE_NAMES
    assert OPERATION_RULE_NAMES <= set(RULES)
    with pytest.raises(ValueError, match=r"'gate' \(alias 'signal_take_all'\), 'half' \(alias 'uniform'\), "
                                         r"'proportional', 'proportional_abs' or a ProductRule object"):
        get_product_rule("nope")


def _registry_needs_bounds(name):
    """Whether the registry refuses ``name`` without ``low``/``high`` for want of the z^B rule's box."""
    try:
        it.get_composite(name)
    except ValueError as e:
        return "z^B" in str(e)
    return False


REGISTERED = sorted(set(RULES) | set(PRESETS))


@pytest.mark.parametrize("name", REGISTERED)
def test_box_rules_are_recognised_alike(name):
    needs = _registry_needs_bounds(name)
    assert options.needs_box(name) is needs, f"command line: {name!r}"
    assert perturbation._needs_box(name) is needs, f"perturbation: {name!r}"
    if needs:
        it.get_composite(name, low=0.0, high=1.0)  # the bounds are what it lacked


def test_every_named_box_rule_is_registered_and_needs_bounds():
    assert set(rule_names.BOX_RULES) <= set(REGISTERED)
    assert all(_registry_needs_bounds(name) for name in rule_names.BOX_RULES)
    # names not (yet) registered: the same decision by name in both places
    for name in ("my_box_rule", "zbox_ignore_bias", "bounded_thing", "toolbox_flat", "Epsilon-Gamma-Box"):
        assert options.needs_box(name) is perturbation._needs_box(name) is rule_names.needs_box(name)
    assert not options.needs_box("toolbox_flat") and options.needs_box("Epsilon-Gamma-Box")
