"""Lowering of ``sparse_matmul`` / ``sparse_conv`` (irgraph/ops/sparse.py) to the CPU's CSR kernel.

    sparse_conv:   ``Y[t] (R, P) = W (R, C*kh*kw) @ im2col(x[t])`` by the tile variant. Stride 1:
                   no im2col at all — each CSR column index becomes a row offset into the
                   zero-padded image (see ``_conv_implicit``); 1x1 convs read x itself. Strided
                   convs: the im2col rows are written once into packed panels (K x T floats).
    sparse_matmul: few rows (x (..., K) with M = prod(leading dims) <= GATHER_MAX_ROWS): the gather
                   variant on x and y as they are; otherwise x^T in panels, the tile variant into
                   y^T (R, M), and one transposing copy into y.

Both end in one ``ExternCall("spmm")`` (``backends/cpu/sparse_gemm.py``); a following epilogue
(bias, activation, residual of a fused group) is applied by the generic lowering in place. What
the kernel cannot take (a structure or values known only at run time, dtypes other than
float32, backends without the CPU templates) lowers through the op's registry decomposition.

Importing this module registers the rules and teaches the CPU code generator ``spmm``; the API
imports it for ``target="cpu"``.
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt
from irgraph.ops import sparse  # noqa: F401  (registers sparse_matmul / sparse_conv)
from irgraph.ops.quant import conv_geometry

from . import lower_ops
from .kernel_ir import Const, ExternCall, IRBuilder
from .lower_tensor import Generic, View, iadd, iclamp, iconst, idiv, imod, imul, numel

_b = IRBuilder()

# x rows up to which sparse_matmul uses the gather variant on row-major x and y (no panels, no
# transposed copy). ``benchmarks/bench_sparse.py --kernels``, 512 x 512, one column: gather
# 1.26x / 1.22x / 1.07x / 0.98x the speed of a one-column tile at sparsity 0.5 / 0.7 / 0.9 /
# 0.95; with several rows the gathers repeat per row (at 16 rows a panel tile was over 10x
# faster in a development measurement).
GATHER_MAX_ROWS = 1


def tile_shape(p: int, lanes: int) -> tuple[int, int]:
    """(tile_vectors, chains) for P output columns: one vector per row tile when P fits in one
    (digits-sized images, small batches), else two, with 8 FMA chains in both cases (two FMA
    pipes x 4 cycles of latency). ``benchmarks/bench_sparse.py --kernels`` (sparsity 0.8, 1
    thread, ms, three runs): P=16: (1, 8) 0.034, (2, 4) 0.040-0.060, (4, 2) 0.077; P=64: (2, 4)
    0.069, (1, 8) 0.117, (4, 2) 0.076-0.108; P=256: (2, 4) 0.098-0.119, (4, 2) 0.080-0.099,
    (1, 8) 0.118-0.139; P=784: (2, 4) 0.130-0.202, the others 0.206-0.213."""
    return (1, 8) if p <= lanes else (2, 4)


def _known(v):
    if v is None:
        return None
    a = v.const if v.const is not None else v.meta.get("value")
    return None if a is None else np.asarray(a)


def _csr(n):
    """(indptr, indices, values) when all three are known, else None."""
    arrays = [_known(n.inputs[i]) for i in (1, 2, 3)]
    return None if any(a is None for a in arrays) else arrays


def _fallback(ctx, n, ins):
    from .lower import _lower_decomposed
    return _lower_decomposed(ctx, n, ins, 0)


def _fast(ctx, n) -> bool:
    from .cpu.codegen import CpuTemplates
    return (isinstance(ctx.templates, CpuTemplates) and n.outputs[0].dtype is dt.float32
            and _csr(n) is not None)


def _lanes() -> int:
    from .cpu.llvm_target import host_cpu
    return host_cpu().f32_lanes


def _const_buffer(c, t, arr, name: str, dtype):
    """(buffer, offset) holding ``arr``: the buffer lowering already bound for the input when it
    is a contiguous view of it (no second copy of the weights), else a new const buffer."""
    if isinstance(t, View) and t.contiguous and t.buf.dtype is dtype and t.buf.data is not None:
        return t.buf, t.offset
    data = np.ascontiguousarray(arr.reshape(-1) if arr.size else np.zeros(1), dtype.np)
    return c.buffer(name, dtype, data.shape, "const", data), 0


def _operands(c, n, ins, rows: int):
    """(buffers, offsets) of indptr, indices, values and the bias (const, stored, or None)."""
    bufs, offs = [], []
    for i, arr, d, what in zip((1, 2, 3), _csr(n), (dt.int32, dt.int32, dt.float32),
                               ("indptr", "indices", "values")):
        buf, off = _const_buffer(c, ins[i], arr, f"{n.name}_{what}", d)
        bufs.append(buf)
        offs.append(off)
    bias_v = n.inputs[4] if len(n.inputs) > 4 else None
    if bias_v is None:
        return bufs + [None], offs + [0]
    known = _known(bias_v)
    if known is not None:
        buf, off = _const_buffer(c, ins[4], np.broadcast_to(known.reshape(-1), (rows,)), n.name + "_bias",
                                 dt.float32)
        return bufs + [buf], offs + [off]
    view = c.force(ins[4].reshape((rows,)))
    if view.strides[0] != 1 and rows > 1:
        tmp = View.of(c.buffer("sp_bias", dt.float32, (rows,), "temp"), c)
        c.store(Generic((rows,), dt.float32, c, view.at, 0), tmp)
        view = tmp
    return bufs + [view.buf], offs + [view.offset]


def _call(c, bufs, offs, X, x_off, Y, y_off, **attrs):
    c.body.append(ExternCall("spmm", bufs + [X, Y], {"offsets": offs + [x_off, y_off], **attrs}))


def _panels(c, shape, fn):
    """A temp (..., Q, K, T) float32 buffer filled by ``fn(idx) -> Expr``."""
    buf = c.buffer("sp_panels", dt.float32, shape, "temp")
    c.store(Generic(shape, dt.float32, c, fn, 4), View.of(buf, c))
    return buf


def _contiguous_dest(c, dest, shape):
    """``dest`` when it is a contiguous view of ``shape``'s size, else a temp (and the copy back)."""
    out = dest.try_reshape(shape) if dest.contiguous else None
    if out is not None:
        return out, None
    tmp = View.of(c.buffer("sp_out", dt.float32, shape, "temp"), c)
    return tmp, tmp


