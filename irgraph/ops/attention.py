"""Transformer blocks: scaled dot-product attention (with masks, causal/windowed frontiers, KV
cache, GQA, softcap), rotary position embedding, SwiGLU, linear attention.

``attention`` is a composite op: backends with a fused kernel take it whole, the others lower
its decomposition into matmul / softmax / elementwise primitives. Its reference computes in the
inputs' dtype step by step (products of half types accumulate in float32), as the ONNX
reference does, so half-precision results agree bit for bit.
"""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from ..errors import IrgraphError
from ..types import is_static_dim
from .attention_grad import (attention_grad, linear_attention_decompose, rotary_grad,
                             swiglu_grad)
from .declare import FLOAT_TYPES
from .evaluate import known_value
from .registry import Attr, OpDef, register
from .shapes import broadcast_shapes, out

_HALF = (np.dtype(np.float16), dt.bfloat16.np)


def _mm(a: np.ndarray, b: np.ndarray, odt) -> np.ndarray:
    """matmul rounded to ``odt``; half types accumulate in float32 (as numpy does for float16)."""
    if a.dtype in _HALF or b.dtype in _HALF:
        a, b = a.astype(np.float32), b.astype(np.float32)
    return np.matmul(a, b).astype(odt, copy=False)


def _dim_add(a, b, ctx):
    if is_static_dim(a) and is_static_dim(b):
        return a + b
    if a == 0:
        return b
    if b == 0:
        return a
    return ctx.fresh("total")


def _same_dim(ctx, a, b, what, i, expected):
    if is_static_dim(a) and is_static_dim(b) and a != b:
        ctx.fail(f"{what} differs", input=i, expected=expected, actual=b)


