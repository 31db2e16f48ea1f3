"""irgraph → ONNX: writes any Graph as an ONNX model so it can be opened in any ONNX viewer.

Core ops are written verbatim as nodes of the ``ai.irgraph`` domain (op type = core op name,
attributes as ONNX attributes), constants as initializers and subgraphs as graph attributes.
The importer reads that domain back 1:1, so export → import round-trips exactly.

``write_graph`` and ``write_model`` are shared with ``export_standard.py``, which only chooses
another form per node (a ``NodeForm``).
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from irgraph.dtype import DType
from irgraph.errors import IrgraphError
from irgraph.graph import Graph, Node, Value
from irgraph.version import __version__

DOMAIN = "ai.irgraph"
DOMAIN_VERSION = 1
STD_OPSET = 21

# how one node is written: (ONNX op type, attributes, domain)
NodeForm = Callable[[Node], "tuple[str, dict, str]"]


def verbatim(n: Node) -> tuple[str, dict, str]:
    """The ``ai.irgraph`` form of a node: its core op and attributes as they are."""
    return n.op, n.attrs, DOMAIN


def export_model(graph: Graph, path: str | os.PathLike | None = None) -> onnx.ModelProto:
    """Return the ONNX model for ``graph``; also write it (atomically) when ``path`` is given."""
    return write_model(write_graph(graph), {"": STD_OPSET, DOMAIN: DOMAIN_VERSION}, path)


def write_model(graph: onnx.GraphProto, opsets: dict[str, int],
                path: str | os.PathLike | None = None) -> onnx.ModelProto:
    """The irgraph-produced model around ``graph`` importing ``opsets`` (domain -> version, in
    order); also written atomically to ``path`` when given."""
    model = helper.make_model(
        graph, producer_name="irgraph", producer_version=__version__,
        opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = 10
    if path is not None:
        from irgraph.fileio import write_bytes
        write_bytes(path, model.SerializeToString())
    return model


def write_graph(graph: Graph, form: NodeForm = verbatim, *, top: bool = True,
                provenance: bool = True) -> onnx.GraphProto:
    """``graph`` as an ONNX graph, each node (subgraphs' included) written in ``form``;
    ``provenance`` keeps a node's ``meta["source"]`` as its ``source`` metadata entry."""
    def subgraph(g: Graph) -> onnx.GraphProto:
        return write_graph(g, form, top=False, provenance=provenance)

    nodes = []
    for n in graph.nodes:
        op_type, attrs, domain = form(n)
        node = helper.make_node(op_type, ["" if v is None else v.name for v in n.inputs],
                                [o.name for o in n.outputs], name=n.name, domain=domain)
        node.attribute.extend(_attribute(k, v, subgraph) for k, v in attrs.items() if v is not None)
        src = n.meta.get("source") if provenance else None
        if src and hasattr(node, "metadata_props"):   # older onnx has no node metadata
            entry = node.metadata_props.add()
            entry.key, entry.value = "source", ",".join(src)
        nodes.append(node)
    inits = []
    for v in graph.constants.values():
        try:
            inits.append(numpy_helper.from_array(np.asarray(v.const), v.name))
        except Exception as e:
            raise IrgraphError(f"cannot export constant {v.name!r} ({v.type!r}): {e}") from None
    out_names = graph.meta.get("output_names") if top else None
    outputs, seen = [], set()
    for i, v in enumerate(graph.outputs):
        want = out_names[i] if out_names and i < len(out_names) else v.name
        if want != v.name or want in seen or v.producer is None:
            # an output that is an input, a constant, a repeat, or renamed needs its own Identity
            want = want if want not in seen and want != v.name else f"{v.name}_out{i}"
            nodes.append(helper.make_node("Identity", [v.name], [want], name=f"output_{i}"))
        seen.add(want)
        outputs.append(_value_info(v, want))
    return helper.make_graph(nodes, graph.name, [_value_info(v) for v in graph.inputs], outputs, inits)


def _value_info(v: Value, name: str | None = None) -> onnx.ValueInfoProto:
    t = v.type
    if t.shape is None:
        return helper.make_tensor_value_info(name or v.name, t.dtype.onnx, None)
    dims = [d if isinstance(d, int) else (None if d.startswith("?") else d) for d in t.shape]
    return helper.make_tensor_value_info(name or v.name, t.dtype.onnx, dims)


def _attribute(name: str, value, subgraph: Callable[[Graph], onnx.GraphProto]) -> onnx.AttributeProto:
    if isinstance(value, Graph):
        return helper.make_attribute(name, subgraph(value))
    if isinstance(value, DType):
        return helper.make_attribute(name, value.onnx)
    if isinstance(value, np.ndarray):
        return helper.make_attribute(name, numpy_helper.from_array(value, name))
    if isinstance(value, bool):
        return helper.make_attribute(name, int(value))
    if isinstance(value, (list, tuple)) and len(value) == 0:
        return helper.make_attribute(name, [], attr_type=onnx.AttributeProto.INTS)
    if isinstance(value, (list, tuple)) and all(isinstance(x, Graph) for x in value):
        return helper.make_attribute(name, [subgraph(x) for x in value])
    return helper.make_attribute(name, value)
