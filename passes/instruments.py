"""Instruments watch a pipeline run: ``before(pass_, graph, ctx)`` and ``after(pass_, graph, ctx, record)``.

- ``DumpIR(folder, passes="all", formats=("text", "onnx"))`` writes the IR after the named passes
  as ``NN_<pass>.txt`` / ``NN_<pass>.onnx`` (atomically), to be diffed or opened in a viewer;
- ``PrintIR(passes)`` prints the IR after the named passes.
"""
from __future__ import annotations

import os

from irgraph.fileio import write_text


class Instrument:
    def before(self, pass_, graph, ctx) -> None:
        pass

    def after(self, pass_, graph, ctx, record) -> None:
        pass


def _selected(which, name: str) -> bool:
    return which == "all" or name in which


class DumpIR(Instrument):
    def __init__(self, folder: str, passes="all", formats=("text", "onnx")):
        self.folder = folder
        self.passes = passes if passes == "all" else set(passes)
        self.formats = tuple(formats)
        self.count = 0
        self.written: list[str] = []
        os.makedirs(folder, exist_ok=True)

    def after(self, pass_, graph, ctx, record) -> None:
        self.count += 1
        if not _selected(self.passes, pass_.name):
            return
        base = os.path.join(self.folder, f"{self.count:02d}_{pass_.name}")
        if "text" in self.formats:
            write_text(base + ".txt", str(graph) + "\n")
            self.written.append(base + ".txt")
        if "onnx" in self.formats:
            # the exporter lives in a frontend; passes may not import it at module level
            import importlib
            exporter = importlib.import_module("irgraph.frontends.onnx.exporter")
            exporter.export_model(graph, base + ".onnx")
            self.written.append(base + ".onnx")


class PrintIR(Instrument):
    def __init__(self, passes="all", stream=None):
        self.passes = passes if passes == "all" else set(passes)
        self.stream = stream

    def after(self, pass_, graph, ctx, record) -> None:
        if _selected(self.passes, pass_.name):
            import sys
            print(f"// after {pass_.name}\n{graph}", file=self.stream or sys.stdout)
