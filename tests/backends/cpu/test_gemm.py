"""The fp32 GEMM generator against numpy: edge shapes, blocking, epilogues, packed B, batches,
threads, the 8- and 4-lane kernels on CPUs without AVX-512, the workspace bound and the hot loop."""
from __future__ import annotations

import ctypes
import math
import re

import llvmlite.ir as ir
import numpy as np
import pytest

from irgraph.backends.cpu import cache as object_cache
from irgraph.backends.cpu.gemm import (ACTIVATIONS, CompiledGemm, Epilogue, GemmConfig, GemmKernel,
                                       workspace_bytes)
from irgraph.backends.cpu.llvm_target import host_cpu
from irgraph.errors import CompileError, InputError

from lowercheck import private_object_cache  # noqa: F401  (autouse fixture: a temporary object cache)

LANES = host_cpu().f32_lanes
# A small tile and small blocks: a 150-deep product then spans several K, M and N blocks.
SMALL = GemmConfig.for_host(mr=4, nr=2 * LANES, kc=64, mc=16, nc=4 * LANES, unroll=2)
AVX2 = ("haswell", "")          # the CPU name implies AVX2 + FMA and nothing newer
SSE2 = ("x86-64", "")


_built: dict = {}


def build(config=None, target=None, **kw) -> CompiledGemm:
    key = (config, target, tuple(sorted(kw.items(), key=lambda x: x[0])))
    if key not in _built:
        _built[key] = GemmKernel(config or GemmConfig.for_host(), **kw).build(target=target)
    return _built[key]


def rand(*shape, seed=0):
    return np.random.default_rng(seed + 7 * len(shape) + sum(shape)).standard_normal(shape, dtype=np.float32)


def check_close(c, a, b, extra=None):
    """Against a float64 product, each element within 1e-5 of sum_k |a_ik * b_kj| (a wrong or
    missing term of size ~1 breaks it; accumulated float32 rounding does not)."""
    ref = np.matmul(a.astype(np.float64), b.astype(np.float64))
    scale = np.matmul(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
    if extra is not None:
        ref = extra(ref)
    assert c.shape == ref.shape and c.dtype == np.float32
    err = np.abs(c - ref)
    worst = np.unravel_index(err.argmax(), err.shape)
    assert np.all(err <= 1e-5 * scale + 1e-6), f"max err {err.max()} at {worst}"


SHAPES = [(1, 1, 1), (37, 53, 29), (15, 33, 64), (1, 4096, 1024), (2, 100, 7), (3, 50, 17),
          (4, 31, 5), (14, 32, 1), (29, 65, 300), (200, 300, 500), (113, 1025, 1030)]


@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_default_kernel_matches_numpy(M, N, K, threads):
    g = build()
    a, b = rand(M, K), rand(K, N, seed=1)
    check_close(g(a, b, num_threads=threads), a, b)


@pytest.mark.parametrize("M,N,K", [(50, 70, 150), (33, 17, 65), (16, 128, 64), (17, 129, 129), (5, 9, 3),
                                   (64, 8, 200)])
def test_multi_block_paths(M, N, K):
    g = build(SMALL)
    a, b = rand(M, K), rand(K, N, seed=1)
    check_close(g(a, b, num_threads=1), a, b)
    check_close(g(a, b, num_threads=2), a, b)


@pytest.mark.parametrize("M,N,K", [(0, 5, 5), (5, 0, 5), (6, 7, 0), (1, 9, 0)])
def test_empty_dimensions(M, N, K):
    g = build()
    a, b = rand(M, K), rand(K, N, seed=1)
    bias = rand(N, seed=2)
    c = g(a, b, bias=bias)
    np.testing.assert_array_equal(c, np.zeros((M, N), np.float32) + bias)


def test_strided_operands_and_out():
    g = build(SMALL)
    big_a, big_b = rand(60, 90), rand(80, 70, seed=1)
    a, b = big_a[5:45, 3:70], big_b[2:69, 10:60]        # row strides differ from the widths
    out = np.full((50, 80), 7.0, np.float32)
    view = out[3:43, 20:70]
    r = g(a, b, out=view)
    assert r is view
    check_close(view, a, b)
    assert np.all(out[:3] == 7) and np.all(out[:, :20] == 7) and np.all(out[:, 70:] == 7)
    at = np.asfortranarray(a)                              # column-major input is copied, not misread
    check_close(g(at, b), a, b)


def _erfc(x):
    return np.vectorize(math.erfc)(x)


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _gelu(x):
    return 0.5 * x * np.where(x >= 0, 2 - _erfc(x / math.sqrt(2)), _erfc(-x / math.sqrt(2)))


REFERENCE = {
    "none": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "clip": lambda x: np.clip(x, -0.5, 1.25),
    "leaky_relu": lambda x: np.where(x < 0, np.float32(0.1) * x, x),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "gelu": _gelu,
    "gelu_tanh": lambda x: x * _sigmoid(2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)),
    "silu": lambda x: x * _sigmoid(x),
}
# max relative error of our float32 evaluation (the fitted polynomials are good to ~1e-7; gelu
# loses a few ulp to 1 - erf near |u| = 1, gelu_tanh to the rounding of its cubic argument)
RTOL = {"leaky_relu": 6e-8, "sigmoid": 1e-6, "tanh": 1e-6, "silu": 1e-6, "gelu": 2e-6, "gelu_tanh": 2e-5}


