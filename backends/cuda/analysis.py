"""Which loops of a kernel-IR loop nest may run as independent CUDA threads.

The kernel IR says ``parallel`` only where the CPU wanted threads (enough work); small loops
and reduction loops say ``serial``. A GPU needs the answer for every loop, so this module
proves it from the index expressions, for a candidate set ``P`` of loop variables:

1. every index of a buffer the region writes is split into ``A(P) + B(rest)``: terms that use
   only ``P`` variables, and terms that use only the other loop variables (whose range comes
   from interval arithmetic). A term mixing both, or an index read from memory, fails;
2. the elements each ``P`` point may write (the hull of ``A(p) + [lo(B), hi(B)]`` over the
   stores) must be disjoint between points, and every read of a written buffer must fall in
   the reader's own hull.

``A`` is evaluated with numpy over the whole ``P`` grid (up to ``NUMERIC_LIMIT`` points); for
larger grids an affine ``A`` is checked in closed form (mixed-radix strides). Anything not
proven stays serial: correct, only slower.
"""
from __future__ import annotations

import numpy as np

from ..kernel_ir import (INDEX, Assign, Const, ExternCall, Load, Local, Loop, Op, Store, Var,
                         stmt_exprs, walk_expr, walk_stmts)

NUMERIC_LIMIT = 1 << 22


# ---- index expressions -------------------------------------------------------------------------
def terms(e) -> list:
    """``e`` as a sum of (integer coefficient, atom) pairs; atom None is the constant term."""
    if isinstance(e, Const):
        return [(int(e.value), None)]
    if isinstance(e, Op) and e.dtype is INDEX:
        if e.op == "add":
            return terms(e.args[0]) + terms(e.args[1])
        if e.op == "sub":
            return terms(e.args[0]) + [(-c, a) for c, a in terms(e.args[1])]
        if e.op == "neg":
            return [(-c, a) for c, a in terms(e.args[0])]
        if e.op == "mul":
            x, y = e.args
            if isinstance(y, Const):
                return [(c * int(y.value), a) for c, a in terms(x)]
            if isinstance(x, Const):
                return [(c * int(x.value), a) for c, a in terms(y)]
    return [(1, e)]


def leaves(e) -> tuple[set, bool]:
    """(names of the Vars ``e`` reads, whether it reads memory or casts data)."""
    names, data = set(), False
    for x in walk_expr(e):
        if isinstance(x, Var):
            names.add(x.name)
        elif isinstance(x, Load):
            data = True
        elif isinstance(x, Op) and x.op == "cast":
            data = True
    return names, data


def interval(e, ranges: dict):
    """(lo, hi) bounds of an integer expression over ``ranges`` (name -> (lo, hi)), or None."""
    if isinstance(e, Const):
        v = int(e.value)
        return v, v
    if isinstance(e, Var):
        return ranges.get(e.name)
    if not isinstance(e, Op):
        return None
    if e.op in ("lt", "le", "gt", "ge", "eq", "ne", "and_", "or_", "not_", "xor", "isnan", "isinf"):
        return 0, 1
    if e.op == "select":
        a, b = interval(e.args[1], ranges), interval(e.args[2], ranges)
        return None if a is None or b is None else (min(a[0], b[0]), max(a[1], b[1]))
    args = [interval(a, ranges) for a in e.args]
    if any(a is None for a in args):
        return None
    if e.op == "add":
        return args[0][0] + args[1][0], args[0][1] + args[1][1]
    if e.op == "sub":
        return args[0][0] - args[1][1], args[0][1] - args[1][0]
    if e.op == "neg":
        return -args[0][1], -args[0][0]
    if e.op == "mul":
        p = [x * y for x in args[0] for y in args[1]]
        return min(p), max(p)
    if e.op in ("min", "max"):
        f = min if e.op == "min" else max
        return f(args[0][0], args[1][0]), f(args[0][1], args[1][1])
    if e.op in ("idx_div", "idx_mod"):
        (lo, hi), (dlo, dhi) = args
        if dlo != dhi or dlo <= 0 or lo < 0:
            return None
        m = dlo
        if e.op == "idx_div":
            return lo // m, hi // m
        if hi - lo < m and lo % m <= hi % m:
            return lo % m, hi % m
        return 0, m - 1
    return None


_NP_CMP = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
           "eq": np.equal, "ne": np.not_equal}


