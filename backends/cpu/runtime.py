"""A static-shaped graph compiled for the CPU: kernels, one arena, entry functions, fallbacks.

    prog = Program(graph, num_threads=2, fallback=False)   # graph: every shape static
    outputs = prog.run([x, y])
    print(prog.report)

Each top-level node becomes a step: ``folded`` (all inputs known at compile time: computed
once with the reference and kept as a constant), ``alias`` (reshape/squeeze/unsqueeze: the
output is its input's bytes), ``kernel`` (lowered to kernel IR, compiled to LLVM) or
``fallback`` (no lowering: run with the numpy reference, only with ``fallback=True``).
Consecutive kernels form a segment with one generated entry function
``seg(inputs**, outputs**, consts**, arena*)``, so a model without fallbacks crosses into native
code once per call. Intermediates live in one arena: the offsets of ``graph.meta["memory_plan"]``
(the plan_memory pass) when it is present and fits, otherwise a first-fit plan made here.
Graph outputs are written straight into the arrays returned to the caller.
"""
from __future__ import annotations

import ctypes
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from irgraph.errors import CompileError, ExecutionError, IrgraphError
from irgraph.graph import Graph, Node, Value
from irgraph.ops.registry import get_op

from ..kernel_ir import LoweringError
from ..lower import KernelPlan, lower_node
from ..served import ServedTable
from .codegen import ModuleGen, compile_module
from .pointers import data_ptr

VIEW_OPS = ("reshape", "squeeze", "unsqueeze")
ALIGN = 64
FOLD_MAX_ELEMENTS = 1 << 26


@dataclass
class Loc:
    kind: str            # input | output | const | arena | py
    index: int           # input/output/const index, arena byte offset, or 0
    value: Value


@dataclass
class Step:
    kind: str            # kernel | fallback | alias | folded
    node: Node
    plan: KernelPlan | None = None
    reason: str = ""


@dataclass
class CpuReport:
    """What ran natively and what did not; ``str()`` gives a short table."""
    kernels: list = field(default_factory=list)      # {"name", "op", "group", "source"}
    fallback: list = field(default_factory=list)     # {"node", "op", "reason"}
    folded: int = 0
    aliases: int = 0
    arena_bytes: int = 0
    memory_plan: str = "own"
    seconds: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    @property
    def native_count(self) -> int:
        return len(self.kernels)

    def headline(self) -> str:
        return (f"cpu: {len(self.kernels)} native kernels, {len(self.fallback)} fallback nodes "
                f"(numpy reference), {self.folded} folded, {self.aliases} views; arena "
                f"{self.arena_bytes} bytes ({self.memory_plan} plan)")

    def __str__(self) -> str:
        lines = [self.headline()]
        lines.extend(f"  fallback {f['node']} ({f['op']}): {f['reason']}" for f in self.fallback)
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def _known(v: Value):
    if v.const is not None:
        return v.const
    return v.meta.get("value")


def _nbytes(v: Value) -> int:
    return int(v.type.numel) * v.dtype.itemsize


def _static(v: Value) -> bool:
    return v.type.shape is not None and v.type.is_static and v.dtype.kind != "s"


def _reads(n: Node) -> list:
    vals = [v for v in n.inputs if v is not None]
    for sg in n.subgraphs():
        vals.extend(sg.captured_values())
    return vals


