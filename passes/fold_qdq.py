"""Quantize/dequantize pairs and integer ops folded into int8 kernels (``quant_conv`` / ``quant_matmul``).

Quantized models reach the IR in three spellings, all turned into the same kernels:

- QDQ (ONNX QDQ format, and what ``quantize_static`` inserts): ``conv(DQ(xq), DQ(wq), b)`` and
  ``matmul(DQ(xq), DQ(wq))`` (the weights possibly transposed, as Gemm's ``transB`` imports)
  become a quant node with a float32 output; an int32 bias ``DQ(bq)`` whose scale is the
  product of the input and weight scales becomes the accumulator bias, exactly as
  ``QLinearConv`` adds it.
- QOperator: ``requantize(conv_integer(...) [+ bias], multiplier, y_zp)`` (QLinearConv) and
  ``requantize(matmul_integer(...), ...)`` (QLinearMatMul).
- dynamic: ``cast(matmul_integer(xq, wq, xz, wz)) * (x_scale * w_scale)`` after
  DynamicQuantizeLinear (MatMulInteger / ConvInteger models).

A quant node with a float32 output then absorbs, one at a time while it has no other reader, a
per-channel or scalar constant ``add`` (bias), an activation (relu, clip, leaky_relu, sigmoid,
tanh, gelu) and a per-tensor ``quantize_linear`` (its output becomes uint8/int8: the scales are
folded into the multiplier when the activation commutes with scaling, else kept as
``output_scale``). ``Q(DQ(x))`` with the same parameters is ``x``, and a per-tensor DQ moves below
the ops that commute with it (max_pool, reshape, transpose, squeeze, unsqueeze, identity), so
integer tensors flow between kernels without float round trips.

Weights that are not constants, or conv/matmul shapes the rules do not know, stay as they are
(the QDQ graph is still correct, only not int8).
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt
from irgraph.graph import Graph, Node, Value
from irgraph.ops import qlinear  # noqa: F401  (registers quant_conv / quant_matmul)
from irgraph.ops.evaluate import known_value
from irgraph.ops.qlinear import HOMOGENEOUS
from irgraph.ops.registry import get_op

from .registry import register_pass
from .rewrite import Match, Op, Rule, Var, rewrite

INT8 = (dt.int8, dt.uint8)
QUANT_OPS = ("quant_conv", "quant_matmul")
# ops through which a per-tensor dequantize commutes (same scale and zero point in and out)
COMMUTING = ("max_pool", "reshape", "transpose", "squeeze", "unsqueeze", "identity")
CONV_ATTRS = ("strides", "pads", "dilations", "group", "auto_pad")
# quant node inputs
X, XZ, W, WZ, MULT, ACC_BIAS, BIAS, YZ = range(8)


# ---- values known at compile time ------------------------------------------------------------------
_EVAL_OPS = ("reshape", "transpose", "squeeze", "unsqueeze", "cast", "identity", "mul", "div",
             "dequantize_linear", "flatten")


def value(v: Value | None, depth: int = 4):
    """``v``'s value when it is known at compile time (constants, and small chains of movement
    and arithmetic on constants, whatever their size); else None."""
    if v is None:
        return None
    a = known_value(v)
    if a is not None or depth == 0:
        return a
    n = v.producer
    if n is None or n.op not in _EVAL_OPS or len(n.outputs) != 1:
        return None
    args = []
    for x in n.inputs:
        if x is None:
            args.append(None)
            continue
        ax = value(x, depth - 1)
        if ax is None:
            return None
        args.append(ax)
    try:
        with np.errstate(all="ignore"):
            out = get_op(n.op).run_reference(args, n.attrs)[0]
    except Exception:
        return None
    return np.asarray(out)


def _scalar(a) -> bool:
    return a is not None and np.asarray(a).size == 1


def dq_parts(v: Value | None, per_tensor: bool = True):
    """(xq, scale, zero_point, node) when ``v`` is a dequantize_linear of an 8-bit tensor (per
    tensor unless ``per_tensor`` is False); else None."""
    if v is None or v.producer is None or v.producer.op != "dequantize_linear":
        return None
    n = v.producer
    xq = n.inputs[0]
    if xq.dtype not in INT8 or n.attrs["block_size"] or v.dtype is not dt.float32:
        return None
    s = n.inputs[1]
    z = n.inputs[2] if len(n.inputs) > 2 else None
    if s.dtype is not dt.float32:
        return None
    if per_tensor and (s.shape is None or np.prod(s.shape, dtype=np.int64) != 1):
        return None
    return xq, s, z, n


def _const_weight(v: Value, rank: int, channel_axis: int):
    """(wq, w_scale (C,) or scalar, w_zero_point or None) for DQ(constant int8 weights) whose
    scale is per tensor or per ``channel_axis``; else None."""
    p = dq_parts(v, per_tensor=False)
    if p is None:
        return None
    wq, s, z, n = p
    wa, sa = value(wq), value(s)
    za = value(z) if z is not None else None
    if wa is None or sa is None or (z is not None and za is None) or wa.ndim != rank:
        return None
    if sa.size > 1:
        axis = n.attrs["axis"] % rank
        if axis != channel_axis or sa.ndim != 1 or sa.size != wa.shape[axis]:
            return None
    return wa, np.asarray(sa, np.float32).reshape(-1) if sa.size > 1 else np.float32(sa.reshape(())), \
        (None if za is None else np.asarray(za).reshape(-1) if za.size > 1 else np.asarray(za).reshape(()))


def _multiplier(g: Graph, xs: Value, ws) -> Value:
    """x_scale * w_scale in float32: a constant when x_scale is known, else a node."""
    xa = value(xs)
    if xa is not None:
        return g.add_const(np.asarray(np.float32(xa.reshape(())) * ws, np.float32), "qmult")
    return g.op("mul", [xs, g.add_const(np.asarray(ws, np.float32), "w_scale")])


def _bias_parts(g: Graph, b: Value | None, xs: Value, ws, channels: int):
    """(acc_bias, bias) inputs for a float bias ``b``: an int32 DQ whose scale is x_scale *
    w_scale goes to the accumulator (as QLinearConv adds it); a known value stays float."""
    if b is None:
        return None, None
    n = b.producer
    xa = value(xs)
    if n is not None and n.op == "dequantize_linear" and n.inputs[0].dtype is dt.int32 and xa is not None:
        bq, bs = value(n.inputs[0]), value(n.inputs[1])
        bz = value(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] is not None else None
        if bq is not None and bq.dtype == np.int32 and bs is not None and (bz is None or not np.any(bz)):
            want = np.float32(xa.reshape(())) * np.asarray(ws, np.float32)
            if np.allclose(np.broadcast_to(bs.reshape(-1), (channels,)), np.broadcast_to(want, (channels,)),
                           rtol=1e-6, atol=0):
                return g.add_const(np.broadcast_to(bq.reshape(-1), (channels,)).astype(np.int32), "acc_bias"), None
    a = value(b)
    if a is None or a.size not in (1, channels):
        return False, False
    return None, g.add_const(np.broadcast_to(np.asarray(a, np.float32).reshape(-1), (channels,)).copy(), "bias")


def _zp(g: Graph, z, dtype, name: str):
    if z is None:
        return None
    return g.add_const(np.asarray(z).astype(dtype.np), name)


# ---- QDQ contractions ----------------------------------------------------------------------------
def _fold_conv(m: Match, g: Graph):
    conv = m.root
    x = dq_parts(m["x"])
    if x is None or len(m["w"].shape or ()) != 4:
        return None
    wp = _const_weight(m["w"], 4, 0)
    if wp is None:
        return None
    wq, ws, wz = wp
    xq, xs, xz, _ = x
    channels = wq.shape[0]
    acc_b, bias = _bias_parts(g, conv.inputs[2] if len(conv.inputs) > 2 else None, xs, ws, channels)
    if acc_b is False:
        return None
    attrs = {k: conv.attrs[k] for k in CONV_ATTRS if k in conv.attrs}
    return g.op("quant_conv", [xq, xz, g.add_const(wq, "wq"), _zp(g, wz, m["w"].producer.inputs[0].dtype, "wz"),
                               _multiplier(g, xs, ws), acc_b, bias], attrs, name=conv.name)


def _fold_matmul(m: Match, g: Graph):
    mm = m.root
    x = dq_parts(m["x"])
    w = m["w"]
    if x is None or w.shape is None or len(w.shape) != 2:
        return None
    transposed = w.producer is not None and w.producer.op == "transpose" and tuple(w.producer.attrs["perm"]) == (1, 0)
    wp = _const_weight(w.producer.inputs[0], 2, 0) if transposed else _const_weight(w, 2, 1)
    if wp is None:
        return None
    wq, ws, wz = wp
    if transposed:
        wq = np.ascontiguousarray(wq.T)
    xq, xs, xz, _ = x
    src = (w.producer.inputs[0] if transposed else w).producer.inputs[0]
    return g.op("quant_matmul", [xq, xz, g.add_const(wq, "wq"), _zp(g, wz, src.dtype, "wz"),
                                 _multiplier(g, xs, ws)], name=mm.name)


# ---- QOperator and dynamic spellings ---------------------------------------------------------------
def _channel_vector(a, channels: int):
    """A known scalar or per-channel array (any broadcastable shape) as a (C,) vector or a scalar."""
    a = np.asarray(a)
    if a.size == 1:
        return a.reshape(())
    if a.size != channels or sum(d != 1 for d in a.shape) != 1:
        return None
    return a.reshape(-1)


def _integer_node(v: Value):
    """(node, int32 accumulator bias Value or None) for an integer conv/matmul result, optionally
    plus a constant per-channel int32 bias (QLinearConv's)."""
    n = v.producer
    if n is None:
        return None
    bias = None
    if n.op == "add" and v.dtype is dt.int32:
        for a, b in ((0, 1), (1, 0)):
            p = n.inputs[a].producer
            if p is not None and p.op in ("conv_integer", "matmul_integer"):
                bias, n = n.inputs[b], p
                break
        else:
            return None
    if n.op not in ("conv_integer", "matmul_integer"):
        return None
    return n, bias


def _from_integer(g: Graph, inode: Node, acc_bias: Value | None, multiplier, y_zp: Value | None):
    """The quant node for an integer conv/matmul; ``multiplier`` a known array or a Value."""
    conv = inode.op == "conv_integer"
    ins = list(inode.inputs) + [None] * (4 - len(inode.inputs))
    x, w, xz, wz = ins[:4]
    wa = value(w)
    if wa is None or (wz is not None and value(wz) is None):
        return None
    channels = wa.shape[0] if conv else wa.shape[-1]
    if conv and wa.ndim != 4 or not conv and wa.ndim != 2:
        return None
    if isinstance(multiplier, Value):
        mv = multiplier
        if mv.shape is None or int(np.prod(mv.shape, dtype=np.int64)) not in (1, channels):
            return None
        if len(mv.shape) != 1 and int(np.prod(mv.shape, dtype=np.int64)) > 1:
            mv = g.op("reshape", [mv, g.add_const(np.array([-1], np.int64), "shape")])
        elif len(mv.shape) > 1:
            mv = g.op("reshape", [mv, g.add_const(np.zeros(0, np.int64), "shape")])
    else:
        mvec = _channel_vector(multiplier, channels)
        if mvec is None:
            return None
        mv = g.add_const(mvec.astype(np.float32), "qmult")
    ab = None
    if acc_bias is not None:
        ba = value(acc_bias)
        if ba is None or ba.dtype != np.int32:
            return None
        bvec = _channel_vector(ba, channels)
        if bvec is None:
            return None
        ab = g.add_const(np.broadcast_to(bvec, (channels,)).astype(np.int32), "acc_bias")
    if xz is not None and (xz.shape is None or int(np.prod(xz.shape, dtype=np.int64)) != 1):
        return None                      # a per-row input zero point: not per-tensor
    if xz is not None and xz.shape:
        xz = g.op("reshape", [xz, g.add_const(np.zeros(0, np.int64), "shape")])
    wzc = None
    if wz is not None:
        vec = _channel_vector(value(wz), channels)
        if vec is None:
            return None
        wzc = g.add_const(vec, "wz")
    op = "quant_conv" if conv else "quant_matmul"
    attrs = {k: inode.attrs[k] for k in CONV_ATTRS if k in inode.attrs} if conv else {}
    ins = [x, xz, g.add_const(wa, "wq"), wzc, mv, ab, None, y_zp]
    return g.op(op, ins, attrs, name=inode.name)


def _fold_requantize(m: Match, g: Graph):
    rq = m.root
    hit = _integer_node(rq.inputs[0])
    if hit is None:
        return None
    mult = value(rq.inputs[1])
    if mult is None:
        return None
    yz = rq.inputs[2] if len(rq.inputs) > 2 else None
    if yz is None:
        yz = g.add_const(np.array(0, rq.outputs[0].dtype.np), "y_zero_point")
    elif value(yz) is None or value(yz).size != 1:
        return None
    else:
        yz = g.add_const(value(yz).reshape(()).astype(rq.outputs[0].dtype.np), "y_zero_point")
    return _from_integer(g, hit[0], hit[1], mult, yz)


def _fold_scaled_integer(m: Match, g: Graph):
    """cast(integer contraction) * scale (dynamic quantization)."""
    hit = _integer_node(m["acc"])
    if hit is None or hit[1] is not None:
        return None
    s = m["s"]
    a = value(s)
    return _from_integer(g, hit[0], None, a if a is not None else s, None)


# ---- epilogue absorption -------------------------------------------------------------------------
def _float_quant(v: Value) -> Node | None:
    n = v.producer
    if n is None or n.op not in QUANT_OPS or len(n.inputs) > YZ and n.inputs[YZ] is not None:
        return None
    return n


def _channels(q: Node) -> int:
    o = q.outputs[0]
    return o.shape[1] if q.op == "quant_conv" else o.shape[-1]


def _rebuild(g: Graph, q: Node, inputs: dict | None = None, **attrs) -> Value:
    ins = list(q.inputs) + [None] * (8 - len(q.inputs))
    for k, v in (inputs or {}).items():
        ins[k] = v
    return g.op(q.op, ins, {**q.attrs, **attrs}, name=q.name)


def _per_channel_const(q: Node, c: Value):
    """A known value broadcasting along the quant node's channel axis only, as (C,) float32."""
    a = value(c)
    o = q.outputs[0]
    if a is None or o.shape is None or a.ndim > len(o.shape):
        return None
    axis = 1 if q.op == "quant_conv" else len(o.shape) - 1
    shape = (1,) * (len(o.shape) - a.ndim) + a.shape
    ch = _channels(q)
    for k, d in enumerate(shape):
        if d != 1 and (k != axis or d != ch):
            return None
    return np.broadcast_to(np.asarray(a, np.float32).reshape(-1), (ch,)).astype(np.float32)


def _absorb_add(m: Match, g: Graph):
    q = _float_quant(m["q"])
    if q is None or q.attrs["activation"] != "none":
        return None
    c = _per_channel_const(q, m["c"])
    if c is None or m.root.outputs[0].dtype is not dt.float32:
        return None
    old = value(q.inputs[BIAS]) if len(q.inputs) > BIAS and q.inputs[BIAS] is not None else None
    total = c if old is None else (np.asarray(old, np.float32) + c).astype(np.float32)
    return _rebuild(g, q, {BIAS: g.add_const(total, "bias")})


_ACTS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "leaky_relu": "leaky_relu"}


