"""Shared helpers of the op tests: a one-node graph built from arrays and types, run through the
interpreter (which checks every output against the node's inferred dtype and static dims), its
inferred types, errors that must name the op, and one-node ONNX models for the converters.

    run("conv", [x, w], {"pads": (1, 1, 1, 1)}, const=(1,))   # x fed at run time, w a constant
    types("split", [TensorType(("N", 6), "float32")], {"num_outputs": 2}, num_outputs=2)
"""
from __future__ import annotations

from typing import Any, Collection, NamedTuple, Sequence

import numpy as np
import pytest
from onnx import ModelProto, TensorProto, helper, numpy_helper

from irgraph import Graph, ShapeError, TensorType, Value, run_graph
from irgraph.frontends.onnx import import_model
from irgraph.ops.registry import get_op

ALL = "all"  # ``const=ALL``: every array input becomes a constant


class OneNode(NamedTuple):
    graph: Graph
    outputs: list[Value]
    feeds: list[np.ndarray]


def build(op: str, inputs: Sequence[Any], attrs: dict | None = None, *, num_outputs: int | None = None,
          const: Collection[int] | str = (), decompose: bool = False) -> OneNode:
    """A graph of one ``op`` node (or of its decomposition) over ``inputs``.

    Each input is None (an absent optional input), a TensorType (a graph input the caller feeds;
    inference only) or an array: a graph input fed with it, or a constant when its position is in
    ``const`` (or ``const`` is ALL). Arrays fed at run time keep constant folding out of the way.
    """
    g = Graph()
    vals, feeds = [], []
    for i, x in enumerate(inputs):
        if x is None:
            vals.append(None)
        elif isinstance(x, TensorType):
            vals.append(g.add_input(f"in{i}", x))
        elif const == ALL or i in const:
            vals.append(g.add_const(np.asarray(x), f"c{i}"))
        else:
            x = np.asarray(x)
            vals.append(g.add_input(f"in{i}", TensorType.of(x)))
            feeds.append(x)
    if decompose:
        opdef = get_op(op)
        outs = list(opdef.decompose(g, vals, opdef.normalize_attrs(attrs or {})))[:num_outputs or 1]
        assert all(n.op != op for n in g.nodes), f"the decomposition of {op} still holds {op}"
    else:
        res = g.op(op, vals, attrs or {}, num_outputs=num_outputs)
        outs = list(res) if isinstance(res, tuple) else [res]
    g.set_outputs(outs)
    return OneNode(g, outs, feeds)


def _one_or_list(items: list, num_outputs: int | None):
    """One output as itself; several (or any number asked for with num_outputs) as a list."""
    return items if len(items) > 1 or num_outputs is not None else items[0]


def run(op: str, inputs: Sequence[Any], attrs: dict | None = None, *, num_outputs: int | None = None,
        const: Collection[int] | str = (), decompose: bool = False, static: bool = False):
    """Run the one-node graph on its array inputs. ``static`` also asserts that inference knew
    every output's whole shape (not only the static dims the interpreter checks)."""
    g, outs, feeds = build(op, inputs, attrs, num_outputs=num_outputs, const=const, decompose=decompose)
    res = run_graph(g, feeds)
    for v, r in zip(outs, res):
        assert v.type.dtype.np == r.dtype, f"{v.name}: inferred {v.type}, got {r.dtype}"
        if static:
            assert v.type.shape == r.shape, f"{v.name}: inferred {v.type}, got {r.shape}"
    return _one_or_list(res, num_outputs)


def run_on(op: str, x, *params, attrs: dict | None = None, num_outputs: int | None = None,
           decompose: bool = False):
    """Run ``op`` on ``x`` fed at run time and ``params`` as constants (as the shape-like
    operands of a model usually are); inference must know every output's whole shape."""
    return run(op, [x, *params], attrs, num_outputs=num_outputs, const=range(1, 1 + len(params)),
               decompose=decompose, static=True)


def types(op: str, inputs: Sequence[Any], attrs: dict | None = None, *, num_outputs: int | None = None,
          const: Collection[int] | str = ()) -> list[TensorType]:
    """The inferred types of every output."""
    return [v.type for v in build(op, inputs, attrs, num_outputs=num_outputs, const=const).outputs]


def infer(op: str, inputs: Sequence[Any], attrs: dict | None = None, *, num_outputs: int | None = None,
          const: Collection[int] | str = ()):
    """The inferred type, or a list of them as ``run`` returns its results."""
    return _one_or_list(types(op, inputs, attrs, num_outputs=num_outputs, const=const), num_outputs)


def raises(op_name: str, fn, match: str | None = None) -> ShapeError:
    """``fn()`` must raise a ShapeError that names ``op_name``."""
    with pytest.raises(ShapeError, match=match) as e:
        fn()
    assert e.value.op == op_name, f"error does not name the op: {e.value}"
    return e.value


def i64(*v) -> np.ndarray:
    return np.array(v, dtype=np.int64)


def sym(*dims) -> TensorType:
    """A float32 type whose dims may be symbols."""
    return TensorType(dims, "float32")


def is_fresh(d, *not_these) -> bool:
    """``d`` is a symbol, and none of ``not_these``."""
    return isinstance(d, str) and d not in not_these


def window_defaults(nsp: int, strides, pads, dilations) -> tuple:
    """(strides, pads, dilations) of a conv or pool over ``nsp`` spatial axes, ONNX defaults
    (1, 0, 1) where None."""
    return (tuple(strides or (1,) * nsp), tuple(pads or (0,) * (2 * nsp)), tuple(dilations or (1,) * nsp))


# ---- one-node ONNX models ----------------------------------------------------------------------
def value_info(name: str, elem: int | np.dtype = TensorProto.FLOAT, shape=None):
    """A graph input/output declaration; ``elem`` is a TensorProto type or a numpy dtype."""
    if not isinstance(elem, int):
        d = np.dtype(elem)
        elem = TensorProto.STRING if d == object else helper.np_dtype_to_tensor_dtype(d)
    return helper.make_tensor_value_info(name, elem, shape)


def onnx_model(nodes, inputs, outputs, opset: int = 17, inits=(), domains: dict | None = None,
               ir_version: int | None = None) -> ModelProto:
    """A model of ``nodes`` (one node or a list) at ``opset``, plus ``domains`` {name: version}."""
    nodes = [nodes] if not isinstance(nodes, (list, tuple)) else list(nodes)
    opsets = [helper.make_opsetid("", opset)]
    opsets += [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
    graph = helper.make_graph(nodes, "g", list(inputs), list(outputs), initializer=list(inits))
    m = helper.make_model(graph, opset_imports=opsets)
    if ir_version is not None:
        m.ir_version = ir_version
    return m


def onnx_run(node, inputs: dict, opset: int, *, out_dtype: int = TensorProto.FLOAT, n_out: int = 1,
             consts: dict | None = None) -> list[np.ndarray]:
    """Import a one-node model at ``opset`` (graph inputs named and typed after ``inputs``,
    initializers from ``consts``) and run it on ``inputs``."""
    ins = [value_info(k, v.dtype, v.shape) for k, v in inputs.items()]
    outs = [value_info(o, out_dtype) for o in node.output[:n_out] if o]
    inits = [numpy_helper.from_array(v, k) for k, v in (consts or {}).items()]
    return run_graph(import_model(onnx_model(node, ins, outs, opset, inits)), list(inputs.values()))
