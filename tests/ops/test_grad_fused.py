"""Gradients through ``fused`` groups (autodiff differentiates their body op by op) against
central finite differences in float64: one- and two-output bodies, a broadcast operand, a body
constant."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
from irgraph import Graph, TensorType

from gradcheck import case, check_case

F64 = irgraph.dtype.float64
R = np.random.default_rng(17)


def _body(two_outputs: bool = False) -> Graph:
    """(a[2,3], b[3]) -> a * b + a - k  (and a * a)."""
    g = Graph("group")
    a = g.add_input("a", TensorType((2, 3), F64))
    b = g.add_input("b", TensorType((3,), F64))
    y = g.op("sub", [g.op("add", [g.op("mul", [a, b]), a]), g.add_const(np.array([0.5, 1.0, 2.0]), "k")])
    g.set_outputs([y, g.op("mul", [a, a])] if two_outputs else [y])
    return g


GRAD_CASES = {
    "fused": [
        case(R.standard_normal((2, 3)), R.standard_normal(3), attrs={"body": _body(), "group": "elementwise"},
             id="broadcast-body-constant"),
        case(R.standard_normal((2, 3)), R.standard_normal(3), attrs={"body": _body(True)}, num_outputs=2,
             id="two-outputs"),
    ],
}

_ALL = [(op, c) for op, cs in GRAD_CASES.items() for c in cs]


@pytest.mark.parametrize("op,c", _ALL, ids=[f"{op}-{c.id}" for op, c in _ALL])
def test_gradient(op, c):
    check_case(op, c)
