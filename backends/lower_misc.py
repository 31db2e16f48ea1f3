"""Lowering rules for the remaining ops: losses, hardmax, dropout (inference), bitcast,
quantization (quantize / dequantize / requantize / dynamic), LRN, optimizer updates and resize."""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt
from irgraph.dtype import DType
from irgraph.graph import Node
from irgraph.ops.shapes import normalize_axis

from .kernel_ir import INDEX, Const, IRBuilder, LoweringError
from .lower_ops import _b, _need_const, _out, emit_reduce, rule_arg
from .lower_tensor import Fill, Generic, Map, Pending, T, View, iclamp, iconst, isub


# ---- losses, selection, scatter, quantization ------------------------------------------------------
def _sum_all(ctx, t: T, acc_d: DType) -> T:
    """sum(t) over all axes as a Pending scalar (acc_d)."""
    axes = tuple(range(t.rank))

    def emit(c, dest):
        emit_reduce(c, t, axes, lambda b, a, v: b.add(a, v), 0, acc_d, None, dest)
    return Pending((), acc_d, ctx, emit, "sum")


def rule_nll_loss(ctx, n, ins):
    x, tgt = ins[0], ins[1]
    w = ins[2] if len(ins) > 2 else None
    _, odt = _out(n)
    cd = dt.float32 if x.dtype in (dt.float16, dt.bfloat16) else x.dtype
    C = x.shape[1]
    ii = n.attrs["ignore_index"]
    b = IRBuilder()

    def keep(idx):
        return Const(True, dt.bool_) if ii is None else b.ne(tgt.at(idx), Const(ii, tgt.dtype))

    def cls(idx):
        return iclamp(b.select(keep(idx), b.cast(tgt.at(idx), INDEX), iconst(0)), 0, C - 1)

    def weight(idx):
        wv = Const(1, cd) if w is None else b.cast(w.at([cls(idx)]), cd)
        return b.select(keep(idx), wv, Const(0, cd))

    def loss(idx):
        picked = b.cast(x.at([idx[0], cls(idx)] + list(idx[1:])), cd)
        return b.mul(b.neg(picked), weight(idx))
    L = Generic(tgt.shape, cd, ctx, loss, x.cost() + 6)
    red = n.attrs["reduction"]
    if red == "none":
        return [Map(lambda b_, v: b_.cast(v, odt), [L], {}, tgt.shape, cd, ctx, out_dtype=odt)]
    total = _sum_all(ctx, L, cd)
    if red == "sum":
        return [Map(lambda b_, v: b_.cast(v, odt), [total], {}, (), cd, ctx, out_dtype=odt)]
    wsum = _sum_all(ctx, Generic(tgt.shape, cd, ctx, weight, 4), cd)
    return [Map(lambda b_, s_, w_: b_.cast(b_.div(s_, w_), odt), [ctx.force(total), ctx.force(wsum)], {}, (),
                cd, ctx, out_dtype=odt)]


def rule_hardmax(ctx, n, ins):
    x = ins[0]
    axis = normalize_axis(n.attrs["axis"], x.rank)
    fake = Node("argmax", [n.inputs[0]], [], {"axis": axis, "keepdims": 1, "select_last_index": 0}, n.name)
    shape = list(x.shape)
    shape[axis] = 1
    fake.outputs = [type("O", (), {"type": type("TT", (), {"shape": tuple(shape)})(), "dtype": dt.int64})()]
    am = ctx.force(rule_arg(ctx, fake, [x])[0]) if x.size else None
    b = IRBuilder()

    def fn(idx):
        src = list(idx)
        src[axis] = iconst(0)
        hot = b.eq(idx[axis], am.at(src))
        return b.select(hot, Const(1, x.dtype), Const(0, x.dtype))
    if x.size == 0:
        return [x]
    return [Generic(x.shape, x.dtype, ctx, fn, 2)]


def rule_bitcast(ctx, n, ins):
    x = ins[0]
    if not isinstance(x, View):
        raise LoweringError("bitcast of a value computed in the same kernel", op=n.op, node=n.name)
    return [ctx.retype(x, n.attrs["to"])]


def _param(ctx, p: T | None, shape, axis: int, block: int):
    """A quantization scale / zero point as a tensor of ``shape`` (per tensor, axis or block)."""
    if p is None:
        return None
    if p.size == 1:
        return p.reshape(()).broadcast_to(shape) if p.rank else p.broadcast_to(shape)
    ax = normalize_axis(axis, len(shape))
    if block <= 0:
        dims = [1] * len(shape)
        dims[ax] = p.size
        return p.reshape(dims).broadcast_to(shape)

    def fn(idx):
        src = list(idx)
        src[ax] = _b.idx_div(idx[ax], iconst(block))
        return p.at(src)
    return Generic(shape, p.dtype, ctx, fn, p.cost() + 1)