def evaluate(e, env: dict):
    """Integer expression over numpy arrays (``env``: name -> array), or None."""
    cache: dict = {}
    for x in walk_expr(e):
        if isinstance(x, Const):
            r = np.int64(int(x.value)) if not x.dtype.is_bool else np.bool_(x.value)
        elif isinstance(x, Var):
            r = env.get(x.name)
        elif isinstance(x, Op):
            a = [cache.get(id(y)) for y in x.args]
            if any(v is None for v in a):
                return None
            if x.op == "add":
                r = a[0] + a[1]
            elif x.op == "sub":
                r = a[0] - a[1]
            elif x.op == "mul":
                r = a[0] * a[1]
            elif x.op == "neg":
                r = -a[0]
            elif x.op == "idx_div":
                r = a[0] // a[1]
            elif x.op == "idx_mod":
                r = a[0] % a[1]
            elif x.op == "min":
                r = np.minimum(a[0], a[1])
            elif x.op == "max":
                r = np.maximum(a[0], a[1])
            elif x.op == "select":
                r = np.where(a[0], a[1], a[2])
            elif x.op in _NP_CMP:
                r = _NP_CMP[x.op](a[0], a[1])
            elif x.op == "and_":
                r = np.logical_and(a[0], a[1])
            elif x.op == "or_":
                r = np.logical_or(a[0], a[1])
            elif x.op == "not_":
                r = np.logical_not(a[0])
            else:
                return None
        else:
            return None
        if r is None:
            return None
        cache[id(x)] = r
    return cache[id(e)]


def grid(pvars: list, extents: list) -> dict:
    """name -> values of each variable over the row-major grid of ``extents`` (last fastest)."""
    n = 1
    for d in extents:
        n *= d
    q = np.arange(n, dtype=np.int64)
    env = {}
    for v, d in zip(reversed(pvars), reversed(extents)):
        env[v.name] = q % d
        q = q // d
    return env


# ---- the independence proof --------------------------------------------------------------------
class _Split:
    """One access index split as ``const + sum(coef * P atom) + [lo, hi]``."""

    def __init__(self, const, patoms, lo, hi):
        self.const, self.patoms, self.lo, self.hi = const, patoms, lo, hi

    def values(self, env):
        a = np.int64(self.const)
        for c, atom in self.patoms:
            v = evaluate(atom, env)
            if v is None:
                return None
            a = a + c * v
        return a

    def affine(self, pnames):
        """{var name: coef} when every P atom is a bare variable, else None."""
        out: dict = {}
        for c, atom in self.patoms:
            if not isinstance(atom, Var) or atom.name not in pnames:
                return None
            out[atom.name] = out.get(atom.name, 0) + c
        return out


def _split(e, pnames: set, ranges: dict):
    const, patoms, lo, hi = 0, [], 0, 0
    for c, atom in terms(e):
        if atom is None:
            const += c
            continue
        names, data = leaves(atom)
        if data:
            return None
        if names <= pnames:
            patoms.append((c, atom))
            continue
        if names & pnames:
            return None     # mixes P and inner variables
        iv = interval(atom, ranges)
        if iv is None:
            return None
        a, b = c * iv[0], c * iv[1]
        lo += min(a, b)
        hi += max(a, b)
    return _Split(const, patoms, lo, hi)


def region_accesses(stmts, declared: set):
    """(stores [(buf, index)], loads [(buf, index)], inner loops {name: extent}, ok).
    ``ok`` is False when the region assigns a variable it did not declare or calls a template."""
    stores, loads, loops = [], [], {}
    declared = set(declared)
    ok = True
    for s in walk_stmts(stmts):
        if isinstance(s, Loop):
            loops[s.var.name] = s.extent
        elif isinstance(s, Local):
            declared.add(s.var.name)
        elif isinstance(s, Assign) and s.var.name not in declared:
            ok = False
        elif isinstance(s, ExternCall):
            ok = False
        if isinstance(s, Store):
            stores.append((s.buf, s.index))
        seen: set = set()
        for e in stmt_exprs(s):
            for x in walk_expr(e, seen):
                if isinstance(x, Load):
                    loads.append((x.buf, x.index))
    return stores, loads, loops, ok


