"""Facts about a graph that ``irgraph show`` prints (and ``--json`` emits)."""
from __future__ import annotations

from .graph import Graph


def _all_constants(g: Graph) -> list:
    """Constants of the graph and of its subgraphs (fusion moves weights into the groups'
    bodies), each array once."""
    seen: dict[int, object] = {}

    def visit(graph: Graph):
        for v in graph.constants.values():
            seen.setdefault(id(v.const), v)
        for n in graph.nodes:
            for sg in n.subgraphs():
                visit(sg)
    visit(g)
    return list(seen.values())


def graph_summary(g: Graph) -> dict:
    hist = g.op_histogram()
    consts = _all_constants(g)
    return {
        "name": g.name,
        "opset": g.meta.get("opset"),
        "inputs": [{"name": v.name, "type": repr(v.type)} for v in g.inputs],
        "outputs": [{"name": n, "type": repr(v.type)}
                    for n, v in zip(g.meta.get("output_names") or [v.name for v in g.outputs], g.outputs)],
        "nodes": sum(hist.values()),
        "ops": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        "parameters": sum(int(v.const.size) for v in consts if v.dtype.is_float),
        "constant_bytes": int(sum(v.const.nbytes for v in consts)),
    }


def format_summary(s: dict) -> str:
    lines = [f"graph {s['name']}" + (f" (ONNX opset {s['opset']})" if s.get("opset") else "")]
    lines.append("inputs:")
    lines += [f"  {i['name']}: {i['type']}" for i in s["inputs"]]
    lines.append("outputs:")
    lines += [f"  {o['name']}: {o['type']}" for o in s["outputs"]]
    lines.append(f"nodes: {s['nodes']}   parameters: {s['parameters']:,}   constant bytes: {s['constant_bytes']:,}")
    lines.append("ops:")
    width = max((len(k) for k in s["ops"]), default=0)
    lines += [f"  {k:<{width}}  {v}" for k, v in s["ops"].items()]
    return "\n".join(lines)


# ---- optimized graphs: kernels, fused groups, pass table and memory plan ---------------------

def kernel_groups(g: Graph) -> list[dict]:
    """One entry per fused node (a kernel a backend compiles as one): its name, group kind,
    label, the original ONNX node names it covers (``meta["source"]``) and the ops inside."""
    out = []
    for n in g.nodes:
        if n.op != "fused":
            continue
        body = n.attrs.get("body")
        ops = [b.op for b in body.nodes] if isinstance(body, Graph) else []
        out.append({"name": n.name, "group": n.attrs.get("group") or n.meta.get("group") or "generic",
                    "label": n.attrs.get("label") or n.name,
                    "sources": list(n.meta.get("source") or []), "ops": ops})
    return out


MEMORY_KEYS = ("peak_bytes", "naive_bytes", "lower_bound_bytes")


def memory_summary(g: Graph) -> dict | None:
    """The memory plan's figures (``graph.meta["memory_plan"]``, from the plan_memory pass): the
    three byte counts and any other scalar fields the plan reports; None when there is no plan."""
    plan = g.meta.get("memory_plan")
    if plan is None:
        return None
    if isinstance(plan, dict):
        items = plan.items()
    else:  # a dataclass or plain object: its public attributes
        items = ((k, getattr(plan, k)) for k in dir(plan) if not k.startswith("_"))
    out = {k: None for k in MEMORY_KEYS}
    for k, v in items:
        if k == "version":
            continue
        if isinstance(v, bool) or v is None or isinstance(v, (str, int, float)):
            out[k] = v
        elif hasattr(v, "item") and getattr(v, "ndim", 1) == 0:  # numpy scalars
            out[k] = v.item()
        elif k == "dims" and isinstance(v, dict):
            out[k] = dict(v)
        elif k in _COUNTED and isinstance(v, (list, tuple, dict)):
            out[k] = len(v)            # buffers / in-place updates / views / dynamic values: how many
    return out


