"""Property tests on seeded random Keras models (tests/property_models.py).

Run: ``pytest tests/test_properties.py`` (default: a small number of models, under 2 minutes on 2
cores); longer: ``pytest tests/test_properties.py --property-models 200`` (or
``INTERPRETTENSOR_PROPERTY_MODELS=200``); other seeds: ``--property-seed-start 1000`` (or
``INTERPRETTENSOR_PROPERTY_SEED_START``). Every test id names its seed, the model family and the
rule / preset (with its parameters); every failure message prints the model's layers. Rebuild a
failing model with ``property_models.build(seed, kind, profile)``.

Properties, on every rule name of ``it.rules.RULES`` that applies to whole models (not the operation rules
``pass``, ``winner_takes_all``, ``uniform``, ``gate``, ``softmax``) and every preset of ``it.PRESETS`` (each model gets ``METHODS_PER_MODEL`` of
them in rotation: in the default run every rule and preset explains one model under each property (two or more
with ``--property-models 32`` and up),
with sampled parameters, ``epsilon=0`` included, and most of them a conservation model too; the box
rules get the data's bounds; ``'zbox'`` by name, which the engine refuses with an ExplainError naming
the layer where a layer's input is not the model input through affine preprocessing, is then checked
as ``Composite(default='epsilon', first='zbox')``):

* the relevance is finite and shaped like the input (per input of multi-input models);
* the explained output (``Explainer(..)(x, return_output=True)``) equals the model's logits (the
  output before a final softmax; float32 to 1e-5, float64 to 1e-12 relative to the largest logit);
* two calls give identical results; compiled equals eager (``tf.config.run_functions_eagerly``);
  a batch equals its samples explained one by one (same targets). Both comparisons allow 1e-4
  (float32) of the largest |R| plus a round-off floor measured on the model itself
  (:func:`roundoff_floor`); models with a grouped convolution skip the eager comparison on CPU,
  where TensorFlow has no eager kernels for it (Keras itself fails there);
* linearity in a custom starting relevance: ``lrp(relevance=a R1 + b R2) = a lrp(R1) + b lrp(R2)``.
  Every rule of the engine is linear in the starting relevance: each layer computes ``R / stab(z)``
  with ``z`` from the forward pass, and routing / winner-takes-all / gates are linear maps. The
  ReLU-denominator optimisation (``relu(z)`` instead of ``z`` in denominators of layers with a
  built-in ReLU) is switched to a separate set of layers for a custom relevance
  (``Explainer._relu_steps[False]``, ``proportional_start=False``): a custom relevance may be non-zero
  at inactive units, so linearity must hold there too;
* conservation (below); a tensor merged with itself conserves too;
* unsupported layers and operations raise ``it.ExplainError`` naming the layer.

Conservation: the input relevance sums to the explained logit (per sample, relative tolerance
1e-3, plus 1e-4 of the total absolute relevance for cancellation in float32; logits below 1e-7 in
magnitude, where the stabilisers' 1e-12 is no longer negligible, are not checked) on bias-free models
(``use_bias=False``, BatchNorm with zero moving mean and beta) built only from layers through which
the rule conserves (``property_models`` profiles):

=============================================  ===========================================================
rules (profile)                                why they conserve, and what breaks conservation
=============================================  ===========================================================
``simple``, ``z``, ``epsilon`` (1e-12),        every layer with weights and every proportional layer
``toolbox_simple``, ``toolbox_epsilon``        (sums, average pooling, upsampling, standalone BatchNorm)
(``'any'``)                                    passes ``sum_j R_j z_ij / z_j = R_j`` down, unless
                                               ``z_j == 0`` exactly with ``R_j != 0``. That happens only
                                               behind an element-wise map with ``f(0) != 0`` (sigmoid,
                                               softmax, softplus, hard_sigmoid, mish, ReLU with a
                                               threshold, Rescaling offsets or Normalization inside the
                                               model, ``h + const``): relevance reaching a unit whose
                                               pre-activation is exactly 0 (exact-zero inputs, zero
                                               padding, a zeroed kernel) is lost. So the ``'any'``
                                               profile keeps activations with ``f(0) = 0`` (relu, relu6,
                                               tanh, elu, selu, gelu, silu, leaky, PReLU, softsign) and
                                               preprocessing (Rescaling with offset, Normalization,
                                               ZeroPadding) only directly on the inputs, where passing
                                               relevance changes no total. A bias absorbs its share
                                               ``b_j / z_j R_j`` (so does a BatchNorm's ``beta - mean s``);
                                               epsilon absorbs ``eps / (|z_j| + eps)`` of ``R_j``
                                               (tiny epsilon: negligible). Pass-through activations
                                               (LeakyReLU, ELU, tanh, ...) move ``R`` unchanged from the
                                               activation to the pre-activation, so each layer still
                                               conserves. Max pooling (winner-takes-all), Flatten,
                                               Reshape, Permute, Cropping (the cropped border got no
                                               relevance), RepeatVector (copies summed), Concatenate,
                                               Identity, Dropout and the noise layers move relevance
                                               exactly; Multiply is a gate: all relevance to the signal
                                               input, none to the gate (conserved at the signal);
                                               Subtract is proportional with signed weights
                                               (``a / (a - b)``, ``-b / (a - b)``: signed parts that sum
                                               to ``R``).
``toolbox_flat``, ``toolbox_ww``               flat / w^2 everywhere (merges and max pooling too:
(``'nopad'``)                                  uniform) divide by a count / sum of squared weights that
                                               does not depend on the inputs, so they conserve; but an
                                               explicit ZeroPadding layer receives relevance at its
                                               padded zeros from the flat / w^2 layer above and drops
                                               it (``'nopad'`` has none; the implicit padding of
                                               ``padding='same'`` is not an input and gets none). Flat
                                               / w^2 on layers with weights under the default
                                               (proportional) merges does not conserve either: it gives
                                               relevance to dead ReLU units, and a sum or average pool
                                               of all-zero inputs (``z = 0``) then drops it. w^2 also
                                               gives relevance to a zeroed kernel's outputs, which it
                                               cannot pass on (sum of w^2 = 0), and the stabiliser 1e-12
                                               absorbs it where w^2 is that small (``'nopad+ww'``: no
                                               zeroed or 1e-6 scaled kernels).
``alpha1beta0``, ``zplus``, ``gamma``,         z+ and alpha1-beta0 divide by ``z_j^+``: conserved where
``epsilon_plus``, ``epsilon_plus_flat``,       a unit with relevance has a positive contribution. In a
``preset_a``, ``preset_a_flat``,               network where every layer with weights is followed by a
``epsilon_gamma_box`` (``'relu'``)             ReLU, a unit with relevance is active (``z_j > 0``, so
                                               ``z_j^+ > 0``); the output unit must have a positive logit
                                               (samples whose explained logit is <= 0 are not checked).
                                               With pass-through activations (leaky, elu, tanh) a unit
                                               with ``z_j < 0`` and only negative contributions receives
                                               relevance and z+ drops it. gamma divides by ``z_j + gamma
                                               z_j^+``; z^B by a sum that is >= 0 for inputs in the box.
                                               ``alphabeta`` / ``alpha2beta1`` / ``preset_b`` /
                                               ``toolbox_alphabeta`` are not checked: alpha-beta with
                                               ``beta > 0`` conserves only at units that have both
                                               positive and negative contributions (else ``alpha R_j``
                                               or ``-beta R_j``), which small layers after a ReLU often
                                               lack. ``zplus_fast`` (``x w^+``) assumes non-negative
                                               inputs (checked with non-negative model inputs,
                                               ``'relu+nonneg'``). The presets with flat on the first
                                               layer lose the relevance that flat gives to an explicit
                                               ZeroPadding's zeros on the input, and flat on a "first
                                               layer" deeper in the model (one an input reaches through
                                               a skip path) gives relevance to units whose ``z`` is 0
                                               (``'relu+nopad+first'``: a layer with weights is the
                                               inputs' only consumer). The box presets likewise
                                               (``'+first'``): z^B on such a deeper "first layer" uses
                                               bounds computed by running the layers before it on
                                               constant low / high images, which do not bound its input.
``deep_taylor``, ``bounded_deep_taylor``       Deep Taylor passes sums, pooling and upsampling through
(``'relu+dt'``)                                their transposed Jacobian (iNNvestigate's gradient
                                               mapping, ``attribution.GradientMap``): ``Add`` gives every
                                               input the full ``R`` (twice the relevance), Subtract ``R``
                                               and ``-R``, standalone BatchNorm ``s R``; average pooling,
                                               Average and bilinear upsampling keep the total but spread
                                               it by position, also onto inputs that are 0 (dead ReLU
                                               units), where the z+ layer below may have no positive
                                               contribution and drops it. The profile has none of them
                                               (max pooling, nearest upsampling, routes, Concatenate and
                                               gates only).
``alpha1beta0`` etc. and SeparableConv         the rule applies to both factors of a separable
                                               convolution, and its depthwise output has no ReLU: a
                                               depthwise unit that is negative, receives relevance from
                                               the pointwise factor (via ``x^- w^-``) and has only
                                               negative contributions loses it under z+. The ReLU
                                               profiles have no SeparableConv.
=============================================  ===========================================================
"""

