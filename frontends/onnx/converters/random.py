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


# each distribution's two parameters, named alike in ONNX and the core op, and their defaults
_PARAMS = {"random_uniform": (("low", 0.0), ("high", 1.0)),
           "random_normal": (("mean", 0.0), ("scale", 1.0))}


def _sampler_attrs(ctx, op: str, default_dtype: DType) -> dict:
    """The distribution's parameters, dtype and seed."""
    (p0, d0), (p1, d1) = _PARAMS[op]
    return {p0: ctx.attr(p0, d0), p1: ctx.attr(p1, d1), "dtype": _dtype(ctx, default_dtype), **_seed(ctx)}


def _from_shape_attr(op: str):
    """RandomUniform / RandomNormal: the shape is an attribute, the dtype float32 by default."""
    def convert(ctx):
        shape = ctx.constant(np.array(ctx.attr("shape"), np.int64))
        return ctx.op(op, [shape], _sampler_attrs(ctx, op, _float32()))
    return convert


def _like(op: str):
    """Random*Like: the shape (and by default the dtype) of the input."""
    def convert(ctx):
        x = ctx.input(0)
        return ctx.op(op, [ctx.op("shape", [x])], _sampler_attrs(ctx, op, x.dtype))
    return convert


converter("RandomUniform", since=1)(_from_shape_attr("random_uniform"))
converter("RandomNormal", since=1)(_from_shape_attr("random_normal"))
converter("RandomUniformLike", since=1)(_like("random_uniform"))
converter("RandomNormalLike", since=1)(_like("random_normal"))


@converter("Bernoulli", since=15)
def bernoulli(ctx):
    x = ctx.input(0)
    return ctx.op("bernoulli", [x], {"dtype": _dtype(ctx, x.dtype), **_seed(ctx)})


@converter("Multinomial", since=7)
def multinomial(ctx):
    return ctx.op("multinomial", [ctx.input(0)],
                  {"dtype": _dtype(ctx, DType.from_name("int32")),
                   "sample_size": ctx.attr("sample_size", 1), **_seed(ctx)})
