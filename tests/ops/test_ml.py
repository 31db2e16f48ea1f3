"""tree_ensemble: hand-computed trees, random forests against a per-row walk written here, the
aggregations and post transforms against closed forms, inference and errors, and the ONNX
TreeEnsemble converter."""
from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from irgraph import TensorType
from irgraph import dtype as dt
from irgraph.frontends.onnx import backend

from oprun import onnx_model, raises, run, types, value_info

LEQ, LT, GTE, GT, EQ, NEQ, MEMBER = range(7)


def forest(nodes, leaves, roots, n_targets=None, members=None, **attrs):
    """Attributes from ``nodes`` = [(feature, mode, split, true, true_is_leaf, false, false_is_leaf,
    nan_goes_true)] and ``leaves`` = [(target, weight)]."""
    cols = list(zip(*nodes))
    return {"nodes_featureids": cols[0], "nodes_modes": cols[1],
            "nodes_splits": np.array(cols[2], np.float32),
            "nodes_truenodeids": cols[3], "nodes_trueleafs": cols[4], "nodes_falsenodeids": cols[5],
            "nodes_falseleafs": cols[6], "nodes_missing_value_tracks_true": cols[7],
            "leaf_targetids": [t for t, _ in leaves],
            "leaf_weights": np.array([w for _, w in leaves], np.float32),
            "tree_roots": roots, "n_targets": n_targets,
            "membership_values": None if members is None else np.array(members, np.float32), **attrs}


def walk(a, row):
    """Each tree's (target, weight) for one row, following the nodes one by one."""
    members = a["membership_values"]
    sets, it = {}, iter([] if members is None else members.tolist())
    for k, mode in enumerate(a["nodes_modes"]):
        if mode == MEMBER:
            sets[k] = set()
            for v in it:
                if math.isnan(v):
                    break
                sets[k].add(v)
    res = []
    for k in a["tree_roots"]:
        while True:
            x, s = float(row[a["nodes_featureids"][k]]), float(a["nodes_splits"][k])
            mode = a["nodes_modes"][k]
            hit = {LEQ: x <= s, LT: x < s, GTE: x >= s, GT: x > s, EQ: x == s, NEQ: x != s,
                   MEMBER: x in sets.get(k, ())}[mode]
            hit = hit or (math.isnan(x) and a["nodes_missing_value_tracks_true"][k] == 1)
            nxt = a["nodes_truenodeids"][k] if hit else a["nodes_falsenodeids"][k]
            if (a["nodes_trueleafs"] if hit else a["nodes_falseleafs"])[k]:
                res.append((a["leaf_targetids"][nxt], float(a["leaf_weights"][nxt])))
                break
            k = nxt
    return res


# one tree: x0 <= 0.5 ? leaf 0 : (x1 > 2 ? leaf 1 : leaf 2)
SMALL = forest([(0, LEQ, 0.5, 0, 1, 1, 0, 0), (1, GT, 2.0, 1, 1, 2, 1, 0)],
               [(0, 1.5), (1, 2.0), (0, -3.0)], [0], n_targets=2)


def test_tree_ensemble_hand_computed():
    x = np.array([[0.0, 9.0], [1.0, 3.0], [1.0, 2.0], [0.5, 0.0]], np.float32)
    y = run("tree_ensemble", [x], SMALL)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, [[1.5, 0], [0, 2.0], [-3.0, 0], [1.5, 0]])
    # float64 and float16 inputs keep their dtype
    assert run("tree_ensemble", [x.astype(np.float64)], SMALL).dtype == np.float64
    assert run("tree_ensemble", [x.astype(np.float16)], SMALL).dtype == np.float16


