"""The graph walk: a Keras model (Sequential, Functional, nested) as a flat list of steps.

:func:`build_graph` flattens a model into :class:`Step` objects in topological order, each with the
handler that knows the layer's linear map or routing, and the keys of the tensors it reads and
writes. Nested models are inlined. :func:`forward` runs the steps and records what relevance needs;
:func:`backward` walks them in reverse, summing the relevance that reaches a tensor from all of its
consumers (skip connections, shared inputs).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Callable, Hashable, Sequence

import keras
import tensorflow as tf
from keras import tree

from .errors import ExplainError
from .handlers.elementwise import IDENTITY_AT_INFERENCE
from .expand import CONCRETE_SPECS, ShapeDependent, expansion
from .handlers import (ELEMENTWISE, GATE, PRODUCT, SOFTMAX, ConstantHandler, ElementwiseHandler, FixedLinearHandler, GateHandler,
                       Handler, LinearHandler, MaxPoolHandler, RouteHandler, SeparableHandler, SoftmaxHandler,
                       handler_for, load_optional_handlers, overridden_parent)
from .linear import materialize
from .rules import LinearRule, Rule, WinnerTakesAll, identity, negative, positive

Key = Hashable


@dataclasses.dataclass(eq=False)
class Step:
    """One layer (or keras operation) call in the flattened model."""

    name: str
    layer: Any
    handler: Handler
    inputs: list
    outputs: list
    call: Callable[[Sequence[tf.Tensor]], list]
    strip_activation: bool = False
    fused: tuple = ()
    aliases: tuple = ()
    #: per input: known to be >= 0 in every forward pass (set by :func:`mark_nonneg`)
    nonneg: tuple = ()
    #: per input of a product: the factor is a gate (a softmax or squashing activation's output; set
    #: by :func:`mark_gates`)
    gates: tuple = ()
    #: per input: its value depends on the values of a model input that carries relevance (a float
    #: input, or an embedding's output; set by :func:`mark_carried`)
    carried: tuple = ()
    #: the call's keyword arguments that are not tensors (e.g. ``reverse=True``)
    options: dict = dataclasses.field(default_factory=dict)

    @property
    def type_name(self) -> str:
        return type(self.layer).__name__

    @property
    def category(self) -> str:
        return self.handler.category

    def names(self) -> tuple[str, ...]:
        return (self.name,) + tuple(self.aliases)


@dataclasses.dataclass(eq=False)
class Graph:
    inputs: list
    outputs: list
    steps: list
    input_names: list
    output_names: list

    def producer(self) -> dict:
        return {k: s for s in self.steps for k in s.outputs}

    def consumers(self) -> dict:
        out: dict = {}
        for s in self.steps:
            for k in s.inputs:
                out.setdefault(k, []).append(s)
        return out

    def layer_names(self) -> list[str]:
        return [n for s in self.steps for n in s.names()]

    def find(self, name: str) -> Step:
        """The step of a layer by name (exact, then the last path component, then a glob)."""
        for s in self.steps:
            if name in s.names():
                return s
        hits = [s for s in self.steps if any(n.split("/")[-1] == name for n in s.names())]
        if not hits:
            hits = [s for s in self.steps if any(fnmatch.fnmatchcase(n, name) for n in s.names())]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ExplainError(f"layer name {name!r} is ambiguous: {[h.name for h in hits]}")
        raise ExplainError(f"the model has no layer {name!r}; its layers are: {', '.join(self.layer_names())}")


class _Keys:
    def __init__(self) -> None:
        self.n = 0

    def new(self) -> int:
        self.n += 1
        return self.n


def _is_model(op: Any) -> bool:
    return isinstance(op, keras.Model)


def _layer_call(layer: Any) -> Callable:
    def call(xs: Sequence[tf.Tensor]) -> list:
        return tree.flatten(layer(xs[0] if len(xs) == 1 else list(xs)))

    return call


def _node_call(op: Any, node: Any) -> Callable:
    ids = [id(kt) for kt in node.input_tensors]

    def call(xs: Sequence[tf.Tensor]) -> list:
        args, kwargs = node.arguments.fill_in(dict(zip(ids, xs)))
        kwargs.pop("training", None)
        return tree.flatten(op(*args, **kwargs))

    return call


def _floating(kts: Sequence[Any] | None) -> list[bool] | None:
    if kts is None:
        return None
    return [str(getattr(kt, "dtype", "float32")).startswith(("float", "bfloat")) for kt in kts]


_CONSTANT = ConstantHandler()


def _make_step(op: Any, name: str, ins: list, outs: list, call: Callable, node: Any = None) -> Step:
    out_float = _floating(node.outputs) if node is not None else None
    handler = handler_for(op)
    if handler is not None and hasattr(handler, "for_layer"):  # a wrapper: built around the wrapped layer's
        handler = handler.for_layer(op)
    if out_float is not None and not any(out_float):
        handler = _CONSTANT  # integer or boolean outputs (masks, indices): no relevance flows through them
    if handler is None:
        parent = overridden_parent(op)
        why = (f" (it subclasses {parent.__name__} but overrides call, so {parent.__name__}'s handler would "
               f"explain another computation)" if parent is not None else "")
        if isinstance(op, keras.layers.TimeDistributed):
            why = f" (the layer it wraps, {type(op.layer).__name__}, has none)"
        raise ExplainError(
            f"layer {name!r} of type {type(op).__name__} cannot be explained: no LRP handler is "
            f"registered for it{why}. Register one with interprettensor.register_handler({type(op).__name__}, "
            f"handler) (see the README section 'Adding a rule or a layer').")
    if isinstance(handler, FixedLinearHandler) and not isinstance(op, keras.layers.Layer) and len(ins) == 1:
        handler = ElementwiseHandler()  # ``x + constant``: an element-wise shift
    options = {}
    if node is not None:
        options = {k: v for k, v in node.arguments.kwargs.items()
                   if isinstance(v, (bool, int, float, str, type(None)))}
    return Step(name, op, handler, ins, outs, call, options=options)


def _add_chain(g: Graph, layers: Sequence[Any], in_keys: list, prefix: str, keys: _Keys) -> list:
    cur = in_keys
    for layer in layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if _is_model(layer):
            cur = _add_model(g, layer, cur, prefix + layer.name + "/", keys)
            continue
        outs = [keys.new()]
        g.steps.append(_make_step(layer, prefix + layer.name, cur, outs, _layer_call(layer)))
        cur = outs
    return cur


def _add_functional(g: Graph, model: Any, in_keys: list, prefix: str, keys: _Keys) -> list:
    if len(in_keys) != len(model.inputs):
        raise ExplainError(f"model {model.name!r} takes {len(model.inputs)} inputs, got {len(in_keys)}")
    kmap = {id(kt): k for kt, k in zip(model.inputs, in_keys)}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            op = node.operation
            if op is None or node.is_input:
                continue
            if any(id(kt) not in kmap for kt in node.input_tensors):
                continue
            ins = [kmap[id(kt)] for kt in node.input_tensors]
            expanded = None
            if not _is_model(op) and handler_for(op) is None and any(_floating(node.outputs)):
                expanded = _expand(op, node, prefix)
            if _is_model(op):
                outs = _add_model(g, op, ins, prefix + op.name + "/", keys)
            elif expanded is not None:
                outs = _add_model(g, expanded, ins, prefix + op.name + "/", keys)
                _name_block_output(g, outs, prefix + op.name)
            else:
                outs = [keys.new() for _ in node.outputs]
                g.steps.append(_make_step(op, prefix + op.name, ins, outs, _node_call(op, node), node))
            for kt, k in zip(node.outputs, outs):
                kmap[id(kt)] = k
    return [kmap[id(kt)] for kt in model.outputs]


def _name_block_output(g: Graph, outs: list, name: str) -> None:
    """The step that computes a traced layer's (first) output also answers to the layer's name, so
    that ``layerwise`` results and ``layer=`` find the block (``'transformer_layer_0'``)."""
    for s in reversed(g.steps):
        if outs and outs[0] in s.outputs:
            s.aliases = s.aliases + (name,)
            return


def _expand(op: Any, node: Any, prefix: str) -> Any:
    """The functional graph of what ``op`` computes (see :mod:`.expand`), or ``None``."""
    try:
        return expansion(op, node)
    except ExplainError:
        raise
    except Exception as e:  # noqa: BLE001 - a call that cannot run on symbolic tensors
        specs = CONCRETE_SPECS.get()
        unknown = any(d is None for kt in node.input_tensors for d in tuple((specs or {}).get(id(kt), kt).shape))
        if specs is None and unknown:
            raise ShapeDependent(f"layer {prefix + op.name!r} ({type(op).__name__}) needs the input's shape to be "
                                 f"traced: {type(e).__name__}: {e}") from e
        raise ExplainError(
            f"layer {prefix + op.name!r} of type {type(op).__name__} has no LRP handler, and tracing its call "
            f"into the layers and operations it uses failed: {type(e).__name__}: {e}. Register a handler with "
            f"interprettensor.register_handler({type(op).__name__}, handler) (see the README section 'Adding a "
            f"rule or a layer').") from e


#: model classes that are chains of layers, each with a function listing them in order
_CHAINS: list[tuple[type, Callable[[Any], list]]] = [(keras.Sequential, lambda model: list(model.layers))]


def register_chain(model_type: type, layers: Callable[[Any], list]) -> None:
    """Models of ``model_type`` are walked as the chain ``layers(model)`` (e.g. the original API's
    Sequential of modules)."""
    _CHAINS.insert(0, (model_type, layers))


def _chain_layers(model: Any) -> list | None:
    for model_type, layers in _CHAINS:
        if isinstance(model, model_type):
            return layers(model)
    return None


def _add_model(g: Graph, model: Any, in_keys: list, prefix: str, keys: _Keys) -> list:
    chain = _chain_layers(model)
    if chain is not None:
        return _add_chain(g, chain, in_keys, prefix, keys)
    if hasattr(model, "_nodes_by_depth") and getattr(model, "inputs", None):
        return _add_functional(g, model, in_keys, prefix, keys)
    raise ExplainError(
        f"model {model.name!r} ({type(model).__name__}) is a subclassed Keras model whose layers cannot be "
        f"traced; explain a Sequential or Functional model (e.g. rebuild it with keras.Input)")


_SQUASHING = ("softmax", "sigmoid")


def _is_squashing(step: Step) -> bool:
    """A softmax or sigmoid: as the layer itself (``Softmax``, ``Activation('sigmoid')``, a keras op)
    or as the activation of a layer with weights."""
    layer = step.layer
    if isinstance(layer, keras.layers.Softmax) or type(layer).__name__ in ("Softmax", "Sigmoid"):
        return True
    if isinstance(layer, keras.layers.Activation):
        act = layer.activation
    else:
        act = step.handler.activation_of(layer) if hasattr(step.handler, "activation_of") else None
    return getattr(act, "__name__", "") in _SQUASHING


def fuse_batchnorm(g: Graph) -> None:
    """Canonisation: merge each inference BatchNormalization into the Dense/convolution before it
    (when that layer has no activation and feeds only the BatchNorm). Other BatchNorms stay as
    affine layers explained under the active rule."""
    producer = g.producer()
    consumers = g.consumers()
    removed = set()
    for step in g.steps:
        if not isinstance(step.layer, keras.layers.BatchNormalization) or len(step.inputs) != 1:
            continue
        k = step.inputs[0]
        prev = producer.get(k)
        if prev is None or prev in removed or len(consumers.get(k, [])) != 1 or k in g.outputs:
            continue
        if not isinstance(prev.handler, (LinearHandler, SeparableHandler)):
            continue
        if not prev.handler.can_absorb_batchnorm(prev.layer):
            continue
        axis = step.layer.axis if isinstance(step.layer.axis, int) else step.layer.axis[0]
        try:
            rank = len(step.layer.input.shape)
        except Exception:  # noqa: BLE001 - a BN that was never called symbolically
            rank = None
        if axis != -1 and (rank is None or axis != rank - 1):
            continue
        prev.fused = prev.fused + (step.layer,)
        prev.aliases = prev.aliases + step.names()
        prev.outputs = step.outputs
        for kk in step.outputs:
            producer[kk] = prev
        removed.add(step)
    g.steps = [s for s in g.steps if s not in removed]


def concrete_specs(model: Any, input_shapes: Sequence[Sequence[int | None]]) -> dict:
    """``{id(tensor): KerasTensor}`` for the tensors of a functional ``model`` (nested ones too) with
    the shapes they take when the inputs have ``input_shapes`` (per input, with the batch axis);
    tensors whose shape cannot be inferred are left out."""
    specs: dict = {}
    ins = [keras.KerasTensor(tuple(s), dtype=kt.dtype) for kt, s in zip(model.inputs, input_shapes)]
    _functional_specs(model, ins, specs)
    return specs


def _functional_specs(model: Any, ins: list, specs: dict) -> list | None:
    for kt, v in zip(model.inputs, ins):
        specs[id(kt)] = v
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            op = node.operation
            if op is None or node.is_input or any(id(kt) not in specs for kt in node.input_tensors):
                continue
            values = [specs[id(kt)] for kt in node.input_tensors]
            try:
                if _is_model(op) and _chain_layers(op) is None and hasattr(op, "_nodes_by_depth"):
                    outs = _functional_specs(op, values, specs)
                else:
                    args, kwargs = node.arguments.fill_in({id(kt): v for kt, v in zip(node.input_tensors, values)})
                    outs = tree.flatten(op.compute_output_spec(*args, **kwargs))
            except Exception:  # noqa: BLE001 - shapes not inferable here: later expansions use the model's
                continue
            if outs is not None:
                for kt, v in zip(node.outputs, outs):
                    specs[id(kt)] = v
    if any(id(kt) not in specs for kt in model.outputs):
        return None
    return [specs[id(kt)] for kt in model.outputs]


def build_graph(model: Any, canonize: bool = True, input_shapes: Sequence[Sequence[int | None]] | None = None) -> Graph:
    """Flatten ``model`` into steps. With ``canonize``, BatchNorm layers are merged (see
    :func:`fuse_batchnorm`). ``input_shapes`` (per model input, with the batch axis): build the
    graph for inputs of these shapes, for layers whose call can only be traced with known dimensions
    (the graph then holds only for them); without, such layers raise :class:`ShapeDependent`."""
    if not isinstance(model, keras.Model):
        raise ExplainError(f"expected a Keras model, got {type(model).__name__}")
    load_optional_handlers()
    if input_shapes is not None and getattr(model, "inputs", None) and hasattr(model, "_nodes_by_depth"):
        token = CONCRETE_SPECS.set(concrete_specs(model, input_shapes))
        try:
            return build_graph(model, canonize)
        finally:
            CONCRETE_SPECS.reset(token)
    keys = _Keys()
    chain = _chain_layers(model)
    if chain is not None:
        inputs = [keys.new()]
        input_names = [f"{model.name}_input"]
    else:
        if not hasattr(model, "_nodes_by_depth"):
            raise ExplainError(
                f"model {model.name!r} ({type(model).__name__}) is a subclassed Keras model whose layers cannot "
                f"be traced; explain a Sequential or Functional model (e.g. rebuild it with keras.Input)")
        if not getattr(model, "inputs", None):
            raise ExplainError(f"model {model.name!r} has no defined inputs; build it with keras.Input "
                               f"before explaining it")
        inputs = [keys.new() for _ in model.inputs]
        input_names = [getattr(kt, "name", f"input_{i}") for i, kt in enumerate(model.inputs)]
    g = Graph(inputs, [], [], input_names, [])
    g.outputs = _add_model(g, model, inputs, "", keys)
    producer = g.producer()
    g.output_names = [producer[k].name if k in producer else f"output_{i}" for i, k in enumerate(g.outputs)]
    if canonize:
        fuse_batchnorm(g)
    mark_carried(g, _floating(model.inputs) if chain is None else [True])
    mark_nonneg(g)
    mark_gates(g)
    return g


def mark_carried(g: Graph, inputs_float: Sequence[bool]) -> None:
    """Mark which inputs of each step depend on the values of a float model input or an embedding's
    output (a mask cast to float does not); handlers that depend on the number of such inputs (an
    einsum of two activations is a product, of an activation and a constant a linear map) choose
    their form here."""
    carried = {k for k, f in zip(g.inputs, inputs_float) if f}
    for step in g.steps:
        step.carried = tuple(k in carried for k in step.inputs)
        if hasattr(step.handler, "for_inputs"):
            handler = step.handler.for_inputs(sum(step.carried))
            if handler is None:
                raise ExplainError(f"layer {step.name!r} of type {step.type_name} cannot be explained: it combines "
                                   f"{sum(step.carried)} computed tensors in a way that has no LRP rule")
            step.handler = handler
        if (any(step.carried) and not isinstance(step.handler, ConstantHandler)) or \
                getattr(step.handler, "integer_inputs", False):
            carried.update(step.outputs)


#: activations whose output gates another factor of a product (CP-LRP holds such factors constant)
_GATING = {"sigmoid", "softmax", "silu", "swish", "gelu", "tanh", "hard_sigmoid", "hard_silu", "hard_swish",
           "Sigmoid", "Softmax", "Silu", "Swish", "Gelu", "Tanh", "HardSigmoid", "HardSilu"}


def _is_gate(step: Step | None, producer: dict) -> bool:
    """``step``'s output is a gate: a softmax, a squashing or gating activation (also as the activation
    of a layer with weights), or such a value reshaped, repeated or transposed."""
    while step is not None:
        if isinstance(step.handler, SoftmaxHandler):
            return True
        layer = step.layer
        if isinstance(step.handler, ElementwiseHandler):
            act = layer.activation if isinstance(layer, keras.layers.Activation) else None
            if getattr(act, "__name__", "") in _GATING or type(layer).__name__ in _GATING:
                return True
            if (type(layer).__name__ == "Cast" or isinstance(layer, IDENTITY_AT_INFERENCE)) and len(step.inputs) == 1:
                # a gate cast to another dtype, or behind dropout
                step = producer.get(step.inputs[0])
                continue
            return False
        if isinstance(step.handler, LinearHandler):
            return getattr(step.handler.activation_of(layer), "__name__", "") in _GATING
        if isinstance(step.handler, RouteHandler) and len(step.inputs) == 1:
            step = producer.get(step.inputs[0])
            continue
        return False
    return False


def mark_gates(g: Graph) -> None:
    """Mark, for each product (element-wise or contraction), which factors are gates."""
    producer = g.producer()
    for step in g.steps:
        if step.category in (GATE, PRODUCT):
            step.gates = tuple(_is_gate(producer.get(k), producer) for k in step.inputs)


def mark_nonneg(g: Graph) -> None:
    """Mark the inputs of each step that are non-negative by construction (outputs of ReLU-like
    activations, and pooling, reshaping or summing of such); rules use it to skip terms that would
    be zero. Model inputs count as signed."""
    known: set = set()
    for step in g.steps:
        step.nonneg = tuple(k in known for k in step.inputs)
        if step.handler.output_nonneg(step.layer, step.nonneg, step):
            known.update(step.outputs)


def explained_output(g: Graph, output: int | str | None, probability: bool = False) -> tuple[Any, Step | None]:
    """The key of the tensor whose value starts the relevance. A final softmax or sigmoid is skipped
    (the logit is explained) unless ``probability``."""
    if output is None:
        idx = 0
    elif isinstance(output, int) and not isinstance(output, bool):
        if not -len(g.outputs) <= output < len(g.outputs):
            raise ExplainError(f"output index {output} out of range: the model has {len(g.outputs)} outputs")
        idx = output
    else:
        if output not in g.output_names:
            raise ExplainError(f"the model has no output {output!r}; its outputs: {g.output_names}")
        idx = g.output_names.index(output)
    key = g.outputs[idx]
    step = g.producer().get(key)
    if step is not None and not probability and _is_squashing(step):
        if step.handler.category in (ELEMENTWISE, SOFTMAX):
            return step.inputs[0], step
        step.strip_activation = True
    return key, step


def forward(g: Graph, xs: Sequence[tf.Tensor]) -> tuple[dict, list]:
    values = dict(zip(g.inputs, xs))
    records = []
    for step in g.steps:
        ins = [values[k] for k in step.inputs]
        try:
            outs, state = step.handler.forward(step.layer, ins, step)
        except ExplainError:
            raise
        except (ValueError, TypeError, tf.errors.InvalidArgumentError) as e:
            raise ExplainError(f"layer {step.name!r} ({step.type_name}) failed on inputs of shape "
                               f"{[tuple(x.shape) for x in ins]}: {e}") from e
        for k, v in zip(step.outputs, outs):
            values[k] = v
        records.append((ins, outs, state))
    return values, records


def backward(g: Graph, records: list, start: dict, rules: Sequence[Rule],
             keep: bool = False) -> tuple[dict, dict]:
    """Relevance at every tensor reached from ``start`` (key -> relevance). Returns
    ``(relevance by key, relevance of each layer's output by layer name)``."""
    rel = dict(start)
    layerwise: dict = {}
    for step, (ins, outs, state), rule in zip(reversed(g.steps), reversed(records), reversed(rules)):
        Rs = [rel.get(k) for k in step.outputs]
        if all(r is None for r in Rs) or not any(o.dtype.is_floating for o in outs):
            continue
        dtype = next(r.dtype for r in Rs if r is not None)
        Rs = [tf.zeros(tf.shape(o), dtype) if r is None else r for r, o in zip(Rs, outs)]
        if keep or not step.handler.accepts_lazy:
            Rs = [materialize(r) for r in Rs]
        if keep:
            for n in step.names():
                layerwise[n] = Rs[0] if len(Rs) == 1 else Rs
        R_in = step.handler.relevance(step.layer, ins, outs, state, Rs, rule, step)
        to_integers = getattr(step.handler, "integer_inputs", False)
        for k, r, x in zip(step.inputs, R_in, ins):
            if r is None or not (x.dtype.is_floating or to_integers):
                continue  # relevance does not flow into masks and indices (only embeddings credit them)
            rel[k] = r if k not in rel else materialize(rel[k]) + materialize(r)
    return {k: materialize(r) for k, r in rel.items()}, layerwise


def _is_plain_relu(step: Step) -> bool:
    act = step.handler.activation_of(step.layer) if isinstance(step.handler, LinearHandler) else None
    return act is not None and (act in (keras.activations.relu, tf.nn.relu)
                                or getattr(act, "__name__", "") == "relu" and getattr(act, "__module__", "").startswith(
                                    ("keras", "tensorflow")))


class _ZeroAnalysis:
    """Which tensors' relevance is provably zero wherever the tensor is zero: every consumer
    redistributes in proportion to its inputs (identity, x^+, x^- input modifiers), or moves relevance
    exactly (reshapes, winner-takes-all, gates, f(0)=0 activations) into tensors that are such too."""

    def __init__(self, g: Graph, rules: Sequence[Rule], start_key: Any, proportional_start: bool):
        self.consumers = g.consumers()
        self.rule_of = dict(zip(g.steps, rules))
        self.start_key, self.proportional_start = start_key, proportional_start
        self.memo: dict = {}

    @staticmethod
    def proportional(rule: Rule) -> bool:
        return isinstance(rule, LinearRule) and all(
            t.input in (identity, positive, negative) for grp in rule.groups() for t in grp.terms)

    def ok(self, c: Step) -> bool:
        h, rule = c.handler, self.rule_of[c]
        if isinstance(h, (LinearHandler, FixedLinearHandler, SeparableHandler)):
            return self.proportional(rule)
        if isinstance(h, MaxPoolHandler):
            winner = isinstance(rule, WinnerTakesAll) or (isinstance(rule, LinearRule) and not rule.uniform_max_pool)
            return winner and all(self.zero(k) for k in c.outputs)
        if isinstance(h, (RouteHandler, GateHandler)):
            return all(self.zero(k) for k in c.outputs)
        if isinstance(h, ElementwiseHandler):
            return h.maps_zero_to_zero(c.layer) and all(self.zero(k) for k in c.outputs)
        return False

    def zero(self, key: Any) -> bool:
        if key == self.start_key:
            return self.proportional_start
        if key not in self.memo:
            self.memo[key] = all(self.ok(c) for c in self.consumers.get(key, []))
        return self.memo[key]


def relu_denominator_steps(g: Graph, rules: Sequence[Rule], start_key: Any, proportional_start: bool) -> frozenset:
    """Layers with a built-in ReLU whose output relevance is provably zero wherever the output is
    zero (see :class:`_ZeroAnalysis`). For these, relu(z) can replace z in the denominators (they
    differ only where z <= 0, where the relevance is 0), so the forward pass keeps no pre-activation
    and TensorFlow fuses convolution, bias and ReLU. ``proportional_start``: the starting relevance is
    the output times a mask."""
    zero = _ZeroAnalysis(g, rules, start_key, proportional_start).zero
    return frozenset(s for s in g.steps if isinstance(s.handler, LinearHandler) and not s.strip_activation
                     and _is_plain_relu(s) and zero(s.outputs[0]))


def positive_output_steps(g: Graph, rules: Sequence[Rule], start_key: Any, proportional_start: bool) -> frozenset:
    """Layers with weights whose pre-activation's relevance is provably zero wherever it is ``<= 0``:
    those of :func:`relu_denominator_steps`, and those without activation whose every consumer is a
    ReLU layer (``Activation('relu')``, ``ReLU()``, a ReLU op) whose output's relevance is provably zero
    where it is zero (relevance passes a ReLU unchanged, and its output is zero exactly where its
    input is ``<= 0``). Rules whose groups explain negative outputs separately (the generalised gamma)
    skip those groups there."""
    analysis = _ZeroAnalysis(g, rules, start_key, proportional_start)
    consumers = analysis.consumers

    def relu_after(step: Step) -> bool:
        key = step.outputs[0]
        cs = consumers.get(key, [])
        if key == start_key or not cs or key in g.outputs:
            return False
        return all(isinstance(c.handler, ElementwiseHandler) and c.handler.relu_like(c.layer)
                   and all(analysis.zero(k) for k in c.outputs) for c in cs)

    out = set()
    for s in g.steps:
        if not isinstance(s.handler, LinearHandler) or s.strip_activation:
            continue
        act = s.handler.activation_of(s.layer)
        linear = act is None or getattr(act, "__name__", "") == "linear"
        if (_is_plain_relu(s) and analysis.zero(s.outputs[0])) or (linear and relu_after(s)):
            out.add(s)
    return frozenset(out)
