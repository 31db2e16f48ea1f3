"""max_unpool lowered natively (backends/lower_max_unpool.py) against the numpy interpreter."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph import dtype as dt
from irgraph.graph import Graph
from irgraph.types import TensorType


from lowercheck import compare as _compare, private_object_cache  # noqa: F401,E402  (autouse fixture)


def _default(sizes, kernel, strides, pads):
    n = len(sizes)
    return tuple((sz - 1) * s + k - pads[i] - pads[i + n] for i, (sz, s, k) in enumerate(zip(sizes, strides, kernel)))


@pytest.mark.parametrize("sizes,kernel,strides,pads,grow", [
    ((2, 3), (2, 2), (2, 2), (0, 0, 0, 0), None),
    ((3, 3), (3, 2), (2, 1), (1, 0, 0, 1), (1, 2)),
    ((5,), (3,), (2,), (0, 0), (3,)),
    ((2, 2, 3), (2, 2, 2), (2, 2, 2), (0,) * 6, (0, 1, 1)),
])
def test_max_unpool_matches_interpreter(sizes, kernel, strides, pads, grow):
    rng = np.random.default_rng(len(sizes))
    x = rng.standard_normal((2, 3) + sizes).astype(np.float32)
    default = (2, 3) + _default(sizes, kernel, strides, pads)
    # distinct positions in the default canvas, and one repeated position (the later write wins)
    ind = rng.permutation(int(np.prod(default)))[:x.size].reshape(x.shape).astype(np.int64)
    ind.reshape(-1)[-1] = ind.reshape(-1)[0]
    g = Graph()
    ins = [g.add_input("x", TensorType(x.shape, dt.float32)), g.add_input("i", TensorType(x.shape, dt.int64))]
    if grow is not None:
        ins.append(g.add_const(np.array(default[:2] + tuple(d + e for d, e in zip(default[2:], grow)), np.int64)))
    g.set_outputs([g.op("max_unpool", ins, {"kernel_shape": kernel, "strides": strides, "pads": pads})])
    _compare(g, x, ind, exact=True)


def test_max_unpool_of_max_pool_indices():
    x = np.random.default_rng(5).standard_normal((1, 3, 6, 8)).astype(np.float64)
    g = Graph()
    xi = g.add_input("x", TensorType(x.shape, dt.float64))
    y, ind = g.op("max_pool", [xi], {"kernel_shape": (2, 2), "strides": (2, 2), "indices": True})
    g.set_outputs([g.op("max_unpool", [y, ind], {"kernel_shape": (2, 2), "strides": (2, 2)})])
    _compare(g, x, exact=True)
