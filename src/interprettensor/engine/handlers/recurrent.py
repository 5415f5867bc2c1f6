"""Recurrent layers: ``SimpleRNN``, ``LSTM``, ``GRU`` and ``Bidirectional`` explained after Arras et al. 2017
("Explaining recurrent neural network predictions in sentiment analysis", WASSA 2017).

Each time step is taken apart into the operations LRP has rules for:

* the linear parts of a cell, ``W x_t + U h_{t-1} + b`` (the candidate of an LSTM, the candidate of a
  GRU, the pre-activation of a SimpleRNN), are a :class:`~interprettensor.engine.linear.LinearMap` of
  the two inputs ``[x_t, h_{t-1}]`` with parameters ``{kernel, recurrent_kernel, bias}``, under the
  rule the composite assigns to the layer (category ``weighted``, kind ``'dense'``);
* gate x signal products give all of the relevance to the signal by default ("signal-take-all", the
  gates are constants): ``h = o * tanh(c)`` passes all of ``h``'s relevance to ``c``, ``i * g`` to
  ``g``; a GRU's reset gate ``r`` is held constant inside the candidate's linear map
  (``W x + r ⊙ (U h + b_r)`` or ``W x + U (r ⊙ h)``), so the relevance reaches ``h`` through ``U``;
* another product rule (a :class:`~interprettensor.engine.operation_rules.CellRule`'s ``gates``, or
  the composite's ``gates=``: ``'half'``, ``'proportional'``, ``'proportional_abs'``, Arras et al.
  2019) gives each gate its share of the product's relevance; a gate's relevance passes its sigmoid
  and goes to ``[x_t, h_{t-1}]`` through the gate's own linear map under the layer's rule (GRU: the
  gate ``1 - z`` through the map ``-(W_z x + U_z h + b_z)``; the reset product is ``r ⊙ h_{t-1}`` in
  front of ``U`` (``reset_after=False``), or ``r ⊙ (U h + b_r)`` taken as its own node, with
  ``U h + b_r`` a linear map of ``h``);
* the sums ``c_t = f ⊙ c_{t-1} + i ⊙ g`` (LSTM) and ``h_t = z ⊙ h_{t-1} + (1 - z) ⊙ h̃`` (GRU) split
  in proportion to their two summands with the layer rule's stabiliser (``rule.merge_rule()``);
* the activations (tanh) pass relevance unchanged.

The forward pass and the relevance pass are each one scan (``backend.scan``) over the time steps, batched over
the samples. Masked time steps (a mask from ``Embedding(mask_zero=True)`` or ``Masking``) copy the
state, as Keras does: their input gets zero relevance and the state's relevance passes through. The
relevance that reaches the initial (zero) state is dropped.

``Bidirectional`` runs both directions with the same code; ``concat`` routes the relevance, ``sum`` and
``ave`` split it in proportion to the two directions (``rule.merge_rule()``), ``mul`` is refused.
Refused with an :class:`ExplainError` naming the layer: ``stateful=True``, ``keras.layers.RNN`` with a
cell other than Keras' SimpleRNN/LSTM/GRU cells (custom, stacked, convolutional), an initial state
passed as an input.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from .. import backend, dtypes
from ..backend import Tensor
from ..errors import ExplainError
from ..linear import LinearMap, linear_relevance, materialize
from ..operation_rules import Gate, ProductRule
from ..rules import LinearRule, constant
from .base import DEFAULT_PASS, WEIGHTED, Handler, check_linear_rule

__all__ = ["BidirectionalHandler", "MaskingHandler", "RecurrentHandler"]

L = keras.layers
_CELLS = {L.SimpleRNNCell: "simple", L.LSTMCell: "lstm", L.GRUCell: "gru"}


def _cell_kind(layer: Any, name: str) -> str:
    cell = getattr(layer, "cell", None)
    kind = _CELLS.get(type(cell))
    if kind is None:
        what = type(cell).__name__ if cell is not None else "no cell"
        raise ExplainError(f"layer {name!r} ({type(layer).__name__}) cannot be explained: its cell {what} is not "
                           f"supported (only SimpleRNN, LSTM and GRU cells are: keras.layers.RNN with a custom cell, "
                           f"stacked cells and convolutional LSTMs have no LRP handler)")
    return kind


def _check_options(layer: Any, name: str) -> None:
    if getattr(layer, "stateful", False):
        raise ExplainError(f"layer {name!r} ({type(layer).__name__}) has stateful=True, which is not supported: "
                           f"explain a copy of the model built with stateful=False")


def _split_inputs(xs: Sequence[Tensor], layer: Any, name: str) -> tuple[Tensor, Tensor | None]:
    x = xs[0]
    mask = None
    for extra in xs[1:]:
        if dtypes.name(extra.dtype) == "bool":
            mask = extra
        else:
            raise ExplainError(f"layer {name!r} ({type(layer).__name__}) is called with an initial state or "
                               f"another tensor input besides its sequence and mask; this is not supported")
    if mask is None:
        mask = getattr(x, "_keras_mask", None)  # Sequential: the mask travels on the tensor
        if mask is not None:
            mask = ops.cast(mask, "bool")
    return x, mask


class _Cell:
    """One cell's step, its parameters cast to the computation's dtype."""

    def __init__(self, layer: Any, dtype: Any):
        cell = layer.cell
        dtype = dtypes.name(dtype)
        self.kind = _CELLS[type(cell)]
        self.units = cell.units
        self.act = cell.activation
        self.rec_act = getattr(cell, "recurrent_activation", None)
        self.W = ops.cast(ops.convert_to_tensor(cell.kernel), dtype)
        self.U = ops.cast(ops.convert_to_tensor(cell.recurrent_kernel), dtype)
        self.b = ops.cast(ops.convert_to_tensor(cell.bias), dtype) if cell.use_bias else None
        self.reset_after = getattr(cell, "reset_after", False)
        self.dtype = dtype
        u = self.units
        b = self.b
        if self.kind == "gru":
            if b is None:
                self.b_in, self.b_rec = ops.zeros((3 * u,), dtype), ops.zeros((3 * u,), dtype)
            elif self.reset_after:
                self.b_in, self.b_rec = b[0], b[1]
            else:
                self.b_in, self.b_rec = b, ops.zeros((3 * u,), dtype)

    def n_states(self) -> int:
        return 2 if self.kind == "lstm" else 1

    # ------------------------------------------------------------------ forward
    def step(self, x: Tensor, states: list) -> tuple[list, dict]:
        """New states and what the relevance pass needs of this step."""
        u = self.units
        h = states[0]
        if self.kind == "simple":
            z = ops.matmul(x, self.W) + ops.matmul(h, self.U)
            if self.b is not None:
                z = z + self.b
            return [self.act(z)], {"z": z}
        if self.kind == "lstm":
            c = states[1]
            z = ops.matmul(x, self.W) + ops.matmul(h, self.U)
            if self.b is not None:
                z = z + self.b
            zi, zf, zc, zo = ops.split(z, 4, axis=-1)
            i, f, o = self.rec_act(zi), self.rec_act(zf), self.rec_act(zo)
            g = self.act(zc)
            keep, new = f * c, i * g
            c_new = keep + new
            h_new = o * self.act(c_new)
            return [h_new, c_new], {"zc": zc, "keep": keep, "new": new, "c": c_new}
        # GRU
        mx = ops.matmul(x, self.W) + self.b_in
        xz, xr, xh = ops.split(mx, 3, axis=-1)
        if self.reset_after:
            inner = ops.matmul(h, self.U) + self.b_rec
            rz, rr, rh = ops.split(inner, 3, axis=-1)
        else:
            inner = ops.matmul(h, self.U[:, :2 * u])
            rz, rr = ops.split(inner, 2, axis=-1)
        zg = self.rec_act(xz + rz)
        r = self.rec_act(xr + rr)
        if self.reset_after:
            pre = xh + r * rh
        else:
            pre = xh + ops.matmul(r * h, self.U[:, 2 * u:])
        hh = self.act(pre)
        keep, new = zg * h, (1 - zg) * hh
        h_new = keep + new
        return [h_new], {"r": r, "pre": pre, "keep": keep, "new": new, "h": h_new}

    # ------------------------------------------------------------------ linear maps of a step
    def candidate_map(self, rec: dict) -> LinearMap:
        """The linear map ``[x_t, h_{t-1}] -> pre-activation`` that carries the signal."""
        u = self.units
        if self.kind == "simple":
            params = {"kernel": self.W, "recurrent_kernel": self.U}
            if self.b is not None:
                params["bias"] = self.b
            return LinearMap(lambda xs, p: ops.matmul(xs[0], p["kernel"]) + ops.matmul(xs[1], p["recurrent_kernel"])
                             + p.get("bias", 0.0), params)
        if self.kind == "lstm":
            params = {"kernel": self.W[:, 2 * u:3 * u], "recurrent_kernel": self.U[:, 2 * u:3 * u]}
            if self.b is not None:
                params["bias"] = self.b[2 * u:3 * u]
            return LinearMap(lambda xs, p: ops.matmul(xs[0], p["kernel"]) + ops.matmul(xs[1], p["recurrent_kernel"])
                             + p.get("bias", 0.0), params)
        r = rec["r"]  # the reset gate: a constant (r >= 0 for sigmoid-like gates)
        params = {"kernel": self.W[:, 2 * u:], "recurrent_kernel": self.U[:, 2 * u:]}
        if self.reset_after:
            if self.b is not None:
                params["bias"] = self.b_in[2 * u:] + r * self.b_rec[2 * u:]
            fn = lambda xs, p: (ops.matmul(xs[0], p["kernel"]) + r * ops.matmul(xs[1], p["recurrent_kernel"])
                                + p.get("bias", 0.0))
        else:
            if self.b is not None:
                params["bias"] = self.b_in[2 * u:]
            fn = lambda xs, p: (ops.matmul(xs[0], p["kernel"]) + ops.matmul(r * xs[1], p["recurrent_kernel"])
                                + p.get("bias", 0.0))
        return LinearMap(fn, params, bias_axis=None)

    def gate_map(self) -> LinearMap:
        """The linear map ``[x_t, h_{t-1}] ->`` the gates' pre-activations: LSTM all four blocks
        ``[z_i, z_f, z_c, z_o]``; GRU ``[a_z, -a_z, a_r]`` (the gates ``z``, ``1 - z = σ(-a_z)``, ``r``)."""
        u = self.units
        if self.kind == "lstm":
            W, U, b = self.W, self.U, self.b
        else:
            Wz, Wr = self.W[:, :u], self.W[:, u:2 * u]
            Uz, Ur = self.U[:, :u], self.U[:, u:2 * u]
            W, U = ops.concatenate([Wz, -Wz, Wr], 1), ops.concatenate([Uz, -Uz, Ur], 1)
            b = None
            if self.b is not None:
                bz = self.b_in[:u] + self.b_rec[:u]
                b = ops.concatenate([bz, -bz, self.b_in[u:2 * u] + self.b_rec[u:2 * u]], 0)
        params = {"kernel": W, "recurrent_kernel": U}
        if b is not None:
            params["bias"] = b
        return LinearMap(lambda xs, p: ops.matmul(xs[0], p["kernel"]) + ops.matmul(xs[1], p["recurrent_kernel"])
                         + p.get("bias", 0.0), params)

    def gru_parts(self, x: Tensor, h: Tensor) -> dict:
        """A GRU step's gates and recurrent candidate term, recomputed from ``x_t`` and ``h_{t-1}``."""
        u = self.units
        mx = ops.matmul(x, self.W) + self.b_in
        inner = ops.matmul(h, self.U) + self.b_rec
        return {"z": self.rec_act(mx[:, :u] + inner[:, :u]), "r": self.rec_act(mx[:, u:2 * u] + inner[:, u:2 * u]),
                "rh": inner[:, 2 * u:]}

    def reset_maps(self) -> tuple[LinearMap, LinearMap]:
        """``reset_after``: ``[x_t, q] -> W_h x + b + q`` with the reset product ``q = r ⊙ (U_h h + b_r)``,
        and ``h -> U_h h + b_r``."""
        u = self.units
        pa = {"kernel": self.W[:, 2 * u:], "recurrent_kernel": ops.ones((u,), self.dtype)}
        pb = {"recurrent_kernel": self.U[:, 2 * u:]}
        if self.b is not None:
            pa["bias"], pb["bias"] = self.b_in[2 * u:], self.b_rec[2 * u:]
        a = LinearMap(lambda xs, p: ops.matmul(xs[0], p["kernel"]) + xs[1] * p["recurrent_kernel"] + p.get("bias", 0.0),
                      pa)
        b = LinearMap(lambda xs, p: ops.matmul(xs[0], p["recurrent_kernel"]) + p.get("bias", 0.0), pb)
        return a, b


