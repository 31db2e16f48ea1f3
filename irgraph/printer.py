"""A readable text form of the IR, one node per line:

    %y: float32[N,64] = conv(%x, %w, %b) {pads=(1,1,1,1), strides=(1,1)}  # conv1
"""
from __future__ import annotations

import numpy as np

from .graph import Graph


def _fmt_attr(v) -> str:
    if isinstance(v, Graph):
        return f"<graph {v.name}>"
    if isinstance(v, np.ndarray):
        if v.size <= 8:
            return f"array({v.tolist()}, {v.dtype})"
        return f"array<{v.dtype}{list(v.shape)}>"
    if isinstance(v, float):
        return f"{v:g}"
    return repr(v) if isinstance(v, str) else str(v)


def format_graph(g: Graph, indent: str = "", max_consts: int = 20) -> str:
    lines = []
    sig = ", ".join(f"%{v.name}: {v.type!r}" for v in g.inputs)
    lines.append(f"{indent}graph {g.name}({sig}) {{")
    consts = list(g.constants.values())
    for v in consts[:max_consts]:
        a = v.const
        shown = _fmt_attr(a) if a.size > 8 else np.array2string(a, threshold=8, separator=",").replace("\n", "")
        lines.append(f"{indent}  %{v.name}: {v.type!r} = const {shown}")
    if len(consts) > max_consts:
        lines.append(f"{indent}  ... {len(consts) - max_consts} more constants")
    for n in g.nodes:
        outs = ", ".join(f"%{o.name}: {o.type!r}" for o in n.outputs)
        ins = ", ".join("_" if v is None else f"%{v.name}" for v in n.inputs)
        subs = {k: v for k, v in n.attrs.items() if isinstance(v, Graph)}
        attrs = ", ".join(f"{k}={_fmt_attr(v)}" for k, v in n.attrs.items() if k not in subs and v is not None)
        line = f"{indent}  {outs} = {n.op}({ins})"
        if attrs:
            line += f" {{{attrs}}}"
        src = n.meta.get("source")
        if src and src != [n.name]:
            line += f"  # {', '.join(src)}"
        lines.append(line)
        for k, sg in subs.items():
            lines.append(f"{indent}    {k}:")
            lines.append(format_graph(sg, indent + "      ", max_consts))
    lines.append(f"{indent}  return " + ", ".join(f"%{v.name}" for v in g.outputs))
    lines.append(f"{indent}}}")
    return "\n".join(lines)
