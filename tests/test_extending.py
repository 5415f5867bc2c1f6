"""The worked extension examples of docs/tutorials/extending.md, as printed: a new rule in one file
(``my_rules.py``: LRP-alpha-beta with an epsilon stabiliser) and a new layer type in one module
(``my_layers.py``: a maxout layer and its handler).

Each block is written to the file it names and imported; nothing else is touched (the library's own
files, registries and lists stay as they are: the rule registers itself by name, the layer's handler
with ``it.register_handler``). The relevance is checked against the equations of the page written
in NumPy, in float64 (where the engine and NumPy differ only by the order of their sums: a relative
error of a few float64 epsilons times the number of terms summed).
"""

import importlib
import os
import sys

import keras
import numpy as np
import pytest

import interprettensor as it
from interprettensor.engine import rules as engine_rules
from test_readme import markdown_blocks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "tutorials", "extending.md")
#: float64: every value here is a sum of at most 24 products, so the engine and NumPy agree to
#: 24 * 2^-52 relative per sum; three layers of such sums and a division each stay below 1e-12
RTOL64 = 1e-12


def _block(first_line: str) -> str:
    text = open(PAGE, encoding="utf-8").read()
    found = [p.values[1] for p in markdown_blocks(text, "extending.md") if p.values[2].strip() == first_line]
    assert len(found) == 1, f"extending.md needs exactly one block starting with {first_line!r}"
    return found[0]


@pytest.fixture(scope="module")
def extensions(tmp_path_factory):
    """The two files of the page, written as printed and imported as a user would."""
    folder = tmp_path_factory.mktemp("extension")
    for name in ("my_rules", "my_layers"):
        (folder / f"{name}.py").write_text(_block(f"# {name}.py"), encoding="utf-8")
    assert "epsilon_alphabeta" not in engine_rules.RULES  # the library itself does not know the rule
    sys.path.insert(0, str(folder))
    try:
        modules = {name: importlib.import_module(name) for name in ("my_rules", "my_layers")}
    finally:
        sys.path.remove(str(folder))
    return modules


def _dense_weights(rng, n_in, n_out):
    """Weights as the float32 model holds them (the float64 explainer computes with these values)."""
    return (rng.normal(size=(n_in, n_out)).astype(np.float32).astype(np.float64),
            (rng.normal(size=n_out) * 0.5).astype(np.float32).astype(np.float64))


def _eps_alpha_beta(x, W, b, R, alpha, beta, eps):
    """The page's equation, in NumPy: R_i = sum_j (alpha zp_ij / (zp_j + eps) - beta zn_ij / (zn_j - eps)) R_j."""
    xp, xn = np.maximum(x, 0), np.minimum(x, 0)
    Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
    zp_ij = xp[:, :, None] * Wp + xn[:, :, None] * Wn
    zn_ij = xp[:, :, None] * Wn + xn[:, :, None] * Wp
    zp = zp_ij.sum(1) + np.maximum(b, 0)
    zn = zn_ij.sum(1) + np.minimum(b, 0)
    stab = lambda z: z + eps * np.where(z >= 0, 1.0, -1.0)  # noqa: E731 - the epsilon stabiliser, sign kept
    return np.einsum("nij,nj->ni", alpha * zp_ij / stab(zp)[:, None, :] - beta * zn_ij / stab(zn)[:, None, :], R)


def _epsilon(x, W, b, R, eps):
    """LRP-epsilon in NumPy: R_i = sum_j x_i w_ij / (z_j + eps sign(z_j)) R_j."""
    z = x @ W + b
    return x * ((R / (z + eps * np.where(z >= 0, 1.0, -1.0))) @ W.T)


def _mlp(rng):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(3)])
    params = [_dense_weights(rng, 8, 6), _dense_weights(rng, 6, 3)]
    model.set_weights([p for pair in params for p in pair])
    return model, params


def _onehot_logit(out):
    R = np.zeros_like(out)
    idx = out.argmax(1)
    R[np.arange(len(out)), idx] = out[np.arange(len(out)), idx]
    return R


