"""LLVM code generation: the scalar builder's numerics (float32 polynomials, integer semantics,
16-bit floats), loops and threads, and the entry function over an arena."""
from __future__ import annotations

import ctypes
import math

import ml_dtypes
import numpy as np
import pytest

from irgraph import dtype as dt
from irgraph.backends.cpu.codegen import ModuleGen, compile_module, kernel_module
from irgraph.backends.kernel_ir import (INDEX, Buffer, Const, IRBuilder, Kernel, Load, Loop,
                                        Store, Var)
from irgraph.backends.lower import lower_node
from irgraph.graph import Graph
from irgraph.types import TensorType


@pytest.fixture(scope="module", autouse=True)
def _private_object_cache(tmp_path_factory):
    """Compiled modules go to a temporary object cache, not the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IRGRAPH_CACHE_DIR", str(tmp_path_factory.mktemp("irgraph_cache")))
        yield


def run_kernel(kernel, arrays: dict, num_threads: int = 1):
    """Compile one kernel and run it on arrays named like its buffers (outputs/temps allocated)."""
    mg, wrappers = kernel_module([kernel], num_threads)
    lib = compile_module(mg)
    bufs = []
    for b in kernel.buffers:
        if b.role in ("input",):
            bufs.append(np.ascontiguousarray(arrays[b.name]))
        elif b.role == "const":
            bufs.append(b.data)
        else:
            bufs.append(np.zeros(b.shape, b.dtype.np))
    ptrs = (ctypes.c_void_p * len(bufs))(*[a.ctypes.data for a in bufs])
    lib.cfunc(wrappers[0], None, ctypes.c_void_p)(ctypes.addressof(ptrs))
    return {b.name: a for b, a in zip(kernel.buffers, bufs)}


def unary(op: str, x: np.ndarray, **attrs) -> np.ndarray:
    g = Graph()
    v = g.add_input("x", TensorType(x.shape, dt.DType.from_numpy(x.dtype)))
    g.op(op, [v], attrs)
    plan = lower_node(g.nodes[-1])
    res = run_kernel(plan.kernel, {plan.inputs[0][0].name: x})
    return res[plan.outputs[0][0].name]


def binary(op: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    g = Graph()
    a = g.add_input("x", TensorType(x.shape, dt.DType.from_numpy(x.dtype)))
    b = g.add_input("y", TensorType(y.shape, dt.DType.from_numpy(y.dtype)))
    g.op(op, [a, b])
    plan = lower_node(g.nodes[-1])
    res = run_kernel(plan.kernel, {plan.inputs[0][0].name: x, plan.inputs[1][0].name: y})
    return res[plan.outputs[0][0].name]


def ulp_error(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    want = exact.astype(np.float32)
    return np.abs(got.astype(np.float64) - exact) / np.spacing(np.abs(want)).astype(np.float64)


rng = np.random.default_rng(7)
_erf = np.vectorize(math.erf)


# float32 exp/log/tanh/erf are our own branch-free polynomials (so loops using them vectorize):
# measured within about 1 ulp (erf: 3 ulp) of the exact value over the whole range.
@pytest.mark.parametrize("op,lo,hi,fn,max_ulp", [
    ("exp", -103.0, 88.7, np.exp, 2.0),
    ("log", 1e-38, 3e38, np.log, 2.0),
    ("tanh", -12.0, 12.0, np.tanh, 2.0),
    ("erf", -6.0, 6.0, _erf, 4.0),
])
def test_float32_polynomials_are_accurate(op, lo, hi, fn, max_ulp):
    if op == "log":
        x = np.exp(rng.uniform(np.log(lo), np.log(hi), 200_000)).astype(np.float32)
    else:
        x = rng.uniform(lo, hi, 200_000).astype(np.float32)
    exact = fn(x.astype(np.float64))
    got = unary(op, x)
    normal = np.abs(exact) > np.finfo(np.float32).tiny
    assert ulp_error(got, exact)[normal].max() <= max_ulp
    if op != "log":
        assert np.abs(got - exact)[~normal].max(initial=0) <= 1.5e-45   # subnormal results


@pytest.mark.parametrize("op", ["exp", "log", "tanh", "erf"])
def test_float32_polynomials_special_values(op):
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-45, -1e-45, 100.0, -100.0, 1e30, -1e30,
                  -87.5, -104.0, 88.8], np.float32)
    got = unary(op, x)
    with np.errstate(all="ignore"):
        want = {"exp": np.exp, "log": np.log, "tanh": np.tanh,
                "erf": lambda v: _erf(v.astype(np.float64)).astype(np.float32)}[op](x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], rtol=2e-7, atol=1.5e-45)
    np.testing.assert_array_equal(np.signbit(got[~np.isnan(want)]), np.signbit(want[~np.isnan(want)]))


def test_float64_transcendentals_match_numpy():
    x = rng.uniform(-20, 20, 5000)
    for op, fn in [("exp", np.exp), ("tanh", np.tanh), ("sin", np.sin), ("atan", np.arctan)]:
        np.testing.assert_allclose(unary(op, x), fn(x), rtol=2e-16 * 4, atol=0)
    np.testing.assert_allclose(unary("erf", x), _erf(x), rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(unary("log", np.abs(x) + 1e-3), np.log(np.abs(x) + 1e-3), rtol=1e-15)


def test_integer_division_semantics():
    a = np.array([7, -7, 7, -7, 5, -128, -128, 0], np.int8)
    b = np.array([2, 2, -2, -2, 0, -1, 3, 0], np.int8)
    np.testing.assert_array_equal(binary("div", a, b), [3, -3, -3, 3, 0, -128, -42, 0])
    np.testing.assert_array_equal(binary("mod", a, b), np.mod(a, np.where(b == 0, 1, b)) * (b != 0))
    u = np.array([7, 250, 9], np.uint8)
    v = np.array([2, 0, 4], np.uint8)
    np.testing.assert_array_equal(binary("div", u, v), [3, 0, 2])


def test_float_mod_takes_the_divisor_sign():
    a = np.array([5.5, -5.5, 5.5, -5.5, 4.0, -4.0], np.float32)
    b = np.array([2.0, 2.0, -2.0, -2.0, -2.0, 2.0], np.float32)
    got = binary("mod", a, b)
    np.testing.assert_array_equal(got, np.mod(a, b))
    np.testing.assert_array_equal(np.signbit(got), np.signbit(np.mod(a, b)))


def test_integer_pow_wraps_and_handles_negative_exponents():
    a = np.array([2, 3, -2, 1, -1, -1, 5, 0], np.int32)
    b = np.array([10, 21, 3, -5, -3, -4, -1, 0], np.int32)
    want = np.array([1024, np.int32(np.int64(3) ** 21 % 2 ** 32 - 2 ** 32 * (np.int64(3) ** 21 % 2 ** 32 >= 2 ** 31)),
                     -8, 1, -1, 1, 0, 1], np.int32)
    np.testing.assert_array_equal(binary("pow", a, b), want)


def test_bfloat16_arithmetic_rounds_every_op_like_ml_dtypes():
    x = rng.standard_normal(4096).astype(ml_dtypes.bfloat16)
    y = rng.standard_normal(4096).astype(ml_dtypes.bfloat16)
    for op, fn in [("add", np.add), ("mul", np.multiply), ("div", np.divide)]:
        got = binary(op, x, y)
        assert got.dtype == ml_dtypes.bfloat16
        np.testing.assert_array_equal(got.astype(np.float32), fn(x, y).astype(np.float32))


def test_float16_and_bfloat16_casts_round_to_nearest_even():
    # float64 -> float16 rounds once (no double rounding through float32), as numpy does;
    # float64 -> bfloat16 goes through float32, as ml_dtypes does
    x = np.array([1 + 2.0 ** -11 + 2.0 ** -40, 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 65519.0, -1e-9,
                  np.nan, np.inf], np.float64)
    np.testing.assert_array_equal(unary("cast", x, to=dt.float16), x.astype(np.float16))
    xb = np.array([1 + 2.0 ** -8 + 2.0 ** -40, 1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 3.0e38, np.nan], np.float64)
    got = unary("cast", xb, to=dt.bfloat16).astype(np.float64)
    want = xb.astype(ml_dtypes.bfloat16).astype(np.float64)
    np.testing.assert_array_equal(got, want)


def test_float_to_int_casts_follow_numpy_in_range():
    x = np.array([-3.7, -0.5, 0.5, 2.9, 126.9, -127.9], np.float32)
    for to in (dt.int8, dt.int32, dt.int64, dt.uint8):
        np.testing.assert_array_equal(unary("cast", x, to=to), x.astype(to.np))


def test_nan_propagates_through_min_max_like_numpy():
    a = np.array([1.0, np.nan, 3.0, -0.0], np.float32)
    b = np.array([np.nan, 2.0, 1.0, 0.0], np.float32)
    np.testing.assert_array_equal(binary("maximum", a, b), np.maximum(a, b))
    np.testing.assert_array_equal(binary("minimum", a, b), np.minimum(a, b))


def _sum_rows_kernel(rows, cols, kind):
    x = Buffer("x", dt.float32, (rows, cols), "input")
    y = Buffer("y", dt.float32, (rows,), "output")
    b = IRBuilder()
    i, j = Var("i"), Var("j")
    body = [Loop(i, rows, kind, [
        Store(y, i, Const(0.0, dt.float32)),
        Loop(j, cols, "serial", [Store(y, i, b.add(Load(y, i), Load(x, b.add(b.mul(i, Const(cols, INDEX)), j))))]),
    ])]
    return Kernel("rows", [x, y], body)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_parallel_loops_cover_every_iteration(threads):
    x = rng.standard_normal((1001, 7)).astype(np.float32)
    k = _sum_rows_kernel(1001, 7, "parallel")
    got = run_kernel(k, {"x": x}, num_threads=threads)["y"]
    np.testing.assert_allclose(got, x.sum(axis=1), rtol=1e-5, atol=1e-6)


def test_parallel_loop_uses_the_pool_only_with_threads():
    mg1, _ = kernel_module([_sum_rows_kernel(10, 3, "parallel")], num_threads=1)
    mg2, _ = kernel_module([_sum_rows_kernel(10, 3, "parallel")], num_threads=2)
    assert "irg_parallel" not in str(mg1) and not mg1.uses_threads
    assert "irg_parallel" in str(mg2) and mg2.uses_threads


def test_vector_loops_are_vectorized():
    from irgraph.backends.cpu.llvm_target import emit_assembly
    g = Graph()
    v = g.add_input("x", TensorType((4096,), "float32"))
    g.op("exp", [v])
    mg, _ = kernel_module([lower_node(g.nodes[-1]).kernel], 1)
    asm = emit_assembly(str(mg.module))
    assert "ymm" in asm or "zmm" in asm   # the polynomial runs on SIMD registers


def test_entry_function_runs_kernels_over_one_arena():
    # y = exp(x) in an arena temp, then z = y + 1 into an output: two kernels, one call
    x = Buffer("x", dt.float32, (16,), "input")
    t_out = Buffer("t", dt.float32, (16,), "output")
    t_in = Buffer("t", dt.float32, (16,), "input")
    z = Buffer("z", dt.float32, (16,), "output")
    b = IRBuilder()
    i = Var("i")
    k1 = Kernel("e", [x, t_out], [Loop(i, 16, "vector", [Store(t_out, i, b.exp(Load(x, i)))])])
    k2 = Kernel("p", [t_in, z], [Loop(i, 16, "vector", [Store(z, i, b.add(Load(t_in, i), Const(1.0, dt.float32)))])])
    mg = ModuleGen("m", 1)
    f1, f2 = mg.add_kernel(k1), mg.add_kernel(k2)
    mg.add_entry("entry", [(f1, [("input", 0), ("arena", 64)]), (f2, [("arena", 64), ("output", 0)])])
    lib = compile_module(mg)
    xa = rng.standard_normal(16).astype(np.float32)
    za = np.zeros(16, np.float32)
    arena = np.zeros(64 + 64 + 64, np.uint8)
    ins = (ctypes.c_void_p * 1)(xa.ctypes.data)
    outs = (ctypes.c_void_p * 1)(za.ctypes.data)
    consts = (ctypes.c_void_p * 1)(0)
    lib.cfunc("entry", None, *[ctypes.c_void_p] * 4)(ins, outs, consts, arena.ctypes.data)
    np.testing.assert_allclose(za, np.exp(xa) + 1, rtol=1e-6)
    np.testing.assert_allclose(arena[64:128].view(np.float32), np.exp(xa), rtol=1e-6)


@pytest.mark.parametrize("to", [dt.float8e4m3fn, dt.float8e4m3fnuz, dt.float8e5m2, dt.float8e5m2fnuz,
                                dt.float4e2m1, dt.int4, dt.uint4, dt.int2, dt.uint2])
def test_narrow_types_round_and_overflow_like_ml_dtypes(to):
    # float8/float4: round to nearest even, overflow to inf / nan / saturation by format, NaN
    # codes, no -0 in the fnuz formats; int4/int2: wrap (through int64, as ml_dtypes converts)
    x = np.concatenate([rng.standard_normal(3000) * np.float32(10) ** rng.integers(-8, 6, 3000),
                        [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 464, 470, 240, 248, 250, 61440,
                         57344, 6.5, 7, 5, 1e-12, -1e-12, 2 ** -10, 1.5 * 2 ** -9, 9.7, -9.7]]).astype(np.float32)
    with np.errstate(all="ignore"):
        if to.is_int:
            x = x[np.isfinite(x) & (np.abs(x) < 1e9)]
        want = x.astype(to.np)
    got = unary("cast", x, to=to, saturate=False)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    back = unary("cast", got, to=dt.float32)
    np.testing.assert_array_equal(back, want.astype(np.float32))
