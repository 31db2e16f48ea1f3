"""Control flow with subgraphs: if, loop, scan (ONNX semantics).

Bodies are Graphs held in ``graph`` attributes; they may read values of enclosing graphs
directly. The references run them through the ``run(graph, arrays)`` callback the interpreter
passes to ops marked ``runs_subgraphs``.

- ``if(cond) {then_branch, else_branch}``: the branches take no inputs and give equally many
  outputs of matching dtypes; where their shapes differ the result gets fresh symbolic dims.
- ``loop(M?, cond?, v...) {body}``: the body takes ``(iteration int64 scalar, cond bool
  scalar, v...)`` and gives ``(cond, v..., scan...)``; the node gives ``(v_final..., scan...)``
  with each scan output stacked along a new axis 0 (its length is data-dependent).
- ``scan(states..., inputs...) {body}``: ``num_scan_inputs`` trailing inputs are sliced along
  their scan axes; the body takes ``(states..., slices...)`` and gives ``(states...,
  per-step outputs...)``. ``batched`` is ONNX opset 8's form: every input and output carries a
  leading batch axis that the body does not see.
"""
from __future__ import annotations

import numpy as np

from .. import dtype as dt
from ..errors import ExecutionError
from ..types import TensorType, is_static_dim
from .control_grad import if_grad, loop_grad, scan_grad
from .registry import Attr, OpDef, register
from .shapes import normalize_axis, shape_numel


def merge_types(a: TensorType | None, b: TensorType | None, fresh) -> TensorType | None:
    """The type both ``a`` and ``b`` fit: equal dims stay, differing ones become fresh symbols."""
    if a is None or b is None:
        return None
    if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
        return TensorType(None, a.dtype)
    return TensorType([x if x == y else fresh("merge") for x, y in zip(a.shape, b.shape)], a.dtype)


def _check_scalar(ctx, i: int, dtype, what: str) -> None:
    t = ctx.type(i)
    if t is None:
        return
    if t.dtype is not dtype:
        ctx.fail(f"{what} must be {dtype.name}", input=i, expected=dtype.name, actual=t.dtype.name)
    if t.shape is not None and shape_numel(t.shape) not in (None, 1):
        ctx.fail(f"{what} must hold one element", input=i, expected="a scalar", actual=t.shape)


def _empty_like_type(t: TensorType, lead: tuple = ()) -> np.ndarray:
    """An empty array for an output that ran zero times (symbolic dims become 0)."""
    dims = [d if is_static_dim(d) else 0 for d in (t.shape or ())]
    return np.zeros(tuple(lead) + tuple(dims), dtype=t.dtype.np)


def _feed(value, t: TensorType) -> np.ndarray:
    """A loop counter or flag shaped as the body declares it (scalar, or ONNX's older [1])."""
    arr = np.asarray(value, dtype=t.dtype.np)
    if t.shape is not None and len(t.shape) == 1:
        arr = arr.reshape(1)
    return arr


# ---- if --------------------------------------------------------------------------------------
def _if_infer(ctx):
    _check_scalar(ctx, 0, dt.bool_, "the condition")
    then, other = ctx.attrs["then_branch"], ctx.attrs["else_branch"]
    if then.inputs or other.inputs:
        ctx.fail("if branches take no inputs", actual=f"{len(then.inputs)} and {len(other.inputs)}")
    if len(then.outputs) != len(other.outputs):
        ctx.fail("the branches give different numbers of outputs",
                 expected=len(then.outputs), actual=len(other.outputs))
    for k, (a, b) in enumerate(zip(then.outputs, other.outputs)):
        if a.dtype is not b.dtype:
            ctx.fail(f"output {k} has dtype {a.dtype.name} in then_branch but {b.dtype.name} in else_branch",
                     expected=a.dtype.name, actual=b.dtype.name)
    cond = ctx.const(0)
    if cond is not None:
        # a condition known at compile time: the result has exactly that branch's types
        taken = then if bool(np.asarray(cond).reshape(-1)[0]) else other
        return [v.type for v in taken.outputs]
    return [merge_types(a.type, b.type, ctx.fresh) for a, b in zip(then.outputs, other.outputs)]


