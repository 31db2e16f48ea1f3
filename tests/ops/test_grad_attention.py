"""Gradients of the transformer ops (attention, rotary_embedding, swiglu, linear_attention) against
central finite differences in float64, and linear_attention's unrolled decomposition (which
autodiff goes through) against its reference."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import case, check_case
from oprun import run

R = np.random.default_rng(7)


def f64(*shape, scale=1.0):
    return R.standard_normal(shape) * scale


def _qkv(b=1, hq=2, hkv=2, sq=3, skv=4, d=4, dv=3):
    return f64(b, hq, sq, d), f64(b, hkv, skv, d), f64(b, hkv, skv, dv)


_q, _k, _v = _qkv()
_gq, _gk, _gv = _qkv(hq=4, hkv=2, sq=2, skv=3, d=2, dv=2)
_cq, _ck, _cv = _qkv(sq=2, skv=2, d=3, dv=2)
_pk, _pv = f64(1, 2, 2, 3), f64(1, 2, 2, 2)
_bool_mask = np.array([[True, False, True, True], [False, False, False, False], [True, True, False, True]])
_nonpad = np.array([3], np.int64)

_x4, _x3 = f64(1, 2, 3, 4), f64(1, 3, 8)
_cos5, _sin5 = f64(5, 2), f64(5, 2)
_pos = np.array([[4, 0, 4]], np.int64)      # a repeated position: its cache row sums two gradients


def _la(rule, hq=2, hkv=1, dk=2, dv=2, t=3, per_feature=False, past=False):
    q, k, v = f64(1, t, hq * dk), f64(1, t, hkv * dk), f64(1, t, hkv * dv)
    st = f64(1, hkv, dk, dv) if past else None
    decay = -R.uniform(0.1, 0.5, (1, t, hkv * dk if per_feature else hkv)) if "gated" in rule else None
    beta = R.uniform(0.2, 0.8, (1, t, hkv)) if "delta" in rule else None
    return [q, k, v, st, decay, beta], {"update_rule": rule, "q_num_heads": hq, "kv_num_heads": hkv}


GRAD_CASES = {
    "attention": [
        case(_q, _k, _v, id="plain"),
        case(_q, _k, _v, attrs={"is_causal": True, "scale": 0.7}, id="causal-scale"),
        case(_gq, _gk, _gv, attrs={"is_causal": True}, id="gqa-causal"),
        case(_q, _k, _v, f64(1, 1, 3, 4), id="float-mask"),
        case(_q, _k, _v, f64(3, 2), id="short-float-mask"),
        case(_q, _k, _v, _bool_mask, id="bool-mask-dead-row"),
        case(_q, _k, _v, attrs={"softcap": 1.5}, id="softcap"),
        case(_q, _k, _v, attrs={"left_window": 1, "right_window": 0}, id="window"),
        case(_q, _k, _v, None, None, None, _nonpad, attrs={"is_causal": True}, id="nonpad"),
        case(_cq, _ck, _cv, None, _pk, _pv, attrs={"is_causal": True}, num_outputs=4,
             id="kv-cache-all-outputs"),
        case(_cq, _ck, _cv, None, _pk, _pv, attrs={"qk_matmul_output_mode": 2}, num_outputs=4,
             id="qk-out-mode2"),
        case(_cq, _ck, _cv, f64(2, 4), _pk, _pv, attrs={"qk_matmul_output_mode": 3, "softcap": 2.0},
             num_outputs=4, id="qk-out-mode3-mask-softcap"),
    ],
    "rotary_embedding": [
        case(_x4, _cos5, _sin5, _pos, id="position-ids"),
        case(_x3, f64(1, 3, 2), f64(1, 3, 2), attrs={"num_heads": 2, "interleaved": True},
             id="packed-interleaved"),
        case(_x4, f64(1, 3, 1), f64(1, 3, 1), attrs={"rotary_embedding_dim": 2}, id="partial"),
        case(_x4, f64(5, 1), f64(5, 1), _pos, attrs={"interleaved": True, "rotary_embedding_dim": 2},
             id="partial-interleaved-positions"),
    ],
    "swiglu": [
        case(f64(2, 3), f64(2, 3), id="alpha1"),
        case(f64(2, 3, 2), f64(2, 3, 2), attrs={"alpha": 1.702}, id="alpha1.702"),
    ],
    "linear_attention": [
        case(*_la("linear")[0], attrs=_la("linear")[1], num_outputs=2, id="linear"),
        case(*_la("gated", past=True)[0], attrs=_la("gated")[1], num_outputs=2, id="gated-past"),
        case(*_la("gated", per_feature=True)[0], attrs=_la("gated")[1], num_outputs=2,
             id="gated-per-feature"),
        case(*_la("delta", hq=1)[0], attrs=_la("delta", hq=1)[1], num_outputs=2, id="delta"),
        case(*_la("gated_delta", past=True)[0], attrs=_la("gated_delta")[1], num_outputs=2,
             id="gated-delta-gqa"),
    ],
}

_ALL = [(op, c) for op, cs in GRAD_CASES.items() for c in cs]


@pytest.mark.parametrize("op,c", _ALL, ids=[f"{op}-{c.id}" for op, c in _ALL])
def test_gradient(op, c):
    check_case(op, c)


@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
def test_linear_attention_decomposition_matches_reference(rule):
    ins, attrs = _la(rule, hq=4, hkv=2, t=4, past=rule != "linear", per_feature=rule == "gated")
    want = run("linear_attention", ins, attrs, num_outputs=2)
    got = run("linear_attention", ins, attrs, num_outputs=2, decompose=True)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
