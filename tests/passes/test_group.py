"""make_group: one fused node per group, closed body, same results, provenance kept."""
from __future__ import annotations

import numpy as np

from irgraph import Graph, TensorType, run_graph
from irgraph.dtype import float32
from irgraph.passes.group import make_group, ungroup


def test_group_and_ungroup_preserve_results():
    g = Graph()
    x = g.add_input("x", TensorType(("n", 4), float32))
    w = g.add_const(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), "w")
    b = g.add_const(np.ones(3, np.float32), "b")
    mm = g.op("matmul", [x, w], name="mm", meta={"source": ["Gemm_0"]})
    ad = g.op("add", [mm, b], name="bias", meta={"source": ["Gemm_0"]})
    r = g.op("relu", [ad], name="act", meta={"source": ["Relu_1"]})
    other = g.op("exp", [ad], name="other")  # reads a value inside the group
    g.set_outputs([r, other])
    a = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    want = run_graph(g, [a])

    f = make_group(g, [mm.producer, ad.producer, r.producer], "matmul_epilogue")
    g.verify()
    assert [n.op for n in g.nodes] == ["fused", "exp"]
    assert f.meta["source"] == ["Gemm_0", "Relu_1"]
    assert f.inputs == [x]  # the weights moved into the body
    assert set(f.attrs["body"].constants) == {"w", "b"}
    assert len(f.outputs) == 2  # relu output and the add read by exp
    for got, exp in zip(run_graph(g, [a]), want):
        np.testing.assert_allclose(got, exp, rtol=1e-6)

    ungroup(g, f)
    g.verify()
    assert sorted(n.op for n in g.nodes) == ["add", "exp", "matmul", "relu"]
    for got, exp in zip(run_graph(g, [a]), want):
        np.testing.assert_allclose(got, exp, rtol=1e-6)