def test_new_rule_matches_its_equation(extensions):
    rng = np.random.default_rng(3)
    model, ((W1, b1), (W2, b2)) = _mlp(rng)
    x = rng.normal(size=(5, 8))
    alpha, beta, eps = 2.0, 1.0, 0.1
    ex = it.Explainer(model, "epsilon_alphabeta", alpha=alpha, beta=beta, epsilon=eps, dtype="float64")
    got = ex(x)

    h = np.maximum(x @ W1 + b1, 0)
    R2 = _onehot_logit(h @ W2 + b2)
    R1 = _eps_alpha_beta(h, W2, b2, R2, alpha, beta, eps)      # relevance passes the ReLU
    want = _eps_alpha_beta(x, W1, b1, R1, alpha, beta, eps)
    np.testing.assert_allclose(got, want, rtol=RTOL64, atol=RTOL64 * np.abs(want).max())
    # the stabiliser matters here: without it (epsilon -> tiny) the result is another one
    assert not np.allclose(_eps_alpha_beta(x, W1, b1, R1, alpha, beta, 1e-12), want, rtol=1e-3)


def test_new_rule_everywhere_rules_are_given(extensions):
    """By name with parameters, as an object in a composite, layer-wise: one rule, one result."""
    EpsilonAlphaBeta = extensions["my_rules"].EpsilonAlphaBeta
    rng = np.random.default_rng(4)
    model, _ = _mlp(rng)
    x = rng.normal(size=(3, 8))
    by_name = it.Explainer(model, "epsilon_alphabeta", alpha=1.0, beta=0.0, epsilon=0.05, dtype="float64")(x)
    rule = EpsilonAlphaBeta(1.0, 0.0, 0.05)
    composite = it.Composite(default="epsilon", layer_map={"dense": rule})
    ex = it.Explainer(model, composite, dtype="float64")
    assert set(ex.rule_map().values()) >= {rule}
    by_object, per_layer = ex(x, layerwise=True)
    np.testing.assert_allclose(by_object, by_name, rtol=RTOL64, atol=RTOL64 * np.abs(by_name).max())
    assert set(per_layer) >= {layer.name for layer in model.layers}
    with pytest.raises(ValueError, match="does not take"):
        it.lrp(model, x, rule="epsilon_alphabeta", gamma=0.25)  # a parameter the rule does not have


def test_new_layer_type_matches_numpy(extensions):
    Maxout = extensions["my_layers"].Maxout
    rng = np.random.default_rng(5)
    units, pieces = 4, 3
    model = keras.Sequential([keras.Input((6,)), Maxout(units, pieces=pieces), keras.layers.Dense(3)])
    (W1, b1), (W2, b2) = _dense_weights(rng, 6, units * pieces), _dense_weights(rng, units, 3)
    model.set_weights([W1, b1, W2, b2])
    x = rng.normal(size=(4, 6))
    for rule, lrp in (("epsilon", lambda a, W, b, R: _epsilon(a, W, b, R, 0.01)),
                      ("epsilon_alphabeta", lambda a, W, b, R: _eps_alpha_beta(a, W, b, R, 2.0, 1.0, 0.01))):
        got = it.Explainer(model, rule, epsilon=0.01, dtype="float64")(x)  # also checks the handler's forward
        z = x @ W1 + b1
        pieces_z = z.reshape(-1, units, pieces)
        h = pieces_z.max(-1)
        R_h = lrp(h, W2, b2, _onehot_logit(h @ W2 + b2))
        winner = np.eye(pieces)[pieces_z.argmax(-1)]                     # each unit's winning piece
        want = lrp(x, W1, b1, (R_h[..., None] * winner).reshape(len(x), -1))
        np.testing.assert_allclose(got, want, rtol=RTOL64, atol=RTOL64 * np.abs(want).max(), err_msg=rule)


def test_new_layer_type_refuses_a_rule_it_cannot_take(extensions):
    Maxout = extensions["my_layers"].Maxout
    model = keras.Sequential([keras.Input((6,)), Maxout(2, name="maxout"), keras.layers.Dense(3)])
    composite = it.Composite(default="epsilon", name_map={"maxout": "pass"})
    with pytest.raises(it.InterpretTensorError, match="maxout"):
        it.lrp(model, np.ones((1, 6), "float32"), rule=composite)
