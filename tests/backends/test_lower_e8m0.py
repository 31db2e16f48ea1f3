"""Casts to and from float8e8m0 lowered natively (backends/lower_e8m0.py, the e8m0 codec in
backends/cpu/scalar_llvm.py) against the numpy interpreter and ml_dtypes."""
from __future__ import annotations

import ctypes
import ml_dtypes
import numpy as np
import pytest

import irgraph
from irgraph import dtype as dt
from irgraph.backends.lower import lower_node
from irgraph.graph import Graph
from irgraph.types import TensorType


@pytest.fixture(scope="module", autouse=True)
def _private_object_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IRGRAPH_CACHE_DIR", str(tmp_path_factory.mktemp("irgraph_cache")))
        yield


def _values(np_dtype) -> np.ndarray:
    """Powers of two, their neighbours and midpoints, zeros, infinities, NaN, range edges."""
    k = np.arange(-140, 131, dtype=np.float64)
    p = 2.0 ** k
    v = np.concatenate([p, p * 1.5, p * np.nextafter(1.5, 0), p * np.nextafter(1.5, 2), p * 1.25,
                        p * np.nextafter(1.0, 2), p * np.nextafter(2.0, 0), [0.0, np.inf, np.nan, 3.0, 7.0]])
    v = np.concatenate([v, -v])
    with np.errstate(all="ignore"):
        v = v.astype(np_dtype)
    return v.reshape(-1)[: (v.size // 7) * 7].reshape(7, -1)     # an odd row count


def _cast_graph(shape, src, to, **attrs):
    g = Graph()
    x = g.add_input("x", TensorType(shape, src))
    g.set_outputs([g.op("cast", [x], {"to": to, **attrs})])
    return g


@pytest.mark.parametrize("src", [dt.float32, dt.float16, dt.float64, dt.bfloat16])
@pytest.mark.parametrize("mode", ["up", "down", "nearest"])
@pytest.mark.parametrize("saturate", [True, False])
def test_cast_to_e8m0_matches_interpreter(src, mode, saturate):
    x = _values(src.np)
    g = _cast_graph(x.shape, src, dt.float8e8m0, saturate=saturate, round_mode=mode)
    lower_node(g.nodes[-1])
    ref = irgraph.compile(g).run(x)[0]
    got = irgraph.compile(g, target="cpu").run(x)[0]
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_array_equal(got.view(np.uint8), ref.view(np.uint8))


def test_cast_int_to_e8m0():
    x = np.array([[0, 1, 2, 3, -5], [6, 1 << 30, -(1 << 31), 7, 12]], np.int32)
    g = _cast_graph(x.shape, dt.int32, dt.float8e8m0, round_mode="nearest")
    ref = irgraph.compile(g).run(x)[0]
    got = irgraph.compile(g, target="cpu").run(x)[0]
    np.testing.assert_array_equal(got.view(np.uint8), ref.view(np.uint8))


@pytest.mark.parametrize("to", [dt.float32, dt.float16, dt.float64, dt.bfloat16])
def test_cast_from_e8m0_every_code(to):
    codes = np.arange(256, dtype=np.uint8).reshape(16, 16).view(ml_dtypes.float8_e8m0fnu)
    g = _cast_graph(codes.shape, dt.float8e8m0, to)
    ref = irgraph.compile(g).run(codes)[0]
    got = irgraph.compile(g, target="cpu").run(codes)[0]
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got.astype(np.float64), ref.astype(np.float64))   # NaN == NaN here


def test_plain_float32_to_e8m0_encoding_matches_ml_dtypes():
    """The codec behind the scalar builder's plain cast (no rounding mode): float32 -> e8m0 as
    ml_dtypes rounds it, on every exponent with edge mantissas, subnormals, signs, inf, NaN."""
    from irgraph.backends.cpu.codegen import compile_module, kernel_module
    from irgraph.backends.kernel_ir import Buffer, IRBuilder, Kernel, Load, Loop, Store, Var
    exps = np.arange(256, dtype=np.uint32) << 23
    mants = np.array([0, 1, 0x200000, 0x3FFFFF, 0x400000, 0x400001, 0x7FFFFF], np.uint32)
    bits = (exps[:, None] | mants[None, :]).reshape(-1)
    bits = np.concatenate([bits, bits | np.uint32(1 << 31)])
    x = bits.view(np.float32)
    xb = Buffer("x", dt.float32, x.shape, "input")
    yb = Buffer("y", dt.float8e8m0, x.shape, "output")
    i = Var("i")
    k = Kernel("enc", [xb, yb], [Loop(i, x.size, "serial",
                                      [Store(yb, i, IRBuilder().cast(Load(xb, i), dt.float8e8m0))])])
    mg, wrappers = kernel_module([k], 1)
    lib = compile_module(mg)
    y = np.zeros(x.shape, ml_dtypes.float8_e8m0fnu)
    ptrs = (ctypes.c_void_p * 2)(x.ctypes.data, y.ctypes.data)
    lib.cfunc(wrappers[0], None, ctypes.c_void_p)(ctypes.addressof(ptrs))
    with np.errstate(all="ignore"):
        want = x.astype(ml_dtypes.float8_e8m0fnu)
    np.testing.assert_array_equal(y.view(np.uint8), want.view(np.uint8))
