"""Lowering rule for col2im: the overlapping scatter-add written as a gather.

The reference scatters each column block back into a padded image and adds where blocks
overlap. Natively each output pixel gathers instead: for block position k (in C order, as the
reference adds them) the pixel at padded coordinate y was written by column position
``(y - k_i * dilation_i) / stride_i`` along axis i, when that is a whole number inside the
column grid. One accumulator per pixel in the data's dtype, starting at zero and adding the
block positions in the reference's order, so the sums are the same to the last bit; pixels no
block touches stay zero. No scratch memory, no write conflicts (the loop over pixels can run in
parallel). image_shape and block_shape must be known when compiling (the cpu target
specializes on small shape inputs by itself).
"""
from __future__ import annotations

from irgraph.ops.rearrange import _col2im_blocks, _col2im_params

from . import lower_ops
from .kernel_ir import Assign, Const, Local, Loop, LoweringError, Store, Var
from .lower_ops import _b, _ints, _need_const, _out
from .lower_tensor import Pending, delinearize, iadd, iclamp, iconst, idiv, imod, imul, isub, numel


def rule_col2im(ctx, n, ins):
    x = ins[0]
    shape, odt = _out(n)
    image = _ints(_need_const(n, 1, "image_shape"))
    block = _ints(_need_const(n, 2, "block_shape"))
    nd = len(image)
    dil, strides, pads = _col2im_params(nd, n.attrs)
    counts = _col2im_blocks(image, block, dil, strides, pads)
    kprod = numel(block)
    nb, ck, nl = x.shape
    if ck % kprod or nl != numel(counts) or tuple(shape) != (nb, ck // kprod) + tuple(image):
        raise LoweringError(f"col2im input {x.shape} does not match blocks {tuple(block)} over image "
                            f"{tuple(image)}", op=n.op, node=n.name)
    b = _b

    def emit(c, dest):
        from .lower import PARALLEL_MIN_WORK
        src = c.force(x)
        with c.stage():
            o, k = c.var(), c.var()
            idx = delinearize(o, list(shape))
            pos = delinearize(k, block)
            ok, cols = None, []
            for i in range(nd):
                t = isub(iadd(idx[2 + i], pads[i]), imul(pos[i], dil[i]))
                tc = b.max(t, iconst(0))
                q = idiv(tc, strides[i]) if strides[i] > 1 else tc
                valid = b.lt(q, iconst(counts[i]))
                if strides[i] > 1:
                    valid = b.and_(valid, b.eq(imod(tc, strides[i]), iconst(0)))
                valid = b.and_(valid, b.ge(t, iconst(0)))
                ok = valid if ok is None else b.and_(ok, valid)
                cols.append(iclamp(q, 0, counts[i] - 1))
            col = iconst(0)
            for q, cnt in zip(cols, counts):
                col = iadd(imul(col, cnt), q)
            chan = iadd(imul(idx[1], kprod), k)
            v = b.select(ok, src.at([idx[0], chan, col]), Const(0, odt))
            acc = Var(f"acc{next(c._n)}", odt)
            body = [Local(acc, Const(0, odt)), Loop(k, kprod, "serial", [Assign(acc, b.add(acc, v))]),
                    Store(dest.buf, dest.flat(idx), acc)]
            par = numel(shape) * kprod >= PARALLEL_MIN_WORK
            c.body.append(Loop(o, numel(shape), "parallel" if par else "serial", body))
    return [Pending(shape, odt, ctx, emit, "col2im")]


RULES: dict = {"col2im": rule_col2im}


def register(table: dict | None = None) -> None:
    """Add this module's rules to the lowering table (lower_ops.rules())."""
    (lower_ops.rules() if table is None else table).update(RULES)


register()
