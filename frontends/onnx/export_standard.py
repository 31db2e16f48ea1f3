"""irgraph → standard ONNX: core ops written as default-domain ONNX ops wherever one means
exactly the same, so any ONNX runtime (onnxruntime) runs the model.

Per node, in order:

1. a rule in ``RULES`` maps the core op to one ONNX op (renaming or dropping attributes; a rule
   may decline a node whose attributes have no ONNX equivalent, e.g. ``mod`` on floats without
   ``fmod``);
2. otherwise, a composite op with a registry decomposition (``attention``, ``rms_norm``,
   ``batch_norm_training`` …) is replaced by it first, and its primitives are mapped;
3. otherwise the node is written in the ``ai.irgraph`` domain as ``exporter.py`` writes it
   (irgraph reads it back, other runtimes do not) — or, with ``strict=True``, every such op is
   named in one error.

``exported_ops(proto)`` tells which ops landed where. Every rule holds from opset ``STD_OPSET``
(21: Gelu, LayerNormalization, reductions with axes inputs) on; a few ops exist only in newer
opsets (``MIN_OPSET``: Attention and RMSNormalization 23, Swish 24). ``opset=`` (default 23,
what onnxruntime 1.20+ runs) caps them: the model declares the newest opset one of its nodes
needs, at least 21.
"""
from __future__ import annotations

import os
from typing import Callable

import onnx

from irgraph.dtype import DType
from irgraph.errors import IrgraphError
from irgraph.graph import Graph, Node
from irgraph.ops.registry import get_op

from .exporter import DOMAIN, DOMAIN_VERSION, write_graph, write_model

STD_OPSET = 21
DEFAULT_MAX_OPSET = 23

# core op -> ONNX op whose inputs, outputs and attributes (same names) mean the same
_SAME = {
    "abs": "Abs", "acos": "Acos", "acosh": "Acosh", "add": "Add", "asin": "Asin", "asinh": "Asinh",
    "atan": "Atan", "atanh": "Atanh", "ceil": "Ceil", "cos": "Cos", "cosh": "Cosh", "div": "Div",
    "equal": "Equal", "erf": "Erf", "exp": "Exp", "floor": "Floor", "greater": "Greater",
    "greater_equal": "GreaterOrEqual", "less": "Less", "less_equal": "LessOrEqual", "log": "Log",
    "matmul": "MatMul", "mul": "Mul", "neg": "Neg", "pow": "Pow", "reciprocal": "Reciprocal",
    "relu": "Relu", "round": "Round", "sigmoid": "Sigmoid", "sign": "Sign", "sin": "Sin",
    "sinh": "Sinh", "sqrt": "Sqrt", "sub": "Sub", "tan": "Tan", "tanh": "Tanh", "where": "Where",
    "logical_and": "And", "logical_or": "Or", "logical_xor": "Xor", "logical_not": "Not",
    "bitwise_and": "BitwiseAnd", "bitwise_or": "BitwiseOr", "bitwise_xor": "BitwiseXor",
    "bitwise_not": "BitwiseNot", "isnan": "IsNaN", "isinf": "IsInf", "softsign": "Softsign",
    "softplus": "Softplus", "maximum": "Max", "minimum": "Min", "clip": "Clip", "prelu": "PRelu",
    "expand": "Expand", "tile": "Tile", "size": "Size", "nonzero": "NonZero",
    "hard_swish": "HardSwish", "mish": "Mish", "elu": "Elu", "celu": "Celu", "selu": "Selu",
    "leaky_relu": "LeakyRelu", "hard_sigmoid": "HardSigmoid", "thresholded_relu": "ThresholdedRelu",
    "shrink": "Shrink", "gelu": "Gelu", "softmax": "Softmax", "log_softmax": "LogSoftmax",
    "hardmax": "Hardmax", "conv": "Conv", "conv_transpose": "ConvTranspose",
    "avg_pool": "AveragePool", "reshape": "Reshape", "transpose": "Transpose", "squeeze": "Squeeze",
    "unsqueeze": "Unsqueeze", "concat": "Concat", "split": "Split", "slice": "Slice", "pad": "Pad",
    "gather": "Gather", "gather_elements": "GatherElements", "gather_nd": "GatherND",
    "scatter_elements": "ScatterElements", "scatter_nd": "ScatterND", "shape": "Shape",
    "constant_of_shape": "ConstantOfShape", "one_hot": "OneHot", "argmax": "ArgMax",
    "argmin": "ArgMin", "cumsum": "CumSum", "trilu": "Trilu", "einsum": "Einsum",
    "depth_to_space": "DepthToSpace", "reverse_sequence": "ReverseSequence",
    "reduce_sum": "ReduceSum", "reduce_mean": "ReduceMean", "reduce_max": "ReduceMax",
    "reduce_min": "ReduceMin", "reduce_prod": "ReduceProd", "batch_norm": "BatchNormalization",
    "instance_norm": "InstanceNormalization", "layer_norm": "LayerNormalization", "lrn": "LRN",
    "dropout": "Dropout", "compress": "Compress", "det": "Det", "eye_like": "EyeLike",
    "matmul_integer": "MatMulInteger", "conv_integer": "ConvInteger",
    "dynamic_quantize_linear": "DynamicQuantizeLinear", "grid_sample": "GridSample",
    "affine_grid": "AffineGrid", "non_max_suppression": "NonMaxSuppression",
    "roi_align": "RoiAlign", "max_roi_pool": "MaxRoiPool", "max_unpool": "MaxUnpool",
    "deform_conv": "DeformConv", "col2im": "Col2Im", "dft": "DFT", "stft": "STFT",
}

