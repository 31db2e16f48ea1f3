"""Lowering templates for contractions and windows: matmul (the backend's GEMM when it offers one,
else a row-major loop nest), conv (im2col + GEMM, or a direct loop nest), conv_transpose,
pools, einsum, and the integer matmul/conv of quantized models."""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt
from irgraph.graph import Node

from .kernel_ir import INDEX, Assign, Const, IRBuilder, Local, Loop, LoweringError, Store, Var
from .lower_ops import _b, _out, acc_dtype_for, emit_reduce
from .lower_tensor import (Generic, Map, Pending, T, View, delinearize, iadd, iclamp, iconst, imul,
                           isub, numel)


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


def rule_conv(ctx, n, ins, int_ok: bool = False):
    x, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    shape, odt = _out(n)
    group = n.attrs["group"]
    kernel = w.shape[2:]
    plan = _window(n, x, kernel)
    if odt not in (dt.float32, dt.float64, dt.float16, dt.bfloat16) and not (int_ok and odt is dt.int32):
        raise LoweringError(f"conv of {odt.name}", op=n.op, node=n.name)
    # A backend's own conv template (CUDA: implicit GEMM, backends/cuda/conv.py) returns the
    # lowered outputs or None to take the paths below; backends without ``conv`` (the CPU) skip it.
    if ctx.templates is not None and hasattr(ctx.templates, "conv"):
        res = ctx.templates.conv(ctx, n, x, w, bias, plan, shape, odt)
        if res is not None:
            return res
    direct = None
    if (ctx.templates is not None and group == 1 and odt is dt.float32 and x.dtype is dt.float32
            and hasattr(ctx.templates, "direct_conv") and isinstance(w, View) and w.buf.data is not None
            and (bias is None or bias.dtype is dt.float32)):
        direct = ctx.templates.direct_conv(x.shape, w.shape, plan)
    if direct is not None:
        # a direct convolution kernel with the bias in its epilogue (packed weights, no im2col)
        def emit_direct(c, dest):
            c.templates.emit_direct_conv(c, direct, x, w, bias, dest)
        return [Pending(shape, odt, ctx, emit_direct, "conv")]
    if ctx.templates is not None and group == 1 and odt is dt.float32 and hasattr(ctx.templates, "matmul"):
        # im2col + the backend's GEMM; the bias joins the elementwise epilogue, so conv + bias
        # + relu (+ residual) is one in-place pass over the output after the GEMM
        def emit_gemm(c, dest):
            if not _conv_as_gemm(c, x, w, plan, kernel, dest):
                raise LoweringError("internal: conv GEMM layout", op=n.op, node=n.name)
        p = Pending(shape, odt, ctx, emit_gemm, "conv")
        if bias is None:
            return [p]
        p.single_use = True
        bb = bias.reshape((1, shape[1]) + (1,) * (len(shape) - 2))
        return [Map(lambda b_, y, z: b_.add(y, z), [p, bb.broadcast_to(shape)], {}, shape, odt, ctx)]

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


def _conv_as_gemm(c, x, w, plan, kernel, dest) -> bool:
    """out[n] = W (M x C*k) @ im2col(x[n]) (C*k x P) through the backend's matmul template."""
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
    elif len(kernel) == 2 and _conv_rows_chunked(c, x, w, plan, kernel, dest, _weights_as_b(w, M, CK, P)):
        return True
    else:
        # pad once (a pass over the input), so the 9x larger im2col reads with affine indices
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
    if _weights_as_b(W, M, CK, P):
        return _conv_weights_as_b(c, W.broadcast_to((Nb, M, CK)), col, out)
    return c.templates.matmul(c, W.broadcast_to((Nb, M, CK)), col, out)


# Constant weights as GEMM B (packed once at compile time) instead of A (re-packed on every call):
# saves an M*CK copy and costs an M*P transpose of the result, so it pays when CK > P (ResNet-18's
# 14x14 and 7x7 layers: 1.3-1.5x -> 1.0-1.1x onnxruntime's time). Also when M is small: 64 output
# channels fill exactly two 32-wide B panels, where as A rows they left a 14-row tile 1/7 empty
# (56x56x64 3x3 layers 1.73x -> 1.46x, the 7x7 stem 2.8x -> 2.2x).
WEIGHTS_AS_B_MAX_M = 64


def _weights_as_b(w, M: int, CK: int, P: int) -> bool:
    return isinstance(w, View) and w.buf.data is not None and (CK > P or M <= WEIGHTS_AS_B_MAX_M)


def _conv_weights_as_b(c, W, col, out, tmp: View | None = None) -> bool:
    """out (N, M, P) = W @ col computed as out^T = col^T @ W^T (W^T a compile-time packed B),
    then transposed into ``out`` (P*M values: small wherever this is chosen)."""
    Nb, M, CK = W.shape
    P = col.shape[2]
    if tmp is None:
        tmp = View.of(c.buffer("convT", out.dtype, (Nb, P, M), "temp"), c)
    if not c.templates.matmul(c, col.permute((0, 2, 1)), W.permute((0, 2, 1)), tmp):
        return False
    t = tmp.permute((0, 2, 1))
    c.store(Generic(t.shape, t.dtype, c, t.at, 0), out)
    return True


