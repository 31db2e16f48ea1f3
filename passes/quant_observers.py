"""Activation observers for post-training quantization: a float range per tensor from calibration data.

    obs = make_observer("entropy")
    for batch in calibration: obs.update(activation)
    lo, hi = obs.range()

- ``minmax``: the smallest and largest value seen;
- ``percentile``: the 0.01th and 99.99th percentiles (``percentile=`` to change), which ignores
  rare outliers that would otherwise spend the 256 levels on a range almost nothing uses;
- ``entropy``: the clipping threshold whose 8-bit quantized histogram is closest (smallest KL
  divergence) to the observed one, searched on a 2048-bin histogram (TensorRT's calibration);
  applied to each side of zero separately, since activations are quantized asymmetrically.

Every range includes 0, so zero (padding, ReLU's floor) is exactly representable. Percentile
and entropy keep a bounded random sample per tensor (``MAX_SAMPLES`` values) plus the exact
extremes, so memory does not grow with the calibration set. This module is a helper of the
``quantize_static`` pass and registers no pass itself.
"""
from __future__ import annotations

import numpy as np

from irgraph.errors import CompileError

OBSERVERS = ("minmax", "percentile", "entropy")
MAX_SAMPLES = 1 << 20
HIST_BINS = 2048
QUANT_LEVELS = 255


class MinMax:
    def __init__(self):
        self.lo, self.hi = np.inf, -np.inf

    def update(self, a: np.ndarray) -> None:
        a = np.asarray(a, np.float32)
        finite = a[np.isfinite(a)] if not np.all(np.isfinite(a)) else a
        if finite.size:
            self.lo = min(self.lo, float(finite.min()))
            self.hi = max(self.hi, float(finite.max()))

    def range(self) -> tuple[float, float]:
        if self.lo > self.hi:
            return 0.0, 0.0
        return min(self.lo, 0.0), max(self.hi, 0.0)


class _Sampled(MinMax):
    """Exact extremes plus a uniform random sample of at most MAX_SAMPLES values."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.rng = np.random.default_rng(seed)
        self.parts: list[np.ndarray] = []
        self.seen = 0

    def update(self, a: np.ndarray) -> None:
        super().update(a)
        flat = np.asarray(a, np.float32).reshape(-1)
        flat = flat[np.isfinite(flat)]
        self.seen += flat.size
        # keep each batch in proportion to its size, the whole below the cap
        keep = min(flat.size, MAX_SAMPLES)
        if keep < flat.size:
            flat = self.rng.choice(flat, keep, replace=False)
        self.parts.append(flat)
        total = sum(p.size for p in self.parts)
        if total > 2 * MAX_SAMPLES:
            allv = np.concatenate(self.parts)
            self.parts = [self.rng.choice(allv, MAX_SAMPLES, replace=False)]

    def sample(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)


class Percentile(_Sampled):
    def __init__(self, percentile: float = 99.99, seed: int = 0):
        super().__init__(seed)
        if not 50.0 < percentile <= 100.0:
            raise CompileError("the percentile observer needs a percentile in (50, 100]", actual=percentile)
        self.percentile = percentile

    def range(self) -> tuple[float, float]:
        s = self.sample()
        if not s.size:
            return 0.0, 0.0
        lo = float(np.percentile(s, 100.0 - self.percentile))
        hi = float(np.percentile(s, self.percentile))
        return min(lo, 0.0), max(hi, 0.0)


def kl_threshold(hist: np.ndarray, edges: np.ndarray, levels: int = QUANT_LEVELS) -> float:
    """The clipping threshold (an upper bin edge) minimizing KL(P || Q) between the histogram
    clipped there (outliers added to its last bin) and its quantization to ``levels`` bins."""
    hist = hist.astype(np.float64)
    nbins = hist.size
    if nbins <= levels or hist.sum() == 0:
        return float(edges[-1])
    best, best_i = np.inf, nbins
    candidates = sorted(set(range(levels, nbins + 1, max(1, (nbins - levels) // 256))) | {nbins})
    for i in candidates:
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        nz = p > 0
        # quantize the first i bins into `levels` groups; spread each group's mass over its
        # nonzero bins
        src = hist[:i]
        starts = np.linspace(0, i, levels + 1).astype(np.int64)[:-1]
        gid = np.searchsorted(starts, np.arange(i), side="right") - 1
        gsum = np.add.reduceat(src, starts)
        gcnt = np.add.reduceat((src > 0).astype(np.float64), starts)
        q = np.where(src > 0, (gsum / np.maximum(gcnt, 1))[gid], 0.0)
        ps, qs = p.sum(), q.sum()
        if qs == 0:
            continue
        pn, qn = p / ps, q / qs
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.sum(pn[nz] * np.log(pn[nz] / np.where(qn[nz] > 0, qn[nz], 1e-12)))
        if kl < best:
            best, best_i = kl, i
    return float(edges[best_i])


class Entropy(_Sampled):
    def range(self) -> tuple[float, float]:
        s = self.sample()
        if not s.size:
            return 0.0, 0.0
        out = []
        sides = (s[s > 0], -s[s < 0])
        for side in sides:
            if not side.size:
                out.append(0.0)
                continue
            hist, edges = np.histogram(side, bins=HIST_BINS, range=(0.0, float(side.max())))
            # one-sided data (after a ReLU) gets all 255 steps, two-sided about half each
            levels = QUANT_LEVELS if min(x.size for x in sides) == 0 else QUANT_LEVELS // 2 + 1
            out.append(kl_threshold(hist, edges, levels))
        hi, neg = out
        return -neg, hi


def make_observer(kind: str, **kw):
    if kind == "minmax":
        return MinMax()
    if kind == "percentile":
        return Percentile(**kw)
    if kind == "entropy":
        return Entropy()
    raise CompileError(f"unknown observer {kind!r}", expected=" | ".join(OBSERVERS), actual=kind)


def uint8_params(lo: float, hi: float) -> tuple[np.float32, np.uint8]:
    """Scale and zero point of asymmetric uint8 quantization of [lo, hi] (which includes 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = np.float32((hi - lo) / 255.0)
    if not scale > 0 or not np.isfinite(scale):
        return np.float32(1.0), np.uint8(0)
    zp = np.clip(np.rint(-lo / scale), 0, 255)
    return scale, np.uint8(zp)


def int8_weights(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel symmetric int8 weights along ``axis``: (wq int8, scale float32 per channel),
    q = clip(round(w / scale), -127, 127), scale = max|w| / 127 (1 for an all-zero channel)."""
    w = np.asarray(w, np.float32)
    red = tuple(k for k in range(w.ndim) if k != axis)
    amax = np.abs(w).max(axis=red)
    scale = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale
