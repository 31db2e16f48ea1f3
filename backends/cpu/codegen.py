"""Kernel IR -> LLVM IR (llvmlite), for the host CPU.

Each ``Kernel`` becomes ``void @k(ptr noalias %buf0, ...)`` over its buffers (params, then
temps). Loops are plain counted loops that LLVM's loop vectorizer turns into SIMD code at O3;
a top-level ``parallel`` loop is outlined into ``@k.loopN(ptr noalias ..., i64 lo, i64 hi)``
and run on libgomp's threads through ``GOMP_parallel`` (about 1 µs a region) when the module
is built for more than one thread. Scalars go through ``LLVMScalar`` (scalar_llvm.py); only
ops marked ``fast`` (a reduction's combine step) get reassociation flags.

``add_entry`` writes the function that calls a sequence of kernels with pointers taken from
the input, output and constant pointer tables and from one arena, so running a whole model is
one call into native code.
"""
from __future__ import annotations

import itertools
import re

from llvmlite import ir

from irgraph.dtype import DType

from ..kernel_ir import (INDEX, Assign, Buffer, Const, ExternCall, If, Kernel, Load, Local, Loop,
                         LoweringError, Op, Store, Var, stmt_exprs, walk_expr)
from .scalar_llvm import I32, I64, PTR, V, LLVMScalar, mem_type, reg_type

VOID = ir.VoidType()


def symbol(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", name)


class ModuleGen:
    """One LLVM module holding kernels and entry functions."""

    def __init__(self, name: str = "irgraph", num_threads: int = 1):
        self.module = ir.Module(name=symbol(name))
        self.num_threads = int(num_threads)
        self.uses_gomp = False
        self._names: set = set()
        self._n = itertools.count()

    def unique(self, base: str) -> str:
        base = symbol(base)
        name = base
        while name in self._names or name in self.module.globals:
            name = f"{base}.{next(self._n)}"
        self._names.add(name)
        return name

    # ---- kernels ------------------------------------------------------------------------------
    def add_kernel(self, k: Kernel, noalias: bool = True) -> ir.Function:
        """``noalias=False`` when the caller may pass one buffer twice (an in-place update)."""
        bufs = k.buffers
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR] * len(bufs)), name=self.unique("k." + k.name))
        fn.linkage = "internal"
        fn.attributes.add("nounwind")
        fn.attributes.add("noinline")
        if noalias:
            for a in fn.args:
                a.add_attribute("noalias")
        for a, b in zip(fn.args, bufs):
            a.name = symbol(b.name)
        gen = _FnGen(self, fn, {id(b): a for b, a in zip(bufs, fn.args)}, bufs, noalias)
        gen.run(k.body, top=True)
        gen.b.ret_void()
        return fn

    # ---- entry --------------------------------------------------------------------------------
    def add_entry(self, name: str, calls) -> ir.Function:
        """``void name(ptr inputs, ptr outputs, ptr consts, ptr arena)`` calling each
        ``(function, refs)`` in order; a ref is ("input"|"output"|"const", index) or
        ("arena", byte offset)."""
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR] * 4), name=symbol(name))
        fn.attributes.add("nounwind")
        tables = dict(zip(("input", "output", "const"), fn.args[:3]))
        arena = fn.args[3]
        for a, n in zip(fn.args, ("inputs", "outputs", "consts", "arena")):
            a.name = n
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        for kfn, refs in calls:
            args = []
            for kind, i in refs:
                if kind == "arena":
                    args.append(b.gep(arena, [ir.Constant(I64, int(i))], inbounds=True, source_etype=ir.IntType(8)))
                else:
                    slot = b.gep(tables[kind], [ir.Constant(I64, int(i))], inbounds=True, source_etype=PTR)
                    args.append(b.load(slot, typ=PTR))
            b.call(kfn, args)
        b.ret_void()
        return fn

    def gomp(self):
        self.uses_gomp = True
        m = self.module
        fnty = ir.FunctionType(VOID, [PTR])
        par = m.globals.get("GOMP_parallel") or ir.Function(
            m, ir.FunctionType(VOID, [PTR, PTR, I32, I32]), name="GOMP_parallel")
        tnum = m.globals.get("omp_get_thread_num") or ir.Function(m, ir.FunctionType(I32, []), name="omp_get_thread_num")
        tcnt = m.globals.get("omp_get_num_threads") or ir.Function(m, ir.FunctionType(I32, []), name="omp_get_num_threads")
        return par, tnum, tcnt, fnty

    def __str__(self) -> str:
        return str(self.module)


