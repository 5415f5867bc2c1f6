"""A numpy reference of LRP for recurrent layers after Arras et al. 2017 ("Explaining recurrent
neural network predictions in sentiment analysis"), in float64, one sample and one time step at a time.

* linear parts ``z = W x + U h + b``: the epsilon rule, ``R_x = x ⊙ W (R / stab(z))``,
  ``R_h = h ⊙ U (R / stab(z))`` with ``stab(z) = z + eps · sign0(z)``;
* gate ⊙ signal: all relevance to the signal (gates are constants);
* sums of two terms (``c = f c_prev + i g``, GRU's ``h = z h_prev + (1 - z) h̃``): ``R_a = a / stab(a + b) R``;
* tanh: relevance passes;
* masked steps copy the state: the input gets 0, the state's relevance passes.

Other rules for the gate ⊙ signal products (Arras et al. 2019, "Evaluating recurrent neural network
explanations", Sec. 3), ``R_gate = α_g R``, ``R_signal = α_s R`` with the activated values ``g``, ``s``:

* ``'gate'`` (LRP-all): ``α_g = 0``, ``α_s = 1``;
* ``'half'`` (LRP-half): ``α_g = α_s = 1/2``;
* ``'proportional'`` (LRP-prop): ``α_g = g / stab(g + s)``, ``α_s = s / stab(g + s)``;
* ``'proportional_abs'`` (LRP-abs): ``α_g = |g| / (|g| + |s| + ε)``, ``α_s = |s| / (|g| + |s| + ε)``.

A gate's relevance passes its sigmoid to its pre-activation ``W_g x + U_g h + b_g`` and on by the
epsilon rule (GRU's ``1 - z = σ(-a_z)``: through ``-W_z x - U_z h - b_z``). GRU's reset product:
``r ⊙ h`` in front of ``U_h`` (reset_after=False), or ``q = r ⊙ (U_h h + b_r)`` as its own node
(reset_after=True) with ``U_h h + b_r`` explained by the epsilon rule; under ``'gate'`` the reset
gate stays a constant inside the candidate's map (Arras et al. 2017's reading).
"""

from __future__ import annotations

import numpy as np

TINY = 1e-12


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def stab(z, eps):
    eps = max(eps, TINY)
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def shares(rule, g, s, eps=TINY):
    """``(α_gate, α_signal)`` of a gate ⊙ signal product (Arras et al. 2019)."""
    if rule == "gate":
        return np.zeros_like(g), np.ones_like(s)
    if rule == "half":
        return np.full_like(g, 0.5), np.full_like(s, 0.5)
    if rule == "proportional":
        d = stab(g + s, eps)
        return g / d, s / d
    if rule == "proportional_abs":
        d = np.abs(g) + np.abs(s) + max(eps, TINY)
        return np.abs(g) / d, np.abs(s) / d
    raise ValueError(rule)


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
        return o * np.tanh(c2), c2, {"z": z, "i": i, "f": f, "g": g, "o": o, "zc": z[2 * u:3 * u], "keep": keep,
                                     "new": new, "c": c2}
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
    a_z = mx[:u] + inner[:u]
    a_r = mx[u:2 * u] + inner[u:2 * u]
    return keep + new, None, {"r": r, "pre": pre, "keep": keep, "new": new, "h": keep + new, "zg": zg, "hh": hh,
                              "a_z": a_z, "a_r": a_r, "rh": inner[2 * u:], "b_in": b_in, "b_rec": b_rec}


def rnn_lrp(kind, layer, x, R_out, eps, mask=None, reset_after=True, gates="gate", gate_eps=TINY):
    """One sample ``x`` (T, F) through ``layer``'s weights (SimpleRNN with tanh, LSTM, GRU with sigmoid
    gates). ``R_out``: relevance of the outputs (T, U) for ``return_sequences``, else of the last
    output (U,). ``gates``: the rule of the gate ⊙ signal products (``gate_eps``: its stabiliser).
    Returns ``(outputs, R_x)`` in the layer's output order (reversed for go_backwards)."""
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
        t, h_prev, c_prev, rec = recs[k]
        if seq:
            R_h = R_h + R_out[k]
        if not m[t]:
            continue  # the state is copied: its relevance passes, the input gets none
        if kind == "simple":
            s = R_h / stab(rec["z"], eps)
            R_x[t] = x[t] * (W @ s)
            R_h = h_prev * (U @ s)
        elif kind == "lstm":
            a_o, a_tc = shares(gates, rec["o"], np.tanh(rec["c"]), gate_eps)
            R_o, Rc = a_o * R_h, R_c + a_tc * R_h
            sc = Rc / stab(rec["c"], eps)
            R_keep, R_new = rec["keep"] * sc, rec["new"] * sc
            a_f, a_cp = shares(gates, rec["f"], c_prev, gate_eps)
            a_i, a_g = shares(gates, rec["i"], rec["g"], gate_eps)
            R_z = np.concatenate([a_i * R_new, a_f * R_keep, a_g * R_new, R_o])
            s = R_z / stab(rec["z"], eps)  # sigmoid and tanh pass: each block by the epsilon rule
            R_x[t] = x[t] * (W @ s)
            R_h = h_prev * (U @ s)
            R_c = a_cp * R_keep
        else:
            sh = R_h / stab(rec["h"], eps)
            R_keep, R_new = rec["keep"] * sh, rec["new"] * sh
            if gates == "gate":
                s = R_new / stab(rec["pre"], eps)
                R_x[t] = x[t] * (W[:, 2 * u:] @ s)
                if reset_after:
                    R_h = h_prev * (U[:, 2 * u:] @ (rec["r"] * s)) + R_keep
                else:
                    R_h = h_prev * rec["r"] * (U[:, 2 * u:] @ s) + R_keep
                continue
            a_zk, a_hp = shares(gates, rec["zg"], h_prev, gate_eps)
            a_zn, a_hh = shares(gates, 1 - rec["zg"], rec["hh"], gate_eps)
            s = a_hh * R_new / stab(rec["pre"], eps)
            R_xt = x[t] * (W[:, 2 * u:] @ s)
            r = rec["r"]
            if reset_after:
                q = r * rec["rh"]
                R_q = q * s
                a_r, a_rh = shares(gates, r, rec["rh"], gate_eps)
                R_hs = h_prev * (U[:, 2 * u:] @ (a_rh * R_q / stab(rec["rh"], eps)))
                R_r = a_r * R_q
            else:
                R_prod = (r * h_prev) * (U[:, 2 * u:] @ s)
                a_r, a_hs = shares(gates, r, h_prev, gate_eps)
                R_hs, R_r = a_hs * R_prod, a_r * R_prod
            # gates: z (from z ⊙ h_prev), 1 - z = σ(-a_z) (from (1 - z) ⊙ h~), r
            s_z = a_zk * R_keep / stab(rec["a_z"], eps)
            s_nz = a_zn * R_new / stab(-rec["a_z"], eps)
            s_r = R_r / stab(rec["a_r"], eps)
            R_xt = R_xt + x[t] * (W[:, :u] @ s_z + (-W[:, :u]) @ s_nz + W[:, u:2 * u] @ s_r)
            R_hg = h_prev * (U[:, :u] @ s_z + (-U[:, :u]) @ s_nz + U[:, u:2 * u] @ s_r)
            R_x[t] = R_xt
            R_h = R_hs + a_hp * R_keep + R_hg
    return outs, R_x
