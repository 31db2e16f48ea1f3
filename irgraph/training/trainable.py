"""What the training API trains: a forward graph whose parameters are graph inputs.

``Trainable`` holds a training-mode and an inference-mode forward graph (the same graph for
models without dropout or batch norm), the names of the inputs fed from the data, the
trainable parameters (input name -> current value), and the buffers: state that the forward
pass itself updates in training mode (batch norm's running statistics), each with the output
that carries its new value.

Models reach it three ways:
- ``Trainable.from_graph(graph)``: float constants of an imported graph become parameters
  (``trainable`` picks which; running statistics of batch norms stay constants);
- an ONNX model (path, bytes, ModelProto): imported, then as above;
- any object with ``__irgraph_trainable__(input_specs) -> Trainable`` (the DSL's modules).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from ..errors import IrgraphError
from ..graph import Graph, Value
from ..types import TensorType


@dataclass
class Trainable:
    train_graph: Graph
    eval_graph: Graph
    data_inputs: list[str]
    params: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray] = field(default_factory=dict)
    buffer_updates: dict[str, str] = field(default_factory=dict)   # buffer input -> train_graph output
    prediction: str | None = None                                 # output the loss reads (default: first)

    def __post_init__(self):
        for g in (self.train_graph, self.eval_graph):
            names = {v.name for v in g.inputs}
            missing = [n for n in [*self.data_inputs, *self.params, *self.buffers] if n not in names]
            if missing:
                raise IrgraphError(f"trainable model: {missing[0]!r} is not an input of graph {g.name!r}",
                                   expected="a graph input", actual=missing[0])
        outs = {v.name for v in self.train_graph.outputs}
        for b, o in self.buffer_updates.items():
            if o not in outs:
                raise IrgraphError(f"trainable model: the update of buffer {b!r} names no output",
                                   expected="an output of the training graph", actual=o)
        if self.prediction is None:
            self.prediction = self.eval_graph.outputs[0].name
        if not self.params:
            raise IrgraphError("the model has no trainable parameters",
                               hint="float constants (initializers) or DSL parameters are trained")
        for n, a in self.params.items():
            if not np.asarray(a).dtype.kind == "f":
                raise IrgraphError(f"parameter {n!r} is not a float tensor", input=n,
                                   expected="float", actual=str(np.asarray(a).dtype))

    @classmethod
    def from_graph(cls, graph: Graph, trainable: Iterable[str] | Callable[[str], bool] | None = None) -> "Trainable":
        """Make the float constants of ``graph`` (or those ``trainable`` selects) parameters."""
        g = graph.copy()
        users = g.users()
        stats = _running_stat_constants(g, users)
        if trainable is None:
            def pick(v: Value) -> bool:
                return v.dtype.is_float and v.const.size > 0 and v.name not in stats
        elif callable(trainable):
            def pick(v: Value) -> bool:
                return v.dtype.is_float and bool(trainable(v.name))
        else:
            wanted = set(trainable)
            unknown = wanted - set(g.constants)
            if unknown:
                raise IrgraphError(f"no constant named {sorted(unknown)[0]!r} to train",
                                   expected="one of the model's initializers", actual=sorted(unknown)[0])

            def pick(v: Value) -> bool:
                return v.name in wanted
        data = [v.name for v in g.inputs]
        params = {}
        moved = []
        for name, c in list(g.constants.items()):
            if not pick(c) or c not in users:
                continue
            params[name] = np.array(c.const, copy=True)
            _constant_to_input(g, c)
            moved.append(c)
        _forget_known_values(g, moved)
        return cls(g, g, data, params)

    def param_types(self) -> dict[str, TensorType]:
        by = {v.name: v.type for v in self.train_graph.inputs}
        return {n: by[n] for n in self.params}


def _running_stat_constants(g: Graph, users) -> set[str]:
    """Constants read as a batch norm's mean/variance: statistics, not parameters."""
    out = set()
    for n in g.nodes:
        if n.op == "batch_norm":
            for v in n.inputs[3:5]:
                if v is not None and v.is_const:
                    out.add(v.name)
    return out


def _constant_to_input(g: Graph, c: Value) -> None:
    """Turn constant ``c`` into a graph input of the same name (the value keeps its identity, so
    the nodes reading it need no rewiring)."""
    del g.constants[c.name]
    c.const = None
    g.inputs.append(c)
    c.meta.pop("value", None)


def _forget_known_values(g: Graph, sources: list[Value]) -> None:
    """Drop the compile-time values (``meta["value"]``, see ``ops/evaluate.py``) that were
    computed from ``sources`` while they were constants: an importer evaluates small nodes on
    constants (a Gemm weight's transpose, BatchNorm's scale / sqrt(var + eps)), and a value left
    behind would let constant folding bake the starting weights into every training step."""
    stale = set(sources)

    def walk(graph: Graph) -> bool:
        hit = False
        for n in graph.nodes:
            reads = any(v is not None and v in stale for v in n.inputs)
            for sg in n.subgraphs():
                reads = walk(sg) or reads or any(v in stale for v in sg.captured_values())
            if reads:
                hit = True
                for o in n.outputs:
                    stale.add(o)
                    o.meta.pop("value", None)
        return hit

    walk(g)


def as_trainable(model, input_specs=None, trainable=None) -> Trainable:
    """A Trainable from a Trainable, a Graph, an ONNX model or a DSL module."""
    if isinstance(model, Trainable):
        return model
    hook = getattr(model, "__irgraph_trainable__", None)
    if hook is not None:
        tm = hook(input_specs)
        if not isinstance(tm, Trainable):
            raise IrgraphError(f"{type(model).__name__}.__irgraph_trainable__ returned "
                               f"{type(tm).__name__}", expected="irgraph.training.Trainable")
        return tm
    from ..api import to_graph
    return Trainable.from_graph(to_graph(model), trainable)
