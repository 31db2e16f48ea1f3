"""Transformer ops: attention (against a per-query loop in float64, and its decomposition against
its reference), rotary embedding (against complex rotation), swiglu, linear attention (against
closed forms), inference and errors."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph.ops.attention  # noqa: F401  (registers the family)
from irgraph import ShapeError, TensorType
from irgraph.dtype import DType
from irgraph.ops.registry import get_op
from irgraph.ops.scalar import NumpyScalar

from oprun import run, types

RNG = np.random.default_rng(0)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# ---- attention: an independent per-query formulation ----------------------------------------
def naive_attention(q, k, v, mask=None, past_k=None, past_v=None, nonpad=None, scale=None,
                    causal=False, softcap=0.0, left=-1, right=-1):
    """Loop over (batch, head, query); decide each key's visibility with explicit rules."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    if past_k is not None:
        k = np.concatenate([past_k.astype(np.float64), k], axis=2)
        v = np.concatenate([past_v.astype(np.float64), v], axis=2)
    b, hq, sq, d = q.shape
    hkv, t = k.shape[1], k.shape[2]
    scale = 1 / np.sqrt(d) if scale is None else scale
    y = np.zeros((b, hq, sq, v.shape[3]))
    for bi in range(b):
        offset = past_k.shape[2] if past_k is not None else (nonpad[bi] - sq if nonpad is not None else 0)
        for h in range(hq):
            kh = h * hkv // hq
            for i in range(sq):
                p = offset + i
                logits, keep = [], []
                for j in range(t):
                    s = scale * q[bi, h, i] @ k[bi, kh, j]
                    if softcap > 0:
                        s = softcap * np.tanh(s / softcap)
                    ok = True
                    if mask is not None:
                        m = np.broadcast_to(mask, (b, hq, sq, mask.shape[-1]))[bi, h, i]
                        if j >= len(m):
                            ok = False
                        elif m.dtype == bool:
                            ok = bool(m[j])
                        else:
                            s += m[j]
                    ok &= not (causal and j > p)
                    ok &= not (left >= 0 and j < p - left)
                    ok &= not (right >= 0 and j > p + right)
                    ok &= not (nonpad is not None and j >= nonpad[bi])
                    logits.append(s)
                    keep.append(ok)
                logits, keep = np.array(logits), np.array(keep)
                if not keep.any():
                    continue  # nothing to attend: a zero row
                w = np.where(keep, np.exp(logits - logits[keep].max()), 0)
                y[bi, h, i] = (w / w.sum()) @ v[bi, kh]
    return y


