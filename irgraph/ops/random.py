"""Random ops: random_uniform, random_normal, bernoulli, multinomial.

Each is marked ``random=True`` so that nothing evaluates it at compile time. With the ``seed``
attribute set, every run draws the same values (numpy's ``RandomState(int(seed))``, as ONNX's
reference runtime seeds it); without it, every run draws fresh ones.
"""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from ..types import is_static_dim
from .declare import FLOAT_TYPES
from .registry import Attr, OpDef, register
from .shapes import check_dtype, out


def _rng(seed: float | None) -> np.random.RandomState:
    if seed is None or np.isnan(seed):
        return np.random.RandomState()
    return np.random.RandomState(int(seed) % 2 ** 32)


def _float_dtype(ctx, dtype):
    if dtype not in FLOAT_TYPES:
        ctx.fail("random values are drawn in a float dtype",
                 expected=" | ".join(d.name for d in FLOAT_TYPES), actual=dtype.name)
    return dtype


def _shape_infer(ctx):
    """Output shape from the int64 ``shape`` input: exact when known, symbolic otherwise."""
    t = check_dtype(ctx, 0, (dt.int64,), "shape")
    if t.shape is not None and t.rank != 1:
        ctx.fail("shape must be a 1-D int64 tensor", input=0, actual=t)
    odt = _float_dtype(ctx, ctx.attrs["dtype"])
    v = ctx.const(0)
    if v is not None:
        v = [int(d) for d in np.asarray(v).ravel()]
        if any(d < 0 for d in v):
            ctx.fail("shape entries must be non-negative", input=0, actual=tuple(v))
        return [out(v, odt)]
    if t.shape is None or not is_static_dim(t.shape[0]):
        return [out(None, odt)]
    return [out(tuple(ctx.fresh("rand") for _ in range(t.shape[0])), odt)]


def _shape_of(ins) -> tuple:
    return tuple(int(d) for d in np.asarray(ins[0]).ravel())


def _register_sampler(name: str, method: str, params: tuple[str, str], defaults: tuple[float, float],
                      doc: str) -> None:
    """An op drawing a tensor of the given shape from ``RandomState.<method>(p0, p1, shape)``."""
    p0, p1 = params

    def reference(ins, a):
        draw = getattr(_rng(a["seed"]), method)
        return draw(a[p0], a[p1], _shape_of(ins)).astype(a["dtype"].np)

    register(OpDef(
        name, infer=_shape_infer, reference=reference, inputs=(1, 1), kind="random", random=True,
        differentiable=False,
        attrs={p0: Attr("float", defaults[0]), p1: Attr("float", defaults[1]),
               "dtype": Attr("dtype", dt.float32), "seed": Attr("float", None)},
        doc=doc,
    ))


_register_sampler("random_uniform", "uniform", ("low", "high"), (0.0, 1.0),
                  "random_uniform(shape): values drawn uniformly from [low, high)")
_register_sampler("random_normal", "normal", ("mean", "scale"), (0.0, 1.0),
                  "random_normal(shape): values drawn from a normal distribution N(mean, scale^2)")


# ---- bernoulli -----------------------------------------------------------------------------
_BERNOULLI_OUT = FLOAT_TYPES + (dt.int8, dt.int16, dt.int32, dt.int64, dt.uint8, dt.uint16, dt.uint32,
                                dt.uint64, dt.bool_)


def _bernoulli_infer(ctx):
    x = check_dtype(ctx, 0, FLOAT_TYPES, "probabilities")
    odt = ctx.attrs["dtype"] or x.dtype
    if odt not in _BERNOULLI_OUT:
        ctx.fail("unsupported output dtype", expected="a numeric or bool dtype", actual=odt.name)
    return [out(x.shape, odt)]


def _bernoulli_ref(ins, a):
    x = ins[0]
    odt = (a["dtype"] or dt.DType.from_numpy(x.dtype)).np
    p = np.clip(x.astype(np.float64), 0.0, 1.0)
    return _rng(a["seed"]).binomial(1, p).astype(odt).reshape(x.shape)


register(OpDef(
    "bernoulli", infer=_bernoulli_infer, reference=_bernoulli_ref, inputs=(1, 1), kind="random",
    random=True, differentiable=False,
    attrs={"dtype": Attr("dtype", None, "output dtype; the input's by default"), "seed": Attr("float", None)},
    doc="bernoulli(p): 1 with probability p, else 0, elementwise",
))


# ---- multinomial ---------------------------------------------------------------------------
def _multinomial_infer(ctx):
    x = check_dtype(ctx, 0, FLOAT_TYPES, "logits")
    odt = ctx.attrs["dtype"]
    if odt not in (dt.int32, dt.int64):
        ctx.fail("output dtype must be int32 or int64", expected="int32 | int64", actual=odt.name)
    n = ctx.attrs["sample_size"]
    if n < 1:
        ctx.fail("sample_size must be positive", actual=n)
    if x.shape is not None and x.rank != 2:
        ctx.fail("input must be [batch, classes] unnormalized log-probabilities", input=0, actual=x)
    batch = x.shape[0] if x.shape is not None else ctx.fresh("batch")
    return [out((batch, n), odt)]


def _multinomial_ref(ins, a):
    x = ins[0].astype(np.float64)
    batch, classes = x.shape
    p = np.exp(x - x.max(axis=1, keepdims=True))
    cdf = np.cumsum(p, axis=1)
    u = _rng(a["seed"]).uniform(0.0, 1.0, (batch, a["sample_size"])) * cdf[:, -1:]
    # the sampled class is the first whose cumulative weight exceeds the draw
    idx = (u[:, :, None] >= cdf[:, None, :]).sum(axis=-1)
    return np.minimum(idx, classes - 1).astype(a["dtype"].np)


register(OpDef(
    "multinomial", infer=_multinomial_infer, reference=_multinomial_ref, inputs=(1, 1),
    kind="random", random=True, differentiable=False,
    attrs={"dtype": Attr("dtype", dt.int32), "sample_size": Attr("int", 1), "seed": Attr("float", None)},
    doc="multinomial(logits[batch, classes]) -> [batch, sample_size] class indices",
))