def _random_forest(rng, n_trees, depth, n_features, n_targets):
    """Full binary trees of the given depth over random features, modes and splits."""
    nodes, leaves, roots, members = [], [], [], []
    for _ in range(n_trees):
        roots.append(len(nodes))
        base = len(nodes)
        n_inner = 2 ** depth - 1
        for i in range(n_inner):
            mode = int(rng.integers(0, 7))
            if mode == MEMBER:
                members += rng.integers(-2, 3, 3).astype(float).tolist() + [math.nan]
            kids = []
            for child in (2 * i + 1, 2 * i + 2):
                if child < n_inner:
                    kids.append((base + child, 0))
                else:
                    kids.append((len(leaves), 1))
                    leaves.append((int(rng.integers(0, n_targets)), float(rng.normal())))
            nodes.append((int(rng.integers(0, n_features)), mode, float(rng.integers(-2, 3)),
                          kids[0][0], kids[0][1], kids[1][0], kids[1][1], int(rng.integers(0, 2))))
    return forest(nodes, leaves, roots, n_targets, members or None)


@pytest.mark.parametrize("aggregate", ["sum", "average", "min", "max"])
def test_tree_ensemble_random_forests_match_a_per_row_walk(aggregate):
    rng = np.random.default_rng(3)
    a = _random_forest(rng, n_trees=5, depth=3, n_features=4, n_targets=3)
    a["aggregate_function"] = aggregate
    x = rng.integers(-3, 4, (40, 4)).astype(np.float32)  # small integers: ties with the splits
    x[rng.random(x.shape) < 0.15] = np.nan
    got = run("tree_ensemble", [x], a)
    start = {"min": np.finfo(np.float32).max, "max": np.finfo(np.float32).min}.get(aggregate, 0.0)
    for row, y in zip(x, got):
        want = [float(start)] * 3
        for target, w in walk(a, row):
            if aggregate in ("sum", "average"):
                want[target] += w / (5 if aggregate == "average" else 1)
            else:
                want[target] = (min if aggregate == "min" else max)(want[target], w)
        np.testing.assert_allclose(y, np.array(want, np.float32), rtol=1e-6, atol=1e-6)


def test_tree_ensemble_membership_and_missing_values():
    # node 0: x0 in {1, 3}; node 1: x0 < 4 (NaN goes true); node 2: x0 != 5
    a = forest([(0, MEMBER, 0.0, 0, 1, 1, 0, 0), (0, LT, 4.0, 1, 1, 2, 0, 1), (0, NEQ, 5.0, 2, 1, 3, 1, 0)],
               [(0, 1.0), (0, 2.0), (0, 3.0), (0, 4.0)], [0], members=[1.0, 3.0, math.nan])
    x = np.array([[1.0], [3.0], [2.0], [np.nan], [11.0], [5.0]], np.float32)
    # NaN is in no set and not below 4, but tracks true at node 1
    np.testing.assert_array_equal(run("tree_ensemble", [x], a).reshape(-1), [1, 1, 2, 2, 3, 4])


def test_tree_ensemble_post_transforms():
    x = np.array([[0.0, 9.0], [1.0, 3.0], [1.0, 2.0]], np.float32)
    raw = run("tree_ensemble", [x], SMALL).astype(np.float64)
    got = {p: run("tree_ensemble", [x], {**SMALL, "post_transform": p}).astype(np.float64)
           for p in ("logistic", "softmax", "softmax_zero")}
    np.testing.assert_allclose(got["logistic"], [[1 / (1 + math.exp(-v)) for v in r] for r in raw], rtol=1e-6)
    e = np.exp(raw)
    np.testing.assert_allclose(got["softmax"], e / e.sum(1, keepdims=True), rtol=1e-6)
    # softmax_zero: the zero scores keep 0 and take no share, so each row here is [1, 0] or [0, 1]
    np.testing.assert_allclose(got["softmax_zero"], (raw != 0).astype(float), rtol=1e-6)
    zeros = forest([(0, LEQ, 0.0, 0, 1, 0, 1, 0)], [(0, 0.0)], [0], n_targets=2,
                   post_transform="softmax_zero")
    np.testing.assert_array_equal(run("tree_ensemble", [x], zeros), np.full((3, 2), 0.5, np.float32))
    # probit is the inverse of the normal CDF
    p = forest([(0, LEQ, 0.5, 0, 1, 1, 1, 0)], [(0, 0.975), (0, 0.2)], [0], post_transform="probit")
    z = run("tree_ensemble", [np.array([[0.0], [1.0]])], p).reshape(-1)
    cdf = [0.5 * (1 + math.erf(v / math.sqrt(2))) for v in z]
    np.testing.assert_allclose(cdf, np.array([0.975, 0.2], np.float32), rtol=1e-9)  # the float32 weights


