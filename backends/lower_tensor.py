"""Lazy tensors: how lowering describes a value before deciding where it is stored.

A lazy tensor ``T`` knows its shape and dtype and answers ``t.at(idx)``: the kernel-IR scalar
expression of its element at index ``idx`` (a list of int64 expressions). Movement ops become
index arithmetic on these objects without touching memory:

- ``View``: a strided window on a buffer (transpose, slice, broadcast, most reshapes are just
  new strides, as numpy views are);
- ``Fill``: the same scalar everywhere (a broadcast constant);
- ``Map``: an elementwise formula (a registry ``scalar``) over operands of the same shape;
- ``Generic``: any index function (gather, pad, reshapes that need division …);
- ``Pending``: a computation with its own loop nest (reduction, matmul template …), which is
  emitted into whatever buffer it is finally stored in, or into a temp the first time it is read.

``try_reshape`` succeeds only when the reshape needs no division (used to merge loop dims);
``reshape`` always succeeds, falling back to div/mod index arithmetic.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from irgraph.dtype import DType

from .kernel_ir import INDEX, Buffer, Const, Expr, IRBuilder, Load, LoweringError, Op, Var, walk_expr

_ib = IRBuilder()  # index arithmetic
_MEMO: list = [None]  # the expression memo of the stage being built (see LowerCtx.stage)


def iconst(v: int) -> Const:
    return Const(int(v), INDEX)


def iadd(a: Expr, b) -> Expr:
    return _ib.add(a, b if isinstance(b, Expr) else iconst(b))


def imul(a: Expr, b) -> Expr:
    return _ib.mul(a, b if isinstance(b, Expr) else iconst(b))


def isub(a: Expr, b) -> Expr:
    return _ib.sub(a, b if isinstance(b, Expr) else iconst(b))


def idiv(a: Expr, b: int) -> Expr:
    return _ib.idx_div(a, iconst(b))


def imod(a: Expr, b: int) -> Expr:
    return _ib.idx_mod(a, iconst(b))


def iclamp(a: Expr, lo: int, hi: int) -> Expr:
    """min(max(a, lo), hi) on indices: keeps a load in bounds when a select discards it."""
    return _ib.min(_ib.max(a, iconst(lo)), iconst(hi))


def numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def c_strides(shape) -> tuple:
    st, acc = [], 1
    for d in reversed(shape):
        st.append(acc)
        acc *= int(d)
    return tuple(reversed(st))


def linearize(idx: Sequence[Expr], shape) -> Expr:
    flat = iconst(0)
    for i, s in zip(idx, c_strides(shape)):
        flat = iadd(flat, imul(i, s))
    return flat


def delinearize(flat: Expr, shape) -> list:
    out = []
    for k, d in enumerate(shape):
        inner = numel(shape[k + 1:])
        v = idiv(flat, inner) if inner != 1 else flat
        out.append(imod(v, d) if k > 0 else v)
    return out


def broadcast_shape(a, b) -> tuple:
    return tuple(np.broadcast_shapes(tuple(a), tuple(b)))


# ---- the lazy tensors ----------------------------------------------------------------------------
class T:
    """A lazy tensor; see the module docstring."""

    def __init__(self, shape, dtype: DType, ctx):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = dtype
        self.ctx = ctx

    @property
    def size(self) -> int:
        return numel(self.shape)

    @property
    def rank(self) -> int:
        return len(self.shape)

    def at(self, idx: Sequence[Expr]) -> Expr:
        idx = list(idx)
        if len(idx) != len(self.shape):
            raise LoweringError(f"internal: {len(idx)} indices for a rank-{len(self.shape)} tensor")
        memo = _MEMO[0]
        if memo is None:
            return self._at(idx)
        key = (id(self), tuple(id(e) for e in idx))
        hit = memo.get(key)
        if hit is not None:
            return hit[2]
        r = self._at(idx)
        memo[key] = (idx, self, r)  # keeps the keyed objects alive, so their ids stay unique
        return r

    def _at(self, idx):  # pragma: no cover - abstract
        raise NotImplementedError

    def cost(self) -> int:
        """Rough work per element (ops in its expression), to decide what to materialize."""
        return 0

    # -- shape ops (subclasses do better where they can) --
    def try_reshape(self, shape) -> "T | None":
        shape = tuple(int(d) for d in shape)
        if shape == self.shape:
            return self
        if [d for d in shape if d != 1] == [d for d in self.shape if d != 1]:
            return _unit_reshape(self, shape)
        return None

    def reshape(self, shape) -> "T":
        shape = tuple(int(d) for d in shape)
        if numel(shape) != self.size:
            raise LoweringError(f"internal: reshape {self.shape} -> {shape}")
        r = self.try_reshape(shape)
        if r is not None:
            return r
        src = self
        if src.cost() > 2:  # division per element on top of a costly formula: compute it once
            src = self.ctx.force(src)
            r = src.try_reshape(shape)
            if r is not None:
                return r

        def fn(idx, _src=src, _shape=shape):
            return _src.at(delinearize(linearize(idx, _shape), _src.shape))
        return Generic(shape, self.dtype, self.ctx, fn, src.cost() + 2)

    def permute(self, perm) -> "T":
        perm = tuple(perm)
        if perm == tuple(range(self.rank)):
            return self
        inv = np.argsort(perm)

        def fn(idx, _s=self, _inv=inv):
            return _s.at([idx[int(k)] for k in _inv])
        return Generic(tuple(self.shape[p] for p in perm), self.dtype, self.ctx, fn, self.cost())

    def broadcast_to(self, shape) -> "T":
        shape = tuple(int(d) for d in shape)
        if shape == self.shape:
            return self
        lead = len(shape) - self.rank
        if lead < 0 or any(d != 1 and d != s for d, s in zip(self.shape, shape[lead:])):
            raise LoweringError(f"internal: cannot broadcast {self.shape} to {shape}")
        src = self
        if self.cost() > 3 and numel(shape) >= 4 * max(1, self.size):
            src = self.ctx.force(self)  # do not recompute a costly formula per broadcast copy
            return src.broadcast_to(shape)

        def fn(idx, _s=src, _lead=lead):
            return _s.at([iconst(0) if d == 1 else idx[_lead + k] for k, d in enumerate(_s.shape)])
        return Generic(shape, self.dtype, self.ctx, fn, src.cost())

    def slice(self, axis: int, start: int, step: int, n: int) -> "T":
        shape = list(self.shape)
        shape[axis] = n

        def fn(idx, _s=self):
            idx = list(idx)
            idx[axis] = iadd(imul(idx[axis], step), start)
            return _s.at(idx)
        return Generic(shape, self.dtype, self.ctx, fn, self.cost())


def _unit_reshape(t: T, shape) -> T:
    """A reshape that only adds or drops size-1 dims: index mapping without arithmetic."""
    keep_new = [k for k, d in enumerate(shape) if d != 1]
    old = t.shape

    def fn(idx, _t=t):
        it = iter(idx[k] for k in keep_new)
        return _t.at([iconst(0) if d == 1 else next(it) for d in old])
    return Generic(shape, t.dtype, t.ctx, fn, t.cost(), unit_of=t)


class View(T):
    """``buf[offset + sum(idx[k] * strides[k])]``."""

    def __init__(self, buf: Buffer, shape, strides, offset: int, ctx):
        super().__init__(shape, buf.dtype, ctx)
        self.buf = buf
        self.strides = tuple(int(s) for s in strides)
        self.offset = int(offset)

    @staticmethod
    def of(buf: Buffer, ctx, shape=None) -> "View":
        shape = buf.shape if shape is None else tuple(shape)
        return View(buf, shape, c_strides(shape), 0, ctx)

    def flat(self, idx) -> Expr:
        e = iconst(self.offset)
        for i, s, d in zip(idx, self.strides, self.shape):
            if s != 0 and d != 1:
                e = iadd(e, imul(i, s))
        return e

    def _at(self, idx):
        return Load(self.buf, self.flat(idx))

    @property
    def contiguous(self) -> bool:
        return all(s == c or d == 1 for s, c, d in zip(self.strides, c_strides(self.shape), self.shape))

    def try_reshape(self, shape):
        shape = tuple(int(d) for d in shape)
        if shape == self.shape:
            return self
        st = nocopy_strides(self.shape, self.strides, shape)
        if st is None:
            return None
        return View(self.buf, shape, st, self.offset, self.ctx)

    def permute(self, perm):
        return View(self.buf, [self.shape[p] for p in perm], [self.strides[p] for p in perm],
                    self.offset, self.ctx)

    def broadcast_to(self, shape):
        shape = tuple(int(d) for d in shape)
        lead = len(shape) - self.rank
        if lead < 0 or any(d != 1 and d != s for d, s in zip(self.shape, shape[lead:])):
            raise LoweringError(f"internal: cannot broadcast {self.shape} to {shape}")
        st = [0] * lead + [0 if d == 1 and s != 1 else st_ for d, s, st_ in
                           zip(self.shape, shape[lead:], self.strides)]
        return View(self.buf, shape, st, self.offset, self.ctx)

    def slice(self, axis, start, step, n):
        shape, st = list(self.shape), list(self.strides)
        off = self.offset + start * st[axis] if n > 0 else self.offset
        shape[axis] = n
        st[axis] *= step
        return View(self.buf, shape, st, off, self.ctx)

    def to_numpy(self) -> np.ndarray:
        """The values of a view on a const buffer (for compile-time layout changes)."""
        if self.buf.data is None:
            raise LoweringError("internal: to_numpy of a runtime buffer")
        flat = self.buf.data.reshape(-1)
        if self.size == 0:
            return np.zeros(self.shape, flat.dtype)
        if all(st >= 0 for st in self.strides):
            # a strided view copied (ResNet-18's weights: 0.16 s as an index gather)
            view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=tuple(self.shape),
                                                   strides=tuple(st * flat.itemsize for st in self.strides),
                                                   writeable=False)
            return np.array(view, copy=True)
        idx = np.full(self.shape, self.offset, np.int64)
        for k, (d, s) in enumerate(zip(self.shape, self.strides)):
            sh = [1] * self.rank
            sh[k] = d
            idx = idx + (np.arange(d, dtype=np.int64) * s).reshape(sh)
        return flat[idx]


def nocopy_strides(old_shape, old_strides, new_shape):
    """Strides that view the same elements under ``new_shape``, or None when that needs a copy
    (numpy's no-copy reshape rule)."""
    if numel(old_shape) == 0:
        return c_strides(new_shape)
    od = [(d, s) for d, s in zip(old_shape, old_strides) if d != 1]
    nd_idx = [k for k, d in enumerate(new_shape) if d != 1]
    nd = [new_shape[k] for k in nd_idx]
    ns = [0] * len(nd)
    oi, ni = 0, 0
    while ni < len(nd) and oi < len(od):
        oj, nj = oi + 1, ni + 1
        np_, op_ = nd[ni], od[oi][0]
        while np_ != op_:
            if np_ < op_:
                if nj >= len(nd):
                    return None
                np_ *= nd[nj]
                nj += 1
            else:
                if oj >= len(od):
                    return None
                op_ *= od[oj][0]
                oj += 1
        for k in range(oi, oj - 1):
            if od[k][1] != od[k + 1][0] * od[k + 1][1]:
                return None
        ns[nj - 1] = od[oj - 1][1]
        for k in range(nj - 1, ni, -1):
            ns[k - 1] = ns[k] * nd[k]
        oi, ni = oj, nj
    if ni != len(nd) or oi != len(od):
        return None
    out = [0] * len(new_shape)
    for k, s in zip(nd_idx, ns):
        out[k] = s
    return tuple(out)


class Fill(T):
    """One scalar expression (independent of the index) everywhere."""

    def __init__(self, value: Expr, shape, ctx):
        super().__init__(shape, value.dtype, ctx)
        self.value = value

    def _at(self, idx):
        return self.value

    def try_reshape(self, shape):
        return Fill(self.value, shape, self.ctx)

    def permute(self, perm):
        return Fill(self.value, [self.shape[p] for p in perm], self.ctx)

    def broadcast_to(self, shape):
        return Fill(self.value, shape, self.ctx)

    def slice(self, axis, start, step, n):
        shape = list(self.shape)
        shape[axis] = n
        return Fill(self.value, shape, self.ctx)


_COST = {"exp": 12, "log": 14, "tanh": 16, "erf": 20, "pow": 30, "div": 4, "sqrt": 4, "rsqrt": 5,
         "sin": 30, "cos": 30, "tan": 30, "asin": 30, "acos": 30, "atan": 30, "sinh": 30,
         "cosh": 30, "asinh": 30, "acosh": 30, "atanh": 30, "mod": 6, "fmod": 10}
_formula_costs: dict = {}


def formula_cost(formula: Callable, dtypes, attrs: dict) -> int:
    key = (id(formula), tuple(d.name for d in dtypes), repr(sorted(attrs.items(), key=lambda kv: kv[0])))
    c = _formula_costs.get(key)
    if c is None:
        try:
            e = formula(IRBuilder(), *[Var(f"x{k}", d) for k, d in enumerate(dtypes)], **attrs)
            c = sum(_COST.get(x.op, 1) for x in walk_expr(e) if isinstance(x, Op))
        except Exception:
            c = 1
        _formula_costs[key] = c
    return c


class Map(T):
    """``formula(b, *operands, **attrs)`` elementwise; operands already have this shape."""

    def __init__(self, formula: Callable, operands: Sequence[T], attrs: dict, shape, dtype: DType, ctx,
                 out_dtype: DType | None = None):
        super().__init__(shape, out_dtype or dtype, ctx)
        self.formula = formula
        self.operands = list(operands)
        self.attrs = dict(attrs)
        self._own = formula_cost(formula, [o.dtype for o in self.operands], self.attrs)
        self._cost = self._own + sum(o.cost() for o in self.operands)

    def cost(self):
        return self._cost

    def _at(self, idx):
        b = IRBuilder()
        r = self.formula(b, *[o.at(idx) for o in self.operands], **self.attrs)
        if not isinstance(r, Expr):
            raise LoweringError("internal: a scalar formula returned a non-expression")
        if r.dtype is not self.dtype:
            r = b.cast(r, self.dtype)
        return r

    def _with(self, operands):
        m = Map.__new__(Map)
        T.__init__(m, operands[0].shape if operands else self.shape, self.dtype, self.ctx)
        m.formula, m.operands, m.attrs, m._own = self.formula, list(operands), self.attrs, self._own
        m._cost = self._cost
        return m

    def try_reshape(self, shape):
        shape = tuple(int(d) for d in shape)
        if shape == self.shape:
            return self
        ops = [o.try_reshape(shape) for o in self.operands]
        if any(o is None for o in ops):
            return super().try_reshape(shape)
        m = self._with(ops)
        m.shape = shape
        return m

    def permute(self, perm):
        m = self._with([o.permute(perm) for o in self.operands])
        m.shape = tuple(self.shape[p] for p in perm)
        return m

    def broadcast_to(self, shape):
        shape = tuple(int(d) for d in shape)
        if shape == self.shape:
            return self
        if self._cost > 3 and numel(shape) >= 4 * max(1, self.size):
            return self.ctx.force(self).broadcast_to(shape)
        m = self._with([o.broadcast_to(shape) for o in self.operands])
        m.shape = shape
        return m

    def slice(self, axis, start, step, n):
        m = self._with([o.slice(axis, start, step, n) for o in self.operands])
        shape = list(self.shape)
        shape[axis] = n
        m.shape = tuple(shape)
        return m


class Generic(T):
    """Any index function ``fn(idx) -> Expr``."""

    def __init__(self, shape, dtype: DType, ctx, fn: Callable, cost: int = 1, unit_of: T | None = None):
        super().__init__(shape, dtype, ctx)
        self.fn = fn
        self._cost = cost
        self.unit_of = unit_of  # set when this only adds/drops unit dims of another tensor

    def cost(self):
        return self._cost

    def _at(self, idx):
        return self.fn(idx)

    def try_reshape(self, shape):
        shape = tuple(int(d) for d in shape)
        if self.unit_of is not None and [d for d in shape if d != 1] != [d for d in self.shape if d != 1]:
            return self.unit_of.try_reshape(shape)
        return super().try_reshape(shape)


class Pending(T):
    """A computation with its own loop nest: ``emit(ctx, dest_view)`` stores it into ``dest``."""

    def __init__(self, shape, dtype: DType, ctx, emit: Callable, label: str = ""):
        super().__init__(shape, dtype, ctx)
        self.emit_fn = emit
        self.label = label
        self.single_use = False    # set by lowering: only one elementwise consumer reads it

    def cost(self):
        return 100

    def emit(self, ctx, dest: View) -> None:
        self.emit_fn(ctx, dest)

    def _at(self, idx):
        return self.ctx.force(self).at(idx)

    def try_reshape(self, shape):
        if tuple(shape) == self.shape:
            return self
        return self.ctx.force(self).try_reshape(shape)

    def reshape(self, shape):
        if tuple(shape) == self.shape:
            return self
        return self.ctx.force(self).reshape(shape)

    def permute(self, perm):
        if tuple(perm) == tuple(range(self.rank)):
            return self
        return self.ctx.force(self).permute(perm)

    def broadcast_to(self, shape):
        if tuple(shape) == self.shape:
            return self
        return self.ctx.force(self).broadcast_to(shape)

    def slice(self, axis, start, step, n):
        return self.ctx.force(self).slice(axis, start, step, n)


class Concat(T):
    """Inputs joined along ``axis``: stored part by part; read elementwise by a select chain."""

    def __init__(self, parts: Sequence[T], axis: int, ctx):
        shape = list(parts[0].shape)
        shape[axis] = sum(p.shape[axis] for p in parts)
        super().__init__(shape, parts[0].dtype, ctx)
        self.parts = [p for p in parts if p.shape[axis] > 0]
        self.axis = axis

    def cost(self):
        return 2 + max((p.cost() for p in self.parts), default=0)

    def emit(self, ctx, dest: View) -> None:
        off = 0
        for p in self.parts:
            n = p.shape[self.axis]
            ctx.store(p, dest.slice(self.axis, off, 1, n))
            off += n

    def _at(self, idx):
        b = IRBuilder()
        a = self.axis
        pos = idx[a]
        offs = []
        off = 0
        for p in self.parts:
            offs.append(off)
            off += p.shape[a]
        result = None
        for p, o in reversed(list(zip(self.parts, offs))):
            local = list(idx)
            local[a] = iclamp(isub(pos, o), 0, p.shape[a] - 1)
            v = p.at(local)
            result = v if result is None else b.select(b.lt(pos, iconst(o + p.shape[a])), v, result)
        return result