# Bytes of one im2col panel: the panel is written by the gather and read back by the GEMM's
# packing right after, so it should stay in L2 (a 56x56x576 panel is 7 MiB and made the
# 64-channel 3x3 layers of ResNet-18 run at 2x onnxruntime's time).
IM2COL_PANEL_BYTES = 1024 * 1024
# Row blocks make each GEMM call narrower (A repacked per call, a partial last NR panel), which
# cost 10-15% on 28x28 layers whose whole panel (3.6 MiB) was still fine: only split larger ones.
IM2COL_SPLIT_ABOVE = 400 * 1024 * 1024
# Above this many (image, row block) GEMM calls the unrolled chunk list gets too long to emit.
IM2COL_MAX_CHUNKS = 64


def _conv_rows_chunked(c, x, w, plan, kernel, dest, as_b: bool = False) -> bool:
    """2-D conv as a short list of (im2col of a block of output rows, GEMM into those rows)
    pairs sharing one L2-sized panel; False (nothing emitted) when one block would cover the
    whole output or the list would be too long."""
    Nb, C = x.shape[:2]
    M = w.shape[0]
    OH, OW = plan.out
    CK = C * numel(kernel)
    rows = max(1, min(OH, IM2COL_PANEL_BYTES // max(1, CK * OW * 4)))
    nchunk = -(-OH // rows)
    if nchunk < 2 or Nb * nchunk > IM2COL_MAX_CHUNKS or CK * OH * OW * 4 <= IM2COL_SPLIT_ABOVE:
        return False
    W = c.force(w).try_reshape((1, M, CK))
    out4 = dest.try_reshape((Nb, M, OH, OW))
    if W is None or out4 is None:
        return False
    xp = _padded_input(c, x, kernel, plan, 0)
    buf = c.buffer("im2col", x.dtype, (CK, rows * OW), "temp")
    # weights as B: each block's (rows*OW, M) result also stays in cache until transposed out
    tbuf = c.buffer("convT", x.dtype, (1, rows * OW, M), "temp") if as_b else None
    (sh, sw), (dh, dw) = plan.strides, plan.dilations
    for nb in range(Nb):
        for r0 in range(0, OH, rows):
            rr = min(rows, OH - r0)
            shape = (C,) + tuple(kernel) + (rr, OW)

            def fn(idx, _n=nb, _r0=r0):
                ci, th, tw, oh, ow = idx
                return xp.at([iconst(_n), ci, iadd(imul(iadd(oh, iconst(_r0)), sh), imul(th, dh)),
                              iadd(imul(ow, sw), imul(tw, dw))])
            c.store(Generic(shape, x.dtype, c, fn, 2), View.of(buf, c, shape))
            col = View.of(buf, c, (1, CK, rr * OW))
            o = out4.slice(0, nb, 1, 1).slice(2, r0, 1, rr).try_reshape((1, M, rr * OW))
            if o is not None and as_b:
                ok = _conv_weights_as_b(c, W, col, o, View.of(tbuf, c, (1, rr * OW, M)))
            else:
                ok = o is not None and c.templates.matmul(c, W, col, o)
            if not ok:
                raise LoweringError("internal: conv GEMM row block layout", op="conv")
    return True


def rule_pool(ctx, n, ins):
    x = ins[0]
    shape, odt = _out(n)
    if n.op == "max_pool" and n.attrs.get("indices"):
        return rule_max_pool_indices(ctx, n, ins)
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
        if (op == "max_pool" and c.templates is not None and hasattr(c.templates, "maxpool2d")
                and c.templates.maxpool2d(c, x, plan, kernel, dest)):
            return
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
    A, B = ins[0], ins[1]
    azp = ins[2] if len(ins) > 2 else None
    bzp = ins[3] if len(ins) > 3 else None
    shape, odt = _out(n)

    def centered(t, zp, axis):
        if zp is None:
            return Map(lambda b, v: b.cast(v, dt.int32), [t], {}, t.shape, t.dtype, ctx, out_dtype=dt.int32)
        if zp.size > 1 and t.rank >= 2:
            zp = zp.reshape((zp.size, 1) if axis == -2 else (zp.size,))
        z = zp.broadcast_to(t.shape) if zp.size > 1 else zp.reshape(()).broadcast_to(t.shape)
        return Map(lambda b, v, zz: b.sub(b.cast(v, dt.int32), b.cast(zz, dt.int32)), [t, z], {}, t.shape,
                   t.dtype, ctx, out_dtype=dt.int32)
    fake = Node("matmul", [], n.outputs, {}, n.name)
    return rule_matmul(ctx, fake, [centered(A, azp, -2), centered(B, bzp, -1)])


def rule_einsum(ctx, n, ins):
    from irgraph.ops.linalg import parse_einsum
    terms, output = parse_einsum(n.attrs["equation"], [t.rank for t in ins])
    shape, odt = _out(n)
    sizes: dict = {}
    for t, labels in zip(ins, terms):
        for lab, d in zip(labels, t.shape):
            sizes[lab] = max(sizes.get(lab, 1), d)
    reduced = []
    for labels in terms:
        for lab in labels:
            if lab not in output and lab not in reduced:
                reduced.append(lab)
    full = list(output) + reduced
    cd = dt.float32 if odt in (dt.float16, dt.bfloat16) else odt
    ops = [ctx.force(t) if t.cost() > 2 else t for t in ins]

    def fn(idx):
        b = IRBuilder()
        at = dict(zip(full, idx))
        prod = None
        for t, labels in zip(ops, terms):
            v = b.cast(t.at([iconst(0) if d == 1 else at[lab] for lab, d in zip(labels, t.shape)]), cd)
            prod = v if prod is None else b.mul(prod, v)
        return prod
    T_ = Generic([sizes[lab] for lab in full], cd, ctx, fn, 2 * len(ins))
    if not reduced:
        return [Map(lambda b, v: b.cast(v, odt), [T_], {}, shape, cd, ctx, out_dtype=odt)]
    axes = tuple(range(len(output), len(full)))

    def emit(c, dest):
        emit_reduce(c, T_, axes, lambda b, a, v: b.add(a, v), 0, cd, None, dest)
    return [Pending(shape, odt, ctx, emit, "einsum")]


def rule_max_pool_indices(ctx, n, ins):
    """max_pool's second output: the flat index (N*C*spatial, row or column major) of each max."""
    x = ins[0]
    kernel = tuple(n.attrs["kernel_shape"])
    plan = _window(n, x, kernel, ceil_mode=bool(n.attrs.get("ceil_mode")))
    shape, odt = _out(n)
    sizes = x.shape[2:]
    col_major = n.attrs["storage_order"] == 1
    from irgraph.ops.reduction import REDUCTION_IDENTITY

    def emit(c, dest_y, dest_i):
        b = IRBuilder()
        with c.stage():
            o = c.var()
            nb, ch = delinearize(o, x.shape[:2])
            sp_loop, sp, body = c.loops(plan.out)
            taps = [c.var() for _ in kernel]
            best = Var(f"best{next(c._n)}", x.dtype)
            arg = Var(f"arg{next(c._n)}", INDEX)
            src, valid = [], None
            for s_, st, t, dl, pb, sz in zip(sp, plan.strides, taps, plan.dilations, plan.pads_begin, sizes):
                i = isub(iadd(imul(s_, st), imul(t, dl)), pb)
                ok = b.and_(b.ge(i, iconst(0)), b.lt(i, iconst(sz)))
                valid = ok if valid is None else b.and_(valid, ok)
                src.append(iclamp(i, 0, sz - 1))
            v = x.at([nb, ch] + src)
            flat = iconst(0)
            for k in (reversed(range(len(sizes))) if col_major else range(len(sizes))):
                flat = iadd(imul(flat, sizes[k]), src[k])
            flat = iadd(imul(o, numel(sizes)), flat)
            better = b.and_(valid, b.gt(v, best))
            inner = [Assign(arg, b.select(better, flat, arg)), Assign(best, b.select(better, v, best))]
            for t, kd in reversed(list(zip(taps, kernel))):
                inner = [Loop(t, kd, "serial", inner)]
            ident = REDUCTION_IDENTITY["reduce_max"](x.dtype)
            body.extend([Local(best, Const(ident, x.dtype)), Local(arg, iconst(0))] + inner +
                        [Store(dest_y.buf, dest_y.flat([nb, ch] + sp), best),
                         Store(dest_i.buf, dest_i.flat([nb, ch] + sp), arg)])
            c.body.append(Loop(o, x.shape[0] * x.shape[1], "serial", [sp_loop]))
    holder = {}

    def emit_y(c, dest):
        ibuf = c.buffer("argmax", dt.int64, shape, "temp")
        holder["i"] = View.of(ibuf, c)
        emit(c, dest, holder["i"])

    y = Pending(shape, x.dtype, ctx, emit_y, "max_pool")
    yv = ctx.force(y)

    def fn_i(idx):
        return holder["i"].at(idx)
    return [yv, Generic(shape, dt.int64, ctx, fn_i, 0)]


def rule_conv_integer(ctx, n, ins):
    x, w = ins[0], ins[1]
    xzp = ins[2] if len(ins) > 2 else None
    wzp = ins[3] if len(ins) > 3 else None

    def centered(t, zp, per_row):
        if zp is None:
            return Map(lambda b, v: b.cast(v, dt.int32), [t], {}, t.shape, t.dtype, ctx, out_dtype=dt.int32)
        if zp.size > 1 and per_row:
            z = zp.reshape((zp.size,) + (1,) * (t.rank - 1)).broadcast_to(t.shape)
        else:
            z = zp.reshape(()).broadcast_to(t.shape)
        return Map(lambda b, v, zz: b.sub(b.cast(v, dt.int32), b.cast(zz, dt.int32)), [t, z], {}, t.shape,
                   t.dtype, ctx, out_dtype=dt.int32)
    fake = Node("conv", [], n.outputs, dict(n.attrs), n.name)
    return rule_conv(ctx, fake, [centered(x, xzp, False), centered(w, wzp, True)], int_ok=True)
