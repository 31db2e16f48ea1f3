"""Calling registry ops from Python: one function per op, generated from the registry.

``F.conv(x, w, b, strides=(2, 2))`` appends a ``conv`` node to the graph being traced:
positional arguments are the op's inputs (``None`` for an absent optional one), keywords its
attributes (checked against the op's schema), plus ``name=`` for the node and ``num_outputs=``
for ops whose output count is chosen by the caller. Inputs may be Tensors, Parameters, numpy
arrays or Python numbers and lists:

- a Python scalar takes the dtype of the op's other operands where that makes sense (``x * 2``
  on float32 multiplies by a float32 2; ints feeding a non-elementwise op, such as an axis or a
  depth, become int64); a numpy scalar does the same in an elementwise op with a tensor operand
  (``x * np.sqrt(2)``) and keeps its own dtype elsewhere (``np.uint8(128)`` as a zero point);
- a list of ints becomes an int64 tensor (shapes, axes, pads, indices), of floats a tensor of
  the operands' float dtype (float32 when none is a float);
- a numpy array is used as it is (its dtype must fit the op).

Graph attributes (the bodies of ``if``/``loop``/``scan``/``fused``) may be Python functions: they
are traced into subgraphs (see ``body_types``). Outside any trace, with no Tensor argument, the
op runs at once on the reference interpreter and returns numpy arrays (handy in a REPL).
"""
from __future__ import annotations

import keyword
import os
import sys
from typing import Any, Callable

import numpy as np

from irgraph import dtype as dt
from irgraph.dtype import DType
from irgraph.errors import IrgraphError
from irgraph.graph import Graph, Value
from irgraph.ops.registry import OpDef, get_op
from irgraph.types import TensorType

from .tensor import Tensor, TensorOps

_HERE = os.path.dirname(os.path.abspath(__file__))


def python_name(op: str) -> str:
    """The function name for registry op ``op`` (``if`` becomes ``if_``)."""
    return op + "_" if keyword.iskeyword(op) else op


def _dtype_of(a) -> DType | None:
    if isinstance(a, Tensor):
        return a.dtype
    if isinstance(a, TensorOps):        # a Parameter
        return getattr(a, "dtype", None)
    return None


def _peer(args, want: str) -> DType | None:
    """The dtype a Python scalar among ``args`` should take: the first float operand's (``want
    == 'float'``) or the first non-bool numeric operand's (``want == 'int'``). Tensors decide
    first; among literals only, a float array or number makes ints float too."""
    for a in args:
        d = _dtype_of(a)
        if d is None:
            continue
        if want == "float" and d.is_float:
            return d
        if want == "int" and d.kind in "iuf":
            return d
    if want == "int":
        for a in args:
            if isinstance(a, np.ndarray) and a.dtype.kind == "f":
                return DType.from_numpy(a.dtype)
            if isinstance(a, (float, np.floating)):
                return DType.from_numpy(a.dtype) if isinstance(a, np.floating) else dt.float32
    return None


def _in_scope(v: Value, g: Graph) -> bool:
    while g is not None:
        if v.graph is g:
            return True
        g = g.parent
    return False


def to_value(x, g: Graph, tracer, op: str, index, args=(), elementwise: bool = False) -> Value | None:
    """The graph Value for argument ``index`` of ``op`` (see the module docstring for the rules)."""
    if x is None:
        return None
    if isinstance(x, TensorOps) and not isinstance(x, Tensor):
        x = x._as_tensor()
    if isinstance(x, Tensor):
        if not _in_scope(x.value, g):
            raise IrgraphError(f"tensor {x.name!r} belongs to another trace (or to a body traced "
                               "elsewhere)", op=op, input=str(index),
                               hint="build each graph from its own tracer's inputs")
        return x.value
    if isinstance(x, Value):
        return x
    arr = _literal(x, op, index, args, elementwise)
    return g.add_const(arr, "const")


def _literal(x, op: str, index, args, elementwise: bool) -> np.ndarray:
    if isinstance(x, (bool, np.bool_)):
        return np.array(bool(x))
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, np.generic) and not (elementwise and any(_dtype_of(a) is not None for a in args)):
        return np.asarray(x)   # a numpy scalar keeps its dtype unless it meets a tensor elementwise
    weak = isinstance(x, (int, float, np.number)) or (
        isinstance(x, (list, tuple)) and _numbers(x))
    if not weak:
        raise IrgraphError(f"cannot use a {type(x).__name__} as an input", op=op, input=str(index),
                           hint="pass a Tensor, a numpy array, a number or a list of numbers")
    arr = np.asarray(x)
    if arr.dtype.kind == "b":
        return arr
    if arr.dtype.kind == "f":
        peer = _peer(args, "float")
        return arr.astype(peer.np if peer is not None else np.float32)
    if arr.dtype.kind in "iu":
        peer = _peer(args, "int") if elementwise else None
        return arr.astype(peer.np if peer is not None else np.int64)
    raise IrgraphError(f"cannot use {x!r} as an input", op=op, input=str(index))


def _numbers(x) -> bool:
    for e in x:
        if isinstance(e, (list, tuple)):
            if not _numbers(e):
                return False
        elif not isinstance(e, (int, float, bool, np.number, np.bool_)):
            return False
    return True


def body_types(op: str, values: list, attrs: dict, attr: str) -> list[TensorType]:
    """Input types of a body traced from a Python function for graph attribute ``attr``."""
    if op == "loop":
        return [TensorType((), dt.int64), TensorType((), dt.bool_)] + [v.type for v in values[2:]]
    if op == "scan":
        n = attrs.get("num_scan_inputs")
        if n is None:
            raise IrgraphError("scan needs num_scan_inputs", op=op)
        states, scans = values[:len(values) - n], values[len(values) - n:]
        axes = attrs.get("scan_input_axes") or [0] * n
        types = [v.type for v in states]
        for v, ax in zip(scans, axes):
            s = v.type.shape
            ax = ax % len(s) if s else ax
            types.append(TensorType(None if s is None else s[:ax] + s[ax + 1:], v.type.dtype))
        return types
    if op == "fused":
        return [v.type for v in values]
    return []


