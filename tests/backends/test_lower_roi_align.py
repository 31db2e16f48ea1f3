"""roi_align lowered natively (backends/lower_roi_align.py) against the numpy interpreter, including
sampling_ratio 0 (a sample grid read from the rois at run time) on rois far larger than the
image, inverted and tiny rois."""
from __future__ import annotations

import numpy as np
import pytest

from irgraph import dtype as dt
from irgraph.graph import Graph
from irgraph.types import TensorType


from lowercheck import compare as _compare, private_object_cache  # noqa: F401,E402  (autouse fixture)


def _rois(rng, n, H, W):
    r = []
    for _ in range(n):
        x0, y0 = rng.uniform(-3, W + 2), rng.uniform(-3, H + 2)
        r.append([x0, y0, x0 + rng.uniform(0.2, 2.5 * W), y0 + rng.uniform(0.2, 2.5 * H)])
    r += [[0, 0, W - 1, H - 1], [-60, -45, 3 * W + 90, 4 * H + 70],    # far larger than the image
          [-60, -70, 200, 110], [-90, 1, 9, H + 60],     # more samples per bin than the loop window
          [4, 5, 2, 1], [1.25, 2.5, 1.5, 2.75], [W + 30, 2, W + 60, H - 1]]   # inverted, tiny, outside
    return np.array(r)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("ratio", [0, 1, 3])
def test_roi_align_matches_interpreter(mode, ctm, ratio):
    rng = np.random.default_rng(ratio + len(mode) + len(ctm))
    H, W = 9, 12
    x = rng.standard_normal((2, 3, H, W)).astype(np.float32)
    rois = _rois(rng, 6, H, W).astype(np.float32)
    bidx = rng.integers(0, 2, rois.shape[0]).astype(np.int64)
    g = Graph()
    ins = [g.add_input("x", TensorType(x.shape, dt.float32)), g.add_input("rois", TensorType(rois.shape, dt.float32)),
           g.add_input("b", TensorType(bidx.shape, dt.int64))]
    attrs = {"mode": mode, "output_height": 3, "output_width": 5, "sampling_ratio": ratio, "spatial_scale": 0.75,
             "coordinate_transformation_mode": ctm}
    g.set_outputs([g.op("roi_align", ins, attrs)])
    _compare(g, x, rois, bidx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("d", [dt.float64, dt.float16])
def test_roi_align_other_dtypes_with_sampling_ratio_0(d):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 2, 7, 5)).astype(d.np)
    rois = _rois(rng, 4, 7, 5).astype(d.np)
    g = Graph()
    ins = [g.add_input("x", TensorType(x.shape, d)), g.add_input("rois", TensorType(rois.shape, d)),
           g.add_const(np.zeros(rois.shape[0], np.int64), "b")]
    g.set_outputs([g.op("roi_align", ins, {"output_height": 2, "output_width": 3, "sampling_ratio": 0})])
    tol = 1e-12 if d is dt.float64 else 2e-3
    _compare(g, x, rois, rtol=tol, atol=tol)
