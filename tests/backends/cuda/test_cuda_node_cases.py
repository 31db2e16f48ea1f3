"""ONNX node cases on the CUDA emulator: a representative filtered set (elementwise, casts,
integer semantics, reductions, softmax/normalization, matmul/gemm, conv, pooling, movement),
all compiled into one emulator build, each run under forward, reverse and shuffled schedules
and compared with the case's expected outputs at the case's own tolerances.

The CPU backend runs every node case (tests/backends/cpu/test_cpu_node_cases.py) through the
same lowering; this module checks the CUDA printer and schedules over the op families."""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from cudacheck import SCHEDULES, program_for, run_schedules, shared_module  # noqa: E402
from expected_failures import EXPECTED_FAILURES  # noqa: E402
from node_cases import compare, load_cases  # noqa: E402

from irgraph.frontends.onnx.backend import _to_numpy  # noqa: E402

PREFIXES = (
    "test_relu", "test_add", "test_sub", "test_mul", "test_div", "test_mod", "test_pow", "test_sigmoid",
    "test_tanh", "test_exp", "test_log_", "test_sqrt", "test_erf", "test_gelu", "test_abs", "test_neg",
    "test_sign", "test_floor", "test_ceil", "test_round", "test_clip", "test_where", "test_min", "test_max",
    "test_cast_FLOAT_to_", "test_cast_FLOAT16_to_", "test_cast_DOUBLE_to_", "test_cast_BFLOAT16_to_",
    "test_bitshift", "test_bitwise", "test_equal", "test_less", "test_greater", "test_not", "test_and",
    "test_xor", "test_isnan", "test_isinf", "test_softmax", "test_logsoftmax", "test_layer_normalization_2d",
    "test_layer_normalization_3d", "test_reduce_sum_", "test_reduce_max_", "test_reduce_mean_",
    "test_reduce_prod_", "test_argmax", "test_argmin", "test_cumsum", "test_matmul_", "test_gemm_",
    "test_basic_conv", "test_conv_with", "test_maxpool_2d", "test_averagepool_2d", "test_globalaveragepool",
    "test_transpose", "test_concat", "test_gather_", "test_slice", "test_tile", "test_expand", "test_pad",
    "test_batchnorm", "test_instancenorm", "test_hardmax", "test_einsum", "test_topk", "test_one_hot",
)
# element types the CUDA printer does not implement (narrow floats/ints, strings)
UNSUPPORTED = ("FLOAT8", "FLOAT4", "INT4", "INT2", "string", "_FP8", "_FP4", "_e4m3", "_e5m2",
               "_int4", "_uint4", "_int2", "_uint2", "STRING")


def _selected():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = load_cases()
    return [c for c in cases if c.name.startswith(PREFIXES) and "expanded" not in c.name
            and c.name not in EXPECTED_FAILURES and not any(u in c.name for u in UNSUPPORTED)]


CASES = _selected()


def _values(inputs) -> dict:
    """Small integer inputs (axes, shapes, pads …): known at compile time, as the targets do."""
    return {k: a for k, a in enumerate(inputs) if a.dtype.kind in "iu" and a.size <= 16 and a.ndim <= 1}


@pytest.fixture(scope="module")
def built():
    progs, errors = {}, {}
    for i, c in enumerate(CASES):
        ins = _to_numpy(list(c.data_sets[0][0]))
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                progs[c.name] = program_for(c.model, prefix=f"c{i}_", values=_values(ins))
        except Exception as e:   # reported by the case's own test
            errors[c.name] = e
    return progs, errors, shared_module(progs.values())


def test_selection_is_representative():
    assert len(CASES) >= 300
    ops = {c.name.split("_")[1] for c in CASES}
    for fam in ("matmul", "conv", "softmax", "reduce", "cast", "maxpool", "gather", "gemm"):
        assert fam in ops or any(o.startswith(fam) for o in ops), fam


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case_on_emulator(case, built):
    progs, errors, mod = built
    if case.name in errors:
        raise errors[case.name]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for inputs, outputs in case.data_sets:
            res = run_schedules(progs[case.name], mod, _to_numpy(list(inputs)))
            assert set(res) == set(SCHEDULES)
            for outs in res.values():
                compare(case, outputs, outs)