def rule_quantize_linear(ctx, n, ins):
    from irgraph.ops.quant import FLOAT8_TYPES, INT_QUANT_TYPES, int_range
    x, s = ins[0], ins[1]
    zp = ins[2] if len(ins) > 2 else None
    shape, odt = _out(n)
    a = n.attrs
    S = _param(ctx, s, shape, a["axis"], a["block_size"])
    Z = _param(ctx, zp, shape, a["axis"], a["block_size"])
    prec = a["precision"] or (s.dtype if s.dtype.is_float else dt.float64)
    sat = bool(a["saturate"])

    def formula(b, xv, sv, *zv):
        q = b.div(b.cast(xv, prec), b.cast(sv, prec))
        if odt in INT_QUANT_TYPES:
            r = b.cast(b.round(q), dt.float64)
            r = b.select(b.isnan(r), Const(0.0, dt.float64), r)
            if zv:
                r = b.add(r, b.cast(zv[0], dt.float64))
            lo, hi = int_range(odt)
            r = b.min(b.max(r, Const(lo, dt.float64)), Const(hi, dt.float64))
            return b.cast(r, odt)
        if odt in FLOAT8_TYPES:
            if sat:
                import ml_dtypes
                m = float(ml_dtypes.finfo(odt.np).max)
                q = b.min(b.max(q, Const(-m, prec)), Const(m, prec))
            return b.cast(q, odt)
        q = b.cast(q, dt.float32)
        if zv:
            q = b.add(q, b.cast(zv[0], dt.float32))
        return b.cast(q, odt)
    ops = [x, S] + ([Z] if Z is not None else [])
    return [Map(formula, ops, {}, shape, x.dtype, ctx, out_dtype=odt)]


def rule_dequantize_linear(ctx, n, ins):
    x, s = ins[0], ins[1]
    zp = ins[2] if len(ins) > 2 else None
    shape, odt = _out(n)
    a = n.attrs
    S = _param(ctx, s, shape, a["axis"], a["block_size"])
    Z = _param(ctx, zp, shape, a["axis"], a["block_size"])
    cdt = dt.float64 if x.dtype is dt.int32 else dt.float32

    def formula(b, xv, sv, *zv):
        if x.dtype.is_int:
            d = b.cast(xv, dt.int64)
            if zv:
                d = b.sub(d, b.cast(zv[0], dt.int64))
            xf = b.cast(d, cdt)
        else:
            xf = b.cast(xv, cdt)
        return b.cast(b.mul(xf, b.cast(sv, cdt)), odt)
    ops = [x, S] + ([Z] if Z is not None else [])
    return [Map(formula, ops, {}, shape, x.dtype, ctx, out_dtype=odt)]


def rule_requantize(ctx, n, ins):
    from irgraph.ops.quant import int_range
    acc, m = ins[0], ins[1]
    zp = ins[2] if len(ins) > 2 else None
    shape, odt = _out(n)
    lo, hi = int_range(odt)

    def formula(b, av, mv, *zv):
        r = b.mul(b.cast(av, dt.float64), b.cast(mv, dt.float64))
        if zv:
            r = b.add(r, b.cast(zv[0], dt.float64))
        r = b.min(b.max(b.round(r), Const(lo, dt.float64)), Const(hi, dt.float64))
        r = b.select(b.isnan(r), Const(0.0, dt.float64), r)
        return b.cast(r, odt)
    ops = [t.broadcast_to(shape) for t in [acc, m] + ([zp] if zp is not None else [])]
    return [Map(formula, ops, {}, shape, acc.dtype, ctx, out_dtype=odt)]