def cell_rules(rule: Any, step: Any) -> tuple[LinearRule, ProductRule]:
    """The linear rule and the gate product rule of a recurrent layer's rule (a linear rule: the gates
    are signal-take-all)."""
    pair = rule.cell_rules()
    if pair is None:
        if rule.passes_through:
            raise ExplainError(f"layer {step.name!r} ({step.type_name}) cannot use rule 'pass'")
        check_linear_rule(rule, step)  # the error naming the layer
    linear, gates = pair
    return check_linear_rule(linear, step), (Gate() if gates is None else gates)


def _split(gates: ProductRule, gate: Tensor, signal: Tensor, R: Tensor) -> tuple[Tensor, Tensor]:
    """``R`` of the product ``gate ⊙ signal`` split by the product rule: ``(R_gate, R_signal)``."""
    out = []
    for a in gates.shares([gate, signal], [False, True]):
        out.append(R * (ops.cast(a, R.dtype) if ops.is_tensor(a) else constant(a, R.dtype)))
    return out[0], out[1]


_SUM = LinearMap(lambda xs, p: xs[0] + xs[1], {}, bias_axis=None)


class RecurrentHandler(Handler):
    """``SimpleRNN``, ``LSTM`` and ``GRU`` (see the module docstring). Outputs: the sequence or the
    last output, then the final states with ``return_state``."""

    category = WEIGHTED
    kind = "dense"
    #: has gate ⊙ signal products: takes a CellRule (the composite's ``gates=``)
    gated = True
    #: z^B cannot apply: its bounds hold for the input x_t, not for the recurrent state h_{t-1}
    accepts_box = False

    def forward(self, layer, xs, step, options=DEFAULT_PASS):
        _check_options(layer, step.name)
        _cell_kind(layer, step.name)
        x, mask = _split_inputs(xs, layer, step.name)
        cell = _Cell(layer, x.dtype)
        seq = ops.transpose(x, (1, 0, 2))  # (T, B, F)
        batch = ops.shape(x)[0]
        m = None if mask is None else ops.transpose(mask, (1, 0))
        if layer.go_backwards:
            seq = ops.flip(seq, 0)
            m = None if m is None else ops.flip(m, 0)
        zeros = ops.zeros((batch, cell.units), x.dtype)
        init_states = [zeros] * cell.n_states()
        zero_out = bool(getattr(layer, "zero_output_for_mask", False))

        def body(acc, elem):
            states, prev_out = acc["states"], acc["out"]
            x_t, m_t = elem
            new_states, rec = cell.step(x_t, states)
            out = new_states[0]
            if m is not None:
                keep = ops.expand_dims(m_t, -1)
                new_states = [ops.where(keep, s, p) for s, p in zip(new_states, states)]
                out = ops.where(keep, out, ops.zeros_like(out) if zero_out else prev_out)
            return {"states": new_states, "out": out, "prev": states, "rec": rec}

        m_elems = m if m is not None else ops.ones(ops.shape(seq)[:2], "bool")
        _, rec0 = cell.step(seq[0], init_states)  # the shapes of a step's record (for the initializer)
        init = {"states": init_states, "out": zeros, "prev": init_states,
                "rec": {k: ops.zeros_like(v) for k, v in rec0.items()}}
        acc = backend.scan(body, (seq, m_elems), init)
        outs_seq = acc["out"]  # (T, B, U)
        final_states = [s[-1] for s in acc["states"]]
        if layer.return_sequences:
            y = ops.transpose(outs_seq, (1, 0, 2))
        else:
            y = outs_seq[-1]
        outputs = [y] + (final_states if layer.return_state else [])
        state = {"seq": seq, "mask": m, "prev": acc["prev"], "rec": acc["rec"], "zero_out": zero_out}
        return outputs, state

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        rule, gates = cell_rules(rule, step)
        take_all = gates.signal_take_all  # signal-take-all: the gates get no relevance
        merge = rule.merge_rule()
        seq = state["seq"]
        cell = _Cell(layer, seq.dtype)
        dtype = seq.dtype
        Rs = [ops.cast(materialize(r), dtype) for r in Rs]
        T, batch = ops.shape(seq)[:2]
        zeros = ops.zeros((batch, cell.units), dtype)
        R_y = Rs[0]
        if layer.return_sequences:
            R_out = ops.transpose(ops.reshape(R_y, ops.shape(ys[0])), (1, 0, 2))
            R_h0 = zeros
        else:
            R_out = ops.zeros((T, batch, cell.units), dtype)
            R_h0 = ops.reshape(R_y, ops.shape(zeros))
        R_c0 = zeros
        if layer.return_state:
            R_h0 = R_h0 + Rs[1]
            if cell.kind == "lstm":
                R_c0 = R_c0 + Rs[2]
        m = state["mask"]
        m_elems = m if m is not None else ops.ones(ops.shape(seq)[:2], "bool")
        zero_out = state["zero_out"]

        def lstm_step(x_t, h_prev, c_prev, R_h, R_c, rec):
            if take_all:
                R_ct = R_c + R_h  # h = o * tanh(c): the gate o is a constant, tanh passes
                R_cp, R_g = linear_relevance(_SUM, [rec["keep"], rec["new"]], R_ct, merge, rec["c"])
                # i * g: all to the signal g; g = tanh(zc) passes
                return (*linear_relevance(cell.candidate_map(rec), [x_t, h_prev], R_g, rule, rec["zc"]), R_cp)
            gm = cell.gate_map()
            z = gm([x_t, h_prev])
            zi, zf, zc, zo = ops.split(z, 4, axis=-1)
            R_o, R_tc = _split(gates, cell.rec_act(zo), cell.act(rec["c"]), R_h)
            R_keep, R_new = linear_relevance(_SUM, [rec["keep"], rec["new"]], R_c + R_tc, merge, rec["c"])
            R_f, R_cp = _split(gates, cell.rec_act(zf), c_prev, R_keep)
            R_i, R_g = _split(gates, cell.rec_act(zi), cell.act(zc), R_new)
            R_x, R_hp = linear_relevance(gm, [x_t, h_prev], ops.concatenate([R_i, R_f, R_g, R_o], -1), rule, z)
            return R_x, R_hp, R_cp

        def gru_step(x_t, h_prev, R_h, rec):
            R_keep, R_new = linear_relevance(_SUM, [rec["keep"], rec["new"]], R_h, merge, rec["h"])
            if take_all:
                # z * h_prev and (1 - z) * h~: gates constant; h~ = tanh(pre) passes
                R_x, R_hp = linear_relevance(cell.candidate_map(rec), [x_t, h_prev], R_new, rule, rec["pre"])
                return R_x, R_hp + R_keep
            parts = cell.gru_parts(x_t, h_prev)
            zg, r = parts["z"], parts["r"]
            R_zk, R_hp = _split(gates, zg, h_prev, R_keep)
            R_zn, R_hh = _split(gates, 1 - zg, cell.act(rec["pre"]), R_new)
            if cell.reset_after:  # the reset product q = r ⊙ (U_h h + b_r) as its own node
                to_pre, to_rh = cell.reset_maps()
                q = r * parts["rh"]
                R_x, R_q = linear_relevance(to_pre, [x_t, q], R_hh, rule, rec["pre"])
                R_r, R_rh = _split(gates, r, parts["rh"], R_q)
                R_hp = R_hp + linear_relevance(to_rh, [h_prev], R_rh, rule, parts["rh"])[0]
            else:  # the reset product r ⊙ h_prev in front of U_h: its relevance is h_prev's with r constant
                R_x, R_prod = linear_relevance(cell.candidate_map(rec), [x_t, h_prev], R_hh, rule, rec["pre"])
                R_r, R_hs = _split(gates, r, h_prev, R_prod)
                R_hp = R_hp + R_hs
            Rg_x, Rg_h = linear_relevance(cell.gate_map(), [x_t, h_prev], ops.concatenate([R_zk, R_zn, R_r], -1), rule)
            return R_x + Rg_x, R_hp + Rg_h

        def body(acc, elem):
            R_h, R_c = acc["R_h"], acc["R_c"]
            x_t, m_t, R_o, prev, rec = elem
            keep = ops.expand_dims(m_t, -1)
            R_o = ops.where(keep, R_o, ops.zeros_like(R_o)) if zero_out else R_o
            R_h = R_h + R_o
            h_prev = prev[0]
            if cell.kind == "simple":
                R_x, R_hp = linear_relevance(cell.candidate_map(rec), [x_t, h_prev], R_h, rule, rec["z"])
                R_cp = R_c
            elif cell.kind == "lstm":
                R_x, R_hp, R_cp = lstm_step(x_t, h_prev, prev[1], R_h, R_c, rec)
            else:
                R_x, R_hp = gru_step(x_t, h_prev, R_h, rec)
                R_cp = R_c
            # masked steps copy the state: no relevance for the input, the state's passes through
            R_x = ops.where(keep, R_x, ops.zeros_like(R_x))
            R_hp = ops.where(keep, R_hp, R_h)
            R_cp = ops.where(keep, R_cp, R_c)
            return {"R_h": R_hp, "R_c": R_cp, "R_x": R_x}

        init = {"R_h": R_h0, "R_c": R_c0, "R_x": ops.zeros_like(seq[0])}
        acc = backend.scan(body, (seq, m_elems, R_out, state["prev"], state["rec"]), init, reverse=True)
        R_x = acc["R_x"]  # (T, B, F), in the order of the processed sequence
        if layer.go_backwards:
            R_x = ops.flip(R_x, 0)
        R_x = ops.transpose(R_x, (1, 0, 2))
        return [R_x] + [None] * (len(xs) - 1)


