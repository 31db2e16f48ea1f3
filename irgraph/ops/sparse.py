"""Contractions with a sparse constant weight: ``sparse_matmul`` and ``sparse_conv``.

The weight is held in CSR form, one row per OUTPUT channel (what the kernel loops over):

    indptr  int32 (R + 1,)   row r's entries are indices[indptr[r]:indptr[r + 1]]
    indices int32 (nnz,)     the column of each entry
    values  float (nnz,)     the entry

- ``sparse_matmul(x, indptr, indices, values, bias?)`` attrs ``k``: ``y = x @ W (+ bias)`` for a
  dense ``W`` of shape (k, R); row r of the CSR is column r of W (W transposed), so
  ``x (..., k) -> y (..., R)``.
- ``sparse_conv(x, indptr, indices, values, bias?)`` attrs ``in_channels``, ``kernel_shape``,
  ``strides``, ``pads``, ``dilations``, ``auto_pad``: ONNX Conv (group 1) with the dense weight
  ``W (R, in_channels, *kernel_shape)``; row r of the CSR is ``W[r].reshape(-1)``.

The references densify the weight and run the dense op's own reference, so a sparse node gives
bit for bit what the dense node it replaced gives in the interpreter. The decomposition is the
same (a dense constant weight, or ``scatter_nd`` of the values when only the structure is known)
so every backend runs the ops; the CPU backend has a CSR kernel (``backends/lower_sparse.py``).
Inference-only ops: pruning and fine-tuning work on the dense graph, and the pass that chooses
sparse kernels (``passes/prune_sparse.py``) runs when compiling.
"""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from ..graph import Value
from ..types import TensorType, is_static_dim
from .declare import FLOAT_TYPES
from .evaluate import known_value
from .registry import Attr, OpDef, get_op, register
from .shapes import out


