"""ONNX → irgraph: converts a ModelProto into a Graph of core ops.

Each ONNX operator is mapped by a converter (``converters/``). An operator without a converter
whose ONNX schema defines it as a function (Celu, Gelu, MeanVarianceNormalization …) is
expanded into its function body; model-local functions are inlined the same way. Operators
that can be handled neither way are reported all at once before anything is converted.
"""
from __future__ import annotations

import itertools
from collections import ChainMap
from pathlib import Path

import numpy as np
import onnx

from irgraph.dtype import DType
from irgraph.errors import IrgraphError, ModelImportError, UnsupportedOpError
from irgraph.graph import Graph, Value
from irgraph.ops.evaluate import known_value
from irgraph.types import MAX_ELEMENTS, TensorType, fresh_dim

from . import converters  # noqa: F401  (registers every converter)
from .converters.registry import find_converter
from .load import load_model, tensor_to_numpy

_MISSING = object()
SUPPORTED_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "ai.irgraph")

# name -> Value visible in a graph: its own first, then the enclosing graphs' (subgraphs read
# outer values directly); a subgraph's scope is ``outer.new_child()``
Scope = ChainMap


def import_model(model, *, base_dir=None) -> Graph:
    """Convert an ONNX model (path, bytes or ModelProto) into an irgraph Graph."""
    proto, bdir = load_model(model, base_dir)
    imp = Importer(proto, bdir)
    return imp.run()


