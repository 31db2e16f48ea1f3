"""ONNX converters for the random family: RandomUniform(Like), RandomNormal(Like), Bernoulli,
Multinomial."""
from __future__ import annotations

import numpy as np

from irgraph.dtype import DType

from .registry import converter


def _seed(ctx) -> dict:
    return {"seed": ctx.attr("seed")} if ctx.has_attr("seed") else {}


def _dtype(ctx, default: DType) -> DType:
    code = ctx.attr("dtype", 0)
    return DType.from_onnx(code) if code else default


def _float32() -> DType:
    return DType.from_name("float32")


@converter("RandomUniform", since=1)
def random_uniform(ctx):
    shape = ctx.constant(np.array(ctx.attr("shape"), np.int64))
    return ctx.op("random_uniform", [shape], {"low": ctx.attr("low", 0.0), "high": ctx.attr("high", 1.0),
                                              "dtype": _dtype(ctx, _float32()), **_seed(ctx)})


@converter("RandomNormal", since=1)
def random_normal(ctx):
    shape = ctx.constant(np.array(ctx.attr("shape"), np.int64))
    return ctx.op("random_normal", [shape], {"mean": ctx.attr("mean", 0.0), "scale": ctx.attr("scale", 1.0),
                                             "dtype": _dtype(ctx, _float32()), **_seed(ctx)})


@converter("RandomUniformLike", since=1)
def random_uniform_like(ctx):
    x = ctx.input(0)
    return ctx.op("random_uniform", [ctx.op("shape", [x])],
                  {"low": ctx.attr("low", 0.0), "high": ctx.attr("high", 1.0),
                   "dtype": _dtype(ctx, x.dtype), **_seed(ctx)})


@converter("RandomNormalLike", since=1)
def random_normal_like(ctx):
    x = ctx.input(0)
    return ctx.op("random_normal", [ctx.op("shape", [x])],
                  {"mean": ctx.attr("mean", 0.0), "scale": ctx.attr("scale", 1.0),
                   "dtype": _dtype(ctx, x.dtype), **_seed(ctx)})


@converter("Bernoulli", since=15)
def bernoulli(ctx):
    x = ctx.input(0)
    return ctx.op("bernoulli", [x], {"dtype": _dtype(ctx, x.dtype), **_seed(ctx)})


@converter("Multinomial", since=7)
def multinomial(ctx):
    return ctx.op("multinomial", [ctx.input(0)],
                  {"dtype": _dtype(ctx, DType.from_name("int32")),
                   "sample_size": ctx.attr("sample_size", 1), **_seed(ctx)})
