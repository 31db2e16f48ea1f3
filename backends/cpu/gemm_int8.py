"""int8 GEMM generator: ``C = epilogue(A_u8 @ B_s8)`` with exact int32 accumulation, as LLVM IR.

A (activations, uint8, or int8 read with its sign bit flipped) is the broadcast operand and is
never packed: its rows are addressed through an optional table of row offsets and a table of
tap offsets, so the same kernel runs a matmul (row i at ``A + i*lda``, one tap) and a
convolution over a padded NHWC image (row = output pixel, one tap per kernel position: an
implicit GEMM without im2col). B (weights, int8) is packed once at compile time.

Two instruction sets, both exact:

- ``vnni``: ``vpdpbusd`` (AVX-512 VNNI, ``llvm.x86.avx512.vpdpbusd.512``): each i32 lane adds
  four u8 x s8 products with no saturation. B is packed ``[panel][group][NR][4]`` (group = 4
  consecutive k), A's 4 bytes of a group are one broadcast i32.
- ``madd``: ``pmaddwd`` over bytes widened to 16 bits (AVX-512BW / AVX2 / SSE2): each i32 lane
  adds two 16-bit products, exact as well (``pmaddubsw`` would be twice as fast but saturates
  at 2 x 255 x 127 > 32767). B is packed as int16 ``[panel][group][half][NR][2]``.

The epilogue runs on the accumulators while they are in registers, per column j (an output
channel), in this order::

    acc -= xzp * colsum[j]                 # activation zero point: colsum = sum_k B[k, j]
    acc += ibias[j]                        # int32 bias (QLinearConv's)
    f = float(acc) * (xscale * mult[j])    # mult: weight scale (/ output scale)
    f += fbias[j]                          # float bias
    f = activation(f)                      # relu, clip(alpha, beta), leaky_relu(alpha), ...
    out = f                                # float32 output, or quantized:
    q = clamp(rint(f * post) + yzp, lo, hi)   # uint8 / int8 output (round half to even)

The i32 output stores ``acc`` after the bias (tests compare it bit for bit with numpy).

Generated-code ABI (``QGemmKernel.emit`` adds one external function ``kernel.name``)::

    void NAME(ptr A, i64 lda, ptr rowoff, ptr tapoff, i64 T, i64 KG,
              ptr Bp, ptr C, i64 ldc, i64 M, i64 N,
              ptr colsum, ptr xzp, ptr xscale, ptr mult, ptr ibias, ptr fbias, ptr params,
              i64 nthreads)

- A row i starts at byte ``rowoff[i]`` of A (``rowoff`` NULL: ``i*lda``); tap t adds
  ``tapoff[t]`` bytes (NULL: T must be 1); group g of a tap reads 4 bytes at ``+ 4*g``.
  K = T*KG*4 (zero-padded in B where the real K is shorter). Every byte read must exist.
- C element (i, j) at element ``i*ldc + j`` (int32, float32, uint8 or int8 by ``out``).
- colsum: int32[N] or NULL; xzp: int32 scalar or NULL (0); xscale: float32 scalar or NULL
  (1.0); mult: float32[N] (unused for int32 output); ibias int32[N] / fbias float32[N] or
  NULL; params: float32[4] = post, alpha, beta, yzp (NULL for int32/float32 outputs without
  activation parameters).
- Threads (the pool of threads.py) split M in MR-row tiles, or N in NR panels when M is short.
"""
from __future__ import annotations

import ctypes
import math
import threading
from dataclasses import dataclass, field, replace

import llvmlite.ir as ir
import numpy as np

from irgraph.errors import CompileError, InputError

from . import llvm_target, threads
from .native_kernel import NativeKernel, aligned_zeros, round_up_to
from .vector_ir import (ACTIVATIONS, F32, I8, I16, I32, I64, PTR, VecOps, carried_loop, fptr, for_range,
                        function, i64, if_then, imin, is_null, keep_null, split_rows_or_columns)