def trace_body(tracer, fn: Callable, types: list[TensorType], name: str, op: str) -> Graph:
    """Trace ``fn(*inputs)`` into a body Graph nested in the graph being traced."""
    with tracer.subgraph(name) as g:
        ins = [Tensor(g.add_input(f"{name}_in{i}", t)) for i, t in enumerate(types)]
        out = fn(*ins)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        g.set_outputs([to_value(o, g, tracer, op, f"{name} output {i}") for i, o in enumerate(outs)])
    return g


def _source_location() -> str | None:
    f = sys._getframe(2)
    while f is not None and os.path.dirname(os.path.abspath(f.f_code.co_filename)).startswith(_HERE):
        f = f.f_back
    return None if f is None else f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}"


def _check_count(opdef: OpDef, n: int, fname: str) -> None:
    lo, hi = opdef.inputs
    if n < lo or (hi is not None and n > hi):
        want = f"{lo}" if lo == hi else f"{lo} to {'any number of' if hi is None else hi}"
        raise IrgraphError(f"F.{fname} takes {want} inputs", op=opdef.name, expected=want, actual=n,
                           hint=_signature_hint(opdef))


def _signature_hint(opdef: OpDef) -> str:
    doc = opdef.doc.split(";")[0] if opdef.doc else ""
    return f"{opdef.name}: {doc}" if doc else f"see help(F.{python_name(opdef.name)})"


def apply_op(op: str, args, attrs: dict | None = None, *, name: str | None = None,
             num_outputs: int | None = None, output_names=None):
    """Append a node of registry op ``op`` to the current trace; returns its Tensor output(s)."""
    from .trace import current_tracer
    opdef = get_op(op)
    fname = python_name(op)
    args = list(args)
    attrs = dict(attrs or {})
    _check_count(opdef, len(args), fname)
    tracer = current_tracer()
    if tracer is None:
        if any(isinstance(a, Tensor) for a in args):
            raise IrgraphError("a traced tensor was used after its trace ended", op=op,
                               hint="keep work on tensors inside the Tracer block or Module.forward")
        return _eager(op, args, attrs, name, num_outputs)
    g = tracer.current_graph
    elementwise = opdef.kind == "elementwise"
    values = [to_value(a, g, tracer, op, i, args, elementwise) for i, a in enumerate(args)]
    node = tracer.node_name(name or op)
    for k, v in list(attrs.items()):
        spec = opdef.attrs.get(k)
        if spec is None:
            continue   # the registry names the unknown attribute
        if spec.kind == "dtype" and v is not None and not isinstance(v, DType):
            from .specs import as_dtype
            attrs[k] = as_dtype(v, f"attribute {k!r}")
        elif spec.kind == "graph" and callable(v) and not isinstance(v, Graph):
            attrs[k] = trace_body(tracer, v, body_types(op, values, attrs, k), f"{node}/{k}", op)
        elif spec.kind == "tensor" and isinstance(v, (list, tuple)):
            attrs[k] = np.asarray(v)
    if "num_outputs" in opdef.attrs and num_outputs is not None:
        attrs.setdefault("num_outputs", num_outputs)
    loc = _source_location()
    out = g.op(op, values, attrs, name=node, num_outputs=num_outputs, output_names=output_names,
               meta={"dsl_loc": loc} if loc else None)
    if isinstance(out, tuple):
        return tuple(Tensor(v) for v in out)
    return Tensor(out)


def _eager(op, args, attrs, name, num_outputs):
    """Run one op on numpy values at once (no trace active): builds a one-node graph."""
    from irgraph.interpreter import run_graph
    from .trace import Tracer
    with Tracer(f"eager_{op}") as t:
        out = apply_op(op, args, attrs, name=name, num_outputs=num_outputs)
        outs = out if isinstance(out, tuple) else (out,)
        t.graph.set_outputs([o.value for o in outs])
    res = run_graph(t.graph, [])
    return tuple(res) if isinstance(out, tuple) else res[0]


def op_function(op: str) -> Callable:
    """The ``F.<op>`` function for registry op ``op``."""
    opdef = get_op(op)
    caller_num = "num_outputs" not in opdef.attrs

    def f(*inputs, name: str | None = None, num_outputs: int | None = None, **attrs: Any):
        if not caller_num and num_outputs is not None:
            attrs["num_outputs"] = num_outputs
        return apply_op(op, inputs, attrs, name=name, num_outputs=num_outputs)

    f.__name__ = f.__qualname__ = python_name(op)
    f.__doc__ = op_doc(opdef)
    return f


def op_doc(opdef: OpDef) -> str:
    from irgraph.ops.registry import REQUIRED
    lo, hi = opdef.inputs
    n = f"{lo}" if lo == hi else f"{lo}..{'n' if hi is None else hi}"
    lines = [f"F.{python_name(opdef.name)}(*inputs, **attrs): registry op {opdef.name!r} ({opdef.kind}), "
             f"{n} inputs.", "", opdef.doc or ""]
    if opdef.attrs:
        lines.append("")
        lines.append("Attributes:")
        for k, a in opdef.attrs.items():
            d = "required" if a.default is REQUIRED else f"default {a.default!r}"
            lines.append(f"  {k} ({a.kind}, {d}){': ' + a.doc if a.doc else ''}")
    return "\n".join(lines)
