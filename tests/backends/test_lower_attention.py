"""attention lowered natively (backends/lower_attention.py) against the numpy interpreter: bfloat16
softmax intermediates round to bfloat16, as ONNX specifies (the softmax runs in the inputs' precision)."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph import dtype as dt
from irgraph.graph import Graph
from irgraph.types import TensorType


from lowercheck import compare as _compare, private_object_cache  # noqa: F401,E402  (autouse fixture)


def _first(outs):
    return outs[0] if isinstance(outs, (tuple, list)) else outs


def _graph(qs, ks, d, attrs, mask_shape=None):
    g = Graph()
    ins = [g.add_input("q", TensorType(qs, d)), g.add_input("k", TensorType(ks, d)),
           g.add_input("v", TensorType(ks, d))]
    if mask_shape is not None:
        ins.append(g.add_input("m", TensorType(mask_shape, dt.bool_)))
    g.set_outputs([_first(g.op("attention", ins, attrs))])
    return g


SHAPES = [((2, 3, 4, 8), (2, 3, 6, 8), True), ((1, 2, 5, 4), (1, 2, 5, 4), False),
          ((1, 4, 3, 6), (1, 2, 37, 6), True), ((2, 1, 7, 16), (2, 1, 9, 16), False)]


# float32 once: its GEMM template is slow to compile and this rule leaves it to the decomposition
@pytest.mark.parametrize("qs,ks,causal,d", [s + (d,) for s in SHAPES for d in (dt.bfloat16, dt.float16)]
                         + [SHAPES[2] + (dt.float32,)])
def test_attention_matches_interpreter(qs, ks, causal, d):
    rng = np.random.default_rng(qs[2] * 10 + ks[2])
    q, k, v = (rng.standard_normal(s).astype(np.float32).astype(d.np) for s in (qs, ks, ks))
    g = _graph(qs, ks, d, {"is_causal": causal})
    tol = {dt.bfloat16: 1e-3, dt.float16: 1e-3, dt.float32: 1e-5}[d]   # < one bfloat16 step (2**-8)
    _compare(g, q, k, v, rtol=tol, atol=1e-6)


def test_bfloat16_attention_with_a_run_time_mask():
    rng = np.random.default_rng(5)
    qs, ks = (2, 2, 3, 8), (2, 2, 11, 8)
    q, k, v = (rng.standard_normal(s).astype(np.float32).astype(dt.bfloat16.np) for s in (qs, ks, ks))
    mask = rng.random((2, 1, 3, 11)) < 0.7
    mask[..., 0] = True
    g = _graph(qs, ks, dt.bfloat16, {}, mask.shape)
    _compare(g, q, k, v, mask, rtol=1e-3, atol=1e-6)