# ---- attention -------------------------------------------------------------------------------
def _attention_infer(ctx):
    q, k, v = ctx.type(0), ctx.type(1), ctx.type(2)
    mask, pk, pv, nonpad = ctx.type(3), ctx.type(4), ctx.type(5), ctx.type(6)
    for i, t in enumerate((q, k, v)):
        if t.dtype not in FLOAT_TYPES:
            ctx.fail("unsupported dtype", input=i, expected="a float type", actual=t.dtype.name)
        if t.shape is not None and len(t.shape) != 4:
            ctx.fail("attention takes 4-D (batch, heads, seq, head_size) Q, K, V", input=i,
                     expected="rank 4", actual=t.shape)
    if k.dtype is not q.dtype:
        ctx.fail("Q and K must share one dtype", input=1, expected=q.dtype.name, actual=k.dtype.name)
    if (pk is None) != (pv is None):
        ctx.fail("past_key and past_value go together", input=4 if pk is None else 5)
    if nonpad is not None:
        if pk is not None:
            ctx.fail("nonpad_kv_seqlen (an external cache) cannot be combined with past_key/past_value",
                     input=6)
        if nonpad.dtype is not dt.int64 or (nonpad.shape is not None and len(nonpad.shape) != 1):
            ctx.fail("nonpad_kv_seqlen must be int64[batch]", input=6, expected="int64[batch]", actual=nonpad)
    if mask is not None and mask.dtype is not dt.bool_ and mask.dtype not in FLOAT_TYPES:
        ctx.fail("attn_mask must be bool or float", input=3, actual=mask.dtype.name)
    for w in ("left_window", "right_window"):
        if ctx.attrs[w] < -1:
            ctx.fail(f"{w} must be -1 (unbounded) or >= 0, got {ctx.attrs[w]}")
    mode = ctx.attrs["qk_matmul_output_mode"]
    if mode not in (0, 1, 2, 3):
        ctx.fail(f"qk_matmul_output_mode must be 0..3, got {mode}")
    sp = ctx.attrs["softmax_precision"]
    if sp is not None and sp not in FLOAT_TYPES:
        ctx.fail(f"softmax_precision must be a float type, got {sp.name}")
    n = ctx.num_outputs or 1
    if n > 4:
        ctx.fail("attention has at most 4 outputs (Y, present_key, present_value, qk)", expected="<= 4",
                 actual=n)
    if q.shape is None or k.shape is None or v.shape is None:
        return [out(None, t) for t in (q.dtype, k.dtype, v.dtype, q.dtype)[:n]]
    b, hq, sq, d = q.shape
    _, hkv, skv, dk = k.shape
    _same_dim(ctx, b, k.shape[0], "batch size", 1, b)
    _same_dim(ctx, b, v.shape[0], "batch size", 2, b)
    _same_dim(ctx, d, dk, "head size of K and Q", 1, d)
    _same_dim(ctx, hkv, v.shape[1], "head count of V and K", 2, hkv)
    _same_dim(ctx, skv, v.shape[2], "sequence length of V and K", 2, skv)
    if is_static_dim(hq) and is_static_dim(hkv) and (hkv == 0 or hq % hkv):
        ctx.fail(f"query heads ({hq}) must be a multiple of key/value heads ({hkv})", input=1)
    dv = v.shape[3]
    total = skv
    if pk is not None:
        for i, t, hs in ((4, pk, d), (5, pv, dv)):
            if t.shape is None:
                continue
            if len(t.shape) != 4:
                ctx.fail("past key/value must be 4-D (batch, kv_heads, past_seq, head_size)", input=i,
                         actual=t.shape)
            _same_dim(ctx, b, t.shape[0], "batch size", i, b)
            _same_dim(ctx, hkv, t.shape[1], "head count", i, hkv)
            _same_dim(ctx, hs, t.shape[3], "head size", i, hs)
        if pk.shape is not None and pv.shape is not None:
            _same_dim(ctx, pk.shape[2], pv.shape[2], "past sequence length", 5, pk.shape[2])
        past = pk.shape[2] if pk.shape is not None else ctx.fresh("past")
        total = _dim_add(past, skv, ctx)
    if mask is not None and mask.shape is not None:
        if len(mask.shape) > 4:
            ctx.fail("attn_mask has rank > 4", input=3, actual=mask.shape)
        last = mask.shape[-1] if mask.shape else 1
        if is_static_dim(last) and is_static_dim(total) and last > total:
            ctx.fail("attn_mask is longer than the key sequence", input=3, expected=f"<= {total}",
                     actual=last)
        broadcast_shapes(tuple(mask.shape[:-1]) + (1,), (b, hq, sq, 1), ctx=ctx)
    outs = [out((b, hq, sq, dv), q.dtype), out((b, hkv, total, d), k.dtype),
            out((b, hkv, total, dv), v.dtype), out((b, hq, sq, total), q.dtype)]
    return outs[:n]


def _frontier(sq: int, t: int, offset, allowed_fn, dtype) -> np.ndarray:
    """0 where ``allowed_fn(query_pos - key_pos)`` holds, else -inf: (sq, t), or (B, 1, sq, t)
    for a per-batch offset."""
    i = np.arange(sq).reshape(sq, 1)
    j = np.arange(t).reshape(1, t)
    if np.ndim(offset) > 0:
        diff = (i + np.reshape(offset, (-1, 1, 1))) - j
        ok = allowed_fn(diff)
        return np.where(ok, dtype.type(0), dtype.type(-np.inf)).reshape(-1, 1, sq, t)
    ok = allowed_fn((i + int(offset)) - j)
    return np.where(ok, dtype.type(0), dtype.type(-np.inf))


