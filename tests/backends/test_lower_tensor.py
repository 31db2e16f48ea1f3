"""lower_tensor.View.to_numpy: the values of any view of a constant buffer (transposed, sliced
with steps, reversed, broadcast) equal numpy's own view of the same data."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph.backends.kernel_ir import Buffer
from irgraph.backends.lower_tensor import View, c_strides
from irgraph.dtype import DType


def _view(data: np.ndarray) -> View:
    buf = Buffer("w", DType.from_numpy(data.dtype), data.shape, "const", data)
    return View(buf, list(data.shape), c_strides(data.shape), 0, None)


@pytest.mark.parametrize("dtype", [np.float32, np.int8, np.float64])
def test_to_numpy_matches_numpy_views(dtype):
    data = (np.arange(4 * 5 * 6) % 97).astype(dtype).reshape(4, 5, 6)
    v = _view(data)
    cases = [
        (v, data),
        (v.slice(1, 1, 2, 2), data[:, 1:5:2]),
        (v.slice(2, 5, -1, 6), data[:, :, ::-1]),                 # a negative stride
        (v.slice(0, 3, -2, 2).slice(2, 1, 3, 2), data[3::-2, :, 1::3]),
        (v.slice(1, 0, 1, 0), data[:, :0]),
    ]
    for view, want in cases:
        got = view.to_numpy()
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        assert got.flags.c_contiguous and not np.shares_memory(got, data)


def test_to_numpy_of_a_broadcast_and_permuted_view():
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    v = _view(data)
    perm = View(v.buf, [3, 2], [1, 3], 0, None)                   # the transpose
    np.testing.assert_array_equal(perm.to_numpy(), data.T)
    bc = View(v.buf, [4, 2, 3], [0, 3, 1], 0, None)               # broadcast over a new axis
    np.testing.assert_array_equal(bc.to_numpy(), np.broadcast_to(data, (4, 2, 3)))
