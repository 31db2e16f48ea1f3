"""col2im lowered natively (backends/lower_col2im.py) against the numpy interpreter: the
gather adds the block positions in the reference's order, so the results are identical."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
from irgraph import dtype as dt
from irgraph.graph import Graph
from irgraph.types import TensorType


from lowercheck import compare as _compare, private_object_cache  # noqa: F401,E402  (autouse fixture)


def _blocks(image, block, dil, strides, pads):
    n = len(image)
    return [(s + pads[i] + pads[i + n] - dil[i] * (k - 1) - 1) // strides[i] + 1
            for i, (s, k) in enumerate(zip(image, block))]


CASES = [  # image, block, dilations, strides, pads
    ((5, 5), (2, 2), (1, 1), (1, 1), (0, 0, 0, 0)),
    ((7, 9), (3, 2), (1, 1), (2, 3), (1, 0, 2, 1)),
    ((6, 7), (2, 3), (2, 1), (1, 2), (0, 1, 1, 0)),
    ((11,), (3,), (2,), (3,), (1, 2)),
    ((3, 4, 5), (1, 2, 3), (1, 1, 2), (1, 2, 1), (0, 1, 0, 1, 0, 2)),
]


@pytest.mark.parametrize("image,block,dil,strides,pads", CASES)
@pytest.mark.parametrize("d", [dt.float32, dt.float64, dt.float16])
def test_col2im_matches_interpreter(image, block, dil, strides, pads, d):
    rng = np.random.default_rng(len(image) + sum(block))
    L = int(np.prod(_blocks(image, block, dil, strides, pads)))
    x = rng.standard_normal((2, 3 * int(np.prod(block)), L)).astype(d.np)
    g = Graph()
    ins = [g.add_input("x", TensorType(x.shape, d)), g.add_const(np.array(image, np.int64)),
           g.add_const(np.array(block, np.int64))]
    g.set_outputs([g.op("col2im", ins, {"dilations": dil, "strides": strides, "pads": pads})])
    _compare(g, x, exact=True)


def test_col2im_with_shapes_given_at_run_time():
    """image_shape / block_shape as graph inputs: the cpu target specializes on their values."""
    x = np.arange(2 * 4 * 12, dtype=np.float32).reshape(2, 4, 12)
    g = Graph()
    ins = [g.add_input("x", TensorType(x.shape, dt.float32)), g.add_input("image", TensorType((2,), dt.int64)),
           g.add_input("block", TensorType((2,), dt.int64))]
    g.set_outputs([g.op("col2im", ins, {})])
    args = (x, np.array([4, 5], np.int64), np.array([2, 2], np.int64))
    ref = irgraph.compile(g).run(*args)[0]
    got = irgraph.compile(g, target="cpu").run(*args)[0]
    np.testing.assert_array_equal(got, ref)