class Importer:
    def __init__(self, proto: onnx.ModelProto, base_dir: Path | None):
        self.proto = proto
        self.base_dir = base_dir
        self.opsets = {}
        for imp in proto.opset_import:
            self.opsets[imp.domain if imp.domain != "ai.onnx" else ""] = imp.version
        if "" not in self.opsets:
            # IR version < 3 models carry no opset_import; they are opset 1
            self.opsets[""] = 1 if not proto.opset_import else max(self.opsets.values())
        self.functions = {(f.domain, f.name): f for f in proto.functions}
        self._uid = itertools.count()

    # ---- entry -------------------------------------------------------------------------
    def run(self) -> Graph:
        self.check_supported(self.proto.graph, self.opsets)
        g = self.convert_graph(self.proto.graph, None, None, self.opsets, top=True)
        g.meta["opset"] = self.opsets.get("")
        g.meta["producer"] = self.proto.producer_name
        return g

    # ---- support check -------------------------------------------------------------------
    def check_supported(self, gproto, opsets) -> None:
        missing: dict[tuple, list[str]] = {}
        self._collect_missing(gproto, opsets, missing)
        if missing:
            parts = []
            for (dom, op, ver), names in sorted(missing.items()):
                shown = ", ".join(repr(n) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                parts.append(f"{dom or 'ai.onnx'}::{op} (opset {ver}; nodes {shown})")
            raise UnsupportedOpError(f"{len(missing)} unsupported operator(s): " + "; ".join(parts),
                                     hint="irgraph implements the default ONNX domain; see the "
                                          "expected-failure list in tests/frontends/onnx for known gaps")

    def _collect_missing(self, gproto, opsets, missing) -> None:
        for i, n in enumerate(gproto.node):
            dom = n.domain if n.domain != "ai.onnx" else ""
            ver = opsets.get(dom)
            if (dom, n.op_type) in self.functions:
                f = self.functions[(dom, n.op_type)]
                fops = dict(opsets)
                fops.update({o.domain if o.domain != "ai.onnx" else "": o.version for o in f.opset_import})
                self._collect_missing(f, fops, missing)
                continue
            if ver is None:
                missing.setdefault((dom, n.op_type, None), []).append(n.name or f"{gproto.name or 'graph'}#{i}")
                continue
            if find_converter(dom, n.op_type, ver) is None and _schema_function(n, dom, ver) is None:
                missing.setdefault((dom, n.op_type, ver), []).append(n.name or f"{gproto.name or 'graph'}#{i}")
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    self._collect_missing(a.g, opsets, missing)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sg in a.graphs:
                        self._collect_missing(sg, opsets, missing)

    # ---- graphs ------------------------------------------------------------------------
    def convert_graph(self, gproto, parent: Graph | None, outer: Scope | None, opsets,
                      input_types=None, top: bool = False) -> Graph:
        g = Graph(gproto.name or ("main" if top else "body"), parent=parent)
        scope: Scope = outer.new_child() if outer is not None else Scope()
        for n in gproto.node:
            for o in n.output:
                if o:
                    g.claim_name(o)
        init_names = set()
        for t in gproto.initializer:
            arr = tensor_to_numpy(t, self.base_dir, t.name)
            v = g.add_const(arr, t.name)
            scope[t.name] = v
            init_names.add(t.name)
        for t in gproto.sparse_initializer:
            arr = _sparse_to_numpy(t, self.base_dir)
            v = g.add_const(arr, t.values.name)
            scope[t.values.name] = v
            init_names.add(t.values.name)
        k = 0
        for vi in gproto.input:
            if vi.name in init_names:
                continue  # IR < 4: initializers are also listed as inputs
            given = input_types[k] if input_types is not None and k < len(input_types) else None
            k += 1
            t = given if given is not None else value_info_type(vi, top=top)
            if t is None:
                raise ModelImportError(f"graph input {vi.name!r} has no type", input=vi.name)
            scope[vi.name] = g.add_input(vi.name, t)
        for n in _toposort(gproto, scope):
            self.convert_node(n, g, scope, opsets)
        outs = []
        for vi in gproto.output:
            v = scope.get(vi.name)
            if v is None:
                raise ModelImportError(f"graph output {vi.name!r} is never produced", input=vi.name)
            outs.append(v)
        g.set_outputs(outs)
        g.meta["output_names"] = [vi.name for vi in gproto.output]
        return g

    def convert_node(self, n: onnx.NodeProto, g: Graph, scope: Scope, opsets) -> None:
        dom = n.domain if n.domain != "ai.onnx" else ""
        ver = opsets.get(dom)
        if (dom, n.op_type) in self.functions:
            return self.inline_function(n, self.functions[(dom, n.op_type)], g, scope, opsets)
        conv = find_converter(dom, n.op_type, ver) if ver is not None else None
        if conv is None:
            fn = _schema_function(n, dom, ver, [self._input_typeproto(scope, x) for x in n.input])
            if fn is None:
                raise UnsupportedOpError(f"unsupported operator {dom or 'ai.onnx'}::{n.op_type}",
                                         node=n.name, op=n.op_type, opset=ver)
            return self.inline_function(n, fn, g, scope, opsets)
        ctx = ConvertCtx(self, n, g, scope, ver, opsets)
        try:
            res = conv(ctx)
        except IrgraphError as e:
            raise e.with_context(node=n.name or n.output[0], op=n.op_type, opset=ver)
        except Exception as e:
            raise ModelImportError(f"conversion failed: {type(e).__name__}: {e}",
                                   node=n.name or (n.output[0] if n.output else None), op=n.op_type, opset=ver) from e
        if isinstance(res, Value) or res is None:
            res = [res]
        res = list(res)
        for i, name in enumerate(n.output):
            if not name:
                continue
            v = res[i] if i < len(res) else None
            if v is None:
                raise ModelImportError(f"output {i} ({name!r}) is not produced by this converter",
                                       node=n.name, op=n.op_type, opset=ver)
            if not v.meta.get("onnx_named") and (
                    (v.producer is not None and v.producer in ctx.new_nodes) or v in ctx.new_consts):
                if v in ctx.new_consts:
                    g.constants.pop(v.name, None)
                    g.constants[name] = v
                v.name = name
                v.meta["onnx_named"] = True
            scope[name] = v

    def inline_function(self, n, fproto, g: Graph, scope: Scope, opsets) -> None:
        """Expand a call of a FunctionProto: bind formals, substitute attributes, rename locals."""
        uid = next(self._uid)
        prefix = f"{n.name or n.op_type}__{uid}__"
        fops = dict(opsets)
        for o in fproto.opset_import:
            fops[o.domain if o.domain != "ai.onnx" else ""] = o.version
        call_attrs = {a.name: a for a in n.attribute}
        defaults = {a.name: a for a in getattr(fproto, "attribute_proto", [])}
        dom = n.domain if n.domain != "ai.onnx" else ""
        try:  # an ONNX op expanded into its schema's function: the schema's attribute defaults
            schema = onnx.defs.get_schema(n.op_type, opsets.get(dom, 1), dom)
            for name, sa in schema.attributes.items():
                if name not in defaults and sa.default_value is not None and sa.default_value.type:
                    d = onnx.AttributeProto()
                    d.CopyFrom(sa.default_value)
                    d.name = name
                    defaults[name] = d
        except Exception:
            pass  # a model-local function has no schema
        rename: dict[str, str] = {}
        for formal, actual in zip(fproto.input, n.input):
            rename[formal] = actual
        for formal in list(fproto.input)[len(n.input):]:
            rename[formal] = ""
        for formal, actual in zip(fproto.output, n.output):
            rename[formal] = actual
        body = []
        for fn in fproto.node:
            nn = onnx.NodeProto()
            nn.CopyFrom(fn)
            del nn.input[:]
            del nn.output[:]
            nn.input.extend(rename.get(x, prefix + x) if x else "" for x in fn.input)
            nn.output.extend(rename.get(x, prefix + x) if x else "" for x in fn.output)
            nn.name = prefix + (fn.name or fn.op_type)
            attrs = []
            for a in fn.attribute:
                if a.ref_attr_name:
                    src = call_attrs.get(a.ref_attr_name) or defaults.get(a.ref_attr_name)
                    if src is None:
                        continue
                    b = onnx.AttributeProto()
                    b.CopyFrom(src)
                    b.name = a.name
                    attrs.append(b)
                else:
                    attrs.append(a)
            del nn.attribute[:]
            nn.attribute.extend(attrs)
            body.append(nn)
        for x in itertools.chain.from_iterable(b.output for b in body):
            if x:
                g.claim_name(x)
        for nn in body:
            self.convert_node(nn, g, scope, fops)

    def _input_typeproto(self, scope: Scope, name: str):
        if not name:
            return onnx.TypeProto()
        v = scope.get(name)
        if v is None:
            return onnx.TypeProto()
        return type_to_typeproto(v.type)


class ConvertCtx:
    """What a converter sees of one ONNX node, and how it builds core ops for it."""

    def __init__(self, imp: Importer, node: onnx.NodeProto, g: Graph, scope: Scope, opset: int, opsets):
        self.imp = imp
        self.node = node
        self.g = g
        self.scope = scope
        self.opset = opset
        self.opsets = opsets
        self.op_type = node.op_type
        self.name = node.name or (node.output[0] if node.output else node.op_type)
        self.new_nodes: set = set()
        self.new_consts: set = set()
        self._attrs = {a.name: a for a in node.attribute}
        self.inputs: list[Value | None] = []
        for i, x in enumerate(node.input):
            if not x:
                self.inputs.append(None)
                continue
            v = scope.get(x)
            if v is None:
                raise ModelImportError(f"input {i} ({x!r}) is not produced by any node, input or initializer",
                                       node=self.name, op=node.op_type, opset=opset, input=x)
            self.inputs.append(v)

    # ---- inputs ------------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.node.output)

    def output_wanted(self, i: int) -> bool:
        return i < len(self.node.output) and bool(self.node.output[i])

    def input(self, i: int) -> Value | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def has_input(self, i: int) -> bool:
        return self.input(i) is not None

    def const(self, i: int):
        """The input's value when known at import time (initializer, Constant, shape arithmetic)."""
        return known_value(self.input(i))

    def require_const(self, i: int, what: str = "this input"):
        v = self.const(i)
        if v is None:
            self.fail(f"{what} must be known when the model is compiled (a constant or computable "
                      "from static shapes)", input=i)
        return v

    # ---- attributes ----------------------------------------------------------------------
    def has_attr(self, name: str) -> bool:
        return name in self._attrs

    def attr(self, name: str, default=_MISSING):
        a = self._attrs.get(name)
        if a is None:
            if default is _MISSING:
                self.fail(f"missing required attribute {name!r}")
            return default
        return attribute_value(a, self)

    # ---- building ------------------------------------------------------------------------
    def op(self, op: str, inputs, attrs: dict | None = None, num_outputs: int | None = None, name: str | None = None):
        before = len(self.g.nodes)
        source = [self.name]
        for p in getattr(self.node, "metadata_props", ()):
            if p.key == "source" and p.value:  # written by our exporter: keep the original names
                source = p.value.split(",")
        res = self.g.op(op, inputs, attrs, name=name or self.name, num_outputs=num_outputs,
                        meta={"source": source, "onnx_op": self.op_type, "opset": self.opset})
        for node in self.g.nodes[before:]:
            self.new_nodes.add(node)
        return res

    def constant(self, array, dtype: DType | None = None, name: str | None = None) -> Value:
        v = self.g.add_const(array, name or f"{self.name}_const", dtype=dtype)
        self.new_consts.add(v)
        return v

    def subgraph(self, attr_name: str, input_types=None) -> Graph:
        a = self._attrs.get(attr_name)
        if a is None or a.type != onnx.AttributeProto.GRAPH:
            self.fail(f"missing graph attribute {attr_name!r}")
        return self.imp.convert_graph(a.g, self.g, self.scope, self.opsets, input_types=input_types)

    def fail(self, message: str, *, input: int | None = None, expected=None, actual=None, hint=None):
        inp = None
        if input is not None and input < len(self.node.input):
            inp = self.node.input[input]
        raise ModelImportError(message, node=self.name, op=self.op_type, opset=self.opset,
                               input=inp, expected=expected, actual=actual, hint=hint)


# ---- helpers ---------------------------------------------------------------------------
def attribute_value(a: onnx.AttributeProto, ctx: ConvertCtx | None = None):
    T = onnx.AttributeProto
    if a.type == T.FLOAT:
        return float(a.f)
    if a.type == T.INT:
        return int(a.i)
    if a.type == T.STRING:
        return a.s.decode("utf-8", errors="replace")
    if a.type == T.TENSOR:
        return tensor_to_numpy(a.t, ctx.imp.base_dir if ctx else None, a.name)
    if a.type == T.SPARSE_TENSOR:
        return _sparse_to_numpy(a.sparse_tensor, ctx.imp.base_dir if ctx else None)
    if a.type == T.GRAPH:
        return a.g
    if a.type == T.FLOATS:
        return [float(x) for x in a.floats]
    if a.type == T.INTS:
        return [int(x) for x in a.ints]
    if a.type == T.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in a.strings]
    if a.type == T.TENSORS:
        return [tensor_to_numpy(t, ctx.imp.base_dir if ctx else None, a.name) for t in a.tensors]
    if a.type == T.GRAPHS:
        return list(a.graphs)
    if a.type == T.TYPE_PROTO:
        return a.tp
    raise ModelImportError(f"attribute {a.name!r} has unsupported type {a.type}")