from __future__ import annotations

import contextlib
import functools
import os
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import interprettensor as it
from interprettensor.engine.operation_rules import OPERATION_RULE_NAMES
import property_models as pm

DEFAULT_MODELS = 16
METHODS_PER_MODEL = 2

RULE_NAMES = tuple(sorted(set(it.rules.RULES) - OPERATION_RULE_NAMES))
#: the README's presets: the Deep Taylor presets are registered by ``interprettensor.attribution``, and
#: must be usable by name without importing it first
README_PRESETS = ("epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1",
                  "epsilon_alpha2_beta1_flat", "preset_a", "preset_b", "preset_a_flat", "preset_b_flat",
                  "deep_taylor", "bounded_deep_taylor", "toolbox_simple", "toolbox_epsilon", "toolbox_flat",
                  "toolbox_ww", "toolbox_alphabeta")
PRESET_NAMES = tuple(sorted(set(it.PRESETS) | set(README_PRESETS)))
METHODS = RULE_NAMES + PRESET_NAMES
BOX_METHODS = ("zbox", "epsilon_gamma_box", "bounded_deep_taylor")

#: conserving rule, its parameters, the model profile
TINY_EPS = {"epsilon": 1e-12}
CONSERVING = (
    ("simple", {}, "any"),
    ("toolbox_flat", {}, "nopad"),
    ("alpha1beta0", {}, "relu"),
    ("epsilon", TINY_EPS, "any"),
    ("epsilon_plus", TINY_EPS, "relu"),
    ("deep_taylor", {}, "relu+dt"),
    ("z", {}, "any"),
    ("toolbox_ww", {}, "nopad+ww"),
    ("gamma", {}, "relu"),
    ("toolbox_simple", {}, "any"),
    ("preset_a", TINY_EPS, "relu"),
    ("epsilon_gamma_box", TINY_EPS, "relu+first"),
    ("toolbox_epsilon", TINY_EPS, "any"),
    ("zplus", {}, "relu"),
    ("epsilon_plus_flat", TINY_EPS, "relu+nopad+first"),
    ("zplus_fast", {}, "relu+nonneg"),
    ("preset_a_flat", TINY_EPS, "relu+nopad+first"),
    ("bounded_deep_taylor", {}, "relu+dt+first"),
)
SELF_MERGE_RULES = (("simple", {}), ("toolbox_simple", {}), ("epsilon", TINY_EPS), ("toolbox_flat", {}))

