"""Byte-level kernels around the int8 GEMM, written as explicit vector LLVM IR.

The generic loop nests of the kernel IR do not vectorize 8-bit stores well (a float -> uint8
cast goes through a saturating 64-bit conversion that LLVM scalarizes, and an element-strided
copy is a gather), so the three data movements of quantized convolutions are hand-written:

- ``qpack``: NCHW uint8/int8 input -> padded NHWC uint8 image for the implicit GEMM (border and
  padding channels = the zero point; int8 flipped to uint8 by its sign bit);
- ``qunpack``: the GEMM's (pixels, channels) result -> NCHW (uint8, int8 or float32);
- ``qadd``: ``Q(act(DQ(a) + DQ(b)))`` over 8-bit tensors (``quant_add``, the ResNet residual);
- ``qmaxpool``: 2-D max pooling of 8-bit NCHW tensors (the generic pool loop is scalar);
- ``qdql``: DynamicQuantizeLinear of a float32 tensor (range pass + quantizing pass);
- ``qquant``: QuantizeLinear of a float32 tensor with a per-tensor scale and zero point (the
  activations between int8 layers: after a layer norm, softmax or attention in float).

Transposes go through 16x16 register blocks (log2(16) rounds of interleaving shuffles), edges
element by element. ABIs (all counts and strides in elements; ``nthreads`` as in gemm.py)::

    void NAME_pack(ptr x, ptr img, i64 N, i64 C, i64 H, i64 W, i64 Hp, i64 Wp, i64 Cp,
                   i64 pad_h, i64 pad_w, ptr zp_i32, i64 nthreads)
    void NAME_unpack(ptr src, ptr dst, i64 N, i64 P, i64 M, i64 nthreads)     # per image: (P, M) -> (M, P)
    void NAME_add(ptr a, ptr b, ptr y, i64 n, ptr params_f32[6], i64 nthreads)
                                        # params: a_scale, a_zp, b_scale, b_zp, y_scale, y_zp
    void NAME_maxpool(ptr x, ptr y, i64 planes, i64 H, i64 W, i64 OH, i64 OW, i64 kh, i64 kw,
                      i64 sh, i64 pad_top, i64 pad_left, i64 nthreads)   # column stride: a variant
    void NAME_dql(ptr x, ptr y_u8, ptr scale_f32, ptr zp_u8, i64 n, i64 nthreads)
    void NAME_quant(ptr x, ptr y, ptr params_f32[2], i64 n, i64 nthreads)   # params: scale, zp
"""
from __future__ import annotations

import llvmlite.ir as ir

from . import threads
from .vector_ir import F32, I1, I8, I32, I64, PTR, VOID, VecOps, fptr, for_range, function, i64, if_then, imin

B = 16                       # block edge of the register transposes
PAR_MIN_BYTES = 1 << 16      # smaller moves run on one thread


def emit_transpose(mod: ir.Module, name: str, ety: ir.Type, flip: bool = False) -> ir.Function:
    """``void name(ptr src, i64 rows, i64 cols, i64 src_ld, ptr dst, i64 dst_ld)``:
    ``dst[c*dst_ld + r] = src[r*src_ld + c]`` (bytes xor 0x80 when ``flip``)."""
    try:
        return mod.get_global(name)
    except KeyError:
        pass
    fn, b = function(mod, name, [PTR, I64, I64, I64, PTR, I64], noinline=True)
    src, rows, cols, sld, dst, dld = fn.args
    vt = ir.VectorType(ety, B)

    def conv(v):
        return b.xor(v, ir.Constant(v.type, [0x80] * B if isinstance(v.type, ir.VectorType) else 0x80)) \
            if flip else v
    rfull = b.mul(b.sdiv(rows, i64(B)), i64(B))
    cfull = b.mul(b.sdiv(cols, i64(B)), i64(B))
    with for_range(b, 0, rfull, B, "rb") as r0:
        with for_range(b, 0, cfull, B, "cb") as c0:
            vs = [b.load(fptr(b, src, b.add(b.mul(b.add(r0, i64(i)), sld), c0), ety), typ=vt, align=1)
                  for i in range(B)]
            for i, v in enumerate(VecOps(b, B).transpose(vs)):
                b.store(conv(v), fptr(b, dst, b.add(b.mul(b.add(c0, i64(i)), dld), r0), ety), align=1)
        with for_range(b, cfull, cols, 1, "ct") as c:        # the last columns of these rows
            for i in range(B):
                r = b.add(r0, i64(i))
                v = b.load(fptr(b, src, b.add(b.mul(r, sld), c), ety), typ=ety)
                b.store(conv(v), fptr(b, dst, b.add(b.mul(c, dld), r), ety))
    with for_range(b, rfull, rows, 1, "rt") as r:            # the last rows, all columns
        with for_range(b, 0, cols, 1, "c") as c:
            v = b.load(fptr(b, src, b.add(b.mul(r, sld), c), ety), typ=ety)
            b.store(conv(v), fptr(b, dst, b.add(b.mul(c, dld), r), ety))
    b.ret_void()
    return fn