class Program:
    def __init__(self, graph: Graph, *, num_threads: int = 1, fallback: bool = False,
                 notes: list | None = None):
        self.graph = graph
        self.num_threads = int(num_threads)
        self.allow_fallback = bool(fallback)
        self.report = CpuReport(notes=list(notes or []))
        from .codegen import CpuTemplates
        self.templates = CpuTemplates(self.num_threads)
        self._lock = threading.Lock()
        t0 = time.perf_counter()
        self.steps = self._plan_steps()
        t1 = time.perf_counter()
        self._place()
        self._compile()
        t2 = time.perf_counter()
        self.report.seconds.update({"lower": t1 - t0, "llvm": t2 - t1})

    # ---- steps ----------------------------------------------------------------------------------
    def _plan_steps(self) -> list:
        g = self.graph
        outs = {id(v) for v in g.outputs}
        steps, failures = [], []
        for n in g.nodes:
            opdef = get_op(n.op)
            if (not opdef.random and not opdef.runs_subgraphs and n.outputs
                    and all(o.meta.get("value") is not None and _static(o)
                            and np.size(o.meta["value"]) == o.type.numel for o in n.outputs)):
                # known from types alone (shape, size) or small shape arithmetic
                for o in n.outputs:
                    o.const = np.asarray(o.meta["value"]).astype(o.dtype.np).reshape(o.type.shape)
                steps.append(Step("folded", n))
                self.report.folded += 1
                continue
            if (not opdef.random and not opdef.runs_subgraphs and n.inputs
                    and all(v is None or _known(v) is not None for v in n.inputs)
                    and all(_static(o) and o.type.numel <= FOLD_MAX_ELEMENTS for o in n.outputs)):
                vals = self._fold(n)
                if vals is not None:
                    for o, a in zip(n.outputs, vals):
                        o.const = a
                    steps.append(Step("folded", n))
                    self.report.folded += 1
                    continue
            if (n.op in VIEW_OPS and not any(id(o) in outs for o in n.outputs)
                    and _static(n.inputs[0]) and _static(n.outputs[0])):
                steps.append(Step("alias", n))
                self.report.aliases += 1
                continue
            try:
                plan = lower_node(n, templates=self.templates)
                steps.append(Step("kernel", n, plan))
            except LoweringError as e:
                steps.append(Step("fallback", n, reason=e.message))
                failures.append((n, e.message))
            except IrgraphError as e:
                steps.append(Step("fallback", n, reason=f"{type(e).__name__}: {e.message}"))
                failures.append((n, e.message))
        if failures and not self.allow_fallback:
            shown = "; ".join(f"node {n.name!r} (op {n.op}): {m}" for n, m in failures[:20])
            more = f"; … {len(failures) - 20} more" if len(failures) > 20 else ""
            raise CompileError(f"{len(failures)} node(s) have no native CPU lowering: {shown}{more}",
                               hint="pass fallback=True to run them with the numpy reference")
        for s in steps:
            if s.kind == "kernel":
                k = s.plan.kernel
                self.report.kernels.append({"name": k.name, "op": s.node.op, "group": k.attrs.get("group"),
                                            "source": k.source})
            elif s.kind == "fallback":
                self.report.fallback.append({"node": s.node.name, "op": s.node.op, "reason": s.reason})
        return steps

    def _fold(self, n: Node):
        opdef = get_op(n.op)
        try:
            with np.errstate(all="ignore"):
                vals = opdef.run_reference([None if v is None else _known(v) for v in n.inputs], n.attrs)
        except Exception:
            return None  # the reference will fail the same way at run time, with context
        vals = [np.asarray(a) for a in vals]
        if len(vals) < len(n.outputs) or not all(o.type.matches(a) for o, a in zip(n.outputs, vals)):
            return None
        return vals

    # ---- storage --------------------------------------------------------------------------------
    def _place(self) -> None:
        g = self.graph
        self.loc: dict[int, Loc] = {}
        for i, v in enumerate(g.inputs):
            self.loc[id(v)] = Loc("input", i, v)
        self.out_index: dict[int, int] = {}
        for j, v in enumerate(g.outputs):
            self.out_index.setdefault(id(v), j)
        # steps that write each value; aliases resolve to their base's storage
        self.base: dict[int, Value] = {}
        for s in self.steps:
            if s.kind == "alias":
                src = s.node.inputs[0]
                self.base[id(s.node.outputs[0])] = self.base.get(id(src), src)
        plan = self.graph.meta.get("memory_plan")
        used = None
        if plan:
            try:
                used = self._place_from_plan(plan)
            except _PlanMismatch as e:
                self.report.notes.append(f"memory_plan not used ({e}); planned here instead")
                used = None
        if used is None:
            self._place_own()
        # consts referenced by kernels
        self.consts: list[np.ndarray] = []
        cidx: dict[int, int] = {}
        for s in self.steps:
            if s.kind != "kernel":
                continue
            for b in s.plan.kernel.params:
                if b.role == "const" and id(b.data) not in cidx:
                    cidx[id(b.data)] = len(self.consts)
                    self.consts.append(np.ascontiguousarray(b.data))
        self._cidx = cidx

    def _storage_of(self, v: Value) -> Value:
        return self.base.get(id(v), v)

    def _produced(self):
        """(step index, value) for values a kernel or fallback writes (not aliases/folded)."""
        for t, s in enumerate(self.steps):
            if s.kind in ("kernel", "fallback"):
                for o in s.node.outputs:
                    yield t, o

    def _place_own(self) -> None:
        self.report.memory_plan = "own"
        last: dict[int, int] = {}
        for t, s in enumerate(self.steps):
            for v in _reads(s.node):
                r = self._storage_of(v)
                last[id(r)] = max(last.get(id(r), t), t)
        intervals = []   # (first, last, bytes, key)
        for t, o in self._produced():
            if not _static(o):
                self.loc[id(o)] = Loc("py", 0, o)
                continue
            if id(o) in self.out_index:
                self.loc[id(o)] = Loc("output", self.out_index[id(o)], o)
                continue
            intervals.append((t, last.get(id(o), t), _nbytes(o), ("v", o)))
        self.temp_off: dict[int, int] = {}
        for t, s in enumerate(self.steps):
            if s.kind == "kernel":
                for b in s.plan.kernel.temps:
                    intervals.append((t, t, b.nbytes, ("t", b)))
        offsets, size = first_fit(intervals)
        for (first, lst, nb, (kind, obj)), off in zip(intervals, offsets):
            if kind == "v":
                self.loc[id(obj)] = Loc("arena", off, obj)
            else:
                self.temp_off[id(obj)] = off
        self.arena_bytes = size
        self.report.arena_bytes = size

    def _place_from_plan(self, plan: dict) -> bool:
        vals = plan.get("values") or {}
        inplace = plan.get("inplace") or {}
        size = int(plan.get("arena_bytes", 0))
        for t, o in self._produced():
            rec = vals.get(o.name)
            if not _static(o):
                self.loc[id(o)] = Loc("py", 0, o)
                continue
            if rec is None or int(rec.get("bytes", -1)) != _nbytes(o):
                raise _PlanMismatch(f"no slot of {_nbytes(o)} bytes for {o.name!r}")
            if id(o) in self.out_index and self.out_index[id(o)] is not None:
                # outputs go straight to the caller's arrays; the plan's slot stays unused
                self.loc[id(o)] = Loc("output", self.out_index[id(o)], o)
                continue
            self.loc[id(o)] = Loc("arena", int(rec["offset"]), o)
        views = plan.get("views") or {}
        for s in self.steps:
            if s.kind == "alias":
                o, src = s.node.outputs[0], s.node.inputs[0]
                base = self._storage_of(src)
                if self.loc.get(id(base), Loc("x", 0, base)).kind == "arena" and views.get(o.name) != src.name:
                    # the plan copies this view: its input's slot may be reused while we read it
                    raise _PlanMismatch(f"{o.name!r} is a view here but not in the plan")
        for s in self.steps:
            if s.kind == "kernel" and any(o.name in inplace for o in s.node.outputs):
                # an in-place update is safe for a kernel that reads each input element once,
                # at the index it writes: one loop nest storing one output
                k = s.plan.kernel
                o = s.node.outputs[0]
                src = next((b for b, v in s.plan.inputs if v.name == inplace.get(o.name)), None)
                if (len(k.body) != 1 or len(s.node.outputs) != 1 or k.temps or src is None
                        or not _same_index(k, src, s.plan.outputs[0][0])):
                    raise _PlanMismatch(f"in-place update of {s.node.name!r} needs a single-stage "
                                        "kernel reading its input where it writes")
                s.plan.kernel.attrs["aliased"] = True
        # kernel temps go after the plan's arena; kernels run one at a time, so they share it
        self.temp_off = {}
        extra = 0
        for s in self.steps:
            if s.kind == "kernel":
                offs, sz = first_fit([(0, 0, b.nbytes, b) for b in s.plan.kernel.temps])
                for b, off in zip(s.plan.kernel.temps, offs):
                    self.temp_off[id(b)] = _align(size) + off
                extra = max(extra, sz)
        self.arena_bytes = _align(size) + extra
        self.report.arena_bytes = self.arena_bytes
        self.report.memory_plan = "memory_plan"
        return True

    def _where(self, v: Value) -> Loc:
        r = self._storage_of(v)
        if id(r) in self.loc:
            return self.loc[id(r)]
        if _known(r) is not None:
            return Loc("const", -1, r)
        raise CompileError(f"internal: no storage for {v.name!r}")

    # ---- code -----------------------------------------------------------------------------------
    def _compile(self) -> None:
        mg = ModuleGen(self.graph.name or "model", self.num_threads)
        self.segments: list = []      # ("native", entry name) | ("fallback", step)
        calls = []
        nseg = 0

        def flush():
            nonlocal calls, nseg
            if calls:
                name = f"irgraph_seg{nseg}"
                mg.add_entry(name, calls)
                self.segments.append(("native", name))
                nseg += 1
                calls = []
        for s in self.steps:
            if s.kind == "kernel":
                k = s.plan.kernel
                kfn = mg.add_kernel(k, noalias=not k.attrs.get("aliased"))
                refs = []
                bind = {id(b): v for b, v in s.plan.inputs + s.plan.outputs}
                for b in k.buffers:
                    if b.role in ("input", "output"):
                        loc = self._where(bind[id(b)])
                        if loc.kind == "arena":
                            refs.append(("arena", loc.index))
                        elif loc.kind in ("input", "output"):
                            refs.append((loc.kind, loc.index))
                        else:
                            raise CompileError(f"internal: kernel {k.name} reads {loc.kind} storage")
                    elif b.role == "const":
                        refs.append(("const", self._cidx[id(b.data)]))
                    else:
                        refs.append(("arena", self.temp_off[id(b)]))
                calls.append((kfn, refs))
            elif s.kind == "fallback":
                flush()
                self.segments.append(("fallback", s))
        flush()
        self.llvm_ir = str(mg.module)
        self.lib = _compile_module(mg, self.llvm_ir) if nseg else None
        argt = [ctypes.c_void_p] * 4
        self._entries = {name: self.lib.cfunc(name, None, *argt) for kind, name in self.segments
                         if kind == "native"}
        self._arena_raw = np.zeros(self.arena_bytes + ALIGN, np.uint8)
        off = (-self._arena_raw.ctypes.data) % ALIGN
        self.arena = self._arena_raw[off:off + self.arena_bytes]
        self._const_ptrs = (ctypes.c_void_p * max(1, len(self.consts)))(*[c.ctypes.data for c in self.consts])
        self._arena_ptr = self.arena.ctypes.data if self.arena_bytes else self._arena_raw.ctypes.data
        # pointer arrays filled per call (under the lock: one call at a time uses the arena anyway)
        self._in_ptrs = (ctypes.c_void_p * max(1, len(self.graph.inputs)))()
        self._out_ptrs = (ctypes.c_void_p * max(1, len(self.graph.outputs)))()
        self._fast = self._fast_plan()

    def _fast_plan(self):
        """``(entry, output (shape, dtype)s)`` when one native entry writes every output straight
        into its own fresh array (the usual compiled model), else None: ``run`` then skips the
        per-call planning of fallback steps, views and copies."""
        if len(self.segments) != 1 or self.segments[0][0] != "native":
            return None
        specs = []
        for j, v in enumerate(self.graph.outputs):
            loc = self._where(v)
            if not _static(v) or loc.kind != "output" or loc.index != j:
                return None
            specs.append((tuple(v.type.shape), v.dtype.np))
        return self._entries[self.segments[0][1]], specs

    def kernels_ir(self) -> str:
        """The kernel IR of every native kernel, printed."""
        return "\n\n".join(str(s.plan.kernel) for s in self.steps if s.kind == "kernel")

    # ---- running --------------------------------------------------------------------------------
    def _array(self, v: Value, ins, outs, py) -> np.ndarray:
        loc = self._where(v)
        if loc.kind == "input":
            a = ins[loc.index]
        elif loc.kind == "output":
            a = outs[loc.index]
        elif loc.kind == "const":
            return np.asarray(_known(loc.value)).reshape(v.type.shape)
        elif loc.kind == "py":
            return py[id(loc.value)]
        else:
            nb = _nbytes(v)
            a = self.arena[loc.index:loc.index + nb].view(v.dtype.np).reshape(v.type.shape)
            return a
        return a if a.shape == tuple(v.type.shape) else a.reshape(v.type.shape)

    def run(self, inputs) -> list:
        fast = self._fast
        if fast is None:
            return self._run_general(inputs)
        entry, specs = fast
        ins = [np.ascontiguousarray(a) for a in inputs]
        outs = [np.empty(shape, dt) for shape, dt in specs]
        with self._lock:
            ip, op = self._in_ptrs, self._out_ptrs
            for i, a in enumerate(ins):
                ip[i] = data_ptr(a)
            for j, a in enumerate(outs):
                op[j] = data_ptr(a)
            entry(ip, op, self._const_ptrs, self._arena_ptr)
        return outs

    def _run_general(self, inputs) -> list:
        g = self.graph
        ins = [np.ascontiguousarray(a) for a in inputs]
        outs = [np.empty(v.type.shape, v.dtype.np) if _static(v) else None for v in g.outputs]
        with self._lock:
            ip, op = self._in_ptrs, self._out_ptrs
            for i, a in enumerate(ins):
                ip[i] = data_ptr(a)
            for j, a in enumerate(outs):
                op[j] = 0 if a is None else data_ptr(a)
            py: dict = {}
            for kind, what in self.segments:
                if kind == "native":
                    self._entries[what](ip, op, self._const_ptrs, self._arena_ptr)
                else:
                    self._run_fallback(what.node, ins, outs, py)
            result = []
            for j, v in enumerate(g.outputs):
                loc = self._where(v)
                if loc.kind == "output" and loc.index == j:
                    result.append(outs[j])
                else:
                    a = self._array(v, ins, outs, py)
                    result.append(np.array(a, copy=True))
        return result

    def _run_fallback(self, node: Node, ins, outs, py) -> None:
        from irgraph.interpreter import _Env, run_graph
        opdef = get_op(node.op)
        args = [None if v is None else self._array(v, ins, outs, py) for v in node.inputs]
        env = _Env()
        for sg in node.subgraphs():
            for v in sg.captured_values():
                env.vals[v] = self._array(v, ins, outs, py)

        def run_sub(sub, sub_inputs):
            return run_graph(sub, sub_inputs, _parent=env)
        try:
            with np.errstate(all="ignore"):
                res = opdef.run_reference(args, node.attrs, run_sub if opdef.runs_subgraphs else None)
        except IrgraphError as e:
            raise e.with_context(node=node.name, op=node.op)
        except Exception as e:
            raise ExecutionError(f"failed while running: {type(e).__name__}: {e}", node=node.name, op=node.op) from e
        for o, a in zip(node.outputs, res):
            a = np.asarray(a)
            loc = self._where(o)
            if loc.kind == "py":
                py[id(o)] = a
                continue
            dst = self._array(o, ins, outs, py)
            if a.shape != dst.shape or a.dtype != dst.dtype:
                raise ExecutionError(f"fallback output {o.name!r} is {a.dtype}{a.shape}, expected "
                                     f"{dst.dtype}{dst.shape}", node=node.name, op=node.op)
            np.copyto(dst, a)