RTOL = 1e-3           # conservation, relative to the logit
CANCEL = 1e-4         # ... plus this fraction of sum |R| (float32 cancellation)
MIN_LOGIT = 1e-7      # below, the stabilisers (1e-12 per unit and layer) are no longer negligible


# ----------------------------------------------------------------------------- configuration

def _option(config, name: str, env: str, default: int) -> int:
    value = config.getoption(name, default=None)
    if value is None:
        value = os.environ.get(env)
    return default if value in (None, "") else int(value)


def n_models(config) -> int:
    return _option(config, "--property-models", "INTERPRETTENSOR_PROPERTY_MODELS", DEFAULT_MODELS)


def seed_start(config) -> int:
    return _option(config, "--property-seed-start", "INTERPRETTENSOR_PROPERTY_SEED_START", 0)


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("/".join(map(str, key)).encode()))


def method_params(seed: int, method: str) -> dict:
    """Sampled parameters of ``method`` for ``seed`` (box bounds are added from the data)."""
    rng = _rng("params", seed, method)
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    if method in ("epsilon", "toolbox_epsilon"):
        return pick([{}, {}, {"epsilon": 0.0}, {"epsilon": 0.1}, {"epsilon": 1.0}])
    if method in ("alphabeta", "toolbox_alphabeta"):
        return pick([{}, {"alpha": 1.0}, {"alpha": 3.0}])
    if method in ("gamma", "epsilon_gamma_box"):
        return pick([{}, {"gamma": 0.0}, {"gamma": 1.0}])
    if method.startswith(("epsilon_", "preset_")):
        return pick([{}, {"epsilon": 0.01}])
    return {}