def _absorb_activation(m: Match, g: Graph):
    q = _float_quant(m["q"])
    n = m.root
    if q is None or q.attrs["activation"] != "none":
        return None
    if n.op in _ACTS:
        alpha = n.attrs.get("alpha", 0.0) if n.op == "leaky_relu" else 0.0
        return _rebuild(g, q, activation=_ACTS[n.op], alpha=float(alpha))
    if n.op == "gelu":
        return _rebuild(g, q, activation="gelu_tanh" if n.attrs["approximate"] == "tanh" else "gelu")
    if n.op == "clip":
        lo = value(n.inputs[1]) if len(n.inputs) > 1 and n.inputs[1] is not None else np.float32(-np.inf)
        hi = value(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] is not None else np.float32(np.inf)
        if lo is None or hi is None or not (_scalar(lo) and _scalar(hi)):
            return None
        return _rebuild(g, q, activation="clip", alpha=float(np.asarray(lo).reshape(())),
                        beta=float(np.asarray(hi).reshape(())))
    return None


def _absorb_quantize(m: Match, g: Graph):
    """Q(quant node with float output): the quant node writes uint8/int8 itself."""
    q = _float_quant(m["q"])
    qn = m.root
    if q is None or qn.attrs["block_size"] or not qn.attrs["saturate"]:
        return None
    ys = value(qn.inputs[1])
    zv = qn.inputs[2] if len(qn.inputs) > 2 else None
    za = value(zv) if zv is not None else np.zeros((), qn.outputs[0].dtype.np)
    odt = qn.outputs[0].dtype
    if odt not in INT8 or ys is None or za is None or ys.size != 1 or za.size != 1 or ys.dtype != np.float32:
        return None
    ys = np.float32(ys.reshape(()))
    if not ys > 0:
        return None
    yz = g.add_const(np.asarray(za).reshape(()).astype(odt.np), "y_zero_point")
    act = q.attrs["activation"]
    ins = list(q.inputs) + [None] * (8 - len(q.inputs))
    if act in HOMOGENEOUS:
        # scale folded into the multiplier (as QLinearConv's x_scale * w_scale / y_scale) and bias
        mv = ins[MULT]
        ma = value(mv)
        if ma is not None:
            new_m = g.add_const((np.asarray(ma, np.float32) / ys).astype(np.float32), "qmult")
        else:
            new_m = g.op("div", [mv, g.add_const(ys, "y_scale")])
        b = ins[BIAS]
        new_b = None if b is None else g.add_const((np.asarray(value(b), np.float32) / ys).astype(np.float32), "bias")
        attrs = {}
        if act == "clip":
            attrs = {"alpha": float(np.float32(q.attrs["alpha"]) / ys), "beta": float(np.float32(q.attrs["beta"]) / ys)}
        return _rebuild(g, q, {MULT: new_m, BIAS: new_b, YZ: yz}, **attrs)
    return _rebuild(g, q, {YZ: yz}, output_scale=float(np.float32(1) / ys))


