"""The op registry: one ``OpDef`` per core op, holding everything every layer needs to know of it.

An entry is written once, in ``irgraph/ops/<family>.py``, and holds side by side:

- ``attrs``      the attribute schema (kind and default of each attribute),
- ``infer``      type and shape inference: ``infer(ctx) -> [TensorType, ...]``,
- ``reference``  the numpy implementation the interpreter runs: ``reference(inputs, attrs) -> array | tuple``,
- ``grad``       the gradient rule, written with other ops (``None`` until autodiff lands; see
                 ``differentiable``),
- ``scalar``     for elementwise ops, the scalar formula ``scalar(b, *xs, **attrs)`` evaluated against
                 a backend's scalar builder (``irgraph.ops.scalar``), from which loops are generated,
- ``decompose``  for composite ops, ``decompose(g, inputs, attrs) -> [Value, ...]`` built from primitives.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..dtype import DType
from ..errors import IrgraphError, ShapeError
from ..types import TensorType, fresh_dim

REQUIRED = object()

ATTR_KINDS = ("int", "float", "str", "ints", "floats", "strs", "bool", "dtype", "tensor",
              "graph", "any")


@dataclass(frozen=True)
class Attr:
    kind: str
    default: Any = REQUIRED
    doc: str = ""

    def __post_init__(self):
        if self.kind not in ATTR_KINDS:
            raise ValueError(f"unknown attribute kind {self.kind!r}")


def _coerce_attr(op: str, name: str, spec: Attr, value, node):
    k = spec.kind
    try:
        if k == "int":
            if isinstance(value, (bool, np.bool_)):
                return int(value)
            if isinstance(value, (int, np.integer)):
                return int(value)
            raise TypeError
        if k == "float":
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                return float(value)
            raise TypeError
        if k == "bool":
            if isinstance(value, (bool, np.bool_, int, np.integer)):
                return bool(value)
            raise TypeError
        if k == "str":
            if isinstance(value, bytes):
                return value.decode()
            if isinstance(value, str):
                return value
            raise TypeError
        if k == "ints":
            if isinstance(value, (list, tuple, np.ndarray)) and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in value):
                return tuple(int(x) for x in value)
            raise TypeError
        if k == "floats":
            if isinstance(value, (list, tuple, np.ndarray)):
                return tuple(float(x) for x in value)
            raise TypeError
        if k == "strs":
            if isinstance(value, (list, tuple)):
                return tuple(x.decode() if isinstance(x, bytes) else str(x) for x in value)
            raise TypeError
        if k == "dtype":
            if isinstance(value, DType):
                return value
            if isinstance(value, str):
                return DType.from_name(value)
            raise TypeError
        if k == "tensor":
            return np.asarray(value)
        if k == "graph":
            from ..graph import Graph
            if isinstance(value, Graph):
                return value
            raise TypeError
        return value
    except (TypeError, ValueError):
        raise ShapeError(f"attribute {name!r} must be of kind {k}, got {type(value).__name__} {value!r:.60}",
                         node=node, op=op) from None


class InferCtx:
    """What an op's inference sees: its inputs (types and, when constant, values) and attributes."""

    def __init__(self, op: "OpDef", inputs: Sequence, attrs: dict, node: str | None,
                 num_outputs: int | None):
        self.op = op
        self.inputs = list(inputs)
        self.attrs = attrs
        self.node = node
        self.num_outputs = num_outputs

    @property
    def types(self) -> list[TensorType | None]:
        return [None if v is None else v.type for v in self.inputs]

    def type(self, i: int) -> TensorType | None:
        return self.inputs[i].type if i < len(self.inputs) and self.inputs[i] is not None else None

    def has(self, i: int) -> bool:
        return i < len(self.inputs) and self.inputs[i] is not None

    def const(self, i: int) -> np.ndarray | None:
        """The value of input ``i`` when it is known at compile time, else None."""
        if not self.has(i):
            return None
        v = self.inputs[i]
        if v.const is not None:
            return v.const
        return v.meta.get("value")

    def input_name(self, i: int) -> str | None:
        return self.inputs[i].name if self.has(i) else None

    def fresh(self, prefix: str = "d") -> str:
        return fresh_dim(prefix)

    def fail(self, message: str, *, input: int | None = None, expected=None, actual=None,
             hint: str | None = None):
        raise ShapeError(message, node=self.node, op=self.op.name,
                         input=None if input is None else self.input_name(input),
                         expected=expected, actual=actual, hint=hint)


@dataclass
class OpDef:
    name: str
    infer: Callable[[InferCtx], list]
    reference: Callable
    attrs: dict = field(default_factory=dict)
    inputs: tuple = (1, 1)            # (min, max); max None = variadic
    kind: str = "other"               # elementwise | reduction | contraction | movement | index | control | composite | random | other
    grad: Callable | None = None
    differentiable: bool = False
    scalar: Callable | None = None
    decompose: Callable | None = None
    variadic_outputs: bool = False
    runs_subgraphs: bool = False      # reference(inputs, attrs, run) with run(graph, feeds) -> outputs
    value: Callable | None = None     # value(ctx) -> [array] when outputs are known from types alone (shape, size)
    random: bool = False              # outputs are random draws: never evaluated at compile time
    dtypes: tuple = ()                # input dtypes accepted, where the op declares them (elementwise ops do)
    doc: str = ""

    def normalize_attrs(self, attrs: dict, node: str | None = None) -> dict:
        out = {}
        for k, v in attrs.items():
            spec = self.attrs.get(k)
            if spec is None:
                raise ShapeError(f"unknown attribute {k!r}; {self.name} takes "
                                 f"{', '.join(sorted(self.attrs)) or 'no attributes'}",
                                 node=node, op=self.name)
            out[k] = _coerce_attr(self.name, k, spec, v, node) if v is not None else None
        for k, spec in self.attrs.items():
            if k not in out or out[k] is None:
                if spec.default is REQUIRED:
                    raise ShapeError(f"missing required attribute {k!r}", node=node, op=self.name)
                out[k] = spec.default
        return out

    def infer_types(self, inputs, attrs, node=None, num_outputs=None) -> list[TensorType]:
        lo, hi = self.inputs
        n = len(inputs)
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo} to {'any number' if hi is None else hi}"
            raise ShapeError(f"takes {want} inputs", node=node, op=self.name, expected=want, actual=n)
        ctx = InferCtx(self, inputs, attrs, node, num_outputs)
        try:
            out = self.infer(ctx)
        except IrgraphError as e:
            raise e.with_context(node=node, op=self.name)
        return list(out)

    def run_reference(self, inputs, attrs, run=None) -> list[np.ndarray]:
        out = self.reference(inputs, attrs, run) if self.runs_subgraphs else self.reference(inputs, attrs)
        if isinstance(out, (tuple, list)):
            return list(out)
        return [out]


_REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in _REGISTRY:
        raise RuntimeError(f"op {opdef.name!r} registered twice (is a module imported under two names?)")
    _REGISTRY[opdef.name] = opdef
    return opdef


def get_op(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise IrgraphError(f"no op named {name!r} in the registry") from None


def has_op(name: str) -> bool:
    return name in _REGISTRY


def all_ops() -> dict[str, OpDef]:
    return dict(_REGISTRY)