class _PlanMismatch(Exception):
    pass


def _same_index(kernel, src, dst) -> bool:
    """Every load of ``src`` uses the index of the (single) store to ``dst``: writing ``dst``
    over ``src`` in place then never overwrites an element that is still to be read."""
    from ..kernel_ir import Load, Store, _Printer, stmt_exprs, walk_expr, walk_stmts
    p = _Printer()
    stores = [s for s in walk_stmts(kernel.body) if isinstance(s, Store)]
    if len(stores) != 1 or stores[0].buf is not dst:
        return False
    want = p.expr(stores[0].index, {})
    for s in walk_stmts(kernel.body):
        for e in stmt_exprs(s):
            for x in walk_expr(e):
                if isinstance(x, Load) and x.buf is src and p.expr(x.index, {}) != want:
                    return False
    return True


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def first_fit(intervals) -> tuple[list, int]:
    """Offsets for (first, last, bytes, key) lifetimes: lowest aligned gap free while live.
    Returns (offsets in the given order, arena size)."""
    order = sorted(range(len(intervals)), key=lambda i: (intervals[i][0], -intervals[i][2]))
    placed: list = []     # (first, last, off, end)
    offs = [0] * len(intervals)
    size = 0
    for i in order:
        first, last, nb, _ = intervals[i]
        live = sorted((o, e) for f, l, o, e in placed if not (l < first or f > last))
        off = 0
        for o, e in live:
            if off + nb <= o:
                break
            off = max(off, _align(e))
        offs[i] = off
        placed.append((first, last, off, off + nb))
        size = max(size, off + nb)
    return offs, _align(size)


# ---- artifacts (irgraph/artifact.py) ----------------------------------------------------------
# Loading a saved model rebuilds its Programs from the stored graph; the object code stored with
# it is used for a module whose LLVM IR hashes to the same sha256 (same IR -> same machine code
# on this host), so loading skips O3 and code generation. Anything else compiles as usual.


class use_objects(ServedTable):
    """``with use_objects({ir_sha256: object_bytes}):`` Programs built inside load these objects
    instead of compiling (see ``backends/served.py``); ``.used`` lists the hashes served."""


def module_sha256(ir_text: str) -> str:
    import hashlib
    return hashlib.sha256(ir_text.encode()).hexdigest()


def _compile_module(mg: ModuleGen, ir_text: str):
    """``ir_text`` is ``str(mg.module)``."""
    if use_objects.active():
        obj = use_objects.take(module_sha256(ir_text))
        if obj is not None:
            from . import llvm_target, threads
            if mg.uses_threads:
                threads.ensure_pool()
            return llvm_target.load_object(obj)
    return compile_module(mg, ir_text=ir_text)
