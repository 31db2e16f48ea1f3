"""ONNX converters for the index family: Gather*, OneHot, NonZero, Compress, Unique, TopK
(Scatter*, TensorScatter are in ``scatter.py``)."""
from __future__ import annotations

import numpy as np

from .registry import converter


@converter("Gather")
def gather(ctx):
    return ctx.op("gather", [ctx.input(0), ctx.input(1)], {"axis": ctx.attr("axis", 0)})


@converter("GatherElements", since=11)
def gather_elements(ctx):
    return ctx.op("gather_elements", [ctx.input(0), ctx.input(1)], {"axis": ctx.attr("axis", 0)})


@converter("GatherND", since=11)
def gather_nd(ctx):
    # batch_dims arrived in opset 12; an opset-11 node simply has none
    return ctx.op("gather_nd", [ctx.input(0), ctx.input(1)], {"batch_dims": ctx.attr("batch_dims", 0)})


@converter("OneHot", since=9)
def one_hot(ctx):
    return ctx.op("one_hot", [ctx.input(0), ctx.input(1), ctx.input(2)], {"axis": ctx.attr("axis", -1)})


@converter("NonZero", since=9)
def nonzero(ctx):
    return ctx.op("nonzero", [ctx.input(0)])


@converter("Compress", since=9)
def compress(ctx):
    return ctx.op("compress", [ctx.input(0), ctx.input(1)], {"axis": ctx.attr("axis", None)})


@converter("Unique", since=11)
def unique(ctx):
    return ctx.op("unique", [ctx.input(0)],
                  {"axis": ctx.attr("axis", None), "sorted": ctx.attr("sorted", 1)}, num_outputs=4)


@converter("TopK", since=1)
def top_k_v1(ctx):
    k = ctx.constant(np.array([ctx.attr("k")], np.int64), name=f"{ctx.name}_k")
    return ctx.op("top_k", [ctx.input(0), k], {"axis": ctx.attr("axis", -1)}, num_outputs=2)


@converter("TopK", since=10)
def top_k(ctx):
    # largest/sorted arrived in opset 11; earlier nodes are largest-first and sorted
    return ctx.op("top_k", [ctx.input(0), ctx.input(1)],
                  {"axis": ctx.attr("axis", -1), "largest": ctx.attr("largest", 1),
                   "sorted": ctx.attr("sorted", 1)}, num_outputs=2)