def _if_ref(inputs, attrs, run):
    taken = attrs["then_branch"] if bool(np.asarray(inputs[0]).reshape(-1)[0]) else attrs["else_branch"]
    return tuple(run(taken, []))


register(OpDef(
    "if", infer=_if_infer, reference=_if_ref, inputs=(1, 1), kind="control",
    attrs={"then_branch": Attr("graph"), "else_branch": Attr("graph")},
    differentiable=True, runs_subgraphs=True, variadic_outputs=True, grad=if_grad,
    doc="if(cond) {then_branch, else_branch}: the outputs of the branch cond selects",
))


# ---- loop ------------------------------------------------------------------------------------
def _loop_counts(ctx_or_none, body, ninputs: int):
    """(carried, scan) output counts; checks the body's signature against the node's inputs."""
    n = len(body.inputs) - 2
    k = len(body.outputs) - 1 - n
    fail = ctx_or_none.fail if ctx_or_none is not None else None
    if n < 0 or k < 0 or ninputs > 2 + n:
        msg = (f"the loop body takes {len(body.inputs)} inputs and gives {len(body.outputs)} outputs; "
               f"it must take (iteration, cond, v...) and give (cond, v..., scans...) for the node's "
               f"{max(ninputs - 2, 0)} loop-carried values")
        if fail:
            fail(msg)
        raise ExecutionError(msg)
    return n, k


def _loop_infer(ctx):
    body = ctx.attrs["body"]
    n, k = _loop_counts(ctx, body, len(ctx.inputs))
    if len(ctx.inputs) < 2 + n and n > 0:
        ctx.fail("every loop-carried value needs an initial value", expected=2 + n, actual=len(ctx.inputs))
    _check_scalar(ctx, 0, dt.int64, "the trip count M")
    _check_scalar(ctx, 1, dt.bool_, "the condition")
    it, cond = body.inputs[0].type, body.inputs[1].type
    if it.dtype is not dt.int64 or cond.dtype is not dt.bool_:
        ctx.fail("the body's first two inputs must be the int64 iteration number and the bool condition",
                 expected="(int64, bool)", actual=(it.dtype.name, cond.dtype.name))
    if body.outputs[0].dtype is not dt.bool_:
        ctx.fail("the body's first output must be the bool condition", expected="bool",
                 actual=body.outputs[0].dtype.name)
    outs = []
    for j in range(n):
        init, got = ctx.type(2 + j), body.outputs[1 + j].type
        if init.dtype is not got.dtype or body.inputs[2 + j].dtype is not init.dtype:
            ctx.fail(f"loop-carried value {j} changes dtype", input=2 + j, expected=init.dtype.name,
                     actual=got.dtype.name)
        # zero iterations give the initial value back
        outs.append(merge_types(init, got, ctx.fresh))
    trips = ctx.const(0)
    if trips is not None and not ctx.has(1):
        length = max(int(np.asarray(trips).reshape(-1)[0]), 0)
    else:
        length = None
    for j in range(k):
        t = body.outputs[1 + n + j].type
        lead = length if length is not None else ctx.fresh("iters")
        outs.append(TensorType(None if t.shape is None else (lead,) + t.shape, t.dtype))
    return outs


