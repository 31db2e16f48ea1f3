"""Lowering rules: registry op -> lazy tensor(s). This file: elementwise, reductions, movement
and index ops, and the rule table; ``lower_contract.py`` holds the contraction / window
templates (matmul, conv, pools, einsum), ``lower_misc.py`` the remaining "other" ops (losses,
quantization, optimizer updates, resize).

No elementwise op is listed: every op of kind ``elementwise`` with a registry ``scalar``
formula lowers through ``rule_elementwise``, and reductions use the registry's combine formula
and ``REDUCTION_IDENTITY``. Ops without a rule lower through their registry ``decompose``.
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt
from irgraph.dtype import DType
from irgraph.graph import Node
from irgraph.ops.registry import get_op
from irgraph.ops.shapes import normalize_axes, normalize_axis

from .kernel_ir import INDEX, Assign, Const, IRBuilder, Local, Loop, LoweringError, Store, Var
from .lower_tensor import (Concat, Fill, Generic, Map, Pending, T, View, delinearize,
                           iadd, iclamp, iconst, imod, isub, numel)

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
    from .kernel_ir import If
    x = ins[0]
    ax_const = _known(n.inputs[1])
    excl, rev = bool(n.attrs["exclusive"]), bool(n.attrs["reverse"])
    shape, odt = _out(n)
    acc_d = acc_dtype_for("", x.dtype)
    is_sum = n.op == "cumsum"

    def emit_axis(c, dest, src, axis):
        kept = [d for k, d in enumerate(src.shape) if k != axis]
        L = src.shape[axis]
        b = IRBuilder()
        with c.stage():
            o = c.var()
            kv = delinearize(o, kept) if kept else []
            acc = Var(f"acc{next(c._n)}", acc_d)
            r = c.var()
            pos = isub(iconst(L - 1), r) if rev else r
            idx = kv[:axis] + [pos] + kv[axis:]
            xv = b.cast(src.at(idx), acc_d)
            upd = Assign(acc, b.add(acc, xv) if is_sum else b.mul(acc, xv))
            st = Store(dest.buf, dest.flat(idx), b.cast(acc, odt))
            loop = Loop(r, L, "serial", [st, upd] if excl else [upd, st])
            stmts = [Local(acc, Const(0 if is_sum else 1, acc_d)), loop]
            if kept:
                c.body.append(Loop(o, numel(kept), "serial", stmts))
            else:
                c.body.extend(stmts)

    if ax_const is not None:
        axis = normalize_axis(int(np.asarray(ax_const).reshape(-1)[0]), x.rank)
        return [Pending(shape, odt, ctx, lambda c, dest: emit_axis(c, dest, x, axis), n.op)]
    at = ins[1]

    def emit_any(c, dest):
        # the axis is read at run time: one loop nest per possible axis, picked by an If
        src = c.force(x)
        b = IRBuilder()
        av = b.cast(at.at([iconst(0)] * at.rank), INDEX)
        for axis in range(x.rank):
            with c.capture() as body:
                emit_axis(c, dest, src, axis)
            c.body.append(If(b.or_(b.eq(av, iconst(axis)), b.eq(av, iconst(axis - x.rank))), body))
    if x.rank == 0:
        raise LoweringError("cumulative op of a scalar", op=n.op, node=n.name)
    return [Pending(shape, odt, ctx, emit_any, n.op)]


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


def rule_one_hot(ctx, n, ins):
    ind, depth, vals = ins
    shape, odt = _out(n)
    d = shape[normalize_axis(n.attrs["axis"], len(shape))]
    axis = normalize_axis(n.attrs["axis"], len(shape))
    b = IRBuilder()

    def fn(idx):
        i = ind.at(list(idx[:axis]) + list(idx[axis + 1:]))
        if ind.dtype.is_float:
            i = b.cast(b.cast(i, dt.float64), INDEX)   # truncates: a float index means its integer part
        else:
            i = b.cast(i, INDEX)
        i = b.select(b.lt(i, iconst(0)), iadd(i, d), i)
        return b.select(b.eq(i, idx[axis]), vals.at([iconst(1)]), vals.at([iconst(0)]))
    if ind.dtype.kind == "u" and ind.dtype.bits == 64:
        raise LoweringError("one_hot of uint64 indices", op=n.op, node=n.name)
    return [Generic(shape, odt, ctx, fn, ind.cost() + 4)]


# ---- the table -----------------------------------------------------------------------------------
_RULES: dict | None = None


def rules() -> dict:
    """op name -> rule(ctx, node, input tensors) -> output tensors."""
    global _RULES
    if _RULES is None:
        from .lower_contract import (rule_conv, rule_conv_integer, rule_conv_transpose, rule_einsum,
                                     rule_global_pool, rule_matmul, rule_matmul_integer, rule_pool)
        from .lower_misc import (_update_rule, rule_bitcast, rule_dequantize_linear,
                                 rule_dynamic_quantize_linear, rule_hardmax, rule_lrn, rule_nll_loss,
                                 rule_quantize_linear, rule_requantize, rule_resize)
        _RULES = {
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
            "nll_loss": rule_nll_loss, "hardmax": rule_hardmax, "bitcast": rule_bitcast,
            "scatter_elements": rule_scatter_elements, "scatter_nd": rule_scatter_nd, "gather_nd": rule_gather_nd,
            "reverse_sequence": rule_reverse_sequence, "quantize_linear": rule_quantize_linear,
            "dequantize_linear": rule_dequantize_linear, "requantize": rule_requantize,
            "dynamic_quantize_linear": rule_dynamic_quantize_linear, "lrn": rule_lrn,
            "conv_transpose": rule_conv_transpose, "matmul_integer": rule_matmul_integer,
            "einsum": rule_einsum, "conv_integer": rule_conv_integer, "adagrad": _update_rule("adagrad"),
            "adam": _update_rule("adam"), "momentum": _update_rule("momentum"), "resize": rule_resize,
            "one_hot": rule_one_hot,
        }
    return _RULES


def rule_for(n: Node):
    """The rule lowering ``n``'s op, or None (then its registry decomposition is lowered)."""
    r = rules().get(n.op)
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
