"""CompiledModel: a graph compiled for one target, callable on arrays."""
from __future__ import annotations

from typing import Any

import numpy as np

from .dtype import DType
from .errors import InputError
from .graph import Graph
from .types import TensorType


def as_array(x: Any, name: str) -> np.ndarray:
    """numpy arrays pass through; ``__dlpack__`` and ``__array__`` objects are converted."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except Exception:
            pass  # e.g. a device tensor numpy cannot view; try __array__
    if hasattr(x, "__array__") or isinstance(x, (list, tuple, int, float, bool, np.generic)):
        try:
            return np.asarray(x)
        except Exception as e:
            raise InputError(f"cannot convert {type(x).__name__} to an array: {e}", input=name) from None
    raise InputError(f"expected an array (numpy, __array__ or __dlpack__), got {type(x).__name__}", input=name)


class CompiledModel:
    """``model(x, y)`` or ``model(x=..., y=...)`` runs the graph; returns one array or a tuple."""

    def __init__(self, graph: Graph, target: str, runner, options: dict | None = None):
        self.graph = graph
        self.target = target
        self.options = dict(options or {})
        self._run = runner
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = list(graph.meta.get("output_names") or [v.name for v in graph.outputs])
        self.input_types: list[TensorType] = [v.type for v in graph.inputs]
        self.output_types: list[TensorType] = [v.type for v in graph.outputs]
        self.quant_report = None   # irgraph.compile(quantize=...): the accuracy it cost (passes/quant_report.py)
        self.prune_report = None   # irgraph.compile(prune=...): what pruning saved (passes/prune_report.py)
        self._exact = _exact_signature(self.input_types)

    def __call__(self, *args, **kwargs):
        outs = self.run(*args, **kwargs)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run(self, *args, **kwargs) -> list[np.ndarray]:
        """Like calling the model, but always returns the list of outputs."""
        arrays = self._bind(args, kwargs)
        return list(self._run(arrays))

    def run_dict(self, feeds: dict) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.run(**feeds)))

    def _bind(self, args, kwargs) -> list[np.ndarray]:
        exact = self._exact
        if exact is not None and not kwargs and len(args) == len(exact):
            # the common call: numpy arrays of exactly the declared dtypes and static shapes
            for a, (dt, shape) in zip(args, exact):
                if type(a) is not np.ndarray or a.dtype != dt or a.shape != shape:
                    break
            else:
                return list(args)
        n = len(self.input_names)
        if len(args) > n:
            raise InputError(f"model takes {n} inputs ({', '.join(self.input_names)})", expected=n, actual=len(args))
        given: dict[str, Any] = dict(zip(self.input_names, args))
        for k, v in kwargs.items():
            if k not in self.input_names:
                raise InputError(f"unknown input name {k!r}", expected="one of " + ", ".join(self.input_names), actual=k)
            if k in given:
                raise InputError("input given both by position and by name", input=k)
            given[k] = v
        missing = [k for k in self.input_names if k not in given]
        if missing:
            raise InputError(f"missing input(s) {', '.join(missing)}", expected=self.input_names,
                             actual=list(given))
        arrays, bindings = [], {}
        for name, t in zip(self.input_names, self.input_types):
            a = as_array(given[name], name)
            arrays.append(check_input(name, t, a, bindings))
        return arrays

    def save(self, path) -> None:
        """Write this model as an artifact folder (manifest, .npy weights, graph, object code);
        ``irgraph.load(path)`` reads it back. See ``irgraph.artifact``."""
        from .artifact import save
        save(self, path)

    def __repr__(self) -> str:
        sig = ", ".join(f"{n}: {t!r}" for n, t in zip(self.input_names, self.input_types))
        outs = ", ".join(f"{n}: {t!r}" for n, t in zip(self.output_names, self.output_types))
        return f"<CompiledModel target={self.target!r} ({sig}) -> ({outs})>"


def _exact_signature(types: list[TensorType]) -> list[tuple[np.dtype, tuple]] | None:
    """``(numpy dtype, shape)`` per input when every input has a static shape and a dtype that
    ``check_input`` accepts exactly for that numpy dtype: arrays matching it need no checking."""
    sig = []
    for t in types:
        if t.shape is None or not t.is_static or t.dtype.kind == "s":
            return None
        try:
            dt = np.dtype(t.dtype.np)
            if DType.from_numpy(dt) is not t.dtype:
                return None
        except Exception:
            return None
        sig.append((dt, tuple(t.shape)))
    return sig


def check_input(name: str, t: TensorType, a: np.ndarray, bindings: dict) -> np.ndarray:
    try:
        got = DType.from_numpy(a.dtype)
    except Exception:
        raise InputError(f"unsupported array dtype {a.dtype}", input=name, expected=t.dtype.name, actual=str(a.dtype)) from None
    if got is not t.dtype:
        raise InputError("wrong dtype", input=name, expected=t.dtype.name, actual=got.name,
                         hint=f"convert with .astype(np.{t.dtype.np.name})" if t.dtype.kind != "s" else None)
    if t.shape is not None:
        if a.ndim != len(t.shape):
            raise InputError(f"wrong rank {a.ndim}", input=name, expected=tuple(t.shape), actual=a.shape)
        for want, have in zip(t.shape, a.shape):
            if isinstance(want, int):
                if want != have:
                    raise InputError("wrong shape", input=name, expected=tuple(t.shape), actual=a.shape)
            elif not want.startswith("?"):
                if bindings.setdefault(want, have) != have:
                    raise InputError(f"dimension {want!r} is {bindings[want]} in an earlier input",
                                     input=name, expected=tuple(t.shape), actual=a.shape)
    return a
