"""The backend interface (:mod:`interprettensor.engine.backend`) against NumPy: what every backend
module must do, whatever framework computes it (today TensorFlow; each new backend runs these too).

Values are float64, where the vector-Jacobian products of these small linear maps are exact up to
the rounding of sums of at most 4 products (rtol 1e-12)."""

import numpy as np
import pytest
from keras import ops

from interprettensor.engine import backend

RTOL = 1e-12
rng = np.random.default_rng(0)


def t(a):
    return ops.convert_to_tensor(np.asarray(a, np.float64), dtype="float64")


def host(x):
    return ops.convert_to_numpy(x)


def matmul(a, b):
    """``a @ b`` in the inputs' dtype on every backend (Keras 3.15's ``ops.matmul`` on PyTorch returns
    float64 products in float32; ``ops.einsum`` keeps float64)."""
    return ops.einsum("ij,jk->ik", a, b)


def test_vjp_of_a_linear_map_is_its_transpose():
    W, x, s = rng.normal(size=(4, 3)), rng.normal(size=(2, 4)), rng.normal(size=(2, 3))
    (g,) = backend.vjp(lambda xs: matmul(xs[0], t(W)), [t(x)], t(s))
    np.testing.assert_allclose(host(g), s @ W.T, rtol=RTOL)


def test_vjp_gives_each_occurrence_of_a_repeated_tensor_its_share():
    x, s = t(rng.normal(size=(3,))), rng.normal(size=(3,))
    g1, g2 = backend.vjp(lambda xs: 2.0 * xs[0] + 3.0 * xs[1], [x, x], t(s))
    np.testing.assert_allclose(host(g1), 2.0 * s, rtol=RTOL)
    np.testing.assert_allclose(host(g2), 3.0 * s, rtol=RTOL)


def test_vjp_gives_zeros_to_an_unused_primal_and_takes_several_outputs():
    a, b = t(rng.normal(size=(3,))), t(rng.normal(size=(3,)))
    s1, s2 = rng.normal(size=(3,)), rng.normal(size=(3,))
    ga, gb = backend.vjp(lambda xs: [5.0 * xs[0], -xs[0]], [a, b], [t(s1), t(s2)])
    np.testing.assert_allclose(host(ga), 5.0 * s1 - s2, rtol=RTOL)
    np.testing.assert_array_equal(host(gb), np.zeros(3))


def test_vjp_of_a_product_holds_the_other_factor_fixed():
    a, b, s = rng.normal(size=(2, 3)), rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    ga, gb = backend.vjp(lambda xs: xs[0] * xs[1], [t(a), t(b)], t(s))
    np.testing.assert_allclose(host(ga), b * s, rtol=RTOL)
    np.testing.assert_allclose(host(gb), a * s, rtol=RTOL)


def test_pullback_answers_several_cotangents_from_one_forward_pass():
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(3, 4))
    watched, out, back = backend.pullback(lambda xs: matmul(xs[0], xs[1]), [t(a), t(b)])
    np.testing.assert_allclose(host(out), a @ b, rtol=RTOL)
    np.testing.assert_allclose(host(watched[0]), a)
    s1, s2 = rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    np.testing.assert_allclose(host(back(0, t(s1))), s1 @ b.T, rtol=RTOL)
    np.testing.assert_allclose(host(back(1, t(s2))), a.T @ s2, rtol=RTOL)
    np.testing.assert_allclose(host(back(0, t(s2))), s2 @ b.T, rtol=RTOL)  # callable again


def test_stop_gradient_and_after():
    x, s = t(rng.normal(size=(3,))), rng.normal(size=(3,))
    (g,) = backend.vjp(lambda xs: xs[0] * backend.stop_gradient(xs[0]), [x], t(s))
    np.testing.assert_allclose(host(g), host(x) * s, rtol=RTOL)  # the stopped factor is a constant
    y = backend.after([x], lambda: 2.0 * x)
    np.testing.assert_allclose(host(y), 2.0 * host(x), rtol=RTOL)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_stacks_every_accumulator(reverse):
    elems = rng.normal(size=(5, 2))
    weights = rng.normal(size=(5,))
    out = backend.scan(lambda acc, e: {"sum": acc["sum"] + e[0] * e[1], "last": e[0]},
                       (t(elems), t(weights)), {"sum": t(np.zeros(2)), "last": t(np.zeros(2))}, reverse=reverse)
    terms = elems * weights[:, None]
    want = np.cumsum(terms[::-1], axis=0)[::-1] if reverse else np.cumsum(terms, axis=0)
    np.testing.assert_allclose(host(out["sum"]), want, rtol=RTOL)
    np.testing.assert_allclose(host(out["last"]), elems, rtol=RTOL)


