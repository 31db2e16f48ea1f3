"""tensor_scatter lowered natively (backends/lower_tensor_scatter.py) against the numpy interpreter."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph import dtype as dt
from irgraph.graph import Graph
from irgraph.types import TensorType


from lowercheck import compare as _compare, private_object_cache  # noqa: F401,E402  (autouse fixture)


@pytest.mark.parametrize("shape,n,axis", [((3, 7, 5), 2, 1), ((2, 3, 6, 4), 3, -2), ((2, 3, 5, 4), 2, 1),
                                          ((2, 5), 5, 1)])
@pytest.mark.parametrize("mode", ["linear", "circular"])
@pytest.mark.parametrize("with_indices", [True, False])
def test_tensor_scatter_matches_interpreter(shape, n, axis, mode, with_indices):
    rng = np.random.default_rng(n)
    past = rng.standard_normal(shape).astype(np.float32)
    ushape = list(shape)
    ushape[axis] = n
    upd = rng.standard_normal(ushape).astype(np.float32)
    size = shape[axis]
    hi = size if mode == "circular" else size - n + 1
    w = rng.integers(0, hi, shape[0]).astype(np.int64)
    g = Graph()
    ins = [g.add_input("past", TensorType(past.shape, dt.float32)), g.add_input("upd", TensorType(upd.shape, dt.float32))]
    args = [past, upd]
    if with_indices:
        ins.append(g.add_input("w", TensorType(w.shape, dt.int64)))
        args.append(w)
    g.set_outputs([g.op("tensor_scatter", ins, {"axis": axis, "mode": mode})])
    _compare(g, *args, exact=True)


def test_circular_writes_wrap_around_the_cache():
    past = np.zeros((2, 4, 2), np.float32)
    upd = np.arange(1, 2 * 3 * 2 + 1, dtype=np.float32).reshape(2, 3, 2)
    g = Graph()
    ins = [g.add_input("past", TensorType(past.shape, dt.float32)), g.add_input("upd", TensorType(upd.shape, dt.float32)),
           g.add_input("w", TensorType((2,), dt.int64))]
    g.set_outputs([g.op("tensor_scatter", ins, {"axis": 1, "mode": "circular"})])
    got = _compare(g, past, upd, np.array([3, 1], np.int64), exact=True)[0]
    np.testing.assert_array_equal(got[0, :, 0], [3, 5, 0, 1])    # positions 3, 0, 1
    np.testing.assert_array_equal(got[1, :, 0], [0, 7, 9, 11])   # positions 1, 2, 3
