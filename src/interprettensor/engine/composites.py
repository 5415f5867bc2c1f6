"""Composites: which rule each layer of a model gets, as data.

A :class:`Composite` assigns rules by layer name (glob patterns), by position (the first layer with
weights, the last ``n`` layers with weights), by layer type, and by category defaults. Named presets
follow Zennit's composites and iNNvestigate's sequential presets:

================================  ==========================================================
preset                            rules (dense = Dense/Linear, conv = all convolutions)
================================  ==========================================================
``epsilon_plus``                  dense: epsilon, conv: z+ (Kohlbrenner et al. 2020)
``epsilon_plus_flat``             as above, flat on the first layer
``epsilon_gamma_box``             dense: epsilon, conv: gamma, first layer: z^B(low, high)
                                  (``low``, ``high`` required)
``epsilon_alpha2_beta1``          dense: epsilon, conv: alpha2-beta1
``epsilon_alpha2_beta1_flat``     as above, flat on the first layer
``preset_a``                      dense: epsilon (0.1), conv: alpha1-beta0 (Montavon et al. 2019;
                                  iNNvestigate's LRPSequentialCompositeA)
``preset_b``                      dense: epsilon (0.1), conv: alpha2-beta1 (iNNvestigate's ...B)
``preset_a_flat``, ``preset_b_flat``  as above, flat on the first layer
``toolbox_<variant>``             ``simple``, ``epsilon``, ``flat``, ``ww``, ``alphabeta`` on every
                                  layer, pooling and sums included (the LRP Toolbox's and
                                  ``Sequential.lrp``'s semantics)
================================  ==========================================================

The "first layer" is each layer with weights that a model input reaches without crossing another
such layer. z^B applies there only when the layer's input *is* the model input through affine
preprocessing (``Rescaling``, ``Normalization``, padding, cropping, reshapes; the bounds are mapped
through them): elsewhere (e.g. a layer fed by the input concatenated with computed features) the
layer gets the preset's rule for its kind, because mapped bounds would not bound its input.

Presets reject parameters they do not use, naming the ones they take.

Layers without weights get category defaults: sums, average pooling, standalone BatchNorm and
upsampling split relevance in proportion to their inputs with the stabiliser of the composite's
main rule (:meth:`~interprettensor.engine.rules.Rule.merge_rule`; the presets above use the plain z-rule
there, as iNNvestigate and Zennit do); max pooling is winner-takes-all;
reshapes, activations, dropout and gates pass relevance through.

Recurrent layers (SimpleRNN, LSTM, GRU, Bidirectional) get the rule for their kind (``'dense'``) for
their linear parts; their gate ⊙ signal products are signal-take-all (Arras et al. 2017) unless
``gates=`` names another product rule (``'half'``, ``'proportional'``, ``'proportional_abs'``: Arras
et al. 2019), which then applies to every recurrent layer; a
:class:`~interprettensor.engine.operation_rules.CellRule` assigned to one layer sets both for it.

Example::

    composite = it.Composite(default="epsilon", layer_map={"conv": "gamma"},
                             name_map={"block5_*": it.rules.Epsilon(0.25)}, first="flat")
    R = it.lrp(model, x, rule=composite)
"""

from __future__ import annotations

import fnmatch
from typing import Any, Callable, Mapping


from . import handlers as H
from .graph import Graph, Step
from .operation_rules import CellRule, Gate, ProductRule, SoftmaxRule, UniformProduct, get_product_rule
from .rules import (RULES, AlphaBeta, Epsilon, Flat, Gamma, GradientMap, Pass, Rule, WinnerTakesAll, Z, ZBox, ZPlus,
                    get_rule, rule_param_names, rule_params_from_kwargs)

__all__ = ["Composite", "PRESETS", "get_composite", "register_preset"]

RuleLike = Rule | str


def layer_kind(step: Step) -> str:
    """``'dense'`` or ``'conv'`` for layers with weights (as their handler says), else the handler's
    category."""
    if step.category == H.WEIGHTED:
        return step.handler.kind
    return step.category


