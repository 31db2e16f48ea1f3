"""ONNX converters for If, Loop and Scan (onto the core ops if, loop, scan).

Loop and Scan bodies often leave their input types unspecified; they get the types the node
implies (iteration number int64 scalar, condition bool scalar, loop-carried and state values as
their initial values, scan slices as the scanned inputs minus their scan axis). A carried value
whose shape the body changes (a tensor that grows each iteration) is caught by converting the
body again with the dims that changed made symbolic.
"""
from __future__ import annotations

import numpy as np

from irgraph import dtype as dt
from irgraph.errors import IrgraphError, ModelImportError
from irgraph.types import TensorType, fresh_dim, is_static_dim

from .registry import converter

_MAX_REFINES = 4


def _declared_types(ctx, attr: str) -> list:
    """The body's declared input types; None where a declaration has no dtype or no shape."""
    from ..importer import value_info_type  # the importer imports the converters: import late
    gp = ctx.attr(attr)
    res = []
    for vi in gp.input:
        t = value_info_type(vi)
        res.append(t if t is not None and t.shape is not None else None)
    return res


def _generalize(given: TensorType | None, produced: TensorType) -> TensorType | None:
    """``given`` widened so that ``produced`` fits it; None when nothing needs to change."""
    if given is None or given.dtype is not produced.dtype or given.shape is None:
        return None
    if produced.shape is None or len(produced.shape) != len(given.shape):
        return TensorType(None, given.dtype)
    dims, changed = [], False
    for a, b in zip(given.shape, produced.shape):
        if is_static_dim(a) and a != b:
            dims.append(fresh_dim("carried"))
            changed = True
        else:
            dims.append(a)
    return TensorType(dims, given.dtype) if changed else None


def _convert_body(ctx, attr: str, types: list, carried: list[tuple[int, int]]):
    """Convert body ``attr`` with input ``types``; ``carried`` pairs (body input, body output)
    indices whose values feed back into the next iteration."""
    declared = _declared_types(ctx, attr)
    types = [d if d is not None else t for d, t in zip(declared + [None] * len(types), types)]
    for _ in range(_MAX_REFINES):
        body = ctx.subgraph(attr, types)
        changed = False
        for i, o in carried:
            if i >= len(body.inputs) or o >= len(body.outputs):
                continue
            wider = _generalize(body.inputs[i].type, body.outputs[o].type)
            if wider is not None:
                types[i] = wider
                changed = True
        if not changed:
            return body
    return body


# ---- If ------------------------------------------------------------------------------------
@converter("If")
def if_(ctx):
    cond = ctx.const(0)
    if cond is None or np.size(cond) != 1:
        then = ctx.subgraph("then_branch", [])
        other = ctx.subgraph("else_branch", [])
        return ctx.op("if", [ctx.input(0)], {"then_branch": then, "else_branch": other},
                      num_outputs=len(then.outputs))
    # A condition known at import time (a function body testing the input's rank, say): the
    # branch not taken may be invalid for these shapes, so it is only kept when it converts.
    taken, dead = ("then_branch", "else_branch") if bool(np.ravel(cond)[0]) else ("else_branch", "then_branch")
    branches = {taken: ctx.subgraph(taken, [])}
    note = None
    try:
        branches[dead] = ctx.subgraph(dead, [])
    except IrgraphError as e:
        branches[dead] = ctx.subgraph(taken, [])
        note = f"{dead} never runs and does not convert ({e}); replaced by a copy of {taken}"
    outs = ctx.op("if", [ctx.input(0)], branches, num_outputs=len(branches[taken].outputs))
    if note and outs:
        outs[0].producer.meta["note"] = note
    return outs


# ---- Loop ----------------------------------------------------------------------------------
@converter("Loop")
def loop(ctx):
    carried_inputs = [ctx.input(i) for i in range(2, ctx.num_inputs)]
    if any(v is None for v in carried_inputs):
        ctx.fail("every loop-carried value needs an initial value")
    n = len(carried_inputs)
    types = [TensorType((), dt.int64), TensorType((), dt.bool_)] + [v.type for v in carried_inputs]
    body = _convert_body(ctx, "body", types, [(2 + j, 1 + j) for j in range(n)])
    count = len(body.outputs) - 1
    return ctx.op("loop", [ctx.input(0), ctx.input(1)] + carried_inputs, {"body": body},
                  num_outputs=count)


# ---- Scan ----------------------------------------------------------------------------------
def _without(shape, axis: int):
    if shape is None:
        return None
    if not -len(shape) <= axis < len(shape):
        return None  # the op's inference reports the bad axis
    axis = axis + len(shape) if axis < 0 else axis
    return shape[:axis] + shape[axis + 1:]


def _scan_attrs(ctx, m: int) -> dict:
    return {"num_scan_inputs": m,
            "scan_input_directions": ctx.attr("scan_input_directions", None),
            "scan_input_axes": ctx.attr("scan_input_axes", None),
            "scan_output_directions": ctx.attr("scan_output_directions", None),
            "scan_output_axes": ctx.attr("scan_output_axes", None)}


@converter("Scan", since=9)
def scan(ctx):
    m = ctx.attr("num_scan_inputs")
    ins = [ctx.input(i) for i in range(ctx.num_inputs)]
    n = len(ins) - m
    if n < 0 or m < 1 or any(v is None for v in ins):
        ctx.fail("Scan needs its states and num_scan_inputs scanned inputs", expected=f">= {m} inputs",
                 actual=len(ins))
    axes = ctx.attr("scan_input_axes", None) or [0] * m
    types = [v.type for v in ins[:n]]
    for j, v in enumerate(ins[n:]):
        ax = axes[j] if j < len(axes) else 0
        types.append(TensorType(_without(v.type.shape, ax), v.dtype))
    body = _convert_body(ctx, "body", types, [(j, j) for j in range(n)])
    return ctx.op("scan", ins, dict(_scan_attrs(ctx, m), body=body), num_outputs=len(body.outputs))


@converter("Scan", since=8)
def scan8(ctx):
    """Opset 8: a leading batch axis on everything, the sequence on axis 1, optional lengths."""
    m = ctx.attr("num_scan_inputs")
    ins = [ctx.input(i) for i in range(1, ctx.num_inputs)]
    n = len(ins) - m
    if n < 0 or m < 1 or any(v is None for v in ins):
        ctx.fail("Scan needs its states and num_scan_inputs scanned inputs")
    if ctx.has_input(0):
        lens = ctx.const(0)
        full = {v.shape[1] for v in ins[n:] if v.shape is not None and len(v.shape) > 1}
        if lens is None or len(full) != 1 or not all(int(x) == next(iter(full)) for x in np.ravel(lens)):
            ctx.fail("Scan (opset 8) with per-row sequence_lens shorter than the sequence is not supported",
                     input=0, hint="re-export the model at opset 9 or later, or pad the sequences")
    types = []
    for j, v in enumerate(ins):
        s = v.type.shape
        if s is not None and len(s) < (2 if j >= n else 1):
            raise ModelImportError("Scan (opset 8) inputs need a leading batch axis"
                                   + (" and a sequence axis" if j >= n else ""),
                                   node=ctx.name, op="Scan", opset=ctx.opset, actual=s)
        types.append(TensorType(None if s is None else s[1:] if j < n else s[2:], v.dtype))
    body = _convert_body(ctx, "body", types, [(j, j) for j in range(n)])
    attrs = {"num_scan_inputs": m, "scan_input_directions": ctx.attr("directions", None),
             "batched": True}
    return ctx.op("scan", ins, dict(attrs, body=body), num_outputs=len(body.outputs))
