"""CSR sparse x dense fp32 products as LLVM IR: the kernel behind ``sparse_matmul`` / ``sparse_conv``.

    Y[t, r, p] = bias[r] + sum_{j in row r} values[j] * X[t, indices[j], p]

The sparse operand is a constant weight in CSR form, one row per output channel r (see
``irgraph/ops/sparse.py``); X and Y are dense, addressed through strides so one kernel serves
both layouts the lowering uses (``backends/lower_sparse.py``):

- ``tile`` variant (X's and Y's p stride 1): vectorized over p. Each output row keeps a tile of
  ``tile_vectors`` <L x float> accumulators (L = 16 lanes with AVX-512, 8 with AVX2) twice (even
  and odd entries of the row feed separate FMA chains, so FMA latency is hidden), and every
  entry of the row adds ``value * X[index, p0:p0 + tile]``: one broadcast, ``tile_vectors``
  unaligned loads and FMAs. p tiles are the outer loop, so the X tile (K x tile floats) stays in
  L2 while every row reads it. Then single vectors, then one masked vector. This is the layout
  of "Fast Sparse ConvNets" (Elsen et al., 2019): conv as W (M, C*kh*kw) x im2col (C*kh*kw, P).
- ``gather`` variant (any strides): vectorized over the row's entries; L entries at a time
  gather their X elements (``llvm.masked.gather``) and the lanes are summed at the end. For
  few columns p (a batch-1 linear layer), where the tile variant would use one lane in L.

Work is split across threads (the pool of ``threads.py``) by output rows when there are at least
two per thread, else by L-aligned ranges of p; each output is written by one thread and sums
its entries in a fixed order, so results do not depend on the thread count.

Generated-code ABI (called from ``qgemm``-style ExternCalls, ``backends/lower_sparse.py``)::

    void NAME(ptr indptr, ptr indices, ptr values, ptr bias, ptr X, ptr Y,
              i64 R, i64 P, i64 xk, i64 xp, i64 yr, i64 yp,
              i64 batch, i64 sx, i64 sy, i64 nthreads)

indptr/indices int32, values/bias/X/Y float32, ``bias`` may be NULL; strides in elements.
Gather variant: ``X[t, k, p] = X[t*sx + k*xk + p*xp]``, ``Y[t, r, p] = Y[t*sy + r*yr + p*yp]``.
Tile variant (``yp`` must be 1): p is cut into panels of T = tile_vectors * L columns and
``X[t, k, p] = X[t*sx + (p // T)*xp + k*xk + p % T]`` — packed panels (``xk = T``,
``xp = K*T``) or plain rows (``xp = T``; ``xk`` the row stride, or 1 with ``indices`` holding
row offsets, as the implicit-im2col conv does); ``Y[t, r, p] = Y[t*sy + r*yr + p]``. A last,
partial panel is read and written with masks. Y must not overlap the other operands.

Python API (tests, ``benchmarks/bench_sparse.py``): ``SparseGemmKernel(...).build()`` returns
a ``CompiledSparseGemm`` whose ``rows(csr, X)`` computes ``W @ X`` and ``matmul(x, csr)``
``x @ W.T`` on numpy arrays, where ``csr = CSR.from_dense(W)``.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

import llvmlite.ir as ir
import numpy as np

from irgraph.errors import CompileError, InputError

from . import llvm_target, threads
from .native_kernel import NativeKernel, module_variant
from .vector_ir import F32, I1, I32, I64, PTR, VecOps, function, i64, split_rows_or_columns

# Below this many multiply-adds a call runs on the calling thread: a thread-pool region costs
# about 1-2 us (threads.py), the time of ~10^4 FMAs of this kernel.
PARALLEL_MIN_WORK = 1 << 15

ENTRY_ARGS = [PTR] * 6 + [I64] * 10


@dataclass(frozen=True)
class SparseGemmConfig:
    lanes: int = 16
    tile_vectors: int = 4     # <L x float> per row tile: the panel width T = tile_vectors * lanes
    chains: int = 2           # entries of a row fed round-robin into this many accumulator sets

    def __post_init__(self):
        if self.lanes not in (4, 8, 16):
            raise CompileError(f"sparse GEMM vector width must be 4, 8 or 16 lanes, got {self.lanes}")
        if self.tile_vectors < 1 or self.chains < 1:
            raise CompileError("sparse GEMM tile_vectors and chains must be >= 1")

    @property
    def panel(self) -> int:
        return self.tile_vectors * self.lanes

    @classmethod
    def for_host(cls, **overrides) -> "SparseGemmConfig":
        return cls(lanes=llvm_target.host_cpu().f32_lanes, **overrides)

    @property
    def tag(self) -> str:
        return f"L{self.lanes}u{self.tile_vectors}c{self.chains}"


@dataclass(frozen=True)
class CSR:
    """A float32 CSR matrix of ``shape`` (rows, cols), int32 structure."""
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    shape: tuple

    @classmethod
    def from_dense(cls, w: np.ndarray) -> "CSR":
        from irgraph.ops.sparse import to_csr
        w = np.asarray(w, np.float32)
        ip, ix, v = to_csr(w)
        return cls(ip, ix, np.ascontiguousarray(v, np.float32), w.shape)

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def dense(self) -> np.ndarray:
        from irgraph.ops.sparse import from_csr
        return from_csr(self.indptr, self.indices, self.values, self.shape)


class _Fn:
    """Loops and vectors over one function's IRBuilder; allocas go to the entry block (mem2reg)."""

    def __init__(self, fn: ir.Function, entry: ir.IRBuilder, lanes: int):
        """``entry``: a builder at ``fn``'s (empty) entry block; code goes to a block after it."""
        self.fn = fn
        self.ab = entry
        body = fn.append_basic_block("body")
        self.b = ir.IRBuilder(body)
        self.vo = VecOps(self.b, lanes)
        self.L = lanes
        self.vf = ir.VectorType(F32, lanes)
        self.vi = ir.VectorType(I32, lanes)
        self.vl = ir.VectorType(I64, lanes)
        self.vm = ir.VectorType(I1, lanes)
        self.vp = ir.VectorType(PTR, lanes)
        self.zero = ir.Constant(self.vf, None)
        self.iota = ir.Constant(self.vi, list(range(lanes)))

    def finish(self) -> None:
        self.ab.branch(self.fn.blocks[1])
        self.b.ret_void()

    def var(self, typ, init, name="v"):
        slot = self.ab.alloca(typ, name=name)
        self.b.store(init, slot)
        return slot

    def intr(self, name, ret, args):
        return threads.declare(self.b.module, name, ret, args)

    def loop(self, lo, hi, body, step: int = 1, name: str = "l"):
        """``for i in range(lo, hi, step): body(i)`` (body emits at self.b)."""
        b = self.b
        i = self.var(I64, lo, name + ".i")
        cond = self.fn.append_basic_block(name + ".cond")
        blk = self.fn.append_basic_block(name + ".body")
        done = self.fn.append_basic_block(name + ".done")
        b.branch(cond)
        b.position_at_end(cond)
        iv = b.load(i)
        last = b.add(iv, i64(step - 1)) if step > 1 else iv
        b.cbranch(b.icmp_signed("<", last, hi), blk, done)
        b.position_at_end(blk)
        body(iv)
        b.store(b.add(b.load(i), i64(step)), i)
        b.branch(cond)
        b.position_at_end(done)
        return i            # after the loop: the first index not run

    def if_(self, cond, then, name: str = "if"):
        b = self.b
        blk = self.fn.append_basic_block(name + ".then")
        done = self.fn.append_basic_block(name + ".done")
        b.cbranch(cond, blk, done)
        b.position_at_end(blk)
        then()
        b.branch(done)
        b.position_at_end(done)

    # -- vectors --
    def splat(self, x, vt=None):
        return self.vo.splat_as(x, vt or self.vf)

    def mask(self, count):
        """Lanes < count (an i64 already in [0, L]: no clamping, unlike ``VecOps.mask``)."""
        return self.b.icmp_signed("<", self.iota, self.splat(self.b.trunc(count, I32), self.vi))

    def at(self, p, off, typ=F32):
        return self.b.gep(p, [off], inbounds=True, source_etype=typ)

    def load(self, p, vt=None):
        return self.b.load(p, typ=vt or self.vf, align=4)

    def mload(self, p, mask, vt=None):
        return self.vo.masked_load(p, mask, vt or self.vf)

    def mstore(self, v, p, mask):
        self.vo.mstore(v, p, mask)

    def gather(self, ptrs, mask):
        f = self.intr(f"llvm.masked.gather.v{self.L}f32.v{self.L}p0", self.vf, [self.vp, I32, self.vm, self.vf])
        return self.b.call(f, [ptrs, ir.Constant(I32, 4), mask, self.zero])

    def fma(self, a, x, c):
        return self.vo.fma(a, x, c)

    def hsum(self, v):
        """Sum of the lanes, as a tree of halvings (a fixed order)."""
        b, n = self.b, self.L
        while n > 1:
            n //= 2
            idx = [i + n if i < n else i for i in range(self.L)]
            v = b.fadd(v, b.shuffle_vector(v, ir.Constant(self.vf, ir.Undefined), ir.Constant(self.vi, idx)))
        return b.extract_element(v, ir.Constant(I32, 0))


