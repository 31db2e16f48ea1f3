"""ONNX converters for the convolutions: Conv, ConvTranspose, DeformConv, CausalConvWithState
(the pools are in ``pooling.py``, which shares the geometry helpers here).

``auto_pad`` is resolved into explicit pads here whenever the input's spatial dims (and the
kernel's) are static, so later layers mostly see explicit pads; otherwise it is passed on and
resolved when the graph runs.
"""
from __future__ import annotations

from irgraph.ops.conv import transpose_axis
from irgraph.ops.windows import AUTO_PADS, window_axis
from irgraph.types import is_static_dim

from .registry import converter


def geometry(ctx, names=("strides", "pads", "dilations")) -> dict:
    attrs = {}
    for name in names:
        v = ctx.attr(name, None)
        if v is not None:
            attrs[name] = [int(x) for x in v]
    ap = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    if ap not in AUTO_PADS:
        ctx.fail(f"unknown auto_pad {ap!r}", expected=" | ".join(AUTO_PADS), actual=ap)
    attrs["auto_pad"] = ap
    return attrs


def spatial(v, start: int = 2):
    """The value's spatial dims when all are static, else None."""
    shape = v.type.shape if v is not None else None
    if shape is None or not all(is_static_dim(d) for d in shape[start:]):
        return None
    return tuple(shape[start:])


def resolve_auto_pad(ctx, attrs: dict, sizes, kernel, ceil_mode: bool = False) -> dict:
    """Replace auto_pad by explicit pads when the geometry is static."""
    if attrs["auto_pad"] == "NOTSET" or sizes is None or kernel is None or len(sizes) != len(kernel):
        return attrs
    n = len(sizes)
    strides = attrs.get("strides") or [1] * n
    dil = attrs.get("dilations") or [1] * n
    if len(strides) != n or len(dil) != n:
        return attrs  # the core op's inference reports the mismatch
    begins, ends = [], []
    for i in range(n):
        pb, pe, _ = window_axis(sizes[i], kernel[i], strides[i], dil[i], 0, 0, attrs["auto_pad"],
                                ceil_mode, ctx.fail)
        begins.append(pb)
        ends.append(pe)
    attrs = dict(attrs)
    attrs["pads"] = begins + ends
    attrs["auto_pad"] = "NOTSET"
    return attrs


def check_kernel_shape(ctx, w, start: int = 2):
    ks = ctx.attr("kernel_shape", None)
    kernel = spatial(w, start)
    if ks is not None and kernel is not None and tuple(ks) != kernel:
        ctx.fail("kernel_shape disagrees with the weight's shape", input=1,
                 expected=tuple(ks), actual=kernel)


@converter("Conv")
def conv(ctx):
    x, w = ctx.input(0), ctx.input(1)
    check_kernel_shape(ctx, w)
    attrs = geometry(ctx)
    attrs["group"] = ctx.attr("group", 1)
    attrs = resolve_auto_pad(ctx, attrs, spatial(x), spatial(w))
    return ctx.op("conv", [x, w, ctx.input(2)], attrs)


@converter("ConvTranspose")
def conv_transpose(ctx):
    x, w = ctx.input(0), ctx.input(1)
    check_kernel_shape(ctx, w)
    attrs = geometry(ctx, ("strides", "pads", "dilations", "output_padding", "output_shape"))
    attrs["group"] = ctx.attr("group", 1)
    sizes, kernel = spatial(x), spatial(w)
    if ((attrs["auto_pad"] != "NOTSET" or "output_shape" in attrs) and sizes is not None
            and kernel is not None and len(sizes) == len(kernel)):
        n = len(sizes)
        per = {k: attrs.get(k) or [d] * n for k, d in (("strides", 1), ("dilations", 1), ("output_padding", 0))}
        oshape = attrs.get("output_shape")
        if oshape is not None:
            oshape = oshape[-n:]
        pads = attrs.get("pads") or [0] * (2 * n)
        if all(len(v) == n for v in per.values()) and len(pads) == 2 * n and (oshape is None or len(oshape) == n):
            res = [transpose_axis(sizes[i], kernel[i], per["strides"][i], per["dilations"][i], pads[i],
                                  pads[n + i], per["output_padding"][i], attrs["auto_pad"],
                                  None if oshape is None else oshape[i]) for i in range(n)]
            attrs["pads"] = [r[0] for r in res] + [r[1] for r in res]
            attrs["auto_pad"] = "NOTSET"
            attrs.pop("output_shape", None)
    return ctx.op("conv_transpose", [x, w, ctx.input(2)], attrs)


@converter("DeformConv")
def deform_conv(ctx):
    w = ctx.input(1)
    check_kernel_shape(ctx, w)
    attrs = {k: [int(v) for v in ctx.attr(k)] for k in ("strides", "pads", "dilations") if ctx.has_attr(k)}
    attrs["group"] = ctx.attr("group", 1)
    attrs["offset_group"] = ctx.attr("offset_group", 1)
    return ctx.op("deform_conv", [ctx.input(i) for i in range(ctx.num_inputs)], attrs)


@converter("CausalConvWithState")
def causal_conv_with_state(ctx):
    ins = [ctx.input(i) for i in range(ctx.num_inputs)]
    return ctx.op("causal_conv_with_state", ins, {"activation": ctx.attr("activation", "none")},
                  num_outputs=2)
