"""det lowered natively (backends/lower_det.py: LU with partial pivoting) against the numpy
interpreter (np.linalg.det in float64)."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph import dtype as dt
from irgraph.graph import Graph
from irgraph.types import TensorType


from lowercheck import compare as _compare, private_object_cache  # noqa: F401,E402  (autouse fixture)


def _det_graph(shape, d):
    g = Graph()
    x = g.add_input("x", TensorType(shape, d))
    g.set_outputs([g.op("det", [x])])
    return g


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 3), (5, 5), (4, 7, 7), (2, 3, 6, 6), (9, 4, 4)])
@pytest.mark.parametrize("d", [dt.float32, dt.float64])
def test_det_matches_interpreter(shape, d):
    x = np.random.default_rng(shape[-1]).standard_normal(shape).astype(d.np)
    tol = 1e-5 if d is dt.float32 else 1e-11
    _compare(_det_graph(shape, d), x, rtol=tol, atol=tol)


def test_det_needs_pivoting_and_handles_singular_matrices():
    x = np.array([[[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [4.0, -3.0, 8.0]],      # zero first pivot
                  [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]],       # singular
                  [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
                  [[1e-20, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 2.0]],     # tiny pivot: must swap
                  [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])      # a permutation
    got = _compare(_det_graph(x.shape, dt.float64), x, rtol=1e-12, atol=1e-12)[0]
    np.testing.assert_allclose(got, [-2.0, 0.0, 0.0, -2.0, -1.0], rtol=1e-12, atol=1e-12)


def test_det_of_float16_matrices():
    x = np.random.default_rng(3).uniform(-1, 1, (3, 4, 4)).astype(np.float16)
    _compare(_det_graph(x.shape, dt.float16), x, rtol=1e-3, atol=1e-3)
