"""Compilation targets by name. Each target turns a Graph into a runner ``run(list[ndarray]) ->
list[ndarray]``; backends register theirs here (``interp`` is built in)."""
from __future__ import annotations

from typing import Callable

from .errors import CompileError
from .graph import Graph

# name -> (module to import lazily or None, factory(graph, **options) -> runner)
_TARGETS: dict[str, Callable] = {}
_LAZY: dict[str, str] = {}


def register_target(name: str, factory: Callable) -> None:
    _TARGETS[name] = factory


def register_lazy_target(name: str, module: str) -> None:
    """A target whose backend module registers it on import (keeps ``import irgraph`` light)."""
    _LAZY[name] = module


def get_target(name: str) -> Callable:
    if name not in _TARGETS and name in _LAZY:
        import importlib
        importlib.import_module(_LAZY[name])
    try:
        return _TARGETS[name]
    except KeyError:
        known = sorted(set(_TARGETS) | set(_LAZY))
        raise CompileError(f"unknown target {name!r}", expected="one of " + ", ".join(known), actual=name) from None


def target_names() -> list[str]:
    return sorted(set(_TARGETS) | set(_LAZY))


def _interp_factory(graph: Graph, **options):
    from .interpreter import run_graph
    check = bool(options.pop("check_types", True))
    if options:
        raise CompileError(f"target 'interp' takes no options {sorted(options)}",
                           hint="options: check_types")

    def run(inputs):
        return run_graph(graph, inputs, check_types=check)
    return run


register_target("interp", _interp_factory)
register_lazy_target("cpu", "irgraph.backends.cpu.target")
register_lazy_target("cuda", "irgraph.backends.cuda.target")
register_lazy_target("cuda-emulator", "irgraph.backends.cuda.target")
