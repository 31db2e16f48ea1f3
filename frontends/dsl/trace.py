"""Tracing: Python code on ``Tensor`` objects builds an irgraph ``Graph``.

    from irgraph.frontends import dsl
    from irgraph.frontends.dsl import functional as F

    with dsl.Tracer("mlp") as t:
        x = t.input("x", (None, 4))
        y = F.relu(x @ t.constant(w) + 1.0)
        traced = t.finish(y)            # a TracedModel; traced.graph is the Graph

or ``dsl.trace(fn, input_specs)``. Modules called inside a trace add their parameters: as
constants (``params="constants"``, for inference) or as graph inputs (``params="inputs"``, for
training; ``TracedModel.params`` maps parameter names to input names). A trace is a context:
tracers nest (the innermost one records), and control-flow bodies are traced into subgraphs.
"""
from __future__ import annotations

import inspect
import threading
from contextlib import contextmanager
from typing import Any, Callable

import numpy as np

from irgraph.errors import IrgraphError
from irgraph.graph import Graph, Value
from irgraph.types import TensorType

from .parameter import Parameter
from .specs import parse_specs
from .tensor import Tensor
from .traced import RandomInput, TracedModel, meta_record

PARAM_MODES = ("constants", "inputs")
RANDOM_MODES = ("auto", "counter", "inputs", "op")

_local = threading.local()


def _stack() -> list:
    s = getattr(_local, "stack", None)
    if s is None:
        s = _local.stack = []
    return s


def current_tracer() -> "Tracer | None":
    """The innermost active tracer of this thread, or None outside any trace."""
    s = _stack()
    return s[-1] if s else None


