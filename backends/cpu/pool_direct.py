"""2-D max pooling over float32 NCHW as LLVM IR with explicit vector types.

The generic loop nest (backends/lower_contract.py) evaluates every tap of every output with a
bounds check and a clamped scalar load: 3.5x onnxruntime's time on ResNet-18's 3x3/2 pool. Here
one vector holds L outputs of a row:

- the KH input rows of the window are combined first (vertical max of contiguous vector loads,
  masked loads returning -inf outside the image, so padding needs no copy and no branch);
- the KW taps are then lane shuffles of those column maxima (for stride 2 the even lanes of
  two shifted vectors), one max each.

NaN propagates as in the reference (``llvm.maximum``). Threads split the N*C planes.

ABI: ``void NAME(ptr x, ptr out, i64 nthreads)``, shapes fixed at generation.
"""
from __future__ import annotations

from dataclasses import dataclass

import llvmlite.ir as ir
import numpy as np

from irgraph.errors import CompileError

from . import threads
from .native_kernel import NativeKernel
from .vector_ir import F32, I32, I64, PTR, VecOps, for_range, fptr, function, i64


@dataclass(frozen=True)
class PoolGeometry:
    planes: int          # N * C
    h: int
    w: int
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

    def __post_init__(self):
        if min(self.planes, self.h, self.w, self.kh, self.kw, self.oh, self.ow, self.sh, self.dh, self.dw) < 1:
            raise CompileError(f"max pool needs positive sizes, got {self}")
        if self.sw not in (1, 2):
            raise CompileError(f"vector max pool supports column strides 1 and 2, got {self.sw}")


