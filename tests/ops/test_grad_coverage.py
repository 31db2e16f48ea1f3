"""Every differentiable registry op has a gradient (a rule, or a decomposition autodiff goes
through) and at least one finite-difference case in a ``tests/ops/test_grad_<family>.py``."""
from __future__ import annotations

import glob
import importlib
import os

from irgraph.ops.registry import all_ops

_HERE = os.path.dirname(os.path.abspath(__file__))
# Ops that declare themselves differentiable but whose gradient autodiff cannot build, each
# with its reason. Empty is the goal.
NO_GRADIENT_YET: dict[str, str] = {}


def _cases() -> dict[str, list]:
    cases: dict[str, list] = {}
    for path in sorted(glob.glob(os.path.join(_HERE, "test_grad_*.py"))):
        name = os.path.splitext(os.path.basename(path))[0]
        if name == "test_grad_coverage":
            continue
        mod = importlib.import_module(name)
        for op, cs in getattr(mod, "GRAD_CASES", {}).items():
            cases.setdefault(op, []).extend(cs)
        for op, test in getattr(mod, "CHECKED_ELSEWHERE", {}).items():
            assert callable(getattr(mod, test, None)), f"{name}: no test {test!r} checks {op}"
            cases.setdefault(op, []).append(test)
    return cases


def test_every_differentiable_op_has_a_gradient():
    missing = [n for n, o in sorted(all_ops().items())
               if o.differentiable and o.grad is None and o.decompose is None and n not in NO_GRADIENT_YET]
    assert not missing, f"differentiable ops with neither a grad rule nor a decomposition: {missing}"


def test_every_differentiable_op_is_checked():
    cases = _cases()
    unknown = sorted(set(cases) - set(all_ops()))
    assert not unknown, f"gradient cases for ops not in the registry: {unknown}"
    missing = [n for n, o in sorted(all_ops().items())
               if o.differentiable and n not in NO_GRADIENT_YET and not cases.get(n)]
    assert not missing, f"differentiable ops without a finite-difference case: {missing}"