class BidirectionalHandler(Handler):
    """``Bidirectional``: both directions run by :class:`RecurrentHandler`; the merge is exact routing
    (``concat``, ``None``) or a sum split in proportion to the two directions with the layer rule's
    stabiliser (``sum``, ``ave``). ``mul`` (a product of two computed tensors) is refused."""

    category = WEIGHTED
    kind = "dense"
    gated = True
    accepts_box = False

    def __init__(self, recurrent: RecurrentHandler):
        self.recurrent = recurrent

    @staticmethod
    def _sub(step: Any, layer: Any) -> Any:
        return types.SimpleNamespace(name=f"{step.name}/{layer.name}", type_name=type(layer).__name__)

    def forward(self, layer, xs, step, options=DEFAULT_PASS):
        if layer.merge_mode not in ("concat", "sum", "ave", None):
            raise ExplainError(f"layer {step.name!r} (Bidirectional) has merge_mode={layer.merge_mode!r}, which is "
                               f"not supported: the product of the two directions has no signal-take-all rule; use "
                               f"'concat', 'sum' or 'ave'")
        fl, bl = layer.forward_layer, layer.backward_layer
        if getattr(layer, "return_state", False) != fl.return_state:
            raise ExplainError(f"layer {step.name!r} (Bidirectional): unsupported return_state configuration")
        ys_f, st_f = self.recurrent.forward(fl, xs, self._sub(step, fl), options)
        ys_b, st_b = self.recurrent.forward(bl, xs, self._sub(step, bl), options)
        y, y_rev = ys_f[0], ys_b[0]
        if layer.return_sequences:
            y_rev = ops.flip(y_rev, 1)
        mode = layer.merge_mode
        if mode == "concat":
            out = [ops.concatenate([y, y_rev], -1)]
        elif mode == "sum":
            out = [y + y_rev]
        elif mode == "ave":
            out = [(y + y_rev) / ops.cast(2, y.dtype)]
        else:
            out = [y, y_rev]
        outputs = out + ys_f[1:] + ys_b[1:]
        return outputs, {"f": (ys_f, st_f), "b": (ys_b, st_b), "y": y, "y_rev": y_rev, "out": out[0]}

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        cell_rule = rule
        rule, _ = cell_rules(rule, step)
        Rs = [materialize(r) for r in Rs]
        mode = layer.merge_mode
        y, y_rev = state["y"], state["y_rev"]
        n_out = 2 if mode is None else 1
        R_out, R_states = Rs[:n_out], Rs[n_out:]
        if mode is None:
            R_f, R_b = R_out
        elif mode == "concat":
            R_f, R_b = ops.split(ops.reshape(R_out[0], ops.shape(state["out"])), 2, axis=-1)
        else:
            scale = 1.0 if mode == "sum" else 0.5
            merge = LinearMap(lambda v, p: (v[0] + v[1]) * ops.cast(scale, v[0].dtype), {}, bias_axis=None)
            R_f, R_b = linear_relevance(merge, [y, y_rev], ops.reshape(R_out[0], ops.shape(state["out"])),
                                        rule.merge_rule(), state["out"])
        if layer.return_sequences:
            R_b = ops.flip(R_b, 1)
        fl, bl = layer.forward_layer, layer.backward_layer
        n_states = len(state["f"][0]) - 1
        R_in = None
        for sub, (ys_sub, st_sub), R, R_st in ((fl, state["f"], R_f, R_states[:n_states]),
                                               (bl, state["b"], R_b, R_states[n_states:])):
            r = self.recurrent.relevance(sub, xs, ys_sub, st_sub, [R] + list(R_st), cell_rule, self._sub(step, sub),
                                        options)[0]
            R_in = r if R_in is None else R_in + r
        return [R_in] + [None] * (len(xs) - 1)


class MaskingHandler(Handler):
    """``Masking``: the output is the input with masked time steps zeroed; relevance passes."""

    def relevance(self, layer, xs, ys, state, Rs, rule, step, options=DEFAULT_PASS):
        return [ops.reshape(materialize(Rs[0]), ops.shape(xs[0]))]


def register_recurrent_layers() -> None:
    """Register the recurrent handler for Keras' RNN layers (other cells are refused by name) and
    ``Masking``."""
    from .registry import register_keras_family

    recurrent = RecurrentHandler()
    register_keras_family([(L.RNN, recurrent), (L.SimpleRNN, recurrent), (L.LSTM, recurrent), (L.GRU, recurrent),
                           (L.Bidirectional, BidirectionalHandler(recurrent)), (L.Masking, MaskingHandler())])


register_recurrent_layers()
