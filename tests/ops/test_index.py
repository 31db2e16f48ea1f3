"""Index ops: gather (elements, nd), one_hot, nonzero, compress, unique, top_k (the scatters are
in test_scatter.py). References are checked against hand-computed values (mostly the ONNX spec's
examples) and against plain-loop formulations; inference against the shapes the references
produce."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from irgraph import TensorType
from irgraph import dtype as dt
from irgraph.errors import ExecutionError, ShapeError
from irgraph.types import is_static_dim

from oprun import build, infer, run

rng = np.random.default_rng(0)
F32 = dt.float32
I64 = dt.int64


# ---- gather ------------------------------------------------------------------------------------
def test_gather_spec_examples():
    data = np.array([[1.0, 1.2], [2.3, 3.4], [4.5, 5.7]], np.float32)
    got = run("gather", [data, np.array([[0, 1], [1, 2]], np.int64)])
    np.testing.assert_array_equal(got, np.array([[[1.0, 1.2], [2.3, 3.4]], [[2.3, 3.4], [4.5, 5.7]]], np.float32))
    data = np.array([[1.0, 1.2, 1.9], [2.3, 3.4, 3.9], [4.5, 5.7, 5.9]], np.float32)
    got = run("gather", [data, np.array([[0, 2]], np.int32)], {"axis": 1})
    np.testing.assert_array_equal(got, np.array([[[1.0, 1.9]], [[2.3, 3.9]], [[4.5, 5.9]]], np.float32))


def test_gather_negative_and_scalar_indices():
    data = np.arange(12, dtype=np.int32).reshape(3, 4)
    np.testing.assert_array_equal(run("gather", [data, np.array([-1, 0], np.int64)], {"axis": -1}),
                                  [[3, 0], [7, 4], [11, 8]])
    got = run("gather", [data, np.array(-2, np.int64)])
    assert got.shape == (4,)
    np.testing.assert_array_equal(got, [4, 5, 6, 7])


def test_gather_matches_loop_formulation():
    data = rng.standard_normal((3, 4, 5)).astype(np.float32)
    ind = rng.integers(-4, 4, (2, 3))
    got = run("gather", [data, ind], {"axis": 1})
    want = np.empty((3, 2, 3, 5), np.float32)
    for i, j, k in itertools.product(range(3), range(2), range(3)):
        want[i, j, k] = data[i, ind[j, k] % 4]
    np.testing.assert_array_equal(got, want)


def test_gather_infer_symbolic():
    t = infer("gather", [TensorType(("b", 7, "c"), F32), TensorType(("n", 2), I64)], {"axis": 1})
    assert t == TensorType(("b", "n", 2, "c"), F32)
    assert infer("gather", [TensorType(None, F32), TensorType((2,), I64)]).shape is None


def test_gather_out_of_range_is_an_error():
    data = np.zeros((2, 3), np.float32)
    with pytest.raises(ExecutionError, match=r"index 3 out of range for axis 1 of size 3") as e:
        run("gather", [data, np.array([0, 3], np.int64)], {"axis": 1})
    assert e.value.op == "gather" and e.value.node is not None
    with pytest.raises(ExecutionError, match="index -3 out of range"):
        run("gather", [data, np.array([-3], np.int64)])
    # known indices are checked at compile time
    with pytest.raises(ShapeError, match="index -4 out of range") as e:
        build("gather", [data, np.array([-4], np.int64)], {"axis": 1}, const=(1,))
    assert e.value.op == "gather"


def test_gather_bad_inputs():
    with pytest.raises(ShapeError, match="indices must be integers"):
        build("gather", [TensorType((2,), F32), TensorType((1,), F32)])
    with pytest.raises(ShapeError, match="rank >= 1"):
        build("gather", [TensorType((), F32), TensorType((1,), I64)])
    with pytest.raises(ShapeError, match="axis 2 out of range"):
        build("gather", [TensorType((2, 2), F32), TensorType((1,), I64)], {"axis": 2})


# ---- gather_elements ---------------------------------------------------------------------------
def test_gather_elements_spec_examples():
    got = run("gather_elements", [np.array([[1, 2], [3, 4]], np.int64), np.array([[0, 0], [1, 0]], np.int64)],
              {"axis": 1})
    np.testing.assert_array_equal(got, [[1, 1], [4, 3]])
    data = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    got = run("gather_elements", [data, np.array([[1, 2, 0], [2, 0, 0]], np.int32)])
    np.testing.assert_array_equal(got, [[4, 8, 3], [7, 2, 3]])
    got = run("gather_elements", [data, np.array([[-1, -2, 0], [-3, 0, 0]], np.int64)])
    np.testing.assert_array_equal(got, [[7, 5, 3], [1, 2, 3]])


def test_gather_elements_smaller_indices_loop():
    data = rng.standard_normal((4, 5, 3)).astype(np.float32)
    ind = rng.integers(-5, 5, (2, 7, 3))
    got = run("gather_elements", [data, ind], {"axis": 1})
    want = np.empty(ind.shape, np.float32)
    for i, j, k in np.ndindex(*ind.shape):
        want[i, j, k] = data[i, ind[i, j, k] % 5, k]
    np.testing.assert_array_equal(got, want)


def test_gather_elements_errors():
    with pytest.raises(ShapeError, match="same rank"):
        build("gather_elements", [TensorType((2, 2), F32), TensorType((2,), I64)])
    with pytest.raises(ShapeError, match="larger than data"):
        build("gather_elements", [TensorType((2, 2), F32), TensorType((3, 1), I64)], {"axis": 1})
    with pytest.raises(ExecutionError, match="index 2 out of range"):
        run("gather_elements", [np.zeros((2, 2), np.float32), np.array([[2]], np.int64)])


# ---- gather_nd ---------------------------------------------------------------------------------
def test_gather_nd_spec_examples():
    d2 = np.array([[0, 1], [2, 3]], np.int32)
    np.testing.assert_array_equal(run("gather_nd", [d2, np.array([[0, 0], [1, 1]], np.int64)]), [0, 3])
    np.testing.assert_array_equal(run("gather_nd", [d2, np.array([[1], [0]], np.int64)]), [[2, 3], [0, 1]])
    d3 = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    np.testing.assert_array_equal(run("gather_nd", [d3, np.array([[0, 1], [1, 0]], np.int64)]),
                                  [[2, 3], [4, 5]])
    np.testing.assert_array_equal(run("gather_nd", [d3, np.array([[[0, 1]], [[1, 0]]], np.int64)]),
                                  [[[2, 3]], [[4, 5]]])
    np.testing.assert_array_equal(run("gather_nd", [d3, np.array([[1], [0]], np.int64)], {"batch_dims": 1}),
                                  [[2, 3], [4, 5]])


def test_gather_nd_batch_loop_and_negative():
    data = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    ind = np.stack([rng.integers(-4, 4, (2, 3, 6)), rng.integers(-5, 5, (2, 3, 6))], -1)
    got = run("gather_nd", [data, ind], {"batch_dims": 2})
    assert got.shape == (2, 3, 6)
    for a, b, m in np.ndindex(2, 3, 6):
        assert got[a, b, m] == data[a, b, ind[a, b, m, 0] % 4, ind[a, b, m, 1] % 5]


def test_gather_nd_infer_and_errors():
    t = infer("gather_nd", [TensorType(("b", 4, 5, 6), F32), TensorType(("b", "m", 2), I64)],
                 {"batch_dims": 1})
    assert t == TensorType(("b", "m", 6), F32)
    with pytest.raises(ShapeError, match="longer than the data rank"):
        build("gather_nd", [TensorType((4, 5), F32), TensorType((1, 3), I64)])
    with pytest.raises(ShapeError, match="batch_dims"):
        build("gather_nd", [TensorType((4, 5), F32), TensorType((4, 1), I64)], {"batch_dims": 2})
    with pytest.raises(ShapeError, match="batch dim 0"):
        build("gather_nd", [TensorType((4, 5), F32), TensorType((3, 1), I64)], {"batch_dims": 1})
    with pytest.raises(ExecutionError, match="index 5 out of range for axis 1"):
        run("gather_nd", [np.zeros((4, 5), np.float32), np.array([[0, 5]], np.int64)])


# ---- one_hot -----------------------------------------------------------------------------------
def test_one_hot_values_axes_and_out_of_range():
    ind = np.array([[1, -1], [5, 0]], np.int64)  # -1 means depth - 1; 5 is out of range: all off
    vals = np.array([0.5, 3.0], np.float32)
    got = run("one_hot", [ind, np.array(3, np.int64), vals])
    want = np.full((2, 2, 3), 0.5, np.float32)
    want[0, 0, 1] = want[0, 1, 2] = want[1, 1, 0] = 3.0
    np.testing.assert_array_equal(got, want)
    got0 = run("one_hot", [ind, np.array([3.0], np.float32), vals], {"axis": 0})
    np.testing.assert_array_equal(got0, np.moveaxis(want, -1, 0))
    fi = np.where(ind < 0, ind - 0.25, ind + 0.25).astype(np.float32)
    got_f = run("one_hot", [fi, np.array(3, np.int64), vals])
    np.testing.assert_array_equal(got_f, want)  # float indices use their integer part


def test_one_hot_infer():
    t = infer("one_hot", [TensorType(("n", 2), I64), TensorType((), I64), TensorType((2,), dt.int8)],
                 {"axis": 1})
    assert t.dtype is dt.int8 and t.shape[0] == "n" and t.shape[2] == 2 and not is_static_dim(t.shape[1])
    t = infer("one_hot", [np.zeros((4,), np.int64), np.array(6, np.int64), np.zeros(2, np.float32)], const=(1,))
    assert t == TensorType((4, 6), F32)
    with pytest.raises(ShapeError, match="depth must be positive"):
        build("one_hot", [np.zeros((4,), np.int64), np.array(0, np.int64), np.zeros(2, np.float32)], const=(1,))
    with pytest.raises(ShapeError, match=r"\[off_value, on_value\]"):
        build("one_hot", [TensorType((4,), I64), TensorType((), I64), TensorType((3,), F32)])


# ---- nonzero -----------------------------------------------------------------------------------
def test_nonzero_matches_argwhere():
    x = rng.integers(0, 2, (3, 4, 5)).astype(np.float32)
    x[0, 0, 0] = np.nan  # NaN is not zero
    got = run("nonzero", [x])
    np.testing.assert_array_equal(got, np.argwhere(x != 0).T)
    assert got.dtype == np.int64
    s = run("nonzero", [np.array(2.0, np.float32)])
    assert s.shape == (0, 1)  # ONNX: a scalar gives (0, N)
    assert run("nonzero", [np.array(False)]).shape == (0, 0)


def test_nonzero_infer():
    t = infer("nonzero", [TensorType(("a", 3), F32)])
    assert t.dtype is I64 and t.shape[0] == 2 and not is_static_dim(t.shape[1])
    assert infer("nonzero", [TensorType((0, 3), F32)]).shape == (2, 0)


# ---- compress ----------------------------------------------------------------------------------
def test_compress_matches_boolean_indexing():
    x = rng.standard_normal((3, 4)).astype(np.float32)
    c = np.array([True, False, True, True])
    np.testing.assert_array_equal(run("compress", [x, c], {"axis": 1}), x[:, c])
    np.testing.assert_array_equal(run("compress", [x, c[:2]], {"axis": -2}), x[:1])  # short: rest False
    np.testing.assert_array_equal(run("compress", [x, c]), x.reshape(-1)[:4][c])


def test_compress_infer_and_errors():
    t = infer("compress", [TensorType(("a", 4), F32), TensorType((4,), dt.bool_)], {"axis": 1})
    assert t.shape[0] == "a" and not is_static_dim(t.shape[1])
    t = infer("compress", [np.zeros((2, 4), np.float32), np.array([1, 0, 1], bool)], {"axis": 1}, const=(1,))
    assert t == TensorType((2, 2), F32)
    with pytest.raises(ShapeError, match="condition must be bool"):
        build("compress", [TensorType((4,), F32), TensorType((4,), I64)])
    with pytest.raises(ExecutionError, match="selects index 4"):
        run("compress", [np.zeros((2, 4), np.float32), np.array([0, 0, 0, 0, 1], bool)], {"axis": 1})


# ---- unique ------------------------------------------------------------------------------------
def test_unique_spec_examples():
    y, idx, inv, cnt = run("unique", [np.array([2, 1, 1, 3, 4, 3], np.float32)], {"sorted": False}, num_outputs=4)
    for got, want in zip((y, idx, inv, cnt), ([2, 1, 3, 4], [0, 1, 3, 4], [0, 1, 1, 2, 3, 2], [1, 2, 2, 1])):
        np.testing.assert_array_equal(got, want)
    y, idx, inv, cnt = run("unique", [np.array([[1, 3], [2, 3]], np.int32)], num_outputs=4)
    for got, want in zip((y, idx, inv, cnt), ([1, 2, 3], [0, 2, 1], [0, 2, 1, 2], [1, 1, 2])):
        np.testing.assert_array_equal(got, want)
    y, idx, inv, cnt = run("unique", [np.array([[1, 0, 0], [1, 0, 0], [2, 3, 4]], np.int64)], {"axis": 0},
                           num_outputs=4)
    for got, want in zip((y, idx, inv, cnt), ([[1, 0, 0], [2, 3, 4]], [0, 2], [0, 0, 1], [2, 1])):
        np.testing.assert_array_equal(got, want)
    x = np.array([[[1., 1.], [0., 1.], [2., 1.], [0., 1.]], [[1., 1.], [0., 1.], [2., 1.], [0., 1.]]], np.float32)
    y, idx, inv, cnt = run("unique", [x], {"axis": 1}, num_outputs=4)
    np.testing.assert_array_equal(y, [[[0, 1], [1, 1], [2, 1]], [[0, 1], [1, 1], [2, 1]]])
    for got, want in zip((idx, inv, cnt), ([1, 0, 2], [1, 0, 2, 0], [2, 1, 1])):
        np.testing.assert_array_equal(got, want)


def test_unique_roundtrip_properties():
    x = rng.integers(0, 4, (5, 3)).astype(np.float16)
    for srt in (True, False):
        y, idx, inv, cnt = run("unique", [x], {"sorted": srt, "axis": 0}, num_outputs=4)
        np.testing.assert_array_equal(y[inv], x)            # inverse rebuilds the input
        np.testing.assert_array_equal(x[idx], y)            # indices point at first occurrences
        assert all((x[:i] != x[i]).any(axis=1).all() for i in idx)
        np.testing.assert_array_equal(np.bincount(inv), cnt)
        if not srt:
            assert list(idx) == sorted(idx)


def test_unique_infer_shares_the_count_symbol():
    y, idx, inv, cnt = infer("unique", [TensorType((3, 4), F32)], num_outputs=4)
    u = y.shape[0]
    assert not is_static_dim(u) and idx.shape == (u,) and cnt.shape == (u,) and inv.shape == (12,)
    y, idx, inv, cnt = infer("unique", [TensorType((3, 4), F32)], {"axis": -1}, num_outputs=4)
    assert y.shape[0] == 3 and y.shape[1] == idx.shape[0] and inv.shape == (4,)
    with pytest.raises(ShapeError, match="axis 2 out of range"):
        build("unique", [TensorType((3, 4), F32)], {"axis": 2}, num_outputs=4)


# ---- top_k -------------------------------------------------------------------------------------
def test_top_k_ties_go_to_the_lower_index():
    x = np.array([[0, 1, 1, 0, 2, 1], [3, 3, 3, 3, 3, 3]], np.float32)
    v, i = run("top_k", [x, np.array([3], np.int64)], num_outputs=2)
    np.testing.assert_array_equal(i, [[4, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(v, [[2, 1, 1], [3, 3, 3]])
    v, i = run("top_k", [x, np.array([4], np.int64)], {"largest": False}, num_outputs=2)
    np.testing.assert_array_equal(i, [[0, 3, 1, 2], [0, 1, 2, 3]])


@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.int64, np.float16])
@pytest.mark.parametrize("largest", [True, False])
def test_top_k_matches_python_sort(dtype, largest):
    x = rng.integers(0, 5, (4, 7, 3)).astype(dtype)
    v, i = run("top_k", [x, np.array([5], np.int64)], {"axis": 1, "largest": largest}, num_outputs=2)
    assert v.dtype == dtype and i.dtype == np.int64 and v.shape == (4, 5, 3)
    for a, c in np.ndindex(4, 3):
        col = [float(t) for t in x[a, :, c]]
        order = sorted(range(7), key=lambda j: (-col[j] if largest else col[j], j))[:5]
        np.testing.assert_array_equal(i[a, :, c], order)
        np.testing.assert_array_equal(v[a, :, c], x[a, order, c])


def test_top_k_infer_and_errors():
    v, i = infer("top_k", [TensorType(("n", 8), F32), TensorType((1,), I64)], num_outputs=2)
    assert v.shape[0] == "n" and not is_static_dim(v.shape[1]) and i.shape == v.shape and i.dtype is I64
    v, i = infer("top_k", [TensorType(("n", 8), F32), np.array([3], np.int64)], {"axis": 1},
                    num_outputs=2, const=(1,))
    assert v == TensorType(("n", 3), F32)
    with pytest.raises(ShapeError, match="k = 9 out of range"):
        build("top_k", [TensorType((2, 8), F32), np.array([9], np.int64)], num_outputs=2, const=(1,))
    with pytest.raises(ShapeError, match="k must be int64"):
        build("top_k", [TensorType((2, 8), F32), TensorType((1,), dt.int32)], num_outputs=2)
    with pytest.raises(ExecutionError, match="k = 9 out of range"):
        run("top_k", [np.zeros((2, 8), np.float32), np.array([9], np.int64)], num_outputs=2)
