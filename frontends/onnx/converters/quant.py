"""ONNX converters for the quantization operators.

QuantizeLinear/DequantizeLinear map onto their core ops one to one. The QLinear* operators
become an integer contraction (``matmul_integer`` / ``conv_integer``) followed by
``requantize`` with the multiplier ``in_scale * w_scale / out_scale`` computed in the graph in
the scales' dtype, so a later pass sees the same integer kernel and epilogue as for QDQ models.
"""
from __future__ import annotations

import numpy as np

from irgraph.dtype import DType

from .registry import converter


def _dtype_attr(ctx, name: str):
    code = ctx.attr(name, 0)
    return DType.from_onnx(code) if code else None


@converter("QuantizeLinear", since=10)
def quantize_linear(ctx):
    attrs = {
        "axis": ctx.attr("axis", 1),
        "block_size": ctx.attr("block_size", 0),
        "saturate": ctx.attr("saturate", 1),
        "dtype": _dtype_attr(ctx, "output_dtype"),
        "precision": _dtype_attr(ctx, "precision"),
    }
    return ctx.op("quantize_linear", [ctx.input(0), ctx.input(1), ctx.input(2)], attrs)


@converter("DequantizeLinear", since=10)
def dequantize_linear(ctx):
    attrs = {
        "axis": ctx.attr("axis", 1),
        "block_size": ctx.attr("block_size", 0),
        "dtype": _dtype_attr(ctx, "output_dtype"),
    }
    return ctx.op("dequantize_linear", [ctx.input(0), ctx.input(1), ctx.input(2)], attrs)


@converter("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear(ctx):
    return ctx.op("dynamic_quantize_linear", [ctx.input(0)], num_outputs=3)


@converter("MatMulInteger", since=10)
def matmul_integer(ctx):
    return ctx.op("matmul_integer", [ctx.input(i) for i in range(4)])


def _conv_attrs(ctx):
    attrs = {"group": ctx.attr("group", 1), "auto_pad": ctx.attr("auto_pad", "NOTSET")}
    for k in ("strides", "pads", "dilations"):
        if ctx.has_attr(k):
            attrs[k] = tuple(ctx.attr(k))
    w = ctx.input(1) if ctx.op_type == "ConvInteger" else ctx.input(3)
    ks = ctx.attr("kernel_shape", None)
    if ks is not None and w.type.shape is not None:
        for got, want in zip(w.type.shape[2:], ks):
            if isinstance(got, int) and got != want:
                ctx.fail("kernel_shape does not match the weights", expected=tuple(ks),
                         actual=w.type.shape[2:])
    return attrs


@converter("ConvInteger", since=10)
def conv_integer(ctx):
    return ctx.op("conv_integer", [ctx.input(i) for i in range(4)], _conv_attrs(ctx))


def _multiplier(ctx, in_scale, w_scale, out_scale):
    return ctx.op("div", [ctx.op("mul", [in_scale, w_scale]), out_scale])


@converter("QLinearMatMul", since=10)
def qlinear_matmul(ctx):
    a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = (ctx.input(i) for i in range(8))
    acc = ctx.op("matmul_integer", [a, b, a_zp, b_zp])
    m = _multiplier(ctx, a_scale, b_scale, y_scale)
    return ctx.op("requantize", [acc, m, y_zp])


@converter("QLinearConv", since=10)
def qlinear_conv(ctx):
    x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp = (ctx.input(i) for i in range(8))
    bias = ctx.input(8)
    acc = ctx.op("conv_integer", [x, w, x_zp, w_zp], _conv_attrs(ctx))
    rank = acc.type.rank
    if rank is None:
        ctx.fail("QLinearConv needs inputs of known rank", input=0)
    per_channel = np.array([1, -1] + [1] * (rank - 2), dtype=np.int64)
    if bias is not None:
        b = ctx.op("reshape", [bias, ctx.constant(per_channel, name=f"{ctx.name}_bias_shape")])
        acc = ctx.op("add", [acc, b])
    m = _multiplier(ctx, x_scale, w_scale, y_scale)
    if m.type.rank == 1:  # per output channel weights: one multiplier per channel
        m = ctx.op("reshape", [m, ctx.constant(per_channel, name=f"{ctx.name}_scale_shape")])
    return ctx.op("requantize", [acc, m, y_zp])