def _loop_ref(inputs, attrs, run):
    body = attrs["body"]
    n, k = _loop_counts(None, body, len(inputs))
    ins = list(inputs) + [None] * (2 + n - len(inputs))
    trips = None if ins[0] is None else int(np.asarray(ins[0]).reshape(-1)[0])
    go = True if ins[1] is None else bool(np.asarray(ins[1]).reshape(-1)[0])
    carried = ins[2:2 + n]
    scans: list[list] = [[] for _ in range(k)]
    it_type, cond_type = body.inputs[0].type, body.inputs[1].type
    i = 0
    while go and (trips is None or i < trips):
        res = run(body, [_feed(i, it_type), _feed(go, cond_type)] + carried)
        if ins[1] is not None:
            # without a condition input the body's condition output is ignored (a for loop)
            go = bool(np.asarray(res[0]).reshape(-1)[0])
        carried = list(res[1:1 + n])
        for j in range(k):
            scans[j].append(res[1 + n + j])
        i += 1
    outs = list(carried)
    for j in range(k):
        if scans[j]:
            outs.append(np.stack(scans[j], axis=0))
        else:
            outs.append(_empty_like_type(body.outputs[1 + n + j].type, (0,)))
    return tuple(outs)


register(OpDef(
    "loop", infer=_loop_infer, reference=_loop_ref, inputs=(0, None), kind="control",
    attrs={"body": Attr("graph")},
    differentiable=True, runs_subgraphs=True, variadic_outputs=True, grad=loop_grad,
    doc="loop(M?, cond?, v...) {body}: for/while loop; gives final v... and stacked scan outputs",
))


# ---- scan ------------------------------------------------------------------------------------
def _scan_layout(attrs, nscan_in: int, nscan_out: int, fail):
    """The per-input/per-output directions and axes, defaulted and length-checked."""
    res = []
    for key, count in (("scan_input_directions", nscan_in), ("scan_input_axes", nscan_in),
                       ("scan_output_directions", nscan_out), ("scan_output_axes", nscan_out)):
        v = attrs[key]
        if v is None or len(v) == 0:
            v = (0,) * count
        if len(v) != count:
            fail(f"{key} must hold one entry per scan {'input' if 'input' in key else 'output'}",
                 expected=count, actual=len(v))
        if "directions" in key and any(d not in (0, 1) for d in v):
            fail(f"{key} entries must be 0 (forward) or 1 (reverse)", actual=tuple(v))
        res.append(tuple(v))
    return res


def _scan_counts(body, nin: int, m: int, fail):
    n = nin - m
    if m < 1 or n < 0:
        fail("num_scan_inputs must be between 1 and the number of inputs", expected=f"1..{nin}", actual=m)
    if len(body.inputs) != nin:
        fail("the scan body must take one input per state and per scan input",
             expected=nin, actual=len(body.inputs))
    k = len(body.outputs) - n
    if k < 0:
        fail("the scan body must give one output per state (then the per-step outputs)",
             expected=f">= {n}", actual=len(body.outputs))
    return n, k


def _scan_infer(ctx):
    a = ctx.attrs
    body = a["body"]
    m = a["num_scan_inputs"]
    batched = a["batched"]
    n, k = _scan_counts(body, len(ctx.inputs), m, ctx.fail)
    _, in_axes, _, out_axes = _scan_layout(a, m, k, ctx.fail)
    lead = 1 if batched else 0
    batch = None
    if batched:
        for i in range(len(ctx.inputs)):
            s = ctx.type(i).shape
            if s is not None:
                if len(s) == 0:
                    ctx.fail("batched scan inputs need a leading batch axis", input=i, actual=s)
                if batch is None or not is_static_dim(batch):
                    batch = s[0]
        batch = ctx.fresh("batch") if batch is None else batch
    length = None
    for j in range(m):
        t = ctx.type(n + j)
        if t.shape is None:
            continue
        ax = normalize_axis(in_axes[j], len(t.shape) - lead, ctx, "scan input axis") + lead
        d = t.shape[ax]
        if is_static_dim(d) and is_static_dim(length) and d != length:
            ctx.fail("scan inputs disagree on the sequence length", input=n + j, expected=length, actual=d)
        if length is None or not is_static_dim(length):
            length = d
    length = ctx.fresh("seq") if length is None else length
    outs = []
    for j in range(n):
        init, got = ctx.type(j), body.outputs[j].type
        if init.dtype is not got.dtype:
            ctx.fail(f"state {j} changes dtype", input=j, expected=init.dtype.name, actual=got.dtype.name)
        # zero steps give the initial state back
        st = TensorType(None, got.dtype) if init.shape is None else merge_types(TensorType(init.shape[lead:], init.dtype), got, ctx.fresh)
        outs.append(TensorType(None if st.shape is None else ((batch,) if batched else ()) + st.shape, st.dtype))
    for j in range(k):
        t = body.outputs[n + j].type
        if t.shape is None:
            outs.append(TensorType(None, t.dtype))
            continue
        ax = normalize_axis(out_axes[j], len(t.shape) + 1, ctx, "scan output axis")
        shape = t.shape[:ax] + (length,) + t.shape[ax:]
        outs.append(TensorType(((batch,) if batched else ()) + shape, t.dtype))
    return outs


