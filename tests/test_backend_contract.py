"""The backend interface (:mod:`interprettensor.engine.backend`) against NumPy: what every backend
module must do, whatever framework computes it (today TensorFlow; each new backend runs these too).

Values are float64, where the vector-Jacobian products of these small linear maps are exact up to
the rounding of sums of at most 4 products (rtol 1e-12)."""

import numpy as np
import pytest
import tensorflow as tf

from interprettensor.engine import backend

RTOL = 1e-12
rng = np.random.default_rng(0)


def t(a):
    return tf.constant(np.asarray(a, np.float64))


def test_vjp_of_a_linear_map_is_its_transpose():
    W, x, s = rng.normal(size=(4, 3)), rng.normal(size=(2, 4)), rng.normal(size=(2, 3))
    (g,) = backend.vjp(lambda xs: tf.matmul(xs[0], t(W)), [t(x)], t(s))
    np.testing.assert_allclose(g.numpy(), s @ W.T, rtol=RTOL)


def test_vjp_gives_each_occurrence_of_a_repeated_tensor_its_share():
    x, s = t(rng.normal(size=(3,))), rng.normal(size=(3,))
    g1, g2 = backend.vjp(lambda xs: 2.0 * xs[0] + 3.0 * xs[1], [x, x], t(s))
    np.testing.assert_allclose(g1.numpy(), 2.0 * s, rtol=RTOL)
    np.testing.assert_allclose(g2.numpy(), 3.0 * s, rtol=RTOL)


def test_vjp_gives_zeros_to_an_unused_primal_and_takes_several_outputs():
    a, b = t(rng.normal(size=(3,))), t(rng.normal(size=(3,)))
    s1, s2 = rng.normal(size=(3,)), rng.normal(size=(3,))
    ga, gb = backend.vjp(lambda xs: [5.0 * xs[0], -xs[0]], [a, b], [t(s1), t(s2)])
    np.testing.assert_allclose(ga.numpy(), 5.0 * s1 - s2, rtol=RTOL)
    np.testing.assert_array_equal(gb.numpy(), np.zeros(3))


def test_vjp_of_a_product_holds_the_other_factor_fixed():
    a, b, s = rng.normal(size=(2, 3)), rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    ga, gb = backend.vjp(lambda xs: xs[0] * xs[1], [t(a), t(b)], t(s))
    np.testing.assert_allclose(ga.numpy(), b * s, rtol=RTOL)
    np.testing.assert_allclose(gb.numpy(), a * s, rtol=RTOL)


def test_pullback_answers_several_cotangents_from_one_forward_pass():
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(3, 4))
    watched, out, back = backend.pullback(lambda xs: tf.matmul(xs[0], xs[1]), [t(a), t(b)])
    np.testing.assert_allclose(out.numpy(), a @ b, rtol=RTOL)
    np.testing.assert_allclose(watched[0].numpy(), a)
    s1, s2 = rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    np.testing.assert_allclose(back(0, t(s1)).numpy(), s1 @ b.T, rtol=RTOL)
    np.testing.assert_allclose(back(1, t(s2)).numpy(), a.T @ s2, rtol=RTOL)
    np.testing.assert_allclose(back(0, t(s2)).numpy(), s2 @ b.T, rtol=RTOL)  # callable again


def test_stop_gradient_and_after():
    x, s = t(rng.normal(size=(3,))), rng.normal(size=(3,))
    (g,) = backend.vjp(lambda xs: xs[0] * backend.stop_gradient(xs[0]), [x], t(s))
    np.testing.assert_allclose(g.numpy(), x.numpy() * s, rtol=RTOL)  # the stopped factor is a constant
    y = backend.after([x], lambda: 2.0 * x)
    np.testing.assert_allclose(y.numpy(), 2.0 * x.numpy(), rtol=RTOL)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_stacks_every_accumulator(reverse):
    elems = rng.normal(size=(5, 2))
    weights = rng.normal(size=(5,))
    out = backend.scan(lambda acc, e: {"sum": acc["sum"] + e[0] * e[1], "last": e[0]},
                       (t(elems), t(weights)), {"sum": t(np.zeros(2)), "last": t(np.zeros(2))}, reverse=reverse)
    terms = elems * weights[:, None]
    want = np.cumsum(terms[::-1], axis=0)[::-1] if reverse else np.cumsum(terms, axis=0)
    np.testing.assert_allclose(out["sum"].numpy(), want, rtol=RTOL)
    np.testing.assert_allclose(out["last"].numpy(), elems, rtol=RTOL)