def general_cases(config) -> list[tuple[int, str, tuple]]:
    """(seed, method, sorted parameter items) for the random general models."""
    start, n = seed_start(config), n_models(config)
    cases = []
    for seed in range(start, start + n):
        for i in range(METHODS_PER_MODEL):
            method = METHODS[(seed * METHODS_PER_MODEL + i) % len(METHODS)]
            cases.append((seed, method, tuple(sorted(method_params(seed, method).items()))))
    return cases


def conservation_cases(config) -> list[tuple[int, str, tuple, str]]:
    """Two conservation models per three random models (at least one per conserving rule)."""
    start, n = seed_start(config), n_models(config)
    n = max(len(CONSERVING), 2 * n // 3)
    return [(seed, *(lambda r: (r[0], tuple(sorted(r[1].items())), r[2]))(CONSERVING[seed % len(CONSERVING)]))
            for seed in range(start, start + n)]


def self_merge_cases(config) -> list[tuple[int, str, str, tuple]]:
    start, n = seed_start(config), n_models(config)
    per_variant = max(1, n // (2 * len(pm.SELF_MERGES)))
    cases = []
    for j, variant in enumerate(pm.SELF_MERGES):
        for seed in range(start, start + per_variant):
            rule, params = SELF_MERGE_RULES[(seed + j) % len(SELF_MERGE_RULES)]
            cases.append((seed, variant, rule, tuple(sorted(params.items()))))
    return cases


def _fmt(params) -> str:
    return "".join(f"-{k}={v:g}" for k, v in params)


def pytest_generate_tests(metafunc):
    config = metafunc.config
    if "general_case" in metafunc.fixturenames:
        cases = general_cases(config)
        ids = [f"s{s}-{pm.family_of(s)}-{m}{_fmt(p)}" for s, m, p in cases]
        metafunc.parametrize("general_case", cases, ids=ids)
    if "conservation_case" in metafunc.fixturenames:
        cases = conservation_cases(config)
        ids = [f"s{s}-{pm.family_of(s)}-{r}{_fmt(p)}-{prof}" for s, r, p, prof in cases]
        metafunc.parametrize("conservation_case", cases, ids=ids)
    if "self_merge_case" in metafunc.fixturenames:
        cases = self_merge_cases(config)
        ids = [f"s{s}-{pm.family_of(s)}-{v}-{r}{_fmt(p)}" for s, v, r, p in cases]
        metafunc.parametrize("self_merge_case", cases, ids=ids)


# ----------------------------------------------------------------------------- cached models

@pytest.fixture(autouse=True)
def _seed():
    """Overrides conftest's re-seeding before every test: these models and inputs are seeded by their
    own seed (``property_models.build``), explanations use no randomness, and re-seeding TensorFlow
    makes the next call of every compiled explainer cost ~50 ms (about half of this module's run
    time)."""
    yield


@functools.lru_cache(maxsize=None)
def spec(seed: int, kind: str = "general", profile: str = "", self_merge: str | None = None) -> pm.Spec:
    return pm.build(seed, kind, profile, self_merge)


def full_params(s: pm.Spec, method: str, params) -> dict:
    p = dict(params)
    if method in BOX_METHODS:
        p.update(low=s.low, high=s.high)
    return p


@functools.lru_cache(maxsize=None)
def explainer(seed: int, method: str, params: tuple) -> it.Explainer:
    """The explainer of ``method`` for the model of ``seed``. ``'zbox'`` by name puts z^B on every
    layer with weights, which the engine refuses (README: "assigning z^B to such a layer yourself is
    an error") where a layer's input is not the model input through affine preprocessing; the refusal
    must name such a layer, and the properties are then checked on z^B where it applies:
    ``Composite(default='epsilon', first='zbox')``."""
    s = spec(seed)
    p = full_params(s, method, params)
    with pm.dtype_scope(s.dtype):
        if method == "zbox":
            try:
                return it.Explainer(s.model, rule=method, **p)
            except it.ExplainError as e:
                names = {st.name for st in it.Explainer(s.model, rule="epsilon").graph.steps}
                assert "z^B" in str(e) and any(repr(n) in str(e) for n in names), \
                    f"rule 'zbox' refused without naming a layer of the model: {e}\n{s.describe()}"
                return it.Explainer(s.model, rule=it.Composite(default="epsilon", first="zbox", **p))
        return it.Explainer(s.model, rule=method, **p)


def context(s: pm.Spec, method: str, params) -> str:
    return f"\nmethod={method} params={full_params(s, method, params)}\n{s.describe()}"


def as_list(R) -> list:
    return list(R) if isinstance(R, list) else [R]


def call(s: pm.Spec, ex: it.Explainer, x=None, **kw):
    with pm.dtype_scope(s.dtype):
        return ex(s.x if x is None else x, **kw)


def _tol(R_ref: list, dtype: str, floor: float = 0.0) -> dict:
    """Tolerances for comparing two computations of the same relevance: relative, plus absolute
    relative to the largest |R| of that input (float32 round-off of sums of many terms), plus
    ``floor`` (see :func:`roundoff_floor`)."""
    scale = max(float(np.max(np.abs(r))) if r.size else 0.0 for r in R_ref)
    eps = 1e-4 if dtype == "float32" else 1e-9
    return dict(rtol=eps, atol=eps * scale + floor + 1e-30)


def roundoff_floor(s: pm.Spec, ex: it.Explainer, R: list, target) -> float:
    """How much round-off alone can move this relevance: 10 x the largest change of the relevance
    when every input value is moved by 2^-18 (32 units in the last place of float32; compiled, same
    shapes, same targets). Two computations of the same relevance that differ only in the order of float
    operations (XLA fusion vs plain ops, batch vs single sample) may differ by about this much where
    the model is ill-conditioned (a pre-activation that cancels to ~0 from terms of 1e4 carries an
    absolute round-off of ~1e-3, which R / z turns into a relative error of ~1e-3); on well-conditioned
    models it is far below the relative tolerance, so it hides no bug there."""
    rel = 2.0 ** -18 if s.dtype == "float32" else 2.0 ** -47
    rng = _rng("roundoff", s.seed)
    xs = [(x * (1 + rel * rng.choice([-1.0, 1.0], size=x.shape))).astype(x.dtype) for x in s.xs]
    Rp = as_list(call(s, ex, x=xs[0] if len(xs) == 1 else xs, target=target))
    return 10.0 * max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(R, Rp))


@contextlib.contextmanager
def eagerly():
    old = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(old)


# ----------------------------------------------------------------------------- general properties

def test_relevance_is_finite_and_shaped_like_the_input(general_case):
    seed, method, params = general_case
    s = spec(seed)
    R = as_list(call(s, explainer(seed, method, params)))
    msg = context(s, method, params)
    assert len(R) == len(s.xs), msg
    for i, (r, x) in enumerate(zip(R, s.xs)):
        assert r.shape == x.shape, f"input {i}: relevance shape {r.shape} != input shape {x.shape}{msg}"
        bad = ~np.isfinite(r)
        assert not bad.any(), f"input {i}: {int(bad.sum())} of {r.size} relevance values are NaN/inf " \
                              f"(per sample: {bad.reshape(len(r), -1).sum(1).tolist()}){msg}"


def test_explained_output_is_the_models_logits(general_case):
    seed, method, params = general_case
    s = spec(seed)
    _, out = call(s, explainer(seed, method, params), return_output=True)
    logits = s.logits()
    msg = context(s, method, params)
    assert out.shape == logits.shape, f"explained output shape {out.shape} != logits shape {logits.shape}{msg}"
    scale = float(np.max(np.abs(logits)))
    rtol = 1e-5 if s.dtype == "float32" else 1e-12
    np.testing.assert_allclose(out, logits, rtol=rtol, atol=rtol * scale + 1e-30,
                               err_msg=f"explained output != model logits{msg}")


def test_two_calls_give_identical_results(general_case):
    seed, method, params = general_case
    s = spec(seed)
    ex = explainer(seed, method, params)
    R1, R2 = as_list(call(s, ex)), as_list(call(s, ex))
    for a, b in zip(R1, R2):
        assert np.array_equal(a, b, equal_nan=True), f"max |diff| {np.nanmax(np.abs(a - b))}" \
                                                      f"{context(s, method, params)}"


def _grouped_conv(model) -> str | None:
    for layer in pm._weight_layers(model):
        if getattr(layer, "groups", 1) > 1:
            return layer.name
    return None


def test_compiled_equals_eager(general_case):
    seed, method, params = general_case
    s = spec(seed)
    grouped = _grouped_conv(s.model)
    if grouped is not None and not tf.config.list_physical_devices("GPU"):
        pytest.skip(f"{grouped!r} is a grouped convolution: TensorFlow has no CPU kernels for its gradient "
                    f"(and the 3-D forward) outside XLA, so Keras itself fails under run_functions_eagerly")
    ex = explainer(seed, method, params)
    _, out = call(s, ex, return_output=True)
    target = np.argmax(out.reshape(len(out), -1), axis=1)
    R_compiled = as_list(call(s, ex, target=target))
    with eagerly():
        R_eager = as_list(call(s, ex, target=target))
    floor = roundoff_floor(s, ex, R_compiled, target)
    for i, (a, b) in enumerate(zip(R_compiled, R_eager)):
        np.testing.assert_allclose(a, b, **_tol(R_compiled, s.dtype, floor),
                                   err_msg=f"input {i}: compiled != eager{context(s, method, params)}")


def test_batch_equals_its_samples_one_by_one(general_case):
    seed, method, params = general_case
    s = spec(seed)
    ex = explainer(seed, method, params)
    _, out = call(s, ex, return_output=True)
    target = np.argmax(out.reshape(len(out), -1), axis=1)
    R_batch = as_list(call(s, ex, target=target))
    floor = roundoff_floor(s, ex, R_batch, target)
    for n in range(len(target)):
        xn = [x[n:n + 1] for x in s.xs]
        R_n = as_list(call(s, ex, x=xn[0] if len(xn) == 1 else xn, target=int(target[n])))
        for i, (a, b) in enumerate(zip(R_batch, R_n)):
            np.testing.assert_allclose(a[n:n + 1], b, **_tol([a[n:n + 1]], s.dtype, floor),
                                       err_msg=f"sample {n}, input {i}: batch != alone"
                                               f"{context(s, method, params)}")


def test_linear_in_a_custom_starting_relevance(general_case):
    seed, method, params = general_case
    s = spec(seed)
    ex = explainer(seed, method, params)
    _, out = call(s, ex, return_output=True)
    rng = _rng("relevance", seed)
    R1 = rng.normal(size=out.shape).astype(s.dtype)
    R2 = rng.normal(size=out.shape).astype(s.dtype)
    a, b = 0.7, -1.3
    L1, L2 = as_list(call(s, ex, relevance=R1)), as_list(call(s, ex, relevance=R2))
    L12 = as_list(call(s, ex, relevance=(a * R1 + b * R2).astype(s.dtype)))
    for i, (l1, l2, l12) in enumerate(zip(L1, L2, L12)):
        expected = a * l1 + b * l2
        scale = abs(a) * np.max(np.abs(l1), initial=0.0) + abs(b) * np.max(np.abs(l2), initial=0.0)
        eps = 1e-4 if s.dtype == "float32" else 1e-9
        np.testing.assert_allclose(l12, expected, rtol=eps, atol=eps * scale + 1e-30,
                                   err_msg=f"input {i}: lrp(a R1 + b R2) != a lrp(R1) + b lrp(R2)"
                                           f"{context(s, method, params)}")


# ----------------------------------------------------------------------------- conservation

def check_conservation(s: pm.Spec, rule: str, params: dict, positive_only: bool, what: str) -> None:
    ex = it.Explainer(s.model, rule=rule, **params)
    R, out = ex(s.x, return_output=True)
    R = as_list(R)
    logits = s.logits()
    np.testing.assert_allclose(out, logits, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(logits))),
                               err_msg=f"explained output != logits\n{s.describe()}")
    target = np.argmax(out, axis=1)
    logit = logits[np.arange(len(target)), target]
    total = sum(r.reshape(len(r), -1).sum(1).astype(np.float64) for r in R)
    absolute = sum(np.abs(r).reshape(len(r), -1).sum(1).astype(np.float64) for r in R)
    checked = (logit > 0 if positive_only else np.ones_like(logit, bool)) & (np.abs(logit) >= MIN_LOGIT)
    tol = RTOL * np.abs(logit) + CANCEL * absolute
    bad = checked & ~(np.abs(total - logit) <= tol)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = total / logit
    assert not bad.any(), (
        f"{what}: relevance sum != explained logit for samples {np.flatnonzero(bad).tolist()}\n"
        f"  sum R  = {total.tolist()}\n  logit  = {logit.tolist()}\n  ratio  = {ratio.tolist()}\n"
        f"  sum|R| = {absolute.tolist()}\n  rule={rule} params={params}\n{s.describe()}")