class Composite:
    """Assign rules to the layers of a model.

    Args:
        default: rule for layers with weights that nothing else matches (name or Rule).
        layer_map: ``{key: rule}``; a key is a layer class, a class-name glob (``'Conv*'``) or a kind:
            ``'dense'``, ``'conv'``, ``'weighted'`` (both), ``'linear'`` (sums, average pooling,
            standalone BatchNorm), ``'maxpool'``.
        name_map: ``{glob: rule}`` on layer names (nested layers are named ``'inner/layer'``).
        first: rule for the first layer(s) with weights after each model input.
        last: ``(n, rule)``: rule for the last ``n`` layers with weights.
        merge: rule for sums, average pooling and standalone BatchNorm (default:
            ``default.merge_rule()``).
        gates: rule for the gate ⊙ signal products inside recurrent cells (LSTM, GRU):
            ``'gate'``/``'signal_take_all'`` (the default, Arras et al. 2017), ``'half'``,
            ``'proportional'``, ``'proportional_abs'`` (Arras et al. 2019) or a ProductRule object;
            layers given a :class:`CellRule` keep its own.
        params: keyword parameters passed to rules given by name (``epsilon=0.1``, ``gamma=0.5``, ...).
    """

    def __init__(self, default: RuleLike = "epsilon", layer_map: Mapping[Any, RuleLike] | None = None,
                 name_map: Mapping[str, RuleLike] | None = None, first: RuleLike | None = None,
                 last: tuple[int, RuleLike] | None = None, merge: RuleLike | None = None,
                 name: str = "composite", gates: ProductRule | str | None = None, **params: Any):
        named = [r for r in [default, first, merge, last[1] if isinstance(last, tuple) and len(last) == 2 else None,
                             *(layer_map or {}).values(), *(name_map or {}).values()] if isinstance(r, str)]
        accepted = set().union(*(rule_param_names(r) for r in named)) if named else set()
        unknown = sorted(set(params) - accepted)
        if unknown:
            raise ValueError(f"composite parameters {unknown} are not taken by any of its rules given by name "
                             f"({', '.join(repr(r) for r in named) or 'none'}); "
                             f"they take: {', '.join(sorted(accepted)) or 'nothing'}")
        self.params = params
        self.default = self._rule(default)
        self.layer_map = [(k, self._rule(v)) for k, v in (layer_map or {}).items()]
        self.name_map = [(k, self._rule(v)) for k, v in (name_map or {}).items()]
        self.first = None if first is None else self._rule(first)
        if last is not None and (not isinstance(last, tuple) or len(last) != 2):
            raise ValueError(f"last must be a pair (n, rule), got {last!r}")
        self.last = None if last is None else (int(last[0]), self._rule(last[1]))
        if merge is None:  # the default rule's own, or the z-rule
            merge = self.default.merge_rule() or Z()
        self.merge = self._rule(merge)
        self.name = name
        self.gates = None if gates is None else get_product_rule(gates)

    def _rule(self, rule: RuleLike) -> Rule:
        if isinstance(rule, Rule):
            return rule
        return get_rule(rule, **rule_params_from_kwargs(str(rule).lower(), self.params))

    def __repr__(self) -> str:
        return f"Composite({self.name})"

    # ------------------------------------------------------------------ assignment
    def _match_type(self, step: Step) -> Rule | None:
        kind = layer_kind(step)
        for key, rule in self.layer_map:
            if isinstance(key, type):
                if isinstance(step.layer, key):
                    return rule
            elif key == kind or (key == "weighted" and step.category == H.WEIGHTED):
                return rule
            elif isinstance(key, str) and any(fnmatch.fnmatchcase(c.__name__, key)
                                              for c in type(step.layer).__mro__):
                return rule
        return None

    def assign(self, graph: Graph) -> list[Rule]:
        """One rule per step of ``graph``."""
        weighted = [s for s in graph.steps if s.category == H.WEIGHTED]
        firsts = set(first_layers(graph)) if self.first is not None else set()
        boxed = box_input_keys(graph)

        def on_box_input(step: Step) -> bool:
            # recurrent layers also read their own state, which the input's box does not bound
            return (bool(step.inputs) and all(k in boxed for k in step.inputs)
                    and step.handler.accepts_box)

        if self.first is not None and self.first.bounds() is not None:  # z^B needs an input bounded by the model input's box
            firsts = {s for s in firsts if on_box_input(s)}
        lasts = set(weighted[-self.last[0]:]) if (self.last is not None and self.last[0] > 0) else set()
        rules = []
        for step in graph.steps:
            rule = next((r for pat, r in self.name_map
                         if any(fnmatch.fnmatchcase(n, pat) or fnmatch.fnmatchcase(n.split("/")[-1], pat)
                                for n in step.names())), None)
            if rule is None and step in firsts:
                rule = self.first
            if rule is None and step in lasts:
                rule = self.last[1]
            if rule is None:
                rule = self._match_type(step)
            if rule is None:
                rule = self._category_default(step)
            if step.handler.gated:
                if self.gates is not None and rule.explains_linear and rule.bounds() is None:
                    rule = CellRule(rule, self.gates)
            elif isinstance(rule, CellRule):
                raise H.ExplainError(f"layer {step.name!r} ({step.type_name}) is assigned {rule!r}, but it has no "
                                     f"gates: a CellRule applies to recurrent layers (SimpleRNN, LSTM, GRU, "
                                     f"Bidirectional) only")
            if rule.bounds() is not None and not on_box_input(step):
                raise H.ExplainError(
                    f"layer {step.name!r} ({step.type_name}) is assigned the z^B (box) rule, but its input is not "
                    f"the model input through affine preprocessing (rescaling, normalisation, padding, "
                    f"reshapes), so the bounds low/high say nothing about it; give it another rule")
            rules.append(rule)
        return rules

    def _category_default(self, step: Step) -> Rule:
        c = step.category
        if c == H.WEIGHTED:
            return self.default
        if c == H.LINEAR:
            return self.merge
        if c == H.MAXPOOL:
            return WinnerTakesAll()
        if c == H.PRODUCT:
            return UniformProduct()
        if c == H.NORM:
            return self.merge
        return Pass()