def test_compile_traces_once_per_signature_and_computes_the_function():
    traces = []

    def fn(x, k):
        traces.append(1)  # a Python side effect: runs when the function is traced
        return 2.0 * x + ops.cast(k, x.dtype)[:, None]

    f = backend.compile(fn, (backend.spec((None, 3), "float64"), backend.spec((None,), "int32")))
    for n in (4, 2, 5):  # the batch size is free
        x, k = rng.normal(size=(n, 3)), rng.integers(0, 9, n).astype(np.int32)
        np.testing.assert_allclose(host(f(t(x), ops.convert_to_tensor(k))), 2.0 * x + k[:, None], rtol=RTOL)
    # TensorFlow traces once for the free batch size; JAX once per concrete shape; PyTorch runs eagerly
    assert len(traces) == (1 if backend.NAME == "tensorflow" else 3)


def test_fused_kernels_compute_the_same_values():
    def ratio(r, z):
        return r / (z + 0.5)

    r, z = rng.normal(size=(2, 6)), rng.uniform(1.0, 2.0, size=(2, 6))
    np.testing.assert_allclose(host(backend.fused(ratio)(t(r), t(z))), r / (z + 0.5), rtol=RTOL)
    assert not backend.use_fused(t(z), 13)       # 6 elements per sample: below the threshold
    if backend.NAME == "tensorflow":
        import tensorflow as tf

        assert backend.use_fused(t(z), 6) == (not tf.config.functions_run_eagerly())
    elif backend.NAME == "torch":  # compiled by torch.compile (Inductor) from 6 elements per sample
        assert backend.use_fused(t(z), 6)
    else:  # inside jax.jit XLA fuses anyway
        assert not backend.use_fused(t(z), 6)


def test_the_engine_fused_and_op_by_op_give_the_same_relevances(monkeypatch):
    """The stabilised divisions of LRP-epsilon and of the generalised gamma rule (and its combination
    of two products), as the backend fuses them on large activations, against the same functions op by
    op: the threshold is lowered so that this small network's layers use the fused kernels. Both sides
    compute the same float32 operations per element (at most a few roundings apart where a compiler
    contracts a multiply-add), so they agree within a few float32 ulps of the relevances."""
    import keras

    import interprettensor as it
    from interprettensor.engine import linear

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Conv2D(3, 3), keras.layers.Flatten(), keras.layers.Dense(3)])
    x = rng.uniform(-1, 1, (2, 6, 6, 2)).astype("float32")
    # the preset: the box rule on the first layer, the generalised gamma on the second (signed inputs: both
    # of its groups and their combination), epsilon on the dense layer (each kind of fused kernel once)
    for rule, kw in (("epsilon_gamma_box", {"low": -1.0, "high": 1.0}),):
        plain = host(it.lrp(model, x, rule=rule, **kw))
        monkeypatch.setattr(linear, "XLA_MIN_ELEMENTS", 1)
        fused = host(it.lrp(model, x, rule=rule, **kw))
        monkeypatch.setattr(linear, "XLA_MIN_ELEMENTS", 2 ** 19)
        assert np.all(np.isfinite(fused))
        np.testing.assert_allclose(fused, plain, rtol=0, atol=2.0 ** -23 * 16 * np.abs(plain).max(), err_msg=rule)