def value_info_type(vi: onnx.ValueInfoProto, top: bool = False) -> TensorType | None:
    tp = vi.type
    which = tp.WhichOneof("value")
    if which is None:
        return None
    if which != "tensor_type":
        raise ModelImportError(f"value {vi.name!r} has type {which.replace('_type', '')}; "
                               "irgraph supports tensors only (no sequences, maps or optionals)",
                               input=vi.name)
    tt = tp.tensor_type
    dtype = DType.from_onnx(tt.elem_type) if tt.elem_type else None
    if dtype is None:
        return None
    if not tt.HasField("shape"):
        return TensorType(None, dtype)
    dims = []
    for i, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value"):
            if d.dim_value < 0:
                raise ModelImportError(f"value {vi.name!r} declares negative dimension {d.dim_value}", input=vi.name)
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(fresh_dim(f"{vi.name}_"))
    t = TensorType(dims, dtype)
    n = t.numel
    if n is not None and n > MAX_ELEMENTS:
        raise ModelImportError(f"value {vi.name!r} declares shape {tuple(dims)} = {n} elements, more "
                               f"than irgraph's limit of {MAX_ELEMENTS}", input=vi.name)
    return t


def type_to_typeproto(t: TensorType) -> onnx.TypeProto:
    tp = onnx.TypeProto()
    tp.tensor_type.elem_type = t.dtype.onnx
    if t.shape is not None:
        shp = tp.tensor_type.shape
        for d in t.shape:
            dim = shp.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            else:
                dim.dim_param = d
    return tp