# a rule returns (onnx op type, attributes) or None when the node has no exact ONNX form
Rule = Callable[[Node], "tuple[str, dict] | None"]


def _same(onnx_op: str, drop: tuple = ()) -> Rule:
    return lambda n: (onnx_op, {k: v for k, v in n.attrs.items() if k not in drop})


def _mod(n):
    # ONNX Mod on floats must be fmod=1; integer Mod with fmod=0 is Python's remainder, as ours
    if not n.attrs["fmod"] and n.inputs[0].dtype.is_float:
        return None
    return "Mod", dict(n.attrs)


def _max_pool(n):
    attrs = {k: v for k, v in n.attrs.items() if k != "indices"}
    return "MaxPool", attrs


def _lp_pool(n):
    p = n.attrs["p"]
    if p != int(p):
        return None
    return "LpPool", dict(n.attrs, p=int(p))


def _global_pool(n):
    mode = n.attrs["mode"]
    if mode == "avg":
        return "GlobalAveragePool", {}
    if mode == "max":
        return "GlobalMaxPool", {}
    p = n.attrs["p"]
    return ("GlobalLpPool", {"p": int(p)}) if p == int(p) else None


def _cast(n):
    to: DType = n.attrs["to"]
    attrs = {"to": to}
    if to.kind == "f" and to.bits == 8:
        attrs["saturate"] = n.attrs["saturate"]
    return "Cast", attrs


def _top_k(n):
    k = n.inputs[1]
    if k.shape is None or len(k.shape) != 1:
        return None   # ONNX's K is a 1-element 1-D tensor; ours may be a scalar
    return "TopK", dict(n.attrs)


def _space_to_depth(n):
    return ("SpaceToDepth", {"blocksize": n.attrs["blocksize"]}) if n.attrs["mode"] == "DCR" else None


def _range(n):
    return "Range", {}


def _window(onnx_op: str) -> Rule:
    return lambda n: (onnx_op, {"periodic": n.attrs["periodic"], "output_datatype": n.attrs["dtype"]})


def _rnn(onnx_op: str) -> Rule:
    def rule(n):
        a = dict(n.attrs)
        if a.get("activation_alpha") or a.get("activation_beta"):
            return None   # ONNX consumes alpha/beta in a different order; keep it exact
        a.pop("activation_alpha", None)
        a.pop("activation_beta", None)
        if a.get("activations"):
            a["activations"] = tuple(_ONNX_ACTIVATION[x.lower()] for x in a["activations"])
        if a.get("hidden_size") is None:
            r = n.inputs[2].shape
            if r is None or not isinstance(r[-1], int):
                return None
            a["hidden_size"] = r[-1]
        return onnx_op, a
    return rule


