"""Gradient rules of matmul, einsum and det (irgraph/ops/linalg.py) against finite differences."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import case, check_case

_rng = np.random.default_rng(5)


def u(*shape):
    return _rng.uniform(-1, 1, size=shape)


GRAD_CASES = {
    "matmul": [
        case(u(3, 4), u(4, 2), id="2d"),
        case(u(2, 3, 4), u(2, 4, 5), id="batched"),
        case(u(2, 3, 4), u(4, 5), id="batch x matrix (folded weight gradient)"),
        case(u(3, 4), u(2, 4, 5), id="matrix x batch"),
        case(u(2, 1, 3, 4), u(3, 4, 2), id="broadcast batch dims"),
        case(u(1, 3, 4), u(2, 4, 2), id="size-1 batch dim"),
        case(u(4), u(4, 3), id="vector x matrix"),
        case(u(3, 4), u(4), id="matrix x vector"),
        case(u(4), u(2, 4, 3), id="vector x batch"),
        case(u(2, 3, 4), u(4), id="batch x vector"),
        case(u(5), u(5), id="dot"),
    ],
    "einsum": [
        case(u(2, 3), u(3, 4), attrs={"equation": "ij,jk->ik"}, id="matmul"),
        case(u(2, 3, 4), u(2, 5, 4), attrs={"equation": "bqd,bkd->bqk"}, id="attention scores"),
        case(u(2, 3), attrs={"equation": "ij->ji"}, id="transpose"),
        case(u(2, 3), attrs={"equation": "ij->i"}, id="row sums (ones vector)"),
        case(u(3, 3), attrs={"equation": "ii->"}, id="trace (identity)"),
        case(u(3, 3, 2), attrs={"equation": "iij->ji"}, id="diagonal"),
        case(u(2, 3), u(3), u(3, 2), attrs={"equation": "ij,j,jk->ik"}, id="three operands"),
        case(u(2, 3, 4), u(4, 5), attrs={"equation": "...k,kn->...n"}, id="ellipsis"),
        case(u(2, 1, 4), u(3, 4), attrs={"equation": "...k,...k->..."}, id="broadcast ellipsis"),
        case(u(3), u(4), attrs={"equation": "i,j"}, id="implicit outer product"),
        case(u(2, 3), u(2, 3), attrs={"equation": "ij,ij->"}, id="full contraction"),
    ],
    "det": [case(u(3, 3), id="3x3"), case(u(2, 4, 4), id="batched 4x4"), case(u(2, 2)),
            case(u(1, 1), id="1x1"),
            case(np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.5, -1.0, 2.0]]), id="singular")],
}

_PARAMS = [(op, c) for op, cs in GRAD_CASES.items() for c in cs]


@pytest.mark.parametrize("op,c", _PARAMS, ids=[f"{op}-{c.id or i}" for i, (op, c) in enumerate(_PARAMS)])
def test_gradient_matches_finite_differences(op, c):
    check_case(op, c)


def test_linear_layer_weight_gradient_is_one_matmul():
    """x (B, T, K) @ w (K, N): the weight gradient folds the batch, no (B, K, N) intermediate."""
    from irgraph import Graph, TensorType
    from irgraph.passes.autodiff import gradients
    g = Graph()
    x = g.add_input("x", TensorType((8, 16, 32), "float32"))
    w = g.add_input("w", TensorType((32, 64), "float32"))
    y = g.op("matmul", [x, w])
    (gw,) = gradients(g, y, [w])
    n = gw.producer
    assert n.op == "matmul" and [v.shape for v in n.inputs] == [(32, 128), (128, 64)]
