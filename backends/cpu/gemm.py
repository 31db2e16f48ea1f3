"""fp32 GEMM generator: ``C = epilogue(op(A) @ op(B))`` as LLVM IR with explicit vector types.

Structure (Goto/BLIS blocking; measured recipes in shared/reference/llvm-cpu/README.md)::

    for jc in 0..N step NC:                 B block (KC x NC)
      for pc in 0..K step KC:
        pack B[pc:pc+kc, jc:jc+nc] into NR-wide panels      (skipped for a pre-packed B)
        for ic in 0..M step MC:             A block (MC x KC), stays in L2
          pack A[ic:ic+mc, pc:pc+kc] into MR-tall panels
          for jr in 0..nc step NR:          B micro-panel (KC x NR), reused across ir
            for ir in 0..mc step MR:
              micro-kernel: MR x NR/L accumulators of <L x float>, llvm.fmuladd
              last K block: epilogue on the tile while it is in L1

Packing zero-pads partial panels; the C update and the epilogue use masked loads/stores, so one
kernel body serves every tile (plus MR/2- and MR/4-row kernels for a short last panel of A).
K blocks are of equal depth. Threads (the pool of ``threads.py``) take whole batch items when there
are enough, else NR-aligned column or MR-aligned row ranges of each matrix (whichever balances
better and packs less twice), never K, so results do not depend on the thread count. ``M < small_m`` takes an unpacked streaming path (batch-1 linear
layers are bandwidth-bound GEMVs). The vector width L comes from the host (16 lanes with
AVX-512, 8 with AVX2, 4 otherwise) and can be forced through ``GemmConfig.for_lanes``.

Epilogue, in order: ``+ bias[j]`` (per column), ``+ R[i, j]`` (residual, before the activation
unless ``Epilogue.residual_after_activation``), activation (none, relu, clip(lo, hi),
leaky_relu(alpha), sigmoid, tanh, gelu (erf), gelu_tanh, silu). bias and R are runtime pointers
(NULL: absent); the activation is fixed when the kernel is generated.

Generated-code ABI (what ``backends/cpu/codegen.py`` calls from its entry function)
-----------------------------------------------------------------------------------
``GemmKernel(...).emit(module)`` adds one external function, ``kernel.name`` (default
``irg_gemm``; give every variant in one module its own name), plus internal helpers::

    void NAME(ptr A, ptr B, ptr bias, ptr R, ptr C,
              i64 M, i64 N, i64 K,
              i64 lda, i64 ldb, i64 ldr, i64 ldc,
              i64 batch, i64 sa, i64 sb, i64 sr, i64 sc,
              ptr ws, i64 nthreads)

- All counts, leading dimensions and batch strides are in elements (float32), row-major:
  ``A[i, k] = A[i*lda + k]`` (``trans_a``: A is stored K x M, ``A[k*lda + i]``),
  ``B[k, j] = B[k*ldb + j]`` (``trans_b``: stored N x K, ``B[j*ldb + k]``),
  ``C[i, j] = C[i*ldc + j]``, ``R[i, j] = R[i*ldr + j]``. ``bias`` holds N floats.
- Batch item ``t`` uses ``A + t*sa``, ``B + t*sb``, ``R + t*sr``, ``C + t*sc`` (a stride of 0
  broadcasts); bias is shared. Use ``batch=1`` and zero strides for a plain GEMM.
- Pre-packed B (``packed_b=True``): B points at ``pack_b(...)`` output (panels of NR columns,
  ``Bp[q][k][0:NR]``, zero-padded, panel stride ``K*NR``) and ``ldb`` is ignored; ``sb`` is the
  element stride between packed batch items (``PackedB.batch_stride``). Packed B, A, C and R need
  only 4-byte alignment (unaligned vector moves), but 64-byte aligned panels are faster.
- ``ws`` is scratch of ``workspace_bytes(M, N, K, nthreads)`` bytes, any alignment (the kernel
  aligns it to 64 bytes); one slice per thread. It may be reused between calls.
- ``nthreads`` >= 1: threads to use (``threads.launch``, parts claimed dynamically); problems under
  ``GemmConfig.parallel_min_flops`` run on the calling thread. A kernel built with
  ``parallel=False`` ignores it and never references the pool.
- C must not overlap A, B or bias. ``R == C`` with ``ldr == ldc`` (in-place ``C += A @ B``) is
  allowed when the residual is added before the activation (the default); otherwise R and C must
  not overlap.
- A module holding a parallel kernel needs ``threads.ensure_pool()`` before JIT/object load (emitting
  it calls that).

Python API: ``GemmKernel(config, epilogue=...).build()`` returns a callable
``CompiledGemm(a, b, bias=None, residual=None, out=None, num_threads=None)`` on numpy arrays.
"""
from __future__ import annotations

import ctypes
import functools
import math
import threading
from dataclasses import dataclass, field, replace

import llvmlite.ir as ir
import numpy as np

from irgraph.errors import CompileError, InputError

