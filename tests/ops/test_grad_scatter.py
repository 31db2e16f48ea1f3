"""Gradient rules of the scatters (irgraph/ops/scatter.py) against finite differences.

``reduction="none"`` cases use distinct indices (with repeated ones the last write wins and only
it has a derivative; the rule gives every duplicate dy, as PyTorch does). The other reductions
are checked with repeated indices, and ``mul`` with zero updates (one and two at a position)."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import case, check_case

_rng = np.random.default_rng(21)


def u(*shape):
    return _rng.uniform(-1, 1, size=shape)


def i64(*v):
    return np.array(v, dtype=np.int64)


def distinct(*shape, offset=0.0):
    n = int(np.prod(shape))
    return (_rng.permutation(n) * 0.31 + offset + _rng.uniform(-0.05, 0.05, n)).reshape(shape)


IDX_E = np.array([[1, 0, 2], [1, 2, 2]])       # axis 0 of a (3, 3) tensor: repeats in column 2
MUL_UPD = np.array([[0.0, 1.3, -0.7], [0.9, 0.0, 0.0]])   # zeros: alone at (1,1); twice at (2,2)

GRAD_CASES = {
    "scatter_elements": [
        case(u(3, 4), np.array([[2, 0, 1, 0], [0, 2, 0, 1]]), u(2, 4), id="none, axis 0"),
        case(u(2, 5), np.array([[4, 0], [1, 3]]), u(2, 2), attrs={"axis": 1}, id="none, axis 1"),
        case(u(3, 3), IDX_E, u(2, 3), attrs={"reduction": "add"}, id="add"),
        case(u(3, 3) + 2.0, IDX_E, MUL_UPD, attrs={"reduction": "mul"}, id="mul with zeros"),
        case(u(3, 3), IDX_E, u(2, 3) + 1.5, attrs={"reduction": "mul"}, id="mul"),
        case(distinct(3, 3), IDX_E, distinct(2, 3, offset=0.13), attrs={"reduction": "max"}, id="max"),
        case(distinct(3, 3), IDX_E, distinct(2, 3, offset=0.13), attrs={"reduction": "min"}, id="min"),
    ],
    "scatter_nd": [
        case(u(3, 4), np.array([[2, 1], [0, 3]]), u(2), id="none, elements"),
        case(u(4, 3), np.array([[3], [1]]), u(2, 3), id="none, rows"),
        case(u(4, 3), np.array([[3], [1], [3]]), u(3, 3), attrs={"reduction": "add"}, id="add"),
        case(u(3, 3) + 2.0, np.array([[1], [2], [2]]), np.array([[0.5, 0.0, 1.2], [0.0, 0.0, -1.1],
                                                              [1.4, 0.0, 0.8]]),
             attrs={"reduction": "mul"}, id="mul with zeros"),
        case(distinct(4, 3), np.array([[3], [1], [3]]), distinct(3, 3, offset=0.11),
             attrs={"reduction": "max"}, id="max"),
        case(distinct(4, 3), np.array([[3], [1], [3]]), distinct(3, 3, offset=0.11),
             attrs={"reduction": "min"}, id="min"),
    ],
    "tensor_scatter": [
        case(u(2, 5, 3), u(2, 2, 3), i64(1, 3), attrs={"axis": 1}, id="linear"),
        case(u(2, 3, 5), u(2, 2, 5), id="no write indices"),
        case(u(2, 4, 2), u(2, 3, 2), i64(2, 0), attrs={"axis": 1, "mode": "circular"}, id="circular wrap"),
        case(u(2, 2, 4), u(2, 2, 4), i64(1, 0), attrs={"axis": 2, "mode": "circular"},
             id="circular, full length"),
    ],
}

_PARAMS = [(op, c) for op, cs in GRAD_CASES.items() for c in cs]


@pytest.mark.parametrize("op,c", _PARAMS, ids=[f"{op}-{c.id or i}" for i, (op, c) in enumerate(_PARAMS)])
def test_gradient_matches_finite_differences(op, c):
    check_case(op, c)