ISAS = ("vnni", "madd")
OUTS = ("i32", "f32", "u8", "s8")
OUT_NP = {"i32": np.int32, "f32": np.float32, "u8": np.uint8, "s8": np.int8}


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class QGemmConfig:
    """Instruction set, vector width and register tile (MR rows x NR columns)."""
    isa: str = "vnni"
    lanes: int = 16
    mr: int = 6
    nr: int = 64
    nc: int = 512               # columns of B per block: the block (K x nc bytes) stays in L2
    parallel_min_ops: int = 1 << 21

    def __post_init__(self):
        if self.isa not in ISAS:
            raise CompileError(f"unknown int8 GEMM instruction set {self.isa!r}", expected=ISAS)
        if self.lanes not in (4, 8, 16) or (self.isa == "vnni" and self.lanes != 16):
            raise CompileError(f"int8 GEMM: {self.lanes} lanes do not suit isa {self.isa}")
        if self.nr % self.lanes or self.nc % self.nr or self.mr < 1:
            raise CompileError(f"int8 GEMM tile {self.mr}x{self.nr} (nc {self.nc}) does not fit "
                               f"{self.lanes} lanes")

    @classmethod
    def for_host(cls, **overrides) -> "QGemmConfig":
        """VNNI 6x64 on AVX-512 VNNI hosts (24 accumulators: 6 row pointers leave general
        registers free); else the exact pmaddwd path at the host's width."""
        host = llvm_target.host_cpu()
        if host.has_vnni and host.vector_bits == 512:
            base = cls("vnni", 16, 6, 64)
        elif host.vector_bits == 512 and "+avx512bw" in host.features:
            base = cls("madd", 16, 6, 32)
        elif host.vector_bits >= 256 and "+avx2" in host.features:
            base = cls("madd", 8, 4, 16)
        else:
            base = cls("madd", 4, 4, 8)
        return replace(base, **overrides)

    @classmethod
    def avx2(cls) -> "QGemmConfig":
        """The AVX2 configuration (to check that path on an AVX-512 host)."""
        return cls("madd", 8, 4, 16)

    @property
    def group_bytes(self) -> int:
        """Bytes of packed B per group of 4 k in one panel."""
        return self.nr * (4 if self.isa == "vnni" else 8)

    @property
    def tag(self) -> str:
        return f"{self.isa}{self.lanes}_{self.mr}x{self.nr}_nc{self.nc}"


# ----------------------------------------------------------------------------- packing
def pack_b(w: np.ndarray, cfg: QGemmConfig) -> np.ndarray:
    """Pack an int8 (K, N) matrix, K a multiple of 4 (already in the kernel's k order), into
    zero-padded NR-column panels for ``cfg``'s instruction set; 64-byte aligned."""
    w = np.asarray(w)
    if w.dtype != np.int8 or w.ndim != 2 or w.shape[0] % 4:
        raise InputError("pack_b needs an int8 (K, N) array with K a multiple of 4", input="B",
                         actual=f"{w.dtype} {w.shape}")
    K, N = w.shape
    nr = cfg.nr
    Np = round_up_to(N, nr)
    z = np.zeros((K, Np), np.int8)
    z[:, :N] = w
    G, Q = K // 4, Np // nr
    if cfg.isa == "vnni":
        p = z.reshape(G, 4, Q, nr).transpose(2, 0, 3, 1)           # (q, g, j, 4)
        out = aligned_zeros(p.size, np.int8)
    else:
        p = z.astype(np.int16).reshape(G, 2, 2, Q, nr).transpose(3, 0, 1, 4, 2)   # (q, g, h, j, 2)
        out = aligned_zeros(p.size, np.int16)
    out[:] = p.ravel()
    return out


