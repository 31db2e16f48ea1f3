"""``Module``: a model or layer with named parameters, train/eval mode, tracing and export.

Parameter names are dotted paths, as in PyTorch: an attribute ``self.fc1 = Dense(...)`` holding
a parameter ``weight`` gives ``"fc1.weight"``; children of a ``Sequential`` are named by index
(``"0.weight"``, ``"2.running_mean"``). ``named_parameters()`` lists them in definition order.

Modules start in eval mode (``model.train()`` switches; ``to_graph(training=...)`` traces in the
mode asked for and restores the modules' own). Called inside a trace, a module adds nodes;
called on numpy arrays outside one, it traces itself, runs on the reference interpreter and
returns arrays (in training mode it also stores the updated running statistics).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from irgraph.errors import IrgraphError
from irgraph.graph import Graph

from .parameter import Parameter
from .tensor import Tensor, TensorOps
from .traced import TracedModel


class Module:
    """Base class: set Parameters and sub-Modules as attributes in ``__init__``; write ``forward``."""

    training: bool = False
    _init_seed: int = 0

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", False)
        object.__setattr__(self, "_input_specs", None)

    def _registries(self) -> tuple[dict, dict]:
        d = self.__dict__
        if "_parameters" not in d:  # a subclass forgot super().__init__(): be forgiving
            Module.__init__(self)
        return d["_parameters"], d["_modules"]

    def __setattr__(self, name: str, value) -> None:
        params, mods = self._registries()
        params.pop(name, None)
        mods.pop(name, None)
        if isinstance(value, Parameter):
            params[name] = value
        elif isinstance(value, Module):
            mods[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        params, mods = self._registries()
        params.pop(name, None)
        mods.pop(name, None)
        object.__delattr__(self, name)

    # ---- the tree ------------------------------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        return iter(self._registries()[1].items())

    def children(self) -> Iterator["Module"]:
        return (m for _, m in self.named_children())

    def named_modules(self, prefix: str = "", _seen=None) -> Iterator[tuple[str, "Module"]]:
        """(path, module) for this module ("" or ``prefix``) and every descendant, once each."""
        seen = set() if _seen is None else _seen
        if id(self) in seen:
            return
        seen.add(id(self))
        yield prefix, self
        for name, m in self.named_children():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name, seen)

    def modules(self) -> Iterator["Module"]:
        return (m for _, m in self.named_modules())

    def named_parameters(self, prefix: str = "", *, include_buffers: bool = False,
                         include_frozen: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted path, Parameter) of every parameter (and buffer, if asked), once each."""
        seen = set()
        for path, m in self.named_modules(prefix):
            for name, p in m._registries()[0].items():
                if id(p) in seen or (p.buffer and not include_buffers) or \
                        (not p.buffer and not p.trainable and not include_frozen):
                    continue
                seen.add(id(p))
                yield (f"{path}.{name}" if path else name), p

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self) -> Iterator[tuple[str, Parameter]]:
        return ((n, p) for n, p in self.named_parameters(include_buffers=True) if p.buffer)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Element count of the (built) parameters."""
        return sum(int(np.prod(p.shape)) for _, p in self.named_parameters()
                   if p.trainable or not trainable_only)

    # ---- mode -------------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    # ---- parameters' values --------------------------------------------------------------------------
    def build(self, input_specs) -> "Module":
        """Create the parameters of lazily sized layers by tracing once on ``input_specs``."""
        self.trace(input_specs)
        return self

    def initialize(self, seed: int = 0, input_specs=None) -> "Module":
        """(Re)draw every parameter and buffer from ``seed`` (parameter by parameter, from its
        name: see ``parameter.rng_for``). ``input_specs`` builds lazily sized layers first;
        ones built later are drawn under the same seed."""
        for m in self.modules():
            object.__setattr__(m, "_init_seed", int(seed))
        if input_specs is not None:
            self.trace(input_specs, seed=seed)
        for name, p in self.named_parameters(include_buffers=True):
            p.initialize(seed, name)
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer array, by name (parameters not drawn yet are
        drawn now, exactly as a trace of this module would draw them)."""
        out = {}
        for n, p in self.named_parameters(include_buffers=True):
            if not p.initialized:
                p.initialize(self._init_seed, n)
            out[n] = p.value.copy()
        return out

    def load_state_dict(self, state: dict, strict: bool = True) -> "Module":
        """Set parameter and buffer values by name; ``strict`` refuses missing or extra names."""
        own = dict(self.named_parameters(include_buffers=True))
        extra = [k for k in state if k not in own]
        missing = [k for k in own if k not in state]
        if strict and (extra or missing):
            lazy = any(getattr(m, attr, 0) is None for m in self.modules()
                       for attr in ("in_features", "in_channels", "num_features", "input_size",
                                    "normalized_shape"))
            raise IrgraphError(
                "the state does not match the model's parameters: "
                f"{'unexpected ' + ', '.join(extra[:5]) if extra else ''}"
                f"{'; ' if extra and missing else ''}{'missing ' + ', '.join(missing[:5]) if missing else ''}",
                hint="build lazily sized layers first: model.build(input_specs)" if lazy else None)
        for k, v in state.items():
            if k in own:
                own[k].name = k
                own[k].value = v
        return self

    def astype(self, dtype) -> "Module":
        """Convert every parameter and buffer to ``dtype`` (e.g. float64 for gradient checks);
        layers that create parameters later create them in it too."""
        from .specs import as_dtype
        d = as_dtype(dtype)
        for _, p in self.named_parameters(include_buffers=True):
            if p.dtype.is_float:   # integer state (dropout's generator) keeps its dtype
                p.astype(d)
        for m in self.modules():
            if "dtype" in m.__dict__:
                object.__setattr__(m, "dtype", d)
        return self

    # ---- calling and tracing -------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def __call__(self, *args, **kwargs):
        from .trace import current_tracer
        t = current_tracer()
        if t is None:
            return self._eager(*args, **kwargs)
        with t.module_scope(self):
            return self.forward(*args, **kwargs)

    def _eager(self, *args, **kwargs):
        if kwargs or any(isinstance(a, TensorOps) for a in args):
            raise IrgraphError(f"{type(self).__name__} called outside a trace with tensors or keywords",
                               hint="call it on numpy arrays, or inside a Tracer / forward")
        arrays = [np.asarray(a) for a in args]
        traced = self.trace(arrays, training=self.training, random="op", remember=False)
        outs = traced.run(*arrays)
        n = len(traced.outputs)
        if traced.state_outputs:
            own = dict(self.named_parameters(include_buffers=True))
            for k, v in zip(traced.state_outputs, outs[n:]):
                own[k].value = v
        return outs[0] if n == 1 else tuple(outs[:n])

    def trace(self, input_specs=None, *, params: str = "constants", training: bool = False,
              seed: int | None = None, random: str = "auto", name: str | None = None,
              output_names=None, remember: bool = True) -> TracedModel:
        """Trace ``forward`` on inputs described by ``input_specs`` (see ``dsl.specs``).

        ``params="constants"`` folds parameters into the graph (inference); ``"inputs"`` makes
        them graph inputs (training), listed in ``TracedModel.params``. ``training`` picks the
        mode traced (dropout active, BatchNorm on batch statistics with its running-statistics
        updates as extra outputs)."""
        from .trace import trace as _trace
        specs = self._input_specs if input_specs is None else input_specs
        modes = [(m, m.training) for m in self.modules()]
        self.train(training)
        try:
            traced = _trace(self, specs, name=name or type(self).__name__, params=params, seed=seed,
                            random=random, output_names=output_names)
        finally:
            for m, mode in modes:
                object.__setattr__(m, "training", mode)
        if remember:
            object.__setattr__(self, "_input_specs", specs)
        return traced

    def to_graph(self, input_specs=None, params: str = "constants", training: bool = False,
                 **kwargs) -> Graph:
        """The traced Graph (``trace(...).graph``); its ``meta["dsl"]`` holds the name maps."""
        return self.trace(input_specs, params=params, training=training, **kwargs).graph

    def __irgraph_graph__(self, input_specs=None, **kwargs) -> Graph:
        """What ``irgraph.compile(model, input_specs=...)`` calls (inference graph by default)."""
        return self.to_graph(input_specs, **kwargs)

    def __irgraph_trainable__(self, input_specs=None):
        """What ``irgraph.train`` / ``irgraph.training.Trainer`` call: see ``dsl/trainable.py``."""
        from .trainable import to_trainable
        return to_trainable(self, input_specs)

    def export_onnx(self, path=None, input_specs=None, *, standard: bool = True, opset: int | None = None):
        """The inference graph as an ONNX model (written atomically to ``path`` when given).
        ``standard=True`` writes standard ONNX ops wherever one fits exactly, so onnxruntime runs
        it; otherwise core ops go to the ``ai.irgraph`` domain (irgraph reads both back)."""
        g = self.to_graph(input_specs)
        if standard:
            from irgraph.frontends.onnx.export_standard import export_standard
            return export_standard(g, path, **({"opset": opset} if opset else {}))
        from irgraph.frontends.onnx.exporter import export_model
        return export_model(g, path)

    # ---- helpers for layers ------------------------------------------------------------------------------
    @staticmethod
    def static_dim(x: Tensor, axis: int, layer: str, what: str) -> int:
        """A size a layer needs while tracing (to size its parameters)."""
        s = x.shape
        if s is None or not -len(s) <= axis < len(s) or not isinstance(s[axis], int):
            raise IrgraphError(f"{layer} needs the static size of {what} (axis {axis}) to create its "
                               f"parameters; the input has shape {s}",
                               hint="give the size to the layer's constructor or a static input spec")
        return s[axis]

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        kids = list(self.named_children())
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not kids:
            return head + ")"
        lines = [head]
        for n, m in kids:
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({n}): {sub}")
        return "\n".join(lines) + "\n)"