def rule_dynamic_quantize_linear(ctx, n, ins):
    x = ins[0]
    f32 = dt.float32
    axes = tuple(range(x.rank))

    def reduced(op, ident):
        def emit(c, dest):
            emit_reduce(c, x, axes, lambda b, a, v: getattr(b, op)(a, v), ident, f32, None, dest)
        return ctx.force(Pending((), f32, ctx, emit, op))
    hi, lo = reduced("max", 0.0), reduced("min", 0.0)   # 0 as identity: the range includes 0

    def scale_f(b, h, l_):
        span = b.select(b.eq(h, l_), Const(1.0, f32), b.sub(h, l_))
        return b.div(span, Const(255.0, f32))
    scale = ctx.force(Map(scale_f, [hi, lo], {}, (), f32, ctx))

    def zp_f(b, l_, sc):
        z = b.sub(Const(0.0, f32), b.div(l_, sc))
        return b.round(b.min(b.max(z, Const(0.0, f32)), Const(255.0, f32)))
    zpf = ctx.force(Map(zp_f, [lo, scale], {}, (), f32, ctx))

    def y_f(b, xv, sc, z):
        r = b.add(b.round(b.div(xv, sc)), z)
        return b.cast(b.min(b.max(r, Const(0.0, f32)), Const(255.0, f32)), dt.uint8)
    y = Map(y_f, [x, scale.broadcast_to(x.shape), zpf.broadcast_to(x.shape)], {}, x.shape, f32, ctx,
            out_dtype=dt.uint8)
    return [y, scale, Map(lambda b, z: b.cast(z, dt.uint8), [zpf], {}, (), f32, ctx, out_dtype=dt.uint8)]


def rule_lrn(ctx, n, ins):
    x = ins[0]
    a = n.attrs
    size = a["size"]
    lo = (size - 1) // 2
    cd = dt.float32 if x.dtype in (dt.float16, dt.bfloat16) else x.dtype
    C = x.shape[1]
    b = IRBuilder()
    xf = ctx.force(x)

    def fn(idx):
        acc = Const(0, cd)
        for k in range(size):
            ch = isub(idx[1], lo - k)
            ok = b.and_(b.ge(ch, iconst(0)), b.lt(ch, iconst(C)))
            v = b.cast(xf.at([idx[0], iclamp(ch, 0, C - 1)] + list(idx[2:])), cd)
            acc = b.add(acc, b.select(ok, b.mul(v, v), Const(0, cd)))
        denom = b.pow(b.add(Const(a["bias"], cd), b.mul(Const(a["alpha"] / size, cd), acc)), Const(a["beta"], cd))
        return b.cast(b.div(b.cast(xf.at(idx), cd), denom), x.dtype)
    return [Generic(x.shape, x.dtype, ctx, fn, 4 * size + 30)]


def _update_rule(kind):
    """adagrad / adam / momentum: elementwise updates computed in X's dtype (float32 for half
    types) with the scalar factors formed in float64, as the references do."""
    def rule(ctx, n, ins):
        a = n.attrs
        R, Tn, X = ins[0], ins[1], ins[2]
        rest = ins[3:]
        xd = X.dtype
        ct = dt.float32 if xd in (dt.float16, dt.bfloat16) else xd
        shape = X.shape
        f64 = dt.float64
        r0 = R.reshape(()) if R.rank else R
        t0 = Tn.reshape(()) if Tn.rank else Tn
        ops = [r0.broadcast_to(shape), t0.broadcast_to(shape), X] + [t.broadcast_to(shape) for t in rest]

        def C(b, v):
            return b.const(v, ct) if False else Const(v, ct)

        def prep(b, r, t, x, *st):
            return b.cast(r, f64), t, b.cast(x, ct), [b.cast(v, ct) for v in st]

        def out_k(k):
            def f(b, r, t, x, *st):
                r, t, x, st = prep(b, r, t, x, *st)
                g = b.add(b.mul(C(b, a["norm_coefficient"]), x), st[0])
                if kind == "adagrad":
                    h = st[1]
                    rate = b.cast(b.div(r, b.add(Const(1.0, f64), b.mul(b.cast(t, f64), Const(a["decay_factor"], f64)))), ct)
                    h_new = b.add(h, b.mul(g, g))
                    x_new = b.sub(x, b.div(b.mul(rate, g), b.add(b.sqrt(h_new), C(b, a["epsilon"]))))
                    res = [x_new, h_new]
                elif kind == "adam":
                    v, h = st[1], st[2]
                    al, be = a["alpha"], a["beta"]
                    v_new = b.add(b.mul(C(b, al), v), b.mul(C(b, 1 - al), g))
                    h_new = b.add(b.mul(C(b, be), h), b.mul(C(b, 1 - be), b.mul(g, g)))
                    tf = b.cast(t, f64)
                    num = b.sqrt(b.sub(Const(1.0, f64), b.pow(Const(be, f64), tf)))
                    den = b.sub(Const(1.0, f64), b.pow(Const(al, f64), tf))
                    rate = b.select(b.gt(t, Const(0, t.dtype)), b.div(b.mul(r, num), den), r)
                    x_new = b.sub(x, b.mul(b.cast(rate, ct), b.div(v_new, b.add(b.sqrt(h_new), C(b, a["epsilon"])))))
                    x_new = b.mul(C(b, 1 - a["norm_coefficient_post"]), x_new)
                    res = [x_new, v_new, h_new]
                else:
                    v = st[1]
                    al = C(b, a["alpha"])
                    beta = b.select(b.gt(t, Const(0, t.dtype)), C(b, a["beta"]), C(b, 1.0))
                    v_new = b.add(b.mul(al, v), b.mul(beta, g))
                    rr = b.cast(r, ct)
                    if a["mode"] == "nesterov":
                        x_new = b.sub(x, b.mul(rr, b.add(g, b.mul(al, v_new))))
                    else:
                        x_new = b.sub(x, b.mul(rr, v_new))
                    res = [x_new, v_new]
                return b.cast(res[k], xd)
            return f
        return [Map(out_k(k), ops, {}, shape, xd, ctx, out_dtype=xd) for k in range(len(n.outputs))]
    return rule