def panel_bytes(cfg: QGemmConfig, K: int) -> int:
    return (K // 4) * cfg.group_bytes


# ----------------------------------------------------------------------------- the kernel
@dataclass(eq=False)
class QGemmKernel(NativeKernel):
    """One int8 GEMM variant: tile, output type, activation, A signedness, threading."""
    cache_prefix = "qgemm|"
    config: QGemmConfig = field(default_factory=QGemmConfig.for_host)
    out: str = "i32"
    activation: str = "none"
    a_signed: bool = False        # A holds int8: its bytes are read with the sign bit flipped
    parallel: bool = True
    name: str = "irg_qgemm"

    def __post_init__(self):
        if self.out not in OUTS:
            raise CompileError(f"int8 GEMM output {self.out!r}", expected=OUTS)
        if self.activation not in ACTIVATIONS:
            raise CompileError(f"int8 GEMM activation {self.activation!r}", expected=ACTIVATIONS)
        if self.out == "i32" and self.activation != "none":
            raise CompileError("an int32 output takes no activation")

    @property
    def tag(self) -> str:
        return f"{self.config.tag}|{self.out}|{self.activation}|s{int(self.a_signed)}|p{int(self.parallel)}"

    def emit(self, mod: ir.Module) -> ir.Function:
        return _Emitter(mod, self).entry()

    def build(self, cache=True, target: tuple[str, str] | None = None) -> "CompiledQGemm":
        """Compile (``NativeKernel.compile``: cached, or for another CPU) and wrap for numpy."""
        return CompiledQGemm(self, self.compile(cache, target))


class _Emitter:
    def __init__(self, mod: ir.Module, k: QGemmKernel):
        self.mod, self.k, self.cfg = mod, k, k.config
        self.L = self.cfg.lanes
        self.vi = ir.VectorType(I32, self.L)
        self.vf = ir.VectorType(F32, self.L)
        self.p = k.name

    def _intr(self, name, ret, args):
        return threads.declare(self.mod, name, ret, args)

    def dot(self, vo: VecOps, acc, a32, bvec):
        """acc + the products of one group (4 k) of A (an i32 of 4 bytes) and a B vector."""
        b = vo.b
        if self.cfg.isa == "vnni":
            f = self._intr("llvm.x86.avx512.vpdpbusd.512", self.vi, [self.vi, self.vi, self.vi])
            return b.call(f, [acc, vo.splat_i32(a32), bvec])
        # madd: bvec is (lo, hi) vectors of 2L i16; A's bytes widened to two i32 = (b0 | b1 << 16),
        # (b2 | b3 << 16) and broadcast
        lo = b.or_(b.and_(a32, ir.Constant(I32, 0xFF)), b.shl(b.and_(a32, ir.Constant(I32, 0xFF00)),
                                                             ir.Constant(I32, 8)))
        hi = b.or_(b.and_(b.lshr(a32, ir.Constant(I32, 16)), ir.Constant(I32, 0xFF)),
                   b.and_(b.lshr(a32, ir.Constant(I32, 8)), ir.Constant(I32, 0xFF0000)))
        v16 = ir.VectorType(I16, 2 * self.L)
        name = {16: "llvm.x86.avx512.pmaddw.d.512", 8: "llvm.x86.avx2.pmadd.wd",
                4: "llvm.x86.sse2.pmadd.wd"}[self.L]
        f = self._intr(name, self.vi, [v16, v16])
        for half, a in ((0, lo), (1, hi)):
            av = b.bitcast(vo.splat_i32(a), v16)
            acc = b.add(acc, b.call(f, [av, bvec[half]]))
        return acc

    # -- micro-kernel ----------------------------------------------------------------------
    def ukernel(self):
        """``ukr(ptr rowp, ptr tapoff, i64 T, i64 KG, ptr Bp, ptr C, i64 ldc, i64 m_eff,
        i64 n_eff, ptr colsum, i32 xzp, float xs, ptr mult, ptr ibias, ptr fbias, ptr params)``:
        one MR x NR tile over the whole K, epilogue applied in registers, stored to C."""
        cfg, L, k = self.cfg, self.L, self.k
        MR, NR = cfg.mr, cfg.nr
        NV = NR // L
        fn, b = function(self.mod, self.p + ".ukr",
                          [PTR, PTR, I64, I64, PTR, PTR, I64, I64, I64, PTR, I32, F32, PTR, PTR, PTR, PTR],
                          noinline=True)
        (rowp, tapoff, T, KG, Bp, C, ldc, m_eff, n_eff, colsum, xzp, xs, mult, ibias, fbias,
         params) = fn.args
        Bp.add_attribute("noalias")
        vo = VecOps(b, L)
        rows = [b.load(fptr(b, rowp, i, I64), typ=I64) for i in range(MR)]
        gb = cfg.group_bytes
        no_taps = is_null(b, tapoff)
        flip = ir.Constant(I32, 0x80808080)

        def tap_body(t, accs):
            off = b.select(no_taps, i64(0), b.load(fptr(b, b.select(no_taps, rowp, tapoff), t, I64), typ=I64))
            bases = [b.inttoptr(b.add(r, off), PTR) for r in rows]
            bt = fptr(b, Bp, b.mul(b.mul(t, KG), i64(gb)), I8)

            def group(g, accs):
                bg = fptr(b, bt, b.mul(g, i64(gb)), I8)
                if cfg.isa == "vnni":
                    # align 4: packed weights reloaded from an artifact need not be 64-byte aligned
                    bv = [b.load(fptr(b, bg, v * 64, I8), typ=self.vi, align=4) for v in range(NV)]
                else:
                    vb = 2 * L * 2    # bytes of one <2L x i16> vector
                    v16 = ir.VectorType(I16, 2 * L)
                    bv = [(b.load(fptr(b, bg, v * vb, I8), typ=v16, align=2),
                           b.load(fptr(b, bg, NR * 4 + v * vb, I8), typ=v16, align=2)) for v in range(NV)]
                out = list(accs)
                g4 = b.mul(g, i64(4))
                for i in range(MR):
                    a = b.load(fptr(b, bases[i], g4, I8), typ=I32, align=1)
                    if k.a_signed:
                        a = b.xor(a, flip)
                    for v in range(NV):
                        out[i * NV + v] = self.dot(vo, accs[i * NV + v], a, bv[v])
                return out
            return carried_loop(b, 0, KG, 1, accs, group, "g")

        zero = ir.Constant(self.vi, None)
        accs = carried_loop(b, 0, T, 1, [zero] * (MR * NV), tap_body, "t")
        # the packed panel (>= NR*4 bytes) stands in for absent arrays (see epilogue)
        self.epilogue(b, accs, C, ldc, m_eff, n_eff, colsum, xzp, xs, mult, ibias, fbias, params, Bp)
        b.ret_void()
        return fn

    def epilogue(self, b, accs, C, ldc, m_eff, n_eff, colsum, xzp, xs, mult, ibias, fbias, params, bp_any):
        cfg, L, k = self.cfg, self.L, self.k
        MR, NV = cfg.mr, cfg.nr // L
        vo = VecOps(b, L)
        none = vo.none
        masks = [vo.mask(b.sub(n_eff, i64(v * L))) for v in range(NV)]
        has_cs, has_ib, has_fb = (b.icmp_unsigned("!=", b.ptrtoint(p, I64), i64(0))
                                  for p in (colsum, ibias, fbias))
        xzv = vo.splat_i32(xzp)
        esize = {"i32": 4, "f32": 4, "u8": 1, "s8": 1}[k.out]
        pvals = None
        if k.out in ("u8", "s8") or k.activation in ("clip", "leaky_relu"):
            pvals = [b.load(fptr(b, params, i, F32), typ=F32) for i in range(4)]
        col = []
        # An absent (NULL) array is read through a valid pointer with an all-false mask: a masked
        # load whose masked-off lanes would fault takes a microcode assist (measured ~1000 cycles
        # per load on Zen 5: it made small-K tiles 5x slower), even with no lane enabled.
        def safe(p, has):
            return b.select(has, p, bp_any)
        for v in range(NV):
            m = masks[v]
            cs = vo.masked_load(fptr(b, safe(colsum, has_cs), v * L, I32), b.select(has_cs, m, none), self.vi)
            ib = vo.masked_load(fptr(b, safe(ibias, has_ib), v * L, I32), b.select(has_ib, m, none), self.vi)
            entry = {"corr": b.sub(ib, b.mul(xzv, cs))}
            if k.out != "i32":
                entry["scale"] = b.fmul(vo.splat(xs), vo.mload(fptr(b, mult, v * L), m))
                entry["fbias"] = vo.mload(fptr(b, safe(fbias, has_fb), v * L), b.select(has_fb, m, none))
            col.append(entry)
        for i in range(MR):
            row_ok = b.icmp_signed("<", i64(i), m_eff)
            crow = fptr(b, C, b.mul(i64(i), ldc), {1: I8, 4: I32}[esize])
            for v in range(NV):
                m = b.select(row_ok, masks[v], none)
                acc = b.add(accs[i * NV + v], col[v]["corr"])
                p = fptr(b, crow, v * L, {1: I8, 4: I32}[esize])
                if k.out == "i32":
                    vo.masked_store(acc, p, m, 4)
                    continue
                f = b.fadd(b.fmul(b.sitofp(acc, self.vf), col[v]["scale"]), col[v]["fbias"])
                f = vo.apply_activation(k.activation, f, *(pvals[1:3] if pvals else ()))
                if k.out == "f32":
                    vo.masked_store(f, p, m, 4)
                    continue
                if pvals is not None:
                    f = b.fmul(f, vo.splat(pvals[0]))
                rint = self._intr(f"llvm.rint.v{L}f32", self.vf, [self.vf])
                r = b.fadd(b.call(rint, [f]), vo.splat(pvals[3]))
                vo.masked_store(vo.to_8bit(r, k.out == "s8"), p, m, 1)

    # -- drivers ----------------------------------------------------------------------------
    def serial(self, ukr):
        """``serial(ctx*, i64 m0, i64 m1, i64 n0, i64 n1)``: tiles of rows [m0, m1) x columns
        [n0, n1) of the call whose arguments ``ctx`` holds."""
        cfg, k = self.cfg, self.k
        MR, NR, NC = cfg.mr, cfg.nr, cfg.nc
        fn, b = function(self.mod, self.p + ".serial", [PTR, I64, I64, I64, I64])
        ctx, m0, m1, n0, n1 = fn.args
        f = self._ctx_fields(b, ctx)
        rowp = b.alloca(I64, size=i64(MR), name="rowp")
        esize = {"i32": 4, "f32": 4, "u8": 1, "s8": 1}[k.out]
        no_rowoff = is_null(b, f["rowoff"])
        abase = b.ptrtoint(f["A"], I64)
        xzp = b.select(is_null(b, f["xzp"]), ir.Constant(I32, 0),
                       b.load(b.select(is_null(b, f["xzp"]), f["A"], f["xzp"]), typ=I32))
        xs = b.select(is_null(b, f["xscale"]), ir.Constant(F32, 1.0),
                      b.load(b.select(is_null(b, f["xscale"]), f["A"], f["xscale"]), typ=F32))
        pstride = b.mul(b.mul(f["T"], f["KG"]), i64(cfg.group_bytes))
        last = b.sub(f["M"], i64(1))
        with for_range(b, n0, n1, NC, "jc") as jc:
            nend = imin(b, b.add(jc, i64(NC)), n1)
            with for_range(b, m0, m1, MR, "ir") as i0:
                for i in range(MR):
                    r = imin(b, b.add(i0, i64(i)), last)     # rows past M repeat the last one
                    off = b.select(no_rowoff, b.mul(r, f["lda"]),
                                   b.load(fptr(b, b.select(no_rowoff, rowp, f["rowoff"]), r, I64), typ=I64))
                    b.store(b.add(abase, off), fptr(b, rowp, i, I64))
                with for_range(b, jc, nend, NR, "jr") as j:
                    bp = fptr(b, f["Bp"], b.mul(b.sdiv(j, i64(NR)), pstride), I8)
                    cp = fptr(b, f["C"], b.mul(b.add(b.mul(i0, f["ldc"]), j), i64(esize)), I8)
                    b.call(ukr, [rowp, f["tapoff"], f["T"], f["KG"], bp, cp, f["ldc"],
                                 b.sub(m1, i0), b.sub(imin(b, n1, f["N"]), j),
                                 keep_null(b, f["colsum"], j, I32), xzp, xs,
                                 fptr(b, f["mult"], j), keep_null(b, f["ibias"], j, I32),
                                 keep_null(b, f["fbias"], j, F32), f["params"]])
        b.ret_void()
        return fn

    NAMES = "A lda rowoff tapoff T KG Bp C ldc M N colsum xzp xscale mult ibias fbias params".split()
    PTRS = {"A", "rowoff", "tapoff", "Bp", "C", "colsum", "xzp", "xscale", "mult", "ibias", "fbias", "params"}

    def _ctx_fields(self, b, ctx):
        return {n: threads.load_ctx(b, ctx, i, PTR if n in self.PTRS else I64)
                for i, n in enumerate(self.NAMES)}

    def worker(self, serial):
        """``worker(i64 tid, i64 nthreads, ptr ctx)``: MR-aligned row ranges when there are at
        least two row tiles per thread, else NR-aligned column ranges."""
        cfg = self.cfg
        fn, b = function(self.mod, self.p + ".worker", [I64, I64, PTR])
        tid, nth, ctx = fn.args
        M = threads.load_ctx(b, ctx, self.NAMES.index("M"))
        N = threads.load_ctx(b, ctx, self.NAMES.index("N"))
        mt = b.sdiv(b.add(M, i64(cfg.mr - 1)), i64(cfg.mr))
        nt = b.sdiv(b.add(N, i64(cfg.nr - 1)), i64(cfg.nr))
        by_rows = b.or_(b.icmp_signed(">=", mt, b.mul(nth, i64(2))), b.icmp_signed("<", nt, nth))
        m0, m1, n0, n1 = split_rows_or_columns(b, by_rows, M, N, tid, nth, cfg.mr, cfg.nr)
        with if_then(b, b.and_(b.icmp_signed("<", m0, m1), b.icmp_signed("<", n0, n1)), "part"):
            b.call(serial, [ctx, m0, m1, n0, n1])
        b.ret_void()
        return fn

    def entry(self):
        k = self.k
        args = [PTR, I64, PTR, PTR, I64, I64, PTR, PTR, I64, I64, I64] + [PTR] * 7 + [I64]
        fn, b = function(self.mod, self.p, args, internal=False)
        for a, n in zip(fn.args, self.NAMES + ["nthreads"]):
            a.name = n
        worker = self.worker(self.serial(self.ukernel()))
        ctx = threads.store_ctx(b, list(fn.args[:18]))
        if k.parallel:
            M, N, T, KG, nth = fn.args[9], fn.args[10], fn.args[4], fn.args[5], fn.args[18]
            ops = b.mul(b.mul(M, N), b.mul(b.mul(T, KG), i64(8)))
            nth = b.select(b.icmp_signed("<", ops, i64(self.cfg.parallel_min_ops)), i64(1), nth)
            threads.launch(b, threads.emit_trampoline(self.mod, worker), worker, ctx, nth)
        else:
            b.call(worker, [i64(0), i64(1), ctx])
        b.ret_void()
        return fn


# ----------------------------------------------------------------------------- Python API
_VP, _I64 = ctypes.c_void_p, ctypes.c_int64


def _ptr(x) -> int:
    return 0 if x is None else x.ctypes.data


class CompiledQGemm:
    """The kernel on numpy arrays (tests and benchmarks); arguments as in the ABI.

    ``a``: the A bytes (uint8, or int8 for ``a_signed`` kernels), rows ``M`` at ``lda`` bytes
    or at ``rowoff``; ``bp``: ``pack_b`` output for ``K = T*KG*4``."""

    def __init__(self, kernel: QGemmKernel, lib):
        self.kernel = kernel
        self.lib = lib
        self._fn = lib.cfunc(kernel.name, None, _VP, _I64, _VP, _VP, _I64, _I64, _VP, _VP, _I64, _I64,
                             _I64, *([_VP] * 7), _I64)
        self.num_threads = threads.default_num_threads()
        self._lock = threading.Lock()

    def __call__(self, a: np.ndarray, bp: np.ndarray, M: int, N: int, K: int, *, lda: int | None = None,
                 rowoff=None, tapoff=None, colsum=None, xzp: int | None = None,
                 xscale: float | None = None, mult=None, ibias=None, fbias=None, post: float = 1.0,
                 alpha: float = 0.0, beta: float = 0.0, yzp: float = 0.0, out=None,
                 num_threads: int | None = None) -> np.ndarray:
        k = self.kernel
        want = np.int8 if k.a_signed else np.uint8
        if a.dtype != want or not a.flags.c_contiguous:
            raise InputError(f"A must be a contiguous {np.dtype(want).name} array", input="A",
                             actual=str(a.dtype))
        T = 1 if tapoff is None else len(tapoff)
        if K % (4 * T):
            raise InputError("K must be a multiple of 4 x taps", input="K", actual=K)
        KG = K // (4 * T)
        lda = K if lda is None else lda
        keep = []     # every array passed by address stays alive until the call returns (pitfall 6)

        def arr(x, dt):
            if x is None:
                return None
            x = np.ascontiguousarray(x, dt)
            keep.append(x)
            return x
        rowoff, tapoff = arr(rowoff, np.int64), arr(tapoff, np.int64)
        colsum, mult, ibias, fbias = arr(colsum, np.int32), arr(mult, np.float32), arr(ibias, np.int32), \
            arr(fbias, np.float32)
        if mult is None and k.out != "i32":
            mult = arr(np.ones(N, np.float32), np.float32)
        xz = arr(np.array([xzp], np.int32), np.int32) if xzp is not None else None
        xs = arr(np.array([xscale], np.float32), np.float32) if xscale is not None else None
        params = arr(np.array([post, alpha, beta, yzp], np.float32), np.float32)
        if out is None:
            out = np.empty((M, N), OUT_NP[k.out])
        ldc = out.strides[0] // out.itemsize
        nth = self.num_threads if num_threads is None else max(1, int(num_threads))
        self._fn(_ptr(a), lda, _ptr(rowoff), _ptr(tapoff), T, KG, _ptr(bp), _ptr(out), ldc, M, N,
                 _ptr(colsum), _ptr(xz), _ptr(xs), _ptr(mult), _ptr(ibias), _ptr(fbias), _ptr(params), nth)
        return out


def activation_params(activation: str, alpha: float, beta: float) -> tuple[float, float]:
    """The (alpha, beta) the kernel's params carry for an activation (clip: lo, hi)."""
    if activation == "clip":
        return (-math.inf if alpha is None else alpha), (math.inf if beta is None else beta)
    return alpha or 0.0, beta or 0.0