def test_tree_ensemble_inference_and_errors():
    t = types("tree_ensemble", [TensorType(("N", 2), dt.float32)], SMALL)[0]
    assert t == TensorType(("N", 2), dt.float32)
    no_n = {**SMALL, "n_targets": None}  # then the largest leaf target decides
    assert types("tree_ensemble", [TensorType((3, 2), dt.float64)], no_n)[0] == TensorType((3, 2), dt.float64)
    f32 = [TensorType((3, 2), dt.float32)]
    for inputs, change, match in [
        ([TensorType((3, 2), dt.int64)], {}, "unsupported dtype"),
        ([TensorType((3,), dt.float32)], {}, "2-D"),
        ([TensorType((3, 1), dt.float32)], {}, "features"),
        (f32, {"n_targets": 1}, "leaf_targetids"),
        (f32, {"nodes_truenodeids": (5, 1)}, "outside"),
        (f32, {"nodes_modes": (0, 6)}, "membership_values"),
        (f32, {"nodes_modes": (0, 9)}, "nodes_modes"),
        (f32, {"nodes_featureids": (0,)}, "one length"),
        (f32, {"tree_roots": (2,)}, "tree_roots"),
        (f32, {"aggregate_function": "median"}, "aggregate_function"),
    ]:
        raises("tree_ensemble", lambda: types("tree_ensemble", inputs, {**SMALL, **change}), match)


def test_tree_ensemble_cycle_is_a_run_time_error():
    loop = forest([(0, LEQ, 0.5, 1, 0, 1, 0, 0), (0, LEQ, 0.5, 0, 0, 0, 0, 0)], [(0, 1.0)], [0])
    with pytest.raises(Exception, match="cycle"):
        run("tree_ensemble", [np.zeros((1, 1), np.float32)], loop)


def test_onnx_tree_ensemble_enums_and_tensors():
    a = SMALL
    node = helper.make_node(
        "TreeEnsemble", ["x"], ["y"], domain="ai.onnx.ml", aggregate_function=3, post_transform=2,
        n_targets=2, tree_roots=[0, 0], nodes_featureids=list(a["nodes_featureids"]),
        nodes_modes=numpy_helper.from_array(np.array(a["nodes_modes"], np.uint8)),
        nodes_splits=numpy_helper.from_array(a["nodes_splits"]),
        nodes_truenodeids=list(a["nodes_truenodeids"]), nodes_trueleafs=list(a["nodes_trueleafs"]),
        nodes_falsenodeids=list(a["nodes_falsenodeids"]), nodes_falseleafs=list(a["nodes_falseleafs"]),
        leaf_targetids=list(a["leaf_targetids"]), leaf_weights=numpy_helper.from_array(a["leaf_weights"]))
    m = onnx_model(node, [value_info("x", TensorProto.FLOAT, [None, 2])], [value_info("y")], 21,
                   domains={"ai.onnx.ml": 5})
    x = np.array([[0.0, 9.0], [1.0, 3.0]], np.float32)
    # the same tree twice, aggregated by MAX (3), then LOGISTIC (2); a target no tree reaches stays at
    # the lowest float, which the logistic maps to 0
    s1, s2 = 1 / (1 + math.exp(-1.5)), 1 / (1 + math.exp(-2.0))
    want = np.array([[s1, 0], [0, s2]], np.float32)
    np.testing.assert_allclose(backend.prepare(m).run([x])[0], want, rtol=1e-6)
