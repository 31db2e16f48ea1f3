"""Lowering rule for tree_ensemble: a tree walk per (row, tree), with the trees as constant tables.

The trees are attributes, so everything about them is known when compiling: the flat node and
leaf arrays become const buffers (``irgraph.ops.ml._Trees`` checks and tabulates them, as the
reference does) and the longest root-to-leaf path bounds the walk. Per row (a parallel loop):

1. every target's score starts at the aggregation's identity (float64, as the reference);
2. for each tree in order, a walk of at most ``depth`` steps follows the branch each node's test
   picks (comparison modes and BRANCH_MEMBER sets as in ``ml._branch_true``, NaN going where
   ``nodes_missing_value_tracks_true`` says) until it reaches a leaf, whose weight is combined
   into its target's score (sum / average / min / max, trees in order like ``ufunc.at``);
3. average divides by the tree count, then the post transform (none, logistic, softmax,
   softmax_zero) and the cast to X's dtype.

The walk loop has a compile-time extent and a ``done`` flag, since kernel-IR loops have no
run-time exit. ``probit`` is not lowered: the reference inverts its own erf approximation by
Newton steps, which a kernel would have to copy term for term.
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt
from irgraph.ops.ml import _MEMBER, BRANCH_MODES, _targets, _Trees

from . import lower_ops
from .kernel_ir import INDEX, Assign, Const, If, Local, Loop, LoweringError, Store, Var
from .lower_ops import _b, _out
from .lower_tensor import Pending, View, iconst

_F64 = dt.float64


def _depth(trees: _Trees) -> int:
    """Steps of the longest walk from any root to a leaf; LoweringError on a cycle."""
    n = len(trees.feature)
    memo: dict[int, int] = {}
    for root in {int(r) for r in trees.roots}:
        stack = [(root, 0)]
        path: set = set()
        while stack:
            node, state = stack.pop()
            if state == 0:
                if node in memo:
                    continue
                if node in path:
                    raise LoweringError("the trees have a cycle: a path visits a node twice")
                path.add(node)
                stack.append((node, 1))
                for br in (0, 1):
                    if not trees.next_leaf[node, br]:
                        stack.append((int(trees.next_id[node, br]), 0))
            else:
                path.discard(node)
                best = 1
                for br in (0, 1):
                    if not trees.next_leaf[node, br]:
                        best = max(best, 1 + memo[int(trees.next_id[node, br])])
                memo[node] = best
    return max((memo[int(r)] for r in trees.roots), default=0) if n else 0


def _holds(b, trees: _Trees, tab: dict, node, xv):
    """Whether feature value ``xv`` (float64) takes the true branch of ``node`` (run-time index)."""
    s = tab["split"].at([node])
    tests = {0: lambda: b.le(xv, s), 1: lambda: b.lt(xv, s), 2: lambda: b.ge(xv, s),
             3: lambda: b.gt(xv, s), 4: lambda: b.eq(xv, s), 5: lambda: b.ne(xv, s)}
    modes = sorted({int(m) for m in trees.mode})
    width = trees.members.shape[1]

    def member():
        r = Const(False, dt.bool_)
        for w in range(width):
            r = b.or_(r, b.eq(xv, tab["members"].at([node, iconst(w)])))
        return r
    tests[_MEMBER] = member
    if len(modes) == 1:
        holds = tests[modes[0]]()
    else:
        mode = tab["mode"].at([node])
        holds = Const(False, dt.bool_)
        for m in modes:
            holds = b.select(b.eq(mode, Const(m, dt.int64)), tests[m](), holds)
    if trees.nan_true.any():
        holds = b.or_(holds, b.and_(b.isnan(xv), tab["nan_true"].at([node])))
    return holds


def rule_tree_ensemble(ctx, n, ins):
    x = ins[0]
    a = n.attrs
    shape, odt = _out(n)
    try:
        trees = _Trees(a)
    except ValueError as e:
        raise LoweringError(str(e), op=n.op, node=n.name) from e
    post, agg = a["post_transform"], a["aggregate_function"]
    if post not in ("none", "logistic", "softmax", "softmax_zero"):
        raise LoweringError(f"post_transform {post!r} has no native lowering (the reference inverts its "
                            "own erf approximation)", op=n.op, node=n.name)
    if any(BRANCH_MODES[int(m)] == "MEMBER" for m in trees.mode) and trees.members.shape[1] > 64:
        raise LoweringError("membership sets wider than 64 values", op=n.op, node=n.name)
    rows, nt = x.shape[0], _targets(a)
    n_trees = len(trees.roots)
    depth = _depth(trees)
    tab = {
        "root": trees.roots, "feature": trees.feature, "mode": trees.mode.astype(np.int64),
        "split": trees.splits, "nan_true": trees.nan_true, "members": trees.members,
        "next_id": trees.next_id.astype(np.int64), "next_leaf": trees.next_leaf,
        "leaf_target": trees.leaf_target, "leaf_weight": trees.leaf_weight,
    }
    tab = {k: ctx.const(np.ascontiguousarray(v), "tree_" + k) for k, v in tab.items() if np.asarray(v).size}
    start = {"min": float(np.finfo(x.dtype.np).max), "max": float(np.finfo(x.dtype.np).min)}.get(agg, 0.0)
    b = _b

    def emit(c, dest):
        from .lower import PARALLEL_MIN_WORK
        acc = View.of(c.buffer("scores", _F64, (rows, nt), "temp"), c)
        with c.stage():
            r, j = c.var(), c.var()
            body = [Loop(j, nt, "serial", [Store(acc.buf, acc.flat([r, j]), Const(start, _F64))])]
            if n_trees and depth:
                t, step = c.var(), c.var()
                node, done, leaf = Var(f"node{next(c._n)}", INDEX), Var(f"done{next(c._n)}", dt.bool_), \
                    Var(f"leaf{next(c._n)}", INDEX)
                xv = b.cast(x.at([r, tab["feature"].at([node])]), _F64)
                br = b.select(_holds(b, trees, tab, node, xv), iconst(1), iconst(0))
                nxt, is_leaf = tab["next_id"].at([node, br]), tab["next_leaf"].at([node, br])
                reach = [Assign(leaf, nxt), Assign(done, Const(True, dt.bool_))]
                walk = Loop(step, depth, "serial", [If(b.not_(done), [If(is_leaf, reach, [Assign(node, nxt)])])])
                tgt = tab["leaf_target"].at([leaf])
                cur = acc.at([r, tgt])
                wgt = tab["leaf_weight"].at([leaf])
                comb = {"min": b.min, "max": b.max}.get(agg, b.add)(cur, wgt)
                body.append(Loop(t, n_trees, "serial", [
                    Local(node, tab["root"].at([t])), Local(done, Const(False, dt.bool_)),
                    Local(leaf, iconst(0)), walk, Store(acc.buf, acc.flat([r, tgt]), comb)]))
            body += _post(c, b, acc, r, dest, nt, post, odt, n_trees if agg == "average" else None)
            par = rows > 1 and rows * max(n_trees, 1) * max(depth, 1) >= PARALLEL_MIN_WORK // 8
            c.body.append(Loop(r, rows, "parallel" if par else "serial", body))
    return [Pending(shape, odt, ctx, emit, "tree_ensemble")]


def _post(c, b, acc: View, r, dest: View, nt: int, post: str, odt, divide_by) -> list:
    """Statements turning row r's float64 scores into the output row."""
    def score(j):
        v = acc.at([r, j])
        return b.div(v, Const(float(max(divide_by, 1)), _F64)) if divide_by is not None else v
    j = c.var()
    if post in ("none", "logistic"):
        v = score(j)
        if post == "logistic":
            v = b.div(Const(1.0, _F64), b.add(Const(1.0, _F64), b.exp(b.neg(v))))
        return [Loop(j, nt, "serial", [Store(dest.buf, dest.flat([r, j]), b.cast(v, odt))])]
    # softmax / softmax_zero over the row
    top, tot = Var(f"top{next(c._n)}", _F64), Var(f"sum{next(c._n)}", _F64)
    j1, j2 = c.var(), c.var()
    e1 = b.exp(b.sub(score(j1), top))
    e2 = b.exp(b.sub(score(j2), top))
    if post == "softmax_zero":
        e1 = b.select(b.gt(b.abs(score(j1)), Const(1e-7, _F64)), e1, Const(0.0, _F64))
        e2 = b.select(b.gt(b.abs(score(j2)), Const(1e-7, _F64)), e2, Const(0.0, _F64))
        res = b.select(b.gt(tot, Const(0.0, _F64)), b.div(e2, tot), Const(0.5, _F64))
    else:
        res = b.div(e2, tot)
    return [Local(top, score(iconst(0))),
            Loop(j, nt, "serial", [Assign(top, b.max(top, score(j)))]),
            Local(tot, Const(0.0, _F64)),
            Loop(j1, nt, "serial", [Assign(tot, b.add(tot, e1))]),
            Loop(j2, nt, "serial", [Store(dest.buf, dest.flat([r, j2]), b.cast(res, odt))])]


RULES: dict = {"tree_ensemble": rule_tree_ensemble}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