def first_layers(graph: Graph) -> list[Step]:
    """The layers with weights that the model inputs reach without crossing another such layer."""
    consumers = graph.consumers()
    seen, out, stack = set(), [], list(graph.inputs)
    while stack:
        k = stack.pop()
        for s in consumers.get(k, []):
            if s in seen:
                continue
            seen.add(s)
            if s.category == H.WEIGHTED:
                out.append(s)
            else:
                stack.extend(s.outputs)
    return out


def box_input_keys(graph: Graph) -> set:
    """Keys of the tensors that are a model input through affine preprocessing only (rescaling,
    normalisation, padding, cropping, reshapes, concatenation of such): where bounds on the model
    input give bounds on the tensor (z^B's requirement)."""
    keys = set(graph.inputs)
    for step in graph.steps:
        if step.inputs and all(k in keys for k in step.inputs) and step.handler.preserves_box(step.layer):
            keys.update(step.outputs)
    return keys


def _preset(dense: Callable[[dict], Rule], conv: Callable[[dict], Rule],
            first: Callable[[dict], Rule] | None = None, name: str = "",
            accepts: tuple[str, ...] = ("epsilon",), requires: tuple[str, ...] = ()) -> Callable[..., Composite]:
    def make(**params: Any) -> Composite:
        check_params(name, params, accepts, requires)
        d = dense(params)
        # sums and average pooling: the z-rule, not the dense layers' epsilon (iNNvestigate's
        # AveragePooling/Add reverse layers, Zennit's Norm rule)
        return Composite(default=d, layer_map={"conv": conv(params)},
                         first=None if first is None else first(params), merge=Z(), name=name)

    make.__name__ = name
    make.accepts = accepts  # type: ignore[attr-defined]
    return make