def _launch(mod, b, worker, values, nthreads, work):
    ctx = threads.store_ctx(b, values)
    nth = b.select(b.icmp_signed("<", work, i64(PAR_MIN_BYTES)), i64(1), nthreads)
    threads.launch(b, threads.emit_trampoline(mod, worker), worker, ctx, nth)


def _vectors_of_share(b, vo: VecOps, n, tid, nth, body) -> None:
    """``body(i, mask)`` over this part's 64-aligned share of ``[0, n)``: whole vectors from its
    start, then one masked vector for the rest."""
    L = vo.L
    e0, e1 = threads.split_range(b, n, tid, nth, 64)
    full = vo.mask(i64(L))
    nfull = b.add(e0, b.mul(b.sdiv(b.sub(e1, e0), i64(L)), i64(L)))
    with for_range(b, e0, nfull, L, "i") as i:
        body(i, full)
    with if_then(b, b.icmp_signed("<", nfull, e1), "tail"):
        body(nfull, vo.mask(b.sub(e1, nfull)))


def emit_pack(mod: ir.Module, name: str, flip: bool) -> ir.Function:
    tr = emit_transpose(mod, name + ".tr", I8, flip)
    memset = threads.declare(mod, "llvm.memset.p0.i64", VOID, [PTR, I8, I64, I1])
    wk, b = function(mod, name + ".worker", [I64, I64, PTR])
    tid, nth, ctx = wk.args
    x, img = (threads.load_ctx(b, ctx, i, PTR) for i in (0, 1))
    N, C, H, W, Hp, Wp, Cp, ph, pw = (threads.load_ctx(b, ctx, i) for i in range(2, 11))
    zp = b.trunc(b.load(threads.load_ctx(b, ctx, 11, PTR), typ=I32), I8)
    row = b.mul(Wp, Cp)
    # threads take rows of the padded images: each row is filled with the zero point, then the
    # input row that lands there (if any) is transposed into it
    r0, r1 = threads.split_range(b, b.mul(N, Hp), tid, nth)
    with for_range(b, r0, r1, 1, "r") as r:
        n, hp = b.sdiv(r, Hp), b.srem(r, Hp)
        d = fptr(b, img, b.mul(r, row), I8)
        b.call(memset, [d, zp, row, ir.Constant(I1, 0)])
        h = b.sub(hp, ph)
        with if_then(b, b.and_(b.icmp_signed(">=", h, i64(0)), b.icmp_signed("<", h, H)), "interior"):
            s = fptr(b, x, b.add(b.mul(b.mul(n, C), b.mul(H, W)), b.mul(h, W)), I8)
            b.call(tr, [s, C, W, b.mul(H, W), fptr(b, d, b.mul(pw, Cp), I8), Cp])
    b.ret_void()
    fn, b = function(mod, name, [PTR, PTR] + [I64] * 9 + [PTR, I64], internal=False)
    args = list(fn.args)
    _launch(mod, b, wk, args[:-1], args[-1], b.mul(args[2], b.mul(b.mul(args[6], args[7]), args[8])))
    b.ret_void()
    return fn


