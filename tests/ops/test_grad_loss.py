"""Gradient rule of nll_loss (irgraph/ops/loss.py) against finite differences: every reduction,
class weights (which get a gradient too), ignore_index, and extra spatial dims."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import case, check_case

_rng = np.random.default_rng(4)


def u(*shape):
    return _rng.uniform(-2, 0, size=shape)


T = np.array([2, 0, 3, 2, 1])
T_SPATIAL = np.array([[0, 2, 1], [2, 2, 0]])
W = np.array([0.5, 1.5, 0.8, 1.2])

GRAD_CASES = {
    "nll_loss": [
        case(u(5, 4), T, id="mean"),
        case(u(5, 4), T, attrs={"reduction": "sum"}, id="sum"),
        case(u(5, 4), T, attrs={"reduction": "none"}, id="none"),
        case(u(5, 4), T, W, id="weighted mean"),
        case(u(5, 4), T, W, attrs={"reduction": "sum"}, id="weighted sum"),
        case(u(5, 4), T, W, attrs={"reduction": "none"}, id="weighted none"),
        case(u(5, 4), T, W, attrs={"ignore_index": 2}, id="weighted mean, ignored class"),
        case(u(5, 4), T, attrs={"ignore_index": 0, "reduction": "none"}, id="none, ignored"),
        case(u(5, 4), T.astype(np.int32), attrs={"ignore_index": 3}, id="mean, ignored, int32"),
        case(u(2, 3, 3), T_SPATIAL, W[:3], id="spatial weighted mean"),
        case(u(2, 3, 3), T_SPATIAL, attrs={"reduction": "none", "ignore_index": 1}, id="spatial none"),
        case(u(5, 4), T, W, const=(2,), id="constant weights"),
    ],
}

_PARAMS = [(op, c) for op, cs in GRAD_CASES.items() for c in cs]


@pytest.mark.parametrize("op,c", _PARAMS, ids=[f"{op}-{c.id or i}" for i, (op, c) in enumerate(_PARAMS)])
def test_gradient_matches_finite_differences(op, c):
    check_case(op, c)


def test_classifier_gradients_with_a_symbolic_batch():
    """Embedding -> mean over time -> linear -> relu -> linear -> log_softmax -> nll_loss with
    the batch and sequence dims symbolic: the backward builds and equals the static one."""
    from irgraph import Graph, TensorType, run_graph
    from irgraph.passes.autodiff import gradients
    rng = np.random.default_rng(0)
    params = {"emb": rng.standard_normal((7, 4)), "w1": rng.standard_normal((4, 5)),
              "b1": rng.standard_normal(5), "w2": rng.standard_normal((5, 3))}
    ids, target = rng.integers(0, 7, (6, 2)), rng.integers(0, 3, 6)

    def grads(batch, time):
        g = Graph()
        i = g.add_input("ids", TensorType((batch, time), "int64"))
        t = g.add_input("t", TensorType((batch,), "int64"))
        p = {k: g.add_input(k, TensorType(v.shape, "float64")) for k, v in params.items()}
        h = g.op("reduce_mean", [g.op("gather", [p["emb"], i]), g.add_const(np.array([1]), "ax")],
                 {"keepdims": 0})
        h = g.op("relu", [g.op("add", [g.op("matmul", [h, p["w1"]]), p["b1"]])])
        logp = g.op("log_softmax", [g.op("matmul", [h, p["w2"]])])
        loss = g.op("nll_loss", [logp, t])
        gv = gradients(g, loss, list(p.values()))
        g.set_outputs(gv)
        g.verify()
        return run_graph(g, [ids, target, *params.values()])

    for a, b in zip(grads(6, 2), grads("N", "T")):
        np.testing.assert_allclose(a, b, rtol=1e-12)
        assert np.abs(a).max() > 0
