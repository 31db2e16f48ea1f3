"""Classical machine-learning ops of the ai.onnx.ml domain that are more than a table lookup:
tree_ensemble (ONNX TreeEnsemble, which can express the older TreeEnsembleRegressor/Classifier).

Trees are given flat, as ONNX gives them: interior nodes ``nodes_*`` (feature, comparison, split,
true/false successor, and whether that successor is a leaf) and leaves ``leaf_*`` (target and
weight). The reference walks every (row, tree) pair down one level per step, all at once.
"""
from __future__ import annotations

import math

import numpy as np

from .. import dtype as dt
from ..types import is_static_dim
from .elementwise import erf_np
from .registry import Attr, OpDef, register
from .shapes import check_dtype, out

# node comparison modes, numbered as in ONNX: feature value x against the node's split s
BRANCH_MODES = ("LEQ", "LT", "GTE", "GT", "EQ", "NEQ", "MEMBER")
_MEMBER = BRANCH_MODES.index("MEMBER")
AGGREGATES = ("average", "sum", "min", "max")
POST_TRANSFORMS = ("none", "softmax", "logistic", "softmax_zero", "probit")
_TREE_TYPES = (dt.float16, dt.float32, dt.float64)
_NODE_FIELDS = ("nodes_featureids", "nodes_modes", "nodes_truenodeids", "nodes_falsenodeids",
                "nodes_trueleafs", "nodes_falseleafs")


class _Trees:
    """The flat tree attributes as arrays, checked to describe valid trees."""

    def __init__(self, a: dict):
        self.feature, self.mode, true_id, false_id, true_leaf, false_leaf = (
            np.asarray(a[k], np.int64).reshape(-1) for k in _NODE_FIELDS)
        n = len(self.feature)
        self.splits = np.asarray(a["nodes_splits"], np.float64).reshape(-1)
        tracks = a["nodes_missing_value_tracks_true"]
        self.nan_true = np.zeros(n, bool) if tracks is None else np.asarray(tracks, bool).reshape(-1)
        lens = {k: len(np.asarray(a[k]).reshape(-1)) for k in _NODE_FIELDS + ("nodes_splits",)}
        if tracks is not None:
            lens["nodes_missing_value_tracks_true"] = len(self.nan_true)
        if set(lens.values()) != {n}:
            raise ValueError(f"the nodes_* attributes must have one length: {lens}")
        self.leaf_target = np.asarray(a["leaf_targetids"], np.int64).reshape(-1)
        self.leaf_weight = np.asarray(a["leaf_weights"], np.float64).reshape(-1)
        if len(self.leaf_target) != len(self.leaf_weight):
            raise ValueError("leaf_targetids and leaf_weights must have one length")
        self.roots = np.asarray(a["tree_roots"], np.int64).reshape(-1)
        if np.any((self.mode < 0) | (self.mode >= len(BRANCH_MODES))):
            raise ValueError(f"nodes_modes must be in [0, {len(BRANCH_MODES)})")
        if np.any((self.roots < 0) | (self.roots >= n)):
            raise ValueError(f"tree_roots must index the {n} nodes")
        # successors: a leaf index where the flag says leaf, else a node index
        for ids, leaf, what in ((true_id, true_leaf, "true"), (false_id, false_leaf, "false")):
            bound = np.where(leaf != 0, len(self.leaf_target), n)
            if np.any((ids < 0) | (ids >= bound)):
                raise ValueError(f"a nodes_{what}nodeids entry is outside the nodes or leaves it names")
        # one table of (successor, is-leaf) per branch: column 0 is the false branch, 1 the true one
        self.next_id = np.stack([false_id, true_id], axis=1)
        self.next_leaf = np.stack([false_leaf, true_leaf], axis=1) != 0
        self.members = self._member_sets(a["membership_values"])

    def _member_sets(self, values) -> np.ndarray:
        """(nodes, widest set) member values, NaN-padded, for the MEMBER nodes in node order."""
        is_member = self.mode == _MEMBER
        if not is_member.any():
            return np.full((len(self.mode), 0), np.nan)
        if values is None:
            raise ValueError("BRANCH_MEMBER nodes need membership_values")
        values = np.asarray(values, np.float64).reshape(-1)
        # the sets follow each other, each one ended by a NaN
        ends = np.flatnonzero(np.isnan(values))
        if len(ends) != is_member.sum():
            raise ValueError(f"membership_values holds {len(ends)} NaN-ended sets for "
                             f"{int(is_member.sum())} BRANCH_MEMBER nodes")
        starts = np.concatenate([[0], ends[:-1] + 1])
        table = np.full((len(self.mode), int((ends - starts).max(initial=0))), np.nan)
        for node, s, e in zip(np.flatnonzero(is_member), starts, ends):
            table[node, :e - s] = values[s:e]
        return table


