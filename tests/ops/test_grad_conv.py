"""Finite-difference checks of the convolution gradients (conv_grad.py): every stride, pad,
dilation, group and auto_pad setting the rules handle, odd sizes where the windows stop short of the end."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import case, check_case
from oprun import build

from irgraph import IrgraphError, TensorType, run_graph
from irgraph.passes.autodiff import gradients

_rng = np.random.default_rng(7)


def _r(*shape):
    return _rng.standard_normal(shape)


GRAD_CASES = {
    "conv": [
        case(_r(2, 3, 5, 5), _r(4, 3, 3, 3), _r(4), id="2d_bias"),
        case(_r(1, 2, 7, 6), _r(3, 2, 3, 2), attrs={"strides": (2, 3), "pads": (1, 0, 2, 1)},
             id="strided_odd"),
        case(_r(2, 2, 8), _r(2, 2, 3), attrs={"dilations": (2,), "strides": (2,), "pads": (2, 0)},
             id="1d_dilated"),
        case(_r(1, 4, 5, 5), _r(6, 2, 3, 3), attrs={"group": 2, "pads": (1, 1, 1, 1)}, id="groups"),
        case(_r(2, 4, 6, 5), _r(4, 1, 3, 3), _r(4), attrs={"group": 4, "strides": (2, 2)},
             id="depthwise"),
        case(_r(1, 2, 7, 5), _r(2, 2, 2, 3), attrs={"auto_pad": "SAME_UPPER", "strides": (2, 2)},
             id="same_upper"),
        case(_r(1, 2, 6, 5), _r(2, 2, 3, 2), attrs={"auto_pad": "SAME_LOWER", "dilations": (2, 1)},
             id="same_lower"),
        case(_r(1, 1, 4, 5, 4), _r(2, 1, 2, 3, 2), attrs={"strides": (1, 2, 2), "pads": (0, 1, 1, 1, 0, 0)},
             id="3d"),
        # stride 1 takes the flipped-weight conv path: groups with dilation, and begin pads
        # larger than the dilated kernel (the input gradient's conv then crops dy)
        case(_r(1, 4, 6, 5), _r(4, 2, 2, 3), attrs={"group": 2, "dilations": (2, 1), "pads": (0, 2, 1, 0)},
             id="groups_dilated"),
        case(_r(1, 2, 4, 4), _r(3, 2, 2, 2), attrs={"pads": (3, 0, 1, 2)}, id="wide_pads"),
    ],
    "conv_transpose": [
        case(_r(2, 3, 3, 4), _r(3, 2, 3, 3), _r(2), id="2d_bias"),
        case(_r(1, 2, 3, 4), _r(2, 3, 3, 2), attrs={"strides": (2, 3), "pads": (1, 0, 0, 1)}, id="strided"),
        case(_r(1, 2, 3, 3), _r(2, 2, 3, 3), attrs={"strides": (2, 2), "output_padding": (1, 1)},
             id="output_padding"),
        case(_r(1, 4, 3, 3), _r(4, 1, 2, 2), attrs={"group": 2, "dilations": (2, 1), "strides": (1, 2)},
             id="groups_dilated"),
        case(_r(1, 2, 3, 4), _r(2, 2, 3, 3), attrs={"strides": (2, 2), "output_shape": (8, 7)},
             id="output_shape"),
        case(_r(1, 2, 3, 3), _r(2, 1, 3, 3), attrs={"strides": (2, 2), "auto_pad": "SAME_LOWER"},
             id="same_lower"),
        case(_r(1, 1, 4), _r(1, 2, 3), attrs={"pads": (-1, 2)}, id="1d_negative_pad"),
        case(_r(1, 1, 2, 2, 3), _r(1, 2, 2, 2, 2), attrs={"strides": (2, 1, 2)}, id="3d"),
    ],
    # offsets are random reals: sampling points fall inside cells (away from the integer kinks
    # of the bilinear weights) and some outside the input (the zero border)
    "deform_conv": [
        case(_r(1, 2, 4, 4), _r(3, 2, 2, 2), 0.8 * _r(1, 8, 3, 3), _r(3), _rng.uniform(0.2, 1, (1, 4, 3, 3)),
             id="2d_bias_mask"),
        case(_r(2, 4, 4, 3), _r(2, 2, 2, 2), _r(2, 16, 2, 1), None, None,
             attrs={"group": 2, "offset_group": 2, "strides": (2, 2), "pads": (1, 0, 0, 0)},
             id="groups"),
        case(_r(1, 2, 6), _r(2, 1, 3), _r(1, 3, 4), attrs={"group": 2, "dilations": (2,), "pads": (1, 1)},
             id="1d_dilated"),
    ],
    # both outputs get cotangents: present_state's gradient flows into x's tail and the past
    "causal_conv_with_state": [
        case(_r(2, 3, 5), _r(3, 1, 3), _r(3), _r(2, 3, 2), num_outputs=2, id="state_bias"),
        case(_r(1, 2, 4), _r(2, 1, 4), num_outputs=2, id="no_past"),
        case(_r(2, 2, 5), _r(2, 1, 2), _r(2), _r(2, 2, 1), attrs={"activation": "silu"}, num_outputs=2,
             id="silu"),
        case(_r(1, 2, 3), _r(2, 1, 2), None, _r(1, 2, 1), num_outputs=2, id="short_state"),
        case(_r(1, 2, 3), _r(2, 1, 1), _r(2), attrs={"activation": "swish"}, id="k1"),
    ],
}


@pytest.mark.parametrize("op,c", [(op, c) for op, cs in GRAD_CASES.items() for c in cs],
                         ids=lambda v: v if isinstance(v, str) else v.id)
def test_grad(op, c):
    check_case(op, c)


def test_symbolic_spatial_dims_are_refused_by_name():
    g, outs, _ = build("conv", [TensorType(("N", 2, "H", 5), "float32"), _r(3, 2, 3, 3).astype(np.float32)])
    with pytest.raises(IrgraphError, match="static spatial dims") as e:
        gradients(g, outs[0], [g.inputs[0]])
    assert e.value.op == "conv"


def check_symbolic_batch(op, c) -> None:
    """The case's gradients built with a symbolic batch dim (input 0's dim 0 is "N", as in a
    model compiled for any batch size) equal those of the static graph."""
    x = np.asarray(c.inputs[0])

    def grads(first):
        g, outs, feeds = build(op, [first] + list(c.inputs[1:]), c.attrs, num_outputs=c.num_outputs,
                               const=c.const)
        float_outs = [o for o in outs if o.dtype.name == "float64"]
        wrt = [v for v in g.inputs if v.dtype.name == "float64"]
        g.set_outputs([v for v in gradients(g, float_outs, wrt) if v is not None])
        g.verify()
        return run_graph(g, ([x] if isinstance(first, TensorType) else []) + list(feeds))
    want = grads(x)
    got = grads(TensorType(("N",) + x.shape[1:], "float64"))
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op,c", [(op, c) for op, cs in GRAD_CASES.items() for c in cs],
                         ids=lambda v: v if isinstance(v, str) else v.id)
def test_symbolic_batch(op, c):
    check_symbolic_batch(op, c)
