"""Independent numpy reference implementation of Layer-wise Relevance Propagation.

Plain numpy, float64, channels-last, written in the style of the LRP Toolbox's
numpy modules: explicit contribution tensors Z[n,i,j] = x[n,i] * W[i,j] and
explicit Python loops over output positions for convolution and pooling.

Conventions
-----------
sign0(z) = +1 where z >= 0, else -1.     TINY = 1e-12.
x is the layer input, R the relevance at the layer output (shaped like it).

Padding ('VALID' / 'SAME') follows TensorFlow: for SAME, out = ceil(H / s),
total pad = max((out - 1) * s + k - H, 0), pad_top = total // 2, the rest at
the bottom (same for width). Padded (out-of-image) positions are never inputs:
windows/patches are cropped to their in-image part (and the kernel likewise),
which is equivalent to zero padding for rules where x = 0 contributes nothing
and excludes padding from the denominators of 'flat' and 'ww'.
"""

import numpy as np

TINY = 1e-12

DENSE_RULES = ('simple', 'epsilon', 'flat', 'ww', 'alphabeta', 'gamma', 'zplus', 'zbox')


def sign0(z):
    """+1 where z >= 0, else -1."""
    return np.where(z >= 0, 1.0, -1.0)


def _pair(v):
    if np.isscalar(v):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


# ---------------------------------------------------------------------------
# Dense
# ---------------------------------------------------------------------------

def dense_forward(x, W, b=None):
    """y = x @ W + b  with x (N, D), W (D, M), b (M,) or None."""
    x = np.asarray(x, dtype=np.float64)
    y = x @ np.asarray(W, dtype=np.float64)
    if b is not None:
        y = y + np.asarray(b, dtype=np.float64)
    return y


def _ratio(Z, Zs, R):
    """R_in[n,i] = sum_j Z[n,i,j] / Zs[n,j] * R[n,j]   (Zs already stabilised)."""
    return (Z * (R / Zs)[:, None, :]).sum(axis=2)


