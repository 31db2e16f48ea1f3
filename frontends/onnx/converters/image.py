"""ONNX converters for the image family: Resize, Upsample, GridSample, AffineGrid, RoiAlign,
NonMaxSuppression."""
from __future__ import annotations

import numpy as np

from .registry import converter

_RESIZE_ATTRS = ("mode", "coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a",
                 "exclude_outside", "extrapolation_value", "antialias", "axes",
                 "keep_aspect_ratio_policy")


def _interp_mode(ctx) -> str:
    mode = ctx.attr("mode", "nearest").lower()
    return "linear" if mode == "bilinear" else mode


def _asymmetric_resize(ctx, scales):
    """Resize-10 and Upsample: output = floor(input * scale), source = output / scale."""
    return ctx.op("resize", [ctx.input(0), None, scales],
                  {"mode": _interp_mode(ctx), "coordinate_transformation_mode": "asymmetric",
                   "nearest_mode": "floor"})


@converter("Upsample", since=1)
def upsample_1(ctx):
    # opset 1-6: only NCHW with height_scale/width_scale attributes
    scales = [1.0, 1.0, ctx.attr("height_scale"), ctx.attr("width_scale")]
    return _asymmetric_resize(ctx, ctx.constant(np.array(scales, np.float32)))


@converter("Upsample", since=7)
def upsample_7(ctx):
    return _asymmetric_resize(ctx, ctx.constant(np.array(ctx.attr("scales"), np.float32)))


@converter("Upsample", since=9)
def upsample_9(ctx):
    return _asymmetric_resize(ctx, ctx.input(1))


@converter("Resize", since=10)
def resize_10(ctx):
    return _asymmetric_resize(ctx, ctx.input(1))


@converter("Resize", since=11)
def resize(ctx):
    attrs = {k: ctx.attr(k) for k in _RESIZE_ATTRS if ctx.has_attr(k)}
    return ctx.op("resize", [ctx.input(i) for i in range(min(ctx.num_inputs, 4))], attrs)


_GRID_MODES = {"bilinear": "linear", "bicubic": "cubic"}


@converter("GridSample", since=16)
def grid_sample(ctx):
    # opset 16 says bilinear/bicubic, opset 20 linear/cubic (and allows N-D)
    default = "bilinear" if ctx.opset < 20 else "linear"
    mode = ctx.attr("mode", default)
    return ctx.op("grid_sample", [ctx.input(0), ctx.input(1)],
                  {"mode": _GRID_MODES.get(mode, mode),
                   "padding_mode": ctx.attr("padding_mode", "zeros"),
                   "align_corners": ctx.attr("align_corners", 0)})


@converter("AffineGrid", since=20)
def affine_grid(ctx):
    return ctx.op("affine_grid", [ctx.input(0), ctx.input(1)],
                  {"align_corners": ctx.attr("align_corners", 0)})


def _roi_align(ctx, ctm: str):
    attrs = {k: ctx.attr(k) for k in ("mode", "output_height", "output_width", "sampling_ratio",
                                       "spatial_scale") if ctx.has_attr(k)}
    attrs["coordinate_transformation_mode"] = ctm
    return ctx.op("roi_align", [ctx.input(0), ctx.input(1), ctx.input(2)], attrs)


@converter("RoiAlign", since=10)
def roi_align_10(ctx):
    # before opset 16 RoiAlign did not shift by half a pixel
    return _roi_align(ctx, "output_half_pixel")


@converter("RoiAlign", since=16)
def roi_align(ctx):
    return _roi_align(ctx, ctx.attr("coordinate_transformation_mode", "half_pixel"))


@converter("NonMaxSuppression", since=10)
def non_max_suppression(ctx):
    return ctx.op("non_max_suppression", [ctx.input(i) for i in range(min(ctx.num_inputs, 5))],
                  {"center_point_box": ctx.attr("center_point_box", 0)})


@converter("ImageDecoder", since=20)
def image_decoder(ctx):
    return ctx.op("image_decoder", [ctx.input(0)], {"pixel_format": ctx.attr("pixel_format", "RGB")})