def test_the_attention_rules_fused_and_op_by_op_give_the_same_relevances(monkeypatch):
    """AttnLRP's softmax rule and the product rules' stabilised divisions (uniform for ``Q·Kᵀ`` and
    ``A·V``, gate under CP-LRP), fused on large activations, against the same functions op by op, on a
    small attention block with a padding mask (masked positions must keep zero relevance in both). The
    softmax rule sums over 6 keys and the relevance crosses about ten such sums and divisions, so the two
    agree within ``2^-23 · 64`` of the largest relevance."""
    import keras

    import interprettensor as it
    from interprettensor.engine import linear

    keras.utils.set_random_seed(1)
    tokens = keras.Input((6, 8))
    mask = keras.Input((6, 6), dtype="bool")
    att = keras.layers.MultiHeadAttention(2, 4)(tokens, tokens, attention_mask=mask)
    h = keras.layers.LayerNormalization()(keras.layers.Add()([tokens, att]))
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model([tokens, mask], out)
    x = rng.normal(size=(3, 6, 8)).astype("float32")
    m = np.ones((3, 6, 6), bool)
    m[:, :, 4:] = False  # the last two positions masked out as keys
    for rule in ("attnlrp", "cp_lrp"):
        plain = host(it.lrp(model, [x, m], rule=rule)[0])
        monkeypatch.setattr(linear, "XLA_MIN_ELEMENTS", 1)
        fused = host(it.lrp(model, [x, m], rule=rule)[0])
        monkeypatch.setattr(linear, "XLA_MIN_ELEMENTS", 2 ** 19)
        assert np.all(np.isfinite(fused)) and np.abs(plain).max() > 0
        np.testing.assert_allclose(fused, plain, rtol=0, atol=2.0 ** -23 * 64 * np.abs(plain).max(), err_msg=rule)


@pytest.mark.skipif(backend.NAME == "jax", reason="XLA clamps an index beyond a table instead of failing: the "
                    "explainer checks indices and targets on the host (tests/test_errors.py)")
def test_runtime_errors_of_a_compiled_call_are_named():
    f = backend.compile(lambda table, i: ops.take(table, i, axis=0), (backend.spec((4,), "float64"),
                                                                backend.spec((None,), "int32")))
    with pytest.raises(backend.RUNTIME_ERRORS) as info:
        f(t(np.arange(4.0)), ops.convert_to_tensor(np.array([7], np.int32)))  # beyond the table
    message = backend.error_message(info.value)
    assert "7" in message or "out of range" in message  # PyTorch's names the problem, not the index


def test_is_symbolic_only_inside_a_traced_computation():
    seen = []

    def fn(x):
        seen.append(backend.is_symbolic(x))
        return 2.0 * x

    f = backend.compile(fn, (backend.spec((None,), "float64"),))
    np.testing.assert_allclose(host(f(t([1.0, 2.0]))), [2.0, 4.0], rtol=RTOL)
    assert seen == [backend.NAME != "torch"]  # PyTorch runs eagerly: nothing is symbolic
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


@pytest.mark.parametrize("name", sorted(backend.MODULES))
def test_every_backend_module_defines_the_whole_interface(name):
    import importlib
    import importlib.util

    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed")
    module = importlib.import_module(backend.MODULES[name], backend.__name__)
    assert [n for n in backend.INTERFACE if not hasattr(module, n)] == []


def test_compiled_explainers_read_the_weights_at_every_call():
    """An Explainer (and the gradient baselines) compiled once explains the weights the model holds
    at the call, not those of its trace (JAX passes the variables in; the randomisation metrics assign
    permuted weights between calls). A bias-free linear map under the z-rule: R_i = x_i W[i, t], in
    float32 (the inputs and weights rounded once, the ratio f_t / z_t = 1 up to a few roundings: rtol
    1e-6, about 8 float32 eps)."""
    import keras

    import interprettensor as it

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, use_bias=False)])
    x, tgt = rng.normal(size=(2, 4)), np.array([0, 2])
    ex = it.Explainer(model, "z")
    for _ in range(2):
        w = rng.normal(size=(4, 3))
        model.layers[0].kernel.assign(w)
        np.testing.assert_allclose(np.asarray(ex(x, target=tgt)), x * w[:, tgt].T, rtol=1e-6)
        np.testing.assert_allclose(it.attribution.gradient(model, x, target=tgt), w[:, tgt].T, rtol=1e-6)
    assert len(ex._functions) == 1  # one trace served both weight sets