def rule_sparse_matmul(ctx, n, ins):
    if not _fast(ctx, n):
        return _fallback(ctx, n, ins)
    x = ins[0]
    out = n.outputs[0].type
    K, R = n.attrs["k"], n.inputs[1].shape[0] - 1
    M = numel(x.shape[:-1])

    def emit(c, dest):
        bufs, offs = _operands(c, n, ins, R)
        X = c.force(x)
        X2 = X.try_reshape((M, K))
        if X2 is None:
            X2 = View.of(c.buffer("sp_x", dt.float32, (M, K), "temp"), c)
            c.store(Generic((M, K), dt.float32, c, X.reshape((M, K)).at, 0), X2)
        if M <= GATHER_MAX_ROWS:
            Y2, copy = _contiguous_dest(c, dest, (M, R))
            _call(c, bufs, offs, X2.buf, X2.offset, Y2.buf, Y2.offset, R=R, P=M, xk=X2.strides[1],
                  xp=X2.strides[0], yr=Y2.strides[1], yp=Y2.strides[0], batch=1, sx=0, sy=0, gather=True,
                  tile_vectors=1, chains=1)
            if copy is not None:
                c.store(copy.reshape(dest.shape), dest)
            return
        U, J = tile_shape(M, _lanes())
        T = U * _lanes()
        Q = -(-M // T)

        def fn(idx):
            q, k, i = idx
            m = iadd(imul(q, T), i)
            v = X2.at([iclamp(m, 0, M - 1), k])
            return _b.select(_b.lt(m, iconst(M)), v, Const(0.0, dt.float32))
        panels = _panels(c, (Q, K, T), fn)
        yt = c.buffer("sp_yt", dt.float32, (R, M), "temp")
        _call(c, bufs, offs, panels, 0, yt, 0, R=R, P=M, xk=T, xp=K * T, yr=M, yp=1, batch=1, sx=0, sy=0,
              gather=False, tile_vectors=U, chains=J)
        c.store(View.of(yt, c).permute((1, 0)).reshape(dest.shape), dest)
    from .lower_tensor import Pending
    return [Pending(tuple(out.shape), dt.float32, ctx, emit, "sparse_matmul")]


def rule_sparse_conv(ctx, n, ins):
    if not _fast(ctx, n) or len(n.attrs["kernel_shape"]) != 2:
        return _fallback(ctx, n, ins)
    x = ins[0]
    out = n.outputs[0].type
    Nb, C, H, W = x.shape
    kh, kw = n.attrs["kernel_shape"]
    (OH, OW), pb, pe, strides, dil = conv_geometry((H, W), (kh, kw), n.attrs)
    R = out.shape[1]
    Hp, Wp = H + pb[0] + pe[0], W + pb[1] + pe[1]
    implicit = tuple(strides) == (1, 1) and OH == Hp - (kh - 1) * dil[0] and OW == Wp - (kw - 1) * dil[1]

    def emit(c, dest):
        bufs, offs = _operands(c, n, ins, R)
        if implicit:
            _conv_implicit(c, n, x, dest, bufs, offs, (Nb, C, H, W, R, kh, kw, OH, OW, Hp, Wp), pb, dil)
        else:
            _conv_panels(c, x, dest, bufs, offs, (Nb, C, H, W, R, kh, kw, OH, OW), pb, strides, dil)
    from .lower_tensor import Pending
    return [Pending(tuple(out.shape), dt.float32, ctx, emit, "sparse_conv")]


def _conv_implicit(c, n, x, dest, bufs, offs, dims, pb, dil):
    """Stride 1: im2col without copies. Over the zero-padded image (plane stride CS), output
    pixel p' = oy*Wp + ox (ox < Wp: the Wp - OW extra columns are computed and dropped) reads
    ``xpad[c*CS + ky*d*Wp + kx*d + p']``: contiguous in p'. So each CSR entry's column index
    becomes that row offset at compile time and the tile kernel reads X rows at ``xpad + offset``
    (``xk = 1``, plain panels ``xp = T``)."""
    Nb, C, H, W, R, kh, kw, OH, OW, Hp, Wp = dims
    plain = (kh, kw) == (1, 1) and (Hp, Wp) == (H, W)
    P = OH * Wp
    U, J = tile_shape(P, _lanes())
    T = U * _lanes()
    X = c.force(x)
    if plain and X.contiguous:
        src, src_off, CS = X.buf, X.offset, H * W
    else:
        CS = Hp * Wp
        if CS % 256 == 0:          # planes 1 KiB apart alias in the L1 sets: stagger them
            CS += 16
        # rows past the last plane: a full panel of the last image may read up to (kh - 1) rows
        # and kw - 1 columns past its output, which land in the next plane or this slack
        slack = (kh - 1) * dil[0] * Wp + (kw - 1) * dil[1] + T
        size = Nb * C * CS + slack
        buf = c.buffer("sp_xpad", dt.float32, (size,), "temp")
        zero = Const(0.0, dt.float32)

        def fn(idx):
            t, ch, yy, xx = idx
            iy, ix = iadd(yy, -pb[0]), iadd(xx, -pb[1])
            ok = _b.and_(_b.and_(_b.ge(iy, iconst(0)), _b.lt(iy, iconst(H))),
                         _b.and_(_b.ge(ix, iconst(0)), _b.lt(ix, iconst(W))))
            return _b.select(ok, X.at([t, ch, iclamp(iy, 0, H - 1), iclamp(ix, 0, W - 1)]), zero)
        planes = View(buf, (Nb, C, Hp, Wp), (C * CS, CS, Wp, 1), 0, c)
        c.store(Generic((Nb, C, Hp, Wp), dt.float32, c, fn, 3), planes)
        if CS != Hp * Wp:          # the stagger gaps are read by the extra columns only: zero them
            gap = View(buf, (Nb * C, CS - Hp * Wp), (CS, 1), Hp * Wp, c)
            c.store(Generic(gap.shape, dt.float32, c, lambda idx: zero, 0), gap)
        tail = View(buf, (slack,), (1,), Nb * C * CS, c)
        c.store(Generic((slack,), dt.float32, c, lambda idx: zero, 0), tail)
        src, src_off = buf, 0
    _ip, ix, _v = _csr(n)
    k = ix.astype(np.int64)
    ch, tap = k // (kh * kw), k % (kh * kw)
    rows = ch * CS + (tap // kw) * dil[0] * Wp + (tap % kw) * dil[1]
    if rows.size and rows.max() >= 2 ** 31:
        raise AssertionError("unreachable: conv planes beyond int32 offsets are lowered with panels")
    off_buf = c.buffer(n.name + "_rowoff", dt.int32, (max(rows.size, 1),), "const",
                       np.ascontiguousarray(rows if rows.size else np.zeros(1), np.int32))
    bufs, offs = list(bufs), list(offs)
    bufs[1], offs[1] = off_buf, 0
    if OW == Wp:
        Y, copy = _contiguous_dest(c, dest, (Nb, R, P))
    else:
        Y = View.of(c.buffer("sp_wide", dt.float32, (Nb, R, OH, Wp), "temp"), c)
        copy = None
    _call(c, bufs, offs, src, src_off, Y.buf, Y.offset, R=R, P=P, xk=1, xp=T, yr=P, yp=1, batch=Nb,
          sx=C * CS, sy=R * P, gather=False, tile_vectors=U, chains=J)
    if OW != Wp:
        c.store(Y.reshape((Nb, R, OH, Wp)).slice(3, 0, 1, OW).reshape(dest.shape), dest)
    elif copy is not None:
        c.store(copy.reshape(dest.shape), dest)


def _conv_panels(c, x, dest, bufs, offs, dims, pb, strides, dil):
    """Strided convs: im2col rows written once into packed panels (K x T floats each)."""
    Nb, C, H, W, R, kh, kw, OH, OW = dims
    K, P = C * kh * kw, OH * OW
    U, J = tile_shape(P, _lanes())
    T = U * _lanes()
    Q = -(-P // T)
    X = c.force(x)
    zero = Const(0.0, dt.float32)

    def fn(idx):
        t, q, k, i = idx
        p = iadd(imul(q, T), i)
        pc = iclamp(p, 0, P - 1)
        oy, ox = idiv(pc, OW), imod(pc, OW)
        ch, tap = idiv(k, kh * kw), imod(k, kh * kw)
        ky, kx = idiv(tap, kw), imod(tap, kw)
        iy = iadd(iadd(imul(oy, strides[0]), imul(ky, dil[0])), -pb[0])
        ix = iadd(iadd(imul(ox, strides[1]), imul(kx, dil[1])), -pb[1])
        ok = _b.and_(_b.and_(_b.ge(iy, iconst(0)), _b.lt(iy, iconst(H))),
                     _b.and_(_b.ge(ix, iconst(0)), _b.lt(ix, iconst(W))))
        v = X.at([t, ch, iclamp(iy, 0, H - 1), iclamp(ix, 0, W - 1)])
        return _b.select(_b.and_(_b.lt(p, iconst(P)), ok), v, zero)
    panels = _panels(c, (Nb, Q, K, T), fn)
    Y, copy = _contiguous_dest(c, dest, (Nb, R, P))
    _call(c, bufs, offs, panels, 0, Y.buf, Y.offset, R=R, P=P, xk=T, xp=K * T, yr=P, yp=1, batch=Nb,
          sx=Q * K * T, sy=R * P, gather=False, tile_vectors=U, chains=J)
    if copy is not None:
        c.store(copy.reshape(dest.shape), dest)


RULES: dict = {"sparse_matmul": rule_sparse_matmul, "sparse_conv": rule_sparse_conv}


def register(table: dict | None = None) -> None:
    """Add the rules to the lowering table and the ``spmm`` template to the CPU code generator."""
    (lower_ops.rules() if table is None else table).update(RULES)
    from .cpu import sparse_gemm
    sparse_gemm.install()


register()
