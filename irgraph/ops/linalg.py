"""Linear algebra: matmul (numpy semantics, batched), einsum, det."""
from __future__ import annotations

import string

import numpy as np

from .. import dtype as dt
from ..types import is_static_dim
from .declare import FLOAT_TYPES, INT_TYPES
from .elementwise_grad import GradOps
from .grad import is_float
from .registry import Attr, OpDef, register
from .shapes import broadcast_shapes, out, same_dtype

# numpy has no fast (BLAS) kernels for these; they are computed in float32 and rounded back,
# which is also how accelerators accumulate half-precision products.
_HALF_TYPES = (np.dtype(np.float16), dt.bfloat16.np)


def _widen(*arrays):
    """Arrays in a dtype numpy computes products in quickly and accurately, and the dtype to return."""
    odt = arrays[0].dtype
    if odt in _HALF_TYPES:
        return [a.astype(np.float32) for a in arrays], odt
    return list(arrays), odt


# ---- matmul --------------------------------------------------------------------------------
def matmul_shape(sa, sb, ctx):
    """The output shape of numpy matmul of shapes ``sa`` and ``sb`` (None = unknown rank)."""
    if sa is None or sb is None:
        return None
    sa, sb = list(sa), list(sb)
    if not sa or not sb:
        ctx.fail("matmul needs inputs of rank >= 1", expected="rank >= 1", actual=(len(sa), len(sb)))
    va, vb = len(sa) == 1, len(sb) == 1
    if va:
        sa = [1] + sa
    if vb:
        sb = sb + [1]
    k1, k2 = sa[-1], sb[-2]
    if is_static_dim(k1) and is_static_dim(k2) and k1 != k2:
        ctx.fail("inner dimensions differ", input=1, expected=f"K={k1}", actual=f"K={k2}")
    batch = broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2]), ctx=ctx)
    return tuple(list(batch) + ([] if va else [sa[-2]]) + ([] if vb else [sb[-1]]))


def _matmul_infer(ctx):
    a, b = ctx.types
    dtype = same_dtype(ctx)
    if dtype not in FLOAT_TYPES + INT_TYPES:
        ctx.fail("unsupported dtype", input=0, actual=dtype.name)
    return [out(matmul_shape(a.shape, b.shape, ctx), dtype)]


def _matmul_ref(ins, a):
    (x, y), odt = _widen(np.asarray(ins[0]), np.asarray(ins[1]))
    return np.asarray(np.matmul(x, y)).astype(odt, copy=False)


def _swap_last(o, v):
    r = len(v.shape)
    return o.transpose(v, perm=list(range(r - 2)) + [r - 1, r - 2])


def _batch_sum_to(ctx, g, like_shape):
    """Sum a (..., P, Q) gradient over the batch dims that broadcasting gave it, down to the
    batch shape of ``like_shape`` (the operand's, promoted to rank >= 2)."""
    o = GradOps(ctx)
    lead = len(g.shape) - len(like_shape)
    if lead:
        g = o.reduce_sum(g, ctx.i64(list(range(lead))), keepdims=0)
    axes = [i for i, (a, b) in enumerate(zip(g.shape[:-2], like_shape[:-2])) if b == 1 and a != 1]
    if axes:
        g = o.reduce_sum(g, ctx.i64(axes), keepdims=1)
    return g


