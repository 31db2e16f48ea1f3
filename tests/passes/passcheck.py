"""Shared helpers for the pass tests: run passes with verification, compare interpreter outputs
before/after, build small graphs and feeds, and inspect fused groups."""
from __future__ import annotations

import os
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import onnx

import irgraph
import models
from irgraph import Graph, TensorType, run_graph
from irgraph import dtype as dt
from irgraph.dtype import int64
from irgraph.passes import PassContext, run_passes

RTOL, ATOL = 1e-4, 1e-5
LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


# ---- comparing outputs ----------------------------------------------------------------------
def assert_outputs_match(got: Sequence, want: Sequence, *, exact: bool = False, types: bool = True,
                         rtol: float = RTOL, atol: float = ATOL) -> None:
    """Same number of outputs; with ``types`` also the same dtype and shape; then bit-exact
    (NaN == NaN, -0.0 == 0.0) or within rtol/atol."""
    assert len(got) == len(want)
    for a, b in zip(got, want):
        if types:
            assert a.dtype == b.dtype and a.shape == b.shape
        if exact:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def same_results(before: Graph, after: Graph, feeds, *, exact: bool = False, types: bool = True) -> None:
    """Run both graphs on ``feeds`` with the interpreter and compare their outputs."""
    want = run_graph(before, feeds)
    got = run_graph(after, feeds)
    assert_outputs_match(got, want, exact=exact, types=types)


# ---- running passes -------------------------------------------------------------------------
def run_pass(g: Graph, name: str, **options):
    """Run one pass (verified) in place; return the graph and that pass's record."""
    g, report = run_passes(g, [name], PassContext(verify=True, options=options))
    return g, report.records[0]


def run_checked(g: Graph, feeds, passes: Iterable[str], *, types: bool = False):
    """Run ``passes`` (verified) on a copy, check the outputs agree with the original's within
    RTOL/ATOL, and return the new graph and the report."""
    want = run_graph(g, feeds)
    g2, report = run_passes(g.copy(), list(passes), PassContext(verify=True))
    got = run_graph(g2, feeds)
    assert_outputs_match(got, want, types=types)
    return g2, report


# ---- inputs, constants and small graphs -------------------------------------------------------
def rand(shape, seed: int = 0) -> np.ndarray:
    """Standard-normal float32 array of ``shape``."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def graph_feeds(g: Graph, seed: int = 0, scale: float = 1.0) -> list:
    """Feeds for every graph input: int64 inputs are masks of ones with the last column zero,
    bool inputs random with the last row all False, floats standard normal times ``scale``."""
    rng = np.random.default_rng(seed)
    out = []
    for v in g.inputs:
        if v.dtype is int64:
            m = np.ones(v.shape, np.int64)
            m[..., -1:] = 0
            out.append(m)
        elif v.dtype.is_bool:  # the last row of keys fully masked
            m = rng.random(v.shape) < 0.7
            m[-1] = False
            out.append(m)
        else:
            out.append((rng.standard_normal(v.shape) * scale).astype(v.dtype.np))
    return out


def f32_const(g: Graph, value, name: str = "c"):
    return g.add_const(np.asarray(value, dtype=np.float32), name)


def i64_const(g: Graph, values, name: str = "axes"):
    return g.add_const(np.array(values, dtype=np.int64), name)


def full_const(g: Graph, value, dtype=np.float32, shape=(), name: str = "c"):
    return g.add_const(np.full(shape, value, dtype), name)


def unary_graph(build: Callable, shape=(32,), dtype=dt.float32) -> Graph:
    """A graph of one input ``x`` whose single output is ``build(g, x)``."""
    g = Graph()
    x = g.add_input("x", TensorType(shape, dtype))
    g.set_outputs([build(g, x)])
    return g


# ---- models ---------------------------------------------------------------------------------
def imported(m) -> tuple:
    """The model's graph and an untouched copy of it to compare the optimized graph against."""
    g = irgraph.to_graph(m)
    return g, g.copy()


def light_model(name: str) -> onnx.ModelProto:
    """One of onnx's 'light' test models by short name (``squeezenet``, ``inception_v1`` ...)."""
    return onnx.load(os.path.join(LIGHT_DIR, f"light_{name}.onnx"))


def light_feeds(m: onnx.ModelProto) -> dict:
    """Inputs for a light model, scaled down: its weights are constant fills, so activations stay
    O(1) only with small inputs."""
    return {k: (0.1 * v).astype(v.dtype) for k, v in models.feeds(m, seed=0).items()}


# ---- inspecting graphs ----------------------------------------------------------------------
def top_ops(g: Graph) -> list:
    return [n.op for n in g.nodes]


def fused_groups(g: Graph, kind: Optional[str] = None) -> list:
    return [n for n in g.nodes if n.op == "fused" and (kind is None or n.attrs["group"] == kind)]


def body_ops(f) -> list:
    """The ops of a fused node's body, in body order."""
    return [n.op for n in f.attrs["body"].nodes]


# float32 values every exact rewrite must keep bit-for-bit: signed zeros, infinities, NaN, the
# largest and subnormal magnitudes, and ordinary values
SPECIAL = np.concatenate([
    np.array([0.0, -0.0, 1.5, -2.25, np.inf, -np.inf, np.nan, 3e38, 1e-40, -7e-39], np.float32),
    np.random.default_rng(0).standard_normal(22).astype(np.float32) * 10])
