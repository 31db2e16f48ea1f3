"""Finite-difference checks of the pooling gradients (pooling.py): strides, pads, dilations,
ceil_mode, auto_pad, count_include_pad, p, storage_order; maxima are kept apart from ties."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import case, check_case
from test_grad_conv import check_symbolic_batch

_rng = np.random.default_rng(11)


def _r(*shape):
    return _rng.standard_normal(shape)


def _distinct(*shape):
    """Values at least 0.05 apart, so no finite-difference step moves a window's maximum."""
    n = int(np.prod(shape))
    return (_rng.permutation(n) * 0.05 - n * 0.025).reshape(shape) + _rng.uniform(0, 0.01, shape)


def _unpool_case(x_shape, kernel, strides, pads=None, output_shape=None, id=""):
    """max_unpool fed with the indices of a max_pool of a random input (maybe repeated: windows
    that overlap can share their maximum)."""
    from oprun import run
    attrs = {"kernel_shape": kernel, "strides": strides}
    if pads is not None:
        attrs["pads"] = pads
    src = _distinct(*x_shape)
    y, idx = run("max_pool", [src], dict(attrs, indices=True), num_outputs=2)
    ins = [_r(*y.shape), idx] + ([np.array(output_shape, np.int64)] if output_shape else [])
    return case(*ins, attrs=attrs, const=(1, 2), id=id)