class Tracer:
    """Builds one Graph; use as a context manager (``with Tracer() as t``).

    ``params``: ``"constants"`` folds parameters into the graph, ``"inputs"`` makes trainable
    parameters and buffers graph inputs. ``random``: how training-mode dropout draws its mask
    (see ``layers/dropout.py``): ``"counter"`` in the graph from a state buffer the trace
    advances, ``"inputs"`` as a graph input the caller draws each run
    (``TracedModel.random_inputs``), ``"op"`` with the graph's ``dropout`` op; ``"auto"``
    (default): counter when parameters are inputs (training), else the op. ``seed``: parameters
    without a value are drawn under this seed (default: their model's ``initialize`` seed, else 0).
    """

    def __init__(self, name: str = "dsl", *, params: str = "constants", seed: int | None = None,
                 random: str = "auto"):
        if params not in PARAM_MODES:
            raise IrgraphError(f"params must be one of {PARAM_MODES}", actual=params)
        if random not in RANDOM_MODES:
            raise IrgraphError(f"random must be one of {RANDOM_MODES}", actual=random)
        self.graph = Graph(name)
        self.params_mode = params
        self.random_mode = random if random != "auto" else ("counter" if params == "inputs" else "op")
        self.seed = seed
        self.training = False
        self._graphs: list[Graph] = [self.graph]
        self._scopes: list[str] = []
        self._values: dict[int, Value] = {}
        self._keep: list = []                   # objects whose id() is a key above
        self._roots: list = []
        self._names: dict[int, tuple[str, Any]] = {}
        self._taken: set[str] = set()
        self.inputs: list[str] = []
        self.params: dict[str, str] = {}
        self.frozen: dict[str, str] = {}
        self.buffers: dict[str, str] = {}
        self.state_updates: dict[str, Tensor] = {}
        self.random_inputs: dict[str, RandomInput] = {}
        self.initial: dict[str, np.ndarray] = {}
        self._calls: dict[int, int] = {}
        self._finished = False

    # ---- context ------------------------------------------------------------------------
    def __enter__(self) -> "Tracer":
        if self._finished:
            raise IrgraphError("this trace is finished; start a new Tracer")
        _stack().append(self)
        return self

    def __exit__(self, *exc) -> None:
        s = _stack()
        if s and s[-1] is self:
            s.pop()
        elif self in s:
            s.remove(self)

    @property
    def current_graph(self) -> Graph:
        """The graph nodes go to now: the main graph, or the body being traced."""
        return self._graphs[-1]

    @contextmanager
    def subgraph(self, name: str):
        """Trace into a new body Graph (of an if/loop/scan node) nested in the current one."""
        g = Graph(name, parent=self.current_graph)
        self._graphs.append(g)
        try:
            yield g
        finally:
            self._graphs.pop()

    # ---- inputs and constants ---------------------------------------------------------------
    def input(self, name: str, spec=(None,)) -> Tensor:
        """A data input of the graph (``spec``: see ``dsl.specs``)."""
        ((_, t),) = parse_specs([spec], [name])
        v = self.graph.add_input(name, t)
        if v.name != name:
            raise IrgraphError(f"the input name {name!r} is already taken in this trace", input=name)
        self.inputs.append(v.name)
        return Tensor(v)

    def constant(self, array, name: str = "const", dtype=None) -> Tensor:
        """``array`` as a constant of the graph being traced."""
        from .specs import as_dtype
        return Tensor(self.current_graph.add_const(array, name, None if dtype is None else as_dtype(dtype)))

    # ---- modules and names -----------------------------------------------------------------------
    def add_root(self, module) -> None:
        """Name parameters of ``module`` by their paths in it (done for each top-level call)."""
        if not any(r is module for r in self._roots):
            self._roots.append(module)
            self._names.clear()

    def _index_names(self) -> None:
        for root in self._roots:
            items = [(name, obj) for name, obj in root.named_modules()]
            items += list(root.named_parameters(include_buffers=True, include_frozen=True))
            for name, obj in items:
                if id(obj) in self._names:
                    continue
                final = name
                k = 1
                while final and final in self._taken:  # the same path in two roots
                    final, k = f"{name}_{k}", k + 1
                self._taken.add(final)
                self._names[id(obj)] = (final, root)

    def name_of(self, obj) -> tuple[str | None, Any]:
        """(dotted path, root module) of a module or parameter in the traced models."""
        hit = self._names.get(id(obj))
        if hit is None:
            self._index_names()
            hit = self._names.get(id(obj))
        return hit if hit is not None else (None, None)

    @contextmanager
    def module_scope(self, module):
        """While ``module.forward`` runs: names its nodes after its path."""
        if not self._scopes:
            self.add_root(module)
        name, _ = self.name_of(module)
        self._scopes.append(name or "")
        try:
            yield
        finally:
            self._scopes.pop()

    def node_name(self, base: str) -> str:
        scope = next((s for s in reversed(self._scopes) if s), "")
        return f"{scope}/{base}" if scope else base

    # ---- parameters, state and randomness ---------------------------------------------------------
    def param(self, p: Parameter) -> Tensor:
        """The Value standing for parameter ``p`` in this trace (made on first use)."""
        v = self._values.get(id(p))
        if v is not None:
            return Tensor(v)
        name, root = self.name_of(p)
        if name is None:
            name = p.name or "param"
            while name in self._taken:
                name += "_"
            self._taken.add(name)
            self._names[id(p)] = (name, None)
        if not p.initialized:
            seed = self.seed if self.seed is not None else getattr(root, "_init_seed", 0)
            p.initialize(seed, name)
        p.name = name
        arr = p.value.copy()
        self.initial[name] = arr
        as_input = self.params_mode == "inputs" and (p.trainable or p.buffer)
        if as_input:
            v = self.graph.add_input(name, TensorType(p.shape, p.dtype))
        else:
            v = self.graph.add_const(arr, name)
        table = self.buffers if p.buffer else self.params if p.trainable else self.frozen
        table[name] = v.name
        self._values[id(p)] = v
        self._keep.append(p)
        return Tensor(v)

    def update_state(self, buffer: Parameter, new: Tensor) -> None:
        """Record ``new`` as the next value of ``buffer``; it becomes an extra graph output."""
        name = self.param(buffer).value.name
        pname = next(k for k, n in self.buffers.items() if n == name)
        t = new.value.type
        if t.dtype is not buffer.dtype or (t.shape is not None and tuple(t.shape) != buffer.shape):
            raise IrgraphError(f"the update of buffer {pname!r} has type {t!r}",
                               expected=f"{buffer.dtype.name}{list(buffer.shape)}", actual=repr(t))
        if pname in self.state_updates:
            raise IrgraphError(f"buffer {pname!r} is updated twice in one trace",
                               hint="call a layer with running statistics once per traced step")
        self.state_updates[pname] = new

    def count_call(self, obj) -> int:
        """How many times ``obj`` was used before in this trace (a shared dropout layer salts its
        draws with it, so two calls draw two masks)."""
        k = self._calls.get(id(obj), 0)
        self._calls[id(obj)] = k + 1
        self._keep.append(obj)
        return k

    def random_mask(self, like: Tensor, rate: float, owner) -> Tensor:
        """A graph input holding a scaled dropout keep-mask shaped like ``like`` (see
        ``RandomInput``); the caller draws it for every run."""
        base, _ = self.name_of(owner)
        t = TensorType(like.shape, like.dtype)
        v = self.graph.add_input(f"{base or 'dropout'}.mask", t)
        self.random_inputs[v.name] = RandomInput("dropout", float(rate), t)
        return Tensor(v)

    # ---- the result ---------------------------------------------------------------------------------
    def finish(self, outputs, output_names=None) -> TracedModel:
        """Set the graph's outputs (a Tensor, a sequence or a dict of them) and return the model."""
        from .opcall import to_value
        if isinstance(outputs, dict):
            output_names = list(output_names or outputs.keys())
            outputs = list(outputs.values())
        elif not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        outs = [to_value(o, self.graph, self, "output", i) for i, o in enumerate(outputs)]
        for i, v in enumerate(outs):
            if v.graph is not self.graph and v.const is None:
                raise IrgraphError(f"output {i} ({v.name!r}) was made inside a control-flow body",
                                   hint="return it from the body and use the node's output instead")
        names = list(output_names) if output_names else (
            ["output"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))])
        if len(names) != len(outs):
            raise IrgraphError("output_names must name every output", expected=len(outs), actual=len(names))
        state_names = {k: f"{k}.next" for k in self.state_updates}
        all_outs = outs + [t.value for t in self.state_updates.values()]
        self.graph.set_outputs(all_outs)
        self.graph.meta["output_names"] = names + list(state_names.values())
        traced = TracedModel(
            graph=self.graph, inputs=list(self.inputs), outputs=names, params=dict(self.params),
            frozen=dict(self.frozen), buffers=dict(self.buffers), state_outputs=state_names,
            random_inputs=dict(self.random_inputs), initial=dict(self.initial),
            params_mode=self.params_mode, training=self.training)
        self.graph.meta["dsl"] = meta_record(traced)
        self.graph.verify()
        self._finished = True
        return traced


def arg_names(fn: Callable) -> list[str]:
    """Names of ``fn``'s positional parameters (used to name graph inputs)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"]


def trace(fn: Callable, input_specs, *, name: str | None = None, params: str = "constants",
          seed: int | None = None, random: str = "auto", output_names=None) -> TracedModel:
    """Trace ``fn(*inputs)`` (a function of Tensors, or a Module) into a TracedModel."""
    from .module import Module
    target = fn.forward if isinstance(fn, Module) else fn
    default = name or (type(fn).__name__ if isinstance(fn, Module) else getattr(fn, "__name__", "dsl"))
    with Tracer(default, params=params, seed=seed, random=random) as t:
        xs = [t.input(n, ty) for n, ty in parse_specs(input_specs, arg_names(target))]
        if isinstance(fn, Module):
            t.training = fn.training
        out = fn(*xs)
        return t.finish(out, output_names)