def check_params(name: str, params: Mapping[str, Any], accepts: tuple[str, ...], requires: tuple[str, ...] = ()) -> None:
    """Reject parameters that preset ``name`` does not take, and missing required ones."""
    unknown = sorted(set(params) - set(accepts))
    if unknown:
        raise ValueError(f"preset {name!r} does not take the parameters {unknown}; it takes: "
                         f"{', '.join(accepts) or 'no parameters'}")
    missing = [p for p in requires if p not in params]
    if missing:
        if set(missing) & {"low", "high"}:
            raise ValueError(f"preset {name!r} applies the z^B (box) rule to the first layer and needs the range "
                             f"of the input values: pass low= and high= (e.g. low=0.0, high=1.0 for images scaled "
                             f"to [0, 1], or per-channel arrays); on the command line --low and --high")
        raise ValueError(f"preset {name!r} needs the parameters {missing}")


def _eps(default: float) -> Callable[[dict], Rule]:
    return lambda p: Epsilon(p.get("epsilon", default))


def _box(p: dict) -> Rule:
    return ZBox(p["low"], p["high"])


PRESETS: dict[str, Callable[..., Composite]] = {
    "epsilon_plus": _preset(_eps(1e-6), lambda p: ZPlus(), name="epsilon_plus"),
    "epsilon_plus_flat": _preset(_eps(1e-6), lambda p: ZPlus(), lambda p: Flat(), name="epsilon_plus_flat"),
    "epsilon_gamma_box": _preset(_eps(1e-6), lambda p: Gamma(p.get("gamma", 0.25)), _box,
                                 name="epsilon_gamma_box", accepts=("epsilon", "gamma", "low", "high"),
                                 requires=("low", "high")),
    "epsilon_alpha2_beta1": _preset(_eps(1e-6), lambda p: AlphaBeta(2.0, 1.0), name="epsilon_alpha2_beta1"),
    "epsilon_alpha2_beta1_flat": _preset(_eps(1e-6), lambda p: AlphaBeta(2.0, 1.0), lambda p: Flat(),
                                         name="epsilon_alpha2_beta1_flat"),
    "preset_a": _preset(_eps(0.1), lambda p: AlphaBeta(1.0, 0.0), name="preset_a"),
    "preset_b": _preset(_eps(0.1), lambda p: AlphaBeta(2.0, 1.0), name="preset_b"),
    "preset_a_flat": _preset(_eps(0.1), lambda p: AlphaBeta(1.0, 0.0), lambda p: Flat(), name="preset_a_flat"),
    "preset_b_flat": _preset(_eps(0.1), lambda p: AlphaBeta(2.0, 1.0), lambda p: Flat(), name="preset_b_flat"),
}


def _toolbox(variant: str) -> Callable[..., Composite]:
    """The original variant on every layer, as the LRP Toolbox and :meth:`Sequential.lrp` apply it:
    the rule also covers pooling and sums (max pooling: winner-takes-all, uniform under flat/ww)."""

    accepts = tuple(sorted(rule_param_names(variant)))

    def make(**params: Any) -> Composite:
        check_params(f"toolbox_{variant}", params, accepts)
        rule = get_rule(variant, **params)
        return Composite(default=rule, merge=rule, layer_map={"maxpool": rule}, name=f"toolbox_{variant}")

    make.__name__ = f"toolbox_{variant}"
    make.accepts = accepts  # type: ignore[attr-defined]
    return make


for _variant in ("simple", "epsilon", "flat", "ww", "alphabeta"):
    PRESETS[f"toolbox_{_variant}"] = _toolbox(_variant)


def _deep_taylor_preset(**params: Any) -> Composite:
    """Deep Taylor (Montavon et al. 2017) as iNNvestigate applies it: z+ on layers with weights,
    the transposed Jacobian (:class:`~interprettensor.engine.rules.GradientMap`) at sums and pooling."""
    check_params("deep_taylor", params, ())
    return Composite(default=ZPlus(), merge=GradientMap(), name="deep_taylor")