def _matmul_grad(ctx):
    o, (a, b), dy = GradOps(ctx), ctx.inputs, ctx.dy()
    if a.shape is None or b.shape is None:
        raise ctx.fail("the gradient of matmul needs operands of known rank")
    if len(a.shape) == 1 and len(b.shape) == 1:  # dot product: dy is a scalar
        return [o.mul(dy, b), o.mul(dy, a)]
    # promote 1-D operands as numpy does: a (K,) -> (1, K), b (K,) -> (K, 1), and dy with them
    a2 = o.unsqueeze(a, ctx.i64([0])) if len(a.shape) == 1 else a
    b2 = o.unsqueeze(b, ctx.i64([1])) if len(b.shape) == 1 else b
    g = dy
    if len(a.shape) == 1:
        g = o.unsqueeze(g, ctx.i64([len(g.shape) - 1]))
    if len(b.shape) == 1:
        g = o.unsqueeze(g, ctx.i64([len(g.shape)]))
    ra, rb = len(a2.shape), len(b2.shape)
    k, n = a2.shape[-1], b2.shape[-1]
    if rb == 2 and ra > 2 and isinstance(k, int) and isinstance(n, int):
        # x (..., M, K) @ w (K, N), a linear layer over a batch: fold the batch into M so the
        # weight gradient is one (K, B*M) @ (B*M, N) product, not a batch of them summed
        ga = o.matmul(g, _swap_last(o, b2))
        gb = o.matmul(_swap_last(o, o.reshape(a2, ctx.i64([-1, k]))), o.reshape(g, ctx.i64([-1, n])))
    else:
        ga = _batch_sum_to(ctx, o.matmul(g, _swap_last(o, b2)), a2.shape)
        gb = _batch_sum_to(ctx, o.matmul(_swap_last(o, a2), g), b2.shape)
    return [ctx.reshape_like(ga, a), ctx.reshape_like(gb, b)]


register(OpDef(
    "matmul", infer=_matmul_infer, inputs=(2, 2), kind="contraction", differentiable=True,
    reference=_matmul_ref, grad=_matmul_grad,
    doc="numpy matmul: batched, broadcasting, 1-D operands promoted",
))


# ---- einsum --------------------------------------------------------------------------------
_ELLIPSIS = "."  # one token stands for the whole '...' of a term


def _split_term(term: str, fail):
    """'a...bc' -> ['a', '.', 'b', 'c']."""
    tokens, i = [], 0
    while i < len(term):
        if term.startswith("...", i):
            if _ELLIPSIS in tokens:
                fail(f"einsum term {term!r} has more than one ellipsis")
            tokens.append(_ELLIPSIS)
            i += 3
            continue
        c = term[i]
        if not c.isalpha():
            fail(f"einsum term {term!r} has a character {c!r} that is not a letter or '...'")
        tokens.append(c)
        i += 1
    return tokens


def parse_einsum(equation: str, ranks, fail=None):
    """Parse an einsum equation for inputs of the given ranks (None = unknown).

    Returns ``(terms, output)``: for each input a list of labels (ellipsis dims become the
    labels ``'0'``, ``'1'``, … counted from the right-aligned broadcast batch), and the
    output's labels. ``fail(msg)`` raises; the default raises ShapeError.
    """
    if fail is None:
        def fail(msg):
            from ..errors import ShapeError
            raise ShapeError(msg, op="einsum")
    eq = equation.replace(" ", "")
    if "->" in eq:
        lhs, rhs = eq.split("->", 1)
        explicit = True
    else:
        lhs, rhs, explicit = eq, "", False
    in_terms = lhs.split(",")
    if len(in_terms) != len(ranks):
        fail(f"equation {equation!r} has {len(in_terms)} input terms but the op has {len(ranks)} inputs")
    toks = [_split_term(t, fail) for t in in_terms]
    ell_rank = 0
    for t, r in zip(toks, ranks):
        letters = len([c for c in t if c != _ELLIPSIS])
        if r is None:
            if _ELLIPSIS in t:
                return None, None  # ellipsis width unknown: cannot label the dims
            continue
        if _ELLIPSIS in t:
            if r < letters:
                fail(f"einsum term {''.join(t)!r} names {letters} dims but its input has rank {r}")
            ell_rank = max(ell_rank, r - letters)
        elif r != letters:
            fail(f"einsum term {''.join(t).replace(_ELLIPSIS, '...')!r} names {letters} dims "
                 f"but its input has rank {r}")
    ell_labels = [str(i) for i in range(ell_rank)]
    terms = []
    for t, r in zip(toks, ranks):
        labels = []
        for c in t:
            if c == _ELLIPSIS:
                n = r - (len(t) - 1)
                labels.extend(ell_labels[ell_rank - n:])
            else:
                labels.append(c)
        terms.append(labels)
    if explicit:
        otoks = _split_term(rhs, fail)
        output = []
        for c in otoks:
            if c == _ELLIPSIS:
                output.extend(ell_labels)
            else:
                if c in output:
                    fail(f"output label {c!r} repeated in einsum equation {equation!r}")
                if not any(c in t for t in toks):
                    fail(f"output label {c!r} of einsum equation {equation!r} is not in any input")
                output.append(c)
    else:
        counts: dict[str, int] = {}
        for t in toks:
            for c in t:
                if c != _ELLIPSIS:
                    counts[c] = counts.get(c, 0) + 1
        output = ell_labels + sorted(c for c, n in counts.items() if n == 1)
    return terms, output


