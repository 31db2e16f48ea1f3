"""The optimization pipelines, top to bottom, in one place.

-O0  nothing: the graph as imported (the reference every level is tested against)
-O1  cleanups that never change numerics beyond exact identities
-O2  O1 + pattern recognition, BatchNorm folding, fusion into kernels, memory planning
-O3  O2 + fusion across more ops where it may reassociate floating-point sums
"""
from __future__ import annotations

from irgraph.errors import CompileError

CLEANUP = [
    "infer_shapes",                      # exact types everywhere; shape arithmetic becomes constants
    "fold_constants",                    # evaluate nodes whose inputs are all constants (size-capped)
    "simplify_algebra",                  # x*1, x+0, double transpose, reshape chains, no-op casts …
    "eliminate_common_subexpressions",
    "eliminate_dead_code",
]

PIPELINES: dict[int, list[str]] = {
    0: [],
    1: CLEANUP,
    2: CLEANUP + [
        "canonicalize",                  # one spelling per computation (constants on the right …)
        "recognize_patterns",            # layer norm, GELU, softmax, RMS norm, attention written op by op
        "fold_batch_norm",               # BatchNorm after conv/matmul folded into the weights
        "eliminate_dead_code",
        "fuse_epilogues",                # conv/matmul + bias + activation + residual add
        "fuse_reductions",               # normalization/softmax/attention and elementwise+reduction groups
        "fuse_elementwise",              # remaining chains of elementwise ops
        "eliminate_dead_code",
        "plan_memory",                   # kernel order, liveness, one arena with static offsets
    ],
}
PIPELINES[3] = PIPELINES[2]


def pipeline(level: int) -> list[str]:
    try:
        return list(PIPELINES[level])
    except KeyError:
        raise CompileError(f"unknown optimization level -O{level}", expected="0, 1, 2 or 3", actual=level) from None