def _bounded_deep_taylor_preset(**params: Any) -> Composite:
    """As ``deep_taylor``, with z^B(low, high) on the first layer(s)."""
    check_params("bounded_deep_taylor", params, ("low", "high"), requires=("low", "high"))
    return Composite(default=ZPlus(), merge=GradientMap(), first=ZBox(params["low"], params["high"]),
                     name="bounded_deep_taylor")


PRESETS["deep_taylor"] = _deep_taylor_preset
PRESETS["bounded_deep_taylor"] = _bounded_deep_taylor_preset
_deep_taylor_preset.accepts = ()  # type: ignore[attr-defined]
_bounded_deep_taylor_preset.accepts = ("low", "high")  # type: ignore[attr-defined]


def _transformer_preset(name: str, layer_map: Callable[[Rule], dict], doc: str) -> Callable[..., Composite]:
    def make(**params: Any) -> Composite:
        check_params(name, params, ("epsilon",))
        eps = Epsilon(params.get("epsilon", 1e-6))
        return Composite(default=eps, layer_map=layer_map(eps), merge=Z(), name=name)

    make.__name__ = name
    make.__doc__ = doc
    make.accepts = ("epsilon",)  # type: ignore[attr-defined]
    return make


PRESETS["attnlrp"] = _transformer_preset(
    "attnlrp", lambda eps: {"product": UniformProduct(), "gate": UniformProduct(), "softmax": SoftmaxRule(),
                            "norm": eps},
    """AttnLRP (Achtibat et al., ICML 2024): epsilon on dense, einsum-dense and projection layers; the
    uniform rule on products of activations (``Q·Kᵀ``, ``A·V``, gated units); the softmax rule on
    softmax; layer normalisation as a linear map with the standard deviation held constant (epsilon);
    the z-rule on residual sums; element-wise nonlinearities and RMS normalisation pass relevance.""")
PRESETS["cp_lrp"] = _transformer_preset(
    "cp_lrp", lambda eps: {"product": Gate(), "gate": Gate(), "softmax": Pass(), "norm": eps},
    """CP-LRP (Ali et al., ICML 2022): as AttnLRP, except that attention weights and gates are constants
    (values receive all of ``A·V``'s relevance, queries and keys none; the signal factor of a gated
    unit all of its relevance).""")


def register_preset(name: str, factory: Callable[..., Composite]) -> None:
    """Make a composite factory available by name (it receives the keyword parameters)."""
    PRESETS[name] = factory


def get_composite(rule: RuleLike | Composite, gates: ProductRule | str | None = None, **params: Any) -> Composite:
    """A composite from a preset name, a rule name (applied to every layer with weights), a Rule
    object, or a Composite (returned as is). ``gates``: the product rule of recurrent cells' gates
    (see :class:`Composite`)."""
    if isinstance(rule, (Composite, Rule)) and params:
        raise ValueError(f"the parameters {sorted(params)} would be ignored: rule is a {type(rule).__name__} "
                         f"object, which carries its own parameters (set them when creating it)")
    if isinstance(rule, Composite):
        if gates is not None:
            raise ValueError(f"gates={gates!r} would be ignored: rule is a Composite; give gates= when creating it")
        return rule
    if isinstance(rule, Rule):
        return Composite(default=rule, name=rule.name, gates=gates)
    if isinstance(rule, str):
        key = rule.lower()
        if key in PRESETS:
            composite = PRESETS[key](**params)
            if gates is not None:
                composite.gates = get_product_rule(gates)
            return composite
        try:
            base = get_rule(rule, **params)
        except ValueError as e:
            if "unknown rule" in str(e):
                raise ValueError(f"unknown rule or preset {rule!r}; rules: {', '.join(sorted(RULES))}; "
                                 f"presets: {', '.join(sorted(PRESETS))}") from None
            raise
        return Composite(default=base, name=key, gates=gates)
    raise TypeError(f"rule must be a name, a Rule or a Composite, got {type(rule).__name__}")
