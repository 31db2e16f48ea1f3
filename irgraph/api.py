"""The public entry points: ``irgraph.compile`` and ``irgraph.load_model``."""
from __future__ import annotations

import os

from .compiled import CompiledModel
from .errors import IrgraphError
from .graph import Graph
from .targets import get_target


def to_graph(model) -> Graph:
    """A Graph from an ONNX path, bytes, ``onnx.ModelProto`` or a Graph (returned as is)."""
    if isinstance(model, Graph):
        return model
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a dependency
        raise IrgraphError("the onnx package is needed to read ONNX models") from None
    if isinstance(model, (str, os.PathLike, bytes, bytearray, onnx.ModelProto)):
        from irgraph.frontends.onnx.importer import import_model
        return import_model(model)
    raise IrgraphError(f"cannot compile a {type(model).__name__}",
                       hint="pass an ONNX file path, an onnx.ModelProto or an irgraph.Graph")


def compile(model, target: str = "interp", **options) -> CompiledModel:  # noqa: A001 - public name
    """Compile ``model`` for ``target`` and return a callable ``CompiledModel``.

    >>> m = irgraph.compile("model.onnx")          # doctest: +SKIP
    >>> y = m(x)                                   # doctest: +SKIP
    """
    graph = to_graph(model)
    factory = get_target(target)
    runner = factory(graph, **options)
    return CompiledModel(graph, target, runner, options)