def independent(stmts, pvars: list, pext: list, inner: dict) -> bool:
    """Do the iterations of the ``pvars`` grid (extents ``pext``) over ``stmts`` touch disjoint
    elements of every buffer the region writes? ``inner``: other loop variables in scope and
    their extents (loops around ``stmts`` that stay serial)."""
    stores, loads, loops, ok = region_accesses(stmts, set())
    if not ok:
        return False
    if not stores:
        return True
    ranges = {n: (0, max(d - 1, 0)) for n, d in {**inner, **loops}.items()}
    pnames = {v.name for v in pvars}
    written = {}
    for buf, idx in stores:
        written.setdefault(id(buf), ([], []))[0].append(idx)
    for buf, idx in loads:
        if id(buf) in written:
            written[id(buf)][1].append(idx)
    npts = 1
    for d in pext:
        npts *= d
    env = grid(pvars, pext) if npts <= NUMERIC_LIMIT else None
    for st_idx, ld_idx in written.values():
        ss = [_split(e, pnames, ranges) for e in st_idx]
        ls = [_split(e, pnames, ranges) for e in ld_idx]
        if any(s is None for s in ss + ls):
            return False
        if env is not None:
            if not _numeric_ok(ss, ls, env):
                return False
        else:
            ext = dict(zip([v.name for v in pvars], pext))
            if not (_affine_ok(ss, ls, pnames, ext) or _hybrid_ok(ss, ls, pnames, ext)):
                return False
    return True


def _numeric_ok(ss, ls, env) -> bool:
    lo = hi = None
    for s in ss:
        a = s.values(env)
        if a is None:
            return False
        a = np.broadcast_to(a, next(iter(env.values())).shape)
        lo = a + s.lo if lo is None else np.minimum(lo, a + s.lo)
        hi = a + s.hi if hi is None else np.maximum(hi, a + s.hi)
    if lo.size > 1:
        order = np.argsort(lo, kind="stable")
        if np.any(lo[order][1:] <= hi[order][:-1]):
            return False
    for s in ls:
        a = s.values(env)
        if a is None or np.any(a + s.lo < lo) or np.any(a + s.hi > hi):
            return False
    return True


def _affine_ok(ss, ls, pnames, ext) -> bool:
    if len(ss) != 1:
        return False
    s = ss[0]
    coefs = s.affine(pnames)
    if coefs is None or any(c <= 0 for c in coefs.values()):
        return False
    span = s.hi - s.lo + 1
    reach = span
    for name, c in sorted(coefs.items(), key=lambda kv: kv[1]):
        if ext[name] > 1 and c < reach:
            return False
        reach += c * (ext[name] - 1)
    for l_ in ls:
        if l_.affine(pnames) != coefs or l_.const != s.const or l_.lo < s.lo or l_.hi > s.hi:
            return False
    return True


def _hybrid_ok(ss, ls, pnames, ext) -> bool:
    """Large grids whose index mixes bare variables (closed form) with div/mod atoms of a few
    other variables (evaluated over their own, smaller grid): ``(q // 64) * S + (q % 64) * P + j``.
    Each part is a mixed-radix digit: sorted by their smallest gap, every part's gap must
    exceed the reach of all finer parts (the same rule as ``_affine_ok``)."""
    if len(ss) != 1:
        return False
    s = ss[0]
    bare: dict = {}
    other = []
    for c, atom in s.patoms:
        if isinstance(atom, Var) and atom.name in pnames:
            bare[atom.name] = bare.get(atom.name, 0) + c
        else:
            other.append((c, atom))
    qnames = set()
    for _, atom in other:
        qnames |= leaves(atom)[0]
    if qnames & set(bare) or any(c <= 0 for c in bare.values()):
        return False
    qvars = sorted(qnames)
    npts = 1
    for n in qvars:
        npts *= ext[n]
    if npts > NUMERIC_LIMIT:
        return False
    parts = []      # (gap, span)
    for name, c in bare.items():
        if ext[name] > 1:
            parts.append((c, c * (ext[name] - 1)))
    if other:
        env = grid([Var(n) for n in qvars], [ext[n] for n in qvars])
        a = np.int64(0)
        for c, atom in other:
            v = evaluate(atom, env)
            if v is None:
                return False
            a = a + c * v
        vals = np.unique(np.broadcast_to(a, (npts,)))
        if vals.size != npts:
            return False
        if npts > 1:
            parts.append((int(np.diff(vals).min()), int(vals[-1] - vals[0])))
    reach = s.hi - s.lo + 1
    for gap, span in sorted(parts):
        if gap < reach:
            return False
        reach += span
    key = sorted((c, str(a)) for c, a in s.patoms)
    for l_ in ls:
        if sorted((c, str(a)) for c, a in l_.patoms) != key or l_.const != s.const or l_.lo < s.lo or l_.hi > s.hi:
            return False
    return True


def used_vars(stmts) -> set:
    names: set = set()
    for s in walk_stmts(stmts):
        for e in stmt_exprs(s):
            names |= leaves(e)[0]
    return names
