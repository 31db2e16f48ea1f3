"""Shape inference: every node's output types re-derived from the registry, as specific as the
graph allows, with the shape arithmetic exporters write followed symbolically.

- Types only get more specific: a static dim beats a symbol, a named symbol (``batch``) beats a
  fresh one (``?reshape3``), a known rank beats an unknown one. Both the old and the new type
  are true statements about the tensor, so their combination is too; two different static
  sizes for one dim are an inference bug and raise.
- ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` is followed with symbolic values: the
  int vectors on the way hold dims (ints or symbols), so a reshape to
  ``concat(shape(x)[0], shape(x)[1], 4, 16)`` gets the type ``[N, S, 4, 16]``, not four fresh
  symbols. Symbolic dims stay symbolic; sizes that are static become static.
- Integer (and bool) values that are known at compile time -- the shape arithmetic of a graph
  whose shapes are static -- become graph constants in place, so later passes and backends see
  plain constant reshape targets. The nodes that computed them are dropped; nodes left without
  readers by that (``shape(x)`` of a kept ``x``) are eliminate_dead_code's to remove.

Symbolic sizes used as reshape targets are taken to be non-zero (a 0 entry with ``allowzero=0``
means "copy the input dim"; a symbol bound to 0 at run time would too).
"""
from __future__ import annotations


import numpy as np

from irgraph.errors import ShapeError
from irgraph.graph import Graph, Node, Value
from irgraph.ops.evaluate import MAX_KNOWN_ELEMENTS, known_value, propagate_values
from irgraph.ops.registry import get_op
from irgraph.ops.shape import _shape_bounds
from irgraph.ops.shapes import broadcast_shapes, dims_product
from irgraph.types import TensorType, fresh_dim, is_static_dim

from .fold_constants import replace_by_constants
from .registry import register_pass

# longest int vector followed symbolically (shapes are short; anything longer is data)
MAX_SYMBOLIC = 64

# ops that only move elements of their data inputs (listed by index; None = all inputs): their
# symbolic values follow from running the op's reference on an array of element indices
_MOVERS = {"gather": (0,), "slice": (0,), "squeeze": (0,), "unsqueeze": (0,), "reshape": (0,),
           "expand": (0,), "tile": (0,), "transpose": (0,), "split": (0,), "concat": None}


@register_pass("infer_shapes", ensures={"shapes_inferred"},
               description="re-run inference everywhere; follow shape arithmetic; "
                           "static shape values become constants")
def infer_shapes(graph: Graph, ctx) -> bool:
    state = _State()
    changed = state.infer_graph(graph)
    changed |= _materialize(graph)
    return changed


def _is_fresh(d) -> bool:
    return isinstance(d, str) and d.startswith("?")


