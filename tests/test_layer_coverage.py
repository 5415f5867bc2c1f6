"""Every supported Keras layer type against an independent computation.

The reference for a linear layer ``f`` under a rule is computed with the Keras layer's own ``call``
(on copies of the layer with modified weights), through ``tf.GradientTape``:
``R_in = sum_t x_t * d/dx_t [f_t(x_t) . stop(R / stab(sum_t f_t(x_t)))]`` - not with the library's
linear maps.
"""

import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import interprettensor as it
import reference_numpy as ref

L = keras.layers
TINY = 1e-12


pytestmark = pytest.mark.usefixtures("float64")


def sign0(z):
    return tf.where(z >= 0, tf.ones_like(z), -tf.ones_like(z))


def copy_with(layer, kernel_fn, bias_fn, input_shape):
    """A copy of ``layer`` without activation, kernels mapped by kernel_fn and the bias by bias_fn
    (None: zero bias)."""
    cfg = dict(layer.get_config())
    cfg["name"] = layer.name + "_copy"
    if "activation" in cfg:
        cfg["activation"] = "linear"
    new = type(layer).from_config(cfg)
    new.build(input_shape)
    vals = []
    for v in layer.weights:
        w = v.numpy()
        if v.name == "bias":
            vals.append(np.zeros_like(w) if bias_fn is None else bias_fn(w))
        else:
            vals.append(kernel_fn(w))
    new.set_weights(vals)
    return new


pos = lambda w: np.maximum(w, 0)  # noqa: E731
neg = lambda w: np.minimum(w, 0)  # noqa: E731
ident = lambda w: w  # noqa: E731


def terms_for(rule, **p):
    """(coefficient, [(input_fn, kernel_fn, bias_fn)], epsilon[, outputs]) per group, restating each
    rule; ``outputs`` 'positive'/'negative' restricts a group to the outputs whose plain z is >= 0 / < 0."""
    if rule == "epsilon":
        return [(1.0, [(ident, ident, ident)], p.get("epsilon", TINY))]
    if rule == "simple":
        return [(1.0, [(ident, ident, ident)], TINY)]
    if rule == "alphabeta":
        a = p.get("alpha", 2.0)
        b = a - 1.0
        return [(a, [(pos, pos, pos), (neg, neg, None)], TINY), (-b, [(pos, neg, neg), (neg, pos, None)], TINY)]
    if rule == "zplus":
        return [(1.0, [(pos, pos, None), (neg, neg, None)], TINY)]
    if rule == "gamma_literal":  # Montavon et al. 2019, eq. 7 as printed
        g = p.get("gamma", 0.25)
        return [(1.0, [(ident, lambda w: w + g * pos(w), lambda w: w + g * pos(w))], TINY)]
    if rule == "gamma":  # generalised: push weights towards the output's sign (Zennit's Gamma)
        g = p.get("gamma", 0.25)
        up, down = (lambda w: w + g * pos(w)), (lambda w: w + g * neg(w))
        return [(1.0, [(pos, up, up), (neg, down, None)], TINY, "positive"),
                (1.0, [(pos, down, down), (neg, up, None)], TINY, "negative")]
    if rule == "flat":
        return [(1.0, [(np.ones_like, np.ones_like, None)], TINY)]
    if rule == "ww":
        return [(1.0, [(np.ones_like, np.square, None)], TINY)]
    if rule == "zbox":
        lo, hi = p["low"], p["high"]
        return [(1.0, [(ident, ident, None), (lambda x: np.full_like(x, lo), lambda w: -pos(w), None),
                       (lambda x: np.full_like(x, hi), lambda w: -neg(w), None)], TINY)]
    raise ValueError(rule)


