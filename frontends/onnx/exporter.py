"""irgraph → ONNX: writes any Graph as an ONNX model so it can be opened in any ONNX viewer.

Core ops are written verbatim as nodes of the ``ai.irgraph`` domain (op type = core op name,
attributes as ONNX attributes), constants as initializers and subgraphs as graph attributes.
The importer reads that domain back 1:1, so export → import round-trips exactly.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

from irgraph.dtype import DType
from irgraph.errors import IrgraphError
from irgraph.graph import Graph, Value
from irgraph.version import __version__

DOMAIN = "ai.irgraph"
DOMAIN_VERSION = 1
STD_OPSET = 21


def export_model(graph: Graph, path: str | os.PathLike | None = None) -> onnx.ModelProto:
    """Return the ONNX model for ``graph``; also write it (atomically) when ``path`` is given."""
    g = _graph(graph, top=True)
    model = helper.make_model(
        g, producer_name="irgraph", producer_version=__version__,
        opset_imports=[helper.make_opsetid("", STD_OPSET), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)])
    model.ir_version = 10
    if path is not None:
        from irgraph.fileio import atomic_write

        def write(tmp):
            with open(tmp, "wb") as f:
                f.write(model.SerializeToString())
        atomic_write(path, write)
    return model


def _value_info(v: Value, name: str | None = None) -> onnx.ValueInfoProto:
    t = v.type
    if t.shape is None:
        return helper.make_tensor_value_info(name or v.name, t.dtype.onnx, None)
    dims = [d if isinstance(d, int) else (None if d.startswith("?") else d) for d in t.shape]
    return helper.make_tensor_value_info(name or v.name, t.dtype.onnx, dims)


def _attr(name: str, value):
    if isinstance(value, Graph):
        return helper.make_attribute(name, _graph(value, top=False))
    if isinstance(value, DType):
        return helper.make_attribute(name, value.onnx)
    if isinstance(value, np.ndarray):
        return helper.make_attribute(name, numpy_helper.from_array(value, name))
    if isinstance(value, bool):
        return helper.make_attribute(name, int(value))
    if isinstance(value, (list, tuple)) and len(value) == 0:
        return helper.make_attribute(name, [], attr_type=onnx.AttributeProto.INTS)
    if isinstance(value, (list, tuple)) and all(isinstance(x, Graph) for x in value):
        return helper.make_attribute(name, [_graph(x, top=False) for x in value])
    return helper.make_attribute(name, value)


def _graph(graph: Graph, top: bool) -> onnx.GraphProto:
    nodes = []
    for n in graph.nodes:
        attrs = [_attr(k, v) for k, v in n.attrs.items() if v is not None]
        node = helper.make_node(n.op, ["" if v is None else v.name for v in n.inputs],
                                [o.name for o in n.outputs], name=n.name, domain=DOMAIN)
        node.attribute.extend(attrs)
        src = n.meta.get("source")
        if src:
            entry = node.metadata_props.add() if hasattr(node, "metadata_props") else None
            if entry is not None:
                entry.key, entry.value = "source", ",".join(src)
        nodes.append(node)
    inits = []
    for v in graph.constants.values():
        try:
            inits.append(numpy_helper.from_array(v.const, v.name))
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
