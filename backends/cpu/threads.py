"""Parallel regions in generated code: a thread pool of our own, driven from native code.

A parallel op is written once as an outlined worker ``void worker(i64 i, i64 n, ptr ctx)`` that
does part ``i`` of ``n`` of the iteration space; ``ctx`` points at the op's arguments stored as
an i64 array (pointers as integers), which is what a closure struct would hold.

    worker = ir.Function(mod, WORKER_TYPE, "op.worker")          # body written by the op
    ctx = store_ctx(b, [a_ptr, n, ...])                          # in the launching function
    launch(b, None, worker, ctx, nparts)                         # serial when nparts <= 1

``launch`` calls ``irg_parallel(worker, ctx, n)`` (built here once per process, see ``pool_ir``):
the calling thread and the pool's workers *claim* parts with an atomic compare-and-swap until
none is left, and the call returns when every claimed part is done. So a part may run on any
thread, several parts on one thread, and all of them on the caller when the workers are busy
elsewhere; a worker that is not running holds nobody up. With libgomp (``GOMP_parallel``, the
previous launcher) each region waited for every team thread to arrive: on a 2-core machine
shared with other processes, ResNet-18 at 2 threads ran 5x slower than onnxruntime (whose pool
lets the caller take unclaimed work) while at 1 thread it matched it. Parts must therefore not
wait for each other (no barriers inside a worker) and must not assume distinct threads;
per-part scratch is indexed by the part number.

Idle workers spin (``pause``) for about ``SPIN_ITERS`` polls (~40 ms) after a region, then sleep
on a futex; the caller wakes sleepers when it publishes a region and starts on the parts itself.
A region cost ~1 us with spinning workers, like libgomp's. One region runs at a time per
process; a region started while another is running (two Python threads calling models) runs
serially on its caller. Workers are created on the first region that asks for them and never
exit (the process' end stops them).
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
    """Kept for callers written for libgomp: the pool calls ``worker`` itself, so this is it."""
    return worker


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


def launch(b: ir.IRBuilder, tramp, worker: ir.Function, ctx: ir.Value, nthreads: ir.Value,
           parts: ir.Value | None = None) -> None:
    """Run ``worker(i, n, ctx)`` for the i < n = ``parts`` parts (default: ``nthreads``) on at most
    ``nthreads`` threads of the pool (directly when nthreads <= 1). More parts than threads let a
    thread that runs at full speed take over the share of one slowed by another process. ``tramp``
    is ignored (see ``emit_trampoline``). Registers the pool with the JIT, so modules built after
    this can be compiled or loaded."""
    ensure_pool()
    par = declare(b.module, POOL_SYMBOL, VOID, [PTR, PTR, I64, I64])
    whole = parts is None                   # serially: one part covering everything
    parts = nthreads if parts is None else parts
    fn = b.function
    go = fn.append_basic_block("par")
    ser = fn.append_basic_block("ser")
    done = fn.append_basic_block("par.done")
    b.cbranch(b.icmp_signed(">", nthreads, I64(1)), go, ser)
    b.position_at_end(go)
    b.call(par, [worker, ctx, parts, nthreads])
    b.branch(done)
    b.position_at_end(ser)
    if whole:
        b.call(worker, [I64(0), I64(1), ctx])
    else:
        with _for(b, parts) as i:
            b.call(worker, [i, parts, ctx])
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


# ---- the pool ------------------------------------------------------------------------------------
POOL_SYMBOL = "irg_parallel"
# Parts per thread for loops that split evenly: a thread slowed by another process (a competing
# runtime's spinning pool, a test run) then costs the region a fraction of a part, not half of it.
PARTS_PER_THREAD = 4
# Polls (each a `pause`, 30-45 ns on Zen 5) before an idle worker sleeps on the futex: ~40 ms,
# onnxruntime's default too; ``$IRGRAPH_POOL_SPIN`` (polls) overrides it per process. On this
# 2-vCPU VM an idle vCPU is slow to come back: ResNet-18 at 2 threads took 10 ms when called
# again within ~60 ms but 18 ms (the 1-thread time) after 250 ms of idle with 5 ms of spinning
# (onnxruntime without spinning: 19 ms); 0.1 ms of spinning already lost it after 60 ms (15 ms).
SPIN_ITERS = 1 << 20
MAX_WORKERS = 63
# slots of the pool's state (i64 each), hot ones on their own 64-byte lines
_GEN, _STATE, _DONE, _FN, _CTX, _N, _NT, _SLEEP, _BUSY, _STARTED, _SEATS = 0, 8, 16, 24, 25, 26, 27, 32, 40, 48, 56
_SYS_FUTEX, _FUTEX_WAIT, _FUTEX_WAKE = 202, 128, 129      # x86-64 Linux; *_PRIVATE ops

_pool = None


def spin_iters() -> int:
    """``$IRGRAPH_POOL_SPIN`` when set (a count of polls, 0 = sleep at once), else SPIN_ITERS."""
    try:
        return max(0, int(os.environ.get("IRGRAPH_POOL_SPIN", SPIN_ITERS)))
    except ValueError:
        return SPIN_ITERS


def pool_ir() -> str:
    """LLVM IR of ``void irg_parallel(ptr worker, ptr ctx, i64 parts, i64 nthreads)`` and its
    worker threads (a region takes at most nthreads - 1 of them: the first to take a seat).

    State: ``gen`` (u32, futex word) counts regions; ``state`` = gen << 32 | next part, claimed by
    CAS so a claim can never land in a later region; ``done`` counts finished parts. The caller
    publishes worker/ctx/n, then ``state``, then ``gen`` (release) and wakes sleepers; everyone
    claims parts; the caller waits for ``done == n``. A worker reads worker/ctx/n only after a
    successful claim, when the region cannot change under it."""
    from .vector_ir import function as _function
    mod = ir.Module(name="irg_pool")
    slots = ir.GlobalVariable(mod, ir.ArrayType(I64, 64), "irg_pool_state")
    slots.linkage = "internal"
    slots.initializer = ir.Constant(ir.ArrayType(I64, 64), None)
    slots.align = 64
    seq, acq, rel = "seq_cst", "acquire", "release"
    pause = declare(mod, "llvm.x86.sse2.pause", VOID, [])
    syscall = ir.Function(mod, ir.FunctionType(I64, [I64], var_arg=True), "syscall")
    pcreate = declare(mod, "pthread_create", I32, [PTR, PTR, PTR, PTR])
    yield_ = declare(mod, "sched_yield", I32, [])

    def slot(b, k):
        return b.gep(slots, [I64(0), I64(k)], inbounds=True)

    # run_parts(i32 gen): claim and run parts of region gen until none is left
    run, b = _function(mod, "irg_pool.run", [I32])
    g = run.args[0]
    head = run.append_basic_block("claim")
    work = run.append_basic_block("work")
    out = run.append_basic_block("out")
    b.branch(head)
    b.position_at_end(head)
    st = b.load_atomic(slot(b, _STATE), acq, 8, typ=I64)
    n = b.load(slot(b, _N), typ=I64)
    mine = b.icmp_unsigned("==", b.trunc(b.lshr(st, I64(32)), I32), g)
    idx = b.and_(st, I64(0xFFFFFFFF))
    more = b.and_(mine, b.icmp_signed("<", idx, n))
    try_ = run.append_basic_block("try")
    b.cbranch(more, try_, out)
    b.position_at_end(try_)
    res = b.cmpxchg(slot(b, _STATE), st, b.add(st, I64(1)), seq, seq)
    b.cbranch(b.extract_value(res, 1), work, head)
    b.position_at_end(work)
    fn = b.inttoptr(b.load(slot(b, _FN), typ=I64), WORKER_TYPE.as_pointer())
    ctx = b.inttoptr(b.load(slot(b, _CTX), typ=I64), PTR)
    nn = b.load(slot(b, _N), typ=I64)
    b.call(fn, [idx, nn, ctx])
    b.atomic_rmw("add", slot(b, _DONE), I64(1), rel)
    b.branch(head)
    b.position_at_end(out)
    b.ret_void()

    def gen_word(b):                # the low 32 bits of slot 0 (little endian), as an i32 pointer
        return b.inttoptr(b.ptrtoint(slot(b, _GEN), I64), I32.as_pointer())

    # void *worker_main(void *): wait for a new region, run parts, repeat
    wm = ir.Function(mod, ir.FunctionType(PTR, [PTR]), "irg_pool.worker")
    wm.linkage = "internal"
    b = ir.IRBuilder(wm.append_basic_block("entry"))
    entry = b.block
    loop = wm.append_basic_block("wait")
    spin = wm.append_basic_block("spin")
    sleep = wm.append_basic_block("sleep")
    got = wm.append_basic_block("got")
    start_g = b.load_atomic(gen_word(b), acq, 4, typ=I32)
    b.branch(loop)
    b.position_at_end(loop)
    myg = b.phi(I32, "myg")
    cnt = b.phi(I64, "spins")
    myg.add_incoming(start_g, entry)
    cnt.add_incoming(I64(0), entry)
    cur = b.load_atomic(gen_word(b), acq, 4, typ=I32)
    b.cbranch(b.icmp_unsigned("!=", cur, myg), got, spin)
    b.position_at_end(spin)
    keep = b.icmp_signed("<", cnt, I64(spin_iters()))
    spin_on = wm.append_basic_block("spin.on")
    b.cbranch(keep, spin_on, sleep)
    b.position_at_end(spin_on)
    b.call(pause, [])
    myg.add_incoming(myg, spin_on)
    cnt.add_incoming(b.add(cnt, I64(1)), spin_on)
    b.branch(loop)
    b.position_at_end(sleep)
    b.atomic_rmw("add", slot(b, _SLEEP), I64(1), seq)
    again = b.load_atomic(gen_word(b), seq, 4, typ=I32)
    wait = wm.append_basic_block("futex")
    woke = wm.append_basic_block("woke")
    b.cbranch(b.icmp_unsigned("==", again, myg), wait, woke)
    b.position_at_end(wait)
    b.call(syscall, [I64(_SYS_FUTEX), gen_word(b), I32(_FUTEX_WAIT), myg, ir.Constant(PTR, None)])
    b.branch(woke)
    b.position_at_end(woke)
    b.atomic_rmw("sub", slot(b, _SLEEP), I64(1), seq)
    myg.add_incoming(myg, woke)
    cnt.add_incoming(I64(0), woke)
    b.branch(loop)
    b.position_at_end(got)
    seat = b.atomic_rmw("add", slot(b, _SEATS), I64(1), seq)
    nt = b.load(slot(b, _NT), typ=I64)
    sit = wm.append_basic_block("sit")
    after = wm.append_basic_block("after")
    b.cbranch(b.icmp_signed("<", seat, b.sub(nt, I64(1))), sit, after)
    b.position_at_end(sit)
    b.call(run, [cur])
    b.branch(after)
    b.position_at_end(after)
    myg.add_incoming(cur, after)
    cnt.add_incoming(I64(0), after)
    b.branch(loop)

    # void irg_parallel(ptr worker, ptr ctx, i64 n)
    fn, b = _function(mod, POOL_SYMBOL, [PTR, PTR, I64, I64], internal=False)
    worker, ctx, n, nthreads = fn.args
    wfn = b.inttoptr(b.ptrtoint(worker, I64), WORKER_TYPE.as_pointer())
    serial = fn.append_basic_block("serial")
    mine = fn.append_basic_block("pool")
    res = b.cmpxchg(slot(b, _BUSY), I64(0), I64(1), acq, acq)
    b.cbranch(b.extract_value(res, 1), mine, serial)
    b.position_at_end(serial)           # another region is running: do it all here
    with _for(b, n) as i:
        b.call(wfn, [i, n, ctx])
    b.ret_void()
    b.position_at_end(mine)
    # workers: up to n - 1 of them, created on demand (only the pool owner gets here)
    nw = b.sub(nthreads, I64(1))
    want = b.select(b.icmp_signed("<", nw, I64(MAX_WORKERS)), nw, I64(MAX_WORKERS))
    have = b.load(slot(b, _STARTED), typ=I64)
    tid = b.alloca(I64, name="tid")
    with _for(b, b.select(b.icmp_signed(">", want, have), b.sub(want, have), I64(0))):
        b.call(pcreate, [tid, ir.Constant(PTR, None), wm, ir.Constant(PTR, None)])
    b.store(b.select(b.icmp_signed(">", want, have), want, have), slot(b, _STARTED))
    b.store(b.ptrtoint(worker, I64), slot(b, _FN))
    b.store(b.ptrtoint(ctx, I64), slot(b, _CTX))
    b.store(n, slot(b, _N))
    b.store(nthreads, slot(b, _NT))
    b.store_atomic(I64(0), slot(b, _SEATS), rel, 8)
    b.store_atomic(I64(0), slot(b, _DONE), rel, 8)
    g = b.add(b.load(gen_word(b), typ=I32), I32(1))
    b.store_atomic(b.shl(b.zext(g, I64), I64(32)), slot(b, _STATE), rel, 8)
    b.store_atomic(g, gen_word(b), seq, 4)
    sleepers = b.load_atomic(slot(b, _SLEEP), seq, 8, typ=I64)
    with _if(b, b.icmp_signed(">", sleepers, I64(0))):
        b.call(syscall, [I64(_SYS_FUTEX), gen_word(b), I32(_FUTEX_WAKE), I32(0x7FFFFFFF)])
    b.call(run, [g])
    # wait for parts other threads claimed; yield now and then so a preempted worker can finish
    wl = fn.append_basic_block("join")
    wb = fn.append_basic_block("join.spin")
    fin = fn.append_basic_block("join.done")
    pre = b.block
    b.branch(wl)
    b.position_at_end(wl)
    k = b.phi(I64, "k")
    k.add_incoming(I64(0), pre)
    d = b.load_atomic(slot(b, _DONE), acq, 8, typ=I64)
    b.cbranch(b.icmp_signed(">=", d, n), fin, wb)
    b.position_at_end(wb)
    b.call(pause, [])
    with _if(b, b.icmp_unsigned("==", b.and_(k, I64(1023)), I64(1023))):
        b.call(yield_, [])
    k.add_incoming(b.add(k, I64(1)), b.block)
    b.branch(wl)
    b.position_at_end(fin)
    b.store_atomic(I64(0), slot(b, _BUSY), rel, 8)
    b.ret_void()
    return str(mod)


class _for:
    """``for (i = 0; i < n; i++)`` over an i64 ``n``; yields ``i``."""

    def __init__(self, b, n):
        self.b, self.n = b, n

    def __enter__(self):
        b = self.b
        fn = b.function
        self.pre = b.block
        self.head = fn.append_basic_block("for")
        self.body = fn.append_basic_block("for.body")
        self.exit = fn.append_basic_block("for.end")
        b.branch(self.head)
        b.position_at_end(self.head)
        self.i = b.phi(I64)
        self.i.add_incoming(I64(0), self.pre)
        b.cbranch(b.icmp_signed("<", self.i, self.n), self.body, self.exit)
        b.position_at_end(self.body)
        return self.i

    def __exit__(self, *exc):
        b = self.b
        self.i.add_incoming(b.add(self.i, I64(1)), b.block)
        b.branch(self.head)
        b.position_at_end(self.exit)
        return False


class _if:
    def __init__(self, b, cond):
        self.b, self.cond = b, cond

    def __enter__(self):
        b = self.b
        self.then = b.function.append_basic_block("if")
        self.end = b.function.append_basic_block("if.end")
        b.cbranch(self.cond, self.then, self.end)
        b.position_at_end(self.then)

    def __exit__(self, *exc):
        self.b.branch(self.end)
        self.b.position_at_end(self.end)
        return False


def ensure_pool() -> None:
    """Compile the pool (through the object cache) once per process and make ``irg_parallel``
    resolvable by every module JIT-compiled or loaded afterwards."""
    global _pool
    if _pool is not None:
        return
    import threading
    with _POOL_LOCK:
        if _pool is not None:
            return
        import llvmlite.binding as llvm

        from . import cache
        lib = cache.compile_cached(pool_ir(), options="pool", cache=False)   # ~30 ms, once
        llvm.add_symbol(POOL_SYMBOL, lib.address(POOL_SYMBOL))
        _pool = lib
    del threading


import threading as _threading  # noqa: E402

_POOL_LOCK = _threading.Lock()