def rule_resize(ctx, n, ins):
    """Separable resampling: the source indices and weights of each resized axis are computed
    at compile time with the op's own geometry helpers and become small constant tables."""
    from irgraph.ops import image as im
    ins = list(ins) + [None] * (4 - len(ins))
    x = ins[0]
    a = n.attrs
    shape, odt = _out(n)
    roi = _need_const(n, 1, "roi") if len(n.inputs) > 1 and n.inputs[1] is not None else None
    scales = _need_const(n, 2, "scales") if len(n.inputs) > 2 and n.inputs[2] is not None else None
    sizes = _need_const(n, 3, "sizes") if len(n.inputs) > 3 and n.inputs[3] is not None else None
    plan, rois = im.resize_geometry(x.shape, a, roi, scales, sizes)
    ctm = a["coordinate_transformation_mode"]
    mode = a["mode"]
    b = IRBuilder()
    wd = x.dtype if mode == "nearest" else dt.float64
    cur = x if mode == "nearest" else Map(lambda b_, v: b_.cast(v, dt.float64), [x], {}, x.shape, x.dtype, ctx,
                                          out_dtype=dt.float64)
    for (ax, scale, m), roi_ax in zip(plan, rois):
        length = cur.shape[ax]
        if im.resize_keeps_axis(ctm, scale, m, length, roi_ax):
            continue
        new_shape = list(cur.shape)
        new_shape[ax] = m
        if m == 0 or length == 0:
            cur = Fill(Const(0, wd), new_shape, ctx)
            continue
        src, outside = im._source_coords(ctm, m, length, scale, roi_ax)
        if mode == "nearest":
            tab = ctx.const(im._nearest_index(src, a["nearest_mode"], length).astype(np.int64).reshape(m, 1), "resize_idx")
            wts = None
        else:
            idx, w = im._interp_taps(src, length, mode, scale, a["cubic_coeff_a"], a["antialias"],
                                     a["exclude_outside"])
            tab = ctx.const(idx.astype(np.int64), "resize_idx")
            wts = ctx.const(w.astype(np.float64), "resize_w")
        taps = tab.shape[1]
        mask = ctx.const(outside.reshape(m), "resize_outside") if outside is not None and outside.any() else None
        fill = a["extrapolation_value"]
        src_t = ctx.force(cur) if taps > 1 and cur.cost() > 2 else cur

        def fn(idx, _src=src_t, _ax=ax, _tab=tab, _w=wts, _mask=mask, _taps=taps, _fill=fill):
            i = idx[_ax]
            acc = None
            for k in range(_taps):
                s_idx = list(idx)
                s_idx[_ax] = _tab.at([i, iconst(k)])
                v = _src.at(s_idx)
                if _w is not None:
                    v = b.mul(v, _w.at([i, iconst(k)]))
                acc = v if acc is None else b.add(acc, v)
            if _mask is not None:
                fv = Const(fill, wd) if wd.is_float else Const(np.clip(round(_fill), *_int_limits(wd)), wd)
                acc = b.select(_mask.at([i]), fv, acc)
            return acc
        cur = Generic(new_shape, wd, ctx, fn, src_t.cost() + 3 * taps)
    if wd is not odt:
        if odt.is_int:
            lo, hi = _int_limits(odt)
            return [Map(lambda b_, v: b_.cast(b_.min(b_.max(b_.round(v), Const(lo, wd)), Const(hi, wd)), odt),
                        [cur], {}, shape, wd, ctx, out_dtype=odt)]
        return [Map(lambda b_, v: b_.cast(v, odt), [cur], {}, shape, wd, ctx, out_dtype=odt)]
    return [cur]


def _int_limits(d: DType):
    info = np.iinfo(d.np)
    return int(info.min), int(info.max)
