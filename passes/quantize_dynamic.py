"""Dynamic int8 quantization of matmul weights: no calibration data, activations quantized at run time.

Each ``matmul`` whose right operand is a constant float32 (K, N) matrix (a Linear / Gemm layer:
transformers, LSTM heads) becomes::

    xq, x_scale, x_zp = dynamic_quantize_linear(x)            # uint8, range of this call's x
    y = quant_matmul(xq, x_zp, wq, multiplier = x_scale * w_scale)   # float32 output

with per-column symmetric int8 weights. ``fold_qdq`` afterwards folds the bias add and the
activation that follow into the kernel's epilogue. Matmuls of two activations (attention
scores) stay float. Option ``quantize.keep_float``: a list of layer names left in float.
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt
from irgraph.errors import CompileError
from irgraph.graph import Graph
from irgraph.ops import qlinear  # noqa: F401  (registers quant_matmul)

from .fold_qdq import value
from .quant_observers import int8_weights
from .quantize_static import is_layer, layer_names
from .registry import register_pass


@register_pass("quantize_dynamic",
               description="matmul weights to per-column int8, activations quantized at run time "
                           "(dynamic_quantize_linear + quant_matmul)")
def quantize_dynamic(graph: Graph, ctx) -> bool:
    keep = ctx.option("quantize.keep_float") if ctx is not None else None
    if keep == "auto":
        raise CompileError("keep_float='auto' needs calibration data: it is measured by static quantization",
                           hint="name the layers to keep, or use quantize='int8' with calibrate=...")
    keep = set(keep.split(",") if isinstance(keep, str) else keep or ())
    layers = [n for n in graph.nodes if n.op == "matmul" and is_layer(n)]
    known = set().union(*(layer_names(n) for n in layers)) if layers else set()
    unknown = sorted(keep - known)
    if unknown:
        raise CompileError(f"keep_float names no quantizable matmul: {', '.join(unknown)}",
                           hint="layers: " + ", ".join(n.name for n in layers[:30]))
    changed = False
    quantized: dict = {}      # one run-time quantization per activation (q, k, v share theirs)
    for n in layers:
        if layer_names(n) & keep:
            continue
        x, w = n.inputs[0], n.inputs[1]
        wq, scale = int8_weights(np.asarray(value(w), np.float32), axis=1)
        if id(x) not in quantized:
            quantized[id(x)] = graph.op("dynamic_quantize_linear", [x], num_outputs=3, name=n.name + "_quantize")
        xq, xs, xz = quantized[id(x)]
        mult = graph.op("mul", [xs, graph.add_const(scale, n.name + "_wscale")], name=n.name + "_scale")
        y = graph.op("quant_matmul", [xq, xz, graph.add_const(wq, n.name + "_wq"), None, mult], name=n.name)
        if y.dtype is not dt.float32:
            raise CompileError("internal: dynamic quant_matmul must return float32", node=n.name)
        y.producer.meta["source"] = list(n.meta.get("source", [n.name]))
        graph.replace_uses(n.outputs[0], y)
        graph.nodes.remove(n)
        changed = True
    if changed:
        graph.toposort()
    return changed
