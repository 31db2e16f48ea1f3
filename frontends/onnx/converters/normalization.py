"""ONNX converters for the normalization family.

BatchNormalization, InstanceNormalization, GroupNormalization, LayerNormalization,
RMSNormalization and LRN map onto core ops of their own; MeanVarianceNormalization and
LpNormalization are composed from reductions and elementwise ops.
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt
from irgraph.dtype import DType
from irgraph.types import is_static_dim

from .registry import converter


def _num_outputs(ctx) -> int:
    """Outputs up to the last one the node names (empty trailing names are not wanted)."""
    n = ctx.num_outputs
    while n > 1 and not ctx.output_wanted(n - 1):
        n -= 1
    return n


def _as_list(res):
    return list(res) if isinstance(res, (tuple, list)) else [res]


def _stash(ctx) -> DType:
    return DType.from_onnx(ctx.attr("stash_type", 1))


# ---- BatchNormalization ---------------------------------------------------------------------
def _batch_norm(ctx, training: bool):
    ins = [ctx.input(i) for i in range(5)]
    eps = ctx.attr("epsilon", 1e-5)
    n = _num_outputs(ctx)
    if not training:
        if n > 1:
            ctx.fail("outputs after Y exist only in training mode", expected="1 output", actual=n,
                     hint="set training_mode=1 or drop the extra outputs")
        return ctx.op("batch_norm", ins, {"epsilon": eps})
    if ctx.attr("spatial", 1) == 0:
        ctx.fail("training with per-activation statistics (spatial=0) is not supported")
    res = _as_list(ctx.op("batch_norm_training", ins,
                          {"epsilon": eps, "momentum": ctx.attr("momentum", 0.9)}, num_outputs=n))
    return res


@converter("BatchNormalization", since=1)
def batch_norm_v1(ctx):
    # Opsets 1-6: is_test selects inference; training otherwise (when outputs beyond Y are asked for).
    return _batch_norm(ctx, training=not ctx.attr("is_test", 0) and _num_outputs(ctx) > 1)


@converter("BatchNormalization", since=7)
def batch_norm_v7(ctx):
    # Opsets 7-13: training mode is signalled by asking for the statistics outputs.
    return _batch_norm(ctx, training=_num_outputs(ctx) > 1)


@converter("BatchNormalization", since=14)
def batch_norm_v14(ctx):
    return _batch_norm(ctx, training=bool(ctx.attr("training_mode", 0)))


# ---- InstanceNormalization, GroupNormalization --------------------------------------------------
@converter("InstanceNormalization", since=1)
def instance_norm(ctx):
    return ctx.op("instance_norm", [ctx.input(0), ctx.input(1), ctx.input(2)],
                  {"epsilon": ctx.attr("epsilon", 1e-5)})


@converter("GroupNormalization", since=21)
def group_norm(ctx):
    return ctx.op("group_norm", [ctx.input(0), ctx.input(1), ctx.input(2)],
                  {"num_groups": ctx.attr("num_groups"), "epsilon": ctx.attr("epsilon", 1e-5),
                   "stash_type": _stash(ctx)})


@converter("GroupNormalization", since=18)
def group_norm_v18(ctx):
    # Opset 18 has one scale and bias per group; the core op takes one per channel.
    x = ctx.input(0)
    groups = ctx.attr("num_groups")
    c = x.shape[1] if x.shape is not None and len(x.shape) >= 2 else None
    if c is None or not is_static_dim(c):
        ctx.fail("GroupNormalization-18 needs a static channel count to spread its per-group "
                 "scale and bias over the channels", input=0)
    if groups < 1 or c % groups:
        ctx.fail(f"{c} channels do not split into {groups} groups", input=0)
    params = [_per_group_to_channel(ctx, i, groups, c // groups) for i in (1, 2)]
    stash = dt.float32 if x.dtype in (dt.float16, dt.bfloat16) else x.dtype
    return ctx.op("group_norm", [x] + params, {"num_groups": groups, "epsilon": ctx.attr("epsilon", 1e-5),
                                               "stash_type": stash})


def _per_group_to_channel(ctx, i: int, groups: int, per_group: int):
    v = ctx.input(i)
    known = ctx.const(i)
    if known is not None:
        return ctx.constant(np.repeat(np.asarray(known).reshape(-1), per_group), name=f"{ctx.name}_param{i}")
    col = ctx.op("reshape", [v, ctx.constant(np.array([groups, 1], np.int64), name=f"{ctx.name}_g1")])
    ones = ctx.constant(np.ones((1, per_group), v.dtype.np), name=f"{ctx.name}_ones")
    flat = ctx.constant(np.array([groups * per_group], np.int64), name=f"{ctx.name}_c")
    return ctx.op("reshape", [ctx.op("mul", [col, ones]), flat])


# ---- LayerNormalization, RMSNormalization -------------------------------------------------------
@converter("LayerNormalization", since=17)
def layer_norm(ctx):
    ins = [ctx.input(0), ctx.input(1)] + ([ctx.input(2)] if ctx.has_input(2) else [])
    return _as_list(ctx.op("layer_norm", ins, {"axis": ctx.attr("axis", -1),
                                               "epsilon": ctx.attr("epsilon", 1e-5),
                                               "stash_type": _stash(ctx)},
                           num_outputs=_num_outputs(ctx)))


@converter("RMSNormalization", since=23)
def rms_norm(ctx):
    return ctx.op("rms_norm", [ctx.input(0), ctx.input(1)],
                  {"axis": ctx.attr("axis", -1), "epsilon": ctx.attr("epsilon", 1e-5),
                   "stash_type": _stash(ctx)})


# ---- LRN ---------------------------------------------------------------------------------------
@converter("LRN", since=1)
def lrn(ctx):
    return ctx.op("lrn", [ctx.input(0)], {"size": ctx.attr("size"), "alpha": ctx.attr("alpha", 1e-4),
                                          "beta": ctx.attr("beta", 0.75), "bias": ctx.attr("bias", 1.0)})


# ---- MeanVarianceNormalization ------------------------------------------------------------------
def _mvn(ctx, axes, normalize_variance: bool = True):
    x = ctx.input(0)
    ax = ctx.constant(np.array(axes, dtype=np.int64), name=f"{ctx.name}_axes")
    d = ctx.op("sub", [x, ctx.op("reduce_mean", [x, ax], {"keepdims": 1})])
    if not normalize_variance:
        return d
    std = ctx.op("sqrt", [ctx.op("reduce_mean", [ctx.op("mul", [d, d]), ax], {"keepdims": 1})])
    eps = ctx.constant(np.array(1e-9, dtype=x.dtype.np), name=f"{ctx.name}_eps")
    return ctx.op("div", [d, ctx.op("add", [std, eps])])


@converter("MeanVarianceNormalization", since=9)
def mvn(ctx):
    return _mvn(ctx, ctx.attr("axes", [0, 2, 3]))


@converter("MeanVarianceNormalization", since=1)
def mvn_v1(ctx):
    axes = [0, 1, 2, 3] if ctx.attr("across_channels", 0) else [0, 2, 3]
    return _mvn(ctx, axes, bool(ctx.attr("normalize_variance", 1)))


# ---- LpNormalization ------------------------------------------------------------------------------
@converter("LpNormalization", since=1)
def lp_norm(ctx):
    x = ctx.input(0)
    p = ctx.attr("p", 2)
    ax = ctx.constant(np.array([ctx.attr("axis", -1)], dtype=np.int64), name=f"{ctx.name}_axes")
    if p == 2:
        norm = ctx.op("sqrt", [ctx.op("reduce_sum", [ctx.op("mul", [x, x]), ax], {"keepdims": 1})])
    elif p == 1:
        norm = ctx.op("reduce_sum", [ctx.op("abs", [x]), ax], {"keepdims": 1})
    else:
        ctx.fail("p must be 1 or 2", expected="1 or 2", actual=p)
    # a zero norm means a zero slice, whose normalized value is 0 (not 0/0)
    zero = ctx.constant(np.array(0, dtype=x.dtype.np), name=f"{ctx.name}_zero")
    one = ctx.constant(np.array(1, dtype=x.dtype.np), name=f"{ctx.name}_one")
    safe = ctx.op("where", [ctx.op("equal", [norm, zero]), one, norm])
    return ctx.op("div", [x, safe])
