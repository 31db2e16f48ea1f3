"""The quantization options of ``irgraph.compile`` and the CLI, checked and turned into passes.

    q = QuantOptions.parse(graph, quantize="int8", calibrate="data.npz", keep_float="auto",
                           observer="entropy")
    names = plan_passes(pipeline(2), graph, q)     # the pipeline with the quantization passes
    ctx.options.update(q.pass_options())
    ...
    compiled.quant_report = q.finish(compiled, optimized_graph)   # + the compiled model's error

- ``quantize="int8"``: ``quantize_static`` (needs ``calibrate``), then ``fold_qdq`` and
  ``fuse_quantized_elementwise``, placed after BatchNorm folding and before the other fusions;
- ``quantize="dynamic"``: ``quantize_dynamic`` then the same two;
- a graph that already holds quantize/dequantize or integer ops (an ONNX QDQ, QLinear* or
  MatMulInteger model) gets ``fold_qdq`` first in its pipeline even without ``quantize``.

``calibrate``: an ``.npz`` path or a dict of arrays keyed by input name (or a list of such
dicts). Arrays with a leading batch larger than a static batch dimension of the model are
split into the model's batch size. This module is a helper of the quantization passes and
registers no pass itself.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from irgraph.errors import CompileError, InputError
from irgraph.graph import Graph

from .quant_observers import OBSERVERS
from .quant_report import QuantReport, compare

MODES = ("int8", "dynamic")
QDQ_OPS = {"dequantize_linear", "quantize_linear", "requantize", "matmul_integer", "conv_integer"}
QUANT_PASSES = ["fold_qdq", "fuse_quantized_elementwise"]


@dataclass
class QuantOptions:
    mode: str
    feeds: list = field(default_factory=list)
    keep_float: object = None
    observer: str = "minmax"

    @classmethod
    def parse(cls, graph: Graph, quantize=None, calibrate=None, keep_float=None,
              observer=None) -> "QuantOptions | None":
        """Checked options, or None when nothing is to be quantized."""
        if quantize is None:
            extra = {"calibrate": calibrate, "keep_float": keep_float, "observer": observer}
            given = [k for k, v in extra.items() if v is not None]
            if given:
                raise CompileError(f"{', '.join(given)} given without quantize",
                                   hint="add quantize='int8' (or --quantize int8)")
            return None
        if quantize not in MODES:
            raise CompileError(f"unknown quantization {quantize!r}", expected=" | ".join(MODES), actual=quantize)
        if observer is not None and observer not in OBSERVERS:
            raise CompileError(f"unknown observer {observer!r}", expected=" | ".join(OBSERVERS), actual=observer)
        keep = keep_float
        if isinstance(keep, str) and keep != "auto":
            keep = [s.strip() for s in keep.split(",") if s.strip()]
        if keep is not None and keep != "auto" and not (isinstance(keep, (list, tuple, set))
                                                        and all(isinstance(k, str) for k in keep)):
            raise CompileError("keep_float must be 'auto' or a list of layer names", actual=repr(keep_float))
        if quantize == "dynamic":
            if calibrate is not None or observer is not None:
                raise CompileError("dynamic quantization takes no calibration data or observer: activations "
                                   "are quantized at run time", hint="use quantize='int8' to calibrate")
            if keep == "auto":
                raise CompileError("keep_float='auto' needs calibration data (quantize='int8')")
            return cls("dynamic", [], keep, "minmax")
        if calibrate is None:
            raise CompileError("quantize='int8' needs calibration data",
                               hint="calibrate=<.npz path or dict of arrays> (CLI: --calibrate data.npz)")
        return cls("int8", calibration_feeds(graph, calibrate), keep, observer or "minmax")

    def pass_options(self) -> dict:
        return {"quantize.calibration": self.feeds, "quantize.observer": self.observer,
                "quantize.keep_float": self.keep_float}

    def finish(self, compiled, graph: Graph) -> QuantReport | None:
        """The pass's report with the compiled model's end-to-end error on the report feeds."""
        data = graph.meta.get("quant_report")
        if data is None:
            return None
        report = QuantReport.from_dict(data)
        want = graph.meta.pop("quant_float_outputs", None)
        if want and self.feeds:
            got = [compiled.run(**f) for f in self.feeds[:len(want)]]
            for j, name in enumerate(compiled.output_names):
                if np.asarray(want[0][j]).dtype.kind == "f":
                    report.compiled_outputs[name] = compare(
                        np.concatenate([np.asarray(w[j], np.float64).reshape(-1) for w in want]),
                        np.concatenate([np.asarray(o[j], np.float64).reshape(-1) for o in got]))
        return report


def has_quant_ops(graph: Graph) -> bool:
    return any(n.op in QDQ_OPS for n in graph.nodes)


def plan_passes(names: list, graph: Graph, quant: QuantOptions | None) -> list:
    """``names`` (a pipeline) with the quantization passes it needs for ``graph``."""
    names = list(names)
    if quant is None:
        if not has_quant_ops(graph):
            return names
        # an imported quantized model: fold before constant folding turns DQ(weights) into floats
        return ["fold_qdq"] + _before_fusion(names, QUANT_PASSES)
    first = "quantize_static" if quant.mode == "int8" else "quantize_dynamic"
    return (["fold_qdq"] if has_quant_ops(graph) else []) + _before_fusion(names, [first] + QUANT_PASSES)


def _before_fusion(names: list, extra: list) -> list:
    for anchor in ("fuse_epilogues", "fuse_reductions", "fuse_elementwise", "plan_memory"):
        if anchor in names:
            i = names.index(anchor)
            return names[:i] + extra + names[i:]
    return names + extra


def calibration_feeds(graph: Graph, calibrate) -> list:
    """A list of feed dicts from an .npz path, a dict of arrays or a list of dicts."""
    if isinstance(calibrate, (str, os.PathLike)):
        from irgraph.fileio import load_arrays
        calibrate = load_arrays(calibrate)
        if list(calibrate) == [""] and len(graph.inputs) == 1:
            calibrate = {graph.inputs[0].name: calibrate[""]}
    if isinstance(calibrate, dict):
        items = [calibrate]
    elif isinstance(calibrate, (list, tuple)) and all(isinstance(c, dict) for c in calibrate):
        items = list(calibrate)
    else:
        raise InputError("calibrate must be an .npz path, a dict of arrays or a list of dicts",
                         actual=type(calibrate).__name__)
    names = [v.name for v in graph.inputs]
    feeds = []
    for it in items:
        missing = [n for n in names if n not in it]
        unknown = sorted(set(it) - set(names))
        if missing or unknown:
            what = ([f"missing {missing}"] if missing else []) + ([f"unknown {unknown}"] if unknown else [])
            raise InputError("the calibration data does not match the model's inputs: " + "; ".join(what),
                             expected=names, actual=sorted(it))
        arrays = {n: np.asarray(it[n]) for n in names}
        for v in graph.inputs:
            a = arrays[v.name]
            if a.dtype != v.dtype.np:
                raise InputError("calibration array has the wrong dtype", input=v.name,
                                 expected=v.dtype.name, actual=str(a.dtype))
            if v.shape is not None and a.ndim != len(v.shape):
                raise InputError("calibration array has the wrong rank", input=v.name,
                                 expected=tuple(v.shape), actual=a.shape)
        feeds.extend(_split_batch(graph, arrays))
    if not feeds:
        raise InputError("the calibration data is empty")
    return feeds


def _split_batch(graph: Graph, arrays: dict) -> list:
    """Split along axis 0 when the model's batch dim is static and smaller than the data's."""
    sizes = set()
    for v in graph.inputs:
        d = v.shape[0] if v.shape else None
        a = arrays[v.name]
        if isinstance(d, int) and a.ndim and a.shape[0] != d:
            if a.shape[0] % d:
                raise InputError(f"calibration batch {a.shape[0]} is not a multiple of the model's batch {d}",
                                 input=v.name, expected=tuple(v.shape), actual=a.shape)
            sizes.add(a.shape[0] // d)
    if not sizes:
        return [arrays]
    if len(sizes) > 1:
        raise InputError("calibration arrays hold different numbers of samples", actual=sorted(sizes))
    k = sizes.pop()
    return [{n: np.array_split(a, k)[i] if a.ndim else a for n, a in arrays.items()} for i in range(k)]


def bench_quantized(model, quant_kwargs: dict, *, threads: int | None = None, dims: dict | None = None,
                    warmup: int = 3, repeat: int | None = None, seed: int = 0) -> dict:
    """int8 and fp32 compilations of ``model`` timed in one process, interleaved: median ms of
    each, the speedup and the output difference (what ``irgraph bench --quantize`` prints)."""
    from irgraph.api import to_graph
    from irgraph.bench import bench_variant
    graph = to_graph(model)
    r = bench_variant(graph, quant_kwargs, names=("int8", "fp32"), threads=threads, dims=dims,
                      warmup=warmup, repeat=repeat, seed=seed)
    res = r["runtimes"]
    diffs = {name: compare(np.asarray(b, np.float64), np.asarray(a, np.float64))
             for name, a, b in r["outputs"] if np.asarray(b).dtype.kind == "f"}
    return {"threads": r["threads"], "repeat": r["repeat"], "compile_s": r["compile_s"], "runtimes": res,
            "speedup": res["fp32"]["median_ms"] / res["int8"]["median_ms"], "outputs": diffs,
            "quant_report": r["models"][0].quant_report}