def _schema_function(n: onnx.NodeProto, dom: str, ver: int | None, input_types=None):
    """The FunctionProto ONNX defines for this op at this opset, if it has one."""
    if ver is None:
        return None
    try:
        schema = onnx.defs.get_schema(n.op_type, ver, dom)
    except Exception:
        return None
    try:
        if schema.has_function:
            f = schema.get_function_with_opset_version(ver) if hasattr(schema, "get_function_with_opset_version") else None
            if isinstance(f, (bytes, bytearray)):
                fp = onnx.FunctionProto()
                fp.ParseFromString(f)
                f = fp
            return f if f is not None and len(f.node) else schema.function_body
        if schema.has_context_dependent_function:
            if input_types is None:
                return True  # available; the exact body depends on input types known at conversion
            tps = [t.SerializeToString() for t in input_types]
            raw = None
            if hasattr(schema, "get_context_dependent_function_with_opset_version"):
                raw = schema.get_context_dependent_function_with_opset_version(ver, n.SerializeToString(), tps)
            else:
                raw = schema.get_context_dependent_function(n.SerializeToString(), tps)
            if not raw:
                return None
            f = onnx.FunctionProto()
            f.ParseFromString(raw)
            return f
    except Exception:
        return None
    return None


def _toposort(gproto, scope: Scope) -> list:
    """Nodes in dependency order; a cycle or an input nobody produces is a clear error."""
    produced = {}
    for i, n in enumerate(gproto.node):
        for o in n.output:
            if o:
                if o in produced:
                    raise ModelImportError(f"value {o!r} is produced twice (nodes "
                                           f"{gproto.node[produced[o]].name!r} and {n.name!r})")
                produced[o] = i
    deps = []
    for i, n in enumerate(gproto.node):
        d = set()
        for x in list(n.input) + _implicit_inputs(n):
            if not x:
                continue
            if x in produced:
                d.add(produced[x])
            elif x not in scope:
                raise ModelImportError(f"input {x!r} is not produced by any node, graph input or initializer",
                                       node=n.name or n.op_type, op=n.op_type, input=x)
        deps.append(d)
    order, state = [], [0] * len(deps)
    for root in range(len(deps)):
        if state[root]:
            continue
        stack = [(root, iter(sorted(deps[root])))]
        state[root] = 1
        while stack:
            i, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                state[i] = 2
                order.append(i)
            elif state[nxt] == 1:
                cyc = [gproto.node[j].name or gproto.node[j].op_type for j, _ in stack]
                raise ModelImportError("the graph has a cycle through nodes " + " -> ".join(repr(c) for c in cyc))
            elif state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, iter(sorted(deps[nxt]))))
    return [gproto.node[i] for i in order]


