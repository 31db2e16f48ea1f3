"""ONNX converters for the scatters: Scatter, ScatterElements, ScatterND, TensorScatter."""
from __future__ import annotations

from .registry import converter


def _scatter_elements(ctx):
    return ctx.op("scatter_elements", [ctx.input(0), ctx.input(1), ctx.input(2)],
                  {"axis": ctx.attr("axis", 0), "reduction": ctx.attr("reduction", "none")})


# Scatter (opsets 9-10, deprecated in 11) is ScatterElements without reductions
converter("Scatter", since=9)(_scatter_elements)
converter("ScatterElements", since=11)(_scatter_elements)


@converter("ScatterND", since=11)
def scatter_nd(ctx):
    return ctx.op("scatter_nd", [ctx.input(0), ctx.input(1), ctx.input(2)],
                  {"reduction": ctx.attr("reduction", "none")})


@converter("TensorScatter", since=24)
def tensor_scatter(ctx):
    return ctx.op("tensor_scatter", [ctx.input(0), ctx.input(1), ctx.input(2)],
                  {"axis": ctx.attr("axis", -2), "mode": ctx.attr("mode", "linear")})
