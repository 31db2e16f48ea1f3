"""Drawing a graph: Graphviz ``dot`` text (ours), and SVG through graphviz's ``dot -Tsvg``.

    text = to_dot(graph)          # fused groups become clusters holding the ops of their body
    svg = to_svg(graph)           # needs the ``dot`` program (Debian package ``graphviz``)

Each op is a box labelled with its op (and the node name when it differs); edges carry the
tensor type; graph inputs and outputs are ellipses. Weights and other constants are left out
(they would outnumber the ops), except that a node reading constants says how many. A fused
node is drawn as a cluster labelled ``group: label`` with the original ONNX node names it
covers, and its body's ops inside, so the picture shows both the kernels and what is in them.
"""
from __future__ import annotations

import shutil
import subprocess

from irgraph.errors import IrgraphError
from irgraph.graph import Graph, Node, Value

GRAPHVIZ_MISSING = ("graphviz's 'dot' program was not found on PATH; install graphviz "
                    "(Debian/Ubuntu: apt-get install graphviz) or use --format dot and render it elsewhere")

_GROUP_COLORS = ["#e8f0fe", "#e6f4ea", "#fef7e0", "#fce8e6", "#f3e8fd", "#e0f7fa"]


def _q(text: str) -> str:
    """A DOT double-quoted string (labels may hold quotes, backslashes, newlines)."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _short(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f" … (+{len(names) - limit})" if len(names) > limit else "")


class _Dot:
    def __init__(self):
        self.lines: list[str] = []
        # edges are written after every vertex, at the top level: graphviz puts a vertex into
        # the first cluster whose block mentions it, so an edge written inside a cluster would
        # drag its outside end in
        self.edges: list[str] = []
        self.ids = 0
        self.clusters = 0

    def new_id(self) -> str:
        self.ids += 1
        return f"n{self.ids}"


def to_dot(graph: Graph, title: str | None = None) -> str:
    """Graphviz text for ``graph``; fused groups are ``subgraph cluster_*`` blocks."""
    d = _Dot()
    d.lines += [f"digraph {_q(title or graph.name)} {{",
                "  rankdir=TB;",
                '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica", fontsize=10];',
                '  edge [fontname="Helvetica", fontsize=8, color="#555555"];']
    src: dict[int, str] = {}       # id(Value) -> dot id of the node producing it (inside clusters too)
    for v in graph.inputs:
        vid = d.new_id()
        label = _q(f"{v.name}\n{v.type!r}")
        d.lines.append(f"  {vid} [shape=ellipse, fillcolor=\"#d2e3fc\", label={label}];")
        src[id(v)] = vid
    _emit_nodes(d, graph, graph.nodes, src, indent="  ")
    for i, v in enumerate(graph.outputs):
        names = graph.meta.get("output_names") or []
        name = names[i] if i < len(names) else v.name
        oid = d.new_id()
        label = _q(f"{name}\n{v.type!r}")
        d.lines.append(f"  {oid} [shape=ellipse, fillcolor=\"#fad2cf\", label={label}];")
        if id(v) in src:
            d.edges.append(f"  {src[id(v)]} -> {oid};")
    d.lines += d.edges
    d.lines.append("}")
    return "\n".join(d.lines) + "\n"


def _edge(d: _Dot, frm: str, to: str, v: Value) -> None:
    d.edges.append(f"  {frm} -> {to} [label={_q(repr(v.type))}];")


def _emit_nodes(d: _Dot, g: Graph, nodes: list[Node], src: dict, indent: str) -> None:
    for n in nodes:
        body = n.attrs.get("body") if n.op == "fused" else None
        if isinstance(body, Graph):
            _emit_group(d, n, body, src, indent)
            continue
        nid = d.new_id()
        label = n.op if n.name in ("", n.op) else f"{n.op}\n{n.name}"
        consts = sum(1 for v in n.inputs if v is not None and v.const is not None)
        if consts:
            label += f"\n+{consts} const"
        if n.subgraphs():
            label += f"\n[{len(n.subgraphs())} subgraph(s)]"
        d.lines.append(f"{indent}{nid} [label={_q(label)}];")
        for v in n.inputs:
            if v is not None and id(v) in src:
                _edge(d, src[id(v)], nid, v)
        for o in n.outputs:
            src[id(o)] = nid


def _emit_group(d: _Dot, n: Node, body: Graph, src: dict, indent: str) -> None:
    d.clusters += 1
    color = _GROUP_COLORS[(d.clusters - 1) % len(_GROUP_COLORS)]
    group = n.attrs.get("group") or n.meta.get("group") or "fused"
    label = n.attrs.get("label") or n.name
    sources = list(n.meta.get("source") or [])
    title = f"{group}: {label}" + (f"\nfrom {_short(sources)}" if sources else "")
    d.lines.append(f"{indent}subgraph cluster_{d.clusters} {{")
    inner = indent + "  "
    d.lines += [f"{inner}label={_q(title)};", f"{inner}style=\"rounded,filled\";",
                f"{inner}fillcolor=\"{color}\";", f"{inner}fontsize=10;"]
    # the body's inputs are the fused node's inputs: edges from outside go straight to the body
    # ops that read them, so the cluster sits where the kernel sits in the outer graph
    for bv, ov in zip(body.inputs, n.inputs):
        if ov is not None and id(ov) in src:
            src[id(bv)] = src[id(ov)]
    _emit_nodes(d, body, body.nodes, src, inner)
    d.lines.append(f"{indent}}}")
    for bo, o in zip(body.outputs, n.outputs):
        if id(bo) in src:
            src[id(o)] = src[id(bo)]


def find_dot() -> str | None:
    return shutil.which("dot")


def to_svg(graph_or_dot, timeout: float = 300.0) -> str:
    """SVG text drawn by graphviz; a clear IrgraphError when ``dot`` is not installed."""
    text = graph_or_dot if isinstance(graph_or_dot, str) else to_dot(graph_or_dot)
    exe = find_dot()
    if exe is None:
        raise IrgraphError(GRAPHVIZ_MISSING)
    try:
        r = subprocess.run([exe, "-Tsvg"], input=text, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise IrgraphError(f"graphviz's dot took more than {timeout:g} s to draw the graph",
                           hint="use --format dot and render it with a faster layout (e.g. sfdp)") from None
    except OSError as e:
        raise IrgraphError(f"cannot run graphviz's dot ({exe}): {e}") from None
    if r.returncode != 0 or "<svg" not in r.stdout:
        first = (r.stderr.strip().splitlines() or ["no output"])[0]
        raise IrgraphError(f"graphviz's dot failed (exit {r.returncode}): {first}")
    return r.stdout