def dense_lrp(x, W, b, R, rule, **p):
    """LRP through a dense layer y = x @ W + b. Returns R_in of shape (N, D).

    Z[n,i,j] = x[n,i] * W[i,j];  b None (or p['bias'] == False) means b = 0.

    simple    : Zs = sum_i Z + b;  Zs += TINY*sign0(Zs);  R_i = sum_j Z/Zs R_j
    epsilon   : as simple with Zs += eps*sign0(Zs)   (p['epsilon'], default 0.01)
    flat      : Z = 1, Zs = D (number of inputs); bias ignored
    ww        : Z = W**2, Zs = sum_i W**2; bias ignored
    alphabeta : Zp = Z*(Z>0), Zsp = sum_i Zp + b*(b>0);  Zn = Z*(Z<0), Zsn = sum_i Zn + b*(b<0)
                R_i = alpha sum_j Zp/(Zsp+TINY sign0(Zsp)) R_j - beta sum_j Zn/(Zsn+TINY sign0(Zsn)) R_j
                (p['alpha'] default 2, p['beta'] default alpha-1)
    gamma     : W' = W + g*max(W,0), b' = b + g*max(b,0); then simple with W', b'
                (p['gamma'], default 0.25)
    zplus     : alphabeta with alpha=1, beta=0 and b = 0
    zbox      : Z = x*W - low*max(W,0) - high*min(W,0); Zs = sum_i Z (bias ignored);
                Zs += TINY*sign0(Zs); R_i = sum_j Z/Zs R_j   (p['low'], p['high'],
                scalars or arrays broadcastable to x)
    """
    x = np.asarray(x, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    N, D = x.shape
    M = W.shape[1]
    if b is None or not p.get('bias', True):
        b = np.zeros(M)
    b = np.asarray(b, dtype=np.float64)

    if rule in ('simple', 'epsilon'):
        eps = TINY if rule == 'simple' else float(p.get('epsilon', 0.01))
        Z = x[:, :, None] * W[None, :, :]
        Zs = Z.sum(axis=1) + b[None, :]
        Zs = Zs + eps * sign0(Zs)
        return _ratio(Z, Zs, R)

    if rule == 'flat':
        Z = np.ones((N, D, M))
        Zs = Z.sum(axis=1)
        return _ratio(Z, Zs, R)

    if rule == 'ww':
        Z = np.broadcast_to((W ** 2)[None, :, :], (N, D, M))
        Zs = Z.sum(axis=1)
        Zs = Zs + TINY * sign0(Zs)  # only matters for all-zero weight columns
        return _ratio(Z, Zs, R)

    if rule in ('alphabeta', 'zplus'):
        if rule == 'zplus':
            alpha, beta, b = 1.0, 0.0, np.zeros(M)
        else:
            alpha = float(p.get('alpha', 2.0))
            beta = float(p['beta']) if p.get('beta') is not None else alpha - 1.0
        Z = x[:, :, None] * W[None, :, :]
        Zp = Z * (Z > 0)
        Zsp = Zp.sum(axis=1) + (b * (b > 0))[None, :]
        Zn = Z * (Z < 0)
        Zsn = Zn.sum(axis=1) + (b * (b < 0))[None, :]
        Rp = _ratio(Zp, Zsp + TINY * sign0(Zsp), R)
        Rn = _ratio(Zn, Zsn + TINY * sign0(Zsn), R)
        return alpha * Rp - beta * Rn

    if rule == 'gamma':
        g = float(p.get('gamma', 0.25))
        Wg = W + g * np.maximum(W, 0)
        bg = b + g * np.maximum(b, 0)
        Z = x[:, :, None] * Wg[None, :, :]
        Zs = Z.sum(axis=1) + bg[None, :]
        Zs = Zs + TINY * sign0(Zs)
        return _ratio(Z, Zs, R)

    if rule == 'zbox':
        low = np.broadcast_to(np.asarray(p['low'], dtype=np.float64), x.shape)
        high = np.broadcast_to(np.asarray(p['high'], dtype=np.float64), x.shape)
        Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
        Z = (x[:, :, None] * W[None] - low[:, :, None] * Wp[None]
             - high[:, :, None] * Wn[None])
        Zs = Z.sum(axis=1)
        Zs = Zs + TINY * sign0(Zs)
        return _ratio(Z, Zs, R)

    raise ValueError('unknown/unsupported dense LRP rule: %r' % (rule,))


# ---------------------------------------------------------------------------
# Window geometry (TensorFlow VALID / SAME)
# ---------------------------------------------------------------------------

def _out_and_pad(size, k, s, padding):
    """Return (out_size, pad_before) along one axis, TensorFlow convention."""
    padding = padding.upper()
    if padding == 'VALID':
        return (size - k) // s + 1, 0
    if padding == 'SAME':
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        return out, total // 2
    raise ValueError('padding must be VALID or SAME, got %r' % (padding,))


def _windows(H, Wd, k, s, padding):
    """Yield (i, j, (r0, r1, c0, c1), (kr0, kr1, kc0, kc1)) for every output
    position: the in-image rows/cols of the window and the matching kernel slice."""
    kh, kw = _pair(k)
    sh, sw = _pair(s)
    oh, pt = _out_and_pad(H, kh, sh, padding)
    ow, pl = _out_and_pad(Wd, kw, sw, padding)
    for i in range(oh):
        top = i * sh - pt
        r0, r1 = max(top, 0), min(top + kh, H)
        for j in range(ow):
            left = j * sw - pl
            c0, c1 = max(left, 0), min(left + kw, Wd)
            yield i, j, (r0, r1, c0, c1), (r0 - top, r1 - top, c0 - left, c1 - left)


def _out_shape(H, Wd, k, s, padding):
    kh, kw = _pair(k)
    sh, sw = _pair(s)
    return _out_and_pad(H, kh, sh, padding)[0], _out_and_pad(Wd, kw, sw, padding)[0]


def _zbox_bounds(x, p):
    """Broadcast p['low'] / p['high'] to x's shape (for slicing per patch)."""
    q = dict(p)
    if 'low' in q:
        q['low'] = np.broadcast_to(np.asarray(q['low'], dtype=np.float64), x.shape)
    if 'high' in q:
        q['high'] = np.broadcast_to(np.asarray(q['high'], dtype=np.float64), x.shape)
    return q


# ---------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------

def conv_forward(x, W, b, stride, padding):
    """2-D convolution (cross-correlation as in TF). x (N,H,W,C), W (kh,kw,C,K),
    b (K,) or None. y[n,i,j,k] = sum_{in-image patch} x * W + b[k]."""
    x = np.asarray(x, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    N, H, Wd, C = x.shape
    kh, kw, _, K = W.shape
    oh, ow = _out_shape(H, Wd, (kh, kw), stride, padding)
    y = np.zeros((N, oh, ow, K))
    for i, j, (r0, r1, c0, c1), (a0, a1, b0, b1) in _windows(H, Wd, (kh, kw), stride, padding):
        patch = x[:, r0:r1, c0:c1, :].reshape(N, -1)
        y[:, i, j, :] = patch @ W[a0:a1, b0:b1].reshape(-1, K)
    if b is not None:
        y += np.asarray(b, dtype=np.float64)
    return y


def conv_lrp(x, W, b, R, stride, padding, rule, **p):
    """LRP through a 2-D convolution. For each output position (i, j) the
    in-image patch x[:, r0:r1, c0:c1, :] (flattened) and the matching kernel slice
    (reshaped to (patch_size, K)) are treated as a dense layer with bias b and
    output relevance R[:, i, j, :]; dense_lrp is applied and the patch relevance
    accumulated. Padded positions are not inputs (no relevance, not counted)."""
    x = np.asarray(x, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    N, H, Wd, C = x.shape
    kh, kw, _, K = W.shape
    q = _zbox_bounds(x, p) if rule == 'zbox' else p
    Rx = np.zeros_like(x)
    for i, j, (r0, r1, c0, c1), (a0, a1, b0, b1) in _windows(H, Wd, (kh, kw), stride, padding):
        patch = x[:, r0:r1, c0:c1, :]
        pp = dict(q)
        if rule == 'zbox':
            pp['low'] = q['low'][:, r0:r1, c0:c1, :].reshape(N, -1)
            pp['high'] = q['high'][:, r0:r1, c0:c1, :].reshape(N, -1)
        Rp = dense_lrp(patch.reshape(N, -1), W[a0:a1, b0:b1].reshape(-1, K), b,
                       R[:, i, j, :], rule, **pp)
        Rx[:, r0:r1, c0:c1, :] += Rp.reshape(patch.shape)
    return Rx


# ---------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------

def maxpool_forward(x, k, s=None, padding='VALID'):
    """Max over the in-image positions of each window, per channel."""
    x = np.asarray(x, dtype=np.float64)
    s = k if s is None else s
    N, H, Wd, C = x.shape
    oh, ow = _out_shape(H, Wd, k, s, padding)
    y = np.zeros((N, oh, ow, C))
    for i, j, (r0, r1, c0, c1), _ in _windows(H, Wd, k, s, padding):
        y[:, i, j, :] = x[:, r0:r1, c0:c1, :].max(axis=(1, 2))
    return y


def maxpool_lrp(x, R, k, s=None, padding='VALID', rule='simple', **p):
    """LRP through max pooling (per channel; overlapping windows accumulate).
    'flat' / 'ww': R of each output split uniformly over the in-image window.
    any other rule: winner takes all (first maximum in row-major window order)."""
    x = np.asarray(x, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    s = k if s is None else s
    N, H, Wd, C = x.shape
    Rx = np.zeros_like(x)
    for i, j, (r0, r1, c0, c1), _ in _windows(H, Wd, k, s, padding):
        patch = x[:, r0:r1, c0:c1, :]
        h, w = patch.shape[1:3]
        if rule in ('flat', 'ww'):
            Rx[:, r0:r1, c0:c1, :] += R[:, i, j, :][:, None, None, :] / (h * w)
        else:
            flat = patch.reshape(N, h * w, C)
            win = np.argmax(flat, axis=1)                                # (N, C)
            onehot = (np.arange(h * w)[None, :, None] == win[:, None, :])  # (N, hw, C)
            Rw = onehot * R[:, i, j, :][:, None, :]
            Rx[:, r0:r1, c0:c1, :] += Rw.reshape(N, h, w, C)
    return Rx


def avgpool_forward(x, k, s=None, padding='VALID'):
    """Mean over the in-image positions of each window (padding not counted)."""
    x = np.asarray(x, dtype=np.float64)
    s = k if s is None else s
    N, H, Wd, C = x.shape
    oh, ow = _out_shape(H, Wd, k, s, padding)
    y = np.zeros((N, oh, ow, C))
    for i, j, (r0, r1, c0, c1), _ in _windows(H, Wd, k, s, padding):
        y[:, i, j, :] = x[:, r0:r1, c0:c1, :].mean(axis=(1, 2))
    return y


def avgpool_lrp(x, R, k, s=None, padding='VALID', rule='simple', **p):
    """LRP through average pooling: each window and channel is a dense layer over
    its n in-image positions with weights 1/n and no bias; dense_lrp is applied
    (rows = (sample, channel) pairs, inputs = window positions, one output)."""
    x = np.asarray(x, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    s = k if s is None else s
    N, H, Wd, C = x.shape
    q = _zbox_bounds(x, p) if rule == 'zbox' else p

    def rows(a):  # (N, h, w, C) -> (N*C, h*w)
        return a.transpose(0, 3, 1, 2).reshape(a.shape[0] * a.shape[3], -1)

    Rx = np.zeros_like(x)
    for i, j, (r0, r1, c0, c1), _ in _windows(H, Wd, k, s, padding):
        patch = x[:, r0:r1, c0:c1, :]
        h, w = patch.shape[1:3]
        n = h * w
        pp = dict(q)
        if rule == 'zbox':
            pp['low'] = rows(q['low'][:, r0:r1, c0:c1, :])
            pp['high'] = rows(q['high'][:, r0:r1, c0:c1, :])
        Rp = dense_lrp(rows(patch), np.full((n, 1), 1.0 / n), None,
                       R[:, i, j, :].reshape(N * C, 1), rule, **pp)
        Rx[:, r0:r1, c0:c1, :] += Rp.reshape(N, C, h, w).transpose(0, 2, 3, 1)
    return Rx


# ---------------------------------------------------------------------------
# Small networks
# ---------------------------------------------------------------------------

_ACTS = {
    'relu': lambda z: np.maximum(z, 0),
    'tanh': np.tanh,
    'linear': lambda z: z,
    None: lambda z: z,
}


def _layer_forward(x, L):
    t = L['type']
    if t == 'dense':
        z = dense_forward(x.reshape(x.shape[0], -1), L['W'], L.get('b'))
        return _ACTS[L.get('act', 'linear')](z)
    if t == 'conv':
        z = conv_forward(x, L['W'], L.get('b'), L.get('stride', 1), L.get('padding', 'VALID'))
        return _ACTS[L.get('act', 'linear')](z)
    if t == 'maxpool':
        return maxpool_forward(x, L['k'], L.get('s'), L.get('padding', 'VALID'))
    if t == 'avgpool':
        return avgpool_forward(x, L['k'], L.get('s'), L.get('padding', 'VALID'))
    if t == 'flatten':
        return x.reshape(x.shape[0], -1)
    raise ValueError('unknown layer type %r' % (t,))


def network_forward(x, layers):
    """Apply the layers in order (activations after dense/conv); return output."""
    a = np.asarray(x, dtype=np.float64)
    for L in layers:
        a = _layer_forward(a, L)
    return a


def network_lrp(x, layers, R, rule, **p):
    """LRP through a stack of layers. Forward pass stores each layer's input;
    backwards, activations pass relevance unchanged, flatten reshapes, and each
    dense/conv/pool layer applies its rule. `rule` is a string (used with **p for
    every layer) or a list of (rule, params) pairs, one per layer (entries for
    'flatten' layers are ignored). Returns the relevance at the input."""
    a = np.asarray(x, dtype=np.float64)
    inputs = []
    for L in layers:
        inputs.append(a)
        a = _layer_forward(a, L)
    if isinstance(rule, str):
        rules = [(rule, p)] * len(layers)
    else:
        rules = [(r, dict(pr or {})) for r, pr in rule]
        if len(rules) != len(layers):
            raise ValueError('need one (rule, params) per layer')
    R = np.asarray(R, dtype=np.float64)
    for L, xin, (r, pr) in reversed(list(zip(layers, inputs, rules))):
        t = L['type']
        if t == 'dense':
            R = dense_lrp(xin.reshape(xin.shape[0], -1), L['W'], L.get('b'), R, r, **pr)
            R = R.reshape(xin.shape)
        elif t == 'conv':
            R = conv_lrp(xin, L['W'], L.get('b'), R, L.get('stride', 1),
                         L.get('padding', 'VALID'), r, **pr)
        elif t == 'maxpool':
            R = maxpool_lrp(xin, R, L['k'], L.get('s'), L.get('padding', 'VALID'), r, **pr)
        elif t == 'avgpool':
            R = avgpool_lrp(xin, R, L['k'], L.get('s'), L.get('padding', 'VALID'), r, **pr)
        elif t == 'flatten':
            R = R.reshape(xin.shape)
        else:
            raise ValueError('unknown layer type %r' % (t,))
    return R


# ---------------------------------------------------------------------------
# Self-check (not a test file)
# ---------------------------------------------------------------------------

if __name__ == '__main__':
    rng = np.random.default_rng(0)

    # conv with a 1x1 image equals dense (C inputs, K outputs)
    x = rng.normal(size=(3, 1, 1, 5))
    W = rng.normal(size=(1, 1, 5, 4))
    b = rng.normal(size=4)
    R = rng.normal(size=(3, 1, 1, 4))
    for r, pr in [('simple', {}), ('epsilon', {'epsilon': 0.1}), ('flat', {}), ('ww', {}),
                  ('alphabeta', {'alpha': 2}), ('gamma', {}), ('zplus', {}),
                  ('zbox', {'low': -1.0, 'high': 1.0})]:
        for pad in ('VALID', 'SAME'):
            a = conv_lrp(x, W, b, R, 1, pad, r, **pr)[:, 0, 0, :]
            d = dense_lrp(x[:, 0, 0, :], W[0, 0], b, R[:, 0, 0, :], r, **pr)
            assert np.allclose(a, d), (r, pad)
    assert np.allclose(conv_forward(x, W, b, 1, 'SAME')[:, 0, 0], dense_forward(x[:, 0, 0], W[0, 0], b))

    # simple rule, no bias: conservation (dense and conv, VALID and SAME, strided)
    xd = rng.normal(size=(4, 7))
    Wd = rng.normal(size=(7, 3))
    Rd = rng.normal(size=(4, 3))
    assert np.allclose(dense_lrp(xd, Wd, None, Rd, 'simple').sum(1), Rd.sum(1))
    xc = rng.normal(size=(2, 6, 7, 3))
    Wc = rng.normal(size=(3, 3, 3, 4))
    for st, pad in [(1, 'VALID'), (1, 'SAME'), (2, 'SAME'), ((2, 1), 'VALID')]:
        y = conv_forward(xc, Wc, None, st, pad)
        Rc = rng.normal(size=y.shape)
        assert np.allclose(conv_lrp(xc, Wc, None, Rc, st, pad, 'simple').sum((1, 2, 3)),
                           Rc.sum((1, 2, 3))), (st, pad)
        # flat / ww also conserve (padding excluded)
        for r in ('flat', 'ww'):
            assert np.allclose(conv_lrp(xc, Wc, None, Rc, st, pad, r).sum((1, 2, 3)),
                               Rc.sum((1, 2, 3))), (r, st, pad)

    # max pooling, winner takes all, conserves; avg pooling conserves too
    xp = rng.normal(size=(2, 5, 5, 3))
    for k, s, pad in [(2, 2, 'VALID'), (3, 2, 'SAME'), (2, 1, 'SAME')]:
        y = maxpool_forward(xp, k, s, pad)
        Rp = rng.normal(size=y.shape)
        for r in ('simple', 'flat'):
            assert np.allclose(maxpool_lrp(xp, Rp, k, s, pad, r).sum((1, 2, 3)), Rp.sum((1, 2, 3)))
            assert np.allclose(avgpool_lrp(xp, Rp, k, s, pad, r).sum((1, 2, 3)), Rp.sum((1, 2, 3)))
    # winner-takes-all places relevance on the argmax
    Rm = maxpool_lrp(xp, np.ones((2, 2, 2, 3)), 2, 2, 'VALID')
    assert np.allclose((Rm * xp).sum((1, 2, 3)), maxpool_forward(xp, 2, 2).sum((1, 2, 3)))

    # simple rule on a bias-free relu dense stack == gradient x input (R = output)
    W1, W2, W3 = rng.normal(size=(6, 8)), rng.normal(size=(8, 5)), rng.normal(size=(5, 2))
    layers = [{'type': 'dense', 'W': W1, 'b': None, 'act': 'relu'},
              {'type': 'dense', 'W': W2, 'b': None, 'act': 'relu'},
              {'type': 'dense', 'W': W3, 'b': None, 'act': 'linear'}]
    x0 = rng.normal(size=(4, 6))
    out = network_forward(x0, layers)
    Rl = network_lrp(x0, layers, out, 'simple')
    z1 = x0 @ W1
    a1 = np.maximum(z1, 0)
    z2 = a1 @ W2
    g2 = (np.ones((4, 2)) @ W3.T) * (z2 > 0)   # d sum(out) / d z2
    g1 = (g2 @ W2.T) * (z1 > 0)                # d sum(out) / d z1
    grad = g1 @ W1.T                           # d sum(out) / d x
    assert np.allclose(Rl, grad * x0)
    # list-of-rules form gives the same
    assert np.allclose(network_lrp(x0, layers, out, [('simple', {})] * 3), Rl)

    # small conv net runs end to end and conserves with simple / no bias / relu-free
    cl = [{'type': 'conv', 'W': rng.normal(size=(3, 3, 2, 4)), 'b': None, 'stride': 1,
           'padding': 'SAME', 'act': 'linear'},
          {'type': 'maxpool', 'k': 2, 's': 2, 'padding': 'VALID'},
          {'type': 'avgpool', 'k': 2, 'padding': 'SAME'},
          {'type': 'flatten'},
          {'type': 'dense', 'W': rng.normal(size=(16, 3)), 'b': None, 'act': 'linear'}]
    xi = rng.normal(size=(2, 8, 8, 2))
    oc = network_forward(xi, cl)
    assert oc.shape == (2, 3)
    Rc = network_lrp(xi, cl, oc, 'simple')
    assert Rc.shape == xi.shape and np.allclose(Rc.sum((1, 2, 3)), oc.sum(1))

    print('reference_numpy self-check passed')
