"""Runs pipelines of passes and records what each one did.

    graph, report = optimize(graph, level=2)            # the O2 pipeline (see pipelines.py)
    graph, report = run_passes(graph, ["fold_constants", "eliminate_dead_code"], ctx)
    print(report.table())

Every pass's time, node count before/after and op-histogram change is recorded; with
``ctx.verify`` the graph is verified after each pass, and any error raised inside a pass is
re-raised naming the pass.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from irgraph.errors import IrgraphError, CompileError
from irgraph.graph import Graph

from .context import PassContext
from .registry import Pass, get_pass


@dataclass
class PassRecord:
    name: str
    seconds: float
    nodes_before: int
    nodes_after: int
    changed: bool
    ops_added: dict = field(default_factory=dict)
    ops_removed: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"name": self.name, "seconds": round(self.seconds, 6), "nodes_before": self.nodes_before,
                "nodes_after": self.nodes_after, "changed": self.changed,
                "ops_added": self.ops_added, "ops_removed": self.ops_removed}


@dataclass
class PassReport:
    records: list = field(default_factory=list)
    kernels_before: int = 0
    kernels_after: int = 0

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.records)

    def table(self) -> str:
        rows = [("pass", "ms", "nodes", "change")]
        for r in self.records:
            delta = ", ".join([f"-{k}×{v}" for k, v in sorted(r.ops_removed.items())] +
                              [f"+{k}×{v}" for k, v in sorted(r.ops_added.items())])
            rows.append((r.name, f"{r.seconds * 1e3:.1f}", f"{r.nodes_before} → {r.nodes_after}",
                         (delta or "reordered/retyped") if r.changed else "-"))
        w = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [f"{a:<{w[0]}}  {b:>{w[1]}}  {c:>{w[2]}}  {d}" for a, b, c, d in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append(f"total {self.seconds * 1e3:.1f} ms; kernels {self.kernels_before} → {self.kernels_after}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"passes": [r.as_dict() for r in self.records],
                "kernels_before": self.kernels_before, "kernels_after": self.kernels_after}


def count_kernels(graph: Graph) -> int:
    """Top-level nodes: after fusion each fused group is one kernel."""
    return len(graph.nodes)


def run_passes(graph: Graph, passes, ctx: PassContext | None = None) -> tuple[Graph, PassReport]:
    ctx = ctx or PassContext()
    plist = [p if isinstance(p, Pass) else get_pass(p) for p in passes]
    plist = [p for p in plist if p.name not in ctx.disabled]
    _check_contracts(plist, set(ctx.properties))
    report = PassReport(kernels_before=count_kernels(graph))
    for p in plist:
        for ins in ctx.instruments:
            ins.before(p, graph, ctx)
        # top-level counts: after fusion a fused group is one node (one kernel)
        before = graph.op_histogram(recursive=False)
        n_before = len(graph.nodes)
        t0 = time.perf_counter()
        try:
            res = p(graph, ctx)
        except IrgraphError as e:
            raise type(e)(f"in pass {p.name!r}: {e.message}", node=e.node, op=e.op, opset=e.opset,
                          input=e.input, expected=e.expected, actual=e.actual, hint=e.hint) from e
        except Exception as e:
            raise CompileError(f"pass {p.name!r} failed: {type(e).__name__}: {e}") from e
        dt = time.perf_counter() - t0
        graph = res.graph
        after = graph.op_histogram(recursive=False)
        if ctx.verify:
            try:
                graph.verify()
            except IrgraphError as e:
                raise CompileError(f"the graph is invalid after pass {p.name!r}: {e}") from e
        ctx.properties -= p.invalidates
        ctx.properties |= p.ensures
        rec = PassRecord(p.name, dt, n_before, len(graph.nodes), res.changed,
                         dict(after - before), dict(before - after))
        report.records.append(rec)
        for ins in ctx.instruments:
            ins.after(p, graph, ctx, rec)
    report.kernels_after = count_kernels(graph)
    return graph, report


def optimize(graph: Graph, level: int = 2, ctx: PassContext | None = None, copy: bool = True) -> tuple[Graph, PassReport]:
    """Run the ``O<level>`` pipeline; by default on a copy, so the caller's graph is untouched."""
    from .pipelines import pipeline
    ctx = ctx or PassContext(opt_level=level)
    ctx.opt_level = level
    g = graph.copy() if copy else graph
    names = [v.name for v in g.outputs]
    g, report = run_passes(g, pipeline(level), ctx)
    restore_output_names(g, names)
    return g, report


def _check_contracts(plist: list[Pass], have: set) -> None:
    have = set(have)
    for p in plist:
        missing = p.requires - have
        if missing:
            raise CompileError(f"pass {p.name!r} requires {sorted(missing)}, which no earlier pass "
                               "in the pipeline ensures")
        have -= p.invalidates
        have |= p.ensures


def restore_output_names(graph: Graph, names: list[str]) -> None:
    """Give the graph's outputs back the names they had before optimizing.

    Rewrites may replace an output by another value (``x * 1`` by ``x``), which renames the
    model's outputs; users address outputs by name, so the optimized graph keeps them. A value
    that can take the name (a node output, used once among the outputs) is renamed; an input,
    a constant or a value already naming another output gets an ``identity`` copy."""
    if len(names) != len(graph.outputs):
        return
    taken = {v.name for v in graph.all_values()}
    for i, (v, name) in enumerate(zip(list(graph.outputs), names)):
        if v.name == name:
            continue
        shared = sum(o is v for o in graph.outputs) > 1
        if v.producer is not None and not v.is_const and v not in graph.inputs and not shared \
                and v.name not in names and name not in taken:
            taken.discard(v.name)
            v.name = name
            graph.claim_name(name)
            taken.add(name)
            continue
        if name in taken:
            holder = next(x for x in graph.all_values() if x.name == name)
            holder.name = graph.unique_name(name + "_")
        copy = graph.op("identity", [v], name=name, output_names=[name])
        copy.name = name
        taken.add(name)
        graph.outputs[i] = copy
