"""prune_magnitude: exactly floor(ratio * n) zeros, the smallest magnitudes, per layer or global;
the pruned graph computes what the same weights zeroed by hand compute."""
from __future__ import annotations

import numpy as np
import pytest
from passcheck import assert_outputs_match, run_pass

import irgraph
import models
from irgraph import Graph, TensorType, run_graph
from irgraph.api import to_graph
from irgraph.errors import CompileError
from irgraph.passes import PassContext, run_passes
from irgraph.passes.prune_report import PruneReport


def mlp_graph():
    g = to_graph(models.mlp(sizes=(32, 24, 16, 4)))
    g, _ = run_passes(g, ["infer_shapes", "fold_constants"], PassContext(verify=True))
    return g


def weights(g: Graph) -> dict:
    return {n.name: n.inputs[1].const for n in g.nodes if n.op in ("matmul", "conv")}


def feeds(g: Graph, batch: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal([batch if not isinstance(d, int) else d for d in v.shape]).astype(np.float32)
            for v in g.inputs]


def hand_pruned(g: Graph, new: dict) -> Graph:
    """``g`` with each layer's weight replaced by ``new[layer name]`` (the oracle)."""
    h = g.copy()
    for n in h.nodes:
        if n.name in new:
            n.inputs[1] = h.add_const(new[n.name], n.inputs[1].name + "_hand")
    return h


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.9])
def test_per_layer_zeros_the_smallest(ratio):
    g = mlp_graph()
    before = weights(g)
    g2, rec = run_pass(g.copy(), "prune_magnitude", **{"prune.ratio": ratio})
    assert rec.changed
    after = weights(g2)
    for name, w in before.items():
        p = after[name]
        zero = p == 0
        assert zero.sum() == int(ratio * w.size), name
        # what was removed is never larger than what was kept; kept weights are unchanged
        assert np.abs(w[zero]).max() <= np.abs(w[~zero]).min()
        np.testing.assert_array_equal(p[~zero], w[~zero])
    oracle = hand_pruned(g, {k: np.where(after[k] == 0, 0, v).astype(np.float32) for k, v in before.items()})
    f = feeds(g)
    assert_outputs_match(run_graph(g2, f), run_graph(oracle, f), exact=True)


def test_global_shares_one_threshold():
    g = mlp_graph()
    before = weights(g)
    g2, _ = run_pass(g.copy(), "prune_magnitude", **{"prune.ratio": 0.6, "prune.scope": "global"})
    after = weights(g2)
    removed = np.concatenate([np.abs(before[k][after[k] == 0]) for k in before])
    kept = np.concatenate([np.abs(before[k][after[k] != 0]) for k in before])
    total = sum(w.size for w in before.values())
    assert removed.size == int(0.6 * total)
    assert removed.max() <= kept.min()
    # layers of small weights lose more than the ratio, others less: not 60% everywhere
    fractions = [np.mean(after[k] == 0) for k in before]
    assert max(fractions) > 0.6 > min(fractions)


def test_report_counts_nonzeros_and_keeps_shapes():
    g = mlp_graph()
    g2, _ = run_pass(g.copy(), "prune_magnitude", **{"prune.ratio": 0.5, "prune.spec": "magnitude:0.5:layer"})
    rep = PruneReport.from_dict(g2.meta["prune_report"])
    assert rep.spec == "magnitude:0.5:layer"
    for name, w in weights(g).items():
        b, a = rep.before["layers"][name], rep.after["layers"][name]
        assert b["params"] == a["params"] == w.size and b["shape"] == a["shape"] == list(w.shape)
        assert b["nonzero"] == np.count_nonzero(w) and a["nonzero"] == w.size - int(0.5 * w.size)
        assert a["sparse_flops"] < a["flops"] == b["flops"] == 2 * w.size
    assert rep.total("nonzero") < rep.total("nonzero", "before")
    assert "magnitude:0.5:layer" in rep.format()


def test_conv_weights_and_a_shared_weight_pruned_once():
    g = Graph("convs")
    x = g.add_input("x", TensorType(("N", 3, 6, 6), "float32"))
    rng = np.random.default_rng(1)
    w = g.add_const(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    y1 = g.op("conv", [x, w], {"pads": [1, 1, 1, 1]})
    y2 = g.op("conv", [x, w], {"pads": [1, 1, 1, 1]})
    g.set_outputs([g.op("add", [y1, y2])])
    g2, _ = run_pass(g.copy(), "prune_magnitude", **{"prune.ratio": 0.5})
    w1, w2 = (n.inputs[1] for n in g2.nodes if n.op == "conv")
    assert w1 is w2 and np.sum(w1.const == 0) == 54


def test_ratio_zero_changes_nothing():
    g = mlp_graph()
    _, rec = run_pass(g, "prune_magnitude", **{"prune.ratio": 0.0})
    assert not rec.changed


@pytest.mark.parametrize("opts,match", [({}, "needs the option prune.ratio"),
                                        ({"prune.ratio": 1.0}, "ratio"),
                                        ({"prune.ratio": -0.1}, "ratio"),
                                        ({"prune.ratio": 0.5, "prune.scope": "model"}, "scope")])
def test_bad_options(opts, match):
    with pytest.raises(CompileError, match=match):
        run_pass(mlp_graph(), "prune_magnitude", **opts)


def test_compile_with_prune_runs_sparse_kernels_past_the_crossover():
    from irgraph.passes.prune_sparse import crossover
    # batch 64 linear layers: the crossover there is far below 0.95
    assert crossover("matmul", 64) < 0.95
    g = to_graph(models.mlp(sizes=(64, 64, 64, 4), batch=64))
    m = irgraph.compile(g, target="cpu", prune="magnitude:0.95")
    body_ops = [b.op for n in m.graph.nodes if n.op == "fused" for b in n.attrs["body"].nodes]
    assert body_ops.count("sparse_matmul") == 3
    rep = m.prune_report
    assert all(r["kernel"] == "sparse" for r in rep.after["layers"].values())
    assert rep.total("bytes") < rep.total("bytes", "before")
    # the same network with the same zeros, dense, on the interpreter
    ref = irgraph.compile(g, target="interp", prune="magnitude:0.95")
    assert all(n.op != "sparse_matmul" for n in ref.graph.nodes)
    x = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    np.testing.assert_allclose(m(x), ref(x), rtol=1e-4, atol=1e-5)
