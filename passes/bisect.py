"""Which pass changed the outputs? Runs a pipeline one pass at a time and compares the
interpreter's outputs after each prefix with the unoptimized (-O0) graph's on the same inputs.

    result = bisect_passes(graph, feeds, level=2, rtol=1e-4, atol=1e-5)
    print(result.summary())      # "first pass that changed the outputs: 'fuse_epilogues' (#11 of 14) ..."
    result.culprit               # the pass name, or None when every prefix agrees

The check is linear (one interpreter run per pass) rather than a binary search over prefixes:
passes mutate the graph in place, so a binary search would re-run every pass of each prefix
from scratch, and the linear walk names exactly the *first* pass whose result differs even
when a later pass happens to hide the difference. A pass that raises, or that leaves a graph
the verifier rejects, or on whose result the interpreter fails, is named as well.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from irgraph.errors import IrgraphError
from irgraph.graph import Graph
from irgraph.interpreter import run_graph

from .context import PassContext
from .manager import PassRecord, run_passes
from .registry import Pass, get_pass


@dataclass
class OutputDiff:
    """How one output of the optimized graph differs from the reference."""
    name: str
    max_abs: float
    max_rel: float
    mismatched: int          # elements beyond tolerance
    size: int
    note: str = ""           # shape/dtype mismatch, NaN placement …

    def describe(self) -> str:
        if self.note:
            return f"{self.name}: {self.note}"
        return (f"{self.name}: {self.mismatched} of {self.size} elements differ, max |Δ| {self.max_abs:.3g}, "
                f"max rel {self.max_rel:.3g}")


@dataclass
class BisectResult:
    passes: list                      # the pass names checked, in order
    rtol: float
    atol: float
    culprit: str | None = None        # the first pass whose result differs (or that failed)
    index: int | None = None          # its position in ``passes`` (0-based)
    reason: str = ""                  # "changed the outputs", "raised an error: …", …
    diffs: list = field(default_factory=list)        # OutputDiff of every differing output
    record: PassRecord | None = None  # what the culprit did (op histogram change)
    records: list = field(default_factory=list)      # every pass that ran
    max_abs: float = 0.0              # largest |Δ| seen on any output while nothing differed

    @property
    def changed(self) -> bool:
        return self.culprit is not None

    def summary(self) -> str:
        tol = f"rtol {self.rtol:g}, atol {self.atol:g}"
        if self.culprit is None:
            return (f"no pass changed the outputs: {len(self.passes)} passes checked, each prefix agrees "
                    f"with -O0 within {tol} (max |Δ| {self.max_abs:.3g})")
        pos = f"#{self.index + 1} of {len(self.passes)}"
        lines = [f"first pass that changed the outputs: {self.culprit!r} ({pos}) {self.reason}"]
        for d in self.diffs:
            lines.append(f"  {d.describe()} (beyond {tol})")
        r = self.record
        if r is not None and (r.ops_added or r.ops_removed):
            delta = ", ".join([f"-{k}×{v}" for k, v in sorted(r.ops_removed.items())] +
                              [f"+{k}×{v}" for k, v in sorted(r.ops_added.items())])
            lines.append(f"  the pass changed: {delta} (nodes {r.nodes_before} → {r.nodes_after})")
        before = self.passes[:self.index]
        lines.append("  passes before it agree with -O0" + (f": {', '.join(before)}" if before else
                                                            " (it is the first pass)"))
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"culprit": self.culprit, "index": self.index, "reason": self.reason,
                "passes": list(self.passes), "rtol": self.rtol, "atol": self.atol,
                "diffs": [d.__dict__ for d in self.diffs]}


def compare_outputs(got: Sequence[np.ndarray], want: Sequence[np.ndarray], names: Sequence[str],
                    rtol: float, atol: float) -> tuple[list[OutputDiff], float]:
    """Outputs that differ beyond ``|got - want| <= atol + rtol * |want|`` (NaNs must match),
    and the largest absolute difference seen over all outputs."""
    diffs, worst = [], 0.0
    for name, g, w in zip(names, got, want):
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape or g.dtype != w.dtype:
            diffs.append(OutputDiff(name, np.inf, np.inf, w.size, w.size,
                                    f"{g.dtype}{list(g.shape)} instead of {w.dtype}{list(w.shape)}"))
            continue
        if w.dtype.kind not in "fciub":
            if not np.array_equal(g, w):
                diffs.append(OutputDiff(name, np.inf, np.inf, int(np.sum(g != w)), w.size, "values differ"))
            continue
        gf, wf = g.astype(np.complex128 if w.dtype.kind == "c" else np.float64), \
            w.astype(np.complex128 if w.dtype.kind == "c" else np.float64)
        with np.errstate(all="ignore"):
            nan_g, nan_w = np.isnan(gf), np.isnan(wf)
            both_nan = nan_g & nan_w
            same = (gf == wf) | both_nan          # equal infinities count as equal
            err = np.where(same, 0.0, np.abs(gf - wf))
            err = np.where(np.isnan(err), np.inf, err)
            bad = err > atol + rtol * np.abs(np.where(np.isfinite(wf), wf, 0))
            rel = np.where(same, 0.0, err / np.maximum(np.abs(wf), np.finfo(np.float64).tiny))
        max_abs = float(err.max()) if err.size else 0.0
        worst = max(worst, max_abs)
        n_bad = int(bad.sum())
        if n_bad:
            note = "NaN where -O0 has a number (or the reverse)" if np.any(nan_g != nan_w) else ""
            diffs.append(OutputDiff(name, max_abs, float(rel.max()), n_bad, int(w.size), note))
    return diffs, worst


def bisect_passes(graph: Graph, feeds: Mapping[str, np.ndarray] | Sequence[np.ndarray], *,
                  level: int = 2, passes: Sequence | None = None, rtol: float = 1e-4,
                  atol: float = 1e-5, ctx: PassContext | None = None) -> BisectResult:
    """Find the first pass of ``passes`` (default: the ``-O<level>`` pipeline) after which the
    interpreter's outputs differ from ``graph``'s own outputs on ``feeds`` beyond tolerance.

    ``graph`` is not modified (the passes run on a copy). Verification runs after every pass.
    """
    from .pipelines import pipeline
    plist = [p if isinstance(p, Pass) else get_pass(p) for p in (pipeline(level) if passes is None else passes)]
    ctx = ctx or PassContext(opt_level=level)
    ctx.verify = True
    plist = [p for p in plist if p.name not in ctx.disabled]
    names = list(graph.meta.get("output_names") or [v.name for v in graph.outputs])
    want = run_graph(graph, feeds)
    result = BisectResult([p.name for p in plist], rtol, atol)
    g = graph.copy()
    for i, p in enumerate(plist):
        def blame(reason: str, record=None) -> BisectResult:
            result.culprit, result.index, result.reason, result.record = p.name, i, reason, record
            return result
        try:
            g, rep = run_passes(g, [p], ctx)
        except IrgraphError as e:
            text = str(e)
            if "invalid after pass" in text:
                return blame("left a graph the verifier rejects: " + _one_line(text))
            return blame("raised an error: " + _one_line(text))
        rec = rep.records[0] if rep.records else None
        result.records.append(rec)
        try:
            got = run_graph(g, feeds)
        except IrgraphError as e:
            return blame("the interpreter fails on its result: " + _one_line(str(e)), rec)
        diffs, worst = compare_outputs(got, want, names, rtol, atol)
        if diffs:
            result.diffs = diffs
            return blame("changed the outputs", rec)
        result.max_abs = max(result.max_abs, worst)
    return result


def _one_line(text: str) -> str:
    return " ".join(text.split())
