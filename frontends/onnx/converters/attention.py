"""ONNX converters for Attention, RotaryEmbedding, SwiGLU and LinearAttention."""
from __future__ import annotations

import numpy as np

from irgraph.dtype import DType

from .registry import converter


def _to_heads(ctx, x, heads: int, what: str):
    """(B, S, H*D) -> (B, H, S, D)."""
    shape = ctx.constant(np.array([0, 0, heads, -1], np.int64), name=f"{ctx.name}_{what}_heads")
    x4 = ctx.op("reshape", [x, shape])
    return ctx.op("transpose", [x4], {"perm": (0, 2, 1, 3)})


@converter("Attention", since=23)
def attention(ctx):
    q, k, v = ctx.input(0), ctx.input(1), ctx.input(2)
    rank = q.type.rank
    if rank == 3:
        hq, hkv = ctx.attr("q_num_heads", None), ctx.attr("kv_num_heads", None)
        if not hq or not hkv:
            ctx.fail("3-D Q/K/V need the q_num_heads and kv_num_heads attributes")
        q = _to_heads(ctx, q, hq, "q")
        k = _to_heads(ctx, k, hkv, "k")
        v = _to_heads(ctx, v, hkv, "v")
    elif rank is not None and rank != 4:
        ctx.fail("Q must be 3-D (batch, seq, hidden) or 4-D (batch, heads, seq, head_size)",
                 input=0, actual=q.type.shape)
    elif ctx.opset >= 25 and (ctx.has_attr("q_num_heads") or ctx.has_attr("kv_num_heads")):
        ctx.fail("q_num_heads/kv_num_heads are only for 3-D inputs")
    sp = ctx.attr("softmax_precision", None)
    scale = ctx.attr("scale", None)
    attrs = {
        "scale": scale,
        "is_causal": ctx.attr("is_causal", 0),
        "softcap": ctx.attr("softcap", 0.0),
        "softmax_precision": DType.from_onnx(sp) if sp else None,
        "qk_matmul_output_mode": ctx.attr("qk_matmul_output_mode", 0),
        "left_window": ctx.attr("left_window_size", -1),
        "right_window": ctx.attr("right_window_size", -1),
    }
    ins = [q, k, v] + [ctx.input(i) for i in range(3, 7)]
    n = max(1, ctx.num_outputs)
    outs = ctx.op("attention", ins, attrs, num_outputs=n)
    outs = list(outs) if isinstance(outs, tuple) else [outs]
    if rank == 3:  # Y back to (B, S, H*Dv); the caches stay 4-D
        y = ctx.op("transpose", [outs[0]], {"perm": (0, 2, 1, 3)})
        shape = ctx.constant(np.array([0, 0, -1], np.int64), name=f"{ctx.name}_y_shape")
        outs[0] = ctx.op("reshape", [y, shape])
    return outs


@converter("RotaryEmbedding", since=23)
def rotary_embedding(ctx):
    attrs = {"interleaved": ctx.attr("interleaved", 0),
             "rotary_embedding_dim": ctx.attr("rotary_embedding_dim", 0),
             "num_heads": ctx.attr("num_heads", 0)}
    return ctx.op("rotary_embedding", [ctx.input(i) for i in range(4)], attrs)


@converter("SwiGLU", since=28)
def swiglu(ctx):
    return ctx.op("swiglu", [ctx.input(0), ctx.input(1)], {"alpha": ctx.attr("alpha", 1.0)})


@converter("LinearAttention", since=27)
def linear_attention(ctx):
    attrs = {"update_rule": ctx.attr("update_rule", "gated_delta"),
             "q_num_heads": ctx.attr("q_num_heads"), "kv_num_heads": ctx.attr("kv_num_heads"),
             "scale": ctx.attr("scale", 0.0)}
    return ctx.op("linear_attention", [ctx.input(i) for i in range(6)], attrs, num_outputs=2)