class _State:
    def __init__(self):
        self.sym: dict[int, list] = {}     # id(Value) -> its elements: ints, symbols or None
        self.subst: dict[str, object] = {}  # fresh symbol -> what it turned out to be

    # ---- types -------------------------------------------------------------------------
    def resolve(self, d):
        seen = 0
        while _is_fresh(d) and d in self.subst and seen < 64:
            d, seen = self.subst[d], seen + 1
        return d

    def resolve_type(self, t: TensorType) -> TensorType:
        if t.shape is None or not any(_is_fresh(d) and d in self.subst for d in t.shape):
            return t
        return TensorType(tuple(self.resolve(d) for d in t.shape), t.dtype)

    def merge(self, old: TensorType, new: TensorType, node: Node) -> TensorType:
        if old.dtype is not new.dtype:
            raise ShapeError(f"inference now gives dtype {new.dtype.name}, the graph says "
                             f"{old.dtype.name}", node=node.name, op=node.op)
        if new.shape is None:
            return old
        if old.shape is None:
            return new
        if len(old.shape) != len(new.shape):
            raise ShapeError(f"inference now gives rank {len(new.shape)}, the graph says "
                             f"{len(old.shape)}", node=node.name, op=node.op, expected=old, actual=new)
        dims = []
        for a, b in zip(old.shape, new.shape):
            b = self.resolve(b)
            if a == b:
                m = a
            elif is_static_dim(a):
                if is_static_dim(b):
                    raise ShapeError("inference gives two different static sizes for one dim",
                                     node=node.name, op=node.op, expected=old, actual=new)
                m = a
            elif is_static_dim(b) or (_is_fresh(a) and not _is_fresh(b)):
                m = b
            else:
                m = a  # two symbols, neither better: keep the graph's, so names stay stable
            if m != a and _is_fresh(a):
                self.subst[a] = m
            dims.append(m)
        return TensorType(tuple(dims), old.dtype)

    # ---- graphs ------------------------------------------------------------------------
    def infer_graph(self, graph: Graph) -> bool:
        # input types are given (a loop body's carried values may change shape between
        # iterations, so what the initial value turned out to be says nothing about them)
        changed = False
        for v in graph.inputs:
            self.note_known(v)
        for v in graph.constants.values():
            self.note_known(v)
        for n in graph.nodes:
            changed |= self.infer_node(n)
        return changed

    def infer_node(self, n: Node) -> bool:
        changed = False
        for sg in n.subgraphs():
            changed |= self.infer_graph(sg)
        opdef = get_op(n.op)
        new = opdef.infer_types(n.inputs, n.attrs, node=n.name, num_outputs=len(n.outputs))
        shaped = self.shape_from_values(n)
        if shaped is not None:
            new = [self.merge(new[0], shaped, n)] + list(new[1:])
        for v, t in zip(n.outputs, new):
            old = self.resolve_type(v.type)
            merged = self.merge(old, t, n)
            if merged != v.type:
                v.type, changed = merged, True
        if not all("value" in o.meta for o in n.outputs):
            propagate_values(n)
        before = [o.type for o in n.outputs]
        self.follow_values(n, opdef)  # may learn the length of a shape vector
        changed |= any(o.type != t for o, t in zip(n.outputs, before))
        for o in n.outputs:
            self.note_known(o)
        return changed

    # ---- symbolic values ---------------------------------------------------------------
    def note_known(self, v: Value) -> None:
        """Record the elements of a small int vector whose value is known."""
        if id(v) in self.sym or v.dtype.kind not in "iu" or v.type.rank is None or v.type.rank > 1:
            return
        a = known_value(v)
        if a is not None and a.size <= MAX_SYMBOLIC:
            self.sym[id(v)] = [int(x) for x in np.asarray(a).reshape(-1)]

    def elems(self, v: Value | None):
        if v is None:
            return None
        got = self.sym.get(id(v))
        if got is None:
            self.note_known(v)
            got = self.sym.get(id(v))
        return got

    def set_elems(self, v: Value, elems: list) -> None:
        if v.dtype.kind not in "iu" or v.type.rank is None or v.type.rank > 1:
            return
        if len(elems) > MAX_SYMBOLIC:
            return
        want = 1 if v.type.rank == 0 else v.type.shape[0]
        if is_static_dim(want) and want != len(elems):
            return
        self.sym[id(v)] = list(elems)
        if "value" not in v.meta and all(isinstance(e, int) for e in elems):
            a = np.array(elems, dtype=v.dtype.np).reshape(() if v.type.rank == 0 else (len(elems),))
            if v.type.matches(a):
                v.meta["value"] = a  # e.g. shape(x)[2] of x: [N, S, 64] is 64 even with N unknown
        if v.type.rank == 1 and not is_static_dim(v.type.shape[0]):
            v.type = TensorType((len(elems),), v.dtype)

    def follow_values(self, n: Node, opdef) -> None:
        outs = n.outputs
        if n.op == "shape":
            x = n.inputs[0].type
            if x.shape is not None:
                s, e = _shape_bounds(len(x.shape), n.attrs)
                self.set_elems(outs[0], [self.resolve(d) for d in x.shape[s:e]])
            return
        if n.op == "cast":
            e = self.elems(n.inputs[0])
            if e is not None and n.inputs[0].dtype.kind in "iu" and outs[0].dtype.kind in "iu":
                self.set_elems(outs[0], e)
            return
        if n.op in ("add", "sub", "mul", "div"):
            self.follow_arith(n, opdef)
            return
        if n.op in _MOVERS:
            self.follow_mover(n, opdef)

    def follow_arith(self, n: Node, opdef) -> None:
        a, b = (self.elems(v) for v in n.inputs)
        o = n.outputs[0]
        if a is None or b is None or o.dtype.kind not in "iu":
            return
        if len(a) != len(b) and 1 not in (len(a), len(b)):
            return
        size = max(len(a), len(b))
        a = a * size if len(a) == 1 else a
        b = b * size if len(b) == 1 else b
        res = []
        for x, y in zip(a, b):
            if isinstance(x, int) and isinstance(y, int):
                try:
                    with np.errstate(all="ignore"):
                        pair = [np.array(x, o.dtype.np), np.array(y, o.dtype.np)]
                        r = opdef.run_reference(pair, n.attrs)[0]
                    res.append(int(r))
                except Exception:
                    res.append(None)
            elif n.op == "mul" and (x == 1 or y == 1):
                res.append(y if x == 1 else x)
            elif n.op == "mul" and (x == 0 or y == 0):
                res.append(0)
            elif n.op in ("add", "sub") and y == 0:
                res.append(x)
            elif n.op == "add" and x == 0:
                res.append(y)
            elif n.op == "div" and y == 1:
                res.append(x)
            else:
                res.append(None)
        self.set_elems(o, res)

    def follow_mover(self, n: Node, opdef) -> None:
        if any(o.dtype.kind not in "iu" or o.type.rank is None or o.type.rank > 1 for o in n.outputs):
            return
        data = _MOVERS[n.op]
        data = range(len(n.inputs)) if data is None else data
        pool: list = []
        args = []
        for i, v in enumerate(n.inputs):
            if v is None:
                args.append(None)
            elif i in data:
                e = self.elems(v)
                if e is None or v.type.shape is None or not v.type.is_static or v.type.numel != len(e):
                    return
                index = np.arange(len(pool), len(pool) + len(e), dtype=np.int64)
                args.append(index.reshape(v.type.shape))
                pool.extend(e)
            else:
                a = known_value(v)
                if a is None:
                    return
                args.append(a)
        try:
            res = opdef.run_reference(args, n.attrs)
        except Exception:
            return
        for o, idx in zip(n.outputs, res):
            idx = np.asarray(idx)
            if idx.ndim <= 1 and idx.size <= MAX_SYMBOLIC:
                self.set_elems(o, [pool[int(i)] for i in idx.reshape(-1)])

    # ---- shapes computed from symbolic values ------------------------------------------
    def shape_from_values(self, n: Node) -> TensorType | None:
        """The first output's type from symbolic shape operands, where the registry's
        inference (which sees only numbers) would make fresh symbols."""
        if n.op == "reshape":
            spec, x = self.elems(n.inputs[1]), n.inputs[0].type
            if spec is None:
                return None
            dims = _symbolic_reshape(x.shape, spec, n.attrs.get("allowzero", 0))
            return None if dims is None else TensorType(dims, x.dtype)
        if n.op == "expand":
            spec, x = self.elems(n.inputs[1]), n.inputs[0].type
            if spec is None or x.shape is None:
                return None
            target = tuple(fresh_dim("expand") if e is None else e for e in spec)
            try:
                return TensorType(broadcast_shapes(x.shape, target), x.dtype)
            except ShapeError:
                return None
        if n.op == "constant_of_shape":
            spec = self.elems(n.inputs[0])
            if spec is None:
                return None
            dims = tuple(fresh_dim("cshape") if e is None else e for e in spec)
            return TensorType(dims, n.outputs[0].dtype)
        return None


