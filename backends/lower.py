"""Lowering: one top-level graph node (a single op or a ``fused`` group) to one kernel-IR Kernel.

    plan = lower_node(node)            # KernelPlan(kernel, inputs=[(Buffer, Value)], outputs=...)
    print(plan.kernel)                 # the readable kernel IR

Every value of the node (or of the group's body) becomes a lazy tensor (``lower_tensor.py``):
elementwise ops are their registry ``scalar`` formula applied at an index, movement and index
ops are index arithmetic, reductions and contractions are loop-nest templates
(``lower_ops.py``), and composite ops without a template are lowered through their registry
``decompose``. A value is stored to memory only where it must be: kernel outputs, reduction
and template results, and values read several times whose formula is costly.

Stores become loop nests: adjacent dims are merged where no division is needed, the outer
dims form one ``parallel`` loop when there is enough work, and the innermost loop is
``vector``. Nothing here is specific to a backend.
"""
from __future__ import annotations

import contextlib
import itertools
import re
from dataclasses import dataclass, field

import numpy as np

from irgraph.dtype import DType
from irgraph.graph import Graph, Node, Value
from irgraph.ops.registry import get_op

from . import lower_tensor as lt
from . import lower_select  # noqa: F401  (registers its lowering rules)
from . import (lower_attention, lower_col2im, lower_deform_conv, lower_det,  # noqa: F401 (importing
               lower_dropout, lower_e8m0, lower_max_unpool, lower_stft,  # them registers their
               lower_roi_align, lower_scan, lower_tensor_scatter,         # lowering rules)
               lower_tree_ensemble, lower_quant, lower_sparse)
from .kernel_ir import (SUPPORTED_DTYPES, Buffer, Const, Kernel, Loop, LoweringError, Store,
                        Var)
from .lower_tensor import Fill, Map, Pending, T, View, delinearize, numel

# Work (elements x rough ops per element) below which a loop nest is not split across threads.
PARALLEL_MIN_WORK = 1 << 15
# A value read twice or more is stored once when its formula costs at least this much.
MATERIALIZE_COST = 8
MAX_DECOMPOSE_DEPTH = 6


@dataclass
class KernelPlan:
    kernel: Kernel
    inputs: list = field(default_factory=list)    # (Buffer, Value) per runtime input buffer
    outputs: list = field(default_factory=list)   # (Buffer, Value) per output buffer