CASES = {
    "mha": dict(shapes=((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5))),
    "gqa": dict(shapes=((2, 4, 3, 8), (2, 2, 5, 8), (2, 2, 5, 8))),
    "causal": dict(shapes=((1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8)), attrs={"is_causal": True}),
    "scaled_softcap": dict(shapes=((1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4)),
                           attrs={"scale": 0.7, "softcap": 2.0}),
    "window": dict(shapes=((1, 1, 5, 4), (1, 1, 7, 4), (1, 1, 7, 4)),
                   attrs={"left_window": 2, "right_window": 1}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_attention_matches_per_query_loop(name):
    case = CASES[name]
    q, k, v = (f32(*s) for s in case["shapes"])
    attrs = case.get("attrs", {})
    got = run("attention", [q, k, v], attrs)
    want = naive_attention(q, k, v, scale=attrs.get("scale"), causal=attrs.get("is_causal", False),
                           softcap=attrs.get("softcap", 0.0), left=attrs.get("left_window", -1),
                           right=attrs.get("right_window", -1))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_attention_masks_past_and_short_mask():
    q, k, v = f32(2, 2, 3, 4), f32(2, 2, 2, 4), f32(2, 2, 2, 4)
    pk, pv = f32(2, 2, 3, 4), f32(2, 2, 3, 4)
    bool_mask = RNG.random((3, 4)) > 0.3   # shorter than the 5 keys: the rest is masked
    bool_mask[:, 0] = True
    y, pres_k, pres_v = run("attention", [q, k, v, bool_mask, pk, pv], {"is_causal": True}, num_outputs=3)
    want = naive_attention(q, k, v, bool_mask, pk, pv, causal=True)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pres_k, np.concatenate([pk, k], axis=2))
    np.testing.assert_array_equal(pres_v, np.concatenate([pv, v], axis=2))
    float_mask = f32(2, 1, 3, 5)
    (y,) = run("attention", [q, k, v, float_mask, pk, pv], num_outputs=1)
    np.testing.assert_allclose(y, naive_attention(q, k, v, float_mask, pk, pv), rtol=1e-5, atol=1e-6)


def test_attention_nonpad_external_cache_offsets_causal_frontier():
    q, k, v = f32(2, 2, 2, 4), f32(2, 2, 6, 4), f32(2, 2, 6, 4)
    nonpad = np.array([5, 1], np.int64)  # batch 1: offset -1, so its first query sees nothing
    y = run("attention", [q, k, v, None, None, None, nonpad], {"is_causal": True})
    want = naive_attention(q, k, v, nonpad=nonpad, causal=True)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    assert np.all(y[1, :, 0] == 0)


def test_attention_fully_masked_row_is_zero_not_nan():
    q, k, v = f32(1, 1, 2, 4), f32(1, 1, 3, 4), f32(1, 1, 3, 4)
    mask = np.array([[False, False, False], [True, False, True]])
    y, _, _, probs = run("attention", [q, k, v, mask], {"qk_matmul_output_mode": 3}, num_outputs=4)
    assert np.all(y[0, 0, 0] == 0) and np.all(probs[0, 0, 0] == 0)
    np.testing.assert_allclose(probs[0, 0, 1].sum(), 1.0, rtol=1e-6)
    assert probs[0, 0, 1, 1] == 0


def test_attention_qk_output_modes():
    q, k, v = f32(1, 2, 3, 4), f32(1, 2, 3, 4), f32(1, 2, 3, 4)
    mask = f32(3, 3)
    raw = np.einsum("bhid,bhjd->bhij", q.astype(np.float64), k.astype(np.float64)) / 2.0  # 1/sqrt(4)
    capped = 1.5 * np.tanh(raw / 1.5)
    outs = {m: run("attention", [q, k, v, mask], {"softcap": 1.5, "qk_matmul_output_mode": m},
                   num_outputs=4)[3] for m in range(4)}
    np.testing.assert_allclose(outs[0], capped, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outs[1], capped, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outs[2], capped + mask, rtol=1e-5, atol=1e-6)
    e = np.exp(capped + mask)
    np.testing.assert_allclose(outs[3], e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_attention_half_precision_softmax_precision():
    q, k, v = (f32(1, 2, 3, 8).astype(np.float16) for _ in range(3))
    y = run("attention", [q, k, v], {"softmax_precision": DType.from_name("float32")})
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64), naive_attention(q, k, v), rtol=5e-3, atol=5e-3)


def test_attention_inference_symbolic_and_past():
    f = lambda *s: TensorType(s, "float32")  # noqa: E731
    ts = types("attention", [f("B", 8, "S", 64), f("B", 2, "S", 64), f("B", 2, "S", 32),
                             None, f("B", 2, "P", 64), f("B", 2, "P", 32)], num_outputs=4)
    y, pk, pv, qk = ts
    assert y.shape == ("B", 8, "S", 32)
    total = pk.shape[2]
    assert isinstance(total, str) and total not in ("S", "P")
    assert pk.shape == ("B", 2, total, 64) and pv.shape == ("B", 2, total, 32)
    assert qk.shape == ("B", 8, "S", total)
    ts = types("attention", [f(1, 4, 3, 8), f(1, 4, 5, 8), f(1, 4, 5, 8), None, f(1, 4, 7, 8),
                             f(1, 4, 7, 8)], num_outputs=2)
    assert [t.shape for t in ts] == [(1, 4, 3, 8), (1, 4, 12, 8)]


@pytest.mark.parametrize("inputs,attrs,msg", [
    ([(1, 3, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8)], {}, "multiple of key/value heads"),
    ([(1, 2, 4, 8), (1, 2, 4, 6), (1, 2, 4, 8)], {}, "head size"),
    ([(1, 2, 4), (1, 2, 4, 8), (1, 2, 4, 8)], {}, "4-D"),
    ([(1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 5, 8)], {}, "sequence length"),
    ([(1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8)], {"left_window": -3}, "left_window"),
])
def test_attention_errors_name_the_op(inputs, attrs, msg):
    with pytest.raises(ShapeError, match=msg) as e:
        types("attention", [TensorType(s, "float32") for s in inputs], attrs)
    assert "attention" in str(e.value)


def test_attention_cache_inputs_go_together():
    t = TensorType((1, 2, 4, 8), "float32")
    with pytest.raises(ShapeError, match="together"):
        types("attention", [t, t, t, None, t])
    with pytest.raises(ShapeError, match="nonpad_kv_seqlen"):
        types("attention", [t, t, t, None, t, t, TensorType((1,), "int64")])


# ---- attention decomposition ---------------------------------------------------------------------
def _run_decomposed(inputs, attrs, const_mask=False):
    """Build the decomposition in a fresh graph and run it; returns its 4 outputs."""
    return run("attention", inputs, attrs, num_outputs=4, const=(3,) if const_mask else (), decompose=True)