def _targets(a: dict) -> int:
    if a["n_targets"] is not None:
        return a["n_targets"]
    targets = np.asarray(a["leaf_targetids"], np.int64)
    return int(targets.max(initial=-1)) + 1


def _tree_infer(ctx):
    a = ctx.attrs
    x = check_dtype(ctx, 0, _TREE_TYPES, "X")
    for name, choices in (("aggregate_function", AGGREGATES), ("post_transform", POST_TRANSFORMS)):
        if a[name] not in choices:
            ctx.fail(f"unknown {name} {a[name]!r}", expected=" | ".join(choices), actual=a[name])
    try:
        trees = _Trees(a)
    except ValueError as e:
        ctx.fail(str(e))
    n_targets = _targets(a)
    if n_targets < 1 or np.any((trees.leaf_target < 0) | (trees.leaf_target >= n_targets)):
        ctx.fail(f"leaf_targetids must lie in [0, n_targets = {n_targets})",
                 actual=(int(trees.leaf_target.min(initial=0)), int(trees.leaf_target.max(initial=0))))
    if x.shape is None:
        return [out((ctx.fresh("N"), n_targets), x.dtype)]
    if len(x.shape) != 2:
        ctx.fail("X must be 2-D (batch, features)", input=0, expected="rank 2", actual=x)
    f = x.shape[1]
    if is_static_dim(f) and len(trees.feature) and not 0 <= trees.feature.min() <= trees.feature.max() < f:
        ctx.fail(f"nodes_featureids must index the {f} features", input=0,
                 expected=f"[0, {f})", actual=(int(trees.feature.min()), int(trees.feature.max())))
    return [out((x.shape[0], n_targets), x.dtype)]