_ONNX_ACTIVATION = {
    "relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "affine": "Affine", "leakyrelu": "LeakyRelu",
    "thresholdedrelu": "ThresholdedRelu", "scaledtanh": "ScaledTanh", "hardsigmoid": "HardSigmoid",
    "elu": "Elu", "softsign": "Softsign", "softplus": "Softplus",
}


def _batch_norm(n):
    # ONNX takes per-channel (C,) statistics only; the per-activation form has no ONNX spelling
    if any(v.shape is None or len(v.shape) != 1 for v in n.inputs[1:5]):
        return None
    return "BatchNormalization", dict(n.attrs)


def _layer_norm(n):
    return "LayerNormalization", dict(n.attrs)


def _quantize(n):
    if n.attrs.get("precision") is not None:
        return None
    a = {k: v for k, v in n.attrs.items() if k not in ("dtype", "precision")}
    if n.attrs.get("dtype") is not None:
        a["output_dtype"] = n.attrs["dtype"]
    return "QuantizeLinear", a


def _dequantize(n):
    if n.attrs.get("dtype") is not None:
        return None
    return "DequantizeLinear", {k: v for k, v in n.attrs.items() if k != "dtype"}


def _attention(n):
    a = n.attrs
    if a["left_window"] != -1 or a["right_window"] != -1 or len(n.inputs) > 6:
        return None   # sliding windows and nonpad_kv_seqlen are not in Attention-23
    return "Attention", {k: v for k, v in a.items() if k not in ("left_window", "right_window")}


def _control(onnx_op: str) -> Rule:
    def rule(n):
        if n.op == "scan" and n.attrs.get("batched"):
            return None
        return onnx_op, {k: v for k, v in n.attrs.items() if k != "batched"}
    return rule


RULES: dict[str, Rule] = {op: _same(onnx_op) for op, onnx_op in _SAME.items()}
RULES.update({
    "mod": _mod, "max_pool": _max_pool, "lp_pool": _lp_pool, "global_pool": _global_pool,
    "cast": _cast, "top_k": _top_k, "space_to_depth": _space_to_depth, "range": _range,
    "hann_window": _window("HannWindow"), "hamming_window": _window("HammingWindow"),
    "blackman_window": _window("BlackmanWindow"), "lstm": _rnn("LSTM"), "gru": _rnn("GRU"),
    "rnn": _rnn("RNN"), "batch_norm": _batch_norm, "layer_norm": _layer_norm,
    "quantize_linear": _quantize, "dequantize_linear": _dequantize,
    "if": _control("If"), "loop": _control("Loop"), "scan": _control("Scan"),
    "unique": _same("Unique"), "resize": _same("Resize"), "bernoulli": _same("Bernoulli"),
    "multinomial": _same("Multinomial"), "attention": _attention,
    "rms_norm": _same("RMSNormalization"), "swish": _same("Swish"),
})

# ops whose ONNX form is newer than STD_OPSET
MIN_OPSET = {"attention": 23, "rms_norm": 23, "swish": 24}


def standard_form(n: Node, opset: int = DEFAULT_MAX_OPSET) -> "tuple[str, dict] | None":
    """(ONNX op type, attributes) for node ``n`` in the default domain up to ``opset``, or None."""
    rule = RULES.get(n.op)
    if rule is None or MIN_OPSET.get(n.op, STD_OPSET) > opset:
        return None
    return rule(n)


# ---- composite ops without an ONNX op are replaced by their decomposition -------------------------
def decompose_for_export(graph: Graph, opset: int = DEFAULT_MAX_OPSET) -> Graph:
    """A copy of ``graph`` where every node with no standard form but a registry decomposition
    is replaced by it (repeatedly: a decomposition may hold composites), subgraphs included.
    A decomposition that cannot be built (e.g. one that needs static shapes) leaves the node."""
    g = graph.copy()
    _decompose(g, opset)
    return g