@dataclass(eq=False)
class SparseGemmKernel(NativeKernel):
    """One variant: ``gather`` (vectorized over entries) or the p-tiled one; threaded or not."""
    cache_prefix = "spmm|"
    config: SparseGemmConfig = field(default_factory=SparseGemmConfig.for_host)
    gather: bool = False
    parallel: bool = True
    name: str = "irg_spmm"

    @property
    def tag(self) -> str:
        return f"{self.config.tag}|g{int(self.gather)}|par{int(self.parallel)}"

    def emit(self, mod: ir.Module) -> ir.Function:
        return _Emitter(mod, self).entry()

    def build(self, cache=True, target: tuple[str, str] | None = None) -> "CompiledSparseGemm":
        """Compile (``NativeKernel.compile``: cached, or for another CPU) and wrap for numpy."""
        return CompiledSparseGemm(self, self.compile(cache, target))


class _Emitter:
    def __init__(self, mod: ir.Module, k: SparseGemmKernel):
        self.mod, self.k, self.cfg = mod, k, k.config
        self.L = self.cfg.lanes

    def entry(self) -> ir.Function:
        k = self.k
        body = self.body_fn()
        worker = self.worker_fn(body)
        f = _Fn(*function(self.mod, k.name, ENTRY_ARGS, internal=False), self.L)
        fn = f.fn
        b = f.b
        a = list(fn.args)
        ctx = threads.store_ctx(b, a[:15])
        if k.parallel:
            R, P, batch, nth = a[6], a[7], a[12], a[15]
            nnz = b.sext(b.load(f.at(a[0], R, I32), typ=I32), I64)
            work = b.mul(b.mul(nnz, P), batch)
            nth = b.select(b.icmp_signed("<", work, i64(PARALLEL_MIN_WORK)), i64(1), nth)
            threads.launch(b, threads.emit_trampoline(self.mod, worker), worker, ctx, nth)
        else:
            b.call(worker, [i64(0), i64(1), ctx])
        f.finish()
        return fn

    def worker_fn(self, body: ir.Function) -> ir.Function:
        """``worker(tid, nthreads, ctx)``: this thread's rows (or p range) of every batch item."""
        f = _Fn(*function(self.mod, self.k.name + ".worker", [I64, I64, PTR]), self.L)
        fn = f.fn
        b = f.b
        tid, nth, ctx = fn.args
        vals = [threads.load_ctx(b, ctx, i, PTR) for i in range(6)] + \
               [threads.load_ctx(b, ctx, i) for i in range(6, 15)]
        R, P = vals[6], vals[7]
        step = self.L if self.k.gather else self.cfg.panel
        by_rows = b.or_(b.icmp_signed(">=", R, b.mul(nth, i64(2))), b.icmp_signed("<=", P, i64(step)))
        rlo, rhi, plo, phi = split_rows_or_columns(b, by_rows, R, P, tid, nth, col_align=step)
        b.call(body, vals[:6] + [rlo, rhi, plo, phi] + vals[8:15])
        f.finish()
        return fn

    def body_fn(self) -> ir.Function:
        args = [PTR] * 6 + [I64] * 4 + [I64] * 7
        f = _Fn(*function(self.mod, self.k.name + ".body", args), self.L)
        fn = f.fn
        for i in range(6):
            fn.args[i].add_attribute("noalias")
        b = f.b
        indptr, indices, values, bias, X, Y, rlo, rhi, plo, phi, xk, xp, yr, yp, batch, sx, sy = fn.args
        # a NULL bias reads a zero through a one-float global with stride 0: no branch per row
        zero = ir.GlobalVariable(self.mod, F32, self.k.name + ".zero")
        zero.linkage, zero.global_constant, zero.initializer = "internal", True, ir.Constant(F32, 0.0)
        null = b.icmp_unsigned("==", b.ptrtoint(bias, I64), i64(0))
        bptr = b.select(null, zero, bias)
        bstride = b.select(null, i64(0), i64(1))

        def row_bias(r):
            return b.load(f.at(bptr, b.mul(r, bstride)), typ=F32)

        def item(t):
            Xt, Yt = f.at(X, b.mul(t, sx)), f.at(Y, b.mul(t, sy))
            ops = (f, indptr, indices, values, row_bias, Xt, Yt, xk, xp, yr, yp)
            if self.k.gather:
                self.gather_rows(*ops, rlo, rhi, plo, phi)
            else:
                self.tile_rows(*ops, rlo, rhi, plo, phi)
        f.loop(i64(0), batch, item, name="t")
        f.finish()
        return fn

    # ---- p-tiled variant -------------------------------------------------------------------------
    def tile_rows(self, f, indptr, indices, values, row_bias, X, Y, xk, xp, yr, yp, rlo, rhi, plo, phi):
        """Panels q of T columns: X panel q is ``X + q*xp`` (K rows of T floats, ``xk`` apart)."""
        b, T = f.b, self.cfg.panel

        def panel(p0):
            Xq = f.at(X, b.mul(b.sdiv(p0, i64(T)), xp))
            width = b.sub(b.select(b.icmp_signed("<", b.add(p0, i64(T)), phi), b.add(p0, i64(T)), phi), p0)
            ops = (f, indptr, indices, values, row_bias, Xq, Y, xk, yr, p0)
            full = b.icmp_signed("==", width, i64(T))
            blk_full = f.fn.append_basic_block("pfull")
            blk_part = f.fn.append_basic_block("ppart")
            done = f.fn.append_basic_block("pdone")
            b.cbranch(full, blk_full, blk_part)
            b.position_at_end(blk_full)
            f.loop(rlo, rhi, lambda r: self.tile(*ops, r, None), name="r")
            b.branch(done)
            b.position_at_end(blk_part)
            f.loop(rlo, rhi, lambda r: self.tile(*ops, r, width), name="rp")
            b.branch(done)
            b.position_at_end(done)
        self._panels(f, plo, phi, panel)

    def _panels(self, f, plo, phi, body):
        """``body(p0)`` for p0 = plo, plo + T, ... < phi (plo is a multiple of T)."""
        b, T = f.b, self.cfg.panel
        i = f.var(I64, plo, "q")
        cond = f.fn.append_basic_block("q.cond")
        blk = f.fn.append_basic_block("q.body")
        done = f.fn.append_basic_block("q.done")
        b.branch(cond)
        b.position_at_end(cond)
        b.cbranch(b.icmp_signed("<", b.load(i), phi), blk, done)
        b.position_at_end(blk)
        body(b.load(i))
        b.store(b.add(b.load(i), i64(T)), i)
        b.branch(cond)
        b.position_at_end(done)

    def tile(self, f, indptr, indices, values, row_bias, X, Y, xk, yr, p0, r, width):
        """Row r of Y over one panel: T columns, or ``width`` (< T) of them when given."""
        b, L, U, J = f.b, self.L, self.cfg.tile_vectors, self.cfg.chains
        start = b.sext(b.load(f.at(indptr, r, I32), typ=I32), I64)
        end = b.sext(b.load(f.at(indptr, b.add(r, i64(1)), I32), typ=I32), I64)
        accs = [[f.var(f.vf, f.splat(row_bias(r)) if c == 0 else f.zero, "acc") for _ in range(U)]
                for c in range(J)]
        # a partial panel reads and writes only its first ``width`` columns (masked): X need not
        # be padded past its last column
        masks = None if width is None else [f.mask(b.sub(width, i64(u * L))) for u in range(U)]

        def add_entry(j, acc):
            k = b.sext(b.load(f.at(indices, j, I32), typ=I32), I64)
            v = f.splat(b.load(f.at(values, j), typ=F32))
            row = f.at(X, b.mul(k, xk))
            for u in range(U):
                ptr = f.at(row, i64(u * L))
                x = f.load(ptr) if masks is None else f.mload(ptr, masks[u])
                b.store(f.fma(v, x, b.load(acc[u])), acc[u])

        def group(j):
            for c in range(J):
                add_entry(b.add(j, i64(c)) if c else j, accs[c])
        after = f.loop(start, end, group, step=J, name="j")
        if J > 1:
            f.loop(b.load(after), end, lambda j: add_entry(j, accs[0]), name="jrest")
        out = f.at(Y, b.add(b.mul(r, yr), p0))
        for u in range(U):
            v = b.load(accs[0][u])
            for c in range(1, J):
                v = b.fadd(v, b.load(accs[c][u]))
            dst = f.at(out, i64(u * L))
            if masks is None:
                b.store(v, dst, align=4)
            else:
                f.mstore(v, dst, masks[u])

    # ---- gather variant ----------------------------------------------------------------------------
    def gather_rows(self, f, indptr, indices, values, row_bias, X, Y, xk, xp, yr, yp, rlo, rhi, plo, phi):
        b, L = f.b, self.L
        xk4 = f.splat(b.mul(xk, i64(4)), f.vl)

        def row(r):
            start = b.sext(b.load(f.at(indptr, r, I32), typ=I32), I64)
            end = b.sext(b.load(f.at(indptr, b.add(r, i64(1)), I32), typ=I32), I64)
            bias = row_bias(r)

            def col(p):
                base = f.splat(b.ptrtoint(f.at(X, b.mul(p, xp)), I64), f.vl)
                acc = f.var(f.vf, f.zero, "gacc")

                def ptrs(idx):
                    return b.inttoptr(b.add(base, b.mul(b.sext(idx, f.vl), xk4)), f.vp)

                def full(j):
                    idx = f.load(f.at(indices, j, I32), f.vi)
                    vals = f.load(f.at(values, j))
                    xg = f.gather(ptrs(idx), ir.Constant(f.vm, [1] * L))
                    b.store(f.fma(vals, xg, b.load(acc)), acc)
                after = f.loop(start, end, full, step=L, name="gj")

                def tail():
                    j = b.load(after)
                    m = f.mask(b.sub(end, j))
                    idx = f.mload(f.at(indices, j, I32), m, f.vi)
                    vals = f.mload(f.at(values, j), m)
                    b.store(f.fma(vals, f.gather(ptrs(idx), m), b.load(acc)), acc)
                f.if_(b.icmp_signed("<", b.load(after), end), tail, name="gtail")
                y = b.fadd(f.hsum(b.load(acc)), bias)
                b.store(y, f.at(Y, b.add(b.mul(r, yr), b.mul(p, yp))))
            f.loop(plo, phi, col, name="gp")
        f.loop(rlo, rhi, row, name="gr")


