"""A kernel-IR body cut into GPU stages, each one CUDA launch, run in order on one stream.

Top-level statements of a ``Kernel`` run one after another (a reduction's accumulator fill,
then its update; a GEMM, then its epilogue), so each becomes its own launch. The schedule of a
stage follows from its shape:

- ``map``: a loop nest whose iterations over a set ``P`` of its loops are proven independent
  (``analysis.independent``): the ``P`` loops collapse into one grid-stride index, the other
  loops of the nest stay serial inside the thread, in their original order;
- ``reduce``: ``for o: acc = init; for r...: acc = combine(acc, x); store(f(acc))`` with a
  reassociable combine: a warp (short rows) or a block (long rows) per output row, partial
  results combined with warp shuffles and, across warps, shared memory;
- ``gemm``: a template call (``gemm.py``), optionally with the next stage fused into its
  store (the in-place epilogue of a fused conv/matmul group);
- ``serial``: whatever is left, run by one thread (correct, and rare on real models).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..kernel_ir import (REASSOCIABLE, Assign, ExternCall, If, Load, Local, Loop, Op, Store, Var,
                         stmt_exprs, walk_expr, walk_stmts)
from . import analysis


@dataclass(eq=False)
class Stage:
    kind: str                                   # map | reduce | serial | gemm
    stmts: list = field(default_factory=list)   # serial: the statements; map/reduce: region body
    pvars: list = field(default_factory=list)   # map/reduce: the parallel loop variables
    pext: list = field(default_factory=list)    # and their extents
    rest: list = field(default_factory=list)    # map: serial loops kept inside (Loop objects)
    # reduce
    acc: Var | None = None
    init: object = None
    combine: str = ""
    rloops: list = field(default_factory=list)  # the reduction loops (Loop objects, outer first)
    value: object = None                        # the expression folded into acc
    tail: list = field(default_factory=list)    # statements after the reduction (use acc)
    # gemm
    call: ExternCall | None = None
    epilogue: "Stage | None" = None
    attrs_base: int = 0                         # epilogue: flat index of its first element

    @property
    def size(self) -> int:
        return math.prod(self.pext)


def plan_stages(body: list) -> list[Stage]:
    body = [s if isinstance(s, ExternCall) else _expand_nested(s) for s in body]
    out: list[Stage] = []
    i = 0
    while i < len(body):
        s = body[i]
        if isinstance(s, Loop):
            out.append(plan_loop(s))
            i += 1
        elif isinstance(s, ExternCall):
            out.append(Stage("gemm", call=s))
            i += 1
        elif isinstance(s, Local):
            j = _scope_end(body, i)
            group = body[i:j + 1]
            out.append(_full_reduction(group) or Stage("serial", group))
            i = j + 1
        else:
            j = i
            while j + 1 < len(body) and not isinstance(body[j + 1], (Loop, ExternCall, Local)):
                j += 1
            out.append(Stage("serial", body[i:j + 1]))
            i = j + 1
    return fuse_epilogues(out)


# ---- templates inside loops -------------------------------------------------------------------
def _expand_nested(s):
    """A template call nested in a loop or a branch (a scan body's matmul) cannot be its own
    launch: it becomes the equivalent loop nest, run by the thread that runs the loop."""
    if isinstance(s, ExternCall) and s.fn == "cuda_gemm":
        return gemm_loop_nest(s)
    if isinstance(s, Loop):
        body = [_expand_nested(x) for x in s.body]
        if any(a is not b for a, b in zip(body, s.body)):
            return Loop(s.var, s.extent, s.kind, body)
    elif isinstance(s, If):
        then = [_expand_nested(x) for x in s.then]
        orelse = [_expand_nested(x) for x in s.orelse]
        if any(a is not b for a, b in zip(then + orelse, s.then + s.orelse)):
            return If(s.cond, then, orelse)
    return s


_nest_ids = iter(range(1 << 62))


def gemm_loop_nest(call: ExternCall) -> Loop:
    """``cuda_gemm`` as kernel IR: for t, m, n: acc = sum_k A * B; C = acc (fp32, k in order)."""
    from irgraph import dtype as dt

    from ..kernel_ir import INDEX, Const
    a = call.attrs
    A, B, Cb = call.args
    k_ = next(_nest_ids)
    t, m, n, k = (Var(f"irg_x{k_}_{c}") for c in "tmnk")
    acc = Var(f"irg_x{k_}_acc", dt.float32)

    def lin(off, *terms_):
        e = Const(off, INDEX)
        for v, st in terms_:
            if st:
                e = Op("add", [e, Op("mul", [v, Const(st, INDEX)], INDEX)], INDEX)
        return e
    prod = Op("mul", [Load(A, lin(a["a_off"], (t, a["a_sb"]), (m, a["a_sm"]), (k, a["a_sk"]))),
                      Load(B, lin(a["b_off"], (t, a["b_sb"]), (k, a["b_sk"]), (n, a["b_sn"])))], dt.float32)
    body = [Local(acc, Const(0.0, dt.float32)),
            Loop(k, a["K"], "serial", [Assign(acc, Op("add", [acc, prod], dt.float32))]),
            Store(Cb, lin(a["c_off"], (t, a["c_sb"]), (m, a["c_sm"]), (n, a["c_sn"])), acc)]
    return Loop(t, a["batch"], "serial", [Loop(m, a["M"], "serial", [Loop(n, a["N"], "serial", body)])])


def _scope_end(body, i) -> int:
    """The last top-level statement that reads a Local declared from ``body[i]`` on."""
    def refs(s) -> set:
        return analysis.used_vars([s]) | {a.var.name for a in walk_stmts([s]) if isinstance(a, Assign)}
    end = i
    while True:
        names = {s.var.name for s in body[i:end + 1] if isinstance(s, Local)}
        new_end = max([k for k in range(i, len(body)) if refs(body[k]) & names], default=i)
        if new_end <= end:
            return end
        end = new_end


def _chain(loop: Loop) -> list:
    chain = [loop]
    while len(chain[-1].body) == 1 and isinstance(chain[-1].body[0], Loop):
        chain.append(chain[-1].body[0])
    return chain


def _reduction_parts(stmts):
    """[Local acc, reduction loop nest, tail...] -> (acc, init, combine, rloops, value, tail)."""
    if len(stmts) < 2 or not isinstance(stmts[0], Local) or not isinstance(stmts[1], Loop):
        return None
    loc = stmts[0]
    chain = _chain(stmts[1])
    inner = chain[-1].body
    if len(inner) != 1 or not isinstance(inner[0], Assign) or inner[0].var.name != loc.var.name:
        return None
    v = inner[0].value
    if not isinstance(v, Op) or v.op not in REASSOCIABLE or len(v.args) != 2:
        return None
    a, b = v.args
    acc = loc.var
    if isinstance(a, Var) and a.name == acc.name:
        x = b
    elif isinstance(b, Var) and b.name == acc.name:
        x = a
    else:
        return None
    if acc.name in analysis.leaves(x)[0]:
        return None
    tail = stmts[2:]
    for s in walk_stmts(tail):
        if isinstance(s, (Loop, Assign, Local)):
            return None
    return acc, loc.init, v.op, chain, x, tail


def _full_reduction(group) -> Stage | None:
    parts = _reduction_parts(group)
    if parts is None:
        return None
    acc, init, comb, rl, x, tail = parts
    if any(isinstance(s, If) for s in tail):
        return None
    return Stage("reduce", pvars=[], pext=[], acc=acc, init=init, combine=comb, rloops=rl,
                 value=x, tail=tail)


def plan_loop(loop: Loop) -> Stage:
    chain = _chain(loop)
    region = chain[-1].body
    parts = _reduction_parts(region)
    if parts is not None:
        pv, pe = [c.var for c in chain], [c.extent for c in chain]
        if analysis.independent(region, pv, pe, {}):
            acc, init, comb, rl, x, tail = parts
            return Stage("reduce", pvars=pv, pext=pe, acc=acc, init=init, combine=comb, rloops=rl,
                         value=x, tail=tail)
    for p in _candidates(chain, region):
        rest = [c for c in chain if c not in p]
        if analysis.independent(region, [c.var for c in p], [c.extent for c in p],
                                {c.var.name: c.extent for c in rest}):
            return Stage("map", stmts=region, pvars=[c.var for c in p], pext=[c.extent for c in p],
                         rest=rest)
    return Stage("serial", [loop])


def _candidates(chain, region):
    seen, out = set(), []

    def add(p):
        key = tuple(id(c) for c in p)
        if p and key not in seen:
            seen.add(key)
            out.append(p)
    add(list(chain))
    stored: set = set()
    for s in walk_stmts(region):
        if isinstance(s, Store):
            stored |= analysis.leaves(s.index)[0]
    add([c for c in chain if c.var.name in stored])
    for k in range(len(chain) - 1, 0, -1):
        add(chain[:k])
    return out


# ---- epilogue fusion ---------------------------------------------------------------------------
def fuse_epilogues(stages: list[Stage]) -> list[Stage]:
    """A GEMM followed by (1) a plain copy of its temp output into the final layout (the
    transposed result of a convolution computed as col^T @ W^T) stores straight into that
    layout, and (2) an in-place elementwise update of exactly the elements it wrote (bias,
    activation, residual add) runs on the accumulator before the single store."""
    out: list[Stage] = []
    for k, st in enumerate(stages):
        prev = out[-1] if out else None
        if prev is not None and prev.kind == "gemm" and prev.epilogue is None and st.kind == "map":
            call = _redirect(prev.call, st, stages[k + 1:])
            if call is not None:
                prev.call = call
                continue
            if epilogue_fits(prev.call, st):
                prev.epilogue = st
                continue
        out.append(st)
    return out


def gemm_targets(a: dict) -> np.ndarray:
    """Flat indices the GEMM stores, in (t, m, n) row-major order."""
    t = np.arange(a["batch"], dtype=np.int64)[:, None, None]
    m = np.arange(a["M"], dtype=np.int64)[None, :, None]
    n = np.arange(a["N"], dtype=np.int64)[None, None, :]
    return (a["c_off"] + t * a["c_sb"] + m * a["c_sm"] + n * a["c_sn"]).reshape(-1)


# Largest epilogue checked element by element (in chunks of ``analysis.NUMERIC_LIMIT``).
EPILOGUE_CHECK_LIMIT = 1 << 26


def _chunks(st: Stage):
    """(first flat index, env) over the stage's grid, ``NUMERIC_LIMIT`` points at a time."""
    step = analysis.NUMERIC_LIMIT
    strides, inner = [], 1
    for d in reversed(st.pext):
        strides.append(inner)
        inner *= d
    strides.reverse()
    for q0 in range(0, st.size, step):
        q = np.arange(q0, min(q0 + step, st.size), dtype=np.int64)
        yield q0, {v.name: (q // k) % d for v, k, d in zip(st.pvars, strides, st.pext)}


def _linear_store(st: Stage):
    """(store, base) when the stage is one Store at ``base + q`` over its whole grid."""
    if st.rest or len(st.stmts) != 1 or not isinstance(st.stmts[0], Store):
        return None
    if st.size > EPILOGUE_CHECK_LIMIT or not st.size:
        return None
    s = st.stmts[0]
    base = None
    for q0, env in _chunks(st):
        idx = analysis.evaluate(s.index, env)
        if idx is None:
            return None
        n = len(next(iter(env.values()))) if env else 1
        idx = np.broadcast_to(idx, (n,))
        if base is None:
            base = int(idx[0])
        if not np.array_equal(idx, base + q0 + np.arange(n, dtype=np.int64)):
            return None
    return s, base


def _dense(off: int, dims) -> int | None:
    """``off + sum(i_k * stride_k)`` over ``dims`` [(extent, stride)]: the first index when it
    covers a contiguous range exactly once, else None."""
    reach = 1
    for e, s in sorted(((e, s) for e, s in dims if e > 1), key=lambda d: d[1]):
        if s != reach:
            return None
        reach *= e
    return off


def epilogue_fits(call: ExternCall, st: Stage) -> bool:
    a = call.attrs
    cbuf = call.args[2]
    lin = _linear_store(st)
    if lin is None:
        return False
    s, base = lin
    if s.buf is not cbuf or st.size != a["batch"] * a["M"] * a["N"]:
        return False
    if _dense(a["c_off"], [(a["batch"], a["c_sb"]), (a["M"], a["c_sm"]), (a["N"], a["c_sn"])]) != base:
        return False
    loads = [x for x in walk_expr(s.value) if isinstance(x, Load) and x.buf is cbuf]
    for q0, env in _chunks(st):     # every read of C is the element being stored
        n = len(next(iter(env.values()))) if env else 1
        idx = base + q0 + np.arange(n, dtype=np.int64)
        for x in loads:
            v = analysis.evaluate(x.index, env)
            if v is None or not np.array_equal(np.broadcast_to(v, (n,)), idx):
                return False
    st.attrs_base = base
    return True


def _redirect(call: ExternCall, st: Stage, later: list):
    """The GEMM call storing where ``st`` copies its (temp) output to, or None."""
    a = call.attrs
    cbuf = call.args[2]
    if cbuf.role != "temp" or st.rest or len(st.stmts) != 1 or not isinstance(st.stmts[0], Store):
        return None
    s = st.stmts[0]
    if not isinstance(s.value, Load) or s.value.buf is not cbuf or s.buf.dtype is not cbuf.dtype:
        return None
    B, M, N = a["batch"], a["M"], a["N"]
    if st.size != B * M * N or st.size > analysis.NUMERIC_LIMIT:
        return None
    for later_st in later:           # the temp must be dead after the copy
        if later_st.kind == "gemm" and any(b is cbuf for b in later_st.call.args):
            return None
        if loads_of(later_st.stmts + later_st.tail + later_st.rest[:1] + later_st.rloops[:1], cbuf):
            return None
    env = analysis.grid(st.pvars, st.pext)
    src = analysis.evaluate(s.value.index, env)
    dst = analysis.evaluate(s.index, env)
    if src is None or dst is None:
        return None
    src = np.broadcast_to(src, (st.size,))
    dst = np.broadcast_to(dst, (st.size,))
    tg = gemm_targets(a)
    pos = {int(v): i for i, v in enumerate(tg)} if len(set(tg.tolist())) == tg.size else None
    if pos is None or set(src.tolist()) != set(pos):
        return None
    # destination of GEMM element i (row-major t, m, n): dst at the copy iteration reading it
    where = np.empty(st.size, np.int64)
    where[[pos[int(v)] for v in src]] = dst
    t, m, n = np.unravel_index(np.arange(st.size), (B, M, N))
    o0 = int(where[0])
    sb = int(where[M * N] - o0) if B > 1 else 0
    sm = int(where[N] - o0) if M > 1 else 0
    sn = int(where[1] - o0) if N > 1 else 0
    if not np.array_equal(where, o0 + t * sb + m * sm + n * sn):
        return None
    attrs = dict(a, c_off=o0, c_sb=sb, c_sm=sm, c_sn=sn)
    return ExternCall(call.fn, [call.args[0], call.args[1], s.buf], attrs)


def loads_of(stmts, buf) -> list:
    out = []
    for s in walk_stmts(stmts):
        for e in stmt_exprs(s):
            for x in walk_expr(e):
                if isinstance(x, Load) and x.buf is buf:
                    out.append(x)
    return out