# ---- Q/DQ simplifications --------------------------------------------------------------------------
def _same_params(a: Value, b: Value) -> bool:
    va, vb = value(a), value(b)
    return va is not None and vb is not None and va.size == 1 and vb.size == 1 and \
        va.dtype == vb.dtype and np.asarray(va).reshape(()) == np.asarray(vb).reshape(())


def _cancel_qdq(m: Match, g: Graph):
    qn = m.root
    p = dq_parts(m["d"])
    if p is None or qn.attrs["block_size"]:
        return None
    xq, s, z, _ = p
    z2 = qn.inputs[2] if len(qn.inputs) > 2 else None
    if xq.dtype is not qn.outputs[0].dtype or not _same_params(s, qn.inputs[1]):
        return None
    if (z is None) != (z2 is None) or (z is not None and not _same_params(z, z2)):
        return None
    return xq


def _sink_dq(m: Match, g: Graph):
    n = m.root
    p = dq_parts(n.inputs[0])
    if p is None or any(x is not None and value(x) is None for x in n.inputs[1:]):
        return None
    if n.op == "max_pool" and n.attrs.get("indices"):
        return None
    xq, s, z, dqn = p
    try:
        inner = g.op(n.op, [xq] + list(n.inputs[1:]), dict(n.attrs), name=n.name)
    except Exception:
        return None
    return g.op("dequantize_linear", [inner, s] + ([z] if z is not None else []), dict(dqn.attrs))