class _FnGen:
    """Emits statements into one LLVM function."""

    def __init__(self, mg: ModuleGen, fn: ir.Function, ptrs: dict, bufs: list, noalias: bool = True):
        self.mg = mg
        self.noalias = noalias
        self.fn = fn
        self.ptrs = ptrs
        self.bufs = bufs
        entry = fn.append_basic_block("entry")
        self.alloca_b = ir.IRBuilder(entry)
        body = fn.append_basic_block("body")
        self.alloca_b.branch(body)
        self.alloca_b.position_at_start(entry)
        self.b = ir.IRBuilder(body)
        self.sb = LLVMScalar(self.b, mg.module)
        self._loops = itertools.count()

    # -- statements --
    def run(self, body, vars=None, top=False) -> None:
        vars = dict(vars or {})
        for s in body:
            if isinstance(s, Loop):
                if top and s.kind == "parallel":
                    self.parallel(s)
                else:
                    self.loop(s.var, ir.Constant(I64, 0), ir.Constant(I64, s.extent), s.body, vars)
            elif isinstance(s, Store):
                cache: dict = {}
                idx = self.expr(s.index, vars, cache)
                val = self.expr(s.value, vars, cache)
                self.sb.store(self.addr(s.buf, idx), val)
            elif isinstance(s, Local):
                slot = self.alloca_b.alloca(reg_type(s.var.dtype), name=s.var.name)
                val = self.expr(s.init, vars, {})
                self.b.store(val.value, slot)
                vars[s.var.name] = ("local", slot, s.var.dtype)
            elif isinstance(s, Assign):
                _, slot, _ = vars[s.var.name]
                val = self.expr(s.value, vars, {})
                self.b.store(val.value, slot)
            elif isinstance(s, If):
                cond = self.expr(s.cond, vars, {})
                with self.b.if_else(self.sb._bool(cond)) as (then, other):
                    with then:
                        self.run(s.then, vars)
                    with other:
                        self.run(s.orelse, vars)
            elif isinstance(s, ExternCall):
                self.extern(s)
            else:
                raise LoweringError(f"internal: unknown statement {type(s).__name__}")

    def loop(self, var: Var, lo, hi, body, vars) -> None:
        b = self.b
        pre = b.block
        n = next(self._loops)
        header = self.fn.append_basic_block(f"loop{n}")
        inner = self.fn.append_basic_block(f"loop{n}.body")
        done = self.fn.append_basic_block(f"loop{n}.end")
        b.branch(header)
        b.position_at_end(header)
        i = b.phi(I64, name=var.name)
        i.add_incoming(lo, pre)
        b.cbranch(b.icmp_signed("<", i, hi), inner, done)
        b.position_at_end(inner)
        self.run(body, {**vars, var.name: ("index", V(i, INDEX))})
        nxt = b.add(i, ir.Constant(I64, 1), flags=("nuw", "nsw"))
        i.add_incoming(nxt, b.block)
        b.branch(header)
        b.position_at_end(done)

    def parallel(self, s: Loop) -> None:
        """Outline the loop body over [lo, hi); run it on all threads through GOMP_parallel."""
        mg = self.mg
        name = mg.unique(self.fn.name + ".loop")
        body_fn = ir.Function(mg.module, ir.FunctionType(VOID, [PTR] * len(self.bufs) + [I64, I64]), name=name)
        body_fn.linkage = "internal"
        body_fn.attributes.add("nounwind")
        if self.noalias:
            for a in body_fn.args[:len(self.bufs)]:
                a.add_attribute("noalias")
        gen = _FnGen(mg, body_fn, {id(bf): a for bf, a in zip(self.bufs, body_fn.args)}, self.bufs,
                     self.noalias)
        lo, hi = body_fn.args[-2:]
        gen.loop(s.var, lo, hi, s.body, {})
        gen.b.ret_void()
        ptr_args = [self.ptrs[id(bf)] for bf in self.bufs]
        if mg.num_threads == 1:
            self.b.call(body_fn, ptr_args + [ir.Constant(I64, 0), ir.Constant(I64, s.extent)])
            return
        par, tnum, tcnt, fnty = mg.gomp()
        tramp = ir.Function(mg.module, fnty, name=mg.unique(name + ".omp"))
        tramp.linkage = "internal"
        tb = ir.IRBuilder(tramp.append_basic_block("entry"))
        ctxp = tramp.args[0]
        loaded = []
        for k in range(len(self.bufs)):
            slot = tb.gep(ctxp, [ir.Constant(I64, k)], inbounds=True, source_etype=I64)
            loaded.append(tb.inttoptr(tb.load(slot, typ=I64), PTR))
        tid = tb.sext(tb.call(tnum, []), I64)
        nt = tb.sext(tb.call(tcnt, []), I64)
        ext = ir.Constant(I64, s.extent)
        chunk = tb.sdiv(tb.add(ext, tb.sub(nt, ir.Constant(I64, 1))), nt)
        if s.extent >= 64:  # whole vectors per thread
            chunk = tb.and_(tb.add(chunk, ir.Constant(I64, 15)), ir.Constant(I64, -16))
        lo = tb.mul(tid, chunk)
        lo = tb.select(tb.icmp_signed("<", lo, ext), lo, ext)
        hi = tb.add(lo, chunk)
        hi = tb.select(tb.icmp_signed("<", hi, ext), hi, ext)
        tb.call(body_fn, loaded + [lo, hi])
        tb.ret_void()
        arr = self.alloca_b.alloca(I64, size=max(1, len(self.bufs)), name="par.ctx")
        for k, p in enumerate(ptr_args):
            slot = self.b.gep(arr, [ir.Constant(I64, k)], inbounds=True, source_etype=I64)
            self.b.store(self.b.ptrtoint(p, I64), slot)
        self.b.call(par, [tramp, arr, ir.Constant(I32, mg.num_threads), ir.Constant(I32, 0)])

    def extern(self, s: ExternCall) -> None:
        from .templates import emit_extern  # a backend's hand-written templates
        emit_extern(self, s)

    # -- expressions --
    def addr(self, buf: Buffer, idx: V):
        return self.b.gep(self.ptrs[id(buf)], [idx.value], inbounds=True, source_etype=mem_type(buf.dtype))

    def expr(self, e, vars: dict, cache: dict) -> V:
        seen = set(cache)
        sb = self.sb
        for x in walk_expr(e, seen):
            if id(x) in cache:
                continue
            if isinstance(x, Const):
                r = sb.const(x.value, x.dtype)
            elif isinstance(x, Var):
                kind, *rest = vars[x.name]
                if kind == "index":
                    r = rest[0]
                else:
                    slot, d = rest
                    r = V(self.b.load(slot, typ=reg_type(d)), d)
            elif isinstance(x, Load):
                r = sb.load(self.addr(x.buf, cache[id(x.index)]), x.dtype)
            elif isinstance(x, Op):
                args = [cache[id(a)] for a in x.args]
                sb.fast = x.fast
                try:
                    r = sb.cast(args[0], x.to) if x.op == "cast" else getattr(sb, x.op)(*args)
                finally:
                    sb.fast = False
                if r.dtype is not x.dtype:
                    raise LoweringError(f"internal: {x.op} built {r.dtype.name}, expected {x.dtype.name}")
            else:
                raise LoweringError(f"internal: unknown expression {type(x).__name__}")
            cache[id(x)] = r
        return cache[id(e)]