def _implicit_inputs(n: onnx.NodeProto) -> list[str]:
    """Outer-scope names a node's subgraphs read (they must be computed before the node)."""
    names = []
    for a in n.attribute:
        gs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []
        for sg in gs:
            local = {x.name for x in sg.input} | {t.name for t in sg.initializer}
            for sn in sg.node:
                local.update(o for o in sn.output if o)
            for sn in sg.node:
                for x in list(sn.input) + _implicit_inputs(sn):
                    if x and x not in local:
                        names.append(x)
            for o in sg.output:
                if o.name not in local:
                    names.append(o.name)
    return names


def _sparse_to_numpy(sp: onnx.SparseTensorProto, base_dir) -> np.ndarray:
    vals = tensor_to_numpy(sp.values, base_dir, sp.values.name)
    idx = tensor_to_numpy(sp.indices, base_dir, sp.values.name + "_indices")
    shape = tuple(sp.dims)
    n = int(np.prod(shape)) if shape else 1
    if n > MAX_ELEMENTS:
        raise ModelImportError(f"sparse tensor {sp.values.name!r} declares {n} elements")
    dense = np.zeros(n, dtype=vals.dtype)
    try:
        if idx.ndim == 2:
            flat = np.ravel_multi_index(idx.T, shape)  # raises on out-of-range coordinates
        else:
            flat = idx.astype(np.int64)
            if flat.size and (flat.min() < 0 or flat.max() >= n):
                raise ValueError("index out of range")
    except ValueError as e:
        raise ModelImportError(f"sparse tensor {sp.values.name!r} has indices outside its shape {shape}: {e}") from None
    dense[flat] = vals
    return dense.reshape(shape)
