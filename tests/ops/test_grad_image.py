"""Gradients of resize (every mode, coordinate transform, antialias, crop-and-resize), affine_grid,
grid_sample (linear/nearest/cubic x zeros/border/reflection, 2-D and 3-D) and roi_align
(avg/max, fixed and adaptive sampling) against central finite differences in float64. Grid
coordinates reach outside [-1, 1] so that every padding mode's branches take part."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import case, check_case

R = np.random.default_rng(11)


def f64(*shape):
    return R.standard_normal(shape)


def _scales(*s):
    return np.array(s, np.float64)


_x = f64(1, 2, 3, 4)
_NO = np.zeros(0)


def _resize(attrs, scales=None, sizes=None, roi=_NO, x=_x, id=""):
    if sizes is not None:
        return case(x, roi, None, np.array(sizes, np.int64), attrs=attrs, const=(1, 3), id=id)
    return case(x, roi, np.array(scales, np.float64), attrs=attrs, const=(1, 2), id=id)


def _grid(*shape, spread=1.3):
    # away from the half-pixel boundaries where floor() jumps: random, then nudged
    return R.uniform(-spread, spread, shape)


_th2, _th3 = f64(2, 2, 3) * 0.5, f64(1, 3, 4) * 0.5
_rois = np.array([[0.3, 0.2, 2.7, 2.1], [1.1, 0.4, 3.6, 2.9], [0.2, 0.9, 1.7, 1.3]])
_bidx = np.array([0, 1, 0], np.int64)
_xr = f64(2, 2, 4, 5)

GRAD_CASES = {
    "resize": [
        _resize({"mode": "nearest"}, [1, 1, 2, 1.5], id="nearest-up"),
        _resize({"mode": "linear"}, [1, 1, 1.7, 0.6], id="linear-half-pixel"),
        _resize({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, sizes=[1, 2, 5, 3],
                id="linear-align-corners-sizes"),
        _resize({"mode": "cubic", "coordinate_transformation_mode": "asymmetric", "exclude_outside": True},
                [1, 1, 2, 2], id="cubic-asymmetric-exclude"),
        _resize({"mode": "linear", "antialias": True}, [1, 1, 0.7, 0.5], id="linear-antialias-down"),
        _resize({"mode": "cubic", "antialias": True, "axes": [2, 3]}, [0.6, 0.8], id="cubic-antialias-axes"),
        _resize({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
                 "extrapolation_value": 0.5}, [1, 1, 1.5, 1.5], roi=np.array([0, 0, -0.2, 0.1, 1, 1, 0.9, 1.3]),
                id="crop-and-resize-extrapolate"),
        _resize({"mode": "nearest", "keep_aspect_ratio_policy": "not_larger", "axes": [2, 3]},
                sizes=[6, 6], id="nearest-keep-aspect"),
        _resize({"mode": "linear"}, [1, 2, 2, 1], x=f64(2, 1, 3, 2, 2)[0], id="linear-channel-axis"),
    ],
    "affine_grid": [
        case(_th2, np.array([2, 1, 3, 4], np.int64), const=(1,), id="2d"),
        case(_th2, np.array([2, 1, 3, 4], np.int64), const=(1,), attrs={"align_corners": True}, id="2d-align"),
        case(_th3, np.array([1, 1, 2, 3, 2], np.int64), const=(1,), id="3d"),
    ],
    "grid_sample": [
        case(f64(1, 2, 3, 4), _grid(1, 2, 3, 2), id="linear-zeros"),
        case(f64(1, 2, 3, 4), _grid(1, 3, 2, 2), attrs={"align_corners": True}, id="linear-zeros-align"),
        case(f64(2, 1, 3, 3), _grid(2, 2, 2, 2, spread=1.8), attrs={"padding_mode": "border"},
             id="linear-border"),
        case(f64(1, 1, 3, 4), _grid(1, 2, 3, 2, spread=2.5), attrs={"padding_mode": "reflection"},
             id="linear-reflection"),
        case(f64(1, 1, 4, 3), _grid(1, 2, 2, 2, spread=2.5),
             attrs={"padding_mode": "reflection", "align_corners": True}, id="linear-reflection-align"),
        case(f64(1, 2, 3, 4), _grid(1, 2, 2, 2), attrs={"mode": "cubic"}, id="cubic-zeros"),
        case(f64(1, 1, 4, 4), _grid(1, 2, 2, 2, spread=1.6), attrs={"mode": "cubic", "padding_mode": "border"},
             id="cubic-border"),
        case(f64(1, 2, 3, 4), _grid(1, 2, 3, 2), attrs={"mode": "nearest"}, id="nearest"),
        case(f64(1, 1, 2, 3, 2), _grid(1, 2, 1, 2, 3), id="linear-3d"),
    ],
    "roi_align": [
        case(_xr, _rois, _bidx, attrs={"output_height": 2, "output_width": 2, "sampling_ratio": 2},
             wrt=(0,), id="avg-ratio2-runtime-rois"),
        case(_xr, _rois, _bidx, attrs={"output_height": 2, "output_width": 3}, const=(1,),
             id="avg-adaptive-constant-rois"),
        case(_xr, _rois * 1.3, _bidx, attrs={"output_height": 2, "output_width": 2, "spatial_scale": 0.8,
                                             "coordinate_transformation_mode": "output_half_pixel"},
             const=(1,), id="avg-output-half-pixel"),
        case(_xr, _rois, _bidx, attrs={"mode": "max", "output_height": 2, "output_width": 2,
                                       "sampling_ratio": 1}, wrt=(0,), id="max-ratio1"),
        case(_xr, _rois, _bidx, attrs={"mode": "max", "output_height": 1, "output_width": 2}, const=(1,),
             id="max-adaptive"),
    ],
}

_ALL = [(op, c) for op, cs in GRAD_CASES.items() for c in cs]


@pytest.mark.parametrize("op,c", _ALL, ids=[f"{op}-{c.id}" for op, c in _ALL])
def test_gradient(op, c):
    check_case(op, c)
