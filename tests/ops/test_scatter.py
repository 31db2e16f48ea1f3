"""Scatter ops: scatter_elements, scatter_nd (with reductions of colliding updates) and
tensor_scatter. References are checked against the ONNX spec's examples and plain-loop
formulations; inference and errors."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph import TensorType
from irgraph import dtype as dt
from irgraph.errors import ExecutionError, ShapeError

from oprun import build, run

rng = np.random.default_rng(0)
F32 = dt.float32
I64 = dt.int64


# ---- scatter_elements --------------------------------------------------------------------------
def test_scatter_elements_spec_examples():
    got = run("scatter_elements", [np.zeros((3, 3), np.float32), np.array([[1, 0, 2], [0, 2, 1]], np.int64),
                                   np.array([[1.0, 1.1, 1.2], [2.0, 2.1, 2.2]], np.float32)])
    np.testing.assert_array_equal(got, np.array([[2.0, 1.1, 0.0], [1.0, 0.0, 2.2], [0.0, 2.1, 1.2]], np.float32))
    got = run("scatter_elements", [np.array([[1.0, 2.0, 3.0, 4.0, 5.0]], np.float32), np.array([[1, -2]], np.int32),
                                   np.array([[1.1, 2.1]], np.float32)], {"axis": 1})
    np.testing.assert_array_equal(got, np.array([[1.0, 1.1, 3.0, 2.1, 5.0]], np.float32))


@pytest.mark.parametrize("reduction,f", [("add", lambda a, b: a + b), ("mul", lambda a, b: a * b),
                                         ("max", max), ("min", min)])
def test_scatter_elements_reductions_with_duplicates(reduction, f):
    data = rng.integers(-5, 5, (3, 4)).astype(np.int64)
    ind = rng.integers(-3, 3, (5, 4))
    upd = rng.integers(-5, 5, (5, 4)).astype(np.int64)
    want = data.copy()
    for i, j in np.ndindex(*ind.shape):
        want[ind[i, j] % 3, j] = f(want[ind[i, j] % 3, j], upd[i, j])
    got = run("scatter_elements", [data, ind, upd], {"axis": 0, "reduction": reduction})
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(data, data.copy())  # input left untouched


def test_scatter_elements_errors():
    with pytest.raises(ShapeError, match="same shape"):
        build("scatter_elements", [TensorType((3, 3), F32), TensorType((2, 3), I64), TensorType((2, 2), F32)])
    with pytest.raises(ShapeError, match="dtype"):
        build("scatter_elements", [TensorType((3, 3), F32), TensorType((2, 3), I64), TensorType((2, 3), I64)])
    with pytest.raises(ShapeError, match="unknown reduction 'sum'"):
        build("scatter_elements", [TensorType((3,), F32), TensorType((2,), I64), TensorType((2,), F32)],
              {"reduction": "sum"})
    with pytest.raises(ExecutionError, match="index 3 out of range"):
        run("scatter_elements", [np.zeros(3, np.float32), np.array([3]), np.ones(1, np.float32)])


# ---- scatter_nd --------------------------------------------------------------------------------
def test_scatter_nd_spec_examples():
    got = run("scatter_nd", [np.arange(1, 9, dtype=np.float32), np.array([[4], [3], [1], [7]], np.int64),
                             np.array([9, 10, 11, 12], np.float32)])
    np.testing.assert_array_equal(got, [1, 11, 3, 10, 9, 6, 7, 12])
    data = np.arange(64, dtype=np.int32).reshape(4, 4, 4)
    upd = np.stack([np.full((4, 4), 5, np.int32), np.full((4, 4), 8, np.int32)])
    got = run("scatter_nd", [data, np.array([[0], [-2]], np.int64), upd])
    want = data.copy()
    want[0], want[2] = 5, 8
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("reduction,f", [("add", np.add), ("mul", np.multiply), ("max", np.maximum),
                                         ("min", np.minimum), ("none", lambda a, b: b)])
def test_scatter_nd_reductions_loop(reduction, f):
    data = rng.standard_normal((3, 4, 2)).astype(np.float32)
    ind = np.stack([rng.integers(-3, 3, 6), rng.integers(-4, 4, 6)], -1)
    if reduction == "none":
        ind = np.array([[0, 1], [2, -1], [1, 0]])  # distinct targets: the result is defined
    upd = rng.standard_normal((ind.shape[0], 2)).astype(np.float32)
    want = data.copy()
    for m in range(ind.shape[0]):
        i, j = ind[m, 0] % 3, ind[m, 1] % 4
        want[i, j] = f(want[i, j], upd[m])
    got = run("scatter_nd", [data, ind, upd], {"reduction": reduction})
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_scatter_nd_errors():
    with pytest.raises(ShapeError, match=r"indices.shape\[:-1\] \+ data.shape\[k:\]"):
        build("scatter_nd", [TensorType((4, 4), F32), TensorType((2, 1), I64), TensorType((2, 3), F32)])
    with pytest.raises(ExecutionError, match="index -5 out of range"):
        run("scatter_nd", [np.zeros((4, 4), np.float32), np.array([[-5]]), np.ones((1, 4), np.float32)])


# ---- tensor_scatter ----------------------------------------------------------------------------
def _tensor_scatter_loop(past, upd, w, axis, mode):
    res = past.copy()
    for prefix in np.ndindex(*past.shape[:axis]):
        for s in range(upd.shape[axis]):
            c = w[prefix[0]] + s
            if mode == "circular":
                c %= past.shape[axis]
            res[prefix + (c,)] = upd[prefix + (s,)]
    return res


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter_matches_pseudocode(mode):
    past = rng.standard_normal((3, 2, 6, 4)).astype(np.float32)
    upd = rng.standard_normal((3, 2, 3, 4)).astype(np.float32)
    w = np.array([0, 3, 5 if mode == "circular" else 2])
    got = run("tensor_scatter", [past, upd, w], {"axis": -2, "mode": mode})
    np.testing.assert_array_equal(got, _tensor_scatter_loop(past, upd, w, 2, mode))
    # without write_indices every batch entry writes at 0
    got = run("tensor_scatter", [past, upd], {"axis": 2, "mode": mode})
    np.testing.assert_array_equal(got, _tensor_scatter_loop(past, upd, np.zeros(3, int), 2, mode))


def test_tensor_scatter_errors():
    with pytest.raises(ExecutionError, match="runs past the cache"):
        run("tensor_scatter", [np.zeros((2, 4), np.float32), np.ones((2, 2), np.float32), np.array([0, 3])],
            {"axis": 1})
    with pytest.raises(ShapeError, match="exceeds the cache"):
        build("tensor_scatter", [TensorType((2, 4), F32), TensorType((2, 5), F32)], {"axis": 1})
    with pytest.raises(ShapeError, match="batch axis"):
        build("tensor_scatter", [TensorType((2, 4), F32), TensorType((2, 4), F32)], {"axis": 0})
    with pytest.raises(ShapeError, match="one index per batch entry"):
        build("tensor_scatter", [TensorType((2, 4), F32), TensorType((2, 1), F32), TensorType((3,), I64)],
              {"axis": 1})
