"""A numpy reference of LRP for recurrent layers after Arras et al. 2017 ("Explaining recurrent
neural network predictions in sentiment analysis"), in float64, one sample and one time step at a time.

* linear parts ``z = W x + U h + b``: the epsilon rule, ``R_x = x ⊙ W (R / stab(z))``,
  ``R_h = h ⊙ U (R / stab(z))`` with ``stab(z) = z + eps · sign0(z)``;
* gate ⊙ signal: all relevance to the signal (gates are constants);
* sums of two terms (``c = f c_prev + i g``, GRU's ``h = z h_prev + (1 - z) h̃``): ``R_a = a / stab(a + b) R``;
* tanh: relevance passes;
* masked steps copy the state: the input gets 0, the state's relevance passes.
"""

from __future__ import annotations

import numpy as np

TINY = 1e-12


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def stab(z, eps):
    eps = max(eps, TINY)
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def weights(layer):
    cell = layer.cell
    W = np.asarray(cell.kernel, np.float64)
    U = np.asarray(cell.recurrent_kernel, np.float64)
    b = np.asarray(cell.bias, np.float64) if cell.use_bias else None
    return W, U, b


def _step(kind, W, U, b, x, h, c, u, reset_after):
    """One step: new (h, c) and the values relevance needs."""
    if kind == "simple":
        z = x @ W + h @ U + (0 if b is None else b)
        return np.tanh(z), None, {"z": z}
    if kind == "lstm":
        z = x @ W + h @ U + (0 if b is None else b)
        i, f, g, o = sigmoid(z[:u]), sigmoid(z[u:2 * u]), np.tanh(z[2 * u:3 * u]), sigmoid(z[3 * u:])
        keep, new = f * c, i * g
        c2 = keep + new
        return o * np.tanh(c2), c2, {"zc": z[2 * u:3 * u], "keep": keep, "new": new, "c": c2}
    # gru
    if b is None:
        b_in, b_rec = np.zeros(3 * u), np.zeros(3 * u)
    elif reset_after:
        b_in, b_rec = b[0], b[1]
    else:
        b_in, b_rec = b, np.zeros(3 * u)
    mx = x @ W + b_in
    if reset_after:
        inner = h @ U + b_rec
    else:
        inner = np.concatenate([h @ U[:, :2 * u], np.zeros(u)])
    zg = sigmoid(mx[:u] + inner[:u])
    r = sigmoid(mx[u:2 * u] + inner[u:2 * u])
    if reset_after:
        pre = mx[2 * u:] + r * inner[2 * u:]
    else:
        pre = mx[2 * u:] + (r * h) @ U[:, 2 * u:]
    hh = np.tanh(pre)
    keep, new = zg * h, (1 - zg) * hh
    return keep + new, None, {"r": r, "pre": pre, "keep": keep, "new": new, "h": keep + new}


def rnn_lrp(kind, layer, x, R_out, eps, mask=None, reset_after=True):
    """One sample ``x`` (T, F) through ``layer``'s weights (SimpleRNN with tanh, LSTM, GRU with sigmoid
    gates). ``R_out``: relevance of the outputs (T, U) for ``return_sequences``, else of the last
    output (U,). Returns ``(outputs, R_x)`` in the layer's output order (reversed for go_backwards)."""
    W, U, b = weights(layer)
    u = U.shape[0]
    T = x.shape[0]
    order = list(range(T))[::-1] if layer.go_backwards else list(range(T))
    m = np.ones(T, bool) if mask is None else np.asarray(mask, bool)
    h, c = np.zeros(u), np.zeros(u)
    outs, recs = [], []
    for t in order:
        h2, c2, rec = _step(kind, W, U, b, x[t], h, c, u, reset_after)
        recs.append((t, h, c, rec))
        if m[t]:
            h, c = h2, (c2 if c2 is not None else c)
        outs.append(h)
    outs = np.array(outs)
    R_x = np.zeros_like(x)
    seq = layer.return_sequences
    R_h = np.zeros(u) if seq else np.array(R_out, np.float64)
    R_c = np.zeros(u)
    for k in reversed(range(T)):
        t, h_prev, _, rec = recs[k]
        if seq:
            R_h = R_h + R_out[k]
        if not m[t]:
            continue  # the state is copied: its relevance passes, the input gets none
        if kind == "simple":
            s = R_h / stab(rec["z"], eps)
            R_x[t] = x[t] * (W @ s)
            R_h = h_prev * (U @ s)
        elif kind == "lstm":
            Rc = R_c + R_h
            sc = Rc / stab(rec["c"], eps)
            R_cp, R_g = rec["keep"] * sc, rec["new"] * sc
            s = R_g / stab(rec["zc"], eps)
            R_x[t] = x[t] * (W[:, 2 * u:3 * u] @ s)
            R_h = h_prev * (U[:, 2 * u:3 * u] @ s)
            R_c = R_cp
        else:
            sh = R_h / stab(rec["h"], eps)
            R_keep, R_new = rec["keep"] * sh, rec["new"] * sh
            s = R_new / stab(rec["pre"], eps)
            R_x[t] = x[t] * (W[:, 2 * u:] @ s)
            if reset_after:
                R_h = h_prev * (U[:, 2 * u:] @ (rec["r"] * s)) + R_keep
            else:
                R_h = h_prev * rec["r"] * (U[:, 2 * u:] @ s) + R_keep
    return outs, R_x