def emit_unpack(mod: ir.Module, name: str, ety: ir.Type) -> ir.Function:
    tr = emit_transpose(mod, name + ".tr", ety)
    wk, b = function(mod, name + ".worker", [I64, I64, PTR])
    tid, nth, ctx = wk.args
    src, dst = threads.load_ctx(b, ctx, 0, PTR), threads.load_ctx(b, ctx, 1, PTR)
    N, P, M = (threads.load_ctx(b, ctx, i) for i in (2, 3, 4))
    # every thread takes a 16-aligned slice of the pixels of every image
    p0, p1 = threads.split_range(b, P, tid, nth, B)
    with for_range(b, 0, N, 1, "n") as n:
        with if_then(b, b.icmp_signed("<", p0, p1), "part"):
            s = fptr(b, src, b.add(b.mul(b.mul(n, P), M), b.mul(p0, M)), ety)
            d = fptr(b, dst, b.add(b.mul(b.mul(n, P), M), p0), ety)
            b.call(tr, [s, b.sub(p1, p0), M, M, d, P])
    b.ret_void()
    fn, b = function(mod, name, [PTR, PTR, I64, I64, I64, I64], internal=False)
    N, P, M, nthreads = fn.args[2:]
    _launch(mod, b, wk, list(fn.args[:5]), nthreads, b.mul(N, b.mul(P, M)))
    b.ret_void()
    return fn


def emit_add(mod: ir.Module, name: str, a_signed: bool, b_signed: bool, y_signed: bool, relu: bool,
             lanes: int = 16) -> ir.Function:
    L = lanes
    wk, b = function(mod, name + ".worker", [I64, I64, PTR])
    tid, nth, ctx = wk.args
    A, Bv, Y = (threads.load_ctx(b, ctx, i, PTR) for i in range(3))
    n = threads.load_ctx(b, ctx, 3)
    params = threads.load_ctx(b, ctx, 4, PTR)
    vo = VecOps(b, L)
    sa, za, sb, zb, sy, zy = (vo.splat(b.load(fptr(b, params, i, F32), typ=F32)) for i in range(6))
    v8 = ir.VectorType(I8, L)
    vm = ir.VectorType(I1, L)
    mload = threads.declare(mod, f"llvm.masked.load.v{L}i8.p0", v8, [PTR, I32, vm, v8])
    mstore = threads.declare(mod, f"llvm.masked.store.v{L}i8.p0", VOID, [v8, PTR, I32, vm])
    rint = threads.declare(mod, f"llvm.rint.v{L}f32", vo.vf, [vo.vf])

    def deq(p, i, mask, signed, s, z):
        v = b.call(mload, [fptr(b, p, i, I8), ir.Constant(I32, 1), mask, ir.Constant(v8, None)])
        f = b.sitofp(v, vo.vf) if signed else b.uitofp(v, vo.vf)
        return b.fmul(b.fsub(f, z), s)

    def body(i, mask):
        x = b.fadd(deq(A, i, mask, a_signed, sa, za), deq(Bv, i, mask, b_signed, sb, zb))
        if relu:
            x = b.select(vo.lt(x, vo.zero), vo.zero, x)
        r = b.fadd(b.call(rint, [b.fdiv(x, sy)]), zy)
        b.call(mstore, [vo.to_8bit(r, y_signed), fptr(b, Y, i, I8), ir.Constant(I32, 1), mask])
    _vectors_of_share(b, vo, n, tid, nth, body)
    b.ret_void()
    fn, b = function(mod, name, [PTR, PTR, PTR, I64, PTR, I64], internal=False)
    _launch(mod, b, wk, list(fn.args[:5]), fn.args[5], fn.args[3])
    b.ret_void()
    return fn