def test_compile_traces_once_per_signature_and_computes_the_function():
    traces = []

    def fn(x, k):
        traces.append(1)  # a Python side effect: runs when the function is traced
        return 2.0 * x + tf.cast(k, x.dtype)[:, None]

    f = backend.compile(fn, (backend.spec((None, 3), tf.float64), backend.spec((None,), tf.int32)))
    for n in (4, 2, 5):  # the batch size is free
        x, k = rng.normal(size=(n, 3)), rng.integers(0, 9, n).astype(np.int32)
        np.testing.assert_allclose(f(t(x), tf.constant(k)).numpy(), 2.0 * x + k[:, None], rtol=RTOL)
    assert len(traces) == 1


def test_fused_kernels_compute_the_same_values():
    def ratio(r, z):
        return r / (z + 0.5)

    r, z = rng.normal(size=(2, 6)), rng.uniform(1.0, 2.0, size=(2, 6))
    np.testing.assert_allclose(backend.fused(ratio)(t(r), t(z)).numpy(), r / (z + 0.5), rtol=RTOL)
    assert not backend.use_fused(t(z), 13)       # 6 elements per sample: below the threshold
    assert backend.use_fused(t(z), 6) == (not tf.config.functions_run_eagerly())


def test_runtime_errors_of_a_compiled_call_are_named():
    f = backend.compile(lambda table, i: tf.gather(table, i), (backend.spec((4,), tf.float64),
                                                                backend.spec((None,), tf.int32)))
    with pytest.raises(backend.RUNTIME_ERRORS) as info:
        f(t(np.arange(4.0)), tf.constant([7], tf.int32))  # beyond the table
    assert "7" in backend.error_message(info.value)


def test_is_symbolic_only_inside_a_traced_computation():
    seen = []

    def fn(x):
        seen.append(backend.is_symbolic(x))
        return 2.0 * x

    f = backend.compile(fn, (backend.spec((None,), tf.float64),))
    np.testing.assert_allclose(f(t([1.0, 2.0])).numpy(), [2.0, 4.0], rtol=RTOL)
    assert seen == [True]
    assert not backend.is_symbolic(t([1.0])) and not backend.is_symbolic(np.zeros(2)) and not backend.is_symbolic(3)


def test_runtime_error_is_one_of_the_runtime_errors_and_keeps_its_message():
    e = backend.runtime_error("target out of range: 5 units")
    assert isinstance(e, backend.RUNTIME_ERRORS)
    with pytest.raises(backend.RUNTIME_ERRORS) as info:
        raise e
    assert backend.error_message(info.value) == "target out of range: 5 units"


def _max_pool_winner_reference(x, R, pool, strides, padding):
    """Winner-takes-all through a 2-D max pooling of ``x`` (N, H, W, C), in NumPy: each window's
    relevance to its first maximum in row-major order (padded positions never win); the pooling; and
    how many windows hold their maximum more than once."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw) = pool, strides
    if padding == "valid":
        oh, ow, top, left = (h - kh) // sh + 1, (w - kw) // sw + 1, 0, 0
    else:
        oh, ow = -(-h // sh), -(-w // sw)
        top, left = max((oh - 1) * sh + kh - h, 0) // 2, max((ow - 1) * sw + kw - w, 0) // 2
    y, out, ties = np.zeros((n, oh, ow, c)), np.zeros_like(x), 0
    for b, i, j, ch in np.ndindex(n, oh, ow, c):
        r0, c0 = i * sh - top, j * sw - left
        rows, cols = range(max(r0, 0), min(r0 + kh, h)), range(max(c0, 0), min(c0 + kw, w))
        cells = [(r, q) for r in rows for q in cols]  # row-major
        values = [x[b, r, q, ch] for r, q in cells]
        r, q = cells[int(np.argmax(values))]  # np.argmax: the first maximum
        y[b, i, j, ch] = x[b, r, q, ch]
        out[b, r, q, ch] += R[b, i, j, ch]
        ties += values.count(max(values)) > 1
    return y, out, ties


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("pool,strides", [((2, 2), (2, 2)), ((3, 2), (2, 1))])
def test_max_pool_winner_routes_each_window_to_its_first_maximum(pool, strides, padding, data_format):
    x = rng.integers(0, 3, size=(2, 7, 6, 3)).astype(np.float64)  # few values: many ties
    x[0, :3, :3, 0] = 1.0  # a window of equal values
    y, _, _ = _max_pool_winner_reference(x, np.zeros_like(x), pool, strides, padding)
    R = rng.normal(size=y.shape)
    y, want, ties = _max_pool_winner_reference(x, R, pool, strides, padding)
    assert ties > 5
    first = (lambda a: np.transpose(a, (0, 3, 1, 2))) if data_format == "channels_first" else (lambda a: a)
    got = backend.max_pool_winner(t(first(x)), t(first(y)), t(first(R)), pool, strides, padding, data_format)
    np.testing.assert_allclose(np.asarray(got), first(want), rtol=RTOL, atol=0.0)  # zeros exact: one winner each
