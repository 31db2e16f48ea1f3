"""Image ops: resize, grid_sample, affine_grid, roi_align, non_max_suppression.

References are checked against hand-computed values and independent formulations (per-point
loops, identities such as an identity sampling grid); inference against the references' shapes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from irgraph import TensorType
from irgraph import dtype as dt
from irgraph.errors import ShapeError
from irgraph.frontends.onnx import backend
from irgraph.types import is_static_dim

from oprun import infer, onnx_model, run, value_info

rng = np.random.default_rng(0)
F32, I64 = dt.float32, dt.int64


def resize(x, scales=None, sizes=None, roi=None, const=True, **attrs):
    ins = [x, None if roi is None else np.asarray(roi, np.float32),
           None if scales is None else np.asarray(scales, np.float32),
           None if sizes is None else np.asarray(sizes, np.int64)]
    return run("resize", ins, attrs, const=(1, 2, 3) if const else ())


# ---- resize ----------------------------------------------------------------------------------
def test_resize_nearest_integer_upsample_repeats():
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    y = resize(x, scales=[1, 1, 2, 3], mode="nearest", coordinate_transformation_mode="asymmetric",
               nearest_mode="floor")
    np.testing.assert_array_equal(y, np.repeat(np.repeat(x, 2, axis=2), 3, axis=3))


def test_resize_linear_half_pixel_by_hand():
    x = np.array([1, 2, 3, 4], np.float32)
    y = resize(x, scales=[2], mode="linear")
    # source positions (i + 0.5) / 2 - 0.5 = -0.25, 0.25, ... 3.25, clamped at the edges
    np.testing.assert_allclose(y, [1, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75, 4], rtol=1e-6)


def test_resize_linear_align_corners_by_hand():
    y = resize(np.array([0, 3], np.float32), sizes=[4], mode="linear",
               coordinate_transformation_mode="align_corners")
    np.testing.assert_allclose(y, [0, 1, 2, 3], rtol=1e-6)


def _bilinear_loop(x, oh, ow):
    """Half-pixel bilinear resize, one output pixel at a time (an independent formulation)."""
    h, w = x.shape
    out = np.zeros((oh, ow))
    for i in range(oh):
        for j in range(ow):
            sy = min(max((i + 0.5) * h / oh - 0.5, 0), h - 1)
            sx = min(max((j + 0.5) * w / ow - 0.5, 0), w - 1)
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = sy - y0, sx - x0
            out[i, j] = ((1 - fy) * ((1 - fx) * x[y0, x0] + fx * x[y0, x1])
                         + fy * ((1 - fx) * x[y1, x0] + fx * x[y1, x1]))
    return out


@pytest.mark.parametrize("size", [(7, 9), (3, 2), (5, 5)])
def test_resize_bilinear_matches_point_loop(size):
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float64)
    y = resize(x, sizes=size, axes=[2, 3], mode="linear")
    for c in range(2):
        np.testing.assert_allclose(y[0, c], _bilinear_loop(x[0, c], *size), rtol=1e-12, atol=1e-12)


def test_resize_cubic_reproduces_a_ramp_inside():
    # Keys' cubic convolution reproduces linear functions where all four taps are inside
    x = np.arange(8, dtype=np.float64)
    y = resize(x, scales=[2], mode="cubic", coordinate_transformation_mode="asymmetric")
    np.testing.assert_allclose(y[2:10], np.arange(2, 10) / 2, atol=1e-12)


def test_resize_cubic_exclude_outside_renormalizes():
    x = np.array([1.0, 1.0, 1.0, 1.0])
    y = resize(x, scales=[2], mode="cubic", exclude_outside=True, cubic_coeff_a=-0.5)
    np.testing.assert_allclose(y, np.ones(8), atol=1e-12)


def test_resize_antialias_linear_by_hand():
    x = np.arange(8, dtype=np.float64)
    y = resize(x, scales=[0.5], mode="linear", antialias=True)
    # the triangle filter is 2 input pixels wide each side: taps 1/8, 3/8, 3/8, 1/8 around 2i + 0.5
    want = [(0 * 1 + 0 * 3 + 1 * 3 + 2 * 1) / 8] + [2 * i + 0.5 for i in range(1, 4)]
    want[3] = (5 * 1 + 6 * 3 + 7 * 3 + 7 * 1) / 8  # the last tap is clamped to the edge
    np.testing.assert_allclose(y, want, atol=1e-12)


@pytest.mark.parametrize("mode,want", [("round_prefer_floor", [0, 0, 1, 1, 2, 2]),
                                       ("round_prefer_ceil", [0, 1, 1, 2, 2, 2]),
                                       ("floor", [0, 0, 1, 1, 2, 2]),
                                       ("ceil", [0, 1, 1, 2, 2, 2])])
def test_resize_nearest_modes_at_half_positions(mode, want):
    x = np.array([10, 20, 30], np.int32)
    y = resize(x, sizes=[6], mode="nearest", nearest_mode=mode, coordinate_transformation_mode="asymmetric")
    np.testing.assert_array_equal(y, x[want])
    assert y.dtype == np.int32


def test_resize_tf_crop_and_resize_extrapolates():
    x = np.arange(4, dtype=np.float32)
    y = resize(x, sizes=[3], roi=[0.5, 1.5], mode="linear", extrapolation_value=-7.0,
               coordinate_transformation_mode="tf_crop_and_resize")
    # source positions 1.5, 3.0, 4.5: the last lies outside [0, 3]
    np.testing.assert_allclose(y, [1.5, 3.0, -7.0])


def test_resize_integer_dtype_rounds_and_saturates():
    x = np.array([0, 255], np.uint8)
    y = resize(x, sizes=[4], mode="cubic", coordinate_transformation_mode="align_corners")
    assert y.dtype == np.uint8
    assert y[0] == 0 and y[-1] == 255  # cubic overshoot is clipped, not wrapped


def test_resize_keep_aspect_ratio_policy():
    x = np.zeros((1, 1, 2, 4), np.float32)
    assert run("resize", [x, None, None, np.array([4, 4], np.int64)],
               {"axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"}, const=(3,)).shape == (1, 1, 2, 4)
    assert run("resize", [x, None, None, np.array([4, 4], np.int64)],
               {"axes": [2, 3], "keep_aspect_ratio_policy": "not_smaller"}, const=(3,)).shape == (1, 1, 4, 8)


def test_resize_inference():
    x = TensorType(("n", 3, 10, 20), F32)
    t = infer("resize", [x, None, np.array([1, 1, 0.5, 1.5], np.float32)], const=(2,))
    assert t.shape == ("n", 3, 5, 30)
    # scales known only at run time: any dim may change
    t = infer("resize", [x, None, np.array([1, 1, 0.5, 1.5], np.float32)])
    assert len(t.shape) == 4 and all(not is_static_dim(d) and d != "n" for d in t.shape)
    t = infer("resize", [x, None, np.array([0.5, 1.5], np.float32)], {"axes": [2, 3]})
    assert t.shape[:2] == ("n", 3) and all(not is_static_dim(d) for d in t.shape[2:])
    t = infer("resize", [x, None, None, np.array([7, 8], np.int64)], {"axes": [-2, -1]}, const=(3,))
    assert t.shape == ("n", 3, 7, 8)
    # an empty scales tensor (ONNX's way to leave it out) counts as absent
    t = infer("resize", [x, None, np.zeros(0, np.float32), np.array([1, 3, 4, 4], np.int64)], const=(2, 3))
    assert t.shape == (1, 3, 4, 4)


@pytest.mark.parametrize("inputs,attrs,match", [
    ([np.ones(4, np.float32), np.ones(2, np.int64)], {}, "exactly one"),
    ([None, None], {}, "exactly one"),
    ([np.ones(2, np.float32), None], {"mode": "area"}, "mode"),
    ([np.ones(3, np.float32), None], {}, "one entry per resized axis"),
    ([np.array([1, 1, -1, 1], np.float32), None], {}, "positive"),
    ([np.ones(4, np.float32), None], {"antialias": True}, "antialias"),
])
def test_resize_errors(inputs, attrs, match):
    x = TensorType((1, 1, 4, 4), F32)
    with pytest.raises(ShapeError, match=match) as e:
        infer("resize", [x, None] + inputs, attrs, const=(2, 3))
    assert "resize" in str(e.value)


# ---- affine_grid + grid_sample ----------------------------------------------------------------
def test_affine_grid_by_hand():
    theta = np.array([[[1, 0, 0], [0, 1, 0]]], np.float32)
    size = np.array([1, 1, 2, 3], np.int64)
    g = run("affine_grid", [theta, size], {"align_corners": True}, const=(1,))
    np.testing.assert_allclose(g[0, :, :, 0], [[-1, 0, 1], [-1, 0, 1]])
    np.testing.assert_allclose(g[0, :, :, 1], [[-1, -1, -1], [1, 1, 1]])
    g = run("affine_grid", [theta, size], {"align_corners": False}, const=(1,))
    np.testing.assert_allclose(g[0, 0, :, 0], [-2 / 3, 0, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(g[0, :, 0, 1], [-0.5, 0.5], rtol=1e-6)
    # a translation shifts every point
    theta2 = np.array([[[1, 0, 0.25], [0, 1, -0.5]]], np.float32)
    g2 = run("affine_grid", [theta2, size], {"align_corners": False}, const=(1,))
    np.testing.assert_allclose(g2 - g, np.broadcast_to([0.25, -0.5], g.shape), atol=1e-6)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("spatial", [(4, 5), (3, 4, 5)])
def test_grid_sample_identity_grid_returns_input(mode, align, spatial):
    r = len(spatial)
    x = rng.standard_normal((2, 3) + spatial).astype(np.float32)
    theta = np.tile(np.eye(r, r + 1, dtype=np.float32), (2, 1, 1))
    size = np.array((2, 3) + spatial, np.int64)
    grid = run("affine_grid", [theta, size], {"align_corners": align}, const=(1,))
    y = run("grid_sample", [x, grid], {"mode": mode, "align_corners": align})
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)


def _sample(x, gx, gy, **attrs):
    grid = np.array([[[[gx, gy]]]], np.float32)
    return run("grid_sample", [x, grid], attrs)[0, 0, 0, 0]


def test_grid_sample_points_by_hand():
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 3, 2)  # [[0, 1], [2, 3], [4, 5]]
    # align_corners: (-1, -1) is pixel (0, 0); (0, 0) the middle: row 1, column 0.5
    assert _sample(x, 0.0, 0.0, align_corners=True) == pytest.approx(2.5)
    # without align_corners, x = -1 is the left edge of pixel 0: half of it lies in the zero padding
    assert _sample(x, -1.0, 0.0) == pytest.approx(1.0)
    assert _sample(x, -1.0, 0.0, padding_mode="border") == pytest.approx(2.0)
    # far outside: border clamps to the corner, zeros gives 0
    assert _sample(x, 5.0, 5.0, padding_mode="border") == pytest.approx(5.0)
    assert _sample(x, 5.0, 5.0) == 0.0
    # reflection about the edges at -0.5 and 1.5 (width 2): x = 2.5 maps to 0.5, y stays 1
    assert _sample(x, 2.0, 0.0, padding_mode="reflection") == pytest.approx(2.5)
    assert _sample(x, 0.1, 0.0, mode="nearest") == 3.0


def test_grid_sample_inference_and_errors():
    x = TensorType(("n", 3, 8, 8), F32)
    t = infer("grid_sample", [x, TensorType(("n", 5, 6, 2), F32)])
    assert t.shape == ("n", 3, 5, 6)
    with pytest.raises(ShapeError, match="grid_sample") as e:
        infer("grid_sample", [x, TensorType(("n", 5, 6, 3), F32)])
    assert "last dim" in str(e.value)
    with pytest.raises(ShapeError, match="padding_mode"):
        infer("grid_sample", [x, TensorType(("n", 5, 6, 2), F32)], {"padding_mode": "wrap"})


def test_affine_grid_inference_and_errors():
    th = TensorType((4, 2, 3), F32)
    t = infer("affine_grid", [th, np.array([4, 3, 5, 6], np.int64)], const=(1,))
    assert t.shape == (4, 5, 6, 2)
    t = infer("affine_grid", [th, TensorType((4,), I64)])
    assert t.shape[0] == 4 and t.shape[-1] == 2 and len(t.shape) == 4
    with pytest.raises(ShapeError, match="affine_grid"):
        infer("affine_grid", [TensorType((4, 2, 4), F32), TensorType((4,), I64)])
    with pytest.raises(ShapeError, match="spatial rank"):
        infer("affine_grid", [th, TensorType((5,), I64)])


# ---- roi_align -------------------------------------------------------------------------------
def test_roi_align_on_a_ramp():
    # on X[y, x] = x + 1 bilinear sampling is exact, so avg pooling gives the mean sample x + 1
    x = np.tile(np.arange(8, dtype=np.float32) + 1, (1, 1, 8, 1))
    rois = np.array([[0, 0, 4, 4], [0, 0, 2, 2]], np.float32)
    bi = np.array([0, 0], np.int64)
    attrs = dict(output_height=2, output_width=2, sampling_ratio=2)
    y = run("roi_align", [x, rois, bi], dict(attrs, coordinate_transformation_mode="half_pixel"))
    # half_pixel: samples at x = 0, 1 | 2, 3 for the first roi
    np.testing.assert_allclose(y[0, 0], [[1.5, 3.5], [1.5, 3.5]], rtol=1e-6)
    y = run("roi_align", [x, rois, bi], dict(attrs, coordinate_transformation_mode="output_half_pixel"))
    np.testing.assert_allclose(y[0, 0], [[2.0, 4.0], [2.0, 4.0]], rtol=1e-6)


def test_roi_align_max_pools_weighted_corners():
    x = np.tile(np.arange(4, dtype=np.float32) + 1, (1, 1, 4, 1))
    rois = np.array([[0, 0, 2, 2]], np.float32)
    y = run("roi_align", [x, rois, np.zeros(1, np.int64)],
            dict(output_height=1, output_width=1, sampling_ratio=2, mode="max",
                 coordinate_transformation_mode="output_half_pixel"))
    # samples at 0.5 and 1.5: the largest weighted corner is 0.25 * X[., 2] = 0.75
    np.testing.assert_allclose(y.ravel(), [0.75], rtol=1e-6)
    y = run("roi_align", [x, rois, np.zeros(1, np.int64)],
            dict(output_height=1, output_width=1, sampling_ratio=2,
                 coordinate_transformation_mode="output_half_pixel"))
    np.testing.assert_allclose(y.ravel(), [2.0], rtol=1e-6)


def test_roi_align_picks_the_batch_and_infers():
    x = np.stack([np.full((2, 6, 6), 1.0), np.full((2, 6, 6), 5.0)]).astype(np.float32)
    y = run("roi_align", [x, np.array([[1, 1, 3, 3]] * 2, np.float32), np.array([1, 0], np.int64)],
            dict(output_height=3, output_width=2))
    assert y.shape == (2, 2, 3, 2)
    np.testing.assert_allclose(y[0], 5.0)
    np.testing.assert_allclose(y[1], 1.0)
    with pytest.raises(ShapeError, match="roi_align"):
        infer("roi_align", [TensorType((1, 2, 6, 6), F32), TensorType((3, 5), F32), TensorType((3,), I64)])


# ---- non_max_suppression --------------------------------------------------------------------
BOXES = np.array([[[0.0, 0.0, 1.0, 1.0], [0.0, 0.1, 1.0, 1.1], [0.0, -0.1, 1.0, 0.9],
                   [0.0, 10.0, 1.0, 11.0], [0.0, 10.1, 1.0, 11.1], [0.0, 100.0, 1.0, 101.0]]], np.float32)
SCORES = np.array([[[0.9, 0.75, 0.6, 0.95, 0.5, 0.3]]], np.float32)


def nms(boxes, scores, max_out, iou, score=None, **attrs):
    ins = [boxes, scores, np.array([max_out], np.int64), np.array([iou], np.float32)]
    if score is not None:
        ins.append(np.array([score], np.float32))
    return run("non_max_suppression", ins, attrs)


def test_nms_by_hand():
    # boxes 1 and 2 overlap box 0 with IoU 0.82; box 4 overlaps box 3
    np.testing.assert_array_equal(nms(BOXES, SCORES, 3, 0.5), [[0, 0, 3], [0, 0, 0], [0, 0, 5]])
    np.testing.assert_array_equal(nms(BOXES, SCORES, 2, 0.5), [[0, 0, 3], [0, 0, 0]])
    np.testing.assert_array_equal(nms(BOXES, SCORES, 3, 0.5, score=0.4), [[0, 0, 3], [0, 0, 0]])
    # a high IoU threshold suppresses nothing; the order is by score
    np.testing.assert_array_equal(nms(BOXES, SCORES, 10, 0.9)[:, 2], [3, 0, 1, 2, 4, 5])
    assert nms(BOXES, SCORES, 0, 0.5).shape == (0, 3)


def test_nms_center_format_and_batches():
    y0, x0, y1, x1 = (BOXES[..., i] for i in range(4))
    centers = np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)
    np.testing.assert_array_equal(nms(centers, SCORES, 3, 0.5, center_point_box=1),
                                  nms(BOXES, SCORES, 3, 0.5))
    two = nms(np.concatenate([BOXES, BOXES]), np.concatenate([SCORES, SCORES[:, :, ::-1]]), 1, 0.5)
    np.testing.assert_array_equal(two, [[0, 0, 3], [1, 0, 2]])  # reversed scores: box 2 is best


def test_nms_inference_and_errors():
    t = infer("non_max_suppression", [TensorType((1, 6, 4), F32), TensorType((1, 2, 6), F32)])
    assert t.dtype is I64 and t.shape[1] == 3 and not is_static_dim(t.shape[0])
    with pytest.raises(ShapeError, match="non_max_suppression"):
        infer("non_max_suppression", [TensorType((1, 6, 4), F32), TensorType((1, 2, 5), F32)])


# ---- ONNX import ------------------------------------------------------------------------------
def _onnx_run(node, inputs, opset, out_type=TensorProto.FLOAT):
    ins = [value_info(n, a.dtype, a.shape) for n, a in zip(node.input, inputs)]
    model = onnx_model(node, ins, [value_info(node.output[0], out_type)], opset)
    return backend.prepare(model).run(inputs)[0]


def test_onnx_upsample_and_old_resize():
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    want = np.repeat(np.repeat(x, 2, axis=2), 3, axis=3)
    up7 = helper.make_node("Upsample", ["x"], ["y"], mode="nearest", scales=[1.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(_onnx_run(up7, [x], 7), want)
    s = np.array([1, 1, 2, 3], np.float32)
    r10 = helper.make_node("Resize", ["x", "s"], ["y"], mode="nearest")
    np.testing.assert_array_equal(_onnx_run(r10, [x, s], 10), want)


def test_onnx_grid_sample_16_names_and_roi_align_10():
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    grid = rng.uniform(-1, 1, (1, 3, 3, 2)).astype(np.float32)
    old = helper.make_node("GridSample", ["x", "g"], ["y"], mode="bicubic")
    new = helper.make_node("GridSample", ["x", "g"], ["y"], mode="cubic")
    np.testing.assert_allclose(_onnx_run(old, [x, grid], 16), _onnx_run(new, [x, grid], 20), rtol=1e-6)
    rois = np.array([[0, 0, 2, 2]], np.float32)
    ra = helper.make_node("RoiAlign", ["x", "r", "b"], ["y"], output_height=1, output_width=1, sampling_ratio=2)
    got = _onnx_run(ra, [x, rois, np.zeros(1, np.int64)], 10)
    want = run("roi_align", [x, rois, np.zeros(1, np.int64)],
               dict(output_height=1, output_width=1, sampling_ratio=2,
                    coordinate_transformation_mode="output_half_pixel"))
    np.testing.assert_allclose(got, want)
    assert onnx.defs.onnx_opset_version() >= 20