def _einsum_infer(ctx):
    dtype = same_dtype(ctx)
    if dtype not in FLOAT_TYPES + INT_TYPES:
        ctx.fail("unsupported dtype", input=0, expected="a float or integer type", actual=dtype.name)
    types = ctx.types
    terms, output = parse_einsum(ctx.attrs["equation"], [t.rank for t in types], ctx.fail)
    if terms is None or any(t.shape is None for t in types):
        if output is not None:
            return [out(tuple(ctx.fresh("einsum") for _ in output), dtype)]
        return [out(None, dtype)]
    dims: dict[str, list] = {}
    for t, labels in zip(types, terms):
        for lab, d in zip(labels, t.shape):
            dims.setdefault(lab, []).append(d)
    sizes = {}
    for lab, ds in dims.items():
        static = {d for d in ds if is_static_dim(d)}
        big = static - {1}
        if len(big) > 1:
            ctx.fail(f"label {lab!r} has inconsistent sizes {sorted(static)}" if lab.isalpha()
                     else f"ellipsis dims do not broadcast: sizes {sorted(static)}")
        if big:
            sizes[lab] = big.pop()
        else:
            syms = [d for d in ds if not is_static_dim(d)]
            sizes[lab] = syms[0] if syms else 1
    return [out(tuple(sizes[lab] for lab in output), dtype)]


def _einsum_ref(ins, a):
    arrays = [np.asarray(x) for x in ins]
    xs, odt = _widen(*arrays)
    eq = a["equation"].replace(" ", "")
    res = np.einsum(eq, *xs, optimize=len(xs) > 2)
    return np.asarray(res).astype(odt, copy=False)


def _einsum_grad(ctx):
    """Each operand's gradient is itself an einsum: of dy and the other operands, producing the
    operand's labels. A label only the operand has (summed away) is restored by a ones vector,
    a repeated label (a diagonal) by an identity matrix; broadcast size-1 dims are summed."""
    o, xs, dy = GradOps(ctx), ctx.inputs, ctx.dy()
    if any(x.shape is None for x in xs):
        raise ctx.fail("the gradient of einsum needs operands of known rank")
    terms, output = parse_einsum(ctx.attrs["equation"], [len(x.shape) for x in xs], ctx.fail)
    used = {c for t in terms for c in t if c.isalpha()}
    free = iter([c for c in string.ascii_letters if c not in used])
    letters: dict[str, str] = {}

    def letter(lab):  # ellipsis dims are labelled '0', '1', ...: give them letters too
        if lab.isalpha():
            return lab
        if lab not in letters:
            letters[lab] = next(free, None) or _too_many(ctx)
        return letters[lab]
    terms = [[letter(c) for c in t] for t in terms]
    out_term = "".join(letter(c) for c in output)
    grads = []
    for i, x in enumerate(xs):
        if not is_float(x):
            grads.append(None)
            continue
        ops, subs = [dy], [out_term]
        for j, (xj, tj) in enumerate(zip(xs, terms)):
            if j != i:
                ops.append(xj)
                subs.append("".join(tj))
        avail = set(out_term).union(*[set(t) for j, t in enumerate(terms) if j != i])
        target, seen = [], set()
        for pos, lab in enumerate(terms[i]):
            size = x.shape[pos]
            if lab in seen or lab not in avail:
                if not isinstance(size, int):
                    raise ctx.fail("the gradient of einsum needs static sizes for diagonals and "
                                   "summed-away labels", expected="static dims", actual=x.shape)
            if lab in seen:
                fresh = next(free, None) or _too_many(ctx)
                ops.append(ctx.const(np.eye(size), like=x))
                subs.append(lab + fresh)
                target.append(fresh)
                continue
            seen.add(lab)
            if lab not in avail:
                ops.append(ctx.const(np.ones(size), like=x))
                subs.append(lab)
                avail.add(lab)
            target.append(lab)
        g = o.einsum(*ops, equation=",".join(subs) + "->" + "".join(target))
        grads.append(ctx.sum_to(g, x))
    return grads


