"""The sparse ops (irgraph/ops/sparse.py: inference, references, decompositions) and the pass that
chooses them, use_sparse_kernels (passes/prune_sparse.py): only past the measured crossover, fused
groups included, outputs unchanged."""
from __future__ import annotations

import numpy as np
import pytest
from passcheck import assert_outputs_match

from irgraph import Graph, TensorType, run_graph
from irgraph.errors import ShapeError
from irgraph.ops import sparse
from irgraph.passes import PassContext, run_passes
from irgraph.passes.prune_sparse import CROSSOVER, MIN_SPARSITY, crossover

RNG = np.random.default_rng(11)


def pruned(shape, sparsity):
    w = RNG.standard_normal(shape).astype(np.float32)
    k = int(sparsity * w.size)
    w.reshape(-1)[np.argsort(np.abs(w).reshape(-1), kind="stable")[:k]] = 0
    return w


def layer(op, x_shape, w, attrs=None, bias=True):
    g = Graph(op)
    x = g.add_input("x", TensorType(x_shape, "float32"))
    if op == "matmul":
        y = g.op("matmul", [x, g.add_const(w, "w")])
        if bias:
            y = g.op("add", [y, g.add_const(RNG.standard_normal(w.shape[1]).astype(np.float32), "b")])
    else:
        ins = [x, g.add_const(w, "w")] + ([g.add_const(RNG.standard_normal(w.shape[0]).astype(np.float32), "b")]
                                          if bias else [])
        y = g.op("conv", ins, attrs or {})
    g.set_outputs([g.op("relu", [y])])
    return g


def feeds(g):
    return [RNG.standard_normal([2 if not isinstance(d, int) else d for d in v.shape]).astype(np.float32)
            for v in g.inputs]


def sparse_ops(g):
    out = []
    for n in g.nodes:
        out += [b.op for b in n.attrs["body"].nodes] if n.op == "fused" else [n.op]
    return [o for o in out if o.startswith("sparse_")]


# ---- the ops ---------------------------------------------------------------------------------------
CONV_ATTRS = [{}, {"pads": [1, 1, 1, 1]}, {"strides": [2, 1], "pads": [0, 1, 2, 1], "dilations": [1, 2]},
              {"auto_pad": "SAME_UPPER"}]


@pytest.mark.parametrize("attrs", CONV_ATTRS, ids=["valid", "same", "strided", "auto_pad"])
@pytest.mark.parametrize("bias", [True, False])
def test_sparse_conv_reference_is_the_dense_conv(attrs, bias):
    w = pruned((5, 3, 3, 3), 0.6)
    dense = layer("conv", ("N", 3, 7, 6), w, attrs, bias)
    g = dense.copy()
    conv = next(n for n in g.nodes if n.op == "conv")
    from irgraph.passes.prune_sparse import to_sparse
    to_sparse(g, conv, w)
    g.verify()
    f = feeds(dense)
    assert_outputs_match(run_graph(g, f), run_graph(dense, f), exact=True)


def test_sparse_matmul_reference_decomposition_and_errors():
    w = pruned((12, 7), 0.5)
    ip, ix, vals = sparse.to_csr(w.T)
    g = Graph("mm")
    x = g.add_input("x", TensorType(("N", 4, 12), "float32"))
    y = g.op("sparse_matmul", [x, g.add_const(ip), g.add_const(ix), g.add_const(vals)], {"k": 12})
    assert y.shape == ("N", 4, 7)
    g.set_outputs([y])
    xv = RNG.standard_normal((2, 4, 12)).astype(np.float32)
    np.testing.assert_array_equal(run_graph(g, [xv])[0], np.matmul(xv, w))
    # the decomposition (what backends without a CSR kernel run) gives the same
    from irgraph.ops.registry import get_op
    d = Graph("decomposed")
    dx = d.add_input("x", x.type)
    d.set_outputs(get_op("sparse_matmul").decompose(d, [dx] + [d.add_const(a) for a in (ip, ix, vals)], {"k": 12}))
    np.testing.assert_array_equal(run_graph(d, [xv])[0], run_graph(g, [xv])[0])
    bad = [(13, (ip, ix, vals), "last dim"),
           (12, (ip.astype(np.int64), ix, vals), "int32"),
           (12, (ip, ix + 12, vals), "out of range"),
           (12, (ip, ix, vals[:-1]), "same length"),
           (12, (ip[::-1].copy(), ix, vals), "never decrease")]
    for k, arrays, match in bad:
        attrs = {"k": 12}
        h = Graph("bad")
        hx = h.add_input("x", TensorType(("N", k), "float32"))
        with pytest.raises(ShapeError, match=match):
            h.op("sparse_matmul", [hx] + [h.add_const(a) for a in arrays], attrs)


# ---- the pass ----------------------------------------------------------------------------------------
def test_the_table_is_consistent():
    assert MIN_SPARSITY == min(s for rows in CROSSOVER.values() for _, _, s in rows)
    for kind, rows in CROSSOVER.items():
        assert rows[-1][:2] == (None, 0), f"{kind}: the last row must catch every layer"
        assert all(0 < s < 1 for _, _, s in rows)
    assert crossover("matmul", 1) >= crossover("matmul", 1, 16 << 20) >= crossover("matmul", 64)


def run_pipeline(g, forced=None):
    names = ["infer_shapes", "fuse_epilogues", "use_sparse_kernels"]
    opts = {} if forced is None else {"sparse.min_sparsity": forced}
    return run_passes(g.copy(), names, PassContext(verify=True, options=opts))[0]


@pytest.mark.parametrize("case", ["matmul", "conv", "conv1x1"])
def test_converts_past_the_crossover_only(case):
    if case == "matmul":
        x_shape, w_shape, attrs, p = (32, 64), (64, 48), None, 32
    else:
        k = 1 if case == "conv1x1" else 3
        x_shape, w_shape, attrs, p = ("N", 8, 10, 10), (16, 8, k, k), {"pads": [k // 2] * 4}, 100
    c = crossover(case, p)
    below = layer(case.replace("1x1", ""), x_shape, pruned(w_shape, c - 0.1), attrs)
    above = layer(case.replace("1x1", ""), x_shape, pruned(w_shape, c + 0.02), attrs)
    assert sparse_ops(run_pipeline(below)) == []
    g = run_pipeline(above)
    assert sparse_ops(g) == ["sparse_matmul" if case == "matmul" else "sparse_conv"]
    f = feeds(above)
    assert_outputs_match(run_graph(g, f), run_graph(above, f), rtol=1e-5, atol=1e-6)


def test_symbolic_batch_counts_as_one_row():
    # a linear layer over a symbolic batch is judged as batch 1: the highest crossover
    w = pruned((64, 48), (crossover("matmul", 1) + crossover("matmul", 64)) / 2)
    assert sparse_ops(run_pipeline(layer("matmul", ("N", 64), w))) == []
    assert sparse_ops(run_pipeline(layer("matmul", (64, 64), w))) == ["sparse_matmul"]


def test_off_when_told_and_grouped_convs_stay_dense():
    w = pruned((16, 8, 3, 3), 0.99)
    g = layer("conv", ("N", 8, 10, 10), w, {"pads": [1, 1, 1, 1]})
    off = run_passes(g.copy(), ["use_sparse_kernels"], PassContext(options={"prune.sparse_kernels": False}))[0]
    assert sparse_ops(off) == []
    grouped = layer("conv", ("N", 8, 10, 10), pruned((16, 4, 3, 3), 0.99), {"pads": [1, 1, 1, 1], "group": 2})
    assert sparse_ops(run_pipeline(grouped, forced=0.0)) == []
