"""Every keras_hub language and vision family of ``tests/hub_families.py`` (tiny models from their
constructors, random weights) explained under AttnLRP and CP-LRP: relevance of the input's shape,
finite and nonzero; the explained output is the model's own logit (the predicted class, at the last
position for language models); and, on families built without additive biases, CP-LRP with epsilon 0
conserves: the relevance of the tokens adds up to the logit.

Families that do not explain yet are marked ``xfail(strict=True)`` with the reason.

AttnLRP runs compiled (as a user runs it: every family's graph traces); CP-LRP runs eagerly, the same
code without tracing a second graph per family (2-3x faster here; compiled equal to eager is
tests/test_properties.py's claim). ``pytest --run-exhaustive`` (INTERPRETTENSOR_EXHAUSTIVE=1) compiles
both."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras_hub")

import hub_families  # noqa: E402

import interprettensor as it  # noqa: E402

pytestmark = pytest.mark.slow

#: family -> why it is expected to fail today (first error in the comment)
XFAIL: dict[str, str] = {}

_CASES: dict = {}
_OUTPUTS: dict = {}


def _case(name: str) -> hub_families.HubCase:
    """One model per family, shared by both presets."""
    if name not in _CASES:
        _CASES[name] = hub_families.build(name)
    return _CASES[name]


def _outputs(case: hub_families.HubCase) -> np.ndarray:
    """The model's own outputs (logits; a language model's at every position)."""
    if id(case) not in _OUTPUTS:
        _OUTPUTS[id(case)] = np.asarray(case.model(case.inputs), dtype="float64")
    return _OUTPUTS[id(case)]


def _params():
    for name in hub_families.FAMILIES:
        for rule in ("attnlrp", "cp_lrp"):
            marks = [pytest.mark.xfail(strict=True, reason=XFAIL[name])] if name in XFAIL else []
            yield pytest.param(name, rule, marks=marks, id=f"{name}-{rule}")


@pytest.mark.parametrize("name, rule", list(_params()))
def test_family_is_explained(name, rule, exhaustive):
    case = _case(name)
    conserving = rule == "cp_lrp" and case.bias_free
    ex = it.Explainer(case.model, rule, epsilon=0) if conserving else it.Explainer(case.model, rule)
    eager = rule == "cp_lrp" and not exhaustive
    if eager:
        import tensorflow as tf

        tf.config.run_functions_eagerly(True)
    try:
        R, out = ex(case.inputs, position=case.position, return_output=True)
    finally:
        if eager:
            tf.config.run_functions_eagerly(False)
    r = R[case.key] if case.key is not None else R
    x = case.inputs[case.key] if case.key is not None else case.inputs
    assert r.shape == x.shape
    assert np.isfinite(r).all() and np.abs(r).sum() > 0
    # the explained output is the model's own logit: the same float32 computation along another path
    # (the traced parts instead of keras_hub's calls); about 10 reductions of at most 32 terms each,
    # each off by at most 32 * 2**-23 relative, so 1e-4 relative is a bound with room
    want = _outputs(case)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # the explained logit: the predicted class (at the explained position)
    logit = (want[:, case.position] if case.position is not None else want).max(-1)
    if conserving:
        # no biases, epsilon 0: every step conserves (CP-LRP's gates and softmax take none), so the
        # relevance of the tokens adds up to the logit, up to float32 rounding of the same ~10 stages
        # of sums over the magnitudes of the relevances involved
        total = r.reshape(len(r), -1).sum(1)
        scale = np.abs(r).reshape(len(r), -1).sum(1) + np.abs(logit)
        np.testing.assert_allclose(total, logit, rtol=0, atol=float(1e-4 * scale.max()))