def _branch_true(trees: _Trees, k: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Whether feature values ``x`` take the true branch of nodes ``k``: the comparison holds, or
    ``x`` is NaN at a node whose missing values track true (NaN != s holds like any comparison)."""
    s, mode = trees.splits[k], trees.mode[k]
    with np.errstate(invalid="ignore"):
        tests = (x <= s, x < s, x >= s, x > s, x == s, x != s, (x[:, None] == trees.members[k]).any(-1))
    holds = np.select([mode == m for m in range(len(BRANCH_MODES))], tests, False)
    return holds | (np.isnan(x) & trees.nan_true[k])


def _leaves(trees: _Trees, x: np.ndarray) -> np.ndarray:
    """The leaf each row reaches in each tree: (rows, trees) indices into leaf_*."""
    node = np.broadcast_to(trees.roots, (x.shape[0], len(trees.roots))).copy()
    leaf = np.full(node.shape, -1, np.int64)
    active = np.ones(node.shape, bool)
    for _ in range(len(trees.feature) + 1):  # no path is longer than the node count
        if not active.any():
            return leaf
        r, t = np.nonzero(active)
        k = node[r, t]
        branch = _branch_true(trees, k, x[r, trees.feature[k]]).astype(np.int64)
        nxt, is_leaf = trees.next_id[k, branch], trees.next_leaf[k, branch]
        leaf[r[is_leaf], t[is_leaf]] = nxt[is_leaf]
        node[r, t] = nxt
        active[r[is_leaf], t[is_leaf]] = False
    raise ValueError("the trees have a cycle: a path visits a node twice")


def _erfinv(y: np.ndarray) -> np.ndarray:
    """Inverse error function: a closed-form first guess refined by Newton steps on erf."""
    a = 0.147  # Winitzki's approximation, within 2e-3 of the true value
    ln = np.log1p(-y * y)
    first = 2 / (math.pi * a) + ln / 2
    z = np.sign(y) * np.sqrt(np.sqrt(first * first - ln / a) - first)
    for _ in range(4):
        z = z - (erf_np(z) - y) / (2 / math.sqrt(math.pi) * np.exp(-z * z))
    return z


def _post_transform(y: np.ndarray, kind: str) -> np.ndarray:
    if kind == "logistic":
        return 1 / (1 + np.exp(-y))
    if kind == "probit":
        return math.sqrt(2) * _erfinv(2 * y - 1)
    if kind == "softmax":
        e = np.exp(y - y.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if kind == "softmax_zero":
        # zero scores stay zero and take no share; a row of zeros becomes 0.5 everywhere
        nonzero = np.abs(y) > 1e-7
        e = np.where(nonzero, np.exp(y - y.max(axis=1, keepdims=True)), 0.0)
        total = e.sum(axis=1, keepdims=True)
        return np.where(total > 0, e / np.where(total > 0, total, 1), 0.5)
    return y


def _tree_ref(ins, a):
    x = ins[0]
    trees = _Trees(a)
    n_targets = _targets(a)
    leaf = _leaves(trees, x.astype(np.float64))
    targets, weights = trees.leaf_target[leaf], trees.leaf_weight[leaf]
    rows = np.broadcast_to(np.arange(x.shape[0])[:, None], leaf.shape)
    agg = a["aggregate_function"]
    # a target no tree reaches keeps the aggregation's starting value, as in ONNX's reference
    start = {"min": np.finfo(x.dtype).max, "max": np.finfo(x.dtype).min}.get(agg, 0.0)
    y = np.full((x.shape[0], n_targets), float(start))
    ufunc = {"min": np.minimum, "max": np.maximum}.get(agg, np.add)
    ufunc.at(y, (rows.reshape(-1), targets.reshape(-1)), weights.reshape(-1))
    if agg == "average":
        y /= max(len(trees.roots), 1)
    return _post_transform(y, a["post_transform"]).astype(x.dtype)


register(OpDef(
    "tree_ensemble", infer=_tree_infer, reference=_tree_ref, inputs=(1, 1), kind="other",
    differentiable=False,
    attrs={"tree_roots": Attr("ints", doc="the root node of each tree"),
           "nodes_featureids": Attr("ints"),
           "nodes_modes": Attr("ints", doc="per node: 0 LEQ, 1 LT, 2 GTE, 3 GT, 4 EQ, 5 NEQ (x against the "
                                           "split) or 6 MEMBER (x in the node's set)"),
           "nodes_splits": Attr("tensor"),
           "nodes_truenodeids": Attr("ints"),
           "nodes_trueleafs": Attr("ints", doc="1: the true id is a leaf"),
           "nodes_falsenodeids": Attr("ints"),
           "nodes_falseleafs": Attr("ints", doc="1: the false id is a leaf"),
           "nodes_missing_value_tracks_true": Attr("ints", None, "1: a NaN feature takes the true branch"),
           "membership_values": Attr("tensor", None,
                                     "the MEMBER nodes' sets in node order, each ended by NaN"),
           "leaf_targetids": Attr("ints"), "leaf_weights": Attr("tensor"),
           "n_targets": Attr("int", None, "default: the largest leaf target + 1"),
           "aggregate_function": Attr("str", "sum",
                                      "how a target's leaf weights combine: " + " | ".join(AGGREGATES)),
           "post_transform": Attr("str", "none", " | ".join(POST_TRANSFORMS))},
    doc="tree_ensemble(X[N, F]) -> [N, n_targets]: each tree's leaf weight added to (or min/max/averaged "
        "into) its target, then post_transform (ai.onnx.ml TreeEnsemble)",
))