@dataclass(eq=False)
class MaxPool2d(NativeKernel):
    geom: PoolGeometry
    lanes: int = 16
    parallel: bool = True
    name: str = "irg_maxpool"
    parallel_min_outputs: int = 1 << 14

    @property
    def tag(self) -> str:
        return f"maxpool|{self.geom}|l{self.lanes}|p{int(self.parallel)}"

    def emit(self, mod: ir.Module) -> ir.Function:
        g, L = self.geom, self.lanes
        # column span read per output vector: (L-1)*sw + (KW-1)*dw + 1 values, in whole vectors
        span = (L - 1) * g.sw + (g.kw - 1) * g.dw + 1
        nchunk = -(-span // L)
        fn, b = function(mod, self.name + ".rows", [PTR, PTR, I64, I64], noinline=True)
        x, out, p0, p1 = fn.args
        vo = VecOps(b, L)
        vf = vo.vf
        ninf = vo.const(-np.inf)
        maximum = threads.declare(mod, f"llvm.maximum.v{L}f32", vf, [vf, vf])

        def vmax(a, c):
            return b.call(maximum, [a, c])

        wide = ir.VectorType(F32, 2 * L)
        with for_range(b, p0, p1, 1, "p") as p:
            xp = fptr(b, x, b.mul(p, i64(g.h * g.w)))
            op = fptr(b, out, b.mul(p, i64(g.oh * g.ow)))
            with for_range(b, 0, g.oh, 1, "oh") as oh:
                r0 = b.sub(b.mul(oh, i64(g.sh)), i64(g.pt))
                rows = []
                for k in range(g.kh):
                    r = b.add(r0, i64(k * g.dh))
                    ok = b.and_(b.icmp_signed(">=", r, i64(0)), b.icmp_signed("<", r, i64(g.h)))
                    rows.append((ok, fptr(b, xp, b.mul(r, i64(g.w)))))
                orow = fptr(b, op, b.mul(oh, i64(g.ow)))
                with for_range(b, 0, g.ow, L, "ow") as j0:
                    base = b.sub(b.mul(j0, i64(g.sw)), i64(g.pl))
                    chunks = []
                    for c in range(nchunk):
                        t = b.add(vo.iota, vo.splat_i32(b.add(base, i64(c * L))))
                        inside = b.and_(b.icmp_signed(">=", t, ir.Constant(vo.vi, [0] * L)),
                                        b.icmp_signed("<", t, ir.Constant(vo.vi, [g.w] * L)))
                        acc = None
                        for ok, rp in rows:
                            v = vo.mload(fptr(b, rp, b.add(base, i64(c * L))), b.select(ok, inside, vo.none), ninf)
                            acc = v if acc is None else vmax(acc, v)
                        chunks.append(acc)
                    while len(chunks) % 2:
                        chunks.append(ninf)
                    pairs = [b.shuffle_vector(chunks[i], chunks[i + 1], ir.Constant(ir.VectorType(I32, 2 * L), list(range(2 * L))))
                             for i in range(0, len(chunks), 2)]
                    res = None
                    for t in range(g.kw):
                        idx = [t * g.dw + j * g.sw for j in range(L)]
                        lo_pair = idx[0] // (2 * L)
                        hi_pair = idx[-1] // (2 * L)
                        if lo_pair == hi_pair:
                            v = b.shuffle_vector(pairs[lo_pair], ir.Constant(wide, ir.Undefined),
                                                 ir.Constant(vo.vi, [i - 2 * L * lo_pair for i in idx]))
                        else:
                            v = b.shuffle_vector(pairs[lo_pair], pairs[hi_pair],
                                                 ir.Constant(vo.vi, [i - 2 * L * lo_pair for i in idx]))
                        res = v if res is None else vmax(res, v)
                    vo.mstore(res, fptr(b, orow, j0), vo.mask(b.sub(i64(g.ow), j0)))
        b.ret_void()

        worker, wb = function(mod, self.name + ".worker", [I64, I64, PTR])
        tid, nth, ctx = worker.args
        lo, hi = threads.split_range(wb, i64(g.planes), tid, nth)
        wb.call(fn, [threads.load_ctx(wb, ctx, 0, PTR), threads.load_ctx(wb, ctx, 1, PTR), lo, hi])
        wb.ret_void()
        entry, eb = function(mod, self.name, [PTR, PTR, I64], internal=False)
        ctx = threads.store_ctx(eb, list(entry.args[:2]))
        if self.parallel and g.planes > 1 and g.planes * g.oh * g.ow >= self.parallel_min_outputs:
            nth = entry.args[2]
            threads.launch(eb, None, worker, ctx, nth, parts=eb.mul(nth, i64(threads.PARTS_PER_THREAD)))
        else:
            eb.call(worker, [i64(0), i64(1), ctx])
        eb.ret_void()
        return entry

    def build(self, cache=True, target: tuple[str, str] | None = None) -> "CompiledMaxPool":
        """Compile (``NativeKernel.compile``: cached, or for another CPU) and wrap for numpy."""
        return CompiledMaxPool(self, self.compile(cache, target))


class CompiledMaxPool:
    """``f(x, num_threads=1) -> out`` on float32 numpy arrays (tests, benchmarks)."""

    def __init__(self, kernel: MaxPool2d, lib):
        import ctypes
        self.kernel, self.lib = kernel, lib
        self._fn = lib.cfunc(kernel.name, None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)

    def __call__(self, x, num_threads: int = 1) -> np.ndarray:
        g = self.kernel.geom
        x = np.ascontiguousarray(x, np.float32)
        assert x.size == g.planes * g.h * g.w
        out = np.empty(x.shape[:-2] + (g.oh, g.ow), np.float32)
        self._fn(x.ctypes.data, out.ctypes.data, num_threads)
        return out


def lower(ctx, x, plan, kernel, dest, num_threads: int, lanes: int) -> bool:
    """Append ``ExternCall("maxpool2d", [x, out])`` for a 2-D float32 max pool; False when the
    geometry is not one this kernel handles."""
    from irgraph import dtype as dt

    from ..kernel_ir import ExternCall
    from .extern_operands import copy_back, dense_input, dense_output
    if len(kernel) != 2 or x.rank != 4 or x.dtype is not dt.float32 or plan.strides[1] not in (1, 2):
        return False
    xv = dense_input(ctx, x)
    out = dense_output(ctx, dest, "poolout")
    n, c, h, w = x.shape
    attrs = dict(planes=n * c, h=h, w=w, kh=kernel[0], kw=kernel[1], oh=plan.out[0], ow=plan.out[1],
                 sh=plan.strides[0], sw=plan.strides[1], dh=plan.dilations[0], dw=plan.dilations[1],
                 pt=plan.pads_begin[0], pl=plan.pads_begin[1], lanes=lanes, x_off=xv.offset, out_off=out.offset)
    ctx.body.append(ExternCall("maxpool2d", [xv.buf, out.buf], attrs))
    copy_back(ctx, out, dest)
    return True


def kernel_from_attrs(a: dict, num_threads: int) -> MaxPool2d:
    g = PoolGeometry(**{k: int(a[k]) for k in ("planes", "h", "w", "kh", "kw", "oh", "ow", "sh", "sw",
                                                "dh", "dw", "pt", "pl")})
    return MaxPool2d(g, lanes=int(a["lanes"]), parallel=num_threads > 1)
