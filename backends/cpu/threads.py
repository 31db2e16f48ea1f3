"""Parallel regions in generated code through libgomp's ``GOMP_parallel``.

A parallel op is written once as an outlined worker ``void worker(i64 tid, i64 nthreads, ptr ctx)``
that picks its own slice of the iteration space; ``ctx`` points at the op's arguments stored as an
i64 array (pointers as integers), which is what a closure struct would hold. Launching it costs
about 1-2 us a region with libgomp's thread pool, against ~115 us for Python threads and 30-50 us
for pthread_create/join (measured in shared/reference/llvm-cpu/README.md), so the threading is done
in generated code and the caller crosses into native code once.

    worker = ir.Function(mod, WORKER_TYPE, "op.worker")          # body written by the op
    tramp = emit_trampoline(mod, worker)                         # void tramp(ptr ctx)
    ctx = store_ctx(b, [a_ptr, n, ...])                          # in the launching function
    launch(b, tramp, worker, ctx, nthreads)                      # serial when nthreads <= 1

Code that calls ``launch`` needs libgomp loaded before it is JIT-compiled or its object code is
loaded (``llvm_target.load_gomp()``; ``cache.compile_cached`` does it when the IR mentions GOMP).

Pitfall (README, pitfall 10): libgomp's idle workers spin for a while after a region. A process
that alternates between our regions and another runtime's pool (numpy's OpenBLAS) on the same cores
loses time to both spinning; use one runtime per process for hot loops.
"""
from __future__ import annotations

import os

import llvmlite.ir as ir

I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()

WORKER_TYPE = ir.FunctionType(VOID, [I64, I64, PTR])


def default_num_threads() -> int:
    """Cores this process may run on (the affinity mask, not the machine's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def declare(mod: ir.Module, name: str, ret: ir.Type, args: list) -> ir.Function:
    """The function ``name`` of ``mod``, declared with the given type if it is not there yet."""
    try:
        return mod.get_global(name)
    except KeyError:
        return ir.Function(mod, ir.FunctionType(ret, args), name)


def emit_trampoline(mod: ir.Module, worker: ir.Function) -> ir.Function:
    """``void <worker>.omp_fn(ptr ctx)``, the function libgomp runs on each thread: it calls
    ``worker(omp_get_thread_num(), omp_get_num_threads(), ctx)``."""
    name = worker.name + ".omp_fn"
    try:
        return mod.get_global(name)
    except KeyError:
        pass
    tnum = declare(mod, "omp_get_thread_num", I32, [])
    tcnt = declare(mod, "omp_get_num_threads", I32, [])
    fn = ir.Function(mod, ir.FunctionType(VOID, [PTR]), name)
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    tid = b.sext(b.call(tnum, []), I64)
    cnt = b.sext(b.call(tcnt, []), I64)
    b.call(worker, [tid, cnt, fn.args[0]])
    b.ret_void()
    return fn


def store_ctx(b: ir.IRBuilder, values: list) -> ir.Value:
    """An i64 array on the stack holding ``values`` (pointers stored as integers); returns its address.

    A flat ``alloca i64, n`` plus single-index GEPs: llvmlite's typed allocas mis-type struct GEPs
    once the pointer is treated as opaque (README pitfall 4).
    """
    ctx = b.alloca(I64, size=I64(len(values)), name="ctx")
    for i, v in enumerate(values):
        if isinstance(v.type, ir.PointerType):
            v = b.ptrtoint(v, I64)
        elif v.type != I64:
            v = b.sext(v, I64)
        b.store(v, b.gep(ctx, [I64(i)], inbounds=True, source_etype=I64))
    return b.bitcast(ctx, PTR)


def load_ctx(b: ir.IRBuilder, ctx: ir.Value, index: int, typ: ir.Type = I64) -> ir.Value:
    """Field ``index`` of a context stored by ``store_ctx``, as ``typ`` (a pointer or i64)."""
    v = b.load(b.gep(ctx, [I64(index)], inbounds=True, source_etype=I64), typ=I64)
    return b.inttoptr(v, typ) if isinstance(typ, ir.PointerType) else v


def launch(b: ir.IRBuilder, tramp: ir.Function, worker: ir.Function, ctx: ir.Value,
           nthreads: ir.Value) -> None:
    """Run ``worker`` on ``nthreads`` threads (the calling thread is thread 0); directly when <= 1.

    ``GOMP_parallel(fn, data, num_threads, flags)`` returns after every thread finished, so the
    context on the caller's stack outlives the region.
    """
    mod = b.module
    gomp = declare(mod, "GOMP_parallel", VOID, [PTR, PTR, I32, I32])
    fn = b.function
    par = fn.append_basic_block("par")
    ser = fn.append_basic_block("ser")
    done = fn.append_basic_block("par.done")
    b.cbranch(b.icmp_signed(">", nthreads, I64(1)), par, ser)
    b.position_at_end(par)
    b.call(gomp, [tramp, ctx, b.trunc(nthreads, I32), I32(0)])
    b.branch(done)
    b.position_at_end(ser)
    b.call(worker, [I64(0), I64(1), ctx])
    b.branch(done)
    b.position_at_end(done)


def split_range(b: ir.IRBuilder, n: ir.Value, tid: ir.Value, nthreads: ir.Value,
                align: int = 1) -> tuple[ir.Value, ir.Value]:
    """``[lo, hi)`` of thread ``tid`` when ``[0, n)`` is cut into ``nthreads`` chunks of a multiple
    of ``align`` (the last chunks may be short or empty)."""
    per = b.sdiv(b.add(n, b.sub(nthreads, I64(1))), nthreads)
    if align > 1:
        per = b.mul(b.sdiv(b.add(per, I64(align - 1)), I64(align)), I64(align))
    lo = b.mul(tid, per)
    lo = b.select(b.icmp_signed("<", lo, n), lo, n)
    hi = b.add(lo, per)
    hi = b.select(b.icmp_signed("<", hi, n), hi, n)
    return lo, hi
