"""Kernel IR -> LLVM IR (llvmlite), for the host CPU.

Each ``Kernel`` becomes ``void @k(ptr noalias %buf0, ...)`` over its buffers (params, then
temps). Loops are plain counted loops that LLVM's loop vectorizer turns into SIMD code at O3;
a top-level ``parallel`` loop is outlined into ``@k.loopN(ptr noalias ..., i64 lo, i64 hi)``
and run in parts on the thread pool of threads.py (about 1 µs a region) when the module is built
for more than one thread. Scalars go through ``LLVMScalar`` (scalar_llvm.py); only
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
                         LoweringError, Op, Store, Var, walk_expr)
from .extern_operands import dense_input
from .scalar_llvm import I64, PTR, V, LLVMScalar, mem_type, reg_type

VOID = ir.VoidType()


def symbol(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", name)


class ModuleGen:
    """One LLVM module holding kernels and entry functions."""

    def __init__(self, name: str = "irgraph", num_threads: int = 1):
        self.module = ir.Module(name=symbol(name))
        self.num_threads = int(num_threads)
        self.uses_threads = False
        self._gemms: dict = {}
        self._convs: dict = {}
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
        from .conv_epilogue import fuse
        gen.run(fuse(k.body), top=True)
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

    def gemm(self, trans_a: bool, trans_b: bool, packed_b: bool, mr: int | None = None) -> ir.Function:
        """The fp32 GEMM variant (backends/cpu/gemm.py), emitted into this module once; ``mr``: the
        register tile's rows when not the host default (``GemmConfig.for_rows``)."""
        key = (trans_a, trans_b, packed_b, mr)
        if key not in self._gemms:
            k = gemm_kernel(trans_a, trans_b, packed_b, self.num_threads, mr)
            suffix = "" if mr is None else f"_r{mr}"
            k.name = self.unique(f"irg_gemm_{int(trans_a)}{int(trans_b)}{int(packed_b)}{suffix}")
            self._gemms[key] = k.emit(self.module)
            self.uses_threads = self.uses_threads or k.parallel
        return self._gemms[key]

    def conv(self, kernel) -> ir.Function:
        """A direct convolution kernel (backends/cpu/conv_direct.py), emitted once per variant."""
        key = kernel.tag
        if key not in self._convs:
            kernel.name = self.unique("irg_conv")
            self._convs[key] = kernel.emit(self.module)
            self.uses_threads = self.uses_threads or kernel.parallel
        return self._convs[key]

    def maxpool(self, kernel) -> ir.Function:
        """A vectorized 2-D max pool (backends/cpu/pool_direct.py), emitted once per variant."""
        key = kernel.tag
        if key not in self._convs:
            kernel.name = self.unique("irg_maxpool")
            self._convs[key] = kernel.emit(self.module)
            self.uses_threads = self.uses_threads or kernel.parallel
        return self._convs[key]

    def __str__(self) -> str:
        return str(self.module)


# ExternCall name -> emitter(gen, stmt) for templates that live outside this module (the int8
# kernels in qgemm_codegen.py, the sparse kernels in sparse_gemm.py); they register here on import
# instead of wrapping ``_FnGen.extern``.
EXTERN_EMITTERS: dict = {}


def register_extern(names, emit) -> None:
    """Route ``ExternCall``s named ``names`` to ``emit(gen, stmt)``."""
    for n in ([names] if isinstance(names, str) else names):
        EXTERN_EMITTERS[n] = emit


def _emit_transpose(gen, s: ExternCall) -> None:
    from .native_kernel import module_variant
    from .transpose import TransposeKernel
    a, nt = s.attrs, gen.mg.num_threads
    fn = module_variant(gen.mg, "_transposes", a["lanes"],
                        lambda: (TransposeKernel(a["lanes"], parallel=nt > 1), "irg_transpose"))
    src, dst = s.args
    ints = [a[k] for k in ("nb", "na", "lds", "ldd", "batch", "sbs", "sbd")] + [nt]
    gen.b.call(fn, [extern_ptr(gen, src, a["src_off"]), extern_ptr(gen, dst, a["dst_off"])]
               + [ir.Constant(I64, int(v)) for v in ints])


def extern_ptr(gen, buf, off):
    """A pointer to element ``off`` of an ExternCall buffer argument (NULL for an absent one)."""
    if buf is None:
        return ir.Constant(PTR, None)
    p = gen.ptrs[id(buf)]
    if not off:
        return p
    return gen.b.gep(p, [ir.Constant(I64, int(off))], inbounds=True, source_etype=mem_type(buf.dtype))


