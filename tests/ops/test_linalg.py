"""Linear algebra ops: matmul, einsum, det — references against independent formulations,
inference (symbolic dims, dtypes) and errors that name the op."""
from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np
import pytest

from irgraph import ShapeError, TensorType

import oprun
from oprun import run

RNG = np.random.default_rng(1)


def infer(op, inputs, attrs=None):
    """The inferred type for inputs given as (shape, dtype) pairs."""
    return oprun.infer(op, [TensorType(shape, dtype) for shape, dtype in inputs], attrs)


# ---- matmul --------------------------------------------------------------------------------
def _loop_matmul(a, b):
    """Sum over k with explicit loops: the textbook definition."""
    m, k = a.shape
    n = b.shape[1]
    c = np.zeros((m, n))
    for i, j in itertools.product(range(m), range(n)):
        c[i, j] = sum(float(a[i, t]) * float(b[t, j]) for t in range(k))
    return c


def test_matmul_matches_loops_with_batch_broadcast():
    a, b = RNG.standard_normal((2, 1, 3, 4)), RNG.standard_normal((5, 4, 2))
    got = run("matmul", [a, b])
    assert got.shape == (2, 5, 3, 2)
    for i, j in itertools.product(range(2), range(5)):
        np.testing.assert_allclose(got[i, j], _loop_matmul(a[i, 0], b[j]), rtol=1e-12)


def test_matmul_vectors_and_integers():
    v, m = np.arange(3.0), np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(run("matmul", [v, m]), [10.0, 13.0])
    np.testing.assert_array_equal(run("matmul", [m.T, v]), [10.0, 13.0])  # 1-D right operand
    assert run("matmul", [v, v]).shape == ()
    ai = np.array([[1, 2], [3, 4]], np.int32)
    got = run("matmul", [ai, ai])
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, [[7, 10], [15, 22]])


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_matmul_half_types_round_float32_products(dtype):
    a, b = RNG.standard_normal((3, 64)).astype(dtype), RNG.standard_normal((64, 2)).astype(dtype)
    got = run("matmul", [a, b])
    assert got.dtype == dtype
    want = (a.astype(np.float32) @ b.astype(np.float32)).astype(dtype)
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))


def test_matmul_inference_and_errors():
    t = infer("matmul", [(("B", "M", 8), "float32"), ((8, "N"), "float32")])
    assert t.shape == ("B", "M", "N")
    with pytest.raises(ShapeError, match="inner dimensions") as e:
        infer("matmul", [((2, 3), "float32"), ((4, 5), "float32")])
    assert "matmul" in str(e.value)
    with pytest.raises(ShapeError, match="dtype"):
        infer("matmul", [((2, 3), "float32"), ((3, 5), "float64")])


# ---- einsum --------------------------------------------------------------------------------
def test_einsum_equations_against_explicit_formulas():
    a, b = RNG.standard_normal((2, 3, 4)), RNG.standard_normal((2, 4, 5))
    np.testing.assert_allclose(run("einsum", [a, b], {"equation": "bij,bjk->bik"}),
                               np.stack([a[i] @ b[i] for i in range(2)]), rtol=1e-12)
    m = RNG.standard_normal((4, 4))
    np.testing.assert_allclose(run("einsum", [m], {"equation": "ii->i"}), [m[i, i] for i in range(4)])
    np.testing.assert_allclose(run("einsum", [m], {"equation": "ii"}), np.trace(m), rtol=1e-12)
    np.testing.assert_allclose(run("einsum", [a], {"equation": "ijk -> kji"}), a.transpose(2, 1, 0))
    # implicit output: labels used once, alphabetically ('ba' -> transpose)
    np.testing.assert_allclose(run("einsum", [m], {"equation": "ba"}), m.T)
    x, y = RNG.standard_normal(5), RNG.standard_normal(5)
    np.testing.assert_allclose(run("einsum", [x, y], {"equation": "i,i"}), float(x @ y), rtol=1e-12)
    # ellipsis: batch dims broadcast
    p, q = RNG.standard_normal((3, 1, 2, 4)), RNG.standard_normal((5, 4, 2))
    got = run("einsum", [p, q], {"equation": "...ij,...jk->...ik"})
    assert got.shape == (3, 5, 2, 2)
    np.testing.assert_allclose(got[2, 3], p[2, 0] @ q[3], rtol=1e-12)


def test_einsum_keeps_integer_and_half_dtypes():
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    got = run("einsum", [a], {"equation": "ij->j"})
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, [3, 5, 7])
    h = RNG.standard_normal((3, 3)).astype(ml_dtypes.bfloat16)
    assert run("einsum", [h, h], {"equation": "ij,jk->ik"}).dtype == ml_dtypes.bfloat16


def test_einsum_inference():
    t = infer("einsum", [(("B", 3, "K"), "float32"), (("B", "K", 7), "float32")],
              {"equation": "bij,bjk->bik"})
    assert t.shape == ("B", 3, 7)
    t = infer("einsum", [(("N", 2, 3), "float16")], {"equation": "...ij->...ji"})
    assert t.shape == ("N", 3, 2) and t.dtype.name == "float16"
    t = infer("einsum", [((4, 5), "float32"), ((5,), "float32")], {"equation": "ij,j"})
    assert t.shape == (4,)


@pytest.mark.parametrize("eq,shapes,msg", [
    ("ij,jk->ik", [(2, 3), (4, 5)], "inconsistent sizes"),
    ("ij->i", [(2, 3, 4)], "rank 3"),
    ("ij,jk->ik", [(2, 3)], "2 input terms"),
    ("ij->iz", [(2, 3)], "not in any input"),
    ("i1->i", [(2, 3)], "not a letter"),
])
def test_einsum_errors_name_the_op(eq, shapes, msg):
    with pytest.raises(ShapeError, match=msg) as e:
        infer("einsum", [(s, "float32") for s in shapes], {"equation": eq})
    assert "einsum" in str(e.value)


# ---- det -----------------------------------------------------------------------------------
def test_det_hand_values_and_batches():
    np.testing.assert_allclose(run("det", [np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)]), -2.0, rtol=1e-6)
    m = np.array([[2.0, 0, 1], [1, 3, 2], [1, 1, 4]])
    want = 2 * (3 * 4 - 2 * 1) - 0 * (1 * 4 - 2 * 1) + 1 * (1 * 1 - 3 * 1)  # cofactor expansion = 18
    np.testing.assert_allclose(run("det", [m]), want, atol=1e-12)
    # a batch of triangular matrices: det = product of the diagonal
    tri = np.triu(RNG.standard_normal((2, 3, 4, 4)))
    got = run("det", [tri])
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, np.prod(np.diagonal(tri, axis1=-2, axis2=-1), axis=-1), rtol=1e-10)
    h = np.array([[3.0, 1.0], [1.0, 2.0]], np.float16)
    assert run("det", [h]).dtype == np.float16 and float(run("det", [h])) == 5.0


def test_det_inference_and_errors():
    assert infer("det", [(("B", 3, 3), "float32")]).shape == ("B",)
    with pytest.raises(ShapeError, match="square") as e:
        infer("det", [((2, 3), "float32")])
    assert "det" in str(e.value)
    with pytest.raises(ShapeError, match="dtype"):
        infer("det", [((2, 2), "int32")])
    with pytest.raises(ShapeError, match="rank"):
        infer("det", [((2,), "float32")])
