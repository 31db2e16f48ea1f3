"""ONNX converters for the ai.onnx.preview.training optimizers: Adagrad, Adam, Momentum.

An ONNX optimizer node updates n tensors at once (inputs ``R, T, X1..Xn, G1..Gn, S1..Sn ...``,
outputs ``X1_new..Xn_new, S1_new..``); it becomes n core nodes, one per tensor.
"""
from __future__ import annotations

from .registry import converter

TRAINING = "ai.onnx.preview.training"


def _split(ctx, op: str, groups: int, attrs: dict):
    """One core ``op`` per optimized tensor; returns the outputs in ONNX's grouped order."""
    rest = ctx.num_inputs - 2
    if rest <= 0 or rest % groups:
        ctx.fail(f"{ctx.op_type} takes R, T and {groups} groups of equally many tensors",
                 expected=f"2 + {groups}*n inputs", actual=ctx.num_inputs)
    n = rest // groups
    results = []
    for k in range(n):
        ins = [ctx.input(0), ctx.input(1)] + [ctx.input(2 + j * n + k) for j in range(groups)]
        results.append(ctx.op(op, ins, attrs, num_outputs=groups - 1))
    # the gradients have no outputs; each core node gives (X_new, S_new...) for its tensor, and
    # ONNX lists every X_new first, then each state's new values
    return [results[k][j] for j in range(groups - 1) for k in range(n)]


@converter("Adagrad", domain=TRAINING)
def adagrad(ctx):
    attrs = {"decay_factor": ctx.attr("decay_factor", 0.0), "epsilon": ctx.attr("epsilon", 1e-6),
             "norm_coefficient": ctx.attr("norm_coefficient", 0.0)}
    return _split(ctx, "adagrad", 3, attrs)


@converter("Adam", domain=TRAINING)
def adam(ctx):
    attrs = {"alpha": ctx.attr("alpha", 0.9), "beta": ctx.attr("beta", 0.999),
             "epsilon": ctx.attr("epsilon", 1e-6), "norm_coefficient": ctx.attr("norm_coefficient", 0.0),
             "norm_coefficient_post": ctx.attr("norm_coefficient_post", 0.0)}
    return _split(ctx, "adam", 4, attrs)


@converter("Momentum", domain=TRAINING)
def momentum(ctx):
    attrs = {"alpha": ctx.attr("alpha"), "beta": ctx.attr("beta"),
             "norm_coefficient": ctx.attr("norm_coefficient"), "mode": ctx.attr("mode")}
    return _split(ctx, "momentum", 3, attrs)
