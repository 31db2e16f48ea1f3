"""Lowering rules: registry op -> lazy tensor(s), by op family, and the loop-nest templates.

No elementwise op is listed here: every op of kind ``elementwise`` with a registry ``scalar``
formula lowers through ``rule_elementwise``, and reductions use the registry's combine formula
and ``REDUCTION_IDENTITY``. The rules below are the movement/index ops (index arithmetic),
reductions, and the templates (matmul, conv, pools, arg-reductions, cumulative sums).
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt
from irgraph.dtype import DType
from irgraph.graph import Node
from irgraph.ops.registry import get_op
from irgraph.ops.shapes import normalize_axes, normalize_axis

from .kernel_ir import INDEX, Assign, Const, IRBuilder, Local, Loop, LoweringError, Store, Var
from .lower_tensor import (Concat, Fill, Generic, Map, Pending, T, View, c_strides, delinearize,
                           iadd, iclamp, iconst, imod, imul, isub, numel)

_b = IRBuilder()


def _known(v):
    if v is None:
        return None
    if v.const is not None:
        return v.const
    return v.meta.get("value")


def _need_const(n: Node, i: int, what: str):
    v = n.inputs[i] if i < len(n.inputs) else None
    if v is None:
        return None
    a = _known(v)
    if a is None:
        raise LoweringError(f"{what} (input {i}) is only known at run time", op=n.op, node=n.name)
    return np.asarray(a)


def _ints(a) -> list:
    return [int(x) for x in np.asarray(a).reshape(-1)]


def _out(n: Node, i: int = 0):
    return n.outputs[i].type.shape, n.outputs[i].dtype


# ---- elementwise ---------------------------------------------------------------------------------
def rule_elementwise(ctx, n: Node, ins):
    opdef = get_op(n.op)
    if any(t is None for t in ins):
        raise LoweringError("an optional input is absent", op=n.op, node=n.name)
    shape, odt = _out(n)
    ops = [t.broadcast_to(shape) for t in ins]
    return [Map(opdef.scalar, ops, n.attrs, shape, ins[0].dtype, ctx, out_dtype=odt)]


# ---- reductions ----------------------------------------------------------------------------------
def _group_dims(x: T, kinds: list):
    """Drop unit dims, then merge neighbours of the same kind ('k'ept / 'r'educed) where the
    tensor allows it without division. Returns (tensor, kinds)."""
    keep = [k for k, d in enumerate(x.shape) if d != 1]
    if len(keep) != x.rank:
        x2 = x.try_reshape([x.shape[k] for k in keep])
        if x2 is not None:
            x, kinds = x2, [kinds[k] for k in keep]
    shape = list(x.shape)
    k = len(shape) - 1
    while k > 0:
        if kinds[k] == kinds[k - 1]:
            merged = shape[:k - 1] + [shape[k - 1] * shape[k]] + shape[k + 1:]
            x2 = x.try_reshape(merged)
            if x2 is not None:
                x, shape = x2, merged
                kinds = kinds[:k] + kinds[k + 1:]
        k -= 1
    return x, kinds


def emit_reduce(ctx, x: T, axes, combine, ident, acc_d: DType, post, dest: View) -> None:
    """Store ``post(fold(combine, x over axes, ident))`` into ``dest`` (the kept dims, in order).

    When the innermost input axis is reduced, each output keeps a scalar accumulator and the
    reduced loop is innermost (vectorized with reassociation); otherwise the accumulators live
    in memory and the innermost loop runs over a kept axis.
    """
    from .lower import PARALLEL_MIN_WORK, cast_to
    axes = set(axes)
    kinds = ["r" if k in axes else "k" for k in range(x.rank)]
    kept_shape = [d for d, k in zip(x.shape, kinds) if k == "k"]
    red = numel([d for d, k in zip(x.shape, kinds) if k == "r"])
    od = dest.dtype
    if numel(kept_shape) == 0:
        return
    if red == 0 or not any(d > 1 for d, k in zip(x.shape, kinds) if k == "r"):
        # nothing (identity) or one element to fold per output: an elementwise map
        dk0 = dest.reshape(kept_shape)
        if red == 0:
            t = Map(lambda b, a: _post(b, post, a, od), [Fill(Const(ident, acc_d), kept_shape, ctx)], {},
                    kept_shape, acc_d, ctx, out_dtype=od)
        else:
            t = Map(lambda b, v: _post(b, post, combine(b, Const(ident, acc_d), b.cast(v, acc_d)), od),
                    [x.reshape(kept_shape)], {}, kept_shape, x.dtype, ctx, out_dtype=od)
        ctx.store(t, dk0)
        return
    dk = dest.try_reshape(kept_shape)
    if dk is None:
        raise LoweringError("internal: reduction destination is not a view of the kept dims")
    x, kinds = _group_dims(x, kinds)
    work = x.size * (1 + x.cost() // 4)
    kept_n = numel([d for d, k in zip(x.shape, kinds) if k == "k"])
    parallel = work >= PARALLEL_MIN_WORK and kept_n > 1
    fast = IRBuilder(fast=True)
    if kinds[-1] == "r":
        kidx_pos = [k for k, kd in enumerate(kinds) if kd == "k"]
        ridx_pos = [k for k, kd in enumerate(kinds) if kd == "r"]
        K = [x.shape[k] for k in kidx_pos]
        R = [x.shape[k] for k in ridx_pos]
        dkk = dk.try_reshape(K) if K else dk.try_reshape([])
        if dkk is None:
            raise LoweringError("internal: reduction destination reshape")
        with ctx.stage():
            acc = Var(f"acc{next(ctx._n)}", acc_d)
            o = ctx.var() if K else None
            kvars = delinearize(o, K) if K else []
            rloop, rvars, rbody = ctx.loops(R, ["serial"] * (len(R) - 1) + ["vector"])
            idx = [None] * x.rank
            for p, v in zip(kidx_pos, kvars):
                idx[p] = v
            for p, v in zip(ridx_pos, rvars):
                idx[p] = v
            xv = x.at(idx)
            rbody.append(Assign(acc, combine(fast, acc, cast_to(xv, acc_d))))
            res = _post(_b, post, acc, od)
            stmts = [Local(acc, Const(ident, acc_d)), rloop, Store(dkk.buf, dkk.flat(kvars), res)]
            if K:
                ctx.body.append(Loop(o, numel(K), "parallel" if parallel else "serial", stmts))
            else:
                ctx.body.extend(stmts)
        return
    # accumulators in memory
    kshape = [d for d, k in zip(x.shape, kinds) if k == "k"]
    direct = post is None and acc_d is od and dk.contiguous
    if direct:
        accv = dk.try_reshape(kshape)
    else:
        accv = View.of(ctx.buffer("acc", acc_d, kshape, "temp"), ctx)
    ctx.store(Fill(Const(ident, acc_d), kshape, ctx), accv)
    with ctx.stage():
        lk = ["serial"] * x.rank
        lk[-1] = "vector"
        if parallel and kinds[0] == "k":
            lk[0] = "parallel" if x.rank > 1 else "parallel"
        outer, vars_, body = ctx.loops(x.shape, lk)
        kv = [v for v, k in zip(vars_, kinds) if k == "k"]
        cur = accv.at(kv)
        body.append(Store(accv.buf, accv.flat(kv), combine(_b, cur, cast_to(x.at(vars_), acc_d))))
        ctx.body.append(outer)
    if not direct:
        t = Map(lambda b, a: _post(b, post, a, od), [accv], {}, kshape, acc_d, ctx, out_dtype=od)
        ctx.store(t, dk.try_reshape(kshape))


def _post(b, post, a, od):
    r = post(b, a) if post is not None else a
    return b.cast(r, od)


def _reduce_axes(n: Node, rank: int):
    axes = _need_const(n, 1, "axes") if len(n.inputs) > 1 else None
    noop = bool(n.attrs.get("noop_with_empty_axes", 0))
    if axes is None or axes.size == 0:
        return None if noop else tuple(range(rank))
    return tuple(normalize_axes(_ints(axes), rank))


def acc_dtype_for(op: str, d: DType) -> DType:
    if d in (dt.float16, dt.bfloat16):
        return dt.float32
    if op == "reduce_mean" and d.is_int:
        return dt.float64
    return d


def rule_reduce(ctx, n: Node, ins):
    from irgraph.ops.reduction import REDUCTION_IDENTITY
    x = ins[0]
    axes = _reduce_axes(n, x.rank)
    shape, odt = _out(n)
    if axes is None:
        return [x]
    opdef = get_op(n.op)
    acc_d = acc_dtype_for(n.op, x.dtype)
    ident = REDUCTION_IDENTITY[n.op](x.dtype)
    post = None
    if n.op == "reduce_mean":
        count = numel([x.shape[a] for a in axes])
        post = lambda b, a, _c=count: b.div(a, b.const(_c, a))  # noqa: E731

    def emit(c, dest, _x=x, _axes=axes):
        emit_reduce(c, _x, _axes, opdef.scalar, ident, acc_d, post, dest)
    return [Pending(shape, odt, ctx, emit, n.op)]


def rule_arg(ctx, n: Node, ins):
    x = ins[0]
    axis = normalize_axis(n.attrs["axis"], x.rank)
    last = bool(n.attrs["select_last_index"])
    shape, odt = _out(n)
    is_max = n.op == "argmax"

    def emit(c, dest):
        from .lower import PARALLEL_MIN_WORK
        kept = [d for k, d in enumerate(x.shape) if k != axis]
        dk = dest.try_reshape(kept)
        b = IRBuilder()
        with c.stage():
            o = c.var()
            kv = delinearize(o, kept) if kept else []
            best = Var(f"best{next(c._n)}", x.dtype)
            bi = Var(f"arg{next(c._n)}", INDEX)
            r = c.var()
            idx0 = kv[:axis] + [iconst(0)] + kv[axis:]
            idx = kv[:axis] + [r] + kv[axis:]
            v = x.at(idx)
            if is_max:
                better = b.ge(v, best) if last else b.gt(v, best)
            else:
                better = b.le(v, best) if last else b.lt(v, best)
            if x.dtype.is_float:  # a NaN wins (numpy returns the first NaN)
                better = b.or_(better, b.and_(b.isnan(v), b.not_(b.isnan(best))))
            loop = Loop(r, x.shape[axis], "serial", [Assign(bi, b.select(better, r, bi)),
                                                      Assign(best, b.select(better, v, best))])
            stmts = [Local(best, x.at(idx0)), Local(bi, iconst(0)), loop,
                     Store(dk.buf, dk.flat(kv), b.cast(bi, odt))]
            par = x.size >= PARALLEL_MIN_WORK and numel(kept) > 1
            if kept:
                c.body.append(Loop(o, numel(kept), "parallel" if par else "serial", stmts))
            else:
                c.body.extend(stmts)
    if x.shape[axis] == 0:
        raise LoweringError("arg-reduction over an empty axis", op=n.op, node=n.name)
    return [Pending(shape, odt, ctx, emit, n.op)]


def rule_cumulative(ctx, n: Node, ins):
    x = ins[0]
    axis = normalize_axis(int(_need_const(n, 1, "axis").reshape(-1)[0]), x.rank)
    excl, rev = bool(n.attrs["exclusive"]), bool(n.attrs["reverse"])
    shape, odt = _out(n)
    acc_d = acc_dtype_for("", x.dtype)
    is_sum = n.op == "cumsum"

    def emit(c, dest):
        kept = [d for k, d in enumerate(x.shape) if k != axis]
        L = x.shape[axis]
        b = IRBuilder()
        with c.stage():
            o = c.var()
            kv = delinearize(o, kept) if kept else []
            acc = Var(f"acc{next(c._n)}", acc_d)
            r = c.var()
            pos = isub(iconst(L - 1), r) if rev else r
            idx = kv[:axis] + [pos] + kv[axis:]
            xv = b.cast(x.at(idx), acc_d)
            upd = Assign(acc, b.add(acc, xv) if is_sum else b.mul(acc, xv))
            st = Store(dest.buf, dest.flat(idx), b.cast(acc, odt))
            loop = Loop(r, L, "serial", [st, upd] if excl else [upd, st])
            stmts = [Local(acc, Const(0 if is_sum else 1, acc_d)), loop]
            if kept:
                c.body.append(Loop(o, numel(kept), "serial", stmts))
            else:
                c.body.extend(stmts)
    return [Pending(shape, odt, ctx, emit, n.op)]


# ---- movement ------------------------------------------------------------------------------------
def rule_reshape(ctx, n, ins):
    shape, _ = _out(n)
    return [ins[0].reshape(shape)]


def rule_transpose(ctx, n, ins):
    x = ins[0]
    perm = n.attrs["perm"]
    perm = tuple(range(x.rank - 1, -1, -1)) if perm is None else tuple(perm)
    return [x.permute(perm)]


def rule_slice(ctx, n, ins):
    from irgraph.ops.movement import _slice_args, _slice_dim
    x = ins[0]
    vals = [_need_const(n, i, "slice bounds") if i < len(n.inputs) else None for i in range(1, 5)]
    for ax, s, e, st in _slice_args(x.rank, *vals):
        start, _, cnt = _slice_dim(x.shape[ax], s, e, st)
        x = x.slice(ax, start, st, cnt)
    return [x]


def rule_concat(ctx, n, ins):
    axis = normalize_axis(n.attrs["axis"], ins[0].rank)
    if len(ins) == 1:
        return [ins[0]]
    return [Concat(ins, axis, ctx)]


def rule_split(ctx, n, ins):
    x = ins[0]
    axis = normalize_axis(n.attrs["axis"], x.rank)
    outs, off = [], 0
    for o in n.outputs:
        k = o.type.shape[axis]
        outs.append(x.slice(axis, off, 1, k))
        off += k
    return outs


def rule_expand(ctx, n, ins):
    shape, _ = _out(n)
    return [ins[0].broadcast_to(shape)]


def rule_tile(ctx, n, ins):
    x = ins[0]
    shape, _ = _out(n)

    def fn(idx):
        return x.at([i if d == s else imod(i, d) for i, d, s in zip(idx, x.shape, shape)])
    return [Generic(shape, x.dtype, ctx, fn, x.cost() + 1)]


def rule_pad(ctx, n, ins):
    from irgraph.ops.rearrange import _pad_spec
    x = ins[0]
    pads = _need_const(n, 1, "pads")
    axes = _need_const(n, 3, "axes") if len(n.inputs) > 3 else None
    spec = _pad_spec(x.rank, pads, axes)
    for k, (bp, ep) in enumerate(spec):  # negative pads crop first
        if bp < 0 or ep < 0:
            lo, hi = max(-bp, 0), x.shape[k] - max(-ep, 0)
            x = x.slice(k, lo, 1, max(hi - lo, 0))
    widths = [(max(bp, 0), max(ep, 0)) for bp, ep in spec]
    mode = n.attrs["mode"]
    shape, odt = _out(n)
    if not any(bp or ep for bp, ep in widths):
        return [x]
    b = IRBuilder()
    fill = Const(0, x.dtype)
    cv = ins[2] if len(ins) > 2 and ins[2] is not None and ins[2].size > 0 else None
    if mode == "constant" and cv is not None:
        fill = cv.at([iconst(0)] * cv.rank)

    def fn(idx):
        src, valid = [], None
        for i, d, (bp, ep) in zip(idx, x.shape, widths):
            s = isub(i, bp) if bp else i
            if mode == "constant":
                if bp or ep:
                    ok = b.and_(b.ge(s, iconst(0)), b.lt(s, iconst(d)))
                    valid = ok if valid is None else b.and_(valid, ok)
                    s = iclamp(s, 0, d - 1)
            elif mode == "edge":
                s = iclamp(s, 0, d - 1)
            elif mode == "wrap":
                s = b.mod(s, iconst(d))
            elif mode == "reflect":
                if d == 1:
                    s = iconst(0)
                else:
                    m = b.mod(s, iconst(2 * d - 2))
                    s = b.select(b.ge(m, iconst(d)), isub(iconst(2 * d - 2), m), m)
            src.append(s)
        v = x.at(src)
        return v if valid is None else b.select(valid, v, fill)
    if mode not in ("constant", "edge", "wrap", "reflect"):
        raise LoweringError(f"pad mode {mode!r}", op=n.op, node=n.name)
    return [Generic(shape, x.dtype, ctx, fn, x.cost() + 3)]


def rule_block(ctx, n, ins):
    x = ins[0]
    bs = n.attrs["blocksize"]
    N, C, H, W = x.shape
    dcr = n.attrs["mode"] == "DCR"
    if n.op == "depth_to_space":
        c = C // (bs * bs)
        if dcr:
            t = x.reshape((N, bs, bs, c, H, W)).permute((0, 3, 4, 1, 5, 2))
        else:
            t = x.reshape((N, c, bs, bs, H, W)).permute((0, 1, 4, 2, 5, 3))
        return [t.reshape((N, c, H * bs, W * bs))]
    t = x.reshape((N, C, H // bs, bs, W // bs, bs))
    t = t.permute((0, 3, 5, 1, 2, 4) if dcr else (0, 1, 3, 5, 2, 4))
    return [t.reshape((N, C * bs * bs, H // bs, W // bs))]


def rule_trilu(ctx, n, ins):
    x = ins[0]
    kt = ins[1] if len(ins) > 1 else None
    upper = bool(n.attrs["upper"])
    b = IRBuilder()

    def fn(idx):
        k = iconst(0) if kt is None else b.cast(kt.at([iconst(0)] * kt.rank), INDEX)  # may be a run-time value
        diff = isub(idx[-1], idx[-2])
        keep = b.ge(diff, k) if upper else b.le(diff, k)
        return b.select(keep, x.at(idx), Const(0, x.dtype))
    return [Generic(x.shape, x.dtype, ctx, fn, x.cost() + 2)]


def rule_constant_of_shape(ctx, n, ins):
    shape, odt = _out(n)
    v = n.attrs.get("value")
    val = 0 if v is None else np.asarray(v).reshape(-1)[0]
    return [Fill(Const(val, odt), shape, ctx)]


def rule_eye_like(ctx, n, ins):
    shape, odt = _out(n)
    k = n.attrs["k"]
    b = IRBuilder()

    def fn(idx):
        on = b.eq(isub(idx[1], idx[0]), iconst(k))
        return b.select(on, Const(1, odt), Const(0, odt))
    return [Generic(shape, odt, ctx, fn, 2)]


# ---- index ---------------------------------------------------------------------------------------
def _norm_index(b, i, dim: int):
    """An index read at run time: negative counts from the end, then clamped in bounds (the
    reference rejects out-of-range indices; a kernel must never read outside its buffer)."""
    i = b.cast(i, INDEX)
    i = b.select(b.lt(i, iconst(0)), iadd(i, dim), i)
    return iclamp(i, 0, max(dim - 1, 0))


def rule_gather(ctx, n, ins):
    x, ind = ins
    axis = normalize_axis(n.attrs["axis"], x.rank)
    shape, _ = _out(n)
    q = ind.rank
    b = IRBuilder()

    def fn(idx):
        ii = _norm_index(b, ind.at(idx[axis:axis + q]), x.shape[axis])
        return x.at(list(idx[:axis]) + [ii] + list(idx[axis + q:]))
    return [Generic(shape, x.dtype, ctx, fn, x.cost() + ind.cost() + 3)]


def rule_gather_elements(ctx, n, ins):
    x, ind = ins
    axis = normalize_axis(n.attrs["axis"], x.rank)
    shape, _ = _out(n)
    b = IRBuilder()

    def fn(idx):
        ii = _norm_index(b, ind.at(idx), x.shape[axis])
        src = list(idx)
        src[axis] = ii
        return x.at(src)
    return [Generic(shape, x.dtype, ctx, fn, x.cost() + ind.cost() + 3)]


# ---- contractions --------------------------------------------------------------------------------
def _cheap(ctx, t: T) -> View:
    """``t`` as a buffer view (read many times by a contraction: never recompute a formula)."""
    return ctx.force(t)


def _row_major(ctx, v: View) -> View:
    """A view whose innermost dim has stride 1 (or 0): const data is re-laid out at compile time."""
    if v.shape and v.strides[-1] not in (0, 1) and v.shape[-1] > 1:
        if v.buf.data is not None:
            return ctx.const(np.ascontiguousarray(v.to_numpy()), v.buf.name + "_rm")
        buf = ctx.buffer("rm", v.dtype, v.shape, "temp")
        out = View.of(buf, ctx)
        ctx.store(Generic(v.shape, v.dtype, ctx, v.at, 0), out)
        return out
    return v


def rule_matmul(ctx, n, ins):
    a, bm = ins
    shape, odt = _out(n)

    def emit(c, dest):
        from .lower import PARALLEL_MIN_WORK
        A, B = a, bm
        va, vb = A.rank == 1, B.rank == 1
        if va:
            A = A.reshape((1, A.shape[0]))
        if vb:
            B = B.reshape((B.shape[0], 1))
        M, K = A.shape[-2:]
        N = B.shape[-1]
        batch = tuple(np.broadcast_shapes(A.shape[:-2], B.shape[:-2]))
        A = _cheap(c, A)
        B = _cheap(c, B)
        if c.templates is not None and odt is dt.float32:
            nb = numel(batch)
            A3 = A.broadcast_to(batch + (M, K)).try_reshape((nb, M, K))
            B3 = B.broadcast_to(batch + (K, N)).try_reshape((nb, K, N))
            C3 = dest.try_reshape((nb, M, N))
            if A3 is not None and B3 is not None and C3 is not None and c.templates.matmul(c, A3, B3, C3):
                return
        B = _row_major(c, B)
        A = A.broadcast_to(batch + (M, K))
        B = B.broadcast_to(batch + (K, N))
        acc_d = dt.float32 if odt in (dt.float16, dt.bfloat16) else odt
        d3 = dest.try_reshape(batch + (M, N))
        direct = acc_d is odt and d3 is not None and d3.contiguous
        C = d3 if direct else View.of(c.buffer("acc", acc_d, batch + (M, N), "temp"), c)
        fast = IRBuilder(fast=True)
        rows = numel(batch) * M
        with c.stage():
            o = c.var()
            ridx = delinearize(o, batch + (M,))
            j0, k, j = c.var(), c.var(), c.var()
            init = Loop(j0, N, "vector", [Store(C.buf, C.flat(ridx + [j0]), Const(0, acc_d))])
            av = fast.cast(A.at(ridx[:-1] + [ridx[-1], k]), acc_d)
            cur = C.at(ridx + [j])
            bv = fast.cast(B.at(ridx[:-1] + [k, j]), acc_d)
            upd = Store(C.buf, C.flat(ridx + [j]), fast.add(cur, fast.mul(av, bv)))
            kloop = Loop(k, K, "serial", [Loop(j, N, "vector", [upd])])
            par = rows > 1 and rows * N * K >= PARALLEL_MIN_WORK
            c.body.append(Loop(o, rows, "parallel" if par else "serial", [init, kloop]))
        if not direct:
            c.store(Map(lambda b_, x: b_.cast(x, odt), [C], {}, C.shape, acc_d, c, out_dtype=odt),
                    dest.reshape(C.shape) if dest.shape != C.shape else dest)
    if odt not in (dt.float16, dt.bfloat16, dt.float32, dt.float64) and not odt.is_int:
        raise LoweringError(f"matmul of {odt.name}", op=n.op, node=n.name)
    return [Pending(shape, odt, ctx, emit, "matmul")]


def _window(n: Node, x: T, kernel, ceil_mode=False):
    from irgraph.ops.windows import raiser, window_plan
    return window_plan(x.shape[2:], kernel, n.attrs, raiser(n.op), ceil_mode=ceil_mode)


def _padded_input(ctx, x: T, kernel, plan, fill) -> View:
    """``x`` padded (with ``fill``) so every window lies inside; stored once into a temp."""
    sizes = x.shape[2:]
    need = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(plan.out, plan.strides, kernel, plan.dilations)]
    tail = [max(nd - pb - sz, 0) for nd, pb, sz in zip(need, plan.pads_begin, sizes)]
    if not any(plan.pads_begin) and not any(tail):
        return ctx.force(x)
    shape = x.shape[:2] + tuple(sz + pb + t for sz, pb, t in zip(sizes, plan.pads_begin, tail))
    b = IRBuilder()
    fillc = Const(fill, x.dtype)

    def fn(idx):
        src, valid = list(idx[:2]), None
        for i, sz, pb in zip(idx[2:], sizes, plan.pads_begin):
            s = isub(i, pb) if pb else i
            ok = b.and_(b.ge(s, iconst(0)), b.lt(s, iconst(sz)))
            valid = ok if valid is None else b.and_(valid, ok)
            src.append(iclamp(s, 0, sz - 1))
        return b.select(valid, x.at(src), fillc)
    buf = ctx.buffer("pad", x.dtype, shape, "temp")
    v = View.of(buf, ctx)
    ctx.store(Generic(shape, x.dtype, ctx, fn, 3), v)
    return v


def rule_conv(ctx, n, ins):
    x, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    shape, odt = _out(n)
    group = n.attrs["group"]
    kernel = w.shape[2:]
    plan = _window(n, x, kernel)
    if odt not in (dt.float32, dt.float64, dt.float16, dt.bfloat16):
        raise LoweringError(f"conv of {odt.name}", op=n.op, node=n.name)

    def emit(c, dest):
        from .lower import PARALLEL_MIN_WORK
        if c.templates is not None and group == 1 and odt is dt.float32 and _conv_as_gemm(c, x, w, bias, plan, kernel, dest):
            return
        xp = _padded_input(c, x, kernel, plan, 0)
        W = c.force(w)
        Nb, C = x.shape[:2]
        M = w.shape[0]
        Cg, Mg = C // group, M // group
        acc_d = dt.float32 if odt in (dt.float16, dt.bfloat16) else odt
        direct = acc_d is odt and dest.contiguous
        out = dest if direct else View.of(c.buffer("acc", acc_d, dest.shape, "temp"), c)
        fast = IRBuilder(fast=True)
        nsp = len(kernel)
        with c.stage():
            o = c.var()
            nb, m = delinearize(o, (Nb, M))
            g = _b.idx_div(m, iconst(Mg)) if group > 1 else iconst(0)
            # init with the bias (or 0)
            sp_loop, sp_vars, sp_body = c.loops(plan.out, ["serial"] * (nsp - 1) + ["vector"])
            init = Const(0, acc_d) if bias is None else fast.cast(bias.at([m]), acc_d)
            sp_body.append(Store(out.buf, out.flat([nb, m] + sp_vars), init))
            stmts = [sp_loop]
            ci = c.var()
            taps = [c.var() for _ in kernel]
            sp2_loop, sp2, body = c.loops(plan.out, ["serial"] * (nsp - 1) + ["vector"])
            cin = iadd(imul(g, Cg), ci) if group > 1 else ci
            xi = [nb, cin] + [iadd(imul(s_, st), imul(t, dl)) for s_, st, t, dl in
                              zip(sp2, plan.strides, taps, plan.dilations)]
            wv = fast.cast(W.at([m, ci] + taps), acc_d)
            cur = out.at([nb, m] + sp2)
            body.append(Store(out.buf, out.flat([nb, m] + sp2),
                              fast.add(cur, fast.mul(fast.cast(xp.at(xi), acc_d), wv))))
            inner = sp2_loop
            for t, kd in reversed(list(zip(taps, kernel))):
                inner = Loop(t, kd, "serial", [inner])
            stmts.append(Loop(ci, Cg, "serial", [inner]))
            work = Nb * M * Cg * numel(kernel) * numel(plan.out)
            c.body.append(Loop(o, Nb * M, "parallel" if work >= PARALLEL_MIN_WORK and Nb * M > 1 else "serial", stmts))
        if not direct:
            c.store(Map(lambda b_, v: b_.cast(v, odt), [out], {}, out.shape, acc_d, c, out_dtype=odt), dest)
    return [Pending(shape, odt, ctx, emit, "conv")]


def _conv_as_gemm(c, x, w, bias, plan, kernel, dest) -> bool:
    """out[n] = W (M x C*k) @ im2col(x[n]) (C*k x P) through the backend's matmul template; the
    bias is then added in place."""
    Nb, C = x.shape[:2]
    M = w.shape[0]
    P = numel(plan.out)
    CK = C * numel(kernel)
    simple = (all(k == 1 for k in kernel) and all(s == 1 for s in plan.strides)
              and not any(plan.pads_begin) and tuple(plan.out) == tuple(x.shape[2:]))
    if simple:
        col = c.force(x).try_reshape((Nb, CK, P))
        if col is None:
            return False
    else:
        xp = _padded_input(c, x, kernel, plan, 0)
        nsp = len(kernel)
        shape = (Nb, C) + tuple(kernel) + tuple(plan.out)

        def fn(idx):
            taps, outs = idx[2:2 + nsp], idx[2 + nsp:]
            return xp.at(idx[:2] + [iadd(imul(o, s_), imul(t, d_)) for o, t, s_, d_ in
                                    zip(outs, taps, plan.strides, plan.dilations)])
        buf = c.buffer("im2col", x.dtype, (Nb, CK, P), "temp")
        c.store(Generic(shape, x.dtype, c, fn, 2), View.of(buf, c, shape))
        col = View.of(buf, c)
    W = c.force(w).try_reshape((1, M, CK))
    out = dest.try_reshape((Nb, M, P))
    if W is None or out is None:
        return False
    if not c.templates.matmul(c, W.broadcast_to((Nb, M, CK)), col, out):
        return False
    if bias is not None:
        b3 = bias.reshape((1, M, 1)).broadcast_to((Nb, M, P))
        c.store(Map(lambda b_, y, z: b_.add(y, z), [out, b3], {}, out.shape, out.dtype, c), out)
    return True


def rule_pool(ctx, n, ins):
    x = ins[0]
    shape, odt = _out(n)
    if n.op == "max_pool" and n.attrs.get("indices"):
        raise LoweringError("max_pool with indices", op=n.op, node=n.name)
    kernel = tuple(n.attrs["kernel_shape"])
    plan = _window(n, x, kernel, ceil_mode=bool(n.attrs.get("ceil_mode")))
    op = n.op
    sizes = x.shape[2:]
    acc_d = dt.float64 if x.dtype in (dt.float32, dt.float64) and op != "max_pool" else \
        (dt.float32 if x.dtype in (dt.float16, dt.bfloat16) else x.dtype)
    include_pad = bool(n.attrs.get("count_include_pad"))
    p = float(n.attrs.get("p", 2.0))

    def emit(c, dest):
        from irgraph.ops.reduction import REDUCTION_IDENTITY
        from .lower import PARALLEL_MIN_WORK
        b = IRBuilder()
        nsp = len(kernel)
        with c.stage():
            o = c.var()
            nb, ch = delinearize(o, x.shape[:2])
            sp_loop, sp, body = c.loops(plan.out, ["serial"] * nsp)
            taps = [c.var() for _ in kernel]
            acc = Var(f"acc{next(c._n)}", acc_d)
            cnt = Var(f"cnt{next(c._n)}", INDEX)
            src, valid, inpad = [], None, None
            for s_, st, t, dl, pb, pe, sz in zip(sp, plan.strides, taps, plan.dilations,
                                                plan.pads_begin, plan.pads_end, sizes):
                i = isub(iadd(imul(s_, st), imul(t, dl)), pb)
                ok = b.and_(b.ge(i, iconst(0)), b.lt(i, iconst(sz)))
                ip = b.and_(b.ge(i, iconst(-pb)), b.lt(i, iconst(sz + pe)))
                valid = ok if valid is None else b.and_(valid, ok)
                inpad = ip if inpad is None else b.and_(inpad, ip)
                src.append(iclamp(i, 0, sz - 1))
            v = b.cast(x.at([nb, ch] + src), acc_d)
            if op == "max_pool":
                ident = REDUCTION_IDENTITY["reduce_max"](x.dtype)
                upd = [Assign(acc, b.select(valid, b.max(acc, v), acc))]
            else:
                ident = 0
                term = v if op == "avg_pool" else (b.abs(v) if p == 1 else b.mul(v, v) if p == 2 else
                                                   b.pow(b.abs(v), Const(p, acc_d)))
                upd = [Assign(acc, b.select(valid, b.add(acc, term), acc))]
                if op == "avg_pool":
                    counted = inpad if include_pad else valid
                    upd.append(Assign(cnt, b.select(counted, iadd(cnt, 1), cnt)))
            inner = upd
            for t, kd in reversed(list(zip(taps, kernel))):
                inner = [Loop(t, kd, "serial", inner)]
            if op == "avg_pool":
                res = b.div(acc, b.cast(cnt, acc_d))
            elif op == "lp_pool":
                res = acc if p == 1 else b.sqrt(acc) if p == 2 else b.pow(acc, Const(1.0 / p, acc_d))
            else:
                res = acc
            body.extend([Local(acc, Const(ident, acc_d)), Local(cnt, iconst(0))] + inner +
                        [Store(dest.buf, dest.flat([nb, ch] + sp), b.cast(res, odt))])
            work = x.shape[0] * x.shape[1] * numel(plan.out) * numel(kernel)
            par = work >= PARALLEL_MIN_WORK and x.shape[0] * x.shape[1] > 1
            c.body.append(Loop(o, x.shape[0] * x.shape[1], "parallel" if par else "serial", [sp_loop]))
    return [Pending(shape, odt, ctx, emit, op)]


def rule_global_pool(ctx, n, ins):
    from irgraph.ops.reduction import REDUCTION_IDENTITY
    x = ins[0]
    shape, odt = _out(n)
    mode = n.attrs["mode"]
    axes = tuple(range(2, x.rank))
    count = numel(x.shape[2:])
    p = float(n.attrs["p"])
    if mode == "max":
        combine, ident, acc_d, post = (lambda b, a, v: b.max(a, v)), REDUCTION_IDENTITY["reduce_max"](x.dtype), \
            acc_dtype_for("", x.dtype), None
        src = x
    else:
        acc_d = dt.float64 if x.dtype in (dt.float32, dt.float64) else dt.float32
        combine, ident = (lambda b, a, v: b.add(a, v)), 0
        if mode == "avg":
            src = x
            post = lambda b, a: b.div(a, b.const(count, a))  # noqa: E731
        else:
            def term(b, v, _p=p):
                v = b.cast(v, acc_d)
                return b.abs(v) if _p == 1 else b.mul(v, v) if _p == 2 else b.pow(b.abs(v), b.const(_p, v))
            src = Map(term, [x], {}, x.shape, x.dtype, ctx, out_dtype=acc_d)

            def post(b, a, _p=p):
                return a if _p == 1 else b.sqrt(a) if _p == 2 else b.pow(a, b.const(1.0 / _p, a))

    def emit(c, dest):
        emit_reduce(c, src, axes, combine, ident, acc_d, post, dest)
    return [Pending(shape, odt, ctx, emit, "global_pool")]


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


def rule_dropout(ctx, n, ins):
    x = ins[0]
    ratio = _known(n.inputs[1])
    training = _known(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] is not None else np.array(False)
    if training is None or (bool(np.asarray(training).reshape(-1)[0]) and
                            (ratio is None or float(np.asarray(ratio).reshape(-1)[0]) > 0)):
        raise LoweringError("dropout in training mode draws random numbers", op=n.op, node=n.name)
    outs = [x, Fill(Const(True, dt.bool_), x.shape, ctx)]
    return outs[:len(n.outputs)]


def rule_bitcast(ctx, n, ins):
    x = ins[0]
    if not isinstance(x, View):
        raise LoweringError("bitcast of a value computed in the same kernel", op=n.op, node=n.name)
    return [ctx.retype(x, n.attrs["to"])]


_SCATTER_COMBINE = {"none": None, "add": "add", "mul": "mul", "max": "max", "min": "min"}


def _scatter(ctx, n, x: T, upd: T, target_index, shape, odt):
    """Pending: a copy of ``x`` with ``upd`` written (or reduced) in order at
    ``target_index(update idx) -> data idx``."""
    red = _SCATTER_COMBINE[n.attrs["reduction"]]

    def emit(c, dest):
        c.store(x, dest)
        b = IRBuilder()
        with c.stage():
            outer, vars_, body = c.loops(upd.shape)
            tgt = target_index(vars_)
            u = upd.at(vars_)
            val = u if red is None else getattr(b, red)(dest.at(tgt), u)
            body.append(Store(dest.buf, dest.flat(tgt), val))
            if outer is None:
                c.body.extend(body)
            else:
                c.body.append(outer)
    return Pending(shape, odt, ctx, emit, n.op)


def rule_scatter_elements(ctx, n, ins):
    x, ind, upd = ins
    axis = normalize_axis(n.attrs["axis"], x.rank)
    shape, odt = _out(n)
    b = IRBuilder()

    def target(idx):
        t = list(idx)
        t[axis] = _norm_index(b, ind.at(idx), x.shape[axis])
        return t
    return [_scatter(ctx, n, x, upd, target, shape, odt)]


def rule_scatter_nd(ctx, n, ins):
    x, ind, upd = ins
    k = ind.shape[-1]
    q = ind.rank
    shape, odt = _out(n)
    if k == 0:
        raise LoweringError("scatter_nd with empty index tuples", op=n.op, node=n.name)
    b = IRBuilder()

    def target(idx):
        lead = list(idx[:q - 1])
        return [_norm_index(b, ind.at(lead + [iconst(j)]), x.shape[j]) for j in range(k)] + list(idx[q - 1:])
    return [_scatter(ctx, n, x, upd, target, shape, odt)]


def rule_gather_nd(ctx, n, ins):
    x, ind = ins
    bd = n.attrs["batch_dims"]
    k = ind.shape[-1]
    q = ind.rank
    shape, _ = _out(n)
    b = IRBuilder()

    def fn(idx):
        lead = list(idx[:q - 1])
        src = list(idx[:bd]) + [_norm_index(b, ind.at(lead + [iconst(j)]), x.shape[bd + j]) for j in range(k)]
        return x.at(src + list(idx[q - 1:]))
    return [Generic(shape, x.dtype, ctx, fn, x.cost() + 3 * k)]


def rule_reverse_sequence(ctx, n, ins):
    from irgraph.ops.rearrange import _rs_axes
    x, lens = ins
    bax, tax = _rs_axes(x.rank, n.attrs)
    b = IRBuilder()
    T_ = x.shape[tax]

    def fn(idx):
        ln = b.cast(lens.at([idx[bax]]), INDEX)
        t = idx[tax]
        src = list(idx)
        src[tax] = iclamp(b.select(b.lt(t, ln), isub(isub(ln, 1), t), t), 0, T_ - 1)
        return x.at(src)
    return [Generic(x.shape, x.dtype, ctx, fn, x.cost() + 4)]


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


def rule_conv_transpose(ctx, n, ins):
    from irgraph.ops.conv import _convt_plan
    from irgraph.ops.windows import raiser
    x, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    shape, odt = _out(n)
    kernel = w.shape[2:]
    plan = _convt_plan(x.shape[2:], kernel, n.attrs, raiser(n.op))
    group = n.attrs["group"]
    if odt not in (dt.float32, dt.float64, dt.float16, dt.bfloat16):
        raise LoweringError(f"conv_transpose of {odt.name}", op=n.op, node=n.name)

    def emit(c, dest):
        from .lower import PARALLEL_MIN_WORK
        X, W = c.force(x), c.force(w)
        Nb, C = x.shape[:2]
        Mg = w.shape[1]
        M = Mg * group
        Cg = C // group
        acc_d = dt.float32 if odt in (dt.float16, dt.bfloat16) else odt
        direct = acc_d is odt and dest.contiguous
        out = dest if direct else View.of(c.buffer("acc", acc_d, dest.shape, "temp"), c)
        b = IRBuilder()
        fast = IRBuilder(fast=True)
        nsp = len(kernel)
        with c.stage():
            o = c.var()
            nb, m = delinearize(o, (Nb, M))
            g = _b.idx_div(m, iconst(Mg)) if group > 1 else iconst(0)
            ml = _b.idx_mod(m, iconst(Mg)) if group > 1 else m
            sp_loop, sp_vars, sp_body = c.loops(plan.out, ["serial"] * (nsp - 1) + ["vector"])
            init = Const(0, acc_d) if bias is None else b.cast(bias.at([m]), acc_d)
            sp_body.append(Store(out.buf, out.flat([nb, m] + sp_vars), init))
            ci = c.var()
            taps = [c.var() for _ in kernel]
            sp2_loop, sp2, body = c.loops(plan.out, ["serial"] * (nsp - 1) + ["vector"])
            src, valid = [], None
            for ov, t, st, dl, pb, sz in zip(sp2, taps, plan.strides, plan.dilations, plan.pads_begin, x.shape[2:]):
                num = isub(iadd(ov, pb), imul(t, dl))
                ok = b.and_(b.ge(num, iconst(0)), b.lt(num, iconst(st * sz)))
                if st > 1:
                    ok = b.and_(ok, b.eq(b.mod(num, iconst(st)), iconst(0)))
                    i = _b.idx_div(iclamp(num, 0, st * sz - 1), iconst(st))
                else:
                    i = iclamp(num, 0, sz - 1)
                valid = ok if valid is None else b.and_(valid, ok)
                src.append(i)
            cin = iadd(imul(g, Cg), ci) if group > 1 else ci
            xv = fast.cast(X.at([nb, cin] + src), acc_d)
            wv = fast.cast(W.at([cin, ml] + taps), acc_d)
            cur = out.at([nb, m] + sp2)
            body.append(Store(out.buf, out.flat([nb, m] + sp2),
                              fast.add(cur, b.select(valid, fast.mul(xv, wv), Const(0, acc_d)))))
            inner = sp2_loop
            for t, kd in reversed(list(zip(taps, kernel))):
                inner = Loop(t, kd, "serial", [inner])
            work = Nb * M * Cg * numel(kernel) * numel(plan.out)
            c.body.append(Loop(o, Nb * M, "parallel" if work >= PARALLEL_MIN_WORK and Nb * M > 1 else "serial",
                               [sp_loop, Loop(ci, Cg, "serial", [inner])]))
        if not direct:
            c.store(Map(lambda b_, v: b_.cast(v, odt), [out], {}, out.shape, acc_d, c, out_dtype=odt), dest)
    return [Pending(shape, odt, ctx, emit, "conv_transpose")]


def rule_matmul_integer(ctx, n, ins):
    from irgraph.ops.quant import _check_row_zp  # noqa: F401  (semantics: quant.py)
    A, B = ins[0], ins[1]
    azp = ins[2] if len(ins) > 2 else None
    bzp = ins[3] if len(ins) > 3 else None
    shape, odt = _out(n)

    def centered(t, zp, axis):
        if zp is None:
            return Map(lambda b, v: b.cast(v, dt.int32), [t], {}, t.shape, t.dtype, ctx, out_dtype=dt.int32)
        if zp.size > 1 and t.rank >= 2:
            zp = zp.reshape((-1, 1) if axis == -2 else (-1,))
        z = zp.broadcast_to(t.shape) if zp.size > 1 else zp.reshape(()).broadcast_to(t.shape)
        return Map(lambda b, v, zz: b.sub(b.cast(v, dt.int32), b.cast(zz, dt.int32)), [t, z], {}, t.shape,
                   t.dtype, ctx, out_dtype=dt.int32)
    fake = Node("matmul", [], n.outputs, {}, n.name)
    return rule_matmul(ctx, fake, [centered(A, azp, -2), centered(B, bzp, -1)])


# ---- the table -----------------------------------------------------------------------------------
RULES = {
    "reduce_sum": rule_reduce, "reduce_mean": rule_reduce, "reduce_prod": rule_reduce,
    "reduce_max": rule_reduce, "reduce_min": rule_reduce,
    "argmax": rule_arg, "argmin": rule_arg,
    "cumsum": rule_cumulative, "cumprod": rule_cumulative,
    "reshape": rule_reshape, "squeeze": rule_reshape, "unsqueeze": rule_reshape,
    "transpose": rule_transpose, "slice": rule_slice, "concat": rule_concat, "split": rule_split,
    "expand": rule_expand, "tile": rule_tile, "pad": rule_pad,
    "depth_to_space": rule_block, "space_to_depth": rule_block, "trilu": rule_trilu,
    "constant_of_shape": rule_constant_of_shape, "eye_like": rule_eye_like,
    "gather": rule_gather, "gather_elements": rule_gather_elements,
    "matmul": rule_matmul, "conv": rule_conv,
    "max_pool": rule_pool, "avg_pool": rule_pool, "lp_pool": rule_pool,
    "global_pool": rule_global_pool,
    "nll_loss": rule_nll_loss, "hardmax": rule_hardmax, "dropout": rule_dropout, "bitcast": rule_bitcast,
    "scatter_elements": rule_scatter_elements, "scatter_nd": rule_scatter_nd, "gather_nd": rule_gather_nd,
    "reverse_sequence": rule_reverse_sequence, "quantize_linear": rule_quantize_linear,
    "dequantize_linear": rule_dequantize_linear, "requantize": rule_requantize,
    "dynamic_quantize_linear": rule_dynamic_quantize_linear, "lrn": rule_lrn,
    "conv_transpose": rule_conv_transpose, "matmul_integer": rule_matmul_integer,
}


def rule_for(n: Node):
    """The rule lowering ``n``'s op, or None (then its registry decomposition is lowered)."""
    r = RULES.get(n.op)
    if r is not None:
        return r
    if n.op == "fused":
        raise LoweringError("a fused group inside a fused group", op=n.op, node=n.name)
    opdef = get_op(n.op)
    if opdef.kind == "elementwise" and opdef.scalar is not None:
        return rule_elementwise
    if opdef.random or opdef.runs_subgraphs:
        raise LoweringError(f"op {n.op!r} runs {'random draws' if opdef.random else 'subgraphs'}",
                            op=n.op, node=n.name)
    return None