GRAD_CASES = {
    "max_pool": [
        case(_distinct(2, 2, 4, 6), attrs={"kernel_shape": (2, 2), "strides": (2, 2)}, id="2x2"),
        case(_distinct(1, 2, 5, 5), attrs={"kernel_shape": (3, 3), "pads": (1, 1, 1, 1)}, id="overlap_pads"),
        case(_distinct(1, 1, 5, 7), attrs={"kernel_shape": (2, 3), "strides": (2, 2), "ceil_mode": True},
             id="ceil_mode"),
        case(_distinct(1, 2, 7, 6), attrs={"kernel_shape": (2, 2), "dilations": (2, 3), "strides": (1, 2)},
             id="dilated"),
        case(_distinct(1, 2, 5, 4), attrs={"kernel_shape": (3, 2), "strides": (2, 2),
                                           "auto_pad": "SAME_UPPER"}, id="same_upper"),
        case(_distinct(2, 3, 7), attrs={"kernel_shape": (3,), "strides": (2,), "pads": (1, 2)}, id="1d"),
        case(_distinct(1, 1, 4, 3, 4), attrs={"kernel_shape": (2, 2, 2), "strides": (2, 1, 2)}, id="3d"),
        case(_distinct(1, 2, 4, 5), attrs={"kernel_shape": (2, 2), "indices": True, "storage_order": 1},
             num_outputs=2, id="indices_col_major"),
        case(_distinct(1, 1, 4, 4), attrs={"kernel_shape": (3, 3), "strides": (2, 2), "indices": True},
             num_outputs=2, id="indices"),
    ],
    "avg_pool": [
        case(_r(2, 2, 5, 4), attrs={"kernel_shape": (2, 2), "strides": (2, 2)}, id="2x2_odd"),
        case(_r(1, 2, 5, 5), attrs={"kernel_shape": (3, 3), "pads": (1, 1, 1, 1), "count_include_pad": True},
             id="include_pad"),
        case(_r(1, 2, 5, 5), attrs={"kernel_shape": (3, 2), "pads": (1, 0, 1, 1)}, id="exclude_pad"),
        case(_r(1, 1, 5, 7), attrs={"kernel_shape": (2, 2), "strides": (2, 2), "ceil_mode": True},
             id="ceil_mode_blocks"),
        case(_r(1, 1, 6, 5), attrs={"kernel_shape": (3, 2), "strides": (2, 2), "ceil_mode": True,
                                    "pads": (1, 0, 1, 0), "count_include_pad": True}, id="ceil_mode_pads"),
        case(_r(1, 2, 7, 6), attrs={"kernel_shape": (2, 2), "dilations": (2, 2), "strides": (2, 1)},
             id="dilated"),
        case(_r(1, 1, 5, 4), attrs={"kernel_shape": (2, 3), "strides": (2, 1), "auto_pad": "SAME_LOWER"},
             id="same_lower"),
        case(_r(2, 2, 7), attrs={"kernel_shape": (3,), "strides": (3,)}, id="1d_blocks"),
        case(_r(1, 1, 3, 4, 4), attrs={"kernel_shape": (2, 2, 2), "strides": (1, 2, 2)}, id="3d"),
    ],
    "lp_pool": [
        case(_r(1, 2, 4, 5), attrs={"kernel_shape": (2, 2), "strides": (2, 2)}, id="p2_blocks"),
        case(_r(1, 2, 5, 5), attrs={"kernel_shape": (3, 3), "pads": (1, 1, 1, 1), "p": 1.0}, id="p1_pads"),
        case(_r(1, 1, 6, 5), attrs={"kernel_shape": (2, 3), "strides": (2, 1), "p": 3.0, "dilations": (2, 1)},
             id="p3_dilated"),
        case(_r(1, 1, 5, 5), attrs={"kernel_shape": (2, 2), "strides": (2, 2), "ceil_mode": True, "p": 2.5},
             id="ceil_mode"),
    ],
    "global_pool": [
        case(_r(2, 3, 3, 4), attrs={"mode": "avg"}, id="avg"),
        case(_distinct(2, 3, 3, 4), attrs={"mode": "max"}, id="max"),
        case(_r(2, 2, 5), attrs={"mode": "lp"}, id="lp2"),
        case(_r(1, 2, 2, 2, 3), attrs={"mode": "lp", "p": 3.0}, id="lp3_3d"),
    ],
    "max_unpool": [
        _unpool_case((2, 2, 4, 4), (2, 2), (2, 2), id="2x2"),
        _unpool_case((1, 2, 4, 4), (2, 2), (2, 2), output_shape=(1, 2, 5, 6), id="larger_output"),
        _unpool_case((1, 1, 5, 5), (3, 3), (1, 1), id="overlap_repeats"),
        # indices are positions in the default canvas (here 6x4, pads included); output_shape
        # 5x3 cuts its last row and column, which these indices avoid
        case(_r(1, 2, 3, 3), np.array([[[[0, 6, 9], [13, 2, 17], [8, 12, 16]],
                                        [[1, 5, 9], [4, 14, 10], [0, 18, 4]]]], np.int64),
             np.array([1, 2, 5, 3], np.int64), attrs={"kernel_shape": (3, 2), "strides": (2, 1),
                                                      "pads": (1, 0, 1, 1)},
             const=(1, 2), id="pads_smaller_output"),
    ],
    # roi corners sit away from the .5 rounding points, so the bins do not move under the
    # finite-difference steps (the first case's last roi has bins outside the map: empty ones).
    # The rois are not differentiated: their batch index sits on integers, where truncation
    # jumps; elsewhere their gradient is zero.
    "max_roi_pool": [
        case(_distinct(2, 2, 6, 7), np.array([[0, 0.2, 1.1, 4.9, 5.2], [1, 2.1, 0.3, 6.2, 3.8],
                                               [1, 3.9, 3.1, 3.8, 3.2], [0, 5.2, 4.1, 9.8, 8.3]]),
             attrs={"pooled_shape": (2, 3)}, wrt=(0,), id="rois"),
        case(_distinct(1, 1, 8, 8), np.array([[0, 1.1, 2.2, 9.3, 6.1]]),
             attrs={"pooled_shape": (3, 2), "spatial_scale": 0.5}, wrt=(0,), id="scaled"),
    ],
}


@pytest.mark.parametrize("op,c", [(op, c) for op, cs in GRAD_CASES.items() for c in cs],
                         ids=lambda v: v if isinstance(v, str) else v.id)
def test_grad(op, c):
    check_case(op, c)


def test_window_only_in_padding_is_refused_by_name():
    from oprun import build

    from irgraph import IrgraphError
    from irgraph.passes.autodiff import gradients
    g, outs, _ = build("max_pool", [_r(1, 1, 4, 4)], {"kernel_shape": (2, 2), "pads": (2, 0, 0, 0)})
    with pytest.raises(IrgraphError, match="entirely in the padding") as e:
        gradients(g, outs[0], [g.inputs[0]])
    assert e.value.op == "max_pool"


@pytest.mark.parametrize("op,c", [(op, c) for op, cs in GRAD_CASES.items() for c in cs],
                         ids=lambda v: v if isinstance(v, str) else v.id)
def test_symbolic_batch(op, c):
    check_symbolic_batch(op, c)
