"""The pruning option of ``irgraph.compile`` and the CLI (``--prune SPEC``), checked and turned into
passes. This module is a helper of the pruning passes and registers no pass itself.

    p = PruneOptions.parse("channels:0.3")          # None when prune is None
    names = plan_passes(pipeline(2), p)             # the pipeline with the pruning passes
    ctx.options.update(p.pass_options(target="cpu"))
    ...
    compiled.prune_report = p.finish(optimized_graph)

Specs:

- ``magnitude:RATIO`` / ``magnitude:RATIO:layer`` / ``magnitude:RATIO:global``: unstructured
  (``prune_magnitude``), then ``use_sparse_kernels`` after the epilogue fusion (CSR kernels for
  layers past the measured crossover; on ``cpu`` only);
- ``channels:RATIO`` / ``channels:RATIO:ALIGN``: structured (``prune_channels``); with ALIGN (a
  positive integer, e.g. 16 = the AVX-512 float lanes) the channel count each group keeps is
  rounded to a multiple of ALIGN, which keeps conv kernels vectorized over output channels on
  their fast path (``benchmarks/bench_prune_digits.py`` shows the difference).

RATIO is in [0, 1). The pruning pass runs after BatchNorm folding when the pipeline folds (so
channel norms see the folded weights; unfolded batch norms are handled too), else after the
cleanup passes; at ``-O0`` the two cleanups pruning needs (``infer_shapes``, ``fold_constants``:
weights must be constants, e.g. a Gemm's transposed weight) run first.
"""
from __future__ import annotations

from dataclasses import dataclass

from irgraph.errors import CompileError
from irgraph.graph import Graph

from .prune_report import PruneReport

MODES = ("magnitude", "channels")
SCOPES = ("layer", "global")
GRAMMAR = "magnitude:RATIO[:layer|global] or channels:RATIO[:ALIGN], with 0 <= RATIO < 1"
_CLEANUP = ("infer_shapes", "fold_constants", "simplify_algebra", "eliminate_common_subexpressions",
            "eliminate_dead_code", "canonicalize", "recognize_patterns")


@dataclass(frozen=True)
class PruneOptions:
    mode: str
    ratio: float
    scope: str = "layer"
    align: int = 1

    @property
    def spec(self) -> str:
        if self.mode == "magnitude":
            return f"magnitude:{self.ratio:g}:{self.scope}"
        return f"channels:{self.ratio:g}" + (f":{self.align}" if self.align > 1 else "")

    @property
    def pass_name(self) -> str:
        return "prune_" + self.mode

    @classmethod
    def parse(cls, spec) -> "PruneOptions | None":
        """Checked options, or None when nothing is to be pruned."""
        if spec is None or isinstance(spec, PruneOptions):
            return spec
        if not isinstance(spec, str):
            raise CompileError("prune must be a string", expected=GRAMMAR, actual=type(spec).__name__)
        parts = [p.strip() for p in spec.strip().split(":")]
        mode = parts[0].lower()
        if mode not in MODES:
            raise CompileError(f"unknown pruning method {parts[0]!r}", expected=GRAMMAR, actual=spec)
        if len(parts) < 2 or not parts[1]:
            raise CompileError(f"the pruning spec {spec!r} has no ratio", expected=GRAMMAR, actual=spec)
        try:
            ratio = float(parts[1])
        except ValueError:
            raise CompileError(f"the pruning ratio {parts[1]!r} is not a number", expected=GRAMMAR,
                               actual=spec) from None
        if not 0.0 <= ratio < 1.0:   # also refuses nan and inf
            raise CompileError(f"the pruning ratio {parts[1]} is out of range", expected="0 <= RATIO < 1",
                               actual=spec)
        scope, align = "layer", 1
        if len(parts) > 3:
            raise CompileError(f"bad pruning spec {spec!r}", expected=GRAMMAR, actual=spec)
        if len(parts) == 3 and mode == "magnitude":
            if parts[2].lower() not in SCOPES:
                raise CompileError(f"bad pruning scope {parts[2]!r}", expected=GRAMMAR, actual=spec,
                                   hint="magnitude pruning takes a scope: layer or global")
            scope = parts[2].lower()
        elif len(parts) == 3:
            if not parts[2].isdigit() or int(parts[2]) < 1:
                raise CompileError(f"bad channel alignment {parts[2]!r}", expected=GRAMMAR, actual=spec,
                                   hint="channel pruning takes a positive integer: kept counts are multiples of it")
            align = int(parts[2])
        return cls(mode, ratio, scope, align)

    def pass_options(self, target: str | None = None) -> dict:
        return {"prune.ratio": self.ratio, "prune.scope": self.scope, "prune.spec": self.spec,
                "prune.align": self.align,
                # CSR kernels exist on the cpu backend; elsewhere the decomposition would only
                # rebuild the dense weight
                "prune.sparse_kernels": target in (None, "cpu")}

    def finish(self, graph: Graph) -> PruneReport | None:
        data = graph.meta.get("prune_report")
        return None if data is None else PruneReport.from_dict(data)


def plan_passes(names: list, prune: PruneOptions | None) -> list:
    """``names`` (a pipeline) with the pruning passes ``prune`` needs."""
    names = list(names)
    if prune is None:
        return names
    if "fold_batch_norm" in names:
        at = names.index("fold_batch_norm") + 1
    else:
        found = [i for i, n in enumerate(names) if n in _CLEANUP]
        if not found or "fold_constants" not in names:
            names = ["infer_shapes", "fold_constants"] + names
            found = [1] + [i + 2 for i in found]
        at = max(found) + 1
    names.insert(at, prune.pass_name)
    if prune.mode == "magnitude":
        if "fuse_epilogues" in names:
            names.insert(names.index("fuse_epilogues") + 1, "use_sparse_kernels")
        else:
            names.insert(at + 1, "use_sparse_kernels")
    return names


def bench_pruned(model, prune, *, threads: int | None = None, dims: dict | None = None, warmup: int = 3,
                 repeat: int | None = None, seed: int = 0, opt_level: int | None = None) -> dict:
    """The pruned and the unpruned cpu builds of ``model`` timed in one process, interleaved:
    median ms of each, the speedup, the outputs' largest difference and the pruning report (what
    ``irgraph bench --prune`` prints)."""
    import numpy as np

    from irgraph.api import to_graph
    from irgraph.bench import bench_variant
    graph = to_graph(model)
    spec = PruneOptions.parse(prune)
    if spec is None:
        raise CompileError("bench_pruned needs a pruning spec", expected=GRAMMAR)
    r = bench_variant(graph, {"prune": spec.spec}, names=("pruned", "dense"), opt_level=opt_level,
                      threads=threads, dims=dims, warmup=warmup, repeat=repeat, seed=seed)
    res = r["runtimes"]
    report = r["models"][0].prune_report
    if report is not None:
        report.latency_ms = {"before": res["dense"]["median_ms"], "after": res["pruned"]["median_ms"]}
    diffs = {name: float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
             for name, a, b in r["outputs"] if np.asarray(b).dtype.kind == "f"}
    return {"threads": r["threads"], "repeat": r["repeat"], "compile_s": r["compile_s"], "runtimes": res,
            "speedup": res["dense"]["median_ms"] / res["pruned"]["median_ms"], "max_abs_diff": diffs,
            "prune_report": report}