def reference_weighted(layer, x, R, rule, **p):
    out = np.zeros_like(x)
    z_plain = copy_with(layer, ident, ident, x.shape)(tf.constant(x)).numpy()
    for coef, terms, eps, *select in terms_for(rule, **p):
        copies = [(copy_with(layer, kf, bf, x.shape), tf.constant(inf(x))) for inf, kf, bf in terms]
        with tf.GradientTape() as tape:
            for _, xi in copies:
                tape.watch(xi)
            z = tf.add_n([c(xi) for c, xi in copies])
        s = tf.stop_gradient(R / (z + eps * sign0(z)))
        if select:
            s = s * ((z_plain >= 0) if select[0] == "positive" else (z_plain < 0))
        grads = tape.gradient(z, [xi for _, xi in copies], output_gradients=s)
        out += coef * sum((xi * g).numpy() for (_, xi), g in zip(copies, grads))
    return out


def reference_linear_nokernel(layer_call, xs, R, eps=TINY):
    """z-rule / epsilon through a weight-free linear map (pooling, sums, affine BN), via its call."""
    xs = [tf.constant(x) for x in xs]
    with tf.GradientTape() as tape:
        for x in xs:
            tape.watch(x)
        z = layer_call(xs)
    s = tf.stop_gradient(R / (z + eps * sign0(z)))
    grads = tape.gradient(z, xs, output_gradients=s)
    return [(x * g).numpy() for x, g in zip(xs, grads)]