def emit_maxpool(mod: ir.Module, name: str, signed: bool, sw: int) -> ir.Function:
    """``void name(ptr x, ptr y, i64 planes, i64 H, i64 W, i64 OH, i64 OW, i64 kh, i64 kw,
    i64 sh, i64 pt, i64 pl, i64 nthreads)``: 2-D max pooling of 8-bit NCHW planes (column stride
    ``sw`` fixed, padding ignored as ONNX does). Sixteen outputs of a row at a time where their
    windows lie inside the row (a load of 16*sw bytes, every sw-th kept), the rest one by one."""
    L = 16
    v8 = ir.VectorType(I8, L)
    vin = ir.VectorType(I8, L * sw)
    ident = -128 if signed else 0
    wk, b = function(mod, name + ".worker", [I64, I64, PTR])
    tid, nth, ctx = wk.args
    x, y = threads.load_ctx(b, ctx, 0, PTR), threads.load_ctx(b, ctx, 1, PTR)
    planes, H, W, OH, OW, kh, kw, sh, pt, pl = (threads.load_ctx(b, ctx, i) for i in range(2, 12))
    cmp = "icmp_signed" if signed else "icmp_unsigned"

    def vmax(a, c):
        return b.select(getattr(b, cmp)(">", a, c), a, c)
    # accumulators in the entry block, so LLVM keeps them in registers
    here = b.block
    b.position_at_start(wk.entry_basic_block)
    sacc, vacc = b.alloca(I8), b.alloca(v8)
    b.position_at_end(here)
    r0, r1 = threads.split_range(b, b.mul(planes, OH), tid, nth)
    # output columns whose windows lie inside the row: ow*sw - pl >= 0 and ow*sw + kw - 1 - pl < W
    lo = b.sdiv(b.add(pl, i64(sw - 1)), i64(sw))
    hi = imin(b, OW, b.add(b.sdiv(b.sub(b.sub(b.add(W, pl), kw), i64(0)), i64(sw)), i64(1)))
    hi = b.select(b.icmp_signed("<", hi, lo), lo, hi)
    nvec = b.sdiv(b.sub(hi, lo), i64(L))
    vend = b.add(lo, b.mul(nvec, i64(L)))
    with for_range(b, r0, r1, 1, "r") as r:
        p, oh = b.sdiv(r, OH), b.srem(r, OH)
        plane = fptr(b, x, b.mul(p, b.mul(H, W)), I8)
        yrow = fptr(b, y, b.mul(r, OW), I8)
        ih0 = b.sub(b.mul(oh, sh), pt)

        def scalar(ow):
            acc = sacc
            b.store(ir.Constant(I8, ident), acc)
            with for_range(b, 0, kh, 1, "i") as i:
                ih = b.add(ih0, i)
                with if_then(b, b.and_(b.icmp_signed(">=", ih, i64(0)), b.icmp_signed("<", ih, H)), "rowok"):
                    with for_range(b, 0, kw, 1, "j") as j:
                        iw = b.sub(b.add(b.mul(ow, i64(sw)), j), pl)
                        with if_then(b, b.and_(b.icmp_signed(">=", iw, i64(0)), b.icmp_signed("<", iw, W)), "colok"):
                            v = b.load(fptr(b, plane, b.add(b.mul(ih, W), iw), I8), typ=I8)
                            b.store(vmax(b.load(acc, typ=I8), v), acc)
            b.store(b.load(acc, typ=I8), fptr(b, yrow, ow, I8))
        with for_range(b, 0, imin(b, lo, OW), 1, "head") as ow:
            scalar(ow)
        def vector(ow0):
            acc = vacc
            b.store(ir.Constant(v8, [ident] * L), acc)
            with for_range(b, 0, kh, 1, "vi") as i:
                ih = b.add(ih0, i)
                with if_then(b, b.and_(b.icmp_signed(">=", ih, i64(0)), b.icmp_signed("<", ih, H)), "vrow"):
                    with for_range(b, 0, kw, 1, "vj") as j:
                        iw = b.sub(b.add(b.mul(ow0, i64(sw)), j), pl)
                        v = b.load(fptr(b, plane, b.add(b.mul(ih, W), iw), I8), typ=vin, align=1)
                        if sw > 1:
                            v = b.shuffle_vector(v, ir.Constant(vin, ir.Undefined),
                                                 ir.Constant(ir.VectorType(I32, L), [k * sw for k in range(L)]))
                        b.store(vmax(b.load(acc, typ=v8), v), acc)
            b.store(b.load(acc, typ=v8), fptr(b, yrow, ow0, I8), align=1)
        with for_range(b, lo, vend, L, "v") as ow0:
            vector(ow0)
        # the last inside columns as one more (overlapping) vector when there are 16 of them
        last = b.and_(b.icmp_signed("<", vend, hi), b.icmp_signed(">=", b.sub(hi, lo), i64(L)))
        with if_then(b, last, "vlast"):
            vector(b.sub(hi, i64(L)))
        with for_range(b, b.select(last, hi, vend), OW, 1, "tail") as ow:
            scalar(ow)
    b.ret_void()
    fn, b = function(mod, name, [PTR, PTR] + [I64] * 10 + [I64], internal=False)
    args = list(fn.args)
    _launch(mod, b, wk, args[:-1], args[-1], b.mul(b.mul(args[2], args[5]), args[6]))
    b.ret_void()
    return fn


