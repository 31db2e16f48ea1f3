"""The registry's completeness: every op is whole (inference, reference, gradient slot, scalar
formula for elementwise ops, decomposition for composites), and formulas agree with references."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
from irgraph.ops.registry import Attr, OpDef, all_ops
from irgraph.ops.scalar import SCALAR_METHODS, NumpyScalar

KINDS = {"elementwise", "reduction", "contraction", "movement", "index", "control", "composite",
         "random", "other"}
OPS = sorted(all_ops().items())


def test_registry_is_populated():
    # the ONNX default domain maps onto well over a hundred core ops
    assert len(OPS) >= 100, f"only {len(OPS)} ops registered"


@pytest.mark.parametrize("name,op", OPS, ids=[n for n, _ in OPS])
def test_entry_is_whole(name, op: OpDef):
    assert op.name == name
    assert callable(op.infer), "no inference"
    assert callable(op.reference), "no numpy reference"
    assert op.kind in KINDS, f"unknown kind {op.kind!r}"
    assert isinstance(op.differentiable, bool)
    assert op.grad is None or callable(op.grad)
    if not op.differentiable:
        assert op.grad is None, "a gradient rule on an op marked non-differentiable"
    assert all(isinstance(a, Attr) for a in op.attrs.values())
    lo, hi = op.inputs
    assert lo >= 0 and (hi is None or hi >= lo)
    if op.kind == "elementwise":
        assert callable(op.scalar), "elementwise op without a scalar formula: backends cannot lower it"
    if op.kind == "composite":
        assert callable(op.decompose), "composite op without a decomposition"


class _Recorder:
    """A scalar builder that records which methods a formula uses."""

    def __init__(self):
        self.used = set()
        self.np = NumpyScalar()

    def __getattr__(self, name):
        fn = getattr(self.np, name)
        self.used.add(name)
        return fn


ELEMENTWISE = [(n, op) for n, op in OPS if op.kind == "elementwise" and op.scalar is not None
               and irgraph.dtype.float32 in op.dtypes and op.inputs[0] == op.inputs[1]]


@pytest.mark.parametrize("name,op", ELEMENTWISE, ids=[n for n, _ in ELEMENTWISE])
def test_scalar_formula_matches_reference(name, op: OpDef):
    rng = np.random.default_rng(0)
    attrs = op.normalize_attrs({})
    # values in (0.1, 0.9) keep most float functions (log, acos, atanh …) in their domain;
    # those defined only above 1 (acosh) get (1.1, 1.9)
    for lo, hi in ((0.1, 0.9), (1.1, 1.9)):
        xs = [rng.uniform(lo, hi, size=(3, 4)).astype(np.float32) for _ in range(op.inputs[0])]
        with np.errstate(all="ignore"):
            want = op.run_reference(xs, attrs)[0]
        if not (want.dtype.kind == "f" and np.isnan(want).any()):
            break
    assert not (want.dtype.kind == "f" and np.isnan(want).any()), "no test domain without NaNs"
    b = _Recorder()
    got = np.asarray(op.scalar(b, *xs, **attrs))
    assert b.used <= set(SCALAR_METHODS), f"formula uses methods outside the builder interface: {b.used - set(SCALAR_METHODS)}"
    np.testing.assert_allclose(np.broadcast_to(got, want.shape).astype(np.float64), want.astype(np.float64),
                               rtol=1e-5, atol=1e-6)
