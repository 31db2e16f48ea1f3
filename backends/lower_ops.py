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
        B = _row_major(c, _cheap(c, B))
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
}


def rule_for(n: Node):
    """The rule lowering ``n``'s op, or None (then its registry decomposition is lowered)."""
    r = RULES.get(n.op)
    if r is not None:
        return r
    opdef = get_op(n.op)
    if opdef.kind == "elementwise" and opdef.scalar is not None:
        return rule_elementwise
    if opdef.random or opdef.runs_subgraphs:
        raise LoweringError(f"op {n.op!r} runs {'random draws' if opdef.random else 'subgraphs'}",
                            op=n.op, node=n.name)
    return None