def _decompose(g: Graph, opset: int) -> None:
    for _ in range(8):   # decompositions nest a few levels at most
        changed = False
        for n in list(g.nodes):
            for sg in n.subgraphs():
                _decompose(sg, opset)
            if n.op in ("rnn", "gru", "lstm") and n.attrs["layout"] == 1:
                _rnn_to_layout0(g, n)
                changed = True
                continue
            opdef = get_op(n.op)
            if standard_form(n, opset) is not None or opdef.decompose is None or n.op == "fused":
                continue
            used = _used_outputs(g, n)
            try:
                outs = opdef.decompose(g, list(n.inputs), n.attrs)
            except IrgraphError:
                continue   # nodes it added before failing are unused; remove_unused drops them
            if len(outs) < max(used, default=-1) + 1:
                continue   # the decomposition does not give every output that is read
            for i, (old, new) in enumerate(zip(n.outputs, outs)):
                if i in used:
                    g.replace_uses(old, new)
            g.nodes.remove(n)
            changed = True
        if not changed:
            break
        g.toposort()
        g.remove_unused()


def _rnn_to_layout0(g: Graph, n: Node) -> None:
    """A batch-first (layout=1) recurrent node as layout 0 between transposes: onnxruntime runs
    only layout 0, and the two are the same function."""
    def t(v, perm):
        return None if v is None else g.op("transpose", [v], {"perm": perm}, name=f"{n.name}/layout")
    ins = list(n.inputs)
    ins[0] = t(ins[0], (1, 0, 2))                       # X: (batch, seq, in) -> (seq, batch, in)
    for i in (5, 6):                                    # initial_h, initial_c: (batch, nd, h) -> (nd, batch, h)
        if i < len(ins):
            ins[i] = t(ins[i], (1, 0, 2))
    outs = g.op(n.op, ins, dict(n.attrs, layout=0), name=n.name, num_outputs=len(n.outputs))
    outs = outs if isinstance(outs, tuple) else (outs,)
    news = [t(outs[0], (2, 0, 1, 3))] + [t(o, (1, 0, 2)) for o in outs[1:]]
    for old, new in zip(n.outputs, news):
        g.replace_uses(old, new)
    g.nodes.remove(n)


def _used_outputs(g: Graph, n: Node) -> set[int]:
    ids = {id(o): i for i, o in enumerate(n.outputs)}
    used = {ids[id(v)] for v in g.outputs if id(v) in ids}
    for m in g.nodes:
        for v in m.inputs:
            if v is not None and id(v) in ids:
                used.add(ids[id(v)])
        for sg in m.subgraphs():
            for v in sg.captured_values():
                if id(v) in ids:
                    used.add(ids[id(v)])
    return used


# ---- writing -----------------------------------------------------------------------------------------
def export_standard(graph: Graph, path: str | os.PathLike | None = None, *,
                    opset: int = DEFAULT_MAX_OPSET, strict: bool = False) -> onnx.ModelProto:
    """The ONNX model for ``graph`` in standard ONNX ops where they fit, using ops up to
    ``opset`` (see the module doc); also written atomically to ``path`` when given."""
    if opset < STD_OPSET:
        raise IrgraphError(f"standard export writes opset {STD_OPSET} or newer", expected=f">= {STD_OPSET}",
                           actual=opset)
    g = decompose_for_export(graph, opset)
    g.remove_unused()
    leftover: set[str] = set()
    used = [STD_OPSET]

    def form(n: Node) -> tuple[str, dict, str]:
        std = standard_form(n, opset)
        if std is None:
            leftover.add(n.op)
            return n.op, n.attrs, DOMAIN
        used.append(MIN_OPSET.get(n.op, STD_OPSET))
        return std[0], std[1], ""

    gp = write_graph(g, form, provenance=False)
    if leftover and strict:
        raise IrgraphError(f"no standard ONNX form for op(s) {', '.join(sorted(leftover))}",
                           hint="export with strict=False to write them in the ai.irgraph domain")
    opsets = {"": max(used)}
    if leftover:
        opsets[DOMAIN] = DOMAIN_VERSION
    return write_model(gp, opsets, path)


def exported_ops(model: onnx.ModelProto) -> dict[str, set[str]]:
    """Op types by domain ("" is standard ONNX) in ``model``'s main graph."""
    out: dict[str, set[str]] = {}
    for n in model.graph.node:
        out.setdefault(n.domain, set()).add(n.op_type)
    return out