def _fold_add(m: Match, g: Graph):
    """Q(relu?(DQ(a) + DQ(b))), all per tensor and of one shape: quant_add (QLinearAdd)."""
    qn = m.root
    v = m["x"]
    users = g.users()
    act = "none"
    if v.producer is not None and v.producer.op == "relu" and len(users.get(v, ())) == 1:
        act, v = "relu", v.producer.inputs[0]
    add = v.producer
    if add is None or add.op != "add" or len(users.get(v, ())) != 1 or v in g.outputs or qn.attrs["block_size"]:
        return None
    parts = [dq_parts(x) for x in add.inputs]
    shape = qn.outputs[0].shape
    if any(p is None or p[0].shape != shape for p in parts) or qn.outputs[0].dtype not in INT8:
        return None
    ys = value(qn.inputs[1])
    zv = qn.inputs[2] if len(qn.inputs) > 2 else None
    yz = value(zv) if zv is not None else np.zeros((), qn.outputs[0].dtype.np)
    if ys is None or yz is None or ys.size != 1 or ys.dtype != np.float32:
        return None
    ins = []
    for xq, s, z, _ in parts:
        if value(s) is None or (z is not None and value(z) is None):
            return None
        ins += [xq, s, z if z is not None else g.add_const(np.zeros((), xq.dtype.np), "zero_point")]
    ins += [g.add_const(np.float32(ys.reshape(())), "y_scale"),
            g.add_const(np.asarray(yz).reshape(()).astype(qn.outputs[0].dtype.np), "y_zero_point")]
    return g.op("quant_add", ins, {"activation": act}, name=add.name)


