"""The kernel IR: what lowering produces and every backend printer reads (LLVM today, CUDA C next).

A ``Kernel`` is one compiled unit (one top-level node or one fused group). It holds

- ``Buffer``s: flat, C-ordered arrays with a name, dtype, shape and role
  (``input`` | ``output`` | ``temp`` | ``const``); consts carry their numpy data;
- a body of statements: ``Loop`` (kinds ``serial``, ``parallel``, ``vector``, ``unroll``, and for
  GPUs ``block``/``thread``), ``Store``, ``Local`` (a mutable scalar, e.g. an accumulator) and
  ``Assign``, ``If``, and ``ExternCall`` (a hand-written template such as a GEMM, which a backend
  implements natively);
- scalar expressions: ``Const``, ``Var`` (loop index or local), ``Load`` (buffer at a flat
  index) and ``Op`` — one operation of the scalar-builder interface (``irgraph.ops.scalar``
  SCALAR_METHODS), plus the two index operations ``idx_div``/``idx_mod`` (floor division and
  remainder of non-negative int64 indices).

Expressions form a DAG: a subexpression used twice is one object, which printers evaluate once
per statement. ``IRBuilder`` implements the scalar-builder interface over expressions, so an
op's registry formula evaluated against it yields kernel IR without per-op code.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from irgraph import dtype as dt
from irgraph.dtype import DType
from irgraph.errors import CompileError
from irgraph.ops.scalar import SCALAR_METHODS, NumpyScalar, ScalarBuilder

LOOP_KINDS = ("serial", "parallel", "vector", "unroll", "block", "thread")
ROLES = ("input", "output", "temp", "const")
INDEX = dt.int64
INDEX_OPS = ("idx_div", "idx_mod")
OPS = tuple(m for m in SCALAR_METHODS if m not in ("const", "dtype_of")) + INDEX_OPS

# element types every backend handles (16-bit floats are computed in float32 where needed)
SUPPORTED_DTYPES = frozenset([dt.bool_, dt.int8, dt.int16, dt.int32, dt.int64, dt.uint8,
                              dt.uint16, dt.uint32, dt.uint64, dt.float16, dt.bfloat16,
                              dt.float32, dt.float64,
                              # narrow storage types (one byte each, as ml_dtypes stores them)
                              dt.int4, dt.uint4, dt.int2, dt.uint2, dt.float8e4m3fn,
                              dt.float8e4m3fnuz, dt.float8e5m2, dt.float8e5m2fnuz, dt.float4e2m1,
                              dt.float8e8m0])

_BOOL_RESULT = frozenset(["lt", "le", "gt", "ge", "eq", "ne", "and_", "or_", "xor", "not_",
                          "isnan", "isinf"])
# ops whose results may be reassociated when an Op carries ``fast=True`` (reductions)
REASSOCIABLE = frozenset(["add", "mul", "min", "max"])


class LoweringError(CompileError):
    """An op (or a dtype) the lowering cannot express in kernel IR."""


# ---- buffers -----------------------------------------------------------------------------------
@dataclass(eq=False)
class Buffer:
    name: str
    dtype: DType
    shape: tuple
    role: str
    data: np.ndarray | None = None      # const buffers: the values, C-contiguous, of ``dtype``

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"buffer role must be one of {ROLES}, got {self.role!r}")
        self.shape = tuple(int(d) for d in self.shape)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __repr__(self) -> str:
        return f"{self.role} {self.name}: {self.dtype.name}[{','.join(map(str, self.shape))}]"


# ---- expressions -------------------------------------------------------------------------------
class Expr:
    __slots__ = ("dtype",)


class Const(Expr):
    __slots__ = ("value",)

    def __init__(self, value, dtype: DType):
        self.dtype = dtype
        self.value = _normalize(value, dtype)

    def __repr__(self) -> str:
        return f"Const({self.value!r}, {self.dtype.name})"


class Var(Expr):
    """A loop index (int64) or a ``Local`` scalar."""
    __slots__ = ("name",)

    def __init__(self, name: str, dtype: DType = INDEX):
        self.name = name
        self.dtype = dtype

    def __repr__(self) -> str:
        return self.name


class Load(Expr):
    __slots__ = ("buf", "index")

    def __init__(self, buf: Buffer, index: Expr):
        self.buf = buf
        self.index = index
        self.dtype = buf.dtype


class Op(Expr):
    """``op`` is a scalar-builder method (or an index op); ``to`` is the target of a cast;
    ``fast`` allows reassociation (set on the combine step of reductions only)."""
    __slots__ = ("op", "args", "to", "fast")

    def __init__(self, op: str, args: Sequence[Expr], dtype: DType, to: DType | None = None,
                 fast: bool = False):
        self.op = op
        self.args = tuple(args)
        self.dtype = dtype
        self.to = to
        self.fast = fast


def _normalize(value, dtype: DType):
    """A Python scalar holding exactly ``value`` rounded to ``dtype``."""
    if dtype.is_bool:
        return bool(value)
    if dtype.is_int:
        if isinstance(value, (bool, int, np.integer, np.bool_)):
            v = int(value)
        else:  # a float literal for an integer type converts as numpy does
            with np.errstate(all="ignore"):
                v = int(np.asarray(value, dtype=np.float64).astype(dtype.np))
        bits = dtype.bits
        v &= (1 << bits) - 1
        if dtype.kind == "i" and v >= 1 << (bits - 1):
            v -= 1 << bits
        return v
    return float(np.asarray(value, dtype=np.float64).astype(dtype.np).astype(np.float64))


# ---- statements --------------------------------------------------------------------------------
class Stmt:
    __slots__ = ()


@dataclass(eq=False)
class Loop(Stmt):
    var: Var
    extent: int
    kind: str = "serial"
    body: list = field(default_factory=list)

    def __post_init__(self):
        if self.kind not in LOOP_KINDS:
            raise ValueError(f"loop kind must be one of {LOOP_KINDS}, got {self.kind!r}")


@dataclass(eq=False)
class Store(Stmt):
    buf: Buffer
    index: Expr
    value: Expr


@dataclass(eq=False)
class Local(Stmt):
    """Declare mutable scalar ``var`` with an initial value (an accumulator)."""
    var: Var
    init: Expr


@dataclass(eq=False)
class Assign(Stmt):
    var: Var
    value: Expr


@dataclass(eq=False)
class If(Stmt):
    cond: Expr
    then: list
    orelse: list = field(default_factory=list)


@dataclass(eq=False)
class ExternCall(Stmt):
    """A template a backend implements by hand (``fn``), over buffers and integer/float args.

    ``gemm``: args [A, B, C, workspace]; for t < batch:
    ``C[c_off + t*sc + i*ldc + j] = sum_k A[i, k] * B[k, j]`` with A read at
    ``a_off + t*sa + i*lda + k`` (``trans_a``: ``k*lda + i``), B likewise (``trans_b``), or B
    pre-packed by the backend at compile time (``packed_b``). float32 only.
    """
    fn: str
    args: list
    attrs: dict = field(default_factory=dict)


@dataclass(eq=False)
class Kernel:
    name: str
    params: list                        # Buffers passed in: inputs, outputs, consts
    body: list
    temps: list = field(default_factory=list)   # scratch Buffers, live during this kernel only
    source: list = field(default_factory=list)  # the graph node names this kernel computes
    attrs: dict = field(default_factory=dict)

    @property
    def buffers(self) -> list:
        return list(self.params) + list(self.temps)

    def __str__(self) -> str:
        return format_kernel(self)

    def verify(self) -> None:
        verify_kernel(self)


# ---- building expressions ------------------------------------------------------------------------
_np = NumpyScalar()


def result_dtype(op: str, args: Sequence[Expr], to: DType | None = None) -> DType:
    if op == "cast":
        return to
    if op in _BOOL_RESULT:
        return dt.bool_
    if op == "select":
        return args[1].dtype
    return args[0].dtype


class IRBuilder(ScalarBuilder):
    """The scalar-builder interface over kernel-IR expressions, with constant folding.

    ``fast=True`` marks every built op as reassociable (used while evaluating a reduction's
    combine formula). Ops on dtypes outside SUPPORTED_DTYPES raise LoweringError.
    """

    def __init__(self, fast: bool = False):
        self.fast = fast

    # -- the interface --
    def const(self, value, like) -> Const:
        d = like.dtype if isinstance(like, Expr) else like
        return Const(value, d)

    def dtype_of(self, x: Expr) -> DType:
        return x.dtype

    def cast(self, x: Expr, dtype: DType) -> Expr:
        if dtype is x.dtype:
            return x
        return self._op("cast", (x,), to=dtype)

    def __getattr__(self, name):
        if name in OPS:
            def build(*args, _n=name):
                return self._op(_n, args)
            return build
        raise AttributeError(name)

    # -- helpers --
    def _op(self, op: str, args, to: DType | None = None) -> Expr:
        args = tuple(_as_expr(a, args) for a in args)
        d = result_dtype(op, args, to)
        for x in (d,) + tuple(a.dtype for a in args):
            if x not in SUPPORTED_DTYPES:
                raise LoweringError(f"dtype {x.name} is not supported by the kernel IR (op {op})")
        if all(isinstance(a, Const) for a in args):
            folded = _fold(op, args, d, to)
            if folded is not None:
                return folded
        if d.is_int and op in ("add", "sub", "mul", "idx_div", "idx_mod", "min", "max"):
            s = _simplify_int(op, args, d)
            if s is not None:
                return s
        fast = self.fast and op in REASSOCIABLE and d.is_float
        return Op(op, args, d, to=to, fast=fast)


def _as_expr(a, siblings) -> Expr:
    if isinstance(a, Expr):
        return a
    like = next((s for s in siblings if isinstance(s, Expr)), None)
    if like is None:
        raise LoweringError(f"cannot type the literal {a!r}")
    return Const(a, like.dtype)


def _fold(op, args, d, to):
    try:
        with np.errstate(all="ignore"):
            vals = [np.asarray(a.value, dtype=a.dtype.np) for a in args]
            if op == "idx_div":
                r = vals[0] // vals[1] if int(vals[1]) != 0 else None
            elif op == "idx_mod":
                r = vals[0] % vals[1] if int(vals[1]) != 0 else None
            elif op == "cast":
                r = _np.cast(vals[0], to)
            else:
                r = getattr(_np, op)(*vals)
        if r is None:
            return None
        return Const(np.asarray(r).astype(d.np)[()], d)
    except Exception:  # folding is an optimization; leave the op to run time
        return None


def _simplify_int(op, args, d):
    a, b = args if len(args) == 2 else (args[0], None)
    ca = a.value if isinstance(a, Const) else None
    cb = b.value if isinstance(b, Const) else None
    if op == "add":
        if ca == 0:
            return b
        if cb == 0:
            return a
        # (x + c1) + c2 -> x + (c1 + c2): keeps index expressions short
        if cb is not None and isinstance(a, Op) and a.op == "add" and isinstance(a.args[1], Const):
            return IRBuilder()._op("add", (a.args[0], Const(a.args[1].value + cb, d)))
    elif op == "sub":
        if cb == 0:
            return a
    elif op == "mul":
        if ca == 1:
            return b
        if cb == 1:
            return a
        if ca == 0 or cb == 0:
            return Const(0, d)
    elif op == "idx_div":
        if cb == 1:
            return a
    elif op == "idx_mod":
        if cb == 1:
            return Const(0, d)
    return None


# ---- traversal -----------------------------------------------------------------------------------
def walk_stmts(body):
    for s in body:
        yield s
        if isinstance(s, Loop):
            yield from walk_stmts(s.body)
        elif isinstance(s, If):
            yield from walk_stmts(s.then)
            yield from walk_stmts(s.orelse)


def stmt_exprs(s) -> list:
    if isinstance(s, Store):
        return [s.index, s.value]
    if isinstance(s, (Local,)):
        return [s.init]
    if isinstance(s, Assign):
        return [s.value]
    if isinstance(s, If):
        return [s.cond]
    return []


def walk_expr(e: Expr, seen: set | None = None):
    """Each node of the expression DAG once, children before parents."""
    seen = set() if seen is None else seen
    stack = [(e, False)]
    while stack:
        x, done = stack.pop()
        if id(x) in seen:
            continue
        if done:
            seen.add(id(x))
            yield x
            continue
        stack.append((x, True))
        if isinstance(x, Op):
            stack.extend((a, False) for a in reversed(x.args))
        elif isinstance(x, Load):
            stack.append((x.index, False))


def count_ops(kernel: Kernel) -> dict:
    """How many ops of each name the kernel's expressions hold (for tests and reports)."""
    out: dict[str, int] = {}
    for s in walk_stmts(kernel.body):
        seen: set = set()
        for e in stmt_exprs(s):
            for x in walk_expr(e, seen):
                if isinstance(x, Op):
                    out[x.op] = out.get(x.op, 0) + 1
    return out


