"""Post-training static int8 quantization: calibrate, insert quantize/dequantize, report the cost.

Layers: every ``conv`` (2-D, ungrouped) and ``matmul`` whose weights are float32 constants
(a (K, N) matrix for matmul), except those kept in float. Weights become per-output-channel
symmetric int8 (``quant_observers.int8_weights``); activations per-tensor asymmetric uint8 with
ranges from an observer (``minmax``, ``percentile`` or ``entropy``) over the calibration data.

Activations quantized: the input of each layer, taken before the ops that commute with
quantization (max_pool, reshape, transpose, squeeze, unsqueeze: the int8 tensor flows through
them), and both inputs of an ``add`` whose result is quantized (a ResNet residual), so the add
runs on integers between int8 kernels. The pass inserts ``Q``/``DQ`` pairs on those values (read
by the int8 side only: other readers keep the float value) and ``DQ`` on the int8 weights;
``fold_qdq`` then folds them into ``quant_conv``/``quant_matmul``
kernels with fused requantization, and ``fuse_quantized_elementwise`` turns the residual adds
into integer loops.

Options (``PassContext.options``):
  ``quantize.calibration``  feeds: a dict (input name -> array) or a list of them (required);
  ``quantize.observer``     ``minmax`` (default) | ``percentile`` | ``entropy``;
  ``quantize.keep_float``   None, ``"auto"`` or a list of layer names (node names, ONNX node
                            names or output names) to leave in float;
  ``quantize.min_sqnr_db``  with ``"auto"``: layers whose isolated SQNR is below this stay
                            float (default 25 dB).
The accuracy report (``quant_report.QuantReport``) goes to ``graph.meta["quant_report"]``.
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt
from irgraph.errors import CompileError
from irgraph.graph import Graph, Node, Value
from irgraph.interpreter import run_graph
from irgraph.ops.registry import get_op

from .fold_qdq import COMMUTING, value
from .quant_observers import OBSERVERS, int8_weights, make_observer, uint8_params
from .quant_report import LayerRow, QuantReport, compare
from .registry import register_pass

DEFAULT_MIN_SQNR_DB = 25.0
REPORT_FEEDS = 4          # calibration feeds whose activations are kept for the report


# ---- what gets quantized ---------------------------------------------------------------------------
def layer_names(n: Node) -> set:
    return {n.name, *n.meta.get("source", []), *(o.name for o in n.outputs)}


def is_layer(n: Node) -> bool:
    """A conv / matmul the int8 kernels run: float32 activations, constant float32 weights."""
    if n.op not in ("conv", "matmul") or len(n.inputs) < 2:
        return False
    x, w = n.inputs[0], n.inputs[1]
    if x.dtype is not dt.float32 or w.dtype is not dt.float32 or value(w) is None or w.shape is None:
        return False
    if n.op == "conv":
        return len(w.shape) == 4 and n.attrs.get("group", 1) == 1
    return len(w.shape) == 2 and x.shape is not None and len(x.shape) >= 1


def _source(v: Value, users: dict, outputs: set) -> Value:
    """Where quantizing ``v`` can start: back through ops that commute with quantization whose
    input nothing else reads (every reader of ``v`` then gets the same quantized values, and
    the op itself runs on integers)."""
    while v.producer is not None and v.producer.op in COMMUTING:
        p = v.producer
        if p.op == "max_pool" and p.attrs.get("indices"):
            break
        src = p.inputs[0]
        if src.dtype is not dt.float32 or src.const is not None or len(users.get(src, ())) != 1 \
                or src in outputs:
            break
        v = src
    return v


def activation_values(graph: Graph, layers: list[Node]) -> list[Value]:
    """The float values that get a Q/DQ pair, in graph order."""
    users = graph.users()
    outputs = set(graph.outputs)
    chosen: dict[int, Value] = {}
    for n in layers:
        v = _source(n.inputs[0], users, outputs)
        if v.const is None:
            chosen[id(v)] = v
    changed = True
    while changed:   # residual adds whose result is quantized: quantize their inputs too
        changed = False
        for n in graph.nodes:
            if n.op != "add" or len(n.inputs) != 2 or any(x.const is not None or x.shape != n.outputs[0].shape
                                                          for x in n.inputs):
                continue
            out = n.outputs[0]
            users_out = users.get(out, [])
            quantized = id(out) in chosen or (len(users_out) == 1 and users_out[0].op == "relu"
                                              and id(users_out[0].outputs[0]) in chosen)
            if not quantized:
                continue
            for x in n.inputs:
                s = _source(x, users, outputs)
                if id(s) not in chosen and s.dtype is dt.float32:
                    chosen[id(s)] = s
                    changed = True
    order = {id(v): i for i, v in enumerate(graph.all_values())}
    return sorted(chosen.values(), key=lambda v: order.get(id(v), 0))


def _int8_reader(r: Node, layer_ids: set, users: dict, chosen: set) -> bool:
    """Whether reader ``r`` of a quantized activation reads its Q/DQ pair: an int8 layer, an op
    the int8 tensor flows through, or elementwise work whose result is quantized again (the
    residual add before ``quant_add``, regions of ``fuse_quantized_elementwise``). Every other
    reader (a layer norm, softmax, the float side of a residual ...) keeps the float value:
    an 8-bit round trip there would cost a dequantize kernel and precision for nothing."""
    if id(r) in layer_ids or r.op in COMMUTING:
        return True
    for _ in range(16):
        if len(r.outputs) != 1 or get_op(r.op).kind != "elementwise":
            return False
        v = r.outputs[0]
        if id(v) in chosen:
            return True
        nxt = users.get(v, ())
        if len(nxt) != 1:
            return False
        r = nxt[0]
    return False


# ---- running the float model -----------------------------------------------------------------------
def _feeds_list(calib) -> list:
    if calib is None:
        raise CompileError("static quantization needs calibration data",
                           hint="pass calibrate=<.npz path or dict of arrays> (--calibrate data.npz)")
    if isinstance(calib, dict):
        return [calib]
    feeds = list(calib)
    if not feeds or not all(isinstance(f, dict) for f in feeds):
        raise CompileError("calibration data must be a dict of arrays or a list of them")
    return feeds


def capture(graph: Graph, feeds: dict, values: list[Value]) -> tuple[list, dict]:
    """Run ``graph`` with the interpreter; returns (its outputs, {value name: array})."""
    g = graph.copy()
    by_name = {v.name: v for v in g.all_values()}
    extra = [by_name[v.name] for v in values]
    g.set_outputs(list(g.outputs) + extra)
    try:
        res = run_graph(g, {v.name: feeds[v.name] for v in g.inputs})
    except KeyError as e:
        raise CompileError(f"the calibration data has no array for input {e.args[0]!r}",
                           expected=[v.name for v in g.inputs], actual=sorted(feeds)) from None
    n = len(graph.outputs)
    return res[:n], {v.name: a for v, a in zip(values, res[n:])}


def _fake_quant(a: np.ndarray, scale, zp) -> np.ndarray:
    q = np.clip(np.rint(a / np.float32(scale)) + np.float32(zp), 0, 255)
    return ((q - np.float32(zp)) * np.float32(scale)).astype(np.float32)


def _layer_output(n: Node, x: np.ndarray, w: np.ndarray, bias) -> np.ndarray:
    args = [x, w] + ([bias] if bias is not None else [])
    return get_op(n.op).run_reference(args, n.attrs)[0] if n.op == "conv" else np.matmul(x, w)


# ---- the pass ----------------------------------------------------------------------------------------
def _keep_set(keep) -> tuple[set, bool]:
    if keep is None or keep == () or keep == []:
        return set(), False
    if keep == "auto":
        return set(), True
    if isinstance(keep, str):
        keep = [s for s in keep.split(",") if s]
    return set(keep), False


@register_pass("quantize_static",
               description="post-training int8: calibrate activation ranges (minmax | percentile | entropy), "
                           "per-channel int8 weights, Q/DQ inserted for fold_qdq; accuracy report")
def quantize_static(graph: Graph, ctx) -> bool:
    opt = (lambda k, d=None: ctx.option(k, d)) if ctx is not None else (lambda k, d=None: d)
    feeds_list = _feeds_list(opt("quantize.calibration"))
    observer = opt("quantize.observer", "minmax") or "minmax"
    if observer not in OBSERVERS:
        raise CompileError(f"unknown observer {observer!r}", expected=" | ".join(OBSERVERS), actual=observer)
    keep, auto = _keep_set(opt("quantize.keep_float"))
    threshold = float(opt("quantize.min_sqnr_db", DEFAULT_MIN_SQNR_DB)) if auto else None

    candidates = [n for n in graph.nodes if is_layer(n)]
    known = set().union(*(layer_names(n) for n in candidates)) if candidates else set()
    unknown = sorted(keep - known)
    if unknown:
        raise CompileError(f"keep_float names no quantizable layer: {', '.join(unknown)}",
                           hint="layers: " + ", ".join(n.name for n in candidates[:30]))
    rows = {n.name: LayerRow(n.name, n.op, list(n.meta.get("source", [n.name])), True) for n in candidates}
    for n in candidates:
        if layer_names(n) & keep:
            rows[n.name].quantized, rows[n.name].reason = False, "keep_float"
    layers = [n for n in candidates if rows[n.name].quantized]

    # calibration: ranges of every value that may be quantized, and layer inputs/outputs to measure
    acts = activation_values(graph, candidates)
    ios = [n.inputs[0] for n in candidates] + [n.outputs[0] for n in candidates]
    probe = list({id(v): v for v in acts + ios}.values())
    observers = {v.name: make_observer(observer) for v in acts}
    kept: list[dict] = []
    float_outs: list = []
    samples = 0
    for i, feeds in enumerate(feeds_list):
        outs, vals = capture(graph, feeds, probe)
        for v in acts:
            observers[v.name].update(vals[v.name])
        if i < REPORT_FEEDS:
            kept.append({v.name: vals[v.name] for v in ios})
            float_outs.append(outs)
            samples += int(next(iter(feeds.values())).shape[0]) if feeds and np.ndim(next(iter(feeds.values()))) else 1
    params = {name: uint8_params(*o.range()) for name, o in observers.items()}
    users = graph.users()
    outputs = set(graph.outputs)
    src_of = {n.name: _source(n.inputs[0], users, outputs).name for n in candidates}

    # isolated error of each layer: quantized input and weights, exact everything else
    wq = {}
    for n in candidates:
        w = np.asarray(value(n.inputs[1]), np.float32)
        axis = 0 if n.op == "conv" else 1
        q, s = int8_weights(w, axis)
        shape = [1] * w.ndim
        shape[axis] = -1
        wq[n.name] = (q, s, (q.astype(np.float32) * s.reshape(shape)).astype(np.float32))
        bias = value(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] is not None else None
        sc, zp = params.get(src_of[n.name], (None, None))
        refs, gots = [], []
        for vals in kept:
            x = vals[n.inputs[0].name]
            xq = _fake_quant(x, sc, zp) if sc is not None else x
            refs.append(vals[n.outputs[0].name])
            gots.append(_layer_output(n, xq, wq[n.name][2], bias))
        if refs:
            rows[n.name].isolated = compare(np.concatenate([r.reshape(-1) for r in refs]),
                                            np.concatenate([g_.reshape(-1) for g_ in gots]))
        if auto and rows[n.name].quantized and rows[n.name].isolated.get("sqnr_db", np.inf) < threshold:
            rows[n.name].quantized, rows[n.name].reason = False, f"isolated SQNR below {threshold:g} dB"
    layers = [n for n in candidates if rows[n.name].quantized]
    if not layers:
        graph.meta["quant_report"] = QuantReport(observer, samples, threshold, list(rows.values())).to_dict()
        return False

    # insert Q/DQ on the activations of the layers kept int8, DQ on their weights
    acts = activation_values(graph, layers)
    users = graph.users()
    chosen = {id(v) for v in acts}
    layer_ids = {id(n) for n in layers}
    for v in acts:
        scale, zp = params[v.name]
        s_c = graph.add_const(scale, v.name + "_scale")
        z_c = graph.add_const(zp, v.name + "_zero_point")
        q = graph.op("quantize_linear", [v, s_c, z_c], name=v.name + "_quantize")
        d = graph.op("dequantize_linear", [q, s_c, z_c], name=v.name + "_dequantize")
        for r in users.get(v, ()):
            if _int8_reader(r, layer_ids, users, chosen):
                r.inputs[:] = [d if x is v else x for x in r.inputs]
    for n in layers:
        q, s, _ = wq[n.name]
        axis = 0 if n.op == "conv" else 1
        d = graph.op("dequantize_linear", [graph.add_const(q, n.name + "_wq"), graph.add_const(s, n.name + "_wscale")],
                     {"axis": axis}, name=n.name + "_weight")
        n.inputs[1] = d
    graph.toposort()

    # cumulative error: the quantize/dequantize simulation against float, layer by layer
    report = QuantReport(observer, samples, threshold, list(rows.values()))
    sim_vals: dict = {}
    sim_outs: list = []
    for feeds in feeds_list[:REPORT_FEEDS]:
        outs, vals = capture(graph, feeds, [n.outputs[0] for n in candidates])
        sim_outs.append(outs)
        for k, a in vals.items():
            sim_vals.setdefault(k, []).append(a.reshape(-1))
    for n in candidates:
        ref = np.concatenate([vals[n.outputs[0].name].reshape(-1) for vals in kept])
        rows[n.name].cumulative = compare(ref, np.concatenate(sim_vals[n.outputs[0].name]))
    names = graph.meta.get("output_names") or [v.name for v in graph.outputs]
    for j, name in enumerate(names):
        if graph.outputs[j].dtype.is_float:
            report.outputs[name] = compare(np.concatenate([o[j].reshape(-1) for o in float_outs]),
                                           np.concatenate([o[j].reshape(-1) for o in sim_outs]))
    graph.meta["quant_report"] = report.to_dict()
    # irgraph.compile measures the compiled model against these, then drops them
    graph.meta["quant_float_outputs"] = float_outs
    return True