def attention_bias(q_dtype, sq: int, t: int, batch: int, mask, past_len: int | None, nonpad,
                   is_causal: bool, left: int, right: int) -> np.ndarray:
    """The additive bias (0 = attend, -inf = masked) the attention scores get, broadcastable to
    (batch, heads, sq, t)."""
    qdt = np.dtype(q_dtype)
    if mask is not None and mask.shape[-1] < t:  # a short mask is padded with 'masked'
        pad = [(0, 0)] * (mask.ndim - 1) + [(0, t - mask.shape[-1])]
        mask = np.pad(mask, pad, constant_values=False if mask.dtype == np.bool_ else -np.inf)
    if mask is not None and mask.dtype == np.bool_:
        mask = np.where(mask, qdt.type(0), qdt.type(-np.inf))
    # offset = valid keys before the query block: the internal cache, or the external one
    if past_len is None and nonpad is not None:
        offset = np.asarray(nonpad).reshape(-1).astype(np.int64) - sq
    else:
        offset = past_len or 0
    windowed = left >= 0 or right >= 0
    if is_causal:
        base = np.zeros((sq, t), qdt) if mask is None else mask
        if windowed:
            base = np.zeros((sq, t), qdt) + base
        bias = base + _frontier(sq, t, offset, lambda diff: diff >= 0, qdt)
    elif mask is not None:
        bias = np.zeros((sq, t), qdt) + mask
    else:
        bias = np.zeros((sq, t), qdt)
    if windowed:
        def in_window(diff):
            ok = np.ones(diff.shape, bool)
            if left >= 0:
                ok &= diff <= left
            if right >= 0:
                ok &= -diff <= right
            return ok
        bias = np.zeros((sq, t), qdt) + bias
        bias = bias + _frontier(sq, t, offset, in_window, qdt)
    if nonpad is not None:
        valid = np.arange(t) < np.asarray(nonpad).reshape(-1, 1)
        bias = bias + np.where(valid, 0, -np.inf).astype(bias.dtype).reshape(batch, 1, 1, t)
    return bias


def _masked_softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in x's dtype; an all -inf row gives zeros, not NaN."""
    m = np.max(x, axis=-1, keepdims=True)
    zero, one = np.zeros((), x.dtype), np.ones((), x.dtype)
    e = np.exp(x - np.where(np.isneginf(m), zero, m))
    s = np.sum(e, axis=-1, keepdims=True)
    return e / np.where(s == zero, one, s)


