"""Direct fp32 2-D convolution (NCHW in, NCHW out) as LLVM IR with explicit vector types.

The GEMM formulation (im2col, then the packed GEMM) copies the input KH*KW times and, with the
weights as the packed operand, transposes the result; on ResNet-18's 56x56 and 112x112 layers
that cost 30-160 % over onnxruntime. This kernel reads the input in place of an im2col:

1. **Phase planes.** Per call, the input image is copied once (vector moves, ~1 % of the work)
   into zero-padded planes ``xs[c][ph][pw][Hq][Wq]``: padded row ``r`` / column ``s`` lands in
   plane ``(r % sh, s % sw)`` at ``(r // sh, s // sw)``. With stride 1 there is one plane per
   channel (the padded image); with stride 2 the even and odd rows/columns are split, so every
   tap of a strided conv reads *contiguous* memory too.
2. **Flattened rows.** Output ``(oh, ow)`` is computed at ``q = oh*Wq + ow`` over a plane's row
   pitch, so tap ``(kh, kw)`` of output ``q`` reads ``xs[c][plane(kh, kw)][q + off(kh, kw)]``: one
   unaligned vector load serves L consecutive outputs across row ends. Outputs with ``ow >= OW``
   (``Wq - OW`` columns a row, 2 of 58 for a 3x3 conv at 56x56) are computed and dropped.
3. **Register tile.** MR output channels x NV vectors of L outputs: per (channel, tap) NV vector
   loads, MR scalar broadcasts of packed weights ``wpk[mb][c][kh][kw][MR]`` (packed at compile
   time), MR*NV FMAs into accumulators held in registers for the whole reduction.
4. **Epilogue in registers.** ``+ bias[m]``, ``+ R`` (residual, same layout as the output),
   activation; each vector is stored with masked stores, one per output row it touches, straight
   into the NCHW output (no transpose, no second pass).

Threads: two regions of the pool (threads.py) per image, each in PARTS_PER_THREAD parts per
thread claimed dynamically: copy ranges of channels into the planes, then compute ranges of q
tiles.

ABI (everything about shapes is fixed when the kernel is generated)::

    void NAME(ptr x, ptr wpk, ptr bias, ptr R, ptr out, ptr ws, i64 nthreads, ptr unused)

``x``: (N, C, H, W) floats; ``wpk``: ``pack_weights(w)``; ``bias``: M floats or NULL when the
kernel was built without one (likewise ``R``: (N, M, OH, OW)); ``out``: (N, M, OH, OW); ``ws``:
``workspace_bytes(nthreads)`` scratch bytes, any alignment. Pointers need only 4-byte alignment.
The last argument is conv_direct_oc.py's ``dims`` (the two kernels share one call).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import llvmlite.ir as ir
import numpy as np

from irgraph.errors import CompileError, InputError

from . import llvm_target, threads
from .gemm import Epilogue
from .native_kernel import NativeKernel, round_up_to
from .vector_ir import (ACTIVATIONS, F32, I64, PTR, VecOps, align_up, carried_loop, fptr, for_range,
                        function, i64, if_then, imin)


@dataclass(frozen=True)
class ConvGeometry:
    """One image's convolution: input (C, H, W), M filters of (C, KH, KW), strides, dilations,
    leading pads and the output size (trailing pads are implied by it)."""
    c: int
    h: int
    w: int
    m: int
    kh: int
    kw: int
    oh: int
    ow: int
    sh: int = 1
    sw: int = 1
    dh: int = 1
    dw: int = 1
    pt: int = 0
    pl: int = 0
    n: int = 1

    def __post_init__(self):
        if min(self.c, self.h, self.w, self.m, self.kh, self.kw, self.oh, self.ow, self.n) < 1:
            raise CompileError(f"direct conv needs positive sizes, got {self}")
        if self.sw not in (1, 2) or self.sh < 1 or min(self.dh, self.dw) < 1 or min(self.pt, self.pl) < 0:
            raise CompileError(f"direct conv supports column strides 1 and 2, got {self}")

    @property
    def hq(self) -> int:
        """Rows of a phase plane: enough for the last output row's last tap."""
        return ((self.oh - 1) * self.sh + (self.kh - 1) * self.dh) // self.sh + 1

    @property
    def wq(self) -> int:
        return ((self.ow - 1) * self.sw + (self.kw - 1) * self.dw) // self.sw + 1

    @property
    def plane(self) -> int:
        return self.hq * self.wq

    @property
    def phases(self) -> int:
        return self.sh * self.sw

    @property
    def q(self) -> int:
        """Flattened outputs computed per channel (the last row stops at OW)."""
        return (self.oh - 1) * self.wq + self.ow

    def tap_offset(self, kh: int, kw: int) -> int:
        """Floats from the start of a channel's planes to tap (kh, kw) of output q = 0."""
        rh, rw = kh * self.dh, kw * self.dw
        ph = (rh % self.sh) * self.sw + rw % self.sw
        return ph * self.plane + (rh // self.sh) * self.wq + rw // self.sw

    @property
    def flops(self) -> int:
        return 2 * self.n * self.m * self.c * self.kh * self.kw * self.oh * self.ow


@dataclass(frozen=True)
class DirectConvConfig:
    """Register tile (MR channels x NV vectors of ``lanes``) and the work order."""
    lanes: int = 16
    mr: int = 4
    nv: int = 6
    mb_inner: bool = True      # q tile outer, channel blocks inner (the input tile stays in L1)
    parallel_min_flops: int = 1 << 21

    def __post_init__(self):
        if self.lanes not in (4, 8, 16) or self.mr < 1 or self.nv < 1:
            raise CompileError(f"bad direct conv tile {self}")

    @classmethod
    def for_host(cls, **kw) -> "DirectConvConfig":
        lanes = llvm_target.host_cpu().f32_lanes
        if lanes == 16:
            return cls(lanes=16, **kw)
        return cls(**{"lanes": lanes, "mr": 4, "nv": 2, **kw})   # 16 registers: 8 acc + 2 + 1

    @property
    def tq(self) -> int:
        return self.lanes * self.nv


def pack_filters(g: ConvGeometry, w: np.ndarray, block: int) -> np.ndarray:
    """(M, C, KH, KW) float32 -> ``wpk[mb][c][kh][kw][block]``: blocks of ``block`` output channels
    (zero-padded past M), each tap's channels contiguous (one vector load or ``block`` broadcasts)."""
    w = np.asarray(w, np.float32)
    if w.shape != (g.m, g.c, g.kh, g.kw):
        raise InputError("conv weights have the wrong shape", input="W",
                         expected=(g.m, g.c, g.kh, g.kw), actual=w.shape)
    mblocks = -(-g.m // block)
    wp = np.zeros((mblocks * block, g.c, g.kh, g.kw), np.float32)
    wp[:g.m] = w
    return np.ascontiguousarray(wp.reshape(mblocks, block, g.c, g.kh, g.kw).transpose(0, 2, 3, 4, 1)).ravel()


@dataclass(eq=False)
class DirectConv(NativeKernel):
    """One direct convolution kernel (shapes, tile, epilogue, threading fixed at generation)."""
    geom: ConvGeometry
    config: DirectConvConfig = field(default_factory=DirectConvConfig.for_host)
    epilogue: Epilogue = field(default_factory=Epilogue)
    has_bias: bool = False
    has_residual: bool = False
    parallel: bool = True
    max_threads: int = 2           # parts the workspace has planes for (more are not used)
    name: str = "irg_conv"

    def __post_init__(self):
        if self.epilogue.activation not in ACTIVATIONS or self.epilogue.residual_after_activation:
            raise CompileError("direct conv: residual is added before the activation")

    # ---- sizes ------------------------------------------------------------------------------
    @property
    def mblocks(self) -> int:
        return -(-self.geom.m // self.config.mr)

    @property
    def qtiles(self) -> int:
        return -(-self.geom.q // self.config.tq)

    def planes_floats(self) -> int:
        """Floats of the phase planes, with slack for the last tile's reads past the last plane."""
        g, cfg = self.geom, self.config
        per_c = g.phases * g.plane
        last = (g.c - 1) * per_c + max(g.tap_offset(a, b) for a in range(g.kh) for b in range(g.kw))
        return round_up_to(max(g.c * per_c, last + self.qtiles * cfg.tq), 16)

    def workspace_bytes(self, num_threads: int = 1) -> int:
        """Scratch: the phase planes (shared by the threads)."""
        return 4 * self.planes_floats() + 64

    def packed_weights_floats(self) -> int:
        g = self.geom
        return self.mblocks * g.c * g.kh * g.kw * self.config.mr

    def pack_weights(self, w: np.ndarray) -> np.ndarray:
        """(M, C, KH, KW) float32 -> ``wpk[mb][c][kh][kw][MR]``, zero-padded past M."""
        return pack_filters(self.geom, w, self.config.mr)

    @property
    def tag(self) -> str:
        g, c = self.geom, self.config
        return (f"conv|{g}|{c}|{self.epilogue.tag}|b{int(self.has_bias)}r{int(self.has_residual)}"
                f"p{int(self.parallel)}t{self.max_threads}")

    # ---- IR ---------------------------------------------------------------------------------
    def emit(self, mod: ir.Module) -> ir.Function:
        return _ConvEmitter(mod, self).entry()

    def build(self, cache=True, target: tuple[str, str] | None = None) -> "CompiledConv":
        """Compile (``NativeKernel.compile``: cached, or for another CPU) and wrap for numpy."""
        return CompiledConv(self, self.compile(cache, target))


class _ConvEmitter:
    def __init__(self, mod: ir.Module, k: DirectConv):
        self.mod, self.k, self.g, self.cfg = mod, k, k.geom, k.config
        self.L = self.cfg.lanes
        self.p = k.name

    # -- phase planes -----------------------------------------------------------------------
    def pad(self):
        g = self.g
        return emit_planes(self.mod, self.p + ".pad", g.sh, g.sw, self.L,
                           (g.c, g.h, g.w, g.pt, g.pl, g.hq, g.wq, self.k.planes_floats()))

    # -- register tile --------------------------------------------------------------------------
    def tile(self):
        """``void tile(ptr xs, ptr wpk, ptr bias, ptr R_img, ptr out_img, i64 mb, i64 qt)``."""
        g, cfg, L, k = self.g, self.cfg, self.L, self.k
        MR, NV = cfg.mr, cfg.nv
        T = g.kh * g.kw
        fn, b = function(self.mod, self.p + ".tile", [PTR, PTR, PTR, PTR, PTR, I64, I64], noinline=True)
        xs, wpk, bias, R, out, mb, qt = fn.args
        for a in (xs, wpk, out):
            a.add_attribute("noalias")
        vo = VecOps(b, L)
        q0 = b.mul(qt, i64(cfg.tq))
        xq = fptr(b, xs, q0)
        wb = fptr(b, wpk, b.mul(mb, i64(g.c * T * MR)))
        offs = [g.tap_offset(a, c) for a in range(g.kh) for c in range(g.kw)]
        per_c = g.phases * g.plane

        def step(c, accs):
            xc = fptr(b, xq, b.mul(c, i64(per_c)))
            wc = fptr(b, wb, b.mul(c, i64(T * MR)))
            accs = list(accs)
            for t, off in enumerate(offs):
                xv = [vo.load(fptr(b, xc, off + v * L)) for v in range(NV)]
                for i in range(MR):
                    w = vo.splat(b.load(fptr(b, wc, t * MR + i), typ=F32, align=4))
                    for v in range(NV):
                        accs[i * NV + v] = vo.fma(w, xv[v], accs[i * NV + v])
            return accs
        accs = carried_loop(b, 0, i64(g.c), 1, [vo.zero] * (MR * NV), step, "c")

        # epilogue: per vector, the masks and output offsets of each output row it touches
        P = 1 + -(-(L - 1) // g.wq)          # rows one vector of L flattened outputs can touch
        vi = vo.vi
        pieces = []
        for v in range(NV):
            q = b.add(q0, i64(v * L))
            r = b.sdiv(q, i64(g.wq))
            col = b.sub(q, b.mul(r, i64(g.wq)))
            colv = b.add(vo.iota, vo.splat_i32(col))
            inq = b.icmp_signed("<", vo.iota, vo.splat_i32(b.sub(i64(g.q), q)))
            base = b.add(b.mul(r, i64(g.ow)), col)
            for p in range(P):
                lo = ir.Constant(vi, [p * g.wq] * L)
                hi = ir.Constant(vi, [p * g.wq + g.ow] * L)
                m = b.and_(inq, b.and_(b.icmp_signed(">=", colv, lo), b.icmp_signed("<", colv, hi)))
                pieces.append((v, m, b.sub(base, i64(p * (g.wq - g.ow)))))
        ochw = g.oh * g.ow
        for i in range(MR):
            oc = b.add(b.mul(mb, i64(MR)), i64(i))
            body = None
            if g.m % MR:
                body = if_then(b, b.icmp_signed("<", oc, i64(g.m)), f"row{i}")
                body.__enter__()
            oplane = fptr(b, out, b.mul(oc, i64(ochw)))
            rplane = fptr(b, R, b.mul(oc, i64(ochw))) if k.has_residual else None
            bv = vo.splat(b.load(fptr(b, bias, oc), typ=F32)) if k.has_bias else None
            for v in range(NV):
                acc = accs[i * NV + v]
                if bv is not None:
                    acc = b.fadd(acc, bv)
                mine = [(m, off) for vv, m, off in pieces if vv == v]
                if rplane is not None:
                    acc = b.fadd(acc, gather_pieces(vo, rplane, mine))
                acc = vo.activation(k.epilogue, acc)
                scatter_pieces(vo, acc, oplane, mine)
            if body is not None:
                body.__exit__(None, None, None)
        b.ret_void()
        return fn

    # -- driver ---------------------------------------------------------------------------------
    def entry(self):
        """Two parallel regions per image: parts copy ranges of channels into the shared planes,
        then parts compute ranges of q tiles for every channel block."""
        g, k, cfg = self.g, self.k, self.cfg
        fn, b = function(self.mod, self.p, [PTR] * 6 + [I64, PTR], internal=False)
        for a, nm in zip(fn.args, ("x", "wpk", "bias", "R", "out", "ws", "nthreads", "unused")):
            a.name = nm
        x, wpk, bias, R, out, ws, nthreads, _ = fn.args
        pad, tile = self.pad(), self.tile()
        nmb, ntq = k.mblocks, k.qtiles

        fp, pb = function(self.mod, self.p + ".padpart", [I64, I64, PTR])
        part, nparts, ctx = fp.args
        c0, c1 = threads.split_range(pb, i64(g.c), part, nparts)
        with if_then(pb, pb.icmp_signed("<", c0, c1), "some"):
            pb.call(pad, [threads.load_ctx(pb, ctx, 0, PTR), align_up(pb, threads.load_ctx(pb, ctx, 5, PTR)),
                          c0, c1, i64(0), i64(g.hq), ir.Constant(PTR, None)])
        pb.ret_void()
        ft, tb = function(self.mod, self.p + ".tilepart", [I64, I64, PTR])
        part, nparts, ctx = ft.args
        xv, wv, bv, rv, ov, wsv = (threads.load_ctx(tb, ctx, i, PTR) for i in range(6))
        t0, t1 = threads.split_range(tb, i64(ntq), part, nparts)
        xs = align_up(tb, wsv)
        if cfg.mb_inner:
            with for_range(tb, t0, t1, 1, "qt") as qt:
                with for_range(tb, 0, nmb, 1, "mb") as mb:
                    tb.call(tile, [xs, wv, bv, rv, ov, mb, qt])
        else:
            with for_range(tb, 0, nmb, 1, "mb") as mb:
                with for_range(tb, t0, t1, 1, "qt") as qt:
                    tb.call(tile, [xs, wv, bv, rv, ov, mb, qt])
        tb.ret_void()

        nth = i64(1)
        if k.parallel and k.max_threads > 1 and g.flops >= cfg.parallel_min_flops:
            nth = imin(b, nthreads, i64(k.max_threads))
        per = b.mul(nth, i64(threads.PARTS_PER_THREAD))
        ctx = b.alloca(I64, size=I64(6), name="ctx")
        with for_range(b, 0, g.n, 1, "n") as n:
            vals = [fptr(b, x, b.mul(n, i64(g.c * g.h * g.w))), wpk, bias,
                    fptr(b, R, b.mul(n, i64(g.m * g.oh * g.ow))) if k.has_residual else R,
                    fptr(b, out, b.mul(n, i64(g.m * g.oh * g.ow))), ws]
            fill_ctx(b, ctx, vals)
            threads.launch(b, None, fp, ctx, nth, parts=imin(b, i64(g.c), per))
            threads.launch(b, None, ft, ctx, nth, parts=imin(b, i64(ntq), per))
        b.ret_void()
        return fn


def emit_planes(mod: ir.Module, name: str, sh: int, sw: int, L: int, dims=None) -> ir.Function:
    """``void name(ptr x_img, ptr xs, i64 c0, i64 c1, i64 r0, i64 r1, ptr dims)``: rows [r0, r1)
    of the planes of channels [c0, c1) of one (C, H, W) image, zero-padded:
    ``xs[c][ph][pw][hq][wq]`` (sh x sw phases: padded row r, column s go to plane (r % sh, s % sw)
    at (r // sh, s // sw); sh = sw = 1 is the plain padded image). ``dims`` points at the i64s
    (C, H, W, pt, pl, hq, wq, total); the caller that gets c1 == C also zeroes
    ``xs[C*planes : total]``. Passing ``dims`` (a tuple of those ints) here instead bakes them
    in and the pointer is ignored. Column phases: 1 or 2."""
    fn, b = function(mod, name, [PTR, PTR, I64, I64, I64, I64, PTR], noinline=True)
    x, xs, c0, c1, r0, r1, dp = fn.args
    if dims is None:
        C, H, W, pt, pl, hq, wq, total = (b.load(fptr(b, dp, k, I64), typ=I64) for k in range(8))
    else:
        C, H, W, pt, pl, hq, wq, total = (i64(v) for v in dims)
    vo = VecOps(b, L)
    vi = vo.vi
    iota = vo.iota
    plane = b.mul(hq, wq)
    wv = vo.splat_i32(W)

    def in_cols(base, shift):
        """Lanes j with 0 <= base + j + shift < W."""
        t = b.add(iota, vo.splat_i32(b.add(base, i64(shift))))
        return b.and_(b.icmp_signed(">=", t, ir.Constant(vi, [0] * L)), b.icmp_signed("<", t, wv))
    even = ir.Constant(vi, [2 * j for j in range(L)])
    with for_range(b, c0, c1, 1, "c") as c:
        xc = fptr(b, x, b.mul(c, b.mul(H, W)))
        for ph in range(sh):
            for pw in range(sw):
                pl_ = fptr(b, xs, b.mul(b.add(b.mul(c, i64(sh * sw)), i64(ph * sw + pw)), plane))
                with for_range(b, r0, r1, 1, "hq") as r_:
                    r = b.sub(b.add(b.mul(r_, i64(sh)), i64(ph)), pt)
                    dst = fptr(b, pl_, b.mul(r_, wq))
                    ok = b.and_(b.icmp_signed(">=", r, i64(0)), b.icmp_signed("<", r, H))
                    src = fptr(b, xc, b.mul(r, W))
                    with for_range(b, 0, wq, L, "wq") as q:
                        smask = vo.mask(b.sub(wq, q))
                        base = b.sub(b.add(b.mul(q, i64(sw)), i64(pw)), pl)
                        if sw == 1:
                            v = vo.mload(fptr(b, src, base), b.and_(in_cols(base, 0), b.select(ok, smask, vo.none)))
                        else:
                            lo = vo.mload(fptr(b, src, base), b.select(ok, in_cols(base, 0), vo.none))
                            hi = vo.mload(fptr(b, src, b.add(base, i64(L))), b.select(ok, in_cols(base, L), vo.none))
                            v = b.shuffle_vector(lo, hi, even)
                        vo.mstore(v, fptr(b, dst, q), smask)
    used = b.mul(b.mul(C, i64(sh * sw)), plane)
    # the slack past the last plane (read only by dropped outputs): zeros, not stale data
    with if_then(b, b.icmp_signed("==", c1, C), "slack"):
        with for_range(b, used, total, L, "z") as z:
            vo.mstore(vo.zero, fptr(b, xs, z), vo.mask(b.sub(total, z)))
    b.ret_void()
    return fn


def gather_pieces(vo: VecOps, plane, pieces):
    """One vector of ``plane``'s values at ``pieces``, (lane mask, element offset) pairs that cover
    disjoint lanes (the output rows a vector of outputs touches); lanes none covers are 0."""
    v = vo.zero
    for m, off in pieces:
        v = vo.mload(fptr(vo.b, plane, off), m, v)
    return v


def scatter_pieces(vo: VecOps, v, plane, pieces) -> None:
    """Store the lanes of ``v`` to ``plane`` at ``pieces`` (as in ``gather_pieces``)."""
    for m, off in pieces:
        vo.mstore(v, fptr(vo.b, plane, off), m)


def fill_ctx(b, ctx, pointers) -> None:
    """Store ``pointers`` as the i64 fields of the context ``ctx`` (allocated once, out of the
    per-image loop; ``threads.store_ctx`` allocates its own)."""
    for i, v in enumerate(pointers):
        b.store(b.ptrtoint(v, I64), b.gep(ctx, [I64(i)], inbounds=True, source_etype=I64))


class CompiledConv:
    """``out = act(conv(x, w) [+ bias] [+ residual])`` on float32 numpy arrays (for tests and
    benchmarks; models call the kernel from generated code)."""

    def __init__(self, kernel: DirectConv, lib):
        import ctypes
        self.kernel, self.lib = kernel, lib
        vp = ctypes.c_void_p
        self._fn = lib.cfunc(kernel.name, None, vp, vp, vp, vp, vp, vp, ctypes.c_int64, vp)
        self._dims = kernel.dims() if hasattr(kernel, "dims") else None
        self._ws = np.empty(kernel.workspace_bytes(getattr(kernel, "max_threads", 1)), np.uint8)
        self._packed: tuple = (None, None)

    def __call__(self, x, w, bias=None, residual=None, num_threads: int | None = None):
        k, g = self.kernel, self.kernel.geom
        x = np.ascontiguousarray(x, np.float32)
        if x.shape != (g.n, g.c, g.h, g.w):
            raise InputError("conv input has the wrong shape", input="x", expected=(g.n, g.c, g.h, g.w),
                             actual=x.shape)
        if self._packed[0] is not w:
            self._packed = (w, k.pack_weights(w))
        wpk = self._packed[1]
        oshape = (g.n, g.m, g.oh, g.ow)
        if k.has_bias != (bias is not None) or k.has_residual != (residual is not None):
            raise InputError("bias / residual do not match how the kernel was built", input="bias")
        bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
        res = None if residual is None else np.ascontiguousarray(residual, np.float32)
        if res is not None and res.shape != oshape:
            raise InputError("residual must have the output's shape", input="residual", expected=oshape,
                             actual=res.shape)
        out = np.empty(oshape, np.float32)
        nth = threads.default_num_threads() if num_threads is None else max(1, int(num_threads))
        nth = min(nth, getattr(k, "max_threads", nth))
        self._fn(x.ctypes.data, wpk.ctypes.data, 0 if bias is None else bias.ctypes.data,
                 0 if res is None else res.ctypes.data, out.ctypes.data, self._ws.ctypes.data, nth,
                 0 if self._dims is None else self._dims.ctypes.data)
        return out