def verify_kernel(k: Kernel) -> None:
    """Loop variables are bound where used, buffers are the kernel's, index types are int64."""
    bufs = {id(b) for b in k.buffers}
    names = [b.name for b in k.buffers]
    if len(set(names)) != len(names):
        raise CompileError(f"kernel {k.name}: duplicate buffer names {names}")

    def check_expr(e, scope):
        for x in walk_expr(e):
            if isinstance(x, Var) and x.name not in scope:
                raise CompileError(f"kernel {k.name}: variable {x.name} used outside its scope")
            if isinstance(x, Load):
                if id(x.buf) not in bufs:
                    raise CompileError(f"kernel {k.name}: load from foreign buffer {x.buf.name}")
                if x.index.dtype is not INDEX:
                    raise CompileError(f"kernel {k.name}: index of {x.buf.name} is {x.index.dtype.name}")

    def visit(body, scope):
        scope = dict(scope)
        for s in body:
            if isinstance(s, Loop):
                if s.var.name in scope:
                    raise CompileError(f"kernel {k.name}: loop variable {s.var.name} shadows another")
                visit(s.body, {**scope, s.var.name: s.var})
            elif isinstance(s, Store):
                if id(s.buf) not in bufs or s.buf.role in ("input", "const"):
                    raise CompileError(f"kernel {k.name}: store to {s.buf.role} buffer {s.buf.name}")
                if s.value.dtype is not s.buf.dtype:
                    raise CompileError(f"kernel {k.name}: storing {s.value.dtype.name} into "
                                       f"{s.buf.dtype.name} buffer {s.buf.name}")
                check_expr(s.index, scope)
                check_expr(s.value, scope)
            elif isinstance(s, Local):
                check_expr(s.init, scope)
                scope[s.var.name] = s.var
            elif isinstance(s, Assign):
                if s.var.name not in scope:
                    raise CompileError(f"kernel {k.name}: assignment to undeclared {s.var.name}")
                check_expr(s.value, scope)
            elif isinstance(s, If):
                check_expr(s.cond, scope)
                visit(s.then, scope)
                visit(s.orelse, scope)
    visit(k.body, {})