def attention_reference(q, k, v, mask=None, past_key=None, past_value=None, nonpad=None, *,
                        scale=None, is_causal=False, softcap=0.0, softmax_precision=None,
                        qk_matmul_output_mode=0, left_window=-1, right_window=-1):
    """(Y, present_key, present_value, qk_output) for 4-D Q, K, V."""
    qdt = q.dtype
    present_k = k if past_key is None else np.concatenate([past_key, k], axis=2)
    present_v = v if past_value is None else np.concatenate([past_value, v], axis=2)
    b, hq, sq, d = q.shape
    t = present_k.shape[2]
    bias = attention_bias(qdt, sq, t, b, mask, None if past_key is None else past_key.shape[2],
                          nonpad, is_causal, left_window, right_window)
    kk, vv = present_k, present_v
    hkv = kk.shape[1]
    if hq != hkv:  # grouped-query attention: query head h reads kv head h // (hq / hkv)
        kk = np.repeat(kk, hq // hkv, axis=1)
        vv = np.repeat(vv, hq // hkv, axis=1)
    # sqrt(scale) on each side, as the spec does it against overflow in half precision
    s = qdt.type(np.sqrt(scale if scale is not None else 1.0 / np.sqrt(d)))
    qk = _mm(q * s, np.swapaxes(kk, -1, -2) * s, qdt)
    if softcap > 0:
        qk = np.tanh(qk / softcap) * softcap
    scores = qk + bias
    qk_out = scores if qk_matmul_output_mode == 2 else qk
    if softmax_precision is not None:
        scores = scores.astype(softmax_precision.np)
    probs = _masked_softmax(scores)
    # a query with no attendable key (decided on the bias, not on possibly-NaN scores) outputs 0
    dead = np.isneginf(np.max(bias, axis=-1, keepdims=True))
    probs = np.where(dead, np.zeros((), probs.dtype), probs)
    if qk_matmul_output_mode == 3:
        qk_out = probs
    y = _mm(probs.astype(qdt), vv, qdt)
    return y, present_k, present_v, np.broadcast_to(qk_out, (b, hq, sq, t)).astype(qdt)


def _attention_ref(ins, a):
    ins = list(ins) + [None] * (7 - len(ins))
    res = attention_reference(*ins[:7], scale=a["scale"], is_causal=a["is_causal"], softcap=a["softcap"],
                              softmax_precision=a["softmax_precision"],
                              qk_matmul_output_mode=a["qk_matmul_output_mode"],
                              left_window=a["left_window"], right_window=a["right_window"])
    return res


def _attention_decompose(g, inputs, attrs):
    """Decomposition into concat, gather (GQA heads), mul, transpose, matmul, tanh, add, softmax,
    where, cast; the mask bias is one constant when it does not depend on runtime values.

    Needs static Q/K/V (and cache) shapes; returns [Y, present_key, present_value, qk_output].
    """
    q, k, v, mask, pk, pv, nonpad = (list(inputs) + [None] * 7)[:7]
    for x in (q, k, v, pk):
        if x is not None and not x.type.is_static:
            raise IrgraphError("attention decomposes only with static Q/K/V/cache shapes", op="attention")
    qdt = q.dtype.np
    b, hq, sq, d = q.type.shape
    past = 0 if pk is None else pk.type.shape[2]
    present_k = k if pk is None else g.op("concat", [pk, k], {"axis": 2})
    present_v = v if pv is None else g.op("concat", [pv, v], {"axis": 2})
    kk, vv = present_k, present_v
    t, hkv = kk.type.shape[2], kk.type.shape[1]
    if hq != hkv:  # GQA: query head h reads kv head h // (hq / hkv)
        heads = g.add_const(np.arange(hq, dtype=np.int64) // (hq // hkv), "attention_kv_heads")
        kk = g.op("gather", [kk, heads], {"axis": 1})
        vv = g.op("gather", [vv, heads], {"axis": 1})
    scale = attrs.get("scale")
    s = g.add_const(np.array(np.sqrt(scale if scale is not None else 1.0 / np.sqrt(d))).astype(qdt),
                    "attention_scale")
    kt = g.op("transpose", [g.op("mul", [kk, s])], {"perm": (0, 1, 3, 2)})
    qk = g.op("matmul", [g.op("mul", [q, s]), kt])
    softcap = attrs.get("softcap", 0.0)
    if softcap > 0:
        c = g.add_const(np.array(softcap).astype(qdt), "attention_softcap")
        qk = g.op("mul", [g.op("tanh", [g.op("div", [qk, c])]), c])
    bias = _decomposed_bias(g, q, mask, nonpad, past, t, attrs)
    scores = g.op("add", [qk, bias])
    sp = attrs.get("softmax_precision")
    x = scores if sp is None or sp is q.dtype else g.op("cast", [scores], {"to": sp})
    probs = g.op("softmax", [x], {"axis": -1})
    # rows whose bias is all -inf attend to nothing: zero them (where, since softmax gave NaN)
    zero = g.add_const(np.zeros((), probs.dtype.np), "attention_zero")
    if bias.is_const:
        dead = np.isneginf(np.max(bias.const, axis=-1, keepdims=True))
        if dead.any():
            probs = g.op("where", [g.add_const(dead, "attention_dead_rows"), zero, probs])
    else:
        row_max = g.op("reduce_max", [bias, g.add_const(np.array([-1], np.int64), "attention_axis")],
                       {"keepdims": 1})
        dead = g.op("isinf", [row_max], {"detect_positive": False})
        probs = g.op("where", [dead, zero, probs])
    probs_q = probs if probs.dtype is q.dtype else g.op("cast", [probs], {"to": q.dtype})
    y = g.op("matmul", [probs_q, vv])
    qk_out = {0: qk, 1: qk, 2: scores, 3: probs_q}[attrs.get("qk_matmul_output_mode", 0)]
    return [y, present_k, present_v, qk_out]


def _decomposed_bias(g, q, mask, nonpad, past: int, t: int, attrs):
    """The additive bias as a constant, or built from the runtime mask / nonpad lengths."""
    qdt = q.dtype.np
    b, _, sq, _ = q.type.shape
    causal = attrs.get("is_causal", False)
    left, right = attrs.get("left_window", -1), attrs.get("right_window", -1)
    mconst = known_value(mask)
    if nonpad is None and (mask is None or mconst is not None):
        return g.add_const(attention_bias(qdt, sq, t, b, mconst, past if past else None, None,
                                          causal, left, right), "attention_bias")
    zero = g.add_const(np.zeros((), qdt), "attention_zero_bias")
    ninf = g.add_const(np.array(-np.inf, qdt), "attention_ninf")
    # the mask part (a runtime mask shorter than the keys is padded with 'masked')
    if mask is None:
        parts = []
    elif mconst is not None:
        mask_bias = attention_bias(qdt, sq, t, b, mconst, None, None, False, -1, -1)
        parts = [g.add_const(mask_bias, "attention_mask")]
    else:
        last = None if mask.type.shape is None or not mask.type.shape else mask.type.shape[-1]
        if not is_static_dim(last) or last > t:
            raise IrgraphError("a runtime attn_mask needs a static last dim to decompose", op="attention")
        if last < t:
            fill = np.array(False if mask.dtype is dt.bool_ else -np.inf, mask.dtype.np)
            mask = g.op("pad", [mask, g.add_const(np.array([0, t - last], np.int64), "attention_mask_pads"),
                                g.add_const(fill, "attention_mask_fill"),
                                g.add_const(np.array([-1], np.int64), "attention_mask_axis")])
        m = g.op("where", [mask, zero, ninf]) if mask.dtype is dt.bool_ else (
            mask if mask.dtype is q.dtype else g.op("cast", [mask], {"to": q.dtype}))
        parts = [m]
    if nonpad is None:
        parts.append(g.add_const(attention_bias(qdt, sq, t, b, None, past if past else None, None,
                                                causal, left, right), "attention_frontier"))
    else:
        # p - j for query position p = nonpad - sq + i: (b, 1, sq, t) int64
        off = g.op("sub", [nonpad, g.add_const(np.array(sq, np.int64), "attention_sq")])
        off = g.op("reshape", [off, g.add_const(np.array([b, 1, 1, 1], np.int64), "attention_b111")])
        i_minus_j = np.arange(sq).reshape(sq, 1) - np.arange(t).reshape(1, t)
        diff = g.op("add", [off, g.add_const(i_minus_j.astype(np.int64), "attention_i_minus_j")])
        allowed = None
        conds = []
        if causal:
            conds.append(("greater_equal", 0))
        if left >= 0:
            conds.append(("less_equal", left))
        if right >= 0:
            conds.append(("greater_equal", -right))
        for op, bound in conds:
            c = g.op(op, [diff, g.add_const(np.array(bound, np.int64), "attention_bound")])
            allowed = c if allowed is None else g.op("logical_and", [allowed, c])
        if allowed is not None:
            parts.append(g.op("where", [allowed, zero, ninf]))
        lengths = g.op("reshape", [nonpad, g.add_const(np.array([b, 1], np.int64), "attention_b1")])
        valid = g.op("less", [g.add_const(np.arange(t, dtype=np.int64), "attention_key_pos"), lengths])
        pad = g.op("where", [valid, zero, ninf])
        parts.append(g.op("reshape", [pad, g.add_const(np.array([b, 1, 1, t], np.int64), "attention_b11t")]))
    bias = g.add_const(np.zeros((sq, t), qdt), "attention_zeros")
    for p in parts:
        bias = g.op("add", [bias, p])
    return bias


register(OpDef(
    "attention", infer=_attention_infer, reference=_attention_ref, inputs=(3, 7), kind="composite",
    attrs={
        "scale": Attr("float", None, "multiplies Q K^T; default 1/sqrt(head_size)"),
        "is_causal": Attr("bool", False, "query i attends key j only if j <= i + offset (bottom-right)"),
        "softcap": Attr("float", 0.0, "> 0: scores become softcap * tanh(scores / softcap)"),
        "softmax_precision": Attr("dtype", None, "float type the softmax is computed in"),
        "qk_matmul_output_mode": Attr("int", 0, "4th output: 0/1 scores (after softcap), 2 + bias, "
                                                "3 probabilities"),
        "left_window": Attr("int", -1, ">= 0: keys at most this far before the query position"),
        "right_window": Attr("int", -1, ">= 0: keys at most this far after the query position"),
    },
    differentiable=True, decompose=_attention_decompose, grad=attention_grad,
    doc="attention(Q, K, V, attn_mask?, past_key?, past_value?, nonpad_kv_seqlen?) on (B, H, S, D) "
        "tensors -> (Y, present_key, present_value, qk_output); GQA when K/V have fewer heads",
))


# ---- rotary embedding -----------------------------------------------------------------------------
def _rope_infer(ctx):
    x, cos, sin, pos = ctx.type(0), ctx.type(1), ctx.type(2), ctx.type(3)
    if x.dtype not in FLOAT_TYPES:
        ctx.fail("unsupported dtype", input=0, expected="a float type", actual=x.dtype.name)
    for i in (1, 2):
        if ctx.type(i).dtype is not x.dtype:
            ctx.fail("cos/sin caches must have the input's dtype", input=i, expected=x.dtype.name,
                     actual=ctx.type(i).dtype.name)
    if pos is not None and pos.dtype is not dt.int64:
        ctx.fail("position_ids must be int64", input=3, expected="int64", actual=pos.dtype.name)
    if x.shape is None:
        return [out(None, x.dtype)]
    nh = ctx.attrs["num_heads"]
    if len(x.shape) == 3:
        if not nh:
            ctx.fail("a 3-D input (batch, seq, hidden) needs num_heads", input=0)
        hidden = x.shape[2]
        if is_static_dim(hidden) and hidden % nh:
            ctx.fail(f"hidden size {hidden} is not a multiple of num_heads {nh}", input=0)
        head = hidden // nh if is_static_dim(hidden) else None
    elif len(x.shape) == 4:
        head = x.shape[3] if is_static_dim(x.shape[3]) else None
    else:
        ctx.fail("input must be (batch, heads, seq, head) or (batch, seq, hidden)", input=0,
                 expected="rank 3 or 4", actual=x.shape)
    rd = ctx.attrs["rotary_embedding_dim"] or head
    if head is not None and rd is not None:
        if rd > head or rd % 2:
            ctx.fail(f"rotary_embedding_dim {rd} must be even and at most the head size {head}")
        c = cos.shape
        if c is not None and c and is_static_dim(c[-1]) and c[-1] != rd // 2:
            ctx.fail("the caches' last dim must be rotary_dim / 2", input=1, expected=rd // 2, actual=c[-1])
    want = 2 if pos is not None else 3
    if cos.shape is not None and len(cos.shape) != want:
        ctx.fail(f"cos/sin caches must be {want}-D " + ("(max_position, rotary_dim/2) with position_ids"
                 if pos is not None else "(batch, seq, rotary_dim/2) without position_ids"),
                 input=1, actual=cos.shape)
    if cos.shape is not None and sin.shape is not None and (
            len(sin.shape) != len(cos.shape) or any(
                is_static_dim(c) and is_static_dim(s) and c != s for c, s in zip(cos.shape, sin.shape))):
        ctx.fail("the sin cache must have the cos cache's shape", input=2, expected=cos.shape, actual=sin.shape)
    return [out(x.shape, x.dtype)]


def _rope_ref(ins, a):
    x, cos, sin = ins[0], ins[1], ins[2]
    pos = ins[3] if len(ins) > 3 else None
    shape = x.shape
    if x.ndim == 3:  # (B, S, H*D) -> (B, S, H, D): heads on axis 2, seq on axis 1
        x = x.reshape(shape[0], shape[1], a["num_heads"], -1)
        head_axis = 2
    else:              # (B, H, S, D)
        head_axis = 1
    d = x.shape[-1]
    rd = a["rotary_embedding_dim"] or d
    if pos is not None:
        cos, sin = cos[pos], sin[pos]                      # (B, S, rd/2)
    cos = np.expand_dims(cos, head_axis)
    sin = np.expand_dims(sin, head_axis)
    xr, rest = x[..., :rd], x[..., rd:]
    if a["interleaved"]:
        x1, x2 = xr[..., 0::2], xr[..., 1::2]
    else:
        x1, x2 = xr[..., :rd // 2], xr[..., rd // 2:]
    real = cos * x1 - sin * x2
    imag = sin * x1 + cos * x2
    if a["interleaved"]:
        rot = np.stack([real, imag], axis=-1).reshape(xr.shape)
    else:
        rot = np.concatenate([real, imag], axis=-1)
    return np.concatenate([rot, rest], axis=-1).astype(x.dtype, copy=False).reshape(shape)


register(OpDef(
    "rotary_embedding", infer=_rope_infer, reference=_rope_ref, inputs=(3, 4), kind="other",
    attrs={"interleaved": Attr("bool", False, "rotate pairs (0,1),(2,3)… instead of the two halves"),
           "rotary_embedding_dim": Attr("int", 0, "rotate only the first this-many features (0: all)"),
           "num_heads": Attr("int", 0, "heads packed in the last dim of a 3-D input")},
    differentiable=True, grad=rotary_grad,
    doc="RoPE: rotate feature pairs of (B, H, S, D) or (B, S, H*D) by cos/sin of their position",
))


# ---- swiglu ------------------------------------------------------------------------------------
def _swiglu_infer(ctx):
    a, b = ctx.type(0), ctx.type(1)
    if a.dtype not in FLOAT_TYPES:
        ctx.fail("unsupported dtype", input=0, expected="a float type", actual=a.dtype.name)
    if b.dtype is not a.dtype:
        ctx.fail("A and B must share one dtype", input=1, expected=a.dtype.name, actual=b.dtype.name)
    if a.shape is not None and b.shape is not None:
        same = len(a.shape) == len(b.shape) and all(
            x == y or not (is_static_dim(x) and is_static_dim(y)) for x, y in zip(a.shape, b.shape))
        if not same:
            ctx.fail("A and B must have one shape (no broadcasting)", input=1, expected=a.shape,
                     actual=b.shape)
    return [out(a.shape if a.shape is not None else b.shape, a.dtype)]


def _swiglu_scalar(b, x, y, alpha=1.0):
    one = b.const(1, x)
    gate = b.div(one, b.add(one, b.exp(b.neg(b.mul(b.const(alpha, x), x)))))
    return b.mul(b.mul(x, gate), y)


def _swiglu_ref(ins, attrs):
    a, b = ins
    gate = (1 / (1 + np.exp(-attrs["alpha"] * a))).astype(a.dtype)
    return (a * gate * b).astype(a.dtype)


register(OpDef(
    "swiglu", infer=_swiglu_infer, reference=_swiglu_ref, inputs=(2, 2), kind="elementwise",
    attrs={"alpha": Attr("float", 1.0, "Swish_alpha(a) = a * sigmoid(alpha * a)")},
    differentiable=True, scalar=_swiglu_scalar, grad=swiglu_grad,
    doc="swiglu(A, B) = A * sigmoid(alpha * A) * B, A and B of one shape",
))


# ---- linear attention ----------------------------------------------------------------------------
_RULES = ("linear", "gated", "delta", "gated_delta")


def _la_infer(ctx):
    q, k, v, st, decay, beta = (ctx.type(i) for i in range(6))
    a = ctx.attrs
    rule, hq, hkv = a["update_rule"], a["q_num_heads"], a["kv_num_heads"]
    if rule not in _RULES:
        ctx.fail(f"update_rule must be one of {_RULES}, got {rule!r}")
    if hq <= 0 or hkv <= 0 or hq % hkv:
        ctx.fail(f"q_num_heads ({hq}) must be a positive multiple of kv_num_heads ({hkv})")
    gated, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    if gated != (decay is not None):
        ctx.fail(f"update_rule {rule!r} {'needs' if gated else 'takes no'} decay", input=4)
    if delta != (beta is not None):
        ctx.fail(f"update_rule {rule!r} {'needs' if delta else 'takes no'} beta", input=5)
    for i, t in enumerate((q, k, v)):
        if t.dtype not in FLOAT_TYPES:
            ctx.fail("unsupported dtype", input=i, expected="a float type", actual=t.dtype.name)
        if t.shape is not None and len(t.shape) != 3:
            ctx.fail("query/key/value are packed (batch, seq, heads * size)", input=i, expected="rank 3",
                     actual=t.shape)
    sdt = st.dtype if st is not None else q.dtype
    if q.shape is None or k.shape is None or v.shape is None:
        return [out(None, q.dtype), out(None, sdt)]
    b, t, qh = q.shape
    dkk, dvv = k.shape[2], v.shape[2]
    for i, x, h in ((0, qh, hq), (1, dkk, hkv), (2, dvv, hkv)):
        if is_static_dim(x) and x % h:
            ctx.fail(f"last dim {x} is not a multiple of the head count {h}", input=i)
    dk = qh // hq if is_static_dim(qh) else ctx.fresh("dk")
    dv = dvv // hkv if is_static_dim(dvv) else ctx.fresh("dv")
    if is_static_dim(dkk) and is_static_dim(dk) and dkk != hkv * dk:
        ctx.fail("key head size differs from the query's", input=1, expected=hkv * dk, actual=dkk)
    if st is not None and st.shape is not None and st.shape != (b, hkv, dk, dv) and all(
            is_static_dim(x) for x in st.shape + (b, dk, dv)):
        ctx.fail("past_state must be (batch, kv_heads, dk, dv)", input=3, expected=(b, hkv, dk, dv),
                 actual=st.shape)
    return [out((b, t, hq * dv if is_static_dim(dv) else ctx.fresh("hdv")), q.dtype),
            out((b, hkv, dk, dv), sdt)]


def _compute_dtype(x) -> np.dtype:
    """float64 inputs are computed in float64, the others in float32."""
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


def _heads(x, h, ct=np.float32):
    b, t, hd = x.shape
    return x.reshape(b, t, h, hd // h).transpose(0, 2, 1, 3).astype(ct)


def _la_ref(ins, a):
    ins = list(ins) + [None] * (6 - len(ins))
    q, k, v, past, decay, beta = ins
    hq, hkv = a["q_num_heads"], a["kv_num_heads"]
    b, t, _ = q.shape
    dk, dv = q.shape[2] // hq, v.shape[2] // hkv
    ct = _compute_dtype(q)
    q4, k4, v4 = _heads(q, hq, ct), _heads(k, hkv, ct), _heads(v, hkv, ct)
    if decay is not None:   # per head (B,T,Hkv) or per key feature (B,T,Hkv*dk) -> (B,Hkv,T,1|dk)
        g4 = _heads(decay, hkv, ct)
    if beta is not None:    # (B,T,Hkv|1) -> (B,Hkv|1,T,1)
        b4 = beta.reshape(b, t, beta.shape[2], 1).transpose(0, 2, 1, 3).astype(ct)
    state = np.zeros((b, hkv, dk, dv), ct) if past is None else past.astype(ct)
    scale = a["scale"] or 1.0 / np.sqrt(dk)
    group = hq // hkv
    outs = np.zeros((b, hq, t, dv), ct)
    for i in range(t):
        kt, vt = k4[:, :, i], v4[:, :, i]
        if decay is not None:
            state = state * np.exp(g4[:, :, i])[..., None]
        if beta is not None:
            vt = b4[:, :, i] * (vt - np.einsum("bhdm,bhd->bhm", state, kt))
        state = state + kt[..., :, None] * vt[..., None, :]
        read = state if group == 1 else np.repeat(state, group, axis=1)
        outs[:, :, i] = scale * np.einsum("bhd,bhdm->bhm", q4[:, :, i], read)
    y = outs.transpose(0, 2, 1, 3).reshape(b, t, hq * dv).astype(q.dtype)
    return y, state.astype(past.dtype if past is not None else q.dtype)


register(OpDef(
    "linear_attention", infer=_la_infer, reference=_la_ref, inputs=(3, 6), kind="other",
    attrs={"update_rule": Attr("str", "gated_delta", "linear | gated | delta | gated_delta"),
           "q_num_heads": Attr("int"), "kv_num_heads": Attr("int"),
           "scale": Attr("float", 0.0, "0: 1/sqrt(dk)")},
    differentiable=True, decompose=linear_attention_decompose,
    doc="recurrent linear attention over packed (B, T, H*D) inputs with a (B, Hkv, dk, dv) state; "
        "outputs (Y, present_state)",
))