class Sequential(Module):
    """Layers applied in order: ``Sequential(Dense(16), ReLU(), Dense(1))`` (or a list).
    Children are named ``"0"``, ``"1"`` …, so parameters are ``"0.weight"`` and so on."""

    def __init__(self, *layers) -> None:
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for layer in layers:
            self.add(layer)

    def add(self, layer: Module) -> "Sequential":
        if not isinstance(layer, Module):
            raise IrgraphError(f"Sequential holds Modules, got {type(layer).__name__}")
        setattr(self, str(len(self._registries()[1])), layer)
        return self

    def __getitem__(self, i: int) -> Module:
        return list(self.children())[i]

    def __len__(self) -> int:
        return len(self._registries()[1])

    def __iter__(self):
        return self.children()

    def forward(self, x):
        for layer in self.children():
            x = layer(x)
        return x


class ModuleList(Module):
    """A list of modules named ``"0"``, ``"1"`` … (for stacks whose forward is written by hand)."""

    def __init__(self, modules=()) -> None:
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, m: Module) -> "ModuleList":
        setattr(self, str(len(self._registries()[1])), m)
        return self

    def __getitem__(self, i: int) -> Module:
        return list(self.children())[i]

    def __len__(self) -> int:
        return len(self._registries()[1])

    def __iter__(self):
        return self.children()