def assert_close(got, want, tol=1e-7):
    """Agreement relative to the largest relevance (float64 kernels may differ in summation order)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-300)
    assert err <= tol, f"relative error {err:.3g}"


def single(layer, shape):
    return keras.Sequential([keras.Input(shape), layer])


WEIGHTED = [
    ("dense", lambda: L.Dense(5), (7,)),
    ("dense_nd", lambda: L.Dense(5), (3, 4, 6)),
    ("conv1d_same_stride2", lambda: L.Conv1D(4, 3, strides=2, padding="same"), (9, 3)),
    ("conv1d_causal_dilated", lambda: L.Conv1D(4, 3, padding="causal", dilation_rate=2), (9, 3)),
    ("conv2d_valid", lambda: L.Conv2D(4, 3), (7, 6, 3)),
    ("conv2d_same_stride2", lambda: L.Conv2D(4, 3, strides=2, padding="same"), (7, 6, 3)),
    ("conv2d_dilated", lambda: L.Conv2D(4, 3, dilation_rate=2, padding="same"), (7, 7, 2)),
    ("conv2d_groups", lambda: L.Conv2D(4, 3, groups=2, padding="same"), (6, 6, 4)),
    ("conv3d", lambda: L.Conv3D(3, 2, strides=(1, 2, 1), padding="same"), (4, 5, 4, 2)),
    ("depthwise2d", lambda: L.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (6, 6, 3)),
    ("conv2d_transpose", lambda: L.Conv2DTranspose(3, 3, strides=2, padding="same"), (4, 4, 2)),
    ("conv1d_transpose", lambda: L.Conv1DTranspose(3, 3, strides=2), (5, 2)),
]


#: layers whose cases cost seconds each on CPU (a grouped convolution in float64, ten times a plain one's
#: case): by default checked under the rules below, which cover
#: each kind of term (the plain map, the positive/negative split, the gamma-modified weights); the linear
#: map a rule modifies is the same for every rule
COMPILED_ONLY = ("conv2d_groups",)
COMPILED_ONLY_RULES = [("epsilon", {"epsilon": 0.1}), ("alphabeta", {"alpha": 2.0}), ("gamma", {"gamma": 0.25})]


@pytest.mark.parametrize("name,make,shape", WEIGHTED, ids=[w[0] for w in WEIGHTED])
@pytest.mark.parametrize("rule,p", [("epsilon", {"epsilon": 0.1}), ("simple", {}), ("alphabeta", {"alpha": 2.0}),
                                    ("alphabeta", {"alpha": 1.0}), ("gamma", {"gamma": 0.25}),
                                    ("gamma_literal", {"gamma": 0.25}), ("zplus", {}),
                                    ("flat", {}), ("ww", {}), ("zbox", {"low": -1.5, "high": 2.0})],
                         ids=["eps", "z", "a2b1", "a1b0", "gamma", "gamma_literal", "zplus", "flat", "ww", "zbox"])
def test_weighted_layers(name, make, shape, rule, p, exhaustive):
    if name in COMPILED_ONLY and (rule, p) not in COMPILED_ONLY_RULES and not exhaustive:
        pytest.skip(f"{name} under {rule} {p}: the default run checks it under {len(COMPILED_ONLY_RULES)} rules "
                    f"(each grouped-convolution case costs seconds on CPU); all of them with --run-exhaustive")
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # deterministic across processes
    layer = make()
    model = single(layer, shape)
    for v in layer.weights:
        v.assign(rng.normal(size=v.shape))
    x = rng.normal(size=(2,) + shape)
    if rule == "zbox":
        x = np.clip(x, p["low"], p["high"])
    y = model(x).numpy()
    R = rng.normal(size=y.shape)
    want = reference_weighted(layer, x, R, rule, **p)
    got = it.lrp(model, x, rule=rule, relevance=R, **p)
    assert_close(got, want)


def test_separable_conv_is_z_rule_of_the_combined_map():
    rng = np.random.default_rng(0)
    layer = L.SeparableConv2D(4, 3, depth_multiplier=2, padding="same")
    model = single(layer, (6, 6, 3))
    for v in layer.weights:
        v.assign(rng.normal(size=v.shape))
    x = rng.normal(size=(2, 6, 6, 3))
    R = rng.normal(size=model(x).shape)
    want = reference_linear_nokernel(lambda xs: layer(xs[0]), [x], R)[0]
    assert_close(it.lrp(model, x, rule="simple", relevance=R), want)


POOL_LINEAR = [
    ("avg1d", lambda: L.AveragePooling1D(2), (8, 3)),
    ("avg2d_same", lambda: L.AveragePooling2D(3, strides=2, padding="same"), (7, 7, 2)),
    ("avg3d", lambda: L.AveragePooling3D(2, dtype="float32"), (4, 4, 4, 2)),
    ("gap1d", lambda: L.GlobalAveragePooling1D(), (6, 3)),
    ("gap2d", lambda: L.GlobalAveragePooling2D(), (5, 5, 3)),
    ("gap3d_keepdims", lambda: L.GlobalAveragePooling3D(keepdims=True), (3, 3, 3, 2)),
    ("upsampling1d", lambda: L.UpSampling1D(2), (4, 3)),
    ("upsampling2d", lambda: L.UpSampling2D(2), (3, 4, 2)),
    ("upsampling2d_bilinear", lambda: L.UpSampling2D(2, interpolation="bilinear"), (3, 4, 2)),
    ("upsampling3d", lambda: L.UpSampling3D(2), (2, 2, 2, 1)),
    ("batchnorm", lambda: L.BatchNormalization(), (5, 4)),
]


@pytest.mark.parametrize("name,make,shape", POOL_LINEAR, ids=[p[0] for p in POOL_LINEAR])
@pytest.mark.parametrize("eps", [TINY, 0.3])
def test_linear_layers_without_weights(name, make, shape, eps):
    rng = np.random.default_rng(1)
    tol = 1e-7
    if name == "avg3d":  # TensorFlow's 3-D pooling has no float64 kernel
        keras.backend.set_floatx("float32")
        tol = 1e-5
    layer = make()
    model = single(layer, shape)
    if isinstance(layer, L.BatchNormalization):
        layer.set_weights([rng.normal(size=4), rng.normal(size=4), rng.normal(size=4), rng.random(4) + 0.5])
    x = rng.normal(size=(2,) + shape).astype(keras.backend.floatx())
    R = rng.normal(size=model(x).shape).astype(keras.backend.floatx())
    want = reference_linear_nokernel(lambda xs: layer(xs[0], training=False), [x], R, eps)[0]
    rule = "simple" if eps == TINY else it.rules.Epsilon(eps)
    assert_close(it.lrp(model, x, rule=rule, relevance=R), want, tol)


def winner_takes_all_reference(name, x, R):
    if name == "max2d_same":
        return ref.maxpool_lrp(x, R, 3, 2, "SAME", "simple")
    out = np.zeros_like(x)
    if name.startswith("gmp"):
        for n in range(x.shape[0]):
            for c in range(x.shape[-1]):
                idx = np.unravel_index(np.argmax(x[n, ..., c]), x.shape[1:-1])
                out[(n,) + idx + (c,)] = R[n, c]
        return out
    for n in range(x.shape[0]):  # non-overlapping windows of size 2
        for o in np.ndindex(R.shape[1:-1]):
            for c in range(x.shape[-1]):
                win = x[(n,) + tuple(slice(2 * i, 2 * i + 2) for i in o) + (c,)]
                idx = np.unravel_index(np.argmax(win), win.shape)
                out[(n,) + tuple(2 * i + j for i, j in zip(o, idx)) + (c,)] = R[(n,) + o + (c,)]
    return out


MAX_POOL = [("max1d", lambda: L.MaxPooling1D(2), (8, 3)),
            ("max2d_same", lambda: L.MaxPooling2D(3, strides=2, padding="same"), (7, 7, 2)),
            ("max3d", lambda: L.MaxPooling3D(2, dtype="float32"), (4, 4, 4, 2)),
            ("gmp1d", lambda: L.GlobalMaxPooling1D(), (6, 3)),
            ("gmp2d", lambda: L.GlobalMaxPooling2D(), (5, 5, 3)),
            ("gmp3d", lambda: L.GlobalMaxPooling3D(), (3, 3, 3, 2))]


@pytest.mark.parametrize("name,make,shape", MAX_POOL, ids=[m[0] for m in MAX_POOL])
def test_max_pooling_winner_takes_all_and_uniform_under_flat(name, make, shape):
    rng = np.random.default_rng(2)
    if name == "max3d":  # TensorFlow's 3-D pooling has no float64 kernel
        keras.backend.set_floatx("float32")
    layer = make()
    model = single(layer, shape)
    x = rng.normal(size=(2,) + shape).astype(keras.backend.floatx())
    R = rng.normal(size=model(x).shape).astype(keras.backend.floatx())
    got = it.lrp(model, x, rule="epsilon", relevance=R)
    # each output's relevance sits exactly on its window's maximum (numpy reference)
    np.testing.assert_allclose(got, winner_takes_all_reference(name, x, R), rtol=1e-6)
    assert np.count_nonzero(got) <= R.size
    np.testing.assert_allclose(got.sum(), R.sum(), rtol=1e-5)
    # an explicit flat rule on the pooling layer spreads uniformly over the window
    flat = it.lrp(model, x, rule=it.Composite(layer_map={"maxpool": "flat"}), relevance=R)
    np.testing.assert_allclose(flat.sum(), R.sum(), rtol=1e-5)
    assert np.count_nonzero(flat) > np.count_nonzero(got)


ROUTES = [("flatten", lambda: L.Flatten(), (3, 4, 2)),
          ("reshape", lambda: L.Reshape((4, 6)), (3, 8)),
          ("permute", lambda: L.Permute((2, 1, 3)), (3, 4, 2)),
          ("zeropad1d", lambda: L.ZeroPadding1D(2), (5, 2)),
          ("zeropad2d", lambda: L.ZeroPadding2D(((1, 2), (0, 1))), (4, 4, 2)),
          ("zeropad3d", lambda: L.ZeroPadding3D(1), (2, 2, 2, 1)),
          ("crop1d", lambda: L.Cropping1D((1, 2)), (6, 2)),
          ("crop2d", lambda: L.Cropping2D(((1, 0), (1, 1))), (5, 5, 2)),
          ("crop3d", lambda: L.Cropping3D(1), (4, 4, 4, 1)),
          ("repeat", lambda: L.RepeatVector(3), (4,))]


@pytest.mark.parametrize("name,make,shape", ROUTES, ids=[r[0] for r in ROUTES])
def test_routing_layers_move_relevance_exactly(name, make, shape):
    rng = np.random.default_rng(3)
    layer = make()
    model = single(layer, shape)
    x = rng.normal(size=(2,) + shape) + 3.0
    y = model(x).numpy()
    R = rng.normal(size=y.shape)
    got = it.lrp(model, x, rule="epsilon", relevance=R)
    # independent: each input value's relevance is the sum of R over the output positions holding it
    # (found by tagging every input element with a unique value)
    tags = np.arange(1, x[:1].size + 1, dtype=float).reshape(x[:1].shape)
    ty = layer(tags).numpy()
    want = np.zeros_like(x)
    for n in range(2):
        for idx in np.ndindex(ty.shape[1:]):
            t = ty[(0,) + idx]
            if t != 0:
                want[(n,) + np.unravel_index(int(round(t)) - 1, shape)] += R[(n,) + idx]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


PASS = [("relu", lambda: L.ReLU()), ("relu6", lambda: L.ReLU(max_value=6.0)), ("leaky", lambda: L.LeakyReLU(0.2)),
        ("elu", lambda: L.ELU()), ("prelu", lambda: L.PReLU()), ("softmax", lambda: L.Softmax()),
        ("activation_tanh", lambda: L.Activation("tanh")), ("dropout", lambda: L.Dropout(0.5)),
        ("spatialdropout", lambda: L.SpatialDropout1D(0.5)), ("gaussnoise", lambda: L.GaussianNoise(1.0)),
        ("gaussdropout", lambda: L.GaussianDropout(0.3)), ("alphadropout", lambda: L.AlphaDropout(0.3)),
        ("rescaling", lambda: L.Rescaling(1 / 127.5, offset=-1.0)),
        ("normalization", lambda: L.Normalization(mean=2.0, variance=4.0))]


@pytest.mark.parametrize("name,make", PASS, ids=[p[0] for p in PASS])
def test_elementwise_layers_pass_relevance_and_are_identity_at_inference(name, make):
    rng = np.random.default_rng(4)
    layer = make()
    inp = keras.Input((5, 3))
    model = keras.Model(inp, L.Dense(4, name="d")(layer(inp)))
    x = rng.normal(size=(2, 5, 3))
    R = rng.normal(size=(2, 5, 4))
    got, lw = it.lrp(model, x, rule="simple", relevance=R, layerwise=True)
    np.testing.assert_allclose(got, lw[model.layers[1].name], rtol=1e-12)
    a = layer(tf.constant(x), training=False).numpy()
    want = reference_linear_nokernel(lambda xs: model.get_layer("d")(xs[0]), [a], R)[0]
    assert_close(got, want)


@pytest.mark.parametrize("kind", ["add", "average", "subtract"])
@pytest.mark.parametrize("eps", [TINY, 0.2])
def test_merge_layers_split_in_proportion(kind, eps):
    rng = np.random.default_rng(5)
    a, b = keras.Input((4, 3)), keras.Input((4, 3))
    layer = {"add": L.Add(), "average": L.Average(), "subtract": L.Subtract()}[kind]
    model = keras.Model([a, b], layer([a, b]))
    xa, xb = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 3))
    R = rng.normal(size=(2, 4, 3))
    rule = "simple" if eps == TINY else it.rules.Epsilon(eps)
    got = it.lrp(model, [xa, xb], rule=rule, relevance=R)
    want = reference_linear_nokernel(lambda xs: layer(xs), [xa, xb], R, eps)
    assert isinstance(got, list) and len(got) == 2
    for g, w in zip(got, want):
        assert_close(g, w)


def test_concatenate_and_multiply():
    rng = np.random.default_rng(6)
    a, b = keras.Input((4, 3)), keras.Input((4, 2))
    cat = keras.Model([a, b], L.Concatenate()([a, b]))
    xa, xb = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 2))
    R = rng.normal(size=(2, 4, 5))
    ra, rb = it.lrp(cat, [xa, xb], relevance=R)
    np.testing.assert_array_equal(ra, R[..., :3])
    np.testing.assert_array_equal(rb, R[..., 3:])
    # Multiply is a gate: the relevance goes to the signal (full-shape) input, none to the gate
    s, g = keras.Input((4, 3)), keras.Input((1, 3))
    mul = keras.Model([s, g], L.Multiply()([g, s]))
    xs, xg = rng.normal(size=(2, 4, 3)), rng.random((2, 1, 3))
    R = rng.normal(size=(2, 4, 3))
    rs, rg = it.lrp(mul, [xs, xg], relevance=R)
    np.testing.assert_array_equal(rs, R)
    np.testing.assert_array_equal(rg, 0.0)