class LowerCtx:
    """Collects a kernel's buffers and statements while lazy tensors are stored."""

    def __init__(self, name: str, templates=None):
        self.name = name
        self.templates = templates   # a backend's hand-written kernels (see lower_ops: matmul, conv)
        self.params: list[Buffer] = []
        self.temps: list[Buffer] = []
        self.body: list = []
        self._n = itertools.count()
        self._forced: dict[int, tuple] = {}
        self._consts: dict[int, tuple] = {}
        self.retyped: list = []    # (new input buffer, the input buffer whose bytes it reads)

    # -- names, buffers --
    def var(self, prefix: str = "i") -> Var:
        return Var(f"{prefix}{next(self._n)}")

    def buffer(self, base: str, dtype: DType, shape, role: str, data=None) -> Buffer:
        check_dtype(dtype, base)
        base = re.sub(r"[^A-Za-z0-9_]", "_", base)[:40] or "b"
        b = Buffer(f"{base}_{next(self._n)}", dtype, shape, role, data)
        (self.temps if role == "temp" else self.params).append(b)
        return b

    def const(self, arr: np.ndarray, name: str = "c") -> T:
        arr = np.asarray(arr)
        if arr.dtype.kind in "OUS":
            raise LoweringError("string constants have no kernel representation")
        d = DType.from_numpy(arr.dtype)
        check_dtype(d, name)
        if arr.size == 1:
            return Fill(Const(arr.reshape(-1)[0], d), arr.shape, self)
        hit = self._consts.get(id(arr))
        if hit is None:
            data = np.ascontiguousarray(arr)
            hit = (arr, self.buffer(name, d, arr.shape, "const", data))
            self._consts[id(arr)] = hit
        return View.of(hit[1], self, arr.shape)

    # -- storing lazy tensors --
    def retype(self, v: View, dtype: DType) -> View:
        """The bytes of a contiguous input (or const) view read as another dtype of the same width
        (bitcast): a second input buffer bound to the same value."""
        check_dtype(dtype, "bitcast")
        if not v.contiguous or v.offset:
            raise LoweringError("bitcast of a strided view")
        if v.buf.data is not None:
            return self.const(np.ascontiguousarray(v.to_numpy()).view(dtype.np), v.buf.name)
        if v.buf.role != "input":
            raise LoweringError("bitcast of a value computed in the same kernel")
        buf = self.buffer(v.buf.name + "_as_" + dtype.name, dtype, v.buf.shape, "input")
        self.retyped.append((buf, v.buf))
        return View(buf, v.shape, v.strides, 0, self)

    @contextlib.contextmanager
    def capture(self):
        """Statements emitted inside go to the yielded list instead of the kernel body."""
        saved = self.body
        self.body = []
        try:
            yield self.body
        finally:
            self.body = saved

    @contextlib.contextmanager
    def stage(self):
        saved = lt._MEMO[0]
        lt._MEMO[0] = {}
        try:
            yield
        finally:
            lt._MEMO[0] = saved

    def force(self, t: T) -> View:
        """``t`` in memory: itself when it is a view, else stored once into a temp buffer."""
        if isinstance(t, View):
            return t
        hit = self._forced.get(id(t))
        if hit is not None:
            return hit[1]
        buf = self.buffer("tmp", t.dtype, t.shape, "temp")
        v = View.of(buf, self)
        self.store(t, v)
        self._forced[id(t)] = (t, v)
        return v

    def store(self, t: T, dest: View) -> None:
        if t.shape != dest.shape:
            raise LoweringError(f"internal: storing {t.shape} into {dest.shape}")
        if t.size == 0:
            return
        if hasattr(t, "emit"):
            t.emit(self, dest)
            return
        self._emit_in_place(t, dest)
        t2, d2 = coalesce(t, dest)
        shape = t2.shape
        parallel = t.size * (1 + t.cost() // 4) >= PARALLEL_MIN_WORK
        with self.stage():
            if not shape:
                self.body.append(Store(d2.buf, d2.flat([]), cast_to(t2.at([]), d2.dtype)))
                return
            if len(shape) == 1:
                v = self.var()
                st = Store(d2.buf, d2.flat([v]), cast_to(t2.at([v]), d2.dtype))
                self.body.append(Loop(v, shape[0], "parallel" if parallel else "vector", [st]))
                return
            transpose = getattr(self.templates, "transpose2d", None)
            if transpose is not None and transpose(self, t2, d2):
                return                # a materialized transpose, in register-transposed blocks
            o, j = self.var(), self.var()
            idx = delinearize(o, shape[:-1]) + [j]
            st = Store(d2.buf, d2.flat(idx), cast_to(t2.at(idx), d2.dtype))
            inner = Loop(j, shape[-1], "vector", [st])
            self.body.append(Loop(o, numel(shape[:-1]), "parallel" if parallel else "serial", [inner]))

    def _emit_in_place(self, t: T, dest: View) -> None:
        """An elementwise epilogue of a contraction (conv + bias + relu …) stored into ``dest``:
        the contraction writes ``dest`` first and the epilogue then updates it in place, so the
        kernel needs no temp. Only for a single-use Pending read at the very index stored."""
        if not isinstance(t, Map) or not dest.contiguous:
            return
        stack, found = [t], []
        while stack:
            m = stack.pop()
            for o in m.operands:
                if isinstance(o, Pending) and o.single_use and o.shape == t.shape and id(o) not in self._forced:
                    found.append(o)
                elif isinstance(o, Map) and o.shape == t.shape:
                    stack.append(o)
        if len({id(p) for p in found}) != 1:
            return
        p = found[0]
        if p.dtype is not dest.dtype:
            return
        p.emit(self, dest)
        self._forced[id(p)] = (p, dest)

    def loops(self, shape, kinds=None):
        """Nested Loops over ``shape`` (outermost first); returns (outer loop, index vars, innermost
        body list). Empty shape: (None, [], a fresh list to append to self.body)."""
        idx, outer, body = [], None, None
        for k, d in enumerate(shape):
            v = self.var()
            loop = Loop(v, int(d), (kinds[k] if kinds else "serial"))
            if outer is None:
                outer = loop
            else:
                body.append(loop)
            body = loop.body
            idx.append(v)
        return outer, idx, body


def cast_to(e, d: DType):
    from .kernel_ir import IRBuilder
    return e if e.dtype is d else IRBuilder().cast(e, d)


def check_dtype(d: DType, what: str = "") -> None:
    if d not in SUPPORTED_DTYPES:
        raise LoweringError(f"dtype {d.name} has no native kernels" + (f" ({what})" if what else ""))


def coalesce(t: T, dest: View):
    """Merge adjacent dims where both the value and the destination allow it without division."""
    shape = [d for d in t.shape if d != 1]
    if len(shape) != len(t.shape):
        t1, d1 = t.try_reshape(shape), dest.try_reshape(shape)
        if t1 is None or d1 is None:
            return t, dest
        t, dest = t1, d1
    k = len(shape) - 1
    while k > 0:
        merged = shape[:k - 1] + [shape[k - 1] * shape[k]] + shape[k + 1:]
        t1 = t.try_reshape(merged)
        d1 = dest.try_reshape(merged) if t1 is not None else None
        if t1 is not None and d1 is not None:
            t, dest, shape = t1, d1, merged
        k -= 1
    return t, dest


# ---- lowering graphs -----------------------------------------------------------------------------
def _known(v: Value):
    if v.const is not None:
        return v.const
    return v.meta.get("value")


def _use_counts(nodes, outputs) -> dict:
    uses: dict[int, int] = {}
    for n in nodes:
        for v in n.inputs:
            if v is not None:
                uses[id(v)] = uses.get(id(v), 0) + 1
    for v in outputs:
        uses[id(v)] = uses.get(id(v), 0) + 1
    return uses


def lower_nodes(ctx: LowerCtx, nodes, env: dict, outputs: dict, uses: dict, depth: int = 0) -> None:
    """Lower ``nodes`` in order; ``env`` maps id(Value) to its lazy tensor; values in ``outputs``
    (id -> View) are stored there as soon as they are computed."""
    from .lower_ops import rule_for
    for n in nodes:
        ins = []
        for v in n.inputs:
            if v is None:
                ins.append(None)
            elif id(v) in env:
                ins.append(env[id(v)])
            elif _known(v) is not None:
                ins.append(ctx.const(_known(v), v.name))
                env[id(v)] = ins[-1]
            else:
                raise LoweringError(f"internal: value {v.name!r} is not available")
        for o in n.outputs:
            if o.type.shape is None or not o.type.is_static:
                raise LoweringError(f"output {o.name!r} has no static shape ({o.type!r})")
            check_dtype(o.dtype, o.name)
        rule = rule_for(n)
        if rule is not None:
            outs = rule(ctx, n, ins)
        else:
            outs = _lower_decomposed(ctx, n, ins, depth)
        for o, t in zip(n.outputs, outs):
            if isinstance(t, Pending) and uses.get(id(o), 0) == 1 and id(o) not in outputs:
                t.single_use = True
            if t.shape != o.type.shape or t.dtype is not o.dtype:
                raise LoweringError(f"internal: {n.op} lowered to {t.dtype.name}{list(t.shape)}, "
                                    f"expected {o.type!r}")
            if id(o) in outputs:
                ctx.store(t, outputs[id(o)])
                t = outputs[id(o)]
            elif uses.get(id(o), 0) >= 2 and not isinstance(t, (View, Fill)) and t.cost() >= MATERIALIZE_COST:
                t = ctx.force(t)
            env[id(o)] = t


def _lower_decomposed(ctx, n: Node, ins, depth: int):
    opdef = get_op(n.op)
    if opdef.decompose is None:
        raise LoweringError(f"no lowering for op {n.op!r}", op=n.op, node=n.name)
    if depth >= MAX_DECOMPOSE_DEPTH:
        raise LoweringError(f"decomposition of {n.op!r} nests too deep", op=n.op, node=n.name)
    g = Graph(f"{n.name}_decomposed")
    g_ins = []
    env2: dict = {}
    for v, t in zip(n.inputs, ins):
        if v is None:
            g_ins.append(None)
            continue
        if v.const is not None:
            gv = g.add_const(v.const, v.name)
        else:
            gv = g.add_input(v.name, v.type)
        if t is not None:
            env2[id(gv)] = t
        g_ins.append(gv)
    try:
        outs = opdef.decompose(g, g_ins, dict(n.attrs))
    except LoweringError:
        raise
    except Exception as e:
        raise LoweringError(f"decomposing {n.op!r} failed: {type(e).__name__}: {e}", op=n.op, node=n.name) from e
    outs = list(outs)[:len(n.outputs)]
    for c in g.constants.values():
        if id(c) not in env2:
            env2[id(c)] = ctx.const(c.const, c.name)
    lower_nodes(ctx, g.nodes, env2, {}, _use_counts(g.nodes, outs), depth + 1)
    res = []
    for o in outs:
        if id(o) in env2:
            res.append(env2[id(o)])
        elif _known(o) is not None:
            res.append(ctx.const(_known(o), o.name))
        else:
            raise LoweringError(f"internal: decomposition of {n.op} left {o.name} undefined")
    return res


def kernel_name(node: Node) -> str:
    base = node.attrs.get("label") if node.op == "fused" else None
    return re.sub(r"[^A-Za-z0-9_]", "_", base or node.name or node.op)[:60] or "kernel"


def lower_node(node: Node, name: str | None = None, templates=None) -> KernelPlan:
    """Lower one top-level node (a ``fused`` group: its body) into one Kernel; LoweringError
    when some op or dtype has no kernel-IR lowering. ``templates``: the backend's hand-written
    kernels it may use (an object with ``matmul(ctx, a, b, dest) -> bool`` and
    ``conv(...)``); without them everything is generic loop nests."""
    ctx = LowerCtx(name or kernel_name(node), templates)
    plan = KernelPlan(None)
    env: dict = {}
    seen: dict[int, T] = {}
    node_in: list = []
    for v in node.inputs:
        if v is None:
            node_in.append(None)
            continue
        if id(v) in seen:
            node_in.append(seen[id(v)])
            continue
        if _known(v) is not None:
            t = ctx.const(_known(v), v.name)
        else:
            if not v.type.is_static:
                raise LoweringError(f"input {v.name!r} has no static shape ({v.type!r})")
            check_dtype(v.dtype, v.name)
            buf = ctx.buffer(v.name, v.dtype, v.type.shape, "input")
            plan.inputs.append((buf, v))
            t = View.of(buf, ctx)
        seen[id(v)] = t
        node_in.append(t)
    out_views: dict = {}
    for o in node.outputs:
        if not o.type.is_static:
            raise LoweringError(f"output {o.name!r} has no static shape ({o.type!r})")
        buf = ctx.buffer(o.name, o.dtype, o.type.shape, "output")
        plan.outputs.append((buf, o))
    if node.op == "fused":
        body: Graph = node.attrs["body"]
        for bv, t in zip(body.inputs, node_in):
            env[id(bv)] = t
        for c in body.constants.values():
            env[id(c)] = ctx.const(c.const, c.name)
        outs_map: dict = {}
        pending_copies = []
        for (buf, _), bo in zip(plan.outputs, body.outputs):
            if id(bo) in outs_map or id(bo) in env:
                pending_copies.append((bo, buf))  # an output listed twice, or a body input/const
            else:
                outs_map[id(bo)] = View.of(buf, ctx)
        lower_nodes(ctx, body.nodes, env, outs_map, _use_counts(body.nodes, body.outputs))
        for bo, buf in pending_copies:
            ctx.store(env[id(bo)], View.of(buf, ctx))
    else:
        for (buf, o) in plan.outputs:
            out_views[id(o)] = View.of(buf, ctx)
        env = {id(v): t for v, t in zip(node.inputs, node_in) if v is not None}
        lower_nodes(ctx, [node], env, out_views, {})
    for buf, orig in ctx.retyped:
        plan.inputs.append((buf, next(v for b, v in plan.inputs if b is orig)))
    plan.kernel = Kernel(ctx.name, list(ctx.params), ctx.body, list(ctx.temps),
                         source=list(node.meta.get("source", [node.name])),
                         attrs={"op": node.op, "group": node.attrs.get("group") if node.op == "fused" else None})
    plan.kernel.verify()
    return plan


def can_lower(node: Node) -> str | None:
    """None when ``node`` lowers; else the reason it does not."""
    try:
        lower_node(node)
        return None
    except LoweringError as e:
        return str(e)