from . import llvm_target, threads
from .native_kernel import NativeKernel, aligned_zeros, round_up_to
from .vector_ir import (ACTIVATIONS, F32, I1, I32, I64, PTR, VOID, VecOps, align_up,
                        carried_loop, fptr, for_range, function, i64, if_then, imax, imin, keep_null,
                        round_up, split_rows_or_columns)


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class GemmConfig:
    """Blocking and register tile. ``nr`` is a multiple of ``lanes``; ``mc`` of ``mr``; ``nc`` of ``nr``."""
    lanes: int = 16
    mr: int = 14            # rows of the register tile: broadcasts of A per k
    nr: int = 32            # columns of the register tile: vectors of B per k = nr / lanes
    kc: int = 1024          # depth of a packed block (C is read and written once per block)
    mc: int = 112           # rows of a packed A block (mc*kc*4 bytes stay in L2)
    nc: int = 1024          # columns of a packed B block (kc*nc*4 bytes of workspace)
    unroll: int = 4         # k-loop unroll of the micro-kernel
    prefetch_c: bool = True
    small_m: int = 4        # M below this: streaming GEMV path without packing
    gemv_kb: int = 8        # rows of B streamed together by the GEMV path (half for M > 1);
    #                         8 measured 1.1x faster than 4 at 1x4096x1024, software prefetch
    #                         of later rows 10-20% slower
    parts_per_thread: int = 1           # parts (each with its workspace slice) per thread
    parallel_min_flops: int = 1 << 18   # below: one thread (a region costs ~1-2 us; the batch-1
    #                                     MLP 784-512-512-10 went 47 -> 32 us at 2 threads with 2^18)

    def __post_init__(self):
        if self.lanes not in (4, 8, 16):
            raise CompileError(f"GEMM vector width must be 4, 8 or 16 lanes, got {self.lanes}")
        if self.nr % self.lanes or self.nr <= 0:
            raise CompileError(f"GEMM nr={self.nr} must be a positive multiple of lanes={self.lanes}")
        if self.mc % self.mr or self.nc % self.nr or min(self.mr, self.kc, self.unroll) <= 0:
            raise CompileError(f"GEMM blocking mc={self.mc} (multiple of mr={self.mr}) and "
                               f"nc={self.nc} (multiple of nr={self.nr}) do not fit")
        if self.small_m < 1 or self.gemv_kb < 1:
            raise CompileError("GEMM small_m and gemv_kb must be >= 1")

    @classmethod
    def for_lanes(cls, lanes: int, **overrides) -> "GemmConfig":
        """The default tile for a vector width: 14x32 with 32 zmm (28 accumulators + 2 B + 1
        broadcast), 6x16 / 6x8 with 16 ymm/xmm registers (12 accumulators + 2 + 1).

        AVX-512 blocking measured on Zen 5 (48 KiB L1, 1 MiB L2), 1 thread, against OpenBLAS in the
        same process: KC=1024 (one pass over C for K <= 1024) gave 0.96 of numpy's GFLOP/s at
        1024^3 where KC=384 gave 0.88-0.90 and KC=512 0.90-0.93; 8x48 and 6x64 tiles matched it on
        square shapes but lost 30% where N = 64 (a third of their last panel is padding)."""
        if lanes == 16:
            base = cls(lanes=16, mr=14, nr=32, kc=1024, mc=112, nc=1024)
        elif lanes == 8:
            base = cls(lanes=8, mr=6, nr=16, kc=512, mc=96, nc=2048, gemv_kb=4)
        elif lanes == 4:
            base = cls(lanes=4, mr=6, nr=8, kc=256, mc=96, nc=1024, gemv_kb=4)
        else:
            raise CompileError(f"GEMM vector width must be 4, 8 or 16 lanes, got {lanes}")
        return replace(base, **overrides)

    @classmethod
    def for_host(cls, **overrides) -> "GemmConfig":
        return cls.for_lanes(llvm_target.host_cpu().f32_lanes, **overrides)

    def for_rows(self, m: int) -> "GemmConfig":
        """This config with the register tile's row count chosen for ``m`` rows of A: with AVX-512,
        8 rows (16 accumulators) instead of 14 when 14 would compute over 3 % more padding rows.
        Measured on Zen 5, 1 thread, B packed per call: M=64 x K=784 x N=512 174 -> 186 GFLOP/s,
        M=64 x 512 x 512 173 -> 184; at M=49 both pad to 56 and 14x32 is faster (152 vs 145);
        1024^3 (1.2 % padding) stays 14x32. ``nr`` is kept, so B's packed layout does not change."""
        if self.lanes != 16 or self.mr != 14 or m < self.small_m:
            return self
        waste = {r: -(-m // r) * r / m for r in (14, 8)}
        return replace(self, mr=8) if waste[14] - waste[8] > 0.03 else self

    @property
    def tag(self) -> str:
        return (f"l{self.lanes}_{self.mr}x{self.nr}_kc{self.kc}_mc{self.mc}_nc{self.nc}_u{self.unroll}"
                f"_pf{int(self.prefetch_c)}_sm{self.small_m}_kb{self.gemv_kb}")


@dataclass(frozen=True)
class Epilogue:
    """What happens to ``A @ B`` before the store. ``alpha``/``beta``: clip's lo/hi, leaky_relu's slope."""
    activation: str = "none"
    alpha: float = 0.0
    beta: float = 0.0
    residual_after_activation: bool = False

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise CompileError(f"unknown GEMM epilogue activation {self.activation!r}",
                               expected=" | ".join(ACTIVATIONS))
        if self.activation == "clip" and not self.alpha <= self.beta:
            raise CompileError("clip epilogue needs alpha (lo) <= beta (hi)",
                               actual=(self.alpha, self.beta))

    @classmethod
    def clip(cls, lo: float = -math.inf, hi: float = math.inf, **kw) -> "Epilogue":
        return cls("clip", float(lo), float(hi), **kw)

    @classmethod
    def leaky_relu(cls, alpha: float = 0.01, **kw) -> "Epilogue":
        return cls("leaky_relu", float(alpha), **kw)

    @property
    def tag(self) -> str:
        return f"{self.activation}_{self.alpha!r}_{self.beta!r}_{int(self.residual_after_activation)}"


def workspace_floats_per_thread(cfg: GemmConfig, M: int, N: int, K: int, packed_b: bool) -> int:
    """Scratch floats one thread needs; ``_GemmEmitter.ws_stride`` emits the same formula in IR."""
    kcb = min(cfg.kc, max(K, 0))
    mcb = min(cfg.mc, round_up_to(max(M, 0), cfg.mr))
    ncb = min(cfg.nc, round_up_to(max(N, 0), cfg.nr))
    a = round_up_to(mcb * kcb, 16)
    return a if packed_b else a + round_up_to(kcb * ncb, 16)


def workspace_bytes(cfg: GemmConfig, M: int, N: int, K: int, num_threads: int,
                    packed_b: bool = False) -> int:
    """Bytes of ``ws`` for a call with these sizes (64 bytes of slack for the kernel's alignment):
    one slice per part, ``parts_per_thread`` parts a thread when there is more than one."""
    parts = 1 if num_threads <= 1 else num_threads * cfg.parts_per_thread
    return 4 * parts * workspace_floats_per_thread(cfg, M, N, K, packed_b) + 64


# ----------------------------------------------------------------------------- emitters

class _GemmEmitter:
    def __init__(self, mod: ir.Module, kernel: "GemmKernel"):
        self.mod, self.k, self.cfg, self.ep = mod, kernel, kernel.config, kernel.epilogue
        self.L = self.cfg.lanes
        self.p = kernel.name

    # -- packing ------------------------------------------------------------------------
    def pack_a(self):
        """``void pack_a(ptr A, i64 lda, ptr Ap, i64 mc, i64 kc)``: Ap[p][k][0:MR] = A[p*MR+i, k]."""
        MR = self.cfg.mr
        fn, b = function(self.mod, self.p + ".pack_a", [PTR, I64, PTR, I64, I64], noinline=True)
        A, lda, Ap, mc, kc = fn.args
        A.add_attribute("noalias")
        Ap.add_attribute("noalias")
        vo = VecOps(b, self.L)
        npan = b.sdiv(b.add(mc, i64(MR - 1)), i64(MR))
        with for_range(b, 0, npan, 1, "p") as p:
            i0 = b.mul(p, i64(MR))
            dst = fptr(b, Ap, b.mul(i0, kc))
            if self.k.trans_a:
                # A is K x M: the MR values of one k are contiguous; masked vector moves.
                nchunk = -(-MR // self.L)
                with for_range(b, 0, kc, 1, "k") as k:
                    src = fptr(b, A, b.add(b.mul(k, lda), i0))
                    d = fptr(b, dst, b.mul(k, i64(MR)))
                    for c in range(nchunk):
                        width = min(self.L, MR - c * self.L)
                        valid = vo.mask(b.sub(mc, b.add(i0, i64(c * self.L))))
                        valid = b.and_(valid, vo.mask(i64(width)))
                        x = vo.mload(fptr(b, src, c * self.L), valid)
                        vo.mstore(x, fptr(b, d, c * self.L), vo.mask(i64(width)))
            else:
                # Blocks of L k-values: L rows (MR of them real, the rest zero) loaded as vectors,
                # transposed in registers, stored as L contiguous runs of MR floats. Scalar
                # copies ran at ~0.8 element/cycle and cost ~3% of a 1024^3 GEMM.
                L = self.L
                oks = [b.icmp_signed("<", b.add(i0, i64(i)), mc) for i in range(MR)]
                srcs = [fptr(b, A, b.mul(b.select(oks[i], b.add(i0, i64(i)), i0), lda)) for i in range(MR)]
                full = vo.mask(i64(L))
                rmask = [b.select(oks[i], full, vo.none) for i in range(MR)]
                kcv = b.mul(b.sdiv(kc, i64(L)), i64(L))
                with for_range(b, 0, kcv, L, "kv") as k:
                    for c in range(-(-MR // L)):
                        rows = [vo.mload(fptr(b, srcs[i], k), rmask[i]) if i < MR else vo.zero
                                for i in range(c * L, c * L + L)]
                        cols = vo.transpose(rows)
                        width = min(L, MR - c * L)
                        for kk in range(L):
                            d = fptr(b, dst, b.add(b.mul(b.add(k, i64(kk)), i64(MR)), i64(c * L)))
                            if width == L:
                                vo.store(cols[kk], d)
                            else:
                                vo.mstore(cols[kk], d, vo.mask(i64(width)))
                for i in range(MR):   # k remainder, one row at a time (rows past mc are zero)
                    with for_range(b, kcv, kc, 1, f"kr{i}") as k:
                        x = b.select(oks[i], b.load(fptr(b, srcs[i], k), typ=F32), ir.Constant(F32, 0))
                        b.store(x, fptr(b, dst, b.add(b.mul(k, i64(MR)), i64(i))))
        b.ret_void()
        return fn

    def pack_b(self):
        """``void pack_b(ptr B, i64 ldb, ptr Bp, i64 kc, i64 nc)``: Bp[q][k][0:NR] = B[k, q*NR+j]."""
        NR, L = self.cfg.nr, self.L
        fn, b = function(self.mod, self.p + ".pack_b", [PTR, I64, PTR, I64, I64], noinline=True)
        B, ldb, Bp, kc, nc = fn.args
        B.add_attribute("noalias")
        Bp.add_attribute("noalias")
        vo = VecOps(b, L)
        npan = b.sdiv(b.add(nc, i64(NR - 1)), i64(NR))
        with for_range(b, 0, npan, 1, "q") as q:
            j0 = b.mul(q, i64(NR))
            dst = fptr(b, Bp, b.mul(j0, kc))
            if self.k.trans_b:
                # B is N x K: column j of the panel is a contiguous row; strided scalar stores.
                with for_range(b, 0, i64(NR), 1, "j") as j:
                    ok = b.icmp_signed("<", b.add(j0, j), nc)
                    r = imin(b, b.add(j0, j), b.sub(nc, i64(1)))
                    src = fptr(b, B, b.mul(r, ldb))
                    with for_range(b, 0, kc, 1, "k") as k:
                        x = b.select(ok, b.load(fptr(b, src, k), typ=F32), ir.Constant(F32, 0))
                        b.store(x, fptr(b, dst, b.add(b.mul(k, i64(NR)), j)))
            else:
                masks = [vo.mask(b.sub(b.sub(nc, j0), i64(v * L))) for v in range(NR // L)]
                with for_range(b, 0, kc, 1, "k") as k:
                    src = fptr(b, B, b.add(b.mul(k, ldb), j0))
                    d = fptr(b, dst, b.mul(k, i64(NR)))
                    for v in range(NR // L):
                        vo.store(vo.mload(fptr(b, src, v * L), masks[v]), fptr(b, d, v * L))
        b.ret_void()
        return fn

    # -- micro-kernel -------------------------------------------------------------------
    def ukernel(self, rows: int):
        """``void ukr<rows>(i64 kc, ptr Ap, ptr Bp, ptr C, i64 ldc, i64 m_eff, i64 n_eff, i32 accum)``:
        C[:m_eff, :n_eff] (+)= Ap(rows x kc) @ Bp(kc x NR), accumulators kept in registers. Ap is
        an MR-wide packed panel; kernels with rows < MR serve the last panel of a short M."""
        cfg, L = self.cfg, self.L
        MR, NR, U, NV = cfg.mr, cfg.nr, cfg.unroll, cfg.nr // L
        fn, b = function(self.mod, f"{self.p}.ukr{rows}", [I64, PTR, PTR, PTR, I64, I64, I64, I32],
                          noinline=True)   # noinline: register allocation stays local to the tile
        kc, Ap, Bp, C, ldc, m_eff, n_eff, accum = fn.args
        Ap.add_attribute("noalias")
        Bp.add_attribute("noalias")
        vo = VecOps(b, L)
        if cfg.prefetch_c:   # the C tile is read and written after the k loop
            pf = threads.declare(self.mod, "llvm.prefetch.p0", VOID, [PTR, I32, I32, I32])
            for i in range(rows):
                row = fptr(b, C, b.mul(i64(i), ldc))
                for j in range(0, NR, 16):
                    b.call(pf, [fptr(b, row, j), ir.Constant(I32, 1), ir.Constant(I32, 3),
                                ir.Constant(I32, 1)])

        def step(k, accs):
            a_base = fptr(b, Ap, b.mul(k, i64(MR)))
            b_base = fptr(b, Bp, b.mul(k, i64(NR)))
            bv = [vo.load(fptr(b, b_base, v * L)) for v in range(NV)]
            out = []
            for i in range(rows):
                a = vo.splat(b.load(fptr(b, a_base, i), typ=F32, align=4))
                out += [vo.fma(a, bv[v], accs[i * NV + v]) for v in range(NV)]
            return out

        def unrolled(k, accs):
            for u in range(U):
                accs = step(b.add(k, i64(u)), accs)
            return accs

        kmain = b.mul(b.sdiv(kc, i64(U)), i64(U))
        accs = carried_loop(b, 0, kmain, U, [vo.zero] * (rows * NV), unrolled, "kmain")
        accs = carried_loop(b, kmain, kc, 1, accs, step, "krem")

        nmasks = [vo.mask(b.sub(n_eff, i64(v * L))) for v in range(NV)]
        do_acc = b.icmp_unsigned("!=", accum, ir.Constant(I32, 0))
        for i in range(rows):
            row_ok = b.icmp_signed("<", i64(i), m_eff)
            row = fptr(b, C, b.mul(i64(i), ldc))
            for v in range(NV):
                m = b.select(row_ok, nmasks[v], vo.none)
                p = fptr(b, row, v * L)
                old = vo.mload(p, b.select(do_acc, m, vo.none))
                vo.mstore(b.fadd(accs[i * NV + v], old), p, m)
        b.ret_void()
        return fn

    # -- epilogue -----------------------------------------------------------------------
    def epilogue_rows(self):
        """``void epi(ptr C, i64 ldc, i64 m, i64 n, ptr bias, ptr R, i64 ldr)``: the fused epilogue
        over an m x n block of C in place. NULL bias/R: their masked loads touch nothing."""
        L = self.L
        fn, b = function(self.mod, self.p + ".epi", [PTR, I64, I64, I64, PTR, PTR, I64], noinline=True)
        C, ldc, m, n, bias, R, ldr = fn.args
        vo = VecOps(b, L)
        has_bias = b.icmp_unsigned("!=", b.ptrtoint(bias, I64), i64(0))
        has_r = b.icmp_unsigned("!=", b.ptrtoint(R, I64), i64(0))
        full = vo.mask(i64(L))
        nfull = b.mul(b.sdiv(n, i64(L)), i64(L))

        def body(crow, rrow, j, mask):
            p = fptr(b, crow, j)
            v = vo.mload(p, mask)
            v = b.fadd(v, vo.mload(fptr(b, bias, j), b.select(has_bias, mask, vo.none)))
            r = vo.mload(fptr(b, rrow, j), b.select(has_r, mask, vo.none))
            if not self.ep.residual_after_activation:
                v = b.fadd(v, r)
            v = vo.activation(self.ep, v)
            if self.ep.residual_after_activation:
                v = b.fadd(v, r)
            vo.mstore(v, p, mask)

        with for_range(b, 0, m, 1, "i") as i:
            crow = fptr(b, C, b.mul(i, ldc))
            rrow = fptr(b, R, b.mul(i, ldr))
            with for_range(b, 0, nfull, L, "j") as j:
                body(crow, rrow, j, full)
            with if_then(b, b.icmp_signed("<", nfull, n), "tail"):
                body(crow, rrow, nfull, vo.mask(b.sub(n, nfull)))
        b.ret_void()
        return fn

    # -- small M ------------------------------------------------------------------------
    def gemv(self, rows: int):
        """``void gemv_r(ptr A, i64 rsa, i64 csa, ptr B, i64 ldb, ptr C, i64 ldc, i64 N, i64 K)``:
        ``rows`` rows of C = A @ B with B streamed row by row, gemv_kb rows at a time, into C rows
        kept in L1 (walking B by column blocks, stride ldb between k, ran at 0.58x OpenBLAS)."""
        # B rows per pass: more rows mean fewer passes over C, but each needs a register for a
        # broadcast of A per row of C
        L, KB = self.L, (self.cfg.gemv_kb if rows == 1 else max(2, self.cfg.gemv_kb // 2))
        fn, b = function(self.mod, f"{self.p}.gemv{rows}",
                          [PTR, I64, I64, PTR, I64, PTR, I64, I64, I64, I32], noinline=True)
        A, rsa, csa, B, ldb, C, ldc, N, K, accum = fn.args
        vo = VecOps(b, L)
        full = vo.mask(i64(L))
        nfull = b.mul(b.sdiv(N, i64(L)), i64(L))
        crows = [fptr(b, C, b.mul(i64(r), ldc)) for r in range(rows)]
        arows = [fptr(b, A, b.mul(i64(r), rsa)) for r in range(rows)]

        def over_n(body):
            with for_range(b, 0, nfull, L, "j") as j:
                body(j, full)
            with if_then(b, b.icmp_signed("<", nfull, N), "tail"):
                body(nfull, vo.mask(b.sub(N, nfull)))

        def zero(j, mask):
            for r in range(rows):
                vo.mstore(vo.zero, fptr(b, crows[r], j), mask)
        with if_then(b, b.icmp_unsigned("==", accum, ir.Constant(I32, 0)), "zero"):
            over_n(zero)

        def update(k, nk):
            a = [[vo.splat(b.load(fptr(b, arows[r], b.mul(b.add(k, i64(u)), csa)), typ=F32))
                  for u in range(nk)] for r in range(rows)]
            brows = [fptr(b, B, b.mul(b.add(k, i64(u)), ldb)) for u in range(nk)]

            def body(j, mask):
                bv = [vo.mload(fptr(b, brows[u], j), mask) for u in range(nk)]
                for r in range(rows):
                    p = fptr(b, crows[r], j)
                    c = vo.mload(p, mask)
                    for u in range(nk):
                        c = vo.fma(a[r][u], bv[u], c)
                    vo.mstore(c, p, mask)
            over_n(body)

        kmain = b.mul(b.sdiv(K, i64(KB)), i64(KB))
        with for_range(b, 0, kmain, KB, "kb") as k:
            update(k, KB)
        with for_range(b, kmain, K, 1, "kr") as k:
            update(k, 1)
        b.ret_void()
        return fn

    def gemv_packed(self, rows: int):
        """``void gemvp_r(ptr A, i64 rsa, i64 csa, ptr Bp, ptr C, i64 ldc, i64 N, i64 K)``: small M
        over a pre-packed B. Each NR panel is one contiguous K*NR stream; 2 k-phases of
        accumulators hide the FMA latency when rows*NR/L is small."""
        L, NR = self.L, self.cfg.nr
        NV, H = NR // L, 2
        fn, b = function(self.mod, f"{self.p}.gemvp{rows}",
                          [PTR, I64, I64, PTR, PTR, I64, I64, I64, I32], noinline=True)
        A, rsa, csa, Bp, C, ldc, N, K, accum = fn.args
        do_acc = b.icmp_unsigned("!=", accum, ir.Constant(I32, 0))
        vo = VecOps(b, L)
        arows = [fptr(b, A, b.mul(i64(r), rsa)) for r in range(rows)]
        npan = b.sdiv(b.add(N, i64(NR - 1)), i64(NR))
        with for_range(b, 0, npan, 1, "q") as q:
            j0 = b.mul(q, i64(NR))
            bq = fptr(b, Bp, b.mul(j0, K))

            def step(k, accs, h):
                bk = fptr(b, bq, b.mul(k, i64(NR)))
                bv = [vo.load(fptr(b, bk, v * L)) for v in range(NV)]
                out = list(accs)
                for r in range(rows):
                    a = vo.splat(b.load(fptr(b, arows[r], b.mul(k, csa)), typ=F32))
                    for v in range(NV):
                        idx = (r * NV + v) * H + h
                        out[idx] = vo.fma(a, bv[v], accs[idx])
                return out

            def pair(k, accs):
                for h in range(H):
                    accs = step(b.add(k, i64(h)), accs, h)
                return accs
            kmain = b.mul(b.sdiv(K, i64(H)), i64(H))
            accs = carried_loop(b, 0, kmain, H, [vo.zero] * (rows * NV * H), pair, "kp")
            accs = carried_loop(b, kmain, K, 1, accs, lambda k, a: step(k, a, 0), "kq")
            masks = [vo.mask(b.sub(b.sub(N, j0), i64(v * L))) for v in range(NV)]
            for r in range(rows):
                crow = fptr(b, C, b.add(b.mul(i64(r), ldc), j0))
                for v in range(NV):
                    s = accs[(r * NV + v) * H]
                    for h in range(1, H):
                        s = b.fadd(s, accs[(r * NV + v) * H + h])
                    p = fptr(b, crow, v * L)
                    s = b.fadd(s, vo.mload(p, b.select(do_acc, masks[v], vo.none)))
                    vo.mstore(s, p, masks[v])
        b.ret_void()
        return fn

    # -- drivers ------------------------------------------------------------------------
    def ws_stride(self, b, M, N, K):
        """Floats of ws per thread: the IR twin of ``workspace_floats_per_thread``."""
        cfg = self.cfg
        kcb = imin(b, i64(cfg.kc), imax(b, K, i64(0)))
        mcb = imin(b, i64(cfg.mc), round_up(b, imax(b, M, i64(0)), cfg.mr))
        s = round_up(b, b.mul(mcb, kcb), 16)
        if not self.k.packed_b:
            ncb = imin(b, i64(cfg.nc), round_up(b, imax(b, N, i64(0)), cfg.nr))
            s = b.add(s, round_up(b, b.mul(kcb, ncb), 16))
        return s

    def serial(self):
        """``void serial(ptr A, ptr B, ptr bias, ptr R, ptr C, i64 M, i64 N, i64 K, i64 lda,
        i64 ldb, i64 ldr, i64 ldc, ptr ws)``: one GEMM on the calling thread; ws 64-byte aligned."""
        cfg, k = self.cfg, self.k
        MR, NR, KC, MC, NC = cfg.mr, cfg.nr, cfg.kc, cfg.mc, cfg.nc
        fn, b = function(self.mod, self.p + ".serial",
                          [PTR, PTR, PTR, PTR, PTR, I64, I64, I64, I64, I64, I64, I64, PTR])
        A, B, bias, R, C, M, N, K, lda, ldb, ldr, ldc, ws = fn.args
        # the last panel of A gets a kernel with fewer rows when it is short (M = 128 with MR = 14
        # leaves 2 rows: the 4-row kernel wastes 2 rows of FMAs, the 14-row one 12)
        row_variants = sorted({MR, -(-MR // 2), -(-MR // 4)} - {0}, reverse=True)
        ukrs = [(r, self.ukernel(r)) for r in row_variants]
        epi = self.epilogue_rows()
        pack_a = self.pack_a()
        pack_b = None if k.packed_b else self.pack_b()
        static_epi = self.ep.activation != "none"
        # R == C (x = x + A @ B in place): C starts as the accumulator and the epilogue gets no R,
        # since the first K block would otherwise overwrite R before the epilogue reads it.
        inplace = ir.Constant(I1, 0)
        if not self.ep.residual_after_activation:
            inplace = b.and_(b.icmp_unsigned("==", b.ptrtoint(R, I64), b.ptrtoint(C, I64)),
                             b.icmp_signed("==", ldr, ldc))
            R = b.select(inplace, ir.Constant(PTR, None), R)
        acc0 = b.zext(inplace, I32)
        need_epi = b.or_(b.icmp_unsigned("!=", b.ptrtoint(bias, I64), i64(0)),
                         b.icmp_unsigned("!=", b.ptrtoint(R, I64), i64(0)))
        if static_epi:
            need_epi = ir.Constant(I1, 1)

        nonempty = b.and_(b.icmp_signed(">", M, i64(0)), b.icmp_signed(">", N, i64(0)))
        ret = fn.append_basic_block("ret")
        work = fn.append_basic_block("work")
        b.cbranch(nonempty, work, ret)
        b.position_at_end(work)

        # A element strides: row i, column k
        rsa, csa = (i64(1), lda) if k.trans_a else (lda, i64(1))
        G = max(cfg.small_m - 1, 1)
        gemv_ok = k.packed_b or not k.trans_b
        small = b.icmp_signed("<=", K, i64(0))
        if gemv_ok:
            small = b.or_(small, b.icmp_signed("<", M, i64(cfg.small_m)))
        gemv_blk = fn.append_basic_block("small_m")
        blocked = fn.append_basic_block("blocked")
        b.cbranch(small, gemv_blk, blocked)

        # ---- small M (or K == 0): rows in groups of up to G, no packing
        b.position_at_end(gemv_blk)
        kernels = [self.gemv_packed(r) if k.packed_b else self.gemv(r) for r in range(1, G + 1)]
        with for_range(b, 0, M, G, "r0") as r0:
            nrows = imin(b, i64(G), b.sub(M, r0))
            a0 = fptr(b, A, b.mul(r0, rsa))
            c0 = fptr(b, C, b.mul(r0, ldc))
            after = fn.append_basic_block("rows.end")
            sw = b.switch(nrows, after)
            for r, kern in enumerate(kernels, start=1):
                blk = fn.append_basic_block(f"rows{r}")
                sw.add_case(i64(r), blk)
                b.position_at_end(blk)
                if k.packed_b:
                    b.call(kern, [a0, rsa, csa, B, c0, ldc, N, K, acc0])
                else:
                    b.call(kern, [a0, rsa, csa, B, ldb, c0, ldc, N, K, acc0])
                b.branch(after)
            b.position_at_end(after)
        with if_then(b, need_epi, "gemv.epi"):
            b.call(epi, [C, ldc, M, N, bias, R, ldr])
        b.branch(ret)

        # ---- blocked path
        b.position_at_end(blocked)
        # ws = [packed B block (unless B comes packed)][packed A block], as in ws_stride
        Bws, Aws = ws, ws
        if not k.packed_b:
            ncb = imin(b, i64(NC), round_up(b, N, NR))
            Aws = fptr(b, ws, round_up(b, b.mul(imin(b, i64(KC), K), ncb), 16))
        # K blocks of equal depth (a multiple of the unroll): K = KC + 76 would otherwise end with a
        # thin block that pays a whole pass over C for little work
        nkb = b.sdiv(b.add(K, i64(KC - 1)), i64(KC))
        kstep = b.sdiv(b.add(K, b.sub(nkb, i64(1))), nkb)
        kstep = imin(b, i64(KC), b.mul(b.sdiv(b.add(kstep, i64(cfg.unroll - 1)), i64(cfg.unroll)),
                                       i64(cfg.unroll)))
        with for_range(b, 0, N, NC, "jc") as jc:
            nc = imin(b, i64(NC), b.sub(N, jc))
            with for_range(b, 0, K, kstep, "pc") as pc:
                kc = imin(b, kstep, b.sub(K, pc))
                if k.packed_b:
                    # panel q of the whole B starts at q*K*NR; its k-th row at + k*NR
                    bbase = fptr(b, B, b.add(b.mul(jc, K), b.mul(pc, i64(NR))))
                    pstride = b.mul(K, i64(NR))
                else:
                    src = fptr(b, B, b.add(b.mul(jc, ldb), pc) if k.trans_b
                               else b.add(b.mul(pc, ldb), jc))
                    b.call(pack_b, [src, ldb, Bws, kc, nc])
                    bbase, pstride = Bws, b.mul(kc, i64(NR))
                accum = b.or_(b.zext(b.icmp_signed(">", pc, i64(0)), I32), acc0)
                last = b.and_(b.icmp_signed(">=", b.add(pc, kc), K), need_epi)
                with for_range(b, 0, M, MC, "ic") as ic:
                    mc = imin(b, i64(MC), b.sub(M, ic))
                    asrc = fptr(b, A, b.add(b.mul(pc, lda), ic) if k.trans_a
                                else b.add(b.mul(ic, lda), pc))
                    b.call(pack_a, [asrc, lda, Aws, mc, kc])
                    with for_range(b, 0, nc, NR, "jr") as jr:
                        bp = fptr(b, bbase, b.mul(b.sdiv(jr, i64(NR)), pstride))
                        with for_range(b, 0, mc, MR, "ir") as ir_:
                            row = b.add(ic, ir_)
                            col = b.add(jc, jr)
                            ct = fptr(b, C, b.add(b.mul(row, ldc), col))
                            m_eff, n_eff = b.sub(mc, ir_), b.sub(nc, jr)
                            uargs = [kc, fptr(b, Aws, b.mul(ir_, kc)), bp, ct, ldc, m_eff, n_eff, accum]
                            self._dispatch_rows(b, m_eff, ukrs, uargs)
                            with if_then(b, last, "tile.epi"):
                                b.call(epi, [ct, ldc, imin(b, m_eff, i64(MR)), imin(b, n_eff, i64(NR)),
                                             keep_null(b, bias, col),
                                             keep_null(b, R, b.add(b.mul(row, ldr), col)), ldr])
        b.branch(ret)
        b.position_at_end(ret)
        b.ret_void()
        return fn

    def _dispatch_rows(self, b, m_eff, ukrs, args):
        """Call the smallest kernel of ``ukrs`` ((rows, fn), rows descending) with rows >= m_eff."""
        fn = b.function
        done = fn.append_basic_block("ukr.done")
        for idx, (rows, kern) in enumerate(ukrs):
            if idx + 1 < len(ukrs):
                nxt_rows = ukrs[idx + 1][0]
                this = fn.append_basic_block(f"ukr{rows}")
                other = fn.append_basic_block(f"ukr{rows}.else")
                b.cbranch(b.icmp_signed(">", m_eff, i64(nxt_rows)), this, other)
                b.position_at_end(this)
                b.call(kern, args)
                b.branch(done)
                b.position_at_end(other)
            else:
                b.call(kern, args)
                b.branch(done)
        b.position_at_end(done)

    def worker(self, serial):
        """``void worker(i64 tid, i64 nthreads, ptr ctx)``: this thread's share of the batch GEMM.
        Batches are split when there are enough of them; else each matrix is split over N (NR
        panels) or M (MR rows), whichever balances better and packs less twice."""
        cfg, k = self.cfg, self.k
        MR, NR = cfg.mr, cfg.nr
        fn, b = function(self.mod, self.p + ".worker", [I64, I64, PTR])
        tid, nth, ctx = fn.args
        names = "A B bias R C M N K lda ldb ldr ldc batch sa sb sr sc ws".split()
        f = {n: threads.load_ctx(b, ctx, i, PTR if n in ("A", "B", "bias", "R", "C", "ws") else I64)
             for i, n in enumerate(names)}
        A, B, bias, R, C = f["A"], f["B"], f["bias"], f["R"], f["C"]
        M, N, K, batch = f["M"], f["N"], f["K"], f["batch"]
        lda, ldb, ldr, ldc = f["lda"], f["ldb"], f["ldr"], f["ldc"]
        ws = fptr(b, align_up(b, f["ws"]), b.mul(tid, self.ws_stride(b, M, N, K)))

        def call(t, m0, m1, n0, n1):
            a = fptr(b, A, b.mul(t, f["sa"]))
            a = fptr(b, a, m0 if k.trans_a else b.mul(m0, lda))
            bb = fptr(b, B, b.mul(t, f["sb"]))
            if k.packed_b:
                bb = fptr(b, bb, b.mul(n0, K))           # n0 is a multiple of NR: whole panels
            else:
                bb = fptr(b, bb, b.mul(n0, ldb) if k.trans_b else n0)
            r = keep_null(b, R, b.add(b.mul(t, f["sr"]), b.add(b.mul(m0, ldr), n0)))
            c = fptr(b, C, b.add(b.mul(t, f["sc"]), b.add(b.mul(m0, ldc), n0)))
            with if_then(b, b.and_(b.icmp_signed("<", m0, m1), b.icmp_signed("<", n0, n1)), "part"):
                b.call(serial, [a, bb, keep_null(b, bias, n0), r, c, b.sub(m1, m0), b.sub(n1, n0), K,
                                lda, ldb, ldr, ldc, ws])

        zero = i64(0)
        by_batch = b.or_(b.icmp_signed("==", nth, i64(1)),
                         b.and_(b.icmp_signed(">=", batch, nth),
                                b.or_(b.icmp_signed("==", b.srem(batch, nth), zero),
                                      b.icmp_signed(">=", batch, b.mul(nth, i64(4))))))
        with b.if_else(by_batch) as (then, other):
            with then:
                t0, t1 = threads.split_range(b, batch, tid, nth)
                with for_range(b, t0, t1, 1, "t") as t:
                    call(t, zero, M, zero, N)
            with other:
                mt = b.sdiv(b.add(M, i64(MR - 1)), i64(MR))
                nt = b.sdiv(b.add(N, i64(NR - 1)), i64(NR))
                cm = b.sdiv(b.add(mt, b.sub(nth, i64(1))), nth)   # tiles per thread, M split
                cn = b.sdiv(b.add(nt, b.sub(nth, i64(1))), nth)   # tiles per thread, N split
                # cost in "pack element" units: a tile costs MR*NR*K*2 flops at ~64 flops/cycle
                tile = b.mul(K, i64(max(MR * NR // 32, 1)))
                cost_m = b.add(b.mul(b.mul(cm, nt), tile), b.mul(b.mul(cm, i64(MR)), K))
                cost_n = b.add(b.mul(b.mul(cn, mt), tile), b.mul(M, K))
                if not k.packed_b:
                    cost_m = b.add(cost_m, b.mul(N, K))           # every thread packs all of B
                    cost_n = b.add(cost_n, b.mul(b.mul(cn, i64(NR)), K))
                split_m = b.and_(b.icmp_signed("<", cost_m, cost_n),
                                 b.icmp_signed(">=", M, i64(cfg.small_m)))
                m0, m1, n0, n1 = split_rows_or_columns(b, split_m, M, N, tid, nth, MR, NR)
                with for_range(b, 0, batch, 1, "t") as t:
                    call(t, m0, m1, n0, n1)
        b.ret_void()
        return fn

    def entry(self):
        k = self.k
        args = [PTR] * 5 + [I64] * 12 + [PTR, I64]
        fn, b = function(self.mod, self.p, args, internal=False)
        names = "A B bias R C M N K lda ldb ldr ldc batch sa sb sr sc ws nthreads".split()
        for a, n in zip(fn.args, names):
            a.name = n
        serial = self.serial()
        worker = self.worker(serial)
        ctx = threads.store_ctx(b, list(fn.args[:18]))
        if k.parallel:
            M, N, K, batch, nth = fn.args[5], fn.args[6], fn.args[7], fn.args[12], fn.args[18]
            flops = b.mul(b.mul(b.mul(M, N), b.mul(imax(b, K, i64(1)), batch)), i64(2))
            nth = b.select(b.icmp_signed("<", flops, i64(self.cfg.parallel_min_flops)), i64(1), nth)
            parts = b.mul(nth, i64(self.cfg.parts_per_thread))
            parts = b.select(b.icmp_signed(">", nth, i64(1)), parts, i64(1))
            threads.launch(b, None, worker, ctx, nth, parts=parts)
        else:
            b.call(worker, [i64(0), i64(1), ctx])
        b.ret_void()
        return fn


# ----------------------------------------------------------------------------- Python API
@dataclass
class PackedB:
    """B packed for a ``packed_b`` kernel: ``data`` is 64-byte aligned, panels ``[q][k][0:nr]``."""
    data: np.ndarray
    k: int
    n: int
    nr: int
    batch: int | None = None      # None: one matrix (broadcast over a batch)

    @functools.cached_property
    def address(self) -> int:
        return self.data.ctypes.data

    @property
    def batch_stride(self) -> int:
        """Elements between packed batch items (the ABI's ``sb``)."""
        return round_up_to(self.n, self.nr) * self.k


def pack_b(b: np.ndarray, nr: int, trans_b: bool = False) -> PackedB:
    """Pack a constant (K, N) or (batch, K, N) float32 B (given as N x K with ``trans_b``) into
    zero-padded NR-column panels, once, at compile time."""
    b = np.asarray(b)
    if b.dtype != np.float32 or b.ndim not in (2, 3):
        raise InputError("pack_b needs a 2-D or 3-D float32 array", input="B",
                         actual=f"{b.dtype} {b.shape}")
    batched = b.ndim == 3
    b3 = b if batched else b[None]
    if trans_b:
        b3 = b3.transpose(0, 2, 1)
    nb, K, N = b3.shape
    Np = round_up_to(N, nr)
    padded = np.zeros((nb, K, Np), np.float32)
    padded[:, :, :N] = b3
    panels = padded.reshape(nb, K, Np // nr, nr).transpose(0, 2, 1, 3)   # (batch, q, k, nr)
    data = aligned_zeros(max(panels.size, 1), np.float32)
    data[:panels.size] = panels.ravel()
    return PackedB(data, K, N, nr, nb if batched else None)


@dataclass(eq=False)
class GemmKernel(NativeKernel):
    """One GEMM variant: tile/blocking, epilogue, operand forms, threading."""
    cache_prefix = "gemm|"
    config: GemmConfig = field(default_factory=GemmConfig.for_host)
    epilogue: Epilogue = field(default_factory=Epilogue)
    packed_b: bool = False
    trans_a: bool = False
    trans_b: bool = False
    parallel: bool = True
    name: str = "irg_gemm"

    @property
    def tag(self) -> str:
        return (f"{self.config.tag}|{self.epilogue.tag}|pb{int(self.packed_b)}ta{int(self.trans_a)}"
                f"tb{int(self.trans_b)}par{int(self.parallel)}")

    def emit(self, mod: ir.Module) -> ir.Function:
        return _GemmEmitter(mod, self).entry()

    def pack_b(self, b: np.ndarray) -> PackedB:
        return pack_b(b, self.config.nr, self.trans_b)

    def workspace_bytes(self, M: int, N: int, K: int, num_threads: int = 1) -> int:
        return workspace_bytes(self.config, M, N, K, num_threads, self.packed_b)

    def build(self, cache=True, target: tuple[str, str] | None = None) -> "CompiledGemm":
        """Compile (``NativeKernel.compile``: cached, or for another CPU) and wrap for numpy."""
        return CompiledGemm(self, self.compile(cache, target))


_VP, _I64 = ctypes.c_void_p, ctypes.c_int64
_CHAR = ctypes.c_char


def _addr(x: np.ndarray) -> int:
    """Data address of an array: ~0.2 us through the buffer protocol where the array exports a
    writable contiguous buffer, else numpy's ctypes attribute (~1 us)."""
    try:
        return ctypes.addressof(_CHAR.from_buffer(x))
    except (TypeError, ValueError, BufferError):
        return x.ctypes.data


class CompiledGemm:
    """``C = epilogue(op(a) @ op(b) [+ bias] [+ residual])`` on float32 numpy arrays.

    ``a``: (M, K) or (batch, M, K) (transposed forms with ``trans_a``); ``b``: (K, N), (batch, K, N)
    or a ``PackedB`` for ``packed_b`` kernels. A 2-D operand broadcasts over the batch. One call at
    a time per object shares a workspace; concurrent calls allocate their own."""

    def __init__(self, kernel: GemmKernel, lib: llvm_target.Library):
        self.kernel = kernel
        self.lib = lib
        self._fn = lib.cfunc(kernel.name, None, *([_VP] * 5 + [_I64] * 12 + [_VP, _I64]))
        self._ws = np.empty(64, np.uint8)
        self._ws_ptr = self._ws.ctypes.data
        self._lock = threading.Lock()
        self.num_threads = threads.default_num_threads()

    @staticmethod
    def _operand(x, name, ndims=(2, 3)):
        if type(x) is not np.ndarray or x.dtype.char != "f":
            if not isinstance(x, np.ndarray) or x.dtype != np.float32:
                raise InputError("GEMM operands must be float32 numpy arrays", input=name,
                                 actual=getattr(x, "dtype", type(x).__name__))
        if x.ndim not in ndims:
            raise InputError("GEMM operand has the wrong rank", input=name,
                             expected=" or ".join(map(str, ndims)), actual=x.ndim)
        st = x.strides
        if st[-1] != 4 or st[0] & 3 or (len(st) == 3 and st[1] & 3):
            x = np.ascontiguousarray(x)
        return x

    def __call__(self, a, b, bias=None, residual=None, out=None, num_threads=None):
        k = self.kernel
        a = self._operand(a, "A")
        sa = a.strides
        if k.trans_a:
            K, M = a.shape[-2:]
        else:
            M, K = a.shape[-2:]
        lda = sa[-2] >> 2
        batch_a = a.shape[0] if a.ndim == 3 else None
        if k.packed_b:
            if not isinstance(b, PackedB) or b.nr != k.config.nr:
                raise InputError("this kernel takes B packed by its pack_b()", input="B",
                                 actual=type(b).__name__)
            Kb, N, batch_b = b.k, b.n, b.batch
            bptr, ldb, sb = b.address, 0, (b.batch_stride if b.batch else 0)
        else:
            b = self._operand(b, "B")
            if k.trans_b:
                N, Kb = b.shape[-2:]
            else:
                Kb, N = b.shape[-2:]
            batch_b = b.shape[0] if b.ndim == 3 else None
            bptr, ldb = _addr(b), b.strides[-2] >> 2
            sb = b.strides[0] >> 2 if b.ndim == 3 else 0
        if Kb != K:
            raise InputError("inner dimensions of A and B differ", input="B", expected=K, actual=Kb)
        if batch_a is not None and batch_b is not None and batch_a != batch_b:
            raise InputError("batch sizes of A and B differ", input="B", expected=batch_a, actual=batch_b)
        batch = batch_a if batch_a is not None else batch_b
        oshape = (M, N) if batch is None else (batch, M, N)
        if batch is None:
            batch = 1
        bias_ptr = res_ptr = ldr = sr = 0
        if bias is not None:
            bias = self._operand(bias, "bias", (1,))
            if bias.shape[0] != N:
                raise InputError("bias must hold one value per output column", input="bias",
                                 expected=(N,), actual=bias.shape)
            bias_ptr = _addr(bias)
        if residual is not None:
            residual = self._operand(residual, "residual")
            if residual.shape[-2:] != (M, N) or (residual.ndim == 3 and residual.shape[0] != batch):
                raise InputError("residual must have the output's shape", input="residual",
                                 expected=oshape, actual=residual.shape)
            ldr = residual.strides[-2] >> 2
            sr = residual.strides[0] >> 2 if residual.ndim == 3 else 0
            res_ptr = _addr(residual)
        if out is None:
            out = np.empty(oshape, np.float32)
        elif (type(out) is not np.ndarray or out.dtype.char != "f" or out.shape != oshape
              or out.strides[-1] != 4 or any(s & 3 for s in out.strides) or not out.flags.writeable):
            raise InputError("out must be a writable float32 array with unit column stride",
                             input="out", expected=oshape, actual=getattr(out, "shape", None))
        ldc = out.strides[-2] >> 2
        sc = out.strides[0] >> 2 if out.ndim == 3 else 0
        if residual is not None and np.may_share_memory(residual, out) and (
                k.epilogue.residual_after_activation or residual.strides != out.strides
                or res_ptr != _addr(out)):
            raise InputError("residual may be the output array itself, but not otherwise overlap it"
                             " (nor alias it when added after the activation)", input="residual")
        nth = self.num_threads if num_threads is None else max(1, int(num_threads))
        need = k.workspace_bytes(M, N, K, nth)
        if self._lock.acquire(blocking=False):
            try:
                if self._ws.size < need:
                    self._ws = np.empty(need, np.uint8)
                    self._ws_ptr = self._ws.ctypes.data
                self._fn(_addr(a), bptr, bias_ptr, res_ptr, _addr(out), M, N, K, lda, ldb,
                         ldr, ldc, batch, sa[0] >> 2 if a.ndim == 3 else 0, sb, sr, sc,
                         self._ws_ptr, nth)
            finally:
                self._lock.release()
        else:   # another thread is using the shared workspace
            ws = np.empty(need, np.uint8)
            self._fn(_addr(a), bptr, bias_ptr, res_ptr, _addr(out), M, N, K, lda, ldb,
                     ldr, ldc, batch, sa[0] >> 2 if a.ndim == 3 else 0, sb, sr, sc, ws.ctypes.data, nth)
        return out