def _epilogue(name):
    if name == "clip":
        return Epilogue.clip(-0.5, 1.25)
    if name == "leaky_relu":
        return Epilogue.leaky_relu(0.1)
    return Epilogue(name)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activation_values(act):
    """K = 1 and B = 1 feed exact values through the epilogue, from the tails to denormal range."""
    x = np.concatenate([np.linspace(-20, 20, 4001), np.geomspace(1e-8, 100, 500),
                        -np.geomspace(1e-8, 100, 500), [0.0, 88.0, -88.0, 1e30, -1e30]]).astype(np.float32)
    g = build(SMALL, epilogue=_epilogue(act))
    c = g(x[:, None].copy(), np.ones((1, 1), np.float32))[:, 0]
    ref = REFERENCE[act](x.astype(np.float64))
    np.testing.assert_allclose(c, ref, rtol=RTOL.get(act, 0), atol=1e-37)
    nan = g(np.array([[np.nan]], np.float32), np.ones((1, 1), np.float32))
    assert np.isnan(nan).all(), "NaN must propagate through the activation"


@pytest.mark.parametrize("act,after", [(a, False) for a in ACTIVATIONS] + [("relu", True), ("sigmoid", True)])
def test_epilogue_with_bias_and_residual(act, after):
    ep = _epilogue(act)
    ep = Epilogue(ep.activation, ep.alpha, ep.beta, residual_after_activation=after)
    g = build(SMALL, epilogue=ep)
    M, N, K = 37, 75, 130
    a, b = rand(M, K), rand(K, N, seed=1) * np.float32(0.2)
    bias, res = rand(N, seed=2), rand(M, N, seed=3)
    f = REFERENCE[act]
    for threads in (1, 2):
        c = g(a, b, bias=bias, residual=res, num_threads=threads)
        ref = a.astype(np.float64) @ b + bias
        ref = f(ref) + res if after else f(ref + res)
        np.testing.assert_allclose(c, ref, rtol=max(RTOL.get(act, 0), 2e-5), atol=2e-5)
    c = g(a, b)                                            # bias and residual absent (NULL)
    np.testing.assert_allclose(c, f(a.astype(np.float64) @ b), rtol=max(RTOL.get(act, 0), 2e-5), atol=2e-5)


def test_bias_only():
    g = build()
    M, N, K = 70, 90, 40
    a, b, bias = rand(M, K), rand(K, N, seed=1), rand(N, seed=2)
    check_close(g(a, b, bias=bias), a, b, lambda r: r + bias)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("M,N,K", [(70, 90, 40), (1, 90, 40), (2, 50, 0), (30, 40, 150)])
def test_residual_in_place(packed, M, N, K):
    """C = relu(C + A @ B + bias) with the residual being C itself, on every path."""
    g = build(SMALL, packed_b=packed, epilogue=Epilogue("relu"))
    a, b, bias = rand(M, K), rand(K, N, seed=1), rand(N, seed=2)
    bb = g.kernel.pack_b(b) if packed else b
    for threads in (1, 2):
        acc = rand(M, N, seed=3)
        keep = acc.copy()
        assert g(a, bb, bias=bias, residual=acc, out=acc, num_threads=threads) is acc
        check_close(acc, a, b, lambda r: np.maximum(r + bias + keep, 0))
    after = build(SMALL, packed_b=packed, epilogue=Epilogue("relu", residual_after_activation=True))
    acc = rand(M, N, seed=3)
    with pytest.raises(InputError, match="residual"):
        after(a, bb, residual=acc, out=acc)
    big = rand(M, N + 1)
    with pytest.raises(InputError, match="residual"):
        g(a, bb, residual=big[:, 1:], out=big[:, :-1])    # overlapping, shifted by a column


