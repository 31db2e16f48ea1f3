"""Facts about a graph that ``irgraph show`` prints (and ``--json`` emits)."""
from __future__ import annotations

from .graph import Graph


def graph_summary(g: Graph) -> dict:
    hist = g.op_histogram()
    consts = list(g.constants.values())
    return {
        "name": g.name,
        "opset": g.meta.get("opset"),
        "inputs": [{"name": v.name, "type": repr(v.type)} for v in g.inputs],
        "outputs": [{"name": n, "type": repr(v.type)}
                    for n, v in zip(g.meta.get("output_names") or [v.name for v in g.outputs], g.outputs)],
        "nodes": sum(hist.values()),
        "ops": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        "parameters": g.parameter_count(),
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
