"""Direct fp32 2-D convolution vectorized over output channels (NCHW in, NCHW out).

The sibling kernel in conv_direct.py puts L consecutive outputs of a row in a vector, which
wastes lanes on short rows (14 of 16 at 14x14, 7 of 16 at 7x7) and on the padding columns it
computes and drops. Here a vector holds L output *channels* of one output position, as
onnxruntime's NCHWc kernels do, while input and output stay NCHW:

- the image is copied once into a zero-padded plane per channel (``emit_planes``, ~1 % of the
  work), so every tap reads memory without bounds checks, at any stride or dilation;
- register tile: R output rows x RW columns (positions) x NV vectors of L channels; per (input
  channel, tap) NV vector loads of weights packed at compile time as ``wpk[mb][c][kh][kw][NV*L]``,
  one scalar broadcast of the input per position, R*RW*NV FMAs. Positions sit at static offsets
  from the tile's corner, so the hot loop is loads and FMAs only;
- epilogue: ``+ bias`` (a vector of channels), then each L x L block of (positions x channels) is
  transposed in registers so a channel's positions are contiguous, ``+ R`` (residual, NCHW), the
  activation, and masked stores straight into the NCHW output, one per output row of the tile.

Threads: two regions of the pool per image, each in PARTS_PER_THREAD parts a thread claimed
dynamically: copy ranges of channels into the planes, then compute ranges of (channel block,
row tile) items.

ABI: ``void NAME(ptr x, ptr wpk, ptr bias, ptr R, ptr out, ptr ws, i64 nthreads, ptr dims)``
(conv_direct.py's plus ``dims``). The code is generated per *family* (register tile, kernel size,
strides, dilations, epilogue, whether M is a multiple of the channel block); sizes are read at run
time from ``dims``, the i64s of ``DirectConvOC.dims()``, so one function serves every layer of a
family (ResNet-18's 17 direct convs need 7; LLVM IR is slow to build and print in Python, ~0.1 s
a kernel). ``ws``: ``workspace_bytes(nthreads)`` bytes, any alignment.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import llvmlite.ir as ir
import numpy as np

from irgraph.errors import CompileError

from . import threads
from .conv_direct import (CompiledConv, ConvGeometry, emit_planes, fill_ctx, gather_pieces, pack_filters,
                          scatter_pieces)
from .gemm import Epilogue
from .native_kernel import NativeKernel, round_up_to
from .vector_ir import (F32, I64, PTR, VecOps, align_up, carried_loop, fptr, for_range, function, i64,
                        if_then, imin, keep_null)


@dataclass(frozen=True)
class OcTile:
    """R rows x RW columns of output positions x NV vectors of channels."""
    lanes: int = 16
    r: int = 1
    rw: int = 14
    nv: int = 2
    parallel_min_flops: int = 1 << 21

    def __post_init__(self):
        if self.lanes not in (4, 8, 16) or min(self.r, self.rw, self.nv) < 1:
            raise CompileError(f"bad direct conv tile {self}")

    @property
    def positions(self) -> int:
        return self.r * self.rw

    @property
    def oc(self) -> int:
        return self.nv * self.lanes


def tile_for(g: ConvGeometry, lanes: int = 16) -> OcTile:
    """The register tile for this conv: fewest computed-and-dropped outputs (row tails, channels
    past M), then a single output row, then the accumulator count nearest 14.

    Measured on ResNet-18's 3x3 layers (Zen 5, 1 thread): 1x14x1 at 56x56 ran at 230 GFLOP/s where
    1x28x1 (28 accumulators, spills) gave 198 and 1x12x2 203; at 7x7, 1x7x2 gave 197 where 2x7x1
    (two rows, 1/8 of them padding) gave 174 and 1x7x3 186."""
    max_acc, target = (28, 14) if lanes == 16 else (11, 8)    # 32 zmm / 16 ymm registers
    best = None
    for nv in (1, 2, 3, 4):
        if nv > 1 and (nv - 1) * lanes >= g.m:
            break
        for r in range(1, g.oh + 1):
            for rw in range(1, g.ow + 1):
                acc = r * rw * nv
                if acc > max_acc or (r > 1 and rw < g.ow):   # several rows only when whole
                    continue
                computed = (-(-g.ow // rw) * rw) * (-(-g.oh // r) * r) * (-(-g.m // (nv * lanes)) * nv * lanes)
                waste = computed / (g.ow * g.oh * g.m)
                score = (round(waste, 3), r > 1, abs(acc - target), -acc)
                if best is None or score < best[0]:
                    best = (score, OcTile(lanes=lanes, r=r, rw=rw, nv=nv))
    return best[1]


@dataclass(eq=False)
class DirectConvOC(NativeKernel):
    geom: ConvGeometry
    tile: OcTile = field(default_factory=OcTile)
    epilogue: Epilogue = field(default_factory=Epilogue)
    has_bias: bool = False
    has_residual: bool = False
    parallel: bool = True
    max_threads: int = 2           # threads the workspace has planes for (more are not used)
    name: str = "irg_convoc"

    # ---- sizes ------------------------------------------------------------------------------
    @property
    def mblocks(self) -> int:
        return -(-self.geom.m // self.tile.oc)

    @property
    def rtiles(self) -> int:
        return -(-self.geom.oh // self.tile.r)

    @property
    def ctiles(self) -> int:
        return -(-self.geom.ow // self.tile.rw)

    @property
    def hp(self) -> int:
        g = self.geom
        return (self.rtiles * self.tile.r - 1) * g.sh + (g.kh - 1) * g.dh + 1

    @property
    def wp(self) -> int:
        g = self.geom
        return (self.ctiles * self.tile.rw - 1) * g.sw + (g.kw - 1) * g.dw + 1

    def planes_floats(self) -> int:
        return round_up_to(self.geom.c * self.hp * self.wp, 16)

    def workspace_bytes(self, num_threads: int = 1) -> int:
        """Scratch: the padded planes (shared by the threads)."""
        return 4 * self.planes_floats() + 64

    def lane_use(self) -> float:
        g = self.geom
        return (g.oh * g.ow * g.m) / (self.rtiles * self.tile.r * self.ctiles * self.tile.rw
                                      * self.mblocks * self.tile.oc)

    def pack_weights(self, w: np.ndarray) -> np.ndarray:
        """(M, C, KH, KW) float32 -> ``wpk[mb][c][kh][kw][NV*L]``, zero-padded past M."""
        return pack_filters(self.geom, w, self.tile.oc)

    def dims(self) -> np.ndarray:
        """The sizes the generated code reads at run time (``DIMS`` order), as int64."""
        g = self.geom
        vals = dict(n=g.n, c=g.c, h=g.h, w=g.w, m=g.m, oh=g.oh, ow=g.ow, pt=g.pt, pl=g.pl, hp=self.hp,
                    wp=self.wp, rtiles=self.rtiles, ctiles=self.ctiles, mblocks=self.mblocks,
                    planes=self.planes_floats(), par=int(g.flops >= self.tile.parallel_min_flops))
        return np.array([vals[d] for d in DIMS], np.int64)

    @property
    def tag(self) -> str:
        """What the generated code depends on (the family): not the sizes."""
        g = self.geom
        return (f"convoc|k{g.kh}x{g.kw}s{g.sh}x{g.sw}d{g.dh}x{g.dw}|{self.tile}|{self.epilogue.tag}"
                f"|b{int(self.has_bias)}r{int(self.has_residual)}x{int(g.m % self.tile.oc == 0)}"
                f"|p{int(self.parallel)}t{self.max_threads}")

    def emit(self, mod: ir.Module) -> ir.Function:
        return _Emitter(mod, self).entry()

    def build(self, cache=True, target: tuple[str, str] | None = None) -> CompiledConv:
        """Compile (``NativeKernel.compile``: cached, or for another CPU) and wrap for numpy."""
        return CompiledConv(self, self.compile(cache, target))


# dims: the i64s ``DirectConvOC.dims()`` writes, read by the generated code
# (the first eight are emit_planes' dims, in its order)
DIMS = ("c", "h", "w", "pt", "pl", "hp", "wp", "planes", "n", "m", "oh", "ow", "rtiles", "ctiles",
        "mblocks", "par")
D = {name: i for i, name in enumerate(DIMS)}


class _Emitter:
    def __init__(self, mod: ir.Module, k: "DirectConvOC"):
        self.mod, self.k, self.g, self.t = mod, k, k.geom, k.tile
        self.L = self.t.lanes
        self.p = k.name

    @staticmethod
    def dim(b, dims, name):
        return b.load(fptr(b, dims, D[name], I64), typ=I64)

    def tile(self):
        """``void tile(ptr xs, ptr wpk, ptr bias, ptr R_img, ptr out_img, i64 mb, i64 th, i64 tw,
        ptr dims)``: one R x RW x (NV*L) block of outputs."""
        g, t, k, L = self.g, self.t, self.k, self.L
        R_, RW, NV = t.r, t.rw, t.nv
        T = g.kh * g.kw
        P = R_ * RW
        fn, b = function(self.mod, self.p + ".tile", [PTR, PTR, PTR, PTR, PTR, I64, I64, I64, PTR],
                          noinline=True)
        xs, wpk, bias, R, out, mb, th, tw, dims = fn.args
        for a in (xs, wpk, out):
            a.add_attribute("noalias")
        C, WP, HP, OH, OW, M = (self.dim(b, dims, n) for n in ("c", "wp", "hp", "oh", "ow", "m"))
        vo = VecOps(b, L)
        oh0 = b.mul(th, i64(R_))
        ow0 = b.mul(tw, i64(RW))
        base = fptr(b, xs, b.add(b.mul(b.mul(oh0, i64(g.sh)), WP), b.mul(ow0, i64(g.sw))))
        wb = fptr(b, wpk, b.mul(b.mul(mb, C), i64(T * t.oc)))
        plane = b.mul(HP, WP)
        pos = [(r, c) for r in range(R_) for c in range(RW)]
        # Each input value of the tile's window is broadcast once and used by every (position,
        # tap) pair that reads it: written tap by tap instead, LLVM merges the equal loads of
        # neighbouring taps and keeps the broadcasts alive across taps, and spills.
        rows: dict = {}
        for r in range(R_):
            for kh in range(g.kh):
                rows.setdefault(r * g.sh + kh * g.dh, []).append((r, kh))
        cols: dict = {}
        for cc in range(RW):
            for kw in range(g.kw):
                cols.setdefault(cc * g.sw + kw * g.dw, []).append((cc, kw))
        rowoff = {ir_: b.mul(WP, i64(ir_)) for ir_ in sorted(rows)}

        def step(c, accs):
            xc = fptr(b, base, b.mul(c, plane))
            wc = fptr(b, wb, b.mul(c, i64(T * t.oc)))
            accs = list(accs)
            wcache: dict = {}

            def weight(kh, kw, v):
                key = (kh, kw, v)
                if key not in wcache:
                    wcache[key] = vo.load(fptr(b, wc, ((kh * g.kw + kw) * NV + v) * L))
                return wcache[key]
            for ir_ in sorted(rows):
                xr = fptr(b, xc, rowoff[ir_])
                for u in sorted(cols):
                    a = vo.splat(b.load(fptr(b, xr, u), typ=F32, align=4))
                    for r, kh in rows[ir_]:
                        for cc, kw in cols[u]:
                            pi = r * RW + cc
                            for v in range(NV):
                                accs[pi * NV + v] = vo.fma(a, weight(kh, kw, v), accs[pi * NV + v])
            return accs
        accs = carried_loop(b, i64(0), C, 1, [vo.zero] * (P * NV), step, "c")

        # epilogue, per channel vector v and block of <= L positions
        ohw = b.mul(OH, OW)
        owv = vo.splat_i32(OW)
        exact = g.m % t.oc == 0       # no channel block runs past M: no per-channel guard
        for v in range(NV):
            oc0 = b.add(b.mul(mb, i64(t.oc)), i64(v * L))
            col = [accs[pi * NV + v] for pi in range(P)]
            if k.has_bias:
                bv = vo.load(fptr(b, bias, oc0)) if exact else vo.mload(fptr(b, bias, oc0), vo.mask(b.sub(M, oc0)))
                col = [b.fadd(x, bv) for x in col]
            for p0 in range(0, P, L):
                blk = col[p0:p0 + L]
                rows_t = vo.transpose(blk + [vo.zero] * (L - len(blk)))   # rows_t[i]: channel oc0+i
                # output rows touched by positions p0 .. p0+len(blk)-1 of this tile
                pieces = []
                for r in sorted({pos[q][0] for q in range(p0, p0 + len(blk))}):
                    lanes = [q - p0 for q in range(p0, p0 + len(blk)) if pos[q][0] == r]
                    first = lanes[0]
                    c_first = pos[p0 + first][1]
                    oh = b.add(oh0, i64(r))
                    # lane j of this piece: column ow0 + c_first + (j - first)
                    colstart = b.add(ow0, i64(c_first - first))
                    ok_row = b.icmp_signed("<", oh, OH)
                    lane_cols = b.add(vo.iota, vo.splat_i32(colstart))
                    inrow = b.and_(b.icmp_signed(">=", vo.iota, ir.Constant(vo.vi, [first] * L)),
                                   b.icmp_signed("<=", vo.iota, ir.Constant(vo.vi, [lanes[-1]] * L)))
                    m = b.and_(inrow, b.icmp_signed("<", lane_cols, owv))
                    m = b.select(ok_row, m, vo.none)
                    pieces.append((m, b.add(b.mul(oh, OW), colstart)))
                for i in range(L):
                    oc = b.add(oc0, i64(i))
                    live = None if exact else b.icmp_signed("<", oc, M)
                    mine = [(m if live is None else b.select(live, m, vo.none), off) for m, off in pieces]
                    val = rows_t[i]
                    if k.has_residual:
                        val = b.fadd(val, gather_pieces(vo, fptr(b, R, b.mul(oc, ohw)), mine))
                    val = vo.activation(k.epilogue, val)
                    scatter_pieces(vo, val, fptr(b, out, b.mul(oc, ohw)), mine)
        b.ret_void()
        return fn

    def workers(self, pad, tile):
        """Two parallel regions per image: ``pad`` parts copy ranges of channels into the shared
        planes, then ``tiles`` parts compute ranges of (channel block, row tile) items, channel
        block outermost so a part reuses one block of weights. ctx: (x_img, wpk, bias, R_img,
        out_img, ws, dims)."""
        fp, b = function(self.mod, self.p + ".padpart", [I64, I64, PTR])
        part, nparts, ctx = fp.args
        x, ws, dims = (threads.load_ctx(b, ctx, i, PTR) for i in (0, 5, 6))
        c_, hp_ = self.dim(b, dims, "c"), self.dim(b, dims, "hp")
        c0, c1 = threads.split_range(b, c_, part, nparts)
        with if_then(b, b.icmp_signed("<", c0, c1), "some"):
            b.call(pad, [x, align_up(b, ws), c0, c1, i64(0), hp_, dims])
        b.ret_void()

        ft, b = function(self.mod, self.p + ".tilepart", [I64, I64, PTR])
        part, nparts, ctx = ft.args
        x, wpk, bias, R, out, ws, dims = (threads.load_ctx(b, ctx, i, PTR) for i in range(7))
        nr, nc, nmb = (self.dim(b, dims, k) for k in ("rtiles", "ctiles", "mblocks"))
        i0, i1 = threads.split_range(b, b.mul(nr, nmb), part, nparts)
        xs = align_up(b, ws)
        with for_range(b, i0, i1, 1, "it") as it:
            mb, th = b.sdiv(it, nr), b.srem(it, nr)
            with for_range(b, 0, nc, 1, "tw") as tw:
                b.call(tile, [xs, wpk, bias, R, out, mb, th, tw, dims])
        b.ret_void()
        return fp, ft

    def entry(self):
        k = self.k
        fn, b = function(self.mod, self.p, [PTR] * 6 + [I64, PTR], internal=False)
        for a, nm in zip(fn.args, ("x", "wpk", "bias", "R", "out", "ws", "nthreads", "dims")):
            a.name = nm
        x, wpk, bias, R, out, ws, nthreads, dims = fn.args
        pad = emit_planes(self.mod, self.p + ".pad", 1, 1, self.L)
        padpart, tilepart = self.workers(pad, self.tile())
        n_, c_, h_, w_, m_, oh_, ow_, nr, nmb = (self.dim(b, dims, d) for d in (
            "n", "c", "h", "w", "m", "oh", "ow", "rtiles", "mblocks"))
        nth = i64(1)
        if k.parallel and k.max_threads > 1:
            nth = b.select(b.icmp_signed("!=", self.dim(b, dims, "par"), i64(0)),
                           imin(b, nthreads, i64(k.max_threads)), i64(1))
        per = b.mul(nth, i64(threads.PARTS_PER_THREAD))
        ctx = b.alloca(I64, size=I64(7), name="ctx")
        ximg, oimg = b.mul(c_, b.mul(h_, w_)), b.mul(m_, b.mul(oh_, ow_))
        with for_range(b, 0, n_, 1, "n") as n:
            vals = [fptr(b, x, b.mul(n, ximg)), wpk, bias, keep_null(b, R, b.mul(n, oimg)),
                    fptr(b, out, b.mul(n, oimg)), ws, dims]
            fill_ctx(b, ctx, vals)
            threads.launch(b, None, padpart, ctx, nth, parts=imin(b, c_, per))
            threads.launch(b, None, tilepart, ctx, nth, parts=imin(b, b.mul(nr, nmb), per))
        b.ret_void()
        return fn
