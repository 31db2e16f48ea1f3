"""The CSR kernel (backends/cpu/sparse_gemm.py) against float64 numpy, and the lowering of
sparse_matmul / sparse_conv (backends/lower_sparse.py) on target cpu against the interpreter."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
import irgraph.backends.lower_sparse  # noqa: F401  (the rules under test)
from irgraph import Graph, TensorType, run_graph
from irgraph.backends.cpu.codegen import CpuTemplates
from irgraph.backends.cpu.sparse_gemm import CSR, SparseGemmConfig, SparseGemmKernel
from irgraph.backends.kernel_ir import ExternCall
from irgraph.backends.lower import lower_node
from irgraph.ops import sparse

from lowercheck import private_object_cache  # noqa: F401  (autouse fixture: a temporary object cache)

RNG = np.random.default_rng(7)


def sparse_matrix(shape, density, rng=RNG, dead_rows=(0,), full_rows=()):
    w = rng.standard_normal(shape).astype(np.float32)
    w[rng.random(shape) >= density] = 0
    for r in dead_rows:
        w[r] = 0
    for r in full_rows:
        w[r] = rng.standard_normal(shape[1]).astype(np.float32)
    return w


@pytest.fixture(scope="module")
def kernels():
    out = {}
    for gather in (False, True):
        for tile in ((1, 8), (2, 4), (4, 2), (1, 1)):
            if gather and tile != (1, 1):
                continue
            for par in (False, True):
                cfg = SparseGemmConfig.for_host(tile_vectors=tile[0], chains=tile[1])
                out[(gather, tile, par)] = SparseGemmKernel(cfg, gather=gather, parallel=par).build()
    return out


# (rows R, columns K, P): partial panels, rows shorter than the chains, one column, empty matrix
SHAPES = [(5, 7, 1), (33, 20, 3), (17, 40, 100), (64, 96, 67), (3, 9, 200), (8, 300, 16), (40, 64, 129)]


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{r}x{k}x{p}" for r, k, p in SHAPES])
def test_kernel_matches_numpy(kernels, shape):
    R, K, P = shape
    w = sparse_matrix((R, K), 0.3, full_rows=(R - 1,))
    csr = CSR.from_dense(w)
    x3 = RNG.standard_normal((2, K, P)).astype(np.float32)
    bias = RNG.standard_normal(R).astype(np.float32)
    want = np.einsum("rk,tkp->trp", w.astype(np.float64), x3.astype(np.float64))
    xm = RNG.standard_normal((P, K)).astype(np.float32)
    want_mm = xm.astype(np.float64) @ w.T.astype(np.float64)
    for (gather, tile, par), k in kernels.items():
        for threads in ((1, 2) if par else (1,)):
            got = k.rows(csr, x3, bias=bias, num_threads=threads)
            np.testing.assert_allclose(got, want + bias[None, :, None], rtol=1e-5, atol=1e-5,
                                       err_msg=f"gather={gather} tile={tile} threads={threads}")
            np.testing.assert_allclose(k.matmul(xm, csr, num_threads=threads), want_mm, rtol=1e-5, atol=1e-5)


def test_kernel_empty_matrix_gives_the_bias(kernels):
    csr = CSR.from_dense(np.zeros((6, 10), np.float32))
    assert csr.nnz == 0
    bias = np.arange(6, dtype=np.float32)
    x = RNG.standard_normal((10, 37)).astype(np.float32)
    for k in kernels.values():
        np.testing.assert_array_equal(k.rows(csr, x, bias=bias), np.broadcast_to(bias[:, None], (6, 37)))


def test_results_do_not_depend_on_the_thread_count(kernels):
    # each output is summed by one thread in a fixed order: bit-identical for 1 and 2 threads
    csr = CSR.from_dense(sparse_matrix((48, 200), 0.2))
    x = RNG.standard_normal((200, 300)).astype(np.float32)
    k = kernels[(False, (2, 4), True)]
    np.testing.assert_array_equal(k.rows(csr, x, num_threads=1), k.rows(csr, x, num_threads=2))


def test_csr_round_trip():
    w = sparse_matrix((9, 13), 0.4)
    ip, ix, v = sparse.to_csr(w)
    assert ip.dtype == ix.dtype == np.int32 and ip[0] == 0 and ip[-1] == np.count_nonzero(w)
    np.testing.assert_array_equal(sparse.from_csr(ip, ix, v, w.shape), w)


# ---- lowering ---------------------------------------------------------------------------------------
def _mm_graph(x_shape, w, bias="const", relu=True):
    g = Graph("sparse_mm")
    x = g.add_input("x", TensorType(x_shape, "float32"))
    ip, ix, vals = sparse.to_csr(w.T)
    ins = [x, g.add_const(ip), g.add_const(ix), g.add_const(vals)]
    if bias == "const":
        ins.append(g.add_const(RNG.standard_normal(w.shape[1]).astype(np.float32)))
    elif bias == "input":
        ins.append(g.add_input("b", TensorType((w.shape[1],), "float32")))
    y = g.op("sparse_matmul", ins, {"k": w.shape[0]})
    g.set_outputs([g.op("relu", [y]) if relu else y])
    return g


def _conv_graph(x_shape, r, k, attrs, bias=True):
    c = x_shape[1]
    w = sparse_matrix((r, c * k[0] * k[1]), 0.35).reshape((r, c) + tuple(k))
    g = Graph("sparse_conv")
    x = g.add_input("x", TensorType(x_shape, "float32"))
    ip, ix, vals = sparse.to_csr(w.reshape(r, -1))
    ins = [x, g.add_const(ip), g.add_const(ix), g.add_const(vals)]
    if bias:
        ins.append(g.add_const(RNG.standard_normal(r).astype(np.float32)))
    y = g.op("sparse_conv", ins, {"in_channels": c, "kernel_shape": list(k), **attrs})
    g.set_outputs([g.op("relu", [y])])
    return g


def _check_cpu(g, threads=(1, 2)):
    feeds = [RNG.standard_normal(v.shape).astype(np.float32) for v in g.inputs]
    want = run_graph(g, feeds)[0]
    for t in threads:
        m = irgraph.compile(g, target="cpu", num_threads=t)
        np.testing.assert_allclose(m.run(*feeds)[0], want, rtol=1e-5, atol=1e-5)


def _uses_kernel(g) -> bool:
    node = next(n for n in g.nodes if n.op.startswith("sparse_"))
    return any(isinstance(s, ExternCall) and s.fn == "spmm"
               for s in lower_node(node, templates=CpuTemplates(1)).kernel.body)


MM_CASES = [((1, 20), (20, 7), "const"), ((3, 20), (20, 7), "input"), ((40, 33), (33, 9), None),
            ((2, 35, 16), (16, 24), "const"), ((70, 16), (16, 5), "const")]


@pytest.mark.parametrize("x_shape,w_shape,bias", MM_CASES, ids=[str(c[0]) for c in MM_CASES])
def test_sparse_matmul_on_cpu(x_shape, w_shape, bias):
    g = _mm_graph(x_shape, sparse_matrix(w_shape, 0.3, dead_rows=()), bias)
    assert _uses_kernel(g)
    _check_cpu(g)


CONV_CASES = [
    ("same 3x3", (2, 3, 8, 8), 5, (3, 3), {"pads": [1, 1, 1, 1]}),
    ("valid 3x3", (1, 4, 7, 9), 6, (3, 3), {}),
    ("asymmetric pads, dilation", (1, 3, 9, 8), 4, (3, 2), {"pads": [2, 0, 1, 1], "dilations": [2, 1]}),
    ("1x1 plain", (2, 5, 6, 6), 4, (1, 1), {}),
    ("planes 1 KiB apart", (2, 6, 14, 14), 8, (3, 3), {"pads": [1, 1, 1, 1]}),
    ("stride 2", (1, 4, 7, 9), 6, (3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("stride 2 1x1", (2, 8, 8, 8), 16, (1, 1), {"strides": [2, 2]}),
    ("auto_pad same", (1, 8, 5, 5), 16, (3, 3), {"auto_pad": "SAME_UPPER"}),
]


@pytest.mark.parametrize("desc,x_shape,r,k,attrs", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_sparse_conv_on_cpu(desc, x_shape, r, k, attrs):
    g = _conv_graph(x_shape, r, k, attrs, bias=desc != "valid 3x3")
    assert _uses_kernel(g)
    _check_cpu(g)


def test_values_known_only_at_run_time_take_the_decomposition():
    w = sparse_matrix((12, 6), 0.5)
    g = Graph("runtime_values")
    x = g.add_input("x", TensorType((3, 12), "float32"))
    ip, ix, vals = sparse.to_csr(w.T)
    v = g.add_input("v", TensorType(vals.shape, "float32"))
    g.set_outputs([g.op("sparse_matmul", [x, g.add_const(ip), g.add_const(ix), v], {"k": 12})])
    assert not _uses_kernel(g)
    xv = RNG.standard_normal((3, 12)).astype(np.float32)
    m = irgraph.compile(g, target="cpu")
    np.testing.assert_allclose(m.run(xv, vals)[0], xv @ w, rtol=1e-5, atol=1e-5)
