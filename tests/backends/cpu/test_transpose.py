"""Materialized transposes on cpu: the blocked register-transpose template (transpose.py) where
the copy has its shape, the generic loop nest elsewhere, both bit-exact against numpy."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import irgraph
from irgraph.backends.cpu.llvm_target import host_cpu

from lowercheck import private_object_cache  # noqa: F401  (autouse fixture: a temporary object cache)

LANES = host_cpu().f32_lanes
ONNX_TYPES = {np.float32: TensorProto.FLOAT, np.int32: TensorProto.INT32, np.uint32: TensorProto.UINT32,
              np.float16: TensorProto.FLOAT16, np.float64: TensorProto.DOUBLE}


def _model(shape, perm, dtype):
    out = [shape[p] for p in perm]
    g = helper.make_graph([helper.make_node("Transpose", ["x"], ["y"], perm=list(perm))], "t",
                          [helper.make_tensor_value_info("x", ONNX_TYPES[dtype], list(shape))],
                          [helper.make_tensor_value_info("y", ONNX_TYPES[dtype], out)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(0, 2 ** 31 - 1, size=shape).astype(dtype)


def _run(shape, perm, dtype, threads):
    cm = irgraph.compile(_model(shape, perm, dtype), target="cpu", num_threads=threads)
    x = _data(shape, dtype)
    y = cm(x)
    np.testing.assert_array_equal(y, x.transpose(perm))
    return cm._run.last.kernels_ir()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape,perm", [
    ((4 * LANES, 2 * LANES), (1, 0)),
    ((LANES, 64 * LANES), (1, 0)),                  # one block row, many columns
    ((3, 2 * LANES, 5 * LANES), (0, 2, 1)),          # a batch of transposes
    ((2, 4, 2 * LANES), (2, 0, 1)),                  # coalesces to (2 * LANES, 8): 8 is not a multiple
    ((2, 8, LANES, 2 * LANES), (0, 3, 1, 2)),        # coalesces to a batch of (2L, 8L) transposes
])
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint32])
def test_transposes_are_exact(shape, perm, dtype, threads):
    text = _run(shape, perm, dtype, threads)
    # the template is used exactly when the coalesced copy is a blocked transpose
    blocked = not (shape == (2, 4, 2 * LANES))
    assert ("call transpose2d" in text) == blocked, text


@pytest.mark.parametrize("shape,perm,dtype", [
    ((LANES + 3, 2 * LANES), (1, 0), np.float32),    # not a multiple of the block
    ((2 * LANES, 2 * LANES), (1, 0), np.float16),    # 2-byte elements
    ((2 * LANES, 2 * LANES), (1, 0), np.float64),    # 8-byte elements
    ((4, 2 * LANES, 3), (1, 0, 2), np.float32),      # the last axis stays innermost
])
def test_other_copies_take_the_loop_nest(shape, perm, dtype):
    assert "call transpose2d" not in _run(shape, perm, dtype, 2)


def test_nan_payloads_and_signed_zeros_move_bit_for_bit():
    bits = np.arange(4 * LANES * LANES, dtype=np.uint32).reshape(2 * LANES, 2 * LANES) | np.uint32(0x7FC00000)
    bits[0, :4] = [0x7F800001, 0xFFC00123, 0x80000000, 0x00000001]      # signalling NaN, -NaN, -0, denormal
    x = bits.view(np.float32)
    cm = irgraph.compile(_model(x.shape, (1, 0), np.float32), target="cpu")
    assert "call transpose2d" in cm._run.last.kernels_ir()
    np.testing.assert_array_equal(cm(x).view(np.uint32), bits.T)