def _scan_once(inputs, attrs, run, n, k, layout):
    in_dirs, in_axes, out_dirs, out_axes = layout
    body = attrs["body"]
    states = list(inputs[:n])
    xs = inputs[n:]
    axes = [normalize_axis(ax, x.ndim) for ax, x in zip(in_axes, xs)]
    lengths = {x.shape[ax] for ax, x in zip(axes, xs)}
    if len(lengths) != 1:
        raise ExecutionError(f"scan inputs disagree on the sequence length: {sorted(lengths)}")
    length = lengths.pop()
    steps: list[list] = [[] for _ in range(k)]
    for t in range(length):
        sl = [np.take(x, length - 1 - t if d else t, axis=ax) for x, d, ax in zip(xs, in_dirs, axes)]
        res = run(body, states + sl)
        states = list(res[:n])
        for j in range(k):
            steps[j].append(res[n + j])
    outs = list(states)
    for j in range(k):
        t = body.outputs[n + j].type
        if not steps[j]:
            e = _empty_like_type(t)
            ax = normalize_axis(out_axes[j], e.ndim + 1)
            outs.append(np.zeros(e.shape[:ax] + (0,) + e.shape[ax:], e.dtype))
            continue
        seq = steps[j][::-1] if out_dirs[j] else steps[j]
        outs.append(np.stack(seq, axis=normalize_axis(out_axes[j], steps[j][0].ndim + 1)))
    return outs


def _scan_ref(inputs, attrs, run):
    body = attrs["body"]
    m = attrs["num_scan_inputs"]

    def fail(msg, **kw):
        raise ExecutionError(msg, **kw)
    n, k = _scan_counts(body, len(inputs), m, fail)
    layout = _scan_layout(attrs, m, k, fail)
    if not attrs["batched"]:
        return tuple(_scan_once(list(inputs), attrs, run, n, k, layout))
    batch = inputs[0].shape[0]
    rows = [_scan_once([x[b] for x in inputs], attrs, run, n, k, layout) for b in range(batch)]
    if not rows:
        raise ExecutionError("a batched scan needs at least one batch row (the body's output "
                             "shapes are only known by running it)")
    return tuple(np.stack([r[j] for r in rows], axis=0) for j in range(n + k))


register(OpDef(
    "scan", infer=_scan_infer, reference=_scan_ref, inputs=(1, None), kind="control",
    attrs={"body": Attr("graph"), "num_scan_inputs": Attr("int"),
           "scan_input_directions": Attr("ints", None, "0 forward, 1 reverse; one per scan input"),
           "scan_input_axes": Attr("ints", None, "the axis each scan input is sliced along"),
           "scan_output_directions": Attr("ints", None, "1 stacks a scan output in reverse step order"),
           "scan_output_axes": Attr("ints", None, "the axis each scan output is stacked along"),
           "batched": Attr("bool", False, "opset-8 form: a leading batch axis the body does not see")},
    differentiable=True, runs_subgraphs=True, variadic_outputs=True, grad=scan_grad,
    doc="scan(states..., inputs...) {body}: a fold over slices, giving final states and stacked outputs",
))