def kernel_module(kernels, num_threads: int = 1, name: str = "kernels") -> tuple[ModuleGen, list]:
    """A module with ``kernels`` and, for each, an external wrapper ``run_<name>(ptr* bufs)``
    (used by tests to call one kernel directly)."""
    mg = ModuleGen(name, num_threads)
    wrappers = []
    for k in kernels:
        fn = mg.add_kernel(k)
        w = ir.Function(mg.module, ir.FunctionType(VOID, [PTR]), name=mg.unique("run_" + k.name))
        b = ir.IRBuilder(w.append_basic_block("entry"))
        args = []
        for i in range(len(k.buffers)):
            slot = b.gep(w.args[0], [ir.Constant(I64, i)], inbounds=True, source_etype=PTR)
            args.append(b.load(slot, typ=PTR))
        b.call(fn, args)
        b.ret_void()
        wrappers.append(w.name)
    return mg, wrappers


def compile_module(mg: ModuleGen, speed_level: int = 3):
    """JIT the module for the host (libgomp made resolvable first when threads are used)."""
    import time

    import llvmlite.binding as llvm

    from . import llvm_target as lt
    if mg.uses_gomp:
        lt.load_gomp()
    tm = lt.host_target()
    t0 = time.perf_counter()
    mod = lt.parse(str(mg.module), tm)
    t1 = time.perf_counter()
    lt.optimize(mod, tm, speed_level)
    t2 = time.perf_counter()
    # MCJIT takes ownership of the target machine it is given and frees it with the engine, so
    # the engine gets its own (llvm_target.jit hands it the shared cached one: after the first
    # Library is collected, that cached machine is freed memory)
    own_tm = lt.host_target.__wrapped__(3)
    ee = llvm.create_mcjit_compiler(mod, own_tm)
    ee.finalize_object()
    t3 = time.perf_counter()
    return lt.Library(ee, (mod, own_tm), {"parse": t1 - t0, "optimize": t2 - t1, "codegen": t3 - t2})


def dtype_ok(d: DType) -> bool:
    try:
        reg_type(d)
        return True
    except LoweringError:
        return False
