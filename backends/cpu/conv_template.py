"""The direct convolutions (conv_direct_oc.py, conv_direct.py) as a CPU template: which one to
use, the kernel-IR call lowering emits, and what codegen needs to rebuild the kernel.

Lowering (backends/lower_contract.py ``rule_conv``) asks ``choose(...)`` for a kernel; when it
gets one, the conv becomes ``ExternCall("conv2d", [x, packed W, bias, out, ws], attrs)`` with the
weights packed at compile time and the bias applied in the kernel's epilogue. An elementwise
epilogue the lowering stores over the conv's output right after it (relu, a residual add …) is
folded into the same call by ``conv_epilogue.fuse`` at code generation.

Measured on ResNet-18's layers (1 thread, Zen 5; GEMM = im2col + packed GEMM + transpose):

    layer (out)          GEMM      rows kernel   channel kernel   onnxruntime
    7x7/2 stem (112)     2.61 ms   1.15 ms       1.14-1.17 ms     0.99 ms
    3x3 at 56            1.30      1.02-1.10     0.99-1.01        0.93
    3x3 at 28            1.10      1.06-1.13     0.99-1.02        0.94
    3x3 at 14            1.07      1.23-1.57     0.98-1.02        0.99
    3x3 at 7             1.22      4.4           1.16-1.18        1.30
    1x1/2                0.08      0.10          -                0.07

The channel-vectorized kernel is used when at most 35 % of what it computes is dropped (row
tails, channels past M), else the row-vectorized one when at most 12 % is, else the GEMM; 1x1
convs keep the GEMM (there is no im2col to save).
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt

from .conv_direct import ConvGeometry, DirectConv, DirectConvConfig
from .conv_direct_oc import DirectConvOC, OcTile, tile_for
from .extern_operands import copy_back, dense_input, dense_output
from .gemm import Epilogue

# the fraction of computed outputs that are kept (row tails, the last channel block; for the
# row-vectorized kernel also the padding columns) below which the next formulation is tried:
# channel-vectorized direct, then row-vectorized direct, then im2col + GEMM
# 0.65: a channel count that is not a multiple of the vector width (a channel-pruned layer: 11 or
# 22 of 16/32 lanes, lane use 0.69) still runs faster here than im2col + GEMM on small images:
# the channels:0.3-pruned digits CNN went from 0.66x to 1.31x of the unpruned model's speed at
# batch 360 (`python benchmarks/bench_prune_digits.py`); ResNet-18's convs all have lane use 1.0.
MIN_LANE_USE_OC = 0.65
MIN_LANE_USE = 0.88
ATTRS = ("n", "c", "h", "w", "m", "kh", "kw", "oh", "ow", "sh", "sw", "dh", "dw", "pt", "pl")


def geometry(x_shape, w_shape, plan) -> ConvGeometry | None:
    if len(x_shape) != 4 or len(w_shape) != 4:
        return None
    (sh, sw), (dh, dw) = plan.strides, plan.dilations
    if sw not in (1, 2) or sh not in (1, 2):
        return None
    return ConvGeometry(n=x_shape[0], c=x_shape[1], h=x_shape[2], w=x_shape[3], m=w_shape[0],
                        kh=w_shape[2], kw=w_shape[3], oh=plan.out[0], ow=plan.out[1], sh=sh, sw=sw,
                        dh=dh, dw=dw, pt=plan.pads_begin[0], pl=plan.pads_begin[1])


def lane_use(k: DirectConv) -> float:
    g, cfg = k.geom, k.config
    return (g.ow / g.wq) * (g.q / (k.qtiles * cfg.tq)) * (g.m / (k.mblocks * cfg.mr))


def choose(x_shape, w_shape, plan, num_threads: int, config: DirectConvConfig | None = None):
    """The direct kernel (DirectConvOC or DirectConv) for this conv when it should beat im2col +
    GEMM, else None."""
    if min(x_shape) < 1 or min(w_shape) < 1:
        return None
    g = geometry(x_shape, w_shape, plan)
    if g is None or g.kh * g.kw == 1:
        return None
    cfg = config or DirectConvConfig.for_host()
    if config is None:
        oc = DirectConvOC(g, tile_for(g, cfg.lanes), parallel=num_threads > 1, max_threads=num_threads)
        if oc.lane_use() >= MIN_LANE_USE_OC:
            return oc
    k = DirectConv(g, cfg, parallel=num_threads > 1, max_threads=num_threads)
    if lane_use(k) < MIN_LANE_USE:
        return None
    return k


def lower(ctx, k, x, w, bias, dest) -> None:
    """Append the ExternCall computing ``dest = conv(x, w) + bias`` (bias may be None)."""
    from ..kernel_ir import ExternCall
    xv = dense_input(ctx, x)
    wpk = ctx.const(k.pack_weights(w.to_numpy()), w.buf.name + "_direct")
    bv = None if bias is None else dense_input(ctx, bias)
    out = dense_output(ctx, dest, "convout")
    ws = ctx.buffer("conv_ws", dt.uint8, (k.workspace_bytes(getattr(k, "max_threads", 1)),), "temp")
    g = k.geom
    attrs = {a: getattr(g, a) for a in ATTRS}
    if isinstance(k, DirectConvOC):
        t = k.tile
        attrs.update(kind="oc", r=t.r, rw=t.rw, nv=t.nv, lanes=t.lanes,
                     max_threads=k.max_threads)
    else:
        attrs.update(kind="rows", mr=k.config.mr, nv=k.config.nv, mb_inner=k.config.mb_inner,
                     lanes=k.config.lanes, max_threads=k.max_threads)
    attrs.update(x_off=xv.offset, w_off=wpk.offset, bias_off=None if bv is None else bv.offset,
                 out_off=out.offset)
    args = [xv.buf, wpk.buf, None if bv is None else bv.buf, out.buf, ws]
    ctx.body.append(ExternCall("conv2d", args, attrs))
    copy_back(ctx, out, dest)


def kernel_from_attrs(a: dict, num_threads: int, epilogue: Epilogue | None = None,
                      residual: bool = False):
    g = ConvGeometry(**{k: int(a[k]) for k in ATTRS})
    if a["kind"] == "oc":
        t = OcTile(lanes=int(a["lanes"]), r=int(a["r"]), rw=int(a["rw"]), nv=int(a["nv"]))
        return DirectConvOC(g, t, epilogue or Epilogue(), has_bias=a["bias_off"] is not None,
                            has_residual=residual, parallel=num_threads > 1,
                            max_threads=int(a["max_threads"]))
    cfg = DirectConvConfig(lanes=int(a["lanes"]), mr=int(a["mr"]), nv=int(a["nv"]),
                           mb_inner=bool(a["mb_inner"]))
    return DirectConv(g, cfg, epilogue or Epilogue(), has_bias=a["bias_off"] is not None,
                      has_residual=residual, parallel=num_threads > 1, max_threads=int(a["max_threads"]))


def packed_weights_reference(k, w: np.ndarray) -> np.ndarray:
    """For tests: the weights back from their packed form."""
    g, mr = k.geom, (k.tile.oc if isinstance(k, DirectConvOC) else k.config.mr)
    wp = np.asarray(w).reshape(k.mblocks, g.c, g.kh, g.kw, mr).transpose(0, 4, 1, 2, 3)
    return wp.reshape(k.mblocks * mr, g.c, g.kh, g.kw)[:g.m]
