"""Gradients of rnn, gru and lstm (backpropagation through time, unrolled) against central finite
differences in float64: every input (X, W, R, B, initial states, peepholes) and every output
(Y, Y_h, Y_c) carries a random cotangent."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import case, check_case

R = np.random.default_rng(3)
T, BATCH, IN, H = 3, 2, 2, 2


def f64(*shape, scale=0.6):
    return R.standard_normal(shape) * scale


def _inputs(kind, nd=1, layout=0, lens=None, h0=False, c0=False, peep=False, bias=True):
    g = {"rnn": 1, "gru": 3, "lstm": 4}[kind]
    x = f64(BATCH, T, IN) if layout else f64(T, BATCH, IN)
    state = (BATCH, nd, H) if layout else (nd, BATCH, H)
    ins = [x, f64(nd, g * H, IN), f64(nd, g * H, H), f64(nd, 2 * g * H, scale=0.3) if bias else None,
           None if lens is None else np.array(lens, np.int32), f64(*state) if h0 else None]
    if kind == "lstm":
        ins += [f64(*state) if c0 else None, f64(nd, 3 * H) if peep else None]
    while ins and ins[-1] is None:
        ins.pop()
    return ins


def _case(kind, attrs=None, id="", **kw):
    nd = 2 if (attrs or {}).get("direction") == "bidirectional" else 1
    layout = (attrs or {}).get("layout", 0)
    return case(*_inputs(kind, nd=nd, layout=layout, **kw), attrs=attrs,
                num_outputs=3 if kind == "lstm" else 2, id=id)


_BI = {"direction": "bidirectional"}

GRAD_CASES = {
    "rnn": [
        _case("rnn", id="tanh"),
        _case("rnn", {"direction": "reverse"}, h0=True, id="reverse-h0"),
        _case("rnn", {**_BI, "layout": 1}, lens=[3, 2], h0=True, id="bidirectional-lens-layout1"),
        _case("rnn", {"activations": ["softsign"], "clip": 0.7}, bias=False, id="softsign-clip-nobias"),
        _case("rnn", {"activations": ["scaledtanh"], "activation_alpha": [1.3], "activation_beta": [0.7]},
              id="scaledtanh"),
        _case("rnn", {**_BI, "activations": ["affine", "softplus"], "activation_alpha": [0.8, 0.0],
                      "activation_beta": [0.1, 0.0]}, id="affine-softplus"),
    ],
    "gru": [
        _case("gru", id="plain"),
        _case("gru", {"linear_before_reset": 1}, h0=True, id="linear-before-reset"),
        _case("gru", {**_BI, "linear_before_reset": 1}, lens=[2, 3], h0=True, id="bidirectional-lens-lbr"),
        _case("gru", {"direction": "reverse", "layout": 1}, lens=[1, 3], id="reverse-lens-layout1"),
        _case("gru", {"activations": ["hardsigmoid", "elu"], "activation_alpha": [0.3, 0.9],
                      "activation_beta": [0.45, 0.0], "clip": 0.9}, h0=True, id="hardsigmoid-elu-clip"),
    ],
    "lstm": [
        _case("lstm", id="plain"),
        _case("lstm", h0=True, c0=True, peep=True, id="peepholes"),
        _case("lstm", {"input_forget": 1}, h0=True, c0=True, peep=True, id="input-forget"),
        _case("lstm", {**_BI, "layout": 1}, lens=[3, 2], h0=True, c0=True, peep=True,
              id="bidirectional-lens-layout1"),
        _case("lstm", {"direction": "reverse"}, lens=[2, 1], c0=True, id="reverse-lens"),
        _case("lstm", {"activations": ["sigmoid", "leakyrelu", "softsign"], "activation_alpha": [0, 0.2, 0],
                       "clip": 0.8}, h0=True, id="leakyrelu-softsign-clip"),
    ],
}

_ALL = [(op, c) for op, cs in GRAD_CASES.items() for c in cs]


@pytest.mark.parametrize("op,c", _ALL, ids=[f"{op}-{c.id}" for op, c in _ALL])
def test_gradient(op, c):
    check_case(op, c)
