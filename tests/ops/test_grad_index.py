"""Gradient rules of the gathers, compress and top_k (irgraph/ops/index.py) against finite
differences. Repeated indices are included: their gradients must add up."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import case, check_case

_rng = np.random.default_rng(9)


def u(*shape):
    return _rng.uniform(-1, 1, size=shape)


def i64(*v):
    return np.array(v, dtype=np.int64)


GRAD_CASES = {
    "gather": [
        case(u(5, 3), i64(0, 3, 3, -1), id="rows, repeated and negative"),
        case(u(2, 4, 3), np.array([[1, 0], [3, 1]]), attrs={"axis": 1}, id="2-d indices, middle axis"),
        case(u(6, 4), np.array([[1, 1, 5], [0, 2, 1]], np.int32), id="embedding (int32 ids)"),
        case(u(3, 4), np.array(2), attrs={"axis": -1}, id="scalar index"),
        case(u(3, 4), i64(2, 0), attrs={"axis": 1}, const=(1,), id="constant indices"),
    ],
    "gather_elements": [
        case(u(3, 4), np.array([[0, 2], [1, 1], [3, 3]]), attrs={"axis": 1}),
        case(u(3, 2), np.array([[2, 0], [2, 0], [0, -1]]), attrs={"axis": 0}, id="axis 0, repeats"),
    ],
    "gather_nd": [
        case(u(3, 4), np.array([[0, 1], [2, 3], [0, 1]]), id="elements, repeated"),
        case(u(3, 4, 2), np.array([[2], [0], [2]]), id="slices"),
        case(u(2, 3, 4), np.array([[[1, 0], [2, 3]], [[0, 0], [1, -1]]]), attrs={"batch_dims": 1},
             id="batch_dims 1"),
        case(u(2, 3, 4), np.array([[1], [2]]), attrs={"batch_dims": 1}, id="batch_dims 1, slices"),
    ],
    "compress": [
        case(u(4, 3), np.array([True, False, True, True]), attrs={"axis": 0}),
        case(u(2, 5), np.array([False, True, False, True]), attrs={"axis": 1}, id="short condition"),
        case(u(2, 3), np.array([True, False, False, True, True]), id="flattened"),
    ],
    "top_k": [
        case(u(3, 5), i64(2), const=(1,)),
        case(u(4, 3), i64(3), attrs={"axis": 0, "largest": False}, const=(1,), id="smallest, axis 0"),
        case(u(2, 6), i64(4), num_outputs=2, id="runtime k"),
    ],
}

_PARAMS = [(op, c) for op, cs in GRAD_CASES.items() for c in cs]


@pytest.mark.parametrize("op,c", _PARAMS, ids=[f"{op}-{c.id or i}" for i, (op, c) in enumerate(_PARAMS)])
def test_gradient_matches_finite_differences(op, c):
    check_case(op, c)
