"""``TracedModel``: a traced Graph plus what a caller (a trainer) needs to feed and carry it.

Graph inputs come in this order: the data inputs, then parameters, buffers and random inputs in
the order the trace first touched them. Graph outputs are the model's outputs, then one per
buffer update (``state_outputs``). The same name maps are kept JSON-safe in
``graph.meta["dsl"]`` so they survive anything that keeps the Graph but not this object.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from irgraph.errors import InputError
from irgraph.graph import Graph
from irgraph.types import TensorType


@dataclass
class RandomInput:
    """A graph input a caller draws afresh for every run: a dropout keep-mask already scaled
    (``keep / (1 - rate)`` or 0), of the traced tensor's shape (symbols bound from the data)."""

    kind: str
    rate: float
    type: TensorType

    def draw(self, rng: np.random.Generator, dims: Mapping[str, int]) -> np.ndarray:
        shape = tuple(d if isinstance(d, int) else int(dims[d]) for d in self.type.shape)
        if self.rate <= 0:
            return np.ones(shape, self.type.dtype.np)
        if self.rate >= 1:
            return np.zeros(shape, self.type.dtype.np)
        keep = rng.random(shape) >= self.rate
        return (keep / (1.0 - self.rate)).astype(self.type.dtype.np)


@dataclass
class TracedModel:
    """The result of ``Module.trace`` / ``Tracer.finish``.

    - ``graph``: the traced Graph (``irgraph.compile`` accepts this object directly);
    - ``inputs`` / ``outputs``: graph input names of the data, graph output names of the model;
    - ``params``: trainable parameter name -> graph input name (``params="inputs"``) or
      constant name (``params="constants"``);
    - ``frozen``: non-trainable parameter name -> constant name;
    - ``buffers``: buffer name -> graph input (or constant) name; ``state_outputs``: buffer name
      -> graph output name of its updated value (BatchNorm's running statistics in training);
    - ``random_inputs``: graph input name -> ``RandomInput`` (dropout masks) to draw per run;
    - ``initial``: parameter and buffer name -> the array the trace used.
    """

    graph: Graph
    inputs: list[str]
    outputs: list[str]
    params: dict[str, str] = field(default_factory=dict)
    frozen: dict[str, str] = field(default_factory=dict)
    buffers: dict[str, str] = field(default_factory=dict)
    state_outputs: dict[str, str] = field(default_factory=dict)
    random_inputs: dict[str, RandomInput] = field(default_factory=dict)
    initial: dict[str, np.ndarray] = field(default_factory=dict)
    params_mode: str = "constants"
    training: bool = False

    def __irgraph_graph__(self, **kwargs) -> Graph:
        return self.graph

    def to_graph(self, **kwargs) -> Graph:
        return self.graph

    @property
    def input_types(self) -> dict[str, TensorType]:
        return {v.name: v.type for v in self.graph.inputs}

    def bind_dims(self, data: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Sizes of the symbolic dims, read from the data arrays given by input name."""
        dims: dict[str, int] = {}
        types = self.input_types
        for name, arr in data.items():
            t = types.get(name)
            if t is None or t.shape is None:
                continue
            shape = np.shape(arr)
            if len(shape) != len(t.shape):
                raise InputError("wrong rank", input=name, expected=t.shape, actual=shape)
            for want, have in zip(t.shape, shape):
                if isinstance(want, str) and dims.setdefault(want, have) != have:
                    raise InputError(f"dimension {want!r} is {dims[want]} in an earlier input",
                                     input=name, expected=t.shape, actual=shape)
        return dims

    def feeds(self, *data, params: Mapping[str, np.ndarray] | None = None,
              rng: np.random.Generator | None = None, **named) -> dict[str, np.ndarray]:
        """Every graph input by name: the data (by position or name), the parameters and buffers
        (``params`` by parameter name, else the initial arrays) and fresh random inputs drawn
        from ``rng`` (a seed-0 generator when none is given)."""
        feed = dict(zip(self.inputs, data))
        feed.update(named)
        missing = [n for n in self.inputs if n not in feed]
        if missing:
            raise InputError(f"missing data input(s) {', '.join(missing)}", expected=self.inputs)
        values = dict(self.initial)
        values.update(params or {})
        for pname, iname in list(self.params.items()) + list(self.buffers.items()):
            if iname in self.input_types:
                feed[iname] = values[pname]
        if self.random_inputs:
            rng = rng if rng is not None else np.random.default_rng(0)
            dims = self.bind_dims({k: feed[k] for k in self.inputs})
            for iname, r in self.random_inputs.items():
                feed[iname] = r.draw(rng, dims)
        return feed

    def run(self, *data, params=None, rng=None, **named) -> list[np.ndarray]:
        """Run the graph on the reference interpreter (the oracle); returns every output."""
        from irgraph.interpreter import run_graph
        return run_graph(self.graph, self.feeds(*data, params=params, rng=rng, **named))


def meta_record(t: TracedModel) -> dict:
    """The JSON-safe part of ``t`` stored in ``graph.meta["dsl"]``."""
    return {
        "inputs": list(t.inputs), "outputs": list(t.outputs), "params": dict(t.params),
        "frozen": dict(t.frozen), "buffers": dict(t.buffers), "state_outputs": dict(t.state_outputs),
        "random_inputs": {k: {"kind": r.kind, "rate": r.rate} for k, r in t.random_inputs.items()},
        "params_mode": t.params_mode, "training": t.training,
    }