def test_conservation_on_bias_free_models(conservation_case):
    seed, rule, params, profile = conservation_case
    s = spec(seed, "conserve", profile)
    p = dict(params)
    if rule in BOX_METHODS:  # a box strictly around the data: z^B's denominator is 0 at its corners
        margin = 0.1 * (s.high - s.low)
        p.update(low=s.low - margin, high=s.high + margin)
    check_conservation(s, rule, p, positive_only=profile.startswith("relu"), what="conservation")


def test_self_merge_conserves(self_merge_case):
    """A tensor merged with itself (Add()([h, h]), h + h, Concatenate()([h, h]), Add()([h, Dropout(h)]),
    ...): h's relevance is the sum over both uses, which together carry exactly the merge's relevance."""
    seed, variant, rule, params = self_merge_case
    s = spec(seed, "conserve", "nopad", variant)
    check_conservation(s, rule, dict(params), positive_only=False, what=f"self-merge {variant}")


@pytest.mark.parametrize("variant", pm.SELF_MERGES)
def test_self_merge_minimal(variant):
    """The smallest model with a self-merge: Dense(3, relu) -> merge -> Dense(2), bias-free, z-rule."""
    inp = keras.Input((4,))
    h = keras.layers.Dense(3, activation="relu", use_bias=False)(inp)
    h = pm.SELF_MERGE_FNS[variant](h)
    model = keras.Model(inp, keras.layers.Dense(2, use_bias=False)(h))
    x = np.random.default_rng(0).normal(size=(4, 4)).astype("float32")
    R, out = it.Explainer(model, rule="simple")(x, target=0, return_output=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (R.sum(1) / out[:, 0]).tolist()
    np.testing.assert_allclose(R.sum(1), out[:, 0], rtol=1e-4, atol=1e-6, err_msg=f"{variant}: sum R / logit = {ratio}")


# ----------------------------------------------------------------------------- unsupported layers

@pytest.mark.parametrize("case", list(pm.unsupported_models()))
def test_unsupported_layer_is_refused_by_name(case):
    model, name, x = pm.unsupported_models()[case]
    with pytest.raises(it.ExplainError) as err:
        it.Explainer(model, rule="epsilon")(x)
    assert name in str(err.value), f"the message does not name {name!r}: {err.value}"


def test_layer_made_of_operations_with_handlers_is_traced_and_explained():
    """Keras' AdditiveAttention has no handler of its own; its call (tanh of sums, a softmax, a
    weighted sum) is traced into operations that have one: the explained output is the model's."""
    inp = keras.Input((4, 6))
    h = keras.layers.AdditiveAttention(name="my_attention")([inp, inp])
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    x = np.random.default_rng(0).normal(size=(2, 4, 6)).astype("float32")
    for rule in ("epsilon", "attnlrp"):
        R, out = it.Explainer(model, rule=rule)(x, return_output=True)
        np.testing.assert_allclose(out, keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-6)
        assert R.shape == x.shape and np.isfinite(R).all() and np.abs(R).sum() > 0


def test_subclass_of_a_supported_layer_is_explained_exactly_or_refused():
    """A Dense subclass that overrides ``call`` (output 2 z + 1): the engine must either refuse it by
    name, or explain what the layer computes (its explained output is the model's output)."""
    model, name, x = pm.subclassed_supported_model()
    try:
        _, out = it.Explainer(model, rule="epsilon")(x, return_output=True)
    except it.ExplainError as e:
        assert name in str(e), f"the message does not name {name!r}: {e}"
        return
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-5,
                               err_msg=f"{name} (Dense subclass with its own call) is explained as a plain Dense")