DECOMP = {
    "plain": ([(1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4)], {}, None),
    "gqa_causal_past": ([(1, 4, 2, 4), (1, 2, 2, 4), (1, 2, 2, 4), None, (1, 2, 3, 4), (1, 2, 3, 4)],
                        {"is_causal": True, "softcap": 3.0}, None),
    "runtime_bool_mask": ([(2, 2, 3, 4), (2, 2, 3, 4), (2, 2, 3, 4), "bool(3,3)"],
                          {"qk_matmul_output_mode": 3}, None),
    "const_mask_window": ([(1, 1, 4, 4), (1, 1, 4, 4), (1, 1, 4, 4), "float(1,4)"],
                          {"left_window": 1, "qk_matmul_output_mode": 2}, "const"),
    "nonpad": ([(2, 2, 2, 4), (2, 2, 5, 4), (2, 2, 5, 4), None, None, None, "nonpad"],
               {"is_causal": True, "right_window": 0}, None),
}


@pytest.mark.parametrize("name", sorted(DECOMP))
def test_attention_decomposition_matches_reference(name):
    specs, attrs, const = DECOMP[name]
    ins = []
    for s in specs:
        if s is None:
            ins.append(None)
        elif s == "bool(3,3)":
            m = RNG.random((3, 3)) > 0.4
            m[0] = False  # one fully masked row exercises the guard
            ins.append(m)
        elif s == "float(1,4)":
            ins.append(f32(1, 4))
        elif s == "nonpad":
            ins.append(np.array([4, 1], np.int64))
        else:
            ins.append(f32(*s))
    want = run("attention", ins, attrs, num_outputs=4)
    got = _run_decomposed(ins, attrs, const_mask=const == "const")
    for w, gg in zip(want, got):
        assert w.shape == gg.shape and w.dtype == gg.dtype
        np.testing.assert_allclose(gg, w, rtol=1e-5, atol=1e-6)


