"""What pruning saved: parameters, bytes and FLOPs of every layer and of the model, before/after.

The pruning passes (``prune_magnitude``, ``prune_channels``) measure the graph when they start
and when they end, and ``use_sparse_kernels`` measures it again after choosing CSR weights; the
report lives in ``graph.meta["prune_report"]`` as a dict, and as ``CompiledModel.prune_report``
(a ``PruneReport``) after ``irgraph.compile(..., prune=...)``. ``irgraph show --prune`` prints it.

Per layer (a conv / matmul with a constant weight, or its sparse form; fused bodies included):

- ``params``:  elements of the weight (dense count) and of a conv's own bias;
- ``nonzero``: nonzero weight elements;
- ``bytes``:   bytes the layer's arrays occupy in the graph (dense, or CSR for a sparse kernel);
- ``flops``:   2 x multiply-adds of the dense computation, per sample;
- ``sparse_flops``: 2 x multiply-adds with a nonzero weight, per sample (what a sparse kernel does).

"Per sample": the batch (axis 0) is left out and symbolic dims count as 1 (a sequence length
``S`` makes a matmul's figure per token). Model totals add every float constant (``params``),
every constant's bytes, and the layers' FLOPs. This module registers no pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from irgraph.graph import Graph, Node

DENSE_OPS = ("conv", "conv_transpose", "matmul")
SPARSE_OPS = ("sparse_matmul", "sparse_conv")
KEYS = ("params", "nonzero", "bytes", "flops", "sparse_flops")


def walk(graph: Graph):
    """Every node of ``graph`` and of its fused bodies."""
    for n in graph.nodes:
        yield n
        if n.op == "fused":
            yield from walk(n.attrs["body"])


def _prod(dims) -> int:
    out = 1
    for d in dims:
        out *= d if isinstance(d, int) else 1
    return out


def _const(n: Node, i: int):
    v = n.inputs[i] if i < len(n.inputs) else None
    return None if v is None else v.const


def is_layer(n: Node) -> bool:
    """A conv / matmul with a constant float weight (input 1), or a sparse op."""
    if n.op in SPARSE_OPS:
        return True
    if n.op not in DENSE_OPS:
        return False
    w = _const(n, 1)
    return w is not None and w.dtype.kind == "f" and w.ndim >= 2


def _rows(x_shape) -> int:
    """Rows of a matmul's left operand per sample: its dims between the batch and K."""
    if x_shape is None or len(x_shape) < 3:
        return 1
    return _prod(x_shape[1:-1])


def layer_row(n: Node) -> dict:
    y = n.outputs[0]
    if n.op in SPARSE_OPS:
        ip, ix, vals = (n.inputs[i] for i in (1, 2, 3))
        rows = ip.shape[0] - 1
        if n.op == "sparse_matmul":
            cols = n.attrs["k"]
            shape = (cols, rows)
            per = _rows(n.inputs[0].shape)
        else:
            cols = n.attrs["in_channels"] * _prod(n.attrs["kernel_shape"])
            shape = (rows, n.attrs["in_channels"]) + tuple(n.attrs["kernel_shape"])
            per = _prod(y.shape[2:]) if y.shape else 1
        bias = _const(n, 4)
        nnz = int(vals.shape[0]) if vals.shape and isinstance(vals.shape[0], int) else 0
        arrays = [a.const for a in (ip, ix, vals) if a.const is not None] + ([bias] if bias is not None else [])
        nonzero = int(np.count_nonzero(vals.const)) if vals.const is not None else nnz
        return {"op": n.op, "kernel": "sparse", "shape": list(shape),
                "params": rows * cols + (0 if bias is None else int(bias.size)), "nonzero": nonzero,
                "bytes": int(sum(a.nbytes for a in arrays)),
                "flops": 2 * rows * cols * per, "sparse_flops": 2 * nnz * per}
    w = _const(n, 1)
    bias = _const(n, 2) if n.op != "matmul" else None
    if n.op == "matmul":
        per = _rows(n.inputs[0].shape)
        macs = w.shape[-2] * w.shape[-1] * _prod(w.shape[:-2]) * per
    else:
        per = _prod(y.shape[2:]) if y.shape else 1
        # conv: each output element reads C/group * prod(k) weights; conv_transpose: each input
        # element scatters into M/group * prod(k) outputs
        if n.op == "conv":
            macs = w.size * per
        else:
            x = n.inputs[0].shape
            macs = w.size * (_prod(x[2:]) if x else 1)
    nonzero = int(np.count_nonzero(w))
    return {"op": n.op, "kernel": "dense", "shape": list(w.shape),
            "params": int(w.size) + (0 if bias is None else int(bias.size)), "nonzero": nonzero,
            "bytes": int(w.nbytes + (0 if bias is None else bias.nbytes)),
            "flops": 2 * int(macs), "sparse_flops": 2 * int(round(macs * nonzero / max(w.size, 1)))}


def _constants(graph: Graph):
    yield from graph.constants.values()
    for n in graph.nodes:
        if n.op == "fused":
            yield from _constants(n.attrs["body"])


