"""Short ways to declare the common shapes of op: elementwise n-ary ops with broadcasting.

    elementwise("relu", 1, scalar=lambda b, x: b.max(x, b.const(0, x)),
                reference=lambda x: np.maximum(x, 0), dtypes=FLOAT_TYPES)

registers an op whose inference broadcasts its inputs, checks dtypes, and whose reference is
the given numpy function (or, when omitted, the scalar formula evaluated with numpy).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .. import dtype as dt
from ..dtype import DType
from .registry import OpDef, register
from .scalar import NumpyScalar
from .shapes import broadcast_shapes, out

FLOAT_TYPES = (dt.float16, dt.bfloat16, dt.float32, dt.float64)
SIGNED_INT_TYPES = (dt.int8, dt.int16, dt.int32, dt.int64)
UNSIGNED_INT_TYPES = (dt.uint8, dt.uint16, dt.uint32, dt.uint64)
INT_TYPES = SIGNED_INT_TYPES + UNSIGNED_INT_TYPES
NUMERIC_TYPES = FLOAT_TYPES + INT_TYPES
ALL_TYPES = NUMERIC_TYPES + (dt.bool_,)

_np_scalar = NumpyScalar()


def elementwise(name: str, nin: int, *, scalar: Callable | None = None,
                reference: Callable | None = None, dtypes: Sequence[DType] = FLOAT_TYPES,
                out_dtype: DType | Callable | None = None, attrs: dict | None = None,
                grad: Callable | None = None, differentiable: bool | None = None,
                same_dtype: bool = True, doc: str = "") -> OpDef:
    """Register an elementwise op of ``nin`` broadcast inputs.

    ``reference(*arrays, **attrs)`` and ``scalar(b, *values, **attrs)``; ``out_dtype`` is a fixed
    DType (comparisons give bool), a function of the input dtypes, or None for the first input's.
    """
    attrs = dict(attrs or {})

    def infer(ctx):
        types = ctx.types
        for i, t in enumerate(types):
            if t is None:
                ctx.fail("missing input", input=i)
            if t.dtype not in dtypes:
                ctx.fail("unsupported dtype", input=i,
                         expected="one of " + ", ".join(d.name for d in dtypes), actual=t.dtype.name)
            if same_dtype and t.dtype is not types[0].dtype:
                ctx.fail("inputs must share one dtype", input=i, expected=types[0].dtype.name,
                         actual=t.dtype.name)
        shape = broadcast_shapes(*[t.shape for t in types], ctx=ctx)
        if out_dtype is None:
            odt = types[0].dtype
        elif isinstance(out_dtype, DType):
            odt = out_dtype
        else:
            odt = out_dtype([t.dtype for t in types], ctx.attrs)
        return [out(shape, odt)]

    if reference is not None:
        def ref(inputs, a, _f=reference):
            return _f(*inputs, **a)
    elif scalar is not None:
        def ref(inputs, a, _f=scalar):
            return _f(_np_scalar, *[np.asarray(x) for x in inputs], **a)
    else:
        raise ValueError(f"{name}: elementwise op needs a reference or a scalar formula")

    def typed_ref(inputs, a):
        r = np.asarray(ref(inputs, a))
        shape = np.broadcast_shapes(*[np.shape(x) for x in inputs])
        if r.shape != shape:
            r = np.broadcast_to(r, shape)
        odt = _out_np(inputs, a)
        return r.astype(odt, copy=False)

    def _out_np(inputs, a):
        if out_dtype is None:
            return np.asarray(inputs[0]).dtype
        if isinstance(out_dtype, DType):
            return out_dtype.np
        return out_dtype([DType.from_numpy(np.asarray(x).dtype) for x in inputs], a).np

    if differentiable is None:
        differentiable = any(d.is_float for d in dtypes) and (out_dtype is None or (isinstance(out_dtype, DType) and out_dtype.is_float))

    return register(OpDef(
        name=name, infer=infer, reference=typed_ref, attrs=attrs, inputs=(nin, nin),
        kind="elementwise", grad=grad, differentiable=differentiable, scalar=scalar, doc=doc,
        dtypes=tuple(dtypes),
    ))