# ---- printing ------------------------------------------------------------------------------------
_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "idx_div": "//", "idx_mod": "%",
          "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!=",
          "and_": "&&", "or_": "||", "bit_and": "&", "bit_or": "|", "bit_xor": "^",
          "shl": "<<", "shr": ">>"}


def _fmt_const(c: Const) -> str:
    if c.dtype.is_float:
        v = c.value
        s = repr(v) if np.isfinite(v) else ("nan" if np.isnan(v) else ("inf" if v > 0 else "-inf"))
        return s if c.dtype is dt.float32 else f"{s}:{c.dtype.name}"
    if c.dtype.is_bool:
        return "true" if c.value else "false"
    return str(c.value) if c.dtype is INDEX else f"{c.value}:{c.dtype.name}"


class _Printer:
    def __init__(self):
        self.lines: list[str] = []
        self.tmp = itertools.count()

    def expr(self, e: Expr, names: dict) -> str:
        if id(e) in names:
            return names[id(e)]
        if isinstance(e, Const):
            return _fmt_const(e)
        if isinstance(e, Var):
            return e.name
        if isinstance(e, Load):
            return f"{e.buf.name}[{self.expr(e.index, names)}]"
        args = [self.expr(a, names) for a in e.args]
        if e.op == "cast":
            return f"{e.to.name}({args[0]})"
        if e.op in _INFIX and len(args) == 2:
            s = f"({args[0]} {_INFIX[e.op]} {args[1]})"
        else:
            s = f"{e.op.rstrip('_')}({', '.join(args)})"
        return s + ("~" if e.fast else "")

    def shared(self, exprs, names: dict, indent: str) -> None:
        """Name (``let tN = ...``) the non-trivial subexpressions a statement uses twice."""
        counts: dict[int, int] = {}
        order = []

        def count(e):
            stack = [e]
            while stack:
                x = stack.pop()
                if isinstance(x, (Const, Var)) or id(x) in names:
                    continue
                counts[id(x)] = counts.get(id(x), 0) + 1
                if counts[id(x)] == 1:
                    order.append(x)
                    stack.extend(x.args if isinstance(x, Op) else [x.index])
        for e in exprs:
            count(e)
        for x in reversed(order):  # children were appended after parents
            if counts[id(x)] > 1 and id(x) not in names:
                text = self.expr(x, names)
                n = f"t{next(self.tmp)}"
                self.lines.append(f"{indent}let {n} = {text}")
                names[id(x)] = n

    def body(self, stmts, depth: int) -> None:
        ind = "  " * depth
        for s in stmts:
            if isinstance(s, Loop):
                self.lines.append(f"{ind}{s.kind} for {s.var.name} in 0..{s.extent}:")
                self.body(s.body, depth + 1)
                continue
            names: dict = {}
            self.shared(stmt_exprs(s), names, ind)
            if isinstance(s, Store):
                self.lines.append(f"{ind}{s.buf.name}[{self.expr(s.index, names)}] = {self.expr(s.value, names)}")
            elif isinstance(s, Local):
                self.lines.append(f"{ind}var {s.var.name}: {s.var.dtype.name} = {self.expr(s.init, names)}")
            elif isinstance(s, Assign):
                self.lines.append(f"{ind}{s.var.name} = {self.expr(s.value, names)}")
            elif isinstance(s, If):
                self.lines.append(f"{ind}if {self.expr(s.cond, names)}:")
                self.body(s.then, depth + 1)
                if s.orelse:
                    self.lines.append(f"{ind}else:")
                    self.body(s.orelse, depth + 1)
            elif isinstance(s, ExternCall):
                args = ", ".join(a.name if isinstance(a, Buffer) else repr(a) for a in s.args)
                extra = "".join(f", {k}={v!r}" for k, v in s.attrs.items())
                self.lines.append(f"{ind}call {s.fn}({args}{extra})")


def format_kernel(k: Kernel) -> str:
    p = _Printer()
    sig = ", ".join(repr(b) for b in k.params)
    p.lines.append(f"kernel {k.name}({sig}):")
    if k.source:
        p.lines.append(f"  # from {', '.join(k.source[:6])}{' …' if len(k.source) > 6 else ''}")
    for t in k.temps:
        p.lines.append(f"  {t!r}")
    p.body(k.body, 1)
    return "\n".join(p.lines)
