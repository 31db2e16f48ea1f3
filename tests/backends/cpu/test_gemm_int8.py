"""The int8 GEMM generator against exact integer references: int32 accumulation bit for bit
(VNNI and the pmaddwd paths of AVX2 and SSE2 hosts), the implicit-GEMM addressing of convolutions,
zero-point correction and biases, and the requantization epilogue against the quant ops' numpy
reference (irgraph.ops.qlinear.epilogue)."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph.backends.cpu.gemm_int8 import (ACTIVATIONS, QGemmConfig, QGemmKernel, activation_params,
                                            pack_b)
from irgraph.backends.cpu.llvm_target import host_cpu
from irgraph.errors import CompileError, InputError
from irgraph.ops.qlinear import epilogue

from lowercheck import private_object_cache  # noqa: F401  (autouse fixture: a temporary object cache)

HOST = QGemmConfig.for_host()
AVX2 = (QGemmConfig.avx2(), ("haswell", ""))
SSE2 = (QGemmConfig("madd", 4, 4, 8), ("x86-64", ""))
# every instruction set this host can run: its own (VNNI here), AVX2's and SSE2's
ISAS = [(HOST, None), AVX2, SSE2]
ISA_IDS = [f"{c.isa}{c.lanes}" for c, _ in ISAS]
SHAPES = [(37, 53, 28), (1, 100, 8), (15, 33, 64), (6, 64, 4), (130, 70, 132)]


_built: dict = {}


def build(cfg=HOST, target=None, **kw):
    key = (cfg, target, tuple(sorted(kw.items())))
    if key not in _built:
        _built[key] = QGemmKernel(cfg, **kw).build(target=target)
    return _built[key]


def operands(M, N, K, signed=False, seed=0):
    rng = np.random.default_rng(seed + M * 7 + N * 3 + K)
    a = rng.integers(-128, 128, (M, K)) if signed else rng.integers(0, 256, (M, K))
    w = rng.integers(-128, 128, (K, N)).astype(np.int8)
    return a.astype(np.int8 if signed else np.uint8), w


def exact(a, w, signed=False):
    """The reference accumulator in int64: A read as uint8 (int8 with its sign bit flipped)."""
    return (a.astype(np.int64) + (128 if signed else 0)) @ w.astype(np.int64)


@pytest.mark.parametrize("cfg,target", ISAS, ids=ISA_IDS)
@pytest.mark.parametrize("signed", [False, True], ids=["u8", "s8"])
def test_accumulation_is_bit_exact(cfg, target, signed):
    f = build(cfg, target, out="i32", a_signed=signed)
    for M, N, K in SHAPES:
        a, w = operands(M, N, K, signed)
        c = f(a, pack_b(w, cfg), M, N, K)
        np.testing.assert_array_equal(c, exact(a, w, signed).astype(np.int32), err_msg=f"{M}x{N}x{K}")


def test_extreme_values_do_not_saturate():
    # 255 * -128 summed over K: vpdpbusd adds four products per lane with no saturation, and the
    # pmaddwd path widens to 16 bits first (pmaddubsw would saturate at 2 * 255 * 127)
    M, N, K = 7, 20, 1024
    a = np.full((M, K), 255, np.uint8)
    w = np.full((K, N), -128, np.int8)
    w[:, 1] = 127
    for cfg, target in ISAS:
        c = build(cfg, target, out="i32")(a, pack_b(w, cfg), M, N, K)
        np.testing.assert_array_equal(c, exact(a, w).astype(np.int32))


def test_threads_split_rows_and_columns_identically():
    f = build(out="i32")
    for M, N, K in [(300, 64, 256), (2, 1000, 256)]:   # row split, column split
        a, w = operands(M, N, K)
        bp = pack_b(w, HOST)
        one = f(a, bp, M, N, K, num_threads=1)
        two = f(a, bp, M, N, K, num_threads=2)
        np.testing.assert_array_equal(one, two)
        np.testing.assert_array_equal(one, exact(a, w).astype(np.int32))


def test_strided_rows_and_output():
    M, N, K = 20, 40, 32
    a, w = operands(M, N, K)
    big = np.zeros((M, K + 12), np.uint8)
    big[:, 5:5 + K] = a
    out = np.full((M, N + 9), -1, np.int32)
    f = build(out="i32")
    flat = big.reshape(-1)[5:]
    f(np.ascontiguousarray(flat), pack_b(w, HOST), M, N, K, lda=K + 12, out=out[:, :N])
    np.testing.assert_array_equal(out[:, :N], exact(a, w))
    assert np.all(out[:, N:] == -1)


@pytest.mark.parametrize("cfg,target", ISAS[:2], ids=ISA_IDS[:2])
def test_implicit_conv_addressing(cfg, target):
    """Rows at table offsets, taps at table offsets: a 3x3 stride-2 conv over a padded NHWC image
    equals im2col + matmul in int64."""
    rng = np.random.default_rng(3)
    N_, H, W, C, M, k, s = 2, 9, 8, 8, 24, 3, 2
    img = rng.integers(0, 256, (N_, H, W, C)).astype(np.uint8)
    OH, OW = (H - k) // s + 1, (W - k) // s + 1
    wt = rng.integers(-128, 128, (k, k, C, M)).astype(np.int8)
    n, oh, ow = np.meshgrid(np.arange(N_), np.arange(OH), np.arange(OW), indexing="ij")
    rowoff = (((n * H + oh * s) * W + ow * s) * C).reshape(-1)
    ti, tj = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    tapoff = ((ti * W + tj) * C).reshape(-1)
    P = N_ * OH * OW
    c = build(cfg, target, out="i32")(img.reshape(-1), pack_b(wt.reshape(-1, M), cfg), P, M, k * k * C,
                                      rowoff=rowoff, tapoff=tapoff)
    cols = np.stack([img[n.reshape(-1), oh.reshape(-1) * s + i, ow.reshape(-1) * s + j]
                     for i in range(k) for j in range(k)], axis=1).reshape(P, -1)
    np.testing.assert_array_equal(c, cols.astype(np.int64) @ wt.reshape(-1, M).astype(np.int64))


def test_zero_point_correction_and_int_bias():
    M, N, K = 30, 45, 40
    a, w = operands(M, N, K)
    rng = np.random.default_rng(9)
    ib = rng.integers(-10000, 10000, N).astype(np.int32)
    xzp = 131
    c = build(out="i32")(a, pack_b(w, HOST), M, N, K, colsum=w.astype(np.int64).sum(0).astype(np.int32),
                         xzp=xzp, ibias=ib)
    want = (a.astype(np.int64) - xzp) @ w.astype(np.int64) + ib
    np.testing.assert_array_equal(c, want)


EXACT_ACTS = ["none", "relu", "clip", "leaky_relu"]


EPILOGUES = [("u8", a) for a in ACTIVATIONS] + [(o, a) for o in ("s8", "f32") for a in ("none", "clip", "gelu")]


@pytest.mark.parametrize("out,act", EPILOGUES, ids=[f"{o}-{a}" for o, a in EPILOGUES])
def test_epilogue_matches_the_op_reference(out, act):
    M, N, K = 19, 70, 36
    a, w = operands(M, N, K, seed=4)
    rng = np.random.default_rng(5)
    mult = (rng.random(N) * 2e-4 + 1e-5).astype(np.float32)
    fb = rng.standard_normal(N).astype(np.float32)
    attrs = {"activation": act, "alpha": 0.1 if act == "leaky_relu" else -0.5, "beta": 0.7,
             "output_scale": 1.0 if act in EXACT_ACTS else 40.0}
    alpha, beta = activation_params(act, attrs["alpha"], attrs["beta"])
    yzp = {"u8": np.uint8(100), "s8": np.int8(-7), "f32": None}[out]
    got = build(out=out, activation=act)(a, pack_b(w, HOST), M, N, K, mult=mult, fbias=fb, xscale=0.5,
                                         post=attrs["output_scale"], alpha=alpha, beta=beta,
                                         yzp=0.0 if yzp is None else float(yzp))
    acc = exact(a, w).astype(np.int32)
    want = epilogue(acc, (np.float32(0.5) * mult).astype(np.float32), fb, attrs, yzp, -1)
    assert got.dtype == want.dtype
    if act in EXACT_ACTS:
        np.testing.assert_array_equal(got, want)
    elif out == "f32":   # polynomial transcendental functions: a few float32 ulps
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
    else:                # and so a value on a rounding boundary may land one step away
        diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
        assert diff.max() <= 1 and np.mean(diff) < 0.01


def test_avx2_epilogue_is_the_same():
    M, N, K = 9, 20, 16
    a, w = operands(M, N, K)
    mult = np.full(N, 3e-3, np.float32)
    kw = dict(mult=mult, post=1.0, yzp=3.0)
    host = build(out="u8", activation="relu")(a, pack_b(w, HOST), M, N, K, **kw)
    cfg, target = AVX2
    other = build(cfg, target, out="u8", activation="relu")(a, pack_b(w, cfg), M, N, K, **kw)
    np.testing.assert_array_equal(host, other)


def test_vnni_hot_loop_uses_vpdpbusd():
    if not host_cpu().has_vnni:
        pytest.skip("the host has no AVX-512 VNNI")
    from irgraph.backends.cpu.llvm_target import emit_assembly
    asm = emit_assembly(QGemmKernel(HOST, out="u8", parallel=False, name="q").ir())
    assert "vpdpbusd" in asm and "vpmaddubsw" not in asm


def test_bad_arguments():
    with pytest.raises(InputError):
        pack_b(np.zeros((6, 4), np.int8), HOST)            # K not a multiple of 4
    with pytest.raises(InputError):
        pack_b(np.zeros((8, 4), np.uint8), HOST)
    with pytest.raises(CompileError):
        QGemmKernel(HOST, out="i32", activation="relu")
    with pytest.raises(CompileError):
        QGemmConfig("vnni", 8, 4, 16)
    f = build(out="i32")
    with pytest.raises(InputError):
        f(np.zeros((4, 8), np.int8), pack_b(np.zeros((8, 4), np.int8), HOST), 4, 4, 8)   # signed A


# ---- the byte kernels around it (backends/cpu/qlayout.py), through compiled graphs -----------------
def _compile_one(build_graph):
    import irgraph
    import irgraph.backends.lower_quant  # noqa: F401  (the int8 lowering rules)
    from irgraph import Graph
    g = Graph("one")
    build_graph(g)
    return g, irgraph.compile(g, target="cpu", opt_level=0)


@pytest.mark.parametrize("shape,k,s,p,dtype", [((1, 8, 40, 41), 3, 2, 1, np.uint8), ((2, 5, 9, 11), 2, 2, 0, np.int8),
                                               ((1, 3, 20, 37), 3, 1, 1, np.uint8), ((1, 2, 7, 40), 3, 3, 1, np.int8)])
def test_max_pool_8bit(shape, k, s, p, dtype):
    from irgraph import TensorType, run_graph
    from irgraph.dtype import DType

    def build_graph(g):
        x = g.add_input("x", TensorType(shape, DType.from_numpy(np.dtype(dtype))))
        g.set_outputs([g.op("max_pool", [x], {"kernel_shape": (k, k), "strides": (s, s), "pads": (p,) * 4})])
    g, m = _compile_one(build_graph)
    info = np.iinfo(dtype)
    x = np.random.default_rng(1).integers(info.min, info.max + 1, shape).astype(dtype)
    np.testing.assert_array_equal(m(x), run_graph(g, [x])[0])
    assert "qmaxpool" in m._run.kernels_ir()


@pytest.mark.parametrize("shape,scale,shift", [((2, 64, 33), 1.0, 0.0), ((37,), 3.0, -5.0), ((4, 4), 0.0, 0.0),
                                               ((5, 7), 1.0, 4.0)])
def test_dynamic_quantize_linear(shape, scale, shift):
    from irgraph import TensorType, run_graph
    from irgraph import dtype as dt

    def build_graph(g):
        x = g.add_input("x", TensorType(shape, dt.float32))
        g.set_outputs(list(g.op("dynamic_quantize_linear", [x], num_outputs=3)))
    g, m = _compile_one(build_graph)
    x = (np.random.default_rng(2).standard_normal(shape) * scale + shift).astype(np.float32)
    for got, want in zip(m.run(x), run_graph(g, [x])):
        np.testing.assert_array_equal(got, want)
    assert "qdql" in m._run.kernels_ir()


@pytest.mark.parametrize("shape,odt,zp", [((2, 64, 33), np.uint8, 128), ((37,), np.int8, -3), ((5, 7), np.int8, None),
                                          ((3, 4096), np.uint8, None), ((8, 9000), np.uint8, 7)])
def test_quantize_linear_per_tensor(shape, odt, zp):
    """qquant against the op's reference: round half to even (x = scale * (k + 0.5) lands exactly
    on halves), saturation at both ends, NaN -> zero point, huge values, no zero point."""
    from irgraph import TensorType, run_graph
    from irgraph import dtype as dt
    from irgraph.dtype import DType
    scale = np.float32(0.25)

    def build_graph(g):
        x = g.add_input("x", TensorType(shape, dt.float32))
        ins = [x, g.add_const(np.array(scale, np.float32), "s")]
        attrs = {}
        if zp is None:
            attrs["dtype"] = DType.from_numpy(np.dtype(odt))
        else:
            ins.append(g.add_const(np.array(zp, odt), "zp"))
        g.set_outputs([g.op("quantize_linear", ins, attrs)])
    g, m = _compile_one(build_graph)
    rng = np.random.default_rng(3)
    x = (rng.integers(-600, 600, shape) * 0.125).astype(np.float32)       # many exact halves
    flat = x.reshape(-1)
    flat[:6] = [np.nan, np.inf, -np.inf, 3e38, -3e38, 2.0 ** 25]
    got, want = m(x), run_graph(g, [x])[0]
    assert got.dtype == want.dtype == odt
    np.testing.assert_array_equal(got, want)
    assert "qquant" in m._run.kernels_ir()


@pytest.mark.parametrize("hw,k,s,p,dtype", [(14, 1, 2, 0, np.uint8), (15, 3, 2, 0, np.int8), (16, 3, 3, 1, np.uint8),
                                            (9, 2, 2, 0, np.uint8)])
def test_quant_conv_windows_ending_before_the_input(hw, k, s, p, dtype):
    """Strided convs whose last window ends before the input does (the ResNet 1x1 stride-2
    downsample over 14x14): the packed image must still hold every input row and column
    (they were once written past its end), and the result equals the op's reference."""
    from irgraph import TensorType, run_graph
    from irgraph.dtype import DType
    rng = np.random.default_rng(4)
    C, M = 20, 24

    def build_graph(g):
        x = g.add_input("x", TensorType((1, C, hw, hw), DType.from_numpy(np.dtype(dtype))))
        w = rng.integers(-127, 128, (M, C, k, k)).astype(np.int8)
        ins = [x, g.add_const(np.array(3, dtype), "xz"), g.add_const(w, "w"), None, g.add_const((rng.random(M) * 1e-3).astype(np.float32), "mult")]
        g.set_outputs([g.op("quant_conv", ins, {"strides": (s, s), "pads": (p,) * 4})])
    g, m = _compile_one(build_graph)
    info = np.iinfo(dtype)
    for seed in range(3):        # a few runs: heap damage shows up late
        x = np.random.default_rng(seed).integers(info.min, info.max + 1, (1, C, hw, hw)).astype(dtype)
        np.testing.assert_array_equal(m(x), run_graph(g, [x])[0])
    assert "qpack" in m._run.kernels_ir()
