"""Finite-difference checks of the normalization gradients (normalization_grad.py): per-channel
and per-activation parameters, 2-D to 4-D inputs, every output of the multi-output ops carrying a
cotangent (running and batch statistics, layer_norm's mean and inv_std_dev)."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import case, check_case
from test_grad_conv import check_symbolic_batch
from oprun import build

from irgraph import run_graph
from irgraph.passes.autodiff import gradients

_rng = np.random.default_rng(5)


def _r(*shape):
    return _rng.standard_normal(shape)


def _pos(*shape):
    return _rng.uniform(0.5, 2.0, shape)


# group, layer and rms norm keep their statistics in stash_type (float32 by default), which
# would round the float64 forward the differences are taken of: check them in float64
F64 = {"stash_type": "float64"}


GRAD_CASES = {
    "batch_norm": [
        case(_r(2, 3, 2, 2), _r(3), _r(3), _r(3), _pos(3), id="per_channel"),
        case(_r(4, 3), _r(3), _r(3), _r(3), _pos(3), attrs={"epsilon": 1e-3}, id="2d"),
        case(_r(2, 2, 3), _r(2, 3), _r(2, 3), _r(2, 3), _pos(2, 3), id="per_activation"),
    ],
    "batch_norm_training": [
        case(_r(3, 2, 2, 3), _r(2), _r(2), _r(2), _pos(2), id="y_only"),
        case(_r(4, 3), _r(3), _r(3), _r(3), _pos(3), attrs={"momentum": 0.8}, num_outputs=3,
             id="running_stats"),
        case(_r(2, 2, 5), _r(2), _r(2), _r(2), _pos(2), attrs={"epsilon": 1e-2}, num_outputs=5,
             id="all_outputs"),
    ],
    "instance_norm": [
        case(_r(2, 3, 2, 3), _r(3), _r(3), id="2d"),
        case(_r(1, 2, 5), _r(2), _r(2), attrs={"epsilon": 1e-3}, id="1d"),
    ],
    "group_norm": [
        case(_r(2, 4, 2, 3), _r(4), _r(4), attrs={"num_groups": 2, **F64}, id="2_groups"),
        case(_r(2, 3, 4), _r(3), _r(3), attrs={"num_groups": 3, **F64}, id="per_channel_groups"),
        case(_r(3, 4), _r(4), _r(4), attrs={"num_groups": 1, **F64}, id="one_group_2d"),
    ],
    "layer_norm": [
        case(_r(3, 5), _r(5), _r(5), attrs=F64, id="last_axis"),
        case(_r(2, 3, 4), _r(3, 4), _r(4), attrs={"axis": 1, **F64}, num_outputs=3, id="two_axes_stats"),
        case(_r(2, 3, 4), _r(1, 4), attrs={"axis": -2, "epsilon": 1e-3, **F64},
             id="broadcast_scale_no_bias"),
        case(_r(4, 6), _r(6), _r(6), attrs=F64, num_outputs=2, id="mean_output"),
    ],
    "rms_norm": [
        case(_r(3, 5), _r(5), attrs=F64, id="last_axis"),
        case(_r(2, 3, 4), _r(1, 4), attrs={"axis": 1, "epsilon": 1e-3, **F64}, id="broadcast_scale"),
    ],
    "lrn": [
        case(_r(2, 5, 2, 2), attrs={"size": 3, "alpha": 0.5, "beta": 0.75, "bias": 1.5}, id="size3"),
        case(_r(1, 4, 3), attrs={"size": 2, "alpha": 0.3, "beta": 0.6, "bias": 2.0}, id="even_size"),
        case(_r(2, 3), attrs={"size": 5, "alpha": 1.0, "beta": 1.2}, id="window_past_channels"),
    ],
}


@pytest.mark.parametrize("op,c", [(op, c) for op, cs in GRAD_CASES.items() for c in cs],
                         ids=lambda v: v if isinstance(v, str) else v.id)
def test_grad(op, c):
    check_case(op, c)


def _grads(op, inputs, attrs, num_outputs, cots):
    g, outs, feeds = build(op, inputs, attrs, num_outputs=num_outputs)
    float_outs = [o for o in outs if o.dtype.kind == "f"]
    seeds = [g.add_input(f"cot{k}", o.type) for k, o in enumerate(float_outs)]
    res = gradients(g, float_outs, list(g.inputs[:len(feeds)]), seeds=seeds)
    g.set_outputs(res)
    g.verify()
    return run_graph(g, list(feeds) + [c.astype(o.dtype.np) for c, o in zip(cots, float_outs)])


# Low-precision inputs: the rules cast between the input, statistics (stash) and parameter
# dtypes; each gradient must come back in its input's dtype and agree with the float64 one to
# the precision of the narrowest dtype involved.
LOW_PRECISION = [
    ("batch_norm_training", [_r(4, 3, 2, 2), _r(3), _r(3), _r(3), _pos(3)], {}, 5),
    ("batch_norm", [_r(4, 3, 2), _r(3), _r(3), _r(3), _pos(3)], {}, None),
    ("layer_norm", [_r(3, 8), _r(8), _r(8)], {}, 3),
    ("rms_norm", [_r(3, 8), _r(8)], {}, None),
    ("group_norm", [_r(2, 4, 3), _r(4), _r(4)], {"num_groups": 2}, None),
    ("instance_norm", [_r(2, 3, 4), _r(3), _r(3)], {}, None),
    ("lrn", [_r(2, 4, 3)], {"size": 3, "alpha": 0.5}, None),
]


_STASHED = ("layer_norm", "rms_norm", "group_norm")


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-4), (np.float16, 3e-2)], ids=["f32", "f16"])
@pytest.mark.parametrize("op,inputs,attrs,n", LOW_PRECISION, ids=[c[0] for c in LOW_PRECISION])
def test_low_precision_matches_float64(op, inputs, attrs, n, dtype, rtol):
    exact = dict(attrs, **(F64 if op in _STASHED else {}))
    cots = [_rng.standard_normal(o.type.shape) for o in build(op, inputs, exact, num_outputs=n).outputs]
    want = _grads(op, inputs, exact, n, cots)
    low = [x.astype(dtype) for x in inputs]
    got = _grads(op, low, attrs, n, cots)       # default stash_type: float32 statistics
    for x, w, gv in zip(low, want, got):
        assert gv.dtype == x.dtype and gv.shape == x.shape
        np.testing.assert_allclose(gv.astype(np.float64), w, rtol=rtol, atol=rtol * np.max(np.abs(w)))


@pytest.mark.parametrize("op,c", [(op, c) for op, cs in GRAD_CASES.items() for c in cs],
                         ids=lambda v: v if isinstance(v, str) else v.id)
def test_symbolic_batch(op, c):
    check_symbolic_batch(op, c)
