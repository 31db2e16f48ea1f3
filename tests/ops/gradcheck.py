"""Gradient checks: an op's registry gradient rule against central finite differences (float64).

    check_grad("mul", [x, y])                                 # both inputs differentiated
    check_grad("reduce_sum", [x, np.array([1])], const=(1,))  # axes is a constant operand
    check_grad("split", [x], {"num_outputs": 2}, num_outputs=2)

The op becomes a one-node graph (``oprun.build``); ``passes.autodiff.gradients`` appends its
backward with random cotangents fed as graph inputs, and the interpreter runs both. For each
float input that is fed at run time (not in ``const``), the analytic vector-Jacobian product
is compared with finite differences of ``sum(cotangent * op(x))``: element by element for small
inputs, along random directions for large ones.

Each ``tests/ops/test_grad_<family>.py`` lists its cases in a module-level ``GRAD_CASES`` dict
(op name -> list of ``GradCase``) and runs them with ``check_case``; ``test_grad_coverage.py``
checks that every differentiable registry op has at least one case.
"""
from __future__ import annotations

from typing import Any, Collection, NamedTuple, Sequence

import numpy as np

from irgraph import TensorType, run_graph
from irgraph.passes.autodiff import gradients

from oprun import build

ELEMENTWISE_LIMIT = 48      # inputs up to this size are differenced element by element
DIRECTIONS = 4              # random directions for larger inputs


class GradCase(NamedTuple):
    inputs: Sequence[Any]
    attrs: dict | None = None
    const: Collection[int] = ()
    num_outputs: int | None = None
    wrt: Collection[int] | None = None     # default: every float input fed at run time
    rtol: float = 1e-5
    atol: float = 1e-7
    eps: float = 1e-6
    id: str = ""


def case(*inputs, attrs=None, const=(), num_outputs=None, wrt=None, rtol=1e-5, atol=1e-7,
         eps=1e-6, id="") -> GradCase:
    return GradCase(list(inputs), attrs, tuple(const), num_outputs, wrt, rtol, atol, eps, id)


def check_case(op: str, c: GradCase) -> None:
    check_grad(op, c.inputs, c.attrs, const=c.const, num_outputs=c.num_outputs, wrt=c.wrt,
               rtol=c.rtol, atol=c.atol, eps=c.eps)


def check_grad(op: str, inputs: Sequence[Any], attrs: dict | None = None, *,
               const: Collection[int] = (), num_outputs: int | None = None,
               wrt: Collection[int] | None = None, rtol: float = 1e-5, atol: float = 1e-7,
               eps: float = 1e-6, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    g, outs, feeds = build(op, inputs, attrs, num_outputs=num_outputs, const=const)
    fed = [i for i, x in enumerate(inputs) if x is not None and not isinstance(x, TensorType)
           and i not in const]
    feed_pos = {i: k for k, i in enumerate(fed)}
    if wrt is None:
        wrt = [i for i in fed if np.asarray(inputs[i]).dtype.kind == "f"]
    wrt = list(wrt)
    assert wrt, f"{op}: nothing to differentiate"
    for i in wrt:
        assert i in feed_pos, f"{op}: input {i} must be fed at run time to be differentiated"
        assert np.asarray(inputs[i]).dtype == np.float64, f"{op}: check gradients in float64"

    # forward outputs and their cotangents
    base = run_graph(g, feeds)
    float_outs = [k for k, v in enumerate(outs) if v.dtype.name == "float64"]
    assert float_outs, f"{op}: no float64 output to differentiate"
    cots = {k: rng.standard_normal(np.shape(base[k])) for k in float_outs}

    fwd = g.copy()       # the backward is appended to ``g``; differences run the forward only

    def loss(fs):
        res = run_graph(fwd, fs)
        return sum(float(np.sum(cots[k] * res[k])) for k in float_outs)

    # analytic: backward graph with the cotangents as inputs
    seed_vals = [g.add_input(f"cot{k}", TensorType(np.shape(base[k]), "float64")) for k in float_outs]
    n_fwd = len(g.nodes)
    gvals = gradients(g, [outs[k] for k in float_outs], [g.inputs[feed_pos[i]] for i in wrt], seeds=seed_vals)
    assert len(g.nodes) > n_fwd or all(v is not None for v in gvals), f"{op}: no backward built"
    produced = [v for v in gvals if v is not None]
    g.set_outputs(list(outs) + produced)
    g.verify()
    res = run_graph(g, list(feeds) + [cots[k] for k in float_outs])
    analytic = iter(res[len(outs):])
    for i, gv in zip(wrt, gvals):
        x = np.asarray(feeds[feed_pos[i]], dtype=np.float64)
        got = np.zeros_like(x) if gv is None else next(analytic)
        assert got.shape == x.shape and got.dtype == x.dtype, \
            f"{op}: gradient of input {i} is {got.dtype}{got.shape}, input is {x.dtype}{x.shape}"
        _compare(op, i, x, got, feeds, feed_pos[i], loss, rng, rtol, atol, eps)


def _compare(op, i, x, got, feeds, pos, loss, rng, rtol, atol, eps):
    def at(xv):
        fs = list(feeds)
        fs[pos] = xv
        return loss(fs)

    if x.size <= ELEMENTWISE_LIMIT:
        num = np.zeros_like(x)
        flat = num.reshape(-1)
        for j in range(x.size):
            d = np.zeros(x.size)
            d[j] = eps
            d = d.reshape(x.shape)
            flat[j] = (at(x + d) - at(x - d)) / (2 * eps)
        if not np.allclose(got, num, rtol=rtol, atol=atol):
            bad = np.unravel_index(int(np.argmax(np.abs(got - num) - rtol * np.abs(num))), x.shape)
            raise AssertionError(f"{op}: gradient of input {i} differs from finite differences at "
                                 f"{bad}: analytic {got[bad]!r}, numeric {num[bad]!r}\n"
                                 f"analytic={got}\nnumeric={num}")
        return
    for _ in range(DIRECTIONS):
        d = rng.standard_normal(x.shape)
        num = (at(x + eps * d) - at(x - eps * d)) / (2 * eps)
        ana = float(np.sum(got * d))
        if not np.isclose(ana, num, rtol=rtol * 10, atol=atol * np.sqrt(x.size) * 10):
            raise AssertionError(f"{op}: directional derivative of input {i}: analytic {ana!r}, "
                                 f"numeric {num!r}")
