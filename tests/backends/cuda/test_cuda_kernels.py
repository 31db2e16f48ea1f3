"""The GEMM template and the schedules on awkward shapes, and the emulator's own checks: a
missing barrier, a divergent barrier and a read of unwritten shared memory are caught."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from cudacheck import assert_schedules_agree, program_for, run_schedules, shared_module  # noqa: E402

from irgraph.backends.cuda import emulator  # noqa: E402
from irgraph.errors import ExecutionError  # noqa: E402

rng = np.random.default_rng(0)


def _model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "t", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _cases():
    out = {}
    # batched matmul, odd sizes on every dim (37 x 70 @ 70 x 45), large enough for several tiles
    out["bmm"] = (_model([helper.make_node("MatMul", ["a", "b"], ["y"])], [_vi("a", [2, 37, 70]), _vi("b", [2, 70, 45])],
                         [_vi("y", [2, 37, 45])]), lambda a, b: a @ b, [(2, 37, 70), (2, 70, 45)], 70)
    # transposed operands, constant weight, bias epilogue; M=131 crosses the large config's 128
    w = rng.standard_normal((150, 67)).astype(np.float32)
    bias = rng.standard_normal(150).astype(np.float32)
    out["gemm_tt"] = (_model([helper.make_node("Gemm", ["x", "w", "bias"], ["y"], transA=1, transB=1)],
                             [_vi("x", [67, 131])], [_vi("y", [131, 150])],
                             [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "bias")]),
                      lambda x: x.T @ w.T + bias, [(67, 131)], 67)
    # softmax over a long row (block-per-row reduction) and a short one (warp per row)
    out["softmax_long"] = (_model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], [_vi("x", [3, 1500])],
                                  [_vi("y", [3, 1500])]),
                           lambda x: np.exp(x - x.max(-1, keepdims=True)) / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True),
                           [(3, 1500)], 1500)
    out["reduce_all"] = (_model([helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)], [_vi("x", [33, 97])],
                                [_vi("y", [])]), lambda x: x.sum(dtype=np.float64).astype(np.float32), [(33, 97)], 33 * 97)
    out["reduce_axis0"] = (_model([helper.make_node("ReduceMax", ["x", "ax"], ["y"], keepdims=0)],
                                  [_vi("x", [45, 19])], [_vi("y", [19])],
                                  [numpy_helper.from_array(np.array([0], np.int64), "ax")]),
                           lambda x: x.max(0), [(45, 19)], 1)
    return out


CASES = _cases()


@pytest.fixture(scope="module")
def built():
    progs = {k: program_for(m, prefix=f"k_{k}_") for k, (m, _, _, _) in CASES.items()}
    return progs, shared_module(progs.values())


@pytest.mark.parametrize("name", list(CASES))
def test_kernel_matches_numpy_under_every_schedule(name, built):
    progs, mod = built
    _, ref, shapes, red = CASES[name]
    ins = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    outs = assert_schedules_agree(run_schedules(progs[name], mod, ins))
    np.testing.assert_allclose(outs[0], ref(*ins), rtol=1e-4, atol=1e-5 * np.sqrt(red))


def test_schedules_chosen(built):
    progs, _ = built
    kinds = lambda p: [la.launch.kind for la in p.launches()]  # noqa: E731
    assert "gemm" in kinds(progs["bmm"])
    assert kinds(progs["gemm_tt"])[-1] == "gemm+epilogue"
    assert "reduce" in kinds(progs["softmax_long"]) and "reduce" in kinds(progs["reduce_all"])
    assert "serial" not in kinds(progs["reduce_axis0"])


BUGGY = r"""
extern "C" __global__ void nosync(const float* x, float* y) {
  __shared__ float s[64];
  s[threadIdx.x] = x[threadIdx.x];
  y[threadIdx.x] = s[63 - threadIdx.x];     // missing __syncthreads(): reads a neighbour's slot
}
extern "C" __global__ void early_exit(const float* x, float* y) {
  __shared__ float s[64];
  if (threadIdx.x >= 32) return;
  s[threadIdx.x] = x[threadIdx.x];
  __syncthreads();
  y[threadIdx.x] = s[threadIdx.x];
}
extern "C" __global__ void uninit(const float* x, float* y) {
  __shared__ float s[64];
  if (threadIdx.x < 32) s[threadIdx.x] = x[threadIdx.x];
  __syncthreads();
  y[threadIdx.x] = s[threadIdx.x];
}
"""


@pytest.fixture(scope="module")
def buggy():
    return emulator.build(BUGGY, {k: ["const float*", "float*"] for k in ("nosync", "early_exit", "uninit")})


def _run(mod, fn, order):
    x = np.arange(64, dtype=np.float32)
    y = np.zeros(64, np.float32)
    mod.launch(fn, (1,), (64,), [x.ctypes.data, y.ctypes.data], order=order, seed=1)
    return y


def test_emulator_exposes_a_missing_barrier(buggy):
    a, b = _run(buggy, "nosync", "forward"), _run(buggy, "nosync", "reverse")
    assert not np.array_equal(a, b, equal_nan=True)


def test_emulator_reports_a_divergent_barrier(buggy):
    with pytest.raises(ExecutionError, match="divergent barrier"):
        _run(buggy, "early_exit", "forward")


def test_emulator_poisons_unwritten_shared_memory(buggy):
    y = _run(buggy, "uninit", "shuffled")
    assert np.isnan(y[32:]).all() and np.array_equal(y[:32], np.arange(32, dtype=np.float32))