@pytest.mark.parametrize("head", ["Dense(sigmoid)", "Activation(sigmoid)"])
def test_final_sigmoid_explains_the_logit(head):
    """As with a final softmax, a final sigmoid is skipped: the explained output is the logit, and
    the z-rule on a bias-free model conserves it (a sigmoid output would be explained as > 0 always)."""
    inp = keras.Input((5,))
    h = keras.layers.Dense(4, activation="relu", use_bias=False)(inp)
    dense = keras.layers.Dense(1, use_bias=False, activation="sigmoid" if head == "Dense(sigmoid)" else None)
    z = dense(h)
    out = z if head == "Dense(sigmoid)" else keras.layers.Activation("sigmoid")(z)
    model = keras.Model(inp, out)
    x = np.random.default_rng(3).normal(size=(4, 5)).astype("float32")
    logit = keras.ops.convert_to_numpy(keras.Model(inp, h)(x)) @ keras.ops.convert_to_numpy(dense.kernel)
    R, explained = it.Explainer(model, rule="simple")(x, target=0, return_output=True)
    np.testing.assert_allclose(explained, logit, rtol=1e-5, atol=1e-6, err_msg="explained output != logit")
    np.testing.assert_allclose(R.sum(1), logit[:, 0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("batchnorm", ["merged", "standalone"])
def test_float64_model_is_explained_in_float64(batchnorm):
    """A float64 model's explained output agrees with its own to float64 precision (a float32
    round-off anywhere, e.g. of a constant, shows as a relative error of ~1e-11 to 1e-8)."""
    with pm.dtype_scope("float64"):
        inp = keras.Input((5,))
        if batchnorm == "merged":
            h = keras.layers.BatchNormalization()(keras.layers.Dense(4, use_bias=False)(inp))
        else:
            h = keras.layers.BatchNormalization()(keras.layers.ReLU()(keras.layers.Dense(4)(inp)))
        model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Activation("tanh")(h)))
        x = np.random.default_rng(4).normal(size=(4, 5))
        _, out = it.Explainer(model, rule="epsilon")(x, return_output=True)
        expected = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12 * float(np.max(np.abs(expected))),
                               err_msg=f"float64 model with a {batchnorm} BatchNormalization")


# ----------------------------------------------------------------------------- the run itself

def test_every_rule_and_preset_is_exercised(request):
    """The configured run uses every rule and preset at least once (twice from 32 models on) and
    every conserving rule at least once."""
    used = {}
    for _, method, _ in general_cases(request.config):
        used[method] = used.get(method, 0) + 1
    n = n_models(request.config)
    if n >= DEFAULT_MODELS:
        least = 2 if n >= 2 * DEFAULT_MODELS else 1
        missing = {m: used.get(m, 0) for m in METHODS if used.get(m, 0) < least}
        assert not missing, f"rules / presets used fewer than {least} times: {missing}"
        cons = {r for _, r, _, _ in conservation_cases(request.config)}
        assert cons == {r for r, _, _ in CONSERVING}
    assert set(it.rules.RULES) - OPERATION_RULE_NAMES <= set(METHODS) | _registered_by_tests()
    assert set(it.PRESETS) <= set(PRESET_NAMES) | _registered_by_tests()


def _registered_by_tests() -> set:
    """Names that other test modules register at run time (not part of the library)."""
    return {"mine_plus"}