def _is_float_quant(v: Value) -> bool:
    return _float_quant(v) is not None


RULES = [
    Rule("conv_qdq", Op("conv", Var("x"), Var("w")), _fold_conv),
    Rule("matmul_qdq", Op("matmul", Var("x"), Var("w")), _fold_matmul),
    Rule("qlinear", Op("requantize", Var("acc")), _fold_requantize),
    Rule("integer_scaled", Op("mul", Op("cast", Var("acc"), attrs={"to": dt.float32}), Var("s"), commutative=True),
         _fold_scaled_integer),
    Rule("absorb_bias", Op("add", Var("q", where=_is_float_quant), Var("c"), commutative=True), _absorb_add),
    Rule("absorb_activation", Op(("relu", "sigmoid", "tanh", "leaky_relu", "gelu", "clip"),
                                 Var("q", where=_is_float_quant)), _absorb_activation),
    Rule("absorb_quantize", Op("quantize_linear", Var("q", where=_is_float_quant)), _absorb_quantize),
    Rule("cancel_qdq", Op("quantize_linear", Var("d")), _cancel_qdq),
    Rule("qdq_add", Op("quantize_linear", Var("x")), _fold_add),
    Rule("sink_dequantize", Op(COMMUTING, Var("d")), _sink_dq),
]


def _single_reader_guard(rules):
    """Absorption rules need the quant node's output to have no other reader."""
    def wrap(fn):
        def replace(m: Match, g: Graph):
            if "q" in m:
                users = g.users().get(m["q"], [])
                if len(users) != 1 or m["q"] in g.outputs:
                    return None
            return fn(m, g)
        return replace
    return [Rule(r.name, r.pattern, wrap(r.replace)) if r.name.startswith("absorb") else r for r in rules]


@register_pass("fold_qdq", description="QDQ pairs, QLinearConv/QLinearMatMul and MatMulInteger/ConvInteger "
               "patterns folded into int8 quant_conv/quant_matmul kernels with fused requantization")
def fold_qdq(graph: Graph, ctx) -> bool:
    ops = {n.op for n in graph.nodes}
    if not ops & {"dequantize_linear", "quantize_linear", "requantize", "matmul_integer", "conv_integer",
                  "quant_conv", "quant_matmul"}:
        return False
    log: list = []
    changed = rewrite(graph, _single_reader_guard(RULES), log=log)
    graph.meta.setdefault("fold_qdq", []).extend(log)
    return changed