# ---- rotary embedding ----------------------------------------------------------------------------
def _rope_complex(x_bshd, theta_bsr, interleaved, rd):
    """Rotate feature pairs as complex numbers by e^{i theta}; pairs are (2k, 2k+1) or (k, k+rd/2)."""
    x = x_bshd.astype(np.float64)
    r = x[..., :rd]
    if interleaved:
        z = r[..., 0::2] + 1j * r[..., 1::2]
    else:
        z = r[..., :rd // 2] + 1j * r[..., rd // 2:]
    z = z * np.exp(1j * theta_bsr[:, :, None, :])
    out = x.copy()
    if interleaved:
        out[..., 0:rd:2], out[..., 1:rd:2] = z.real, z.imag
    else:
        out[..., :rd // 2], out[..., rd // 2:rd] = z.real, z.imag
    return out


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("rd", [0, 4])
def test_rotary_embedding_is_a_complex_rotation(interleaved, rd):
    b, h, s, d = 2, 3, 5, 8
    rdim = rd or d
    angles = RNG.uniform(-3, 3, (10, rdim // 2))
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    pos = RNG.integers(0, 10, (b, s)).astype(np.int64)
    x = f32(b, h, s, d)
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rd}
    got = run("rotary_embedding", [x, cos, sin, pos], attrs)
    want = _rope_complex(x.transpose(0, 2, 1, 3), angles[pos], interleaved, rdim).transpose(0, 2, 1, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # the packed 3-D layout (B, S, H*D) with per-token caches (no position ids) agrees
    x3 = x.transpose(0, 2, 1, 3).reshape(b, s, h * d)
    got3 = run("rotary_embedding", [x3, cos[pos], sin[pos]], {**attrs, "num_heads": h})
    np.testing.assert_allclose(got3, want.transpose(0, 2, 1, 3).reshape(b, s, h * d), rtol=1e-5, atol=1e-6)


def test_rotary_embedding_inference_and_errors():
    t = types("rotary_embedding", [TensorType(("B", 4, "S", 8), "float16"), TensorType((16, 4), "float16"),
                                   TensorType((16, 4), "float16"), TensorType(("B", "S"), "int64")])[0]
    assert t.shape == ("B", 4, "S", 8) and t.dtype.name == "float16"
    with pytest.raises(ShapeError, match="num_heads") as e:
        types("rotary_embedding", [TensorType((1, 3, 8), "float32"), TensorType((1, 3, 4), "float32"),
                                   TensorType((1, 3, 4), "float32")])
    assert "rotary_embedding" in str(e.value)
    with pytest.raises(ShapeError, match="rotary_dim / 2"):
        types("rotary_embedding", [TensorType((1, 2, 3, 8), "float32"), TensorType((9, 3), "float32"),
                                   TensorType((9, 3), "float32"), TensorType((1, 3), "int64")])
    with pytest.raises(ShapeError, match="sin cache must have the cos cache's shape") as e:
        types("rotary_embedding", [TensorType((1, 2, 3, 8), "float32"), TensorType((9, 4), "float32"),
                                   TensorType((8, 4), "float32"), TensorType((1, 3), "int64")])
    assert "input 'in2'" in str(e.value) and "expected (9, 4), got (8, 4)" in str(e.value)
    types("rotary_embedding", [TensorType((1, 2, 3, 8), "float32"), TensorType(("P", 4), "float32"),
                               TensorType((9, 4), "float32"), TensorType((1, 3), "int64")])   # unknown vs known: fine


# ---- swiglu --------------------------------------------------------------------------------------
def test_swiglu_reference_scalar_formula_and_errors():
    a, b = f32(3, 5), f32(3, 5)
    got = run("swiglu", [a, b], {"alpha": 1.702})
    a64 = a.astype(np.float64)
    want = a64 / (1 + np.exp(-1.702 * a64)) * b
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    op = get_op("swiglu")
    np.testing.assert_allclose(op.scalar(NumpyScalar(), a, b, alpha=1.702), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError, match="no broadcasting") as e:
        types("swiglu", [TensorType((3, 5), "float32"), TensorType((1, 5), "float32")])
    assert "swiglu" in str(e.value)


# ---- linear attention ----------------------------------------------------------------------------
def _pack(x):  # (B, H, T, D) -> (B, T, H*D)
    b, h, t, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def test_linear_attention_linear_and_gated_closed_forms():
    b, hq, hkv, t, dk, dv = 2, 4, 2, 5, 3, 2
    q, k, v = f32(b, hq, t, dk), f32(b, hkv, t, dk), f32(b, hkv, t, dv)
    g = -RNG.uniform(0, 1, (b, hkv, t)).astype(np.float32)  # per-head log decay
    kq, vq = np.repeat(k, hq // hkv, 1), np.repeat(v, hq // hkv, 1)
    scores = np.einsum("bhid,bhjd->bhij", q, kq).astype(np.float64) / np.sqrt(dk)
    causal = np.tril(np.ones((t, t)))
    # linear: o_t = scale * sum_{s<=t} (q_t . k_s) v_s
    y, state = run("linear_attention", [_pack(q), _pack(k), _pack(v)],
                   {"update_rule": "linear", "q_num_heads": hq, "kv_num_heads": hkv}, num_outputs=2)
    np.testing.assert_allclose(y, _pack((scores * causal) @ vq), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state, np.einsum("bhtd,bhte->bhde", k, v), rtol=1e-4, atol=1e-5)
    # gated: contributions decay by exp(G_t - G_s) with G the running sum of log decays
    G = np.repeat(np.cumsum(g.astype(np.float64), axis=-1), hq // hkv, 1)
    decay = np.exp(G[..., :, None] - G[..., None, :]) * causal
    y = run("linear_attention", [_pack(q), _pack(k), _pack(v), None, g.transpose(0, 2, 1)],
            {"update_rule": "gated", "q_num_heads": hq, "kv_num_heads": hkv}, num_outputs=2)[0]
    np.testing.assert_allclose(y, _pack((scores * decay) @ vq), rtol=1e-4, atol=1e-5)


def test_linear_attention_delta_step_and_errors():
    b, h, dk, dv = 1, 1, 3, 2
    q, k, v = f32(b, 1, h * dk), f32(b, 1, h * dk), f32(b, 1, h * dv)
    s0 = f32(b, h, dk, dv)
    beta = np.full((b, 1, h), 0.25, np.float32)
    y, s1 = run("linear_attention", [q, k, v, s0, None, beta],
                {"update_rule": "delta", "q_num_heads": h, "kv_num_heads": h, "scale": 2.0}, num_outputs=2)
    kk, vv = k[0, 0].astype(np.float64), v[0, 0].astype(np.float64)
    want = s0[0, 0] + 0.25 * np.outer(kk, vv - s0[0, 0].T @ kk)
    np.testing.assert_allclose(s1[0, 0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y[0, 0], 2.0 * q[0, 0] @ want, rtol=1e-5, atol=1e-6)
    t = TensorType((1, 2, 6), "float32")
    with pytest.raises(ShapeError, match="needs beta"):
        types("linear_attention", [t, t, t], {"update_rule": "delta", "q_num_heads": 2, "kv_num_heads": 2},
              num_outputs=2)
    with pytest.raises(ShapeError, match="multiple"):
        types("linear_attention", [t, t, t], {"update_rule": "linear", "q_num_heads": 3, "kv_num_heads": 2},
              num_outputs=2)
