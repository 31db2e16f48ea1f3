"""ONNX converters for the pools: MaxPool, AveragePool, LpPool, Global{Average,Max,Lp}Pool,
MaxUnpool, MaxRoiPool. ``auto_pad`` is resolved as for the convolutions (see ``conv.py``).
"""
from __future__ import annotations

from .conv import geometry, resolve_auto_pad, spatial
from .registry import converter


def _pool_attrs(ctx) -> dict:
    attrs = geometry(ctx)
    attrs["kernel_shape"] = [int(k) for k in ctx.attr("kernel_shape")]
    attrs["ceil_mode"] = bool(ctx.attr("ceil_mode", 0))
    return resolve_auto_pad(ctx, attrs, spatial(ctx.input(0)), attrs["kernel_shape"], attrs["ceil_mode"])


@converter("MaxPool")
def max_pool(ctx):
    attrs = _pool_attrs(ctx)
    attrs["storage_order"] = ctx.attr("storage_order", 0)
    if ctx.output_wanted(1):
        attrs["indices"] = True
        return ctx.op("max_pool", [ctx.input(0)], attrs, num_outputs=2)
    return ctx.op("max_pool", [ctx.input(0)], attrs)


@converter("AveragePool")
def avg_pool(ctx):
    attrs = _pool_attrs(ctx)
    attrs["count_include_pad"] = bool(ctx.attr("count_include_pad", 0))
    return ctx.op("avg_pool", [ctx.input(0)], attrs)


@converter("LpPool")
def lp_pool(ctx):
    attrs = _pool_attrs(ctx)
    attrs["p"] = float(ctx.attr("p", 2))
    return ctx.op("lp_pool", [ctx.input(0)], attrs)


@converter("GlobalAveragePool")
def global_average_pool(ctx):
    return ctx.op("global_pool", [ctx.input(0)], {"mode": "avg"})


@converter("GlobalMaxPool")
def global_max_pool(ctx):
    return ctx.op("global_pool", [ctx.input(0)], {"mode": "max"})


@converter("GlobalLpPool")
def global_lp_pool(ctx):
    return ctx.op("global_pool", [ctx.input(0)], {"mode": "lp", "p": float(ctx.attr("p", 2))})


@converter("MaxUnpool")
def max_unpool(ctx):
    attrs = {"kernel_shape": [int(k) for k in ctx.attr("kernel_shape")]}
    for k in ("strides", "pads"):
        if ctx.has_attr(k):
            attrs[k] = [int(v) for v in ctx.attr(k)]
    return ctx.op("max_unpool", [ctx.input(i) for i in range(ctx.num_inputs)], attrs)


@converter("MaxRoiPool")
def max_roi_pool(ctx):
    return ctx.op("max_roi_pool", [ctx.input(0), ctx.input(1)],
                  {"pooled_shape": [int(v) for v in ctx.attr("pooled_shape")],
                   "spatial_scale": ctx.attr("spatial_scale", 1.0)})