@pytest.mark.parametrize("M,N,K", [(1, 4096, 1024), (1, 1, 1), (3, 50, 17), (2, 33, 8), (37, 53, 29),
                                   (15, 33, 64), (130, 70, 300)])
def test_packed_b(M, N, K):
    g = build(packed_b=True, epilogue=Epilogue("relu"))
    a, b, bias = rand(M, K), rand(K, N, seed=1), rand(N, seed=2)
    bp = g.kernel.pack_b(b)
    assert bp.data.ctypes.data % 64 == 0
    for threads in (1, 2):
        check_close(g(a, bp, bias=bias, num_threads=threads), a, b, lambda r: np.maximum(r + bias, 0))


def test_packed_b_small_blocks_and_transposed_weights():
    g = build(SMALL, packed_b=True, trans_b=True)
    M, N, K = 45, 70, 150
    a, w = rand(M, K), rand(N, K, seed=1)                  # ONNX Gemm transB=1 weights
    check_close(g(a, g.kernel.pack_b(w), num_threads=2), a, w.T)
    with pytest.raises(InputError):
        g(a, w)                                           # a raw array is not packed B


@pytest.mark.parametrize("trans_a,trans_b", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("M,N,K", [(37, 53, 29), (2, 40, 33), (20, 70, 150)])
def test_transposed_operands(trans_a, trans_b, M, N, K):
    g = build(SMALL, trans_a=trans_a, trans_b=trans_b)
    a, b = rand(M, K), rand(K, N, seed=1)
    at = np.ascontiguousarray(a.T) if trans_a else a
    bt = np.ascontiguousarray(b.T) if trans_b else b
    check_close(g(at, bt), a, b)
    check_close(g(at, bt, num_threads=2), a, b)


@pytest.mark.parametrize("batch", [1, 3, 4, 9])
def test_batched(batch):
    g = build(SMALL, epilogue=Epilogue("relu"))
    M, N, K = 37, 53, 64
    a, b = rand(batch, M, K), rand(batch, K, N, seed=1)
    res = rand(batch, M, N, seed=2)
    for threads in (1, 2):
        c = g(a, b, residual=res, num_threads=threads)
        check_close(c, a, b, lambda r: np.maximum(r + res, 0))
    b2 = rand(K, N, seed=3)                                # 2-D B broadcast over the batch
    check_close(g(a, b2, num_threads=2), a, np.broadcast_to(b2, (batch, K, N)),
                lambda r: np.maximum(r, 0))


def test_batched_attention_scores_and_packed_batch():
    """Q @ K^T per head (trans_b), then a batch of pre-packed B matrices."""
    g = build(SMALL, trans_b=True)
    q, k = rand(8, 128, 64), rand(8, 128, 64, seed=1)
    check_close(g(q, k, num_threads=2), q, k.transpose(0, 2, 1))
    gp = build(packed_b=True, epilogue=Epilogue("relu"))
    a, b = rand(3, 20, 40), rand(3, 40, 50, seed=1)
    check_close(gp(a, gp.kernel.pack_b(b), num_threads=2), a, b, lambda r: np.maximum(r, 0))


def test_thread_counts_give_identical_results():
    """Threads split N or M or the batch, never K: every element sums in the same order."""
    g = build()
    for shape in [(300, 200, 500), (40, 900, 300), (900, 40, 300), (1, 3000, 700)]:
        M, N, K = shape
        a, b, bias = rand(M, K), rand(K, N, seed=1), rand(N, seed=2)
        one = g(a, b, bias=bias, num_threads=1)
        for t in (2, 3, 5):
            np.testing.assert_array_equal(g(a, b, bias=bias, num_threads=t), one)


@pytest.mark.parametrize("lanes,target", [(8, AVX2), (4, SSE2)])
def test_narrow_vector_kernels_on_older_cpus(lanes, target):
    """The 8-lane (AVX2) and 4-lane (SSE) kernels, compiled for CPUs without AVX-512."""
    cfg = GemmConfig.for_lanes(lanes)
    g = build(cfg, target=target, epilogue=Epilogue("gelu"))
    for M, N, K in [(1, 1, 1), (37, 53, 29), (1, 300, 70), (3, 50, 17), (100, 130, 600)]:
        a, b, bias, res = rand(M, K), rand(K, N, seed=1), rand(N, seed=2), rand(M, N, seed=3)
        for threads in (1, 2):
            c = g(a, b, bias=bias, residual=res, num_threads=threads)
            np.testing.assert_allclose(c, _gelu(a.astype(np.float64) @ b + bias + res), rtol=2e-5, atol=2e-5)
    asm = object_cache.emit_assembly(g.kernel.ir(), *target)
    assert "zmm" not in asm and "{%k" not in asm, "AVX-512 instructions in code for an older CPU"
    if lanes == 4:
        assert "ymm" not in asm


def _loops(lines):
    """(start, end) line ranges of loops: a label and a later jump back to it."""
    labels = {m.group(1): i for i, l in enumerate(lines) if (m := re.match(r"^(\.LBB\w+):", l))}
    out = []
    for i, l in enumerate(lines):
        m = re.match(r"^\s+j\w+\s+(\.LBB\w+)\s*$", l)
        if m and m.group(1) in labels and labels[m.group(1)] < i:
            out.append((labels[m.group(1)], i))
    return out


def _function_asm(asm, name):
    start = asm.index(f"\n{name}:\n")
    return asm[start:asm.index(".Lfunc_end", start)].splitlines()


@pytest.mark.parametrize("lanes,target", [(LANES, None), (8, AVX2)])
def test_micro_kernel_hot_loop_has_no_spills(lanes, target):
    """Every loop of the micro-kernels that issues FMAs touches no stack slot: the MRxNR tile
    lives in registers. (Stack accesses outside the loops, e.g. the 8th argument, are fine.)"""
    k = GemmKernel(GemmConfig.for_lanes(lanes))
    asm = object_cache.emit_assembly(k.ir(), *(target or (None, None)))
    kernels = sorted(set(re.findall(r"^(irg_gemm\.ukr\d+):", asm, re.M)))
    assert len(kernels) >= 2
    for name in kernels:
        lines = _function_asm(asm, name)
        hot = [(s, e) for s, e in _loops(lines) if any("vfmadd" in l for l in lines[s:e])]
        assert hot, f"no FMA loop found in {name}"
        for s, e in hot:
            stack = [l for l in lines[s:e] if "rsp" in l]
            assert not stack, f"{name}: stack access in the hot loop: {stack[:3]}"


def test_workspace_bound_is_exact_enough():
    """The kernel stays inside workspace_bytes() (the IR formula agrees with the Python one)."""
    for packed in (False, True):
        g = build(SMALL, packed_b=packed)
        for M, N, K, nth in [(50, 70, 150, 1), (50, 70, 150, 2), (7, 300, 33, 2), (100, 5, 64, 3)]:
            a, b = rand(M, K), rand(K, N, seed=1)
            bb = g.kernel.pack_b(b) if packed else b
            need = workspace_bytes(SMALL, M, N, K, nth, packed)
            ws = np.full(need + 4096, 0xAB, np.uint8)
            c = np.empty((M, N), np.float32)
            bptr = bb.data.ctypes.data if packed else bb.ctypes.data
            g._fn(a.ctypes.data, bptr, None, None, c.ctypes.data, M, N, K, K, 0 if packed else N, 0, N,
                  1, 0, 0, 0, 0, ws.ctypes.data, nth)
            check_close(c, a, b)
            assert np.all(ws[need:] == 0xAB), f"workspace overrun for {(M, N, K, nth, packed)}"


def test_two_variants_share_one_module():
    """Model code emits several GEMM variants into one module; their helpers must not clash."""
    mod = ir.Module("model")
    GemmKernel(SMALL, Epilogue("relu"), name="mm_relu").emit(mod)
    GemmKernel(SMALL, Epilogue("sigmoid"), packed_b=True, name="mm_sig").emit(mod)
    lib = object_cache.compile_cached(str(mod))
    vp, i64 = ctypes.c_void_p, ctypes.c_int64
    sig = (None, *([vp] * 5 + [i64] * 12 + [vp, i64]))
    relu, sigm = lib.cfunc("mm_relu", *sig), lib.cfunc("mm_sig", *sig)
    M, N, K = 20, 40, 70
    a, b = rand(M, K), rand(K, N, seed=1)
    ws = np.empty(workspace_bytes(SMALL, M, N, K, 2), np.uint8)
    c1, c2 = np.empty((M, N), np.float32), np.empty((M, N), np.float32)
    bp = GemmKernel(SMALL, packed_b=True).pack_b(b)
    relu(a.ctypes.data, b.ctypes.data, None, None, c1.ctypes.data, M, N, K, K, N, 0, N, 1, 0, 0, 0, 0,
         ws.ctypes.data, 2)
    sigm(a.ctypes.data, bp.data.ctypes.data, None, None, c2.ctypes.data, M, N, K, K, 0, 0, N, 1, 0, 0,
         0, 0, ws.ctypes.data, 2)
    check_close(c1, a, b, lambda r: np.maximum(r, 0))
    np.testing.assert_allclose(c2, _sigmoid(a.astype(np.float64) @ b), rtol=2e-5, atol=1e-6)


def test_serial_kernel_needs_no_libgomp():
    k = GemmKernel(SMALL, parallel=False)
    assert "GOMP" not in k.ir() and "omp_get" not in k.ir()
    g = build(SMALL, parallel=False)
    a, b = rand(30, 40), rand(40, 50, seed=1)
    check_close(g(a, b, num_threads=2), a, b)


def test_bad_inputs_are_refused():
    g = build()
    a, b = rand(4, 5), rand(5, 6, seed=1)
    with pytest.raises(InputError, match="float32"):
        g(a.astype(np.float64), b)
    with pytest.raises(InputError, match="inner dimensions"):
        g(a, rand(4, 6))
    with pytest.raises(InputError, match="bias"):
        g(a, b, bias=rand(5))
    with pytest.raises(InputError, match="residual"):
        g(a, b, residual=rand(4, 5))
    with pytest.raises(InputError, match="out"):
        g(a, b, out=np.empty((4, 6), np.float64))
    with pytest.raises(InputError, match="batch"):
        g(rand(2, 4, 5), rand(3, 5, 6))
    with pytest.raises(InputError, match="rank"):
        g(rand(5), b)
    with pytest.raises(CompileError):
        Epilogue("swish")
    with pytest.raises(CompileError):
        GemmConfig.for_host(nr=LANES + 1)
    with pytest.raises(CompileError):
        Epilogue.clip(2.0, 1.0)


# ---- the register tile's rows chosen for M -------------------------------------------------------
def test_row_tile_follows_m_only_where_14_rows_pad_much():
    cfg = GemmConfig.for_lanes(16)
    assert cfg.mr == 14
    assert cfg.for_rows(64).mr == 8 and cfg.for_rows(128).mr == 8 and cfg.for_rows(16).mr == 8
    assert cfg.for_rows(1024).mr == 14 and cfg.for_rows(49).mr == 14 and cfg.for_rows(784).mr == 14
    assert cfg.for_rows(2).mr == 14                         # GEMV rows: no tile at all
    assert cfg.for_rows(64).nr == cfg.nr                    # B's packed layout is kept
    assert GemmConfig.for_lanes(8).for_rows(64).mr == 6     # the 16-register tile is not changed


@pytest.mark.parametrize("M,N,K", [(64, 100, 70), (16, 33, 300), (128, 40, 20)])
@pytest.mark.parametrize("threads", [1, 2])
def test_eight_row_tile_matches_numpy(M, N, K, threads):
    cfg = GemmConfig.for_lanes(LANES).for_rows(M)
    if cfg.mr != 8:
        pytest.skip("the 8-row tile is chosen with 16-lane vectors only")
    a, b = rand(M, K), rand(K, N, seed=1)
    np.testing.assert_allclose(build(cfg, parallel=True)(a, b, num_threads=threads), a @ b, rtol=1e-4, atol=1e-4)
    g = build(cfg, packed_b=True, parallel=True)
    np.testing.assert_allclose(g(a, g.kernel.pack_b(b), num_threads=threads), a @ b, rtol=1e-4, atol=1e-4)


def test_a_model_with_64_rows_gets_the_eight_row_gemm():
    import irgraph
    from onnx import TensorProto, helper
    w = rand(96, 40, seed=3)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 96])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 40])],
                          [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    cm = irgraph.compile(m, target="cpu")
    x = rand(64, 96, seed=4)
    np.testing.assert_allclose(cm(x), x @ w, rtol=1e-4, atol=1e-4)
    if LANES == 16:
        assert "_r8" in cm._run.last.llvm_ir
