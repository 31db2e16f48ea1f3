"""Operands of the CPU templates that lowering emits as ``ExternCall``s over dense buffers (the
direct convolutions' ``conv2d``, the vectorized ``maxpool2d``): a strided input view is copied to a
dense temporary first, and a strided destination gets a dense temporary that is copied into it
after the call.
"""
from __future__ import annotations


def dense_input(ctx, v, name: str = "cont"):
    """``v`` forced into a buffer, copied to a dense temporary ``name`` when it is not contiguous."""
    from ..lower_tensor import Generic, View
    v = ctx.force(v)
    if v.contiguous:
        return v
    out = View.of(ctx.buffer(name, v.dtype, v.shape, "temp"), ctx)
    ctx.store(Generic(v.shape, v.dtype, ctx, v.at, 0), out)
    return out


def dense_output(ctx, dest, name: str):
    """Where the call writes ``dest``: itself when contiguous, else a dense temporary ``name``
    (``copy_back`` moves it into ``dest``)."""
    from ..lower_tensor import View
    if dest.contiguous:
        return dest
    return View.of(ctx.buffer(name, dest.dtype, dest.shape, "temp"), ctx)


def copy_back(ctx, out, dest) -> None:
    """After the call: ``dest`` gets the temporary ``dense_output`` gave (nothing when it gave dest)."""
    from ..lower_tensor import Generic
    if out is not dest:
        ctx.store(Generic(out.shape, out.dtype, ctx, out.at, 0), dest)
