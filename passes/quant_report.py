"""The accuracy a quantized model costs, measured against float on the calibration data.

``quantize_static`` fills a ``QuantReport`` (kept in ``graph.meta["quant_report"]`` as a dict,
and as ``CompiledModel.quant_report``):

- per quantized layer (conv / matmul): the SQNR and max relative error of its output
  *in isolation* (float input and weights quantized, the rest exact: how sensitive the layer
  is, what ``keep_float="auto"`` ranks by) and *cumulative* (the whole quantized model up to
  that layer, against the float model: where error builds up);
- layers kept in float and why (named by the user, or isolated SQNR below the threshold);
- end to end, per graph output: SQNR, max absolute and max relative difference of the
  quantized model (simulated with quantize/dequantize, and after compiling, of the compiled
  int8 model when ``irgraph.compile`` measured it).

SQNR = 10 log10(sum(ref^2) / sum((ref - q)^2)) in dB (higher is better; each bit of precision
is about 6 dB); max relative error = max|ref - q| / max|ref|. This module is a helper of the
quantization passes and registers no pass itself.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64)
    err = ref - np.asarray(got, np.float64)
    s, n = float(np.sum(ref * ref)), float(np.sum(err * err))
    if n == 0:
        return math.inf
    if s == 0:
        return -math.inf
    return 10.0 * math.log10(s / n)


def max_rel_err(ref: np.ndarray, got: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    diff = float(np.max(np.abs(ref - np.asarray(got, np.float64)))) if ref.size else 0.0
    return diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)


def compare(ref: np.ndarray, got: np.ndarray) -> dict:
    ref = np.asarray(ref)
    got = np.asarray(got)
    return {"sqnr_db": sqnr_db(ref, got), "max_rel_err": max_rel_err(ref, got),
            "max_abs_err": float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64)))) if ref.size else 0.0}


@dataclass
class LayerRow:
    name: str                  # the node's name (ONNX node names are in ``source``)
    op: str
    source: list
    quantized: bool
    isolated: dict = field(default_factory=dict)      # sqnr_db, max_rel_err, max_abs_err
    cumulative: dict = field(default_factory=dict)
    reason: str = ""           # why it stayed float


@dataclass
class QuantReport:
    observer: str
    samples: int                               # calibration samples measured
    threshold_db: float | None                 # keep_float="auto": isolated SQNR below this stays float
    layers: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)            # output name -> compare() (QDQ simulation)
    compiled_outputs: dict = field(default_factory=dict)   # output name -> compare() (compiled model)

    @property
    def kept_float(self) -> list[str]:
        return [r.name for r in self.layers if not r.quantized]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QuantReport":
        d = dict(d)
        d["layers"] = [LayerRow(**r) for r in d.get("layers", [])]
        return cls(**d)

    def format(self) -> str:
        q = sum(r.quantized for r in self.layers)
        lines = [f"int8 quantization: {q} of {len(self.layers)} layers quantized "
                 f"(observer {self.observer}, {self.samples} calibration samples"
                 + (f", auto keep-float below {self.threshold_db:g} dB" if self.threshold_db is not None else "")
                 + ")"]
        rows = [("layer", "op", "isolated SQNR dB", "max rel err", "cumulative SQNR dB", "status")]
        for r in self.layers:
            rows.append((r.name, r.op, _db(r.isolated.get("sqnr_db")), _f(r.isolated.get("max_rel_err")),
                         _db(r.cumulative.get("sqnr_db")), "int8" if r.quantized else f"float ({r.reason})"))
        w = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for k, row in enumerate(rows):
            cells = [c.ljust(w[i]) if i in (0, 1, 5) else c.rjust(w[i]) for i, c in enumerate(row)]
            lines.append(("  " + "  ".join(cells)).rstrip())
            if k == 0:
                lines.append("  " + "-" * (sum(w) + 2 * (len(w) - 1)))
        for title, res in (("end to end (quantize/dequantize simulation)", self.outputs),
                           ("end to end (compiled int8 model)", self.compiled_outputs)):
            if res:
                lines.append(f"{title}:")
                for name, c in res.items():
                    lines.append(f"  {name}: SQNR {_db(c['sqnr_db'])} dB, max abs diff {c['max_abs_err']:.4g}, "
                                 f"max rel err {c['max_rel_err']:.4g}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _db(x) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.1f}"


def _f(x) -> str:
    return "-" if x is None else f"{x:.3g}"