_COUNTED = ("buffers", "inplace", "views", "dynamic")


def optimized_summary(g: Graph, report=None, level: int = 0) -> dict:
    """``graph_summary`` plus what the pipeline did: ``opt_level``, ``passes`` (name, seconds,
    nodes before/after, op changes), ``kernels`` (count before/after and the fused groups) and
    ``memory`` (peak/naive/lower-bound bytes, or None without a plan)."""
    s = graph_summary(g)
    records = list(getattr(report, "records", None) or [])
    groups = kernel_groups(g)
    s["opt_level"] = level
    s["passes"] = [r.as_dict() if hasattr(r, "as_dict") else dict(r) for r in records]
    top = g.op_histogram(recursive=False)
    s["kernels"] = {"before": getattr(report, "kernels_before", len(g.nodes)) if report else len(g.nodes),
                    "count": len(g.nodes), "fused": len(groups),
                    "ops": dict(sorted(top.items(), key=lambda kv: (-kv[1], kv[0]))), "groups": groups}
    s["memory"] = memory_summary(g)
    return s


def format_groups(groups: list[dict]) -> str:
    if not groups:
        return "fused groups: none"
    lines = [f"fused groups ({len(groups)}):"]
    for grp in groups:
        ops = "+".join(grp["ops"])
        lines.append(f"  {grp['label']}  [{grp['group']}]  {ops}")
        if grp["sources"]:
            lines.append(f"      from: {', '.join(grp['sources'])}")
    return "\n".join(lines)


def _bytes(n) -> str:
    if not isinstance(n, (int, float)):
        return "?"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n:,} bytes ({n / size:.2f} {unit})"
    return f"{n:,} bytes"


def format_memory(m: dict | None) -> str:
    if m is None:
        return "memory plan: none (the plan_memory pass did not run)"
    peak, naive, lb = (m.get(k) for k in MEMORY_KEYS)
    lines = ["memory plan:",
             f"  peak arena   {_bytes(peak)}",
             f"  naive sum    {_bytes(naive)}",
             f"  lower bound  {_bytes(lb)}"]
    ratios = []
    if isinstance(peak, (int, float)) and isinstance(lb, (int, float)) and lb:
        ratios.append(f"peak/lower bound {peak / lb:.3f}")
    if isinstance(peak, (int, float)) and isinstance(naive, (int, float)) and naive:
        ratios.append(f"peak/naive {peak / naive:.3f}")
    if ratios:
        lines.append("  " + ", ".join(ratios))
    extra = {k: v for k, v in m.items() if k not in MEMORY_KEYS}
    if isinstance(extra.get("dims"), dict):
        extra["dims"] = ", ".join(f"{k}={v}" for k, v in extra["dims"].items()) or "static"
    if extra:
        lines.append("  " + ", ".join(f"{k} {v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{k} {v}"
                                      for k, v in extra.items()))
    return "\n".join(lines)


def format_optimized(s: dict, report=None, stats: bool = False) -> str:
    """The text ``irgraph show -O<n>`` prints after the IR: summary, groups, memory, and with
    ``stats`` the per-pass table and the kernel count before/after."""
    parts = [format_summary(s)]
    k = s["kernels"]
    parts[0] += (f"\nkernels: {k['count']} (" + ", ".join(f"{op} {c}" for op, c in k["ops"].items()) + ")"
                 if k["ops"] else "\nkernels: 0")
    if s.get("opt_level"):
        parts.append(format_groups(s["kernels"]["groups"]))
        parts.append(format_memory(s["memory"]))
    if stats:
        if report is not None and hasattr(report, "table"):
            parts.append(f"passes (-O{s.get('opt_level', 0)}):\n" + report.table())
        k = s["kernels"]
        parts.append(f"kernels: {k['before']} before, {k['count']} after ({k['fused']} fused groups)")
    return "\n\n".join(parts)