def _too_many(ctx):
    raise ctx.fail("einsum gradient: more labels than letters")


register(OpDef(
    "einsum", infer=_einsum_infer, reference=_einsum_ref, inputs=(1, None), kind="contraction",
    attrs={"equation": Attr("str", doc="numpy/ONNX einsum equation, e.g. 'bij,bjk->bik'")},
    differentiable=True, grad=_einsum_grad,
    doc="Einstein summation over any number of inputs (ellipsis, implicit output, diagonals)",
))


# ---- det -----------------------------------------------------------------------------------
def _det_infer(ctx):
    x = ctx.type(0)
    if x.dtype not in FLOAT_TYPES:
        ctx.fail("unsupported dtype", input=0, expected="a float type", actual=x.dtype.name)
    if x.shape is None:
        return [out(None, x.dtype)]
    if len(x.shape) < 2:
        ctx.fail("det needs a (..., M, M) input", input=0, expected="rank >= 2", actual=len(x.shape))
    m, n = x.shape[-2:]
    if is_static_dim(m) and is_static_dim(n) and m != n:
        ctx.fail("det needs square matrices", input=0, expected=f"(..., {m}, {m})", actual=x.shape)
    return [out(x.shape[:-2], x.dtype)]


def _det_ref(ins, a):
    x = np.asarray(ins[0])
    wide = x.astype(np.float64) if x.dtype != np.float64 else x
    return np.asarray(np.linalg.det(wide)).astype(x.dtype)


def _det_grad(ctx):
    o, x, dy = GradOps(ctx), ctx.inputs[0], ctx.dy()
    if x.shape is None or not isinstance(x.shape[-1], int):
        raise ctx.fail("the gradient of det needs a static matrix size", actual=x.shape)
    r, m = len(x.shape), x.shape[-1]
    g = o.unsqueeze(dy, ctx.i64([r - 2, r - 1]))
    if m == 1:
        return [g]
    # d det / dx_ij is the cofactor (-1)^(i+j) det(minor_ij): exact for singular matrices too,
    # unlike det * inv(x)^T. The m*m minors come from two gathers of x.
    rest = ctx.i64([[k for k in range(m) if k != i] for i in range(m)])        # (m, m-1)
    sub = o.gather(o.gather(x, rest, axis=r - 2), rest, axis=r)             # [..., i, r, j, c]
    minors = o.det(o.transpose(sub, perm=list(range(r - 2)) + [r - 2, r, r - 1, r + 1]))
    sign = ctx.const((-1.0) ** np.add.outer(np.arange(m), np.arange(m)), like=x)
    return [o.mul(o.mul(minors, sign), g)]


register(OpDef(
    "det", infer=_det_infer, reference=_det_ref, kind="other", differentiable=True, grad=_det_grad,
    doc="determinant of each (M, M) matrix in the trailing two dims",
))
