"""Declared passes: a name, a function, and its contract.

    @register_pass("eliminate_dead_code", ensures={"no_dead_code"},
                   description="drop nodes whose outputs nobody reads")
    def eliminate_dead_code(graph, ctx) -> bool:   # returns whether anything changed
        return graph.remove_unused() > 0

A pass mutates the graph in place and returns ``True`` when it changed something (or a
``PassResult`` when it returns a different Graph object). ``requires`` names properties that
earlier passes must have established (``ensures``); a pipeline that breaks this is refused
before it runs. ``invalidates`` drops properties a pass may break.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from irgraph.errors import IrgraphError
from irgraph.graph import Graph


@dataclass
class PassResult:
    graph: Graph
    changed: bool


@dataclass(frozen=True)
class Pass:
    name: str
    fn: Callable
    description: str = ""
    requires: frozenset = field(default_factory=frozenset)
    ensures: frozenset = field(default_factory=frozenset)
    invalidates: frozenset = field(default_factory=frozenset)
    min_level: int = 0          # the lowest -O level at which pipelines include it

    def __call__(self, graph: Graph, ctx) -> PassResult:
        res = self.fn(graph, ctx)
        if isinstance(res, PassResult):
            return res
        if isinstance(res, Graph):
            return PassResult(res, True)
        return PassResult(graph, bool(res))


_PASSES: dict[str, Pass] = {}


def register_pass(name: str, *, description: str = "", requires=(), ensures=(), invalidates=(),
                  min_level: int = 0):
    def deco(fn):
        if name in _PASSES:
            raise RuntimeError(f"pass {name!r} registered twice")
        _PASSES[name] = Pass(name, fn, description or (fn.__doc__ or "").strip().split("\n")[0],
                             frozenset(requires), frozenset(ensures), frozenset(invalidates), min_level)
        return fn
    return deco


def get_pass(name: str) -> Pass:
    _load_all()
    try:
        return _PASSES[name]
    except KeyError:
        raise IrgraphError(f"unknown pass {name!r}", hint="known passes: " + ", ".join(sorted(_PASSES))) from None


def all_passes() -> dict[str, Pass]:
    _load_all()
    return dict(_PASSES)


def _load_all() -> None:
    import irgraph.passes  # noqa: F401  (importing the package registers every pass)