register_extern("transpose2d", _emit_transpose)


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
        """Outline the loop body over [lo, hi); run it on the pool in up to PARTS_PER_THREAD parts a
        thread, whole vectors each."""
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
        from . import threads
        worker = ir.Function(mg.module, threads.WORKER_TYPE, name=mg.unique(name + ".part"))
        worker.linkage = "internal"
        worker.attributes.add("nounwind")
        tb = ir.IRBuilder(worker.append_basic_block("entry"))
        part, nparts, ctxp = worker.args
        loaded = [threads.load_ctx(tb, ctxp, k, PTR) for k in range(len(self.bufs))]
        ext = ir.Constant(I64, s.extent)
        chunk = tb.sdiv(tb.add(ext, tb.sub(nparts, ir.Constant(I64, 1))), nparts)
        if s.extent >= 64:  # whole vectors per part
            chunk = tb.and_(tb.add(chunk, ir.Constant(I64, 15)), ir.Constant(I64, -16))
        lo = tb.mul(part, chunk)
        lo = tb.select(tb.icmp_signed("<", lo, ext), lo, ext)
        hi = tb.add(lo, chunk)
        hi = tb.select(tb.icmp_signed("<", hi, ext), hi, ext)
        tb.call(body_fn, loaded + [lo, hi])
        tb.ret_void()
        ctx = threads.store_ctx(self.b, ptr_args) if ptr_args else ir.Constant(PTR, None)
        parts = max(1, min(mg.num_threads * threads.PARTS_PER_THREAD, s.extent // 16 or 1))
        threads.launch(self.b, None, worker, ctx, ir.Constant(I64, mg.num_threads),
                       parts=ir.Constant(I64, max(parts, mg.num_threads)))
        mg.uses_threads = True

    def extern(self, s: ExternCall) -> None:
        emit = EXTERN_EMITTERS.get(s.fn)
        if emit is not None:
            emit(self, s)
            return
        if s.fn == "conv2d":
            self.conv2d(s)
            return
        if s.fn == "maxpool2d":
            from .pool_direct import kernel_from_attrs
            fn = self.mg.maxpool(kernel_from_attrs(s.attrs, self.mg.num_threads))
            X, O = s.args
            b = self.b
            ptrs = [b.gep(self.ptrs[id(buf)], [ir.Constant(I64, int(s.attrs[k]))], inbounds=True,
                          source_etype=mem_type(buf.dtype)) for buf, k in ((X, "x_off"), (O, "out_off"))]
            b.call(fn, ptrs + [ir.Constant(I64, self.mg.num_threads)])
            return
        if s.fn != "gemm":
            raise LoweringError(f"the CPU backend has no template {s.fn!r}")
        a = s.attrs
        fn = self.mg.gemm(a["trans_a"], a["trans_b"], a["packed_b"], a.get("mr"))
        A, B, C, ws = s.args
        b = self.b

        def at(buf, off):
            return b.gep(self.ptrs[id(buf)], [ir.Constant(I64, int(off))], inbounds=True,
                         source_etype=mem_type(buf.dtype))
        null = ir.Constant(PTR, None)
        ints = [a["M"], a["N"], a["K"], a["lda"], a["ldb"], 0, a["ldc"], a["batch"], a["sa"], a["sb"], 0,
                a["sc"]]
        b.call(fn, [at(A, a["a_off"]), at(B, a["b_off"]), null, null, at(C, a["c_off"])]
               + [ir.Constant(I64, int(v)) for v in ints] + [self.ptrs[id(ws)], ir.Constant(I64, self.mg.num_threads)])

    def conv2d(self, s: ExternCall) -> None:
        from .conv_template import kernel_from_attrs
        a = s.attrs
        ep = a.get("epilogue")
        k = kernel_from_attrs(a, self.mg.num_threads, ep.epilogue if ep else None,
                              residual=bool(ep and ep.residual is not None))
        fn = self.mg.conv(k)
        X, W, bias, out, ws = s.args
        b = self.b

        def at(buf, off):
            if buf is None:
                return ir.Constant(PTR, None)
            return b.gep(self.ptrs[id(buf)], [ir.Constant(I64, int(off))], inbounds=True,
                         source_etype=mem_type(buf.dtype))
        res = at(ep.residual, ep.residual_off) if ep and ep.residual is not None else ir.Constant(PTR, None)
        dims = ir.Constant(PTR, None)
        if hasattr(k, "dims"):     # sizes read at run time: one function per kernel family
            vals = [int(v) for v in k.dims()]
            g = ir.GlobalVariable(self.mg.module, ir.ArrayType(I64, len(vals)), self.mg.unique("conv.dims"))
            g.linkage = "internal"
            g.global_constant = True
            g.initializer = ir.Constant(ir.ArrayType(I64, len(vals)), vals)
            dims = b.bitcast(g, PTR)
        b.call(fn, [at(X, a["x_off"]), at(W, a["w_off"]), at(bias, a["bias_off"]), res,
                    at(out, a["out_off"]), self.ptrs[id(ws)], ir.Constant(I64, self.mg.num_threads), dims])

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


def gemm_kernel(trans_a: bool, trans_b: bool, packed_b: bool, num_threads: int, mr: int | None = None):
    from .gemm import Epilogue, GemmConfig, GemmKernel
    cfg = GemmConfig.for_host() if mr is None else GemmConfig.for_host(mr=mr)
    return GemmKernel(cfg, Epilogue(), packed_b=packed_b, trans_a=trans_a, trans_b=trans_b,
                      parallel=num_threads > 1)


class CpuTemplates:
    """What the CPU backend computes with hand-written kernels instead of generic loop nests
    (passed to ``lower_node``): float32 matmul and convolution through the packed GEMM."""

    def __init__(self, num_threads: int = 1):
        self.num_threads = num_threads

    def transpose2d(self, ctx, t, dest) -> bool:
        """Store view ``t`` into ``dest`` as a blocked transpose (backends/cpu/transpose.py) when
        the copy is one; False leaves it to the generic loop nest."""
        from ..kernel_ir import ExternCall
        from . import llvm_target
        from .transpose import plan
        lanes = llvm_target.host_cpu().f32_lanes
        attrs = plan(t, dest, lanes)
        if attrs is None:
            return False
        ctx.body.append(ExternCall("transpose2d", [t.buf, dest.buf], {**attrs, "lanes": lanes}))
        return True

    def direct_conv(self, x_shape, w_shape, plan):
        """The direct convolution kernel for this float32 2-D conv when it pays (else None)."""
        from .conv_template import choose
        return choose(x_shape, w_shape, plan, self.num_threads)

    def maxpool2d(self, ctx, x, plan, kernel, dest) -> bool:
        """A vectorized float32 2-D max pool into ``dest``; False when it does not apply."""
        from . import llvm_target
        from .pool_direct import lower
        return lower(ctx, x, plan, kernel, dest, self.num_threads, llvm_target.host_cpu().f32_lanes)

    def emit_direct_conv(self, ctx, kernel, x, w, bias, dest) -> None:
        from .conv_template import lower
        lower(ctx, kernel, x, w, bias, dest)

    def matmul(self, ctx, A, B, C) -> bool:
        """``C[t] = A[t] @ B[t]`` for (batch, M, K) x (batch, K, N) -> (batch, M, N) float32 views."""
        import numpy as np

        from irgraph import dtype as dt

        from ..lower_tensor import View
        from .gemm import pack_b, workspace_bytes
        if not (A.dtype is B.dtype is C.dtype is dt.float32):
            return False
        nb, M, K = A.shape
        N = B.shape[2]
        if min(M, N, K, nb) == 0 or not isinstance(C, View):
            return False
        A = ctx.force(A)
        if A.strides[2] == 1 or K == 1:
            ta, lda = False, A.strides[1] if M > 1 else K
        elif A.strides[1] == 1:
            ta, lda = True, A.strides[2]
        else:
            A = dense_input(ctx, A)
            ta, lda = False, K
        base = gemm_kernel(False, False, True, self.num_threads).config
        cfg = base.for_rows(M)
        mr = None if cfg.mr == base.mr else cfg.mr
        packed = False
        if isinstance(B, View) and B.buf.data is not None:
            data = B.to_numpy()
            if nb > 1 and B.strides[0] == 0:
                data = data[0]
            pk = pack_b(np.ascontiguousarray(data, np.float32), cfg.nr)
            Bv = ctx.const(pk.data, B.buf.name + "_packed")
            if not isinstance(Bv, View):
                return False
            packed, tb, ldb, sb, boff = True, False, 0, (pk.batch_stride if pk.batch else 0), Bv.offset
            Bbuf = Bv.buf
        else:
            B = ctx.force(B)
            if B.strides[2] == 1 or N == 1:
                tb, ldb = False, B.strides[1] if K > 1 else N
            elif B.strides[1] == 1:
                tb, ldb = True, B.strides[2]
            else:
                B = dense_input(ctx, B)
                tb, ldb = False, N
            sb, boff, Bbuf = B.strides[0] if nb > 1 else 0, B.offset, B.buf
        if C.strides[2] != 1 and N > 1 or (M > 1 and C.strides[1] < N):
            return False
        ldc = C.strides[1] if M > 1 else N
        ws = ctx.buffer("gemm_ws", dt.uint8, (workspace_bytes(cfg, M, N, K, self.num_threads, packed),), "temp")
        from ..kernel_ir import ExternCall
        ctx.body.append(ExternCall("gemm", [A.buf, Bbuf, C.buf, ws], {
            "M": M, "N": N, "K": K, "batch": nb, "trans_a": ta, "trans_b": tb, "packed_b": packed,
            "lda": lda, "ldb": ldb, "ldc": ldc, "sa": A.strides[0] if nb > 1 else 0, "sb": sb,
            "sc": C.strides[0] if nb > 1 else 0, "a_off": A.offset, "b_off": boff, "c_off": C.offset,
            **({} if mr is None else {"mr": mr})}))
        return True


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


def compile_module(mg: ModuleGen, cache=True, ir_text: str | None = None):
    """Machine code for the module: from the on-disk object cache (cache.py) when this exact IR
    was compiled before on this host, else O3 + codegen (the thread pool registered first when
    used). ``ir_text``: ``str(mg.module)`` when the caller has it (printing a model's module
    takes ~0.2 s)."""
    from . import cache as object_cache
    from . import threads
    if mg.uses_threads:
        threads.ensure_pool()
    return object_cache.compile_cached(str(mg.module) if ir_text is None else ir_text, options="model",
                                       cache=cache)


def dtype_ok(d: DType) -> bool:
    try:
        reg_type(d)
        return True
    except LoweringError:
        return False