# ---- CSR helpers ---------------------------------------------------------------------------
def to_csr(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, indices, values) of a 2-D array, one CSR row per array row, zeros dropped."""
    rows = np.asarray(rows)
    if rows.ndim != 2:
        raise ValueError(f"to_csr needs a 2-D array, got shape {rows.shape}")
    mask = rows != 0
    indptr = np.zeros(rows.shape[0] + 1, np.int32)
    np.cumsum(mask.sum(axis=1), out=indptr[1:])
    r, c = np.nonzero(mask)           # row-major order: row by row, columns ascending
    return indptr, c.astype(np.int32), rows[r, c]


def from_csr(indptr, indices, values, shape: tuple[int, int]) -> np.ndarray:
    """The dense (R, C) array of a CSR matrix; repeated (row, column) entries are summed."""
    indptr, indices, values = np.asarray(indptr), np.asarray(indices), np.asarray(values)
    dense = np.zeros(shape, values.dtype)
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr.astype(np.int64)))
    np.add.at(dense, (rows, indices.astype(np.int64)), values)
    return dense


def conv_weight_shape(attrs: dict, rows: int) -> tuple:
    return (rows, attrs["in_channels"]) + tuple(attrs["kernel_shape"])


def _conv_attrs(attrs: dict) -> dict:
    return {k: attrs[k] for k in ("strides", "pads", "dilations", "auto_pad")} | {"group": 1}


# ---- inference -----------------------------------------------------------------------------
def _check_csr(ctx, cols: int | None):
    """Checks of inputs 1-4 (indptr, indices, values, bias) against x; returns R (rows)."""
    x = ctx.type(0)
    ip, ix, vals = ctx.type(1), ctx.type(2), ctx.type(3)
    for i, t, what in ((1, ip, "indptr"), (2, ix, "indices")):
        if t.dtype is not dt.int32:
            ctx.fail(f"{what} must be int32", input=i, expected="int32", actual=t.dtype.name)
        if t.shape is not None and len(t.shape) != 1:
            ctx.fail(f"{what} must be 1-D", input=i, expected="rank 1", actual=t.shape)
    if x.dtype not in FLOAT_TYPES:
        ctx.fail("x must be a float tensor", input=0, actual=x.dtype.name)
    if vals.dtype is not x.dtype:
        ctx.fail("values must have x's dtype", input=3, expected=x.dtype.name, actual=vals.dtype.name)
    if vals.shape is not None and len(vals.shape) != 1:
        ctx.fail("values must be 1-D", input=3, expected="rank 1", actual=vals.shape)
    if ix.shape is not None and vals.shape is not None and is_static_dim(ix.shape[0]) \
            and is_static_dim(vals.shape[0]) and ix.shape[0] != vals.shape[0]:
        ctx.fail("indices and values must have the same length", input=3, expected=ix.shape[0],
                 actual=vals.shape[0])
    if ip.shape is None or not is_static_dim(ip.shape[0]) or ip.shape[0] < 1:
        ctx.fail("indptr needs a static length R + 1 >= 1", input=1, actual=ip.shape)
    rows = ip.shape[0] - 1
    a, b = ctx.const(1), ctx.const(2)
    if a is not None:
        a = np.asarray(a, np.int64)
        if a[0] != 0 or np.any(np.diff(a) < 0):
            ctx.fail("indptr must start at 0 and never decrease", input=1)
        if ix.shape is not None and is_static_dim(ix.shape[0]) and a[-1] != ix.shape[0]:
            ctx.fail("indptr[-1] must equal the number of entries", input=1, expected=ix.shape[0],
                     actual=int(a[-1]))
    if b is not None and cols is not None and b.size and (b.min() < 0 or b.max() >= cols):
        ctx.fail("a column index is out of range", input=2, expected=f"[0, {cols})",
                 actual=f"[{int(b.min())}, {int(b.max())}]")
    bias = ctx.type(4)
    if bias is not None:
        if bias.dtype is not x.dtype:
            ctx.fail("bias must have x's dtype", input=4, expected=x.dtype.name, actual=bias.dtype.name)
        wrong = bias.shape is not None and (len(bias.shape) != 1 or (
            is_static_dim(bias.shape[0]) and bias.shape[0] != rows))
        if wrong:
            ctx.fail("bias must hold one value per output channel", input=4, expected=f"[{rows}]",
                     actual=bias.shape)
    return rows


def _sparse_matmul_infer(ctx):
    k = ctx.attrs["k"]
    if k < 1:
        ctx.fail("k must be >= 1", actual=k)
    rows = _check_csr(ctx, k)
    x = ctx.type(0)
    if x.shape is None:
        return [out(None, x.dtype)]
    if len(x.shape) < 1:
        ctx.fail("x must have rank >= 1", input=0, actual=x.shape)
    if is_static_dim(x.shape[-1]) and x.shape[-1] != k:
        ctx.fail("x's last dim must equal k", input=0, expected=k, actual=x.shape[-1])
    return [out(tuple(x.shape[:-1]) + (rows,), x.dtype)]


def _sparse_conv_infer(ctx):
    a = ctx.attrs
    if a["in_channels"] < 1 or not a["kernel_shape"] or min(a["kernel_shape"]) < 1:
        ctx.fail("in_channels and kernel_shape must be positive", actual=(a["in_channels"], a["kernel_shape"]))
    cols = a["in_channels"] * int(np.prod(a["kernel_shape"]))
    rows = _check_csr(ctx, cols)
    x = ctx.type(0)
    w = Value("weight", TensorType(conv_weight_shape(a, rows), x.dtype))
    b = ctx.inputs[4] if ctx.has(4) else None
    conv = get_op("conv")
    return conv.infer_types([ctx.inputs[0], w] + ([b] if b is not None else []),
                            conv.normalize_attrs(_conv_attrs(a), ctx.node), node=ctx.node)


# ---- references --------------------------------------------------------------------------------
def _dense(ins, shape) -> np.ndarray:
    return from_csr(ins[1], ins[2], ins[3], shape)


def _sparse_matmul_ref(ins, a):
    rows = np.asarray(ins[1]).shape[0] - 1
    w = _dense(ins, (rows, a["k"])).T
    y = get_op("matmul").reference([ins[0], w], {})
    if len(ins) > 4 and ins[4] is not None:
        y = get_op("add").reference([y, ins[4]], {})
    return y


def _sparse_conv_ref(ins, a):
    rows = np.asarray(ins[1]).shape[0] - 1
    w = _dense(ins, (rows, a["in_channels"] * int(np.prod(a["kernel_shape"])))).reshape(conv_weight_shape(a, rows))
    conv = get_op("conv")
    bias = [ins[4]] if len(ins) > 4 and ins[4] is not None else []
    return conv.reference([ins[0], w] + bias, conv.normalize_attrs(_conv_attrs(a)))


# ---- decompositions ------------------------------------------------------------------------------
def _dense_weight(g, inputs, shape, name: str):
    """The dense (R, C) weight as a Value: a constant when the CSR is known, else scatter_nd of
    the values into zeros (the structure must be known)."""
    ip, ix, vals = (known_value(v) for v in inputs[1:4])
    if ip is None or ix is None:
        from ..errors import ShapeError
        raise ShapeError("a sparse weight's structure (indptr, indices) must be known at compile time",
                         op=name)
    if vals is not None:
        return g.add_const(from_csr(ip, ix, vals, shape), "sparse_dense_weight")
    rows = np.repeat(np.arange(shape[0]), np.diff(np.asarray(ip, np.int64)))
    coords = np.stack([rows, np.asarray(ix, np.int64)], axis=1).astype(np.int64)
    zeros = g.add_const(np.zeros(shape, inputs[3].dtype.np), "sparse_zeros")
    return g.op("scatter_nd", [zeros, g.add_const(coords, "sparse_coords"), inputs[3]], {"reduction": "add"})


def _sparse_matmul_decompose(g, inputs, attrs):
    rows = inputs[1].shape[0] - 1
    w = _dense_weight(g, inputs, (rows, attrs["k"]), "sparse_matmul")
    y = g.op("matmul", [inputs[0], g.op("transpose", [w], {"perm": [1, 0]})])
    if len(inputs) > 4 and inputs[4] is not None:
        y = g.op("add", [y, inputs[4]])
    return [y]


def _sparse_conv_decompose(g, inputs, attrs):
    rows = inputs[1].shape[0] - 1
    shape = conv_weight_shape(attrs, rows)
    w = _dense_weight(g, inputs, (rows, int(np.prod(shape[1:]))), "sparse_conv")
    w = g.op("reshape", [w, g.add_const(np.array(shape, np.int64), "sparse_wshape")])
    bias = [inputs[4]] if len(inputs) > 4 and inputs[4] is not None else []
    return [g.op("conv", [inputs[0], w] + bias, _conv_attrs(attrs))]


register(OpDef(
    "sparse_matmul", infer=_sparse_matmul_infer, reference=_sparse_matmul_ref, inputs=(4, 5),
    kind="contraction", decompose=_sparse_matmul_decompose,
    attrs={"k": Attr("int", doc="rows of the dense weight W (k, R): x's last dim")},
    doc="y = x @ W (+ bias), W (k, R) given as CSR of W^T: indptr int32[R+1], indices int32[nnz], values[nnz]",
))

register(OpDef(
    "sparse_conv", infer=_sparse_conv_infer, reference=_sparse_conv_ref, inputs=(4, 5),
    kind="contraction", decompose=_sparse_conv_decompose,
    attrs={
        "in_channels": Attr("int", doc="C of the dense weight (R, C, *kernel_shape)"),
        "kernel_shape": Attr("ints", doc="spatial size of the kernel"),
        "strides": Attr("ints", None, "per spatial axis; default 1"),
        "pads": Attr("ints", None, "begin pads then end pads; default 0"),
        "dilations": Attr("ints", None, "per spatial axis; default 1"),
        "auto_pad": Attr("str", "NOTSET", "NOTSET | SAME_UPPER | SAME_LOWER | VALID"),
    },
    doc="ONNX Conv (group 1) whose weight (R, C, *k) is CSR rows W[r].reshape(-1): indptr, indices, values",
))