def emit_dql(mod: ir.Module, name: str) -> ir.Function:
    """``void name(ptr x, ptr y, ptr scale, ptr zp, i64 n, i64 nthreads)``: DynamicQuantizeLinear
    of float32 ``x`` (the range includes 0; uint8 out), computed as the reference does: scale =
    (max - min) / 255 (1/255 for an all-zero range), zp = rint(clip(-min / scale, 0, 255)),
    y = clip(rint(x / scale) + zp, 0, 255). The range is one vector pass on the calling thread,
    the quantization is split across threads."""
    L = 16
    vf = ir.VectorType(F32, L)
    wk = _emit_quantize_worker(mod, name + ".worker", L, signed=False, nan_to_zero_point=False)
    # the entry: range, parameters, then the workers
    fn, b = function(mod, name, [PTR, PTR, PTR, PTR, I64, I64], internal=False)
    x, y, scale_p, zp_p, n, nthreads = fn.args
    vo = VecOps(b, L)
    here = b.block
    b.position_at_start(fn.entry_basic_block)
    lo_a, hi_a, prm = b.alloca(vf), b.alloca(vf), b.alloca(F32, size=i64(2))
    b.position_at_end(here)
    b.store(vo.zero, lo_a)          # 0 is always in the range
    b.store(vo.zero, hi_a)
    nfull = b.mul(b.sdiv(n, i64(L)), i64(L))

    def minmax(i, mask):
        v = vo.mload(fptr(b, x, i, F32), mask)     # masked-off lanes read 0: inside the range
        lo, hi = b.load(lo_a, typ=vf), b.load(hi_a, typ=vf)
        b.store(b.select(vo.lt(v, lo), v, lo), lo_a)
        b.store(b.select(vo.lt(hi, v), v, hi), hi_a)
    with for_range(b, 0, nfull, L, "r") as i:
        minmax(i, vo.mask(i64(L)))
    with if_then(b, b.icmp_signed("<", nfull, n), "rtail"):
        minmax(nfull, vo.mask(b.sub(n, nfull)))
    lo_v, hi_v = b.load(lo_a, typ=vf), b.load(hi_a, typ=vf)
    lo, hi = b.extract_element(lo_v, ir.Constant(I32, 0)), b.extract_element(hi_v, ir.Constant(I32, 0))
    for k in range(1, L):
        a, c = b.extract_element(lo_v, ir.Constant(I32, k)), b.extract_element(hi_v, ir.Constant(I32, k))
        lo = b.select(b.fcmp_ordered("<", a, lo), a, lo)
        hi = b.select(b.fcmp_ordered("<", hi, c), c, hi)
    span = b.select(b.fcmp_ordered("==", hi, lo), ir.Constant(F32, 1.0), b.fsub(hi, lo))
    scale = b.fdiv(span, ir.Constant(F32, 255.0))
    z = b.fsub(ir.Constant(F32, 0.0), b.fdiv(lo, scale))
    z = b.select(b.fcmp_ordered("<", z, ir.Constant(F32, 0.0)), ir.Constant(F32, 0.0), z)
    z = b.select(b.fcmp_ordered("<", ir.Constant(F32, 255.0), z), ir.Constant(F32, 255.0), z)
    rint1 = threads.declare(mod, "llvm.rint.f32", F32, [F32])
    z = b.call(rint1, [z])
    b.store(scale, scale_p)
    b.store(b.trunc(b.fptosi(z, I32), I8), zp_p)
    b.store(scale, fptr(b, prm, 0, F32))
    b.store(z, fptr(b, prm, 1, F32))
    _launch(mod, b, wk, [x, y, prm, n], nthreads, n)
    b.ret_void()
    return fn


