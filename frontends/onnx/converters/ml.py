"""ONNX converters for the ai.onnx.ml ops with a core op of their own in ``irgraph/ops/ml.py``:
TreeEnsemble (the simple ai.onnx.ml ops are in ``text.py``)."""
from __future__ import annotations

import numpy as np

from irgraph.ops.ml import AGGREGATES, POST_TRANSFORMS

from .registry import converter

ML = "ai.onnx.ml"
_ENUMS = {"aggregate_function": (AGGREGATES, 1), "post_transform": (POST_TRANSFORMS, 0)}
_LISTS = ("tree_roots", "nodes_featureids", "nodes_truenodeids", "nodes_trueleafs", "nodes_falsenodeids",
          "nodes_falseleafs", "nodes_missing_value_tracks_true", "leaf_targetids")
_TENSORS = ("nodes_splits", "leaf_weights", "membership_values")


@converter("TreeEnsemble", domain=ML, since=5)
def tree_ensemble(ctx):
    attrs = {k: ctx.attr(k, None) for k in _LISTS + _TENSORS + ("n_targets",)}
    attrs["nodes_modes"] = [int(m) for m in np.asarray(ctx.attr("nodes_modes")).reshape(-1)]
    # ONNX numbers the aggregations and transforms; the core op names them
    for name, (choices, default) in _ENUMS.items():
        code = ctx.attr(name, default)
        if not 0 <= code < len(choices):
            ctx.fail(f"unknown {name} {code}", expected=f"0..{len(choices) - 1}", actual=code)
        attrs[name] = choices[code]
    # nodes_hitrates only guides runtimes' memory layout: the results do not depend on it
    return ctx.op("tree_ensemble", [ctx.input(0)], attrs)