_product = dims_product


def _symbolic_reshape(in_shape, spec, allowzero) -> tuple | None:
    res = []
    for i, s in enumerate(spec):
        if isinstance(s, int):
            if s == 0 and not allowzero:
                if in_shape is None or i >= len(in_shape):
                    return None
                res.append(in_shape[i])
            elif s < -1:
                return None
            else:
                res.append(s)
        else:
            res.append(s)  # a symbol, or None (unknown)
    if res.count(-1) > 1:
        return None
    if -1 in res:
        k = res.index(-1)
        others = res[:k] + res[k + 1:]
        res[k] = None
        if in_shape is not None and None not in others:
            total_n, total_s = _product(in_shape)
            known_n, known_s = _product(others)
            left = total_s - known_s
            if not (known_s - total_s) and known_n:
                if not left and total_n % known_n == 0:
                    res[k] = total_n // known_n
                elif total_n == known_n and sum(left.values()) == 1:
                    res[k] = next(iter(left))
    return tuple(fresh_dim("reshape") if d is None else d for d in res)


def _materialize(graph: Graph) -> bool:
    """Nodes whose outputs are all known integer/bool values become constants."""
    changed = False
    for n in list(graph.nodes):
        for sg in n.subgraphs():
            changed |= _materialize(sg)
        if n.subgraphs() or get_op(n.op).random or not n.outputs:
            continue
        vals = [o.meta.get("value") for o in n.outputs]
        if any(a is None or o.dtype.kind not in "iub" or a.size > MAX_KNOWN_ELEMENTS
               for a, o in zip(vals, n.outputs)):
            continue
        if not all(o.type.matches(a) for a, o in zip(vals, n.outputs)):
            continue
        replace_by_constants(graph, n, vals)
        changed = True
    return changed
