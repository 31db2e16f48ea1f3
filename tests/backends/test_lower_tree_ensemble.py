"""tree_ensemble lowered natively (backends/lower_tree_ensemble.py) against the numpy interpreter:
random unbalanced forests over every comparison mode, membership sets, NaN routing, every
aggregation and the natively lowered post transforms."""
from __future__ import annotations

import math

import numpy as np
import pytest

from irgraph import dtype as dt
from irgraph.graph import Graph
from irgraph.types import TensorType


from lowercheck import compare as _compare, private_object_cache  # noqa: F401,E402  (autouse fixture)


def _random_forest(rng, n_trees: int, max_depth: int, n_features: int, n_targets: int, modes=range(7)) -> dict:
    """Unbalanced binary trees: each child is a leaf with some probability, always at max_depth."""
    cols = {k: [] for k in ("feature", "mode", "split", "true", "tleaf", "false", "fleaf", "nan")}
    leaves, roots, members = [], [], []

    def node(depth):
        k = len(cols["feature"])
        for key in cols:
            cols[key].append(0)
        mode = int(rng.choice(list(modes)))
        if mode == 6:
            members.extend(rng.integers(-2, 3, int(rng.integers(1, 4))).astype(float).tolist() + [math.nan])
        cols["feature"][k], cols["mode"][k] = int(rng.integers(0, n_features)), mode
        cols["split"][k], cols["nan"][k] = float(rng.integers(-2, 3)) + 0.5 * int(rng.integers(0, 2)), int(rng.integers(0, 2))
        for side, leaf_key in (("true", "tleaf"), ("false", "fleaf")):
            if depth + 1 >= max_depth or rng.random() < 0.3:
                cols[side][k], cols[leaf_key][k] = len(leaves), 1
                leaves.append((int(rng.integers(0, n_targets)), float(rng.normal())))
            else:
                cols[side][k], cols[leaf_key][k] = node(depth + 1), 0
        return k
    for _ in range(n_trees):
        roots.append(node(0))
    return {"nodes_featureids": cols["feature"], "nodes_modes": cols["mode"],
            "nodes_splits": np.array(cols["split"], np.float32), "nodes_truenodeids": cols["true"],
            "nodes_trueleafs": cols["tleaf"], "nodes_falsenodeids": cols["false"], "nodes_falseleafs": cols["fleaf"],
            "nodes_missing_value_tracks_true": cols["nan"], "leaf_targetids": [t for t, _ in leaves],
            "leaf_weights": np.array([w for _, w in leaves], np.float32), "tree_roots": roots,
            "n_targets": n_targets, "membership_values": np.array(members, np.float32) if members else None}


def _run(a, x, d):
    g = Graph()
    xi = g.add_input("x", TensorType(x.shape, d))
    g.set_outputs([g.op("tree_ensemble", [xi], a)])
    return _compare(g, x, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("aggregate", ["sum", "average", "min", "max"])
@pytest.mark.parametrize("post", ["none", "logistic", "softmax", "softmax_zero"])
def test_tree_ensemble_matches_interpreter(aggregate, post):
    rng = np.random.default_rng(len(aggregate) * 7 + len(post))
    a = _random_forest(rng, n_trees=5, max_depth=5, n_features=4, n_targets=3)
    a.update(aggregate_function=aggregate, post_transform=post)
    x = rng.integers(-3, 4, (37, 4)).astype(np.float32)   # small integers: ties with the splits
    x[rng.random(x.shape) < 0.15] = np.nan
    _run(a, x, dt.float32)


@pytest.mark.parametrize("mode", range(7))
@pytest.mark.parametrize("d", [dt.float64, dt.float16])
def test_tree_ensemble_one_mode_per_forest(mode, d):
    rng = np.random.default_rng(mode)
    a = _random_forest(rng, n_trees=3, max_depth=4, n_features=3, n_targets=2, modes=[mode])
    x = rng.integers(-3, 4, (11, 3)).astype(d.np)
    x[rng.random(x.shape) < 0.1] = np.nan
    _run(a, x, d)


def test_tree_ensemble_targets_no_tree_reaches_keep_the_start_value():
    a = _random_forest(np.random.default_rng(9), n_trees=2, max_depth=3, n_features=2, n_targets=1)
    a["n_targets"] = 4
    for agg in ("min", "max", "sum"):
        a["aggregate_function"] = agg
        _run(a, np.random.default_rng(1).standard_normal((5, 2)).astype(np.float32), dt.float32)
