"""Materialized transposes of 4-byte elements: L x L blocks moved through registers.

``dst[t][b][a] = src[t][a][b]`` (``t`` a batch, ``a`` < NA, ``b`` < NB, both multiples of the
vector width L): per block, L vector loads of source rows (contiguous along ``b``), the
in-register transpose of ``VecOps.transpose`` (log2 L rounds of shuffles), L vector stores of
destination rows (contiguous along ``a``). The generic loop nest for the same copy reads or
writes one element per lane at a stride of a whole row: 1024 x 1024 float32 took 4.1 ms on Zen 5
(2 GB/s; numpy's own copy is as slow: each 4 KiB-strided line is evicted before its next use),
2.5 ms as 16 x 16 tiled loops (LLVM turns them into scatters); see ``tests/backends/cpu``.

Lowering (``backends/lower.py``, ``LowerCtx.store``) emits ``ExternCall("transpose2d", [src,
dst], {...})`` when the backend's templates offer it (``CpuTemplates.transpose2d``) and the copy
has that shape after coalescing; the bits are moved, not converted, so float32, int32 and uint32
all take it. Threads: parts of the (batch, column block) items, claimed from the pool.

ABI: ``void irg_transpose(ptr src, ptr dst, i64 nb, i64 na, i64 lds, i64 ldd, i64 batch,
i64 sbs, i64 sbd, i64 nthreads)``; strides in elements.
"""
from __future__ import annotations

from dataclasses import dataclass

import llvmlite.ir as ir

from . import threads
from .native_kernel import NativeKernel
from .vector_ir import F32, I64, PTR, VecOps, for_range, function, i64

ITEMSIZE = 4


@dataclass(eq=False)
class TransposeKernel(NativeKernel):
    lanes: int = 16
    parallel: bool = True
    name: str = "irg_transpose"

    @property
    def tag(self) -> str:
        return f"transpose|l{self.lanes}|p{int(self.parallel)}"

    def emit(self, mod: ir.Module) -> ir.Function:
        L = self.lanes
        worker, b = function(mod, self.name + ".part", [I64, I64, PTR])
        part, nparts, ctx = worker.args
        src, dst = (threads.load_ctx(b, ctx, i, PTR) for i in range(2))
        nb, na, lds, ldd, sbs, sbd, items = (threads.load_ctx(b, ctx, i) for i in range(2, 9))
        nbb = b.sdiv(nb, i64(L))
        i0, i1 = threads.split_range(b, items, part, nparts)
        v = VecOps(b, L)
        with for_range(b, i0, i1, 1, "it") as it:
            t, bb = b.sdiv(it, nbb), b.srem(it, nbb)
            col = b.mul(bb, i64(L))
            s0 = b.add(b.mul(t, sbs), col)                       # src[t][0][b0]
            d0 = b.add(b.mul(t, sbd), b.mul(col, ldd))           # dst[t][b0][0]
            with for_range(b, i64(0), b.sdiv(na, i64(L)), 1, "ab") as ab:
                a0 = b.mul(ab, i64(L))
                rows = []
                for i in range(L):
                    off = b.add(s0, b.mul(b.add(a0, i64(i)), lds))
                    rows.append(v.load(b.gep(src, [off], inbounds=True, source_etype=F32)))
                cols = v.transpose(rows)
                for i in range(L):
                    off = b.add(b.add(d0, b.mul(i64(i), ldd)), a0)
                    v.store(cols[i], b.gep(dst, [off], inbounds=True, source_etype=F32))
        b.ret_void()

        fn, b = function(mod, self.name, [PTR, PTR] + [I64] * 8, internal=False)
        src, dst, nb, na, lds, ldd, batch, sbs, sbd, nthreads = fn.args
        items = b.mul(batch, b.sdiv(nb, i64(L)))
        ctx = threads.store_ctx(b, [src, dst, nb, na, lds, ldd, sbs, sbd, items])
        if self.parallel:
            per = b.mul(nthreads, i64(threads.PARTS_PER_THREAD))
            parts = b.select(b.icmp_signed("<", items, per), items, per)
            threads.launch(b, None, worker, ctx, nthreads, parts=parts)
        else:
            b.call(worker, [i64(0), i64(1), ctx])
        b.ret_void()
        return fn


def plan(t, dest, lanes: int) -> dict | None:
    """The ``transpose2d`` attrs for storing view ``t`` into ``dest`` (both coalesced), or None
    when the copy is not a blocked transpose of 4-byte elements: the last axis read with a row
    stride and written contiguously, the axis before it read contiguously, both multiples of
    ``lanes``, at most one more (batch) axis."""
    from ..lower_tensor import View
    if not isinstance(t, View) or not isinstance(dest, View) or t.dtype.itemsize != ITEMSIZE:
        return None
    if t.dtype is not dest.dtype or not 2 <= len(t.shape) <= 3:
        return None
    na, nb = t.shape[-1], t.shape[-2]
    if na % lanes or nb % lanes or t.strides[-2] != 1 or dest.strides[-1] != 1:
        return None
    lds, ldd = t.strides[-1], dest.strides[-2]
    if lds < lanes or ldd < na:
        return None
    batch = t.shape[0] if len(t.shape) == 3 else 1
    return {"nb": nb, "na": na, "lds": lds, "ldd": ldd, "batch": batch,
            "sbs": t.strides[0] if batch > 1 else 0, "sbd": dest.strides[0] if batch > 1 else 0,
            "src_off": t.offset, "dst_off": dest.offset}