# ---- numpy wrapper -------------------------------------------------------------------------------
_VP, _I64 = ctypes.c_void_p, ctypes.c_int64


def _f32(x, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise InputError("sparse GEMM operands must be float32 numpy arrays", input=name,
                         actual=getattr(x, "dtype", type(x).__name__))
    return np.ascontiguousarray(x)


class CompiledSparseGemm:
    """The compiled kernel on numpy arrays (contiguous copies are made where needed)."""

    def __init__(self, kernel: SparseGemmKernel, lib):
        self.kernel = kernel
        self.lib = lib
        self._fn = lib.cfunc(kernel.name, None, *([_VP] * 6 + [_I64] * 10))
        self.num_threads = threads.default_num_threads()

    def _check(self, csr: CSR, bias):
        ip = np.ascontiguousarray(csr.indptr, np.int32)
        ix = np.ascontiguousarray(csr.indices, np.int32)
        vals = _f32(csr.values, "values")
        if bias is not None:
            bias = _f32(bias, "bias")
            if bias.shape != (csr.shape[0],):
                raise InputError("bias must hold one value per row", input="bias", expected=(csr.shape[0],),
                                 actual=bias.shape)
        return ip, ix, vals, bias

    def run(self, csr: CSR, X, Y, P, xk, xp, yr, yp, batch=1, sx=0, sy=0, bias=None, num_threads=None):
        """The raw call (strides in elements); X and Y are numpy arrays the strides index."""
        ip, ix, vals, bias = self._check(csr, bias)
        nth = self.num_threads if num_threads is None else max(1, int(num_threads))
        self._fn(ip.ctypes.data, ix.ctypes.data, vals.ctypes.data, 0 if bias is None else bias.ctypes.data,
                 X.ctypes.data, Y.ctypes.data, csr.shape[0], P, xk, xp, yr, yp, batch, sx, sy, nth)
        return Y

    def rows(self, csr: CSR, X, bias=None, num_threads=None) -> np.ndarray:
        """``W @ X (+ bias[:, None])`` for X (K, P) or (batch, K, P): the conv layout."""
        X = _f32(X, "X")
        batched = X.ndim == 3
        X3 = X if batched else X[None]
        nb, K, P = X3.shape
        if K != csr.shape[1]:
            raise InputError("X rows must equal the sparse matrix's columns", input="X", expected=csr.shape[1],
                             actual=K)
        R = csr.shape[0]
        Y = np.empty((nb, R, P), np.float32)
        if self.kernel.gather:
            self.run(csr, X3, Y, P, P, 1, P, 1, nb, K * P, R * P, bias, num_threads)
        else:
            T = self.kernel.config.panel
            Xp = pack_panels(X3, T)
            self.run(csr, Xp, Y, P, T, K * T, P, 1, nb, Xp[0].size, R * P, bias, num_threads)
        return Y if batched else Y[0]

    def matmul(self, x, csr: CSR, bias=None, num_threads=None) -> np.ndarray:
        """``x @ W.T (+ bias)`` for x (M, K): the linear-layer layout (row-major x and y)."""
        x = _f32(x, "x")
        M, K = x.shape
        if K != csr.shape[1]:
            raise InputError("x's columns must equal the sparse matrix's columns", input="x",
                             expected=csr.shape[1], actual=K)
        R = csr.shape[0]
        if self.kernel.gather:
            Y = np.empty((M, R), np.float32)
            return self.run(csr, x, Y, M, 1, K, 1, R, bias=bias, num_threads=num_threads)
        return self.rows(csr, x.T, bias, num_threads).T


def pack_panels(X: np.ndarray, T: int) -> np.ndarray:
    """(batch, K, P) -> (batch, ceil(P / T), K, T): the tile variant's X, zero-padded."""
    nb, K, P = X.shape
    Q = -(-P // T)
    out = np.zeros((nb, K, Q * T), np.float32)
    out[:, :, :P] = X
    return np.ascontiguousarray(out.reshape(nb, K, Q, T).transpose(0, 2, 1, 3))


# ---- the ``spmm`` template of the CPU code generator ------------------------------------------------
# ExternCall("spmm") arguments: buffers [indptr, indices, values, bias | None, X, Y], each with an
# element offset in attrs["offsets"]; attrs R, P, xk, xp, yr, yp, batch, sx, sy (elements) and the
# variant: gather, tile_vectors, chains. Made by backends/lower_sparse.py.

def kernel_for(mg, gather: bool, tile_vectors: int, chains: int) -> ir.Function:
    """The module's sparse GEMM variant, emitted on first use."""
    def make():
        cfg = SparseGemmConfig.for_host(tile_vectors=tile_vectors, chains=chains)
        k = SparseGemmKernel(cfg, gather=gather, parallel=mg.num_threads > 1)
        return k, f"irg_spmm_{int(gather)}_{tile_vectors}_{chains}"
    return module_variant(mg, "_spmms", (bool(gather), int(tile_vectors), int(chains)), make)


def emit_call(gen, s) -> None:
    from .codegen import extern_ptr
    a = s.attrs
    fn = kernel_for(gen.mg, a["gather"], a["tile_vectors"], a["chains"])
    b = gen.b
    ptrs = [extern_ptr(gen, x, o) for x, o in zip(s.args, a["offsets"])]
    ints = [i64(a[k]) for k in ("R", "P", "xk", "xp", "yr", "yp", "batch", "sx", "sy")]
    b.call(fn, ptrs + ints + [i64(gen.mg.num_threads)])


def install() -> None:
    """Route ``spmm`` ExternCalls of the CPU code generator here (idempotent)."""
    from . import codegen
    codegen.register_extern("spmm", emit_call)