def measure(graph: Graph) -> dict:
    """``{"layers": {name: row}, "totals": {...}}`` of ``graph`` as it is now."""
    layers = {n.name: layer_row(n) for n in walk(graph) if is_layer(n)}
    consts = list({id(c): c for c in _constants(graph)}.values())
    totals = {"params": int(sum(c.const.size for c in consts if c.const.dtype.kind == "f")),
              "bytes": int(sum(c.const.nbytes for c in consts)),
              "nonzero": int(sum(np.count_nonzero(c.const) for c in consts if c.const.dtype.kind == "f")),
              "flops": int(sum(r["flops"] for r in layers.values())),
              "sparse_flops": int(sum(r["sparse_flops"] for r in layers.values()))}
    return {"layers": layers, "totals": totals}


def start(graph: Graph, spec: str) -> None:
    """Record the graph's figures before pruning (once: a second pruning pass keeps the first)."""
    rep = graph.meta.get("prune_report")
    if rep is None or rep.get("spec") != spec:
        graph.meta["prune_report"] = {"spec": spec, "before": measure(graph), "after": None,
                                      "groups": [], "notes": []}


def finish(graph: Graph) -> None:
    """Record the figures after a pruning pass changed the graph."""
    rep = graph.meta.get("prune_report")
    if rep is not None:
        rep["after"] = measure(graph)


@dataclass
class PruneReport:
    spec: str
    before: dict
    after: dict
    groups: list = field(default_factory=list)      # channel pruning: one entry per channel group
    notes: list = field(default_factory=list)
    latency_ms: dict | None = None                  # filled by benchmarks: {"before": .., "after": ..}

    @classmethod
    def from_dict(cls, d: dict) -> "PruneReport":
        return cls(d["spec"], d["before"], d.get("after") or d["before"], list(d.get("groups", [])),
                   list(d.get("notes", [])), d.get("latency_ms"))

    def to_dict(self) -> dict:
        return {"spec": self.spec, "before": self.before, "after": self.after, "groups": self.groups,
                "notes": self.notes, "latency_ms": self.latency_ms}

    def total(self, key: str, when: str = "after"):
        return (self.after if when == "after" else self.before)["totals"][key]

    def ratio(self, key: str) -> float:
        """after / before of a model total (1.0 when the total was 0)."""
        b = self.total(key, "before")
        return self.total(key) / b if b else 1.0

    def format(self) -> str:
        lines = [f"pruning {self.spec}: per layer, per sample (FLOPs = 2 x multiply-adds)"]
        rows = [("layer", "op", "weight", "params", "nonzero", "bytes", "MFLOPs")]
        lb, la = self.before["layers"], self.after["layers"]
        for name in list(lb) + [n for n in la if n not in lb]:
            b, a = lb.get(name), la.get(name)
            ref = a or b
            shape = "x".join(map(str, ref["shape"]))
            if b and a and b["shape"] != a["shape"]:
                shape = "x".join(map(str, b["shape"])) + " -> " + shape
            op = (b or a)["op"] + (" -> CSR" if a and a["kernel"] == "sparse" else "")
            rows.append((name, op, shape, _pair(b, a, "params"), _pair(b, a, "nonzero"), _pair(b, a, "bytes"),
                         _pair(b, a, "flops", 1e-6) + _sparse_flops(a)))
        tb, ta = self.before["totals"], self.after["totals"]
        rows.append(("total", "", "", _pair(tb, ta, "params"), _pair(tb, ta, "nonzero"), _pair(tb, ta, "bytes"),
                     _pair(tb, ta, "flops", 1e-6) + _sparse_flops(ta)))
        w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for k, r in enumerate(rows):
            if k == len(rows) - 1:
                lines.append("  " + "  ".join("-" * x for x in w))
            lines.append("  " + "  ".join(c.ljust(x) for c, x in zip(r, w)).rstrip())
        for g in self.groups:
            lines.append("  " + _group_line(g))
        lines += [f"  note: {n}" for n in self.notes]
        if self.latency_ms:
            b, a = self.latency_ms.get("before"), self.latency_ms.get("after")
            if b and a:
                lines.append(f"  latency {b:.4g} ms -> {a:.4g} ms ({b / a:.2f}x)")
        return "\n".join(lines)


def _pair(b, a, key, scale=None) -> str:
    def f(row):
        if row is None:
            return "-"
        v = row[key]
        return f"{v * scale:.3g}" if scale else f"{v:,}"
    if a is None or b is None or a[key] == b[key]:
        return f(a if a is not None else b)
    pct = f" ({(a[key] - b[key]) / b[key] * 100:+.0f}%)" if b[key] else ""
    return f"{f(b)} -> {f(a)}{pct}"


def _sparse_flops(row) -> str:
    if row is None or row["sparse_flops"] == row["flops"]:
        return ""
    return f" [nonzero {row['sparse_flops'] * 1e-6:.3g}]"


def _group_line(g: dict) -> str:
    layers = ", ".join(g.get("producers", []))
    if g.get("status") == "pruned":
        return (f"channels of {layers}: {g['channels']} -> {g['channels'] - g['removed']}"
                + (" (tied by residual adds)" if len(g.get("producers", [])) > 1 else "")
                + ("" if not g.get("dead") else f"; {g['dead']} all-zero channel(s) removed exactly"
                   if g.get("exact") else f"; {g['dead']} all-zero channel(s) removed (compensation approximate)"))
    return f"channels of {layers}: left alone ({g.get('reason', '')})"