def _conv_reference(x, k, stride, padding, dilation):
    """A channels-last convolution in NumPy (float64) from its definition: ``'same'`` pads as Keras
    does (total ``(ceil(n / s) - 1) s + (k - 1) d + 1 - n``, the extra element at the end), each output
    sums its window's taps times the kernel, input channels split into ``groups``."""
    spatial = x.ndim - 2
    pads = []
    for n, ks in zip(x.shape[1:-1], k.shape[:spatial]):
        eff = (ks - 1) * dilation + 1
        total = max(0, (-(-n // stride) - 1) * stride + eff - n) if padding == "same" else 0
        pads.append((total // 2, total - total // 2))
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    out_sizes = [(n - (ks - 1) * dilation - 1) // stride + 1 for n, ks in zip(xp.shape[1:-1], k.shape[:spatial])]
    cin, cout = k.shape[-2], k.shape[-1]
    groups = x.shape[-1] // cin
    out = np.zeros((x.shape[0], *out_sizes, cout))
    for tap in np.ndindex(*k.shape[:spatial]):
        window = xp[(slice(None),) + tuple(slice(a * dilation, a * dilation + (o - 1) * stride + 1, stride)
                                           for a, o in zip(tap, out_sizes))]
        for g in range(groups):
            o = slice(g * cout // groups, (g + 1) * cout // groups)
            out[..., o] += window[..., g * cin:(g + 1) * cin] @ k[tap][:, o]
    return out


@pytest.mark.parametrize("shape,kernel,stride,padding,dilation", [
    ((2, 7, 6, 4), (3, 3, 4, 5), 1, "same", 1),
    ((2, 7, 7, 4), (3, 3, 4, 5), 2, "same", 1),     # symmetric padding with a stride
    ((2, 8, 6, 4), (3, 3, 4, 5), 2, "same", 1),     # asymmetric padding (Keras' own path on PyTorch)
    ((2, 7, 6, 4), (2, 2, 4, 3), 1, "same", 1),     # even kernel: asymmetric
    ((2, 7, 6, 4), (3, 3, 4, 5), 1, "valid", 2),    # dilated
    ((2, 7, 6, 4), (3, 3, 2, 6), 1, "same", 1),     # two groups
    ((2, 5, 4, 6, 3), (3, 3, 3, 3, 2), 1, "same", 1),  # 3-D
    ((2, 9, 3), (3, 3, 4), 1, "same", 1),           # 1-D (Keras' own path on PyTorch)
])
def test_conv_is_keras_convolution_and_its_transpose(shape, kernel, stride, padding, dilation):
    """``backend.conv`` (on PyTorch without Keras' layout copies) against the convolution from its
    definition, also on an input that is not contiguous (a transposed view), and its vector-Jacobian
    product ``J^T s`` by the adjoint identity ``<conv(u), s> = <u, J^T s>`` for random ``u``. In float32
    (Keras promotes float64 on JAX and PyTorch): an output sums ``taps * channels`` products and an input
    gradient ``taps * output channels``, each rounding within 2^-24 of the running sum, so
    ``|error| <= 2^-23 * terms * max|x| * max|k|`` per element."""
    x = rng.normal(size=shape).astype(np.float32)
    k = rng.normal(size=kernel).astype(np.float32)
    spatial = len(shape) - 2
    want = _conv_reference(x.astype(np.float64), k.astype(np.float64), stride, padding, dilation)
    terms = int(np.prod(kernel[:-1]))
    tol = 2.0 ** -23 * terms * np.abs(x).max() * np.abs(k).max()
    strides, rates = (stride,) * spatial, (dilation,) * spatial
    tx, tk = ops.convert_to_tensor(x), ops.convert_to_tensor(k)
    got = host(backend.conv(tx, tk, strides, padding, rates, "channels_last"))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)
    swapped = ops.swapaxes(ops.convert_to_tensor(np.swapaxes(x, 1, 2).copy()), 1, 2)  # x as a strided view
    np.testing.assert_allclose(host(backend.conv(swapped, tk, strides, padding, rates, "channels_last")), want,
                               rtol=0, atol=tol)
    s = rng.normal(size=want.shape).astype(np.float32)
    (g,) = backend.vjp(lambda xs: backend.conv(xs[0], tk, strides, padding, rates, "channels_last"), [tx],
                       ops.convert_to_tensor(s))
    g = host(g).astype(np.float64)
    assert g.shape == x.shape
    terms_t = int(np.prod(kernel[:-2])) * kernel[-1]
    for _ in range(2):
        u = rng.normal(size=shape)
        lhs = float(np.sum(_conv_reference(u, k.astype(np.float64), stride, padding, dilation) * s))
        rhs = float(np.sum(u * g))
        bound = 2.0 ** -23 * terms_t * np.abs(s).max() * np.abs(k).max() * np.abs(u).sum()
        assert abs(lhs - rhs) <= bound, (lhs, rhs, bound)
