"""``use_sparse_kernels``: conv / matmul layers whose constant weight is sparse enough to run faster
as CSR become ``sparse_conv`` / ``sparse_matmul`` (irgraph/ops/sparse.py).

"Sparse enough" is the crossover measured on the CPU backend (``CROSSOVER`` below, from
``benchmarks/bench_sparse.py``): the lowest sparsity from which the CSR kernel beat irgraph's
own dense kernel for that kind of layer and number of output columns P (output pixels per image
for a conv; rows of x for a matmul, with a symbolic batch taken as 1 — the batch-1 case, whose
crossover is the highest). Runs after the epilogue fusion and converts layers inside fused
groups too (the group's bias / activation then apply to the sparse kernel's output in place).

Options: ``prune.sparse_kernels`` (default True; the API turns it off for targets other than
``cpu``, where the decomposition would only rebuild the dense weight), ``sparse.min_sparsity``
(a float that replaces the measured table: benchmarks force sparse kernels with 0.0).
Only float32 convs of group 1 with a 2-D kernel and float32 2-D matmul weights are converted.
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt
from irgraph.graph import Graph, Node
from irgraph.ops import sparse  # noqa: F401  (registers sparse_matmul / sparse_conv)
from irgraph.ops.registry import get_op

from . import prune_report
from .registry import register_pass

# Sparsity from which the CSR kernel beats the dense one, by layer kind and output columns P:
# rows (max P, sparsity), first match wins. Measured on this machine (AMD EPYC Zen 5, AVX-512,
# 2 cores shared with other jobs, 1 thread) by interleaved medians of one-layer models (+ bias +
# relu) compiled both ways:
#     .venv/bin/python benchmarks/bench_sparse.py
# speedup (dense ms / sparse ms) at sparsity          0.5   0.6   0.7   0.8   0.9   0.95
#     linear 1x512->512       P=1    dense 0.021 ms   0.36  0.44  0.52  0.68  0.94  1.17
#     linear 16x512->512      P=16   dense 0.070 ms   0.83  1.04  1.25  1.28  1.63  1.92
#     linear 64x512->512      P=64   dense 0.194 ms   0.69  0.88  1.08  1.37  2.42  3.10
#     linear 256x256->256     P=256  dense 0.211 ms   0.74  0.82  1.03  1.26  1.58  1.74
#     conv3x3 16->32 @4x4     P=16   dense 0.011 ms   0.91  0.93  0.96  0.99  1.01  1.02
#     conv3x3 32->32 @16x16   P=256  dense 0.044 ms   0.73  0.83  0.96  1.18  1.49  1.78
#     conv3x3 64->64 @28x28   P=784  dense 0.274 ms   0.63  0.73  0.96  1.42  2.18  3.90
#     conv3x3 128->128 @14x14 P=196  dense 0.359 ms   0.57  0.73  0.96  1.52  2.26  3.54
#     conv3x3 256->256 @7x7   P=49   dense 0.503 ms   0.57  0.60  0.77  0.99  1.97  3.53
#     conv1x1 256->256 @14x14 P=196  dense 0.166 ms   0.81  0.99  1.27  1.76  2.89  3.44
#     linear 1x1024->1024     P=1    dense 0.063 ms   0.30  0.38  0.47  0.63  1.14  1.75
#     linear 1x4096->1024     P=1    dense 0.404 ms   0.51  0.63  0.70  0.79  1.45  2.44
# Batch-1 linear layers (P=1: the kernel gathers x, and the dense GEMV is bandwidth-bound) pay
# from 0.95 while the weight fits in L2 (2 MiB here), from 0.9 beyond; small images (P <= 64)
# from 0.9; other 3x3 convs from 0.8; 1x1 convs and batched linear layers from 0.7.
# Rows: (max P or None, min dense weight bytes, sparsity).
CROSSOVER = {
    "matmul": ((1, 2 << 20, 0.90), (1, 0, 0.95), (None, 0, 0.70)),
    "conv": ((64, 0, 0.90), (None, 0, 0.80)),
    "conv1x1": ((None, 0, 0.70),),
}
# the lowest entry: below it no layer is converted, whatever its shape
MIN_SPARSITY = min(s for rows in CROSSOVER.values() for _, _, s in rows)


def crossover(kind: str, p: int, weight_bytes: int = 0) -> float:
    for max_p, min_bytes, s in CROSSOVER[kind]:
        if (max_p is None or p <= max_p) and weight_bytes >= min_bytes:
            return s
    raise AssertionError("unreachable: every table ends with a catch-all row")


def _static_prod(dims) -> int:
    out = 1
    for d in dims or ():
        out *= d if isinstance(d, int) else 1
    return out


def candidate(n: Node):
    """(kind, P, weight) for a layer the CSR kernel can run, else None."""
    if n.op not in ("conv", "matmul") or len(n.inputs) < 2 or n.inputs[1] is None:
        return None
    w, x, y = n.inputs[1].const, n.inputs[0], n.outputs[0]
    if w is None or w.dtype != np.float32 or y.dtype is not dt.float32 or x.shape is None or y.shape is None:
        return None
    if n.op == "matmul":
        if w.ndim != 2 or len(x.shape) < 1:
            return None
        return "matmul", _static_prod(x.shape[:-1]), w
    if w.ndim != 4 or n.attrs["group"] != 1 or not all(isinstance(d, int) for d in y.shape[2:]):
        return None
    if len(n.inputs) > 2 and n.inputs[2] is not None and n.inputs[2].const is None:
        return None
    return ("conv1x1" if w.shape[2:] == (1, 1) else "conv"), _static_prod(y.shape[2:]), w


def to_sparse(g: Graph, n: Node, w: np.ndarray) -> None:
    """Turn ``n`` (a conv / matmul of ``g``) into its sparse op in place: same name and outputs."""
    if n.op == "matmul":
        ip, ix, vals = sparse.to_csr(w.T)
        attrs = {"k": int(w.shape[0])}
        extra = []
        op = "sparse_matmul"
    else:
        ip, ix, vals = sparse.to_csr(w.reshape(w.shape[0], -1))
        a = n.attrs
        attrs = {"in_channels": int(w.shape[1]), "kernel_shape": list(w.shape[2:]), "strides": a["strides"],
                 "pads": a["pads"], "dilations": a["dilations"], "auto_pad": a["auto_pad"]}
        extra = [n.inputs[2]] if len(n.inputs) > 2 and n.inputs[2] is not None else []
        op = "sparse_conv"
    base = n.inputs[1].name
    n.inputs = [n.inputs[0], g.add_const(ip, base + "_indptr"), g.add_const(ix, base + "_indices"),
                g.add_const(np.ascontiguousarray(vals, np.float32), base + "_values")] + extra
    n.op = op
    n.attrs = get_op(op).normalize_attrs(attrs, n.name)


def convert(g: Graph, min_sparsity: float | None) -> int:
    """Convert the layers of ``g`` and its fused bodies; returns how many."""
    count = 0
    for n in list(g.nodes):
        if n.op == "fused":
            count += convert(n.attrs["body"], min_sparsity)
            continue
        c = candidate(n)
        if c is None:
            continue
        kind, p, w = c
        s = 1.0 - np.count_nonzero(w) / max(w.size, 1)
        # a 0.9 pruning leaves floor(0.9 n) zeros: 0.89999...; the table's figures have 2 digits
        if s >= (crossover(kind, p, w.nbytes) if min_sparsity is None else min_sparsity) - 1e-3 and w.size:
            to_sparse(g, n, w)
            count += 1
    if count:
        g.remove_unused()
    return count


@register_pass("use_sparse_kernels",
               description="conv/matmul with a constant weight sparser than the measured crossover -> "
                           "sparse_conv/sparse_matmul (CSR kernels)")
def use_sparse_kernels(graph: Graph, ctx) -> bool:
    if ctx is not None and ctx.option("prune.sparse_kernels", True) is False:
        return False
    forced = ctx.option("sparse.min_sparsity") if ctx is not None else None
    changed = convert(graph, None if forced is None else float(forced)) > 0
    if changed:
        prune_report.finish(graph)
    return changed