def emit_quant(mod: ir.Module, name: str, signed: bool, lanes: int = 16) -> ir.Function:
    """``void name(ptr x, ptr y, ptr params, i64 n, i64 nthreads)``: QuantizeLinear of float32
    ``x`` with one scale and zero point (``params`` = float32 [scale, zp]), as the reference
    computes it: y = clip(rint(x / scale) + zp) with the division in float32 and NaN -> zp.
    rint(q) + zp is exact in float32 wherever the result is not clipped (|q| < 2**24)."""
    wk = _emit_quantize_worker(mod, name + ".worker", lanes, signed, nan_to_zero_point=True)
    fn, b = function(mod, name, [PTR, PTR, PTR, I64, I64], internal=False)
    x, y, prm, n, nthreads = fn.args
    _launch(mod, b, wk, [x, y, prm, n], nthreads, b.mul(n, i64(4)))      # work in bytes read
    b.ret_void()
    return fn


def _emit_quantize_worker(mod: ir.Module, name: str, L: int, signed: bool, nan_to_zero_point: bool):
    """``void name(i64 part, i64 parts, ptr ctx)``, ctx = (x, y, params, n): this part's share of
    y = clip(rint(x / scale) + zp) for float32 x and 8-bit y, params = float32 [scale, zp]."""
    wk, b = function(mod, name, [I64, I64, PTR])
    tid, nth, ctx = wk.args
    x, y, prm = (threads.load_ctx(b, ctx, i, PTR) for i in range(3))
    n = threads.load_ctx(b, ctx, 3)
    vo = VecOps(b, L)
    sc, zp = vo.splat(b.load(fptr(b, prm, 0, F32), typ=F32)), vo.splat(b.load(fptr(b, prm, 1, F32), typ=F32))
    v8 = ir.VectorType(I8, L)
    rint = threads.declare(mod, f"llvm.rint.v{L}f32", vo.vf, [vo.vf])
    mstore = threads.declare(mod, f"llvm.masked.store.v{L}i8.p0", VOID, [v8, PTR, I32, vo.vm])

    def body(i, mask):
        q = b.fdiv(vo.mload(fptr(b, x, i, F32), mask), sc)
        r = b.call(rint, [q])
        if nan_to_zero_point:
            r = b.select(b.fcmp_ordered("==", q, q), r, vo.zero)
        b.call(mstore, [vo.to_8bit(b.fadd(r, zp), signed), fptr(b, y, i, I8), ir.Constant(I32, 1), mask])
    _vectors_of_share(b, vo, n, tid, nth, body)
    b.ret_void()
    return wk


def pack_name(flip: bool) -> str:
    return f"irg_qpack_{int(flip)}"


def kernel(mod: ir.Module, kind: str, **kw) -> ir.Function:
    """The module's ``kind`` kernel (pack | unpack | add) for these options, emitted once."""
    key = f"irg_q{kind}_" + "_".join(f"{k}{int(v) if isinstance(v, bool) else v}" for k, v in sorted(kw.items()))
    try:
        return mod.get_global(key)
    except KeyError:
        pass
    if kind == "pack":
        return emit_pack(mod, key, kw["flip"])
    if kind == "unpack":
        ety = {1: I8, 4: I32}[kw["esize"]]
        return emit_unpack(mod, key, ety)
    if kind == "dql":
        return emit_dql(mod, key)
    if kind == "quant":
        return emit_quant(mod, key, kw["signed"])
    if kind == "maxpool":
        return emit_maxpool(mod, key, kw["signed"], kw["sw"])
    if kind == "add":
        return emit_add(mod, key, kw["a_signed"], kw["b_signed"], kw["y_signed"], kw["relu"])
    raise ValueError(kind)
